"""``respaldo.simulacro`` (one row per drill) and what the drills read of ``respaldo.control_backup``.

A drill's row is written when it starts (``verdict`` NULL) and completed when it ends, so a drill
whose process was killed still has a row: the next run settles it ``fallido`` (interrupted).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from respaldo.register import COLUMNS, DRILLS, TABLE, connect

DRILL_COLUMNS = ["id", "target", "kind", "control_id", "dag_id", "run_id", "try_number", "server", "scratch",
                 "started_at", "finished_at", "verdict", "figures", "error", "scratch_dropped_at"]


def _json(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value) if value is not None else None


def start(conn_id: str, *, target: str, kind: str, control_id: int | None, dag_id: str | None, run_id: str | None,
          try_number: int | None, server: str | None, scratch: str | None) -> int:
    """A drill begins: its row, verdict still unknown; return its id."""
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO {DRILLS} (target, kind, control_id, dag_id, run_id, try_number, server, scratch) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (target, kind, control_id, dag_id, run_id, try_number, server, scratch))
        drill_id = cur.fetchone()[0]
        conn.commit()
    return drill_id


def finish(conn_id: str, drill_id: int, *, verdict: str, finished_at: dt.datetime | None, figures: dict | None,
           error: str | None, scratch_dropped: bool) -> None:
    """A drill ends: its verdict, the restore's end, the figures compared, why it failed, the scratch dropped."""
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"UPDATE {DRILLS} SET verdict = %s, finished_at = coalesce(%s, finished_at, now()), "
                    "figures = %s, error = %s, scratch_dropped_at = CASE WHEN %s THEN now() END, updated_at = now() "
                    "WHERE id = %s", (verdict, finished_at, _json(figures), error, scratch_dropped, drill_id))
        conn.commit()


def get(conn_id: str, drill_id: int) -> dict[str, Any] | None:
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(DRILL_COLUMNS)} FROM {DRILLS} WHERE id = %s", (drill_id,))
        found = cur.fetchone()
    return dict(zip(DRILL_COLUMNS, found, strict=True)) if found else None


def unsettled(conn_id: str, *, run_id: str | None = None, other_than: str | None = None) -> list[dict[str, Any]]:
    """Drills without a verdict: of one run, or of every run but one (the one running now)."""
    clauses, params = ["verdict IS NULL"], []
    if run_id is not None:
        clauses.append("run_id = %s")
        params.append(run_id)
    if other_than is not None:
        clauses.append("run_id IS DISTINCT FROM %s")
        params.append(other_than)
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(DRILL_COLUMNS)} FROM {DRILLS} WHERE {' AND '.join(clauses)} ORDER BY id",
                    params)
        return [dict(zip(DRILL_COLUMNS, row, strict=True)) for row in cur.fetchall()]


def settle_interrupted(conn_id: str, drill_id: int, reason: str, scratch_dropped: bool) -> bool:
    """Give a drill that never reached its verdict the verdict ``fallido``; False if another process did first."""
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"UPDATE {DRILLS} SET verdict = 'fallido', error = %s, finished_at = coalesce(finished_at, now()), "
                    "scratch_dropped_at = CASE WHEN %s THEN now() END, updated_at = now() "
                    "WHERE id = %s AND verdict IS NULL", (reason, scratch_dropped, drill_id))
        settled = cur.rowcount == 1
        conn.commit()
    return settled


def newest_good(conn_id: str, targets: list[str]) -> dict[str, dict[str, Any]]:
    """Each target's newest good copy: a success with an artifact, not found damaged when re-verified, not
    deleted by retention."""
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT DISTINCT ON (target) {', '.join(COLUMNS)} FROM {TABLE} WHERE target = ANY(%s) "
            "AND status = 'success' AND artifact_path IS NOT NULL AND verify_status IS DISTINCT FROM 'damaged' "
            "AND deleted_at IS NULL "
            "ORDER BY target, backup_at DESC NULLS LAST, id DESC", (targets,))
        return {row[COLUMNS.index("target")]: dict(zip(COLUMNS, row, strict=True)) for row in cur.fetchall()}


def copy_row(conn_id: str, *, row_id: int | None = None, artifact_path: str | None = None) -> dict[str, Any] | None:
    """A register row by its id, or the success row of an artifact (by its path)."""
    clause, value = ("id = %s", row_id) if row_id is not None else ("artifact_path = %s AND status = 'success'",
                                                                     artifact_path)
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE {clause} ORDER BY id DESC LIMIT 1", (value,))
        found = cur.fetchone()
    return dict(zip(COLUMNS, found, strict=True)) if found else None


def last_drills(conn_id: str, targets: list[str]) -> dict[str, dict[str, Any]]:
    """Each target's latest drill with a verdict (id, verdict, started_at, control_id...)."""
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT DISTINCT ON (target) {', '.join(DRILL_COLUMNS)} FROM {DRILLS} WHERE target = ANY(%s) "
                    "AND verdict IS NOT NULL ORDER BY target, started_at DESC, id DESC", (targets,))
        return {row[1]: dict(zip(DRILL_COLUMNS, row, strict=True)) for row in cur.fetchall()}


def last_approved(conn_id: str) -> dict[str, dict[str, Any]]:
    """Each target's latest approved drill: when it ended, and which copy it restored (id and date)."""
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT DISTINCT ON (s.target) s.target, s.id, s.finished_at, s.control_id, c.backup_at "
                    f"FROM {DRILLS} s LEFT JOIN {TABLE} c ON c.id = s.control_id WHERE s.verdict = 'aprobado' "
                    "ORDER BY s.target, s.finished_at DESC, s.id DESC")
        return {target: {"id": drill_id, "finished_at": finished, "control_id": control, "backup_at": backup_at}
                for target, drill_id, finished, control, backup_at in cur.fetchall()}
