"""The follow-up against a real Airflow (API server, scheduler, DAG processor), real PostgreSQL and SMTP.

One stack serves the module (``schedule=False``: only triggered runs). The register is a PostgreSQL
server of its own, so a test can stop it while a run fails and start it again. Each test makes one
fault the way it happens in a deployment (a paused DAG, a deleted pool, a broken DAG file, a stopped
scheduler, a failed task nobody could record, a hole in the register, Airflow down entirely, a broken
inventory) and checks the state, the row and the email the follow-up produces. The tests that stop
parts of the stack come last.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import time
import zoneinfo

import psycopg
import pytest
from conftest import RUN_KEY, SYSTEM_PG, write_inventory

from devtools.airflow_stack import VENV_BIN, AirflowStack
from devtools.servers import PostgresServer, free_port
from respaldo import seguimiento
from respaldo.inventory import load_inventory
from respaldo.seguimiento import turnos

BOGOTA = zoneinfo.ZoneInfo("America/Bogota")
METADATA_DB = f"respaldo_test_seguimiento_airflow_{RUN_KEY}"
PASSWORD = "clave-api-seguimiento-" + RUN_KEY
POOL = f"pool_seguimiento_{RUN_KEY}"
FREQUENCIES = {"diario": {"schedule": "0 23 * * *", "retries": 0}}
HUECO = {"id": "hueco_pg", "kind": "postgres", "frequency": "diario", "conn_id": "pg_fuente", "database": "financiero"}
CLAVE_MALA = {"id": "clave_mala_seg", "kind": "postgres", "frequency": "diario", "conn_id": "pg_clave_mala",
              "database": "financiero"}
CON_POOL = {"id": "con_pool_pg", "kind": "postgres", "frequency": "diario", "conn_id": "pg_fuente",
            "database": "sistema_informacion", "pool": POOL}
TARGETS = [HUECO, CLAVE_MALA, CON_POOL]


def _system_sql(sql: str) -> None:
    with psycopg.connect(f"{SYSTEM_PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


class Seg:
    """The stack, the register and the two inventories (Airflow's and the follow-up's)."""

    def __init__(self, stack, register, airflow_inventory, inventory, env):
        self.stack, self.api, self.register = stack, stack.api, register
        self.airflow_inventory, self.inventory, self.env = airflow_inventory, inventory, env

    def check(self) -> seguimiento.Resultado:
        return seguimiento.ejecutar(str(self.inventory))

    def sql(self, query: str, params=()) -> list[dict]:
        with psycopg.connect(host="127.0.0.1", port=self.register.port, user="postgres",
                             password=self.register.password, dbname="registro",
                             row_factory=psycopg.rows.dict_row) as conn:
            return conn.execute(query, params).fetchall()

    def cli(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "respaldo"), "seguimiento", *args], capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def seg(tmp_path_factory, source_pg, smtp):
    work = tmp_path_factory.mktemp("seguimiento")
    root = work / "respaldos"
    root.mkdir()
    register = PostgresServer().start()
    register.psql("CREATE DATABASE registro")
    register_conn = json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": register.port,
                                "login": "postgres", "password": register.password, "schema": "registro"})
    airflow_inventory = write_inventory(work / "airflow-inventory.yaml", root, TARGETS, FREQUENCIES,
                                        register_conn_id="registro_seguimiento")
    data = json.loads(airflow_inventory.read_text())
    data["followup"] = {"digest_at": "00:00", "stuck_minutes": 30}
    airflow_inventory.write_text(json.dumps(data, ensure_ascii=False))
    inventory = work / "inventory.yaml"
    shutil.copy(airflow_inventory, inventory)
    _system_sql(f'CREATE DATABASE "{METADATA_DB}"')
    home = work / "airflow"
    home.mkdir()
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": PASSWORD}))
    connections = {key: value for key, value in os.environ.items() if key.startswith("AIRFLOW_CONN_")}
    port = free_port()
    api_conn = json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port, "login": "admin",
                           "password": PASSWORD})
    stack = AirflowStack(home=home, database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{METADATA_DB}",
                         port=port, schedule=False,
                         extra_env={**connections, "RESPALDO_INVENTORY": str(airflow_inventory),
                                    "AIRFLOW_CONN_REGISTRO_SEGUIMIENTO": register_conn,
                                    "AIRFLOW_CONN_RESPALDO_AIRFLOW_API": api_conn,
                                    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "5"})
    saved = {k: os.environ.get(k) for k in ("AIRFLOW_CONN_REGISTRO_SEGUIMIENTO", "AIRFLOW_CONN_RESPALDO_AIRFLOW_API")}
    try:
        stack.start()
        assert stack.password == PASSWORD, "Airflow did not keep the API user's password written for it"
        os.environ.update(AIRFLOW_CONN_REGISTRO_SEGUIMIENTO=register_conn, AIRFLOW_CONN_RESPALDO_AIRFLOW_API=api_conn)
        stack.command([str(VENV_BIN / "respaldo"), "pools"])
        for dag_id in ("respaldo_diario", "respaldo_seguimiento", "respaldo_simulacro"):
            stack.api.wait_for_dag(dag_id)
            stack.api.unpause(dag_id)
        env = stack.env()
        yield Seg(stack, register, airflow_inventory, inventory, env)
    finally:
        stack.stop()
        register.cleanup()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _system_sql(f'DROP DATABASE IF EXISTS "{METADATA_DB}" WITH (FORCE)')


def mails(smtp, pattern: str) -> list:
    return [m for m in list(smtp.messages) if re.search(pattern, m["Subject"])]


def airflow_mails(smtp, text: str) -> list:
    """The follow-up's emails about Airflow's problems that tell ``text``."""
    return [m for m in mails(smtp, "Airflow necesita atención") if text in m.get_body(("html",)).get_content()]


def state_of(result: seguimiento.Resultado, target: str):
    return next(s for s in result.informe.states if s.target == target)


def daily_slots(seg, days: int) -> list[dt.datetime]:
    clase = turnos.clases(load_inventory(seg.inventory))["diario"]
    now = dt.datetime.now(dt.UTC)
    return clase.slots(now - dt.timedelta(days=days), now - clase.grace)


def insert_success(seg, target: str, slot: dt.datetime, size: int = 5_000_000) -> int:
    with psycopg.connect(host="127.0.0.1", port=seg.register.port, user="postgres", password=seg.register.password,
                         dbname="registro") as conn:
        return conn.execute(
            "INSERT INTO respaldo.control_backup (target, kind, frequency, mechanism, dag_id, run_id, run_type, "
            "logical_date, backup_at, started_at, finished_at, status, original_bytes, responsible) VALUES "
            "(%s, 'postgres', 'diario', 'automatic', 'respaldo_diario', %s, 'scheduled', %s, %s, %s, %s, 'success', "
            "%s, 'x') RETURNING id",
            (target, f"scheduled__{slot.isoformat()}", slot, slot + dt.timedelta(minutes=2), slot,
             slot + dt.timedelta(minutes=3), size)).fetchone()[0]


def test_the_follow_up_dag_runs_the_same_check_through_airflow(seg):
    run_id = seg.api.trigger("respaldo_seguimiento")
    assert seg.api.wait_for_run("respaldo_seguimiento", run_id, timeout=240) == "success"
    summary = seg.api.get(f"/dags/respaldo_seguimiento/dagRuns/{run_id}/taskInstances/revisar/xcomEntries/"
                          "return_value")["value"]
    assert summary["codigo"] in (0, 1) and sum(summary["estados"].values()) == len(TARGETS)


def test_a_hole_in_the_register_becomes_one_missing_row_the_state_atrasado_and_one_email(seg, smtp):
    slots = daily_slots(seg, 6)
    hole = slots[-3]
    for slot in slots:
        if slot != hole:
            insert_success(seg, HUECO["id"], slot)

    first = seg.check()
    again = seg.check()

    [missing] = seg.sql("SELECT * FROM respaldo.control_backup WHERE target = %s AND status = 'missing'",
                        (HUECO["id"],))
    assert missing["logical_date"] == hole and missing["backup_at"] is None
    assert missing["run_id"] == f"faltante__{hole.isoformat()}" and missing["superseded_by"] is None
    assert f"turno del {hole.astimezone(BOGOTA):%Y-%m-%d %H:%M} (America/Bogota)" in missing["error"]
    assert "Falta desde el" in missing["error"]
    assert state_of(first, HUECO["id"]).estado == "atrasado" and first.code == 1
    assert state_of(again, HUECO["id"]).estado == "atrasado"
    [mail] = mails(smtp, "«hueco_pg» pasó a «atrasado»")
    assert f"{hole.astimezone(BOGOTA):%Y-%m-%d %H:%M}" in mail.get_body(("html",)).get_content()

    # A backfill of that slot succeeds: it covers the missing row, which stays for the audit trail.
    backfill = insert_success(seg, HUECO["id"], hole)
    covered = seg.check()
    [row] = seg.sql("SELECT * FROM respaldo.control_backup WHERE id = %s", (missing["id"],))
    assert row["status"] == "missing" and row["superseded_by"] == backfill
    assert state_of(covered, HUECO["id"]).estado == "al_dia"
    assert len(mails(smtp, "«hueco_pg» volvió a estar al día")) == 1
    assert len(mails(smtp, "«hueco_pg» pasó a «atrasado»")) == 1


def test_the_digest_arrives_once_a_day_with_every_target_and_airflows_health(seg, smtp):
    seg.check()
    day = dt.datetime.now(BOGOTA).date().isoformat()
    [digest] = mails(smtp, f"Resumen diario del seguimiento, {day}")
    body = digest.get_body(("html",)).get_content()
    for target in TARGETS:
        assert target["id"] in body
    assert "API de Airflow en" in body and "si un día no llega, el seguimiento mismo no está corriendo" in body


def test_a_paused_dag_is_reported_and_mailed_once(seg, smtp):
    seg.api.request("PATCH", "/dags/respaldo_diario", json={"is_paused": True})
    try:
        first, again = seg.check(), seg.check()
    finally:
        seg.api.unpause("respaldo_diario")
    for result in (first, again):
        assert result.code == 1
        assert any(p.key == "airflow:pausado:respaldo_diario" for p in result.informe.salud.problems)
    [mail] = airflow_mails(smtp, "el DAG respaldo_diario está pausado")
    assert "sus turnos no se ejecutan" in mail.get_body(("html",)).get_content()
    assert not any(p.key.startswith("airflow:pausado") for p in seg.check().informe.salud.problems)


def test_a_pool_deleted_through_the_rest_api_is_reported(seg, smtp):
    seg.api.request("DELETE", f"/pools/{POOL}", expect=(204,))
    try:
        result = seg.check()
    finally:
        seg.api.post("/pools", {"name": POOL, "slots": 1}, expect=(201,))
    assert any(p.key == f"airflow:pool:{POOL}" for p in result.informe.salud.problems)
    [mail] = airflow_mails(smtp, f"no existe el pool «{POOL}»")
    assert "respaldo pools" in mail.get_body(("html",)).get_content()


def test_a_failed_task_that_nobody_could_record_gets_its_row_and_one_alert(seg, smtp):
    seg.register.stop()  # neither the failure callback nor cierre can write the row
    try:
        run_id = seg.api.trigger("respaldo_diario", {"objetivos": [CLAVE_MALA["id"]]},
                                 dt.datetime.now(dt.UTC).replace(microsecond=0))
        assert seg.api.wait_for_run("respaldo_diario", run_id, timeout=240) == "failed"
    finally:
        seg.register.resume()
    states = seg.api.task_states("respaldo_diario", run_id)
    assert states[f"{CLAVE_MALA['id']}.copia"] == "failed" and states["cierre"] == "failed"
    assert seg.sql("SELECT * FROM respaldo.control_backup WHERE run_id = %s", (run_id,)) == []

    result = seg.check()
    seg.check()

    [row] = seg.sql("SELECT * FROM respaldo.control_backup WHERE run_id = %s", (run_id,))
    assert row["target"] == CLAVE_MALA["id"] and row["status"] == "failed" and row["step"] == "copia"
    assert "no dejó fila en el registro" in row["error"] and row["try_number"] == 1
    assert any(CLAVE_MALA["id"] in line for line in result.informe.handled)
    recorded = [m for m in mails(smtp, f"Falló el respaldo de «{CLAVE_MALA['id']}»")
                if run_id in m.get_body(("html",)).get_content()
                and "quedó registrada como <b>fallida</b>" in m.get_body(("html",)).get_content()]
    assert len(recorded) == 1, "the follow-up's alert goes once, however often it runs"
    [alert] = seg.sql("SELECT * FROM respaldo.notificacion WHERE key = %s", (f"fallo:{CLAVE_MALA['id']}:{run_id}:1",))
    assert alert["status"] == "sent"


def test_a_broken_dag_file_is_reported_as_an_import_error(seg, smtp):
    good = seg.airflow_inventory.read_text()
    seg.airflow_inventory.write_text(good.replace('"frequency": "diario"', '"frequency": "diaro"', 1))
    try:
        deadline = time.monotonic() + 90
        while not seg.api.import_errors():
            assert time.monotonic() < deadline, "Airflow never listed the import error"
            time.sleep(1)
        result = seg.check()
    finally:
        seg.airflow_inventory.write_text(good)
    [problem] = [p for p in result.informe.salud.problems if p.key.startswith("airflow:importacion:")]
    assert "respaldo_dags.py no carga" in problem.text and "diaro" in problem.text
    [mail] = airflow_mails(smtp, "respaldo_dags.py no carga")
    assert "¿Quiso decir «diario»?" in mail.get_body(("html",)).get_content()


def test_a_stopped_scheduler_is_reported(seg, smtp):
    scheduler = seg.stack.processes.pop("scheduler")
    os.killpg(scheduler.pid, signal.SIGTERM)
    try:
        scheduler.wait(timeout=60)
    except subprocess.TimeoutExpired:
        # A LocalExecutor scheduler waits for its running task processes before it exits; a scheduler
        # that dies (OOM, a crash) does not. Either way it stops beating, which is what is checked here.
        os.killpg(scheduler.pid, signal.SIGKILL)
        scheduler.wait(timeout=30)
    deadline = time.monotonic() + 60
    while seg.api.get("/monitor/health")["scheduler"]["status"] == "healthy":
        assert time.monotonic() < deadline, "the API still says the scheduler is healthy"
        time.sleep(1)
    result = seg.check()
    [problem] = [p for p in result.informe.salud.problems if p.key == "airflow:scheduler"]
    assert "ninguna copia programada se inicia" in problem.text
    assert airflow_mails(smtp, "el scheduler de Airflow no da señales de vida")


def test_with_airflow_stopped_the_cli_still_reports_from_the_register_and_emails(seg, smtp):
    seg.stack.stop()
    proc = seg.cli(str(seg.inventory))
    assert proc.returncode == 1, proc.stderr[-2000:]
    for target in TARGETS:
        assert target["id"] in proc.stdout
    assert "no respondió" in proc.stdout and "lo demás se revisó con el registro" in proc.stdout
    assert re.search(r"hueco_pg\s+diario\s+al_dia", proc.stdout)
    assert airflow_mails(smtp, "no respondió")

    as_json = json.loads(seg.cli(str(seg.inventory), "--json").stdout)
    assert as_json["codigo"] == 1 and as_json["airflow"]["responde"] is False
    assert {t["objetivo"] for t in as_json["objetivos"]} == {t["id"] for t in TARGETS}


def test_a_broken_inventory_exits_2_and_mails_respaldo_alertas(seg, smtp, tmp_path):
    broken = tmp_path / "roto.yaml"
    broken.write_text("organization: Gobernación\nalerts: [sin cerrar\n", encoding="utf-8")
    proc = seg.cli(str(broken), env={"RESPALDO_ALERTAS": "guardia@example.gov.co, jefe@example.gov.co",
                                     "AIRFLOW_CONN_SMTP_DEFAULT": os.environ["AIRFLOW_CONN_SMTP_PRUEBAS"]})
    assert proc.returncode == 2
    assert f"{broken}:" in proc.stderr and "YAML mal formado" in proc.stderr
    [mail] = mails(smtp, "El seguimiento no pudo ejecutarse")
    assert mail["X-Envelope-To"] == "guardia@example.gov.co, jefe@example.gov.co"
    assert "no se respalda nada" in mail.get_body(("html",)).get_content()


def test_an_inventory_broken_elsewhere_mails_its_own_alerts_section(seg, smtp, tmp_path):
    data = json.loads(seg.inventory.read_text())
    data["targets"][0]["frecuencia"] = "diario"
    broken = tmp_path / "clave.yaml"
    broken.write_text(json.dumps(data, ensure_ascii=False))
    proc = seg.cli(str(broken))
    assert proc.returncode == 2 and "clave desconocida «frecuencia»" in proc.stderr
    [mail] = [m for m in mails(smtp, "El seguimiento no pudo ejecutarse") if "frecuencia" in
              m.get_body(("html",)).get_content()]
    assert mail["X-Envelope-To"] == "sistemas@example.gov.co"
