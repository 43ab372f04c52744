"""The task ``copia_externa``: after ``registrar``, the artifact and its sidecar also go to the external medium.

Its outcome lives on the backup's own register row, in the ``external_*`` columns: ``pending`` while
it runs, ``success`` with the URI, the checksum found at the destination and when, or ``failed`` with
the reason. The backup itself stays ``success`` whatever happens here: the local copy was taken,
verified and registered, and nothing here touches it. A failure (after the task's last try) also
sends one email, through the same alert path as every other failure.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from respaldo.ciclo.externo.base import Destination, ExternalError, Placed, relative_of
from respaldo.ciclo.externo.config import External
from respaldo.register.esquema import TABLE, connect

log = logging.getLogger("respaldo")

STEP = "copia_externa"


def destination_for(external: dict[str, Any] | Any) -> Destination:
    """The destination of an ``external`` block (the validated model, or its JSON form a task is handed)."""
    config = TypeAdapter(External).validate_python(external) if isinstance(external, dict) else external
    if config.kind == "path":
        from respaldo.ciclo.externo.disco import PathDestination

        return PathDestination(config)
    if config.kind == "sftp":
        from respaldo.ciclo.externo.sftp import SftpDestination

        return SftpDestination(config)
    from respaldo.ciclo.externo.s3 import S3Destination

    return S3Destination(config)


# --- the register's external_* columns ------------------------------------------------------------


def _update(conn_id: str, row_id: int, **values: Any) -> None:
    sets = ", ".join(f"{name} = %s" for name in values)
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"UPDATE {TABLE} SET {sets}, updated_at = now() WHERE id = %s", [*values.values(), row_id])
        conn.commit()


def mark_pending(conn_id: str, row_id: int, uri: str) -> None:
    _update(conn_id, row_id, external_status="pending", external_uri=uri, external_error=None, external_sha256=None,
            external_verified_at=None, external_deleted_at=None)


def mark_success(conn_id: str, row_id: int, placed: Placed) -> None:
    _update(conn_id, row_id, external_status="success", external_uri=placed.uri, external_sha256=placed.sha256,
            external_verified_at=placed.verified_at, external_error=None)


def mark_failed(conn_id: str, row_id: int, reason: str) -> None:
    _update(conn_id, row_id, external_status="failed", external_error=reason)


def mark_deleted(conn_id: str, row_id: int) -> None:
    _update(conn_id, row_id, external_status="deleted", external_deleted_at=dt.datetime.now(dt.UTC))


def row_of(conn_id: str, target: str, run_id: str) -> dict[str, Any] | None:
    """The backup's row: its id, status, artifact and external_* columns."""
    names = ["id", "status", "artifact_path", "sha256", "external_status", "external_uri", "external_error"]
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(names)} FROM {TABLE} WHERE target = %s AND run_id = %s", (target, run_id))
        found = cur.fetchone()
    return dict(zip(names, found, strict=True)) if found else None


# --- the task ----------------------------------------------------------------------------------


def copia_externa(target: dict[str, Any], settings: dict[str, Any], external: dict[str, Any],
                  **context: Any) -> dict[str, Any]:
    """Copy the run's registered artifact and its sidecar to the external medium; verify; record."""
    from airflow.sdk.exceptions import AirflowSkipException

    target_id = target["id"]
    row = row_of(settings["register_conn_id"], target_id, context["run_id"])
    if row is None or row["status"] != "success" or not row["artifact_path"]:
        raise AirflowSkipException(f"«{target_id}» no tiene en esta ejecución una copia exitosa registrada que "
                                   "llevar al medio externo")
    artifact, sha256 = Path(row["artifact_path"]), row["sha256"]
    if not artifact.is_file():
        raise ExternalError(f"La copia local {artifact} ya no está: no hay qué llevar al medio externo.")
    destination = destination_for(external)
    relative = relative_of(artifact, settings["root"])
    uri = destination.uri_of(relative)
    mark_pending(settings["register_conn_id"], row["id"], uri)
    log.info("Copiando %s a %s (%s)", artifact.name, destination.describe(), uri)
    started = dt.datetime.now(dt.UTC)
    placed = destination.put(artifact, relative, sha256)
    seconds = max((dt.datetime.now(dt.UTC) - started).total_seconds(), 1e-6)
    mark_success(settings["register_conn_id"], row["id"], placed)
    log.info("Copia externa verificada (SHA-256 %s en el destino) en %.1f s (%.1f MB/s): %s", placed.sha256,
             seconds, placed.bytes / seconds / 1e6, placed.uri)
    deleted = external_retention(target_id, settings, external, destination, context["run_id"])
    return {"external_uri": placed.uri, "external_sha256": placed.sha256,
            "external_verified_at": placed.verified_at.isoformat(), "externas_borradas": deleted}


