"""SSH and SFTP connections against a real sshd: the server is always verified, keys may have passphrases."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
from conftest import METADATA_DB, SYSTEM_PG, assert_only_its_own_environment, read_process
from test_backup_postgres import states
from test_manual import BOGOTA, Intake, slot

from devtools.servers import SSH_TEST_USER
from respaldo.entrega import Intake as IntakeModel
from respaldo.entrega import open_intake
from respaldo.errors import CopyError
from respaldo.sources.files import FilesSource, FilesTarget

PASSPHRASE = "Frase de paso: «ñandú» 2026/respaldo"
FILLED = {"frequency": "diario", "mechanism": "automatic", "responsible": "x"}


def connection(sshd, **extra) -> str:
    """An ssh connection to the test sshd with the client key and exactly ``extra`` besides it."""
    return json.dumps({"conn_type": "ssh", "host": "127.0.0.1", "port": sshd.port, "login": sshd.user,
                       "extra": {"private_key": sshd.private_key, **extra}})


def sshd_connections(sshd) -> int:
    """How many TCP connections the sshd has accepted so far (from its own log)."""
    return (sshd.dir / "sshd.log").read_text(errors="replace").count("Connection from 127.0.0.1")


@pytest.fixture
def folder(sshd):
    """A folder on the "remote" server, owned by the SSH account, holding one file."""
    base = Path(tempfile.mkdtemp(prefix="respaldo-remoto-"))
    base.chmod(0o755)
    (base / "datos").mkdir()
    (base / "datos" / "informe.txt").write_text("Gobernación del Putumayo\n")
    user = pwd.getpwnam(SSH_TEST_USER)
    for path in (base, base / "datos", base / "datos" / "informe.txt"):
        os.chown(path, user.pw_uid, user.pw_gid)
    yield base
    shutil.rmtree(base)


def copy_files(folder: Path, conn_id: str, tmp_path: Path, **fields) -> Path:
    target = FilesTarget.model_validate({"id": "remoto", "kind": "files", "path": str(folder), "include": ["datos"],
                                         "conn_id": conn_id, **FILLED, **fields})
    dest = tmp_path / f"{conn_id}.tar"
    FilesSource().copy(target, dest, logging.getLogger("prueba"))
    return dest


def list_intake(folder: Path, conn_id: str, **fields) -> list[str]:
    with open_intake(IntakeModel.model_validate({"path": str(folder / "datos"), "conn_id": conn_id,
                                                 **fields})) as intake:
        return [entry.name for entry in intake.entries()]


# (case id, extra besides the client key, what the refusal says)
UNVERIFIED = [
    ("no_host_key_check", {"no_host_key_check": True}, "pide no verificar la llave del servidor"),
    ("no_host_key_check-texto", {"no_host_key_check": "True"}, "pide no verificar la llave del servidor"),
    ("ignore_hostkey_verification", {"ignore_hostkey_verification": True}, "pide no verificar la llave del servidor"),
    ("ignore_hostkey_verification-texto", {"ignore_hostkey_verification": "true"},
     "pide no verificar la llave del servidor"),
    ("allow_host_key_change", {"allow_host_key_change": "true", "host_key": "HOST_KEY"},
     "acepta que cambie la llave del servidor"),
    ("allow_host_key_change-booleano", {"allow_host_key_change": True, "host_key": "HOST_KEY"},
     "acepta que cambie la llave del servidor"),
    ("host_key-y-no_host_key_check", {"host_key": "HOST_KEY", "ignore_hostkey_verification": "True"},
     "trae «host_key» y a la vez pide no verificar la llave del servidor"),
    ("sin-llave-del-servidor", {}, "no dice cuál es la llave del servidor"),
]


@pytest.mark.parametrize("way", ["openssh", "sftp"])
@pytest.mark.parametrize(("extra", "reason"), [c[1:] for c in UNVERIFIED], ids=[c[0] for c in UNVERIFIED])
def test_a_connection_that_would_not_verify_the_server_is_refused_before_connecting(
    sshd, folder, tmp_path, monkeypatch, way, extra, reason
):
    extra = {key: sshd.host_key if value == "HOST_KEY" else value for key, value in extra.items()}
    monkeypatch.setenv("AIRFLOW_CONN_SSH_SIN_VERIFICAR", connection(sshd, **extra))
    before = sshd_connections(sshd)
    with pytest.raises(CopyError) as failure:
        if way == "openssh":
            copy_files(folder, "ssh_sin_verificar", tmp_path)
        else:
            list_intake(folder, "ssh_sin_verificar")
    message = str(failure.value)
    assert message.startswith("La conexión SSH «ssh_sin_verificar» "), message
    assert reason in message and "«host_key»" in message
    assert "\n" not in message and "PRIVATE KEY" not in message
    time.sleep(0.2)
    assert sshd_connections(sshd) == before, "refused before any connection was opened"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("way", ["openssh", "sftp"])
def test_a_known_hosts_file_stands_in_for_host_key_and_must_name_the_server(sshd, folder, tmp_path, monkeypatch,
                                                                            way):
    monkeypatch.setenv("AIRFLOW_CONN_SSH_KNOWN_HOSTS", connection(sshd))
    known = tmp_path / "conocidos" / "known_hosts"
    known.parent.mkdir()
    known.write_text(f"[127.0.0.1]:{sshd.port + 1} {sshd.host_key}\n")  # another port: not this server
    use = (lambda: copy_files(folder, "ssh_known_hosts", tmp_path, known_hosts=str(known))) if way == "openssh" \
        else (lambda: list_intake(folder, "ssh_known_hosts", known_hosts=str(known)))
    with pytest.raises(CopyError, match=rf"known_hosts «{known}» no trae la llave del servidor \[127.0.0.1\]:"
                                        rf"{sshd.port}: agréguela"):
        use()

    known.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key}\n")
    if way == "openssh":
        listing = subprocess.run(["tar", "-tf", str(use())], capture_output=True, text=True, check=True).stdout
        assert "datos/informe.txt" in listing
    else:
        assert use() == ["informe.txt"]


def test_a_wrong_host_key_is_refused_over_sftp_with_the_plain_reason(sshd, folder):
    with pytest.raises(CopyError) as failure:
        list_intake(folder, "ssh_llave_ajena")
    assert str(failure.value) == (
        f"No se pudo abrir la carpeta por SFTP (conexión «ssh_llave_ajena»): la llave del servidor "
        f"{SSH_TEST_USER}@127.0.0.1:{sshd.port} no es la registrada en la conexión (host_key): puede ser otro "
        "servidor. Verifíquela con el administrador antes de cambiarla.")


@pytest.fixture
def intake_folder(sshd):
    base = Path(tempfile.mkdtemp(prefix="respaldo-entregas-"))
    base.chmod(0o755)
    path = base / "nomina"
    path.mkdir()
    user = pwd.getpwnam(SSH_TEST_USER)
    os.chown(path, user.pw_uid, user.pw_gid)
    yield path
    shutil.rmtree(base)


def test_the_sftp_intake_refuses_the_deprecated_spelling_as_a_failed_row(backups, sshd, intake_folder, monkeypatch,
                                                                         register_rows):
    """The bypass that was open: ``ignore_hostkey_verification`` (still honoured by SSHHook) with no host_key."""
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_IGNORA_LLAVE", connection(sshd, ignore_hostkey_verification=True))
    intake = Intake(intake_folder, "sftp_ignora_llave")
    intake.drop("nomina_20261103.zip", os.urandom(2000), dt.datetime(2026, 11, 3, 18, tzinfo=BOGOTA))
    backups.write([intake.target()])
    run = backups.run("respaldo_diario", logical_date=slot(3))

    assert states(run)[f"{intake.id}.copia"] == "failed"
    [row] = register_rows(target=intake.id, run_id=run.run_id)
    assert row["status"] == "failed" and row["step"] == "copia"
    assert "La conexión SSH «sftp_ignora_llave» pide no verificar la llave del servidor" in row["error"]
    assert intake.files() == ["nomina_20261103.zip"], "nothing was taken from an unverified server"


@pytest.fixture(scope="module")
def passphrase_key(sshd):
    """A real encrypted ed25519 key (ssh-keygen -N), authorised on the test sshd."""
    key = sshd.dir / "cifrada"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-C", "respaldo-cifrada", "-f", str(key)],
                   check=True)
    with open(sshd.dir / "authorized_keys", "a") as authorized:
        authorized.write((sshd.dir / "cifrada.pub").read_text())
    text = key.read_text()
    with pytest.MonkeyPatch.context() as patch:
        for conn_id, passphrase in (("SSH_FRASE", PASSPHRASE), ("SSH_FRASE_MALA", "no es la frase")):
            patch.setenv(f"AIRFLOW_CONN_{conn_id}", json.dumps({
                "conn_type": "ssh", "host": "127.0.0.1", "port": sshd.port, "login": sshd.user,
                "extra": {"host_key": sshd.host_key, "private_key": text, "private_key_passphrase": passphrase}}))
        yield text


def test_the_key_is_really_encrypted(passphrase_key, sshd):
    probe = subprocess.run(["ssh-keygen", "-y", "-P", "", "-f", str(sshd.dir / "cifrada")], capture_output=True,
                           text=True)
    assert probe.returncode != 0 and "incorrect passphrase" in probe.stderr


@pytest.mark.parametrize("way", ["openssh", "sftp"])
def test_a_key_protected_by_a_passphrase_works(passphrase_key, folder, tmp_path, way):
    if way == "openssh":
        listing = subprocess.run(["tar", "-tf", str(copy_files(folder, "ssh_frase", tmp_path))], capture_output=True,
                                 text=True, check=True).stdout
        assert "datos/informe.txt" in listing
    else:
        assert list_intake(folder, "ssh_frase") == ["informe.txt"]


@pytest.mark.parametrize("way", ["openssh", "sftp"])
def test_a_wrong_passphrase_is_named_without_showing_it(passphrase_key, folder, tmp_path, way):
    with pytest.raises(CopyError) as failure:
        copy_files(folder, "ssh_frase_mala", tmp_path) if way == "openssh" else list_intake(folder, "ssh_frase_mala")
    message = str(failure.value)
    assert message.startswith("No se puede leer la llave privada de la conexión SSH «ssh_frase_mala»")
    assert "«private_key_passphrase»" in message and "no es la frase" not in message


def _find_ssh(user: str, timeout: float = 60) -> int:
    """The ssh client respaldo runs (its argv ends with ``-l USER 127.0.0.1 -- <command>``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0] == b"ssh" and b"-l" in argv and argv[argv.index(b"-l") + 1] == user.encode():
                return int(pid)
        time.sleep(0.02)
    raise AssertionError("ssh never started")


