"""MySQL/MariaDB backups run through Airflow (``dag.test``) against a real MariaDB, then restored."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import shlex
import subprocess
import threading
import time
import uuid
import zoneinfo
from pathlib import Path

import pytest
from conftest import (
    METADATA_DB,
    MYSQL_BACKUP_PASSWORD,
    MYSQL_BACKUP_USER,
    SYSTEM_PG,
    assert_only_its_own_environment,
    read_process,
    write_inventory,
)
from test_backup_postgres import staged_files, states

from respaldo.errors import CopyError
from respaldo.sources.mysql import DUMP_OPTIONS, MysqlSource, MysqlTarget, missing_privileges, reads_routines

ROOT = Path(__file__).resolve().parents[1]
BOGOTA = zoneinfo.ZoneInfo("America/Bogota")
STEPS = ("copia", "verificar_fecha", "comprimir", "registrar")
TESORERIA = {"id": "tesoreria_mysql", "kind": "mysql", "frequency": "diario", "conn_id": "mysql_fuente",
             "database": "tesoreria"}
#: What the inventory adds to every target (for calling the task callables directly).
FILLED = {"mechanism": "automatic", "responsible": "Profesional universitario área de sistemas"}
#: The documented way to restore as a user who may not create objects for other definers.
STRIP_DEFINERS = "sed -E '/^INSERT INTO /!s/DEFINER=`[^`]*`(@`[^`]*`)?//g'"


def pipe(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True)


def restore(server, artifact: Path) -> str:
    """Restore an artifact with standard tools alone (zstd, mariadb) into a new database; return its name."""
    name = f"restaurada_{uuid.uuid4().hex[:8]}"
    server.sql(f"CREATE DATABASE {name}")
    proc = pipe(f"zstd -dc {shlex.quote(str(artifact))} | {shlex.join(server.client_argv(name))}")
    assert proc.returncode == 0, proc.stderr
    return name


def one(server, sql: str, database: str) -> str:
    return server.sql(sql, database).stdout.rstrip("\n")


def dump_by_hand(server, path: Path, *extra: str) -> Path:
    """mariadb-dump run directly as the administrator, with respaldo's options."""
    argv = ["mariadb-dump", "--no-defaults", f"--socket={server.socket}", f"--user={server.admin}", *DUMP_OPTIONS,
            *extra, "tesoreria"]
    with path.open("wb") as out:
        subprocess.run(argv, stdout=out, check=True, env={**os.environ, "TZ": "UTC"})
    return path


