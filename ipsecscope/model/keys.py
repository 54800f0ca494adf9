"""Key material, whatever file it came from. Secrets: never printed unless the user asks (--show-keys)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .iana import ProtocolId


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


@dataclass(slots=True, frozen=True)
class PeerLogNote:
    """One piece of *peer configuration evidence* from an IKE daemon's own log (strongSwan charon).

    The wire never says what a responder would have accepted; its log often does
    (``configured proposals: ESP:AES_GCM_16_256/NO_EXT_SEQ``, ``traffic selectors ... unacceptable``,
    ``tried 1 shared key ... but MAC mismatched``, ``DH group ECP_256 unacceptable, requesting
    MODP_2048``). Rules bind a note to an IKE SA by ``ike_sa`` and to a peer by ``local`` (the
    address of the host that wrote the log) so a finding can say what that peer is configured with.

    ``kind``: "configured_proposals" | "received_proposals" | "ts_config" | "auth" | "dh" |
    "peer_notify" (an error notify the logging peer received) | "conn_config" (a connection as
    loaded, from charon's CFG 2 dump: addresses, proposals, each child's local_ts/remote_ts; bound
    by ``conn`` rather than by an IKE SA) | "daemon_start" (charon started again in the same log: a
    restart; the first start of a log is not recorded) | "unknown_sa" (a message for an IKE SA, ``ike_sa``, or ESP for an SA the daemon does
    not have). ``data`` holds the parsed values (see
    :mod:`ipsecscope.keys.charon`); it holds no secrets.
    """

    kind: str
    text: str  # the log message after the "NN[GRP] <conn|uid>" prefix
    ike_sa: str | None = None  # "<spi_i>_<spi_r>" hex like IkeSa.key when logged, else the charon unique id
    ts: str = ""  # the log line's own timestamp text, as written ("" if none)
    source: str = ""  # "file:line"
    data: dict = field(default_factory=dict, compare=False, hash=False)
    local: str | None = None  # address of the peer that wrote the log, when the log says
    remote: str | None = None  # the other peer's address, when the log says
    conn: str | None = None  # the connection name in "<conn|uid>", when given
