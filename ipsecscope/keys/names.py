"""Algorithm-name tables for every key format we read and write.

Data, not branches: each format's strings map to IANA transform IDs (``model.iana``) plus the few
facts the name carries that the ID does not (a non-default ICV length, "no checking").

Sources of the strings:
* Wireshark ``esp_sa`` UAT: ``esp_encryption_type_vals`` / ``esp_authentication_type_vals`` in
  ``epan/dissectors/packet-ipsec.c`` (4.0 has the first 12 encryption names; 4.2+ add IIV and
  ChaCha20-Poly1305).
* Wireshark ``ikev2_decryption_table``: ``vs_ikev2_encr_algs`` / ``vs_ikev2_auth_algs`` in
  ``epan/dissectors/packet-isakmp.c``.
* Linux xfrm: the kernel's canonical algorithm names (``net/xfrm/xfrm_algo.c``), as
  ``ip xfrm state`` prints them, plus the short compat names it also accepts.
* strongSwan: ``encryption_algorithm_names`` / ``integrity_algorithm_names`` /
  ``pseudo_random_function_names`` as printed in "selected proposal:" lines.
"""

from __future__ import annotations

import re
from typing import NamedTuple, TypeVar

# Private-use transform IDs (IANA 1024-65535) are defined with their names in model/iana.py.
from ..model.iana import ENCR_SERPENT_CBC, ENCR_TWOFISH_CBC, INTEG_HMAC_RIPEMD160_96, PRIVATE_NAMES
from ..model.iana import EncrTransform as E
from ..model.iana import IntegTransform as I  # noqa: E741
from ..model.iana import PrfTransform as P
from ..model.plural import with_article

_T = TypeVar("_T")

PRIVATE_ENCR_NAMES = PRIVATE_NAMES[E]
PRIVATE_INTEG_NAMES = PRIVATE_NAMES[I]

# ---------------------------------------------------------------------------------------------
# Suite facts needed to validate key lengths and to name things. Salt = trailing bytes of the
# encryption key that are nonce/salt, not cipher key (RFC 4106 §8.1: 4, RFC 4309 §7.1: 3,
# RFC 3686 §5.1: 4, RFC 4543 §3.2: 4, RFC 7634 §4: 4).
# ---------------------------------------------------------------------------------------------

SALT_LEN: dict[int, int] = {
    E.ENCR_AES_CTR: 4,
    E.ENCR_AES_CCM_8: 3,
    E.ENCR_AES_CCM_12: 3,
    E.ENCR_AES_CCM_16: 3,
    E.ENCR_AES_GCM_8: 4,
    E.ENCR_AES_GCM_12: 4,
    E.ENCR_AES_GCM_16: 4,
    E.ENCR_NULL_AUTH_AES_GMAC: 4,
    E.ENCR_CAMELLIA_CTR: 4,
    E.ENCR_CAMELLIA_CCM_8: 3,
    E.ENCR_CAMELLIA_CCM_12: 3,
    E.ENCR_CAMELLIA_CCM_16: 3,
    E.ENCR_CHACHA20_POLY1305: 4,
    E.ENCR_AES_CCM_8_IIV: 3,
    E.ENCR_AES_GCM_16_IIV: 4,
    E.ENCR_CHACHA20_POLY1305_IIV: 4,
}

# Allowed cipher key lengths in bytes (without salt): a tuple, or a range for the variable-key
# ciphers. None = not checked.
_AES = (16, 24, 32)
KEY_LENGTHS: dict[int, tuple[int, ...] | range | None] = {
    E.ENCR_NULL: (0,),
    E.ENCR_DES: (8,),
    E.ENCR_DES_IV64: (8,),
    E.ENCR_DES_IV32: (8,),
    E.ENCR_3DES: (24,),
    E.ENCR_CAST: range(5, 17),  # 40..128 bits (RFC 2144 §2.2; RFC 2451 §2.2 for ESP)
    E.ENCR_BLOWFISH: range(5, 57),  # 40..448 bits (RFC 2451 §2.2)
    E.ENCR_IDEA: (16,),
    ENCR_TWOFISH_CBC: (16, 24, 32),
    ENCR_SERPENT_CBC: (16, 24, 32),
    E.ENCR_AES_CBC: _AES,
    E.ENCR_AES_CTR: _AES,
    E.ENCR_AES_CCM_8: _AES,
    E.ENCR_AES_CCM_12: _AES,
    E.ENCR_AES_CCM_16: _AES,
    E.ENCR_AES_GCM_8: _AES,
    E.ENCR_AES_GCM_12: _AES,
    E.ENCR_AES_GCM_16: _AES,
    E.ENCR_NULL_AUTH_AES_GMAC: _AES,
    E.ENCR_CAMELLIA_CBC: _AES,
    E.ENCR_CAMELLIA_CTR: _AES,
    E.ENCR_CAMELLIA_CCM_8: _AES,
    E.ENCR_CAMELLIA_CCM_12: _AES,
    E.ENCR_CAMELLIA_CCM_16: _AES,
    E.ENCR_CHACHA20_POLY1305: (32,),
    E.ENCR_AES_CCM_8_IIV: _AES,
    E.ENCR_AES_GCM_16_IIV: _AES,
    E.ENCR_CHACHA20_POLY1305_IIV: (32,),
}

