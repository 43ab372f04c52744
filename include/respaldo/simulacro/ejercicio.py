"""A restore drill: restore a target's newest good copy into scratch, compare, drop the scratch, record, alert.

One drill (:func:`drill`):

1. its row in ``respaldo.simulacro`` first (verdict unknown), so even a drill killed outright leaves
   a trace that the next run settles;
2. the copy read whole (:func:`respaldo.integridad.verify_artifact`: the sums of its ``.sha256`` file
   and of the register, zstd to the end of its last frame, the format's own tool), so a tampered or a
   truncated copy fails here with the reason;
3. the restore with the standard tools into scratch: a new database ``simulacro_<target>_<YYYYMMDD>_<suffix>``
   on the drill server (its comment marks it as respaldo's), or a new folder of that name holding
   respaldo's marker file; a portal gets both;
4. what came back against what the copy recorded when it was taken (:mod:`.cifras`);
5. the scratch dropped, always (``finally``); what a killed drill left is dropped by the next run
   (:func:`sweep`), which recognises it by its name *and* its marker, and touches nothing else;
6. the verdict, ``aprobado`` or ``fallido``, and for a failed drill one email (``avisos.deliver``).

The source is never read: a drill only reads the stored artifact and writes to what it created.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import os
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from respaldo import avisos, integridad
from respaldo.errors import RespaldoError
from respaldo.register.notificacion import Alert
from respaldo.simulacro import cifras, destino, grupos, registro
from respaldo.simulacro.restaurar import DATABASE_KINDS, KIND_LABELS, Base, Copia, kind_of_row, restore_copy

log = logging.getLogger("respaldo")

#: A target is due once its last drill started this long before ``drill_every_days`` ran out: the
#: DAG's own runs drift a little, and a weekly drill must not slip to the next week for minutes.
DUE_SLACK = dt.timedelta(hours=6)
INTERRUPTED = ("el simulacro se interrumpió antes de su veredicto: su proceso se detuvo de golpe (memoria agotada, "
               "señal KILL, reinicio del trabajador o el límite de tiempo de la tarea)")


# --- who is due, most overdue first -----------------------------------------------------------------


@dataclass(frozen=True)
class Turno:
    """A target's standing for the drills: its last drill and its newest good copy."""

    target: str
    every_days: int
    newest_good_id: int | None
    last_started: dt.datetime | None = None
    last_verdict: str | None = None
    last_control_id: int | None = None


@dataclass(frozen=True)
class Pendiente:
    """A target due for a drill, why, and how overdue (None: never drilled)."""

    target: str
    motivo: str
    overdue: dt.timedelta | None


def due(turnos: list[Turno], now: dt.datetime, chosen: list[str] | None = None) -> list[Pendiente]:
    """The targets due, the most overdue first: never drilled (by id), then by how long overdue.

    With ``chosen`` (the run form's targets, None when it names none) exactly those are drilled, due or
    not, if they have a copy.
    """
    found = []
    for turno in turnos:
        if turno.newest_good_id is None:
            continue
        every = dt.timedelta(days=turno.every_days)
        overdue = now - (turno.last_started + every) if turno.last_started else None
        if chosen is not None:
            if turno.target in chosen:
                found.append(Pendiente(turno.target, "pedido en el formulario de la ejecución", overdue))
        elif turno.last_started is None:
            found.append(Pendiente(turno.target, "nunca se ha restaurado en un simulacro", None))
        elif turno.last_verdict == "fallido" and turno.last_control_id != turno.newest_good_id:
            found.append(Pendiente(turno.target, "el último simulacro falló y ya hay una copia más nueva", overdue))
        elif overdue >= -DUE_SLACK:
            found.append(Pendiente(turno.target, f"el último simulacro fue hace {_ago(now - turno.last_started)} (cada "
                                   f"{turno.every_days} días)", overdue))
    return sorted(found, key=lambda p: (p.overdue is not None, -(p.overdue or dt.timedelta()).total_seconds(),
                                        p.target))


def _ago(delta: dt.timedelta) -> str:
    days, hours = delta.days, delta.seconds // 3600
    return f"{days} día(s) y {hours} h" if days else f"{hours} h"


def standing(conn_id: str, every_days: dict[str, int]) -> list[Turno]:
    """Every target's :class:`Turno`, from the register."""
    targets = sorted(every_days)
    goods = registro.newest_good(conn_id, targets)
    drills = registro.last_drills(conn_id, targets)
    turnos = []
    for target in targets:
        last = drills.get(target) or {}
        turnos.append(Turno(target, every_days[target], (goods.get(target) or {}).get("id"), last.get("started_at"),
                            last.get("verdict"), last.get("control_id")))
    return turnos


