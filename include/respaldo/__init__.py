"""respaldo: the Gobernación del Putumayo's backup procedure as Apache Airflow DAGs."""

__version__ = "0.1.0"
