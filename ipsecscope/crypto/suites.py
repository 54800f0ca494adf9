"""ESP (and AH) algorithm registry: what every encryption and integrity transform needs, as data.

One row per IANA transform (:class:`~ipsecscope.model.iana.EncrTransform` /
:class:`~ipsecscope.model.iana.IntegTransform`). ``crypto.esp_open`` builds a per-SA opener from these
rows; nothing else in the package branches on an algorithm ID.

Key layout conventions (the ones Wireshark's ``esp_sa`` table, ``ip xfrm`` ``aead``/``enc`` lines
and strongSwan logs use): for AES-CTR, AES-GCM, AES-CCM, AES-GMAC and ChaCha20-Poly1305 the
encryption key *ends with* the salt/nonce (RFC 3686 §5.1: 4-byte nonce; RFC 4106 §8.1: 4-byte
salt; RFC 4309 §7.1: 3-byte salt; RFC 4543 §3.2: 4-byte salt; RFC 7634 §4: 4-byte salt).
"""

from __future__ import annotations

from typing import NamedTuple

from ipsecscope.errors import UnknownAlgorithmError
from ipsecscope.model.iana import EncrTransform as E
from ipsecscope.model.iana import IntegTransform as I  # noqa: E741
from ipsecscope.model.iana import ProtocolId, name


# The rows' types are NamedTuples, not frozen dataclasses: as immutable, and ~70 us to create
# instead of ~550 (every command that decrypts imports this module; issue 15).
class EncrSuite(NamedTuple):
    """An ESP encryption transform.

    ``kind`` selects the construction in ``crypto.esp_open`` ("null", "cbc", "ctr", "gcm", "ccm",
    "chacha", "gmac"); ``cipher`` the block cipher ("aes", "3des", "des", "chacha20", None).
    ``key_sizes`` are the cipher key lengths in bytes *without* the salt. ``icv_len`` is 0 for
    non-AEAD transforms (their ICV comes from the integrity transform). ``block`` is the alignment
    the ciphertext must have (RFC 4303 §2.4: 4 bytes even for stream modes).
    """

    id: int
    kind: str
    cipher: str | None
    key_sizes: tuple[int, ...]
    salt_len: int
    iv_len: int
    icv_len: int
    block: int
    wireshark: str | None  # the esp_sa UAT string; None: Wireshark 4.0 has no such algorithm (CCM,
    # ChaCha20-Poly1305 and GMAC are missing from its ESP dissector)
    label: str  # short human/strongSwan-ish name

    @property
    def aead(self) -> bool:
        return self.icv_len > 0


class IntegSuite(NamedTuple):
    """An ESP integrity transform: ``kind`` "hmac" (``hash`` names a hashlib digest), "xcbc" or
    "none"; ICV = first ``icv_len`` bytes of the MAC (RFC 2403/2404/3566/4868)."""

    id: int
    kind: str
    hash: str | None
    key_len: int
    icv_len: int
    wireshark: str | None
    label: str


_AES = (16, 24, 32)

ENCR: dict[int, EncrSuite] = {s.id: s for s in (
    #        id                         kind     cipher      keys      salt iv icv block wireshark                         label
    EncrSuite(E.ENCR_NULL,              "null",  None,       (0,),     0, 0,  0,  4,  "NULL",                            "null"),
    EncrSuite(E.ENCR_AES_CBC,           "cbc",   "aes",      _AES,     0, 16, 0,  16, "AES-CBC [RFC3602]",               "aes-cbc"),
    EncrSuite(E.ENCR_AES_CTR,           "ctr",   "aes",      _AES,     4, 8,  0,  4,  "AES-CTR [RFC3686]",               "aes-ctr"),
    EncrSuite(E.ENCR_3DES,              "cbc",   "3des",     (24,),    0, 8,  0,  8,  "TripleDES-CBC [RFC2451]",         "3des"),
    EncrSuite(E.ENCR_DES,               "cbc",   "des",      (8,),     0, 8,  0,  8,  "DES-CBC [RFC2405]",               "des"),
    EncrSuite(E.ENCR_AES_GCM_8,         "gcm",   "aes",      _AES,     4, 8,  8,  4,  "AES-GCM with 8 octet ICV [RFC4106]", "aes-gcm8"),
    EncrSuite(E.ENCR_AES_GCM_12,        "gcm",   "aes",      _AES,     4, 8,  12, 4,  "AES-GCM with 12 octet ICV [RFC4106]", "aes-gcm12"),
    EncrSuite(E.ENCR_AES_GCM_16,        "gcm",   "aes",      _AES,     4, 8,  16, 4,  "AES-GCM with 16 octet ICV [RFC4106]", "aes-gcm16"),
    EncrSuite(E.ENCR_AES_CCM_8,         "ccm",   "aes",      _AES,     3, 8,  8,  4,  None,                              "aes-ccm8"),
    EncrSuite(E.ENCR_AES_CCM_12,        "ccm",   "aes",      _AES,     3, 8,  12, 4,  None,                              "aes-ccm12"),
    EncrSuite(E.ENCR_AES_CCM_16,        "ccm",   "aes",      _AES,     3, 8,  16, 4,  None,                              "aes-ccm16"),
    EncrSuite(E.ENCR_CHACHA20_POLY1305, "chacha", "chacha20", (32,),   4, 8,  16, 4,  None,                              "chacha20poly1305"),
    EncrSuite(E.ENCR_NULL_AUTH_AES_GMAC, "gmac", "aes",      _AES,     4, 8,  16, 4,  None,                              "aes-gmac"),
)}

