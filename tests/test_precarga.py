"""Preloading: the scheduler (LocalExecutor) and each Celery worker import the task code once, before they fork.

The stacks' own checks (the log line before the LocalExecutor's workers start, before a Celery worker's pool
is ready) are in test_airflow_e2e.py and test_celery_e2e.py; here, which process preloads and what a failed
import does. The plugin is imported by a real Python process, as Airflow's plugins manager does.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from respaldo.precarga import LOG_LINE, MODULES, forks_task_processes, preload

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "respaldo_plugin.py"


@pytest.mark.parametrize(("argv", "executor", "start_method", "child", "expected"), [
    (["airflow", "scheduler"], "LocalExecutor", "fork", False, True),
    (["airflow", "scheduler"], "airflow.executors.local_executor.LocalExecutor", "fork", False, True),
    (["airflow", "scheduler"], "LocalExecutor,CeleryExecutor", "fork", False, True),
    (["airflow", "scheduler"], "CeleryExecutor", "fork", False, False),  # Celery's workers fork the tasks
    (["airflow", "scheduler"], "LocalExecutor", "forkserver", False, False),  # its workers inherit nothing
    (["airflow", "scheduler"], "LocalExecutor", "spawn", False, False),
    (["airflow", "scheduler"], "LocalExecutor", "fork", True, False),  # a worker or a task loading the plugin
    (["airflow", "dag-processor"], "LocalExecutor", "fork", False, False),  # would keep old code across edits
    (["airflow", "api-server"], "LocalExecutor", "fork", False, False),
    (["airflow", "triggerer"], "LocalExecutor", "fork", False, False),
    (["airflow"], "LocalExecutor", "fork", False, False),
])
def test_only_a_scheduler_that_forks_the_local_executors_workers_preloads(argv, executor, start_method, child,
                                                                          expected):
    assert forks_task_processes(argv, executor, start_method, child) is expected


def test_a_module_that_cannot_be_imported_is_named_in_a_warning_and_the_rest_are_preloaded(caplog):
    with caplog.at_level(logging.INFO, logger="respaldo.precarga"):
        loaded = preload(("json", "respaldo_no_existe.modulo", "respaldo.dag_factory"))
    assert loaded == ["json", "respaldo.dag_factory"]
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "respaldo_no_existe.modulo" in warning.getMessage()
    assert "cada tarea lo importará por su cuenta" in warning.getMessage()
    [info] = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert info.startswith(LOG_LINE) and "2 módulos" in info and "respaldo.dag_factory" in info


def _plugin_in_a_process(argv: list[str], executor: str, start_method: str = "") -> dict[str, bool]:
    """Import the plugin as Airflow's plugins manager would, in a process started as ``argv``."""
    probe = (
        "import importlib.util, json, sys\n"
        f"sys.argv = {argv!r}\n"
        f"spec = importlib.util.spec_from_file_location('respaldo_plugin', {str(PLUGIN)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        f"print(json.dumps({{m: m in sys.modules for m in {list(MODULES)!r}}}))\n"
    )
    env = {**os.environ, "AIRFLOW__CORE__EXECUTOR": executor}
    if start_method:  # as Airflow's scheduler command applies [core] mp_start_method before loading plugins
        probe = f"import multiprocessing; multiprocessing.set_start_method({start_method!r}, force=True)\n" + probe
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_plugin_preloads_every_module_in_the_scheduler_and_nothing_elsewhere():
    assert _plugin_in_a_process(["airflow", "scheduler"], "LocalExecutor") == dict.fromkeys(MODULES, True)
    # Airflow itself never imports respaldo's DAG factory; the providers' hooks may be imported by Airflow, so
    # only respaldo's own module says whether the plugin preloaded.
    for argv, executor, method in ((["airflow", "dag-processor"], "LocalExecutor", ""),
                                   (["airflow", "scheduler"], "CeleryExecutor", ""),
                                   (["airflow", "scheduler"], "LocalExecutor", "forkserver")):
        assert _plugin_in_a_process(argv, executor, method)["respaldo.dag_factory"] is False, (argv, executor)


def test_the_celery_module_preloads_on_import():
    probe = ("import json, sys; import respaldo.precarga_celery as p; "
             f"print(json.dumps([p.PRELOADED, [m in sys.modules for m in {list(MODULES)!r}]]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    preloaded, present = json.loads(out.stdout.strip().splitlines()[-1])
    assert preloaded == list(MODULES) and all(present)
