"""PostgreSQL backups run through Airflow (``dag.test``) against a real server, then restored."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import signal
import subprocess
import threading
import time
import uuid
import zoneinfo
from pathlib import Path

import psycopg
import pytest
from conftest import BACKUP_PASSWORD, METADATA_DB, SYSTEM_PG, assert_only_its_own_environment, read_process

from devtools.demo_data import table_checksums_sql

BOGOTA = zoneinfo.ZoneInfo("America/Bogota")
FINANCIERO = {"id": "financiero_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_fuente",
              "database": "financiero"}
SISTEMA = {"id": "sistema_informacion_pg", "kind": "postgres", "frequency": "diario", "conn_id": "pg_fuente",
           "database": "sistema_informacion"}


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()}


def restore(source_pg, artifact: Path) -> str:
    """Restore an artifact with standard tools alone into a new database; return its name."""
    name = f"restaurada_{uuid.uuid4().hex[:8]}"
    source_pg.psql(f"CREATE DATABASE {name}")
    env = source_pg.env(database=name)
    subprocess.run(f"zstd -dc '{artifact}' | pg_restore --no-owner --exit-on-error -d {name}", shell=True,
                   check=True, env=env, capture_output=True)
    return name


def staged_files(root: Path) -> list[Path]:
    return [p for p in (root / ".staging").rglob("*") if p.is_file()] if (root / ".staging").exists() else []


def test_backup_restores_to_the_same_data_and_registers_success(backups, source_pg, register_rows):
    backups.write([FINANCIERO, SISTEMA])
    run = backups.run("respaldo_diario", conf={"responsable": "Ana Pérez", "observaciones": "prueba de restauración"})

    assert states(run) == {"preparar": "success", "cierre": "success",
                           **{f"sistema_informacion_pg.{step}": "success"
                              for step in ("copia", "verificar_fecha", "comprimir", "registrar")}}
    [row] = register_rows(target="sistema_informacion_pg", run_id=run.run_id)
    assert row["status"] == "success" and row["error"] is None
    assert (row["kind"], row["frequency"], row["mechanism"]) == ("postgres", "diario", "automatic")
    assert (row["responsible"], row["notes"]) == ("Ana Pérez", "prueba de restauración")
    assert row["dag_id"] == "respaldo_diario" and row["compression"] == "zstd-3"
    assert row["started_at"].replace(microsecond=0) <= row["backup_at"] <= row["finished_at"]  # stamp: 1 s

    artifact = Path(row["artifact_path"])
    local = row["backup_at"].astimezone(BOGOTA)
    assert artifact == (backups.root / "diario" / "sistema_informacion_pg" / f"{local:%Y}" / f"{local:%m}"
                        / f"sistema_informacion_pg_{local:%Y%m%dT%H%M%S}.dump.zst")
    assert artifact.stat().st_size == row["compressed_bytes"] < row["original_bytes"]
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == row["sha256"]
    check = subprocess.run(["sha256sum", "-c", artifact.name + ".sha256"], cwd=artifact.parent,
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == f"{artifact.name}: OK"
    assert staged_files(backups.root) == []

    restored = restore(source_pg, artifact)
    expected = source_pg.psql(table_checksums_sql(), database="sistema_informacion").stdout
    assert "tramites|3000:" in expected
    assert source_pg.psql(table_checksums_sql(), database=restored).stdout == expected


def test_the_param_form_limits_the_run_to_the_chosen_targets(backups, register_rows):
    other = {**FINANCIERO, "id": "otro_pg"}
    backups.write([FINANCIERO, other])
    run = backups.run("respaldo_financiero", conf={"objetivos": ["otro_pg"]})

    result = states(run)
    assert result["otro_pg.registrar"] == "success"
    assert {result[f"financiero_pg.{s}"] for s in ("copia", "verificar_fecha", "comprimir", "registrar")} == {
        "skipped"}
    assert register_rows(target="financiero_pg", run_id=run.run_id) == []
    assert list((backups.root / "financiero").iterdir()) == [backups.root / "financiero" / "otro_pg"]


def test_a_wrong_password_is_a_failed_row_and_an_email_and_keeps_earlier_backups(backups, smtp, register_rows):
    backups.write([FINANCIERO])
    first = backups.run("respaldo_financiero")
    [good] = register_rows(target="financiero_pg", run_id=first.run_id)
    earlier = {p: p.read_bytes() for p in backups.root.rglob("*") if p.is_file()}
    assert len(earlier) == 2

    backups.write([{**FINANCIERO, "conn_id": "pg_clave_mala"}])
    time.sleep(1)  # a new second: the failed copy must not collide with the earlier one's name
    run = backups.run("respaldo_financiero", conf={"responsable": "Turno noche"})

    assert states(run)["financiero_pg.copia"] == "failed"
    assert states(run)["financiero_pg.registrar"] == "upstream_failed"
    [row] = register_rows(target="financiero_pg", run_id=run.run_id)
    assert row["status"] == "failed" and row["step"] == "copia"
    assert "password authentication failed" in row["error"] and row["error"].startswith("Falló «copia»")
    assert row["artifact_path"] is None and row["sha256"] is None and row["responsible"] == "Turno noche"
    assert {p: p.read_bytes() for p in backups.root.rglob("*") if p.is_file()} == earlier
    assert register_rows(target="financiero_pg", run_id=first.run_id) == [good]

    mail = smtp.wait_for(lambda m: run.run_id in m.get_body(("html",)).get_content())
    assert mail["Subject"] == "[respaldo] Falló el respaldo de «financiero_pg» en el paso «copia» (respaldo_financiero)"
    assert "sistemas@example.gov.co" in mail["X-Envelope-To"]
    body = mail.get_body(("html",)).get_content()
    assert "password authentication failed" in body and "FT-GTI-004" in body
    assert "/dags/respaldo_financiero/runs/" in body and "/tasks/financiero_pg.copia" in body  # log link
    assert BACKUP_PASSWORD not in mail.as_string()


def test_a_database_that_is_down_fails_cleanly(backups, register_rows, monkeypatch):
    import json
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_PG_CAIDA", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": dead_port, "login": "x", "password": "y"}))
    backups.write([{**FINANCIERO, "conn_id": "pg_caida"}])
    run = backups.run("respaldo_financiero")

    [row] = register_rows(target="financiero_pg", run_id=run.run_id)
    assert row["status"] == "failed" and "Connection refused" in row["error"] and str(dead_port) in row["error"]
    assert staged_files(backups.root) == []
    assert not list(backups.root.rglob("*.zst"))


def _find_pg_dump(target_id: str, timeout: float = 60) -> int:
    """The pid of the pg_dump respaldo runs for ``target_id`` (its service file names the session)."""
    marker = f"application_name=respaldo {target_id}\n"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if not argv[0].endswith(b"pg_dump"):
                    continue
                service = Path(read_process(int(pid))["environ"]["PGSERVICEFILE"]).read_text()
            except (OSError, KeyError):
                continue
            if marker in service:
                return int(pid)
        time.sleep(0.05)
    raise AssertionError("pg_dump never started")


def test_a_killed_dump_leaves_nothing_partial_and_no_secret_in_argv_or_environment(
    backups, source_pg, register_rows
):
    """pg_dump is held on a table lock, inspected in /proc, then killed with SIGKILL."""
    backups.write([FINANCIERO])
    seen: dict = {}

    def kill_the_dump():
        try:
            pid = _find_pg_dump("financiero_pg")
            time.sleep(0.5)
            seen.update(read_process(pid))
            seen["staged"] = b"\n".join(str(p).encode() for p in staged_files(backups.root))
            os.kill(pid, signal.SIGKILL)
        finally:  # whatever happened, never leave the dump waiting on the lock
            source_pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'respaldo financiero_pg'", check=False)

    with psycopg.connect(host="127.0.0.1", port=source_pg.port, user="postgres", password=source_pg.password,
                         dbname="financiero") as blocker:
        blocker.execute("LOCK TABLE comprobantes IN ACCESS EXCLUSIVE MODE")
        killer = threading.Thread(target=kill_the_dump)
        killer.start()
        run = backups.run("respaldo_financiero")
        killer.join()
        blocker.rollback()

    assert seen["staged"], "the dump had started writing its file before it was killed"
    [row] = register_rows(target="financiero_pg", run_id=run.run_id)
    assert row["status"] == "failed" and "pg_dump terminó con la señal 9" in row["error"]
    assert staged_files(backups.root) == []
    assert not [p for p in backups.root.rglob("*") if p.is_file()]
    # PGSYSCONFDIR is Debian's pg_wrapper's own, added as it execs the real pg_dump.
    assert_only_its_own_environment(seen, {"PGSERVICEFILE", "PGSERVICE", "PGPASSFILE", "PGHOST", "PGPORT",
                                           "PGSYSCONFDIR"}, [BACKUP_PASSWORD])
    assert set(seen["files"]) == {".", "pgpass", "pg_service.conf"}
    assert seen["environ"]["PGPASSFILE"] == str(seen["home"] / "pgpass")


def test_the_password_is_in_no_log_xcom_rendered_field_or_register_row(backups, register_rows, capfd):
    backups.write([FINANCIERO, {**FINANCIERO, "id": "con_clave_mala", "conn_id": "pg_clave_mala"}])
    run = backups.run("respaldo_financiero")
    assert states(run)["financiero_pg.registrar"] == "success"
    assert states(run)["con_clave_mala.copia"] == "failed"

    out, err = capfd.readouterr()
    # Whatever reached the console (how much depends on Airflow's logging set-up by earlier tests);
    # the workers' own log files are checked by test_airflow_e2e.
    assert BACKUP_PASSWORD not in out + err
    for log_file in Path(os.environ["AIRFLOW_HOME"]).rglob("*.log"):
        assert BACKUP_PASSWORD not in log_file.read_text(errors="replace"), log_file
    with psycopg.connect(f"{SYSTEM_PG}/{METADATA_DB}") as conn:
        for table, column in (("xcom", "value"), ("rendered_task_instance_fields", "rendered_fields")):
            values = [str(v) for (v,) in conn.execute(f"SELECT {column}::text FROM {table} WHERE run_id = %s",
                                                      (run.run_id,))]
            assert values or table == "rendered_task_instance_fields", f"nothing in {table}"
            assert not [v for v in values if BACKUP_PASSWORD in v], table
    rows = register_rows(run_id=run.run_id)
    assert len(rows) == 2 and BACKUP_PASSWORD not in repr(rows)


def test_the_scheduled_slot_and_the_real_copy_time_are_both_kept(backups, register_rows):
    """A backfilled or test run for a past slot takes a fresh copy now: nothing pretends it is old."""
    backups.write([FINANCIERO])
    slot = dt.datetime(2026, 3, 17, 13, 0, tzinfo=BOGOTA)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    run = backups.run("respaldo_financiero", logical_date=slot)

    [row] = register_rows(target="financiero_pg", run_id=run.run_id)
    assert row["status"] == "success"
    assert row["logical_date"] == slot
    assert row["backup_at"] >= before
    assert re.search(rf"financiero_pg_{row['backup_at'].astimezone(BOGOTA):%Y%m%dT%H%M%S}\.dump\.zst$",
                     row["artifact_path"])


@pytest.mark.parametrize(("damage", "reason"), [
    ("empty", "La copia copia.dump.zst está vacía."),
    ("truncated header", "La copia copia.dump.zst está truncada: el archivo de pg_dump termina antes de tiempo"),
    ("cut midway", "La copia copia.dump.zst está truncada: el archivo de pg_dump termina antes de tiempo"),
    ("not a dump", "La copia copia.dump.zst no es un archivo de pg_dump completo y legible"),
])
def test_a_damaged_dump_fails_the_date_check_even_inside_a_whole_zst(backups, damage, reason, source_pg, tmp_path):
    """The compression is intact, the dump inside it is not: pg_restore reads it whole and says so."""
    from airflow.sdk.exceptions import AirflowFailException

    from respaldo import tasks

    backups.write([FINANCIERO])
    good = tmp_path / "bueno.dump"
    subprocess.run(["pg_dump", "-Fc", "-Z0", "-f", str(good)], check=True, env=source_pg.env(database="financiero"))
    data = good.read_bytes()
    damaged = {"empty": b"", "truncated header": data[:40], "cut midway": data[: len(data) // 2],
               "not a dump": b"hola " * 100}[damage]
    copy = tmp_path / "copia.dump.zst"
    copy.write_bytes(subprocess.run(["zstd", "-q", "-c", "--check"], input=damaged, capture_output=True,
                                    check=True).stdout)
    started = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    info = {"staging": str(copy), "bytes": copy.stat().st_size, "started_at": started, "compressed": True,
            "original_bytes": len(damaged), "sha256": hashlib.sha256(copy.read_bytes()).hexdigest()}
    settings = {"timezone": "America/Bogota"}
    with pytest.raises(AirflowFailException) as failure:
        tasks.verificar_fecha(FINANCIERO | {"mechanism": "automatic", "responsible": "x"}, settings, info)
    assert str(failure.value).startswith(reason), str(failure.value)


def test_a_copy_stamped_outside_the_run_is_rejected(source_pg, tmp_path):
    """An old dump handed over as if it were this run's copy (a stale file, a wrong clock) fails."""
    from airflow.sdk.exceptions import AirflowFailException

    from respaldo import tasks

    old = tmp_path / "vieja.dump"
    subprocess.run(["pg_dump", "-Fc", "-Z0", "-f", str(old)], check=True, env=source_pg.env(database="financiero"))
    time.sleep(1.1)
    info = {"staging": str(old), "bytes": old.stat().st_size,
            "started_at": dt.datetime.now(dt.UTC).isoformat()}
    with pytest.raises(AirflowFailException, match="no está dentro de la ejecución"):
        tasks.verificar_fecha(FINANCIERO | {"mechanism": "automatic", "responsible": "x"},
                              {"timezone": "America/Bogota"}, info)


