"""The external medium: one conformance suite over the three real destinations, then each one's bad inputs.

- ``path``: a real tmpfs mounted for the test (this machine runs the tests as root), with its marker file;
- ``sftp``: the real sshd of the suite, writing into a tmpfs folder owned by its account;
- ``s3``: moto's S3-compatible server in server mode on loopback, with signed requests.

Every destination must: put a copy whose sidecar passes ``sha256sum -c`` there; never show a copy
under its final name unless its checksum matched; report the checksum of what it holds; delete a copy
and its sidecar; say whether it is reachable and writable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import subprocess
import tempfile
import uuid
from pathlib import Path, PurePosixPath

import pytest
from conftest import write_inventory

from devtools.servers import SSH_TEST_USER, S3Server, free_port
from respaldo.ciclo.externo import base as externo_base
from respaldo.ciclo.externo import s3 as externo_s3
from respaldo.ciclo.externo.base import ExternalError
from respaldo.ciclo.externo.tarea import destination_for

ROOT = Path(__file__).resolve().parents[1]
RELATIVE = PurePosixPath("diario/documentos/2026/11/documentos_20261130T101500.tar.zst")
MIB = 1024 * 1024


@contextlib.contextmanager
def tmpfs(size: str, owner: str | None = None):
    """A real tmpfs of ``size`` mounted on a new folder (owned by ``owner``), unmounted and removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="respaldo-medio-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)], check=True)
    try:
        if owner:
            account = pwd.getpwnam(owner)
            os.chown(folder, account.pw_uid, account.pw_gid)
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(folder)], check=True)  # still busy: detach it now
        folder.rmdir()


@pytest.fixture(scope="module")
def s3_server():
    server = S3Server().start()
    os.environ["AIRFLOW_CONN_S3_PRUEBAS"] = server.connection_json()
    os.environ["AIRFLOW_CONN_S3_CLAVE_MALA"] = server.connection_json(secret="no-es-la-clave-secreta-" + "x" * 8)
    os.environ["AIRFLOW_CONN_S3_CAIDO"] = server.connection_json(endpoint=f"http://127.0.0.1:{free_port()}")
    yield server
    server.cleanup()


class Medio:
    """One destination under test, and how the test sees what it holds (never through the code under test)."""

    def __init__(self, kind: str, external: dict, folder: Path | None = None, s3: S3Server | None = None):
        self.kind = kind
        self.external = external
        self.folder = folder
        self.s3 = s3
        self.destination = destination_for(external)

    def local_view(self, uri: str, into: Path) -> Path:
        """The artifact (with its sidecar beside it) as a file on this machine."""
        if self.kind == "path":
            return Path(uri)
        if self.kind == "sftp":  # the sshd is on this machine: its folder is ours to read
            return Path(uri.split(self.external["conn_id"], 1)[1])
        key = uri.split(f"{self.s3.bucket}/", 1)[1]
        into.mkdir(parents=True, exist_ok=True)
        for name in (key, key + ".sha256"):
            self.s3.client().download_file(self.s3.bucket, name, str(into / PurePosixPath(name).name))
        return into / PurePosixPath(key).name

    def tamper(self, uri: str) -> None:
        if self.kind == "s3":
            key = uri.split(f"{self.s3.bucket}/", 1)[1]
            self.s3.client().put_object(Bucket=self.s3.bucket, Key=key, Body=b"otra cosa")
            return
        with open(self.local_view(uri, Path()), "r+b") as handle:
            handle.write(b"X")

    def leftovers(self) -> list[str]:
        """Anything but final artifacts and sidecars: temporary names, unfinished uploads."""
        if self.kind == "s3":
            client = self.s3.client()
            uploads = client.list_multipart_uploads(Bucket=self.s3.bucket).get("Uploads", [])
            prefix = self.external["prefix"]
            objects = client.list_objects_v2(Bucket=self.s3.bucket, Prefix=prefix).get("Contents", [])
            return [u["Key"] for u in uploads if u["Key"].startswith(prefix)] + \
                   [o["Key"] for o in objects if not o["Key"].endswith((".zst", ".zst.sha256"))]
        return [str(p) for p in self.folder.rglob("*") if p.is_file() and "parcial" in p.name]

    def finals(self) -> list[str]:
        if self.kind == "s3":
            objects = self.s3.client().list_objects_v2(Bucket=self.s3.bucket, Prefix=self.external["prefix"])
            return sorted(o["Key"] for o in objects.get("Contents", []))
        return sorted(p.name for p in self.folder.rglob("*.zst*") if p.is_file())


