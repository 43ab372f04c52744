"""The FT-GTI-004 register in PostgreSQL: one row per (target, run), migrations, the printed sheet."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest
from conftest import SYSTEM_PG, own_register, write_inventory

from respaldo import register
from respaldo.errors import RegisterError
from respaldo.register import esquema

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_register():
    """A register database of its own, empty (no schema yet)."""
    with own_register("respaldo_test_reg", "registro_nuevo") as name:
        yield name


def rows(database: str) -> list[dict]:
    with psycopg.connect(f"{SYSTEM_PG}/{database}", row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM respaldo.control_backup ORDER BY id").fetchall()


def row(status: str, target: str = "financiero_pg", run_id: str = "scheduled__2026-01-01", **extra) -> register.Row:
    return register.Row(target=target, kind="postgres", frequency="financiero", mechanism="automatic",
                        dag_id="respaldo_financiero", run_id=run_id, status=status, **extra)


def test_the_register_creates_its_schema_once_even_when_many_tasks_start_together(fresh_register):
    errors = []

    def write(index: int) -> None:
        try:
            register.record("registro_nuevo", row("success", target=f"objetivo_{index}"))
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(r["target"] for r in rows(fresh_register)) == [f"objetivo_{i}" for i in range(6)]
    with psycopg.connect(f"{SYSTEM_PG}/{fresh_register}") as conn:
        versions = conn.execute("SELECT version FROM respaldo.schema_migrations ORDER BY 1").fetchall()
        assert versions == [(version,) for version, _, _ in register.MIGRATIONS]


def test_a_retry_updates_its_row_instead_of_adding_one(fresh_register):
    register.record("registro_nuevo", row("failed", step="copia", error="Falló «copia»: sin conexión"))
    first = rows(fresh_register)
    register.record("registro_nuevo", row("success", step="registrar", sha256="ab" * 32, try_number=2))
    [updated] = rows(fresh_register)
    assert updated["id"] == first[0]["id"] and updated["status"] == "success"
    assert updated["error"] is None and updated["try_number"] == 2
    assert updated["updated_at"] > first[0]["updated_at"]


def test_a_failed_rerun_never_erases_a_success_of_the_same_run(fresh_register):
    register.record("registro_nuevo", row("success", artifact_path="/r/a.dump.zst", sha256="cd" * 32))
    register.record("registro_nuevo", row("failed", step="copia", error="Falló «copia»: x"))
    [kept] = rows(fresh_register)
    assert (kept["status"], kept["artifact_path"], kept["error"]) == ("success", "/r/a.dump.zst", None)


def test_an_unreachable_register_is_a_plain_error_without_the_password(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_REGISTRO_CAIDO", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "login": "u", "password": "ClaveDelRegistro99"}))
    with pytest.raises(RegisterError) as failure:
        register.record("registro_caido", row("success"))
    message = str(failure.value)
    assert message.startswith("No se pudo abrir el registro FT-GTI-004 (conexión «registro_caido»)")
    assert "ClaveDelRegistro99" not in message


def test_the_printed_sheet_uses_the_forms_words(fresh_register, tmp_path):
    at = dt.datetime(2026, 3, 17, 18, 0, 5, tzinfo=dt.UTC)
    register.record("registro_nuevo", row("success", backup_at=at, artifact_path="/r/f.dump.zst",
                                          original_bytes=10 << 20, compressed_bytes=2 << 20,
                                          responsible="Ana Pérez", notes="cierre de vigencia"))
    register.record("registro_nuevo", row("failed", target="otro_pg", error="Falló «copia»: sin conexión"))
    inventory = write_inventory(tmp_path / "inv.yaml", tmp_path, [])
    text = inventory.read_text().replace('"respaldo_registro"', '"registro_nuevo"')
    inventory.write_text(text)
    proc = subprocess.run([str(ROOT / ".venv/bin/respaldo"), "registro", str(inventory)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert "FORMATO DE CONTROL DE BACKUP FT-GTI-004" in proc.stdout
    assert "Fecha de creación:   2026-03-17 13:00:05" in proc.stdout  # shown in Bogota time
    assert "Estado:              exitoso" in proc.stdout and "Estado:              fallido" in proc.stdout
    assert "Tamaño original:     10.0 MiB" in proc.stdout and "Observaciones:       cierre de vigencia" in proc.stdout
    assert "Error:               Falló «copia»: sin conexión" in proc.stdout
    csv_out = subprocess.run([str(ROOT / ".venv/bin/respaldo"), "registro", "--csv", "--objetivo", "financiero_pg",
                              str(inventory)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert csv_out[0].startswith("Fecha de creación,Objetivo,Tipo,Frecuencia,Mecanismo,Estado,Archivo")
    assert len(csv_out) == 2 and ",exitoso,/r/f.dump.zst,10485760,2097152," in csv_out[1]


def test_a_migration_from_another_branch_runs_even_when_a_higher_one_arrived_first(fresh_register, monkeypatch):
    """Migrations written on separate branches may land out of order: each still runs once."""
    full = list(register.MIGRATIONS)
    # A real migration lower than the highest, and one rows can be written without (version 5 adds indexes only).
    late = next(m for m in full if m[0] == 5)
    assert late[0] < full[-1][0]
    monkeypatch.setattr(esquema, "MIGRATIONS", [m for m in full if m is not late])
    register.record("registro_nuevo", row("success"))  # the database has every version but the late one
    monkeypatch.setattr(esquema, "MIGRATIONS", full)
    register.record("registro_nuevo", row("success", run_id="scheduled__2026-01-02"))
    with psycopg.connect(f"{SYSTEM_PG}/{fresh_register}") as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM respaldo.schema_migrations ORDER BY applied_at, 1")]
    assert versions[-1] == late[0] and sorted(versions) == [v for v, _, _ in full]
