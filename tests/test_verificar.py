"""``respaldo verificar`` and the follow-up's re-reading: stored artifacts read to their end, damage found.

The artifacts are real ones, made by running the DAG against the real PostgreSQL; the damage is done
to the stored files afterwards, as a failing disk or a careless hand would.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import ROOT
from test_backup_postgres import SISTEMA

from respaldo.inventory import load_inventory
from respaldo.seguimiento import relectura

RESPALDO = [str(ROOT / ".venv/bin/respaldo")]
SLOTS = [dt.datetime(2026, 6, day, 4, 0, tzinfo=dt.UTC) for day in (1, 2)]


def respaldo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RESPALDO, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def target():
    """A target of this test alone: the register is shared by the whole session."""
    return {**SISTEMA, "id": f"sistema_{uuid.uuid4().hex[:8]}"}


@pytest.fixture
def two_copies(backups, register_rows, target):
    """Two good copies of the same target, oldest first, as their register rows."""
    backups.write([target])
    rows = []
    for number, slot in enumerate(SLOTS):
        if number:
            # Copies are named to the second: two dumps of the same data taken in the same second are the
            # same bytes under the same name (published once), which would make them one file.
            time.sleep(1.1)
        run = backups.run("respaldo_diario", logical_date=slot)
        [row] = register_rows(target=target["id"], run_id=run.run_id)
        assert row["status"] == "success"
        rows.append(row)
    return rows


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x40
    path.write_bytes(bytes(data))


def test_intact_copies_are_reported_intact_and_recorded(backups, two_copies, register_rows):
    proc = respaldo("verificar", str(backups.inventory), "--todo")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("íntegro ") == 2 and "2 íntegro(s), 0 dañado(s)." in proc.stdout
    for row in two_copies:
        [now] = register_rows(id=row["id"])
        assert now["verify_status"] == "intact" and now["verified_at"] is not None and now["verify_error"] is None


def test_a_truncated_newest_copy_is_found_recorded_mailed_once_and_makes_its_target_suspect(
        backups, two_copies, register_rows, smtp, target):
    newest = Path(two_copies[1]["artifact_path"])
    truncate(newest)

    proc = respaldo("verificar", str(backups.inventory))

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"dañado   {target['id']}" in proc.stdout and str(newest) in proc.stdout
    assert "1 íntegro(s)" not in proc.stdout, "by default only the newest copy of each target is read"
    [row] = register_rows(id=two_copies[1]["id"])
    assert row["verify_status"] == "damaged" and row["verify_error"] in proc.stdout
    assert row["verify_error"].startswith(f"La copia {newest.name} está truncada"), row["verify_error"]
    subject = f"[respaldo] Respaldo dañado de «{target['id']}»"
    mail = smtp.wait_for(lambda m: m["Subject"].startswith(subject) and str(newest) in
                         m.get_body(("html",)).get_content())
    assert "No lo use para restaurar" in mail.get_body(("html",)).get_content()

    again = respaldo("verificar", str(backups.inventory))
    assert again.returncode == 1
    assert len([m for m in smtp.messages if str(newest) in m.get_body(("html",)).get_content()
                and m["Subject"].startswith(subject)]) == 1, "a damaged copy is mailed once"

    follow = respaldo("seguimiento", str(backups.inventory), "--json")
    report = json.loads(follow.stdout)
    [state] = [s for s in report["objetivos"] if s["objetivo"] == target["id"]]
    assert state["estado"] == "sospechoso" or "sospechoso" in state.get("otros", []), state


def test_a_flipped_byte_in_an_older_copy_is_found_only_when_every_copy_is_read(backups, two_copies,
                                                                              register_rows, target):
    older = Path(two_copies[0]["artifact_path"])
    flip(older)

    newest_only = respaldo("verificar", str(backups.inventory))
    assert newest_only.returncode == 0, newest_only.stdout
    every = respaldo("verificar", str(backups.inventory), "--todo", "--objetivo", target["id"])
    assert every.returncode == 1, every.stdout + every.stderr
    assert "1 íntegro(s), 1 dañado(s)." in every.stdout
    [row] = register_rows(id=two_copies[0]["id"])
    assert row["verify_status"] == "damaged"
    # Where the flipped bit lands decides whether zstd or its checksum notices first: both say «dañada».
    assert row["verify_error"].startswith(f"La copia {older.name} está dañada: "), row["verify_error"]


def test_a_missing_artifact_is_damaged_and_says_it_is_gone(backups, two_copies, register_rows):
    newest = Path(two_copies[1]["artifact_path"])
    newest.unlink()
    proc = respaldo("verificar", str(backups.inventory))
    assert proc.returncode == 1
    assert f"el respaldo {newest} ya no está en el disco" in proc.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--objetivo", "no_existe"], "«no_existe» no es un objetivo del inventario"),
])
def test_what_cannot_be_checked_exits_2_with_a_plain_message(backups, two_copies, args, message):
    proc = respaldo("verificar", str(backups.inventory), *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_an_unreachable_register_exits_2(backups, monkeypatch):
    from devtools.servers import free_port

    monkeypatch.setenv("AIRFLOW_CONN_REGISTRO_CAIDO", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": free_port(), "login": "postgres", "schema": "x"}))
    backups.write([SISTEMA], register_conn_id="registro_caido")
    proc = respaldo("verificar", str(backups.inventory))
    assert proc.returncode == 2 and "No se pudo verificar: No se pudo abrir el registro FT-GTI-004" in proc.stderr


@pytest.mark.parametrize(("kept", "every_days", "runs_per_day", "share"), [
    (0, 30, 24, 1),
    (720, 30, 24, 1),
    (721, 30, 24, 2),
    (3000, 30, 24, 5),
    (3000, 30, 1, 100),
    (10, 1, 1, 10),
])
def test_each_run_rereads_enough_that_every_copy_is_reread_within_the_period(kept, every_days, runs_per_day, share):
    assert relectura.share_size(kept, every_days, runs_per_day) == share
    assert share * every_days * runs_per_day >= kept


def test_the_follow_up_rereads_the_copies_never_reread_first_and_records_them(backups, two_copies, register_rows,
                                                                             monkeypatch):
    inventory = load_inventory(backups.inventory)
    monkeypatch.setattr(relectura, "share_size", lambda *_: 1)
    [first] = relectura.share(inventory)
    [second] = relectura.share(inventory)
    assert {first.row_id, second.row_id} == {row["id"] for row in two_copies}
    assert first.intact and second.intact
    # Both read now: nothing is due until verify_every_days have passed.
    assert relectura.share(inventory) == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=inventory.followup.verify_every_days, hours=1)
    [again] = relectura.share(inventory, now=later)
    assert again.row_id == first.row_id, "the one read longest ago comes first"


def test_the_runs_per_day_of_the_follow_up_schedule_are_counted():
    assert relectura.runs_per_day("0 * * * *") == 24
    assert relectura.runs_per_day("30 6 * * *") == 1
    assert relectura.runs_per_day("0 7 * * 1") == pytest.approx(1 / 7)
