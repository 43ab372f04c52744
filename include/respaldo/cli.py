"""The ``respaldo`` command: check the inventory, count it, check the sources, print the register, restore.

Every message is for the IT office: Spanish, no Python traceback. Exit codes: 0 fine, 1 a problem
was found (listed), 2 the command was used wrongly.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from respaldo.errors import InventoryError, RespaldoError
from respaldo.inventory import INVENTORY_ENV, Inventory, load_inventory
from respaldo.process import human_bytes
from respaldo.sources import source_for

CATEGORIES = ["bases de datos", "portales web", "archivos", "servidores virtuales"]


def _load(path: str | None) -> Inventory:
    return load_inventory(path)


def cmd_validate(args: argparse.Namespace) -> int:
    inventory = _load(args.file)
    print(f"{inventory.path}: inventario válido: {len(inventory.targets)} objetivos en "
          f"{len(inventory.frequencies)} clases de frecuencia "
          f"({', '.join(f'respaldo_{name}' for name in sorted(inventory.frequencies))}).")
    warning = _visibility_warning(inventory)
    if warning:
        print(f"Advertencia: {warning}")
    return 0


#: What the celery provider uses when ``[celery_broker_transport_options] visibility_timeout`` is not set.
CELERY_DEFAULT_VISIBILITY_TIMEOUT = 86400


def _airflow_setting(section: str, key: str) -> str | None:
    """An Airflow setting as Airflow reads it first: ``AIRFLOW__SECTION__KEY``, else ``$AIRFLOW_HOME/airflow.cfg``.

    Read without importing Airflow (seconds), so ``respaldo validate`` stays a quick look at files.
    """
    import configparser

    value = os.environ.get(f"AIRFLOW__{section.upper()}__{key.upper()}")
    if value is not None:
        return value
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow") / "airflow.cfg", encoding="utf-8")
    return parser.get(section, key, fallback=None)


def _visibility_warning(inventory: Inventory) -> str | None:
    """With the CeleryExecutor, a task longer than the broker's visibility timeout is delivered again to another
    worker while the first still runs (Redis): the longest ``timeout_hours`` must fit inside it."""
    if "CeleryExecutor" not in (_airflow_setting("core", "executor") or ""):
        return None
    seconds = int(_airflow_setting("celery_broker_transport_options", "visibility_timeout")
                  or CELERY_DEFAULT_VISIBILITY_TIMEOUT)
    longest = inventory.longest_timeout_hours()
    if longest * 3600 <= seconds:
        return None
    classes = sorted(name for name, f in inventory.frequencies.items() if f.timeout_hours * 3600 > seconds)
    return (f"con CeleryExecutor, el broker vuelve a entregar a otro trabajador toda tarea que dure más de "
            f"{seconds} s ({seconds / 3600:g} h, visibility_timeout), mientras la primera sigue corriendo; "
            f"timeout_hours de {', '.join(classes)} llega a {longest:g} h. Suba "
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT (en segundos) por encima de "
            f"{int(longest * 3600)} en todos los componentes de Airflow, o baje timeout_hours.")


def cmd_inventory(args: argparse.Namespace) -> int:
    """Step 1: how many databases, portals, servers and file sets, by kind and by frequency class."""
    inventory = _load(args.file)
    names = sorted(inventory.frequencies)
    by_cell = Counter((source_for(t.kind).category, t.frequency) for t in inventory.targets)
    by_kind = Counter(t.kind for t in inventory.targets)
    width = max([len(c) for c in CATEGORIES] + [5])
    header = f"{'':<{width}}  " + "  ".join(f"{n:>{max(len(n), 5)}}" for n in names) + "  total"
    print(f"Inventario de {inventory.organization} ({inventory.path})")
    print()
    print(header)
    for category in CATEGORIES:
        cells = [by_cell[(category, n)] for n in names]
        print(f"{category:<{width}}  " + "  ".join(f"{c:>{max(len(n), 5)}}" for c, n in zip(cells, names,
              strict=True)) + f"  {sum(cells):>5}")
    totals = [sum(by_cell[(c, n)] for c in CATEGORIES) for n in names]
    print(f"{'total':<{width}}  " + "  ".join(f"{c:>{max(len(n), 5)}}" for c, n in zip(totals, names,
          strict=True)) + f"  {sum(totals):>5}")
    print()
    print("Por tipo: " + (", ".join(f"{kind} {count}" for kind, count in sorted(by_kind.items())) or "ninguno"))
    mechanisms = Counter(t.mechanism for t in inventory.targets)
    print("Por mecanismo: " + ", ".join(f"{'automático' if m == 'automatic' else 'manual'} {c}"
                                       for m, c in sorted(mechanisms.items())))
    for name in names:
        frequency = inventory.frequencies[name]
        print(f"respaldo_{name}: {frequency.describe(inventory.timezone)}; "
              f"{len(inventory.targets_of(name))} objetivos")
    by_queue = Counter(inventory.queue_of(t) for t in inventory.targets)
    print("Colas de Celery (cada una necesita un trabajador; con LocalExecutor no cuentan): "
          + ", ".join(f"{queue} {by_queue[queue]}" for queue in inventory.queues()))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check that every source answers and the storage folder is writable (network and disk)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    inventory = _load(args.file)
    failures = 0

    def report(ok: bool, what: str, detail: str) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        print(f"[{'OK' if ok else 'FALLA'}] {what}: {detail}")

    root = Path(inventory.storage.root)
    writable = root.is_dir() and os.access(root, os.W_OK)
    report(writable, "carpeta de respaldos",
           f"{root} ({human_bytes(_free(root))} libres)" if writable else f"{root} no existe o no se puede escribir")
    try:
        conn = PostgresHook(postgres_conn_id=inventory.register.conn_id).get_conn()
        conn.close()
        report(True, "registro FT-GTI-004", f"conexión «{inventory.register.conn_id}» responde")
    except Exception as err:
        report(False, "registro FT-GTI-004", f"conexión «{inventory.register.conn_id}»: {str(err).strip()}")
    try:
        from respaldo import pools

        absent = pools.missing(inventory.pools())
        report(True, "pools de Airflow", "todos existen" if not absent else
               f"faltan {', '.join(absent)}: se crean con 1 cupo al empezar la próxima ejecución (o ahora con "
               "`respaldo pools`)")
    except Exception as err:  # noqa: BLE001 - Airflow's database may be out of reach from here
        report(False, "pools de Airflow", f"no se pudo consultar la base de Airflow: {str(err).strip()[:300]}")
    for key, label in (("conn_id", "PostgreSQL"), ("mysql_conn_id", "MySQL/MariaDB")):
        conn_id = getattr(inventory.drills, key)
        if conn_id:
            try:
                report(True, f"servidor de simulacros {label}", _check_drill_server(label, conn_id))
            except Exception as err:  # noqa: BLE001 - reported as a failed check
                report(False, f"servidor de simulacros {label}", str(err).strip())
    warning = _visibility_warning(inventory)
    report(warning is None, "tiempo de visibilidad de Celery", warning or "alcanza para la tarea más larga "
           f"({inventory.longest_timeout_hours():g} h), o no se usa CeleryExecutor")
    for target in sorted(inventory.targets, key=lambda t: t.id):
        try:
            report(True, target.id, _check_target(target))
        except Exception as err:
            report(False, target.id, str(err).strip())
    _check_external(inventory, report)
    _check_encryption(inventory, report)
    return 1 if failures else 0


def _check_encryption(inventory, report) -> None:
    """With targets encrypted: the ``age`` the copies run, and each drill identity file (a path; never read)."""
    from respaldo.hooks.base import minimal_env

    encrypted = {t.id: inventory.encryption_of(t) for t in sorted(inventory.targets, key=lambda t: t.id)
                 if inventory.encryption_of(t) is not None}
    if not encrypted:
        return
    named = ", ".join(list(encrypted)[:5]) + (f" y {len(encrypted) - 5} más" if len(encrypted) > 5 else "")
    try:
        done = subprocess.run(["age", "--version"], capture_output=True, text=True, timeout=30,
                              env=minimal_env())
        version = (done.stdout or done.stderr).strip()
        report(done.returncode == 0, "cifrado", f"«age» {version} cifra las copias de {named}")
    except FileNotFoundError:
        report(False, "cifrado", f"No está instalado «age» en esta máquina: las copias de {named} fallarán "
                                 "(apt-get install age).")
    identities: dict[str, list[str]] = {}
    for target, encryption in encrypted.items():
        if encryption.drill_identity:
            identities.setdefault(encryption.drill_identity, []).append(target)
    for path, targets in identities.items():
        usable = os.access(path, os.R_OK) and Path(path).is_file()
        report(usable, f"clave de simulacros de {', '.join(targets)}",
               f"{path} existe y se puede leer" if usable else
               f"{path} no existe o no se puede leer: los simulacros de estos objetivos quedarán «fallido»")


def _check_external(inventory, report) -> None:
    """Each distinct external medium once: mounted (marker), reachable, credentials accepted, writable."""
    from respaldo.ciclo.externo.tarea import destination_for

    users: dict = {}
    for target in sorted(inventory.targets, key=lambda t: t.id):
        external = inventory.external_of(target)
        if external is not None:
            users.setdefault(external, []).append(target.id)
    for external, targets in users.items():
        named = ", ".join(targets[:5]) + (f" y {len(targets) - 5} más" if len(targets) > 5 else "")
        label = f"medio externo de {named}"
        try:
            report(True, label, destination_for(external).check())
        except Exception as err:  # noqa: BLE001 - reported as a failed check
            report(False, label, str(err).strip())


def _check_drill_server(label: str, conn_id: str) -> str:
    from respaldo.simulacro import destino

    server = destino.server("postgres" if label == "PostgreSQL" else "mysql", conn_id)
    server.leftovers()  # connects and reads the catalogue the drills use
    return f"conexión «{conn_id}» responde ({server.where})"


def _check_target(target) -> str:
    from respaldo.entrega import ManualTarget, open_intake

    if isinstance(target, ManualTarget):
        with open_intake(target.intake) as folder:
            waiting = folder.entries()
            return f"carpeta de entrega {folder.where} ({len(waiting)} archivo(s) esperando)"
    return source_for(target.kind).check(target)


def _free(path: Path) -> int:
    import shutil

    return shutil.disk_usage(path).free


def cmd_pools(args: argparse.Namespace) -> int:
    """Create the Airflow pools that bound concurrent copies per source server."""
    from airflow.models.pool import Pool

    from respaldo import pools

    inventory = _load(args.file)
    names = inventory.pools()
    created = set(pools.ensure(names, slots=args.slots))
    for name in names:
        if name in created:
            print(f"pool {name}: creado con {args.slots} cupo(s)")
        else:
            print(f"pool {name}: ya existe con {Pool.get_pool(name).slots} cupo(s)")
    return 0


def _date(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"fecha no válida «{text}» (use AAAA-MM-DD)") from err


def _month(text: str):
    from respaldo.register.hoja import Period, SheetError

    try:
        return Period.month(text)
    except SheetError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def cmd_register(args: argparse.Namespace) -> int:
    """Print the FT-GTI-004 register (text or CSV), or write the month's sheet as XLSX and PDF."""
    import zoneinfo

    from respaldo import register
    from respaldo.register import consulta

    if args.mes and (args.desde or args.hasta):
        print("Use --mes o --desde/--hasta, no ambos.", file=sys.stderr)
        return 2
    if args.csv and (args.xlsx or args.pdf):
        print("--csv escribe en la salida estándar: úselo aparte de --xlsx y --pdf.", file=sys.stderr)
        return 2
    inventory = _load(args.file)
    zone = zoneinfo.ZoneInfo(inventory.timezone)
    with register.connect(inventory.register.conn_id) as conn:
        if args.objetivo and args.objetivo not in {t.id for t in inventory.targets} | set(consulta.targets(conn)):
            known = sorted({t.id for t in inventory.targets})
            print(f"Objetivo desconocido «{args.objetivo}»: no está en el inventario ni en el registro."
                  f"{_close(args.objetivo, known)}", file=sys.stderr)
            return 1
        if args.xlsx or args.pdf:
            return _write_sheet(args, inventory, zone, conn)
        since = args.mes.bounds(zone)[0] if args.mes else (
            args.desde.replace(tzinfo=args.desde.tzinfo or zone) if args.desde else None)
        until = args.mes.bounds(zone)[1] if args.mes else (
            args.hasta.replace(tzinfo=args.hasta.tzinfo or zone) + dt.timedelta(days=1) if args.hasta else None)
        if args.csv:
            # Every row (superseded missing slots too) and every column the table has today.
            where = consulta.Filter(target=args.objetivo, since=since, until=until, superseded=True)
            drills = _approved_drills(inventory.register.conn_id)
            with consulta.every_column(conn, where, limit=args.limite) as (names, rows):
                _print_csv(names, rows, zone, drills)
            return 0
        where = consulta.Filter(target=args.objetivo, since=since, until=until)
        rows = consulta.page(conn, where, size=args.limite or 10**9).rows

    def cell(row: dict, key: str) -> str:
        value = row.get(key)
        if value is None:
            return ""
        if isinstance(value, dt.datetime):
            return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
        if key in ("original_bytes", "compressed_bytes"):
            return human_bytes(value)
        return str(register.word(key, value))

    columns = [c for c in register.SHEET_COLUMNS if c[0] not in ("sha256", "run_id", "logical_date")]
    columns += [(key, register.LABELS[key]) for key in ("deleted_at", "deletion_reason")]
    drills = _approved_drills(inventory.register.conn_id)
    print(f"FORMATO DE CONTROL DE BACKUP FT-GTI-004 — {inventory.organization}")
    print(f"Fechas en {inventory.timezone}. {len(rows)} registro(s).")
    print()
    print(f"{DRILL_LABEL} de cada objetivo (simulacro: la copia se restauró a modo de prueba y dio lo que registró):")
    for target in sorted({t.id for t in inventory.targets} | set(drills)):
        if args.objetivo and target != args.objetivo:
            continue
        drill = drills.get(target)
        if drill is None:
            print(f"  {target + ':':<30} nunca")
            continue
        copy = f"copia del {cell(drill, 'backup_at')}, fila {drill['control_id']}" if drill.get("backup_at") else \
            f"fila {drill['control_id']}"
        print(f"  {target + ':':<30} {cell(drill, 'finished_at')} ({copy}; simulacro {drill['id']})")
    print()
    for row in rows:
        for key, label in columns:
            value = cell(row, key)
            if value:
                print(f"  {label + ':':<20} {value}")
        print()
    return 0


