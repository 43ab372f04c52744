"""When a target's step fails for good: a truthful row, the run's leftovers removed, one alert.

Three places meet such a failure, and all call :func:`handle`:

- the step's failure callback, after its last try: in the task process, with the exception; or in
  Airflow's DAG processor when the worker died (then no exception is known, and Airflow may run the
  callback more than once);
- the run's closing task ``cierre``, which finds steps that ended ``failed`` with no row for them: a
  task process killed outright (SIGKILL, the kernel's out-of-memory killer) runs no callback at all;
- the follow-up, for runs whose closing task could not do it.

:func:`handle` is idempotent: the row is upserted on (target, run_id), and the alert is keyed by
(target, run_id, try), so whoever reports the failure first sends the only email. The email says what
happened, not what was meant to happen: whether the row was written, whether a usable copy exists,
what was cleaned up.
"""

from __future__ import annotations

import datetime as dt
import errno
import html
import logging
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from respaldo import artifacts, avisos, formulario, register
from respaldo.errors import RegisterError, RespaldoError
from respaldo.register.notificacion import Alert
from respaldo.sources import TargetBase
from respaldo.sources.base import DEFAULT_QUEUE

log = logging.getLogger("respaldo")

STEPS = ("copia", "verificar_fecha", "comprimir", "registrar")

#: The reason when a step ended failed and nobody could say why: its process is gone.
PROCESS_LOST = ("la tarea terminó sin informar su resultado: su proceso se detuvo de golpe (memoria agotada, "
                "señal KILL, reinicio o caída del trabajador) o alguien la marcó como fallida. Revise el log de la "
                "tarea y la memoria del servidor, y vuelva a ejecutarla")


@dataclass(frozen=True)
class RunFacts:
    """The Airflow run a failure belongs to, and what the form said about it."""

    dag_id: str
    run_id: str
    run_type: str | None
    logical_date: dt.datetime | None
    responsible: str | None = None
    notes: str | None = None

    @classmethod
    def of(cls, context: dict[str, Any], dag_id: str) -> RunFacts:
        dag_run = context.get("dag_run")
        run_type = getattr(dag_run, "run_type", None)
        return cls(dag_id=dag_id, run_id=context["run_id"],
                   run_type=str(getattr(run_type, "value", run_type)) if run_type else None,
                   logical_date=context.get("logical_date"),
                   responsible=formulario.text(context, "responsable"),
                   notes=formulario.text(context, "observaciones"))


@dataclass(frozen=True)
class Failure:
    """Which step failed, in which try, and why (one plain sentence, maybe with the tool's key line)."""

    step: str
    try_number: int | None
    reason: str
    started_at: dt.datetime | None = None


@dataclass
class Outcome:
    """What :func:`handle` did, as the alert tells it."""

    recorded: register.Recorded | None = None
    record_error: str | None = None
    artifact: dict[str, Any] | None = None
    staging_removed: bool = False
    delivery: avisos.Delivery | None = None
    notes: list[str] = field(default_factory=list)


def reason_of(exception: BaseException | str | None, *, timeout: dt.timedelta | None = None) -> str:
    """The reason for a failure: one plain sentence (and a tool's key line), never a traceback.

    Errors of respaldo already read that way. Airflow's own say what happened to the task; a task
    timeout is told with its limit and what to change. Anything else is a fault of respaldo or of the
    machine: named as such, with the exception's own line for whoever maintains respaldo.
    """
    if exception is None:
        return PROCESS_LOST
    if isinstance(exception, str):
        return exception
    if isinstance(exception, RespaldoError):
        return str(exception).strip() or type(exception).__name__
    name = type(exception).__name__
    if name == "AirflowTaskTimeout":
        limit = f" ({timeout.total_seconds() / 3600:g} h)" if timeout else ""
        return (f"la tarea pasó de su tiempo máximo{limit} y Airflow la detuvo; si la copia de verdad tarda más, "
                "aumente timeout_hours de la clase en el inventario; si no, revise qué la detuvo en el log")
    if type(exception).__module__.startswith("airflow"):
        return str(exception).strip() or name
    if isinstance(exception, OSError) and exception.errno is not None:
        where = f" en {exception.filename}" if exception.filename else ""
        if exception.errno == errno.ENOSPC:
            return f"no hay espacio en disco{where}; libere espacio o amplíe el disco y vuelva a ejecutar"
        if exception.errno in (errno.EACCES, errno.EPERM):
            return f"permiso denegado{where}: el usuario de Airflow no puede leer o escribir ahí"
        if exception.errno == errno.ENOENT:
            return f"no existe{where or ' un archivo o carpeta que la tarea necesita'}"
        return f"error del sistema{where}: {exception.strerror} (errno {exception.errno})"
    return (f"error inesperado de respaldo ({name}: {str(exception).strip()[:300]}); revise el log de la tarea y "
            "avise a quien mantiene respaldo")


