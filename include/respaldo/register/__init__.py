"""The backup control register, form FT-GTI-004, kept in PostgreSQL (step 6 and the follow-up).

- :mod:`.esquema`: the schema and its numbered migrations; :func:`connect` to a migrated register.
- :mod:`.control`: ``respaldo.control_backup``, one row per (target, run), the columns' labels and words.
- :mod:`.consulta`: reading it the way people look at it (pages, sheet, CSV), on the indexed row date.
- :mod:`.hoja`: the monthly FT-GTI-004 sheet as XLSX and PDF.
- :mod:`.notificacion`: ``respaldo.notificacion``, every alert sent or not.
- ``respaldo.simulacro`` (:data:`DRILLS`): every restore drill; read and written by :mod:`respaldo.simulacro`.
"""

from respaldo.register.control import (
    COLUMNS,
    LABELS,
    SHEET_COLUMNS,
    STATUS_WORDS,
    Recorded,
    Row,
    fetch,
    get,
    previous_success,
    record,
    word,
)
from respaldo.register.esquema import DRILLS, MIGRATIONS, NOTIFICATIONS, ROW_DATE, SCHEMA, TABLE, connect, migrate

__all__ = ["COLUMNS", "DRILLS", "LABELS", "MIGRATIONS", "NOTIFICATIONS", "ROW_DATE", "SCHEMA", "SHEET_COLUMNS",
           "STATUS_WORDS", "TABLE", "Recorded", "Row", "connect", "fetch", "get", "migrate", "previous_success",
           "record", "word"]