@pytest.fixture(params=["path", "sftp", "s3"])
def medio(request):
    kind = request.param
    if kind == "path":
        with tmpfs("64m") as folder:
            (folder / ".respaldo_medio_externo").touch()
            yield Medio(kind, {"kind": "path", "path": str(folder)}, folder)
    elif kind == "sftp":
        request.getfixturevalue("sshd")
        with tmpfs("64m", owner=SSH_TEST_USER) as folder:
            yield Medio(kind, {"kind": "sftp", "conn_id": "ssh_pruebas", "path": str(folder / "respaldos")}, folder)
    else:
        server = request.getfixturevalue("s3_server")
        yield Medio(kind, {"kind": "s3", "conn_id": "s3_pruebas", "bucket": server.bucket,
                           "prefix": f"prueba_{uuid.uuid4().hex[:8]}"}, s3=server)


def make_artifact(root: Path, size: int = 3 * MIB) -> tuple[Path, str]:
    """An artifact of ``size`` random bytes at RELATIVE under ``root``, with its sidecar, as comprimir leaves it."""
    artifact = root / RELATIVE
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_bytes(os.urandom(size))
    sha256 = hashlib.sha256(artifact.read_bytes()).hexdigest()
    artifact.with_name(artifact.name + ".sha256").write_text(f"{sha256}  {artifact.name}\n")
    return artifact, sha256


def sha256sum_c(artifact: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sha256sum", "-c", artifact.name + ".sha256"], cwd=artifact.parent, capture_output=True,
                          text=True)


# --- the conformance suite: the same tests for every destination ----------------------------------


def test_a_copy_arrives_whole_and_its_sidecar_verifies_with_sha256sum(medio, tmp_path, monkeypatch):
    monkeypatch.setattr(externo_s3, "PART_BYTES", 5 * MIB)  # 11 MiB: three parts, so the composite check counts
    artifact, sha256 = make_artifact(tmp_path / "respaldos", 11 * MIB)

    placed = medio.destination.put(artifact, RELATIVE, sha256)

    assert placed.sha256 == sha256 and placed.bytes == artifact.stat().st_size
    assert placed.uri == medio.destination.uri_of(RELATIVE) and str(RELATIVE) in placed.uri
    assert medio.destination.exists(placed.uri)
    assert medio.destination.sha256(placed.uri) == sha256
    there = medio.local_view(placed.uri, tmp_path / "bajado")
    check = sha256sum_c(there)
    assert check.returncode == 0 and f"{artifact.name}: OK" in check.stdout
    assert medio.leftovers() == []
    # A retry of the same copy (the task cleared and run again) replaces it cleanly.
    again = medio.destination.put(artifact, RELATIVE, sha256)
    assert again.uri == placed.uri and medio.destination.sha256(placed.uri) == sha256
    assert medio.leftovers() == []
    assert len(medio.finals()) == 2


def test_a_copy_whose_bytes_are_not_the_registered_ones_never_gets_the_final_name(medio, tmp_path):
    artifact, sha256 = make_artifact(tmp_path / "respaldos")
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"\0")  # the local file changed after it was registered

    with pytest.raises(ExternalError, match="no coincide con la local") as raised:
        medio.destination.put(artifact, RELATIVE, sha256)

    assert sha256 in str(raised.value)
    assert not medio.destination.exists(medio.destination.uri_of(RELATIVE))
    assert medio.leftovers() == [] and medio.finals() == []


