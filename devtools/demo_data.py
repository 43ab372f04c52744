"""Realistic demo data: a small financial system and an information system, in Spanish.

Mixed numbers, dates, free text with accents and jsonb documents, built with ``generate_series`` so
any size is quick to make. Unlike ``pgbench -i`` rows (blank-padded, 100:1 compressible) this data
compresses about as real office data does, so sizes and speeds measured on it mean something.
"""

from __future__ import annotations

WORDS = (
    "presupuesto contabilidad tesorería nómina contrato convenio proveedor factura pago giro "
    "vigencia rubro disponibilidad compromiso obligación ingreso egreso retención municipio "
    "Mocoa Puerto Asís Orito Sibundoy Villagarzón Valle del Guamuez educación salud vías "
    "acueducto alcantarillado regalías secretaría despacho gobernación señor señora número "
    "año trámite petición queja reclamo solicitud certificado licencia resolución decreto"
).split()

_WORDS_SQL = "ARRAY[" + ",".join("'" + w.replace("'", "''") + "'" for w in WORDS) + "]"

#: ``frase(n)``: n random words and a short random code, different on every call.
PRELUDE = f"""
CREATE FUNCTION frase(n integer) RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT string_agg(({_WORDS_SQL})[1 + floor(random() * {len(WORDS)})::int], ' ')
           || ' ' || left(md5(random()::text), 8)
    FROM generate_series(1, n)
$$;
"""


def financiero_sql(rows: int) -> str:
    """Schema and data of the demo "financiero" database; ``rows`` movements (about 330 bytes each)."""
    return PRELUDE + f"""
CREATE TABLE terceros (
    id          integer PRIMARY KEY,
    nit         text NOT NULL,
    nombre      text NOT NULL,
    municipio   text NOT NULL,
    creado      date NOT NULL
);
CREATE TABLE cuentas (
    codigo      text PRIMARY KEY,
    nombre      text NOT NULL,
    naturaleza  char(1) NOT NULL CHECK (naturaleza IN ('D', 'C'))
);
CREATE TABLE comprobantes (
    id          bigint PRIMARY KEY,
    fecha       timestamptz NOT NULL,
    tercero_id  integer NOT NULL REFERENCES terceros (id),
    cuenta      text NOT NULL REFERENCES cuentas (codigo),
    valor       numeric(18, 2) NOT NULL,
    detalle     text NOT NULL,
    soporte     jsonb NOT NULL
);
INSERT INTO cuentas
SELECT '1' || lpad(g::text, 5, '0'), frase(3), CASE WHEN g % 2 = 0 THEN 'D' ELSE 'C' END
FROM generate_series(1, 400) AS g;
INSERT INTO terceros
SELECT g, (800000000 + g)::text || '-' || (g % 10), initcap(frase(3)),
       ({_WORDS_SQL})[17 + g % 8], date '2015-03-17' + (g % 3900)
FROM generate_series(1, greatest({rows} / 20, 10)) AS g;
INSERT INTO comprobantes
SELECT g,
       timestamptz '2024-01-01 08:00:00-05' + (g % 700000) * interval '47 seconds',
       1 + g % greatest({rows} / 20, 10),
       '1' || lpad((1 + g % 400)::text, 5, '0'),
       round((random() * 250000000)::numeric, 2),
       frase(8),
       jsonb_build_object('tipo', ({_WORDS_SQL})[1 + g % 10], 'numero', g, 'vigencia', 2024 + g % 3,
                          'aprobado', g % 7 <> 0, 'observacion', frase(5))
FROM generate_series(1, {rows}) AS g;
ANALYZE;
"""


def sistema_informacion_sql(rows: int) -> str:
    """Schema and data of the demo "sistema de información" database (citizens' requests)."""
    return PRELUDE + f"""
CREATE TABLE ciudadanos (
    id          integer PRIMARY KEY,
    documento   text NOT NULL UNIQUE,
    nombre      text NOT NULL,
    correo      text,
    municipio   text NOT NULL
);
CREATE TABLE tramites (
    id           bigint PRIMARY KEY,
    radicado     text NOT NULL,
    ciudadano_id integer NOT NULL REFERENCES ciudadanos (id),
    tipo         text NOT NULL,
    recibido     timestamptz NOT NULL,
    estado       text NOT NULL,
    asunto       text NOT NULL,
    expediente   jsonb NOT NULL
);
INSERT INTO ciudadanos
SELECT g, (10000000 + g * 7)::text, initcap(frase(3)),
       CASE WHEN g % 4 = 0 THEN NULL ELSE 'persona' || g || '@correo.example' END,
       ({_WORDS_SQL})[17 + g % 8]
FROM generate_series(1, greatest({rows} / 10, 10)) AS g;
INSERT INTO tramites
SELECT g, 'RAD-' || (2024 + g % 3) || '-' || lpad(g::text, 7, '0'), 1 + g % greatest({rows} / 10, 10),
       ({_WORDS_SQL})[43 + g % 5], timestamptz '2024-01-01 07:00:00-05' + g * interval '13 minutes',
       (ARRAY['radicado', 'en trámite', 'respondido', 'archivado'])[1 + g % 4], frase(10),
       jsonb_build_object('folios', 1 + g % 40, 'anexos', jsonb_build_array(frase(2), g % 9),
                          'dependencia', ({_WORDS_SQL})[30 + g % 6])
FROM generate_series(1, {rows}) AS g;
ANALYZE;
"""


