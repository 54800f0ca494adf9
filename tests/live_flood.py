"""Garbage at line rate for the adversarial live test: every frame a new random SPI.

    python3 live_flood.py IFACE COUNT SEED

Sends COUNT Ethernet frames out of IFACE as fast as one AF_PACKET socket can, cycling through the
kinds an attacker on the path can send without any key (issue 12 #6): ESP with random SPIs,
NAT-T (UDP 4500) ESP with random SPIs, IKE_SA_INIT requests with random IKE SPIs and garbage
payloads, AH with random SPIs, and first IPv4 fragments whose rest never comes. Outer addresses
are the test range 198.18.0.0/15; run it only inside a network namespace of your own.
"""

from __future__ import annotations

import random
import socket
import struct
import sys

SRC, DST = bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1])
ETH = bytes.fromhex("0200c6120001" "0200c6120002") + b"\x08\x00"


def _ipv4(proto: int, payload: bytes, ident: int, frag: int = 0) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0, SRC, DST)
    s = sum(struct.unpack("!10H", hdr))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return hdr[:10] + struct.pack("!H", ~s & 0xFFFF) + hdr[12:] + payload


def _udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def frame(i: int, rnd: random.Random) -> bytes:
    spi = rnd.getrandbits(32) | 0x100  # never 0 (RFC 4303 §2.1) nor a NAT-T marker
    junk = rnd.randbytes(32 + rnd.getrandbits(5))
    ident = rnd.getrandbits(16)
    kind = i % 5
    if kind == 0:  # ESP
        ip = _ipv4(50, struct.pack("!II", spi, 1) + junk, ident)
    elif kind == 1:  # ESP in UDP 4500 (RFC 3948)
        ip = _ipv4(17, _udp(4500, 4500, struct.pack("!II", spi, 1) + junk), ident)
    elif kind == 2:  # IKE_SA_INIT request, random SPIi, garbage where the payloads should be
        ike = rnd.randbytes(8) + bytes(8) + struct.pack("!BBBBII", 33, 0x20, 34, 0x08, 0, 28 + len(junk)) + junk
        ip = _ipv4(17, _udp(500, 500, ike), ident)
    elif kind == 3:  # AH (RFC 4302): next header, length, reserved, SPI, sequence, 12-byte ICV
        ip = _ipv4(51, struct.pack("!BBHII", 4, 4, 0, spi, 1) + rnd.randbytes(12) + junk, ident)
    else:  # a first fragment (MF set) that is never completed
        ip = _ipv4(17, _udp(500, 500, junk + junk), ident, frag=0x2000)
    return ETH + ip


def main(iface: str, count: int, seed: int) -> int:
    rnd = random.Random(seed)
    frames = [frame(i, rnd) for i in range(count)]
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((iface, 0))
        send = s.send
        for f in frames:
            send(f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
