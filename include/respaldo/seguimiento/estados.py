"""A target's state from the facts the register holds: pure functions, no I/O.

The states, worst first (a target in several shows the worst and lists the others beside it):

- ``fallido``: the newest attempt (success or failure, by when it ended) failed;
- ``atrasado``: a slot of the last ``missed_window_days`` has no successful copy (its ``missing`` row
  is not superseded);
- ``vencido``: the newest good copy is older than the class's ``max_age`` (or there is none, and the
  target has been known for longer than that);
- ``sospechoso``: the newest good copy failed its verification (``verify_status = 'damaged'``), or
  is much smaller than the usual ones, or its latest restore drill failed;
- ``al_dia``: none of these.

Each finding carries the moment it began by the register's facts (the failed row's end, the missed
slot, the moment the copy outgrew ``max_age``...), so two checks that look at the same register agree
on it, and the alert about it has one key.
"""

from __future__ import annotations

import datetime as dt
import statistics
import zoneinfo
from dataclasses import dataclass, field

#: Worst first.
ESTADOS = ("fallido", "atrasado", "vencido", "sospechoso", "al_dia")
#: Good copies before the newest one whose median size is the yardstick.
SIZE_HISTORY = 10
#: Fewer earlier copies than this and no size is judged.
MIN_SIZE_HISTORY = 3


@dataclass(frozen=True)
class Intento:
    """The newest attempt: a ``success`` or ``failed`` row."""

    id: int
    status: str
    finished_at: dt.datetime
    run_id: str
    step: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Copia:
    """A good copy: a ``success`` row."""

    id: int
    backup_at: dt.datetime
    size: int | None = None
    verify_status: str | None = None
    verify_error: str | None = None
    verified_at: dt.datetime | None = None


@dataclass(frozen=True)
class Faltante:
    """A slot without a successful copy: an open ``missing`` row."""

    id: int
    slot: dt.datetime


@dataclass(frozen=True)
class SimulacroFallido:
    """The target's latest restore drill failed (filled in by the drills, ``respaldo.simulacro``)."""

    at: dt.datetime
    reason: str


@dataclass(frozen=True)
class Hechos:
    """What the register says about one target."""

    target: str
    frequency: str
    #: When respaldo first knew the target (its first row, or the first check that saw it).
    first_seen: dt.datetime
    newest_attempt: Intento | None = None
    newest_good: Copia | None = None
    #: Sizes of up to :data:`SIZE_HISTORY` good copies before the newest one.
    earlier_sizes: tuple[int, ...] = ()
    #: Open missing slots inside the window, oldest first.
    open_missing: tuple[Faltante, ...] = ()
    failed_drill: SimulacroFallido | None = None


@dataclass(frozen=True)
class Reglas:
    """The class's thresholds."""

    max_age: dt.timedelta
    size_drop_percent: float = 50.0
    missed_window: dt.timedelta = dt.timedelta(days=7)


@dataclass(frozen=True)
class Hallazgo:
    """One reason for a state, with the moment it began."""

    estado: str
    desde: dt.datetime
    detalle: str


@dataclass(frozen=True)
class Estado:
    """A target's state: the worst finding, the others beside it."""

    target: str
    frequency: str
    estado: str
    desde: dt.datetime | None
    otros: tuple[str, ...] = ()
    hallazgos: tuple[Hallazgo, ...] = ()
    newest_good: Copia | None = None
    open_missing: tuple[Faltante, ...] = field(default_factory=tuple)

    def edad(self, now: dt.datetime) -> dt.timedelta | None:
        """Age of the newest good copy."""
        return now - self.newest_good.backup_at if self.newest_good else None


