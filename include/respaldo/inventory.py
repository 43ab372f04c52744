"""The inventory: the one source of truth for what is backed up, how often and where (step 1).

The file is YAML, read with line numbers kept so every problem names its line. Models forbid unknown
keys, so a typo fails loudly with a suggestion instead of being silently ignored. All problems are
collected and reported at once.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import warnings
import zoneinfo
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from respaldo.ciclo.cifrado import SECRET_MESSAGE, Encryption, secret_lines
from respaldo.ciclo.externo.config import EXTERNAL_KINDS, External
from respaldo.ciclo.politica import Retention
from respaldo.entrega import ManualTarget
from respaldo.errors import InventoryError, Problem
from respaldo.sources import SOURCES, TargetBase
from respaldo.sources.base import DEFAULT_QUEUE, NAME_PATTERN, QUEUE_PATTERN, Name, Queue

DEFAULT_INVENTORY = Path(__file__).resolve().parents[1] / "inventory.yaml"
INVENTORY_ENV = "RESPALDO_INVENTORY"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Storage(_Model):
    root: Annotated[
        str,
        Field(description="Carpeta (ruta absoluta) donde quedan los respaldos, en los servidores de la "
              "entidad.", examples=["/var/backups/respaldo"]),
    ]

    @field_validator("root")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not PurePosixPath(value).is_absolute():
            raise ValueError(f"la carpeta de respaldos debe ser una ruta absoluta, no «{value}»")
        return value


class Register(_Model):
    conn_id: Annotated[
        str, Field(min_length=1, description="Conexión de Airflow (postgres) del registro FT-GTI-004.")
    ] = "respaldo_registro"
    form_version: Annotated[
        str, Field(min_length=1, description="Versión del formato FT-GTI-004 que se imprime en la hoja.",
                   examples=["01"])
    ] = "01"


EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class Alerts(_Model):
    smtp_conn_id: Annotated[str, Field(min_length=1, description="Conexión SMTP de Airflow.")] = "smtp_default"
    email: Annotated[
        list[Annotated[str, Field(pattern=EMAIL)]],
        Field(min_length=1, description="Quién recibe los avisos de falla.",
              examples=[["sistemas@example.gov.co"]]),
    ]
    from_email: Annotated[
        str | None,
        Field(pattern=EMAIL, description="Remitente; por defecto el `from_email` de la conexión SMTP."),
    ] = None


class Frequency(_Model):
    schedule: Annotated[
        str | list[str] | None,
        Field(description="Una o varias expresiones cron, en la zona horaria del inventario.",
              examples=[["0 13 * * *", "0 22 * * *"]]),
    ] = None
    every_days: Annotated[
        int | None, Field(ge=1, le=366, description="Cada cuántos días (en lugar de `schedule`).", examples=[8])
    ] = None
    at: Annotated[
        str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="Hora HH:MM para `every_days`.")
    ] = "00:00"
    description: Annotated[str, Field(description="Qué respalda esta clase y cada cuánto, para la UI.")] = ""
    retries: Annotated[int, Field(ge=0, le=10, description="Reintentos de cada tarea.")] = 2
    retry_delay_minutes: Annotated[int, Field(ge=1, le=720, description="Minutos entre reintentos.")] = 5
    timeout_hours: Annotated[
        float, Field(gt=0, le=168, description="Horas máximas de cada tarea; una copia colgada falla y avisa en vez "
                     "de bloquear las siguientes ejecuciones.", examples=[6])
    ] = 6
    grace_minutes: Annotated[
        int, Field(ge=0, le=10080, description="Seguimiento: minutos que se esperan después de cada turno antes de "
                   "declararlo sin copia (la copia puede tardar).", examples=[180])
    ] = 180
    max_age_hours: Annotated[
        float | None, Field(gt=0, le=8784, description="Seguimiento: horas que puede tener la copia más reciente "
                            "antes de quedar «vencido». Por defecto, el mayor intervalo entre turnos más el plazo "
                            "(diario: 27 h; cada 8 días: 195 h).", examples=[27])
    ] = None
    drill_every_days: Annotated[
        int, Field(ge=1, le=366, description="Simulacros: cada cuántos días se restaura, a modo de prueba, la copia "
                   "buena más reciente de cada objetivo de esta clase (en la primera ejecución de "
                   "respaldo_simulacro en que le toque; ver `drills.schedule`).", examples=[7])
    ] = 7
    external: Annotated[
        External | None,
        Field(description="Medio externo de los objetivos de esta clase: la tarea `copia_externa` escribe ahí cada "
                          "copia y verifica su suma. `kind: path` (disco montado con archivo marcador), `sftp` o `s3`; "
                          "un objetivo puede traer el suyo.",
              examples=[{"kind": "sftp", "conn_id": "sftp_externo", "path": "/srv/respaldos"}]),
    ] = None
    retention: Annotated[
        Retention | None,
        Field(description="Retención: cuántas copias de cada objetivo de esta clase se conservan; las demás se borran "
                          "después de una copia exitosa (y con `respaldo retencion --aplicar`). Sin `retention` no "
                          "se borra nada.", examples=[{"keep_last": 2, "keep_daily": 7, "keep_weekly": 4,
                                                       "keep_monthly": 12, "min_keep": 3}]),
    ] = None
    encryption: Annotated[
        Encryption | None,
        Field(description="Cifrado con age de las copias de esta clase: `recipients` (claves públicas «age1…» o "
              "«ssh-ed25519 …») y, para los simulacros, `drill_identity`. Cada objetivo puede cambiarlo con su "
              "propio `encryption`. Las copias quedan `.zst.age`.")
    ] = None
    queue: Annotated[
        Queue, Field(description="Cola de Celery de los objetivos de esta clase (cada objetivo puede cambiarla con "
                     "su propia `queue`). Con LocalExecutor no tiene efecto.", examples=["default"])
    ] = DEFAULT_QUEUE

    @field_validator("schedule")
    @classmethod
    def _crons(cls, value: str | list[str] | None) -> str | list[str] | None:
        from croniter import croniter

        for expression in [value] if isinstance(value, str) else value or []:
            if not croniter.is_valid(expression) or len(expression.split()) != 5:
                raise ValueError(
                    f"«{expression}» no es una expresión cron válida (cinco campos: minuto hora día mes "
                    "día-de-semana, por ejemplo «0 23 * * *»)"
                )
        if isinstance(value, list) and not value:
            raise ValueError("la lista de horarios está vacía")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> Frequency:
        if (self.schedule is None) == (self.every_days is None):
            raise ValueError("indique `schedule` (cron) o `every_days` (cada N días), uno de los dos")
        return self

    @property
    def crons(self) -> list[str]:
        return [self.schedule] if isinstance(self.schedule, str) else list(self.schedule or [])

    def describe(self, timezone: str) -> str:
        """The schedule in Spanish words, for the DAG docs."""
        if self.every_days:
            return f"cada {self.every_days} días a las {self.at} ({timezone})"
        times = ", ".join(f"`{c}`" for c in self.crons)
        return f"según {times} ({timezone})"


HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
#: Frequency class names that would give a DAG id respaldo already uses for something else.
RESERVED_CLASSES = {"seguimiento": "respaldo_seguimiento es el DAG del seguimiento",
                    "simulacro": "respaldo_simulacro es el DAG de los simulacros de restauración"}


class Followup(_Model):
    """The follow-up ("seguimiento"): nothing is missed in silence."""

    schedule: Annotated[
        str, Field(description="Cada cuándo corre el DAG respaldo_seguimiento (cron, zona del inventario).",
                   examples=["0 * * * *"])
    ] = "0 * * * *"
    digest_at: Annotated[
        str, Field(pattern=HHMM, description="Hora (HH:MM, zona del inventario) del resumen diario por correo; "
                   "si no llega, el seguimiento mismo está caído.", examples=["07:00"])
    ] = "07:00"
    since: Annotated[
        dt.date | None, Field(description="Desde qué fecha cada turno debe tener copia, para todos los objetivos. "
                              "Por defecto, desde la primera fila de cada objetivo en el registro.",
                              examples=["2026-12-01"])
    ] = None
    api_conn_id: Annotated[
        str, Field(min_length=1, description="Conexión de Airflow (usuario y clave; servidor opcional) con la que se "
                   "consulta la API REST de Airflow para revisar su salud.")
    ] = "respaldo_airflow_api"
    size_drop_percent: Annotated[
        float, Field(gt=0, le=100, description="Una copia más pequeña que la mediana de las 10 anteriores en más de "
                     "este porcentaje queda «sospechoso».", examples=[50])
    ] = 50
    missed_window_days: Annotated[
        int, Field(ge=1, le=366, description="Un objetivo sigue «atrasado» mientras tenga un turno sin copia en "
                   "estos últimos días (el turno queda en el registro como `missing` aunque salga de la ventana).",
                   examples=[7])
    ] = 7
    verify_every_days: Annotated[
        int, Field(ge=1, le=366, description="Cada copia guardada se relee completa (suma, compresión y formato) al "
                   "menos cada tantos días; el seguimiento relee una parte en cada pasada.", examples=[30])
    ] = 30
    stuck_minutes: Annotated[
        int, Field(ge=1, le=10080, description="Minutos que una tarea puede esperar en «scheduled» o «queued» antes "
                   "de avisar (las que esperan cupo en un pool también esperan aquí).", examples=[120])
    ] = 120

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value) or len(value.split()) != 5:
            raise ValueError(f"«{value}» no es una expresión cron válida (por ejemplo «0 * * * *», cada hora)")
        return value


class Drills(_Model):
    """Restore drills ("simulacros"): where copies are restored to prove they can be."""

    conn_id: Annotated[
        str | None, Field(min_length=1, description="Conexión de Airflow (tipo postgres) al servidor donde se "
                          "restauran, a modo de prueba, las bases PostgreSQL: su usuario debe poder crear y borrar "
                          "bases (CREATEDB). Nunca es el servidor de producción.", examples=["pg_simulacros"])
    ] = None
    mysql_conn_id: Annotated[
        str | None, Field(min_length=1, description="Conexión de Airflow (tipo mysql) al servidor MySQL/MariaDB de "
                          "simulacros: su usuario debe poder crear y borrar bases y crear objetos de otros usuarios "
                          "(DEFINER), por ejemplo con ALL PRIVILEGES ON *.*.", examples=["mysql_simulacros"])
    ] = None
    schedule: Annotated[
        str, Field(description="Cuándo corre el DAG respaldo_simulacro (cron, zona del inventario); en cada ejecución "
                   "restaura los objetivos a los que les toca según `drill_every_days` de su clase.",
                   examples=["0 3 * * 0"])
    ] = "0 3 * * 0"
    folder: Annotated[
        str | None, Field(description="Carpeta (ruta absoluta) donde se restauran a modo de prueba archivos, portales, "
                          "imágenes y copias manuales; se vacía al terminar cada simulacro. Por defecto "
                          "`<storage.root>/.simulacro`.", examples=["/var/backups/respaldo/.simulacro"])
    ] = None

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value) or len(value.split()) != 5:
            raise ValueError(f"«{value}» no es una expresión cron válida (por ejemplo «0 3 * * 0», los domingos a "
                             "las 3:00)")
        return value

    @field_validator("folder")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not PurePosixPath(value).is_absolute():
            raise ValueError(f"la carpeta de simulacros debe ser una ruta absoluta, no «{value}»")
        return value


# pydantic warns that the field "register" shadows ABCMeta.register; the field is what we mean.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class InventoryHead(_Model):
    organization: Annotated[str, Field(min_length=1, description="Entidad dueña de la información.")]
    timezone: Annotated[str, Field(description="Zona horaria de horarios y nombres de archivo.")] = (
        "America/Bogota"
    )
    owner: Annotated[str, Field(min_length=1, description="Dueño de los DAG en Airflow.")] = "sistemas"
    start_date: Annotated[
        dt.date, Field(description="Desde cuándo rigen los horarios (ancla de `every_days`).")
    ] = dt.date(2026, 1, 1)
    storage: Storage
    register: Register = Register()
    alerts: Alerts
    frequencies: Annotated[dict[Name, Frequency], Field(min_length=1)]
    followup: Followup = Followup()
    drills: Drills = Drills()
    targets: list[Any]

    @field_validator("frequencies")
    @classmethod
    def _not_reserved(cls, value: dict[str, Frequency]) -> dict[str, Frequency]:
        for name in value:
            if name in RESERVED_CLASSES:
                raise ValueError(f"la clase de frecuencia «{name}» no se puede usar: {RESERVED_CLASSES[name]}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"zona horaria desconocida «{value}» (por ejemplo «America/Bogota»)") from err
        return value


class Inventory(InventoryHead):
    """A validated inventory."""

    targets: list[TargetBase]
    path: str = ""

    def targets_of(self, frequency: str) -> list[TargetBase]:
        return sorted((t for t in self.targets if t.frequency == frequency), key=lambda t: t.id)

    def queue_of(self, target: TargetBase) -> str:
        """The Celery queue of a target's four steps: its own ``queue``, else its class's."""
        return target.queue or self.frequencies[target.frequency].queue

    def queues(self) -> list[str]:
        """Every queue a worker must listen on: the targets' and ``default`` (the DAG-level tasks)."""
        return sorted({DEFAULT_QUEUE} | {self.queue_of(t) for t in self.targets})

    def longest_timeout_hours(self) -> float:
        """The longest task timeout of the backup DAGs (``timeout_hours`` of the classes)."""
        return max(f.timeout_hours for f in self.frequencies.values())

    def target(self, target_id: str) -> TargetBase:
        for target in self.targets:
            if target.id == target_id:
                return target
        raise KeyError(target_id)

    def task_settings(self, dag_id: str) -> dict[str, Any]:
        """What every task of a backup DAG is handed besides its target: small, JSON-friendly, no secrets.

        The follow-up hands the same to :func:`respaldo.fallas.handle` for a failure it records itself.
        """
        return {
            "root": self.storage.root,
            "timezone": self.timezone,
            "register_conn_id": self.register.conn_id,
            "smtp_conn_id": self.alerts.smtp_conn_id,
            "alert_emails": list(self.alerts.email),
            "from_email": self.alerts.from_email,
            "dag_id": dag_id,
        }

    def external_of(self, target: TargetBase) -> External | None:
        """Where ``target``'s copies also go: its own ``external``, else its class's, else nowhere."""
        return target.external or self.frequencies[target.frequency].external

    def encryption_of(self, target: TargetBase) -> Encryption | None:
        """Whom ``target``'s copies are encrypted to: its own ``encryption``, else its class's, else none."""
        return target.encryption or self.frequencies[target.frequency].encryption

    def drill_settings(self, dag_id: str) -> dict[str, Any]:
        """What every task of ``respaldo_simulacro`` is handed: the task settings plus the drill servers and folder."""
        return {**self.task_settings(dag_id), "conn_id": self.drills.conn_id,
                "mysql_conn_id": self.drills.mysql_conn_id, "folder": self.drill_folder()}

    def pools(self) -> list[str]:
        """The Airflow pools respaldo's tasks run in: the automatic copies' (``Source.pool`` of each target) and
        the restore drills' (one per drill server, see :func:`respaldo.simulacro.grupos`)."""
        from respaldo.simulacro.grupos import drill_pools

        copies = {SOURCES[t.kind].pool(t) for t in self.targets if t.mechanism == "automatic"}
        return sorted(copies | set(drill_pools(self)))

    def drill_folder(self) -> str:
        """Where drills restore folders: ``drills.folder``, else ``<storage.root>/.simulacro``."""
        return self.drills.folder or str(PurePosixPath(self.storage.root) / ".simulacro")


