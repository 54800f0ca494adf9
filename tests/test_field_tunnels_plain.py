"""Traffic that is no IPsec inside GRE, IP in IP, IPv4/IPv6 in IPv6, ERSPAN II, GRE-bridged
Ethernet, VXLAN, Geneve and GTP-U (tests/data/tunnels/plain-inside.pcap, make.py there: ICMP, DNS,
a TCP SYN, ICMPv6 and UDP over IPv6 between hosts inside each tunnel, ARP inside the Ethernet
ones, and a ping inside IP in IP inside GRE), against tshark frame by frame.

The class (field10): such a frame was an OTHER row recorded by its outer IP header, so a filter on
the inner hosts (``ip.addr == 10.2.0.7``, ``udp.port == 53``, ``icmp``) missed it, and the packet
list named the tunnel's endpoints. tshark dissects every layer: its Source/Destination columns
show the innermost IP header, and a field repeated over the layers matches when any occurrence
does (``ip.src == <tunnel endpoint>`` still finds the frame). The display-filter oracles
(tests/test_display_filter_fields.py, test_display_filter_oracle.py) cover every field on this
capture; this file checks the rows and a filter per layer, for a file's rows and a live ring.
"""

from __future__ import annotations

import functools
import json
import subprocess

import pytest
from conftest import DATA, needs_tshark
from conftest import field_cli as cli

from ipsecscope.decode import tunnel
from ipsecscope.filtering import matches, source_of
from ipsecscope.model.filter import compile_filter
from ipsecscope.session import Session

CAP = DATA / "tunnels" / "plain-inside.pcap"
FIELDS = ("frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "ip.proto", "udp.port", "tcp.dstport",
          "_ws.col.Source", "_ws.col.Destination")


@functools.cache
def tshark() -> dict[int, dict[str, list[str]]]:
    args = ["tshark", "-n", "-r", str(CAP), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
            "-e", "frame.number"]
    for f in FIELDS:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    return {int(c[0]): {f: [x for x in v.split(",") if x] for f, v in zip(FIELDS, c[1:], strict=True)}
            for c in (line.split("\t") for line in out.splitlines())}


@needs_tshark
def test_rows_name_the_innermost_hosts_as_tsharks_columns() -> None:
    ts = tshark()
    docs = {d["frame"]: d for d in map(json.loads, cli("packets", str(CAP), "--json").splitlines())}
    text = {int(ln.split()[0]): ln for ln in cli("packets", str(CAP)).splitlines()}
    assert len(docs) == len(ts) == 59
    ip_frames = 0
    for n, t in ts.items():
        if t["frame.protocols"][0].endswith(":arp"):  # no IP inside: the inner Ethernet frame's MACs
            assert f"{t['_ws.col.Source'][0]} → {t['_ws.col.Destination'][0]}" in text[n], n
            assert docs[n]["src"] == "" and docs[n]["inner"] is None, n  # (test_tunnel_views.py)
            continue
        ip_frames += 1
        d = docs[n]
        assert d["kind"] == "OTHER", n
        assert (d["src"], d["dst"]) == (t["_ws.col.Source"][0], t["_ws.col.Destination"][0]), n
        assert f"{d['src']} → {d['dst']}" in text[n], n
        assert d["inner"]["src"] == d["src"], n
    assert ip_frames == 55


CHECKS = {
    "ip.addr == 10.2.0.7": lambda t: "10.2.0.7" in t["ip.src"] + t["ip.dst"],
    "ip.src == 198.51.100.1": lambda t: "198.51.100.1" in t["ip.src"],
    "ip.src == 10.1.0.5 && ip.src == 198.51.100.1": lambda t: {"10.1.0.5", "198.51.100.1"} <= set(t["ip.src"]),
    "ipv6.src == 2001:db8::a": lambda t: "2001:db8::a" in t["ipv6.src"],
    "ipv6.addr == fd00:1::5": lambda t: "fd00:1::5" in t["ipv6.src"] + t["ipv6.dst"],
    "udp.port == 53": lambda t: "53" in t["udp.port"],
    "udp.port == 4789": lambda t: "4789" in t["udp.port"],
    "tcp.dstport == 443": lambda t: "443" in t["tcp.dstport"],
    "icmp": lambda t: "icmp" in t["frame.protocols"][0].split(":"),
    "icmpv6": lambda t: "icmpv6" in t["frame.protocols"][0].split(":"),
    "ip.proto == 4": lambda t: "4" in t["ip.proto"],
    "ip.proto == 47 && ip.proto == 1": lambda t: {"47", "1"} <= set(t["ip.proto"]),
}


