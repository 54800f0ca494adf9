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

from ..capture import pcap
from ..model.packets import Packet, RawFrame
from . import fastpath_base as _base  # tunables read at call time (tests patch them there)
from . import fastpath_ng
from .demux import Decoder
from .fastpath_base import (
    _FRAME,
    _IP_OR_TAG,
    _PORTS,
    _UDP_ESP,
    _V6_MAYBE_IPSEC,
    LAYOUTS,
    FlowStat,  # noqa: F401 - re-exported: cli/summary imports it from here
    FlowTable,
    ScanResult,
    _finish,
    _fork,
    _Part,
)


def _scan(read: Callable[[int], bytes], start: int, stop: int | None, order: str, linktype: int, limit: int,
          slow_cb: Callable[[int, int, int, int, bytes], None] | None, max_slow_bytes: int = 0) -> _Part:
    """Walk pcap records from stream offset ``start`` until ``stop`` (or EOF).

    Fast-path ESP frames are aggregated into ``part.esp`` / ``part.udp``; every other frame goes to
    ``slow_cb(index, sec, frac, origlen, data)`` or, without a callback, into ``part.slow``.
    Frame indexes are relative to ``start`` (the first record there is 1). ``read`` must be
    positioned at ``start``.
    """
    part = _Part()
    hdr = struct.Struct(order + "IIII").unpack_from
    layout = LAYOUTS.get(linktype)
    fast = layout is not None
    fr_s, ipo, vlan = layout if layout else (_FRAME, 14, -1)
    fr = fr_s.unpack_from
    need = fr_s.size
    uesp = _UDP_ESP.unpack_from
    ports = _PORTS.unpack_from
    esp = part.esp
    udp = part.udp
    over = part.over
    maxf = _base.MAX_FLOWS
    slow = part.slow
    idx = 0
    nother = 0
    slow_bytes = 0
    pos_base = start
    buf = b""
    p = 0
    remaining = None if stop is None else stop - start
    sec = frac = 0
    first = None
    while True:
        want = _base.READ_CHUNK if remaining is None else min(_base.READ_CHUNK, remaining)
        more = read(want) if want > 0 else b""
        if not more:
            break
        if remaining is not None:
            remaining -= len(more)
        buf = buf[p:] + more
        pos_base += p
        p = 0
        n = len(buf)
        if first is None and n >= 16:
            first = hdr(buf, 0)[:2]
        while p + 16 <= n:
            # (a cut-off record is not counted, so its time must not become the last one: it is
            # read into s2/f2 and taken as sec/frac only once the whole record is there)
            s2, f2, caplen, olen = hdr(buf, p)
            if caplen > limit:
                part.error = (f"record {idx + 1} at offset {pos_base + p} claims {caplen} bytes "
                              f"(more than the {limit}-byte maximum)")
                break
            q = p + 16
            e = q + caplen
            if e > n:
                part.cut_need = 16 + caplen  # (only read when the file ends here: the message names it)
                break
            sec = s2
            frac = f2
            idx += 1
            p = e
            if fast and caplen >= need:
                o = q
                et, vihl, tot, ff, proto, key, seq = fr(buf, q)
                if et == vlan and caplen >= need + 4:  # one 802.1Q tag
                    o = q + 4
                    et, vihl, tot, ff, proto, key, seq = fr(buf, o)
                if et == 0x0800 and vihl == 0x45 and not ff & 0x3FFF and 28 <= tot <= e - o - ipo:
                    if proto == 50:
                        rec = esp.get(key)
                        if rec is None:
                            if len(esp) + len(udp) < maxf:  # bounded per-flow state (fastpath_base.MAX_FLOWS)
                                esp[key] = [1, tot - 20, sec, frac, sec, frac, seq, seq, idx, idx]
                            else:
                                over[0] += 1
                                over[1] += tot - 20
                        else:
                            rec[0] += 1
                            rec[1] += tot - 20
                            rec[4] = sec
                            rec[5] = frac
                            if seq > rec[7]:
                                rec[7] = seq
                            elif seq < rec[6]:
                                rec[6] = seq
                            rec[9] = idx
                        continue
                    if proto == 17:
                        if tot < 36:
                            pass  # short UDP: let the generic decoder judge it
                        else:
                            sport, dport, ulen, spi, seq = uesp(buf, o + ipo + 20)
                            if sport == 4500 or dport == 4500:
                                # RFC 3948 §2: SPI 0 is the non-ESP marker (IKE) and a 1-byte payload
                                # may be a keepalive; those, and odd lengths, go to the generic decoder.
                                if spi and ulen >= 16 and ulen == tot - 20 and sport != 500 and dport != 500:
                                    k2 = (key, spi)
                                    rec = udp.get(k2)
                                    if rec is None:
                                        if len(esp) + len(udp) < maxf:  # bounded per-flow state (fastpath_base.MAX_FLOWS)
                                            udp[k2] = [1, ulen - 8, sec, frac, sec, frac, seq, seq, idx, idx]
                                        else:
                                            over[0] += 1
                                            over[1] += ulen - 8
                                    else:
                                        rec[0] += 1
                                        rec[1] += ulen - 8
                                        rec[4] = sec
                                        rec[5] = frac
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
                    if e - b >= 48 and buf[b] >> 4 == 6:
                        plen = (buf[b + 4] << 8) | buf[b + 5]
                        nh = buf[b + 6]
                        if 8 <= plen <= e - b - 40:
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
            # Everything else: the generic decoder.
            data = buf[q:e]
            if slow_cb is not None:
                slow_cb(idx, sec, frac, olen, data)
            else:
                slow.append((idx, sec, frac, olen, data))
                slow_bytes += caplen
                if max_slow_bytes and slow_bytes > max_slow_bytes:
                    part.gave_up = True
                    return part
        if part.error:
            break
    part.frames = idx
    # every fast-path packet is counted in exactly one flow record: no per-packet counter needed
    part.fast = sum(r[0] for r in esp.values()) + sum(r[0] for r in udp.values()) + over[0]
    part.other = nother
    part.end = pos_base + p
    part.leftover = len(buf) - p
    part.first = first if idx else None
    part.last = (sec, frac) if idx else None
    part.slow_bytes = slow_bytes
    return part


def find_boundary(f, offset: int, order: str, limit: int, nanosecond: bool, chain: int = 32,
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

        def slow(idx: int, sec: int, frac: int, olen: int, data: bytes) -> None:
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
                for idx, sec, frac, olen, data in second.slow:
                    slow(idx, sec, frac, olen, data)
                parts.append((second, part1.frames))
            elif not part1.error:
                # False resync or the child gave up: read on from where we stopped.
                src._f.seek(part1.end)  # uncompressed (we only split plain files)
                more = _scan(src.read, part1.end, None, order, linktype, limit, slow)
                parts.append((more, part1.frames))
        return _finish(res, parts, conv, src.gzip_truncated)
    finally:
        src.close()
