"""``make demo``: respaldo running for real on this machine, no Docker, in about a minute.

Starts a throwaway PostgreSQL (Airflow's metadata, the FT-GTI-004 register and two demo databases
with realistic data), an SMTP catcher that prints every alert it receives, and Airflow (API server,
scheduler, DAG processor) on http://127.0.0.1:8080 with the DAGs of ``.demo/inventory.yaml``. It
runs each DAG once, shows what was made, and keeps everything up until Ctrl-C, then stops all it
started. Every run starts from a clean ``.demo/``.

Messages are for the person trying the demo, so they are in Spanish.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

from devtools.airflow_stack import FINISHED, VENV_BIN, AirflowStack, StackError
from devtools.demo_data import financiero_sql, sistema_informacion_sql
from devtools.servers import PostgresServer, SmtpServer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / ".demo"
PORT = 8080
ROWS = 50_000
DAGS = ["respaldo_diario", "respaldo_financiero", "respaldo_servidores_virtuales"]
#: Run once the copies exist: the restore drills, then the follow-up that watches everything.
AFTER = ["respaldo_simulacro", "respaldo_seguimiento"]

INVENTORY = """\
# Inventario de la demostración (paso 1 del procedimiento): qué se respalda, cada cuánto y dónde.
# Lo escribe `make demo` en cada arranque. Las claves NO van aquí: cada conn_id es una conexión de Airflow.
organization: Gobernación del Putumayo (demostración)
timezone: America/Bogota
storage:
  root: {root}
register:
  conn_id: respaldo_registro
drills:
  conn_id: pg_simulacros           # donde los simulacros restauran, a modo de prueba, las bases
alerts:
  smtp_conn_id: smtp_demo
  email: [sistemas@example.gov.co]
  from_email: respaldo@example.gov.co
frequencies:
  financiero:
    schedule: ["0 13 * * *", "0 22 * * *"]
    description: Bases de datos del sistema financiero, dos veces al día.
    retries: 1
    retry_delay_minutes: 1
  diario:
    schedule: "0 23 * * *"
    description: Bases de datos de los demás sistemas de información y portales web, una vez al día.
    retries: 1
    retry_delay_minutes: 1
  servidores_virtuales:
    every_days: 8
    at: "02:00"
    description: Servidores virtuales, una vez cada ocho días (sin objetivos en la demostración).
targets:
  - id: financiero_pg
    kind: postgres
    frequency: financiero
    mechanism: automatic
    conn_id: pg_financiero
    database: financiero
    responsible: Profesional universitario área de sistemas
    description: Sistema financiero (presupuesto, contabilidad, tesorería)
  - id: sistema_informacion_pg
    kind: postgres
    frequency: diario
    mechanism: automatic
    conn_id: pg_sistemas
    database: sistema_informacion
    responsible: Profesional universitario área de sistemas
    description: Sistema de información misional (trámites y ciudadanos)