def test_the_destination_reports_the_checksum_of_what_it_holds(medio, tmp_path):
    artifact, sha256 = make_artifact(tmp_path / "respaldos")
    placed = medio.destination.put(artifact, RELATIVE, sha256)

    medio.tamper(placed.uri)

    assert medio.destination.sha256(placed.uri) != sha256


def test_delete_removes_the_copy_and_its_sidecar_and_deleting_again_is_no_error(medio, tmp_path):
    artifact, sha256 = make_artifact(tmp_path / "respaldos")
    placed = medio.destination.put(artifact, RELATIVE, sha256)
    assert len(medio.finals()) == 2

    medio.destination.delete(placed.uri)

    assert not medio.destination.exists(placed.uri)
    assert medio.finals() == []
    medio.destination.delete(placed.uri)
    assert artifact.is_file() and hashlib.sha256(artifact.read_bytes()).hexdigest() == sha256


def test_check_says_the_destination_answers_and_takes_writes(medio):
    said = medio.destination.check()

    assert "se puede escribir" in said
    assert medio.leftovers() == [] and medio.finals() == []


def test_a_uri_of_another_destination_is_refused(medio):
    with pytest.raises(ExternalError, match="no es una copia de"):
        medio.destination.delete("/etc/passwd")


# --- bad inputs, destination by destination ----------------------------------------------------------


def test_a_disk_without_its_marker_file_is_refused_and_nothing_is_written(tmp_path):
    artifact, sha256 = make_artifact(tmp_path / "respaldos")
    with tmpfs("16m") as folder:
        destination = destination_for({"kind": "path", "path": str(folder)})
        for attempt in (lambda: destination.put(artifact, RELATIVE, sha256), destination.check):
            with pytest.raises(ExternalError) as raised:
                attempt()
            message = str(raised.value)
            assert str(folder) in message and "marcador «.respaldo_medio_externo»" in message
            assert "no estar montado" in message and f"touch {folder}/.respaldo_medio_externo" in message
        assert list(folder.iterdir()) == []


def test_a_mount_point_that_does_not_exist_is_named(tmp_path):
    destination = destination_for({"kind": "path", "path": str(tmp_path / "usb")})
    with pytest.raises(ExternalError, match=f"El disco externo {tmp_path / 'usb'} no existe"):
        destination.check()


def test_a_full_disk_fails_plainly_leaves_nothing_and_keeps_the_local_copy(tmp_path):
    artifact, sha256 = make_artifact(tmp_path / "respaldos", 3 * MIB)
    with tmpfs("1m") as folder:
        (folder / ".respaldo_medio_externo").touch()
        destination = destination_for({"kind": "path", "path": str(folder)})
        with pytest.raises(ExternalError, match=f"el disco externo {folder} está lleno"):
            destination.put(artifact, RELATIVE, sha256)
        assert [p for p in folder.rglob("*") if p.is_file()] == [folder / ".respaldo_medio_externo"]
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == sha256


