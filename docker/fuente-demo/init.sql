-- Demo source server for `docker compose up`: a small financial-system database `financiero`
-- (backed up twice a day by respaldo_financiero) and `sistema_informacion` (daily, respaldo_diario).
--
-- Run once by the postgres:15 image on the first start of an empty volume
-- (/docker-entrypoint-initdb.d), as the superuser POSTGRES_USER connected to POSTGRES_DB
-- (financiero). Small but realistic: numeric amounts, dates, Spanish text with accents and ñ,
-- jsonb, a view, identity columns and foreign keys. The pseudo-random rows come from a fixed seed,
-- so every fresh volume holds the same data.
--
-- It also creates the role the backups use, with the least privileges pg_dump needs: LOGIN plus
-- the built-in pg_read_all_data (PostgreSQL 14+). Its password comes from the environment
-- (FUENTE_LECTOR_PASSWORD), never from this file.

\set ON_ERROR_STOP on
\getenv lector_password FUENTE_LECTOR_PASSWORD

CREATE ROLE respaldo_lector LOGIN PASSWORD :'lector_password';
GRANT pg_read_all_data TO respaldo_lector;
COMMENT ON ROLE respaldo_lector IS 'respaldo: solo lectura, para pg_dump';

-- ---------------------------------------------------------------------------------------------
-- financiero
-- ---------------------------------------------------------------------------------------------

CREATE SCHEMA contabilidad;
COMMENT ON SCHEMA contabilidad IS 'Sistema financiero: presupuesto, contabilidad y tesorería';

CREATE TABLE contabilidad.terceros (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tipo_documento       text NOT NULL CHECK (tipo_documento IN ('NIT', 'CC', 'CE')),
    numero_documento     text NOT NULL,
    digito_verificacion  smallint,
    razon_social         text NOT NULL,
    municipio            text NOT NULL,
    departamento         text NOT NULL DEFAULT 'Putumayo',
    correo               text,
    datos                jsonb NOT NULL DEFAULT '{}'::jsonb,
    creado_en            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tipo_documento, numero_documento)
);
COMMENT ON TABLE contabilidad.terceros IS 'Proveedores, contratistas y entidades con las que hay movimientos';

CREATE TABLE contabilidad.cuentas (
    codigo             text PRIMARY KEY,
    nombre             text NOT NULL,
    naturaleza         text NOT NULL CHECK (naturaleza IN ('débito', 'crédito')),
    nivel              smallint NOT NULL,
    acepta_movimiento  boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE contabilidad.cuentas IS 'Catálogo de cuentas (régimen de contabilidad pública)';

CREATE TABLE contabilidad.comprobantes (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tipo            text NOT NULL CHECK (tipo IN ('CE', 'CI', 'NC', 'OP')),
    numero          integer NOT NULL,
    vigencia        smallint NOT NULL,
    fecha           date NOT NULL,
    tercero_id      bigint NOT NULL REFERENCES contabilidad.terceros (id),
    cuenta_debito   text NOT NULL REFERENCES contabilidad.cuentas (codigo),
    cuenta_credito  text NOT NULL REFERENCES contabilidad.cuentas (codigo),
    valor           numeric(18, 2) NOT NULL CHECK (valor > 0),
    descripcion     text NOT NULL,
    estado          text NOT NULL DEFAULT 'aprobado' CHECK (estado IN ('borrador', 'aprobado', 'anulado')),
    detalle         jsonb NOT NULL DEFAULT '{}'::jsonb,
    registrado_en   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tipo, numero, vigencia)
);
COMMENT ON TABLE contabilidad.comprobantes IS 'Comprobantes de egreso (CE), ingreso (CI), notas (NC) y órdenes de pago (OP)';
CREATE INDEX comprobantes_fecha_idx ON contabilidad.comprobantes (fecha);
CREATE INDEX comprobantes_tercero_idx ON contabilidad.comprobantes (tercero_id);

