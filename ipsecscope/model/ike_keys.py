"""IKE SA keys (IKEv2 SK_* and IKEv1 phase-1), re-exported by :mod:`ipsecscope.model.keys`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, frozen=True)
class IkeSaKeys:
    """IKEv2 SA keys (RFC 7296 §2.14) as the ikev2_decryption_table / charon logs carry them."""

    spi_i: bytes
    spi_r: bytes
    encr: int  # iana.EncrTransform
    sk_ei: bytes = field(repr=False)  # with trailing salt for AEAD/CTR, like Wireshark's table
    sk_er: bytes = field(repr=False)
    integ: int  # iana.IntegTransform (NONE for AEAD or "no checking")
    sk_ai: bytes = field(default=b"", repr=False)
    sk_ar: bytes = field(default=b"", repr=False)
    prf: int | None = None  # iana.PrfTransform, needed for KEYMAT derivation
    sk_d: bytes | None = field(default=None, repr=False)
    check_integrity: bool = True  # False for Wireshark's "ANY n-bits [No Checking]"
    icv_len: int | None = None  # with check_integrity False: how many bytes to strip
    source: str = ""


@dataclass(slots=True, frozen=True)
class Ikev1Keys:
    """IKEv1 phase-1 encryption key (derived from SKEYID_e), bound by initiator cookie."""

    cookie_i: bytes
    enc_key: bytes = field(repr=False)
    source: str = ""