class ExternalFailureCallback:
    """``on_failure_callback`` of ``copia_externa``: ``failed`` on the row, one email; never raises.

    :param target: the target's inventory entry, as JSON-friendly values.
    :param settings: the settings every step gets.
    :param where: the destination in words, for the email.
    """

    def __init__(self, target: dict[str, Any], settings: dict[str, Any], where: str):
        self.target = target
        self.settings = settings
        self.where = where

    def __call__(self, context: dict[str, Any]) -> None:
        try:
            from respaldo.fallas import reason_of

            ti = context["ti"]
            reason = reason_of(context.get("exception"),
                               timeout=getattr(context.get("task"), "execution_timeout", None))
            handle_failure(self.target, self.settings, self.where, context["run_id"], reason,
                           getattr(ti, "try_number", None))
        except Exception:
            log.exception("No se pudo atender la falla de la copia externa de %s", self.target.get("id"))


def handle_failure(target: dict[str, Any], settings: dict[str, Any], where: str, run_id: str, reason: str,
                   try_number: int | None) -> None:
    """Record ``failed`` with ``reason`` on the backup's row (its status stays success) and send the alert."""
    from respaldo import avisos, fallas
    from respaldo.errors import RegisterError
    from respaldo.register.notificacion import Alert

    target_id = target["id"]
    conn_id = settings["register_conn_id"]
    row, record_error = None, None
    try:
        row = row_of(conn_id, target_id, run_id)
        if row is not None:
            mark_failed(conn_id, row["id"], reason)
    except RegisterError as err:
        record_error = str(err)
    esc = html.escape
    url = fallas.log_url(settings["dag_id"], run_id, f"{target_id}.{STEP}", try_number)
    if row is None:
        missing = record_error or "no se encontró la fila de la copia"
        register_text = f"<b>NO quedó anotada</b> en el registro FT-GTI-004: {esc(missing)}."
    else:
        status = "exitosa" if row["status"] == "success" else row["status"]
        register_text = (f"quedó anotada en la fila {row['id']} de <code>respaldo.control_backup</code> como copia "
                         "externa <b>fallida</b> (external_status = failed); la copia misma sigue registrada como "
                         f"<b>{esc(status)}</b>.")
    local = row["artifact_path"] if row else None
    body = "\n".join([
        f"<p>La copia del respaldo de <b>{esc(target_id)}</b> al medio externo, {esc(where)}, falló.</p>",
        f"<p><b>Motivo:</b> {esc(reason)}</p>",
        f"<p><b>Registro:</b> {register_text}</p>",
        "<p><b>La copia local no se tocó</b>" + (f": <code>{esc(local)}</code> sigue completa, con su suma "
                                                  "<code>.sha256</code>." if local else ".") + "</p>",
        f"<p>Ejecución {esc(run_id)} de {esc(settings['dag_id'])}. Log de la tarea: <a href=\"{esc(url)}\">"
        f"{esc(url)}</a></p>",
        f"<p>Corrija la causa y vuelva a ejecutar la tarea «{esc(target_id)}.{STEP}» (<i>Clear</i>).</p>",
    ])
    alert = Alert(key=f"externa:{target_id}:{run_id}:{try_number or 0}", kind="copia_externa",
                  recipients=list(settings["alert_emails"]),
                  subject=f"[respaldo] Falló la copia externa de «{target_id}» ({settings['dag_id']})",
                  body=body, target=target_id, run_id=run_id)
    avisos.deliver(alert, avisos.Channel.of(settings))


# --- external retention ---------------------------------------------------------------------------


