"""Good copies of every kind, taken once per session through Airflow, for the restore and drill tests.

Real sources on loopback: the demo databases of the throwaway PostgreSQL and MariaDB servers, a
folder and a portal's files read over sshd, a sparse disk image on the "hypervisor" (sshd again),
and a file a person dropped in an intake folder. The drill servers are servers of their own
(``drill_pg``, ``drill_mariadb``), so a drill can be seen to leave the sources alone.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: Every kind, each a target of the class "diario" (ids of their own: the register outlives a module).
PG = {"id": "sim_pg", "kind": "postgres", "conn_id": "pg_fuente", "database": "sistema_informacion"}
MYSQL = {"id": "sim_mysql", "kind": "mysql", "conn_id": "mysql_fuente", "database": "tesoreria"}
KINDS = ("sim_pg", "sim_mysql", "sim_archivos", "sim_portal", "sim_vm", "sim_manual")
IMAGE_BYTES = 64 << 20
IMAGE_DATA = ((0, 1 << 20), (20 << 20, 2 << 20), (50 << 20, 1 << 20))


def make_image(path: Path) -> Path:
    """A sparse disk image: 64 MiB, with three regions of data and holes between them."""
    with open(path, "wb") as handle:
        handle.truncate(IMAGE_BYTES)
        for offset, size in IMAGE_DATA:
            handle.seek(offset)
            handle.write(os.urandom(size // 2) + "Gobernación del Putumayo ".encode() * (size // 52))
    return path


def chown_tree(root: Path, user: str) -> None:
    account = pwd.getpwnam(user)
    for path in [root, *root.rglob("*")]:
        os.lchown(path, account.pw_uid, account.pw_gid)


@dataclass
class Copias:
    """The session's sources, its inventory, and the good copy (register row) of each target."""

    base: Path
    root: Path
    inventory: Path
    drill_folder: Path
    tree: Path
    portal_tree: Path
    image: Path
    delivered: bytes
    rows: dict[str, dict] = field(default_factory=dict)
    targets: list[dict] = field(default_factory=list)

    def use(self, monkeypatch) -> Path:
        monkeypatch.setenv("RESPALDO_INVENTORY", str(self.inventory))
        return self.inventory

    def dag(self, dag_id: str):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags"))
        assert not bag.import_errors, bag.import_errors
        return bag.get_dag(dag_id)


@pytest.fixture(scope="session")
def copias(source_pg, source_mariadb, sshd, smtp, drill_pg, drill_mariadb):
    from conftest import DRILL_MYSQL_CONN, DRILL_PG_CONN, register_rows_of, write_inventory
    from test_backup_files import make_tree

    from devtools.servers import SSH_TEST_USER

    base = Path(tempfile.mkdtemp(prefix="respaldo-simulacro-"))  # sshd's account must reach the sources
    base.chmod(0o755)
    root = base / "respaldos"
    root.mkdir()
    tree = make_tree(base / "arbol" / "documentos")
    portal_tree = make_tree(base / "portal" / "sitio")
    images = base / "hipervisor" / "images"
    images.mkdir(parents=True)
    image = make_image(images / "correo.img")
    for folder in (base / "arbol", base / "portal", base / "hipervisor"):
        folder.chmod(0o755)
        chown_tree(folder, SSH_TEST_USER)
    intake = base / "entregas" / "nomina"
    intake.mkdir(parents=True)
    delivered = os.urandom(40_000) + "nómina de noviembre".encode() * 2000
    (intake / "nomina_20261124.bin").write_bytes(delivered)
    stamp = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).timestamp()
    os.utime(intake / "nomina_20261124.bin", (stamp, stamp))
    targets = [
        PG, MYSQL,
        {"id": "sim_archivos", "kind": "files", "path": str(tree), "include": ["html", "uploads"],
         "exclude": ["*.tmp"], "conn_id": "ssh_pruebas"},
        {"id": "sim_portal", "kind": "portal",
         "database": {"kind": "postgres", "conn_id": "pg_fuente", "database": "financiero"},
         "files": {"path": str(portal_tree), "include": ["html", "uploads"], "conn_id": "ssh_pruebas"}},
        {"id": "sim_vm", "kind": "vm", "conn_id": "ssh_pruebas", "images": [str(image)]},
        {"id": "sim_manual", "kind": "files", "mechanism": "manual",
         "intake": {"path": str(intake), "pattern": "nomina_*.bin", "wait_hours": 0.01, "poke_minutes": 0.02,
                    "settle_seconds": 0}},
    ]
    targets = [{"frequency": "diario", **target} for target in targets]
    drill_folder = base / "simulacros"
    inventory = write_inventory(base / "inventario.yaml", root, targets,
                                {"diario": {"schedule": "0 23 * * *", "retries": 0}},
                                drills={"conn_id": DRILL_PG_CONN, "mysql_conn_id": DRILL_MYSQL_CONN,
                                        "folder": str(drill_folder)})
    found = Copias(base, root, inventory, drill_folder, tree, portal_tree, image, delivered, targets=targets)
    with pytest.MonkeyPatch.context() as patch:
        found.use(patch)
        run = found.dag("respaldo_diario").test()
    for target in KINDS:
        [row] = register_rows_of(target=target, run_id=run.run_id)
        assert row["status"] == "success", (target, row["error"])
        found.rows[target] = row
    yield found
    shutil.rmtree(base, ignore_errors=True)