def entry_model(raw: dict[str, Any]) -> type[TargetBase]:
    """The model of a target entry: the manual mechanism's, or its kind's (the kind must exist)."""
    if raw.get("mechanism") == "manual":
        return ManualTarget
    return SOURCES[raw["kind"]].model


def target_from(entry: dict[str, Any]) -> TargetBase:
    """A validated target from its JSON-friendly inventory entry (what each task is handed)."""
    return entry_model(entry).model_validate(entry)


def inventory_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The inventory file: ``path``, else ``$RESPALDO_INVENTORY``, else ``include/inventory.yaml``."""
    return Path(path or os.environ.get(INVENTORY_ENV) or DEFAULT_INVENTORY)


# --- loading, with every problem mapped to a line ------------------------------------------------


def _line_of(tree: Any, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc``, or of the nearest enclosing node that exists."""
    line = None
    node = tree
    for part in loc:
        lc = getattr(node, "lc", None)
        if lc is None:
            break
        try:
            if isinstance(node, dict) and part in node:
                line = lc.key(part)[0] + 1
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                line = lc.item(part)[0] + 1
                node = node[part]
            else:
                break
        except (KeyError, IndexError, TypeError):
            break
    if line is None and getattr(tree, "lc", None) is not None:
        line = tree.lc.line + 1
    return line


