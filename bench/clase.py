"""Bench section 17: a class of many small PostgreSQL targets on the real scheduler, LocalExecutor then Celery.

    python -m bench.clase [--targets 100] [--no-results-md]

What it measures, all in one run on this machine:

- the wall time of one run of a class of N small targets (``respaldo_clase``: ``preparar``, N x the four steps,
  ``cierre``) on the real stack (api-server, scheduler, dag-processor; ``devtools.airflow_stack``), first with
  the LocalExecutor (parallelism 8), then with the CeleryExecutor, a real ``redis-server`` and two
  ``airflow celery worker`` processes of concurrency 4 (half of the targets on queue ``default``, half on
  ``sede_b``); the same inventory, the same pools (8 slots);
- beside it, the same N dumps done by the bare tools: ``pg_dump -Fc -Z0 | zstd -3`` run by ``xargs -P 8``;
- each task instance's duration as Airflow recorded it (start..end) against the work inside it: the four
  callables of one target run in one process (``bench.chain``, the median of 3 targets), so the overhead per
  task instance is (mean task-instance duration) - (the work of a target / 4);
- where a task's start-up goes: the CPU time each component (scheduler with its workers and task processes,
  Celery workers, api-server, dag-processor) spent per task instance; ``python -X importtime`` of what
  ``respaldo.precarga`` preloads; and a task process's parse of the N-target DAG file (one step, as Airflow's
  task runner parses it) with and without preloading.

The N databases are copies (``CREATE DATABASE ... TEMPLATE``) of one small database of
``devtools.demo_data.financiero_sql`` rows on a throwaway PostgreSQL cluster. The metadata and register
databases are uniquely named on the machine's PostgreSQL and dropped at the end. The load average before
and after is recorded: the machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.airflow_stack import VENV_BIN, AirflowStack  # noqa: E402
from devtools.demo_data import financiero_sql  # noqa: E402
from devtools.servers import PostgresServer, redis_server  # noqa: E402

WORK = ROOT / "bench" / ".work" / "clase"
SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432"
PY = sys.executable
ROWS = 2000
ROLE = "respaldo_bench"
PARALLELISM = 8
GOAL_WALL_S = 300.0
GOAL_OVERHEAD_S = 1.0
START, END = "<!-- bench.clase: start -->", "<!-- bench.clase: end -->"
_began = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _began:6.1f}s] {message}", flush=True)


def _system_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{SYSTEM_PG}/postgres", autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def databases(count: int) -> list[str]:
    return [f"sistema_{i:03d}" for i in range(count)]


def prepare_sources(server: PostgresServer, count: int, password: str) -> None:
    server.create_backup_role(ROLE, password)
    server.psql("CREATE DATABASE plantilla")
    server.psql(financiero_sql(ROWS), database="plantilla")
    for name in databases(count):
        server.psql(f"CREATE DATABASE {name} TEMPLATE plantilla")


def write_inventory(path: Path, root: Path, count: int) -> Path:
    """Block YAML, as people write it (a flow-style file parses several times slower)."""
    from bench.run import _yaml_block

    targets = [{"id": name, "kind": "postgres", "frequency": "clase", "mechanism": "automatic", "conn_id": "pg_bench",
                "database": name, "responsible": "Profesional universitario área de sistemas",
                **({"queue": "sede_b"} if index % 2 else {})}
               for index, name in enumerate(databases(count))]
    inventory = {
        "organization": "Gobernación del Putumayo (banco de pruebas)", "timezone": "America/Bogota",
        "storage": {"root": str(root)}, "register": {"conn_id": "respaldo_registro"},
        "alerts": {"smtp_conn_id": "smtp_bench", "email": ["sistemas@example.gov.co"]},
        "frequencies": {"clase": {"schedule": "0 23 * * *", "retries": 0}},
        "targets": targets,
    }
    path.write_text("\n".join(_yaml_block(inventory)) + "\n", encoding="utf-8")
    return path


def _seconds(start: str | None, end: str | None) -> float | None:
    if not (start and end):
        return None
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def cpu_seconds(stack: AirflowStack) -> dict[str, float]:
    """CPU time (user + system) each component of the stack has used so far, its descendants included.

    A component's live descendants (the LocalExecutor's workers, Celery's pool processes, the api-server's
    workers) are read one by one; those already gone (every task process) are in their parent's
    ``children_*`` times.
    """
    import psutil

    used = {}
    for name, process in stack.processes.items():
        total = 0.0
        try:
            root = psutil.Process(process.pid)
            for each in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = each.cpu_times()
                    total += times.user + times.system + times.children_user + times.children_system
        except psutil.NoSuchProcess:
            continue
        used[name] = total
    return used


def run_class(stack: AirflowStack, count: int, timeout: float) -> dict:
    """Trigger ``respaldo_clase`` once and read what Airflow recorded of it."""
    api = stack.api
    api.wait_for_dag("respaldo_clase", timeout=300)
    api.unpause("respaldo_clase")
    cpu_before = cpu_seconds(stack)
    began = time.monotonic()
    run_id = api.trigger("respaldo_clase")
    state = api.wait_for_run("respaldo_clase", run_id, timeout=timeout)
    wall = time.monotonic() - began
    cpu_after = cpu_seconds(stack)
    run = api.run("respaldo_clase", run_id)
    instances = []
    offset = 0
    while True:
        page = api.get(f"/dags/respaldo_clase/dagRuns/{run_id}/taskInstances", limit=100, offset=offset)
        instances += page["task_instances"]
        offset += 100
        if offset >= page["total_entries"]:
            break
    steps = [ti for ti in instances if "." in ti["task_id"]]
    durations = [ti["duration"] for ti in steps if ti["duration"] is not None]
    waits = [_seconds(ti["queued_when"], ti["start_date"]) for ti in steps]
    hosts = sorted({ti["hostname"] for ti in steps})
    return {
        "state": state, "wall_s": wall, "run_s": _seconds(run["start_date"], run["end_date"]),
        "task_instances": len(steps), "failed": sorted(ti["task_id"] for ti in steps if ti["state"] != "success"),
        "ti_mean_s": statistics.fmean(durations) if durations else None,
        "ti_median_s": statistics.median(durations) if durations else None,
        "ti_sum_s": sum(durations),
        "queued_to_start_median_s": statistics.median([w for w in waits if w is not None] or [0]),
        "by_step": {step: statistics.fmean([ti["duration"] for ti in steps if ti["task_id"].endswith("." + step)
                                            and ti["duration"] is not None] or [0])
                    for step in ("copia", "verificar_fecha", "comprimir", "registrar")},
        "queues": sorted({ti["queue"] for ti in steps}), "hostnames": hosts,
        "parse_in_task_mean_s": _parse_in_tasks(stack.home / "logs"),
        # CPU seconds per task instance, by component (the scheduler's includes its executor's workers and
        # every task process they ran; a Celery worker's, its pool and task processes).
        "cpu_per_ti_s": {name: (cpu_after[name] - cpu_before.get(name, 0.0)) / max(len(steps), 1)
                         for name in cpu_after},
    }


def _parse_in_tasks(logs: Path) -> float | None:
    """Mean time each step's task process spent parsing the DAG file, from Airflow's own log line."""
    parses = []
    for path in logs.glob("dag_id=respaldo_clase/*/task_id=*.*/attempt=*.log"):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"Worker startup parse complete"' in line:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    parses.append(json.loads(line)["dag_file_parse_ms"] / 1000)
                break
    return statistics.fmean(parses) if parses else None


def shell_loop(server: PostgresServer, password: str, count: int, out: Path) -> float:
    """The same dumps with the bare tools, 8 at a time."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, "PGHOST": "127.0.0.1",
           "PGPORT": str(server.port), "PGUSER": ROLE, "PGPASSWORD": password}
    names = "\n".join(databases(count)) + "\n"
    began = time.monotonic()
    subprocess.run(["bash", "-c", f"xargs -P {PARALLELISM} -I{{}} bash -c "
                    f"'set -o pipefail; pg_dump -Fc -Z0 -d {{}} | zstd -3 -q -o {out}/{{}}.dump.zst'"],
                   input=names, text=True, env=env, check=True)
    return time.monotonic() - began


