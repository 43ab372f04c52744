"""The sensor that is ``copia`` for manual targets: it waits for the delivered copy, then takes it."""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from respaldo import artifacts, formulario, intentos
from respaldo.entrega import carpeta

log = logging.getLogger("respaldo")


class IntakeSensor(BaseSensorOperator):
    """Wait, without holding a worker, for a manual copy in the target's intake folder; then take it.

    Pokes every ``intake.poke_minutes`` in reschedule mode until the slot's date plus
    ``intake.wait_hours``; then fails naming the folder and what was expected. The deadline is shown
    in the task's rendered fields and in every poke's log line.

    :param target: the target's inventory entry (``mechanism: manual``).
    :param settings: storage root, timezone, register connection and DAG id.
    :param deadline_hint: when the wait ends, in words (templated).
    """

    template_fields = ("deadline_hint",)
    ui_color = "#f6e7c1"

    def __init__(self, *, target: dict[str, Any], settings: dict[str, Any], **kwargs: Any) -> None:
        intake = target["intake"]
        wait = dt.timedelta(hours=intake.get("wait_hours", 12))
        kwargs.setdefault("poke_interval", dt.timedelta(minutes=intake.get("poke_minutes", 5)))
        # Our own deadline (slot + wait) decides; this timeout is only a backstop well beyond it.
        kwargs.setdefault("timeout", wait + dt.timedelta(days=1))
        super().__init__(mode="reschedule", **kwargs)
        self.target = target
        self.settings = settings
        self.deadline_hint = f"fecha del turno + {intake.get('wait_hours', 12)} h ({settings['timezone']})"

    def _deadline(self, context: Any) -> dt.datetime:
        return carpeta.slot_of(context) + dt.timedelta(hours=self.target["intake"].get("wait_hours", 12))

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Show the run's real deadline in the UI's rendered fields."""
        super().render_template_fields(context, jinja_env)
        zone = zoneinfo.ZoneInfo(self.settings["timezone"])
        self.deadline_hint = f"hasta {self._deadline(context).astimezone(zone):%Y-%m-%d %H:%M} ({zone.key})"

    def execute(self, context: Any) -> Any:
        intentos.mark(context)
        return super().execute(context)

    def poke(self, context: Any) -> bool | PokeReturnValue:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        model = carpeta.ManualTarget.model_validate(self.target)
        if not formulario.selected(model.id, context):
            raise AirflowSkipException(f"«{model.id}» no está entre los objetivos elegidos para esta ejecución")
        zone = zoneinfo.ZoneInfo(self.settings["timezone"])
        slot = carpeta.slot_of(context)
        deadline = self._deadline(context)
        run_id = context["run_id"]
        staging = artifacts.staging_dir(self.settings["root"], model.frequency, model.id, run_id)
        artifacts.sweep_leftovers(self.settings["root"], model.frequency, model.id, staging, context,
                                  self.settings["dag_id"], log)
        started = dt.datetime.now(dt.UTC)
        taken = carpeta.take(model, run_id, slot, self.settings["timezone"], staging, log)
        expected = model.intake.expected_name(slot.astimezone(zone))
        where = model.intake.path if not model.intake.conn_id else f"{model.intake.conn_id}:{model.intake.path}"
        if taken is None:
            now = dt.datetime.now(dt.UTC)
            if now >= deadline:
                raise AirflowFailException(
                    f"No llegó la copia manual de «{model.id}»: se esperaba un archivo «{expected}» en la carpeta "
                    f"de entrega {where} para el turno del {slot.astimezone(zone):%Y-%m-%d %H:%M}, hasta el "
                    f"{deadline.astimezone(zone):%Y-%m-%d %H:%M} ({self.settings['timezone']}). Déjelo allí y "
                    "vuelva a ejecutar la tarea."
                )
            log.info("Esperando «%s» en %s hasta el %s (%s)", expected, where,
                     deadline.astimezone(zone).strftime("%Y-%m-%d %H:%M"), self.settings["timezone"])
            return False
        taken.update(started_at=started.isoformat(), copied_at=dt.datetime.now(dt.UTC).isoformat())
        return PokeReturnValue(is_done=True, xcom_value=taken)
