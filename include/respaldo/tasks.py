"""The four steps every target goes through, as Airflow task callables.

``copia`` (step 4) -> ``verificar_fecha`` (step 3) -> ``comprimir`` (step 5) -> ``registrar`` (step 6).

Each callable gets only its own target and a few settings (small, JSON-friendly, no secrets) and
passes a small dict to the next through XCom: paths, sizes, dates; never data, never credentials.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import zoneinfo
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from respaldo import artifacts, entrega, fallas, formulario, integridad, intentos, register
from respaldo.ciclo import cifrado
from respaldo.errors import DateCheckError, RespaldoError
from respaldo.inventory import target_from
from respaldo.process import human_bytes
from respaldo.sources import TargetBase, source_for
from respaldo.sources.base import DEFAULT_QUEUE, recipients_of

log = logging.getLogger("respaldo")

STEPS = fallas.STEPS
#: How far in the future a delivered file's date may be (clocks of other machines drift a little).
FUTURE_TOLERANCE = dt.timedelta(minutes=5)


class Rejected(DateCheckError):
    """A delivered manual copy that must not be taken; it goes to ``rechazados/`` with the reason."""


def _target(target: dict[str, Any]) -> TargetBase:
    return target_from(target)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def copia(target: dict[str, Any], settings: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Step 4: take the copy into the run's staging folder."""
    from airflow.sdk.exceptions import AirflowSkipException

    model = _target(target)
    if not formulario.selected(model.id, context):
        raise AirflowSkipException(f"«{model.id}» no está entre los objetivos elegidos para esta ejecución")
    source = source_for(model.kind)
    staging = artifacts.staging_dir(settings["root"], model.frequency, model.id, context["run_id"])
    artifacts.sweep_leftovers(settings["root"], model.frequency, model.id, staging, context, settings["dag_id"], log)
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
    if result.sealed is not None:
        done["sealed"] = result.sealed.as_xcom()
    if result.figures is not None:
        done["figures"] = result.figures
    return done


def verificar_fecha(target: dict[str, Any], settings: dict[str, Any], copy: dict[str, Any],
                    **context: Any) -> dict[str, Any]:
    """Step 3: an automatic copy carries the date the system stamped; a manual one gets the run's date."""
    from airflow.sdk.exceptions import AirflowFailException

    model = _target(target)
    zone = zoneinfo.ZoneInfo(settings["timezone"])
    try:
        if isinstance(model, entrega.ManualTarget):
            backup_at = _assign_manual_date(model, settings, copy, context)
            log.info("Copia manual «%s»: fecha de creación asignada desde la ejecución: %s (%s)",
                     copy["original_name"], backup_at.astimezone(zone).isoformat(), settings["timezone"])
        else:
            backup_at, figures = _verify_system_date(model, settings, copy)
            log.info("Fecha de creación asignada por el sistema: %s (%s)", backup_at.astimezone(zone).isoformat(),
                     settings["timezone"])
            copy = {**copy, "figures": figures}
    except Rejected as err:
        moved = entrega.settle(model, copy["intake_file"], entrega.REJECTED, reason=_rejection_note(err, context))
        log.error("Copia rechazada y movida a %s (con el motivo al lado): %s", moved, err)
        raise AirflowFailException(f"{err} El archivo quedó en {moved}.") from err
    except DateCheckError as err:
        raise AirflowFailException(str(err)) from err
    return {**copy, "backup_at": backup_at.isoformat()}


def _staged(copy: dict[str, Any]) -> Path:
    path = Path(copy["staging"])
    if not path.exists():
        raise DateCheckError(f"La copia {path} ya no está; vuelva a ejecutar desde «copia».")
    size = path.stat().st_size
    if size != copy["bytes"]:
        raise DateCheckError(f"La copia {path.name} cambió después de tomada ({copy['bytes']} bytes al "
                             f"copiar, {size} ahora).")
    return path


