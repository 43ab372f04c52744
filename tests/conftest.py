"""Shared fixtures: a private Airflow (metadata in PostgreSQL), real servers on loopback.

Airflow reads its configuration when first imported, so the environment is set here, at import time,
before any test module imports Airflow. Everything created on the machine's own PostgreSQL gets a
unique name and is dropped at the end; nothing else there is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.demo_data import financiero_sql, sistema_informacion_sql  # noqa: E402
from devtools.servers import PostgresServer, SmtpServer  # noqa: E402

SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432"
RUN_KEY = uuid.uuid4().hex[:8]
METADATA_DB = f"respaldo_test_airflow_{RUN_KEY}"
REGISTER_DB = f"respaldo_test_registro_{RUN_KEY}"

#: The backup role's password: special characters on purpose (pgpass escaping) and long enough to be
#: found unambiguously wherever it might leak.
BACKUP_PASSWORD = "Clave:Respaldo/2026@ñ-" + RUN_KEY
BACKUP_ROLE = "respaldo_lector"

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="respaldo-airflow-"))
os.environ.update(
    AIRFLOW_HOME=str(AIRFLOW_HOME),
    AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
    AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__UNIT_TEST_MODE="False",
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"postgresql+psycopg://postgres@127.0.0.1:5432/{METADATA_DB}",
    AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(AIRFLOW_HOME / "logs"),
    # A stand-in for the worker's own secrets (Fernet key, JWT secret): no child tool may inherit it.
    AIRFLOW__RESPALDO__SECRETO="secreto-del-worker-" + RUN_KEY,
    AIRFLOW_CONN_RESPALDO_REGISTRO=json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": REGISTER_DB}
    ),
)


#: Every child tool's environment is exactly this, plus the tool's own variables.
MINIMAL_ENVIRONMENT = {"PATH", "LANG", "LC_ALL", "TZ", "HOME"}


def read_process(pid: int) -> dict:
    """What a running tool sees: its argv, its environment and its private folder's files with their modes."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    environ = dict(entry.decode().split("=", 1) for entry in entries if b"=" in entry)
    home = Path(environ["HOME"]) if "HOME" in environ else None
    files = {}
    if home is not None and home.is_dir():
        files = {path.name: stat.S_IMODE(path.stat().st_mode) for path in home.iterdir()}
        files["."] = stat.S_IMODE(home.stat().st_mode)
    return {"argv": [a.decode() for a in argv], "environ": environ, "home": home, "files": files}


def assert_only_its_own_environment(seen: dict, tool_vars: set[str], secrets: list[str]) -> None:
    """The child had nothing of the worker's environment, and no secret in argv or environ."""
    assert {"AIRFLOW_CONN_RESPALDO_REGISTRO", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "AIRFLOW__RESPALDO__SECRETO"} <= set(os.environ), "the worker holds what the child must not"
    environ = seen["environ"]
    assert set(environ) == MINIMAL_ENVIRONMENT | tool_vars, sorted(environ)
    assert not [name for name in environ if name.startswith("AIRFLOW")]
    assert (environ["TZ"], environ["LANG"], environ["LC_ALL"]) == ("UTC", "C.UTF-8", "C.UTF-8")
    assert environ["PATH"] == os.environ["PATH"]
    assert seen["home"].name.startswith("respaldo-") and seen["files"]["."] == 0o700
    assert {mode for name, mode in seen["files"].items() if name not in (".", "askpass")} == {0o600}
    assert not seen["home"].exists(), "the private folder outlived the tool"
    for secret in secrets:
        assert secret not in "\0".join(seen["argv"]), "secret in argv"
        assert not [name for name, value in environ.items() if secret in value], "secret in the environment"


