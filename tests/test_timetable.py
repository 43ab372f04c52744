"""The every-N-days timetable: slots never drift from the anchor and never storm on deploy."""

from __future__ import annotations

import pendulum
import pytest
from airflow.timetables.base import DataInterval, TimeRestriction

from respaldo.timetables import EveryNDaysTimetable

BOGOTA = "America/Bogota"


@pytest.fixture
def every8() -> EveryNDaysTimetable:
    return EveryNDaysTimetable(8, "02:00", BOGOTA, "2026-01-01")


def test_slots_are_every_eight_days_at_two_in_bogota(every8):
    first = pendulum.datetime(2026, 1, 1, 2, 0, tz=BOGOTA)
    restriction = TimeRestriction(earliest=first, latest=None, catchup=True)
    info = every8.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    slots = [info.run_after]
    for _ in range(5):
        info = every8.next_dagrun_info(last_automated_data_interval=info.data_interval, restriction=restriction)
        slots.append(info.run_after)
    local = [s.in_timezone(BOGOTA) for s in slots]
    assert [f"{d:%Y-%m-%d %H:%M}" for d in local] == [
        "2026-01-01 02:00", "2026-01-09 02:00", "2026-01-17 02:00", "2026-01-25 02:00", "2026-02-02 02:00",
        "2026-02-10 02:00"]


def test_without_catchup_only_the_latest_due_slot_runs(every8, monkeypatch):
    now = pendulum.datetime(2026, 11, 24, 10, 0, tz="UTC")
    monkeypatch.setattr(pendulum, "now", lambda tz=None: now)
    restriction = TimeRestriction(earliest=pendulum.datetime(2026, 1, 1, 0, 0, tz=BOGOTA), latest=None,
                                  catchup=False)
    info = every8.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    due = info.run_after.in_timezone(BOGOTA)
    assert due <= now and (now - due).total_seconds() < 8 * 86400
    assert f"{due:%H:%M}" == "02:00" and (due.date() - pendulum.date(2026, 1, 1)).days % 8 == 0


def test_the_end_date_stops_the_schedule(every8):
    restriction = TimeRestriction(earliest=pendulum.datetime(2026, 1, 1, tz=BOGOTA),
                                  latest=pendulum.datetime(2026, 1, 5, tz=BOGOTA), catchup=True)
    last = DataInterval.exact(pendulum.datetime(2026, 1, 1, 2, 0, tz=BOGOTA))
    assert every8.next_dagrun_info(last_automated_data_interval=last, restriction=restriction) is None


def test_it_serializes_to_what_it_was(every8):
    assert EveryNDaysTimetable.deserialize(every8.serialize()) == every8
    assert every8.summary == "cada 8 días a las 02:00 (America/Bogota)"


def test_a_manual_run_is_an_instant_not_an_interval(every8):
    now = pendulum.datetime(2026, 5, 5, 12, tz="UTC")
    assert every8.infer_manual_data_interval(run_after=now) == DataInterval(now, now)
