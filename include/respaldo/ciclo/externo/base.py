"""The one interface of the external destinations, and what they share.

Every destination keeps the local layout under its own root: the artifact
``<clase>/<objetivo>/<AAAA>/<MM>/<archivo>.zst`` and its ``.sha256`` beside it (the same sidecar, so
``sha256sum -c`` works at the destination too). :meth:`Destination.put` never leaves a partial copy
under the final name: it writes a temporary name (or, for S3, a multipart upload that becomes visible
only when it completes), verifies the checksum at the destination, and only then gives the final name.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from respaldo.errors import RespaldoError

#: Read size for hashing and copying.
CHUNK = 4 * 1024 * 1024
SIDECAR_SUFFIX = ".sha256"


class ExternalError(RespaldoError):
    """The external copy could not be made, verified, found or deleted; the message names the destination."""


@dataclass(frozen=True)
class Placed:
    """An artifact written and verified at the destination."""

    uri: str
    sha256: str
    verified_at: dt.datetime
    bytes: int


def sidecar_text(sha256: str, name: str) -> str:
    """The ``.sha256`` file's text, as ``sha256sum`` writes it (and ``sha256sum -c`` reads it)."""
    return f"{sha256}  {name}\n"


def relative_of(artifact: Path, root: Path | str) -> PurePosixPath:
    """Where the artifact sits under the storage root; the same place under the destination's root."""
    try:
        return PurePosixPath(artifact.resolve().relative_to(Path(root).resolve()).as_posix())
    except ValueError as err:
        raise ExternalError(f"El archivo {artifact} no está dentro de la carpeta de respaldos {root}.") from err


class Destination(ABC):
    """One external medium. Every method raises :class:`ExternalError` with a sentence naming it."""

    #: ``external.kind`` of the inventory.
    kind: str

    @abstractmethod
    def describe(self) -> str:
        """The destination in the user's words, for every message."""

    @abstractmethod
    def uri_of(self, relative: PurePosixPath) -> str:
        """The URI the artifact at ``relative`` has (or will have) there."""

    @abstractmethod
    def put(self, artifact: Path, relative: PurePosixPath, sha256: str) -> Placed:
        """Copy ``artifact`` and its sidecar to ``relative``; the final name appears only once verified."""

    @abstractmethod
    def exists(self, uri: str) -> bool:
        """Whether the artifact ``uri`` is there under its final name."""

    @abstractmethod
    def sha256(self, uri: str) -> str:
        """The sha256 of the artifact ``uri`` as the destination holds it (computed there or read back)."""

    @abstractmethod
    def delete(self, uri: str) -> None:
        """Remove the artifact ``uri`` and its sidecar; an artifact already gone is no error."""

    @abstractmethod
    def check(self) -> str:
        """Check the destination is reachable and writable (``respaldo check``); a short description."""

    def refuse_mismatch(self, uri: str, expected: str, found: str) -> None:
        if found != expected:
            raise ExternalError(f"La copia en {self.describe()} no coincide con la local: suma SHA-256 {found} en el "
                                f"destino, {expected} en el respaldo ({uri}). No se dejó con el nombre final.")