INSERT INTO contabilidad.terceros
    (tipo_documento, numero_documento, digito_verificacion, razon_social, municipio, correo, datos)
VALUES
    ('NIT', '800094164', 4, 'Gobernación del Putumayo', 'Mocoa', 'contactenos@example.gov.co',
     '{"naturaleza": "pública", "régimen": "especial"}'),
    ('NIT', '891200916', 1, 'E.S.E. Hospital José María Hernández', 'Mocoa', 'gerencia@example.org',
     '{"naturaleza": "pública", "sector": "salud"}'),
    ('NIT', '900123457', 2, 'Constructora Amazónica S.A.S.', 'Puerto Asís', 'obras@example.com',
     '{"naturaleza": "privada", "actividad_ciiu": "4210", "responsabilidades": ["IVA", "retención en la fuente"]}'),
    ('NIT', '901234568', 7, 'Transportes del Sibundoy Ltda.', 'Sibundoy', 'despachos@example.com',
     '{"naturaleza": "privada", "actividad_ciiu": "4921"}'),
    ('NIT', '900555123', 0, 'Papelería y Suministros Orito', 'Orito', 'ventas@example.com',
     '{"naturaleza": "privada", "actividad_ciiu": "4761"}'),
    ('NIT', '900777888', 5, 'Asociación de Cacaoteros del Bajo Putumayo', 'Puerto Leguízamo', NULL,
     '{"naturaleza": "sin ánimo de lucro", "programa": "desarrollo rural"}'),
    ('CC', '18125478', NULL, 'María Fernanda Jamioy Chindoy', 'Santiago', 'mfjamioy@example.com',
     '{"contrato": "prestación de servicios", "profesión": "ingeniera de sistemas"}'),
    ('CC', '1124856321', NULL, 'José Ángel Muñoz Peña', 'Mocoa', NULL,
     '{"contrato": "prestación de servicios", "profesión": "contador público"}'),
    ('CC', '69005874', NULL, 'Luz Dary Ortíz Guerrero', 'Villagarzón', 'ldortiz@example.com',
     '{"contrato": "prestación de servicios", "profesión": "abogada"}'),
    ('CC', '1123308890', NULL, 'Andrés Núñez Castañeda', 'Valle del Guamuez', NULL,
     '{"contrato": "apoyo a la gestión"}'),
    ('CC', '97470125', NULL, 'Jesús Hernán Güiza Ruíz', 'San Miguel', 'jhguiza@example.com',
     '{"contrato": "prestación de servicios", "profesión": "ingeniero civil"}'),
    ('CE', '4587123', NULL, 'Ramón Ibáñez Córdoba', 'Puerto Caicedo', NULL,
     '{"nacionalidad": "ecuatoriana"}'),
    ('NIT', '899999090', 2, 'Ministerio de Hacienda y Crédito Público', 'Bogotá, D.C.', NULL,
     '{"naturaleza": "pública", "orden": "nacional"}'),
    ('NIT', '860034313', 7, 'Banco de Bogotá', 'Bogotá, D.C.', NULL,
     '{"naturaleza": "privada", "sector": "financiero", "cuentas": ["corriente", "ahorros"]}');
UPDATE contabilidad.terceros SET departamento = 'Bogotá, D.C.' WHERE municipio = 'Bogotá, D.C.';

