"""The packet list at 80x24 keeps the meaningful part of Info (tui.widgets.info_fit), counts
frames, not rows, in its filter status, and keeps its header over its columns; addresses cut in
narrow cells keep whole groups (model.idtext.short_addr). All on the bundled captures."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import DATA, ROOT, SAMPLES
from test_tui import loaded, screen_lines, sync
from test_tui_packet_columns import _cells

from ipsecscope.model.idtext import short_addr
from ipsecscope.model.packets import bundle_row
from ipsecscope.session import Session
from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.info_fit import fit_info
from ipsecscope.tui.widgets.packet_table import PacketHeader, PacketTable

HEALTHY = SAMPLES / "healthy-gcm"
AH = DATA / "ah"
SEPS = ":.-"


def _sessions() -> list[Session]:
    return [Session.from_files([HEALTHY / "capture.pcapng"], [HEALTHY / "keys"]),
            Session.from_files([AH / "ah-v6.pcap"], [AH / "ah-v6.keys.json"]),
            Session.from_files([AH / "ah-esp.pcap"], [AH / "ah-esp.keys.json"]),
            Session.from_files([DATA / "arp" / "arp.pcap"], []),
            Session.from_files([DATA / "tunnels" / "icmp-quoted-inside.pcap"], []),
            Session.from_files([DATA / "ikev1-frag" / "mm-cert-frag.pcap"], []),
            Session.from_files([SAMPLES / "ike-frag-untrusted" / "capture.pcapng"],
                               [SAMPLES / "ike-frag-untrusted" / "keys"])]


@pytest.fixture(scope="module")
def sessions() -> list[Session]:
    return _sessions()


def _whole_groups(addr: str, cut: str) -> bool:
    """``cut`` is ``addr`` whole, or a start and an end of it that each end at a group boundary."""
    if "…" not in cut:
        return cut == addr
    head, tail = cut.split("…")
    head_ok = not head or (addr.startswith(head) and (len(head) == len(addr) or addr[len(head)] in SEPS))
    tail_ok = not tail or (addr.endswith(tail) and (tail[0] in SEPS or addr[-len(tail) - 1] in SEPS))
    return head_ok and tail_ok


def test_short_addr_in_narrow_cells_never_splits_a_group(sessions) -> None:
    """4-8 cells: '2001:db8:a::1' read '200…1' and '02:00:00:00:0c:05' read '0…05' (a group cut
    reads as another network or NIC); every address of the captures, cut, keeps whole groups."""
    addrs = {a for s in sessions for r in s.rows for a in (r.src, r.dst) if a}
    addrs |= {"02:00:00:00:0c:05", "ff:ff:ff:ff:ff:ff"}  # the ARP frames' MACs (no IP addresses)
    assert any(":" in a for a in addrs) and any("." in a for a in addrs)
    bad = [(a, w, short_addr(a, w)) for a in sorted(addrs) for w in range(5, 12)
           if len(short_addr(a, w)) > w or not _whole_groups(a, short_addr(a, w))]
    assert not bad, bad[:10]


def _infos(sessions) -> list[tuple[str, str]]:
    out = []
    for s in sessions:
        for i in range(len(s.rows)):
            r = s.rows[i]
            info = s.other_columns(r.frame, r.info)[2] if r.kind == "OTHER" and not r.src else r.info
            out.append((info, r.status))
    return out


_ADDR = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b[0-9a-f]{1,4}(?::[0-9a-f]{0,4}){2,7}\b")


def test_fit_info_keeps_addresses_whole_or_cut_at_groups(sessions) -> None:
    """Every Info of the captures at 20-60 cells: within the width, and each address it shows is
    one of the frame's, whole or cut at group boundaries -- never a stump like '10.2.…'."""
    bad = []
    for info, status in _infos(sessions):
        full = set(_ADDR.findall(info))
        for w in range(20, 61, 4):
            text = fit_info(info, w, status == "decrypted")
            if len(text) > w:
                bad.append((info, w, text))
            for word in re.split(r"[ →]", text):
                core = word.strip("[](),:;?")
                if "…" in core and re.search(r"\d[.:]|[.:]\d", core):
                    piece = core.removesuffix("…") if core.count("…") > 1 else core
                    if not any(_whole_groups(a, piece) for a in full):
                        bad.append((info, w, text, word))
                elif _ADDR.fullmatch(core) and core not in full:
                    bad.append((info, w, text, word))
    assert not bad, bad[:8]


