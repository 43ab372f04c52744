"""Reading the register the way the pages and the sheet do: row date, filters, keyset pages, indexes."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from conftest import SYSTEM_PG, own_register

from respaldo import register
from respaldo.register import consulta

UTC = dt.UTC
CONN_ID = "registro_consulta"


def at(day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def row(target: str, run_id: str, status: str, **extra) -> register.Row:
    return register.Row(target=target, kind="postgres", frequency=extra.pop("frequency", "diario"),
                        mechanism="automatic", dag_id=extra.pop("dag_id", "respaldo_diario"), run_id=run_id,
                        status=status, **extra)


def insert_missing(conn_id: str, target: str, slot: dt.datetime, superseded_by: int | None = None) -> int:
    """A missing slot's row, written the way the follow-up writes it."""
    with register.connect(conn_id) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO respaldo.control_backup (target, kind, frequency, mechanism, dag_id, run_id, logical_date, "
            "finished_at, status, error, superseded_by) VALUES (%s, 'postgres', 'diario', 'automatic', "
            "'respaldo_diario', %s, %s, %s, 'missing', %s, %s) RETURNING id",
            (target, f"faltante__{slot.isoformat()}", slot, slot + dt.timedelta(hours=4),
             f"No hubo copia del turno {slot:%Y-%m-%d %H:%M}", superseded_by))
        found = cur.fetchone()[0]
        conn.commit()
    return found


@pytest.fixture(scope="module")
def database():
    """A register database of its own, reached as the Airflow connection CONN_ID while the module runs."""
    with own_register("respaldo_test_consulta", CONN_ID) as name:
        yield name


@pytest.fixture(scope="module")
def rows(database):
    """Two targets, ties on the row date, failures, missing slots (one covered by a later copy)."""
    ids = {}
    for day in range(1, 8):
        ids[f"a{day}"] = register.record(CONN_ID, row("objetivo_a", f"scheduled__a{day}", "success",
                                                      logical_date=at(day, 4), backup_at=at(day, 4, 1))).id
    # Same row date as a3: the id breaks the tie, and no page may lose or repeat either.
    ids["b3"] = register.record(CONN_ID, row("objetivo_b", "scheduled__b3", "success", logical_date=at(3, 4),
                                             backup_at=at(3, 4, 1), frequency="financiero",
                                             dag_id="respaldo_financiero")).id
    ids["b4_failed"] = register.record(CONN_ID, row("objetivo_b", "scheduled__b4", "failed", logical_date=at(4, 4),
                                                    frequency="financiero", dag_id="respaldo_financiero",
                                                    error="Falló «copia»")).id
    ids["b_manual_failed"] = register.record(CONN_ID, row("objetivo_b", "manual__x", "failed", finished_at=at(5, 15),
                                                          frequency="financiero", dag_id="respaldo_financiero")).id
    ids["a_missing"] = insert_missing(CONN_ID, "objetivo_a", at(8, 4))
    covering = register.record(CONN_ID, row("objetivo_a", "backfill__a9", "success", logical_date=at(9, 4),
                                            backup_at=at(20, 10))).id
    ids["a9_covered"] = insert_missing(CONN_ID, "objetivo_a", at(9, 4), superseded_by=covering)
    ids["a9_backfill"] = covering
    return ids


@pytest.fixture
def conn(database, rows):
    with psycopg.connect(f"{SYSTEM_PG}/{database}") as connection:
        yield connection


def expected(conn, where: consulta.Filter) -> list[int]:
    sql, params = where.where()
    return [found for (found,) in conn.execute(
        f"SELECT id FROM respaldo.control_backup WHERE {sql} ORDER BY {register.ROW_DATE} DESC, id DESC", params)]


FILTERS = {
    "everything": consulta.Filter(),
    "one target": consulta.Filter(target="objetivo_a"),
    "failed only": consulta.Filter(status="failed"),
    "one class": consulta.Filter(frequency="financiero"),
    "a window of days": consulta.Filter(since=at(3), until=at(6)),
    "the DAGs a user may read": consulta.Filter(dag_ids=frozenset({"respaldo_financiero"})),
    "covered slots too": consulta.Filter(superseded=True),
}


