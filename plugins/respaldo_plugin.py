"""respaldo's Airflow plugin: its timetable, and the scheduler listener that keeps its pools in place."""

from airflow.plugins_manager import AirflowPlugin

from respaldo.pools import PoolGuard
from respaldo.timetables import EveryNDaysTimetable


class RespaldoPlugin(AirflowPlugin):
    name = "respaldo"
    timetables = [EveryNDaysTimetable]
    listeners = [PoolGuard()]
