"""Intake folders: where a person drops a manual copy and where respaldo takes it from (steps 2 and 3).

Some systems can only export from their own screens. For those targets (``mechanism: manual``) a
person, or another system's export job, leaves the copy in the target's intake folder, on this
machine or on a server reached over SFTP. ``copia`` is then a sensor that waits for it without
holding a worker (reschedule mode) until the end of the target's window.

Inside the intake folder respaldo keeps three sub-folders and never deletes anything:

- ``procesando/<ejecución>/``: the file a run has claimed (a rename, so no two runs take the same
  file); a failed run leaves it there and its rerun picks it up again;
- ``tomados/``: files already backed up and registered;
- ``rechazados/``: files refused by ``verificar_fecha``, each with ``<nombre>.motivo.txt`` saying why.

How a file is matched to a run's slot: if ``pattern`` contains ``{fecha}``, the file whose name
carries the slot's date (``date_format``, in the inventory's timezone); otherwise the oldest file
that matches (order of arrival).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import hashlib
import logging
import os
import stat
import zoneinfo
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from respaldo.hooks.ssh import SftpSession

from respaldo import artifacts
from respaldo.errors import CopyError
from respaldo.process import human_bytes
from respaldo.sources.base import TargetBase

PROCESSING, TAKEN, REJECTED = "procesando", "tomados", "rechazados"
CHUNK = 4 * 1024 * 1024


class Intake(BaseModel):
    """Where a manual copy is delivered and how it is recognised."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Annotated[str, Field(description="Carpeta de entrega (ruta absoluta), aquí o en el servidor SFTP.",
                               examples=["/srv/entregas/nomina"])]
    conn_id: Annotated[str | None, Field(description="Conexión SSH/SFTP de Airflow si la carpeta está en otro "
                                                     "servidor; sin ella, en este. Debe verificar la llave del "
                                                     "servidor (extra «host_key», o `known_hosts`).",
                                         examples=["sftp_entregas"])] = None
    known_hosts: Annotated[str | None, Field(description="Archivo known_hosts con la llave del servidor SFTP, si la "
                                             "conexión no trae «host_key».",
                                             examples=["/etc/respaldo/known_hosts"])] = None
    pattern: Annotated[str, Field(min_length=1, description="Nombre esperado (comodines * ?); `{fecha}` es la "
                                  "fecha del turno en `date_format`.", examples=["nomina_{fecha}*.zip"])] = "*"
    date_format: Annotated[str, Field(description="Formato de `{fecha}` (strftime).", examples=["%Y%m%d"])] = "%Y%m%d"
    extension: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.]{0,15}$",
                                           description="Extensión del respaldo; por defecto la del archivo "
                                           "entregado.", examples=["zip"])] = None
    wait_hours: Annotated[float, Field(ge=0, le=744, description="Horas que se espera la copia desde la fecha "
                                       "del turno; después, la tarea falla.", examples=[12])] = 12
    poke_minutes: Annotated[float, Field(gt=0, le=720, description="Cada cuántos minutos se revisa la carpeta.",
                                         examples=[5])] = 5
    settle_seconds: Annotated[int, Field(ge=0, description="Segundos sin cambios antes de tomar un archivo "
                                         "(para no tomarlo a medio copiar).", examples=[60])] = 60

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not PurePosixPath(value).is_absolute():
            raise ValueError(f"la carpeta de entrega debe ser una ruta absoluta, no «{value}»")
        return value

    def expected_name(self, slot: dt.datetime) -> str:
        return self.pattern.replace("{fecha}", slot.strftime(self.date_format))


class ManualTarget(TargetBase):
    """A target whose copy a person (or another system) delivers to an intake folder."""

    mechanism: Annotated[
        Literal["manual"],
        Field(description="`manual`: una persona deja la copia en la carpeta de entrega; la fecha de creación "
                          "la asigna respaldo desde la ejecución."),
    ]
    intake: Annotated[Intake, Field(description="Carpeta de entrega y cómo reconocer la copia.")]


@dataclass(frozen=True)
class Entry:
    name: str
    mtime: dt.datetime
    size: int


def _unique(names: set[str], name: str) -> str:
    if name not in names:
        return name
    stem, dot, suffix = name.partition(".")
    counter = 2
    while f"{stem}_{counter}{dot}{suffix}" in names:
        counter += 1
    return f"{stem}_{counter}{dot}{suffix}"


class LocalIntake:
    """An intake folder on this machine."""

    def __init__(self, intake: Intake):
        self.root = Path(intake.path)
        self.where = str(self.root)

    def entries(self, folder: str = "") -> list[Entry]:
        base = self.root / folder
        if not base.is_dir():
            if folder:
                return []
            raise CopyError(f"La carpeta de entrega {base} no existe o no se puede leer.")
        found = []
        for path in base.iterdir():
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and not path.name.startswith("."):
                found.append(Entry(path.name, dt.datetime.fromtimestamp(info.st_mtime, dt.UTC), info.st_size))
        return found

    def rename(self, source: str, target_folder: str) -> str:
        """Move ``source`` (relative) into ``target_folder`` (relative) without replacing anything."""
        folder = self.root / target_folder
        folder.mkdir(parents=True, exist_ok=True)
        name = _unique({p.name for p in folder.iterdir()}, PurePosixPath(source).name)
        os.link(self.root / source, folder / name)  # fails if it exists: never replaces
        os.unlink(self.root / source)
        return f"{target_folder}/{name}"

    def fetch(self, relative: str, dest: Path) -> str:
        digest = hashlib.sha256()
        with open(self.root / relative, "rb") as reader, open(dest, "xb") as writer:
            while block := reader.read(CHUNK):
                digest.update(block)
                writer.write(block)
            writer.flush()
            os.fsync(writer.fileno())
        return digest.hexdigest()

    def write_text(self, relative: str, text: str) -> None:
        (self.root / relative).write_text(text, encoding="utf-8")


