"""Timeline tab: SA lifetimes on a common time axis with ESP activity sparklines, then the events.

The lanes show when each SA lived; after a rekey the old and the new CHILD SA overlap on the axis
(RFC 7296 §2.8: the old SA is deleted only after the new one is in place), which is where
traffic on the wrong SA and lost packets tend to hide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Label, OptionList, Sparkline, Static
from textual.widgets.option_list import Option

from ...model import iana
from ...model.sa import ChildSa, Finding, IkeSa, SaState, SaTable, Severity
from ..panes import SessionView
from .sa_tree import STATE_STYLE, spi_text

LABEL_W = 14


@dataclass(slots=True, frozen=True)
class Event:
    ts: float
    frame: int | None
    kind: str  # "ike" | "child" | "rekey" | "delete" | "fail" | "finding"
    text: str
    style: str = ""


def ike_events(sa: IkeSa) -> list[Event]:
    out = []
    for ex in sa.exchanges:
        if ex.request_ts is None:
            continue
        name = iana.name(iana.ExchangeType, ex.exchange) if sa.version == 2 else iana.name(
            iana.Ikev1Exchange, ex.exchange)
        failed = not ex.response_frames or (sa.version == 2 and any(iana.notify_is_error(n) for n in ex.notifies))
        summary = ex.summary.removeprefix(name).strip()
        text = f"{name} #{ex.msg_id} from {ex.requester}"
        if summary:
            text += f": {summary}"
        if len(ex.request_frames) > 1:
            text += f" ({len(ex.request_frames) - 1} retransmits)"
        if not ex.response_frames:
            text += " — no response"
        frame = ex.request_frames[0] if ex.request_frames else None
        out.append(Event(ex.request_ts, frame, "fail" if failed else "ike", text, "red" if failed else "cyan"))
    if sa.deleted_ts is not None:
        out.append(Event(sa.deleted_ts, None, "delete", f"IKE SA {sa.ike_spi_i.hex()[:8]} deleted", "dim"))
    return out


def exchange_marks(sa: IkeSa) -> list[tuple[float, str, str]]:
    """◆ an exchange that got its answer, ✗ one that failed or got none (drawn on the IKE lane)."""
    marks = []
    for ex in sa.exchanges:
        if ex.request_ts is None:
            continue
        failed = not ex.response_frames or (sa.version == 2 and any(iana.notify_is_error(n) for n in ex.notifies))
        marks.append((ex.request_ts, "✗" if failed else "◆", "bold red" if failed else "cyan"))
    return marks


def child_events(c: ChildSa) -> list[Event]:
    out = []
    spis = f"{spi_text(c.spi_i)}/{spi_text(c.spi_r)}"
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
        Event(f.ts, f.frames[0] if f.frames else None, "finding", f"{f.code}: {f.title}",
              "bold red" if f.severity is Severity.ERROR else "yellow")
        for f in findings if f.ts is not None and f.severity >= Severity.WARNING
    ]


class LifeBar(Widget):
    """One SA's life along the capture's time axis: ▶ created, ━ alive, ╌ after rekey, ✕ deleted."""

    DEFAULT_CSS = "LifeBar { height: 1; }"

    def __init__(self, t0: float, t1: float, start: float | None, rekey: float | None, end: float | None,
                 style: str, marks: Sequence[tuple[float, str, str]] = ()) -> None:
        super().__init__()
        self.t0, self.t1, self.start, self.rekey, self.end, self.bar_style = t0, t1, start, rekey, end, style
        self.marks = marks  # (ts, glyph, style): IKE exchanges on the IKE SA's lane

    def _col(self, ts: float, width: int) -> int:
        span = (self.t1 - self.t0) or 1.0
        return min(width - 1, max(0, int((ts - self.t0) / span * (width - 1))))

    def render(self) -> Text:
        width = self.size.width
        if width <= 0:
            return Text("")
        cells: list[tuple[str, str]] = [(" ", "")] * width
        start = self._col(self.start if self.start is not None else self.t0, width)
        end = self._col(self.end if self.end is not None else self.t1, width)
        rekey = self._col(self.rekey, width) if self.rekey is not None else None
        for x in range(start, end + 1):
            after = rekey is not None and x > rekey
            cells[x] = ("╌", "dim") if after else ("━", self.bar_style)
        for ts, glyph, style in self.marks:
            cells[self._col(ts, width)] = (glyph, style)
        if self.start is not None:
            cells[start] = ("▶", self.bar_style)
        if rekey is not None:
            cells[rekey] = ("↻", "bold blue")
        if self.end is not None:
            cells[end] = ("✕", "bold")
        return Text.assemble(*cells)


class Axis(Widget):
    """Time ticks above the lanes, aligned with :class:`LifeBar` columns."""

    DEFAULT_CSS = "Axis { height: 1; }"

    def __init__(self, t0: float, t1: float) -> None:
        super().__init__()
        self.t0, self.t1 = t0, t1
        self.shown = False  # nothing to scale before a capture is loaded

    def render(self) -> Text:
        if not self.shown:
            return Text("")
        width = self.size.width - LABEL_W
        span = self.t1 - self.t0
        line = [" "] * max(0, width)
        ticks = 4 if width >= 40 else 2
        for i in range(ticks + 1):
            x = int(i * (width - 1) / ticks) if width > 1 else 0
            label = f"{span * i / ticks:.3g}s"
            start = x if i == 0 else max(0, min(x - len(label) // 2, width - len(label)))
            if i == ticks:
                start = max(0, width - len(label))
            if all(c == " " for c in line[max(0, start - 1):start + len(label) + 1]):
                line[start:start + len(label)] = list(label)
        return Text(" " * LABEL_W + "".join(line), "dim")


class Lane(Horizontal):
    DEFAULT_CSS = """
    Lane { height: 2; }
    Lane > Label { width: 14; }
    Lane > Vertical { height: 2; }
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
        self._pending: SessionView | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="timeline-legend")
        yield Axis(0.0, 0.0)
        yield VerticalScroll(id="timeline-lanes")
        yield OptionList(id="timeline-events")

    def show_session(self, view: SessionView) -> None:
        # Live, a hidden timeline would be rebuilt every second for nobody: draw it when shown.
        if view.live and not all(n.display for n in self.ancestors_with_self if isinstance(n, Widget)):
            self._pending = view
            return
        self._pending = None
        self.show(view.table, view.activity, view.findings)

    def on_show(self) -> None:
        view, self._pending = self._pending, None
        if view is not None:
            with view.lock:
                self.show(view.table, view.activity, view.findings)

    def show(self, table: SaTable, act: dict[object, list[float]], findings: Sequence[Finding]) -> None:
        """``act`` is :func:`activity` over the rows (computed off the UI thread by the caller)."""
        t0 = table.first_ts or 0.0
        t1 = table.last_ts or t0
        lanes = self.query_one("#timeline-lanes", VerticalScroll)
        lanes.remove_children()
        widgets: list[Widget] = []
        for sa in sorted(table.ike_sas.values(), key=lambda s: s.created_ts or t0):
            label = Text(f"IKE {sa.ike_spi_i.hex()[:8]}", STATE_STYLE.get(sa.state, ""))
            bar = LifeBar(t0, t1, sa.created_ts, None, sa.deleted_ts, "cyan", exchange_marks(sa))
            widgets.append(Horizontal(Label(label), bar, classes="ike-lane"))
        children = sorted(table.child_sas.values(), key=lambda c: (c.created_ts or t0, c.id))
        for c in children:
            label = Text.assemble((f"#{c.id} ", "bold"), (f"{spi_text(c.spi_i)[:8]}", STATE_STYLE.get(c.state, "")))
            flows = c.flows(table)
            start = c.created_ts if c.created_ts is not None else min(
                (f.first_ts for f in flows if f.first_ts is not None), default=None)
            bar = LifeBar(t0, t1, start, c.rekeyed_ts, c.deleted_ts, "green")
            spark = Sparkline(act.get(c.id, []))
            widgets.append(Lane(Label(label), Vertical(bar, spark)))
        for key, series in act.items():
            if isinstance(key, tuple):
                label = Text(f"SPI {key[1]:08x}", "magenta")
                widgets.append(Lane(Label(label), Vertical(LifeBar(t0, t1, None, None, None, "magenta"),
                                                           Sparkline(series))))
        if widgets:
            lanes.mount_all(widgets)
        else:
            lanes.mount(Static(Text("No SA in this capture.", "dim")))
        axis = self.query_one(Axis)
        axis.t0, axis.t1, axis.shown = t0, t1, True
        axis.refresh()
        legend = Text(f"span {t1 - t0:.3f}s  ▶ created ◆ exchange ✗ failed ↻ rekeyed ✕ deleted ▁▃▅ ESP", "dim")
        self.query_one("#timeline-legend", Static).update(legend)

        events: list[Event] = []
        for sa in table.ike_sas.values():
            events += ike_events(sa)
        for c in table.child_sas.values():
            events += child_events(c)
        events += finding_events(findings)
        events.sort(key=lambda e: e.ts)
        self.events = events
        ol = self.query_one("#timeline-events", OptionList)
        ol.clear_options()
        opts = []
        for i, e in enumerate(events):
            t = Text(f"{e.ts - t0:9.3f}s ", "dim", no_wrap=True, overflow="ellipsis")
            t.append(e.text, e.style)
            if e.frame is not None:
                t.append(f"  [frame {e.frame}]", "dim")
            opts.append(Option(t, id=str(i)))
        if opts:
            ol.add_options(opts)
            ol.highlighted = 0
        else:
            ol.add_option(Option(Text("No IKE exchanges or SA events in this capture.", "dim"), disabled=True))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option_id is None:
            return
        e = self.events[int(event.option_id)]
        if e.frame is not None:
            self.post_message(self.JumpToFrame(e.frame))
