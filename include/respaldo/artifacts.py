"""Where copies live and how they become artifacts (step 5: compress).

Layout (the contract)::

    <root>/<class>/<target>/<YYYY>/<MM>/<target>_<YYYYMMDDTHHMMSS>.<ext>.zst
    <root>/<class>/<target>/<YYYY>/<MM>/<target>_<YYYYMMDDTHHMMSS>.<ext>.zst.sha256

Uncompressed copies wait in ``<root>/.staging/`` (same filesystem as the artifacts, so a shared
backups volume serves every worker). An artifact is written under a hidden temporary name, flushed
to disk and then linked to its final name, which fails rather than replace an existing file: nothing
half-written ever carries a final name and no earlier artifact is ever overwritten. Its ``.sha256`` is
written before either name appears and both names go again if anything fails: an artifact exists with
its checksum, or not at all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import zstandard

from respaldo.errors import ArtifactError, CopyError
from respaldo.process import PROGRESS_INTERVAL_SECONDS, check_exit, human_bytes, no_space_message

F_SETPIPE_SZ = 1031  # from <linux/fcntl.h>; not exposed by Python's fcntl before 3.12

ZSTD_LEVEL = 3
#: Input per zstd worker job. The library's default at level 3 (8 MiB jobs) keeps ~50 MiB of buffers
#: with two workers, which took a task process (Airflow's own ~120 MiB included) past 150 MiB;
#: 2 MiB jobs need ~16 MiB, at the same ratio and within a few percent of the speed.
ZSTD_JOB_SIZE = 2 * 1024 * 1024
CHUNK = 1024 * 1024
STAGING = ".staging"


def run_key(run_id: str) -> str:
    """A run id as a safe folder name (run ids carry ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


def staging_dir(root: str | Path, frequency: str, target: str, run_id: str) -> Path:
    return Path(root) / STAGING / frequency / target / run_key(run_id)


def artifact_path(root: str | Path, frequency: str, target: str, backup_at: dt.datetime, extension: str,
                  *, encrypted: bool = False) -> Path:
    """Final path of an artifact; ``backup_at`` must already be in the inventory's timezone.

    An encrypted artifact (see :mod:`respaldo.ciclo.cifrado`) ends in ``.zst.age``.
    """
    stamp = backup_at.strftime("%Y%m%dT%H%M%S")
    return (Path(root) / frequency / target / f"{backup_at:%Y}" / f"{backup_at:%m}"
            / f"{target}_{stamp}.{extension}.zst{'.age' if encrypted else ''}")


@dataclass(frozen=True)
class Artifact:
    path: Path
    original_bytes: int
    compressed_bytes: int
    sha256: str
    compression: str


def _compressor(size: int | None = None) -> zstandard.ZstdCompressor:
    """zstd at ZSTD_LEVEL on every core, with a checksum; ``size``, when known, goes in the frame header."""
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL, source_size=size or 0, threads=-1, job_size=ZSTD_JOB_SIZE, write_checksum=True,
        write_content_size=size is not None)
    return zstandard.ZstdCompressor(compression_params=params)


