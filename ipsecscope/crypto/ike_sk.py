"""IKEv2 SK / SKF payload decryption and integrity check (RFC 7296 §3.14, RFC 5282, RFC 7383).

Two layers, like ``cryptography``'s recipes over hazmat:

* :func:`decrypt_sk` — a pure function over the message bytes and one :class:`IkeSaKeys`;
  every authentication failure raises the one :class:`~ipsecscope.errors.IntegrityError`, any
  other failure (truncated payload, bad padding, bad key length) a
  :class:`~ipsecscope.errors.DecryptError`.
* :class:`IkeDecryptor` — stateful, over a key store: picks keys by (SPIi, SPIr), direction by the
  header's I flag, buffers SKF fragments until complete, and returns a *copy* of the
  :class:`~ipsecscope.model.ike.IkeMessage` with ``inner``/``decrypted``/``icv_ok`` set. It never
  raises for bad keys or bad data: it counts and leaves the message as it was. IKEv1 messages are
  handed to :class:`ipsecscope.crypto.ikev1.Ikev1Decryptor`.

Wire layout (RFC 7296 §3.14)::

    IKE header | ... | SK generic header (4) | [SKF: frag no (2) | total (2)] | IV | ciphertext | ICV

* Non-AEAD: the ICV is a MAC (SK_ai / SK_ar) over the message from the first octet of the IKE
  header to the last octet before the ICV. Checked *before* decrypting.
* AEAD (RFC 5282 §5.1, RFC 7634 §3): AAD = the message from the IKE header to the end of the SK
  (or SKF, with its fragment fields, RFC 7383 §2.5) header, i.e. every octet before the IV;
  nonce = salt (trailing bytes of SK_e) | IV.
* Plaintext ends with the Pad Length octet; padding and that octet are removed.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, ChaCha20Poly1305

from ipsecscope.crypto.prf import INTEG, mac
from ipsecscope.decode.fragsets import PendingSets
from ipsecscope.errors import DecryptError, IntegrityError, UnknownAlgorithmError
from ipsecscope.model.iana import EncrTransform as E
from ipsecscope.model.iana import IntegTransform, name
from ipsecscope.model.ike import IkeMessage, SkPayload
from ipsecscope.model.keys import IkeSaKeys, Ikev1Keys
from ipsecscope.model.plural import with_article

IKE_HDR_LEN = 28
_GEN_HDR = struct.Struct("!BBH")  # next payload, critical/reserved, payload length
_SKF_FIELDS = struct.Struct("!HH")  # fragment number, total fragments (RFC 7383 §2.5)
SK, SKF = 46, 53
MAX_PENDING_FRAGMENT_SETS = 1024  # incomplete SKF messages kept at once (oldest dropped first)


@dataclass(frozen=True, slots=True)
class IkeCipher:
    """One IKEv2 encryption transform as the SK payload uses it. Data, not branches."""

    mode: str  # "cbc" | "ctr" | "gcm" | "ccm" | "chacha" | "null"
    block: int  # cipher block size (CBC plaintext must be a multiple of it)
    iv_len: int
    salt_len: int  # trailing bytes of SK_e that are not cipher key (nonce/salt)
    icv_len: int  # AEAD tag length; 0 for non-AEAD (the integrity transform sets it)

    @property
    def aead(self) -> bool:
        return self.icv_len > 0


# RFC 7296 §3.3.2 / RFC 5282 §7 / RFC 5930 / RFC 7634. IKE-specific view (the ESP registry lives in
# crypto.suites): e.g. CTR in IKE is RFC 5930 = RFC 3686 with an 8-octet IV and 4-octet nonce.
CIPHERS: dict[int, IkeCipher] = {
    E.ENCR_NULL: IkeCipher("null", 1, 0, 0, 0),
    E.ENCR_3DES: IkeCipher("cbc", 8, 8, 0, 0),
    E.ENCR_AES_CBC: IkeCipher("cbc", 16, 16, 0, 0),
    E.ENCR_AES_CTR: IkeCipher("ctr", 1, 8, 4, 0),
    E.ENCR_AES_CCM_8: IkeCipher("ccm", 1, 8, 3, 8),
    E.ENCR_AES_CCM_12: IkeCipher("ccm", 1, 8, 3, 12),
    E.ENCR_AES_CCM_16: IkeCipher("ccm", 1, 8, 3, 16),
    E.ENCR_AES_GCM_8: IkeCipher("gcm", 1, 8, 4, 8),
    E.ENCR_AES_GCM_12: IkeCipher("gcm", 1, 8, 4, 12),
    E.ENCR_AES_GCM_16: IkeCipher("gcm", 1, 8, 4, 16),
    E.ENCR_CHACHA20_POLY1305: IkeCipher("chacha", 1, 8, 4, 16),
}


def cipher_for(encr: int) -> IkeCipher:
    try:
        return CIPHERS[encr]
    except KeyError:
        raise UnknownAlgorithmError(
            f"IKE encryption algorithm {name(E, encr)} is not implemented; supported: "
            + ", ".join(name(E, e) for e in CIPHERS)) from None


def icv_length(keys: IkeSaKeys) -> int:
    """Bytes of ICV at the end of the SK payload for these keys."""
    c = cipher_for(keys.encr)
    if c.aead:
        return c.icv_len
    if not keys.check_integrity:
        if keys.icv_len is not None:
            return keys.icv_len
    if keys.integ == IntegTransform.NONE:
        return keys.icv_len or 0
    try:
        return INTEG[keys.integ][3]
    except KeyError:
        raise UnknownAlgorithmError(
            f"integrity algorithm {name(IntegTransform, keys.integ)} is not implemented") from None


def integrity_checked(keys: IkeSaKeys) -> bool:
    """True when :func:`decrypt_sk` authenticates with these keys (AEAD tag or a real MAC)."""
    c = cipher_for(keys.encr)
    return c.aead or (keys.check_integrity and keys.integ != IntegTransform.NONE)


def find_sk(message: bytes) -> tuple[int, int, int] | None:
    """Walk the cleartext payload chain: (offset, type, first inner payload) of the SK/SKF payload.

    For scripts that hold raw message bytes; the decode stage records the same offset in
    :class:`~ipsecscope.model.ike.SkPayload`. None when there is no SK/SKF or the chain is broken.
    """
    if len(message) < IKE_HDR_LEN:
        return None
    nxt = message[16]
    off = IKE_HDR_LEN
    while nxt and off + 4 <= len(message):
        inner, _crit, plen = _GEN_HDR.unpack_from(message, off)
        if nxt in (SK, SKF):
            return off, nxt, inner
        if plen < 4:
            return None
        nxt, off = inner, off + plen
    return None


def _direction_keys(keys: IkeSaKeys, from_initiator: bool) -> tuple[bytes, bytes]:
    return (keys.sk_ei, keys.sk_ai) if from_initiator else (keys.sk_er, keys.sk_ar)


def _cbc(encr: int, key: bytes) -> Callable[[bytes], object]:
    algo = TripleDES if encr == E.ENCR_3DES else algorithms.AES
    return lambda iv: Cipher(algo(key), modes.CBC(iv)).decryptor()


def decrypt_sk(message: bytes, sk_offset: int, keys: IkeSaKeys, from_initiator: bool, *,
               skf: bool | None = None) -> tuple[int, bytes]:
    """Decrypt the SK (or SKF) payload at ``sk_offset`` of ``message``.

    Returns ``(first_payload, plaintext)`` with padding and Pad Length removed; for an SKF
    fragment the plaintext is that fragment's share of the inner payloads. ``skf`` says whether the
    payload at ``sk_offset`` is an SKF; None = find out by walking the chain.

    Raises :class:`IntegrityError` when the ICV/tag does not verify (wrong key, wrong algorithm,
    corruption), :class:`DecryptError` when the payload is too short or the padding is impossible,
    :class:`UnknownAlgorithmError` for an algorithm not in :data:`CIPHERS` / ``prf.INTEG``.
    """
    message = bytes(message)
    if sk_offset + 4 > len(message):
        raise DecryptError(f"SK payload header at offset {sk_offset} is past the end of the "
                           f"{len(message)}-byte message")
    first, _crit, plen = _GEN_HDR.unpack_from(message, sk_offset)
    if skf is None:
        found = find_sk(message)
        skf = found is not None and found[0] == sk_offset and found[1] == SKF
    end = sk_offset + plen
    if plen < 4 or end > len(message):
        raise DecryptError(f"SK payload length {plen} does not fit the {len(message)}-byte message "
                           "(truncated capture?)")
    hdr_end = sk_offset + (8 if skf else 4)
    c = cipher_for(keys.encr)
    icv_len = icv_length(keys)
    enc_key, auth_key = _direction_keys(keys, from_initiator)
    if len(enc_key) <= c.salt_len:
        raise DecryptError(f"SK_e{'i' if from_initiator else 'r'} is {len(enc_key)} bytes, too short for "
                           f"{name(E, keys.encr)} (key plus {c.salt_len}-byte salt): check the key table")
    body_len = end - hdr_end - c.iv_len - icv_len
    if body_len < (0 if c.mode == "null" else 1):
        raise DecryptError(f"SK payload of {plen} bytes is too short for {with_article(f'{c.iv_len}-byte')} IV and "
                           f"{with_article(f'{icv_len}-byte')} ICV")
    iv = message[hdr_end:hdr_end + c.iv_len]
    ct = message[hdr_end + c.iv_len:end - icv_len]
    icv = message[end - icv_len:end]
    key, salt = (enc_key[:-c.salt_len], enc_key[-c.salt_len:]) if c.salt_len else (enc_key, b"")

    try:
        if c.aead:
            aad = message[:hdr_end]
            plain = _aead_decrypt(c, key, salt + iv, ct, icv, aad)
        else:
            if integrity_checked(keys):
                want = mac(keys.integ, auth_key, message[:end - icv_len])
                if not hmac.compare_digest(want, icv):
                    raise IntegrityError(
                        f"ICV mismatch ({name(IntegTransform, keys.integ)} with SK_a"
                        f"{'i' if from_initiator else 'r'}): wrong key, wrong algorithm or corrupted message")
            if c.mode == "cbc":
                if len(ct) % c.block:
                    raise DecryptError(f"ciphertext of {len(ct)} bytes is not a multiple of the "
                                       f"{c.block}-byte block of {name(E, keys.encr)}")
                d = _cbc(keys.encr, key)(iv)
                plain = d.update(ct) + d.finalize()
            elif c.mode == "ctr":
                # RFC 5930 §2 (as RFC 3686 §4): counter block = nonce | IV | 32-bit counter from 1.
                d = Cipher(algorithms.AES(key), modes.CTR(salt + iv + b"\x00\x00\x00\x01")).decryptor()
                plain = d.update(ct) + d.finalize()
            else:  # null
                plain = ct
    except ValueError as e:  # key length the cipher does not accept, etc.
        raise DecryptError(f"{name(E, keys.encr)}: {e} (key of {len(key)} bytes): check the key table") from None
    if not plain:
        raise DecryptError("SK payload decrypts to nothing (no Pad Length octet)")
    pad = plain[-1]
    if pad + 1 > len(plain):
        raise DecryptError(f"Pad Length {pad} is longer than the {len(plain)}-byte plaintext: "
                           "wrong key (integrity not checked) or corrupted message")
    return first, plain[:len(plain) - 1 - pad]


def decrypt_message(message: bytes, keys: IkeSaKeys) -> tuple[int, bytes]:
    """Decrypt a whole IKEv2 message given as bytes: finds the SK/SKF payload and takes the
    direction from the header's I flag. Same return value and errors as :func:`decrypt_sk`."""
    message = bytes(message)
    found = find_sk(message)
    if found is None:
        raise DecryptError("no SK or SKF payload in this message (not encrypted, or its payload chain is broken)")
    return decrypt_sk(message, found[0], keys, bool(message[19] & 0x08), skf=found[1] == SKF)


