"""The inventory: a bad one is rejected with every problem at once, each with its line and a hint."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from respaldo.errors import InventoryError
from respaldo.inventory import load_inventory

ROOT = Path(__file__).resolve().parents[1]
RESPALDO = ROOT / ".venv" / "bin" / "respaldo"

GOOD = """\
organization: Gobernación del Putumayo
timezone: America/Bogota
storage:
  root: /var/backups/respaldo
alerts:
  email: [sistemas@example.gov.co]
frequencies:
  financiero:
    schedule: ["0 13 * * *", "0 22 * * *"]
  diario:
    schedule: "0 23 * * *"
  servidores_virtuales:
    every_days: 8
    at: "02:00"
targets:
  - id: financiero_pg
    kind: postgres
    frequency: financiero
    mechanism: automatic
    conn_id: pg_financiero
    database: financiero
    responsible: Profesional universitario área de sistemas
  - id: sistema_pg
    kind: postgres
    frequency: diario
    conn_id: pg_sistemas
    responsible: Profesional universitario área de sistemas
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(InventoryError) as failure:
        load_inventory(write(tmp_path, text))
    return [str(p) for p in failure.value.problems]


def test_a_good_inventory_loads_with_its_defaults(tmp_path):
    inventory = load_inventory(write(tmp_path, GOOD))
    assert [t.id for t in inventory.targets] == ["financiero_pg", "sistema_pg"]
    assert inventory.register.conn_id == "respaldo_registro"
    assert inventory.alerts.smtp_conn_id == "smtp_default"
    assert inventory.frequencies["financiero"].crons == ["0 13 * * *", "0 22 * * *"]
    assert inventory.frequencies["diario"].retries == 2
    assert inventory.frequencies["diario"].retry_delay_minutes == 5
    assert inventory.target("sistema_pg").mechanism == "automatic"


def test_a_targets_queue_is_its_own_else_its_class_else_default(tmp_path):
    text = (GOOD.replace('    schedule: "0 23 * * *"\n', '    schedule: "0 23 * * *"\n    queue: sede_pasto\n')
                .replace("    conn_id: pg_sistemas\n", "    conn_id: pg_sistemas\n    queue: sede-mocoa\n"))
    other = "  - id: otro_pg\n    kind: postgres\n    frequency: diario\n    conn_id: pg_otro\n    responsible: X\n"
    inventory = load_inventory(write(tmp_path, text + other))
    assert inventory.queue_of(inventory.target("financiero_pg")) == "default"
    assert inventory.queue_of(inventory.target("sistema_pg")) == "sede-mocoa"
    assert inventory.queue_of(inventory.target("otro_pg")) == "sede_pasto"
    assert inventory.queues() == ["default", "sede-mocoa", "sede_pasto"]


def test_the_inventory_shipped_in_include_is_valid():
    inventory = load_inventory(ROOT / "include" / "inventory.yaml")
    assert {"financiero", "diario", "servidores_virtuales"} <= set(inventory.frequencies)


def test_the_path_comes_from_respaldo_inventory_when_not_given(tmp_path, monkeypatch):
    monkeypatch.setenv("RESPALDO_INVENTORY", str(write(tmp_path, GOOD)))
    assert load_inventory().path == str(tmp_path / "inventory.yaml")


# (what is wrong, the change to GOOD, the line, words the message must contain)
BAD_CASES = [
    ("misspelled key", ("    responsible: Profesional universitario área de sistemas\n  - id: sistema_pg",
                        "    responsable: X\n  - id: sistema_pg"), 22,
     ["clave desconocida «responsable»", "¿Quiso decir «responsible»?"]),
    ("missing field", ("    conn_id: pg_sistemas\n", ""), 23, ["falta el campo obligatorio «conn_id»"]),
    ("duplicate id", ("id: sistema_pg", "id: financiero_pg"), 23, ["id «financiero_pg» repetido", "16, 23"]),
    ("unknown frequency", ("frequency: diario", "frequency: diaria"), 25,
     ["clase de frecuencia desconocida «diaria»", "¿Quiso decir «diario»?"]),
    ("bad cron", ('"0 23 * * *"', '"0 24 * * *"'), 11, ["«0 24 * * *» no es una expresión cron válida"]),
    ("id escaping the storage root", ("id: sistema_pg", "id: ../../etc"), 23,
     ["«../../etc» no sirve como nombre"]),
    ("unknown kind", ("kind: postgres\n    frequency: diario", "kind: postgresql\n    frequency: diario"), 24,
     ["tipo «postgresql» no soportado", "¿Quiso decir «postgres»?"]),
    ("relative storage root", ("root: /var/backups/respaldo", "root: respaldos"), 4, ["ruta absoluta"]),
    ("unknown timezone", ("America/Bogota", "America/Bogata"), 2, ["zona horaria desconocida «America/Bogata»"]),
    ("schedule and every_days together", ('    every_days: 8\n', '    every_days: 8\n    schedule: "0 1 * * *"\n'),
     12, ["`schedule` (cron) o `every_days`"]),
    ("a bad e-mail address", ("sistemas@example.gov.co", "sistemas.example.gov.co"), 6,
     ["no es una dirección de correo"]),
    ("misspelled mechanism", ("    mechanism: automatic\n", "    mechanism: automatico\n"), 19,
     ["valor «automatico» no permitido", "'automatic' or 'manual'"]),
    ("manual target without its intake folder", ("    mechanism: automatic\n", "    mechanism: manual\n"), 16,
     ["falta el campo obligatorio «intake»"]),
    ("manual target with an automatic copy's key", ("    mechanism: automatic\n", "    mechanism: manual\n"), 20,
     ["clave desconocida «conn_id»", "Claves válidas:", "intake"]),
    ("broken YAML", ("  diario:\n", "  diario\n"), 11, ["YAML mal formado", "el bloque empieza en la línea 10"]),
    ("duplicate key", ("    database: financiero\n", "    database: financiero\n    database: otra\n"), 22,
     ["clave repetida"]),
    ("a target queue with a comma",
     ("    conn_id: pg_sistemas\n", "    conn_id: pg_sistemas\n    queue: pasto,mocoa\n"), 27,
     ["«pasto,mocoa» no sirve como cola", "--queues"]),
    ("a class queue with a space and capitals", ('    schedule: "0 23 * * *"\n',
                                                 '    schedule: "0 23 * * *"\n    queue: Sede Pasto\n'),
     12, ["«Sede Pasto» no sirve como cola"]),
]


