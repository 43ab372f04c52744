"""Airflow pools of respaldo's copies: one per source server, so copies against it do not pile up.

Airflow never schedules a task whose pool does not exist (it only warns in the scheduler's log): the
task stays ``scheduled`` for ever, its run never ends, and with one active run per DAG every later
run of the class queues behind it, with no row and no email. So a missing pool is never left to the
operator's memory: the :class:`PoolGuard` listener, registered by respaldo's plugin in the
scheduler, creates the pools a ``respaldo_*`` run needs when the run starts (one slot each, as
``respaldo pools`` would), and says so in the scheduler's log. ``respaldo check`` reports them too.

Runs only where Airflow's metadata database is reachable (the scheduler, the CLI), never in a task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger("respaldo")

DAG_PREFIX = "respaldo_"
DESCRIPTION = "respaldo: copias simultáneas contra un mismo servidor"


def needed_by(dag: Any) -> set[str]:
    """The pools a DAG's tasks run in (Airflow's own default pool left out: it always exists)."""
    from airflow.models.pool import Pool

    return {task.pool for task in dag.tasks if task.pool and task.pool != Pool.DEFAULT_POOL_NAME}


def missing(names: Iterable[str]) -> list[str]:
    """Which of ``names`` are no pool of this Airflow."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session
    from sqlalchemy import select

    wanted = set(names)
    with create_session() as session:
        existing = set(session.scalars(select(Pool.pool).where(Pool.pool.in_(wanted))))
    return sorted(wanted - existing)


def ensure(names: Iterable[str], slots: int = 1) -> list[str]:
    """Create the pools of ``names`` that do not exist, with ``slots`` each; return the ones created."""
    from airflow.models.pool import Pool

    created = []
    for name in missing(names):
        Pool.create_or_update_pool(name, slots=slots, description=DESCRIPTION, include_deferred=False)
        created.append(name)
    return created


def ensure_outside_session(names: Iterable[str]) -> list[str]:
    """:func:`ensure` on a connection of its own, for code running inside the scheduler's loop.

    The scheduler forbids commits on its session while it holds its locks ("UNEXPECTED COMMIT"), and a
    failed commit there would undo the run's own state change; pools are created in a transaction of
    their own instead, which the scheduler sees from its next loop on.
    """
    from airflow import settings
    from airflow.models.pool import Pool
    from sqlalchemy import insert, select
    from sqlalchemy.exc import IntegrityError

    table = Pool.__table__
    created = []
    for name in sorted(set(names)):
        try:
            with settings.engine.begin() as conn:
                if conn.scalar(select(table.c.pool).where(table.c.pool == name)) is None:
                    conn.execute(insert(table).values(pool=name, slots=1, description=DESCRIPTION,
                                                      include_deferred=False))
                    created.append(name)
        except IntegrityError:  # another scheduler made it first
            continue
    return created


class PoolGuard:
    """Scheduler listener: a ``respaldo_*`` run that starts gets the pools its tasks need. Never raises."""

    @hookimpl
    def on_dag_run_running(self, dag_run: Any, msg: str) -> None:
        if not dag_run.dag_id.startswith(DAG_PREFIX) or getattr(dag_run, "dag", None) is None:
            return
        try:
            created = ensure_outside_session(needed_by(dag_run.dag))
        except Exception:
            log.exception("respaldo: no se pudieron revisar o crear los pools de %s", dag_run.dag_id)
            return
        if created:
            log.warning("respaldo: la ejecución %s de %s necesitaba pools que no existían; se crearon con 1 cupo: %s. "
                        "Ajuste los cupos con `respaldo pools --slots N` si hace falta.", dag_run.run_id,
                        dag_run.dag_id, ", ".join(created))