def alert_key(target: str, run_id: str, try_number: int | None) -> str:
    return f"fallo:{target}:{run_id}:{try_number or 0}"


def log_url(dag_id: str, run_id: str, task_id: str, try_number: int | None) -> str:
    """The task's log page, as Airflow builds it (``[api] base_url``)."""
    from airflow.sdk.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")
    tries = f"?try_number={try_number}" if try_number else ""
    return f"{base}/dags/{dag_id}/runs/{quote(run_id)}/tasks/{task_id}{tries}"


def _existing_artifact(known: dict[str, Any]) -> dict[str, Any] | None:
    """The artifact this run produced, if it is on disk complete with its checksum file."""
    path = known.get("artifact_path")
    if not path:
        return None
    artifact = Path(path)
    sidecar = artifact.with_name(artifact.name + ".sha256")
    if not (artifact.is_file() and sidecar.is_file()) or artifact.stat().st_size != known.get("compressed_bytes"):
        return None
    return {key: known.get(key) for key in ("artifact_path", "original_bytes", "compressed_bytes", "sha256",
                                            "compression")}


def failed_row(model: TargetBase, settings: dict[str, Any], run: RunFacts, failure: Failure,
               known: dict[str, Any]) -> register.Row:
    """The FT-GTI-004 row of a failed attempt, with what the steps before it had established."""
    row = register.Row(
        target=model.id, kind=model.kind, frequency=model.frequency, mechanism=model.mechanism,
        dag_id=run.dag_id, run_id=run.run_id, run_type=run.run_type, logical_date=run.logical_date,
        status="failed", step=failure.step, error=f"Falló «{failure.step}»: {failure.reason}",
        responsible=run.responsible or model.responsible, notes=run.notes, try_number=failure.try_number,
        finished_at=dt.datetime.now(dt.UTC),
    )
    for key in ("backup_at", "started_at"):
        if known.get(key):
            setattr(row, key, dt.datetime.fromisoformat(known[key]))
    row.started_at = row.started_at or failure.started_at
    row.original_name = known.get("original_name")
    row.original_date = dt.datetime.fromisoformat(known["original_date"]) if known.get("original_date") else None
    row.original_sha256 = known.get("original_sha256")
    artifact = _existing_artifact(known)
    if artifact:  # only an artifact that exists is worth naming
        for key, value in artifact.items():
            setattr(row, key, value)
    return row


def handle(model: TargetBase, settings: dict[str, Any], run: RunFacts, failure: Failure,
           known: dict[str, Any], summary: str = "", here: str | None = None) -> Outcome:
    """Record the failure, remove the run's staging copy, send the one alert; never raises.

    ``here`` is the Celery queue this code runs on, when known. With one worker per queue and no
    shared storage, another queue's staging folder is on another machine: it cannot be removed from
    here, and the alert says so (the target's next ``copia`` removes it, see
    :func:`respaldo.artifacts.remove_leftovers`).
    """
    outcome = Outcome()
    try:
        staging = artifacts.staging_dir(settings["root"], model.frequency, model.id, run.run_id)
        outcome.staging_removed = staging.exists()
        artifacts.remove_staging(staging)
        queue = model.queue or DEFAULT_QUEUE
        if not outcome.staging_removed and queue != DEFAULT_QUEUE and here != queue:
            outcome.notes.append(
                f"Lo que la copia haya alcanzado a dejar en la carpeta temporal de los trabajadores de la cola "
                f"«{queue}» no se ve desde aquí (cola «{here or 'desconocida'}»): la próxima copia de «{model.id}» "
                "lo borra al empezar.")
    except OSError as err:
        outcome.notes.append(f"No se pudo borrar la copia a medio hacer de esta ejecución: {err}")
    row = failed_row(model, settings, run, failure, known)
    outcome.artifact = _existing_artifact(known)
    try:
        outcome.recorded = register.record(settings["register_conn_id"], row)
        log.info("Falla de %s registrada en el FT-GTI-004 (fila %s): %s", model.id, outcome.recorded.id, row.error)
    except RegisterError as err:
        outcome.record_error = str(err)
        log.error("No se pudo registrar la falla de %s en el FT-GTI-004: %s", model.id, err)
    alert = failure_alert(model, settings, run, failure, outcome, known, summary)
    outcome.delivery = avisos.deliver(alert, avisos.Channel.of(settings))
    return outcome


