"""Restore any artifact with the standard tools, and say what came back (``respaldo restaurar``, the drills).

:func:`locate` finds the copy (an artifact's path or its register row's id) and what the register
knows of it; :func:`check_sum` proves its bytes are the ones stored (its ``.sha256`` file and the
register's sum); :func:`restore_copy` restores it by kind into destinations the caller prepared (a
new database, a new folder) and compares what came back with the figures the copy recorded when it
was taken (:mod:`.cifras`); :func:`restaurar` is the whole command.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from respaldo.artifacts import CHUNK
from respaldo.errors import RespaldoError
from respaldo.integridad import DATABASE_MEMBER, format_of
from respaldo.process import human_bytes
from respaldo.simulacro import cifras, destino, restauracion
from respaldo.simulacro.destino import MysqlServer, PgServer, RestauracionError

Say = Callable[[str], None]
#: Kinds whose copy is a database dump, and the engine that restores it.
DATABASE_KINDS = {"postgres": "postgres", "mysql": "mysql"}
KIND_LABELS = {"postgres": "base PostgreSQL", "mysql": "base MySQL/MariaDB", "files": "carpeta de archivos",
               "portal": "portal web", "vm": "servidor virtual", "manual": "copia manual"}


class UsoIncorrecto(RestauracionError):
    """The command cannot run as asked (exit code 2): a destination of the wrong sort, no drill server..."""


def _quiet(_: str) -> None:
    pass


@dataclass
class Copia:
    """An artifact to restore and what the register knows of it (``row``: its FT-GTI-004 row, if found)."""

    path: Path
    kind: str
    row: dict[str, Any] | None = None
    #: The private key file that decrypts an encrypted artifact (``.zst.age``); None for the others.
    identity: Sequence[Path] | None = None

    @property
    def figures(self) -> dict | None:
        return (self.row or {}).get("figures")

    def describe(self) -> str:
        if not self.row:
            return f"{self.path} ({KIND_LABELS.get(self.kind, self.kind)}; no figura en el registro)"
        when = self.row["backup_at"].strftime("%Y-%m-%d %H:%M:%S %Z") if self.row.get("backup_at") else "?"
        return (f"{self.path} (fila {self.row['id']} del registro: «{self.row['target']}», "
                f"{KIND_LABELS.get(self.kind, self.kind)}, copia del {when})")


def kind_of_row(row: dict[str, Any]) -> str:
    return "manual" if row.get("mechanism") == "manual" else row["kind"]


def kind_of_name(path: Path) -> str:
    """The kind an artifact holds, from its name alone (a tar may be a portal: seen once extracted)."""
    found = format_of(path.name)
    return {"postgres": "postgres", "mysql": "mysql", "tar": "files"}.get(found, "manual")


def _deleted(row: dict[str, Any]) -> str:
    """Why a copy retention deleted cannot be restored: when, and the reason on its row."""
    when = row["backup_at"].strftime("%Y-%m-%d %H:%M:%S %Z") if row.get("backup_at") else "?"
    reason = (row.get("deletion_reason") or "sin motivo registrado").removeprefix("Retención: ")
    return (f"La copia de la fila {row['id']} («{row['target']}», del {when}) fue borrada por la retención el "
            f"{row['deleted_at'].strftime('%Y-%m-%d %H:%M:%S %Z')}: {reason} Su fila sigue en el registro, pero el "
            f"archivo ya no existe. Elija otra copia: `respaldo retencion --objetivo {row['target']}` lista las que "
            "quedan.")


def locate(what: str, register_conn_id: str | None, say: Say = _quiet) -> Copia:
    """The copy ``what`` names: an artifact's path, or the id of its row in the register.

    A path is looked up in the register too (for its sum and figures); a register out of reach is
    said, not fatal, for a path. An id needs the register.
    """
    from respaldo.simulacro import registro

    if re.fullmatch(r"\d+", what.strip()) and not Path(what).exists():
        if not register_conn_id:
            raise UsoIncorrecto("Para restaurar por número de fila hace falta el registro (inventario con `register`).")
        row = registro.copy_row(register_conn_id, row_id=int(what))
        if row is None:
            raise RestauracionError(f"No hay ninguna fila {what} en el registro FT-GTI-004.")
        if row["status"] != "success" or not row.get("artifact_path"):
            raise RestauracionError(f"La fila {what} del registro («{row['target']}») no es una copia exitosa: no hay "
                                    "nada que restaurar.")
        if row.get("deleted_at"):
            raise RestauracionError(_deleted(row))
        path = Path(row["artifact_path"])
        if not path.is_file():
            raise RestauracionError(f"La copia de la fila {what} ({path}) ya no está en el disco.")
        return Copia(path, kind_of_row(row), row)
    path = Path(what).expanduser().resolve()
    if not path.is_file():
        gone = None
        if register_conn_id:
            with contextlib.suppress(RespaldoError):
                gone = registro.copy_row(register_conn_id, artifact_path=str(path))
        if gone and gone.get("deleted_at"):
            raise RestauracionError(_deleted(gone))
        raise RestauracionError(f"No existe el archivo {what}.")
    row = None
    if register_conn_id:
        try:
            row = registro.copy_row(register_conn_id, artifact_path=str(path))
        except RespaldoError as err:
            say(f"Aviso: no se pudo consultar el registro ({err}); se sigue con la suma del archivo .sha256.")
    return Copia(path, kind_of_row(row) if row else kind_of_name(path), row)


def check_sum(copia: Copia, say: Say = _quiet) -> str:
    """Read the artifact once and compare its SHA-256 with its ``.sha256`` file and the register's sum.

    :raises RestauracionError: a sum differs, or there is none to compare with.
    """
    sidecar = copia.path.with_name(copia.path.name + ".sha256")
    recorded = (copia.row or {}).get("sha256")
    expected_sidecar = None
    if sidecar.is_file():
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)\n?", sidecar.read_text(encoding="ascii", errors="replace"))
        if not match or match[2] != copia.path.name:
            raise RestauracionError(f"El archivo {sidecar.name} no trae una suma SHA-256 de {copia.path.name}.")
        expected_sidecar = match[1]
    if expected_sidecar is None and recorded is None:
        raise RestauracionError(f"{copia.path.name} no tiene su archivo {sidecar.name} ni figura en el registro: no se "
                                "puede comprobar que sea la copia que se guardó, y no se restaura.")
    digest = hashlib.sha256()
    progress = restauracion.Progress(f"comprobando la suma de {copia.path.name}", copia.path.stat().st_size, say)
    with open(copia.path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
            progress.update(handle.tell())
    sha256 = digest.hexdigest()
    if expected_sidecar is not None and sha256 != expected_sidecar:
        raise RestauracionError(f"La suma SHA-256 de {copia.path.name} no coincide con la de {sidecar.name}: el "
                                "archivo cambió o se dañó después de guardado. No se restaura.")
    if recorded is not None and sha256 != recorded:
        raise RestauracionError(f"La suma SHA-256 de {copia.path.name} no coincide con la del registro (fila "
                                f"{copia.row['id']}): el archivo cambió o se dañó después de guardado. No se restaura.")
    against = " y ".join(name for name, known in ((sidecar.name, expected_sidecar), ("el registro", recorded)) if known)
    return f"Suma SHA-256 correcta ({sha256[:16]}…), igual a la de {against}."


# --- restoring by kind ------------------------------------------------------------------------------


@dataclass
class Base:
    """A database to restore into, already created (or found empty) on ``server``."""

    server: PgServer | MysqlServer
    name: str
    created: bool = False

    @property
    def conn_id(self) -> str:
        return self.server.conn_id

    def describe(self) -> str:
        return f"«{self.name}» de {self.server.where}"


@dataclass
class Resultado:
    """What a restore gave back, and how it compares with what the copy recorded."""

    kind: str
    lines: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    restore_seconds: float = 0.0
    compare_seconds: float = 0.0
    #: The copy recorded no figures (taken before respaldo recorded them, or its counts failed).
    uncompared: list[str] = field(default_factory=list)


def _database_figures(engine: str, recorded: dict | None, base: Base, result: Resultado, label: str) -> None:
    started = time.monotonic()
    counts = base.server.count_rows(base.name)
    result.lines.append(f"{label} {base.describe()}: {len(counts)} tabla(s), {cifras.number(sum(counts.values()))} "
                        "fila(s).")
    result.lines += [f"    {table}: {cifras.number(rows)} filas" for table, rows in sorted(counts.items())]
    if not recorded or "tablas" not in recorded:
        why = (recorded or {}).get("error")
        result.uncompared.append(f"{label}: la copia no registró cuántas filas tenía cada tabla"
                                 + (f" ({why})" if why else " (es anterior a esta versión de respaldo)"))
        result.figures["tablas"] = {"restaurada": counts}
    else:
        compare = cifras.compare_postgres if engine == "postgres" else cifras.compare_mysql
        differences, figures = compare(recorded, counts)
        result.differences += differences
        result.figures.update(figures)
    result.compare_seconds += time.monotonic() - started


def _folder_figures(recorded: dict | None, folder: Path, result: Resultado, *, skip: tuple[str, ...] = (),
                    label: str = "Carpeta") -> dict:
    started = time.monotonic()
    sample = list((recorded or {}).get("muestra") or {})
    measured = cifras.measure_folder(folder, sample, skip=skip)
    result.lines.append(f"{label} {folder}: {cifras.number(measured['archivos'])} archivo(s) "
                        f"({human_bytes(measured['bytes'])}), {cifras.number(measured['carpetas'])} carpeta(s), "
                        f"{cifras.number(measured['enlaces'])} enlace(s).")
    if not recorded or "archivos" not in recorded:
        result.uncompared.append(f"{label}: la copia no registró sus archivos (es anterior a esta versión de respaldo)")
        figures = {"restaurada": {k: v for k, v in measured.items() if k != "muestra"}}
    else:
        differences, figures = cifras.compare_folder(recorded, measured)
        result.differences += differences
    result.compare_seconds += time.monotonic() - started
    return figures


def _sparse_lines(folder: Path) -> list[str]:
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        info = path.stat()
        used = info.st_blocks * 512
        if info.st_size >= 1 << 20:
            state = "dispersa: sus huecos no ocupan disco" if used < info.st_size else "ocupa todo su tamaño"
            lines.append(f"    imagen {path.relative_to(folder)}: {human_bytes(info.st_size)}, ocupa "
                         f"{human_bytes(used)} ({state})")
    return lines


def restore_copy(copia: Copia, *, folder: Path | None = None, base: Base | None = None,
                 portal_base: Callable[[str], Base] | None = None, say: Say = _quiet) -> Resultado:
    """Restore ``copia`` into ``base`` (a database kind) or ``folder`` (the rest), then compare its figures.

    For a portal, ``portal_base(engine)`` gives the database for the dump found inside (called once the
    tar is out, when the dump's engine is known). The caller prepared the destinations and removes them.
    """
    kind = copia.kind
    result = Resultado(kind)
    recorded = copia.figures
    if kind in DATABASE_KINDS:
        restore = restauracion.restore_postgres if kind == "postgres" else restauracion.restore_mysql
        say(f"Restaurando en la base nueva {base.describe()} ...")
        result.restore_seconds = restore(copia.path, base.conn_id, base.name, say=say, identity=copia.identity)
        _database_figures(kind, recorded, base, result, "Base")
        return result
    if kind == "manual":
        stored = copia.path.name.removesuffix(".age").removesuffix(".zst")
        name = Path((copia.row or {}).get("original_name") or stored).name
        dest = folder / name
        say(f"Restaurando el archivo entregado en {dest} ...")
        size, sha256, result.restore_seconds = restauracion.restore_file(copia.path, dest, say=say,
                                                                         identity=copia.identity)
        result.lines.append(f"Archivo {dest}: {human_bytes(size)}, SHA-256 {sha256}.")
        row = copia.row or {}
        if row.get("original_sha256"):
            result.differences, result.figures = cifras.compare_file(row["original_sha256"], row.get("original_bytes"),
                                                                     size, sha256)
        else:
            result.uncompared.append("el registro no trae la suma del archivo entregado")
        return result
    say(f"Restaurando en la carpeta {folder} ...")
    result.restore_seconds = restauracion.restore_tar(copia.path, folder, say=say, identity=copia.identity)
    members = [folder / f"{DATABASE_MEMBER}.{ext}" for ext in ("dump", "sql")]
    member = next((m for m in members if m.is_file() and not m.is_symlink()), None)
    if kind == "portal" or (kind == "files" and member is not None and (folder / "archivos").is_dir()):
        kind = result.kind = "portal"
        if member is None:
            raise RestauracionError(f"La copia del portal {copia.path.name} no trae su base de datos "
                                    f"({DATABASE_MEMBER}.dump o .sql).")
        engine = "postgres" if member.suffix == ".dump" else "mysql"
        files = (recorded or {}).get("archivos")
        result.figures["archivos"] = _folder_figures(files, folder, result, skip=(member.name,),
                                                     label="Archivos del portal en")
        database = portal_base(engine)
        say(f"Restaurando la base del portal en la base nueva {database.describe()} ...")
        restore = restauracion.restore_postgres if engine == "postgres" else restauracion.restore_mysql
        result.restore_seconds += restore(member, database.conn_id, database.name, compressed=False, say=say)
        inner = Resultado(kind)
        _database_figures(engine, (recorded or {}).get("base_de_datos"), database, inner, "Base del portal")
        result.lines += inner.lines
        result.differences += [f"base del portal: {d}" for d in inner.differences]
        result.uncompared += inner.uncompared
        result.compare_seconds += inner.compare_seconds
        result.figures["base_de_datos"] = inner.figures
        return result
    result.figures.update(_folder_figures(recorded, folder, result))
    if kind == "vm":
        result.lines += _sparse_lines(folder)
    return result


# --- the command ------------------------------------------------------------------------------------


def _database_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", text)[:63] or "restaurada"
    return name if re.match(r"[A-Za-z_]", name) else f"_{name}"[:63]


@dataclass
class Salida:
    """What ``respaldo restaurar`` printed (lines) and its exit code."""

    code: int
    lines: list[str]


def unlock(copia: Copia, identity: str | Path | Sequence[str | Path] | None, say: Say = _quiet) -> None:
    """For an encrypted artifact: check ``identity`` opens it (age decrypts its first chunk) and keep it on ``copia``.

    :raises UsoIncorrecto: no identity, or an unreadable file (nothing can be restored without it).
    :raises RestauracionError: the key is not one the copy was encrypted to, or the copy is not age.
    """
    from respaldo.ciclo import cifrado

    if not cifrado.is_encrypted(copia.path):
        return
    try:
        key = cifrado.check_identity(identity, copia.path)
    except cifrado.CifradoError as err:
        raise UsoIncorrecto(str(err)) from err
    problem = cifrado.opens(copia.path, key)
    if problem:
        raise RestauracionError(f"{problem} No se restauró nada.")
    say(f"Copia cifrada con age: la clave privada {', '.join(map(str, key))} la descifra.")
    copia.identity = key


def restaurar(what: str, destination: str, *, inventory: Any | None, base_name: str | None = None,
              say: Say = _quiet, identity: str | Path | Sequence[str | Path] | None = None) -> Salida:
    """The command ``respaldo restaurar``: check, restore into a new destination, say what came back.

    Exit code 0 restored (and matching the copy's figures when it recorded some), 1 not restored or
    not matching, 2 the command cannot run as asked. Whatever it created is removed if the restore
    fails. An encrypted copy needs ``identity``, its private key file.
    """
    register_conn_id = inventory.register.conn_id if inventory is not None else None
    copia = locate(what, register_conn_id, say)
    say(f"Copia: {copia.describe()}")
    say(check_sum(copia, say))
    unlock(copia, identity, say)
    with contextlib.ExitStack() as stack:
        created: list[Callable[[], None]] = []  # undo, newest first, if the restore fails

        def database(engine: str, text: str) -> Base:
            uri = destino.parse_uri(text)
            if uri is not None:
                if uri.engine != engine:
                    raise UsoIncorrecto(f"La copia es de una base {engine} y el URI de destino es de {uri.engine}.")
                conn_id = stack.enter_context(destino.uri_connection(uri))
                name = uri.database
            else:
                if "/" in text:
                    raise UsoIncorrecto(f"Para una base de datos, el destino es el nombre de una base nueva del "
                                        f"servidor de simulacros o un URI {engine}://…/NOMBRE, no una carpeta "
                                        f"({text}).")
                conn_id = _drill_server(inventory, engine)
                name = destino.check_name(text)
            server = destino.server(engine, conn_id)
            made = destino.prepare_database(server, name)
            if made:
                created.append(lambda: server.drop(name))
            return Base(server, name, made)

        try:
            if copia.kind in DATABASE_KINDS:
                result = restore_copy(copia, base=database(DATABASE_KINDS[copia.kind], destination), say=say)
            else:
                if destino.parse_uri(destination) is not None:
                    raise UsoIncorrecto("Esta copia se restaura en una carpeta: indique una ruta como destino, no un "
                                        "URI.")
                folder = Path(destination).expanduser().absolute()
                if destino.prepare_folder(folder):
                    created.append(lambda: destino.remove_tree(folder))
                else:
                    created.append(lambda: _empty(folder))
                result = restore_copy(copia, folder=folder, say=say,
                                      portal_base=lambda engine: database(engine, base_name or _database_name(
                                          folder.name)))
        except BaseException as err:
            undone = []
            for undo in reversed(created):
                with contextlib.suppress(Exception):
                    undo()
                    undone.append(undo)
            if isinstance(err, RespaldoError) and undone:
                raise type(err)(f"{err} Se borró lo que se alcanzó a restaurar.") from err
            raise
    lines = [*result.lines, f"Restaurado en {result.restore_seconds:.1f} s."]
    if result.uncompared:
        lines += [f"Sin comparar: {text}." for text in result.uncompared]
    if result.differences:
        lines.append("ATENCIÓN: lo restaurado no coincide con lo que registró la copia: "
                     f"{cifras.summary(result.differences)}.")
        return Salida(1, lines)
    if not result.uncompared:
        lines.append("Coincide con lo que registró la copia al tomarla.")
    return Salida(0, lines)


def _empty(folder: Path) -> None:
    """Empty a folder the person gave (it was empty): the half-restored content goes, the folder stays."""
    for child in folder.iterdir():
        destino.remove_tree(child)


def _drill_server(inventory: Any | None, engine: str) -> str:
    key = "conn_id" if engine == "postgres" else "mysql_conn_id"
    conn_id = getattr(inventory.drills, key) if inventory is not None else None
    if not conn_id:
        label, scheme = ("PostgreSQL", "postgresql") if engine == "postgres" else ("MySQL/MariaDB", "mysql")
        raise UsoIncorrecto(f"No hay servidor de simulacros {label} en el inventario (drills.{key}): indique el "
                            f"destino como URI {scheme}://usuario@servidor:puerto/NOMBRE.")
    return conn_id