class _HashingWriter:
    """File writer that hashes what it writes and (with ``total``) logs progress every few seconds."""

    def __init__(self, handle, total: int | None, log: logging.Logger, tee=None):
        self.handle = handle
        self.tee = tee  # also gets every byte written (an age encryptor), after the file
        self.digest = hashlib.sha256()
        self.written = 0
        self.total = total
        self.log = log
        self.started = self.last = time.monotonic()

    def flush(self) -> None:
        self.handle.flush()

    def write(self, data: bytes) -> int:
        self.handle.write(data)
        if self.tee is not None:
            self.tee.write(data)
        self.digest.update(data)
        self.written += len(data)
        now = time.monotonic()
        if self.total is not None and now - self.last >= PROGRESS_INTERVAL_SECONDS:
            self.last = now
            self.log.info("comprimir: %s comprimidos de un original de %s (%.0f s)",
                          human_bytes(self.written), human_bytes(self.total), now - self.started)
        return len(data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _link_new(existing: Path, name: Path) -> bool:
    """Give ``existing`` the extra name ``name``; False if ``name`` is taken (a link never replaces)."""
    try:
        os.link(existing, name)
    except FileExistsError:
        return False
    return True


def _write_new(path: Path, data: bytes) -> None:
    """Write a new file and flush it to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(ready: Path, final: Path, sha256: str, log: logging.Logger) -> None:
    """Give the finished file ``ready`` the name ``final`` with its ``.sha256`` beside it: both, or neither.

    The sidecar's bytes are written first, under a temporary name, because that write is the step
    that can still run out of space; only then is the artifact's name linked, then the sidecar's.
    Links never replace a file: an existing artifact with the same bytes (a retried task) is kept as
    it is, one with other bytes is refused and left alone. On any failure the names this call created
    are removed, so an artifact never shows up without its checksum, and no temporary file is left.
    ``ready`` itself is the caller's.
    """
    sidecar = final.with_name(final.name + ".sha256")
    sidecar_tmp = sidecar.with_name(f".{sidecar.name}.tmp-{os.getpid()}")
    created: list[Path] = []
    try:
        _write_new(sidecar_tmp, f"{sha256}  {final.name}\n".encode("ascii"))
        if _link_new(ready, final):
            created.append(final)
        elif sha256_of(final) != sha256:
            raise ArtifactError(f"Ya existe otro respaldo con el nombre {final}; no se sobrescribe. Revise la "
                                "fecha de creación de la copia.")
        else:
            log.info("El respaldo %s ya existía con el mismo contenido (reintento); se conserva.", final)
        if _link_new(sidecar_tmp, sidecar):
            created.append(sidecar)
        elif sidecar.read_text(encoding="ascii").split()[:1] != [sha256]:
            raise ArtifactError(f"Ya existe {sidecar} con otra suma; no se sobrescribe.")
        _fsync_dir(final.parent)
    except BaseException as err:
        for path in reversed(created):
            path.unlink(missing_ok=True)
        if isinstance(err, OSError):
            if err.errno == errno.ENOSPC:
                free = shutil.disk_usage(final.parent).free
                raise ArtifactError(
                    f"No hay espacio en disco en {final.parent} ({human_bytes(free)} libres) para guardar el "
                    f"respaldo {final.name} con su suma de verificación (.sha256); no quedó nada a medias. Libere "
                    "espacio y reintente la tarea."
                ) from err
            raise ArtifactError(f"No se pudo guardar el respaldo {final}: {err.strerror}") from err
        raise
    finally:
        sidecar_tmp.unlink(missing_ok=True)


def _space_error(err: OSError, final: Path, what: str) -> ArtifactError:
    if err.errno == errno.ENOSPC:
        free = shutil.disk_usage(final.parent).free
        return ArtifactError(f"No hay espacio en disco en {final.parent} para {what} ({human_bytes(free)} libres). "
                             "Libere espacio y reintente la tarea.")
    return ArtifactError(f"No se pudo escribir el respaldo en {final.parent}: {err.strerror}")


def _write_new_artifact(final: Path, fill: Callable[[_HashingWriter], None], total: int | None, log: logging.Logger,
                        what: str) -> _HashingWriter:
    """Write a new artifact's bytes with ``fill`` under a temporary name, then publish it with its ``.sha256``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "xb") as handle:
            writer = _HashingWriter(handle, total, log)
            fill(writer)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, final, writer.digest.hexdigest(), log)
    except OSError as err:
        raise _space_error(err, final, what) from err
    finally:
        tmp.unlink(missing_ok=True)
    return writer


def _encrypting(stream, recipients: Sequence[str], plain=None) -> Callable[[_HashingWriter], None]:
    """A ``fill`` that pours ``stream`` (a zstd stream, or its compressor's reader) through ``age -r …``.

    ``plain``, when given, hashes what went into age (to compare with the stream that was verified).
    """
    from respaldo.ciclo import cifrado

    def fill(writer: _HashingWriter) -> None:
        sealing = cifrado.Cifrador(writer, recipients)
        try:
            while block := stream.read(CHUNK):
                if plain is not None:
                    plain.update(block)
                sealing.write(block)
        except BaseException:
            sealing.abort()
            raise
        sealing.close()

    return fill