def _when(value: dt.datetime | None, zone: zoneinfo.ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def failure_alert(model: TargetBase, settings: dict[str, Any], run: RunFacts, failure: Failure, outcome: Outcome,
                  known: dict[str, Any], summary: str = "") -> Alert:
    """The email of a failure, saying only what happened."""
    from respaldo.process import human_bytes

    zone = zoneinfo.ZoneInfo(settings["timezone"])
    esc = html.escape
    task_id = f"{model.id}.{failure.step}"
    url = log_url(run.dag_id, run.run_id, task_id, failure.try_number)
    subject = f"[respaldo] Falló el respaldo de «{model.id}» en el paso «{failure.step}» ({run.dag_id})"
    scheduled = (f"{_when(run.logical_date, zone)} ({settings['timezone']})" if run.logical_date
                 else "ninguna (ejecución manual)")
    if outcome.recorded is None:
        register_text = (f"<b>NO quedó registrada</b> en el formato FT-GTI-004: {esc(outcome.record_error or '')} "
                         "respaldo lo intentará de nuevo al cerrar la ejecución y en el seguimiento.")
    elif outcome.recorded.status == "success":
        register_text = (f"esta ejecución ya tenía registrada en el formato FT-GTI-004 una copia <b>exitosa</b> de "
                         f"un intento anterior (fila {outcome.recorded.id} de <code>respaldo.control_backup</code>); "
                         "esa fila se conserva.")
    else:
        register_text = (f"quedó registrada como <b>fallida</b> en el formato FT-GTI-004 (fila {outcome.recorded.id} "
                         "de <code>respaldo.control_backup</code>).")
    artifact = outcome.artifact
    if artifact:
        copy_text = (f"la copia <b>sí se tomó y está completa</b>: <code>{esc(artifact['artifact_path'])}</code> "
                     f"({human_bytes(artifact['compressed_bytes'] or 0)}, sha256 {esc(artifact['sha256'] or '')}). "
                     f"Vuelva a ejecutar «{failure.step}» para terminar el registro.")
    else:
        copy_text = "no quedó ninguna copia de esta ejecución"
        if outcome.staging_removed:
            copy_text += "; se borró lo que alcanzó a copiar"
        copy_text += ". Los respaldos anteriores no se tocaron."
    if known.get("intake_file") and not artifact:
        copy_text += (f" El archivo entregado «{esc(str(known.get('original_name') or known['intake_file']))}» "
                      "sigue en la carpeta de entrega y se retoma al volver a ejecutar.")
    lines = [
        f"<p>El respaldo de <b>{esc(model.id)}</b>{' (' + esc(summary) + ')' if summary else ''} falló en el paso "
        f"<b>{esc(failure.step)}</b>{f' (intento {failure.try_number})' if failure.try_number else ''}.</p>",
        f"<p><b>Motivo:</b> {esc(failure.reason)}</p>",
        "<ul>",
        f"<li>DAG: {esc(run.dag_id)} &mdash; ejecución {esc(run.run_id)}</li>",
        f"<li>Fecha programada: {esc(scheduled)}</li>",
        f"<li>Responsable: {esc(run.responsible or model.responsible)}</li>",
        "</ul>",
        f"<p><b>Registro:</b> {register_text}</p>",
        f"<p><b>La copia:</b> {copy_text}</p>",
        *(f"<p>{esc(note)}</p>" for note in outcome.notes),
        f'<p>Log de la tarea: <a href="{esc(url)}">{esc(url)}</a></p>',
        f"<p>Corrija la causa y vuelva a ejecutar el grupo de tareas «{esc(model.id)}» desde Airflow "
        "(<i>Clear</i>).</p>",
    ]
    return Alert(key=alert_key(model.id, run.run_id, failure.try_number), kind="fallo",
                 recipients=list(settings["alert_emails"]), subject=subject, body="\n".join(lines),
                 target=model.id, run_id=run.run_id)


def earlier_results(ti: Any, target_id: str, step: str) -> dict[str, Any]:
    """What the steps before ``step`` established (their XComs, merged): paths, sizes, dates."""
    known: dict[str, Any] = {}
    for earlier in STEPS[: STEPS.index(step)] if step in STEPS else ():
        value = ti.xcom_pull(task_ids=f"{target_id}.{earlier}")
        if isinstance(value, dict):
            known.update(value)
    return known


class FailureCallback:
    """``on_failure_callback`` of every step: :func:`handle` with what the task knew. Never raises.

    :param target: the target's inventory entry, as JSON-friendly values.
    :param settings: the settings every step gets (storage root, timezone, register, alerts, DAG id).
    :param summary: what the target copies, in a line, for the email.
    """

    def __init__(self, target: dict[str, Any], settings: dict[str, Any], summary: str = ""):
        self.target = target
        self.settings = settings
        self.summary = summary

    def __call__(self, context: dict[str, Any]) -> None:
        try:
            from respaldo.inventory import target_from

            model = target_from(self.target)
            ti = context["ti"]
            step = ti.task_id.rsplit(".", 1)[-1]
            timeout = getattr(context.get("task"), "execution_timeout", None)
            failure = Failure(step, getattr(ti, "try_number", None),
                              reason_of(context.get("exception"), timeout=timeout), getattr(ti, "start_date", None))
            # With an exception the callback runs in the task's own process, on its queue's worker; without
            # one the worker died and Airflow runs it elsewhere.
            here = model.queue if context.get("exception") is not None else None
            handle(model, self.settings, RunFacts.of(context, self.settings["dag_id"]), failure,
                   earlier_results(ti, model.id, step), self.summary, here)
        except Exception:
            log.exception("No se pudo atender la falla de %s", self.target.get("id"))


class RunCallback:
    """``on_failure_callback`` of a DAG's own tasks (``preparar``, ``cierre``, ``retencion``): one alert saying what
    did not happen. Never raises.

    :param settings: the settings every task of the DAG gets.
    :param texts: per task id, the subject (``{run_id}`` and ``{dag_id}`` filled in) and what happened to
        the run, in a sentence; by default a backup DAG's.
    """

    BACKUP_TEXTS = {
        "preparar": ("[respaldo] La ejecución {run_id} de {dag_id} no empezó: no se respaldó nada",
                     "no empezó: ningún objetivo se respaldó en esta ejecución"),
        "cierre": ("[respaldo] El cierre de la ejecución {run_id} de {dag_id} quedó incompleto",
                   "terminó, pero su cierre no pudo registrar o avisar todas las fallas; el seguimiento lo volverá "
                   "a intentar"),
        "retencion": ("[respaldo] La retención de la ejecución {run_id} de {dag_id} no terminó",
                      "terminó sus copias, pero la retención (borrar las copias antiguas que ya no se conservan) no "
                      "pudo hacer todo: las copias de esta ejecución quedan como están y ninguna copia que deba "
                      "conservarse se borró. `respaldo retencion` muestra qué quedó pendiente"),
    }

    def __init__(self, settings: dict[str, Any], texts: dict[str, tuple[str, str]] | None = None):
        self.settings = settings
        self.texts = texts or self.BACKUP_TEXTS

    def __call__(self, context: dict[str, Any]) -> None:
        try:
            ti = context["ti"]
            run = RunFacts.of(context, self.settings["dag_id"])
            reason = reason_of(context.get("exception"),
                               timeout=getattr(context.get("task"), "execution_timeout", None))
            url = log_url(run.dag_id, run.run_id, ti.task_id, getattr(ti, "try_number", None))
            subject, what = self.texts[ti.task_id]
            body = "\n".join([
                f"<p>La ejecución <b>{html.escape(run.run_id)}</b> de <b>{html.escape(run.dag_id)}</b> {what}.</p>",
                f"<p><b>Motivo:</b> {html.escape(reason)}</p>",
                f'<p>Log de la tarea: <a href="{html.escape(url)}">{html.escape(url)}</a></p>',
            ])
            alert = Alert(key=f"{ti.task_id}:{run.dag_id}:{run.run_id}:{getattr(ti, 'try_number', 0)}",
                          kind=ti.task_id, recipients=list(self.settings["alert_emails"]),
                          subject=subject.format(run_id=run.run_id, dag_id=run.dag_id), body=body, run_id=run.run_id)
            avisos.deliver(alert, avisos.Channel.of(self.settings))
        except Exception:
            log.exception("No se pudo avisar la falla de %s", context.get("run_id"))
