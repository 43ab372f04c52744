"""Restoring with the standard tools: ``zstd -dc ARTIFACT | pg_restore`` (or ``mariadb``, or ``tar -x``).

An encrypted artifact (``.zst.age``) gets ``age -d -i IDENTITY`` in front: three processes joined by
pipes, the private key file read by age alone.

The same pipelines a person would type (see the README), run as two processes joined by a pipe:
Python is not in the data's path, so a restore goes as fast as the shell's. The artifact is opened
here and handed to zstd as its standard input; the file offset is shared, so the position zstd has
read to, against the artifact's size, is the progress reported every few seconds. Every tool gets a
minimal environment and its credentials through the hooks (a pgpass and a service file, a MySQL
option file): never in argv. A failure stops both processes and says which tool failed, and why.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from respaldo.artifacts import CHUNK, grow_pipe
from respaldo.hooks.base import blank, minimal_env
from respaldo.process import human_bytes
from respaldo.simulacro.destino import RestauracionError

PROGRESS_SECONDS = 5.0
#: Restored with ``--no-owner --no-privileges``: the copy's roles need not exist where it is restored (the
#: objects belong to the restoring user), and ``--exit-on-error``: any error fails the restore.
PG_RESTORE = ("pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--no-password")
#: A row as large as mariadb-dump may write it (its own ``--max-allowed-packet=1G``).
MARIADB_OPTIONS = ("--max-allowed-packet=1G", "--batch", "--connect-timeout=20")

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class Progress:
    """Says how far a restore has read its source, every :data:`PROGRESS_SECONDS` seconds."""

    what: str
    total: int
    say: Say = _quiet
    started: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)
    read_all: bool = False

    def update(self, position: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_SECONDS or self.read_all:
            return
        self.last = now
        elapsed = now - self.started
        if self.total and position >= self.total:  # the tool still works: indexes, constraints, the last rows
            self.read_all = True
            self.say(f"  {self.what}: copia leída completa en {elapsed:.0f} s; falta que termine (índices, "
                     "restricciones)")
            return
        share = position / self.total if self.total else 0
        left = f", faltan unos {elapsed * (1 - share) / share:.0f} s de lectura" if 0 < share < 1 else ""
        self.say(f"  {self.what}: {share * 100:.0f} % ({human_bytes(position)} de {human_bytes(self.total)}) en "
                 f"{elapsed:.0f} s{left}")


def _tail(handle, secrets: Sequence[str]) -> str:
    handle.seek(0)
    text = blank(handle.read().decode("utf-8", "replace"), secrets).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if "warning: errors ignored" not in line]
    return " ".join((useful or lines)[-3:])[-1500:]


def _decrypting(handle, identity: Sequence[Path] | None, errors) -> subprocess.Popen | None:
    """``age -d -i IDENTITY`` reading ``handle``, or None for an artifact that is not encrypted."""
    if identity is None:
        return None
    from respaldo.ciclo.cifrado import decrypt_argv

    age = subprocess.Popen(decrypt_argv(identity), stdin=handle, stdout=subprocess.PIPE,  # noqa: S603
                           stderr=errors, env=minimal_env())
    grow_pipe(age.stdout)
    return age


def _age_failure(age: subprocess.Popen | None, errors, identity: Sequence[Path] | None, name: str) -> str | None:
    """Why age could not decrypt the whole artifact, or None (not encrypted, or decrypted to its last chunk).

    age ended by SIGPIPE was cut off downstream (the tool stopped reading): the tool's failure says why.
    """
    if age is None or age.wait() in (0, -signal.SIGPIPE):
        return None
    from respaldo.ciclo.cifrado import explain

    errors.seek(0)
    return f"No se pudo descifrar {name}: {explain(errors.read().decode('utf-8', 'replace'), identity, name)}."


def run_restore(source: Path, argv: Sequence[str], *, env: dict[str, str], what: str, compressed: bool = True,
                secrets: Sequence[str] = (), say: Say = _quiet, explain: Callable[[str], str] | None = None,
                identity: Sequence[Path] | None = None) -> float:
    """``zstd -dc SOURCE | ARGV`` (or ``ARGV < SOURCE`` when not ``compressed``); return the seconds it took.

    With ``identity`` (an encrypted artifact): ``age -d -i IDENTITY < SOURCE | zstd -dc | ARGV``.

    :raises RestauracionError: a tool failed (its key lines, secrets blanked, explained when possible).
    """
    started = time.monotonic()
    total = source.stat().st_size
    progress = Progress(what, total, say)
    with open(source, "rb") as handle, tempfile.TemporaryFile() as zstd_errors, \
            tempfile.TemporaryFile() as tool_errors, tempfile.TemporaryFile() as age_errors:
        zstd = age = None
        try:
            age = _decrypting(handle, identity, age_errors)
            if compressed:
                zstd = subprocess.Popen(["zstd", "-dcq", "--no-progress"],  # noqa: S607
                                        stdin=age.stdout if age else handle, stdout=subprocess.PIPE,
                                        stderr=zstd_errors, env=minimal_env())
                grow_pipe(zstd.stdout)
                stdin = zstd.stdout
            else:
                stdin = handle
            tool = subprocess.Popen(list(argv), stdin=stdin, stdout=subprocess.DEVNULL,  # noqa: S603
                                    stderr=tool_errors, env=env)
        except FileNotFoundError as err:
            for proc in (zstd, age):
                if proc is not None:
                    proc.kill()
                    proc.wait()
            raise RestauracionError(f"No está instalado «{err.filename}» en esta máquina: sin él no se puede "
                                    "restaurar.") from err
        for proc in (zstd, age):  # the next process holds each pipe now: a stop downstream is seen upstream
            if proc is not None:
                proc.stdout.close()
        try:
            while True:
                try:
                    tool.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    progress.update(os.lseek(handle.fileno(), 0, os.SEEK_CUR))
            zstd_code = zstd.wait() if zstd is not None else 0
            age_problem = _age_failure(age, age_errors, identity, source.name)
        except BaseException:
            for proc in (tool, zstd, age):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
            raise
        if age_problem:  # a wrong key or a damaged chunk: what zstd and the tool saw after it adds nothing
            raise RestauracionError(age_problem)
        if tool.returncode != 0:
            text = _tail(tool_errors, secrets)
            plain = explain(text) if explain else ""
            detail = f"{plain} Detalle: {text}" if plain else text or "sin mensaje"
            raise RestauracionError(f"{what} falló (código {tool.returncode}): {detail}")
        if zstd_code != 0:
            raise RestauracionError(f"zstd no pudo descomprimir la copia {source.name} hasta el final: "
                                    f"{_tail(zstd_errors, secrets) or f'código {zstd_code}'}")
    return time.monotonic() - started


def restore_postgres(source: Path, conn_id: str, database: str, *, compressed: bool = True,
                     say: Say = _quiet, identity: Sequence[Path] | None = None) -> float:
    """pg_restore a custom-format archive into ``database`` (it exists, empty) on ``conn_id``'s server."""
    from respaldo.hooks.postgres import explain_libpq, libpq_session

    with libpq_session(conn_id, database=database, application_name="respaldo restaurar") as session:
        return run_restore(source, [*PG_RESTORE, f"--dbname={database}"], env=session.env, compressed=compressed,
                           what=f"pg_restore en la base «{database}» de {session.where}", secrets=session.secrets,
                           say=say, explain=lambda text: explain_libpq(text, session), identity=identity)


