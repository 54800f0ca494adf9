"""pcapng files (draft-ietf-opsawg-pcapng): sections, several interfaces with their own link type
and timestamp resolution, Enhanced/Simple/obsolete Packet Blocks, Decryption Secrets Blocks.

Every block is ``type(4) total_length(4) body total_length(4)``; the Section Header Block's
byte-order magic (0x1A2B3C4D) tells the endianness of everything up to the next SHB.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import CaptureError, CaptureFormatError
from ._fastnew import fast_constructor
from ._source import CHUNK, ByteSource

if TYPE_CHECKING:
    from ..model.packets import RawFrame

_RawFrame: Callable[..., Any] | None = None


def _frame_maker() -> Callable[..., Any]:
    """RawFrame's per-record constructor without the frozen-init cost, made when the first frame
    is read: the decrypt engine's layout scan and the key files' SHB check use this module without
    reading a frame, and model.packets' dataclasses cost ~6 ms of start-up (issue 15)."""
    global _RawFrame
    if _RawFrame is None:
        from ..model.packets import RawFrame

        _RawFrame = fast_constructor(RawFrame)
    return _RawFrame

SHB = 0x0A0D0D0A
IDB = 0x00000001
PB = 0x00000002  # obsolete Packet Block (pcapng draft Appendix A)
SPB = 0x00000003
EPB = 0x00000006
DSB = 0x0000000A
BYTE_ORDER_MAGIC = 0x1A2B3C4D
MAX_BLOCK = 1 << 26  # 64 MiB: anything bigger is damage, not data

OPT_ENDOFOPT = 0
IF_TSRESOL = 9
IF_TSOFFSET = 14

U32 = {"<": struct.Struct("<I"), ">": struct.Struct(">I")}
BLK = {"<": struct.Struct("<II"), ">": struct.Struct(">II")}
IDB_BODY = {"<": struct.Struct("<HHI"), ">": struct.Struct(">HHI")}
EPB_BODY = {"<": struct.Struct("<IIIII"), ">": struct.Struct(">IIIII")}
PB_BODY = {"<": struct.Struct("<HHIIII"), ">": struct.Struct(">HHIIII")}
OPT = {"<": struct.Struct("<HH"), ">": struct.Struct(">HH")}
I64 = {"<": struct.Struct("<q"), ">": struct.Struct(">q")}


def sniff(head: bytes) -> bool:
    return len(head) >= 4 and head[:4] == b"\x0a\x0d\x0d\x0a"


@dataclass(slots=True)
class Interface:
    """A pcapng interface (IDB): link type, snap length, timestamp units and offset."""

    linktype: int
    snaplen: int
    # timestamp units -> ns: ns = units * mul // div  (if_tsresol, default 10^-6)
    mul: int = 1000
    div: int = 1
    offset_s: int = 0  # if_tsoffset

    def ts_ns(self, units: int) -> int:
        return units * self.mul // self.div + self.offset_s * 1_000_000_000

    def fits_int64(self, max_units: int) -> bool:
        """Whether :meth:`ts_ns` of up to ``max_units`` can be computed in int64 (numpy). if_tsresol
        is one octet, so units may be as fine as 10^-127 or 2^-127 s: such a divisor, or a huge
        clock, needs Python integers."""
        return (max_units <= (1 << 62) // max(self.mul, 1) and self.div < (1 << 62)
                and abs(self.offset_s) < (1 << 30))


@dataclass(slots=True)
class Section:
    """A pcapng section: where its SHB is, its byte order and its interfaces."""

    offset: int
    order: str
    interfaces: list[Interface]


# The SHB versions tshark reads (wiretap's pcapng reader): 1.0, and 1.2, which old writers put in
# files of the same format. Another major version is an incompatible format, another minor one a
# format a 1.0 reader "cannot read all of" (the pcapng draft, §4.1): read as 1.0 it would be
# misparsed, so it is refused, as tshark refuses it.
READABLE_VERSIONS = ((1, 0), (1, 2))
VERSION = {"<": struct.Struct("<HH"), ">": struct.Struct(">HH")}


def version_error(path: object, buf: bytes | memoryview, pos: int, order: str, offset: int) -> CaptureFormatError | None:
    """The error for the SHB at ``buf[pos:]`` (whole, ``order`` from its byte-order magic; at
    ``offset`` in the file) if its version is not one tshark reads, else None."""
    if len(buf) - pos < 16:
        return None  # no room for a version: the length checks report the damage
    version = VERSION[order].unpack_from(buf, pos + 12)
    if version in READABLE_VERSIONS:
        return None
    return CaptureFormatError(f"{path}: pcapng section header at offset {offset} has version "
                              f"{version[0]}.{version[1]}; only version 1.0 (old writers mark it 1.2) can be read, "
                              "and tshark refuses it too")


