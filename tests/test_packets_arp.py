"""An ARP frame's Info says what it asks or answers, as tshark's does (``Who has 10.2.0.7? Tell
10.1.0.5``, ``10.2.0.7 is at 02:00:00:00:0c:07``, gratuitous, RFC 5227 probe and announcement),
after the protocol as every OTHER row's Info (``ARP Who has ...``): the list said only ``ARP``.
The row keeps ``ARP`` (the filter field and ``--json``'s info): the text is read again on display,
in ``packets`` text and in the TUI's packet list. tshark 4.0's Info column is the oracle
(tests/data/arp/make.py; ARP inside tunnels: test_tunnel_views)."""

from __future__ import annotations

import json
import subprocess

from conftest import DATA, needs_tshark
from conftest import field_cli as cli
from test_tui import loaded, sync

from ipsecscope.filtering import matches, source_of
from ipsecscope.model.filter import compile_filter
from ipsecscope.model.packets import arp_info
from ipsecscope.session import Session
from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.packet_table import PacketTable

ARP = DATA / "arp" / "arp.pcap"


def _tshark_info() -> dict[int, tuple[str, str]]:
    out = subprocess.run(["tshark", "-r", str(ARP), "-T", "fields", "-e", "frame.number", "-e", "_ws.col.Protocol",
                          "-e", "_ws.col.Info"], capture_output=True, text=True, timeout=60, check=True).stdout
    return {int(n): (p, i) for n, p, i in (ln.split("\t") for ln in out.splitlines())}


def _expected(proto: str, info: str) -> str:
    if proto != "ARP":  # an opcode tshark names otherwise (RARP): the row names the EtherType
        return "ARP"
    return info if info.startswith(("ARP ", "Gratuitous ARP")) else f"ARP {info}"


@needs_tshark
def test_packets_text_gives_arp_info_as_tshark() -> None:
    want = _tshark_info()
    assert len(want) == 10
    lines = {int(ln.split()[0]): ln for ln in cli("packets", str(ARP)).splitlines()}
    for n, (proto, info) in want.items():
        assert lines[n].endswith(" " + _expected(proto, info)), (lines[n], info)
    docs = [json.loads(ln) for ln in cli("packets", str(ARP), "--json").splitlines()]
    assert {d["info"] for d in docs} == {"ARP"}  # the row's value, as the filter field's


def test_the_filter_still_finds_arp_by_its_row_info() -> None:
    s = Session()
    s.load(ARP)
    assert matches(compile_filter('ipsecscope.info == "ARP"'), source_of(s)) == list(range(1, 11))


def test_arp_info_needs_an_ethernet_ipv4_arp_packet() -> None:
    request = bytes.fromhex("0001080006040001" "02000000 0c05 0a010005 000000000000 0a020007".replace(" ", ""))
    assert arp_info(request) == "Who has 10.2.0.7? Tell 10.1.0.5"
    assert arp_info(request[:27]) is None  # cut off
    assert arp_info(request[:4] + b"\x10\x04" + request[6:]) is None  # another hardware address length
    assert arp_info(request[:6] + b"\x00\x09" + request[8:]) is None  # an opcode with no such text


@sync
async def test_tui_packet_list_gives_arp_info_as_tshark() -> None:
    app = create_app(ARP)
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot)
        table = app.query_one(PacketTable)
        text = {r.frame: table._render_row(r, 118, False).text.rstrip() for r in table.rows}
    assert text[1].endswith("ARP Who has 10.2.0.7? Tell 10.1.0.5"), text[1]
    assert text[2].endswith("ARP 10.2.0.7 is at 02:00:00:00:0c:07"), text[2]
    assert text[4].endswith("ARP Announcement for 10.1.0.5"), text[4]
