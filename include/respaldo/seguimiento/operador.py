"""The task of the DAG ``respaldo_seguimiento``: the same check as ``respaldo seguimiento``."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseOperator

log = logging.getLogger("respaldo")


class _FollowupOperator(BaseOperator):
    """A task of ``respaldo_seguimiento``: it reads the inventory the DAG file was built from.

    :param inventory_path: the inventory the DAG file was built from.
    """

    ui_color = "#fdf3e1"

    def __init__(self, *, inventory_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inventory_path = inventory_path


class SeguimientoOperator(_FollowupOperator):
    """Run the follow-up check (:func:`respaldo.seguimiento.ejecutar`) and log its report.

    The task fails only when the check itself could not run (register unreachable, inventory broken):
    what needs attention in the backups is mailed and logged, and the task stays green, so a red
    ``respaldo_seguimiento`` always means the follow-up is not working.
    """

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowException

        from respaldo.seguimiento import NO_CORRIO, ejecutar

        result = ejecutar(self.inventory_path)
        if result.code == NO_CORRIO or result.informe is None:
            log.error("El seguimiento no pudo ejecutarse: %s", result.error)
            if result.mailed:
                log.info("%s", result.mailed)
            raise AirflowException(f"El seguimiento no pudo ejecutarse: {result.error}")
        log.info("%s", result.informe.text())
        counts: dict[str, int] = {}
        for state in result.informe.states:
            counts[state.estado] = counts.get(state.estado, 0) + 1
        return {"codigo": result.code, "estados": counts, "problemas_airflow": len(result.informe.salud.problems),
                "faltantes_nuevos": result.informe.new_missing}


class RelecturaOperator(_FollowupOperator):
    """Re-read this run's share of stored artifacts to their end, record each outcome, mail the damaged ones.

    Like ``revisar``, the task fails only when it could not run (inventory or register unusable): a
    damaged copy is mailed and logged, and the task stays green.
    """

    def execute(self, context: Any) -> dict[str, Any]:
        from respaldo.inventory import load_inventory
        from respaldo.seguimiento import relectura

        inventory = load_inventory(self.inventory_path)
        lecturas = relectura.share(inventory)
        damaged = [lectura for lectura in lecturas if not lectura.intact]
        for line in relectura.mail_damaged(damaged, inventory):
            log.info("Correo: %s", line)
        return {"releidas": len(lecturas), "danadas": [lectura.row_id for lectura in damaged]}
