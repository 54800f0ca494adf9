"""The correlation model: IKE SAs, CHILD SAs, ESP flows, findings.

The tracker (``ipsecscope.state``) creates and updates these; views read them. They are slotted
(not frozen) because counters move as packets arrive; everything a view shows is a plain field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import TYPE_CHECKING

from .keys import PeerLogNote

if TYPE_CHECKING:  # (annotations only: the IKE model loads with the first IKE message)
    from collections.abc import Callable

    from .ike import TrafficSelector
    from .stall import Phase1Stall

# (src, dst, SPI, "ESP" | "AH"): one direction of one SA (EspFlow.key, SaTable.flows)
FlowKey = tuple[str, str, int, str]


def endpoint_text(addr: str, port: int | None) -> str:
    """``198.18.0.1:4500``, ``[2001:db8::1]:4500`` (RFC 3986 §3.2.2: an IPv6 address beside a port
    is bracketed, or ``2001:db8::100:1:500`` reads as an address); the address alone without a port."""
    if not port:
        return addr
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def is_multicast(addr: str) -> bool:
    """A group address (224.0.0.0/4, ff00::/8): it answers nobody, so an SA to it carries one
    direction only (RFC 4301 §4.1). False for text that is no address."""
    import ipaddress  # (only where an unpaired or one-way flow asks)

    try:
        return ipaddress.ip_address(addr).is_multicast
    except ValueError:
        return False


class SaState(str, Enum):  # noqa: UP042 - str() behaviour other stages may rely on
    INITIATING = "initiating"  # IKE_SA_INIT / CREATE_CHILD_SA request seen, no answer yet
    ESTABLISHED = "established"
    REKEYED = "rekeyed"  # replaced by a newer SA (still may carry traffic for a while)
    DELETED = "deleted"
    FAILED = "failed"  # negotiation failed (error notify, no answer)
    INFERRED = "inferred"  # seen only from ESP traffic (no IKE in the capture)
    REDIRECTED = "redirected"  # the responder sent the initiator to another gateway (RFC 5685)


class Severity(IntEnum):
    INFO = 1
    WARNING = 2
    ERROR = 3


@dataclass(slots=True)
class NatRebinding:
    """A peer's public address or UDP port changed in the middle of an SA while the SPIs stayed: its
    NAT dropped the mapping and made a new one (RFC 3948 §2.3 keepalives exist to prevent it). RFC
    7296 §2.23: the other peer must move to the new address:port when an authenticated packet comes
    from it; until then what it sends goes to the old mapping and is lost."""

    peer: str  # "initiator" | "responder": whose endpoint moved (roles of the IKE SA, else of the CHILD SA)
    old_addr: str
    old_port: int
    new_addr: str
    new_port: int
    ts: float  # first packet from the new endpoint
    frame: int
    seen_in: str  # what that packet was: "ESP 0x1b89f47f" | "IKE INFORMATIONAL"
    followed_ts: float | None = None  # the other peer's first packet to the new endpoint (ESP or IKE request)
    followed_frame: int | None = None
    followed_in: str = ""
    to_old: int = 0  # packets the other peer still sent to the old endpoint after ``ts`` (until it followed)
    to_old_frames: list[int] = field(default_factory=list)  # the first few
    # Not a NAT at all: the peer moved itself and announced it with MOBIKE UPDATE_SA_ADDRESSES
    # (RFC 4555 §3.5) in this request frame; state/mobike.py links the two
    mobike_frame: int | None = None


@dataclass(slots=True)
class MobikeUpdate:
    """One MOBIKE address update (RFC 4555 §3.5): an INFORMATIONAL request with UPDATE_SA_ADDRESSES,
    sent by the initiator from the address pair the IKE SA and all its CHILD SAs move to (same SPIs).
    The NAT_DETECTION_* hashes in it say whether a NAT sits on the new path (RFC 4555 §3.5)."""

    peer: str  # "initiator" | "responder" (roles of the IKE SA): who sent the update
    src_addr: str  # the new address pair, as captured
    src_port: int
    dst_addr: str
    dst_port: int
    ts: float
    frame: int
    message_id: int
    # The sender's NAT_DETECTION_SOURCE_IP / the DESTINATION one over the addresses captured:
    # True matches, False does not, None absent (RFC 7296 §2.23 formula, RFC 4555 §3.5)
    nat_src_ok: bool | None = None
    nat_dst_ok: bool | None = None
    cookie2: bool = False  # a return routability cookie rode along (RFC 4555 §3.7)
    # The answer's COOKIE2 against the update's (RFC 4555 §3.7: the responder MUST copy it, the
    # sender MUST compare): "same", "different", "missing"; "" when none was sent or no answer came
    cookie2_echo: str = ""
    cookie2_sent: bytes = field(default=b"", repr=False)  # the update's COOKIE2 data, kept to compare
    # The other peer's own return routability check of the new address (RFC 4555 §3.5 lets it; an
    # INFORMATIONAL request with COOKIE2 sent there): its request frame, its message ID, the verdict
    # on the echo as ``cookie2_echo`` ("" while unanswered), and its cookie until the answer comes
    check_frame: int | None = None
    check_message_id: int | None = None
    check_echo: str = ""
    check_sent: bytes = field(default=b"", repr=False)
    answered_ts: float | None = None
    answered_frame: int | None = None
    error: str = ""  # an error notify in the answer (UNACCEPTABLE_ADDRESSES, UNEXPECTED_NAT_DETECTED, RFC 4555 §4.2)
    # Where the sender was before (set when the update explains a move, state/mobike.py)
    old_addr: str = ""
    old_port: int = 0


@dataclass(slots=True)
class EspFlow:
    """One direction of one SA on the wire: (src, dst, spi, protocol). RFC 4301 §4.1 identifies an SA
    by SPI, destination and protocol, so ESP and AH with the same SPI between the same hosts are
    two flows of two SAs."""

    src: str
    dst: str
    spi: int
    protocol: str = "ESP"  # "ESP" | "AH"
    # frames captured, as tshark counts them (copies the capture made included); what the sender
    # sent is ``sent``
    packets: int = 0
    bytes: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    first_frame: int = 0
    last_frame: int = 0
    keys_nat: str = ""  # the loaded keys were matched across NAT: "logged -> wire" address
    seq_min: int | None = None
    seq_max: int | None = None  # highest full (ESN-extended when known) sequence number
    lost: int = 0  # sequence numbers never seen below seq_max (gaps)
    duplicates: int = 0  # same sequence number twice (replay), not a capture duplicate
    # one of the last packets again within 20 ms, same length and bytes: the capture (or a device on
    # the path) saw it twice (esp_flow); counted in ``packets``, not in ``sent``
    capture_duplicates: int = 0
    # of those copies, how many verified / failed their ICV (a copy has its original's outcome):
    # ESP-ICV-FAILED's "N of M" counts packets sent, as the others count ``sent``
    copies_decrypted: int = 0
    copies_icv_failed: int = 0
    # The flow's last packets (at most 16, by sequence number mod 16): (full sequence number, time,
    # ESP/AH length, last four octets, frame) or None; state/esp_flow's ring, shared, not copied
    recent: list | None = None
    reordered: int = 0  # arrived more than the 64-packet window late
    icv_failed: int = 0
    no_key: int = 0
    decrypted: int = 0
    malformed: int = 0
    unsupported: int = 0  # packets whose keys name an algorithm ipsecscope does not implement
    udp_encap: bool = False
    sport: int = 0
    dport: int = 0
    esn_hi: int = 0  # inferred high 32 bits of the sequence number (RFC 4303 §3.3.3)
    after_delete: int = 0  # packets seen after the SA was deleted
    child_sa: int | None = None  # ChildSa.id once bound
    # Added by the correlation engine (state/esp_flow.py):
    after_rekey: int = 0  # packets on this (old) SA after its CHILD SA was rekeyed
    after_rekey_last_ts: float | None = None  # last such packet: overlap = this - ChildSa.rekeyed_ts
    after_delete_frames: list[int] = field(default_factory=list)  # first few, as evidence
    icv_failed_frames: list[int] = field(default_factory=list)
    duplicate_frames: list[int] = field(default_factory=list)
    capture_duplicate_frames: list[int] = field(default_factory=list)
    gap_frames: list[int] = field(default_factory=list)  # first packets after a gap
    reordered_frames: list[int] = field(default_factory=list)
    outside_ts: int = 0  # decrypted inner packets whose addresses/ports are outside the CHILD SA's TS
    outside_ts_frames: list[int] = field(default_factory=list)
    outside_ts_example: str | None = None  # "10.9.9.9 -> 10.2.0.5 proto 1"
    unanswered_tail: int = 0  # packets sent since the last one in the opposite direction of its CHILD SA
    unanswered_since_frame: int = 0
    unanswered_since_ts: float | None = None
    unsupported_reason: str = ""  # why the keys could not be used ("ESP encryption ENCR_CAST is not ...")
    unsupported_keys_source: str = ""  # EspSaKeys.source of those keys ("file:line")
    # ESP packets of this flow whose first IP fragment the capture holds but whose other fragments
    # never came (decode.demux, model.packets.FragmentedEsp): lost to the receiver whole (RFC 4459
    # §2), though their sequence numbers were on the wire. The first few as (sequence number as on
    # the wire, frame, the byte ranges never captured, the first fragment's time).
    frag_lost: int = 0
    frag_lost_packets: list[tuple[int, int, str, float]] = field(default_factory=list)
    # Live only (Session.finish(now)): sequence numbers, as on the wire, of this flow's ESP packets
    # whose first IP fragment came and whose others are still awaited; in flight, not yet lost.
    frag_awaited: list[int] = field(default_factory=list)
    unsupported_frames: list[int] = field(default_factory=list)
    # UDP ports of the latest packet (ESP in UDP): differ from sport/dport after a NAT rebinding
    sport_last: int = 0
    dport_last: int = 0
    # Packets that arrived as outer IP fragments (RFC 791 / RFC 8200 §4.5): larger than the path
    # MTU, so the sender (or a router) split them; the receiver reassembles before ESP.
    ip_fragmented: int = 0
    ip_fragmented_frames: list[int] = field(default_factory=list)  # first few (the last fragment's frame)
    # AH only: "logged -> wire" when an ICV failed on the wire's address and verified with the key
    # file's (crypto.ah): a NAT rewrote an address AH covers (RFC 4302 §3.3.3)
    ah_nat: str = ""
    # AH only: the ICV field's length does not fit the key's integrity algorithm (crypto.ah,
    # RFC 4302 §2.6): the key file names another algorithm than the sender uses
    ah_icv_len: str = ""

    @property
    def key(self) -> FlowKey:
        return (self.src, self.dst, self.spi, self.protocol)

    @property
    def sent(self) -> int:
        """Packets the sender sent: ``packets`` less the copies of a packet within 20 ms
        (``capture_duplicates``). A sender never sends an ESP/AH packet twice (RFC 4303 §3.3.3: a
        new sequence number for each), so those copies are the capture point's or a device's on
        the path; rates, one-way and return-traffic figures count what was sent."""
        return self.packets - self.capture_duplicates


@dataclass(slots=True)
class EncSa:
    """An SA seen only through OpenBSD's enc(4) interface (LINKTYPE_ENC): the kernel hands the
    capture each packet's cleartext side with a header naming the SA's SPI and protection flags.
    RFC 4301 §4.1 identifies an SA by SPI, destination and protocol. The enc header gives the SPI
    and, by its flags, the protocol (M_AUTH_AH: AH; otherwise ESP). It carries no address, but
    OpenBSD taps the packet after ipip_output() outbound and before the IP-in-IP header is
    removed inbound (ipsec_output.c / ipsec_input.c), so in tunnel mode the outermost IP header is
    the gateways' (the SA's source and destination, as tshark's first ip.src/ip.dst) and in
    transport mode the packet's own header is; ``src``/``dst`` are that header's. No ESP/AH header
    is left, so no sequence number: loss, replay and reordering cannot be told (``sequence`` views
    say "not available"), and nothing here is an EspFlow that the sequence rules would read."""

    spi: int
    dst: str
    protocol: str  # "ESP" | "AH" (enc flag M_AUTH_AH)
    src: str = ""
    flags: int = 0  # the enc header's M_CONF / M_AUTH / M_COMP / M_AUTH_AH bits
    packets: int = 0
    bytes: int = 0  # the cleartext packets' IP lengths as captured (no ESP overhead exists here)
    first_ts: float | None = None
    last_ts: float | None = None
    first_frame: int = 0
    last_frame: int = 0
    # inner (innermost IP header's) conversations: (src, dst, IP protocol) -> packets
    inner: dict[tuple[str, str, int], int] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class AnswerUnfit:
    """Why a responder's accepted proposal does not fit the offer it answers (state/selection.py)."""

    kind: str  # "number": renumbered (RFC 7296 §3.3); "transform": not offered (§2.7); "ke": KE group (§1.2)
    # IKEv1 adds "auth": only the phase-1 authentication method differs from the offered transform;
    # "bundle": a Quick Mode answer drops or adds a protocol of an AH+ESP bundle (RFC 2408 §4.2);
    # Aggressive Mode (RFC 2409 §5) "ke": the answer's group is not the request's KE payload's,
    # "ke-value": the answer's KE payload does not have its group's length
    reason: str
    ke_octets: tuple[int, int] | None = None  # "ke-value": (the answer's KE octets, its group's)


