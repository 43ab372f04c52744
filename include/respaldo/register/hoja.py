"""The FT-GTI-004 sheet as an office prints it: one module for the CLI (``respaldo registro --xlsx/--pdf``)
and the pages' downloads.

:func:`build` reads a period of the register into a :class:`Sheet` (already in the office's words and
the inventory's timezone); :func:`write_xlsx` and :func:`write_pdf` lay it out on A4 landscape with
the form's header (organization, code, version, period), the column headings repeated on every
printed page, page numbers, and the «Elaboró» / «Revisó» signature lines at the end.

One line per register row of the period (in practice one per slot): the ``missing`` rows a later
copy of their slot covered are left out, since that slot has its line.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import logging
import zoneinfo
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from respaldo.errors import RespaldoError
from respaldo.process import human_bytes
from respaldo.register.consulta import Filter, last_approved_drills, rows_between
from respaldo.register.control import STATUS_WORDS, word

FORM_CODE = "FT-GTI-004"
FORM_TITLE = "Formato de control de backup"
SHA_SHOWN = 12
NOTES_SHOWN = 300

MONTHS = ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
          "noviembre", "diciembre"]

#: The sheet's columns: heading, width on the PDF page (mm; A4 landscape leaves 277 mm), XLSX width (chars).
COLUMNS: list[tuple[str, float, float]] = [
    ("No.", 7, 6),
    ("Fecha programada", 18, 17),
    ("Objetivo", 30, 24),
    ("Frecuencia", 25, 20),
    ("Mecanismo", 17, 12),
    ("Estado", 13, 10),
    ("Fecha de creación", 18, 19),
    ("Tamaño original", 15, 12),
    ("Tamaño comprimido", 17.5, 12),
    ("SHA-256", 20, 15),
    ("Responsable", 30, 28),
    ("Observaciones", 51.5, 50),
    ("Último simulacro aprobado", 15, 13),
]
HEADINGS = [heading for heading, _, _ in COLUMNS]
SIGNATURE_FIELDS = ["Nombre", "Cargo", "Firma", "Fecha"]

#: Where Debian (fonts-dejavu-core), Fedora and Arch put DejaVu Sans.
FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu-sans-fonts"),
             Path("/usr/share/fonts/dejavu"), Path("/usr/share/fonts/TTF")]


class SheetError(RespaldoError):
    """The sheet cannot be made: a period that is not a date, no Unicode font to print with..."""


@dataclass(frozen=True)
class Period:
    """The days a sheet covers, both included (a calendar month, or any range of days)."""

    first: dt.date
    last: dt.date

    @classmethod
    def month(cls, text: str) -> Period:
        """``"2026-11"`` -> November 2026."""
        try:
            start = dt.datetime.strptime(text.strip(), "%Y-%m").date()
        except ValueError as err:
            raise SheetError(f"mes no válido «{text}» (use AAAA-MM, por ejemplo 2026-11)") from err
        following = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return cls(start, following - dt.timedelta(days=1))

    @classmethod
    def containing(cls, day: dt.date) -> Period:
        return cls.month(f"{day:%Y-%m}")

    @classmethod
    def days(cls, first: dt.date, last: dt.date) -> Period:
        if last < first:
            raise SheetError(f"el periodo termina ({last:%Y-%m-%d}) antes de empezar ({first:%Y-%m-%d})")
        return cls(first, last)

    @property
    def is_month(self) -> bool:
        return self.first.day == 1 and self == Period.containing(self.first)

    def label(self) -> str:
        span = f"{self.first:%Y-%m-%d} a {self.last:%Y-%m-%d}"
        return f"{MONTHS[self.first.month - 1]} de {self.first.year} ({span})" if self.is_month else span

    def stem(self) -> str:
        """For file names: ``2026-11`` or ``2026-11-03_2026-11-20``."""
        return f"{self.first:%Y-%m}" if self.is_month else f"{self.first:%Y-%m-%d}_{self.last:%Y-%m-%d}"

    def bounds(self, zone: zoneinfo.ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
        """From the first day's midnight to the midnight after the last day, in ``zone``."""
        start = dt.datetime.combine(self.first, dt.time(), zone)
        end = dt.datetime.combine(self.last + dt.timedelta(days=1), dt.time(), zone)
        return start, end


