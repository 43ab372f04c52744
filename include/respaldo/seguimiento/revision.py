"""The follow-up check: one implementation, run by ``respaldo seguimiento`` and by ``respaldo_seguimiento``.

1. Airflow's health over its REST API (nothing of it is needed for the rest).
2. Task instances that ended failed with no row get their row and their one alert (:func:`fallas.handle`).
3. Under the follow-up's lock, in one transaction: a ``missing`` row for every slot past its grace
   without a successful copy (never for a slot whose run is still queued or running), superseded
   missing rows pointed at the success that covers them, each target's state, and what changed.
4. The emails: changes of state, Airflow's new problems, the daily digest; unsent alerts retried.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import zoneinfo
from dataclasses import dataclass
from typing import Any

from respaldo import avisos, fallas
from respaldo.errors import InventoryError, RegisterError, RespaldoError
from respaldo.inventory import Alerts, Inventory, Register, load_inventory, read_section
from respaldo.register import esquema
from respaldo.seguimiento import correo, registro, salud, turnos
from respaldo.seguimiento.estados import Reglas, evaluar
from respaldo.seguimiento.informe import NO_CORRIO, Informe

log = logging.getLogger("respaldo")

DAG_ID = "respaldo_seguimiento"
#: The drills' DAG, built beside the backup DAGs: a paused or missing one is reported like theirs.
DRILL_DAG_ID = "respaldo_simulacro"
#: Where to send "the check could not run" when the inventory's own ``alerts`` cannot be read.
FALLBACK_ENV = "RESPALDO_ALERTAS"
FALLBACK_SMTP = "smtp_default"
#: The reason of a failed row written by the follow-up: it knows the step failed, not why.
NO_ROW_REASON = ("la tarea terminó fallida y no dejó fila en el registro FT-GTI-004: ni su aviso de falla ni el "
                 "cierre de la ejecución pudieron registrarla (el registro no respondía, o el proceso se detuvo de "
                 "golpe). El motivo exacto está en el log de la tarea; la registró el seguimiento")


def _channel(inventory: Inventory) -> avisos.Channel:
    return avisos.Channel(inventory.alerts.smtp_conn_id, list(inventory.alerts.email), inventory.alerts.from_email,
                          inventory.register.conn_id)


def _time(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _handle_failed(inventory: Inventory, api: salud.Api | None, health: salud.Salud) -> list[str]:
    """Give every failed step without a row its row and its alert (the callback's key: mailed once)."""
    if api is None or not health.failed:
        return []
    targets = {t.id: t for t in inventory.targets}
    candidates = []
    for ti in health.failed:
        target_id, _, step = ti["task_id"].rpartition(".")
        target = targets.get(target_id)
        if target is not None and step in fallas.STEPS and ti["dag_id"] == f"respaldo_{target.frequency}":
            candidates.append((target, step, ti))
    if not candidates:
        return []
    with esquema.connect(inventory.register.conn_id) as conn:
        rows = registro.rows_of(conn, [(t.id, ti["dag_run_id"]) for t, _, ti in candidates])
    handled = []
    for target, step, ti in candidates:
        row = rows.get((target.id, ti["dag_run_id"]))
        if row is not None and (row["status"] == "success" or (row["try_number"] or 0) >= ti["try_number"]):
            continue
        try:
            run = salud.run_facts(api, ti["dag_id"], ti["dag_run_id"])
            known: dict[str, Any] = {}
            for earlier in fallas.STEPS[: fallas.STEPS.index(step)]:
                value = salud.xcom(api, ti["dag_id"], ti["dag_run_id"], f"{target.id}.{earlier}")
                if isinstance(value, dict):
                    known.update(value)
        except salud.ApiError as err:
            health.problems.append(salud.Problema(f"airflow:falla_sin_fila:{target.id}:{ti['dag_run_id']}",
                                                  f"{ti['task_id']} de {ti['dag_run_id']} terminó fallida sin fila, y "
                                                  f"no se pudo leer su ejecución: {err}"))
            continue
        conf = run.get("conf") or {}
        facts = fallas.RunFacts(
            dag_id=ti["dag_id"], run_id=ti["dag_run_id"], run_type=run.get("run_type"),
            logical_date=_time(run.get("logical_date")),
            responsible=str(conf.get("responsable") or "").strip() or None,
            notes=str(conf.get("observaciones") or "").strip() or None)
        failure = fallas.Failure(step, ti["try_number"], NO_ROW_REASON, _time(ti.get("start_date")))
        outcome = fallas.handle(target.model_copy(update={"queue": inventory.queue_of(target)}),
                                inventory.task_settings(ti["dag_id"]), facts, failure, known, target.description)
        if outcome.recorded is None:
            raise RegisterError(outcome.record_error or "no se pudo registrar la falla")
        sent = outcome.delivery.describe() if outcome.delivery else "sin aviso"
        handled.append(f"{target.id}, paso «{step}» de {ti['dag_run_id']} (intento {ti['try_number']}): fila "
                       f"{outcome.recorded.id}; {sent}")
    return handled


def _objetivos(inventory: Inventory, starts: dict[str, dt.datetime]) -> dict[str, list[registro.Objetivo]]:
    by_class: dict[str, list[registro.Objetivo]] = {}
    for target in sorted(inventory.targets, key=lambda t: t.id):
        if target.id in starts:
            by_class.setdefault(target.frequency, []).append(
                registro.Objetivo(target.id, target.kind, target.mechanism, target.responsible, starts[target.id]))
    return by_class


def revisar(inventory: Inventory, *, now: dt.datetime | None = None) -> Informe:
    """Run the whole check; raises :class:`RegisterError` when the register cannot be used."""
    now = now or dt.datetime.now(dt.UTC)
    zone = zoneinfo.ZoneInfo(inventory.timezone)
    followup = inventory.followup
    window = dt.timedelta(days=followup.missed_window_days)
    classes = turnos.clases(inventory, since=followup.since)
    api, auth_problem = salud.Api.of(followup.api_conn_id)
    try:
        health = salud.check(api, auth_problem, dag_ids=[*(c.dag_id for c in classes.values()), DAG_ID, DRILL_DAG_ID],
                             pools_needed=inventory.pools(), stuck_after=dt.timedelta(minutes=followup.stuck_minutes),
                             failed_since=now - window, now=now, zone=zone)
        handled = _handle_failed(inventory, api, health)
    finally:
        if api is not None:
            api.close()

    ids = {t.id: t.frequency for t in inventory.targets}
    since = (dt.datetime.combine(followup.since, dt.time(), zone).astimezone(dt.UTC) if followup.since else None)
    with esquema.connect(inventory.register.conn_id) as conn:
        registro.lock(conn)
        known = registro.known_states(conn, ids)
        first = registro.first_rows(conn, list(ids))
        starts = {t: since for t in ids} if since else dict(first)
        first_seen = {t: min(x for x in (first.get(t), (known.get(t) or {}).get("first_seen"), now) if x)
                      for t in ids}
        new_missing = 0
        for name, clase in classes.items():
            targets = _objetivos(inventory, starts).get(name, [])
            running = health.in_progress.get(clase.dag_id, set())
            horizon = now - clase.grace
            watermark = registro.settled(conn, clase)
            seen = [t for t in targets if t.id in known]
            new = [t for t in targets if t.id not in known]
            settled_until = horizon
            for group, lower in ((seen, watermark), (new, None)):
                if not group:
                    continue
                earliest = min(t.start for t in group)
                begin = max(earliest, lower + dt.timedelta(microseconds=1)) if lower else earliest
                slots = clase.slots(begin, horizon)
                pending = [s for s in slots if s in running]
                if pending:
                    settled_until = min(settled_until, min(pending) - dt.timedelta(microseconds=1))
                written = registro.write_missing(conn, clase, group, [s for s in slots if s not in running], zone)
                new_missing += len(written)
            if targets:
                registro.settle(conn, clase, max(settled_until, watermark) if watermark else settled_until)
        superseded = registro.supersede(conn)
        facts = registro.facts(conn, ids, first_seen, now - window, now)
        states = [evaluar(facts[t], _rules(classes[ids[t]], followup, window), now, zone) for t in sorted(ids)]
        changed = registro.record_states(conn, states, first_seen, known)
        new_problems = registro.record_airflow_problems(conn, {p.key: p.text for p in health.problems},
                                                        health.answered)
        conn.commit()

    informe = Informe(inventory.organization, inventory.timezone, now, states, health, handled, new_missing,
                      len(superseded))
    channel = _channel(inventory)
    recipients = list(inventory.alerts.email)
    outgoing = []
    if changed:
        outgoing.append(correo.changes(changed, recipients, zone, inventory.organization))
    if new_problems:
        outgoing.append(correo.airflow_problems(new_problems, recipients, now, zone))
    digest_hour, digest_minute = (int(part) for part in followup.digest_at.split(":"))
    if now.astimezone(zone).time() >= dt.time(digest_hour, digest_minute):
        outgoing.append(correo.digest(informe, recipients))
    try:  # first the alerts earlier checks could not send, so this check's own are not sent twice
        for alert, delivery in avisos.resend_unsent(channel):
            informe.mailed.append(f"reenvío de «{alert.subject}»: {delivery.describe()}")
    except RespaldoError as err:
        informe.mailed.append(f"no se pudieron revisar los avisos pendientes: {err}")
    for alert in outgoing:
        delivery = avisos.deliver(alert, channel)
        if not delivery.duplicate:
            informe.mailed.append(f"«{alert.subject}»: {delivery.describe()}")
    return informe


def _rules(clase: turnos.Clase, followup: Any, window: dt.timedelta) -> Reglas:
    return Reglas(max_age=clase.max_age, size_drop_percent=followup.size_drop_percent, missed_window=window)


@dataclass
class Resultado:
    """A check's outcome: the report, or why there is none; and the exit code."""

    code: int
    informe: Informe | None = None
    error: str | None = None
    mailed: str | None = None


def _fallback_channel(path: str | None) -> tuple[avisos.Channel | None, str]:
    """Whom to tell when the inventory is unusable: its ``alerts`` if readable, else ``$RESPALDO_ALERTAS``."""
    alerts = read_section(path, "alerts", Alerts)
    register = read_section(path, "register", Register)
    register_conn = register.conn_id if register else None
    if alerts is not None:
        return (avisos.Channel(alerts.smtp_conn_id, list(alerts.email), alerts.from_email, register_conn),
                "la sección «alerts» del inventario")
    addresses = [a.strip() for a in os.environ.get(FALLBACK_ENV, "").split(",") if a.strip()]
    if addresses:
        return avisos.Channel(FALLBACK_SMTP, addresses, None, register_conn), f"${FALLBACK_ENV}"
    return None, ""


def ejecutar(path: str | None = None, *, now: dt.datetime | None = None) -> Resultado:
    """Load the inventory and run the check; whatever stops it is said plainly and mailed if mail works."""
    import hashlib

    now = now or dt.datetime.now(dt.UTC)
    try:
        inventory = load_inventory(path)
    except InventoryError as err:
        channel, source = _fallback_channel(path)
        reason = (f"{err}\n\nMientras el inventario tenga errores, Airflow no carga los DAG de respaldo: no se "
                  "respalda nada.")
        mailed = None
        if channel is None:
            mailed = (f"no se pudo avisar por correo: ni la sección «alerts» del inventario se puede leer ni "
                      f"${FALLBACK_ENV} tiene direcciones")
        else:
            zone = zoneinfo.ZoneInfo("America/Bogota")
            day = now.astimezone(zone).date().isoformat()
            key = f"inventario:{day}:{hashlib.sha1(str(err).encode()).hexdigest()[:16]}"
            delivery = avisos.deliver(correo.could_not_run(reason, channel.recipients, now, zone, key), channel)
            mailed = f"aviso a {', '.join(channel.recipients)} ({source}): {delivery.describe()}"
        return Resultado(NO_CORRIO, error=str(err), mailed=mailed)
    try:
        informe = revisar(inventory, now=now)
    except RegisterError as err:
        zone = zoneinfo.ZoneInfo(inventory.timezone)
        reason = f"{err}\n\nSin el registro no se sabe qué copias se hicieron ni se pueden registrar las que faltan."
        # The register is what records alerts: this one goes unrecorded (and so once per hour at most).
        channel = avisos.Channel(inventory.alerts.smtp_conn_id, list(inventory.alerts.email),
                                 inventory.alerts.from_email, None)
        key = f"seguimiento:registro:{now.astimezone(zone):%Y-%m-%dT%H}"
        delivery = avisos.deliver(correo.could_not_run(reason, channel.recipients, now, zone, key), channel)
        return Resultado(NO_CORRIO, error=str(err),
                         mailed=f"aviso a {', '.join(channel.recipients)}: {delivery.describe()}")
    return Resultado(informe.code, informe=informe)
