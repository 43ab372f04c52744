"""The follow-up's emails, built only from what the check found: changes of state, Airflow's new
problems, the daily digest (the follow-up's own heartbeat) and "the check could not run"."""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import zoneinfo
from typing import TYPE_CHECKING

from respaldo.register.notificacion import Alert
from respaldo.seguimiento.estados import Estado, horas, local

if TYPE_CHECKING:
    from respaldo.seguimiento.informe import Informe

NOMBRES = {"al_dia": "al día", "atrasado": "atrasado", "fallido": "fallido", "vencido": "vencido",
           "sospechoso": "sospechoso"}
esc = html.escape


def _digest(parts: list[str]) -> str:
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def _state_cell(state: Estado) -> str:
    text = f"<b>{esc(state.estado)}</b>"
    if state.otros:
        text += f" (también: {esc(', '.join(state.otros))})"
    return text


def change_key(state: Estado) -> str:
    since = state.desde.isoformat() if state.desde else "-"
    return f"estado:{state.target}:{state.estado}:{since}"


def changes(changed: list[tuple[Estado, str | None]], recipients: list[str], zone: zoneinfo.ZoneInfo,
            organization: str) -> Alert:
    """One email for every target whose state changed in this check."""
    keys = [change_key(state) for state, _ in changed]
    if len(changed) == 1:
        state, before = changed[0]
        key = keys[0]
        if state.estado == "al_dia":
            subject = f"[respaldo] «{state.target}» volvió a estar al día"
        else:
            subject = f"[respaldo] «{state.target}» pasó a «{state.estado}»"
    else:
        key = f"estados:{len(changed)}:{_digest(keys)}"
        counts: dict[str, int] = {}
        for state, _ in changed:
            counts[state.estado] = counts.get(state.estado, 0) + 1
        summary = ", ".join(f"{n} {NOMBRES[s]}" for s, n in sorted(counts.items()))
        subject = f"[respaldo] Seguimiento: {len(changed)} objetivos cambiaron de estado ({summary})"
    rows = []
    for state, before in changed:
        zone_details = "<br>".join(esc(f.detalle) for f in state.hallazgos) or _up_to_date(state, zone)
        rows.append(f"<tr><td>{esc(state.target)}</td><td>{esc(state.frequency)}</td>"
                    f"<td>{esc(before or 'sin estado anterior')}</td><td>{_state_cell(state)}</td>"
                    f"<td>{zone_details}</td></tr>")
    body = "\n".join([
        f"<p>El seguimiento de los respaldos de {esc(organization)} encontró {len(changed)} cambio(s) de estado.</p>",
        "<table border='1' cellpadding='4' cellspacing='0'><tr><th>objetivo</th><th>clase</th><th>antes</th>"
        "<th>ahora</th><th>por qué</th></tr>",
        *rows,
        "</table>",
        f"<p>Horas en {esc(zone.key)}. Estados: <i>fallido</i> (el intento más reciente falló), <i>atrasado</i> "
        "(un turno sin copia), <i>vencido</i> (la copia buena más reciente es muy antigua), <i>sospechoso</i> "
        "(la copia no pasó la verificación o es mucho más pequeña que las anteriores). Un turno sin copia queda en "
        "el registro FT-GTI-004 con estado <code>missing</code>; si se vuelve a ejecutar o se rellena "
        "(<i>backfill</i>) y sale bien, la copia nueva lo cubre.</p>",
        "<p>Estado de todos los objetivos: <code>respaldo seguimiento</code>.</p>",
    ])
    return Alert(key=key, kind="estado", recipients=recipients, subject=subject, body=body,
                 target=changed[0][0].target if len(changed) == 1 else None)


def _up_to_date(state: Estado, zone: zoneinfo.ZoneInfo) -> str:
    if state.newest_good:
        return f"al día: copia buena más reciente del {esc(local(state.newest_good.backup_at, zone))}"
    return "al día"