@dataclass(frozen=True)
class Line:
    """One line of the sheet, every cell already in the office's words (``status`` is the raw value)."""

    number: int
    slot: dt.datetime | None
    target: str
    frequency: str
    mechanism: str
    status: str
    created: dt.datetime | None
    original: str
    compressed: str
    sha256: str
    responsible: str
    notes: str
    drill: dt.date | None

    def cells(self) -> list[Any]:
        """The row as the XLSX holds it: dates stay dates (naive, in the sheet's timezone)."""
        return [self.number, self.slot, self.target, self.frequency, self.mechanism, STATUS_WORDS.get(self.status,
                self.status), self.created, self.original, self.compressed, self.sha256, self.responsible,
                self.notes, self.drill]

    def texts(self) -> list[str]:
        """The row as the PDF prints it."""
        cells = [str(value) if value is not None else "" for value in self.cells()]
        cells[1] = f"{self.slot:%Y-%m-%d %H:%M}" if self.slot else ""
        cells[6] = f"{self.created:%Y-%m-%d %H:%M:%S}" if self.created else ""
        cells[12] = f"{self.drill:%Y-%m-%d}" if self.drill else ""
        return cells


@dataclass
class Sheet:
    """A period of the register, ready to print."""

    organization: str
    version: str
    period: Period
    timezone: str
    generated_at: dt.datetime
    lines: list[Line] = field(default_factory=list)
    target: str | None = None
    code: str = FORM_CODE
    title: str = FORM_TITLE

    def summary(self) -> str:
        counts = Counter(line.status for line in self.lines)
        parts = [f"{counts[status]} {STATUS_WORDS[status]}{'s' if counts[status] != 1 else ''}"
                 for status in ("success", "failed", "missing")]
        return f"{len(self.lines)} línea(s): " + ", ".join(parts) + "."

    def scope(self) -> str:
        return f"Objetivo: {self.target}." if self.target else "Todos los objetivos."

    def notice(self) -> str:
        return (f"Fechas en hora de {self.timezone}. Generada el {self.generated_at:%Y-%m-%d %H:%M}. "
                f"{self.scope()} {self.summary()}")

    def filename(self, extension: str) -> str:
        suffix = f"_{self.target}" if self.target else ""
        return f"{self.code}_{self.period.stem()}{suffix}.{extension}"


def build(conn, *, organization: str, version: str, timezone: str, period: Period, target: str | None = None,
          dag_ids: frozenset[str] | None = None, now: dt.datetime | None = None) -> Sheet:
    """Read ``period`` of the register (one target, or all) into a :class:`Sheet`."""
    zone = zoneinfo.ZoneInfo(timezone)
    since, until = period.bounds(zone)
    rows = rows_between(conn, Filter(target=target, since=since, until=until, dag_ids=dag_ids))
    drills = last_approved_drills(conn, until)

    def local(value: dt.datetime | None) -> dt.datetime | None:
        return value.astimezone(zone).replace(tzinfo=None) if value is not None else None

    lines = []
    for number, row in enumerate(rows, 1):
        drill = drills.get(row["target"])
        lines.append(Line(
            number=number, slot=local(row["logical_date"]), target=row["target"], frequency=row["frequency"],
            mechanism=word("mechanism", row["mechanism"]), status=row["status"], created=local(row["backup_at"]),
            original=human_bytes(row["original_bytes"]) if row["original_bytes"] is not None else "",
            compressed=human_bytes(row["compressed_bytes"]) if row["compressed_bytes"] is not None else "",
            sha256=(row["sha256"] or "")[:SHA_SHOWN], responsible=row["responsible"] or "",
            notes=observations(row), drill=drill.astimezone(zone).date() if drill else None,
        ))
    generated = (now or dt.datetime.now(dt.UTC)).astimezone(zone).replace(tzinfo=None)
    return Sheet(organization=organization, version=version, period=period, timezone=timezone,
                 generated_at=generated, lines=lines, target=target)


def observations(row: dict[str, Any]) -> str:
    """What the «Observaciones» cell says: the person's notes, the delivered file, why it failed, why retention
    deleted its file."""
    parts = [row["notes"]] if row.get("notes") else []
    if row.get("original_name"):
        parts.append(f"Archivo entregado: {row['original_name']}.")
    if row.get("error") and row["status"] != "success":
        parts.append(row["error"])
    if row.get("deleted_at"):  # retention removed the file; the row stays, and says so
        parts.append("Archivo borrado por la retención: "
                     + (row.get("deletion_reason") or "sin motivo registrado").removeprefix("Retención: "))
    text = " ".join(part.strip() for part in parts)
    return text if len(text) <= NOTES_SHOWN else text[:NOTES_SHOWN - 1].rstrip() + "…"


