"""The follow-up's report: a Spanish table for people, JSON for machines, and its exit code."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field

from respaldo.seguimiento.estados import Estado, horas
from respaldo.seguimiento.salud import Salud

#: Exit codes: all is well; something needs attention; the check itself could not run.
AL_DIA, ATENCION, NO_CORRIO = 0, 1, 2


@dataclass
class Informe:
    """What one check found."""

    organization: str
    timezone: str
    now: dt.datetime
    states: list[Estado]
    salud: Salud
    #: Failed task instances that had no row and got one now, in words.
    handled: list[str] = field(default_factory=list)
    new_missing: int = 0
    superseded: int = 0
    #: The emails this check sent or tried to send, in words.
    mailed: list[str] = field(default_factory=list)

    @property
    def code(self) -> int:
        attention = self.salud.problems or any(s.estado != "al_dia" for s in self.states) or self.handled
        return ATENCION if attention else AL_DIA

    def airflow_lines(self) -> list[str]:
        """Airflow's health in lines of text."""
        where = self.salud.api_url or "(sin dirección)"
        unanswered = next((p.text for p in self.salud.problems if p.key == "airflow:api"), "no responde")
        lines = [f"API de Airflow en {where}: " + ("responde" if self.salud.answered else unanswered)]
        lines += [p.text for p in self.salud.problems if p.key != "airflow:api"]
        if self.salud.answered and not self.salud.problems:
            lines.append("scheduler y dag-processor con señales de vida; DAG cargados y sin pausar; pools completos; "
                         "ninguna tarea atascada")
        lines += [f"se registró una falla que no tenía fila: {text}" for text in self.handled]
        return lines

    def text(self) -> str:
        """The Spanish table: one line per target, then Airflow's health."""
        zone = zoneinfo.ZoneInfo(self.timezone)
        header = ["objetivo", "clase", "estado", "también", "última copia buena", "edad", "turnos sin copia"]
        rows = []
        for state in self.states:
            copy = state.newest_good
            missed = ", ".join(m.slot.astimezone(zone).strftime("%Y-%m-%d %H:%M") for m in state.open_missing[:3])
            if len(state.open_missing) > 3:
                missed += f" y {len(state.open_missing) - 3} más"
            rows.append([state.target, state.frequency, state.estado, ", ".join(state.otros) or "-",
                         copy.backup_at.astimezone(zone).strftime("%Y-%m-%d") if copy else "ninguna",
                         horas(self.now - copy.backup_at) if copy else "-", missed or "-"])
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        out = [f"Seguimiento de los respaldos de {self.organization}, "
               f"{self.now.astimezone(zone):%Y-%m-%d %H:%M} ({self.timezone})", ""]
        out.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
        out.append("  ".join("-" * w for w in widths))
        out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        if not rows:
            out.append("(el inventario no tiene objetivos)")
        details = [f"  {s.target}: {f.detalle}" for s in self.states for f in s.hallazgos]
        if details:
            out += ["", "Por qué:", *details]
        if self.new_missing or self.superseded:
            out += ["", f"Registro FT-GTI-004: {self.new_missing} turno(s) sin copia registrados ahora como «missing»; "
                        f"{self.superseded} cubiertos por una copia posterior."]
        out += ["", "Airflow:", *(f"  {line}" for line in self.airflow_lines())]
        if self.mailed:
            out += ["", "Correos:", *(f"  {line}" for line in self.mailed)]
        verdict = {AL_DIA: "Todo al día.", ATENCION: "Hay algo que atender (ver arriba)."}[self.code]
        out += ["", verdict]
        return "\n".join(out)

    def as_json(self) -> dict:
        zone = zoneinfo.ZoneInfo(self.timezone)

        def when(value: dt.datetime | None) -> str | None:
            return value.astimezone(zone).isoformat() if value else None

        return {
            "organizacion": self.organization,
            "zona_horaria": self.timezone,
            "fecha": when(self.now),
            "codigo": self.code,
            "objetivos": [
                {"objetivo": s.target, "clase": s.frequency, "estado": s.estado, "otros": list(s.otros),
                 "desde": when(s.desde),
                 "copia_buena_mas_reciente": when(s.newest_good.backup_at) if s.newest_good else None,
                 "fila_copia_buena": s.newest_good.id if s.newest_good else None,
                 "edad_horas": round((self.now - s.newest_good.backup_at).total_seconds() / 3600, 2)
                 if s.newest_good else None,
                 "turnos_sin_copia": [when(m.slot) for m in s.open_missing],
                 "detalle": [{"estado": f.estado, "desde": when(f.desde), "texto": f.detalle} for f in s.hallazgos]}
                for s in self.states
            ],
            "airflow": {"api": self.salud.api_url, "responde": self.salud.answered,
                        "problemas": [{"clave": p.key, "texto": p.text} for p in self.salud.problems],
                        "fallas_registradas": list(self.handled)},
            "registro": {"faltantes_nuevos": self.new_missing, "faltantes_cubiertos": self.superseded},
            "correos": list(self.mailed),
        }
