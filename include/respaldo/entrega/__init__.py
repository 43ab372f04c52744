"""Manual delivery ("entrega"): a mechanism, not a kind of source.

A target with ``mechanism: manual`` keeps its ``kind`` (what the copy is: a PostgreSQL dump, a folder
of files...) but respaldo does not take the copy: a person, or another system's export job, leaves it
in the target's intake folder and respaldo takes it from there. :mod:`.carpeta` holds the intake
folders (local or SFTP) and the inventory model; :mod:`.sensor` the ``copia`` task that waits for the
delivery. Nothing here imports :mod:`respaldo.sources`: which kinds exist is the inventory's business.
"""

from respaldo.entrega.carpeta import (
    PROCESSING,
    REJECTED,
    TAKEN,
    Intake,
    ManualTarget,
    open_intake,
    settle,
    slot_of,
    take,
)

__all__ = ["PROCESSING", "REJECTED", "TAKEN", "Intake", "ManualTarget", "open_intake", "settle", "slot_of", "take"]
