"""What the views show of frames inside GRE / IP in IP / ERSPAN / VXLAN / Geneve tunnels that the
rows alone do not say, against tshark and against the same frames outside a tunnel
(tests/data/tunnels/make.py):

- an ARP request inside each Ethernet-carrying tunnel (plain-inside.pcap frames 55-58): listed with
  the MACs of the Ethernet frame inside, as tshark's Source/Destination columns (was the tunnel's
  IP endpoints, 'GRE 198.51.100.1 → 198.51.100.2'), in ``packets`` text, ``--json`` ("mac") and
  the TUI packet list; filters find it by the tunnel's headers as tshark's do;
- ICMP errors quoting ESP (icmp-quoted-inside.pcap: samples/synthetic/icmp-quoted's frames) and AH
  (ah-quoted-inside.pcap: tests/data/ah/ah-quoted's) inside a tunnel: the detail views (``packets
  -V``, ``--json``'s quoted_ah, the TUI packet detail) open the quote as for the untunnelled frame
  (they read it from the tunnel's outer header: no quoted ESP at all, the quoted AH's IP header,
  AH length and MTU line missing); a quoted ESP's lines in ``-V`` too, with the packet's size
  against a path MTU error's MTU (as a quoted AH's);
- IP fragments inside tunnels and of the tunnel's own packet (frag-inside.pcap): the rows and
  columns are tshark's (the display-filter fields are compared in test_display_filter_fields).
"""

from __future__ import annotations

import functools
import json
import subprocess

from conftest import DATA, SAMPLES, needs_tshark
from conftest import field_cli as cli
from test_tui import loaded, screen_lines, sync, tree_labels
from textual.widgets import Tree

from ipsecscope.filtering import matches, source_of
from ipsecscope.model.filter import compile_filter
from ipsecscope.session import Session
from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.packet_table import PacketTable

TUN = DATA / "tunnels"
PLAIN = TUN / "plain-inside.pcap"
ARP_FRAMES = (55, 56, 57, 58)  # ERSPAN II, GRE-bridged Ethernet, VXLAN, Geneve
ESP_Q, ESP_Q_IN = SAMPLES / "synthetic" / "icmp-quoted.pcap", TUN / "icmp-quoted-inside.pcap"
ESP_KEYS = SAMPLES / "synthetic" / "icmp-quoted.keys.json"
AH_Q, AH_Q_IN = DATA / "ah" / "ah-quoted.pcap", TUN / "ah-quoted-inside.pcap"
AH_KEYS = [DATA / "ah" / "ah-v4.keys.json", DATA / "ah" / "ah-v6.keys.json"]
AH_ERRORS = (2, 4, 5, 6, 7, 9, 11, 12)
FRAG = TUN / "frag-inside.pcap"


@functools.cache
def tshark(cap, *fields: str, keys: str | None = None) -> dict[int, dict[str, list[str]]]:
    args = ["tshark", "-n", "-r", str(cap), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
            "-e", "frame.number"]
    if keys:
        args += ["-o", "esp.enable_encryption_decode:TRUE"]
    for f in fields:
        args += ["-e", f]
    env = None
    if keys:
        import os
        env = dict(os.environ, WIRESHARK_CONFIG_DIR=keys)
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True, env=env).stdout
    return {int(c[0]): {f: [x for x in v.split(",") if x] for f, v in zip(fields, c[1:], strict=True)}
            for c in (line.split("\t") for line in out.splitlines())}


@needs_tshark
def test_arp_inside_a_tunnel_shows_the_inner_macs_as_tshark() -> None:
    ts = tshark(PLAIN, "frame.protocols", "_ws.col.Source", "_ws.col.Destination", "_ws.col.Protocol",
                "eth.src", "eth.dst", "_ws.col.Info")
    arp = [n for n, t in ts.items() if t["frame.protocols"][0].endswith(":arp")]
    assert arp == list(ARP_FRAMES)
    text = {int(ln.split()[0]): ln for ln in cli("packets", str(PLAIN)).splitlines()}
    docs = {d["frame"]: d for d in map(json.loads, cli("packets", str(PLAIN), "--json").splitlines())}
    for n in arp:
        t = ts[n]
        src, dst = t["_ws.col.Source"][0], t["_ws.col.Destination"][0]
        assert (src, dst) == (t["eth.src"][-1], t["eth.dst"][-1]) != (t["eth.src"][0], t["eth.dst"][0])
        # Info as tshark's, after the protocol ("ARP Who has 10.2.0.7? Tell 10.1.0.5")
        want = f'{t["_ws.col.Protocol"][0]} {",".join(t["_ws.col.Info"])}'
        assert f"{src} → {dst}" in text[n] and text[n].rstrip().endswith(want), (text[n], want)
        d = docs[n]
        assert (d["kind"], d["info"], d["src"], d["dst"], d["inner"]) == ("OTHER", "ARP", "", "", None), d
        assert d["mac"] == {"src": src, "dst": dst}, n
    assert all(d["mac"] is None for n, d in docs.items() if n not in ARP_FRAMES)


