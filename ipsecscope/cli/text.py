"""How the text commands lay out lines: piped output is never wrapped, and in a terminal a line
wraps at spaces only, with a hanging indent, so an SPI (``0x427e7d84``), an address, an
``address:port``, a finding code or an SA name is never split across two lines.

rich's own wrapping folds any word that does not fit and its tables fold or cut cells
(``0x427e7d`` / ``84``), so tables here are printed only when their natural width fits the
terminal; otherwise each row becomes a record (see :func:`table_or_records`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ..wrap import Hanging, line_spans

__all__ = ["Hanging", "fits", "line_spans", "table_or_records", "text_console"]


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """rich's own answer to a reader that left (``| head``) is ``SystemExit(1)``; the JSON
        outputs and plain prints raise BrokenPipeError, which ``cli.main`` ends quietly with 0.
        One answer for every command, text or JSON."""
        self.quiet = True
        raise BrokenPipeError


def text_console(file: TextIO | None = None) -> Console:
    """The console text commands print to. Piped or redirected, lines are never wrapped (a script
    or grep gets one record per line, an SPI or address never split); in a terminal, lines wrap
    at spaces at the terminal's width (:class:`Hanging`)."""
    out = file or sys.stdout
    # emoji=False: ":100:" in "2001:db8::100:500" is an address and a port, not an emoji code.
    if out.isatty():
        return _Console(file=file, emoji=False)
    return _Console(file=file, width=1 << 16, soft_wrap=True, emoji=False)


def fits(console: Console, table: Table) -> bool:
    """Does ``table`` fit the console at its natural width (no cell wrapped, folded or cut)?"""
    # measured without the console's width as a bound (rich clamps the measurement to it)
    return Measurement.get(console, console.options.update_width(1 << 16), table).maximum <= console.width


def table_or_records(console: Console, table: Table, records: Iterable[Text | str], indent: int = 4) -> None:
    """Print ``table`` when it fits at its natural width (always when piped); else its title and
    one :class:`Hanging` record per row, so no cell is ever folded across lines."""
    if fits(console, table):
        console.print(table)
        return
    if table.title:
        console.print(table.title)
    for record in records:
        console.print(Hanging(record, indent))
