"""capture stage: files (pcap, pcapng, gzip of either) to :class:`~ipsecscope.model.packets.RawFrame`.

See docs/ARCHITECTURE.md. Typical use::

    with open_capture("trace.pcapng.gz") as reader:
        for raw in reader:          # RawFrame, 1-based .index
            ...
        if reader.truncated:        # one line; the frames before the damage were delivered
            print(reader.truncated)

The format is detected from the content, never from the file name. Reading streams in 1 MiB
chunks, so memory does not grow with the file. ``RawFrame.offset`` is the record's byte offset in
an uncompressed file; :func:`read_frame_at` (or :meth:`CaptureReader.read_frame_at`) re-reads one
frame from there without scanning the file again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from ..errors import CaptureError, CaptureFormatError

if TYPE_CHECKING:
    import threading

    from ..model.packets import RawFrame
    from . import pcap, pcapng

# The readers (and the model they build) load on first use: ``capture.layout``, which the decrypt
# loop and the analysis loop read files with, is imported through this package, and a command
# that never opens a reader should not pay for them at start-up.


def __getattr__(name: str):
    if name in ("pcap", "pcapng", "_source"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["CaptureReader", "open_capture", "read_frame_at", "renumbered", "sniff_format"]

_KNOWN_OTHER = {
    b"\x50\x4b\x03\x04": "a zip archive (unzip it first)",
    b"\x42\x5a\x68": "a bzip2 file (bunzip2 it first)",
    b"\xfd\x37\x7a\x58": "an xz file (unxz it first)",
    b"\x28\xb5\x2f\xfd": "a zstd file (unzstd it first)",
    b"\x4d\x3c\xb2\xa1": "a pcap with an unusual magic",
    b"\xa1\xb2\xcd\x34": "a Kuznetzov/modified pcap (convert it with editcap -F pcap)",
    b"\x34\xcd\xb2\xa1": "a Kuznetzov/modified pcap (convert it with editcap -F pcap)",
    b"\x7f\x45\x4c\x46": "an ELF executable",
    b"\x25\x50\x44\x46": "a PDF document",
}


def _describe(head: bytes) -> str:
    for magic, what in _KNOWN_OTHER.items():
        if head.startswith(magic):
            return f"looks like {what}"
    if head[:5] in (b"<?xml", b"<pdml", b"<psml"):
        return "looks like XML (Wireshark PDML/PSML export?), not a capture"
    try:
        text = head[:64].decode("ascii")
        if text and all(c.isprintable() or c in "\r\n\t" for c in text):
            return "looks like text, not a capture"
    except UnicodeDecodeError:
        pass
    return "unknown format"


def sniff_format(head: bytes) -> str | None:
    """'pcap' / 'pcapng' for (decompressed) leading bytes, else None."""
    from . import pcap, pcapng

    if pcap.sniff(head):
        return "pcap"
    if pcapng.sniff(head):
        return "pcapng"
    return None


class CaptureReader:
    """Context manager and iterator of RawFrame; wraps a :class:`PcapReader`/:class:`PcapngReader`.

    Attributes: ``format`` ("pcap"/"pcapng"), ``compressed``, ``secrets`` (pcapng Decryption Secrets
    Blocks seen so far, ``(secrets_type, data)``), ``bytes_read`` / ``total_bytes`` (on-disk bytes,
    compressed size for gzip), ``truncated`` (one-line reason or None), ``frames`` (count so far),
    ``linktypes`` (interface -> link type).
    """

    def __init__(self, path: str | os.PathLike[str], follow: threading.Event | None = None) -> None:
        from . import pcap, pcapng
        from ._source import ByteSource

        self.path = os.fspath(path)
        src = ByteSource(self.path, follow)
        try:
            head = src.read(4096)
            if src.gzip_truncated and not head:
                raise CaptureFormatError(f"{self.path} is a gzip file that cannot be decompressed "
                                         f"({src.gzip_truncated})")
            fmt = sniff_format(head)
            if fmt == "pcap":
                while len(head) < pcap.FILE_HEADER_LEN:
                    more = src.read(pcap.FILE_HEADER_LEN - len(head))
                    if not more:
                        break
                    head += more
                self._impl: pcap.PcapReader | pcapng.PcapngReader = pcap.PcapReader(src, head)
            elif fmt == "pcapng":
                self._impl = pcapng.PcapngReader(src, head)
            else:
                shown = head[:8].hex(" ") if head else "nothing: the file is empty"
                gz = "gunzipped content " if src.compressed else ""
                raise CaptureFormatError(
                    f"{self.path} is not a pcap or pcapng file ({gz}starts with {shown}; {_describe(head)}); "
                    "give a capture written by tcpdump, Wireshark/tshark or dumpcap, or convert it with "
                    "`editcap -F pcapng IN OUT`")
        except BaseException:
            src.close()
            raise
        self.format = self._impl.format
        self.compressed = src.compressed
        self._src = src
        self.rereadable = src.rereadable  # False for stdin, a pipe, gzip: frames cannot be re-read by offset
        self._iter: Iterator[RawFrame] | None = None

    # ---- passthrough state ------------------------------------------------------------------
    @property
    def secrets(self) -> list[tuple[int, bytes]]:
        return self._impl.secrets

    @property
    def warning(self) -> str | None:
        """A one-line warning about the input (a decompression ratio no capture has), or None."""
        return self._src.warning

    @property
    def truncated(self) -> str | None:
        return self._impl.truncated

    @property
    def bytes_read(self) -> int:
        return self._impl.bytes_read

    @property
    def total_bytes(self) -> int:
        return self._impl.total_bytes

    @property
    def frames(self) -> int:
        return self._impl.frames

    @property
    def linktypes(self) -> dict[int, int]:
        return self._impl.linktypes

    @property
    def linktype(self) -> int | None:
        return self._impl.linktype

    @property
    def impl(self) -> pcap.PcapReader | pcapng.PcapngReader:
        return self._impl

    # ---- iteration --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[RawFrame]:
        if self._iter is None:
            self._iter = iter(self._impl)
        return self._iter

    def __next__(self) -> RawFrame:
        return next(iter(self))

    def close(self) -> None:
        self._impl.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def read_frame_at(self, offset: int, index: int = 0) -> RawFrame:
        """Re-read the frame whose record starts at ``offset`` (from ``RawFrame.offset``).

        Uses what this reader learnt (byte order, pcapng interfaces), so it works at any time after
        the frame was delivered; opens the file separately, so it does not disturb iteration.
        """
        if self.compressed or offset < 0:
            raise CaptureError(f"{self.path}: frames of a compressed capture cannot be re-read by offset; "
                               "gunzip the file for lazy access")
        from . import pcap, pcapng

        impl = self._impl
        with open(self.path, "rb") as f:
            f.seek(offset)
            if isinstance(impl, pcap.PcapReader):
                hdr = f.read(16)
                if len(hdr) < 16:
                    raise CaptureError(f"{self.path}: no pcap record at offset {offset}")
                caplen = impl._rec.unpack_from(hdr, 0)[2]
                return impl.read_record_at(hdr + f.read(min(caplen, impl.limit)), offset, index)
            section = impl.section_at(offset)
            if section is None:
                raise CaptureError(f"{self.path}: offset {offset} is before the first pcapng section")
            hdr = f.read(8)
            if len(hdr) < 8:
                raise CaptureError(f"{self.path}: no pcapng block at offset {offset}")
            blen = pcapng.BLK[section.order].unpack_from(hdr, 0)[1]
            if blen < 12 or blen > pcapng.MAX_BLOCK:
                raise CaptureError(f"{self.path}: no pcapng block at offset {offset}")
            return pcapng.frame_from_block(hdr + f.read(blen - 8), section, offset, index)


def renumbered(frames: Iterable[RawFrame], base: int) -> Iterator[RawFrame]:
    """``frames`` numbered after ``base`` earlier ones: a capture read after others into one
    session continues their numbering, as `mergecap -a` would (Session.load)."""
    from ..model.packets import RawFrame
    from ._fastnew import fast_constructor

    new = fast_constructor(RawFrame)
    for r in frames:
        yield new(r.index + base, r.ts, r.ts_ns, r.linktype, r.data, r.orig_len, r.iface, r.offset)


def open_capture(path: str | os.PathLike[str], follow: threading.Event | None = None) -> CaptureReader:
    """Open a pcap / pcapng / gzipped capture, detected by content. ``"-"`` is standard input;
    with ``follow``, the end of the file waits for more data until the event is set (``tail -f``).

    Raises :class:`~ipsecscope.errors.CaptureFormatError` for something that is not a capture and
    :class:`~ipsecscope.errors.CaptureError` when the file cannot be opened.
    """
    return CaptureReader(path, follow)


_READERS: dict[tuple[str, int, int], CaptureReader] = {}


def _layout_reader(path: str) -> CaptureReader:
    """A reader that has learnt the file's layout (pcap header / pcapng sections), cached per file."""
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    reader = _READERS.get(key)
    if reader is None:
        if len(_READERS) >= 8:
            old = _READERS.pop(next(iter(_READERS)))
            old.close()
        reader = _READERS[key] = CaptureReader(path)
    return reader


def read_frame_at(path: str | os.PathLike[str], offset: int, index: int = 0,
                  linktype: int | None = None) -> RawFrame:
    """Re-read one frame by record offset (``RawFrame.offset``) without a reader at hand.

    pcap: reads the one record. pcapng: the first call per file walks the blocks once up to
    ``offset`` to learn byte order, interfaces and timestamp resolution (cached, so later calls
    read one block). ``linktype`` is accepted for callers that stored it; the file's own value wins.
    """
    from . import pcapng

    path = os.fspath(path)
    reader = _layout_reader(path)
    impl = reader.impl
    if isinstance(impl, pcapng.PcapngReader) and not reader.compressed:
        # Walk forward until the block at ``offset`` is passed: IDBs come before the packets that use
        # them, so the section/interface table is then complete for this frame.
        walked = getattr(reader, "_walked", -1)
        if offset > walked:
            try:
                for raw in reader:
                    walked = raw.offset
                    if walked >= offset:
                        break
            except CaptureError:
                pass  # damage later in the file does not matter for a frame before it
            reader._walked = walked  # type: ignore[attr-defined]
    return reader.read_frame_at(offset, index)
