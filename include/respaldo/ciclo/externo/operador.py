"""The operator of ``copia_externa``, the last task of a target whose copies also go to an external medium."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

DOC = ("**Medio externo.** Lleva la copia registrada y su suma `.sha256` al medio externo: {where}, con un nombre "
       "temporal hasta comprobar allí su suma SHA-256; después le da el nombre final y lo anota en la fila del "
       "FT-GTI-004 (`external_status`, `external_uri`, `external_sha256`, `external_verified_at`). Si falla, la "
       "fila dice por qué, llega un correo y la copia local queda intacta (el respaldo sigue exitoso).")


class CopiaExternaOperator(BaseOperator):
    """Copy the target's registered artifact to its external destination (see :mod:`.tarea`).

    :param target: the target's inventory entry, as JSON-friendly values.
    :param settings: storage root, timezone, register and alert settings and DAG id.
    :param external: the effective ``external`` block (the target's, else its class's), as JSON-friendly values.
    """

    ui_color = "#f3ece2"

    def __init__(self, *, target: dict[str, Any], settings: dict[str, Any], external: dict[str, Any],
                 **kwargs: Any) -> None:
        super().__init__(task_id="copia_externa", **kwargs)
        self.target = target
        self.settings = settings
        self.external = external

    def execute(self, context: Any) -> Any:
        from respaldo import intentos
        from respaldo.ciclo.externo.tarea import copia_externa

        intentos.mark(context)
        return copia_externa(self.target, self.settings, self.external, **context)
