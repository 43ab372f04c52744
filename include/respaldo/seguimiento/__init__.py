"""The follow-up ("seguimiento"): nothing is missed in silence.

The procedure ends with the follow-up of the backups. This package checks, from the FT-GTI-004
register and Airflow's REST API, that every slot of every target has its copy, what state each target
is in, and whether Airflow itself is running; it writes a ``missing`` row for every slot without a
copy and mails changes of state and a daily digest.

- :func:`ejecutar`: the whole check from an inventory file (what ``respaldo seguimiento`` and the DAG
  ``respaldo_seguimiento`` run); :func:`revisar` the same from a loaded inventory.
- :class:`Informe`: what a check found (``.text()``, ``.as_json()``, ``.code``: 0, 1 or 2).
- :mod:`.turnos` (expected slots), :mod:`.estados` (states, pure), :mod:`.registro` (register reads
  and writes), :mod:`.salud` (Airflow's REST API), :mod:`.correo` (the emails).

Nothing here imports the DAG factory or the CLI.
"""

from respaldo.seguimiento.estados import ESTADOS
from respaldo.seguimiento.informe import AL_DIA, ATENCION, NO_CORRIO, Informe
from respaldo.seguimiento.revision import DAG_ID, Resultado, ejecutar, revisar

__all__ = ["AL_DIA", "ATENCION", "DAG_ID", "ESTADOS", "NO_CORRIO", "Informe", "Resultado", "ejecutar", "revisar"]
