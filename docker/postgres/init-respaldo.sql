-- The register database of respaldo (form FT-GTI-004), beside Airflow's metadata database.
--
-- Run once by the postgres image on the first start of an empty volume
-- (/docker-entrypoint-initdb.d), as the superuser POSTGRES_USER. The password comes from the
-- environment (RESPALDO_DB_PASSWORD, set in docker-compose.yaml from .env), never from this file.
-- respaldo creates the schema `respaldo` and the table `respaldo.control_backup` itself, as the
-- owner of this database, through the Airflow connection `respaldo_registro`.

\set ON_ERROR_STOP on
\getenv respaldo_password RESPALDO_DB_PASSWORD

CREATE ROLE respaldo LOGIN PASSWORD :'respaldo_password';
COMMENT ON ROLE respaldo IS 'respaldo: escribe el formato de control de backup FT-GTI-004';

CREATE DATABASE respaldo OWNER respaldo ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE respaldo FROM PUBLIC;
COMMENT ON DATABASE respaldo IS 'Registro de copias de seguridad (formato FT-GTI-004)';
