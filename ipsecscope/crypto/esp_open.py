"""ESP's per-SA openers (RFC 4303): the cipher and ICV constructions, built once per SA from its
:class:`~ipsecscope.model.keys.EspSaKeys`, that :mod:`ipsecscope.crypto.esp`'s decryptor and the
decrypt engine's hot loops call per packet; and the unauthenticated decryption of a cut-off ESP
packet an ICMP error quotes (:func:`decrypt_prefix`, :func:`tshark_prefix`).

Speed: the per-SA work (key split, cipher objects, HMAC inner/outer pads) is done once in
:class:`Opener`; a packet costs a dict lookup, a few slices and one cipher call. CBC is decrypted
with one long-lived CBC context per SA fed IV | ciphertext (see _build_cbc), which avoids building a
cipher context per packet (3× faster in CPython).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from ipsecscope.errors import DecryptError, IntegrityError, UnknownAlgorithmError
from ipsecscope.model.keys import EspSaKeys

from .suites import EncrSuite, IntegSuite, encr_suite, integ_suite, split_key

_U32 = struct.Struct("!I")
_pack32 = _U32.pack
_from = int.from_bytes

# An open function: (esp bytes from the SPI to the end, seq_hi or None for a non-ESN SA) -> the
# decrypted payload including padding, pad length and next header (RFC 4303 §2.4-2.6).
OpenFn = Callable[[bytes, "int | None"], bytes]


def _triple_des(key: bytes):
    try:  # cryptography >= 43 keeps 3DES in its "decrepit" corner
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:
        try:
            from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[attr-defined,no-redef]
        except ImportError:
            raise UnknownAlgorithmError(
                "this version of the 'cryptography' package has no 3DES/DES any more; install one "
                "that has cryptography.hazmat.decrepit (>= 43) to decrypt these SAs") from None
    return TripleDES(key)


def _block_cipher(suite: EncrSuite, key: bytes):
    if suite.cipher == "aes":
        return algorithms.AES(key)
    if suite.cipher == "3des":
        return _triple_des(key)
    if suite.cipher == "des":
        # Single DES = 3DES with K1 = K2 = K3 (EDE collapses to one encryption); `cryptography`
        # only offers DES that way.
        return _triple_des(key * 3)
    raise UnknownAlgorithmError(f"no block cipher {suite.cipher!r}")


class _XcbcMac:
    """AES-XCBC-MAC-96 (RFC 3566 §4) with the three derived keys computed once per SA."""

    __slots__ = ("_alg1", "_k2", "_k3")

    def __init__(self, key: bytes) -> None:
        ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        k1 = ecb.update(b"\x01" * 16)
        self._k2 = _from(ecb.update(b"\x02" * 16), "big")
        self._k3 = _from(ecb.update(b"\x03" * 16), "big")
        self._alg1 = algorithms.AES(k1)

    def mac(self, data: bytes) -> bytes:
        n = len(data)
        if n and n % 16 == 0:
            head, last, k = data[:-16], data[-16:], self._k2
        else:
            cut = n - n % 16
            head = data[:cut]
            last = data[cut:] + b"\x80" + bytes(15 - (n - cut))  # 10* padding, §4 step (3b)
            k = self._k3
        # CBC-MAC with K1 and a zero IV over M[1..n-1] then M[n] ^ K2/K3 (§4 steps 3-4): the last
        # block of a CBC encryption of exactly that.
        last = (_from(last, "big") ^ k).to_bytes(16, "big")
        enc = Cipher(self._alg1, modes.CBC(bytes(16))).encryptor()
        out = enc.update(head + last)
        return out[-16:]


class Opener:
    """Everything needed to open packets of one SA, built once from its :class:`EspSaKeys`.

    ``open(data, seq_hi)`` returns the decrypted payload (with padding and trailer) or raises.
    ``verifies`` is False when nothing authenticates the packet (NULL integrity, no AEAD): then ESN
    cannot be inferred and a wrong key yields garbage rather than an error.
    """

    __slots__ = ("keys", "encr", "integ", "iv_len", "icv_len", "verifies", "open", "open_at")

    def __init__(self, keys: EspSaKeys) -> None:
        self.keys = keys
        self.encr: EncrSuite = encr_suite(keys.encr)
        self.integ: IntegSuite = integ_suite(keys.integ) if not self.encr.aead else integ_suite(0)
        self.iv_len = self.encr.iv_len
        if self.encr.aead:
            self.icv_len = self.encr.icv_len
            self.verifies = True
        else:
            self.icv_len = keys.icv_len if keys.icv_len is not None else self.integ.icv_len
            # check_integrity False: Wireshark's "ANY n bit authentication [no checking]" — strip
            # icv_len bytes unverified.
            self.verifies = self.integ.kind != "none" and getattr(keys, "check_integrity", True)
        self.open: OpenFn = _BUILDERS[self.encr.kind](self)
        # open_at(buf, start, end, seq_hi): the same on buf[start:end] (saves a copy in hot loops)
        self.open_at = getattr(self.open, "at", None) or self._slice_open

    def _slice_open(self, buf: bytes, start: int, end: int, hi: int | None) -> bytes:
        return self.open(buf[start:end], hi)


# --- builders: one per construction, selected by EncrSuite.kind ---------------------------------

def _aead_aad(data: bytes, hi: int | None) -> bytes:
    # RFC 4106 §5 (also RFC 4309 §5, RFC 7634 §2.1): SPI | seq, or SPI | seq_hi | seq_lo with ESN.
    return data[:8] if hi is None else data[:4] + _pack32(hi) + data[4:8]


def _short(n: int, need: int) -> DecryptError:
    return DecryptError(f"ESP packet too short: {n} bytes, the algorithm needs at least {need}")


def _build_gcm(o: Opener) -> OpenFn:
    key, salt = split_key(o.encr, o.keys.enc_key)
    icv = o.icv_len
    need = 8 + 8 + icv + 2
    if icv == 16:
        g = AESGCM(key)
        dec = g.decrypt

        def open_gcm16(data: bytes, hi: int | None) -> bytes:
            if len(data) < need:
                raise _short(len(data), need)
            try:
                return dec(salt + data[8:16], data[16:], data[:8] if hi is None else
                           data[:4] + _pack32(hi) + data[4:8])
            except InvalidTag:
                raise IntegrityError("AES-GCM tag mismatch") from None

        def open_gcm16_at(buf: bytes, s: int, e: int, hi: int | None) -> bytes:
            if e - s < need or e > len(buf):
                raise _short(min(e, len(buf)) - s, need)
            try:
                return dec(salt + buf[s + 8:s + 16], buf[s + 16:e], buf[s:s + 8] if hi is None else
                           buf[s:s + 4] + _pack32(hi) + buf[s + 4:s + 8])
            except InvalidTag:
                raise IntegrityError("AES-GCM tag mismatch") from None
        open_gcm16.at = open_gcm16_at  # type: ignore[attr-defined]
        open_gcm16.gcm16 = (dec, salt)  # type: ignore[attr-defined]  # for callers that inline it
        return open_gcm16

    alg = algorithms.AES(key)

    def open_gcm_short(data: bytes, hi: int | None) -> bytes:
        # AESGCM only takes 16-byte tags; truncated tags (RFC 4106 §6: 8 or 12 octets) need the
        # streaming interface with min_tag_length.
        if len(data) < need:
            raise _short(len(data), need)
        d = Cipher(alg, modes.GCM(salt + data[8:16], data[-icv:], min_tag_length=icv)).decryptor()
        d.authenticate_additional_data(_aead_aad(data, hi))
        out = d.update(data[16:-icv])
        try:
            return out + d.finalize()
        except InvalidTag:
            raise IntegrityError(f"AES-GCM-{icv * 8} tag mismatch") from None
    return open_gcm_short


def _salt_iv_aead(dec, salt: bytes, icv: int, label: str) -> OpenFn:
    """An AEAD whose nonce is salt | the packet's 8-byte IV and whose AAD is RFC 4106's."""
    need = 8 + 8 + icv + 2

    def open_aead(data: bytes, hi: int | None) -> bytes:
        if len(data) < need:
            raise _short(len(data), need)
        try:
            return dec(salt + data[8:16], data[16:], _aead_aad(data, hi))
        except InvalidTag:
            raise IntegrityError(f"{label} tag mismatch") from None
    return open_aead


def _build_ccm(o: Opener) -> OpenFn:
    # RFC 4309 §4: nonce = 3-byte salt | 8-byte IV (L = 4).
    key, salt = split_key(o.encr, o.keys.enc_key)
    return _salt_iv_aead(AESCCM(key, tag_length=o.icv_len).decrypt, salt, o.icv_len, "AES-CCM")


def _build_chacha(o: Opener) -> OpenFn:
    # RFC 7634 §2: nonce = 4-byte salt | 8-byte IV; AAD as RFC 4106 (§2.1).
    key, salt = split_key(o.encr, o.keys.enc_key)
    return _salt_iv_aead(ChaCha20Poly1305(key).decrypt, salt, 16, "ChaCha20-Poly1305")


def _build_gmac(o: Opener) -> OpenFn:
    key, salt = split_key(o.encr, o.keys.enc_key)
    dec = AESGCM(key).decrypt
    need = 8 + 8 + 16 + 2

    def open_gmac(data: bytes, hi: int | None) -> bytes:
        # RFC 4543 §3.3: nothing is encrypted; AAD = SPI | seq (64-bit with ESN) | IV | payload,
        # and the tag is GCM's over an empty plaintext.
        if len(data) < need:
            raise _short(len(data), need)
        aad = data[:-16] if hi is None else data[:4] + _pack32(hi) + data[4:-16]
        try:
            dec(salt + data[8:16], data[-16:], aad)
        except InvalidTag:
            raise IntegrityError("AES-GMAC tag mismatch") from None
        return data[16:-16]
    return open_gmac


def _icv_checker(o: Opener) -> Callable[[bytes, int | None], None] | None:
    """Returns check(data, hi) raising IntegrityError, or None when there is nothing to check."""
    integ = o.integ
    icv = o.icv_len
    if not o.verifies:
        return None
    akey = bytes(o.keys.auth_key)
    # HMAC takes a key of any length (RFC 2104 §2); IKE always derives the RFC 2404/4868 size, but a
    # manually keyed SA may use another one (Linux and Wireshark accept it): the ICV decides. The
    # other MACs (AES-XCBC, GMAC) are defined for their one key size only.
    odd_hmac = integ.kind == "hmac" and len(akey) > 0
    if integ.key_len and len(akey) != integ.key_len and not odd_hmac:
        raise UnknownAlgorithmError(
            f"{integ.label} integrity key is {len(akey) * 8} bits; expected {integ.key_len * 8}. "
            "Check the authentication key in the key file.")
    # constant-time compare only (the MAC is `cryptography`'s): hmac.compare_digest's C function
    # from _operator, without the hmac module, whose hashlib loads the system's OpenSSL (~3 ms)
    from _operator import _compare_digest as _compare

    if integ.kind == "hmac":
        from .prf import hmac_keyed

        # keyed once per SA; a copy per packet skips the key schedule (and `cryptography`'s copy
        # + update + finalize measured 20 % faster than the stdlib's OpenSSL HMAC object)
        copy = hmac_keyed(integ.hash, akey).copy

        def check_hmac(data: bytes, hi: int | None, s: int = 0, e: int | None = None) -> None:
            if e is None:
                e = len(data)
            m = copy()
            m.update(data[s:e - icv])
            if hi is not None:
                m.update(_pack32(hi))  # RFC 4303 §3.3.3: ESN high bits follow the payload
            if not _compare(m.finalize()[:icv], data[e - icv:e]):
                raise IntegrityError(f"{integ.label} ICV mismatch")
        check_hmac.hmac = (copy, icv, _compare)  # type: ignore[attr-defined]  # for callers that inline it
        return check_hmac
    xcbc = _XcbcMac(akey)

    def check_xcbc(data: bytes, hi: int | None, s: int = 0, e: int | None = None) -> None:
        if e is None:
            e = len(data)
        body = data[s:e - icv] if hi is None else data[s:e - icv] + _pack32(hi)
        if not _compare(xcbc.mac(body)[:icv], data[e - icv:e]):
            raise IntegrityError("AES-XCBC-MAC-96 ICV mismatch")
    return check_xcbc


def _build_cbc(o: Opener) -> OpenFn:
    key, _ = split_key(o.encr, o.keys.enc_key)
    bs = o.encr.block
    ivl = o.iv_len
    icv = o.icv_len
    # One CBC context for the whole SA. Decrypting IV | C_1..C_n in it yields
    # D(IV) ^ <previous packet's last block> (garbage, dropped) followed by exactly P_1..P_n, since
    # P_i = D(C_i) ^ C_{i-1} with C_0 = IV (RFC 3602 §2): no per-packet context, no XOR in Python.
    upd = Cipher(_block_cipher(o.encr, key), modes.CBC(bytes(bs))).decryptor().update
    check = _icv_checker(o)
    start = 8 + ivl
    if ivl != bs:  # pragma: no cover - every CBC suite we list has IV length == block size
        raise UnknownAlgorithmError(f"{o.encr.label}: IV length {ivl} differs from the block size {bs}")

    def open_cbc_at(buf: bytes, s: int, e: int, hi: int | None) -> bytes:
        if e > len(buf):
            e = len(buf)
        n = e - s - start - icv
        if n < bs or n % bs:
            raise DecryptError(
                f"ESP ciphertext is {max(n, 0)} bytes, not a positive multiple of the {bs}-byte block "
                "(wrong algorithm or ICV length?)")
        if check is not None:
            check(buf, hi, s, e)  # RFC 4303 §3.4.4: verify before decrypting
        return upd(buf[s + 8:e - icv])[bs:]

    def open_cbc(data: bytes, hi: int | None) -> bytes:
        return open_cbc_at(data, 0, len(data), hi)
    open_cbc.at = open_cbc_at  # type: ignore[attr-defined]
    h = getattr(check, "hmac", None)
    if h is not None:  # for callers that inline CBC + HMAC (export.hotloop): the same context and checks
        open_cbc.cbc_hmac = (upd, bs, h[0], icv, h[2])  # type: ignore[attr-defined]
    return open_cbc


def _build_ctr(o: Opener) -> OpenFn:
    key, nonce = split_key(o.encr, o.keys.enc_key)
    alg = algorithms.AES(key)
    icv = o.icv_len
    check = _icv_checker(o)

    def open_ctr(data: bytes, hi: int | None) -> bytes:
        n = len(data) - 16 - icv
        if n < 2:
            raise _short(len(data), 16 + icv + 2)
        if check is not None:
            check(data, hi)
        # RFC 3686 §4: counter block = nonce(4) | IV(8) | block counter starting at 1.
        d = Cipher(alg, modes.CTR(nonce + data[8:16] + b"\x00\x00\x00\x01")).decryptor()
        return d.update(data[16:len(data) - icv])
    return open_ctr


def _build_null(o: Opener) -> OpenFn:
    icv = o.icv_len
    check = _icv_checker(o)

    def open_null(data: bytes, hi: int | None) -> bytes:
        if len(data) - 8 - icv < 2:
            raise _short(len(data), 8 + icv + 2)
        if check is not None:
            check(data, hi)
        return data[8:len(data) - icv]
    return open_null


_BUILDERS: dict[str, Callable[[Opener], OpenFn]] = {
    "gcm": _build_gcm,
    "ccm": _build_ccm,
    "chacha": _build_chacha,
    "gmac": _build_gmac,
    "cbc": _build_cbc,
    "ctr": _build_ctr,
    "null": _build_null,
}


_openers: dict[EspSaKeys, Opener] = {}


def opener(keys: EspSaKeys) -> Opener:
    """The cached :class:`Opener` of ``keys`` (raises UnknownAlgorithmError for a bad suite/key)."""
    o = _openers.get(keys)
    if o is None:
        if len(_openers) > 4096:
            _openers.clear()
        o = _openers[keys] = Opener(keys)
    return o


def decrypt_prefix(keys: EspSaKeys, data: bytes) -> bytes:
    """The plaintext of the start of an ESP packet cut off before its end, as an ICMP error quotes
    one (RFC 792: the IP header and 8 octets at least; Linux quotes up to 576 octets, RFC 1812
    §4.3.2.3). ``data`` runs from the SPI to the end of the quote.

    The modes ESP uses decrypt a prefix on their own: CBC block by block from the IV (RFC 3602
    §2), counter modes from the counter the packet starts at (RFC 3686 §4: 1; GCM's first data
    block is counter 2, RFC 4106 §3 + NIST SP 800-38D §7.1; CCM's is 1, RFC 4309 §4 + RFC 3610
    §2.3; ChaCha20's is 1, RFC 7634 §2 + RFC 8439 §2.8). The ICV and the trailer are cut off with
    the end: nothing here is authenticated and the next header is unknown, so the caller shows
    it marked as such and counts it for no SA. Raises DecryptError when the quote ends before the
    first whole block, UnknownAlgorithmError for a suite with no such decryption."""
    o = opener(keys)
    e = o.encr
    ivl = o.iv_len
    iv, body = bytes(data[8:8 + ivl]), bytes(data[8 + ivl:])
    if len(iv) < ivl or not body:
        raise DecryptError(f"the quote ends before the first encrypted byte ({len(data)} bytes of ESP)")
    if e.kind in ("null", "gmac"):  # nothing encrypted (RFC 4543 §3: GMAC only authenticates)
        return body
    key, salt = split_key(e, keys.enc_key)
    if e.kind == "cbc":
        n = len(body) - len(body) % e.block
        if not n:
            raise DecryptError(f"the quote holds no whole {e.block}-byte cipher block")
        return Cipher(_block_cipher(e, key), modes.CBC(iv)).decryptor().update(body[:n])
    if e.kind == "chacha":
        nonce = (1).to_bytes(4, "little") + salt + iv  # `cryptography` takes counter | nonce
        return Cipher(algorithms.ChaCha20(key, nonce), None).decryptor().update(body)
    first = {"ctr": salt + iv + b"\0\0\0\x01", "gcm": salt + iv + b"\0\0\0\x02",
             "ccm": b"\x03" + salt + iv + b"\0\0\0\x01"}.get(e.kind)
    if first is None:
        raise UnknownAlgorithmError(f"{e.label}: no prefix decryption for this construction")
    return Cipher(algorithms.AES(key), modes.CTR(first)).decryptor().update(body)


# What tshark (4.0) decrypts: it has no CCM, ChaCha20-Poly1305 or GMAC (esp_sa UAT).
_TSHARK_KINDS = frozenset(("null", "cbc", "ctr", "gcm"))


def tshark_prefix(keys: EspSaKeys, data: bytes) -> bytes | None:
    """The plaintext tshark (4.0) gets from an ESP packet it was given cut off, as an ICMP error
    quotes one: it cannot tell, so it takes the last ICV-length bytes of the quote for the ICV and
    decrypts the rest — when the ciphertext it sees is block- and 4-byte aligned (RFC 4303 §2.4),
    else nothing. None also for a suite tshark does not decrypt. Display and filter emulation
    only: nothing here is authenticated."""
    o = opener(keys)
    if o.encr.kind not in _TSHARK_KINDS:
        return None
    n = len(data) - 8 - o.iv_len - o.icv_len
    block = o.encr.block
    if n <= 0 or (block > 4 and n % block) or n % 4:
        return None
    try:
        return decrypt_prefix(keys, data)[:n]
    except DecryptError:
        return None


__all__ = ["OpenFn", "Opener", "decrypt_prefix", "opener", "tshark_prefix"]
