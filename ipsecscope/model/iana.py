"""IANA registries as enums, with the registries' own names.

Sources: "Internet Key Exchange Version 2 (IKEv2) Parameters" and "Internet Key Exchange (IKE)
Attributes" / "ISAKMP" registries. Wire values that are not in an enum stay ints; use
:func:`name` to print either. This module holds the transform IDs that key files name (ENCR, PRF,
INTEG); every other registry is in :mod:`ipsecscope.model.iana_ike`, read through this module
(``iana.NotifyType``) and loaded at its first use.
"""

from __future__ import annotations

from enum import IntEnum


def name(enum: type[IntEnum], value: int) -> str:
    """Registry name for ``value``, the private-use name we give it (PRIVATE_NAMES), or
    ``"<ENUMNAME> <value>"`` when unassigned/unknown."""
    try:
        return enum(value).name
    except ValueError:
        return PRIVATE_NAMES.get(enum, {}).get(value) or f"{enum.__name__} {value}"


class EncrTransform(IntEnum):
    ENCR_DES_IV64 = 1
    ENCR_DES = 2
    ENCR_3DES = 3
    ENCR_RC5 = 4
    ENCR_IDEA = 5
    ENCR_CAST = 6
    ENCR_BLOWFISH = 7
    ENCR_3IDEA = 8
    ENCR_DES_IV32 = 9
    ENCR_NULL = 11
    ENCR_AES_CBC = 12
    ENCR_AES_CTR = 13
    ENCR_AES_CCM_8 = 14
    ENCR_AES_CCM_12 = 15
    ENCR_AES_CCM_16 = 16
    ENCR_AES_GCM_8 = 18
    ENCR_AES_GCM_12 = 19
    ENCR_AES_GCM_16 = 20
    ENCR_NULL_AUTH_AES_GMAC = 21
    ENCR_CAMELLIA_CBC = 23
    ENCR_CAMELLIA_CTR = 24
    ENCR_CAMELLIA_CCM_8 = 25
    ENCR_CAMELLIA_CCM_12 = 26
    ENCR_CAMELLIA_CCM_16 = 27
    ENCR_CHACHA20_POLY1305 = 28
    ENCR_AES_CCM_8_IIV = 29
    ENCR_AES_GCM_16_IIV = 30
    ENCR_CHACHA20_POLY1305_IIV = 31
    ENCR_KUZNYECHIK_MGM_KTREE = 32
    ENCR_MAGMA_MGM_KTREE = 33
    ENCR_KUZNYECHIK_MGM_MAC_KTREE = 34
    ENCR_MAGMA_MGM_MAC_KTREE = 35


class PrfTransform(IntEnum):
    PRF_HMAC_MD5 = 1
    PRF_HMAC_SHA1 = 2
    PRF_HMAC_TIGER = 3
    PRF_AES128_XCBC = 4
    PRF_HMAC_SHA2_256 = 5
    PRF_HMAC_SHA2_384 = 6
    PRF_HMAC_SHA2_512 = 7
    PRF_AES128_CMAC = 8
    PRF_HMAC_STREEBOG_512 = 9


class IntegTransform(IntEnum):
    NONE = 0
    AUTH_HMAC_MD5_96 = 1
    AUTH_HMAC_SHA1_96 = 2
    AUTH_DES_MAC = 3
    AUTH_KPDK_MD5 = 4
    AUTH_AES_XCBC_96 = 5
    AUTH_HMAC_MD5_128 = 6
    AUTH_HMAC_SHA1_160 = 7
    AUTH_AES_CMAC_96 = 8
    AUTH_AES_128_GMAC = 9
    AUTH_AES_192_GMAC = 10
    AUTH_AES_256_GMAC = 11
    AUTH_HMAC_SHA2_256_128 = 12
    AUTH_HMAC_SHA2_384_192 = 13
    AUTH_HMAC_SHA2_512_256 = 14


class ProtocolId(IntEnum):
    """IKEv2 Security Protocol Identifiers (RFC 7296 §3.3.1). Here with the transform IDs rather
    than with the other IKE registries (iana_ike): key files and the key store name an SA's
    protocol (AH or ESP) on decrypt's start-up too."""

    NONE = 0
    IKE = 1
    AH = 2
    ESP = 3
    FC_ESP_HEADER = 4
    FC_CT_AUTHENTICATION = 5


# IANA leaves 1024-65535 of the ENCR and INTEG registries to private use (RFC 7296 §3.3.2). Key
# files name ciphers that have no IANA number there (Wireshark "TWOFISH-CBC", `ip xfrm`
# cbc(twofish)); we use strongSwan's private IDs, so a strongSwan user recognises them, and
# ipsecscope's own one for RIPEMD-160. Everything that prints a transform goes through name().
ENCR_SERPENT_CBC = 1026  # strongSwan ENCR_SERPENT_CBC
ENCR_TWOFISH_CBC = 1027  # strongSwan ENCR_TWOFISH_CBC
INTEG_HMAC_RIPEMD160_96 = 1100  # ipsecscope private: Wireshark "MAC-RIPEMD-160-96 [RFC2857]"
PRIVATE_NAMES: dict[type[IntEnum], dict[int, str]] = {
    EncrTransform: {ENCR_TWOFISH_CBC: "ENCR_TWOFISH_CBC", ENCR_SERPENT_CBC: "ENCR_SERPENT_CBC"},
    IntegTransform: {INTEG_HMAC_RIPEMD160_96: "AUTH_HMAC_RIPEMD160_96"},
}


def __getattr__(attr: str):
    """The other registries (IKE's exchanges, payloads, notify types, ... and IKEv1's) live in
    :mod:`ipsecscope.model.iana_ike` and load at their first use as ``iana.NotifyType``: building
    their ~40 IntEnum classes costs ~6 ms of CPU, which ``decrypt``, ``summary`` and ``keys`` (the
    transform IDs only) would pay at every start (PEP 562)."""
    if attr.startswith("__"):  # (the import system asks for __path__ at every `from iana import X`)
        raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
    from . import iana_ike

    try:
        value = getattr(iana_ike, attr)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {attr!r}") from None
    globals()[attr] = value  # (once: later lookups are plain module attributes)
    return value


def __dir__() -> list[str]:
    from . import iana_ike

    return sorted(set(globals()) | {k for k in vars(iana_ike) if not k.startswith("_")})
