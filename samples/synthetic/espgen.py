"""Building blocks for synthetic ESP captures: an ESP *encryptor* written directly against
`cryptography` (deliberately not sharing code with ipsecscope's decryptor, so tests compare two
implementations), IPv4/IPv6/UDP/TCP/ICMP packet builders and a classic pcap writer.

Used by make_synthetic.py (the small committed samples) and benchmarks/bench_decrypt.py.
"""

from __future__ import annotations

import hmac
import ipaddress
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

# IANA transform IDs (RFC 7296 registries), spelled out so this file stands alone.
ENCR = {
    "null": 11, "aes-cbc": 12, "aes-ctr": 13, "3des": 3, "des": 2,
    "aes-ccm8": 14, "aes-ccm12": 15, "aes-ccm16": 16,
    "aes-gcm8": 18, "aes-gcm12": 19, "aes-gcm16": 20, "aes-gmac": 21, "chacha20poly1305": 28,
}
INTEG = {"none": 0, "md5": 1, "sha1": 2, "aesxcbc": 5, "sha256": 12, "sha384": 13, "sha512": 14}
# encr -> (salt length, IV length, block alignment, AEAD tag length)
_ENCR_SHAPE = {
    "null": (0, 0, 4, 0), "aes-cbc": (0, 16, 16, 0), "aes-ctr": (4, 8, 4, 0), "3des": (0, 8, 8, 0),
    "des": (0, 8, 8, 0), "aes-ccm8": (3, 8, 4, 8), "aes-ccm12": (3, 8, 4, 12), "aes-ccm16": (3, 8, 4, 16),
    "aes-gcm8": (4, 8, 4, 8), "aes-gcm12": (4, 8, 4, 12), "aes-gcm16": (4, 8, 4, 16),
    "aes-gmac": (4, 8, 4, 16), "chacha20poly1305": (4, 8, 4, 16),
}
# integ -> (hashlib name or None for XCBC, key length, ICV length)
_INTEG_SHAPE = {
    "none": (None, 0, 0), "md5": ("md5", 16, 12), "sha1": ("sha1", 20, 12), "aesxcbc": (None, 16, 12),
    "sha256": ("sha256", 32, 16), "sha384": ("sha384", 48, 24), "sha512": ("sha512", 64, 32),
}
# Wireshark 4.0 esp_sa UAT names; absent = Wireshark cannot decrypt it.
WS_ENCR = {
    "null": "NULL", "aes-cbc": "AES-CBC [RFC3602]", "aes-ctr": "AES-CTR [RFC3686]",
    "3des": "TripleDES-CBC [RFC2451]", "des": "DES-CBC [RFC2405]",
    "aes-gcm8": "AES-GCM with 8 octet ICV [RFC4106]", "aes-gcm12": "AES-GCM with 12 octet ICV [RFC4106]",
    "aes-gcm16": "AES-GCM with 16 octet ICV [RFC4106]",
}
WS_INTEG = {
    "none": "NULL", "md5": "HMAC-MD5-96 [RFC2403]", "sha1": "HMAC-SHA-1-96 [RFC2404]",
    "sha256": "HMAC-SHA-256-128 [RFC4868]", "sha384": "HMAC-SHA-384-192 [RFC4868]",
    "sha512": "HMAC-SHA-512-256 [RFC4868]",
}
JSON_ENCR = {
    "null": "ENCR_NULL", "aes-cbc": "ENCR_AES_CBC", "aes-ctr": "ENCR_AES_CTR", "3des": "ENCR_3DES",
    "des": "ENCR_DES", "aes-ccm8": "ENCR_AES_CCM_8", "aes-ccm12": "ENCR_AES_CCM_12",
    "aes-ccm16": "ENCR_AES_CCM_16", "aes-gcm8": "ENCR_AES_GCM_8", "aes-gcm12": "ENCR_AES_GCM_12",
    "aes-gcm16": "ENCR_AES_GCM_16", "aes-gmac": "ENCR_NULL_AUTH_AES_GMAC",
    "chacha20poly1305": "ENCR_CHACHA20_POLY1305",
}
JSON_INTEG = {
    "none": "NONE", "md5": "AUTH_HMAC_MD5_96", "sha1": "AUTH_HMAC_SHA1_96", "aesxcbc": "AUTH_AES_XCBC_96",
    "sha256": "AUTH_HMAC_SHA2_256_128", "sha384": "AUTH_HMAC_SHA2_384_192", "sha512": "AUTH_HMAC_SHA2_512_256",
}
# scapy.layers.ipsec names; absent = scapy cannot do it (AES-XCBC; GCM-8/12 are mis-encoded by
# scapy 2.6+'s AEAD path, which always appends a 16-byte tag).
SCAPY_ENCR = {
    "null": "NULL", "aes-cbc": "AES-CBC", "aes-ctr": "AES-CTR", "3des": "3DES", "des": "DES",
    "aes-gcm16": "AES-GCM", "aes-ccm8": "AES-CCM", "aes-ccm12": "AES-CCM", "aes-ccm16": "AES-CCM",
    "aes-gmac": "AES-NULL-GMAC", "chacha20poly1305": "CHACHA20-POLY1305",
}
SCAPY_INTEG = {
    "none": "NULL", "md5": "HMAC-MD5-96", "sha1": "HMAC-SHA1-96", "sha256": "SHA2-256-128",
    "sha384": "SHA2-384-192", "sha512": "SHA2-512-256",
}


