"""Retention: which copies are kept and which deleted, over real register rows and real files on disk.

Histories are written straight into the session's register (``respaldo.control_backup`` on the real
PostgreSQL) with their artifacts and ``.sha256`` files on disk, one target id per test. The table-driven
cases go through :func:`respaldo.ciclo.retencion.revisar` (the register and the disk as the command sees
them); the properties run the pure planner on random histories; the deletions go through the command.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from conftest import ROOT, SYSTEM_PG, own_register, write_inventory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from respaldo.ciclo import retencion
from respaldo.ciclo.politica import Retention
from respaldo.ciclo.retencion import DELETE, IGNORED, Copia, Objetivo
from respaldo.inventory import load_inventory

BOGOTA = zoneinfo.ZoneInfo("America/Bogota")
RESPALDO = str(ROOT / ".venv/bin/respaldo")
#: A register of this module's own: its drills still running must not meet the drill tests' clean-up.
CONN_ID = "retencion_registro"
_DATABASE: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _own_register():
    with own_register("respaldo_test_retencion", CONN_ID) as name:
        _DATABASE[:] = [name]
        yield


def register():
    from respaldo.register import esquema

    conn = psycopg.connect(f"{SYSTEM_PG}/{_DATABASE[0]}")
    esquema.migrate(conn)
    return conn


@dataclass(frozen=True)
class H:
    """One row of a history: a label, its local date (Bogota), and what it is."""

    label: str
    when: str
    status: str = "success"
    file: bool = True  # the artifact is on disk
    verify: str | None = None
    external: str | None = None


def seed(root: Path, target: str, history: list[H]) -> dict[str, int]:
    """Write the history's rows (and the artifacts of those with a file); return label -> row id."""
    ids = {}
    with register() as conn, conn.cursor() as cur:
        for item in history:
            local = dt.datetime.fromisoformat(item.when).replace(tzinfo=BOGOTA)
            path = None
            if item.status != "missing":
                folder = root / "diario" / target / f"{local:%Y}" / f"{local:%m}"
                path = folder / f"{target}_{local:%Y%m%dT%H%M%S}_{item.label}.tar.zst"
                if item.file:
                    folder.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(b"copia " + item.label.encode())
                    path.with_name(path.name + ".sha256").write_text(f"{'0' * 64}  {path.name}\n")
            cur.execute(
                "INSERT INTO respaldo.control_backup (target, kind, frequency, mechanism, dag_id, run_id, "
                "logical_date, backup_at, finished_at, status, artifact_path, sha256, compressed_bytes, error, "
                "verify_status, external_status) VALUES (%s, 'files', 'diario', 'automatic', 'respaldo_diario', %s, "
                "%s, %s, %s, %s, %s, %s, 7, %s, %s, %s) RETURNING id",
                (target, f"prueba__{item.label}", local, local if item.status != "missing" else None, local,
                 item.status, str(path) if path and (item.status == "success" or item.file) else None,
                 "0" * 64 if path else None, None if item.status == "success" else "falló a propósito",
                 item.verify, item.external))
            ids[item.label] = cur.fetchone()[0]
        conn.commit()
    return ids


def drill(target: str, control_id: int, verdict: str | None, finished: str) -> None:
    with register() as conn:
        conn.execute("INSERT INTO respaldo.simulacro (target, kind, control_id, started_at, finished_at, verdict) "
                     "VALUES (%s, 'files', %s, %s, %s, %s)",
                     (target, control_id, finished, finished if verdict else None, verdict))


def daily(days: int, start: str = "2026-11-01", hour: str = "23:00", prefix: str = "d") -> list[H]:
    first = dt.date.fromisoformat(start)
    return [H(f"{prefix}{i}", f"{first + dt.timedelta(days=i)} {hour}") for i in range(days)]


def decide(root: Path, history: list[H], policy: Retention | None, *, external: bool = False,
           drills: list[tuple[str, str | None, str]] = ()) -> dict[str, str]:
    """Seed a fresh target with ``history`` (and its drills), plan it from the register: label -> action."""
    target = f"ret_{uuid.uuid4().hex[:10]}"
    ids = seed(root, target, history)
    for label, verdict, finished in drills:
        drill(target, ids[label], verdict, finished)
    [found] = retencion.revisar(CONN_ID, [Objetivo(target, policy, "clase", external)], BOGOTA)
    by_id = {row_id: label for label, row_id in ids.items()}
    return {by_id[d.copia.id]: d.action for d in found.decisions}


