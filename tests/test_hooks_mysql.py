"""MySQL/MariaDB connections: the provider's options (ssl, ssl_mode, unix_socket) reach the client tools."""

from __future__ import annotations

import json
import logging

import pytest

from devtools.servers import MariaDBServer, make_ca
from respaldo.errors import CopyError
from respaldo.sources.mysql import MysqlSource, MysqlTarget

PASSWORD = "Clave \"TLS\" #2026; ñ"


@pytest.fixture(scope="module")
def tls_mariadb(tmp_path_factory):
    """A MariaDB serving TLS (certificate for 127.0.0.1 from its own CA); its backup user must use TLS."""
    server = MariaDBServer(ssl=True).start()
    server.sql("CREATE DATABASE caja; CREATE TABLE caja.recibos (id INT PRIMARY KEY, valor DECIMAL(12,2)); "
               "INSERT INTO caja.recibos VALUES (1, 10.50), (2, 20.25)")
    server.create_backup_role("cifrado", PASSWORD, database="caja")
    server.sql("ALTER USER 'cifrado'@'%' REQUIRE SSL")
    other_ca, _ = make_ca(tmp_path_factory.mktemp("otra_ca"), "otra CA")
    base = {"conn_type": "mysql", "host": "127.0.0.1", "port": server.port, "login": "cifrado", "password": PASSWORD,
            "schema": "caja"}
    connections = {
        "mysql_tls": {**base, "extra": {"ssl": {"ca": str(server.tls.ca)}, "ssl_mode": "VERIFY_IDENTITY"}},
        "mysql_tls_ca_ajena": {**base, "extra": {"ssl": {"ca": str(other_ca)}, "ssl_mode": "VERIFY_CA"}},
        # No host: the provider's default "localhost", which the clients reach through unix_socket.
        "mysql_socket": {**{k: v for k, v in base.items() if k not in ("host", "port")},
                         "extra": {"unix_socket": str(server.socket)}},
    }
    with pytest.MonkeyPatch.context() as patch:
        for conn_id, connection in connections.items():
            patch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        yield server
    server.cleanup()


def target(conn_id: str) -> MysqlTarget:
    return MysqlTarget.model_validate({"id": "caja_mysql", "kind": "mysql", "frequency": "diario",
                                       "responsible": "x", "conn_id": conn_id})


@pytest.mark.parametrize("conn_id", ["mysql_tls", "mysql_socket"])
def test_tls_with_a_verified_server_and_a_unix_socket_both_copy(tls_mariadb, tmp_path, conn_id):
    dest = tmp_path / "caja.sql"
    MysqlSource().copy(target(conn_id), dest, logging.getLogger("prueba"))
    assert "(1,10.50),\n(2,20.25);" in dest.read_text(encoding="utf-8")
    where = f"localhost ({tls_mariadb.socket})" if conn_id == "mysql_socket" else f"127.0.0.1:{tls_mariadb.port}"
    assert MysqlSource().check(target(conn_id)) == f"base «caja» en {where} como cifrado@%"


def test_a_server_certificate_from_another_authority_is_refused_with_a_plain_reason(tls_mariadb, tmp_path):
    """MariaDB's clients use TLS whenever the server offers it; only ssl.ca with ssl_mode makes them verify it."""
    with pytest.raises(CopyError) as failure:
        MysqlSource().copy(target("mysql_tls_ca_ajena"), tmp_path / "caja.sql", logging.getLogger("prueba"))
    message = str(failure.value)
    assert message.startswith(f"No se pudo abrir la base «caja» en 127.0.0.1:{tls_mariadb.port}: no se pudo "
                              f"establecer la conexión cifrada (TLS) con 127.0.0.1:{tls_mariadb.port}: revise los "
                              "extras «ssl» (su «ca») y «ssl_mode» de la conexión «mysql_tls_ca_ajena»"), message
    assert PASSWORD not in message and list(tmp_path.iterdir()) == []