@dataclass
class Sa:
    """One direction of a synthetic SA. ``enc_key`` includes the salt/nonce at its end."""

    spi: int
    src: str
    dst: str
    encr: str
    enc_key: bytes
    integ: str = "none"
    auth_key: bytes = b""
    esn: bool = False
    key_in_files: bool = True  # False: "SPI with no key"

    @property
    def icv_len(self) -> int:
        return _ENCR_SHAPE[self.encr][3] or _INTEG_SHAPE[self.integ][2]

    def esp_sa_line(self) -> str | None:
        if self.encr not in WS_ENCR or self.integ not in WS_INTEG:
            return None
        proto = "IPv6" if ":" in self.src else "IPv4"
        ek = "0x" + self.enc_key.hex() if self.enc_key else ""
        ak = "0x" + self.auth_key.hex() if self.auth_key else ""
        return (f'"{proto}","{self.src}","{self.dst}","0x{self.spi:08x}","{WS_ENCR[self.encr]}","{ek}",'
                f'"{WS_INTEG[self.integ]}","{ak}"')

    def json_entry(self, with_esn: bool = False) -> dict:
        d = {"spi": f"0x{self.spi:08x}", "src": self.src, "dst": self.dst, "encr": JSON_ENCR[self.encr],
             "enc_key": self.enc_key.hex(), "integ": JSON_INTEG[self.integ], "auth_key": self.auth_key.hex()}
        if with_esn:
            d["esn"] = self.esn
        return d


def key_sizes(encr: str, bits: int = 128) -> int:
    """Length of enc_key (with salt) for a cipher-key size in bits."""
    salt = _ENCR_SHAPE[encr][0]
    if encr == "null":
        return 0
    if encr == "3des":
        return 24
    if encr == "des":
        return 8
    if encr == "chacha20poly1305":
        return 32 + salt
    return bits // 8 + salt


def integ_key_len(integ: str) -> int:
    return _INTEG_SHAPE[integ][1]


