"""Re-reading stored artifacts: a copy that verified the night it was made can rot on disk since.

``respaldo verificar`` and the follow-up's daily share both read artifacts to their last byte with
:func:`respaldo.integridad.verify_artifact` (the ``.sha256`` and the register's sum, every zstd frame,
the format's own tool) and record the outcome on the copy's row: ``verified_at``, ``verify_status``
(``intact``/``damaged``) and ``verify_error``. A damaged copy makes its target ``sospechoso`` when
it is the newest good one (see :mod:`.estados`) and is mailed once.

The follow-up re-reads a share of the kept copies each run, the longest unread first, sized so that
every copy is re-read at least every ``followup.verify_every_days`` days.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import math
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from respaldo import avisos
from respaldo.inventory import Inventory
from respaldo.register import TABLE, connect
from respaldo.register.notificacion import Alert

log = logging.getLogger("respaldo")

STATUS_WORD = {"intact": "íntegro", "damaged": "dañado"}
_FIELDS = ["id", "target", "mechanism", "artifact_path", "sha256", "original_bytes", "backup_at", "verified_at"]
#: A kept copy: a success whose artifact is on record and that retention has not deleted.
_KEPT = "status = 'success' AND artifact_path IS NOT NULL AND deleted_at IS NULL"


@dataclass(frozen=True)
class Lectura:
    """One artifact re-read: which row, and what was found."""

    row_id: int
    target: str
    path: str
    backup_at: dt.datetime | None
    status: str
    reason: str | None
    seconds: float
    #: What was checked when it was less than everything (an encrypted copy read without its key).
    checked: str | None = None

    @property
    def intact(self) -> bool:
        return self.status == "intact"

    def line(self, zone: zoneinfo.ZoneInfo) -> str:
        when = self.backup_at.astimezone(zone).strftime("%Y-%m-%d %H:%M") if self.backup_at else "sin fecha"
        text = f"{STATUS_WORD[self.status]:<8} {self.target}  {when}  {self.path}"
        if self.checked:
            text += f"\n         comprobado: {self.checked}"
        return text if self.intact else f"{text}\n         {self.reason}"


def _rows(conn, where: str, params: Iterable[Any], order: str, limit: int | None) -> list[dict[str, Any]]:
    sql = f"SELECT {', '.join(_FIELDS)} FROM {TABLE} WHERE {_KEPT} {where} ORDER BY {order}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with conn.cursor() as cur:
        cur.execute(sql, list(params))
        return [dict(zip(_FIELDS, found, strict=True)) for found in cur.fetchall()]


def chosen(conn, targets: list[str], *, everything: bool) -> list[dict[str, Any]]:
    """The rows ``respaldo verificar`` reads: each target's newest good copy, or every kept copy."""
    if everything:
        return _rows(conn, "AND target = ANY(%s)", [targets], "target, backup_at DESC NULLS LAST, id DESC", None)
    return _rows(conn, "AND id IN (SELECT DISTINCT ON (target) id FROM " + TABLE + " WHERE " + _KEPT +
                 " AND target = ANY(%s) ORDER BY target, backup_at DESC NULLS LAST, id DESC)", [targets],
                 "target", None)


def due(conn, targets: list[str], now: dt.datetime, every: dt.timedelta, share: int) -> list[dict[str, Any]]:
    """The follow-up's share: copies never re-read or re-read longest ago, up to ``share`` of them."""
    return _rows(conn, "AND target = ANY(%s) AND (verified_at IS NULL OR verified_at < %s)", [targets, now - every],
                 "verified_at NULLS FIRST, backup_at DESC NULLS LAST, id", share)


def share_size(kept: int, every_days: int, runs_per_day: float) -> int:
    """How many copies each follow-up run re-reads so that all ``kept`` are re-read within ``every_days``."""
    return max(1, math.ceil(kept / max(every_days * runs_per_day, 1)))


