"""PostgreSQL connections: the provider's options (SSL) reach pg_dump and psql, against a real TLS server."""

from __future__ import annotations

import json
import logging
import re
import subprocess

import pytest
from conftest import BACKUP_PASSWORD, BACKUP_ROLE

from devtools.servers import PostgresServer, make_ca
from respaldo.errors import CopyError
from respaldo.sources.postgres import PostgresSource, PostgresTarget


@pytest.fixture(scope="module")
def ssl_pg(tmp_path_factory):
    """A PostgreSQL that accepts TCP connections over TLS only, with a certificate for 127.0.0.1 from its own CA."""
    server = PostgresServer(ssl=True).start()
    server.psql("CREATE DATABASE cifrada")
    server.psql("CREATE TABLE pagos (id int PRIMARY KEY, valor numeric); "
                "INSERT INTO pagos SELECT g, g * 1.5 FROM generate_series(1, 500) g", database="cifrada")
    server.create_backup_role(BACKUP_ROLE, BACKUP_PASSWORD)
    other_ca, _ = make_ca(tmp_path_factory.mktemp("otra_ca"), "otra CA")
    base = {"conn_type": "postgres", "host": "127.0.0.1", "port": server.port, "login": BACKUP_ROLE,
            "password": BACKUP_PASSWORD, "schema": "cifrada"}
    connections = {
        "pg_ssl": {"sslmode": "verify-full", "sslrootcert": str(server.tls.ca)},
        "pg_ssl_ca_ajena": {"sslmode": "verify-full", "sslrootcert": str(other_ca)},
        "pg_ssl_sin_archivo": {"sslmode": "verify-full", "sslrootcert": "/no/existe/ca.crt"},
        "pg_ssl_desactivado": {"sslmode": "disable"},
    }
    with pytest.MonkeyPatch.context() as patch:
        for conn_id, extra in connections.items():
            patch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({**base, "extra": extra}))
        patch.setenv("AIRFLOW_CONN_PG_SSL_OTRO_NOMBRE", json.dumps(
            {**base, "host": "localhost", "extra": connections["pg_ssl"]}))
        yield server
    server.cleanup()


def target(conn_id: str) -> PostgresTarget:
    return PostgresTarget.model_validate({"id": "cifrada_pg", "kind": "postgres", "frequency": "diario",
                                          "responsible": "x", "conn_id": conn_id})


def test_verify_full_with_the_servers_root_certificate_copies_over_tls(ssl_pg, tmp_path):
    result = PostgresSource().copy(target("pg_ssl"), tmp_path / "cifrada.dump.zst", logging.getLogger("prueba"))
    assert result.compressed and result.original_bytes > 1000
    restored = subprocess.run(f"zstd -dc '{result.path}' | pg_restore --list", shell=True, capture_output=True,
                              text=True, check=True).stdout
    assert "TABLE DATA public pagos" in restored
    checked = PostgresSource().check(target("pg_ssl"))
    assert re.fullmatch(rf"base «cifrada» en 127\.0\.0\.1:{ssl_pg.port} como {BACKUP_ROLE} "
                        r"\(PostgreSQL 15\.\d+, pg_dump 15\.\d+\)", checked), checked


@pytest.mark.parametrize(("conn_id", "reason"), [
    ("pg_ssl_ca_ajena", "el certificado del servidor 127.0.0.1:{port} no lo firmó la autoridad que indica la "
                        "conexión «pg_ssl_ca_ajena» (extra sslrootcert): ponga allí el certificado raíz (CA) de ese "
                        "servidor."),
    ("pg_ssl_otro_nombre", "el certificado del servidor no corresponde al nombre «localhost» (sslmode=verify-full "
                           "en la conexión «pg_ssl_otro_nombre»)"),
    ("pg_ssl_sin_archivo", "no existe o no se puede leer el archivo «/no/existe/ca.crt» que indica la conexión "
                           "«pg_ssl_sin_archivo»"),
    ("pg_ssl_desactivado", "el servidor 127.0.0.1:{port} solo acepta conexiones cifradas (SSL) y la conexión "
                           "«pg_ssl_desactivado» no lo usa"),
], ids=["raiz-ajena", "otro-nombre", "sin-archivo", "sslmode-disable"])
def test_a_tls_problem_fails_the_copy_and_the_check_with_a_plain_reason(ssl_pg, tmp_path, conn_id, reason):
    reason = reason.format(port=ssl_pg.port)
    dest = tmp_path / "cifrada.dump.zst"
    with pytest.raises(CopyError) as copy_failure:
        PostgresSource().copy(target(conn_id), dest, logging.getLogger("prueba"))
    assert str(copy_failure.value).startswith(f"pg_dump terminó con código 1: {reason}"), str(copy_failure.value)
    assert not dest.exists()
    with pytest.raises(CopyError) as check_failure:
        PostgresSource().check(target(conn_id))
    where = "localhost:" if conn_id == "pg_ssl_otro_nombre" else "127.0.0.1:"
    assert str(check_failure.value).startswith(f"No responde la base «cifrada» en {where}{ssl_pg.port}: {reason}")
    assert BACKUP_PASSWORD not in str(copy_failure.value) + str(check_failure.value)


def test_a_missing_connection_is_named_for_every_database_kind(tmp_path):
    from respaldo.sources.mysql import MysqlSource, MysqlTarget

    cases = [(PostgresSource(), target("pg_no_existe")),
             (MysqlSource(), MysqlTarget.model_validate({"id": "m", "kind": "mysql", "frequency": "diario",
                                                         "responsible": "x", "conn_id": "mysql_no_existe"}))]
    for source, missing in cases:
        with pytest.raises(CopyError, match=f"^No existe la conexión de Airflow «{missing.conn_id}»: créela en Admin"):
            source.copy(missing, tmp_path / "copia", logging.getLogger("prueba"))
        assert not (tmp_path / "copia").exists()


def test_a_pg_dump_older_than_its_server_is_told_plainly_with_what_to_install():
    from types import SimpleNamespace

    from respaldo.hooks.postgres import explain_libpq

    # pg_dump's own words when its server is newer (src/bin/pg_dump/pg_backup_db.c).
    text = ("pg_dump: error: aborting because of server version mismatch\n"
            "pg_dump: detail: server version: 16.4 (Debian 16.4-1.pgdg120+1); pg_dump version: 15.14 (Debian "
            "15.14-0+deb12u1)")
    reason = explain_libpq(text, SimpleNamespace(where="10.0.0.5:5432", conn_id="pg_sede", host="10.0.0.5", user="x"))
    assert "el servidor 10.0.0.5:5432 es PostgreSQL 16.4" in reason
    assert "pg_dump de este equipo es 15.14" in reason and "postgresql-client-16" in reason


def test_pg_dump_version_reads_the_tool_on_path():
    from respaldo.sources.postgres import pg_dump_version

    number, text = pg_dump_version({"PATH": "/usr/lib/postgresql/15/bin:/usr/bin:/bin"})
    assert number // 10000 == 15 and text.startswith("15.")
    real = subprocess.run(["/usr/lib/postgresql/15/bin/pg_dump", "--version"], capture_output=True, text=True).stdout
    assert text in real
    with pytest.raises(CopyError, match="versión de pg_dump"):
        pg_dump_version({"PATH": "/nonexistent"})