# --- one drill --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ejecucion:
    """The Airflow task a drill runs in (for its row and its email's log link)."""

    dag_id: str
    run_id: str
    task_id: str = ""
    try_number: int | None = None
    map_index: int = -1


def drill(target: Any, settings: dict[str, Any], run: Ejecucion) -> dict[str, Any]:
    """Drill ``target`` (an inventory model): restore, compare, drop, record, alert. Never raises for the copy.

    Returns ``{"simulacro": id, "veredicto": ..., "motivo": ..., "restos": ...}``; raises only when the
    register itself cannot be used (there is nowhere to say anything then).
    """
    conn_id = settings["register_conn_id"]
    zone = zoneinfo.ZoneInfo(settings["timezone"])
    copy = registro.newest_good(conn_id, [target.id]).get(target.id)
    if copy is None:
        return {"simulacro": None, "veredicto": None, "motivo": "no hay ninguna copia buena que restaurar"}
    engine = grupos.engine_of(target)
    server_conn = settings.get("conn_id" if engine == "postgres" else "mysql_conn_id") if engine else None
    name = destino.scratch_name(target.id, dt.datetime.now(zone).date())
    copia = Copia(Path(copy["artifact_path"]), kind_of_row(copy), copy)
    drill_id = registro.start(conn_id, target=target.id, kind=copia.kind, control_id=copy["id"], dag_id=run.dag_id,
                              run_id=run.run_id, try_number=run.try_number,
                              server=server_conn if engine else "local", scratch=name)
    log.info("Simulacro %s de «%s»: restaura la copia del %s (fila %s, %s) en «%s»", drill_id, target.id,
             copy["backup_at"].astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if copy.get("backup_at") else "?",
             copy["id"], copia.path, name)
    figures: dict[str, Any] = {}
    verdict, error, restored_at = "fallido", None, None
    created: list[tuple[str, Any]] = []  # ("base", server) or ("carpeta", path): what to drop afterwards
    note = destino.marker_text(target.id, f"simulacro {drill_id}, {run.dag_id} {run.run_id}")

    def scratch_base(engine: str) -> Base:
        key = "conn_id" if engine == "postgres" else "mysql_conn_id"
        if not settings.get(key):
            raise destino.RestauracionError(
                f"no hay servidor de simulacros {'PostgreSQL' if engine == 'postgres' else 'MySQL/MariaDB'} donde "
                f"restaurar la base: indique `drills.{key}` en el inventario (una conexión con permiso para crear y "
                "borrar bases, en un servidor que no sea el de producción)")
        server = destino.server(engine, settings[key])
        if server.exists(name):  # a unique name taken: never adopt (nor later drop) what this drill did not create
            raise destino.RestauracionError(f"ya existe una base «{name}» en {server.where}: no es de este simulacro")
        server.create(name, comment=note)
        created.append(("base", server))
        return Base(server, name, True)

    try:
        if not copia.path.is_file():
            raise destino.RestauracionError(f"la copia {copia.path} ya no está en el disco")
        copia.identity = _drill_identity(target, copia.path)
        checked = integridad.verify_artifact(copia.path, expected_sha256=copy.get("sha256"),
                                             original_bytes=copy.get("original_bytes"),
                                             check_format=copia.kind != "manual", identity=copia.identity)
        figures["verificacion"] = {"integra": checked.intact, "segundos": round(checked.seconds, 2)}
        if not checked.intact:
            for problem in checked.problems[1:]:
                log.warning("Además: %s", problem)
            raise destino.RestauracionError(checked.reason)
        log.info("Copia íntegra (%s leídos en %.1f s): se restaura", checked.stored_bytes, checked.seconds)
        if copia.kind in DATABASE_KINDS:
            result = restore_copy(copia, base=scratch_base(DATABASE_KINDS[copia.kind]), say=log.info)
        else:
            folder = destino.new_scratch_folder(Path(settings["folder"]), name, note)
            created.append(("carpeta", folder))
            restored = folder / "restaurado"
            restored.mkdir()
            result = restore_copy(copia, folder=restored, portal_base=scratch_base, say=log.info)
        restored_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=result.compare_seconds)
        for line in result.lines:
            log.info("%s", line)
        figures.update(result.figures)
        figures["tiempos"] = {"restauracion_s": round(result.restore_seconds, 2),
                              "comparacion_s": round(result.compare_seconds, 2)}
        if result.uncompared:
            figures["sin_comparar"] = result.uncompared
            for text in result.uncompared:
                log.warning("Sin comparar: %s", text)
        if result.differences:
            error = f"La restauración no coincide con lo que registró la copia: {cifras.summary(result.differences)}."
        else:
            verdict = "aprobado"
    except Exception as err:  # noqa: BLE001 - whatever stops a drill is its reason
        error = _reason(err)
    finally:
        dropped, leftovers = _drop(created, name)
    if leftovers:
        figures["restos"] = leftovers
    registro.finish(conn_id, drill_id, verdict=verdict, finished_at=restored_at, figures=figures, error=error,
                    scratch_dropped=not leftovers)
    outcome = {"simulacro": drill_id, "veredicto": verdict, "motivo": error, "restos": leftovers,
               "borrado": dropped}
    if verdict == "aprobado":
        log.info("Simulacro %s de «%s»: APROBADO. Se borró %s.", drill_id, target.id, " y ".join(dropped) or "nada")
    else:
        log.error("Simulacro %s de «%s»: FALLIDO: %s", drill_id, target.id, error)
        outcome["aviso"] = notify(target.id, settings, run, registro.get(conn_id, drill_id), copy,
                                  dropped, leftovers).describe()
    return outcome


