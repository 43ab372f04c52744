"""SSH connections, built on the provider's SSHHook and SFTPHook, refused unless the server is verified.

The provider's hook reads the connection and its extras: ``host_key``, ``private_key`` (decrypted
with ``private_key_passphrase``), ``key_file``, ``conn_timeout``, and the host-key settings
``no_host_key_check`` (also spelled ``ignore_hostkey_verification``, deprecated but still honoured)
and ``allow_host_key_change``. respaldo reads what the hook computed and refuses, before any
connection is opened, every connection whose *effective* settings skip the server's key check or
accept a changed key, whatever spelling produced them, and every connection without a known key for
the server (the connection's ``host_key``, or a ``known_hosts`` file the target names).

Two ways to use a verified connection:

- :func:`openssh_session`: OpenSSH's own client, several times faster than a pure-Python SSH stack
  for bulk transfers (files, VM images). The key, password and passphrase go in 0600 files of a
  private folder (the password and passphrase reach ssh through an ``SSH_ASKPASS`` helper), never in
  argv or the environment; ``StrictHostKeyChecking=yes`` against a known-hosts file holding only
  that server's key.
- :func:`sftp_session`: the SFTPHook's own paramiko client, for intake folders.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from respaldo.errors import CopyError
from respaldo.hooks.base import ClientSession, ToolSession, blank, connection_problem, minimal_env, private_dir

CONNECT_TIMEOUT_SECONDS = 20
#: A dropped connection is noticed after about ServerAliveInterval * ServerAliveCountMax seconds.
ALIVE_INTERVAL_SECONDS = 10
ALIVE_COUNT_MAX = 3
#: One attempt per connection: a wrong key or a refused login does not improve with retries, and the
#: task's own retries (and the intake sensor's pokes) cover a server that was briefly away.
CONNECT_ATTEMPTS = 1


@dataclass
class SshSession(ToolSession):
    """How to run a command on one server with OpenSSH: ``argv(command)`` and ``env`` for the subprocess.

    :param host: the server.
    :param port: its SSH port.
    :param user: the account logged in as.
    :param base_argv: ``ssh`` and its options, up to and including ``--``.
    """

    host: str = ""
    port: int = 22
    user: str = ""
    base_argv: list[str] = field(default_factory=list)
    #: The ``-o``/``-i`` options of ``base_argv`` (host-key check, key, timeouts), for OpenSSH's sftp too.
    options: list[str] = field(default_factory=list)

    def argv(self, remote: Sequence[str]) -> list[str]:
        """argv that runs ``remote`` (a list, quoted here for the remote shell) on the server."""
        return [*self.base_argv, " ".join(shlex.quote(part) for part in remote)]

    def sftp_argv(self, batch: Path | str, *extra: str) -> list[str]:
        """argv of OpenSSH's ``sftp`` running the commands of the file ``batch`` on the server (same checks);
        ``extra``: more sftp options (buffer sizes, cipher preference)."""
        return ["sftp", "-F", "/dev/null", *self.options, *extra, "-o", f"User={self.user}", "-P", str(self.port),
                "-b", str(batch), self.host]

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class SftpSession(ClientSession):
    """An open SFTP client (paramiko's ``SFTPClient``, from the SFTPHook) on a verified server; ``where`` is
    ``user@host:port``."""


def _where(hook: Any) -> str:
    return f"{hook.username}@{hook.remote_host}:{hook.port}"


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _hook(conn_id: str, *, sftp: bool) -> Any:
    """The provider's hook for ``conn_id``; its parsing problems as plain sentences."""
    if sftp:
        from airflow.providers.sftp.hooks.sftp import SFTPHook as HookClass
    else:
        from airflow.providers.ssh.hooks.ssh import SSHHook as HookClass
    try:
        return HookClass(ssh_conn_id=conn_id, conn_retry_attempts=CONNECT_ATTEMPTS)
    except Exception as err:
        text = str(err)
        if "remote_host" in text:
            raise CopyError(f"La conexión SSH «{conn_id}» no tiene servidor (host): póngalo en la conexión.") from err
        if "Must check host key" in text:
            raise CopyError(f"La conexión SSH «{conn_id}» trae «host_key» y a la vez pide no verificar la llave del "
                            "servidor: quite de su Extra «no_host_key_check» (o «ignore_hostkey_verification») y "
                            "deje «host_key».") from err
        if "Private key" in text or "Key must have" in text:
            raise CopyError(f"No se puede leer la llave privada de la conexión SSH «{conn_id}» (extra «private_key»): "
                            "si está protegida, su frase de paso va en el extra «private_key_passphrase»; revise que "
                            "ambas sean las correctas.") from err
        if "host key" in text.lower() or type(err).__name__ == "Error":  # binascii.Error: not base64
            raise CopyError(f"La llave del servidor (extra «host_key» de la conexión SSH «{conn_id}») debe tener la "
                            "forma «ssh-ed25519 AAAA...», como la muestra `ssh-keyscan`.") from err
        raise CopyError(connection_problem(conn_id, err)) from err


def _known_key(known_hosts: str, host: str, port: int, conn_id: str) -> Any:
    """The server's key as the target's known_hosts file records it (hashed names included)."""
    import paramiko

    path = Path(known_hosts)
    try:
        keys = paramiko.HostKeys(str(path))
    except OSError as err:
        raise CopyError(f"No se puede leer el archivo known_hosts «{known_hosts}» que indica el objetivo (para la "
                        f"conexión «{conn_id}»): {err.strerror}.") from err
    found = keys.lookup(_known_hosts_name(host, port))
    if not found:
        raise CopyError(f"El archivo known_hosts «{known_hosts}» no trae la llave del servidor "
                        f"{_known_hosts_name(host, port)}: agréguela (`ssh-keyscan -p {port} {host}`, verificada con "
                        f"el administrador) o ponga «host_key» en el Extra de la conexión «{conn_id}».")
    return next(iter(found.values()))


def verified_hook(conn_id: str, *, known_hosts: str | None = None, sftp: bool = False) -> Any:
    """The provider's SSHHook (or SFTPHook) for ``conn_id``, refused unless it will verify the server.

    Returns the hook with ``host_key`` set: from the connection, else from ``known_hosts``. Raises
    :class:`~respaldo.errors.CopyError` with one sentence naming the connection and what to fix.
    """
    hook = _hook(conn_id, sftp=sftp)
    where = _where(hook)
    if hook.no_host_key_check:
        raise CopyError(f"La conexión SSH «{conn_id}» pide no verificar la llave del servidor {where}, y respaldo no "
                        "copia de un servidor sin verificar quién es: quite de su Extra «no_host_key_check» e "
                        "«ignore_hostkey_verification» y ponga «host_key» (la línea de `ssh-keyscan`).")
    if hook.allow_host_key_change:
        raise CopyError(f"La conexión SSH «{conn_id}» acepta que cambie la llave del servidor {where}, y respaldo no "
                        "copia de un servidor sin verificar quién es: quite de su Extra «allow_host_key_change» y "
                        "ponga «host_key» (la línea de `ssh-keyscan`).")
    if hook.host_key is None:
        if not known_hosts:
            raise CopyError(f"La conexión SSH «{conn_id}» no dice cuál es la llave del servidor {where}: ponga en su "
                            f"Extra «host_key» (la línea de `ssh-keyscan -p {hook.port} {hook.remote_host}`, sin el "
                            "nombre, verificada con el administrador) o indique «known_hosts» en el objetivo.")
        hook.host_key = _known_key(known_hosts, hook.remote_host, hook.port, conn_id)
    return hook


def _key_texts(hook: Any, conn_id: str) -> tuple[str, str]:
    """The private key and passphrase texts the hook parsed into ``hook.pkey`` (OpenSSH needs a file)."""
    if hook.pkey is None:
        return "", ""
    extra = hook.get_connection(conn_id).extra_dejson or {}
    return str(extra.get("private_key") or "").strip() + "\n", str(extra.get("private_key_passphrase") or "")


@contextlib.contextmanager
def openssh_session(conn_id: str, *, known_hosts: str | None = None) -> Generator[SshSession, None, None]:
    """OpenSSH's client for the verified connection ``conn_id``; its secret files are removed on exit.

    :param conn_id: an Airflow connection of type ssh.
    :param known_hosts: a known_hosts file with the server's key, when the connection has no ``host_key``.
    """
    hook = verified_hook(conn_id, known_hosts=known_hosts)
    host, port, user = hook.remote_host, int(hook.port), hook.username
    with private_dir() as folder:
        session = SshSession(conn_id=conn_id, where=f"{user}@{host}:{port}", folder=folder,
                             env=minimal_env(home=folder), host=host, port=port, user=user)
        known = session.write("known_hosts", f"{_known_hosts_name(host, port)} {hook.host_key.get_name()} "
                              f"{hook.host_key.get_base64()}\n", secret=False)
        argv = [
            "ssh", "-F", "/dev/null", "-T", "-x",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
            "-o", f"ConnectTimeout={hook.conn_timeout or CONNECT_TIMEOUT_SECONDS}",
            "-o", f"ServerAliveInterval={ALIVE_INTERVAL_SECONDS}", "-o", f"ServerAliveCountMax={ALIVE_COUNT_MAX}",
            "-o", "IdentitiesOnly=yes", "-o", "NumberOfPasswordPrompts=1", "-o", "LogLevel=ERROR",
        ]
        if hook.host_proxy_cmd:
            argv += ["-o", f"ProxyCommand={hook.host_proxy_cmd}"]
        private_key, passphrase = _key_texts(hook, conn_id)
        if private_key:
            argv += ["-i", str(session.write("id", private_key))]
        elif hook.key_file:
            argv += ["-i", str(hook.key_file)]
        password = (hook.password or "").strip()  # as the hook hands it to paramiko
        answers = []
        if passphrase:
            answers.append(f"*passphrase*) exec cat {shlex.quote(str(session.write('passphrase', passphrase)))} ;;")
        if password:
            answers.append(f"*) exec cat {shlex.quote(str(session.write('password', password)))} ;;")
        if answers:
            # ssh asks for the key's passphrase ("Enter passphrase for key ...") and the password
            # ("user@host's password: ") through this helper, which reads them from the files above.
            askpass = session.write("askpass", "#!/bin/sh\ncase \"$1\" in\n" + "\n".join(answers) + "\nesac\nexit 1\n",
                                    secret=False, mode=0o700)
            session.env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY="respaldo")
            argv += ["-o", "BatchMode=no"]
            if password:
                argv += ["-o", "PreferredAuthentications=publickey,password,keyboard-interactive"]
        else:
            argv += ["-o", "BatchMode=yes"]
        session.options = argv[5:]
        session.base_argv = [*argv, "-p", str(port), "-l", user, host, "--"]
        yield session