def _verify_system_date(model: TargetBase, settings: dict[str, Any], copy: dict[str, Any]
                        ) -> tuple[dt.datetime, dict | None]:
    """The copy must be whole, and the date the system stamped must fall between the start of ``copia`` and now.

    The copy is read to its end once (:mod:`respaldo.integridad`): compression, size and checksum
    against what ``copia`` wrote, and the format's own check, which also finds the stamped date and
    what the copy holds: with what ``copia`` counted, the figures a restore drill compares with.
    """
    path = _staged(copy)
    if path.stat().st_size == 0:
        raise DateCheckError(f"La copia {path.name} está vacía.")
    sealed = copy.get("sealed")
    with ThreadPoolExecutor(max_workers=1) as pool:  # the encrypted twin is re-read beside the plaintext
        twin = pool.submit(cifrado.check_written, Path(sealed["path"]), sealed["sha256"], sealed["bytes"]) if sealed \
            else None
        verified = integridad.verify_staged(path, expected_sha256=copy.get("sha256"),
                                            original_bytes=copy.get("original_bytes"))
        twin_problem, twin_checked = twin.result() if twin else (None, "")
    if not verified.intact:
        for problem in verified.problems[1:]:
            log.warning("Además: %s", problem)
        raise DateCheckError(verified.reason)
    if twin_problem:
        raise DateCheckError(twin_problem)
    log.info("Copia íntegra (%s): %s leídos, %s descomprimidos, en %.1f s", verified.format,
             human_bytes(verified.stored_bytes), human_bytes(verified.decompressed_bytes), verified.seconds)
    if twin:
        log.info("Copia cifrada %s comprobada: cifra exactamente la copia verificada (sha256 %s); %s",
                 Path(sealed["path"]).name, copy.get("sha256"), twin_checked)
    stamp = source_for(model.kind).read_stamp(model, path, verified)
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
    return stamp, source_for(model.kind).figures(model, verified, copy.get("figures"))


def _assign_manual_date(model: entrega.ManualTarget, settings: dict[str, Any], copy: dict[str, Any],
                        context: dict[str, Any]) -> dt.datetime:
    """Reject what is not a new, plausible copy; the accepted one takes the run's date."""
    zone = zoneinfo.ZoneInfo(settings["timezone"])
    name = copy["original_name"]
    if copy["bytes"] == 0:
        raise Rejected(f"La copia entregada «{name}» está vacía.")
    _staged(copy)
    original = dt.datetime.fromisoformat(copy["original_date"])
    if original > _utcnow() + FUTURE_TOLERANCE:
        raise Rejected(f"La copia entregada «{name}» tiene fecha futura "
                       f"({original.astimezone(zone):%Y-%m-%d %H:%M}); revise la fecha y hora del equipo que la "
                       "generó.")
    previous = register.previous_success(settings["register_conn_id"], model.id, context["run_id"])
    if previous:
        when = previous["backup_at"].astimezone(zone).strftime("%Y-%m-%d %H:%M") if previous["backup_at"] else "?"
        if previous["original_sha256"] and previous["original_sha256"] == copy["original_sha256"]:
            raise Rejected(f"La copia entregada «{name}» es idéntica (misma suma SHA-256) a la ya registrada "
                           f"«{previous['original_name']}» del {when}: no es una copia nueva.")
        if previous["original_date"] and original < previous["original_date"]:
            raise Rejected(
                f"La copia entregada «{name}» ({original.astimezone(zone):%Y-%m-%d %H:%M}) es más antigua que la "
                f"última copia aceptada «{previous['original_name']}» "
                f"({previous['original_date'].astimezone(zone):%Y-%m-%d %H:%M}, registrada el {when})."
            )
    return entrega.slot_of(context)


def _rejection_note(err: Exception, context: dict[str, Any]) -> str:
    return (f"Rechazada por respaldo el {_utcnow():%Y-%m-%d %H:%M} UTC (DAG {context['dag'].dag_id}, "
            f"ejecución {context['run_id']}).\nMotivo: {err}\nNo se borró nada: corrija y deje de nuevo la copia "
            "en la carpeta de entrega.")