def deleted(actions: dict[str, str]) -> set[str]:
    return {label for label, action in actions.items() if action == DELETE}


R = Retention.model_validate

CASES = {
    # keep_last and min_keep
    "keep_last_2_of_5": (daily(5), R({"keep_last": 2, "min_keep": 1}), {}, {"d0", "d1", "d2"}),
    "min_keep_3_beats_keep_last_1": (daily(5), R({"keep_last": 1, "min_keep": 3}), {}, {"d0", "d1"}),
    "min_keep_larger_than_history_deletes_nothing": (daily(4), R({"keep_last": 1, "min_keep": 10}), {}, set()),
    "min_keep_default_is_3": (daily(6), R({"keep_last": 1}), {}, {"d0", "d1", "d2"}),
    # the newest good copy
    "newest_damaged_newest_good_is_the_one_before": (
        [*daily(4), H("rota", "2026-11-05 23:00", verify="damaged")], R({"keep_last": 1, "min_keep": 1}), {},
        {"d0", "d1", "d2"}),
    "newest_file_gone_is_not_counted_nor_touched": (
        [*daily(4), H("sin_archivo", "2026-11-05 23:00", file=False)], R({"keep_last": 1, "min_keep": 1}), {},
        {"d0", "d1", "d2"}),
    "newest_good_kept_by_a_monthly_rule_alone": (daily(3), R({"keep_monthly": 1, "min_keep": 1}), {},
                                                 {"d0", "d1"}),
    # the approved drill
    "latest_approved_drill_copy_kept": (
        daily(6), R({"keep_last": 2, "min_keep": 1}),
        {"drills": [("d0", "aprobado", "2026-11-02 03:00"), ("d1", "aprobado", "2026-11-03 03:00"),
                    ("d3", "fallido", "2026-11-05 03:00")]},
        {"d0", "d2", "d3"}),
    "a_running_drill_protects_its_copy": (
        daily(4), R({"keep_last": 1, "min_keep": 1}), {"drills": [("d0", None, "2026-11-05 03:00")]}, {"d1", "d2"}),
    # the external copy
    "external_not_verified_kept": (
        [H("e0", "2026-11-01 23:00", external="pending"), H("e1", "2026-11-02 23:00", external="failed"),
         H("e2", "2026-11-03 23:00", external="success"), H("e3", "2026-11-04 23:00"),
         H("e4", "2026-11-05 23:00", external="success")],
        R({"keep_last": 1, "min_keep": 1}), {"external": True}, {"e2"}),
    "without_external_its_status_does_not_protect": (
        [H("e0", "2026-11-01 23:00", external="pending"), H("e1", "2026-11-02 23:00"),
         H("e2", "2026-11-03 23:00", external="success")],
        R({"keep_last": 1, "min_keep": 1}), {}, {"e0", "e1"}),
    # failures and gaps
    "failures_never_count_nor_protect": (
        [*daily(3), H("f0", "2026-11-04 23:00", status="failed", file=False),
         H("f1", "2026-11-05 23:00", status="failed"), H("m0", "2026-11-06 23:00", status="missing")],
        R({"keep_last": 2, "min_keep": 1}), {}, {"d0"}),
    "gaps_are_skipped_days_with_a_copy_count": (
        [H("a", "2026-10-01 23:00"), H("b", "2026-10-10 23:00"), H("c", "2026-10-20 23:00"),
         H("d", "2026-10-30 23:00")],
        R({"keep_daily": 3, "min_keep": 1}), {}, {"a"}),
    # an outage: 60 days without a copy ages nothing out
    "outage_ages_nothing_out": (
        [*daily(5, start="2026-08-01")], R({"keep_daily": 3, "min_keep": 1}), {}, {"d0", "d1"}),
    # rules in order, each over older copies only
    "daily_only_over_copies_older_than_keep_last": (
        [H("30b", "2026-11-30 22:00"), H("30a", "2026-11-30 13:00"), H("29b", "2026-11-29 22:00"),
         H("29a", "2026-11-29 13:00"), H("28b", "2026-11-28 22:00"), H("28a", "2026-11-28 13:00")],
        R({"keep_last": 2, "keep_daily": 2, "min_keep": 1}), {}, {"29a", "28a"}),
    "monthly_then_yearly": (
        [H(f"m{i}", f"{2024 + (i // 12)}-{i % 12 + 1:02d}-15 23:00") for i in range(30)],
        R({"keep_monthly": 3, "keep_yearly": 2, "min_keep": 1}), {},
        {f"m{i}" for i in range(30)} - {"m29", "m28", "m27", "m26", "m23"}),
    # ISO weeks, in the inventory's timezone: 2027-01-03 (Sunday) is still week 53 of 2026
    "iso_weeks_across_the_new_year": (
        [H("lun28", "2026-12-28 23:00"), H("dom03", "2027-01-03 22:00"), H("lun04", "2027-01-04 23:00")],
        R({"keep_weekly": 2, "min_keep": 1}), {}, {"lun28"}),
    "a_day_is_a_day_in_bogota_not_in_utc": (
        [H("a", "2026-11-10 20:00"), H("b", "2026-11-10 21:30"), H("c", "2026-11-11 08:00")],
        R({"keep_daily": 2, "min_keep": 1}), {}, {"a"}),
    # no retention at all, keep_all
    "no_retention_deletes_nothing": (daily(8), None, {}, set()),
    "keep_all_deletes_nothing": (daily(8), R({"keep_all": True}), {}, set()),
}


