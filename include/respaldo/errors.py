"""Error types of respaldo.

Every message here may reach a person (the CLI, the Airflow log, the failure email, the register's
``error`` column), so messages are plain Spanish, say what went wrong and where, and never carry a
secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: A line of a tool's output that gives its verdict (the first such line is the one that matters:
#: pg_dump's "error: ... failed", tar's "Cannot stat", ssh's "Host key verification failed").
_VERDICT = re.compile(r"error|fatal|fail|cannot|can't|denied|refused|no such|not found|unexpected|timed? ?out|"
                      r"invalid|could not|couldn't|no space|broken pipe|lost connection|closed by", re.IGNORECASE)
#: Lines that only announce a failure, or frame a banner.
_NOISE = re.compile(r"^(tar: )?exiting with failure status|^$", re.IGNORECASE)
KEY_LINE_LIMIT = 300


def key_line(text: str) -> str:
    """The one line of a tool's output that says what went wrong (its first verdict line), shortened."""
    lines = [line.strip().strip("@").strip() for line in text.splitlines()]
    lines = [line for line in lines if not _NOISE.search(line)]
    if not lines:
        return ""
    chosen = next((line for line in lines if _VERDICT.search(line)), lines[-1])
    return chosen if len(chosen) <= KEY_LINE_LIMIT else chosen[: KEY_LINE_LIMIT - 1] + "…"


class RespaldoError(Exception):
    """Base class: a failure explained in words the IT office can act on.

    The message is plain Spanish: what happened and what to do. ``detail`` keeps a tool's own output
    (already blanked of secrets); only its key line joins the message (the register's ``error``, the
    email), while the whole of it goes to the task log where the error is raised.
    """

    def __init__(self, message: str = "", *, detail: str | None = None):
        super().__init__(message)
        self.detail = detail or None

    def __str__(self) -> str:
        message = super().__str__()
        line = key_line(self.detail) if self.detail else ""
        return f"{message} (detalle: {line})" if line and line not in message else message


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
