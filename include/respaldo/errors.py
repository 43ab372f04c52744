"""Error types of respaldo.

Every message here may reach a person (the CLI, the Airflow log, the failure email, the register's
``error`` column), so messages are plain Spanish, say what went wrong and where, and never carry a
secret.
"""

from __future__ import annotations

from dataclasses import dataclass


class RespaldoError(Exception):
    """Base class: a failure explained in words the IT office can act on."""


@dataclass(frozen=True)
class Problem:
    """One problem found in an inventory file."""

    file: str
    line: int | None
    where: str
    message: str

    def __str__(self) -> str:
        location = f"{self.file}:{self.line}" if self.line else self.file
        where = f" {self.where}:" if self.where else ""
        return f"{location}:{where} {self.message}"


class InventoryError(RespaldoError):
    """The inventory cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        count = len(problems)
        header = "El inventario tiene 1 problema" if count == 1 else f"El inventario tiene {count} problemas"
        super().__init__(header + ":\n" + "\n".join(f"  - {p}" for p in problems))


class CopyError(RespaldoError):
    """The copy (step 4) failed or produced something that is not a usable backup."""


class DateCheckError(RespaldoError):
    """The creation date of a copy is missing, stale, in the future or implausible (step 3)."""


class ArtifactError(RespaldoError):
    """Compressing or storing the artifact failed (step 5)."""


class RegisterError(RespaldoError):
    """The FT-GTI-004 register could not be written or read (step 6)."""
