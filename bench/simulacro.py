"""Bench section 11: what restores and drills cost, on the 1 GB PostgreSQL database.

    python -m bench.simulacro copia TARGET_JSON DEST OUT_JSON [sin-cifras]   # helper: one timed copia

11a. The snapshot-consistent row counts on ``copia``: ``PostgresSource().copy`` of the 1 GB database
     with its counts, against the same copy with the counts switched off in the helper process
     (``SnapshotCounts`` made inert there: instrumentation only, production has no such switch);
     rounds interleaved, medians. Both run pg_dump -Fc -Z0 compressed in flight, fsynced.
11b. ``respaldo restaurar`` of the 1 GB artifact: the whole command as a person runs it (Python and
     its imports, the sum check against the ``.sha256`` and the register, CREATE DATABASE, ``zstd
     -dc | pg_restore``, the row counts and their comparison with the copy's figures), against
     ``createdb NEW && zstd -dc X | pg_restore -d NEW`` (same pg_restore options) in the same rounds.
     The artifact is made by our four tasks (``bench.chain``), so it has its register row and figures.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

from bench.procs import measure

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RESPALDO = str(Path(PY).parent / "respaldo")
DRILL_CONN = "pg_bench_simulacros"
GOALS = {"counts": 1.10, "restore": 1.10}


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _settle(bench) -> None:
    """Nothing of a round left to write back while the next one runs."""
    bench.server.psql("CHECKPOINT")
    os.sync()


def _copia(bench, work: Path, logs: Path, tag: str, counts: bool) -> dict:
    dest, out = work / f"copia-{tag}.dump.zst", work / f"copia-{tag}.json"
    target = {"id": "bench_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_bench",
              "database": bench.big_db, "mechanism": "automatic", "responsible": "Banco de pruebas"}
    argv = [PY, "-m", "bench.simulacro", "copia", json.dumps(target), str(dest), str(out)]
    measured = measure(argv + ([] if counts else ["sin-cifras"]), env=bench.airflow_env(), cwd=ROOT,
                       log_path=logs / f"simulacro-copia-{tag}.log")
    result = json.loads(out.read_text())
    result["process_wall_s"] = measured.wall_s
    out.unlink()
    dest.unlink(missing_ok=True)
    _settle(bench)
    return result


def _artifact(bench, work: Path, logs: Path) -> dict:
    """One copy through our four tasks (register row, figures, .sha256), kept for the restores."""
    out = work / "artefacto.json"
    settings = {"root": str(work / "root"), "timezone": "America/Bogota", "register_conn_id": "respaldo_registro",
                "dag_id": "respaldo_financiero"}
    target = {"id": "bench_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_bench",
              "database": bench.big_db, "mechanism": "automatic", "responsible": "Banco de pruebas"}
    measure([PY, "-m", "bench.chain", json.dumps(target), json.dumps(settings), f"bench__simulacro__{bench.key}",
             str(out)], env=bench.airflow_env(), cwd=ROOT, log_path=logs / "simulacro-artefacto.log")
    return json.loads(out.read_text())["artifact"]


def _restore_env(bench, inventory: Path) -> dict:
    env = bench.airflow_env(inventory)
    env[f"AIRFLOW_CONN_{DRILL_CONN.upper()}"] = json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": bench.server.port, "login": "postgres",
        "password": bench.server.password, "schema": "postgres"})
    return env


def _ours(bench, artifact: str, inventory: Path, logs: Path, tag: str) -> dict:
    name = f"restaurada_{tag.replace('-', '_')}"
    log = logs / f"simulacro-restaurar-{tag}.log"
    measured = measure([RESPALDO, "restaurar", artifact, "--destino", name, "--inventario", str(inventory)],
                       env=_restore_env(bench, inventory), cwd=ROOT, log_path=log)
    text = log.read_text(encoding="utf-8", errors="replace")
    if "Coincide con lo que registró la copia" not in text:
        raise SystemExit(f"bench: respaldo restaurar did not match the copy's figures; see {log}")
    restore = re.search(r"Restaurado en ([\d.]+) s\.", text)
    bench.server.psql(f"DROP DATABASE {name}")
    _settle(bench)
    return {"wall_s": measured.wall_s, "restore_s": float(restore[1]) if restore else None,
            "pg_restore_peak_kib": measured.peak_of("pg_restore")}


def _bare(bench, artifact: str, logs: Path, tag: str) -> dict:
    name = f"pipeline_{tag.replace('-', '_')}"
    env = {**bench.server.env(), "PGDATABASE": "postgres"}
    measured = measure(["bash", "-c", f"set -o pipefail; createdb {name} && zstd -dcq '{artifact}' | pg_restore "
                        f"--no-owner --no-privileges --exit-on-error -d {name}"], env=env,
                       log_path=logs / f"simulacro-pipeline-{tag}.log")
    bench.server.psql(f"DROP DATABASE {name}")
    _settle(bench)
    return {"wall_s": measured.wall_s}


def run(bench, work: Path, logs: Path, rounds: int, say) -> dict:
    """Both measurements, ``rounds`` interleaved rounds each; the cluster and the 1 GB database are ``bench``'s."""
    from bench.run import write_inventory

    work.mkdir(parents=True, exist_ok=True)
    data: dict = {"copia": {"with": [], "without": []}, "restore": {"ours": [], "bare": []}}
    for r in range(rounds):
        for counts in (True, False) if r % 2 == 0 else (False, True):
            result = _copia(bench, work, logs, f"{r}-{'con' if counts else 'sin'}", counts)
            data["copia"]["with" if counts else "without"].append(result)
            say(f"11 copia round {r + 1}, {'with' if counts else 'without'} counts: {result['copy_s']:.2f} s"
                + (f" (counting {result['counting_s']:.2f} s)" if counts else ""))
    artifact = _artifact(bench, work, logs)
    data["artifact"] = {k: artifact[k] for k in ("original_bytes", "compressed_bytes")}
    inventory = write_inventory(work / "inventario-simulacro.yaml", work / "root", [])
    text = inventory.read_text(encoding="utf-8")
    inventory.write_text(text + f"drills:\n  conn_id: {DRILL_CONN}\n", encoding="utf-8")
    for r in range(rounds):
        for which in ("ours", "bare") if r % 2 == 0 else ("bare", "ours"):
            tag = f"{r}-{uuid.uuid4().hex[:4]}"
            result = (_ours(bench, artifact["artifact_path"], inventory, logs, tag) if which == "ours"
                      else _bare(bench, artifact["artifact_path"], logs, tag))
            data["restore"][which].append(result)
            say(f"11 restore round {r + 1}, {which}: {result['wall_s']:.2f} s")
    return data


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def build_rows(data: dict) -> list[list[str]]:
    if not data or not data.get("copia"):
        return []
    with_counts = _median([r["copy_s"] for r in data["copia"]["with"]])
    without = _median([r["copy_s"] for r in data["copia"]["without"]])
    counting = _median([r["counting_s"] for r in data["copia"]["with"]])
    tables = data["copia"]["with"][0].get("tables")
    ours = _median([r["wall_s"] for r in data["restore"]["ours"]])
    inner = _median([r["restore_s"] for r in data["restore"]["ours"]])
    bare = _median([r["wall_s"] for r in data["restore"]["bare"]])
    dump_mb = data["artifact"]["original_bytes"] / 1e6
    return [
        ["11", "copia with snapshot-consistent row counts, 1 GB", f"{with_counts:.2f} s (counting {counting:.2f} s "
         f"in parallel, {tables} tables)", f"same copia without counts: {without:.2f} s",
         f"{with_counts / without:.3f}x",
         f"<= {GOALS['counts']:.2f}x", _verdict(with_counts / without <= GOALS["counts"])],
        ["11", f"respaldo restaurar, 1 GB artifact (dump {dump_mb:,.0f} MB)", f"{ours:.2f} s (of which zstd | "
         f"pg_restore {inner:.2f} s)", f"createdb && zstd -dc | pg_restore -d: {bare:.2f} s", f"{ours / bare:.3f}x",
         f"<= {GOALS['restore']:.2f}x", _verdict(ours / bare <= GOALS["restore"])],
    ]