def test_a_full_sftp_folder_fails_plainly_and_leaves_no_partial_file(sshd, tmp_path):
    artifact, sha256 = make_artifact(tmp_path / "respaldos", 3 * MIB)
    with tmpfs("1m", owner=SSH_TEST_USER) as folder:
        destination = destination_for({"kind": "sftp", "conn_id": "ssh_pruebas", "path": str(folder)})
        with pytest.raises(ExternalError) as raised:
            destination.put(artifact, RELATIVE, sha256)
        assert "No se pudo copiar" in str(raised.value) and "ssh_pruebas" in str(raised.value)
        assert "disco lleno" in str(raised.value)
        assert [p for p in folder.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(("conn_id", "reason"), [
    ("ssh_caido", "no se pudo conectar con respaldo_prueba@127.0.0.1"),
    ("ssh_clave_mala", "rechazó el usuario o la llave/clave"),
    ("ssh_llave_ajena", "no es la registrada en la conexión (host_key)"),
    ("sftp_que_no_existe", "No existe la conexión de Airflow «sftp_que_no_existe»"),
], ids=["caido", "clave-mala", "llave-ajena", "sin-conexion"])
def test_an_sftp_server_that_cannot_be_used_is_named_with_the_reason(sshd, tmp_path, conn_id, reason):
    artifact, sha256 = make_artifact(tmp_path / "respaldos")
    destination = destination_for({"kind": "sftp", "conn_id": conn_id, "path": "/srv/respaldos"})
    for attempt in (lambda: destination.put(artifact, RELATIVE, sha256), destination.check):
        with pytest.raises(ExternalError) as raised:
            attempt()
        assert reason in str(raised.value) and f"«{conn_id}»" in str(raised.value)
        assert sshd.password not in str(raised.value)


@pytest.mark.parametrize(("external", "reason"), [
    ({"conn_id": "s3_pruebas", "bucket": "no-existe-este-bucket"}, "el bucket «no-existe-este-bucket» no existe"),
    ({"conn_id": "s3_clave_mala"}, "rechazó la llave de acceso de la conexión"),
    ({"conn_id": "s3_caido"}, "no se pudo conectar con el servidor"),
    ({"conn_id": "s3_que_no_existe"}, "No existe la conexión de Airflow «s3_que_no_existe»"),
], ids=["sin-bucket", "clave-mala", "caido", "sin-conexion"])
def test_an_s3_store_that_cannot_be_used_is_named_with_the_reason(s3_server, tmp_path, external, reason):
    artifact, sha256 = make_artifact(tmp_path / "respaldos")
    config = {"kind": "s3", "bucket": s3_server.bucket, "prefix": "mal", **external}
    for attempt in ("put", "check"):
        destination = destination_for(config)
        with pytest.raises(ExternalError) as raised:
            destination.put(artifact, RELATIVE, sha256) if attempt == "put" else destination.check()
        assert reason in str(raised.value)
        assert "no-es-la-clave-secreta" not in str(raised.value) and s3_server.secret_key not in str(raised.value)
    assert s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="mal").get("KeyCount") == 0


@pytest.mark.parametrize(("external", "expected"), [
    ({"kind": "ftp", "path": "/mnt/x"}, "targets[0].external: valor «ftp» de 'kind' no permitido"),
    ({"kind": "path", "path": "mnt/usb"}, "la carpeta del medio externo debe ser una ruta absoluta, no «mnt/usb»"),
    ({"kind": "sftp", "path": "/srv/r"}, "targets[0].external.conn_id: falta el campo obligatorio «conn_id»"),
    ({"kind": "s3", "conn_id": "s3_x", "bucket": "B_mal"}, "«B_mal» no es un nombre de bucket válido"),
    ({"kind": "path", "path": "/mnt/usb", "retencion": {"keep_last": 3}},
     "targets[0].external.retencion: clave desconocida «retencion». ¿Quiso decir «retention»?"),
    ({"kind": "s3", "conn_id": "s3_x", "bucket": "respaldos", "prefijo": "x"},
     "targets[0].external.prefijo: clave desconocida «prefijo». ¿Quiso decir «prefix»?"),
    ({"path": "/mnt/usb"}, "targets[0].external: falta 'kind', que dice de qué tipo es"),
], ids=["tipo", "relativa", "sin-conexion", "bucket", "clave", "clave-s3", "sin-tipo"])
def test_a_bad_external_block_is_an_inventory_error_naming_the_key(tmp_path, external, expected):
    inventory = write_inventory(tmp_path / "inventory.yaml", tmp_path, [
        {"id": "documentos", "kind": "files", "frequency": "diario", "path": "/srv/documentos", "external": external}])
    proc = subprocess.run([str(ROOT / ".venv/bin/respaldo"), "validate", str(inventory)], capture_output=True,
                          text=True)
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_a_class_external_block_applies_to_its_targets_unless_a_target_has_its_own(tmp_path):
    from respaldo.inventory import load_inventory

    frequencies = {"diario": {"schedule": "0 23 * * *", "external": {"kind": "path", "path": "/mnt/usb"}}}
    inventory = load_inventory(write_inventory(tmp_path / "inventory.yaml", tmp_path, [
        {"id": "documentos", "kind": "files", "frequency": "diario", "path": "/srv/documentos"},
        {"id": "actas", "kind": "files", "frequency": "diario", "path": "/srv/actas",
         "external": {"kind": "sftp", "conn_id": "sftp_externo", "path": "/srv/respaldos"}},
    ], frequencies))

    assert inventory.external_of(inventory.target("documentos")).path == "/mnt/usb"
    assert inventory.external_of(inventory.target("actas")).kind == "sftp"