def local(when: dt.datetime, zone: zoneinfo.ZoneInfo) -> str:
    return when.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def horas(delta: dt.timedelta) -> str:
    """A duration in words: «5 h», «3 días y 2 h»."""
    total = int(delta.total_seconds() // 3600)
    days, hours = divmod(total, 24)
    if days == 0:
        return f"{total} h" if total else f"{int(delta.total_seconds() // 60)} min"
    return f"{days} día{'s' if days != 1 else ''}" + (f" y {hours} h" if hours else "")


def bytes_text(size: float) -> str:
    """Bytes with Spanish thousands separators: «1.234.567 bytes»."""
    return f"{size:,.0f}".replace(",", ".") + " bytes"


def default_max_age(longest_gap: dt.timedelta, grace: dt.timedelta) -> dt.timedelta:
    """The class's longest gap between slots plus the grace (daily: 27 h; every 8 days: 195 h)."""
    return longest_gap + grace


def size_drop(size: int | None, earlier: tuple[int, ...], percent: float) -> float | None:
    """The median of the earlier copies, when ``size`` falls more than ``percent`` below it; else None."""
    known = [s for s in earlier[:SIZE_HISTORY] if s is not None]
    if size is None or len(known) < MIN_SIZE_HISTORY:
        return None
    median = statistics.median(known)
    return median if size < median * (1 - percent / 100) else None


def hallazgos(h: Hechos, reglas: Reglas, now: dt.datetime, zone: zoneinfo.ZoneInfo) -> list[Hallazgo]:
    """Every finding about the target, worst first; empty when it is up to date."""
    found: list[Hallazgo] = []
    attempt = h.newest_attempt
    if attempt is not None and attempt.status == "failed":
        step = f" en «{attempt.step}»" if attempt.step else ""
        found.append(Hallazgo("fallido", attempt.finished_at,
                              f"el intento más reciente falló{step} el {local(attempt.finished_at, zone)} (fila "
                              f"{attempt.id}, ejecución {attempt.run_id}): {attempt.error or 'sin motivo registrado'}"))
    if h.open_missing:
        slots = ", ".join(local(m.slot, zone) for m in h.open_missing[:5])
        more = f" y {len(h.open_missing) - 5} más" if len(h.open_missing) > 5 else ""
        count = len(h.open_missing)
        found.append(Hallazgo("atrasado", h.open_missing[0].slot,
                              f"{count} turno{'s' if count != 1 else ''} sin copia en los últimos "
                              f"{reglas.missed_window.days} días: {slots}{more}"))
    good = h.newest_good
    if good is not None:
        if now - good.backup_at > reglas.max_age:
            found.append(Hallazgo("vencido", good.backup_at + reglas.max_age,
                                  f"la copia buena más reciente es del {local(good.backup_at, zone)}, hace "
                                  f"{horas(now - good.backup_at)} (máximo {horas(reglas.max_age)})"))
    elif now - h.first_seen > reglas.max_age:
        found.append(Hallazgo("vencido", h.first_seen + reglas.max_age,
                              f"no tiene ninguna copia buena en el registro, y se conoce desde el "
                              f"{local(h.first_seen, zone)} (máximo {horas(reglas.max_age)} sin copia)"))
    if good is not None and good.verify_status == "damaged":
        found.append(Hallazgo("sospechoso", good.verified_at or good.backup_at,
                              f"la copia del {local(good.backup_at, zone)} (fila {good.id}) no pasó la verificación: "
                              f"{good.verify_error or 'dañada'}"))
    if good is not None:
        median = size_drop(good.size, h.earlier_sizes, reglas.size_drop_percent)
        if median is not None:
            found.append(Hallazgo("sospechoso", good.backup_at,
                                  f"la copia del {local(good.backup_at, zone)} (fila {good.id}) mide "
                                  f"{bytes_text(good.size)}, más de {reglas.size_drop_percent:g} % por debajo de la "
                                  f"mediana de las {min(len(h.earlier_sizes), SIZE_HISTORY)} anteriores "
                                  f"({bytes_text(median)}): ¿base vaciada o equivocada?"))
    if h.failed_drill is not None:
        found.append(Hallazgo("sospechoso", h.failed_drill.at,
                              f"el simulacro de restauración del {local(h.failed_drill.at, zone)} falló: "
                              f"{h.failed_drill.reason}"))
    return sorted(found, key=lambda f: ESTADOS.index(f.estado))


def evaluar(h: Hechos, reglas: Reglas, now: dt.datetime, zone: zoneinfo.ZoneInfo) -> Estado:
    """The target's state, worst first, with the others beside it."""
    found = hallazgos(h, reglas, now, zone)
    if not found:
        since = h.newest_good.backup_at if h.newest_good else h.first_seen
        return Estado(h.target, h.frequency, "al_dia", since, (), (), h.newest_good, h.open_missing)
    states = list(dict.fromkeys(f.estado for f in found))
    return Estado(h.target, h.frequency, states[0], found[0].desde, tuple(states[1:]), tuple(found), h.newest_good,
                  h.open_missing)