def comprimir(target: dict[str, Any], settings: dict[str, Any], checked: dict[str, Any],
              **context: Any) -> dict[str, Any]:
    """Step 5: compress the copy into its dated artifact with a .sha256 beside it; encrypt it if the inventory says so.

    The staged copy (plaintext, verified whole by ``verificar_fecha``) is removed once the artifact exists.
    """
    model = _target(target)
    staging = Path(checked["staging"])
    if not staging.exists():
        raise RespaldoError(f"La copia {staging} ya no está; vuelva a ejecutar desde «copia».")
    backup_at = dt.datetime.fromisoformat(checked["backup_at"]).astimezone(zoneinfo.ZoneInfo(settings["timezone"]))
    extension = checked.get("extension") or source_for(model.kind).extension
    recipients = recipients_of(model)
    final = artifacts.artifact_path(settings["root"], model.frequency, model.id, backup_at, extension,
                                    encrypted=bool(recipients))
    if recipients and checked.get("sealed"):  # encrypted by copia as it compressed: only a name to give
        artifact = artifacts.place_sealed(checked["sealed"], final, checked["sha256"], checked["original_bytes"], log)
    elif checked.get("compressed"):
        artifact = artifacts.place_compressed(staging, final, checked["sha256"], checked["original_bytes"], log,
                                              recipients=recipients)
    else:
        artifact = artifacts.compress(staging, final, log, recipients=recipients)
    if isinstance(model, entrega.ManualTarget):  # the assigned creation date is also the file's date
        os.utime(artifact.path, (backup_at.timestamp(), backup_at.timestamp()))
    artifacts.remove_staging(staging.parent)
    return {
        **checked,
        "artifact_path": str(artifact.path),
        "original_bytes": artifact.original_bytes,
        "compressed_bytes": artifact.compressed_bytes,
        "sha256": artifact.sha256,
        "compression": artifact.compression,
    }


def registrar(target: dict[str, Any], settings: dict[str, Any], done: dict[str, Any], **context: Any) -> int:
    """Step 6: write the FT-GTI-004 row of this copy."""
    model = _target(target)
    run = fallas.RunFacts.of(context, settings["dag_id"])
    row = register.Row(
        target=model.id, kind=model.kind, frequency=model.frequency, mechanism=model.mechanism,
        dag_id=run.dag_id, run_id=run.run_id, run_type=run.run_type, logical_date=run.logical_date,
        status="success", step="registrar", responsible=run.responsible or model.responsible, notes=run.notes,
        try_number=getattr(context.get("ti"), "try_number", None),
        backup_at=dt.datetime.fromisoformat(done["backup_at"]),
        started_at=dt.datetime.fromisoformat(done["started_at"]),
        finished_at=_utcnow(),
        artifact_path=done["artifact_path"], original_bytes=done["original_bytes"],
        compressed_bytes=done["compressed_bytes"], sha256=done["sha256"], compression=done["compression"],
        original_name=done.get("original_name"),
        original_date=dt.datetime.fromisoformat(done["original_date"]) if done.get("original_date") else None,
        original_sha256=done.get("original_sha256"), figures=done.get("figures"),
    )
    recorded = register.record(settings["register_conn_id"], row)
    log.info("Registrado en FT-GTI-004 (fila %s): %s, creado %s, %s", recorded.id, model.id, row.backup_at,
             row.artifact_path)
    if isinstance(model, entrega.ManualTarget):
        log.info("Archivo entregado movido a %s", entrega.settle(model, done["intake_file"], entrega.TAKEN))
    return done["compressed_bytes"]


