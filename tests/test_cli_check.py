"""`respaldo check`: every source, the register and the storage folder answer (or say why not)."""

from __future__ import annotations

import os
import re
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


def test_check_names_the_age_that_encrypts_and_each_drill_key_file_that_is_missing(tmp_path):
    from test_cifrado import age_keygen

    folder = tmp_path / "documentos"
    folder.mkdir()
    key = tmp_path / "simulacro.txt"
    public = age_keygen(key)
    gone = tmp_path / "no_existe.txt"
    inventory = write_inventory(tmp_path / "inv.yaml", tmp_path, [
        {"id": "actas", "kind": "files", "frequency": "diario", "path": str(folder),
         "encryption": {"recipients": [public], "drill_identity": str(key)}},
        {"id": "contratos", "kind": "files", "frequency": "diario", "path": str(folder),
         "encryption": {"recipients": [public], "drill_identity": str(gone)}},
        {"id": "sin_cifrar", "kind": "files", "frequency": "diario", "path": str(folder)},
    ])
    proc = subprocess.run([str(ROOT / ".venv/bin/respaldo"), "check", str(inventory)], capture_output=True,
                          text=True)
    lines = proc.stdout.splitlines()
    [age] = [line for line in lines if line.startswith(("[OK] cifrado", "[FALLA] cifrado"))]
    assert re.fullmatch(r"\[OK\] cifrado: «age» v?1\.\d+\S* cifra las copias de actas, contratos", age), age
    assert f"[OK] clave de simulacros de actas: {key} existe y se puede leer" in lines
    assert (f"[FALLA] clave de simulacros de contratos: {gone} no existe o no se puede leer: los simulacros de "
            "estos objetivos quedarán «fallido»") in lines
    assert proc.returncode == 1
    assert key.read_text().split("AGE-SECRET-KEY-")[1][:20] not in proc.stdout + proc.stderr

    # On a machine without age (a PATH without it), the copies of the encrypted targets would fail: check says so.
    bare = {"PATH": str(tmp_path / "sin_programas"), "HOME": str(tmp_path)}
    proc = subprocess.run([str(ROOT / ".venv/bin/respaldo"), "check", str(inventory)], capture_output=True,
                          text=True, env={**os.environ, **bare})
    assert ("[FALLA] cifrado: No está instalado «age» en esta máquina: las copias de actas, contratos fallarán "
            "(apt-get install age).") in proc.stdout.splitlines(), proc.stdout + proc.stderr
    assert proc.returncode == 1


def test_check_says_nothing_of_age_when_no_target_is_encrypted(tmp_path):
    folder = tmp_path / "documentos"
    folder.mkdir()
    inventory = write_inventory(tmp_path / "inv.yaml", tmp_path, [
        {"id": "actas", "kind": "files", "frequency": "diario", "path": str(folder)}])
    proc = subprocess.run([str(ROOT / ".venv/bin/respaldo"), "check", str(inventory)], capture_output=True,
                          text=True)
    assert "cifrado" not in proc.stdout and "simulacros de actas" not in proc.stdout, proc.stdout
