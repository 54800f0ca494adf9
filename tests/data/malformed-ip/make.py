"""Build ``malformed-ip.pcap``: IP, ESP and AH headers broken the ways tshark 4.0 still dissects,
so tests can hold ipsecscope's rows and filter fields to tshark's on them (tests/
test_display_filter_fields.py) and check every such frame is counted malformed (tests/
test_malformed_ip.py). Run from the repository root: ``python3 tests/data/malformed-ip/make.py``
(deterministic: fixed addresses, IDs and timestamps).

Frames (RFC sections: what each breaks):
 1. IPv4 total length 2000 on a 64-byte packet (RFC 791 §3.1), UDP 500, a whole 28-byte IKE header
 2. the same, carrying ESP in IP (protocol 50) with 24 bytes after the header
 3. IPv6 payload length 1500 on a 56-byte payload (RFC 8200 §3), UDP 4500, ESP
 4. ESP in IPv4 with 5 bytes: the SPI whole, the sequence number cut (RFC 4303 §2)
 5. ESP in IPv4 with 3 bytes: not even an SPI
 6. UDP 4500 carrying 6 bytes that are not a keepalive or a non-ESP marker: ESP cut after its SPI
 7. AH with Payload Len 0 (8 octets, shorter than its 12 fixed ones, RFC 4302 §2.2) then ICMP echo
 8. IPv4 IHL 3 (12 bytes, under the 20-byte minimum of RFC 791 §3.1)
 9. the IKE_SA_INIT response to frame 1, sound (a control: nothing wrong)
"""

from __future__ import annotations

import struct
from pathlib import Path

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

A, B = "198.18.1.1", "198.18.1.2"
A6, B6 = "2001:db8:1::1", "2001:db8:1::2"
IKE = bytes.fromhex("1111222233334444") + bytes(8) + struct.pack("!BBBBII", 0, 0x20, 34, 0x08, 0, 28)
IKE_R = bytes.fromhex("1111222233334444") + bytes.fromhex("5555666677778888") + struct.pack("!BBBBII", 0, 0x20, 34,
                                                                                               0x20, 0, 28)


def eth_ip4(ip: bytes) -> bytes:
    return bytes(Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02", type=0x0800)) + ip


def eth_ip6(ip: bytes) -> bytes:
    return bytes(Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02", type=0x86DD)) + ip


def with_total_length(ip: bytes, tot: int) -> bytes:
    b = bytearray(ip)
    b[2:4] = struct.pack("!H", tot)
    b[10:12] = b"\0\0"
    b[10:12] = struct.pack("!H", _checksum(bytes(b[:20])))
    return bytes(b)


def _checksum(h: bytes) -> int:
    s = sum(struct.unpack(f"!{len(h) // 2}H", h))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frames() -> list[bytes]:
    out = []
    out.append(eth_ip4(with_total_length(bytes(IP(src=A, dst=B, id=1) / UDP(sport=500, dport=500) / Raw(IKE)), 2000)))
    esp = struct.pack("!II", 0x0A0B0C0D, 7) + bytes(range(16))
    out.append(eth_ip4(with_total_length(bytes(IP(src=A, dst=B, id=2, proto=50) / Raw(esp)), 2000)))
    v6 = bytearray(bytes(IPv6(src=A6, dst=B6) / UDP(sport=4500, dport=4500) / Raw(esp + bytes(24))))
    v6[4:6] = struct.pack("!H", 1500)
    out.append(eth_ip6(bytes(v6)))
    out.append(eth_ip4(bytes(IP(src=A, dst=B, id=4, proto=50) / Raw(b"\x00\x00\x10\x01\x00"))))
    out.append(eth_ip4(bytes(IP(src=A, dst=B, id=5, proto=50) / Raw(b"\x00\x00\x10"))))
    out.append(eth_ip4(bytes(IP(src=A, dst=B, id=6) / UDP(sport=4500, dport=4500) / Raw(b"\x00\x00\x20\x02\x00\x01"))))
    ah = struct.pack("!BBHI", 1, 0, 0, 0x00000AAA)  # next header ICMP, Payload Len 0, SPI 0xaaa
    out.append(eth_ip4(bytes(IP(src=A, dst=B, id=7, proto=51) / Raw(ah + bytes(ICMP(id=0x77, seq=1) / Raw(bytes(8)))))))
    bad = bytearray(bytes(IP(src=A, dst=B, id=8, proto=50) / Raw(bytes(16))))
    bad[0] = 0x43
    out.append(eth_ip4(bytes(bad)))
    out.append(eth_ip4(bytes(IP(src=B, dst=A, id=9) / UDP(sport=500, dport=500) / Raw(IKE_R))))
    return out


def main(here: Path) -> None:
    pkts = [Ether(f) for f in frames()]
    for i, p in enumerate(pkts):
        p.time = 1700000100 + i
    wrpcap(str(here / "malformed-ip.pcap"), pkts)


if __name__ == "__main__":
    main(Path(__file__).resolve().parent)
