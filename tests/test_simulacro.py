"""Restore drills run through Airflow (``dag.test``) against real PostgreSQL, MariaDB and sshd.

The copies come from ``copias`` (one good copy of every kind, taken once per session). A drill of a
good copy is ``aprobado``; a tampered (sum), truncated or content-altered copy is ``fallido`` with its
reason, a row and an email; the scratch is dropped either way, and what a killed drill left is
dropped by the next run, and nothing else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psycopg
import pytest
from conftest import DRILL_MYSQL_CONN, DRILL_PG_CONN, REGISTER_DB, SYSTEM_PG, register_rows_of
from copias_de_prueba import KINDS

from devtools.demo_data import table_checksums_sql
from respaldo import register
from respaldo.simulacro import ejercicio

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "respaldo_simulacro"


def drills_of(run_id: str) -> dict[str, dict]:
    return {row["target"]: row for row in register_rows_of("simulacro", run_id=run_id)}


def states(dag_run) -> dict[str, str]:
    found = {}
    for ti in dag_run.get_task_instances():
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index or ti.map_index}]"
        found[key] = str(getattr(ti.state, "value", ti.state))
    return found


def scratch_left(drill_pg, drill_mariadb, folder: Path) -> list[str]:
    """Anything named like a drill's scratch on the drill servers or in the drill folder."""
    found = drill_pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'simulacro%'").stdout.split()
    found += drill_mariadb.sql("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE "
                               "'simulacro%'").stdout.split()
    found += [str(p) for p in folder.glob("simulacro_*")] if folder.exists() else []
    return found


def source_checksums(source_pg, source_mariadb) -> tuple:
    return (source_pg.psql(table_checksums_sql(), database="sistema_informacion").stdout,
            source_pg.psql(table_checksums_sql(), database="financiero").stdout,
            source_mariadb.table_checksums("tesoreria"))


def run_drills(copias, monkeypatch, targets=KINDS):
    copias.use(monkeypatch)
    return copias.dag(DAG_ID).test(run_conf={"objetivos": list(targets)})


def test_a_drill_of_every_kind_restores_the_good_copy_compares_it_and_drops_the_scratch(
        copias, monkeypatch, source_pg, source_mariadb, drill_pg, drill_mariadb, smtp):
    before = source_checksums(source_pg, source_mariadb)
    mails = len(smtp.messages)
    run = run_drills(copias, monkeypatch)

    result = states(run)
    assert {result[f"{g}.simulacro[{t}]"] for g, t in (("bases_postgres", "sim_pg"), ("bases_postgres", "sim_portal"),
                                                      ("bases_mysql", "sim_mysql"), ("carpetas", "sim_archivos"),
                                                      ("carpetas", "sim_vm"), ("carpetas", "sim_manual"))} == {
        "success"}, result
    assert result["preparar"] == result["cierre"] == "success"
    drills = drills_of(run.run_id)
    assert sorted(drills) == sorted(KINDS)
    for target, drill in drills.items():
        assert drill["verdict"] == "aprobado", (target, drill["error"])
        assert drill["control_id"] == copias.rows[target]["id"] and drill["error"] is None
        assert drill["started_at"] <= drill["finished_at"] and drill["scratch_dropped_at"] is not None
        assert drill["scratch"].startswith(f"simulacro_{target}_")
    figures = {target: drill["figures"] for target, drill in drills.items()}
    assert figures["sim_pg"]["tablas"]["public.tramites"] == {"copia": 3000, "restaurada": 3000}
    assert figures["sim_pg"]["comparacion"] == "exacta"
    assert figures["sim_mysql"]["tablas"]["pagos"]["restaurada"] == 3000
    assert figures["sim_portal"]["base_de_datos"]["tablas"]["public.comprobantes"]["restaurada"] == 3000
    assert figures["sim_archivos"]["muestra"] == {"revisados": 5, "distintos": []}
    assert figures["sim_vm"]["bytes"]["restaurada"] == 64 << 20
    assert figures["sim_manual"]["sha256"]["restaurada"] == copias.rows["sim_manual"]["original_sha256"]
    assert drills["sim_pg"]["server"] == DRILL_PG_CONN and drills["sim_mysql"]["server"] == DRILL_MYSQL_CONN
    assert drills["sim_archivos"]["server"] == "local"

    assert scratch_left(drill_pg, drill_mariadb, copias.drill_folder) == []
    assert source_checksums(source_pg, source_mariadb) == before, "a drill never touches the source"
    assert len(smtp.messages) == mails, "an approved drill sends no email"


