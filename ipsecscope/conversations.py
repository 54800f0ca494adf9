"""Statistics of a session: per CHILD SA, per ESP/AH flow (one direction of an SA) with an IO graph
of packets per interval, and per inner conversation (the decrypted packets' 5-tuple, both
directions together, as Wireshark's Conversations window counts them).

Counters per SA come from the correlation model (``SaTable``: packets, bytes, loss from sequence
gaps, RFC 4303 §3.4.3); the IO graph and the conversations are whole-column numpy operations over
the rows and the inner store (``filtering`` reads them the same way), so a million rows stay fast.
They are gathered a window of rows at a time by an :class:`Accumulator`: ``stats`` and the TUI's
Stats tab read a file through :func:`compute`, and a live TUI feeds the same accumulator only
the rows that arrived since its last look (no recount per refresh).
Each conversation carries the display filter that selects it ("follow this conversation"), and
:func:`follow_filter` gives the same filter for one packet of the list.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .decode import inner as inner_mod
from .filtering import WINDOW, Source, _Cols, _InnerCols, source_of
from .model.filter import Filter
from .model.packets import FrameRow
from .model.sa import counter_lost, one_counter
from .state.enc_sa import enc_protocol

if TYPE_CHECKING:
    from .model.sa import SaTable
    from .session import Session

PROTO = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
LIVE_INTERVAL = 0.1  # a live IO graph's first bin width (seconds), doubled whenever ...
LIVE_MAX_BINS = 512  # ... the graph would need more bins than this (memory stays flat over hours)


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
    copies: int = 0  # of ``packets``, copies of a packet the capture made (EspFlow.capture_duplicates)
    # an SA seen through OpenBSD's enc(4) (state/enc_sa.EncSa): its frames are the cleartext side,
    # with no ESP/AH header, so there is no sequence number and ``lost`` cannot be known (0)
    enc: bool = False

    @property
    def rate(self) -> float:
        """Packets sent per second (the capture's copies are no traffic: EspFlow.sent)."""
        return _rate(self.packets - self.copies, self.first_ts, self.last_ts)


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
    copies: int = 0  # of ``packets``, copies of a packet the capture made

    @property
    def rate(self) -> float:
        """Packets sent per second (FlowStats.rate)."""
        return _rate(self.packets - self.copies, self.first_ts, self.last_ts)


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
    enc_spis: list[int] = field(default_factory=list)  # the enc(4) SAs its frames came over (OpenBSD enc)

    @property
    def packets(self) -> int:
        return self.packets_ab + self.packets_ba

    @property
    def rate(self) -> float:
        return _rate(self.packets, self.first_ts, self.last_ts)

    @property
    def filter(self) -> str:
        """The display filter that selects this conversation (both directions)."""
        return conversation_filter(self.protocol, self.a, self.a_port, self.b, self.b_port)


def conversation_filter(protocol: str, a: str, a_port: int | None, b: str, b_port: int | None) -> str:
    """Wireshark display filter for the conversation between ``a`` and ``b`` (either direction)."""
    fam = "ipv6" if ":" in a else "ip"
    parts = [f"{fam}.addr == {a}", f"{fam}.addr == {b}"]
    if protocol in ("udp", "tcp"):
        if a_port is None or b_port is None:  # a fragment: no transport header to say the ports
            parts.append(protocol)
        else:
            parts += [f"{protocol}.port == {a_port}", f"{protocol}.port == {b_port}"]
    elif protocol in ("icmp", "icmpv6"):
        parts.append(protocol)
    else:
        parts.append(f"{fam}.{'proto' if fam == 'ip' else 'nxt'} == {protocol}")
    return " && ".join(parts)


def sa_filter(spis: Sequence[int], protocol: str = "ESP", enc: bool = False) -> str:
    """Wireshark display filter for the packets of one SA (one SPI) or of a CHILD SA (its two);
    ``enc``: an OpenBSD enc(4) SA's frames (the enc header's SPI, tshark's ``enc.spi``)."""
    field_ = "enc.spi" if enc else "ah.spi" if protocol == "AH" else "esp.spi"
    if len(spis) == 1:
        return f"{field_} == 0x{spis[0]:08x}"
    return f"{field_} in {{{', '.join(f'0x{s:08x}' for s in spis)}}}"


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


def compute(session: Session, interval: float | None = None, bins: int = 60) -> Stats:
    """The statistics of ``session`` (a loaded :class:`~ipsecscope.session.Session`)."""
    table = session.table
    t0, t1 = table.first_ts, table.last_ts
    span = (t1 - t0) if t0 is not None and t1 is not None else 0.0
    interval = interval or nice_interval(span, bins)
    acc = Accumulator(t0 or 0.0, interval, nbins=max(1, int(span // interval) + 1))
    acc.add(source_of(session))
    return acc.stats(table)


class Accumulator:
    """IO graph bins per flow and counters per inner conversation, added a window of rows at a
    time. With ``nbins`` the graph has that many bins of ``interval`` seconds from ``t0`` (a
    file); without, it grows as rows arrive and its bins double in width past ``max_bins``
    (live: bins aligned on ``t0``, so two merge into one exactly)."""

    def __init__(self, t0: float, interval: float = LIVE_INTERVAL, *, nbins: int | None = None,
                 max_bins: int = LIVE_MAX_BINS) -> None:
        self.t0, self.interval, self.fixed, self.max_bins = t0, interval, nbins, max_bins
        self.io: dict[tuple[str, str, int, str], list[int]] = {}  # (src, dst, spi, "ESP"|"AH") -> bins
        # (proto, a, a_port, b, b_port) -> [a->b packets, packets, bytes, first, last, echo requests,
        # echo replies, CHILD SA ids]; a/b as strings, ports -1 when there are none
        self.convs: dict[tuple, list] = {}
        self.last_frame = -1  # rows up to this frame are counted
        self.counted = 0  # rows counted so far (each once)

    def feed(self, src: Source) -> int:
        """Count the rows of ``src`` that came after the last frame counted (live refresh);
        returns how many."""
        rows = src.rows
        lo = bisect.bisect_right(rows, self.last_frame, key=_frame_of)
        self.add(src, lo)
        return len(rows) - lo

    def add(self, src: Source, lo: int = 0, hi: int | None = None) -> None:
        """Count rows ``lo``..``hi`` of ``src`` (in windows: a million rows never become one array)."""
        hi = len(src.rows) if hi is None else hi
        inner = _InnerCols(src.inner) if src.inner is not None and len(src.inner) else None
        for w in range(lo, hi, WINDOW):
            cols = _Cols(src, w, min(hi, w + WINDOW), inner, Filter(""))
            if cols.n:
                self.counted += cols.n
                self._io(cols)
                self._conversations(cols)
                self.last_frame = max(self.last_frame, int(cols.frames[-1]))

    def _bins(self, ts: np.ndarray) -> np.ndarray:
        b = np.maximum((ts - self.t0) // self.interval, 0).astype(np.int64)
        if self.fixed is not None:
            return np.minimum(b, self.fixed - 1)
        while len(b) and int(b.max()) >= self.max_bins:
            self.interval *= 2
            b //= 2
            for key, row in self.io.items():
                self.io[key] = [sum(row[i:i + 2]) for i in range(0, len(row), 2)]
        return b

    def _io(self, cols: _Cols) -> None:
        a = cols.arr
        idx = np.flatnonzero(cols.is_esp | cols.is_ah)
        if len(idx):
            # one SA per (SPI, destination, protocol) (RFC 4301 §4.1): ESP and AH may share an SPI
            self._bin_sas(cols, idx, a["spi"][idx], cols.is_ah[idx], "")
        enc = cols._enc_headers()
        if enc:  # OpenBSD enc(4) frames: the SPI and protocol are the enc header's (state/enc_sa)
            idx = np.flatnonzero(np.isin(cols.frames, np.fromiter(enc, dtype=np.int64, count=len(enc))))
            if len(idx):
                heads = [enc[f] for f in cols.frames[idx].tolist()]
                self._bin_sas(cols, idx, np.array([h[0] for h in heads], dtype=np.int64),
                              np.array([enc_protocol(h[1]) == "AH" for h in heads]), "enc ")

    def _bin_sas(self, cols: _Cols, idx: np.ndarray, spis: np.ndarray, ah: np.ndarray, kind: str) -> None:
        """Add the rows ``idx`` to the IO graph of their SA (source, destination, SPI, protocol)."""
        a = cols.arr
        b = self._bins(a["ts"][idx])
        uniq, inv = _group([a["src"][idx], a["dst"][idx], spis, ah])
        lo, w = int(b.min()), int(b.max()) - int(b.min()) + 1
        counts = np.bincount(inv * w + (b - lo), minlength=len(uniq) * w).reshape(len(uniq), w)
        for (s, d, spi, is_ah), row in zip(uniq.tolist(), counts.tolist(), strict=True):
            key = (cols.addrs[s], cols.addrs[d], spi, kind + ("AH" if is_ah else "ESP"))
            series = self.io.setdefault(key, [])
            if len(series) < lo + w:
                series.extend([0] * (lo + w - len(series)))
            for i, c in enumerate(row, lo):
                series[i] += c

    def _conversations(self, cols: _Cols) -> None:
        cols._join()
        if cols.iarr is None:
            return
        m = cols.is_esp & cols.has_inner
        enc = cols._enc_headers()
        if enc:  # OpenBSD enc(4) frames: the cleartext an SA carried (state/enc_sa), the packet inside them
            m |= cols.is_other & cols.has_inner & np.isin(cols.frames, np.fromiter(enc, dtype=np.int64))
        m &= cols.icol("ver") != 0  # transport mode: the outer addresses are the conversation's (see the SA)
        m &= (cols.icol("flags") & inner_mod.FRAGMENT) == 0
        idx = np.flatnonzero(m)
        if not len(idx):
            return
        pick = {k: cols.icol(k)[idx].astype(np.int64) for k in ("src", "dst", "proto", "sport", "dport", "itype",
                                                                   "iplen", "flags")}
        ports = np.isin(pick["proto"], [6, 17]) & ((pick["flags"] & inner_mod.L4) != 0)
        sport = np.where(ports, pick["sport"], -1)
        dport = np.where(ports, pick["dport"], -1)
        # one key for both directions: the lower (address, port) end first (address table order)
        fwd = (pick["src"] < pick["dst"]) | ((pick["src"] == pick["dst"]) & (sport <= dport))
        uniq, inv = _group([pick["proto"], np.where(fwd, pick["src"], pick["dst"]), np.where(fwd, sport, dport),
                            np.where(fwd, pick["dst"], pick["src"]), np.where(fwd, dport, sport)])
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
        req = np.bincount(inv, weights=icmp & np.isin(pick["itype"], [8, 128]), minlength=k).astype(np.int64)
        rep = np.bincount(inv, weights=icmp & np.isin(pick["itype"], [0, 129]), minlength=k).astype(np.int64)
        enc_pairs: set[tuple[int, int]] = set()
        if enc:  # the enc SA (its SPI) each conversation's enc(4) frames came over
            enc_pairs = {(j, enc[f][0]) for j, f in zip(inv.tolist(), cols.frames[idx].tolist(), strict=True)
                         if f in enc}
        child = cols.arr["child"][idx]
        bound = child >= 0
        pairs: list = []
        if bound.any():  # distinct (conversation, CHILD SA) pairs, as one integer each (a 1-D sort)
            c = child[bound]
            base = int(c.max()) + 1
            u = np.unique(inv[bound].astype(np.int64) * base + c)
            pairs = list(zip((u // base).tolist(), (u % base).tolist(), strict=True))
        addrs = cols.inner.addrs
        entries = []
        for proto, ia, pa, ib, pb in uniq.tolist():
            key = (proto, addrs[ia], pa, addrs[ib], pb)
            e = self.convs.get(key)
            if e is None:
                e = self.convs[key] = [0, 0, 0, math.inf, -math.inf, 0, 0, set(), set()]
            entries.append(e)
        for j, e in enumerate(entries):
            e[0] += int(ab[j])
            e[1] += int(total[j])
            e[2] += int(nbytes[j])
            e[3] = min(e[3], float(first[j]))
            e[4] = max(e[4], float(last[j]))
            e[5] += int(req[j])
            e[6] += int(rep[j])
        for j, c in pairs:
            entries[j][7].add(c)
        for j, spi in enc_pairs:
            entries[j][8].add(spi)

    def stats(self, table: SaTable) -> Stats:
        """The statistics so far: the counted rows, and the SA counters of ``table``."""
        t0, t1 = table.first_ts, table.last_ts
        if self.fixed is not None:
            nbins = self.fixed
        else:
            span = (t1 - self.t0) if t1 is not None else 0.0
            nbins = max([max(1, int(span // self.interval) + 1)] + [len(r) for r in self.io.values()])
        flows = []
        # one SA toward several destinations: one sender counter, its loss is the counter's (as
        # in findings and `sas`, RFC 4303 §3.3.3), not each destination's gaps
        shared = one_counter(table)
        for f in sorted(table.flows.values(), key=lambda f: (f.first_frame, f.key)):
            fsrc, fdst, spi = f.src, f.dst, f.spi
            io = self.io.get((fsrc, fdst, spi, f.protocol), [])
            flows.append(FlowStats(f"{fsrc}>{fdst}:0x{spi:08x}", fsrc, fdst, spi, f.protocol, f.child_sa,
                                   f.packets, f.bytes, f.first_ts, f.last_ts,
                                   counter_lost(shared[id(f)]) if id(f) in shared else f.lost,
                                   io + [0] * (nbins - len(io)), f.capture_duplicates))
        for e in sorted(table.enc_sas.values(), key=lambda e: (e.first_frame, e.spi)):
            # an enc(4) row has no outer addresses, so its graph is per (SPI, protocol): two enc
            # SAs that differ only by destination (RFC 4301 §4.1) would share one series
            io = self.io.get(("", "", e.spi, f"enc {e.protocol}"), [])
            flows.append(FlowStats(f"{e.src}>{e.dst}:0x{e.spi:08x}", e.src, e.dst, e.spi, e.protocol, None,
                                   e.packets, e.bytes, e.first_ts, e.last_ts, 0, io + [0] * (nbins - len(io)),
                                   enc=True))
        children = []
        for c in sorted(table.child_sas.values(), key=lambda c: c.id):
            mine = [f for f in flows if f.child_sa == c.id]
            firsts = [f.first_ts for f in mine if f.first_ts is not None]
            lasts = [f.last_ts for f in mine if f.last_ts is not None]
            children.append(ChildStats(c.id, c.ike_sa, getattr(c.state, "value", str(c.state)), c.spi_i, c.spi_r,
                                       sum(f.packets for f in mine), sum(f.bytes for f in mine),
                                       min(firsts, default=None), max(lasts, default=None),
                                       sum(f.lost for f in mine), [f.key for f in mine], sum(f.copies for f in mine)))
        convs = []
        for (proto, a, pa, b, pb), (ab, total, nbytes, first, last, req, rep, sas, encs) in self.convs.items():
            lost = max(req - rep, 0) if proto in (1, 58) and req else None
            convs.append(Conversation(PROTO.get(proto, str(proto)), a, None if pa < 0 else pa, b,
                                      None if pb < 0 else pb, sorted(sas), ab, total - ab, nbytes, first, last, lost,
                                      sorted(encs)))
        convs.sort(key=lambda c: (-c.packets, c.first_ts))
        return Stats(t0, t1, self.interval, children, flows, convs)


def _group(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``columns`` (one per key part) and, per row, its index among them:
    ``np.unique(axis=0)``, but through one integer per row (a 1-D sort is ~5x faster)."""
    uniqs, codes, dims = [], [], []
    for col in columns:
        u, inv = np.unique(col, return_inverse=True)
        uniqs.append(u)
        codes.append(inv.reshape(-1))
        dims.append(len(u))
    if math.prod(dims) >= 1 << 62:  # not one int64: the slow way
        rows, inv = np.unique(np.stack([c.astype(np.int64) for c in columns], axis=1), axis=0, return_inverse=True)
        return rows, inv.reshape(-1)
    keys, inv = np.unique(np.ravel_multi_index(codes, dims), return_inverse=True)
    parts = np.unravel_index(keys, dims)
    return np.stack([u[p].astype(np.int64) for u, p in zip(uniqs, parts, strict=True)], axis=1), inv.reshape(-1)


def _frame_of(row: FrameRow) -> int:
    return row.frame


def follow_filter(session: Session, row: FrameRow) -> str:
    """The display filter of the conversation ``row`` belongs to ("follow this conversation"):
    its inner 5-tuple when it has an inner packet (decrypted tunnel-mode ESP, a plain IP frame),
    as the Stats tab and ``stats`` write it; else its SA (the ESP/AH SPI, also for transport
    mode, whose inner addresses are the outer ones), its IKE SA, or its outer addresses."""
    store = getattr(session, "inner", None)
    rec = store.record(row.frame) if store is not None else None
    if rec is not None and rec[1] in (4, 6):
        _, _ver, proto, _ttl, flags, src, dst, _len, sport, dport = rec[:10]
        ports = proto in (6, 17) and flags & inner_mod.L4 and not flags & inner_mod.FRAGMENT
        sp, dp = (sport, dport) if ports else (-1, -1)
        if (src, sp) > (dst, dp):  # the order Accumulator gives the conversation (address table order)
            src, dst, sp, dp = dst, src, dp, sp
        addrs = store.addrs
        return conversation_filter(PROTO.get(proto, str(proto)), addrs[src], None if sp < 0 else sp, addrs[dst],
                                   None if dp < 0 else dp)
    if row.kind in ("ESP", "AH") and row.spi is not None:
        return sa_filter([row.spi], row.kind)
    if row.kind == "IKE" and row.ike_sa:
        return f"isakmp.ispi == {row.ike_sa.split('_')[0]}"
    if not row.src or not row.dst:
        return f"frame.number == {row.frame}"
    fam = "ipv6" if ":" in row.src else "ip"
    text = f"{fam}.addr == {row.src} && {fam}.addr == {row.dst}"
    if row.sport and row.dport:
        text += f" && udp.port == {row.sport} && udp.port == {row.dport}"
    return text
