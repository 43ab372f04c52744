"""Bench section 14: ``respaldo retencion`` (the dry run) over a register of 50,000 rows.

    python -m bench.retencion [--rounds N] [--write]   # alone; --write puts its table into bench/RESULTS.md
    python -m bench.retencion plan INVENTORY OUT_JSON  # helper: time the dry run in a fresh process

A throwaway register (a uniquely named database on the machine's PostgreSQL, dropped at the end) gets
100 targets x 500 daily copies (about 97 % success with its artifact on disk, 2 % failed, 1 % missing)
and an approved drill for every tenth target; the artifacts are empty files in a temporary folder (the
dry run only asks whether they exist). Every target's class keeps ``keep_last 7, keep_daily 30,
keep_weekly 8, keep_monthly 12, keep_yearly 3``.

Measured, rounds interleaved: the dry run's own work in a fresh process after its imports (inventory,
register query, a stat of every artifact, the plan, the report rendered), the whole command
``respaldo retencion INVENTORY > file`` as a person runs it (interpreter and Airflow's imports
included), and beside them the import-only process and the register query alone through psycopg.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432"
TARGETS = 100
DAYS = 500
LAST_DAY = dt.date(2026, 11, 29)
GOAL_S = 2.0
RETENTION = {"keep_last": 7, "keep_daily": 30, "keep_weekly": 8, "keep_monthly": 12, "keep_yearly": 3}
SECTION_START = "<!-- bench.retencion -->"
SECTION_END = "<!-- /bench.retencion -->"


def _system_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{SYSTEM_PG}/postgres", autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)


def _inventory(path: Path, root: Path) -> Path:
    targets = [{"id": f"objetivo_{i:03d}", "kind": "files", "frequency": "diario", "mechanism": "automatic",
                "path": f"/srv/objetivo_{i:03d}", "responsible": "Profesional universitario área de sistemas"}
               for i in range(TARGETS)]
    inventory = {"organization": "Gobernación del Putumayo (bench)", "timezone": "America/Bogota",
                 "storage": {"root": str(root)}, "alerts": {"email": ["sistemas@example.gov.co"]},
                 "frequencies": {"diario": {"schedule": "0 23 * * *", "retention": RETENTION}}, "targets": targets}
    path.write_text(json.dumps(inventory, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def fill(database: str, root: Path) -> dict:
    """The register's rows (COPY) and every success's artifact as an empty file."""
    import psycopg

    from respaldo.register.esquema import migrate

    buffer = io.StringIO()
    counts = {"success": 0, "failed": 0, "missing": 0}
    folders: set[Path] = set()
    files: list[Path] = []
    first = LAST_DAY - dt.timedelta(days=DAYS - 1)
    for t in range(TARGETS):
        target = f"objetivo_{t:03d}"
        for d in range(DAYS):
            day = first + dt.timedelta(days=d)
            slot = dt.datetime.combine(day, dt.time(4, 0), dt.UTC) + dt.timedelta(days=1)  # 23:00 in Bogota
            roll = zlib.crc32(f"{target}:{d}".encode()) % 100
            status = "missing" if roll == 0 else "failed" if roll in (1, 2) else "success"
            counts[status] += 1
            path = "\\N"
            backup = "\\N"
            if status == "success":
                backup = (slot + dt.timedelta(minutes=2)).isoformat()
                folder = root / "diario" / target / f"{day:%Y}" / f"{day:%m}"
                folders.add(folder)
                files.append(folder / f"{target}_{day:%Y%m%d}T230200.tar.zst")
                path = str(files[-1])
            run_id = f"{'faltante' if status == 'missing' else 'scheduled'}__{slot.isoformat()}"
            buffer.write("\t".join([target, "files", "diario", "automatic", "respaldo_diario", run_id,
                                    slot.isoformat(), backup, slot.isoformat(), status, path,
                                    "1000" if status == "success" else "\\N"]) + "\n")
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        file.touch()
    with psycopg.connect(f"{SYSTEM_PG}/{database}") as conn:
        migrate(conn)
        with conn.cursor() as cur:
            with cur.copy("COPY respaldo.control_backup (target, kind, frequency, mechanism, dag_id, run_id, "
                          "logical_date, backup_at, finished_at, status, artifact_path, compressed_bytes) "
                          "FROM STDIN") as copy:
                copy.write(buffer.getvalue())
            # An approved drill for every tenth target, of a copy from about two months before the last day.
            cur.execute("INSERT INTO respaldo.simulacro (target, kind, control_id, started_at, finished_at, verdict) "
                        "SELECT DISTINCT ON (target) target, 'files', id, now(), now(), 'aprobado' "
                        "FROM respaldo.control_backup WHERE status = 'success' AND right(target, 1) = '0' "
                        "AND backup_at < %s ORDER BY target, backup_at DESC",
                        (dt.datetime.combine(LAST_DAY - dt.timedelta(days=60), dt.time(), dt.UTC),))
        conn.commit()
        conn.execute("ANALYZE respaldo.control_backup")
    return {"rows": sum(counts.values()), "by_status": counts, "files": len(files)}


def plan_in_process(inventory: str, out: str) -> None:
    """Helper process: after the imports, time what ``respaldo retencion`` does (its dry run), twice."""
    import zoneinfo

    from respaldo.ciclo import retencion
    from respaldo.inventory import load_inventory
    from respaldo.register import connect

    loaded = load_inventory(inventory)
    with connect(loaded.register.conn_id):  # the first connection (and Airflow's connection lookup) untimed
        pass
    times, cpu = [], []
    for _ in range(2):
        began, began_cpu = time.perf_counter(), time.process_time()
        loaded = load_inventory(inventory)
        objetivos = [retencion.objetivo_de(t, loaded.frequencies[t.frequency].retention) for t in loaded.targets]
        zone = zoneinfo.ZoneInfo(loaded.timezone)
        plans = retencion.revisar(loaded.register.conn_id, objetivos, zone)
        report = retencion.text(plans, zone, applied=False)
        times.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    totals = {action: sum(found.counts()[action] for found in plans) for action in ("conservar", "borrar",
                                                                                     "no_cuenta")}
    Path(out).write_text(json.dumps({"first_s": times[0], "again_s": times[1], "first_cpu_s": cpu[0], "totals": totals,
                                     "lines": report.count("\n") + 1}), encoding="utf-8")


def sql_alone(database: str) -> float:
    """The dry run's register query alone, through psycopg (median of 5, ms)."""
    import psycopg

    ids = [f"objetivo_{i:03d}" for i in range(TARGETS)]
    timings = []
    with psycopg.connect(f"{SYSTEM_PG}/{database}") as conn, conn.cursor() as cur:
        for _ in range(5):
            began = time.perf_counter()
            cur.execute("SELECT id, target, backup_at, status, artifact_path, verify_status, external_status, "
                        "deletion_reason FROM respaldo.control_backup WHERE target = ANY(%s) "
                        "AND artifact_path IS NOT NULL AND deleted_at IS NULL", (ids,))
            cur.fetchall()
            timings.append((time.perf_counter() - began) * 1000)
    return statistics.median(timings)


