"""Writes the captures of this folder from the project's own sample (run from the repository root:
``.venv/bin/python tests/data/tunnels/make.py``): every frame of samples/healthy-gcm (IKEv2,
ESP in UDP 4500) inside a tunnel between 198.51.100.1 and 198.51.100.2 (2001:db8::a and ::b for
IPv6), as README.md lists. The sample's IP packets (or whole Ethernet frames, where the tunnel
carries Ethernet) are unchanged."""

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


if __name__ == "__main__":
    main()