DRILL_LABEL = "Último simulacro aprobado"


def _approved_drills(conn_id: str) -> dict[str, dict]:
    from respaldo.simulacro import registro

    return registro.last_approved(conn_id)


def cmd_restaurar(args: argparse.Namespace) -> int:
    """Restore an artifact (or a register row's) into a new database or folder, after checking its sum."""
    from respaldo.errors import CopyError, RegisterError
    from respaldo.simulacro.destino import RestauracionError
    from respaldo.simulacro.restaurar import UsoIncorrecto, restaurar

    def say(text: str) -> None:
        print(text, flush=True)

    try:
        inventory = _load(args.inventario)
    except InventoryError as err:
        inventory = None
        print(f"Aviso: no se pudo leer el inventario; se sigue sin registro ni servidor de simulacros.\n{err}",
              file=sys.stderr)
    try:
        outcome = restaurar(args.copia, args.destino, inventory=inventory, base_name=args.base, say=say,
                            identity=args.identidad)
    except (UsoIncorrecto, RegisterError, CopyError) as err:
        print(f"No se restauró nada: {err}", file=sys.stderr)
        return 2
    except RestauracionError as err:
        print(f"No se restauró: {err}", file=sys.stderr)
        return 1
    for line in outcome.lines:
        print(line)
    return outcome.code


