"""Builds one DAG per frequency class from the inventory (step 4's periods).

Called by the thin DAG file in ``dags/``. It reads the inventory and nothing else: no network, no
database, so the DAG processor can re-parse it every few seconds. Each task gets only its own
target, which keeps parsing fast for large inventories.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from respaldo import tasks
from respaldo.entrega import ManualTarget
from respaldo.inventory import Frequency, Inventory, load_inventory
from respaldo.sources import TargetBase, source_for

DAG_PREFIX = "respaldo_"
MAX_RETRY_DELAY = dt.timedelta(hours=1)

TASK_DOCS = {
    "copia": "**Paso 4. Realizar la copia de seguridad** en disco, en los servidores de la entidad. "
             "Registra en el log el avance (bytes y velocidad) cada pocos segundos.",
    "copia_manual": "**Paso 4. Recibir la copia manual.** Espera, sin ocupar un trabajador, a que alguien deje "
                    "la copia en la carpeta de entrega; la toma (la mueve a `procesando/`) y la trae. Si no "
                    "llega antes del plazo (ver *Rendered Template*: `deadline_hint`), falla diciendo qué "
                    "archivo se esperaba y dónde.",
    "verificar_fecha": "**Paso 3. Verificar la fecha de creación.** Copia automática: se lee completa (la "
                       "compresión hasta su último bloque, tamaño, suma y formato con `pg_restore` o `tar`); el "
                       "sistema estampó su fecha de creación al tomarla y aquí se comprueba que cae dentro de "
                       "esta ejecución. "
                       "Copia manual: se le asigna la fecha del turno (o la del disparo manual) y se rechaza "
                       "si está vacía, tiene fecha futura, es más antigua que la última aceptada o idéntica a "
                       "ella (va a `rechazados/` con el motivo).",
    "comprimir": "**Paso 5. Comprimir los archivos** con zstd y dejar al lado la suma `.sha256` "
                 "(se comprueba con `sha256sum -c`).",
    "registrar": "**Paso 6. Diligenciar el formato de control de backup FT-GTI-004** (tabla "
                 "`respaldo.control_backup`).",
}

FAILURE_SUBJECT = (
    "[respaldo] Falló el respaldo de «{target}» en el paso «{{{{ ti.task_id.split('.')[-1] }}}}» "
    "({{{{ dag.dag_id }}}})"
)
FAILURE_BODY = """\
<p>El respaldo de <b>{target}</b> ({summary}) falló después de sus reintentos.</p>
<ul>
<li>Paso: <b>{{{{ ti.task_id.split('.')[-1] }}}}</b></li>
<li>DAG: {{{{ dag.dag_id }}}} &mdash; ejecución {{{{ run_id }}}}</li>
<li>Fecha programada: {{{{ dag_run.logical_date or 'ninguna (ejecución manual)' }}}}</li>
<li>Motivo: {{{{ exception }}}}</li>
<li>Responsable: {responsible}</li>
</ul>
<p>Log de la tarea: <a href="{{{{ ti.log_url }}}}">{{{{ ti.log_url }}}}</a></p>
<p>Quedó registrado como <b>failed</b> en el formato FT-GTI-004 (<code>respaldo.control_backup</code>).
Ningún respaldo anterior fue modificado. Corrija la causa y vuelva a ejecutar la tarea desde Airflow.</p>
"""


def summary_of(target: TargetBase) -> str:
    """What a target copies, in a line of the DAG docs."""
    if isinstance(target, ManualTarget):
        intake = target.intake
        where = f"`{intake.conn_id}:{intake.path}`" if intake.conn_id else f"`{intake.path}`"
        what = f"copia manual ({source_for(target.kind).label}) entregada en {where}, archivo «{intake.pattern}»"
        return f"{what}: {target.description}" if target.description else what
    return source_for(target.kind).summary(target)


def _schedule(inventory: Inventory, frequency: Frequency):
    from airflow.sdk import CronTriggerTimetable, MultipleCronTriggerTimetable

    from respaldo.timetables import EveryNDaysTimetable

    if frequency.every_days:
        return EveryNDaysTimetable(frequency.every_days, frequency.at, inventory.timezone,
                                   inventory.start_date.isoformat())
    crons = frequency.crons
    if len(crons) == 1:
        return CronTriggerTimetable(crons[0], timezone=inventory.timezone)
    return MultipleCronTriggerTimetable(*crons, timezone=inventory.timezone)


def _doc_md(inventory: Inventory, name: str, frequency: Frequency, targets: list[TargetBase]) -> str:
    lines = [
        f"# Respaldo «{name}» — {inventory.organization}",
        "",
        frequency.description or f"Copias de seguridad de la clase de frecuencia «{name}».",
        "",
        f"**Cuándo:** {frequency.describe(inventory.timezone)}. Sin recuperar ejecuciones atrasadas al "
        "desplegar; una ejecución a la vez; "
        f"{frequency.retries} reintentos cada {frequency.retry_delay_minutes} min (creciendo); cada tarea tiene "
        f"como máximo {frequency.timeout_hours:g} h.",
        "",
        "**Qué respalda** (un grupo de tareas por objetivo: `copia` → `verificar_fecha` → `comprimir` → "
        "`registrar`, los pasos 4, 3, 5 y 6 del procedimiento):",
        "",
        "| objetivo | qué | mecanismo | responsable |",
        "|---|---|---|---|",
    ]
    for target in targets:
        mechanism = "automático" if target.mechanism == "automatic" else "manual"
        lines.append(f"| `{target.id}` | {summary_of(target)} | {mechanism} | "
                     f"{target.responsible} |")
    if not targets:
        lines.append("| (ninguno) | el inventario no tiene objetivos en esta clase | | |")
    lines += [
        "",
        f"**Dónde quedan:** `{inventory.storage.root}/{name}/<objetivo>/<AAAA>/<MM>/"
        "<objetivo>_<AAAAMMDDTHHMMSS>.<ext>.zst`, con la suma `.sha256` al lado. La hora es la fecha de "
        f"creación de la copia en {inventory.timezone}.",
        "",
        "**Cómo restaurar** (solo herramientas estándar; compruebe antes la suma con "
        "`sha256sum -c ARCHIVO.zst.sha256`):",
        "",
    ]
    for kind in sorted({t.kind for t in targets if t.mechanism == "automatic"}):
        source = source_for(kind)
        lines.append(f"- {source.label}: `{source.restore_hint.format(artifact='ARCHIVO.zst')}`")
    if any(t.mechanism == "manual" for t in targets):
        lines.append("- copia manual: `zstd -d ARCHIVO.zst` devuelve el archivo tal como lo entregaron; su nombre "
                     "y fecha originales están en el registro.")
    lines += [
        "",
        "**Ejecución manual:** *Trigger* con el formulario: objetivos (vacío = todos), responsable y "
        "observaciones, que quedan en el registro. Un *backfill* de un objetivo automático toma una copia "
        "nueva ahora: el registro guarda la fecha programada y la fecha real de la copia por separado.",
        "",
        "**Registro:** cada copia, exitosa o fallida, queda como una fila del formato FT-GTI-004 en "
        f"`respaldo.control_backup` (conexión `{inventory.register.conn_id}`); si algo falla llega un correo "
        f"a {', '.join(inventory.alerts.email)}.",
    ]
    return "\n".join(lines)


#: Up to this many targets per DAG the form offers them as a pick list. Airflow deep-copies the DAG's
#: params into every task, so a list of N choices costs N x 4N copies at parse time; beyond this the
#: form takes typed ids, which copia checks against the DAG's targets.
PICK_LIST_LIMIT = 60


def _params(targets: list[TargetBase]) -> dict[str, Any]:
    from airflow.sdk import Param

    ids = [t.id for t in targets]
    items: dict[str, Any] = {"type": "string"}
    if 0 < len(ids) <= PICK_LIST_LIMIT:
        items["enum"] = ids
    return {
        "objetivos": Param(
            [], type="array", items=items, title="Objetivos",
            description="Qué objetivos respaldar en esta ejecución (sus id); vacío: todos.",
        ),
        "responsable": Param(
            "", type="string", title="Responsable",
            description="Quién ejecuta o responde por esta copia (queda en el FT-GTI-004); vacío: el del "
                        "inventario.",
        ),
        "observaciones": Param(
            "", type="string", title="Observaciones",
            description="Observaciones para el formato FT-GTI-004.",
        ),
    }


def _target_group(inventory: Inventory, dag_id: str, frequency: Frequency, target: TargetBase) -> None:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk import TaskGroup, chain

    from respaldo.entrega.sensor import IntakeSensor
    from respaldo.operators import RespaldoStepOperator

    source = source_for(target.kind)
    target_dict = target.model_dump(mode="json")
    settings = {
        "root": inventory.storage.root,
        "timezone": inventory.timezone,
        "register_conn_id": inventory.register.conn_id,
        "dag_id": dag_id,
    }
    notifier = SmtpNotifier(
        to=list(inventory.alerts.email),
        from_email=inventory.alerts.from_email,
        smtp_conn_id=inventory.alerts.smtp_conn_id,
        subject=FAILURE_SUBJECT.format(target=target.id),
        html_content=FAILURE_BODY.format(target=target.id, summary=summary_of(target),
                                         responsible=target.responsible),
    )
    retries = target.retries if target.retries is not None else frequency.retries
    delay = target.retry_delay_minutes or frequency.retry_delay_minutes
    group_args = {
        "retries": retries,
        "retry_delay": dt.timedelta(minutes=delay),
        "on_failure_callback": [tasks.RecordFailure(target_dict, settings), notifier],
    }
    with TaskGroup(group_id=target.id, tooltip=summary_of(target), default_args=group_args):
        if isinstance(target, ManualTarget):
            first = IntakeSensor(task_id="copia", target=target_dict, settings=settings,
                                 doc_md=TASK_DOCS["copia_manual"])
        else:
            first = RespaldoStepOperator(step="copia", target=target_dict, settings=settings,
                                         pool=source.pool(target), doc_md=TASK_DOCS["copia"])
        chain(first, *(RespaldoStepOperator(step=name, target=target_dict, settings=settings, doc_md=TASK_DOCS[name])
                       for name in tasks.STEPS[1:]))


def build_dag(inventory: Inventory, name: str):
    """The DAG ``respaldo_<name>`` for one frequency class."""
    import pendulum
    from airflow.sdk import DAG

    frequency = inventory.frequencies[name]
    targets = inventory.targets_of(name)
    dag_id = f"{DAG_PREFIX}{name}"
    start = inventory.start_date
    with DAG(
        dag_id=dag_id,
        description=frequency.description or f"Respaldo {name}: {frequency.describe(inventory.timezone)}",
        schedule=_schedule(inventory, frequency),
        start_date=pendulum.datetime(start.year, start.month, start.day, tz=inventory.timezone),
        catchup=False,
        max_active_runs=1,
        doc_md=_doc_md(inventory, name, frequency, targets),
        tags=["respaldo", name, "FT-GTI-004"],
        params=_params(targets),
        default_args={
            "owner": inventory.owner,
            "retries": frequency.retries,
            "retry_delay": dt.timedelta(minutes=frequency.retry_delay_minutes),
            "retry_exponential_backoff": 2.0,
            "execution_timeout": dt.timedelta(hours=frequency.timeout_hours),
            "max_retry_delay": MAX_RETRY_DELAY,
        },
    ) as dag:
        for target in targets:
            _target_group(inventory, dag_id, frequency, target)
    return dag


def build_dags(path: str | None = None) -> dict[str, Any]:
    """All DAGs of the inventory, keyed by dag id; only the one being run when Airflow says which.

    A bad inventory raises :class:`~respaldo.errors.InventoryError`, which Airflow shows as an import
    error of the DAG file: a broken inventory is never a silently missing DAG.
    """
    from airflow.sdk import get_parsing_context

    inventory = load_inventory(path)
    wanted = get_parsing_context().dag_id
    dags = {}
    for name in sorted(inventory.frequencies):
        dag_id = f"{DAG_PREFIX}{name}"
        if wanted and wanted != dag_id:
            continue
        dags[dag_id] = build_dag(inventory, name)
    return dags