@needs_tshark
def test_filters_find_arp_inside_a_tunnel_by_the_tunnels_headers_as_tshark() -> None:
    ts = tshark(PLAIN, "frame.protocols", "ip.src", "ip.addr", "ip.proto", "udp.port")
    s = Session()
    s.load(PLAIN)
    src = source_of(s)
    checks = {
        "ip.src == 198.51.100.1": lambda t: "198.51.100.1" in t["ip.src"],
        "ip.addr == 10.1.0.5": lambda t: "10.1.0.5" in t["ip.addr"],  # ARP's sender is not ip.*
        "ip.proto == 47": lambda t: "47" in t["ip.proto"],
        "udp.port == 6081": lambda t: "6081" in t["udp.port"],
        "ip && !icmp": lambda t: bool(t["ip.src"]) and "icmp" not in t["frame.protocols"][0].split(":"),
    }
    for flt, pred in checks.items():
        want = [n for n, t in sorted(ts.items()) if pred(t)]
        got = matches(compile_filter(flt), src)
        assert got == want, flt
    assert set(ARP_FRAMES) <= set(matches(compile_filter("ip.src == 198.51.100.1"), src))
    assert not set(ARP_FRAMES) & set(matches(compile_filter("ip.addr == 10.1.0.5"), src))


@sync
async def test_tui_packet_list_shows_the_inner_macs_of_arp_in_a_tunnel() -> None:
    app = create_app(PLAIN)
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot)
        table = app.query_one(PacketTable)
        text = {r.frame: table._render_row(r, 160, False).text for r in table.rows}
        for n in ARP_FRAMES:
            assert "02:00:00:00:0c:05" in text[n] and "ff:ff:ff:ff:ff:ff" in text[n], text[n]
            assert text[n].rstrip().endswith("ARP Who has 10.2.0.7? Tell 10.1.0.5"), text[n]  # as tshark's Info
            assert "198.51.100" not in text[n]


def _quoted_esp(cap) -> dict:
    s = Session.from_files([cap], [ESP_KEYS])
    return {r.frame: s.detail(r.frame).quoted_esp for r in s.rows if r.kind == "OTHER"}


def test_detail_opens_a_quoted_esp_inside_a_tunnel_as_outside() -> None:
    """Every ICMP error's quoted ESP (whole and decrypted, no key, cut off, malformed) in the
    detail: the same as for the untunnelled frame (was None inside a tunnel)."""
    outside, inside = _quoted_esp(ESP_Q), _quoted_esp(ESP_Q_IN)
    assert outside == inside
    opened = {f: q for f, q in inside.items() if q is not None}
    assert len(opened) >= 20 and sum(q.verified for q in opened.values()) >= 4
    assert (opened[2].spi, opened[2].seq, opened[2].summary is not None) == (0x70000001, 1, True)


def _verbose(cap, frames: str, keys=AH_KEYS) -> dict[int, list[str]]:
    out = cli("packets", str(cap), *[x for k in keys for x in ("-k", str(k))], "-V", "-Y",
              f"frame.number in {{{frames}}}")
    blocks = {int(b.split(None, 1)[0]): b.splitlines() for b in out.split("\n\n") if b.strip()}
    out = {}
    for f, b in blocks.items():  # the quote's lines: between the frame's line and tshark's tree
        lines = b[1:2] if b[1].startswith("    Quoted") else []
        for ln in b[2:] if lines else ():
            if not ln.startswith("      "):
                break
            lines.append(ln)
        out[f] = lines
    return out


