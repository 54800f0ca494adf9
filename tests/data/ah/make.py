"""Writes the AH captures and key files of this folder (run from the repository root:
``.venv/bin/python tests/data/ah/make.py``). Every AH packet is signed by scapy's
``SecurityAssociation(AH, ...)`` (scapy/layers/ipsec.py), an implementation independent of
ipsecscope's; then some packets are changed the way a path changes them (README.md says which).
This machine's kernel has no XFRM AH (``ip xfrm state add ... proto ah`` answers "Requested type
not found"), so no kernel AH could be captured. Deterministic: fixed keys, times and payloads."""

from __future__ import annotations

import json
from pathlib import Path

from scapy.layers.inet import ICMP, IP, UDP, IPOption_Router_Alert, IPOption_RR, IPOption_Timestamp, fragment
from scapy.layers.inet6 import (
    HBHOptUnknown,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.ipsec import AH, ESP, SecurityAssociation
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import PcapWriter

HERE = Path(__file__).resolve().parent
A4, B4, PRIV4 = "198.18.0.1", "198.18.0.2", "10.0.0.1"
A6, B6 = "2001:db8:a::1", "2001:db8:b::2"

# (spi, src, dst, scapy algorithm, IANA integrity name, key, esn high bits or None)
SAS = {
    "v4-sha1": (0xA4000001, A4, B4, "HMAC-SHA1-96", "AUTH_HMAC_SHA1_96", bytes(range(1, 21)), None),
    # the answer of v4-sha1: one CHILD SA, one proposal both ways (RFC 7296 §3.3), its own key
    "v4-sha1-back": (0xA4000002, B4, A4, "HMAC-SHA1-96", "AUTH_HMAC_SHA1_96", bytes(range(0x21, 0x35)), None),
    "v4-sha512-tunnel": (0xA4000003, A4, B4, "SHA2-512-256", "AUTH_HMAC_SHA2_512_256", bytes(range(0x41, 0x81)), None),
    "v4-cmac-esn": (0xA4000004, B4, A4, "AES-CMAC-96", "AUTH_AES_CMAC_96", bytes(range(0x81, 0x91)), 1),
    "v6-sha384": (0xA6000001, A6, B6, "SHA2-384-192", "AUTH_HMAC_SHA2_384_192", bytes(range(0x91, 0xC1)), None),
    "v6-sha256-tunnel": (0xA6000002, B6, A6, "SHA2-256-128", "AUTH_HMAC_SHA2_256_128", bytes(range(0xC1, 0xE1)), None),
    "v6-md5-esn": (0xA6000003, A6, B6, "HMAC-MD5-96", "AUTH_HMAC_MD5_96", bytes(range(0xE1, 0xF1)), 2),
    # transport-mode AH over tunnel-mode ESP (an SA bundle, RFC 4301 §4.5): ESP_BUNDLE below
    "v4-bundle-ah": (0xA4000005, A4, B4, "HMAC-SHA1-96", "AUTH_HMAC_SHA1_96", bytes(range(0x51, 0x65)), None),
    # ESN whose sequence numbers cross 2^32 mid-capture (high bits 0 -> 1): esn_wrap_packets
    "v4-esn-wrap": (0xA4000006, A4, B4, "HMAC-SHA1-96", "AUTH_HMAC_SHA1_96", bytes(range(0xA1, 0xB5)), 0),
}
# the ESP SA under "v4-bundle-ah": AES-CBC-128 + HMAC-SHA1-96, tunnel mode
ESP_BUNDLE = (0xE4000005, A4, B4, bytes(range(0x61, 0x71)), bytes(range(0x71, 0x85)))
ETH4 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x0800)
ETH6 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x86DD)


def sa(name: str, tunnel=None) -> SecurityAssociation:
    spi, _s, _d, alg, _i, key, hi = SAS[name]
    return SecurityAssociation(AH, spi=spi, auth_algo=alg, auth_key=key, tunnel_header=tunnel,
                               esn_en=hi is not None, esn=hi or 0)