def test_a_full_disk_fails_the_copy_plainly_and_keeps_earlier_backups(backups, register_rows):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(backups.root)], check=True)
    try:
        earlier = backups.root / "financiero/financiero_pg/2026/01/financiero_pg_20260101T130000.dump.zst"
        earlier.parent.mkdir(parents=True)
        earlier.write_bytes(b"copia anterior")
        backups.write([FINANCIERO])
        run = backups.run("respaldo_financiero")

        [row] = register_rows(target="financiero_pg", run_id=run.run_id)
        assert row["status"] == "failed" and row["step"] == "copia"
        no_space = f"Falló «copia»: pg_dump: se quedó sin espacio en disco en {backups.root}/.staging/"
        assert row["error"].startswith(no_space), row["error"]
        assert earlier.read_bytes() == b"copia anterior"
        assert [p for p in backups.root.rglob("*") if p.is_file()] == [earlier]
    finally:
        subprocess.run(["umount", str(backups.root)], check=True)


def test_a_typo_in_the_forms_targets_is_refused_before_the_run_starts(backups):
    from airflow.sdk.exceptions import ParamValidationError

    backups.write([FINANCIERO])
    with pytest.raises(ParamValidationError, match="'financero_pg' is not one of \\['financiero_pg'\\]"):
        backups.run("respaldo_financiero", conf={"objetivos": ["financero_pg"]})