@dataclass(slots=True)
class BundleSpis:
    """One protocol of an AH+ESP bundle: its SPIs as ChildSa names them (spi_i the initiator's
    inbound, spi_r the responder's)."""

    protocol: str  # "AH" | "ESP"
    spi_i: int | None = None
    spi_r: int | None = None


@dataclass(slots=True)
class ChildSa:
    id: int  # stable, 1-based, in order of creation in the capture
    ike_sa: str | None  # IkeSa.key, None when inferred from ESP alone
    protocol: str = "ESP"
    mode: str = "tunnel"  # "tunnel" | "transport" (USE_TRANSPORT_MODE notify)
    spi_i: int | None = None  # SPI chosen by the initiator (= inbound at the initiator)
    spi_r: int | None = None  # SPI chosen by the responder
    initiator: str = ""  # address of the initiator of the exchange that created it
    responder: str = ""
    proposal: str | None = None  # chosen, strongSwan style: "aes256gcm16-ecp256" / "aes128-sha256"
    # The exchange that chose it: the request's first copy (when captured), then the answer whose SA
    # payload holds ``proposal`` (IKE_AUTH / CREATE_CHILD_SA response, Quick Mode's second message)
    proposal_frames: tuple[int, ...] = ()
    offered: list[str] = field(default_factory=list)  # what the initiator offered
    answer_unfit: AnswerUnfit | None = None  # the answer's SA does not fit the offer
    ts_i: tuple[TrafficSelector, ...] = ()  # accepted
    ts_r: tuple[TrafficSelector, ...] = ()
    ts_i_offered: tuple[TrafficSelector, ...] = ()
    ts_r_offered: tuple[TrafficSelector, ...] = ()
    state: SaState = SaState.INITIATING
    created_ts: float | None = None
    created_frame: int | None = None
    created_by: str = ""  # "IKE_AUTH" | "CREATE_CHILD_SA" | "Quick Mode"
    pfs_group: int | None = None
    rekeyed_from: int | None = None  # ChildSa.id
    rekeyed_into: int | None = None
    rekeyed_ts: float | None = None
    deleted_ts: float | None = None
    deleted_frame: int | None = None
    deleted_by: str | None = None  # address of the peer that sent the Delete
    keys_source: str | None = None  # where its ESP keys came from (file, derived via KEYMAT, ...)
    frames: list[int] = field(default_factory=list)  # IKE frames that shaped it
    # Added by the correlation engine:
    failure: str | None = None  # error notify name that refused it ("TS_UNACCEPTABLE", ...)
    failure_frame: int | None = None
    offered_pfs_groups: list[int] = field(default_factory=list)
    esn: bool | None = None
    rekey_collision: bool = False  # both peers started rekeying it at the same time (RFC 7296 §2.8.1)
    lifetime_s: float | None = None  # created -> rekeyed/deleted, when both are in the capture
    inferred_reason: str = ""  # for INFERRED SAs: why these flows were grouped
    # For an unpaired INFERRED SA: the SPIs of the opposite flows that fit it when more than one
    # flow could be its pair (state/traffic.infer); the one-way rule reads them as one group.
    pair_candidates: list[int] = field(default_factory=list)
    # NAT rebindings seen on its ESP-in-UDP flows when no IKE SA is known for it (else on the IKE SA)
    nat_rebindings: list[NatRebinding] = field(default_factory=list)
    # An IKEv1 AH+ESP bundle (proposals under one number, RFC 2408 §4.2; RFC 2409 §5.5): every
    # protocol with its own SPI each way, in the answer's order (the first is ``protocol``/``spi_i``/
    # ``spi_r``). Empty for a one-protocol CHILD SA. Each SA of the bundle is identified by SPI,
    # destination and protocol (RFC 4301 §4.1), so AH and ESP packets both belong here.
    bundle: list[BundleSpis] = field(default_factory=list)
    # state.child_sa.selector_ranges' cache: (ts_i, ts_r, their integer ranges), rebuilt when
    # either tuple is replaced; not part of the SA's value.
    ts_ranges: tuple | None = field(default=None, repr=False, compare=False)

    def spi_pairs(self) -> list[tuple[str, int | None, int | None]]:
        """(protocol, spi_i, spi_r) of each protocol it carries: one, or each of a bundle's."""
        if self.bundle:
            return [(b.protocol, b.spi_i, b.spi_r) for b in self.bundle]
        return [(self.protocol, self.spi_i, self.spi_r)]

    def protocols_text(self) -> str:
        """"ESP", "AH", or a bundle's "AH+ESP"."""
        return "+".join(b.protocol for b in self.bundle) if self.bundle else self.protocol

    def flows(self, table: SaTable) -> list[EspFlow]:
        """Its flows, in the order they started (from the table's index: no walk over all flows)."""
        return sorted(table.child_flows.get(self.id, ()), key=_first_frame)


