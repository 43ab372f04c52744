"""Run one DAG through Airflow with ``dag.test()`` and report where the time went.

    python -m bench.dagrun DAG_FILE DAG_ID OUT_JSON

The caller sets the Airflow environment (metadata DB, AIRFLOW_CONN_*, RESPALDO_INVENTORY). Writes:
the time to import Airflow, to parse the DAG file, the wall time of ``dag.test()`` (sync the DAG to
the metadata DB, create the run, run every task in process), and each task instance's state and
start/end as Airflow recorded them.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    dag_file, dag_id, out = sys.argv[1:4]
    began = time.perf_counter()
    import airflow.sdk  # noqa: F401
    from airflow.dag_processing.dagbag import DagBag

    imported = time.perf_counter()
    bag = DagBag(dag_folder=dag_file)
    if bag.import_errors:
        raise SystemExit(f"import errors: {bag.import_errors}")
    dag = bag.get_dag(dag_id)
    parsed = time.perf_counter()
    run = dag.test()
    finished = time.perf_counter()
    tis = [{"task_id": ti.task_id, "state": str(getattr(ti.state, "value", ti.state)),
            "duration_s": (ti.end_date - ti.start_date).total_seconds() if ti.end_date and ti.start_date else None}
           for ti in run.get_task_instances()]
    with open(out, "w", encoding="utf-8") as handle:
        json.dump({"import_s": imported - began, "parse_s": parsed - imported, "test_s": finished - parsed,
                   "state": str(getattr(run.state, "value", run.state)), "run_id": run.run_id,
                   "task_instances": tis}, handle)


if __name__ == "__main__":
    main()
