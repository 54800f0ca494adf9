"""The Packets list: a Line-API widget that renders only the rows on screen.

``rows`` is the session's list of :class:`FrameRow` (1M+ possible) and ``view`` the positions in it
that pass the current filter (a ``range`` when unfiltered, else an ``array('I')``), so neither a
filter nor a scroll copies row objects. Each visible line is formatted on demand and cached.
"""

from __future__ import annotations

import itertools
import re
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from ...model.idtext import short_addr, spi_text
from ...model.packets import FrameRow, bundle_ah_rows, bundle_row
from ...model.sa import endpoint_text
from ...rowstore import REC_SIZE, RowStore, row_dtype
from .info_fit import fit_info

if TYPE_CHECKING:
    from ..panes import SessionView

STATUS_GLYPH = {
    "decrypted": ("✓", "green"),
    "verified": ("✓", "green"),  # an AH ICV verified (AH encrypts nothing)
    "unverified": ("?", "yellow"),  # AH with keys whose frame does not hold what the ICV covers
    "icv-bad": ("✗", "bold red"),
    "no-key": ("?", "yellow"),
    "malformed": ("!", "magenta"),
    "replay": ("R", "red"),
    "gap": ("…", "yellow"),
}
KIND_STYLE = {
    "IKE": "bold cyan",
    "ESP": "green",
    "AH": "green",
    "AH+ESP": "green",
    "NAT-KA": "dim",
    "MALFORMED": "bold magenta",
    "OTHER": "dim",
}


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    width: int
    right: bool = False


WIDE = 110  # from this many cells on, the wide layout: whole IPv6 addresses with ports, 10-cell time
INFO_MIN = 36  # Info keeps at least this much before any optional column is shown
INFO_FLOOR = 20  # ... and this much before the address columns narrow below their content
# ... and this much where they are cut anyway (a MAC, a long IPv6 address): one group less of a
# cut address costs little, and 24 cells, as `packets` keeps, hold the shortest ARP request that
# still says who asks ("? 10.2.0.7 tell 10.1.0.5"; at 20 Info read "ARP Who has 10.2.0.7…")
INFO_CUT_FLOOR = 24
ADDR_MIN = 11  # an address column's least width ("2001…6012::2", "02…00:0c:05", an IPv4 address cut once)


