"""Faults only a real Airflow shows: a task process killed outright, a dead worker, a pool nobody created.

A real stack (API server, scheduler, DAG processor, LocalExecutor) against real PostgreSQL and SMTP.
``dag.test`` would see none of this: it has no pools, no supervisor and no heartbeats. Each fault must
end as one ``failed`` row with a plain reason, one email, nothing left in staging, and earlier
artifacts intact.

To kill a copy mid-way deterministically, another session holds a lock on a table of the source
database: ``pg_dump`` waits for it, with the copy's staging file open, until the test kills it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import time
import zoneinfo
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import RUN_KEY, SYSTEM_PG, write_inventory

from devtools.airflow_stack import AirflowStack

BOGOTA = zoneinfo.ZoneInfo("America/Bogota")
METADATA_DB = f"respaldo_test_fallas_airflow_{RUN_KEY}"
#: The worker's heartbeat timeout in this stack (Airflow's default is 300 s).
HEARTBEAT_TIMEOUT = 15
FREQUENCIES = {"fallas": {"schedule": "0 4 * * *", "retries": 0}}
BLOQUEADA = {"id": "contable_pg", "kind": "postgres", "frequency": "fallas", "conn_id": "pg_fuente",
             "database": "financiero"}
POOL_NUEVO = {"id": "tramites_pg", "kind": "postgres", "frequency": "fallas", "conn_id": "pg_fuente",
              "database": "sistema_informacion", "pool": f"pool_nunca_creado_{RUN_KEY}"}
TARGETS = {t["id"] for t in (BLOQUEADA, POOL_NUEVO)}


def _system_sql(sql: str) -> None:
    with psycopg.connect(f"{SYSTEM_PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, source_pg, smtp):
    """No `respaldo pools` here on purpose: the pools must appear by themselves."""
    work = tmp_path_factory.mktemp("fallas")
    root = work / "respaldos"
    root.mkdir()
    inventory = write_inventory(work / "inventory.yaml", root, [BLOQUEADA, POOL_NUEVO], FREQUENCIES)
    connections = {key: value for key, value in os.environ.items() if key.startswith("AIRFLOW_CONN_")}
    _system_sql(f'CREATE DATABASE "{METADATA_DB}"')
    env = {**connections, "RESPALDO_INVENTORY": str(inventory),
           "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
           "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2"}
    airflow = AirflowStack(home=work / "airflow", database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/"
                           f"{METADATA_DB}", extra_env=env, schedule=False)
    try:
        airflow.start()
        airflow.api.wait_for_dag("respaldo_fallas")
        airflow.api.unpause("respaldo_fallas")
        airflow.root = root
        yield airflow
    finally:
        airflow.stop()
        _system_sql(f'DROP DATABASE IF EXISTS "{METADATA_DB}" WITH (FORCE)')


@contextlib.contextmanager
def table_locked(source_pg, database: str, table: str):
    """Another session holds ACCESS EXCLUSIVE on ``table`` until the block ends."""
    conn = psycopg.connect(host="127.0.0.1", port=source_pg.port, user="postgres", password=source_pg.password,
                           dbname=database)
    try:
        conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        conn.rollback()
        conn.close()


def _copies(process: psutil.Process, target: str) -> bool:
    """Whether this pg_dump is ``target``'s copy: its private service file names the session after it."""
    service = Path((process.environ() or {}).get("PGSERVICEFILE", "/nonexistent"))
    return service.is_file() and f"application_name=respaldo {target}" in service.read_text()


