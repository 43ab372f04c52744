"""What a copy records at backup time, for the drills: checked against what the copy actually restores to.

- PostgreSQL: the row counts are taken in pg_dump's own snapshot, so they equal the restored rows
  exactly, even while an application keeps inserting during the copy;
- MySQL/MariaDB: the two counts bracket mariadb-dump's snapshot, so the restored rows fall between them;
- a tar: the figures read from its stream (files, folders, links, bytes, a sample of hashes, sparse
  files at their full size) are what the folder it restores to shows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import subprocess
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from conftest import MYSQL_BACKUP_PASSWORD, MYSQL_BACKUP_USER

from respaldo import integridad
from respaldo.simulacro.cifras import compare_folder, measure_folder

log = logging.getLogger("respaldo.pruebas")


def pipe(command: str, **env) -> str:
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class Writer:
    """An application inserting rows, one commit each, for as long as the copy runs."""

    def __init__(self, insert):
        self.insert = insert
        self.stop = threading.Event()
        self.rows = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.insert()
            self.rows += 1

    def __enter__(self):
        self.thread.start()
        while self.rows < 50:  # writing for sure before the copy starts
            self.stop.wait(0.01)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_postgres_counts_are_taken_in_the_dumps_own_snapshot_while_an_application_writes(source_pg, drill_pg,
                                                                                          tmp_path):
    from respaldo.sources.postgres import PostgresSource, PostgresTarget

    database = f"cifras_{uuid.uuid4().hex[:6]}"
    source_pg.psql(f"CREATE DATABASE {database}")
    source_pg.psql("CREATE TABLE movimientos (id bigserial PRIMARY KEY, detalle text NOT NULL); "
                   "CREATE TABLE quieta (x int); INSERT INTO quieta SELECT generate_series(1, 777); "
                   "INSERT INTO movimientos (detalle) SELECT md5(g::text) FROM generate_series(1, 20000) g",
                   database=database)
    target = PostgresTarget(id="cifras_pg", kind="postgres", frequency="diario", responsible="x",
                            conn_id="pg_fuente", database=database)
    app = psycopg.connect(f"host=127.0.0.1 port={source_pg.port} user=postgres password={source_pg.password} "
                          f"dbname={database}", autocommit=True)
    try:
        with Writer(lambda: app.execute("INSERT INTO movimientos (detalle) VALUES ('en vivo')")) as writer:
            result = PostgresSource().copy(target, tmp_path / "cifras.dump.zst", log)
            during = writer.rows
        verified = integridad.verify_staged(result.path, expected_sha256=result.sha256,
                                            original_bytes=result.original_bytes)
        figures = PostgresSource().figures(target, verified, result.figures)
        assert set(figures["tablas"]) == {"public.movimientos", "public.quieta"} and "oid" not in figures

        restored = f"restaurada_{uuid.uuid4().hex[:6]}"
        drill_pg.psql(f"CREATE DATABASE {restored}")
        pipe(f"zstd -dc {shlex.quote(str(result.path))} | pg_restore --no-owner --exit-on-error -d {restored}",
             **drill_pg.env(database=restored))
        count = int(drill_pg.psql("SELECT count(*) FROM movimientos", database=restored).stdout)
        assert figures["tablas"] == {"public.movimientos": count, "public.quieta": 777}
        live = int(source_pg.psql("SELECT count(*) FROM movimientos", database=database).stdout)
        assert during > 50 and live > count, "the application kept writing while the copy ran"
        drill_pg.psql(f"DROP DATABASE {restored}")
    finally:
        app.close()
        source_pg.psql(f"DROP DATABASE {database} WITH (FORCE)")


def test_postgres_figures_keep_only_the_tables_the_archive_holds(source_pg, tmp_path):
    from respaldo.sources.postgres import PostgresSource, PostgresTarget

    database = f"cifras_{uuid.uuid4().hex[:6]}"
    source_pg.psql(f"CREATE DATABASE {database}")
    source_pg.psql("CREATE TABLE guardada (x int); INSERT INTO guardada VALUES (1), (2); "
                   "CREATE TABLE sesiones (x int); INSERT INTO sesiones VALUES (1)", database=database)
    target = PostgresTarget(id="cifras_pg", kind="postgres", frequency="diario", responsible="x",
                            conn_id="pg_fuente", database=database, exclude_tables=["sesiones"])
    try:
        result = PostgresSource().copy(target, tmp_path / "x.dump.zst", log)
        verified = integridad.verify_staged(result.path)
        assert PostgresSource().figures(target, verified, result.figures)["tablas"] == {"public.guardada": 2}
    finally:
        source_pg.psql(f"DROP DATABASE {database} WITH (FORCE)")


def test_mysql_counts_bracket_the_dumps_snapshot_while_an_application_writes(source_mariadb, drill_mariadb,
                                                                             tmp_path, monkeypatch):
    import MySQLdb

    from respaldo.sources.mysql import MysqlSource, MysqlTarget

    database = f"cifras_{uuid.uuid4().hex[:6]}"
    source_mariadb.sql(f"CREATE DATABASE {database}; "
                       f"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON {database}.* TO '{MYSQL_BACKUP_USER}'@'%';")
    source_mariadb.sql("CREATE TABLE movimientos (id BIGINT PRIMARY KEY AUTO_INCREMENT, detalle TEXT NOT NULL) "
                       "ENGINE=InnoDB; CREATE TABLE quieta (x INT) ENGINE=InnoDB; "
                       "INSERT INTO quieta SELECT seq FROM seq_1_to_333; CREATE TABLE bitacora (x INT) ENGINE=Aria;",
                       database)
    monkeypatch.setenv("AIRFLOW_CONN_MYSQL_CIFRAS", source_mariadb.connection_json(
        MYSQL_BACKUP_USER, MYSQL_BACKUP_PASSWORD, database))
    target = MysqlTarget(id="cifras_mysql", kind="mysql", frequency="diario", responsible="x", conn_id="mysql_cifras")
    app = MySQLdb.connect(unix_socket=str(source_mariadb.socket), user=source_mariadb.admin, database=database,
                          autocommit=True)
    try:
        with Writer(lambda: app.cursor().execute("INSERT INTO movimientos (detalle) VALUES ('en vivo')")):
            result = MysqlSource().copy(target, tmp_path / "cifras.sql.zst", log)
        figures = result.figures
        assert figures["segunda"] == "al ver la sesión de mariadb-dump en la base"
        assert figures["tablas"]["quieta"] == [333, 333]
        assert figures["no_transaccionales"] == ["bitacora"]

        drill_mariadb.sql(f"CREATE DATABASE {database}")
        pipe(f"zstd -dc {shlex.quote(str(result.path))} | {shlex.join(drill_mariadb.client_argv(database))}")
        count = int(drill_mariadb.sql("SELECT COUNT(*) FROM movimientos", database).stdout)
        low, high = figures["tablas"]["movimientos"]
        assert low <= count <= high, (low, count, high)
        assert high - low < 5000, "the bracket is an instant, not the whole copy"
        drill_mariadb.sql(f"DROP DATABASE {database}")
    finally:
        app.close()
        source_mariadb.sql(f"DROP DATABASE {database}")


# --- a tar's figures are what the folder it restores to shows ----------------------------------------


def _sparse(path: Path, size: int, data: list[tuple[int, bytes]]) -> None:
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset, chunk in data:
            handle.seek(offset)
            handle.write(chunk)


def tree_with_everything(root: Path) -> list[str]:
    (root / "a" / "vacía").mkdir(parents=True)
    (root / "a" / "texto ñ.txt").write_text("Gobernación del Putumayo\n" * 100)
    (root / "a" / "vacío.txt").touch()
    os.link(root / "a" / "texto ñ.txt", root / "a" / "enlace duro.txt")
    (root / "a" / "simbólico").symlink_to("texto ñ.txt")
    _sparse(root / "disco.img", 12 << 20, [(1 << 20, os.urandom(5000)), ((12 << 20) - 3, b"fin")])
    _sparse(root / "hueco_al_final.img", 3 << 20, [(0, os.urandom(70_000))])
    os.mkfifo(root / "tubo")
    for number in range(60):
        (root / "a" / f"archivo_{number:02}.bin").write_bytes(os.urandom(number * 37))
    return ["a", "disco.img", "hueco_al_final.img", "tubo"]


@pytest.mark.parametrize(("members", "options"), [
    (None, ["--sparse"]),
    (["a/texto ñ.txt", "a/archivo_07.bin"], []),  # files without their folders' own entries: tar makes those
    (["."], ["--sparse"]),
], ids=["everything-sparse", "files-without-folder-entries", "dot"])
def test_a_tars_figures_are_what_the_folder_it_restores_to_shows(tmp_path, members, options):
    source = tmp_path / "origen"
    source.mkdir()
    listed = tree_with_everything(source)
    archive = tmp_path / "copia.tar.zst"
    pipe(f"tar -c --format=posix {' '.join(options)} -C {shlex.quote(str(source))} -- "
         f"{shlex.join(members or listed)} | zstd -q -o {shlex.quote(str(archive))}")
    verified = integridad.verify_staged(archive)
    assert verified.intact, verified.reason
    figures = verified.contents
    restored = tmp_path / "restaurado"
    restored.mkdir()
    pipe(f"zstd -dc {shlex.quote(str(archive))} | tar -x --sparse -C {shlex.quote(str(restored))}")

    measured = measure_folder(restored, figures["muestra"])
    assert compare_folder(figures, measured)[0] == []
    assert {k: v for k, v in figures.items() if k != "muestra"} == {k: v for k, v in measured.items()
                                                                    if k != "muestra"}
    for name, sha256 in figures["muestra"].items():
        assert hashlib.sha256((source / name).read_bytes()).hexdigest() == sha256, name
    assert len(figures["muestra"]) == min(integridad.SAMPLE_FILES, figures["archivos"] - (1 if members is None or
                                                                                          members == ["."] else 0))


def test_the_sample_is_the_same_whatever_order_the_archive_lists_its_files_in(tmp_path):
    source = tmp_path / "origen"
    (source / "d").mkdir(parents=True)
    names = [f"d/f{number:03}" for number in range(100)]
    for name in names:
        (source / name).write_text(name)
    samples = []
    for order in (names, names[::-1]):
        archive = tmp_path / f"copia{len(samples)}.tar.zst"
        pipe(f"tar -c --format=posix -C {shlex.quote(str(source))} -- {shlex.join(order)} | zstd -q -o "
             f"{shlex.quote(str(archive))}")
        samples.append(integridad.verify_staged(archive).contents["muestra"])
    assert samples[0] == samples[1] and len(samples[0]) == integridad.SAMPLE_FILES


def test_a_changed_file_of_the_sample_is_told_by_name(tmp_path):
    recorded = {"archivos": 1, "bytes": 3, "carpetas": 0, "enlaces": 0, "especiales": 0,
                "muestra": {"a.txt": hashlib.sha256(b"abc").hexdigest()}}
    (tmp_path / "a.txt").write_bytes(b"abd")
    differences, figures = compare_folder(recorded, measure_folder(tmp_path, ["a.txt"]))
    assert differences == ["el contenido de «a.txt» no es el que tenía la copia (otra suma SHA-256)"]
    assert figures["muestra"] == {"revisados": 1, "distintos": ["a.txt"]}
    assert json.dumps(figures)  # stored as jsonb with the drill
