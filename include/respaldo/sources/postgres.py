"""PostgreSQL databases, copied with ``pg_dump`` in its custom format.

The copy is ``pg_dump -Fc -Z0`` (no compression inside: zstd is several times faster than pg_dump's
zlib), compressed with zstd as it arrives, so compressing overlaps the dump and no uncompressed copy
lands on disk. The archive's header carries the moment pg_dump started, stamped by
the system; ``verificar_fecha`` reads the whole archive back (``pg_restore -f /dev/null``, see
:mod:`respaldo.integridad`) and that date with ``pg_restore -l``. Restore with standard tools:
``zstd -dc X.dump.zst | pg_restore -d NEWDB``.

Least privileges: a role that can ``CONNECT`` to the database and ``SELECT`` every table and
sequence it should copy, e.g. the built-in ``pg_read_all_data`` role (PostgreSQL 14+).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from respaldo.artifacts import copy_compressed
from respaldo.errors import CopyError, DateCheckError
from respaldo.hooks.postgres import PgSession, explain_libpq, libpq_session, older_client
from respaldo.integridad import Verification
from respaldo.process import run_to_file
from respaldo.sources.base import CopyResult, Source, TargetBase, recipients_of

#: How long pg_dump waits for a table another session has locked, unless the target says otherwise.
DEFAULT_LOCK_WAIT_MINUTES = 5
#: How often a copy that received nothing new asks the server what pg_dump is waiting for.
LOCK_CHECK_SECONDS = 15.0
#: A wait that has not changed is told again this often.
LOCK_REPEAT_SECONDS = 60.0
LOCK_WAIT_DESCRIPTION = (
    "Minutos que pg_dump espera una tabla que otra sesión tiene bloqueada (un LOCK TABLE, un ALTER TABLE, "
    "un VACUUM FULL...). Mientras espera, el log de la tarea dice qué tabla espera y qué sesión la bloquea "
    "(número, usuario, aplicación); al cumplirse el plazo la copia falla con ese motivo en vez de esperar "
    "callada hasta el límite de la tarea."
)


class PostgresTarget(TargetBase):
    """A PostgreSQL database reached through an Airflow connection of type ``postgres``."""

    kind: Literal["postgres"]
    conn_id: Annotated[
        str,
        Field(min_length=1, description="Conexión de Airflow (tipo postgres) con servidor, usuario y clave; sus "
              "extras de SSL (sslmode, sslrootcert, sslcert, sslkey) también valen para pg_dump.",
              examples=["pg_financiero"]),
    ]
    database: Annotated[
        str | None,
        Field(min_length=1, description="Base de datos a copiar; por defecto la de la conexión.",
              examples=["financiero"]),
    ] = None
    exclude_tables: Annotated[
        list[str],
        Field(description="Tablas que no se copian (patrones de pg_dump --exclude-table).",
              examples=[["public.sesiones_web"]]),
    ] = []
    lock_wait_minutes: Annotated[
        float,
        Field(gt=0, le=1440, description=LOCK_WAIT_DESCRIPTION, examples=[5]),
    ] = DEFAULT_LOCK_WAIT_MINUTES


@dataclass(frozen=True)
class LockWait:
    """What a session of pg_dump waits for, and who holds it (as far as the backup role may see)."""

    table: str | None
    lock_type: str
    waiting_seconds: float
    holder_pid: int | None = None
    holder_user: str | None = None
    holder_application: str | None = None
    #: Age of the holder's transaction; only visible to roles with pg_read_all_stats.
    holder_transaction_seconds: float | None = None

    def holder(self) -> str:
        if self.holder_pid is None:
            return "otra sesión (no se pudo saber cuál)"
        application = f"aplicación «{self.holder_application}»" if self.holder_application else "sin aplicación"
        details = [f"usuario {self.holder_user or '?'}", application]
        if self.holder_transaction_seconds is not None:
            details.append(f"transacción abierta hace {_duration(self.holder_transaction_seconds)}")
        return f"la sesión {self.holder_pid} ({', '.join(details)})"

    def what(self) -> str:
        if self.table:
            return f"la tabla «{self.table}», bloqueada por {self.holder()}"
        return f"un bloqueo de tipo {self.lock_type}, retenido por {self.holder()}"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


_WAITS_SQL = """
SELECT format('%%I.%%I', n.nspname, c.relname), w.locktype, extract(epoch FROM now() - w.waitstart),
       b.pid, b.usename, nullif(b.application_name, ''), extract(epoch FROM now() - b.xact_start)
