"""Test captures made from real frames: an IKEv2 message encrypted again after an edit, and a
classic pcap cut down to chosen frames. Shared by the tests that derive impaired or altered
captures from a real sample (the keys come from the sample's charon log or key table)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def ip_checksum(b: bytes) -> int:
    """RFC 1071 one's-complement sum of an IPv4 header."""
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def reseal(frame: bytes, key: bytes, edit: Callable[[bytes], bytes] | None = None, *,
           inner: bytes | None = None, next_payload: int | None = None) -> bytes:
    """``frame`` (Ethernet / IPv4 / UDP 4500 / non-ESP marker / IKEv2 whose only payload is SK)
    with the SK payload's plaintext passed through ``edit`` (its padding removed first) or
    replaced by ``inner``, encrypted again with AES-GCM-16-256 (RFC 5282: ``key`` is the 32-byte
    key and 4-byte salt) under the same IV, with no padding; ``next_payload`` sets the SK
    payload's Next Payload. The IKE, UDP and IP lengths follow; the IP checksum is redone and the
    UDP checksum is 0 (none, IPv4)."""
    ihl = (frame[14] & 15) * 4
    at = 14 + ihl + 8 + 4
    ike = frame[at:]
    assert ike[16] == 46  # SK first
    iv = ike[32:40]
    if inner is None:
        assert edit is not None
        sklen = struct.unpack_from("!H", ike, 30)[0]
        plain = AESGCM(key[:32]).decrypt(key[32:] + iv, ike[40:28 + sklen], ike[:32])
        inner = edit(plain[:len(plain) - 1 - plain[-1]])
    inner = inner + b"\x00"  # pad length 0
    sklen = 4 + 8 + len(inner) + 16
    aad = bytearray(ike[:32])
    if next_payload is not None:
        aad[28] = next_payload
    struct.pack_into("!I", aad, 24, 28 + sklen)
    struct.pack_into("!H", aad, 30, sklen)
    new = bytearray(frame[:at]) + aad + iv + AESGCM(key[:32]).encrypt(key[32:] + iv, inner, bytes(aad))
    struct.pack_into("!H", new, 16, len(new) - 14)
    struct.pack_into("!H", new, 24, 0)
    struct.pack_into("!H", new, 24, ip_checksum(bytes(new[14:14 + ihl])))
    struct.pack_into("!HH", new, 14 + ihl + 4, len(new) - 14 - ihl, 0)
    return bytes(new)


def sk_key(frame: bytes, keys: dict[bytes, tuple[bytes, bytes]]) -> bytes:
    """The SK_e key of ``frame``'s IKE message from ``keys`` (SPIi -> (SK_ei, SK_er)): the
    initiator's messages (I flag) use SK_ei, the responder's SK_er (RFC 7296 §2.14)."""
    ike = frame[14 + (frame[14] & 15) * 4 + 12:]
    ei, er = keys[ike[:8]]
    return ei if ike[19] & 0x08 else er


def keep_frames(src: Path, keep: Iterable[int], dest: Path) -> Path:
    """The classic little-endian pcap ``src`` (24-octet file header, records of a 16-octet header
    and the frame) with only the frames numbered in ``keep``, written to ``dest``."""
    keep = set(keep)
    data = src.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1"
    out, off, n = [data[:24]], 24, 0
    while off < len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        n += 1
        if n in keep:
            out.append(data[off:off + 16 + incl])
        off += 16 + incl
    dest.write_bytes(b"".join(out))
    return dest
