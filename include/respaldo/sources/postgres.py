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

import datetime as dt
import logging
import os
import subprocess
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from respaldo.artifacts import copy_compressed
from respaldo.errors import CopyError, DateCheckError
from respaldo.integridad import Verification
from respaldo.process import private_dir, run_to_file, write_private
from respaldo.sources.base import CopyResult, Source, TargetBase

CONNECT_TIMEOUT_SECONDS = 20


class PostgresTarget(TargetBase):
    """A PostgreSQL database reached through an Airflow connection of type ``postgres``."""

    kind: Literal["postgres"]
    conn_id: Annotated[
        str,
        Field(min_length=1, description="Conexión de Airflow (tipo postgres) con servidor, usuario y clave.",
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


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


class PostgresSource(Source):
    kind = "postgres"
    model = PostgresTarget
    extension = "dump"
    label = "base de datos PostgreSQL"
    category = "bases de datos"
    restore_hint = "createdb NUEVA && zstd -dc {artifact} | pg_restore --no-owner -d NUEVA"
    compresses = True

    def _connection(self, target: PostgresTarget):
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(target.conn_id)

    def _environment(self, target: PostgresTarget, secrets_dir: Path) -> tuple[dict[str, str], str]:
        """Environment for libpq tools; the password goes to a 0600 pgpass file, never argv or env."""
        conn = self._connection(target)
        database = target.database or conn.schema or "postgres"
        host = conn.host or "localhost"
        port = str(conn.port or 5432)
        user = conn.login or ""
        password = conn.password or ""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(
            PGHOST=host,
            PGPORT=port,
            PGDATABASE=database,
            PGCONNECT_TIMEOUT=str(CONNECT_TIMEOUT_SECONDS),
            PGAPPNAME=f"respaldo {target.id}",
            TZ="UTC",
        )
        if user:
            env["PGUSER"] = user
        sslmode = (conn.extra_dejson or {}).get("sslmode")
        if sslmode:
            env["PGSSLMODE"] = str(sslmode)
        pgpass = secrets_dir / "pgpass"
        line = ":".join(_pgpass_escape(v) for v in ("*", "*", "*", "*", password))
        write_private(pgpass, line + "\n")
        env["PGPASSFILE"] = str(pgpass)
        return env, password

    def copy(self, target: PostgresTarget, dest: Path, log: logging.Logger) -> CopyResult:
        """pg_dump's custom format, compressed as it arrives when ``dest`` ends in ``.zst``."""
        with private_dir() as secrets_dir:
            env, password = self._environment(target, secrets_dir)
            log.info(
                "pg_dump de la base «%s» en %s:%s (usuario %s), formato custom",
                env["PGDATABASE"], env["PGHOST"], env["PGPORT"], env.get("PGUSER", "-"),
            )
            argv = ["pg_dump", "--format=custom", "--compress=0", "--no-password"]
            argv += [f"--exclude-table={pattern}" for pattern in target.exclude_tables]
            if dest.name.endswith(".zst"):
                original, compressed, sha256 = copy_compressed(argv, dest, env=env, log=log, what="pg_dump",
                                                               secrets=[password])
                result = CopyResult(path=dest, bytes=compressed, compressed=True, original_bytes=original,
                                    sha256=sha256)
            else:
                size = run_to_file([*argv, f"--file={dest}"], dest, env=env, log=log, what="pg_dump",
                                   secrets=[password], writes_dest_itself=True)
                result = CopyResult(path=dest, bytes=size)
        if (result.original_bytes if result.compressed else result.bytes) == 0:
            dest.unlink(missing_ok=True)
            raise CopyError("pg_dump no produjo datos: la copia está vacía")
        return result

    def read_stamp(self, target: PostgresTarget, path: Path, verified: Verification) -> dt.datetime:
        """The "Archive created at" of pg_dump's header, read by ``pg_restore --list`` during the verification."""
        if verified.created_at is None:
            raise DateCheckError(f"La copia {path.name} no trae la fecha de creación que pg_dump estampa.")
        return verified.created_at

    def check(self, target: PostgresTarget) -> str:
        with private_dir() as secrets_dir:
            env, password = self._environment(target, secrets_dir)
            proc = subprocess.run(  # noqa: S603 - fixed argv
                ["psql", "--no-password", "-XAtc", "select current_user"],
                env=env, capture_output=True, text=True, check=False,
            )
        if proc.returncode != 0:
            message = proc.stderr.strip().replace(password, "********") if password else proc.stderr.strip()
            raise CopyError(f"No responde la base «{env['PGDATABASE']}» en {env['PGHOST']}:{env['PGPORT']}: "
                            f"{message}")
        return f"base «{env['PGDATABASE']}» en {env['PGHOST']}:{env['PGPORT']} como {proc.stdout.strip()}"

    def summary(self, target: PostgresTarget) -> str:
        what = f"base PostgreSQL «{target.database or '(la de la conexión)'}» (conexión `{target.conn_id}`)"
        return f"{what}: {target.description}" if target.description else what
