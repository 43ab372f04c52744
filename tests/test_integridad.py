"""Verification reads a copy to its end: a damaged copy of any kind never passes, a good one always does.

The copies are made the way production makes them: each source's own ``copy`` against the real test
servers (PostgreSQL, MariaDB, sshd), compressed on the fly where the source does that, otherwise
compressed by ``artifacts.compress`` as the task ``comprimir`` does. Then they are damaged the ways
disks and transfers damage files, and read back with :mod:`respaldo.integridad` and ``verificar_fecha``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import logging
import os
import pwd
import shutil
import subprocess
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_backup_files import make_tree

from devtools.servers import SSH_TEST_USER
from respaldo import artifacts, integridad

log = logging.getLogger("prueba")
FILLED = {"mechanism": "automatic", "responsible": "Profesional universitario área de sistemas"}
TARGETS = {
    "postgres": {"id": "financiero_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_fuente",
                 "database": "financiero"},
    "mysql": {"id": "tesoreria_mysql", "kind": "mysql", "frequency": "diario", "conn_id": "mysql_fuente",
              "database": "tesoreria"},
}
KINDS = ["postgres", "mysql", "files", "vm", "portal", "manual"]
#: Kinds whose copy is compressed while it is taken: verificar_fecha reads their staged .zst.
STAGED_ZST = ["postgres", "mysql", "vm"]


@dataclass(frozen=True)
class Made:
    """A good copy as production leaves it: a staged .zst (``artifact`` False) or a stored artifact."""

    path: Path
    original_bytes: int
    artifact: bool
    check_format: bool = True


def _own_by_ssh_user(*paths: Path) -> None:
    user = pwd.getpwnam(SSH_TEST_USER)
    for path in paths:
        os.lchown(path, user.pw_uid, user.pw_gid)


def _disk_image(folder: Path) -> Path:
    """A small sparse disk image: 24 MiB, 3 MiB of it data, readable by the sshd test account."""
    folder.mkdir(parents=True)
    image = folder / "correo.img"
    with open(image, "wb") as handle:
        handle.truncate(24 << 20)
        handle.write(os.urandom(1 << 20))
        handle.seek(16 << 20)
        handle.write(b"Gobernaci\xc3\xb3n del Putumayo " * 80_000)
    _own_by_ssh_user(folder, image)
    return image


@pytest.fixture(scope="module")
def hypervisor():
    """A folder the sshd test account can reach (pytest's own temporary folders are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="respaldo-hipervisor-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


@pytest.fixture(scope="module")
def good(tmp_path_factory, hypervisor, source_pg, source_mariadb, sshd) -> dict[str, Made]:
    """One good copy of every kind, taken from the real servers."""
    from respaldo.sources import source_for

    base = tmp_path_factory.mktemp("copias")
    made: dict[str, Made] = {}
    for kind in ("postgres", "mysql"):
        source = source_for(kind)
        target = source.model.model_validate(TARGETS[kind] | FILLED)
        result = source.copy(target, base / f"{target.id}.{source.extension}.zst", log)
        made[kind] = Made(result.path, result.original_bytes, artifact=False)

    image = _disk_image(hypervisor / "images")
    vm = source_for("vm")
    target = vm.model.model_validate({"id": "correo_vm", "kind": "vm", "frequency": "servidores_virtuales",
                                      "conn_id": "ssh_pruebas", "images": [str(image)]} | FILLED)
    result = vm.copy(target, base / "correo_vm.tar.zst", log)
    made["vm"] = Made(result.path, result.original_bytes, artifact=False)

    tree = make_tree(base / "sitio" / "portal")
    staged = {}
    files = source_for("files")
    target = files.model.model_validate({"id": "portal_archivos", "kind": "files", "frequency": "diario",
                                         "path": str(tree), "include": ["html", "uploads"]} | FILLED)
    staged["files"] = files.copy(target, base / "portal_archivos.tar", log).path
    portal = source_for("portal")
    target = portal.model.model_validate({
        "id": "portal_web", "kind": "portal", "frequency": "diario",
        "database": {"kind": "postgres", "conn_id": "pg_fuente", "database": "sistema_informacion"},
        "files": {"path": str(tree), "include": ["html", "uploads"]}} | FILLED)
    staged["portal"] = portal.copy(target, base / "portal_web.tar", log).path
    staged["manual"] = base / "nomina.zip"  # what a person delivers: any format at all
    staged["manual"].write_bytes(os.urandom(200_000) + b"PK nomina de noviembre\n" * 20_000)
    stored = base / "respaldos"
    stored.mkdir()
    for kind, path in staged.items():
        artifact = artifacts.compress(path, stored / f"{kind}_20261124T230000.{path.suffix[1:]}.zst", log)
        made[kind] = Made(artifact.path, artifact.original_bytes, artifact=True, check_format=kind != "manual")
    return made


def damaged_copy(made: Made, folder: Path, damage) -> Path:
    """A copy of ``made`` (with its .sha256, for an artifact) whose bytes went through ``damage``."""
    folder.mkdir(exist_ok=True)
    path = folder / made.path.name
    path.write_bytes(damage(made.path.read_bytes()))
    if made.artifact:
        shutil.copy(made.path.with_name(made.path.name + ".sha256"), folder)
    return path


def verify(made: Made, path: Path, **extra) -> integridad.Verification:
    """Verify as production would: a stored artifact against its .sha256, a staged copy alone."""
    check = integridad.verify_artifact if made.artifact else integridad.verify_staged
    return check(path, original_bytes=made.original_bytes, check_format=made.check_format, **extra)


def flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x40]) + data[middle + 1:]