AEAD_ICV: dict[int, int] = {
    E.ENCR_AES_CCM_8: 8,
    E.ENCR_AES_CCM_12: 12,
    E.ENCR_AES_CCM_16: 16,
    E.ENCR_AES_GCM_8: 8,
    E.ENCR_AES_GCM_12: 12,
    E.ENCR_AES_GCM_16: 16,
    E.ENCR_NULL_AUTH_AES_GMAC: 16,
    E.ENCR_CAMELLIA_CCM_8: 8,
    E.ENCR_CAMELLIA_CCM_12: 12,
    E.ENCR_CAMELLIA_CCM_16: 16,
    E.ENCR_CHACHA20_POLY1305: 16,
    E.ENCR_AES_CCM_8_IIV: 8,
    E.ENCR_AES_GCM_16_IIV: 16,
    E.ENCR_CHACHA20_POLY1305_IIV: 16,
}

INTEG_ICV: dict[int, int] = {
    I.NONE: 0,
    I.AUTH_HMAC_MD5_96: 12,
    I.AUTH_HMAC_SHA1_96: 12,
    I.AUTH_AES_XCBC_96: 12,
    I.AUTH_HMAC_MD5_128: 16,
    I.AUTH_HMAC_SHA1_160: 20,
    I.AUTH_AES_CMAC_96: 12,
    I.AUTH_AES_128_GMAC: 16,
    I.AUTH_AES_192_GMAC: 16,
    I.AUTH_AES_256_GMAC: 16,
    I.AUTH_HMAC_SHA2_256_128: 16,
    I.AUTH_HMAC_SHA2_384_192: 24,
    I.AUTH_HMAC_SHA2_512_256: 32,
    INTEG_HMAC_RIPEMD160_96: 12,
}


_HEX_RUN = re.compile(r"[0-9A-Fa-f]{8,}")


def shown(value: object) -> str:
    """``value`` quoted for an error message, or only its length if it could be key material.

    A field in the wrong column (a missing algorithm name, a shifted CSV row) puts a key where a
    name or an address belongs; error messages must not echo it (issue: secrets in messages).
    """
    text = str(value)
    if len(text) <= 40 and not _HEX_RUN.search(text):
        return repr(text)
    return f"{with_article(f'{len(text)}-character')} value (not shown: it may be a key)"


def is_aead(encr: int) -> bool:
    return encr in AEAD_ICV


def cipher_key_len(encr: int, enc_key: bytes) -> int:
    """Cipher key length in bytes (the key without its trailing salt)."""
    return max(0, len(enc_key) - SALT_LEN.get(encr, 0))


def check_key_length(encr: int, enc_key: bytes) -> str | None:
    """None if ``enc_key`` (with salt) fits ``encr``, else a sentence saying what is expected."""
    allowed = KEY_LENGTHS.get(encr)
    if allowed is None:
        return None
    salt = SALT_LEN.get(encr, 0)
    if len(enc_key) - salt in allowed:
        return None
    if isinstance(allowed, range):
        want = f"{allowed.start + salt} to {allowed.stop - 1 + salt}"
    else:
        want = " or ".join(str(n + salt) for n in allowed)
    extra = f" (cipher key + {salt}-byte salt)" if salt else ""
    return f"{encr_name(encr)} needs {with_article(f'{want}-byte')} key{extra}, got {len(enc_key)} bytes"


def encr_name(encr: int) -> str:
    try:
        return E(encr).name
    except ValueError:
        return PRIVATE_ENCR_NAMES.get(encr, f"ENCR {encr}")


def integ_name(integ: int) -> str:
    try:
        return I(integ).name
    except ValueError:
        return PRIVATE_INTEG_NAMES.get(integ, f"INTEG {integ}")


def encr_label(encr: int, enc_key: bytes | None) -> str:
    """Short human label, strongSwan-like: ``AES_GCM_16-256``, ``3DES``, ``NULL``."""
    name = encr_name(encr).removeprefix("ENCR_")
    bits = cipher_key_len(encr, enc_key or b"") * 8
    if encr in (E.ENCR_NULL, E.ENCR_3DES, E.ENCR_DES) or not bits:
        return name
    return f"{name}-{bits}"