def _aead_decrypt(c: IkeCipher, key: bytes, nonce: bytes, ct: bytes, tag: bytes, aad: bytes) -> bytes:
    try:
        if c.mode == "gcm":
            # modes.GCM accepts the 8- and 12-octet truncated tags of RFC 5282 (AESGCM does not).
            d = Cipher(algorithms.AES(key), modes.GCM(nonce, tag, min_tag_length=len(tag))).decryptor()
            d.authenticate_additional_data(aad)
            return d.update(ct) + d.finalize()
        if c.mode == "ccm":
            return AESCCM(key, tag_length=len(tag)).decrypt(nonce, ct + tag, aad)
        return ChaCha20Poly1305(key).decrypt(nonce, ct + tag, aad)
    except InvalidTag:
        raise IntegrityError(f"{c.mode.upper()} tag mismatch: wrong key, wrong algorithm or corrupted "
                             "message") from None


# ---- stateful decryptor over a key store -----------------------------------------------------


class _KeyLookup(Protocol):
    def ike_lookup(self, spi_i: bytes, spi_r: bytes) -> IkeSaKeys | None: ...

    def ikev1_lookup(self, cookie_i: bytes) -> Ikev1Keys | None: ...


@dataclass(slots=True)
class IkeDecryptStats:
    decrypted: int = 0
    icv_failed: int = 0
    no_key: int = 0
    errors: int = 0  # DecryptError / unsupported algorithm
    fragments: int = 0
    reassembled: int = 0


