"""Folders of files, local and over a real sshd: names, links, empty folders, modes and mtimes survive."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import random
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from test_backup_postgres import staged_files, states

from devtools.servers import SSH_TEST_USER


def make_tree(root: Path) -> Path:
    """A portal-like folder with everything a file copy can get wrong."""
    (root / "html" / "imágenes").mkdir(parents=True)
    (root / "html" / "vacía").mkdir()
    (root / "uploads" / "año 2026").mkdir(parents=True)
    (root / "html" / "index.php").write_text("<?php echo 'Gobernación del Putumayo'; ?>\n")
    (root / "html" / "imágenes" / "escudo ñandú.svg").write_bytes(os.urandom(20000))
    (root / "uploads" / "año 2026" / "Resolución 001 de enero.pdf").write_bytes(os.urandom(50000))
    (root / "uploads" / "privado.txt").write_text("solo el dueño\n")
    (root / "uploads" / "privado.txt").chmod(0o600)
    (root / "html" / "cron.sh").write_text("#!/bin/sh\necho hola\n")
    (root / "html" / "cron.sh").chmod(0o750)
    (root / "html" / "actual").symlink_to("imágenes/escudo ñandú.svg")
    (root / "uploads" / "temporal.tmp").write_text("no copiar\n")
    (root / "html" / "vacía").chmod(0o700)
    for number, path in enumerate(sorted(root.rglob("*"))):
        os.utime(path, ns=(1_600_000_000_123_456_789 + number * 86_400_000_000_000,) * 2, follow_symlinks=False)
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything a restore must give back, per relative path."""
    result = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
        content = os.readlink(path) if kind == "link" else path.read_bytes() if kind == "file" else None
        mode = None if kind == "link" else stat.S_IMODE(info.st_mode)
        result[str(path.relative_to(root))] = (kind, mode, info.st_mtime_ns, content)
    return result


@pytest.fixture
def tree(sshd):
    """The folder to copy, owned by the remote account (as a portal's files are on a web server)."""
    base = Path(tempfile.mkdtemp(prefix="respaldo-arbol-"))
    base.chmod(0o755)
    source = make_tree(base / "portal")
    user = pwd.getpwnam(SSH_TEST_USER)
    for path in [source, *source.rglob("*")]:
        os.lchown(path, user.pw_uid, user.pw_gid)
    yield source
    shutil.rmtree(base)


def restore_tar(artifact: Path, dest: Path) -> Path:
    dest.mkdir()
    subprocess.run(f"zstd -dc '{artifact}' | tar -x -C '{dest}'", shell=True, check=True)
    return dest


FILES = {"id": "portal_archivos", "kind": "files", "frequency": "diario", "include": ["html", "uploads"],
         "exclude": ["*.tmp"]}


@pytest.mark.parametrize("conn_id", [None, "ssh_pruebas", "ssh_clave"], ids=["local", "ssh-llave", "ssh-clave"])
def test_a_folder_round_trips_with_names_links_modes_and_mtimes(backups, sshd, tree, tmp_path, conn_id,
                                                                register_rows):
    target = {**FILES, "path": str(tree)} | ({"conn_id": conn_id} if conn_id else {})
    backups.write([target])
    run = backups.run("respaldo_diario")

    assert states(run)["portal_archivos.registrar"] == "success"
    [row] = register_rows(target="portal_archivos", run_id=run.run_id)
    assert row["status"] == "success" and row["kind"] == "files"
    artifact = Path(row["artifact_path"])
    assert artifact.name.endswith(".tar.zst") and artifact.parent.parent.parent.name == "portal_archivos"
    restored = restore_tar(artifact, tmp_path / "restaurado")
    expected = {k: v for k, v in snapshot(tree).items() if not k.endswith(".tmp")}
    assert "uploads/año 2026/Resolución 001 de enero.pdf" in expected and "html/vacía" in expected
    assert snapshot(restored) == expected
    assert staged_files(backups.root) == []


@pytest.mark.parametrize(("conn_id", "reason"), [
    ("ssh_llave_ajena", "no es la registrada en la conexión (host_key)"),
    ("ssh_caido", "no se pudo conectar con respaldo_prueba@127.0.0.1"),
    ("ssh_clave_mala", "rechazó el usuario o la llave/clave"),
], ids=["llave-del-servidor-equivocada", "servidor-inalcanzable", "clave-equivocada"])
def test_an_ssh_problem_is_a_failed_row_an_email_and_nothing_on_disk(backups, sshd, smtp, tree, conn_id, reason,
                                                                     register_rows):
    backups.write([{**FILES, "path": str(tree), "conn_id": conn_id}])
    run = backups.run("respaldo_diario")

    [row] = register_rows(target="portal_archivos", run_id=run.run_id)
    assert row["status"] == "failed" and row["step"] == "copia"
    assert reason in row["error"], row["error"]
    assert [p for p in backups.root.rglob("*") if p.is_file()] == []
    mail = smtp.wait_for(lambda m: run.run_id in m.get_body(("html",)).get_content())
    assert "«portal_archivos» en el paso «copia»" in mail["Subject"]
    assert sshd.password not in mail.as_string() and "PRIVATE KEY" not in mail.as_string()