def _check_encrypted(final: Path, log: logging.Logger) -> str:
    """What the stored encrypted artifact shows without the key (its age header and chunks); fails if wrong."""
    from respaldo.ciclo import cifrado

    found = cifrado.structure(final)
    if found.problem:
        for path in (final, final.with_name(final.name + ".sha256")):
            path.unlink(missing_ok=True)
        raise ArtifactError(f"{found.problem} Se borró; reintente la tarea.")
    return found.describe()


def compress(source: Path, final: Path, log: logging.Logger, *, recipients: Sequence[str] = ()) -> Artifact:
    """Compress ``source`` into the artifact ``final`` plus its ``.sha256``; stream, never overwrite.

    With ``recipients`` the zstd stream goes straight into age (``final`` ends in ``.zst.age``): nothing
    unencrypted is written beside the artifacts. If ``final`` already exists with exactly the bytes this
    would produce (a retried task whose first try got that far), it is kept and reported; if it exists
    with other bytes, this fails. (An encrypted artifact is never the same twice: a retry refuses.)
    """
    original = source.stat().st_size
    compressor = _compressor(original)
    with open(source, "rb") as reader:
        if recipients:
            fill = _encrypting(compressor.stream_reader(reader, size=original, read_size=CHUNK), recipients)
        else:
            def fill(writer: _HashingWriter) -> None:
                compressor.copy_stream(reader, writer, size=original, read_size=CHUNK, write_size=CHUNK)
        writer = _write_new_artifact(final, fill, original, log,
                                     f"comprimir la copia de {human_bytes(original)} sin comprimir")
    elapsed = time.monotonic() - writer.started
    sha256 = writer.digest.hexdigest()
    checked = f"; {_check_encrypted(final, log)}" if recipients else ""
    log.info("comprimir terminó: %s -> %s (%.1f%%) en %.1f s; sha256 %s%s", human_bytes(original),
             human_bytes(writer.written), 100 * writer.written / max(original, 1), elapsed, sha256, checked)
    return Artifact(final, original, final.stat().st_size, sha256, compression_label(bool(recipients)))


def compression_label(encrypted: bool) -> str:
    """The register's ``compression`` value: ``zstd-3``, or ``zstd-3+age`` for an encrypted artifact."""
    return f"zstd-{ZSTD_LEVEL}+age" if encrypted else f"zstd-{ZSTD_LEVEL}"


class _CountingReader:
    """Reads a tool's output, counting the bytes and logging progress every few seconds."""

    def __init__(self, raw, log: logging.Logger, what: str):
        self.raw = raw
        self.log = log
        self.what = what
        self.count = 0
        self.started = self.last = time.monotonic()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        now = time.monotonic()
        if now - self.last >= PROGRESS_INTERVAL_SECONDS:
            self.last = now
            elapsed = now - self.started
            self.log.info("%s: %s copiados y comprimidos en %.0f s (%s/s)", self.what, human_bytes(self.count),
                          elapsed, human_bytes(self.count / elapsed))
        return data


