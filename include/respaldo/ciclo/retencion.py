"""Retention: which copies of a target are kept, which are deleted, and why (``respaldo retencion``).

:func:`plan` is pure: given a target's copies (its register rows that still have an artifact), its
``retention`` block, the copies a drill protects and whether it has an external destination, it says
for every copy ``conservar``, ``borrar`` or ``no_cuenta``, with the reason in Spanish. It never looks
at the clock: the rules count periods that have a copy, so an outage ages nothing out.

- Only good copies count: ``success`` rows whose artifact is on disk, not deleted, not found damaged
  by the re-reading (``verify_status``). Failed and missing rows, damaged copies and copies whose file
  is gone neither count nor protect anything, and retention never touches them.
- Rules, in order (``keep_last``, ``keep_daily``, ``keep_weekly``, ``keep_monthly``, ``keep_yearly``),
  each only over the good copies older than every copy the rules before it kept: the newest copy of each
  period that has one, for N such periods (days, ISO weeks, months, years in the inventory's timezone).
- Never deleted, whatever the rules say: the newest good copy, enough newest good copies to keep
  ``min_keep``, the copy of the latest approved drill (and of a drill still running), a copy whose external
  copy is not verified yet when the target has an external destination.

:func:`aplicar` deletes what the plan says under a per-target lock, from the register as it is then: the
artifact and its ``.sha256``, then ``deleted_at`` and ``deletion_reason`` on the row (never deleting a
row). A file that cannot be removed leaves its row saying so, and ``deleted_at`` empty.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import os
import zoneinfo
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from respaldo.ciclo.politica import RULES, Retention

log = logging.getLogger("respaldo")

KEEP, DELETE, IGNORED = "conservar", "borrar", "no_cuenta"
#: A row whose file an earlier retention removed without getting to record it: recorded when applied.
FINISH = "completar"
#: What ``aplicar`` did to a copy planned ``borrar``.
DELETED, FAILED = "borrada", "error"
WORDS = {KEEP: "conservar", DELETE: "borrar", IGNORED: "no cuenta", FINISH: "completar", DELETED: "borrada",
         FAILED: "NO SE BORRÓ"}
#: How ``deletion_reason`` starts while retention is deleting a copy, and after.
INTENT = "Retención:"
#: ``deletion_reason`` of a row whose file retention could not remove (``deleted_at`` stays empty).
NOT_DELETED = "No se pudo borrar"
#: Advisory lock namespace (with the target's hash): one retention of a target at a time.
_LOCK_KEY = 0x72657465  # "rete"


class Copia(NamedTuple):
    """A register row that still has an artifact: what retention needs to know of it (a tuple: tens of thousands
    are made per run)."""

    id: int
    backup_at: dt.datetime | None
    status: str
    artifact_path: str
    on_disk: bool = True
    verify_status: str | None = None
    external_status: str | None = None
    deletion_reason: str | None = None


class Decision(NamedTuple):
    """What retention does with one copy, and why (Spanish, for people and for ``deletion_reason``)."""

    copia: Copia
    action: str
    reason: str


@dataclass(frozen=True)
class Objetivo:
    """A target as retention sees it: its id, its effective ``retention`` (None: delete nothing), where the
    block comes from, and whether it has an external destination."""

    id: str
    policy: Retention | None
    source: str | None = None
    external: bool = False


def objetivo_de(target: Any, class_policy: Retention | None, external: bool) -> Objetivo:
    """The target's effective retention: its own block if it has one, else its frequency class's.

    ``external``: whether the target's copies also go to an external medium (its own ``external`` or its
    class's); then a copy whose external copy is not verified is never deleted.
    """
    own = getattr(target, "retention", None)
    policy, source = (own, "objetivo") if own is not None else (class_policy, "clase" if class_policy else None)
    return Objetivo(target.id, policy, source, external)


# --- the planner (pure) -----------------------------------------------------------------------------


def not_counted(copia: Copia) -> str | None:
    """Why a copy does not count for retention (and is never touched by it), or None for a good copy."""
    untouched = "no cuenta y la retención no la toca"
    if copia.status != "success":
        status = {"failed": "fallida", "missing": "faltante"}.get(copia.status, copia.status)
        return f"la fila es {status}, no una copia exitosa: {untouched}"
    if copia.backup_at is None:
        return f"no tiene fecha de creación: {untouched}"
    if not copia.on_disk:
        return f"el archivo ya no está en el disco: {untouched}"
    if copia.verify_status == "damaged":
        return f"la relectura la encontró dañada: {untouched} (revísela y bórrela a mano)"
    return None


def _period(rule: str, when: dt.datetime) -> tuple[int, ...]:
    if rule == "keep_daily":
        return (when.year, when.month, when.day)
    if rule == "keep_weekly":
        year, week, _ = when.isocalendar()
        return (year, week)
    if rule == "keep_monthly":
        return (when.year, when.month)
    return (when.year,)


def _period_words(rule: str, period: tuple[int, ...]) -> str:
    if rule == "keep_daily":
        return "del día {:04d}-{:02d}-{:02d}".format(*period)
    if rule == "keep_weekly":
        return "de la semana {:04d}-S{:02d}".format(*period)
    if rule == "keep_monthly":
        return "del mes {:04d}-{:02d}".format(*period)
    return "del año {:04d}".format(*period)


def plan(copies: Iterable[Copia], policy: Retention | None, *, zone: zoneinfo.ZoneInfo | str = "America/Bogota",
         protected: dict[int, str] | None = None, external: bool = False) -> list[Decision]:
    """Keep or delete, and why, for every copy of one target; newest first.

    :param copies: the target's rows that still have an artifact (not deleted), any order.
    :param policy: the target's effective ``retention``; None deletes nothing.
    :param zone: the inventory's timezone: days, weeks, months and years are counted there.
    :param protected: copies (row ids) a drill protects, with the reason.
    :param external: the target has an external destination: a copy whose external copy is not
        verified (``external_status`` other than ``success``) is kept.
    """
    zone = zoneinfo.ZoneInfo(zone) if isinstance(zone, str) else zone
    protected = protected or {}
    copies = sorted(copies, key=lambda c: (c.backup_at or dt.datetime.min.replace(tzinfo=dt.UTC), c.id),
                    reverse=True)
    ignored = {c.id: why for c in copies if (why := not_counted(c)) is not None}
    unfinished = {c.id for c in copies if c.id in ignored and c.status == "success" and not c.on_disk
                  and (c.deletion_reason or "").startswith(INTENT)}
    goods = [c for c in copies if c.id not in ignored]
    reasons: dict[int, list[str]] = {c.id: [] for c in goods}
    if goods:
        reasons[goods[0].id].append("la copia buena más reciente")
    if policy is None:
        for copia in goods:
            reasons[copia.id].append("sin `retention` en el inventario: no se borra nada")
    elif policy.keep_all:
        for copia in goods:
            reasons[copia.id].append("keep_all: se conservan todas")
    else:
        _apply_rules(goods, policy, zone, reasons)
        kept = sum(1 for c in goods if reasons[c.id])
        for copia in goods:
            if kept >= policy.min_keep:
                break
            if not reasons[copia.id]:
                reasons[copia.id].append(f"min_keep: nunca quedan menos de {policy.min_keep} copias buenas")
                kept += 1
    for copia in goods:
        if copia.id in protected:
            reasons[copia.id].append(protected[copia.id])
        # ``deleted``: it was verified, then the medium's own retention removed it; it protects nothing.
        if external and copia.external_status not in ("success", "deleted"):
            state = {None: "sin copia externa", "pending": "pendiente", "failed": "fallida",
                     "deleted": "borrada"}.get(copia.external_status, copia.external_status)
            reasons[copia.id].append(f"su copia en el medio externo aún no está verificada ({state})")
    rules = policy.describe() if policy is not None else ""
    kept_total = sum(1 for c in goods if reasons[c.id])
    decisions = []
    for copia in copies:
        if copia.id in unfinished:
            decisions.append(Decision(copia, FINISH, "una retención anterior la borró del disco y se detuvo antes de "
                                                     "anotarlo; se anota como borrada"))
        elif copia.id in ignored:
            decisions.append(Decision(copia, IGNORED, ignored[copia.id]))
        elif reasons[copia.id]:
            decisions.append(Decision(copia, KEEP, "; ".join(reasons[copia.id])))
        else:
            decisions.append(Decision(copia, DELETE, f"ninguna regla de retención la conserva ({rules}); quedan "
                                                      f"{kept_total} copias buenas"))
    # Two rows may name one file: a copy repeated within the same second with the same bytes is published
    # once. Deleting it for one row would delete the other's copy too.
    kept_paths = {d.copia.artifact_path: d.copia.id for d in decisions if d.action == KEEP}
    return [Decision(d.copia, KEEP, f"su archivo es el mismo de la fila {kept_paths[d.copia.artifact_path]}, "
                                    "que se conserva")
            if d.action == DELETE and d.copia.artifact_path in kept_paths else d for d in decisions]


def _apply_rules(goods: list[Copia], policy: Retention, zone: zoneinfo.ZoneInfo,
                 reasons: dict[int, list[str]]) -> None:
    """The keep_* rules in order, each over the good copies older than every copy kept before it.

    ``goods`` is newest first, so "older than every copy kept so far" is the tail after the oldest one kept.
    """
    start = 0
    for rule, _period_name in RULES:
        count = getattr(policy, rule)
        if count is None:
            continue
        chosen: list[int] = []
        if rule == "keep_last":
            chosen = list(range(start, min(start + count, len(goods))))
            for index in chosen:
                reasons[goods[index].id].append(f"keep_last: una de las {count} más recientes")
        else:
            seen: set[tuple[int, ...]] = set()
            for index in range(start, len(goods)):
                copia = goods[index]
                period = _period(rule, copia.backup_at.astimezone(zone))
                if period not in seen:
                    seen.add(period)
                    chosen.append(index)
                    reasons[copia.id].append(f"{rule}: la más reciente {_period_words(rule, period)} "
                                             f"({len(seen)} de {count})")
                    if len(seen) == count:
                        break
        if chosen:
            start = max(start, chosen[-1] + 1)


# --- the register and the disk --------------------------------------------------------------------

_FIELDS = ("id", "target", "backup_at", "status", "artifact_path", "verify_status", "external_status",
           "deletion_reason")


@dataclass
class PlanObjetivo:
    """One target's plan (and, once applied, what became of each deletion)."""

    objetivo: Objetivo
    decisions: list[Decision]
    already_deleted: int = 0
    problems: list[str] = field(default_factory=list)
    applied: bool = False

    def counts(self) -> Counter:
        return Counter(d.action for d in self.decisions)