def test_fit_info_keeps_what_tells_the_frame_apart(sessions) -> None:
    """At the widths of an 80-column list: ARP says who asks, ESP the inner hosts both, an IKE
    response its error notify (not the status notifies, the SK payload and '(decrypted)')."""
    infos = dict(_infos(sessions))
    ask = "ARP Who has 10.2.0.7? Tell 10.1.0.5"
    assert ask in infos
    assert fit_info(ask, 24) == "? 10.2.0.7 tell 10.1.0.5"
    assert fit_info(ask, 29) == "ARP 10.2.0.7? tell 10.1.0.5"
    # who asks is on the target's link: the groups they share are said once, as the tree does
    assert fit_info("ARP Who has 192.1.2.23? Tell 192.1.2.254", 27) == "ARP 192.1.2.23? tell .254"
    esp = next(i for i in infos if i.startswith("ESP seq 1 ▸ ICMP 10.1.0.1 → 10.2.0.1"))
    assert fit_info(esp, 29, True) == "ESP #1 ▸ 10.1.0.1→10.2.0.1"
    assert fit_info(esp, 33, True) == "ESP #1 ▸ ICMP 10.1.0.1→10.2.0.1 …"
    # room for both hosts as written: the words kept, the tail (tshark's detail) cut
    assert fit_info(esp, 42, True).startswith("ESP seq 1 ▸ ICMP 10.1.0.1 → 10.2.0.1 Echo")
    ah_esp = sessions[2].rows
    bundle = bundle_row(ah_esp[0], ah_esp[1]).info  # the frame's one line, as the list draws it
    assert bundle.startswith("AH 0xa4000005 seq 1, ESP seq 1 ▸ ICMP 10.1.0.1 → 10.2.0.1"), bundle
    assert fit_info(bundle, 33, True) == "AH+ESP #1 ▸ 10.1.0.1→10.2.0.1"
    failed = next(i for i in infos if "N(AUTHENTICATION_FAILED)" in i)
    assert fit_info(failed, 42, True).startswith("IKE_AUTH resp #1 [N(AUTHENTICATION_FAILED"), failed
    init = next(i for i in infos if i.startswith("IKE_SA_INIT request #0 [ SA KE NONCE N(NAT_DETECTION"))
    assert fit_info(init, 42) == "IKE_SA_INIT request #0 [SA KE NONCE N(…)]"


@sync
async def test_arp_at_80_columns_says_who_asks() -> None:
    """80x24, SA tree open: Info read 'ARP Who has 10.2.0.7…' (who asks cut off)."""
    async with create_app(DATA / "arp" / "arp.pcap").run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        table = pilot.app.query_one(PacketTable)
        cells = _cells(table, table.scrollable_content_region.width)
    assert cells[1]["info"] == "ARP 10.2.0.7? tell 10.1.0.5", cells[1]
    assert cells[2]["info"].startswith("ARP 10.2.0.7 at 02…") and cells[2]["info"].endswith("0c:07"), cells[2]
    assert cells[7]["info"] == "ARP 10.1.0.9? tell 0.0.0.0", cells[7]


@sync
async def test_esp_at_80_columns_shows_both_inner_hosts() -> None:
    """80x24: 'ESP seq 1 ▸ ICMP 10.1.0.1 → …' lost the inner destination."""
    app = create_app(HEALTHY / "capture.pcapng", [HEALTHY / "keys"])
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        table = app.query_one(PacketTable)
        cells = _cells(table, table.scrollable_content_region.width)
    assert "10.1.0.1→10.2.0.1" in cells[5]["info"], cells[5]
    assert "10.2.0.1→10.1.0.1" in cells[6]["info"], cells[6]


