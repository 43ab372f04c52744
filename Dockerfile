# respaldo on the official Airflow image: the deployment `docker compose up` builds this.
#
# Adds what the backup tasks run besides Python:
#   - pg_dump / pg_restore / psql of PostgreSQL ${PG_MAJOR} from the PGDG apt repository
#     (apt.postgresql.org), not Debian's. How the major is chosen when the sources run different
#     majors: pg_dump refuses to dump a server NEWER than itself ("server version mismatch"), and
#     dumps every older one (back to 9.2). So the image carries the NEWEST major PGDG publishes, one
#     client for all the sources; `respaldo check` fails, naming the client to install, when a source
#     runs a newer major than this (then rebuild with `--build-arg PG_MAJOR=N`). The price: an archive
#     written by pg_dump N needs pg_restore N or newer to restore (its format version), which this
#     image has (`respaldo restaurar`, the drills) and a machine restoring by hand installs from PGDG.
#     The major's bin directory goes first on PATH, so the pg_wrapper in /usr/bin can never pick
#     another installed major.
#   - zstd (step 5, and restoring by hand), age (encrypted copies: `encryption` in the inventory),
#     openssh-client (remote second copies),
#     fonts-dejavu-core (the FT-GTI-004 PDF: DejaVu Sans prints accents and ñ),
#     default-mysql-client (mariadb / mariadb-dump for MySQL and MariaDB sources; the base image's
#     mariadb-client from MariaDB's repository satisfies it).
#   - the Python requirements pinned in requirements.txt (Airflow's constraint files are not
#     reachable from here; requirements.txt is our own fully pinned resolution, including
#     apache-airflow==3.3.2 itself, so pip keeps the image's Airflow and aligns the rest). It holds
#     production packages only (the celery provider, celery 5.6.3 and redis included); the test
#     tools (pytest, ruff, aiosmtpd, playwright...) are in requirements-dev.txt, never installed here.
#
# The respaldo package is not pip-installed: docker-compose.yaml mounts ./include at
# /opt/airflow/include and PYTHONPATH points there, so editing the code needs no rebuild.
FROM apache/airflow:3.3.2-python3.11

# The newest PostgreSQL major PGDG publishes (November 2026). Never lower than a source's major.
ARG PG_MAJOR=18

USER root

# PGDG repository, following https://www.postgresql.org/download/linux/debian/ (manual setup).
# The codename is read from the base image, so the build keeps working if the base moves on. The
# file name is the one the base image uses, so this replaces its entry instead of adding a second
# one with another Signed-By (which apt rejects).
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl; \
    install -d /usr/share/postgresql-common/pgdg; \
    curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
        https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    . /etc/os-release; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        "postgresql-client-${PG_MAJOR}" \
        zstd \
        age \
        openssh-client \
        default-mysql-client \
        fonts-dejavu-core \
        build-essential \
        pkg-config \
        libmariadb-dev-compat; \
    apt-get autoremove -yqq --purge; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*
# build-essential, pkg-config and libmariadb-dev-compat are there only so pip can build
# mysqlclient (required by the mysql provider) if the pinned version differs from the image's.

ENV PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}"

# The `respaldo` command (the console script of pyproject.toml) without installing the package:
# it runs the mounted code, like the DAGs do.
RUN printf '#!/bin/sh\nexec python -m respaldo.cli "$@"\n' > /usr/local/bin/respaldo \
    && chmod 0755 /usr/local/bin/respaldo

# Backups live on the `respaldos` named volume mounted here. A fresh named volume copies this
# directory's owner and mode; airflow-init also chowns it to AIRFLOW_UID for other UIDs.
RUN install -d -o airflow -g 0 -m 0770 /var/backups/respaldo

USER airflow

COPY --chown=airflow:0 requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt

ENV PYTHONPATH=/opt/airflow/include \
    RESPALDO_INVENTORY=/opt/airflow/include/inventory.docker.yaml