def _system_sql(sql: str) -> None:
    with psycopg.connect(f"{SYSTEM_PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def own_register(prefix: str, conn_id: str):
    """A register database of its own (empty: no schema yet), reachable as the Airflow connection ``conn_id``
    while the block runs; dropped afterwards. Yields the database's name."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _system_sql(f'CREATE DATABASE "{name}"')
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
                {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": name}))
            yield name
    finally:
        _system_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        return
    _system_sql(f'CREATE DATABASE "{METADATA_DB}"')
    _system_sql(f'CREATE DATABASE "{REGISTER_DB}"')
    subprocess.run([str(ROOT / ".venv/bin/airflow"), "db", "migrate"], check=True, capture_output=True)


def pytest_unconfigure(config):
    settings = sys.modules.get("airflow.settings")
    if settings is not None:  # close this process's metadata connections before their database goes
        with contextlib.suppress(Exception):
            settings.dispose_orm()
    for name in (METADATA_DB, REGISTER_DB):
        try:
            _system_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error:
            pass
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def source_pg():
    """A PostgreSQL server with password auth holding the demo "financiero" and "sistema" databases."""
    server = PostgresServer().start()
    server.psql("CREATE DATABASE financiero")
    server.psql(financiero_sql(3000), database="financiero")
    server.psql("CREATE DATABASE sistema_informacion")
    server.psql(sistema_informacion_sql(3000), database="sistema_informacion")
    server.create_backup_role(BACKUP_ROLE, BACKUP_PASSWORD)
    os.environ["AIRFLOW_CONN_PG_FUENTE"] = json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": server.port, "login": BACKUP_ROLE,
        "password": BACKUP_PASSWORD, "schema": "financiero",
    })
    os.environ["AIRFLOW_CONN_PG_CLAVE_MALA"] = json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": server.port, "login": BACKUP_ROLE,
        "password": "no-es-la-clave", "schema": "financiero",
    })
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def smtp():
    server = SmtpServer().start()
    os.environ["AIRFLOW_CONN_SMTP_PRUEBAS"] = server.connection_json()
    yield server
    server.stop()


def register_rows_of(table: str = "control_backup", **where) -> list[dict]:
    """Rows of a table of the test register (``respaldo.<table>``) matching ``where``, in id order."""
    clauses = " AND ".join(f"{key} = %({key})s" for key in where) or "true"
    with psycopg.connect(f"{SYSTEM_PG}/{REGISTER_DB}") as conn, conn.cursor(
        row_factory=psycopg.rows.dict_row
    ) as cur:
        try:
            cur.execute(f"SELECT * FROM respaldo.{table} WHERE {clauses} ORDER BY id", where)
        except psycopg.errors.UndefinedTable:
            return []
        return cur.fetchall()


@pytest.fixture
def register_rows():
    """Read the FT-GTI-004 rows of the test register."""
    return register_rows_of


def write_inventory(path: Path, root: Path, targets: list[dict], frequencies: dict | None = None, *,
                    register_conn_id: str = "respaldo_registro", smtp_conn_id: str = "smtp_pruebas",
                    drills: dict | None = None) -> Path:
    """Write a test inventory (YAML is a superset of JSON, so JSON is written) and return its path."""
    inventory = {
        "organization": "Gobernación del Putumayo (pruebas)",
        "timezone": "America/Bogota",
        "storage": {"root": str(root)},
        "register": {"conn_id": register_conn_id},
        "alerts": {"smtp_conn_id": smtp_conn_id, "email": ["sistemas@example.gov.co"]},
        "frequencies": frequencies or {
            "financiero": {"schedule": ["0 13 * * *", "0 22 * * *"], "retries": 0},
            "diario": {"schedule": "0 23 * * *", "retries": 0},
            "servidores_virtuales": {"every_days": 8, "at": "02:00", "retries": 0},
        },
        "targets": [{"mechanism": "automatic", "responsible": "Profesional universitario área de sistemas",
                     **target} for target in targets],
    }
    if drills is not None:
        inventory["drills"] = drills
    path.write_text(json.dumps(inventory, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


@pytest.fixture
def backups(tmp_path, monkeypatch, source_pg, smtp):
    """A storage root and an inventory writer; ``backups.run(dag_id)`` runs a DAG through Airflow."""

    class Backups:
        root = tmp_path / "respaldos"
        inventory = tmp_path / "inventory.yaml"

        def write(self, targets: list[dict], frequencies: dict | None = None, **settings) -> Path:
            write_inventory(self.inventory, self.root, targets, frequencies, **settings)
            monkeypatch.setenv("RESPALDO_INVENTORY", str(self.inventory))
            return self.inventory

        def dag(self, dag_id: str):
            from airflow.dag_processing.dagbag import DagBag

            bag = DagBag(dag_folder=str(ROOT / "dags"))
            assert not bag.import_errors, bag.import_errors
            return bag.get_dag(dag_id)

        def run(self, dag_id: str, conf: dict | None = None, logical_date=None):
            return self.dag(dag_id).test(run_conf=conf, logical_date=logical_date)

    Backups.root.mkdir()
    return Backups()


@pytest.fixture(scope="session")
def sshd():
    """A real sshd on loopback; connections ``ssh_pruebas`` (key), ``ssh_clave`` (password) and broken ones."""
    from devtools.servers import SshServer, free_port

    server = SshServer().start()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(server.dir / "otro")], check=True)
    foreign_key = " ".join((server.dir / "otro.pub").read_text().split()[:2])
    os.environ.update(
        AIRFLOW_CONN_SSH_PRUEBAS=server.connection_json(),
        AIRFLOW_CONN_SSH_CLAVE=server.connection_json(key=False, password=server.password),
        AIRFLOW_CONN_SSH_CLAVE_MALA=server.connection_json(key=False, password="no-es-la-clave"),
        AIRFLOW_CONN_SSH_LLAVE_AJENA=server.connection_json(host_key=foreign_key),
        AIRFLOW_CONN_SSH_CAIDO=server.connection_json(port=free_port()),
    )
    yield server
    server.cleanup()


#: The MariaDB backup user's password: every character a MySQL option file treats specially (quotes,
#: backslash, «#» comments, «;», spaces, non-ASCII), and long enough to be found wherever it might leak.
MYSQL_BACKUP_PASSWORD = 'Clave "Respaldo" #2026; \\ñ\'-' + RUN_KEY
MYSQL_BACKUP_USER = "respaldo_lector"


@pytest.fixture(scope="session")
def source_mariadb():
    """A MariaDB server holding the demo "tesoreria" database, read by a least-privileged backup user."""
    from devtools.demo_data import tesoreria_mariadb_sql
    from devtools.servers import MariaDBServer

    server = MariaDBServer().start()
    server.sql("CREATE DATABASE tesoreria CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    server.sql(tesoreria_mariadb_sql(3000), database="tesoreria")
    server.create_backup_role(MYSQL_BACKUP_USER, MYSQL_BACKUP_PASSWORD, database="tesoreria")
    os.environ.update(
        AIRFLOW_CONN_MYSQL_FUENTE=server.connection_json(MYSQL_BACKUP_USER, MYSQL_BACKUP_PASSWORD, "tesoreria"),
        AIRFLOW_CONN_MYSQL_CLAVE_MALA=server.connection_json(MYSQL_BACKUP_USER, "no-es-la-clave", "tesoreria"),
    )
    yield server
    server.cleanup()


#: The drill servers' administrators (they create and drop the drills' databases).
DRILL_PG_CONN = "pg_simulacros"
DRILL_MYSQL_CONN = "mysql_simulacros"
DRILL_MYSQL_PASSWORD = "Clave 'Simulacros' #2026; \\ñ-" + RUN_KEY


@pytest.fixture(scope="session")
def drill_pg():
    """A PostgreSQL server of its own for restore drills, reached as its superuser (``pg_simulacros``)."""
    server = PostgresServer().start()
    os.environ[f"AIRFLOW_CONN_{DRILL_PG_CONN.upper()}"] = json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": server.port, "login": "postgres",
        "password": server.password, "schema": "postgres"})
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def drill_mariadb():
    """A MariaDB server of its own for restore drills; ``mysql_simulacros`` may create any object (DEFINER)."""
    from devtools.servers import MariaDBServer, _sql_string

    server = MariaDBServer().start()
    server.sql(f"CREATE USER 'simulacros'@'%' IDENTIFIED BY {_sql_string(DRILL_MYSQL_PASSWORD)};\n"
               "GRANT ALL PRIVILEGES ON *.* TO 'simulacros'@'%' WITH GRANT OPTION;\n")
    os.environ[f"AIRFLOW_CONN_{DRILL_MYSQL_CONN.upper()}"] = json.dumps({
        "conn_type": "mysql", "host": "127.0.0.1", "port": server.port, "login": "simulacros",
        "password": DRILL_MYSQL_PASSWORD})
    yield server
    server.cleanup()


from copias_de_prueba import copias  # noqa: E402, F401 - a session fixture shared by the drill and restore tests