@needs_tshark
@pytest.mark.parametrize("live", [False, True], ids=["rows", "live"])
def test_filters_find_plain_frames_by_inner_and_tunnel_headers(live: bool) -> None:
    s = Session(max_rows=10**6) if live else Session()
    s.load(CAP)
    src = source_of(s)
    ts = tshark()
    for flt, pred in CHECKS.items():
        expected = [n for n, t in sorted(ts.items()) if pred(t)]
        assert expected, flt  # each check selects something
        assert matches(compile_filter(flt), src) == expected, flt


def test_tunnel_hops_are_kept_per_frame_in_order_and_bounded() -> None:
    """decode.tunnel.TunnelHops: frames in increasing order, the last one set again by a tunnel
    around a tunnel; one tuple per distinct set of headers; windows by frame range."""
    h = tunnel.TunnelHops()
    a = ((4, "198.51.100.1", "198.51.100.2", 47, 0, 0),)
    b = ((4, "198.51.100.1", "198.51.100.2", 17, 49152, 4789),)
    h[3] = a
    h[3] = b + a  # the outer tunnel's header, added after the inner one's
    h[5] = a
    h[9] = a
    h[4] = b  # out of order: not kept
    assert dict(h) == {3: b + a, 5: a, 9: a} and len(h) == 3
    assert h.get(4) is None and h[9] is h[5]
    assert h.between(4, 9) == {5: a, 9: a} and h.between(10, 20) == {}
    assert tunnel.MAX_HOP_FRAMES * 12 <= 64 << 20  # 12 bytes a frame at most, whatever the capture


def test_icmp_errors_inside_a_tunnel_open_their_quote_as_outside(tmp_path) -> None:
    """samples/synthetic/icmp-quoted (ICMP/ICMPv6 errors quoting ESP, whole and cut off, beside
    the ESP) bridged over GRE: every row's Info, the quoted ESP decrypted included, and what a
    filter on the quote selects are the untunnelled capture's (the quote was read from the
    frame's outer IP header: the row was 'GRE 198.51.100.1 → 198.51.100.2')."""
    import importlib.util
    import sys

    from conftest import SAMPLES

    from ipsecscope.capture import open_capture

    spec = importlib.util.spec_from_file_location("tunnels_make", DATA / "tunnels" / "make.py")
    make = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SAMPLES / "synthetic"))
    try:
        spec.loader.exec_module(make)
    finally:
        sys.path.remove(str(SAMPLES / "synthetic"))
    plain = SAMPLES / "synthetic" / "icmp-quoted.pcap"
    keys = SAMPLES / "synthetic" / "icmp-quoted.esp_sa"
    cap = tmp_path / "icmp-quoted-gre.pcap"
    with open_capture(plain) as r, make.PcapWriter(cap) as w:
        for i, f in enumerate(r):
            w.write(f.ts_ns, make.outer4(47, make.gre(0x6558, bytes(f.data)), i))

    def rows(path) -> list[tuple]:
        docs = map(json.loads, cli("packets", str(path), "-k", str(keys), "--json").splitlines())
        return [(d["frame"], d["kind"], d["info"], json.dumps(d.get("quoted_esp"))) for d in docs]

    ours, theirs = rows(cap), rows(plain)
    assert ours == theirs
    assert sum("▸ quoted ESP" in r[2] for r in ours) >= 4
    flt = "esp.spi == 0x70000001 && (icmp || icmpv6) && icmpv6.type == 128"
    sel = [json.loads(x)["frame"] for x in cli("packets", str(cap), "-k", str(keys), "-Y", flt, "--json").splitlines()]
    assert sel and sel == [json.loads(x)["frame"] for x in
                           cli("packets", str(plain), "-k", str(keys), "-Y", flt, "--json").splitlines()]


def test_only_the_session_keeps_the_tunnel_headers() -> None:
    # The session's rows and filters read each frame's tunnel headers (12 B a frame, up to
    # tunnel.MAX_HOP_FRAMES); decrypt, summary and iter_decrypted never do, so their decoders keep
    # none and stay flat in memory on a mirror capture of millions of tunnelled frames.
    from ipsecscope.capture import open_capture
    from ipsecscope.decode.demux import Decoder

    kept, plain = Decoder(tunnel_hops=True), Decoder()
    with open_capture(str(CAP)) as src:
        for raw in src:
            kept.decode_all(raw)
            plain.decode_all(raw)
    assert len(kept.tunnels) >= 50 and len(plain.tunnels) == 0
    s = Session()
    s.load(str(CAP))
    assert len(s.decoder.tunnels) == len(kept.tunnels)