def cmd_seguimiento(args: argparse.Namespace) -> int:
    """The follow-up: every target's state, missed slots, Airflow's health. Exit 0, 1 or 2 (see below)."""
    import json

    from respaldo.seguimiento import ejecutar

    out = sys.stdout
    if args.json:  # stdout carries the JSON alone: whatever else writes there (Airflow's logging) goes to stderr
        sys.stdout.flush()
        out = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)
    result = ejecutar(args.file)
    if result.informe is None:
        if args.json:
            print(json.dumps({"codigo": result.code, "error": result.error, "aviso": result.mailed},
                             ensure_ascii=False, indent=2), file=out, flush=True)
        print(f"El seguimiento no pudo ejecutarse:\n{result.error}", file=sys.stderr)
        if result.mailed:
            print(f"Correo: {result.mailed}", file=sys.stderr)
        return result.code
    if args.json:
        print(json.dumps(result.informe.as_json(), ensure_ascii=False, indent=2), file=out, flush=True)
    else:
        print(result.informe.text())
    return result.code


def cmd_verificar(args: argparse.Namespace) -> int:
    """Re-read stored artifacts to their end; exit 0 all intact, 1 any damaged, 2 the check could not run."""
    import zoneinfo

    from respaldo.register import connect
    from respaldo.seguimiento import relectura

    try:
        inventory = _load(args.file)
        targets = [t.id for t in inventory.targets]
        if args.objetivo:
            if args.objetivo not in targets:
                raise RespaldoError(f"«{args.objetivo}» no es un objetivo del inventario {inventory.path}.")
            targets = [args.objetivo]
        with connect(inventory.register.conn_id) as conn:
            rows = relectura.chosen(conn, targets, everything=args.todo)
        if not rows:
            print("No hay respaldos guardados que releer (ninguna copia exitosa en el registro para esos objetivos).")
            return 0
        what = "todas las copias guardadas" if args.todo else "la copia más reciente de cada objetivo"
        print(f"Releyendo {len(rows)} respaldo(s) ({what}), cada uno completo: suma SHA-256, compresión y formato.")
        if args.identidad:
            from respaldo.ciclo.cifrado import check_identity

            check_identity(args.identidad, Path("las copias cifradas"))
            print(f"Las copias cifradas se descifran con: {', '.join(args.identidad)}.")
        lecturas = relectura.read(rows, inventory.register.conn_id, identity=args.identidad)
    except RespaldoError as err:  # the inventory or the register: the check itself could not run
        print(f"No se pudo verificar: {err}", file=sys.stderr)
        return 2
    zone = zoneinfo.ZoneInfo(inventory.timezone)
    for lectura in lecturas:
        print(lectura.line(zone))
    damaged = [lectura for lectura in lecturas if not lectura.intact]
    print(f"{len(lecturas) - len(damaged)} íntegro(s), {len(damaged)} dañado(s).")
    for line in relectura.mail_damaged(damaged, inventory):
        print(f"Correo: {line}")
    return 1 if damaged else 0


