"""The timetables of respaldo's DAGs, and a timetable for "once every N days at HH:MM".

:func:`timetable_for` is the one place a frequency class becomes a timetable: the DAG factory gives
it to the class's DAG and the follow-up derives the expected slots from it (:func:`slots_between`,
through the same code the scheduler runs), so the two can never disagree.

Cron cannot say "every eight days" (``*/8`` restarts each month) and Airflow's
``DeltaTriggerTimetable`` without catch-up counts from whenever the DAG was deployed, losing the
hour. Slots here are ``anchor + k * N days`` at the given wall-clock time, so they never drift.
It is registered by ``plugins/respaldo_plugin.py`` so the scheduler can deserialize it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
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


def timetable_for(frequency: Any, timezone: str, start_date: dt.date):
    """The timetable of a frequency class's DAG (``frequency`` is an inventory ``Frequency``)."""
    from airflow.sdk import CronTriggerTimetable, MultipleCronTriggerTimetable

    if frequency.every_days:
        return EveryNDaysTimetable(frequency.every_days, frequency.at, timezone, start_date.isoformat())
    crons = frequency.crons
    if len(crons) == 1:
        return CronTriggerTimetable(crons[0], timezone=timezone)
    return MultipleCronTriggerTimetable(*crons, timezone=timezone)


def as_scheduled(timetable: Any) -> Timetable:
    """The timetable as the scheduler runs it: a DAG file's SDK timetable goes through Airflow's own
    serialization, exactly as the scheduler receives it; respaldo's own timetable already is one."""
    if isinstance(timetable, Timetable):
        return timetable
    from airflow.serialization.decoders import decode_timetable
    from airflow.serialization.encoders import encode_timetable

    return decode_timetable(encode_timetable(timetable))


def slots_between(timetable: Any, start: dt.datetime, end: dt.datetime) -> Iterator[pendulum.DateTime]:
    """Every slot (run's logical date, UTC) of ``timetable`` in ``[start, end]``, oldest first, as the
    scheduler would create them with catch-up on."""
    from airflow.timetables.base import TimeRestriction

    scheduled = as_scheduled(timetable)
    restriction = TimeRestriction(earliest=pendulum.instance(start), latest=pendulum.instance(end), catchup=True)
    last = None
    while True:
        info = scheduled.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        if info is None or info.logical_date is None:
            return
        yield info.logical_date.in_timezone("UTC")
        last = info.data_interval