# --- copies that must fail: tampered, truncated, content altered -------------------------------------

SKIPPABLE_FRAME = (0x184D2A50).to_bytes(4, "little") + (8).to_bytes(4, "little") + b"alterado"


def sh(command: str, **env) -> None:
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True,
                          env={**os.environ, **env})
    assert proc.returncode == 0, f"{command}: {proc.stderr}"


def flip(path: Path, offset: int) -> None:
    """Change one byte of a file, keeping its size."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def recompress(plain: Path, dest: Path) -> None:
    sh(f"zstd -q -3 --check -o {shlex.quote(str(dest))} {shlex.quote(str(plain))}")


def delete_a_row_in_a_pg_dump(drill_pg, dump_command: str, out: Path, table: str) -> None:
    """Restore a custom archive into a database of the drill server, delete one row, dump it again to ``out``."""
    name = f"alterada_{uuid.uuid4().hex[:8]}"
    drill_pg.psql(f"CREATE DATABASE {name}")
    env = drill_pg.env(database=name)
    try:
        sh(f"{dump_command} | pg_restore --no-owner --exit-on-error -d {name}", **env)
        drill_pg.psql(f"DELETE FROM {table} WHERE id = (SELECT min(id) FROM {table})", database=name)
        sh(f"pg_dump -Fc -Z0 -f {shlex.quote(str(out))} {name}", **env)
    finally:
        drill_pg.psql(f"DROP DATABASE {name} WITH (FORCE)")


def alter_content(copias, target: str, artifact: Path, work: Path, drill_pg, drill_mariadb) -> Path:
    """The same copy with its content changed where only the recorded figures can tell; returns the plain file."""
    from respaldo.sources.mysql import DUMP_OPTIONS

    work.mkdir()
    quoted = shlex.quote(str(artifact))
    plain = work / artifact.name.removesuffix(".zst")
    if target == "sim_pg":
        delete_a_row_in_a_pg_dump(drill_pg, f"zstd -dc {quoted}", plain, "tramites")
    elif target == "sim_mysql":
        name = f"alterada_{uuid.uuid4().hex[:8]}"
        drill_mariadb.sql(f"CREATE DATABASE {name}")
        try:
            sh(f"zstd -dc {quoted} | {shlex.join(drill_mariadb.client_argv(name))}")
            drill_mariadb.sql("DELETE FROM pagos ORDER BY id LIMIT 1", name)
            dump = ["mariadb-dump", "--no-defaults", f"--socket={drill_mariadb.socket}",
                    f"--user={drill_mariadb.admin}", *DUMP_OPTIONS, name]
            sh(f"{shlex.join(dump)} > {shlex.quote(str(plain))}", TZ="UTC")
        finally:
            drill_mariadb.sql(f"DROP DATABASE {name}")
    elif target == "sim_manual":
        sh(f"zstd -dc {quoted} > {shlex.quote(str(plain))}")
        flip(plain, 1000)
    else:
        tree = work / "arbol"
        tree.mkdir()
        sh(f"zstd -dc {quoted} | tar -x --sparse -C {shlex.quote(str(tree))}")
        recorded = copias.rows[target]["figures"]
        if target == "sim_portal":
            member = tree / "base_de_datos.dump"
            delete_a_row_in_a_pg_dump(drill_pg, f"cat {shlex.quote(str(member))}", member.with_suffix(".nuevo"),
                                      "comprobantes")
            member.with_suffix(".nuevo").replace(member)
            names = ["archivos", "base_de_datos.dump"]
        else:
            sampled = sorted(recorded["muestra"])[0]
            flip(tree / sampled, 10 if target != "sim_vm" else 512)
            names = sorted(p.name for p in tree.iterdir())
        sh(f"tar -c --format=posix --sparse -f {shlex.quote(str(plain))} -C {shlex.quote(str(tree))} "
           f"{shlex.join(names)}")
    return plain


def fabricate(copias, target: str, case: str, drill_pg, drill_mariadb) -> dict:
    """A newer "copy" of ``target`` in the register, made from its good one and spoilt as ``case`` says.

    The sidecar and the register's sum are the good copy's for a tampered or truncated copy; for an
    altered one they are consistent with the new bytes (only the figures recorded with the copy can tell).
    """
    import hashlib

    good = copias.rows[target]
    original = Path(good["artifact_path"])
    extension = original.name.split(".", 1)[1]
    artifact = original.with_name(f"{target}_{case}_{uuid.uuid4().hex[:6]}.{extension}")
    sha256, size = good["sha256"], good["original_bytes"]
    if case == "alterada":
        plain = alter_content(copias, target, original, artifact.parent / f".{artifact.name}.trabajo", drill_pg,
                              drill_mariadb)
        recompress(plain, artifact)
        size = plain.stat().st_size
        sha256 = hashlib.sha256(artifact.read_bytes()).hexdigest()
        subprocess.run(["rm", "-rf", str(plain.parent)], check=True)
    else:
        data = original.read_bytes()
        artifact.write_bytes(data + SKIPPABLE_FRAME if case == "manipulada" else data[: len(data) // 2])
    artifact.with_name(artifact.name + ".sha256").write_text(f"{sha256}  {artifact.name}\n")
    row = register.Row(
        target=target, kind=good["kind"], frequency=good["frequency"], mechanism=good["mechanism"],
        dag_id="respaldo_diario", run_id=f"prueba_{case}_{uuid.uuid4().hex[:8]}", status="success",
        backup_at=dt.datetime.now(dt.UTC), started_at=dt.datetime.now(dt.UTC), artifact_path=str(artifact),
        original_bytes=size, compressed_bytes=artifact.stat().st_size, sha256=sha256, compression="zstd-3",
        original_name=good["original_name"], original_date=good["original_date"],
        original_sha256=good["original_sha256"], figures=good["figures"])
    recorded = register.record("respaldo_registro", row)
    return {**register.get("respaldo_registro", target, row.run_id), "id": recorded.id}


@contextlib.contextmanager
def spoilt_copies(copias, case: str, drill_pg, drill_mariadb, targets=KINDS):
    """Each target's newest copy spoilt as ``case`` says; afterwards those rows are marked damaged (not good)."""
    rows = {target: fabricate(copias, target, case, drill_pg, drill_mariadb) for target in targets}
    try:
        yield rows
    finally:
        with psycopg.connect(f"{SYSTEM_PG}/{REGISTER_DB}") as conn:
            conn.execute("UPDATE respaldo.control_backup SET verify_status = 'damaged' WHERE id = ANY(%s)",
                         ([row["id"] for row in rows.values()],))


