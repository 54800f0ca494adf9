"""Export modal: what to write and where. The writing itself is done by the export/CLI functions.

An export that would write nothing is offered disabled, with the reason under the choices (:func:`unavailable`):
a decrypted pcapng of a capture where no ESP packet decrypted was an empty file, and a key table with
no keys loaded a header alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, Static


@dataclass(frozen=True, slots=True)
class ExportKind:
    key: str
    title: str
    suffix: str  # appended to the capture's stem for the suggested file name
    short: str  # named in the line that says why it cannot be written


# Titles fit the dialog at 80 columns (90% of it, less the radio button): a cut title lost its end,
# and the end was what mattered ("original timestam…", "(keys are writt…").
KINDS = [
    ExportKind("pcapng", "Decrypted packets (pcapng: inner packets, capture times)", ".decrypted.pcapng",
               "decrypted pcapng"),
    ExportKind("jsonl", "Decrypted packets (JSON lines, ipsecscope.decrypt/1)", ".decrypted.jsonl",
               "JSON lines"),
    ExportKind("sas", "Security associations (JSON, ipsecscope.sas/1)", ".sas.json", "SAs"),
    ExportKind("findings", "Findings (JSON, ipsecscope.findings/1)", ".findings.json", "findings"),
    ExportKind("esp_sa", "Key table: Wireshark esp_sa (holds keys!)", ".esp_sa", "esp_sa"),
    ExportKind("ikev2_table", "Key table: Wireshark ikev2_decryption_table (holds keys!)",
               ".ikev2_decryption_table", "ikev2_decryption_table"),
    ExportKind("keys_json", "Key table: JSON (holds keys!)", ".keys.json", "keys JSON"),
]


NO_KEYS = "no keys loaded (a adds key files)"


def unavailable(session: Any, captures: Sequence[Path]) -> dict[str, str]:
    """ExportKind.key -> why that export would write nothing (or cannot be written) for this
    session: the kinds not listed can be exported."""
    st, keys = session.stats, session.keys
    out: dict[str, str] = {}
    if len(captures) > 1:
        packets = f"one capture at a time: `ipsecscope decrypt FILE -k KEYS -o OUT` for each of the {len(captures)}"
    elif not st.esp:
        packets = "no ESP in this capture"
    elif st.decrypted:
        packets = ""
    elif not len(keys):
        packets = NO_KEYS
    elif st.icv_failed:
        packets = f"nothing decrypted: {st.icv_failed:,} of {st.esp:,} ESP packets fail their ICV (wrong keys?)"
    else:
        packets = f"nothing decrypted: no key loaded fits the {st.esp:,} ESP packets' SPIs"
    if packets:
        out["pcapng"] = out["jsonl"] = packets
    if not len(keys):
        out["esp_sa"] = out["ikev2_table"] = out["keys_json"] = NO_KEYS
    if keys.ike and not keys.esp:
        out["esp_sa"] = "no ESP keys loaded"
    if keys.esp and not keys.ike:
        out["ikev2_table"] = "no IKEv2 keys loaded"
    return out


def why_text(reasons: dict[str, str]) -> Text:
    """One line per reason, naming the exports it disables (greyed out above it)."""
    by_reason: dict[str, list[str]] = {}
    for k in KINDS:
        if k.key in reasons:
            by_reason.setdefault(reasons[k.key], []).append(k.short)
    text = Text()
    for i, (why, kinds) in enumerate(by_reason.items()):
        text.append("\n" if i else "")
        text.append(f"✗ {', '.join(kinds)}", "yellow")
        text.append(f": {why}")
    return text


@dataclass(frozen=True, slots=True)
class ExportRequest:
    kind: str
    path: Path


class ExportScreen(ModalScreen[ExportRequest | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, capture: Path, unavailable: dict[str, str] | None = None) -> None:
        super().__init__()
        self.capture = capture
        self.unavailable = unavailable or {}
        # the first kind that can be written is chosen to begin with
        self.initial = next((k for k in KINDS if k.key not in self.unavailable), KINDS[0])

    def _suggest(self, kind: ExportKind) -> str:
        name = self.capture.name
        for ext in (".gz", ".pcapng", ".pcap", ".cap"):
            name = name.removesuffix(ext)
        return str(self.capture.with_name(name + kind.suffix))

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box"):
            yield Label(Text("Export", "bold"))
            with RadioSet(id="export-kind"):
                for k in KINDS:
                    off = k.key in self.unavailable
                    yield RadioButton(Text(k.title, "dim" if off else ""), value=k is self.initial, name=k.key,
                                      disabled=off)
            why = Static(why_text(self.unavailable), id="export-why")
            why.display = bool(self.unavailable)
            yield why
            yield Label("Write to:")
            yield Input(self._suggest(self.initial), id="export-path")
            with Horizontal(classes="buttons"):
                yield Button("Export", variant="primary", id="export-go")
                yield Button("Cancel", id="export-cancel")

    @property
    def kind(self) -> ExportKind:
        idx = self.query_one(RadioSet).pressed_index
        return KINDS[idx] if idx >= 0 else self.initial

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
        why = self.unavailable.get(self.kind.key)
        if why is not None:
            self.notify(f"{self.kind.title}: {why}.", severity="warning")
            return
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
