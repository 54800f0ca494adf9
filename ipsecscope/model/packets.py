"""What the capture and decode stages produce.

Flow: capture yields :class:`RawFrame`; ``decode.demux.decode_frame`` turns one into at most one
:class:`IkeDatagram`, :class:`EspPacket`, :class:`AhPacket`, :class:`NatKeepalive`,
:class:`Malformed` or ``None`` (not IPsec: counted by the caller as "other").
Addresses are kept as text (``"198.18.0.1"`` / ``"2001:db8::1"``) because every consumer
(tables, JSON, key matching) wants text and the conversion is done once per packet.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class LinkType(IntEnum):
    """tcpdump.org LINKTYPE_* values we decode."""

    NULL = 0
    ETHERNET = 1
    RAW = 101
    LOOP = 108
    LINUX_SLL = 113
    IPV4 = 228
    IPV6 = 229
    LINUX_SLL2 = 276


@dataclass(slots=True, frozen=True)
class RawFrame:
    index: int  # 1-based, as Wireshark numbers frames
    ts: float  # seconds since the epoch (ns resolution is kept in ts_ns)
    ts_ns: int
    linktype: int
    data: bytes
    orig_len: int
    iface: int = 0
    offset: int = -1  # byte offset of the record in an uncompressed file, for lazy re-reads; -1 unknown


@dataclass(slots=True, frozen=True)
class Malformed:
    frame: int
    ts: float
    reason: str  # one line, e.g. "IPv4 header truncated (12 of 20 bytes)"
    layer: str  # "capture" | "link" | "ip" | "udp" | "ike" | "esp" | "ah"


@dataclass(slots=True, frozen=True)
class IkeDatagram:
    """One IKE message as carried on the wire (UDP 500, UDP 4500 after the non-ESP marker, or TCP)."""

    frame: int
    ts: float
    src: str
    dst: str
    sport: int
    dport: int
    data: bytes  # starts at the IKE header (non-ESP marker / TCP framing removed)
    transport: str = "udp"  # "udp" | "tcp" (RFC 8229)
    non_esp_marker: bool = False  # arrived on 4500 with the 4-byte zero marker (RFC 3948 §2.2)
    ip_fragmented: bool = False  # reassembled from IP fragments (MTU trouble indicator)
    ip_version: int = 4


@dataclass(slots=True, frozen=True)
class EspPacket:
    frame: int
    ts: float
    src: str
    dst: str
    spi: int
    seq: int  # low 32 bits as on the wire (RFC 4303 §2.2)
    data: bytes  # the ESP packet from the SPI field to the end (incl. ICV)
    sport: int = 0  # 0 when not UDP-encapsulated
    dport: int = 0
    udp_encap: bool = False  # RFC 3948 UDP encapsulation
    ip_version: int = 4
    transport: str = "ip"  # "ip" | "udp" | "tcp"

    @property
    def length(self) -> int:
        return len(self.data)


@dataclass(slots=True, frozen=True)
class AhPacket:
    frame: int
    ts: float
    src: str
    dst: str
    spi: int
    seq: int
    next_header: int
    icv: bytes
    data: bytes  # AH header onwards
    ip_version: int = 4


@dataclass(slots=True, frozen=True)
class NatKeepalive:
    """RFC 3948 §2.3: a single 0xFF octet on UDP 4500."""

    frame: int
    ts: float
    src: str
    dst: str
    sport: int
    dport: int


Packet = IkeDatagram | EspPacket | AhPacket | NatKeepalive | Malformed


@dataclass(slots=True, frozen=True)
class FrameRow:
    """One line of the packet list: what the TUI's Packets table and `summary` show per frame.

    Small on purpose (1M+ of these are kept); details are recomputed on demand by the session.
    """

    frame: int
    ts: float
    kind: str  # "IKE" | "ESP" | "AH" | "NAT-KA" | "MALFORMED" | "OTHER"
    src: str
    dst: str
    sport: int
    dport: int
    length: int
    spi: int | None = None  # ESP/AH SPI
    seq: int | None = None
    info: str = ""  # one line: "IKE_AUTH request #1 [ SK ]", "ESP seq 42 -> ICMP echo"
    status: str = ""  # "" | "decrypted" | "icv-bad" | "no-key" | "malformed" | "replay" | "gap"
    ike_sa: str | None = None  # IkeSa.key
    child_sa: int | None = None  # ChildSa.id
