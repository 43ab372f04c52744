"""The run form («Trigger» in the Airflow UI): which targets a run covers, who answers for it, notes.

The form's «objetivos» are checked once per run, by the task ``preparar``, before any target starts;
each target's first task then only asks :func:`selected`.
"""

from __future__ import annotations

from typing import Any


def params(context: dict[str, Any]) -> dict[str, Any]:
    """The run's form values (empty for a scheduled run)."""
    return dict(context.get("params") or {})


def chosen(context: dict[str, Any]) -> list[str]:
    """The target ids picked in the form; empty means every target of the DAG."""
    return [str(item).strip() for item in params(context).get("objetivos") or [] if str(item).strip()]


def targets_of(dag: Any) -> list[str]:
    """The ids of a DAG's targets: its task groups (``preparar`` and ``cierre`` are plain tasks)."""
    from airflow.sdk import TaskGroup

    return sorted(name for name, child in dag.task_group.children.items() if isinstance(child, TaskGroup))


def unknown(context: dict[str, Any]) -> list[str]:
    """Ids picked in the form that are no target of the run's DAG (a typo must not skip every backup)."""
    dag = context.get("dag")
    if dag is None:
        return []
    return sorted(set(chosen(context)) - set(targets_of(dag)))


def selected(target_id: str, context: dict[str, Any]) -> bool:
    """Whether this run covers the target: the form's «objetivos» list, empty meaning all.

    The list itself was checked by ``preparar`` before any target started.
    """
    picked = chosen(context)
    return not picked or target_id in picked


def text(context: dict[str, Any], name: str) -> str | None:
    """A free-text field of the form (``responsable``, ``observaciones``), None when left empty."""
    value = params(context).get(name)
    return str(value).strip() or None if value is not None else None