def bundle_spis_text(c: ChildSa) -> str:
    """"0x... (i) / 0x... (r)", or per protocol of a bundle "AH 0x... (i) / 0x... (r), ESP ..."."""
    def pair(i: int | None, r: int | None) -> str:
        return f"{f'0x{i:08x}' if i is not None else '?'} (i) / {f'0x{r:08x}' if r is not None else '?'} (r)"
    if not c.bundle:
        return pair(c.spi_i, c.spi_r)
    return ", ".join(f"{b.protocol} {pair(b.spi_i, b.spi_r)}" for b in c.bundle)


def _first_frame(f: EspFlow) -> int:
    return f.first_frame


@dataclass(slots=True)
class IkeExchange:
    """A request and its response(s), paired by message ID (RFC 7296 §2.2)."""

    exchange: int
    msg_id: int
    requester: str  # address
    request_frames: list[int] = field(default_factory=list)  # more than one = retransmissions
    response_frames: list[int] = field(default_factory=list)
    request_ts: float | None = None
    response_ts: float | None = None
    notifies: list[int] = field(default_factory=list)  # notify types seen in either message
    summary: str = ""  # "CREATE_CHILD_SA rekey CHILD_SA #2 -> #3", "INFORMATIONAL delete ESP 0x..."
    # Added by the correlation engine:
    retransmits: int = 0  # request copies beyond the first (same message ID, same direction)
    response_retransmits: int = 0
    # responses (frames) the decoder marked malformed: a requester drops those and sends again
    malformed_responses: list[int] = field(default_factory=list)
    # the first byte-identical copy of the request (IKEv2: request_frames also holds fragments;
    # an IKEv1 exchange's further requests are its next messages, none kept here)
    first_copy_frame: int | None = None
    first_copy_ts: float | None = None
    # every byte-identical request copy (both versions; an IKEv1 exchange's copies may be of any of
    # its messages): those after the last response were never answered (IKE-RETRANSMIT)
    copy_frames: list[int] = field(default_factory=list)
    # byte-identical copies within CAPTURE_DUP_GAP of the previous one: the capture point saw the
    # packet twice (state/ikev2.exchange); not retransmissions, not in request/response_frames
    capture_duplicates: int = 0
    duplicate_frames: list[int] = field(default_factory=list)
    fragments: int = 0  # IKE fragments (SKF, RFC 7383) of the request
    ip_fragmented: bool = False  # a message of this exchange arrived in IP fragments
    error: int | None = None  # first error notify type (< 16384) in the response
    error_name: str | None = None
    encrypted: bool = False  # the contents were SK-protected
    decrypted: bool = False  # ... and we could read them
    rekey_child: int | None = None  # ChildSa.id the request rekeys (REKEY_SA)
    new_child: int | None = None  # ChildSa.id the exchange created
    rekey_ike: bool = False  # CREATE_CHILD_SA rekeying the IKE SA
    new_ike: str | None = None  # IkeSa.key the IKE SA rekey created (FAILED when it was refused)
    deletes: list[str] = field(default_factory=list)  # "IKE" / "ESP 0x1234abcd" from Delete payloads
    requester_port: int = 0  # UDP source port of the (first) request
    responder_port: int = 0
    ke_requested: int | None = None  # DH group an INVALID_KE_PAYLOAD response asks for
    request_size: int = 0  # IKE message length of the first request / response (bytes)
    response_size: int = 0
    # IKEv1 DPD (RFC 3706 §5): the R-U-THERE sequence number this one-way Informational carries;
    # the peer's R-U-THERE-ACK with the same number is filed as its response
    dpd_seq: int | None = None


