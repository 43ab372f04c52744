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
from respaldo.sources.base import DEFAULT_QUEUE

DAG_PREFIX = "respaldo_"
FOLLOWUP_DAG_ID = "respaldo_seguimiento"
DRILL_DAG_ID = "respaldo_simulacro"
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
    "preparar": "**Antes de empezar.** Revisa una sola vez el formulario de la ejecución: si pide un objetivo que "
                "no existe, la ejecución falla aquí sin tocar nada y avisa. Los objetivos no elegidos se saltan.",
    "retencion": "**Retención.** Después de las copias: para cada objetivo cuya copia de esta ejecución quedó "
                 "registrada como exitosa, borra las copias antiguas que su `retention` ya no conserva (el archivo y "
                 "su `.sha256`; la fila queda en el FT-GTI-004 con la fecha y el motivo). Nunca borra la copia buena "
                 "más reciente, menos de `min_keep`, la del último simulacro aprobado ni una cuya copia externa no "
                 "esté verificada. Si la copia falló, no borra nada. Si no puede borrar algo, falla y avisa, sin "
                 "cambiar el resultado de las copias.",
    "cierre": "**Al terminar.** Comprueba que cada paso fallido de esta ejecución tiene su fila en el FT-GTI-004 y "
              "su correo (una tarea cuyo proceso murió de golpe, por falta de memoria por ejemplo, no alcanza a "
              "registrarse sola), borra lo que quedó a medio copiar y reintenta los avisos que no salieron. No "
              "cambia el resultado de la ejecución. Corre en la cola `default`: lo que quedó a medio copiar en "
              "los trabajadores de otra cola (otra sede) lo borra la próxima `copia` de ese objetivo.",
}


def summary_of(target: TargetBase) -> str:
    """What a target copies, in a line of the DAG docs."""
    if isinstance(target, ManualTarget):
        intake = target.intake
        where = f"`{intake.conn_id}:{intake.path}`" if intake.conn_id else f"`{intake.path}`"
        what = f"copia manual ({source_for(target.kind).label}) entregada en {where}, archivo «{intake.pattern}»"
        return f"{what}: {target.description}" if target.description else what
    return source_for(target.kind).summary(target)


def _schedule(inventory: Inventory, frequency: Frequency):
    from respaldo.timetables import timetable_for

    return timetable_for(frequency, inventory.timezone, inventory.start_date)


def _retention_doc(frequency: Frequency, targets: list[TargetBase]) -> str:
    if frequency.retention is None and not any(t.retention for t in targets):
        return "**Retención:** ninguna: no se borra ninguna copia."
    own = [f"`{t.id}` ({t.retention.describe()})" for t in targets if t.retention]
    text = (f"**Retención:** {frequency.retention.describe()}" if frequency.retention
            else "**Retención:** la clase no tiene (no borra nada)")
    if own:
        text += f"; con la suya propia: {', '.join(own)}"
    return (text + ". La tarea `retencion` la aplica después de cada copia exitosa (una por cola de Celery, "
            "`retencion_en_<cola>`, si esos objetivos están en varias); `respaldo retencion` muestra qué se conserva "
            "y qué se borra, y por qué.")


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
        _retention_doc(frequency, targets),
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
    externals = [(t.id, inventory.external_of(t).describe()) for t in targets if inventory.external_of(t)]
    if externals:
        lines += ["", "**Medio externo** (tarea `copia_externa`, después de `registrar`: la copia y su `.sha256` "
                  "se escriben también ahí y se comprueba allí su suma; el resultado queda en la fila del "
                  "FT-GTI-004):", ""]
        lines += [f"- `{target_id}`: {where}" for target_id, where in externals]
    encrypted = [t.id for t in targets if inventory.encryption_of(t) is not None]
    if encrypted:
        lines += ["", f"**Cifradas con age** ({', '.join(f'`{t}`' for t in encrypted)}): sus copias terminan en "
                  "`.zst.age` y en los comandos anteriores `zstd -dc ARCHIVO.zst` se cambia por "
                  "`age -d -i CLAVE_PRIVADA ARCHIVO.zst.age | zstd -dc`. Este servidor solo tiene las claves "
                  "públicas; la privada la guarda la oficina (ver el README)."]
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
        # ["null", "string"]: the form sends null for a field left empty; a plain "string" would refuse it.
        "responsable": Param(
            None, type=["null", "string"], title="Responsable",
            description="Quién ejecuta o responde por esta copia (queda en el FT-GTI-004); vacío: el del "
                        "inventario.",
        ),
        "observaciones": Param(
            None, type=["null", "string"], title="Observaciones",
            description="Observaciones para el formato FT-GTI-004.",
        ),
    }


