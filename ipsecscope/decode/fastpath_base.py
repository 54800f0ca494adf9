"""What the fast ESP scanners share (:mod:`~ipsecscope.decode.fastpath` for classic pcap,
:mod:`~ipsecscope.decode.fastpath_ng` for pcapng): the fixed-offset frame layouts, the per-flow
aggregate (:class:`FlowTable`), what one scanner process found (``_Part``), the fork helper and
the step that folds the parts into a :class:`ScanResult`. Their one record loop is
:mod:`~ipsecscope.decode.fastpath_loop`.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from ..model.packets import AhPacket, EspPacket

READ_CHUNK = 2 << 20  # 2 MiB: same speed as 8 MiB, a third of the peak RSS
SPLIT_MIN_BYTES = 64 << 20  # below this, a second process costs more than it saves

# From the start of an Ethernet frame: ethertype(12) | ver/ihl(14) | total length(16) |
# flags+fragment offset(20) | protocol(23) | src(26) dst(30) | first 4 payload bytes(34) | next 4(38)
_FRAME = struct.Struct("!12xHBxH2xHxB2x12sI")
_FRAME_LEN = _FRAME.size  # 42
# UDP-encapsulated ESP, from the UDP header (frame offset 34): ports, length, checksum, SPI, seq
_UDP_ESP = struct.Struct("!HHH2xII")
_ETH_IPV4 = 0x0800
_PORTS = struct.Struct("!HH")
# Ethertypes the generic decoder treats as IP or steps over (VLAN tags, MPLS labels, PPPoE
# sessions: link.ETH_CARRIERS); any other is "not IP".
_IP_OR_TAG = frozenset((0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100, 0x9200, 0x8847, 0x8848, 0x8864))
# IPv6 next headers that may lead to IPsec: ESP, AH, TCP/UDP (checked by port) and the extension
# headers the generic decoder walks (hop-by-hop, routing, fragment, destination options, mobility),
# and the tunnels it opens (IPv4/IPv6 in IP, GRE: decode.tunnel).
_V6_MAYBE_IPSEC = frozenset((50, 51, 6, 17, 0, 43, 44, 60, 135, 4, 41, 47))
# Link layers the fast path reads: link type -> (struct reading the same fields as _FRAME with the
# link header in front, offset of the IP header, 802.1Q TPID to step over once, or -1).
# Linux cooked v1 has the protocol at 14 and IP at 16; v2 the protocol at 0 and IP at 20.
LAYOUTS = {
    1: (_FRAME, 14, 0x8100),
    113: (struct.Struct("!14xHBxH2xHxB2x12sI"), 16, -1),
    276: (struct.Struct("!H18xBxH2xHxB2x12sI"), 20, -1),
}

# Per-flow state is bounded: a capture with a million distinct SPIs (random garbage, an attack)
# keeps this many flows and counts the packets of the rest in totals only (FlowTable.overflow,
# _Part.over). Measured on 1M ESP packets with 1M distinct SPIs: 215 MiB peak with 100k flows
# (scanners, table and the JSON document), 1.1 GiB unbounded; with 20k: 64 MiB.
MAX_FLOWS = 20_000

# A flow record in a scanner is a list mutated in place (cheaper than an object per update):
# packets, bytes, first (sec, frac), last (sec, frac), seq min, seq max, first and last frame.


@dataclass(slots=True)
class FlowStat:
    """One ESP or AH flow, keyed by (protocol, src, dst, SPI) — plus ports for UDP/TCP encapsulation."""

    proto: str  # "ESP" | "AH"
    src: str
    dst: str
    spi: int
    packets: int = 0
    bytes: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    seq_min: int = 0
    seq_max: int = 0
    sport: int = 0
    dport: int = 0
    udp_encap: bool = False
    transport: str = "ip"
    first_frame: int = 0
    last_frame: int = 0

    def add(self, ts: float, seq: int, length: int, frame: int) -> None:
        if self.packets == 0:
            self.first_ts, self.seq_min, self.seq_max, self.first_frame = ts, seq, seq, frame
        elif seq > self.seq_max:
            self.seq_max = seq
        elif seq < self.seq_min:
            self.seq_min = seq
        self.packets += 1
        self.bytes += length
        self.last_ts = ts
        self.last_frame = frame

    def merge(self, o: FlowStat) -> None:
        if o.packets == 0:
            return
        if self.packets == 0:
            self.first_ts, self.seq_min, self.seq_max, self.first_frame = o.first_ts, o.seq_min, o.seq_max, o.first_frame
        else:
            # "first"/"last" follow capture order (frame numbers), as the per-packet path does,
            # even when interfaces' clocks disagree.
            if o.first_frame < self.first_frame:
                self.first_ts, self.first_frame = o.first_ts, o.first_frame
            self.seq_min = min(self.seq_min, o.seq_min)
            self.seq_max = max(self.seq_max, o.seq_max)
        if self.packets == 0 or o.last_frame > self.last_frame:
            self.last_ts, self.last_frame = o.last_ts, o.last_frame
        self.packets += o.packets
        self.bytes += o.bytes


@dataclass
class FlowTable:
    """ESP/AH flows keyed by (proto, src, dst, spi, sport, dport, transport).

    At most ``max_flows`` flows are kept (a capture of random SPIs must not take memory without
    bound, issue 12 #7): the packets of further flows are counted in ``overflow`` (per protocol:
    [packets, bytes]) and nowhere else, and ``summary`` says the bound was hit."""

    flows: dict[tuple, FlowStat] = field(default_factory=dict)
    max_flows: int = field(default_factory=lambda: MAX_FLOWS)
    overflow: dict[str, list[int]] = field(default_factory=dict)

    def _over(self, proto: str, packets: int, nbytes: int) -> None:
        o = self.overflow.setdefault(proto, [0, 0])
        o[0] += packets
        o[1] += nbytes

    def add_packet(self, pkt: EspPacket | AhPacket) -> None:
        if type(pkt) is EspPacket:
            key = ("ESP", pkt.src, pkt.dst, pkt.spi, pkt.sport, pkt.dport, pkt.transport)
            f = self.flows.get(key)
            if f is None:
                if len(self.flows) >= self.max_flows:
                    self._over("ESP", 1, len(pkt.data))
                    return
                f = self.flows[key] = FlowStat("ESP", pkt.src, pkt.dst, pkt.spi, sport=pkt.sport, dport=pkt.dport,
                                               udp_encap=pkt.udp_encap, transport=pkt.transport)
            f.add(pkt.ts, pkt.seq, len(pkt.data), pkt.frame)
        else:
            key = ("AH", pkt.src, pkt.dst, pkt.spi, 0, 0, "ip")
            f = self.flows.get(key)
            if f is None:
                if len(self.flows) >= self.max_flows:
                    self._over("AH", 1, len(pkt.data))
                    return
                f = self.flows[key] = FlowStat("AH", pkt.src, pkt.dst, pkt.spi)
            f.add(pkt.ts, pkt.seq, len(pkt.data), pkt.frame)

    def merge(self, other: FlowTable) -> None:
        for proto, (p, b) in other.overflow.items():
            self._over(proto, p, b)
        for key, f in other.flows.items():
            mine = self.flows.get(key)
            if mine is None:
                if len(self.flows) >= self.max_flows:
                    self._over(f.proto, f.packets, f.bytes)
                    continue
                self.flows[key] = f
            else:
                mine.merge(f)

    @property
    def overflow_packets(self) -> int:
        return sum(p for p, _ in self.overflow.values())


@dataclass
class _Part:
    """What one scanner (process) found in its byte range."""

    frames: int = 0
    over: list = field(default_factory=lambda: [0, 0])  # ESP packets, bytes of flows past MAX_FLOWS
    fast: int = 0  # frames accounted on the fast path
    other: int = 0  # frames recognised as not IPsec on the fast path
    esp: dict = field(default_factory=dict)  # 12-byte src|dst|spi -> flow record
    udp: dict = field(default_factory=dict)  # (12-byte src|dst|sport|dport, spi) -> flow record
    slow: list = field(default_factory=list)  # (rel index, t1, t2, origlen, data, iface) for the parent
    slow_bytes: int = 0
    end: int = 0  # stream offset where scanning stopped
    leftover: int = 0  # bytes of an incomplete record at ``end``
    cut_need: int = 0  # the whole length of that record (header included), when its header was read
    first: tuple[int, int] | None = None  # (sec, frac) of the first record
    last: tuple[int, int] | None = None
    error: str | None = None  # damaged record header: scanning stopped there
    gave_up: bool = False  # child only: too many slow frames to ship back (or pcapng IDB/SHB seen)
    section_break: bool = False  # pcapng: a further SHB; ``rest`` holds the unread bytes from it
    rest: bytes = b""


@dataclass
class ScanResult:
    frames: int = 0
    fast: int = 0
    other: int = 0
    flows: FlowTable = field(default_factory=FlowTable)
    first_ts: float | None = None
    last_ts: float | None = None
    truncated: str | None = None
    error: str | None = None
    warning: str | None = None  # about the input, one line: a gzip bomb's ratio (ByteSource, per read window)
    workers: int = 1
    format: str = "pcap"


def _to_flows(part: _Part, frame_offset: int, conv: Callable[[int, int], float]) -> FlowTable:
    table = FlowTable(max_flows=1 << 62)  # bounded already by the scanner; merged into a bounded table
    if part.over[0]:
        table.overflow["ESP"] = list(part.over)
    ntoa = socket.inet_ntoa
    for key, r in part.esp.items():
        s, d, spi = ntoa(key[:4]), ntoa(key[4:8]), int.from_bytes(key[8:12], "big")
        table.flows[("ESP", s, d, spi, 0, 0, "ip")] = FlowStat(
            "ESP", s, d, spi, r[0], r[1], conv(r[2], r[3]), conv(r[4], r[5]), r[6], r[7],
            first_frame=r[8] + frame_offset, last_frame=r[9] + frame_offset)
    for (key, spi), r in part.udp.items():
        s, d = ntoa(key[:4]), ntoa(key[4:8])
        sp, dp = int.from_bytes(key[8:10], "big"), int.from_bytes(key[10:12], "big")
        table.flows[("ESP", s, d, spi, sp, dp, "udp")] = FlowStat(
            "ESP", s, d, spi, r[0], r[1], conv(r[2], r[3]), conv(r[4], r[5]), r[6], r[7], sp, dp, True, "udp",
            first_frame=r[8] + frame_offset, last_frame=r[9] + frame_offset)
    return table


def _child(scan: Callable[..., _Part], path: str, start: int, args: tuple, conn) -> None:
    try:
        with open(path, "rb", buffering=0) as f:
            f.seek(start)
            part = scan(f.read, start, None, *args)
        conn.send(part)
    except BaseException as exc:  # report, never hang the parent
        conn.send(exc)
    finally:
        conn.close()


def _fork(scan: Callable[..., _Part], path: str, start: int, args: tuple):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    conn, child_conn = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(scan, path, start, args, child_conn), daemon=True)
    child.start()
    child_conn.close()
    return child, conn


def _finish(res: ScanResult, parts: list[tuple[_Part, int]], conv: Callable[[int, int], float],
            gzip_note: str | None) -> ScanResult:
    for part, off in parts:
        res.flows.merge(_to_flows(part, off, conv))
        res.frames += part.frames
        res.fast += part.fast
        res.other += part.other
    if parts[0][0].first:
        res.first_ts = conv(*parts[0][0].first)
    lasts = [p.last for p, _ in parts if p.last]
    if lasts:
        res.last_ts = conv(*lasts[-1])
    err = next((p.error for p, _ in parts if p.error), None)
    last_part = parts[-1][0]
    if err:
        res.error = f"{err}: the file is damaged after frame {res.frames}"
    elif last_part.leftover:  # worded as the generic readers (capture.pcap / capture.pcapng) word it
        left, need = last_part.leftover, last_part.cut_need
        if res.format == "pcapng":
            res.truncated = (f"after frame {res.frames}: last block cut off at end of file "
                             f"({left} of {need if need > 12 and left >= 12 else 'at least 12'} bytes)")
        else:
            what = "record header" if left < 16 else f"record data ({left - 16} of {need - 16} bytes)"
            res.truncated = f"frame {res.frames + 1}: {what} cut off at end of file"
    if gzip_note:
        res.truncated = (res.truncated + f" ({gzip_note})") if res.truncated else gzip_note
    return res