def grow_pipe(handle) -> None:
    """Ask for a 1 MiB pipe: with the default 64 KiB, Python reads fall far behind the producer."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(handle.fileno(), F_SETPIPE_SZ, 1 << 20)


@dataclass(frozen=True)
class Sealed:
    """The age-encrypted twin of a compressed copy, written beside it in staging while the copy ran."""

    path: Path
    bytes: int
    sha256: str

    def as_xcom(self) -> dict:
        return {"path": str(self.path), "bytes": self.bytes, "sha256": self.sha256}


@dataclass(frozen=True)
class Compressed:
    """What :func:`copy_compressed` wrote: sizes and sum of the zstd stream, and its encrypted twin if asked."""

    original: int
    compressed: int
    sha256: str
    sealed: Sealed | None = None


def sealed_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".age")


def copy_compressed(argv: Sequence[str], dest: Path, *, env: Mapping[str, str], log: logging.Logger, what: str,
                    secrets: Sequence[str] = (), ok_codes: Sequence[int] = (0,),
                    explain: Callable[[str, int], str] | None = None, recipients: Sequence[str] = ()) -> Compressed:
    """Run a tool and compress its output into ``dest`` as it arrives.

    For copies too big to land uncompressed on the local disk (virtual-server images): only the
    compressed result is ever written. A failure or a kill removes ``dest``.

    With ``recipients`` the same zstd stream also goes through ``age -r …`` into ``dest.age`` as it is
    written (age on another core, overlapping the dump): ``verificar_fecha`` then reads the plaintext
    ``dest`` whole, and ``comprimir`` only gives ``dest.age`` its final name. Both are the very same
    bytes, hashed once each here.
    """
    from respaldo.ciclo import cifrado

    sealed_file = sealed_path(dest)
    for path in (dest, sealed_file):
        path.unlink(missing_ok=True)
    compressor = _compressor()
    sealed_writer = sealing = None
    with tempfile.TemporaryFile() as stderr, contextlib.ExitStack() as files:
        proc = subprocess.Popen(  # noqa: S603 - argv is built by respaldo, never by a shell
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=dict(env)
        )
        try:
            grow_pipe(proc.stdout)
            reader = _CountingReader(proc.stdout, log, what)
            if recipients:
                sealed_handle = files.enter_context(open(sealed_file, "xb"))  # noqa: SIM115 - the stack closes it
                sealed_writer = _HashingWriter(sealed_handle, None, log)
                sealing = cifrado.Cifrador(sealed_writer, recipients)
            with open(dest, "xb") as handle:
                writer = _HashingWriter(handle, None, log, tee=sealing)
                compressor.copy_stream(reader, writer, read_size=CHUNK, write_size=CHUNK)
                handle.flush()
                os.fsync(handle.fileno())
            if sealing is not None:
                sealing.close()
                sealing = None
                sealed_handle.flush()
                os.fsync(sealed_handle.fileno())
            returncode = proc.wait()
        except BaseException as err:
            proc.kill()
            proc.wait()
            if sealing is not None:
                sealing.abort()
            for path in (dest, sealed_file):
                path.unlink(missing_ok=True)
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                raise CopyError(f"{what}: {no_space_message(dest.parent)}") from err
            raise
        stderr.seek(0)
        error_text = stderr.read().decode("utf-8", "replace").strip()
    try:
        check_exit(what, returncode, error_text, dest, log=log, ok_codes=ok_codes, secrets=secrets, explain=explain)
    except BaseException:
        sealed_file.unlink(missing_ok=True)
        raise
    elapsed = time.monotonic() - reader.started
    log.info("%s terminó: %s copiados, %s comprimidos%s, en %.1f s (%s/s)", what, human_bytes(reader.count),
             human_bytes(writer.written), " y cifrados con age" if recipients else "", elapsed,
             human_bytes(reader.count / max(elapsed, 1e-9)))
    sealed = (Sealed(sealed_file, sealed_writer.written, sealed_writer.digest.hexdigest())
              if sealed_writer is not None else None)
    return Compressed(reader.count, writer.written, writer.digest.hexdigest(), sealed)


def place_compressed(staged: Path, final: Path, sha256: str, original_bytes: int, log: logging.Logger, *,
                     recipients: Sequence[str] = ()) -> Artifact:
    """Give an already-compressed copy its final name (same filesystem: no data is copied).

    With ``recipients`` the compressed copy is encrypted into ``final`` instead (``.zst.age``); what went
    into age must be exactly the stream ``verificar_fecha`` verified (``sha256``), or nothing is kept.
    """
    if not recipients:
        final.parent.mkdir(parents=True, exist_ok=True)
        _publish(staged, final, sha256, log)
        log.info("Respaldo %s (%s, comprimido al copiar; sha256 %s)", final, human_bytes(final.stat().st_size),
                 sha256)
        return Artifact(final, original_bytes, final.stat().st_size, sha256, compression_label(False))
    size = staged.stat().st_size
    plain = hashlib.sha256()
    with open(staged, "rb") as reader:
        fill = _encrypting(reader, recipients, plain)

        def checked_fill(writer: _HashingWriter) -> None:
            fill(writer)
            if plain.hexdigest() != sha256:
                raise ArtifactError(f"La copia comprimida {staged.name} cambió entre la verificación y el cifrado "
                                    "(su suma SHA-256 ya no es la verificada); no se guardó. Vuelva a ejecutar "
                                    "desde «copia».")

        writer = _write_new_artifact(final, checked_fill, size, log, f"cifrar la copia de {human_bytes(size)}")
    structure = _check_encrypted(final, log)
    log.info("Respaldo %s (%s, comprimido al copiar y cifrado con age; lo cifrado es la copia verificada, sha256 "
             "%s; %s; sha256 del archivo cifrado %s) en %.1f s", final, human_bytes(writer.written), sha256, structure,
             writer.digest.hexdigest(), time.monotonic() - writer.started)
    return Artifact(final, original_bytes, final.stat().st_size, writer.digest.hexdigest(), compression_label(True))


def place_sealed(sealed: dict, final: Path, plain_sha256: str, original_bytes: int, log: logging.Logger) -> Artifact:
    """Give the encrypted twin ``copia`` wrote (see :func:`copy_compressed`) its final name, with its ``.sha256``.

    ``sealed`` is its XCom (path, bytes, sha256); ``verificar_fecha`` re-read it against that sum
    (:func:`respaldo.ciclo.cifrado.check_written`); here its size must still be the same and, once named,
    its age structure whole.
    """
    staged = Path(sealed["path"])
    if not staged.is_file() or staged.stat().st_size != sealed["bytes"]:
        raise ArtifactError(f"La copia cifrada {staged.name} ya no está o cambió de tamaño desde que se tomó; vuelva "
                            "a ejecutar desde «copia».")
    final.parent.mkdir(parents=True, exist_ok=True)
    _publish(staged, final, sealed["sha256"], log)
    structure = _check_encrypted(final, log)
    log.info("Respaldo %s (%s, comprimido y cifrado con age al copiar: lo cifrado es la copia que verificar_fecha "
             "leyó completa, sha256 %s; %s; sha256 del archivo cifrado %s)", final, human_bytes(sealed["bytes"]),
             plain_sha256, structure, sealed["sha256"])
    return Artifact(final, original_bytes, final.stat().st_size, sealed["sha256"], compression_label(True))


def remove_staging(path: Path) -> None:
    """Remove a run's staging folder (the uncompressed copy); never touches artifacts."""
    if STAGING in path.parts:
        shutil.rmtree(path, ignore_errors=True)