@needs_tshark
def test_verbose_prints_a_quoted_esp_inside_a_tunnel_as_outside_with_the_mtu() -> None:
    """packets -V prints the quoted ESP's lines under an ICMP error as it does a quoted AH's (it
    printed none): the verdict, the packet's size against a "fragmentation needed" / Packet Too
    Big error's MTU (tshark's icmp.mtu and the quoted ip.len), the plaintext, the addresses."""
    ts = tshark(ESP_Q_IN, "frame.protocols", "icmp.mtu", "icmpv6.mtu", "ip.len", "ipv6.plen", "esp.spi",
                "esp.sequence")
    errors = [n for n, t in ts.items() if {"icmp", "icmpv6"} & set(t["frame.protocols"][0].split(":"))]
    frames = " ".join(map(str, errors))
    inside = _verbose(ESP_Q_IN, frames, [ESP_KEYS])
    assert inside == _verbose(ESP_Q, frames, [ESP_KEYS])
    # (quotes of IKE, of UDP 4500 without ESP, and of ESP cut before its sequence number: no lines)
    assert {n for n in errors if inside[n]} == {n for n in errors if ts[n]["esp.sequence"]}
    errors = [n for n in errors if ts[n]["esp.sequence"]]
    for n in errors:
        t, lines = ts[n], inside[n]
        icmp = "ICMPv6" if "icmpv6" in t["frame.protocols"][0] else "ICMP"
        assert lines[0] == f"    Quoted ESP SPI {t['esp.spi'][0]} seq {t['esp.sequence'][0]} (in the {icmp} error)", n
        mtu = t["icmp.mtu"] or t["icmpv6.mtu"]
        sizes = [ln for ln in lines if "MTU" in ln]
        if mtu:  # the quoted datagram's header is the last one of its version (tshark opens no quoted ESP)
            size = int(t["ip.len"][-1]) if icmp == "ICMP" else 40 + int(t["ipv6.plen"][-1])
            want = f"too big: {size} bytes > next-hop MTU {mtu[0]}" if size > int(mtu[0]) else f"next-hop MTU {mtu[0]}"
            assert sizes == ["      " + want], (n, lines)
        else:
            assert not sizes, n
    assert sum(any("too big" in ln for ln in inside[n]) for n in errors) >= 8


@needs_tshark
def test_verbose_and_json_open_a_quoted_ah_inside_a_tunnel_as_outside() -> None:
    frames = " ".join(map(str, AH_ERRORS))
    inside = _verbose(AH_Q_IN, frames)
    assert inside == _verbose(AH_Q, frames)
    assert "      too big: 1588 bytes > next-hop MTU 1400" in inside[4]
    assert "      IPv4 198.18.0.1 → 198.18.0.2, TTL 64, DF, 1588 bytes" in inside[4]
    keys = [x for k in AH_KEYS for x in ("-k", str(k))]
    docs = {}
    for cap in (AH_Q, AH_Q_IN):
        rows = map(json.loads, cli("packets", str(cap), *keys, "--json").splitlines())
        docs[cap] = {d["frame"]: d["inner"]["quoted_ah"] for d in rows if d["frame"] in AH_ERRORS}
    assert docs[AH_Q] == docs[AH_Q_IN]
    # and against tshark, inside the tunnel: the last IP header is the quoted one
    ts = tshark(AH_Q_IN, "frame.protocols", "ah.spi", "ah.sequence", "ip.len", "ip.ttl", "ipv6.plen", "ipv6.hlim",
                "icmp.mtu", "icmpv6.mtu")
    for f, q in docs[AH_Q_IN].items():
        t = ts[f]
        layers = t["frame.protocols"][0].split(":")
        fam = "ip" if q["ip"]["version"] == 4 else "ipv6"
        # the quoted header: the one after the tunnel's headers and the error's own of its family
        k = layers[:layers.index("icmp" if fam == "ip" else "icmpv6")].count(fam)
        assert q["spi"] == t["ah.spi"][0] and q["seq"] == (int(t["ah.sequence"][0]) if t["ah.sequence"] else None), f
        if fam == "ip":
            assert (q["ip"]["length"], q["ip"]["ttl"]) == (int(t["ip.len"][k]), int(t["ip.ttl"][k])), f
        else:
            assert (q["ip"]["length"], q["ip"]["ttl"]) == (40 + int(t["ipv6.plen"][k]), int(t["ipv6.hlim"][k])), f
        mtu = t["icmp.mtu"] or t["icmpv6.mtu"]
        assert q["mtu"] == (int(mtu[0]) if mtu else None), f
    assert [f for f, q in docs[AH_Q_IN].items() if q["mtu"]] == [4, 11]


async def _detail(app, pilot, frame: int) -> tuple[str, str]:
    await loaded(pilot)
    await pilot.press("2")  # the Packets tab
    await pilot.pause()
    table = app.query_one(PacketTable)
    table.cursor = table.position_of(frame)
    await pilot.pause()
    assert table.current_row.frame == frame
    return " | ".join(tree_labels(app.query_one("#detail-tree", Tree))), "\n".join(screen_lines(app))