def integ_label(integ: int, icv_len: int | None = None, check: bool = True) -> str:
    if not check:
        return f"unchecked {8 * (icv_len or 0)}-bit ICV"
    name = integ_name(integ).removeprefix("AUTH_")
    if icv_len is not None and icv_len != INTEG_ICV.get(integ):
        name += f" (ICV {8 * icv_len} bits)"
    return name


# ---------------------------------------------------------------------------------------------
# Wireshark esp_sa UAT
# ---------------------------------------------------------------------------------------------


# The rows' types are NamedTuples, not frozen dataclasses: as immutable, and 70 us to create
# instead of 450 (every command that reads keys imports this module; issue 15).
class EspEncrName(NamedTuple):
    """What a Wireshark esp_sa encryption name means."""

    encr: int  # for "AES-GCM [RFC4106]" the ICV comes from the paired "ANY n bit" name
    gcm_icv_from_auth: bool = False
    wireshark_40: bool = True  # understood by Wireshark 4.0 (tshark here); False = newer/ours


class EspAuthName(NamedTuple):
    """What a Wireshark esp_sa authentication name means."""

    integ: int
    icv_len: int | None = None  # None = the transform's default
    check: bool = True
    wireshark_40: bool = True


WS_ESP_ENCR: dict[str, EspEncrName] = {
    "NULL": EspEncrName(E.ENCR_NULL),
    "TripleDES-CBC [RFC2451]": EspEncrName(E.ENCR_3DES),
    "AES-CBC [RFC3602]": EspEncrName(E.ENCR_AES_CBC),
    "AES-CTR [RFC3686]": EspEncrName(E.ENCR_AES_CTR),
    "DES-CBC [RFC2405]": EspEncrName(E.ENCR_DES),
    "CAST5-CBC [RFC2144]": EspEncrName(E.ENCR_CAST),
    "BLOWFISH-CBC [RFC2451]": EspEncrName(E.ENCR_BLOWFISH),
    "TWOFISH-CBC": EspEncrName(ENCR_TWOFISH_CBC),
    # Deprecated (no ICV length in the name): the ICV length is in the paired
    # "ANY n bit authentication [no checking]" name. strongSwan's save-keys plugin writes this
    # for every AES-GCM ESP SA -- and pairs GCM-12 with "ANY 64 bit" (save_keys_listener.c maps
    # ENCR_AES_GCM_ICV12 to 64), so such a row reads as GCM-8: ICV checks then fail, visibly.
    "AES-GCM [RFC4106]": EspEncrName(E.ENCR_AES_GCM_16, gcm_icv_from_auth=True),
    "AES-GCM with 8 octet ICV [RFC4106]": EspEncrName(E.ENCR_AES_GCM_8),
    "AES-GCM with 12 octet ICV [RFC4106]": EspEncrName(E.ENCR_AES_GCM_12),
    "AES-GCM with 16 octet ICV [RFC4106]": EspEncrName(E.ENCR_AES_GCM_16),
    # Wireshark 4.2+:
    "AES-GCM with IIV and 16 octet ICV [RFC4106 & RFC8750]": EspEncrName(E.ENCR_AES_GCM_16_IIV, wireshark_40=False),
    "ChaCha20 with Poly1305 [RFC7634]": EspEncrName(E.ENCR_CHACHA20_POLY1305, wireshark_40=False),
    "ChaCha20 with Poly1305 and IIV [RFC7634 & RFC8750]": EspEncrName(
        E.ENCR_CHACHA20_POLY1305_IIV, wireshark_40=False
    ),
    # ipsecscope extensions (no Wireshark version has these; `keys convert --to esp_sa` writes
    # such rows as comments so Wireshark still loads the rest of the file).
    "AES-CCM with 8 octet ICV [RFC4309]": EspEncrName(E.ENCR_AES_CCM_8, wireshark_40=False),
    "AES-CCM with 12 octet ICV [RFC4309]": EspEncrName(E.ENCR_AES_CCM_12, wireshark_40=False),
    "AES-CCM with 16 octet ICV [RFC4309]": EspEncrName(E.ENCR_AES_CCM_16, wireshark_40=False),
    "NULL with AES-GMAC [RFC4543]": EspEncrName(E.ENCR_NULL_AUTH_AES_GMAC, wireshark_40=False),
}

