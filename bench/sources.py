"""`make bench`, other sources: MariaDB and SSH copies against the bare tools, in the same run.

1. MariaDB: a throwaway ``devtools.servers.MariaDBServer`` with a ``tesoreria_mariadb_sql`` database
   (about 300 MB on disk) and a least-privilege backup user. Ours: ``MysqlSource().copy`` to a
   ``.sql.zst`` then ``verify_staged`` and ``read_stamp`` (copia + verificar_fecha), timed in a helper process
   (``python -m bench.sources``) after its imports, the connection in ``AIRFLOW_CONN_*``. Bare:
   ``mariadb-dump <DUMP_OPTIONS> DB | zstd -3 -T0 > file`` with the same credentials in a
   defaults-extra-file.
2. SSH pull: a 1 GB file (600 MB random + 400 MB text) behind ``devtools.servers.SshServer``. Ours:
   ``FilesSource().copy`` (remote tar over OpenSSH into a local ``.tar``), same helper process. Bare:
   ``sftp -b`` get of the same file with the same key and known_hosts (``StrictHostKeyChecking=yes``).

Rounds interleaved, order alternating; medians. Needs root (sshd and the MariaDB server).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "include") not in sys.path:
    sys.path.insert(0, str(ROOT / "include"))

from bench.procs import measure  # noqa: E402

PY = sys.executable
MB = 1_000_000
#: payment rows for ~300 MB on disk (data + indexes, information_schema.TABLES; ~210 bytes a row).
MARIA_ROWS = 1_595_000  # 11 x MARIA_BASE_ROWS
#: tesoreria_mariadb_sql makes at most ~157,000 rows (``registrado`` is a TIMESTAMP, one every 47 minutes
#: from 2024, and TIMESTAMP ends in 2038); it is loaded with this many, then copied until MARIA_ROWS.
MARIA_BASE_ROWS = 145_000
MARIA_DB = "tesoreria_bench"
MARIA_USER = "respaldo_bench"
SSH_RANDOM_MB = 600
SSH_TEXT_MB = 400
GOALS = {"maria": 1.30, "maria_size": 1.02, "ssh": 0.80}


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN", "MYSQL", "MARIADB", "SSH_"))}


def _drop(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.sync()  # nothing of this round left to write back during the next


def _ours(kind: str, target: dict, dest: Path, conn_var: str, conn_json: str, log: Path) -> dict:
    out = dest.with_suffix(".json")
    env = {**_clean_env(), conn_var: conn_json}
    measured = measure([PY, "-m", "bench.sources", kind, json.dumps(target), str(dest), str(out)],
                       env=env, cwd=ROOT, log_path=log)
    result = json.loads(out.read_text())
    result["process_wall_s"] = measured.wall_s
    out.unlink()
    _drop(dest)
    return result


# --- MariaDB -------------------------------------------------------------------------------------


def bench_mariadb(work: Path, logs: Path, rounds: int, say, rows: int) -> dict:
    from devtools.demo_data import tesoreria_mariadb_sql
    from devtools.servers import MariaDBServer
    from respaldo.sources.mysql import DUMP_OPTIONS

    server = MariaDBServer().start()
    secrets = Path(tempfile.mkdtemp(prefix="respaldo-bench-my-"))
    try:
        say(f"throwaway MariaDB on 127.0.0.1:{server.port}; loading {MARIA_DB}: tesoreria_mariadb_sql({rows:,}) ...")
        began = time.monotonic()
        server.sql(f"CREATE DATABASE {MARIA_DB}")
        base = min(rows, MARIA_BASE_ROWS)
        server.sql(tesoreria_mariadb_sql(base), MARIA_DB)
        copy = 1
        while base * (copy + 1) <= rows:  # copies with their own beneficiary, value and date
            server.sql("INSERT INTO pagos (cuenta, beneficiario, valor, pagado, registrado, concepto, huella, anulado) "
                       f"SELECT cuenta, CONCAT(beneficiario, ' /{copy}'), ROUND(RAND() * 25000000, 2), "
                       f"pagado - INTERVAL {copy} DAY, registrado, concepto, huella, anulado FROM pagos "
                       f"WHERE id <= {base}", MARIA_DB)
            copy += 1
        rows = int(server.sql("SELECT COUNT(*) FROM pagos", MARIA_DB).stdout)
        server.sql("ANALYZE TABLE pagos, cuentas", MARIA_DB)
        size = int(server.sql("SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES "
                              f"WHERE TABLE_SCHEMA = '{MARIA_DB}'").stdout)
        say(f"  {MARIA_DB}: {size / MB:,.0f} MB on disk, {rows:,} rows, loaded in {time.monotonic() - began:.0f} s")
        password = "Clave:Bench/" + uuid.uuid4().hex[:12]
        server.create_backup_role(MARIA_USER, password, MARIA_DB)
        cnf = secrets / "cliente.cnf"
        cnf.write_text(f'[client]\nhost=127.0.0.1\nport={server.port}\nuser={MARIA_USER}\npassword="{password}"\n')
        cnf.chmod(0o600)
        env = {**_clean_env(), "TZ": "UTC", "HOME": str(secrets)}
        opts = " ".join(DUMP_OPTIONS)  # --single-transaction is the first of them
        target = {"id": "bench_maria", "kind": "mysql", "frequency": "diario", "conn_id": "maria_bench",
                  "database": MARIA_DB, "mechanism": "automatic", "responsible": "Banco de pruebas"}
        conn = server.connection_json(MARIA_USER, password, MARIA_DB)
        out_dir = work / "maria"
        out_dir.mkdir(parents=True, exist_ok=True)
        pipe_out = out_dir / "pipeline.sql.zst"
        pipe_cmd = (f"set -o pipefail; mariadb-dump --defaults-extra-file='{cnf}' {opts} -- {MARIA_DB} "
                    f"| zstd -3 -T0 -q > '{pipe_out}'")
        os.sync()
        measure(["bash", "-c", pipe_cmd], env=env, log_path=logs / "maria-warmup.log")  # untimed: warm caches
        _drop(pipe_out)
        data: dict = {"rows": rows, "db_bytes": size, "ours": [], "pipe": []}
        for r in range(rounds):
            for what in ("ours", "pipe") if r % 2 == 0 else ("pipe", "ours"):
                if what == "ours":
                    result = _ours("mysql", target, out_dir / "ours.sql.zst", "AIRFLOW_CONN_MARIA_BENCH", conn,
                                   logs / f"maria-ours-{r}.log")
                    say(f"MariaDB round {r + 1}: ours copia+verificar {result['work_s']:.2f} s "
                        f"(copia {result['copy_s']:.2f} + verificar {result['check_s']:.2f})")
                else:
                    measured = measure(["bash", "-c", pipe_cmd], env=env, log_path=logs / f"maria-pipe-{r}.log")
                    result = {"wall_s": measured.wall_s, "bytes": pipe_out.stat().st_size}
                    _drop(pipe_out)
                    say(f"MariaDB round {r + 1}: mariadb-dump | zstd {result['wall_s']:.2f} s")
                data[what].append(result)
        return data
    finally:
        server.cleanup()
        shutil.rmtree(secrets, ignore_errors=True)
        shutil.rmtree(work / "maria", ignore_errors=True)


# --- SSH -----------------------------------------------------------------------------------------


def _make_big_file(path: Path) -> int:
    with open(path, "wb") as handle:
        subprocess.run(["head", "-c", f"{SSH_RANDOM_MB}M", "/dev/urandom"], stdout=handle, check=True)
        line = ("Gobernación del Putumayo, área de sistemas: copia de respaldo número %08d, año 2026; "
                "pagos, nómina, contratos y correspondencia.\n")
        block = "".join(line % i for i in range(10_000)).encode()
        left = SSH_TEXT_MB * 1024 * 1024
        while left > 0:
            left -= handle.write(block[:left])
    path.chmod(0o644)
    return path.stat().st_size


def bare_sftp(server, client: Path, commands: str) -> tuple[list[str], dict[str, str]]:
    """OpenSSH's ``sftp -b`` running ``commands`` on ``server`` with its key and known_hosts in ``client``
    (``StrictHostKeyChecking=yes``), as a person would run it: the baseline of sections 9 and 15."""
    key = client / "id"
    key.write_text(server.private_key)
    key.chmod(0o600)
    known = client / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {server.host_key}\n")
    batch = client / "batch"
    batch.write_text(commands)
    argv = ["sftp", "-q", "-F", "/dev/null", "-b", str(batch), "-i", str(key), "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-P", str(server.port),
            f"{server.user}@127.0.0.1"]
    return argv, {**_clean_env(), "HOME": str(client)}


def bench_ssh(work: Path, logs: Path, rounds: int, say) -> dict:
    from devtools.servers import SshServer

    server = SshServer().start()
    # /tmp, not bench/.work: the test account must be able to reach it
    remote = Path(tempfile.mkdtemp(prefix="respaldo-bench-ssh-"))
    client = Path(tempfile.mkdtemp(prefix="respaldo-bench-sshc-"))
    try:
        remote.chmod(0o755)
        (remote / "datos").mkdir(mode=0o755)
        big = remote / "datos" / "archivo.bin"
        began = time.monotonic()
        size = _make_big_file(big)
        say(f"sshd on 127.0.0.1:{server.port}; {size / MB:,.0f} MB file made in {time.monotonic() - began:.1f} s")
        out_dir = work / "ssh"
        out_dir.mkdir(parents=True, exist_ok=True)
        got = out_dir / "sftp.bin"
        sftp, env = bare_sftp(server, client, f"get {big} {got}\n")
        target = {"id": "bench_ssh", "kind": "files", "frequency": "diario", "conn_id": "ssh_bench",
                  "path": str(remote), "include": ["datos"], "mechanism": "automatic",
                  "responsible": "Banco de pruebas"}
        conn = server.connection_json()
        measure(sftp, env=env, log_path=logs / "ssh-warmup.log")  # untimed: connection and caches warm
        _drop(got)
        data: dict = {"file_bytes": size, "ours": [], "sftp": []}
        for r in range(rounds):
            for what in ("ours", "sftp") if r % 2 == 0 else ("sftp", "ours"):
                if what == "ours":
                    result = _ours("files", target, out_dir / "ours.tar", "AIRFLOW_CONN_SSH_BENCH", conn,
                                   logs / f"ssh-ours-{r}.log")
                    say(f"SSH round {r + 1}: ours tar over ssh {result['work_s']:.2f} s")
                else:
                    measured = measure(sftp, env=env, log_path=logs / f"ssh-sftp-{r}.log")
                    if got.stat().st_size != size:
                        raise RuntimeError("sftp fetched a file of the wrong size")
                    result = {"wall_s": measured.wall_s}
                    _drop(got)
                    say(f"SSH round {r + 1}: sftp get {result['wall_s']:.2f} s")
                data[what].append(result)
        return data
    finally:
        server.cleanup()
        shutil.rmtree(remote, ignore_errors=True)
        shutil.rmtree(client, ignore_errors=True)
        shutil.rmtree(work / "ssh", ignore_errors=True)


def run(work: Path, logs: Path, rounds: int, say, maria_rows: int = MARIA_ROWS) -> dict:
    if os.geteuid() != 0:
        say("sources: skipped (sshd and the throwaway MariaDB need root)")
        return {}
    missing = [t for t in ("mariadb-install-db", "mariadbd", "mariadb-dump", "zstd", "sftp", "/usr/sbin/sshd")
               if not shutil.which(t)]
    if missing:
        say(f"sources: skipped (missing {', '.join(missing)})")
        return {}
    return {"maria": bench_mariadb(work, logs, rounds, say, maria_rows), "ssh": bench_ssh(work, logs, rounds, say)}


# --- the report ----------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def build_rows(data: dict) -> list[list[str]]:
    if not data:
        return [["8", "MariaDB / SSH sources", "skipped (needs root)", "", "", "", "n/a"]]
    maria, ssh = data["maria"], data["ssh"]
    dump = _median([r["original_bytes"] for r in maria["ours"]])
    ours = _median([r["work_s"] for r in maria["ours"]])
    copy_s = _median([r["copy_s"] for r in maria["ours"]])
    check_s = _median([r["check_s"] for r in maria["ours"]])
    pipe = _median([r["wall_s"] for r in maria["pipe"]])
    ours_size = _median([r["compressed_bytes"] for r in maria["ours"]])
    pipe_size = _median([r["bytes"] for r in maria["pipe"]])
    size = ssh["file_bytes"]
    tar_s = _median([r["work_s"] for r in ssh["ours"]])
    sftp_s = _median([r["wall_s"] for r in ssh["sftp"]])
    ours_rate, sftp_rate = size / MB / tar_s, size / MB / sftp_s
    db = f"{maria['db_bytes'] / MB:,.0f} MB"
    return [
        ["8", f"MariaDB copia + verificar, {db} (in one process)",
         f"{ours:.2f} s, {dump / MB / ours:.0f} MB/s (copia {copy_s:.2f} + verificar {check_s:.2f})",
         f"mariadb-dump | zstd -3 -T0 > f: {pipe:.2f} s, {dump / MB / pipe:.0f} MB/s",
         f"{ours / pipe:.3f}x", f"<= {GOALS['maria']:.2f}x", _verdict(ours / pipe <= GOALS["maria"])],
        ["8", f"MariaDB compressed size, {db}", f"{ours_size / MB:.1f} MB (dump {dump / MB:.0f} MB)",
         f"pipeline: {pipe_size / MB:.1f} MB", f"{ours_size / pipe_size:.3f}x",
         f"<= {GOALS['maria_size']:.2f}x", _verdict(ours_size / pipe_size <= GOALS["maria_size"])],
        ["9", f"SSH pull, {size / MB:,.0f} MB file (throughput ours/sftp)",
         f"tar over ssh: {tar_s:.2f} s, {ours_rate:.0f} MB/s", f"sftp -b get: {sftp_s:.2f} s, {sftp_rate:.0f} MB/s",
         f"{ours_rate / sftp_rate:.3f}x", f">= {GOALS['ssh']:.2f}x", _verdict(ours_rate / sftp_rate >= GOALS["ssh"])],
    ]


def rounds_text(data: dict) -> str:
    if not data:
        return "- MariaDB / SSH: skipped"

    def values(items, key):
        return ", ".join(f"{r[key]:.2f}" for r in items)

    maria, ssh = data["maria"], data["ssh"]
    return "\n".join([
        f"- MariaDB, copia + verificar_fecha: {values(maria['ours'], 'work_s')}; mariadb-dump | zstd: "
        f"{values(maria['pipe'], 'wall_s')}",
        f"- SSH 1 GB, FilesSource.copy: {values(ssh['ours'], 'work_s')}; sftp -b get: {values(ssh['sftp'], 'wall_s')}",
    ])


def data_text(data: dict) -> str:
    if not data:
        return ""
    maria, ssh = data["maria"], data["ssh"]
    dump = _median([r["original_bytes"] for r in maria["ours"]])
    return (f"MariaDB (`devtools.demo_data.tesoreria_mariadb_sql({MARIA_BASE_ROWS:,})`, its payments then copied "
            f"with a new beneficiary suffix, value and date): {maria['db_bytes'] / MB:,.0f} MB on disk "
            f"({maria['rows']:,} payment rows; SQL dump {dump / MB:,.0f} MB). "
            f"SSH: one {ssh['file_bytes'] / MB:,.0f} MB file ({SSH_RANDOM_MB} MiB random + {SSH_TEXT_MB} MiB text).")


HOW = """- 8: `MysqlSource().copy(target, X.sql.zst)` then `verify_staged` and `read_stamp` (copia + verificar_fecha:
  the dump compressed in flight, fsync, then the whole file hashed, decompressed to the end of its last frame and
  its footer read), timed in a helper process
  (`python -m bench.sources mysql`) after its imports, the connection in `AIRFLOW_CONN_MARIA_BENCH` for a user
  with only SELECT, SHOW VIEW, TRIGGER, EVENT and SELECT on mysql.proc. Bare: `bash -c "mariadb-dump
  --defaults-extra-file=F <mysql.DUMP_OPTIONS> DB | zstd -3 -T0 > file"`, same user, no fsync, no read-back.
  MB/s = SQL dump bytes / wall time.
