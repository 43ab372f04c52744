"""Preloading: the code every task process imports, imported once by the process that forks them.

Each step of each target runs in its own task process, which parses the DAG file and runs one step. Those
processes are forked: with the LocalExecutor, from the scheduler's worker processes, themselves forked from
the scheduler when it starts. What the scheduler has imported by then, every task process inherits and does
not import again. Measured with 40 targets (bench section 17, ``py-spy`` over the scheduler and every
process it forks): importing respaldo's modules (the inventory's pydantic models above all) was 85 % of a
task process's parse of the DAG file, and importing the postgres provider's hook 65 % of ``copia`` and
``registrar``'s own time.

Only code is preloaded. The inventory is read again by every parse, so an edited inventory applies to the
next task at once; new respaldo code, like the plugin itself, needs the scheduler (and the workers)
restarted, which any upgrade does.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import time

log = logging.getLogger(__name__)

#: What the steps import: respaldo's DAG factory (its models, steps and sources) and the providers' hooks the
#: sources and the register connect through. boto3 (the S3 medium only, 0.25 s and 8 MiB) is left to the
#: targets that use it.
MODULES = (
    "respaldo.dag_factory",
    "airflow.providers.postgres.hooks.postgres",
    "airflow.providers.mysql.hooks.mysql",
    "airflow.providers.ssh.hooks.ssh",
    "airflow.providers.sftp.hooks.sftp",
    "airflow.providers.smtp.notifications.smtp",
)


#: How the log line of :func:`preload` begins (in the scheduler's log, or a Celery worker's).
LOG_LINE = "respaldo: código de las tareas precargado:"


def preload(modules: tuple[str, ...] = MODULES) -> list[str]:
    """Import ``modules``; return those imported. One that fails is logged and left to the task that needs it."""
    began = time.monotonic()
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - a missing provider must not stop the scheduler
            log.warning("respaldo: no se precargó %s (%s); cada tarea lo importará por su cuenta", name, err)
        else:
            loaded.append(name)
    log.info("%s %d módulos en %.2f s; los procesos de tarea que este proceso cree los heredan: %s", LOG_LINE,
             len(loaded), time.monotonic() - began, ", ".join(loaded))
    return loaded


def forks_task_processes(argv: list[str], executor: str, start_method: str | None = None,
                         child: bool | None = None) -> bool:
    """Whether this process forks the processes that fork task processes: a scheduler running the LocalExecutor.

    :param argv: how the process was started (``airflow scheduler``).
    :param executor: ``[core] executor``: a name, a class path, or a list of them when several are set.
    :param start_method: how ``multiprocessing`` starts the LocalExecutor's workers (default: read now, the
        method Airflow set from ``[core] mp_start_method`` or the platform's default). Only ``fork`` (Linux's
        default before Python 3.14; respaldo's image runs 3.11) makes them copies of the scheduler;
        ``forkserver`` and ``spawn`` start them from a fresh interpreter, which inherits nothing.
    :param child: whether this process is itself a ``multiprocessing`` child (default: read now): a
        LocalExecutor worker, or a task process it forked, which load the plugin again when not forked from
        the scheduler.
    """
    if len(argv) < 2 or argv[1] != "scheduler" or "LocalExecutor" not in executor:
        return False
    if start_method is None:  # without fixing it: allow_none reads, the first of the list is the default
        start_method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    if child is None:
        child = multiprocessing.parent_process() is not None
    return start_method == "fork" and not child