@pytest.mark.parametrize("history,policy,extra,expected", CASES.values(), ids=CASES.keys())
def test_retention_keeps_and_deletes_what_the_rules_say(tmp_path, history, policy, extra, expected):
    actions = decide(tmp_path, history, policy, **extra)
    assert deleted(actions) == expected, actions
    assert all(actions[h.label] == IGNORED for h in history if h.status != "success" or not h.file
               or h.verify == "damaged" if h.label in actions)


def test_the_outage_plan_is_the_plan_of_the_day_the_copies_stopped(tmp_path):
    """The planner never reads the clock: the same copies give the same plan however long ago they were (52 weeks
    earlier, so that the weekdays match)."""
    policy = R({"keep_daily": 3, "keep_weekly": 2, "min_keep": 2})
    old = decide(tmp_path, daily(20, start="2025-11-02"), policy)
    recent = decide(tmp_path, daily(20, start="2026-11-01"), policy)
    assert {label: action for label, action in old.items()} == recent


def test_a_target_overrides_its_class_retention(tmp_path):
    inventory = write_inventory(tmp_path / "inventario.yaml", tmp_path, [
        {"id": "con_clase", "kind": "files", "frequency": "diario", "path": "/srv/a"},
        {"id": "propia", "kind": "files", "frequency": "diario", "path": "/srv/b", "retention": {"keep_last": 4}},
        {"id": "todas", "kind": "files", "frequency": "diario", "path": "/srv/c", "retention": {"keep_all": True}},
    ], {"diario": {"schedule": "0 23 * * *", "retention": {"keep_last": 1, "min_keep": 1}}})
    loaded = load_inventory(inventory)
    objetivos = {t.id: retencion.objetivo_de(t, loaded.frequencies["diario"].retention,
                                             loaded.external_of(t) is not None) for t in loaded.targets}
    assert (objetivos["con_clase"].policy.keep_last, objetivos["con_clase"].source) == (1, "clase")
    assert (objetivos["propia"].policy.keep_last, objetivos["propia"].policy.min_keep) == (4, 3)
    assert objetivos["propia"].source == "objetivo"
    for name, expected in (("con_clase", {"d0", "d1", "d2", "d3", "d4"}), ("propia", {"d0", "d1"}),
                           ("todas", set())):
        assert deleted(decide(tmp_path, daily(6), objetivos[name].policy)) == expected, name


# --- properties over random histories -------------------------------------------------------------

START = dt.datetime(2025, 12, 20, tzinfo=dt.UTC)


@st.composite
def histories(draw):
    count = draw(st.integers(0, 40))
    minutes = draw(st.lists(st.integers(0, 60 * 24 * 800), min_size=count, max_size=count, unique=True))
    copies = []
    for row_id, offset in enumerate(minutes, start=1):
        status = draw(st.sampled_from(["success"] * 6 + ["failed", "missing"]))
        copies.append(Copia(
            row_id, START + dt.timedelta(minutes=offset), status, f"/r/{row_id}.zst",
            on_disk=status == "success" and draw(st.booleans() | st.just(True)),
            verify_status=draw(st.sampled_from([None, None, None, "intact", "damaged"])),
            external_status=draw(st.sampled_from([None, "pending", "success", "success", "failed"]))))
    return copies