def work_per_target(stack: AirflowStack, root: Path, logs: Path) -> dict:
    """The four callables of one target in one process (``bench.chain``), 3 targets, medians."""
    from respaldo.inventory import load_inventory

    inventory = load_inventory(stack.extra_env["RESPALDO_INVENTORY"])
    settings = inventory.task_settings("respaldo_clase")
    runs = []
    for name in databases(min(3, len(inventory.targets))):
        target = inventory.target(name).model_dump(mode="json")
        index = name
        out = logs / f"chain-{index}.json"
        run_id = f"bench_chain__{uuid.uuid4().hex[:8]}"
        subprocess.run([PY, "-m", "bench.chain", json.dumps(target), json.dumps(settings), run_id, str(out)],
                       env=stack.env(), cwd=ROOT, check=True, capture_output=True)
        runs.append(json.loads(out.read_text()))
    steps = {name: statistics.median([r["steps"][name] for r in runs]) for name in runs[0]["steps"]}
    return {"work_s": statistics.median([r["work_s"] for r in runs]), "steps": steps}


def startup(stack: AirflowStack, logs: Path) -> dict:
    """Where a task process's start-up goes: imports of a step, and the parse of the class's DAG file."""
    env = stack.env()
    proc = subprocess.run([PY, "-X", "importtime", "-c", "import airflow.sdk; import respaldo.precarga_celery"],
                          env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if found:
            rows.append((int(found[2]), len(found[3]), found[4]))
    top = {name: us / 1e6 for us, depth, name in rows if depth <= 2 and us >= 10_000}
    timings = {"cold": [], "preloaded": []}
    for _ in range(3):
        for variant in timings:
            printed = subprocess.run([PY, "-c", _PARSE_PROBE, variant], env={**env, **TASK_PARSING_CONTEXT},
                                     cwd=ROOT, capture_output=True, text=True, check=True).stdout
            out = next(line for line in printed.splitlines() if line.startswith("RESULT ")).split()[1:]
            timings[variant].append([float(x) for x in out[:3]] + [int(out[3])])
    (logs / "importtime.txt").write_text(proc.stderr, encoding="utf-8")
    return {
        "import_sdk_s": statistics.median(t[0] for t in timings["cold"]),
        "preload_s": statistics.median(t[1] for t in timings["preloaded"]),
        "parse_task_cold_s": statistics.median(t[2] for t in timings["cold"]),
        "parse_task_preloaded_s": statistics.median(t[2] for t in timings["preloaded"]),
        "tasks_in_dag": timings["cold"][0][3],
        "top_imports_s": dict(sorted(top.items(), key=lambda kv: -kv[1])[:8]),
    }


#: The parsing context Airflow gives a task process that runs one step (``respaldo.dag_factory`` reads it).
TASK_PARSING_CONTEXT = {"_AIRFLOW_PARSING_CONTEXT_DAG_ID": "respaldo_clase",
                        "_AIRFLOW_PARSING_CONTEXT_TASK_ID": "sistema_000.copia"}
#: A task process's parse of the DAG file, in a process that has what a LocalExecutor worker has (Airflow's
#: task runner imported, the scheduler's objects frozen before the fork) and, for "preloaded", what the
#: scheduler preloads (respaldo.precarga). Parsed as the task runner does (BundleDagBag).
_PARSE_PROBE = f"""
import gc, sys, time
t0 = time.perf_counter()
import airflow.sdk
from airflow.sdk.execution_time import supervisor, task_runner
from airflow.dag_processing.dagbag import BundleDagBag
t1 = time.perf_counter()
if sys.argv[1] == "preloaded":
    from respaldo.precarga import preload
    preload()
t2 = time.perf_counter()
gc.freeze()
t3 = time.perf_counter()
bag = BundleDagBag(dag_folder={str(ROOT / "dags" / "respaldo_dags.py")!r}, safe_mode=False, load_op_links=False,
                   bundle_path={str(ROOT / "dags")!r}, bundle_name="dags-folder")
t4 = time.perf_counter()
print("RESULT", t1 - t0, t2 - t1, t4 - t3, len(bag.dags["respaldo_clase"].tasks))
"""


def measure(count: int, executors: tuple[str, ...] = ("local", "celery")) -> dict:
    key = uuid.uuid4().hex[:8]
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    logs = WORK / "logs"
    logs.mkdir()
    data: dict = {"targets": count, "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                  "load_before": _load(), "cores": os.cpu_count()}
    password = "Clave:Bench/" + key
    server = PostgresServer().start()
    register_db, metadata_dbs = f"respaldo_bench_registro_{key}", []
    try:
        _system_sql(f'CREATE DATABASE "{register_db}"')
        say(f"{count} small databases on 127.0.0.1:{server.port} ...")
        prepare_sources(server, count, password)
        size = int(server.psql("SELECT pg_database_size('plantilla')").stdout)
        data["db_bytes"] = size
        connections = {
            "AIRFLOW_CONN_PG_BENCH": json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": server.port,
                                                 "login": ROLE, "password": password, "schema": "plantilla"}),
            "AIRFLOW_CONN_RESPALDO_REGISTRO": json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": 5432,
                                                          "login": "postgres", "schema": register_db}),
            "AIRFLOW_CONN_SMTP_BENCH": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": 1,
                                                   "extra": {"disable_ssl": True, "disable_tls": True}}),
        }
        say("shell loop: pg_dump -Fc -Z0 | zstd -3, xargs -P 8 ...")
        data["shell_s"] = [shell_loop(server, password, count, WORK / f"shell{i}") for i in range(2)]
        for executor in executors:
            metadata_db = f"respaldo_bench_clase_{executor}_{key}"
            metadata_dbs.append(metadata_db)
            _system_sql(f'CREATE DATABASE "{metadata_db}"')
            root = WORK / f"respaldos-{executor}"
            root.mkdir()
            inventory = write_inventory(WORK / f"inventory-{executor}.yaml", root, count)
            extra = {**connections, "RESPALDO_INVENTORY": str(inventory)}
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{metadata_db}"
            home = WORK / f"airflow-{executor}"
            with redis_server() if executor == "celery" else _nothing() as redis:
                stack = AirflowStack(home=home, database_url=url, extra_env=extra, schedule=False,
                                     parallelism=PARALLELISM)
                if redis:
                    stack.broker_url = redis.url
                    stack.celery_workers = {"trabajador_a": "default", "trabajador_b": "sede_b"}
                    stack.worker_concurrency = PARALLELISM // 2  # 8 slots in all, as the LocalExecutor's
                say(f"{executor}: starting the stack ...")
                try:
                    stack.start(timeout=300)
                    stack.command([str(VENV_BIN / "respaldo"), "pools", "--slots", str(PARALLELISM)])
                    data["load_" + executor] = _load()
                    say(f"{executor}: running the class ...")
                    data[executor] = run_class(stack, count, timeout=1800)
                    say(f"{executor}: {json.dumps(data[executor])[:300]}")
                    if executor == "local":
                        data["work"] = work_per_target(stack, root, logs)
                        data["startup"] = startup(stack, logs)
                finally:
                    stack.stop()
                    for name in ("scheduler", "api-server", "dag-processor"):
                        log = home / f"{name}.log"
                        if log.exists():
                            shutil.copy(log, logs / f"{executor}-{name}.log")
        data["load_after"] = _load()
    finally:
        server.cleanup()
        for name in [register_db, *metadata_dbs]:
            try:
                _system_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as err:  # noqa: BLE001 - cleanup goes on
                say(f"could not drop {name}: {err}")
    return data


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def rows(data: dict) -> list[list[str]]:
    count = data["targets"]
    shell = min(data["shell_s"])
    work = data["work"]["work_s"]
    out = []
    for executor, label in (("local", "LocalExecutor, parallelism 8"), ("celery", "Celery, Redis, 2 workers x 4")):
        run = data[executor]
        overhead = run["ti_mean_s"] - work / 4
        out.append(["17", f"class of {count} small PostgreSQL targets, {label}",
                    f"{run['wall_s']:.1f} s ({run['state']}, {run['task_instances']} task instances)",
                    f"pg_dump -Fc -Z0 | zstd -3, xargs -P 8: {shell:.1f} s", f"{run['wall_s'] / shell:.1f}x",
                    f"< {GOAL_WALL_S:.0f} s", "PASS" if run["wall_s"] < GOAL_WALL_S and run["state"] == "success"
                    else "MISS"])
        parse = run.get("parse_in_task_mean_s")
        out.append(["17", f"overhead per task instance, {label}",
                    f"{overhead:.2f} s = TI mean {run['ti_mean_s']:.2f} - work {work:.2f} / 4"
                    + (f"; of which parsing the DAG file in the task process {parse:.2f} s" if parse else ""),
                    "by step: " + ", ".join(f"{k} {v:.2f}" for k, v in run["by_step"].items()), "",
                    f"<= {GOAL_OVERHEAD_S:.0f} s", "PASS" if overhead <= GOAL_OVERHEAD_S else "MISS"])
    start = data["startup"]
    out.append(["17", "a task process's parse of the DAG file (one step of one target), measured alone",
                f"preloaded: {start['parse_task_preloaded_s']:.3f} s ({start['tasks_in_dag']} tasks built)",
                f"without preloading: {start['parse_task_cold_s']:.3f} s",
                f"{start['parse_task_preloaded_s'] / start['parse_task_cold_s']:.2f}x", "",
                f"info (preloading itself: {start['preload_s']:.2f} s, once per scheduler or Celery worker)"])
    return out


