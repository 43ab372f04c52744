"""The backup control register, form FT-GTI-004, kept in PostgreSQL (step 6 and the follow-up).

- :mod:`.esquema`: the schema and its numbered migrations; :func:`connect` to a migrated register.
- :mod:`.control`: ``respaldo.control_backup``, one row per (target, run), the printed sheet's columns.
- :mod:`.notificacion`: ``respaldo.notificacion``, every alert sent or not.
- ``respaldo.simulacro`` (:data:`DRILLS`): every restore drill; read and written by :mod:`respaldo.simulacro`.
"""

from respaldo.register.control import COLUMNS, SHEET_COLUMNS, Recorded, Row, fetch, get, previous_success, record
from respaldo.register.esquema import DRILLS, MIGRATIONS, NOTIFICATIONS, SCHEMA, TABLE, connect, migrate

__all__ = ["COLUMNS", "DRILLS", "MIGRATIONS", "NOTIFICATIONS", "SCHEMA", "SHEET_COLUMNS", "TABLE", "Recorded", "Row",
           "connect", "fetch", "get", "migrate", "previous_success", "record"]