def rounds_text(data: dict) -> str:
    if not data or not data.get("copia"):
        return ""

    def values(items, key):
        return ", ".join(f"{r[key]:.2f}" for r in items)

    return "\n".join([
        f"- 11, copia with counts: {values(data['copia']['with'], 'copy_s')}; without: "
        f"{values(data['copia']['without'], 'copy_s')}",
        f"- 11, respaldo restaurar: {values(data['restore']['ours'], 'wall_s')}; createdb && zstd -dc | pg_restore: "
        f"{values(data['restore']['bare'], 'wall_s')}",
    ])


HOW = ("- 11: `bench/simulacro.py`. Counts: `PostgresSource().copy` of the 1 GB database in a helper process timed "
       "after its imports, with its snapshot-consistent counts and with `SnapshotCounts` made inert in that process; "
       "rounds interleaved. Restore: `.venv/bin/respaldo restaurar ARTIFACT --destino NEW` (the whole command, "
       "process start to exit: imports, sum check, CREATE DATABASE, `zstd -dc | pg_restore --no-owner "
       "--no-privileges --exit-on-error`, row counts compared with the copy's figures) against `bash -c "
       "\"createdb NEW && zstd -dc X | pg_restore --no-owner --no-privileges --exit-on-error -d NEW\"` as the same "
       "superuser; each restored database dropped and a CHECKPOINT taken between rounds, untimed. The throwaway "
       "cluster runs with fsync=off, for both.")


def _helper(what: str, target_json: str, dest: str, out: str, *flags: str) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import airflow.sdk  # noqa: F401 - loaded in every task process already

    from respaldo.sources import postgres

    if what != "copia":
        raise SystemExit(f"unknown helper {what}")
    seen: dict = {}
    if "sin-cifras" in flags:  # instrumentation only: the same copy, with the counts made inert
        postgres.SnapshotCounts.__enter__ = lambda self: self
        postgres.SnapshotCounts.result = lambda self: None
    else:
        result_of = postgres.SnapshotCounts.result

        def noted(self):
            figures = result_of(self)
            seen.update(counting_s=self.seconds, tables=len(figures.get("tablas", {})), error=figures.get("error"))
            return figures

        postgres.SnapshotCounts.result = noted
    source = postgres.PostgresSource()
    target = source.model.model_validate(json.loads(target_json))
    began = time.perf_counter()
    copied = source.copy(target, Path(dest), logging.getLogger("respaldo.bench"))
    Path(out).write_text(json.dumps({"copy_s": time.perf_counter() - began, "original_bytes": copied.original_bytes,
                                     **seen}), encoding="utf-8")


if __name__ == "__main__":
    _helper(*sys.argv[1:])
