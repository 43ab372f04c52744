"""PostgreSQL connections handed to libpq's tools (pg_dump, psql), built on the provider's PostgresHook.

``PostgresHook.get_conn`` turns an Airflow connection into libpq keywords: host, port, user,
password, database, and every extra it does not keep for itself (``sslmode``, ``sslrootcert``,
``sslcert``, ``sslkey``, ``sslpassword``, ``connect_timeout``, ``options``, ``keepalives``...), with an
IAM token in place of the password when the connection asks for one. respaldo stops the hook just
before it connects and hands the same keywords to the tool: the password in a ``pgpass`` file, the
rest in a connection service file (``pg_service.conf``), both 0600 in the session's private folder.
The tool's environment names those files (plus host and port); a service file takes any libpq
keyword, so every option the provider honours reaches pg_dump too, with no list of ours to keep.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from respaldo.errors import CopyError
from respaldo.hooks.base import ToolSession, connection_problem, minimal_env, private_dir

#: Name of the one service in the session's service file.
SERVICE = "respaldo"
CONNECT_TIMEOUT_SECONDS = 20
#: libpq keywords whose values are secrets (libpq marks them so: ``dispchar`` "*").
SECRET_KEYWORDS = frozenset({"password", "sslpassword", "oauth_client_secret"})
#: Keywords respaldo sets itself: its own files, and the session's name (the lock watch finds its
#: sessions by it).
OWN_KEYWORDS = frozenset({"service", "servicefile", "passfile", "application_name"})


@dataclass
class PgSession(ToolSession):
    """A libpq tool's share of a PostgreSQL connection (see :class:`~respaldo.hooks.base.ToolSession`).

    :param host: server, as the connection names it (``localhost`` when it names none).
    :param port: port, as text.
    :param user: the role it logs in as (empty: libpq's default).
    :param database: the database the tool opens.
    :param application_name: how the server lists the tool's session (``pg_stat_activity``).
    """

    host: str = ""
    port: str = ""
    user: str = ""
    database: str = ""
    application_name: str = ""

    def connect(self, *, application_name: str) -> Any:
        """A psycopg connection of the provider's hook, with the same connection, database and options.

        For questions about the tool's own session (what it waits for), asked beside it.
        """
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        conn = PostgresHook(postgres_conn_id=self.conn_id, database=self.database).get_conn()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('application_name', %s, false)", (application_name,))
        return conn


def libpq_keywords(conn_id: str, *, database: str | None = None) -> dict[str, Any]:
    """The keywords ``PostgresHook(postgres_conn_id=conn_id, database=database).get_conn()`` connects with.

    Nothing is opened: the hook is stopped at ``_create_connection``, the one step after it has
    applied its own rules (which extras are libpq's, IAM tokens, the ``database`` override).
    """
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    class KeywordsOnly(PostgresHook):
        def _create_connection(self, conn_args: dict[str, Any]) -> Any:
            return dict(conn_args)

    try:
        keywords = KeywordsOnly(postgres_conn_id=conn_id, database=database).get_conn()
    except Exception as err:  # a missing connection, a malformed extra, an IAM failure
        raise CopyError(connection_problem(conn_id, err)) from err
    if not isinstance(keywords, dict):  # the provider no longer connects through _create_connection
        raise CopyError(f"No se pudieron leer los parámetros de la conexión «{conn_id}» con esta versión del "
                        "proveedor postgres de Airflow.")
    return keywords


def _service_value(conn_id: str, keyword: str, value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if not isinstance(value, str | int | float):
        raise CopyError(f"El extra «{keyword}» de la conexión «{conn_id}» debe ser un texto o un número.")
    text = str(value)
    if "\n" in text or "\r" in text or text != text.strip():
        raise CopyError(f"El extra «{keyword}» de la conexión «{conn_id}» no puede tener saltos de línea ni "
                        "espacios al principio o al final.")
    return text


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def libpq_session(conn_id: str, *, database: str | None = None, application_name: str
                  ) -> Generator[PgSession, None, None]:
    """What a libpq tool needs to open ``database`` (default: the connection's) through ``conn_id``.

    The tool runs with ``env=session.env`` and no connection option in argv: ``PGSERVICEFILE`` and
    ``PGSERVICE`` name the service file, ``PGPASSFILE`` the password file. Both are removed on exit.
    """
    keywords = libpq_keywords(conn_id, database=database)
    values: dict[str, str] = {}
    secrets: list[str] = []
    for keyword, value in keywords.items():
        if value is None or value == "" or keyword in OWN_KEYWORDS or callable(value) or isinstance(value, type):
            continue  # psycopg's own options (row_factory...) are no libpq keyword
        text = _service_value(conn_id, keyword, value)
        if keyword in SECRET_KEYWORDS:
            secrets.append(text)
        values[keyword] = text
    values.setdefault("host", "localhost")
    values.setdefault("port", "5432")
    values.setdefault("connect_timeout", str(CONNECT_TIMEOUT_SECONDS))
    values.setdefault("dbname", "postgres")  # libpq's own default (the user's name) is rarely a database
    values["application_name"] = application_name
    password = values.pop("password", "")
    with private_dir() as folder:
        session = PgSession(
            conn_id=conn_id, where="", folder=folder, env={}, secrets=secrets,
            host=values["host"], port=values["port"], user=values.get("user", ""), database=values["dbname"],
            application_name=application_name,
        )
        session.where = f"{session.host}:{session.port}"
        service_file = session.write("pg_service.conf", f"[{SERVICE}]\n" + "".join(
            f"{keyword}={value}\n" for keyword, value in values.items()), secret=False)
        passfile = folder / "pgpass"
        if password:
            session.write("pgpass", ":".join(_pgpass_escape(v) for v in ("*", "*", "*", "*", password)) + "\n")
            session.secrets.append(password)
        # PGHOST and PGPORT repeat the service file (which wins) for Debian's pg_wrapper: without them
        # it would pick the pg_dump of the local cluster's version instead of the newest installed.
        session.env = minimal_env(home=folder, PGSERVICEFILE=str(service_file), PGSERVICE=SERVICE,
                                  PGPASSFILE=str(passfile), PGHOST=session.host, PGPORT=session.port)
        yield session


def explain_libpq(text: str, session: PgSession) -> str:
    """A plain Spanish reason for libpq's own failures (connection, login, SSL), or an empty string."""
    where, conn_id = session.where, session.conn_id
    mismatch = re.search(r"server version: ([\d.]+)[^;\n]*; pg_dump version: ([\d.]+)", text)
    if mismatch:
        return older_client(where, mismatch[1], mismatch[2])
    if "certificate verify failed" in text:
        return (f"el certificado del servidor {where} no lo firmó la autoridad que indica la conexión «{conn_id}» "
                "(extra sslrootcert): ponga allí el certificado raíz (CA) de ese servidor.")
    if "does not match host name" in text:
        return (f"el certificado del servidor no corresponde al nombre «{session.host}» (sslmode=verify-full en la "
                f"conexión «{conn_id}»): use en la conexión el nombre que figura en el certificado.")
    missing = re.search(r'(?:root certificate|certificate|private key) file "([^"]+)" does not exist', text) or \
        re.search(r'could not (?:open|read) (?:root )?certificate file "([^"]+)"', text)
    if missing:
        return (f"no existe o no se puede leer el archivo «{missing[1]}» que indica la conexión «{conn_id}» "
                "(extras sslrootcert, sslcert o sslkey).")
    if "server does not support SSL" in text:
        return f"el servidor {where} no acepta SSL y la conexión «{conn_id}» lo exige (extra sslmode)."
    if "no pg_hba.conf entry" in text:
        if "no encryption" in text:
            return (f"el servidor {where} solo acepta conexiones cifradas (SSL) y la conexión «{conn_id}» no lo usa: "
                    "quite sslmode=disable de su Extra o ponga sslmode=verify-full con sslrootcert.")
        return (f"el servidor {where} no admite conexiones de este equipo con ese usuario y esa base: un "
                "administrador debe agregarlas en su pg_hba.conf.")
    if "password authentication failed" in text:
        return f"el servidor {where} rechazó el usuario «{session.user}» o su clave (conexión «{conn_id}»)."
    missing_db = re.search(r'database "([^"]+)" does not exist', text)
    if missing_db:
        return f"la base «{missing_db[1]}» no existe en {where}."
    if "Connection refused" in text or "could not translate host name" in text or "timeout expired" in text:
        return (f"no se pudo conectar con el servidor {where} (¿está encendido, escucha en ese puerto y el firewall "
                "lo permite?).")
    return ""


def older_client(where: str, server: str, client: str) -> str:
    """Why a pg_dump older than its server cannot copy it, and what to install."""
    major = server.split(".")[0]
    return (f"el servidor {where} es PostgreSQL {server} y el pg_dump de este equipo es {client}: un pg_dump más "
            f"antiguo que el servidor se niega a copiarlo. Instale el cliente de PostgreSQL {major} o más nuevo "
            f"(postgresql-client-{major} del repositorio PGDG; el más nuevo copia todos los servidores anteriores; "
            "ver docs/deployment.md).")
