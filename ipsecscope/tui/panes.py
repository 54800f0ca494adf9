"""The one way a pane gets the session: :class:`SessionView` down, ``show_session(view)``.

The app builds a view when a capture has loaded and at each live refresh, and hands it to every
widget that implements :class:`SessionPane`, in one loop. A pane that is expensive to draw and
not on screen (the timeline, live) may keep the view and draw it when it is shown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..model.packets import FrameRow
from ..model.sa import Finding, SaTable
from ..session import Session

BUCKETS = 240  # time buckets of the timeline's ESP sparklines


def activity(rows: Sequence[FrameRow], t0: float, t1: float, buckets: int = BUCKETS) -> dict[object, list[float]]:
    """ESP/AH packets per time bucket, per CHILD SA id (or per SPI when no SA is bound)."""
    span = (t1 - t0) or 1.0
    out: dict[object, list[float]] = {}
    for r in rows:
        if r.spi is None:
            continue
        key: object = r.child_sa if r.child_sa is not None else ("spi", r.spi)
        series = out.get(key)
        if series is None:
            series = out[key] = [0.0] * buckets
        b = int((r.ts - t0) / span * (buckets - 1))
        series[min(max(b, 0), buckets - 1)] += 1
    return out



@dataclass(slots=True)
class SessionView:
    """One consistent look at a session.

    File mode: the session is final once loaded. Live mode: ``rows`` is a snapshot taken under
    ``lock`` (the runner's), and a pane that reads ``session``/``table`` later must take ``lock``.
    """

    session: Session
    rows: Sequence[FrameRow]
    findings: list[Finding]
    live: bool = False
    lock: Any = field(default_factory=contextlib.nullcontext)
    _activity: dict[object, list[float]] | None = None  # computed off the UI thread when loading a file

    @property
    def table(self) -> SaTable:
        return self.session.table

    @property
    def activity(self) -> dict[object, list[float]]:
        """ESP activity per CHILD SA / SPI for the timeline's sparklines (one pass over the rows)."""
        if self._activity is None:
            t0 = self.table.first_ts or 0.0
            self._activity = activity(self.rows, t0, self.table.last_ts or t0)
        return self._activity


@runtime_checkable
class SessionPane(Protocol):
    """A widget that shows (part of) the session."""

    def show_session(self, view: SessionView) -> None: ...
