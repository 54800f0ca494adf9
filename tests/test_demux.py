"""decode.demux / link / ip: corpus oracles, every link type, IPv6 extension headers, fragments,
UDP 4500 (RFC 3948), TCP (RFC 8229), AH and malformed input — compared with tshark where it can answer."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import CORPUS, corpus_captures, needs_tshark, public
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6ExtHdrFragment, fragment6
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw
from test_capture_builders import esp, eth, ike_v2, tshark_fields, v4, v6, v6_ext_chain, write_pcap

from ipsecscope.capture import open_capture
from ipsecscope.decode.demux import Decoder
from ipsecscope.model.packets import AhPacket, EspPacket, IkeDatagram, Malformed, NatKeepalive, RawFrame

CAPTURES = corpus_captures()


def decode_file(path: Path) -> list:
    dec = Decoder()
    out = []
    with open_capture(path) as r:
        for raw in r:
            out.extend(dec.decode_all(raw))
    return out


def one(data: bytes, linktype: int = 1, index: int = 1, dec: Decoder | None = None):
    return (dec or Decoder()).decode(RawFrame(index, 1.0, 1_000_000_000, linktype, data, len(data)))


# ---- the Wireshark corpus -------------------------------------------------------------------


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_corpus_matches_tshark_oracle(cap: Path) -> None:
    exp = json.loads((CORPUS / (cap.name + ".expected.json")).read_text())["passes"]["no_keys"]
    pkts = decode_file(cap)
    assert not [p for p in pkts if isinstance(p, Malformed)]
    # ESP: per SPI packets, endpoints, first/last sequence number
    by_spi: dict[str, list[EspPacket]] = {}
    for p in pkts:
        if isinstance(p, EspPacket):
            by_spi.setdefault(f"0x{p.spi:08x}", []).append(p)
    assert set(by_spi) == set(exp["esp"]["spis"])
    for spi, e in exp["esp"]["spis"].items():
        got = by_spi[spi]
        assert len(got) == e["packets"]
        assert (got[0].src, got[0].dst) == (e["src"], e["dst"])
        assert (got[0].seq, got[-1].seq) == (e["first_seq"], e["last_seq"])
    # IKE: count by version and exchange type, and the header of every message
    ike = [p for p in pkts if isinstance(p, IkeDatagram)]
    assert len(ike) == exp["ike"]["messages"]
    versions = Counter(f"{p.data[17] >> 4}.{p.data[17] & 15}" for p in ike)
    assert dict(versions) == exp["ike"]["by_version"]
    exch = Counter(p.data[18] for p in ike)
    assert dict(exch) == {int(k.rsplit("(", 1)[1].rstrip(")")): v for k, v in exp["ike"]["by_exchange_type"].items()}
    for p, m in zip(ike, exp["ike"]["message_list"], strict=True):
        assert p.frame == m["frame"]
        assert (p.data[:8].hex(), p.data[8:16].hex()) == (m["ispi"], m["rspi"])
        assert f"0x{struct.unpack_from('!I', p.data, 20)[0]:08x}" == m["message_id"]
        assert (p.src, p.dst) == (m["src"], m["dst"])


# ---- link layers ----------------------------------------------------------------------------

IKE = ike_v2()
ESP_SPI = 0xC0FFEE01


def _ip4_ike():
    return v4() / UDP(sport=500, dport=500) / Raw(IKE)


def _ip6_esp():
    return v6(nh=50) / Raw(esp(ESP_SPI, 7))


LINK_CASES = {
    "ethernet": (1, eth(_ip4_ike())),
    "vlan-802.1q": (1, bytes(Ether() / Dot1Q(vlan=10) / _ip4_ike())),
    "qinq-802.1ad": (1, bytes(Ether() / Dot1AD(vlan=100) / Dot1Q(vlan=10) / _ip4_ike())),
    "vlan-ipv6": (1, bytes(Ether() / Dot1Q(vlan=7) / _ip6_esp())),
    "sll": (113, bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, proto=0x0800) / _ip4_ike())),
    "sll-ipv6": (113, bytes(CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=6, proto=0x86DD) / _ip6_esp())),
    "sll2": (276, bytes(CookedLinuxV2(proto=0x0800, ifindex=3) / _ip4_ike())),
    "sll2-ipv6": (276, bytes(CookedLinuxV2(proto=0x86DD, ifindex=3) / _ip6_esp())),
    "raw-101-v4": (101, bytes(_ip4_ike())),
    "raw-101-v6": (101, bytes(_ip6_esp())),
    "raw-228": (228, bytes(_ip4_ike())),
    "raw-229": (229, bytes(_ip6_esp())),
    "null-le-inet": (0, struct.pack("<I", 2) + bytes(_ip4_ike())),
    "null-be-inet": (0, struct.pack(">I", 2) + bytes(_ip4_ike())),
    "null-le-inet6-macos": (0, struct.pack("<I", 30) + bytes(_ip6_esp())),
    "null-le-inet6-bsd": (0, struct.pack("<I", 24) + bytes(_ip6_esp())),
    "loop-inet": (108, struct.pack(">I", 2) + bytes(_ip4_ike())),
}


@pytest.mark.parametrize("name", list(LINK_CASES))
def test_link_types(name: str) -> None:
    lt, data = LINK_CASES[name]
    p = one(data, lt)
    if b"\x86\xdd" in data[:20] or "v6" in name or "inet6" in name or name == "raw-229":
        assert isinstance(p, EspPacket) and p.spi == ESP_SPI and p.seq == 7 and p.ip_version == 6
        assert (p.src, p.dst) == ("2001:db8::1", "2001:db8::2")
    else:
        assert isinstance(p, IkeDatagram) and p.data == IKE and (p.sport, p.dport) == (500, 500)
        assert (p.src, p.dst, p.ip_version) == ("198.18.0.1", "198.18.0.2", 4)


@needs_tshark
@pytest.mark.parametrize("name", list(LINK_CASES))
def test_link_types_agree_with_tshark(tmp_path: Path, name: str) -> None:
    lt, data = LINK_CASES[name]
    p = write_pcap(tmp_path / f"{name}.pcap", [data], linktype=lt)
    (row,) = tshark_fields(p, "esp.spi", "isakmp.ispi", "ip.src", "ipv6.src")
    ours = one(data, lt)
    if isinstance(ours, EspPacket):
        assert int(row[0], 16) == ours.spi and row[3] == ours.src
    else:
        assert row[1] == ours.data[:8].hex() and row[2] == ours.src


def test_non_ip_and_other_traffic_is_none() -> None:
    dec = Decoder()
    assert one(bytes(Ether() / ARP()), dec=dec) is None
    assert one(eth(v4() / TCP(sport=1234, dport=80) / Raw(b"GET /")), dec=dec) is None
    assert one(eth(v4() / UDP(sport=53, dport=53) / Raw(b"x" * 30)), dec=dec) is None
    assert one(eth(v4(proto=47) / Raw(b"gre")), dec=dec) is None
    assert one(b"\x00" * 40, linktype=147, dec=dec) is None  # a link type we do not decode
    assert dec.stats["unsupported_linktype:147"] == 1 and dec.stats["not_ip"] == 1


# ---- IPv6 extension headers -----------------------------------------------------------------


@needs_tshark
def test_ipv6_extension_headers(tmp_path: Path) -> None:
    frames = [
        eth(v6_ext_chain() / UDP(sport=500, dport=500) / Raw(IKE)),
        eth(v6_ext_chain() / Raw(esp(ESP_SPI, 3))),
        eth(v6() / IPv6ExtHdrFragment(m=0, offset=0, id=5, nh=50) / Raw(esp(ESP_SPI, 4))),  # atomic fragment
    ]
    frames[1] = eth(_with_nh(v6_ext_chain(), 50) / Raw(esp(ESP_SPI, 3)))
    dec = Decoder()
    got = [one(f, dec=dec, index=i + 1) for i, f in enumerate(frames)]
    assert isinstance(got[0], IkeDatagram) and got[0].data == IKE and got[0].ip_version == 6
    assert isinstance(got[1], EspPacket) and (got[1].spi, got[1].seq) == (ESP_SPI, 3)
    assert isinstance(got[2], EspPacket) and got[2].seq == 4
    p = write_pcap(tmp_path / "ext.pcap", frames)
    rows = tshark_fields(p, "isakmp.ispi", "esp.sequence")
    assert rows[0][0] == IKE[:8].hex() and rows[1][1] == "3" and rows[2][1] == "4"


def _with_nh(chain, nh: int):
    """Set the last extension header's next-header (scapy leaves it 59 without a payload layer)."""
    layer = chain
    while layer.payload:
        layer = layer.payload
    layer.nh = nh
    return chain