@sync
async def test_tui_detail_opens_quotes_inside_a_tunnel_at_80x24() -> None:
    app = create_app(AH_Q_IN, AH_KEYS)  # frame 4: ERSPAN II around a "fragmentation needed" quoting AH
    async with app.run_test(size=(80, 24)) as pilot:
        text, screen = await _detail(app, pilot, 4)
        for want in ("Quoted AH SPI 0xa4000001 seq 4 (in the ICMP error)",
                     "ICV not verified: cut off, 548 of 1588 bytes quoted",
                     "too big: 1588 bytes > next-hop MTU 1400",
                     "payload (not verified): UDP 5000 → 5001 Len=1536"):
            assert want in text and want in screen, (want, screen)
    app = create_app(ESP_Q_IN, [ESP_KEYS])  # frame 23: IP in IP around a "fragmentation needed" quoting ESP
    async with app.run_test(size=(80, 24)) as pilot:
        text, screen = await _detail(app, pilot, 23)
        for want in ("Quoted ESP SPI 0x70000003 seq 3 (in the ICMP error)", "decrypted 36 bytes, not verified",
                     "too big: 1464 bytes > next-hop MTU 1280", "IP / ICMP 10.50.1.1 > 10.50.2.1 echo-request"):
            assert want in text and want in screen, (want, screen)


@needs_tshark
def test_fragments_inside_tunnels_list_as_tshark() -> None:
    """Fragments held for reassembly inside a tunnel list the hosts inside; the frame that
    completes a datagram shows what it carries (ICMP, UDP over IPv6, ESP decrypted); a datagram
    never completed is marked; the tunnel's own fragments list the tunnel's endpoints."""
    ts = tshark(FRAG, "frame.protocols", "_ws.col.Source", "_ws.col.Destination", "esp.spi", "esp.sequence",
                keys=str(SAMPLES / "healthy-gcm" / "keys"))
    rows = {d["frame"]: d for d in map(json.loads, cli("packets", str(FRAG), "-k", str(SAMPLES / "healthy-gcm" / "keys"),
                                                       "--json").splitlines())}
    assert len(rows) == len(ts) == 25
    for n, t in ts.items():
        d = rows[n]
        layers = t["frame.protocols"][0].split(":")
        if "esp" not in layers:  # (tshark's columns name a decrypted packet's inner hosts; the row its peers)
            assert (d["src"], d["dst"]) == (t["_ws.col.Source"][0], t["_ws.col.Destination"][0]), n
        held = layers[-1] == "data" and layers[-2] in ("ip", "ipv6.fraghdr")  # tshark: "Fragmented IP protocol"
        if "esp" in layers:
            assert (d["kind"], d["status"], d["spi"], d["seq"]) == (
                "ESP", "decrypted", "0x" + t["esp.spi"][0][2:].zfill(8), int(t["esp.sequence"][0])), n
        elif held and n == 17:  # its other fragments never came
            assert d["kind"] == "MALFORMED" and "never completed" in d["info"], n
        else:
            assert d["kind"] == "OTHER" and d["inner"]["fragment"] == held, n
            assert held or d["inner"]["protocol"] in ("ICMP", "UDP"), n


def test_tunnel_offsets_name_an_ethernet_frame_that_is_no_ip() -> None:
    """decode.tunnel: a bridged/mirrored Ethernet frame that carries no IP is ETHERNET at its
    Ethernet header (the decoder's tunnel_inner, version 0); IP behind VLAN tags is still IP, a cut
    Ethernet header TRUNCATED, a GRE payload type that is no Ethernet NOT_IP."""
    from ipsecscope.decode import link, tunnel

    arp = b"\xff" * 6 + b"\x02\x00\x00\x00\x0c\x05" + b"\x08\x06" + bytes(28)
    tagged_ip = b"\xff" * 6 + b"\x02\x00\x00\x00\x0c\x05" + b"\x81\x00\x00\x07\x08\x00" + b"\x45" + bytes(19)
    assert tunnel.inner_ip(47, b"\x00\x00\x65\x58" + arp) == (tunnel.ETHERNET, 4)
    assert tunnel.inner_ip(47, b"\x10\x00\x88\xbe" + bytes(4) + bytes(8) + arp) == (tunnel.ETHERNET, 16)  # ERSPAN II
    assert tunnel.inner_ip(47, b"\x00\x00\x65\x58" + tagged_ip) == (4, 4 + 18)
    assert tunnel.inner_ip(47, b"\x00\x00\x65\x58" + arp[:10])[0] == link.TRUNCATED
    assert tunnel.inner_ip(47, b"\x00\x00\x08\x06" + arp[14:])[0] == link.NOT_IP  # ARP straight in GRE
    vxlan = bytes(8) + b"\x08\x00\x00\x00\x00\x00\x07\x00"
    assert tunnel.udp_inner(4789, vxlan + arp) == (tunnel.ETHERNET, 16)
    geneve = bytes(8) + b"\x00\x00\x65\x58\x00\x00\x07\x00"
    assert tunnel.udp_inner(6081, geneve + arp) == (tunnel.ETHERNET, 16)