def _load(cur, ids: list[str]) -> tuple[dict[str, list[Copia]], dict[str, int]]:
    """Every target's rows that still have an artifact, and how many of its copies retention already deleted."""
    from respaldo.register import TABLE

    cur.execute(f"SELECT {', '.join(_FIELDS)} FROM {TABLE} WHERE target = ANY(%s) AND artifact_path IS NOT NULL "
                "AND deleted_at IS NULL ORDER BY backup_at DESC NULLS LAST, id DESC", (ids,), binary=True)
    copies: dict[str, list[Copia]] = {target: [] for target in ids}
    present = _Present()
    for row_id, target, backup_at, status, path, verify_status, external_status, reason in cur.fetchall():
        on_disk = status == "success" and present(path)
        copies[target].append(Copia(row_id, backup_at, status, path, on_disk, verify_status, external_status, reason))
    cur.execute(f"SELECT target, count(*) FROM {TABLE} WHERE target = ANY(%s) AND deleted_at IS NOT NULL "
                "GROUP BY target", (ids,))
    return copies, dict(cur.fetchall())


class _Present:
    """Whether a file exists, from one listing of its folder (a month of a target's copies) instead of a stat per
    file: tens of thousands of copies sit in a few hundred folders."""

    def __init__(self) -> None:
        self.folders: dict[str, frozenset[str]] = {}

    def __call__(self, path: str) -> bool:
        folder, name = os.path.split(path)
        names = self.folders.get(folder)
        if names is None:
            try:
                with os.scandir(folder) as entries:
                    names = frozenset(e.name for e in entries if e.is_file())
            except OSError:
                names = frozenset()
            self.folders[folder] = names
        return name in names