def _xcbc(key: bytes, data: bytes) -> bytes:
    # RFC 3566 §4, written out block by block (an independent implementation from ipsecscope's).
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    k1, k2, k3 = (ecb.update(bytes([i]) * 16) for i in (1, 2, 3))
    e1 = Cipher(algorithms.AES(k1), modes.ECB()).encryptor()
    blocks = [data[i:i + 16] for i in range(0, len(data), 16)] or [b""]
    e = bytes(16)
    for b in blocks[:-1]:
        e = e1.update(bytes(x ^ y for x, y in zip(e, b, strict=True)))
    last = blocks[-1]
    if len(last) == 16:
        last = bytes(x ^ y for x, y in zip(last, k2, strict=True))
    else:
        last = last + b"\x80" + bytes(15 - len(last))
        last = bytes(x ^ y for x, y in zip(last, k3, strict=True))
    return e1.update(bytes(x ^ y for x, y in zip(e, last, strict=True)))


def esp_encrypt(sa: Sa, seq: int, payload: bytes, next_header: int, iv: bytes, tfc: int = 0) -> bytes:
    """ESP packet (SPI .. ICV) for ``payload`` with the full 64-bit sequence number ``seq``."""
    salt_len, iv_len, align, tag = _ENCR_SHAPE[sa.encr]
    iv = iv[:iv_len]
    body = payload + bytes(tfc)
    pad = (-(len(body) + 2)) % align
    plain = body + bytes(range(1, pad + 1)) + bytes((pad, next_header))
    seq_lo, seq_hi = seq & 0xFFFFFFFF, seq >> 32
    hdr = struct.pack("!II", sa.spi, seq_lo)
    aad = struct.pack("!III", sa.spi, seq_hi, seq_lo) if sa.esn else hdr
    key = sa.enc_key[:len(sa.enc_key) - salt_len]
    salt = sa.enc_key[len(sa.enc_key) - salt_len:]
    if sa.encr.startswith("aes-gcm"):
        ct = AESGCM(key).encrypt(salt + iv, plain, aad)
        ct = ct[:len(plain)] + ct[len(plain):len(plain) + tag]  # RFC 4106: truncated ICVs
        return hdr + iv + ct
    if sa.encr.startswith("aes-ccm"):
        return hdr + iv + AESCCM(key, tag_length=tag).encrypt(salt + iv, plain, aad)
    if sa.encr == "chacha20poly1305":
        return hdr + iv + ChaCha20Poly1305(key).encrypt(salt + iv, plain, aad)
    if sa.encr == "aes-gmac":
        return hdr + iv + plain + AESGCM(key).encrypt(salt + iv, b"", aad + iv + plain)
    if sa.encr == "aes-cbc":
        enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        ct = enc.update(plain) + enc.finalize()
    elif sa.encr in ("3des", "des"):
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES

        enc = Cipher(TripleDES(key if sa.encr == "3des" else key * 3), modes.CBC(iv)).encryptor()
        ct = enc.update(plain) + enc.finalize()
    elif sa.encr == "aes-ctr":
        enc = Cipher(algorithms.AES(key), modes.CTR(salt + iv + b"\x00\x00\x00\x01")).encryptor()
        ct = enc.update(plain) + enc.finalize()
    else:  # null
        ct = plain
    esp = hdr + iv + ct
    hname, _klen, icv = _INTEG_SHAPE[sa.integ]
    if icv:
        signed = esp + (struct.pack("!I", seq_hi) if sa.esn else b"")  # RFC 4303 §3.3.3
        mac = hmac.new(sa.auth_key, signed, hname).digest() if hname else _xcbc(sa.auth_key, signed)
        esp += mac[:icv]
    return esp


# --- packet builders ----------------------------------------------------------------------------

def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def with_udp_payload(frame: bytes, payload: bytes) -> bytes:
    """An Ethernet/IPv4/UDP ``frame`` carrying ``payload`` instead of its own: the IP total length
    and header checksum and the UDP length follow; the UDP checksum is 0 (none, RFC 768)."""
    ihl = (frame[14] & 15) * 4
    new = bytearray(frame[:14 + ihl + 8]) + payload
    struct.pack_into("!H", new, 16, len(new) - 14)
    struct.pack_into("!H", new, 24, 0)
    struct.pack_into("!H", new, 24, _csum(bytes(new[14:14 + ihl])))
    struct.pack_into("!HH", new, 14 + ihl + 4, len(new) - 14 - ihl, 0)
    return bytes(new)