def columns_for(width: int, max_frame: int = 999_999, addr_w: int = 15, addrs: Sequence[str] = ()) -> list[Column]:
    """The column layout for a table ``width`` cells wide.

    ``addr_w`` is the longest address in the capture (IPv4 captures need far less than IPv6 ones).
    Number, status, source and destination are always there and Info takes the rest; time,
    protocol, SPI and length follow in that order only while Info keeps :data:`INFO_MIN` cells, so
    at 80 columns (with the SA tree open) Info says what the frame is instead of the SPI column
    repeating it. Without a protocol column the Info text carries the protocol's colour.

    The address columns are as wide as the capture's longest address, up to 15 cells (21 from 110
    columns on), and narrower still where Info would keep less than :data:`INFO_FLOOR` cells; an
    address longer than its column is cut in the middle (:func:`~ipsecscope.model.idtext.short_addr`),
    never at its end, where two hosts of one network differ, and the column is then as wide as the
    longest of ``addrs`` (the capture's distinct addresses) cut so.
    """
    num_w = max(3, len(str(max_frame)))
    wide = width >= WIDE
    aw = min(max(addr_w, 7), 21 if wide else 15)
    if not wide:  # No. and status (with their spaces) and two spaces between the addresses and Info
        aw = min(aw, max(ADDR_MIN, (width - num_w - 4 - 2 - INFO_FLOOR) // 2))
        if aw < addr_w:
            aw = min(aw, max(ADDR_MIN, (width - num_w - 4 - 2 - INFO_CUT_FLOOR) // 2))
        if aw < addr_w and addrs:  # cut: no wider than the longest cut address (Info gets the rest)
            aw = max(7, max(len(short_addr(a, aw)) for a in addrs))
    if wide:
        aw += 6  # room for ":4500" when ESP/IKE is UDP-encapsulated
    fixed = [Column("frame", "No.", num_w, True), Column("st", "", 1)]
    addrs = [Column("src", "Source", aw), Column("dst", "Destination" if aw >= 11 else "Dest", aw)]
    optional = {c.key: c for c in (Column("time", "Time", 10 if wide else 8, True), Column("kind", "Proto", 6),
                                   Column("spi", "SPI", 10), Column("len", "Len", 5, True))}
    used = sum(c.width + 1 for c in fixed + addrs)
    shown: set[str] = set()
    for key, col in optional.items():
        if width - used - (col.width + 1) < INFO_MIN:
            break  # in priority order: a later column never takes a more useful one's place
        shown.add(key)
        used += col.width + 1
    cols = fixed + [optional[k] for k in ("time", "kind") if k in shown] + addrs
    cols += [optional[k] for k in ("spi", "len") if k in shown]
    cols.append(Column("info", "Info", max(4, width - used)))
    return cols


ADDR_SAMPLE = 50_000  # rows whose addresses size the address columns


MAC_SHAPE = "00:00:00:00:00:00"  # a non-IP row's MACs: every one cuts to the same length


def distinct_addresses(rows: Sequence[FrameRow], sample: int = ADDR_SAMPLE) -> tuple[str, ...]:
    """The source/destination addresses among the first ``sample`` rows, once each (a RowStore:
    among all its rows, from its table of distinct addresses -- reading rows formats each one's
    Info); a non-IP row's MACs, which the rows do not hold, as :data:`MAC_SHAPE`."""
    if type(rows) is RowStore:
        seen = set(list(rows._addrs))
        if rows.link_rows:
            seen.add(MAC_SHAPE)
    else:
        seen = set()
        for r in itertools.islice(rows, sample):
            seen.add(r.src)
            seen.add(r.dst)
    seen.discard("")
    return tuple(seen)


def address_width(rows: Sequence[FrameRow], sample: int = ADDR_SAMPLE) -> int:
    """Longest source/destination address among the first ``sample`` rows (:func:`distinct_addresses`)."""
    return max((len(a) for a in distinct_addresses(rows, sample)), default=15)


def _without_hosts(info: str, src: str, dst: str) -> str:
    """A plain IP frame's Info without the hosts its Source and Destination cells show already
    (``ICMP 10.1.0.5 → 10.2.0.7 Echo (ping) request`` reads ``ICMP Echo (ping) request``): in a
    narrow list they took half of Info. A decrypted ESP row's inner hosts differ and stay. An
    OpenBSD enc(4) row's packet follows its header words ("ENC SPI 0x… (…) ▸ ICMP 10.1.0.1 → …"):
    its hosts are the cells' too, and go the same way."""
    if not src:
        return info
    m = re.match(r"((?:.* ▸ )?\S+ )" + re.escape(f"{src} → {dst} "), info)
    return info[:m.end(1)] + info[m.end():] if m else info


def _fit(text: str, width: int, right: bool = False) -> str:
    if len(text) > width:
        return text[: max(0, width - 1)] + "…" if width > 1 else text[:width]
    return text.rjust(width) if right else text.ljust(width)


def _addr(addr: str, port: int, width: int) -> str:
    # Ports add noise for ESP (0) and IKE (500); show them only when they say something (NAT-T, TCP).
    if port and port not in (500,):
        text = endpoint_text(addr, port)
        if len(text) <= width:
            return text
    return short_addr(addr, width)


def cell_text(row: FrameRow, col: Column, first_ts: float) -> str:
    key = col.key
    if key == "frame":
        return str(row.frame)
    if key == "st":
        return STATUS_GLYPH.get(row.status, (" ", ""))[0]
    if key == "time":
        rel = row.ts - first_ts
        return f"{rel:.6f}" if col.width >= 10 else f"{rel:.3f}"
    if key == "kind":
        return row.kind
    if key == "src":
        return _addr(row.src, row.sport, col.width)
    if key == "dst":
        return _addr(row.dst, row.dport, col.width)
    if key == "spi":
        return spi_text(row.spi) if row.spi is not None else ""
    if key == "len":
        return str(row.length)
    if key == "info":
        return row.info
    return ""


class PacketHeader(Widget):
    """The column titles above :class:`PacketTable` (kept out of the scrolling area)."""

    DEFAULT_CSS = "PacketHeader { height: 1; }"

    max_frame: reactive[int] = reactive(999)
    addr_w: reactive[int] = reactive(15)
    addrs: reactive[tuple[str, ...]] = reactive(())

    def render_line(self, y: int) -> Strip:
        # The table below has a 1-cell scrollbar gutter; keep the columns aligned with it.
        width = self.size.width - 1
        style = self.rich_style + Style(bold=True, reverse=False)
        cols = columns_for(width, self.max_frame, self.addr_w, self.addrs)
        text = " ".join(_fit(c.title, c.width, c.right) for c in cols)
        return Strip([Segment(_fit(text, self.size.width), style)])


EMPTY_FILTERED = "No frame matches the filter (/ edits it, Esc clears)."
EMPTY = "No frame to show."
INVALID = "Invalid filter: nothing shown (/ edits it, Esc clears)."


class PacketTable(ScrollView, can_focus=True):
    """Virtual table over ``rows[view[i]]``. Posts :class:`FrameHighlighted` as the cursor moves."""

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "first", "First", show=False),
        Binding("end,G", "last", "Last", show=False),
        Binding("enter", "select", "Detail", show=False),
    ]

    DEFAULT_CSS = """
    PacketTable { scrollbar-size-vertical: 1; overflow-x: hidden; scrollbar-gutter: stable; }
    """
    # stable gutter: the header lays its columns out one cell narrower than the table (the
    # scrollbar's); a list too short to scroll drew its rows a cell wider, where one more column
    # fits, so "Proto" cells sat under no title and every later column under the wrong one.

    COMPONENT_CLASSES = {"packet-table--cursor"}

    cursor: reactive[int] = reactive(0, always_update=True)

    class FrameHighlighted(Message):
        def __init__(self, frame: int | None) -> None:
            super().__init__()
            self.frame = frame

    class FrameSelected(Message):
        def __init__(self, frame: int) -> None:
            super().__init__()
            self.frame = frame

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.rows: Sequence[FrameRow] = []
        self.count = 0  # rows[:count] are shown (a loading session's store grows past it)
        self._addr_sampled = 0  # rows address_width has seen
        self.view: Sequence[int] = range(0)
        # The view is a display filter's (set by the app): a look at a loading capture then adds
        # rows to the store but leaves the view to the app, which filters just the new rows.
        self.filtered = False
        self.invalid = False  # the app's filter did not compile: the empty view says so
        self.empty_note: str | None = None  # why a loaded capture lists no frame (panes.empty_text)
        # (Source, Destination, Info) of an OTHER row that keeps no addresses: a plain IP frame's,
        # a non-IP frame's MACs and ARP's tshark Info (Session.other_columns)
        self.other_columns: Callable[[int, str], tuple[str, str, str]] | None = None
        self.first_ts = 0.0
        self.addr_w = 15
        self.addrs: tuple[str, ...] = ()
        self.max_frame = 999
        self._layout: tuple[tuple, list[Column]] | None = None  # (width and what sizes it, columns)
        self._cache: LRUCache[tuple[int, int, bool], Strip] = LRUCache(512)
        # A frame carrying AH and the ESP it protects is one line, as in `packets`: its AH row is
        # left out of every view and its ESP row drawn with it (model.packets.bundle_row). Only
        # for a session that holds AH; the AH rows found so far, scanned up to _bundles_upto.
        self.merge_bundles = False
        self._bundles: list[int] = []
        self._bundles_upto = 0
        # Rows that repeat the previous row's frame (a bundle's ESP, a frame's MALFORMED mark, a
        # TCP segment's second IKE record), scanned up to _repeats_upto: counts are of frames
        # (`packets -Y` prints a line per frame), not of rows (frame_count).
        self._repeats: list[int] = []
        self._repeats_upto = 0

    # ---- data in ---------------------------------------------------------------------------
    def show_session(self, view: SessionView) -> None:
        """Every row of the session; live, the cursor follows new frames when it was on the last one;
        while a file loads (and once it has), it stays on the frame it is on."""
        self.empty_note = view.empty
        self.other_columns = view.session.other_columns
        self.merge_bundles = bool(getattr(getattr(view.session, "stats", None), "ah", 0))
        if not view.live:
            current = self.current_row if self.rows is view.rows else None
            if view.partial is not None and self.filtered and self.rows is view.rows:
                self._take_rows(view.rows, view.table.first_ts, view.count)
                self.refresh()
                return
            self.set_rows(view.rows, view.table.first_ts, keep_frame=current.frame if current else None,
                          count=view.count)
            return
        current = self.current_row
        follow = current is None or self.cursor >= len(self.view) - 1
        self.set_rows(view.rows, view.table.first_ts, keep_frame=None if follow else current.frame)
        if follow:
            self.action_last()
            # Again once laid out: when this refresh is the first to overflow the table, Textual
            # allows no vertical scroll until the scrollbar it now needs exists, so the scroll
            # above is dropped and the newest frames (the cursor's) stayed below the screen.
            self.call_after_refresh(self._scroll_cursor_visible)

    def set_rows(self, rows: Sequence[FrameRow], first_ts: float | None = None,
                 keep_frame: int | None = None, count: int | None = None) -> None:
        """Show ``rows[:count]`` (None: all of them), unfiltered."""
        count = self._take_rows(rows, first_ts, count)
        self.set_view(range(count), keep_frame=keep_frame, filtered=False)

    def _take_rows(self, rows: Sequence[FrameRow], first_ts: float | None, count: int | None) -> int:
        count = len(rows) if count is None else count
        sample = min(count, ADDR_SAMPLE)
        if rows is not self.rows or sample > self._addr_sampled:  # a loading store: its first rows once
            self.addrs = distinct_addresses(rows, sample)
            self.addr_w = max((len(a) for a in self.addrs), default=15)
            self._addr_sampled = sample
        if rows is not self.rows or type(rows) is not RowStore:  # (live mode's ring moves under its positions)
            self._bundles, self._bundles_upto = [], 0
            self._repeats, self._repeats_upto = [], 0
        self.rows = rows
        self.count = count
        self.first_ts = first_ts if first_ts is not None else (rows[0].ts if count else 0.0)
        self.max_frame = rows[count - 1].frame if count else 999
        return count

    def set_view(self, view: Sequence[int], keep_frame: int | None = None, filtered: bool | None = None) -> None:
        """Show ``rows[i] for i in view``; keep the cursor on ``keep_frame`` when it is still shown.
        ``filtered``: whether ``view`` is a display filter's (None: as before)."""
        if filtered is not None:
            self.filtered = filtered
        self.view = self._one_line_per_bundle(view)
        self._cache.clear()
        self.virtual_size = Size(self.size.width, len(view))
        pos = self.position_of(keep_frame) if keep_frame is not None else None
        self.cursor = pos if pos is not None else 0
        self.refresh()

    def _one_line_per_bundle(self, view: Sequence[int]) -> Sequence[int]:
        """``view`` without the AH rows of AH+ESP bundles (their ESP rows stand for the frame)."""
        if not self.merge_bundles or not len(view):
            return view
        if self._bundles_upto < self.count:  # rows added since: the pair across the old end too
            self._bundles += bundle_ah_rows(self.rows, max(0, self._bundles_upto - 1), self.count)
            self._bundles_upto = self.count
        if not self._bundles:
            return view
        import numpy as np  # a session with AH+ESP bundles only

        keep = np.setdiff1d(np.asarray(view, dtype=np.int64), np.asarray(self._bundles, dtype=np.int64),
                            assume_unique=True)
        return array("I", keep.astype(np.uint32).tobytes())

    def frame_count(self, view: Sequence[int] | None = None) -> int:
        """Frames (not rows) among ``view`` (None: every row shown unfiltered): the filter's
        "N/M" counted an AH+ESP frame, one line, as two (its AH row and its ESP row), so it
        disagreed with `packets -Y`, which prints one line per frame."""
        repeats = self._frame_repeats()
        if view is None:
            return self.count - len(repeats)
        if not repeats or not len(view):
            return len(view)
        if isinstance(view, range):  # unfiltered: a repeat counts twice when its first row is shown too
            return len(view) - sum(1 for r in repeats if r - 1 in view)
        import numpy as np

        v = np.asarray(view, dtype=np.int64)
        rep = np.asarray(repeats, dtype=np.int64)
        # a repeat is counted already when an earlier row of its frame is shown: the previous
        # shown row (v[i-1]) is one of its frame's rows when it is at or after the frame's first
        heads = _run_heads(repeats)
        i = np.searchsorted(v, rep)
        shown = (i < len(v)) & (v[np.minimum(i, len(v) - 1)] == rep) & (i > 0)
        prev = v[np.maximum(i - 1, 0)]
        return len(view) - int(np.count_nonzero(shown & (prev >= np.asarray(heads, dtype=np.int64))))

    def _frame_repeats(self) -> list[int]:
        """Positions below ``count`` whose row is of the previous row's frame (scanned once)."""
        if self._repeats_upto < self.count:
            lo = max(0, self._repeats_upto - 1)
            self._repeats += _repeat_rows(self.rows, lo, self.count)
            self._repeats_upto = self.count
        return self._repeats

    def position_of(self, frame: int) -> int | None:
        """Position in ``view`` of the first row with frame number >= ``frame`` (rows are in frame order)."""
        view, rows = self.view, self.rows
        lo, hi = 0, len(view)
        while lo < hi:
            mid = (lo + hi) // 2
            if rows[view[mid]].frame < frame:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < len(view) else None

    @property
    def current_row(self) -> FrameRow | None:
        if 0 <= self.cursor < len(self.view):
            return self.rows[self.view[self.cursor]]
        return None

    def go_to_frame(self, frame: int) -> bool:
        pos = self.position_of(frame)
        if pos is None:
            return False
        self.cursor = pos
        return True

    # ---- cursor ----------------------------------------------------------------------------
    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, len(self.view) - 1)) if self.view else 0

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        self._scroll_cursor_visible()
        row = self.current_row
        self.post_message(self.FrameHighlighted(row.frame if row else None))

    def _scroll_cursor_visible(self) -> None:
        height = self.scrollable_content_region.height or self.size.height
        top = round(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True)

    def action_cursor(self, delta: int) -> None:
        self.cursor += delta

    def action_page(self, direction: int) -> None:
        self.cursor += direction * max(1, self.scrollable_content_region.height - 1)

    def action_first(self) -> None:
        self.cursor = 0

    def action_last(self) -> None:
        self.cursor = len(self.view) - 1

    def action_select(self) -> None:
        row = self.current_row
        if row is not None:
            self.post_message(self.FrameSelected(row.frame))

    def on_click(self, event: events.Click) -> None:
        y = event.y + round(self.scroll_y)
        if 0 <= y < len(self.view):
            if y == self.cursor and event.chain >= 2:
                self.action_select()
            self.cursor = y

    def on_resize(self, event: events.Resize) -> None:
        self._cache.clear()
        self.virtual_size = Size(event.size.width, len(self.view))
        # A hidden table (another tab on screen) has no height, so the scrolls that followed the
        # cursor while live frames came did nothing: shown again, it sat on frames 1-9 with the
        # cursor, the newest frame, below the screen. Once laid out at its new size, bring it in.
        self.call_after_refresh(self._scroll_cursor_visible)

    # ---- rendering -------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        index = round(self.scroll_y) + y
        width = self.scrollable_content_region.width or self.size.width
        if index >= len(self.view):
            if index == 0 and (self.count or self.empty_note):  # an empty list says why, not a blank pane
                note = (INVALID if self.invalid else EMPTY_FILTERED if self.filtered and self.count
                        else self.empty_note or EMPTY)
                return Strip([Segment(_fit(note, width),
                                      self.rich_style + Style(dim=True, italic=True))])
            return Strip.blank(width, self.rich_style)
        selected = index == self.cursor
        key = (index, width, selected and self.has_focus)
        strip = self._cache.get(key)
        if strip is None:
            pos = self.view[index]
            row = self.rows[pos]
            if self.merge_bundles and row.kind == "ESP" and pos > 0:
                prev = self.rows[pos - 1]
                if prev.kind == "AH" and prev.frame == row.frame:  # ESP under AH: the frame's one line
                    row = bundle_row(prev, row)
            strip = self._render_row(row, width, selected)
            self._cache[key] = strip
        return strip

    def columns(self, width: int) -> list[Column]:
        """:func:`columns_for` this table's rows, worked out once per width and data, not per row."""
        key = (width, self.max_frame, self.addr_w, self.addrs)
        if self._layout is None or self._layout[0] != key:
            self._layout = (key, columns_for(width, self.max_frame, self.addr_w, self.addrs))
        return self._layout[1]

    def _render_row(self, row: FrameRow, width: int, selected: bool) -> Strip:
        base = self.rich_style
        segments: list[Segment] = []
        cols = self.columns(width)
        has_kind = any(c.key == "kind" for c in cols)
        if row.kind == "OTHER" and not row.src and self.other_columns is not None:
            # Source and Destination were blank beside 'DNS 10.0.0.1 → 10.0.0.2' in Info
            src, dst, info = self.other_columns(row.frame, row.info)
            if width < WIDE:
                info = _without_hosts(info, src, dst)
            row = replace(row, src=src, dst=dst, info=info)
        for col in cols:
            if col.key == "info":  # the least useful part left out, not the tail (info_fit)
                text = _fit(fit_info(row.info, col.width, row.status == "decrypted"), col.width)
            else:
                text = _fit(cell_text(row, col, self.first_ts), col.width, col.right)
            style = base
            if col.key == "kind":
                style = base + Style.parse(KIND_STYLE.get(row.kind, ""))
            elif col.key == "st" and row.status in STATUS_GLYPH:
                style = base + Style.parse(STATUS_GLYPH[row.status][1])
            elif col.key == "info" and row.status in ("icv-bad", "malformed", "replay"):
                style = base + Style.parse(STATUS_GLYPH[row.status][1])
            elif col.key == "info" and not has_kind:
                style = base + Style.parse(KIND_STYLE.get(row.kind, ""))
            segments.append(Segment(text, style))
            segments.append(Segment(" ", base))
        strip = Strip(segments[:-1]).crop_extend(0, width, base)
        if selected:
            cursor_style = self.get_component_rich_style("packet-table--cursor")
            if not self.has_focus:
                # Where the cursor is, without competing with the focused pane.
                cursor_style = Style(bgcolor="grey27")
            # post_style: the cursor background must win over each cell's own background.
            strip = Strip(Segment.apply_style(list(strip), post_style=cursor_style), strip.cell_length)
        return strip

    def on_focus(self) -> None:
        self._cache.clear()
        self.refresh()

    def on_blur(self) -> None:
        self._cache.clear()
        self.refresh()


