"""Export modal: what to write and where. The writing itself is done by the export/CLI functions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet


@dataclass(frozen=True, slots=True)
class ExportKind:
    key: str
    title: str
    suffix: str  # appended to the capture's stem for the suggested file name


KINDS = [
    ExportKind("pcapng", "Decrypted packets (pcapng, inner packets, original timestamps)", ".decrypted.pcapng"),
    ExportKind("jsonl", "Decrypted packets (JSON lines, ipsecscope.decrypt/1)", ".decrypted.jsonl"),
    ExportKind("sas", "Security associations (JSON, ipsecscope.sas/1)", ".sas.json"),
    ExportKind("findings", "Findings (JSON, ipsecscope.findings/1)", ".findings.json"),
    ExportKind("esp_sa", "Key table: Wireshark esp_sa (keys are written!)", ".esp_sa"),
    ExportKind("ikev2_table", "Key table: Wireshark ikev2_decryption_table (keys are written!)",
               ".ikev2_decryption_table"),
    ExportKind("keys_json", "Key table: JSON (keys are written!)", ".keys.json"),
]


@dataclass(frozen=True, slots=True)
class ExportRequest:
    kind: str
    path: Path


class ExportScreen(ModalScreen[ExportRequest | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, capture: Path) -> None:
        super().__init__()
        self.capture = capture

    def _suggest(self, kind: ExportKind) -> str:
        name = self.capture.name
        for ext in (".gz", ".pcapng", ".pcap", ".cap"):
            name = name.removesuffix(ext)
        return str(self.capture.with_name(name + kind.suffix))

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box"):
            yield Label(Text("Export", "bold"))
            with RadioSet(id="export-kind"):
                for i, k in enumerate(KINDS):
                    yield RadioButton(k.title, value=i == 0, name=k.key)
            yield Label("Write to:")
            yield Input(self._suggest(KINDS[0]), id="export-path")
            with Horizontal(classes="buttons"):
                yield Button("Export", variant="primary", id="export-go")
                yield Button("Cancel", id="export-cancel")

    @property
    def kind(self) -> ExportKind:
        idx = self.query_one(RadioSet).pressed_index
        return KINDS[idx if idx >= 0 else 0]

    @on(RadioSet.Changed)
    def _kind_changed(self, event: RadioSet.Changed) -> None:
        self.query_one("#export-path", Input).value = self._suggest(self.kind)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._done()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "export-go":
            self._done()
        else:
            self.dismiss(None)

    def _done(self) -> None:
        value = self.query_one("#export-path", Input).value.strip()
        if not value:
            self.notify("Give a file name to write.", severity="warning")
            return
        path = Path(value).expanduser()
        if not path.parent.is_dir():
            self.notify(f"No such directory: {path.parent}", severity="error")
            return
        if path.resolve() == self.capture.resolve():
            self.notify("That is the capture itself; choose another file name.", severity="error")
            return
        self.dismiss(ExportRequest(self.kind.key, path))

    def action_cancel(self) -> None:
        self.dismiss(None)