def counts():
    return st.one_of(st.none(), st.integers(1, 6))


@st.composite
def policies(draw):
    if draw(st.integers(0, 9)) == 0:
        return None
    rules = {name: draw(counts()) for name in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly",
                                               "keep_yearly")}
    if all(value is None for value in rules.values()):
        rules["keep_last"] = 1
    return Retention(**rules, min_keep=draw(st.integers(1, 8)))


def good(copia: Copia) -> bool:
    return retencion.not_counted(copia) is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), policies(), st.booleans(), st.data())
def test_invariants_hold_on_random_histories_with_failures_and_gaps(copies, policy, external, data):
    drilled = data.draw(st.sampled_from([None, *[c.id for c in copies]]))
    protected = {drilled: "simulacro aprobado"} if drilled else {}
    decisions = retencion.plan(copies, policy, zone=BOGOTA, protected=protected, external=external)
    action = {d.copia.id: d.action for d in decisions}
    goods = sorted((c for c in copies if good(c)), key=lambda c: (c.backup_at, c.id), reverse=True)
    gone = {row_id for row_id, what in action.items() if what == DELETE}

    assert sorted(action) == sorted(c.id for c in copies)  # every copy has a decision
    assert all(d.reason for d in decisions)
    assert gone <= {c.id for c in goods}  # only good copies are ever deleted
    if goods:
        assert goods[0].id not in gone  # never the newest good copy
    minimum = policy.min_keep if policy else 0
    assert len(goods) - len(gone) >= min(minimum, len(goods))  # never below min_keep
    assert drilled not in gone  # never the approved drill's copy
    if external:
        assert not [c for c in goods if c.id in gone and c.external_status != "success"]
    if policy is None or policy.keep_all:
        assert not gone

    # Failed and missing rows (and damaged or vanished copies) neither count nor protect.
    counted = [c for c in copies if good(c)]
    again = retencion.plan(counted, policy, zone=BOGOTA, protected=protected, external=external)
    assert {d.copia.id for d in again if d.action == DELETE} == gone

    # Applying the plan and planning again deletes nothing more: a run of failures afterwards deletes nothing.
    kept = [c for c in copies if c.id not in gone]
    failures = [Copia(10_000 + i, c.backup_at + dt.timedelta(days=900), "failed", f"/r/f{i}.zst", on_disk=False)
                for i, c in enumerate(copies[:5])]
    after = retencion.plan(kept + failures, policy, zone=BOGOTA, protected=protected, external=external)
    assert not [d for d in after if d.action == DELETE]


# --- respaldo retencion, and --aplicar -------------------------------------------------------------


def respaldo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RESPALDO, *args], capture_output=True, text=True, timeout=300)


def rows_of(target: str) -> dict[int, dict]:
    with register() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM respaldo.control_backup WHERE target = %s ORDER BY id", (target,))
        return {row["id"]: row for row in cur.fetchall()}


@pytest.fixture
def history(tmp_path):
    """A target with six daily copies (and a failure) under ``keep_last: 2, min_keep: 2``, and its inventory."""
    target = f"ret_{uuid.uuid4().hex[:10]}"
    root = tmp_path / "respaldos"
    items = [*daily(6), H("falla", "2026-11-07 23:00", status="failed")]
    ids = seed(root, target, items)
    inventory = write_inventory(tmp_path / "inventario.yaml", root, [
        {"id": target, "kind": "files", "frequency": "diario", "path": "/srv/portal"},
    ], {"diario": {"schedule": "0 23 * * *", "retention": {"keep_last": 2, "min_keep": 2}}}, register_conn_id=CONN_ID)
    return target, ids, str(inventory)


