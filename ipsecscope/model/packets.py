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
class FragmentedEsp:
    """An ESP packet known only by its first IP fragment: the rest of its datagram never reached
    the capture. That fragment holds the UDP header (ESP in UDP, RFC 3948) and the ESP header (RFC
    791 §2.3, RFC 8200 §4.5), so the packet's SPI and sequence number are known, but ESP is checked
    after reassembly only (RFC 4303 §3.4.1): without every fragment nobody can verify or decrypt it,
    and the receiver lost it whole (RFC 4459 §2, §5)."""

    spi: int
    seq: int  # low 32 bits as on the wire
    sport: int = 0  # UDP ports when UDP-encapsulated, else 0
    dport: int = 0
    missing: str = ""  # the payload's byte ranges never captured (decode.ip.missing_text)
    captured: int = 0  # octets of the first fragment's payload (UDP header included when encapsulated)

    def text(self) -> str:
        """One line for the frame's row and the findings."""
        return (f"ESP packet SPI 0x{self.spi:08x} seq {self.seq} arrived as IP fragments, the part at "
                f"{self.missing} never captured — cannot decrypt/verify")


@dataclass(slots=True, frozen=True)
class Malformed:
    frame: int
    ts: float
    reason: str  # one line, e.g. "IPv4 header truncated (12 of 20 bytes)"
    layer: str  # "capture" | "link" | "ip" | "udp" | "ike" | "esp" | "ah"
    # What was readable below the broken header: a truncated ESP/AH/UDP header inside a sound IP
    # header still has its addresses (and ports), as tshark shows them; "" / 0 when not read.
    src: str = ""
    dst: str = ""
    sport: int = 0
    dport: int = 0
    # The IP header's own protocol field (IPv4 Protocol, the IPv6 fixed header's Next Header) when
    # that header was read: tshark's ip.proto / ipv6.nxt for the frame. None: not read.
    ip_proto: int | None = None
    # A broken ESP/AH header's SPI when its 4 octets were there (RFC 4303 §2.1, RFC 4302 §2.4):
    # tshark's esp.spi / ah.spi for the frame. None: not there, or another layer.
    spi: int | None = None
    # The first fragment of an IP datagram that never completed held an ESP packet's start: which
    # one (the tracker counts it on its SA's flow). None otherwise.
    esp: FragmentedEsp | None = None


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
    ip_fragmented: bool = False  # reassembled from outer IP fragments (larger than the path MTU)

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
    ip_fragmented: bool = False  # reassembled from outer IP fragments
    # the IP header the ICV covers when it is not the one at the frame's link.ip_offset (else
    # empty): reassembled, the first fragment's (IPv6: through the fragment header), the
    # datagram's own (decode.ip.Reassembler.first_header); inside a tunnel (GRE, VXLAN, ...), the
    # tunnelled packet's (IPv6: through its extension headers)
    ip_header: bytes = b""


@dataclass(slots=True, frozen=True)
class NatKeepalive:
    """RFC 3948 §2.3: a single 0xFF octet on UDP 4500."""

    frame: int
    ts: float
    src: str
    dst: str
    sport: int
    dport: int


class IcmpType(IntEnum):
    """ICMP error types that quote the offending datagram (RFC 792; IANA "ICMP Type Numbers")."""

    DESTINATION_UNREACHABLE = 3
    SOURCE_QUENCH = 4
    REDIRECT = 5
    TIME_EXCEEDED = 11
    PARAMETER_PROBLEM = 12


class IcmpUnreachable(IntEnum):
    """ICMP Destination Unreachable codes (RFC 792, RFC 1122 §3.2.2.1, RFC 1812 §5.2.7.1)."""

    NET = 0
    HOST = 1
    PROTOCOL = 2
    PORT = 3
    FRAGMENTATION_NEEDED = 4  # DF set and the next hop's MTU is smaller (RFC 1191 §4)
    SOURCE_ROUTE_FAILED = 5
    NET_UNKNOWN = 6
    HOST_UNKNOWN = 7
    NET_PROHIBITED = 9
    HOST_PROHIBITED = 10
    ADMIN_PROHIBITED = 13  # "communication administratively prohibited": a filter rejects it


