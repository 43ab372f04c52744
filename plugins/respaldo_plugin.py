"""respaldo's Airflow plugin: its timetable, the scheduler listener that keeps its pools in place, and its
pages in the Airflow UI (the FT-GTI-004 register under ``/respaldo``, with entries in the navigation).

The pages' FastAPI app (``respaldo.ui.app``) is built only in the api-server, the one process that serves
it, the way Airflow's own edge3 provider does: the scheduler, the DAG processor and every task load
this plugin too, and need neither FastAPI nor the templates.
"""

import sys
from urllib.parse import urlparse

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from respaldo.pools import PoolGuard
from respaldo.precarga import forks_task_processes, preload
from respaldo.timetables import EveryNDaysTimetable

PREFIX = "/respaldo"
RUNNING_ON_APISERVER = (len(sys.argv) > 1 and sys.argv[1] == "api-server") or (
    len(sys.argv) > 2 and sys.argv[2].endswith("airflow/api_fastapi/main.py")
)


if forks_task_processes(sys.argv, conf.get("core", "executor", fallback="")):
    # The scheduler loads this plugin before it forks the LocalExecutor's workers: every task process they
    # fork inherits what is imported here instead of importing it again (respaldo.precarga says how much).
    preload()


def _ui_path(path: str) -> str:
    """``path`` under the api-server's own base path (``[api] base_url`` may put Airflow under a sub-path)."""
    base = conf.get("api", "base_url", fallback="/")
    base_path = urlparse(base).path if base.startswith(("http://", "https://")) else base
    return base_path.rstrip("/") + path


def _view(name: str, page: str, **extra) -> dict:
    """A navigation entry that shows one of the pages inside the Airflow UI (an iframe at /plugin/<url_route>)."""
    return {"name": name, "href": _ui_path(f"{PREFIX}/{page}"), "url_route": f"respaldo-{page}",
            "destination": "nav", "icon": _ui_path(f"{PREFIX}/icono.svg"), **extra}


class RespaldoPlugin(AirflowPlugin):
    name = "respaldo"
    timetables = [EveryNDaysTimetable]
    listeners = [PoolGuard()]
    external_views = [
        _view("Registro FT-GTI-004", "registro", nav_top_level=True),
        _view("Seguimiento", "seguimiento", category="Respaldo"),
        _view("Simulacros", "simulacros", category="Respaldo"),
    ]
    if RUNNING_ON_APISERVER:
        from respaldo.ui.app import create_app

        fastapi_apps = [{"app": create_app(), "url_prefix": PREFIX, "name": "respaldo: registro FT-GTI-004"}]