WS_ESP_AUTH: dict[str, EspAuthName] = {
    "NULL": EspAuthName(I.NONE),
    "HMAC-SHA-1-96 [RFC2404]": EspAuthName(I.AUTH_HMAC_SHA1_96),
    # Pre-RFC 4868 Linux/KAME truncation of HMAC-SHA-256 to 96 bits.
    "HMAC-SHA-256-96 [draft-ietf-ipsec-ciph-sha-256-00]": EspAuthName(I.AUTH_HMAC_SHA2_256_128, icv_len=12),
    "HMAC-SHA-256-128 [RFC4868]": EspAuthName(I.AUTH_HMAC_SHA2_256_128),
    "HMAC-SHA-384-192 [RFC4868]": EspAuthName(I.AUTH_HMAC_SHA2_384_192),
    "HMAC-SHA-512-256 [RFC4868]": EspAuthName(I.AUTH_HMAC_SHA2_512_256),
    "HMAC-MD5-96 [RFC2403]": EspAuthName(I.AUTH_HMAC_MD5_96),
    "MAC-RIPEMD-160-96 [RFC2857]": EspAuthName(INTEG_HMAC_RIPEMD160_96),
    "ANY 64 bit authentication [no checking]": EspAuthName(I.NONE, icv_len=8, check=False),
    "ANY 96 bit authentication [no checking]": EspAuthName(I.NONE, icv_len=12, check=False),
    "ANY 128 bit authentication [no checking]": EspAuthName(I.NONE, icv_len=16, check=False),
    "ANY 192 bit authentication [no checking]": EspAuthName(I.NONE, icv_len=24, check=False),
    "ANY 256 bit authentication [no checking]": EspAuthName(I.NONE, icv_len=32, check=False),
    # ipsecscope extension (commented out in Wireshark's table: no implementation there).
    "AES-XCBC-MAC-96 [RFC3566]": EspAuthName(I.AUTH_AES_XCBC_96, wireshark_40=False),
}


def lookup_name(table: dict[str, _T], name: str) -> _T | None:
    """Exact match first, then case-insensitive: strongSwan's save-keys plugin writes
    "TripleDes-CBC [RFC2451]" where Wireshark's table says "TripleDES-CBC [RFC2451]"."""
    hit = table.get(name)
    if hit is None:
        folded = name.strip().casefold()
        for key, value in table.items():
            if key.casefold() == folded:
                return value
    return hit


def ws_esp_encr_name(encr: int) -> str | None:
    """The Wireshark esp_sa encryption string for ``encr`` (None: Wireshark has none)."""
    for name, spec in WS_ESP_ENCR.items():
        if spec.encr == encr and not spec.gcm_icv_from_auth:
            return name
    return None


def ws_esp_auth_name(integ: int, icv_len: int | None, check: bool = True) -> str | None:
    if not check:
        for name, spec in WS_ESP_AUTH.items():
            if not spec.check and spec.icv_len == icv_len:
                return name
        return None
    default = INTEG_ICV.get(integ)
    want = default if icv_len is None else icv_len
    for name, spec in WS_ESP_AUTH.items():
        if spec.check and spec.integ == integ and (spec.icv_len or default) == want:
            return name
    return None


def ws_name_is_40(name: str) -> bool:
    spec = WS_ESP_ENCR.get(name) or WS_ESP_AUTH.get(name)
    return bool(spec and spec.wireshark_40)


# ---------------------------------------------------------------------------------------------
# Wireshark ikev2_decryption_table: name -> (encr, cipher key bytes)
# ---------------------------------------------------------------------------------------------