def _v4_fix(raw: bytes) -> bytes:
    """IPv4 header checksum again after a path change."""
    p = IP(raw)
    del p.chksum
    return bytes(p.__class__(bytes(p)))


def v4_packets() -> list[bytes]:
    out = []
    s1, s2 = sa("v4-sha1"), sa("v4-sha1-back")
    for i in range(4):
        req = IP(src=A4, dst=B4, id=0x100 + i, ttl=64) / ICMP(type=8, id=7, seq=i) / Raw(b"ah-v4 %d" % i * 4)
        rep = IP(src=B4, dst=A4, id=0x200 + i, ttl=64) / ICMP(type=0, id=7, seq=i) / Raw(b"ah-v4 %d" % i * 4)
        a = bytes(s1.encrypt(req, seq_num=i + 1))
        b = bytes(s2.encrypt(rep, seq_num=i + 1))
        if i == 1:  # a router re-marked DSCP/ECN, set DF, decremented TTL: all mutable (§3.3.3.1.1.1)
            p = bytearray(a)
            p[1], p[6], p[8] = 0x2A, 0x40, 61
            a = _v4_fix(bytes(p))
        if i == 2:  # corrupted on the path: one payload byte flipped
            p = bytearray(b)
            p[-3] ^= 0x01
            b = bytes(p)
        out += [a, b]
    # IPv4 options: Router Alert is covered, Record Route is zeroed (Appendix A.1); a router fills RR in.
    opt = IP(src=A4, dst=B4, id=0x300, options=[IPOption_Router_Alert(), IPOption_RR(routers=["0.0.0.0"])]) / \
        ICMP(type=8, id=7, seq=9) / Raw(b"options")
    p = bytearray(bytes(s1.encrypt(opt, seq_num=5)))
    rr = p.index(bytes([7]), 20)  # the RR option: type 7, length, pointer, one address
    p[rr + 2] = 8
    p[rr + 3:rr + 7] = bytes([198, 18, 9, 9])
    out.append(_v4_fix(bytes(p)))
    # tunnel mode, SHA-512-256: a 32-byte ICV, AH 44 bytes, no padding for IPv4
    s3 = sa("v4-sha512-tunnel", IP(src=A4, dst=B4))
    for i in range(2):
        inner = IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=5000, dport=53) / Raw(b"tunnel %d" % i)
        out.append(bytes(s3.encrypt(inner, seq_num=i + 1)))
    # ESN with high bits 1 (RFC 4302 §2.5.1, §3.3.3.2.1), AES-CMAC-96
    s4 = sa("v4-cmac-esn")
    for i in range(3):
        rep = IP(src=B4, dst=A4, id=0x400 + i) / ICMP(type=0, id=8, seq=i) / Raw(b"esn")
        out.append(bytes(s4.encrypt(rep, seq_num=0xFFFFFFF0 + i, esn_en=True, esn=1)))
    return out


