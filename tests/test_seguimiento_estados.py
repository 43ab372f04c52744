"""A target's state from the register's facts: table-driven, pure."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from respaldo.seguimiento.estados import (
    ESTADOS,
    Copia,
    Faltante,
    Hechos,
    Intento,
    Reglas,
    SimulacroFallido,
    evaluar,
    size_drop,
)

BOGOTA = zoneinfo.ZoneInfo("America/Bogota")
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
DAILY = Reglas(max_age=dt.timedelta(hours=27))


def ago(hours: float) -> dt.datetime:
    return NOW - dt.timedelta(hours=hours)


def good(hours: float = 5, size: int = 1000, **extra) -> Copia:
    return Copia(id=10, backup_at=ago(hours), size=size, **extra)


def attempt(status: str, hours: float = 5) -> Intento:
    return Intento(id=11, status=status, finished_at=ago(hours), run_id="scheduled__x", step="copia",
                   error="Falló «copia»: clave equivocada" if status == "failed" else None)


def facts(**changes) -> Hechos:
    base = {"target": "financiero_pg", "frequency": "diario", "first_seen": ago(24 * 60),
            "newest_attempt": attempt("success"), "newest_good": good(), "earlier_sizes": (1000,) * 10}
    return Hechos(**{**base, **changes})


CASES = [
    ("a fresh good copy is al_dia", facts(), "al_dia", ()),
    ("the newest attempt failed", facts(newest_attempt=attempt("failed", 1)), "fallido", ()),
    ("a failure followed by a success is al_dia", facts(newest_attempt=attempt("success", 1)), "al_dia", ()),
    ("a missed slot in the window", facts(open_missing=(Faltante(5, ago(30)),)), "atrasado", ()),
    ("a copy older than max_age", facts(newest_good=good(28), newest_attempt=attempt("success", 28)), "vencido", ()),
    ("a copy just inside max_age", facts(newest_good=good(26.9)), "al_dia", ()),
    ("no copy ever, known for long", facts(newest_good=None, newest_attempt=None, earlier_sizes=()), "vencido", ()),
    ("no copy ever, just added", facts(newest_good=None, newest_attempt=None, earlier_sizes=(), first_seen=ago(2)),
     "al_dia", ()),
    ("the newest copy failed verification", facts(newest_good=good(verify_status="damaged",
                                                                   verify_error="sha256 distinto")), "sospechoso", ()),
    ("a verified intact copy", facts(newest_good=good(verify_status="intact")), "al_dia", ()),
    ("a copy 60 % smaller than the median", facts(newest_good=good(size=400)), "sospechoso", ()),
    ("a copy 40 % smaller is fine", facts(newest_good=good(size=600)), "al_dia", ()),
    ("too little history to judge a size", facts(newest_good=good(size=1), earlier_sizes=(1000, 1000)), "al_dia", ()),
    ("a failed restore drill", facts(failed_drill=SimulacroFallido(ago(3), "faltan filas")), "sospechoso", ()),
    ("failed and missed: the worst shows, the other beside it",
     facts(newest_attempt=attempt("failed", 1), open_missing=(Faltante(5, ago(30)),)), "fallido", ("atrasado",)),
    ("everything at once, in order",
     facts(newest_attempt=attempt("failed", 1), open_missing=(Faltante(5, ago(40)),),
           newest_good=good(40, size=1, verify_status="damaged")),
     "fallido", ("atrasado", "vencido", "sospechoso")),
    ("stale and small", facts(newest_good=good(30, size=10)), "vencido", ("sospechoso",)),
]


@pytest.mark.parametrize(("case", "hechos", "state", "others"), CASES, ids=[c[0] for c in CASES])
def test_a_target_gets_the_worst_state_and_the_others_beside_it(case, hechos, state, others):
    result = evaluar(hechos, DAILY, NOW, BOGOTA)
    assert (result.estado, result.otros) == (state, others)
    assert [f.estado for f in result.hallazgos] == sorted((f.estado for f in result.hallazgos), key=ESTADOS.index)


def test_a_failed_state_says_which_row_and_why_and_begins_when_the_attempt_ended():
    result = evaluar(facts(newest_attempt=attempt("failed", 1)), DAILY, NOW, BOGOTA)
    assert result.desde == ago(1)
    assert "fila 11" in result.hallazgos[0].detalle and "clave equivocada" in result.hallazgos[0].detalle


def test_a_late_state_lists_the_missed_slots_in_local_time_and_begins_at_the_oldest():
    missed = (Faltante(5, dt.datetime(2026, 11, 28, 4, 0, tzinfo=dt.UTC)),
              Faltante(6, dt.datetime(2026, 11, 29, 4, 0, tzinfo=dt.UTC)))
    result = evaluar(facts(open_missing=missed), DAILY, NOW, BOGOTA)
    assert result.desde == missed[0].slot
    assert "2 turnos sin copia" in result.hallazgos[0].detalle
    assert "2026-11-27 23:00, 2026-11-28 23:00" in result.hallazgos[0].detalle


def test_a_stale_state_begins_when_the_copy_outgrew_the_max_age():
    result = evaluar(facts(newest_good=good(30)), DAILY, NOW, BOGOTA)
    assert result.desde == ago(30) + dt.timedelta(hours=27)
    assert "hace 1 día y 6 h (máximo 1 día y 3 h)" in result.hallazgos[0].detalle


@pytest.mark.parametrize(("size", "earlier", "percent", "median"), [
    (400, (1000,) * 10, 50, 1000),
    (500, (1000,) * 10, 50, None),          # exactly half is not "more than" half below
    (100, (1000, 1000, 1000), 50, 1000),    # three earlier copies are enough
    (100, (1000, 1000), 50, None),          # two are not
    (100, (1000,) * 5 + (10,) * 4, 50, 1000),  # the median, not the mean: a few small ones do not move it
    (850, (1000,) * 10, 10, 1000),
    (None, (1000,) * 10, 50, None),
])
def test_a_size_drop_is_judged_against_the_median_of_the_earlier_copies(size, earlier, percent, median):
    assert size_drop(size, earlier, percent) == median
