"""Where a copy is restored: a new database on a server, or a new folder; and the drills' scratch.

A database destination is a name on the drill server (the inventory's ``drills.conn_id`` or
``drills.mysql_conn_id``) or a connection URI (``postgresql://user@host:port/NAME``,
``mysql://user@host:port/NAME``). A URI becomes an Airflow connection of this process alone (an
``AIRFLOW_CONN_*`` variable removed afterwards), so its password goes where every other one does:
through the hooks, never into a tool's argv or environment, and blanked from every message.

respaldo creates the database itself and refuses one that exists with anything in it; a folder
likewise. Scratch databases and folders of the drills are named ``simulacro_<target>_<YYYYMMDD>_<suffix>``
and carry a marker (the database's comment, a file in the folder): only what has both is ever
removed as a leftover, so a drill never drops anything it did not create.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from respaldo.errors import RespaldoError
from respaldo.hooks.base import blank

SCRATCH_PREFIX = "simulacro_"
#: The comment of every scratch database, and the first line of every scratch folder's marker file.
MARKER = "respaldo simulacro"
MARKER_FILE = ".respaldo-simulacro"
#: On servers without database comments (MySQL), a table of this name marks a scratch database.
MARKER_TABLE = "respaldo_simulacro_marca"
#: Database names respaldo creates or restores into: safe in every tool's argv and in both engines.
DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
#: Longest target id kept in a scratch name (PostgreSQL names hold 63 bytes).
SCRATCH_TARGET_CHARS = 37
ENGINES = {"postgresql": "postgres", "postgres": "postgres", "mysql": "mysql", "mariadb": "mysql"}


class RestauracionError(RespaldoError):
    """A restore (or a drill) cannot go on: the destination, the copy or the restoring tool said no."""


class DestinoOcupado(RestauracionError):
    """The destination exists and is not empty: nothing was restored and nothing was touched."""


def scratch_name(target_id: str, day: dt.date) -> str:
    """``simulacro_<target>_<YYYYMMDD>_<6 hex>``: unique, and recognisable as a drill's."""
    return f"{SCRATCH_PREFIX}{target_id[:SCRATCH_TARGET_CHARS]}_{day:%Y%m%d}_{secrets.token_hex(3)}"


def marker_text(target_id: str, detail: str) -> str:
    return f"{MARKER} de «{target_id}» ({detail}); respaldo la borra al terminar"


def check_name(name: str) -> str:
    if not DATABASE_NAME.match(name):
        raise RestauracionError(f"«{name}» no sirve como nombre de base nueva: use letras sin tildes, números y «_», "
                                "empezando por una letra (hasta 63).")
    return name


# --- connection URIs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Uri:
    """A destination given as a URI: its engine, the database it names, and its password (to blank)."""

    engine: str
    database: str
    connection: dict[str, Any]
    password: str


def parse_uri(text: str) -> Uri | None:
    """The destination URI ``text`` (``postgresql://…/NAME``, ``mysql://…/NAME``), or None if it is no URI."""
    if "://" not in text:
        return None
    parts = urlsplit(text)
    engine = ENGINES.get(parts.scheme.lower())
    if engine is None:
        raise RestauracionError(f"El destino «{blank(text, [parts.password])}» no es un URI postgresql:// ni mysql://.")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise RestauracionError("El URI de destino debe terminar con el nombre de la base nueva: "
                                f"{parts.scheme}://usuario@servidor:puerto/NOMBRE.")
    try:
        port = parts.port
    except ValueError as err:
        raise RestauracionError("El puerto del URI de destino no es un número.") from err
    password = unquote(parts.password or "")
    connection = {"conn_type": engine, "host": parts.hostname or "localhost", "login": unquote(parts.username or ""),
                  "password": password, "schema": "", "extra": dict(parse_qsl(parts.query))}
    if port:
        connection["port"] = port
    return Uri(engine, check_name(database), connection, password)


