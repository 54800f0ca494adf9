"""Key material, whatever file it came from. Secrets: never printed unless the user asks (--show-keys).

ESP/AH SA keys are defined here; IKE SA keys (:mod:`.ike_keys`) and charon log notes
(:mod:`.peer_notes`) in modules of their own, loaded the first time one of them is asked for, here
as everywhere (``from ipsecscope.model.keys import IkeSaKeys`` still works): creating a frozen
dataclass costs 0.3-0.6 ms, and `decrypt -k keys.json` uses ESP keys only (issue 15).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .iana import ProtocolId

if TYPE_CHECKING:  # (what __getattr__ below gives, for type checkers)
    from .ike_keys import IkeSaKeys, Ikev1Keys
    from .peer_notes import PeerLogNote

__all__ = ["EspSaKeys", "IkeSaKeys", "Ikev1Keys", "PeerLogNote", "redact"]


def redact(key: bytes | None, show: bool = False) -> str:
    if not key:
        return ""
    return key.hex() if show else f"<{len(key) * 8}-bit key hidden>"


@dataclass(slots=True, frozen=True)
class EspSaKeys:
    """Keys for one ESP (or AH) SA, in one direction.

    ``enc_key`` includes the trailing salt/nonce for AES-GCM/CCM/CTR, GMAC and ChaCha20-Poly1305
    (RFC 4106 §8.1, RFC 4309 §7.1, RFC 3686 §5.1, RFC 7634 §4), as Wireshark, `ip xfrm` (aead
    lines) and strongSwan logs carry it. ``src``/``dst``/``spi`` may be wildcards: ``"*"``,
    ``"198.18.*.*"``, ``"198.18.0.0/15"``; ``spi_pattern`` is a Wireshark 10-char ``0x....**``
    pattern when the SPI has wildcards, else None.
    """

    spi: int
    encr: int  # iana.EncrTransform
    enc_key: bytes = field(repr=False)
    integ: int  # iana.IntegTransform (NONE for AEAD)
    auth_key: bytes = field(repr=False)
    src: str = "*"
    dst: str = "*"
    spi_pattern: str | None = None
    icv_len: int | None = None  # override; None = the suite's default
    esn: bool | None = None  # None = infer (track high bits, verify ICV)
    protocol: int = ProtocolId.ESP  # or ProtocolId.AH
    source: str = ""  # "file:line" or "derived: KEYMAT from IKE SA …" — for explanations
    # False for Wireshark's "ANY n bit authentication [no checking]": integ is NONE and icv_len
    # says how many trailing bytes to strip without verifying them (AEAD tags are always checked).
    check_integrity: bool = True
    # Set by the key lookup when these keys were matched across NAT: the key file names the
    # peer's private address, the wire its translated one ("10.0.0.1 -> 198.18.0.1"). The ICV
    # decides: a NAT-matched key that fails it is not this SA's key (crypto.esp drops it).
    nat: str = ""


# name -> the module (in this package) that defines it; resolved on first use (PEP 562)
_ELSEWHERE = {"IkeSaKeys": "ike_keys", "Ikev1Keys": "ike_keys", "PeerLogNote": "peer_notes"}


def __getattr__(name: str) -> object:
    module = _ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __package__), name)
    globals()[name] = value
    return value