FROM pg_stat_activity a
JOIN pg_locks w ON w.pid = a.pid AND NOT w.granted
LEFT JOIN pg_class c ON c.oid = w.relation
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL unnest(pg_blocking_pids(a.pid)) AS blocking(pid) ON true
LEFT JOIN pg_stat_activity b ON b.pid = blocking.pid
WHERE a.application_name = %s AND a.pid <> pg_backend_pid()
ORDER BY w.waitstart, b.pid
"""
_HOLDERS_SQL = """
SELECT %s, 'relation', 0, a.pid, a.usename, nullif(a.application_name, ''), extract(epoch FROM now() - a.xact_start)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.granted AND l.mode = 'AccessExclusiveLock' AND l.relation = to_regclass(%s)
"""
_LOCK_FAILED = re.compile(r"Query was: LOCK TABLE (?P<table>\S+) IN ACCESS SHARE MODE")


class LockWatch:
    """While pg_dump runs, say in the log what it waits for whenever no bytes have arrived for a while.

    pg_dump first takes a share lock on every table it copies; a session holding one of them in
    ACCESS EXCLUSIVE mode (``LOCK TABLE``, ``ALTER TABLE``, ``VACUUM FULL``...) makes it wait, silent,
    until ``--lock-wait-timeout``. Every ``interval`` seconds without new output this asks the server,
    through the provider hook's connection, what pg_dump's session waits for and which sessions block
    it (``pg_locks``, ``pg_stat_activity``, ``pg_blocking_pids``), logs it when it changes (and again
    every :data:`LOCK_REPEAT_SECONDS`), and keeps it for the reason of a failure. Without the
    ``pg_read_all_stats`` role the backup user sees who holds the lock but not since when.
    """

    def __init__(self, session: PgSession, dest: Path, log: logging.Logger, *, bound_minutes: float):
        self.session = session
        self.dest = dest
        self.log = log
        self.bound_minutes = bound_minutes
        self.interval = LOCK_CHECK_SECONDS
        self.seen: list[LockWait] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="respaldo-lock-watch", daemon=True)
        self._conn = None
        self._failed = False
        self._asking = threading.Lock()  # the watch's thread and a failure's reason share one connection

    def __enter__(self) -> LockWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _query(self, sql: str, params: tuple) -> list[LockWait]:
        """Rows of ``sql`` as :class:`LockWait`; a watch that cannot ask says so once and stays quiet."""
        try:
            with self._asking:
                if self._conn is None:
                    self._conn = self.session.connect(
                        application_name=f"{self.session.application_name} (vigilancia)")
                with self._conn.cursor() as cur:
                    cur.execute(sql, params)
                    rows = cur.fetchall()
        except Exception as err:
            self._close()
            if not self._failed:
                self._failed = True
                self.log.warning("No se pudo preguntar al servidor %s qué espera pg_dump: %s", self.session.where,
                                 self.session.blank(str(err).strip()))
            return []
        return [LockWait(table, lock_type, float(waiting or 0), pid, user, application,
                         None if age is None else float(age))
                for table, lock_type, waiting, pid, user, application, age in rows]

    def waits(self) -> list[LockWait]:
        return self._query(_WAITS_SQL, (self.session.application_name,))

    def holders(self, table: str) -> list[LockWait]:
        """Sessions holding ``table`` (as pg_dump names it) in the one mode that blocks a dump."""
        return self._query(_HOLDERS_SQL, (table, table))

    def _watch(self) -> None:
        last_size, last_said, said_at = -1, "", 0.0
        while not self._stop.wait(self.interval):
            size = self.dest.stat().st_size if self.dest.exists() else 0
            if size != last_size:
                last_size = size
                continue
            waits = self.waits()
            if waits:
                self.seen = waits
            now = time.monotonic()
            said = "; ".join(wait.what() for wait in waits)
            if not said or (said == last_said and now - said_at < LOCK_REPEAT_SECONDS):
                continue
            last_said, said_at = said, now
            for wait in waits:
                self.log.warning(
                    "pg_dump lleva %s esperando, en la base «%s» de %s, %s. Si sigue así, la copia se rinde a los "
                    "%s min de espera (lock_wait_minutes).", _duration(wait.waiting_seconds), self.session.database,
                    self.session.where, wait.what(), f"{self.bound_minutes:g}")

    def explain(self, text: str) -> str:
        """The plain reason of a dump that gave up waiting for a lock, or an empty string."""
        failed = _LOCK_FAILED.search(text)
        if not failed or ("statement timeout" not in text and "lock timeout" not in text):
            return ""
        table = failed["table"]
        name = table.replace('"', "")
        known = [w for w in self.seen if w.table and w.table.replace('"', "") == name] or self.holders(table)
        holders = "; ".join(dict.fromkeys(w.holder() for w in known)) or "otra sesión (no se pudo saber cuál)"
        pids = [w.holder_pid for w in known if w.holder_pid is not None]
        terminate = (f" (o un administrador puede cerrarla con SELECT pg_terminate_backend({pids[0]}))"
                     if len(pids) == 1 else "")
        return (f"pg_dump esperó más de {self.bound_minutes:g} min (lock_wait_minutes) para leer la tabla «{name}» "
                f"de la base «{self.session.database}» en {self.session.where}, bloqueada por {holders}. Pida a quien "
                f"la usa que termine su transacción{terminate} y vuelva a ejecutar la copia; si es un mantenimiento "
                "que suele tardar más, aumente lock_wait_minutes del objetivo.")


#: What the figures of a PostgreSQL copy count: every ordinary table (partitions included) outside the
#: system schemas. Counted with ``ONLY``, as pg_dump's COPY reads each table without its children.
_TABLES_SQL = """
SELECT c.oid, format('%I.%I', n.nspname, c.relname), n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
ORDER BY 2
"""


class SnapshotCounts:
    """Exact row counts of the tables a dump copies, taken in the dump's own snapshot.

    A ``REPEATABLE READ`` transaction on the provider hook's connection exports its snapshot
    (``pg_export_snapshot()``), pg_dump imports it (``--snapshot``), and the tables are counted in that
    transaction, in a thread, while pg_dump copies them: both see exactly the same rows, whatever
    the application writes meanwhile, so a restore drill can demand the very same counts. The
    transaction stays open until pg_dump has finished (it must until pg_dump has imported the
    snapshot; pg_dump's own transaction holds the same rows back from vacuum all along, so it costs the
    server nothing more). The counting session is gentle: no parallel workers, and it gives up on a
    locked table after ``lock_wait_minutes`` as pg_dump does.

    The figures are an addition to the copy, never a condition for it: a snapshot that cannot be
    exported or a count that fails is logged and recorded as the figures' ``error``, and pg_dump
    copies the database as it always did.
    """

    def __init__(self, session: PgSession, log: logging.Logger, *, lock_wait_minutes: float):
        self.session = session
        self.log = log
        self.lock_wait_minutes = lock_wait_minutes
        self.conn = None
        self.snapshot: str | None = None
        self.tables: list[tuple[int, str, str, str]] = []
        self.counts: dict[str, int] = {}
        self.error: str | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._count, name="respaldo-cifras", daemon=True)

    def __enter__(self) -> SnapshotCounts:
        try:
            self.conn = self.session.connect(application_name=f"{self.session.application_name} (cifras)")
            with self.conn.cursor() as cur:
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur.execute("SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', '0', true), "
                            "set_config('idle_in_transaction_session_timeout', '0', true), "
                            "set_config('max_parallel_workers_per_gather', '0', true)",
                            (f"{max(int(self.lock_wait_minutes * 60_000), 1)}ms",))
                cur.execute("SELECT pg_export_snapshot()")
                self.snapshot = cur.fetchone()[0]
                cur.execute(_TABLES_SQL)
                self.tables = list(cur.fetchall())
        except Exception as err:  # noqa: BLE001 - the copy goes on without figures
            self._fail(err)
            self._close()
        else:
            self._thread.start()
        return self

    def argv(self) -> list[str]:
        """pg_dump's option to read in this snapshot (none when there is no snapshot)."""
        return [f"--snapshot={self.snapshot}"] if self.snapshot and self.conn is not None else []

    def _fail(self, err: BaseException) -> None:
        self.error = self.session.blank(str(err).strip() or type(err).__name__)
        self.log.warning("No se pudieron contar las filas de «%s» en la instantánea de la copia (la copia sigue, sin "
                         "esas cifras): %s", self.session.database, self.error)

    def _count(self) -> None:
        from psycopg import sql

        started = time.monotonic()
        try:
            with self.conn.cursor() as cur:
                for _, name, schema, table in self.tables:
                    cur.execute(sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(sql.Identifier(schema),
                                                                                  sql.Identifier(table)))
                    self.counts[name] = cur.fetchone()[0]
        except Exception as err:  # noqa: BLE001 - recorded as the figures' error
            if self.error is None:
                self._fail(err)
        self.seconds = time.monotonic() - started

    def result(self) -> dict:
        """The figures: the snapshot, each table's rows and OID (to match the archive's table of contents)."""
        if self._thread.is_alive():
            self._thread.join()
        figures: dict = {"motor": "postgres", "instantanea": self.snapshot}
        if self.error is not None:
            return {**figures, "error": self.error}
        self.log.info("Filas contadas en la instantánea de pg_dump: %d tablas, %d filas, en %.1f s", len(self.counts),
                      sum(self.counts.values()), self.seconds)
        return {**figures, "tablas": dict(self.counts),
                "oid": {name: oid for oid, name, _, _ in self.tables if name in self.counts}}

    def _close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None

    def __exit__(self, *exc_info: object) -> None:
        if self._thread.is_alive():  # pg_dump failed or the task was stopped: no point in counting on
            with contextlib.suppress(Exception):
                self.conn.cancel()
            self._thread.join()
            self.error = self.error or "la copia se interrumpió antes de terminar de contar"
        self._close()