# --- XLSX --------------------------------------------------------------------------------------------


def write_xlsx(sheet: Sheet, out: str | Path | IO[bytes]) -> None:
    """The sheet as an Excel workbook, set up to print on A4 landscape."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.properties import PageSetupProperties

    book = Workbook()
    ws = book.active
    ws.title = f"{sheet.code} {sheet.period.stem()}"[:31]
    last_column = get_column_letter(len(COLUMNS))
    bold = Font(bold=True)
    thin = Side(style="thin", color="808080")
    box = Border(left=thin, right=thin, top=thin, bottom=thin)
    wrap = Alignment(wrap_text=True, vertical="top")
    # Each body cell gets a copy of a prepared style array, the way openpyxl's own WorksheetCopy copies
    # styles: setting font, border and alignment cell by cell hashes style objects dozens of times per
    # cell (seconds for a month's sheet), and named styles are slower still.
    scratch = book.create_sheet("scratch")
    templates = {}
    for name, number_format, font in (("text", "General", None), ("datetime", "yyyy-mm-dd hh:mm:ss", None),
                                      ("date", "yyyy-mm-dd", None), ("alert", "General", bold)):
        cell = scratch.cell(1, len(templates) + 1)
        cell.border, cell.alignment, cell.number_format = box, wrap, number_format
        if font is not None:
            cell.font = font
        templates[name] = cell._style
    book.remove(scratch)
    column_styles = [templates["text"]] * len(COLUMNS)
    column_styles[1] = column_styles[6] = templates["datetime"]
    column_styles[12] = templates["date"]

    ws.append([sheet.organization])
    ws.append([sheet.title.upper()])
    ws.append([f"Código: {sheet.code}", None, None, f"Versión: {sheet.version}", None, None,
               f"Periodo: {sheet.period.label()}"])
    ws.append([sheet.notice()])
    ws.append([])
    for row in (1, 2):
        ws.merge_cells(f"A{row}:{last_column}{row}")
        ws[f"A{row}"].font = Font(bold=True, size=13 if row == 1 else 12)
        ws[f"A{row}"].alignment = Alignment(horizontal="center")
    ws.merge_cells("A3:C3")
    ws.merge_cells("D3:F3")
    ws.merge_cells(f"G3:{last_column}3")
    ws.merge_cells(f"A4:{last_column}4")
    for cell in ws[3]:
        cell.font = bold

    ws.append(HEADINGS)
    heading_row = ws.max_row  # read right after appending: an empty row appended above holds no cell to count
    fill = PatternFill("solid", fgColor="D9D9D9")
    for cell in ws[heading_row]:
        cell.font, cell.fill, cell.border = bold, fill, box
        cell.alignment = Alignment(wrap_text=True, vertical="center", horizontal="center")
    for row, line in enumerate(sheet.lines, heading_row + 1):  # ws.max_row walks every cell: not in a loop
        ws.append(line.cells())
        for column, style in enumerate(column_styles, 1):
            ws.cell(row, column)._style = copy.copy(style)
        if line.status != "success":
            ws.cell(row, 6)._style = copy.copy(templates["alert"])
    for index, (_, _, width) in enumerate(COLUMNS, 1):
        ws.column_dimensions[get_column_letter(index)].width = width

    ws.append([])
    ws.append(["Elaboró", None, None, None, None, None, "Revisó"])
    signatures = ws.max_row
    ws.merge_cells(f"A{signatures}:F{signatures}")
    ws.merge_cells(f"G{signatures}:{last_column}{signatures}")
    ws[f"A{signatures}"].font = ws[f"G{signatures}"].font = bold
    for name in SIGNATURE_FIELDS:
        ws.append([f"{name}: " + "_" * 40, None, None, None, None, None, f"{name}: " + "_" * 40])
        row = ws.max_row
        ws.merge_cells(f"A{row}:F{row}")
        ws.merge_cells(f"G{row}:{last_column}{row}")
        ws.row_dimensions[row].height = 24

    ws.freeze_panes = f"A{heading_row + 1}"
    ws.print_title_rows = f"{heading_row}:{heading_row}"
    ws.page_setup.orientation = ws.ORIENTATION_LANDSCAPE
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
    ws.page_margins.left = ws.page_margins.right = 0.4
    ws.oddHeader.left.text = f"{sheet.code} · {sheet.organization}"
    ws.oddHeader.right.text = f"Periodo: {sheet.period.label()}"
    ws.oddFooter.left.text = f"{sheet.code} · Versión {sheet.version}"
    ws.oddFooter.right.text = "Página &P de &N"
    book.properties.title = f"{sheet.code} {sheet.title} — {sheet.period.label()}"
    book.properties.creator = "respaldo"
    book.save(out)


def xlsx_bytes(sheet: Sheet) -> bytes:
    buffer = io.BytesIO()
    write_xlsx(sheet, buffer)
    return buffer.getvalue()


# --- PDF ---------------------------------------------------------------------------------------------


def _fonts() -> tuple[Path, Path]:
    for folder in FONT_DIRS:
        regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            return regular, bold
    raise SheetError("no se encontró la fuente DejaVu Sans (DejaVuSans.ttf y DejaVuSans-Bold.ttf), necesaria "
                     "para imprimir tildes y eñes en el PDF: instale el paquete fonts-dejavu-core")


def write_pdf(sheet: Sheet, out: str | Path | IO[bytes]) -> None:
    """The sheet as a PDF: A4 landscape, form header and column headings on every page, page numbers."""
    data = pdf_bytes(sheet)
    if isinstance(out, (str, Path)):
        Path(out).write_bytes(data)
    else:
        out.write(data)


def pdf_bytes(sheet: Sheet) -> bytes:
    from fpdf import FPDF

    regular, bold = _fonts()
    # fontTools logs every step of embedding the font subset at INFO: dozens of lines per PDF, nothing
    # a person needs in the CLI's output or the api-server's log.
    logging.getLogger("fontTools").setLevel(logging.WARNING)

    class SheetPdf(FPDF):
        def header(self) -> None:
            self.set_font("DejaVu", "B", 10)
            self.cell(0, 5, sheet.organization, new_x="LMARGIN", new_y="NEXT", align="C")
            self.cell(0, 5, sheet.title.upper(), new_x="LMARGIN", new_y="NEXT", align="C")
            self.set_font("DejaVu", "", 8)
            self.cell(0, 4.5, f"Código: {sheet.code}    Versión: {sheet.version}    "
                      f"Periodo: {sheet.period.label()}", new_x="LMARGIN", new_y="NEXT", align="C")
            if self.page_no() == 1:
                self.set_font("DejaVu", "", 7)
                self.multi_cell(0, 3.5, sheet.notice(), new_x="LMARGIN", new_y="NEXT", align="C")
            self.ln(2)

        def footer(self) -> None:
            self.set_y(-10)
            self.set_font("DejaVu", "", 7)
            self.cell(0, 5, f"{sheet.code} · Versión {sheet.version} · {sheet.period.label()}", align="L")
            self.set_x(self.l_margin)
            self.cell(0, 5, f"Página {self.page_no()} de {{nb}}", align="R")

    pdf = SheetPdf(orientation="L", unit="mm", format="A4")
    pdf.set_title(f"{sheet.code} {sheet.title} — {sheet.period.label()}")
    pdf.set_creator("respaldo")
    pdf.set_margins(10, 10, 10)
    pdf.set_auto_page_break(True, margin=13)
    pdf.add_font("DejaVu", "", str(regular))
    pdf.add_font("DejaVu", "B", str(bold))
    pdf.add_page()
    _Table(pdf).draw(sheet.lines)
    _signatures(pdf)
    return bytes(pdf.output())


class _Table:
    """The sheet's table drawn line by line: fpdf2's own table lays out every cell through its full text
    engine, which took tens of seconds for a month of 3,000 lines; here each cell is wrapped once with
    memoised word widths and written with ``text()``. Headings are repeated at the top of every page."""

    SIZE = 6.5          # font size, points
    LEADING = 2.9       # mm between the baselines of a cell's lines
    PAD = 0.9           # mm inside each cell

    def __init__(self, pdf) -> None:
        self.pdf = pdf
        self.widths = [width for _, width, _ in COLUMNS]
        self.edges = [pdf.l_margin]
        for width in self.widths:
            self.edges.append(self.edges[-1] + width)
        # The fonts' advance widths (1/1000 em per character): measuring with them directly is what
        # get_string_width() ends up doing, without a font switch and a text fragment per call.
        self.advances = {style: pdf.fonts[f"dejavu{style}"].cw for style in ("", "B")}
        self.scale = self.SIZE / 1000 / pdf.k
        self.top = 0.0

    def width(self, text: str, style: str = "") -> float:
        advances = self.advances[style]
        return sum(advances[ord(char)] for char in text) * self.scale

    def wrap(self, text: str, room: float, style: str = "") -> list[str]:
        if not text or self.width(text, style) <= room:
            return [text]
        lines, current = [], ""
        for piece in text.split(" "):
            candidate = f"{current} {piece}" if current else piece
            if self.width(candidate, style) <= room or not current:
                current = candidate
            else:
                lines.append(current)
                current = piece
            while self.width(current, style) > room and len(current) > 1:  # one word wider than the cell
                cut = len(current)
                while cut > 1 and self.width(current[:cut], style) > room:
                    cut -= 1
                lines.append(current[:cut])
                current = current[cut:]
        lines.append(current)
        return lines

    def row_height(self, cells: list[list[str]]) -> float:
        return max(len(lines) for lines in cells) * self.LEADING + 2 * self.PAD

    def write(self, cells: list[list[str]], styles: list[str], fill: bool = False) -> None:
        pdf = self.pdf
        height = self.row_height(cells)
        y = pdf.get_y()
        if fill:
            pdf.set_fill_color(217, 217, 217)
            pdf.rect(self.edges[0], y, self.edges[-1] - self.edges[0], height, style="F")
            # Back to the text colour: while they differ, fpdf2 wraps every text() in a colour change.
            pdf.set_fill_color(0)
        current = None
        for lines, style, x in zip(cells, styles, self.edges, strict=False):
            if style != current:
                pdf.set_font("DejaVu", style, self.SIZE)
                current = style
            for number, text in enumerate(lines):
                if text:
                    pdf.text(x + self.PAD, y + self.PAD + (number + 0.78) * self.LEADING, text)
        pdf.line(self.edges[0], y + height, self.edges[-1], y + height)
        pdf.set_y(y + height)

    def headings(self) -> None:
        self.top = self.pdf.get_y()
        self.pdf.line(self.edges[0], self.top, self.edges[-1], self.top)
        cells = [self.wrap(heading, width - 2 * self.PAD, "B") for heading, width in zip(HEADINGS, self.widths,
                                                                                           strict=True)]
        self.write(cells, ["B"] * len(cells), fill=True)

    def close_page(self) -> None:
        """The vertical rules of the part of the table on this page."""
        bottom = self.pdf.get_y()
        for x in self.edges:
            self.pdf.line(x, self.top, x, bottom)

    def draw(self, lines: list[Line]) -> None:
        pdf = self.pdf
        pdf.set_draw_color(128, 128, 128)
        pdf.set_line_width(0.15)
        self.headings()
        for line in lines:
            styles = ["B" if index == 5 and line.status != "success" else "" for index in range(len(COLUMNS))]
            cells = [self.wrap(text, width - 2 * self.PAD, style)
                     for text, width, style in zip(line.texts(), self.widths, styles, strict=True)]
            if pdf.get_y() + self.row_height(cells) > pdf.page_break_trigger:
                self.close_page()
                pdf.add_page()
                self.headings()
            self.write(cells, styles)
        self.close_page()
        pdf.set_draw_color(0, 0, 0)


def _signatures(pdf) -> None:
    """«Elaboró» and «Revisó», side by side, each with name, position, signature and date lines."""
    height = 8 + 9 * len(SIGNATURE_FIELDS)
    if pdf.get_y() + height > pdf.page_break_trigger:
        pdf.add_page()
    pdf.ln(6)
    half = (pdf.w - pdf.l_margin - pdf.r_margin) / 2
    top = pdf.get_y()
    for column, title in enumerate(("Elaboró", "Revisó")):
        x = pdf.l_margin + column * half
        pdf.set_xy(x, top)
        pdf.set_font("DejaVu", "B", 9)
        pdf.cell(half - 10, 6, title)
        for number, name in enumerate(SIGNATURE_FIELDS):
            y = top + 8 + number * 9
            pdf.set_xy(x, y)
            pdf.set_font("DejaVu", "", 8)
            pdf.cell(18, 6, f"{name}:")
            pdf.line(x + 18, y + 5, x + half - 14, y + 5)
    pdf.set_y(top + height)
