"""Evaluate a display filter (:mod:`ipsecscope.model.filter`) over a session's frames.

The rows (``rowstore.RowStore`` records, or ``FrameRow`` objects in live mode) and the inner
packets (``decode.inner.InnerStore`` records) are read as numpy columns, a window of rows at a
time, and the filter's tree becomes whole-column operations: a million rows take tens of
milliseconds, not a Python call per row. Fields that only a few frames have (IKE header fields,
DNS names, finding codes) are kept per frame and tested in Python, then joined by frame number.

tshark semantics: a field has one *occurrence* per layer that carries it (``ip.src``: the outer
header, the decrypted inner one, the header quoted in an ICMP error); ``==``, ``<``, ``in``... hold
when any occurrence matches; ``!=`` when the field is present and no occurrence equals; a bare
field when any occurrence is present.

The package, one module per responsibility (imports run one way, down this list):
``source`` (what a filter reads), ``values`` (a field's values in one IKE message or quoted
packet, in Python), ``side`` (the side tables cut to a window), ``window`` (a window of rows as
numpy columns), ``fields`` (each field's occurrences, layer by layer), ``evaluate`` (the filter's
tree and comparisons over them); this module runs it window by window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..model.filter import Filter
from ..model.packets import FrameRow
from .evaluate import _Cols as _Cols
from .source import Source as Source
from .source import source_of as source_of
from .values import ike_field as ike_field
from .values import quoted_ike_field as quoted_ike_field
from .values import quoted_values as quoted_values
from .window import NONE64 as NONE64
from .window import ROW_DTYPE as ROW_DTYPE
from .window import _InnerCols as _InnerCols

WINDOW = 1 << 18  # rows per numpy pass (bounds the memory a filter takes on a huge capture)


def select(flt: Filter, src: Source | Sequence[FrameRow], start: int = 0, stop: int | None = None, *,
           cancelled: Callable[[], bool] | None = None) -> list[int]:
    """Positions in ``src.rows`` (not frame numbers), from ``start`` to ``stop``, that match.
    ``cancelled`` is asked between windows (a TUI worker stops early when a newer filter came)."""
    if not isinstance(src, Source):
        src = Source(src)
    stop = len(src.rows) if stop is None else min(stop, len(src.rows))
    if flt.tree is None:
        return list(range(start, stop))
    out: list[int] = []
    inner = _InnerCols(src.inner) if src.inner is not None and len(src.inner) else None
    rows = src.rows
    lo = start
    while lo < stop:
        if cancelled is not None and cancelled():
            break
        hi = min(stop, lo + WINDOW)
        # a frame's rows stay in one window: an AH+ESP bundle's AH and ESP rows answer for each
        # other (window.bundle_partner)
        while lo < hi < stop and rows[hi].frame == rows[hi - 1].frame:
            hi += 1
        cols = _Cols(src, lo, hi, inner, flt)
        mask = cols.eval(flt.tree)
        out.extend((np.flatnonzero(mask) + lo).tolist())
        lo = hi
    return out


def matches(flt: Filter, src: Source | Sequence[FrameRow]) -> list[int]:
    """Frame numbers (not positions) that match, each once, in order."""
    if not isinstance(src, Source):
        src = Source(src)
    rows = src.rows
    seen: list[int] = []
    for i in select(flt, src):
        f = rows[i].frame
        if not seen or seen[-1] != f:
            seen.append(f)
    return seen
