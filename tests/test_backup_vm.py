"""Virtual servers: disk images pulled over a real sshd, compressed as they arrive, hooks before/after."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_backup_files import cut_ssh_once_staged, writing_into
from test_backup_postgres import states

from devtools.servers import SSH_TEST_USER


@pytest.fixture
def hypervisor(sshd):
    """A folder standing in for the hypervisor's images: a 300 MiB disk, sparse with 40 MiB of data."""
    base = Path(tempfile.mkdtemp(prefix="respaldo-hipervisor-"))
    base.chmod(0o755)
    images = base / "images"
    images.mkdir()
    disk = images / "correo.img"
    with open(disk, "wb") as handle:
        handle.truncate(300 << 20)
        for offset in (0, 100 << 20, 250 << 20):
            handle.seek(offset)
            handle.write(os.urandom(10 << 20) + b"Gobernaci\xc3\xb3n " * 700_000)
    trace = base / "traza.log"
    trace.touch()
    user = pwd.getpwnam(SSH_TEST_USER)
    for path in (base, images, disk, trace):
        os.chown(path, user.pw_uid, user.pw_gid)
    yield base
    shutil.rmtree(base)


def vm_target(base: Path, **extra) -> dict:
    trace = base / "traza.log"
    return {"id": "correo_vm", "kind": "vm", "frequency": "servidores_virtuales", "conn_id": "ssh_pruebas",
            "images": [str(base / "images" / "correo.img")],
            "before": f"echo antes $(date +%s%N) >> {trace}", "after": f"echo despues $(date +%s%N) >> {trace}",
            **extra}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_an_image_round_trips_with_before_and_after_commands(backups, hypervisor, tmp_path, register_rows):
    backups.write([vm_target(hypervisor)])
    run = backups.run("respaldo_servidores_virtuales")

    assert states(run)["correo_vm.registrar"] == "success"
    [row] = register_rows(target="correo_vm", run_id=run.run_id)
    disk = hypervisor / "images" / "correo.img"
    assert row["status"] == "success" and row["kind"] == "vm"
    assert row["original_bytes"] > 30 << 20 and row["compressed_bytes"] < row["original_bytes"]
    artifact = Path(row["artifact_path"])
    assert artifact.name.endswith(".tar.zst") and "/servidores_virtuales/correo_vm/" in str(artifact)
    assert sha256(artifact) == row["sha256"]
    assert [line.split()[0] for line in (hypervisor / "traza.log").read_text().splitlines()] == ["antes", "despues"]

    restored = tmp_path / "restaurado"
    restored.mkdir()
    subprocess.run(f"zstd -dc '{artifact}' | tar -xS -C '{restored}'", shell=True, check=True)
    copy = restored / disk.relative_to("/")
    assert copy.stat().st_size == disk.stat().st_size == 300 << 20
    assert sha256(copy) == sha256(disk)
    assert copy.stat().st_blocks * 512 < 100 << 20, "holes of the sparse image were kept"


def test_a_failing_before_command_fails_the_copy_and_the_after_command_still_runs(backups, smtp, hypervisor,
                                                                                  register_rows):
    target = vm_target(hypervisor, before="echo no hay espacio para la instantánea >&2; exit 7")
    backups.write([target])
    run = backups.run("respaldo_servidores_virtuales")

    [row] = register_rows(target="correo_vm", run_id=run.run_id)
    assert row["status"] == "failed" and row["step"] == "copia"
    assert "El comando «antes» falló" in row["error"] and "código 7" in row["error"]
    assert "no hay espacio para la instantánea" in row["error"]
    assert (hypervisor / "traza.log").read_text().split()[0] == "despues"
    assert [p for p in backups.root.rglob("*") if p.is_file()] == []
    smtp.wait_for(lambda m: run.run_id in m.get_body(("html",)).get_content())


def test_a_dropped_connection_fails_cleanly_and_the_after_command_still_runs(backups, sshd, hypervisor,
                                                                             register_rows):
    disk = hypervisor / "images" / "correo.img"
    with open(disk, "r+b") as handle:  # enough real data that the transfer takes a while
        for offset in range(0, 300 << 20, 20 << 20):
            handle.seek(offset)
            handle.write(os.urandom(16 << 20))
    backups.write([vm_target(hypervisor)])
    with cut_ssh_once_staged(backups.root, sshd, more_than=8 << 20) as cut:
        run = backups.run("respaldo_servidores_virtuales")

    assert cut.get("at"), "the transfer was never seen in progress"
    [row] = register_rows(target="correo_vm", run_id=run.run_id)
    assert row["status"] == "failed" and "se cortó la conexión" in row["error"], row["error"]
    assert [p for p in backups.root.rglob("*") if p.is_file()] == []
    assert (hypervisor / "traza.log").read_text().split()[::2] == ["antes", "despues"]


def test_an_image_written_to_during_the_copy_fails_and_leaves_no_artifact(backups, smtp, hypervisor, register_rows):
    """A running machine writes into its disk while tar reads it: the copy is torn, so it is no backup."""
    disk = hypervisor / "images" / "correo.img"
    backups.write([vm_target(hypervisor)])
    with writing_into(disk, 10 << 20) as writes:  # inside the first data region: the sparse map stays the same
        run = backups.run("respaldo_servidores_virtuales")

    assert writes
    [row] = register_rows(target="correo_vm", run_id=run.run_id)
    assert row["status"] == "failed" and row["step"] == "copia", row["error"]
    assert f"la imagen {disk} cambió mientras se copiaba" in row["error"], row["error"]
    assert "Tome una instantánea en el comando «antes» (before) y copie la instantánea, o apague la máquina" in row[
        "error"]
    assert row["artifact_path"] is None and row["sha256"] is None
    assert [p for p in backups.root.rglob("*") if p.is_file()] == []
    assert [line.split()[0] for line in (hypervisor / "traza.log").read_text().splitlines()] == ["antes", "despues"]
    mail = smtp.wait_for(lambda m: run.run_id in m.get_body(("html",)).get_content())
    assert "cambió mientras se copiaba" in mail.get_body(("html",)).get_content()
