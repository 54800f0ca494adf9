"""IPsec inside tunnels (tests/data/tunnels: the healthy-gcm sample inside GRE, IP-in-IP, IPv4 in
IPv6, ERSPAN II, GRE-bridged Ethernet, VXLAN, Geneve and GTP-U; make.py there), against tshark
frame by frame.

The class: the decoder stopped at the outer IP header, so every IKE message and ESP packet that
crossed a GRE or IP-in-IP tunnel, or reached the analyser through an ERSPAN, VXLAN or Geneve
mirror session, was
"other" where tshark dissects the IPsec inside. Now the rows are the IPsec inside (its peers'
addresses, as the SAs need), and display filters also find each frame by the tunnel's own
header, as tshark's occurrences of ip.src / ip.proto / ipv6.nxt do.

GTP-U came from public captures: luguifang/protocol-pcap ``esp.pcap`` (commit 729dd19, no licence:
not committed), one frame of a mobile backhaul, ESP from a phone's IPv6 address inside a G-PDU to
UDP 2152 behind two VLAN tags, and nDPI's ``ipv6_in_gtp.pcap`` (tests/data/ndpi: the same phone's
ESP over an IPv6 backhaul). tshark dissects ``...:udp:gtp:ipv6:esp``; ipsecscope called it other
UDP. gtpu.pcap / gtpu-5g-n3.pcap hold the class (plain S1-U, and N3 with a sequence number and a
PDU Session Container extension header).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, SAMPLES, needs_tshark, public
from conftest import field_cli as cli

from ipsecscope.decode import link, tunnel
from ipsecscope.filtering import matches, source_of
from ipsecscope.model.filter import compile_filter
from ipsecscope.session import Session

# (the *-inside.pcap captures are not the sample's: tests/test_field_tunnels_plain.py, test_tunnel_views.py)
TUNNELS = sorted(p for p in (DATA / "tunnels").glob("*.pcap") if not p.stem.endswith("-inside"))
FIELDS = ("frame.protocols", "isakmp.ispi", "isakmp.rspi", "isakmp.messageid", "esp.spi", "esp.sequence",
          "ip.src", "ip.dst", "ip.proto", "ipv6.src", "ipv6.nxt", "udp.srcport", "udp.dstport")


@functools.cache
def tshark(cap: Path) -> dict[int, dict[str, list[str]]]:
    """frame -> every occurrence of each of FIELDS (one run)."""
    args = ["tshark", "-n", "-r", str(cap), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
            "-e", "frame.number"]
    for f in FIELDS:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    return {int(c[0]): {f: [x for x in v.split(",") if x] for f, v in zip(FIELDS, c[1:], strict=True)}
            for c in (line.split("\t") for line in out.splitlines())}


@functools.cache
def session(cap: Path, live: bool) -> Session:
    s = Session(max_rows=10**6) if live else Session()
    s.load(cap)
    return s


@needs_tshark
@pytest.mark.parametrize("cap", TUNNELS, ids=lambda p: p.name)
def test_ipsec_inside_tunnels_is_tsharks(cap: Path) -> None:
    """Rows (the analysis path, in process) and `summary --json`'s IKE list (its own fast loop)."""
    ts = tshark(cap)
    rows = {r.frame: r for r in session(cap, False).rows}
    ike = {m["frame"]: m for m in json.loads(cli("summary", str(cap), "--json"))["ike"]}
    assert len(rows) == len(ts) == 34
    for n, t in ts.items():
        r = rows[n]
        # the IPsec peers: tshark's innermost IP header
        assert (r.src, r.dst) == (t["ip.src"][-1], t["ip.dst"][-1]), n
        if t["frame.protocols"][0].endswith(":isakmp"):
            m = ike[n]
            assert r.kind == "IKE", n
            assert (m["spi_i"], m["spi_r"], m["msg_id"]) == (t["isakmp.ispi"][0], t["isakmp.rspi"][0],
                                                             int(t["isakmp.messageid"][0], 16)), n
        else:
            assert (r.kind, r.spi, r.seq) == ("ESP", int(t["esp.spi"][0], 16), int(t["esp.sequence"][0])), n


CASES = [(c, False) for c in TUNNELS] + [(DATA / "tunnels" / "ipv4-in-ipv6.pcap", True)]


@needs_tshark
@pytest.mark.parametrize(("cap", "live"), CASES, ids=lambda v: v.name if isinstance(v, Path) else ("live" if v else "rows"))
def test_filters_find_tunnel_frames_by_either_header(cap: Path, live: bool) -> None:
    src = source_of(session(cap, live))
    ts = tshark(cap)
    checks = {
        "ip.src == 198.51.100.1": lambda t: "198.51.100.1" in t["ip.src"],
        "ip.addr == 198.18.0.2": lambda t: "198.18.0.2" in t["ip.src"] + t["ip.dst"],
        "ipv6.src == 2001:db8::a": lambda t: "2001:db8::a" in t["ipv6.src"],
        "ip.proto == 47": lambda t: "47" in t["ip.proto"],
        "ip.proto == 4": lambda t: "4" in t["ip.proto"],
        "ip.proto == 17": lambda t: "17" in t["ip.proto"],
        "ipv6.nxt == 4": lambda t: "4" in t["ipv6.nxt"],
        "ipv6": lambda t: bool(t["ipv6.src"]),
        "udp.port == 4789 || udp.dstport == 6081": lambda t: "4789" in t["udp.srcport"] + t["udp.dstport"]
        or "6081" in t["udp.dstport"],
        "udp.srcport == 49155": lambda t: "49155" in t["udp.srcport"],
        "udp.dstport == 2152": lambda t: "2152" in t["udp.dstport"],
        "udp.port == 4500": lambda t: "4500" in t["udp.srcport"] + t["udp.dstport"],
    }
    hit = 0
    for flt, pred in checks.items():
        ours = matches(compile_filter(flt), src)
        assert ours == [n for n, t in sorted(ts.items()) if pred(t)], flt
        hit += bool(ours)
    assert hit >= 4


