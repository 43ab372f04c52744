"""respaldo's pages inside Airflow, on a real api-server, read by HTTP and by a real browser.

One Airflow stack serves the module (api-server, scheduler, DAG processor) with a register of its own:
rows written directly (a success, a failure, a missing slot, enough for several pages) and one real
run that fails at ``copia``, so a row links to a run and a task log that exist. The browser is
Debian's chromium driven by Playwright from PyPI (never a downloaded browser).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import time
import zoneinfo
from pathlib import Path

import httpx
import openpyxl
import psycopg
import pytest
from conftest import RUN_KEY, SYSTEM_PG, write_inventory

from devtools.airflow_stack import AirflowStack
from devtools.servers import free_port
from respaldo import register
from respaldo.ui.app import SECTIONS, create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
REGISTER_CONN = "registro_ui"
DOWN_PASSWORD = "ClaveDelRegistroCaido" + RUN_KEY
METADATA_DB = f"respaldo_test_ui_airflow_{RUN_KEY}"
REGISTER_DB = f"respaldo_test_ui_registro_{RUN_KEY}"
RESPONSIBLE = "Ana Pérez Muñoz"
NOTES = "cierre de vigencia: revisión de señales"
FAILURE = "Falló «copia»: conexión rechazada por el servidor"
MISSING = "No hubo copia del turno 2026-03-18 23:00"
EXTRA = 70  # more rows of one target: the register needs a second page, the PDF several
FREQUENCIES = {"financiero": {"schedule": ["0 13 * * *", "0 22 * * *"], "retries": 0},
               "diario": {"schedule": "0 23 * * *", "retries": 0}}
TARGETS = [
    {"id": "financiero_pg", "kind": "postgres", "frequency": "financiero", "conn_id": "pg_caido", "database": "f"},
    {"id": "sistema_informacion_pg", "kind": "postgres", "frequency": "diario", "conn_id": "pg_caido",
     "database": "s"},
    {"id": "caido_pg", "kind": "postgres", "frequency": "diario", "conn_id": "pg_caido", "database": "x",
     "description": "Una base que no responde"},
]


def _system_sql(sql: str) -> None:
    with psycopg.connect(f"{SYSTEM_PG}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def row(target: str, run_id: str, status: str, **extra) -> register.Row:
    frequency = extra.pop("frequency", "diario")
    return register.Row(target=target, kind="postgres", frequency=frequency, mechanism="automatic",
                        dag_id=f"respaldo_{frequency}", run_id=run_id, status=status, **extra)


def fill_register() -> None:
    register.record(REGISTER_CONN, row("financiero_pg", "scheduled__2026-03-17T18:00:00+00:00", "success",
                                       frequency="financiero",
                                       logical_date=dt.datetime(2026, 3, 17, 18, 0, tzinfo=dt.UTC),
                                       backup_at=dt.datetime(2026, 3, 17, 18, 0, 5, tzinfo=dt.UTC),
                                       original_bytes=10 << 20, compressed_bytes=2 << 20,
                                       sha256="ab12cd34ef56" + "0" * 52, responsible=RESPONSIBLE, notes=NOTES,
                                       artifact_path="/r/financiero_pg.dump.zst", step="registrar"))
    register.record(REGISTER_CONN, row("sistema_informacion_pg", "scheduled__2026-03-18T04:00:00+00:00", "failed",
                                       logical_date=dt.datetime(2026, 3, 18, 4, 0, tzinfo=dt.UTC), step="copia",
                                       error=FAILURE, responsible=RESPONSIBLE))
    with register.connect(REGISTER_CONN) as conn, conn.cursor() as cur:
        slot = dt.datetime(2026, 3, 19, 4, 0, tzinfo=dt.UTC)
        cur.execute(
            "INSERT INTO respaldo.control_backup (target, kind, frequency, mechanism, dag_id, run_id, logical_date, "
            "finished_at, status, error) VALUES ('sistema_informacion_pg', 'postgres', 'diario', 'automatic', "
            "'respaldo_diario', %s, %s, %s, 'missing', %s)",
            (f"faltante__{slot.isoformat()}", slot, slot + dt.timedelta(hours=3), MISSING))
        conn.commit()
    for index in range(EXTRA):
        when = dt.datetime(2026, 3, 2, 4, 0, tzinfo=dt.UTC) + dt.timedelta(hours=9 * index)
        register.record(REGISTER_CONN, row("sistema_informacion_pg", f"scheduled__{when.isoformat()}", "success",
                                           logical_date=when, backup_at=when + dt.timedelta(minutes=1),
                                           original_bytes=5_000_000 + 1000 * index, compressed_bytes=900_000 + index,
                                           sha256=f"{index + 1:012x}" + "f" * 52,
                                           responsible="Profesional área de sistemas"))


class UI:
    def __init__(self, stack: AirflowStack, inventory: Path, failed_run: str):
        self.stack, self.inventory, self.failed_run = stack, inventory, failed_run
        self.base = stack.base_url
        self.token = httpx.post(f"{self.base}/auth/token", json={"username": stack.username,
                                "password": stack.password}, timeout=30).json()["access_token"]

    def get(self, path: str, *, login: bool = True, **params) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if login else {}
        return httpx.get(f"{self.base}{path}", params=params, headers=headers, timeout=60, follow_redirects=False)


@pytest.fixture(scope="module")
def ui(tmp_path_factory, smtp):
    work = tmp_path_factory.mktemp("ui")
    inventory = write_inventory(work / "inventory.yaml", work / "respaldos", TARGETS, FREQUENCIES,
                                register_conn_id=REGISTER_CONN)
    (work / "respaldos").mkdir()
    for name in (METADATA_DB, REGISTER_DB):
        _system_sql(f'CREATE DATABASE "{name}"')
    connections = {
        f"AIRFLOW_CONN_{REGISTER_CONN.upper()}": json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": REGISTER_DB}),
        "AIRFLOW_CONN_REGISTRO_CAIDO": json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": free_port(), "login": "registrador",
             "password": DOWN_PASSWORD, "schema": "registro"}),
        "AIRFLOW_CONN_PG_CAIDO": json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": free_port(), "login": "nadie", "schema": "x"}),
    }
    env = {**{k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_")}, **connections,
           "RESPALDO_INVENTORY": str(inventory)}
    stack = AirflowStack(home=work / "airflow", database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/"
                         f"{METADATA_DB}", extra_env=env, schedule=False, timezone="America/Bogota")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(f"AIRFLOW_CONN_{REGISTER_CONN.upper()}", connections[f"AIRFLOW_CONN_{REGISTER_CONN.upper()}"])
            fill_register()
            stack.start()
            stack.api.wait_for_dag("respaldo_diario")
            stack.api.unpause("respaldo_diario")
            run_id = stack.api.trigger("respaldo_diario", {"objetivos": ["caido_pg"]},
                                       dt.datetime(2026, 3, 20, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))))
            assert stack.api.wait_for_run("respaldo_diario", run_id, timeout=240) == "failed"
            yield UI(stack, inventory, run_id)
    finally:
        stack.stop()
        for name in (METADATA_DB, REGISTER_DB):
            _system_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- login: every route, nothing without it ---------------------------------------------------------

#: Every route of the pages' app, read from the app itself: a route added later is in this list too.
APP_ROUTES = sorted(route.path for route in create_app().routes)


def test_the_app_has_the_routes_the_office_uses():
    assert {"/", "/registro", "/registro/hoja.xlsx", "/registro/hoja.pdf", "/objetivos/{target}", "/icono.svg",
            *(f"/{path}" for path in SECTIONS)} == set(APP_ROUTES)


@pytest.mark.parametrize("route", APP_ROUTES)
def test_every_route_answers_401_without_a_login_and_shows_no_data(ui, route):
    path = "/respaldo" + route.replace("{target}", "financiero_pg")
    anonymous = ui.get(path, login=False, mes="2026-03")
    assert anonymous.status_code == 401, anonymous.text[:500]
    assert "inicie sesión en Airflow para verlas" in anonymous.text
    for data in ("financiero_pg", RESPONSIBLE, "ab12cd34ef56", "2026-03-17"):
        assert data not in anonymous.text
    forged = httpx.get(f"{ui.base}{path}", headers={"Authorization": "Bearer no.es.un-token"}, timeout=30)
    assert forged.status_code == 403 and "financiero_pg" not in forged.text


def test_a_logged_in_request_gets_the_plugins_page_not_airflows_fallback(ui):
    page = ui.get("/respaldo/registro")
    assert page.status_code == 200 and "<h1>Registro FT-GTI-004</h1>" in page.text
    assert "financiero_pg" in page.text and page.headers["server-timing"].startswith("app;dur=")
    # Any path no route takes gets Airflow's own UI page with 200: only the content tells them apart.
    fallback = ui.get("/respaldo")
    assert fallback.status_code == 200 and "<h1>Registro FT-GTI-004</h1>" not in fallback.text
    missing = ui.get("/respaldo/no-existe")
    assert missing.status_code == 404 and "No existe esa página." in missing.text


def test_the_navigation_entries_are_registered_with_airflow(ui):
    [plugin] = [p for p in ui.stack.api.get("/plugins")["plugins"] if p["name"] == "respaldo"]
    views = {view["name"]: view for view in plugin["external_views"]}
    assert views["Registro FT-GTI-004"]["href"] == "/respaldo/registro"
    assert views["Registro FT-GTI-004"]["nav_top_level"] is True
    assert {views[name]["href"] for name in ("Seguimiento", "Simulacros")} == {"/respaldo/seguimiento",
                                                                               "/respaldo/simulacros"}
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == ["/respaldo"]


# --- what the pages show -----------------------------------------------------------------------------


def test_the_register_shows_every_slot_in_spanish_words_and_bogota_time(ui):
    page = ui.get("/respaldo/registro", objetivo="financiero_pg").text
    assert "2026-03-17 13:00" in page and "18:00" not in page  # 18:00 UTC is 13:00 in Bogota
    assert 'estado-exitoso">exitoso<' in page and NOTES in page and RESPONSIBLE in page
    failed = ui.get("/respaldo/registro", estado="fallido").text
    assert FAILURE in failed and 'estado-exitoso">' not in failed
    missing = ui.get("/respaldo/registro", estado="faltante").text
    assert MISSING in missing and 'estado-faltante">faltante<' in missing


def test_a_row_links_to_its_airflow_run_and_the_log_of_its_task(ui):
    page = ui.get("/respaldo/registro", objetivo="caido_pg").text
    run = f"/dags/respaldo_diario/runs/{ui.failed_run.replace(':', '%3A').replace('+', '%2B')}"
    assert f'href="{run}">ejecución</a>' in page
    assert f'href="{run}/tasks/caido_pg.copia">log de copia</a>' in page
    missing = ui.get("/respaldo/registro", estado="faltante").text
    assert "/dags/" not in missing  # a slot that never ran has no run to link to


def test_the_register_pages_through_every_row_keeping_the_filters(ui):
    first = ui.get("/respaldo/registro", objetivo="sistema_informacion_pg")
    rows = re.findall(r'<td class="fecha">([^<]+)</td>\s*<td><a href="/respaldo/objetivos/', first.text)
    assert len(rows) == 50
    older = re.search(r'href="([^"]+)" rel="next">Más antiguas', first.text).group(1).replace("&amp;", "&")
    assert "objetivo=sistema_informacion_pg" in older
    second = httpx.get(ui.base + older, headers={"Authorization": f"Bearer {ui.token}"}, timeout=30).text
    more = re.findall(r'<td class="fecha">([^<]+)</td>\s*<td><a href="/respaldo/objetivos/', second)
    assert len(rows) + len(more) == EXTRA + 2 and not set(rows) & set(more)
    assert rows == sorted(rows, reverse=True) and more == sorted(more, reverse=True) and rows[-1] > more[0]
    assert 'rel="next"' not in second and 'rel="prev">‹ Más recientes' in second


BAD_INPUT = {
    "a date that does not exist": ("/respaldo/registro", {"desde": "2026-02-30"}, 400,
                                   "Fecha «desde» no válida: «2026-02-30». Use AAAA-MM-DD"),
    "an unknown target": ("/respaldo/registro", {"objetivo": "nomina"}, 400,
                          "Objetivo desconocido «nomina»: no está en el inventario ni en el registro."),
    "an unknown status": ("/respaldo/registro", {"estado": "success"}, 400,
                          "Estado desconocido «success». Use exitoso, fallido, faltante."),
    "an unknown class": ("/respaldo/registro", {"clase": "semanal"}, 400, "Clase de frecuencia desconocida «semanal»"),
    "a period backwards": ("/respaldo/registro", {"desde": "2026-03-10", "hasta": "2026-03-01"}, 400,
                           "El periodo termina (2026-03-01) antes de empezar (2026-03-10)."),
    "an edited page link": ("/respaldo/registro", {"mas_antiguas": "x_y"}, 400, "El enlace de página no es válido"),
    "a month that does not exist": ("/respaldo/registro/hoja.pdf", {"mes": "2026-13"}, 400,
                                    "No se puede hacer la hoja: mes no válido «2026-13» (use AAAA-MM"),
    "a sheet of an unknown target": ("/respaldo/registro/hoja.xlsx", {"mes": "2026-03", "objetivo": "x"}, 400,
                                     "Objetivo desconocido «x»"),
    "the page of an unknown target": ("/respaldo/objetivos/nomina", {}, 404, "Objetivo desconocido «nomina»"),
}


@pytest.mark.parametrize("path, params, status, message", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_gets_a_plain_spanish_message_not_a_server_error(ui, path, params, status, message):
    answer = ui.get(path, **params)
    assert answer.status_code == status and answer.headers["content-type"].startswith("text/html")
    assert message in answer.text.replace("&lt;", "<").replace("&gt;", ">")
    assert "Traceback" not in answer.text and "<h1>" in answer.text


def test_a_register_that_cannot_be_reached_shows_a_plain_message_without_secrets(ui):
    good = ui.inventory.read_text(encoding="utf-8")
    ui.inventory.write_text(good.replace(f'"{REGISTER_CONN}"', '"registro_caido"'), encoding="utf-8")
    try:
        pages = [ui.get("/respaldo/registro"), ui.get("/respaldo/objetivos/financiero_pg"),
                 ui.get("/respaldo/registro/hoja.pdf", mes="2026-03")]
    finally:
        ui.inventory.write_text(good, encoding="utf-8")
    for page in pages:
        assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
        assert "No se pudo consultar el registro FT-GTI-004 en este momento." in page.text
        assert "«registro_caido»" in page.text
        assert DOWN_PASSWORD not in page.text and "Traceback" not in page.text
    assert ui.get("/respaldo/registro").status_code == 200


def test_the_target_page_draws_its_copies_and_sizes_as_svg(ui):
    page = ui.get("/respaldo/objetivos/sistema_informacion_pg", desde="2026-03-01", hasta="2026-03-31").text
    [timeline, trend] = re.findall(r"<svg .*?</svg>", page, re.S)
    successes = len(re.findall(r'<circle class="exitoso"', timeline))
    assert successes == len(re.findall(r'<circle class="punto-comprimido"', trend)) > 1
    assert len(re.findall(r'<rect class="fallido"', timeline)) == 1
    assert len(re.findall(r'<polygon class="faltante"', timeline)) == 1
    assert "<title>2026-03-17 23:00 · fallido</title>" in timeline  # Bogota time, Spanish word
    assert '<polyline class="serie-comprimido"' in trend and 'role="img"' in trend
    assert "exitoso (" in timeline and "faltante (1)" in timeline


@pytest.mark.parametrize("path", SECTIONS)
def test_the_pages_of_capabilities_not_installed_yet_say_so_without_inventing_data(ui, path):
    page = ui.get(f"/respaldo/{path}")
    assert page.status_code == 200 and "todavía no está" in page.text and "instalad" in page.text
    assert "<table" not in page.text and "<svg" not in page.text


# --- in a browser --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() gives every browser a fresh temporary profile and runs it headless.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def expected_states(first: dt.date, last: dt.date) -> list[str]:
    """The statuses of sistema_informacion_pg's rows dated between two days in Bogota, newest first."""
    bogota = zoneinfo.ZoneInfo("America/Bogota")
    dated = [(dt.datetime(2026, 3, 2, 4, 1, tzinfo=dt.UTC) + dt.timedelta(hours=9 * i), "exitoso")
             for i in range(EXTRA)]
    dated += [(dt.datetime(2026, 3, 18, 4, 0, tzinfo=dt.UTC), "fallido"),
              (dt.datetime(2026, 3, 19, 4, 0, tzinfo=dt.UTC), "faltante")]
    inside = [(when, status) for when, status in dated if first <= when.astimezone(bogota).date() <= last]
    return [status for _, status in sorted(inside, reverse=True)]


