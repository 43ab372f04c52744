"""Encryption of the artifacts with age: the server keeps only public recipients.

An encrypted artifact is ``….<ext>.zst.age``: the zstd stream respaldo always wrote, encrypted to the
inventory's ``encryption.recipients`` (X25519 ``age1…`` keys or ``ssh-ed25519`` public keys) in the
age v1 format, so Debian's ``age -d -i KEY FILE | zstd -d`` restores it anywhere. Its ``.sha256``
covers the stored (encrypted) bytes, so ``sha256sum -c`` still works without the key.

Both ways run Debian's ``age`` CLI, the tool the README gives people:

- encrypting (:class:`Cifrador`): the zstd stream is written into ``age -r …`` as it is produced and a
  thread hashes and writes what age gives back, so the sum of the stored bytes is taken as they are
  written and the encryption runs on another core, overlapping the dump. age's ChaCha20-Poly1305 is
  assembly; measured here, Go's age encrypted 190 MB in 0.4 s where ``pyrage`` (rage in Python) took
  1.1 s in the same process as the copy: see bench/RESULTS.md, section «cifrado»;
- decrypting (``respaldo verificar --identidad``, ``respaldo restaurar --identidad``, the drills): the
  private key file is read by age alone, never by respaldo's own process, and every identity file
  age accepts works.

Without the private key a stored artifact can still be judged: its sums (the ``.sha256`` file and the
register), which catch any cut or altered byte, and the age structure (:func:`structure`: the
header, its recipient stanzas, a payload length age could have written). Only a holder of the key
can read the zstd stream and the format inside; before encrypting, ``verificar_fecha`` read that
plaintext whole, as it does for every copy, and ``comprimir`` checks that what it encrypted is
exactly the verified stream.

The recipients are checked when the inventory is read (:func:`check_recipient`), in Python alone
(no child process: DAG files must parse fast): the bech32 checksum of an ``age1…`` key, the blob of an
``ssh-ed25519`` key. A private key (``AGE-SECRET-KEY-1…``, an OpenSSH private key) is refused loudly
and never repeated in a message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from respaldo.errors import RespaldoError

#: The suffix an encrypted artifact adds after ``.zst``.
SUFFIX = ".age"
#: How the register's ``compression`` column says a copy was encrypted (after the zstd level).
LABEL = "age"
#: What begins an age private key; found anywhere in an inventory, it is refused.
SECRET_PREFIX = "AGE-SECRET-KEY-"
AGE_HEADER_LINE = b"age-encryption.org/v1\n"
#: age's payload: a 16-byte nonce, then chunks of 64 KiB of plaintext, each followed by its 16-byte tag.
NONCE_BYTES = 16
CHUNK_PLAIN = 64 * 1024
TAG_BYTES = 16
CHUNK_SEALED = CHUNK_PLAIN + TAG_BYTES
#: The longest header read when checking an artifact's structure (a few recipients take a few hundred bytes).
HEADER_LIMIT = 64 * 1024

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_SSH_ED25519 = b"ssh-ed25519"


class CifradoError(RespaldoError):
    """An encrypted artifact could not be written, read or decrypted; the message says why."""


def _looks_secret(value: str) -> bool:
    upper = value.strip().upper()
    return upper.startswith(SECRET_PREFIX) or "PRIVATE KEY" in upper


SECRET_MESSAGE = (
    "una clave privada nunca va en el inventario (quien lea el inventario podría "
    "descifrar todas las copias). Ponga aquí la clave pública (la línea «# public key: age1…» que imprime "
    "age-keygen, o la línea «ssh-ed25519 AAAA…» del archivo .pub), guarde la privada fuera del servidor como "
    "dice el README y, como ya quedó escrita en este archivo, dela por expuesta: cree un par nuevo"
)


def _bech32_polymod(values: list[int]) -> int:
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for bit, generator in enumerate(_BECH32_GENERATOR):
            if (top >> bit) & 1:
                check ^= generator
    return check


def _x25519_problem(value: str) -> str | None:
    """Why ``value`` is not an age X25519 recipient (bech32 ``age1…`` of a 32-byte key), or None."""
    if value != value.lower():
        return "una clave pública age se escribe en minúsculas, como la imprime age-keygen"
    data_part = value[4:]
    if len(data_part) != 58:
        return (f"una clave pública age tiene 62 caracteres («age1» y 58 más) y esta tiene {len(value)}: revise que "
                "se copió completa")
    wrong = sorted({c for c in data_part if c not in _BECH32})
    if wrong:
        return (f"tiene caracteres que no pueden ir en una clave pública age ({', '.join(wrong)}; nunca llevan "
                "b, i, o ni 1 después de «age1»): revise que se copió bien")
    digits = [_BECH32.index(c) for c in data_part]
    if _bech32_polymod([ord(c) >> 5 for c in "age"] + [0] + [ord(c) & 31 for c in "age"] + digits) != 1:
        return "su suma de control no cuadra: tiene un carácter cambiado; cópiela de nuevo del archivo de age-keygen"
    bits = "".join(f"{d:05b}" for d in digits[:-6])
    if len(bits) // 8 != 32 or int(bits[256:] or "0", 2):
        return "no contiene una clave de 32 bytes"
    return None


def _ssh_problem(value: str) -> str | None:
    """Why ``value`` is not an ``ssh-ed25519 AAAA… [comment]`` public key line, or None."""
    parts = value.split()
    if len(parts) < 2:
        return "a una clave «ssh-ed25519» le falta su parte en base64 (la línea completa del archivo .pub)"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return "la parte en base64 de la clave ssh-ed25519 no es válida: revise que se copió completa"
    name_length = int.from_bytes(blob[:4], "big")
    name = blob[4:4 + name_length]
    key_length = int.from_bytes(blob[4 + name_length:8 + name_length], "big")
    if name != _SSH_ED25519 or key_length != 32 or len(blob) != 8 + name_length + 32:
        return "la parte en base64 no es una clave pública ssh-ed25519: revise que se copió completa"
    return None


def check_recipient(value: str) -> str:
    """An age recipient as the inventory gives it, checked; raises ValueError with the problem in Spanish.

    The value itself is never repeated in the message: if it is a private key, repeating it would
    copy the secret into logs and the import-error page.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError("destinatario vacío: indique una clave pública age («age1…») o «ssh-ed25519 AAAA…»")
    if _looks_secret(value):
        raise ValueError("esto es una clave PRIVADA, no una pública: " + SECRET_MESSAGE)
    value = value.strip()
    if value.lower().startswith("age1"):
        problem = _x25519_problem(value)
    elif value.startswith("ssh-ed25519"):
        problem = _ssh_problem(value)
    elif value.split()[0] in ("ssh-rsa", "ecdsa-sha2-nistp256", "ssh-dss", "sk-ssh-ed25519@openssh.com"):
        problem = (f"las claves «{value.split()[0]}» no se aceptan aquí: use una clave age («age1…», de age-keygen) "
                   "o una ssh-ed25519")
    else:
        problem = ("no es un destinatario de age: se espera una clave pública «age1…» (de age-keygen) o una línea "
                   "«ssh-ed25519 AAAA…» (de un archivo .pub)")
    if problem:
        raise ValueError(problem)
    return value


