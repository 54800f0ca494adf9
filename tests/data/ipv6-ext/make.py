"""Writes ipv6-ext.pcap (and ipv6-frag-ike.pcap: see fragments()) from the project's own sample (run from the repository root:
``.venv/bin/python tests/data/ipv6-ext/make.py``): every frame of samples/healthy-gcm (IKEv2 on
UDP 500/4500, ESP in UDP 4500) as IPv6 between 2001:db8:1::1 and 2001:db8:1::2, its UDP datagram
unchanged but for the checksum (RFC 8200 §8.1), behind the extension headers README.md lists."""

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

HBH, ROUTING, FRAGMENT, DSTOPTS, UDP = 0, 43, 44, 60, 17
PADN4 = b"\x01\x04\0\0\0\0"  # one PadN option filling an 8-octet options header (RFC 8200 §4.2)


def ext(kind: int, nxt: int, ident: int) -> bytes:
    if kind in (HBH, DSTOPTS):
        return bytes((nxt, 0)) + PADN4
    if kind == ROUTING:  # type 0 with Segments Left 0 (RFC 8200 §4.4: ignored, go on)
        return bytes((nxt, 0, 0, 0)) + b"\0" * 4
    return bytes((nxt, 0)) + b"\0\0" + struct.pack("!I", ident)  # atomic fragment (RFC 6946)


CHAINS = ((), (HBH,), (DSTOPTS,), (ROUTING,), (HBH, DSTOPTS), (FRAGMENT,), (HBH, ROUTING, DSTOPTS))


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF or 0xFFFF


def main() -> None:
    with open_capture(ROOT / "samples" / "healthy-gcm" / "capture.pcapng") as r, \
            PcapWriter(HERE / "ipv6-ext.pcap") as w:
        for i, f in enumerate(r):
            frame = bytes(f.data)
            ip = frame[14:]
            udp = bytearray(ip[(ip[0] & 15) * 4:])
            v4src, v4dst = ip[12:16], ip[16:20]
            src = socket.inet_pton(socket.AF_INET6, f"2001:db8:1::{v4src[3]}")
            dst = socket.inet_pton(socket.AF_INET6, f"2001:db8:1::{v4dst[3]}")
            udp[6:8] = b"\0\0"
            pseudo = src + dst + struct.pack("!I3xB", len(udp), UDP)
            udp[6:8] = struct.pack("!H", checksum(pseudo + bytes(udp)))
            chain = CHAINS[i % len(CHAINS)]
            nexts = (*chain[1:], UDP) if chain else ()
            body = b"".join(ext(k, n, i) for k, n in zip(chain, nexts, strict=True)) + bytes(udp)
            first = chain[0] if chain else UDP
            v6 = struct.pack("!IHBB", 6 << 28, len(body), first, 64) + src + dst + body
            w.write(f.ts_ns, frame[:12] + b"\x86\xdd" + v6)


def fragments() -> None:
    """ipv6-frag-ike.pcap: samples/ike-frag-cert (IKE_AUTH with certificates, IP-fragmented on
    the way) as IPv6 where each IPv4 datagram over 1,280 octets is sent in IPv6 fragments of at
    most 1,024 payload octets (RFC 8200 §4.5), all on the frame the IPv4 datagram completed in."""
    with open_capture(ROOT / "samples" / "ike-frag-cert" / "capture.pcapng") as r:
        frames = [(f.ts_ns, bytes(f.data)) for f in r]
    pending: dict[int, bytes] = {}
    ident = 0
    with PcapWriter(HERE / "ipv6-frag-ike.pcap") as w:
        for ts, frame in frames:
            ip = frame[14:]
            ihl = (ip[0] & 15) * 4
            tot = ip[2] << 8 | ip[3]
            ff = ip[6] << 8 | ip[7]
            key = ip[4] << 8 | ip[5]
            if ff & 0x3FFF:  # an IPv4 fragment: collect (they arrive in order here)
                pending[key] = pending.get(key, b"") + ip[ihl:tot]
                if ff & 0x2000:
                    continue
                udp = pending.pop(key)
            else:
                udp = ip[ihl:tot]
            src = socket.inet_pton(socket.AF_INET6, f"2001:db8:1::{ip[15]}")
            dst = socket.inet_pton(socket.AF_INET6, f"2001:db8:1::{ip[19]}")
            u = bytearray(udp)
            u[6:8] = b"\0\0"
            u[6:8] = struct.pack("!H", checksum(src + dst + struct.pack("!I3xB", len(u), UDP) + bytes(u)))
            if 40 + len(u) <= 1280:
                w.write(ts, frame[:12] + b"\x86\xdd" + struct.pack("!IHBB", 6 << 28, len(u), UDP, 64) + src + dst
                        + bytes(u))
                continue
            ident += 1
            for off in range(0, len(u), 1024):
                part = bytes(u[off:off + 1024])
                more = off + 1024 < len(u)
                fh = struct.pack("!BBHI", UDP, 0, off | more, ident)
                w.write(ts, frame[:12] + b"\x86\xdd" + struct.pack("!IHBB", 6 << 28, 8 + len(part), FRAGMENT, 64)
                        + src + dst + fh + part)


if __name__ == "__main__":
    main()
    fragments()