def _drill_identity(target: Any, artifact: Path) -> list[Path] | None:
    """The private key file a drill decrypts an encrypted copy with (``encryption.drill_identity``).

    The server keeps only public keys: without a drill identity on this machine an encrypted copy
    cannot be restored here, and the drill fails saying so rather than approve what it could not read.
    """
    from respaldo.ciclo import cifrado

    if not cifrado.is_encrypted(artifact):
        return None
    encryption = getattr(target, "encryption", None)
    path = encryption.drill_identity if encryption is not None else None
    if path is None:
        raise destino.RestauracionError(
            f"la copia {artifact.name} está cifrada con age y el inventario no indica `encryption.drill_identity` (la "
            "ruta del archivo de clave privada en la máquina de los simulacros): sin ella no se puede descifrar ni "
            "restaurar, así que el simulacro no puede probarla")
    if not os.access(path, os.R_OK) or not Path(path).is_file():
        raise destino.RestauracionError(
            f"el archivo de clave de los simulacros {path} (`encryption.drill_identity`) no existe o no se puede "
            f"leer en esta máquina: sin él no se puede descifrar {artifact.name}")
    return cifrado.check_identity(path, artifact)


def _reason(err: BaseException) -> str:
    text = str(err).strip() if isinstance(err, RespaldoError) else f"{type(err).__name__}: {err}"
    return (text[:1].upper() + text[1:]) if text else type(err).__name__


def _drop(created: list[tuple[str, Any]], name: str) -> tuple[list[str], list[str]]:
    """Drop every scratch the drill made; (what was dropped, what could not be) as sentences."""
    dropped, leftovers = [], []
    for what, thing in reversed(created):
        try:
            if what == "base":
                thing.drop(name)
                dropped.append(f"la base «{name}» de {thing.where}")
            else:
                destino.remove_tree(thing)
                dropped.append(f"la carpeta {thing}")
        except Exception as err:  # noqa: BLE001 - said, and swept by the next run
            where = f"la base «{name}» de {thing.where}" if what == "base" else f"la carpeta {thing}"
            leftovers.append(f"no se pudo borrar {where}: {err}")
            log.error("No se pudo borrar %s (el próximo simulacro lo intentará de nuevo): %s", where, err)
    return dropped, leftovers


# --- leftovers of killed drills ---------------------------------------------------------------------