#: What every command that reads the register pays before its own work: the interpreter, the imports, and the
#: first connection (Airflow's settings and connection lookup, the schema check).
BASELINE = ("import respaldo.cli, respaldo.ciclo.retencion\n"
            "from respaldo.register import connect\n"
            "with connect('respaldo_registro'):\n    pass\n")


def run(work: Path, logs: Path, rounds: int, say) -> dict:
    """Fill a throwaway register, then time the dry run (helper process) and the whole command, interleaved."""
    work.mkdir(parents=True, exist_ok=True)
    database = f"respaldo_bench_retencion_{uuid.uuid4().hex[:8]}"
    _system_sql(f'CREATE DATABASE "{database}"')
    try:
        with tempfile.TemporaryDirectory(prefix="respaldo-bench-retencion-") as root:
            began = time.monotonic()
            data = fill(database, Path(root))
            data["fill_s"] = time.monotonic() - began
            say(f"retencion: {data['rows']:,} register rows and {data['files']:,} artifacts in {data['fill_s']:.0f} s")
            inventory = _inventory(work / "inventory-retencion.json", Path(root))
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "RESPALDO"))}
            env.update(AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW_CONN_RESPALDO_REGISTRO=json.dumps(
                {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres",
                 "schema": database}))
            data["rounds"] = []
            for r in range(rounds):
                out = work / f"retencion-{r}.json"
                began = time.perf_counter()
                with (logs / "retencion-helper.log").open("a") as log:
                    subprocess.run([sys.executable, "-m", "bench.retencion", "plan", str(inventory), str(out)],
                                   env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
                helper_wall = time.perf_counter() - began
                began = time.perf_counter()
                with (work / "retencion-salida.txt").open("w") as report, (logs / "retencion-cli.log").open("a") as log:
                    subprocess.run([str(Path(sys.executable).with_name("respaldo")), "retencion", str(inventory)],
                                   env=env, cwd=ROOT, stdout=report, stderr=log, check=True)
                cli_wall = time.perf_counter() - began
                began = time.perf_counter()
                subprocess.run([sys.executable, "-c", BASELINE], env=env, cwd=ROOT, check=True)
                import_wall = time.perf_counter() - began
                result = {**json.loads(out.read_text()), "helper_wall_s": helper_wall, "cli_wall_s": cli_wall,
                          "import_wall_s": import_wall}
                data["rounds"].append(result)
                say(f"retencion round {r + 1}: dry run {result['first_s']:.2f} s (again {result['again_s']:.2f} s), "
                    f"whole command {cli_wall:.2f} s, imports alone {import_wall:.2f} s")
            data["sql_ms"] = sql_alone(database)
    finally:
        _system_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return data


def _median(data: dict, key: str) -> float:
    return statistics.median(r[key] for r in data["rounds"])


def build_rows(data: dict) -> list[list[str]]:
    if not data or not data.get("rounds"):
        return []
    work, cli, imports = _median(data, "first_s"), _median(data, "cli_wall_s"), _median(data, "import_wall_s")
    cpu = _median(data, "first_cpu_s")
    totals = data["rounds"][0]["totals"]
    return [
        ["14", f"respaldo retencion (dry run), {data['rows']:,} rows, {TARGETS} targets: its work after imports",
         f"{work:.2f} s wall, {cpu:.2f} s CPU ({totals['conservar']:,} keep, {totals['borrar']:,} delete, "
         f"{totals['no_cuenta']:,} not counted; {data['rounds'][0]['lines']:,} lines)",
         f"register query alone: {data['sql_ms']:.0f} ms", "", f"< {GOAL_S:.0f} s",
         "PASS" if work < GOAL_S else "MISS"],
        ["14", "  the whole command as typed (interpreter, Airflow's imports, output to a file)", f"{cli:.2f} s",
         f"python + the same imports + one register connection: {imports:.2f} s", f"{cli - imports:.2f} s beyond",
         "", "info"],
    ]


def data_text(data: dict) -> str:
    statuses = ", ".join(f"{count:,} {status}" for status, count in sorted(data["by_status"].items()))
    return (f"Register (section 14): {data['rows']:,} rows ({statuses}), {TARGETS} targets x {DAYS} daily copies to "
            f"{LAST_DAY}, {data['files']:,} artifacts on disk (empty files); retention {RETENTION}.")


def rounds_text(data: dict) -> str:
    if not data or not data.get("rounds"):
        return ""
    rounds = data["rounds"]
    return "\n".join([
        "- retencion dry run after imports, wall s: " + ", ".join(f"{r['first_s']:.2f}" for r in rounds)
        + "; CPU s: " + ", ".join(f"{r['first_cpu_s']:.2f}" for r in rounds)
        + "; again in the same process: " + ", ".join(f"{r['again_s']:.2f}" for r in rounds),
        "- respaldo retencion whole command, s: " + ", ".join(f"{r['cli_wall_s']:.2f}" for r in rounds)
        + "; imports and one connection: " + ", ".join(f"{r['import_wall_s']:.2f}" for r in rounds),
    ])


HOW = """- 14: `respaldo retencion` (`bench/retencion.py`): a throwaway register of 50,000 rows (100 targets x 500 daily
  copies, ~2% failed, ~1% missing, an approved drill for every tenth target) and its artifacts as empty files.
  "Its work" is timed in a fresh helper process after its imports and a first untimed connection: the inventory
  read, the register query, a stat of every artifact, the plan of every target and the report rendered, as the
  command does. "Whole command" is `respaldo retencion INVENTORY > file` from spawn to exit; beside it a process
  that only imports what the command imports and opens one register connection (Airflow's settings and
  connection lookup, the schema check): the fixed cost of any command that reads the register."""


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["plan"]:
        plan_in_process(argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.retencion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="also write the table into bench/RESULTS.md")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    with tempfile.TemporaryDirectory(prefix="respaldo-bench-retencion-work-") as work:
        data = run(Path(work), Path(work), args.rounds, say)
    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    from bench.run import RESULTS_MD, markdown_table, put_section, text_table

    rows = build_rows(data)
    print()
    print(data_text(data))
    print(text_table(rows))
    if args.write:
        when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        section = (f"{SECTION_START}\n## Section 14 alone: retention's dry run (`python -m bench.retencion`)\n\n"
                   f"Run on its own on {when}, {args.rounds} rounds, medians; load average before / after: "
                   f"{load_before} / {load_after} (the machine was shared with other engineers' test runs). "
                   f"{data_text(data)}\n\n{markdown_table(rows)}\n\nEvery round:\n{rounds_text(data)}\n\n"
                   f"How:\n{HOW}\n{SECTION_END}\n")
        put_section(SECTION_START, SECTION_END, section)
        print(f"\n(written to {RESULTS_MD.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
