"""Writes the captures of this folder from the project's own sample (run from the repository root:
``.venv/bin/python tests/data/tunnels/make.py``): every frame of samples/healthy-gcm (IKEv2,
ESP in UDP 4500) inside a tunnel between 198.51.100.1 and 198.51.100.2 (2001:db8::a and ::b for
IPv6), as README.md lists. The sample's IP packets (or whole Ethernet frames, where the tunnel
carries Ethernet) are unchanged. ``plain-inside.pcap``: traffic that is no IPsec (ICMP, DNS over
UDP, a TCP SYN, ICMPv6, ARP) between hosts inside each of those tunnels (``plain_frames``).
``frag-inside.pcap``: IP fragments inside the tunnels, waiting for reassembly and completing it
(``frag_frames``). ``icmp-quoted-inside.pcap`` and ``ah-quoted-inside.pcap``: the ICMP errors
quoting ESP of samples/synthetic/icmp-quoted and quoting AH of tests/data/ah/ah-quoted, every frame
inside a tunnel (``quoted_frames``)."""

from __future__ import annotations

import socket
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "samples" / "synthetic"))

from espgen import PcapWriter  # noqa: E402

from ipsecscope.capture import open_capture  # noqa: E402

MACS = bytes.fromhex("020000000b02" "020000000b01")
A4, B4 = socket.inet_aton("198.51.100.1"), socket.inet_aton("198.51.100.2")
A6, B6 = socket.inet_pton(socket.AF_INET6, "2001:db8::a"), socket.inet_pton(socket.AF_INET6, "2001:db8::b")


def csum(data: bytes) -> int:
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def outer4(proto: int, payload: bytes, ident: int) -> bytes:
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0, A4, B4))
    h[10:12] = struct.pack("!H", csum(bytes(h)))
    return MACS + b"\x08\x00" + bytes(h) + payload


def outer6(nh: int, payload: bytes) -> bytes:
    return MACS + b"\x86\xdd" + struct.pack("!IHBB", 6 << 28, len(payload), nh, 64) + A6 + B6 + payload