def test_respaldo_check_says_whether_each_external_medium_answers(sshd, s3_server, tmp_path):
    with tmpfs("16m") as mounted, tmpfs("16m") as unmounted:
        (mounted / ".respaldo_medio_externo").touch()
        targets = [
            {"id": "documentos", "kind": "files", "frequency": "diario", "path": str(tmp_path),
             "external": {"kind": "path", "path": str(mounted)}},
            {"id": "actas", "kind": "files", "frequency": "diario", "path": str(tmp_path),
             "external": {"kind": "path", "path": str(unmounted)}},
            {"id": "contratos", "kind": "files", "frequency": "diario", "path": str(tmp_path),
             "external": {"kind": "s3", "conn_id": "s3_pruebas", "bucket": s3_server.bucket}},
            {"id": "nomina", "kind": "files", "frequency": "diario", "path": str(tmp_path),
             "external": {"kind": "sftp", "conn_id": "ssh_clave_mala", "path": "/srv/respaldos"}},
        ]
        inventory = write_inventory(tmp_path / "inventory.yaml", tmp_path, targets)
        env = {**os.environ, "AIRFLOW_CONN_S3_PRUEBAS": s3_server.connection_json()}
        proc = subprocess.run([str(ROOT / ".venv/bin/respaldo"), "check", str(inventory)], capture_output=True,
                              text=True, env=env)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert f"[OK] medio externo de documentos: el disco externo {mounted} montado" in out
    assert f"[FALLA] medio externo de actas: El disco externo {unmounted} no tiene el archivo marcador" in out
    assert "[OK] medio externo de contratos: el bucket S3 «copias-externas»" in out
    assert "[FALLA] medio externo de nomina:" in out and "rechazó el usuario o la llave/clave" in out
    assert json.dumps(s3_server.secret_key)[1:-1] not in out + proc.stderr


def test_the_sidecar_text_is_what_sha256sum_writes(tmp_path):
    artifact, sha256 = make_artifact(tmp_path)
    written = subprocess.run(["sha256sum", artifact.name], cwd=artifact.parent, capture_output=True, text=True).stdout
    assert externo_base.sidecar_text(sha256, artifact.name) == written


def test_an_sftp_destination_with_a_password_connection_works(sshd, tmp_path):
    artifact, sha256 = make_artifact(tmp_path / "respaldos")
    with tmpfs("16m", owner=SSH_TEST_USER) as folder:
        destination = destination_for({"kind": "sftp", "conn_id": "ssh_clave", "path": str(folder)})
        placed = destination.put(artifact, RELATIVE, sha256)
        assert sha256sum_c(folder / RELATIVE).returncode == 0
        assert destination.sha256(placed.uri) == sha256


def test_an_account_that_cannot_run_commands_gets_its_copy_read_back(sshd, tmp_path, monkeypatch):
    """An SFTP-only account (no remote commands): the sum is computed on what is read back from the server."""
    from respaldo.ciclo.externo import sftp as externo_sftp

    monkeypatch.setattr(externo_sftp, "HASH_COMMANDS", (("no_existe_este_comando",),))
    artifact, sha256 = make_artifact(tmp_path / "respaldos")
    with tmpfs("16m", owner=SSH_TEST_USER) as folder:
        destination = destination_for({"kind": "sftp", "conn_id": "ssh_pruebas", "path": str(folder)})
        placed = destination.put(artifact, RELATIVE, sha256)
        assert destination.sha256(placed.uri) == sha256
        (folder / RELATIVE).write_bytes(b"alterada")
        assert destination.sha256(placed.uri) == hashlib.sha256(b"alterada").hexdigest()