ALTERED = {
    "sim_pg": "public.tramites tiene 2.999 filas y la copia registró 3.000",
    "sim_mysql": "pagos tiene 2.999 filas y la copia registró 3.000",
    "sim_portal": "base del portal: public.comprobantes tiene 2.999 filas y la copia registró 3.000",
    "sim_archivos": "el contenido de «html/cron.sh» no es el que tenía la copia (otra suma SHA-256)",
    "sim_vm": "correo.img» no es el que tenía la copia (otra suma SHA-256)",
    "sim_manual": "el archivo restaurado no es el que se entregó (otra suma SHA-256)",
}


@pytest.mark.parametrize(("case", "reason"), [
    ("manipulada", lambda target, path: f"La suma SHA-256 de {path.name} no coincide con la de {path.name}.sha256"),
    ("truncada", lambda target, path: f"La copia {path.name} está truncada"),
    ("alterada", lambda target, path: ALTERED[target]),
], ids=["tampered-sum", "truncated", "content-altered"])
def test_a_spoilt_copy_of_every_kind_fails_its_drill_with_the_reason_a_row_and_an_email(
        copias, monkeypatch, case, reason, drill_pg, drill_mariadb, smtp, source_pg, source_mariadb):
    from respaldo.register import connect
    from respaldo.seguimiento import registro as seguimiento
    from respaldo.seguimiento.estados import Reglas, evaluar

    before = source_checksums(source_pg, source_mariadb)
    with spoilt_copies(copias, case, drill_pg, drill_mariadb) as spoilt:
        run = run_drills(copias, monkeypatch)

    result = states(run)
    assert result["preparar"] == result["cierre"] == "success"
    assert [key for key, state in result.items() if ".simulacro[" in key and state != "failed"] == []
    drills = drills_of(run.run_id)
    assert sorted(drills) == sorted(KINDS)
    for target, drill in drills.items():
        artifact = Path(spoilt[target]["artifact_path"])
        assert drill["verdict"] == "fallido" and drill["control_id"] == spoilt[target]["id"], target
        assert reason(target, artifact) in drill["error"], (target, drill["error"])
        if case == "alterada":
            assert drill["error"].startswith("La restauración no coincide con lo que registró la copia: ")
        assert drill["scratch_dropped_at"] is not None
        mail = smtp.wait_for(lambda m, t=target, d=drill: m["Subject"] == (
            f"[respaldo] Falló el simulacro de restauración de «{t}» (respaldo_simulacro)")
            and f"Simulacro {d['id']} " in m.get_body(("html",)).get_content())
        body = mail.get_body(("html",)).get_content()
        assert str(artifact) in body and "sospechoso" in body
        assert ("se borró lo restaurado" if case == "alterada" else "no quedó nada restaurado") in body
    assert scratch_left(drill_pg, drill_mariadb, copias.drill_folder) == [], "scratch is dropped when a drill fails"
    assert source_checksums(source_pg, source_mariadb) == before

    now = dt.datetime.now(dt.UTC)
    with connect("respaldo_registro") as conn:
        facts = seguimiento.facts(conn, {t: "diario" for t in KINDS}, {t: now for t in KINDS}, now, now)
    for target in KINDS:
        state = evaluar(facts[target], Reglas(max_age=dt.timedelta(days=400)), now, ejercicio_zone())
        assert "sospechoso" in (state.estado, *state.otros), (target, state)
        assert any("simulacro de restauración" in f.detalle for f in state.hallazgos)