class Icmp6Type(IntEnum):
    """ICMPv6 error types (RFC 4443 §3; IANA "ICMPv6 Type Numbers")."""

    DESTINATION_UNREACHABLE = 1
    PACKET_TOO_BIG = 2
    TIME_EXCEEDED = 3
    PARAMETER_PROBLEM = 4


class Icmp6Unreachable(IntEnum):
    """ICMPv6 Destination Unreachable codes (RFC 4443 §3.1)."""

    NO_ROUTE = 0
    ADMIN_PROHIBITED = 1
    BEYOND_SCOPE = 2
    ADDRESS = 3
    PORT = 4
    SOURCE_POLICY = 5
    REJECT_ROUTE = 6


@dataclass(slots=True, frozen=True)
class IcmpError:
    """An ICMP (RFC 792) or ICMPv6 (RFC 4443) error quoting an IPsec packet: ESP, AH, ESP in UDP
    4500 (RFC 3948) or IKE. The quote is the original IP header and at least its first 8 octets
    (Linux sends up to 576 / 1280 octets), which is where the SPI and sequence number sit.

    ``src`` sent the error (a router on the path, or the destination host itself); it goes back
    to the quoted packet's sender. The quoted packet's SA is (``spi``, ``quoted_dst``,
    ``protocol``), as RFC 4301 §4.1 identifies an SA.
    """

    frame: int
    ts: float
    src: str  # who reports: a router (path MTU) or the quoted destination (port unreachable)
    dst: str
    ip_version: int  # 4: ICMP, 6: ICMPv6
    type: int  # IcmpType / Icmp6Type
    code: int
    mtu: int  # the next hop's MTU (RFC 1191 §4) or Packet Too Big's MTU (RFC 4443 §3.2); else 0
    quoted_src: str
    quoted_dst: str
    quoted_length: int  # the quoted packet's size as its IP header gives it (not what was quoted)
    protocol: str  # "ESP" | "AH" | "IKE"
    udp_encap: bool = False  # the quoted packet was UDP (port 4500 ESP, or IKE on 500/4500)
    sport: int = 0
    dport: int = 0
    spi: int | None = None  # ESP/AH SPI; None for IKE
    seq: int | None = None  # ESP/AH sequence number, when the quote holds it
    ike_spi_i: bytes = b""  # IKE: the quoted header's initiator SPI

    @property
    def too_big(self) -> bool:
        """The packet was dropped for its size: fragmentation needed / packet too big."""
        if self.ip_version == 4:
            return self.type == IcmpType.DESTINATION_UNREACHABLE and self.code == IcmpUnreachable.FRAGMENTATION_NEEDED
        return self.type == Icmp6Type.PACKET_TOO_BIG

    @property
    def unreachable(self) -> bool:
        """A Destination Unreachable other than for size: the packet was not delivered."""
        t = IcmpType.DESTINATION_UNREACHABLE if self.ip_version == 4 else Icmp6Type.DESTINATION_UNREACHABLE
        return self.type == t and not self.too_big

    @property
    def what(self) -> str:
        """Plain words, e.g. "port unreachable", "fragmentation needed (MTU 1280)"."""
        if self.too_big:
            word = "fragmentation needed" if self.ip_version == 4 else "packet too big"
            return f"{word} (MTU {self.mtu})" if self.mtu else word
        if self.ip_version == 4:
            if self.type == IcmpType.DESTINATION_UNREACHABLE:
                names = {IcmpUnreachable.NET: "network unreachable", IcmpUnreachable.HOST: "host unreachable",
                         IcmpUnreachable.PROTOCOL: "protocol unreachable", IcmpUnreachable.PORT: "port unreachable",
                         IcmpUnreachable.ADMIN_PROHIBITED: "administratively prohibited",
                         IcmpUnreachable.HOST_PROHIBITED: "host prohibited",
                         IcmpUnreachable.NET_PROHIBITED: "network prohibited"}
                return names.get(self.code, f"destination unreachable (code {self.code})")  # type: ignore[call-overload]
            return {IcmpType.TIME_EXCEEDED: "time exceeded", IcmpType.PARAMETER_PROBLEM: "parameter problem",
                    IcmpType.SOURCE_QUENCH: "source quench", IcmpType.REDIRECT: "redirect"}.get(
                        self.type, f"ICMP type {self.type}")  # type: ignore[call-overload]
        if self.type == Icmp6Type.DESTINATION_UNREACHABLE:
            names6 = {Icmp6Unreachable.NO_ROUTE: "no route", Icmp6Unreachable.ADMIN_PROHIBITED:
                      "administratively prohibited", Icmp6Unreachable.ADDRESS: "address unreachable",
                      Icmp6Unreachable.PORT: "port unreachable", Icmp6Unreachable.REJECT_ROUTE: "reject route"}
            return names6.get(self.code, f"destination unreachable (code {self.code})")  # type: ignore[call-overload]
        return {Icmp6Type.TIME_EXCEEDED: "time exceeded", Icmp6Type.PARAMETER_PROBLEM: "parameter problem"}.get(
            self.type, f"ICMPv6 type {self.type}")  # type: ignore[call-overload]