def test_an_unknown_typed_target_fails_the_run_once_before_any_copy_and_emails_once(backups, smtp, register_rows,
                                                                                   monkeypatch):
    """Large classes take typed ids (no pick list): ``preparar`` refuses an id that is no target, once."""
    from respaldo import dag_factory

    monkeypatch.setattr(dag_factory, "PICK_LIST_LIMIT", 1)  # typed ids, as in a class of more than 60 targets
    backups.write([FINANCIERO, {**FINANCIERO, "id": "nomina_pg"}])
    run = backups.run("respaldo_financiero", conf={"objetivos": ["financiero_pg", "financero_pg"]})

    result = states(run)
    assert result.pop("preparar") == "failed"
    assert set(result.values()) == {"upstream_failed"}, result
    assert register_rows(run_id=run.run_id) == []
    mail = smtp.wait_for(lambda m: run.run_id in m["Subject"])
    assert mail["Subject"] == (f"[respaldo] La ejecución {run.run_id} de respaldo_financiero no empezó: no se "
                               "respaldó nada")
    body = mail.get_body(("html",)).get_content()
    assert "no existen en respaldo_financiero: financero_pg" in body and "financiero_pg, nomina_pg" in body
    time.sleep(2)
    assert len([m for m in smtp.messages if run.run_id in m["Subject"]]) == 1
    assert list(backups.root.iterdir()) == []


