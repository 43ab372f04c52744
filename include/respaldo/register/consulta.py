"""Reading the register the way people look at it: the pages, the monthly sheet, the CSV.

Every query orders and filters by the row's date (:data:`~respaldo.register.esquema.ROW_DATE`), which
migration 5 indexes (alone and after ``target``), so the first page of years of history, a month,
or one target's copies cost an index range scan, not a sort of the whole table. Pages go by keyset
(:class:`Cursor`): the next page starts after the last row shown, however deep.

Functions take an open connection (``with register.connect(conn_id) as conn``), so a page runs its
queries on one connection.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from respaldo.register.esquema import ROW_DATE, SCHEMA, TABLE

#: What a row of the pages shows (the page never needs ``original_sha256`` or the verification text).
PAGE_COLUMNS = ["id", "target", "kind", "frequency", "mechanism", "dag_id", "run_id", "run_type", "logical_date",
                "backup_at", "finished_at", "status", "step", "artifact_path", "original_bytes", "compressed_bytes",
                "sha256", "responsible", "notes", "error", "try_number", "original_name", "superseded_by",
                "verify_status", "deleted_at", "deletion_reason"]


class CursorError(ValueError):
    """A page cursor that was not made by :meth:`Cursor.token` (edited or truncated by hand)."""


@dataclass(frozen=True)
class Cursor:
    """A place in the register's order: a row's date and id. The page before or after it starts there."""

    date: dt.datetime
    id: int

    def token(self) -> str:
        return f"{self.date.astimezone(dt.UTC).strftime('%Y%m%dT%H%M%S.%fZ')}_{self.id}"

    @classmethod
    def parse(cls, token: str) -> Cursor:
        try:
            stamp, row_id = token.split("_")
            date = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=dt.UTC)
            return cls(date, int(row_id))
        except ValueError as err:
            raise CursorError(token) from err

    @classmethod
    def of(cls, row: dict[str, Any]) -> Cursor:
        return cls(row["row_date"], row["id"])


@dataclass(frozen=True)
class Filter:
    """Which rows: every field left empty means no condition on it.

    :param since: rows dated at or after this instant.
    :param until: rows dated before this instant (exclusive).
    :param dag_ids: only rows of these DAGs (what the Airflow user may read); None means all.
    :param superseded: also the ``missing`` rows a later copy of their slot covered. The pages and the
        sheet leave them out (the slot has its copy); the CSV export keeps every row.
    """

    target: str | None = None
    frequency: str | None = None
    status: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    dag_ids: frozenset[str] | None = None
    superseded: bool = False

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for column in ("target", "frequency", "status"):
            if getattr(self, column) is not None:
                clauses.append(f"{column} = %s")
                params.append(getattr(self, column))
        if self.since is not None:
            clauses.append(f"{ROW_DATE} >= %s")
            params.append(self.since)
        if self.until is not None:
            clauses.append(f"{ROW_DATE} < %s")
            params.append(self.until)
        if self.dag_ids is not None:
            clauses.append("dag_id = ANY(%s)")
            params.append(sorted(self.dag_ids))
        if not self.superseded:
            clauses.append("superseded_by IS NULL")
        return " AND ".join(clauses) or "true", params


@dataclass
class Page:
    """One page of rows, newest first, and the cursors of the pages around it (None at either end)."""

    rows: list[dict[str, Any]]
    newer: Cursor | None = None
    older: Cursor | None = None
    size: int = 50
    first: bool = field(default=True)


def _dicts(cur) -> list[dict[str, Any]]:
    names = [column.name for column in cur.description]
    return [dict(zip(names, found, strict=True)) for found in cur.fetchall()]


def page(conn, where: Filter, *, older_than: Cursor | None = None, newer_than: Cursor | None = None,
         size: int = 50) -> Page:
    """The ``size`` newest rows matching ``where``, or those just older / just newer than a cursor."""
    sql_where, params = where.where()
    columns = ", ".join(PAGE_COLUMNS)
    if newer_than is not None:
        # Walk the index upwards from the cursor, then show the rows newest first like every page.
        sql = (f"SELECT {columns}, {ROW_DATE} AS row_date FROM {TABLE} WHERE {sql_where} "
               f"AND ({ROW_DATE}, id) > (%s, %s) ORDER BY {ROW_DATE} ASC, id ASC LIMIT %s")
        params += [newer_than.date, newer_than.id, size + 1]
    else:
        cursor_clause = f"AND ({ROW_DATE}, id) < (%s, %s)" if older_than is not None else ""
        sql = (f"SELECT {columns}, {ROW_DATE} AS row_date FROM {TABLE} WHERE {sql_where} {cursor_clause} "
               f"ORDER BY {ROW_DATE} DESC, id DESC LIMIT %s")
        params += [older_than.date, older_than.id, size + 1] if older_than is not None else [size + 1]
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = _dicts(cur)
    more = len(rows) > size
    rows = rows[:size]
    if newer_than is not None:
        rows.reverse()
        # Coming back up, there is always an older page (the one we came from); a newer one if more.
        return Page(rows, newer=Cursor.of(rows[0]) if more and rows else None,
                    older=Cursor.of(rows[-1]) if rows else None, size=size, first=not more)
    return Page(rows, newer=Cursor.of(rows[0]) if older_than is not None and rows else None,
                older=Cursor.of(rows[-1]) if more else None, size=size, first=older_than is None)


def rows_between(conn, where: Filter, *, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Every row matching ``where``, oldest first (the printed sheet's order)."""
    sql_where, params = where.where()
    wanted = ", ".join(columns or PAGE_COLUMNS)
    with conn.cursor() as cur:
        cur.execute(f"SELECT {wanted}, {ROW_DATE} AS row_date FROM {TABLE} WHERE {sql_where} "
                    f"ORDER BY {ROW_DATE} ASC, id ASC", params)
        return _dicts(cur)


