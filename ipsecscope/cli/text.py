"""How the text commands lay out lines: piped output is never wrapped, and in a terminal a line
wraps at spaces only, with a hanging indent, so an SPI (``0x427e7d84``), an address, an
``address:port``, a finding code or an SA name is never split across two lines.

rich's own wrapping folds any word that does not fit and its tables fold or cut cells
(``0x427e7d`` / ``84``), so tables here are printed only when their natural width fits the
terminal; otherwise each row becomes a record (see :func:`table_or_records`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

# A word is what lies between plain spaces; the spaces before it are kept only at the start of
# the first line (the paragraph's own indent).
_WORD = re.compile(r"( *)([^ ]+)")


def text_console(file=None) -> Console:
    """The console text commands print to. Piped or redirected, lines are never wrapped (a script
    or grep gets one record per line, an SPI or address never split); in a terminal, lines wrap
    at spaces at the terminal's width (:class:`Hanging`)."""
    out = file or sys.stdout
    # emoji=False: ":100:" in "2001:db8::100:500" is an address and a port, not an emoji code.
    if out.isatty():
        return Console(file=file, emoji=False)
    return Console(file=file, width=1 << 16, soft_wrap=True, emoji=False)


def line_spans(plain: str, width: int, indent: int) -> list[tuple[int, int]]:
    """(start, end) of each line of ``plain`` wrapped at spaces: the first line ``width`` cells
    wide, the others ``width - indent``. A word wider than its line (a key, a long path) is the
    only thing ever cut, in line-wide pieces."""
    spans: list[tuple[int, int]] = []
    rest = max(width - indent, 1)
    avail = max(width, 1)
    start: int | None = None  # the current line's first character
    end = col = 0
    for m in _WORD.finditer(plain):
        lead, word = m.group(1), m.group(2)
        if start is None:  # the first word keeps the paragraph's own indent
            start, col = m.start(), cell_len(lead)
        elif col + len(lead) + cell_len(word) <= avail:
            col += len(lead)
        else:
            spans.append((start, end))
            start, col, avail = m.start(2), 0, rest
        for i in range(m.start(2), m.end()):  # cut only a word wider than a whole line
            w = cell_len(plain[i])
            if col and col + w > avail:
                spans.append((start, i))
                start, col, avail = i, 0, rest
            col += w
        end = m.end()
    if start is None:
        return [(0, 0)]
    spans.append((start, end))
    return spans


class Hanging:
    """A paragraph whose wrapped lines continue ``indent`` columns in (a hanging indent). Given a
    string, rich markup in it is read. Piped (``no_wrap``), it stays one line."""

    def __init__(self, text: Text | str, indent: int = 4) -> None:
        self.text = Text.from_markup(text, emoji=False) if isinstance(text, str) else text
        self.indent = indent

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        if options.no_wrap:
            yield self.text
            return
        pad = Text(" " * self.indent)
        # A paragraph with line breaks: every line after the first is a continuation.
        for p, para in enumerate(self.text.split("\n", allow_blank=True)):
            for i, (a, b) in enumerate(line_spans(para.plain, options.max_width - (p and self.indent), 0 if p else self.indent)):
                line = para[a:b]
                line.rstrip()
                line.no_wrap, line.end = True, "\n"
                yield line if i == 0 and p == 0 else Text.assemble(pad, line, no_wrap=True)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(min(options.max_width, self.indent + 1), cell_len(self.text.plain))


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