# ---- fragment reassembly --------------------------------------------------------------------


def _big_ike() -> bytes:
    return ike_v2(spi_i=b"\xab" * 8, spi_r=b"\xcd" * 8, exch=35, msg_id=1, body_len=3000)


@needs_tshark
@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("encap", ["udp500", "natt4500"])
def test_fragmented_ike_is_reassembled_like_tshark(tmp_path: Path, version: int, encap: str) -> None:
    msg = _big_ike()
    body = msg if encap == "udp500" else b"\0\0\0\0" + msg
    port = 500 if encap == "udp500" else 4500
    if version == 4:
        pkt = IP(src="198.18.0.1", dst="198.18.0.2", id=0x1234) / UDP(sport=port, dport=port) / Raw(body)
        frags = [eth(f) for f in fragment(pkt, fragsize=1200)]
    else:
        pkt = v6() / IPv6ExtHdrFragment(id=0xBEEF) / UDP(sport=port, dport=port) / Raw(body)
        frags = [eth(f) for f in fragment6(pkt, 1280)]
    assert len(frags) >= 3
    # an unrelated ESP packet between fragments, and the fragments out of order
    frames = [frags[1], eth(v4(proto=50) / Raw(esp(ESP_SPI, 1))), frags[0], *frags[2:]]
    dec = Decoder()
    got = [(i + 1, one(f, dec=dec, index=i + 1)) for i, f in enumerate(frames)]
    ikes = [(i, p) for i, p in got if isinstance(p, IkeDatagram)]
    assert len(ikes) == 1
    frame_no, d = ikes[0]
    assert frame_no == len(frames) and d.data == msg and d.ip_fragmented and d.ip_version == version
    assert d.non_esp_marker == (encap == "natt4500")
    assert isinstance(got[1][1], EspPacket)
    assert not dec.reassembler.pending
    p = write_pcap(tmp_path / "frag.pcap", frames)
    rows = tshark_fields(p, "frame.number", "isakmp.ispi", "isakmp.length")
    with_ike = [(int(r[0]), r[1], int(r[2])) for r in rows if r[1]]
    assert with_ike == [(frame_no, msg[:8].hex(), len(msg))]


