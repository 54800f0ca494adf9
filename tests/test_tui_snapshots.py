"""Snapshot tests (pytest-textual-snapshot) of the TUI on the bundled strongSwan samples.

At 80×24 (an SSH session) and 160×48 (a large screen). Review a changed snapshot by eye before
accepting it with ``pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import pytest
from conftest import DATA, SAMPLES

from ipsecscope.tui.app import create_app

HEALTHY = SAMPLES / "healthy-gcm"
HEALTHY_KEYS = [HEALTHY / "keys" / "esp_sa", HEALTHY / "keys" / "ikev2_decryption_table"]
SMALL, LARGE = (80, 24), (160, 48)


def steps(*keys: str):
    """A run_before that waits for the capture to load, presses ``keys``, and waits for workers."""

    async def run(pilot) -> None:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
        await underlines_settled(pilot)

    return run


async def underlines_settled(pilot) -> None:
    """Wait until each tab underline spans its active tab. A relabel ("Findings" -> "Findings (3)")
    moves it two refreshes later (Tabs handles Relabelled after a refresh, then moves the bar
    after another), so under load a snapshot could catch it still the old label's width."""
    from textual.widgets import Tabs
    from textual.widgets._tabs import Underline

    for _ in range(200):
        off = []
        for tabs in pilot.app.screen.query(Tabs):
            tab = tabs.active_tab
            if tab is not None:
                span = tab.virtual_region.shrink(tab.styles.gutter).column_span
                bar = tabs.query_one(Underline)
                off += [span] if (bar.highlight_start, bar.highlight_end) != span else []
        if not off:
            return
        await pilot.pause(0.02)
    raise AssertionError(f"tab underline never reached its tab {off}")


def still(app):
    """No animations: the tab underline slides when the app opens on Findings, and a snapshot taken
    mid-slide differs from the reference only in where the underline had got to (a flake under load)."""
    app.animation_level = "none"
    return app


def healthy():
    return still(create_app(HEALTHY / "capture.pcapng", HEALTHY_KEYS))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_packets_healthy(snap_compare, size) -> None:
    # Cursor on the first ESP frame: the detail pane shows the decrypted ESP fields.
    assert snap_compare(healthy(), terminal_size=size, run_before=steps("down", "down", "down", "down"))


def test_tree_at_120_columns_without_keys(snap_compare) -> None:
    """120×40, no keys: the CHILD SAs are 'inferred' and the tree widens for their SPIs and state
    word (up to 40%); the IKE SA's proposal is cut with '…'."""
    app = still(create_app(HEALTHY / "capture.pcapng", []))
    assert snap_compare(app, terminal_size=(120, 40), run_before=steps())


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_timeline_healthy_rekeys(snap_compare, size) -> None:
    assert snap_compare(healthy(), terminal_size=size, run_before=steps("1"))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_findings_dead_peer(snap_compare, size) -> None:
    app = still(create_app(SAMPLES / "dead-peer" / "capture.pcapng"))
    assert snap_compare(app, terminal_size=size, run_before=steps("3"))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_sa_detail_rekeyed_child(snap_compare, size) -> None:
    # Tree: the first CHILD SA (rekeyed into #2) -> Enter opens SA detail.
    async def run(pilot) -> None:
        await steps()(pilot)
        tree = pilot.app.query_one("#sa-tree")
        tree.focus()
        while tree.current_ref is None or tree.current_ref.kind != "child":
            await pilot.press("down")
        await pilot.press("enter")
        await pilot.pause()
        await underlines_settled(pilot)

    assert snap_compare(healthy(), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_filter_esp_one_spi(snap_compare, size) -> None:
    assert snap_compare(healthy(), terminal_size=size,
                        run_before=steps("slash", *"esp src=198.18.0.2", "enter"))


def test_help_screen(snap_compare) -> None:
    assert snap_compare(healthy(), terminal_size=SMALL, run_before=steps("question_mark"))


def test_narrow_hex_view(snap_compare) -> None:
    # 80 columns: the detail pane shows the decoded tree or (h) the hex view.
    assert snap_compare(healthy(), terminal_size=SMALL, run_before=steps("down", "down", "down", "down", "h"))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_stats_healthy(snap_compare, size) -> None:
    # IO graph of the four SAs (the rekey hands the traffic from #1 to #2), CHILD SAs, conversation.
    assert snap_compare(healthy(), terminal_size=size, run_before=steps("5"))


def test_stats_follow_conversation(snap_compare) -> None:
    # f on the conversation: the Packets tab filtered to it, the filter bar saying how.
    assert snap_compare(healthy(), terminal_size=SMALL, run_before=steps("5", "f"))


def test_quoted_ah_fragmentation_needed(snap_compare) -> None:
    # 80×24, frame 4 of tests/data/ah/ah-quoted.pcap: a router's "fragmentation needed" quoting the
    # first 548 of 1588 bytes of an AH packet; the detail pane leads with the ICV verdict (cut off).
    ah = DATA / "ah"
    app = still(create_app(ah / "ah-quoted.pcap", [ah / "ah-v4.keys.json", ah / "ah-v6.keys.json"]))
    assert snap_compare(app, terminal_size=SMALL, run_before=steps("2", "down", "down", "down"))


def test_arp_packets_at_80_columns(snap_compare) -> None:
    # 80x24, SA tree open: the ARP Info keeps who asks ('ARP 10.2.0.7? tell 10.1.0.5',
    # tui.widgets.info_fit), the MAC columns cut at their groups.
    app = still(create_app(DATA / "arp" / "arp.pcap"))
    assert snap_compare(app, terminal_size=SMALL, run_before=steps("2"))


def test_ah_esp_filtered_at_80_columns(snap_compare) -> None:
    # 80x24, tree hidden, 3 AH+ESP frames (no scrollbar): the header over its columns, Info
    # 'AH+ESP #1 ▸ …', and the filter status counting frames ('filter: 3/3', not 3/6).
    ah = DATA / "ah"
    app = still(create_app(ah / "ah-esp.pcap", [ah / "ah-esp.keys.json"]))
    assert snap_compare(app, terminal_size=SMALL, run_before=steps("2", "t", "slash", "a", "h", "enter"))
