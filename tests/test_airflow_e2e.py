"""End to end: a real Airflow 3 (API server, scheduler, DAG processor, LocalExecutor workers) driven
over its REST API the way the IT office drives it, against real PostgreSQL and SMTP servers.

One stack serves the whole module (its start-up is paid once) with its own metadata database and an
inventory of its own; every test triggers its own runs and reads only its own rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import time
import uuid
import zoneinfo
from email.utils import parsedate_to_datetime
from pathlib import Path

import psycopg
import pytest
from conftest import BACKUP_PASSWORD, RUN_KEY, SYSTEM_PG, write_inventory

from devtools.airflow_stack import VENV_BIN, AirflowStack
from devtools.demo_data import table_checksums_sql
from respaldo.precarga import LOG_LINE, MODULES

BOGOTA = zoneinfo.ZoneInfo("America/Bogota")
STEPS = ("copia", "verificar_fecha", "comprimir", "registrar")
FINANCIERO = {"id": "financiero_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_fuente",
              "database": "financiero"}
SISTEMA = {"id": "sistema_informacion_pg", "kind": "postgres", "frequency": "diario", "conn_id": "pg_fuente",
           "database": "sistema_informacion"}
CLAVE_MALA = {"id": "clave_mala_pg", "kind": "postgres", "frequency": "reintentos", "conn_id": "pg_clave_mala",
              "database": "financiero"}
FREQUENCIES = {
    "financiero": {"schedule": ["0 13 * * *", "0 22 * * *"], "retries": 0},
    "diario": {"schedule": "0 23 * * *", "retries": 0},
    "reintentos": {"schedule": "0 3 * * *", "retries": 1, "retry_delay_minutes": 1},
    "entregas": {"schedule": "0 23 * * *", "retries": 0},
}


def manual_target(intake: Path) -> dict:
    return {"id": "nomina_manual", "kind": "files", "frequency": "entregas", "mechanism": "manual",
            "intake": {"path": str(intake), "pattern": "nomina_{fecha}.zip", "wait_hours": 0.001,
                       "poke_minutes": 0.02, "settle_seconds": 0}}


DAGS = [f"respaldo_{name}" for name in FREQUENCIES]
METADATA_DB = f"respaldo_test_e2e_airflow_{RUN_KEY}"


def _system_sql(sql: str) -> None:
    with psycopg.connect(f"{SYSTEM_PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


class E2E:
    """The running stack and what the tests need around it."""

    def __init__(self, stack: AirflowStack, root: Path, inventory: Path):
        self.stack = stack
        self.api = stack.api
        self.root = root
        self.inventory = inventory
        self.intake = inventory.parent / "entregas"

    def run_to_end(self, dag_id: str, conf: dict | None = None, logical_date: dt.datetime | None = None,
                   timeout: float = 180) -> tuple[str, str]:
        run_id = self.api.trigger(dag_id, conf, logical_date)
        return run_id, self.api.wait_for_run(dag_id, run_id, timeout)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, source_pg, smtp):
    work = tmp_path_factory.mktemp("e2e")
    root = work / "respaldos"
    root.mkdir()
    intake = work / "entregas"
    intake.mkdir()
    inventory = write_inventory(work / "inventory.yaml", root,
                                [FINANCIERO, SISTEMA, CLAVE_MALA, manual_target(intake)], FREQUENCIES)
    connections = {key: value for key, value in os.environ.items() if key.startswith("AIRFLOW_CONN_")}
    _system_sql(f'CREATE DATABASE "{METADATA_DB}"')
    stack = AirflowStack(home=work / "airflow", database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/"
                         f"{METADATA_DB}", extra_env={**connections, "RESPALDO_INVENTORY": str(inventory)},
                         schedule=False)
    try:
        stack.start()
        stack.command([str(VENV_BIN / "respaldo"), "pools", "--slots", "2"])
        for dag_id in DAGS:
            stack.api.wait_for_dag(dag_id)
            stack.api.unpause(dag_id)
        yield E2E(stack, root, inventory)
    finally:
        stack.stop()
        _system_sql(f'DROP DATABASE IF EXISTS "{METADATA_DB}" WITH (FORCE)')


def restore(source_pg, artifact: Path) -> str:
    """``zstd -dc ARTIFACT | pg_restore -d NEWDB``: standard tools alone; return the new database's name."""
    name = f"restaurada_{uuid.uuid4().hex[:8]}"
    source_pg.psql(f"CREATE DATABASE {name}")
    subprocess.run(f"zstd -dc '{artifact}' | pg_restore --no-owner --exit-on-error -d {name}", shell=True,
                   check=True, env=source_pg.env(database=name), capture_output=True)
    return name


