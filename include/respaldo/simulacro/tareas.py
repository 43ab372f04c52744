"""The tasks of the DAG ``respaldo_simulacro``.

``preparar`` (the run's setup: the form checked, what killed drills left swept) -> per drill server
``<grupo>.elegir`` (the targets due, most overdue first) -> ``<grupo>.simulacro`` (one mapped task per
target, in that order, in the server's pool) -> ``cierre`` (the run's teardown: this run's leftovers
swept, unsent alerts sent). Each gets small JSON-friendly values: settings, target entries, ids.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from respaldo import formulario
from respaldo.errors import RespaldoError
from respaldo.simulacro.ejercicio import Ejecucion, due, standing, sweep

log = logging.getLogger("respaldo")


def _run(context: dict[str, Any], settings: dict[str, Any]) -> Ejecucion:
    ti = context.get("ti")
    map_index = getattr(ti, "map_index", None)
    return Ejecucion(settings["dag_id"], context["run_id"], getattr(ti, "task_id", ""),
                     getattr(ti, "try_number", None), -1 if map_index is None else map_index)


def preparar(settings: dict[str, Any], targets: list[str], **context: Any) -> dict[str, Any]:
    """Check the run form once; drop what drills that never finished left, and settle their rows."""
    from airflow.sdk.exceptions import AirflowFailException

    wrong = sorted(set(formulario.chosen(context)) - set(targets))
    if wrong:
        raise AirflowFailException(f"El formulario pide simulacros de objetivo(s) que no existen: {', '.join(wrong)}. "
                                   f"No se restauró nada. Los objetivos son: {', '.join(sorted(targets))}.")
    problems = sweep(settings, _run(context, settings), this_run=False)
    for problem in problems:
        log.error("%s", problem)
    return {"problemas": problems}


def elegir(settings: dict[str, Any], targets: list[dict[str, Any]], **context: Any) -> list[dict[str, Any]]:
    """The targets of this drill server due for a drill, most overdue first (never drilled before all)."""
    entries = {entry["target"]["id"]: entry for entry in targets}
    chosen = formulario.chosen(context)
    turnos = standing(settings["register_conn_id"], {t: e["every_days"] for t, e in entries.items()})
    pending = due(turnos, dt.datetime.now(dt.UTC), [t for t in chosen if t in entries] if chosen else None)
    if chosen and not pending:
        log.info("El formulario no pide ningún objetivo de este servidor.")
    without = [t.target for t in turnos if t.newest_good_id is None]
    if without:
        log.warning("Sin copia buena que restaurar (no entran al simulacro): %s", ", ".join(without))
    for place, item in enumerate(pending, 1):
        log.info("%d. «%s»: %s", place, item.target, item.motivo)
    if not pending:
        log.info("A ningún objetivo de este servidor le toca simulacro en esta ejecución.")
    return [{"target": entries[item.target]["target"], "motivo": item.motivo} for item in pending]


def simulacro(settings: dict[str, Any], item: dict[str, Any], **context: Any) -> dict[str, Any]:
    """One drill; the task fails when the drill does (its email and its row are already out)."""
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from respaldo.inventory import target_from
    from respaldo.simulacro.ejercicio import drill

    model = target_from(item["target"])
    log.info("Simulacro de «%s»: %s", model.id, item.get("motivo", ""))
    run = _run(context, settings)
    try:
        outcome = drill(model, settings, run)
    except RespaldoError as err:  # the register itself: the drill could not even be recorded
        _could_not_record(model.id, settings, run, err)
        raise

    if outcome["veredicto"] == "fallido":
        raise AirflowFailException(f"Simulacro FALLIDO de «{model.id}»: {outcome['motivo']}")
    if outcome.get("restos"):
        raise AirflowException("El simulacro aprobó, pero no se pudo borrar lo restaurado: "
                               + "; ".join(outcome["restos"]))
    return outcome


def _could_not_record(target_id: str, settings: dict[str, Any], run: Ejecucion, err: Exception) -> None:
    """The one email of a drill that could not use the register (sent, though it cannot be recorded)."""
    import html

    from respaldo import avisos
    from respaldo.register.notificacion import Alert
    from respaldo.simulacro.ejercicio import log_url

    body = (f"<p>El simulacro de restauración de <b>{html.escape(target_id)}</b> no pudo hacerse ni quedar "
            f"registrado: {html.escape(str(err))}</p><p>Log: {html.escape(log_url(run))}</p>")
    alert = Alert(key=f"simulacro:{target_id}:{run.run_id}:{run.try_number or 0}", kind="simulacro",
                  recipients=list(settings["alert_emails"]), target=target_id, run_id=run.run_id, body=body,
                  subject=f"[respaldo] El simulacro de restauración de «{target_id}» no pudo hacerse ({run.dag_id})")
    avisos.deliver(alert, avisos.Channel.of({**settings, "register_conn_id": None}))


def cierre(settings: dict[str, Any], **context: Any) -> dict[str, Any]:
    """After every drill: what a drill killed in this run left is dropped, its row settled; unsent alerts sent."""
    from airflow.sdk.exceptions import AirflowException

    from respaldo.avisos import Channel, resend_problems

    run = _run(context, settings)
    problems = sweep(settings, run, this_run=True)
    problems += resend_problems(Channel.of(settings), run_id=run.run_id)
    if problems:
        raise AirflowException("El cierre de los simulacros no pudo completar: " + "; ".join(problems))
    return {"problemas": []}


#: What the failure of the drills' own tasks tells (see :class:`respaldo.fallas.RunCallback`).
DRILL_TEXTS = {
    "preparar": ("[respaldo] Los simulacros de {run_id} ({dag_id}) no empezaron",
                 "no empezó: no se hizo ningún simulacro en esta ejecución"),
    "cierre": ("[respaldo] Los simulacros de {run_id} ({dag_id}) terminaron con el cierre incompleto",
               "terminó, pero su cierre no pudo borrar todos los restos o enviar todos los avisos"),
}
