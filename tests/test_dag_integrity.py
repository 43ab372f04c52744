"""DAG integrity: the DAG files import, every DAG is complete, and a bad inventory is an import error."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_inventory

ROOT = Path(__file__).resolve().parents[1]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
STEPS = ["copia", "verificar_fecha", "comprimir", "registrar"]
BACKUP_DAGS = ["respaldo_diario", "respaldo_financiero", "respaldo_servidores_virtuales"]
FOLLOWUP = "respaldo_seguimiento"
DRILLS = "respaldo_simulacro"


def dagbag(inventory: Path | None, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    if inventory:
        monkeypatch.setenv("RESPALDO_INVENTORY", str(inventory))
    else:
        monkeypatch.delenv("RESPALDO_INVENTORY", raising=False)
    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture
def bag(tmp_path, monkeypatch):
    targets = [
        {"id": "financiero_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_financiero"},
        {"id": "nomina_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_financiero",
         "retries": 4, "pool": "servidor_nomina", "queue": "sede_pasto"},
        {"id": "portal_pg", "kind": "postgres", "frequency": "diario", "conn_id": "pg_portal"},
        {"id": "documentos", "kind": "files", "frequency": "diario", "path": "/srv/documentos"},
    ]
    return dagbag(write_inventory(tmp_path / "inv.yaml", tmp_path, targets), monkeypatch)


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_is_found_by_the_dag_processor_safe_mode(path):
    text = path.read_text().lower()
    assert "airflow" in text and "dag" in text


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_imports_without_errors_with_the_shipped_inventory(path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv("RESPALDO_INVENTORY", raising=False)
    bag = DagBag(dag_folder=str(path))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted([*BACKUP_DAGS, FOLLOWUP, DRILLS])


def test_every_dag_has_owner_retries_tags_and_docs(bag):
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted([*BACKUP_DAGS, FOLLOWUP, DRILLS])
    for dag in (bag.get_dag(dag_id) for dag_id in BACKUP_DAGS):
        assert dag.default_args["owner"] == "sistemas" and dag.default_args["retries"] == 0, dag.dag_id
        assert "respaldo" in dag.tags and "FT-GTI-004" in dag.tags
        assert dag.catchup is False and dag.max_active_runs == 1
        assert "Cómo restaurar" in dag.doc_md and "FT-GTI-004" in dag.doc_md
        for task in dag.tasks:
            assert task.retries is not None and task.owner == "sistemas", task.task_id
            assert task.retry_exponential_backoff and task.doc_md
            assert task.execution_timeout == dt.timedelta(hours=6), "a hung copy must not block later runs"


def test_the_follow_up_dag_runs_hourly_in_the_default_pool_with_owner_retries_tags_and_docs(bag):
    from airflow.sdk import CronTriggerTimetable

    dag = bag.get_dag(FOLLOWUP)
    assert dag.default_args["owner"] == "sistemas" and dag.default_args["retries"] == 1
    assert "respaldo" in dag.tags and "seguimiento" in dag.tags
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.timetable == CronTriggerTimetable("0 * * * *", timezone="America/Bogota")
    assert "Seguimiento de los respaldos" in dag.doc_md and "resumen diario" in dag.doc_md
    assert sorted(task.task_id for task in dag.tasks) == ["releer", "revisar"]
    for task in dag.tasks:  # independent: a long re-reading never delays the hourly check
        assert task.pool == "default_pool" and task.doc_md and not task.upstream_task_ids
        assert task.inventory_path.endswith("inv.yaml")
    assert "`releer`" in dag.doc_md and " 30 días" in dag.doc_md


def test_every_task_of_a_backup_dag_is_handed_the_inventorys_settings(bag, tmp_path):
    from respaldo.inventory import load_inventory

    inventory = load_inventory(tmp_path / "inv.yaml")
    for dag_id in BACKUP_DAGS:
        settings = inventory.task_settings(dag_id)
        assert settings["dag_id"] == dag_id and settings["alert_emails"] == ["sistemas@example.gov.co"]
        dag = bag.get_dag(dag_id)
        assert {id(task.settings) for task in dag.tasks} == {id(dag.get_task("preparar").settings)}
        assert dag.get_task("preparar").settings == settings


def test_each_target_is_a_task_group_of_the_four_steps_in_order(bag):
    dag = bag.get_dag("respaldo_financiero")
    from respaldo.formulario import targets_of

    assert targets_of(dag) == ["financiero_pg", "nomina_pg"]
    for target in ("financiero_pg", "nomina_pg"):
        ids = [f"{target}.{step}" for step in STEPS]
        assert set(ids) <= set(dag.task_ids)
        for upstream, downstream in zip(ids, ids[1:], strict=False):
            assert dag.get_task(downstream).upstream_task_ids == {upstream}
    assert sorted(bag.get_dag("respaldo_diario").task_group.children) == ["cierre", "documentos", "portal_pg",
                                                                           "preparar"]


def test_the_form_is_checked_once_before_any_target_and_the_run_is_closed_after_all_of_them(bag):
    dag = bag.get_dag("respaldo_financiero")
    opening, closing = dag.get_task("preparar"), dag.get_task("cierre")
    assert opening.is_setup and closing.is_teardown
    assert opening.downstream_task_ids == {"financiero_pg.copia", "nomina_pg.copia", "cierre"}
    assert closing.upstream_task_ids == {"financiero_pg.registrar", "nomina_pg.registrar", "preparar"}
    assert opening.pool == closing.pool == "default_pool", "they must run even when every server's pool is busy"


def test_all_four_steps_of_a_target_run_on_its_queue_and_the_runs_own_tasks_on_default(bag):
    dag = bag.get_dag("respaldo_financiero")
    assert {dag.get_task(f"nomina_pg.{step}").queue for step in STEPS} == {"sede_pasto"}
    assert {dag.get_task(f"financiero_pg.{step}").queue for step in STEPS} == {"default"}
    assert dag.get_task("preparar").queue == dag.get_task("cierre").queue == "default"
    [callback] = dag.get_task("nomina_pg.copia").on_failure_callback
    assert callback.target["queue"] == "sede_pasto", "a failure handled elsewhere must know where the staging is"


def test_retries_pool_and_failure_callbacks_come_from_the_inventory(bag):
    from respaldo.fallas import FailureCallback

    dag = bag.get_dag("respaldo_financiero")
    assert dag.get_task("financiero_pg.copia").retries == 0
    assert dag.get_task("nomina_pg.registrar").retries == 4
    assert dag.get_task("financiero_pg.copia").pool == "respaldo_pg_financiero"
    assert dag.get_task("nomina_pg.copia").pool == "servidor_nomina"
    assert dag.get_task("nomina_pg.comprimir").pool == "default_pool"
    assert bag.get_dag("respaldo_diario").get_task("documentos.copia").pool == "respaldo_local"
    [callback] = dag.get_task("financiero_pg.comprimir").on_failure_callback
    assert isinstance(callback, FailureCallback) and callback.target["id"] == "financiero_pg"
    assert callback.settings["alert_emails"] == ["sistemas@example.gov.co"]
    assert callback.settings["smtp_conn_id"] == "smtp_pruebas"


def test_schedules_follow_the_inventory_in_bogota_time(bag):
    from airflow.serialization.serialized_objects import DagSerialization

    def timetable(dag_id: str) -> dict:
        return DagSerialization.to_dict(bag.get_dag(dag_id))["dag"]["timetable"]

    financiero = timetable("respaldo_financiero")
    assert financiero["__type"].endswith("MultipleCronTriggerTimetable")
    assert financiero["__var"]["expressions"] == ["0 13 * * *", "0 22 * * *"]
    assert financiero["__var"]["timezone"] == "America/Bogota"
    diario = timetable("respaldo_diario")
    assert diario["__type"].endswith(".CronTriggerTimetable")
    assert (diario["__var"]["expression"], diario["__var"]["timezone"]) == ("0 23 * * *", "America/Bogota")
    vms = timetable("respaldo_servidores_virtuales")
    assert vms == {"__type": "respaldo.timetables.EveryNDaysTimetable",
                   "__var": {"days": 8, "at": "02:00", "timezone": "America/Bogota", "anchor": "2026-01-01"}}


def test_the_run_form_offers_targets_responsable_and_observaciones(bag):
    params = bag.get_dag("respaldo_financiero").params
    assert params["objetivos"] == [] and params["responsable"] is None and params["observaciones"] is None
    schema = params.get_param("objetivos").schema
    assert schema["items"]["enum"] == ["financiero_pg", "nomina_pg"]
    # The UI sends null for a text field left empty; the form must accept it (the Trigger button stays
    # disabled otherwise), and any text.
    for name in ("responsable", "observaciones"):
        for value in (None, "", "Ana Pérez"):
            assert params.get_param(name).resolve(value) == value


def test_dags_survive_serialization_with_their_timetable(bag):
    from airflow.serialization.serialized_objects import DagSerialization

    for dag in bag.dags.values():
        serialized = DagSerialization.to_dict(dag)
        restored = DagSerialization.from_dict(serialized)
        assert restored.timetable.serialize() == serialized["dag"]["timetable"]["__var"]
        assert sorted(restored.task_ids) == sorted(dag.task_ids)


def test_a_bad_inventory_is_an_import_error_listing_every_problem(tmp_path, monkeypatch):
    bad = tmp_path / "inv.yaml"
    write_inventory(bad, tmp_path, [
        {"id": "financiero_pg", "kind": "postgres", "frequency": "financero", "conn_id": "pg"},
        {"id": "otro", "kind": "postgres", "frequency": "diario", "con_id": "pg"},
    ])
    bag = dagbag(bad, monkeypatch)
    assert bag.dag_ids == []
    [(file, error)] = bag.import_errors.items()
    assert file.endswith("dags/respaldo_dags.py")
    assert "El inventario tiene 3 problemas" in error
    assert "frecuencia desconocida «financero»" in error and "¿Quiso decir «financiero»?" in error
    assert "clave desconocida «con_id»" in error and "falta el campo obligatorio «conn_id»" in error
    assert f"{bad}:" in error


def test_parsing_opens_no_network_connection(tmp_path):
    """The DAG processor re-parses every few seconds: parsing reads the inventory and nothing else."""
    inventory = write_inventory(tmp_path / "inv.yaml", tmp_path, [
        {"id": "financiero_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_financiero"}])
    code = "import runpy; runpy.run_path('dags/respaldo_dags.py')"
    env = {"PATH": "/usr/bin:/bin", "RESPALDO_INVENTORY": str(inventory), "AIRFLOW_HOME": str(tmp_path / "af"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg://nobody@192.0.2.1:1/none"}
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect", sys.executable, "-c", code],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line for line in proc.stderr.splitlines() if "AF_INET" in line] == []


def test_a_large_class_takes_typed_target_ids_instead_of_a_pick_list(tmp_path, monkeypatch):
    from respaldo.dag_factory import PICK_LIST_LIMIT

    targets = [{"id": f"base_{i:03d}", "kind": "postgres", "frequency": "diario", "conn_id": "pg"}
               for i in range(PICK_LIST_LIMIT + 1)]
    bag = dagbag(write_inventory(tmp_path / "inv.yaml", tmp_path, targets), monkeypatch)
    schema = bag.get_dag("respaldo_diario").params.get_param("objetivos").schema
    assert schema["items"] == {"type": "string"}


def test_the_drill_dag_runs_weekly_with_one_pool_per_drill_server_and_owner_retries_tags_and_docs(bag):
    from airflow.sdk import CronTriggerTimetable

    dag = bag.get_dag(DRILLS)
    assert dag.default_args["owner"] == "sistemas" and dag.default_args["retries"] == 1
    assert "respaldo" in dag.tags and "simulacro" in dag.tags
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.timetable == CronTriggerTimetable("0 3 * * 0", timezone="America/Bogota")
    assert "Simulacros de restauración" in dag.doc_md and all(task.doc_md for task in dag.tasks)
    # No drill server in this inventory: the PostgreSQL targets' drills wait in a pool of their own all the same.
    assert dag.get_task("bases_postgres.simulacro").pool == "respaldo_simulacro_postgres"
    assert dag.get_task("carpetas.simulacro").pool == "respaldo_simulacro_local"
    assert dag.get_task("preparar").pool == dag.get_task("cierre").pool == "default_pool"
    assert dag.get_task("preparar").is_setup and dag.get_task("cierre").is_teardown
    assert "bases_mysql.simulacro" not in dag.task_ids, "no MySQL target, no MySQL group"


@pytest.mark.parametrize("task_id, whole", [("nomina_pg.comprimir", False), ("preparar", True), ("cierre", True)])
def test_a_task_process_parses_only_its_targets_group_and_the_runs_own_tasks_the_whole_dag(
        tmp_path, monkeypatch, task_id, whole):
    """Airflow's parsing context (set by the task runner) names the task: a target's step needs only its group."""
    targets = [
        {"id": "financiero_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_financiero"},
        {"id": "nomina_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_financiero",
         "retries": 4, "queue": "sede_pasto"},
        {"id": "portal_pg", "kind": "postgres", "frequency": "diario", "conn_id": "pg_portal"},
    ]
    inventory = write_inventory(tmp_path / "inv.yaml", tmp_path, targets)
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "respaldo_financiero")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", task_id)
    bag = dagbag(inventory, monkeypatch)
    assert bag.import_errors == {}
    assert list(bag.dags) == ["respaldo_financiero"]
    dag = bag.get_dag("respaldo_financiero")
    if whole:
        assert {"preparar", "cierre", "financiero_pg.copia", "nomina_pg.registrar"} <= set(dag.task_ids)
        return
    assert sorted(dag.task_ids) == sorted(f"nomina_pg.{step}" for step in STEPS)
    task = dag.get_task(task_id)
    # What the step is handed is the whole DAG's: its retries, queue, target, settings and the run form.
    assert task.retries == 4 and task.queue == "sede_pasto" and task.target["id"] == "nomina_pg"
    assert task.upstream_task_ids == {"nomina_pg.verificar_fecha"}
    assert task.settings["dag_id"] == "respaldo_financiero"
    assert dag.params.get_param("objetivos").schema["items"]["enum"] == ["financiero_pg", "nomina_pg"]