def test_fragment_duplicates_and_overlap() -> None:
    msg = _big_ike()
    pkt = IP(src="198.18.0.1", dst="198.18.0.2", id=7) / UDP(sport=500, dport=500) / Raw(msg)
    frags = [eth(f) for f in fragment(pkt, fragsize=1000)]
    dec = Decoder()
    seq = [frags[0], frags[0], *frags[1:-1], frags[1], frags[-1]]
    out = [one(f, dec=dec, index=i + 1) for i, f in enumerate(seq)]
    assert [type(x).__name__ for x in out].count("IkeDatagram") == 1
    assert isinstance(out[-1], IkeDatagram) and out[-1].data == msg


def test_reassembly_is_bounded() -> None:
    dec = Decoder(max_fragments=16, fragment_timeout=30.0)
    reported = []
    for i in range(1000):  # first fragments of 1000 datagrams that never complete
        f = bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2", id=i, flags="MF", proto=17) / Raw(b"x" * 64))
        out = dec.decode_all(RawFrame(i + 1, float(i), i * 10**9, 1, f, len(f)))
        assert all(isinstance(m, Malformed) and m.layer == "ip" and m.frame < i + 1 for m in out)
        reported += out
        assert len(dec.reassembler.pending) <= 16
    assert dec.reassembler.expired >= 1000 - 16
    reported += dec.flush()
    # every abandoned datagram is reported once, on its own first frame: nothing silently vanishes
    assert sorted(m.frame for m in reported) == list(range(1, 1001))
    assert "never completed" in reported[0].reason and "had 64 bytes in 1 fragment, the last fragment never came" in reported[0].reason
    assert dec.flush() == []


def test_fragment_timeout_reports_on_first_frame() -> None:
    dec = Decoder(fragment_timeout=30.0)
    lone = bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2", id=1, frag=100, proto=17) / Raw(b"y" * 40))
    assert dec.decode_all(RawFrame(1, 0.0, 0, 1, lone, len(lone))) == []
    later = bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2", id=2, flags="MF", proto=17) / Raw(b"z" * 40))
    out = dec.decode_all(RawFrame(2, 100.0, 0, 1, later, len(later)))
    assert len(out) == 1 and out[0].frame == 1 and "no fragment for 30 s" in out[0].reason
    assert "had 40 of 840 bytes in 1 fragment" in out[0].reason
    (m,) = dec.flush()
    assert m.frame == 2 and "capture ended" in m.reason


def test_fragment_past_64k_is_malformed() -> None:
    f = bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2", id=9, frag=8189, proto=17) / Raw(b"x" * 200))
    p = one(f)
    assert isinstance(p, Malformed) and p.layer == "ip" and "64 KiB" in p.reason


# ---- UDP 4500 (RFC 3948) --------------------------------------------------------------------


@needs_tshark
def test_udp_4500_kinds_agree_with_tshark(tmp_path: Path) -> None:
    frames = [
        eth(v4() / UDP(sport=4500, dport=4500) / Raw(b"\0\0\0\0" + IKE)),  # non-ESP marker -> IKE
        eth(v4() / UDP(sport=4500, dport=4500) / Raw(b"\xff")),  # NAT-keepalive
        eth(v4() / UDP(sport=31337, dport=4500) / Raw(esp(ESP_SPI, 9))),  # ESP, NATed source port
        eth(v4() / UDP(sport=500, dport=500) / Raw(IKE)),
    ]
    dec = Decoder()
    got = [one(f, dec=dec, index=i + 1) for i, f in enumerate(frames)]
    assert isinstance(got[0], IkeDatagram) and got[0].non_esp_marker and got[0].data == IKE
    assert isinstance(got[1], NatKeepalive) and (got[1].sport, got[1].dport) == (4500, 4500)
    assert isinstance(got[2], EspPacket) and got[2].udp_encap and got[2].sport == 31337 and got[2].transport == "udp"
    assert got[2].data == esp(ESP_SPI, 9)
    assert isinstance(got[3], IkeDatagram) and not got[3].non_esp_marker
    p = write_pcap(tmp_path / "natt.pcap", frames)
    rows = tshark_fields(p, "isakmp.ispi", "udpencap.nat_keepalive", "esp.spi", "esp.sequence")
    assert rows[0][0] == IKE[:8].hex()
    assert rows[1][1] != ""
    assert int(rows[2][2], 16) == ESP_SPI and rows[2][3] == "9"


