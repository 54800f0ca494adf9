"""Decoded IKE messages (IKEv2 per RFC 7296, IKEv1 per RFC 2408/2409 headers and cleartext payloads).

Integer registry values are kept as ``int`` in the dataclasses and named through the enums in
:mod:`ipsecscope.model.iana` (``iana.name(EncrTransform, 20)`` -> ``"ENCR_AES_GCM_16"``), so an
unknown value from the wire never fails to decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, frozen=True)
class IkeHeader:
    spi_i: bytes  # 8 bytes (IKEv1: initiator cookie)
    spi_r: bytes  # 8 bytes (IKEv1: responder cookie)
    next_payload: int
    major: int
    minor: int
    exchange: int  # iana.ExchangeType (v2) / iana.Ikev1Exchange (v1)
    flags: int
    msg_id: int
    length: int

    @property
    def version(self) -> int:
        return self.major

    @property
    def is_initiator(self) -> bool:
        # v2: I flag (0x08) = sent by the original initiator (RFC 7296 §3.1). v1 has no such flag.
        return bool(self.flags & 0x08) if self.major == 2 else False

    @property
    def is_response(self) -> bool:
        if self.major != 2 or not self.flags & 0x20:
            return False
        # Only the original initiator starts IKE_SA_INIT and only the responder answers it (RFC 7296
        # §1.2, §2.2): a message of that exchange with the I flag is the initiator's request, even
        # with the R flag set too (a real client sends flags 0xff: reserved bits set, which §3.1 says
        # to ignore, and R with them; its responder answers it as the request it is).
        return not (self.exchange == 34 and self.flags & 0x08)

    @property
    def encrypted_v1(self) -> bool:
        return self.major == 1 and bool(self.flags & 0x01)


# ---- SA payload -----------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Transform:
    type: int  # iana.TransformType (v2); v1: transform number's attribute view, see attrs
    id: int  # transform ID within its type (v2) / transform ID e.g. KEY_IKE, ESP_AES (v1)
    key_length: int | None = None  # Key Length attribute (14) in bits, when present
    attrs: tuple[tuple[int, int | bytes], ...] = ()  # all attributes (type, value) as on the wire


@dataclass(slots=True, frozen=True)
class Proposal:
    num: int
    protocol: int  # iana.ProtocolId: 1 IKE, 2 AH, 3 ESP
    spi: bytes
    transforms: tuple[Transform, ...]


@dataclass(slots=True, frozen=True)
class TrafficSelector:
    ts_type: int  # 7 TS_IPV4_ADDR_RANGE, 8 TS_IPV6_ADDR_RANGE
    ip_proto: int  # 0 = any
    start_port: int
    end_port: int
    start_addr: str
    end_addr: str

    def __str__(self) -> str:
        return self._text(self.start_addr if self.start_addr == self.end_addr else f"{self.start_addr}-{self.end_addr}")

    def text(self) -> str:
        """As strongSwan and its logs write it: a range that is one prefix as ``10.1.0.0/24``
        (``str()``, the JSON form, keeps ``10.1.0.0-10.1.0.255``)."""
        import ipaddress

        try:
            nets = list(ipaddress.summarize_address_range(ipaddress.ip_address(self.start_addr),
                                                          ipaddress.ip_address(self.end_addr)))
        except (ValueError, TypeError):
            return str(self)
        return self._text(str(nets[0]) if len(nets) == 1 else f"{self.start_addr}-{self.end_addr}")

    def _text(self, addr: str) -> str:
        if self.ip_proto == 0 and self.start_port == 0 and self.end_port == 65535:
            return addr
        ports = "" if (self.start_port, self.end_port) == (0, 65535) else (
            f":{self.start_port}" if self.start_port == self.end_port else f":{self.start_port}-{self.end_port}")
        return f"{addr}[{self.ip_proto}{ports}]"


# ---- payloads ---------------------------------------------------------------------------------
# Every payload has `type` (iana.PayloadType / iana.Ikev1Payload) and `critical`.


@dataclass(slots=True, frozen=True)
class Payload:
    """A payload we keep as bytes (unknown types, or ones with nothing to decode)."""

    type: int
    critical: bool
    body: bytes


@dataclass(slots=True, frozen=True)
class SaPayload:
    type: int
    critical: bool
    proposals: tuple[Proposal, ...]
    doi: int | None = None  # IKEv1 only
    situation: int | None = None  # IKEv1 only


@dataclass(slots=True, frozen=True)
class KePayload:
    type: int
    critical: bool
    group: int  # iana.DhGroup (v2); None-equivalent 0 in v1 (group is in the SA)
    data: bytes


@dataclass(slots=True, frozen=True)
class NoncePayload:
    type: int
    critical: bool
    data: bytes


@dataclass(slots=True, frozen=True)
class IdPayload:
    type: int  # IDi / IDr (v2) or ID (v1)
    critical: bool
    id_type: int  # iana.IdType
    data: bytes
    value: str  # human form: address, FQDN, or hex for DER_ASN1_DN/KEY_ID
    protocol: int = 0  # v1: protocol/port of the ID payload
    port: int = 0


@dataclass(slots=True, frozen=True)
class CertPayload:
    type: int  # CERT or CERTREQ
    critical: bool
    encoding: int
    data: bytes


@dataclass(slots=True, frozen=True)
class AuthPayload:
    type: int
    critical: bool
    method: int  # iana.AuthMethod
    data: bytes


@dataclass(slots=True, frozen=True)
class NotifyPayload:
    type: int
    critical: bool
    protocol: int
    spi: bytes
    notify_type: int  # iana.NotifyType
    data: bytes
    # Decoded notification data where the RFC defines it, e.g. {"group": 19} for INVALID_KE_PAYLOAD,
    # {"hash": "..."} for NAT_DETECTION_*, {"spi": 0x...} for REKEY_SA, {"cookie": "..."}.
    decoded: dict[str, object] = field(default_factory=dict, hash=False, compare=False)


@dataclass(slots=True, frozen=True)
class DeletePayload:
    type: int
    critical: bool
    protocol: int  # 1 IKE (no SPIs), 2 AH, 3 ESP
    spis: tuple[bytes, ...]


@dataclass(slots=True, frozen=True)
class VendorPayload:
    type: int
    critical: bool
    data: bytes
    name: str | None  # known vendor ID name ("strongSwan", "RFC 3947 NAT-T", "XAUTH", ...)


@dataclass(slots=True, frozen=True)
class TsPayload:
    type: int  # TSi / TSr
    critical: bool
    selectors: tuple[TrafficSelector, ...]


@dataclass(slots=True, frozen=True)
class SkPayload:
    """SK (46) or SKF (53): kept encrypted by the decoder (RFC 7296 §3.14, RFC 7383 §2.5).

    ``body`` is everything after the 4-byte generic header (IV | ciphertext | ICV).
    ``offset`` is where the generic payload header starts inside the IKE message, which the
    integrity check needs (it covers the message from the IKE header to before the ICV).
    """

    type: int
    critical: bool
    first_payload: int  # next-payload field: type of the first inner payload (0 for SKF frag > 1)
    body: bytes
    offset: int
    fragment_number: int = 0  # SKF only
    total_fragments: int = 0  # SKF only


@dataclass(slots=True, frozen=True)
class CpPayload:
    type: int
    critical: bool
    cfg_type: int
    attributes: tuple[tuple[int, bytes], ...]


@dataclass(slots=True, frozen=True)
class EapPayload:
    type: int
    critical: bool
    code: int
    identifier: int
    eap_type: int | None
    data: bytes


@dataclass(slots=True, frozen=True)
class HashPayload:
    """IKEv1 HASH / SIG / NAT-D bodies."""

    type: int
    critical: bool
    data: bytes


@dataclass(slots=True, frozen=True)
class FragmentPayload:
    """IKEv1 Fragment payload (type 132; Cisco's, also Microsoft's and strongSwan's, announced by
    the FRAGMENTATION vendor ID): one piece of an ISAKMP message too big for one datagram. Each
    piece travels as its own ISAKMP message whose only payload this is; the pieces' ``data``,
    joined in ``number`` order 1..last, is the whole original message, header included
    (strongSwan src/libcharon/encoding/payloads/fragment_payload.c, message.c)."""

    type: int
    critical: bool
    frag_id: int  # the same for every piece of one message (and its retransmissions)
    number: int  # 1..last
    last: bool  # flags bit 0: this piece is the last one
    data: bytes


AnyPayload = (
    Payload | SaPayload | KePayload | NoncePayload | IdPayload | CertPayload | AuthPayload | NotifyPayload
    | DeletePayload | VendorPayload | TsPayload | SkPayload | CpPayload | EapPayload | HashPayload
    | FragmentPayload
)


@dataclass(slots=True, eq=False)
class Ikev1FragmentSet:
    """The pieces of one fragmented IKEv1 message seen in one direction (state/ikev1_frag)."""

    frag_id: int
    src: str
    dst: str
    exchange: int
    msg_id: int
    first_frame: int
    first_ts: float
    frames: dict[int, int] = field(default_factory=dict)  # fragment number -> frame (first copy)
    last: int = 0  # the number flagged last (0: not seen yet)
    # frames repeating a number already held (the first MAX_KEPT_FRAMES; duplicate_count counts all)
    duplicates: list[int] = field(default_factory=list)
    duplicate_count: int = 0
    completed_frame: int | None = None
    completed_ts: float | None = None
    # a piece arrived after the last-flagged one, from the sender's retransmission: the first
    # copy of it was lost on the way (senders send pieces in order, 1..last)
    late: list[int] = field(default_factory=list)
    dropped: str | None = None  # why the set was given up (bounds), never completed

    @property
    def missing(self) -> list[int]:
        return [] if not self.last else [n for n in range(1, self.last + 1) if n not in self.frames]


@dataclass(slots=True, frozen=True)
class IkeMessage:
    """One decoded IKE message. ``payloads`` are the cleartext ones in wire order.

    After SK decryption (crypto stage), ``inner`` holds the decrypted payloads and ``decrypted`` is
    True; ``icv_ok`` is True/False when integrity was checked, None when it was not.
    ``malformed`` is a one-line reason when part of the message could not be decoded: what was
    sound before the fault is still in ``payloads``.
    """

    frame: int
    ts: float
    src: str
    dst: str
    sport: int
    dport: int
    header: IkeHeader
    payloads: tuple[AnyPayload, ...]
    raw: bytes
    malformed: str | None = None
    inner: tuple[AnyPayload, ...] = ()
    decrypted: bool = False
    icv_ok: bool | None = None
    transport: str = "udp"
    non_esp_marker: bool = False
    ip_fragmented: bool = False
    # Why decryption did not happen or what it did (no key, ICV mismatch, "SKF fragment 2 of 3",
    # "reassembled from 3 SKF fragments", IKEv1 "retransmission: decrypted with the IV of frame 7").
    crypto_note: str | None = None
    # A key for this message was found and applied (set by the decryptors): a message that is
    # encrypted, key_tried and not decrypted failed with a loaded key — a wrong key, not a missing one.
    key_tried: bool = False
    # IKEv1 fragmentation (payload 132): this frame's piece's set (state/ikev1_frag), and on the
    # frame completing it this message is the reassembled one, its pieces' frames in number order.
    v1_fragments: Ikev1FragmentSet | None = None
    reassembled_from: tuple[int, ...] = ()
    piece_header: IkeHeader | None = None  # ... and the ISAKMP header of the piece this frame holds

    @property
    def version(self) -> int:
        return self.header.major

    def all_payloads(self) -> tuple[AnyPayload, ...]:
        return self.payloads + self.inner

    def find(self, cls: type) -> list:
        return [p for p in self.all_payloads() if isinstance(p, cls)]

    @property
    def encrypted(self) -> bool:
        return self.header.encrypted_v1 or any(isinstance(p, SkPayload) for p in self.payloads)


# NAT-T drafts 04 to 08 numbered NAT-D 15 and NAT-OA 16 before RFC 3947 gave them 20 and 21: the
# numbers GDOI (RFC 3547) took for SAK and SAT. Peers that agree on one of those drafts by Vendor
# ID send them so (Cisco IOS on draft 07, racoon's NATD_BADDRAFT, Apple). GDOI's payloads only
# travel in GROUPKEY-PULL/PUSH (RFC 6407 §3, §4), so in phase 1 these are NAT-D and NAT-OA.
NAT_D_DRAFT_04_08, NAT_OA_DRAFT_04_08 = 15, 16


def phase1_payload_label(p: AnyPayload) -> str | None:
    """The row's name for a phase-1 NAT-D / NAT-OA of NAT-T drafts 04-08 (payload 15 / 16, decoded
    as such only in Main or Aggressive Mode): "NAT_D_DRAFT" / "NAT_OA_DRAFT" as for drafts
    01-03's 130 / 131, not GDOI's SAK / SAT. None for any other payload."""
    if p.type == NAT_D_DRAFT_04_08 and isinstance(p, HashPayload):
        return "NAT_D_DRAFT"
    if p.type == NAT_OA_DRAFT_04_08 and isinstance(p, IdPayload):
        return "NAT_OA_DRAFT"
    return None
