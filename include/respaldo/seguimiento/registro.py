"""What the follow-up reads from and writes to the FT-GTI-004 register, set-based.

Every statement covers all targets at once (arrays in, rows out) and uses the register's indexes, so
a check over 500 targets is a handful of round trips whatever the history's length. The caller holds
one connection (:func:`respaldo.register.connect`) for the whole check.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from respaldo.register.esquema import DRILLS, FOLLOWUP_AIRFLOW, FOLLOWUP_CLASSES, FOLLOWUP_STATES, TABLE
from respaldo.seguimiento.estados import (
    SIZE_HISTORY,
    Copia,
    Estado,
    Faltante,
    Hechos,
    Intento,
    SimulacroFallido,
    local,
)
from respaldo.seguimiento.turnos import Clase

#: Serialises the writing part of concurrent checks (the DAG's and the timer's).
_LOCK_KEY = 0x7365677569  # "segui"
MISSING_PREFIX = "faltante__"


def lock(conn) -> None:
    """Hold the follow-up's lock until the current transaction ends."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))


def first_rows(conn, targets: list[str]) -> dict[str, dt.datetime]:
    """When each target's first attempt was recorded (targets without any are left out)."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT t.target, (SELECT min(c.finished_at) FROM {TABLE} c WHERE c.target = t.target "
            "AND c.status <> 'missing') FROM unnest(%s::text[]) AS t(target)", (targets,))
        return {target: when for target, when in cur.fetchall() if when is not None}


def settled(conn, clase: Clase) -> dt.datetime | None:
    """Up to when the class's slots already have their rows, for its current schedule."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT schedule, settled_until FROM {FOLLOWUP_CLASSES} WHERE frequency = %s", (clase.name,))
        found = cur.fetchone()
    return found[1] if found and found[0] == clase.schedule_key else None


def settle(conn, clase: Clase, until: dt.datetime) -> None:
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {FOLLOWUP_CLASSES} (frequency, schedule, settled_until) VALUES (%s, %s, %s) "
            "ON CONFLICT (frequency) DO UPDATE SET schedule = EXCLUDED.schedule, "
            "settled_until = EXCLUDED.settled_until, updated_at = now()", (clase.name, clase.schedule_key, until))


@dataclass(frozen=True)
class Objetivo:
    """What a missing row needs to know about its target."""

    id: str
    kind: str
    mechanism: str
    responsible: str
    start: dt.datetime


