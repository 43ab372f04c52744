"""The backup control register, form FT-GTI-004 (step 6), kept in PostgreSQL.

One row per (target, run): a retry or a rerun updates its row instead of adding another. A failure is
a row too, with the reason in ``error``; a failed rerun never erases the record of a copy that
already succeeded in that run (its artifact is still on disk and still restores).

The schema is created and evolved by numbered migrations, applied once each under an advisory lock
so concurrent tasks do not race.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, fields
from typing import Any

from respaldo.errors import RegisterError

SCHEMA = "respaldo"
TABLE = f"{SCHEMA}.control_backup"
_LOCK_KEY = 0x7265737061  # "respa": serialises migrations across workers

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "control_backup: the FT-GTI-004 register",
        f"""
        CREATE TABLE IF NOT EXISTS {TABLE} (
            id               bigserial PRIMARY KEY,
            target           text        NOT NULL,
            kind             text        NOT NULL,
            frequency        text        NOT NULL,
            mechanism        text        NOT NULL,
            dag_id           text        NOT NULL,
            run_id           text        NOT NULL,
            run_type         text,
            logical_date     timestamptz,
            backup_at        timestamptz,
            started_at       timestamptz,
            finished_at      timestamptz NOT NULL DEFAULT now(),
            status           text        NOT NULL CHECK (status IN ('success', 'failed')),
            step             text,
            artifact_path    text,
            original_bytes   bigint,
            compressed_bytes bigint,
            sha256           text,
            compression      text,
            responsible      text,
            notes            text,
            error            text,
            try_number       integer,
            updated_at       timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT control_backup_target_run UNIQUE (target, run_id)
        );
        CREATE INDEX IF NOT EXISTS control_backup_target_backup_at ON {TABLE} (target, backup_at DESC);
        COMMENT ON TABLE {TABLE} IS 'Formato de control de backup FT-GTI-004';
        """,
    ),
    (
        2,
        "manual copies: the delivered file's own name, date and checksum",
        f"""
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS original_name text;
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS original_date timestamptz;
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS original_sha256 text;
        """,
    ),
]


@dataclass
class Row:
    """One FT-GTI-004 row. ``None`` means unknown (for example no artifact when the copy failed)."""

    target: str
    kind: str
    frequency: str
    mechanism: str
    dag_id: str
    run_id: str
    status: str
    run_type: str | None = None
    logical_date: dt.datetime | None = None
    backup_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    step: str | None = None
    artifact_path: str | None = None
    original_bytes: int | None = None
    compressed_bytes: int | None = None
    sha256: str | None = None
    compression: str | None = None
    responsible: str | None = None
    notes: str | None = None
    error: str | None = None
    try_number: int | None = None
    original_name: str | None = None
    original_date: dt.datetime | None = None
    original_sha256: str | None = None


#: Labels of the printed FT-GTI-004 sheet, in the office's words.
SHEET_COLUMNS: list[tuple[str, str]] = [
    ("backup_at", "Fecha de creación"),
    ("target", "Objetivo"),
    ("kind", "Tipo"),
    ("frequency", "Frecuencia"),
    ("mechanism", "Mecanismo"),
    ("status", "Estado"),
    ("artifact_path", "Archivo"),
    ("original_bytes", "Tamaño original"),
    ("compressed_bytes", "Tamaño comprimido"),
    ("sha256", "SHA-256"),
    ("responsible", "Responsable"),
    ("original_name", "Archivo entregado"),
    ("original_date", "Fecha del archivo entregado"),
    ("notes", "Observaciones"),
    ("error", "Error"),
    ("logical_date", "Fecha programada"),
    ("run_id", "Ejecución"),
]


def _connect(conn_id: str):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    try:
        return PostgresHook(postgres_conn_id=conn_id).get_conn()
    except Exception as err:  # the driver's message names host and user, never the password
        raise RegisterError(
            f"No se pudo abrir el registro FT-GTI-004 (conexión «{conn_id}»): {str(err).strip()}"
        ) from err


def migrate(conn) -> int:
    """Create or evolve the register's schema; return the schema version now in force."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations ("
            " version integer PRIMARY KEY, description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_migrations")
        current = cur.fetchone()[0]
        for version, description, sql in MIGRATIONS:
            if version > current:
                cur.execute(sql)
                cur.execute(
                    f"INSERT INTO {SCHEMA}.schema_migrations (version, description) VALUES (%s, %s)",
                    (version, description),
                )
                current = version
    conn.commit()
    return current


def record(conn_id: str, row: Row) -> None:
    """Insert or update the row of (target, run_id)."""
    values = asdict(row)
    values["finished_at"] = values["finished_at"] or dt.datetime.now(dt.UTC)
    columns = list(values)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in ("target", "run_id"))
    sql = (
        f"INSERT INTO {TABLE} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT (target, run_id) DO UPDATE SET {updates}, updated_at = now() "
        # A failed rerun must not erase the record of a copy that already succeeded in this run.
        f"WHERE {TABLE}.status = 'failed' OR EXCLUDED.status = 'success'"
    )
    conn = _connect(conn_id)
    try:
        migrate(conn)
        with conn.cursor() as cur:
            cur.execute(sql, [values[c] for c in columns])
        conn.commit()
    except RegisterError:
        raise
    except Exception as err:
        raise RegisterError(f"No se pudo escribir el registro FT-GTI-004 (conexión «{conn_id}»): "
                            f"{str(err).strip()}") from err
    finally:
        conn.close()


def fetch(conn_id: str, *, target: str | None = None, since: dt.datetime | None = None,
          until: dt.datetime | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of the register, newest first, as dicts keyed by column name."""
    clauses, params = [], []
    if target:
        clauses.append("target = %s")
        params.append(target)
    if since:
        clauses.append("coalesce(backup_at, finished_at) >= %s")
        params.append(since)
    if until:
        clauses.append("coalesce(backup_at, finished_at) < %s")
        params.append(until)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    names = ["id", *(f.name for f in fields(Row)), "updated_at"]
    sql = (f"SELECT {', '.join(names)} FROM {TABLE} {where} "
           f"ORDER BY coalesce(backup_at, finished_at) DESC, id DESC")
    if limit:
        sql += f" LIMIT {int(limit)}"
    conn = _connect(conn_id)
    try:
        migrate(conn)
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return [dict(zip(names, record_, strict=True)) for record_ in cur.fetchall()]
    finally:
        conn.close()


def previous_success(conn_id: str, target: str, run_id: str) -> dict[str, Any] | None:
    """The latest successful copy of ``target`` from another run, or None."""
    names = ["run_id", "backup_at", "original_name", "original_date", "original_sha256", "sha256"]
    conn = _connect(conn_id)
    try:
        migrate(conn)
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT {', '.join(names)} FROM {TABLE} WHERE target = %s AND status = 'success' "
                "AND run_id <> %s ORDER BY backup_at DESC NULLS LAST, id DESC LIMIT 1",
                (target, run_id),
            )
            found = cur.fetchone()
        return dict(zip(names, found, strict=True)) if found else None
    finally:
        conn.close()