def gre(ptype: int, payload: bytes, key: int | None = None, seq: int | None = None) -> bytes:
    flags = (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    return (struct.pack("!HH", flags, ptype) + (struct.pack("!I", key) if key is not None else b"")
            + (struct.pack("!I", seq) if seq is not None else b"") + payload)


def erspan2(session: int, index: int) -> bytes:
    # version 1 (type II), VLAN 0, COS 0, En 0, T 0, session id; reserved, index (8 octets)
    return struct.pack("!HHI", 0x1000, session & 0x3FF, index & 0xFFFFF)


def udp_tunnel(dport: int, head: bytes, eth: bytes, i: int) -> bytes:
    """VXLAN (RFC 7348) or Geneve (RFC 8926) around an Ethernet frame; UDP checksum 0 (IPv4)."""
    body = head + eth
    return outer4(17, struct.pack("!HHHH", 49152 + i, dport, 8 + len(body), 0) + body, i)


def gtpu(ip: bytes, i: int, teid: int, ext: bytes = b"") -> bytes:
    """A G-PDU (3GPP TS 29.281 §5.1) from 2152 to 2152 around the sample's IP packet. With ``ext``
    (extension headers, the first one's type in front): flags E and S, a sequence number."""
    if ext:
        body = struct.pack("!HBB", i, 0, ext[0]) + ext[1:] + ip
        head = struct.pack("!BBHI", 0x36, 0xFF, len(body), teid)
    else:
        body = ip
        head = struct.pack("!BBHI", 0x30, 0xFF, len(body), teid)
    body = head + body
    return outer4(17, struct.pack("!HHHH", 2152, 2152, 8 + len(body), 0) + body, i)


# 5G N3 (TS 38.415 §5.5.2): a PDU Session Container (type 0x85), 4 octets: length 1, PDU type 1
# (uplink) and QFI 9, then no further header
PDU_SESSION_UL = bytes((0x85, 1, 0x10, 9, 0))


# hosts inside the tunnels (plain-inside.pcap): a site's client and server, IPv4 and IPv6
IN4 = ("10.1.0.5", "10.2.0.7")
IN6 = ("fd00:1::5", "fd00:2::7")
ARP_MAC = "02:00:00:00:0c:05"  # 10.1.0.5's: its ARP request is broadcast (not the tunnel's MACs)


def plain_packets() -> list[tuple[int, bytes]]:
    """(IP version or 0 for ARP, bytes from the IP header on) of traffic that is no IPsec:
    an ICMP echo and its reply, a DNS query, a TCP SYN, an ICMPv6 echo, UDP over IPv6, ARP."""
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    from scapy.layers.l2 import ARP

    a, b = IN4
    a6, b6 = IN6
    return [
        (4, bytes(IP(src=a, dst=b, id=1) / ICMP(type=8, id=7, seq=1) / b"ping")),
        (4, bytes(IP(src=b, dst=a, id=2) / ICMP(type=0, id=7, seq=1) / b"ping")),
        (4, bytes(IP(src=a, dst=b, id=3) / UDP(sport=40000, dport=53) / DNS(id=9, qd=DNSQR(qname="vpn.example")))),
        (4, bytes(IP(src=a, dst=b, id=4) / TCP(sport=40001, dport=443, flags="S", seq=1000))),
        (6, bytes(IPv6(src=a6, dst=b6) / ICMPv6EchoRequest(id=7, seq=1, data=b"ping6"))),
        (6, bytes(IPv6(src=b6, dst=a6) / UDP(sport=40003, dport=40002) / b"answer")),
        (0, bytes(ARP(op=1, hwsrc=ARP_MAC, psrc=a, pdst=b))),
    ]


def plain_wrap(kind: str, ver: int, pkt: bytes, i: int, eth: bytes = b"") -> bytes:
    """``pkt`` (IP version ``ver``, 0: ARP) inside the tunnel ``kind``, frame number ``i``; the
    Ethernet tunnels carry ``eth`` when given (the Ethernet frame of ``pkt``)."""
    ptype = 0x0800 if ver == 4 else 0x86DD
    if not eth:
        eth = (MACS + (b"\x08\x00" if ver == 4 else b"\x86\xdd") if ver else
               b"\xff" * 6 + bytes.fromhex(ARP_MAC.replace(":", "")) + b"\x08\x06") + pkt
    if kind == "gre-key":
        return outer4(47, gre(ptype, pkt, key=7), i)
    if kind == "ipip":  # IPv4 in IPv4 (4), IPv6 in IPv4 (41, RFC 4213)
        return outer4(4 if ver == 4 else 41, pkt, i)
    if kind == "in-ipv6":  # IPv4 in IPv6 (4), IPv6 in IPv6 (41, RFC 2473)
        return outer6(4 if ver == 4 else 41, pkt)
    if kind == "gtpu":
        return gtpu(pkt, i, 0x1000)
    if kind == "gtpu-5g-n3":
        return gtpu(pkt, i, 0x2000, PDU_SESSION_UL)
    if kind == "erspan2":
        return outer4(47, gre(0x88BE, erspan2(5, i) + eth, seq=i), i)
    if kind == "gre-ethernet":
        return outer4(47, gre(0x6558, eth), i)
    if kind == "vxlan":
        return udp_tunnel(4789, struct.pack("!II", 0x08000000, 7 << 8), eth, i)
    assert kind == "geneve"
    return udp_tunnel(6081, struct.pack("!HHI", 0, 0x6558, 7 << 8), eth, i)


IP_TUNNELS = ("gre-key", "ipip", "in-ipv6", "gtpu", "gtpu-5g-n3")  # IP packets only
ETHERNET_TUNNELS = ("erspan2", "gre-ethernet", "vxlan", "geneve")  # ARP too


def plain_frames() -> list[bytes]:
    """Each of plain_packets inside each tunnel kind the IPsec captures use (where the tunnel can
    carry it: GRE, IP in IP and GTP-U carry IP, the Ethernet ones ARP too), then one ICMP echo
    inside IP in IP inside GRE (two tunnels)."""
    out: list[bytes] = []
    for ver, pkt in plain_packets():
        for kind in (IP_TUNNELS if ver else ()) + ETHERNET_TUNNELS:
            out.append(plain_wrap(kind, ver, pkt, len(out) + 1))
    ping = plain_packets()[0][1]
    out.append(outer4(47, gre(0x0800, outer4(4, ping, 99)[14:]), 100))
    return out


def fragments(pkt, size: int) -> list[bytes]:
    """``pkt`` (a scapy IPv4 packet, or IPv6 with a Fragment header) cut into fragments of
    ``size`` octets of payload (scapy's fragment / fragment6: RFC 791 §3.2, RFC 8200 §4.5)."""
    from scapy.layers.inet import IP, fragment
    from scapy.layers.inet6 import fragment6

    if isinstance(pkt, IP):
        return [bytes(f) for f in fragment(pkt, fragsize=size)]
    return [bytes(f) for f in fragment6(pkt, size + 48)]


def frag_frames() -> list[bytes]:
    """IP fragments inside tunnels (frag-inside.pcap): an ICMP echo of 120 octets in three IPv4
    fragments inside GRE, IP in IP, VXLAN and Geneve (in order; the VXLAN one last fragment first);
    a UDP datagram over IPv6 in two fragments inside IPv6 in IPv6 and GRE-bridged Ethernet; a
    first fragment whose rest never comes (GRE; IP IDs differ); and the sample's ESP packets 5 and 7 (UDP 4500) in
    two fragments inside GRE and VXLAN (IPsec: the datagram reassembled is ESP); then a VXLAN
    packet carrying ESP packet 9, and a GRE packet carrying a ping, fragmented outside the tunnel."""
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment

    a, b = IN4
    a6, b6 = IN6
    def ping(ident: int):
        return IP(src=a, dst=b, id=ident) / ICMP(type=8, id=9, seq=ident) / (b"frag" * 30)

    udp6 = IPv6(src=a6, dst=b6) / IPv6ExtHdrFragment(id=0x77) / UDP(sport=40005, dport=40006) / (b"six!" * 30)
    lost = IP(src=b, dst=a, id=0x5F) / ICMP(type=8, id=9, seq=4) / (b"lost" * 30)
    with open_capture(ROOT / "samples" / "healthy-gcm" / "capture.pcapng") as r:
        sample = {f.index: bytes(f.data) for f in r}
    esp9 = sample[9]
    esp = [IP(sample[i][14:]) for i in (5, 7)]
    for k, e in enumerate(esp):  # IP IDs of their own
        e.id, e.chksum = 0x61 + k, None
    out: list[bytes] = []

    def add(kind: str, ver: int, pkts: list[bytes]) -> None:
        for pkt in pkts:
            out.append(plain_wrap(kind, ver, pkt, len(out) + 1))

    for k, kind in enumerate(("gre-key", "ipip", "geneve")):
        add(kind, 4, fragments(ping(0x51 + k), 48))
    add("vxlan", 4, fragments(ping(0x54), 48)[::-1])
    for kind in ("in-ipv6", "gre-ethernet"):
        add(kind, 6, fragments(udp6, 64))
    add("gre-key", 4, fragments(lost, 48)[:1])
    for kind, e in zip(("gre-key", "vxlan"), esp, strict=True):
        add(kind, 4, fragments(e, 64))
    # the tunnel's own packet fragmented (a path MTU below the tunnel's): the sample's ESP packet 9
    # in VXLAN, a ping in GRE, each outer datagram in two fragments
    whole = [plain_wrap("vxlan", 4, esp9[14:], 0, esp9), plain_wrap("gre-key", 4, bytes(ping(0x55)), 0)]
    for k, frame in enumerate(whole):
        outer = IP(frame[14:])
        outer.id, outer.flags, outer.chksum = 0x71 + k, 0, None
        for f in fragments(outer, 96):
            out.append(MACS + b"\x08\x00" + f)
    return out


QUOTED_TUNNELS = ("gre-ethernet", "vxlan", "geneve", "erspan2", "ipip", "gre-key")


def quoted_frames(path: Path) -> list[tuple[int, bytes]]:
    """Each frame of ``path`` (Ethernet) inside a tunnel, the kinds of QUOTED_TUNNELS in turn (the
    IP ones carry its IP packet)."""
    out = []
    with open_capture(path) as r:
        for i, f in enumerate(r):
            eth = bytes(f.data)
            kind = QUOTED_TUNNELS[i % len(QUOTED_TUNNELS)]
            ver = 4 if eth[12:14] == b"\x08\x00" else 6
            out.append((f.ts_ns, plain_wrap(kind, ver, eth[14:], i + 1, eth)))
    return out


def main() -> None:
    with open_capture(ROOT / "samples" / "healthy-gcm" / "capture.pcapng") as r:
        frames = [(f.ts_ns, bytes(f.data)) for f in r]
    wraps = {
        "gre-key.pcap": lambda i, eth: outer4(47, gre(0x0800, eth[14:], key=7), i),  # RFC 2890 key
        "ipip.pcap": lambda i, eth: outer4(4, eth[14:], i),  # RFC 2003
        "ipv4-in-ipv6.pcap": lambda i, eth: outer6(4, eth[14:]),  # RFC 2473 / DS-Lite (RFC 6333)
        "erspan2.pcap": lambda i, eth: outer4(47, gre(0x88BE, erspan2(5, i) + eth, seq=i), i),
        "gre-ethernet.pcap": lambda i, eth: outer4(47, gre(0x6558, eth), i),  # transparent bridging
        # VXLAN with VNI 7 (flags: I), as cloud traffic mirroring sends it
        "vxlan.pcap": lambda i, eth: udp_tunnel(4789, struct.pack("!II", 0x08000000, 7 << 8), eth, i),
        # Geneve, no options, protocol 0x6558 (Ethernet), VNI 7
        "geneve.pcap": lambda i, eth: udp_tunnel(6081, struct.pack("!HHI", 0, 0x6558, 7 << 8), eth, i),
        # the mobile backhaul: LTE S1-U (plain G-PDU) and 5G N3 (PDU Session Container)
        "gtpu.pcap": lambda i, eth: gtpu(eth[14:], i, 0x1000 + i % 2),
        "gtpu-5g-n3.pcap": lambda i, eth: gtpu(eth[14:], i, 0x2000, PDU_SESSION_UL),
    }
    for name, wrap in wraps.items():
        with PcapWriter(HERE / name) as w:
            for i, (ts, eth) in enumerate(frames):
                w.write(ts, wrap(i, eth))
    t0 = frames[0][0]
    with PcapWriter(HERE / "plain-inside.pcap") as w:
        for i, frame in enumerate(plain_frames()):
            w.write(t0 + i * 1_000_000, frame)
    with PcapWriter(HERE / "frag-inside.pcap") as w:
        for i, frame in enumerate(frag_frames()):
            w.write(t0 + i * 1_000_000, frame)
    for name, src in (("icmp-quoted-inside.pcap", ROOT / "samples" / "synthetic" / "icmp-quoted.pcap"),
                      ("ah-quoted-inside.pcap", HERE.parent / "ah" / "ah-quoted.pcap")):
        with PcapWriter(HERE / name) as w:
            for ts, frame in quoted_frames(src):
                w.write(ts, frame)


if __name__ == "__main__":
    main()
