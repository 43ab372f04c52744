"""The rows of form FT-GTI-004 (step 6): ``respaldo.control_backup``.

One row per (target, run): a retry or a rerun updates its row instead of adding another. A failure is
a row too, with the reason in ``error``; a failed rerun never erases the record of a copy that
already succeeded in that run (its artifact is still on disk and still restores).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, fields
from typing import Any

from respaldo.register.esquema import TABLE, connect


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
    #: What the copy holds, recorded when it was taken, for the restore drills (rows per table, files...).
    figures: dict | None = None


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

#: The Spanish label of every column of ``respaldo.control_backup`` that people read (CSV header,
#: pages). A column added by a later migration and missing here is shown under its own name.
LABELS: dict[str, str] = {
    "id": "Registro",
    **dict(SHEET_COLUMNS),
    "dag_id": "DAG",
    "run_type": "Tipo de ejecución",
    "started_at": "Inicio",
    "finished_at": "Fin",
    "step": "Paso",
    "compression": "Compresión",
    "try_number": "Intento",
    "original_sha256": "SHA-256 del archivo entregado",
    "updated_at": "Actualizado",
    "superseded_by": "Cubierto por el registro",
    "verified_at": "Verificado",
    "verify_status": "Verificación",
    "verify_error": "Error de verificación",
    "figures": "Cifras al tomar la copia",
    "external_uri": "Copia externa",
    "external_sha256": "SHA-256 de la copia externa",
    "external_verified_at": "Copia externa verificada",
    "external_status": "Estado de la copia externa",
    "external_error": "Error de la copia externa",
    "external_deleted_at": "Copia externa borrada",
    "deleted_at": "Borrada por la retención",
    "deletion_reason": "Motivo del borrado",
}

#: The words people read for the values the database keeps in English. The database keeps the raw
#: values (``success``...); every output for people (text, CSV, pages, the XLSX and PDF sheet) shows these.
WORDS: dict[str, dict[str, str]] = {
    "status": {"success": "exitoso", "failed": "fallido", "missing": "faltante"},
    "mechanism": {"automatic": "automático", "manual": "manual"},
    "verify_status": {"intact": "íntegro", "damaged": "dañado"},
    "run_type": {"scheduled": "programada", "manual": "manual", "backfill": "backfill"},
    "external_status": {"pending": "pendiente", "success": "exitosa", "failed": "fallida", "deleted": "borrada"},
}
STATUS_WORDS = WORDS["status"]


def word(column: str, value: Any) -> Any:
    """The Spanish word for ``value`` of ``column`` when it has one, else ``value`` unchanged."""
    return WORDS.get(column, {}).get(value, value)


@dataclass(frozen=True)
class Recorded:
    """What :func:`record` left in the register: the row's id and the status it now holds.

    ``status`` differs from the row written when a failed rerun met the success of an earlier try of
    the same run, which is kept.
    """

    id: int
    status: str


def record(conn_id: str, row: Row) -> Recorded:
    """Insert or update the row of (target, run_id); return the row's id and the status it holds."""
    from psycopg.types.json import Jsonb

    values = asdict(row)
    values["finished_at"] = values["finished_at"] or dt.datetime.now(dt.UTC)
    if values["figures"] is not None:
        values["figures"] = Jsonb(values["figures"])
    columns = list(values)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in ("target", "run_id"))
    sql = (
        f"INSERT INTO {TABLE} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT (target, run_id) DO UPDATE SET {updates}, updated_at = now() "
        # A failed rerun must not erase the record of a copy that already succeeded in this run.
        f"WHERE {TABLE}.status = 'failed' OR EXCLUDED.status = 'success' RETURNING id, status"
    )
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(sql, [values[c] for c in columns])
        written = cur.fetchone()
        if written is None:  # the update was refused: the row keeps its earlier success
            cur.execute(f"SELECT id, status FROM {TABLE} WHERE target = %s AND run_id = %s",
                        (row.target, row.run_id))
            written = cur.fetchone()
        conn.commit()
    return Recorded(*written)


#: ``deleted_at`` and ``deletion_reason`` are retention's (:mod:`respaldo.ciclo.retencion`), never written by a copy.
COLUMNS = ["id", *(f.name for f in fields(Row)), "updated_at", "deleted_at", "deletion_reason"]


def get(conn_id: str, target: str, run_id: str) -> dict[str, Any] | None:
    """The row of (target, run_id), or None."""
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE target = %s AND run_id = %s", (target, run_id))
        found = cur.fetchone()
    return dict(zip(COLUMNS, found, strict=True)) if found else None


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
    sql = (f"SELECT {', '.join(COLUMNS)} FROM {TABLE} {where} "
           f"ORDER BY coalesce(backup_at, finished_at) DESC, id DESC")
    if limit:
        sql += f" LIMIT {int(limit)}"
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return [dict(zip(COLUMNS, found, strict=True)) for found in cur.fetchall()]


def previous_success(conn_id: str, target: str, run_id: str) -> dict[str, Any] | None:
    """The latest successful copy of ``target`` from another run, or None."""
    names = ["run_id", "backup_at", "original_name", "original_date", "original_sha256", "sha256"]
    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT {', '.join(names)} FROM {TABLE} WHERE target = %s AND status = 'success' "
            "AND run_id <> %s ORDER BY backup_at DESC NULLS LAST, id DESC LIMIT 1",
            (target, run_id),
        )
        found = cur.fetchone()
    return dict(zip(names, found, strict=True)) if found else None
