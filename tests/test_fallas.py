"""A failure is recorded, alerted once, and told truthfully, even when the register or the mail server is down.

Runs through Airflow (``dag.test``) against real PostgreSQL and SMTP servers; the faults that need
Airflow's scheduler (killed task processes, dead workers, missing pools) are in test_fallas_e2e.py.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import psycopg
import pytest
from conftest import REGISTER_DB, SYSTEM_PG
from test_backup_postgres import states

from devtools.servers import SmtpServer, free_port
from respaldo import avisos, fallas
from respaldo.inventory import target_from

SISTEMA = {"id": "sistema_informacion_pg", "kind": "postgres", "frequency": "diario", "conn_id": "pg_fuente",
           "database": "sistema_informacion"}
CLAVE_MALA = {"id": "financiero_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_clave_mala",
              "database": "financiero"}


def alerts(key: str | None = None) -> list[dict]:
    with psycopg.connect(f"{SYSTEM_PG}/{REGISTER_DB}", row_factory=psycopg.rows.dict_row) as conn:
        if key:
            return conn.execute("SELECT * FROM respaldo.notificacion WHERE key = %s", (key,)).fetchall()
        return conn.execute("SELECT * FROM respaldo.notificacion ORDER BY id").fetchall()


def mails_of(server: SmtpServer, run_id: str) -> list:
    return [m for m in list(server.messages) if run_id in m.get_body(("html",)).get_content()]


def test_with_the_register_down_a_good_copy_is_kept_and_the_email_says_it_was_not_recorded(backups, smtp,
                                                                                            monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_REGISTRO_CAIDO", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": free_port(), "login": "postgres",
         "schema": "registro"}))
    backups.write([SISTEMA], register_conn_id="registro_caido")
    run = backups.run("respaldo_diario")

    result = states(run)
    assert result["sistema_informacion_pg.comprimir"] == "success"
    assert result["sistema_informacion_pg.registrar"] == "failed"
    assert result["cierre"] == "failed", "the closing task must not pretend the failure was recorded"
    [artifact] = [p for p in backups.root.rglob("*.dump.zst")]
    check = subprocess.run(["sha256sum", "-c", artifact.name + ".sha256"], cwd=artifact.parent,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    [mail] = [m for m in mails_of(smtp, run.run_id) if "sistema_informacion_pg" in m["Subject"]]
    body = mail.get_body(("html",)).get_content()
    assert "NO quedó registrada" in body and "registro_caido" in body
    assert "sí se tomó y está completa" in body and str(artifact) in body
    assert "quedó registrada como" not in body and "no quedó ninguna copia" not in body


def test_with_the_mail_server_down_the_alert_is_recorded_as_failed_and_sent_when_it_returns(
        backups, register_rows, monkeypatch):
    monkeypatch.setattr(avisos, "RETRY_PAUSES_SECONDS", (0.1, 0.1))
    mail_server = SmtpServer().start()
    port = mail_server.port
    mail_server.stop()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_CAIDO", SmtpServer(port=port).connection_json())
    backups.write([CLAVE_MALA], smtp_conn_id="smtp_caido")
    run = backups.run("respaldo_financiero")

    assert states(run)["financiero_pg.copia"] == "failed"
    [row] = register_rows(target="financiero_pg", run_id=run.run_id)
    assert row["status"] == "failed" and "password authentication failed" in row["error"]
    key = fallas.alert_key("financiero_pg", run.run_id, row["try_number"])
    [alert] = alerts(key)
    assert alert["status"] == "failed" and alert["sent_at"] is None
    assert alert["attempts"] >= avisos.SEND_ATTEMPTS  # the callback's tries, and the closing task's again
    assert f"conexión «smtp_caido», 127.0.0.1:{port}) no respondió" in alert["last_error"]
    assert alert["recipients"] == ["sistemas@example.gov.co"]
    assert states(run)["cierre"] == "failed", "an alert that did not leave is not a closed run"

    back = SmtpServer(port=port).start()
    try:
        channel = avisos.Channel("smtp_caido", ["sistemas@example.gov.co"], None, "respaldo_registro")
        resent = [(a.key, d.sent) for a, d in avisos.resend_unsent(channel, run_id=run.run_id)]
        assert (key, True) in resent
        subjects = sorted(m["Subject"] for m in mails_of(back, run.run_id))
        assert subjects == [f"[respaldo] El cierre de la ejecución {run.run_id} de respaldo_financiero quedó "
                            "incompleto",
                            "[respaldo] Falló el respaldo de «financiero_pg» en el paso «copia» (respaldo_financiero)"]
        [mail] = [m for m in mails_of(back, run.run_id) if "Falló el respaldo" in m["Subject"]]
        assert "password authentication failed" in mail.get_body(("html",)).get_content()
        [alert] = alerts(key)
        assert alert["status"] == "sent" and alert["sent_at"] is not None and alert["last_error"] is None
        assert avisos.resend_unsent(channel, run_id=run.run_id) == []
    finally:
        back.stop()


def test_a_failure_reported_twice_is_mailed_once(backups, smtp, register_rows):
    """Airflow runs the failure callback of a dead worker's task more than once; the email goes once."""
    backups.write([CLAVE_MALA])
    run = backups.run("respaldo_financiero")
    [row] = register_rows(target="financiero_pg", run_id=run.run_id)
    assert len(mails_of(smtp, run.run_id)) == 1

    settings = backups.dag("respaldo_financiero").get_task("preparar").settings
    facts = fallas.RunFacts("respaldo_financiero", run.run_id, "manual", None)
    again = fallas.handle(target_from(CLAVE_MALA | {"mechanism": "automatic", "responsible": "x"}), settings, facts,
                          fallas.Failure("copia", row["try_number"], fallas.PROCESS_LOST), {})

    assert again.delivery.duplicate and not again.delivery.sent
    assert len(mails_of(smtp, run.run_id)) == 1
    [same] = register_rows(target="financiero_pg", run_id=run.run_id)
    assert same["id"] == row["id"] and same["status"] == "failed"


