"""The small interface every source kind implements.

A source kind is one module in :mod:`respaldo.sources` holding a pydantic model of its inventory
entry (a subclass of :class:`TargetBase`) and a :class:`Source` that takes the copy. The tasks only
talk to this interface, so adding a kind is adding a module.
"""

from __future__ import annotations

import datetime as dt
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from respaldo.ciclo.cifrado import Encryption
from respaldo.ciclo.externo.config import External
from respaldo.ciclo.politica import Retention

if TYPE_CHECKING:
    from respaldo.artifacts import Sealed
    from respaldo.integridad import Verification

#: Target ids and frequency class names become path components, Airflow task-group ids and DAG ids,
#: so they are restricted to lower-case letters, digits and underscores.
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
#: Task ids every backup DAG has beside its targets' groups: a target may not take one as its id.
RUN_TASKS = ("preparar", "cierre", "retencion")

#: Celery queue names (a site, for example): they go on a worker's ``--queues a,b`` command line, so no
#: commas or spaces.
QUEUE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
DEFAULT_QUEUE = "default"

Queue = Annotated[str, Field(pattern=QUEUE_PATTERN)]


class TargetBase(BaseModel):
    """Fields every target has, whatever its kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[
        Name,
        Field(
            description="Identificador único del objetivo: nombra el grupo de tareas, la carpeta y el "
            "archivo del respaldo. Minúsculas, números y guion bajo.",
            examples=["financiero_pg"],
        ),
    ]
    kind: str
    frequency: Annotated[
        str,
        Field(description="Clase de frecuencia (una clave de `frequencies`).", examples=["financiero"]),
    ]
    mechanism: Annotated[
        Literal["automatic", "manual"],
        Field(description="`automatic`: respaldo toma la copia y el sistema asigna la fecha de creación; "
                          "`manual`: una persona la deja en una carpeta de entrega (ver `intake`)."),
    ] = "automatic"
    responsible: Annotated[
        str,
        Field(min_length=1, description="Responsable de la copia, como figura en el formato FT-GTI-004.",
              examples=["Profesional universitario área de sistemas"]),
    ]
    description: Annotated[str, Field(description="Qué es, en palabras de la oficina.")] = ""
    retries: Annotated[int | None, Field(ge=0, le=10, description="Reintentos (anula la clase).")] = None
    retry_delay_minutes: Annotated[
        int | None, Field(ge=1, le=720, description="Minutos entre reintentos (anula la clase).")
    ] = None
    pool: Annotated[
        str | None,
        Field(pattern=r"^[A-Za-z0-9_.-]{1,250}$",
              description="Pool de Airflow que limita las copias simultáneas contra el mismo servidor. "
              "Por defecto `respaldo_<conn_id>`."),
    ] = None
    queue: Annotated[
        Queue | None,
        Field(description="Cola de Celery (por ejemplo la sede) cuyos trabajadores hacen los cuatro pasos de este "
              "objetivo, donde queda su copia temporal. Anula la `queue` de la clase; por defecto `default`. Con "
              "LocalExecutor no tiene efecto.", examples=["sede_pasto"]),
    ] = None
    encryption: Annotated[
        Encryption | None,
        Field(description="Cifrado con age de las copias de este objetivo (anula el `encryption` de su clase)."),
    ] = None
    external: Annotated[
        External | None,
        Field(description="Medio externo: también se escribe ahí cada copia (anula el `external` de la clase de "
                          "frecuencia). `kind`: path, sftp o s3.",
              examples=[{"kind": "path", "path": "/mnt/respaldo_externo"}]),
    ] = None

    retention: Annotated[
        Retention | None,
        Field(description="Retención de este objetivo: reemplaza entera la de su clase de frecuencia (ver "
                          "`frequencies.<clase>.retention`).", examples=[{"keep_daily": 30, "min_keep": 5}]),
    ] = None

    @field_validator("id")
    @classmethod
    def _not_a_run_task(cls, value: str) -> str:
        if value in RUN_TASKS:
            raise ValueError(f"«{value}» no sirve como id de objetivo: es el nombre de una tarea de cada DAG de "
                             f"respaldo ({', '.join(RUN_TASKS)})")
        return value


@dataclass(frozen=True)
class CopyResult:
    """What a copy produced: the staged file and its size.

    A source that compresses while it copies (so a huge image never lands uncompressed on the local
    disk) sets ``compressed`` and gives the uncompressed size and the compressed file's sha256.
    ``figures`` is what a database copy counted while it ran (rows per table, see
    :meth:`Source.figures`), JSON-friendly.
    """

    path: Path
    bytes: int
    compressed: bool = False
    original_bytes: int | None = None
    sha256: str | None = None
    figures: dict | None = None
    #: The age-encrypted twin of a copy compressed on the fly (see :func:`respaldo.artifacts.copy_compressed`).
    sealed: Sealed | None = None


def recipients_of(target: TargetBase) -> list[str]:
    """The age recipients a target's copies are encrypted to (its ``encryption``, as the task got it); [] for none."""
    return list(target.encryption.recipients) if target.encryption is not None else []