INSERT INTO contabilidad.cuentas (codigo, nombre, naturaleza, nivel, acepta_movimiento) VALUES
    ('1',      'Activos',                                         'débito',  1, false),
    ('11',     'Efectivo y equivalentes al efectivo',             'débito',  2, false),
    ('1110',   'Depósitos en instituciones financieras',          'débito',  3, false),
    ('111005', 'Cuenta corriente',                                'débito',  4, true),
    ('111006', 'Cuenta de ahorro',                                'débito',  4, true),
    ('13',     'Cuentas por cobrar',                              'débito',  2, false),
    ('1305',   'Impuestos, retención en la fuente y anticipos',   'débito',  3, false),
    ('130507', 'Impuesto de registro',                            'débito',  4, true),
    ('16',     'Propiedades, planta y equipo',                    'débito',  2, false),
    ('1670',   'Equipos de comunicación y computación',           'débito',  3, false),
    ('167002', 'Equipo de computación',                           'débito',  4, true),
    ('2',      'Pasivos',                                         'crédito', 1, false),
    ('24',     'Cuentas por pagar',                               'crédito', 2, false),
    ('2401',   'Adquisición de bienes y servicios nacionales',    'crédito', 3, false),
    ('240101', 'Bienes y servicios',                              'crédito', 4, true),
    ('240102', 'Proyectos de inversión',                          'crédito', 4, true),
    ('2436',   'Retención en la fuente e impuesto de timbre',     'crédito', 3, false),
    ('243603', 'Honorarios',                                      'crédito', 4, true),
    ('4',      'Ingresos',                                        'crédito', 1, false),
    ('41',     'Ingresos fiscales',                               'crédito', 2, false),
    ('4105',   'Impuestos',                                       'crédito', 3, false),
    ('410508', 'Impuesto de registro',                            'crédito', 4, true),
    ('5',      'Gastos',                                          'débito',  1, false),
    ('51',     'De administración y operación',                   'débito',  2, false),
    ('5111',   'Generales',                                       'débito',  3, false),
    ('511113', 'Vigilancia y seguridad',                          'débito',  4, true),
    ('511149', 'Servicios de aseo, cafetería y restaurante',      'débito',  4, true),
    ('511180', 'Servicios (honorarios)',                          'débito',  4, true),
    ('55',     'Gasto público social',                            'débito',  2, false),
    ('5502',   'Salud',                                           'débito',  3, false),
    ('550201', 'Régimen subsidiado',                              'débito',  4, true);

-- About 600 vouchers over two fiscal years, reproducible (fixed seed).
SELECT setseed(0.20260101);
INSERT INTO contabilidad.comprobantes
    (tipo, numero, vigencia, fecha, tercero_id, cuenta_debito, cuenta_credito, valor, descripcion,
     estado, detalle, registrado_en)
SELECT
    c.tipo,
    row_number() OVER (PARTITION BY c.tipo, extract(year FROM c.fecha) ORDER BY c.fecha, c.n),
    extract(year FROM c.fecha)::smallint,
    c.fecha,
    c.tercero_id,
    c.debito,
    c.credito,
    c.valor,
    c.descripcion,
    CASE WHEN c.n % 97 = 0 THEN 'anulado' WHEN c.n % 41 = 0 THEN 'borrador' ELSE 'aprobado' END,
    jsonb_build_object(
        'rubro_presupuestal', '2.3.' || lpad((c.n % 9 + 1)::text, 2, '0') || '.' || (c.n % 5 + 1),
        'fuente', (ARRAY['recursos propios', 'sistema general de participaciones', 'regalías'])[c.n % 3 + 1],
        'retenciones', CASE WHEN c.tipo IN ('CE', 'OP')
                            THEN jsonb_build_array(jsonb_build_object('concepto', 'retención en la fuente',
                                                                      'tarifa', 0.11,
                                                                      'valor', round(c.valor * 0.11, 2)))
                            ELSE '[]'::jsonb END,
        'soportes', c.n % 4 + 1
    ),
    c.fecha + time '08:00' + (c.n % 540) * interval '1 minute'
