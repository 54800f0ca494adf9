"""A quoted AH packet in the views: ``packets --json``'s ``quoted_ah``, the lines ``packets -V``
prints under the ICMP error, and the TUI's packet detail (tests/data/ah/ah-quoted.pcap, make.py's
quoted_packets: whole quotes verified over the quoted header, frame 6 corrupted, frames 4/7/11 cut
off by a router's "fragmentation needed" / time exceeded / Packet Too Big). tshark dissects the
quoted IP header and AH fields too: every field is compared with its ``-T fields`` output; the ICV
verdict, which tshark never gives, is the load's (tests/test_quoted_ah.py checks it against scapy).
"""

from __future__ import annotations

import json

import pytest
from conftest import needs_tshark
from test_quoted_ah import CAP, CUT, ERRORS, KEYS, WHOLE
from test_tui import loaded, screen_lines, sync, tree_labels, tshark_fields
from textual.widgets import Tree

from ipsecscope.cli import main
from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.packet_table import PacketTable

KEY_ARGS = ["-k", *map(str, KEYS)]


def _json(capsys) -> dict[int, dict]:
    assert main(["packets", str(CAP), *KEY_ARGS, "--json"]) == 0
    return {d["frame"]: d for d in map(json.loads, capsys.readouterr().out.splitlines())}


def _second(value: str) -> str:
    """An ICMP error carries two IP headers: its own, then the quoted one (tshark lists both)."""
    parts = value.split(",")
    return parts[1] if len(parts) > 1 else ""


@needs_tshark
def test_packets_json_quoted_ah_fields_are_tsharks(capsys):
    docs = _json(capsys)
    fields = ("frame.number", "ah.spi", "ah.sequence", "ah.next_header", "ah.length", "ip.src", "ip.dst", "ip.ttl",
              "ip.len", "ip.flags.df", "ip.opt.type", "ipv6.src", "ipv6.dst", "ipv6.hlim", "ipv6.plen",
              "ipv6.hopopts.nxt", "ipv6.dstopts.nxt", "icmp.mtu", "icmpv6.mtu")
    errors = " || ".join(f"frame.number == {f}" for f in ERRORS)
    theirs = {int(r[0]): dict(zip(fields, r, strict=True)) for r in tshark_fields(CAP, errors, *fields)}
    assert sorted(theirs) == list(ERRORS)
    for f in ERRORS:
        q, t = docs[f]["inner"]["quoted_ah"], theirs[f]
        assert q is not None, f
        assert q["spi"] == t["ah.spi"] and q["seq"] == (int(t["ah.sequence"]) if t["ah.sequence"] else None), f
        assert q["next_header"] == int(t["ah.next_header"]), f
        assert q["ah_length"] == (int(t["ah.length"]) + 2) * 4, f  # tshark: "Length: 4 (24 bytes)"
        ip = q["ip"]
        if ip["version"] == 4:
            assert (ip["src"], ip["dst"], ip["ttl"], ip["length"]) == (
                _second(t["ip.src"]), _second(t["ip.dst"]), int(_second(t["ip.ttl"])), int(_second(t["ip.len"]))), f
            assert ip["df"] == (_second(t["ip.flags.df"]) in ("1", "True")), f
            assert ip["options"] == [int(x) for x in t["ip.opt.type"].split(",") if x and int(x) != 0], f
        else:
            assert (ip["src"], ip["dst"], ip["ttl"], ip["length"], ip["df"]) == (
                _second(t["ipv6.src"]), _second(t["ipv6.dst"]), int(_second(t["ipv6.hlim"])),
                40 + int(_second(t["ipv6.plen"])), None), f
            want = [n for n, key in ((0, "ipv6.hopopts.nxt"), (60, "ipv6.dstopts.nxt")) if t[key]]
            assert ip["options"] == want, f
        assert q["mtu"] == (int(t["icmp.mtu"] or t["icmpv6.mtu"]) if f in (4, 11) else None), f
        assert q["whole"] == (f in WHOLE) and q["quoted"] == (ip["length"] if f in WHOLE else q["quoted"]), f
    # frame 5's quoted header carries Router Alert and a Record Route filled in after signing
    assert docs[5]["inner"]["quoted_ah"]["ip"]["options"] == [148, 7]
    assert docs[9]["inner"]["quoted_ah"]["ip"]["options"] == [0, 60]  # Hop-by-Hop, Destination Options


