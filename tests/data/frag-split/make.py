"""Writes frag-split.pcap and frag-split.keys.json (run from the repository root:
``.venv/bin/python tests/data/frag-split/make.py``): ESP and AH packets bigger than the link,
encrypted or signed by scapy's ``SecurityAssociation`` with the keys below, then cut into IPv4 /
IPv6 fragments (RFC 4303 §3.3.4, RFC 4302 §3.3.4: fragmentation follows IPsec; the receiver
reassembles first) and sent in the orders README.md lists, with whole ESP packets between them.
Deterministic: fixed keys, IVs, times and payloads (a seeded shuffle)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
from scapy.layers.ipsec import AH, ESP, SecurityAssociation
from scapy.packet import Raw

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "samples" / "synthetic"))

from espgen import PcapWriter  # noqa: E402

A4, B4 = "198.18.7.1", "198.18.7.2"
A6, B6 = "2001:db8:7::1", "2001:db8:7::2"
# name: (protocol, spi, src, dst, scapy cipher, key, scapy integrity, key, IANA encr, IANA integ)
SAS = {
    "v4-tunnel": ("esp", 0xF4000001, A4, B4, "AES-CBC", bytes(range(0x10, 0x20)), "HMAC-SHA1-96",
                  bytes(range(0x20, 0x34)), "ENCR_AES_CBC", "AUTH_HMAC_SHA1_96"),
    "v4-natt": ("esp", 0xF4000002, B4, A4, "AES-GCM", bytes(range(0x40, 0x54)), None, b"",
                "ENCR_AES_GCM_16", "NONE"),
    "v6-transport": ("esp", 0xF6000001, A6, B6, "AES-GCM", bytes(range(0x60, 0x74)), None, b"",
                     "ENCR_AES_GCM_16", "NONE"),
    "v4-ah": ("ah", 0xF4000003, A4, B4, None, b"", "SHA2-256-128", bytes(range(0x80, 0xA0)), "ENCR_NULL",
              "AUTH_HMAC_SHA2_256_128"),
}
ETH4 = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00"
ETH6 = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x86\xdd"


def sa(name: str) -> SecurityAssociation:
    proto, spi, src, dst, ealg, ekey, aalg, akey, _e, _i = SAS[name]
    if proto == "ah":
        return SecurityAssociation(AH, spi=spi, auth_algo=aalg, auth_key=akey)
    kw = {}
    if name == "v4-tunnel":
        kw["tunnel_header"] = IP(src=src, dst=dst)
    if name == "v4-natt":
        kw["tunnel_header"] = IP(src=src, dst=dst)
        kw["nat_t_header"] = UDP(sport=4500, dport=4500)
    return SecurityAssociation(ESP, spi=spi, crypt_algo=ealg, crypt_key=ekey, auth_algo=aalg, auth_key=akey or None,
                               **kw)


class Seq:
    def __init__(self) -> None:
        self.n: dict[str, int] = {}

    def __call__(self, name: str) -> int:
        self.n[name] = self.n.get(name, 0) + 1
        return self.n[name]


SEQ = Seq()


def inner4(i: int, size: int) -> IP:
    return IP(src="10.7.1.1", dst="10.7.2.1", id=i) / UDP(sport=7000, dport=7001) / Raw(bytes([i & 0xFF]) * size)


def esp4(name: str, i: int, size: int, ident: int) -> IP:
    """A v4 ESP packet (tunnel mode, or tunnel mode in UDP 4500) with IP ID ``ident``."""
    s = SEQ(name)
    pkt = sa(name).encrypt(inner4(i, size), seq_num=s, iv=bytes([s]) * (16 if name == "v4-tunnel" else 8))
    pkt = IP(bytes(pkt))
    pkt.id = ident
    del pkt.chksum
    return IP(bytes(pkt))


def ah4(i: int, size: int, ident: int) -> IP:
    plain = IP(src=A4, dst=B4, id=ident) / UDP(sport=7000, dport=7001) / Raw(bytes([i & 0xFF]) * size)
    return IP(bytes(sa("v4-ah").encrypt(plain, seq_num=SEQ("v4-ah"))))


def esp6(i: int, size: int) -> IPv6:
    s = SEQ("v6-transport")
    plain = IPv6(src=A6, dst=B6) / UDP(sport=7000, dport=7001) / Raw(bytes([i & 0xFF]) * size)
    return IPv6(bytes(sa("v6-transport").encrypt(plain, seq_num=s, iv=bytes([s]) * 8)))


def frags4(pkt: IP, size: int = 248) -> list[bytes]:
    return [bytes(f) for f in fragment(pkt, fragsize=size)]


def frags6(pkt: IPv6, ident: int, size: int = 300) -> list[bytes]:
    whole = IPv6(src=pkt.src, dst=pkt.dst) / IPv6ExtHdrFragment(nh=pkt.nh, id=ident) / pkt.payload
    return [bytes(f) for f in fragment6(whole, size)]


def packets() -> list[tuple[float, bytes]]:
    """(seconds after the start, IP packet) in capture order."""
    rng = random.Random(7)
    out: list[bytes] = []
    small = 0

    def whole() -> bytes:  # an unfragmented tunnel-mode ESP packet between fragments
        nonlocal small
        small += 1
        return bytes(esp4("v4-tunnel", 100 + small, 60, 0x100 + small))

    out += [whole(), whole()]
    # 1: IPv4 tunnel-mode ESP in order, a whole ESP packet after every other fragment
    for k, f in enumerate(frags4(esp4("v4-tunnel", 1, 3000, 0x7001))):
        out.append(f)
        if k % 2:
            out.append(whole())
    # 2: ESP in UDP 4500, last fragment first (as Linux sends them), then the others in order
    f = frags4(esp4("v4-natt", 2, 2600, 0x7002))
    out += [f[-1], whole(), *f[:-1]]
    # 3: IPv6 transport-mode ESP, fragments in reverse order
    out += frags6(esp6(3, 2800), 0x7003)[::-1]
    out.append(whole())
    # 4: IPv6 shuffled, one fragment sent twice
    f = frags6(esp6(4, 2400), 0x7004)
    f.insert(3, f[1])
    rng.shuffle(f)
    out += f
    # 5: an IPv4 and an IPv6 datagram interleaved, fragment by fragment
    a, b = frags4(esp4("v4-tunnel", 5, 2000, 0x7005)), frags6(esp6(5, 2000), 0x7005)
    for k in range(max(len(a), len(b))):
        out += a[k:k + 1] + b[k:k + 1]
    # 6: an IPv6 datagram sent whole between the halves of an IPv4 one
    a, b = frags4(esp4("v4-tunnel", 6, 2000, 0x7006)), frags6(esp6(6, 2000), 0x7006)
    out += [*a[:4], *b, *a[4:]]
    # 7: AH (transport, HMAC-SHA-256-128), last fragment first
    f = frags4(ah4(7, 2200, 0x7007))
    out += [f[-1], *f[:-1], whole()]
    times = [i * 0.01 for i in range(len(out))]
    # 8: a lone first fragment, then 61 s of nothing: the next fragment gives it up (the reassembler's 60 s)
    f = frags4(esp4("v4-tunnel", 8, 1200, 0x7008))
    t = times[-1] + 0.01
    out.append(f[0])
    times.append(t)
    late = frags4(esp4("v4-tunnel", 9, 1500, 0x7009))
    for k, p in enumerate([whole(), *late, whole()]):
        out.append(p)
        times.append(t + 61 + k * 0.01)
    # 9: the capture ends before two datagrams complete: one lacks a middle fragment, one its last
    f = frags4(esp4("v4-tunnel", 10, 1800, 0x700A))
    g = frags6(esp6(10, 1800), 0x700A)
    tail = [*f[:2], *f[3:], whole(), *g[:-1]]
    for p in tail:
        out.append(p)
        times.append(times[-1] + 0.01)
    return list(zip(times, out, strict=True))


def main() -> None:
    with PcapWriter(HERE / "frag-split.pcap") as w:
        for t, raw in packets():
            w.write(1767225600_000_000_000 + round(t * 1e9), (ETH4 if raw[0] >> 4 == 4 else ETH6) + raw)
    keys = []
    for proto, spi, src, dst, _ea, ekey, _aa, akey, encr, integ in SAS.values():
        e = {"spi": f"0x{spi:08x}", "src": src, "dst": dst, "encr": encr, "enc_key": ekey.hex(), "integ": integ,
             "auth_key": akey.hex()}
        if proto == "ah":
            e = {"spi": e["spi"], "src": src, "dst": dst, "protocol": "ah", "encr": "ENCR_NULL", "integ": integ,
                 "auth_key": akey.hex()}
        keys.append(e)
    (HERE / "frag-split.keys.json").write_text(json.dumps(
        {"schema": "ipsecscope.keys/1", "generator": "tests/data/frag-split/make.py (the keys it encrypted with)",
         "esp": keys}, indent=1) + "\n")


if __name__ == "__main__":
    main()