class Source(ABC):
    """One kind of source: how to copy it, how to read the date it stamps, how to restore it."""

    #: The inventory's ``kind`` value.
    kind: ClassVar[str]
    #: The inventory model of a target of this kind.
    model: ClassVar[type[TargetBase]]
    #: File extension of the uncompressed copy (the artifact adds ``.zst``).
    extension: ClassVar[str]
    #: How the register and the DAG docs call this kind, in Spanish.
    label: ClassVar[str]
    #: What step 1 of the procedure counts it as: "bases de datos", "portales web", "servidores
    #: virtuales" or "archivos".
    category: ClassVar[str]
    #: Restore instructions shown in the DAG docs; ``{artifact}`` is the artifact's path.
    restore_hint: ClassVar[str]
    #: Whether :meth:`copy` compresses as it copies when its ``dest`` ends in ``.zst`` (so the
    #: compression overlaps the dump and nothing uncompressed lands on disk).
    compresses: ClassVar[bool] = False

    @abstractmethod
    def copy(self, target: TargetBase, dest: Path, log: logging.Logger) -> CopyResult:
        """Take the copy into ``dest`` (a new file); raise :class:`~respaldo.errors.CopyError`."""

    def read_stamp(self, target: TargetBase, path: Path, verified: Verification) -> dt.datetime | None:
        """The creation date the system assigned to the copy ``path``, which ``verified`` read whole.

        By default the date the filesystem stamped on the staged file when the copy wrote it; kinds
        whose dump carries its own date (pg_dump's header, mariadb-dump's last line) return that one,
        which the verification found while it read the dump to its end.
        """
        return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).replace(microsecond=0)

    def figures(self, target: TargetBase, verified: Verification, counted: dict | None) -> dict | None:
        """What the copy holds, recorded with its register row for the restore drills to compare with.

        ``counted`` is what :meth:`copy` counted at the source (its ``CopyResult.figures``), ``verified``
        what ``verificar_fecha`` read in the copy itself. By default what a tar holds (files, bytes, a
        sample of file hashes: :class:`~respaldo.integridad.TarContents`), or nothing.
        """
        return verified.contents

    @abstractmethod
    def check(self, target: TargetBase) -> str:
        """Check the source answers (used by ``respaldo check``); return a short description."""

    def pool(self, target: TargetBase) -> str:
        """Name of the Airflow pool that bounds concurrent copies against the same server.

        Copies taken on this machine itself (no connection) share ``respaldo_local``: they compete for
        the same disks.
        """
        if target.pool:
            return target.pool
        conn_id = getattr(target, "conn_id", None)
        return f"respaldo_{conn_id}" if conn_id else "respaldo_local"

    def summary(self, target: TargetBase) -> str:
        """One line saying what is copied, for the DAG docs."""
        return target.description or target.id
