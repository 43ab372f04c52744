"""``respaldo restaurar``: every kind round-trips into a new database or folder, and nothing occupied is touched.

The copies are the session's good copies (``copias``); restored databases go to the drill servers
(``drill_pg``, ``drill_mariadb``) and are compared with the sources table by table.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import write_inventory
from copias_de_prueba import IMAGE_BYTES
from test_backup_files import snapshot

from devtools.demo_data import table_checksums_sql
from respaldo import cli


def restore(copias, what, destination, *extra) -> int:
    return cli.main(["restaurar", str(what), "--destino", str(destination), "--inventario", str(copias.inventory),
                     *extra])


def new_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def artifact(copias, target: str) -> Path:
    return Path(copias.rows[target]["artifact_path"])


def test_a_postgres_copy_restores_into_a_new_database_equal_to_the_source(copias, drill_pg, source_pg, capsys):
    name = new_name("restaurada_pg")
    assert restore(copias, artifact(copias, "sim_pg"), name) == 0
    out = capsys.readouterr().out
    assert f"Restaurando en la base nueva «{name}» de 127.0.0.1:{drill_pg.port}" in out
    assert "Suma SHA-256 correcta" in out and "public.tramites: 3.000 filas" in out
    assert "Coincide con lo que registró la copia al tomarla." in out
    assert (drill_pg.psql(table_checksums_sql(), database=name).stdout
            == source_pg.psql(table_checksums_sql(), database="sistema_informacion").stdout)
    drill_pg.psql(f"DROP DATABASE {name}")


def test_a_mysql_copy_restores_by_its_register_row_into_a_new_database_equal_to_the_source(
        copias, drill_mariadb, source_mariadb, capsys):
    name = new_name("restaurada_mysql")
    assert restore(copias, copias.rows["sim_mysql"]["id"], name) == 0
    out = capsys.readouterr().out
    assert f"fila {copias.rows['sim_mysql']['id']} del registro: «sim_mysql»" in out
    assert drill_mariadb.table_checksums(name) == source_mariadb.table_checksums("tesoreria")
    drill_mariadb.sql(f"DROP DATABASE {name}")


def test_a_destination_given_as_a_uri_is_created_there_and_its_password_is_never_shown(copias, drill_pg, capsys):
    from urllib.parse import quote

    name = new_name("restaurada_uri")
    uri = f"postgresql://postgres:{quote(drill_pg.password, safe='')}@127.0.0.1:{drill_pg.port}/{name}"
    assert cli.main(["restaurar", str(artifact(copias, "sim_pg")), "--destino", uri]) == 0
    captured = capsys.readouterr()
    assert drill_pg.password not in captured.out + captured.err
    assert name in drill_pg.psql("SELECT datname FROM pg_database").stdout.split()
    drill_pg.psql(f"DROP DATABASE {name}")


def test_a_folder_restores_with_names_links_modes_and_mtimes(copias, tmp_path, capsys):
    dest = tmp_path / "documentos"
    assert restore(copias, artifact(copias, "sim_archivos"), dest) == 0
    expected = {k: v for k, v in snapshot(copias.tree).items() if not k.endswith(".tmp")}
    assert snapshot(dest) == expected
    assert f"Carpeta {dest}: 5 archivo(s)" in capsys.readouterr().out


def test_a_portal_restores_its_files_and_its_database_beside_them(copias, tmp_path, drill_pg, source_pg, capsys):
    dest, name = tmp_path / "portal", new_name("portal_restaurado")
    assert restore(copias, copias.rows["sim_portal"]["id"], dest, "--base", name) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["archivos", "base_de_datos.dump"]
    assert snapshot(dest / "archivos") == snapshot(copias.portal_tree)
    assert (drill_pg.psql(table_checksums_sql(), database=name).stdout
            == source_pg.psql(table_checksums_sql(), database="financiero").stdout)
    out = capsys.readouterr().out
    assert f"Base del portal «{name}»" in out and "Coincide con lo que registró la copia" in out
    drill_pg.psql(f"DROP DATABASE {name}")


def test_a_disk_image_restores_byte_for_byte_and_stays_sparse(copias, tmp_path, capsys):
    dest = tmp_path / "vm"
    assert restore(copias, artifact(copias, "sim_vm"), dest) == 0
    image = dest / copias.image.relative_to("/")
    assert image.stat().st_size == IMAGE_BYTES
    assert image.read_bytes() == copias.image.read_bytes()
    assert image.stat().st_blocks * 512 < 8 << 20, "the holes of the image were kept"
    assert "(dispersa: sus huecos no ocupan disco)" in capsys.readouterr().out


def test_a_manual_copy_restores_the_file_as_it_was_delivered(copias, tmp_path, capsys):
    dest = tmp_path / "entrega"
    assert restore(copias, artifact(copias, "sim_manual"), dest) == 0
    assert [p.name for p in dest.iterdir()] == ["nomina_20261124.bin"]
    assert (dest / "nomina_20261124.bin").read_bytes() == copias.delivered
    assert "Coincide con lo que registró la copia" in capsys.readouterr().out


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_an_existing_database_with_anything_in_it_is_refused_and_left_alone(copias, engine, drill_pg, drill_mariadb,
                                                                            capsys):
    name = new_name("ocupada")
    if engine == "postgres":
        drill_pg.psql(f"CREATE DATABASE {name}")
        drill_pg.psql("CREATE TABLE de_otro (x int); INSERT INTO de_otro VALUES (42)", database=name)
        target = "sim_pg"
    else:
        drill_mariadb.sql(f"CREATE DATABASE {name}; CREATE TABLE {name}.de_otro (x int); "
                          f"INSERT INTO {name}.de_otro VALUES (42)")
        target = "sim_mysql"
    try:
        assert restore(copias, artifact(copias, target), name) == 1
        assert f"La base «{name}» ya existe" in capsys.readouterr().err
        if engine == "postgres":
            assert drill_pg.psql("SELECT count(*) FROM pg_class WHERE relname = 'tramites'", database=name
                                 ).stdout.strip() == "0"
            assert drill_pg.psql("SELECT x FROM de_otro", database=name).stdout.strip() == "42"
        else:
            assert drill_mariadb.sql(f"SHOW TABLES FROM {name}").stdout.split() == ["de_otro"]
    finally:
        if engine == "postgres":
            drill_pg.psql(f"DROP DATABASE {name}")
        else:
            drill_mariadb.sql(f"DROP DATABASE {name}")


def test_a_folder_with_anything_in_it_is_refused_and_left_alone(copias, tmp_path, capsys):
    dest = tmp_path / "ocupada"
    dest.mkdir()
    (dest / "de_otro.txt").write_text("no tocar\n")
    assert restore(copias, artifact(copias, "sim_archivos"), dest) == 1
    assert "ya existe y no está vacía" in capsys.readouterr().err
    assert [p.name for p in dest.iterdir()] == ["de_otro.txt"]


def test_an_empty_existing_folder_is_accepted(copias, tmp_path):
    dest = tmp_path / "vacia"
    dest.mkdir()
    assert restore(copias, artifact(copias, "sim_manual"), dest) == 0


def test_a_copy_whose_sum_does_not_match_is_not_restored(copias, tmp_path, capsys):
    spoilt = tmp_path / artifact(copias, "sim_archivos").name
    shutil.copy(artifact(copias, "sim_archivos"), spoilt)
    shutil.copy(artifact(copias, "sim_archivos").with_name(spoilt.name + ".sha256"), spoilt.with_name(spoilt.name
                                                                                                      + ".sha256"))
    with open(spoilt, "ab") as handle:
        handle.write(b"\0")
    dest = tmp_path / "no_debe_existir"
    assert restore(copias, spoilt, dest) == 1
    assert "no coincide con la de" in capsys.readouterr().err
    assert not dest.exists()


def test_a_restore_that_fails_halfway_removes_the_database_it_created(copias, tmp_path, drill_pg, capsys):
    """A copy cut short with a sum made for the cut file (and not in the register): zstd stops mid-way."""
    original = artifact(copias, "sim_pg")
    cut = tmp_path / "recortada.dump.zst"
    cut.write_bytes(original.read_bytes()[: original.stat().st_size // 2])
    digest = subprocess.run(["sha256sum", cut.name], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    cut.with_name(cut.name + ".sha256").write_text(digest)
    name = new_name("a_medias")
    assert restore(copias, cut, name) == 1
    err = capsys.readouterr().err
    assert "Se borró lo que se alcanzó a restaurar." in err, err
    assert name not in drill_pg.psql("SELECT datname FROM pg_database").stdout.split()


@pytest.mark.parametrize(("target", "destination", "drills", "said"), [
    ("sim_pg", "/tmp/una/carpeta", True, "no una carpeta"),
    ("sim_pg", "restaurada", False, "No hay servidor de simulacros PostgreSQL en el inventario (drills.conn_id)"),
    ("sim_archivos", "mysql://usuario@127.0.0.1:3306/otra", True, "indique una ruta como destino"),
], ids=["folder-for-a-database", "no-drill-server", "uri-for-a-folder"])
def test_a_destination_of_the_wrong_sort_is_a_usage_error(copias, tmp_path, target, destination, drills, said,
                                                          capsys):
    inventory = copias.inventory
    if not drills:
        inventory = write_inventory(tmp_path / "sin_simulacros.yaml", copias.root, copias.targets)
    code = cli.main(["restaurar", str(artifact(copias, target)), "--destino", destination, "--inventario",
                     str(inventory)])
    assert code == 2
    assert said in capsys.readouterr().err


def test_respaldo_check_says_whether_the_drill_servers_answer(copias, drill_pg, drill_mariadb, capsys):
    cli.main(["check", str(copias.inventory)])
    out = capsys.readouterr().out
    assert (f"[OK] servidor de simulacros PostgreSQL: conexión «pg_simulacros» responde "
            f"(127.0.0.1:{drill_pg.port})") in out
    assert (f"[OK] servidor de simulacros MySQL/MariaDB: conexión «mysql_simulacros» responde "
            f"(127.0.0.1:{drill_mariadb.port})") in out
