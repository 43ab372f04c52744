"""The monthly FT-GTI-004 sheet (XLSX and PDF) and ``respaldo registro``'s outputs, from a real register.

The XLSX is read back with openpyxl, the PDF with poppler's ``pdftotext``: what is checked is what a
person opening or printing them gets.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import subprocess
from pathlib import Path

import openpyxl
import psycopg
import pytest
from conftest import SYSTEM_PG, own_register, write_inventory

from respaldo import cli, register
from respaldo.register import hoja

ROOT = Path(__file__).resolve().parents[1]
CONN_ID = "registro_hoja"
BOGOTA = dt.timezone(dt.timedelta(hours=-5))
MANY = 90  # rows of one target in the month: the PDF needs several pages
RESPONSIBLE = "Ana Pérez Muñoz"
NOTES = "cierre de vigencia: revisión de señales"
FAILURE = "Falló «copia»: conexión rechazada por el servidor"
MISSING = "No hubo copia del turno 2026-03-18 23:00; faltante desde 2026-03-19 02:00"


def row(target: str, run_id: str, status: str, **extra) -> register.Row:
    return register.Row(target=target, kind=extra.pop("kind", "postgres"), frequency=extra.pop("frequency", "diario"),
                        mechanism=extra.pop("mechanism", "automatic"), dag_id=extra.pop("dag_id", "respaldo_diario"),
                        run_id=run_id, status=status, **extra)


def insert_missing(target: str, slot: dt.datetime, superseded_by: int | None = None, error: str = MISSING) -> int:
    with register.connect(CONN_ID) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO respaldo.control_backup (target, kind, frequency, mechanism, dag_id, run_id, logical_date, "
            "finished_at, status, error, superseded_by) VALUES (%s, 'postgres', 'diario', 'automatic', "
            "'respaldo_diario', %s, %s, %s, 'missing', %s, %s) RETURNING id",
            (target, f"faltante__{slot.isoformat()}", slot, slot + dt.timedelta(hours=3), error, superseded_by))
        found = cur.fetchone()[0]
        conn.commit()
    return found


@pytest.fixture(scope="module")
def database():
    """A register database of its own, reached as the Airflow connection CONN_ID while the module runs."""
    with own_register("respaldo_test_hoja", CONN_ID) as name:
        yield name


@pytest.fixture(scope="module")
def march(database):
    """March 2026 in the register: a success, a failure, a missing slot, a covered one, and many more rows."""
    register.record(CONN_ID, row("financiero_pg", "scheduled__2026-03-17T18:00:00+00:00", "success",
                                 frequency="financiero", dag_id="respaldo_financiero",
                                 logical_date=dt.datetime(2026, 3, 17, 18, 0, tzinfo=dt.UTC),
                                 backup_at=dt.datetime(2026, 3, 17, 18, 0, 5, tzinfo=dt.UTC),
                                 original_bytes=10 << 20, compressed_bytes=2 << 20, sha256="ab12cd34ef56" + "0" * 52,
                                 responsible=RESPONSIBLE, notes=NOTES, artifact_path="/r/financiero_pg.dump.zst"))
    register.record(CONN_ID, row("sistema_informacion_pg", "scheduled__2026-03-18T04:00:00+00:00", "failed",
                                 logical_date=dt.datetime(2026, 3, 18, 4, 0, tzinfo=dt.UTC), step="copia",
                                 error=FAILURE, responsible=RESPONSIBLE))
    insert_missing("sistema_informacion_pg", dt.datetime(2026, 3, 19, 4, 0, tzinfo=dt.UTC))
    covering = register.record(CONN_ID, row("sistema_informacion_pg", "backfill__2026-03-20T04:00:00+00:00",
                                            "success", logical_date=dt.datetime(2026, 3, 20, 4, 0, tzinfo=dt.UTC),
                                            backup_at=dt.datetime(2026, 3, 25, 15, 0, tzinfo=dt.UTC),
                                            original_bytes=1 << 20, compressed_bytes=1 << 18,
                                            sha256="cafe" * 16, responsible=RESPONSIBLE)).id
    insert_missing("sistema_informacion_pg", dt.datetime(2026, 3, 20, 4, 0, tzinfo=dt.UTC), superseded_by=covering,
                   error="TURNO CUBIERTO DESPUÉS")
    for index in range(MANY):
        when = dt.datetime(2026, 3, 1, 5, 0, tzinfo=dt.UTC) + dt.timedelta(hours=7 * index)
        register.record(CONN_ID, row("nomina_archivos", f"scheduled__{when.isoformat()}", "success", kind="files",
                                     mechanism="manual", logical_date=when, backup_at=when,
                                     original_bytes=300_000 + index, compressed_bytes=100_000 + index,
                                     sha256=f"{index:064x}", responsible="Tesorería",
                                     original_name=f"nomina_{when:%Y%m%d}.zip"))
    # April 1st 00:30 in Bogota: outside March.
    register.record(CONN_ID, row("financiero_pg", "scheduled__2026-04-01", "success", frequency="financiero",
                                 dag_id="respaldo_financiero",
                                 backup_at=dt.datetime(2026, 4, 1, 5, 30, tzinfo=dt.UTC), responsible="ABRIL"))
    # March 31st 23:30 in Bogota although April 1st in UTC: the period is the inventory's month.
    register.record(CONN_ID, row("financiero_pg", "scheduled__2026-03-31", "success", frequency="financiero",
                                 dag_id="respaldo_financiero",
                                 backup_at=dt.datetime(2026, 4, 1, 4, 30, tzinfo=dt.UTC), responsible="FIN DE MARZO"))


@pytest.fixture(scope="module")
def inventory(tmp_path_factory, database) -> Path:
    folder = tmp_path_factory.mktemp("hoja")
    path = write_inventory(folder / "inventory.yaml", folder, [
        {"id": "financiero_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg", "database": "f"},
        {"id": "sistema_informacion_pg", "kind": "postgres", "frequency": "diario", "conn_id": "pg", "database": "s"},
    ], register_conn_id=CONN_ID)
    return path


@pytest.fixture(scope="module")
def sheets(inventory, march, tmp_path_factory):
    """``respaldo registro --mes 2026-03 --xlsx --pdf``, the console script a person runs."""
    folder = tmp_path_factory.mktemp("hojas")
    xlsx, pdf = folder / "marzo.xlsx", folder / "marzo.pdf"
    proc = subprocess.run([str(ROOT / ".venv/bin/respaldo"), "registro", str(inventory), "--mes", "2026-03",
                           "--xlsx", str(xlsx), "--pdf", str(pdf)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = MANY + 5  # + success, failed, missing, backfill, March 31st; not the covered slot nor April
    period = "marzo de 2026 (2026-03-01 a 2026-03-31)"
    assert proc.stdout.splitlines() == [f"Hoja FT-GTI-004 de {period}: {lines} línea(s) en {xlsx}",
                                        f"Hoja FT-GTI-004 de {period}: {lines} línea(s) en {pdf}"]
    assert "fontTools" not in proc.stderr
    return xlsx, pdf


# --- XLSX ------------------------------------------------------------------------------------------


def xlsx_lines(path: Path) -> tuple[openpyxl.worksheet.worksheet.Worksheet, list[list], int]:
    sheet = openpyxl.load_workbook(path).active
    heading = next(r for r in range(1, 12) if sheet.cell(r, 1).value == "No.")
    lines = []
    for values in sheet.iter_rows(min_row=heading + 1, values_only=True):
        if not isinstance(values[0], int):
            break
        lines.append(list(values))
    return sheet, lines, heading


def test_the_xlsx_sheet_has_the_forms_header(sheets):
    sheet, _, heading = xlsx_lines(sheets[0])
    assert sheet["A1"].value == "Gobernación del Putumayo (pruebas)"
    assert sheet["A2"].value == "FORMATO DE CONTROL DE BACKUP"
    assert (sheet["A3"].value, sheet["D3"].value, sheet["G3"].value) == (
        "Código: FT-GTI-004", "Versión: 01", "Periodo: marzo de 2026 (2026-03-01 a 2026-03-31)")
    assert "Fechas en hora de America/Bogota" in sheet["A4"].value
    assert [c.value for c in sheet[heading]] == hoja.HEADINGS == [
        "No.", "Fecha programada", "Objetivo", "Frecuencia", "Mecanismo", "Estado", "Fecha de creación",
        "Tamaño original", "Tamaño comprimido", "SHA-256", "Responsable", "Observaciones",
        "Último simulacro aprobado"]


def test_the_xlsx_sheet_prints_on_a4_landscape_with_the_headings_on_every_page(sheets):
    sheet, _, heading = xlsx_lines(sheets[0])
    assert sheet.page_setup.orientation == "landscape" and int(sheet.page_setup.paperSize) == 9  # A4
    assert sheet.print_title_rows == f"${heading}:${heading}"
    assert sheet.sheet_properties.pageSetUpPr.fitToPage and sheet.page_setup.fitToWidth == 1
    assert sheet.oddFooter.right.text == "Página &P de &N"
    assert sheet.freeze_panes == f"A{heading + 1}"


def test_the_xlsx_sheet_styles_the_lines_it_holds(sheets):
    sheet, lines, heading = xlsx_lines(sheets[0])
    assert all(cell.font.bold for cell in sheet[heading])
    first, last = heading + 1, heading + len(lines)
    assert sheet.cell(first, 2).number_format == sheet.cell(last, 7).number_format == "yyyy-mm-dd hh:mm:ss"
    assert sheet.cell(last + 1, 1).border.top.style is None  # nothing styled past the last line
    for row in range(first, last + 1):
        assert sheet.cell(row, 12).alignment.wrap_text and sheet.cell(row, 1).border.left.style == "thin"
        assert sheet.cell(row, 6).font.bold == (sheet.cell(row, 6).value != "exitoso")


def test_the_xlsx_sheet_has_one_line_per_slot_in_spanish_words(sheets):
    _, lines, _ = xlsx_lines(sheets[0])
    assert [line[0] for line in lines] == list(range(1, MANY + 6))
    by_target = {}
    for line in lines:
        by_target.setdefault(line[2], []).append(line)
    [success] = [line for line in by_target["financiero_pg"] if line[10] == RESPONSIBLE]
    assert success[1:12] == [dt.datetime(2026, 3, 17, 13, 0), "financiero_pg", "financiero", "automático", "exitoso",
                             dt.datetime(2026, 3, 17, 13, 0, 5), "10.0 MiB", "2.0 MiB", "ab12cd34ef56", RESPONSIBLE,
                             NOTES]
    failed, missing, backfill = by_target["sistema_informacion_pg"]
    assert failed[1:12] == [dt.datetime(2026, 3, 17, 23, 0), "sistema_informacion_pg", "diario", "automático",
                            "fallido", None, None, None, None, RESPONSIBLE, FAILURE]
    assert (missing[1], missing[5], missing[6], missing[11]) == (dt.datetime(2026, 3, 18, 23, 0), "faltante", None,
                                                                 MISSING)
    assert backfill[5] == "exitoso" and backfill[6] == dt.datetime(2026, 3, 25, 10, 0)
    assert {line[4] for line in by_target["nomina_archivos"]} == {"manual"}
    assert by_target["nomina_archivos"][0][11] == "Archivo entregado: nomina_20260301.zip."
    every_word = {line[5] for line in lines}
    assert every_word == {"exitoso", "fallido", "faltante"}


def test_the_month_is_the_inventorys_month_not_utcs(sheets):
    _, lines, _ = xlsx_lines(sheets[0])
    responsibles = {line[10] for line in lines}
    assert "FIN DE MARZO" in responsibles and "ABRIL" not in responsibles
    assert "TURNO CUBIERTO DESPUÉS" not in {line[11] for line in lines}


def test_the_xlsx_sheet_ends_with_the_signature_lines(sheets):
    sheet, lines, heading = xlsx_lines(sheets[0])
    after = [[c for c in values if c] for values in sheet.iter_rows(min_row=heading + len(lines) + 1,
                                                                   values_only=True)]
    after = [values for values in after if values]
    assert after[0] == ["Elaboró", "Revisó"]
    assert [[v.split(":")[0] for v in values] for values in after[1:]] == [[f, f] for f in hoja.SIGNATURE_FIELDS]
    assert all(v.endswith("_" * 40) for values in after[1:] for v in values)


# --- PDF -------------------------------------------------------------------------------------------


def pdf_pages(path: Path) -> list[str]:
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    return text.split("\f")[:-1]


def test_the_pdf_is_a4_landscape(sheets):
    info = subprocess.run(["pdfinfo", str(sheets[1])], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Page size:\s+841\.89 x 595\.2\d pts \(A4\)", info), info


def test_every_pdf_page_repeats_the_form_header_the_headings_and_its_number(sheets):
    pages = pdf_pages(sheets[1])
    assert len(pages) >= 3, "the test data should need several pages"
    for number, page in enumerate(pages, 1):
        assert "Gobernación del Putumayo (pruebas)" in page and "FORMATO DE CONTROL DE BACKUP" in page
        assert "Código: FT-GTI-004" in page and "Versión: 01" in page
        assert "Periodo: marzo de 2026 (2026-03-01 a 2026-03-31)" in page
        assert f"Página {number} de {len(pages)}" in page
        if number < len(pages) or "nomina_archivos" in page:
            assert re.search(r"No\.\s+Fecha\s+Objetivo\s+Frecuencia\s+Mecanismo\s+Estado", page), page[:1500]


def test_the_pdf_lists_every_line_with_its_accents_and_enes(sheets):
    text = "\n".join(pdf_pages(sheets[1]))
    flat = " ".join(text.split())
    assert "Ana Pérez" in flat and "Muñoz" in flat and "revisión de señales" in flat
    assert "automático" in flat and "Tesorería" in flat and "Último" in flat
    for word in ("exitoso", "fallido", "faltante"):
        assert re.search(rf"\b{word}\b", flat), word
    assert "ab12cd34ef56" in flat and "10.0 MiB" in flat
    assert "Falló «copia»: conexión rechazada" in flat
    numbers = [int(n) for n in re.findall(r"^(\d+) {2,}\S", text, re.M)]  # «No.» starts a line; nothing else does
    assert numbers == list(range(1, MANY + 6))
    assert "ABRIL" not in flat and "TURNO CUBIERTO" not in flat


def test_the_pdf_ends_with_the_signature_lines(sheets):
    last = " ".join(pdf_pages(sheets[1])[-1].split())
    assert re.search(r"Elaboró\s+Revisó", last)
    for field in hoja.SIGNATURE_FIELDS:
        assert last.count(f"{field}:") == 2, field


# --- drills, when that capability exists ------------------------------------------------------------


def test_each_line_shows_the_last_drill_approved_by_the_end_of_the_period(inventory, march, tmp_path, database):
    def drills_column() -> dict[str, set]:
        with register.connect(CONN_ID) as conn:
            made = hoja.build(conn, organization="x", version="01", timezone="America/Bogota",
                              period=hoja.Period.month("2026-03"))
        column = {}
        for line in made.lines:
            column.setdefault(line.target, set()).add(line.drill)
        return column

    assert set().union(*drills_column().values()) == {None}, "no drill yet: nothing to show"
    with psycopg.connect(f"{SYSTEM_PG}/{database}", autocommit=True) as conn:
        conn.execute("INSERT INTO respaldo.simulacro (target, kind, verdict, finished_at) VALUES "
                     "('financiero_pg', 'postgres', 'aprobado', '2026-03-10 03:00+00'), "   # March 9th in Bogota
                     "('financiero_pg', 'postgres', 'fallido', '2026-03-20 12:00+00'), "
                     "('financiero_pg', 'postgres', 'aprobado', '2026-04-02 12:00+00'), "  # after the period
                     "('sistema_informacion_pg', 'postgres', 'fallido', '2026-03-05 12:00+00')")
    try:
        column = drills_column()
    finally:
        with psycopg.connect(f"{SYSTEM_PG}/{database}", autocommit=True) as conn:
            conn.execute("DELETE FROM respaldo.simulacro")
    assert column == {"financiero_pg": {dt.date(2026, 3, 9)}, "sistema_informacion_pg": {None},
                      "nomina_archivos": {None}}


# --- the text and CSV outputs -----------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``respaldo registro ARGV`` in this process: exit code, stdout, stderr."""
    try:
        code = cli.main(["registro", *argv])
    except SystemExit as refused:  # argparse refusing the command line itself
        code = refused.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_csv_has_every_column_of_the_table_with_the_sheets_words(inventory, march, capsys, database):
    code, out, _ = run_cli(capsys, str(inventory), "--csv", "--mes", "2026-03")
    assert code == 0
    table = list(csv.reader(io.StringIO(out)))
    with psycopg.connect(f"{SYSTEM_PG}/{database}") as conn:
        columns = [name for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'respaldo' "
            "AND table_name = 'control_backup' ORDER BY ordinal_position")]
    header, drill = table[0][:-1], table[0][-1]
    assert len(header) == len(columns) == len(set(header)) and len(columns) > 17
    assert [register.LABELS.get(c, c) for c in columns if c not in dict(register.SHEET_COLUMNS)] == \
        header[len(register.SHEET_COLUMNS):]
    assert drill == "Último simulacro aprobado", "as on the sheet, the target's last approved drill comes last"
    assert all(name in register.LABELS for name in columns), "every column has its Spanish label"
    assert header[:6] == ["Fecha de creación", "Objetivo", "Tipo", "Frecuencia", "Mecanismo", "Estado"]
    status = header.index("Estado")
    # The CSV keeps every row, the covered missing slot included (its «Cubierto por el registro» says by which).
    assert sorted({line[status] for line in table[1:]}) == ["exitoso", "fallido", "faltante"]
    assert len(table) - 1 == MANY + 6
    covered = header.index("Cubierto por el registro")
    assert sum(1 for line in table[1:] if line[covered]) == 1
    [success] = [line for line in table[1:] if line[header.index("Responsable")] == RESPONSIBLE
                 and line[status] == "exitoso" and line[header.index("Objetivo")] == "financiero_pg"]
    assert success[0] == "2026-03-17 13:00:05" and success[header.index("Tamaño original")] == str(10 << 20)
    assert success[header.index("Mecanismo")] == "automático"


