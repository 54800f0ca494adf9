"""The :mod:`ipsecscope.decode.fastpath` ESP accounting for pcapng (what dumpcap and Wireshark write).

Enhanced Packet Blocks on interfaces that share one link type (Ethernet, Linux cooked v1/v2) and
one timestamp resolution take the same
fixed-offset fast path as pcap records (the classification block below is a copy of the pcap
one: a function call per packet would cost a third of the loop). Everything else — other link
types or resolutions, Simple/obsolete Packet Blocks, packets on undeclared interfaces, non-ESP
traffic — goes to the generic decoder in capture order. A second Section Header Block hands the
rest of the file to the generic :class:`~ipsecscope.capture.pcapng.PcapngReader`.

Two processes: block boundaries are easy to verify (the trailing length repeats the leading one),
so the second process resyncs at the middle with a chain check, and gives up if it meets an
SHB or IDB (its interface table would be stale); the parent then reads on itself.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from ..capture import _source, pcapng
from ..errors import CaptureFormatError
from ..model.packets import Packet, RawFrame
from . import fastpath_base as _fp
from .demux import Decoder
from .fastpath_base import (
    _FRAME,
    _IP_OR_TAG,
    _PORTS,
    _UDP_ESP,
    _V6_MAYBE_IPSEC,
    FlowTable,
    ScanResult,
    _finish,
    _fork,
    _Part,
)

_KNOWN_BLOCKS = frozenset((pcapng.PB, pcapng.SPB, pcapng.EPB, 4, 5, pcapng.DSB))  # + NRB(4), ISB(5)


@dataclass
class NgState:
    """What the scanner knows about the current section: byte order and interfaces."""

    order: str
    ifaces: list[pcapng.Interface] = field(default_factory=list)
    fast: list[bool] = field(default_factory=list)  # per interface: Ethernet with the reference clock
    ref: tuple[int, int, int] | None = None  # (mul, div, offset_s) shared by all fast interfaces
    ref_lt: int = -1  # the one link type the fast loop reads (first interface with a fast layout)

    def add_iface(self, ifc: pcapng.Interface) -> None:
        self.ifaces.append(ifc)
        clock = (ifc.mul, ifc.div, ifc.offset_s)
        if ifc.linktype in _fp.LAYOUTS and self.ref is None:
            self.ref, self.ref_lt = clock, ifc.linktype
        self.fast.append(ifc.linktype == self.ref_lt and clock == self.ref)

    def ts_ns(self, hi: int, lo: int) -> int:
        mul, div, off = self.ref or (1000, 1, 0)
        return ((hi << 32) | lo) * mul // div + off * 1_000_000_000


def _scan_ng(read: Callable[[int], bytes], start: int, stop: int | None, st: NgState,
             slow_cb: Callable[[int, int, int, int, bytes, int], None] | None, max_slow_bytes: int = 0,
             child: bool = False, pre: bytes = b"") -> _Part:
    """Walk pcapng blocks from ``start`` (``pre`` = bytes already read from there) to ``stop``/EOF.

    ``slow_cb(index, ts_hi, ts_lo, origlen, data, iface)``; iface -1 = Simple Packet Block (no
    timestamp), -2 - n = obsolete Packet Block on interface n. ``part.first``/``last`` are
    (hi, lo, iface) of the first/last packet block. On a second SHB the scan stops with ``part.rest`` = the unread bytes.
    """
    part = _Part()
    order = st.order
    blk = struct.Struct(order + "II").unpack_from
    epbh = struct.Struct(order + "IIIIIII").unpack_from
    fr_s, ipo, vlan = _fp.LAYOUTS.get(st.ref_lt, (_FRAME, 14, -1))
    fr = fr_s.unpack_from
    need = fr_s.size
    uesp = _UDP_ESP.unpack_from
    ports = _PORTS.unpack_from
    esp = part.esp
    udp = part.udp
    over = part.over
    maxf = _fp.MAX_FLOWS
    slow = part.slow
    fastif = st.fast
    idx = 0
    nother = 0
    slow_bytes = 0
    pos_base = start
    buf = b""
    p = 0
    remaining = None if stop is None else stop - start - len(pre)
    first = None
    last = None
    pending = pre
    seen_shb = start > 0
    while True:
        if pending:
            more, pending = pending, b""
        else:
            want = _fp.READ_CHUNK if remaining is None else min(_fp.READ_CHUNK, remaining)
            more = read(want) if want > 0 else b""
            if not more:
                break
            if remaining is not None:
                remaining -= len(more)
        buf = buf[p:] + more
        pos_base += p
        p = 0
        n = len(buf)
        while p + 12 <= n:
            btype, blen = blk(buf, p)
            if btype == pcapng.SHB:  # the type reads the same in both byte orders
                if child:  # a new section: our interface table would be stale
                    part.gave_up = True
                    return part
                if seen_shb:
                    part.rest = buf[p:]
                    part.section_break = True
                    break
            if blen < 12 or blen & 3 or blen > pcapng.MAX_BLOCK:
                part.error = f"block of type 0x{btype:08x} with impossible length {blen} at offset {pos_base + p}"
                break
            e = p + blen
            if e > n:
                part.cut_need = blen  # (only read when the file ends here: the message names it)
                break
            if btype == 6 and blen >= 32:
                _t, _l, iface, hi, lo, caplen, olen = epbh(buf, p)
                q = p + 28
                p = e
                idx += 1
                if caplen > blen - 32:
                    caplen = blen - 32
                # an interface not declared yet has no clock: time 0, as the generic reader says
                # (not the clock of an IDB that comes later, which the summary would use otherwise)
                last = (hi, lo, iface) if iface < len(st.ifaces) else (0, 0, -1)
                if first is None:
                    first = last
                if iface < len(fastif) and fastif[iface]:
                    if caplen >= need:
                        o = q
                        et, vihl, tot, ff, proto, key, seq = fr(buf, q)
                        if et == vlan and caplen >= need + 4:  # one 802.1Q tag
                            o = q + 4
                            et, vihl, tot, ff, proto, key, seq = fr(buf, o)
                        if et == 0x0800 and vihl == 0x45 and not ff & 0x3FFF and 28 <= tot <= q + caplen - o - ipo:
                            if proto == 50:
                                rec = esp.get(key)
                                if rec is None:
                                    if len(esp) + len(udp) < maxf:  # bounded per-flow state (fastpath_base.MAX_FLOWS)
                                        esp[key] = [1, tot - 20, hi, lo, hi, lo, seq, seq, idx, idx]
                                    else:
                                        over[0] += 1
                                        over[1] += tot - 20
                                else:
                                    rec[0] += 1
                                    rec[1] += tot - 20
                                    rec[4] = hi
                                    rec[5] = lo
                                    if seq > rec[7]:
                                        rec[7] = seq
                                    elif seq < rec[6]:
                                        rec[6] = seq
                                    rec[9] = idx
                                continue
                            if proto == 17:
                                if tot >= 36:
                                    sport, dport, ulen, spi, seq = uesp(buf, o + ipo + 20)
                                    if sport == 4500 or dport == 4500:
                                        if spi and ulen >= 16 and ulen == tot - 20 and sport != 500 and dport != 500:
                                            k2 = (key, spi)
                                            rec = udp.get(k2)
                                            if rec is None:
                                                if len(esp) + len(udp) < maxf:  # bounded per-flow state (fastpath_base.MAX_FLOWS)
                                                    udp[k2] = [1, ulen - 8, hi, lo, hi, lo, seq, seq, idx, idx]
                                                else:
                                                    over[0] += 1
                                                    over[1] += ulen - 8
                                            else:
                                                rec[0] += 1
                                                rec[1] += ulen - 8
                                                rec[4] = hi
                                                rec[5] = lo
                                                if seq > rec[7]:
                                                    rec[7] = seq
                                                elif seq < rec[6]:
                                                    rec[6] = seq
                                                rec[9] = idx
                                            continue
                                    elif sport != 500 and dport != 500:
                                        nother += 1
                                        continue
                            elif proto == 6:
                                # TCP: only port 4500 can be RFC 8229; the rest is not ours (the generic decoder
                                # checks the same: a 20-byte header, then the ports).
                                if tot >= 40:
                                    sport, dport = ports(buf, o + ipo + 20)
                                    if sport != 4500 and dport != 4500:
                                        nother += 1
                                        continue
                            elif proto != 51:
                                nother += 1
                                continue
                        elif et == 0x86DD:
                            # IPv6 that is plainly not IPsec (no extension headers, consistent payload length):
                            # counted as other here, as the generic decoder would; anything else goes there.
                            b = o + ipo
                            if q + caplen - b >= 48 and buf[b] >> 4 == 6:
                                plen = (buf[b + 4] << 8) | buf[b + 5]
                                nh = buf[b + 6]
                                if 8 <= plen <= q + caplen - b - 40:
                                    if nh == 17:
                                        sport, dport = ports(buf, b + 40)
                                        if sport != 500 and sport != 4500 and dport != 500 and dport != 4500:
                                            nother += 1
                                            continue
                                    elif nh == 6:
                                        if plen >= 20:
                                            sport, dport = ports(buf, b + 40)
                                            if sport != 4500 and dport != 4500:
                                                nother += 1
                                                continue
                                    elif nh not in _V6_MAYBE_IPSEC:
                                        nother += 1
                                        continue
                        elif et not in _IP_OR_TAG and et != vlan:
                            nother += 1  # ARP, LLDP, ...: not IP at all
                            continue
                data = buf[q:q + caplen]
            elif btype == pcapng.SPB and blen >= 16:
                (olen,) = struct.unpack_from(order + "I", buf, p + 8)
                caplen = min(olen, blen - 16)
                if st.ifaces and st.ifaces[0].snaplen:
                    caplen = min(caplen, st.ifaces[0].snaplen)
                data = buf[p + 12:p + 12 + max(caplen, 0)]
                hi = lo = 0
                iface = -1
                p = e
                idx += 1
                last = (0, 0, -1)
                if first is None:
                    first = last
            elif btype == pcapng.PB and blen >= 32:
                iface, _d, hi, lo, caplen, olen = struct.unpack_from(order + "HHIIII", buf, p + 8)
                data = buf[p + 28:min(p + 28 + caplen, e - 4)]
                iface = -2 - iface
                p = e
                idx += 1
                last = (hi, lo, iface)
                if first is None:
                    first = last
            elif btype == pcapng.IDB or btype == pcapng.SHB:
                if child:
                    part.gave_up = True
                    return part
                if btype == pcapng.SHB:
                    seen_shb = True
                elif blen >= 20:
                    st.add_iface(pcapng._parse_idb(buf[p + 8:e - 4], order))
                    fr_s, ipo, vlan = _fp.LAYOUTS.get(st.ref_lt, (_FRAME, 14, -1))  # the first IDB sets it
                    fr = fr_s.unpack_from
                    need = fr_s.size
                else:
                    part.error = f"interface description block too short ({blen} bytes) at offset {pos_base + p}"
                    break
                p = e
                continue
            elif btype == 6 or btype == pcapng.SPB or btype == pcapng.PB:
                part.error = f"packet block too short ({blen} bytes) at offset {pos_base + p}"
                break
            else:  # DSB, NRB, ISB, custom: nothing for the summary
                p = e
                continue
            if slow_cb is not None:
                slow_cb(idx, hi, lo, olen, data, iface)
            else:
                slow.append((idx, hi, lo, olen, data, iface))
                slow_bytes += len(data)
                if max_slow_bytes and slow_bytes > max_slow_bytes:
                    part.gave_up = True
                    return part
        if part.error or part.section_break:
            break
    part.frames = idx
    # every fast-path packet is counted in exactly one flow record: no per-packet counter needed
    part.fast = sum(r[0] for r in esp.values()) + sum(r[0] for r in udp.values()) + over[0]
    part.other = nother
    part.end = pos_base + p
    part.leftover = 0 if part.section_break else len(buf) - p
    part.first = first
    part.last = last
    part.slow_bytes = slow_bytes
    return part


def find_boundary_ng(f, offset: int, order: str, chain: int = 16, window: int = 1 << 20) -> int | None:
    """A block boundary at or after ``offset``: ``chain`` blocks in a row of known packet-ish types
    whose trailing length repeats the leading one. Verified later by the parent's scan."""
    offset &= ~3  # blocks start on 4-byte boundaries
    f.seek(offset)
    buf = f.read(window + (1 << 20))
    blk = struct.Struct(order + "II").unpack_from
    u32 = struct.Struct(order + "I").unpack_from
    n = len(buf)
    for c in range(0, min(window, n), 4):
        p = c
        ok = 0
        while ok < chain and p + 12 <= n:
            btype, blen = blk(buf, p)
            if btype not in _KNOWN_BLOCKS or blen < 12 or blen & 3 or p + blen > n:
                break
            if u32(buf, p + blen - 4)[0] != blen:
                break
            p += blen
            ok += 1
        if ok >= chain or (ok and p == n):
            return offset + c
    return None