@pytest.mark.parametrize("conn_id", [None, "ssh_pruebas"], ids=["local", "ssh"])
def test_a_missing_folder_names_it(backups, sshd, tree, conn_id, register_rows):
    backups.write([{**FILES, "path": str(tree), "include": ["html", "no_existe"]}
                   | ({"conn_id": conn_id} if conn_id else {})])
    run = backups.run("respaldo_diario")
    [row] = register_rows(target="portal_archivos", run_id=run.run_id)
    assert row["status"] == "failed" and "no_existe" in row["error"] and "No such file" in row["error"]
    assert [p for p in backups.root.rglob("*") if p.is_file()] == []


@contextlib.contextmanager
def cut_ssh_once_staged(root: Path, sshd, more_than: int):
    """While the block runs, kill the sshd sessions once a staged copy passes ``more_than`` bytes."""
    cut: dict = {}

    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            staged = [p for p in staged_files(root) if p.stat().st_size > more_than]
            if staged:
                cut["at"] = staged[0].stat().st_size
                for pid in sshd.session_pids():
                    os.kill(pid, 9)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield cut
    finally:
        watcher.join()


@contextlib.contextmanager
def writing_into(path: Path, span: int, interval: float = 0.002):
    """While the block runs, something keeps writing 4 KiB pieces inside the first ``span`` bytes of ``path``.

    The size never changes, only the content (and so the modification time): the way a running
    virtual machine writes into its disk, or a person saves a document in a share.
    """
    stop = threading.Event()
    writes: list[int] = []

    def write() -> None:
        with open(path, "r+b", buffering=0) as handle:
            while not stop.is_set():
                offset = random.randrange(0, span - 4096)
                handle.seek(offset)
                handle.write(os.urandom(4096))
                writes.append(offset)
                time.sleep(interval)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        yield writes
    finally:
        stop.set()
        writer.join()


class Collected(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_file_that_changes_during_the_copy_is_kept_and_named_in_a_warning(tmp_path):
    """A document saved while tar reads it is ordinary for a share: the copy counts, the log names the file."""
    from respaldo.sources.files import FilesSource, FilesTarget

    tree = make_tree(tmp_path / "portal")
    busy = tree / "uploads" / "año 2026" / "acta en edición.odt"
    with open(busy, "wb") as handle:
        handle.truncate(128 << 20)
    warnings = Collected()
    logger = logging.getLogger("prueba.archivos_en_uso")
    logger.addHandler(warnings)
    target = FilesTarget.model_validate({**FILES, "path": str(tree), "mechanism": "automatic", "responsible": "x"})
    try:
        with writing_into(busy, 128 << 20) as writes:
            result = FilesSource().copy(target, tmp_path / "copia.tar", logger)
    finally:
        logger.removeHandler(warnings)

    assert writes and result.bytes > 128 << 20
    listing = subprocess.run(["tar", "--list", f"--file={result.path}"], capture_output=True, text=True, check=True)
    assert "uploads/año 2026/acta en edición.odt" in listing.stdout.splitlines()
    assert ("tar: 1 archivo(s) cambiaron mientras se copiaban; la copia guarda cada uno como estaba al leerlo: "
            "uploads/año 2026/acta en edición.odt") in warnings.messages, warnings.messages


def test_a_transfer_cut_halfway_leaves_no_partial_file_and_keeps_earlier_backups(backups, sshd, tree,
                                                                                 register_rows):
    backups.write([{**FILES, "path": str(tree), "conn_id": "ssh_pruebas"}])
    first = backups.run("respaldo_diario")
    earlier = {p: p.read_bytes() for p in backups.root.rglob("*") if p.is_file()}
    assert len(earlier) == 2, first

    big = tree / "uploads" / "video institucional.mp4"
    with open(big, "wb") as handle:
        for _ in range(40):
            handle.write(os.urandom(10 << 20))
    os.chown(big, pwd.getpwnam(SSH_TEST_USER).pw_uid, -1)
    time.sleep(1)
    with cut_ssh_once_staged(backups.root, sshd, more_than=20 << 20) as cut:
        run = backups.run("respaldo_diario")

    assert cut.get("at"), "the transfer was never seen in progress"
    [row] = register_rows(target="portal_archivos", run_id=run.run_id)
    assert row["status"] == "failed" and row["step"] == "copia", row["error"]
    assert "se cortó la conexión con respaldo_prueba@127.0.0.1" in row["error"], row["error"]
    assert staged_files(backups.root) == []
    assert {p: p.read_bytes() for p in backups.root.rglob("*") if p.is_file()} == earlier
