"""Manual copies (steps 2 and 3): delivered to an intake folder, here or over SFTP from a real sshd."""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
import zoneinfo
from pathlib import Path

import pytest
from test_backup_postgres import states

from devtools.servers import SSH_TEST_USER

BOGOTA = zoneinfo.ZoneInfo("America/Bogota")


def slot(day: int) -> dt.datetime:
    """The 23:00 slot of the "diario" class on that day of November 2026, in Bogota."""
    return dt.datetime(2026, 11, day, 23, 0, tzinfo=BOGOTA)


class Intake:
    """An intake folder and how a person drops files into it."""

    def __init__(self, path: Path, conn_id: str | None):
        self.path = path
        self.conn_id = conn_id
        # The register outlives a test: a target of its own keeps "the previous copy" this test's.
        self.id = f"nomina_{'sftp' if conn_id else 'local'}_{uuid.uuid4().hex[:6]}"

    def drop(self, name: str, content: bytes, mtime: dt.datetime) -> Path:
        path = self.path / name
        path.write_bytes(content)
        os.utime(path, (mtime.timestamp(), mtime.timestamp()))
        if self.conn_id:
            user = pwd.getpwnam(SSH_TEST_USER)
            os.chown(path, user.pw_uid, user.pw_gid)
        return path

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file())

    def target(self, **intake) -> dict:
        settings = {"path": str(self.path), "pattern": "nomina_{fecha}*.zip", "wait_hours": 0.002,
                    "poke_minutes": 0.02, "settle_seconds": 0, **intake}
        if self.conn_id:
            settings["conn_id"] = self.conn_id
        return {"id": self.id, "kind": "files", "frequency": "diario", "mechanism": "manual", "intake": settings}


@pytest.fixture(params=["local", "sftp"])
def intake(request, sshd):
    base = Path(tempfile.mkdtemp(prefix="respaldo-entregas-"))
    base.chmod(0o755)
    folder = base / "nomina"
    folder.mkdir()
    if request.param == "sftp":
        user = pwd.getpwnam(SSH_TEST_USER)
        os.chown(folder, user.pw_uid, user.pw_gid)
    yield Intake(folder, "ssh_pruebas" if request.param == "sftp" else None)
    shutil.rmtree(base)


def test_a_delivered_copy_gets_its_slots_date_and_keeps_its_own(backups, intake, register_rows):
    content = os.urandom(50_000) + "nómina de noviembre".encode() * 1000
    delivered = dt.datetime(2026, 11, 3, 17, 42, 5, tzinfo=BOGOTA)
    intake.drop("nomina_20261103_final.zip", content, delivered)
    backups.write([intake.target()])
    run = backups.run("respaldo_diario", logical_date=slot(3), conf={"responsable": "Tesorería"})

    assert states(run)[f"{intake.id}.registrar"] == "success"
    [row] = register_rows(target=intake.id, run_id=run.run_id)
    assert row["status"] == "success" and row["mechanism"] == "manual"
    assert row["backup_at"] == slot(3) == row["logical_date"]
    assert (row["original_name"], row["original_date"]) == ("nomina_20261103_final.zip", delivered)
    assert row["responsible"] == "Tesorería"
    artifact = Path(row["artifact_path"])
    assert artifact == backups.root / f"diario/{intake.id}/2026/11/{intake.id}_20261103T230000.zip.zst"
    assert artifact.stat().st_mtime == slot(3).timestamp()
    assert subprocess.run(["zstd", "-dc", str(artifact)], capture_output=True, check=True).stdout == content
    assert intake.files() == ["tomados/nomina_20261103_final.zip"]
    assert (intake.path / "tomados/nomina_20261103_final.zip").read_bytes() == content


