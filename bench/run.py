"""`make bench`: respaldo's speed, size and memory as ratios against the bare tools, in one run.

What it does (3 to 4 minutes on a 2-core machine; everything big it makes is removed at the end):

1. A throwaway PostgreSQL cluster (``devtools.servers.PostgresServer``) with two databases of
   realistic mixed data (``devtools.demo_data.financiero_sql``: numbers, Spanish text, jsonb), about
   1 GB and 100 MB, and a backup role with a password and ``pg_read_all_data``. The Airflow metadata
   DB and the FT-GTI-004 register are uniquely named databases on the machine's PostgreSQL
   (127.0.0.1:5432), dropped at the end.
2. Our four tasks end to end in one process (``bench.chain``) against ``pg_dump -Fc -Z0 | zstd -3
   -T0 > file``, on 1 GB; rounds interleaved with ``pg_dump > /dev/null`` and ``pg_dump -Fc -Z0 -f
   file``, the order rotated every round; medians.
3. Airflow's overhead per task: ``dag.test()`` of a one-target DAG (100 MB) in a subprocess, minus
   the same four tasks' work timed in process in the same rounds, divided by 4.
4. The time the source is busy in ``copia`` (its pg_dump, from start to exit) against
   ``pg_dump > /dev/null``.
5. Compressed size of our artifact against the shell pipeline's output.
6. Peak memory of the Python process running the chain (100 MB and 1 GB), and of pg_dump under it.
7. Parse time of ``dags/respaldo_dags.py`` with a 500-target inventory, beyond importing Airflow.
8. MariaDB (``bench.sources``): copia + verificar_fecha of a ~300 MB database against ``mariadb-dump |
   zstd -3 -T0 > file``, and the compressed sizes.
9. SSH pull (``bench.sources``): ``FilesSource.copy`` of a 1 GB file over OpenSSH against ``sftp -b``.
11. ``respaldo verificar`` (the whole command) of the 1 GB database's artifact against ``sha256sum``
    plus ``zstd -t`` of the same file, rounds interleaved.
10. The follow-up (``bench.seguimiento``): ``respaldo seguimiento`` over 500 targets with 45 and 90 days of
    history in the register; ``--only seguimiento`` runs this section alone (about a minute).
12. The register's pages (``bench.registro``, runs alone too): a 100,000-row register served by a real
    api-server; server time of the first page, a filtered month, other filters, and the month's XLSX and
    PDF sheet of 3,000 lines.
13. Restores and drills (``bench.simulacro``): what the snapshot-consistent row counts add to ``copia`` on the
    1 GB database, and ``respaldo restaurar`` of the 1 GB artifact against ``zstd -dc X | pg_restore -d NEW``;
    ``--only simulacro`` runs this section alone (its own cluster and 1 GB database, about 6 minutes) and
    writes its rows into ``bench/RESULTS.md`` under a heading of its own.
14. Retention (``bench.retencion``, runs alone too: ``python -m bench.retencion --write``): the dry run of
    ``respaldo retencion`` over a 50,000-row throwaway register, its work after imports and the whole command.
15. The external copy (``bench.externo``): ``copia_externa``'s ``SftpDestination.put`` of a 1 GB artifact to sshd on
    loopback (temporary name, sha256 on the server, renames) against ``sftp -b put``; ``python -m bench.externo
    --write`` runs it alone (about 2 minutes) and writes its own section of ``bench/RESULTS.md``.
16. Encryption with age (``bench.cifrado``): the four tasks on the 1 GB database encrypted against the same
    chain plain, memory flat, and ``age -d | zstd -t`` of the artifact; ``--only cifrado`` runs it alone.
17. A class of 100 small PostgreSQL targets on the real scheduler (``bench.clase``), LocalExecutor then Celery
    with two workers, against ``xargs -P 8`` of ``pg_dump | zstd``; the overhead per task instance and where
    it goes. Not part of the full run (7 minutes on an idle 2-core machine, 20 on a busy one): ``--only clase`` or
    ``python -m bench.clase`` runs it and writes its rows into ``bench/RESULTS.md`` under a heading of its own.

Working files live in ``bench/.work/`` (gitignored); the results also go to ``bench/RESULTS.md``.
``--rounds N`` takes more rounds on a noisy machine. The subprocesses inherit ``PYTHONPATH``, so
``PYTHONPATH=/some/copy make bench`` measures a modified copy of the ``respaldo`` package.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import cifrado, externo, registro, retencion, seguimiento, simulacro, sources  # noqa: E402
from bench.procs import Measured, measure  # noqa: E402
from devtools.demo_data import financiero_sql  # noqa: E402
from devtools.servers import PG_BIN, PostgresServer  # noqa: E402

WORK = ROOT / "bench" / ".work"
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
PY = sys.executable
SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432"
#: financiero_sql rows for ~1 GB and ~100 MB on disk (pg_database_size; ~360 bytes a row with indexes).
ROWS_BIG = 2_800_000
ROWS_SMALL = 260_000
BACKUP_ROLE = "respaldo_bench"
PARSE_TARGETS = 500
MB = 1_000_000
MIB = 1024 * 1024

GOALS = {
    "chain": 1.30,     # our four tasks vs pg_dump -Fc -Z0 | zstd -3 -T0 > file
    "overhead": 2.0,   # Airflow seconds per task
    "busy": 1.05,      # pg_dump inside copia vs pg_dump > /dev/null
    "size": 1.02,      # our artifact vs the pipeline's output
    "rss": 150 * MIB,  # peak RSS of the Python process running the chain, bytes
    "flat": 1.20,      # 1 GB peak / 100 MB peak
    "parse": 1.0,      # seconds beyond importing Airflow, 500 targets
    "verify": 1.2,     # respaldo verificar of the 1 GB artifact vs sha256sum + zstd -t
}

_started = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f}s] {message}", flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# --- the environment -------------------------------------------------------------------------------


@dataclass
class Bench:
    key: str
    run_dir: Path
    logs: Path
    server: PostgresServer | None = None
    metadata_db: str = ""
    register_db: str = ""
    backup_password: str = ""
    big_db: str = "financiero_1gb"
    small_db: str = "financiero_100mb"
    sizes: dict = field(default_factory=dict)
    background: list = field(default_factory=list)

    def airflow_env(self, inventory: Path | None = None) -> dict[str, str]:
        home = self.run_dir / "airflow"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AIRFLOW", "RESPALDO"))}
        env.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__UNIT_TEST_MODE="False",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.metadata_db}",
            AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
            AIRFLOW_CONN_RESPALDO_REGISTRO=json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": 5432,
                                                       "login": "postgres", "schema": self.register_db}),
        )
        if self.server:
            env["AIRFLOW_CONN_PG_BENCH"] = json.dumps({
                "conn_type": "postgres", "host": "127.0.0.1", "port": self.server.port, "login": BACKUP_ROLE,
                "password": self.backup_password, "schema": self.small_db})
        if inventory:
            env["RESPALDO_INVENTORY"] = str(inventory)
        return env

    def pg_env(self, database: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGHOST="127.0.0.1", PGPORT=str(self.server.port), PGUSER=BACKUP_ROLE,
                   PGPASSWORD=self.backup_password, PGDATABASE=database)
        return env


def _system_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{SYSTEM_PG}/postgres", autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)


def preflight() -> None:
    missing = [tool for tool in ("pg_dump", "pg_restore", "psql", "zstd", "bash") if not shutil.which(tool)]
    if not (PG_BIN / "initdb").exists():
        missing.append(str(PG_BIN / "initdb"))
    if missing:
        raise SystemExit(f"bench: missing {', '.join(missing)}; run `make install` first")
    try:
        _system_sql("SELECT 1")
    except Exception as err:  # noqa: BLE001 - any failure here means the same thing
        raise SystemExit(f"bench: the machine's PostgreSQL at 127.0.0.1:5432 does not answer ({err})") from err


def _postgres_can_use(path: Path) -> bool:
    """Whether the ``postgres`` user (the cluster runs as it when we are root) can reach ``path``."""
    if os.geteuid() != 0:
        return True
    probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(path)], check=False)
    return probe.returncode == 0


def start_cluster(bench: Bench) -> None:
    place = bench.run_dir / "pg"
    place.mkdir(parents=True, exist_ok=True)
    previous = tempfile.tempdir
    if _postgres_can_use(bench.run_dir):  # else PostgresServer's default, the system temp dir
        tempfile.tempdir = str(place)
    try:
        bench.server = PostgresServer().start()
    finally:
        tempfile.tempdir = previous


def load_data(bench: Bench, rows_big: int, rows_small: int) -> None:
    server = bench.server
    bench.backup_password = "Clave:Bench/" + uuid.uuid4().hex[:12]
    server.create_backup_role(BACKUP_ROLE, bench.backup_password)
    for name, rows in ((bench.small_db, rows_small), (bench.big_db, rows_big)):
        say(f"loading {name}: financiero_sql({rows:,}) ...")
        began = time.monotonic()
        server.psql(f"CREATE DATABASE {name}")
        server.psql(financiero_sql(rows), database=name)
        size = int(server.psql(f"SELECT pg_database_size('{name}')", database=name).stdout)
        bench.sizes[name] = {"rows": rows, "db_bytes": size}
        say(f"  {name}: {size / MB:,.0f} MB on disk, {rows:,} rows, loaded in {time.monotonic() - began:.0f} s")
        # Settle the new data before timing anything: VACUUM now rather than autovacuum in the middle of
        # a round, a checkpoint and a sync so no write-back of the load competes with the measurements,
        # and one untimed dump to warm the caches so round 1 is like the others.
        server.psql("VACUUM (FREEZE, ANALYZE)", database=name)
        server.psql("CHECKPOINT")
        os.sync()
        measure(["pg_dump"], env=bench.pg_env(name), stdout_path=os.devnull)


def start_migrate(bench: Bench) -> None:
    for name in (bench.metadata_db, bench.register_db):
        _system_sql(f'CREATE DATABASE "{name}"')
    airflow = str(Path(PY).parent / "airflow")
    log = open(bench.logs / "airflow-db-migrate.log", "wb")  # noqa: SIM115 - closed in finish_migrate
    proc = subprocess.Popen([airflow, "db", "migrate"], env=bench.airflow_env(), stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    bench.background.append((proc, log))


def finish_migrate(bench: Bench) -> None:
    for proc, log in bench.background:
        code = proc.wait()
        log.close()
        if code != 0:
            raise SystemExit(f"bench: `airflow db migrate` failed; see {bench.logs / 'airflow-db-migrate.log'}")
    bench.background.clear()


# --- the measured things ---------------------------------------------------------------------------


def _target(bench: Bench, database: str) -> dict:
    return {"id": "bench_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_bench",
            "database": database, "mechanism": "automatic", "responsible": "Banco de pruebas"}


def _clear_artifacts(root: Path) -> None:
    if root.exists():
        for path in list(root.rglob("*")):
            if path.is_file():
                path.unlink()
    os.sync()  # the next measurement starts with nothing of this one left to write back


def run_chain(bench: Bench, database: str, tag: str, keep: bool = False, extra: dict | None = None) -> dict:
    root = bench.run_dir / "root"
    settings = {"root": str(root), "timezone": "America/Bogota", "register_conn_id": "respaldo_registro",
                "dag_id": "respaldo_financiero"}
    out = bench.run_dir / f"chain-{tag}.json"
    target = {**_target(bench, database), **(extra or {})}
    measured = measure([PY, "-m", "bench.chain", json.dumps(target), json.dumps(settings),
                        f"bench__{tag}__{bench.key}", str(out)],
                       env=bench.airflow_env(), cwd=ROOT, log_path=bench.logs / f"chain-{tag}.log")
    result = json.loads(out.read_text())
    result["process_wall_s"] = measured.wall_s
    result["pg_dump_peak_kib"] = measured.peak_of("pg_dump")
    result["age_peak_kib"] = measured.peak_of("age")
    if not keep:
        _clear_artifacts(root)
    return result


def run_verify(bench: Bench, inventory: Path, artifact: Path, what: str, tag: str) -> dict:
    """``respaldo verificar`` of the kept 1 GB artifact (the whole command), or ``sha256sum`` + ``zstd -t``."""
    log = bench.logs / f"verificar-{what}-{tag}.log"
    if what == "ours":
        argv = [str(Path(PY).parent / "respaldo"), "verificar", str(inventory), "--objetivo", "bench_pg"]
        measured = measure(argv, env=bench.airflow_env(inventory), cwd=ROOT, log_path=log)
        if "1 íntegro(s), 0 dañado(s)." not in log.read_text(encoding="utf-8", errors="replace"):
            raise SystemExit(f"bench: respaldo verificar did not find the artifact intact; see {log}")
    else:
        measured = measure(["bash", "-c", f"sha256sum '{artifact}' > /dev/null && zstd -t -q '{artifact}'"],
                           env=dict(os.environ), log_path=log)
    os.sync()
    return {"wall_s": measured.wall_s, "peaks_kib": measured.peaks_kib}


def run_bare(bench: Bench, database: str, what: str, tag: str) -> dict:
    env = bench.pg_env(database)
    out_dir = bench.run_dir / "bare"
    out_dir.mkdir(exist_ok=True)
    log = bench.logs / f"bare-{what}-{tag}.log"
    out = None
    if what == "null":
        measured = measure(["pg_dump"], env=env, stdout_path=os.devnull, log_path=log)
    elif what == "file":
        out = out_dir / "custom.dump"
        measured = measure(["pg_dump", "-Fc", "-Z0", "-f", str(out)], env=env, log_path=log)
    elif what == "pipe":
        out = out_dir / "pipeline.dump.zst"
        measured = measure(["bash", "-c", f"set -o pipefail; pg_dump -Fc -Z0 | zstd -3 -T0 -q > '{out}'"],
                           env=env, log_path=log)
    else:
        raise ValueError(what)
    result = {"wall_s": measured.wall_s, "bytes": out.stat().st_size if out else None,
              "pg_dump_peak_kib": measured.peak_of("pg_dump"), "zstd_peak_kib": measured.peak_of("zstd")}
    _clear_artifacts(out_dir)
    return result


def run_dag(bench: Bench, inventory: Path, tag: str) -> dict:
    out = bench.run_dir / f"dagrun-{tag}.json"
    measured: Measured = measure([PY, "-m", "bench.dagrun", str(ROOT / "dags" / "respaldo_dags.py"),
                                  "respaldo_financiero", str(out)],
                                 env=bench.airflow_env(inventory), cwd=ROOT, log_path=bench.logs / f"dagrun-{tag}.log")
    result = json.loads(out.read_text())
    if result["state"] != "success":
        raise SystemExit(f"bench: the DAG run ended {result['state']}; see {bench.logs / f'dagrun-{tag}.log'}")
    result["process_wall_s"] = measured.wall_s
    _clear_artifacts(bench.run_dir / "root")
    return result


def run_parse(bench: Bench, inventory: Path, mode: str, tag: str) -> dict:
    out = bench.run_dir / f"parse-{mode}-{tag}.json"
    argv = [PY, "-m", "bench.parse", mode]
    if mode == "parse":
        argv.append(str(ROOT / "dags" / "respaldo_dags.py"))
    measured = measure([*argv, str(out)], env=bench.airflow_env(inventory), cwd=ROOT,
                       log_path=bench.logs / f"parse-{mode}-{tag}.log")
    result = json.loads(out.read_text())
    result["process_wall_s"] = measured.wall_s
    return result


_PLAIN = re.compile(r"^[A-Za-z_/][\w .,/()-]*$")


def _yaml_scalar(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    text = str(value)
    special = text.lower() in ("true", "false", "yes", "no", "on", "off", "null", "y", "n")
    if _PLAIN.match(text) and not special and not text.endswith(" "):
        return text
    return json.dumps(text, ensure_ascii=False)


def _yaml_block(value: dict, indent: int = 0) -> list[str]:
    lines = []
    pad = " " * indent
    for key, item in value.items():
        if isinstance(item, dict):
            lines += [f"{pad}{key}:", *_yaml_block(item, indent + 2)]
        elif isinstance(item, list) and item and isinstance(item[0], dict):
            lines.append(f"{pad}{key}:")
            for entry in item:
                block = _yaml_block(entry, indent + 4)
                lines += [f"{pad}  - {block[0].lstrip()}", *block[1:]]
        else:
            lines.append(f"{pad}{key}: {_yaml_scalar(item)}")
    return lines


def write_inventory(path: Path, root: Path, targets: list[dict]) -> Path:
    """An inventory in block YAML, as people write it (the parse time of YAML depends on its style)."""
    inventory = {
        "organization": "Gobernación del Putumayo (banco de pruebas)",
        "timezone": "America/Bogota",
        "storage": {"root": str(root)},
        "register": {"conn_id": "respaldo_registro"},
        "alerts": {"smtp_conn_id": "smtp_bench", "email": ["sistemas@example.gov.co"]},
        "frequencies": {
            "financiero": {"schedule": ["0 13 * * *", "0 22 * * *"], "retries": 0},
            "diario": {"schedule": "0 23 * * *", "retries": 0},
            "servidores_virtuales": {"every_days": 8, "at": "02:00", "retries": 0},
        },
        "targets": targets,
    }
    path.write_text("\n".join(_yaml_block(inventory)) + "\n", encoding="utf-8")
    return path


def many_targets(count: int) -> list[dict]:
    classes = ("financiero", "diario", "servidores_virtuales")
    return [{"id": f"base_{i:03d}", "kind": "postgres", "frequency": classes[i % 3], "mechanism": "automatic",
             "conn_id": f"pg_servidor_{i % 25:02d}", "database": f"sistema_{i:03d}",
             "responsible": "Profesional universitario área de sistemas",
             "description": f"Base de datos del sistema de información número {i}"} for i in range(count)]


# --- the report ------------------------------------------------------------------------------------


def _s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f} s"


def _mb(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.0f} MiB"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}x"


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def build_rows(data: dict) -> list[list[str]]:
    big, small = data["big"], data["small"]
    dump_bytes = median([r["artifact"]["original_bytes"] for r in big["chain"]])

    def rate(seconds):
        return f"{dump_bytes / MB / seconds:.0f} MB/s" if seconds else "n/a"

    chain = median([r["work_s"] for r in big["chain"]])
    pipe = median([r["wall_s"] for r in big["pipe"]])
    null = median([r["wall_s"] for r in big["null"]])
    dumpfile = median([r["wall_s"] for r in big["file"]])
    busy = median([r["pg_dump_s"] for r in big["chain"]])
    steps = {s: median([r["steps"][s] for r in big["chain"]]) for s in big["chain"][0]["steps"]}
    ours_size = median([r["artifact"]["compressed_bytes"] for r in big["chain"]])
    pipe_size = median([r["bytes"] for r in big["pipe"]])

    test_s = median([r["test_s"] for r in small["dag"]])
    small_work = median([r["work_s"] for r in small["chain"]])
    overhead = (test_s - small_work) / 4
    ti_sum = median([sum(t["duration_s"] or 0 for t in r["task_instances"]) for r in small["dag"]])
    dag_wall = median([r["process_wall_s"] for r in small["dag"]])

    rss_small = median([r["self_maxrss_kib"] for r in small["chain"]])
    rss_big = median([r["self_maxrss_kib"] for r in big["chain"]])
    after = big["chain"][0].get("maxrss_after_step_kib") or {}
    peak_step = next((step for step, kib in after.items() if kib == max(after.values())), "n/a")
    dump_small = median([r["pg_dump_peak_kib"] for r in small["chain"]])
    dump_big = median([r["pg_dump_peak_kib"] for r in big["chain"]])
    bare_dump = median([r["pg_dump_peak_kib"] for r in big["null"] + big["file"]])
    bare_zstd = median([r["zstd_peak_kib"] for r in big["pipe"]])
    ready = median([r["ready_maxrss_kib"] for r in small["chain"] + big["chain"]])

    parse_wall = median([r["process_wall_s"] for r in data["parse"]["parse"]])
    base_wall = median([r["process_wall_s"] for r in data["parse"]["baseline"]])
    dagbag_s = median([r["dagbag_s"] for r in data["parse"]["parse"]])
    parse_extra = parse_wall - base_wall
    shape = data["parse"]["parse"][0]

    verify_ours = median([r["wall_s"] for r in data["verificar"]["ours"]])
    verify_bare = median([r["wall_s"] for r in data["verificar"]["bare"]])
    verify_mb = data["verificar"]["artifact_bytes"] / MB

    step_text = " + ".join(f"{name.replace('verificar_fecha', 'verificar')} {steps[name]:.2f}" for name in steps) + " s"
    return [
        ["2", "4 tasks end to end, 1 GB (in one process)", f"{_s(chain)}, {rate(chain)}",
         f"pg_dump -Fc -Z0 | zstd -3 -T0 > f: {_s(pipe)}, {rate(pipe)}",
         _ratio(chain / pipe), f"<= {GOALS['chain']:.2f}x", _verdict(chain / pipe <= GOALS["chain"])],
        ["2", "  split by task (medians)", step_text, "", "", "", "info"],
        ["3", "Airflow overhead per task (dag.test, 100 MB)",
         f"{overhead:.2f} s = (dag.test {test_s:.2f} - work {small_work:.2f}) / 4",
         f"TI start..end sum {ti_sum:.2f} s; whole process {dag_wall:.2f} s", "",
         f"<= {GOALS['overhead']:.0f} s", _verdict(overhead <= GOALS["overhead"])],
        ["4", "source busy: pg_dump inside copia, 1 GB", f"{_s(busy)}, {rate(busy)}",
         f"pg_dump > /dev/null: {_s(null)}, {rate(null)}", _ratio(_div(busy, null)), f"<= {GOALS['busy']:.2f}x",
         _verdict(None if busy is None else busy / null <= GOALS["busy"])],
        ["4", "  context: bare pg_dump -Fc -Z0 -f file", f"(copia's pg_dump {_s(busy)})",
         f"{_s(dumpfile)}, {rate(dumpfile)}", _ratio(_div(busy, dumpfile)), "", "info"],
        ["5", "compressed size, 1 GB", f"{ours_size / MB:.1f} MB (dump {dump_bytes / MB:.0f} MB)",
         f"pipeline: {pipe_size / MB:.1f} MB", _ratio(ours_size / pipe_size), f"<= {GOALS['size']:.2f}x",
         _verdict(ours_size / pipe_size <= GOALS["size"])],
        ["6", "peak RSS, Python process, 100 MB", _mb(rss_small),
         f"before the work (Python + airflow.sdk): {_mb(ready)}", "", f"< {GOALS['rss'] // MIB} MiB",
         _verdict(rss_small * 1024 < GOALS["rss"])],
        ["6", "peak RSS, Python process, 1 GB", f"{_mb(rss_big)} (reached in {peak_step})",
         f"zstd -T0 in the pipeline: {_mb(bare_zstd)}", "", f"< {GOALS['rss'] // MIB} MiB",
         _verdict(rss_big * 1024 < GOALS["rss"])],
        ["6", "  flat: 1 GB peak / 100 MB peak", f"{_mb(rss_big)} / {_mb(rss_small)}", "",
         _ratio(rss_big / rss_small), f"<= {GOALS['flat']:.2f}x", _verdict(rss_big / rss_small <= GOALS["flat"])],
        ["6", "  pg_dump child of copia (100 MB / 1 GB)", f"{_mb(dump_small)} / {_mb(dump_big)}",
         f"bare pg_dump: {_mb(bare_dump)}", _ratio(_div(dump_big, bare_dump)),
         "", "info"],
        ["11", f"respaldo verificar, 1 GB database's artifact ({verify_mb:.0f} MB stored)",
         f"{_s(verify_ours)} (whole command, Airflow's import included)",
         f"sha256sum + zstd -t: {_s(verify_bare)}", _ratio(_div(verify_ours, verify_bare)),
         f"<= {GOALS['verify']:.2f}x", _verdict(None if verify_ours is None else verify_ours / verify_bare
                                                <= GOALS["verify"])],
        ["7", f"DAG file parse, {PARSE_TARGETS} targets, beyond import",
         f"{parse_extra:.2f} s ({shape['tasks']} tasks; DagBag alone {dagbag_s:.2f} s)",
         f"python + import Airflow: {base_wall:.2f} s", "", f"< {GOALS['parse']:.0f} s",
         _verdict(parse_extra < GOALS["parse"])],
    ]


HEADER = ["#", "measure", "ours", "bare tools / baseline (same run)", "ratio", "goal", "result"]


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def markdown_table(rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").strip()

    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    ram = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) / 1024 / 1024

    def version(argv):
        with contextlib.suppress(Exception):
            return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip().splitlines()[0]
        return "?"

    from importlib.metadata import version as pkg

    return {"cores": os.cpu_count(), "cpu": cpu, "ram_gib": round(ram), "pg_dump": version(["pg_dump", "--version"]),
            "zstd": "zstd " + version(["zstd", "--version"]).split(" v", 1)[-1].split(",")[0],
            "airflow": pkg("apache-airflow"),
            "zstandard": pkg("zstandard"), "python": platform.python_version()}


def rounds_text(data: dict) -> str:
    big, small, parse = data["big"], data["small"], data["parse"]

    def values(items, key):
        return ", ".join("n/a" if r.get(key) is None else f"{r[key]:.2f}" for r in items)

    return "\n".join([
        f"- 1 GB, our four tasks: {values(big['chain'], 'work_s')}; their pg_dump: {values(big['chain'], 'pg_dump_s')}",
        f"- 1 GB, pg_dump -Fc -Z0 | zstd -3 -T0 > file: {values(big['pipe'], 'wall_s')}",
        f"- 1 GB, pg_dump > /dev/null: {values(big['null'], 'wall_s')}; pg_dump -Fc -Z0 -f file: "
        f"{values(big['file'], 'wall_s')}",
        f"- 100 MB, dag.test(): {values(small['dag'], 'test_s')}; our four tasks in process: "
        f"{values(small['chain'], 'work_s')}",
        f"- parse process: {values(parse['parse'], 'process_wall_s')}; import-only process: "
        f"{values(parse['baseline'], 'process_wall_s')}",
        sources.rounds_text(data.get("sources") or {}),
        registro.rounds_text(data["registro"]),
        simulacro.rounds_text(data.get("simulacro") or {}),
        retencion.rounds_text(data.get("retencion") or {}),
        externo.rounds_text(data.get("externo") or {}),
    ])


def put_section(start: str, end: str, section: str) -> None:
    """Put a section a bench module wrote alone into RESULTS.md between its markers (replacing the last one)."""
    section = section.rstrip("\n") + "\n"
    text = RESULTS_MD.read_text(encoding="utf-8") if RESULTS_MD.exists() else ""
    if start in text:
        text = text[:text.index(start)] + section + text[text.index(end) + len(end):].removeprefix("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS_MD.write_text(text, encoding="utf-8")


def write_results(data: dict, rows: list[list[str]]) -> None:
    info = data["machine"]
    big, small = data["sizes"][data["big_db"]], data["sizes"][data["small_db"]]
    dump = median([r["artifact"]["original_bytes"] for r in data["big"]["chain"]])
    text = f"""# `make bench` results