def ejercicio_zone():
    import zoneinfo

    return zoneinfo.ZoneInfo("America/Bogota")


# --- a drill killed outright: the next run drops its leftovers, and nothing else ---------------------

KILLED_DRILL = """
import sys, time
from respaldo.inventory import load_inventory
from respaldo.simulacro import ejercicio, restauracion

calls, real = [], restauracion.run_restore

def long_restore(*args, **kwargs):  # the portal's database takes "forever": the drill is killed meanwhile
    calls.append(1)
    if len(calls) == 2:
        print("restaurando", flush=True)
        time.sleep(600)
    return real(*args, **kwargs)

restauracion.run_restore = long_restore
inventory = load_inventory()
ejercicio.drill(inventory.target("sim_portal"), inventory.drill_settings("respaldo_simulacro"),
                ejercicio.Ejecucion("respaldo_simulacro", sys.argv[1]))
"""


def test_a_killed_drills_scratch_is_dropped_by_the_next_run_and_nothing_else_is(copias, monkeypatch, drill_pg,
                                                                                drill_mariadb, smtp):
    from respaldo.simulacro import destino

    copias.use(monkeypatch)
    killed_run = f"prueba_matado_{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_DRILL), killed_run],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert _until(proc, "restaurando"), "the drill never reached its restore"
        [row] = register_rows_of("simulacro", run_id=killed_run)
        assert row["verdict"] is None and row["target"] == "sim_portal"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    scratch = row["scratch"]
    marked = drill_pg.psql(f"SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = "
                           f"'{scratch}'").stdout
    assert marked.startswith("respaldo simulacro de «sim_portal»"), marked
    assert (copias.drill_folder / scratch / destino.MARKER_FILE).is_file()
    # Look-alikes: the drills' prefix without respaldo's marker, and the marker without the prefix.
    drill_pg.psql("CREATE DATABASE simulacro_ajena")
    drill_pg.psql("CREATE DATABASE otra_con_marca; COMMENT ON DATABASE otra_con_marca IS "
                  "'respaldo simulacro de «nadie»'")
    drill_mariadb.sql("CREATE DATABASE simulacro_ajena_mysql COMMENT 'de otra aplicación'")
    foreign = copias.drill_folder / "simulacro_ajena"
    foreign.mkdir()
    (foreign / "datos.txt").write_text("no es de respaldo\n")
    try:
        run = copias.dag(DAG_ID).test(run_conf={"objetivos": ["sim_manual"]})
        assert states(run)["preparar"] == "success"
        left = scratch_left(drill_pg, drill_mariadb, copias.drill_folder)
        assert sorted(left) == sorted(["simulacro_ajena", "simulacro_ajena_mysql", str(foreign)])
        assert "otra_con_marca" in drill_pg.psql("SELECT datname FROM pg_database").stdout.split()
        [settled] = register_rows_of("simulacro", id=row["id"])
        assert settled["verdict"] == "fallido" and settled["scratch_dropped_at"] is not None
        assert settled["error"].startswith("El simulacro se interrumpió antes de su veredicto")
        smtp.wait_for(lambda m: m["Subject"] == "[respaldo] Falló el simulacro de restauración de «sim_portal» "
                      "(respaldo_simulacro)" and f"Simulacro {row['id']} " in m.get_body(("html",)).get_content())
    finally:
        drill_pg.psql("DROP DATABASE IF EXISTS simulacro_ajena; DROP DATABASE IF EXISTS otra_con_marca")
        drill_mariadb.sql("DROP DATABASE IF EXISTS simulacro_ajena_mysql")
        subprocess.run(["rm", "-rf", str(foreign)], check=True)