class SftpIntake:
    """An intake folder on a server reached over SFTP (Airflow's SFTP provider, server key verified)."""

    def __init__(self, intake: Intake, session: SftpSession):
        self.sftp = session.client
        self.root = intake.path.rstrip("/")
        self.where = f"{session.where}:{self.root}"

    def entries(self, folder: str = "") -> list[Entry]:
        path = f"{self.root}/{folder}" if folder else self.root
        try:
            listing = self.sftp.listdir_attr(path)
        except OSError as err:
            if folder:
                return []
            raise CopyError(f"La carpeta de entrega {self.where} no existe o no se puede leer ({err}).") from err
        return [Entry(a.filename, dt.datetime.fromtimestamp(a.st_mtime, dt.UTC), a.st_size)
                for a in listing if stat.S_ISREG(a.st_mode or 0) and not a.filename.startswith(".")]

    def _mkdirs(self, relative: str) -> None:
        current = self.root
        for part in PurePosixPath(relative).parts:
            current = f"{current}/{part}"
            with contextlib.suppress(OSError):
                self.sftp.mkdir(current)

    def rename(self, source: str, target_folder: str) -> str:
        self._mkdirs(target_folder)
        existing = {e.name for e in self.entries(target_folder)}
        name = _unique(existing, PurePosixPath(source).name)
        self.sftp.rename(f"{self.root}/{source}", f"{self.root}/{target_folder}/{name}")
        return f"{target_folder}/{name}"

    def fetch(self, relative: str, dest: Path) -> str:
        digest = hashlib.sha256()

        class _Writer:
            def __init__(self, handle):
                self.handle = handle

            def write(self, data: bytes) -> int:
                digest.update(data)
                return self.handle.write(data)

        with open(dest, "xb") as handle:
            self.sftp.getfo(f"{self.root}/{relative}", _Writer(handle))
            handle.flush()
            os.fsync(handle.fileno())
        return digest.hexdigest()

    def write_text(self, relative: str, text: str) -> None:
        with self.sftp.open(f"{self.root}/{relative}", "w") as handle:
            handle.write(text.encode("utf-8"))


@contextlib.contextmanager
def open_intake(intake: Intake) -> Generator[LocalIntake | SftpIntake, None, None]:
    """The intake folder, here or over a verified SFTP connection (closed on exit)."""
    if not intake.conn_id:
        yield LocalIntake(intake)
        return
    from respaldo.hooks.ssh import sftp_session

    with sftp_session(intake.conn_id, known_hosts=intake.known_hosts) as session:
        yield SftpIntake(intake, session)


def slot_of(context: dict[str, Any]) -> dt.datetime:
    """The date a manual copy takes: the run's slot, or the trigger time for a manual run without one."""
    logical = context.get("logical_date")
    if logical is not None:
        return logical
    dag_run = context.get("dag_run")
    when = getattr(dag_run, "run_after", None) or getattr(dag_run, "start_date", None)
    return when or dt.datetime.now(dt.UTC)


def pick(folder: LocalIntake | SftpIntake, intake: Intake, slot_local: dt.datetime, now: dt.datetime
         ) -> Entry | None:
    """The delivered file for this slot, if one is there and done being written."""
    expected = intake.expected_name(slot_local)
    matching = [e for e in folder.entries() if fnmatch.fnmatchcase(e.name, expected)]
    ready = [e for e in matching
             if e.mtime > now or (now - e.mtime).total_seconds() >= intake.settle_seconds]
    return min(ready, key=lambda e: (e.mtime, e.name)) if ready else None


def take(target: ManualTarget, run_id: str, slot: dt.datetime, timezone: str, staging: Path,
         log: logging.Logger) -> dict[str, Any] | None:
    """Claim and copy the delivered file into ``staging``; None while it has not arrived."""
    intake = target.intake
    zone = zoneinfo.ZoneInfo(timezone)
    key = artifacts.run_key(run_id)
    now = dt.datetime.now(dt.UTC)
    with open_intake(intake) as folder:
        claimed = folder.entries(f"{PROCESSING}/{key}")
        if claimed:
            entry = claimed[0]
            log.info("Retomando %s, ya tomado por esta ejecución (%s/%s)", entry.name, PROCESSING, key)
            relative = f"{PROCESSING}/{key}/{entry.name}"
        else:
            entry = pick(folder, intake, slot.astimezone(zone), now)
            if entry is None:
                return None
            relative = folder.rename(entry.name, f"{PROCESSING}/{key}")
            log.info("Tomado %s de %s (%s, fecha %s)", entry.name, folder.where, human_bytes(entry.size),
                     entry.mtime.astimezone(zone).isoformat())
        extension = intake.extension or (PurePosixPath(entry.name).suffix.lstrip(".") or "bin")
        staging.mkdir(parents=True, exist_ok=True)
        dest = staging / f"{target.id}.{extension}"
        dest.unlink(missing_ok=True)
        try:
            sha256 = folder.fetch(relative, dest)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
    return {
        "staging": str(dest), "bytes": dest.stat().st_size, "extension": extension,
        "original_name": entry.name, "original_date": entry.mtime.isoformat(), "original_sha256": sha256,
        "intake_file": relative,
    }


def settle(target: ManualTarget, relative: str, folder_name: str, reason: str | None = None) -> str:
    """Move a claimed file to ``tomados/`` or ``rechazados/`` (with the reason beside it)."""
    with open_intake(target.intake) as folder:
        moved = folder.rename(relative, folder_name)
        if reason is not None:
            folder.write_text(f"{moved}.motivo.txt", reason + "\n")
        return f"{folder.where}/{moved}"