# ---- TCP (RFC 8229) --------------------------------------------------------------------------


def _tcp(seq: int, payload: bytes = b"", flags: str = "PA", sport: int = 40000, dport: int = 4500) -> bytes:
    return eth(v4() / TCP(sport=sport, dport=dport, seq=seq, flags=flags) / Raw(payload)) if payload else eth(
        v4() / TCP(sport=sport, dport=dport, seq=seq, flags=flags))


def _rec(body: bytes) -> bytes:
    return struct.pack("!H", len(body) + 2) + body


def test_rfc8229_tcp_stream() -> None:
    ike1 = b"\0\0\0\0" + ike_v2(msg_id=0)
    ike2 = b"\0\0\0\0" + ike_v2(msg_id=1, body_len=200)
    e1, e2 = esp(ESP_SPI, 1), esp(ESP_SPI, 2)
    stream = b"IKETCP" + _rec(ike1) + _rec(ike2) + _rec(e1) + _rec(e2)
    isn = 1000
    a = 6 + len(_rec(ike1)) + 20  # split the second record across segments
    b = len(stream) - len(_rec(e2)) + 3  # e1 completes and e2 starts in the same segment
    segs = [stream[:a], stream[a:b], stream[b:]]
    frames = [_tcp(isn, flags="S")]
    off = 0
    for s in segs:
        frames.append(_tcp(isn + 1 + off, s))
        off += len(s)
    frames.insert(3, frames[2])  # a retransmission of segment 2
    dec = Decoder()
    out = []
    for i, f in enumerate(frames):
        raw = RawFrame(i + 1, float(i), i * 10**9, 1, f, len(f))
        out.append((i + 1, dec.decode_all(raw)))
    flat = [(i, p) for i, ps in out for p in ps]
    kinds = [(i, type(p).__name__) for i, p in flat]
    assert kinds == [(2, "IkeDatagram"), (3, "IkeDatagram"), (3, "EspPacket"), (5, "EspPacket")]
    assert flat[0][1].data == ike1[4:] and flat[0][1].transport == "tcp" and flat[0][1].non_esp_marker
    assert flat[1][1].data == ike2[4:]
    assert (flat[2][1].seq, flat[3][1].seq) == (1, 2) and flat[3][1].transport == "tcp"
    assert flat[3][1].data == e2


def test_rfc8229_gap_waits_then_resumes_and_mid_stream_pickup() -> None:
    """A segment past a gap waits for it (TCP reorders; RFC 9293 §3.10.7.4); once more segments
    wait than reordering explains, the gap is a lost segment: one Malformed, and the stream
    resumes at the first segment after it. A gap at the end (FIN) is reported too."""
    from ipsecscope.decode.tcpencap import MAX_TCP_EARLY

    dec = Decoder()
    rec = _rec(b"\0\0\0\0" + IKE)
    n = len(rec)
    r1 = dec.decode_all(RawFrame(1, 0.0, 0, 1, _tcp(500, rec), 0))  # no SYN seen: picked up mid-stream
    assert len(r1) == 1 and isinstance(r1[0], IkeDatagram)
    assert dec.decode_all(RawFrame(2, 0.0, 0, 1, _tcp(500 + 2 * n, rec), 0)) == []  # early: waits
    r3 = dec.decode_all(RawFrame(3, 0.0, 0, 1, _tcp(500 + n, rec), 0))  # the gap filled: both records
    assert [type(p) for p in r3] == [IkeDatagram, IkeDatagram] and {p.frame for p in r3} == {3}
    base = 500 + 4 * n  # the record at 500 + 3n is lost
    for i in range(MAX_TCP_EARLY):
        assert dec.decode_all(RawFrame(4 + i, 0.0, 0, 1, _tcp(base + i * n, rec), 0)) == []
    r = dec.decode_all(RawFrame(99, 0.0, 0, 1, _tcp(base + MAX_TCP_EARLY * n, rec), 0))
    assert isinstance(r[0], Malformed) and r[0].layer == "tcp" and f"gap of {n} bytes" in r[0].reason
    assert r[0].frame == 4  # on the first frame after the gap, as tshark's "previous segment not captured"
    # each given-up record on the frame it came in
    assert [(type(p), p.frame) for p in r[1:]] == [(IkeDatagram, 4 + i) for i in range(MAX_TCP_EARLY)] + [
        (IkeDatagram, 99)]
    assert dec.decode_all(RawFrame(100, 0.0, 0, 1, _tcp(9000, rec), 0)) == []  # another gap
    fin = dec.decode_all(RawFrame(101, 0.0, 0, 1, _tcp(9000 + n, flags="F"), 0))
    assert [(type(p), p.frame) for p in fin] == [(Malformed, 100), (IkeDatagram, 100)]
    assert "never captured" in fin[0].reason and "connection closed (FIN)" in fin[0].reason
    assert dec.decode_all(RawFrame(102, 0.0, 0, 1, _tcp(19999, flags="S"), 0)) == []  # a new connection
    r4 = dec.decode_all(RawFrame(102, 0.0, 0, 1, _tcp(20000, _rec(b"\x00\x01")), 0))
    assert isinstance(r4[0], Malformed)
    assert dec.decode_all(RawFrame(103, 0.0, 0, 1, _tcp(1, flags="F", sport=40000), 0)) == []


