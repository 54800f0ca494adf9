"""The one way a pane gets the session: :class:`SessionView` down, ``show_session(view)``.

The app builds a view when a capture has loaded and at each live refresh, and hands it to every
widget that implements :class:`SessionPane`, in one loop. A pane that is expensive to draw and
not on screen (the timeline, live) may keep the view and draw it when it is shown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..model.packets import FrameRow
from ..model.plural import plural
from ..model.sa import Finding, SaTable
from ..rowstore import RowStore

if TYPE_CHECKING:
    from ..session import Session

BUCKETS = 240  # time buckets of the timeline's ESP sparklines
_CHUNK = 1 << 18  # rows read at once by the packed activity count


def activity(rows: Sequence[FrameRow], t0: float, t1: float, buckets: int = BUCKETS,
             upto: int | None = None) -> dict[object, list[float]]:
    """ESP/AH packets per time bucket, per CHILD SA id (or per SPI when no SA is bound), over the
    first ``upto`` rows (None: all), keys in the order their first packet came."""
    if type(rows) is RowStore:
        return _packed_activity(rows, t0, t1, buckets, len(rows) if upto is None else upto)
    if upto is not None:
        rows = rows[:upto]
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


def _packed_activity(rows: RowStore, t0: float, t1: float, buckets: int, n: int) -> dict[object, list[float]]:
    """:func:`activity` over a RowStore's records with numpy (a million rows in tens of
    milliseconds: the timeline is drawn while a capture loads, too). Same answer: the bucket is
    computed with the same float operations, and keys come in first-packet order."""
    import numpy as np  # not on the first screen: the loader has imported it by the first look

    from ..rowstore import row_dtype

    dt = row_dtype()
    span = (t1 - t0) or 1.0
    size = dt.itemsize
    counts: dict[object, np.ndarray] = {}
    first: dict[object, int] = {}
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        # a copy of the slice: numpy never holds the store's growing buffer
        arr = np.frombuffer(bytes(rows._buf[lo * size:hi * size]), dt)
        pos = np.flatnonzero(arr["spi"] >= 0)  # rows with an SPI (ESP, AH)
        if not len(pos):
            continue
        a = arr[pos]
        b = ((a["ts"] - t0) / span * (buckets - 1)).astype(np.int64)  # truncates as int() does
        np.clip(b, 0, buckets - 1, out=b)
        child = a["child"]
        bound = child >= 0
        for kind, keys in (("child", child[bound]), ("spi", a["spi"][~bound])):
            if not len(keys):
                continue
            where = pos[bound] if kind == "child" else pos[~bound]
            bk = b[bound] if kind == "child" else b[~bound]
            uniq, at, inv = np.unique(keys, return_index=True, return_inverse=True)
            grid = np.bincount(inv.reshape(-1) * buckets + bk, minlength=len(uniq) * buckets).reshape(len(uniq), buckets)
            for k, key, row in zip(at.tolist(), uniq.tolist(), grid, strict=True):
                name: object = key if kind == "child" else ("spi", key)
                if name in counts:
                    counts[name] += row
                else:
                    counts[name] = row.astype(np.float64)
                    first[name] = lo + int(where[k])
    return {k: counts[k].tolist() for k in sorted(counts, key=first.__getitem__)}



@dataclass(slots=True)
class SessionView:
    """One consistent look at a session.

    File mode: the session is final once loaded. Live mode: ``rows`` is a snapshot taken under
    ``lock`` (the runner's), and a pane that reads ``session``/``table`` later must take ``lock``.
    While a file loads (``partial``: the fraction of it read), the loader waits at a consistent
    point while the panes draw the view; ``rows`` is the session's growing store and the view
    covers its first ``upto`` rows; a pane that reads the session later must take ``lock``.
    """

    session: Session
    rows: Sequence[FrameRow]
    findings: list[Finding]
    live: bool = False
    ended: bool = False  # live: the input has ended (a followed file or pipe closed), nothing more comes
    lock: Any = field(default_factory=contextlib.nullcontext)
    _activity: dict[object, list[float]] | None = None  # computed off the UI thread when loading a file
    partial: float | None = None  # loading: the fraction of the input read so far (None: complete)
    upto: int | None = None  # rows[:upto] are this view's (None: all of them)

    @property
    def growing(self) -> bool:
        """More is coming (live, or a file still loading): panes keep cursors, skip hidden work."""
        return self.live or self.partial is not None

    @property
    def count(self) -> int:
        """How many rows this view covers."""
        return len(self.rows) if self.upto is None else self.upto

    @property
    def table(self) -> SaTable:
        return self.session.table

    @property
    def empty(self) -> str | None:
        """Why the panes have no IPsec to show (:func:`empty_text`); None while loading."""
        if self.partial is not None:
            return None
        st = self.session.stats
        # OpenBSD enc(4) frames are IPsec too (the cleartext side of an SA, state/enc_sa): a capture of
        # only those said "No IPsec in this capture" over a tree of six enc SAs
        enc = sum(e.packets for e in self.table.enc_sas.values())
        return empty_text(st.frames, st.ike + st.esp + st.ah + enc, waiting=self.live and not self.ended)

    @property
    def activity(self) -> dict[object, list[float]]:
        """ESP activity per CHILD SA / SPI for the timeline's sparklines (one pass over the rows)."""
        if self._activity is None:
            t0 = self.table.first_ts or 0.0
            self._activity = activity(self.rows, t0, self.table.last_ts or t0, upto=self.upto)
        return self._activity


def empty_text(frames: int, ipsec: int, waiting: bool = False) -> str | None:
    """Why a capture shows no IPsec, in the same words in every pane (packet list, timeline,
    findings, SA detail); None when it holds some. An empty pane with no reason read as a failure
    to load. ``waiting``: a live capture (or a followed file) that may still bring some."""
    if waiting:
        if not frames:
            return "Nothing captured yet: waiting for IKE, ESP or AH packets."
        if not ipsec:
            return (f"No IPsec captured yet: {plural(frames, 'frame', sep=True)}, none of them "
                    "IKE (UDP 500/4500, TCP 4500), ESP or AH.")
        return None
    if not frames:
        return "No frames: the capture is valid and holds no packets."
    if not ipsec:
        return (f"No IPsec in this capture: {plural(frames, 'frame', sep=True)}, none of them "
                "IKE (UDP 500/4500, TCP 4500), ESP or AH.")
    return None


@runtime_checkable
class SessionPane(Protocol):
    """A widget that shows (part of) the session."""

    def show_session(self, view: SessionView) -> None: ...