def write_missing(conn, clase: Clase, targets: list[Objetivo], slots: list[dt.datetime],
                  zone: zoneinfo.ZoneInfo) -> list[tuple[int, str, dt.datetime]]:
    """A ``missing`` row for every (target, slot) with no successful copy; (id, target, slot) of the new ones.

    A slot before a target's start is never expected of it; a slot that already has its missing row
    keeps it (unique on target and run id).
    """
    if not targets or not slots:
        return []
    grace = int(clase.grace.total_seconds() // 60)
    isos = [slot.isoformat() for slot in slots]
    errors = [
        f"No hay copia exitosa del turno del {local(slot, zone)} ({zone.key}) de «{clase.dag_id}». Falta desde el "
        f"{local(slot + clase.grace, zone)}, cuando venció el plazo de {grace} min después del turno."
        for slot in slots
    ]
    sql = f"""
        INSERT INTO {TABLE} (target, kind, frequency, mechanism, dag_id, run_id, logical_date, status,
                             responsible, error, finished_at)
        SELECT t.target, t.kind, %(frequency)s, t.mechanism, %(dag_id)s, %(prefix)s || s.iso, s.slot, 'missing',
               t.responsible,
               s.error || coalesce((SELECT ' Su ejecución falló: fila ' || f.id || ' (' || f.run_id || ').'
                                    FROM {TABLE} f WHERE f.target = t.target AND f.logical_date = s.slot
                                    AND f.status = 'failed' ORDER BY f.id DESC LIMIT 1), ''),
               now()
        FROM unnest(%(targets)s::text[], %(kinds)s::text[], %(mechanisms)s::text[], %(responsibles)s::text[],
                    %(starts)s::timestamptz[]) AS t(target, kind, mechanism, responsible, start)
        CROSS JOIN unnest(%(slots)s::timestamptz[], %(isos)s::text[], %(errors)s::text[]) AS s(slot, iso, error)
        WHERE s.slot >= t.start
          AND NOT EXISTS (SELECT 1 FROM {TABLE} c WHERE c.target = t.target AND c.logical_date = s.slot
                          AND c.status = 'success')
        ON CONFLICT (target, run_id) DO NOTHING
        RETURNING id, target, logical_date
    """
    params = {"frequency": clase.name, "dag_id": clase.dag_id, "prefix": MISSING_PREFIX,
              "targets": [t.id for t in targets], "kinds": [t.kind for t in targets],
              "mechanisms": [t.mechanism for t in targets], "responsibles": [t.responsible for t in targets],
              "starts": [t.start for t in targets], "slots": slots, "isos": isos, "errors": errors}
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def supersede(conn) -> list[tuple[int, str, dt.datetime, int]]:
    """Point every open missing row whose slot now has a success at it; (missing id, target, slot, success id)."""
    with conn.cursor() as cur:
        cur.execute(
            f"UPDATE {TABLE} m SET superseded_by = s.id, updated_at = now() "
            f"FROM (SELECT DISTINCT ON (c.target, c.logical_date) c.id, c.target, c.logical_date FROM {TABLE} c "
            f"      JOIN {TABLE} o ON o.target = c.target AND o.logical_date = c.logical_date "
            "       AND o.status = 'missing' AND o.superseded_by IS NULL "
            "      WHERE c.status = 'success' ORDER BY c.target, c.logical_date, c.finished_at DESC) s "
            "WHERE m.status = 'missing' AND m.superseded_by IS NULL AND m.target = s.target "
            "AND m.logical_date = s.logical_date RETURNING m.id, m.target, m.logical_date, s.id")
        return list(cur.fetchall())


def facts(conn, targets: dict[str, str], first_seen: dict[str, dt.datetime], window_start: dt.datetime,
          now: dt.datetime) -> dict[str, Hechos]:
    """The facts of every target (id -> class) that its state is computed from."""
    ids = sorted(targets)
    attempts: dict[str, Intento] = {}
    goods: dict[str, list[Copia]] = defaultdict(list)
    missing: dict[str, list[Faltante]] = defaultdict(list)
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT t.target, a.id, a.status, a.finished_at, a.run_id, a.step, a.error "
            f"FROM unnest(%s::text[]) AS t(target) JOIN LATERAL (SELECT id, status, finished_at, run_id, step, error "
            f"FROM {TABLE} c WHERE c.target = t.target AND c.status <> 'missing' "
            "ORDER BY c.finished_at DESC, c.id DESC LIMIT 1) a ON true", (ids,))
        for target, *row in cur.fetchall():
            attempts[target] = Intento(*row)
        cur.execute(
            f"SELECT t.target, g.id, g.backup_at, g.size, g.verify_status, g.verify_error, g.verified_at "
            f"FROM unnest(%s::text[]) AS t(target) JOIN LATERAL (SELECT id, backup_at, "
            "coalesce(original_bytes, compressed_bytes) AS size, verify_status, verify_error, verified_at "
            f"FROM {TABLE} c WHERE c.target = t.target AND c.status = 'success' AND c.backup_at IS NOT NULL "
            f"ORDER BY c.backup_at DESC, c.id DESC LIMIT {SIZE_HISTORY + 1}) g ON true "
            "ORDER BY t.target, g.backup_at DESC, g.id DESC", (ids,))
        for target, *row in cur.fetchall():
            goods[target].append(Copia(*row))
        cur.execute(
            f"SELECT target, id, logical_date FROM {TABLE} WHERE status = 'missing' AND superseded_by IS NULL "
            "AND target = ANY(%s) AND logical_date >= %s AND logical_date <= %s ORDER BY target, logical_date",
            (ids, window_start, now))
        for target, row_id, slot in cur.fetchall():
            missing[target].append(Faltante(row_id, slot))
        # The latest drill with a verdict: a failed one keeps the target suspicious until one is approved.
        cur.execute(f"SELECT DISTINCT ON (target) target, verdict, coalesce(finished_at, started_at), error "
                    f"FROM {DRILLS} WHERE target = ANY(%s) AND verdict IS NOT NULL "
                    "ORDER BY target, started_at DESC, id DESC", (ids,))
        drills = {target: SimulacroFallido(at, error or "sin motivo registrado")
                  for target, verdict, at, error in cur.fetchall() if verdict == "fallido"}
    found = {}
    for target in ids:
        copies = goods.get(target, [])
        found[target] = Hechos(
            target=target, frequency=targets[target], first_seen=first_seen[target],
            newest_attempt=attempts.get(target), newest_good=copies[0] if copies else None,
            earlier_sizes=tuple(c.size for c in copies[1:] if c.size is not None),
            open_missing=tuple(missing.get(target, ())), failed_drill=drills.get(target))
    return found


