"""What a restore gave back, against what the copy recorded when it was taken (its ``figures``).

- PostgreSQL: every table's rows, **exactly** (the copy counted them in the dump's own snapshot);
- MySQL/MariaDB: every table's rows between the two counts the copy took around the dump's snapshot
  (equal when nobody wrote to the table in that instant; see
  :class:`respaldo.sources.mysql.BracketCounts`), InnoDB tables only;
- files, portals' files, disk images: the number of files, folders, links and special files, the
  bytes, and the SHA-256 of each file of the copy's sample;
- manual copies: the SHA-256 and size of the delivered file.

Each comparison returns the differences as Spanish sentences (none: it matches) and the per-item
figures stored with the drill.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from respaldo.artifacts import CHUNK

#: How many differences a reason names before it only counts the rest.
SHOWN = 5


def number(value: int | None) -> str:
    """``1234567`` -> ``1.234.567`` (Spanish thousands separator)."""
    return "?" if value is None else f"{value:,}".replace(",", ".")


def summary(differences: list[str]) -> str:
    shown = "; ".join(differences[:SHOWN])
    more = len(differences) - SHOWN
    return shown + (f"; y {more} diferencia(s) más" if more > 0 else "")


def compare_postgres(recorded: dict, restored: dict[str, int]) -> tuple[list[str], dict]:
    """Exact: each table the copy counted must hold exactly as many rows once restored."""
    differences, tables = [], {}
    for name, rows in sorted(recorded.get("tablas", {}).items()):
        found = restored.get(name)
        tables[name] = {"copia": rows, "restaurada": found}
        if found is None:
            differences.append(f"falta la tabla {name} (la copia registró {number(rows)} filas)")
        elif found != rows:
            differences.append(f"{name} tiene {number(found)} filas y la copia registró {number(rows)}")
    extra = sorted(set(restored) - set(tables))
    figures = {"comparacion": "exacta", "tablas": tables}
    if extra:
        figures["sin_cifra_de_la_copia"] = extra
    return differences, figures


def compare_mysql(recorded: dict, restored: dict[str, int]) -> tuple[list[str], dict]:
    """Within the bracket: each InnoDB table's rows between the two counts taken around the dump's snapshot."""
    differences, tables = [], {}
    loose = set(recorded.get("no_transaccionales", ()))
    for name, pair in sorted(recorded.get("tablas", {}).items()):
        found = restored.get(name)
        known = [value for value in pair if value is not None]
        low, high = (min(known), max(known)) if known else (None, None)
        tables[name] = {"copia": pair, "restaurada": found}
        if name in loose:
            tables[name]["decide"] = False
            continue
        if found is None:
            differences.append(f"falta la tabla {name} (la copia registró {number(high)} filas)")
        elif low is None:
            tables[name]["decide"] = False
        elif not low <= found <= high:
            expected = number(low) if low == high else f"entre {number(low)} y {number(high)}"
            differences.append(f"{name} tiene {number(found)} filas y la copia registró {expected}")
    return differences, {"comparacion": "entre los dos conteos de la copia", "tablas": tables}


def measure_folder(root: Path, sample: Iterable[str], *, skip: Iterable[str] = ()) -> dict:
    """What a restored folder holds, counted as :class:`respaldo.integridad.TarContents` counts a tar.

    Every name is a file (hard links too), a folder, a symbolic link or a special file; bytes count each
    file's content once (hard links share it). The files of ``sample`` are read whole and hashed;
    ``skip`` holds top-level names that are not part of the comparison (a portal's database dump).
    """
    skip = set(skip)
    files = size = folders = links = special = 0
    seen: set[tuple[int, int]] = set()
    for current, dirnames, filenames in os.walk(root):
        relative = os.path.relpath(current, root)
        for name in list(dirnames) + filenames:
            if relative == "." and name in skip:
                continue
            info = os.lstat(os.path.join(current, name))
            if stat.S_ISDIR(info.st_mode):
                folders += 1
            elif stat.S_ISLNK(info.st_mode):
                links += 1
            elif stat.S_ISREG(info.st_mode):
                files += 1
                if (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    size += info.st_size
            else:
                special += 1
    hashes = {name: file_sha256(root / name) for name in sample}
    return {"archivos": files, "bytes": size, "carpetas": folders, "enlaces": links, "especiales": special,
            "muestra": hashes}


def file_sha256(path: Path) -> str | None:
    """SHA-256 of a regular file's content (a sparse file's holes read as zeros), or None if there is none."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


FOLDER_COUNTS = (("archivos", "archivos"), ("carpetas", "carpetas"), ("enlaces", "enlaces simbólicos"),
                 ("especiales", "archivos especiales"))


def compare_folder(recorded: dict, measured: dict) -> tuple[list[str], dict]:
    """Counts and bytes exactly; each sampled file's SHA-256 exactly."""
    differences = []
    figures: dict = {"comparacion": "exacta"}
    for key, label in FOLDER_COUNTS:
        figures[key] = {"copia": recorded.get(key), "restaurada": measured.get(key)}
        if key in recorded and recorded[key] != measured.get(key):
            differences.append(f"hay {number(measured.get(key))} {label} y la copia registró {number(recorded[key])}")
    figures["bytes"] = {"copia": recorded.get("bytes"), "restaurada": measured.get("bytes")}
    if "bytes" in recorded and recorded["bytes"] != measured.get("bytes"):
        differences.append(f"los archivos suman {number(measured.get('bytes'))} bytes y la copia registró "
                           f"{number(recorded['bytes'])}")
    sample = recorded.get("muestra") or {}
    wrong = []
    for name, sha256 in sorted(sample.items()):
        found = measured["muestra"].get(name)
        if found is None:
            wrong.append(name)
            differences.append(f"falta el archivo «{name}» de la muestra")
        elif found != sha256:
            wrong.append(name)
            differences.append(f"el contenido de «{name}» no es el que tenía la copia (otra suma SHA-256)")
    figures["muestra"] = {"revisados": len(sample), "distintos": wrong}
    return differences, figures


def compare_file(original_sha256: str | None, original_bytes: int | None, size: int, sha256: str
                 ) -> tuple[list[str], dict]:
    """A manual copy: the restored file must be, byte for byte, the one that was delivered."""
    differences = []
    if original_bytes is not None and size != original_bytes:
        differences.append(f"el archivo restaurado mide {number(size)} bytes y el entregado medía "
                           f"{number(original_bytes)}")
    if original_sha256 and sha256 != original_sha256:
        differences.append("el archivo restaurado no es el que se entregó (otra suma SHA-256)")
    return differences, {"comparacion": "suma SHA-256 del archivo entregado",
                         "sha256": {"copia": original_sha256, "restaurada": sha256},
                         "bytes": {"copia": original_bytes, "restaurada": size}}
