"""The four steps every target goes through, as Airflow task callables.

``copia`` (step 4) -> ``verificar_fecha`` (step 3) -> ``comprimir`` (step 5) -> ``registrar`` (step 6).

Each callable gets only its own target and a few settings (small, JSON-friendly, no secrets) and
passes a small dict to the next through XCom: paths, sizes, dates; never data, never credentials.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from pathlib import Path
from typing import Any

from respaldo import artifacts, register
from respaldo.errors import DateCheckError, RespaldoError
from respaldo.sources import TargetBase, source_for

log = logging.getLogger("respaldo")

STEPS = ("copia", "verificar_fecha", "comprimir", "registrar")


def _target(target: dict[str, Any]) -> TargetBase:
    return source_for(target["kind"]).model.model_validate(target)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _params(context: dict[str, Any]) -> dict[str, Any]:
    return dict(context.get("params") or {})


def selected(target_id: str, context: dict[str, Any]) -> bool:
    """Whether this run covers the target: the form's «objetivos» list, empty meaning all."""
    chosen = _params(context).get("objetivos") or []
    return not chosen or target_id in chosen


def copia(target: dict[str, Any], settings: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Step 4: take the copy into the run's staging folder."""
    from airflow.sdk.exceptions import AirflowSkipException

    model = _target(target)
    if not selected(model.id, context):
        raise AirflowSkipException(f"«{model.id}» no está entre los objetivos elegidos para esta ejecución")
    source = source_for(model.kind)
    staging = artifacts.staging_dir(settings["root"], model.frequency, model.id, context["run_id"])
    artifacts.remove_staging(staging)
    staging.mkdir(parents=True, exist_ok=True)
    started = _utcnow()
    name = f"{model.id}.{source.extension}" + (".zst" if source.compresses else "")
    try:
        result = source.copy(model, staging / name, log)
    except BaseException:
        artifacts.remove_staging(staging)
        raise
    done = {
        "staging": str(result.path),
        "bytes": result.bytes,
        "started_at": started.isoformat(),
        "copied_at": _utcnow().isoformat(),
    }
    if result.compressed:
        done.update(compressed=True, original_bytes=result.original_bytes, sha256=result.sha256)
    return done


def verificar_fecha(target: dict[str, Any], settings: dict[str, Any], copy: dict[str, Any],
                    **context: Any) -> dict[str, Any]:
    """Step 3: the system stamped a creation date in the copy; check it belongs to this copy."""
    from airflow.sdk.exceptions import AirflowFailException

    model = _target(target)
    source = source_for(model.kind)
    path = Path(copy["staging"])
    try:
        if not path.exists():
            raise DateCheckError(f"La copia {path} ya no está; vuelva a ejecutar desde «copia».")
        size = path.stat().st_size
        if size == 0:
            raise DateCheckError(f"La copia {path.name} está vacía.")
        if size != copy["bytes"]:
            raise DateCheckError(f"La copia {path.name} cambió después de tomada ({copy['bytes']} bytes al "
                                 f"copiar, {size} ahora).")
        stamp = source.read_stamp(model, path)
        now = _utcnow()
        window_start = dt.datetime.fromisoformat(copy["started_at"]).replace(microsecond=0)
        zone = zoneinfo.ZoneInfo(settings["timezone"])
        if stamp is None:
            raise DateCheckError(f"La copia {path.name} no trae fecha de creación.")
        if not window_start <= stamp <= now:
            raise DateCheckError(
                f"La fecha de creación de la copia ({stamp.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}) no está "
                f"dentro de la ejecución (de {window_start.astimezone(zone):%Y-%m-%d %H:%M:%S} a "
                f"{now.astimezone(zone):%Y-%m-%d %H:%M:%S}): reloj desfasado o copia que no es de esta "
                "ejecución."
            )
    except DateCheckError as err:
        raise AirflowFailException(str(err)) from err
    log.info("Fecha de creación asignada por el sistema: %s (%s)", stamp.astimezone(zone).isoformat(),
             settings["timezone"])
    return {**copy, "backup_at": stamp.isoformat()}


def comprimir(target: dict[str, Any], settings: dict[str, Any], checked: dict[str, Any],
              **context: Any) -> dict[str, Any]:
    """Step 5: compress the copy into its dated artifact with a .sha256 beside it."""
    model = _target(target)
    source = source_for(model.kind)
    staging = Path(checked["staging"])
    if not staging.exists():
        raise RespaldoError(f"La copia {staging} ya no está; vuelva a ejecutar desde «copia».")
    backup_at = dt.datetime.fromisoformat(checked["backup_at"]).astimezone(zoneinfo.ZoneInfo(settings["timezone"]))
    final = artifacts.artifact_path(settings["root"], model.frequency, model.id, backup_at, source.extension)
    if checked.get("compressed"):
        artifact = artifacts.place_compressed(staging, final, checked["sha256"], checked["original_bytes"], log)
    else:
        artifact = artifacts.compress(staging, final, log)
    artifacts.remove_staging(staging.parent)
    return {
        **checked,
        "artifact_path": str(artifact.path),
        "original_bytes": artifact.original_bytes,
        "compressed_bytes": artifact.compressed_bytes,
        "sha256": artifact.sha256,
        "compression": artifact.compression,
    }


def _base_row(model: TargetBase, settings: dict[str, Any], context: dict[str, Any], status: str) -> register.Row:
    dag_run = context.get("dag_run")
    params = _params(context)
    ti = context.get("ti")
    return register.Row(
        target=model.id,
        kind=model.kind,
        frequency=model.frequency,
        mechanism=model.mechanism,
        dag_id=settings["dag_id"],
        run_id=context["run_id"],
        run_type=str(getattr(run_type, "value", run_type)) if (run_type := getattr(dag_run, "run_type", None))
        else None,
        logical_date=context.get("logical_date"),
        status=status,
        responsible=(params.get("responsable") or "").strip() or model.responsible,
        notes=(params.get("observaciones") or "").strip() or None,
        try_number=getattr(ti, "try_number", None),
    )


def registrar(target: dict[str, Any], settings: dict[str, Any], done: dict[str, Any], **context: Any) -> int:
    """Step 6: write the FT-GTI-004 row of this copy."""
    model = _target(target)
    row = _base_row(model, settings, context, "success")
    row.backup_at = dt.datetime.fromisoformat(done["backup_at"])
    row.started_at = dt.datetime.fromisoformat(done["started_at"])
    row.finished_at = _utcnow()
    row.step = "registrar"
    row.artifact_path = done["artifact_path"]
    row.original_bytes = done["original_bytes"]
    row.compressed_bytes = done["compressed_bytes"]
    row.sha256 = done["sha256"]
    row.compression = done["compression"]
    register.record(settings["register_conn_id"], row)
    log.info("Registrado en FT-GTI-004: %s, creado %s, %s", model.id, row.backup_at, row.artifact_path)
    return done["compressed_bytes"]


def plain_error(exception: BaseException | str | None) -> str:
    """The reason for a failure in words, without a traceback."""
    if exception is None:
        return "la tarea falló sin dar motivo (revise el log)"
    if isinstance(exception, str):
        return exception
    if isinstance(exception, RespaldoError) or type(exception).__module__.startswith("airflow"):
        text = str(exception)
    else:
        text = f"{type(exception).__name__}: {exception}"
    return text.strip() or type(exception).__name__


class RecordFailure:
    """Failure callback: the failed FT-GTI-004 row, and the run's uncompressed copy removed.

    It runs once a task has failed for good (after its last retry). It never raises, so the email
    notifier after it always runs.
    """

    def __init__(self, target: dict[str, Any], settings: dict[str, Any]):
        self.target = target
        self.settings = settings

    def __call__(self, context: dict[str, Any]) -> None:
        try:
            self._record(context)
        except Exception:
            log.exception("No se pudo registrar la falla de %s en el FT-GTI-004", self.target.get("id"))

    def _record(self, context: dict[str, Any]) -> None:
        model = _target(self.target)
        ti = context["ti"]
        step = ti.task_id.rsplit(".", 1)[-1]
        row = _base_row(model, self.settings, context, "failed")
        row.step = step
        row.error = f"Falló «{step}»: {plain_error(context.get('exception'))}"
        known: dict[str, Any] = {}
        for earlier in STEPS[: STEPS.index(step)] if step in STEPS else ():
            value = ti.xcom_pull(task_ids=f"{model.id}.{earlier}")
            if isinstance(value, dict):
                known.update(value)
        for key in ("backup_at", "started_at"):
            if known.get(key):
                setattr(row, key, dt.datetime.fromisoformat(known[key]))
        row.started_at = row.started_at or getattr(ti, "start_date", None)
        if known.get("artifact_path"):  # only an artifact that exists is worth naming
            for key in ("artifact_path", "original_bytes", "compressed_bytes", "sha256", "compression"):
                setattr(row, key, known.get(key))
        row.finished_at = _utcnow()
        artifacts.remove_staging(artifacts.staging_dir(self.settings["root"], model.frequency, model.id,
                                                       context["run_id"]))
        register.record(self.settings["register_conn_id"], row)
        log.info("Registrada la falla de %s en el FT-GTI-004: %s", model.id, row.error)
