"""Web portals: the portal's database and its files, copied in the same run, in one artifact.

The artifact is a tar holding ``archivos/`` (the portal's folder tree, local or over SSH, exactly as
the ``files`` kind copies it) and ``base_de_datos.dump`` (PostgreSQL, pg_dump's custom format) or
``base_de_datos.sql`` (MySQL/MariaDB), so one file restores the whole portal:

    mkdir portal && zstd -dc X.tar.zst | tar -x -C portal
    createdb NUEVA && pg_restore --no-owner -d NUEVA portal/base_de_datos.dump
    #   (MySQL/MariaDB: mariadb NUEVA < portal/base_de_datos.sql)
    cp -a portal/archivos/. /var/www/portal/

The creation date is the one the database dump carries (pg_dump's header, mariadb-dump's footer).
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from respaldo.errors import CopyError, DateCheckError
from respaldo.hooks.base import minimal_env
from respaldo.hooks.ssh import explain_ssh_failure, openssh_session
from respaldo.integridad import DATABASE_MEMBER, Verification
from respaldo.process import run_to_file
from respaldo.sources.base import CopyResult, Source, TargetBase
from respaldo.sources.files import TAR_OK, FilesTarget, explain_tar, tar_argv, warn_changed
from respaldo.sources.postgres import DEFAULT_LOCK_WAIT_MINUTES, LOCK_WAIT_DESCRIPTION

FILES_PREFIX = "archivos/"


class PortalDatabase(BaseModel):
    """The portal's database."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Annotated[Literal["postgres", "mysql"], Field(description="Motor de la base del portal.")]
    conn_id: Annotated[str, Field(min_length=1, description="Conexión de Airflow de la base.",
                                  examples=["mysql_portal"])]
    database: Annotated[str | None, Field(min_length=1, description="Base; por defecto la de la conexión.",
                                          examples=["portal_web"])] = None
    exclude_tables: Annotated[list[str], Field(description="Tablas que no se copian (cachés, sesiones).",
                                               examples=[["cache_page"]])] = []
    lock_wait_minutes: Annotated[
        float | None,
        Field(gt=0, le=1440, description="Solo para bases postgres: " + LOCK_WAIT_DESCRIPTION
              + f" Por defecto {DEFAULT_LOCK_WAIT_MINUTES}.", examples=[5]),
    ] = None

    @model_validator(mode="after")
    def _lock_wait_is_postgres(self) -> PortalDatabase:
        if self.lock_wait_minutes is not None and self.kind != "postgres":
            raise ValueError("`lock_wait_minutes` solo se usa con bases postgres")
        return self