@contextlib.contextmanager
def uri_connection(uri: Uri) -> Generator[str, None, None]:
    """The URI as an Airflow connection (an environment variable of this process only); yields its id.

    Child tools never see it: they run with :func:`respaldo.hooks.base.minimal_env`.
    """
    conn_id = f"respaldo_destino_{secrets.token_hex(4)}"
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    os.environ[variable] = json.dumps(uri.connection)
    try:
        yield conn_id
    finally:
        os.environ.pop(variable, None)


# --- database servers --------------------------------------------------------------------------------


@dataclass
class PgServer:
    """A PostgreSQL server reached through an Airflow connection, where databases are created and dropped.

    Administrative statements go to the connection's own database (``postgres`` when it names none).
    """

    conn_id: str
    engine: str = "postgres"
    where: str = ""
    maintenance: str = "postgres"
    secrets: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from respaldo.hooks.postgres import libpq_keywords

        keywords = libpq_keywords(self.conn_id)
        self.maintenance = keywords.get("dbname") or "postgres"
        self.where = f"{keywords.get('host') or 'localhost'}:{keywords.get('port') or 5432}"
        self.secrets = [str(keywords[k]) for k in ("password", "sslpassword") if keywords.get(k)]

    @contextlib.contextmanager
    def connect(self, database: str | None = None) -> Generator[Any, None, None]:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        try:
            conn = PostgresHook(postgres_conn_id=self.conn_id, database=database or self.maintenance).get_conn()
        except Exception as err:
            raise RestauracionError(f"No se pudo conectar con el servidor PostgreSQL {self.where} (conexión "
                                    f"«{self.conn_id}»): {blank(str(err).strip(), self.secrets)}") from err
        conn.autocommit = True
        try:
            yield conn
        except RestauracionError:
            raise
        except Exception as err:
            raise RestauracionError(f"El servidor PostgreSQL {self.where} respondió con un error: "
                                    f"{blank(str(err).strip(), self.secrets)}") from err
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def exists(self, name: str) -> bool:
        with self.connect() as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None

    def objects(self, name: str) -> int:
        """How many relations, functions and schemas of its own a database holds (0: empty)."""
        with self.connect(name) as conn:
            return conn.execute(
                "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_') "
                "     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')) "
                "     + (SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema') "
                "        AND nspname !~ '^pg_')").fetchone()[0]

    def create(self, name: str, comment: str | None = None) -> None:
        """``CREATE DATABASE`` from ``template0`` (nothing of template1's extras to clash with the restore)."""
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
            try:
                if comment:
                    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name),
                                                                                sql.Literal(comment)))
            except BaseException:  # a scratch database without its marker would never be swept: none at all
                conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
                raise

    def drop(self, name: str) -> None:
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def leftovers(self) -> list[str]:
        """Scratch databases of drills that did not finish: the drills' prefix *and* respaldo's comment."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s AND "
                "starts_with(coalesce(shobj_description(oid, 'pg_database'), ''), %s) ORDER BY datname",
                (SCRATCH_PREFIX.replace("_", "\\_") + "%", MARKER)).fetchall()
        return [row[0] for row in rows]

    def count_rows(self, name: str) -> dict[str, int]:
        """Every table's exact row count (the tables a PostgreSQL copy's figures count)."""
        from psycopg import sql

        from respaldo.sources.postgres import _TABLES_SQL

        counts = {}
        with self.connect(name) as conn:
            for _, table, schema, relname in conn.execute(_TABLES_SQL).fetchall():
                counts[table] = conn.execute(sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(relname))).fetchone()[0]
        return counts


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@dataclass
class MysqlServer:
    """A MySQL/MariaDB server reached through an Airflow connection, where databases are created and dropped."""

    conn_id: str
    engine: str = "mysql"
    where: str = ""
    secrets: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from respaldo.hooks.mysql import driver_settings

        settings = driver_settings(self.conn_id)
        self.where = f"{settings['host']}:{settings['port']}"
        self.secrets = [str(settings["passwd"])] if settings.get("passwd") else []

    @contextlib.contextmanager
    def connect(self, database: str | None = None) -> Generator[Any, None, None]:
        from airflow.providers.mysql.hooks.mysql import MySqlHook

        try:
            conn = MySqlHook(mysql_conn_id=self.conn_id, schema=database or "information_schema").get_conn()
        except Exception as err:
            raise RestauracionError(f"No se pudo conectar con el servidor MySQL/MariaDB {self.where} (conexión "
                                    f"«{self.conn_id}»): {blank(str(err).strip(), self.secrets)}") from err
        conn.autocommit(True)
        try:
            yield conn
        except RestauracionError:
            raise
        except Exception as err:
            raise RestauracionError(f"El servidor MySQL/MariaDB {self.where} respondió con un error: "
                                    f"{blank(str(err).strip(), self.secrets)}") from err
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def _one(self, sql: str, params: tuple = (), database: str | None = None) -> Any:
        with self.connect(database) as conn:
            cur = conn.cursor()
            cur.execute(sql, params)
            found = cur.fetchone()
        return found[0] if found else None

    def exists(self, name: str) -> bool:
        return self._one("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,)) is not None

    def objects(self, name: str) -> int:
        return int(self._one(
            "SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s) "
            "     + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s) "
            "     + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s)", (name, name, name)))

    def create(self, name: str, comment: str | None = None) -> None:
        with self.connect() as conn:
            cur = conn.cursor()
            if comment is None:
                cur.execute(f"CREATE DATABASE {_quoted(name)} CHARACTER SET utf8mb4")
                return
            try:  # MariaDB 10.5+ keeps a comment per database; MySQL has none
                cur.execute(f"CREATE DATABASE {_quoted(name)} CHARACTER SET utf8mb4 COMMENT %s", (comment,))
            except Exception as err:  # noqa: BLE001 - only a syntax error (no COMMENT) is expected here
                if "1064" not in str(err.args[:1]) and "syntax" not in str(err):
                    raise
                cur.execute(f"CREATE DATABASE {_quoted(name)} CHARACTER SET utf8mb4")
                cur.execute(f"CREATE TABLE {_quoted(name)}.{MARKER_TABLE} (nota VARCHAR(255)) "
                            "SELECT %s AS nota", (comment,))

    def drop(self, name: str) -> None:
        with self.connect() as conn:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {_quoted(name)}")

    def leftovers(self) -> list[str]:
        pattern = SCRATCH_PREFIX.replace("_", "\\_") + "%"
        with self.connect() as conn:
            cur = conn.cursor()
            try:
                cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s AND "
                            "SCHEMA_COMMENT LIKE %s ORDER BY SCHEMA_NAME", (pattern, MARKER + "%"))
            except Exception:  # noqa: BLE001 - MySQL: no SCHEMA_COMMENT; its scratch carries the marker table
                cur.execute("SELECT TABLE_SCHEMA FROM information_schema.TABLES WHERE TABLE_SCHEMA LIKE %s AND "
                            "TABLE_NAME = %s ORDER BY TABLE_SCHEMA", (pattern, MARKER_TABLE))
            return [row[0] for row in cur.fetchall()]

    def count_rows(self, name: str) -> dict[str, int]:
        counts = {}
        with self.connect(name) as conn:
            cur = conn.cursor()
            cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND "
                        "TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME <> %s ORDER BY TABLE_NAME", (name, MARKER_TABLE))
            for (table,) in cur.fetchall():
                cur.execute(f"SELECT COUNT(*) FROM {_quoted(name)}.{_quoted(table)}")
                counts[table] = int(cur.fetchone()[0])
        return counts


def server(engine: str, conn_id: str) -> PgServer | MysqlServer:
    return PgServer(conn_id) if engine == "postgres" else MysqlServer(conn_id)


def engine_of_connection(conn_id: str) -> str:
    """``postgres`` or ``mysql``: what kind of server an Airflow connection points at."""
    from airflow.sdk import BaseHook

    try:
        conn_type = (BaseHook.get_connection(conn_id).conn_type or "").lower()
    except Exception as err:
        raise RestauracionError(f"No existe o no se puede leer la conexión de Airflow «{conn_id}».") from err
    engine = ENGINES.get(conn_type)
    if engine is None:
        raise RestauracionError(f"La conexión «{conn_id}» es de tipo «{conn_type}»: el servidor de simulacros debe "
                                "ser postgres o mysql.")
    return engine


def prepare_database(target: PgServer | MysqlServer, name: str) -> bool:
    """Make ``name`` ready to restore into: create it, or accept it if it exists empty; True if created.

    :raises DestinoOcupado: it exists with something in it (nothing is touched).
    """
    check_name(name)
    if target.exists(name):
        found = target.objects(name)
        if found:
            raise DestinoOcupado(f"La base «{name}» ya existe en {target.where} y no está vacía ({found} objeto(s)): "
                                 "respaldo solo restaura en una base nueva o vacía. Elija otro nombre.")
        return False
    target.create(name)
    return True


# --- folders -----------------------------------------------------------------------------------------


def prepare_folder(path: Path) -> bool:
    """Make ``path`` ready to restore into: create it (and its parents), or accept it empty; True if created.

    :raises DestinoOcupado: it exists with something in it, or it is not a folder (nothing is touched).
    """
    if path.exists() or path.is_symlink():
        if not path.is_dir() or path.is_symlink():
            raise DestinoOcupado(f"{path} ya existe y no es una carpeta: elija otra carpeta de destino.")
        if any(path.iterdir()):
            raise DestinoOcupado(f"La carpeta {path} ya existe y no está vacía: respaldo solo restaura en una carpeta "
                                 "nueva o vacía. Elija otra.")
        return False
    try:
        path.mkdir(parents=True)
    except OSError as err:
        raise RestauracionError(f"No se pudo crear la carpeta {path}: {err.strerror}.") from err
    return True


def remove_tree(path: Path) -> None:
    """Remove a restored folder, whatever modes its restored subfolders have (a 0500 folder included)."""

    def writable(function, name, _info):
        parent = os.path.dirname(name)
        with contextlib.suppress(OSError):
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IRWXU)
        with contextlib.suppress(OSError):
            if not os.path.islink(name) and os.path.isdir(name):
                os.chmod(name, os.stat(name).st_mode | stat.S_IRWXU)
        function(name)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=writable)


def new_scratch_folder(root: Path, name: str, note: str) -> Path:
    """``root/name`` with respaldo's marker inside it; the restore goes in its ``restaurado/``."""
    path = root / name
    try:
        root.mkdir(parents=True, exist_ok=True)
        path.mkdir()
    except OSError as err:
        raise RestauracionError(f"No se pudo crear la carpeta de simulacro en {root}: {err.strerror}.") from err
    try:
        (path / MARKER_FILE).write_text(f"{MARKER}\n{note}\n", encoding="utf-8")
    except OSError as err:  # a scratch folder without its marker would never be swept: none at all
        shutil.rmtree(path, ignore_errors=True)
        raise RestauracionError(f"No se pudo escribir en la carpeta de simulacro {path}: {err.strerror}.") from err
    return path


def folder_leftovers(root: Path) -> list[Path]:
    """Scratch folders of drills that did not finish: the drills' prefix *and* respaldo's marker file."""
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.glob(f"{SCRATCH_PREFIX}*")):
        marker = path / MARKER_FILE
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if path.is_dir() and not path.is_symlink() and marker.read_text(encoding="utf-8").startswith(MARKER):
                found.append(path)
    return found