def _until(proc: subprocess.Popen, wanted: str) -> bool:
    """Read the process's output (its log included) until the line ``wanted``; False if it ended first."""
    for line in iter(proc.stdout.readline, ""):
        if line.strip() == wanted:
            return True
    return False


def test_a_drill_never_adopts_nor_drops_a_scratch_named_database_it_did_not_create(copias, monkeypatch, drill_pg):
    from respaldo.inventory import load_inventory
    from respaldo.simulacro import destino

    taken = f"simulacro_sim_pg_{uuid.uuid4().hex[:6]}"
    drill_pg.psql(f"CREATE DATABASE {taken}")
    drill_pg.psql("CREATE TABLE de_otro (x int); INSERT INTO de_otro VALUES (7)", database=taken)
    monkeypatch.setattr(destino, "scratch_name", lambda target, day: taken)  # the unique name, already taken
    copias.use(monkeypatch)
    inventory = load_inventory()
    try:
        outcome = ejercicio.drill(inventory.target("sim_pg"), inventory.drill_settings(DAG_ID),
                                  ejercicio.Ejecucion(DAG_ID, f"prueba_colision_{uuid.uuid4().hex[:6]}"))
        assert outcome["veredicto"] == "fallido" and "no es de este simulacro" in outcome["motivo"]
        assert drill_pg.psql("SELECT x FROM de_otro", database=taken).stdout.strip() == "7"
    finally:
        drill_pg.psql(f"DROP DATABASE {taken}")


# --- who is due, and in which order ----------------------------------------------------------------

NOW = dt.datetime(2026, 11, 29, 3, 0, tzinfo=dt.UTC)


def days_ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


@pytest.mark.parametrize(("turnos", "chosen", "expected"), [
    pytest.param([ejercicio.Turno("b", 7, 1), ejercicio.Turno("a", 7, 2)], None, ["a", "b"],
                 id="never-drilled-targets-are-due-in-id-order"),
    pytest.param([ejercicio.Turno("reciente", 7, 1, days_ago(2), "aprobado", 1),
                  ejercicio.Turno("atrasado", 7, 1, days_ago(30), "aprobado", 1),
                  ejercicio.Turno("justo", 7, 1, days_ago(7), "aprobado", 1),
                  ejercicio.Turno("nuevo", 7, 1)], None, ["nuevo", "atrasado", "justo"],
                 id="never-drilled-first-then-the-most-overdue"),
    pytest.param([ejercicio.Turno("casi", 7, 1, days_ago(6.8), "aprobado", 1)], None, ["casi"],
                 id="a-few-hours-early-is-due-the-schedule-drifts"),
    pytest.param([ejercicio.Turno("mensual", 30, 1, days_ago(10), "aprobado", 1)], None, [],
                 id="drill-every-days-of-the-class-decides"),
    pytest.param([ejercicio.Turno("fallo", 7, 2, days_ago(1), "fallido", 1),
                  ejercicio.Turno("fallo_igual", 7, 1, days_ago(1), "fallido", 1)], None, ["fallo"],
                 id="a-failed-drill-is-retried-once-a-newer-copy-exists"),
    pytest.param([ejercicio.Turno("sin_copia", 7, None)], None, [], id="a-target-without-a-good-copy-is-not-drilled"),
    pytest.param([ejercicio.Turno("reciente", 7, 1, days_ago(1), "aprobado", 1), ejercicio.Turno("otro", 7, 1)],
                 ["reciente"], ["reciente"], id="the-run-form-drills-exactly-what-it-names"),
    pytest.param([ejercicio.Turno("nuevo", 7, 1)], [], [], id="a-form-naming-other-servers-targets-drills-none-here"),
])
def test_the_targets_due_are_drilled_most_overdue_first(turnos, chosen, expected):
    assert [p.target for p in ejercicio.due(turnos, NOW, chosen)] == expected