def external_retention(target_id: str, settings: dict[str, Any], external: dict[str, Any],
                       destination: Destination, run_id: str) -> list[int]:
    """After a verified external copy: the medium's own ``retention`` over the target's verified external copies.

    Planned by the same planner as the local retention (:func:`respaldo.ciclo.retencion.plan`), over the rows
    whose external copy is ``success``. A copy that could not be deleted does not undo the verified copy of
    this run: it is logged and mailed (and planned again next time). Returns the rows whose external copy
    was deleted.
    """
    policy = external.get("retention")
    if not policy:
        return []
    from respaldo.ciclo import retencion
    from respaldo.ciclo.politica import Retention

    conn_id = settings["register_conn_id"]
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, backup_at, external_uri FROM {TABLE} WHERE target = %s AND status = 'success' "
                    "AND external_status = 'success' AND external_uri IS NOT NULL", (target_id,))
        copies = [retencion.Copia(row_id, backup_at, "success", uri) for row_id, backup_at, uri in cur.fetchall()]
    decisions = retencion.plan(copies, Retention.model_validate(policy), zone=settings["timezone"])
    outcome = apply_external_retention(conn_id, destination, [
        (d.copia.id, "delete" if d.action == retencion.DELETE else "keep", d.reason) for d in decisions])
    failed = [(row_id, why) for row_id, what, why in outcome if what == "failed"]
    if failed:
        _alert_retention(target_id, settings, destination.describe(), run_id, failed)
    return [row_id for row_id, what, _ in outcome if what == "deleted"]


def _alert_retention(target_id: str, settings: dict[str, Any], where: str, run_id: str,
                     failed: list[tuple[int, str]]) -> None:
    from respaldo import avisos
    from respaldo.register.notificacion import Alert

    esc = html.escape
    items = "".join(f"<li>fila {row_id}: {esc(why)}</li>" for row_id, why in failed)
    body = (f"<p>La copia externa de <b>{esc(target_id)}</b> de esta ejecución quedó verificada en {esc(where)}, "
            f"pero la retención del medio externo <b>no pudo borrar</b> {len(failed)} copia(s) externa(s) "
            f"antiguas:</p><ul>{items}</ul><p>Siguen en el medio externo y en el registro como copias externas "
            "exitosas; se intentará de nuevo después de la próxima copia externa. Revise el espacio y los permisos "
            f"del medio externo.</p><p>Ejecución {esc(run_id)} de {esc(settings['dag_id'])}.</p>")
    avisos.deliver(Alert(key=f"retencion_externa:{target_id}:{run_id}", kind="copia_externa",
                         recipients=list(settings["alert_emails"]),
                         subject=f"[respaldo] La retención del medio externo no pudo borrar copias de «{target_id}»",
                         body=body, target=target_id, run_id=run_id), avisos.Channel.of(settings))


def apply_external_retention(conn_id: str, destination: Destination, plan: list[tuple[int, str, str]]
                             ) -> list[tuple[int, str, str]]:
    """Delete at the destination the external copies ``plan`` marks ``delete``; record each deletion.

    ``plan`` is the retention planner's verdict per register row: (row id, ``keep`` or ``delete``, reason).
    Only rows whose external copy is ``success`` are deleted; a row is marked ``deleted`` with
    ``external_deleted_at`` only after its copy is gone. Returns, per row planned for deletion, (row id,
    what happened: ``deleted``, ``skipped`` or ``failed``, why). Never deletes a local artifact or a row.
    """
    outcome: list[tuple[int, str, str]] = []
    doomed = [(row_id, reason) for row_id, verdict, reason in plan if verdict == "delete"]
    if not doomed:
        return outcome
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, external_status, external_uri FROM {TABLE} WHERE id = ANY(%s)",
                    ([row_id for row_id, _ in doomed],))
        rows = {row_id: (status, uri) for row_id, status, uri in cur.fetchall()}
    for row_id, reason in doomed:
        status, uri = rows.get(row_id, (None, None))
        if status != "success" or not uri:
            outcome.append((row_id, "skipped", f"sin copia externa verificada (estado {status or 'ninguno'})"))
            continue
        try:
            destination.delete(uri)
            mark_deleted(conn_id, row_id)
        except ExternalError as err:
            log.error("Retención externa: no se pudo borrar %s (fila %s): %s", uri, row_id, err)
            outcome.append((row_id, "failed", str(err)))
            continue
        log.info("Retención externa: borrada %s (fila %s): %s", uri, row_id, reason)
        outcome.append((row_id, "deleted", reason))
    return outcome