def table_figures(counted: dict | None, archived: frozenset[int] | None) -> dict | None:
    """``counted`` (:meth:`SnapshotCounts.result`) narrowed to the tables whose rows the archive carries."""
    if not counted or "tablas" not in counted or archived is None:
        return counted
    oids = counted.get("oid", {})
    figures = {key: value for key, value in counted.items() if key not in ("tablas", "oid")}
    figures["tablas"] = {name: rows for name, rows in counted["tablas"].items() if oids.get(name) in archived}
    uncounted = sorted(archived - set(oids.values()))
    if uncounted:  # copied without a count (created after the list was read): the drill cannot judge them
        figures["sin_contar"] = uncounted
    return figures


def pg_dump_version(env: dict[str, str]) -> tuple[int, str]:
    """The pg_dump on PATH: its version as PostgreSQL numbers it (150014 for 15.14) and as text."""
    try:
        proc = subprocess.run(["pg_dump", "--version"], env=env, capture_output=True, text=True,  # noqa: S603
                              check=False)
    except OSError as err:
        raise CopyError(f"No se pudo saber la versión de pg_dump en este equipo: {err.strerror} (PATH "
                        f"{env.get('PATH', '')}); instale el cliente de PostgreSQL (postgresql-client).") from err
    found = re.search(r"(\d+)(?:\.(\d+))?", proc.stdout)
    if proc.returncode != 0 or not found:
        raise CopyError(f"No se pudo saber la versión de pg_dump en este equipo: {proc.stderr.strip() or proc.stdout}")
    major, minor = int(found[1]), int(found[2] or 0)
    return major * 10000 + minor, found[0]