def airflow_problems(new: dict[str, str], recipients: list[str], now: dt.datetime, zone: zoneinfo.ZoneInfo) -> Alert:
    """One email for Airflow's problems that appeared since the last check."""
    items = "\n".join(f"<li>{esc(text)}</li>" for _, text in sorted(new.items()))
    first = sorted(new.values())[0].split(":")[0][:100]
    subject = (f"[respaldo] Airflow necesita atención: {first}" if len(new) == 1
               else f"[respaldo] Airflow necesita atención: {len(new)} problemas ({first}...)")
    body = "\n".join([
        f"<p>El seguimiento de los respaldos encontró en Airflow, el {esc(local(now, zone))} ({esc(zone.key)}):</p>",
        f"<ul>{items}</ul>",
        "<p>Mientras sigan así, las copias afectadas no se hacen; los turnos que se pierdan quedarán en el registro "
        "FT-GTI-004 como <code>missing</code>. Este aviso no se repite mientras el problema siga; el resumen diario "
        "lo vuelve a listar.</p>",
    ])
    return Alert(key=f"airflow:{_digest([*sorted(new), now.isoformat()])}", kind="airflow", recipients=recipients,
                 subject=subject, body=body)


def digest(informe: Informe, recipients: list[str]) -> Alert:
    """The daily digest: every target's state and Airflow's health. Its absence means the follow-up is down."""
    zone = zoneinfo.ZoneInfo(informe.timezone)
    day = informe.now.astimezone(zone).date().isoformat()
    counts: dict[str, int] = {}
    for state in informe.states:
        counts[state.estado] = counts.get(state.estado, 0) + 1
    summary = ", ".join(f"{counts[s]} {NOMBRES[s]}" for s in ("al_dia", "fallido", "atrasado", "vencido",
                                                               "sospechoso") if counts.get(s))
    rows = []
    for state in informe.states:
        copy = state.newest_good
        when = f"{local(copy.backup_at, zone)} (hace {horas(informe.now - copy.backup_at)})" if copy else "ninguna"
        rows.append(f"<tr><td>{esc(state.target)}</td><td>{esc(state.frequency)}</td><td>{_state_cell(state)}</td>"
                    f"<td>{esc(when)}</td><td>{len(state.open_missing)}</td>"
                    f"<td>{'<br>'.join(esc(f.detalle) for f in state.hallazgos)}</td></tr>")
    health = informe.airflow_lines()
    body = "\n".join([
        f"<p>Resumen del seguimiento de los respaldos de {esc(informe.organization)}, {esc(day)} "
        f"({esc(local(informe.now, zone))}, {esc(zone.key)}): {len(informe.states)} objetivos: {esc(summary)}.</p>",
        "<table border='1' cellpadding='4' cellspacing='0'><tr><th>objetivo</th><th>clase</th><th>estado</th>"
        "<th>copia buena más reciente</th><th>turnos sin copia (ventana)</th><th>detalle</th></tr>",
        *rows,
        "</table>",
        "<p><b>Airflow:</b></p>",
        "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in health) + "</ul>",
        "<p>Este resumen llega todos los días a la misma hora: si un día no llega, el seguimiento mismo no está "
        "corriendo (ni el DAG respaldo_seguimiento ni el temporizador del servidor) y hay que revisarlo.</p>",
    ])
    subject = f"[respaldo] Resumen diario del seguimiento, {day}: {summary or 'sin objetivos'}"
    return Alert(key=f"resumen:{day}", kind="resumen", recipients=recipients, subject=subject, body=body)


def could_not_run(reason: str, recipients: list[str], now: dt.datetime, zone: zoneinfo.ZoneInfo,
                  key: str) -> Alert:
    """The check itself could not run: nothing about the backups can be said until it is fixed."""
    body = "\n".join([
        f"<p>El seguimiento de los respaldos no pudo revisar nada el {esc(local(now, zone))} ({esc(zone.key)}):</p>",
        f"<pre>{esc(reason)}</pre>",
        "<p>Mientras no se corrija, no se sabe si las copias se están haciendo. Corríjalo y compruébelo con "
        "<code>respaldo seguimiento</code>.</p>",
    ])
    first = reason.strip().splitlines()[0] if reason.strip() else "error"
    return Alert(key=key, kind="seguimiento", recipients=recipients,
                 subject=f"[respaldo] El seguimiento no pudo ejecutarse: {first[:120]}", body=body)