def test_the_text_sheet_uses_the_same_words(inventory, march, capsys):
    code, out, _ = run_cli(capsys, str(inventory), "--mes", "2026-03", "--objetivo", "sistema_informacion_pg")
    assert code == 0
    states = re.findall(r"Estado:\s+(\S+)", out)
    assert sorted(states) == ["exitoso", "fallido", "faltante"]


BAD_INPUT = {
    "a month that does not exist": (["--mes", "2026-13", "--pdf", "x.pdf"], 2,
                                    "mes no válido «2026-13» (use AAAA-MM, por ejemplo 2026-11)"),
    "a date that is not one": (["--desde", "2026-02-30"], 2, "fecha no válida «2026-02-30» (use AAAA-MM-DD)"),
    "a month and a range": (["--mes", "2026-03", "--desde", "2026-03-01"], 2, "Use --mes o --desde/--hasta, no ambos."),
    "CSV and files at once": (["--csv", "--pdf", "x.pdf"], 2, "--csv escribe en la salida estándar"),
    "an unknown target": (["--objetivo", "financiero_pgg"], 1,
                          "Objetivo desconocido «financiero_pgg»: no está en el inventario ni en el registro. "
                          "¿Quiso decir «financiero_pg»?"),
    "a range that ends before it starts": (["--desde", "2026-03-10", "--hasta", "2026-03-01", "--xlsx", "x.xlsx"], 1,
                                           "el periodo termina (2026-03-01) antes de empezar (2026-03-10)"),
}


@pytest.mark.parametrize("argv, code, message", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_gets_a_spanish_message_and_no_file(inventory, march, capsys, tmp_path, monkeypatch, argv, code,
                                                      message):
    monkeypatch.chdir(tmp_path)
    exit_code, out, err = run_cli(capsys, str(inventory), *argv)
    assert (exit_code, out) == (code, "")
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_range_of_days_makes_a_sheet_of_those_days(inventory, march, tmp_path, capsys):
    code, out, _ = run_cli(capsys, str(inventory), "--desde", "2026-03-17", "--hasta", "2026-03-18",
                           "--objetivo", "sistema_informacion_pg", "--xlsx", str(tmp_path / "dias.xlsx"))
    assert code == 0 and "Hoja FT-GTI-004 de 2026-03-17 a 2026-03-18: 2 línea(s)" in out
    sheet, lines, _ = xlsx_lines(tmp_path / "dias.xlsx")
    assert sheet["G3"].value == "Periodo: 2026-03-17 a 2026-03-18"
    assert [line[5] for line in lines] == ["fallido", "faltante"]