def markdown(data: dict) -> str:
    from bench.run import markdown_table

    shell = ", ".join(f"{s:.2f}" for s in data["shell_s"])
    top = ", ".join(f"{k} {v:.2f} s" for k, v in data["startup"]["top_imports_s"].items())
    lines = [
        START,
        f"## Section 17: a class of {data['targets']} targets on the real scheduler (`python -m bench.clase`), "
        f"{data['date']}",
        "",
        f"{data['cores']} cores. Load average before: {data['load_before']}; "
        f"when the LocalExecutor run started: {data.get('load_local')}; when the Celery run started: "
        f"{data.get('load_celery')}; after: {data['load_after']}. Each database: {ROWS:,} rows of "
        f"`financiero_sql`, {data['db_bytes'] / 1e6:.1f} MB on disk.",
        "",
        markdown_table(rows(data)),
        "",
        f"- Shell loop, each round: {shell} s. Work of one target's four steps in one process (`bench.chain`, "
        f"median of 3): {data['work']['work_s']:.2f} s ("
        + ", ".join(f"{k} {v:.2f}" for k, v in data["work"]["steps"].items()) + ").",
        f"- Median wait from queued to running: LocalExecutor {data['local']['queued_to_start_median_s']:.1f} s, "
        f"Celery {data['celery']['queued_to_start_median_s']:.1f} s. Celery workers seen as task hostnames: "
        f"{', '.join(data['celery']['hostnames'])}; queues: {', '.join(data['celery']['queues'])}.",
        "- CPU seconds per task instance, by component (a component's descendants included: the scheduler's "
        "LocalExecutor workers and their task processes, a Celery worker's pool and its task processes): "
        + "; ".join(f"{label}: " + ", ".join(f"{name} {value:.3f}" for name, value in data[ex]["cpu_per_ti_s"].items())
                    for ex, label in (("local", "LocalExecutor"), ("celery", "Celery"))) + ".",
        f"- What preloading saves each task process (`python -X importtime -c 'import airflow.sdk; import "
        f"respaldo.precarga_celery'`, cumulative): {top}.",
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.clase", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--no-results-md", action="store_true")
    parser.add_argument("--only", choices=("local", "celery"), help="one executor only (implies --no-results-md)")
    parser.add_argument("--keep", action="store_true", help=f"keep {WORK} (task logs) for a look afterwards")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup (clusters, databases)
    data = measure(args.targets, (args.only,) if args.only else ("local", "celery"))
    (WORK.parent / "results-clase.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    if args.only:
        print(json.dumps(data, indent=1))
    else:
        block = markdown(data)
        print(block)
    if not (args.no_results_md or args.only):
        from bench.run import put_section

        put_section(START, END, block)
    if not args.keep:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
