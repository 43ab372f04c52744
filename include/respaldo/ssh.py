"""Commands on remote servers over OpenSSH.

The connection itself (credentials, the verified host key, the child's environment) belongs to
:mod:`respaldo.hooks.ssh`; its names are re-exported here for the callers that use them from here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from respaldo.errors import CopyError
from respaldo.hooks.ssh import SshSession, explain_ssh_failure
from respaldo.hooks.ssh import openssh_session as ssh_session

__all__ = ["SshSession", "check_readable", "explain_ssh_failure", "ssh_session"]


def check_readable(conn_id: str, paths: Sequence[str], known_hosts: str | None = None) -> str:
    """Check over SSH that every path exists and can be read (``respaldo check``); return where."""
    with ssh_session(conn_id, known_hosts=known_hosts) as session:
        proc = subprocess.run(  # noqa: S603 - argv built here
            session.argv(["sh", "-c", 'for f; do [ -r "$f" ] || { echo "$f"; exit 3; }; done', "sh", *paths]),
            env=session.env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
        )
        if proc.returncode == 3:
            raise CopyError(f"No existe o no se puede leer en {session.describe()}: {proc.stdout.strip()}")
        if proc.returncode != 0:
            reason = explain_ssh_failure(proc.stderr, session, proc.returncode) or "la revisión remota falló"
            raise CopyError(f"SSH a {session.describe()}: {reason}", detail=session.blank(proc.stderr.strip()))
        return session.describe()