def test_the_dry_run_says_keep_or_delete_and_why_and_touches_nothing(history):
    target, ids, inventory = history
    before = rows_of(target)
    done = respaldo("retencion", inventory)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "simulación: no se borra nada" in out
    assert f"{target}: keep_last 2, min_keep 2 (de su clase)" in out
    assert out.count("\n  borrar ") == 4 and out.count("\n  conservar ") == 2
    assert "la copia buena más reciente; keep_last: una de las 2 más recientes" in out
    assert "ninguna regla de retención la conserva (keep_last 2, min_keep 2)" in out
    assert "la fila es fallida, no una copia exitosa: no cuenta y la retención no la toca" in out
    assert "Fechas en America/Bogota." in out and "2026-11-06 23:00" in out
    assert rows_of(target) == before
    assert all(Path(row["artifact_path"]).is_file() for row in before.values() if row["status"] == "success")

    as_json = respaldo("retencion", inventory, "--json", "--objetivo", target)
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    [found] = report["objetivos"]
    assert report["aplicada"] is False and report["total"] == {"borrar": 4, "conservar": 2, "no_cuenta": 1}
    by_row = {copy["fila"]: copy for copy in found["copias"]}
    assert by_row[ids["d5"]]["decision"] == "conservar" and by_row[ids["d0"]]["decision"] == "borrar"
    assert by_row[ids["d5"]]["fecha"] == "2026-11-06T23:00:00-05:00"
    assert found["retention"]["keep_last"] == 2 and found["origen"] == "clase"