def read(rows: list[dict[str, Any]], conn_id: str, identity: list[str] | None = None) -> list[Lectura]:
    """Re-read each row's artifact to its end and record the outcome on its row.

    An encrypted artifact (``.zst.age``) is decrypted and read whole with ``identity`` (private key
    files); without its key, its sums and its age structure are what is checked, and the line says so.
    """
    from respaldo.integridad import verify_artifact

    found = []
    for row in rows:
        path = Path(row["artifact_path"])
        what = None
        if not path.exists():
            status, reason, seconds = "damaged", f"el respaldo {path} ya no está en el disco", 0.0
        else:
            # A delivered manual copy is whatever file a person left: only zstd and the sums apply to it.
            checked = verify_artifact(path, expected_sha256=row["sha256"], original_bytes=row["original_bytes"],
                                      check_format=row["mechanism"] != "manual", identity=identity)
            status = "intact" if checked.intact else "damaged"
            reason, seconds, what = checked.reason, checked.seconds, checked.checked
        with connect(conn_id) as conn, conn.cursor() as cur:
            cur.execute(f"UPDATE {TABLE} SET verified_at = now(), verify_status = %s, verify_error = %s "
                        "WHERE id = %s AND deleted_at IS NULL RETURNING id", (status, reason, row["id"]))
            recorded = cur.fetchone()
            conn.commit()
        if recorded is None:  # retention deleted it while it was being read: it is gone on purpose, not damaged
            log.info("Relectura de %s (fila %s): la retención la borró mientras se releía", path, row["id"])
            continue
        lectura = Lectura(row["id"], row["target"], str(path), row["backup_at"], status, reason, seconds, what)
        (log.info if lectura.intact else log.error)("Relectura de %s (fila %s): %s%s", path, row["id"],
                                                    STATUS_WORD[status], f": {reason}" if reason else "")
        found.append(lectura)
    return found


def damaged_alerts(lecturas: list[Lectura], inventory: Inventory) -> list[Alert]:
    """One email per damaged copy (each row is mailed once, however often it is re-read)."""
    zone = zoneinfo.ZoneInfo(inventory.timezone)
    alerts = []
    for lectura in lecturas:
        if lectura.intact:
            continue
        when = lectura.backup_at.astimezone(zone).strftime("%Y-%m-%d %H:%M") if lectura.backup_at else "sin fecha"
        body = "\n".join([
            f"<p>El respaldo de <b>{html.escape(lectura.target)}</b> del {when} ({html.escape(inventory.timezone)}) "
            "está <b>dañado</b>: al releerlo completo no resultó igual a como se guardó.</p>",
            f"<p><b>Motivo:</b> {html.escape(lectura.reason or '')}</p>",
            f"<p>Archivo: <code>{html.escape(lectura.path)}</code> (fila {lectura.row_id} de "
            "<code>respaldo.control_backup</code>).</p>",
            "<p>No lo use para restaurar. Revise el disco donde están los respaldos (errores de lectura, espacio, "
            "quién más escribe ahí) y asegúrese de que haya una copia más reciente íntegra: "
            "<code>respaldo verificar --objetivo " + html.escape(lectura.target) + "</code>.</p>",
        ])
        alerts.append(Alert(key=f"danado:{lectura.row_id}", kind="danado", recipients=list(inventory.alerts.email),
                            subject=f"[respaldo] Respaldo dañado de «{lectura.target}» del {when}", body=body,
                            target=lectura.target))
    return alerts


def mail_damaged(lecturas: list[Lectura], inventory: Inventory) -> list[str]:
    """Send the damaged copies' alerts; return what became of each."""
    channel = avisos.Channel(inventory.alerts.smtp_conn_id, list(inventory.alerts.email), inventory.alerts.from_email,
                             inventory.register.conn_id)
    return [f"«{alert.subject}»: {avisos.deliver(alert, channel).describe()}"
            for alert in damaged_alerts(lecturas, inventory)]


def runs_per_day(schedule: str) -> float:
    """How often a cron expression fires per day, on average over a week."""
    from croniter import croniter

    start = dt.datetime(2026, 1, 5)
    fires = croniter(schedule, start - dt.timedelta(seconds=1))
    count = 0
    while fires.get_next(dt.datetime) < start + dt.timedelta(days=7):
        count += 1
    return count / 7


def share(inventory: Inventory, now: dt.datetime | None = None) -> list[Lectura]:
    """The follow-up's re-reading for this run: the share of kept copies most overdue, read and recorded."""
    now = now or dt.datetime.now(dt.UTC)
    targets = [t.id for t in inventory.targets]
    every = dt.timedelta(days=inventory.followup.verify_every_days)
    with connect(inventory.register.conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {TABLE} WHERE {_KEPT} AND target = ANY(%s)", (targets,))
        kept = cur.fetchone()[0]
        size = share_size(kept, inventory.followup.verify_every_days, runs_per_day(inventory.followup.schedule))
        rows = due(conn, targets, now, every, size)
    log.info("Relectura del seguimiento: %d de %d copias guardadas en esta pasada (todas cada %d días)", len(rows),
             kept, inventory.followup.verify_every_days)
    return read(rows, inventory.register.conn_id)
