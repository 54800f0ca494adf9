"""The packet list at 80x24 (an engineer over SSH) keeps addresses apart and Info readable: an
address longer than its column is cut in its middle (model.idtext.short_addr), never at its end
where hosts differ (two MACs read '02:00:00:00:0c…' both), and the address columns narrow before
Info drops under tui.widgets.packet_table.INFO_FLOOR cells (IPv6 left it 17: 'IKE_SA_INIT reques…')."""

from __future__ import annotations

from conftest import DATA
from public_data import need, public
from test_tui import loaded, sync

from ipsecscope.model.idtext import short_addr
from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.packet_table import INFO_FLOOR, PacketTable, columns_for


def _cells(table: PacketTable, width: int) -> dict[int, dict[str, str]]:
    cols = table.columns(width)
    out = {}
    for r in table.rows:
        line, x = table._render_row(r, width, False).text, 0
        cells = {}
        for c in cols:
            cells[c.key] = line[x:x + c.width].strip()
            x += c.width + 1
        out[r.frame] = cells
    return out


@sync
async def test_macs_at_80_columns_stay_apart() -> None:
    async with create_app(DATA / "arp" / "arp.pcap").run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        table = pilot.app.query_one(PacketTable)
        width = table.scrollable_content_region.width
        cells = _cells(table, width)
    assert cells[1]["src"] != cells[2]["src"]  # 02:00:00:00:0c:05 and :07
    for frame, mac in ((1, "02:00:00:00:0c:05"), (2, "02:00:00:00:0c:07")):
        assert cells[frame]["src"] == short_addr(mac, len(cells[frame]["src"]) or 1)
        assert cells[frame]["src"].endswith(mac[-5:]), cells[frame]
        assert not cells[frame]["src"].endswith("…")


@sync
async def test_ipv6_at_80_columns_leaves_info_room() -> None:
    cap = public("arkime/IKEv2.pcap")  # third-party (tests/public_data.py): materialised, not committed
    need(cap)
    async with create_app(cap).run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        table = pilot.app.query_one(PacketTable)
        width = table.scrollable_content_region.width
        cols = {c.key: c for c in table.columns(width)}
        cells = _cells(table, width)
    assert cols["info"].width >= INFO_FLOOR, cols
    assert cells[1]["src"].endswith("::2") and cells[1]["dst"].endswith("::4"), cells[1]
    assert cells[1]["src"].startswith("2003"), cells[1]
    assert cells[1]["info"].startswith("IKE_SA_INIT req #0 [SA"), cells[1]  # (tui.widgets.info_fit)


def test_wide_columns_hold_whole_ipv6_with_ports() -> None:
    cols = {c.key: c for c in columns_for(160, 999, 21)}
    assert cols["src"].width >= len("[2003:51:6012::2]:500")


@sync
async def test_plain_ip_rows_at_80_columns_say_the_hosts_once() -> None:
    """'ICMP 10.1.0.5 → 10.2… ' beside Source 10.1.0.5 and Destination 10.2.0.7: Info read the
    hosts twice and cut what the frame is; in the narrow list it says it once, wide as before."""
    async with create_app(DATA / "tunnels" / "plain-inside.pcap").run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        table = pilot.app.query_one(PacketTable)
        narrow = _cells(table, table.scrollable_content_region.width)
        wide = _cells(table, 158)
    assert (narrow[1]["src"], narrow[1]["dst"]) == ("10.1.0.5", "10.2.0.7")
    assert narrow[1]["info"].startswith("ICMP Echo request seq="), narrow[1]  # (info_fit: seq, not id)
    assert wide[1]["info"].startswith("ICMP 10.1.0.5 → 10.2.0.7 Echo "), wide[1]
    assert narrow[37]["info"].startswith("ICMPv6 Echo request"), narrow[37]
    assert narrow[55]["info"] == "ARP 10.2.0.7? tell 10.1.0.5", narrow[55]  # who asks too (info_fit)