def _protected(cur, ids: list[str]) -> dict[str, dict[int, str]]:
    """Per target, the copies drills protect: the latest approved drill's, and a running drill's."""
    from respaldo.register import DRILLS

    found: dict[str, dict[int, str]] = {target: {} for target in ids}
    cur.execute(f"SELECT DISTINCT ON (target) target, control_id, id FROM {DRILLS} WHERE target = ANY(%s) "
                "AND verdict = 'aprobado' AND control_id IS NOT NULL ORDER BY target, finished_at DESC NULLS LAST, "
                "id DESC", (ids,))
    for target, control_id, drill_id in cur.fetchall():
        found[target][control_id] = f"la restauró el último simulacro aprobado (simulacro {drill_id})"
    cur.execute(f"SELECT target, control_id, id FROM {DRILLS} WHERE target = ANY(%s) AND verdict IS NULL "
                "AND control_id IS NOT NULL", (ids,))
    for target, control_id, drill_id in cur.fetchall():
        found[target].setdefault(control_id, f"un simulacro la está restaurando (simulacro {drill_id})")
    return found


def _plans(cur, objetivos: list[Objetivo], zone: zoneinfo.ZoneInfo) -> list[PlanObjetivo]:
    ids = [o.id for o in objetivos]
    copies, deleted = _load(cur, ids)
    protected = _protected(cur, ids)
    return [PlanObjetivo(o, plan(copies[o.id], o.policy, zone=zone, protected=protected[o.id], external=o.external),
                         deleted.get(o.id, 0)) for o in objetivos]


