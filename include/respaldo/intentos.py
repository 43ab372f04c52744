"""Each try of a step leaves its number and start time in XCom when it begins.

A task process killed outright (SIGKILL, the out-of-memory killer) reports nothing: Airflow marks the
task failed and runs no callback. The run's closing task then finds the step failed with no row, and
this mark tells it which try died and since when. Airflow clears a task's XComs when a new try
starts, so the mark always belongs to the latest try.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

TRY_KEY = "intento"


def mark(context: Any) -> None:
    """Push this try's mark (call first thing in ``execute``)."""
    ti = context["ti"]
    ti.xcom_push(key=TRY_KEY, value={"try_number": ti.try_number, "started_at": dt.datetime.now(dt.UTC).isoformat()})


def of(ti: Any, task_id: str) -> dict[str, Any]:
    """The mark the latest try of ``task_id`` (same run) left, or an empty dict if it never started."""
    return ti.xcom_pull(task_ids=task_id, key=TRY_KEY) or {}
