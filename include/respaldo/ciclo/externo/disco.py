"""``kind: path``: a folder on a mounted disk that must hold the marker file.

An unplugged USB disk or an unmounted NAS leaves its mount point as an empty folder of the system
disk; writing there would fill ``/`` and look like a good copy. The marker file, created once on the
mounted disk, is what proves the disk is there: without it every operation is refused.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath

from respaldo.artifacts import sha256_of as file_sha256
from respaldo.ciclo.externo.base import SIDECAR_SUFFIX, Destination, ExternalError, Placed, sidecar_text
from respaldo.ciclo.externo.config import ExternalPath


def _os_problem(err: OSError, where: str) -> str:
    if err.errno == errno.ENOSPC:
        return f"el disco externo {where} está lleno (no queda espacio); libere espacio o cambie de disco"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"no se puede escribir en el disco externo {where} ({err.strerror}); revise permisos o si está "
                "montado solo de lectura")
    return f"error del disco externo {where}: {err.strerror or err} ({err.filename or ''})"


class PathDestination(Destination):
    """A mounted disk: plain files, written under a temporary name, fsynced, re-read from disk, renamed."""

    kind = "path"

    def __init__(self, config: ExternalPath):
        self.config = config
        self.root = Path(config.path)

    def describe(self) -> str:
        return self.config.describe()

    def _mounted(self) -> None:
        marker = self.root / self.config.marker
        if not self.root.is_dir():
            raise ExternalError(f"El disco externo {self.root} no existe (external.path): ¿está conectado y montado?")
        if not marker.is_file():
            raise ExternalError(f"El disco externo {self.root} no tiene el archivo marcador «{self.config.marker}»: "
                                "parece no estar montado (se escribiría en el disco del sistema), así que no se "
                                f"copia nada. Monte el disco; si es nuevo, cree el marcador con `touch {marker}`.")

    def uri_of(self, relative: PurePosixPath) -> str:
        return str(self.root / relative)

    def _path(self, uri: str) -> Path:
        path = Path(uri)
        if not path.is_absolute() or self.root not in path.parents:
            raise ExternalError(f"«{uri}» no es una copia de {self.describe()}.")
        return path

    def _write(self, source: Path | None, text: str | None, final: Path, expected: str | None) -> None:
        """Write ``source`` (or ``text``) to a hidden temporary name beside ``final``, verify, rename."""
        temporary = final.with_name(f".{final.name}.parcial-{uuid.uuid4().hex[:8]}")
        try:
            if source is not None:
                shutil.copyfile(source, temporary)
            else:
                temporary.write_text(text or "", encoding="utf-8")
            fd = os.open(temporary, os.O_RDONLY)
            try:
                os.fsync(fd)
                # Drop the written pages from the cache so the check below reads what the disk holds.
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            if expected is not None:
                self.refuse_mismatch(str(final), expected, file_sha256(temporary))
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def put(self, artifact: Path, relative: PurePosixPath, sha256: str) -> Placed:
        self._mounted()
        final = self.root / relative
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._write(artifact, None, final, sha256)
            self._write(None, sidecar_text(sha256, final.name), final.with_name(final.name + SIDECAR_SUFFIX), None)
            directory = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as err:
            raise ExternalError(f"No se pudo copiar {artifact.name} al medio externo: "
                                f"{_os_problem(err, str(self.root))}.") from err
        return Placed(str(final), sha256, dt.datetime.now(dt.UTC), final.stat().st_size)

    def exists(self, uri: str) -> bool:
        self._mounted()
        return self._path(uri).is_file()

    def sha256(self, uri: str) -> str:
        self._mounted()
        try:
            return file_sha256(self._path(uri))
        except OSError as err:
            raise ExternalError(f"No se pudo leer {uri}: {_os_problem(err, str(self.root))}.") from err

    def delete(self, uri: str) -> None:
        self._mounted()
        path = self._path(uri)
        try:
            path.with_name(path.name + SIDECAR_SUFFIX).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
        except OSError as err:
            raise ExternalError(f"No se pudo borrar {uri}: {_os_problem(err, str(self.root))}.") from err

    def check(self) -> str:
        self._mounted()
        probe = self.root / f".respaldo-prueba-{uuid.uuid4().hex[:8]}"
        try:
            probe.write_bytes(b"respaldo")
            probe.unlink()
            free = shutil.disk_usage(self.root).free
        except OSError as err:
            probe.unlink(missing_ok=True)
            raise ExternalError(f"{_os_problem(err, str(self.root))}.") from err
        return f"{self.describe()} montado (marcador «{self.config.marker}»), se puede escribir, " \
               f"{free / 1024**3:.1f} GiB libres"
