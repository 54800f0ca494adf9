#!/usr/bin/env python3
"""Generate the synthetic ESP captures in this directory (deterministic: fixed seed).

They cover what two strongSwan peers with kernel-libipsec cannot produce (see README.md here):
ESN with a sequence wrap past 2^32, AES-GMAC, ChaCha20-Poly1305, AES-CCM, AES-CTR, 3DES/DES,
NULL encryption, every HMAC and AES-XCBC, raw ESP (IP proto 50) and UDP-encapsulated ESP, IPv6
outer and inner, transport mode, NAT keepalives, a corrupted ICV and an SPI without a key.

Every capture comes with its keys as a Wireshark ``esp_sa`` table (rows for the algorithms
Wireshark 4.0 has) and as ipsecscope's native JSON (``ipsecscope.keys/1``, all rows).
Outer addresses are 198.18.0.0/15 and 2001:db8::/32; inner ones 10.0.0.0/8 and fd00::/8.

    python3 samples/synthetic/make_synthetic.py [OUTDIR]
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from espgen import (  # noqa: E402
    PcapWriter,
    Sa,
    esp_encrypt,
    esp_frame,
    ether,
    icmp_echo,
    icmp_error,
    icmpv6_echo,
    integ_key_len,
    ip_packet,
    ipv4,
    ipv6,
    key_sizes,
    tcp,
    udp,
)

SEED = 4303
T0 = 1_764_000_000 * 1_000_000_000  # ns


class Capture:
    """Frames, SAs and the ground truth (frame -> inner packet) of one synthetic capture."""

    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name
        self.rng = rng
        self.frames: list[tuple[int, bytes]] = []
        self.sas: list[Sa] = []
        self.truth: dict[int, dict] = {}  # frame number -> expectation, for tests
        self.ts = T0 + len(name) * 1_000_003

    def sa(self, spi: int, src: str, dst: str, encr: str, integ: str = "none", bits: int = 128,
           esn: bool = False, key_in_files: bool = True) -> Sa:
        rb = self.rng.randbytes
        s = Sa(spi, src, dst, encr, rb(key_sizes(encr, bits)), integ, rb(integ_key_len(integ)), esn,
               key_in_files)
        self.sas.append(s)
        return s

    def add(self, frame: bytes, truth: dict | None = None) -> int:
        self.ts += self.rng.randrange(100_000, 5_000_000)
        self.frames.append((self.ts, frame))
        n = len(self.frames)
        if truth is not None:
            self.truth[n] = truth
        return n

    def esp(self, sa: Sa, seq: int, inner: bytes, nh: int, udp_encap: bool = False, corrupt: bool = False,
            tfc: int = 0) -> int:
        esp = esp_encrypt(sa, seq, inner, nh, self.rng.randbytes(16), tfc)
        status = "ok" if sa.key_in_files else "no_key"
        if corrupt:
            esp = esp[:-1] + bytes((esp[-1] ^ 0x5A,))
            status = "icv_failed"
        return self.add(esp_frame(sa, esp, udp_encap, ident=seq & 0xFFFF), {
            "spi": sa.spi, "seq": seq, "inner": inner.hex(), "next_header": nh, "status": status,
            "esn_hi": seq >> 32 if sa.esn else 0, "udp_encap": udp_encap,
        })

    def write(self, outdir: Path) -> None:
        with PcapWriter(outdir / f"{self.name}.pcap") as w:
            for ts, frame in self.frames:
                w.write(ts, frame)
        rows = [s.esp_sa_line() for s in self.sas if s.key_in_files]
        (outdir / f"{self.name}.esp_sa").write_text("".join(r + "\n" for r in rows if r))
        doc = {
            "schema": "ipsecscope.keys/1",
            "generator": "samples/synthetic/make_synthetic.py",
            "esp": [s.json_entry() for s in self.sas if s.key_in_files],
        }
        (outdir / f"{self.name}.keys.json").write_text(json.dumps(doc, indent=1) + "\n")
        truth = {
            "capture": f"{self.name}.pcap",
            "sas": [{"spi": f"0x{s.spi:08x}", "src": s.src, "dst": s.dst, "encr": s.encr, "integ": s.integ,
                     "esn": s.esn, "key_in_files": s.key_in_files, "wireshark": s.esp_sa_line() is not None}
                    for s in self.sas],
            "frames": {str(k): v for k, v in sorted(self.truth.items())},
        }
        (outdir / f"{self.name}.truth.json").write_text(json.dumps(truth, indent=1) + "\n")


def ping(c: Capture, src: str, dst: str, ident: int, seq: int, size: int = 32, reply: bool = False) -> bytes:
    data = bytes((i + seq) & 0xFF for i in range(size))
    if ":" in src:
        return ip_packet(src, dst, 58, icmpv6_echo(src, dst, ident, seq, data))
    return ipv4(src, dst, 1, icmp_echo(ident, seq, data, reply), ident=c.rng.randrange(65536))


def esn_wrap(rng: random.Random) -> Capture:
    """ESN SAs whose 32-bit counter wraps inside the capture; the high bits must be inferred."""
    c = Capture("esn-wrap", rng)
    a, b = "198.18.10.1", "198.18.10.2"
    gcm = c.sa(0xE5000001, a, b, "aes-gcm16", bits=256, esn=True)
    cbc = c.sa(0xE5000002, b, a, "aes-cbc", "sha256", bits=128, esn=True)
    plain = c.sa(0xE5000003, a, b, "aes-gcm16", bits=128, esn=False)
    late_hi = c.sa(0xE5000004, b, a, "aes-gcm16", bits=128, esn=True)
    wrap = 1 << 32
    seqs_gcm = [wrap - 4, wrap - 3, wrap - 2, wrap - 1, wrap, wrap + 1, wrap - 1 + 0, wrap + 2, wrap + 3]
    seqs_gcm[6] = wrap - 5  # a late packet from before the wrap, after it
    seqs_cbc = [2 * wrap - 3, 2 * wrap - 2, 2 * wrap - 1, 2 * wrap, 2 * wrap + 1, 2 * wrap + 2]  # starts at hi=1
    for i in range(max(len(seqs_gcm), len(seqs_cbc))):
        if i < len(seqs_gcm):
            c.esp(gcm, seqs_gcm[i], ping(c, "10.1.0.1", "10.2.0.1", 7, i), 4)
        if i < len(seqs_cbc):
            c.esp(cbc, seqs_cbc[i], ping(c, "10.2.0.1", "10.1.0.1", 7, i, reply=True), 4)
        if i < 3:
            c.esp(plain, i + 1, ping(c, "10.1.0.1", "10.2.0.9", 8, i), 4)
    for i, s in enumerate((5 * wrap + 10, 5 * wrap + 11, 6 * wrap - 1)):  # high bits 5 from the start
        c.esp(late_hi, s, ping(c, "10.2.0.7", "10.1.0.1", 9, i), 4)
    return c


def aead(rng: random.Random) -> Capture:
    """One tunnel-mode SA per AEAD transform, raw ESP over IPv4."""
    c = Capture("aead", rng)
    spi = 0xAE000001
    for encr, bits in (("aes-gcm8", 128), ("aes-gcm12", 192), ("aes-gcm16", 256), ("aes-ccm8", 128),
                       ("aes-ccm12", 192), ("aes-ccm16", 256), ("chacha20poly1305", 256), ("aes-gmac", 128),
                       ("aes-gmac", 256)):
        n = spi & 0xFF
        sa = c.sa(spi, f"198.18.20.{n}", "198.18.21.1", encr, bits=bits)
        for i in range(3):
            c.esp(sa, i + 1, ping(c, f"10.20.{n}.1", "10.21.0.1", n, i, size=16 + 37 * i), 4, tfc=8 * (i == 2))
        spi += 1
    return c


def cbc_ctr_hmac(rng: random.Random) -> Capture:
    """Every non-AEAD cipher with every integrity transform it is commonly paired with, in UDP 4500."""
    c = Capture("cbc-ctr-hmac", rng)
    combos = [
        ("aes-cbc", 128, "md5"), ("aes-cbc", 192, "sha1"), ("aes-cbc", 256, "sha256"), ("aes-cbc", 256, "sha384"),
        ("aes-cbc", 256, "sha512"), ("aes-cbc", 128, "aesxcbc"), ("aes-ctr", 128, "sha1"),
        ("aes-ctr", 256, "sha256"), ("aes-ctr", 192, "aesxcbc"), ("3des", 192, "sha1"), ("3des", 192, "md5"),
        ("des", 64, "sha1"), ("null", 0, "sha1"), ("null", 0, "sha256"), ("null", 0, "aesxcbc"),
        ("aes-cbc", 128, "none"),
    ]
    for i, (encr, bits, integ) in enumerate(combos, 1):
        sa = c.sa(0xCB000000 + i, "198.18.30.1", f"198.18.31.{i}", encr, integ, bits=bits)
        for j in range(2):
            inner = ipv4("10.30.0.1", f"10.31.{i}.1", 17,
                         udp("10.30.0.1", f"10.31.{i}.1", 5000 + j, 53, bytes(range(20 + 50 * j))))
            c.esp(sa, j + 1, inner, 4, udp_encap=True)
    return c


def ipv6_transport_natt(rng: random.Random) -> Capture:
    """IPv6 outer/inner, transport mode, NAT keepalives, a corrupted ICV, an SPI without a key and
    frames that are not IPsec at all."""
    c = Capture("ipv6-transport-natt", rng)
    a6, b6 = "2001:db8:40::1", "2001:db8:40::2"
    a4, b4 = "198.18.40.1", "198.18.40.2"
    six6 = c.sa(0x60000001, a6, b6, "aes-gcm16", bits=256)
    four6 = c.sa(0x60000002, b6, a6, "aes-cbc", "sha256", bits=256)
    six4 = c.sa(0x60000003, a4, b4, "chacha20poly1305")
    trans4 = c.sa(0x60000004, a4, b4, "aes-cbc", "sha1")
    trans6 = c.sa(0x60000005, a6, b6, "aes-gcm16")
    natt = c.sa(0x60000006, b4, a4, "aes-gcm16", bits=128)
    nokey = c.sa(0x60000007, a4, b4, "aes-gcm16", key_in_files=False)
    for i in range(3):
        c.esp(six6, i + 1, ping(c, "fd00:1::1", "fd00:2::1", 61, i, size=40), 41, tfc=12 * (i == 1))
        c.esp(four6, i + 1, ping(c, "10.40.2.1", "10.40.1.1", 62, i, reply=True), 4)
        c.esp(six4, i + 1, ping(c, "fd00:3::1", "fd00:4::1", 63, i, size=24), 41)
        c.esp(trans4, i + 1, udp(a4, b4, 1701, 1701, b"l2tp-ish payload %d" % i), 17)
        c.esp(trans4, i + 4, tcp(a4, b4, 40000, 179, 1000 + i * 19, b"BGP-ish update %d" % i), 6)
        c.esp(trans6, i + 1, icmpv6_echo(a6, b6, 65, i, b"transport v6 %d" % i), 58)
        c.esp(natt, i + 1, ping(c, "10.40.9.1", "10.40.8.1", 66, i), 4, udp_encap=True)
        # RFC 3948 §2.3 NAT-keepalive: one 0xFF byte in UDP 4500
        c.add(ether(ipv4(b4, a4, 17, udp(b4, a4, 4500, 4500, b"\xff", checksum=False))),
              {"kind": "keepalive"})
        c.esp(nokey, i + 1, ping(c, "10.40.1.7", "10.40.2.7", 67, i), 4)
        c.add(ether(ipv4("198.18.40.9", "198.18.40.10", 17, udp("198.18.40.9", "198.18.40.10", 33333, 53,
                                                                 b"not ipsec %d" % i))), {"kind": "other"})
    c.esp(natt, 4, ping(c, "10.40.9.1", "10.40.8.1", 66, 3), 4, udp_encap=True, corrupt=True)
    c.esp(six6, 4, ping(c, "fd00:1::1", "fd00:2::1", 61, 3), 41, corrupt=True)
    return c


def icmp_quoted(rng: random.Random) -> Capture:
    """ICMP and ICMPv6 errors quoting ESP packets the capture also holds: quoted whole (port
    unreachable, administratively prohibited: the quote decrypts, ICV and all) and cut off at
    several lengths (fragmentation needed / packet too big quote only the start of a big packet),
    over IPv4 and IPv6, raw ESP and ESP in UDP 4500, carrying ICMP, ICMPv6, DNS and TCP; one SA
    without a key."""
    c = Capture("icmp-quoted", rng)
    a6, b6, r6 = "2001:db8:50::1", "2001:db8:50::2", "2001:db8:50::fe"
    a4, b4, r4 = "198.18.50.1", "198.18.50.2", "198.18.50.254"
    gcm6 = c.sa(0x70000001, a6, b6, "aes-gcm16")
    cbc6 = c.sa(0x70000002, b6, a6, "aes-cbc", "sha256")
    gcm4 = c.sa(0x70000003, a4, b4, "aes-gcm16", bits=256)
    nokey = c.sa(0x70000004, a4, b4, "aes-gcm16", key_in_files=False)
    ctr6 = c.sa(0x70000005, a6, b6, "aes-ctr", "sha1")

    def sent(n: int) -> bytes:  # the IP datagram of frame n (what an ICMP error quotes)
        return c.frames[n - 1][1][14:]

    def error(src: str, dst: str, itype: int, code: int, quoted: bytes, mtu: int = 0) -> None:
        v6 = ":" in src
        c.add(ether(ip_packet(src, dst, 58 if v6 else 1, icmp_error(src, dst, itype, code, quoted, mtu)), v6),
              {"kind": "icmp-error", "quoted": len(quoted)})

    for i in range(2):
        # ESP over IPv6 carrying IPv6 ping, answered by ICMPv6 administratively prohibited (1/1)
        n = c.esp(gcm6, i + 1, ping(c, "fd00:50:1::1", "fd00:50:2::1", 71, i, size=40), 41)
        error(b6, a6, 1, 1, sent(n))
        # ESP over IPv6 carrying a DNS query over IPv4, answered by ICMPv6 port unreachable (1/4)
        dns = bytes.fromhex("abcd01000001000000000000") + b"\x07example\x03net\x00\x00\x01\x00\x01"
        n = c.esp(cbc6, i + 1, ipv4("10.50.2.1", "10.50.1.1", 17, udp("10.50.2.1", "10.50.1.1", 5353 + i, 53, dns)), 4)
        error(a6, b6, 1, 4, sent(n))
        # ESP in UDP 4500 over IPv4 carrying a TCP SYN, answered by ICMP port unreachable (3/3)
        syn = tcp("10.50.1.1", "10.50.2.1", 40000 + i, 443, 1000, b"", flags=0x02)
        n = c.esp(gcm4, i + 1, ipv4("10.50.1.1", "10.50.2.1", 6, syn), 4, udp_encap=True)
        error(b4, a4, 3, 3, sent(n))
        # an SA whose keys are not in the files: the quote shows its SPI and sequence only
        n = c.esp(nokey, i + 1, ping(c, "10.50.1.7", "10.50.2.7", 74, i), 4, udp_encap=True)
        error(b4, a4, 3, 3, sent(n))
        # ESP in UDP 4500 over IPv6 (AES-CTR + HMAC-SHA1) carrying UDP over IPv6
        inner = ip_packet("fd00:50:1::5", "fd00:50:2::5", 17,
                          udp("fd00:50:1::5", "fd00:50:2::5", 7000 + i, 5001, b"udp in v6 %d" % i))
        n = c.esp(ctr6, i + 1, inner, 41, udp_encap=True)
        error(b6, a6, 1, 4, sent(n))
    # Big packets a router cannot forward: routers quote different amounts (RFC 792's 8 octets
    # at least, RFC 1812's 576 in all, RFC 4443's 1280): cut-off quotes, never verified.
    big4 = sent(c.esp(gcm4, 3, ping(c, "10.50.1.1", "10.50.2.1", 75, 9, size=1372), 4, udp_encap=True))
    for cut in range(64, 577, 44):
        error(r4, a4, 3, 4, big4[:cut - 28], mtu=1280)
    big6 = sent(c.esp(cbc6, 3, ipv4("10.50.2.1", "10.50.1.1", 1, icmp_echo(76, 9, bytes(1400))), 4))
    for cut in range(120, 1281, 96):
        error(r6, b6, 2, 0, big6[:cut - 48], mtu=1280)
    # IPv6 packets carrying extension headers before ESP or UDP (RFC 8200 §4: hop-by-hop first,
    # destination options, an atomic fragment header, RFC 8200 §4.5 / RFC 6946): an error quotes
    # the chain too (RFC 4443 §2.4(c)), so the quote's ESP or UDP header sits behind it.
    chains = ((0, 60, 44), (60,))
    for i, chain in enumerate(chains):
        n = esp_v6_ext(c, gcm6, 4 + i, ping(c, "fd00:50:1::1", "fd00:50:2::1", 77, i, size=40), 41, chain)
        error(b6, a6, 1, 1, sent(n))  # whole: administratively prohibited
        ext_len = len(ext_headers(chain, 50)[1])
        for cut in (40 + ext_len - 4, 40 + ext_len + 6, 40 + ext_len + 36, 200):
            error(r6, a6, 2, 0, sent(n)[:cut], mtu=1280)  # cut off in the chain, the ESP header, after
        inner = ip_packet("fd00:50:1::5", "fd00:50:2::5", 17,
                          udp("fd00:50:1::5", "fd00:50:2::5", 7100 + i, 5001, b"behind extension headers"))
        n = esp_v6_ext(c, ctr6, 4 + i, inner, 41, chain, udp_encap=True)
        error(b6, a6, 1, 4, sent(n))  # whole: port unreachable
        error(r6, a6, 2, 0, sent(n)[:40 + ext_len + 8 + 20], mtu=1280)  # UDP, SPI, sequence, part of the IV
    # IKE an error quotes (not sent in this capture): on UDP 500, on 4500 after the non-ESP marker
    # (RFC 3948 §2.2), over IPv4 and over IPv6 behind extension headers; whole (port unreachable)
    # and cut off in and after the header (fragmentation needed / packet too big).
    for k, (msg, port) in enumerate(((ikev2_sa_init(c), 500), (ikev2_sk(c), 4500), (ikev1_main_mode(c), 500),
                                     (ikev1_notify(c), 4500))):
        data = (b"\0\0\0\0" if port == 4500 else b"") + msg
        d4 = ipv4(a4, b4, 17, udp(a4, b4, port, port, data, checksum=False), ident=0x1E00 + k)
        error(b4, a4, 3, 3, d4)
        for cut in (27, 28, 40, len(msg) - 1):
            error(r4, a4, 3, 4, d4[:28 + (port == 4500) * 4 + cut], mtu=1280)
        first, hdrs = ext_headers((60,), 17)
        d6 = ipv6(a6, b6, first, hdrs + udp(a6, b6, port, port, data))
        error(b6, a6, 1, 4, d6)
        error(r6, a6, 2, 0, d6[:40 + len(hdrs) + 8 + (port == 4500) * 4 + 30], mtu=1280)
    return c


def _ike(spi_r: bytes, version: int, exch: int, flags: int, msg_id: int, chain: list[tuple[int, bytes]],
         rng: random.Random) -> bytes:
    """An IKE message (RFC 7296 §3.1 / RFC 2408 §3.1): header, then the payloads ``chain`` names
    (type, body), each with its generic header (next payload, flags, length)."""
    body = b""
    for i, (_t, b) in enumerate(chain):
        nxt = chain[i + 1][0] if i + 1 < len(chain) else 0
        body += bytes((nxt, 0)) + (4 + len(b)).to_bytes(2, "big") + b
    return (rng.randbytes(8) + spi_r + bytes((chain[0][0], version, exch, flags)) + msg_id.to_bytes(4, "big")
            + (28 + len(body)).to_bytes(4, "big") + body)


def _substructures(items: list[bytes], more: int) -> bytes:
    """Proposals (more=2) or transforms (more=3): 0 on the last, ``more`` before (RFC 7296 §3.3)."""
    return b"".join(bytes((more if i + 1 < len(items) else 0, 0)) + (4 + len(x)).to_bytes(2, "big") + x
                    for i, x in enumerate(items))


def ikev2_sa_init(c: Capture) -> bytes:
    """IKE_SA_INIT request: SA (two proposals of three and four transforms), KE, Ni, two NAT
    detection notifies, a vendor ID."""
    def tr(t: int, i: int, attrs: bytes = b"") -> bytes:
        return bytes((t, 0)) + i.to_bytes(2, "big") + attrs

    keylen = bytes.fromhex("800e0100")  # Key Length 256 (TV attribute)
    p1 = bytes((1, 1, 0, 3)) + _substructures([tr(1, 20, keylen), tr(2, 7), tr(4, 19)], 3)
    p2 = bytes((2, 1, 0, 4)) + _substructures([tr(1, 12, keylen), tr(2, 5), tr(3, 12), tr(4, 14)], 3)
    sa = _substructures([p1, p2], 2)
    ke = (19).to_bytes(2, "big") + bytes(2) + c.rng.randbytes(64)
    nat = [bytes((0, 0)) + t.to_bytes(2, "big") + c.rng.randbytes(20) for t in (16388, 16389)]
    return _ike(bytes(8), 0x20, 34, 0x08, 0, [(33, sa), (34, ke), (40, c.rng.randbytes(32)), (41, nat[0]),
                                              (41, nat[1]), (43, b"synthetic vendor id")], c.rng)


def ikev2_sk(c: Capture) -> bytes:
    """IKE_AUTH request: one SK payload (RFC 7296 §3.14) naming IDi first, keys not in the files."""
    msg = _ike(c.rng.randbytes(8), 0x20, 35, 0x08, 1, [(46, c.rng.randbytes(16 + 96 + 16))], c.rng)
    return msg[:28] + bytes((35,)) + msg[29:]  # the SK payload's next payload: the first inner one


def ikev1_main_mode(c: Capture) -> bytes:
    """IKEv1 Main Mode first message: SA (DOI 1, SIT_IDENTITY_ONLY, one proposal, two transforms
    with attributes, RFC 2409 App. A), two vendor IDs."""
    attrs = bytes.fromhex("800100078002000480030001800400" "0e800b0001000c000400007080")
    t1 = bytes((1, 1, 0, 0)) + attrs
    t2 = bytes((2, 1, 0, 0)) + attrs
    prop = bytes((1, 1, 0, 2)) + _substructures([t1, t2], 3)
    sa = (1).to_bytes(4, "big") + (1).to_bytes(4, "big") + _substructures([prop], 2)
    return _ike(bytes(8), 0x10, 2, 0, 0, [(1, sa), (13, c.rng.randbytes(16)), (13, c.rng.randbytes(16))], c.rng)


def ikev1_notify(c: Capture) -> bytes:
    """IKEv1 Informational in clear: a Notify INVALID-PAYLOAD-TYPE (RFC 2408 §3.14, type 1)."""
    n = (1).to_bytes(4, "big") + bytes((1, 0)) + (1).to_bytes(2, "big")
    return _ike(c.rng.randbytes(8), 0x10, 5, 0, 0x1234, [(11, n)], c.rng)


def ext_headers(chain: tuple[int, ...], last: int) -> tuple[int, bytes]:
    """(the IPv6 header's next header, the extension headers ``chain`` names in order, the last
    one's next header ``last``): hop-by-hop/destination options of 8 and 16 octets of PadN
    (RFC 8200 §4.2-4.6), an atomic fragment header (offset 0, M=0)."""
    out = b""
    for i, kind in enumerate(chain):
        nxt = chain[i + 1] if i + 1 < len(chain) else last
        if kind == 44:
            out += bytes((nxt, 0, 0, 0)) + (0x5A5A0001 + i).to_bytes(4, "big")
        elif kind == 0:
            out += bytes((nxt, 0, 1, 4, 0, 0, 0, 0))
        else:
            out += bytes((nxt, 1, 1, 12)) + bytes(12)
    return (chain[0] if chain else last), out


def esp_v6_ext(c: Capture, sa: Sa, seq: int, inner: bytes, nh: int, chain: tuple[int, ...],
               udp_encap: bool = False) -> int:
    """An ESP packet over IPv6 (raw, or in UDP 4500) with extension headers ``chain`` before it."""
    esp = esp_encrypt(sa, seq, inner, nh, c.rng.randbytes(16))
    body = udp(sa.src, sa.dst, 4500, 4500, esp) if udp_encap else esp
    first, hdrs = ext_headers(chain, 17 if udp_encap else 50)
    return c.add(ether(ipv6(sa.src, sa.dst, first, hdrs + body), True), {
        "spi": sa.spi, "seq": seq, "inner": inner.hex(), "next_header": nh, "status": "ok", "esn_hi": 0,
        "udp_encap": udp_encap})


# Wire text that looks like rich/Textual markup or an emoji code: a viewer that reads it as markup
# crashes ("[/x]" closes a tag never opened) or shows something the capture does not hold (":100:"
# in an IPv6 address becomes an emoji). Strings from the wire are data, never markup.
HOSTILE_ID_I = "[/x] [bold red]vpn[/bold red] :100: [link=x]gw[/link]"
HOSTILE_ID_R = "peer@[/].example :fire: \\[esc]"
HOSTILE_DNS = (b"[/x]", b"[b]evil", b":100:", b"example")


def _isakmp_payload(nxt: int, body: bytes) -> bytes:
    return bytes((nxt, 0)) + (4 + len(body)).to_bytes(2, "big") + body


def _ikev1_aggressive(spi_i: bytes, spi_r: bytes, id_type: int, ident: str, response: bool,
                      rng: random.Random) -> bytes:
    """One IKEv1 Aggressive Mode message (RFC 2409 §5.4): SA, KE, Nonce and the ID in the clear
    (RFC 2407 §4.6.2: ID_FQDN 2, ID_USER_FQDN 3)."""
    attrs = bytes.fromhex("80010007" "800e0100" "80020002" "80030001" "8004000e" "800b0001") \
        + bytes.fromhex("000c0004") + (28800).to_bytes(4, "big")
    transform = _isakmp_payload(0, bytes((1, 1, 0, 0)) + attrs)  # transform #1, KEY_IKE
    proposal = _isakmp_payload(0, bytes((1, 1, 0, 1)) + transform)  # proposal #1, ISAKMP, 1 transform
    sa = _isakmp_payload(4, (1).to_bytes(4, "big") + (1).to_bytes(4, "big") + proposal)
    ke = _isakmp_payload(10, rng.randbytes(256))  # group 14 public value
    nonce = _isakmp_payload(5, rng.randbytes(32))
    idp = _isakmp_payload(0, bytes((id_type, 17)) + (500).to_bytes(2, "big") + ident.encode())
    body = sa + ke + nonce + idp
    hdr = spi_i + (spi_r if response else bytes(8)) + bytes((1, 0x10, 4, 0)) + bytes(4) \
        + (28 + len(body)).to_bytes(4, "big")
    return hdr + body


def _dns_query(qid: int, labels: tuple[bytes, ...]) -> bytes:
    name = b"".join(bytes((len(x),)) + x for x in labels) + b"\x00"
    return qid.to_bytes(2, "big") + bytes.fromhex("01000001000000000000") + name + b"\x00\x01\x00\x01"


def hostile_text(rng: random.Random) -> Capture:
    """Wire text that looks like markup: IKEv1 Aggressive Mode IDs with rich markup tags and emoji
    codes, IPv6 peers whose addresses hold ":100:", and a DNS query for a name made of markup,
    inside ESP (AES-GCM) with its key; one more SA without a key."""
    c = Capture("hostile-text", rng)
    a6, b6 = "fd00:db8::100:1", "fd00:db8::100:2"  # ULA: "[fd00:…]:500" is a rich tag unless escaped
    spi_i, spi_r = rng.randbytes(8), rng.randbytes(8)
    for response, (src, dst, id_type, ident) in enumerate(((a6, b6, 2, HOSTILE_ID_I), (b6, a6, 3, HOSTILE_ID_R))):
        msg = _ikev1_aggressive(spi_i, spi_r, id_type, ident, bool(response), rng)
        c.add(ether(ip_packet(src, dst, 17, udp(src, dst, 500, 500, msg)), True), {"kind": "ike"})
    out = c.sa(0x7E000001, a6, b6, "aes-gcm16")
    back = c.sa(0x7E000002, b6, a6, "aes-gcm16")
    nokey = c.sa(0x7E000003, a6, b6, "aes-gcm16", key_in_files=False)
    for i in range(3):
        dns = _dns_query(0x5B00 + i, HOSTILE_DNS)
        c.esp(out, i + 1, ip_packet("fd00:100::1", "fd00:100::53", 17,
                                    udp("fd00:100::1", "fd00:100::53", 5300 + i, 53, dns)), 41)
        c.esp(back, i + 1, ping(c, "fd00:100::53", "fd00:100::1", 0x100, i), 41)
        c.esp(nokey, i + 1, ping(c, "fd00:100::1", "fd00:100::53", 0x101, i), 41)
    return c


BUILDERS = (esn_wrap, aead, cbc_ctr_hmac, ipv6_transport_natt, icmp_quoted, hostile_text)


def main(argv: list[str]) -> int:
    outdir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    outdir.mkdir(parents=True, exist_ok=True)
    for build in BUILDERS:
        cap = build(random.Random(f"{SEED}-{build.__name__}"))
        cap.write(outdir)
        print(f"{cap.name}.pcap: {len(cap.frames)} frames, {len(cap.sas)} SAs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
