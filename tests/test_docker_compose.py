"""The documented deployment, `docker compose up`, checked without a Docker engine.

There is no engine on the build machines, so the stack is never started here. What can be checked
is: the compose file is valid for docker-compose; its services, mounts, environment and connections
fit together and fit the docker inventory; the Dockerfile installs what the backups run; and the
SQL that the two PostgreSQL containers run on their first start works on a real PostgreSQL 15,
with the least-privilege role able to take the dump.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path, PurePosixPath

import pytest
import yaml

from respaldo.inventory import load_inventory

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"

AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-init", "airflow-worker", "flower"]
OTHER_SERVICES = ["postgres", "fuente-demo", "mailpit", "redis"]
#: Services that start only when their profile is asked for; everything else is production.
PROFILED = {"fuente-demo": "demo", "mailpit": "demo", "redis": "celery", "airflow-worker": "celery",
            "flower": "celery", "airflow-cli": "debug"}

#: Where the Airflow containers expect each part of the repository, and the backups volume.
MOUNTS = {
    "/opt/airflow/dags": "./dags",
    "/opt/airflow/plugins": "./plugins",
    "/opt/airflow/include": "./include",
    "/opt/airflow/logs": "./logs",
    "/var/backups/respaldo": "respaldos",
}

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def _interpolate(value):
    """Compose's variable substitution with every variable unset: ``${X:-default}`` gives the default."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: "$" if m.group(0) == "$$" else (m.group("default") or ""), value)
    if isinstance(value, dict):
        return {key: _interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item) for item in value]
    return value


def _compose_variables(text: str) -> set[str]:
    return {m.group("name") for m in _VARIABLE.finditer(text) if m.group("name")}


@cache
def raw_compose() -> dict:
    """The compose file as written (anchors and ``<<`` merges resolved by the YAML loader)."""
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@cache
def compose() -> dict:
    """The compose file with every variable at its default, as `docker compose up` without .env."""
    return _interpolate(raw_compose())


def service(name: str) -> dict:
    return compose()["services"][name]


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def mounts(name: str) -> dict[str, str]:
    """Container path -> source (host path or named volume) of a service's short-syntax volumes."""
    result = {}
    for entry in service(name).get("volumes") or []:
        source, target = entry.split(":")[:2]
        result[target] = source
    return result


def published_ports(name: str) -> set[int]:
    """Container ports published to the host."""
    return {int(str(entry).rsplit(":", 1)[-1].split("/")[0]) for entry in service(name).get("ports") or []}


def docker_inventory_path() -> Path:
    """The repository file that RESPALDO_INVENTORY names inside the containers, through the mounts."""
    inside = PurePosixPath(environment("airflow-scheduler")["RESPALDO_INVENTORY"])
    for target, source in mounts("airflow-scheduler").items():
        if inside.is_relative_to(target) and source.startswith("."):
            return REPO / source / inside.relative_to(target)
    raise AssertionError(f"RESPALDO_INVENTORY={inside} is under no directory mounted from the repository")


def compose_command() -> list[str]:
    """docker-compose (v1, what CI installs) or the docker compose plugin; missing is a failure."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    plugin = ["docker", "compose"]
    if shutil.which("docker") and subprocess.run([*plugin, "version"], capture_output=True).returncode == 0:
        return plugin
    pytest.fail("neither docker-compose nor the docker compose plugin is installed: "
                "apt-get install docker-compose")


# --- the compose file as docker-compose reads it ---------------------------------------------------


def _config(env_file: Path) -> subprocess.CompletedProcess:
    names = _compose_variables(COMPOSE_FILE.read_text(encoding="utf-8")) | {"COMPOSE_PROFILES"}
    env = {key: value for key, value in os.environ.items() if key not in names}
    argv = [*compose_command(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", "-q"]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("env_file", ["no .env (defaults)", ".env.example", "celery and demo profiles"])
def test_docker_compose_accepts_the_file(env_file, tmp_path):
    if env_file == ".env.example":
        env_path = ENV_EXAMPLE
    else:
        env_path = tmp_path / "empty.env"
        env_path.write_text("RESPALDO_EXECUTOR=CeleryExecutor\nCOMPOSE_PROFILES=celery,demo\n"
                            if "celery" in env_file else "")
    proc = _config(env_path)
    assert proc.returncode == 0, f"docker-compose config -q failed:\n{proc.stderr}"


def test_the_demo_and_celery_parts_start_only_with_their_profile():
    """docker-compose 1.29's `config` lists every service whatever the profile, so the file itself is read."""
    profiles = {name: body.get("profiles") for name, body in compose()["services"].items()}
    assert {name: p for name, p in profiles.items() if p} == {name: [p] for name, p in PROFILED.items()}


