"""`respaldo check`: every source, the register and the storage folder answer (or say why not)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import BACKUP_PASSWORD, write_inventory

ROOT = Path(__file__).resolve().parents[1]


def test_check_reports_each_source_and_fails_when_one_does_not_answer(source_pg, tmp_path):
    root = tmp_path / "respaldos"
    root.mkdir()
    inventory = write_inventory(tmp_path / "inv.yaml", root, [
        {"id": "financiero_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_fuente"},
        {"id": "clave_mala_pg", "kind": "postgres", "frequency": "diario", "conn_id": "pg_clave_mala"},
    ])
    proc = subprocess.run([str(ROOT / ".venv/bin/respaldo"), "check", str(inventory)], capture_output=True,
                          text=True)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert lines[0].startswith(f"[OK] carpeta de respaldos: {root} (")
    assert "[OK] registro FT-GTI-004: conexión «respaldo_registro» responde" in lines
    [good] = [line for line in lines if line.startswith("[OK] financiero_pg:")]
    assert good.startswith(f"[OK] financiero_pg: base «financiero» en 127.0.0.1:{source_pg.port} como respaldo_lector "
                           "(PostgreSQL 15."), good
    assert ", pg_dump 15." in good, "the client's version is shown beside the server's"
    assert "[OK] tiempo de visibilidad de Celery" in "\n".join(lines)
    [bad] = [line for line in lines if line.startswith("[FALLA] clave_mala_pg")]
    assert "password authentication failed" in bad
    assert BACKUP_PASSWORD not in proc.stdout + proc.stderr


def test_check_says_when_the_storage_folder_is_missing(source_pg, tmp_path):
    inventory = write_inventory(tmp_path / "inv.yaml", tmp_path / "no_existe", [
        {"id": "financiero_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_fuente"}])
    proc = subprocess.run([str(ROOT / ".venv/bin/respaldo"), "check", str(inventory)], capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert f"[FALLA] carpeta de respaldos: {tmp_path / 'no_existe'} no existe o no se puede escribir" in proc.stdout


def test_check_looks_at_a_manual_targets_intake_folder(tmp_path):
    intake = tmp_path / "entregas"
    intake.mkdir()
    (intake / "nomina_20261101.zip").write_bytes(b"x")
    inventory = write_inventory(tmp_path / "inv.yaml", tmp_path, [
        {"id": "nomina", "kind": "files", "frequency": "diario", "mechanism": "manual",
         "intake": {"path": str(intake)}},
        {"id": "otra", "kind": "files", "frequency": "diario", "mechanism": "manual",
         "intake": {"path": str(tmp_path / "no_existe")}},
    ])
    proc = subprocess.run([str(ROOT / ".venv/bin/respaldo"), "check", str(inventory)], capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert f"[OK] nomina: carpeta de entrega {intake} (1 archivo(s) esperando)" in proc.stdout
    assert f"[FALLA] otra: La carpeta de entrega {tmp_path / 'no_existe'} no existe" in proc.stdout


def test_check_reads_remote_folders_and_images_over_ssh(sshd, tmp_path):
    inventory = write_inventory(tmp_path / "inv.yaml", tmp_path, [
        {"id": "documentos", "kind": "files", "frequency": "diario", "path": "/etc", "include": ["hostname"],
         "conn_id": "ssh_pruebas"},
        {"id": "correo_vm", "kind": "vm", "frequency": "servidores_virtuales", "conn_id": "ssh_pruebas",
         "images": ["/no/existe.qcow2"]},
        {"id": "ajeno", "kind": "files", "frequency": "diario", "path": "/etc", "conn_id": "ssh_llave_ajena"},
    ])
    proc = subprocess.run([str(ROOT / ".venv/bin/respaldo"), "check", str(inventory)], capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert f"[OK] documentos: /etc/hostname en respaldo_prueba@127.0.0.1:{sshd.port}" in proc.stdout
    assert (f"[FALLA] correo_vm: No existe o no se puede leer en respaldo_prueba@127.0.0.1:{sshd.port}: "
            "/no/existe.qcow2") in proc.stdout
    assert "[FALLA] ajeno: SSH a respaldo_prueba@127.0.0.1" in proc.stdout
    assert "no es la registrada en la conexión (host_key)" in proc.stdout