def revisar(conn_id: str, objetivos: list[Objetivo], zone: zoneinfo.ZoneInfo | str) -> list[PlanObjetivo]:
    """The dry run: every target's plan, from the register as it is now. Nothing is touched."""
    from respaldo.register import connect

    zone = zoneinfo.ZoneInfo(zone) if isinstance(zone, str) else zone
    with connect(conn_id) as conn, conn.cursor() as cur:
        return _plans(cur, objetivos, zone)


def succeeded_in_run(conn_id: str, targets: list[str], run_id: str) -> set[str]:
    """The targets whose copy of this run is recorded ``success``: retention runs only after one."""
    from respaldo.register import TABLE, connect

    with connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT target FROM {TABLE} WHERE target = ANY(%s) AND run_id = %s AND status = 'success'",
                    (targets, run_id))
        return {target for (target,) in cur.fetchall()}


def aplicar(conn_id: str, objetivos: list[Objetivo], zone: zoneinfo.ZoneInfo | str) -> list[PlanObjetivo]:
    """Delete what each target's plan says, one target at a time under its lock; return what was done.

    Each target is planned again from the register once its lock is held, so two retentions (the DAG's
    and a person's ``--aplicar``) never work from a stale plan. Never raises for one copy: what could not
    be done is in the plan's ``problems`` (and on the copy's row when the file could not be removed).
    """
    from respaldo.register import TABLE, connect

    zone = zoneinfo.ZoneInfo(zone) if isinstance(zone, str) else zone
    done = []
    with connect(conn_id) as conn:
        for objetivo in objetivos:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_KEY, objetivo.id))
            conn.commit()
            try:
                with conn.cursor() as cur:
                    (found,) = _plans(cur, [objetivo], zone)
                conn.commit()
                found.decisions = [_carry_out(conn, TABLE, d) for d in found.decisions]
                found.problems = [f"fila {d.copia.id} ({d.copia.artifact_path}): {d.reason}"
                                  for d in found.decisions if d.action == FAILED]
                found.applied = True
            finally:  # best effort: a broken connection's session locks go with it
                with contextlib.suppress(Exception):
                    conn.rollback()
                    with conn.cursor() as cur:
                        cur.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_KEY, objetivo.id))
                    conn.commit()
            done.append(found)
    return done


def _carry_out(conn, table: str, decision: Decision) -> Decision:
    copia = decision.copia
    if decision.action == DELETE:
        return _delete(conn, table, decision)
    if decision.action == FINISH:  # an earlier retention removed the file and was stopped before saying so
        with conn.cursor() as cur:
            cur.execute(f"UPDATE {table} SET deleted_at = now(), updated_at = now() WHERE id = %s "
                        "AND deleted_at IS NULL", (copia.id,))
        conn.commit()
        return decision._replace(action=DELETED, reason=copia.deletion_reason or decision.reason)
    if decision.action == KEEP and (copia.deletion_reason or "").startswith(INTENT):
        # An earlier retention began deleting it and was stopped before the file went; today it is kept.
        with conn.cursor() as cur:
            cur.execute(f"UPDATE {table} SET deletion_reason = NULL, updated_at = now() WHERE id = %s "
                        "AND deleted_at IS NULL", (copia.id,))
        conn.commit()
    return decision


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _delete(conn, table: str, decision: Decision) -> Decision:
    """Remove one copy's artifact and ``.sha256`` and say so on its row; the row says the truth either way.

    The reason is written first (``deleted_at`` still empty), then the files go, then ``deleted_at``: a
    process killed in between leaves a row that names the deletion it was doing, never a deletion claimed
    and not done.
    """
    copia = decision.copia
    reason = f"{INTENT} {decision.reason}."
    with conn.cursor() as cur:
        cur.execute(f"UPDATE {table} SET deletion_reason = %s, updated_at = now() WHERE id = %s AND deleted_at IS NULL",
                    (reason, copia.id))
    conn.commit()
    artifact = copia.artifact_path
    sidecar = artifact + ".sha256"
    try:
        os.unlink(artifact)
    except FileNotFoundError:
        reason += " (el archivo ya no estaba en el disco)"
    except OSError as err:
        note = (f"{NOT_DELETED} el {_now_text()}: {err.strerror} ({artifact}); la copia sigue en el disco y "
                "la retención lo intentará de nuevo")
        with conn.cursor() as cur:
            cur.execute(f"UPDATE {table} SET deletion_reason = %s, updated_at = now() WHERE id = %s", (note, copia.id))
        conn.commit()
        log.error("Retención: no se pudo borrar %s (fila %s): %s", artifact, copia.id, err)
        return decision._replace(action=FAILED, reason=note)
    leftover = None
    try:
        os.unlink(sidecar)
    except FileNotFoundError:
        pass
    except OSError as err:
        leftover = f"quedó su archivo {os.path.basename(sidecar)}: {err.strerror}"
        reason += f" ({leftover}; bórrelo a mano)"
    with conn.cursor() as cur:
        cur.execute(f"UPDATE {table} SET deleted_at = now(), deletion_reason = %s, updated_at = now() WHERE id = %s",
                    (reason, copia.id))
    conn.commit()
    _remove_empty_dirs(os.path.dirname(artifact))
    log.info("Retención: borrada %s (fila %s): %s", artifact, copia.id, decision.reason)
    if leftover:
        return decision._replace(action=FAILED, reason=f"se borró la copia, pero {leftover}")
    return decision._replace(action=DELETED)


