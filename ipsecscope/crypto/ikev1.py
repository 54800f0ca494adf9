"""IKEv1 decryption: phase 1 (Main / Aggressive Mode) and phase 2 (Quick Mode, Informational,
Transaction/Config Mode), with the IV chains of RFC 2409 Appendix B.

Keys come from Wireshark's ``ikev1_decryption_table``: per initiator cookie, the phase-1
encryption key derived from SKEYID_e and already expanded to the cipher's key length. The cipher
and hash are the ones the responder chose in the phase-1 SA (attributes Encryption Algorithm (1),
Hash Algorithm (2), Key Length (14), RFC 2409 Appendix A).

IVs (RFC 2409 Appendix B):

* phase 1: ``IV = hash(g^xi | g^xr)`` truncated to the cipher block; each later phase-1 message uses
  the last ciphertext block of the previous encrypted phase-1 message.
* phase 2 / Informational / Transaction: per Message ID,
  ``IV = hash(last phase-1 CBC output block | M-ID)``; then, within that exchange, the last
  ciphertext block of the previous message of the same Message ID. Several exchanges can be in
  flight at once (Wireshark bug 12610), so there is one chain per Message ID.
* An Aggressive Mode phase 1 that is not encrypted at all (Wireshark bug 12620) leaves the
  initial phase-1 IV as the "last phase-1 block".
* A byte-identical retransmission is decrypted with the IV its original used and does not move the
  chain (Wireshark 4.0 gets ikev1-certs frame 8 wrong here).

Decryption needs the KE payloads of phase 1 (g^xi, g^xr), so :class:`Ikev1Decryptor` has to see
every IKEv1 message in capture order, cleartext ones included. Everything here works on the raw
message bytes; the decoded payloads only come back through ``decode.ike.parse_payload_chain``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Protocol

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ipsecscope.crypto.prf import hash_digest
from ipsecscope.errors import DecryptError, UnknownAlgorithmError
from ipsecscope.model.ike import IkeMessage
from ipsecscope.model.keys import Ikev1Keys

IKE_HDR_LEN = 28
MAX_REMEMBERED = 64  # encrypted messages per ISAKMP SA remembered to recognise retransmissions
_HDR = struct.Struct("!8s8sBBBBII")
_GEN = struct.Struct("!BBH")

# IKEv1 payload types (RFC 2408 §3.1) and exchange types (RFC 2408 §3.1, RFC 2409 §5)
V1_SA, V1_KE = 1, 4
EXCH_MAIN, EXCH_AGGRESSIVE = 2, 4

# Phase-1 SA attribute classes (RFC 2409 Appendix A)
ATTR_ENCR, ATTR_HASH, ATTR_KEY_LENGTH = 1, 2, 14

# Encryption Algorithm attribute value -> (name, block size, default key length in bytes)
V1_CIPHERS: dict[int, tuple[str, int, int]] = {
    1: ("DES-CBC", 8, 8),
    5: ("3DES-CBC", 8, 24),
    7: ("AES-CBC", 16, 16),  # key length attribute required (RFC 3602 §5.3); 128 if absent
}
# Hash Algorithm attribute value -> hashlib name
V1_HASHES: dict[int, str] = {1: "md5", 2: "sha1", 4: "sha256", 5: "sha384", 6: "sha512"}


def phase1_iv(hash_name: str, gxi: bytes, gxr: bytes, block: int) -> bytes:
    """RFC 2409 Appendix B: the first phase-1 IV."""
    return hash_digest(hash_name, gxi + gxr)[:block]


def phase2_iv(hash_name: str, last_phase1_block: bytes, msg_id: int, block: int) -> bytes:
    """RFC 2409 Appendix B: the first IV of the exchange with Message ID ``msg_id``."""
    return hash_digest(hash_name, last_phase1_block + msg_id.to_bytes(4, "big"))[:block]


def cbc_decrypt(cipher: int, key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """Decrypt an IKEv1 message body (everything after the 28-byte header) in CBC mode."""
    try:
        _name, block, _klen = V1_CIPHERS[cipher]
    except KeyError:
        raise UnknownAlgorithmError(f"IKEv1 encryption algorithm {cipher} is not implemented; supported: "
                                    "DES-CBC (1), 3DES-CBC (5), AES-CBC (7)") from None
    usable = len(ciphertext) - len(ciphertext) % block
    if cipher == 1:
        # Single DES = 3DES-EDE with K1 = K2 = K3 (cryptography has no plain DES).
        algo = TripleDES(key[:8] * 3)
    elif cipher == 5:
        algo = TripleDES(key[:24])
    else:
        algo = algorithms.AES(key)
    try:
        d = Cipher(algo, modes.CBC(iv)).decryptor()
    except ValueError as e:
        raise DecryptError(f"IKEv1 key of {len(key)} bytes does not fit {V1_CIPHERS[cipher][0]}: {e}") from None
    return d.update(ciphertext[:usable]) + d.finalize()


def _payloads(msg: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of the cleartext payload chain; stops quietly at the first broken length."""
    out: list[tuple[int, bytes]] = []
    nxt, off = msg[16], IKE_HDR_LEN
    while nxt and off + 4 <= len(msg):
        n, _r, ln = _GEN.unpack_from(msg, off)
        if ln < 4 or off + ln > len(msg):
            break
        out.append((nxt, msg[off + 4:off + ln]))
        nxt, off = n, off + ln
    return out