def test_packets_json_quoted_ah_verdict_and_payload(capsys):
    docs = _json(capsys)
    q = {f: docs[f]["inner"]["quoted_ah"] for f in ERRORS}
    assert [f for f in ERRORS if q[f]["verified"]] == [2, 5, 9, 12]
    assert (q[6]["status"], q[6]["inner"]) == ("icv-bad", None)
    for f in CUT:  # the router quoted only the start: nothing checked, nothing shown as verified
        assert (q[f]["status"], q[f]["verified"], q[f]["whole"], q[f]["inner"]) == ("not-verified", False, False, None)
        assert "quote ends" in q[f]["reason"] and q[f]["quoted"] < q[f]["ip"]["length"]
    assert (q[4]["quoted"], q[4]["ip"]["length"], q[4]["ip"]["df"]) == (548, 1588, True)  # RFC 1812: 576 in all
    assert (q[11]["quoted"], q[11]["ip"]["length"]) == (1232, 1632)  # RFC 4443 §2.4(c): 1280 in all
    assert q[7]["seq"] is None  # RFC 792's minimum: the SPI and no more
    assert q[2]["inner"]["info"] == "ICMP Echo (ping) request id=0x000c, seq=1/256"
    assert q[12]["inner"]["src"] == "fd00:2::1"  # tunnel mode: the inner packet AH protects
    # the AH frames themselves carry no quote, and an ESP quote's field is still there
    assert docs[1]["inner"] is None and docs[2]["inner"]["quoted_esp"] is None
    # without keys: whole quotes say so, their payload is not given as verified
    assert main(["packets", str(CAP), "--json", "-Y", "frame.number == 2"]) == 0
    nokey = json.loads(capsys.readouterr().out)["inner"]["quoted_ah"]
    assert (nokey["status"], nokey["verified"], nokey["inner"], nokey["reason"]) == (
        "no-key", False, None, "no AH keys loaded")


@pytest.mark.parametrize("keys", [True, False], ids=["keys", "no-keys"])
def test_packets_verbose_prints_the_quoted_ah_under_the_error(capsys, keys):
    assert main(["packets", str(CAP), *(KEY_ARGS if keys else []), "-V", "-Y", "frame.number in {2 4 6 7}"]) == 0
    out = capsys.readouterr().out
    blocks = {int(b.split(None, 1)[0]): b for b in out.split("\n\n") if b.strip()}
    assert sorted(blocks) == [2, 4, 6, 7]
    lines = {f: b.splitlines() for f, b in blocks.items()}
    for f in (2, 4, 6, 7):  # the quote's lines come right after the frame's line, before tshark's tree
        assert lines[f][1].startswith("    Quoted AH SPI 0xa4000001 seq "), lines[f][:3]
    if not keys:
        assert lines[2][2] == "      ICV not verified: no AH keys loaded"
        return
    assert lines[2][1:7] == [
        "    Quoted AH SPI 0xa4000001 seq 1 (in the ICMP error)",
        "      ICV verified (AUTH_HMAC_SHA1_96, keys from ah-v4.keys.json:5)",
        "      payload: ICMP Echo (ping) request id=0x000c, seq=1/256",
        "      next header 1 (ICMP), AH header 24 bytes",
        "      IPv4 198.18.0.1 → 198.18.0.2, TTL 64, 132 bytes",
        "      quoted whole: a copy of a packet already sent, counted for no SA"]
    assert lines[4][2:7] == [
        "      ICV not verified: cut off, 548 of 1588 bytes quoted",
        "      too big: 1588 bytes > next-hop MTU 1400",
        "      payload (not verified): UDP 5000 → 5001 Len=1536",
        "      next header 17 (UDP), AH header 24 bytes",
        "      IPv4 198.18.0.1 → 198.18.0.2, TTL 64, DF, 1588 bytes"]
    assert lines[6][2] == "      ICV failed (AUTH_HMAC_SHA1_96, keys from ah-v4.keys.json:5)"
    assert "payload" not in lines[6][3]  # a packet changed after signing: its payload is not shown
    assert lines[7][1] == "    Quoted AH SPI 0xa4000001 seq ? (in the ICMP error)"
    assert lines[7][2] == "      ICV not verified: cut off, 28 of 132 bytes quoted"


