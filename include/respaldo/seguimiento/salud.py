"""Airflow's own health, asked over its public REST API (``/api/v2``) the way any client would.

``/api/v2/monitor/health`` needs no login; everything else authenticates with the Airflow connection
``followup.api_conn_id`` (login and password, exchanged for a token at ``/auth/token``). The API is at
that connection's host when it has one, else at ``[api] base_url``. Nothing here touches Airflow's
metadata database directly: Airflow's database may be exactly what is down, and the follow-up must
still run (from the register) and say so.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

#: Seconds to wait for each API call: a hung API server must not hang the follow-up.
TIMEOUT = 15.0
DAG_PREFIX = "respaldo_"
PAGE = 100


class ApiError(Exception):
    """Airflow's API could not be asked (not answering, refused the login, answered nonsense)."""


@dataclass(frozen=True)
class Problema:
    """One thing about Airflow that needs attention; ``key`` names it across checks."""

    key: str
    text: str


@dataclass
class Salud:
    """What Airflow's API said, or that it said nothing."""

    api_url: str | None
    answered: bool = False
    problems: list[Problema] = field(default_factory=list)
    #: Logical dates of the runs of each DAG still queued or running (their slots are not judged yet).
    in_progress: dict[str, set[dt.datetime]] = field(default_factory=dict)
    #: Task instances of respaldo's DAGs that ended failed (recent ones), as the API gives them.
    failed: list[dict[str, Any]] = field(default_factory=list)


def _url_of(conn: Any) -> str | None:
    host = (getattr(conn, "host", None) or "").strip()
    if not host:
        return None
    if "://" not in host:
        host = f"{conn.schema or 'http'}://{host}" if (conn.schema or "") in ("http", "https") else f"http://{host}"
    if conn.port and host.count(":") < 2:
        host = f"{host}:{conn.port}"
    return host.rstrip("/")


