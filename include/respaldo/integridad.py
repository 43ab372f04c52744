"""Proving a copy is whole: read it once, to the last byte, and let the standard tools judge it.

A backup that cannot be restored is worse than none, and the ways a copy breaks are quiet: a disk
that filled, a transfer cut short, a bit that flipped on a tired disk. Each check here exists because
something weaker let such a copy through:

- zstd's own stream readers end quietly at a truncated frame, so the frame structure (block headers,
  last-block flag, the 4-byte content checksum, anything after the last frame) is walked here as the
  bytes pass, and the decompressor verifies the checksum of every frame it completes;
- the decompressed size is compared with what the copy wrote, when that is known;
- each format is read to its end by its own tool: ``pg_restore -f /dev/null`` reads every block of a
  PostgreSQL custom archive (``pg_restore --list`` alone reads only the table of contents), GNU
  ``tar --list`` reads a tar to its end (and a tar cut at a member boundary, which tar accepts, is
  caught by the missing end-of-archive marker), a mariadb-dump file must end with its
  ``-- Dump completed`` line; a portal's tar gets the check of the database dump it carries;
- a stored artifact's bytes must match its ``.sha256`` file and, when given, the register's sum.

All of it happens in one streaming pass of 1 MiB reads, in three stages that overlap on a machine
with several cores: one thread reads, hashes and walks the stored bytes, one decompresses, one feeds
the checking tools through pipes with a large buffer (the tools run on their own). At most a few
chunks wait between stages: memory stays flat whatever the size of the copy.

:func:`verify_artifact` checks a stored artifact (the ``respaldo verificar`` command builds on it);
:func:`verify_staged` checks a copy in staging before it has a ``.sha256`` (task ``verificar_fecha``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import heapq
import os
import posixpath
import queue
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import zstandard

from respaldo.artifacts import CHUNK, grow_pipe
from respaldo.errors import RespaldoError

Format = Literal["postgres", "mysql", "tar", "zstd"]

#: The member of a portal's tar that holds its database (``.dump`` or ``.sql``).
DATABASE_MEMBER = "base_de_datos"
#: mariadb-dump's first and last lines; the last one is written only once the dump is complete.
MYSQL_HEADER = re.compile(rb"^-- (MariaDB|MySQL) dump \d", re.MULTILINE)
MYSQL_FOOTER = re.compile(r"^-- Dump completed on (\d{4}-\d{2}-\d{2}) +(\d{1,2}):(\d{2}):(\d{2})$")
#: How much of each end of a SQL dump is kept to find its header and its footer.
EDGE_BYTES = 4096
#: pg_restore --list prints the archive's creation time in its header (in TZ, UTC here).
PG_CREATED = re.compile(r"^;\s+Archive created at (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC$", re.MULTILINE)
#: A ``TABLE DATA`` line of ``pg_restore --list``: "<dump id>; 0 <table oid> TABLE DATA <schema> <name> <owner>".
PG_TABLE_DATA = re.compile(r"^\d+; \d+ (\d+) TABLE DATA ", re.MULTILINE)
#: Largest table of contents kept from ``pg_restore --list`` (about 70 bytes a line).
PG_LISTING_LIMIT = 64 << 20

_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK = 0xFFFFFFF0
_SKIPPABLE_MAGIC = 0x184D2A50
_MAX_BLOCK = 128 * 1024
_TAR_BLOCK = 512
#: Longest pax or GNU long-name header kept to read a member's name; longer ones are skipped unread.
_TAR_META_LIMIT = 1 << 20


@dataclass(frozen=True)
class Verification:
    """What reading a copy to its end found.

    ``reason`` is the first problem as one Spanish sentence naming the file (``None`` when intact);
    ``problems`` holds every problem found: the compression's (then the format is not judged, its tool
    saw a cut stream) or the format's, then the size, then the sums. ``created_at`` is the creation
    date the dump itself carries (pg_dump's header, mariadb-dump's last line, or the database inside a
    portal's tar), in UTC; ``None`` for other formats or a damaged copy.

    What the pass also learnt about the content, for the figures a restore drill compares against:
    ``tables`` holds the OIDs of the tables whose rows a PostgreSQL archive carries (its ``TABLE DATA``
    entries; the database inside a portal's tar too); ``contents`` what a tar holds (see
    :class:`TarContents`). Both ``None`` when the format has none or the copy is damaged.
    """

    path: Path
    intact: bool
    reason: str | None
    problems: tuple[str, ...]
    format: Format
    stored_bytes: int
    sha256: str | None
    decompressed_bytes: int
    created_at: dt.datetime | None
    database_member: str | None
    seconds: float
    tables: frozenset[int] | None = None
    contents: dict | None = None
    #: An age-encrypted artifact (``.zst.age``); ``decrypted`` when an identity let the pass read inside it.
    encrypted: bool = False
    decrypted: bool = False
    #: What was checked, when it is less than everything (an encrypted artifact read without its key).
    checked: str | None = None


def format_of(name: str) -> Format:
    """The format an artifact or staged copy holds, from its name (``.dump[.zst][.age]``, ``.sql``, ``.tar``)."""
    base = name.removesuffix(".age").removesuffix(".zst")
    for suffix, kind in ((".dump", "postgres"), (".sql", "mysql"), (".tar", "tar")):
        if base.endswith(suffix):
            return kind  # type: ignore[return-value]
    return "zstd"


def verify_artifact(path: Path, *, expected_sha256: str | None = None, original_bytes: int | None = None,
                    check_format: bool = True, identity: str | Path | Sequence[str | Path] | None = None
                    ) -> Verification:
    """Check a stored artifact: its ``.sha256`` file, the register's sum, zstd to the end, its format.

    An encrypted artifact (``.zst.age``) is decrypted with ``identity`` (private key files, read by
    the ``age`` command alone) and then checked the same way. Without ``identity``, or when none of
    them is the copy's key, only what needs no key is checked: the sums of the stored bytes and the
    age structure (``checked`` says so); a key that does not fit never makes a copy «dañada».

    :param path: the artifact (``….<ext>.zst``); its ``.sha256`` file must be beside it.
    :param expected_sha256: the sum recorded in the register, if known.
    :param original_bytes: the uncompressed size recorded when the copy was taken, if known.
    :param check_format: False for manual copies, whose format is whatever a person delivered: only
        the compression and the sums are checked then.
    :param identity: the private key file that decrypts an encrypted artifact.
    :raises RespaldoError: a checking tool (pg_restore, tar, age) is not installed or the identity file
        cannot be read, so the artifact could not be judged either way.
    """
    path = Path(path)
    if path.name.endswith(".age") and identity is None:
        return _verify_sealed(path, expected_sha256=expected_sha256, check_format=check_format)
    return _verify(path, sidecar=True, expected_sha256=expected_sha256, expected_from="la del registro",
                   original_bytes=original_bytes, check_format=check_format, identity=identity)


def verify_staged(path: Path, *, expected_sha256: str | None = None, original_bytes: int | None = None,
                  check_format: bool = True) -> Verification:
    """Check a copy still in staging (no ``.sha256`` yet), compressed (``.zst``) or not.

    ``expected_sha256`` and ``original_bytes`` are what ``copia`` computed while writing a copy it
    compressed on the fly: the stored bytes must still be those, and decompress to that many bytes.
    """
    return _verify(Path(path), sidecar=False, expected_sha256=expected_sha256,
                   expected_from="la calculada al tomar la copia", original_bytes=original_bytes,
                   check_format=check_format)


def _verify_sealed(path: Path, *, expected_sha256: str | None, check_format: bool) -> Verification:
    """An encrypted artifact without its key: the sums of the stored bytes and the age structure."""
    from respaldo.ciclo import cifrado

    started = time.monotonic()
    name = path.name
    kind: Format = format_of(name) if check_format else "zstd"
    if not path.is_file():
        return _result(path, started, [f"La copia {name} no existe."], kind, 0, None, 0, _Outcome())
    sums: list[str] = []
    sidecar_sha = _read_sidecar(path, sums)
    digest = hashlib.sha256()
    stored = 0
    try:
        with open(path, "rb") as handle:
            while block := handle.read(CHUNK):
                stored += len(block)
                digest.update(block)
    except OSError as err:
        return _result(path, started, [f"No se pudo leer la copia {name}: {err.strerror}."], kind, stored, None, 0,
                       _Outcome())
    found = cifrado.structure(path)
    problems = [found.problem] if found.problem else []
    sha256 = digest.hexdigest()
    _compare_sums(name, sha256, sidecar_sha, expected_sha256, "la del registro", sums)
    checked = (f"cifrada, sin la clave privada: suma SHA-256 del archivo cifrado ({name}.sha256"
               f"{' y registro' if expected_sha256 else ''}) y estructura age"
               f"{f' ({found.describe()})' if not found.problem else ''}; su contenido no se descifró "
               "(con --identidad se lee completo)")
    result = _result(path, started, problems + sums, kind, stored, sha256, 0, _Outcome())
    return dataclasses.replace(result, encrypted=True, checked=checked)


def _compare_sums(name: str, sha256: str, sidecar_sha: str | None, expected_sha256: str | None, expected_from: str,
                  sums: list[str]) -> None:
    if sidecar_sha is not None and sidecar_sha != sha256:
        sums.append(f"La suma SHA-256 de {name} no coincide con la de {name}.sha256: el archivo cambió o se "
                    "dañó después de guardado.")
    if expected_sha256 is not None and expected_sha256 != sha256:
        sums.append(f"La suma SHA-256 de {name} no coincide con {expected_from}: el archivo cambió o se dañó "
                    "después de escrito.")


def _verify(path: Path, *, sidecar: bool, expected_sha256: str | None, expected_from: str,
            original_bytes: int | None, check_format: bool,
            identity: str | Path | Sequence[str | Path] | None = None) -> Verification:
    started = time.monotonic()
    name = path.name
    encrypted = name.endswith(".age")
    compressed = name.removesuffix(".age").endswith(".zst")
    kind: Format = format_of(name) if check_format else "zstd"
    if not path.is_file():
        return _result(path, started, [f"La copia {name} no existe."], kind, 0, None, 0, _Outcome())
    sums: list[str] = []  # checksum problems come last: the others say better what is wrong
    sidecar_sha = _read_sidecar(path, sums) if sidecar else None
    digest = hashlib.sha256() if (sidecar or expected_sha256) else None
    frames = _FrameWalker(name) if compressed else None
    problems: list[str] = []
    decompressed = 0
    decode_error = age_problem = None
    if encrypted:
        from respaldo.ciclo import cifrado

        identity = cifrado.check_identity(identity, path)
    check = _checker(kind, name)
    stored = feeder = decrypting = None
    try:
        with open(path, "rb") as handle:
            if encrypted:  # age decrypts; the stored (encrypted) bytes are hashed as they are fed to it
                decrypting = cifrado.Descifrado(handle, identity, digest, name=name, env=_tool_env())
            stored = _ReadAhead(_StoredBytes(decrypting or handle, None if encrypted else digest, frames))
            feeder = _Feeder(check)
            try:
                if compressed:
                    with zstandard.ZstdDecompressor().stream_reader(stored, read_size=CHUNK, read_across_frames=True,
                                                                    closefd=False) as reader:
                        while chunk := reader.read(CHUNK):
                            decompressed += len(chunk)
                            feeder.write(chunk)
                else:
                    while chunk := stored.read(CHUNK):
                        decompressed += len(chunk)
                        feeder.write(chunk)
            except zstandard.ZstdError as err:
                decode_error = _zstd_problem(name, err)
            feeder.close()
            stored.finish()
            age_problem = decrypting.finish() if decrypting is not None else None
    except BaseException as err:
        for stage in (stored, decrypting, check, feeder):  # the tools first: a blocked feeder is then released
            if stage is not None:
                stage.abort()
        if isinstance(err, OSError) and not isinstance(err, BrokenPipeError):
            return _result(path, started, [f"No se pudo leer la copia {name}: {err.strerror}."], kind, 0, None,
                           decompressed, _Outcome())
        raise
    if decrypting is not None and decrypting.unmatched:  # not this copy's key: the copy may well be sound
        sealed = _verify_sealed(path, expected_sha256=expected_sha256, check_format=check_format)
        return dataclasses.replace(sealed, checked=f"{age_problem} Sin su clave: " + sealed.checked)
    if age_problem:  # what age saw (a cut or altered chunk) explains what follows
        problems.append(age_problem)
    elif frames is not None:  # the walker saw where the stream stopped being zstd: that explains the rest
        if frames.problem or not decode_error:
            frames.finish(problems)
        else:
            problems.append(decode_error)
    outcome = check.finish()  # after broken compression the format's tool saw a cut stream: its verdict adds nothing
    if not problems and decompressed == 0:
        problems.append(f"La copia {name} está vacía.")
    elif not problems:
        problems.extend(outcome.problems)
    if original_bytes is not None and compressed and decompressed != original_bytes and not problems:
        problems.append(f"La copia {name} no tiene el tamaño que se escribió: descomprimida da {decompressed} bytes "
                        f"y al copiar se escribieron {original_bytes}.")
    sha256 = digest.hexdigest() if digest is not None else None
    if sha256 is not None:
        _compare_sums(name, sha256, sidecar_sha, expected_sha256, expected_from, sums)
    count = decrypting.count if decrypting is not None else stored.source.count
    result = _result(path, started, problems + sums, kind, count, sha256, decompressed, outcome)
    return dataclasses.replace(result, encrypted=True, decrypted=True) if encrypted else result


def _result(path: Path, started: float, problems: list[str], kind: Format, stored: int, sha256: str | None,
            decompressed: int, outcome: _Outcome) -> Verification:
    return Verification(path=path, intact=not problems, reason=problems[0] if problems else None,
                        problems=tuple(problems), format=kind, stored_bytes=stored, sha256=sha256,
                        decompressed_bytes=decompressed, created_at=None if problems else outcome.created_at,
                        database_member=outcome.member, seconds=time.monotonic() - started,
                        tables=None if problems else outcome.tables,
                        contents=None if problems else outcome.contents)


def _read_sidecar(path: Path, problems: list[str]) -> str | None:
    """The sum in ``<artifact>.sha256`` (the line ``sha256sum -c`` reads), or None with the problem noted."""
    sidecar = path.with_name(path.name + ".sha256")
    try:
        text = sidecar.read_text(encoding="ascii")
    except FileNotFoundError:
        problems.append(f"Al respaldo {path.name} le falta su archivo de suma {sidecar.name}.")
        return None
    except (OSError, UnicodeDecodeError):
        problems.append(f"No se pudo leer el archivo de suma {sidecar.name}.")
        return None
    match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)\n?", text)
    if not match or match[2] != path.name:
        problems.append(f"El archivo {sidecar.name} no trae una suma SHA-256 de {path.name}.")
        return None
    return match[1]


def _zstd_problem(name: str, err: zstandard.ZstdError) -> str:
    if "checksum" in str(err):
        return f"La copia {name} está dañada: la suma de verificación interna no coincide."
    return f"La copia {name} está dañada: zstd no puede descomprimirla ({err})."


class _StoredBytes:
    """The stored file as the decompressor reads it: counted, hashed and its zstd frames walked.

    Only bytes the walker has seen belong to zstd frames reach the decompressor: once it finds
    something else (or a stream ends in the middle of a frame's magic number), the decompressor gets
    no more, finishes the frames before that point (verifying their checksums) and the walker says
    what is wrong.
    """

    def __init__(self, handle, digest, frames: _FrameWalker | None):
        self.handle = handle
        self.digest = digest
        self.frames = frames
        self.count = 0
        self.held = b""  # read, but not yet known to belong to a frame (at most a magic number's 3 bytes)
        self.released = 0

    def read(self, size: int = -1) -> bytes:
        while True:
            data = self.handle.read(CHUNK if size is None or size < 0 else size)
            self.count += len(data)
            if self.digest is not None:
                self.digest.update(data)
            if self.frames is None:
                return data
            self.frames.feed(data)
            waiting = self.held + data if self.held else data
            release = max(self.frames.valid_until - self.released, 0)
            self.released += release
            self.held = b"" if self.frames.problem else waiting[release:]
            out = waiting[:release]  # the very chunk read, uncopied, when it is all frames
            if out or not data or self.frames.problem:
                return out

    def drain(self) -> None:
        """Hash what the decompressor did not read (it stopped at damage): the sum covers the whole file."""
        if self.digest is None:
            return
        while block := self.handle.read(CHUNK):
            self.count += len(block)
            self.digest.update(block)


class _ReadAhead:
    """Reads the stored file ahead in a thread of its own: hashing and walking the frames happen there.

    File reads, hashlib and zstd all release the GIL, so on a machine with two cores hashing and
    decompressing overlap instead of adding up. At most a few chunks wait in between (flat memory).
    Once the decompressor stops (damage), the rest of the file is still hashed for the sum.
    """

    def __init__(self, source: _StoredBytes):
        self.source = source
        self.chunks: queue.Queue[bytes] = queue.Queue(maxsize=4)
        self.forwarding = True
        self.abandoned = False
        self.ended = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="respaldo-verificar-lectura", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while self.forwarding:
                data = self.source.read(CHUNK)
                self._put(data)
                if not data:
                    break
            if not self.abandoned:
                self.source.drain()
        except BaseException as err:  # handed to the reading thread, which raises it
            self.error = err
            self._put(b"")

    def _put(self, data: bytes) -> None:
        while self.forwarding:
            try:
                self.chunks.put(data, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        """The next stored bytes that belong to zstd frames; b"" at their end (as a file would)."""
        if self.ended:
            return b""
        data = self.chunks.get()
        if self.error is not None:
            raise self.error
        self.ended = not data
        return data

    def finish(self) -> None:
        """Stop handing bytes over, let the sum cover the rest of the file, and wait for the thread."""
        self.forwarding = False
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        self.abandoned = True
        self.forwarding = False
        self.thread.join()


class _Feeder:
    """Hands the decompressed bytes to the format check in a thread of its own.

    Writing into the checking tools' pipes then overlaps with decompressing the next chunk. A
    failure of the check (a tool that could not start) is raised in the decompressing thread.
    """

    def __init__(self, check):
        self.check = check
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="respaldo-verificar-formato", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            if self.error is None:
                try:
                    self.check.write(chunk)
                except BaseException as err:  # handed to the decompressing thread, which raises it
                    self.error = err

    def write(self, chunk: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.chunks.put(chunk)

    def close(self) -> None:
        self.chunks.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        self.error = self.error or RuntimeError("verificación interrumpida")
        self.chunks.put(None)
        self.thread.join()


class _FrameWalker:
    """Follows the zstd frame format (RFC 8878) over the stored bytes, block header by block header.

    It costs one small parse per compressed block (up to 128 KiB of data each) and knows what the
    decompressor does not tell: whether the stream ended at the end of a frame, checksum included,
    and whether anything but zstd frames follows.
    """

    def __init__(self, name: str):
        self.name = name
        self.pending = bytearray()
        self.need = 4
        self.state = "magic"
        self.skip = 0
        self.offset = 0
        self.valid_until = 0
        self.frames = 0
        self.checksum_left = False
        self.problem: str | None = None

    def feed(self, data: bytes) -> None:
        """Take the next stored bytes; ``valid_until`` then says how far the stream is zstd frames."""
        if self.problem:
            return
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self.skip:
                step = min(self.skip, end - pos)
                self.skip -= step
                pos += step
                continue
            take = min(self.need - len(self.pending), end - pos)
            self.pending += view[pos:pos + take]
            pos += take
            if len(self.pending) == self.need:
                header = bytes(self.pending)
                self.pending.clear()
                if not self._parse(header):
                    self.valid_until = self.offset + pos - len(header)
                    return
        self.offset += end
        # Bytes of a magic number not yet complete may be the start of something that is not zstd.
        self.valid_until = self.offset - (len(self.pending) if self.state == "magic" else 0)

    def _parse(self, header: bytes) -> bool:
        if self.state == "magic":
            magic = int.from_bytes(header, "little")
            if magic == _ZSTD_MAGIC:
                self.frames += 1
                self.state, self.need = "descriptor", 1
            elif magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
                self.state, self.need = "skippable", 4
            else:
                self.problem = (f"La copia {self.name} tiene datos sobrantes después del final del último bloque "
                                "comprimido." if self.frames else f"La copia {self.name} no es un archivo zstd.")
                return False
        elif self.state == "skippable":
            self.skip = int.from_bytes(header, "little")
            self.state, self.need = "magic", 4
        elif self.state == "descriptor":
            descriptor = header[0]
            if descriptor & 0x08:
                self.problem = f"La copia {self.name} está dañada: un encabezado de zstd no es válido."
                return False
            single = (descriptor >> 5) & 1
            self.checksum_left = bool((descriptor >> 2) & 1)
            self.skip = ((0 if single else 1) + (0, 1, 2, 4)[descriptor & 3]
                         + ((1 if single else 0), 2, 4, 8)[descriptor >> 6])
            self.state, self.need = "block", 3
        elif self.state == "block":
            value = int.from_bytes(header, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3 or size > _MAX_BLOCK:
                self.problem = f"La copia {self.name} está dañada: un bloque comprimido no es válido."
                return False
            self.skip = 1 if kind == 1 else size
            if last:
                self.skip += 4 if self.checksum_left else 0
                self.state, self.need = "magic", 4
        return True

    def finish(self, problems: list[str]) -> None:
        """After the last stored byte: note what is wrong with how the stream ended, if anything."""
        cut = f"La copia {self.name} está truncada: termina antes del final del último bloque comprimido."
        if self.problem:
            problems.append(self.problem)
        elif self.frames == 0:
            problems.append(f"La copia {self.name} no es un archivo zstd." if self.pending else
                            f"La copia {self.name} está vacía: no trae ningún bloque comprimido.")
        elif self.state != "magic":
            problems.append(cut)
        elif self.pending:  # fewer than 4 bytes after the last frame: too short to be another one
            problems.append(f"La copia {self.name} tiene datos sobrantes después del final del último bloque "
                            "comprimido.")
        elif self.skip and self.checksum_left and self.skip <= 4:
            problems.append(f"La copia {self.name} está truncada: le faltan los últimos bytes (la suma de "
                            "verificación interna del último bloque comprimido).")
        elif self.skip:
            problems.append(cut)


# --- format checks: each gets the decompressed bytes in order, then says what it found ---------------


@dataclass(frozen=True)
class _Outcome:
    problems: tuple[str, ...] = ()
    created_at: dt.datetime | None = None
    member: str | None = None
    tables: frozenset[int] | None = None
    contents: dict | None = None


class _NoCheck:
    def write(self, data: bytes) -> None:
        pass

    def finish(self) -> _Outcome:
        return _Outcome()

    def abort(self) -> None:
        pass


def _checker(kind: Format, name: str):
    if kind == "postgres":
        return _PgDumpCheck(name)
    if kind == "mysql":
        return _SqlDumpCheck(name)
    if kind == "tar":
        return _TarCheck(name)
    return _NoCheck()


def _tool_env() -> dict[str, str]:
    """No secret of the worker's; messages in English so their key line is recognised; times in UTC."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}


def _key_line(text: str) -> str:
    """The line of a tool's error text that says what happened (not "exiting now")."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if "not recoverable" not in line and "Exiting with failure" not in line]
    return ((useful or lines or [""])[0])[:300]


class _Tool:
    """A checking tool fed through a pipe; its exit code and error text are its verdict.

    A tool may stop reading once it has what it needs (``pg_restore --list`` after the table of
    contents): the pipe is then closed and the pass goes on for the other checks.
    """

    def __init__(self, argv: list[str], *, keep_output: bool = False):
        self.errors = tempfile.TemporaryFile()
        self.output = tempfile.TemporaryFile() if keep_output else None
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed argv
                argv, stdin=subprocess.PIPE, stdout=self.output or subprocess.DEVNULL, stderr=self.errors,
                env=_tool_env(),
            )
        except FileNotFoundError as err:
            self.errors.close()
            if self.output is not None:
                self.output.close()
            raise RespaldoError(f"No está instalado «{argv[0]}» en esta máquina: sin él no se puede verificar la "
                                "copia.") from err
        grow_pipe(self.proc.stdin)
        self.reading = True

    def write(self, data: bytes | memoryview) -> None:
        if self.reading:
            try:
                self.proc.stdin.write(data)
            except BrokenPipeError:
                self.reading = False

    def finish(self, output_limit: int = 64 * 1024) -> tuple[int, str, str]:
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        returncode = self.proc.wait()
        self.errors.seek(0)
        errors = self.errors.read(64 * 1024).decode("utf-8", "replace")
        self.errors.close()
        output = ""
        if self.output is not None:
            self.output.seek(0)
            output = self.output.read(output_limit).decode("utf-8", "replace")
            self.output.close()
        return returncode, output, errors

    def abort(self) -> None:
        self.proc.kill()
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        self.proc.wait()
        self.errors.close()
        if self.output is not None:
            self.output.close()


class _PgDumpCheck:
    """A PostgreSQL custom archive: read whole by ``pg_restore -f /dev/null``, dated by ``--list``.

    Writing the SQL script to /dev/null makes pg_restore read every data block, so a dump cut short
    or damaged inside its data fails here; ``--list`` stops after the table of contents, whose header
    carries the date pg_dump stamped.
    """

    def __init__(self, name: str):
        self.name = name
        self.listing = _Tool(["pg_restore", "--list"], keep_output=True)
        try:
            self.full = _Tool(["pg_restore", "--file=/dev/null"])
        except BaseException:
            self.listing.abort()
            raise

    def write(self, data: bytes | memoryview) -> None:
        self.listing.write(data)
        self.full.write(data)

    def finish(self) -> _Outcome:
        list_code, listing, list_errors = self.listing.finish(output_limit=PG_LISTING_LIMIT)
        full_code, _, full_errors = self.full.finish()
        for code, errors in ((full_code, full_errors), (list_code, list_errors)):
            if code != 0:
                line = _key_line(errors)
                if "end of file" in errors:
                    return _Outcome((f"La copia {self.name} está truncada: el archivo de pg_dump termina antes de "
                                     f"tiempo ({line}).",))
                return _Outcome((f"La copia {self.name} no es un archivo de pg_dump completo y legible "
                                 f"({line or f'pg_restore terminó con código {code}'}).",))
        match = PG_CREATED.search(listing)
        created = (dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC) if match else None)
        return _Outcome(created_at=created, tables=frozenset(int(oid) for oid in PG_TABLE_DATA.findall(listing)))

    def abort(self) -> None:
        self.listing.abort()
        self.full.abort()


class _SqlDumpCheck:
    """A mariadb-dump/mysqldump file: its header first, its completion line last.

    mariadb-dump writes ``-- Dump completed on …`` only after the last row, so a dump without it
    stopped before its end. Only the edges are kept, so memory stays flat.
    """

    def __init__(self, name: str):
        self.name = name
        self.head = bytearray()
        self.tail = b""

    def write(self, data: bytes | memoryview) -> None:
        if len(self.head) < EDGE_BYTES:
            self.head += data[: EDGE_BYTES - len(self.head)]
        self.tail = (self.tail + bytes(data[-EDGE_BYTES:]))[-EDGE_BYTES:]

    def finish(self) -> _Outcome:
        if not MYSQL_HEADER.search(self.head):
            return _Outcome((f"La copia {self.name} no es un volcado de mariadb-dump o mysqldump: no empieza con "
                             "su encabezado «-- MariaDB dump».",))
        last = self.tail.decode("utf-8", "replace").rstrip("\n").rsplit("\n", 1)[-1].strip()
        if not last.startswith("-- Dump completed"):
            return _Outcome((f"La copia {self.name} está incompleta o truncada: le falta la última línea «-- Dump "
                             "completed on …» que mariadb-dump escribe al terminar.",))
        match = MYSQL_FOOTER.match(last)
        if not match:  # complete, but written without --dump-date: the source says what that means
            return _Outcome()
        day, hour, minute, second = match.groups()
        try:
            stamp = dt.datetime.strptime(f"{day} {int(hour):02d}:{minute}:{second}", "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return _Outcome((f"La copia {self.name} trae una fecha de creación ilegible: «{last}».",))
        return _Outcome(created_at=stamp.replace(tzinfo=dt.UTC))

    def abort(self) -> None:
        pass


class _TarCheck:
    """A tar archive: GNU ``tar --list`` reads it to its end while its headers are followed here.

    Following the headers finds what tar accepts silently (an archive cut exactly between two members
    has no end-of-archive marker) and the database dump inside a portal's tar, whose bytes are handed
    to that dump's own check.
    """

    def __init__(self, name: str):
        self.name = name
        self.tool = _Tool(["tar", "--list", "--file=-"])
        self.pending = bytearray()
        self.state = "header"
        self.need = _TAR_BLOCK
        self.skip = 0
        self.meta_kind = ""
        self.pax: dict[str, str] = {}
        self.long_name: str | None = None
        self.routed = 0
        self.inner = None
        self.member: str | None = None
        self.ended = False
        self.contents = TarContents()
        self.hashing: _MemberDigest | None = None
        self.hash_left = 0

    def write(self, data: bytes | memoryview) -> None:
        self.tool.write(data)
        if self.ended:
            return
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end and not self.ended:
            if self.routed:
                step = min(self.routed, end - pos)
                self.inner.write(view[pos:pos + step])
                self.routed -= step
                pos += step
                continue
            if self.hash_left:
                step = min(self.hash_left, end - pos)
                self.hashing.write(view[pos:pos + step])
                self.hash_left -= step
                pos += step
                if not self.hash_left:
                    self.contents.done(self.hashing)
                    self.hashing = None
                continue
            if self.skip:
                step = min(self.skip, end - pos)
                self.skip -= step
                pos += step
                continue
            take = min(self.need - len(self.pending), end - pos)
            self.pending += view[pos:pos + take]
            pos += take
            if len(self.pending) == self.need:
                block = bytes(self.pending)
                self.pending.clear()
                self._parse(block)

    def _parse(self, block: bytes) -> None:
        if self.state == "meta":
            self._read_meta(block)
            self.state, self.need = "header", _TAR_BLOCK
            return
        if not any(block):
            self.ended = True
            return
        typeflag = block[156:157]
        size = _tar_size(block[124:136])
        padding = -size % _TAR_BLOCK
        if typeflag in (b"x", b"g", b"L", b"K"):
            if 0 < size <= _TAR_META_LIMIT:
                self.meta_kind = typeflag.decode()
                self.state, self.need, self.skip = "meta", size + padding, 0
            else:
                self.skip = size + padding
            return
        if "size" in self.pax:
            with contextlib.suppress(ValueError):
                size = int(self.pax["size"])
                padding = -size % _TAR_BLOCK
        # A sparse file (GNU format 1.0 inside pax) is stored under a made-up name; its own is in the pax records.
        name = self.pax.get("GNU.sparse.name") or self.pax.get("path") or self.long_name or _tar_name(block)
        sparse = _sparse_size(self.pax)
        self.pax, self.long_name = {}, None
        if typeflag in (b"1", b"2", b"3", b"4", b"5", b"6"):
            size = padding = 0
        stem, _, extension = name.partition(".")
        if (stem == DATABASE_MEMBER and extension in ("dump", "sql") and self.inner is None
                and typeflag in (b"0", b"\0", b"7")):
            self.member = name
            shown = f"{name} (dentro de {self.name})"
            self.inner = _PgDumpCheck(shown) if extension == "dump" else _SqlDumpCheck(shown)
            self.routed = size
            self.skip = padding
            return
        digest = self.contents.member(name, typeflag, size, sparse)
        if digest is not None and size:
            self.hashing, self.hash_left, self.skip = digest, size, padding
        else:
            if digest is not None:
                self.contents.done(digest)
            self.skip = size + padding

    def _read_meta(self, data: bytes) -> None:
        """A GNU long name, or the pax records that override the next member's name and size."""
        if self.meta_kind == "L":
            self.long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif self.meta_kind == "x":
            self.pax = _pax_records(data)

    def finish(self) -> _Outcome:
        code, _, errors = self.tool.finish()
        inner = self.inner.finish() if self.inner is not None else _Outcome()
        if code != 0:
            line = _key_line(errors) or f"tar terminó con código {code}"
            if "Unexpected EOF" in errors:
                problem = f"La copia {self.name} está truncada: el archivo tar termina antes de tiempo ({line})."
            else:
                problem = f"La copia {self.name} no es un archivo tar legible ({line})."
            return _Outcome((problem, *inner.problems), member=self.member)
        if not self.ended:
            return _Outcome((f"La copia {self.name} está truncada: el archivo tar termina sin su marca de fin.",
                             *inner.problems), member=self.member)
        return _Outcome(inner.problems, inner.created_at, self.member, inner.tables, self.contents.figures())

    def abort(self) -> None:
        self.tool.abort()
        if self.inner is not None:
            self.inner.abort()


# --- what a tar holds: the figures a restore drill compares with the folder it restored ---------------

#: How many files a tar's figures hash whole: those whose names hash lowest (a "bottom-k" sample). The
#: choice depends only on the set of names, never on the order the archive lists them in, so a drill
#: knows which files to hash in the folder it restored.
SAMPLE_FILES = 32
_ZEROS = bytes(CHUNK)
#: A sparse map longer than this is taken for damage (the file is then counted, not hashed).
_SPARSE_SEGMENTS_LIMIT = 1_000_000


def member_name(name: str) -> str:
    """A tar member's path inside the folder it restores into (``./a/./b/`` is ``a/b``; the folder itself is "")."""
    return posixpath.normpath("/" + name).lstrip("/")


def sample_key(name: str) -> int:
    """Where a file name falls in the sample's order: the first 8 bytes of its SHA-256."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()[:8], "big")


def _sparse_size(pax: dict[str, str]) -> tuple[int, bool] | None:
    """A sparse member's real size, and whether its map is GNU's format 1.0 (inside the data); None if not sparse."""
    for key, readable in (("GNU.sparse.realsize", pax.get("GNU.sparse.major") == "1"), ("GNU.sparse.size", False)):
        if key in pax:
            try:
                return int(pax[key]), readable
            except ValueError:
                return None
    return None


class _MemberDigest:
    """The SHA-256 of a member's content as it restores: a sparse file's holes count as the zeros they read as.

    A sparse member in GNU's format 1.0 starts with its map (decimal numbers, one per line: how many
    data segments, then each one's offset and size, padded to 512 bytes), then the segments' bytes.
    """

    def __init__(self, name: str, key: int, sparse: tuple[int, bool] | None):
        self.name = name
        self.key = key
        self.digest = hashlib.sha256()
        self.real_size = sparse[0] if sparse else None
        self.head: bytearray | None = bytearray() if sparse else None
        self.segments: list[tuple[int, int]] = []
        self.position = 0  # in the restored file
        self.left = 0  # data bytes still due in the current segment
        self.map_skip = 0
        self.broken = False

    def write(self, data: memoryview) -> None:
        if self.broken:
            return
        if self.head is None:
            if self.real_size is None:
                self.digest.update(data)
            else:
                self._segments(data)
            return
        self.head += data
        parsed = _sparse_map(self.head)
        if parsed is False:
            self.broken = True
        elif parsed is not None:
            self.segments, used = parsed
            self.segments.reverse()
            rest, self.head = bytes(self.head[used:]), None
            self._segments(memoryview(rest))

    def _segments(self, data: memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if not self.left:
                if not self.segments:
                    return  # padding after the last segment
                offset, self.left = self.segments.pop()
                self._zeros(offset - self.position)
                continue
            step = min(self.left, end - pos)
            self.digest.update(data[pos:pos + step])
            self.left -= step
            self.position += step
            pos += step

    def _zeros(self, count: int) -> None:
        self.position += max(count, 0)
        while count > 0:
            step = min(count, len(_ZEROS))
            self.digest.update(_ZEROS if step == len(_ZEROS) else memoryview(_ZEROS)[:step])
            count -= step

    def hexdigest(self) -> str | None:
        if self.broken or self.head is not None:
            return None
        if self.real_size is not None:
            while self.segments:  # segments of no data (the map's last entry marks the end)
                offset, size = self.segments.pop()
                self._zeros(offset - self.position)
                if size:
                    return None
            self._zeros(self.real_size - self.position)
        return self.digest.hexdigest()


def _sparse_map(head: bytearray) -> tuple[list[tuple[int, int]], int] | None | bool:
    """(segments, bytes the map takes) once ``head`` holds the whole map; None if not yet; False if unreadable."""
    lines = head.count(b"\n")
    if not lines:
        return False if len(head) > _TAR_BLOCK else None
    parts = bytes(head).split(b"\n")
    try:
        count = int(parts[0])
        if count > _SPARSE_SEGMENTS_LIMIT:
            return False
        if count < 0 or lines < 1 + 2 * count:
            return None if count >= 0 and len(head) < (2 * count + 1) * 42 + _TAR_BLOCK else False
        numbers = [int(part) for part in parts[1:1 + 2 * count]]
    except ValueError:
        return False
    used = sum(len(part) + 1 for part in parts[:1 + 2 * count])
    return list(zip(numbers[::2], numbers[1::2], strict=True)), used + (-used % _TAR_BLOCK)


class TarContents:
    """What a tar holds, from its headers as they stream by: what a drill finds again in the restored folder.

    ``figures()`` gives ``archivos`` (regular files, hard links included: each is a name on disk),
    ``bytes`` (their content, a sparse file at its full size), ``carpetas`` (those the archive lists
    and those tar creates to hold a member), ``enlaces`` (symbolic), ``especiales`` (devices, FIFOs)
    and ``muestra``: the SHA-256 of the content of up to
    :data:`SAMPLE_FILES` files, the ones whose names hash lowest, keyed by their path in the folder.
    Only those files are hashed, as their bytes pass on their way to ``tar --list``: no second read.
    """

    def __init__(self):
        self.files = self.bytes = self.links = self.special = 0
        self.folders: set[str] = set()
        self.sample: list[tuple[int, str, str]] = []  # a heap: (-key, name, sha256), largest key on top

    def member(self, name: str, typeflag: bytes, size: int, sparse: tuple[int, bool] | None) -> _MemberDigest | None:
        """Count one member; return the digest to feed its content to, when it belongs to the sample so far."""
        name = member_name(name)
        if not name:
            return None
        parent = posixpath.dirname(name)
        while parent and parent not in self.folders:
            self.folders.add(parent)
            parent = posixpath.dirname(parent)
        if typeflag == b"5":
            self.folders.add(name)
        elif typeflag == b"2":
            self.links += 1
        elif typeflag == b"1":
            self.files += 1
        elif typeflag in (b"3", b"4", b"6"):
            self.special += 1
        elif typeflag in (b"0", b"\0", b"7", b"S"):
            self.files += 1
            self.bytes += sparse[0] if sparse else size
            key = sample_key(name)
            hashable = typeflag != b"S" and (sparse is None or sparse[1])
            if hashable and (len(self.sample) < SAMPLE_FILES or key < -self.sample[0][0]):
                return _MemberDigest(name, key, sparse)
        return None

    def done(self, digest: _MemberDigest) -> None:
        sha256 = digest.hexdigest()
        if sha256 is None:
            return
        heapq.heappush(self.sample, (-digest.key, digest.name, sha256))
        if len(self.sample) > SAMPLE_FILES:
            heapq.heappop(self.sample)

    def figures(self) -> dict:
        return {"archivos": self.files, "bytes": self.bytes, "carpetas": len(self.folders), "enlaces": self.links,
                "especiales": self.special, "muestra": {name: sha for _, name, sha in sorted(self.sample)}}


def _tar_size(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # base-256, for members of 8 GiB and more
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        return 0


def _tar_name(block: bytes) -> str:
    name = block[0:100].split(b"\0", 1)[0]
    if block[257:262] == b"ustar":
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "replace")


def _pax_records(data: bytes) -> dict[str, str]:
    """``"<length> <key>=<value>\\n"`` records of a pax extended header."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space]) if space > pos else 0
        except ValueError:
            break
        if length <= 0:
            break
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return records
