"""A real Airflow 3 stack for the end-to-end tests and the demo: the same processes a deployment runs.

``airflow db migrate``, then ``api-server``, ``scheduler`` and ``dag-processor`` (and ``triggerer``
on request) as subprocesses of their own process groups, with LocalExecutor (or CeleryExecutor with a
real broker and ``airflow celery worker`` processes, one per queue), the simple auth manager,
PostgreSQL as the metadata database and settings that make parsing and scheduling react in seconds
instead of minutes. :class:`AirflowApi` drives it over the public REST API the way a user
or a script would.

Every process gets an environment built here from scratch (the caller's ``AIRFLOW*`` variables are
dropped), so a test session's own Airflow settings never leak into the stack.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devtools.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
FINISHED = {"success", "failed"}


#: The variable naming a Celery worker of the stack; :func:`worker_hostname` returns it.
WORKER_NAME = "RESPALDO_STACK_WORKER"


#: Celery imports these modules in each worker's main process at start-up, before it forks its pool.
CELERY_PRELOAD = '{"imports": ["respaldo.precarga_celery"]}'


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the stack's Celery workers: the worker's name, so the task instances
    it runs say which worker it was (all workers share this machine's real hostname)."""
    return os.environ[WORKER_NAME]


class StackError(RuntimeError):
    """The stack did not start, or did not reach the expected state in time."""


