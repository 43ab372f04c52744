"""What every tool handed a connection gets: a private folder, a minimal environment, its blanking.

A tool (pg_dump, mariadb-dump, ssh) runs as a child of the Airflow worker, whose environment holds
every other connection (``AIRFLOW_CONN_*``), the Fernet key and the API's JWT secret. None of that is
the tool's business: the child gets :func:`minimal_env` plus its own few variables. The secrets it
needs (a password, a private key, a passphrase) go in files only their owner can read, inside a
private folder that disappears when the session ends; never in argv or the environment.

This module imports no provider: the DAG file imports the sources, which import the hooks.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

#: What a secret becomes in any text that reaches a person.
MASK = "********"
#: The tools' own messages stay in English (respaldo recognises them to explain them in Spanish) and
#: names with accents pass through intact.
LOCALE = "C.UTF-8"
#: Lines of a multi-line secret (a private key) shorter than this are not blanked on their own: a
#: header such as "-----END OPENSSH PRIVATE KEY-----" is no secret.
MIN_SECRET_LINE = 16


def blank(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced by :data:`MASK`.

    Also blanked: a secret's URL-quoted form (how it appears in a connection URI) and each long line
    of a multi-line secret (a private key quoted in part).
    """
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        forms.update({secret, secret.strip(), quote(secret, safe=""), quote(secret)})
        forms.update(line.strip() for line in secret.splitlines() if len(line.strip()) >= MIN_SECRET_LINE)
    for form in sorted(filter(None, forms), key=len, reverse=True):  # longest first: no half-blanked secret
        text = text.replace(form, MASK)
    return text


def minimal_env(*, home: Path | str | None = None, **tool_vars: str) -> dict[str, str]:
    """The whole environment of a child tool: PATH, the C.UTF-8 locale, TZ=UTC, HOME and ``tool_vars``.

    Nothing else of the worker's environment: no ``AIRFLOW_*``, no other connection, no ``PG*`` or
    ``MYSQL_*`` left there by someone else. ``home`` is the session's private folder, so no
    ``~/.pgpass``, ``~/.my.cnf`` or ``~/.ssh/config`` of the worker's account is read.
    """
    env = {
        "PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin",
        "LANG": LOCALE,
        "LC_ALL": LOCALE,
        "TZ": "UTC",
    }
    if home is not None:
        env["HOME"] = str(home)
    env.update(tool_vars)
    return env


@contextlib.contextmanager
def private_dir() -> Generator[Path, None, None]:
    """A 0700 directory for credential files, removed with everything in it on exit."""
    with tempfile.TemporaryDirectory(prefix="respaldo-") as name:
        os.chmod(name, 0o700)
        yield Path(name)


def write_private(path: Path, text: str, *, mode: int = 0o600) -> Path:
    """Write ``text`` to a new file created with ``mode`` (0600: only its owner reads it; never widened)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


@dataclass
class ToolSession:
    """One tool's share of a connection, valid while the ``with`` block that made it lasts.

    :param conn_id: the Airflow connection it comes from (named in every error).
    :param where: the server as people call it (``host:port`` or ``user@host:port``).
    :param folder: the private 0700 folder holding the secret files; removed at the end.
    :param env: the child's whole environment (:func:`minimal_env` plus the tool's variables).
    :param secrets: what must never reach a person; :meth:`blank` removes it from any text.
    """

    conn_id: str
    where: str
    folder: Path
    env: dict[str, str]
    secrets: list[str] = field(default_factory=list)

    def blank(self, text: str) -> str:
        """``text`` (a tool's error, an exception message) without this session's secrets."""
        return blank(text, self.secrets)

    def write(self, name: str, text: str, *, secret: bool = True, mode: int = 0o600) -> Path:
        """A file in the private folder; with ``secret`` its content is blanked from errors too."""
        if secret:
            self.secrets.append(text)
        return write_private(self.folder / name, text, mode=mode)


@dataclass
class ClientSession:
    """A library's client (paramiko's SFTP, boto3's S3) opened on one connection.

    :param conn_id: the Airflow connection it comes from.
    :param where: the server as people call it.
    :param client: the library's client object.
    :param secrets: what must never reach a person.
    """

    conn_id: str
    where: str
    client: Any
    secrets: list[str] = field(default_factory=list)

    def blank(self, text: str) -> str:
        return blank(text, self.secrets)


def connection_problem(conn_id: str, err: BaseException, secrets: Iterable[str | None] = ()) -> str:
    """A plain sentence for a connection Airflow could not hand over (missing, malformed)."""
    text = blank(str(err).strip(), secrets)
    if "isn't defined" in text or "not defined" in text:
        return (f"No existe la conexión de Airflow «{conn_id}»: créela en Admin → Connections (o como variable "
                f"AIRFLOW_CONN_{conn_id.upper()}).")
    return f"La conexión de Airflow «{conn_id}» no se puede usar: {text or type(err).__name__}"