@dataclass(slots=True)
class _FragBuffer:
    total: int
    first_payload: int = 0
    parts: dict[int, bytes] | None = None
    frames: list[int] | None = None


class IkeDecryptor:
    """Decrypt IKE messages in capture order (IKEv2 SK/SKF here, IKEv1 via ``Ikev1Decryptor``).

    ``decrypt(msg)`` returns a copy of ``msg``: ``decrypted`` True and ``inner`` set when the SK
    payload decrypted; ``icv_ok`` True/False when integrity was checked, None when it was not
    (no key, or Wireshark-style "no checking" keys). It never raises; failures are counted in
    ``stats`` and the reason of the last one per message is in ``msg.crypto_note``.
    """

    def __init__(self, keys: _KeyLookup) -> None:
        self.keys = keys
        self.stats = IkeDecryptStats()
        # Sets that never complete (lost fragments) must not grow memory without bound: the
        # oldest is given up first (decode.fragsets, shared with IKEv1's pieces)
        self._frags: PendingSets[_FragBuffer] = PendingSets(MAX_PENDING_FRAGMENT_SETS)
        self._v1 = None

    def decrypt(self, msg: IkeMessage) -> IkeMessage:
        if msg.header.major == 1:
            if self._v1 is None:
                from ipsecscope.crypto.ikev1 import Ikev1Decryptor

                self._v1 = Ikev1Decryptor(self.keys)
            return self._v1.decrypt(msg)
        sk = next((p for p in msg.payloads if isinstance(p, SkPayload)), None)
        if sk is None or msg.decrypted:
            return msg
        h = msg.header
        keys = self.keys.ike_lookup(h.spi_i, h.spi_r)
        if keys is None:
            self.stats.no_key += 1
            return replace(msg, crypto_note="no IKE SA keys for these SPIs")
        try:
            first, plain = decrypt_sk(msg.raw, sk.offset, keys, h.is_initiator, skf=sk.type == SKF)
        except IntegrityError as e:
            self.stats.icv_failed += 1
            return replace(msg, icv_ok=False, crypto_note=str(e), key_tried=True)
        except UnknownAlgorithmError as e:  # the key was never applied
            self.stats.errors += 1
            return replace(msg, crypto_note=str(e))
        except DecryptError as e:  # impossible padding/length with this key
            self.stats.errors += 1
            return replace(msg, crypto_note=str(e), key_tried=True)
        checked = True if integrity_checked(keys) else None
        self.stats.decrypted += 1
        if sk.type == SKF:
            return self._fragment(msg, sk, first, plain, checked)
        return self._with_inner(msg, first, plain, checked, sk.offset + 4 + cipher_for(keys.encr).iv_len)

    def _with_inner(self, msg: IkeMessage, first: int, plain: bytes, checked: bool | None, base: int,
                    note: str | None = None) -> IkeMessage:
        from ipsecscope.decode.ike import parse_payload_chain

        # the header says request or response: the SA rules that depend on it apply inside SK too
        inner, err = parse_payload_chain(first, plain, 2, base, msg.header)
        if err and checked is None:
            # Nothing authenticated these bytes; a chain that does not parse means a wrong key.
            self.stats.decrypted -= 1
            self.stats.errors += 1
            return replace(msg, crypto_note=f"decrypted bytes are not a payload chain ({err}) and integrity "
                                            "was not checked: wrong key or algorithm?", key_tried=True)
        malformed = msg.malformed
        if err and not malformed:
            malformed = f"encrypted payloads: {err}"
        return replace(msg, inner=tuple(inner), decrypted=True, icv_ok=checked, malformed=malformed,
                       crypto_note=note, key_tried=True)

    def _fragment(self, msg: IkeMessage, sk: SkPayload, first: int, plain: bytes,
                  checked: bool | None) -> IkeMessage:
        # RFC 7383 §2.6: each fragment is verified on its own; the message is the concatenation of
        # the fragments' plaintexts in Fragment Number order, its first payload named by fragment 1.
        self.stats.fragments += 1
        h = msg.header
        num, total = sk.fragment_number, sk.total_fragments
        if not 1 <= num <= total:
            self.stats.errors += 1
            return replace(msg, key_tried=True, decrypted=True, icv_ok=checked,
                           crypto_note=f"SKF fragment number {num} outside 1..{total}: ignored")
        key = (h.spi_i, h.spi_r, h.msg_id, h.is_initiator)
        buf = self._frags.get(key)
        if buf is None or buf.total != total:
            # A retransmission may be fragmented differently (RFC 7383 §2.6.2): start over.
            buf = _FragBuffer(total, parts={}, frames=[])
            self._frags.open(key, buf)
        assert buf.parts is not None and buf.frames is not None
        if num == 1:
            buf.first_payload = first
        buf.parts[num] = plain
        buf.frames.append(msg.frame)
        if len(buf.parts) < total:
            return replace(msg, key_tried=True, decrypted=True, icv_ok=checked,
                           crypto_note=f"SKF fragment {num} of {total}; payloads decoded on the frame "
                                       "that completes the message")
        self._frags.pop(key)
        self.stats.reassembled += 1
        whole = b"".join(buf.parts[i] for i in range(1, total + 1))
        frames = ", ".join(str(f) for f in buf.frames)
        return self._with_inner(msg, buf.first_payload, whole, checked, 0,
                                note=f"reassembled from {total} SKF fragments (frames {frames})")
