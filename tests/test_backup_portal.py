"""Web portals: database and files copied in the same run, one artifact restores the whole portal."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_backup_files import make_tree, snapshot
from test_backup_postgres import staged_files, states

from devtools.demo_data import table_checksums_sql
from devtools.servers import SSH_TEST_USER


@pytest.fixture
def portal_files(sshd):
    base = Path(tempfile.mkdtemp(prefix="respaldo-portal-"))
    base.chmod(0o755)
    files = make_tree(base / "portal")
    user = pwd.getpwnam(SSH_TEST_USER)
    for path in [files, *files.rglob("*")]:
        os.lchown(path, user.pw_uid, user.pw_gid)
    yield files
    shutil.rmtree(base)


def portal(files: Path, conn_id: str = "pg_fuente") -> dict:
    return {"id": "portal_web", "kind": "portal", "frequency": "diario",
            "database": {"kind": "postgres", "conn_id": conn_id, "database": "sistema_informacion"},
            "files": {"path": str(files), "include": ["html", "uploads"], "exclude": ["*.tmp"],
                      "conn_id": "ssh_pruebas"}}


def test_one_artifact_restores_the_portals_database_and_files(backups, source_pg, portal_files, tmp_path,
                                                              register_rows):
    backups.write([portal(portal_files)])
    run = backups.run("respaldo_diario")

    assert states(run)["portal_web.registrar"] == "success"
    [row] = register_rows(target="portal_web", run_id=run.run_id)
    assert row["status"] == "success" and row["kind"] == "portal"
    assert row["started_at"].replace(microsecond=0) <= row["backup_at"] <= row["finished_at"]
    artifact = Path(row["artifact_path"])

    restored = tmp_path / "portal"
    restored.mkdir()
    subprocess.run(f"zstd -dc '{artifact}' | tar -x -C '{restored}'", shell=True, check=True)
    assert sorted(p.name for p in restored.iterdir()) == ["archivos", "base_de_datos.dump"]
    expected = {k: v for k, v in snapshot(portal_files).items() if not k.endswith(".tmp")}
    assert snapshot(restored / "archivos") == expected

    source_pg.psql("CREATE DATABASE portal_restaurado")
    subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "-d", "portal_restaurado",
                    str(restored / "base_de_datos.dump")], env=source_pg.env(database="portal_restaurado"),
                   check=True, capture_output=True)
    assert (source_pg.psql(table_checksums_sql(), database="portal_restaurado").stdout
            == source_pg.psql(table_checksums_sql(), database="sistema_informacion").stdout)
    assert staged_files(backups.root) == []


def test_a_portal_whose_database_fails_leaves_no_half_portal(backups, portal_files, register_rows):
    backups.write([portal(portal_files, conn_id="pg_clave_mala")])
    run = backups.run("respaldo_diario")

    [row] = register_rows(target="portal_web", run_id=run.run_id)
    assert row["status"] == "failed" and "password authentication failed" in row["error"]
    assert [p for p in backups.root.rglob("*") if p.is_file()] == []


def test_a_portal_on_mysql_restores_with_mariadb_and_tar(backups, source_mariadb, portal_files, tmp_path,
                                                         register_rows):
    target = portal(portal_files)
    target["database"] = {"kind": "mysql", "conn_id": "mysql_fuente", "database": "tesoreria"}
    target["files"] = {**target["files"], "conn_id": None}
    backups.write([target])
    run = backups.run("respaldo_diario")

    [row] = register_rows(target="portal_web", run_id=run.run_id)
    assert row["status"] == "success", row["error"]
    restored = tmp_path / "portal"
    restored.mkdir()
    subprocess.run(f"zstd -dc '{row['artifact_path']}' | tar -x -C '{restored}'", shell=True, check=True)
    assert sorted(p.name for p in restored.iterdir()) == ["archivos", "base_de_datos.sql"]
    assert snapshot(restored / "archivos") == {k: v for k, v in snapshot(portal_files).items()
                                              if not k.endswith(".tmp")}
    source_mariadb.sql("CREATE DATABASE portal_mysql_restaurado")
    with open(restored / "base_de_datos.sql", "rb") as dump:
        subprocess.run(source_mariadb.client_argv("portal_mysql_restaurado"), stdin=dump, check=True,
                       capture_output=True)
    assert source_mariadb.table_checksums("portal_mysql_restaurado") == source_mariadb.table_checksums("tesoreria")


@pytest.mark.parametrize(("kind", "minutes", "expected"), [
    ("postgres", 2.5, 2.5), ("postgres", None, 5), ("mysql", 2.5, "solo se usa con bases postgres")])
def test_a_portals_postgres_database_takes_its_lock_wait_bound(kind, minutes, expected):
    from pydantic import ValidationError

    from respaldo.sources.portal import PortalSource, PortalTarget

    database = {"kind": kind, "conn_id": "base"} | ({"lock_wait_minutes": minutes} if minutes else {})
    entry = {"id": "portal_web", "kind": "portal", "frequency": "diario", "responsible": "x", "database": database,
             "files": {"path": "/var/www/portal"}}
    if isinstance(expected, str):
        with pytest.raises(ValidationError, match=expected):
            PortalTarget.model_validate(entry)
        return
    _, target = PortalSource()._database(PortalTarget.model_validate(entry))
    assert target.lock_wait_minutes == expected
