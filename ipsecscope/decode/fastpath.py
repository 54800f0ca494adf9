"""Fast ESP accounting for large classic-pcap files (the hot path behind ``ipsecscope summary``).

Most frames in a big IPsec capture are Ethernet (maybe one 802.1Q tag) or Linux cooked (SLL,
SLL2) / IPv4 (no options, not fragmented) / ESP or UDP-4500 ESP. For those this module reads the fields it needs at fixed offsets with one
precompiled struct call, and aggregates per (src, dst, SPI) in a dict keyed by the raw address
and SPI bytes, without building any per-packet object. Every other frame (IKE, AH, keepalives,
VLANs, IPv6, fragments, anything odd) falls back to the generic :class:`~ipsecscope.decode.demux.Decoder`,
so results are the same as the generic path; the tests compare both.

Large uncompressed files are split in two halves scanned by two processes. The second process
finds a record boundary near the middle by checking that a chain of record headers is plausible;
the first process then *verifies* that boundary by walking exactly onto it, and if it does not
(a false resync), the second half's result is thrown away and the first process reads on to the
end. Frames the second process could not handle on the fast path are sent back raw and decoded
in order by the parent, so stateful decoding (IP reassembly, TCP streams) sees every frame in
capture order.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import BinaryIO

from ..capture import pcap
from ..model.packets import Packet, RawFrame
from . import fastpath_base as _base  # tunables read at call time (tests patch them there)
from . import fastpath_ng
from .demux import Decoder
from .fastpath_base import (
    FlowStat,  # noqa: F401 - re-exported: cli/summary imports it from here
    FlowTable,
    ScanResult,
    _finish,
    _fork,
    _Part,
)
from .fastpath_loop import PcapHead, scan_records


def _scan(read: Callable[[int], bytes], start: int, stop: int | None, order: str, linktype: int, limit: int,
          slow_cb: Callable[[int, int, int, int, bytes, int], None] | None, max_slow_bytes: int = 0) -> _Part:
    """Walk pcap records from stream offset ``start`` until ``stop`` (or EOF): the shared record
    loop (:func:`~ipsecscope.decode.fastpath_loop.scan_records`). ``read`` must be positioned at
    ``start``."""
    return scan_records(read, start, stop, PcapHead(order, linktype, limit), slow_cb, max_slow_bytes)


def find_boundary(f: BinaryIO, offset: int, order: str, limit: int, nanosecond: bool, chain: int = 32,
                  window: int = 1 << 20) -> int | None:
    """A record boundary at or after ``offset``: the first position from which ``chain`` record
    headers in a row look sane (lengths within limits, sub-second field in range, timestamps
    within an hour of each other). Verified later by the scanner of the preceding range."""
    f.seek(offset)
    buf = f.read(window + chain * (limit + 16))
    hdr = struct.Struct(order + "IIII").unpack_from
    frac_max = 1_000_000_000 if nanosecond else 1_000_000
    n = len(buf)
    for c in range(0, min(window, n)):
        p = c
        ok = 0
        prev = None
        while ok < chain:
            if p + 16 > n:
                break
            sec, frac, caplen, olen = hdr(buf, p)
            if caplen > limit or caplen > olen or olen > max(limit, 262144) or frac >= frac_max or caplen == 0:
                break
            if prev is not None and abs(sec - prev) > 3600:
                break
            prev = sec
            p += 16 + caplen
            ok += 1
        if ok >= chain or (ok and p == n):
            return offset + c
    return None


def scan_capture(path: str | os.PathLike[str], on_packet: Callable[[Packet], None], decoder: Decoder | None = None,
                 *, workers: int = 2, flows: FlowTable | None = None) -> ScanResult:
    """Account every frame of a pcap or pcapng file (plain or gzip), fast path first.

    ESP frames on the fast path are aggregated in the result's ``flows``; every other frame is
    decoded with ``decoder`` (one is made if not given) and each resulting packet is passed to
    ``on_packet`` in capture order (ESP/AH ones there are *not* added to ``flows``: the caller
    decides). Raises :class:`~ipsecscope.errors.CaptureFormatError` for a file that is neither;
    a damaged record is reported in ``error``, a cut-off one in ``truncated``.
    """
    from ..capture import _source, sniff_format

    src = _source.ByteSource(os.fspath(path))
    try:
        head = src.read(pcap.FILE_HEADER_LEN)
    finally:
        src.close()
    if sniff_format(head) == "pcapng":
        return fastpath_ng.scan_pcapng(path, on_packet, decoder, workers=workers, flows=flows)
    return scan_pcap(path, on_packet, decoder, workers=workers, flows=flows)


def scan_pcap(path: str | os.PathLike[str], on_packet: Callable[[Packet], None], decoder: Decoder | None = None,
              *, workers: int = 2, flows: FlowTable | None = None) -> ScanResult:
    """:func:`scan_capture` for classic pcap."""
    from ..capture import _source
    from ..errors import CaptureFormatError

    path = os.fspath(path)
    decoder = decoder or Decoder()
    src = _source.ByteSource(path)
    try:
        head = src.read(pcap.FILE_HEADER_LEN)
        sn = pcap.sniff(head)
        if sn is None:
            raise CaptureFormatError(f"{path} is not a pcap file")
        order, ns = sn
        rdr = pcap.PcapReader(src, head)  # raises CaptureError for a cut-off file header
        linktype, limit = rdr.linktype, rdr.limit
        mult = 1 if ns else 1000
        res = ScanResult()
        res.flows = flows if flows is not None else FlowTable()

        def conv(sec: int, frac: int) -> float:  # same arithmetic as the generic reader
            return (sec * 1_000_000_000 + frac * mult) / 1e9

        base = [0]  # frame number of the record before the range being decoded

        def slow(idx: int, sec: int, frac: int, olen: int, data: bytes, _iface: int = 0) -> None:
            ts_ns = sec * 1_000_000_000 + frac * mult
            for pkt in decoder.decode_all(RawFrame(idx + base[0], ts_ns / 1e9, ts_ns, linktype, data, olen)):
                on_packet(pkt)

        size = src.total_bytes
        child = conn = None
        boundary = None
        if workers > 1 and not src.compressed and size >= _base.SPLIT_MIN_BYTES:
            with open(path, "rb") as fb:
                boundary = find_boundary(fb, size // 2, order, limit, ns)
            if boundary is not None:
                child, conn = _fork(_scan, path, boundary, (order, linktype, limit, None, 256 << 20))
        # src is positioned right after the file header; its read() turns a cut-off gzip into EOF
        part1 = _scan(src.read, pcap.FILE_HEADER_LEN, boundary, order, linktype, limit, slow)
        parts = [(part1, 0)]
        if child is not None:
            second = conn.recv()
            child.join()
            ok = (isinstance(second, _Part) and not second.gave_up and part1.end == boundary
                  and part1.leftover == 0 and not part1.error)
            base[0] = part1.frames
            if ok:
                res.workers = 2
                # the child's slow frames, decoded in order after ours, numbered after ours
                for item in second.slow:
                    slow(*item)
                parts.append((second, part1.frames))
            elif not part1.error:
                # False resync or the child gave up: read on from where we stopped.
                src._f.seek(part1.end)  # uncompressed (we only split plain files)
                more = _scan(src.read, part1.end, None, order, linktype, limit, slow)
                parts.append((more, part1.frames))
        res.warning = src.warning
        return _finish(res, parts, conv, src.gzip_truncated)
    finally:
        src.close()