def test_aplicar_deletes_the_files_and_marks_the_rows_never_deleting_one(history):
    target, ids, inventory = history
    before = rows_of(target)
    done = respaldo("retencion", inventory, "--aplicar")
    assert done.returncode == 0, done.stderr
    assert "Retención aplicada" in done.stdout and "Total: 2 conservar, 4 borrada, 1 no cuenta" in done.stdout
    after = rows_of(target)
    assert set(after) == set(before)  # no row is ever deleted
    for label in ("d0", "d1", "d2", "d3"):
        row = after[ids[label]]
        path = Path(row["artifact_path"])
        assert not path.exists() and not path.with_name(path.name + ".sha256").exists()
        assert row["deleted_at"] is not None and row["status"] == "success"
        assert row["deletion_reason"].startswith("Retención: ninguna regla de retención la conserva")
    for label in ("d4", "d5"):
        row = after[ids[label]]
        assert Path(row["artifact_path"]).is_file() and row["deleted_at"] is None and row["deletion_reason"] is None
    assert after[ids["falla"]]["deleted_at"] is None

    again = respaldo("retencion", inventory, "--aplicar", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["total"] == {"conservar": 2, "no_cuenta": 1}
    assert report["objetivos"][0]["ya_borradas"] == 4
    assert rows_of(target) == after


def test_a_file_that_cannot_be_removed_is_said_on_its_row_and_the_exit_code(history):
    target, ids, inventory = history
    stuck = Path(rows_of(target)[ids["d0"]]["artifact_path"])
    sidecar_stuck = Path(rows_of(target)[ids["d1"]]["artifact_path"] + ".sha256")
    sidecar_stuck.unlink()
    sidecar_stuck.mkdir()  # a folder where the .sha256 was: the copy goes, its sidecar cannot
    (sidecar_stuck / "algo").write_text("x")
    subprocess.run(["chattr", "+i", str(stuck)], check=True)  # immutable: not even root can remove it
    try:
        done = respaldo("retencion", inventory, "--aplicar")
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert done.returncode == 1, done.stdout
    assert "NO SE BORRÓ" in done.stdout
    assert f"No se pudo borrar: fila {ids['d0']}" in done.stderr
    rows = rows_of(target)
    assert stuck.is_file() and rows[ids["d0"]]["deleted_at"] is None
    assert rows[ids["d0"]]["deletion_reason"].startswith("No se pudo borrar el ")
    assert "Operation not permitted" in rows[ids["d0"]]["deletion_reason"]
    assert not Path(rows[ids["d1"]]["artifact_path"]).exists() and rows[ids["d1"]]["deleted_at"] is not None
    assert "quedó su archivo" in rows[ids["d1"]]["deletion_reason"]
    assert rows[ids["d2"]]["deleted_at"] is not None and rows[ids["d3"]]["deleted_at"] is not None

    # Once the file can go, the next retention deletes it and its row tells the truth again.
    done = respaldo("retencion", inventory, "--aplicar", "--objetivo", target)
    assert done.returncode == 0, done.stderr
    row = rows_of(target)[ids["d0"]]
    assert not stuck.exists() and row["deleted_at"] is not None and row["deletion_reason"].startswith("Retención:")


def test_a_deletion_stopped_halfway_is_finished_and_a_kept_copy_loses_a_stale_reason(history):
    target, ids, inventory = history
    rows = rows_of(target)
    with register() as conn:  # as a retention killed between its steps leaves them
        conn.execute("UPDATE respaldo.control_backup SET deletion_reason = 'Retención: prueba.' WHERE id = ANY(%s)",
                     ([ids["d0"], ids["d5"]],))
    Path(rows[ids["d0"]]["artifact_path"]).unlink()
    dry = respaldo("retencion", inventory)
    assert "completar" in dry.stdout and "una retención anterior la borró del disco" in dry.stdout
    done = respaldo("retencion", inventory, "--aplicar")
    assert done.returncode == 0, done.stderr
    rows = rows_of(target)
    assert rows[ids["d0"]]["deleted_at"] is not None and rows[ids["d0"]]["deletion_reason"] == "Retención: prueba."
    assert rows[ids["d5"]]["deleted_at"] is None and rows[ids["d5"]]["deletion_reason"] is None


@pytest.mark.parametrize("args,message", [
    (["--objetivo", "no_existe"], "«no_existe» no es un objetivo del inventario"),
    (["/no/existe.yaml"], "no existe el archivo de inventario"),
])
def test_what_keeps_retention_from_running_exits_2(history, args, message):
    _, _, inventory = history
    done = respaldo("retencion", *([inventory] if not args[0].startswith("/") else []), *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_an_unreachable_register_exits_2_and_says_which_connection(tmp_path, monkeypatch):
    from devtools.servers import free_port

    monkeypatch.setenv("AIRFLOW_CONN_REGISTRO_CAIDO", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": free_port(), "login": "postgres", "schema": "x"}))
    inventory = write_inventory(tmp_path / "inventario.yaml", tmp_path, [
        {"id": "portal", "kind": "files", "frequency": "diario", "path": "/srv/portal"},
    ], {"diario": {"schedule": "0 23 * * *", "retention": {"keep_last": 2}}}, register_conn_id="registro_caido")
    done = respaldo("retencion", str(inventory), "--aplicar", "--json")
    assert done.returncode == 2
    assert "No se pudo aplicar la retención:\nNo se pudo abrir el registro FT-GTI-004 (conexión «registro_caido»)" \
        in done.stderr
    assert json.loads(done.stdout)["codigo"] == 2


def test_a_deleted_copy_is_refused_by_restaurar_skipped_by_verificar_and_shown_by_the_register(history, tmp_path):
    target, ids, inventory = history
    assert respaldo("retencion", inventory, "--aplicar").returncode == 0
    row = rows_of(target)[ids["d0"]]

    by_row = respaldo("restaurar", str(ids["d0"]), "--destino", str(tmp_path / "nueva"), "--inventario", inventory)
    assert by_row.returncode == 1
    assert f"La copia de la fila {ids['d0']} («{target}»" in by_row.stderr
    assert "fue borrada por la retención el " in by_row.stderr and "ninguna regla de retención" in by_row.stderr
    by_path = respaldo("restaurar", row["artifact_path"], "--destino", str(tmp_path / "nueva"),
                       "--inventario", inventory)
    assert by_path.returncode == 1 and "fue borrada por la retención" in by_path.stderr
    assert not (tmp_path / "nueva").exists()

    from respaldo.seguimiento import relectura
    from respaldo.simulacro import registro

    with register() as conn:
        kept = relectura.chosen(conn, [target], everything=True)
    assert {r["id"] for r in kept} == {ids["d4"], ids["d5"]}
    # A copy deleted while the re-reading had it in hand is gone on purpose: not «dañado», nothing recorded.
    stale = {key: row[key] for key in ("id", "target", "mechanism", "artifact_path", "sha256", "original_bytes",
                                       "backup_at", "verified_at")}
    assert relectura.read([stale], CONN_ID) == []
    assert rows_of(target)[ids["d0"]]["verify_status"] is None
    assert registro.newest_good(CONN_ID, [target])[target]["id"] == ids["d5"]

    sheet = respaldo("registro", inventory, "--objetivo", target, "--csv")
    assert sheet.returncode == 0, sheet.stderr
    header, *lines = sheet.stdout.splitlines()
    assert "Borrada por la retención" in header and "Motivo del borrado" in header
    assert sum("ninguna regla de retención la conserva" in line for line in lines) == 4
    text = respaldo("registro", inventory, "--objetivo", target)
    assert text.stdout.count("Borrada por la retención:") == 4
    assert text.stdout.count("Motivo del borrado:") == 4

    from respaldo.register import hoja  # the pages' and the printed sheet's «Observaciones»

    assert hoja.observations(row).startswith("Archivo borrado por la retención: ninguna regla de retención")
    assert "borrado" not in hoja.observations(rows_of(target)[ids["d5"]])


def test_bad_retention_blocks_are_told_where_they_are(tmp_path):
    inventory = write_inventory(tmp_path / "inventario.yaml", tmp_path, [
        {"id": "a", "kind": "files", "frequency": "diario", "path": "/srv/a", "retention": {"keep_dayly": 3}},
        {"id": "retencion", "kind": "files", "frequency": "diario", "path": "/srv/b"},
    ], {"diario": {"schedule": "0 23 * * *", "retention": {"min_keep": 5}},
        "semanal": {"schedule": "0 1 * * 0", "retention": {"keep_last": 0}}})
    done = respaldo("validate", str(inventory))
    assert done.returncode == 1
    assert "targets[0].retention.keep_dayly: clave desconocida «keep_dayly». ¿Quiso decir «keep_daily»?" \
        in done.stderr
    assert "frequencies.diario.retention: `retention` sin ninguna regla" in done.stderr
    assert "frequencies.semanal.retention.keep_last: valor «0» fuera de rango" in done.stderr
    assert "targets[1].id: «retencion» no sirve como id de objetivo: es el nombre de una tarea de cada DAG" \
        in done.stderr


# --- the DAG: retention after a success, nothing after a failure, a failed deletion told ------------


def test_a_class_with_retention_gets_one_retencion_teardown_after_every_target_and_others_none(tmp_path,
                                                                                               monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    inventory = write_inventory(tmp_path / "inv.yaml", tmp_path, [
        {"id": "portal", "kind": "files", "frequency": "diario", "path": "/srv/portal"},
        {"id": "documentos", "kind": "files", "frequency": "diario", "path": "/srv/documentos"},
        {"id": "nomina", "kind": "files", "frequency": "financiero", "path": "/srv/nomina",
         "retention": {"keep_daily": 30}},
        {"id": "contratos", "kind": "files", "frequency": "financiero", "path": "/srv/contratos", "queue": "sede_pasto",
         "retention": {"keep_daily": 60}},
        {"id": "imagen", "kind": "files", "frequency": "servidores_virtuales", "path": "/srv/imagen"},
    ], {"diario": {"schedule": "0 23 * * *", "retention": {"keep_last": 7, "keep_monthly": 12}},
        "financiero": {"schedule": "0 13 * * *"}, "servidores_virtuales": {"every_days": 8}})
    monkeypatch.setenv("RESPALDO_INVENTORY", str(inventory))
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    diario = bag.get_dag("respaldo_diario")
    pruning = diario.get_task("retencion")
    assert pruning.is_teardown and not pruning.on_failure_fail_dagrun and pruning.pool == "default_pool"
    assert pruning.upstream_task_ids == {"portal.registrar", "documentos.registrar", "preparar"}
    assert pruning.retention == {"keep_last": 7, "keep_daily": None, "keep_weekly": None, "keep_monthly": 12,
                                 "keep_yearly": None, "min_keep": 3, "keep_all": False}
    assert pruning.settings is diario.get_task("preparar").settings  # one settings dict per DAG (parse time)
    assert "**Retención:** keep_last 7, keep_monthly 12, min_keep 3." in diario.doc_md
    assert pruning.queue == "default"
    # Targets with retention on two Celery queues: one retention task on each queue, after every target.
    financiero = bag.get_dag("respaldo_financiero")
    assert "retencion" not in financiero.task_ids
    for queue in ("default", "sede_pasto"):
        task = financiero.get_task(f"retencion_en_{queue}")
        assert task.queue == queue and task.retention is None and task.is_teardown
        assert task.upstream_task_ids == {"nomina.registrar", "contratos.registrar", "preparar"}
    assert ("con la suya propia: `contratos` (keep_daily 60, min_keep 3), `nomina` (keep_daily 30, min_keep 3)"
            in financiero.doc_md)
    virtuales = bag.get_dag("respaldo_servidores_virtuales")
    assert "retencion" not in virtuales.task_ids
    assert "**Retención:** ninguna: no se borra ninguna copia." in virtuales.doc_md


def test_the_dag_applies_retention_after_a_success_and_deletes_nothing_after_a_failure(backups, smtp, tmp_path):
    from test_backup_postgres import states

    target = f"ret_dag_{uuid.uuid4().hex[:8]}"
    tree = tmp_path / "portal"
    (tree / "html").mkdir(parents=True)
    (tree / "html" / "index.html").write_text("<h1>Gobernación</h1>")
    backups.write([{"id": target, "kind": "files", "frequency": "diario", "path": str(tree)}],
                  {"diario": {"schedule": "0 23 * * *", "retries": 0,
                              "retention": {"keep_last": 2, "min_keep": 2}}}, register_conn_id=CONN_ID)
    ids = seed(backups.root, target, daily(3))

    first = backups.run("respaldo_diario")
    assert states(first)[f"{target}.registrar"] == "success" and states(first)["retencion"] == "success"
    assert str(getattr(first.state, "value", first.state)) == "success"
    rows = rows_of(target)
    [new] = [row for row in rows.values() if row["run_id"] == first.run_id]
    assert new["status"] == "success" and Path(new["artifact_path"]).is_file()
    assert [rows[ids[label]]["deleted_at"] is not None for label in ("d0", "d1", "d2")] == [True, True, False]
    assert not Path(rows[ids["d0"]]["artifact_path"]).exists() and Path(rows[ids["d2"]]["artifact_path"]).is_file()

    # A failed copy: retention does not run for the target, so nothing is deleted, not even the deletable.
    older = seed(backups.root, target, [H("vieja", "2026-10-01 23:00")])
    (tree / "html" / "index.html").unlink()
    tree.joinpath("html").rmdir()
    tree.rmdir()
    second = backups.run("respaldo_diario")
    assert states(second)[f"{target}.copia"] == "failed" and states(second)["retencion"] == "success"
    assert str(getattr(second.state, "value", second.state)) == "failed"
    rows = rows_of(target)
    assert rows[older["vieja"]]["deleted_at"] is None and Path(rows[older["vieja"]]["artifact_path"]).is_file()
    assert rows[ids["d2"]]["deleted_at"] is None

    # A copy retention cannot remove: the task fails and mails; the run keeps its copies' result.
    (tree / "html").mkdir(parents=True)
    (tree / "html" / "index.html").write_text("<h1>Gobernación</h1>")
    stuck = Path(rows[older["vieja"]]["artifact_path"])
    subprocess.run(["chattr", "+i", str(stuck)], check=True)
    try:
        third = backups.run("respaldo_diario")
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert states(third)[f"{target}.registrar"] == "success" and states(third)["retencion"] == "failed"
    assert str(getattr(third.state, "value", third.state)) == "success"
    rows = rows_of(target)
    assert stuck.is_file() and rows[older["vieja"]]["deleted_at"] is None
    assert rows[older["vieja"]]["deletion_reason"].startswith("No se pudo borrar")
    assert rows[ids["d2"]]["deleted_at"] is not None  # the rest of the plan was carried out
    mail = smtp.wait_for(lambda m: "La retención" in m["Subject"] and third.run_id in m["Subject"])
    body = mail.get_body(("html",)).get_content()
    assert "ninguna copia que deba conservarse se borró" in body and "no pudo borrar" in body.lower()


def test_a_file_two_rows_share_is_kept_while_one_of_them_keeps_it():
    """A copy repeated within one second with the same bytes is one file under two rows (published once)."""
    at = dt.datetime(2026, 11, 20, 23, 0, 5, tzinfo=dt.UTC)
    shared = "/respaldos/diario/portal/2026/11/portal_20261120T180005.tar.zst"
    copies = [Copia(1, at, "success", shared), Copia(2, at, "success", shared),
              Copia(3, at - dt.timedelta(days=1), "success", "/respaldos/diario/portal/2026/11/portal_19.tar.zst")]
    decisions = {d.copia.id: d for d in retencion.plan(copies, Retention(keep_last=1, min_keep=1), zone=BOGOTA)}
    assert decisions[2].action == retencion.KEEP  # the newest good copy (same time, higher id)
    assert decisions[1].action == retencion.KEEP and "el mismo de la fila 2" in decisions[1].reason
    assert decisions[3].action == DELETE
