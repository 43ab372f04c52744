"""MySQL/MariaDB connections handed to the client tools (mariadb, mariadb-dump), built on MySqlHook.

The provider's hook turns an Airflow connection into the settings of its mysqlclient driver: host,
port, user, password (an IAM token when the connection asks for one), database, ``unix_socket``,
``ssl`` (``ca``, ``capath``, ``cert``, ``key``, ``cipher``) and ``ssl_mode``. respaldo writes those
same settings to a MySQL option file (0600, in the session's private folder) that the tools read
with ``--defaults-extra-file``: the password never reaches argv or the environment. The private
HOME keeps the worker's ``~/.my.cnf`` (read after our file, it would win) out of the way.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from respaldo.errors import CopyError
from respaldo.hooks.base import ToolSession, connection_problem, minimal_env, private_dir

#: The driver's ``ssl`` keys, as option-file names.
SSL_OPTIONS = {"ca": "ssl-ca", "capath": "ssl-capath", "cert": "ssl-cert", "key": "ssl-key", "cipher": "ssl-cipher"}
#: ``ssl_mode`` as MariaDB's clients spell it (they have no ``ssl-mode`` option; MySQL's clients do).
MARIADB_SSL_MODES = {
    "DISABLED": ["skip-ssl"],
    "PREFERRED": [],
    "REQUIRED": ["ssl"],
    "VERIFY_CA": ["ssl", "ssl-verify-server-cert"],
    "VERIFY_IDENTITY": ["ssl", "ssl-verify-server-cert"],
}


@dataclass
class MysqlSession(ToolSession):
    """A client tool's share of a MySQL/MariaDB connection (see :class:`~respaldo.hooks.base.ToolSession`).

    :param host: server (``localhost`` with a ``unix_socket`` means the socket).
    :param port: TCP port.
    :param user: account.
    :param database: the database the connection or the target names (may be empty).
    :param options_file: the 0600 option file; ``--defaults-extra-file`` must be the tool's first argument.
    """

    host: str = ""
    port: int = 3306
    user: str = ""
    database: str = ""
    options_file: Path | None = None

    def defaults_argument(self) -> str:
        return f"--defaults-extra-file={self.options_file}"


def driver_settings(conn_id: str, *, database: str | None = None) -> dict[str, Any]:
    """The mysqlclient settings ``MySqlHook(mysql_conn_id=conn_id, schema=database).get_conn()`` uses."""
    from airflow.providers.mysql.hooks.mysql import MySqlHook

    try:
        hook = MySqlHook(mysql_conn_id=conn_id, schema=database)
        # The hook's own reading of the connection for its C driver (ours are C clients too); it
        # may change the connection's port for IAM, so it gets a copy.
        return hook._get_conn_config_mysql_client(copy.deepcopy(hook.connection))
    except Exception as err:
        raise CopyError(connection_problem(conn_id, err)) from err


def _option_value(value: Any) -> str:
    """Quote a value for a MySQL option file (the parser unescapes these inside double quotes)."""
    escaped = (str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
               .replace("\t", "\\t"))
    return f'"{escaped}"'


def option_lines(settings: dict[str, Any], conn_id: str, *, mariadb: bool) -> list[str]:
    """The ``[client]`` group of an option file saying what ``settings`` (the driver's) say."""
    lines = ["[client]", f"host={_option_value(settings['host'])}", f"port={int(settings['port'])}"]
    if settings.get("user"):
        lines.append(f"user={_option_value(settings['user'])}")
    if settings.get("passwd"):
        lines.append(f"password={_option_value(settings['passwd'])}")
    if settings.get("unix_socket"):
        lines.append(f"socket={_option_value(settings['unix_socket'])}")
    if settings.get("read_default_group") == "enable-cleartext-plugin":  # IAM tokens travel in clear (over TLS)
        lines.append("enable-cleartext-plugin")
    ssl = settings.get("ssl")
    if ssl is not None and not isinstance(ssl, dict):
        raise CopyError(f"El extra «ssl» de la conexión «{conn_id}» debe ser un objeto JSON, por ejemplo "
                        '{"ca": "/etc/respaldo/ca.pem"}.')
    for key, value in (ssl or {}).items():
        if key in SSL_OPTIONS and value:
            lines.append(f"{SSL_OPTIONS[key]}={_option_value(value)}")
    mode = str(settings.get("ssl_mode") or "").upper()
    if mode:
        if mode not in MARIADB_SSL_MODES:
            raise CopyError(f"El extra «ssl_mode» de la conexión «{conn_id}» debe ser uno de "
                            f"{', '.join(MARIADB_SSL_MODES)}, no «{settings['ssl_mode']}».")
        lines += MARIADB_SSL_MODES[mode] if mariadb else [f"ssl-mode={mode}"]
    elif ssl and mariadb:
        lines.append("ssl")
    return lines


@contextlib.contextmanager
def client_session(conn_id: str, *, database: str | None = None, mariadb: bool = True
                   ) -> Generator[MysqlSession, None, None]:
    """What a MySQL/MariaDB client tool needs to reach ``conn_id``; the option file is removed on exit.

    :param conn_id: an Airflow connection of type mysql.
    :param database: the database to open (default: the connection's ``schema``).
    :param mariadb: whether the tools are MariaDB's (else MySQL's, which spell SSL modes differently).
    """
    settings = driver_settings(conn_id, database=database)
    lines = option_lines(settings, conn_id, mariadb=mariadb)
    host, port = str(settings["host"]), int(settings["port"])
    where = f"{host} ({settings['unix_socket']})" if settings.get("unix_socket") and host == "localhost" \
        else f"{host}:{port}"
    with private_dir() as folder:
        session = MysqlSession(conn_id=conn_id, where=where, folder=folder, env=minimal_env(home=folder),
                               host=host, port=port, user=str(settings.get("user") or ""),
                               database=str(settings.get("db") or ""))
        session.options_file = session.write("cliente.cnf", "\n".join(lines) + "\n", secret=False)
        if settings.get("passwd"):
            session.secrets.append(str(settings["passwd"]))
        yield session