def sweep(settings: dict[str, Any], run: Ejecucion, *, this_run: bool) -> list[str]:
    """Drop the scratch of drills that never finished and settle their rows ``fallido``; return problems.

    At the start of a run (``this_run`` False) that is every unfinished drill of earlier runs; at its
    end, this run's own. Only a run of ``respaldo_simulacro`` runs at a time, so no drill is running
    at either moment. Scratch is recognised by name *and* marker: nothing else is ever dropped.
    """
    problems: list[str] = []
    swept: list[str] = []
    for key, engine in (("conn_id", "postgres"), ("mysql_conn_id", "mysql")):
        if not settings.get(key):
            continue
        try:
            server = destino.server(engine, settings[key])
            for name in server.leftovers():
                server.drop(name)
                swept.append(f"la base «{name}» de {server.where}")
        except RespaldoError as err:
            problems.append(f"no se pudieron revisar o borrar los restos en el servidor de simulacros "
                            f"«{settings[key]}»: {err}")
    for folder in destino.folder_leftovers(Path(settings["folder"])):
        try:
            destino.remove_tree(folder)
            swept.append(f"la carpeta {folder}")
        except OSError as err:
            problems.append(f"no se pudo borrar la carpeta de un simulacro anterior {folder}: {err.strerror}")
    for text in swept:
        log.warning("Se borró %s, que dejó un simulacro que no terminó", text)
    conn_id = settings["register_conn_id"]
    pending = registro.unsettled(conn_id, run_id=run.run_id) if this_run else \
        registro.unsettled(conn_id, other_than=run.run_id)
    for row in pending:
        reason = INTERRUPTED + ("; sus restos se borraron" if not problems else
                                "; sus restos no se pudieron borrar todavía")
        if registro.settle_interrupted(conn_id, row["id"], reason[:1].upper() + reason[1:] + ".", not problems):
            log.error("Simulacro %s de «%s» (%s): sin veredicto; queda FALLIDO: %s", row["id"], row["target"],
                      row["run_id"], reason)
            notify(row["target"], settings, Ejecucion(row["dag_id"] or run.dag_id, row["run_id"] or run.run_id),
                   registro.get(conn_id, row["id"]), registro.copy_row(conn_id, row_id=row["control_id"])
                   if row["control_id"] else None, [], [] if not problems else problems)
    return problems


# --- the email of a failed drill --------------------------------------------------------------------


def log_url(run: Ejecucion) -> str:
    from airflow.sdk.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")
    url = f"{base}/dags/{run.dag_id}/runs/{quote(run.run_id)}"
    if run.task_id:
        url += f"/tasks/{run.task_id}" + (f"/mapped/{run.map_index}" if run.map_index >= 0 else "")
    return url


def notify(target_id: str, settings: dict[str, Any], run: Ejecucion, row: dict[str, Any] | None,
           copy: dict[str, Any] | None, dropped: list[str], leftovers: list[str]) -> avisos.Delivery:
    """One email per failed drill (keyed by the drill's id), saying only what happened."""
    zone = zoneinfo.ZoneInfo(settings["timezone"])
    esc = html.escape
    row = row or {}
    reason = row.get("error") or "sin motivo registrado"
    subject = f"[respaldo] Falló el simulacro de restauración de «{target_id}» ({run.dag_id})"
    when = (copy or {}).get("backup_at")
    what = (f"la copia del {when.astimezone(zone):%Y-%m-%d %H:%M:%S} ({settings['timezone']}), fila "
            f"{copy['id']} del FT-GTI-004: <code>{esc(str(copy.get('artifact_path')))}</code>"
            if copy and when else "la copia más reciente")
    if leftovers:
        scratch = ("<b>NO se pudo borrar todo</b> lo restaurado: " + esc("; ".join(leftovers))
                   + ". El próximo simulacro lo intentará de nuevo.")
    elif dropped:
        scratch = "se borró lo restaurado a modo de prueba: " + esc(", ".join(dropped)) + "."
    else:
        scratch = "no quedó nada restaurado a modo de prueba."
    url = log_url(run)
    lines = [
        f"<p>El simulacro de restauración de <b>{esc(target_id)}</b> "
        f"({esc(KIND_LABELS.get(row.get('kind') or '', row.get('kind') or ''))}) <b>falló</b>: restaurar {what} no "
        "dio lo que la copia registró al tomarla, o no se pudo restaurar.</p>",
        f"<p><b>Motivo:</b> {esc(reason)}</p>",
        "<ul>",
        f"<li>Simulacro {esc(str(row.get('id', '?')))} de <code>respaldo.simulacro</code>, veredicto "
        "<b>fallido</b></li>",
        f"<li>DAG: {esc(run.dag_id)} &mdash; ejecución {esc(run.run_id)}</li>",
        "</ul>",
        f"<p><b>Lo restaurado:</b> {scratch}</p>",
        "<p>Mientras no haya un simulacro aprobado, el seguimiento muestra este objetivo como <b>sospechoso</b>. "
        "Revise la copia (<code>respaldo restaurar</code> la restaura a mano, ver README) y tome una nueva si hace "
        "falta; el próximo simulacro la restaurará.</p>",
        f'<p>Log: <a href="{esc(url)}">{esc(url)}</a></p>',
    ]
    alert = Alert(key=f"simulacro:{target_id}:{row.get('id', run.run_id)}", kind="simulacro",
                  recipients=list(settings["alert_emails"]), subject=subject, body="\n".join(lines), target=target_id,
                  run_id=run.run_id)
    return avisos.deliver(alert, avisos.Channel.of(settings))