DAMAGES = {
    "cut-in-half": (lambda data: data[: len(data) // 2],
                    "está truncada: termina antes del final del último bloque comprimido"),
    "last-4-bytes-dropped": (lambda data: data[:-4], "está truncada: le faltan los últimos bytes (la suma de "
                                                     "verificación interna del último bloque comprimido)"),
    "one-byte-flipped": (flip_middle, "está dañada"),
    "checksum-byte-flipped": (lambda data: data[:-1] + bytes([data[-1] ^ 1]),
                              "está dañada: la suma de verificación interna no coincide"),
    "garbage-appended": (lambda data: data + b"basura que no es zstd" * 10,
                         "tiene datos sobrantes después del final del último bloque comprimido"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_good_copy_of_every_kind_passes_verification(good, kind):
    made = good[kind]
    result = verify(made, made.path)

    assert result.intact and result.reason is None and result.problems == (), result.problems
    assert result.decompressed_bytes == made.original_bytes
    assert result.stored_bytes == made.path.stat().st_size
    assert result.format == {"postgres": "postgres", "mysql": "mysql", "manual": "zstd"}.get(kind, "tar")
    if made.artifact:
        assert result.sha256 == hashlib.sha256(made.path.read_bytes()).hexdigest()
    if kind in ("postgres", "mysql", "portal"):  # the date the dump stamped, read while checking it
        assert dt.timedelta(0) <= dt.datetime.now(dt.UTC) - result.created_at < dt.timedelta(minutes=30)
    else:
        assert result.created_at is None
    assert result.database_member == ("base_de_datos.dump" if kind == "portal" else None)


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_compressed_copy_never_passes_verification(good, kind, damage, tmp_path):
    made = good[kind]
    harm, reason = DAMAGES[damage]
    path = damaged_copy(made, tmp_path / "dañada", harm)

    result = verify(made, path)

    assert not result.intact and result.created_at is None
    assert result.reason.startswith(f"La copia {path.name} {reason}"), result.problems
    if made.artifact:  # the .sha256 disagrees too, but says less about what happened: it comes last
        assert result.problems[-1].startswith(f"La suma SHA-256 de {path.name} no coincide con la de "
                                              f"{path.name}.sha256")


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("kind", STAGED_ZST)
def test_verificar_fecha_refuses_a_staged_copy_that_was_written_damaged(good, kind, damage, tmp_path):
    """The XCom describes the stored bytes as they are (as if damaged while written): the checks still see it."""
    from airflow.sdk.exceptions import AirflowFailException

    from respaldo import tasks

    made = good[kind]
    harm, reason = DAMAGES[damage]
    path = damaged_copy(made, tmp_path / "staging", harm)
    started = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    copy = {"staging": str(path), "bytes": path.stat().st_size, "started_at": started.isoformat(),
            "compressed": True, "original_bytes": made.original_bytes,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    target = TARGETS.get(kind) or {"id": "correo_vm", "kind": "vm", "frequency": "servidores_virtuales",
                                   "conn_id": "ssh_pruebas", "images": ["/var/lib/libvirt/images/correo.img"]}

    with pytest.raises(AirflowFailException) as failure:
        tasks.verificar_fecha(target | FILLED, {"timezone": "America/Bogota"}, copy)
    assert str(failure.value).startswith(f"La copia {path.name} {reason}")


@pytest.mark.parametrize("kind", STAGED_ZST)
def test_verificar_fecha_refuses_a_staged_copy_cut_after_copia_wrote_it(good, kind, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from respaldo import tasks

    made = good[kind]
    path = damaged_copy(made, tmp_path / "staging", lambda data: data)
    copy = {"staging": str(path), "bytes": path.stat().st_size,
            "started_at": (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat(), "compressed": True,
            "original_bytes": made.original_bytes, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    target = TARGETS.get(kind) or {"id": "correo_vm", "kind": "vm", "frequency": "servidores_virtuales",
                                   "conn_id": "ssh_pruebas", "images": ["/var/lib/libvirt/images/correo.img"]}
    checked = tasks.verificar_fecha(target | FILLED, {"timezone": "America/Bogota"}, copy)
    assert checked["backup_at"]

    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(AirflowFailException, match=f"^La copia {path.name} cambió después de tomada"):
        tasks.verificar_fecha(target | FILLED, {"timezone": "America/Bogota"}, copy)


# --- one stored artifact, every way its checks can disagree ---------------------------------------


@pytest.fixture
def artifact(tmp_path) -> artifacts.Artifact:
    """A stored artifact of a folder's tar, made by respaldo itself."""
    staged = tmp_path / "archivos.tar"
    subprocess.run(["tar", "--create", "--format=posix", f"--file={staged}", f"--directory={tmp_path}", "arbol"],
                   check=True, cwd=make_tree(tmp_path / "arbol").parent)
    return artifacts.compress(staged, tmp_path / "guardado" / "archivos_20261124T230000.tar.zst", log)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


SUM_PROBLEMS = {
    "sidecar-missing": (lambda a: _sidecar(a.path).unlink(), {}, "Al respaldo {name} le falta su archivo de suma "
                                                                 "{name}.sha256."),
    "sidecar-names-another-file": (lambda a: _sidecar(a.path).write_text(f"{a.sha256}  otro.tar.zst\n"), {},
                                   "El archivo {name}.sha256 no trae una suma SHA-256 de {name}."),
    "sidecar-with-another-sum": (lambda a: _sidecar(a.path).write_text(f"{'0' * 64}  {a.path.name}\n"), {},
                                 "La suma SHA-256 de {name} no coincide con la de {name}.sha256: el archivo cambió o "
                                 "se dañó después de guardado."),
    "register-with-another-sum": (lambda a: None, {"expected_sha256": "f" * 64},
                                  "La suma SHA-256 de {name} no coincide con la del registro: el archivo cambió o se "
                                  "dañó después de escrito."),
    "other-size-than-written": (lambda a: None, {"original_bytes": 1234},
                                "La copia {name} no tiene el tamaño que se escribió: descomprimida da "),
}


@pytest.mark.parametrize("problem", SUM_PROBLEMS)
def test_verify_artifact_reports_a_sum_or_size_that_disagrees(artifact, problem):
    spoil, arguments, reason = SUM_PROBLEMS[problem]
    spoil(artifact)
    result = integridad.verify_artifact(artifact.path, **arguments)

    assert not result.intact
    assert result.reason.startswith(reason.format(name=artifact.path.name)), result.reason
    assert result.decompressed_bytes == artifact.original_bytes  # read to the end all the same


def test_verify_artifact_passes_a_good_artifact_with_its_register_sum_and_size(artifact):
    result = integridad.verify_artifact(artifact.path, expected_sha256=artifact.sha256,
                                        original_bytes=artifact.original_bytes)
    assert result.intact and result.sha256 == artifact.sha256 and result.format == "tar"


def test_verify_artifact_says_so_when_the_file_is_gone(artifact):
    artifact.path.unlink()
    result = integridad.verify_artifact(artifact.path)
    assert not result.intact and result.reason == f"La copia {artifact.path.name} no existe."


def test_a_file_that_is_not_zstd_at_all_is_named_as_such(artifact):
    artifact.path.write_bytes(b"esto no es zstd " * 100)
    result = integridad.verify_artifact(artifact.path)
    assert result.reason == f"La copia {artifact.path.name} no es un archivo zstd."


def test_an_artifact_of_several_zstd_frames_is_read_across_all_of_them(tmp_path):
    """``zstd`` run on pieces and concatenated (as pzstd does) is a valid stream: every frame counts."""
    data = os.urandom(300_000) + b"parte de la copia " * 100_000
    pieces = [data[:500_000], data[500_000:]]
    compressed = b"".join(subprocess.run(["zstd", "-q", "-c", "--check"], input=piece, capture_output=True,
                                         check=True).stdout for piece in pieces)
    path = tmp_path / "dos_marcos.bin.zst"
    path.write_bytes(compressed)
    result = integridad.verify_staged(path, original_bytes=len(data))
    assert result.intact and result.decompressed_bytes == len(data)

    path.write_bytes(compressed[:-10])
    assert integridad.verify_staged(path).reason.startswith(f"La copia {path.name} está truncada")


@pytest.mark.parametrize("stray", [b"\n", b"ab", b"abc", b"abcdefgh"], ids=["1-byte", "2-bytes", "3-bytes", "8-bytes"])
def test_a_few_stray_bytes_after_the_last_frame_are_named_as_leftover_data(tmp_path, stray):
    """Even fewer bytes than a frame's magic number are leftovers, not a cut frame; what comes before is whole."""
    data = b"copia completa " * 20_000
    path = _compressed(tmp_path / "sobrante.bin.zst", data)
    path.write_bytes(path.read_bytes() + stray)

    result = integridad.verify_staged(path)
    assert result.reason == ("La copia sobrante.bin.zst tiene datos sobrantes después del final del último bloque "
                             "comprimido.")
    assert result.decompressed_bytes == len(data)


# --- the format's own check, behind an intact compression -------------------------------------------


def _compressed(path: Path, data: bytes) -> Path:
    path.write_bytes(subprocess.run(["zstd", "-q", "-c", "--check"], input=data, capture_output=True,
                                    check=True).stdout)
    return path


def _tar_of(folder: Path) -> bytes:
    return subprocess.run(["tar", "--create", "--format=posix", "--file=-", f"--directory={folder}", "."],
                          capture_output=True, check=True).stdout


def test_a_tar_cut_between_two_members_is_caught_though_tar_itself_accepts_it(tmp_path):
    """GNU tar lists such a tar without complaint; its missing end-of-archive marker gives it away."""
    data = _tar_of(make_tree(tmp_path / "arbol"))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        last = archive.getmembers()[-1].offset
    cut = data[:last]
    assert subprocess.run(["tar", "--list", "--file=-"], input=cut, capture_output=True).returncode == 0

    result = integridad.verify_staged(_compressed(tmp_path / "cortado.tar.zst", cut))
    assert result.reason == "La copia cortado.tar.zst está truncada: el archivo tar termina sin su marca de fin."


def test_a_tar_cut_inside_a_member_is_caught_by_tar(tmp_path):
    data = _tar_of(make_tree(tmp_path / "arbol"))
    result = integridad.verify_staged(_compressed(tmp_path / "cortado.tar.zst", data[: len(data) // 2 + 100]))
    assert result.reason.startswith("La copia cortado.tar.zst está truncada: el archivo tar termina antes de tiempo "
                                    "(tar: Unexpected EOF in archive)")


@pytest.mark.parametrize("damage", ["cut-midway", "last-200-bytes-missing"])
@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_a_portal_whose_database_dump_is_incomplete_fails_though_its_tar_is_whole(good, engine, damage, tmp_path):
    """The portal's tar is intact and compressed well; the dump inside it stopped short."""
    made = good[engine]
    dump = subprocess.run(["zstd", "-dc", str(made.path)], capture_output=True, check=True).stdout
    dump = dump[: len(dump) // 2] if damage == "cut-midway" else dump[:-200]
    portal = tmp_path / "portal"
    make_tree(portal / "archivos")
    member = f"base_de_datos.{'dump' if engine == 'postgres' else 'sql'}"
    (portal / member).write_bytes(dump)
    tar = subprocess.run(["tar", "--create", "--format=posix", "--file=-", f"--directory={portal}", "archivos",
                          member], capture_output=True, check=True).stdout
    path = _compressed(tmp_path / "portal_web.tar.zst", tar)

    result = integridad.verify_staged(path)

    assert not result.intact and result.database_member == member
    expected = {"postgres": f"La copia {member} (dentro de portal_web.tar.zst) está truncada: el archivo de pg_dump "
                            "termina antes de tiempo",
                "mysql": f"La copia {member} (dentro de portal_web.tar.zst) está incompleta o truncada: le falta la "
                         "última línea «-- Dump completed on …»"}[engine]
    assert result.reason.startswith(expected), result.reason


@pytest.mark.parametrize("kind", ["files", "portal"])
@pytest.mark.parametrize("cut", ["inside-a-member", "between-two-members"])
def test_verificar_fecha_refuses_a_staged_tar_that_stops_short(good, kind, cut, tmp_path):
    """files and portal stage a plain tar: verificar_fecha reads it to its end with tar before it is compressed."""
    from airflow.sdk.exceptions import AirflowFailException

    from respaldo import tasks

    made = good[kind]
    data = subprocess.run(["zstd", "-dc", str(made.path)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
    biggest = max(members, key=lambda member: member.size)
    end = biggest.offset_data + biggest.size // 2 if cut == "inside-a-member" else members[-1].offset
    staged = tmp_path / ("portal_archivos.tar" if kind == "files" else "portal_web.tar")
    staged.write_bytes(data[:end])
    copy = {"staging": str(staged), "bytes": staged.stat().st_size,
            "started_at": (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()}
    target = ({"id": "portal_archivos", "kind": "files", "frequency": "diario", "path": "/srv/portal"}
              if kind == "files" else
              {"id": "portal_web", "kind": "portal", "frequency": "diario",
               "database": {"kind": "postgres", "conn_id": "pg_fuente", "database": "sistema_informacion"},
               "files": {"path": "/srv/portal"}})

    with pytest.raises(AirflowFailException) as failure:
        tasks.verificar_fecha(target | FILLED, {"timezone": "America/Bogota"}, copy)
    message = str(failure.value)
    if cut == "inside-a-member":
        assert message.startswith(f"La copia {staged.name} está truncada: el archivo tar termina antes de tiempo "
                                  "(tar: Unexpected EOF in archive)")
    else:
        assert message == f"La copia {staged.name} está truncada: el archivo tar termina sin su marca de fin."


def test_a_manual_copy_named_like_a_dump_is_checked_for_compression_only(tmp_path):
    """A person may deliver anything, even a file called .sql that no mariadb-dump wrote."""
    delivered = tmp_path / "entregado.sql"
    delivered.write_bytes(b"SELECT 'hecho a mano';\n" * 1000)
    artifact = artifacts.compress(delivered, tmp_path / "nomina_20261124T230000.sql.zst", log)

    assert integridad.verify_artifact(artifact.path, check_format=False).intact
    judged = integridad.verify_artifact(artifact.path)
    assert judged.reason.startswith("La copia nomina_20261124T230000.sql.zst no es un volcado de mariadb-dump")


def test_the_check_tools_get_no_secret_from_the_worker(good, monkeypatch, tmp_path):
    """pg_restore and tar run with PATH, LC_ALL and TZ only: nothing of the worker's environment reaches them."""
    monkeypatch.setenv("AIRFLOW_CONN_SECRETO", "postgresql://u:clave-que-no-debe-salir@h/db")
    seen = tmp_path / "entorno"
    wrapper = tmp_path / "bin"
    wrapper.mkdir()
    real = shutil.which("pg_restore")
    (wrapper / "pg_restore").write_text(f"#!/bin/sh\nenv >> {seen}\nexec {real} \"$@\"\n")
    (wrapper / "pg_restore").chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper}:{os.environ['PATH']}")

    assert integridad.verify_staged(good["postgres"].path).intact
    environment = seen.read_text()
    assert "clave-que-no-debe-salir" not in environment and "AIRFLOW_CONN" not in environment
    assert "LC_ALL=C" in environment and "TZ=UTC" in environment


def _children() -> set[tuple[str, str]]:
    """(pid, command name) of this process's child processes (the test servers among them)."""
    found = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                found.add((pid, (Path("/proc") / pid / "comm").read_text().strip()))
    return found


def test_a_verification_stopped_halfway_leaves_no_tool_running_and_no_thread(good, monkeypatch, tmp_path):
    """pg_restore is missing when the portal's dump shows up mid-stream: tar is stopped and the threads end."""
    from respaldo.errors import RespaldoError

    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "tar").symlink_to(shutil.which("tar"))
    monkeypatch.setenv("PATH", str(tools))
    threads, children = threading.active_count(), _children()

    with pytest.raises(RespaldoError, match="^No está instalado «pg_restore» en esta máquina"):
        integridad.verify_artifact(good["portal"].path)
    assert _children() == children
    assert threading.active_count() == threads