def host_key_mismatch(where: str) -> str:
    return (f"la llave del servidor {where} no es la registrada en la conexión (host_key): puede ser otro "
            "servidor. Verifíquela con el administrador antes de cambiarla.")


def explain_ssh_failure(error_text: str, session: SshSession, returncode: int | None = None) -> str:
    """A plain Spanish reason for ssh's own failures (not the remote command's), or an empty string.

    ssh exits 255 for its own errors; connection, authentication and host-key failures always say
    so on stderr, but a connection lost mid-transfer may say nothing at ``LogLevel=ERROR``.
    """
    where = session.describe()
    if "Host key verification failed" in error_text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in error_text:
        return host_key_mismatch(where)
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


def _explain_paramiko(err: BaseException, where: str) -> str:
    import socket

    import paramiko

    text = str(err)
    if isinstance(err, paramiko.BadHostKeyException) or "not found in known_hosts" in text:
        return host_key_mismatch(where)
    if isinstance(err, paramiko.AuthenticationException):
        return f"el servidor {where} rechazó el usuario o la llave/clave de la conexión."
    if isinstance(err, paramiko.ssh_exception.NoValidConnectionsError | socket.error | EOFError):
        return f"no se pudo conectar con {where}."
    return text or type(err).__name__


@contextlib.contextmanager
def sftp_session(conn_id: str, *, known_hosts: str | None = None) -> Generator[SftpSession, None, None]:
    """The SFTPHook's client on the verified connection ``conn_id``, closed on exit.

    :param conn_id: an Airflow connection of type ssh or sftp.
    :param known_hosts: a known_hosts file with the server's key, when the connection has no ``host_key``.
    """
    hook = verified_hook(conn_id, known_hosts=known_hosts, sftp=True)
    where = _where(hook)
    secrets = [hook.password or "", *_key_texts(hook, conn_id)]
    try:
        client = hook.get_conn()
    except Exception as err:
        hook.close_conn()
        if hook.client is not None:
            hook.client.close()
        raise CopyError(f"No se pudo abrir la carpeta por SFTP (conexión «{conn_id}»): "
                        f"{blank(_explain_paramiko(err, where), secrets)}") from err
    try:
        yield SftpSession(conn_id=conn_id, where=where, client=client, secrets=secrets)
    finally:
        hook.close_conn()
        if hook.client is not None:
            hook.client.close()