@pytest.mark.parametrize(("old_new", "line", "words"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_a_bad_inventory_names_the_problem_its_line_and_a_hint(tmp_path, old_new, line, words):
    old, new = old_new
    assert old in GOOD
    found = problems(tmp_path, GOOD.replace(old, new, 1))
    matching = [p for p in found if all(w in p for w in words)]
    assert matching, found
    assert any(p.startswith(f"{tmp_path / 'inventory.yaml'}:{line}:") for p in matching), matching


def test_every_problem_is_reported_at_once(tmp_path):
    text = (GOOD.replace("responsible: Profesional universitario área de sistemas\n  - id", "responsable: X\n  - id")
                .replace("frequency: diario", "frequency: diaria")
                .replace('"0 23 * * *"', '"0 99 * * *"'))
    found = problems(tmp_path, text)
    assert len(found) >= 4, found
    assert any("responsable" in p for p in found)
    assert any("diaria" in p for p in found)
    assert any("0 99" in p for p in found)


@pytest.mark.parametrize(("executor", "visibility", "warned"), [
    ("CeleryExecutor", "3600", True),
    ("airflow.providers.celery.executors.celery_executor.CeleryExecutor", None, False),  # 24 h by default
    ("CeleryExecutor", "21600", False),
    ("LocalExecutor", "3600", False),
])
def test_validate_warns_when_a_task_may_outlive_celerys_visibility_timeout(tmp_path, executor, visibility, warned):
    path = write(tmp_path, GOOD.replace('    every_days: 8\n', '    every_days: 8\n    timeout_hours: 6\n'))
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(AIRFLOW__CORE__EXECUTOR=executor, AIRFLOW_HOME=str(tmp_path))
    if visibility:
        env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"] = visibility
    proc = subprocess.run([str(RESPALDO), "validate", str(path)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert ("Advertencia: con CeleryExecutor" in proc.stdout) == warned, proc.stdout
    if warned:
        assert "3600 s" in proc.stdout and "servidores_virtuales" in proc.stdout
        assert "por encima de 21600" in proc.stdout


def test_validate_reads_the_visibility_timeout_from_airflow_cfg_too(tmp_path):
    path = write(tmp_path, GOOD)
    (tmp_path / "airflow.cfg").write_text("[core]\nexecutor = CeleryExecutor\n\n"
                                          "[celery_broker_transport_options]\nvisibility_timeout = 600\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    proc = subprocess.run([str(RESPALDO), "validate", str(path)], capture_output=True, text=True,
                          env={**env, "AIRFLOW_HOME": str(tmp_path)})
    assert "más de 600 s" in proc.stdout, proc.stdout


def test_validate_prints_every_problem_without_a_traceback_and_exits_1(tmp_path):
    text = GOOD.replace("frequency: diario", "frequency: diaria").replace("    conn_id: pg_sistemas\n", "")
    path = write(tmp_path, text)
    proc = subprocess.run([str(RESPALDO), "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "El inventario tiene 2 problemas" in proc.stderr
    assert f"{path}:25:" in proc.stderr and "conn_id" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_validate_reads_nothing_but_the_file(tmp_path):
    """No network and no other file: the connections it names need not exist anywhere."""
    path = write(tmp_path, GOOD)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RESPALDO"))}
    env["AIRFLOW_HOME"] = str(tmp_path / "nonexistent")
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect", str(RESPALDO), "validate", str(path)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "inventario válido: 2 objetivos en 3 clases de frecuencia" in proc.stdout
    inet = [line for line in proc.stderr.splitlines() if "AF_INET" in line]
    assert inet == []


def test_validate_of_a_missing_file_says_where_to_point_it(tmp_path):
    proc = subprocess.run([str(RESPALDO), "validate", str(tmp_path / "no.yaml")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "no existe el archivo de inventario" in proc.stderr and "RESPALDO_INVENTORY" in proc.stderr


def test_inventory_counts_by_kind_and_frequency_class(tmp_path):
    proc = subprocess.run([str(RESPALDO), "inventory", str(write(tmp_path, GOOD))], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if "financiero" in line and "diario" in line and "total" in line)
    columns = header.split()
    databases = next(line for line in lines if line.startswith("bases de datos")).split()[3:]
    assert dict(zip(columns, databases, strict=True)) == {
        "diario": "1", "financiero": "1", "servidores_virtuales": "0", "total": "2"}
    assert "Por tipo: postgres 2" in proc.stdout
    assert "respaldo_servidores_virtuales: cada 8 días a las 02:00 (America/Bogota); 0 objetivos" in proc.stdout
    assert "Colas de Celery (cada una necesita un trabajador; con LocalExecutor no cuentan): default 2" in proc.stdout


def test_inventory_names_every_queue_a_worker_must_listen_on(tmp_path):
    text = GOOD.replace("    conn_id: pg_sistemas\n", "    conn_id: pg_sistemas\n    queue: sede_pasto\n")
    proc = subprocess.run([str(RESPALDO), "inventory", str(write(tmp_path, text))], capture_output=True, text=True)
    assert proc.stdout.splitlines()[-1].endswith(": default 1, sede_pasto 1"), proc.stdout


def test_the_schema_documents_every_target_field():
    """The schema is the documentation: every field a user writes has a description."""
    from respaldo.sources import SOURCES

    for source in SOURCES.values():
        for name, field in source.model.model_fields.items():
            if name != "kind":
                assert field.description, f"{source.kind}.{name} has no description"


@pytest.mark.parametrize("text", [textwrap.dedent("""\
    - just
    - a list
    """), "", "solo texto"])
def test_an_inventory_that_is_not_a_mapping_is_rejected_plainly(tmp_path, text):
    assert problems(tmp_path, text) == [f"{tmp_path / 'inventory.yaml'}:1: el inventario debe ser un bloque de "
                                        "claves (organization, storage, frequencies, targets...)."]


# (YAML text, whether libyaml's quick reading is taken): the quick reader must read a file exactly as ruamel's
# YAML 1.2 reader does, or refuse it and leave it to ruamel.
QUICK_CASES = [
    ("a: 6\nb: 6.5\nc: true\nd: null\ne: 2026-01-01\nf: '02:00'\ng: [x, y, n]\nh: ~\ni: -3\nj: 0\nk: 0.5\n"
     "l: texto con ñ\nm: |\n  bloque\nn: \"yes\"\no: 0 23 * * *\n", True),
    ("at: 02:00\n", False),        # YAML 1.1: 120 (sexagesimal); 1.2: "02:00"
    ("retries: 010\n", False),     # 1.1: 8 (octal); 1.2: 10
    ("description: no\n", False),  # 1.1: False; 1.2: "no"
    ("x: on\n", False),
    ("x: 0o10\n", False),
    ("x: 0x1F\n", False),
    ("x: 1_000\n", False),
    ("x: 1e5\n", False),           # 1.1: a string; 1.2: 100000.0
    ("x: .inf\n", False),
    ("x: 1\nx: 2\n", False),       # a repeated key: ruamel says where
]


@pytest.mark.parametrize(("text", "quick"), QUICK_CASES, ids=[c[0].split("\n")[0] for c in QUICK_CASES])
def test_the_quick_yaml_reader_reads_as_ruamel_does_or_leaves_the_file_to_it(tmp_path, text, quick):
    from ruamel.yaml import YAML

    from respaldo.inventory import _quick_yaml

    path = tmp_path / "x.yaml"
    path.write_text(text, encoding="utf-8")
    found = _quick_yaml(path)
    assert (found is not None) == quick, found
    if quick:
        assert found == dict(YAML(typ="rt", pure=True).load(text))


def test_an_inventory_the_quick_reader_refuses_still_loads_as_yaml_1_2_reads_it(tmp_path):
    text = GOOD.replace('    at: "02:00"\n', "    at: 02:00\n")
    assert "at: 02:00\n" in text
    assert load_inventory(write(tmp_path, text)).frequencies["servidores_virtuales"].at == "02:00"


@pytest.mark.parametrize("name", ["inventory.yaml", "inventory.docker.yaml"])
def test_the_shipped_inventories_take_the_quick_path_and_read_the_same_either_way(name):
    from respaldo.inventory import _quick_yaml, _read_yaml, _validated

    path = ROOT / "include" / name
    quick = _quick_yaml(path)
    assert quick is not None
    assert _validated(str(path), quick) == _validated(str(path), _read_yaml(path))