Generated by `make bench` (`bench/run.py`) on {data['date']}; {data['rounds']} interleaved rounds, medians.

Machine: {info['cores']} cores ({info['cpu']}), {info['ram_gib']} GiB RAM; {info['pg_dump']}; {info['zstd']};
Airflow {info['airflow']}, zstandard {info['zstandard']}, Python {info['python']}. Load average before / after:
{data['load_before']} / {data['load_after']} (other jobs on the machine add noise).
Whole bench: {data['elapsed_s']:.0f} s.

Data (`devtools.demo_data.financiero_sql`: numeric, Spanish text, jsonb): {big['db_bytes'] / MB:,.0f} MB database
({big['rows']:,} rows; custom-format dump {dump / MB:,.0f} MB) and {small['db_bytes'] / MB:,.0f} MB
({small['rows']:,} rows). MB/s = dump bytes / wall time.
{sources.data_text(data.get("sources") or {})}
{registro.data_text(data["registro"])}

{markdown_table(rows)}

Every round, in seconds (the spread shows the machine's noise):
{rounds_text(data)}

How each number is taken:
- 2: the four callables of `respaldo.tasks` in one process (`bench/chain.py`, minimal context), clock started
  after `import airflow.sdk` (Airflow's cost, see 3 and 6); everything they do counts (dump, compression,
  verificar_fecha's checks, fsyncs, the write to the register DB). Bare: `bash -c "pg_dump -Fc -Z0 | zstd -3
  -T0 > file"`, no fsync.
- 3: `dag.test()` of a one-target DAG in a fresh subprocess (`bench/dagrun.py`), timed around the call (it
  syncs the DAG to the metadata DB, creates the run, runs the four tasks in process); minus the median of the
  same four tasks timed in process on the same database in the same rounds; divided by 4. The task
  instances' own start..end sum and the whole subprocess wall (interpreter, imports, parse) are beside it.
- 4: copia's pg_dump from spawn to exit (`waitid` without reaping), against `pg_dump > /dev/null` (plain format).
- 6: `ru_maxrss` (RUSAGE_SELF) of the chain process; children's peaks are `VmHWM` polled from /proc every
  50 ms (a child's `ru_maxrss` inherits the parent's at exec, so it cannot be used).
- 7: wall of a fresh `python -m bench.parse parse` (import Airflow, then `DagBag` on `dags/respaldo_dags.py`
  with a {PARSE_TARGETS}-target block-YAML inventory) minus a fresh `python -m bench.parse baseline` (the same
  imports only); both leave with `os._exit`, so interpreter teardown is in neither.
{sources.HOW}
{seguimiento.HOW}

{registro.HOW}
{simulacro.HOW}
{retencion.HOW}
{externo.HOW}
"""
    RESULTS_MD.write_text(text, encoding="utf-8")


# --- main ------------------------------------------------------------------------------------------


def cleanup(bench: Bench, keep: bool) -> None:
    for proc, log in bench.background:
        with contextlib.suppress(Exception):
            proc.terminate()
            proc.wait(timeout=30)
        log.close()
    if bench.server:
        with contextlib.suppress(Exception):
            bench.server.cleanup()
    for name in (bench.metadata_db, bench.register_db):
        if name:
            with contextlib.suppress(Exception):
                _system_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if not keep:
        shutil.rmtree(bench.run_dir, ignore_errors=True)


def _only_followup() -> int:
    """Section 10 alone: the follow-up against a register of its own."""
    run_dir = WORK / "seguimiento"
    shutil.rmtree(run_dir, ignore_errors=True)
    logs = WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    bench = Bench(key=uuid.uuid4().hex[:8], run_dir=run_dir, logs=logs, metadata_db="respaldo_bench_sin_metadatos")
    try:
        rows = seguimiento.build_rows(seguimiento.run(run_dir, logs, say, bench.airflow_env()))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(text_table(rows))
    return 0


ALONE_START = "<!-- bench.simulacro alone: start -->"
ALONE_END = "<!-- bench.simulacro alone: end -->"


def _alone(name: str) -> Bench:
    """The setting of a section run alone: a fresh work folder, no Airflow metadata DB, a register of its own."""
    preflight()
    key = uuid.uuid4().hex[:8]
    run_dir = WORK / name
    shutil.rmtree(run_dir, ignore_errors=True)
    logs = WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True)
    return Bench(key=key, run_dir=run_dir, logs=logs, metadata_db="respaldo_bench_sin_metadatos",
                 register_db=f"respaldo_bench_registro_{key}")


def _only_drills(rounds: int, rows_big: int) -> int:
    """Section 11 alone: its own cluster with the 1 GB database, its own register; rows into RESULTS.md."""
    bench = _alone("simulacro")
    run_dir, logs = bench.run_dir, bench.logs
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    try:
        _system_sql(f'CREATE DATABASE "{bench.register_db}"')
        start_cluster(bench)
        load_data(bench, rows_big, 1000)
        data = simulacro.run(bench, run_dir / "work", logs, rounds, say)
    finally:
        cleanup(bench, keep=False)
    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    rows = simulacro.build_rows(data)
    size = bench.sizes[bench.big_db]["db_bytes"] / MB
    print(text_table(rows))
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    block = "\n".join([
        ALONE_START,
        f"## Section 11 run alone (`python -m bench.run --only simulacro`), {when}",
        "",
        f"{rounds} interleaved rounds, medians; {size:,.0f} MB database ({rows_big:,} rows); load average before / "
        f"after: {load_before} / {load_after}.",
        "",
        markdown_table(rows),
        "",
        simulacro.rounds_text(data),
        "",
        simulacro.HOW,
        ALONE_END,
    ])
    put_section(ALONE_START, ALONE_END, block)
    (WORK / "results-simulacro.json").write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    return 0


CIFRADO_START = "<!-- bench.cifrado alone: start -->"
CIFRADO_END = "<!-- bench.cifrado alone: end -->"


def _only_encryption(rounds: int, rows_big: int, rows_small: int) -> int:
    """Section 16 alone: its own cluster with the 1 GB and 100 MB databases; rows into RESULTS.md."""
    bench = _alone("cifrado")
    run_dir = bench.run_dir
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    data: dict = {"plain": [], "sealed": [], "sealed_small": []}
    try:
        _system_sql(f'CREATE DATABASE "{bench.register_db}"')
        start_cluster(bench)
        load_data(bench, rows_big, rows_small)
        identity, public = cifrado.keypair(run_dir)
        sealed = cifrado.encryption(public)
        run_chain(bench, bench.small_db, "warmup", extra=sealed)  # untimed: files cached, the register created
        for r in range(rounds):
            for what in ("plain", "sealed") if r % 2 == 0 else ("sealed", "plain"):
                result = run_chain(bench, bench.big_db, f"cifrado-{what}-{r}",
                                   extra=sealed if what == "sealed" else None)
                say(f"1 GB round {r + 1}: {what} {result['work_s']:.2f} s, "
                    f"peak {result['self_maxrss_kib'] / 1024:.0f} MiB")
                data[what].append(result)
            data["sealed_small"].append(run_chain(bench, bench.small_db, f"cifrado-small-{r}", extra=sealed))
        kept = {what: run_chain(bench, bench.big_db, f"cifrado-{what}-kept", keep=True,
                                extra=sealed if what == "sealed" else None) for what in ("plain", "sealed")}
        data["read_back"] = {"plain": cifrado.read_back(Path(kept["plain"]["artifact"]["artifact_path"]), None),
                             "sealed": cifrado.read_back(Path(kept["sealed"]["artifact"]["artifact_path"]), identity)}
    finally:
        cleanup(bench, keep=False)
    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    rows = cifrado.build_rows(data)
    print(text_table(rows))
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    size = bench.sizes[bench.big_db]["db_bytes"] / MB
    put_section(CIFRADO_START, CIFRADO_END, "\n".join([
        CIFRADO_START,
        f"## Section 16 run alone: encryption with age (`python -m bench.run --only cifrado`), {when}",
        "",
        f"{rounds} interleaved rounds, medians; {size:,.0f} MB database ({rows_big:,} rows); load average before / "
        f"after: {load_before} / {load_after}.",
        "",
        markdown_table(rows),
        "",
        cifrado.rounds_text(data),
        "",
        cifrado.HOW,
        CIFRADO_END,
    ]))
    (WORK / "results-cifrado.json").write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows-big", type=int, default=ROWS_BIG)
    parser.add_argument("--rows-small", type=int, default=ROWS_SMALL)
    parser.add_argument("--rows-maria", type=int, default=sources.MARIA_ROWS)
    parser.add_argument("--keep", action="store_true", help="keep bench/.work/run (databases are dropped anyway)")
    parser.add_argument("--no-results-md", action="store_true", help="do not rewrite bench/RESULTS.md")
    parser.add_argument("--only", choices=["seguimiento", "simulacro", "cifrado", "clase"],
                        help="run one section alone (seguimiento: results not written; simulacro: its rows go to "
                             "bench/RESULTS.md under a heading of its own; clase: a 100-target class on the real "
                             "scheduler, LocalExecutor and Celery, rows into bench/RESULTS.md)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below
    if args.only == "seguimiento":
        return _only_followup()
    if args.only == "simulacro":
        return _only_drills(args.rounds, args.rows_big)
    if args.only == "cifrado":
        return _only_encryption(args.rounds, args.rows_big, args.rows_small)
    if args.only == "clase":
        from bench import clase

        return clase.main([])

    preflight()
    key = uuid.uuid4().hex[:8]
    run_dir = WORK / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # what an interrupted earlier run may have left
    bench = Bench(key=key, run_dir=run_dir, logs=WORK / "logs")
    run_dir.mkdir(parents=True)
    shutil.rmtree(bench.logs, ignore_errors=True)
    bench.logs.mkdir(parents=True)
    bench.metadata_db, bench.register_db = f"respaldo_bench_airflow_{key}", f"respaldo_bench_registro_{key}"
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    data: dict = {"date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "rounds": args.rounds,
                  "load_before": load_before, "big_db": bench.big_db, "small_db": bench.small_db}
    try:
        say(f"bench {key}: work files in {run_dir}, logs in {bench.logs}")
        start_migrate(bench)  # in the background while the data loads
        start_cluster(bench)
        say(f"throwaway PostgreSQL on 127.0.0.1:{bench.server.port}")
        load_data(bench, args.rows_big, args.rows_small)
        data["sizes"] = bench.sizes
        finish_migrate(bench)
        say("Airflow metadata DB migrated")

        run_chain(bench, bench.small_db, "warmup")  # untimed: Python's files cached, the register created
        say("warm-up run of our four tasks done")
        big: dict[str, list] = {"chain": [], "pipe": [], "null": [], "file": []}
        order = list(big)
        for r in range(args.rounds):
            for what in order[r % 4:] + order[:r % 4]:
                if what == "chain":
                    result = run_chain(bench, bench.big_db, f"1gb-{r}")
                    say(f"1 GB round {r + 1}: our 4 tasks {result['work_s']:.2f} s (pg_dump {_s(result['pg_dump_s'])}),"
                        f" peak {result['self_maxrss_kib'] / 1024:.0f} MiB")
                else:
                    result = run_bare(bench, bench.big_db, what, f"1gb-{r}")
                    say(f"1 GB round {r + 1}: bare {what} {result['wall_s']:.2f} s")
                big[what].append(result)
        data["big"] = big

        kept = run_chain(bench, bench.big_db, "verificar", keep=True)
        artifact = Path(kept["artifact"]["artifact_path"])
        verify_inventory = write_inventory(run_dir / "inventory-verificar.yaml", run_dir / "root",
                                           [_target(bench, bench.big_db)])
        verify: dict[str, list] = {"ours": [], "bare": []}
        for r in range(args.rounds):
            for what in ("ours", "bare") if r % 2 == 0 else ("bare", "ours"):
                result = run_verify(bench, verify_inventory, artifact, what, str(r))
                say(f"verificar round {r + 1}: {what} {result['wall_s']:.2f} s")
                verify[what].append(result)
        data["verificar"] = verify | {"artifact_bytes": artifact.stat().st_size}
        _clear_artifacts(run_dir / "root")

        inventory = write_inventory(run_dir / "inventory-1.yaml", run_dir / "root", [_target(bench, bench.small_db)])
        small: dict[str, list] = {"chain": [], "dag": []}
        for r in range(args.rounds):
            result = run_dag(bench, inventory, f"100mb-{r}")
            say(f"100 MB round {r + 1}: dag.test() {result['test_s']:.2f} s (process {result['process_wall_s']:.2f} s)")
            small["dag"].append(result)
            result = run_chain(bench, bench.small_db, f"100mb-{r}")
            say(f"100 MB round {r + 1}: our 4 tasks {result['work_s']:.2f} s, peak "
                f"{result['self_maxrss_kib'] / 1024:.0f} MiB")
            small["chain"].append(result)
        data["small"] = small

        many = write_inventory(run_dir / f"inventory-{PARSE_TARGETS}.yaml", run_dir / "root",
                               many_targets(PARSE_TARGETS))
        parse: dict[str, list] = {"baseline": [], "parse": []}
        for r in range(args.rounds):
            for mode in ("baseline", "parse") if r % 2 == 0 else ("parse", "baseline"):
                result = run_parse(bench, many, mode, str(r))
                parse[mode].append(result)
                say(f"parse round {r + 1}: {mode} process {result['process_wall_s']:.2f} s")
        data["parse"] = parse

        data["sources"] = sources.run(run_dir / "sources", bench.logs, args.rounds, say, args.rows_maria)
        data["seguimiento"] = seguimiento.run(run_dir / "seguimiento", bench.logs, say, bench.airflow_env())
        data["registro"] = registro.run(run_dir / "registro", bench.logs, max(args.rounds, 5), say)
        data["simulacro"] = simulacro.run(bench, run_dir / "simulacro", bench.logs, args.rounds, say)
        data["retencion"] = retencion.run(run_dir / "retencion", bench.logs, args.rounds, say)
        (run_dir / "externo").mkdir(parents=True, exist_ok=True)
        data["externo"] = externo.run(run_dir / "externo", bench.logs, args.rounds, say) if os.geteuid() == 0 else {}
    finally:
        say("cleaning up: throwaway cluster, bench databases, big files")
        cleanup(bench, args.keep)

    data["load_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    data["elapsed_s"] = time.monotonic() - _started
    data["machine"] = machine()
    (WORK / "results.json").write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    rows = (build_rows(data) + sources.build_rows(data["sources"]) + seguimiento.build_rows(data["seguimiento"])
            + registro.build_rows(data["registro"]) + simulacro.build_rows(data["simulacro"])
            + externo.build_rows(data.get("externo") or {})
            + retencion.build_rows(data["retencion"]))
    print()
    print(f"respaldo bench, {data['date']}, {data['machine']['cores']} cores, load {load_before} -> "
          f"{data['load_after']}; 1 GB = {bench.sizes[bench.big_db]['db_bytes'] / MB:,.0f} MB database; "
          f"medians of {args.rounds}")
    print(text_table(rows))
    if not args.no_results_md:
        write_results(data, rows)
        raw = (WORK / "results.json").relative_to(ROOT)
        print(f"\n(written to {RESULTS_MD.relative_to(ROOT)}; raw numbers in {raw})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