def _parse_time(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


class Api:
    """A small client of Airflow's REST API; the token is taken on first need."""

    def __init__(self, base_url: str, login: str | None, password: str | None, conn_id: str):
        import httpx

        self.base_url = base_url
        self._login, self._password, self.conn_id = login, password, conn_id
        self._client = httpx.Client(base_url=base_url, timeout=TIMEOUT)
        self._token: str | None = None

    @classmethod
    def of(cls, conn_id: str) -> tuple[Api | None, str | None]:
        """The client for the connection, and why the authenticated part cannot be asked (or None)."""
        from airflow.configuration import conf

        conn, problem = None, None
        try:
            from airflow.sdk import BaseHook

            conn = BaseHook.get_connection(conn_id)
        except Exception as err:  # noqa: BLE001 - a missing connection is reported, not raised
            problem = (f"no se pudo leer la conexión «{conn_id}» (usuario y clave de la API de Airflow): "
                       f"{str(err).strip()[:200]}")
        url = (_url_of(conn) if conn else None) or conf.get("api", "base_url", fallback="").rstrip("/") or None
        if url is None:
            return None, problem or f"ni la conexión «{conn_id}» ni [api] base_url dicen dónde está la API de Airflow"
        login = getattr(conn, "login", None)
        if conn is not None and not login:
            problem = f"la conexión «{conn_id}» no tiene usuario (login) para entrar a la API de Airflow"
        return cls(url, login, getattr(conn, "password", None), conn_id), problem

    def close(self) -> None:
        self._client.close()

    def _call(self, path: str, *, auth: bool = True, params: Any = None) -> Any:
        import httpx

        headers = {}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        try:
            response = self._client.get(path, params=params, headers=headers)
        except httpx.HTTPError as err:
            raise ApiError(f"la API de Airflow en {self.base_url} no respondió: {type(err).__name__}: {err}") from err
        if response.status_code != 200:
            raise ApiError(f"la API de Airflow respondió {response.status_code} a {path}: {response.text[:200]}")
        try:
            return response.json()
        except ValueError as err:
            raise ApiError(f"la API de Airflow respondió algo que no es JSON a {path}") from err

    def token(self) -> str:
        import httpx

        if self._token is None:
            if not self._login:
                raise ApiError(f"la conexión «{self.conn_id}» no tiene usuario para la API de Airflow")
            try:
                response = self._client.post("/auth/token", json={"username": self._login,
                                                                  "password": self._password or ""})
            except httpx.HTTPError as err:
                raise ApiError(f"la API de Airflow en {self.base_url} no respondió: {type(err).__name__}: "
                               f"{err}") from err
            if response.status_code not in (200, 201):
                raise ApiError(f"la API de Airflow no aceptó el usuario «{self._login}» de la conexión "
                               f"«{self.conn_id}» (respuesta {response.status_code})")
            self._token = response.json()["access_token"]
        return self._token

    def health(self) -> dict[str, Any]:
        return self._call("/api/v2/monitor/health", auth=False)

    def get(self, path: str, **params: Any) -> Any:
        return self._call(f"/api/v2{path}", params=params)

    def pages(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paginated list."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.get(path, limit=PAGE, offset=len(items), **params)
            items += page[key]
            if not page[key] or len(items) >= page.get("total_entries", 0):
                return items


def _heartbeat_problems(health: dict[str, Any], zone: zoneinfo.ZoneInfo) -> list[Problema]:
    found = []
    database = (health.get("metadatabase") or {}).get("status")
    if database != "healthy":
        found.append(Problema("airflow:base_de_datos", f"la base de datos de Airflow no responde ({database})"))
    for name, key, what in (("scheduler", "latest_scheduler_heartbeat", "ninguna copia programada se inicia"),
                            ("dag_processor", "latest_dag_processor_heartbeat",
                             "los cambios del inventario y del archivo de DAG no se leen")):
        part = health.get(name) or {}
        if part.get("status") != "healthy":
            beat = _parse_time(part.get(key))
            since = f"desde el {beat.astimezone(zone):%Y-%m-%d %H:%M}" if beat else "(nunca ha dado señales)"
            label = "el scheduler" if name == "scheduler" else "el dag-processor"
            found.append(Problema(f"airflow:{name}", f"{label} de Airflow no da señales de vida {since}: {what}"))
    triggerer = health.get("triggerer") or {}
    if triggerer.get("status") == "unhealthy":
        found.append(Problema("airflow:triggerer", "el triggerer de Airflow no da señales de vida"))
    return found


def check(api: Api | None, auth_problem: str | None, *, dag_ids: list[str], pools_needed: list[str],
          stuck_after: dt.timedelta, failed_since: dt.datetime, now: dt.datetime,
          zone: zoneinfo.ZoneInfo) -> Salud:
    """Ask Airflow's API everything the follow-up needs; an unanswered API is itself a problem."""
    salud = Salud(api.base_url if api else None)
    if api is None:
        salud.problems.append(Problema("airflow:api", f"no se puede consultar la API de Airflow: {auth_problem}"))
        return salud
    try:
        salud.problems += _heartbeat_problems(api.health(), zone)
        salud.answered = True
    except ApiError as err:
        salud.problems.append(Problema("airflow:api", f"{err}. Sin la API no se sabe si Airflow está corriendo; "
                                                      "lo demás se revisó con el registro"))
        return salud
    if auth_problem:
        salud.problems.append(Problema("airflow:api_login", auth_problem))
        return salud
    try:
        _authenticated_checks(api, salud, dag_ids, pools_needed, stuck_after, failed_since, now, zone)
    except ApiError as err:
        salud.problems.append(Problema("airflow:api_login", str(err)))
    return salud


def _authenticated_checks(api: Api, salud: Salud, dag_ids: list[str], pools_needed: list[str],
                          stuck_after: dt.timedelta, failed_since: dt.datetime, now: dt.datetime,
                          zone: zoneinfo.ZoneInfo) -> None:
    for error in api.pages("/importErrors", "import_errors"):
        trace = error.get("stack_trace") or ""
        if "respaldo" in (error.get("filename") or "") or "respaldo" in trace:
            lines = [line for line in trace.strip().splitlines() if line.strip()]
            salud.problems.append(Problema(
                f"airflow:importacion:{error['filename']}",
                f"el archivo de DAG {error['filename']} no carga (error de importación): mientras siga así no se "
                f"respalda nada de él. {' '.join(lines[-12:])[:1500]}"))
    dags = {d["dag_id"]: d for d in api.pages("/dags", "dags", dag_id_prefix_pattern=DAG_PREFIX,
                                              exclude_stale="false")}
    for dag_id in dag_ids:
        dag = dags.get(dag_id)
        if dag is None:
            salud.problems.append(Problema(f"airflow:sin_dag:{dag_id}", f"el DAG {dag_id} no existe en Airflow: "
                                           "no se ejecuta"))
        elif dag.get("is_stale"):
            salud.problems.append(Problema(f"airflow:sin_dag:{dag_id}", f"el DAG {dag_id} ya no está en el archivo "
                                           "de DAG que Airflow lee: no se ejecuta"))
    for dag_id, dag in sorted(dags.items()):
        if dag_id.startswith(DAG_PREFIX) and dag.get("is_paused") and not dag.get("is_stale"):
            salud.problems.append(Problema(f"airflow:pausado:{dag_id}", f"el DAG {dag_id} está pausado: sus turnos "
                                           "no se ejecutan"))
    existing = {p["name"] for p in api.pages("/pools", "pools")}
    absent = set(pools_needed) - existing
    for warning in api.pages("/dagWarnings", "dag_warnings", warning_type="non-existent pool"):
        if warning["dag_id"].startswith(DAG_PREFIX):
            absent |= {name for name in pools_needed if name in (warning.get("message") or "")}
    for name in sorted(absent):
        salud.problems.append(Problema(f"airflow:pool:{name}", f"no existe el pool «{name}» que necesitan copias o "
                                       "simulacros del inventario: sus tareas no se programan (se crea al empezar la "
                                       "próxima ejecución, o ahora con `respaldo pools`)"))
    for ti in api.pages("/dags/~/dagRuns/~/taskInstances", "task_instances", state=["scheduled", "queued"],
                        dag_id_prefix_pattern=DAG_PREFIX):
        if not ti["dag_id"].startswith(DAG_PREFIX):
            continue
        since = _parse_time(ti.get("queued_when") if ti["state"] == "queued" else ti.get("scheduled_when"))
        if since and now - since > stuck_after:
            minutes = int((now - since).total_seconds() // 60)
            salud.problems.append(Problema(
                f"airflow:atascada:{ti['dag_id']}:{ti['dag_run_id']}:{ti['task_id']}",
                f"la tarea {ti['task_id']} de {ti['dag_id']} (ejecución {ti['dag_run_id']}) lleva {minutes} min en "
                f"«{ti['state']}» desde el {since.astimezone(zone):%Y-%m-%d %H:%M} (pool «{ti.get('pool')}»)"))
    for run in api.pages("/dags/~/dagRuns", "dag_runs", state=["queued", "running"]):
        if run["dag_id"].startswith(DAG_PREFIX) and run.get("logical_date"):
            salud.in_progress.setdefault(run["dag_id"], set()).add(_parse_time(run["logical_date"]))
    salud.failed = [ti for ti in api.pages("/dags/~/dagRuns/~/taskInstances", "task_instances", state=["failed"],
                                           dag_id_prefix_pattern=DAG_PREFIX,
                                           end_date_gte=failed_since.isoformat())
                    if ti["dag_id"].startswith(DAG_PREFIX)]


def run_facts(api: Api, dag_id: str, run_id: str) -> dict[str, Any]:
    """The run a task instance belongs to (type, logical date, the form's values)."""
    from urllib.parse import quote

    return api.get(f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")


def xcom(api: Api, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
    """A task's XCom value, or None when it left none."""
    from urllib.parse import quote

    try:
        entry = api.get(f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/xcomEntries/{key}")
    except ApiError:
        return None
    return entry.get("value")
