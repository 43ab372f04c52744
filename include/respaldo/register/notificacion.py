"""``respaldo.notificacion``: every alert respaldo sends, whether the mail server took it or not.

An alert has a ``key`` naming the event it tells (``fallo:<target>:<run_id>:<try>``...), so the same
event is never mailed twice even when two processes report it (Airflow runs the failure callback of
a task whose worker died more than once). Sending is claimed first: the claim inserts the row as
``sending``, or takes over one that ``failed`` (or stayed ``sending`` longer than a send can take);
a process that cannot claim leaves the alert to whoever holds it. A failed send stays ``failed``
with its error until a later attempt (the run's closing task, the follow-up) sends it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from respaldo.register.esquema import NOTIFICATIONS, connect

#: A claim older than this is taken over: the process that held it died while sending.
STALE_CLAIM = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Alert:
    """One alert: what it is about, who gets it and its text."""

    key: str
    kind: str
    recipients: list[str]
    subject: str
    body: str
    target: str | None = None
    run_id: str | None = None


def claim(conn_id: str, alert: Alert) -> bool:
    """Take the right to send ``alert``; False when it was sent already or another process is sending it."""
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {NOTIFICATIONS} (key, kind, target, run_id, recipients, subject, body, status) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, 'sending') "
            f"ON CONFLICT (key) DO UPDATE SET status = 'sending', subject = EXCLUDED.subject, "
            "body = EXCLUDED.body, recipients = EXCLUDED.recipients "
            f"WHERE {NOTIFICATIONS}.status = 'failed' OR ({NOTIFICATIONS}.status = 'sending' AND "
            f"coalesce({NOTIFICATIONS}.last_attempt_at, {NOTIFICATIONS}.created_at) < now() - %s) RETURNING id",
            (alert.key, alert.kind, alert.target, alert.run_id, alert.recipients, alert.subject, alert.body,
             STALE_CLAIM),
        )
        claimed = cur.fetchone() is not None
        conn.commit()
    return claimed


def settle(conn_id: str, key: str, attempts: int, error: str | None) -> None:
    """Record the outcome of ``attempts`` tries to send the claimed alert ``key``."""
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(
            f"UPDATE {NOTIFICATIONS} SET attempts = attempts + %s, last_attempt_at = now(), last_error = %s, "
            "status = %s, sent_at = CASE WHEN %s THEN now() ELSE sent_at END WHERE key = %s",
            (attempts, error, "failed" if error else "sent", error is None, key),
        )
        conn.commit()


def unsent(conn_id: str, *, run_id: str | None = None) -> list[Alert]:
    """Alerts not sent yet (failed, or claimed by a process that died), oldest first."""
    clause = "AND run_id = %s" if run_id else ""
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT key, kind, recipients, subject, body, target, run_id FROM {NOTIFICATIONS} "
            f"WHERE (status = 'failed' OR (status = 'sending' AND coalesce(last_attempt_at, created_at) "
            f"< now() - %s)) {clause} ORDER BY id",
            (STALE_CLAIM, run_id) if run_id else (STALE_CLAIM,),
        )
        return [Alert(*found) for found in cur.fetchall()]


def of(conn_id: str, key: str) -> dict[str, Any] | None:
    """The alert ``key`` as recorded (status, attempts, last error...), or None."""
    names = ["key", "kind", "target", "run_id", "recipients", "subject", "body", "status", "attempts", "last_error",
             "created_at", "last_attempt_at", "sent_at"]
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(names)} FROM {NOTIFICATIONS} WHERE key = %s", (key,))
        found = cur.fetchone()
    return dict(zip(names, found, strict=True)) if found else None
