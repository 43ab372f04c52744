"""The FastAPI app behind respaldo's pages in the Airflow UI, mounted at ``/respaldo`` on the api-server.

Routes (all ``GET``, server-rendered HTML, no JavaScript):

- ``/registro``: the FT-GTI-004 register, newest first, filtered by target, frequency class, status
  and dates, in pages of :data:`PAGE_SIZE` (keyset: the next page starts after the last row shown).
- ``/registro/hoja.xlsx``, ``/registro/hoja.pdf``: the month's FT-GTI-004 sheet (``mes=AAAA-MM``,
  optional ``objetivo``), made by :mod:`respaldo.register.hoja` like ``respaldo registro --xlsx/--pdf``.
- ``/objetivos/{target}``: one target's copies: a timeline (exitoso, fallido, faltante) and the size
  trend as SVG, and the rows.
- ``/seguimiento``, ``/simulacros``: pages other capabilities provide (see :data:`SECTIONS`).
- ``/``: to ``/registro``; ``/icono.svg``: the navigation icon.

Every route requires an Airflow login: the access check is a dependency of the whole app, so a route
added later is covered too (401 without a login, never data). Rows are further limited to the DAGs
the user may read. The pages read the register through the inventory's register connection
(:func:`respaldo.register.connect`), never Airflow's metadata database; a register out of reach, a
broken inventory or bad input in a filter is a plain Spanish page, not a stack trace. Times are
shown in the inventory's timezone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import logging
import os
import time
import zoneinfo
from collections.abc import Generator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.exceptions import HTTPException

from respaldo.errors import InventoryError, RegisterError
from respaldo.inventory import Inventory, inventory_path, load_inventory
from respaldo.process import human_bytes
from respaldo.register import STATUS_WORDS, connect, consulta, hoja, word
from respaldo.ui import graficos

log = logging.getLogger(__name__)

PREFIX = "/respaldo"
PAGE_SIZE = 50
#: The target page draws at most this many rows (the newest of the period).
MAX_POINTS = 2000
TEMPLATES = Path(__file__).with_name("templates")
WORD_STATUS = {spanish: raw for raw, spanish in STATUS_WORDS.items()}

#: Pages other capabilities provide: path -> (navigation name, module, what the page says while the
#: module is not installed). The module exposes ``render(inventory) -> markupsafe.Markup``, an HTML
#: fragment it escaped itself; this app wraps it in the pages' layout and navigation.
SECTIONS: dict[str, tuple[str, str, str]] = {
    "seguimiento": ("Seguimiento", "respaldo.seguimiento.pagina",
                    "El seguimiento de los respaldos (estado de cada objetivo: al día, atrasado, fallido, vencido, "
                    "sospechoso) todavía no está instalado en esta versión de respaldo. Los turnos faltantes que "
                    "registre aparecerán en el registro con el estado «faltante»."),
    "simulacros": ("Simulacros", "respaldo.simulacro.pagina",
                   "Los simulacros de restauración todavía no están instalados en esta versión de respaldo. "
                   "Cuando lo estén, esta página mostrará cada simulacro y la hoja FT-GTI-004 el último aprobado "
                   "de cada objetivo."),
}


class PageError(Exception):
    """A request that ends in a plain Spanish page with this status instead of the page asked for."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


# --- what every page needs -----------------------------------------------------------------------


@lru_cache(maxsize=4)
def _inventory(path: str, mtime_ns: int, size: int) -> Inventory:
    return load_inventory(path)


def current_inventory() -> Inventory:
    """The inventory, parsed again only when its file changed."""
    path = inventory_path()
    try:
        stat = os.stat(path)
    except OSError as err:
        raise PageError(500, f"No se puede leer el inventario {path}: {err.strerror}.",
                        "Revise la variable RESPALDO_INVENTORY del api-server de Airflow.") from err
    try:
        return _inventory(str(path), stat.st_mtime_ns, stat.st_size)
    except InventoryError as err:
        raise PageError(500, str(err), "Corrija el inventario; `respaldo validate` lista los mismos problemas.") \
            from err


@dataclass
class Context:
    """One request's inventory, timezone, paths and the DAGs whose rows the user may read."""

    request: Request
    inventory: Inventory
    zone: zoneinfo.ZoneInfo
    root: str      # this app's path prefix, e.g. /respaldo
    airflow: str   # Airflow UI's path prefix ('' at the server's root)
    dag_ids: frozenset[str] | None

    @contextlib.contextmanager
    def register(self) -> Generator[Any, None, None]:
        """A connection to the register; out of reach, it becomes the plain page (503)."""
        try:
            with connect(self.inventory.register.conn_id) as conn:
                yield conn
        except RegisterError as err:
            log.warning("respaldo pages: %s", err)
            raise PageError(503, "No se pudo consultar el registro FT-GTI-004 en este momento.",
                            f"{err} Revise que el servidor PostgreSQL del registro esté en marcha y que la "
                            f"conexión de Airflow «{self.inventory.register.conn_id}» sea correcta.") from err

    def localize(self, value: dt.datetime | None) -> dt.datetime | None:
        return value.astimezone(self.zone) if value is not None else None