@sync
async def test_header_titles_sit_over_their_columns_when_the_list_does_not_scroll() -> None:
    """80x24, tree hidden, 3 frames (no scrollbar): the rows were laid out a cell wider than the
    header, so they had a Proto column the header had no title for ('Source' over 'AH+ESP')."""
    app = create_app(AH / "ah-esp.pcap", [AH / "ah-esp.keys.json"])
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("2", "t")
        await loaded(pilot)
        table = app.query_one(PacketTable)
        header = app.query_one(PacketHeader)
        lines = screen_lines(app)
        head_y, row_y = header.region.y, table.region.y
        head, row = lines[head_y], lines[row_y]
        assert table.scrollable_content_region.width == header.size.width - 1  # the gutter, always
    for title, cell in (("Source", "198.18.0.1"), ("Dest", "198.18.0.2"), ("Info", "AH")):
        x = head.index(title)
        assert row[x:].startswith(cell), (title, head, row)
    assert ("Proto" in head) == ("AH+ESP " in row[:row.index("198.18")]), (head, row)


def _packets_lines(cap, keys, flt: str) -> int:
    args = [sys.executable, "-m", "ipsecscope", "packets", str(cap), "-Y", flt]
    for k in keys:
        args += ["-k", str(k)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return len(out.splitlines())


@pytest.mark.parametrize(("cap", "keys", "flt"), [
    (AH / "ah-esp.pcap", [AH / "ah-esp.keys.json"], "ah"),
    (AH / "ah-esp.pcap", [AH / "ah-esp.keys.json"], "icmp"),
    (DATA / "malformed-ip" / "malformed-ip.pcap", [], "ip"),
])
@sync
async def test_filter_count_is_frames_like_packets(cap, keys, flt) -> None:
    """'filter: 3/6' for the 3 AH+ESP frames of ah-esp.pcap (6 rows: AH and ESP each) where
    `packets -Y ah` prints 3 lines; a frame with a MALFORMED mark was counted twice too."""
    want, total = _packets_lines(cap, keys, flt), _packets_lines(cap, keys, "frame")
    app = create_app(cap, keys)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        table = app.query_one(PacketTable)
        assert len(table.rows) > total  # a frame with two rows is there to count
        app.apply_filter(flt)
        await loaded(pilot)
        count = str(app.query_one("#filter-count").render())
    assert f"filter: {want}/{total}" in count, (count, want, total)


@pytest.mark.parametrize(("size", "cap", "keys"), [
    ((120, 40), DATA / "ah-tunnels" / "ah-v6-vxlan.pcap", []),
    ((80, 24), AH / "ah-v6.pcap", [AH / "ah-v6.keys.json"]),
])
@sync
async def test_sa_detail_traffic_keeps_whole_addresses_over_zero_counters(size, cap, keys) -> None:
    """SA detail of an IPv6 peer pair: the From → To cells were cut ('2001…a::1 → …:b::2') to
    make room for Bytes beside ICV✗/NoKey/Lost/Replay columns of zeros; the short pair is for a
    counter that says something."""
    app = create_app(cap, keys)
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        await pilot.press("4")
        await loaded(pilot)
        shown = "\n".join(screen_lines(app))
    assert "0xa6000001  2001:db8:a::1 → 2001:db8:b::2" in shown, shown
    assert "…" not in shown[shown.index("Traffic (per direction)"):], shown


@sync
async def test_arp_detail_says_what_the_list_says() -> None:
    """The detail pane of an ARP frame read only 'ARP' (the row's stored Info) under a list line
    saying who asks for whom: it heads with the whole Info, as `packets` prints it."""
    from test_tui import tree_labels
    from textual.widgets import Tree

    async with create_app(DATA / "arp" / "arp.pcap").run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("2")
        await loaded(pilot)
        labels = tree_labels(pilot.app.query_one("#detail-tree", Tree))
    assert labels[:2] == ["Frame 1: 42 bytes, OTHER", "ARP Who has 10.2.0.7? Tell 10.1.0.5"], labels[:3]


@sync
async def test_pings_at_80_columns_keep_their_sequence_numbers() -> None:
    """plain-inside.pcap at 80x24: lines read 'ICMP Echo (ping) request …', the sequence number
    (what tells one ping of a run from the next) cut off; it is kept over id and ttl."""
    async with create_app(DATA / "tunnels" / "plain-inside.pcap").run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        table = pilot.app.query_one(PacketTable)
        cells = _cells(table, table.scrollable_content_region.width)
        rows = {r.frame: r for r in table.rows}
        full = {f: pilot.app.session.other_columns(f, rows[f].info)[2] for f in range(1, 11)}
    pings = {f: re.search(r"Echo \(ping\) (request|reply) id=\S+ seq=(\d+)/", t) for f, t in full.items()}
    assert sum(1 for m in pings.values() if m) >= 5, full
    for f, m in pings.items():
        if m:
            assert cells[f]["info"] == f"ICMP Echo {m[1]} seq={m[2]}", (cells[f], full[f])


@sync
async def test_enc_rows_at_80_columns_say_the_inner_packet_not_the_sa_flags() -> None:
    """enc-rekey.pcap (OpenBSD enc(4)) at 80x24: every Info read "ENC SPI 0xd9843074 (auth…", the
    SA's protection flags (the tree and detail say them) and the hosts the Source/Destination cells
    show already took the cell, and what the packet was never showed. The SPI and the inner
    protocol are kept; the whole text stays in the detail pane."""
    async with create_app(DATA / "linktypes" / "enc-rekey.pcap").run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        table = pilot.app.query_one(PacketTable)
        cells = _cells(table, table.scrollable_content_region.width)
        rows = {r.frame: r for r in table.rows}
        full = {f: pilot.app.session.other_columns(f, rows[f].info) for f in cells}
    assert len(cells) >= 10
    for f, (src, dst, info) in full.items():
        spi = re.match(r"ENC SPI (0x[0-9a-f]{8}) \(", info)
        assert spi, info
        shown = cells[f]["info"]
        assert shown.startswith(f"ENC {spi[1]} ▸ ICMP"), (shown, info)
        assert "auth" not in shown and src not in shown, shown
        assert (cells[f]["src"].strip(), cells[f]["dst"].strip()) == (src, dst)


@sync
async def test_sa_detail_says_an_ike_sa_whose_peer_is_dead() -> None:
    """dead-peer sample: the tree says 'dead' (IkeSa.state_word) but SA detail read
    'established' alone for the same IKE SA; it says the state as the evidence does
    (IkeSa.state_text: 'established, peer … dead since …')."""
    from test_tui import tree_cursor_to

    app = create_app(SAMPLES / "dead-peer" / "capture.pcapng")
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await tree_cursor_to(pilot, "ike")
        await pilot.press("enter")
        await loaded(pilot)
        sa = next(s for s in app.session.table.ike_sas.values() if s.peer_gone is not None)
        shown = "\n".join(screen_lines(app))
    assert sa.peer_gone.how == "dead"
    line = next(ln for ln in shown.splitlines() if "State" in ln and "established" in ln)
    assert f"peer {sa.peer_gone.peer} dead" in line, line


@sync
async def test_sa_detail_counts_packets_that_arrived_as_a_first_fragment_only() -> None:
    """esp-frag-loss: `sas` says 3 packets arrived as a first IP fragment only
    (ESP-FRAGMENT-LOST); SA detail's traffic table had no column for it."""
    cap = DATA / "esp-frag-loss" / "capture.pcap"
    app = create_app(cap)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("4")
        await loaded(pilot)
        flows = [f for f in app.session.table.flows.values() if f.frag_lost]
        shown = "\n".join(screen_lines(app))
    assert flows
    head = next(ln for ln in shown.splitlines() if "From → To" in ln)
    assert "FragLost" in head, head
    for f in flows:
        row = next(ln for ln in shown.splitlines() if f"0x{f.spi:08x}" in ln)
        end = head.index("FragLost") + len("FragLost")  # a right-justified column
        assert row[:end].split()[-1] == str(f.frag_lost), (head, row)
