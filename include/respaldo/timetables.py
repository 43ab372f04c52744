"""A timetable for "once every N days at HH:MM", anchored to a fixed date.

Cron cannot say "every eight days" (``*/8`` restarts each month) and Airflow's
``DeltaTriggerTimetable`` without catch-up counts from whenever the DAG was deployed, losing the
hour. Slots here are ``anchor + k * N days`` at the given wall-clock time, so they never drift.
It is registered by ``plugins/respaldo_plugin.py`` so the scheduler can deserialize it.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pendulum
from airflow.timetables.base import DagRunInfo, DataInterval, Timetable


class EveryNDaysTimetable(Timetable):
    """Run at ``at`` (HH:MM, in ``timezone``) on ``anchor`` and every ``days`` days after it."""

    def __init__(self, days: int, at: str, timezone: str, anchor: str) -> None:
        self.days = days
        self.at = at
        self.timezone = timezone
        self.anchor = anchor
        hour, minute = (int(part) for part in at.split(":"))
        year, month, day = (int(part) for part in anchor.split("-"))
        self._anchor = pendulum.datetime(year, month, day, hour, minute, tz=timezone)
        self.description = f"cada {days} días a las {at} ({timezone})"

    @property
    def summary(self) -> str:
        return self.description

    def serialize(self) -> dict[str, Any]:
        return {"days": self.days, "at": self.at, "timezone": self.timezone, "anchor": self.anchor}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> Timetable:
        return cls(data["days"], data["at"], data["timezone"], data["anchor"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EveryNDaysTimetable) and self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.serialize().items())))

    def _slot(self, index: int) -> pendulum.DateTime:
        return self._anchor.add(days=index * self.days).in_timezone("UTC")

    def _index_at_or_before(self, when: dt.datetime) -> int:
        index = math.floor((when - self._anchor).total_seconds() / (86400 * self.days))
        while self._slot(index + 1) <= when:
            index += 1
        while self._slot(index) > when:
            index -= 1
        return index

    def slot_at_or_before(self, when: dt.datetime) -> pendulum.DateTime:
        return self._slot(self._index_at_or_before(when))

    def slot_after(self, when: dt.datetime) -> pendulum.DateTime:
        return self._slot(self._index_at_or_before(when) + 1)

    def infer_manual_data_interval(self, *, run_after: dt.datetime) -> DataInterval:
        return DataInterval.exact(run_after)

    def next_dagrun_info(self, *, last_automated_data_interval: DataInterval | None,
                         restriction: Any) -> DagRunInfo | None:
        earliest = max(restriction.earliest or self._anchor, self._anchor)
        first = earliest if self.slot_at_or_before(earliest) == earliest else self.slot_after(earliest)
        if last_automated_data_interval is not None:
            candidate = self.slot_after(last_automated_data_interval.end)
        else:
            candidate = first
        if not restriction.catchup:
            # Like Airflow's trigger timetables: at most the latest slot already due, never a storm.
            latest_due = self.slot_at_or_before(pendulum.now("UTC"))
            candidate = max(candidate, latest_due, first)
        if restriction.latest is not None and candidate > restriction.latest:
            return None
        return DagRunInfo.exact(candidate)