WS_IKEV2_ENCR: dict[str, tuple[int, int]] = {
    "NULL [RFC2410]": (E.ENCR_NULL, 0),
    "3DES [RFC2451]": (E.ENCR_3DES, 24),
}
for _bits in (128, 192, 256):
    WS_IKEV2_ENCR[f"AES-CBC-{_bits} [RFC3602]"] = (E.ENCR_AES_CBC, _bits // 8)
    WS_IKEV2_ENCR[f"AES-CTR-{_bits} [RFC5930]"] = (E.ENCR_AES_CTR, _bits // 8)
    for _icv, _gcm, _ccm in ((8, E.ENCR_AES_GCM_8, E.ENCR_AES_CCM_8), (12, E.ENCR_AES_GCM_12, E.ENCR_AES_CCM_12),
                             (16, E.ENCR_AES_GCM_16, E.ENCR_AES_CCM_16)):
        WS_IKEV2_ENCR[f"AES-GCM-{_bits} with {_icv} octet ICV [RFC5282]"] = (_gcm, _bits // 8)
        WS_IKEV2_ENCR[f"AES-CCM-{_bits} with {_icv} octet ICV [RFC5282]"] = (_ccm, _bits // 8)

# name -> (integ, icv_len override or None, check_integrity)
WS_IKEV2_INTEG: dict[str, tuple[int, int | None, bool]] = {
    "NONE [RFC4306]": (I.NONE, None, True),
    "HMAC_MD5_96 [RFC2403]": (I.AUTH_HMAC_MD5_96, None, True),
    "HMAC_SHA1_96 [RFC2404]": (I.AUTH_HMAC_SHA1_96, None, True),
    "HMAC_MD5_128 [RFC4595]": (I.AUTH_HMAC_MD5_128, None, True),
    "HMAC_SHA1_160 [RFC4595]": (I.AUTH_HMAC_SHA1_160, None, True),
    "HMAC_SHA2_256_96 [draft-ietf-ipsec-ciph-sha-256-00]": (I.AUTH_HMAC_SHA2_256_128, 12, True),
    "HMAC_SHA2_256_128 [RFC4868]": (I.AUTH_HMAC_SHA2_256_128, None, True),
    "HMAC_SHA2_384_192 [RFC4868]": (I.AUTH_HMAC_SHA2_384_192, None, True),
    "HMAC_SHA2_512_256 [RFC4868]": (I.AUTH_HMAC_SHA2_512_256, None, True),
}
for _bits in (64, 96, 128, 160, 192, 256):
    WS_IKEV2_INTEG[f"ANY {_bits}-bits of Authentication [No Checking]"] = (I.NONE, _bits // 8, False)


def ws_ikev2_encr_name(encr: int, key_len: int) -> str | None:
    for name, (e, klen) in WS_IKEV2_ENCR.items():
        if e == encr and klen == key_len:
            return name
    return None


def ws_ikev2_integ_name(integ: int, icv_len: int | None, check: bool) -> str | None:
    default = INTEG_ICV.get(integ)
    for name, (i, icv, chk) in WS_IKEV2_INTEG.items():
        if chk != check:
            continue
        if not check:
            if icv == icv_len:
                return name
            continue
        if i == integ and (icv or default) == (icv_len or default):
            return name
    return None


# ---------------------------------------------------------------------------------------------
# Linux xfrm (ip xfrm state). Kernel canonical names first, then the compat aliases it accepts.
# ---------------------------------------------------------------------------------------------

XFRM_ENC: dict[str, int] = {
    "ecb(cipher_null)": E.ENCR_NULL,
    "cipher_null": E.ENCR_NULL,
    "cbc(des)": E.ENCR_DES,
    "des": E.ENCR_DES,
    "cbc(des3_ede)": E.ENCR_3DES,
    "des3_ede": E.ENCR_3DES,
    "3des": E.ENCR_3DES,
    "cbc(cast5)": E.ENCR_CAST,
    "cast5": E.ENCR_CAST,
    "cast128": E.ENCR_CAST,
    "cbc(blowfish)": E.ENCR_BLOWFISH,
    "blowfish": E.ENCR_BLOWFISH,
    "cbc(aes)": E.ENCR_AES_CBC,
    "aes": E.ENCR_AES_CBC,
    "rfc3686(ctr(aes))": E.ENCR_AES_CTR,
    "cbc(camellia)": E.ENCR_CAMELLIA_CBC,
    "camellia": E.ENCR_CAMELLIA_CBC,
    "cbc(twofish)": ENCR_TWOFISH_CBC,
    "twofish": ENCR_TWOFISH_CBC,
    "cbc(serpent)": ENCR_SERPENT_CBC,
    "serpent": ENCR_SERPENT_CBC,
}

# name -> (integ, the kernel's default truncation in bits when the SA was added with plain `auth`)
XFRM_AUTH: dict[str, tuple[int, int]] = {
    "digest_null": (I.NONE, 0),
    "hmac(md5)": (I.AUTH_HMAC_MD5_96, 96),
    "md5": (I.AUTH_HMAC_MD5_96, 96),
    "hmac(sha1)": (I.AUTH_HMAC_SHA1_96, 96),
    "sha1": (I.AUTH_HMAC_SHA1_96, 96),
    # The kernel's default for hmac(sha256) is 96 bits (pre-RFC 4868); `auth-trunc ... 128` fixes it.
    "hmac(sha256)": (I.AUTH_HMAC_SHA2_256_128, 96),
    "sha256": (I.AUTH_HMAC_SHA2_256_128, 96),
    "hmac(sha384)": (I.AUTH_HMAC_SHA2_384_192, 192),
    "sha384": (I.AUTH_HMAC_SHA2_384_192, 192),
    "hmac(sha512)": (I.AUTH_HMAC_SHA2_512_256, 256),
    "sha512": (I.AUTH_HMAC_SHA2_512_256, 256),
    "hmac(rmd160)": (INTEG_HMAC_RIPEMD160_96, 96),
    "rmd160": (INTEG_HMAC_RIPEMD160_96, 96),
    "ripemd160": (INTEG_HMAC_RIPEMD160_96, 96),
    "xcbc(aes)": (I.AUTH_AES_XCBC_96, 96),
    "aes-xcbc-mac": (I.AUTH_AES_XCBC_96, 96),
    "cmac(aes)": (I.AUTH_AES_CMAC_96, 96),
}

# (integ, icv bits) pairs that are their own IANA transform
XFRM_AUTH_EXACT: dict[tuple[str, int], int] = {
    ("hmac(md5)", 128): I.AUTH_HMAC_MD5_128,
    ("hmac(sha1)", 160): I.AUTH_HMAC_SHA1_160,
}

# aead name -> {icv bits: encr}
XFRM_AEAD: dict[str, dict[int, int]] = {
    "rfc4106(gcm(aes))": {64: E.ENCR_AES_GCM_8, 96: E.ENCR_AES_GCM_12, 128: E.ENCR_AES_GCM_16},
    "rfc4309(ccm(aes))": {64: E.ENCR_AES_CCM_8, 96: E.ENCR_AES_CCM_12, 128: E.ENCR_AES_CCM_16},
    "rfc4543(gcm(aes))": {128: E.ENCR_NULL_AUTH_AES_GMAC},
    "rfc7539esp(chacha20,poly1305)": {128: E.ENCR_CHACHA20_POLY1305},
    "rfc4309(ccm(camellia))": {64: E.ENCR_CAMELLIA_CCM_8, 96: E.ENCR_CAMELLIA_CCM_12, 128: E.ENCR_CAMELLIA_CCM_16},
}


def xfrm_enc_name(encr: int) -> str | None:
    for name, e in XFRM_ENC.items():
        if e == encr:
            return name
    return None


def xfrm_aead_name(encr: int) -> tuple[str, int] | None:
    for name, m in XFRM_AEAD.items():
        for bits, e in m.items():
            if e == encr:
                return name, bits
    return None


def xfrm_auth_name(integ: int) -> str | None:
    for (name, _bits), i in XFRM_AUTH_EXACT.items():
        if i == integ:
            return name
    for name, (i, _bits) in XFRM_AUTH.items():
        if i == integ:
            return name
    return None


# ---------------------------------------------------------------------------------------------
# strongSwan proposal names ("selected proposal: ESP:AES_GCM_16_256/NO_EXT_SEQ")
# ---------------------------------------------------------------------------------------------

SWAN_ENCR: dict[str, int] = {
    "DES_IV64": E.ENCR_DES_IV64,
    "DES_CBC": E.ENCR_DES,
    "3DES_CBC": E.ENCR_3DES,
    "RC5_CBC": E.ENCR_RC5,
    "IDEA_CBC": E.ENCR_IDEA,
    "CAST_CBC": E.ENCR_CAST,
    "BLOWFISH_CBC": E.ENCR_BLOWFISH,
    "3IDEA": E.ENCR_3IDEA,
    "DES_IV32": E.ENCR_DES_IV32,
    "NULL": E.ENCR_NULL,
    "AES_CBC": E.ENCR_AES_CBC,
    "AES_CTR": E.ENCR_AES_CTR,
    "AES_CCM_8": E.ENCR_AES_CCM_8,
    "AES_CCM_12": E.ENCR_AES_CCM_12,
    "AES_CCM_16": E.ENCR_AES_CCM_16,
    "AES_GCM_8": E.ENCR_AES_GCM_8,
    "AES_GCM_12": E.ENCR_AES_GCM_12,
    "AES_GCM_16": E.ENCR_AES_GCM_16,
    "NULL_AES_GMAC": E.ENCR_NULL_AUTH_AES_GMAC,
    "CAMELLIA_CBC": E.ENCR_CAMELLIA_CBC,
    "CAMELLIA_CTR": E.ENCR_CAMELLIA_CTR,
    "CAMELLIA_CCM_8": E.ENCR_CAMELLIA_CCM_8,
    "CAMELLIA_CCM_12": E.ENCR_CAMELLIA_CCM_12,
    "CAMELLIA_CCM_16": E.ENCR_CAMELLIA_CCM_16,
    "CHACHA20_POLY1305": E.ENCR_CHACHA20_POLY1305,
    "SERPENT_CBC": ENCR_SERPENT_CBC,
    "TWOFISH_CBC": ENCR_TWOFISH_CBC,
}

SWAN_INTEG: dict[str, tuple[int, int | None]] = {
    "HMAC_MD5_96": (I.AUTH_HMAC_MD5_96, None),
    "HMAC_SHA1_96": (I.AUTH_HMAC_SHA1_96, None),
    "AES_XCBC_96": (I.AUTH_AES_XCBC_96, None),
    "HMAC_MD5_128": (I.AUTH_HMAC_MD5_128, None),
    "HMAC_SHA1_160": (I.AUTH_HMAC_SHA1_160, None),
    "AES_CMAC_96": (I.AUTH_AES_CMAC_96, None),
    "AES_128_GMAC": (I.AUTH_AES_128_GMAC, None),
    "AES_192_GMAC": (I.AUTH_AES_192_GMAC, None),
    "AES_256_GMAC": (I.AUTH_AES_256_GMAC, None),
    "HMAC_SHA2_256_128": (I.AUTH_HMAC_SHA2_256_128, None),
    "HMAC_SHA2_384_192": (I.AUTH_HMAC_SHA2_384_192, None),
    "HMAC_SHA2_512_256": (I.AUTH_HMAC_SHA2_512_256, None),
    # strongSwan private-use transforms
    "HMAC_SHA2_256_96": (I.AUTH_HMAC_SHA2_256_128, 12),
}

SWAN_PRF: dict[str, int] = {
    "PRF_HMAC_MD5": P.PRF_HMAC_MD5,
    "PRF_HMAC_SHA1": P.PRF_HMAC_SHA1,
    "PRF_HMAC_TIGER": P.PRF_HMAC_TIGER,
    "PRF_AES128_XCBC": P.PRF_AES128_XCBC,
    "PRF_HMAC_SHA2_256": P.PRF_HMAC_SHA2_256,
    "PRF_HMAC_SHA2_384": P.PRF_HMAC_SHA2_384,
    "PRF_HMAC_SHA2_512": P.PRF_HMAC_SHA2_512,
    "PRF_AES128_CMAC": P.PRF_AES128_CMAC,
}


def parse_swan_encr(token: str) -> tuple[int, int | None] | None:
    """``AES_CBC_256`` -> (ENCR_AES_CBC, 32); ``3DES_CBC`` -> (ENCR_3DES, None)."""
    if token in SWAN_ENCR:
        return SWAN_ENCR[token], None
    head, _, tail = token.rpartition("_")
    if head in SWAN_ENCR and tail.isdigit():
        return SWAN_ENCR[head], int(tail) // 8
    return None


# ---------------------------------------------------------------------------------------------
# tcpdump -E ("spi@ipdst algo:secret"), tcpdump print-esp.c: a "-hmac96" suffix means a 12-byte
# ICV follows (stripped, never checked), a "-cbc" suffix is dropped, and the rest is looked up
# with OpenSSL's EVP_get_cipherbyname(). So only CBC ciphers work.
# ---------------------------------------------------------------------------------------------

TCPDUMP_ENC: dict[str, tuple[int, int | None]] = {  # name without -cbc -> (encr, key bytes or None)
    "none": (E.ENCR_NULL, 0),
    "des": (E.ENCR_DES, 8),
    "3des": (E.ENCR_3DES, 24),
    "des3": (E.ENCR_3DES, 24),
    "des-ede3": (E.ENCR_3DES, 24),
    "blowfish": (E.ENCR_BLOWFISH, None),
    "bf": (E.ENCR_BLOWFISH, None),
    "cast128": (E.ENCR_CAST, None),
    "cast5": (E.ENCR_CAST, None),
    "cast": (E.ENCR_CAST, None),
    "aes128": (E.ENCR_AES_CBC, 16),
    "aes-128": (E.ENCR_AES_CBC, 16),
    "aes192": (E.ENCR_AES_CBC, 24),
    "aes-192": (E.ENCR_AES_CBC, 24),
    "aes256": (E.ENCR_AES_CBC, 32),
    "aes-256": (E.ENCR_AES_CBC, 32),
    "camellia128": (E.ENCR_CAMELLIA_CBC, 16),
    "camellia192": (E.ENCR_CAMELLIA_CBC, 24),
    "camellia256": (E.ENCR_CAMELLIA_CBC, 32),
}


# --- "ikev2 I|R SPIi SPIr integ:0xKEY encr:0xKEY" lines -------------------------------------------
# tcpdump's -E secrets syntax for IKEv2 SA keys (print-esp.c esp_print_decode_ikeline), which
# Libreswan's pluto also logs at plutodebug "private": the I line holds the keys of what the
# initiator sends (SK_ai, SK_ei), the R line the responder's (SK_ar, SK_er).
# (A pattern, compiled by the two readers that match it: ~0.2 ms that `decrypt -k keys.json` skips.)
IKE_LINE_PATTERN = (
    r"^ikev2 (?P<dir>[IR]) 0x(?P<spi_i>[0-9a-fA-F]{16}) 0x(?P<spi_r>[0-9a-fA-F]{16}) "
    r"(?P<integ>[A-Za-z0-9_]+):(?:0x(?P<ak>[0-9a-fA-F]*))? (?P<encr>[A-Za-z0-9_]+):0x(?P<ek>[0-9a-fA-F]*)\s*$"
)
# Libreswan's encrypt_tcpdump_name / integ_tcpdump_name (lib/libswan/ike_alg_*.c), as used in
# the "ikev2 I|R" lines. Longest first so "aes_gcm_16256" is AES_GCM_16 + 256 bits.
IKE_LINE_ENCR: dict[str, int] = {
    "aes": E.ENCR_AES_CBC,
    "aes_ctr": E.ENCR_AES_CTR,
    "aes_gcm": E.ENCR_AES_GCM_8,  # sic: Libreswan gives AES_GCM_8 the bare name
    "aes_gcm_12": E.ENCR_AES_GCM_12,
    "aes_gcm_16": E.ENCR_AES_GCM_16,
    "aes_ccm_8": E.ENCR_AES_CCM_8,
    "aes_ccm_12": E.ENCR_AES_CCM_12,
    "aes_ccm_16": E.ENCR_AES_CCM_16,
    "3des": E.ENCR_3DES,
    "camellia": E.ENCR_CAMELLIA_CBC,
    "camellia_ctr": E.ENCR_CAMELLIA_CTR,
    "chacha20_poly1305": E.ENCR_CHACHA20_POLY1305,
    "null": E.ENCR_NULL,
    "NULL_AUTH_AES_GMAC": E.ENCR_NULL_AUTH_AES_GMAC,
    "cast": E.ENCR_CAST,
    "twofish": ENCR_TWOFISH_CBC,
    "serpent": ENCR_SERPENT_CBC,
}
_IKE_LINE_ENCR_BY_LEN = sorted(IKE_LINE_ENCR, key=len, reverse=True)
IKE_LINE_INTEG: dict[str, int] = {
    "none": I.NONE,
    "md5": I.AUTH_HMAC_MD5_96,
    "sha1": I.AUTH_HMAC_SHA1_96,
    "sha256": I.AUTH_HMAC_SHA2_256_128,
    "sha384": I.AUTH_HMAC_SHA2_384_192,
    "sha512": I.AUTH_HMAC_SHA2_512_256,
    "aes_xcbc": I.AUTH_AES_XCBC_96,
    "aes_cmac": I.AUTH_AES_CMAC_96,
}


def ike_line_encr(token: str) -> tuple[int, int | None] | None:
    """``aes_gcm_16256`` -> (ENCR_AES_GCM_16, 32); ``3des`` -> (ENCR_3DES, None)."""
    for name in _IKE_LINE_ENCR_BY_LEN:
        if token.startswith(name):
            rest = token[len(name):]
            if rest == "":
                return IKE_LINE_ENCR[name], None
            if rest.isdigit() and int(rest) % 8 == 0:
                return IKE_LINE_ENCR[name], int(rest) // 8
    return None


# The algorithm strings of the pcapng ESP SA secrets block (type 0x45535053, draft-ietf-opsawg-pcapng
# "Decryption Secrets Block"; Wireshark merge request 20256): a reader skips any other row.
DSB_ESP_ENCR = frozenset({
    "NULL", "TripleDES-CBC [RFC2451]", "AES-CBC [RFC3602]", "AES-CTR [RFC3686]", "DES-CBC [RFC2405]",
    "CAST5-CBC [RFC2144]", "BLOWFISH-CBC [RFC2451]", "TWOFISH-CBC", "AES-GCM [RFC4106]",
    "AES-GCM with 8 octet ICV [RFC4106]", "AES-GCM with 12 octet ICV [RFC4106]",
    "AES-GCM with 16 octet ICV [RFC4106]", "AES-GCM with IIV and 16 octet ICV [RFC4106 & RFC8750]",
    "ChaCha20 with Poly1305 [RFC7634]", "ChaCha20 with Poly1305 and IIV [RFC7634 & RFC8750]"})
DSB_ESP_AUTH = frozenset({
    "NULL", "HMAC-SHA-1-96 [RFC2404]", "HMAC-SHA-256-96 [draft-ietf-ipsec-ciph-sha-256-00]",
    "HMAC-SHA-256-128 [RFC4868]", "HMAC-SHA-384-192 [RFC4868]", "HMAC-SHA-512-256 [RFC4868]",
    "HMAC-MD5-96 [RFC2403]", "MAC-RIPEMD-160-96 [RFC2857]",
    *(f"ANY {n} bit authentication [no checking]" for n in (64, 96, 128, 192, 256))})