"""


def say(message: str = "") -> None:
    print(message, flush=True)


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def postgres_conn(server: PostgresServer, user: str, password: str, database: str) -> str:
    return json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": server.port, "login": user,
                       "password": password, "schema": database})


class Demo:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.pg: PostgresServer | None = None
        self.smtp: SmtpServer | None = None
        self.stack: AirflowStack | None = None
        self._mail_watch = threading.Event()
        self._load_error: Exception | None = None

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.0f} s"

    # --- start --------------------------------------------------------------------------------

    def start(self) -> None:
        shutil.rmtree(DEMO, ignore_errors=True)
        (DEMO / "respaldos").mkdir(parents=True)

        say("Iniciando PostgreSQL de la demostración...")
        self.pg = PostgresServer(password=secrets.token_urlsafe(18)).start()
        passwords = {role: secrets.token_urlsafe(18) for role in ("airflow", "registrador", "respaldo_lector",
                                                                       "simulador")}
        self.pg.psql(f"CREATE ROLE airflow LOGIN PASSWORD '{passwords['airflow']}'")
        self.pg.psql("CREATE DATABASE airflow OWNER airflow")
        self.pg.psql(f"CREATE ROLE registrador LOGIN PASSWORD '{passwords['registrador']}'")
        self.pg.psql("CREATE DATABASE registro OWNER registrador")
        self.pg.psql("CREATE DATABASE financiero")
        self.pg.psql("CREATE DATABASE sistema_informacion")
        # The backup role gets the least it needs: log in and read every table (pg_read_all_data).
        self.pg.create_backup_role("respaldo_lector", passwords["respaldo_lector"])
        # The restore drills restore into scratch databases this role creates and drops (in production a server
        # of their own; the demo has only one).
        self.pg.psql(f"CREATE ROLE simulador LOGIN CREATEDB PASSWORD '{passwords['simulador']}'")
        loader = threading.Thread(target=self._load_data, daemon=True)
        loader.start()

        self.smtp = SmtpServer().start()
        threading.Thread(target=self._print_mail, daemon=True).start()

        inventory = DEMO / "inventory.yaml"
        inventory.write_text(INVENTORY.format(root=DEMO / "respaldos"), encoding="utf-8")
        register_conn = postgres_conn(self.pg, "registrador", passwords["registrador"], "registro")
        metadata_url = (f"postgresql+psycopg://airflow:{quote(passwords['airflow'], safe='')}@127.0.0.1:"
                        f"{self.pg.port}/airflow")
        env = {
            "RESPALDO_INVENTORY": str(inventory),
            "AIRFLOW_CONN_RESPALDO_REGISTRO": register_conn,
            "AIRFLOW_CONN_PG_FINANCIERO": postgres_conn(self.pg, "respaldo_lector", passwords["respaldo_lector"],
                                                        "financiero"),
            "AIRFLOW_CONN_PG_SISTEMAS": postgres_conn(self.pg, "respaldo_lector", passwords["respaldo_lector"],
                                                      "sistema_informacion"),
            "AIRFLOW_CONN_SMTP_DEMO": self.smtp.connection_json(),
            "AIRFLOW_CONN_PG_SIMULACROS": postgres_conn(self.pg, "simulador", passwords["simulador"], "postgres"),
        }
        # The UI login is written before Airflow starts so the follow-up (respaldo_seguimiento and the console's
        # `respaldo seguimiento`) can ask Airflow's REST API for its health with it.
        home = DEMO / "airflow"
        home.mkdir()
        ui_password = secrets.token_urlsafe(12)
        (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": ui_password}))
        env["AIRFLOW_CONN_RESPALDO_AIRFLOW_API"] = json.dumps({
            "conn_type": "http", "host": "127.0.0.1", "port": PORT, "login": "admin", "password": ui_password})
        # What the console's commands (`respaldo registro`, `seguimiento`, `verificar`, `restaurar`) need, kept
        # out of argv and the console.
        env_file = DEMO / "registro.env"
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"{key}='{value}'\n" for key, value in {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "RESPALDO_INVENTORY": str(inventory),
            "AIRFLOW_CONN_RESPALDO_REGISTRO": register_conn,
            "AIRFLOW_CONN_SMTP_DEMO": env["AIRFLOW_CONN_SMTP_DEMO"],
            "AIRFLOW_CONN_RESPALDO_AIRFLOW_API": env["AIRFLOW_CONN_RESPALDO_AIRFLOW_API"],
        }.items()))

        say("Iniciando Airflow (migración de la base de metadatos, API, scheduler, procesador de DAG)...")
        self.stack = AirflowStack(home=home, database_url=metadata_url, extra_env=env, port=PORT,
                                  timezone="America/Bogota")  # the inventory's
        self.stack.start(timeout=180)
        self.stack.command([str(VENV_BIN / "respaldo"), "pools"])
        for dag_id in DAGS + AFTER:
            self.stack.api.wait_for_dag(dag_id, timeout=120)
        say(f"Airflow responde en {self.stack.base_url} ({self.elapsed()}).")

        loader.join()
        if self._load_error is not None:
            raise self._load_error
        say(f"Datos de demostración cargados ({self.elapsed()}).")
        # Unpaused, a DAG follows its schedule; with catchup=False Airflow also runs at once the latest
        # slot already due, so the register may show a scheduled copy beside the manual one.
        for dag_id in DAGS:
            self.stack.api.unpause(dag_id)
        say(f"Ejecutando cada DAG una vez ({', '.join(DAGS)})...")
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        form = {"responsable": "Demostración make demo", "observaciones": "primera copia de la demostración"}
        for dag_id in DAGS:
            self.stack.api.trigger(dag_id, form, logical_date=now)
        self._wait_for_all_runs(DAGS)
        # With the copies made: a restore drill of each, then the follow-up, which watches both (unpaused, as
        # in production, so it does not report them paused).
        say(f"Simulacro de restauración y seguimiento ({', '.join(AFTER)})...")
        for dag_id in AFTER:
            self.stack.api.unpause(dag_id)
            self.stack.api.wait_for_run(dag_id, self.stack.api.trigger(dag_id, logical_date=None), timeout=300)
        self._wait_for_all_runs(DAGS + AFTER)
        self._report()

    def _wait_for_all_runs(self, dags: list[str], timeout: float = 300) -> None:
        """Wait until no run of these DAGs is pending, the scheduled ones created by unpausing included."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 3:
            pending = [run["dag_run_id"] for dag_id in dags for run in self.stack.api.runs(dag_id)
                       if run["state"] not in FINISHED]
            quiet = 0 if pending else quiet + 1
            if time.monotonic() > deadline:
                raise StackError(f"ejecuciones sin terminar después de {timeout:.0f} s: {', '.join(pending)}")
            time.sleep(1)

    def _load_data(self) -> None:
        try:
            self.pg.psql(financiero_sql(ROWS), database="financiero")
            self.pg.psql(sistema_informacion_sql(ROWS), database="sistema_informacion")
        except Exception as err:  # reported by the main thread after join()
            self._load_error = err

    def _print_mail(self) -> None:
        seen = 0
        while not self._mail_watch.wait(0.5):
            messages = list(self.smtp.messages)
            for message in messages[seen:]:
                say(f"[correo recibido] {message['Subject']}")
            seen = len(messages)

    # --- report -------------------------------------------------------------------------------

    def _report(self) -> None:
        from respaldo.process import human_bytes

        say()
        say("Ejecuciones:")
        for dag_id in DAGS + AFTER:
            for run in self.stack.api.runs(dag_id):
                kind = {"manual": "manual", "scheduled": "programada"}.get(run["run_type"], run["run_type"])
                say(f"  {dag_id}: {kind}, {'exitosa' if run['state'] == 'success' else 'FALLIDA'} "
                    f"({run['dag_run_id']})")
        say()
        say("Respaldos hechos (cada uno con su .sha256 al lado):")
        for target, status, path, original, compressed in self._register_rows():
            if status == "success":
                say(f"  {target}: {path} ({human_bytes(original)} -> {human_bytes(compressed)})")
            else:
                say(f"  {target}: FALLÓ (vea el registro)")
        say()
        say("Registro FT-GTI-004 (tabla respaldo.control_backup, base «registro» en "
            f"127.0.0.1:{self.pg.port}):")
        sheet = self.stack.command([str(VENV_BIN / "respaldo"), "registro", str(DEMO / "inventory.yaml")])
        say("  " + sheet.stdout.rstrip().replace("\n", "\n  "))
        say()
        say("=" * 78)
        say(f"Airflow:      {self.stack.base_url}")
        say(f"Registro:     {self.stack.base_url}/respaldo/registro (en el menú de Airflow: «Registro FT-GTI-004»; "
            "hoja del mes en XLSX y PDF)")
        say(f"Usuario:      {self.stack.username}")
        say(f"Contraseña:   {self.stack.password}")
        say(f"Inventario:   {DEMO / 'inventory.yaml'}")
        say(f"Respaldos:    {DEMO / 'respaldos'}")
        say("Por consola:  set -a; . .demo/registro.env; set +a")
        say("              .venv/bin/respaldo registro [--pdf hoja.pdf]   (también seguimiento, verificar, restaurar)")
        say("Horas:        las páginas de respaldo muestran America/Bogota; la interfaz de Airflow, la zona del "
            "navegador (menú Usuario › Timezone)")
        say(f"Logs:         {DEMO / 'airflow'} (api-server.log, scheduler.log, dag-processor.log, logs/)")
        say("Los correos de aviso que lleguen se muestran aquí.")
        say(f"Lista en {self.elapsed()}. Ctrl-C para detener.")
        say("=" * 78)

    def _register_rows(self) -> list[tuple]:
        proc = self.pg.psql(
            "SELECT target, status, coalesce(artifact_path, ''), coalesce(original_bytes, 0), "
            "coalesce(compressed_bytes, 0) FROM respaldo.control_backup ORDER BY target, backup_at",
            database="registro",
        )
        rows = []
        for line in proc.stdout.splitlines():
            target, status, path, original, compressed = line.split("|")
            rows.append((target, status, path, int(original), int(compressed)))
        return rows

    # --- stop ---------------------------------------------------------------------------------

    def stop(self) -> None:
        say("Deteniendo Airflow, PostgreSQL y el servidor de correo...")
        self._mail_watch.set()
        if self.stack is not None:
            self.stack.stop()
        if self.smtp is not None:
            self.smtp.stop()
        if self.pg is not None:
            self.pg.cleanup()
        say("Demostración detenida. Los respaldos y logs quedan en .demo/ hasta el próximo `make demo`.")


def main() -> int:
    # SIGTERM ends the demo like Ctrl-C does: through the cleanup below, leaving no process behind.
    # Set both explicitly: a shell starting the demo in the background may have left SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    os.chdir(ROOT)
    if port_in_use(PORT):
        say(f"El puerto {PORT} ya está ocupado (¿otra demostración sigue corriendo?). Deténgala con Ctrl-C o "
            "libere el puerto y vuelva a intentar.")
        return 1
    demo = Demo()
    code = 0
    try:
        demo.start()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say()
    except StackError as err:
        say(f"No se pudo poner en marcha la demostración: {err}")
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
