"""Stats tab: an IO graph of packets/s per SA on one time axis, then per CHILD SA (and each of its
SAs, one per direction) and per inner conversation: packets, bytes, rate, first/last seen, loss.

Every number comes from :mod:`ipsecscope.conversations`, the code behind ``ipsecscope stats``:
a file is read once through :func:`~ipsecscope.conversations.compute` (in a worker), a live
session feeds an :class:`~ipsecscope.conversations.Accumulator` the rows that arrived since the
last refresh. Enter (or ``f``) on a row asks the app to follow it: the display filter that
selects its packets, in Wireshark syntax.

At 80 columns (an SSH session, the SA tree open) the tables are wider than the tab: they take
short headers below :data:`COMPACT_BELOW` cells and show whole columns only, the first (which SA,
which conversation) always; ←/→ move the others a column at a time, the first header's ◂ ▸ say
which way more are, and the footer shows "←→ Columns" while any is hidden. The IO graph's
legend wraps in whole pieces instead of being cut, and its bins, merged at that width, are read
exactly with its cursor (Tab to the graph, ←/→: the packets of each SA in that column).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

from ... import timefmt
from ...model.plural import plural
from ..plain import plain

if TYPE_CHECKING:
    from textual import events
    from textual.geometry import Size

    from ...conversations import Accumulator, Stats
    from ..panes import SessionView

BLOCKS = " ▁▂▃▄▅▆▇█"
LABEL_W = 12  # "#12 15b69dc5"
PEAK_W = 8  # " 12.3k/s"
MAX_ROWS = 2000  # conversations listed (a flood's tail is in `ipsecscope stats --json`)
COMPACT_BELOW = 100  # table width (cells) under which the headers are the short ones

# (key, header, short header) of each table, in order; the first column stays when scrolling.
SA_COLUMNS = (("sa", "CHILD SA / SA", "SA"), ("packets", "Pkts", "Pkts"), ("bytes", "Bytes", "Bytes"),
              ("rate", "pkt/s", "pkt/s"), ("first", "First s", "First"), ("last", "Last s", "Last"),
              ("lost", "Lost", "Lost"), ("src", "From", "From"), ("dst", "To", "To"))
CONV_COLUMNS = (("conv", "Conversation", "Conversation"), ("ab", "A→B", "A→B"), ("ba", "B→A", "B→A"),
                ("bytes", "Bytes", "Bytes"), ("rate", "pkt/s", "pkt/s"), ("first", "First s", "First"),
                ("last", "Last s", "Last"), ("lost", "Lost", "Lost"), ("sa", "SA", "SA"))


def fmt_rate(pps: float) -> str:
    """Packets per second, short: 0.4, 12, 3.1k."""
    if pps >= 1000:
        return f"{pps / 1000:.1f}k"
    return f"{pps:.1f}" if pps < 10 else f"{pps:.0f}"


def rebin(io: Sequence[int], interval: float, width: int) -> tuple[list[float], float, float]:
    """``io`` (packets per ``interval``) as at most ``width`` columns of packets/s, the seconds
    one column spans and the seconds one value is counted over: ``k`` adjacent bins summed per
    column when there are more bins than columns, else each bin drawn over one or more columns
    (column ``x`` shows bin ``x * n // width``, so the graph fills the width)."""
    n = len(io)
    if n == 0 or width <= 0:
        return [], interval, interval
    if n > width:
        k = -(-n // width)
        cols = [sum(io[i:i + k]) / (len(io[i:i + k]) * interval) for i in range(0, n, k)]
        return cols, interval * k, interval * k
    return [io[x * n // width] / interval for x in range(width)], interval * n / width, interval


def column_bins(n: int, width: int) -> list[tuple[int, int]]:
    """The bins ``[first, last)`` each column of :func:`rebin` covers (``n`` bins, ``width``
    columns): ``k`` adjacent ones when they are merged, else the one bin the column draws."""
    if n == 0 or width <= 0:
        return []
    if n > width:
        k = -(-n // width)
        return [(i, min(i + k, n)) for i in range(0, n, k)]
    return [(x * n // width, x * n // width + 1) for x in range(width)]


def bars(values: Sequence[float]) -> str:
    """One block character per value, scaled to the row's peak (any packet shows at least ▁)."""
    top = max(values, default=0.0)
    if top <= 0:
        return " " * len(values)
    return "".join(BLOCKS[0 if v <= 0 else max(1, min(8, round(v * 8 / top)))] for v in values)


def _rel(t: float | None, t0: float) -> str:
    return "-" if t is None else f"{t - t0:.3f}"


def _ep(addr: str, port: int | None) -> str:
    if port is None:
        return addr
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


class IoGraph(Widget):
    """Packets/s per SA (one ESP/AH direction) on the capture's time axis: a row of block
    characters per SA, scaled to its own peak (written at the right), and the axis below.

    Below ~120 columns adjacent bins share a column and a bar's height says little: focused
    (Tab, or a click), a cursor column shows, ←/→ (Home/End) move it, and each SA row's number
    at the right becomes the exact count of packets in that column, the line under the axis its
    time span and which bins it sums."""

    DEFAULT_CSS = """
    IoGraph { height: auto; }
    IoGraph:focus { background: $boost; }
    """
    can_focus = True
    BINDINGS = [
        Binding("right", "bin(1)", "Bin", key_display="←→"),
        Binding("left", "bin(-1)", "Bin", show=False),
        Binding("home", "bin_edge(0)", "First bin", show=False),
        Binding("end", "bin_edge(1)", "Last bin", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.stats: Stats | None = None
        self.cursor: int | None = None  # the column the exact counts are shown for (while focused)

    def set_stats(self, st: Stats) -> None:
        self.stats = st
        self.refresh(layout=True)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if self.stats is None or not self.stats.flows:
            return 1
        return len(self.stats.flows) + len(self.legend(width)) + 1 + (self.cursor is not None and self.has_focus)

    # ---- the cursor --------------------------------------------------------------------------------
    def _graph_w(self, width: int) -> int:
        return max(1, width - LABEL_W - 1 - PEAK_W)

    def _spans(self, width: int) -> list[tuple[int, int]]:
        """The bins under each column, for the longest IO series (all flows share the time axis)."""
        st = self.stats
        n = max((len(f.io) for f in st.flows), default=0) if st is not None else 0
        return column_bins(n, self._graph_w(width))

    def on_focus(self) -> None:
        spans = self._spans(self.size.width)
        if self.cursor is None and spans and self.stats is not None:
            # start where the most packets are: the column a person looks at first
            totals = [sum(sum(f.io[a:b]) for f in self.stats.flows) for a, b in spans]
            self.cursor = max(range(len(spans)), key=totals.__getitem__)
        self.refresh(layout=True)

    def on_blur(self) -> None:
        self.refresh(layout=True)

    def on_resize(self) -> None:
        if self.cursor is not None:  # another width merges the bins otherwise: keep it on the graph
            self.cursor = min(self.cursor, max(0, len(self._spans(self.size.width)) - 1))

    def action_bin(self, step: int) -> None:
        ncols = len(self._spans(self.size.width))
        if ncols:
            self.cursor = max(0, min(ncols - 1, (self.cursor or 0) + step))
            self.refresh()

    def action_bin_edge(self, end: int) -> None:
        ncols = len(self._spans(self.size.width))
        if ncols:
            self.cursor = ncols - 1 if end else 0
            self.refresh()

    def readout(self, width: int) -> Text | None:
        """The cursor column's time span and the bins it sums (under the axis, while focused)."""
        st = self.stats
        spans = self._spans(width)
        if st is None or self.cursor is None or not self.has_focus or not spans:
            return None
        a, b = spans[min(self.cursor, len(spans) - 1)]
        bins = f"bin {a}" if b - a == 1 else f"bins {a}–{b - 1}"
        parts = [Text.assemble(("▲ ", "bold"), (f"{a * st.interval:.3g}–{b * st.interval:.3g}s", "bold")),
                 Text(f" ({bins} of {st.interval:.3g}s)"), Text(" · packets in it at right"),
                 Text("   ←→ Home End", "dim")]
        out = parts[0]
        for p in parts[1:]:
            if out.cell_len + p.cell_len <= width:
                out = out + p
        return out

    def legend(self, width: int) -> list[Text]:
        """What the graph shows, in whole pieces per line (a narrow screen gets two lines, none cut)."""
        st = self.stats
        if st is None or not st.flows:
            return []
        graph_w = max(1, width - LABEL_W - 1 - PEAK_W)
        resolution = max((rebin(f.io, st.interval, graph_w)[2] for f in st.flows), default=st.interval)
        parts = [Text.assemble(("IO graph", "bold"), f" ({resolution:.3g}s bins)"),
                 Text(f" · 0s = {timefmt.at(st.first_ts, 3)}"), Text(" · pkt/s per SA, peak at right"),
                 Text("   Enter/f: follow a row", "dim")]
        lines = [parts[0]]
        for p in parts[1:]:
            if lines[-1].cell_len + p.cell_len <= width:
                lines[-1] = lines[-1] + p
            else:
                p = p.copy()
                p.plain = p.plain.lstrip(" ·")
                lines.append(p)
        return lines

    def lines(self, width: int) -> list[Text]:
        """The legend (the tables' first/last seen are seconds after its 0s, in the --tz zone), a
        row per SA, the time axis."""
        st = self.stats
        if st is None:
            return [Text("")]
        if not st.flows:
            return [Text("IO graph: no ESP or AH traffic in this capture.", "dim")]
        graph_w = self._graph_w(width)
        out = self.legend(width)
        step = st.interval
        at = self.cursor if self.has_focus else None
        for f in st.flows:
            cols, step, _ = rebin(f.io, st.interval, graph_w)
            # an OpenBSD enc(4) SA has no CHILD SA here: "enc", as its row in the table below, not
            # "-", which read as an SA nobody knew
            child = f"#{f.child_sa}" if f.child_sa is not None else "enc" if f.enc else "-"
            line = Text(f"{child:<3} {f.spi:08x}"[:LABEL_W].ljust(LABEL_W) + " ", "bold" if f.packets else "dim")
            style = "green" if f.protocol == "ESP" else "magenta"
            drawn = bars(cols).ljust(graph_w)
            if at is None or not cols:
                line.append(drawn, style)
                line.append(f"{fmt_rate(max(cols, default=0.0)):>{PEAK_W - 2}}/s", "dim")
            else:
                x = min(at, len(cols) - 1)
                a, b = column_bins(len(f.io), graph_w)[x]
                line.append(drawn[:x], style)
                line.append(drawn[x] if drawn[x] != " " else "·", f"reverse {style}")
                line.append(drawn[x + 1:], style)
                line.append(f"{sum(f.io[a:b]):>{PEAK_W}}", "bold")
            out.append(line)
        out.append(self._axis(len(cols), graph_w, step))
        readout = self.readout(width)
        if readout is not None:
            out.append(Text(" " * (LABEL_W + 1)) + readout if readout.cell_len + LABEL_W + 1 <= width else readout)
        return out

    @staticmethod
    def _axis(ncols: int, graph_w: int, step: float) -> Text:
        """Time from the capture's start under the columns (0, the middle, the end), in one unit."""
        axis = [" "] * graph_w
        marks = (0, ncols // 2, ncols) if ncols >= 24 else (0, ncols)
        for x in marks:
            label = timefmt.offset(x * step, ncols * step)
            start = max(0, min(x - len(label) // 2, graph_w - len(label))) if x else 0
            if all(c == " " for c in axis[max(0, start - 1):start + len(label) + 1]):
                axis[start:start + len(label)] = list(label)
        return Text(f"{'':<{LABEL_W}} " + "".join(axis), "dim")

    def render(self) -> Text:
        width = self.size.width
        lines = self.lines(width)
        for line in lines:  # one screen line each: a row per SA, the axis right under them
            line.truncate(width, overflow="ellipsis")
        return Text("\n").join(lines)


class StatsTable(DataTable):
    """A Stats table that shows whole columns only: its first column (which SA, which
    conversation) always, then as many of the others as fit; ←/→ move that window a column at a
    time. The first column's header says which way more columns are (◂ ▸), the footer shows
    "←→ Columns" while any is hidden. A first column too wide to leave room for any other
    (a very long IPv6 conversation) falls back to scrolling every column sideways."""

    BINDINGS = [
        Binding("right", "columns(1)", "Columns", key_display="←→"),
        Binding("left", "columns(-1)", "Columns", show=False),
    ]

    def __init__(self, columns: tuple[tuple[str, str, str], ...], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.spec = columns
        self.compact = False
        self.data: list[tuple[str, list[Text | str]]] = []  # (row key, a cell per column of spec)
        self.first = 1  # the first of the other columns shown
        self.shown: list[int] = []  # indexes into spec of the columns on screen
        self._more = False  # columns hidden to either side

    def set_rows(self, rows: list[tuple[str, list[Text | str]]]) -> None:
        self.data = rows
        self.lay_out()

    def cells(self, key: str) -> dict[str, str]:
        """The row's cells by column key, shown or not (plain text)."""
        row = next(r for k, r in self.data if k == key)
        return {c[0]: str(v) for c, v in zip(self.spec, row, strict=True)}

    def _widths(self) -> list[int]:
        pad = 2 * self.cell_padding
        out = []
        for i, (_, label, short) in enumerate(self.spec):
            w = Text(short if self.compact else label).cell_len
            for _, row in self.data:
                cell = row[i]
                w = max(w, cell.cell_len if isinstance(cell, Text) else Text(cell).cell_len)
            out.append(w + pad)
        return out

    def window(self, width: int) -> list[int]:
        """The columns to show in ``width`` cells: all when they fit, else the first and the
        others from :attr:`first` on while they fit whole (``first`` moved back if the window
        would end with room to spare)."""
        w = self._widths()
        n = len(w)
        if sum(w) <= width or n < 2:
            self.first, self._more = 1, False
            return list(range(n))
        room = width - w[0] - 4  # " ◂▸" beside the first header
        if room < max(w[1:]):
            self.first, self._more = 1, False
            return list(range(n))  # no room for whole columns: DataTable scrolls sideways
        last_start = n - 1
        used = w[-1]
        while last_start > 1 and used + w[last_start - 1] <= room:
            last_start -= 1
            used += w[last_start]
        self.first = max(1, min(self.first, last_start))
        out, used = [0], 0
        for i in range(self.first, n):
            if used + w[i] > room:
                break
            out.append(i)
            used += w[i]
        self._more = True
        return out

    def lay_out(self) -> None:
        """Columns and rows again for the width, the compactness and :attr:`first`; the cursor and
        the vertical scroll stay where they were."""
        width = self.scrollable_content_region.width or self.size.width
        shown = self.window(width) if width else list(range(len(self.spec)))
        keep_row = self.cursor_row if self.row_count else 0
        keep_y = self.scroll_y
        self.shown = shown
        self.clear(columns=True)
        for i in shown:
            key, label, short = self.spec[i]
            head = short if self.compact else label
            if i == 0 and self._more:
                head += " " + ("◂" if self.first > 1 else " ") + ("▸" if shown[-1] < len(self.spec) - 1 else " ")
            self.add_column(head, key=key)
        for key, row in self.data:
            self.add_row(*[plain(row[i]) for i in shown], key=key)
        if self.row_count:
            self.move_cursor(row=min(keep_row, self.row_count - 1), animate=False, scroll=False)
            self.scroll_to(y=keep_y, animate=False, immediate=True)
        self.refresh_bindings()

    def action_columns(self, step: int) -> None:
        """Move the window of columns one to the right (step 1) or left (-1)."""
        if not self._more:
            self.scroll_to(x=self.scroll_x + step * 8, animate=False)  # the fallback: plain scrolling
            return
        before = self.shown
        self.first = max(1, self.first + step)
        self.lay_out()
        if self.shown == before and step > 0:  # already at the end
            self.first -= step

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "columns":
            return self._more or self.max_scroll_x > 0  # False: not in the footer
        return True

    def on_resize(self) -> None:
        if self.data:
            self.lay_out()


class StatsView(Vertical):
    """Posts :class:`Follow` with a display filter when a row is chosen (Enter or click)."""

    class Follow(Message):
        def __init__(self, filter_text: str) -> None:
            super().__init__()
            self.filter_text = filter_text

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.stats: Stats | None = None
        self._session: object = None
        self._acc: Accumulator | None = None
        self._pending = False  # hidden meanwhile: new live numbers, or a loaded file not yet counted
        self._sa_filters: dict[str, str] = {}
        self._conv_filters: dict[str, str] = {}
        self._last_table = "#stats-convs"

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="stats-io-box"):
            yield IoGraph(id="stats-io")
        yield StatsTable(SA_COLUMNS, id="stats-sas")
        yield StatsTable(CONV_COLUMNS, id="stats-convs")

    def on_mount(self) -> None:
        self._set_compact()

    def on_resize(self) -> None:
        if self._set_compact():
            for t in self.query(StatsTable):
                t.lay_out()

    def _set_compact(self) -> bool:
        compact = self.size.width < COMPACT_BELOW
        changed = False
        for t in self.query(StatsTable):
            if t.compact != compact:
                t.compact, changed = compact, True
        return changed

    # ---- data in -------------------------------------------------------------------------------
    def show_session(self, view: SessionView) -> None:
        if view.partial is not None:
            return  # a file still loading: counted once it is read (compute reads the whole session)
        if not view.live:
            if view.session is not self._session:  # a new load (or keys added): count it once,
                self._session = view.session  # when the tab is first shown (most runs never are)
                self._pending = True
                if self._shown():
                    self.on_show()
            return
        from ...conversations import Accumulator
        from ...filtering import source_of

        # Live: count only the rows that came since the last refresh (under the runner's lock,
        # which the app holds while it hands out the view).
        if self._acc is None or view.session is not self._session:
            self._session = view.session
            self._acc = Accumulator(view.table.first_ts or (view.rows[0].ts if view.rows else 0.0))
        src = source_of(view.session)
        src.rows = view.rows
        self._acc.feed(src)
        st = self._acc.stats(view.table)
        if self._shown():
            self.show_stats(st)
        else:  # hidden: draw when shown, not every second for nobody
            self.stats, self._pending = st, True

    def _shown(self) -> bool:
        return all(n.display for n in self.ancestors_with_self if isinstance(n, Widget))

    @work(thread=True, exclusive=True, group="stats", name="stats")
    def _compute(self, session) -> None:
        from ...conversations import compute

        st = compute(session)  # what `ipsecscope stats` prints, off the UI thread
        self.app.call_from_thread(self.show_stats, st)

    def on_show(self) -> None:
        if not self._pending:
            return
        self._pending = False
        if self.stats is not None and self._acc is not None:  # live: the last refresh's numbers
            self.show_stats(self.stats)
        elif self._session is not None and self._acc is None:  # a file: count it now
            self._compute(self._session)

    def show_stats(self, st: Stats) -> None:
        from ...conversations import sa_filter

        self.stats = st
        self._pending = False
        t0 = st.first_ts or 0.0
        self.query_one(IoGraph).set_stats(st)

        sas = self.query_one("#stats-sas", StatsTable)
        keep = _cursor_key(sas)
        self._sa_filters = {}
        rows: list[tuple[str, list[Text | str]]] = []
        for c in st.child_sas:
            key = f"child:{c.id}"
            spis = [s for s in (c.spi_i, c.spi_r) if s is not None]
            proto = next((f.protocol for f in st.flows if f.child_sa == c.id), "ESP")
            self._sa_filters[key] = sa_filter(spis, proto) if spis else f"ipsecscope.child == {c.id}"
            rows.append((key, [Text(f"#{c.id} {c.state}", "bold"), str(c.packets), str(c.bytes), fmt_rate(c.rate),
                               _rel(c.first_ts, t0), _rel(c.last_ts, t0), _lost(c.lost), "", ""]))
            rows += [self._flow_row(f, t0) for f in st.flows if f.child_sa == c.id]
        children = {c.id for c in st.child_sas}
        rows += [self._flow_row(f, t0) for f in st.flows if f.child_sa is None or f.child_sa not in children]
        if not rows:  # a header over nothing read as a table still being counted
            rows = [("none", [Text("none: no ESP or AH in this capture", "dim"), *[""] * 8])]
        sas.set_rows(rows)
        _restore_cursor(sas, keep)

        convs = self.query_one("#stats-convs", StatsTable)
        keep = _cursor_key(convs)
        self._conv_filters = {}
        rows = []
        for c in st.conversations[:MAX_ROWS]:
            key = f"conv:{c.protocol}:{c.a}:{c.a_port}:{c.b}:{c.b_port}"
            self._conv_filters[key] = c.filter
            sa = ",".join([f"#{n}" for n in c.child_sas] + [f"enc {x:08x}" for x in c.enc_spis]) or "-"
            lost = "-" if c.lost is None else _lost(c.lost)
            rows.append((key, [f"{c.protocol} {_ep(c.a, c.a_port)} ⇄ {_ep(c.b, c.b_port)}", str(c.packets_ab),
                               str(c.packets_ba), str(c.bytes), fmt_rate(c.rate), _rel(c.first_ts, t0),
                               _rel(c.last_ts, t0), lost, sa]))
        if len(st.conversations) > MAX_ROWS:
            rows.append(("more", [Text(f"… {len(st.conversations) - MAX_ROWS} more: ipsecscope stats --json", "dim"),
                                  *[""] * 8]))
        if not rows:
            rows = [("none", [Text(self._no_conversation(st), "dim"), *[""] * 8])]
        convs.set_rows(rows)
        _restore_cursor(convs, keep)

    def _no_conversation(self, st: Stats) -> str:
        """Why the conversations table is empty: it lists what tunnel-mode ESP carries, so it
        needs ESP that decrypted (an engineer without keys saw an empty table and no reason)."""
        if not st.flows:
            return "none: no ESP or AH in this capture"
        if not any(f.protocol == "ESP" and not f.enc for f in st.flows):
            # AH-only captures said "no ESP decrypted (a adds keys)" with every AH key loaded
            return "none: AH only; conversations need tunnel-mode ESP"
        decrypted = getattr(getattr(self._session, "stats", None), "decrypted", 0)
        if not decrypted:
            keys = len(getattr(self._session, "keys", None) or ())
            if keys:  # "a adds keys" alone read as if none were loaded
                return f"none: {plural(keys, 'key')} loaded, no ESP decrypted (a adds keys)"
            return "none: no ESP decrypted (a adds keys)"
        return "none: the decrypted ESP carries no tunnel-mode IP"

    def _flow_row(self, f, t0: float) -> tuple[str, list[Text | str]]:
        from ...conversations import sa_filter

        key = f"{'enc' if f.enc else 'flow'}:{f.key}"
        self._sa_filters[key] = sa_filter([f.spi], f.protocol, f.enc)
        label = f"  ↳ {f.spi:08x}" + (" AH" if f.protocol == "AH" else "") + (" enc" if f.enc else "")
        # an enc(4) SA's frames carry no sequence number: its loss cannot be counted
        return key, [label, str(f.packets), str(f.bytes), fmt_rate(f.rate), _rel(f.first_ts, t0), _rel(f.last_ts, t0),
                     "-" if f.enc else _lost(f.lost), f.src, f.dst]

    # ---- follow --------------------------------------------------------------------------------
    def follow_filter(self) -> str | None:
        """The display filter of the row under the cursor of the table used last."""
        # the focused one, when one is: _last_table follows the focus a message later, and `f`
        # can be read before that message (5 then f typed at once)
        focused = self.screen.focused
        table = (focused if isinstance(focused, StatsTable) and focused.parent is self
                 else self.query_one(self._last_table, DataTable))
        key = _cursor_key(table)
        if key is None:
            return None
        return (self._sa_filters if table.id == "stats-sas" else self._conv_filters).get(key)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if isinstance(event.widget, DataTable):
            self._last_table = f"#{event.widget.id}"

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self._last_table = f"#{event.data_table.id}"
        text = self.follow_filter()
        if text:
            self.post_message(self.Follow(text))


def _lost(n: int) -> Text | str:
    return Text(str(n), "bold red") if n else "0"


def _cursor_key(table: DataTable) -> str | None:
    if not table.row_count:
        return None
    try:
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except CellDoesNotExist:  # a cursor past the rows (table being rebuilt)
        return None


def _restore_cursor(table: DataTable, key: str | None) -> None:
    """Live refreshes rebuild the table: the cursor stays on the same SA or conversation."""
    if key is None or not table.row_count:
        return
    try:
        table.move_cursor(row=table.get_row_index(key), animate=False)
    except RowDoesNotExist:  # that SA or conversation is gone
        pass