def test_an_alert_is_claimed_by_one_sender_and_taken_over_only_after_a_failure_or_a_dead_claim():
    from respaldo.register import notificacion

    alert = notificacion.Alert(key=f"prueba:{dt.datetime.now().timestamp()}", kind="prueba",
                               recipients=["a@example.gov.co"], subject="s", body="b")
    assert notificacion.claim("respaldo_registro", alert)
    assert not notificacion.claim("respaldo_registro", alert), "a second sender must not claim a live claim"
    notificacion.settle("respaldo_registro", alert.key, 3, "el servidor de correo no respondió")
    assert notificacion.of("respaldo_registro", alert.key)["status"] == "failed"
    assert notificacion.claim("respaldo_registro", alert), "a failed alert is taken over for a retry"
    with psycopg.connect(f"{SYSTEM_PG}/{REGISTER_DB}") as conn:
        conn.execute("UPDATE respaldo.notificacion SET last_attempt_at = now() - interval '1 hour' WHERE key = %s",
                     (alert.key,))
    assert notificacion.claim("respaldo_registro", alert), "a claim whose sender died is taken over"
    notificacion.settle("respaldo_registro", alert.key, 1, None)
    recorded = notificacion.of("respaldo_registro", alert.key)
    assert (recorded["status"], recorded["attempts"]) == ("sent", 4)
    assert not notificacion.claim("respaldo_registro", alert), "a sent alert is never sent again"


@pytest.mark.parametrize("value", [None, "", "  "])
def test_an_empty_responsable_in_the_form_falls_back_to_the_inventory(backups, register_rows, value):
    backups.write([SISTEMA])
    run = backups.run("respaldo_diario", conf={"responsable": value, "observaciones": value})
    [row] = register_rows(target="sistema_informacion_pg", run_id=run.run_id)
    assert row["status"] == "success"
    assert row["responsible"] == "Profesional universitario área de sistemas" and row["notes"] is None


def test_a_scheduled_run_leaves_nothing_in_staging_and_closes_cleanly(backups, register_rows):
    backups.write([SISTEMA])
    run = backups.run("respaldo_diario", logical_date=dt.datetime(2026, 5, 1, 4, 0, tzinfo=dt.UTC))
    assert states(run)["cierre"] == "success"
    assert [p for p in (backups.root / ".staging").rglob("*") if p.is_file()] == []
    assert Path(register_rows(target="sistema_informacion_pg", run_id=run.run_id)[0]["artifact_path"]).is_file()


