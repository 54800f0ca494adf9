"""Findings tab: a table sorted by severity and an explanation of the highlighted one."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from ...model.idtext import arrow_text, sa_ref_text
from ...model.sa import Finding, Severity

if TYPE_CHECKING:
    from ..panes import SessionView

SEVERITY_LABEL = {Severity.ERROR: "✗ ERR", Severity.WARNING: "⚠ WARN", Severity.INFO: "· info"}
SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def sort_findings(findings: Sequence[Finding]) -> list[Finding]:
    """Most severe first, then in capture order."""
    return sorted(findings, key=lambda f: (-int(f.severity), f.ts if f.ts is not None else 0.0, f.code))


def frames_text(frames: Sequence[int], limit: int = 6) -> str:
    if not frames:
        return ""
    shown = ", ".join(str(f) for f in frames[:limit])
    return shown + (f" +{len(frames) - limit}" if len(frames) > limit else "")


class FindingsView(Vertical):
    """Posts :class:`JumpToEvidence` when a finding is chosen (Enter or click)."""

    class JumpToEvidence(Message):
        def __init__(self, finding: Finding) -> None:
            super().__init__()
            self.finding = finding

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.findings: list[Finding] = []
        self._filled_width = 0
        self._filled_height = 0
        # (code, SA) of the finding the last refresh put the cursor on: the cursor elsewhere at the
        # next refresh means the user moved it, and from then on refreshes leave it to them.
        self._placed: tuple[str, str | None] | None = None
        self._following = True

    def compose(self) -> ComposeResult:
        partial = Static("", id="findings-partial")
        partial.display = False  # only while a capture loads
        yield partial
        yield DataTable(id="findings-table", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="finding-explain-box"):
            yield Static("", id="finding-explain")

    def show_session(self, view: SessionView) -> None:
        notice = self.query_one("#findings-partial", Static)
        notice.display = view.partial is not None
        if view.partial is not None:
            # The rules ran over what was read so far: a later frame may answer a request, close
            # an SA or add packets, so these can still change (final when loading ends).
            notice.update(Text(f"Partial: {view.partial:.0%} of the capture read; findings so far.",
                               "bold yellow"))
        # Refreshes come every second: keep the table unless the findings really changed.
        # Titles carry the counts (e.g. ESP-RETURN-STOPPED's unanswered packets), which grow
        # while the codes stay: compare both so the view shows the new numbers.
        if view.growing and [(f.code, f.title) for f in self.findings] == [(f.code, f.title) for f in view.findings]:
            return
        self.show_findings(view.findings, view.empty)

    def show_findings(self, findings: Sequence[Finding], empty: str | None = None) -> None:
        """Fill the table; the cursor stays on the finding it was on (same code and SA) if it is
        still there (a refresh while loading or live). While the user has not moved it (it is
        where every refresh put it), it goes to the most severe of the findings new in this one (the newest of
        those), unless that is less severe than the one it is on: live, an error that arrived
        while the cursor sat on an info kept the explanation on the info."""
        table = self.query_one(DataTable)
        old = self.findings[table.cursor_row] if 0 <= table.cursor_row < len(self.findings) else None
        before = {(f.code, f.sa) for f in self.findings}
        self.findings = sort_findings(findings)
        at = 0
        if old is not None:
            at = next((i for i, f in enumerate(self.findings) if (f.code, f.sa) == (old.code, old.sa)), 0)
            new = [i for i, f in enumerate(self.findings) if (f.code, f.sa) not in before]
            self._following = self._following and self._placed == (old.code, old.sa)
            if new and self._following:
                best = max(new, key=lambda i: (int(self.findings[i].severity), self.findings[i].ts or 0.0))
                if self.findings[best].severity >= old.severity:
                    at = best
        self._fill(at)
        self._placed = (self.findings[at].code, self.findings[at].sa) if self.findings else None
        if not self.findings:
            # "nothing looks wrong" of a capture with nothing in it would be a false all-clear
            note = Text(f"No findings. {empty}", "yellow") if empty else Text("No findings: nothing looks wrong.", "green")
            self.query_one("#finding-explain", Static).update(note)
        else:
            self._explain(at)

    def on_resize(self, event: events.Resize) -> None:
        table = self.query_one(DataTable)
        # Titles wrap to the new width, and are cut to the new height's share (see _fill).
        if self.findings and (table.size.width, table.size.height) != (self._filled_width, self._filled_height):
            self._fill(table.cursor_row)

    def _fill(self, cursor: int) -> None:
        """The table at the pane's width: code and frames whole, the title wrapped under itself at
        spaces; on a narrow pane (80 columns) the frames column gives way to the title (the
        evidence frames are in the explanation below)."""
        table: DataTable[Text | str] = self.query_one(DataTable)
        # Not laid out yet (a hidden tab): 80 columns for now, the first resize fills it again.
        self._filled_width, self._filled_height = table.size.width, table.size.height
        width = (table.size.width or 80) - 2  # the vertical scrollbar
        # When the rows do not all fit, none takes more than a third of the list's height: at 80x24
        # the title column is ~24 cells and one error's title wrapped to 10 lines, filling the
        # list, so a newer warning arrived out of sight (live4). The whole title heads the
        # explanation below the list.
        room = table.size.height - 1 if table.size.height else 0  # the header row
        most = max(2, room // 3) if room else 3
        code_w = max((len(f.code) for f in self.findings), default=4)
        frames = [frames_text(f.all_frames, 3) for f in self.findings]
        frames_w = max((len(x) for x in frames), default=0)
        title_w = width - 2 * 4 - 6 - code_w - max(frames_w, 6)  # 4 columns, 1 cell of padding each side
        with_frames = title_w >= 30
        if not with_frames:
            title_w = width - 2 * 3 - 6 - code_w
        # Narrower still (80 columns beside the SA tree): the code goes on a line of its own above
        # its title, which gets the code column's width. Side by side, a long code
        # (IKE-CHILD-LIKELY-REFUSED) left the title 20 cells, and one sentence took 5 lines.
        stacked = width - 2 * 3 - 6 - code_w < 40  # even without the frames column
        if stacked:
            with_frames = False
            title_w = width - 2 * 2 - 6
        title_w = max(title_w, 16)
        table.clear(columns=True)
        table.add_column("Sev", key="sev", width=6)
        if not stacked:
            table.add_column("Code", key="code", width=code_w)
        table.add_column("Code / Title" if stacked else "Title", key="title", width=title_w)
        if with_frames:
            table.add_column("Frames", key="frames", width=max(frames_w, 6))
        wrapped = []
        for f in self.findings:
            title = arrow_text(f.title) + (f" ×{f.count:,}\u00a0SAs" if f.count > 1 else "")  # one finding for many SAs
            wrapped.append(textwrap.wrap(title, title_w, break_long_words=False, break_on_hyphens=False) or [""])
        extra = 1 if stacked else 0  # the code's line
        if sum(len(lines) + extra for lines in wrapped) > (room or 3 * len(wrapped)):
            keep = max(1, most - extra)
            wrapped = [lines if len(lines) <= keep else [*lines[:keep - 1], lines[keep - 1][:title_w - 1] + "…"]
                       for lines in wrapped]
        for i, f in enumerate(self.findings):
            sev = Text(SEVERITY_LABEL.get(f.severity, f.severity.name), SEVERITY_STYLE.get(f.severity, ""))
            lines = wrapped[i]
            title = Text("\n".join(lines))
            if stacked:
                cells: list[Text | str] = [sev, Text.assemble((f.code, "bold"), "\n", title)]
            else:
                cells = [sev, Text(f.code, "bold"), title]
            if with_frames:
                cells.append(Text(frames[i]))
            table.add_row(*cells, key=str(i), height=len(lines) + extra)
        if self.findings:
            table.move_cursor(row=min(max(cursor, 0), len(self.findings) - 1))

    def _explain(self, index: int) -> None:
        if not 0 <= index < len(self.findings):
            return
        f = self.findings[index]
        text = Text()
        text.append(f"{f.severity.name} {f.code}", SEVERITY_STYLE.get(f.severity, ""))
        text.append(f"  {arrow_text(f.title)}\n", "bold")
        text.append(arrow_text(f.explanation))
        if f.hint:
            text.append("\nWhat to do: ", "bold")
            text.append(arrow_text(f.hint))
        if f.sa:
            more = f" and {f.count - 1:,} more (findings --json lists every one)" if f.count > 1 else ""
            text.append(f"\nSA: {sa_ref_text(f.sa)}{more}", "dim")
        if f.frames:  # an aggregated finding's: every SA's (Enter shows them all)
            text.append(f"\nEvidence frames: {frames_text(f.all_frames, 20)}  (Enter: show them in Packets)", "dim")
        self.query_one("#finding-explain", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._explain(event.cursor_row)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if 0 <= event.cursor_row < len(self.findings):
            self.post_message(self.JumpToEvidence(self.findings[event.cursor_row]))