def pdf_pages(path: Path) -> list[str]:
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    return text.split("\f")[:-1]


def test_in_a_browser_the_office_logs_in_opens_the_register_filters_and_downloads_the_sheet(ui, browser, tmp_path):
    # A browser set to UTC: the pages still show Bogota time (the inventory's), not the browser's.
    context = browser.new_context(timezone_id="UTC", locale="es-CO", accept_downloads=True,
                                  viewport={"width": 1440, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{ui.base}/")
        page.wait_for_url("**/auth/login**")
        page.get_by_label("Username").fill(ui.stack.username)
        page.get_by_label("Password").fill(ui.stack.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{ui.base}/")

        page.get_by_role("link", name="Registro FT-GTI-004").click()
        page.wait_for_url("**/plugin/respaldo-registro")
        frame = page.frame_locator("iframe")
        frame.get_by_role("heading", name="Registro FT-GTI-004").wait_for()
        inner = page.locator("iframe").element_handle().content_frame()

        frame.get_by_label("Objetivo").select_option("sistema_informacion_pg")
        frame.get_by_label("Desde").fill("2026-03-17")
        frame.get_by_label("Hasta").fill("2026-03-19")
        frame.get_by_role("button", name="Filtrar").click()
        inner.wait_for_url("**objetivo=sistema_informacion_pg**")
        states = frame.locator("td.estado").all_inner_texts()
        assert [s.strip("●■△ ") for s in states] == expected_states(dt.date(2026, 3, 17), dt.date(2026, 3, 19))
        assert FAILURE in frame.locator("table").inner_text()
        page.screenshot(path=str(tmp_path / "registro.png"), full_page=True)
        assert (tmp_path / "registro.png").stat().st_size > 10_000

        frame.get_by_label("Mes", exact=True).fill("2026-03")
        sheets = {}
        for kind in ("XLSX", "PDF"):
            with page.expect_download() as download:
                frame.get_by_role("button", name=f"Descargar {kind}").click()
            sheets[kind] = tmp_path / download.value.suggested_filename
            download.value.save_as(sheets[kind])
        assert sorted(path.name for path in sheets.values()) == ["FT-GTI-004_2026-03_sistema_informacion_pg.pdf",
                                                                 "FT-GTI-004_2026-03_sistema_informacion_pg.xlsx"]
        check_xlsx(sheets["XLSX"])
        check_pdf(sheets["PDF"])

        # The failed run's row leads to Airflow's own page of that task, with its log. Airflow's frame is
        # sandboxed without top navigation, so the link opens in the frame.
        frame.get_by_label("Objetivo").select_option("caido_pg")
        frame.get_by_label("Desde").fill("")
        frame.get_by_label("Hasta").fill("")
        frame.get_by_role("button", name="Filtrar").click()
        inner.wait_for_url("**objetivo=caido_pg**")
        frame.get_by_role("link", name="log de copia").click()
        inner.wait_for_url(re.compile(r".*/dags/respaldo_diario/runs/.+/tasks/caido_pg\.copia$"))
        frame.get_by_text("connection", exact=False).first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "log.png"))
    finally:
        context.close()


def check_xlsx(path: Path) -> None:
    sheet = openpyxl.load_workbook(path).active
    assert sheet["A1"].value == "Gobernación del Putumayo (pruebas)"
    assert (sheet["A3"].value, sheet["D3"].value, sheet["G3"].value) == (
        "Código: FT-GTI-004", "Versión: 01", "Periodo: marzo de 2026 (2026-03-01 a 2026-03-31)")
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    heading = next(i for i, r in enumerate(values) if r[0] == "No.")
    lines = [r for r in values[heading + 1:] if isinstance(r[0], int)]
    assert len(lines) == EXTRA + 2
    by_status = {}
    for line in lines:
        by_status.setdefault(line[5], []).append(line)
    [failed], [missing] = by_status["fallido"], by_status["faltante"]
    assert failed[1:6] == [dt.datetime(2026, 3, 17, 23, 0), "sistema_informacion_pg", "diario", "automático",
                           "fallido"] and failed[11] == FAILURE and failed[10] == RESPONSIBLE
    assert missing[1] == dt.datetime(2026, 3, 18, 23, 0) and missing[11] == MISSING and missing[6] is None
    success = by_status["exitoso"][0]
    assert success[6] == dt.datetime(2026, 3, 1, 23, 1) and success[7] == "4.8 MiB" and success[9] == "0" * 11 + "1"
    tail = [v for r in values[heading + 1 + len(lines):] for v in r if v]
    assert tail[:2] == ["Elaboró", "Revisó"] and "Firma: " + "_" * 40 in tail


def check_pdf(path: Path) -> None:
    pages = pdf_pages(path)
    assert len(pages) >= 2
    for number, text in enumerate(pages, 1):
        assert "FORMATO DE CONTROL DE BACKUP" in text and "Código: FT-GTI-004" in text
        assert f"Página {number} de {len(pages)}" in text
        assert re.search(r"No\.\s+Fecha\s+Objetivo", text) or number == len(pages)
    flat = " ".join(" ".join(pages).split())
    assert "Gobernación del Putumayo (pruebas)" in flat and "Periodo: marzo de 2026" in flat
    assert "Falló «copia»: conexión rechazada" in flat and "Ana Pérez" in flat and "Muñoz" in flat
    assert re.search(r"\bfaltante\b", flat) and re.search(r"\bfallido\b", flat) and re.search(r"\bexitoso\b", flat)
    assert re.search(r"Elaboró\s+Revisó", flat) and flat.count("Firma:") == 2


def test_in_a_browser_the_run_form_triggers_with_responsable_and_observaciones_left_empty(ui, browser, tmp_path):
    """The form's help says empty is allowed: the Trigger button must not stay disabled when they are."""
    ui.stack.api.request("PATCH", "/dags/respaldo_diario", json={"is_paused": True})  # the run must not start
    before = {r["dag_run_id"] for r in ui.stack.api.runs("respaldo_diario")}
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(f"{ui.base}/")
        page.get_by_label("Username").fill(ui.stack.username)
        page.get_by_label("Password").fill(ui.stack.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{ui.base}/")
        page.goto(f"{ui.base}/dags/respaldo_diario")
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Run Parameters").wait_for()
        responsable = dialog.get_by_role("textbox").nth(1)  # Objetivos, Responsable, Observaciones
        responsable.fill("Ana Pérez")
        responsable.fill("")  # what a person does: types, then changes their mind
        trigger = dialog.get_by_role("button", name="Trigger")
        page.screenshot(path=str(tmp_path / "formulario.png"), full_page=True)
        assert trigger.is_enabled(), "with responsable and observaciones empty the form must still trigger"
        trigger.click()
        deadline = time.monotonic() + 30
        while not (new := [r for r in ui.stack.api.runs("respaldo_diario") if r["dag_run_id"] not in before]):
            assert time.monotonic() < deadline, "the form created no run"
            time.sleep(0.5)
        [run] = new
        assert run["conf"] == {"objetivos": [], "responsable": None, "observaciones": None}
    finally:
        context.close()
        for run in ui.stack.api.runs("respaldo_diario"):  # stopped before it copies anything (the DAG is paused)
            if run["dag_run_id"] not in before:
                ui.stack.api.request("PATCH", f"/dags/respaldo_diario/dagRuns/{run['dag_run_id']}",
                                     json={"state": "failed"})
        ui.stack.api.request("PATCH", "/dags/respaldo_diario", json={"is_paused": False})
