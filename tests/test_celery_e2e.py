"""More than one machine: CeleryExecutor with a real Redis broker and two real Celery workers on different queues.

The stack is the one of test_airflow_e2e.py (api-server, scheduler, dag-processor) with the CeleryExecutor
instead of the LocalExecutor, a ``redis-server`` of its own on a free loopback port, and two
``airflow celery worker`` processes: ``central`` listens on ``default``, ``pasto`` on ``sede_pasto``. Each
worker records its name as the ``hostname`` of the task instances it runs, so the REST API tells which
worker ran each step. Both workers share this machine's disk (the "shared storage" layout).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import RUN_KEY, _system_sql, write_inventory
from test_airflow_e2e import restore

from devtools.airflow_stack import VENV_BIN, AirflowStack
from devtools.demo_data import table_checksums_sql
from devtools.servers import redis_server
from respaldo.precarga import LOG_LINE, MODULES

STEPS = ("copia", "verificar_fecha", "comprimir", "registrar")
#: Target -> (its database, its queue, the worker that listens there).
TARGETS = {
    "sistema_central": ("sistema_informacion", "default", "central"),
    "sistema_pasto": ("sistema_informacion", "sede_pasto", "pasto"),
    "financiero_pasto": ("financiero", "sede_pasto", "pasto"),
}
WORKERS = {"central": "default", "pasto": "sede_pasto"}
METADATA_DB = f"respaldo_test_celery_airflow_{RUN_KEY}"


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory, source_pg, smtp):
    work = tmp_path_factory.mktemp("celery")
    root = work / "respaldos"
    root.mkdir()
    targets = [{"id": target, "kind": "postgres", "frequency": "sedes", "conn_id": "pg_fuente", "database": database,
                **({"queue": queue} if queue != "default" else {})}
               for target, (database, queue, _) in TARGETS.items()]
    inventory = write_inventory(work / "inventory.yaml", root, targets,
                                {"sedes": {"schedule": "0 23 * * *", "retries": 0}})
    connections = {key: value for key, value in os.environ.items() if key.startswith("AIRFLOW_CONN_")}
    _system_sql(f'CREATE DATABASE "{METADATA_DB}"')
    with redis_server() as redis:
        stack = AirflowStack(home=work / "airflow", database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/"
                             f"{METADATA_DB}", extra_env={**connections, "RESPALDO_INVENTORY": str(inventory)},
                             schedule=False, broker_url=redis.url, celery_workers=WORKERS, parallelism=4)
        try:
            stack.start()
            stack.command([str(VENV_BIN / "respaldo"), "pools", "--slots", "4"])
            stack.api.wait_for_dag("respaldo_sedes")
            stack.api.unpause("respaldo_sedes")
            yield stack, root
        finally:
            stack.stop()
            _system_sql(f'DROP DATABASE IF EXISTS "{METADATA_DB}" WITH (FORCE)')


def test_each_targets_four_steps_run_on_its_queues_worker_and_the_copies_restore(celery_stack, source_pg,
                                                                                register_rows):
    stack, root = celery_stack
    api = stack.api
    assert stack.env()["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    run_id = api.trigger("respaldo_sedes")
    state = api.wait_for_run("respaldo_sedes", run_id, timeout=300)

    instances = {ti["task_id"]: ti for ti in api.task_instances("respaldo_sedes", run_id)}
    assert state == "success", {task: ti["state"] for task, ti in instances.items()}
    ran = {task: (ti["state"], ti["queue"], ti["hostname"]) for task, ti in instances.items()}
    expected = {f"{target}.{step}": ("success", queue, worker)
                for target, (_, queue, worker) in TARGETS.items() for step in STEPS}
    expected |= {"preparar": ("success", "default", "central"), "cierre": ("success", "default", "central")}
    assert ran == expected

    for target, (database, _, _) in TARGETS.items():
        [row] = register_rows(target=target, run_id=run_id)
        assert row["status"] == "success" and row["error"] is None
        artifact = Path(row["artifact_path"])
        check = subprocess.run(["sha256sum", "-c", artifact.name + ".sha256"], cwd=artifact.parent,
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        restored = restore(source_pg, artifact)
        try:
            original = source_pg.psql(table_checksums_sql(), database=database).stdout
            assert original.count("|") >= 2 and ":" in original
            assert source_pg.psql(table_checksums_sql(), database=restored).stdout == original
        finally:
            source_pg.psql(f"DROP DATABASE {restored}")
    left = sorted(p for p in (root / ".staging").rglob("*") if p.is_file())
    assert left == [], f"staging left behind: {left}"


def test_each_worker_preloads_the_task_code_before_it_forks_its_pool(celery_stack):
    """Celery imports ``respaldo.precarga_celery`` (its ``imports``, from ``[celery] extra_celery_config``) in
    the worker's main process before the pool starts: pool processes and their task processes inherit it."""
    stack, _ = celery_stack
    for worker in WORKERS:
        lines = (stack.home / f"worker-{worker}.log").read_text(encoding="utf-8", errors="replace").splitlines()
        preloaded = [i for i, line in enumerate(lines) if LOG_LINE in line]
        ready = [i for i, line in enumerate(lines) if f"{worker}@" in line and "ready." in line]
        assert len(preloaded) == 1 and ready, (worker, lines[-40:])
        assert preloaded[0] < ready[0] and f"{len(MODULES)} módulos" in lines[preloaded[0]]
    assert LOG_LINE not in (stack.home / "scheduler.log").read_text(encoding="utf-8", errors="replace")