class PostgresSource(Source):
    kind = "postgres"
    model = PostgresTarget
    extension = "dump"
    label = "base de datos PostgreSQL"
    category = "bases de datos"
    restore_hint = "createdb NUEVA && zstd -dc {artifact} | pg_restore --no-owner -d NUEVA"
    compresses = True

    def _session(self, target: PostgresTarget):
        return libpq_session(target.conn_id, database=target.database, application_name=f"respaldo {target.id}")

    def copy(self, target: PostgresTarget, dest: Path, log: logging.Logger) -> CopyResult:
        """pg_dump's custom format, compressed as it arrives when ``dest`` ends in ``.zst``."""
        with self._session(target) as session:
            log.info("pg_dump de la base «%s» en %s (usuario %s), formato custom; espera como máximo %s min una "
                     "tabla bloqueada", session.database, session.where, session.user or "-",
                     f"{target.lock_wait_minutes:g}")
            argv = ["pg_dump", "--format=custom", "--compress=0", "--no-password",
                    f"--lock-wait-timeout={max(int(target.lock_wait_minutes * 60_000), 1)}"]
            argv += [f"--exclude-table={pattern}" for pattern in target.exclude_tables]
            with SnapshotCounts(session, log, lock_wait_minutes=target.lock_wait_minutes) as counts, \
                    LockWatch(session, dest, log, bound_minutes=target.lock_wait_minutes) as watch:
                argv += counts.argv()

                def explain(text: str, _code: int) -> str:
                    return watch.explain(text) or explain_libpq(text, session)

                if dest.name.endswith(".zst"):
                    done = copy_compressed(argv, dest, env=session.env, log=log, what="pg_dump",
                                           secrets=session.secrets, explain=explain,
                                           recipients=recipients_of(target))
                    result = CopyResult(path=dest, bytes=done.compressed, compressed=True,
                                        original_bytes=done.original, sha256=done.sha256, sealed=done.sealed)
                else:
                    size = run_to_file([*argv, f"--file={dest}"], dest, env=session.env, log=log, what="pg_dump",
                                       secrets=session.secrets, writes_dest_itself=True, explain=explain)
                    result = CopyResult(path=dest, bytes=size)
                result = dataclasses.replace(result, figures=counts.result())
        if (result.original_bytes if result.compressed else result.bytes) == 0:
            dest.unlink(missing_ok=True)
            raise CopyError("pg_dump no produjo datos: la copia está vacía")
        return result

    def read_stamp(self, target: PostgresTarget, path: Path, verified: Verification) -> dt.datetime:
        """The "Archive created at" of pg_dump's header, read by ``pg_restore --list`` during the verification."""
        if verified.created_at is None:
            raise DateCheckError(f"La copia {path.name} no trae la fecha de creación que pg_dump estampa.")
        return verified.created_at

    def figures(self, target: PostgresTarget, verified: Verification, counted: dict | None) -> dict | None:
        """The rows counted in the dump's snapshot, of exactly the tables whose data the archive holds.

        The archive's table of contents (its ``TABLE DATA`` entries, read by ``verificar_fecha``) says
        which tables pg_dump copied, by OID: excluded tables and extensions' tables drop out.
        """
        return table_figures(counted, verified.tables)

    def check(self, target: PostgresTarget) -> str:
        """The database answers, and this machine's pg_dump is not older than its server (else it refuses)."""
        with self._session(target) as session:
            proc = subprocess.run(  # noqa: S603 - fixed argv
                ["psql", "--no-password", "-XAtF", "|", "-c",
                 "select current_user, current_setting('server_version_num'), current_setting('server_version')"],
                env=session.env, capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                message = session.blank(proc.stderr.strip())
                plain = explain_libpq(message, session)
                raise CopyError(f"No responde la base «{session.database}» en {session.where}: "
                                + (plain or "psql no pudo conectarse"), detail=message)
            user, number, version = proc.stdout.strip().split("|", 2)
            client_number, client = pg_dump_version(session.env)
            if int(number) // 10000 > client_number // 10000:
                raise CopyError(f"La base «{session.database}» responde, pero no se puede copiar: "
                                + older_client(session.where, version.split()[0], client))
            return f"base «{session.database}» en {session.where} como {user} (PostgreSQL {version.split()[0]}, " \
                   f"pg_dump {client})"

    def summary(self, target: PostgresTarget) -> str:
        what = f"base PostgreSQL «{target.database or '(la de la conexión)'}» (conexión `{target.conn_id}`)"
        return f"{what}: {target.description}" if target.description else what