def _where(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" ¿Quiso decir «{close[0]}»?" if close else ""


def _model_for(loc: tuple[Any, ...], target_model: type[BaseModel] | None) -> type[BaseModel] | None:
    """The model whose fields are the valid keys at ``loc`` (for suggesting a misspelled key)."""
    model: Any = target_model or InventoryHead
    keyed = False  # the part after a dict of models (``frequencies``) is a key of that dict, not a field
    for part in loc:
        if isinstance(part, int) or keyed:
            keyed = False
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return model if isinstance(model, type) else None
        annotation = fields[part].annotation
        keyed = getattr(annotation, "__origin__", None) is dict
        model = next((a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)
                      and issubclass(a, BaseModel)), annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _message(error: dict[str, Any], target_model: type[BaseModel] | None) -> str:
    kind = error["type"]
    loc = error["loc"]
    field = loc[-1] if loc else ""
    if kind == "missing":
        return f"falta el campo obligatorio «{field}»."
    if kind == "extra_forbidden":
        model = _model_for(loc[:-1], target_model)
        names = list(getattr(model, "model_fields", {}))
        hint = _suggest(str(field), names) or (f" Claves válidas: {', '.join(names)}." if names else "")
        return f"clave desconocida «{field}».{hint}"
    if kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern")
        if pattern == NAME_PATTERN:
            return (f"«{error['input']}» no sirve como nombre: use minúsculas sin tildes, números y «_», "
                    "empezando por una letra (se usa en rutas de archivo y en Airflow).")
        if pattern == QUEUE_PATTERN:
            return (f"«{error['input']}» no sirve como cola: use minúsculas sin tildes, números, «_» o «-», "
                    "empezando por una letra o un número, sin espacios ni comas (va en `--queues` del trabajador "
                    "de Celery).")
        if pattern == EMAIL:
            return f"«{error['input']}» no es una dirección de correo."
        return f"valor «{error['input']}» con formato no válido."
    if kind == "union_tag_invalid":
        return (f"valor «{error['ctx']['tag']}» de {error['ctx']['discriminator']} no permitido; se espera uno de: "
                f"{error['ctx']['expected_tags']}.")
    if kind == "union_tag_not_found":
        return f"falta {error['ctx']['discriminator']}, que dice de qué tipo es (por ejemplo kind: path, sftp o s3)."
    if kind == "literal_error":
        return f"valor «{error['input']}» no permitido; se espera {error['ctx']['expected']}."
    if kind in ("value_error", "assertion_error"):
        return str(error["ctx"]["error"]) + "."
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"se espera un número entero, no «{error['input']}»."
    if kind in ("string_type",):
        return f"se espera un texto, no «{error['input']}»."
    if kind in ("list_type",):
        return "se espera una lista."
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "se espera un bloque de claves y valores."
    if kind == "too_short" and field == "recipients":
        return "indique al menos un destinatario (una clave pública «age1…» o «ssh-ed25519 AAAA…»)."
    if kind in ("greater_than_equal", "less_than_equal", "too_short", "too_long", "string_too_short"):
        return f"valor «{error['input']}» fuera de rango ({error['msg']})."
    if kind.startswith("date"):
        return f"«{error['input']}» no es una fecha AAAA-MM-DD."
    return f"{error['msg']} (valor «{error.get('input')}»)."


def _validation_problems(
    err: ValidationError, file: str, tree: Any, prefix: tuple[Any, ...], target_model: type[BaseModel] | None
) -> list[Problem]:
    problems = []
    for error in err.errors():
        loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        loc = tuple(part for part in loc if part not in ("str", "list[str]", "none", "constrained-str"))
        # A discriminated union (``external``) puts the chosen tag in the path: drop it, but keep its model.
        tagged = next((i for i, part in enumerate(loc) if i and loc[i - 1] == "external" and part in EXTERNAL_KINDS),
                      None)
        kind_model = EXTERNAL_KINDS[loc[tagged]] if tagged is not None else None
        if tagged is not None:
            loc = loc[:tagged] + loc[tagged + 1:]
        error = {**error, "loc": loc}
        full = prefix + loc
        if kind_model is not None and error["type"] == "extra_forbidden" and len(loc) == tagged + 1:
            names = list(kind_model.model_fields)
            field = str(loc[-1])
            hint = _suggest(field, names) or f" Claves válidas: {', '.join(names)}."
            message = f"clave desconocida «{field}».{hint}"
        else:
            message = _message(error, target_model)
        problems.append(Problem(file, _line_of(tree, full), _where(full), message))
    return problems


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise InventoryError([Problem(str(path), None, "", "no existe el archivo de inventario. Indique la "
                                      f"ruta como argumento o en la variable {INVENTORY_ENV}.")]) from err
    except (OSError, UnicodeDecodeError) as err:
        raise InventoryError([Problem(str(path), None, "", f"no se puede leer: {err}.")]) from err
    try:
        return YAML(typ="rt", pure=True).load(text)
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        what = (err.problem or err.context or "YAML mal formado").strip()
        if err.context_mark and mark and err.context_mark.line != mark.line:
            what += f" (el bloque empieza en la línea {err.context_mark.line + 1})"
        if "duplicate key" in str(err) or type(err).__name__ == "DuplicateKeyError":
            what = "clave repetida en el mismo bloque"
        raise InventoryError([Problem(str(path), line, "", f"YAML mal formado: {what}. Revise la sangría, "
                                      "los dos puntos y las comillas de esa línea.")]) from err


def _secrets(path: Path, file: str, reported: set[int | None]) -> list[Problem]:
    """An age private key anywhere in the file (a comment, a description) is refused, without repeating it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [Problem(file, line, "", f"esta línea tiene una clave privada de age (AGE-SECRET-KEY-…): {SECRET_MESSAGE}.")
            for line in secret_lines(text) if line not in reported]


class _Ambiguous(ValueError):
    """A scalar that YAML 1.1 (libyaml) and YAML 1.2 (ruamel) may read differently: the careful reader decides."""


def _quick_loader() -> type:
    """PyYAML's C loader (libyaml), made to agree with ruamel's YAML 1.2 reading or to refuse.

    Scalars whose meaning differs between YAML 1.1 and 1.2 (``yes``/``no``/``on``/``off``, ``02:00`` as
    sexagesimal, ``0755`` octal, ``0x``/``0o``/``0b``, ``1_000``, ``.inf``) and repeated keys raise
    :class:`_Ambiguous`, so only files both read alike take the quick path.
    """
    import re

    import yaml

    class QuickLoader(yaml.CSafeLoader):
        def construct_mapping(self, node, deep=False):
            keys = [self.construct_object(key, deep=True) for key, _ in node.value]
            if len(keys) != len(set(map(repr, keys))):
                raise _Ambiguous("repeated key")
            return super().construct_mapping(node, deep)

    def ambiguous(loader, node):
        raise _Ambiguous(node.value)

    # Checked in this order for a plain scalar's first character, before YAML's own null and timestamp:
    # the ambiguous forms first, then YAML 1.2's (core schema) bool, int and float.
    ours = [
        ("tag:respaldo:ambiguous", "yYnNoO-+0123456789.",
         r"^(?:yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF|[-+]?0[0-9_]+|[-+]?0[xXoObB][0-9a-fA-F_]+"
         r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?|[-+]?[0-9][0-9_]*_[0-9_]*(?:\.[0-9_]*)?"
         r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)|[-+]?[0-9]+[eE][-+]?[0-9]+)$"),
        ("tag:yaml.org,2002:bool", "tTfF", r"^(?:true|True|TRUE|false|False|FALSE)$"),
        ("tag:yaml.org,2002:int", "-+0123456789", r"^[-+]?(?:0|[1-9][0-9]*)$"),
        ("tag:yaml.org,2002:float", "-+0123456789.", r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"),
    ]
    replaced = {tag for tag, _, _ in ours}
    table = {first: [(tag, regexp) for tag, regexp in resolvers if tag not in replaced]
             for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()}
    for first in {char for _, chars, _ in ours for char in chars}:
        table[first] = [(tag, re.compile(pattern)) for tag, chars, pattern in ours if first in chars] + \
            table.get(first, [])
    QuickLoader.yaml_implicit_resolvers = table
    QuickLoader.add_constructor("tag:respaldo:ambiguous", ambiguous)
    return QuickLoader


def _quick_yaml(path: Path) -> Any | None:
    """The file read by libyaml (20x faster than ruamel's pure-Python reader), or None when it cannot say.

    Each Airflow task process parses the DAG file and so reads the inventory: this is most of the
    parse's time. ruamel's reader stays the one that decides: it reads the file again whenever this
    one refuses, and whenever the inventory has a problem (only it knows the line of each node).
    """
    import yaml

    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_quick_loader())  # noqa: S506 - a safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError, _Ambiguous):
        return None


def load_inventory(path: str | os.PathLike[str] | None = None) -> Inventory:
    """Read and validate the inventory; raise :class:`InventoryError` listing every problem found."""
    file_path = inventory_path(path)
    quick = _quick_yaml(file_path)
    if quick is not None:
        try:
            return _validated(str(file_path), quick)
        except InventoryError:
            pass  # read again by ruamel, which knows where each problem is
    return _validated(str(file_path), _read_yaml(file_path))


def _validated(file: str, tree: Any) -> Inventory:
    if not isinstance(tree, dict):
        raise InventoryError([Problem(file, 1, "", "el inventario debe ser un bloque de claves (organization, "
                                      "storage, frequencies, targets...).")])

    problems: list[Problem] = []
    head: InventoryHead | None = None
    try:
        head = InventoryHead.model_validate(dict(tree))
    except ValidationError as err:
        problems += _validation_problems(err, file, tree, (), None)

    raw_targets = tree.get("targets") if isinstance(tree.get("targets"), list) else []
    frequencies = list(tree.get("frequencies") or {}) if isinstance(tree.get("frequencies"), dict) else []
    targets: list[TargetBase] = []
    for index, raw in enumerate(raw_targets):
        prefix: tuple[Any, ...] = ("targets", index)
        if not isinstance(raw, dict):
            problems.append(Problem(file, _line_of(tree, prefix), _where(prefix),
                                    "cada objetivo debe ser un bloque con id, kind, frequency..."))
            continue
        kind = raw.get("kind")
        source = SOURCES.get(kind) if isinstance(kind, str) else None
        if source is None:
            known = sorted(SOURCES)
            if kind is None:
                message = f"falta el campo obligatorio «kind» (uno de: {', '.join(known)})."
                where = prefix
            else:
                message = (f"tipo «{kind}» no soportado.{_suggest(str(kind), known)} "
                           f"Tipos disponibles: {', '.join(known)}.")
                where = (*prefix, "kind")
            problems.append(Problem(file, _line_of(tree, where), _where(where), message))
            continue
        frequency = raw.get("frequency")
        if isinstance(frequency, str) and frequency not in frequencies:
            where = (*prefix, "frequency")
            problems.append(Problem(
                file, _line_of(tree, where), _where(where),
                f"clase de frecuencia desconocida «{frequency}».{_suggest(frequency, frequencies)}"
                f" Definidas en `frequencies`: {', '.join(frequencies) or '(ninguna)'}.",
            ))
        model = entry_model(raw)
        try:
            targets.append(model.model_validate(dict(raw)))
        except ValidationError as err:
            problems += _validation_problems(err, file, tree, prefix, model)

    counts = Counter(r.get("id") for r in raw_targets if isinstance(r, dict) and isinstance(r.get("id"), str))
    for index, raw in enumerate(raw_targets):
        if isinstance(raw, dict) and counts.get(raw.get("id"), 0) > 1:
            where = ("targets", index, "id")
            lines = [_line_of(tree, ("targets", i, "id")) for i, r in enumerate(raw_targets)
                     if isinstance(r, dict) and r.get("id") == raw.get("id")]
            problems.append(Problem(file, _line_of(tree, where), _where(where),
                                    f"id «{raw.get('id')}» repetido (líneas {', '.join(map(str, lines))}); "
                                    "cada objetivo necesita un id único."))

    problems += _secrets(Path(file), file, {p.line for p in problems})
    if problems or head is None:
        problems.sort(key=lambda p: (p.line or 0, p.where))
        raise InventoryError(problems)
    data = head.model_dump()
    data.update(targets=targets, path=file)
    return Inventory.model_validate(data)


def read_section(path: str | os.PathLike[str] | None, name: str, model: type[BaseModel]) -> Any | None:
    """One top-level section of an inventory, validated alone; None when the file or that section is unusable.

    A broken inventory stops every backup; its ``alerts`` section, if it alone is sound, still says whom
    to tell (see the follow-up).
    """
    try:
        tree = _read_yaml(inventory_path(path))
    except InventoryError:
        return None
    if not isinstance(tree, dict) or name not in tree:
        return None
    try:
        return model.model_validate(tree[name])
    except ValidationError:
        return None