INTEG: dict[int, IntegSuite] = {s.id: s for s in (
    #          id                         kind    hash      key icv wireshark                         label
    IntegSuite(I.NONE,                    "none", None,     0,  0,  "NULL",                           "none"),
    IntegSuite(I.AUTH_HMAC_MD5_96,        "hmac", "md5",    16, 12, "HMAC-MD5-96 [RFC2403]",          "md5"),
    IntegSuite(I.AUTH_HMAC_SHA1_96,       "hmac", "sha1",   20, 12, "HMAC-SHA-1-96 [RFC2404]",        "sha1"),
    # Wireshark 4.0 lists AES-XCBC-MAC-96 but has it commented out: no esp_sa string.
    IntegSuite(I.AUTH_AES_XCBC_96,        "xcbc", None,     16, 12, None,                             "aesxcbc"),
    IntegSuite(I.AUTH_HMAC_SHA2_256_128,  "hmac", "sha256", 32, 16, "HMAC-SHA-256-128 [RFC4868]",     "sha256"),
    IntegSuite(I.AUTH_HMAC_SHA2_384_192,  "hmac", "sha384", 48, 24, "HMAC-SHA-384-192 [RFC4868]",     "sha384"),
    IntegSuite(I.AUTH_HMAC_SHA2_512_256,  "hmac", "sha512", 64, 32, "HMAC-SHA-512-256 [RFC4868]",     "sha512"),
)}


def encr_suite(encr: int) -> EncrSuite:
    try:
        return ENCR[encr]
    except KeyError:
        raise UnknownAlgorithmError(
            f"ESP encryption {name(E, encr)} is not implemented; supported: "
            + ", ".join(name(E, i) for i in ENCR)) from None


# Integrity transforms only AH opens here: AES-CMAC-96 (RFC 4494) is an ESP transform too, but
# crypto.esp_open never built it.
AH_ONLY: dict[int, IntegSuite] = {s.id: s for s in (
    IntegSuite(I.AUTH_AES_CMAC_96,        "cmac", None,     16, 12, None,                             "aescmac"),
)}


def integ_suite(integ: int, protocol: int = ProtocolId.ESP) -> IntegSuite:
    """The integrity transform ``integ`` of an ESP SA, or of an AH SA (``protocol``
    ProtocolId.AH): AH adds :data:`AH_ONLY` and refuses NONE, as AH is its ICV (RFC 4302 §2.6)."""
    ah = protocol == ProtocolId.AH
    s = INTEG.get(integ) or (AH_ONLY.get(integ) if ah else None)
    if s is None or (ah and s.kind == "none"):
        table = [i for i in (*INTEG, *AH_ONLY) if i != I.NONE] if ah else list(INTEG)
        raise UnknownAlgorithmError(f"{'AH' if ah else 'ESP'} integrity {name(I, integ)} is not implemented; "
                                    "supported: " + ", ".join(name(I, i) for i in table))
    return s


def split_key(suite: EncrSuite, enc_key: bytes) -> tuple[bytes, bytes]:
    """(cipher key, salt) from a key that carries its salt at the end; checks the length."""
    n = len(enc_key) - suite.salt_len
    if n not in suite.key_sizes:
        sizes = "/".join(str((k + suite.salt_len) * 8) for k in suite.key_sizes)
        raise UnknownAlgorithmError(
            f"{name(E, suite.id)} key is {len(enc_key) * 8} bits; expected {sizes} bits"
            + (f" (cipher key followed by its {suite.salt_len}-byte salt)" if suite.salt_len else "")
            + ". Check the key and the algorithm in the key file.")
    return bytes(enc_key[:n]), bytes(enc_key[n:])