def _sa_attributes(body: bytes) -> dict[int, int]:
    """Attributes of the first transform of the first proposal of an IKEv1 SA payload (RFC 2408 §3.4-3.6)."""
    attrs: dict[int, int] = {}
    if len(body) < 8 + 8:
        return attrs
    off = 8  # DOI, Situation (SIT_IDENTITY_ONLY: no labeled domain fields follow)
    _n, _r, plen = _GEN.unpack_from(body, off)
    spi_size, ntrans = body[off + 6], body[off + 7]
    t = off + 8 + spi_size
    if ntrans == 0 or t + 8 > len(body):
        return attrs
    _n, _r, tlen = _GEN.unpack_from(body, t)
    a, end = t + 8, min(t + tlen, len(body))
    while a + 4 <= end:
        typ, val = struct.unpack_from("!HH", body, a)
        if typ & 0x8000:  # TV
            attrs[typ & 0x7FFF] = val
            a += 4
        else:  # TLV
            v = body[a + 4:a + 4 + val]
            attrs[typ] = int.from_bytes(v, "big") if v else 0
            a += 4 + val
    return attrs


@dataclass(slots=True)
class _V1Sa:
    """What the decryptor knows about one ISAKMP SA (by initiator cookie)."""

    attrs: dict[int, int] = field(default_factory=dict)  # chosen phase-1 transform
    gxi: bytes | None = None
    gxr: bytes | None = None
    p1_iv: bytes | None = None  # IV for the next encrypted phase-1 message
    last_p1_block: bytes | None = None  # RFC 2409 App. B "last phase 1 CBC output block"
    p2_iv: dict[int, bytes] = field(default_factory=dict)  # Message ID -> IV of its next message
    seen: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)  # raw -> (plaintext, frame)

    def cipher(self, key: bytes) -> tuple[int, int, bytes]:
        """(cipher id, block size, key cut to the negotiated length)."""
        encr = self.attrs.get(ATTR_ENCR)
        if encr is None:  # no SA seen: guess from the key length (AES for 16/32, 3DES for 24)
            encr = {8: 1, 24: 5}.get(len(key), 7)
        if encr not in V1_CIPHERS:
            raise UnknownAlgorithmError(f"IKEv1 encryption algorithm {encr} is not implemented; "
                                        "supported: DES-CBC (1), 3DES-CBC (5), AES-CBC (7)")
        _name, block, klen = V1_CIPHERS[encr]
        if encr == 7:
            klen = self.attrs.get(ATTR_KEY_LENGTH, 128) // 8
        if len(key) < klen:
            raise DecryptError(f"IKEv1 key is {len(key)} bytes but {V1_CIPHERS[encr][0]} needs {klen}: "
                               "the table wants the key derived from SKEYID_e, expanded to the key length")
        return encr, block, key[:klen]

    def hash_name(self) -> str:
        h = self.attrs.get(ATTR_HASH)
        if h is None:
            raise DecryptError("phase-1 SA not seen: the hash algorithm for the IV is unknown "
                               "(capture the whole Main/Aggressive Mode exchange)")
        try:
            return V1_HASHES[h]
        except KeyError:
            raise UnknownAlgorithmError(f"IKEv1 hash algorithm {h} is not implemented") from None


@dataclass(slots=True)
class V1Result:
    plaintext: bytes
    iv: bytes
    note: str | None = None


class _KeyLookup(Protocol):
    def ikev1_lookup(self, cookie_i: bytes) -> Ikev1Keys | None: ...


@dataclass(slots=True)
class Ikev1Stats:
    decrypted: int = 0
    no_key: int = 0
    errors: int = 0
    retransmissions: int = 0


