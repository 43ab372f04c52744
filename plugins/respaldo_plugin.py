"""Registers respaldo's timetable so the scheduler and API server can deserialize the DAGs."""

from airflow.plugins_manager import AirflowPlugin

from respaldo.timetables import EveryNDaysTimetable


class RespaldoPlugin(AirflowPlugin):
    name = "respaldo"
    timetables = [EveryNDaysTimetable]
