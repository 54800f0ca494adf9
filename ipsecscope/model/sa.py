"""The correlation model: IKE SAs, CHILD SAs, ESP flows, findings.

The tracker (``ipsecscope.state``) creates and updates these; views read them. They are slotted
(not frozen) because counters move as packets arrive; everything a view shows is a plain field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

from .ike import TrafficSelector


class SaState(str, Enum):
    INITIATING = "initiating"  # IKE_SA_INIT / CREATE_CHILD_SA request seen, no answer yet
    ESTABLISHED = "established"
    REKEYED = "rekeyed"  # replaced by a newer SA (still may carry traffic for a while)
    DELETED = "deleted"
    FAILED = "failed"  # negotiation failed (error notify, no answer)
    INFERRED = "inferred"  # seen only from ESP traffic (no IKE in the capture)


class Severity(IntEnum):
    INFO = 1
    WARNING = 2
    ERROR = 3


@dataclass(slots=True)
class EspFlow:
    """One direction of ESP/AH traffic: (src, dst, spi)."""

    src: str
    dst: str
    spi: int
    protocol: str = "ESP"  # "ESP" | "AH"
    packets: int = 0
    bytes: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    first_frame: int = 0
    last_frame: int = 0
    seq_min: int | None = None
    seq_max: int | None = None  # highest full (ESN-extended when known) sequence number
    lost: int = 0  # sequence numbers never seen below seq_max (gaps)
    duplicates: int = 0  # same sequence number twice (replay)
    reordered: int = 0  # arrived more than the 64-packet window late
    icv_failed: int = 0
    no_key: int = 0
    decrypted: int = 0
    malformed: int = 0
    udp_encap: bool = False
    sport: int = 0
    dport: int = 0
    esn_hi: int = 0  # inferred high 32 bits of the sequence number (RFC 4303 §3.3.3)
    after_delete: int = 0  # packets seen after the SA was deleted
    child_sa: int | None = None  # ChildSa.id once bound

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.src, self.dst, self.spi)


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
    offered: list[str] = field(default_factory=list)  # what the initiator offered
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

    def flows(self, table: SaTable) -> list[EspFlow]:
        return [f for f in table.flows.values() if f.child_sa == self.id]


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
    offered: list[str] = field(default_factory=list)
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
    children: list[int] = field(default_factory=list)  # ChildSa.id
    exchanges: list[IkeExchange] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    decrypted: bool = False  # SK payloads could be read
    keys_source: str | None = None

    @property
    def key(self) -> str:
        return f"{self.ike_spi_i.hex()}_{self.ike_spi_r.hex()}"


@dataclass(slots=True, frozen=True)
class Finding:
    code: str  # stable, e.g. "IKE-NO-PROPOSAL", "ESP-SEQ-GAP"
    severity: Severity
    title: str  # one line
    explanation: str  # plain language, names both peers
    frames: tuple[int, ...] = ()  # evidence
    sa: str | None = None  # IkeSa.key or "child:<id>" or "esp:<src>><dst>:0x<spi>"
    hint: str = ""
    ts: float | None = None


@dataclass(slots=True)
class SaTable:
    """Everything the correlation engine knows. Views read this; they never modify it."""

    ike_sas: dict[str, IkeSa] = field(default_factory=dict)
    child_sas: dict[int, ChildSa] = field(default_factory=dict)
    flows: dict[tuple[str, str, int], EspFlow] = field(default_factory=dict)
    first_ts: float | None = None
    last_ts: float | None = None
