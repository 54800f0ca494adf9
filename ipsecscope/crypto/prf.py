"""IKEv2 pseudo-random functions and prf+ (RFC 7296 §2.13), plus the MAC primitives they share.

PRFs, keyed by :class:`~ipsecscope.model.iana.PrfTransform`:

* ``PRF_HMAC_MD5`` / ``PRF_HMAC_SHA1`` / ``PRF_HMAC_SHA2_256|384|512`` (RFC 2104, RFC 4868):
  HMAC with the whole digest as output; any key length.
* ``PRF_AES128_XCBC`` (RFC 4434): AES-XCBC-MAC (RFC 3566) with the full 128-bit output. A key
  shorter than 16 bytes is zero-padded; a longer one is first reduced with
  ``AES-XCBC-PRF-128(0^128, key)`` (RFC 4434 §2).
* ``PRF_AES128_CMAC`` (RFC 4615): AES-CMAC (RFC 4493). A key of any length other than 16 bytes is
  reduced with ``AES-CMAC(0^128, key)`` (RFC 4615 §3).

The integrity transforms of the SK payload reuse the same MACs truncated (:func:`mac`).
"""

from __future__ import annotations

import ipaddress
import struct

from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives import hmac as _hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ipsecscope.errors import UnknownAlgorithmError
from ipsecscope.model.iana import IntegTransform, PrfTransform, name

_HMAC_PRF: dict[int, str] = {
    PrfTransform.PRF_HMAC_MD5: "md5",
    PrfTransform.PRF_HMAC_SHA1: "sha1",
    PrfTransform.PRF_HMAC_SHA2_256: "sha256",
    PrfTransform.PRF_HMAC_SHA2_384: "sha384",
    PrfTransform.PRF_HMAC_SHA2_512: "sha512",
}

# Preferred key length (bytes) of each PRF: the length of SK_d, SK_pi, SK_pr (RFC 7296 §2.14) and
# the output size of one PRF invocation.
PRF_KEY_LEN: dict[int, int] = {
    PrfTransform.PRF_HMAC_MD5: 16,
    PrfTransform.PRF_HMAC_SHA1: 20,
    PrfTransform.PRF_HMAC_SHA2_256: 32,
    PrfTransform.PRF_HMAC_SHA2_384: 48,
    PrfTransform.PRF_HMAC_SHA2_512: 64,
    PrfTransform.PRF_AES128_XCBC: 16,
    PrfTransform.PRF_AES128_CMAC: 16,
}

_ZERO16 = bytes(16)

# hash name (as the suites and INTEG tables spell it) -> `cryptography` hash class
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "md5": hashes.MD5, "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def hmac_keyed(hash_name: str, key: bytes) -> _hmac.HMAC:
    """An HMAC context keyed once: callers ``copy()`` it per message, which skips the key
    set-up (the ESP hot loop does this per packet)."""
    return _hmac.HMAC(key, HASHES[hash_name]())


def hmac_digest(hash_name: str, key: bytes, data: bytes) -> bytes:
    """HMAC (RFC 2104) of ``data`` under ``key``, full output."""
    h = hmac_keyed(hash_name, key)
    h.update(data)
    return h.finalize()


