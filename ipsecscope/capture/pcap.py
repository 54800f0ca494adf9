"""Classic libpcap files: microsecond and nanosecond magic, either byte order.

Format: https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-04.html — a 24-byte file header
(magic, version, thiszone, sigfigs, snaplen, link type) then records of a 16-byte header
(ts_sec, ts_frac, caplen, origlen) followed by ``caplen`` bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..errors import CaptureError
from ..model.packets import RawFrame
from ._fastnew import fast_constructor
from ._source import CHUNK, ByteSource
from .layout import pcap_record_limit

_RawFrame = fast_constructor(RawFrame)  # per-record constructor without the frozen-init cost

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
FILE_HEADER_LEN = 24
RECORD_HEADER_LEN = 16

FILE_HDR = {"<": struct.Struct("<IHHiIII"), ">": struct.Struct(">IHHiIII")}
REC_HDR = {"<": struct.Struct("<IIII"), ">": struct.Struct(">IIII")}


def sniff(head: bytes) -> tuple[str, bool] | None:
    """(byte order, nanosecond) when ``head`` starts with a pcap magic, else None."""
    if len(head) < 4:
        return None
    for order in "<>":
        (magic,) = struct.unpack(order + "I", head[:4])
        if magic == MAGIC_US:
            return order, False
        if magic == MAGIC_NS:
            return order, True
    return None


class PcapReader:
    """Iterator of :class:`RawFrame` over a pcap stream (see :func:`ipsecscope.capture.open_capture`)."""

    format = "pcap"

    def __init__(self, src: ByteSource, head: bytes) -> None:
        self._src = src
        self.path = src.path
        sn = sniff(head)
        if sn is None:  # pragma: no cover - open_capture only builds us after sniff()
            raise CaptureError(f"{src.path} is not a pcap file")
        self.byte_order, self.nanosecond = sn
        if len(head) < FILE_HEADER_LEN:
            raise CaptureError(
                f"{src.path}: pcap file header truncated ({len(head)} of {FILE_HEADER_LEN} bytes); "
                "the file was cut off — re-copy or re-capture it")
        _magic, self.version_major, self.version_minor, _zone, _sigfigs, snaplen, network = (
            FILE_HDR[self.byte_order].unpack_from(head, 0))
        self.snaplen = snaplen
        # Upper 16 bits of the link-type field may carry FCS length information (pcap draft §4).
        self.linktype = network & 0xFFFF
        self.linktypes = {0: self.linktype}
        self.limit = pcap_record_limit(snaplen)
        self._rec = REC_HDR[self.byte_order]
        self._buf = head[FILE_HEADER_LEN:]
        self._buf_base = FILE_HEADER_LEN  # stream offset of _buf[0]
        self.secrets: list[tuple[int, bytes]] = []
        self.truncated: str | None = None
        self.frames = 0
        self.total_bytes = src.total_bytes
        self.compressed = src.compressed

    @property
    def bytes_read(self) -> int:
        return self._src.consumed

    def __iter__(self) -> Iterator[RawFrame]:
        src = self._src
        unpack_from = self._rec.unpack_from
        buf = self._buf
        base = self._buf_base
        pos = 0
        index = self.frames
        limit = self.limit
        linktype = self.linktype
        mult = 1 if self.nanosecond else 1000
        keep_offset = not src.compressed
        need = RECORD_HEADER_LEN
        while True:
            n = len(buf)
            while n - pos >= 16:
                sec, frac, caplen, origlen = unpack_from(buf, pos)
                if caplen > limit:
                    raise CaptureError(
                        f"{self.path}: record {index + 1} at offset {base + pos} claims {caplen} bytes "
                        f"(more than the {limit}-byte maximum): the file is damaged after frame {index}")
                end = pos + 16 + caplen
                if end > n:
                    need = 16 + caplen
                    break
                index += 1
                ts_ns = sec * 1_000_000_000 + frac * mult
                self.frames = index
                yield _RawFrame(index, ts_ns / 1e9, ts_ns, linktype, buf[pos + 16:end], origlen, 0,
                               base + pos if keep_offset else -1)
                pos = end
                need = 16
            more = src.read(max(CHUNK, need))
            if not more:
                left = n - pos
                if left:
                    what = "record header" if left < 16 else f"record data ({left - 16} of {need - 16} bytes)"
                    self.truncated = f"frame {index + 1}: {what} cut off at end of file"
                if src.gzip_truncated and not self.truncated:
                    self.truncated = src.gzip_truncated
                elif src.gzip_truncated:
                    self.truncated += f" ({src.gzip_truncated})"
                return
            buf = buf[pos:] + more
            base += pos
            pos = 0

    def read_record_at(self, raw: bytes, offset: int, index: int = 0) -> RawFrame:
        """Decode the record whose bytes start ``raw`` (read from ``offset``)."""
        if len(raw) < 16:
            raise CaptureError(f"{self.path}: no pcap record at offset {offset}")
        sec, frac, caplen, origlen = self._rec.unpack_from(raw, 0)
        ts_ns = sec * 1_000_000_000 + frac * (1 if self.nanosecond else 1000)
        return RawFrame(index, ts_ns / 1e9, ts_ns, self.linktype, bytes(raw[16:16 + caplen]), origlen, 0, offset)

    def close(self) -> None:
        self._src.close()
