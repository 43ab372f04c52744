"""PostgreSQL databases, copied with ``pg_dump`` in its custom format.

The copy is ``pg_dump -Fc -Z0`` (no compression inside: zstd is several times faster than pg_dump's
zlib), compressed with zstd as it arrives, so compressing overlaps the dump and no uncompressed copy
lands on disk. The archive's header carries the moment pg_dump started, stamped by
the system; ``verificar_fecha`` reads it back with ``pg_restore -l``. Restore with standard tools:
``zstd -dc X.dump.zst | pg_restore -d NEWDB``.

Least privileges: a role that can ``CONNECT`` to the database and ``SELECT`` every table and
sequence it should copy, e.g. the built-in ``pg_read_all_data`` role (PostgreSQL 14+).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from respaldo.artifacts import copy_compressed, scan_compressed
from respaldo.errors import CopyError, DateCheckError
from respaldo.hooks.base import minimal_env
from respaldo.hooks.postgres import explain_libpq, libpq_session
from respaldo.process import run_to_file
from respaldo.sources.base import CopyResult, Source, TargetBase


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
            log.info("pg_dump de la base «%s» en %s (usuario %s), formato custom", session.database, session.where,
                     session.user or "-")
            argv = ["pg_dump", "--format=custom", "--compress=0", "--no-password"]
            argv += [f"--exclude-table={pattern}" for pattern in target.exclude_tables]
            explain = lambda text, _code: explain_libpq(text, session)  # noqa: E731
            if dest.name.endswith(".zst"):
                original, compressed, sha256 = copy_compressed(argv, dest, env=session.env, log=log,
                                                               what="pg_dump", secrets=session.secrets,
                                                               explain=explain)
                result = CopyResult(path=dest, bytes=compressed, compressed=True, original_bytes=original,
                                    sha256=sha256)
            else:
                size = run_to_file([*argv, f"--file={dest}"], dest, env=session.env, log=log, what="pg_dump",
                                   secrets=session.secrets, writes_dest_itself=True, explain=explain)
                result = CopyResult(path=dest, bytes=size)
        if (result.original_bytes if result.compressed else result.bytes) == 0:
            dest.unlink(missing_ok=True)
            raise CopyError("pg_dump no produjo datos: la copia está vacía")
        return result

    def read_stamp(self, target: PostgresTarget, path: Path) -> dt.datetime:
        """Read "Archive created at" from the dump's header; a dump without a readable one is broken.

        A compressed copy is read to its end (checking it) while ``pg_restore --list`` reads its head.
        """
        env = minimal_env()  # pg_restore --list reads a file: no connection, so nothing of one
        if path.name.endswith(".zst"):
            with tempfile.TemporaryFile() as listing, tempfile.TemporaryFile() as errors:
                proc = subprocess.Popen(  # noqa: S603 - fixed argv
                    ["pg_restore", "--list"], env=env, stdin=subprocess.PIPE, stdout=listing, stderr=errors
                )

                def feed(chunk: bytes) -> bool:
                    try:
                        proc.stdin.write(chunk)
                        return True
                    except BrokenPipeError:  # it has read the header and table of contents it needs
                        return False

                try:
                    scan_compressed(path, feed)
                finally:
                    with contextlib.suppress(BrokenPipeError):
                        proc.stdin.close()
                    returncode = proc.wait()
                listing.seek(0)
                errors.seek(0)
                stdout = listing.read().decode("utf-8", "replace")
                stderr = errors.read().decode("utf-8", "replace")
        else:
            done = subprocess.run(  # noqa: S603 - fixed argv
                ["pg_restore", "--list", str(path)], env=env, capture_output=True, text=True, check=False
            )
            returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
        if returncode != 0:
            raise DateCheckError(
                f"La copia {path.name} no es un archivo de pg_dump legible (pg_restore --list: "
                f"{stderr.strip()[-500:]})"
            )
        for line in stdout.splitlines():
            marker = "Archive created at "
            if marker in line:
                stamp = line.split(marker, 1)[1].strip()
                try:
                    parsed = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S UTC")
                except ValueError as err:
                    raise DateCheckError(f"Fecha de creación ilegible en la copia {path.name}: «{stamp}»") from err
                return parsed.replace(tzinfo=dt.UTC)
        raise DateCheckError(f"La copia {path.name} no trae la fecha de creación que pg_dump estampa")

    def check(self, target: PostgresTarget) -> str:
        with self._session(target) as session:
            proc = subprocess.run(  # noqa: S603 - fixed argv
                ["psql", "--no-password", "-XAtc", "select current_user"],
                env=session.env, capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                message = session.blank(proc.stderr.strip())
                plain = explain_libpq(message, session)
                raise CopyError(f"No responde la base «{session.database}» en {session.where}: "
                                + (f"{plain} Detalle: {message}" if plain else message))
            return f"base «{session.database}» en {session.where} como {proc.stdout.strip()}"

    def summary(self, target: PostgresTarget) -> str:
        what = f"base PostgreSQL «{target.database or '(la de la conexión)'}» (conexión `{target.conn_id}`)"
        return f"{what}: {target.description}" if target.description else what