def _aes_ecb(key: bytes):
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor()


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def aes_xcbc_mac(key: bytes, data: bytes) -> bytes:
    """AES-XCBC-MAC (RFC 3566 §4), full 128-bit output; ``key`` must be 16 bytes."""
    ecb = _aes_ecb(key)
    k1 = ecb.update(b"\x01" * 16)
    k2 = ecb.update(b"\x02" * 16)
    k3 = ecb.update(b"\x03" * 16)
    e1 = _aes_ecb(k1)
    if data and len(data) % 16 == 0:
        body, last, final_key = data[:-16], data[-16:], k2
    else:
        cut = len(data) - len(data) % 16
        body, last = data[:cut], data[cut:]
        last = last + b"\x80" + bytes(15 - len(last))  # 10* padding, RFC 3566 §4 step (3b)
        final_key = k3
    e = _ZERO16
    for i in range(0, len(body), 16):
        e = e1.update(_xor(e, body[i:i + 16]))
    return e1.update(_xor(_xor(e, last), final_key))


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-CMAC (RFC 4493), full 128-bit output."""
    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def prf(prf_id: int, key: bytes, data: bytes) -> bytes:
    """One invocation of the negotiated PRF."""
    h = _HMAC_PRF.get(prf_id)
    if h is not None:
        return hmac_digest(h, key, data)
    if prf_id == PrfTransform.PRF_AES128_XCBC:
        if len(key) < 16:
            key = key + bytes(16 - len(key))
        elif len(key) > 16:
            key = aes_xcbc_mac(_ZERO16, key)
        return aes_xcbc_mac(key, data)
    if prf_id == PrfTransform.PRF_AES128_CMAC:
        if len(key) != 16:
            key = aes_cmac(_ZERO16, key)
        return aes_cmac(key, data)
    raise UnknownAlgorithmError(
        f"PRF {name(PrfTransform, prf_id)} is not implemented; supported: "
        + ", ".join(name(PrfTransform, p) for p in PRF_KEY_LEN))


def prf_plus(prf_id: int, key: bytes, seed: bytes, length: int) -> bytes:
    """prf+ (RFC 7296 §2.13): T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n), concatenated.

    The counter is one octet, so at most 255 blocks can be produced.
    """
    out = bytearray()
    t = b""
    n = 1
    while len(out) < length:
        if n > 255:
            raise ValueError(f"prf+ cannot produce {length} bytes with {name(PrfTransform, prf_id)} "
                             "(the 1-octet counter would wrap, RFC 7296 §2.13)")
        t = prf(prf_id, key, t + seed + bytes((n,)))
        out += t
        n += 1
    return bytes(out[:length])


# ---- integrity (MAC) transforms --------------------------------------------------------------
# id -> (kind, hash or None, key length in bytes, ICV length in bytes). Data, not branches.
INTEG: dict[int, tuple[str, str | None, int, int]] = {
    IntegTransform.AUTH_HMAC_MD5_96: ("hmac", "md5", 16, 12),
    IntegTransform.AUTH_HMAC_SHA1_96: ("hmac", "sha1", 20, 12),
    IntegTransform.AUTH_AES_XCBC_96: ("xcbc", None, 16, 12),
    IntegTransform.AUTH_HMAC_MD5_128: ("hmac", "md5", 16, 16),
    IntegTransform.AUTH_HMAC_SHA1_160: ("hmac", "sha1", 20, 20),
    IntegTransform.AUTH_AES_CMAC_96: ("cmac", None, 16, 12),
    IntegTransform.AUTH_HMAC_SHA2_256_128: ("hmac", "sha256", 32, 16),
    IntegTransform.AUTH_HMAC_SHA2_384_192: ("hmac", "sha384", 48, 24),
    IntegTransform.AUTH_HMAC_SHA2_512_256: ("hmac", "sha512", 64, 32),
}


def mac(integ_id: int, key: bytes, data: bytes) -> bytes:
    """The truncated ICV of integrity transform ``integ_id`` over ``data``."""
    try:
        kind, h, _klen, icv = INTEG[integ_id]
    except KeyError:
        raise UnknownAlgorithmError(
            f"integrity algorithm {name(IntegTransform, integ_id)} is not implemented; supported: "
            + ", ".join(name(IntegTransform, i) for i in INTEG)) from None
    if kind == "hmac":
        return hmac_digest(h, key, data)[:icv]
    if kind == "xcbc":
        return aes_xcbc_mac(key, data)[:icv]
    return aes_cmac(key, data)[:icv]


def hash_digest(hash_name: str, data: bytes) -> bytes:
    """Plain hash (IKEv1 IV derivation, RFC 2409 Appendix B)."""
    h = hashes.Hash(HASHES[hash_name]())
    h.update(data)
    return h.finalize()


def nat_detection_hash(hash_name: str, spi_i: bytes, spi_r: bytes, addr: str, port: int) -> bytes | None:
    """HASH(SPIi | SPIr | IP | port): IKEv2's NAT_DETECTION_*_IP with SHA-1 (RFC 7296 §2.23) and
    IKEv1's NAT-D with the negotiated hash (RFC 3947 §3.2, cookies for SPIs). None for an
    address that is not one."""
    try:
        ip = ipaddress.ip_address(addr).packed
    except ValueError:
        return None
    return hash_digest(hash_name, spi_i + spi_r + ip + struct.pack("!H", port))