@dataclass(slots=True)
class IkeSa:
    ike_spi_i: bytes
    ike_spi_r: bytes
    version: int
    initiator: str
    responder: str
    initiator_port: int = 500
    responder_port: int = 500
    state: SaState = SaState.INITIATING
    proposal: str | None = None
    # The exchange that chose it, as ChildSa.proposal_frames: IKE_SA_INIT (the last answer, after any
    # COOKIE or INVALID_KE_PAYLOAD refusal), MM2/AM2, or the parent's CREATE_CHILD_SA for a rekey
    proposal_frames: tuple[int, ...] = ()
    offered: list[str] = field(default_factory=list)
    answer_unfit: AnswerUnfit | None = None  # as ChildSa.answer_unfit
    dh_group: int | None = None
    id_i: str | None = None
    id_r: str | None = None
    auth_method: str | None = None
    nat_initiator: bool | None = None  # initiator is behind NAT (NAT_DETECTION_SOURCE_IP mismatch)
    nat_responder: bool | None = None
    created_ts: float | None = None
    established_ts: float | None = None
    deleted_ts: float | None = None
    deleted_by: str | None = None
    rekeyed_from: str | None = None  # IkeSa.key
    rekeyed_into: str | None = None
    # ChildSa.id of every CHILD SA it negotiated or was handed by an IKE SA rekey (RFC 7296 §2.18);
    # a rekeyed IKE SA keeps the ones it handed on, ChildSa.ike_sa names the current manager
    children: list[int] = field(default_factory=list)
    exchanges: list[IkeExchange] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    decrypted: bool = False  # SK payloads could be read
    icv_failed: int = 0  # encrypted messages (or SKF fragments) whose ICV failed with the keys given
    keys_source: str | None = None
    # Added by the correlation engine:
    failure: str | None = None  # notify name or "no response"
    failure_frame: int | None = None
    failed_ts: float | None = None
    failure_from: str | None = None  # the address that sent the refusal (None: none sent, "no response")
    ke_groups: list[int] = field(default_factory=list)  # KE groups the initiator sent, in order
    invalid_ke_requested: list[int] = field(default_factory=list)  # groups the responder asked for
    cookie_requested: bool = False
    retry_of: str | None = None  # IkeSa.key of an earlier attempt (INVALID_KE / COOKIE with new SPIs)
    retried_by: str | None = None
    # RFC 5685: the gateway this SA's responder redirected the initiator to (REDIRECT notify), where
    # and when; the IKE SA the initiator then made with it (its IKE_SA_INIT carries REDIRECTED_FROM)
    redirect_to: str | None = None
    redirect_frame: int | None = None
    redirect_ts: float | None = None
    redirect_exchange: str | None = None  # "IKE_SA_INIT" | "IKE_AUTH" | "INFORMATIONAL"
    redirected_into: str | None = None  # IkeSa.key
    redirected_from: str | None = None  # IkeSa.key of the SA that redirected the initiator here
    nat_t: bool = False  # moved to UDP 4500 (RFC 7296 §2.23)
    # its first IKE message on UDP 4500: IKEv1 floats inside Main Mode (its 5th message, RFC 3947 §4)
    natt_frame: int | None = None
    tcp_frame: int | None = None  # its first IKE message in an RFC 8229 TCP stream (IKE and ESP in TCP 4500)
    nat_detected: bool | None = None  # NAT_DETECTION_* notifies present and compared
    # Each NAT detection hash that did not match the capture: ("source" | "destination", the address
    # of the peer that sent it). Which hash failed, and whose, tells the NAT's side from a peer
    # that fakes its source hash to force UDP encapsulation (analysis.rules.nat_mtu).
    nat_mismatch: list[tuple[str, str]] = field(default_factory=list)
    # Peers whose DESTINATION hash the capture holds (matching or not): a match is only a match
    # when there was a hash to compare (a cookie or INVALID_KE answer carries none)
    nat_dst_seen: list[str] = field(default_factory=list)
    # A peer's NAT-T address:port changed mid-SA (its IKE messages on 4500 or its CHILD SAs' ESP in
    # UDP came from a new one): in order, state/nat.py
    nat_rebindings: list[NatRebinding] = field(default_factory=list)
    # MOBIKE (RFC 4555): MOBIKE_SUPPORTED seen from (initiator, responder) in IKE_AUTH, the
    # UPDATE_SA_ADDRESSES requests in order, and ADDITIONAL_IP*_ADDRESS lists announced (§3.6)
    mobike_supported: tuple[bool, bool] = (False, False)
    mobike_updates: list[MobikeUpdate] = field(default_factory=list)
    # each address list a peer sent (RFC 4555 §3.6), IKE_AUTH's too: (role, frame, addresses),
    # an empty tuple for NO_ADDITIONAL_ADDRESSES (no address besides the one it sends from)
    mobike_additional: list[tuple[str, int, tuple[str, ...]]] = field(default_factory=list)
    ike_fragmentation: tuple[bool, bool] = (False, False)  # IKEV2_FRAGMENTATION_SUPPORTED (I, R)
    # IKEv1 messages sent in Fragment payloads (132), one set per message and direction
    v1_fragment_sets: list = field(default_factory=list)
    # ... and the sets past state.ikev1_frag.MAX_SETS_PER_SA (a flood of Fragment IDs), only counted
    v1_fragment_sets_over: int = 0
    # A CERTREQ in the IKE_SA_INIT response (RFC 7296 §1.2): the responder asks for certificates,
    # so IKE_AUTH messages carry CERT payloads and their sizes say little about the rest.
    cert_requested: bool = False
    vendor_ids: list[str] = field(default_factory=list)
    state_inferred: bool = False  # state guessed from encrypted traffic we could not read
    mode: str | None = None  # IKEv1: "Main" | "Aggressive"
    # Encrypted messages a loaded key was applied to but that did not decrypt, without an ICV
    # failure (IKEv1 has no ICV: the plaintext was not a payload chain; IKEv2 keys without
    # integrity checking, bad padding). ICV failures are in ``icv_failed``.
    undecryptable: int = 0
    key_failed_frames: list[int] = field(default_factory=list)  # first few of icv_failed + undecryptable
    key_failed_note: str | None = None  # the decryptor's crypto_note for the first of them
    key_failed_from: list[str] = field(default_factory=list)  # addresses that sent them
    decrypted_from: list[str] = field(default_factory=list)  # addresses whose encrypted messages decrypted
    # Set by the analysis (analysis.peer_gone, from IKE-DEAD-PEER / IKE-PEER-RESTARTED): the SA is
    # still ESTABLISHED by what the capture records (no Delete can come from a peer that is gone)
    # but its peer is gone. None: no finding says so.
    peer_gone: PeerGone | None = None
    # IKEv1: where a phase 1 that never completed stopped (state.ikev1_stall, at the end of the
    # input): MM1/MM3 may have been answered and MM5 not, all under one Message ID (RFC 2409 §5)
    stall: Phase1Stall | None = None

    @property
    def key(self) -> str:
        # the JSON documents' IKE SA key, and the text views' (model.idtext.ike_sa_text) too
        return f"{self.ike_spi_i.hex()}_{self.ike_spi_r.hex()}"

    @property
    def state_word(self) -> str:
        """The state in one word as the evidence says it: "dead" when a finding says its peer is
        gone (dead, or restarted and without the SA); "incomplete" when an IKEv1 phase 1 stopped
        though its next message was due (``stall``); else the recorded state ("established")."""
        if self.peer_gone is not None:
            return "dead"
        if self.stall is not None and self.state == SaState.INITIATING and self.stall.verdict == "incomplete":
            return "incomplete"
        return self.state.value

    def state_text(self, clock: Callable[[float], str] | None = None) -> str:
        """The state as the evidence says it: "established", or "established, peer 198.18.0.2 dead
        since 11:56:50 UTC" when a finding says the peer is gone (``clock`` writes the time: the
        view's timefmt; without it, no time). A failed or stalled one says why: "failed:
        NO_PROPOSAL_CHOSEN from 198.18.0.2 (frame 2)", "incomplete: no answer to MM3 (frame 3);
        198.18.0.2 silent for 6.0 s until the capture ended"."""
        g = self.peer_gone
        if g is not None:
            return f"{self.state.value}, {g.text(clock)}"
        word = self.state_word
        why = self.failure_text() if self.state == SaState.FAILED else None
        if why is None and self.stall is not None and self.state == SaState.INITIATING:
            why = self.stall.text()
        return f"{word}: {why}" if why else word

    def failure_text(self) -> str | None:
        """Why it failed, with who said so and where ("NO_PROPOSAL_CHOSEN from 198.18.0.2 (frame
        2)"); a "no response" of an IKEv1 phase 1 names the message left unanswered (``stall``)."""
        if self.failure is None:
            return None
        if self.failure == "no response" and self.stall is not None:
            return self.stall.text()
        by = f" from {self.failure_from}" if self.failure_from else ""
        at = f" (frame\u00a0{self.failure_frame})" if self.failure_frame is not None else ""
        return f"{self.failure}{by}{at}"