def _feed(dec: Decoder, frames: list[tuple[int, bytes]], ts: float = 0.0) -> list:
    return [(p.frame, type(p).__name__, getattr(p, "reason", "")) for i, f in frames
            for p in dec.decode_all(RawFrame(i, ts, 0, 1, f, len(f)))]


def _ike_rec(mid: int) -> bytes:
    return _rec(b"\0\0\0\0" + ike_v2(msg_id=mid))


def test_rfc8229_conflicting_overlap_first_copy_kept_and_resynced() -> None:
    """A copy of stream bytes with other bytes (RFC 9293 §3.10.7.4: the receiver keeps what it
    has) is counted where it overlaps; its new tail is taken (the receiver did), and when the real
    bytes come again over it, the framing across the disputed bytes is checked: the record cut by
    them is lost, the stream resyncs at the next record instead of reading garbage lengths."""
    r1, r2, r3, r4 = (_ike_rec(m) for m in (1, 2, 3, 4))
    isn = 7000
    s0 = isn + 1 + 6 + len(r1)  # where r2 starts
    bad = bytes(x ^ 0x55 for x in r1[-4:]) + b"\xff\xff\0\0\0\0"  # a rewritten copy, 6 bytes past r1
    dec = Decoder()
    got = _feed(dec, [(1, _tcp(isn, flags="S")), (2, _tcp(isn + 1, b"IKETCP" + r1)), (3, _tcp(s0 - 4, bad)),
                      (4, _tcp(s0, r2 + r3 + r4))])
    assert [g[:2] for g in got] == [(2, "IkeDatagram"), (3, "Malformed"), (4, "Malformed"), (4, "Malformed"),
                                    (4, "IkeDatagram"), (4, "IkeDatagram")]
    assert got[1][2].startswith(f"TCP segment overlaps earlier data with different bytes at stream offset {6 + len(r1) - 4};")
    assert got[2][2].startswith(f"TCP segment overlaps earlier data with different bytes at stream offset {6 + len(r1)};")
    assert got[3][2].startswith(f"RFC 8229 record framing lost at stream offset {6 + len(r1)}")
    # the same bytes again are no conflict; a copy of the same segment with other bytes is
    assert _feed(dec, [(5, _tcp(isn + 1, b"IKETCP" + r1[:-4]))]) == []
    dec = Decoder()
    assert [g[:2] for g in _feed(dec, [(1, _tcp(isn, flags="S")), (2, _tcp(isn + 1 + 6 + len(r1), r2)),
                                        (3, _tcp(isn + 1 + 6 + len(r1), r3[:len(r2)]))])] == [(3, "Malformed")]
    # the waiting copy (first) wins over the later one; then the gap fills: r1, r2 decode
    assert [g[:2] for g in _feed(dec, [(4, _tcp(isn + 1, b"IKETCP" + r1))])] == [(4, "IkeDatagram")] * 2


def test_rfc8229_connections_start_and_end() -> None:
    """RST ends both directions, FIN this one; a retransmission after FIN is no new stream; a new
    connection on the same 4-tuple (SYN) expects the "IKETCP" prefix again. A stream whose SYN was
    not captured starts at the first plausible record: the tail of one before it is skipped, ESP
    of a new SPI is taken where whole records of it follow each other."""
    r1, r2 = _ike_rec(1), _ike_rec(2)
    dec = Decoder()
    got = _feed(dec, [(1, _tcp(100, flags="S")), (2, _tcp(101, b"IKETCP" + r1)),
                      (3, _tcp(107 + len(r1), flags="FA")), (4, _tcp(101, b"IKETCP" + r1)),  # retransmitted
                      (5, _tcp(5000, flags="S")), (6, _tcp(5001, b"IKETCP" + r2)),
                      (7, _tcp(5001 + 6 + len(r2), flags="R")),  # a reset: both directions end
                      (8, _tcp(5001, b"IKETCP" + r2)),  # retransmitted after the RST: dropped
                      (9, _tcp(70000, r1))])  # far from where it ended: a new stream whose SYN was not seen
    assert [g[:2] for g in got] == [(2, "IkeDatagram"), (6, "IkeDatagram"), (9, "IkeDatagram")]
    e1, e2 = _rec(esp(ESP_SPI, 1)), _rec(esp(ESP_SPI, 2))
    dec = Decoder()
    got = _feed(dec, [(1, _tcp(300, r1[-20:] + r2)), (2, _tcp(300 + 20 + len(r2), e1 + e2))])
    assert [g[:2] for g in got] == [(1, "IkeDatagram"), (2, "EspPacket"), (2, "EspPacket")]
    dec = Decoder()
    assert [g[:2] for g in _feed(dec, [(1, _tcp(300, e1 + e2))])] == [(1, "EspPacket"), (1, "EspPacket")]


