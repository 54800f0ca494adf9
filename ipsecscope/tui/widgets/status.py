"""The status line: whole segments, most telling first, as many as the width holds.

A segment is either shown whole or left out (at 80 columns a count cut in half, "keys 6" → "6",
reads as something else). The two spaces between segments belong to the segment *before* them:
SVG renderers (rsvg, the snapshot viewers) drop the leading spaces of each styled run, which
glued "capture.pcapng" to "34 frames" in the snapshots when the spaces opened the next run.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

SEP = "  "


def fit(segments: Sequence[Text], width: int) -> Text:
    """``segments`` in order, each whole and followed by :data:`SEP`, until the next does not fit."""
    out = Text(no_wrap=True, overflow="crop")
    for seg in segments:
        need = len(seg) if not out else len(SEP) + len(seg)
        if out and len(out) + need > width:
            break
        if out:
            last = out.spans[-1].style if out.spans and out.spans[-1].end == len(out) else out.style
            out.append(SEP, last)
        out.append_text(seg)
    return out


class StatusLine(Widget):
    """One line at the top: input, frames, findings, decryption, SAs, keys, frame kinds."""

    DEFAULT_CSS = "StatusLine { height: 1; }"

    def __init__(self, text: Text, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.segments: list[Text] = [text]

    def update(self, text: Text | Sequence[Text]) -> None:
        """A message (one segment) or the counts (several, cut at a segment boundary)."""
        self.segments = [text] if isinstance(text, Text) else list(text)
        self.refresh()

    def render(self) -> Text:
        width = self.size.width or 10_000  # before layout (tests read render() directly): everything
        return fit(self.segments, width)
