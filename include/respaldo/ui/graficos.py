"""A target's copies drawn as SVG on the server: a timeline of every slot and the trend of its sizes.

Plain SVG in the page, no JavaScript: it prints, it zooms, and a screen reader gets a title and a
description (the page's table lists the same rows). Status is told by shape as well as colour
(circle exitoso, square fallido, hollow triangle faltante), so it survives a black-and-white print.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from respaldo.process import human_bytes
from respaldo.register.control import STATUS_WORDS

WIDTH = 960
LEFT = 90
RIGHT = 20
LANES = ["success", "failed", "missing"]


@dataclass(frozen=True)
class Point:
    """One register row of the target: when, its status, its sizes."""

    when: dt.datetime
    status: str
    original_bytes: int | None = None
    compressed_bytes: int | None = None


def _x(when: dt.datetime, since: dt.datetime, until: dt.datetime) -> float:
    span = (until - since).total_seconds() or 1
    return LEFT + (WIDTH - LEFT - RIGHT) * min(max((when - since).total_seconds() / span, 0), 1)


def _ticks(since: dt.datetime, until: dt.datetime, count: int = 6) -> list[dt.datetime]:
    step = (until - since) / count
    return [since + step * index for index in range(count + 1)]


def _axis(since: dt.datetime, until: dt.datetime, top: float, bottom: float) -> list[str]:
    parts = [f'<line class="eje" x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}"/>']
    ticks = _ticks(since, until)
    for index, tick in enumerate(ticks):
        x = _x(tick, since, until)
        anchor = "start" if index == 0 else "end" if index == len(ticks) - 1 else "middle"
        parts.append(f'<line class="guia" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}"/>')
        parts.append(f'<text class="etiqueta" x="{x:.1f}" y="{bottom + 14}" text-anchor="{anchor}">'
                     f'{tick:%Y-%m-%d}</text>')
    return parts


def _mark(status: str, x: float, y: float, label: str) -> str:
    title = f"<title>{escape(label)}</title>"
    if status == "success":
        return f'<circle class="exitoso" cx="{x:.1f}" cy="{y}" r="4.5">{title}</circle>'
    if status == "failed":
        return f'<rect class="fallido" x="{x - 4.5:.1f}" y="{y - 4.5}" width="9" height="9">{title}</rect>'
    return (f'<polygon class="faltante" points="{x:.1f},{y - 5.5} {x + 5.5:.1f},{y + 4.5} {x - 5.5:.1f},{y + 4.5}">'
            f"{title}</polygon>")


def timeline(points: list[Point], since: dt.datetime, until: dt.datetime, *, title: str) -> Markup:
    """Every row as a mark on its status's lane, between ``since`` and ``until`` (aware, in the page's zone)."""
    lane_gap, top = 26, 12
    bottom = top + lane_gap * len(LANES)
    counts = {status: sum(1 for p in points if p.status == status) for status in LANES}
    description = ", ".join(f"{counts[s]} {STATUS_WORDS[s]}" for s in LANES)
    parts = [f'<svg class="grafico" viewBox="0 0 {WIDTH} {bottom + 24}" role="img" '
             f'aria-labelledby="linea-titulo linea-desc" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="linea-titulo">{escape(title)}</title>',
             f'<desc id="linea-desc">{escape(description)} entre {since:%Y-%m-%d} y {until:%Y-%m-%d}.</desc>']
    parts += _axis(since, until, top, bottom)
    for index, status in enumerate(LANES):
        y = top + lane_gap * index + lane_gap / 2
        parts.append(f'<text class="etiqueta" x="{LEFT - 10}" y="{y + 4}" text-anchor="end">'
                     f'{STATUS_WORDS[status]} ({counts[status]})</text>')
        parts.append(f'<line class="carril" x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}"/>')
        for point in points:
            if point.status == status:
                size = f" · {human_bytes(point.compressed_bytes)}" if point.compressed_bytes is not None else ""
                label = f"{point.when:%Y-%m-%d %H:%M} · {STATUS_WORDS.get(status, status)}{size}"
                parts.append(_mark(status, _x(point.when, since, until), y, label))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above went through escape()


def size_trend(points: list[Point], since: dt.datetime, until: dt.datetime, *, title: str) -> Markup:
    """Original and compressed size of every successful copy, over time."""
    good = sorted((p for p in points if p.status == "success" and p.compressed_bytes is not None),
                  key=lambda p: p.when)
    top, bottom = 12, 172
    peak = max([p.original_bytes or 0 for p in good] + [p.compressed_bytes or 0 for p in good] + [1])
    ceiling = peak * 1.1

    def y(value: int) -> float:
        return bottom - (bottom - top) * value / ceiling

    latest = f" La última: {human_bytes(good[-1].compressed_bytes)} comprimida." if good else ""
    parts = [f'<svg class="grafico" viewBox="0 0 {WIDTH} {bottom + 24}" role="img" '
             f'aria-labelledby="tamano-titulo tamano-desc" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="tamano-titulo">{escape(title)}</title>',
             f'<desc id="tamano-desc">{len(good)} copias exitosas entre {since:%Y-%m-%d} y {until:%Y-%m-%d}.'
             f'{escape(latest)}</desc>']
    parts += _axis(since, until, top, bottom)
    for fraction in (0.25, 0.5, 0.75, 1.0):
        value = ceiling * fraction
        parts.append(f'<line class="guia" x1="{LEFT}" y1="{y(value):.1f}" x2="{WIDTH - RIGHT}" y2="{y(value):.1f}"/>')
        parts.append(f'<text class="etiqueta" x="{LEFT - 8}" y="{y(value) + 4:.1f}" text-anchor="end">'
                     f'{escape(human_bytes(value))}</text>')
    if not good:
        parts.append(f'<text class="vacio" x="{(LEFT + WIDTH) / 2}" y="{(top + bottom) / 2}" text-anchor="middle">'
                     "Sin copias exitosas en el periodo</text>")
    for series, attribute in (("original", "original_bytes"), ("comprimido", "compressed_bytes")):
        measured = [(p.when, getattr(p, attribute)) for p in good if getattr(p, attribute) is not None]
        coords = [(_x(when, since, until), y(value)) for when, value in measured]
        if len(coords) > 1:
            parts.append(f'<polyline class="serie-{series}" points="'
                         + " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords) + '"/>')
        for (cx, cy), (when, value) in zip(coords, measured, strict=True):
            label = f"{when:%Y-%m-%d %H:%M} · {series}: {human_bytes(value)}"
            parts.append(f'<circle class="punto-{series}" cx="{cx:.1f}" cy="{cy:.1f}" r="2.5">'
                         f"<title>{escape(label)}</title></circle>")
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above went through escape()