def test_rfc8229_gap_given_up_live_and_at_end() -> None:
    """A gap never filled: live, given up once its waiting segment is older than the timeout
    (Decoder.expire, as IP fragments); at the end of the capture by Decoder.flush. The records
    after it are decoded on the frames they came in, the lost bytes counted on the first of them."""
    r1, r2, r3 = _ike_rec(1), _ike_rec(2), _ike_rec(3)
    for end in ("expire", "flush"):
        dec = Decoder()
        assert _feed(dec, [(1, _tcp(100, flags="S"))]) == []
        assert _feed(dec, [(2, _tcp(101 + 6 + len(r1), r2[:10]))], ts=10.0) == []  # r1 never captured
        assert _feed(dec, [(3, _tcp(101 + 6 + len(r1) + 10, r2[10:] + r3))], ts=11.0) == []
        if end == "expire":
            assert dec.expire(14.0, 5.0) == []
            out = dec.expire(16.0, 5.0)
        else:
            out = dec.flush()
        assert [(p.frame, type(p).__name__) for p in out] == [(2, "Malformed"), (3, "IkeDatagram"), (3, "IkeDatagram")]
        assert f"gap of {6 + len(r1)} bytes at stream offset 0 (lost segment, never captured)" in out[0].reason
        assert [p.data for p in out[1:]] == [r2[6:], r3[6:]]


# ---- AH ---------------------------------------------------------------------------------------


@needs_tshark
def test_ah_v4_and_v6(tmp_path: Path) -> None:
    icv = bytes(range(12))
    ah4 = eth(v4() / AH(spi=0x1001, seq=5, icv=icv, nh=4, payloadlen=4) / IP(src="10.0.0.1", dst="10.0.0.2"))
    ah6 = eth(_with_nh(v6_ext_chain(), 51) / AH(spi=0x2002, seq=6, icv=icv, nh=41, payloadlen=4) / v6())
    dec = Decoder()
    a, b = one(ah4, dec=dec), one(ah6, dec=dec, index=2)
    assert isinstance(a, AhPacket) and (a.spi, a.seq, a.next_header, a.icv) == (0x1001, 5, 4, icv)
    assert isinstance(b, AhPacket) and (b.spi, b.seq, b.ip_version) == (0x2002, 6, 6)
    rows = tshark_fields(write_pcap(tmp_path / "ah.pcap", [ah4, ah6]), "ah.spi", "ah.sequence")
    assert [(int(r[0], 16), int(r[1])) for r in rows] == [(0x1001, 5), (0x2002, 6)]


# ---- malformed ------------------------------------------------------------------------------

IP4 = bytes(v4(proto=50) / Raw(esp(1, 1)))

