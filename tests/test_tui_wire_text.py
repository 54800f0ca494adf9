"""Text from the capture is data on every TUI screen: never read as markup, never an emoji.

samples/synthetic/hostile-text holds IKEv1 Aggressive Mode IDs made of rich markup tags ("[/x]"
closes a tag never opened: read as markup it raises) and emoji codes, IPv6 peers whose address
holds ":100:" (read with emoji codes it shows 💯), and a DNS query inside ESP for a name made of
markup. Each view must show those strings exactly as tshark prints them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES, needs_tshark
from test_tui import loaded, screen_lines, sync, tree_labels
from textual.widgets import Input, Tree

from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.packet_table import PacketTable
from ipsecscope.tui.widgets.sa_detail import SaDetail
from ipsecscope.tui.widgets.sa_tree import SaTree

sys.path.insert(0, str(SAMPLES / "synthetic"))
from make_synthetic import HOSTILE_DNS, HOSTILE_ID_I, HOSTILE_ID_R  # noqa: E402

CAPTURE = SAMPLES / "synthetic" / "hostile-text.pcap"
KEYS = SAMPLES / "synthetic" / "hostile-text.keys.json"
DNS_NAME = ".".join(x.decode() for x in HOSTILE_DNS)
PEER = "fd00:db8::100:1"
EMOJI = ("💯", "🔥")


def _tshark_ids(capture: Path) -> set[str]:
    out = subprocess.run(["tshark", "-r", str(capture), "-T", "fields", "-e", "isakmp.id.data.fqdn", "-e", "isakmp.id.data.user_fqdn"],
                         check=True, capture_output=True, text=True).stdout
    return {v for line in out.splitlines() for v in line.split("\t") if v}


def _alive(app) -> None:
    # A render error ends the app, and the pilot's next call then waits for ever: check first.
    assert app._exception is None, f"the TUI crashed: {app._exception!r}"


def _no_emoji(lines: list[str], where: str) -> None:
    for line in lines:
        assert not any(e in line for e in EMOJI), f"{where}: an emoji code was rendered: {line!r}"


@needs_tshark
def test_the_sample_holds_what_tshark_reads() -> None:
    """The strings the TUI must show are the ones tshark decodes from the capture."""
    assert _tshark_ids(CAPTURE) == {HOSTILE_ID_I, HOSTILE_ID_R}
    out = subprocess.run(["tshark", "-r", str(CAPTURE), "-T", "fields", "-e", "ipv6.src"],
                         check=True, capture_output=True, text=True).stdout
    assert PEER in out.split()


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
@sync
async def test_wire_text_is_shown_literally_in_every_view(size: tuple[int, int]) -> None:
    app = create_app(CAPTURE, [KEYS])
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        _alive(app)
        assert app.session is not None
        # SA tree and SA detail: every node, the IDs whole in the IKE SA's detail
        await pilot.press("1")
        tree = app.query_one(SaTree)
        tree.focus()
        details = []
        for _ in range(len(tree_labels(tree)) + 1):
            await pilot.press("enter")
            await pilot.pause()
            _alive(app)
            detail = app.query_one(SaDetail)
            details.append(detail.as_text(width=200))
            _no_emoji(screen_lines(app), "SA tab")
            await pilot.press("down")
        joined = "\n".join(details)
        assert f"id {HOSTILE_ID_I}" in joined and f"id {HOSTILE_ID_R}" in joined
        assert f"[{PEER}]:500" in joined  # RFC 3986 §3.2.2: bracketed beside its port
        assert "Aggressive Mode" in joined  # IKEv1 exchanges by name, as findings and `sas` print them
        _no_emoji(joined.splitlines(), "SA detail")
        # Packets: every row's detail tree (the IKE payload tree holds the IDs)
        await pilot.press("2")
        table = app.query_one(PacketTable)
        table.focus()
        labels: list[str] = []
        for _ in range(len(table.view)):
            await pilot.pause()
            _alive(app)
            labels += tree_labels(app.query_one("#detail-tree", Tree))
            _no_emoji(screen_lines(app), "Packets tab")
            await pilot.press("down")
        assert any(HOSTILE_ID_I in label for label in labels), labels
        assert any(HOSTILE_ID_R in label for label in labels)
        _no_emoji(labels, "packet detail")
        # Findings, Timeline and Stats; Stats writes an IPv6 endpoint as [fd00:100::1]:5300, which
        # read as markup is a style tag and vanishes
        shown: dict[str, list[str]] = {}
        for tab in ("3", "4", "5"):
            await pilot.press(tab)
            await pilot.pause()
            _alive(app)
            shown[tab] = screen_lines(app)
            _no_emoji(shown[tab], f"tab {tab}")
        if size[0] >= 160:
            assert any("[fd00:100::1]:530" in line for line in shown["5"]), shown["5"]
        # a filter on the markup-looking DNS name selects its 3 frames; one that matches nothing
        # says so in a toast that quotes it
        await pilot.press("2", "slash")
        flt = app.query_one("#filter", Input)
        for text, frames in ((f'dns.qry.name == "{DNS_NAME}"', [3, 6, 9]), ('dns.qry.name == "[/none]"', [])):
            flt.value = text
            await pilot.press("enter")
            await loaded(pilot)
            _alive(app)
            assert [table.rows[i].frame for i in table.view] == frames
            await pilot.press("slash")
        _no_emoji(screen_lines(app), "filtered")
