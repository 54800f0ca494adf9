"""Wire text is data, never markup.

Textual reads a ``str`` given to a tree label, a DataTable cell or a toast as console markup, and
rich reads a ``str`` table cell as markup with emoji codes. Text from a capture (IKE IDs, DNS
names, tshark's field values, file names, filter text) then either raises (``[/x]`` closes a tag
that was never opened: a crash on bad input) or shows what the capture does not hold (``:100:`` in
the IPv6 address 2001:db8::100:1 becomes an emoji). These wrappers take every ``str`` literally;
styled text is built with :class:`rich.text.Text`, which is never parsed.

A cell holding a no-break space (a frame reference, ``model.idtext.frame_ref``) is wrapped by
:class:`ipsecscope.wrap.Hanging`, at plain spaces only: rich breaks at a no-break space too.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Tree

from ..model.idtext import NBSP
from ..wrap import Hanging


def plain(cell: Any) -> Any:
    """``cell`` as literal text when it is a ``str``; any other renderable as it is."""
    return Text(cell) if isinstance(cell, str) else cell


def table_cell(cell: Any) -> Any:
    """A rich table cell: :func:`plain`, and text that must not break at its no-break spaces
    wrapped at plain spaces only."""
    text = plain(cell)
    if isinstance(text, Text) and NBSP in text.plain:
        return Hanging(text, 0)
    return text


class PlainTable(Table):
    """A rich Table whose ``str`` cells are literal text (no markup, no emoji codes)."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*(table_cell(r) for r in renderables), **kwargs)


class PlainTree(Tree):  # type: ignore[type-arg]
    """A Textual Tree whose ``str`` labels are literal text."""

    def process_label(self, label: Any) -> Text:
        return super().process_label(plain(label))
