"""The operator that runs one step of the procedure for one target."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from respaldo import tasks


class RespaldoStepOperator(BaseOperator):
    """Run one of ``copia``, ``verificar_fecha``, ``comprimir``, ``registrar`` for one target.

    Each step receives the previous step's result (its XCom) and returns its own: paths, sizes and
    dates, never data or credentials. The task id is the step's name inside the target's TaskGroup.

    :param step: the step, one of :data:`respaldo.tasks.STEPS`.
    :param target: the target's inventory entry, as JSON-friendly values.
    :param settings: storage root, timezone, register connection id and DAG id.
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
        function = getattr(tasks, self.step)
        if self.step == tasks.STEPS[0]:
            return function(self.target, self.settings, **context)
        previous = tasks.STEPS[tasks.STEPS.index(self.step) - 1]
        upstream = context["ti"].xcom_pull(task_ids=f"{self.target['id']}.{previous}")
        return function(self.target, self.settings, upstream, **context)
