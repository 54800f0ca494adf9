"""Where the records of an uncompressed pcap or pcapng file are, without reading them all:
the interfaces (link type, timestamp units), Decryption Secrets Blocks, the chunk bounds a
multi-process reader splits the file at, and a walk to the first record at or after a byte
offset. Used by the decrypt engine (:mod:`ipsecscope.export.engine`); capture knowledge, so it
lives here.

``scan(path, chunks)`` -> :class:`Layout` (or None: gzip, several sections, damage — read those
with :func:`ipsecscope.capture.open_capture`); ``resolve(layout, target, hint)`` -> the first
pcap record at or after ``target``; ``guess(layout, target)`` -> one found without the walk, to be
checked; ``records(map, layout, start, end)`` yields
(interface, ts_ns, frame, orig_len, offset).
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

# pcap's magic numbers as the file's first 4 bytes: (byte order, timestamp units -> ns)
PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000), b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1), b"\xa1\xb2\x3c\x4d": (">", 1),
}
# Same bound as Wireshark's WTAP_MAX_PACKET_SIZE_STANDARD: a record header claiming more than this
# (and more than the file's own snaplen) is garbage, not a big packet.
MAX_RECORD = 262144
MAX_RECORD_HARD = 1 << 24


def pcap_record_limit(snaplen: int) -> int:
    """The most bytes a pcap record of a file with ``snaplen`` may claim before it is damage."""
    return min(max(MAX_RECORD, snaplen), MAX_RECORD_HARD)

_SHB = b"\x0a\x0d\x0d\x0a"


@dataclass(slots=True)
class Iface:
    """A capture interface: link type and timestamp units."""

    linktype: int
    mul: int = 1000  # ts units -> ns: units * mul // div
    div: int = 1
    offset_s: int = 0


@dataclass
class Layout:
    """Where the records of a capture are; built by :func:`scan`."""

    path: str
    fmt: str  # "pcap" | "pcapng"
    order: str
    start: int  # offset of the first record/block after the file header / SHB
    size: int
    ifaces: list[Iface]
    secrets: list[tuple[int, bytes]] = field(default_factory=list)
    bounds: list[tuple[int, int]] = field(default_factory=list)  # (offset, frame index) chunk starts
    frames: int = 0
    truncated: str | None = None


# --- layout -----------------------------------------------------------------------------------

def scan(path: str | os.PathLike[str], chunks: int = 1, mark_every: int = 512) -> Layout | None:
    """Record layout of an uncompressed pcap/pcapng file, or None when the fast path cannot read
    it (gzip, several pcapng sections, damage): the caller then uses the general reader."""
    path = str(path)
    with open(path, "rb") as f:
        head = f.read(28)
        if head[:2] == b"\x1f\x8b" or len(head) < 24:
            return None
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return None
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        if head[:4] in PCAP_MAGIC:
            return _scan_pcap(path, mm, size, chunks, mark_every)
        if head[:4] == _SHB:
            return _scan_pcapng(path, mm, size, chunks, mark_every)
        return None
    finally:
        mm.close()


def _bounds(offsets_every: list[tuple[int, int]], size: int, chunks: int) -> list[tuple[int, int]]:
    if chunks <= 1 or not offsets_every:
        return offsets_every[:1]
    out = [offsets_every[0]]
    step = size / chunks
    want = step
    for off, idx in offsets_every[1:]:
        if off >= want:
            out.append((off, idx))
            want = off + step
    return out


def _scan_pcap(path: str, mm: mmap.mmap, size: int, chunks: int, every: int) -> Layout:
    order, mul = PCAP_MAGIC[mm[:4]]
    linktype = struct.unpack_from(order + "I", mm, 20)[0] & 0xFFFF
    lay = Layout(path, "pcap", order, 24, size, [Iface(linktype, mul)])
    # No walk over the records here: a worker finds its first record itself (resolve), in
    # parallel with the others, as the first record starting at or after its byte target. The
    # loops note a truncated last record.
    lay.bounds = [(24, 1)] + [(24 + t, 0) for t in _lazy_targets(size - 24, max(chunks, 1))]
    if every == 1 or os.environ.get("IPSECSCOPE_EXACT_BOUNDS"):
        return _walk_pcap(lay, mm, size, chunks, every)
    return lay


WALK_COST = 0.06  # walking a record header vs decrypting the record, per byte (measured, GCM 0.065, CBC 0.045)


def _lazy_targets(size: int, chunks: int) -> list[int]:
    """Byte targets of chunks 1.. of a pcap: all chunks start together and chunk k first walks
    the record headers before its target, so chunk k + 1 starts where the k processes before it
    are equally busy: t_1 = c, t_(k+1) = t_k (1 - r) + c with r = WALK_COST, c chosen so that
    t_chunks = size (plain equal parts when r = 0; chunk 0 gets 52 % of 2)."""
    if chunks <= 1:
        return []
    q = 1 - WALK_COST
    c = size * WALK_COST / (1 - q ** chunks)
    return [int(c * (1 - q ** k) / WALK_COST) for k in range(1, chunks)]


def _walk_pcap(lay: Layout, mm: mmap.mmap, size: int, chunks: int, every: int) -> Layout:
    """Exact chunk bounds by walking every record header (tests use it to place bounds finely)."""
    order = lay.order
    rec = struct.Struct(order + "I")
    off, idx = 24, 1
    marks = []
    released = 0
    while off + 16 <= size:
        if idx % every == 1 or every == 1:
            marks.append((off, idx))
        if not idx & 0xFFF:  # touching every record header would make the whole file resident
            page = off & ~(mmap.PAGESIZE - 1)
            mm.madvise(mmap.MADV_DONTNEED, released, page - released)
            released = page
        incl = rec.unpack_from(mm, off + 8)[0]
        if off + 16 + incl > size:
            lay.truncated = f"last record (frame {idx}) truncated: {size - off - 16} of {incl} bytes"
            break
        off += 16 + incl
        idx += 1
    lay.frames = idx - 1
    lay.size = off if lay.truncated is None else off
    lay.bounds = _bounds(marks, off, chunks)
    return lay


def _scan_pcapng(path: str, mm: mmap.mmap, size: int, chunks: int, every: int) -> Layout | None:
    from .pcapng import _parse_idb, open_section  # the capture stage's SHB and IDB parsers

    bom = mm[8:12]
    order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else None
    if order is None:
        return None
    open_section(path, mm, 0, order, 0)  # refuses an SHB version tshark cannot read (a later SHB: None below)
    blk = struct.Struct(order + "II")
    shb_len = blk.unpack_from(mm, 0)[1]
    lay = Layout(path, "pcapng", order, shb_len, size, [])
    off, idx = shb_len, 1
    released = 0
    marks = []
    while off + 12 <= size:
        btype, blen = blk.unpack_from(mm, off)
        if blen < 12 or blen % 4 or off + blen > size:
            lay.truncated = f"block at offset {off} truncated or damaged"
            break
        if btype in (6, 3, 2):
            if idx % every == 1 or every == 1:
                marks.append((off, idx))
            if not idx & 0xFFF:
                page = off & ~(mmap.PAGESIZE - 1)
                mm.madvise(mmap.MADV_DONTNEED, released, page - released)
                released = page
            idx += 1
        elif btype == 1:
            if blen < 20:  # no room for link type and snaplen: the general reader reports the damage
                return None
            i = _parse_idb(mm[off + 8:off + blen - 4], order)
            lay.ifaces.append(Iface(i.linktype, i.mul, i.div, i.offset_s))
        elif btype == 0x0A:
            stype, slen = blk.unpack_from(mm, off + 8)
            lay.secrets.append((stype, bytes(mm[off + 16:off + 16 + slen])))
        elif btype == 0x0A0D0D0A:
            return None  # a second section: leave it to the general reader
        off += blen
    if not lay.ifaces:  # no usable IDB (damaged?): the general reader marks each packet's interface
        return None
    if off < size and lay.truncated is None:  # 1..11 bytes left: a block header cut off
        lay.truncated = f"block at offset {off} truncated: {size - off} of at least 12 header bytes"
    lay.frames = idx - 1
    lay.size = off
    lay.bounds = _bounds(marks, off, chunks)
    return lay


def resolve(lay: Layout, target: int, hint: tuple[int, int] | None = None) -> tuple[int, int]:
    """(offset, frame index) of the first pcap record that starts at or after ``target``,
    walking from ``hint`` (a known record start at or before ``target``) or the first record.

    The walk reads 1 MiB windows into bytes and counts records with the for loop's own counter:
    half the time of unpacking from the map with a Python counter (it is the head start every
    later chunk pays, see WALK_COST)."""
    rec = struct.Struct(lay.order + "I").unpack_from
    off, idx = hint if hint is not None else (lay.start, 1)
    size = lay.size
    with open(lay.path, "rb", buffering=0) as f:
        fd = f.fileno()
        while off < target and off + 16 <= size:
            w = os.pread(fd, 1 << 20, off)
            t = min(target - off, len(w) - 15)  # walk records starting before t (whole length field in w)
            if t <= 0:
                break
            o = n = 0
            for n in itertools.count(idx):  # noqa: B007 - the loop always ends in the break: n is the count
                if o >= t:
                    break
                o += 16 + rec(w, o + 8)[0]
            off, idx = off + o, n
    return min(off, size), idx


def guess(lay: Layout, target: int, chain: int = 16) -> int | None:
    """A pcap record start at or after ``target`` found without walking from the file's start:
    the first offset from which ``chain`` record headers follow one another plausibly (fraction
    of a second in range, captured length within the snapshot length and not above the original
    length, seconds within a day of the previous record's), or reach the end of the file exactly.
    None when there is none within a record's reach of ``target``.

    Only a guess: bytes inside a packet can look like records. The decrypt engine checks it
    against where the walk of the chunk before stopped and processes the chunk again from there
    when they differ (``export.engine``); it saves that walk (~0.2 us a record, a second process's
    head start) when they agree, as they do on every capture of real traffic."""
    if lay.fmt != "pcap":
        return None
    size = lay.size
    with open(lay.path, "rb", buffering=0) as f:
        head = os.pread(f.fileno(), 24, 0)
        w = os.pread(f.fileno(), 1 << 20, target)
    if len(head) < 24:
        return None
    cap = max(struct.unpack_from(lay.order + "I", head, 16)[0], 262144)
    fmax = 1_000_000 if lay.ifaces[0].mul == 1000 else 1_000_000_000
    hdr = struct.Struct(lay.order + "IIII").unpack_from
    n = len(w)
    for p in range(min(n - 16, cap + 16)):
        o, prev = p, -1
        for _ in range(chain):
            if target + o == size:
                break  # the chain ends with the file: plausible
            if o + 16 > n:
                o = -1
                break
            sec, frac, incl, orig = hdr(w, o)
            if frac >= fmax or incl > cap or incl > orig or (prev >= 0 and abs(sec - prev) > 86400):
                o = -1
                break
            prev = sec
            o += 16 + incl
            if target + o > size:
                o = -1
                break
        if o >= 0:
            return target + p
    return None


def records(mm: mmap.mmap | bytes, lay: Layout, start: int, end: int) -> Iterator[tuple[int, int, bytes, int, int]]:
    """(iface, ts_ns, frame bytes, orig_len, offset) for records in [start, end)."""
    if lay.fmt == "pcap":
        rec = struct.Struct(lay.order + "IIII")
        unpack = rec.unpack_from
        mul = lay.ifaces[0].mul
        off = start
        while off + 16 <= end:
            sec, frac, incl, orig = unpack(mm, off)
            o2 = off + 16 + incl
            if o2 > end:
                return
            yield 0, sec * 1_000_000_000 + frac * mul, mm[off + 16:o2], orig, off
            off = o2
        return
    blk = struct.Struct(lay.order + "II")
    epb = struct.Struct(lay.order + "IIIII")
    u32 = struct.Struct(lay.order + "I")
    ifaces = lay.ifaces
    off = start
    while off + 12 <= end:
        btype, blen = blk.unpack_from(mm, off)
        if blen < 12:
            return
        if btype == 6:
            iface, hi, lo, incl, orig = epb.unpack_from(mm, off + 8)
            i = ifaces[iface] if iface < len(ifaces) else None
            ts = ((hi << 32) | lo) * i.mul // i.div + i.offset_s * 1_000_000_000 if i else 0
            yield iface, ts, mm[off + 28:off + 28 + incl], orig, off
        elif btype == 3:
            orig = u32.unpack_from(mm, off + 8)[0]
            n = min(orig, blen - 16)
            yield 0, 0, mm[off + 12:off + 12 + n], orig, off
        elif btype == 2:
            iface = struct.unpack_from(lay.order + "H", mm, off + 8)[0]
            hi, lo, incl, orig = struct.unpack_from(lay.order + "IIII", mm, off + 12)
            i = ifaces[iface] if iface < len(ifaces) else None
            ts = ((hi << 32) | lo) * i.mul // i.div if i else 0
            yield iface, ts, mm[off + 28:off + 28 + incl], orig, off
        off += blen


__all__ = ["Iface", "Layout", "records", "resolve", "scan"]
