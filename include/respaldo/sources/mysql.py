"""MySQL and MariaDB databases, copied with ``mariadb-dump`` as plain SQL.

The copy is one consistent snapshot that does not lock the application: ``--single-transaction``
reads every InnoDB table inside one ``REPEATABLE READ`` transaction (so no ``LOCK TABLES`` and no
global read lock), with ``--quick`` streaming rows instead of buffering whole tables. Routines,
triggers and events go in with the tables; binary columns are written in hex and text as utf8mb4, so
nothing depends on the restoring client's character set. The database is named without
``--databases``, so the file holds no ``CREATE DATABASE`` or ``USE`` and restores into any database:
``zstd -dc X.sql.zst | mariadb OTRA``. Tables of non-transactional engines (MyISAM, Aria) are read
without a lock, so they are only as consistent as their writers allow.

The date: mariadb-dump ends a complete dump with ``-- Dump completed on YYYY-MM-DD HH:MM:SS``, in
the client's local time (the tool runs with ``TZ=UTC``). ``verificar_fecha`` reads that last line
back; a dump without it stopped before the end, so a truncated copy is caught there.

DEFINER clauses are kept: on the original server, or any restored as an administrator, views,
triggers, routines and events keep running as the account they were written for. To restore as a
user without the ``SET USER`` privilege, strip them outside the data rows while restoring::

    zstd -dc X.sql.zst | sed -E '/^INSERT INTO /!s/DEFINER=`[^`]*`(@`[^`]*`)?//g' | mariadb OTRA

Least privileges for a complete copy of database ``db`` (measured on MariaDB 10.11)::

    GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON `db`.* TO 'respaldo'@'%';
    GRANT SELECT ON mysql.proc TO 'respaldo'@'%';   -- to read the bodies of routines

Instead of ``mysql.proc``, MariaDB 11.3+ accepts ``SHOW CREATE ROUTINE ON `db`.*`` and MySQL
8.0.20+ ``SHOW_ROUTINE ON *.*``; ``ALL PRIVILEGES ON `db`.*`` is not enough for routines.
``LOCK TABLES``, ``RELOAD`` and ``PROCESS`` are not needed. Without ``TRIGGER`` or the routine grant
mariadb-dump leaves triggers, functions and procedures out *without any error* (and tables the
user cannot see), so the copy reads ``SHOW GRANTS`` first and refuses to take an incomplete backup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from respaldo.artifacts import copy_compressed
from respaldo.errors import CopyError, DateCheckError
from respaldo.hooks.mysql import MysqlSession, client_session
from respaldo.integridad import Verification
from respaldo.process import run_to_file
from respaldo.sources.base import CopyResult, Source, TargetBase, recipients_of

CONNECT_TIMEOUT_SECONDS = 20
#: The pre-copy check runs a few catalogue queries; anything slower is a server in trouble.
PREFLIGHT_TIMEOUT_SECONDS = 120
#: Privileges the backup user needs on the database itself; mariadb-dump silently skips the tables
#: and triggers it cannot see, so they are checked before copying.
DATABASE_PRIVILEGES = ("SELECT", "SHOW VIEW", "TRIGGER", "EVENT")
#: Grants besides SELECT on ``mysql.proc`` that let a user read routine bodies it does not own:
#: MariaDB 11.3+ and MySQL 8.0.20+ respectively.
ROUTINE_PRIVILEGES = ("SHOW CREATE ROUTINE", "SHOW_ROUTINE")
DUMP_OPTIONS = (
    "--single-transaction",  # one consistent InnoDB snapshot, no table locks
    "--quick",  # stream rows, flat memory whatever the table size
    "--routines", "--triggers", "--events",
    "--hex-blob",  # binary columns as 0x..., immune to charset conversion
    "--max-allowed-packet=1G",  # the default (24 MiB) fails on any larger row, e.g. a scanned document
    "--default-character-set=utf8mb4",
    "--no-tablespaces",  # tablespace DDL needs PROCESS and does not belong in a one-database dump
    "--tz-utc",  # TIMESTAMP values written in UTC, restored the same in any server time zone
    "--comments", "--dump-date",  # the footer "-- Dump completed on ..." that verificar_fecha reads
)


class MysqlTarget(TargetBase):
    """A MySQL or MariaDB database reached through an Airflow connection of type ``mysql``."""

    kind: Literal["mysql"]
    conn_id: Annotated[
        str,
        Field(min_length=1, description="Conexión de Airflow (tipo mysql) con servidor, puerto, usuario y clave.",
              examples=["mysql_portal"]),
    ]
    database: Annotated[
        str | None,
        Field(min_length=1, max_length=64, description="Base de datos a copiar; por defecto la de la conexión "
              "(su campo «schema»).", examples=["portal_web"]),
    ] = None
    exclude_tables: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]],
        Field(description="Tablas de esa base que no se copian (nombres exactos, sin comodines).",
              examples=[["sesiones", "cache_paginas"]]),
    ] = []


def _like(pattern: str) -> re.Pattern[str]:
    """A database name in a GRANT is a LIKE pattern (``%``, ``_``, ``\\`` escapes)."""
    out, chars = [], iter(pattern)
    for char in chars:
        if char == "\\":
            out.append(re.escape(next(chars, "\\")))
        elif char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)


_GRANT = re.compile(r"^GRANT (?P<privileges>.+?) ON (?P<db>\*|`(?:[^`]|``)*`)\.(?P<table>\*|`(?:[^`]|``)*`) TO ")


def held_privileges(grants: list[str], database: str) -> tuple[set[str], set[str]]:
    """What ``SHOW GRANTS`` lines give on ``database`` (global grants included), and on every database.

    Column and table grants are left out: a dump needs the whole database. A role's grants count
    when SHOW GRANTS lists them (MariaDB does for the roles the session has enabled).
    """
    on_database: set[str] = set()
    everywhere: set[str] = set()
    for line in grants:
        match = _GRANT.match(line)
        if not match or match["table"] != "*":
            continue
        db = match["db"]
        if db != "*" and not _like(db[1:-1].replace("``", "`")).fullmatch(database):
            continue
        privileges = re.sub(r"\([^)]*\)", "(columnas)", match["privileges"])
        found = {p.strip() for p in privileges.split(",") if "(" not in p}
        on_database |= found
        if db == "*":
            everywhere |= found
    return on_database, everywhere


def missing_privileges(grants: list[str], database: str) -> list[str]:
    """The :data:`DATABASE_PRIVILEGES` that ``SHOW GRANTS`` lines do not give on ``database``."""
    held, _ = held_privileges(grants, database)
    if "ALL PRIVILEGES" in held:
        return []
    return [p for p in DATABASE_PRIVILEGES if p not in held]


def reads_routines(grants: list[str], database: str) -> bool:
    """Whether the grants let SHOW CREATE PROCEDURE/FUNCTION show bodies of routines the user did not
    create, other than through SELECT on ``mysql.proc`` (which is probed directly)."""
    held, everywhere = held_privileges(grants, database)
    # ALL PRIVILEGES on the database alone is not enough (checked on MariaDB 10.11).
    return bool(set(ROUTINE_PRIVILEGES) & held) or bool({"SELECT", "ALL PRIVILEGES"} & everywhere)


_ERROR_CODE = re.compile(r"(?:Got error: |ERROR )(\d{4})")


def _tool(*names: str) -> str:
    """The first of ``names`` installed (MariaDB's client names, then MySQL's)."""
    for name in names:
        if shutil.which(name):
            return name
    raise CopyError(f"No está instalado «{names[0]}» en esta máquina (paquete mariadb-client): sin él no se puede "
                    "copiar ni revisar una base MySQL/MariaDB.")


#: How often the copy looks for mariadb-dump's session in the server's process list.
DUMP_SESSION_POLL_SECONDS = 0.01
#: The only engine whose tables a consistent snapshot covers; others are read as they are at that moment.
TRANSACTIONAL_ENGINES = frozenset({"InnoDB"})


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class BracketCounts:
    """Row counts of every table in two consistent snapshots that bracket mariadb-dump's own.

    MySQL and MariaDB cannot hand a snapshot to another session, so the counts cannot be taken in
    mariadb-dump's. They are taken, through the provider hook's connection, in one snapshot opened
    just before mariadb-dump starts (``START TRANSACTION WITH CONSISTENT SNAPSHOT``) and in another
    opened just after mariadb-dump's is open: its session enters the database (the server's process
    list shows it) only after its ``START TRANSACTION WITH CONSISTENT SNAPSHOT``, and is looked for
    every :data:`DUMP_SESSION_POLL_SECONDS`. The dump's snapshot lies between the two, so **the
    tolerance is exactly what changed in between**: a restore drill accepts, for each table, any row
    count from the lower to the higher of the two counts; for a table nobody wrote to in that instant
    (typically well under a second) both are equal and the comparison is exact. Rows inserted and
    deleted inside that instant could be missed by this rule, and it holds for InnoDB tables only:
    tables of other engines (MyISAM, Aria) are read as they are when mariadb-dump reaches them, so
    their counts are recorded but do not decide a drill. The second count waits for the first, so the
    server does one extra scan at a time beside the dump.

    The figures are an addition to the copy, never a condition for it: a failure is logged and recorded
    as the figures' ``error``.
    """

    def __init__(self, conn_id: str, database: str, exclude: list[str], log: logging.Logger,
                 secrets: list[str]):
        self.conn_id = conn_id
        self.database = database
        self.exclude = set(exclude)
        self.log = log
        self.secrets = secrets
        self.before = self.after = None  # the two snapshots' connections
        self.ids: list[int] = []
        self.tables: list[tuple[str, str]] = []
        self.counts: dict[str, list[int | None]] = {}
        self.error: str | None = None
        self.second = ""
        self.dump_done = threading.Event()
        self.stop = threading.Event()
        self.counted_before = threading.Event()
        self.seconds = 0.0
        self.threads = [threading.Thread(target=self._count_before, name="respaldo-cifras-antes", daemon=True),
                        threading.Thread(target=self._count_after, name="respaldo-cifras-despues", daemon=True)]

    def _connect(self):
        from airflow.providers.mysql.hooks.mysql import MySqlHook

        conn = MySqlHook(mysql_conn_id=self.conn_id, schema=self.database).get_conn()
        conn.autocommit(True)
        return conn

    def _fail(self, err: BaseException) -> None:
        if self.error is None:
            from respaldo.hooks.base import blank

            self.error = blank(str(err).strip() or type(err).__name__, self.secrets)
            self.log.warning("No se pudieron contar las filas de «%s» alrededor de la instantánea de la copia (la "
                             "copia sigue, sin esas cifras): %s", self.database, self.error)

    def __enter__(self) -> BracketCounts:
        try:
            self.before = self._connect()
            cur = self.before.cursor()
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            cur.execute("SELECT TABLE_NAME, coalesce(ENGINE, '') FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME", (self.database,))
            self.tables = [(name, engine) for name, engine in cur.fetchall() if name not in self.exclude]
            self.after = self._connect()
            for conn in (self.before, self.after):
                probe = conn.cursor()
                probe.execute("SELECT CONNECTION_ID()")
                self.ids.append(probe.fetchone()[0])
            probe = self.after.cursor()
            probe.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s", (self.database,))
            self.ids += [row[0] for row in probe.fetchall()]  # sessions already there are not the dump's
        except Exception as err:  # noqa: BLE001 - the copy goes on without figures
            self._fail(err)
            self._close()
            return self
        for thread in self.threads:
            thread.start()
        return self

    def _count(self, conn, slot: int) -> None:
        cur = conn.cursor()
        for name, _ in self.tables:
            if self.stop.is_set():
                return
            try:
                cur.execute(f"SELECT COUNT(*) FROM {_quoted(self.database)}.{_quoted(name)}")
                rows = int(cur.fetchone()[0])
            except Exception as err:  # noqa: BLE001 - a table dropped or altered meanwhile: not counted
                if "Lost connection" in str(err) or "gone away" in str(err):
                    raise
                rows = None
            self.counts.setdefault(name, [None, None])[slot] = rows

    def _count_before(self) -> None:
        started = time.monotonic()
        try:
            self._count(self.before, 0)
        except Exception as err:  # noqa: BLE001
            self._fail(err)
        finally:
            self.seconds += time.monotonic() - started
            self.counted_before.set()

    def _count_after(self) -> None:
        try:
            cur = self.after.cursor()
            marks = ", ".join(["%s"] * len(self.ids))
            while not self.stop.is_set():
                cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND "
                            f"USER = SUBSTRING_INDEX(USER(), '@', 1) AND ID NOT IN ({marks}) LIMIT 1",
                            (self.database, *self.ids))
                if cur.fetchall():
                    self.second = "al ver la sesión de mariadb-dump en la base"
                    break
                if self.dump_done.is_set():
                    self.second = "al terminar mariadb-dump"
                    break
                time.sleep(DUMP_SESSION_POLL_SECONDS)
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            self.counted_before.wait()
            started = time.monotonic()
            self._count(self.after, 1)
            self.seconds += time.monotonic() - started
        except Exception as err:  # noqa: BLE001
            self._fail(err)

    def dump_ended(self) -> None:
        """mariadb-dump exited: its snapshot was open for sure, if its session was never seen."""
        self.dump_done.set()

    def result(self) -> dict:
        """The figures: each table's rows in the snapshot before and the one after mariadb-dump's."""
        self.dump_done.set()
        for thread in self.threads:
            if thread.is_alive():
                thread.join()
        figures: dict = {"motor": "mysql"}
        if self.error is not None or not self.threads[0].ident:
            return {**figures, "error": self.error or "no se abrió la instantánea"}
        other = sorted(name for name, engine in self.tables if engine not in TRANSACTIONAL_ENGINES)
        changed = sum(1 for before, after in self.counts.values() if before != after)
        self.log.info("Filas contadas antes y después de la instantánea de la copia: %d tablas (%d cambiaron en ese "
                      "instante), en %.1f s", len(self.counts), changed, self.seconds)
        figures.update(tablas={name: list(pair) for name, pair in self.counts.items()}, segunda=self.second)
        if other:
            figures["no_transaccionales"] = other
        return figures

    def _close(self) -> None:
        for conn in (self.before, self.after):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self.before = self.after = None

    def __exit__(self, *exc_info: object) -> None:
        if any(thread.is_alive() for thread in self.threads):  # the copy failed: stop counting
            self.stop.set()
            self.dump_done.set()
            with contextlib.suppress(Exception):
                killer = self._connect()
                for thread_id in self.ids[:2]:
                    with contextlib.suppress(Exception):
                        killer.cursor().execute(f"KILL QUERY {int(thread_id)}")
                killer.close()
            for thread in self.threads:
                thread.join()
            self.error = self.error or "la copia se interrumpió antes de terminar de contar"
        self._close()


class MysqlSource(Source):
    kind = "mysql"
    model = MysqlTarget
    extension = "sql"
    label = "base de datos MySQL/MariaDB"
    category = "bases de datos"
    restore_hint = "mariadb -e 'CREATE DATABASE NUEVA' && zstd -dc {artifact} | mariadb NUEVA"
    compresses = True

    @contextlib.contextmanager
    def _session(self, target: MysqlTarget, tool: str) -> Generator[MysqlSession, None, None]:
        """The connection's client session for ``tool``; refuses a target that names no database."""
        with client_session(target.conn_id, database=target.database, mariadb=tool.startswith("mariadb")) as session:
            if not session.database:
                raise CopyError(f"No se sabe qué base copiar: ni el objetivo «{target.id}» (campo database) ni la "
                                f"conexión «{target.conn_id}» (campo schema) la indican.")
            yield session

    def _explain(self, server: MysqlSession, text: str) -> str:
        """The server's error, in words the IT office can act on."""
        match = _ERROR_CODE.search(text)
        code = int(match[1]) if match else None
        if code == 1045:
            return f"el servidor {server.where} rechazó el usuario «{server.user}» o su clave"
        if code == 1049:
            return f"la base «{server.database}» no existe en {server.where}"
        if code in (2002, 2003, 2005):
            return (f"no se pudo conectar con el servidor {server.where} (¿está encendido, escucha en ese puerto "
                    "y el firewall lo permite?)")
        if code == 2026:
            return (f"no se pudo establecer la conexión cifrada (TLS) con {server.where}: revise los extras «ssl» "
                    f"(su «ca») y «ssl_mode» de la conexión «{server.conn_id}»")
        if code in (2006, 2013):
            return f"se perdió la conexión con el servidor {server.where} durante la copia"
        if code == 1044:
            # The server answers the same to a missing database and to one the user may not see.
            return (f"el usuario «{server.user}» no puede entrar a la base «{server.database}»: no existe en "
                    f"{server.where} o no se le otorgaron privilegios sobre ella")
        if code in (1142, 1143, 1227):
            return f"al usuario «{server.user}» le faltan privilegios en la base «{server.database}»"
        return ""

    def _client(self, server: MysqlSession, sql: str) -> subprocess.CompletedProcess:
        # --defaults-extra-file must come first: the client only honours it in that position.
        argv = [_tool("mariadb", "mysql"), server.defaults_argument(),
                f"--connect-timeout={CONNECT_TIMEOUT_SECONDS}", "--batch", "--raw", "--skip-column-names",
                "--default-character-set=utf8mb4", "-e", sql, "--", server.database]
        try:
            return subprocess.run(argv, env=server.env, capture_output=True, text=True, check=False,  # noqa: S603
                                  timeout=PREFLIGHT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired as err:
            raise CopyError(f"La base «{server.database}» en {server.where} no respondió en "
                            f"{PREFLIGHT_TIMEOUT_SECONDS} s") from err

    def _preflight(self, server: MysqlSession, log: logging.Logger | None) -> str:
        """Connect, and check the grants a complete dump needs; return the user the server sees.

        mariadb-dump leaves out, without an error, the tables it cannot list, the triggers it has no
        TRIGGER privilege for and the routines it cannot read from ``mysql.proc``: a copy that would
        restore without them is refused here instead.
        """
        sql = ("SELECT 'usuario', CURRENT_USER(); SHOW GRANTS; "
               "SELECT 'colacion', name FROM mysql.proc WHERE db = DATABASE() AND db_collation <> "
               "(SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = DATABASE())")
        proc = self._client(server, sql)
        out = proc.stdout.splitlines()
        error = server.blank(proc.stderr.strip())
        connected = bool(out) and out[0].startswith("usuario\t")
        if not connected:
            plain = self._explain(server, error)
            raise CopyError(f"No se pudo abrir la base «{server.database}» en {server.where}: "
                            f"{plain or 'el cliente mariadb no pudo conectarse'}", detail=error)
        user = out[0].split("\t", 1)[1]
        grants = [line for line in out[1:] if line.startswith("GRANT ")]
        missing = [f"{p} ON `{server.database}`.*" for p in missing_privileges(grants, server.database)]
        if proc.returncode != 0:
            # The mysql.proc query failed: not readable (MariaDB) or not there at all (MySQL 8).
            if "mysql`.`proc" not in error and "mysql.proc" not in error:
                raise CopyError(f"No se pudo revisar la base «{server.database}» en {server.where}: la consulta de "
                                "privilegios falló", detail=error)
            if not reads_routines(grants, server.database):
                missing.append("SHOW_ROUTINE ON *.*" if "doesn't exist" in error else "SELECT ON mysql.proc")
        if missing:
            name, _, host = user.rpartition("@")
            account = f"'{name}'@'{host}'"
            statements = "; ".join(f"GRANT {m} TO {account}" for m in missing)
            raise CopyError(
                f"Al usuario {user} le faltan privilegios para una copia completa de «{server.database}» en "
                f"{server.where}: {', '.join(missing)}. Sin ellos mariadb-dump omite en silencio tablas, "
                f"disparadores o procedimientos. Un administrador puede otorgarlos con: {statements}"
            )
        renamed = [line.split("\t", 1)[1] for line in out if line.startswith("colacion\t")]
        if renamed and log is not None:
            log.warning(
                "Las rutinas %s se crearon con otra colación de la base; mariadb-dump escribirá "
                "ALTER DATABASE `%s` alrededor de ellas y la copia solo restaurará en una base con ese nombre. "
                "Recréelas (DROP y CREATE) para que la copia restaure en cualquier base.",
                ", ".join(renamed), server.database,
            )
        return user

    def copy(self, target: MysqlTarget, dest: Path, log: logging.Logger) -> CopyResult:
        tool = _tool("mariadb-dump", "mysqldump")
        with self._session(target, tool) as server:
            user = self._preflight(server, log)
            log.info("%s de la base «%s» en %s (usuario %s), una transacción consistente sin bloqueos",
                     tool, server.database, server.where, user)
            argv = [tool, server.defaults_argument(), *DUMP_OPTIONS]
            argv += [f"--ignore-table={server.database}.{table}" for table in target.exclude_tables]
            argv += ["--", server.database]
            explain = lambda text, _code: self._explain(server, text)  # noqa: E731
            with BracketCounts(target.conn_id, server.database, target.exclude_tables, log, server.secrets) as counts:
                if dest.name.endswith(".zst"):  # compressed as it arrives: overlaps the dump, no raw copy on disk
                    done = copy_compressed(argv, dest, env=server.env, log=log, what=tool,
                                           secrets=server.secrets, explain=explain,
                                           recipients=recipients_of(target))
                    result = CopyResult(path=dest, bytes=done.compressed, compressed=True,
                                        original_bytes=done.original, sha256=done.sha256, sealed=done.sealed)
                else:
                    size = run_to_file(argv, dest, env=server.env, log=log, what=tool, secrets=server.secrets,
                                       explain=explain)
                    result = CopyResult(path=dest, bytes=size)
                counts.dump_ended()
                result = dataclasses.replace(result, figures=counts.result())
        if (result.original_bytes if result.compressed else result.bytes) == 0:
            dest.unlink(missing_ok=True)
            raise CopyError(f"{tool} no produjo datos: la copia está vacía")
        return result

    def read_stamp(self, target: MysqlTarget, path: Path, verified: Verification) -> dt.datetime:
        """The date of the last line "-- Dump completed on ..." (UTC), read during the verification.

        The verification has already refused a dump without that line (it stopped before its end);
        a complete one without a date was taken without ``--dump-date``.
        """
        if verified.created_at is None:
            raise DateCheckError(f"La copia {path.name} no trae la fecha de creación: mariadb-dump se ejecutó sin "
                                 "--dump-date.")
        return verified.created_at

    def figures(self, target: MysqlTarget, verified: Verification, counted: dict | None) -> dict | None:
        """The rows counted around the dump's snapshot (see :class:`BracketCounts`)."""
        return counted

    def check(self, target: MysqlTarget) -> str:
        with self._session(target, _tool("mariadb-dump", "mysqldump")) as server:
            user = self._preflight(server, None)
            return f"base «{server.database}» en {server.where} como {user}"

    def summary(self, target: MysqlTarget) -> str:
        what = f"base MySQL/MariaDB «{target.database or '(la de la conexión)'}» (conexión `{target.conn_id}`)"
        return f"{what}: {target.description}" if target.description else what
