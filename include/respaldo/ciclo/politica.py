"""The ``retention`` block of the inventory: which copies of a target are kept, by count of periods.

A frequency class declares it; a target may declare its own, which replaces its class's whole block.
Without any ``retention`` nothing is ever deleted.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The rules, in the order they are applied, with their period (None: the copies themselves).
RULES: tuple[tuple[str, str | None], ...] = (
    ("keep_last", None),
    ("keep_daily", "day"),
    ("keep_weekly", "week"),
    ("keep_monthly", "month"),
    ("keep_yearly", "year"),
)
DEFAULT_MIN_KEEP = 3

_Count = Annotated[int | None, Field(ge=1, le=100_000)]


class Retention(BaseModel):
    """How many copies of a target are kept; the rest are deleted by ``respaldo retencion --aplicar``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_last: Annotated[
        _Count, Field(description="Conserva las N copias buenas más recientes.", examples=[3])
    ] = None
    keep_daily: Annotated[
        _Count, Field(description="Conserva la copia más reciente de cada uno de los N últimos días que tienen copia "
                      "(entre las anteriores a las ya conservadas; los días sin copia no cuentan).", examples=[7])
    ] = None
    keep_weekly: Annotated[
        _Count, Field(description="Igual, por semanas ISO (de lunes a domingo).", examples=[4])
    ] = None
    keep_monthly: Annotated[
        _Count, Field(description="Igual, por meses.", examples=[12])
    ] = None
    keep_yearly: Annotated[
        _Count, Field(description="Igual, por años.", examples=[5])
    ] = None
    min_keep: Annotated[
        int, Field(ge=1, le=100_000, description="Nunca quedan menos de N copias buenas del objetivo, digan lo que "
                   "digan las reglas.", examples=[3])
    ] = DEFAULT_MIN_KEEP
    keep_all: Annotated[
        bool, Field(description="`true`: no se borra ninguna copia de este objetivo (para anular en un objetivo la "
                    "retención de su clase).")
    ] = False

    @model_validator(mode="after")
    def _some_rule(self) -> Retention:
        if not self.keep_all and all(getattr(self, name) is None for name, _ in RULES):
            raise ValueError("`retention` sin ninguna regla: indique al menos una de keep_last, keep_daily, "
                             "keep_weekly, keep_monthly o keep_yearly (o keep_all: true para no borrar nada). Sin "
                             "reglas solo quedarían min_keep copias; si no quiere borrar nada, quite `retention`")
        if self.keep_all and any(getattr(self, name) is not None for name, _ in RULES):
            raise ValueError("`retention` con keep_all: true no lleva reglas keep_*: keep_all ya conserva todas las "
                             "copias")
        return self

    def describe(self) -> str:
        """The block in a line, as the inventory spells it."""
        if self.keep_all:
            return "keep_all"
        rules = [f"{name} {getattr(self, name)}" for name, _ in RULES if getattr(self, name) is not None]
        return ", ".join([*rules, f"min_keep {self.min_keep}"])