def _read_head_state(path: str) -> tuple[NgState, int] | None:
    """Interfaces declared before the first packet block, and where that block starts."""
    with open(path, "rb") as f:
        buf = f.read(1 << 20)
    if len(buf) < 12 or buf[:4] != b"\x0a\x0d\x0d\x0a":
        return None
    bom = buf[8:12]
    order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else None
    if order is None:
        return None
    st = NgState(order)
    blk = struct.Struct(order + "II").unpack_from
    p = 0
    while p + 12 <= len(buf):
        btype, blen = blk(buf, p)
        if blen < 12 or blen & 3 or p + blen > len(buf):
            return None
        if btype == pcapng.SHB and p:
            return None  # a second section before any packet: let the plain scan handle it
        if btype == pcapng.IDB and blen >= 20:
            st.add_iface(pcapng._parse_idb(buf[p + 8:p + blen - 4], order))
        elif btype in (pcapng.EPB, pcapng.SPB, pcapng.PB):
            return st, p
        p += blen
    return None


def scan_pcapng(path: str | os.PathLike[str], on_packet: Callable[[Packet], None], decoder: Decoder | None = None,
                *, workers: int = 2, flows: FlowTable | None = None) -> ScanResult:
    """:func:`ipsecscope.decode.fastpath.scan_capture` for pcapng."""
    path = os.fspath(path)
    decoder = decoder or Decoder()
    src = _source.ByteSource(path)
    try:
        head = src.read(12)
        if len(head) < 12 or head[:4] != b"\x0a\x0d\x0d\x0a":
            raise CaptureFormatError(f"{path} is not a pcapng file")
        bom = head[8:12]
        if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
            res = ScanResult(format="pcapng")
            res.error = "section header with a bad byte-order magic at offset 0"
            return res
        st = NgState("<" if bom == b"\x4d\x3c\x2b\x1a" else ">")
        res = ScanResult(format="pcapng")
        res.flows = flows if flows is not None else FlowTable()
        base = [0]

        def stamp(hi: int, lo: int, iface: int) -> tuple[int, int, int]:
            """(ts_ns, link type, interface) exactly as the generic reader computes them."""
            if iface == -1:  # SPB: no timestamp, interface 0
                return 0, st.ifaces[0].linktype if st.ifaces else -1, 0
            i = iface if iface >= 0 else -2 - iface
            if i < len(st.ifaces):
                return st.ifaces[i].ts_ns((hi << 32) | lo), st.ifaces[i].linktype, i
            return 0, -1, i

        def slow(idx: int, hi: int, lo: int, olen: int, data: bytes, iface: int) -> None:
            ts_ns, lt, i = stamp(hi, lo, iface)
            for pkt in decoder.decode_all(RawFrame(idx + base[0], ts_ns / 1e9, ts_ns, lt, data, olen, i)):
                on_packet(pkt)

        def conv(hi: int, lo: int, iface: int | None = None) -> float:
            if iface is None:  # flow records: always fast interfaces, the reference clock
                return st.ts_ns(hi, lo) / 1e9
            return stamp(hi, lo, iface)[0] / 1e9

        child = conn = None
        boundary = None
        if workers > 1 and not src.compressed and src.total_bytes >= _fp.SPLIT_MIN_BYTES:
            got = _read_head_state(path)
            if got is not None and any(got[0].fast):
                with open(path, "rb") as fb:
                    boundary = find_boundary_ng(fb, src.total_bytes // 2, got[0].order)
                if boundary is not None and boundary > got[1]:
                    child, conn = _fork(_scan_ng, path, boundary, (got[0], None, 256 << 20, True))
                else:
                    boundary = None
        part1 = _scan_ng(src.read, 0, boundary, st, slow, pre=head)
        parts = [(part1, 0)]
        if child is not None:
            second = conn.recv()
            child.join()
            ok = (isinstance(second, _Part) and not second.gave_up and part1.end == boundary
                  and part1.leftover == 0 and not part1.error and not part1.section_break
                  and st.fast == got[0].fast and st.ref == got[0].ref)
            base[0] = part1.frames
            if ok:
                res.workers = 2
                for item in second.slow:
                    slow(*item)
                parts.append((second, part1.frames))
            elif not part1.error and not part1.section_break:
                src._f.seek(part1.end)
                parts.append((_scan_ng(src.read, part1.end, None, st, slow), part1.frames))
        res = _finish(res, parts, conv, None)
        last = parts[-1][0]
        if last.section_break:
            # Another section (new byte order / interfaces): the generic reader takes the rest.
            rdr = pcapng.PcapngReader(src, last.rest)
            rdr.frames = res.frames
            try:
                for raw in rdr:
                    res.frames += 1
                    if res.first_ts is None:
                        res.first_ts = raw.ts
                    res.last_ts = raw.ts
                    for pkt in decoder.decode_all(raw):
                        on_packet(pkt)
            except Exception as exc:  # CaptureError: damaged block in the later section
                res.error = str(exc).removeprefix(f"{path}: ")
            if rdr.truncated and not res.error:
                res.truncated = rdr.truncated
        if src.gzip_truncated:
            res.truncated = (res.truncated + f" ({src.gzip_truncated})") if res.truncated else src.gzip_truncated
        return res
    finally:
        src.close()
