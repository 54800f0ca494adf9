"""Findings tab: a table sorted by severity and an explanation of the highlighted one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

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

    def compose(self) -> ComposeResult:
        table: DataTable[Text | str] = DataTable(id="findings-table", cursor_type="row", zebra_stripes=True)
        table.add_column("Sev", key="sev", width=6)
        table.add_column("Code", key="code")
        table.add_column("Title", key="title")
        table.add_column("Frames", key="frames")
        yield table
        with VerticalScroll(id="finding-explain-box"):
            yield Static("", id="finding-explain")

    def show_session(self, view: SessionView) -> None:
        # Live refreshes come every second: keep the cursor unless the findings really changed.
        # Titles carry the counts (e.g. ESP-RETURN-STOPPED's unanswered packets), which grow
        # while the codes stay: compare both so the live view shows the new numbers.
        if view.live and [(f.code, f.title) for f in self.findings] == [(f.code, f.title) for f in view.findings]:
            return
        self.show_findings(view.findings)

    def show_findings(self, findings: Sequence[Finding]) -> None:
        self.findings = sort_findings(findings)
        table = self.query_one(DataTable)
        table.clear()
        for i, f in enumerate(self.findings):
            sev = Text(SEVERITY_LABEL.get(f.severity, f.severity.name), SEVERITY_STYLE.get(f.severity, ""))
            table.add_row(sev, Text(f.code, "bold"), f.title, frames_text(f.frames), key=str(i))
        if not self.findings:
            self.query_one("#finding-explain", Static).update(Text("No findings: nothing looks wrong.", "green"))
        else:
            table.move_cursor(row=0)
            self._explain(0)

    def _explain(self, index: int) -> None:
        if not 0 <= index < len(self.findings):
            return
        f = self.findings[index]
        text = Text()
        text.append(f"{f.severity.name} {f.code}", SEVERITY_STYLE.get(f.severity, ""))
        text.append(f"  {f.title}\n", "bold")
        text.append(f.explanation)
        if f.hint:
            text.append("\nWhat to do: ", "bold")
            text.append(f.hint)
        if f.sa:
            text.append(f"\nSA: {f.sa}", "dim")
        if f.frames:
            text.append(f"\nEvidence frames: {frames_text(f.frames, 20)}  (Enter: show them in Packets)", "dim")
        self.query_one("#finding-explain", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._explain(event.cursor_row)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if 0 <= event.cursor_row < len(self.findings):
            self.post_message(self.JumpToEvidence(self.findings[event.cursor_row]))