FROM (
    SELECT
        n,
        date '2025-01-02' + (n * 37 % 690) AS fecha,
        (ARRAY['CE', 'CE', 'CE', 'OP', 'OP', 'CI', 'NC'])[n % 7 + 1] AS tipo,
        (n * 7 % 14) + 1 AS tercero_id,
        (ARRAY['511180', '511113', '511149', '167002', '550201', '111005', '240101'])[n % 7 + 1] AS debito,
        (ARRAY['240101', '240101', '240101', '240102', '240101', '410508', '111005'])[n % 7 + 1] AS credito,
        round((50000 + random() * 48000000)::numeric, 2) AS valor,
        (ARRAY[
            'Pago de honorarios profesionales, contrato de prestación de servicios',
            'Servicio de vigilancia de la sede administrativa, mes vencido',
            'Servicio de aseo y cafetería de las dependencias de la Gobernación',
            'Adquisición de equipos de cómputo para la Secretaría de Educación',
            'Giro al régimen subsidiado de salud, liquidación mensual',
            'Recaudo del impuesto de registro, oficina de Mocoa',
            'Nota de ajuste por reclasificación contable de la cuenta por pagar'
        ])[n % 7 + 1] AS descripcion
    FROM generate_series(1, 600) AS n
) AS c;

CREATE VIEW contabilidad.saldos_por_cuenta AS
SELECT cu.codigo, cu.nombre, cu.naturaleza,
       coalesce(sum(co.valor) FILTER (WHERE co.cuenta_debito = cu.codigo), 0) AS debitos,
       coalesce(sum(co.valor) FILTER (WHERE co.cuenta_credito = cu.codigo), 0) AS creditos
FROM contabilidad.cuentas AS cu
LEFT JOIN contabilidad.comprobantes AS co
       ON co.estado = 'aprobado' AND cu.codigo IN (co.cuenta_debito, co.cuenta_credito)
WHERE cu.acepta_movimiento
GROUP BY cu.codigo, cu.nombre, cu.naturaleza;

ANALYZE;

-- ---------------------------------------------------------------------------------------------
-- sistema_informacion: another information system, backed up once a day
-- ---------------------------------------------------------------------------------------------

CREATE DATABASE sistema_informacion;
\connect sistema_informacion

CREATE SCHEMA gestion_documental;

CREATE TABLE gestion_documental.radicados (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    numero        text NOT NULL UNIQUE,
    fecha         timestamptz NOT NULL,
    asunto        text NOT NULL,
    remitente     text NOT NULL,
    dependencia   text NOT NULL,
    dias_termino  smallint NOT NULL,
    metadatos     jsonb NOT NULL DEFAULT '{}'::jsonb
);
COMMENT ON TABLE gestion_documental.radicados IS 'Correspondencia radicada (ventanilla única)';

INSERT INTO gestion_documental.radicados (numero, fecha, asunto, remitente, dependencia, dias_termino, metadatos)
SELECT
    format('2026-%s', lpad(n::text, 6, '0')),
    timestamptz '2026-01-02 08:00:00-05' + n * interval '97 minutes',
    (ARRAY['Derecho de petición sobre el pago de una cuota parte pensional',
           'Solicitud de certificado laboral con funciones',
           'Queja por demora en la atención de la Secretaría de Salud',
           'Invitación a la mesa departamental de víctimas',
           'Respuesta a requerimiento de la Contraloría General'])[n % 5 + 1],
    (ARRAY['Ciudadano', 'Alcaldía de Puerto Asís', 'Contraloría General de la República',
           'Personería de Mocoa', 'Comunidad indígena Kamëntšá'])[n % 5 + 1],
    (ARRAY['Secretaría de Hacienda', 'Talento Humano', 'Secretaría de Salud',
           'Secretaría de Gobierno', 'Oficina de Control Interno'])[n % 5 + 1],
    (ARRAY[15, 10, 15, 5, 10])[n % 5 + 1],
    jsonb_build_object('canal', (ARRAY['ventanilla', 'correo electrónico', 'sede electrónica'])[n % 3 + 1],
                       'folios', n % 12 + 1,
                       'anexos', n % 3)
FROM generate_series(1, 300) AS n;

ANALYZE;
