"""Timeline tab: SA lifetimes on a common time axis with ESP activity sparklines, then the events.

The lanes show when each SA lived; after a rekey the old and the new CHILD SA overlap on the axis
(RFC 7296 §2.8: the old SA is deleted only after the new one is in place), which is where
traffic on the wrong SA and lost packets tend to hide.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.geometry import Size
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option

from ... import timefmt
from ...model import iana
from ...model.idtext import arrow_text, frame_ref, msg_id_text
from ...model.plural import plural
from ...model.sa import ChildSa, Finding, IkeExchange, IkeSa, SaState, SaTable, Severity
from ...state.names import exchange_name, one_way
from ..panes import SessionView
from ..plain import PlainTable
from .sa_tree import STATE_STYLE, spi_digits

LABEL_W = 14


@dataclass(slots=True, frozen=True)
class Event:
    ts: float
    frame: int | None
    kind: str  # "ike" | "child" | "rekey" | "delete" | "fail" | "finding"
    text: str
    style: str = ""


def _failed(sa: IkeSa, ex: IkeExchange, unanswered: Collection[int] = ()) -> bool:
    if not ex.response_frames and not one_way(ex.exchange, sa.version):
        return True
    if ex.request_frames and ex.request_frames[0] in unanswered:  # an IKEv1 DPD nobody acknowledged
        return True
    return sa.version == 2 and any(iana.notify_is_error(n) for n in ex.notifies)


def unanswered_frames(findings: Sequence[Finding]) -> set[int]:
    """Requests the liveness rules found unanswered: an IKEv1 R-U-THERE is one-way under its own
    Message ID (its ACK comes under another), so only IKE-DEAD-PEER pairs them."""
    return {fr for f in findings if f.code in ("IKE-DEAD-PEER", "IKE-NO-RESPONSE") for fr in f.all_frames}


def ike_events(sa: IkeSa, unanswered: Collection[int] = ()) -> list[Event]:
    out = []
    for ex in sa.exchanges:
        if ex.request_ts is None:
            continue
        name = exchange_name(ex.exchange, sa.version)
        failed = _failed(sa, ex, unanswered)
        summary = arrow_text(ex.summary.removeprefix(name).strip())
        text = f"{name} #{msg_id_text(ex.msg_id)} from {ex.requester}"
        if summary:
            text += f": {summary}"
        # The tracker's count of identical copies: a Main Mode's MM3/MM5 and a fragmented
        # IKE_AUTH's fragments are further request frames, not retransmissions.
        if ex.retransmits:
            text += f" ({plural(ex.retransmits, 'retransmit')})"
        if not ex.response_frames and not one_way(ex.exchange, sa.version):
            text += " — no response"
        frame = ex.request_frames[0] if ex.request_frames else None
        out.append(Event(ex.request_ts, frame, "fail" if failed else "ike", text, "red" if failed else "cyan"))
    if sa.deleted_ts is not None:
        out.append(Event(sa.deleted_ts, None, "delete", f"IKE SA {sa.ike_spi_i.hex()[:8]} deleted", "dim"))
    return out


def exchange_marks(sa: IkeSa, unanswered: Collection[int] = ()) -> list[tuple[float, str, str]]:
    """◆ an exchange that got its answer, ✗ one that failed or got none (drawn on the IKE lane)."""
    marks = []
    for ex in sa.exchanges:
        if ex.request_ts is None:
            continue
        failed = _failed(sa, ex, unanswered)
        marks.append((ex.request_ts, "✗" if failed else "◆", "bold red" if failed else "cyan"))
    return marks


def child_events(c: ChildSa) -> list[Event]:
    out = []
    spis = f"{spi_digits(c.spi_i)}/{spi_digits(c.spi_r)}"
    if c.created_ts is not None:
        how = "rekeyed from #" + str(c.rekeyed_from) if c.rekeyed_from else (c.created_by or "created")
        style = "red" if c.state is SaState.FAILED else "green"
        out.append(Event(c.created_ts, c.created_frame, "child", f"CHILD #{c.id} {spis} {how}", style))
    if c.rekeyed_ts is not None:
        out.append(Event(c.rekeyed_ts, None, "rekey", f"CHILD #{c.id} rekeyed into #{c.rekeyed_into}", "blue"))
    if c.deleted_ts is not None:
        out.append(Event(c.deleted_ts, c.deleted_frame, "delete",
                         f"CHILD #{c.id} {spis} deleted by {c.deleted_by or '?'}", "dim"))
    return out


def finding_events(findings: Sequence[Finding]) -> list[Event]:
    return [
        Event(f.ts, f.frames[0] if f.frames else None, "finding", f"{f.code}: {arrow_text(f.title)}",
              "bold red" if f.severity is Severity.ERROR else "yellow")
        for f in findings if f.ts is not None and f.severity >= Severity.WARNING
    ]


@dataclass(slots=True)
class TimeScale:
    """The one mapping time → column that the axis and every lane use.

    Each lane is a label column of :data:`LABEL_W` and a strip; all strips have the same width (the
    lanes' scrollbar gutter is kept whether or not it is needed, and the axis row pads the same), so
    a time lands in the same screen column on the axis, an IKE lane and a CHILD lane. Times outside
    the capture (an end after the last frame) are clamped into the strip, never cut off.
    """

    t0: float = 0.0
    t1: float = 0.0

    def col(self, ts: float, width: int) -> int:
        """Column 0..width-1 of ``ts`` in a strip ``width`` columns wide (nearest column)."""
        span = self.t1 - self.t0
        if width <= 1 or span <= 0:
            return 0
        return min(width - 1, max(0, round((ts - self.t0) / span * (width - 1))))


class LifeBar(Widget):
    """One SA's life along the capture's time axis: ▶ created, ━ alive, ╌ after rekey, ✕ deleted."""

    DEFAULT_CSS = "LifeBar { height: 1; width: 1fr; }"

    def __init__(self, scale: TimeScale, start: float | None, rekey: float | None, end: float | None,
                 style: str, marks: Sequence[tuple[float, str, str]] = ()) -> None:
        super().__init__()
        self.scale, self.start, self.rekey, self.end, self.bar_style = scale, start, rekey, end, style
        self.marks = marks  # (ts, glyph, style): IKE exchanges on the IKE SA's lane

    def glyphs(self, width: int) -> list[tuple[str, str]]:
        """The strip's cells: the bar, then the markers, each at the column of its own time."""
        col = self.scale.col
        cells: list[tuple[str, str]] = [(" ", "")] * width
        if width <= 0:
            return cells
        start = col(self.start if self.start is not None else self.scale.t0, width)
        end = col(self.end if self.end is not None else self.scale.t1, width)
        rekey = col(self.rekey, width) if self.rekey is not None else None
        for x in range(start, end + 1):
            after = rekey is not None and x > rekey
            cells[x] = ("╌", "dim") if after else ("━", self.bar_style)
        # Later wins a shared column: answered exchanges < created < rekeyed < deleted < failed
        # (a failure is what the user is looking for; the DELETE exchange itself sits under ✕).
        for ts, glyph, style in self.marks:
            if glyph != "✗":
                cells[col(ts, width)] = (glyph, style)
        if self.start is not None:
            cells[start] = ("▶", self.bar_style)
        if rekey is not None:
            cells[rekey] = ("↻", "bold blue")
        if self.end is not None:
            cells[end] = ("✕", "bold")
        for ts, glyph, style in self.marks:
            if glyph == "✗":
                cells[col(ts, width)] = (glyph, style)
        return cells

    def render(self) -> Text:
        return Text.assemble(*self.glyphs(self.size.width))


class SeenBar(LifeBar):
    """An SA known only from its packets (OpenBSD enc(4): no IKE, no ESP header): a thin line from
    its first packet to its last, with no ▶/✕, since nothing in the capture says when it was created
    or deleted."""

    def glyphs(self, width: int) -> list[tuple[str, str]]:
        cells: list[tuple[str, str]] = [(" ", "")] * max(0, width)
        if width <= 0 or self.start is None:
            return cells
        end = self.end if self.end is not None else self.start
        for x in range(self.scale.col(self.start, width), self.scale.col(end, width) + 1):
            cells[x] = ("─", self.bar_style)
        return cells


class Activity(Widget):
    """ESP packets per column, from :func:`panes.activity`'s time buckets put through the lane's
    :class:`TimeScale` (a stock Sparkline would split the buckets its own way, a column off)."""

    DEFAULT_CSS = "Activity { height: 1; width: 1fr; }"
    BARS = "▁▂▃▄▅▆▇█"

    def __init__(self, scale: TimeScale, buckets: Sequence[float], style: str) -> None:
        super().__init__()
        self.scale, self.buckets, self.bar_style = scale, buckets, style

    def columns(self, width: int) -> list[float]:
        out = [0.0] * max(0, width)
        n = len(self.buckets)
        if not out or n == 0:
            return out
        t0, span = self.scale.t0, self.scale.t1 - self.scale.t0
        for b, v in enumerate(self.buckets):
            if v:  # bucket b holds the packets at fraction b/(n-1) of the span (panes.activity)
                out[self.scale.col(t0 + span * b / max(1, n - 1), width)] += v
        return out

    def render(self) -> Text:
        cols = self.columns(self.size.width)
        top = max(cols, default=0.0) or 1.0
        last = len(self.BARS) - 1
        # any packet at all is at least ▂, so a single packet is not lost among the empty ▁
        return Text.assemble(*((self.BARS[max(1, round(v / top * last))], self.bar_style) if v else ("▁", "dim")
                               for v in cols))


class Axis(Widget):
    """Time ticks above the lanes, through the same :class:`TimeScale` as every :class:`LifeBar`."""

    DEFAULT_CSS = "Axis { height: 1; width: 1fr; }"

    def __init__(self, scale: TimeScale) -> None:
        super().__init__()
        self.scale = scale
        self.shown = False  # nothing to scale before a capture is loaded

    def render(self) -> Text:
        width = self.size.width
        if not self.shown or width <= 0:
            return Text("")
        t0, span = self.scale.t0, self.scale.t1 - self.scale.t0
        line = [" "] * width
        ticks = 4 if width >= 40 else 2
        for i in range(ticks + 1):
            x = self.scale.col(t0 + span * i / ticks, width)
            label = timefmt.offset(span * i / ticks, span)
            # the first label starts at its tick, the last ends at it, the others are centred
            start = x if i == 0 else x - len(label) + 1 if i == ticks else x - len(label) // 2
            start = max(0, min(start, width - len(label)))
            if all(c == " " for c in line[max(0, start - 1):start + len(label) + 1]):
                line[start:start + len(label)] = list(label)
        return Text("".join(line), "dim")


class Legend(Widget):
    """The timeline's key: when 0s is and the span, then what each glyph means. One line when it
    fits; else the 0s/span on a line of its own and the glyph keys below, wrapped between whole keys
    (at 80 columns one line was cut after "▶ created": ◆ ✗ ↻ ✕ had no key). The line count depends
    on the width alone, not on the span's digits, so a live capture's lanes do not jump."""

    DEFAULT_CSS = "Legend { height: auto; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.head = Text("")
        self.keys: list[Text] = []

    def show(self, head: Text, keys: list[Text]) -> None:
        width = self.content_region.width or 10_000
        before = len(self.lines(width))
        self.head, self.keys = head, keys
        self.refresh(layout=len(self.lines(width)) != before)

    def lines(self, width: int) -> list[Text]:
        if not self.head and not self.keys:
            return []
        one = Text.assemble(self.head, "  ", Text(" ").join(self.keys))
        if one.cell_len <= width:
            return [one]
        out = [self.head.copy()]
        line: Text | None = None
        for k in self.keys:
            if line is not None and line.cell_len + 1 + k.cell_len <= width:
                line = Text.assemble(line, " ", k)
            else:
                if line is not None:
                    out.append(line)
                line = k.copy()
        if line is not None:
            out.append(line)
        return out

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.lines(width))

    def render(self) -> Text:
        return Text("\n").join(self.lines(self.content_region.width or 10_000))