def task_target(target: TargetBase, frequency: Frequency) -> dict[str, Any]:
    """What a task is handed of its target: its inventory entry, with its class's ``encryption`` if it has none."""
    entry = target.model_dump(mode="json")
    encryption = target.encryption or frequency.encryption
    if encryption is not None:
        entry["encryption"] = encryption.model_dump(mode="json")
    return entry


def _target_group(dag_id: str, frequency: Frequency, target: TargetBase, settings: dict[str, Any]):
    """The target's TaskGroup: its four steps, on its Celery queue (where its staging folder is)."""
    from airflow.sdk import TaskGroup, chain

    from respaldo.entrega.sensor import IntakeSensor
    from respaldo.fallas import FailureCallback
    from respaldo.operators import RespaldoStepOperator

    source = source_for(target.kind)
    # The effective queue travels with the target, so a failure handled elsewhere knows where its staging is.
    target = target.model_copy(update={"queue": target.queue or frequency.queue})
    target_dict = task_target(target, frequency)
    summary = summary_of(target)
    retries = target.retries if target.retries is not None else frequency.retries
    delay = target.retry_delay_minutes or frequency.retry_delay_minutes
    group_args = {
        "retries": retries,
        "retry_delay": dt.timedelta(minutes=delay),
        "on_failure_callback": [FailureCallback(target_dict, settings, summary)],
        "queue": target.queue,
    }
    with TaskGroup(group_id=target.id, tooltip=summary, default_args=group_args) as group:
        if isinstance(target, ManualTarget):
            first = IntakeSensor(task_id="copia", target=target_dict, settings=settings,
                                 doc_md=TASK_DOCS["copia_manual"])
        else:
            first = RespaldoStepOperator(step="copia", target=target_dict, settings=settings,
                                         pool=source.pool(target), doc_md=TASK_DOCS["copia"])
        steps = [first, *(RespaldoStepOperator(step=name, target=target_dict, settings=settings, doc_md=TASK_DOCS[name])
                          for name in tasks.STEPS[1:])]
        external = target.external or frequency.external
        if external is not None:  # the second medium: only targets that have one get the task
            from respaldo.ciclo.externo.operador import DOC, CopiaExternaOperator
            from respaldo.ciclo.externo.tarea import ExternalFailureCallback

            where = external.describe()
            steps.append(CopiaExternaOperator(
                target=target_dict, settings=settings, external=external.model_dump(mode="json"),
                doc_md=DOC.format(where=where),
                on_failure_callback=[ExternalFailureCallback(target_dict, settings, where)]))
        chain(*steps)
    return group