def _remove_empty_dirs(folder: str) -> None:
    """The month and year folders (``<target>/<YYYY>/<MM>``) a deletion emptied; never the target's folder."""
    for _ in range(2):
        try:
            os.rmdir(folder)
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.EBUSY, errno.EACCES, errno.EPERM):
                log.warning("Retención: no se pudo quitar la carpeta vacía %s: %s", folder, err)
            return
        folder = os.path.dirname(folder)


# --- what people read -------------------------------------------------------------------------------


def _when(value: dt.datetime | None, zone: zoneinfo.ZoneInfo) -> str:
    if value is None:
        return "sin fecha"
    value = value.astimezone(zone)  # formatted by hand: strftime is the slowest part of a 50,000-line report
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:{value.minute:02d}"


def text(plans: list[PlanObjetivo], zone: zoneinfo.ZoneInfo, *, applied: bool) -> str:
    """The report: per target its rule, then one line per copy, newest first; the totals last."""
    lines = []
    if applied:
        lines.append("Retención aplicada: se borraron las copias marcadas «borrada» (su fila queda en el registro).")
    else:
        lines.append("Retención (simulación: no se borra nada; con --aplicar se borran las marcadas «borrar»).")
    lines.append(f"Fechas en {zone.key}.")
    totals: Counter = Counter()
    for found in plans:
        objetivo = found.objetivo
        rule = (f"{objetivo.policy.describe()} (de {'su clase' if objetivo.source == 'clase' else 'el objetivo'})"
                if objetivo.policy else "sin `retention`: no se borra nada")
        external = "; con medio externo" if objetivo.external else ""
        lines += ["", f"{objetivo.id}: {rule}{external}"]
        if not found.decisions:
            lines.append("  (ninguna copia guardada)")
        for decision in found.decisions:
            copia = decision.copia
            lines.append(f"  {WORDS[decision.action]:<10} {_when(copia.backup_at, zone)}  fila {copia.id:<8} "
                         f"{copia.artifact_path}")
            lines.append(f"             {decision.reason}")
        if found.already_deleted:
            lines.append(f"  ({found.already_deleted} copia(s) ya borradas por la retención antes; sus filas siguen "
                         "en el registro)")
        totals.update(found.counts())
    order = [KEEP, DELETED, FAILED, IGNORED] if applied else [KEEP, DELETE, IGNORED, FINISH]
    lines += ["", "Total: " + ", ".join(f"{totals[action]} {WORDS[action]}" for action in order
                                        if totals[action] or action in (KEEP, DELETE, DELETED))]
    return "\n".join(lines)


def as_json(plans: list[PlanObjetivo], zone: zoneinfo.ZoneInfo, *, applied: bool) -> dict[str, Any]:
    def when(value: dt.datetime | None) -> str | None:
        return value.astimezone(zone).isoformat() if value else None

    totals: Counter = Counter()
    targets = []
    for found in plans:
        objetivo = found.objetivo
        totals.update(found.counts())
        targets.append({
            "objetivo": objetivo.id,
            "retention": objetivo.policy.model_dump(exclude_defaults=False) if objetivo.policy else None,
            "origen": objetivo.source,
            "medio_externo": objetivo.external,
            "ya_borradas": found.already_deleted,
            "copias": [{"fila": d.copia.id, "fecha": when(d.copia.backup_at), "archivo": d.copia.artifact_path,
                        "decision": d.action, "motivo": d.reason} for d in found.decisions],
            "problemas": found.problems,
        })
    return {"aplicada": applied, "zona": zone.key, "objetivos": targets, "total": dict(totals)}
