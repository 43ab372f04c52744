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