MALFORMED = {
    "ethernet-truncated": (b"\x00" * 10, "link"),
    "ipv4-header-truncated": (eth(v4(proto=50))[:14 + 12], "ip"),
    "ipv4-bad-ihl": (b"\x00" * 12 + b"\x08\x00" + b"\x42" + IP4[1:], "ip"),
    "ipv6-truncated": (eth(v6())[:14 + 30], "ip"),
    "udp-length-too-small": (eth(v4() / UDP(sport=500, dport=500, len=4) / Raw(IKE)), "udp"),
    "ike-too-short": (eth(v4() / UDP(sport=500, dport=500) / Raw(IKE[:20])), "ike"),
    "esp-too-short": (eth(v4(proto=50) / Raw(b"\x01\x02\x03")), "esp"),
    "udp-esp-too-short": (eth(v4() / UDP(sport=4500, dport=4500) / Raw(b"\x01\x02\x03")), "esp"),
    "natt-ike-too-short": (eth(v4() / UDP(sport=4500, dport=4500) / Raw(b"\0\0\0\0" + IKE[:10])), "ike"),
    "ah-bad-length": (eth(v4(proto=51) / Raw(b"\x04\x09" + b"\0" * 14)), "ah"),
    "ah-truncated": (eth(v4(proto=51) / Raw(b"\x04\x04\0\0")), "ah"),
    "ipv6-ext-truncated": (eth(v6(nh=0) / Raw(b"\x32\x05\0\0")), "ip"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_gives_reason_and_layer(name: str) -> None:
    data, layer = MALFORMED[name]
    p = one(data)
    assert isinstance(p, Malformed), p
    assert p.layer == layer and p.reason and "\n" not in p.reason


def test_ip_length_past_the_frame_read_and_marked() -> None:
    """An IPv4 total length / IPv6 payload length past the frame's end (the frame was not cut by the
    snap length): the packet is read from what is there, as tshark does, and marked malformed beside
    it (decode.ip.runs_past_frame); a first fragment so cut stays refused (not reassembled)."""
    long4 = b"\x00" * 12 + b"\x08\x00" + IP4[:2] + b"\x0f\xff" + IP4[4:]
    long6 = bytearray(eth(v6(nh=50) / Raw(esp(2, 3))))
    long6[14 + 4:14 + 6] = b"\x05\xdc"
    frag = bytearray(long4)
    frag[14 + 6] = 0x20  # MF
    for data, ver in ((long4, 4), (bytes(long6), 6)):
        raw = RawFrame(1, 1.0, 1_000_000_000, 1, data, len(data))
        pkt, mark = Decoder().decode_all(raw)
        assert isinstance(pkt, EspPacket) and pkt.data == data[14 + (20 if ver == 4 else 40):]
        assert isinstance(mark, Malformed) and mark.layer == "ip" and "exceeds" in mark.reason
        assert (mark.src, mark.ip_proto) == (pkt.src, 50)
        assert Decoder().decode(raw) is not None and isinstance(Decoder().decode(raw), EspPacket)  # decrypt's pick
    p = one(bytes(frag))
    assert isinstance(p, Malformed) and p.layer == "ip" and "exceeds" in p.reason


@needs_tshark
def test_snaplen_cut_fragments_read_as_tshark_does(tmp_path: Path) -> None:
    """Fragments the snap length cut are never reassembled (tshark reassembles only whole ones);
    the first is read for its UDP and IKE headers as tshark dissects it, a later one is not."""
    big = v4() / UDP(sport=500, dport=500) / Raw(IKE + bytes(2000))
    frags = [bytes(eth(f)) for f in fragment(big, fragsize=1000)]
    dec = Decoder()
    out = [dec.decode_all(RawFrame(i, 1.0, 0, 1, f[:120], len(f))) for i, f in enumerate(frags, 1)]
    assert isinstance(out[0][0], IkeDatagram) and out[0][0].data[:28] == IKE[:28] and out[0][0].ip_fragmented
    assert out[1:] == [[], []] and len(frags[2]) < 120  # (the last one was captured whole: held)
    assert dec.stats["ip_fragment_cut"] == 1 and dec.stats["ip_fragment_pending"] == 1
    assert [(m.frame, m.layer) for m in dec.flush()] == [(3, "ip")]  # a datagram it alone cannot complete
    cap = tmp_path / "cut.pcap"  # pcap with snap length 120, each record's original length kept
    cap.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 120, 1) + b"".join(
        struct.pack("<IIII", 1, 0, len(f[:120]), len(f)) + f[:120] for f in frags))
    assert tshark_fields(cap, "isakmp.ispi") == [[IKE[:8].hex()], [""], [""]]


def test_snaplen_truncated_esp_still_counts() -> None:
    full = eth(v4(proto=50) / Raw(esp(ESP_SPI, 77, 400)))
    p = Decoder().decode(RawFrame(1, 0.0, 0, 1, full[:96], len(full)))
    assert isinstance(p, EspPacket) and (p.spi, p.seq) == (ESP_SPI, 77)


def test_undeclared_interface_is_capture_malformed() -> None:
    p = Decoder().decode(RawFrame(1, 0.0, 0, -1, b"x", 1, iface=4))
    assert isinstance(p, Malformed) and p.layer == "capture"


@needs_tshark
def test_ipv4_options(tmp_path: Path) -> None:
    from scapy.layers.inet import IPOption_Router_Alert, IPOption_RR

    frames = [
        eth(v4(proto=50, options=[IPOption_Router_Alert()]) / Raw(esp(ESP_SPI, 11))),
        eth(v4(options=[IPOption_RR(routers=["10.0.0.1", "10.0.0.2"])]) / UDP(sport=500, dport=500) / Raw(IKE)),
    ]
    dec = Decoder()
    a, b = one(frames[0], dec=dec), one(frames[1], dec=dec, index=2)
    assert isinstance(a, EspPacket) and a.seq == 11 and a.data == esp(ESP_SPI, 11)
    assert isinstance(b, IkeDatagram) and b.data == IKE
    rows = tshark_fields(write_pcap(tmp_path / "opt.pcap", frames), "ip.hdr_len", "esp.sequence", "isakmp.ispi")
    assert rows[0][0] == "24" and rows[0][1] == "11" and rows[1][2] == IKE[:8].hex()


