"""`make bench`, the register where people look: respaldo's pages on a real api-server over a big register.

A register database (on the machine's PostgreSQL, dropped at the end) holds 100,000 rows: 100 targets,
one slot a day for 1,000 days up to 2026-11-30, about 2% failed and 1% missing slots (some covered by a
later copy), so November 2026 (Bogota) holds exactly 3,000 lines. An Airflow stack
(``devtools.airflow_stack``: api-server, scheduler, DAG processor) serves the pages with an inventory of
those 100 targets; every request carries a login (a JWT from ``/auth/token``).

Measured per URL, after one untimed warm-up (imports, first connection): the server time our app
reports in its ``Server-Timing`` header (from the request reaching the pages' app to the response;
inventory, access check, register queries, rendering) and the client's wall time over loopback;
medians of the rounds. Beside each page, the same SQL timed alone through psycopg, as a floor.

Runs alone too: ``.venv/bin/python -m bench.registro [--rounds N] [--write]`` prints its table; ``--write``
also puts it in ``bench/RESULTS.md`` as a section of its own (the next full ``make bench`` folds it into the
main table).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432"
TARGETS = 100
DAYS = 1000
LAST_DAY = dt.date(2026, 11, 30)
MONTH = "2026-11"
GOALS = {"page_ms": 300.0, "sheet_s": 3.0}


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _system_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{SYSTEM_PG}/postgres", autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)


def fill(database: str) -> dict:
    """100 targets x 1,000 daily slots; the row date of slot D is D 23:02 in Bogota (23:00 when no copy)."""
    import psycopg

    from respaldo.register import esquema

    with psycopg.connect(f"{SYSTEM_PG}/{database}") as conn:
        esquema.migrate(conn)
        first_slot = dt.datetime.combine(LAST_DAY - dt.timedelta(days=DAYS - 1), dt.time(4, 0), dt.UTC) \
            + dt.timedelta(days=1)  # D 23:00 in Bogota is D+1 04:00 UTC
        conn.execute("""
            INSERT INTO respaldo.control_backup (target, kind, frequency, mechanism, dag_id, run_id, run_type,
                logical_date, backup_at, started_at, finished_at, status, step, artifact_path, original_bytes,
                compressed_bytes, sha256, compression, responsible, notes, error, try_number)
            SELECT format('objetivo_%%s', lpad(t::text, 3, '0')),
                   CASE WHEN t %% 10 = 0 THEN 'files' ELSE 'postgres' END,
                   CASE WHEN t %% 4 = 0 THEN 'financiero' ELSE 'diario' END, 'automatic',
                   CASE WHEN t %% 4 = 0 THEN 'respaldo_financiero' ELSE 'respaldo_diario' END,
                   CASE WHEN s.missing THEN 'faltante__' ELSE 'scheduled__' END
                       || to_char(slot, 'YYYY-MM-DD"T"HH24:MI:SS'),
                   CASE WHEN s.missing THEN NULL ELSE 'scheduled' END,
                   slot,
                   CASE WHEN s.ok THEN slot + interval '2 minutes' END,
                   CASE WHEN NOT s.missing THEN slot + interval '30 seconds' END,
                   slot + interval '3 minutes',
                   CASE WHEN s.missing THEN 'missing' WHEN s.ok THEN 'success' ELSE 'failed' END,
                   CASE WHEN s.ok THEN 'registrar' WHEN NOT s.missing THEN 'copia' END,
                   CASE WHEN s.ok THEN format('/var/backups/respaldo/diario/objetivo_%%s/%%s.dump.zst', t,
                                              to_char(slot, 'YYYYMMDD')) END,
                   CASE WHEN s.ok THEN 800000000 + t * 1000000 + d * 1000 END,
                   CASE WHEN s.ok THEN 160000000 + t * 200000 + d * 200 END,
                   CASE WHEN s.ok THEN md5(t || '/' || d) || md5(d || '/' || t) END,
                   CASE WHEN s.ok THEN 'zstd-3' END,
                   'Profesional universitario área de sistemas',
                   CASE WHEN d %% 30 = 0 THEN 'cierre de mes: revisión de señales y conciliación' END,
                   CASE WHEN s.missing THEN 'No hubo copia del turno ' || to_char(slot, 'YYYY-MM-DD HH24:MI')
                        WHEN NOT s.ok THEN 'Falló «copia»: pg_dump terminó con código 1: conexión rechazada' END,
                   CASE WHEN s.missing THEN NULL ELSE 1 END
            FROM generate_series(1, %s) t, generate_series(0, %s - 1) d,
                 LATERAL (SELECT %s::timestamptz + d * interval '1 day' AS slot,
                                 (t * 7919 + d * 104729) %% 97 = 0 AS missing,
                                 (t * 7919 + d * 104729) %% 97 <> 0 AND (t * 31 + d * 17) %% 50 <> 0 AS ok) s
            """, (TARGETS, DAYS, first_slot))
        # A few missing slots covered later by a backfill (the pages and the sheet leave them out), none in
        # the month whose sheet is measured, so it keeps its 3,000 lines.
        conn.execute("""
            UPDATE respaldo.control_backup m SET superseded_by = (
                SELECT id FROM respaldo.control_backup s WHERE s.target = m.target AND s.status = 'success'
                ORDER BY s.id DESC LIMIT 1)
            WHERE m.status = 'missing' AND m.id % 5 = 0 AND m.logical_date < '2026-10-01'""")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE respaldo.control_backup")  # what autovacuum does on a real register
        counts = dict(conn.execute("SELECT status, count(*) FROM respaldo.control_backup GROUP BY 1").fetchall())
    return {"rows": sum(counts.values()), "by_status": counts}


def write_inventory(path: Path, root: Path) -> Path:
    targets = [{"id": f"objetivo_{t:03d}", "kind": "postgres", "frequency": "financiero" if t % 4 == 0 else "diario",
                "mechanism": "automatic", "conn_id": "pg_bench", "database": "x",
                "responsible": "Profesional universitario área de sistemas"} for t in range(1, TARGETS + 1)]
    inventory = {"organization": "Gobernación del Putumayo (banco de pruebas)", "timezone": "America/Bogota",
                 "storage": {"root": str(root)}, "register": {"conn_id": "registro_bench"},
                 "alerts": {"email": ["sistemas@example.gov.co"]},
                 "frequencies": {"financiero": {"schedule": ["0 13 * * *", "0 22 * * *"]},
                                 "diario": {"schedule": "0 23 * * *"}},
                 "targets": targets}
    path.write_text(json.dumps(inventory, ensure_ascii=False), encoding="utf-8")
    return path


def pages() -> list[tuple[str, str, dict, str]]:
    """(key, what, query parameters, path) of each measured request."""
    from respaldo.register.consulta import Cursor

    deep = Cursor(dt.datetime(2024, 6, 1, tzinfo=dt.UTC), 0).token()
    return [
        ("first", "first page, no filter", {}, "/respaldo/registro"),
        ("month", "a month (2026-06), filtered by dates", {"desde": "2026-06-01", "hasta": "2026-06-30"},
         "/respaldo/registro"),
        ("failed", "status fallido, class diario", {"estado": "fallido", "clase": "diario"}, "/respaldo/registro"),
        ("target", "one target", {"objetivo": "objetivo_042"}, "/respaldo/registro"),
        ("deep", "a page 2.5 years back (keyset)", {"mas_antiguas": deep}, "/respaldo/registro"),
        ("timeline", "a target's page: 90-day SVG timeline and trend", {}, "/respaldo/objetivos/objetivo_042"),
        ("xlsx", f"the month's sheet, XLSX ({MONTH})", {"mes": MONTH}, "/respaldo/registro/hoja.xlsx"),
        ("pdf", f"the month's sheet, PDF ({MONTH})", {"mes": MONTH}, "/respaldo/registro/hoja.pdf"),
    ]


def sql_alone(database: str) -> dict[str, float]:
    """The page queries alone through psycopg, medians of 5, in ms: the database's share of a page."""
    import psycopg

    from respaldo.register import consulta

    bogota = dt.timezone(dt.timedelta(hours=-5))
    filters = {
        "first": consulta.Filter(),
        "month": consulta.Filter(since=dt.datetime(2026, 6, 1, tzinfo=bogota), until=dt.datetime(2026, 7, 1,
                                                                                                    tzinfo=bogota)),
        "failed": consulta.Filter(status="failed", frequency="diario"),
        "target": consulta.Filter(target="objetivo_042"),
    }
    found = {}
    with psycopg.connect(f"{SYSTEM_PG}/{database}") as conn:
        for key, where in filters.items():
            times = []
            for _ in range(5):
                began = time.perf_counter()
                consulta.page(conn, where, size=50)
                times.append((time.perf_counter() - began) * 1000)
            found[key] = statistics.median(times)
    return found


