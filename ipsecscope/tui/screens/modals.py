"""Modal screens: help, add key files, export."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Input, Label, Static

FILTER_HELP = [  # Wireshark display filters (model/filter.py); README "Packets and display filters"
    ("esp.spi == 0xc254fe64", "fields as in Wireshark, any layer: outer or decrypted inner"),
    ("ip.addr == 10.2.0.0/24", "addresses with CIDR; ip.src ip.dst ipv6.addr ..."),
    ("icmp.type == 8  udp.port in {53, 500}", "inner and outer ports, ICMP, TCP flags, DNS"),
    ("isakmp.exchangetype == 36", "IKE: ispi rspi messageid nextpayload notify.msgtype"),
    ("&& || ! ( )  and or not", "combine; != contains matches < > <= >="),
    ("ipsecscope.finding == \"ESP-SEQ-GAP\"", "status, child, ike_sa, seq, info, decrypted"),
    ("esp spi=0x… src=… frame=1-9 icv=bad", "short forms (side by side = AND; a,b = either)"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, bindings: list[tuple[str, str]]) -> None:
        super().__init__()
        self.key_rows = bindings

    def compose(self) -> ComposeResult:
        keys = Table(title="Keys", title_justify="left", title_style="bold", box=None, padding=(0, 2))
        keys.add_column("Key", style="bold cyan", no_wrap=True)
        keys.add_column("Action")
        for k, desc in self.key_rows:
            keys.add_row(k, desc)
        for k, desc in (("↑↓ PgUp PgDn", "move in lists and the packet table (also j k g G)"),
                        ("Enter", "open: SA detail / evidence frames / frame detail"),
                        ("ctrl+p", "command palette: every action by name")):
            keys.add_row(k, desc)
        fl = Table(title="Packet filter (/)", title_justify="left", title_style="bold", box=None, padding=(0, 2))
        fl.add_column("Term", style="bold green", no_wrap=True)
        fl.add_column("Matches")
        for term, desc in FILTER_HELP:
            fl.add_row(term, desc)
        with Vertical(id="help-box"):
            yield Label(Text("ipsecscope — help", "bold"))
            with VerticalScroll():
                yield Static(keys)
                yield Static(Text(""))
                yield Static(fl)
                yield Static(Text("\nExample: esp spi=0xc254fe64 !icv=ok", "dim"))
            yield Label(Text("Esc / ? closes", "dim"))

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)


class KeyFileScreen(ModalScreen[list[str] | None]):
    """Pick key files: type paths (space separated) or choose one in the directory tree."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, start_dir: Path) -> None:
        super().__init__()
        self.start_dir = start_dir

    def compose(self) -> ComposeResult:
        with Vertical(id="keys-box"):
            yield Label(Text("Add key files (esp_sa, ikev2_decryption_table, swanctl/charon log, ip xfrm, JSON)",
                             "bold"))
            yield Input(placeholder="path to a key file (several: separate with spaces)", id="keys-path")
            yield DirectoryTree(self.start_dir, id="keys-dir")
            with Horizontal(classes="buttons"):
                yield Button("Load keys", variant="primary", id="keys-load")
                yield Button("Cancel", id="keys-cancel")

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        inp = self.query_one("#keys-path", Input)
        inp.value = str(event.path)
        inp.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._done()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "keys-load":
            self._done()
        else:
            self.dismiss(None)

    def on_directory_tree_directory_selected(self, event: DirectoryTree.DirectorySelected) -> None:
        # A key directory (e.g. samples/<scenario>/keys) can be loaded whole: Load takes it.
        event.stop()
        self.query_one("#keys-path", Input).value = str(event.path)

    def _done(self) -> None:
        paths = [str(Path(p).expanduser()) for p in self.query_one("#keys-path", Input).value.split()]
        if not paths:
            self.notify("Type or choose a key file first.", severity="warning")
            return
        missing = [p for p in paths if not Path(p).expanduser().exists()]
        if missing:
            self.notify(f"No such file or directory: {missing[0]}", severity="error")
            return
        self.dismiss(paths)

    def action_cancel(self) -> None:
        self.dismiss(None)