def preparar(settings: dict[str, Any], **context: Any) -> list[str]:
    """Before any target starts: check the run form once; return the targets this run covers."""
    from airflow.sdk.exceptions import AirflowFailException

    dag = context["dag"]
    known = formulario.targets_of(dag)
    wrong = formulario.unknown(context)
    if wrong:
        raise AirflowFailException(
            f"El formulario pide objetivo(s) que no existen en {dag.dag_id}: {', '.join(wrong)}. No se respaldó "
            f"nada. Los objetivos de {dag.dag_id} son: {', '.join(known)}. Corrija la lista y vuelva a ejecutar."
        )
    chosen = formulario.chosen(context) or known
    log.info("Esta ejecución respalda %d de %d objetivos: %s", len(chosen), len(known), ", ".join(chosen))
    return chosen


def cierre(settings: dict[str, Any], **context: Any) -> dict[str, Any]:
    """After every target: each failed step has its row and its alert; nothing of this run is left in staging.

    A task process killed outright (SIGKILL, out of memory) runs no failure callback: its step ends
    ``failed`` with no row and no email. This is where that is caught. Alerts of this run that could
    not be sent are tried again.
    """
    from airflow.sdk.exceptions import AirflowException

    from respaldo.avisos import Channel, resend_problems
    from respaldo.register import notificacion

    dag, ti, run_id = context["dag"], context["ti"], context["run_id"]
    here = getattr(ti, "queue", None) or context["task"].queue
    remote: list[str] = []
    states = ti.get_task_states(dag_id=dag.dag_id, run_ids=[run_id]).get(run_id, {})
    run = fallas.RunFacts.of(context, settings["dag_id"])
    problems: list[str] = []
    handled: list[str] = []
    for group_id in formulario.targets_of(dag):
        if not formulario.selected(group_id, context):
            continue
        operator = dag.get_task(f"{group_id}.registrar")
        model = _target(operator.target)
        if states.get(f"{group_id}.copia_externa") == "failed":
            problems += _external_unreported(dag.get_task(f"{group_id}.copia_externa"), settings, run_id, ti)
        failed = [step for step in STEPS if states.get(f"{group_id}.{step}") == "failed"]
        if not failed:  # a failed target's leftovers are removed (and reported) by fallas.handle
            if not _remove_staging_here(settings, model, run_id, here):
                remote.append(model.id)
            continue
        step = failed[0]
        started = intentos.of(ti, f"{group_id}.{step}")
        try_number = started.get("try_number")
        try:
            row = register.get(settings["register_conn_id"], model.id, run_id)
            alerted = notificacion.of(settings["register_conn_id"], fallas.alert_key(model.id, run_id, try_number))
        except RespaldoError as err:
            problems.append(f"{model.id}: {err}")
            continue
        this_try = row is not None and row["try_number"] == try_number
        if this_try and alerted:  # its failure callback recorded and alerted it
            if not _remove_staging_here(settings, model, run_id, here):
                remote.append(model.id)
            continue
        reason = fallas.PROCESS_LOST
        if this_try and row["status"] == "failed" and row["error"]:  # recorded, but the alert never left
            reason = row["error"].removeprefix(f"Falló «{step}»: ")
        when = dt.datetime.fromisoformat(started["started_at"]) if started.get("started_at") else None
        outcome = fallas.handle(model, settings, run, fallas.Failure(step, try_number, reason, when),
                                fallas.earlier_results(ti, model.id, step), dag.task_group.children[group_id].tooltip,
                                here)
        handled.append(model.id)
        if outcome.recorded is None:
            problems.append(f"{model.id}: {outcome.record_error}")
        if outcome.delivery and not (outcome.delivery.sent or outcome.delivery.duplicate):
            problems.append(f"{model.id}: {outcome.delivery.error}")
    if remote:
        log.info("La carpeta temporal de %s está en los trabajadores de su cola, no en este (cola «%s»): si quedó "
                 "algo, la próxima copia de cada uno lo borra al empezar.", ", ".join(remote), here)
    problems += resend_problems(Channel.of(settings), run_id=run_id)
    if problems:
        raise AirflowException("El cierre de la ejecución no pudo completar: " + "; ".join(problems))
    return {"fallas_sin_aviso_atendidas": handled, "temporal_en_otra_cola": remote}