- 9: `FilesSource().copy` of a 1 GB file's folder over OpenSSH (remote `tar` into a local `.tar`, fsynced) in the
  same helper process, against `sftp -b` (`get` into a local file) with the same key and known_hosts
  (`StrictHostKeyChecking=yes`); both to sshd on loopback (`devtools.servers.SshServer`). MB/s = file bytes /
  wall time; the ratio is ours/sftp throughput."""


# --- the helper process: ours, timed after the imports ------------------------------------------


def _helper(kind: str, target_json: str, dest: str, out: str) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import airflow.sdk  # noqa: F401 - loaded in every task process already

    log = logging.getLogger("respaldo.bench")
    target_dict, path = json.loads(target_json), Path(dest)
    result: dict = {}
    if kind == "mysql":
        from respaldo.integridad import verify_staged
        from respaldo.sources.mysql import MysqlSource

        source = MysqlSource()
        target = source.model.model_validate(target_dict)
        began = time.perf_counter()
        copied = source.copy(target, path, log)
        middle = time.perf_counter()
        verified = verify_staged(path, expected_sha256=copied.sha256, original_bytes=copied.original_bytes)
        if not verified.intact:
            raise SystemExit(verified.reason)
        source.read_stamp(target, path, verified)
        ended = time.perf_counter()
        result.update(copy_s=middle - began, check_s=ended - middle, work_s=ended - began,
                      compressed_bytes=copied.bytes, original_bytes=copied.original_bytes)
    elif kind == "files":
        from respaldo.sources.files import FilesSource

        source = FilesSource()
        target = source.model.model_validate(target_dict)
        began = time.perf_counter()
        copied = source.copy(target, path, log)
        result.update(work_s=time.perf_counter() - began, bytes=copied.bytes)
    else:
        raise SystemExit(f"unknown kind {kind}")
    Path(out).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    _helper(*sys.argv[1:5])
