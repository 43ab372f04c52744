"""The operator of the DAG ``respaldo_simulacro``: one of its four steps (see :mod:`.tareas`)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

STEPS = ("preparar", "elegir", "simulacro", "cierre")


class SimulacroOperator(BaseOperator):
    """Run a step of the restore drills.

    :param step: ``preparar``, ``elegir``, ``simulacro`` or ``cierre``.
    :param settings: the drills' settings (register, alerts, drill servers, scratch folder, DAG id).
    :param targets: ``preparar``: every target id; ``elegir``: its drill server's targets, each
        ``{"target": <inventory entry>, "every_days": N}``.
    :param item: ``simulacro`` (mapped): one of what ``elegir`` returned.
    """

    ui_color = "#e9f5ec"

    def __init__(self, *, step: str, settings: dict[str, Any], targets: list[Any] | None = None,
                 item: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}")
        super().__init__(**kwargs)
        self.step = step
        self.settings = settings
        self.targets = targets or []
        self.item = item

    def execute(self, context: Any) -> Any:
        from respaldo.simulacro import tareas

        if self.step == "simulacro":
            context["objetivo"] = self.item["target"]["id"]  # the mapped task's label (map_index_template)
            return tareas.simulacro(self.settings, self.item, **context)
        if self.step == "elegir":
            return tareas.elegir(self.settings, self.targets, **context)
        if self.step == "preparar":
            return tareas.preparar(self.settings, self.targets, **context)
        return tareas.cierre(self.settings, **context)