@contextlib.contextmanager
def every_column(conn, where: Filter, *, newest_first: bool = True,
                 limit: int | None = None) -> Generator[tuple[list[str], Iterator[tuple]], None, None]:
    """Every column of every matching row (the CSV export): ``(column names, rows as tuples)``.

    ``SELECT *``: a column a later migration adds is exported without touching this code. The rows come
    through a server-side cursor, a thousand at a time, so years of history never sit in memory at once.
    """
    sql_where, params = where.where()
    order = "DESC" if newest_first else "ASC"
    sql = f"SELECT * FROM {TABLE} WHERE {sql_where} ORDER BY {ROW_DATE} {order}, id {order}"
    if limit:
        sql += " LIMIT %s"
        params.append(int(limit))
    with conn.cursor(name="respaldo_every_column") as cur:
        cur.itersize = 1000
        cur.execute(sql, params)
        yield [column.name for column in cur.description], iter(cur)


def targets(conn) -> list[str]:
    """Every target with at least one row, also those no longer in the inventory, by name.

    A loose index scan over (target, backup_at): one index probe per target, not a scan of every row.
    """
    with conn.cursor() as cur:
        cur.execute(f"""
            WITH RECURSIVE names AS (
                (SELECT target FROM {TABLE} ORDER BY target LIMIT 1)
                UNION ALL
                SELECT (SELECT target FROM {TABLE} WHERE target > names.target ORDER BY target LIMIT 1)
                FROM names WHERE names.target IS NOT NULL
            )
            SELECT target FROM names WHERE target IS NOT NULL""")
        return [name for (name,) in cur.fetchall()]


def table_exists(conn, name: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.{name}",))
        return cur.fetchone()[0]


#: The drills table (``respaldo.simulacro``) is another capability's; the sheet reads it only when it
#: exists and has these columns: a row per drill, its target, its verdict and when it ended.
DRILL_COLUMNS = {"target", "verdict", "finished_at"}


def last_approved_drills(conn, until: dt.datetime | None = None) -> dict[str, dt.datetime]:
    """Each target's latest approved drill (``verdict = 'aprobado'``) ended before ``until``; {} without drills."""
    with conn.cursor() as cur:
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                    "AND table_name = 'simulacro'", (SCHEMA,))
        if not DRILL_COLUMNS <= {name for (name,) in cur.fetchall()}:
            return {}
        clause = "AND finished_at < %s" if until is not None else ""
        cur.execute(f"SELECT target, max(finished_at) FROM {SCHEMA}.simulacro WHERE verdict = 'aprobado' "
                    f"AND finished_at IS NOT NULL {clause} GROUP BY target", [until] if until is not None else [])
        return dict(cur.fetchall())
