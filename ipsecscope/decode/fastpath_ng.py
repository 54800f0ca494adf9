"""The :mod:`ipsecscope.decode.fastpath` ESP accounting for pcapng (what dumpcap and Wireshark write).

Enhanced Packet Blocks on interfaces that share one link type (Ethernet, Linux cooked v1/v2) and
one timestamp resolution take the same
fixed-offset fast path as pcap records: one loop walks both formats and classifies their frames
(:mod:`~ipsecscope.decode.fastpath_loop`). Everything else — other link
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
from typing import BinaryIO

from ..capture import _source, pcapng
from ..errors import CaptureFormatError
from ..model.packets import Packet, RawFrame
from . import fastpath_base as _fp
from .demux import Decoder
from .fastpath_base import FlowTable, ScanResult, _finish, _fork, _Part
from .fastpath_loop import NgState, scan_records

_KNOWN_BLOCKS = frozenset((pcapng.PB, pcapng.SPB, pcapng.EPB, 4, 5, pcapng.DSB))  # + NRB(4), ISB(5)


def _scan_ng(read: Callable[[int], bytes], start: int, stop: int | None, st: NgState,
             slow_cb: Callable[[int, int, int, int, bytes, int], None] | None, max_slow_bytes: int = 0,
             child: bool = False, pre: bytes = b"") -> _Part:
    """Walk pcapng blocks from ``start`` (``pre`` = bytes already read from there) to ``stop``/EOF:
    the shared record loop (:func:`~ipsecscope.decode.fastpath_loop.scan_records`)."""
    return scan_records(read, start, stop, st, slow_cb, max_slow_bytes, child, pre)


def find_boundary_ng(f: BinaryIO, offset: int, order: str, chain: int = 16, window: int = 1 << 20) -> int | None:
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
        head = src.read(16)  # block type, length, byte-order magic, version
        if len(head) < 12 or head[:4] != b"\x0a\x0d\x0d\x0a":
            raise CaptureFormatError(f"{path} is not a pcapng file")
        bom = head[8:12]
        if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
            res = ScanResult(format="pcapng")
            res.error = "section header with a bad byte-order magic at offset 0"
            return res
        st = NgState("<" if bom == b"\x4d\x3c\x2b\x1a" else ">")
        pcapng.open_section(path, head, 0, st.order, 0)  # refuses an SHB version tshark cannot read
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
            rdr = pcapng.PcapngReader(src, last.rest, last.end)
            rdr.frames = res.frames
            try:
                for raw in rdr:
                    res.frames += 1
                    if res.first_ts is None:
                        res.first_ts = raw.ts
                    res.last_ts = raw.ts
                    for pkt in decoder.decode_all(raw):
                        on_packet(pkt)
            except CaptureFormatError:  # a later section of a version we cannot read: refused
                raise
            except Exception as exc:  # CaptureError: damaged block in the later section
                res.error = str(exc).removeprefix(f"{path}: ")
            if rdr.truncated and not res.error:
                res.truncated = rdr.truncated
        if src.gzip_truncated:
            res.truncated = (res.truncated + f" ({src.gzip_truncated})") if res.truncated else src.gzip_truncated
        res.warning = src.warning
        return res
    finally:
        src.close()