@pytest.mark.parametrize("where", FILTERS.values(), ids=FILTERS.keys())
def test_pages_walk_every_row_once_newest_first_and_come_back_the_same(conn, where):
    pages, cursor = [], None
    while True:
        page = consulta.page(conn, where, older_than=cursor, size=3)
        pages.append([r["id"] for r in page.rows])
        if page.older is None:
            break
        cursor = page.older
    assert [found for ids in pages for found in ids] == expected(conn, where) != []
    assert pages[0] and len(pages[-1]) <= 3 and all(len(ids) == 3 for ids in pages[:-1])

    back, page = [], consulta.page(conn, where, older_than=cursor, size=3) if cursor else None
    while page is not None and page.newer is not None:
        page = consulta.page(conn, where, newer_than=page.newer, size=3)
        back.append([r["id"] for r in page.rows])
    assert back == pages[-2::-1]
    assert page is None or page.first


def test_the_row_date_is_the_copy_then_the_slot_then_when_it_was_written(conn, rows):
    dates = {found: date for found, date in conn.execute(
        f"SELECT id, {register.ROW_DATE} FROM respaldo.control_backup")}
    assert dates[rows["a1"]] == at(1, 4, 1)               # a copy: its creation date
    assert dates[rows["b4_failed"]] == at(4, 4)           # no copy: the slot it was for
    assert dates[rows["a_missing"]] == at(8, 4)           # a missing slot: the slot
    assert dates[rows["b_manual_failed"]] == at(5, 15)    # no slot either: when the row was written


def test_a_missing_slot_a_later_copy_covered_is_left_out_unless_asked(conn, rows):
    shown = [r["id"] for r in consulta.page(conn, consulta.Filter(status="missing"), size=50).rows]
    assert shown == [rows["a_missing"]]
    everything = [r["id"] for r in consulta.page(conn, consulta.Filter(status="missing", superseded=True),
                                                 size=50).rows]
    assert everything == [rows["a9_covered"], rows["a_missing"]]


def test_the_sheets_rows_run_oldest_first(conn, rows):
    found = consulta.rows_between(conn, consulta.Filter(target="objetivo_a", since=at(1), until=at(4)))
    assert [r["id"] for r in found] == [rows["a1"], rows["a2"], rows["a3"]]


def test_every_target_with_rows_is_listed_once(conn):
    assert consulta.targets(conn) == ["objetivo_a", "objetivo_b"]


@pytest.mark.parametrize("where, index", [
    (consulta.Filter(), "control_backup_row_date"),
    (consulta.Filter(since=at(3), until=at(6), status="failed"), "control_backup_row_date"),
    (consulta.Filter(target="objetivo_a"), "control_backup_target_row_date"),
], ids=["first page", "a filtered window", "one target"])
def test_the_pages_queries_can_use_the_row_date_indexes_of_migration_5(conn, where, index):
    """The planner picks an index only if the query spells the indexed expression exactly; forbidding the
    alternatives shows it can (with a few rows it would rightly prefer to read the table)."""
    sql, params = where.where()
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET enable_bitmapscan = off")
    conn.execute("SET enable_sort = off")
    plan = "\n".join(line for (line,) in conn.execute(
        f"EXPLAIN SELECT id FROM respaldo.control_backup WHERE {sql} ORDER BY {register.ROW_DATE} DESC, id DESC "
        "LIMIT 51", params))
    assert index in plan and "Sort" not in plan, plan


@pytest.mark.parametrize("token", ["", "garbage", "20260301T040000.000000Z", "20260399T040000.000000Z_5",
                                   "20260301T040000.000000Z_x"])
def test_an_edited_page_link_is_refused(token):
    with pytest.raises(consulta.CursorError):
        consulta.Cursor.parse(token)


def test_a_page_link_names_the_same_place_after_a_round_trip():
    cursor = consulta.Cursor(dt.datetime(2026, 3, 1, 23, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=-5))), 42)
    again = consulta.Cursor.parse(cursor.token())
    assert again == cursor and again.date.tzinfo == UTC