def table_checksums_sql() -> str:
    """One row per user table: its name, row count and an md5 over its rows in a fixed order."""
    per_table = ("SELECT count(*) || '':'' || coalesce(md5(string_agg(t::text, '','' ORDER BY t::text)), '''') "
                 "AS x FROM %I.%I t")
    return f"""
SELECT string_agg(format('%s|%s', c.relname, (xpath('/row/x/text()',
    query_to_xml(format('{per_table}', n.nspname, c.relname), false, true, '')))[1]::text),
    E'\\n' ORDER BY c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname = 'public'
"""


def tesoreria_mariadb_sql(rows: int) -> str:
    """Schema and data of a demo MariaDB "tesorería" database: ``rows`` payments, with a trigger that keeps
    each account's balance, a stored function and procedure, a view and a (disabled) event.

    Text is utf8mb4 on purpose (tildes, «ñ», emoji) and one column is binary, so a dump that mangles
    characters or bytes shows up when it is restored and compared. Rows come from MariaDB's built-in
    SEQUENCE engine (``seq_1_to_N``), so any size is quick to make.
    """
    words = "ELT(1 + FLOOR(RAND() * {n}), {w})".format(
        n=len(WORDS), w=", ".join("'" + w.replace("'", "''") + "'" for w in WORDS))
    frase = f"CONCAT_WS(' ', {words}, {words}, {words}, {words}, LEFT(MD5(RAND()), 8))"
    return f"""
CREATE TABLE cuentas (
    codigo      VARCHAR(12) PRIMARY KEY,
    nombre      VARCHAR(200) NOT NULL,
    saldo       DECIMAL(18, 2) NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE pagos (
    id          BIGINT PRIMARY KEY AUTO_INCREMENT,
    cuenta      VARCHAR(12) NOT NULL,
    beneficiario VARCHAR(200) NOT NULL,
    valor       DECIMAL(18, 2) NOT NULL,
    pagado      DATETIME NOT NULL,
    registrado  TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    concepto    TEXT NOT NULL,
    huella      VARBINARY(16) NOT NULL,
    anulado     BOOLEAN NOT NULL DEFAULT FALSE,
    CONSTRAINT pagos_cuenta FOREIGN KEY (cuenta) REFERENCES cuentas (codigo)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TRIGGER pagos_saldo AFTER INSERT ON pagos FOR EACH ROW
    UPDATE cuentas SET saldo = saldo - NEW.valor WHERE codigo = NEW.cuenta;
CREATE FUNCTION saldo_de(p_cuenta VARCHAR(12)) RETURNS DECIMAL(18, 2) READS SQL DATA
    RETURN (SELECT saldo FROM cuentas WHERE codigo = p_cuenta);
DELIMITER //
CREATE PROCEDURE registrar_pago(IN p_cuenta VARCHAR(12), IN p_beneficiario VARCHAR(200),
                                IN p_valor DECIMAL(18, 2), IN p_concepto TEXT)
BEGIN
    INSERT INTO pagos (cuenta, beneficiario, valor, pagado, concepto, huella)
    VALUES (p_cuenta, p_beneficiario, p_valor, NOW(), p_concepto, UNHEX(MD5(p_concepto)));
END//
DELIMITER ;
CREATE VIEW saldos AS SELECT codigo, nombre, saldo FROM cuentas WHERE saldo <> 0;
CREATE EVENT cierre_diario ON SCHEDULE EVERY 1 DAY STARTS '2026-01-01 23:30:00' DISABLE
    COMMENT 'Cierre de caja: marca anulados los pagos sin valor'
    DO UPDATE pagos SET anulado = TRUE WHERE valor = 0;
INSERT INTO cuentas (codigo, nombre, saldo)
SELECT CONCAT('1110', LPAD(seq, 4, '0')), CONCAT('Caja ', {words}, ' ñandú ', seq), 1000000000
FROM seq_1_to_40;
INSERT INTO cuentas VALUES ('1110-EMOJI', 'Cuenta de ensayo 💰 «año» — Ñ', 0);
INSERT INTO pagos (cuenta, beneficiario, valor, pagado, registrado, concepto, huella, anulado)
SELECT CONCAT('1110', LPAD(1 + seq % 40, 4, '0')),
       CONCAT('Señor(a) ', {words}, ' ', seq),
       ROUND(RAND() * 25000000, 2),
       '2024-01-01 08:00:00' + INTERVAL seq * 47 MINUTE,
       '2024-01-01 08:00:00' + INTERVAL seq * 47 MINUTE + INTERVAL 5 SECOND,
       IF(seq % 97 = 0, CONCAT({frase}, ' 🧾 pagado ✓'), {frase}),
       UNHEX(MD5(seq)),
       seq % 11 = 0
FROM seq_1_to_{rows};
"""
