"""Expected slots: the follow-up's slots are the ones the scheduler runs the DAGs at.

Each DAG is built by the real DAG file, serialized and deserialized as the scheduler receives it, and
its timetable walked with catch-up on; the follow-up, from the inventory alone, must find the same
slots. Tables give the expected local times of each kind of schedule, with and without DST.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path

import pytest
from conftest import write_inventory

from respaldo.inventory import load_inventory
from respaldo.seguimiento import turnos
from respaldo.timetables import slots_between

ROOT = Path(__file__).resolve().parents[1]
FREQUENCIES = {
    "financiero": {"schedule": ["0 13 * * *", "0 22 * * *"]},
    "diario": {"schedule": "0 23 * * *"},
    "servidores_virtuales": {"every_days": 8, "at": "02:00"},
    "semanal": {"schedule": "30 1 * * 1"},
}
TARGETS = [{"id": f"objetivo_{name}", "kind": "files", "frequency": name, "path": "/srv"} for name in FREQUENCIES]


def inventory(tmp_path: Path, zone: str):
    path = write_inventory(tmp_path / "inv.yaml", tmp_path, TARGETS, FREQUENCIES)
    text = path.read_text().replace('"America/Bogota"', f'"{zone}"')
    path.write_text(text)
    return path


def scheduler_dags(path: Path, monkeypatch) -> dict:
    """Every DAG of the DAG file as the scheduler sees it (serialized, then deserialized)."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    monkeypatch.setenv("RESPALDO_INVENTORY", str(path))
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return {dag_id: DagSerialization.from_dict(DagSerialization.to_dict(dag)) for dag_id, dag in bag.dags.items()}


@pytest.mark.parametrize("zone", ["America/Bogota", "Europe/Madrid"])
def test_the_follow_up_expects_exactly_the_slots_the_scheduler_runs_each_dag_at(tmp_path, monkeypatch, zone):
    path = inventory(tmp_path, zone)
    dags = scheduler_dags(path, monkeypatch)
    start, end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    for name, clase in turnos.clases(load_inventory(path)).items():
        scheduled = [s.in_timezone("UTC") for s in slots_between(dags[clase.dag_id].timetable, start, end)]
        ours = clase.slots(start, end)
        assert ours == [dt.datetime.fromtimestamp(s.timestamp(), dt.UTC) for s in scheduled], name
        assert len(ours) > 1, name


@pytest.mark.parametrize(("zone", "name", "start", "end", "expected"), [
    # Bogota has no DST: 23:00 is always 04:00 UTC.
    ("America/Bogota", "diario", "2026-03-07", "2026-03-10",
     ["2026-03-07 23:00", "2026-03-08 23:00", "2026-03-09 23:00"]),
    # Several crons a day: both slots, in order.
    ("America/Bogota", "financiero", "2026-03-07", "2026-03-09",
     ["2026-03-07 13:00", "2026-03-07 22:00", "2026-03-08 13:00", "2026-03-08 22:00"]),
    # Every eight days from the anchor (2026-01-01), never drifting across months.
    ("America/Bogota", "servidores_virtuales", "2026-01-01", "2026-02-12",
     ["2026-01-01 02:00", "2026-01-09 02:00", "2026-01-17 02:00", "2026-01-25 02:00", "2026-02-02 02:00",
      "2026-02-10 02:00"]),
    ("America/Bogota", "semanal", "2026-03-01", "2026-03-20", ["2026-03-02 01:30", "2026-03-09 01:30",
                                                                 "2026-03-16 01:30"]),
    # Madrid moves its clocks on 2026-03-29: the wall-clock time stays, the UTC time moves.
    ("Europe/Madrid", "diario", "2026-03-28", "2026-03-31",
     ["2026-03-28 23:00", "2026-03-29 23:00", "2026-03-30 23:00"]),
    ("Europe/Madrid", "servidores_virtuales", "2026-03-20", "2026-04-10", ["2026-03-22 02:00", "2026-03-30 02:00",
                                                                            "2026-04-07 02:00"]),
])
def test_slots_of_each_kind_of_schedule_fall_at_the_expected_local_times(tmp_path, zone, name, start, end, expected):
    tz = zoneinfo.ZoneInfo(zone)
    clase = turnos.clases(load_inventory(inventory(tmp_path, zone)))[name]
    slots = clase.slots(dt.datetime.fromisoformat(start).replace(tzinfo=tz),
                        dt.datetime.fromisoformat(end).replace(tzinfo=tz))
    assert [s.astimezone(tz).strftime("%Y-%m-%d %H:%M") for s in slots] == expected


@pytest.mark.parametrize(("name", "hours"), [("diario", 27), ("servidores_virtuales", 195), ("financiero", 18),
                                              ("semanal", 171)])
def test_the_default_max_age_is_the_longest_gap_between_slots_plus_the_grace(tmp_path, name, hours):
    clase = turnos.clases(load_inventory(inventory(tmp_path, "America/Bogota")))[name]
    assert clase.max_age == dt.timedelta(hours=hours)
    assert clase.grace == dt.timedelta(minutes=180)


def test_no_slot_is_expected_before_the_dags_own_start_date(tmp_path):
    clase = turnos.clases(load_inventory(inventory(tmp_path, "America/Bogota")))["diario"]
    # The first slot is 2026-01-01 23:00 in Bogota (start_date 2026-01-01), 04:00 UTC the next day.
    assert clase.slots(dt.datetime(2025, 12, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 3, tzinfo=dt.UTC)) == [
        dt.datetime(2026, 1, 2, 4, 0, tzinfo=dt.UTC)]


def test_a_class_named_seguimiento_is_refused_because_it_is_the_follow_ups_dag(tmp_path):
    from respaldo.errors import InventoryError

    path = write_inventory(tmp_path / "inv.yaml", tmp_path, [], {"seguimiento": {"schedule": "0 1 * * *"}})
    with pytest.raises(InventoryError, match="respaldo_seguimiento es el DAG del seguimiento"):
        load_inventory(path)
