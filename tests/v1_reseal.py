"""Re-encrypting IKEv1 messages of samples/ikev1-dead-peer after their decrypted payloads changed.

The sample's phase-1 key (keys/ikev1_decryption_table, AES-CBC-256) decrypts Main Mode 5-6, Quick
Mode 7-9 and the DPD Informationals. A test edits the plaintext of some encrypted messages; every
encrypted message of an edited exchange is encrypted again on the IV chain of RFC 2409 Appendix B:
the first message of a Message ID keeps its IV (hash of the last phase-1 CBC block and the M-ID,
which no phase-2 edit changes), each later one starts from the last ciphertext block of the
previous message of its M-ID, so a changed length moves the chain as a peer's would.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import SAMPLES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from test_ikev1_crypto import TableKeys

from ipsecscope.capture import open_capture
from ipsecscope.crypto.ikev1 import Ikev1Decryptor

sys.path.insert(0, str(SAMPLES / "synthetic"))
from espgen import PcapWriter, _csum  # noqa: E402

SAMPLE = SAMPLES / "ikev1-dead-peer"
KEYS = SAMPLE / "keys"
Edit = Callable[[int, bytes], tuple[int, bytes]]  # (first payload type, plaintext) -> the same, changed


def _key() -> dict[bytes, bytes]:
    rows = {}
    for line in (KEYS / "ikev1_decryption_table").read_text().splitlines():
        if line and not line.startswith("#"):
            c, k = line.split(",")
            rows[bytes.fromhex(c)] = bytes.fromhex(k)
    return rows


def _ike_offset(frame: bytes) -> int | None:
    """Where the IKE header starts in an Ethernet/IPv4/UDP frame (500, or 4500 with the marker)."""
    if frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    udp = 14 + (frame[14] & 15) * 4
    sport, dport = struct.unpack_from("!HH", frame, udp)
    if 500 in (sport, dport):
        return udp + 8
    if 4500 in (sport, dport) and frame[udp + 8:udp + 12] == b"\0\0\0\0" and len(frame) >= udp + 12 + 28:
        return udp + 12
    return None


def frames() -> list[tuple[int, int, bytes]]:
    with open_capture(SAMPLE / "capture.pcapng") as r:
        return [(f.index, f.ts_ns, bytes(f.data)) for f in r]


def plaintexts() -> dict[int, tuple[bytes, bytes]]:
    """Frame -> (plaintext with its padding, IV it was decrypted with) of every encrypted message."""
    d = Ikev1Decryptor(TableKeys(_key()))
    out = {}
    for n, _ts, data in frames():
        at = _ike_offset(data)
        if at is not None:
            res = d.feed(data[at:], n, data[26:30])
            if res is not None:
                assert res.sound
                out[n] = (res.plaintext, res.iv)
    return out


def _frame_with(data: bytes, at: int, ike: bytes) -> bytes:
    new = bytearray(data[:at]) + ike
    ihl = (new[14] & 15) * 4
    struct.pack_into("!H", new, 16, len(new) - 14)
    struct.pack_into("!H", new, 24, 0)
    struct.pack_into("!H", new, 24, _csum(bytes(new[14:14 + ihl])))
    struct.pack_into("!HH", new, 14 + ihl + 4, len(new) - 14 - ihl, 0)
    return bytes(new)


def write_mutant(path: Path, edits: dict[int, Edit]) -> None:
    """The sample with ``edits[frame]`` applied to those frames' plaintext, re-encrypted on the chain."""
    key = _key()
    plains = plaintexts()
    chain: dict[int, bytes] = {}  # M-ID -> last ciphertext block, once an edit moved it
    with PcapWriter(path) as w:
        for n, ts, data in frames():
            at = _ike_offset(data)
            if at is None or n not in plains:
                w.write(ts, data)
                continue
            ike = data[at:]
            msg_id = struct.unpack_from("!I", ike, 20)[0]
            if n not in edits and msg_id not in chain:
                w.write(ts, data)
                continue
            plain, iv = plains[n]
            first = ike[16]
            if n in edits:
                first, plain = edits[n](first, plain)
                plain += bytes(-len(plain) % 16)
            iv = chain.get(msg_id, iv)
            enc = Cipher(algorithms.AES(key[ike[:8]]), modes.CBC(iv)).encryptor()
            ct = enc.update(plain) + enc.finalize()
            if ct:  # an emptied body moves no chain
                chain[msg_id] = ct[-16:]
            hdr = bytearray(ike[:28])
            hdr[16] = first
            struct.pack_into("!I", hdr, 24, 28 + len(ct))
            w.write(ts, _frame_with(data, at, bytes(hdr) + ct))


def walk(first: int, chain: bytes) -> tuple[list[tuple[int, int, bytes]], bytes]:
    """ISAKMP payloads of a plaintext: [(type, next, body)], and what follows the last (padding)."""
    out, nxt, off = [], first, 0
    while nxt:
        n, _r, ln = struct.unpack_from("!BBH", chain, off)
        out.append((nxt, n, chain[off + 4:off + ln]))
        nxt, off = n, off + ln
    return out, chain[off:]


def join(payloads: list[tuple[int, int, bytes]], tail: bytes = b"") -> bytes:
    return b"".join(struct.pack("!BBH", n, 0, 4 + len(b)) + b for _t, n, b in payloads) + tail