def _readable_dags(user: Any, inventory: Inventory) -> frozenset[str] | None:
    """The inventory's DAGs the user may read; None when all (no condition on the rows then)."""
    from airflow.api_fastapi.app import get_auth_manager

    dags = {f"respaldo_{name}" for name in inventory.frequencies}
    allowed = get_auth_manager().filter_authorized_dag_ids(dag_ids=dags, user=user, method="GET")
    return None if allowed >= dags else frozenset(allowed)


def _root(request: Request) -> str:
    """This app's path prefix as the request reached it (``/respaldo``, or below Airflow's own sub-path)."""
    return request.scope.get("root_path", "").rstrip("/") or PREFIX


def _context_dependency():
    from airflow.api_fastapi.core_api.security import get_user

    # Depends() as a default value: this module's annotations are strings (PEP 563), which FastAPI
    # resolves in the module's globals, where Airflow's security module is deliberately not imported.
    def context(request: Request, user: Any = Depends(get_user)) -> Context:  # noqa: B008
        inventory = current_inventory()
        root = _root(request)
        return Context(request=request, inventory=inventory, zone=zoneinfo.ZoneInfo(inventory.timezone), root=root,
                       airflow=root.removesuffix(PREFIX), dag_ids=_readable_dags(user, inventory))

    return context


# --- rendering -------------------------------------------------------------------------------------


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "css"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["tamano"] = lambda value: human_bytes(value) if value is not None else ""
    env.filters["palabra"] = lambda value, column: word(column, value) if value is not None else ""
    env.filters["observaciones"] = hoja.observations
    return env


ENVIRONMENT = _environment()


def render(ctx: Context | None, template: str, status: int = 200, *, root: str = PREFIX,
           **values: Any) -> HTMLResponse:
    """A page in the common layout; ``fecha()`` shows a time in the inventory's zone, ``enlaces()`` a row's run.

    Without a context (an error before the inventory was read), ``root`` is this app's path prefix.
    """
    zone = ctx.zone if ctx else None

    def fecha(value: dt.datetime | None) -> str:
        return value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value is not None and zone else ""

    def enlaces(row: dict[str, Any]) -> dict[str, str] | None:
        return airflow_links(ctx, row) if ctx else None

    root = ctx.root if ctx else root
    active = values.pop("active", "")
    nav = [{"name": "Registro FT-GTI-004", "href": f"{root}/registro", "active": active == "registro"}]
    nav += [{"name": name, "href": f"{root}/{path}", "active": active == path}
            for path, (name, _, _) in SECTIONS.items()]
    page = ENVIRONMENT.get_template(template).render(
        nav=nav, root=root, organization=ctx.inventory.organization if ctx else "",
        timezone=ctx.inventory.timezone if ctx else "", fecha=fecha, enlaces=enlaces, **values)
    return HTMLResponse(page, status_code=status)


def airflow_links(ctx: Context, row: dict[str, Any]) -> dict[str, str] | None:
    """The row's Airflow run and the task whose log tells its story; None for a slot that never ran."""
    if row["status"] == "missing" or not row.get("dag_id") or not row.get("run_id"):
        return None
    run = f"{ctx.airflow}/dags/{quote(row['dag_id'], safe='')}/runs/{quote(row['run_id'], safe='')}"
    step = row.get("step") or ("registrar" if row["status"] == "success" else None)
    if step is None:
        return {"run": run}
    task = f"{row['target']}.{step}"
    return {"run": run, "task": f"{run}/tasks/{quote(task, safe='')}", "task_name": step}


# --- input -----------------------------------------------------------------------------------------


def _day(text: str, what: str, errors: list[str]) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        errors.append(f"Fecha «{what}» no válida: «{text}». Use AAAA-MM-DD, por ejemplo 2026-11-30.")
        return None


def _known_target(ctx: Context, conn, name: str, errors: list[str]) -> str | None:
    if not name:
        return None
    if name in {t.id for t in ctx.inventory.targets} or name in consulta.targets(conn):
        return name
    errors.append(f"Objetivo desconocido «{name}»: no está en el inventario ni en el registro.")
    return None