# third-party: materialised at test time (tests/public_data.py)
GTP, GTP_OUT = public("ndpi/ipv6_in_gtp.pcap"), public("ndpi/ipv6_in_gtp.pcap.out")


@needs_tshark
def test_ndpi_esp_inside_gtpu_is_one_esp_flow_as_ndpireader_and_tshark_say() -> None:
    """nDPI's expected output: one IPSec flow (1 packet, 166 bytes) from the phone's address, GTP
    around it; tshark: the same SPI and sequence number inside GTP."""
    cap = GTP
    out = GTP_OUT.read_text()
    assert re.search(r"ESP \[2a01:4c8:c014:144e:1:2:945b:6761\]:0 -> \[2a01:4c8:f000:f49::4\]:0 .*"
                     r"\[proto: GTP:79/IPSec\].*\[1 pkts/166 bytes -> 0 pkts/0 bytes\]", out)
    t = tshark(cap)[2]
    assert t["frame.protocols"][0].endswith(":gtp:ipv6:esp") and t["esp.spi"] == ["0xff3b6603"]
    (flow,) = json.loads(cli("sas", str(cap), "--json"))["flows"]
    assert (flow["src"], flow["dst"], flow["spi"], flow["packets"], flow["seq_min"]) == (
        "2a01:4c8:c014:144e:1:2:945b:6761", "2a01:4c8:f000:f49::4", "0xff3b6603", 1, int(t["esp.sequence"][0]))


def test_tunnelled_esp_decrypts_with_the_samples_keys() -> None:
    flows = json.loads(cli("sas", str(DATA / "tunnels" / "erspan2.pcap"), "-k", str(SAMPLES / "healthy-gcm" / "keys"),
                           "--json"))["flows"]
    assert sorted((f["packets"], f["decrypted"]) for f in flows) == [(3, 3), (3, 3), (6, 6), (6, 6)]


def test_tunnel_headers_cut_short_are_truncated_or_not_ip() -> None:
    """GRE headers cut anywhere, version 1 (PPTP) and unknown payloads: never an offset past the
    bytes there; an ERSPAN III header with its platform sub-header is stepped over whole."""
    raw = (DATA / "tunnels" / "erspan2.pcap").read_bytes()
    first = raw[24 + 16:24 + 16 + int.from_bytes(raw[24 + 8:24 + 12], "little")]
    gre = first[34:]
    ver, off = tunnel.inner_ip(47, gre)
    assert ver == 4 and gre[off] == 0x45
    for cut in range(off):
        v, o = tunnel.inner_ip(47, gre[:cut])
        assert v in (link.TRUNCATED, link.NOT_IP), cut
    assert tunnel.inner_ip(47, b"\x00\x01\x88\x0b" + gre[4:])[0] == link.NOT_IP  # enhanced GRE (PPTP)
    assert tunnel.inner_ip(47, b"\x00\x00\x12\x34" + gre[4:])[0] == link.NOT_IP
    eth = gre[16:]  # the mirrored frame behind GRE (8 octets with S) + ERSPAN II (8)
    e3 = b"\x00\x00\x22\xeb" + bytes(11) + b"\x01" + bytes(8) + eth
    assert tunnel.inner_ip(47, e3) == (4, 4 + 20 + 14)


def test_gtpu_headers_cut_short_or_not_a_gpdu_are_truncated_or_not_ip() -> None:
    """GTP-U (TS 29.281 §5): the user packet starts after the 8-octet header, the 4 optional
    octets (any of E/S/PN) and the extension header chain; cut anywhere before it, an echo
    request, GTP' (PT 0), GTPv2 or an extension header of length 0: never an offset past the
    bytes there, never IP."""
    raw = (DATA / "tunnels" / "gtpu-5g-n3.pcap").read_bytes()
    udp = raw[24 + 16 + 34:24 + 16 + int.from_bytes(raw[24 + 8:24 + 12], "little")]
    ver, off = tunnel.udp_inner(2152, udp)
    assert (ver, off) == (4, 8 + 12 + 4) and udp[off] == 0x45
    for cut in range(off + 1):
        v, o = tunnel.udp_inner(2152, udp[:cut])
        assert v in (link.TRUNCATED, link.NOT_IP) and (v == link.NOT_IP or o > cut), cut
    for flags, mtype in ((0x32, 1), (0x26, 0xFF), (0x46, 0xFF)):  # echo request, GTP', GTPv2-like
        assert tunnel.udp_inner(2152, udp[:8] + bytes((flags, mtype)) + udp[10:])[0] == link.NOT_IP
    zero_ext = bytearray(udp)
    zero_ext[20] = 0
    assert tunnel.udp_inner(2152, bytes(zero_ext))[0] == link.NOT_IP
    plain = udp[:8] + b"\x30\xff" + udp[10:16] + udp[off:]
    assert tunnel.udp_inner(2152, plain) == (4, 16)