@dataclass(slots=True, frozen=True)
class PeerGone:
    """An IKE SA's peer is gone though the SA's recorded state is still up: dead (it stopped
    answering requests on the SA, RFC 7296 §2.4: the requester deletes the SA after its
    retransmissions) or restarted (it answered a fresh IKE_SA_INIT at once but not the old SA: it
    lost its state, RFC 7296 §2.21.4). The finding that says so is ``code``."""

    peer: str
    how: str  # "dead" | "restarted"
    since: float | None  # dead: the first request it left unanswered; restarted: its last message in the SA
    code: str  # "IKE-DEAD-PEER" | "IKE-PEER-RESTARTED"

    def text(self, clock: Callable[[float], str] | None = None) -> str:
        at = clock(self.since) if clock is not None and self.since is not None else ""
        if self.how == "restarted":  # after its last message in the SA: when exactly is not in the capture
            return f"peer {self.peer} restarted{f' after {at}' if at else ''}, SA lost"
        return f"peer {self.peer} dead{f' since {at}' if at else ''}"


def in_frame_order(frames: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """``frames`` ascending, each once (a finding's evidence; live mode keys a finding by its first)."""
    t = tuple(frames)
    if all(t[i] < t[i + 1] for i in range(len(t) - 1)):
        return t
    return tuple(sorted(set(t)))


@dataclass(slots=True, frozen=True)
class FindingMember:
    """One SA of an aggregated finding (:attr:`Finding.members`): the same rule said the same thing
    about it as about the others, only with its own peers, frames and time."""

    sa: str  # as Finding.sa
    peers: tuple[str, ...]  # the SA's two addresses (initiator, responder; or ESP src, dst)
    frames: tuple[int, ...] = ()
    ts: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", in_frame_order(self.frames))


# kw_only: a finding has eight fields of which several are strings; keywords keep a rule from
# swapping title and explanation or frames and sa without anyone noticing.
@dataclass(slots=True, frozen=True, kw_only=True)
class Finding:
    code: str  # stable, e.g. "IKE-NO-PROPOSAL", "ESP-SEQ-GAP"
    severity: Severity
    title: str  # one line
    explanation: str  # plain language, names both peers
    frames: tuple[int, ...] = ()  # evidence
    sa: str | None = None  # IkeSa.key or "child:<id>" or "esp:<src>><dst>:0x<spi>" ("ah:..." for AH)
    hint: str = ""
    ts: float | None = None
    # Lines of the peers' own logs the finding relies on (keys.PeerLogNote), e.g. the responder's
    # "configured proposals:"; empty when no log was given or none applies.
    evidence: tuple[PeerLogNote, ...] = ()
    # The finding's numbers by name (SPI, sizes, counts) for scripts: ``findings --json`` writes
    # them as "facts", so nobody has to parse a title. Not part of its hash (a dict is not hashable).
    facts: dict[str, object] = field(default_factory=dict, hash=False)
    # Set when one finding stands for many SAs with the same condition (analysis.rules.aggregate):
    # every SA, the first one included (``sa``, ``frames``, ``facts`` above are the first few's).
    members: tuple[FindingMember, ...] = ()

    def __post_init__(self) -> None:
        # Evidence reads in frame order whatever order a rule gathered it in (ESP-RETURN-STOPPED
        # listed "148, 149, 154, 152, 156, 158": the unanswered run, then the ICMP and IKE behind
        # it). Done here, not per rule, so no rule can forget it.
        object.__setattr__(self, "frames", in_frame_order(self.frames))

    @property
    def count(self) -> int:
        """How many SAs this finding is about (1 unless aggregated)."""
        return len(self.members) or 1

    @property
    def all_frames(self) -> tuple[int, ...]:
        """Every evidence frame: ``frames`` and, when aggregated, every member's (``finding=CODE``
        in Packets shows them all, not only the first few SAs')."""
        if not self.members:
            return self.frames
        return tuple(sorted({*self.frames, *(fr for m in self.members for fr in m.frames)}))


@dataclass(slots=True)
class SaTable:
    """Everything the correlation engine knows. Views read this; they never modify it."""

    ike_sas: dict[str, IkeSa] = field(default_factory=dict)
    child_sas: dict[int, ChildSa] = field(default_factory=dict)
    flows: dict[FlowKey, EspFlow] = field(default_factory=dict)  # EspFlow.key -> flow
    first_ts: float | None = None
    last_ts: float | None = None
    # Live only (Session.finish(now)): the clock of the latest evaluation. The capture was running
    # until then, though its last frame (last_ts) may be older: a quiet tunnel is not a capture's end.
    watched_until: float | None = None
    # Added by the correlation engine: facts outside any SA that rules still want.
    observations: list[Observation] = field(default_factory=list)
    # ChildSa.id -> its flows; kept by the tracker with EspFlow.child_sa (ChildSa.flows reads it)
    child_flows: dict[int, list[EspFlow]] = field(default_factory=dict)
    # (src, dst) -> NAT keepalives sent (RFC 3948 §2.3), counted by the tracker as they arrive,
    # for every pair that has a ``nat_keepalive`` observation (views read it, no walk over those)
    keepalives: dict[tuple[str, str], int] = field(default_factory=dict)
    # (SPI, protocol, destination) -> the SAs seen on an OpenBSD enc(4) capture (EncSa; state/enc_sa)
    enc_sas: dict[tuple[int, str, str], EncSa] = field(default_factory=dict)


def one_counter(table: SaTable) -> dict[int, list[EspFlow]]:
    """Flows (by ``id``) whose gaps are another flow's numbers -> all flows of that counter: one
    sender using one SA (SPI and protocol) toward several destinations. The sender keeps one counter
    per SA and increments it for every packet it sends on it (RFC 4303 §3.3.3, RFC 4302 §3.3.3),
    whatever the destination, so the flows' sequence numbers together run from the lowest to the
    highest once each. A receiver may identify a unicast SA by its SPI alone (RFC 4301 §4.1), and
    manually keyed SAs shared by a group are sent to unicast and multicast destinations alike
    (RFC 4552 §7, OSPFv3: tcpdump's OSPFv3_with_AH, where each router's hellos to ff02::5 and
    updates to its neighbour interleave 19, 20, 21, 22 ...). Such flows lose nothing: findings and
    views count loss per counter, not per destination. Flows with a counter of their own (every
    SA made by IKE, one destination each) are not in the result."""
    groups: dict[tuple, list[EspFlow]] = {}
    for f in table.flows.values():
        if f.seq_min is not None and f.seq_max is not None:
            groups.setdefault((f.src, f.spi, f.protocol), []).append(f)
    out: dict[int, list[EspFlow]] = {}
    for fs in groups.values():
        if len(fs) < 2 or not any(f.lost for f in fs):
            continue
        span = max(f.seq_max for f in fs) - min(f.seq_min for f in fs) + 1  # type: ignore[type-var,operator]
        if sum(f.packets - f.duplicates - f.capture_duplicates for f in fs) == span:
            out.update((id(f), fs) for f in fs)
    return out


def counter_lost(group: list[EspFlow]) -> int:
    """Sequence numbers of one counter (a group of :func:`one_counter`) that none of its flows carried."""
    span = max(g.seq_max or 0 for g in group) - min(g.seq_min or 0 for g in group) + 1
    return max(span - sum(g.packets - g.duplicates - g.capture_duplicates for g in group), 0)


@dataclass(slots=True)
class Observation:
    """Something the tracker noticed that belongs to no SA field, e.g. an INVALID_SPI notify, a
    malformed IKE message, ESP after the table forgot its SA."""

    kind: str  # "invalid_spi_notify" | "malformed" | "ike_no_sa" | ...
    ts: float | None
    frames: tuple[int, ...]
    src: str = ""
    dst: str = ""
    detail: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class KeymatRequest:
    """A CHILD SA whose ESP keys can be derived once its IKE SA's SK_d is known (RFC 7296 §2.17).

    Produced by ``Tracker.pending_keymat()``; the session (crypto.keymat) looks up the IKE SA keys
    by (ike_spi_i, ike_spi_r), derives both directions, then calls ``Tracker.keymat_done(child_id,
    source)`` so the request is not offered again. KEYMAT = prf+(SK_d, Ni | Nr), or with PFS
    prf+(SK_d, g^ir (new) | Ni | Nr) — PFS ones are still listed (``pfs_group`` set) but cannot be
    derived from a capture since g^ir is secret.
    """

    child_id: int
    ike_spi_i: bytes
    ike_spi_r: bytes
    ni: bytes
    nr: bytes
    spi_i: int  # inbound at the initiator: ESP responder -> initiator uses this SPI
    spi_r: int  # inbound at the responder: ESP initiator -> responder uses this SPI
    initiator: str
    responder: str
    protocol: int  # iana.ProtocolId (3 ESP, 2 AH)
    encr: int | None  # iana.EncrTransform
    encr_key_bits: int | None
    integ: int | None  # iana.IntegTransform, None/0 for AEAD
    esn: bool
    pfs_group: int | None


def other_end(sa: IkeSa, addr: str) -> str:
    """The peer at the other end of ``sa`` from ``addr``. A peer that moved (MOBIKE
    UPDATE_SA_ADDRESSES, RFC 4555 §3.5, or a NAT giving it a new address, RFC 7296 §2.23) keeps its
    role at its new address: a request from the initiator's new address is still the initiator's,
    and the answer is owed by the responder, named at its own latest address."""
    moved = [rb for rb in sa.nat_rebindings if rb.old_addr != rb.new_addr]
    if not moved:
        return sa.responder if addr == sa.initiator else sa.initiator
    mine = "initiator" if addr == sa.initiator or any(
        rb.peer == "initiator" and rb.new_addr == addr for rb in moved) else "responder"
    other = "responder" if mine == "initiator" else "initiator"
    latest = [rb.new_addr for rb in moved if rb.peer == other]
    return latest[-1] if latest else (sa.responder if other == "responder" else sa.initiator)
