"""Encrypted copies (``encryption``): made by a real DAG run, opened by Debian's ``age`` and zstd alone.

One run of ``respaldo_diario`` through Airflow copies the PostgreSQL demo database (the class's X25519
recipient) and a folder (the target's own ``ssh-ed25519`` recipient); the tests then restore, re-read,
damage and drill those artifacts with the real tools and servers.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import DRILL_PG_CONN, ROOT, register_rows_of, write_inventory
from test_artifacts import original, tiny_disk  # noqa: F401 - fixtures shared with the plain artifacts' tests
from test_backup_files import make_tree, snapshot

from devtools.demo_data import table_checksums_sql
from respaldo import artifacts, cli, integridad
from respaldo.ciclo import cifrado
from respaldo.errors import ArtifactError

RESPALDO = str(ROOT / ".venv/bin/respaldo")
KEY = uuid.uuid4().hex[:6]
PG_ID, FILES_ID = f"cifrado_pg_{KEY}", f"cifrado_archivos_{KEY}"


def respaldo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RESPALDO, *args], capture_output=True, text=True, timeout=300)


def age_keygen(path: Path) -> str:
    """A new age key pair in ``path`` (as the README says to make it); returns the public ``age1…`` line."""
    done = subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, text=True, check=True)
    return done.stderr.split("Public key: ")[1].strip()


def ssh_keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "custodio", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


class Cifradas:
    base: Path
    root: Path
    inventory: Path
    tree: Path
    age_key: Path
    ssh_key: Path
    run_id: str
    rows: dict[str, dict]

    def artifact(self, target: str) -> Path:
        return Path(self.rows[target]["artifact_path"])


@pytest.fixture(scope="module")
def cifradas(tmp_path_factory, source_pg, smtp):
    from airflow.dag_processing.dagbag import DagBag

    found = Cifradas()
    found.base = tmp_path_factory.mktemp("cifrado")
    found.root = found.base / "respaldos"
    found.root.mkdir()
    found.tree = make_tree(found.base / "documentos")
    found.age_key, found.ssh_key = found.base / "clave.txt", found.base / "custodio"
    age_public, ssh_public = age_keygen(found.age_key), ssh_keygen(found.ssh_key)
    targets = [
        {"id": PG_ID, "kind": "postgres", "frequency": "diario", "conn_id": "pg_fuente",
         "database": "sistema_informacion"},
        {"id": FILES_ID, "kind": "files", "frequency": "diario", "path": str(found.tree),
         "encryption": {"recipients": [ssh_public]}},
    ]
    found.inventory = write_inventory(
        found.base / "inventario.yaml", found.root, targets,
        {"diario": {"schedule": "0 23 * * *", "retries": 0,
                    "encryption": {"recipients": [age_public], "drill_identity": str(found.age_key)}}},
        drills={"conn_id": DRILL_PG_CONN, "folder": str(found.base / "simulacros")})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RESPALDO_INVENTORY", str(found.inventory))
        bag = DagBag(dag_folder=str(ROOT / "dags"))
        assert not bag.import_errors, bag.import_errors
        run = bag.get_dag("respaldo_diario").test()
    found.run_id = run.run_id
    found.states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in run.get_task_instances()}
    found.rows = {target: row for target in (PG_ID, FILES_ID)
                  for row in register_rows_of(target=target, run_id=run.run_id)}
    yield found
    shutil.rmtree(found.base, ignore_errors=True)


def decrypt_pipeline(artifact: Path, key: Path, then: str, **kwargs) -> subprocess.CompletedProcess:
    """What the README tells a person to type: ``age -d -i KEY FILE | zstd -d | …``."""
    return subprocess.run(f"age -d -i '{key}' '{artifact}' | zstd -dc | {then}", shell=True, capture_output=True,
                          **kwargs)


def test_a_dag_run_stores_only_encrypted_artifacts_registered_as_success(cifradas):
    assert {state for task, state in cifradas.states.items()} == {"success"}, cifradas.states
    for target in (PG_ID, FILES_ID):
        row = cifradas.rows[target]
        assert row["status"] == "success" and row["error"] is None
        assert row["compression"] == "zstd-3+age"
        artifact = cifradas.artifact(target)
        assert artifact.name.endswith((".dump.zst.age", ".tar.zst.age"))
        assert artifact.read_bytes().startswith(b"age-encryption.org/v1\n")
        assert artifact.stat().st_size == row["compressed_bytes"]
        check = subprocess.run(["sha256sum", "-c", artifact.name + ".sha256"], cwd=artifact.parent,
                               capture_output=True, text=True)
        assert check.returncode == 0 and check.stdout.strip() == f"{artifact.name}: OK"
    stored = sorted(p.name for p in cifradas.root.rglob("*") if p.is_file())
    assert len(stored) == 4 and all(name.endswith((".zst.age", ".zst.age.sha256")) for name in stored), stored


def test_debian_age_and_zstd_restore_the_postgres_copy_equal_to_the_source(cifradas, source_pg):
    name = f"descifrada_{uuid.uuid4().hex[:8]}"
    source_pg.psql(f"CREATE DATABASE {name}")
    done = decrypt_pipeline(cifradas.artifact(PG_ID), cifradas.age_key,
                            f"pg_restore --no-owner --exit-on-error -d {name}", env=source_pg.env(database=name))
    assert done.returncode == 0, done.stderr
    assert (source_pg.psql(table_checksums_sql(), database=name).stdout
            == source_pg.psql(table_checksums_sql(), database="sistema_informacion").stdout)
    source_pg.psql(f"DROP DATABASE {name}")


def test_the_ssh_ed25519_key_opens_the_folder_copy_and_the_other_key_does_not(cifradas, tmp_path):
    dest = tmp_path / "restaurado"
    dest.mkdir()
    done = decrypt_pipeline(cifradas.artifact(FILES_ID), cifradas.ssh_key, f"tar -x -C '{dest}'")
    assert done.returncode == 0, done.stderr
    assert snapshot(dest) == snapshot(cifradas.tree)
    wrong = subprocess.run(["age", "-d", "-i", str(cifradas.age_key), str(cifradas.artifact(FILES_ID))],
                           capture_output=True)
    assert wrong.returncode != 0 and b"no identity matched" in wrong.stderr


def test_respaldo_verificar_reads_sums_and_structure_without_the_key_and_everything_with_it(cifradas):
    without = respaldo("verificar", str(cifradas.inventory), "--objetivo", PG_ID)
    assert without.returncode == 0, without.stdout + without.stderr
    assert "íntegro " in without.stdout and "cifrada, sin la clave privada" in without.stdout
    assert "estructura age (age v1 para 1 destinatario(s) (X25519)" in without.stdout

    one_key = respaldo("verificar", str(cifradas.inventory), "--identidad", str(cifradas.age_key))
    assert one_key.returncode == 0, one_key.stdout + one_key.stderr  # a key that does not fit is no damage
    assert "2 íntegro(s), 0 dañado(s)." in one_key.stdout
    assert f"no es ninguna de aquellas a las que se cifró {cifradas.artifact(FILES_ID).name}" in one_key.stdout
    assert one_key.stdout.count("sin la clave privada") == 1

    full = respaldo("verificar", str(cifradas.inventory), "--identidad", str(cifradas.age_key), "--identidad",
                    str(cifradas.ssh_key))
    assert full.returncode == 0, full.stdout + full.stderr
    assert "2 íntegro(s), 0 dañado(s)." in full.stdout and "comprobado:" not in full.stdout
    [row] = register_rows_of(id=cifradas.rows[PG_ID]["id"])
    assert row["verify_status"] == "intact"


@pytest.mark.parametrize("damage", ["truncada", "bit_cambiado"])
def test_respaldo_verificar_finds_a_damaged_encrypted_copy_with_or_without_the_key(cifradas, damage):
    artifact = cifradas.artifact(PG_ID)
    good = artifact.read_bytes()
    try:
        if damage == "truncada":
            artifact.write_bytes(good[: len(good) // 2 + 7])
        else:
            flipped = bytearray(good)
            flipped[len(good) // 3] ^= 0x04
            artifact.write_bytes(bytes(flipped))
        without = respaldo("verificar", str(cifradas.inventory), "--objetivo", PG_ID)
        assert without.returncode == 1, without.stdout + without.stderr
        assert "dañado" in without.stdout and "no coincide con la de" in without.stdout

        full = respaldo("verificar", str(cifradas.inventory), "--objetivo", PG_ID, "--identidad",
                        str(cifradas.age_key))
        assert full.returncode == 1, full.stdout + full.stderr
        assert f"No se pudo descifrar la copia {artifact.name}" in full.stdout
        assert "dañada o truncada" in full.stdout
        [row] = register_rows_of(id=cifradas.rows[PG_ID]["id"])
        assert row["verify_status"] == "damaged" and "descifrar" in row["verify_error"]
    finally:
        artifact.write_bytes(good)
        assert respaldo("verificar", str(cifradas.inventory), "--objetivo", PG_ID).returncode == 0  # intact again


def test_a_wrong_or_missing_identity_is_said_in_plain_words(cifradas, tmp_path):
    other = tmp_path / "otra.txt"
    age_keygen(other)
    found = integridad.verify_artifact(cifradas.artifact(PG_ID), identity=other)
    assert found.intact and not found.decrypted  # sums and structure hold: the key is wrong, not the copy
    assert f"la clave privada {other} no es ninguna de aquellas a las que se cifró" in found.checked
    missing = respaldo("verificar", str(cifradas.inventory), "--identidad", str(tmp_path / "no-existe.txt"))
    assert missing.returncode == 2 and "No existe el archivo de clave privada" in missing.stderr


def test_respaldo_restaurar_needs_the_identity_and_restores_with_it(cifradas, drill_pg, source_pg, capsys, tmp_path):
    artifact = cifradas.artifact(PG_ID)
    name = f"restaurada_{uuid.uuid4().hex[:8]}"
    args = ["restaurar", str(artifact), "--destino", name, "--inventario", str(cifradas.inventory)]

    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "No se restauró nada" in err and "está cifrada con age" in err and "--identidad ARCHIVO" in err
    other = tmp_path / "otra.txt"
    age_keygen(other)
    assert cli.main([*args, "--identidad", str(other)]) == 1
    err = capsys.readouterr().err
    assert "no es ninguna de aquellas a las que se cifró" in err and "No se restauró nada" in err
    assert name not in drill_pg.psql("SELECT datname FROM pg_database").stdout.split()

    assert cli.main([*args, "--identidad", str(cifradas.age_key)]) == 0
    out = capsys.readouterr().out
    assert "la clave privada" in out and "Coincide con lo que registró la copia al tomarla." in out
    assert (drill_pg.psql(table_checksums_sql(), database=name).stdout
            == source_pg.psql(table_checksums_sql(), database="sistema_informacion").stdout)
    drill_pg.psql(f"DROP DATABASE {name}")


def test_a_drill_decrypts_with_its_drill_identity_or_fails_saying_why(cifradas, drill_pg):
    from respaldo.dag_factory import task_target
    from respaldo.inventory import load_inventory, target_from
    from respaldo.simulacro import ejercicio

    inventory = load_inventory(cifradas.inventory)
    settings = inventory.drill_settings("respaldo_simulacro")
    target = target_from(task_target(inventory.target(PG_ID), inventory.frequencies["diario"]))
    approved = ejercicio.drill(target, settings, ejercicio.Ejecucion("respaldo_simulacro", f"prueba_{KEY}_1"))
    assert approved["veredicto"] == "aprobado", approved

    blind = target.model_copy(update={"encryption": target.encryption.model_copy(update={"drill_identity": None})})
    failed = ejercicio.drill(blind, settings, ejercicio.Ejecucion("respaldo_simulacro", f"prueba_{KEY}_2"))
    assert failed["veredicto"] == "fallido"
    assert "está cifrada con age y el inventario no indica `encryption.drill_identity`" in failed["motivo"]
    [row] = register_rows_of("simulacro", id=failed["simulacro"])
    assert row["verdict"] == "fallido" and "drill_identity" in row["error"]

    elsewhere = target.model_copy(update={"encryption": target.encryption.model_copy(
        update={"drill_identity": str(cifradas.base / "no-existe.txt")})})
    missing = ejercicio.drill(elsewhere, settings, ejercicio.Ejecucion("respaldo_simulacro", f"prueba_{KEY}_3"))
    assert missing["veredicto"] == "fallido"
    assert "(`encryption.drill_identity`) no existe o no se puede leer en esta máquina" in missing["motivo"]


def test_validate_names_a_bad_recipient_and_refuses_a_private_key_without_repeating_it(tmp_path):
    secret = "AGE-SECRET-KEY-1" + "Q" * 58
    good = age_keygen(tmp_path / "k.txt")
    mistyped = good[:-1] + ("q" if good[-1] != "q" else "p")
    inventory = write_inventory(tmp_path / "inventario.yaml", tmp_path / "r", [
        {"id": "docs", "kind": "files", "frequency": "diario", "path": "/srv/docs",
         "encryption": {"recipients": ["ssh-rsa AAAAB3NzaC1yc2E"]}},
    ], {"diario": {"schedule": "0 23 * * *",
                   "encryption": {"recipients": [good, mistyped, secret], "drill_identity": "clave.txt"}}})

    done = respaldo("validate", str(inventory))

    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "frequencies.diario.encryption.recipients[1]: su suma de control no cuadra" in said
    assert "frequencies.diario.encryption.recipients[2]: esto es una clave PRIVADA" in said
    assert "frequencies.diario.encryption.drill_identity: la ruta del archivo de clave para simulacros debe ser " \
           "absoluta" in said
    assert "targets[0].encryption.recipients[0]: las claves «ssh-rsa» no se aceptan" in said
    assert secret not in said and secret[:20] not in said


@pytest.mark.parametrize(("value", "problem"), [
    ("age1qqqq", "tiene 62 caracteres"),
    ("AGE1" + "Q" * 58, "minúsculas"),
    ("age1" + "b" * 58, "caracteres que no pueden ir"),
    ("ssh-ed25519", "le falta su parte en base64"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB", "no es válida"),
    ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ==", "no es una clave pública ssh-ed25519"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "clave PRIVADA"),
    ("clave", "no es un destinatario de age"),
])
def test_each_kind_of_bad_recipient_gets_its_reason(value, problem):
    with pytest.raises(ValueError, match=problem):
        cifrado.check_recipient(value)


def test_what_age_keygen_and_ssh_keygen_make_is_accepted_and_age_encrypts_to_it(tmp_path):
    keys = [age_keygen(tmp_path / f"k{number}.txt") for number in range(3)] + [ssh_keygen(tmp_path / "id")]
    for public in keys:
        assert cifrado.check_recipient(public) == public
        done = subprocess.run(["age", "-r", public], input=b"hola", capture_output=True)
        assert done.returncode == 0, done.stderr
    mistyped = keys[0][:-1] + ("q" if keys[0][-1] != "q" else "p")
    refused = subprocess.run(["age", "-r", mistyped], input=b"hola", capture_output=True)
    assert refused.returncode != 0  # age agrees: the checksum is what catches the typo
    with pytest.raises(ValueError, match="suma de control"):
        cifrado.check_recipient(mistyped)


def test_the_structure_check_without_the_key_finds_a_cut_inside_a_chunk_and_a_foreign_file(cifradas, tmp_path):
    artifact = cifradas.artifact(FILES_ID)
    whole = cifrado.structure(artifact)
    assert whole.problem is None and whole.stanzas == ("ssh-ed25519",) and whole.chunks >= 1
    data = artifact.read_bytes()
    payload = data.index(b"\n", data.index(b"\n--- ") + 1) + 1 + cifrado.NONCE_BYTES
    cut = tmp_path / artifact.name
    cut.write_bytes(data[:payload + 8])  # less than a chunk's tag: no age file ends like that
    assert "termina a medias" in cifrado.structure(cut).problem
    cut.write_bytes(data[:payload + 4000])  # a cut that looks like a short last chunk: only the sums show it
    assert cifrado.structure(cut).problem is None
    plain = tmp_path / "plano.tar.zst.age"
    plain.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(100))
    assert "no es un archivo cifrado con age" in cifrado.structure(plain).problem


def test_the_dag_docs_say_how_to_restore_an_encrypted_copy(cifradas):
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RESPALDO_INVENTORY", str(cifradas.inventory))
        dag = DagBag(dag_folder=str(ROOT / "dags")).get_dag("respaldo_diario")
    assert "age -d -i CLAVE_PRIVADA ARCHIVO.zst.age | zstd -dc" in dag.doc_md
    assert f"`{FILES_ID}`, `{PG_ID}`" in dag.doc_md


def test_a_full_disk_while_encrypting_fails_plainly_and_leaves_nothing_half_written(
        original, tiny_disk, tmp_path):  # noqa: F811 - the fixtures imported above
    import logging

    public = age_keygen(tmp_path / "k.txt")
    earlier = tiny_disk / "anterior.dump.zst.age"
    earlier.write_bytes(b"respaldo anterior")
    with pytest.raises(ArtifactError) as failure:
        artifacts.compress(original, tiny_disk / "x.dump.zst.age", logging.getLogger("test"), recipients=[public])
    assert "No hay espacio en disco" in str(failure.value) and str(tiny_disk) in str(failure.value)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["anterior.dump.zst.age"]
    assert earlier.read_bytes() == b"respaldo anterior"


def test_an_encrypted_artifact_is_what_age_and_zstd_give_back_byte_for_byte(original, tmp_path):  # noqa: F811
    import hashlib
    import logging

    key = tmp_path / "k.txt"
    public = age_keygen(key)
    made = artifacts.compress(original, tmp_path / "x.dump.zst.age", logging.getLogger("test"), recipients=[public])
    assert made.compression == "zstd-3+age" and made.path.name.endswith(".zst.age")
    back = subprocess.run(f"age -d -i '{key}' '{made.path}' | zstd -dc", shell=True, capture_output=True, check=True)
    assert hashlib.sha256(back.stdout).digest() == hashlib.sha256(original.read_bytes()).digest()
    assert made.sha256 == hashlib.sha256(made.path.read_bytes()).hexdigest()


def test_the_encrypted_twin_is_reread_against_the_sum_taken_while_age_wrote_it(cifradas, tmp_path):
    row = cifradas.rows[PG_ID]
    artifact = cifradas.artifact(PG_ID)
    problem, checked = cifrado.check_written(artifact, row["sha256"], row["compressed_bytes"])
    assert problem is None and checked.startswith("suma SHA-256 igual a la calculada al cifrar y age v1")
    altered = tmp_path / artifact.name
    data = bytearray(artifact.read_bytes())
    data[-100] ^= 1
    altered.write_bytes(bytes(data))
    problem, _ = cifrado.check_written(altered, row["sha256"], row["compressed_bytes"])
    assert problem.startswith(f"La copia cifrada {artifact.name} no es la que se escribió")