Packet = IkeDatagram | EspPacket | AhPacket | NatKeepalive | Malformed | IcmpError

# A frame that is not IP at all, as tshark's Protocol column names it (for these EtherTypes its
# dissector names the frame whatever it carries). Any other EtherType reads "ethertype 0x88b5"
# (tshark: "0x88b5"), and an IEEE 802.3 frame (a length, not an EtherType: 802.2 LLC, e.g. STP or
# CDP) reads "LLC". The row store keeps the number, not the text (rowstore.RowStore._encode).
ETHERTYPE_NAMES = {0x0806: "ARP", 0x8035: "RARP", 0x888E: "EAPOL", 0x88CC: "LLDP", 0x88F7: "PTPv2",
                   0x8863: "PPPoED", 0x8914: "FIP", 0x893A: "ieee1905", 0x22F0: "IEEE1722", 0x9000: "LOOP"}
_ETHERTYPE_OF = {v: k for k, v in ETHERTYPE_NAMES.items()}
LLC = 0  # "EtherType" of an 802.3 length-field frame


def link_text(ethertype: int) -> str:
    """A non-IP frame's Info: ``ARP``, ``LLDP``, ``ethertype 0x88b5``, ``LLC``."""
    if ethertype < 0x0600:  # IEEE 802.3 §3.2.6: a value below 1536 is a length
        return "LLC"
    return ETHERTYPE_NAMES.get(ethertype) or f"ethertype 0x{ethertype:04x}"