def _a(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 0, ttl: int = 64) -> bytes:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, ttl, proto, 0,
                    _a(src), _a(dst))
    return h[:10] + struct.pack("!H", _csum(h)) + h[12:] + payload


def ipv6(src: str, dst: str, nh: int, payload: bytes, hlim: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nh, hlim, _a(src), _a(dst)) + payload


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    if ":" in src:
        return _a(src) + _a(dst) + struct.pack("!IxxxB", length, proto)
    return _a(src) + _a(dst) + struct.pack("!xBH", proto, length)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes, checksum: bool = True) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if checksum:
        c = _csum(_pseudo(src, dst, 17, len(seg)) + seg) or 0xFFFF
        seg = seg[:6] + struct.pack("!H", c) + seg[8:]
    return seg


def tcp(src: str, dst: str, sport: int, dport: int, seq: int, payload: bytes, flags: int = 0x18) -> bytes:
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, 1, 5 << 4, flags, 65535, 0, 0) + payload
    c = _csum(_pseudo(src, dst, 6, len(seg)) + seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def icmp_echo(ident: int, seq: int, payload: bytes, reply: bool = False) -> bytes:
    m = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, seq) + payload
    return m[:2] + struct.pack("!H", _csum(m)) + m[4:]


def icmpv6_echo(src: str, dst: str, ident: int, seq: int, payload: bytes) -> bytes:
    m = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + payload
    c = _csum(_pseudo(src, dst, 58, len(m)) + m)
    return m[:2] + struct.pack("!H", c) + m[4:]


def icmp_error(src: str, dst: str, itype: int, code: int, quoted: bytes, mtu: int = 0) -> bytes:
    """An ICMP (IPv4 ``src``) or ICMPv6 error message quoting ``quoted`` (RFC 792, RFC 4443 §3):
    the 4 octets after the checksum hold the next-hop MTU (RFC 1191 §4, RFC 4443 §3.2) or zero."""
    rest = struct.pack("!I", mtu) if ":" in src else struct.pack("!HH", 0, mtu)
    m = struct.pack("!BBH", itype, code, 0) + rest + quoted
    c = _csum(_pseudo(src, dst, 58, len(m)) + m) if ":" in src else _csum(m)
    return m[:2] + struct.pack("!H", c) + m[4:]


def ip_packet(src: str, dst: str, proto: int, payload: bytes, ident: int = 0) -> bytes:
    return ipv6(src, dst, proto, payload) if ":" in src else ipv4(src, dst, proto, payload, ident)


def ether(payload: bytes, v6: bool = False) -> bytes:
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + (b"\x86\xdd" if v6 else b"\x08\x00") + payload


def esp_frame(sa: Sa, esp: bytes, udp_encap: bool = False, ident: int = 0) -> bytes:
    """Ethernet frame carrying ``esp`` from sa.src to sa.dst, raw (proto 50) or in UDP 4500."""
    v6 = ":" in sa.src
    if udp_encap:
        # RFC 3948 §2.1: UDP checksum SHOULD be zero for IPv4 (IPv6 needs one).
        return ether(ip_packet(sa.src, sa.dst, 17, udp(sa.src, sa.dst, 4500, 4500, esp, checksum=v6), ident), v6)
    return ether(ip_packet(sa.src, sa.dst, 50, esp, ident), v6)


# --- pcap ---------------------------------------------------------------------------------------

class PcapWriter:
    """Classic pcap, nanosecond timestamps (magic a1b23c4d), Ethernet."""

    def __init__(self, path, linktype: int = 1) -> None:
        self.f = open(path, "wb")
        self.f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktype))

    def write(self, ts_ns: int, frame: bytes) -> None:
        self.f.write(struct.pack("<IIII", ts_ns // 1_000_000_000, ts_ns % 1_000_000_000, len(frame), len(frame)))
        self.f.write(frame)

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