def measure(base: str, token: str, rounds: int, say) -> dict[str, list[dict]]:
    import httpx

    results: dict[str, list[dict]] = {}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        for key, what, params, path in pages():
            warm = client.get(path, params=params)
            if warm.status_code != 200:
                raise SystemExit(f"bench registro: {path} {params} -> {warm.status_code}: {warm.text[:500]}")
            results[key] = []
            for _ in range(rounds):
                began = time.perf_counter()
                answer = client.get(path, params=params)
                wall = time.perf_counter() - began
                assert answer.status_code == 200, answer.text[:500]
                server = float(answer.headers["server-timing"].split("dur=")[1])
                results[key].append({"server_ms": server, "wall_ms": wall * 1000, "bytes": len(answer.content)})
            server = _median([r["server_ms"] for r in results[key]])
            say(f"registro: {what}: server {server:.0f} ms (median of {rounds})")
    return results


def run(work: Path, logs: Path, rounds: int, say) -> dict:
    from devtools.airflow_stack import AirflowStack

    key = uuid.uuid4().hex[:8]
    register_db, metadata_db = f"respaldo_bench_ui_registro_{key}", f"respaldo_bench_ui_airflow_{key}"
    work.mkdir(parents=True, exist_ok=True)
    stack = None
    for name in (register_db, metadata_db):
        _system_sql(f'CREATE DATABASE "{name}"')
    try:
        began = time.monotonic()
        data = fill(register_db)
        data["fill_s"] = time.monotonic() - began
        say(f"registro: {data['rows']:,} register rows written in {data['fill_s']:.0f} s ({data['by_status']})")
        inventory = write_inventory(work / "inventory-registro.json", work / "root")
        env = {"RESPALDO_INVENTORY": str(inventory), "AIRFLOW_CONN_REGISTRO_BENCH": json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": register_db})}
        stack = AirflowStack(home=work / "airflow-registro", database_url=f"postgresql+psycopg://postgres@127.0.0.1"
                             f":5432/{metadata_db}", extra_env=env, schedule=False, timezone="America/Bogota")
        stack.start(timeout=180)
        say(f"registro: api-server up on {stack.base_url}")
        import httpx

        token = httpx.post(f"{stack.base_url}/auth/token", json={"username": stack.username,
                           "password": stack.password}, timeout=30).json()["access_token"]
        data["requests"] = measure(stack.base_url, token, rounds, say)
        data["sql_ms"] = sql_alone(register_db)
    finally:
        if stack is not None:
            with contextlib.suppress(Exception):
                for name in ("api-server",):
                    (logs / f"registro-{name}.log").write_text(stack.log_tail(name, 200))
            stack.stop()
        for name in (register_db, metadata_db):
            with contextlib.suppress(Exception):
                _system_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return data


# --- the report ----------------------------------------------------------------------------------


def build_rows(data: dict) -> list[list[str]]:
    requests, sql = data["requests"], data.get("sql_ms", {})
    rows = []
    for key, what, _, _ in pages():
        server = _median([r["server_ms"] for r in requests[key]])
        wall = _median([r["wall_ms"] for r in requests[key]])
        size = _median([r["bytes"] for r in requests[key]])
        sheet = key in ("xlsx", "pdf")
        if sheet:
            goal, ok = f"< {GOALS['sheet_s']:.0f} s", server / 1000 < GOALS["sheet_s"]
            ours = f"{server / 1000:.2f} s server, {wall / 1000:.2f} s wall ({size / 1000:,.0f} kB)"
        else:
            goal, ok = f"< {GOALS['page_ms']:.0f} ms", server < GOALS["page_ms"]
            ours = f"{server:.0f} ms server, {wall:.0f} ms wall ({size / 1000:,.0f} kB)"
        floor = f"query alone: {sql[key]:.1f} ms" if key in sql else ""
        measured = key in ("first", "month", "xlsx", "pdf")
        rows.append(["10", f"register page: {what}" if not sheet else what, ours, floor, "", goal if measured else "",
                     ("PASS" if ok else "MISS") if measured else "info"])
    return rows


def data_text(data: dict) -> str:
    statuses = ", ".join(f"{count:,} {status}" for status, count in sorted(data["by_status"].items()))
    return (f"Register (section 10): {data['rows']:,} rows ({statuses}), {TARGETS} targets x {DAYS} daily slots "
            f"to {LAST_DAY}; {MONTH} holds 3,000 lines.")


def rounds_text(data: dict) -> str:
    return "\n".join(f"- register {key}, server ms: " + ", ".join(f"{r['server_ms']:.0f}" for r in items)
                     for key, items in data["requests"].items())


HOW = """- 10: respaldo's pages on a real api-server (`bench/registro.py`): a register of 100,000 rows (100 targets x
  1,000 daily slots, ~2% failed, ~1% missing), an inventory of those targets, requests with a JWT over loopback.
  "server" is the `Server-Timing` our pages' app sets (access check, inventory, register queries, rendering or
  the sheet's XLSX/PDF); "wall" is the client's. One untimed warm-up request per URL first (imports, first
  connection), then the rounds; medians. "query alone" is `consulta.page` through psycopg, without HTTP."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.registro", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="also write the table into bench/RESULTS.md")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    with tempfile.TemporaryDirectory(prefix="respaldo-bench-registro-") as work:
        data = run(Path(work), Path(work), args.rounds, say)
    from bench.run import RESULTS_MD, markdown_table, put_section, text_table

    rows = build_rows(data)
    print()
    print(data_text(data))
    print(text_table(rows))
    if args.write:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        section = (f"{SECTION_START}\n## Section 10 alone: the register's pages (`python -m bench.registro`)\n\n"
                   f"Run on its own on {when}, {args.rounds} rounds, medians; load average after: {load}. "
                   f"{data_text(data)}\n\n{markdown_table(rows)}\n\nEvery round:\n{rounds_text(data)}\n\n"
                   f"How:\n{HOW}\n{SECTION_END}\n")
        put_section(SECTION_START, SECTION_END, section)
        print(f"\n(written to {RESULTS_MD.relative_to(ROOT)})")
    return 0


SECTION_START = "<!-- bench.registro -->"
SECTION_END = "<!-- /bench.registro -->"


if __name__ == "__main__":
    sys.exit(main())