class Ikev1Decryptor:
    """Stateful IKEv1 decryptor; feed it every IKEv1 message in capture order.

    ``decrypt(msg)`` returns the message unchanged when it is not encrypted (after noting its SA
    and KE payloads), or a copy with ``inner`` and ``decrypted`` set. IKEv1 has no ICV, so
    ``icv_ok`` stays None; a decryption that does not yield a sound payload chain (wrong key, IV
    chain broken by a missing message) is reported in ``crypto_note`` and not marked decrypted.
    Never raises.
    """

    def __init__(self, keys: _KeyLookup) -> None:
        self.keys = keys
        self.stats = Ikev1Stats()
        self._sas: dict[bytes, _V1Sa] = {}

    # -- raw-bytes core -----------------------------------------------------------------------

    def feed(self, raw: bytes, frame: int = 0) -> V1Result | None:
        """Track or decrypt one IKEv1 message given as bytes (IKE header first).

        Returns None for a cleartext message, a :class:`V1Result` for an encrypted one. Raises
        :class:`DecryptError` (no key, phase 1 not seen, bad key) — :meth:`decrypt` turns that
        into a note.
        """
        raw = bytes(raw)
        if len(raw) < IKE_HDR_LEN:
            raise DecryptError(f"IKEv1 message of {len(raw)} bytes is shorter than its header")
        cookie_i, _cookie_r, _np, _ver, exch, flags, msg_id, length = _HDR.unpack_from(raw)
        sa = self._sas.setdefault(cookie_i, _V1Sa())
        if not flags & 0x01:
            if msg_id == 0:
                self._note_phase1(sa, raw, exch)
            return None
        prev = sa.seen.get(raw)
        if prev is not None:
            self.stats.retransmissions += 1
            return V1Result(prev[0], b"", f"retransmission of frame {prev[1]}: decrypted with its IV")
        keys = self.keys.ikev1_lookup(cookie_i)
        if keys is None:
            self.stats.no_key += 1
            raise DecryptError(f"no IKEv1 key for initiator cookie {cookie_i.hex()}")
        encr, block, key = sa.cipher(keys.enc_key)
        body = raw[IKE_HDR_LEN:max(IKE_HDR_LEN, min(length, len(raw)))]
        if len(body) < block:
            raise DecryptError(f"encrypted IKEv1 body of {len(body)} bytes is shorter than one block")
        if msg_id == 0:
            if sa.p1_iv is None:
                sa.p1_iv = self._initial_iv(sa, block)
            iv = sa.p1_iv
        else:
            iv = sa.p2_iv.get(msg_id)
            if iv is None:
                if sa.last_p1_block is None:
                    sa.last_p1_block = self._initial_iv(sa, block)
                iv = phase2_iv(sa.hash_name(), sa.last_p1_block, msg_id, block)
        plain = cbc_decrypt(encr, key, iv, body)
        last = body[len(body) - len(body) % block - block:len(body) - len(body) % block]
        if msg_id == 0:
            sa.p1_iv = sa.last_p1_block = last
        else:
            sa.p2_iv[msg_id] = last
        if len(sa.seen) >= MAX_REMEMBERED:
            del sa.seen[next(iter(sa.seen))]  # only recent messages get retransmitted
        sa.seen[raw] = (plain, frame)
        return V1Result(plain, iv)

    def _initial_iv(self, sa: _V1Sa, block: int) -> bytes:
        if sa.gxi is None or sa.gxr is None:
            raise DecryptError("the phase-1 KE payloads (g^xi, g^xr) were not seen, so the IV cannot be "
                               "derived: capture the whole Main/Aggressive Mode exchange")
        return phase1_iv(sa.hash_name(), sa.gxi, sa.gxr, block)

    @staticmethod
    def _note_phase1(sa: _V1Sa, raw: bytes, exch: int) -> None:
        for typ, body in _payloads(raw):
            if typ == V1_SA:
                # The initiator offers, the responder answers with the one it chose: the last SA
                # payload of phase 1 is the negotiated one.
                attrs = _sa_attributes(body)
                if attrs:
                    sa.attrs = attrs
            elif typ == V1_KE:
                if sa.gxi is None:
                    sa.gxi = body
                elif body != sa.gxi:
                    sa.gxr = body
        del exch  # Main (2) and Aggressive (4) carry KE in different messages; order is what counts

    # -- IkeMessage front end -----------------------------------------------------------------

    def decrypt(self, msg: IkeMessage) -> IkeMessage:
        if msg.header.major != 1 or msg.decrypted:
            return msg
        try:
            res = self.feed(msg.raw, msg.frame)
        except (DecryptError, UnknownAlgorithmError) as e:
            if "no IKEv1 key" not in str(e):
                self.stats.errors += 1
            return replace(msg, crypto_note=str(e))
        if res is None:
            return msg
        from ipsecscope.decode.ike import parse_payload_chain

        inner, err = parse_payload_chain(msg.header.next_payload, res.plaintext, 1, IKE_HDR_LEN)
        if err and not inner:
            self.stats.errors += 1
            return replace(msg, crypto_note=f"decrypted bytes are not a payload chain ({err}): wrong key, "
                                            "or a message of this exchange is missing from the capture")
        self.stats.decrypted += 1
        malformed = msg.malformed or (f"encrypted payloads: {err}" if err else None)
        return replace(msg, inner=tuple(inner), decrypted=True, icv_ok=None, malformed=malformed,
                       crypto_note=res.note)
