"""Airflow DAGs of respaldo: one DAG per frequency class of the inventory.

The inventory is ``$RESPALDO_INVENTORY`` (default ``include/inventory.yaml``). A bad inventory makes
this file fail to import, so Airflow lists it under import errors with every problem found, instead
of silently dropping the backups.
"""

from respaldo.dag_factory import build_dags

globals().update(build_dags())