def remove_leftovers(root: str | Path, frequency: str, target: str, keep: Path) -> list[Path]:
    """Remove the staging folders earlier runs of a target left behind; return those removed.

    Call it only when the run that calls it is its DAG's only active run (a target belongs to one DAG):
    then no other run can still need a staging folder (:func:`sweep_leftovers`). This is what cleans a
    failed run's leftovers on a worker that ``cierre`` (on the default queue) cannot reach.
    """
    folder = Path(root) / STAGING / frequency / target
    try:
        earlier = [path for path in folder.iterdir() if path.is_dir() and path != keep]
    except FileNotFoundError:
        return []
    for path in earlier:
        remove_staging(path)
    return earlier


def sweep_leftovers(root: str | Path, frequency: str, target: str, keep: Path, context: Mapping,
                    dag_id: str, log: logging.Logger) -> None:
    """At the start of a target's first step: remove earlier runs' staging folders, if no other run is active.

    A DAG runs one run at a time, but a backfill runs beside it: with another run active, its folders
    may be in use, and they are left for a later copy (said in the log).
    """
    try:
        active = context["ti"].get_dr_count(dag_id=dag_id, states=["running", "queued"])
    except Exception as err:  # noqa: BLE001 - outside Airflow's task runner (a bench, a script): leave them
        log.info("No se revisaron las carpetas temporales de ejecuciones anteriores (%s).", err)
        return
    if active > 1:
        log.info("Hay %d ejecuciones activas de %s: las carpetas temporales de otras ejecuciones no se tocan.",
                 active, dag_id)
        return
    for leftover in remove_leftovers(root, frequency, target, keep):
        log.info("Borrado lo que quedó a medio copiar de una ejecución anterior: %s", leftover)
