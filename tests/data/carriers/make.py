"""Writes the captures of this folder from the project's own sample (run from the repository root:
``.venv/bin/python tests/data/carriers/make.py``): every IP packet of samples/healthy-gcm (IKEv2
INIT/AUTH, ESP in UDP 4500, rekeys, Informational) carried by another link, as README.md lists.
Bytes of the IP packets are unchanged; only what is in front of them differs."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "samples" / "synthetic"))

from espgen import PcapWriter  # noqa: E402

from ipsecscope.capture import open_capture  # noqa: E402

MACS = bytes.fromhex("020000000002" "020000000001")


def mpls(label: int, bottom: bool) -> bytes:
    return struct.pack("!I", label << 12 | bottom << 8 | 64)  # RFC 3032 §2.1: label, TC 0, S, TTL


WRAP = {  # name -> (link type, bytes before the IP packet)
    # two labels (an L3VPN: transport label, then the VPN label)
    "mpls-l3vpn.pcap": (1, MACS + b"\x88\x47" + mpls(16, False) + mpls(17, True)),
    # an Ethernet pseudowire (RFC 4448) with its control word, the customer frame inside
    # (the sample's own Ethernet frame follows: see main)
    "mpls-ethernet-pw.pcap": (1, MACS + b"\x88\x47" + mpls(18, True) + b"\0\0\0\0"),
    # PPPoE session (RFC 2516 §5.3), session 0x0001, then PPP protocol 0x0021 (IPv4); the length
    # field is filled per packet below
    "pppoe.pcap": (1, MACS + b"\x88\x64" + b"\x11\x00\x00\x01"),
    # LINKTYPE_PPP with the HDLC-like address/control octets (RFC 1662 §3.1)
    "ppp.pcap": (9, b"\xff\x03\x00\x21"),
    # LINKTYPE_C_HDLC (Cisco HDLC, a router's serial link): address 0x0f (unicast), control 0, then
    # an Ethertype (0x0800)
    "chdlc.pcap": (104, b"\x0f\x00\x08\x00"),
    # LINKTYPE_FRELAY: Q.922 address of DLCI 100 (2 octets, EA set in the second), UI control 0x03,
    # NLPID 0xcc (IPv4) as RFC 2427 §3 routes IP over Frame Relay
    "frame-relay.pcap": (107, bytes(((100 >> 4) << 2, ((100 & 0xF) << 4) | 1, 0x03, 0xCC))),
    # Linux cooked capture (SLL) of an MPLS interface
    "sll-mpls.pcap": (113, b"\x00\x00\x00\x01\x00\x06" + bytes.fromhex("020000000001") + b"\0\0\x88\x47"
                      + mpls(16, True)),
}


def nflog(ip: bytes) -> bytes:
    """LINKTYPE_NFLOG as a little-endian Linux host writes it: AF_INET, version 0, group 50; TLVs
    NFULA_PACKET_HDR (1), NFULA_PREFIX (10), NFULA_PAYLOAD (9), each padded to 4 octets."""
    def tlv(t: int, v: bytes) -> bytes:
        return struct.pack("<HH", 4 + len(v), t) + v + b"\0" * (-(4 + len(v)) % 4)
    return b"\x02\x00" + struct.pack("!H", 50) + tlv(1, b"\x08\x00\x03\x00") + tlv(10, b"vpn\0") + tlv(9, ip)


PFLOG = bytes((61, 2, 0, 0)) + b"em0".ljust(16, b"\0") + bytes(41) + bytes(3)  # pfloghdr (61) + word alignment


def main() -> None:
    with open_capture(ROOT / "samples" / "healthy-gcm" / "capture.pcapng") as r:
        frames = [(f.ts_ns, bytes(f.data)) for f in r]
    with PcapWriter(HERE / "nflog.pcap", 239) as w:
        for ts, eth in frames:
            w.write(ts, nflog(eth[14:]))
    with PcapWriter(HERE / "pflog.pcap", 117) as w:
        for ts, eth in frames:
            w.write(ts, PFLOG + eth[14:])
    for name, (lt, head) in WRAP.items():
        with PcapWriter(HERE / name, lt) as w:
            for ts, eth in frames:
                ip = eth if name == "mpls-ethernet-pw.pcap" else eth[14:]
                if name == "pppoe.pcap":
                    w.write(ts, head + struct.pack("!H", len(ip) + 2) + b"\x00\x21" + ip)
                else:
                    w.write(ts, head + ip)


if __name__ == "__main__":
    main()
