"""Statistics of a session: per CHILD SA, per ESP/AH flow (one direction of an SA) with an IO graph
of packets per interval, and per inner conversation (the decrypted packets' 5-tuple, both
directions together, as Wireshark's Conversations window counts them).

Counters per SA come from the correlation model (``SaTable``: packets, bytes, loss from sequence
gaps, RFC 4303 §3.4.3); the IO graph and the conversations are whole-column numpy operations over
the rows and the inner store (``filtering`` reads them the same way), so a million rows stay fast.
Each conversation carries the display filter that selects it ("follow this conversation").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .decode import inner as inner_mod
from .filtering import _Cols, _InnerCols, source_of
from .model.filter import Filter

PROTO = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}


@dataclass(slots=True)
class FlowStats:
    key: str  # "src>dst:0xspi"
    src: str
    dst: str
    spi: int
    protocol: str
    child_sa: int | None
    packets: int
    bytes: int
    first_ts: float | None
    last_ts: float | None
    lost: int
    io: list[int] = field(default_factory=list)  # packets per interval from the capture's start

    @property
    def rate(self) -> float:
        return _rate(self.packets, self.first_ts, self.last_ts)


@dataclass(slots=True)
class ChildStats:
    id: int
    ike_sa: str | None
    state: str
    spi_i: int | None
    spi_r: int | None
    packets: int
    bytes: int
    first_ts: float | None
    last_ts: float | None
    lost: int
    flows: list[str]

    @property
    def rate(self) -> float:
        return _rate(self.packets, self.first_ts, self.last_ts)


@dataclass(slots=True)
class Conversation:
    protocol: str  # "icmp" | "udp" | "tcp" | "icmpv6" | a number
    a: str
    a_port: int | None
    b: str
    b_port: int | None
    child_sas: list[int]
    packets_ab: int
    packets_ba: int
    bytes: int  # inner IP bytes, both directions
    first_ts: float
    last_ts: float
    lost: int | None  # ICMP echo requests never answered; None where the protocol does not say

    @property
    def packets(self) -> int:
        return self.packets_ab + self.packets_ba

    @property
    def rate(self) -> float:
        return _rate(self.packets, self.first_ts, self.last_ts)

    @property
    def filter(self) -> str:
        """The display filter that selects this conversation (both directions)."""
        fam = "ipv6" if ":" in self.a else "ip"
        parts = [f"{fam}.addr == {self.a}", f"{fam}.addr == {self.b}"]
        if self.protocol in ("udp", "tcp"):
            parts += [f"{self.protocol}.port == {self.a_port}", f"{self.protocol}.port == {self.b_port}"]
        elif self.protocol in ("icmp", "icmpv6"):
            parts.append(self.protocol)
        else:
            parts.append(f"{fam}.{'proto' if fam == 'ip' else 'nxt'} == {self.protocol}")
        return " && ".join(parts)


@dataclass(slots=True)
class Stats:
    first_ts: float | None
    last_ts: float | None
    interval: float  # seconds per IO graph bin
    child_sas: list[ChildStats]
    flows: list[FlowStats]
    conversations: list[Conversation]


def _rate(packets: int, first: float | None, last: float | None) -> float:
    """Packets per second over the time the packets span (0 for a single instant)."""
    if first is None or last is None or last <= first:
        return 0.0
    return packets / (last - first)


def nice_interval(span: float, bins: int = 60) -> float:
    """An IO graph interval near span/bins, rounded to 1, 2 or 5 times a power of ten."""
    if span <= 0:
        return 1.0
    raw = span / bins
    exp = math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * 10 ** exp >= raw:
            return float(m * 10 ** exp)
    return float(10 ** (exp + 1))


def compute(session, interval: float | None = None, bins: int = 60) -> Stats:
    """The statistics of ``session`` (a loaded :class:`~ipsecscope.session.Session`)."""
    table = session.table
    t0, t1 = table.first_ts, table.last_ts
    span = (t1 - t0) if t0 is not None and t1 is not None else 0.0
    interval = interval or nice_interval(span, bins)
    nbins = max(1, int(span // interval) + 1)
    src = source_of(session)
    n = len(src.rows)
    cols = _Cols(src, 0, n, _InnerCols(src.inner) if src.inner is not None and len(src.inner) else None,
                 Filter(""))
    a = cols.arr
    io: dict[tuple[str, str, int], list[int]] = {}
    ipsec = cols.is_esp | cols.is_ah
    if n and ipsec.any():
        idx = np.flatnonzero(ipsec)
        keys = np.stack([a["src"][idx].astype(np.int64), a["dst"][idx].astype(np.int64), a["spi"][idx]], axis=1)
        uniq, inv = np.unique(keys, axis=0, return_inverse=True)
        b = np.minimum(((a["ts"][idx] - (t0 or 0.0)) // interval).astype(np.int64), nbins - 1)
        counts = np.zeros((len(uniq), nbins), dtype=np.int64)
        np.add.at(counts, (inv.reshape(-1), b), 1)
        for (s, d, spi), row in zip(uniq.tolist(), counts.tolist(), strict=True):
            io[(cols.addrs[s], cols.addrs[d], spi)] = row
    flows = []
    for f in sorted(table.flows.values(), key=lambda f: (f.first_frame, f.key)):
        fsrc, fdst, spi = f.src, f.dst, f.spi
        flows.append(FlowStats(f"{fsrc}>{fdst}:0x{spi:08x}", fsrc, fdst, spi, f.protocol, f.child_sa, f.packets,
                               f.bytes, f.first_ts, f.last_ts, f.lost, io.get((fsrc, fdst, spi), [0] * nbins)))
    children = []
    for c in sorted(table.child_sas.values(), key=lambda c: c.id):
        mine = [f for f in flows if f.child_sa == c.id]
        firsts = [f.first_ts for f in mine if f.first_ts is not None]
        lasts = [f.last_ts for f in mine if f.last_ts is not None]
        children.append(ChildStats(c.id, c.ike_sa, getattr(c.state, "value", str(c.state)), c.spi_i, c.spi_r,
                                   sum(f.packets for f in mine), sum(f.bytes for f in mine),
                                   min(firsts, default=None), max(lasts, default=None), sum(f.lost for f in mine),
                                   [f.key for f in mine]))
    return Stats(t0, t1, interval, children, flows, _conversations(cols))


def _conversations(cols: _Cols) -> list[Conversation]:
    cols._join()
    if cols.iarr is None:
        return []
    m = cols.is_esp & cols.has_inner
    ver = cols.icol("ver")
    m &= ver != 0  # transport mode: the outer addresses are the conversation's (see the SA instead)
    fl = cols.icol("flags")
    m &= (fl & inner_mod.FRAGMENT) == 0
    idx = np.flatnonzero(m)
    if not len(idx):
        return []
    pick = {k: cols.icol(k)[idx].astype(np.int64) for k in ("src", "dst", "proto", "sport", "dport", "itype",
                                                               "iplen", "flags")}
    ports = np.isin(pick["proto"], [6, 17]) & ((pick["flags"] & inner_mod.L4) != 0)
    sport = np.where(ports, pick["sport"], -1)
    dport = np.where(ports, pick["dport"], -1)
    # one key for both directions: the lower (address, port) end first
    fwd = (pick["src"] < pick["dst"]) | ((pick["src"] == pick["dst"]) & (sport <= dport))
    ka = np.where(fwd, pick["src"], pick["dst"])
    kb = np.where(fwd, pick["dst"], pick["src"])
    pa = np.where(fwd, sport, dport)
    pb = np.where(fwd, dport, sport)
    keys = np.stack([pick["proto"], ka, pa, kb, pb], axis=1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    k = len(uniq)
    ab = np.bincount(inv, weights=fwd, minlength=k).astype(np.int64)
    total = np.bincount(inv, minlength=k)
    nbytes = np.bincount(inv, weights=pick["iplen"], minlength=k).astype(np.int64)
    ts = cols.arr["ts"][idx]
    first = np.full(k, np.inf)
    last = np.full(k, -np.inf)
    np.minimum.at(first, inv, ts)
    np.maximum.at(last, inv, ts)
    icmp = np.isin(pick["proto"], [1, 58])
    req = np.bincount(inv, weights=icmp & np.isin(pick["itype"], [8, 128]), minlength=k)
    rep = np.bincount(inv, weights=icmp & np.isin(pick["itype"], [0, 129]), minlength=k)
    child = cols.arr["child"][idx]
    addrs = cols.inner.addrs
    out = []
    for j, (proto, ia, pa_, ib, pb_) in enumerate(uniq.tolist()):
        children = sorted({int(c) for c in child[inv == j].tolist() if c >= 0})
        lost = int(max(req[j] - rep[j], 0)) if proto in (1, 58) and req[j] else None
        out.append(Conversation(PROTO.get(proto, str(proto)), addrs[ia], None if pa_ < 0 else pa_, addrs[ib],
                                None if pb_ < 0 else pb_, children, int(ab[j]), int(total[j] - ab[j]),
                                int(nbytes[j]), float(first[j]), float(last[j]), lost))
    out.sort(key=lambda c: (-c.packets, c.first_ts))
    return out