def waiting_pg_dump(target: str, timeout: float = 90) -> psutil.Process:
    """The pg_dump of ``target``'s copy, once it is running (waiting for the lock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in psutil.process_iter(["name"]):
            with contextlib.suppress(psutil.Error, OSError):
                if process.info["name"] == "pg_dump" and _copies(process, target):
                    return process
        time.sleep(0.2)
    raise AssertionError(f"no pg_dump of {target} started within {timeout:.0f} s")


def staging_of(root: Path, target: str) -> list[Path]:
    folder = root / ".staging" / "fallas" / target
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def mails_of(smtp, run_id: str) -> list:
    return [m for m in list(smtp.messages) if run_id in m.get_body(("html",)).get_content()]


def rows_of(run_id: str, target: str, register_rows) -> list[dict]:
    return register_rows(target=target, run_id=run_id)


def good_backup(stack, register_rows, day: int) -> Path:
    run_id = stack.api.trigger("respaldo_fallas", {"objetivos": [BLOQUEADA["id"]]},
                               dt.datetime(2026, 4, day, 4, 0, tzinfo=BOGOTA))
    assert stack.api.wait_for_run("respaldo_fallas", run_id) == "success"
    [row] = rows_of(run_id, BLOQUEADA["id"], register_rows)
    return Path(row["artifact_path"])


def verifies(artifact: Path) -> bool:
    check = subprocess.run(["sha256sum", "-c", artifact.name + ".sha256"], cwd=artifact.parent,
                           capture_output=True, text=True)
    return check.returncode == 0


def test_a_pool_nobody_created_is_created_when_the_run_starts_and_the_copy_runs(stack, register_rows):
    pool = POOL_NUEVO["pool"]
    assert stack.api.client.get(f"/pools/{pool}").status_code == 404
    run_id = stack.api.trigger("respaldo_fallas", {"objetivos": [POOL_NUEVO["id"]]},
                               dt.datetime(2026, 4, 1, 4, 0, tzinfo=BOGOTA))

    assert stack.api.wait_for_run("respaldo_fallas", run_id, timeout=120) == "success"
    assert stack.api.get(f"/pools/{pool}")["slots"] == 1
    [row] = rows_of(run_id, POOL_NUEVO["id"], register_rows)
    assert row["status"] == "success" and Path(row["artifact_path"]).is_file()
    assert "se crearon con 1 cupo" in stack.log_tail("scheduler", 400)


def test_a_task_process_killed_mid_copy_ends_as_one_failed_row_and_one_email(stack, source_pg, smtp,
                                                                               register_rows):
    earlier = good_backup(stack, register_rows, 2)
    with table_locked(source_pg, "financiero", "comprobantes"):
        run_id = stack.api.trigger("respaldo_fallas", {"objetivos": [BLOQUEADA["id"]]},
                                   dt.datetime(2026, 4, 3, 4, 0, tzinfo=BOGOTA))
        dump = waiting_pg_dump(BLOQUEADA["id"])
        assert staging_of(stack.root, BLOQUEADA["id"]), "the copy had not started writing"
        task_process = dump.parent()
        assert "python" in task_process.name() or "airflow" in " ".join(task_process.cmdline())
        os.kill(task_process.pid, signal.SIGKILL)  # as the out-of-memory killer does
        assert stack.api.wait_for_run("respaldo_fallas", run_id, timeout=120) == "failed"

    states = stack.api.task_states("respaldo_fallas", run_id)
    assert states[f"{BLOQUEADA['id']}.copia"] == "failed" and states["cierre"] == "success"
    [row] = rows_of(run_id, BLOQUEADA["id"], register_rows)
    assert row["status"] == "failed" and row["step"] == "copia" and row["try_number"] == 1
    assert "su proceso se detuvo de golpe" in row["error"]
    assert row["artifact_path"] is None and row["started_at"] is not None
    mail = smtp.wait_for(lambda m: run_id in m.get_body(("html",)).get_content())
    time.sleep(3)
    assert mails_of(smtp, run_id) == [mail]
    assert mail["Subject"] == (f"[respaldo] Falló el respaldo de «{BLOQUEADA['id']}» en el paso «copia» "
                               "(respaldo_fallas)")
    body = mail.get_body(("html",)).get_content()
    assert "quedó registrada como <b>fallida</b>" in body and "se borró lo que alcanzó a copiar" in body
    assert staging_of(stack.root, BLOQUEADA["id"]) == []
    assert verifies(earlier)


def test_a_dead_worker_ends_as_one_failed_row_and_one_email_even_if_airflow_reports_it_twice(
        stack, source_pg, smtp, register_rows):
    earlier = good_backup(stack, register_rows, 4)
    with table_locked(source_pg, "financiero", "comprobantes"):
        run_id = stack.api.trigger("respaldo_fallas", {"objetivos": [BLOQUEADA["id"]]},
                                   dt.datetime(2026, 4, 5, 4, 0, tzinfo=BOGOTA))
        dump = waiting_pg_dump(BLOQUEADA["id"])
        task_process = dump.parent()
        worker = task_process.parent()  # the executor's worker supervising the task
        for process in (worker, task_process, dump):
            os.kill(process.pid, signal.SIGKILL)  # the whole worker goes, as when a machine dies
        # Nobody reports the task now: the scheduler must notice the missing heartbeats by itself.
        assert stack.api.wait_for_run("respaldo_fallas", run_id, timeout=HEARTBEAT_TIMEOUT + 150) == "failed"

    mail = smtp.wait_for(lambda m: run_id in m.get_body(("html",)).get_content(), timeout=60)
    time.sleep(HEARTBEAT_TIMEOUT)  # room for Airflow's second report of the same failure
    assert mails_of(smtp, run_id) == [mail]
    body = mail.get_body(("html",)).get_content()
    assert "su proceso se detuvo de golpe" in body and "quedó registrada como <b>fallida</b>" in body
    assert "undefined" not in body
    [row] = rows_of(run_id, BLOQUEADA["id"], register_rows)
    assert row["status"] == "failed" and row["step"] == "copia"
    assert staging_of(stack.root, BLOQUEADA["id"]) == []
    assert verifies(earlier)
