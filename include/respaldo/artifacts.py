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


def artifact_path(root: str | Path, frequency: str, target: str, backup_at: dt.datetime, extension: str) -> Path:
    """Final path of an artifact; ``backup_at`` must already be in the inventory's timezone."""
    stamp = backup_at.strftime("%Y%m%dT%H%M%S")
    return (Path(root) / frequency / target / f"{backup_at:%Y}" / f"{backup_at:%m}"
            / f"{target}_{stamp}.{extension}.zst")


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

    def __init__(self, handle, total: int | None, log: logging.Logger):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.written = 0
        self.total = total
        self.log = log
        self.started = self.last = time.monotonic()

    def write(self, data: bytes) -> int:
        self.handle.write(data)
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


def _sha256_of(path: Path) -> str:
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
        elif _sha256_of(final) != sha256:
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


def compress(source: Path, final: Path, log: logging.Logger) -> Artifact:
    """Compress ``source`` into the artifact ``final`` plus its ``.sha256``; stream, never overwrite.

    If ``final`` already exists with exactly the bytes this would produce (a retried task whose first
    try got that far), it is kept and reported; if it exists with other bytes, this fails.
    """
    original = source.stat().st_size
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    compressor = _compressor(original)
    try:
        with open(source, "rb") as reader, open(tmp, "xb") as handle:
            writer = _HashingWriter(handle, original, log)
            compressor.copy_stream(reader, writer, size=original, read_size=CHUNK, write_size=CHUNK)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            free = shutil.disk_usage(final.parent).free
            raise ArtifactError(
                f"No hay espacio en disco en {final.parent} para comprimir la copia ({human_bytes(original)} sin "
                f"comprimir, {human_bytes(free)} libres). Libere espacio y reintente la tarea."
            ) from err
        raise ArtifactError(f"No se pudo escribir el respaldo en {final.parent}: {err.strerror}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sha256 = writer.digest.hexdigest()
    try:
        _publish(tmp, final, sha256, log)
    finally:
        tmp.unlink(missing_ok=True)
    elapsed = time.monotonic() - writer.started
    log.info("comprimir terminó: %s -> %s (%.1f%%) en %.1f s; sha256 %s", human_bytes(original),
             human_bytes(writer.written), 100 * writer.written / max(original, 1), elapsed, sha256)
    return Artifact(final, original, final.stat().st_size, sha256, f"zstd-{ZSTD_LEVEL}")


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


def copy_compressed(argv: Sequence[str], dest: Path, *, env: Mapping[str, str], log: logging.Logger, what: str,
                    secrets: Sequence[str] = (), ok_codes: Sequence[int] = (0,),
                    explain: Callable[[str, int], str] | None = None) -> tuple[int, int, str]:
    """Run a tool and compress its output into ``dest`` as it arrives; return (original, compressed, sha256).

    For copies too big to land uncompressed on the local disk (virtual-server images): only the
    compressed result is ever written. A failure or a kill removes ``dest``.
    """
    dest.unlink(missing_ok=True)
    compressor = _compressor()
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(  # noqa: S603 - argv is built by respaldo, never by a shell
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=dict(env)
        )
        try:
            grow_pipe(proc.stdout)
            reader = _CountingReader(proc.stdout, log, what)
            with open(dest, "xb") as handle:
                writer = _HashingWriter(handle, None, log)
                compressor.copy_stream(reader, writer, read_size=CHUNK, write_size=CHUNK)
                handle.flush()
                os.fsync(handle.fileno())
            returncode = proc.wait()
        except BaseException as err:
            proc.kill()
            proc.wait()
            dest.unlink(missing_ok=True)
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                raise CopyError(f"{what}: {no_space_message(dest.parent)}") from err
            raise
        stderr.seek(0)
        error_text = stderr.read().decode("utf-8", "replace").strip()
    check_exit(what, returncode, error_text, dest, log=log, ok_codes=ok_codes, secrets=secrets, explain=explain)
    elapsed = time.monotonic() - reader.started
    log.info("%s terminó: %s copiados, %s comprimidos, en %.1f s (%s/s)", what, human_bytes(reader.count),
             human_bytes(writer.written), elapsed, human_bytes(reader.count / max(elapsed, 1e-9)))
    return reader.count, writer.written, writer.digest.hexdigest()


def place_compressed(staged: Path, final: Path, sha256: str, original_bytes: int, log: logging.Logger) -> Artifact:
    """Give an already-compressed copy its final name (same filesystem: no data is copied)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _publish(staged, final, sha256, log)
    log.info("Respaldo %s (%s, comprimido al copiar; sha256 %s)", final, human_bytes(final.stat().st_size), sha256)
    return Artifact(final, original_bytes, final.stat().st_size, sha256, f"zstd-{ZSTD_LEVEL}")


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