Recipient = Annotated[str, AfterValidator(check_recipient)]


class Encryption(BaseModel):
    """``encryption``: the artifacts are encrypted with age to these public recipients."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recipients: Annotated[
        list[Recipient],
        Field(min_length=1, description="Claves públicas age a las que se cifran las copias: «age1…» (de "
              "`age-keygen`) o «ssh-ed25519 AAAA…». Cualquiera de sus claves privadas descifra la copia. Nunca la "
              "clave privada (AGE-SECRET-KEY-…).",
              examples=[["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]]),
    ]
    drill_identity: Annotated[
        str | None,
        Field(description="Simulacros: ruta (absoluta) del archivo de clave privada en la máquina que hace los "
              "simulacros, para descifrar la copia de prueba. Es una ruta, nunca la clave. Sin ella, el simulacro "
              "de un objetivo cifrado queda «fallido» diciendo que no se pudo descifrar.",
              examples=["/etc/respaldo/simulacro.age"]),
    ] = None

    @field_validator("drill_identity")
    @classmethod
    def _a_path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if _looks_secret(value):
            raise ValueError("aquí va la RUTA del archivo de la clave privada, no la clave: " + SECRET_MESSAGE)
        if not PurePosixPath(value).is_absolute():
            raise ValueError(f"la ruta del archivo de clave para simulacros debe ser absoluta, no «{value}»")
        return value


def secret_lines(text: str) -> list[int]:
    """1-based numbers of the lines of an inventory's text that hold an age private key (comments too)."""
    return [number for number, line in enumerate(text.splitlines(), 1) if SECRET_PREFIX in line.upper()]