def _external_unreported(operator: Any, settings: dict[str, Any], run_id: str, ti: Any) -> list[str]:
    """A ``copia_externa`` that ended failed but left its row ``pending``: its process died; record and alert it."""
    from respaldo.ciclo.externo import tarea

    try:
        row = tarea.row_of(settings["register_conn_id"], operator.target["id"], run_id)
    except RespaldoError as err:
        return [f"{operator.target['id']}: {err}"]
    if row is None or row["external_status"] != "pending":
        return []  # its failure callback recorded and alerted it
    where = tarea.destination_for(operator.external).describe()
    tarea.handle_failure(operator.target, settings, where, run_id, fallas.PROCESS_LOST,
                         intentos.of(ti, operator.task_id).get("try_number"))
    return []


def retencion(settings: dict[str, Any], retention: dict[str, Any] | None, queue: str = DEFAULT_QUEUE,
              **context: Any) -> dict[str, Any]:
    """After the copies: retention for each target of ``queue`` whose copy of this run is recorded ``success``.

    A target whose copy failed, was skipped or never got its row is left alone: a run of failures deletes
    nothing. A copy that could not be deleted fails this task (its alert says so); the backups of the run
    keep their own result.
    """
    import zoneinfo

    from airflow.sdk.exceptions import AirflowException

    from respaldo.ciclo import retencion as ciclo
    from respaldo.ciclo.politica import Retention

    dag, run_id = context["dag"], context["run_id"]
    class_policy = Retention.model_validate(retention) if retention else None
    models = [_target(dag.get_task(f"{group_id}.registrar").target) for group_id in formulario.targets_of(dag)
              if formulario.selected(group_id, context)]
    models = [m for m in models if (m.queue or DEFAULT_QUEUE) == queue]  # the others: the task on their queue
    # A target with an external medium has the task copia_externa (the DAG adds it only then).
    objetivos = [o for o in (ciclo.objetivo_de(m, class_policy, dag.has_task(f"{m.id}.copia_externa"))
                             for m in models) if o.policy is not None]
    succeeded = ciclo.succeeded_in_run(settings["register_conn_id"], [o.id for o in objetivos], run_id)
    skipped = sorted(o.id for o in objetivos if o.id not in succeeded)
    if skipped:
        log.info("Sin retención en esta ejecución (su copia no quedó registrada como exitosa): %s", ", ".join(skipped))
    zone = zoneinfo.ZoneInfo(settings["timezone"])
    plans = ciclo.aplicar(settings["register_conn_id"], [o for o in objetivos if o.id in succeeded], zone)
    log.info("%s", ciclo.text(plans, zone, applied=True))
    problems = [f"{found.objetivo.id}: {problem}" for found in plans for problem in found.problems]
    if problems:
        raise AirflowException("La retención no pudo borrar todo lo que debía: " + "; ".join(problems))
    deleted = {found.objetivo.id: [d.copia.id for d in found.decisions if d.action == ciclo.DELETED]
               for found in plans}
    return {"borradas": {target: rows for target, rows in deleted.items() if rows}, "sin_retencion": skipped}


def _remove_staging_here(settings: dict[str, Any], model: TargetBase, run_id: str, here: str | None) -> bool:
    """Remove a target's staging folder of this run if this machine sees it; False when it may be on another.

    With one worker per queue (no shared storage), a target of another queue keeps its staging on its
    own worker: ``cierre`` cannot remove it from here, and that target's next ``copia`` does.
    """
    staging = artifacts.staging_dir(settings["root"], model.frequency, model.id, run_id)
    if staging.exists() or (model.queue or DEFAULT_QUEUE) == here:
        artifacts.remove_staging(staging)
        return True
    return False
