"""Bench section 10: the follow-up (``respaldo seguimiento``) over 500 targets with months of history.

    python -m bench.seguimiento check INVENTORY OUT_JSON   # helper: time revisar() in a fresh process

The register is a uniquely named database on the machine's PostgreSQL, filled directly (COPY) with
every slot of every target over ``days`` days (a success for most, some failures, some holes), as the
DAGs would have left it. The check runs in a fresh process with Airflow's API on a closed port (so
the API answers "connection refused" at once) and mail going to a local SMTP server. Two sizes of
history, to see that the time grows with the number of slots and no faster.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import sys
import time
import uuid
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432"
TARGETS = 500
DAYS = (45, 90)
GOAL_S = 2.0


def _inventory(path: Path, root: Path) -> Path:
    from bench.run import many_targets, write_inventory

    return write_inventory(path, root, many_targets(TARGETS))


def _fill(register_db: str, inventory_path: Path, days: int, now: dt.datetime) -> dict:
    """Every slot of every target over ``days`` days: 97 % success, 2 % failed, 1 % nothing (a hole)."""
    import psycopg

    from respaldo.inventory import load_inventory
    from respaldo.register.esquema import migrate
    from respaldo.seguimiento import turnos

    inventory = load_inventory(inventory_path)
    classes = turnos.clases(inventory)
    start = now - dt.timedelta(days=days)
    buffer = io.StringIO()
    rows = slots_total = 0
    for target in inventory.targets:
        clase = classes[target.frequency]
        slots = clase.slots(start, now - clase.grace)
        slots_total += len(slots)
        for index, slot in enumerate(slots):
            roll = zlib.crc32(f"{target.id}:{index}".encode()) % 100
            if roll == 0:
                continue
            status = "failed" if roll in (1, 2) else "success"
            backup = (slot + dt.timedelta(minutes=2)).isoformat() if status == "success" else "\\N"
            size = str(10_000_000 + index) if status == "success" else "\\N"
            finished = (slot + dt.timedelta(minutes=3)).isoformat()
            buffer.write("\t".join([target.id, target.kind, target.frequency, target.mechanism, clase.dag_id,
                                    f"scheduled__{slot.isoformat()}", "scheduled", slot.isoformat(), backup,
                                    slot.isoformat(), finished, status, size, target.responsible]) + "\n")
            rows += 1
    with psycopg.connect(f"{SYSTEM_PG}/{register_db}") as conn:
        migrate(conn)
        with conn.cursor() as cur, cur.copy(
                "COPY respaldo.control_backup (target, kind, frequency, mechanism, dag_id, run_id, run_type, "
                "logical_date, backup_at, started_at, finished_at, status, original_bytes, responsible) "
                "FROM STDIN") as copy:
            copy.write(buffer.getvalue())
        conn.execute("ANALYZE respaldo.control_backup")
        conn.commit()
    return {"rows": rows, "slots": slots_total, "days": days}


def _system_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{SYSTEM_PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def run(work: Path, logs: Path, say, env: dict[str, str]) -> dict:
    """Fill a register per size and time the check, cold (first run) and warm (the next hour's)."""
    import subprocess

    from devtools.servers import SmtpServer, free_port

    work.mkdir(parents=True, exist_ok=True)
    inventory = _inventory(work / "inventory-seguimiento.yaml", work / "root")
    smtp = SmtpServer().start()
    results = []
    now = dt.datetime.now(dt.UTC)
    try:
        for days in DAYS:
            database = f"respaldo_bench_seguimiento_{uuid.uuid4().hex[:8]}"
            _system_sql(f'CREATE DATABASE "{database}"')
            try:
                filled = _fill(database, inventory, days, now)
                say(f"follow-up: register with {filled['rows']:,} rows ({filled['slots']:,} slots, {days} days)")
                out = work / f"seguimiento-{days}.json"
                check_env = {
                    **env,
                    "AIRFLOW_CONN_RESPALDO_REGISTRO": json.dumps({"conn_type": "postgres", "host": "127.0.0.1",
                                                                  "port": 5432, "login": "postgres",
                                                                  "schema": database}),
                    "AIRFLOW_CONN_RESPALDO_AIRFLOW_API": json.dumps({"conn_type": "http", "host": "127.0.0.1",
                                                                     "port": free_port(), "login": "admin",
                                                                     "password": "bench-clave"}),
                    "AIRFLOW_CONN_SMTP_BENCH": smtp.connection_json(),
                }
                began = time.perf_counter()
                with (logs / f"seguimiento-{days}.log").open("w") as log:
                    subprocess.run([sys.executable, "-m", "bench.seguimiento", "check", str(inventory), str(out)],
                                   env=check_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
                result = {**filled, **json.loads(out.read_text()), "process_wall_s": time.perf_counter() - began}
                say(f"follow-up, {days} days: cold check {result['cold_s']:.2f} s ({result['missing']:,} missing "
                    f"rows written), warm {result['warm_s']:.2f} s, CLI process {result['process_wall_s']:.2f} s")
                results.append(result)
            finally:
                _system_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        smtp.stop()
    return {"sizes": results}


def build_rows(data: dict) -> list[list[str]]:
    if not data or not data.get("sizes"):
        return []
    small, big = data["sizes"][0], data["sizes"][-1]
    time_ratio = big["cold_s"] / small["cold_s"]
    slot_ratio = big["slots"] / small["slots"]
    return [
        ["10", f"respaldo seguimiento, {TARGETS} targets, {big['days']} days (cold: writes every missing row)",
         f"{big['cold_s']:.2f} s ({big['slots']:,} slots, {big['rows']:,} rows, {big['missing']:,} missing)",
         f"CLI process with imports: {big['process_wall_s']:.2f} s", "", f"< {GOAL_S:.0f} s",
         "PASS" if big["cold_s"] < GOAL_S else "MISS"],
        ["10", "  the next hour's check (warm)", f"{big['warm_s']:.2f} s", "", "", f"< {GOAL_S:.0f} s",
         "PASS" if big["warm_s"] < GOAL_S else "MISS"],
        ["10", f"  linear: {big['days']} days / {small['days']} days (cold)",
         f"{big['cold_s']:.2f} s / {small['cold_s']:.2f} s", f"slots {big['slots']:,} / {small['slots']:,} = "
         f"{slot_ratio:.2f}x", f"{time_ratio:.3f}x", f"<= {slot_ratio * 1.2:.2f}x",
         "PASS" if time_ratio <= slot_ratio * 1.2 else "MISS"],
    ]


HOW = ("- 10: `bench/seguimiento.py`: a register filled by COPY with every slot of 500 targets (3 classes) over 45 "
       "and 90 days (97 % success, 2 % failed, 1 % holes); `revisar()` timed in a fresh process after its imports "
       "(the lazy ones too), "
       "twice: cold (the first check ever: every slot looked at, a missing row per hole) and warm (the next check, "
       "from the settled slots on). Airflow's API on a closed port (refused at once), mail to a local SMTP server. "
       "Linear: cold time ratio against slot ratio (goal: within 1.2x of it).")


def _check(inventory: str, out: str) -> None:
    """Time the check in this process, after imports: cold, then warm."""
    from respaldo.inventory import load_inventory
    from respaldo.seguimiento import revisar

    loaded = load_inventory(inventory)
    # What the check imports lazily is imported first: the clock measures the check, not Python's imports.
    import airflow.providers.postgres.hooks.postgres  # noqa: F401
    import airflow.providers.smtp.notifications.smtp  # noqa: F401
    import airflow.serialization.decoders  # noqa: F401
    import airflow.serialization.encoders  # noqa: F401
    import httpx  # noqa: F401

    began = time.perf_counter()
    cold = revisar(loaded)
    cold_s = time.perf_counter() - began
    began = time.perf_counter()
    revisar(loaded)
    warm_s = time.perf_counter() - began
    Path(out).write_text(json.dumps({"cold_s": cold_s, "warm_s": warm_s, "missing": cold.new_missing,
                                     "states": {s: sum(1 for x in cold.states if x.estado == s)
                                                for s in {x.estado for x in cold.states}}}))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1] == "check":
        _check(sys.argv[2], sys.argv[3])
