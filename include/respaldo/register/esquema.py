"""The register's schema in PostgreSQL, created and evolved by numbered migrations.

Each migration is applied once, under an advisory lock so concurrent tasks do not race; the version
in force is kept in ``respaldo.schema_migrations``. Every connection to the register goes through
:func:`connect`, which migrates first, so no code ever meets an older schema.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator

from respaldo.errors import RegisterError

SCHEMA = "respaldo"
TABLE = f"{SCHEMA}.control_backup"
NOTIFICATIONS = f"{SCHEMA}.notificacion"
FOLLOWUP_STATES = f"{SCHEMA}.seguimiento_estado"
FOLLOWUP_CLASSES = f"{SCHEMA}.seguimiento_clase"
FOLLOWUP_AIRFLOW = f"{SCHEMA}.seguimiento_airflow"
DRILLS = f"{SCHEMA}.simulacro"
_LOCK_KEY = 0x7265737061  # "respa": serialises migrations across workers

#: A row's date, the one the pages and the FT-GTI-004 sheet order and filter by: the copy's creation
#: date when there is a copy, else the slot it was for (a missing slot, a copy that failed before
#: existing), else when the row was written (a manual run without a slot that failed). Indexed by
#: migration 5: queries must spell it exactly like this for PostgreSQL to use the index.
ROW_DATE = "(coalesce(backup_at, logical_date, finished_at))"

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "control_backup: the FT-GTI-004 register",
        f"""
        CREATE TABLE IF NOT EXISTS {TABLE} (
            id               bigserial PRIMARY KEY,
            target           text        NOT NULL,
            kind             text        NOT NULL,
            frequency        text        NOT NULL,
            mechanism        text        NOT NULL,
            dag_id           text        NOT NULL,
            run_id           text        NOT NULL,
            run_type         text,
            logical_date     timestamptz,
            backup_at        timestamptz,
            started_at       timestamptz,
            finished_at      timestamptz NOT NULL DEFAULT now(),
            status           text        NOT NULL CHECK (status IN ('success', 'failed')),
            step             text,
            artifact_path    text,
            original_bytes   bigint,
            compressed_bytes bigint,
            sha256           text,
            compression      text,
            responsible      text,
            notes            text,
            error            text,
            try_number       integer,
            updated_at       timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT control_backup_target_run UNIQUE (target, run_id)
        );
        CREATE INDEX IF NOT EXISTS control_backup_target_backup_at ON {TABLE} (target, backup_at DESC);
        COMMENT ON TABLE {TABLE} IS 'Formato de control de backup FT-GTI-004';
        """,
    ),
    (
        2,
        "manual copies: the delivered file's own name, date and checksum",
        f"""
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS original_name text;
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS original_date timestamptz;
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS original_sha256 text;
        """,
    ),
    (
        3,
        "follow-up and alerts: missing slots, re-verification, every alert attempt",
        f"""
        ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS control_backup_status_check;
        ALTER TABLE {TABLE} ADD CONSTRAINT control_backup_status_check
            CHECK (status IN ('success', 'failed', 'missing'));
        -- a 'missing' row later covered by a rerun or backfill of its slot points at the row that did
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS superseded_by bigint REFERENCES {TABLE} (id);
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS verified_at timestamptz;
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS verify_status text
            CHECK (verify_status IN ('intact', 'damaged'));
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS verify_error text;
        CREATE INDEX IF NOT EXISTS control_backup_target_logical_date ON {TABLE} (target, logical_date);
        CREATE INDEX IF NOT EXISTS control_backup_finished_at ON {TABLE} (finished_at DESC);
        CREATE TABLE IF NOT EXISTS {NOTIFICATIONS} (
            id              bigserial   PRIMARY KEY,
            key             text        NOT NULL UNIQUE,
            kind            text        NOT NULL,
            target          text,
            run_id          text,
            recipients      text[]      NOT NULL,
            subject         text        NOT NULL,
            body            text        NOT NULL,
            status          text        NOT NULL CHECK (status IN ('sending', 'sent', 'failed')),
            attempts        integer     NOT NULL DEFAULT 0,
            last_error      text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            last_attempt_at timestamptz,
            sent_at         timestamptz
        );
        CREATE INDEX IF NOT EXISTS notificacion_unsent ON {NOTIFICATIONS} (status) WHERE status <> 'sent';
        COMMENT ON TABLE {NOTIFICATIONS} IS 'Cada aviso por correo: a quién, cuándo, enviado o fallido y por qué';
        """,
    ),
    (
        4,
        "follow-up: last known state per target and of Airflow, slots settled per class, indexes for its reads",
        f"""
        CREATE TABLE IF NOT EXISTS {FOLLOWUP_STATES} (
            target      text        PRIMARY KEY,
            state       text        NOT NULL
                CHECK (state IN ('al_dia', 'atrasado', 'fallido', 'vencido', 'sospechoso')),
            others      text[]      NOT NULL DEFAULT '{{}}',
            -- when the state began, by the register's facts (the failed row, the missed slot...)
            since       timestamptz,
            detail      text,
            first_seen  timestamptz NOT NULL DEFAULT now(),
            changed_at  timestamptz NOT NULL DEFAULT now(),
            checked_at  timestamptz NOT NULL DEFAULT now()
        );
        COMMENT ON TABLE {FOLLOWUP_STATES} IS 'Seguimiento: último estado conocido de cada objetivo';
        -- every slot of the class up to settled_until has its success or missing row, for this schedule
        CREATE TABLE IF NOT EXISTS {FOLLOWUP_CLASSES} (
            frequency     text        PRIMARY KEY,
            schedule      text        NOT NULL,
            settled_until timestamptz NOT NULL,
            updated_at    timestamptz NOT NULL DEFAULT now()
        );
        -- Airflow's problems already told (a paused DAG, a dead scheduler...): mailed when they appear
        CREATE TABLE IF NOT EXISTS {FOLLOWUP_AIRFLOW} (
            key      text        PRIMARY KEY,
            text     text        NOT NULL,
            since    timestamptz NOT NULL DEFAULT now(),
            seen_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX IF NOT EXISTS control_backup_target_finished ON {TABLE} (target, finished_at DESC);
        CREATE INDEX IF NOT EXISTS control_backup_open_missing ON {TABLE} (target, logical_date)
            WHERE status = 'missing' AND superseded_by IS NULL;
        """,
    ),
    (
        5,
        "the register's pages and monthly sheet: rows in order of their date (ROW_DATE), by target too",
        f"""
        CREATE INDEX IF NOT EXISTS control_backup_row_date ON {TABLE} ({ROW_DATE} DESC, id DESC);
        CREATE INDEX IF NOT EXISTS control_backup_target_row_date ON {TABLE} (target, {ROW_DATE} DESC, id DESC);
        """,
    ),
    (
        6,
        "restore drills: what each copy held when taken (figures), and every drill with its verdict",
        f"""
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS figures jsonb;
        COMMENT ON COLUMN {TABLE}.figures IS
            'Cifras de la copia al tomarla: filas por tabla, o archivos, bytes y muestra de sumas';
        CREATE TABLE IF NOT EXISTS {DRILLS} (
            id                 bigserial   PRIMARY KEY,
            target             text        NOT NULL,
            kind               text        NOT NULL,
            control_id         bigint      REFERENCES {TABLE} (id),
            dag_id             text,
            run_id             text,
            try_number         integer,
            -- where the copy was restored: the drill server's connection (or 'local') and the scratch's name
            server             text,
            scratch            text,
            -- the measured restore: from the check of the copy to the data back in place
            started_at         timestamptz NOT NULL DEFAULT now(),
            finished_at        timestamptz,
            -- NULL while the drill runs; a drill killed before its verdict is settled 'fallido' later
            verdict            text CHECK (verdict IN ('aprobado', 'fallido')),
            figures            jsonb,
            error              text,
            scratch_dropped_at timestamptz,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX IF NOT EXISTS simulacro_target_started ON {DRILLS} (target, started_at DESC, id DESC);
        CREATE INDEX IF NOT EXISTS simulacro_unsettled ON {DRILLS} (id) WHERE verdict IS NULL;
        COMMENT ON TABLE {DRILLS} IS 'Simulacros de restauración: qué copia se restauró, cuánto tardó, el veredicto';
        """,
    ),
    (
        7,
        "lifecycle: retention marks deleted copies; the copy on the external medium and its check",
        f"""
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS deleted_at timestamptz;
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS deletion_reason text;
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS external_uri text;
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS external_sha256 text;
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS external_verified_at timestamptz;
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS external_status text
            CHECK (external_status IN ('pending', 'success', 'failed', 'deleted'));
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS external_error text;
        ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS external_deleted_at timestamptz;
        COMMENT ON COLUMN {TABLE}.deleted_at IS 'Cuándo la retención borró el archivo (la fila nunca se borra)';
        COMMENT ON COLUMN {TABLE}.deletion_reason IS 'Por qué la retención borró el archivo';
        COMMENT ON COLUMN {TABLE}.external_uri IS 'Dónde quedó la copia en el medio externo';
        COMMENT ON COLUMN {TABLE}.external_status IS 'Copia en el medio externo: pending, success, failed, deleted';
        CREATE INDEX IF NOT EXISTS control_backup_kept ON {TABLE} (target, backup_at DESC)
            WHERE status = 'success' AND deleted_at IS NULL;
        """,
    ),
]


def migrate(conn) -> int:
    """Create or evolve the register's schema; return the schema version now in force."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations ("
            " version integer PRIMARY KEY, description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur.execute(f"SELECT version FROM {SCHEMA}.schema_migrations")
        applied = {version for (version,) in cur.fetchall()}
        # Every version the database lacks, not only those above its highest: migrations written on
        # separate branches may arrive out of order (5 before 4), and each must still run once.
        for version, description, sql in MIGRATIONS:
            if version not in applied:
                cur.execute(sql)
                cur.execute(
                    f"INSERT INTO {SCHEMA}.schema_migrations (version, description) VALUES (%s, %s)",
                    (version, description),
                )
                applied.add(version)
    conn.commit()
    return max(applied, default=0)


@contextlib.contextmanager
def connect(conn_id: str) -> Generator:
    """A connection to the register (schema migrated), closed on exit; failures are :class:`RegisterError`.

    The driver's messages name host and user, never the password.
    """
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    try:
        conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    except Exception as err:
        raise RegisterError(
            f"No se pudo abrir el registro FT-GTI-004 (conexión «{conn_id}»): {str(err).strip()}"
        ) from err
    try:
        migrate(conn)
        yield conn
    except RegisterError:
        raise
    except Exception as err:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise RegisterError(f"No se pudo leer o escribir el registro FT-GTI-004 (conexión «{conn_id}»): "
                            f"{str(err).strip()}") from err
    finally:
        conn.close()