@pytest.mark.parametrize(("case", "reason"), [
    ("empty", "está vacía"),
    ("future", "tiene fecha futura"),
    ("older than the previous", "es más antigua que la última copia aceptada «nomina_20261103.zip»"),
    ("identical to the previous", "es idéntica (misma suma SHA-256) a la ya registrada «nomina_20261103.zip»"),
])
def test_a_bad_delivery_is_rejected_with_its_reason_and_nothing_is_deleted(backups, intake, smtp, case, reason,
                                                                           register_rows):
    accepted = os.urandom(30_000)
    intake.drop("nomina_20261103.zip", accepted, dt.datetime(2026, 11, 3, 18, 0, tzinfo=BOGOTA))
    backups.write([intake.target()])
    first = backups.run("respaldo_diario", logical_date=slot(3))
    assert states(first)[f"{intake.id}.registrar"] == "success"

    name = "nomina_20261104.zip"
    content, when = {
        "empty": (b"", dt.datetime(2026, 11, 4, 18, 0, tzinfo=BOGOTA)),
        "future": (os.urandom(1000), dt.datetime.now(BOGOTA) + dt.timedelta(days=2)),
        "older than the previous": (os.urandom(1000), dt.datetime(2026, 11, 2, 9, 0, tzinfo=BOGOTA)),
        "identical to the previous": (accepted, dt.datetime(2026, 11, 4, 18, 0, tzinfo=BOGOTA)),
    }[case]
    intake.drop(name, content, when)
    run = backups.run("respaldo_diario", logical_date=slot(4))

    assert states(run)[f"{intake.id}.verificar_fecha"] == "failed"
    [row] = register_rows(target=intake.id, run_id=run.run_id)
    assert row["status"] == "failed" and row["step"] == "verificar_fecha"
    assert reason in row["error"] and "rechazados/nomina_20261104.zip" in row["error"]
    assert row["original_name"] == name and row["artifact_path"] is None
    assert intake.files() == ["rechazados/nomina_20261104.zip", "rechazados/nomina_20261104.zip.motivo.txt",
                              "tomados/nomina_20261103.zip"]
    assert (intake.path / "rechazados" / name).read_bytes() == content
    note = (intake.path / "rechazados/nomina_20261104.zip.motivo.txt").read_text()
    assert reason in note and run.run_id in note and "No se borró nada" in note
    assert len(list(backups.root.rglob("*.zst"))) == 1
    mail = smtp.wait_for(lambda m: run.run_id in m.get_body(("html",)).get_content())
    assert f"«{intake.id}» en el paso «verificar_fecha»" in mail["Subject"]


def test_the_wait_ends_at_the_deadline_with_a_message_naming_folder_and_file(backups, intake, register_rows):
    backups.write([intake.target()])
    run = backups.run("respaldo_diario")  # manual trigger without a date: the window starts now

    assert states(run)[f"{intake.id}.copia"] == "failed"
    [row] = register_rows(target=intake.id, run_id=run.run_id)
    today = run.run_after.astimezone(BOGOTA)
    assert f"se esperaba un archivo «nomina_{today:%Y%m%d}*.zip» en la carpeta de entrega" in row["error"]
    assert str(intake.path) in row["error"] and row["step"] == "copia"
    ti = next(t for t in run.get_task_instances() if t.task_id == f"{intake.id}.copia")
    assert ti.try_number >= 1


def test_three_past_slots_take_their_own_files_and_dates(backups, intake, register_rows):
    for day in (5, 6, 7):
        intake.drop(f"nomina_202611{day:02d}.zip", os.urandom(2000), dt.datetime(2026, 11, day, 20, tzinfo=BOGOTA))
    intake.drop("nomina_20261108.zip", os.urandom(2000), dt.datetime(2026, 11, 8, 20, tzinfo=BOGOTA))
    backups.write([intake.target()])
    runs = [backups.run("respaldo_diario", logical_date=slot(day)) for day in (5, 6, 7)]

    rows = [register_rows(target=intake.id, run_id=run.run_id)[0] for run in runs]
    assert [r["status"] for r in rows] == ["success"] * 3, [r["error"] for r in rows]
    assert [r["backup_at"] for r in rows] == [slot(5), slot(6), slot(7)]
    assert [r["original_name"] for r in rows] == ["nomina_20261105.zip", "nomina_20261106.zip", "nomina_20261107.zip"]
    assert intake.files() == ["nomina_20261108.zip", "tomados/nomina_20261105.zip", "tomados/nomina_20261106.zip",
                              "tomados/nomina_20261107.zip"]


def test_without_a_date_in_the_name_files_are_taken_in_order_of_arrival(backups, intake, register_rows):
    intake.drop("exportacion_b.zip", b"segunda", dt.datetime(2026, 11, 10, 9, tzinfo=BOGOTA))
    intake.drop("exportacion_a.zip", b"primera", dt.datetime(2026, 11, 9, 9, tzinfo=BOGOTA))
    backups.write([intake.target(pattern="exportacion_*.zip")])
    runs = [backups.run("respaldo_diario", logical_date=slot(day)) for day in (9, 10)]
    rows = [register_rows(target=intake.id, run_id=run.run_id)[0] for run in runs]
    assert [r["original_name"] for r in rows] == ["exportacion_a.zip", "exportacion_b.zip"]


def test_a_second_run_for_the_same_slot_never_takes_the_same_file_again(backups, intake, register_rows):
    intake.drop("nomina_20261111.zip", os.urandom(5000), dt.datetime(2026, 11, 11, 19, tzinfo=BOGOTA))
    backups.write([intake.target()])
    first = backups.run("respaldo_diario", logical_date=slot(11))
    assert states(first)[f"{intake.id}.registrar"] == "success"
    second = backups.run("respaldo_diario", logical_date=slot(11) + dt.timedelta(seconds=1))

    assert states(second)[f"{intake.id}.copia"] == "failed"
    [row] = register_rows(target=intake.id, run_id=second.run_id)
    assert f"No llegó la copia manual de «{intake.id}»" in row["error"]
    assert intake.files() == ["tomados/nomina_20261111.zip"]
    assert len(list(backups.root.rglob("*.zst"))) == 1