async def _detail(app, pilot, frame: int) -> tuple[str, list[str]]:
    await loaded(pilot)
    await pilot.press("2")  # the Packets tab (the app opens on Findings when there are warnings)
    await pilot.pause()
    table = app.query_one(PacketTable)
    table.cursor = table.position_of(frame)
    await pilot.pause()
    assert table.current_row.frame == frame
    return " | ".join(tree_labels(app.query_one("#detail-tree", Tree))), screen_lines(app)


@sync
async def test_tui_packet_detail_shows_the_quoted_ah() -> None:
    app = create_app(CAP, KEYS)
    async with app.run_test(size=(120, 40)) as pilot:
        text, _ = await _detail(app, pilot, 9)
        assert ("Quoted AH SPI 0xa6000001 seq 1 (in the ICMPv6 error) | ICV verified (AUTH_HMAC_SHA2_384_192, "
                "keys from ah-v6.keys.json:5) | payload: ICMPv6 Echo (ping) request id=0x0006, seq=1 | next header "
                "58 (ICMPv6), AH header 40 bytes | IPv6 2001:db8:a::1 → 2001:db8:b::2, hop limit 64, 208 bytes, "
                "Hop-by-Hop + Destination Options | quoted whole") in text
        text, _ = await _detail(app, pilot, 6)
        assert "Quoted AH SPI 0xa4000001 seq 3 (in the ICMP error) | ICV failed (AUTH_HMAC_SHA1_96" in text
        assert "payload" not in text.split("Quoted AH", 1)[1].split("Wireshark", 1)[0]
    # 80×24 (an SSH session): the verdict, how much was quoted, the MTU and the payload are on screen
    app = create_app(CAP, KEYS)
    async with app.run_test(size=(80, 24)) as pilot:
        text, screen = await _detail(app, pilot, 4)
        assert "Quoted AH SPI 0xa4000001 seq 4 (in the ICMP error)" in text
        shown = "\n".join(screen)
        for want in ("Quoted AH SPI 0xa4000001 seq 4 (in the ICMP error)",
                     "ICV not verified: cut off, 548 of 1588 bytes quoted",
                     "too big: 1588 bytes > next-hop MTU 1400",
                     "payload (not verified): UDP 5000 → 5001 Len=1536"):
            assert want in shown, (want, screen)


def test_the_quoted_header_reader_never_raises_on_a_cut_quote():
    """Every prefix of the two whole quotes with options / extension headers (frames 5, 9) and of
    a tunnel-mode one (12): the header reader gives what the prefix holds, or None; never raises."""
    from scapy.utils import rdpcap
    from test_quoted_ah import _quote

    from ipsecscope.session_detail import quoted_ip_header

    frames = rdpcap(str(CAP))
    for f in (5, 9, 12):
        quote = _quote(frames[f - 1])
        full = quoted_ip_header(quote)
        assert full is not None and full[5] in (24, 32, 40), f
        for cut in range(len(quote)):
            got = quoted_ip_header(quote[:cut])
            # (a cut inside the IPv4 options: those it holds)
            assert got is None or (got[:3] == full[:3] and got[4] == full[4]
                                   and full[3][:len(got[3])] == got[3]), (f, cut)
