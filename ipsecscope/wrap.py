"""Text wrapped at plain spaces only, for the CLI's text output and the TUI's panes alike.

rich and Textual wrap at any whitespace, the no-break space (U+00A0) included, and fold a word
that does not fit: ``frame`` / ``3]`` or ``0x427e7d`` / ``84``. Here a line breaks only at an
ASCII space, so an SPI, an address, ``address:port``, a finding code, an SA name or a frame
reference joined by :data:`ipsecscope.model.idtext.NBSP` stays whole; only a word wider than a
whole line is cut. The no-break spaces have done their work once the lines are laid out and are
written as plain spaces (``grep 'frame 3'`` finds them; a copy from the terminal holds none).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions
from rich.measure import Measurement
from rich.text import Text

from .model.idtext import NBSP

# A word is what lies between plain spaces; the spaces before it are kept only at the start of
# the first line (the paragraph's own indent).
_WORD = re.compile(r"( *)([^ ]+)")


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
    string, rich markup in it is read (CLI only: the TUI gives wire text as :class:`Text`, never
    parsed). Piped (``no_wrap``), it stays one line."""

    def __init__(self, text: Text | str, indent: int = 4) -> None:
        self.text = Text.from_markup(text, emoji=False) if isinstance(text, str) else text
        self.indent = indent

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        if options.no_wrap:
            yield spaced(self.text)
            return
        pad = Text(" " * self.indent)
        # A paragraph with line breaks: every line after the first is a continuation.
        for p, para in enumerate(self.text.split("\n", allow_blank=True)):
            for i, (a, b) in enumerate(line_spans(para.plain, options.max_width - (p and self.indent), 0 if p else self.indent)):
                line = para[a:b]
                line.rstrip()
                line.no_wrap, line.end = True, "\n"
                line = spaced(line)
                yield line if i == 0 and p == 0 else Text.assemble(pad, line, no_wrap=True)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(min(options.max_width, self.indent + 1), cell_len(self.text.plain))


def spaced(text: Text) -> Text:
    """``text`` with its no-break spaces written as spaces (the same length: styles stay put)."""
    if NBSP not in text.plain:
        return text
    out = text.copy()
    out.plain = text.plain.replace(NBSP, " ")
    return out
