"""Expected slots ("turnos"): when each frequency class's DAG should have run.

Slots are per frequency class, not per target: every target of a class shares its slots, so the work
grows with the number of classes and days, and the per-target part (which slot has a copy) is done by
the register in one statement. The timetable is the DAG's own (:func:`respaldo.timetables.timetable_for`)
and the slots come from the code the scheduler runs (:func:`respaldo.timetables.slots_between`).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from respaldo.seguimiento.estados import default_max_age
from respaldo.timetables import slots_between, timetable_for

#: Windows tried, in turn, to find a class's longest gap between slots (the first with 3 slots or more).
GAP_WINDOWS = (dt.timedelta(days=15), dt.timedelta(days=62), dt.timedelta(days=400))


@dataclass(frozen=True)
class Clase:
    """A frequency class as the follow-up sees it."""

    name: str
    dag_id: str
    timetable: Any
    #: What the schedule is, stable across checks: when it changes, the settled slots are looked at again.
    schedule_key: str
    start: dt.datetime
    grace: dt.timedelta
    max_age: dt.timedelta

    def slots(self, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
        """The class's slots in ``[start, end]`` (UTC), never before the DAG's own start date."""
        start = max(start, self.start)
        if end < start:
            return []
        return [dt.datetime.fromtimestamp(s.timestamp(), dt.UTC) for s in slots_between(self.timetable, start, end)]


def longest_gap(timetable: Any, reference: dt.datetime) -> dt.timedelta:
    """The longest time between two consecutive slots from ``reference`` on."""
    slots: list = []
    for window in GAP_WINDOWS:
        slots = list(slots_between(timetable, reference, reference + window))
        if len(slots) >= 3:
            break
    if len(slots) < 2:
        return GAP_WINDOWS[-1]
    return max(b - a for a, b in zip(slots, slots[1:], strict=False))


def clases(inventory: Any, since: dt.date | None = None) -> dict[str, Clase]:
    """Every frequency class of the inventory, by name."""
    import zoneinfo

    zone = zoneinfo.ZoneInfo(inventory.timezone)
    start = dt.datetime.combine(inventory.start_date, dt.time(), zone)
    found = {}
    for name, frequency in sorted(inventory.frequencies.items()):
        timetable = timetable_for(frequency, inventory.timezone, inventory.start_date)
        grace = dt.timedelta(minutes=frequency.grace_minutes)
        if frequency.max_age_hours:
            max_age = dt.timedelta(hours=frequency.max_age_hours)
        else:
            max_age = default_max_age(longest_gap(timetable, start), grace)
        key = json.dumps({"schedule": frequency.schedule, "every_days": frequency.every_days,
                          "at": frequency.at if frequency.every_days else None, "timezone": inventory.timezone,
                          "start_date": inventory.start_date.isoformat(),
                          "since": since.isoformat() if since else None}, sort_keys=True)
        found[name] = Clase(name, f"respaldo_{name}", timetable, key, start.astimezone(dt.UTC), grace, max_age)
    return found