def emails_of(smtp, run_id: str) -> list:
    return [m for m in list(smtp.messages) if run_id in m.get_body(("html",)).get_content()]


def test_a_run_triggered_from_the_form_backs_up_restores_and_registers_the_real_copy_time(
    e2e, source_pg, register_rows
):
    slot = dt.datetime(2026, 3, 17, 23, 0, tzinfo=BOGOTA)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    form = {"objetivos": ["sistema_informacion_pg"], "responsable": "Ana Pérez",
            "observaciones": "respaldo pedido desde el formulario"}
    run_id, state = e2e.run_to_end("respaldo_diario", form, slot)

    assert state == "success"
    assert e2e.api.task_states("respaldo_diario", run_id) == {
        "preparar": "success", "cierre": "success", **{f"sistema_informacion_pg.{s}": "success" for s in STEPS}}
    [row] = register_rows(target="sistema_informacion_pg", run_id=run_id)
    assert row["status"] == "success" and row["error"] is None
    assert (row["responsible"], row["notes"]) == ("Ana Pérez", "respaldo pedido desde el formulario")
    assert row["logical_date"] == slot
    assert row["run_type"] == "manual"
    assert before <= row["backup_at"] <= row["finished_at"] <= dt.datetime.now(dt.UTC)

    artifact = Path(row["artifact_path"])
    local = row["backup_at"].astimezone(BOGOTA)
    assert artifact == (e2e.root / "diario" / "sistema_informacion_pg" / f"{local:%Y}" / f"{local:%m}"
                        / f"sistema_informacion_pg_{local:%Y%m%dT%H%M%S}.dump.zst")
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == row["sha256"]
    check = subprocess.run(["sha256sum", "-c", artifact.name + ".sha256"], cwd=artifact.parent,
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == f"{artifact.name}: OK"

    restored = restore(source_pg, artifact)
    expected = source_pg.psql(table_checksums_sql(), database="sistema_informacion").stdout
    assert "tramites|3000:" in expected
    assert source_pg.psql(table_checksums_sql(), database=restored).stdout == expected


def test_a_manual_run_without_a_date_succeeds_and_registers_no_logical_date(e2e, register_rows):
    run_id, state = e2e.run_to_end("respaldo_financiero", {"objetivos": ["financiero_pg"]}, None)

    assert state == "success"
    assert e2e.api.run("respaldo_financiero", run_id)["logical_date"] is None
    [row] = register_rows(target="financiero_pg", run_id=run_id)
    assert row["status"] == "success" and row["logical_date"] is None
    assert row["responsible"] == "Profesional universitario área de sistemas" and row["notes"] is None
    assert Path(row["artifact_path"]).is_file()


def backfill_runs(e2e, dag_id: str, slots: list[dt.datetime], timeout: float = 240) -> list[dict]:
    """Wait for the backfill runs of ``slots`` to finish; return them in slot order."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [r for r in e2e.api.runs(dag_id, run_type="backfill")
                if r["logical_date"] and dt.datetime.fromisoformat(r["logical_date"]) in slots]
        if len(runs) == len(slots) and all(r["state"] in ("success", "failed") for r in runs):
            return sorted(runs, key=lambda r: dt.datetime.fromisoformat(r["logical_date"]))
        assert time.monotonic() < deadline, f"backfill runs not finished: {runs}"
        time.sleep(1)


def test_a_backfill_of_two_past_slots_makes_two_runs_two_rows_and_two_artifacts(e2e, register_rows):
    slots = [dt.datetime(2026, 2, 10, 13, 0, tzinfo=BOGOTA), dt.datetime(2026, 2, 10, 22, 0, tzinfo=BOGOTA)]
    backfill = e2e.api.create_backfill("respaldo_financiero", dt.datetime(2026, 2, 10, 12, 0, tzinfo=BOGOTA),
                                       dt.datetime(2026, 2, 10, 23, 0, tzinfo=BOGOTA))
    assert backfill["dag_id"] == "respaldo_financiero"

    runs = backfill_runs(e2e, "respaldo_financiero", slots)

    assert sorted(dt.datetime.fromisoformat(r["logical_date"]) for r in runs) == slots
    assert [r["state"] for r in runs] == ["success", "success"]
    rows = [register_rows(target="financiero_pg", run_id=r["dag_run_id"]) for r in runs]
    assert all(len(found) == 1 for found in rows), rows
    rows = sorted((found[0] for found in rows), key=lambda row: row["logical_date"])
    assert [row["logical_date"] for row in rows] == slots
    assert [row["run_type"] for row in rows] == ["backfill", "backfill"]
    assert all(row["status"] == "success" and row["backup_at"] > slots[1] for row in rows)
    artifacts = {row["artifact_path"] for row in rows}
    assert len(artifacts) == 2 and all(Path(path).is_file() for path in artifacts)


def test_a_backfill_of_a_manual_target_gives_each_past_slot_its_own_file_and_date(e2e, register_rows):
    slots = [dt.datetime(2026, 2, day, 23, 0, tzinfo=BOGOTA) for day in (1, 2, 3)]
    for number, slot in enumerate(slots):
        path = e2e.intake / f"nomina_{slot:%Y%m%d}.zip"
        path.write_bytes(os.urandom(3000))
        delivered = (slot - dt.timedelta(hours=5) + dt.timedelta(minutes=number)).timestamp()
        os.utime(path, (delivered, delivered))
    e2e.api.create_backfill("respaldo_entregas", dt.datetime(2026, 2, 1, tzinfo=BOGOTA),
                            dt.datetime(2026, 2, 3, 23, 30, tzinfo=BOGOTA))
    runs = backfill_runs(e2e, "respaldo_entregas", slots)

    assert [r["state"] for r in runs] == ["success"] * 3
    rows = [register_rows(target="nomina_manual", run_id=r["dag_run_id"])[0] for r in runs]
    assert [row["backup_at"] for row in rows] == slots == [row["logical_date"] for row in rows]
    assert [row["original_name"] for row in rows] == [f"nomina_{s:%Y%m%d}.zip" for s in slots]
    assert [Path(row["artifact_path"]).name for row in rows] == [f"nomina_manual_{s:%Y%m%d}T230000.zip.zst"
                                                                for s in slots]
    assert sorted(p.name for p in (e2e.intake / "tomados").iterdir()) == [f"nomina_{s:%Y%m%d}.zip" for s in slots]


def test_clearing_a_finished_task_group_reruns_it_and_updates_its_one_register_row(e2e, register_rows):
    run_id, state = e2e.run_to_end("respaldo_diario", {"objetivos": ["sistema_informacion_pg"]},
                                   dt.datetime(2026, 3, 20, 23, 0, tzinfo=BOGOTA))
    assert state == "success"
    [first] = register_rows(target="sistema_informacion_pg", run_id=run_id)
    time.sleep(1)  # the re-run's copy gets a new second, hence an artifact of its own

    cleared = e2e.api.clear_tasks("respaldo_diario", run_id, [f"sistema_informacion_pg.{s}" for s in STEPS])
    # The run's setup and teardown come with them: the rerun is checked and closed like the first run.
    assert sorted(ti["task_id"] for ti in cleared) == sorted(
        ["preparar", "cierre", *(f"sistema_informacion_pg.{s}" for s in STEPS)])
    assert e2e.api.wait_for_run("respaldo_diario", run_id) == "success"

    tries = e2e.api.task_tries("respaldo_diario", run_id, "sistema_informacion_pg.copia")
    assert [t["try_number"] for t in tries] == [1, 2]
    [again] = register_rows(target="sistema_informacion_pg", run_id=run_id)
    assert again["id"] == first["id"] and again["status"] == "success"
    assert again["updated_at"] > first["updated_at"] and again["backup_at"] > first["backup_at"]
    assert again["try_number"] == 2
    assert again["artifact_path"] != first["artifact_path"]
    assert Path(first["artifact_path"]).is_file() and Path(again["artifact_path"]).is_file()


def test_a_failing_target_is_retried_then_emails_once_and_registers_one_failed_row(e2e, smtp, register_rows):
    run_id = e2e.api.trigger("respaldo_reintentos", {}, dt.datetime(2026, 3, 21, 3, 0, tzinfo=BOGOTA))
    copia = "clave_mala_pg.copia"

    deadline = time.monotonic() + 90
    while e2e.api.task_states("respaldo_reintentos", run_id).get(copia) != "up_for_retry":
        assert time.monotonic() < deadline, e2e.api.task_states("respaldo_reintentos", run_id)
        time.sleep(0.5)
    assert emails_of(smtp, run_id) == [], "an email was sent after the first try"
    assert register_rows(target="clave_mala_pg", run_id=run_id) == [], "a failed row before the last try"

    assert e2e.api.wait_for_run("respaldo_reintentos", run_id, timeout=240) == "failed"
    tries = e2e.api.task_tries("respaldo_reintentos", run_id, copia)
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "failed"), (2, "failed")]

    mail = smtp.wait_for(lambda m: run_id in m.get_body(("html",)).get_content())
    time.sleep(3)  # a second email, if any, would have arrived by now
    assert emails_of(smtp, run_id) == [mail]
    assert mail["Subject"] == "[respaldo] Falló el respaldo de «clave_mala_pg» en el paso «copia» (respaldo_reintentos)"
    second_try_started = dt.datetime.fromisoformat(tries[1]["start_date"])
    assert parsedate_to_datetime(mail["Date"]) >= second_try_started.replace(microsecond=0)
    assert "password authentication failed" in mail.get_body(("html",)).get_content()

    [row] = register_rows(target="clave_mala_pg", run_id=run_id)
    assert row["status"] == "failed" and row["step"] == "copia" and row["try_number"] == 2
    assert "password authentication failed" in row["error"]


def test_the_workers_task_logs_show_progress_and_never_the_password(e2e):
    run_id, state = e2e.run_to_end("respaldo_financiero", {"objetivos": ["financiero_pg"]},
                                   dt.datetime(2026, 3, 22, 13, 0, tzinfo=BOGOTA))
    assert state == "success"

    run_logs = [p for p in e2e.stack.task_log_files() if f"run_id={run_id}" in str(p)]
    assert {p.parent.name for p in run_logs} == {"task_id=preparar", "task_id=cierre",
                                                 *(f"task_id=financiero_pg.{s}" for s in STEPS)}
    [copia_log] = [p for p in run_logs if p.parent.name == "task_id=financiero_pg.copia"]
    events = [json.loads(line).get("event", "") for line in copia_log.read_text().splitlines() if line.strip()]
    assert any(event.startswith("pg_dump terminó:") for event in events), events

    everything = [p for p in e2e.stack.home.rglob("*") if p.is_file()]
    assert len(everything) > len(run_logs)
    for path in everything:
        text = path.read_bytes()
        assert BACKUP_PASSWORD.encode() not in text, path
        assert json.dumps(BACKUP_PASSWORD).encode() not in text, path  # nor its JSON-escaped form


def test_the_scheduler_preloads_the_task_code_before_it_forks_its_workers(e2e):
    """Each task process is forked from a LocalExecutor worker, forked from the scheduler when it started: the
    task code the scheduler imported first is inherited by every task instead of imported again by each."""
    lines = (e2e.stack.home / "scheduler.log").read_text(encoding="utf-8", errors="replace").splitlines()
    preloaded = [i for i, line in enumerate(lines) if LOG_LINE in line]
    workers = [i for i, line in enumerate(lines) if "Worker starting up pid=" in line]
    assert len(preloaded) == 1 and workers, lines[:40]
    assert preloaded[0] < workers[0]
    assert f"{len(MODULES)} módulos" in lines[preloaded[0]] and "respaldo.dag_factory" in lines[preloaded[0]]
    for other in ("dag-processor", "api-server"):
        assert LOG_LINE not in (e2e.stack.home / f"{other}.log").read_text(encoding="utf-8", errors="replace")


def dag_file_errors(e2e) -> list[dict]:
    return [e for e in e2e.api.import_errors() if e["filename"].endswith("respaldo_dags.py")]


def test_a_misspelled_inventory_key_is_an_import_error_naming_the_file_line_and_key(e2e):
    good = e2e.inventory.read_text(encoding="utf-8")
    bad = good.replace('"database": "sistema_informacion"', '"databse": "sistema_informacion"')
    assert bad != good
    line = next(number for number, text in enumerate(bad.splitlines(), 1) if '"databse"' in text)
    e2e.inventory.write_text(bad, encoding="utf-8")
    try:
        deadline = time.monotonic() + 60
        while not (errors := dag_file_errors(e2e)):
            assert time.monotonic() < deadline, "the bad inventory never showed up as an import error"
            time.sleep(1)
        [error] = errors
        assert (error["bundle_name"], error["filename"]) == ("dags-folder", "respaldo_dags.py"), error
        trace = error["stack_trace"]
        assert f"{e2e.inventory}:{line}: targets[1].databse: clave desconocida «databse»." in trace, trace
        assert "¿Quiso decir «database»?" in trace, trace
    finally:
        e2e.inventory.write_text(good, encoding="utf-8")
    deadline = time.monotonic() + 60
    while dag_file_errors(e2e):
        assert time.monotonic() < deadline, "the import error stayed after the inventory was fixed"
        time.sleep(1)
    for dag_id in DAGS:
        e2e.api.wait_for_dag(dag_id)