def known_states(conn, targets: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The last state recorded for each target (state, since, first_seen)."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT target, state, others, since, first_seen FROM {FOLLOWUP_STATES} "
                    "WHERE target = ANY(%s)", (list(targets),))
        return {row[0]: {"state": row[1], "others": row[2], "since": row[3], "first_seen": row[4]}
                for row in cur.fetchall()}


def record_states(conn, states: list[Estado], first_seen: dict[str, dt.datetime],
                  known: dict[str, dict[str, Any]]) -> list[tuple[Estado, str | None]]:
    """Store each target's state; return the targets whose state changed, with the state they had.

    A target seen for the first time counts as a change only when it is not up to date.
    """
    changed = []
    with conn.cursor() as cur:
        for state in states:
            before = known.get(state.target)
            detail = "; ".join(f.detalle for f in state.hallazgos) or None
            if before is None:
                cur.execute(
                    f"INSERT INTO {FOLLOWUP_STATES} (target, state, others, since, detail, first_seen) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (target) DO NOTHING",
                    (state.target, state.estado, list(state.otros), state.desde, detail, first_seen[state.target]))
                if state.estado != "al_dia":
                    changed.append((state, None))
            elif before["state"] != state.estado:
                cur.execute(
                    f"UPDATE {FOLLOWUP_STATES} SET state = %s, others = %s, since = %s, detail = %s, "
                    "changed_at = now(), checked_at = now() WHERE target = %s",
                    (state.estado, list(state.otros), state.desde, detail, state.target))
                changed.append((state, before["state"]))
            else:
                cur.execute(f"UPDATE {FOLLOWUP_STATES} SET others = %s, detail = %s, checked_at = now() "
                            "WHERE target = %s", (list(state.otros), detail, state.target))
    return changed


def record_airflow_problems(conn, problems: dict[str, str], api_answered: bool) -> dict[str, str]:
    """Store Airflow's current problems (key -> text); return the ones not known before.

    Problems that are gone are forgotten, so they are told again if they come back. When the API did
    not answer, what it would have said is unknown: the problems seen before are kept as they were.
    """
    with conn.cursor() as cur:
        cur.execute(f"SELECT key FROM {FOLLOWUP_AIRFLOW}")
        before = {row[0] for row in cur.fetchall()}
        if api_answered:
            cur.execute(f"DELETE FROM {FOLLOWUP_AIRFLOW} WHERE NOT (key = ANY(%s))", (list(problems),))
        for key, text in problems.items():
            cur.execute(f"INSERT INTO {FOLLOWUP_AIRFLOW} (key, text) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                        "SET text = EXCLUDED.text, seen_at = now()", (key, text))
    return {key: text for key, text in problems.items() if key not in before}


def rows_of(conn, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The rows of (target, run_id) pairs that exist: status and try."""
    if not pairs:
        return {}
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT c.target, c.run_id, c.status, c.try_number FROM {TABLE} c "
            "JOIN unnest(%s::text[], %s::text[]) AS p(target, run_id) ON c.target = p.target AND c.run_id = p.run_id",
            ([p[0] for p in pairs], [p[1] for p in pairs]))
        return {(t, r): {"status": s, "try_number": n} for t, r, s, n in cur.fetchall()}