def restore_mysql(source: Path, conn_id: str, database: str, *, compressed: bool = True, say: Say = _quiet,
                  identity: Sequence[Path] | None = None) -> float:
    """Run a mariadb-dump file into ``database`` (it exists, empty) with the ``mariadb`` client."""
    from respaldo.hooks.mysql import client_session
    from respaldo.sources.mysql import _tool

    tool = _tool("mariadb", "mysql")
    with client_session(conn_id, database=database, mariadb=tool == "mariadb") as session:
        def explain(text: str) -> str:
            if "1227" in text or "SUPER" in text or "SET USER" in text:
                return (f"el usuario «{session.user}» no puede crear objetos a nombre de otro usuario (DEFINER) en "
                        f"{session.where}: dele ese privilegio (SET USER o SUPER), o restaure a mano quitando los "
                        "DEFINER como indica el README.")
            return ""

        return run_restore(source, [tool, session.defaults_argument(), *MARIADB_OPTIONS, "--", database],
                           env=session.env, compressed=compressed, secrets=session.secrets, say=say,
                           what=f"mariadb en la base «{database}» de {session.where}", explain=explain,
                           identity=identity)


def restore_tar(artifact: Path, folder: Path, *, say: Say = _quiet, identity: Sequence[Path] | None = None) -> float:
    """``zstd -dc ARTIFACT | tar -x`` into ``folder``: names, links, modes and times, sparse files kept sparse.

    As root, tar also gives every file back its owner, as a restore should.
    """
    argv = ["tar", "--extract", "--file=-", "--sparse", "--preserve-permissions", f"--directory={folder}"]
    return run_restore(artifact, argv, env=minimal_env(), what=f"tar en {folder}", say=say, identity=identity)


def restore_file(artifact: Path, dest: Path, *, say: Say = _quiet,
                 identity: Sequence[Path] | None = None) -> tuple[int, str, float]:
    """Decompress ``artifact`` into the new file ``dest`` (a manual copy); return (bytes, sha256, seconds)."""
    import zstandard

    started = time.monotonic()
    digest = hashlib.sha256()
    size = 0
    progress = Progress(f"descomprimiendo en {dest}", artifact.stat().st_size, say)
    with tempfile.TemporaryFile() as age_errors, open(artifact, "rb") as reader:
        age = None
        try:
            age = _decrypting(reader, identity, age_errors)
            with open(dest, "xb") as writer, zstandard.ZstdDecompressor().stream_reader(
                    age.stdout if age else reader, read_across_frames=True) as stream:
                while chunk := stream.read(CHUNK):
                    writer.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    progress.update(os.lseek(reader.fileno(), 0, os.SEEK_CUR))
                writer.flush()
                os.fsync(writer.fileno())
            problem = _age_failure(age, age_errors, identity, artifact.name)
            if problem:
                raise RestauracionError(problem)
        except FileExistsError as err:
            raise RestauracionError(f"Ya existe {dest}: no se sobrescribe.") from err
        except (zstandard.ZstdError, OSError, RestauracionError) as err:
            with contextlib.suppress(OSError):
                dest.unlink()
            if isinstance(err, RestauracionError):
                raise
            problem = _age_failure(age, age_errors, identity, artifact.name)
            raise RestauracionError(problem or f"No se pudo descomprimir {artifact.name} en {dest}: {err}") from err
        finally:
            if age is not None and age.poll() is None:
                age.kill()
                age.wait()
    return size, digest.hexdigest(), time.monotonic() - started
