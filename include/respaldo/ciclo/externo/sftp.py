"""``kind: sftp``: a folder on another server, written with OpenSSH's own ``sftp``.

OpenSSH's client moves bulk data several times faster than paramiko (see bench/RESULTS.md), so the
artifact goes through ``sftp -b`` with the connection's key in a 0600 file and strict host-key checking
(:func:`respaldo.hooks.ssh.openssh_session`). The checksum is computed on the server by ``sha256sum``
over the same verified SSH connection; an account limited to SFTP (no commands) gets its copy read back
instead, through the provider's SFTPHook, and hashed here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import re
import subprocess
import uuid
from collections.abc import Generator, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from respaldo.ciclo.externo.base import CHUNK, SIDECAR_SUFFIX, Destination, ExternalError, Placed, sidecar_text
from respaldo.ciclo.externo.config import ExternalSftp
from respaldo.errors import RespaldoError, key_line

log = logging.getLogger("respaldo")

#: How long one sftp batch or one remote sha256sum may take before it is given up (a 1 TB image at
#: 50 MB/s takes about 6 h; the task's own timeout_hours is the real bound).
BATCH_TIMEOUT_SECONDS = 24 * 3600
_SHA = re.compile(r"^([0-9a-f]{64})\s")
#: Bulk transfer settings (measured in bench/RESULTS.md, section 15): 128 KiB requests, 128 in flight
#: (sftp's defaults: 32 KiB, 64), and OpenSSH's own cipher list with AES-GCM first (hardware AES on
#: servers; the server still picks from what it offers).
SFTP_TUNING = ("-B", "131072", "-R", "128", "-o", "Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,"
               "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr")
#: Commands that print a file's sha256 first on their line, fastest first: OpenSSL uses the CPU's SHA
#: instructions (about 5 times coreutils' sha256sum here).
HASH_COMMANDS = (("openssl", "dgst", "-sha256", "-r"), ("sha256sum", "--"))


class SftpDestination(Destination):
    """A folder on a server reached through a verified Airflow SSH connection."""

    kind = "sftp"

    def __init__(self, config: ExternalSftp):
        self.config = config
        self.root = PurePosixPath(config.path)

    def describe(self) -> str:
        return self.config.describe()

    @contextlib.contextmanager
    def _session(self) -> Generator:
        from respaldo.hooks.ssh import openssh_session

        try:
            with openssh_session(self.config.conn_id, known_hosts=self.config.known_hosts) as session:
                yield session
        except ExternalError:
            raise
        except RespaldoError as err:
            raise ExternalError(f"No se puede usar {self.describe()}: {err}") from err

    def _run(self, session, argv: list[str], what: str) -> subprocess.CompletedProcess:
        from respaldo.hooks.ssh import explain_ssh_failure

        done = subprocess.run(argv, env=session.env, capture_output=True, timeout=BATCH_TIMEOUT_SECONDS,
                              stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            text = session.blank(done.stderr.decode("utf-8", "replace"))
            reason = explain_ssh_failure(text, session, done.returncode)
            if not reason:
                line = key_line(text) or f"sftp terminó con código {done.returncode}"
                if "Failure" in line or "No space" in line or "Quota" in line:
                    line += " (¿disco lleno o cuota agotada en el servidor?)"
                reason = line
            raise ExternalError(f"{what} en {self.describe()}: {reason}", detail=text)
        return done

    def _batch(self, session, lines: Sequence[str], what: str) -> subprocess.CompletedProcess:
        batch = session.write(f"lote-{uuid.uuid4().hex[:8]}", "".join(f"{line}\n" for line in lines), secret=False)
        return self._run(session, session.sftp_argv(batch, *SFTP_TUNING), what)

    @staticmethod
    def _quoted(path: PurePosixPath | Path | str) -> str:
        text = str(path)
        if any(char in text for char in '"\n\r\\'):
            raise ExternalError(f"La ruta «{text}» lleva comillas, barras invertidas o saltos de línea: sftp no la "
                                "puede recibir así.")
        return f'"{text}"'

    def uri_of(self, relative: PurePosixPath) -> str:
        return f"sftp://{self.config.conn_id}{self.root / relative}"

    def _path(self, uri: str) -> PurePosixPath:
        parts = urlsplit(uri)
        path = PurePosixPath(parts.path)
        if parts.scheme != "sftp" or parts.netloc != self.config.conn_id or self.root not in path.parents:
            raise ExternalError(f"«{uri}» no es una copia de {self.describe()}.")
        return path

    def _remote_sha256(self, session, path: PurePosixPath) -> str:
        """The sha256 computed on the server (OpenSSL, else coreutils); for an account limited to SFTP (no
        commands), the file read back and hashed here."""
        for command in HASH_COMMANDS:
            done = subprocess.run(session.argv([*command, str(path)]), env=session.env, capture_output=True,
                                  timeout=BATCH_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL, check=False)
            found = _SHA.match(done.stdout.decode("ascii", "replace")) if done.returncode == 0 else None
            if found:
                return found.group(1)
        log.info("%s no deja calcular la suma en el servidor; se lee de vuelta la copia para verificarla",
                 self.describe())
        return self._read_back_sha256(path)

    def _read_back_sha256(self, path: PurePosixPath) -> str:
        from respaldo.hooks.ssh import sftp_session

        digest = hashlib.sha256()
        try:
            with sftp_session(self.config.conn_id, known_hosts=self.config.known_hosts) as sftp, \
                    sftp.client.open(str(path), "rb") as handle:
                handle.prefetch()
                while block := handle.read(CHUNK):
                    digest.update(block)
        except RespaldoError as err:
            raise ExternalError(f"No se pudo leer {path} en {self.describe()}: {err}") from err
        except OSError as err:
            raise ExternalError(f"No se pudo leer {path} en {self.describe()}: {err}") from err
        return digest.hexdigest()

    def _mkdirs(self, folder: PurePosixPath) -> list[str]:
        return [f"-mkdir {self._quoted(part)}" for part in [*reversed(folder.parents), folder] if part != part.parent]

    def put(self, artifact: Path, relative: PurePosixPath, sha256: str) -> Placed:
        final = self.root / relative
        temporary = final.with_name(f".{final.name}.parcial-{uuid.uuid4().hex[:8]}")
        sidecar = final.with_name(final.name + SIDECAR_SUFFIX)
        sidecar_temporary = sidecar.with_name(f".{sidecar.name}.parcial-{uuid.uuid4().hex[:8]}")
        with self._session() as session:
            try:
                # -f: the server fsyncs the file before answering (fsync@openssh.com): a verified copy is on disk.
                self._batch(session, [*self._mkdirs(final.parent), f"put -f {self._quoted(artifact)} "
                                      f"{self._quoted(temporary)}"], f"No se pudo copiar {artifact.name}")
                self.refuse_mismatch(str(final), sha256, self._remote_sha256(session, temporary))
                local_sidecar = session.write(f"sidecar-{uuid.uuid4().hex[:8]}", sidecar_text(sha256, final.name),
                                              secret=False)
                self._batch(session, [f"put -f {self._quoted(local_sidecar)} {self._quoted(sidecar_temporary)}",
                                      f"rename {self._quoted(temporary)} {self._quoted(final)}",
                                      f"rename {self._quoted(sidecar_temporary)} {self._quoted(sidecar)}"],
                            f"No se pudo dar el nombre final a {final.name}")
            except BaseException:
                with contextlib.suppress(Exception):
                    self._batch(session, [f"-rm {self._quoted(temporary)}", f"-rm {self._quoted(sidecar_temporary)}"],
                                "No se pudo borrar la copia a medias")
                raise
        return Placed(self.uri_of(relative), sha256, dt.datetime.now(dt.UTC), artifact.stat().st_size)

    def exists(self, uri: str) -> bool:
        path = self._path(uri)
        with self._session() as session:
            listing = self._batch(session, [f"-ls -1 {self._quoted(path)}"], f"No se pudo consultar {path}")
        return str(path) in listing.stdout.decode("utf-8", "replace").splitlines()

    def sha256(self, uri: str) -> str:
        path = self._path(uri)
        with self._session() as session:
            return self._remote_sha256(session, path)

    def delete(self, uri: str) -> None:
        path = self._path(uri)
        with self._session() as session:
            self._batch(session, [f"-rm {self._quoted(path.with_name(path.name + SIDECAR_SUFFIX))}",
                                  f"-rm {self._quoted(path)}"], f"No se pudo borrar {path}")
            if self.exists(uri):
                raise ExternalError(f"No se pudo borrar {path} en {self.describe()}: sigue ahí (¿permisos?).")

    def check(self) -> str:
        probe = self.root / f".respaldo-prueba-{uuid.uuid4().hex[:8]}"
        with self._session() as session:
            local = session.write("prueba", "respaldo\n", secret=False)
            self._batch(session, [*self._mkdirs(self.root), f"put {self._quoted(local)} {self._quoted(probe)}",
                                  f"rm {self._quoted(probe)}"], "No se pudo escribir una prueba")
            return f"{self.describe()} ({session.describe()}): responde y se puede escribir"
