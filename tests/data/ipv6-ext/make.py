"""Writes ipv6-ext.pcap (and ipv6-frag-ike.pcap: see fragments()) from the project's own sample (run from the repository root:
``.venv/bin/python tests/data/ipv6-ext/make.py``): every frame of samples/healthy-gcm (IKEv2 on
UDP 500/4500, ESP in UDP 4500) as IPv6 between 2001:db8:1::1 and 2001:db8:1::2, its UDP datagram
unchanged but for the checksum (RFC 8200 §8.1), behind the extension headers README.md lists."""

from __future__ import annotations

import json
import socket
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "samples" / "synthetic"))

from espgen import PcapWriter, Sa, esp_encrypt, esp_frame, icmpv6_echo, ipv6, tcp, udp  # noqa: E402

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


# ipv6-ext-esp: transport-mode ESP (AES-CBC-128 + HMAC-SHA1-96) 2001:db8:2::1 -> 2001:db8:2::2
ESP_SA = (0x6E000001, "2001:db8:2::1", "2001:db8:2::2", bytes(range(0x10, 0x20)), bytes(range(0x20, 0x34)))


def esp_transport() -> None:
    """ipv6-ext-esp.pcap (+ .keys.json, .esp_sa for tshark): transport-mode ESP behind IPv6
    extension headers (RFC 4303 §3.1.1: Hop-by-Hop, Routing, Fragment and Destination Options may
    come before ESP; a Destination Options header after it is encrypted with the payload). Each
    packet encrypted by scapy's ``SecurityAssociation(ESP, ...)``, which puts ESP behind
    Hop-by-Hop, Routing and a Destination Options header not after a Routing one (Linux's place);
    the atomic Fragment header (RFC 6946) and the real fragments are put in after encrypting, as a
    sender's IP layer does (RFC 4303 §3.3.4)."""
    from scapy.layers.inet import UDP as SUDP
    from scapy.layers.inet6 import (
        ICMPv6EchoRequest,
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
        IPv6ExtHdrRouting,
        fragment6,
    )
    from scapy.layers.ipsec import ESP, SecurityAssociation
    from scapy.packet import Raw

    spi, a, b, ekey, akey = ESP_SA
    sa = SecurityAssociation(ESP, spi=spi, crypt_algo="AES-CBC", crypt_key=ekey, auth_algo="HMAC-SHA1-96",
                             auth_key=akey)
    udp = SUDP(sport=7000, dport=7001)
    plain = [
        IPv6(src=a, dst=b) / IPv6ExtHdrHopByHop() / udp / Raw(b"hop-by-hop"),
        IPv6(src=a, dst=b) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt() /
        ICMPv6EchoRequest(id=3, seq=1, data=b"dest options after ESP"),
        IPv6(src=a, dst=b) / IPv6ExtHdrDestOpt() / udp / Raw(b"dest options before ESP"),
        IPv6(src=a, dst=b) / IPv6ExtHdrHopByHop() / udp / Raw(b"atomic fragment"),
        IPv6(src=a, dst=b) / IPv6ExtHdrHopByHop() / udp / Raw(bytes(range(256)) * 8),
        IPv6(src=a, dst=b) / udp / Raw(b"no extension header"),
    ]
    out = []
    for i, p in enumerate(plain):
        enc = IPv6(bytes(sa.encrypt(p, seq_num=i + 1, iv=bytes([i]) * 16)))
        if i == 3:  # an atomic fragment: Fragment header, offset 0, M 0 (RFC 6946), behind Hop-by-Hop
            hbh = enc[IPv6ExtHdrHopByHop]
            esp = hbh.payload
            hbh.remove_payload()
            hbh.nh = FRAGMENT
            enc = enc / IPv6ExtHdrFragment(nh=50, id=0x6E01, offset=0, m=0) / esp
            del enc.plen
            out.append(bytes(enc))
        elif i == 4:  # 2 KB: sent as real fragments (the receiver reassembles before ESP, §3.4.1)
            hbh = enc[IPv6ExtHdrHopByHop]
            esp = hbh.payload
            hbh.remove_payload()
            hbh.nh = FRAGMENT
            whole = enc / IPv6ExtHdrFragment(nh=50, id=0x6E02) / esp
            out += [bytes(f) for f in fragment6(whole, 1280)]
        else:
            out.append(bytes(enc))
    with PcapWriter(HERE / "ipv6-ext-esp.pcap") as w:
        for i, raw in enumerate(out):
            w.write(1767225600_000_000_000 + i * 250_000_000, b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x86\xdd" + raw)
    (HERE / "ipv6-ext-esp.keys.json").write_text(json.dumps({
        "schema": "ipsecscope.keys/1", "generator": "tests/data/ipv6-ext/make.py (the ESP key)",
        "esp": [{"spi": f"0x{spi:08x}", "src": a, "dst": b, "encr": "ENCR_AES_CBC", "enc_key": ekey.hex(),
                 "integ": "AUTH_HMAC_SHA1_96", "auth_key": akey.hex()}]}, indent=1) + "\n")
    (HERE / "ipv6-ext-esp.esp_sa").write_text(
        f'"IPv6","{a}","{b}","0x{spi:08x}","AES-CBC [RFC3602]","0x{ekey.hex()}","HMAC-SHA-1-96 [RFC2404]",'
        f'"0x{akey.hex()}"\n')


def inner() -> None:
    """ipv6-ext-inner.pcap (+ .esp_sa for tshark, .keys.json for ipsecscope): decrypted inner
    IPv6 packets behind the same extension-header chains, ESP in tunnel mode over IPv4 and IPv6;
    then an inner datagram split into two non-atomic Fragment-header fragments carried by two ESP
    packets, and transport-mode ESP whose Next Header is a Destination Options header (RFC 4303
    §3.1.1 puts it after ESP)."""
    import random

    rng = random.Random(8200)
    sas = [Sa(0x62000001, "198.18.62.1", "198.18.62.2", "aes-gcm16", rng.randbytes(20)),
           Sa(0x62000002, "2001:db8:62::1", "2001:db8:62::2", "aes-cbc", rng.randbytes(16), "sha256",
              rng.randbytes(32))]
    a, b = "fd00:62::1", "fd00:62::2"
    seqs = {s.spi: 0 for s in sas}
    ts = 1_764_100_000 * 1_000_000_000

    def send(w: PcapWriter, sa: Sa, plain: bytes, nh: int) -> None:
        nonlocal ts
        seqs[sa.spi] += 1
        ts += 1_000_000
        w.write(ts, esp_frame(sa, esp_encrypt(sa, seqs[sa.spi], plain, nh, rng.randbytes(16))))

    def l4(i: int) -> tuple[int, bytes]:
        kind = i % 3
        if kind == 0:
            return UDP, udp(a, b, 40000 + i, 5001, b"inner v6 %d" % i)
        if kind == 1:
            return 6, tcp(a, b, 41000 + i, 443, 1000 * i, b"", flags=0x02 if i % 2 else 0x12)
        return 58, icmpv6_echo(a, b, 62, i, b"ping %d" % i)

    with PcapWriter(HERE / "ipv6-ext-inner.pcap") as w:
        for i in range(2 * len(CHAINS)):
            chain = CHAINS[i % len(CHAINS)]
            proto, seg = l4(i)
            nexts = (*chain[1:], proto) if chain else ()
            body = b"".join(ext(k, n, i) for k, n in zip(chain, nexts, strict=True)) + seg
            send(w, sas[i % 2], ipv6(a, b, chain[0] if chain else proto, body), 41)
        # one UDP datagram in two fragments (RFC 8200 §4.5), each in its own ESP packet, the
        # second behind Hop-by-Hop (the unfragmentable part travels with each fragment)
        seg = udp(a, b, 40100, 5001, bytes(range(64)))
        send(w, sas[0], ipv6(a, b, FRAGMENT, struct.pack("!BBHI", UDP, 0, 1, 77) + seg[:32]), 41)
        send(w, sas[0], ipv6(a, b, HBH, ext(HBH, FRAGMENT, 0) + struct.pack("!BBHI", UDP, 0, 32, 77) + seg[32:]), 41)
        # transport mode: ESP's Next Header a Destination Options header, then UDP
        v6 = sas[1]
        seg = udp(v6.src, v6.dst, 1701, 1701, b"after dstopts")
        send(w, v6, ext(DSTOPTS, UDP, 0) + seg, DSTOPTS)
    (HERE / "ipv6-ext-inner.esp_sa").write_text("".join(s.esp_sa_line() + "\n" for s in sas))
    doc = {"schema": "ipsecscope.keys/1", "generator": "tests/data/ipv6-ext/make.py",
           "esp": [s.json_entry() for s in sas]}
    (HERE / "ipv6-ext-inner.keys.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
    fragments()
    esp_transport()
    inner()