def test_a_scheduled_run_drills_only_the_targets_due_most_overdue_first_one_at_a_time_per_server(
        copias, monkeypatch):
    from respaldo.simulacro import registro

    goods = registro.newest_good("respaldo_registro", list(KINDS))
    ago = {"sim_vm": 20, "sim_archivos": 10, "sim_manual": 1, "sim_pg": 0, "sim_mysql": 0, "sim_portal": 0}
    with psycopg.connect(f"{SYSTEM_PG}/{REGISTER_DB}") as conn:
        # Earlier drills of this session go far back: the drills inserted here are each target's latest.
        conn.execute("UPDATE respaldo.simulacro SET started_at = started_at - interval '400 days' "
                     "WHERE target = ANY(%s)", (list(KINDS),))
        for target, days in ago.items():
            conn.execute("INSERT INTO respaldo.simulacro (target, kind, control_id, run_id, started_at, finished_at, "
                         "verdict) VALUES (%s, 'prueba', %s, 'prueba_turno', now() - %s * interval '1 day', "
                         "now() - %s * interval '1 day', 'aprobado')", (target, goods[target]["id"], days, days))
    copias.use(monkeypatch)
    dag = copias.dag(DAG_ID)
    run = dag.test()

    drilled = sorted((ti.map_index, ti.rendered_map_index) for ti in run.get_task_instances()
                     if ti.task_id == "carpetas.simulacro" and ti.map_index >= 0)
    assert drilled == [(0, "sim_vm"), (1, "sim_archivos")]
    assert sorted(drills_of(run.run_id)) == ["sim_archivos", "sim_vm"]
    assert {dag.get_task(f"{group}.simulacro").pool for group in ("bases_postgres", "bases_mysql", "carpetas")} == {
        f"respaldo_simulacro_{DRILL_PG_CONN}", f"respaldo_simulacro_{DRILL_MYSQL_CONN}", "respaldo_simulacro_local"}
    assert dag.get_task("preparar").pool == dag.get_task("cierre").pool == "default_pool"


def test_the_register_shows_each_targets_last_approved_drill(copias, monkeypatch, capsys):
    from respaldo import cli

    run_drills(copias, monkeypatch, ["sim_pg"])
    [drill] = [d for d in drills_of_target("sim_pg") if d["verdict"] == "aprobado"][-1:]
    capsys.readouterr()
    assert cli.main(["registro", str(copias.inventory), "--objetivo", "sim_pg", "--limite", "1"]) == 0
    out = capsys.readouterr().out
    when = drill["finished_at"].astimezone(ejercicio_zone()).strftime("%Y-%m-%d %H:%M:%S")
    assert "sim_pg:" in out and when in out and f"simulacro {drill['id']})" in out
    assert "Último simulacro aprobado de cada objetivo" in out
    assert cli.main(["registro", str(copias.inventory), "--objetivo", "sim_pg", "--csv"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.endswith(",Último simulacro aprobado") and rows and all(row.endswith(when) for row in rows)


def drills_of_target(target: str) -> list[dict]:
    return register_rows_of("simulacro", target=target)


def test_the_dag_file_builds_the_drill_dag_and_its_tasks_read_as_sentences(copias, monkeypatch):
    copias.use(monkeypatch)
    dag = copias.dag(DAG_ID)
    assert {t.task_id for t in dag.tasks} == {"preparar", "cierre", "bases_postgres.elegir", "bases_postgres.simulacro",
                                             "bases_mysql.elegir", "bases_mysql.simulacro", "carpetas.elegir",
                                             "carpetas.simulacro"}
    assert dag.max_active_runs == 1 and dag.catchup is False and "simulacro" in dag.tags
    assert all(t.doc_md for t in dag.tasks) and "Simulacros de restauración" in dag.doc_md
    assert dag.get_task("bases_postgres.simulacro").retries == 0, "a failed drill is a finding, not a glitch to retry"