@pytest.mark.parametrize("name", sorted(set(AIRFLOW_SERVICES + OTHER_SERVICES) - set(PROFILED)))
def test_production_services_depend_on_nothing_of_a_profile(name):
    for needed in service(name).get("depends_on") or {}:
        assert needed not in PROFILED, f"{name} depends on {needed}, which only starts with --profile " \
                                       f"{PROFILED[needed]}"


@pytest.mark.parametrize(("name", "port"), [("mailpit", 8025), ("mailpit", 1025), ("flower", 5555),
                                            ("redis", 6379), ("airflow-worker", 8793)])
def test_pages_without_a_login_and_the_broker_are_published_on_loopback_only(name, port):
    [entry] = [str(e) for e in service(name)["ports"] if str(e).rsplit(":", 1)[-1] == str(port)]
    assert entry.startswith("127.0.0.1:"), entry


def test_the_workers_and_flower_wait_for_the_broker():
    for name in ("airflow-worker", "flower"):
        assert service(name)["depends_on"]["redis"]["condition"] == "service_healthy"


def test_the_worker_takes_the_queues_of_its_site_and_refuses_to_run_without_the_celery_executor():
    script = "\n".join(service("airflow-worker")["command"])
    assert 'airflow celery worker --queues "${RESPALDO_WORKER_QUEUES}"' in script
    assert "CeleryExecutor" in script and "exit 1" in script
    assert environment("airflow-worker")["RESPALDO_WORKER_QUEUES"] == "default"
    init = "\n".join(service("airflow-init")["command"])
    assert "CeleryExecutor" in init and "celery profile" in init


def test_the_celery_workers_preload_the_task_code_as_the_stack_of_the_tests_does():
    """Celery's ``imports`` names a module that exists and preloads (tests/test_precarga.py, test_celery_e2e.py)."""
    import importlib.util
    import json

    from devtools.airflow_stack import CELERY_PRELOAD

    config = json.loads(environment("airflow-worker")["AIRFLOW__CELERY__EXTRA_CELERY_CONFIG"])
    assert config == json.loads(CELERY_PRELOAD) == {"imports": ["respaldo.precarga_celery"]}
    assert importlib.util.find_spec("respaldo.precarga_celery") is not None


def test_the_visibility_timeout_outlasts_any_task_the_inventory_allows():
    from respaldo.inventory import Frequency

    [longest] = [m.le for m in Frequency.model_fields["timeout_hours"].metadata if getattr(m, "le", None)]
    for name in AIRFLOW_SERVICES:
        seconds = int(environment(name)["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"])
        assert seconds > longest * 3600 >= load_inventory(docker_inventory_path()).longest_timeout_hours() * 3600


@pytest.mark.parametrize("name", AIRFLOW_SERVICES + OTHER_SERVICES)
def test_every_documented_service_exists(name):
    assert name in compose()["services"], f"service {name} missing from docker-compose.yaml"


def test_every_variable_the_compose_file_reads_is_documented_in_env_example():
    used = _compose_variables(COMPOSE_FILE.read_text(encoding="utf-8"))
    documented = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M))
    assert used - documented == set()


def test_every_variable_has_a_default_so_compose_up_works_without_env_file():
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    no_default = {m.group("name") for m in _VARIABLE.finditer(text) if m.group("name") and not m.group("op")}
    assert no_default == set()


# --- the Airflow services ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
@pytest.mark.parametrize("target", MOUNTS)
def test_every_airflow_service_mounts_the_code_the_logs_and_the_backups(name, target):
    assert mounts(name).get(target) == MOUNTS[target]