def cmd_retencion(args: argparse.Namespace) -> int:
    """Retention: keep or delete, and why, for every copy; ``--aplicar`` deletes. Exit 0, 1 or 2 (see below)."""
    import json
    import zoneinfo

    from respaldo.ciclo import retencion

    out = sys.stdout
    if args.json:  # stdout carries the JSON alone (see cmd_seguimiento)
        sys.stdout.flush()
        out = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)
    try:
        inventory = _load(args.file)
        targets = sorted(inventory.targets, key=lambda t: t.id)
        if args.objetivo:
            ids = [t.id for t in targets]
            if args.objetivo not in ids:
                raise RespaldoError(f"«{args.objetivo}» no es un objetivo del inventario {inventory.path}."
                                    f"{_close(args.objetivo, ids)}")
            targets = [t for t in targets if t.id == args.objetivo]
        objetivos = [retencion.objetivo_de(t, inventory.frequencies[t.frequency].retention,
                                           inventory.external_of(t) is not None) for t in targets]
        zone = zoneinfo.ZoneInfo(inventory.timezone)
        run = retencion.aplicar if args.aplicar else retencion.revisar
        plans = run(inventory.register.conn_id, objetivos, zone)
    except (InventoryError, RespaldoError) as err:  # the inventory or the register: retention could not run
        if args.json:
            print(json.dumps({"codigo": 2, "error": str(err)}, ensure_ascii=False, indent=2), file=out, flush=True)
        print(f"No se pudo {'aplicar' if args.aplicar else 'revisar'} la retención:\n{err}", file=sys.stderr)
        return 2
    problems = [problem for found in plans for problem in found.problems]
    if args.json:
        print(json.dumps(retencion.as_json(plans, zone, applied=args.aplicar), ensure_ascii=False, indent=2),
              file=out, flush=True)
    else:
        print(retencion.text(plans, zone, applied=args.aplicar))
    for problem in problems:
        print(f"No se pudo borrar: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _close(word: str, candidates: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" ¿Quiso decir «{close[0]}»?" if close else ""


def _print_csv(names: list[str], rows, zone, drills: dict[str, dict]) -> None:
    """Every column: the sheet's first, in its order, then the rest in the table's order; last, as on the
    sheet, the target's last approved drill."""
    import json

    from respaldo import register

    first = [key for key, _ in register.SHEET_COLUMNS if key in names]
    order = first + [name for name in names if name not in first]
    index = {name: position for position, name in enumerate(names)}

    def value(row: tuple, key: str):
        found = row[index[key]]
        if found is None:
            return ""
        if isinstance(found, dt.datetime):
            return found.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(found, dict | list):  # the copy's figures (jsonb)
            return json.dumps(found, ensure_ascii=False, sort_keys=True)
        return register.word(key, found)

    def drill(row: tuple) -> str:
        approved = drills.get(row[index["target"]])
        return approved["finished_at"].astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if approved else ""

    writer = csv.writer(sys.stdout)
    writer.writerow([register.LABELS.get(key, key) for key in order] + [DRILL_LABEL])
    for row in rows:
        writer.writerow([value(row, key) for key in order] + [drill(row)])


def _write_sheet(args: argparse.Namespace, inventory: Inventory, zone, conn) -> int:
    from respaldo.register import hoja

    if args.mes:
        period = args.mes
    elif args.desde or args.hasta:
        today = dt.datetime.now(zone).date()
        period = hoja.Period.days(args.desde.date() if args.desde else today.replace(day=1),
                                  args.hasta.date() if args.hasta else today)
    else:
        period = hoja.Period.containing(dt.datetime.now(zone).date())
    sheet = hoja.build(conn, organization=inventory.organization, version=inventory.register.form_version,
                       timezone=inventory.timezone, period=period, target=args.objetivo)
    for path, write in ((args.xlsx, hoja.write_xlsx), (args.pdf, hoja.write_pdf)):
        if path:
            write(sheet, path)
            print(f"Hoja FT-GTI-004 de {period.label()}: {len(sheet.lines)} línea(s) en {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="respaldo",
        description="Procedimiento de respaldo y protección de la información, sobre Apache Airflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    file_help = f"archivo de inventario (por defecto ${INVENTORY_ENV} o include/inventory.yaml)"

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument("file", nargs="?", help=file_help)
        command.set_defaults(func=func)
        return command

    add("validate", cmd_validate, "Revisa el inventario (solo el archivo; sin red).")
    add("inventory", cmd_inventory, "Cuenta bases de datos, portales, servidores y archivos (paso 1).")
    add("check", cmd_check, "Comprueba que cada fuente, el registro y la carpeta de respaldos respondan.")
    pools = add("pools", cmd_pools, "Crea los pools de Airflow que limitan copias simultáneas por servidor.")
    pools.add_argument("--slots", type=int, default=1, help="cupos de cada pool nuevo (por defecto 1)")
    registro = add("registro", cmd_register, "Imprime el formato de control de backup FT-GTI-004, o escribe la "
                   "hoja del mes en XLSX y PDF.")
    registro.add_argument("--objetivo", help="solo este objetivo")
    registro.add_argument("--desde", type=_date, help="desde esta fecha (AAAA-MM-DD)")
    registro.add_argument("--hasta", type=_date, help="hasta esta fecha, incluida (AAAA-MM-DD)")
    registro.add_argument("--mes", type=_month, help="solo este mes (AAAA-MM)")
    registro.add_argument("--limite", type=int, help="como mucho tantas filas")
    registro.add_argument("--csv", action="store_true", help="en CSV, con todas las columnas")
    seguimiento = add("seguimiento", cmd_seguimiento,
                      "Seguimiento: estado de cada objetivo, turnos sin copia y salud de Airflow; avisa por correo. "
                      "Sale con 0 si todo está al día, 1 si algo necesita atención, 2 si no pudo revisar.")
    seguimiento.add_argument("--json", action="store_true", help="el informe en JSON, para otros programas")
    verificar = add("verificar", cmd_verificar, "Relee los respaldos guardados hasta el final (suma SHA-256, "
                    "compresión y formato) y dice cuáles están dañados. Sale con 0 si todos están íntegros, 1 si "
                    "alguno está dañado, 2 si no se pudo verificar.")
    verificar.add_argument("--objetivo", help="solo este objetivo")
    verificar.add_argument("--todo", action="store_true",
                           help="todas las copias guardadas (por defecto, la más reciente de cada objetivo)")
    verificar.add_argument("--identidad", metavar="ARCHIVO", action="append",
                           help="archivo de clave privada age (o llave ssh-ed25519) con el que se descifran y leen "
                                "completas las copias cifradas (.zst.age); se puede repetir. Sin él, de esas solo se "
                                "comprueban la suma y la estructura age")

    retencion = add("retencion", cmd_retencion,
                    "Retención: dice, para cada copia guardada, si se conserva o se borra y por qué (sin borrar "
                    "nada); con --aplicar borra las que sobran (la fila queda en el registro con la fecha y el "
                    "motivo). Sale con 0 si todo salió bien, 1 si alguna copia no se pudo borrar, 2 si no se pudo "
                    "revisar.")
    retencion.add_argument("--objetivo", help="solo este objetivo")
    retencion.add_argument("--aplicar", action="store_true",
                           help="borra de verdad las copias marcadas «borrar» (por defecto solo las muestra)")
    retencion.add_argument("--json", action="store_true", help="el resultado en JSON, para otros programas")

    registro.add_argument("--xlsx", metavar="ARCHIVO", help="escribe la hoja FT-GTI-004 en Excel (por defecto el mes "
                          "en curso; o --mes, o --desde/--hasta)")
    registro.add_argument("--pdf", metavar="ARCHIVO", help="escribe la hoja FT-GTI-004 en PDF, lista para imprimir y "
                          "firmar (mismo periodo que --xlsx)")

    restaurar = sub.add_parser(
        "restaurar", help="Restaura una copia en una base o carpeta nueva, después de comprobar su suma.",
        description="Restaura una copia con las herramientas estándar (pg_restore, mariadb, tar) en una base de datos "
                    "o carpeta NUEVA, después de comprobar su suma SHA-256, y dice qué restauró y si coincide con lo "
                    "que la copia registró al tomarla. Nunca escribe en una base o carpeta que no esté vacía. Sale "
                    "con 0 si restauró (y coincide), 1 si no restauró o no coincide, 2 si no se puede usar así.")
    restaurar.add_argument("copia", metavar="ARCHIVO|FILA", help="el archivo .zst de la copia, o su número de fila en "
                           "el registro FT-GTI-004")
    restaurar.add_argument("--destino", required=True, metavar="DESTINO",
                           help="base de datos: el nombre de una base nueva en el servidor de simulacros (drills) o un "
                                "URI postgresql://usuario@servidor:puerto/NOMBRE o mysql://…/NOMBRE; archivos, portal, "
                                "servidor virtual o copia manual: una carpeta nueva o vacía")
    restaurar.add_argument("--base", metavar="BASE", help="portal: la base nueva donde restaurar su base de datos "
                           "(nombre en el servidor de simulacros o URI); por defecto, el nombre de la carpeta")
    restaurar.add_argument("--inventario", metavar="ARCHIVO", help=file_help)
    restaurar.add_argument("--identidad", metavar="ARCHIVO", action="append",
                           help="copias cifradas (.zst.age): el archivo de la clave privada age (el de age-keygen) o "
                                "la llave privada ssh-ed25519 con que se descifra")
    restaurar.set_defaults(func=cmd_restaurar)
    return parser


def _quiet_logging() -> None:
    """What a command prints is its output; respaldo's log lines (the tasks' own) only go to stderr when they
    are warnings or errors, in plain text."""
    import logging

    logger = logging.getLogger("respaldo")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_logging()
    try:
        return args.func(args)
    except InventoryError as err:
        print(str(err), file=sys.stderr)
        return 1
    except RespaldoError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