@pytest.fixture
def locked_table(source_pg):
    """Another session holds «comprobantes» in ACCESS EXCLUSIVE mode in an open transaction."""
    with psycopg.connect(host="127.0.0.1", port=source_pg.port, user="postgres", password=source_pg.password,
                         dbname="financiero", application_name="mantenimiento nocturno") as blocker:
        blocker.execute("LOCK TABLE comprobantes IN ACCESS EXCLUSIVE MODE")
        try:
            yield blocker.info.backend_pid
        finally:
            blocker.rollback()


class Remembered(logging.Handler):
    """Keeps the records of one logger (Airflow's logging set-up makes caplog unreliable here)."""

    def __init__(self, name: str):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.log = logging.getLogger(name)
        self.log.setLevel(logging.INFO)
        self.log.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_locked_table_fails_within_the_bound_naming_the_table_and_the_session(
    source_pg, locked_table, tmp_path, monkeypatch
):
    from respaldo.errors import CopyError
    from respaldo.sources import postgres

    monkeypatch.setattr(postgres, "LOCK_CHECK_SECONDS", 0.5)
    target = postgres.PostgresTarget.model_validate(
        FINANCIERO | {"mechanism": "automatic", "responsible": "x", "lock_wait_minutes": 0.1})
    dest = tmp_path / "financiero.dump.zst"
    started = time.monotonic()
    remembered = Remembered("prueba.bloqueo")
    with pytest.raises(CopyError) as failure:
        postgres.PostgresSource().copy(target, dest, remembered.log)
    elapsed = time.monotonic() - started
    failed_at = time.time()

    assert 6 <= elapsed < 20, elapsed
    message = str(failure.value)
    assert message.startswith("pg_dump terminó con código 1: pg_dump esperó más de 0.1 min (lock_wait_minutes) para "
                              "leer la tabla «public.comprobantes» de la base «financiero» en 127.0.0.1:"), message
    holder = f"la sesión {locked_table} (usuario postgres, aplicación «mantenimiento nocturno»)"
    assert f"bloqueada por {holder}" in message
    assert f"SELECT pg_terminate_backend({locked_table})" in message and "aumente lock_wait_minutes" in message
    waiting = [r for r in remembered.records if r.getMessage().startswith("pg_dump lleva ")]
    assert len(waiting) == 1, "said once while nothing changed"
    [line] = waiting
    assert line.levelno == logging.WARNING
    assert re.fullmatch(rf"pg_dump lleva \d s esperando, en la base «financiero» de 127\.0\.0\.1:{source_pg.port}, la "
                        rf"tabla «public\.comprobantes», bloqueada por {re.escape(holder)}\. Si sigue así, la copia se "
                        r"rinde a los 0\.1 min de espera \(lock_wait_minutes\)\.", line.getMessage()), line.getMessage()
    assert line.created < failed_at - 3, "the log said what it waited for while it waited"
    assert not dest.exists()


def test_without_the_lock_the_same_target_copies(source_pg, tmp_path):
    from respaldo.sources import postgres

    target = postgres.PostgresTarget.model_validate(
        FINANCIERO | {"mechanism": "automatic", "responsible": "x", "lock_wait_minutes": 0.1})
    result = postgres.PostgresSource().copy(target, tmp_path / "financiero.dump.zst", logging.getLogger("prueba"))
    assert result.compressed and result.original_bytes > 100_000


def test_a_locked_table_is_a_failed_row_with_the_plain_reason(backups, locked_table, register_rows):
    backups.write([{**FINANCIERO, "lock_wait_minutes": 0.05}])
    started = time.monotonic()
    run = backups.run("respaldo_financiero")

    assert time.monotonic() - started < 60
    [row] = register_rows(target="financiero_pg", run_id=run.run_id)
    assert row["status"] == "failed" and row["step"] == "copia"
    assert "esperó más de 0.05 min (lock_wait_minutes) para leer la tabla «public.comprobantes»" in row["error"]
    assert f"bloqueada por la sesión {locked_table} (usuario postgres" in row["error"]
    assert staged_files(backups.root) == []
