"""Imported by each Celery worker when it starts, before it forks its pool: preloads what task processes import.

Celery imports the modules of its ``imports`` setting in the worker's main process at start-up; respaldo's
deployment sets it through Airflow's ``[celery] extra_celery_config``
(``AIRFLOW__CELERY__EXTRA_CELERY_CONFIG='{"imports": ["respaldo.precarga_celery"]}'``). The pool processes
forked after it, and the task processes each of them forks, inherit the imported modules
(:mod:`respaldo.precarga` says what and why).
"""

from respaldo.precarga import preload

PRELOADED = preload()
