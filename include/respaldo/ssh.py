"""Commands on remote servers over OpenSSH, with credentials from an Airflow SSH connection.

OpenSSH's own client does the transfer (several times faster than a pure-Python SSH stack). What
the connection holds is handed over in files only its owner can read, inside a private folder that
disappears afterwards: the private key (extra ``private_key``) or the password (through an
``SSH_ASKPASS`` helper that reads it from such a file). Nothing secret goes in argv or the
environment.

The server's identity is always verified: against the connection's ``host_key`` extra (the same
``ssh-ed25519 AAAA...`` form Airflow's SSH provider uses) or, failing that, the known-hosts file
the target names. An unknown or changed host key fails the copy; it is never accepted on the fly.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from respaldo.errors import CopyError
from respaldo.process import private_dir, write_private

CONNECT_TIMEOUT_SECONDS = 20
#: A dropped connection is noticed after about ServerAliveInterval * ServerAliveCountMax seconds.
ALIVE_INTERVAL_SECONDS = 10
ALIVE_COUNT_MAX = 3


@dataclass
class SshSession:
    """How to run a command on one server: ``argv(command)`` plus ``env`` for the subprocess."""

    host: str
    port: int
    user: str
    base_argv: list[str]
    env: dict[str, str]
    secrets: list[str] = field(default_factory=list)

    def argv(self, remote: Sequence[str]) -> list[str]:
        """argv that runs ``remote`` (a list, quoted here for the remote shell) on the server."""
        return [*self.base_argv, " ".join(shlex.quote(part) for part in remote)]

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def _known_hosts_line(host: str, port: int, host_key: str) -> str:
    parts = host_key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
        raise CopyError(
            "La llave del servidor (extra «host_key» de la conexión SSH) debe tener la forma "
            "«ssh-ed25519 AAAA...», como la muestra `ssh-keyscan`."
        )
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {parts[0]} {parts[1]}\n"


@contextlib.contextmanager
def ssh_session(conn_id: str, *, known_hosts: str | None = None) -> Generator[SshSession, None, None]:
    """Open the credentials of Airflow connection ``conn_id`` for OpenSSH; remove them on exit."""
    import os

    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    host = conn.host or ""
    if not host:
        raise CopyError(f"La conexión SSH «{conn_id}» no tiene servidor (host).")
    port = int(conn.port or 22)
    user = conn.login or ""
    if str(extra.get("no_host_key_check", "false")).lower() == "true":
        raise CopyError(f"La conexión SSH «{conn_id}» pide no verificar la llave del servidor; respaldo no copia "
                        "de un servidor sin verificar quién es. Quite «no_host_key_check» y ponga «host_key».")
    with private_dir() as secrets_dir:
        known = secrets_dir / "known_hosts"
        if extra.get("host_key"):
            write_private(known, _known_hosts_line(host, port, str(extra["host_key"])))
        elif known_hosts:
            known = Path(known_hosts)
        else:
            raise CopyError(f"La conexión SSH «{conn_id}» no dice cuál es la llave del servidor: ponga su extra "
                            "«host_key» (la línea de `ssh-keyscan -p PUERTO SERVIDOR`, sin el nombre) o "
                            "«known_hosts» en el objetivo.")
        argv = [
            "ssh", "-F", "/dev/null", "-T", "-x",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT_SECONDS}",
            "-o", f"ServerAliveInterval={ALIVE_INTERVAL_SECONDS}", "-o", f"ServerAliveCountMax={ALIVE_COUNT_MAX}",
            "-o", "IdentitiesOnly=yes", "-o", "NumberOfPasswordPrompts=1", "-o", "LogLevel=ERROR",
            "-p", str(port),
        ]
        env = {key: value for key, value in os.environ.items() if not key.startswith(("SSH_", "DISPLAY"))}
        env["HOME"] = str(secrets_dir)
        secrets: list[str] = []
        private_key = extra.get("private_key")
        key_file = extra.get("key_file")
        if private_key:
            text = str(private_key).strip() + "\n"
            write_private(secrets_dir / "id", text)
            argv += ["-i", str(secrets_dir / "id")]
            secrets.append(str(private_key).strip())
        elif key_file:
            argv += ["-i", str(key_file)]
        if conn.password:
            secrets.append(conn.password)
            write_private(secrets_dir / "password", conn.password)
            askpass = secrets_dir / "askpass"
            write_private(askpass, f"#!/bin/sh\nexec cat {shlex.quote(str(secrets_dir / 'password'))}\n")
            askpass.chmod(0o700)
            env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY="respaldo")
            argv += ["-o", "BatchMode=no", "-o", "PreferredAuthentications=publickey,password,keyboard-interactive"]
        else:
            argv += ["-o", "BatchMode=yes"]
        if user:
            argv += ["-l", user]
        argv += [host, "--"]
        yield SshSession(host=host, port=port, user=user, base_argv=argv, env=env, secrets=secrets)


def check_readable(conn_id: str, paths: Sequence[str], known_hosts: str | None = None) -> str:
    """Check over SSH that every path exists and can be read (``respaldo check``); return where."""
    import subprocess

    with ssh_session(conn_id, known_hosts=known_hosts) as session:
        proc = subprocess.run(  # noqa: S603 - argv built here
            session.argv(["sh", "-c", 'for f; do [ -r "$f" ] || { echo "$f"; exit 3; }; done', "sh", *paths]),
            env=session.env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
        )
        if proc.returncode == 3:
            raise CopyError(f"No existe o no se puede leer en {session.describe()}: {proc.stdout.strip()}")
        if proc.returncode != 0:
            reason = explain_ssh_failure(proc.stderr, session, proc.returncode) or proc.stderr.strip()
            raise CopyError(f"SSH a {session.describe()}: {reason}")
        return session.describe()


def explain_ssh_failure(error_text: str, session: SshSession, returncode: int | None = None) -> str:
    """A plain Spanish reason for ssh's own failures (not the remote command's), or an empty string.

    ssh exits 255 for its own errors; connection, authentication and host-key failures always say
    so on stderr, but a connection lost mid-transfer may say nothing at ``LogLevel=ERROR``.
    """
    where = session.describe()
    if "Host key verification failed" in error_text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in error_text:
        return (f"la llave del servidor {where} no es la registrada en la conexión (host_key): puede ser otro "
                "servidor. Verifíquela con el administrador antes de cambiarla.")
    if "Permission denied (" in error_text:
        return f"el servidor {where} rechazó el usuario o la llave/clave de la conexión."
    if "ssh: connect to host" in error_text or "Could not resolve hostname" in error_text:
        return f"no se pudo conectar con {where}."
    if any(text in error_text for text in ("closed by remote host", "client_loop:", "Connection reset by peer",
                                           "Broken pipe", "Timeout, server")):
        return f"se cortó la conexión con {where} a mitad de la copia."
    if returncode == 255:
        return f"se cortó la conexión con {where} (ssh terminó con código 255 sin más detalle)."
    return ""