def _period_bounds(ctx: Context, since: dt.date | None, until: dt.date | None,
                   errors: list[str]) -> tuple[dt.datetime | None, dt.datetime | None]:
    if since and until and until < since:
        errors.append(f"El periodo termina ({until:%Y-%m-%d}) antes de empezar ({since:%Y-%m-%d}).")
    start = dt.datetime.combine(since, dt.time(), ctx.zone) if since else None
    end = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), ctx.zone) if until else None
    return start, end


# --- the app ---------------------------------------------------------------------------------------


def create_app() -> FastAPI:
    """The pages' app. The whole app depends on Airflow's DAG-run read access: no route answers without a login."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    # No OpenAPI or docs pages: FastAPI adds them as plain routes that app dependencies do not reach.
    app = FastAPI(title="respaldo: registro FT-GTI-004", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))])
    page_context = Depends(_context_dependency())

    @app.middleware("http")
    async def server_timing(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        if response.media_type == "text/html":
            # No script runs in these pages; Airflow's own UI may frame them (same origin).
            response.headers["Content-Security-Policy"] = (
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
                "frame-ancestors 'self'; base-uri 'none'")
        return response

    @app.exception_handler(PageError)
    async def page_error(request: Request, err: PageError) -> HTMLResponse:
        return render(None, "error.html", err.status, root=_root(request), page_title="respaldo",
                      message=err.message, hint=err.hint)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> HTMLResponse:
        return render(None, "error.html", 400, root=_root(request), page_title="respaldo",
                      message="La dirección de la página tiene parámetros no válidos; vuelva al registro.")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> HTMLResponse:
        if err.status_code == 401:
            from airflow.api_fastapi.app import get_auth_manager

            return render(None, "error.html", 401, root=_root(request), page_title="Inicie sesión",
                          message="Estas páginas son parte de Airflow: inicie sesión en Airflow para verlas.",
                          login=get_auth_manager().get_url_login())
        if err.status_code == 403:
            return render(None, "error.html", 403, root=_root(request), page_title="Sin permiso",
                          message="Su usuario de Airflow no tiene permiso para ver las ejecuciones de los DAG.")
        return render(None, "error.html", err.status_code, root=_root(request), page_title="respaldo",
                      message="No existe esa página." if err.status_code == 404 else str(err.detail))

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("registro", status_code=303)

    @app.get("/icono.svg", include_in_schema=False)
    def icon() -> Response:
        return Response((TEMPLATES / "icono.svg").read_bytes(), media_type="image/svg+xml",
                        headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/registro", response_class=HTMLResponse)
    def register_page(ctx: Context = page_context, objetivo: str = "", clase: str = "",
                      estado: str = "", desde: str = "", hasta: str = "", mas_antiguas: str = "",
                      mas_recientes: str = "") -> HTMLResponse:
        form = {"objetivo": objetivo, "clase": clase, "estado": estado, "desde": desde, "hasta": hasta}
        errors: list[str] = []
        frequencies = sorted(ctx.inventory.frequencies)
        with ctx.register() as conn:
            names = sorted({t.id for t in ctx.inventory.targets} | set(consulta.targets(conn)))
            target = _known_target(ctx, conn, objetivo, errors)
            if clase and clase not in ctx.inventory.frequencies:
                errors.append(f"Clase de frecuencia desconocida «{clase}». Clases del inventario: "
                              f"{', '.join(frequencies)}.")
            if estado and estado not in WORD_STATUS:
                errors.append(f"Estado desconocido «{estado}». Use {', '.join(STATUS_WORDS.values())}.")
            since, until = _period_bounds(ctx, _day(desde, "desde", errors), _day(hasta, "hasta", errors), errors)
            cursors = {}
            for name, token in (("older_than", mas_antiguas), ("newer_than", mas_recientes)):
                if token:
                    try:
                        cursors[name] = consulta.Cursor.parse(token)
                    except consulta.CursorError:
                        errors.append("El enlace de página no es válido; vuelva a la primera página.")
            page = None
            if not errors:
                where = consulta.Filter(target=target, frequency=clase or None, status=WORD_STATUS.get(estado),
                                        since=since, until=until, dag_ids=ctx.dag_ids)
                page = consulta.page(conn, where, size=PAGE_SIZE, **cursors)
        kept = {key: value for key, value in form.items() if value}
        links = {"first": f"{ctx.root}/registro?{urlencode(kept)}"}
        if page is not None and page.older:
            links["older"] = f"{ctx.root}/registro?{urlencode({**kept, 'mas_antiguas': page.older.token()})}"
        if page is not None and page.newer:
            links["newer"] = f"{ctx.root}/registro?{urlencode({**kept, 'mas_recientes': page.newer.token()})}"
        shown_month = (dt.date.fromisoformat(desde) if desde and not errors else dt.datetime.now(ctx.zone).date())
        return render(ctx, "registro.html", 400 if errors else 200, active="registro",
                      page_title="Registro FT-GTI-004", form=form, errors=errors, page=page, links=links,
                      targets=names, frequencies=frequencies, status_words=list(STATUS_WORDS.values()),
                      month=f"{shown_month:%Y-%m}")

    def sheet(ctx: Context, mes: str, objetivo: str, extension: str) -> Response:
        errors: list[str] = []
        try:
            period = hoja.Period.month(mes) if mes else hoja.Period.containing(dt.datetime.now(ctx.zone).date())
        except hoja.SheetError as err:
            raise PageError(400, f"No se puede hacer la hoja: {err}.") from err
        made = None
        # Nothing but reading inside the block: connect() reports any exception raised in it as the register's.
        with ctx.register() as conn:
            target = _known_target(ctx, conn, objetivo, errors)
            if not errors:
                made = hoja.build(conn, organization=ctx.inventory.organization,
                                  version=ctx.inventory.register.form_version, timezone=ctx.inventory.timezone,
                                  period=period, target=target, dag_ids=ctx.dag_ids)
        if made is None:
            raise PageError(400, errors[0])
        try:
            content = hoja.xlsx_bytes(made) if extension == "xlsx" else hoja.pdf_bytes(made)
        except hoja.SheetError as err:
            raise PageError(500, f"No se puede hacer la hoja: {err}.") from err
        media = ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" if extension == "xlsx"
                 else "application/pdf")
        return Response(content, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{made.filename(extension)}"'})

    @app.get("/registro/hoja.xlsx")
    def sheet_xlsx(ctx: Context = page_context, mes: str = "", objetivo: str = "") -> Response:
        return sheet(ctx, mes, objetivo, "xlsx")

    @app.get("/registro/hoja.pdf")
    def sheet_pdf(ctx: Context = page_context, mes: str = "", objetivo: str = "") -> Response:
        return sheet(ctx, mes, objetivo, "pdf")

    @app.get("/objetivos/{target}", response_class=HTMLResponse)
    def target_page(target: str, ctx: Context = page_context, desde: str = "", hasta: str = "") -> HTMLResponse:
        errors: list[str] = []
        today = dt.datetime.now(ctx.zone).date()
        first = _day(desde, "desde", errors) or today - dt.timedelta(days=90)
        last = _day(hasta, "hasta", errors) or today
        since, until = _period_bounds(ctx, first, last, errors)
        form = {"desde": f"{first:%Y-%m-%d}", "hasta": f"{last:%Y-%m-%d}"}
        rows, unknown = None, []
        with ctx.register() as conn:
            if _known_target(ctx, conn, target, unknown) and not errors:
                found = consulta.page(conn, consulta.Filter(target=target, since=since, until=until,
                                                            dag_ids=ctx.dag_ids), size=MAX_POINTS)
                rows = found.rows
        if unknown:
            raise PageError(404, unknown[0])
        values: dict[str, Any] = {}
        if rows is not None:
            points = [graficos.Point(ctx.localize(row["row_date"]), row["status"], row["original_bytes"],
                                     row["compressed_bytes"]) for row in rows]
            local_since, local_until = since.astimezone(ctx.zone), until.astimezone(ctx.zone)
            counts = [(STATUS_WORDS[s], sum(1 for r in rows if r["status"] == s)) for s in graficos.LANES]
            values = {
                "timeline": graficos.timeline(
                    points, local_since, local_until,
                    title=f"Copias de {target} por estado, {first:%Y-%m-%d} a {last:%Y-%m-%d}"),
                "trend": graficos.size_trend(points, local_since, local_until,
                                             title=f"Tamaño de las copias de {target}"),
                "counts": counts, "truncated": found.older is not None,
                "last_success": next((r["backup_at"] for r in rows if r["status"] == "success"), None),
            }
        described = next((getattr(t, "description", "") for t in ctx.inventory.targets if t.id == target), "")
        return render(ctx, "objetivo.html", 400 if errors else 200, page_title=f"Objetivo «{target}»",
                      target=target, described=described, form=form, errors=errors, rows=rows, **values)

    def section_page(path: str):
        name, module_name, missing = SECTIONS[path]

        def handler(ctx: Context = page_context) -> HTMLResponse:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as err:
                if err.name is None or not (module_name == err.name or module_name.startswith(err.name + ".")):
                    raise  # a module it needs is missing: a real error, not "not installed"
                return render(ctx, "seccion.html", active=path, page_title=name, body=None, missing=missing)
            return render(ctx, "seccion.html", active=path, page_title=name,
                          body=Markup(module.render(ctx.inventory)), missing="")  # noqa: S704 - escaped there

        handler.__name__ = f"{path}_page"
        return handler

    for path in SECTIONS:
        app.get(f"/{path}", response_class=HTMLResponse)(section_page(path))

    return app