def test_ssh_gets_its_secrets_in_private_files_only_and_none_of_the_workers_environment(
    backups, sshd, passphrase_key, folder, register_rows
):
    """A real ssh child, caught while a VM's «before» command runs, then every place a secret could leak."""
    image = folder / "datos" / "informe.txt"
    backups.write([
        {"id": "correo_vm", "kind": "vm", "frequency": "servidores_virtuales", "conn_id": "ssh_frase",
         "images": [str(image)], "before": "sleep 3"},
        {"id": "frase_mala", "kind": "files", "frequency": "servidores_virtuales", "conn_id": "ssh_frase_mala",
         "path": str(folder)},
    ])
    seen: dict = {}

    def watch():
        seen.update(read_process(_find_ssh(sshd.user)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    run = backups.run("respaldo_servidores_virtuales")
    watcher.join()

    assert states(run)["correo_vm.registrar"] == "success"
    assert states(run)["frase_mala.copia"] == "failed"
    secrets = [PASSPHRASE, *(line for line in passphrase_key.splitlines() if len(line) > 30)]
    assert_only_its_own_environment(seen, {"SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "DISPLAY"}, secrets)
    assert set(seen["files"]) == {".", "known_hosts", "id", "passphrase", "askpass"}
    assert seen["files"]["askpass"] == 0o700 and seen["environ"]["SSH_ASKPASS"] == str(seen["home"] / "askpass")
    assert seen["argv"][seen["argv"].index("-i") + 1] == str(seen["home"] / "id")

    rows = register_rows(run_id=run.run_id)
    assert len(rows) == 2 and "private_key_passphrase" in [r for r in rows if r["target"] == "frase_mala"][0]["error"]
    for log_file in Path(os.environ["AIRFLOW_HOME"]).rglob("*.log"):
        text = log_file.read_text(errors="replace")
        assert not [s for s in secrets if s in text], log_file
    with psycopg.connect(f"{SYSTEM_PG}/{METADATA_DB}") as conn:
        values = [str(v) for (v,) in conn.execute("SELECT value::text FROM xcom WHERE run_id = %s", (run.run_id,))]
    assert values and not [v for v in values for s in secrets if s in v]
    assert not [s for s in secrets if s in repr(rows)]


@pytest.mark.parametrize(("conn_id", "connection_json", "message"), [
    ("ssh_no_existe", None, "No existe la conexión de Airflow «ssh_no_existe»: créela en Admin → Connections"),
    ("ssh_sin_servidor", json.dumps({"conn_type": "ssh", "login": "x", "extra": {}}),
     "La conexión SSH «ssh_sin_servidor» no tiene servidor (host): póngalo en la conexión."),
    ("ssh_host_key_mala", json.dumps({"conn_type": "ssh", "host": "127.0.0.1", "extra": {"host_key": "ssh-ed25519 x"}}),
     "La llave del servidor (extra «host_key» de la conexión SSH «ssh_host_key_mala») debe tener la forma"),
], ids=["no-existe", "sin-servidor", "host_key-mala"])
def test_a_connection_that_cannot_be_used_is_named_plainly(folder, tmp_path, monkeypatch, conn_id, connection_json,
                                                           message):
    if connection_json:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_json)
    for use in (lambda: copy_files(folder, conn_id, tmp_path), lambda: list_intake(folder, conn_id)):
        with pytest.raises(CopyError) as failure:
            use()
        assert str(failure.value).startswith(message), str(failure.value)