def v6_packets() -> list[bytes]:
    out = []
    s1 = sa("v6-sha384")
    mutable = HBHOptUnknown(otype=0x3E, optdata=b"\x00\x00\x00\x00")  # type 0x3e: bit 0x20 = may change en route
    fixed = HBHOptUnknown(otype=0x1E, optdata=b"\x11\x22")  # 0x1e: must not change
    for i in range(3):
        pkt = IPv6(src=A6, dst=B6, hlim=64) / IPv6ExtHdrHopByHop(options=[mutable, fixed]) / \
            IPv6ExtHdrDestOpt() / ICMPv6EchoRequest(id=5, seq=i, data=b"ah-v6 %d" % i)
        p = bytearray(bytes(s1.encrypt(pkt, seq_num=i + 1)))
        if i == 1:  # traffic class, flow label, hop limit and the mutable option's data changed en route
            p[0:4] = bytes([0x6B, 0x8A, 0xBC, 0xDE])
            p[7] = 60
            at = p.index(bytes([0x3E, 4]), 40)
            p[at + 2:at + 6] = b"\xde\xad\xbe\xef"
        out.append(bytes(p))
    # a Routing header (Type 0) still on its way: the ICV is over the final destination's view (§3.3.3.1.2.2)
    rt = IPv6(src=A6, dst="2001:db8:ff::1") / IPv6ExtHdrRouting(addresses=["2001:db8:ff::2", B6]) / \
        ICMPv6EchoRequest(id=5, seq=7, data=b"routed")
    out.append(bytes(s1.encrypt(rt, seq_num=4)))
    s2 = sa("v6-sha256-tunnel", IPv6(src=B6, dst=A6))
    for i in range(3):
        inner = IPv6(src="fd00:2::1", dst="fd00:1::1") / ICMPv6EchoReply(id=5, seq=i, data=b"tunnel")
        out.append(bytes(s2.encrypt(inner, seq_num=i + 1)))
    s3 = sa("v6-md5-esn")
    for i in range(2):
        pkt = IPv6(src=A6, dst=B6) / UDP(sport=4000, dport=4001) / Raw(b"esn v6 %d" % i)
        out.append(bytes(s3.encrypt(pkt, seq_num=7 + i, esn_en=True, esn=2)))
    return out


def nat_packets() -> list[bytes]:
    """The v4-sha1 SA signed by a host at 10.0.0.1 whose NAT rewrote the source to 198.18.0.1."""
    s1 = sa("v4-sha1")
    out = []
    for i in range(3):
        req = IP(src=PRIV4, dst=B4, id=0x500 + i) / ICMP(type=8, id=9, seq=i) / Raw(b"behind NAT")
        p = IP(bytes(s1.encrypt(req, seq_num=i + 1)))
        p.src = A4
        del p.chksum
        out.append(bytes(p.__class__(bytes(p))))
    return out


def frag_packets() -> list[bytes]:
    """AH packets bigger than the link, split into IP fragments after signing (RFC 4302 §3.3.4:
    fragmentation follows AH processing; the receiver reassembles first, §3.4.1)."""
    out = []
    big = IP(src=A4, dst=B4, id=0x600) / UDP(sport=7000, dport=7001) / Raw(bytes(range(256)) * 12)
    signed = sa("v4-sha1").encrypt(big, seq_num=20)
    out += [bytes(f) for f in fragment(signed, fragsize=1200)]
    big6 = IPv6(src=A6, dst=B6) / UDP(sport=7000, dport=7001) / Raw(bytes(range(256)) * 12)
    signed6 = IPv6(bytes(sa("v6-sha384").encrypt(big6, seq_num=20)))
    fr = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=0x66, nh=51) / signed6.payload
    out += [bytes(f) for f in fragment6(fr, 1280)]
    return out