class Lane(Horizontal):
    """A label column of :data:`LABEL_W`, then the time strip(s): the only place the label width is taken off."""

    DEFAULT_CSS = f"""
    Lane {{ height: auto; }}
    Lane > Label {{ width: {LABEL_W}; }}
    Lane > Vertical {{ height: auto; width: 1fr; }}
    """


class Timeline(Vertical):
    """Posts :class:`JumpToFrame` when an event is chosen."""

    class JumpToFrame(Message):
        def __init__(self, frame: int) -> None:
            super().__init__()
            self.frame = frame

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.events: list[Event] = []
        self.scale = TimeScale()  # shared by the axis and every lane; show() sets its span
        self._pending: SessionView | None = None

    def compose(self) -> ComposeResult:
        yield Legend(id="timeline-legend")
        yield Lane(Label(""), Axis(self.scale), id="timeline-axis")
        yield VerticalScroll(id="timeline-lanes")
        yield OptionList(id="timeline-events")

    def show_session(self, view: SessionView) -> None:
        # Live or loading, a hidden timeline would be rebuilt every second for nobody: draw it when shown.
        if view.growing and not all(n.display for n in self.ancestors_with_self if isinstance(n, Widget)):
            self._pending = view
            return
        self._pending = None
        self.show(view.table, view.activity, view.findings, view.empty, live=view.live)

    def on_show(self) -> None:
        view, self._pending = self._pending, None
        if view is not None:
            with view.lock:
                self.show(view.table, view.activity, view.findings, view.empty, live=view.live)

    def show(self, table: SaTable, act: dict[object, list[float]], findings: Sequence[Finding],
             empty: str | None = None, live: bool = False) -> None:
        """``act`` is :func:`activity` over the rows (computed off the UI thread by the caller);
        ``empty``: why the capture shows no IPsec (panes.empty_text), said in place of the lanes.
        ``live``: the newest is what matters (``tail -f``): the events follow the last one while the
        highlight is on it, and the lanes stay scrolled to the newest SAs while they were at the end."""
        t0 = table.first_ts or 0.0
        t1 = table.last_ts or t0
        self.scale.t0, self.scale.t1 = t0, t1
        lanes = self.query_one("#timeline-lanes", VerticalScroll)
        lanes_at_end = lanes.scroll_y >= lanes.max_scroll_y
        lanes.remove_children()
        widgets: list[Widget] = []
        unanswered = unanswered_frames(findings)
        for sa in sorted(table.ike_sas.values(), key=lambda s: s.created_ts or t0):
            label = Text(f"IKE {sa.ike_spi_i.hex()[:8]}", STATE_STYLE.get(sa.state, ""))
            bar = LifeBar(self.scale, sa.created_ts, None, sa.deleted_ts, "cyan", exchange_marks(sa, unanswered))
            widgets.append(Lane(Label(label), bar, classes="ike-lane"))
        children = sorted(table.child_sas.values(), key=lambda c: (c.created_ts or t0, c.id))
        for c in children:
            spi = c.spi_i if c.spi_i is not None else c.spi_r  # one way only: the SPI it has
            label = Text.assemble((f"#{c.id} ", "bold"), (spi_digits(spi), STATE_STYLE.get(c.state, "")))
            flows = c.flows(table)
            start = c.created_ts if c.created_ts is not None else min(
                (f.first_ts for f in flows if f.first_ts is not None), default=None)
            bar = LifeBar(self.scale, start, c.rekeyed_ts, c.deleted_ts, "green")
            spark = Activity(self.scale, act.get(c.id, []), "green")
            widgets.append(Lane(Label(label), Vertical(bar, spark)))
        for key, series in act.items():
            if isinstance(key, tuple):
                label = Text(f"SPI {key[1]:08x}", "magenta")
                widgets.append(Lane(Label(label), Vertical(LifeBar(self.scale, None, None, None, "magenta"),
                                                           Activity(self.scale, series, "magenta"))))
        # SAs seen only through OpenBSD's enc(4) (state/enc_sa): lanes too, else a capture of only
        # those read "No SA in this capture" beside a tree of them
        for e in sorted(table.enc_sas.values(), key=lambda e: (e.first_ts or t0, e.spi)):
            label = Text.assemble(("enc ", "bold"), (spi_digits(e.spi), "magenta"))
            widgets.append(Lane(Label(label), SeenBar(self.scale, e.first_ts, None, e.last_ts, "magenta")))
        if widgets:
            lanes.mount_all(widgets)
            if live and lanes_at_end:
                lanes.call_after_refresh(lanes.scroll_end, animate=False, immediate=True)
        else:
            lanes.mount(Static(Text(empty or "No SA in this capture.", "dim")))
        axis = self.query_one(Axis)
        axis.shown = table.first_ts is not None  # no frame, no time axis
        axis.refresh()
        # 0s on the axis and in the events is the first frame: say when, in the --tz zone, labelled
        keys = ["▶ created", "◆ exchange", "✗ failed", "↻ rekeyed", "✕ deleted", "▁▃▅ ESP"]
        if table.enc_sas:
            keys.append("─ enc(4) SA seen")
        legend = self.query_one("#timeline-legend", Legend)
        if table.first_ts is None:  # no frame: no moment to count from (it said 1970-01-01)
            legend.show(Text(""), [])
        else:
            legend.show(Text(f"0s = {timefmt.stamp(t0, 3)}, span {t1 - t0:.3f}s", "dim"), [Text(k, "dim") for k in keys])

        events: list[Event] = []
        for sa in table.ike_sas.values():
            events += ike_events(sa, unanswered)
        for c in table.child_sas.values():
            events += child_events(c)
        events += finding_events(findings)
        events.sort(key=lambda e: e.ts)
        ol = self.query_one("#timeline-events", OptionList)
        # a refresh (loading, live) keeps the highlighted event where it was
        old = self.events[ol.highlighted] if ol.highlighted is not None and ol.highlighted < len(self.events) else None
        tail = live and (old is None or ol.highlighted == len(self.events) - 1)
        self.events = events
        ol.clear_options()
        opts = []
        for i, e in enumerate(events):
            t = Text(e.text, e.style)
            if e.frame is not None:
                t.append(f"  [{frame_ref(e.frame)}]", "dim")  # never "[frame" / "3]" (model.idtext)
            # A grid, so a long event wraps under its own text and the time column stays clear.
            row = PlainTable.grid(padding=(0, 1))
            row.add_column(no_wrap=True, width=10, justify="right")
            row.add_column(ratio=1)
            row.add_row(Text(f"{e.ts - t0:.3f}s", "dim"), t)
            opts.append(Option(row, id=str(i)))
        if opts:
            ol.add_options(opts)
            if tail:  # live, newest events at the bottom: keep them in view, as the packet list does
                ol.highlighted = len(opts) - 1
            else:
                ol.highlighted = next((i for i, e in enumerate(events) if old is not None and
                                       (e.ts, e.text, e.frame) == (old.ts, old.text, old.frame)), 0)
        else:
            ol.add_option(Option(Text("No IKE exchanges or SA events in this capture.", "dim"), disabled=True))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option_id is None:
            return
        e = self.events[int(event.option_id)]
        if e.frame is not None:
            self.post_message(self.JumpToFrame(e.frame))