@dataclass
class AirflowApi:
    """A small client of Airflow's public REST API (``/api/v2``) with a JWT from ``/auth/token``."""

    base_url: str
    username: str
    password: str
    timeout: float = 30.0
    _client: httpx.Client | None = field(default=None, repr=False)

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            token = httpx.post(f"{self.base_url}/auth/token", json={"username": self.username,
                               "password": self.password}, timeout=self.timeout)
            token.raise_for_status()
            self._client = httpx.Client(base_url=f"{self.base_url}/api/v2", timeout=self.timeout,
                                        headers={"Authorization": f"Bearer {token.json()['access_token']}"})
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def request(self, method: str, path: str, *, expect: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        if response.status_code not in expect:
            raise StackError(f"{method} /api/v2{path} -> {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any], expect: tuple[int, ...] = (200,)) -> Any:
        return self.request("POST", path, json=body, expect=expect)

    # --- DAGs ---------------------------------------------------------------------------------

    def import_errors(self) -> list[dict[str, Any]]:
        return self.get("/importErrors", limit=100)["import_errors"]

    def wait_for_dag(self, dag_id: str, timeout: float = 90.0) -> dict[str, Any]:
        """Wait until the DAG processor has parsed ``dag_id`` and the API serves it."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.client.get(f"/dags/{dag_id}")
            if response.status_code == 200 and not response.json().get("is_stale"):
                details = self.client.get(f"/dags/{dag_id}/details")
                if details.status_code == 200:
                    return response.json()
            if time.monotonic() > deadline:
                errors = "; ".join(f"{e['filename']}: {e['stack_trace'][-500:]}" for e in self.import_errors())
                raise StackError(f"DAG {dag_id} not visible after {timeout:.0f} s; import errors: "
                                 f"{errors or 'none'}")
            time.sleep(1)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    # --- runs ---------------------------------------------------------------------------------

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None,
                logical_date: dt.datetime | None = None) -> str:
        """Trigger a run like the UI's Trigger button; ``logical_date=None`` is a run without a date."""
        body = {"conf": conf or {}, "logical_date": logical_date.isoformat() if logical_date else None}
        return self.post(f"/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")

    def runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        return self.get(f"/dags/{dag_id}/dagRuns", limit=100, **params)["dag_runs"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 180.0) -> str:
        """Wait until the run has finished; return its final state (``success`` or ``failed``)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.run(dag_id, run_id)["state"]
            if state in FINISHED:
                return state
            if time.monotonic() > deadline:
                raise StackError(f"run {dag_id}/{run_id} still {state} after {timeout:.0f} s; tasks: "
                                 f"{self.task_states(dag_id, run_id)}")
            time.sleep(1)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def task_tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of a task instance, the current one included, oldest first."""
        tries = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries")["task_instances"]
        return sorted(tries, key=lambda t: t["try_number"])

    def clear_tasks(self, dag_id: str, run_id: str, task_ids: list[str]) -> list[dict[str, Any]]:
        """Clear finished task instances of a run (the UI's Clear), so the scheduler runs them again."""
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": task_ids, "only_failed": False,
                "reset_dag_runs": True}
        return self.post(f"/dags/{dag_id}/clearTaskInstances", body)["task_instances"]

    def create_backfill(self, dag_id: str, from_date: dt.datetime, to_date: dt.datetime,
                        conf: dict[str, Any] | None = None, max_active_runs: int = 1) -> dict[str, Any]:
        body = {"dag_id": dag_id, "from_date": from_date.isoformat(), "to_date": to_date.isoformat(),
                "dag_run_conf": conf or {}, "max_active_runs": max_active_runs}
        return self.post("/backfills", body)


@dataclass
class AirflowStack:
    """Airflow's processes for one ``AIRFLOW_HOME`` and one metadata database.

    :param home: the ``AIRFLOW_HOME``; logs of every process go to ``<home>/<process>.log``.
    :param database_url: SQLAlchemy URL of the (PostgreSQL) metadata database; it must exist.
    :param extra_env: added to every process: connections (``AIRFLOW_CONN_*``), ``RESPALDO_INVENTORY``.
    :param port: the API server's port on 127.0.0.1; a free one when 0.
    :param triggerer: also run ``airflow triggerer`` (only deferrable tasks need it).
    :param schedule: whether the scheduler creates runs from the DAGs' schedules. Off, only triggered
        runs and backfills run: unpausing a DAG then starts nothing by itself (with ``catchup=False``
        Airflow otherwise runs the latest slot already due at once), which keeps tests deterministic.
    :param timezone: Airflow's ``[core] default_timezone`` (the zone of times given without one), like a
        deployment sets it to the inventory's; Airflow's default (UTC) when None.
    :param broker_url: a Celery broker (``redis://...``): the stack then runs the CeleryExecutor, and
        ``celery_workers`` its workers; without it, the LocalExecutor.
    :param celery_workers: worker name -> the queues it listens on (``"default"``, ``"sede_a,sede_b"``).
        Each is an ``airflow celery worker`` process whose task instances record the worker's name as
        their ``hostname`` (``[core] hostname_callable``), so a test can tell which worker ran what.
    :param parallelism: ``[core] parallelism``.
    :param worker_concurrency: each Celery worker's concurrency; ``parallelism`` when None.
    """

    home: Path
    database_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    dags_folder: Path = ROOT / "dags"
    plugins_folder: Path = ROOT / "plugins"
    triggerer: bool = False
    schedule: bool = True
    timezone: str | None = None
    broker_url: str | None = None
    celery_workers: dict[str, str] = field(default_factory=dict)
    parallelism: int = 8
    worker_concurrency: int | None = None
    username: str = "admin"
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    api: AirflowApi | None = None
    _fixed: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    @property
    def password(self) -> str:
        return json.loads(self.password_file.read_text())[self.username]

    def env(self) -> dict[str, str]:
        """The environment of every Airflow process of this stack."""
        if not self._fixed:
            self._fixed = {
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(64),
                # Each stack serves task logs on ports of its own, so two stacks can run side by side.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            }
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__DAGS_FOLDER=str(self.dags_folder),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(self.plugins_folder),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor" if self.broker_url else "LocalExecutor",
            AIRFLOW__CORE__PARALLELISM=str(self.parallelism),
            AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
                                        "SimpleAuthManager",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{self.username}:admin",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.base_url}/execution/",
            AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL="5",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=self.database_url,
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API__BASE_URL=self.base_url,
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=str(self.schedule),
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
            AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC="1",
            AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.5",
            AIRFLOW__SCHEDULER__PARSING_CLEANUP_INTERVAL="10",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="5",
            AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES="1",
            AIRFLOW__DAG_PROCESSOR__STALE_DAG_THRESHOLD="30",
            AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(self.home / "logs"),
            **self._fixed,
        )
        if self.timezone:
            env["AIRFLOW__CORE__DEFAULT_TIMEZONE"] = self.timezone
        if self.broker_url:
            env.update(
                AIRFLOW__CELERY__BROKER_URL=self.broker_url,
                AIRFLOW__CELERY__WORKER_CONCURRENCY=str(self.worker_concurrency or self.parallelism),
                # Longer than any task may last (the inventory's timeout_hours), as docs/deployment.md says.
                AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT=str(7 * 24 * 3600),
                # As docker-compose.yaml: each worker preloads what its task processes import (respaldo.precarga).
                AIRFLOW__CELERY__EXTRA_CELERY_CONFIG=CELERY_PRELOAD,
            )
        env.update(self.extra_env)
        return env

    def worker_env(self, name: str) -> dict[str, str]:
        """A Celery worker's environment: the stack's, its own log-server port, its name as the hostname."""
        return {
            **self.env(),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devtools.airflow_stack.worker_hostname",
            WORKER_NAME: name,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run an ``airflow`` CLI command against this stack."""
        return self.command([str(VENV_BIN / "airflow"), *args], timeout=timeout)

    def command(self, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
        """Run any command (``respaldo pools`` for example) with this stack's environment."""
        proc = subprocess.run(argv, env=self.env(), cwd=self.home, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise StackError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, timeout: float = 120.0) -> AirflowStack:
        """Migrate the metadata DB, start the processes and wait until the API answers with a token."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        try:
            self.airflow("db", "migrate")
            names = ["api-server", "scheduler", "dag-processor"] + (["triggerer"] if self.triggerer else [])
            for name in names:
                self._spawn(name, [name])
            for worker, queues in self.celery_workers.items():
                self._spawn(f"worker-{worker}", ["celery", "worker", "--queues", queues, "--celery-hostname",
                                                 f"{worker}@%h", "--concurrency",
                                                 str(self.worker_concurrency or self.parallelism)],
                            self.worker_env(worker))
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.home / f"{name}.log").open("ab")
        try:
            self.processes[name] = subprocess.Popen(
                [str(VENV_BIN / "airflow"), *args], env=env or self.env(), cwd=self.home, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise StackError(f"airflow {name} exited with {process.returncode}:\n{self.log_tail(name)}")
            with contextlib.suppress(httpx.HTTPError, OSError, KeyError, ValueError):
                if httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    self.api = AirflowApi(self.base_url, self.username, self.password)
                    self.api.client  # noqa: B018 - fetch the token now: fail here, not in a test
                    return
            if time.monotonic() > deadline:
                raise StackError(f"the API server did not answer on {self.base_url} after {timeout:.0f} s:\n"
                                 f"{self.log_tail('api-server')}")
            time.sleep(0.5)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.home / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def task_log_files(self) -> list[Path]:
        return sorted(p for p in (self.home / "logs").rglob("*") if p.is_file() and "dag_id=" in str(p))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every process this stack started, with its children (task runners, pg_dump...)."""
        import psutil

        if self.api is not None:
            self.api.close()
        family: list[psutil.Process] = []
        for process in self.processes.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                family += [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        # The scheduler first, so it starts nothing new while the others go down.
        for name in sorted(self.processes, key=lambda n: n != "scheduler"):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.processes[name].pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(family, timeout=timeout)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=10)
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.processes.clear()

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