def _copied_options(raw: bytes) -> bytes:
    """An IPv4 fragment as RFC 791 (§3.1, "copied flag") makes a non-first one: only the options
    whose copy flag (0x80 of the type) is set; Record Route and Timestamp stay in the first
    fragment. (scapy's fragment() copies every option into every fragment.)"""
    ihl = (raw[0] & 15) * 4
    opts, i, kept = raw[20:ihl], 0, b""
    while i < len(opts) and opts[i] != 0:
        if opts[i] == 1:
            i += 1
            continue
        n = opts[i + 1]
        if opts[i] & 0x80:
            kept += opts[i:i + n]
        i += n
    kept += bytes(-len(kept) % 4)
    p = IP(raw)
    p.options = [] if not kept else IP(bytes([0x40 | (5 + len(kept) // 4)]) + raw[1:20] + kept).options
    del p.ihl, p.len, p.chksum
    return bytes(p.__class__(bytes(p)))


def frag_options_packets() -> list[bytes]:
    """An AH packet carrying Router Alert (copied into every fragment, covered by the ICV), Record
    Route and Timestamp (RFC 791: only in the first fragment; mutable, zeroed for the ICV, RFC 4302
    Appendix A.1), signed, then fragmented as RFC 791 fragments: the receiver's reassembled header
    is the first fragment's, options and all (§3.4.1: reassembly before AH). Then the same without
    options, and one with the fragments out of order (the last one first)."""
    out = []
    opts = [IPOption_Router_Alert(), IPOption_RR(routers=["0.0.0.0"] * 2),
            IPOption_Timestamp(flg=0, timestamp=0, internet_address="0.0.0.0")]
    for i, order in enumerate((1, 1, -1)):
        big = IP(src=A4, dst=B4, id=0x700 + i, options=opts if i != 1 else []) / UDP(sport=7000, dport=7002) / \
            Raw(bytes(range(256)) * 6)
        signed = sa("v4-sha1").encrypt(big, seq_num=30 + i)
        frags = [bytes(f) for f in fragment(signed, fragsize=600)]
        frags = frags[:1] + [_copied_options(f) for f in frags[1:]]
        out += frags[::order]
    return out


def bundle_packets() -> list[bytes]:
    """AH (transport) protecting ESP (tunnel): IP / AH / ESP, as strongSwan's ah+esp proposals make.
    The ESP is scapy's; the AH ICV is scapy's definition (zero_mutable_fields, as its AH verify
    reads it) MACed here: scapy's AuthAlgo.sign() looks for an ESP layer first and, finding the one
    AH protects, MACs that instead of signing AH."""
    import hashlib
    import hmac

    from scapy.layers.ipsec import zero_mutable_fields

    spi, src, dst, ekey, akey = ESP_BUNDLE
    esp = SecurityAssociation(ESP, spi=spi, crypt_algo="AES-CBC", crypt_key=ekey, auth_algo="HMAC-SHA1-96",
                              auth_key=akey, tunnel_header=IP(src=src, dst=dst))
    ah_spi, _s, _d, _alg, _i, ah_key, _hi = SAS["v4-bundle-ah"]
    out = []
    for i in range(3):
        inner = IP(src="10.1.0.1", dst="10.2.0.1", id=0x800 + i) / ICMP(type=8, id=11, seq=i) / Raw(b"bundle %d" % i)
        e = bytes(esp.encrypt(inner, seq_num=i + 1, iv=bytes([i]) * 16)[ESP])
        unsigned = bytes(IP(src=src, dst=dst, id=0x900 + i, proto=51) /
                         AH(nh=50, payloadlen=4, spi=ah_spi, seq=i + 1, icv=bytes(12)) / Raw(e))
        icv = hmac.new(ah_key, bytes(zero_mutable_fields(IP(unsigned), sending=True)), hashlib.sha1).digest()[:12]
        out.append(unsigned[:32] + icv + unsigned[44:])
    p = bytearray(out[2])
    p[-20] ^= 1  # an ESP ciphertext byte flipped on the path: the AH ICV (over it) fails first
    out[2] = bytes(p)
    return out


# ah-esn-wrap.pcap: packet i carries the full sequence number ESN_WRAP_FIRST + i; packets
# ESN_WRAP_BAD[0] <= i < ESN_WRAP_BAD[1] have one payload byte flipped after signing
ESN_WRAP_COUNT, ESN_WRAP_FIRST, ESN_WRAP_BAD = 640, (1 << 32) - 310, (300, 340)


def esn_wrap_packets() -> list[bytes]:
    """An ESN SA (RFC 4302 §2.5.1) whose 64-bit counter crosses 2^32 at packet 310, inside a run of
    40 packets corrupted on the path (300-339): equal-sized frames, so a run split in two at its
    byte middle (``decrypt -j 2``) starts its second chunk inside the corrupted run, after the
    crossing. Each packet is signed by scapy with the high bits it belongs to (§3.3.3.2.1)."""
    out = []
    s = sa("v4-esn-wrap")
    for i in range(ESN_WRAP_COUNT):
        full = ESN_WRAP_FIRST + i
        pkt = IP(src=A4, dst=B4, id=i & 0xFFFF) / UDP(sport=6000, dport=6001) / Raw(b"esn wrap %04d " % i * 4)
        p = bytes(s.encrypt(pkt, seq_num=full & 0xFFFFFFFF, esn_en=True, esn=full >> 32))
        if ESN_WRAP_BAD[0] <= i < ESN_WRAP_BAD[1]:
            p = p[:-3] + bytes([p[-3] ^ 0x01]) + p[-2:]
        out.append(p)
    return out


def quoted_packets() -> list[bytes]:
    """ICMP and ICMPv6 errors quoting AH packets (RFC 792: the datagram from its IP header on, at
    least 8 octets of it; RFC 1812 §4.3.2.3: up to 576 octets; RFC 4443 §2.4(c): as much as fits
    in 1280). The quoted packets are the same scapy-signed ones as ah-v4/ah-v6; the errors come
    from the peer (whole quotes) or from a router between (cut-off quotes)."""
    from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig

    router4, router6 = "198.18.9.9", "2001:db8:9::9"
    s1 = sa("v4-sha1")
    req = bytes(s1.encrypt(IP(src=A4, dst=B4, id=0x1000, ttl=64) / ICMP(type=8, id=12, seq=1) /
                           Raw(b"quoted ah " * 8), seq_num=1))
    opt = IP(src=A4, dst=B4, id=0x1001, options=[IPOption_Router_Alert(), IPOption_RR(routers=["0.0.0.0"])]) / \
        UDP(sport=5000, dport=5001) / Raw(b"options in the quote")
    p = bytearray(bytes(s1.encrypt(opt, seq_num=2)))
    rr = p.index(bytes([7]), 20)  # Record Route filled in by a router after signing (zeroed for the ICV)
    p[rr + 2], p[rr + 3:rr + 7] = 8, bytes([198, 18, 9, 9])
    opts = _v4_fix(bytes(p))
    bad = bytearray(bytes(s1.encrypt(IP(src=A4, dst=B4, id=0x1002) / UDP(sport=5000, dport=5001) /
                                     Raw(b"corrupted"), seq_num=3)))
    bad[-2] ^= 0x01
    s6 = sa("v6-sha384")
    hbh = HBHOptUnknown(otype=0x3E, optdata=b"\x00\x00\x00\x00")
    v6 = bytes(s6.encrypt(IPv6(src=A6, dst=B6, hlim=64) / IPv6ExtHdrHopByHop(options=[hbh]) / IPv6ExtHdrDestOpt() /
                          ICMPv6EchoRequest(id=6, seq=1, data=b"quoted ah v6 " * 8), seq_num=1))
    # big ones, too big for a link on the way: a router's error quotes their start only
    big4 = bytes(s1.encrypt(IP(src=A4, dst=B4, id=0x1003, flags="DF") / UDP(sport=5000, dport=5001) /
                            Raw(bytes(range(256)) * 6), seq_num=4))
    big6 = bytes(s6.encrypt(IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop(options=[hbh]) / UDP(sport=5000, dport=5001) /
                            Raw(bytes(range(256)) * 6), seq_num=2))
    tun = bytes(sa("v6-sha256-tunnel", IPv6(src=B6, dst=A6)).encrypt(
        IPv6(src="fd00:2::1", dst="fd00:1::1") / ICMPv6EchoReply(id=6, seq=2, data=b"tunnelled"), seq_num=1))
    return [
        req,
        bytes(IP(src=B4, dst=A4, id=0x2000) / ICMP(type=3, code=3) / Raw(req)),  # whole: verifies
        big4,  # RFC 1812 §4.3.2.3: at most 576 octets in all, so 548 of the quoted datagram
        bytes(IP(src=router4, dst=A4, id=0x2001) / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(big4[:548])),
        bytes(IP(src=B4, dst=A4, id=0x2002) / ICMP(type=3, code=3) / Raw(opts)),  # options in the quoted header
        bytes(IP(src=B4, dst=A4, id=0x2003) / ICMP(type=3, code=3) / Raw(bytes(bad))),  # whole, ICV fails
        bytes(IP(src=router4, dst=A4, id=0x2004) / ICMP(type=11, code=0) / Raw(req[:28])),  # RFC 792's minimum
        v6,
        bytes(IPv6(src=B6, dst=A6) / ICMPv6DestUnreach(code=4) / Raw(v6)),  # whole, behind HBH + DestOpt
        big6,  # RFC 4443 §2.4(c): the error fits in 1280 octets: 1232 of the quoted datagram
        bytes(IPv6(src=router6, dst=A6) / ICMPv6PacketTooBig(mtu=1280) / Raw(big6[:1232])),
        bytes(IPv6(src=A6, dst=B6) / ICMPv6DestUnreach(code=1) / Raw(tun)),  # tunnel mode, whole
    ]


def write(name: str, packets: list[bytes]) -> None:
    with PcapWriter(str(HERE / name), linktype=1, sync=True) as w:
        for i, raw in enumerate(packets):
            frame = (ETH4 if raw[0] >> 4 == 4 else ETH6) / Raw(raw)
            frame.time = 1767225600 + i * 0.25  # 2026-01-01 00:00:00 UTC
            w.write(frame)


def keys(names: list[str], where: str, **change) -> dict:
    out = []
    for n in names:
        spi, src, dst, _alg, integ, key, hi = SAS[n]
        e = {"spi": f"0x{spi:08x}", "src": src, "dst": dst, "protocol": "ah", "encr": "ENCR_NULL",
             "integ": integ, "auth_key": key.hex()}
        if hi is not None:
            e["esn"] = True
        e.update(change.get(n, {}))
        out.append(e)
    return {"schema": "ipsecscope.keys/1", "generator": f"tests/data/ah/make.py ({where})", "esp": out}


def dump(name: str, doc: dict) -> None:
    (HERE / name).write_text(json.dumps(doc, indent=1) + "\n")


XFRM_AUTH = {"AUTH_HMAC_SHA1_96": ("hmac(sha1)", 96), "AUTH_HMAC_SHA2_512_256": ("hmac(sha512)", 256),
             "AUTH_AES_CMAC_96": ("cmac(aes)", 96)}


def xfrm(names: list[str]) -> str:
    """The SAs as ``ip xfrm state`` prints them (iproute2 ip/ipxfrm.c: the kernel reports
    ``auth-trunc NAME 0xKEY BITS``), written by hand: this kernel has no XFRM AH to ask."""
    out = []
    for n in names:
        spi, src, dst, _alg, integ, key, hi = SAS[n]
        name, bits = XFRM_AUTH[integ]
        mode = "tunnel" if "tunnel" in n else "transport"
        out += [f"src {src} dst {dst}", f"\tproto ah spi 0x{spi:08x} reqid 1 mode {mode}",
                "\treplay-window 0 flag af-unspec" + (" esn" if hi is not None else ""),
                f"\tauth-trunc {name} 0x{key.hex()} {bits}",
                "\tanti-replay " + ("esn " if hi is not None else "") + "context: seq 0x0, oseq 0x0, bitmap 0x00000000",
                "\tsel src 0.0.0.0/0 dst 0.0.0.0/0 "]
    return "\n".join(out) + "\n"


def _dump(ts: str, label: str, key: bytes) -> list[str]:
    """A charon hex dump (``chunk_t`` printed by strongSwan's %B: 16 bytes a row)."""
    rows = [f"{ts} 06[CHD] <ah|1> {label} => {len(key)} bytes @ 0x7f0000001000"]
    for i in range(0, len(key), 16):
        part = key[i:i + 16]
        rows.append(f"{ts} 06[CHD] <ah|1> {i:4d}: " + " ".join(f"{b:02X}" for b in part).ljust(48) + "  "
                    + "".join(chr(b) if 32 <= b < 127 else "." for b in part))
    return rows


def charon() -> str:
    """The initiator's (198.18.0.1) charon log at ``chd 4`` for the v4-sha1 CHILD SA: AH with
    HMAC-SHA1-96 (the line formats of charon's child_sa.c / keymat_v2.c, as the healthy-gcm sample's
    real log prints them; written here because this kernel cannot install AH SAs)."""
    t = "2026-01-01T00:00:00.010"
    out = ["2026-01-01T00:00:00.000 13[ENC] <ah|1> generating IKE_AUTH request 1 [ IDi AUTH SA TSi TSr ]",
           f"{t} 06[ENC] <ah|1> parsed IKE_AUTH response 1 [ IDr AUTH SA TSi TSr ]",
           f"{t} 06[CFG] <ah|1> selected proposal: AH:HMAC_SHA1_96/NO_EXT_SEQ",
           f"{t} 06[CHD] <ah|1> CHILD_SA host{{1}} state change: CREATED => INSTALLING",
           f"{t} 06[CHD] <ah|1>   using HMAC_SHA1_96 for integrity"]
    out += _dump(t, "integrity initiator key", SAS["v4-sha1"][5])
    out += _dump(t, "integrity responder key", SAS["v4-sha1-back"][5])
    out += [f"{t} 06[CHD] <ah|1> adding inbound AH SA", f"{t} 06[CHD] <ah|1>   SPI 0xa4000002, src {B4} dst {A4}",
            f"{t} 06[CHD] <ah|1> adding outbound AH SA", f"{t} 06[CHD] <ah|1>   SPI 0xa4000001, src {A4} dst {B4}",
            f"{t} 06[IKE] <ah|1> CHILD_SA host{{1}} established with SPIs a4000002_i a4000001_o and TS {A4}/32 === {B4}/32",
            f"{t} 06[CHD] <ah|1> CHILD_SA host{{1}} state change: INSTALLING => INSTALLED"]
    return "\n".join(out) + "\n"


def main() -> None:
    write("ah-v4.pcap", v4_packets())
    write("ah-v6.pcap", v6_packets())
    write("ah-nat.pcap", nat_packets())
    write("ah-frag.pcap", frag_packets())
    write("ah-frag-options.pcap", frag_options_packets())
    write("ah-esp.pcap", bundle_packets())
    write("ah-esn-wrap.pcap", esn_wrap_packets())
    write("ah-quoted.pcap", quoted_packets())
    dump("ah-esn-wrap.keys.json", keys(["v4-esn-wrap"], "the signing key"))
    v4 = ["v4-sha1", "v4-sha1-back", "v4-sha512-tunnel", "v4-cmac-esn"]
    dump("ah-v4.keys.json", keys(v4, "the keys the packets were signed with"))
    dump("ah-v6.keys.json", keys(["v6-sha384", "v6-sha256-tunnel", "v6-md5-esn"], "the signing keys"))
    dump("ah-frag.keys.json", keys(["v4-sha1", "v6-sha384"], "the signing keys"))
    spi, src, dst, ekey, akey = ESP_BUNDLE
    bundle = keys(["v4-bundle-ah"], "the AH and ESP keys of the bundle")
    bundle["esp"].append({"spi": f"0x{spi:08x}", "src": src, "dst": dst, "encr": "ENCR_AES_CBC",
                          "enc_key": ekey.hex(), "integ": "AUTH_HMAC_SHA1_96", "auth_key": akey.hex()})
    dump("ah-esp.keys.json", bundle)
    dump("ah-nat.keys.json", keys(["v4-sha1"], "as logged behind the NAT", **{"v4-sha1": {"src": PRIV4}}))
    (HERE / "ah-v4.xfrm.txt").write_text(xfrm(v4))
    (HERE / "ah-v4-charon.log").write_text(charon())
    wrong = bytes(20)
    dump("ah-wrong.keys.json", keys(["v4-sha1"], "a wrong key", **{"v4-sha1": {"auth_key": wrong.hex()}}))


if __name__ == "__main__":
    main()