def open_section(path: object, buf: bytes | memoryview, pos: int, order: str, offset: int) -> Section:
    """A new section for the SHB at ``buf[pos:]``, with an empty interface table; refuses a
    version other than 1.0 (:func:`version_error`). Every reader that meets an SHB calls this."""
    err = version_error(path, buf, pos, order, offset)
    if err is not None:
        raise err
    return Section(offset, order, [])


def _parse_idb(body: bytes | memoryview, order: str) -> Interface:
    linktype, _res, snaplen = IDB_BODY[order].unpack_from(body, 0)
    iface = Interface(linktype, snaplen)
    pos = 8
    opt = OPT[order]
    n = len(body)
    while pos + 4 <= n:
        code, length = opt.unpack_from(body, pos)
        if code == OPT_ENDOFOPT:
            break
        val = body[pos + 4:pos + 4 + length]
        if code == IF_TSRESOL and length >= 1:
            r = val[0]
            if r & 0x80:  # power of two: units of 2^-e seconds
                e = r & 0x7F
                iface.mul, iface.div = 1_000_000_000, 1 << e
            elif r <= 9:
                iface.mul, iface.div = 10 ** (9 - r), 1
            else:
                iface.mul, iface.div = 1, 10 ** (r - 9)
        elif code == IF_TSOFFSET and length >= 8:
            (iface.offset_s,) = I64[order].unpack_from(val, 0)
        pos += 4 + ((length + 3) & ~3)
    return iface


