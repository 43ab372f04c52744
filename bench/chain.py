"""Run respaldo's four task callables for one target in this process, the way Airflow chains them.

    python -m bench.chain TARGET_JSON SETTINGS_JSON RUN_ID OUT_JSON

``copia`` -> ``verificar_fecha`` -> ``comprimir`` -> ``registrar`` with a minimal context (run id,
empty params, simple ``ti``/``dag_run`` objects). Connections come from ``AIRFLOW_CONN_*`` variables
set by the caller. Writes to OUT_JSON: each step's wall time, how long the pg_dump inside ``copia``
ran, the XCom of ``comprimir`` and this process's peak memory (``RUSAGE_SELF``: all its threads,
zstd's workers included; children are measured from outside, see :mod:`bench.procs`).

``airflow.sdk`` is imported before the clock starts: every Airflow task process has it loaded
already, so its import is Airflow's cost (measured separately), not the tasks' work.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

#: (program name, started, ended) of every process the tasks start, in perf_counter seconds.
SPAWNED: list[dict] = []


class _TimedPopen(subprocess.Popen):
    """Popen that notes when each child started and exactly when it exited.

    The exit is seen by ``waitid(WNOWAIT)`` in a thread, which does not reap the child, so the tasks'
    own ``wait()`` behaves as before. Should the caller reap it first (a short-lived helper), the
    moment it was reaped stands in (the callers poll, so that is at most ~50 ms late).
    """

    def __init__(self, args, *rest, **kwargs):
        started = time.perf_counter()
        self._record = {"name": os.path.basename(str(args[0] if isinstance(args, list | tuple) else args)),
                        "started": started, "ended": None, "reaped": None}
        super().__init__(args, *rest, **kwargs)
        SPAWNED.append(self._record)
        record = self._record

        def wait_for_exit(pid=self.pid):
            try:
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                record["ended"] = time.perf_counter()
            except ChildProcessError:
                pass

        threading.Thread(target=wait_for_exit, daemon=True).start()

    def _try_wait(self, wait_flags):
        pid, status = super()._try_wait(wait_flags)
        if pid == self.pid and self._record["reaped"] is None:
            self._record["reaped"] = time.perf_counter()
        return pid, status


def _seconds(record: dict) -> float | None:
    ended = record["ended"] or record["reaped"]
    return ended - record["started"] if ended else None


def main() -> None:
    target, settings, run_id, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import airflow.sdk  # noqa: F401 - Airflow's own import, loaded in every task process
    from airflow.sdk import BaseHook  # noqa: F401
    from airflow.sdk.exceptions import AirflowSkipException  # noqa: F401

    subprocess.Popen = _TimedPopen  # instrumentation only: see the class
    ready_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Python + airflow.sdk, before any work
    from respaldo import tasks

    context = {
        "run_id": run_id,
        "params": {},
        "logical_date": None,
        "ti": SimpleNamespace(try_number=1, task_id=f"{target['id']}.copia"),
        "dag_run": SimpleNamespace(run_type="manual"),
    }
    steps: dict[str, float] = {}
    peaks: dict[str, int] = {}  # this process's high-water mark (KiB) when each step ended

    def timed(name, *args):
        begin = time.perf_counter()
        result = getattr(tasks, name)(target, settings, *args, **context)
        steps[name] = time.perf_counter() - begin
        peaks[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return result

    copied = timed("copia")
    checked = timed("verificar_fecha", copied)
    done = timed("comprimir", checked)
    timed("registrar", done)
    dumps = [p for p in SPAWNED if p["name"] == "pg_dump"]
    with open(out, "w", encoding="utf-8") as handle:
        json.dump({
            "steps": steps,
            "work_s": sum(steps.values()),
            "pg_dump_s": _seconds(dumps[0]) if len(dumps) == 1 else None,
            "artifact": done,
            "spawned": [{"name": p["name"], "seconds": _seconds(p), "exact": p["ended"] is not None}
                        for p in SPAWNED],
            "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "ready_maxrss_kib": ready_kib,
            "maxrss_after_step_kib": peaks,
        }, handle)


if __name__ == "__main__":
    main()
