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

Several keys for one cookie: with a pre-shared-key mismatch both peers run the same exchange but
derive different SKEYID_e, so each peer's log yields its own key and each peer's encrypted messages
decrypt only under that key (Wireshark keeps one key per cookie: the table's last row). We try every
key the store has and keep, per sender, the one whose plaintext is a sound payload chain. The IV
chain needs no per-key state: it is made of ciphertext blocks and hashes of g^xi|g^xr, which do not
depend on the key. What differs between the peers is *which* blocks they chained: a peer that could
not decrypt a phase-1 message (the mismatch case) does not move its phase-1 IV (strongSwan confirms
an IV only after processing a message), so its Informational reports use
``hash(initial phase-1 IV | M-ID)``. For the first message of a Message ID we therefore also try the
IVs of every earlier phase-1 state, newest first, and take the one that yields a sound chain.

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
from ipsecscope.decode.ike import parse_payload_chain
from ipsecscope.errors import DecryptError, UnknownAlgorithmError
from ipsecscope.model import iana
from ipsecscope.model.ike import IkeMessage
from ipsecscope.model.keys import Ikev1Keys

IKE_HDR_LEN = 28
MAX_REMEMBERED = 64  # encrypted messages per ISAKMP SA remembered to recognise retransmissions
MAX_P1_STATES = 8  # phase-1 IV states kept as fall-back IVs (a sound exchange has at most 3)
_KNOWN_V1_PAYLOADS = frozenset(int(t) for t in iana.Ikev1Payload if t)
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
    try:  # a damaged Key Length attribute can cut the key to a size the cipher refuses
        if cipher == 1:
            # Single DES = 3DES-EDE with K1 = K2 = K3 (cryptography has no plain DES).
            algo = TripleDES(key[:8] * 3)
        elif cipher == 5:
            algo = TripleDES(key[:24])
        else:
            algo = algorithms.AES(key)
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
    # raw -> (plaintext, frame, sound): retransmissions reuse the first decryption
    seen: dict[bytes, tuple[bytes, int, bool]] = field(default_factory=dict)
    # Every phase-1 IV state so far (initial IV, then the last block of each encrypted phase-1
    # message), oldest first: a peer that rejected a phase-1 message derives from an earlier one.
    p1_states: list[bytes] = field(default_factory=list)
    key_for: dict[object, bytes] = field(default_factory=dict)  # sender -> enc_key that worked

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
    # The plaintext is a sound payload chain (known types, zero RESERVED, plausible padding).
    # False: no key/IV tried gave one; ``plaintext`` is then what the first key and the chained IV
    # gave (a wrong key, a missing message, or a message its receiver could not read either).
    sound: bool = True


class _KeyLookup(Protocol):
    def ikev1_lookup(self, cookie_i: bytes) -> Ikev1Keys | None: ...


def sound_chain(first: int, plain: bytes, phase1: bool) -> bool:
    """Whether a decrypted IKEv1 body looks like what a peer encrypted, not like a wrong key's noise.

    Every payload must have a known type and RESERVED = 0 (RFC 2408 §3.2), the lengths must
    chain exactly, ``decode.ike.parse_payload_chain`` must find nothing malformed, and what is left
    is CBC padding: empty, all zero (strongSwan, Openswan), or ending in its own length minus one
    (Cisco-style, RFC 2409 §5.3 leaves the format open). A phase-1 message must start with a
    phase-1 payload (ID, HASH, SIG, CERT, CR, N, VID, NAT-D) rather than anything known.
    """
    if not first or first not in _KNOWN_V1_PAYLOADS:
        return False
    if phase1 and first not in (5, 6, 7, 8, 9, 11, 13, 20, 130):
        return False
    nxt, off, n = first, 0, len(plain)
    while nxt:
        if nxt not in _KNOWN_V1_PAYLOADS or off + 4 > n:
            return False
        nnxt, reserved, ln = _GEN.unpack_from(plain, off)
        if reserved or ln < 4 or off + ln > n:
            return False
        nxt, off = nnxt, off + ln
    pad = plain[off:]
    if pad and any(pad) and pad[-1] != len(pad) - 1:
        return False
    _inner, err = parse_payload_chain(first, plain, 1, IKE_HDR_LEN)
    return err is None


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

    def feed(self, raw: bytes, frame: int = 0, sender: object = None) -> V1Result | None:
        """Track or decrypt one IKEv1 message given as bytes (IKE header first).

        ``sender`` names the peer that sent it (the source address): the key that decrypted a
        sender's last message is tried first for its next one. Returns None for a cleartext
        message, a :class:`V1Result` for an encrypted one (``sound`` says whether any key and IV
        gave a sound payload chain). Raises :class:`DecryptError` (no key, phase 1 not seen, bad
        key) — :meth:`decrypt` turns that into a note.
        """
        raw = bytes(raw)
        if len(raw) < IKE_HDR_LEN:
            raise DecryptError(f"IKEv1 message of {len(raw)} bytes is shorter than its header")
        cookie_i, _cookie_r, first, _ver, exch, flags, msg_id, length = _HDR.unpack_from(raw)
        sa = self._sas.setdefault(cookie_i, _V1Sa())
        if not flags & 0x01:
            if msg_id == 0:
                self._note_phase1(sa, raw, exch)
            return None
        prev = sa.seen.get(raw)
        if prev is not None:
            self.stats.retransmissions += 1
            return V1Result(prev[0], b"", f"retransmission of frame {prev[1]}: decrypted with its IV", prev[2])
        keys = self._candidates(cookie_i)
        if not keys:
            self.stats.no_key += 1
            raise DecryptError(f"no IKEv1 key for initiator cookie {cookie_i.hex()}")
        mine = sa.key_for.get(sender)
        if mine is not None:  # this sender's key first, the others in the order loaded
            keys.sort(key=lambda k: k.enc_key != mine)
        # The block size, hence the IVs, depend on the negotiated cipher only, not on the key.
        block = self._block(sa, keys)
        body = raw[IKE_HDR_LEN:max(IKE_HDR_LEN, min(length, len(raw)))]
        if len(body) < block:
            raise DecryptError(f"encrypted IKEv1 body of {len(body)} bytes is shorter than one block")
        if not sa.p1_states:
            sa.p1_states.append(self._initial_iv(sa, block))
        # IVs to try, the RFC 2409 chain first; then the earlier phase-1 states (see module doc).
        older = [st for st in reversed(sa.p1_states) if st != sa.last_p1_block]
        if msg_id == 0:
            chained = sa.p1_iv if sa.p1_iv is not None else sa.p1_states[0]
            ivs = [(chained, None)] + [(st, "an earlier phase-1 IV") for st in older if st != chained]
        elif msg_id in sa.p2_iv:
            ivs = [(sa.p2_iv[msg_id], None)]
        else:
            if sa.last_p1_block is None:
                sa.last_p1_block = sa.p1_states[0]
                older = older[:-1]  # the initial state is now the chained one
            h = sa.hash_name()
            ivs = [(phase2_iv(h, sa.last_p1_block, msg_id, block), None)]
            ivs += [(phase2_iv(h, st, msg_id, block),
                     "IV from the initial phase-1 state: its sender never accepted an encrypted "
                     "phase-1 message" if st == sa.p1_states[0] else "IV from an earlier phase-1 state")
                    for st in older]
        first_try: tuple[bytes, bytes] | None = None
        chosen: tuple[bytes, bytes, Ikev1Keys, str | None] | None = None
        error: DecryptError | UnknownAlgorithmError | None = None
        for k in keys:
            try:
                encr, _block, key = sa.cipher(k.enc_key)
            except (DecryptError, UnknownAlgorithmError) as e:
                error = error or e
                continue
            for iv, why in ivs:
                try:
                    plain = cbc_decrypt(encr, key, iv, body)
                except (DecryptError, UnknownAlgorithmError) as e:
                    error = error or e
                    break
                if first_try is None:
                    first_try = (plain, iv)
                if sound_chain(first, plain, msg_id == 0):
                    chosen = (plain, iv, k, why)
                    break
            if chosen is not None:
                break
        if first_try is None:
            assert error is not None
            raise error
        usable = len(body) - len(body) % block
        last = body[usable - block:usable]  # key-independent: the chain is ciphertext
        if msg_id == 0:
            sa.p1_iv = sa.last_p1_block = last
            sa.p1_states.append(last)
            del sa.p1_states[1:-MAX_P1_STATES]  # keep the initial IV and the recent states
        else:
            sa.p2_iv[msg_id] = last
        if chosen is None:
            res = V1Result(first_try[0], first_try[1], None, False)
        else:
            plain, iv, k, why = chosen
            sa.key_for[sender] = k.enc_key
            notes = [why] if why else []
            if len(keys) > 1:
                notes.append(f"decrypted with IKEv1 key {self._candidates(cookie_i).index(k) + 1} of "
                             f"{len(keys)} for this cookie ({k.source or 'no source'})")
                if any(s != sender and ek != k.enc_key for s, ek in sa.key_for.items()):
                    notes.append("the peers encrypt with different phase-1 keys (different SKEYID_e): "
                                 "a pre-shared-key mismatch")
            res = V1Result(plain, iv, "; ".join(notes) or None, True)
        if len(sa.seen) >= MAX_REMEMBERED:
            del sa.seen[next(iter(sa.seen))]  # only recent messages get retransmitted
        sa.seen[raw] = (res.plaintext, frame, res.sound)
        return res

    @staticmethod
    def _block(sa: _V1Sa, keys: list[Ikev1Keys]) -> int:
        """Cipher block size; raises the first key's error when no key fits the cipher."""
        error: DecryptError | UnknownAlgorithmError | None = None
        for k in keys:
            try:
                return sa.cipher(k.enc_key)[1]
            except (DecryptError, UnknownAlgorithmError) as e:
                error = error or e
        assert error is not None
        raise error

    def _candidates(self, cookie_i: bytes) -> list[Ikev1Keys]:
        """Every key for the cookie: ``ikev1_candidates`` when the store has it, else the one lookup."""
        many = getattr(self.keys, "ikev1_candidates", None)
        if many is not None:
            return list(many(cookie_i))
        one = self.keys.ikev1_lookup(cookie_i)
        return [one] if one is not None else []

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
            res = self.feed(msg.raw, msg.frame, msg.src)
        except (DecryptError, UnknownAlgorithmError) as e:
            if "no IKEv1 key" not in str(e):
                self.stats.errors += 1
            return replace(msg, crypto_note=str(e))
        if res is None:
            return msg
        inner, err = parse_payload_chain(msg.header.next_payload, res.plaintext, 1, IKE_HDR_LEN)
        if err and not inner:
            self.stats.errors += 1
            n = len(self._candidates(msg.header.spi_i))
            tried = f"none of the {n} keys for this cookie fits" if n > 1 else "wrong key"
            return replace(msg, crypto_note=f"decrypted bytes are not a payload chain ({err}): {tried}, "
                                            "or a message of this exchange is missing from the capture",
                           key_tried=True)
        self.stats.decrypted += 1
        malformed = msg.malformed or (f"encrypted payloads: {err}" if err else None)
        note = res.note
        if not res.sound and not err:
            note = "; ".join(x for x in (note, "unusual payload chain (unknown type, RESERVED not zero "
                                               "or odd padding): check the key") if x)
        return replace(msg, inner=tuple(inner), decrypted=True, icv_ok=None, malformed=malformed,
                       crypto_note=note, key_tried=True)