def _repeat_rows(rows: Sequence[FrameRow], lo: int, hi: int, chunk: int = 1 << 16) -> list[int]:
    """Positions in ``rows[lo+1:hi]`` whose row has the frame number of the row before it."""
    out: list[int] = []
    if type(rows) is RowStore:  # from the records, a window at a time (no row is built)
        import numpy as np

        for start in range(lo, hi - 1, chunk):
            stop = min(hi, start + chunk + 1)  # one row of overlap: a pair across the windows
            f = np.frombuffer(bytes(rows._buf[start * REC_SIZE:stop * REC_SIZE]), dtype=row_dtype())["frame"]
            out += (np.flatnonzero(f[1:] == f[:-1]) + start + 1).tolist()
        return out
    prev = rows[lo].frame if lo < hi else None
    for i in range(lo + 1, hi):
        frame = rows[i].frame
        if frame == prev:
            out.append(i)
        prev = frame
    return out


def _run_heads(repeats: Sequence[int]) -> list[int]:
    """For each repeat position (sorted), the position of its frame's first row."""
    heads: list[int] = []
    for k, r in enumerate(repeats):
        heads.append(heads[-1] if k and repeats[k - 1] == r - 1 else r - 1)
    return heads


def view_from_indices(indices: list[int]) -> Sequence[int]:
    """Compact storage for a filtered view (4 bytes a row instead of a Python int each)."""
    return array("I", indices)