def arp_info(body: bytes) -> str | None:
    """An ARP frame's Info as tshark writes it (RFC 826; probe and announcement RFC 5227 §2.1.1,
    §2.3), ``body`` the ARP packet: ``Who has 10.0.0.2? Tell 10.0.0.1``, ``10.0.0.2 is at
    02:00:00:00:0c:07``, ``Gratuitous ARP for 10.0.0.1 (Request)``, ``Who has 10.0.0.1? (ARP
    Probe)``, ``ARP Announcement for 10.0.0.1``. None for what is no Ethernet/IPv4 request or
    reply (tshark names other opcodes and hardware otherwise: the row keeps ``ARP``)."""
    if len(body) < 28 or body[0:2] != b"\x00\x01" or body[2:4] != b"\x08\x00" or body[4] != 6 or body[5] != 4:
        return None
    op = (body[6] << 8) | body[7]
    sha, spa, tha, tpa = body[8:14], body[14:18], body[18:24], body[24:28]
    s_ip, t_ip = ".".join(map(str, spa)), ".".join(map(str, tpa))
    if op == 1:
        if spa == tpa:  # tshark: a request whose sender and target protocol addresses are equal
            return f"ARP Announcement for {t_ip}" if tha == bytes(6) else f"Gratuitous ARP for {t_ip} (Request)"
        if spa == bytes(4) and tha == bytes(6):
            return f"Who has {t_ip}? (ARP Probe)"
        return f"Who has {t_ip}? Tell {s_ip}"
    if op == 2:
        if spa == tpa:
            return f"Gratuitous ARP for {s_ip} (Reply)"
        return f"{s_ip} is at {':'.join(f'{x:02x}' for x in sha)}"
    return None


def link_ethertype(text: str) -> int | None:
    """The inverse of :func:`link_text` (None: not a text it writes)."""
    if text == "LLC":
        return LLC
    et = _ETHERTYPE_OF.get(text)
    if et is None and text.startswith("ethertype 0x") and len(text) == 16:
        try:
            et = int(text[12:], 16)
        except ValueError:
            return None
        if et < 0x0600 or et in ETHERTYPE_NAMES or text != link_text(et):
            return None
    return et


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
    status: str = ""  # "" | "decrypted" | "icv-bad" | "no-key" | "malformed" | "replay" | "gap"; AH: "verified" | "unverified"
    ike_sa: str | None = None  # IkeSa.key
    child_sa: int | None = None  # ChildSa.id
    # MALFORMED rows: the outer IP header's protocol field where it was readable (Malformed.ip_proto);
    # the other kinds say theirs by kind (ESP 50, AH 51, UDP 17). None: not known.
    ip_proto: int | None = None


def bundle_row(ah: FrameRow, esp: FrameRow) -> FrameRow:
    """The one line of a frame carrying AH and the ESP it protects (IP | AH | ESP, an SA bundle of
    RFC 4301 §4.1/§4.5), from its AH row and its ESP row: kind ``AH+ESP``, the ESP's SPI, sequence
    number and CHILD SA, Info with the AH's SPI (the SPI column holds the ESP's), sequence number
    and ICV verdict unless verified or unchecked, then the ESP's Info; an AH ICV that failed is the
    line's status (else the ESP's). tshark's Protocol column says ESP and shows nothing of the AH."""
    head = ah.info.replace(" next ESP", "", 1)
    if ah.spi is not None:
        head = head.replace("AH ", f"AH 0x{ah.spi:08x} ", 1)
    verdict = f" ({ah.status})" if ah.status not in ("", "verified") else ""
    return FrameRow(esp.frame, esp.ts, "AH+ESP", esp.src, esp.dst, esp.sport, esp.dport, esp.length, esp.spi,
                    esp.seq, f"{head}{verdict}, {esp.info}", ah.status if ah.status == "icv-bad" else esp.status,
                    esp.ike_sa, esp.child_sa, esp.ip_proto)


def bundle_ah_rows(rows: object, lo: int, hi: int) -> list[int]:
    """Positions in ``rows[lo:hi]`` of AH rows whose next row (also before ``hi``) is the same
    frame's ESP: the AH of an AH+ESP bundle, which a packet list shows with its ESP as one line.
    A row store answers from its records (``rows.bundle_ah_rows``)."""
    fast = getattr(rows, "bundle_ah_rows", None)
    if fast is not None:
        return list(fast(lo, hi))
    out: list[int] = []
    prev = rows[lo] if lo < hi else None  # type: ignore[index]
    for i in range(lo + 1, hi):
        row = rows[i]  # type: ignore[index]
        if row.kind == "ESP" and prev.kind == "AH" and prev.frame == row.frame:
            out.append(i - 1)
        prev = row
    return out
