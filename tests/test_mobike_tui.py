"""The TUI's peer pair after a MOBIKE move (RFC 4555 §3.5), on tests/data/mobike/capture.pcap.

The tree files the IKE SA under the pair of its IKE_SA_INIT, 198.18.0.1 ⇄ 198.18.0.2. The client
then moved to 198.18.0.3 (UPDATE_SA_ADDRESSES, frame 103) and kernel-libipsec rekeyed CHILD_SA #1
into #2, whose ESP runs 198.18.0.3 ⇄ .2 (tshark: SPIs 0xad8539b4 / 0xc2eb6ec6, 108 frames each).
Before: the pair's Traffic table kept only flows between .1 and .2, so #2's traffic was in no
pair's table, and "s" on the pair showed none of the frames after the move.
"""

from __future__ import annotations

import subprocess

import pytest
from conftest import DATA, needs_tshark
from test_tui import loaded, sync, tree_cursor_to
from test_tui_snapshots import steps, still

from ipsecscope.session import Session
from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.packet_table import PacketTable
from ipsecscope.tui.widgets.sa_detail import SaDetail
from ipsecscope.tui.widgets.sa_tree import pair_flows, pair_history

HERE = DATA / "mobike"
CAP = HERE / "capture.pcap"
KEYS = HERE / "charon-right.log"
OLD, NEW, GW = "198.18.0.1", "198.18.0.3", "198.18.0.2"


def _tshark_esp() -> dict[tuple[str, str, int], int]:
    """ESP frames per (source, destination, SPI), as tshark counts them."""
    out = subprocess.run(["tshark", "-n", "-r", str(CAP), "-Y", "esp", "-T", "fields", "-e", "ip.src", "-e", "ip.dst",
                          "-e", "esp.spi"], capture_output=True, text=True, timeout=60, check=True).stdout
    counts: dict[tuple[str, str, int], int] = {}
    for ln in out.splitlines():
        src, dst, spi = ln.split("\t")
        key = (src, dst, int(spi, 16))
        counts[key] = counts.get(key, 0) + 1
    return counts


@needs_tshark
def test_pair_flows_are_every_flow_tshark_sees_at_both_address_pairs() -> None:
    s = Session()
    s.add_key_files([KEYS])
    s.load(CAP)
    flows = {(f.src, f.dst, f.spi): f.packets for f in pair_flows(s.table, OLD, GW)}
    assert flows == _tshark_esp()
    assert {(src, dst) for src, dst, _ in flows} == {(OLD, GW), (GW, OLD), (NEW, GW), (GW, NEW)}
    assert pair_history(s.table, OLD, GW) == [(OLD, GW), (NEW, GW)]


@sync
async def test_pair_detail_lists_the_moved_flows_and_says_the_pair_moved() -> None:
    app = create_app(CAP, [KEYS])
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot)
        tree = await tree_cursor_to(pilot, "pair")
        assert str(tree.cursor_node.label).endswith(" moved")
        await pilot.press("enter")
        await pilot.pause()
        text = " ".join(app.query_one(SaDetail).as_text().split())
        assert f"Moved initiator {OLD} → {NEW} at" in text
        assert "by MOBIKE UPDATE_SA_ADDRESSES (frame 103)" in text
        for spi in ("0xb1037ad7", "0x6af8ee21", "0xad8539b4", "0xc2eb6ec6"):
            assert spi in text
        assert f"0xad8539b4 {NEW} → {GW} 108" in text and f"0xc2eb6ec6 {GW} → {NEW} 108" in text


@sync
async def test_sa_packets_of_the_pair_include_frames_after_the_move() -> None:
    app = create_app(CAP, [KEYS])
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await tree_cursor_to(pilot, "pair")
        await pilot.press("s")
        await loaded(pilot)
        # in tshark's syntax (navigation.sa_packets_filter), so it can be taken on to Wireshark
        assert app.filter.text == f"(ip.addr == {OLD} && ip.addr == {GW}) || (ip.addr == {NEW} && ip.addr == {GW})"
        # every frame of the capture is this tunnel's (tshark: 326 frames, all between .1/.3 and .2);
        # the old filter, .1 and .2 alone, left out the 218 from frame 101 on
        assert app.query_one(PacketTable).frame_count() == 326


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_snapshot_moved_pair_detail(snap_compare, size) -> None:
    async def run(pilot) -> None:
        await steps()(pilot)
        await tree_cursor_to(pilot, "pair")
        await pilot.press("enter")
        await steps()(pilot)

    assert snap_compare(still(create_app(CAP, [KEYS])), terminal_size=size, run_before=run)