def test_the_backups_volume_is_a_named_volume():
    assert "respaldos" in compose()["volumes"]


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
@pytest.mark.parametrize(("variable", "expected"), [
    ("AIRFLOW__CORE__EXECUTOR", "LocalExecutor"),
    ("AIRFLOW__CORE__LOAD_EXAMPLES", "false"),
    ("AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL", "30"),
    ("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "http://airflow-apiserver:8080/execution/"),
    ("RESPALDO_INVENTORY", "/opt/airflow/include/inventory.docker.yaml"),
])
def test_every_airflow_service_has_the_same_settings(name, variable, expected):
    assert environment(name).get(variable) == expected


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_reads_times_without_a_zone_in_the_docker_inventorys_timezone(name):
    assert environment(name)["AIRFLOW__CORE__DEFAULT_TIMEZONE"] == load_inventory(docker_inventory_path()).timezone


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_pythonpath_of_every_airflow_service_includes_the_mounted_include_folder(name):
    assert "/opt/airflow/include" in environment(name).get("PYTHONPATH", "").split(":")


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_every_airflow_service_runs_the_image_built_from_the_dockerfile(name):
    build = service(name).get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    assert context in (".", "./"), f"{name} is not built from ./Dockerfile"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_secrets_shared_by_the_airflow_components_are_the_same_everywhere(name):
    reference = environment("airflow-apiserver")
    for variable in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY",
                     "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CELERY__BROKER_URL",
                     "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert environment(name).get(variable) == reference.get(variable), variable


@pytest.mark.parametrize(("name", "port"), [
    ("airflow-apiserver", 8080),
    ("mailpit", 8025),
    ("mailpit", 1025),
])
def test_the_ui_and_mailpit_are_published_on_their_documented_ports(name, port):
    assert port in published_ports(name)


@pytest.mark.parametrize("step", ["airflow db migrate", "respaldo validate", "respaldo pools",
                                  "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
def test_airflow_init_migrates_the_database_writes_the_login_and_creates_the_pools(step):
    command = service("airflow-init")["command"]
    script = "\n".join(command) if isinstance(command, list) else command
    assert step in script


@pytest.mark.parametrize("name", [n for n in AIRFLOW_SERVICES if n != "airflow-init"])
def test_long_running_airflow_services_wait_for_airflow_init(name):
    depends = service(name)["depends_on"]
    assert depends["airflow-init"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"


# --- the docker inventory and its connections --------------------------------------------------------


def test_respaldo_inventory_points_at_a_repository_file_that_validates():
    path = docker_inventory_path()
    assert path.is_file(), f"{path} does not exist"
    inventory = load_inventory(path)
    assert inventory.targets, "the docker inventory backs nothing up"


def test_the_docker_inventory_stores_backups_on_the_backups_volume():
    assert load_inventory(docker_inventory_path()).storage.root == "/var/backups/respaldo"


def _conn_ids() -> dict[str, str]:
    """conn_id -> the Airflow connection type the inventory expects behind it."""
    inventory = load_inventory(docker_inventory_path())
    conn_ids = {inventory.register.conn_id: "postgres", inventory.alerts.smtp_conn_id: "smtp"}
    for target in inventory.targets:
        conn_id = getattr(target, "conn_id", None)
        if conn_id:
            conn_ids[conn_id] = target.kind
    return conn_ids


def _connections(name: str = "airflow-scheduler") -> dict[str, dict]:
    return {key.removeprefix("AIRFLOW_CONN_").lower(): json.loads(value)
            for key, value in environment(name).items() if key.startswith("AIRFLOW_CONN_")}


def test_every_conn_id_of_the_docker_inventory_has_an_airflow_conn_variable():
    missing = sorted(set(_conn_ids()) - set(_connections()))
    assert missing == [], f"no AIRFLOW_CONN_* variable for: {missing}"


def test_every_connection_has_the_type_the_inventory_expects_and_a_host_of_the_stack():
    services = set(compose()["services"])
    for conn_id, conn_type in _conn_ids().items():
        connection = _connections()[conn_id]
        assert connection["conn_type"] == conn_type, conn_id
        assert connection["host"] in services, f"{conn_id} points at {connection['host']}, not a service"


def test_the_smtp_connection_talks_plain_smtp_to_mailpit_with_a_sender():
    smtp = _connections()[load_inventory(docker_inventory_path()).alerts.smtp_conn_id]
    assert (smtp["host"], smtp["port"]) == ("mailpit", 1025)
    assert smtp["extra"] == {
        "disable_ssl": True, "disable_tls": True, "from_email": "respaldo@example.gov.co",
    }


def test_connection_passwords_in_the_compose_file_come_from_variables():
    raw_env = raw_compose()["services"]["airflow-scheduler"]["environment"]
    for key, value in raw_env.items():
        if key.startswith("AIRFLOW_CONN_") and '"password"' in value:
            assert re.search(r'"password": "\$\{[A-Z_]+:-[^}]*\}"', value), f"{key} has a literal password"


def test_no_literal_password_appears_in_the_docker_inventory():
    path = docker_inventory_path()
    tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    secrets = {value for key, value in environment("airflow-scheduler").items()
               if key.startswith("AIRFLOW_CONN_") for value in [json.loads(value).get("password")] if value}
    secret_words = re.compile(r"pass|secret|clave|contrase|token|pwd", re.I)

    def walk(node, where="") -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                assert not secret_words.search(str(key)), f"{path}: key {where}.{key} looks like a secret"
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{where}[{index}]")
        else:
            assert str(node) not in secrets, f"{path}: {where} holds a connection password"
            has_userinfo = re.search(r"://[^/@\s]+:[^/@\s]+@", str(node))
            assert not has_userinfo, f"{path}: {where} is a URL with a password"

    walk(tree)


def test_the_docker_inventory_builds_one_dag_per_frequency_class(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    inventory = load_inventory(docker_inventory_path())
    monkeypatch.setenv("RESPALDO_INVENTORY", str(docker_inventory_path()))
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    assert set(bag.dag_ids) == {f"respaldo_{name}" for name in inventory.frequencies} | {"respaldo_seguimiento",
                                                                                          "respaldo_simulacro"}


# --- the image -----------------------------------------------------------------------------------------


def dockerfile() -> str:
    # Join continuation lines so each instruction is one line.
    return DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")


def test_the_image_is_airflow_3_3_2_on_python_3_11():
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11\s*$", dockerfile(), re.M)


def test_the_dockerfile_installs_the_pinned_requirements():
    text = dockerfile()
    assert re.search(r"^COPY .*requirements\.txt", text, re.M)
    assert re.search(r"^RUN .*pip install [^\n]*-r \S*requirements\.txt", text, re.M)


@pytest.mark.parametrize(("package", "why"), [
    (r'"?postgresql-client-\$\{PG_MAJOR\}"?', "pg_dump, pg_restore and psql"),
    (r"zstd", "step 5 compresses with zstd"),
    (r"age", "encrypted copies (encryption) are written and read with age"),
    (r"openssh-client", "second copies on a remote host"),
    (r"default-mysql-client", "MySQL and MariaDB sources"),
    (r"fonts-dejavu-core", "the FT-GTI-004 PDF prints accents and ñ in DejaVu Sans"),
])
def test_the_dockerfile_installs_the_apt_packages_the_backups_run(package, why):
    install = [line for line in dockerfile().splitlines() if re.match(r"RUN .*apt-get install", line)]
    assert any(re.search(rf"(\s|^){package}(\s|;|$)", line) for line in install), f"missing: {why}"


def test_pg_dump_in_the_image_is_at_least_as_new_as_every_postgresql_server_of_the_stack():
    """pg_dump refuses to dump a newer server and dumps every older one: the image carries the newest major."""
    text = dockerfile()
    major = int(re.search(r"^ARG PG_MAJOR=(\d+)", text, re.M).group(1))
    servers = {name: body["image"] for name, body in compose()["services"].items()
               if str(body.get("image", "")).startswith("postgres:")}
    assert set(servers) == {"postgres", "fuente-demo"}
    for name, image in servers.items():
        assert int(image.split(":")[1].split(".")[0]) <= major, f"{name} ({image}) is newer than pg_dump {major}"
    assert major >= 18, "the newest major PGDG publishes, so one client dumps every source"
    assert re.search(r"^ENV PATH=\"/usr/lib/postgresql/\$\{PG_MAJOR\}/bin:", text, re.M), (
        "the pinned client must come first on PATH")


def test_the_build_context_holds_only_what_the_dockerfile_copies():
    copied = set(re.findall(r"^COPY (?:--\S+ )*(\S+) ", dockerfile(), re.M))
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", ".dockerignore must exclude everything first (.venv, .git, .env, logs)"
    assert {rule.removeprefix("!") for rule in rules[1:]} == copied


def test_the_image_has_a_respaldo_command():
    assert re.search(r"/usr/local/bin/respaldo", dockerfile())


# --- the first start of the two PostgreSQL containers, on a real PostgreSQL 15 ------------------------


@pytest.mark.parametrize(("name", "script"), [
    ("postgres", "docker/postgres/init-respaldo.sql"),
    ("fuente-demo", "docker/fuente-demo/init.sql"),
])
def test_each_database_container_runs_its_init_script_on_first_start(name, script):
    init_sources = [source for target, source in mounts(name).items()
                    if target.startswith("/docker-entrypoint-initdb.d/")]
    assert f"./{script}" in init_sources
    assert (REPO / script).is_file()


def _run_init_script(server, script: str, database: str, env: dict[str, str]) -> None:
    """Run a script as the postgres image does: psql as the superuser, stopping at the first error."""
    proc = subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-f", str(REPO / script)],
                          env={**server.env(database=database), **env}, capture_output=True, text=True)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr}"


def test_the_init_scripts_work_on_postgresql_15_and_the_read_only_role_can_dump(tmp_path):
    from devtools.servers import postgres_server

    lector = _connections()["pg_financiero"]
    registro = _connections()["respaldo_registro"]
    with postgres_server() as server:
        server.psql("CREATE DATABASE financiero")
        _run_init_script(server, "docker/fuente-demo/init.sql", "financiero",
                         {"FUENTE_LECTOR_PASSWORD": lector["password"]})
        _run_init_script(server, "docker/postgres/init-respaldo.sql", "postgres",
                         {"RESPALDO_DB_PASSWORD": registro["password"]})

        filled = server.psql(
            "SELECT (SELECT count(*) FROM contabilidad.terceros) > 0,"
            " (SELECT count(*) FROM contabilidad.cuentas) > 0,"
            " (SELECT count(*) FROM contabilidad.comprobantes) > 0,"
            " (SELECT count(*) FROM contabilidad.terceros WHERE razon_social ~ '[áéíóúñ]') > 0",
            database="financiero").stdout.strip()
        assert filled == "t|t|t|t"

        listings = {}
        for database in ("financiero", "sistema_informacion"):
            dump = tmp_path / f"{database}.dump"
            env = server.env(user=lector["login"], password=lector["password"], database=database)
            proc = subprocess.run(["pg_dump", "--format=custom", "--compress=0", f"--file={dump}"], env=env,
                                  capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
            listings[database] = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True,
                                                text=True, check=True).stdout
        for table in ("terceros", "cuentas", "comprobantes"):
            assert f"TABLE DATA contabilidad {table}" in listings["financiero"]
        assert "TABLE DATA gestion_documental radicados" in listings["sistema_informacion"]

        denied = server.psql("DELETE FROM contabilidad.comprobantes", database="financiero", check=False,
                             user=lector["login"], password=lector["password"])
        assert denied.returncode != 0 and "permission denied" in denied.stderr

        owner = server.psql("CREATE SCHEMA respaldo; SELECT current_user", database=registro["schema"],
                            user=registro["login"], password=registro["password"]).stdout.strip()
        assert owner == registro["login"]


def test_the_production_requirements_carry_no_test_tools():
    pinned = {line.split("==")[0].lower() for line in (REPO / "requirements.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    assert "apache-airflow" in pinned and "zstandard" in pinned
    assert not pinned & {"pytest", "pytest-timeout", "ruff", "aiosmtpd", "hypothesis", "playwright", "moto"}


def test_the_production_lock_has_the_celery_executor_with_the_celery_release_its_provider_imports_with():
    pinned = dict(line.split("==", 1) for line in (REPO / "requirements.txt").read_text().splitlines()
                  if "==" in line and not line.startswith("#"))
    assert "apache-airflow-providers-celery" in pinned and "redis" in pinned
    # celery 5.7.0 breaks the provider's import ("cannot import name 'retry' from 'celery.backends.database'").
    assert pinned["celery"] == "5.6.3"
    from airflow.providers.celery.executors.celery_executor import CeleryExecutor

    assert CeleryExecutor.__name__ == "CeleryExecutor"