def test_a_mysql_backup_restores_into_another_database_with_its_trigger_routines_view_and_event(
    backups, source_mariadb, register_rows
):
    backups.write([TESORERIA])
    run = backups.run("respaldo_diario", conf={"responsable": "Ana Pérez"})

    assert states(run) == {"preparar": "success", "cierre": "success",
                           **{f"tesoreria_mysql.{step}": "success" for step in STEPS}}
    [row] = register_rows(target="tesoreria_mysql", run_id=run.run_id)
    assert row["status"] == "success" and row["error"] is None and row["step"] == "registrar"
    assert (row["kind"], row["frequency"], row["responsible"]) == ("mysql", "diario", "Ana Pérez")
    assert row["started_at"].replace(microsecond=0) <= row["backup_at"] <= row["finished_at"]
    artifact = Path(row["artifact_path"])
    local = row["backup_at"].astimezone(BOGOTA)
    assert artifact == (backups.root / "diario" / "tesoreria_mysql" / f"{local:%Y}" / f"{local:%m}"
                        / f"tesoreria_mysql_{local:%Y%m%dT%H%M%S}.sql.zst")
    assert 0 < artifact.stat().st_size == row["compressed_bytes"] < row["original_bytes"]
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == row["sha256"]
    check = subprocess.run(["sha256sum", "-c", artifact.name + ".sha256"], cwd=artifact.parent,
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == f"{artifact.name}: OK"
    assert staged_files(backups.root) == []

    text = subprocess.run(["zstd", "-dc", str(artifact)], capture_output=True, check=True).stdout
    assert len(text) == row["original_bytes"]
    assert b"CREATE DATABASE" not in text
    assert not [line for line in text.splitlines() if line.lstrip().upper().startswith(b"USE ")]
    assert text.rstrip(b"\n").rsplit(b"\n", 1)[1].startswith(b"-- Dump completed on ")

    server = source_mariadb
    restored = restore(server, artifact)
    try:
        assert server.table_checksums(restored) == server.table_checksums("tesoreria")
        assert server.table_checksums(restored)["pagos"][0] == 3000
        assert one(server, "SELECT nombre FROM cuentas WHERE codigo = '1110-EMOJI'", restored) == (
            "Cuenta de ensayo 💰 «año» — Ñ")
        for check_sql in ("SELECT * FROM saldos ORDER BY codigo",
                          "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES "
                          "WHERE ROUTINE_SCHEMA = DATABASE() ORDER BY 2",
                          "SELECT TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION FROM information_schema.TRIGGERS "
                          "WHERE TRIGGER_SCHEMA = DATABASE()",
                          "SELECT EVENT_NAME, STATUS, INTERVAL_VALUE, INTERVAL_FIELD FROM information_schema.EVENTS "
                          "WHERE EVENT_SCHEMA = DATABASE()"):
            assert one(server, check_sql, restored) == one(server, check_sql, "tesoreria") != "", check_sql

        # The routines and the trigger work in the copy: a payment through the procedure lowers the balance.
        before = one(server, "SELECT saldo_de('11100007')", restored)
        server.sql("CALL registrar_pago('11100007', 'Prueba de restauración', 1234.50, 'Anticipo ñ 🧾')", restored)
        assert float(one(server, "SELECT saldo_de('11100007')", restored)) == pytest.approx(float(before) - 1234.50)
        assert one(server, "SELECT COUNT(*) FROM pagos", restored) == "3001"
        assert one(server, "SELECT COUNT(*) FROM pagos", "tesoreria") == "3000"
    finally:
        server.sql(f"DROP DATABASE {restored}")


def test_a_dump_restores_under_a_user_without_set_user_once_definers_are_stripped(
    backups, source_mariadb, register_rows
):
    """DEFINERs are kept in the copy; an unprivileged restore strips them on the way in, as documented."""
    backups.write([TESORERIA])
    run = backups.run("respaldo_diario")
    [row] = register_rows(target="tesoreria_mysql", run_id=run.run_id)
    artifact = Path(row["artifact_path"])
    server = source_mariadb
    password = "restaurador-" + uuid.uuid4().hex[:8]
    server.sql(f"CREATE USER restaurador@'%' IDENTIFIED BY '{password}'")
    client = ["mariadb", "--no-defaults", "--host=127.0.0.1", f"--port={server.port}", "--user=restaurador",
              f"--password={password}", "--default-character-set=utf8mb4"]
    created: list[str] = []
    try:
        for attempt in ("as dumped", "definers stripped"):
            name = f"restaurada_{uuid.uuid4().hex[:8]}"
            created.append(name)
            server.sql(f"CREATE DATABASE {name}; GRANT ALL ON {name}.* TO restaurador@'%'")
            through = f"{STRIP_DEFINERS} | " if attempt == "definers stripped" else ""
            proc = pipe(f"zstd -dc {shlex.quote(str(artifact))} | {through}{shlex.join(client)} {name}")
            if attempt == "as dumped":
                assert proc.returncode != 0 and "SET USER" in proc.stderr, proc.stderr
            else:
                assert proc.returncode == 0, proc.stderr
                assert server.table_checksums(name) == server.table_checksums("tesoreria")
                assert one(server, "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = "
                           "DATABASE()", name) == "2"
                assert one(server, "SELECT DEFINER FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = "
                           "DATABASE()", name) == "restaurador@%"
    finally:
        server.sql("".join(f"DROP DATABASE IF EXISTS {name};" for name in created) + "DROP USER restaurador@'%'")


def test_a_wrong_password_is_a_failed_row_and_an_email_and_leaves_nothing_on_disk(
    backups, source_mariadb, smtp, register_rows
):
    backups.write([{**TESORERIA, "conn_id": "mysql_clave_mala"}])
    run = backups.run("respaldo_diario", conf={"responsable": "Turno noche"})

    assert states(run)["tesoreria_mysql.copia"] == "failed"
    assert states(run)["tesoreria_mysql.registrar"] == "upstream_failed"
    [row] = register_rows(target="tesoreria_mysql", run_id=run.run_id)
    assert row["status"] == "failed" and row["step"] == "copia" and row["responsible"] == "Turno noche"
    assert row["error"].startswith("Falló «copia»: No se pudo abrir la base «tesoreria» en 127.0.0.1:")
    assert f"rechazó el usuario «{MYSQL_BACKUP_USER}» o su clave" in row["error"]
    assert "Access denied" in row["error"]
    assert row["artifact_path"] is None and row["sha256"] is None
    assert not [p for p in backups.root.rglob("*") if p.is_file()]

    mail = smtp.wait_for(lambda m: run.run_id in m.get_body(("html",)).get_content())
    assert mail["Subject"] == "[respaldo] Falló el respaldo de «tesoreria_mysql» en el paso «copia» (respaldo_diario)"
    assert "rechazó el usuario" in mail.get_body(("html",)).get_content()
    assert MYSQL_BACKUP_PASSWORD not in mail.as_string()


def test_a_missing_database_fails_cleanly(backups, source_mariadb, register_rows):
    backups.write([{**TESORERIA, "database": "no_existe"}])
    run = backups.run("respaldo_diario")

    [row] = register_rows(target="tesoreria_mysql", run_id=run.run_id)
    assert row["status"] == "failed" and row["step"] == "copia"
    # A least-privileged user cannot tell a missing database from a forbidden one: the server says the same.
    assert (f"el usuario «{MYSQL_BACKUP_USER}» no puede entrar a la base «no_existe»: no existe en "
            f"127.0.0.1:{source_mariadb.port} o no se le otorgaron privilegios sobre ella") in row["error"]
    assert not [p for p in backups.root.rglob("*") if p.is_file()]


def _find_dump(database: str, timeout: float = 60) -> int:
    """The mariadb-dump respaldo runs for ``database`` (its last argument)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"mariadb-dump") and argv[-1] == database.encode():
                return int(pid)
        time.sleep(0.05)
    raise AssertionError("mariadb-dump never started")


def test_a_killed_dump_leaves_nothing_partial_and_no_secret_in_argv_or_environment(
    backups, source_mariadb, register_rows
):
    """mariadb-dump is held on a table lock, inspected in /proc, then killed with SIGKILL."""
    import MySQLdb

    backups.write([TESORERIA])
    seen: dict = {}

    def kill_the_dump():
        try:
            pid = _find_dump("tesoreria")
            time.sleep(0.5)
            seen.update(read_process(pid))
            seen["staged"] = [p.stat().st_size for p in staged_files(backups.root)]
        finally:  # whatever happened above, never leave the dump waiting on the lock
            subprocess.run(["pkill", "-KILL", "-f", "^mariadb-dump .* tesoreria$"], check=False)

    blocker = MySQLdb.connect(unix_socket=str(source_mariadb.socket), user=source_mariadb.admin,
                              database="tesoreria")
    try:
        blocker.cursor().execute("LOCK TABLES pagos WRITE")
        killer = threading.Thread(target=kill_the_dump)
        killer.start()
        run = backups.run("respaldo_diario")
        killer.join()
    finally:
        blocker.close()

    assert seen["staged"], "the dump had started its (compressed) file before it was killed"
    [row] = register_rows(target="tesoreria_mysql", run_id=run.run_id)
    assert row["status"] == "failed" and "mariadb-dump terminó con la señal 9" in row["error"]
    assert staged_files(backups.root) == []
    assert not [p for p in backups.root.rglob("*") if p.is_file()]
    assert_only_its_own_environment(seen, set(), [MYSQL_BACKUP_PASSWORD])
    assert seen["argv"][1] == f"--defaults-extra-file={seen['home'] / 'cliente.cnf'}"
    assert set(seen["files"]) == {".", "cliente.cnf"}


@pytest.mark.parametrize("damage", ["intact", "footer cut", "cut midway", "empty", "not a dump", "no dump date"])
def test_a_truncated_or_damaged_dump_fails_the_date_check_even_inside_a_whole_zst(source_mariadb, tmp_path, damage):
    """verificar_fecha reads the date mariadb-dump writes as its last line; a dump without it is incomplete."""
    from airflow.sdk.exceptions import AirflowFailException

    from respaldo import tasks

    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    good = dump_by_hand(source_mariadb, tmp_path / "buena.sql", *(["--skip-dump-date"] if damage == "no dump date"
                                                                   else []))
    data = good.read_bytes()
    damaged = {"footer cut": data[: data.rindex(b"\n-- Dump completed")], "cut midway": data[: len(data) // 2],
               "empty": b"", "not a dump": b"hola " * 100}.get(damage, data)
    copy = tmp_path / "copia.sql.zst"  # what production stages: the dump compressed as it arrived
    copy.write_bytes(subprocess.run(["zstd", "-q", "-c", "--check"], input=damaged, capture_output=True,
                                    check=True).stdout)
    info = {"staging": str(copy), "bytes": copy.stat().st_size, "started_at": started.isoformat(),
            "compressed": True, "original_bytes": len(damaged),
            "sha256": hashlib.sha256(copy.read_bytes()).hexdigest()}
    if damage == "intact":
        checked = tasks.verificar_fecha(TESORERIA | FILLED, {"timezone": "America/Bogota"}, info)
        assert started <= dt.datetime.fromisoformat(checked["backup_at"]) <= dt.datetime.now(dt.UTC)
        return
    with pytest.raises(AirflowFailException) as failure:
        tasks.verificar_fecha(TESORERIA | FILLED, {"timezone": "America/Bogota"}, info)
    message = str(failure.value)
    assert message.startswith("La copia copia.sql.zst ")
    assert {"footer cut": "está incompleta o truncada", "cut midway": "está incompleta o truncada",
            "empty": "está vacía", "not a dump": "no es un volcado de mariadb-dump",
            "no dump date": "sin --dump-date"}[damage] in message


def test_the_mysql_password_is_in_no_log_xcom_rendered_field_or_register_row(
    backups, source_mariadb, register_rows, capfd
):
    backups.write([TESORERIA, {**TESORERIA, "id": "con_clave_mala", "conn_id": "mysql_clave_mala"}])
    run = backups.run("respaldo_diario")
    assert states(run)["tesoreria_mysql.registrar"] == "success"
    assert states(run)["con_clave_mala.copia"] == "failed"

    out, err = capfd.readouterr()
    # Whatever reached the console (how much depends on Airflow's logging set-up by earlier tests);
    # the workers' own log files are checked by test_airflow_e2e.
    assert MYSQL_BACKUP_PASSWORD not in out + err
    for log_file in Path(os.environ["AIRFLOW_HOME"]).rglob("*.log"):
        assert MYSQL_BACKUP_PASSWORD not in log_file.read_text(errors="replace"), log_file
    import psycopg

    with psycopg.connect(f"{SYSTEM_PG}/{METADATA_DB}") as conn:
        for table, column in (("xcom", "value"), ("rendered_task_instance_fields", "rendered_fields")):
            values = [str(v) for (v,) in conn.execute(f"SELECT {column}::text FROM {table} WHERE run_id = %s",
                                                      (run.run_id,))]
            assert values or table == "rendered_task_instance_fields", f"nothing in {table}"
            assert not [v for v in values if MYSQL_BACKUP_PASSWORD in v], table
    rows = register_rows(run_id=run.run_id)
    assert len(rows) == 2 and MYSQL_BACKUP_PASSWORD not in repr(rows)


@pytest.fixture
def limited_user(source_mariadb, monkeypatch):
    """A user who may SELECT and SHOW VIEW but lacks TRIGGER, EVENT and mysql.proc."""
    password = "limitado-" + uuid.uuid4().hex[:8]
    source_mariadb.sql(f"CREATE USER limitado@'%' IDENTIFIED BY '{password}'; "
                       "GRANT SELECT, SHOW VIEW ON tesoreria.* TO limitado@'%'")
    monkeypatch.setenv("AIRFLOW_CONN_MYSQL_LIMITADO", source_mariadb.connection_json("limitado", password, "tesoreria"))
    yield password
    source_mariadb.sql("DROP USER limitado@'%'")


def test_a_user_without_trigger_and_routine_privileges_is_refused_instead_of_losing_them_silently(
    source_mariadb, limited_user, tmp_path
):
    # What the check prevents: with SELECT and SHOW VIEW alone, mariadb-dump succeeds without the
    # trigger and the routines (EVENT is granted here only so that it gets that far).
    source_mariadb.sql("GRANT EVENT ON tesoreria.* TO limitado@'%'")
    options = tmp_path / "limitado.cnf"
    options.write_text(f"[client]\nhost=127.0.0.1\nport={source_mariadb.port}\nuser=limitado\n"
                       f"password={limited_user}\n")
    silent = subprocess.run(["mariadb-dump", f"--defaults-extra-file={options}", *DUMP_OPTIONS, "tesoreria"],
                            capture_output=True, text=True)
    assert silent.returncode == 0 and silent.stderr == ""
    assert "CREATE TABLE `pagos`" in silent.stdout
    assert "TRIGGER" not in silent.stdout and "PROCEDURE" not in silent.stdout
    source_mariadb.sql("REVOKE EVENT ON tesoreria.* FROM limitado@'%'")

    dest = tmp_path / "copia.sql"
    target = MysqlTarget.model_validate(TESORERIA | FILLED | {"conn_id": "mysql_limitado"})
    with pytest.raises(CopyError) as failure:
        MysqlSource().copy(target, dest, logging.getLogger("prueba"))
    message = str(failure.value)
    assert message.startswith("Al usuario limitado@% le faltan privilegios para una copia completa de «tesoreria»")
    assert "TRIGGER ON `tesoreria`.*, EVENT ON `tesoreria`.*, SELECT ON mysql.proc" in message
    assert "GRANT TRIGGER ON `tesoreria`.* TO 'limitado'@'%'; GRANT EVENT" in message
    assert not dest.exists()


def test_a_backup_user_granted_its_privileges_through_a_role_is_accepted(source_mariadb, monkeypatch, tmp_path):
    password = "por-rol-" + uuid.uuid4().hex[:8]
    source_mariadb.sql("CREATE ROLE lectura_respaldo; GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON `teso%`.* TO "
                       "lectura_respaldo; GRANT SELECT ON mysql.proc TO lectura_respaldo; "
                       f"CREATE USER por_rol@'%' IDENTIFIED BY '{password}'; GRANT lectura_respaldo TO por_rol@'%'; "
                       "SET DEFAULT ROLE lectura_respaldo FOR por_rol@'%'")
    monkeypatch.setenv("AIRFLOW_CONN_MYSQL_POR_ROL", source_mariadb.connection_json("por_rol", password, "tesoreria"))
    try:
        target = MysqlTarget.model_validate(TESORERIA | FILLED | {"conn_id": "mysql_por_rol"})
        assert MysqlSource().check(target) == f"base «tesoreria» en 127.0.0.1:{source_mariadb.port} como por_rol@%"
        result = MysqlSource().copy(target, tmp_path / "copia.sql", logging.getLogger("prueba"))
        text = result.path.read_text(encoding="utf-8")
        assert "TRIGGER pagos_saldo" in text and "PROCEDURE `registrar_pago`" in text
    finally:
        source_mariadb.sql("DROP USER por_rol@'%'; DROP ROLE lectura_respaldo")


def test_routines_made_under_another_database_collation_are_warned_about(source_mariadb, tmp_path, caplog):
    """mariadb-dump wraps such routines in ALTER DATABASE `<source name>`, which ties the copy to that name."""
    source_mariadb.sql("CREATE DATABASE recaudo CHARACTER SET latin1; USE recaudo; "
                       "CREATE FUNCTION uno() RETURNS INT RETURN 1; ALTER DATABASE recaudo CHARACTER SET utf8mb4; "
                       f"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON recaudo.* TO {MYSQL_BACKUP_USER}@'%'")
    try:
        target = MysqlTarget.model_validate(TESORERIA | FILLED | {"database": "recaudo"})
        with caplog.at_level(logging.WARNING, logger="prueba"):
            result = MysqlSource().copy(target, tmp_path / "copia.sql", logging.getLogger("prueba"))
        assert "ALTER DATABASE `recaudo`" in result.path.read_text(encoding="utf-8")
        [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warning.startswith("Las rutinas uno se crearon con otra colación de la base")
    finally:
        source_mariadb.sql(f"DROP DATABASE recaudo; REVOKE ALL ON recaudo.* FROM {MYSQL_BACKUP_USER}@'%'")


def test_excluded_tables_are_left_out_of_the_copy(source_mariadb, tmp_path):
    dest = tmp_path / "copia.sql"
    target = MysqlTarget.model_validate(TESORERIA | FILLED | {"exclude_tables": ["pagos"]})
    result = MysqlSource().copy(target, dest, logging.getLogger("prueba"))
    text = dest.read_text(encoding="utf-8")
    assert result.bytes == dest.stat().st_size
    assert "CREATE TABLE `cuentas`" in text and "Cuenta de ensayo 💰" in text
    assert "CREATE TABLE `pagos`" not in text and "INSERT INTO `pagos`" not in text


def test_a_row_larger_than_the_dump_tools_default_packet_is_copied(source_mariadb, tmp_path):
    """A 30 MB scanned document in a LONGBLOB: mariadb-dump's default packet (24 MiB) would drop the connection."""
    source_mariadb.sql("SET GLOBAL max_allowed_packet = 1073741824")
    source_mariadb.sql("CREATE DATABASE archivo; CREATE TABLE archivo.escaneos (id INT PRIMARY KEY, pdf LONGBLOB); "
                       "INSERT INTO archivo.escaneos VALUES (1, RANDOM_BYTES(1024)), (2, REPEAT('%PDF', 7500000)); "
                       f"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON archivo.* TO {MYSQL_BACKUP_USER}@'%'")
    try:
        target = MysqlTarget.model_validate(TESORERIA | FILLED | {"database": "archivo"})
        result = MysqlSource().copy(target, tmp_path / "copia.sql", logging.getLogger("prueba"))
        assert result.bytes > 60_000_000
        source_mariadb.sql("CREATE DATABASE archivo_restaurado")
        with result.path.open("rb") as dump:
            subprocess.run(source_mariadb.client_argv("archivo_restaurado"), stdin=dump, check=True)
        assert source_mariadb.table_checksums("archivo_restaurado") == source_mariadb.table_checksums("archivo")
    finally:
        source_mariadb.sql(f"DROP DATABASE archivo; DROP DATABASE IF EXISTS archivo_restaurado; "
                           f"REVOKE ALL ON archivo.* FROM {MYSQL_BACKUP_USER}@'%'")


# (grants as SHOW GRANTS prints them, the database, what is missing)
GRANT_CASES = [
    ("least privileges", ["GRANT USAGE ON *.* TO `r`@`%` IDENTIFIED BY PASSWORD '*AB'",
                          "GRANT SELECT, SHOW VIEW, EVENT, TRIGGER ON `tesoreria`.* TO `r`@`%`"], "tesoreria", []),
    ("global", ["GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON *.* TO `r`@`%`"], "tesoreria", []),
    ("all privileges", ["GRANT ALL PRIVILEGES ON `tesoreria`.* TO `r`@`%`"], "tesoreria", []),
    ("through a role", ["GRANT `lectura` TO `r`@`%`", "GRANT USAGE ON *.* TO `lectura`",
                        "GRANT SELECT, SHOW VIEW, EVENT, TRIGGER ON `tesoreria`.* TO `lectura`"], "tesoreria", []),
    ("wildcard database", ["GRANT SELECT, SHOW VIEW, EVENT, TRIGGER ON `teso%`.* TO `r`@`%`"], "tesoreria", []),
    ("escaped underscore", ["GRANT SELECT, SHOW VIEW, EVENT, TRIGGER ON `caja\\_2`.* TO `r`@`%`"], "cajax2",
     ["SELECT", "SHOW VIEW", "TRIGGER", "EVENT"]),
    ("another database", ["GRANT ALL PRIVILEGES ON `otra`.* TO `r`@`%`"], "tesoreria",
     ["SELECT", "SHOW VIEW", "TRIGGER", "EVENT"]),
    ("table and column grants only", ["GRANT SELECT (`id`), TRIGGER ON `tesoreria`.`pagos` TO `r`@`%`",
                                      "GRANT SELECT ON `tesoreria`.`cuentas` TO `r`@`%`"], "tesoreria",
     ["SELECT", "SHOW VIEW", "TRIGGER", "EVENT"]),
    ("no trigger", ["GRANT SELECT, SHOW VIEW, EVENT ON `tesoreria`.* TO `r`@`%`"], "tesoreria", ["TRIGGER"]),
]


@pytest.mark.parametrize(("grants", "database", "missing"), [c[1:] for c in GRANT_CASES],
                         ids=[c[0] for c in GRANT_CASES])
def test_the_privilege_check_reads_show_grants(grants, database, missing):
    assert missing_privileges(grants, database) == missing


# (grants, whether they let the user read routine bodies without SELECT on mysql.proc)
ROUTINE_CASES = [
    ("database privileges only", ["GRANT SELECT, SHOW VIEW, EVENT, TRIGGER ON `tesoreria`.* TO `r`@`%`"], False),
    ("MariaDB 11.3 SHOW CREATE ROUTINE", ["GRANT SHOW CREATE ROUTINE ON `tesoreria`.* TO `r`@`%`"], True),
    ("MySQL 8 SHOW_ROUTINE", ["GRANT SELECT ON `tesoreria`.* TO `r`@`%`", "GRANT SHOW_ROUTINE ON *.* TO `r`@`%`"],
     True),
    ("global SELECT", ["GRANT SELECT ON *.* TO `r`@`%`"], True),
    ("all privileges on the database", ["GRANT ALL PRIVILEGES ON `tesoreria`.* TO `r`@`%`"], False),
    ("all privileges everywhere", ["GRANT ALL PRIVILEGES ON *.* TO `r`@`%`"], True),
    ("routine grants on another database", ["GRANT SHOW CREATE ROUTINE ON `otra`.* TO `r`@`%`"], False),
]


@pytest.mark.parametrize(("grants", "reads"), [c[1:] for c in ROUTINE_CASES], ids=[c[0] for c in ROUTINE_CASES])
def test_the_routine_check_accepts_each_servers_own_privilege(grants, reads):
    assert reads_routines(grants, "tesoreria") is reads


def test_check_reports_a_mysql_target_and_names_what_is_wrong(source_mariadb, limited_user, tmp_path):
    root = tmp_path / "respaldos"
    root.mkdir()
    inventory = write_inventory(tmp_path / "inv.yaml", root, [
        TESORERIA,
        {**TESORERIA, "id": "clave_mala_mysql", "conn_id": "mysql_clave_mala"},
        {**TESORERIA, "id": "limitado_mysql", "conn_id": "mysql_limitado"},
    ])
    proc = subprocess.run([str(ROOT / ".venv/bin/respaldo"), "check", str(inventory)], capture_output=True,
                          text=True)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (f"[OK] tesoreria_mysql: base «tesoreria» en 127.0.0.1:{source_mariadb.port} como "
            f"{MYSQL_BACKUP_USER}@%") in lines
    [bad] = [line for line in lines if line.startswith("[FALLA] clave_mala_mysql")]
    assert f"rechazó el usuario «{MYSQL_BACKUP_USER}» o su clave" in bad
    [limited] = [line for line in lines if line.startswith("[FALLA] limitado_mysql")]
    assert "TRIGGER ON `tesoreria`.*" in limited and "SELECT ON mysql.proc" in limited
    assert MYSQL_BACKUP_PASSWORD not in proc.stdout + proc.stderr


INVENTORY = """\
organization: Gobernación del Putumayo
storage:
  root: /var/backups/respaldo
alerts:
  email: [sistemas@example.gov.co]
frequencies:
  diario:
    schedule: "0 23 * * *"
targets:
  - id: portal_mysql
    kind: mysql
    frequency: diario
    conn_id: mysql_portal
    database: portal_web
    exclude_tables: [sesiones]
    responsible: Profesional universitario área de sistemas
"""


def test_the_inventory_accepts_a_mysql_target(tmp_path):
    from respaldo.inventory import load_inventory

    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY, encoding="utf-8")
    [target] = load_inventory(path).targets
    assert isinstance(target, MysqlTarget)
    assert (target.conn_id, target.database, target.exclude_tables) == ("mysql_portal", "portal_web", ["sesiones"])
    for name in ("conn_id", "database", "exclude_tables"):
        field = MysqlTarget.model_fields[name]
        assert field.description and field.examples, name


def test_a_misspelled_mysql_key_is_rejected_with_a_suggestion(tmp_path):
    from respaldo.errors import InventoryError
    from respaldo.inventory import load_inventory

    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY.replace("exclude_tables:", "exclude_table:"), encoding="utf-8")
    with pytest.raises(InventoryError) as failure:
        load_inventory(path)
    [problem] = [str(p) for p in failure.value.problems]
    assert problem.startswith(f"{path}:15:")
    assert "clave desconocida «exclude_table». ¿Quiso decir «exclude_tables»?" in problem
