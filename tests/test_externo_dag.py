"""``copia_externa`` in a real DAG run (``dag.test``), and the external retention on register rows.

A target with ``external: {kind: path}`` on a real tmpfs: the task runs after ``registrar``, the row gets
``external_status = success`` and the copy at the destination passes ``sha256sum -c``. The same disk
without its marker file: ``external_status = failed`` with the reason, one email, the backup row still
``success`` and the local artifact intact.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from test_externo import RELATIVE, make_artifact, tmpfs

from respaldo import register
from respaldo.ciclo.externo import tarea
from respaldo.ciclo.externo.tarea import apply_external_retention, destination_for


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()}


def sha256sum_c(artifact: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sha256sum", "-c", artifact.name + ".sha256"], cwd=artifact.parent, capture_output=True,
                          text=True)


@pytest.fixture
def documentos(tmp_path):
    folder = tmp_path / "documentos"
    (folder / "actas").mkdir(parents=True)
    for number in range(20):
        (folder / "actas" / f"acta_{number:03d}.txt").write_text(f"Acta {number}: " + "contenido " * 500)
    return folder


def test_copia_externa_writes_a_verified_copy_and_a_bad_disk_fails_alone(backups, smtp, register_rows, documentos):
    with tmpfs("64m") as disk:
        marker = disk / ".respaldo_medio_externo"
        marker.touch()
        target = {"id": "documentos", "kind": "files", "frequency": "diario", "path": str(documentos),
                  "external": {"kind": "path", "path": str(disk)}}
        backups.write([target])
        dag = backups.dag("respaldo_diario")
        assert dag.get_task("documentos.copia_externa").upstream_task_ids == {"documentos.registrar"}
        assert f"- `documentos`: el disco externo {disk}" in dag.doc_md

        run = backups.run("respaldo_diario")

        assert states(run)["documentos.copia_externa"] == "success"
        [row] = register_rows(target="documentos", run_id=run.run_id)
        assert row["status"] == "success" and row["external_status"] == "success"
        assert row["external_sha256"] == row["sha256"] and row["external_error"] is None
        assert row["external_verified_at"] >= row["finished_at"]
        local = Path(row["artifact_path"])
        there = Path(row["external_uri"])
        assert there == disk / local.relative_to(backups.root)
        check = sha256sum_c(there)
        assert check.returncode == 0 and f"{there.name}: OK" in check.stdout

        # The disk is unplugged: its mount point no longer holds the marker.
        marker.unlink()
        before = len(smtp.messages)
        time.sleep(1)  # a new second: the second copy must not collide with the first one's name
        run = backups.run("respaldo_diario", logical_date=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5))

    assert states(run)["documentos.registrar"] == "success"
    assert states(run)["documentos.copia_externa"] == "failed"
    [row] = register_rows(target="documentos", run_id=run.run_id)
    assert row["status"] == "success" and row["error"] is None
    assert row["external_status"] == "failed" and row["external_verified_at"] is None
    assert f"El disco externo {disk} no tiene el archivo marcador «.respaldo_medio_externo»" in row["external_error"]
    local = Path(row["artifact_path"])
    assert sha256sum_c(local).returncode == 0
    mail = smtp.wait_for(lambda m: "copia externa de «documentos»" in m["Subject"])
    assert len(smtp.messages) == before + 1
    text = mail.get_body().get_content()
    assert "no tiene el archivo marcador" in text and "La copia local no se tocó" in text
    assert str(local) in text and f"fila {row['id']}" in text and "exitosa" in text


def test_a_class_external_medium_with_its_own_retention_and_the_local_retention_work_together(
        backups, smtp, register_rows, documentos):
    """The class declares the medium: local retention keeps a copy whose external copy failed; the medium's
    retention deletes old verified external copies after each verified copia_externa."""
    keep_one = {"keep_last": 1, "min_keep": 1}
    with tmpfs("64m") as disk:
        marker = disk / ".respaldo_medio_externo"
        marker.touch()
        backups.write([{"id": "documentos", "kind": "files", "frequency": "diario", "path": str(documentos)}],
                      {"diario": {"schedule": "0 23 * * *", "retries": 0, "retention": keep_one,
                                  "external": {"kind": "path", "path": str(disk), "retention": keep_one}}})
        start = dt.datetime.now(dt.UTC)
        runs = []
        for number in range(3):
            if number == 1:
                marker.unlink()  # the second run's external copy fails: the disk is unplugged
            if number == 2:
                marker.touch()
            if number:
                time.sleep(1)  # each copy in a second of its own: an artifact name of its own
            runs.append(backups.run("respaldo_diario", logical_date=start + dt.timedelta(seconds=5 * number)))
        first, second, third = (register_rows(target="documentos", run_id=run.run_id)[0] for run in runs)
        assert [states(run)["documentos.copia_externa"] for run in runs] == ["success", "failed", "success"]
        assert all(states(run)["retencion"] == "success" for run in runs)
        # Local: the first copy is gone (keep_last 1); the second stays, its external copy never verified.
        assert first["deleted_at"] is not None and not Path(first["artifact_path"]).exists()
        assert second["deleted_at"] is None and Path(second["artifact_path"]).is_file()
        assert "no está verificada (fallida)" not in (second["deletion_reason"] or "")
        assert third["deleted_at"] is None and Path(third["artifact_path"]).is_file()
        # External: the first verified copy was deleted by the medium's retention after the third run's copy.
        assert first["external_status"] == "deleted" and first["external_deleted_at"] is not None
        assert not Path(first["external_uri"]).exists()
        assert second["external_status"] == "failed"
        assert third["external_status"] == "success" and sha256sum_c(Path(third["external_uri"])).returncode == 0
        on_disk = sorted(p.name for p in disk.rglob("*.zst"))
        assert on_disk == [Path(third["external_uri"]).name]


def test_a_target_without_external_gets_no_copia_externa_task(backups, documentos):
    backups.write([{"id": "documentos", "kind": "files", "frequency": "diario", "path": str(documentos)}])
    assert "documentos.copia_externa" not in backups.dag("respaldo_diario").task_ids


def _row(target: str, artifact: Path, sha256: str) -> int:
    now = dt.datetime.now(dt.UTC)
    recorded = register.record("respaldo_registro", register.Row(
        target=target, kind="files", frequency="diario", mechanism="automatic", dag_id="respaldo_diario",
        run_id=f"prueba__{uuid.uuid4().hex[:8]}", status="success", backup_at=now, started_at=now,
        artifact_path=str(artifact), sha256=sha256, compressed_bytes=artifact.stat().st_size))
    return recorded.id


def test_external_retention_deletes_what_the_plan_says_and_records_it(tmp_path, register_rows):
    target = f"retencion_{uuid.uuid4().hex[:6]}"
    with tmpfs("32m") as disk:
        (disk / ".respaldo_medio_externo").touch()
        destination = destination_for({"kind": "path", "path": str(disk)})
        rows = {}
        for name in ("vieja", "media", "nueva"):
            artifact, sha256 = make_artifact(tmp_path / name, 1024 * 1024)
            row_id = _row(target, artifact, sha256)
            placed = destination.put(artifact, RELATIVE.with_name(f"{name}.tar.zst"), sha256)
            tarea.mark_success("respaldo_registro", row_id, placed)
            rows[name] = (row_id, artifact, placed.uri)
        failed_artifact, failed_sha = make_artifact(tmp_path / "fallida", 1024)
        failed_id = _row(target, failed_artifact, failed_sha)
        tarea.mark_failed("respaldo_registro", failed_id, "disco lleno")

        outcome = apply_external_retention("respaldo_registro", destination, [
            (rows["vieja"][0], "delete", "keep_last 2"),
            (rows["media"][0], "keep", "keep_last 2"),
            (rows["nueva"][0], "keep", "la más reciente"),
            (failed_id, "delete", "keep_last 2"),
        ])

        assert outcome == [(rows["vieja"][0], "deleted", "keep_last 2"),
                           (failed_id, "skipped", "sin copia externa verificada (estado failed)")]
        assert not Path(rows["vieja"][2]).exists() and not Path(rows["vieja"][2] + ".sha256").exists()
        assert Path(rows["media"][2]).is_file() and Path(rows["nueva"][2]).is_file()
    by_id = {row["id"]: row for row in register_rows(target=target)}
    assert len(by_id) == 4
    assert by_id[rows["vieja"][0]]["external_status"] == "deleted"
    assert by_id[rows["vieja"][0]]["external_deleted_at"] is not None
    assert by_id[rows["vieja"][0]]["deleted_at"] is None and by_id[rows["vieja"][0]]["status"] == "success"
    assert by_id[rows["media"][0]]["external_status"] == "success"
    assert by_id[failed_id]["external_status"] == "failed"
    for _, artifact, _ in rows.values():  # local copies are retention's business, never this
        assert artifact.is_file()
    assert hashlib.sha256(rows["vieja"][1].read_bytes()).hexdigest() == by_id[rows["vieja"][0]]["sha256"]


def test_a_copia_externa_whose_process_died_is_recorded_and_mailed_by_cierre(tmp_path, smtp, register_rows):
    """``cierre`` finds copia_externa failed with its row still ``pending`` (no callback ran): it records and mails."""
    from respaldo import tasks
    from respaldo.ciclo.externo.operador import CopiaExternaOperator

    target_id = f"muerta_{uuid.uuid4().hex[:6]}"
    artifact, sha256 = make_artifact(tmp_path, 1024)
    row_id = _row(target_id, artifact, sha256)
    tarea.mark_pending("respaldo_registro", row_id, "/mnt/usb/x.tar.zst")
    [row] = register_rows(id=row_id)
    settings = {"root": str(tmp_path), "timezone": "America/Bogota", "register_conn_id": "respaldo_registro",
                "smtp_conn_id": "smtp_pruebas", "alert_emails": ["sistemas@example.gov.co"], "from_email": None,
                "dag_id": "respaldo_diario"}
    operator = CopiaExternaOperator(target={"id": target_id}, settings=settings,
                                    external={"kind": "path", "path": "/mnt/usb"})

    class Marks:  # what the dead try left in XCom (intentos.mark), as Airflow hands it back
        def xcom_pull(self, task_ids, key):
            return {"try_number": 2, "started_at": "2026-11-30T10:00:00+00:00"}

    assert tasks._external_unreported(operator, settings, row["run_id"], Marks()) == []

    [row] = register_rows(id=row_id)
    assert row["status"] == "success" and row["external_status"] == "failed"
    assert "se detuvo de golpe" in row["external_error"]
    mail = smtp.wait_for(lambda m: f"copia externa de «{target_id}»" in m["Subject"])
    assert "el disco externo /mnt/usb" in mail.get_body().get_content()
    # Run again (the follow-up, a second cierre): already failed, nothing more is sent.
    count = len(smtp.messages)
    assert tasks._external_unreported(operator, settings, row["run_id"], Marks()) == []
    assert len(smtp.messages) == count
