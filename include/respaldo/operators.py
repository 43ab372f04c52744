"""The operators of respaldo's DAGs: one step for one target, and the run's opening and closing tasks."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from respaldo import intentos, tasks


class RespaldoStepOperator(BaseOperator):
    """Run one of ``copia``, ``verificar_fecha``, ``comprimir``, ``registrar`` for one target.

    Each step receives the previous step's result (its XCom) and returns its own: paths, sizes and
    dates, never data or credentials. The task id is the step's name inside the target's TaskGroup.

    :param step: the step, one of :data:`respaldo.tasks.STEPS`.
    :param target: the target's inventory entry, as JSON-friendly values.
    :param settings: storage root, timezone, register and alert settings and DAG id.
    """

    ui_color = "#e8f1fb"

    def __init__(self, *, step: str, target: dict[str, Any], settings: dict[str, Any], **kwargs: Any) -> None:
        if step not in tasks.STEPS:
            raise ValueError(f"unknown step {step!r}")
        super().__init__(task_id=step, **kwargs)
        self.step = step
        self.target = target
        self.settings = settings

    def execute(self, context: Any) -> Any:
        intentos.mark(context)
        function = getattr(tasks, self.step)
        if self.step == tasks.STEPS[0]:
            return function(self.target, self.settings, **context)
        previous = tasks.STEPS[tasks.STEPS.index(self.step) - 1]
        upstream = context["ti"].xcom_pull(task_ids=f"{self.target['id']}.{previous}")
        return function(self.target, self.settings, upstream, **context)


class RespaldoRunOperator(BaseOperator):
    """The run's own tasks: ``preparar`` (before any target), ``cierre`` and ``retencion`` (after all of them).

    :param step: ``preparar``, ``cierre`` or ``retencion``.
    :param settings: storage root, timezone, register and alert settings and DAG id.
    :param retention: ``retencion`` only: the frequency class's ``retention`` block (None: the class has none).
    :param queue: ``retencion`` only: it prunes the copies of the targets of this Celery queue, on a worker of
        that queue (where, with one worker per queue, their artifacts are). Its task id is ``retencion`` when
        one queue has targets with retention, ``retencion_en_<queue>`` each when several do.
    """

    ui_color = "#eef3e2"
    STEPS = ("preparar", "cierre", "retencion")

    def __init__(self, *, step: str, settings: dict[str, Any], retention: dict[str, Any] | None = None,
                 task_id: str | None = None, **kwargs: Any) -> None:
        if step not in self.STEPS:
            raise ValueError(f"unknown step {step!r}")
        super().__init__(task_id=task_id or step, **kwargs)
        self.step = step
        self.settings = settings
        self.retention = retention

    def execute(self, context: Any) -> Any:
        if self.step == "retencion":
            return tasks.retencion(self.settings, self.retention, queue=self.queue, **context)
        return getattr(tasks, self.step)(self.settings, **context)