class PortalFiles(BaseModel):
    """The portal's files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Annotated[str, Field(description="Carpeta del portal (ruta absoluta).", examples=["/var/www/portal"])]
    include: Annotated[list[str], Field(min_length=1, description="Qué copiar, relativo a `path`.")] = ["."]
    exclude: Annotated[list[str], Field(description="Patrones que no se copian.", examples=[["cache/*"]])] = []
    conn_id: Annotated[str | None, Field(description="Conexión SSH si los archivos están en otro servidor.",
                                         examples=["ssh_portal"])] = None
    known_hosts: Annotated[str | None, Field(description="known_hosts con la llave del servidor.")] = None


class PortalTarget(TargetBase):
    """A web portal: its database plus its files."""

    kind: Literal["portal"]
    database: Annotated[PortalDatabase, Field(description="La base de datos del portal.")]
    files: Annotated[PortalFiles, Field(description="Los archivos del portal.")]

    @field_validator("files")
    @classmethod
    def _valid_files(cls, value: PortalFiles) -> PortalFiles:
        FilesTarget.model_validate({"id": "portal", "kind": "files", "frequency": "x", "responsible": "x",
                                    **value.model_dump()})
        return value


def _as_target(portal: PortalTarget, kind: str, fields: dict[str, Any]) -> TargetBase:
    from respaldo.sources import source_for

    common = {"id": portal.id, "frequency": portal.frequency, "responsible": portal.responsible}
    return source_for(kind).model.model_validate({**common, **fields, "kind": kind})


class PortalSource(Source):
    kind = "portal"
    model = PortalTarget
    extension = "tar"
    label = "portal web (base de datos y archivos)"
    category = "portales web"
    restore_hint = ("mkdir portal && zstd -dc {artifact} | tar -x -C portal; luego restaure "
                    "portal/base_de_datos.* con pg_restore o mariadb y copie portal/archivos/")

    def _database(self, target: PortalTarget) -> tuple[Source, TargetBase]:
        from respaldo.sources import source_for

        source = source_for(target.database.kind)
        fields = target.database.model_dump(exclude={"kind"}, exclude_none=True)
        return source, _as_target(target, target.database.kind, fields)

    def pool(self, target: PortalTarget) -> str:
        return target.pool or f"respaldo_{target.database.conn_id}"

    def copy(self, target: PortalTarget, dest: Path, log: logging.Logger) -> CopyResult:
        files = target.files
        argv = tar_argv(files.path, files.include, files.exclude, prefix=FILES_PREFIX)
        if files.conn_id is None:
            log.info("Portal %s: archivos de %s en este servidor", target.id, files.path)
            run_to_file(argv, dest, env=minimal_env(), log=log, what="tar de los archivos del portal",
                        ok_codes=TAR_OK, warn=warn_changed,
                        explain=lambda text, _code: explain_tar(text, "este servidor"))
        else:
            with openssh_session(files.conn_id, known_hosts=files.known_hosts) as session:
                log.info("Portal %s: archivos de %s en %s por SSH", target.id, files.path, session.describe())
                run_to_file(session.argv(argv), dest, env=session.env, log=log,
                            what=f"tar de los archivos del portal por SSH en {session.describe()}",
                            secrets=session.secrets, ok_codes=TAR_OK, warn=warn_changed,
                            explain=lambda text, code: (explain_ssh_failure(text, session, code)
                                                        or explain_tar(text, session.describe())))
        source, database = self._database(target)
        dump = dest.with_name(f"{DATABASE_MEMBER}.{source.extension}")
        try:
            log.info("Portal %s: base de datos (%s)", target.id, source.label)
            counted = source.copy(database, dump, log).figures
            proc = subprocess.run(  # noqa: S603 - fixed argv
                ["tar", "--append", f"--file={dest}", "--format=posix", f"--directory={dump.parent}", "--",
                 dump.name], env=minimal_env(), capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                raise CopyError("No se pudo unir la base a los archivos del portal en la copia a medio hacer; "
                                "revise el espacio y los permisos de la carpeta de respaldos", detail=proc.stderr)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        finally:
            dump.unlink(missing_ok=True)
        return CopyResult(path=dest, bytes=dest.stat().st_size, figures={"base_de_datos": counted})

    def read_stamp(self, target: PortalTarget, path: Path, verified: Verification) -> dt.datetime | None:
        """The database dump's own creation date, which the verification read inside the portal's tar."""
        source, database = self._database(target)
        name = f"{DATABASE_MEMBER}.{source.extension}"
        if verified.database_member != name:
            raise DateCheckError(f"La copia del portal {path.name} no trae su base de datos ({name}).")
        return source.read_stamp(database, path, verified)

    def figures(self, target: PortalTarget, verified: Verification, counted: dict | None) -> dict | None:
        """The files' figures (what the tar holds besides the database) and the database's own."""
        source, database = self._database(target)
        return {"archivos": verified.contents,
                "base_de_datos": source.figures(database, verified, (counted or {}).get("base_de_datos"))}

    def check(self, target: PortalTarget) -> str:
        from respaldo.sources import source_for

        source, database = self._database(target)
        files = _as_target(target, "files", target.files.model_dump())
        return f"base: {source.check(database)}; archivos: {source_for('files').check(files)}"

    def summary(self, target: PortalTarget) -> str:
        where = f"por SSH (`{target.files.conn_id}`)" if target.files.conn_id else "en este servidor"
        what = (f"portal: base {target.database.kind} (conexión `{target.database.conn_id}`) y archivos "
                f"`{target.files.path}` {where}")
        return f"{what}: {target.description}" if target.description else what
