"""Folders of files, on this machine or on a server reached over SSH, as one tar stream.

GNU tar in POSIX (pax) format keeps what a restore needs: names with spaces and accents, symlinks,
empty folders, permission bits and modification times (to the nanosecond). Over SSH the remote
``tar`` writes to its standard output and OpenSSH carries it here; the server's host key is always
verified. Restore with standard tools: ``zstd -dc X.tar.zst | tar -x -C DESTINO``.

Least privileges: an account that can read every file it must copy (for example a member of the
group that owns the portal's folder); it needs no write access anywhere.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import Field, field_validator

from respaldo.errors import CopyError
from respaldo.hooks.base import minimal_env
from respaldo.hooks.ssh import explain_ssh_failure, openssh_session
from respaldo.process import run_to_file
from respaldo.sources.base import CopyResult, Source, TargetBase
from respaldo.ssh import check_readable

#: GNU tar exits 1 when a file changed while it was read: the archive is still complete and valid, and
#: holds each such file as it was read. That is ordinary for a share people work in (not for a disk
#: image: see :mod:`respaldo.sources.vm`).
TAR_OK = (0, 1)
_CHANGED = re.compile(r"^tar: (.+): file changed as we read it$", re.MULTILINE)
#: How many changed files a warning names before it only counts the rest.
CHANGED_SHOWN = 20


def changed_while_read(error_text: str) -> list[str]:
    """The files GNU tar reported as changed while it read them (names as tar printed them)."""
    return _CHANGED.findall(error_text)


def warn_changed(error_text: str, returncode: int) -> str:
    """A plain warning naming the files that changed while tar read them, for a copy that still counts."""
    changed = changed_while_read(error_text)
    if returncode != 1 or not changed:
        return ""
    shown = ", ".join(changed[:CHANGED_SHOWN])
    if len(changed) > CHANGED_SHOWN:
        shown += f" y {len(changed) - CHANGED_SHOWN} más"
    return (f"{len(changed)} archivo(s) cambiaron mientras se copiaban; la copia guarda cada uno como estaba al "
            f"leerlo: {shown}")


_TAR_MISSING = re.compile(r"^tar: (.+?): Cannot (?:stat|open): No such file or directory$", re.MULTILINE)
_TAR_DENIED = re.compile(r"^tar: (.+?): (?:Cannot (?:open|savedir|stat)|Cannot read): Permission denied$", re.MULTILINE)
_TAR_NO_BASE = re.compile(r"^tar: (.+?): Cannot (?:open|chdir)", re.MULTILINE)


def explain_tar(error_text: str, where: str) -> str:
    """GNU tar's failures in words: what is missing or unreadable, under ``where``, and what to fix."""
    if missing := _TAR_MISSING.findall(error_text):
        return (f"no existe {', '.join(f'«{m}»' for m in missing[:10])} en {where}: revise `path` e `include` del "
                "objetivo en el inventario")
    if denied := _TAR_DENIED.findall(error_text):
        return (f"el usuario que copia no puede leer {', '.join(f'«{m}»' for m in denied[:10])} en {where}: dele "
                "permiso de lectura (por ejemplo, agréguelo al grupo dueño de la carpeta)")
    if base := _TAR_NO_BASE.findall(error_text):
        return f"no existe o no se puede abrir la carpeta «{base[0]}» en {where}: revise `path` del objetivo"
    return ""


def _relative(value: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"«{value}» debe ser relativa a `path` y sin «..»")
    return value


class FilesTarget(TargetBase):
    """A folder tree, local or on a server reached over SSH."""

    kind: Literal["files"]
    path: Annotated[
        str,
        Field(description="Carpeta base (ruta absoluta) en este servidor o en el remoto.",
              examples=["/var/www/portal"]),
    ]
    include: Annotated[
        list[str],
        Field(min_length=1, description="Qué copiar, relativo a `path` (por defecto todo).",
              examples=[["html", "uploads"]]),
    ] = ["."]
    exclude: Annotated[
        list[str],
        Field(description="Patrones que no se copian (comodines de tar: `*.log`, `cache/*`).",
              examples=[["*.tmp", "cache"]]),
    ] = []
    conn_id: Annotated[
        str | None,
        Field(description="Conexión SSH de Airflow si la carpeta está en otro servidor; sin ella, en este.",
              examples=["ssh_portal"]),
    ] = None
    known_hosts: Annotated[
        str | None,
        Field(description="Archivo known_hosts con la llave del servidor, si la conexión no trae «host_key».",
              examples=["/etc/respaldo/known_hosts"]),
    ] = None

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not PurePosixPath(value).is_absolute():
            raise ValueError(f"`path` debe ser una ruta absoluta, no «{value}»")
        return value

    @field_validator("include")
    @classmethod
    def _includes(cls, values: list[str]) -> list[str]:
        return [_relative(v) for v in values]


def tar_argv(path: str, include: list[str], exclude: list[str], *, sparse: bool = False,
             prefix: str | None = None) -> list[str]:
    """GNU tar writing to stdout an archive of ``include`` (relative to ``path``), names under ``prefix``."""
    argv = ["tar", "--create", "--file=-", "--format=posix", f"--directory={path}"]
    if sparse:
        argv.append("--sparse")
    if prefix:  # symlink targets are left alone (flag S), so links keep pointing where they did
        argv.append(f"--transform=s,^,{prefix},S")
    argv += [f"--exclude={pattern}" for pattern in exclude]
    return [*argv, "--", *include]


class FilesSource(Source):
    kind = "files"
    model = FilesTarget
    extension = "tar"
    label = "carpeta de archivos"
    category = "archivos"
    restore_hint = "mkdir DESTINO && zstd -dc {artifact} | tar -x -C DESTINO"

    def copy(self, target: FilesTarget, dest: Path, log: logging.Logger) -> CopyResult:
        argv = tar_argv(target.path, target.include, target.exclude)
        if target.conn_id is None:
            log.info("tar de %s (%s) en este servidor", target.path, ", ".join(target.include))
            size = run_to_file(argv, dest, env=minimal_env(), log=log, what="tar", ok_codes=TAR_OK,
                               warn=warn_changed, explain=lambda text, _code: explain_tar(text, "este servidor"))
        else:
            with openssh_session(target.conn_id, known_hosts=target.known_hosts) as session:
                log.info("tar de %s (%s) en %s por SSH", target.path, ", ".join(target.include), session.describe())
                size = run_to_file(
                    session.argv(argv), dest, env=session.env, log=log, what=f"tar por SSH en {session.describe()}",
                    secrets=session.secrets, ok_codes=TAR_OK, warn=warn_changed,
                    explain=lambda text, code: (explain_ssh_failure(text, session, code)
                                                or explain_tar(text, session.describe())),
                )
        if size == 0:
            dest.unlink(missing_ok=True)
            raise CopyError("tar no produjo datos: la copia está vacía")
        return CopyResult(path=dest, bytes=size)

    def check(self, target: FilesTarget) -> str:
        folders = [str(PurePosixPath(target.path) / item) for item in target.include]
        if target.conn_id is None:
            missing = [folder for folder in folders if not os.access(folder, os.R_OK)]
            if missing:
                raise CopyError(f"No existe o no se puede leer: {', '.join(missing)}")
            return f"{', '.join(folders)} en este servidor"
        return f"{', '.join(folders)} en {check_readable(target.conn_id, folders, target.known_hosts)}"

    def summary(self, target: FilesTarget) -> str:
        where = f"por SSH (conexión `{target.conn_id}`)" if target.conn_id else "en este servidor"
        what = f"carpeta `{target.path}` {where}"
        return f"{what}: {target.description}" if target.description else what