def test_a_copy_removes_what_an_earlier_run_of_its_target_left_in_staging(backups, register_rows):
    """One worker per queue: cierre (on `default`) cannot reach a site's staging; the target's next copia can."""
    backups.write([SISTEMA])
    left = backups.root / ".staging" / "diario" / SISTEMA["id"] / "scheduled__2026-04-30T04_00_00_00_00"
    left.mkdir(parents=True)
    (left / "sistema_informacion_pg.dump").write_bytes(b"a copy cut short")
    other = backups.root / ".staging" / "diario" / "otro_objetivo" / "scheduled__2026-04-30T04_00_00_00_00"
    other.mkdir(parents=True)
    run = backups.run("respaldo_diario", logical_date=dt.datetime(2026, 5, 1, 4, 0, tzinfo=dt.UTC))
    assert states(run)["cierre"] == "success"
    assert not left.exists(), "the earlier run's half copy is gone"
    assert other.exists(), "another target's staging is its own copia's business"


@pytest.mark.parametrize(("active", "removed"), [(1, True), (2, False)])
def test_leftovers_stay_while_another_run_of_the_dag_is_active(tmp_path, active, removed):
    """A backfill runs beside the scheduled run: its staging may be in use."""
    import logging
    from types import SimpleNamespace

    from respaldo import artifacts

    left = artifacts.staging_dir(tmp_path, "diario", "pg", "backfill__2026-04-30T04:00:00+00:00")
    left.mkdir(parents=True)
    keep = artifacts.staging_dir(tmp_path, "diario", "pg", "manual__2026-05-01T00:00:00+00:00")
    ti = SimpleNamespace(get_dr_count=lambda **kwargs: active)
    artifacts.sweep_leftovers(tmp_path, "diario", "pg", keep, {"ti": ti}, "respaldo_diario", logging.getLogger("t"))
    assert left.exists() != removed


@pytest.mark.parametrize(("target", "sentence", "key"), [
    ({"id": "documentos", "kind": "files", "frequency": "diario", "path": "/etc", "include": ["no_existe_aqui"]},
     "no existe «no_existe_aqui» en este servidor: revise `path` e `include` del objetivo en el inventario",
     "tar: no_existe_aqui: Cannot stat: No such file or directory"),
    ({"id": "documentos_ssh", "kind": "files", "frequency": "diario", "path": "/etc", "conn_id": "ssh_llave_ajena"},
     "no es la registrada en la conexión", "Host key verification failed."),
    (CLAVE_MALA, "rechazó el usuario «respaldo_lector» o su clave (conexión «pg_clave_mala»)", "pg_dump: error:"),
], ids=["tar-sin-carpeta", "ssh-llave-cambiada", "pg-clave-mala"])
def test_the_register_and_the_email_get_one_plain_sentence_and_the_tools_key_line(backups, smtp, sshd,
                                                                                 register_rows, target, sentence,
                                                                                 key):
    backups.write([target])
    run = backups.run(f"respaldo_{target['frequency']}")

    [row] = register_rows(target=target["id"], run_id=run.run_id)
    error = row["error"]
    assert row["status"] == "failed" and "\n" not in error, error
    assert sentence in error and f"(detalle: {key}" in error, error
    assert "@@@" not in error and "Traceback" not in error and "Exiting with failure status" not in error
    assert len(error) < 700, error
    [mail] = [m for m in mails_of(smtp, run.run_id) if target["id"] in m["Subject"]]
    assert sentence in mail.get_body(("html",)).get_content()


def test_a_failure_handled_away_from_its_targets_queue_says_where_the_staging_is_and_who_removes_it(
        backups, smtp, register_rows):
    """One worker per queue: cierre (on `default`) cannot see a `sede_pasto` target's staging folder."""
    backups.write([CLAVE_MALA])
    run = backups.run("respaldo_financiero")
    settings = backups.dag("respaldo_financiero").get_task("preparar").settings
    facts = fallas.RunFacts("respaldo_financiero", run.run_id, "manual", None)
    model = target_from(CLAVE_MALA | {"mechanism": "automatic", "responsible": "x", "queue": "sede_pasto"})

    outcome = fallas.handle(model, settings, facts, fallas.Failure("copia", 9, fallas.PROCESS_LOST), {},
                            here="default")

    [note] = outcome.notes
    assert "cola «sede_pasto»" in note and "la próxima copia de «financiero_pg» lo borra" in note
    [mail] = [m for m in mails_of(smtp, run.run_id) if "(intento 9)" in m.get_body(("html",)).get_content()]
    assert "cola «sede_pasto»" in mail.get_body(("html",)).get_content()
    local = fallas.handle(model, settings, facts, fallas.Failure("copia", 10, fallas.PROCESS_LOST), {},
                          here="sede_pasto")
    assert local.notes == [], "on its own queue's worker there is nothing left elsewhere to tell"
