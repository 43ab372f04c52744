"""DAG-file parse probe, run in a fresh interpreter each time.

    python -m bench.parse baseline OUT_JSON          # import Airflow as the DAG processor does
    python -m bench.parse parse DAG_FILE OUT_JSON    # the same, then parse DAG_FILE with DagBag

The caller times the whole process; this also reports the in-process DagBag time, the number of DAGs
and tasks found and its own peak memory.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def main() -> None:
    mode = sys.argv[1]
    began = time.perf_counter()
    import airflow.sdk  # noqa: F401
    from airflow.dag_processing.dagbag import DagBag

    imported = time.perf_counter()
    result = {"import_s": imported - began}
    if mode == "parse":
        bag = DagBag(dag_folder=sys.argv[2])
        if bag.import_errors:
            raise SystemExit(f"import errors: {bag.import_errors}")
        result.update(dagbag_s=time.perf_counter() - imported, dags=len(bag.dags),
                      tasks=sum(len(d.tasks) for d in bag.dags.values()))
    result["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(sys.argv[-1], "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    # Leave without tearing down thousands of objects: the measure is importing and parsing, and both
    # modes end the same way.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