def _task_process_target(dag_id: str, targets: list[TargetBase]) -> TargetBase | None:
    """The target whose step this process runs, when Airflow's parsing context names one; else None.

    A task process parses the DAG file to run one task (``<target>.<step>``); the steps of a target need
    nothing of the others. The run's own tasks (``preparar``, ``cierre``, ``retencion``) read every
    target's group, so for them (no dot in the task id) the whole DAG is built.
    """
    from airflow.sdk import get_parsing_context

    context = get_parsing_context()
    if context.dag_id != dag_id or not context.task_id or "." not in context.task_id:
        return None
    group_id = context.task_id.split(".", 1)[0]
    return next((target for target in targets if target.id == group_id), None)


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
        from respaldo.fallas import RunCallback
        from respaldo.operators import RespaldoRunOperator

        settings = inventory.task_settings(dag_id)
        only = _task_process_target(dag_id, targets)
        if only is not None:
            # A task process running one step of one target parses only that target's group: with 100
            # targets the whole DAG (400 tasks) made each task's start-up several times its work. The
            # scheduler and the DAG processor never name a task, so the DAG they keep is always whole.
            _target_group(dag_id, frequency, only, settings)
            return dag
        # preparar and cierre run in Airflow's default pool, never in a server's pool: they must run
        # even when every server's pool is busy. cierre is a teardown: it runs whatever happened to
        # the targets, and the run's result stays the targets' own.
        # Both stay on the default queue whatever the targets' queues: cierre removes the staging folders it
        # can see and leaves those on other queues' workers to each target's next copia.
        opening = RespaldoRunOperator(step="preparar", settings=settings, doc_md=TASK_DOCS["preparar"],
                                      retries=0, queue=DEFAULT_QUEUE, on_failure_callback=[RunCallback(settings)])
        closing = RespaldoRunOperator(step="cierre", settings=settings, doc_md=TASK_DOCS["cierre"],
                                      queue=DEFAULT_QUEUE, on_failure_callback=[RunCallback(settings)])
        groups = [_target_group(dag_id, frequency, target, settings) for target in targets]
        for group in groups:
            opening >> group >> closing
        closing.as_teardown(setups=opening)
        # Retention, once per Celery queue that has targets with retention, on that queue: with one worker per
        # queue, a target's artifacts are on its queue's worker. A teardown too: it runs once the copies are
        # done, and its failure (alerted) never turns the run, whose result is the copies', into a failed one.
        retention = frequency.retention.model_dump() if frequency.retention else None
        queues = sorted({t.queue or frequency.queue for t in targets
                         if t.retention is not None or frequency.retention is not None})
        for queue in queues:
            pruning = RespaldoRunOperator(step="retencion", settings=settings, retention=retention, queue=queue,
                                          task_id="retencion" if len(queues) == 1 else f"retencion_en_{queue}",
                                          doc_md=TASK_DOCS["retencion"], on_failure_callback=[RunCallback(settings)])
            groups >> pruning
            pruning.as_teardown(setups=opening)
    return dag


FOLLOWUP_DOC = """# Seguimiento de los respaldos — {organization}

El procedimiento termina con **el seguimiento al respaldo de la información**. Este DAG lo hace
{when}: nada se pierde en silencio.

- Revisa en el registro FT-GTI-004 que **cada turno** de cada objetivo tenga su copia exitosa. Un turno
  que pasó su plazo (`grace_minutes` de la clase, 180 min por defecto) sin copia queda como una fila
  `missing` que dice qué turno falta y desde cuándo; nunca mientras su ejecución sigue en curso. Si
  después se vuelve a ejecutar o se rellena (*backfill*) y sale bien, la copia nueva la cubre.
- Calcula el estado de cada objetivo: `al_dia`, `fallido` (el intento más reciente falló), `atrasado`
  (un turno sin copia en los últimos {window} días), `vencido` (la copia buena más reciente es más antigua
  de lo permitido), `sospechoso` (la copia no pasó la verificación o es mucho más pequeña que las
  anteriores).
- Revisa la salud de Airflow por su API (conexión `{api_conn_id}`): errores de importación, DAG
  pausados o desaparecidos, pools que faltan, tareas atascadas, scheduler y dag-processor sin señales,
  y tareas que terminaron fallidas sin fila en el registro (les escribe su fila `failed` y su aviso).
- Avisa por correo a {emails} cuando un objetivo **cambia** de estado o Airflow tiene un problema
  nuevo, y envía un **resumen diario** a las {digest_at}: si un día no llega, el seguimiento mismo está caído.
- La tarea `releer` relee completas (suma SHA-256, compresión y formato) una parte de las copias guardadas
  en cada pasada, las que llevan más tiempo sin releerse, de modo que cada una se relea al menos cada
  {verify_every_days} días; una copia dañada llega por correo y, si es la más reciente, deja al objetivo
  `sospechoso`. A mano: `respaldo verificar [--objetivo ID] [--todo]`.

La tarea `revisar` solo falla cuando el seguimiento no pudo revisar (registro inalcanzable): lo que
hay que atender llega por correo y queda en su log. Es la misma revisión que `respaldo seguimiento`,
que el temporizador del servidor corre fuera de Airflow (ver README).
"""