class PcapngReader:
    """Iterator of :class:`RawFrame` over a pcapng stream (see :func:`ipsecscope.capture.open_capture`)."""

    format = "pcapng"

    def __init__(self, src: ByteSource, head: bytes, offset: int = 0) -> None:
        self._src = src
        self._base = offset  # the file offset of head's first byte (a reader taking over mid-file)
        self.path = src.path
        self._buf = head
        self.secrets: list[tuple[int, bytes]] = []
        self.truncated: str | None = None
        self.frames = 0
        self.total_bytes = src.total_bytes
        self.compressed = src.compressed
        self.sections: list[Section] = []
        # iface index -> link type for the current section (callers show it; the frame carries it)
        self.linktypes: dict[int, int] = {}

    @property
    def bytes_read(self) -> int:
        return self._src.consumed

    @property
    def linktype(self) -> int | None:
        """Link type of interface 0 of the current section (None before the first IDB)."""
        return self.linktypes.get(0)

    def _damaged(self, what: str, offset: int) -> CaptureError:
        return CaptureError(f"{self.path}: {what} at offset {offset}: the file is damaged after frame "
                            f"{self.frames} (frames before it were read)")

    def __iter__(self) -> Iterator[RawFrame]:
        make = _frame_maker()
        src = self._src
        buf = self._buf
        base = self._base
        pos = 0
        index = self.frames
        keep_offset = not src.compressed
        order = "<"
        blk = BLK[order]
        section: Section | None = None
        ifaces: list[Interface] = []
        need = 12
        while True:
            n = len(buf)
            while n - pos >= 12:
                btype, blen = blk.unpack_from(buf, pos)
                if btype == SHB:
                    # Endianness comes from the byte-order magic right after the length.
                    bom = buf[pos + 8:pos + 12]
                    if bom == b"\x4d\x3c\x2b\x1a":
                        order = "<"
                    elif bom == b"\x1a\x2b\x3c\x4d":
                        order = ">"
                    else:
                        raise self._damaged("section header with a bad byte-order magic", base + pos)
                    blk = BLK[order]
                    btype, blen = blk.unpack_from(buf, pos)
                if blen < 12 or blen & 3 or blen > MAX_BLOCK:
                    raise self._damaged(f"block of type 0x{btype:08x} with impossible length {blen}",
                                        base + pos)
                end = pos + blen
                if end > n:
                    need = blen
                    break
                need = 12
                if section is None and btype != SHB:
                    raise self._damaged("block before the first section header", base + pos)
                if btype == EPB or btype == PB:
                    if btype == EPB:
                        if blen < 32:
                            raise self._damaged(f"enhanced packet block too short ({blen} bytes)", base + pos)
                        iface_id, hi, lo, caplen, origlen = EPB_BODY[order].unpack_from(buf, pos + 8)
                    else:
                        if blen < 32:
                            raise self._damaged(f"packet block too short ({blen} bytes)", base + pos)
                        iface_id, _drops, hi, lo, caplen, origlen = PB_BODY[order].unpack_from(buf, pos + 8)
                    data_end = min(pos + 28 + caplen, end - 4)
                    index += 1
                    self.frames = index
                    if iface_id < len(ifaces):
                        ifc = ifaces[iface_id]
                        ts_ns = ifc.ts_ns((hi << 32) | lo)
                        lt = ifc.linktype
                    else:  # the decoder reports this frame as malformed (layer "capture")
                        ts_ns, lt = 0, -1
                    yield make(index, ts_ns / 1e9, ts_ns, lt, buf[pos + 28:data_end], origlen, iface_id,
                               base + pos if keep_offset else -1)
                elif btype == SPB:
                    (origlen,) = U32[order].unpack_from(buf, pos + 8)
                    caplen = min(origlen, blen - 16)
                    if ifaces and ifaces[0].snaplen:
                        caplen = min(caplen, ifaces[0].snaplen)
                    index += 1
                    self.frames = index
                    lt = ifaces[0].linktype if ifaces else -1
                    yield make(index, 0.0, 0, lt, buf[pos + 12:pos + 12 + max(caplen, 0)], origlen, 0,
                               base + pos if keep_offset else -1)
                elif btype == IDB:
                    if blen < 20:
                        raise self._damaged(f"interface description block too short ({blen} bytes)", base + pos)
                    ifc = _parse_idb(buf[pos + 8:end - 4], order)
                    ifaces.append(ifc)
                    self.linktypes[len(ifaces) - 1] = ifc.linktype
                elif btype == SHB:
                    section = open_section(self.path, buf, pos, order, base + pos)
                    ifaces = section.interfaces
                    self.linktypes = {}
                    if keep_offset:
                        self.sections.append(section)
                elif btype == DSB and blen >= 20:
                    stype, slen = BLK[order].unpack_from(buf, pos + 8)
                    self.secrets.append((stype, bytes(buf[pos + 16:min(pos + 16 + slen, end - 4)])))
                # other blocks (NRB, ISB, custom, systemd journal...) are skipped
                pos = end
            more = src.read(max(CHUNK, need))
            if not more:
                left = n - pos
                if left:
                    self.truncated = (f"after frame {index}: last block cut off at end of file "
                                      f"({left} of {need if need > 12 else 'at least 12'} bytes)")
                if src.gzip_truncated:
                    self.truncated = (self.truncated + f" ({src.gzip_truncated})" if self.truncated
                                      else src.gzip_truncated)
                return
            buf = buf[pos:] + more
            base += pos
            pos = 0

    def section_at(self, offset: int) -> Section | None:
        i = bisect.bisect_right([s.offset for s in self.sections], offset) - 1
        return self.sections[i] if i >= 0 else None

    def close(self) -> None:
        self._src.close()


def frame_from_block(block: bytes, section: Section, offset: int, index: int = 0) -> RawFrame:
    """Decode one EPB/PB/SPB given its bytes and the section it lives in (for lazy re-reads)."""
    from ..model.packets import RawFrame

    order = section.order
    btype, blen = BLK[order].unpack_from(block, 0)
    ifaces = section.interfaces
    if btype in (EPB, PB):
        if btype == EPB:
            iface_id, hi, lo, caplen, origlen = EPB_BODY[order].unpack_from(block, 8)
        else:
            iface_id, _d, hi, lo, caplen, origlen = PB_BODY[order].unpack_from(block, 8)
        if iface_id < len(ifaces):
            ts_ns = ifaces[iface_id].ts_ns((hi << 32) | lo)
            lt = ifaces[iface_id].linktype
        else:
            ts_ns, lt = 0, -1
        data = bytes(block[28:min(28 + caplen, blen - 4)])
        return RawFrame(index, ts_ns / 1e9, ts_ns, lt, data, origlen, iface_id, offset)
    if btype == SPB:
        (origlen,) = U32[order].unpack_from(block, 8)
        caplen = min(origlen, blen - 16)
        return RawFrame(index, 0.0, 0, ifaces[0].linktype if ifaces else -1, bytes(block[12:12 + caplen]),
                        origlen, 0, offset)
    raise CaptureError(f"no packet block at offset {offset} (block type 0x{btype:08x})")