# ---- UDP 500 beside another well-known service's port ------------------------------------------

DNS_TO_500 = public("tcpdump/dns-badlabel.pcap")  # third-party: tests/public_data.py
LOW_PORT_IKE = public("tcpdump/isakmp-identification-segfault.pcap")  # IKEv1, UDP 501 -> 500


def _frames(path: Path) -> list[RawFrame]:
    with open_capture(path) as r:
        return list(r)


def _with_sport(raw: RawFrame, port: int) -> RawFrame:
    """The frame with its UDP source port rewritten (IPv4 without options: UDP at the link header
    plus 20); the UDP checksum is not read by the decoder."""
    ip = 14 if raw.linktype == 1 else 0 if raw.linktype in (101, 228) else 4  # Ethernet, raw IP, null
    data = bytearray(raw.data)
    struct.pack_into("!H", data, ip + 20, port)
    return RawFrame(raw.index, raw.ts, raw.orig_len, raw.linktype, bytes(data), raw.orig_len)


@pytest.mark.parametrize("port", [53, 123, 1023])
def test_no_ike_header_from_a_service_port_is_that_service(port):
    """A DNS reply 53 -> 500 (tcpdump's dns-badlabel.pcap) has no IKE header (major version 0):
    from any well-known port (1-1023) it is that service's datagram, counted as other UDP."""
    (raw,) = _frames(DNS_TO_500)
    dec = Decoder()
    assert dec.decode_all(_with_sport(raw, port)) == []
    assert dec.stats["other_udp"] == 1


@pytest.mark.parametrize("port", [0, 1024, 4500, 55044])
def test_no_ike_header_from_another_port_stays_malformed_ike(port):
    """The same bytes from a port that names no service (0, or 1024 and up: a NAT's) or from
    4500 are still a malformed IKE (or ESP) datagram: counted, visible, not dropped."""
    (raw,) = _frames(DNS_TO_500)
    (pkt,) = Decoder().decode_all(_with_sport(raw, port))
    assert isinstance(pkt, (IkeDatagram, EspPacket, Malformed))


@pytest.mark.parametrize("port", [53, 501, 55044])
def test_an_ike_header_from_any_port_is_ike(port):
    """A real IKEv1 message (RFC 2408 §3.1 header, major version 1) from port 501, 53 or a NAT's
    high port (RFC 7296 §2.23) is IKE: the service-port rule is only for datagrams with no IKE
    header."""
    raw = _frames(LOW_PORT_IKE)[0]
    (pkt,) = Decoder().decode_all(_with_sport(raw, port))
    assert isinstance(pkt, IkeDatagram) and pkt.sport == port


def _icmp_quoting(raw: RawFrame) -> RawFrame:
    """An ICMP port unreachable (RFC 792) quoting the IPv4 datagram of ``raw`` (its header and 64
    octets after it), from the datagram's destination back to its source."""
    off = 14 if raw.linktype == 1 else 4
    quoted = raw.data[off:off + 20 + 72]
    err = Ether() / IP(src=_dotted(quoted[16:20]), dst=_dotted(quoted[12:16])) / ICMP(type=3, code=3) / Raw(quoted)
    data = bytes(err)
    return RawFrame(1, 1.0, len(data), 1, data, len(data))


def _dotted(b: bytes) -> str:
    return ".".join(str(x) for x in b)


def test_an_icmp_error_quoting_a_service_datagram_to_500_is_no_ike_error():
    """The quoted datagram is read by the same rule (tshark dissects the quote as DNS too): an ICMP
    error quoting the DNS reply 53 -> 500 is no IKE error, one quoting real IKE from port 501 is."""
    dec = Decoder(icmp_errors=True)
    assert dec.decode_all(_icmp_quoting(_frames(DNS_TO_500)[0])) == []
    (err,) = Decoder(icmp_errors=True).decode_all(_icmp_quoting(_frames(LOW_PORT_IKE)[0]))
    assert (err.protocol, err.sport, err.dport) == ("IKE", 501, 500)


@needs_tshark
def test_a_quoted_service_datagram_to_500_is_not_isakmp_for_filters(tmp_path):
    """`-Y isakmp` matches no ICMP error quoting the DNS reply 53 -> 500 (tshark dissects that
    quote as DNS); an error quoting real IKE from port 501 matches it in both."""
    cap = write_pcap(tmp_path / "q.pcap", [_icmp_quoting(_frames(DNS_TO_500)[0]).data,
                                           _icmp_quoting(_frames(LOW_PORT_IKE)[0]).data])
    theirs = [int(r[0]) for r in tshark_fields(cap, "frame.number", extra=("-Y", "isakmp"))]
    r = subprocess.run([sys.executable, "-m", "ipsecscope", "packets", "-Y", "isakmp", "--json", str(cap)],
                       capture_output=True, text=True, timeout=120)
    ours = [json.loads(line)["frame"] for line in r.stdout.splitlines()]
    assert ours == theirs == [2]
