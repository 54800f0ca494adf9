"""Build ``malformed.pcap``: one valid capture whose frames are each broken in a way a network
engineer meets (bad IKE lengths, runt ESP, odd UDP-4500 payloads, bad IP headers, a fragment that
never completes). Scapy builds the frames; the expected outcome of every frame is in EXPECTED so
tests can check each one is counted, never skipped. Called by make_bad.py."""

from __future__ import annotations

import struct
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

A, B = "198.18.0.1", "198.18.0.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
SPI_I = bytes.fromhex("0102030405060708")


def ike_header(next_payload: int, length: int, exchange: int = 34, flags: int = 0x08) -> bytes:
    # RFC 7296 §3.1: SPIi, SPIr, next payload, version 2.0, exchange, flags, message ID, length.
    return SPI_I + bytes(8) + struct.pack("!BBBBII", next_payload, 0x20, exchange, flags, 0, length)


def eth(p) -> Ether:
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / p


def frames() -> list[tuple[str, bytes, str]]:
    """(name, frame bytes, expected layer of the malformed mark or the packet kind)."""
    out: list[tuple[str, bytes, str]] = []
    # 1. IKE: the SA payload header says 200 bytes, 8 are there.
    sa = struct.pack("!BBH", 0, 0, 200) + b"\x00" * 4
    msg = ike_header(33, 28 + len(sa)) + sa
    out.append(("ike-payload-past-end", bytes(eth(IP(src=A, dst=B) / UDP(sport=500, dport=500) / Raw(msg))), "ike"))
    # 2. IKE header length 1000 on a 36-byte message.
    msg = ike_header(0, 1000) + bytes(8)
    out.append(("ike-header-length-lies", bytes(eth(IP(src=A, dst=B) / UDP(sport=500, dport=500) / Raw(msg))), "ike"))
    # 3. IKE header length 10 (shorter than the header itself).
    msg = ike_header(0, 10)
    out.append(("ike-header-length-short", bytes(eth(IP(src=B, dst=A) / UDP(sport=500, dport=500) / Raw(msg))), "ike"))
    # 4. ESP (IP proto 50) with 5 bytes: no room for SPI + sequence number.
    out.append(("esp-runt", bytes(eth(IP(src=A, dst=B, proto=50) / Raw(b"\x00\x00\x10\x01\x00"))), "esp"))
    # 5-7. UDP 4500 with 1, 2, 3 bytes (none is the 0xFF keepalive).
    for n in (1, 2, 3):
        out.append((f"udp4500-{n}-bytes",
                    bytes(eth(IP(src=A, dst=B) / UDP(sport=4500, dport=4500) / Raw(b"\x00" * n))), "esp"))
    # 8. A real NAT keepalive (RFC 3948 §2.3): must be counted as one, not as malformed.
    out.append(("nat-keepalive", bytes(eth(IP(src=A, dst=B) / UDP(sport=4500, dport=4500) / Raw(b"\xff"))),
                "keepalive"))
    # 9. IPv4 with IHL 3 (12 bytes: less than the 20-byte minimum).
    ip = bytearray(bytes(IP(src=A, dst=B, proto=50) / Raw(bytes(16))))
    ip[0] = 0x43
    out.append(("ipv4-bad-ihl", bytes(eth(Raw(bytes(ip)))) , "ip"))
    # Scapy's Ether(Raw) has no type; set 0x0800 by hand.
    f = bytearray(out[-1][1])
    f[12:14] = b"\x08\x00"
    out[-1] = (out[-1][0], bytes(f), "ip")
    # 10. IPv6 whose hop-by-hop header says another hop-by-hop follows, many times: a chain that
    # only ends in the truncation (RFC 8200 §4.1 allows hop-by-hop only first).
    hbh = IPv6ExtHdrHopByHop(nh=0)
    pkt = IPv6(src=A6, dst=B6, nh=0) / hbh / hbh / hbh / hbh / IPv6ExtHdrHopByHop(nh=0)
    out.append(("ipv6-hbh-loop", bytes(eth(pkt)), "ip"))
    # 11. IPv6 destination-options header claiming 2040 bytes, frame has 8.
    raw6 = bytearray(bytes(IPv6(src=A6, dst=B6, nh=60) / IPv6ExtHdrDestOpt(nh=50)))
    raw6[40 + 1] = 254  # Hdr Ext Len: (254 + 1) * 8 bytes
    out.append(("ipv6-ext-truncated", bytes(eth(Raw(bytes(raw6)))), "ip"))
    f = bytearray(out[-1][1])
    f[12:14] = b"\x86\xdd"
    out[-1] = (out[-1][0], bytes(f), "ip")
    # 12. First fragment of an IKE datagram (MF=1, offset 0); the rest never arrives.
    big = IP(src=A, dst=B, id=0x4242) / UDP(sport=500, dport=500) / Raw(ike_header(0, 28 + 1400) + bytes(1400))
    first = bytes(big)[:20 + 1000]
    fr = IP(first)
    fr.flags = "MF"
    fr.len = len(first)
    fr.chksum = None
    out.append(("ip-fragment-never-completes", bytes(eth(IP(bytes(fr)))), "ip"))
    # 13. IKE on 4500 after the non-ESP marker with 5 bytes of header.
    out.append(("ike-natt-runt", bytes(eth(IP(src=A, dst=B) / UDP(sport=4500, dport=4500) / Raw(bytes(4) + b"abcde"))),
                "ike"))
    # 14. IPv4 total length 2000 on a 60-byte packet (not a snaplen cut: orig_len == caplen).
    ip = bytearray(bytes(IP(src=A, dst=B) / UDP(sport=500, dport=500) / Raw(ike_header(0, 28))))
    ip[2:4] = struct.pack("!H", 2000)
    f = bytearray(bytes(eth(Raw(bytes(ip)))))
    f[12:14] = b"\x08\x00"
    out.append(("ipv4-total-length-lies", bytes(f), "ip"))
    return out


EXPECTED_NAMES = [n for n, _f, _k in frames()]


def main(here: Path) -> None:
    fs = frames()
    pkts = [Ether(f) for _n, f, _k in fs]
    for i, p in enumerate(pkts):
        p.time = 1700000000 + i
    wrpcap(str(here / "malformed.pcap"), pkts)
    (here / "malformed.expected.txt").write_text(
        "".join(f"{i}\t{n}\t{k}\n" for i, (n, _f, k) in enumerate(fs, 1)))


if __name__ == "__main__":
    main(Path(__file__).resolve().parent)