def is_encrypted(path: str | Path) -> bool:
    return str(path).endswith(SUFFIX)


# --- encrypting (Debian's age CLI, fed as a writer) ---------------------------------------------------


def encrypt_argv(recipients: Sequence[str]) -> list[str]:
    """``age -r R…``: encrypts its standard input to its standard output; recipients are public, argv is fine."""
    return ["age", "--encrypt", *(arg for recipient in recipients for arg in ("--recipient", recipient))]


def _grow(handle) -> None:
    """A 1 MiB pipe (F_SETPIPE_SZ): with the default 64 KiB the two sides wait on each other far more often."""
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(handle.fileno(), 1031, 1 << 20)


class Cifrador:
    """``age -r …`` as a file-like writer: what is written is encrypted; ``out`` gets the age file as it comes.

    age runs in its own process (its assembly ChaCha20-Poly1305 on another core); a thread hands its
    output to ``out`` (which hashes and writes it: the caller's). Memory stays flat: at most a pipe's
    worth waits on either side. ``close`` waits for the last chunk and raises :class:`CifradoError`
    with age's reason if it failed; ``abort`` stops everything (the caller removes ``out``'s file).
    """

    def __init__(self, out, recipients: Sequence[str], *, env: dict[str, str] | None = None):
        from respaldo.hooks.base import minimal_env

        self.out = out
        self.errors = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed argv; recipients are public keys
                encrypt_argv(recipients), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors,
                env=env or minimal_env())
        except FileNotFoundError as err:
            self.errors.close()
            raise CifradoError("No está instalado «age» en esta máquina: sin él no se pueden cifrar las copias "
                               "(apt-get install age).") from err
        _grow(self.proc.stdin)
        _grow(self.proc.stdout)
        self.written = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drain, name="respaldo-cifrar", daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        try:
            while block := self.proc.stdout.read(1 << 20):
                self.out.write(block)
        except BaseException as err:  # raised to the writing thread by close()
            self.error = err
            with contextlib.suppress(OSError):
                while self.proc.stdout.read(1 << 20):  # keep age from blocking on a full pipe
                    pass

    def write(self, data) -> int:
        try:
            self.proc.stdin.write(data)
        except BrokenPipeError:
            self.close()  # raises with age's reason
            raise
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: ``close`` hands age the end of its input."""

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        code = self.proc.wait()
        self.thread.join()
        self.proc.stdout.close()
        self.errors.seek(0)
        said = self.errors.read().decode("utf-8", "replace").strip()
        self.errors.close()
        if self.error is not None:
            raise self.error
        if code != 0:
            raise CifradoError(f"age no pudo cifrar la copia (código {code}): {said[:300] or 'sin mensaje'}")

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        self.proc.wait()
        self.thread.join()
        with contextlib.suppress(OSError):
            self.errors.close()


# --- the structure of a stored age file, checked without the key -----------------------------------


@dataclass(frozen=True)
class Estructura:
    """What an age file's header and length say: its recipient stanzas and how many payload chunks follow."""

    problem: str | None
    stanzas: tuple[str, ...] = ()
    chunks: int = 0

    def describe(self) -> str:
        kinds = ", ".join(sorted(set(self.stanzas)))
        return f"age v1 para {len(self.stanzas)} destinatario(s) ({kinds}), {self.chunks} bloque(s) cifrado(s)"