def build_followup_dag(inventory: Inventory):
    """The DAG ``respaldo_seguimiento``: the follow-up check, hourly by default, in the default pool."""
    import pendulum
    from airflow.sdk import DAG, CronTriggerTimetable

    from respaldo.seguimiento.operador import RelecturaOperator, SeguimientoOperator

    followup = inventory.followup
    start = inventory.start_date
    doc = FOLLOWUP_DOC.format(organization=inventory.organization, when=f"según `{followup.schedule}` "
                              f"({inventory.timezone})", window=followup.missed_window_days,
                              api_conn_id=followup.api_conn_id, emails=", ".join(inventory.alerts.email),
                              digest_at=followup.digest_at, verify_every_days=followup.verify_every_days)
    with DAG(
        dag_id=FOLLOWUP_DAG_ID,
        description="Seguimiento: turnos sin copia, estado de cada objetivo, salud de Airflow, resumen diario",
        schedule=CronTriggerTimetable(followup.schedule, timezone=inventory.timezone),
        start_date=pendulum.datetime(start.year, start.month, start.day, tz=inventory.timezone),
        catchup=False,
        max_active_runs=1,
        doc_md=doc,
        tags=["respaldo", "seguimiento", "FT-GTI-004"],
        default_args={"owner": inventory.owner, "retries": 1, "retry_delay": dt.timedelta(minutes=5),
                      "execution_timeout": dt.timedelta(minutes=30)},
    ) as dag:
        SeguimientoOperator(task_id="revisar", inventory_path=inventory.path,
                            doc_md="**Seguimiento.** Revisa turnos, estados y la salud de Airflow; avisa los cambios.")
        RelecturaOperator(task_id="releer", inventory_path=inventory.path,
                          execution_timeout=dt.timedelta(hours=6),
                          doc_md="**Relectura.** Relee completa una parte de las copias guardadas (suma SHA-256, "
                                 "compresión y formato), de modo que cada una se relea al menos cada "
                                 f"{inventory.followup.verify_every_days} días; avisa las dañadas.")
    return dag


DRILL_DOC = """# Simulacros de restauración — {organization}

El objetivo del procedimiento es que la información quede respaldada **y sea fácilmente recuperable**.
Este DAG lo **prueba**: {when} restaura, a modo de prueba, la copia buena más reciente de cada objetivo
al que le toca (cada `drill_every_days` de su clase, 7 por defecto; el que nunca se ha probado, primero;
después el más atrasado) y la compara con lo que la copia registró al tomarla.

- **Base PostgreSQL:** en una base nueva `simulacro_<objetivo>_<AAAAMMDD>_<sufijo>` de `{pg}`; las filas
  de cada tabla deben ser **exactamente** las que la copia contó en la misma instantánea que pg_dump.
- **Base MySQL/MariaDB:** en una base nueva del mismo nombre en `{mysql}`; las filas de cada tabla
  deben estar entre los dos conteos que la copia tomó justo antes y justo después de la instantánea de
  mariadb-dump (exactas si la tabla no cambió en ese instante).
- **Carpeta, servidor virtual:** en una carpeta nueva dentro de `{folder}`; número de archivos,
  carpetas y enlaces, bytes, y la suma SHA-256 de una muestra de archivos.
- **Portal:** su base y sus archivos, como las dos anteriores.
- **Copia manual:** el archivo tal como se entregó, en una carpeta nueva; su suma SHA-256 (no hay más
  que comparar).

Antes de restaurar, la copia se lee completa (sumas del `.sha256` y del registro, compresión hasta el
final, formato con su propia herramienta): una copia alterada o truncada falla ahí, con el motivo.

- Lo restaurado **se borra siempre** al terminar, falle o no. Si un simulacro se interrumpe de golpe,
  la próxima ejecución (o el `cierre` de esta) borra sus restos: solo bases y carpetas con el prefijo
  `simulacro_` **y** la marca de respaldo (el comentario de la base, un archivo en la carpeta). Nunca
  se toca la fuente ni ninguna base que respaldo no haya creado.
- Cada simulacro queda en `respaldo.simulacro` (conexión `{register}`): objetivo, fila del FT-GTI-004
  restaurada, inicio y fin de la restauración, veredicto `aprobado` o `fallido`, cifras por tabla y
  motivo. `respaldo registro` muestra el último simulacro aprobado de cada objetivo.
- Un simulacro **fallido** avisa por correo a {emails} y deja el objetivo **sospechoso** en el
  seguimiento hasta que otro apruebe.
- Cada servidor de simulacros tiene su pool (un cupo): los simulacros no se amontonan sobre él.

**Ejecución manual:** *Trigger* con «objetivos» para probar ahora esos objetivos aunque no les toque.
"""