def structure(path: Path) -> Estructura:
    """Check an age file's header (version line, recipient stanzas, MAC line) and its payload's length.

    Without the private key this is what can be judged: that the file is an age v1 file, for whom, and
    that its payload's length is one age can write (a cut leaving less than a chunk's tag shows). Most
    cuts leave what looks like a shorter last chunk: those, and any altered byte, show only in the
    sums, which :mod:`respaldo.integridad` checks beside this.
    """
    name = path.name
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(HEADER_LIMIT)
    except OSError as err:
        return Estructura(f"No se pudo leer la copia cifrada {name}: {err.strerror}.")
    if not head.startswith(AGE_HEADER_LINE):
        return Estructura(f"La copia {name} no es un archivo cifrado con age (no empieza con su encabezado).")
    pos = len(AGE_HEADER_LINE)
    stanzas: list[str] = []
    while True:
        end = head.find(b"\n", pos)
        if end < 0:
            return Estructura(f"La copia cifrada {name} está truncada o dañada: su encabezado age no termina.")
        line = head[pos:end]
        pos = end + 1
        if line.startswith(b"--- "):
            if not re.fullmatch(rb"[A-Za-z0-9+/]{43}", line[4:]):
                return Estructura(f"La copia cifrada {name} está dañada: el sello (MAC) de su encabezado age no es "
                                  "válido.")
            break
        if not line.startswith(b"-> ") or len(line) < 4:
            return Estructura(f"La copia cifrada {name} está dañada: una línea de su encabezado age no es válida.")
        kind = line[3:].split(b" ", 1)[0].decode("ascii", "replace")
        if not kind.endswith("-grease"):  # rage adds a random stanza of no meaning, so parsers stay lenient
            stanzas.append(kind)
        while True:  # the stanza's body: base64 lines of 64 characters, ended by a shorter one
            end = head.find(b"\n", pos)
            if end < 0:
                return Estructura(f"La copia cifrada {name} está truncada o dañada: su encabezado age no termina.")
            body = head[pos:end]
            pos = end + 1
            if len(body) > 64 or not re.fullmatch(rb"[A-Za-z0-9+/]*", body):
                return Estructura(f"La copia cifrada {name} está dañada: el encabezado age de un destinatario no es "
                                  "válido.")
            if len(body) < 64:
                break
    if not stanzas:
        return Estructura(f"La copia cifrada {name} está dañada: su encabezado age no nombra ningún destinatario.")
    sealed = size - pos - NONCE_BYTES
    chunks = -(-sealed // CHUNK_SEALED) if sealed > 0 else 0
    last = sealed - (chunks - 1) * CHUNK_SEALED if chunks else 0
    if sealed <= TAG_BYTES or last <= TAG_BYTES:
        return Estructura(f"La copia cifrada {name} está truncada: su contenido cifrado termina a medias (age guarda "
                          f"bloques de 64 KiB y este archivo de {size} bytes no cierra en uno).",
                          tuple(stanzas), chunks)
    return Estructura(None, tuple(stanzas), chunks)


def check_written(path: Path, sha256: str, size: int) -> tuple[str | None, str]:
    """Re-read an encrypted copy just written: (problem or None, what was checked).

    Its bytes must be the ones hashed while age wrote them, and its age structure whole. ``verificar_fecha``
    runs this in a thread beside its read of the plaintext (hashing releases the GIL): the check costs
    no extra wall time on a machine with two cores.
    """
    import hashlib

    name = path.name
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
            read = handle.tell()
    except OSError as err:
        return f"No se pudo releer la copia cifrada {name}: {err.strerror}.", ""
    if read != size or digest.hexdigest() != sha256:
        return (f"La copia cifrada {name} no es la que se escribió ({read} bytes, {size} al escribirla, o su suma "
                "SHA-256 cambió): el disco de preparación falla o alguien la tocó.", "")
    found = structure(path)
    if found.problem:
        return found.problem, ""
    return None, f"suma SHA-256 igual a la calculada al cifrar y {found.describe()}"


# --- decrypting (Debian's age CLI) --------------------------------------------------------------------


def check_identity(identity: str | Path | Sequence[str | Path] | None, artifact: Path) -> list[Path]:
    """The identity files to decrypt ``artifact`` with; a clear error when none was given or one is unreadable."""
    if identity is None or (not isinstance(identity, (str, Path)) and not identity):
        raise CifradoError(
            f"La copia {artifact.name} está cifrada con age: para leerla hace falta el archivo de la clave privada. "
            "Indíquelo con --identidad ARCHIVO (el que creó age-keygen, o la llave privada ssh-ed25519)."
        )
    found = []
    for item in [identity] if isinstance(identity, (str, Path)) else identity:
        path = Path(item)
        if not path.is_file():
            raise CifradoError(f"No existe el archivo de clave privada {path} (--identidad); revise la ruta.")
        try:
            with open(path, "rb"):
                pass
        except OSError as err:
            raise CifradoError(f"No se puede leer el archivo de clave privada {path}: {err.strerror}.") from err
        found.append(path)
    return found


def _shown(identities: Sequence[Path]) -> str:
    return ", ".join(str(path) for path in identities)


def decrypt_argv(identities: Sequence[Path]) -> list[str]:
    """``age -d -i IDENTITY…``: decrypts its standard input to its standard output (identities are paths)."""
    return ["age", "--decrypt", *(arg for path in identities for arg in ("--identity", str(path)))]


def unmatched(text: str) -> bool:
    """Whether age said none of the identities is a recipient of the file (the file itself may be fine)."""
    return "no identity matched" in text.lower()


def explain(text: str, identities: Sequence[Path], artifact: str) -> str:
    """age's error text in the office's words."""
    lower = text.lower()
    identity = _shown(identities)
    if unmatched(text):
        return (f"la clave privada {identity} no es ninguna de aquellas a las que se cifró {artifact}: use el "
                "archivo de clave que corresponde a los destinatarios del inventario")
    if "failed to read" in lower and "identit" in lower or "no identities" in lower or "malformed secret key" in lower:
        return f"el archivo {identity} no es una clave privada que age entienda ({text.strip()[:200]})"
    if "passphrase" in lower:
        return (f"la clave privada {identity} está protegida con frase de paso: respaldo no puede escribirla; use una "
                "clave sin frase de paso en una máquina segura, o restaure a mano con age")
    if "header" in lower:
        return f"{artifact} no es un archivo age legible o su encabezado está dañado ({text.strip()[:200]})"
    return f"age no pudo descifrar {artifact} hasta el final: la copia está dañada o truncada ({text.strip()[:200]})"


def opens(artifact: Path, identity: Sequence[Path]) -> str | None:
    """Whether ``identity`` decrypts ``artifact``: age must give its first plaintext bytes; the problem, or None.

    Cheap (one 64 KiB chunk): a wrong key is said before a restore creates anything.
    """
    from respaldo.hooks.base import minimal_env

    with open(artifact, "rb") as handle, tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(decrypt_argv(identity), stdin=handle,  # noqa: S603 - fixed argv
                                    stdout=subprocess.PIPE, stderr=errors, env=minimal_env())
        except FileNotFoundError:
            return (f"No está instalado «age» en esta máquina: sin él no se puede descifrar {artifact.name} "
                    "(apt-get install age).")
        try:
            first = proc.stdout.read(1)
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        if first:
            return None
        errors.seek(0)
        said = errors.read().decode("utf-8", "replace")
        return f"No se pudo descifrar {artifact.name}: {explain(said, identity, artifact.name)}."


class Descifrado:
    """Reads an age file's plaintext through ``age -d``, while the stored (encrypted) bytes are hashed.

    A thread reads the stored file, hashes it and feeds age; ``read`` returns what age decrypted.
    ``finish`` waits for both and raises :class:`CifradoError` with age's reason if it failed. The
    private key file is opened by age alone.
    """

    def __init__(self, handle, identity: Sequence[Path], digest, *, name: str, env: dict[str, str]):
        self.handle = handle
        self.digest = digest
        self.name = name
        self.identity = identity
        self.count = 0
        self.unmatched = False
        self.errors = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed argv; the identity is a path, not a secret
                decrypt_argv(identity), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, env=env)
        except FileNotFoundError as err:
            self.errors.close()
            raise CifradoError("No está instalado «age» en esta máquina: sin él no se puede descifrar la copia "
                               f"{name} (apt-get install age).") from err
        self.feed_error: BaseException | None = None
        self.thread = threading.Thread(target=self._feed, name="respaldo-descifrar", daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        try:
            while block := self.handle.read(1 << 20):
                self.count += len(block)
                if self.digest is not None:
                    self.digest.update(block)
                with contextlib.suppress(BrokenPipeError):  # age stopped (wrong key, damage): keep hashing
                    if self.proc.stdin and not self.proc.stdin.closed:
                        self.proc.stdin.write(block)
        except BaseException as err:
            self.feed_error = err
        finally:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def read(self, size: int = -1) -> bytes:
        return self.proc.stdout.read(size if size and size > 0 else 1 << 20)

    def drain(self) -> None:
        """Let the feeding thread hash the rest of the stored file (the reader stopped early)."""
        with contextlib.suppress(OSError):
            while self.proc.stdout.read(1 << 20):
                pass
        self.thread.join()

    def finish(self) -> str | None:
        """Wait for age; its failure as a sentence, or None when it decrypted to the end (the last chunk's tag)."""
        self.drain()
        code = self.proc.wait()
        self.proc.stdout.close()
        self.errors.seek(0)
        text = self.errors.read().decode("utf-8", "replace")
        self.errors.close()
        if self.feed_error is not None:
            raise self.feed_error
        if code != 0:
            self.unmatched = unmatched(text)
            return f"No se pudo descifrar la copia {self.name}: {explain(text, self.identity, self.name)}."
        return None

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.thread.join()
        self.errors.close()