def build_drill_dag(inventory: Inventory):
    """The DAG ``respaldo_simulacro``: per drill server, the targets due, restored one at a time in its pool."""
    import pendulum
    from airflow.sdk import DAG, CronTriggerTimetable, Param, TaskGroup

    from respaldo.fallas import RunCallback
    from respaldo.simulacro.grupos import groups_of, pool_of
    from respaldo.simulacro.operador import SimulacroOperator
    from respaldo.simulacro.tareas import DRILL_TEXTS

    drills = inventory.drills
    start = inventory.start_date
    settings = inventory.drill_settings(DRILL_DAG_ID)
    doc = DRILL_DOC.format(organization=inventory.organization, when=f"según `{drills.schedule}` "
                           f"({inventory.timezone})", pg=drills.conn_id or "(drills.conn_id sin configurar)",
                           mysql=drills.mysql_conn_id or "(drills.mysql_conn_id sin configurar)",
                           folder=inventory.drill_folder(), register=inventory.register.conn_id,
                           emails=", ".join(inventory.alerts.email))
    groups = groups_of(inventory)
    ids = sorted(t.id for t in inventory.targets)
    with DAG(
        dag_id=DRILL_DAG_ID,
        description="Simulacros de restauración: cada copia se restaura a modo de prueba y se compara con sus cifras",
        schedule=CronTriggerTimetable(drills.schedule, timezone=inventory.timezone),
        start_date=pendulum.datetime(start.year, start.month, start.day, tz=inventory.timezone),
        catchup=False,
        max_active_runs=1,
        doc_md=doc,
        tags=["respaldo", "simulacro", "FT-GTI-004"],
        params={"objetivos": Param([], type="array", items={"type": "string"}, title="Objetivos",
                                   description="Probar ahora estos objetivos (sus id), aunque no les toque; vacío: "
                                               "los que les toca.")},
        default_args={"owner": inventory.owner, "retries": 1, "retry_delay": dt.timedelta(minutes=5),
                      "execution_timeout": dt.timedelta(hours=6)},
    ) as dag:
        opening = SimulacroOperator(
            task_id="preparar", step="preparar", settings=settings, targets=ids,
            on_failure_callback=[RunCallback(settings, DRILL_TEXTS)],
            doc_md="**Antes de empezar.** Revisa el formulario y borra lo que dejaron simulacros interrumpidos de "
                   "ejecuciones anteriores (solo lo marcado como de respaldo); sus filas quedan «fallido».")
        closing = SimulacroOperator(
            task_id="cierre", step="cierre", settings=settings,
            on_failure_callback=[RunCallback(settings, DRILL_TEXTS)],
            doc_md="**Al terminar.** Borra lo que haya dejado un simulacro de esta ejecución que se interrumpió de "
                   "golpe y reenvía los avisos que no salieron.")
        for group, targets in groups.items():
            entries = [{"target": task_target(t, inventory.frequencies[t.frequency]),
                        "every_days": inventory.frequencies[t.frequency].drill_every_days} for t in targets]
            with TaskGroup(group_id=group, tooltip=f"Simulacros en {pool_of(drills, group)}"):
                choose = SimulacroOperator(
                    task_id="elegir", step="elegir", settings=settings, targets=entries,
                    doc_md="**Qué toca.** Los objetivos a los que les toca simulacro, el más atrasado primero.")
                drill = SimulacroOperator.partial(
                    task_id="simulacro", step="simulacro", settings=settings, pool=pool_of(drills, group), retries=0,
                    map_index_template="{{ objetivo }}",
                    doc_md="**Simulacro.** Restaura la copia buena más reciente en una base o carpeta nueva, la "
                           "compara con sus cifras, la borra y deja el veredicto en `respaldo.simulacro`.",
                ).expand(item=choose.output)
            opening >> choose >> drill >> closing
        closing.as_teardown(setups=opening)
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
    if not wanted or wanted == FOLLOWUP_DAG_ID:
        dags[FOLLOWUP_DAG_ID] = build_followup_dag(inventory)
    if not wanted or wanted == DRILL_DAG_ID:
        dags[DRILL_DAG_ID] = build_drill_dag(inventory)
    return dags
