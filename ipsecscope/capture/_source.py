"""Byte sources under the capture readers: a plain file or a gzip stream, read in large chunks.

Readers pull chunks with :meth:`ByteSource.read` and keep their own buffer, so per-record cost is
one ``struct.unpack_from`` plus a slice. ``consumed`` is the number of bytes read from the file on
disk (compressed bytes for gzip), which is what a progress bar wants.
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from typing import TYPE_CHECKING, BinaryIO

from ..errors import CaptureError

if TYPE_CHECKING:
    import threading

CHUNK = 1 << 20  # 1 MiB: large enough to amortise read() calls, small enough to keep memory flat

GZIP_MAGIC = b"\x1f\x8b"


# Captures compress a few to one (ESP is random); 100:1 over 16 MiB is a file built to explode.
BOMB_RATIO = 100
BOMB_MIN_BYTES = 16 << 20


def bomb_warning(path: object, inflated: int, compressed: int) -> str | None:
    """The one-line warning for a gzip stream that has inflated ``inflated`` bytes from
    ``compressed`` so far, if that ratio is one no capture has (a gzip bomb), else None. Checked
    once per read window (:meth:`ByteSource.read`, decrypt's inflating copy), never per packet."""
    if inflated <= BOMB_MIN_BYTES or inflated <= BOMB_RATIO * max(compressed, 1):
        return None
    return (f"{path}: decompresses {inflated // max(compressed, 1):,}:1 so far — far beyond what captures "
            "compress to (a few to 1); a gzip bomb or a padded file? Reading on with bounded memory")
FOLLOW_POLL = 0.2  # seconds between looks at a followed file that has not grown


class ByteSource:
    """A capture opened for reading; transparently gunzips (detected by content, not name).

    ``path`` is a file, ``"-"`` for standard input, or a pipe (``<(ssh gw tcpdump -w -)``): a
    stream is read once, front to back (``rereadable`` is False, so nobody asks for a frame by
    offset later). With ``follow`` (a :class:`threading.Event`), reaching the end of the data waits
    for more, as ``tail -f`` does, until the event is set.
    """

    def __init__(self, path: str | os.PathLike[str], follow: threading.Event | None = None) -> None:
        self.path = os.fspath(path)
        self.follow = follow
        stream = self.path == "-"
        if not stream and os.path.exists(self.path) and not os.path.isdir(self.path):
            mode = os.stat(self.path).st_mode
            if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode):
                stream = True
            elif not stat.S_ISREG(mode):
                raise CaptureError(f"{self.path} is not a regular file, pipe or character device")
        try:
            if self.path == "-":
                # A duplicate of fd 0, so closing this source leaves sys.stdin alone.
                self._raw: BinaryIO = os.fdopen(os.dup(0), "rb", buffering=CHUNK)  # noqa: SIM115
            elif stream and stat.S_ISFIFO(os.stat(self.path).st_mode):
                # A named pipe with no writer would block open() forever; opened non-blocking, it
                # reads as empty instead (and says so), and a pipe with a writer reads normally.
                fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
                os.set_blocking(fd, True)
                self._raw = os.fdopen(fd, "rb", buffering=CHUNK)  # noqa: SIM115
            else:
                self._raw = open(self.path, "rb", buffering=CHUNK)  # noqa: SIM115 - closed in close()
        except IsADirectoryError:
            raise CaptureError(f"{self.path} is a directory, not a capture file") from None
        except FileNotFoundError:
            raise CaptureError(f"{self.path}: no such file") from None
        except PermissionError:
            raise CaptureError(f"{self.path}: permission denied (try sudo or fix the file mode)") from None
        self.stream = stream
        self.total_bytes = 0 if stream else os.fstat(self._raw.fileno()).st_size
        self._consumed = 0
        # peek, not read+seek: a pipe cannot seek back.
        head = self._raw.peek(2)[:2]  # type: ignore[attr-defined]
        while len(head) == 1:  # a pipe may hand over one byte first
            more = self._raw.peek(2)[:2]  # type: ignore[attr-defined]
            if len(more) <= len(head):
                break
            head = more
        self.compressed = head == GZIP_MAGIC
        if self.compressed and follow is not None:
            raise CaptureError(f"{self.path} is gzip-compressed: --follow reads an uncompressed capture "
                               "(tcpdump -w FILE writes one)")
        self._f: BinaryIO = gzip.GzipFile(fileobj=self._raw, mode="rb") if self.compressed else self._raw
        # Bytes of the decompressed stream handed out so far (= file offset when not compressed).
        self.position = 0
        self.gzip_truncated: str | None = None
        self.warning: str | None = None  # e.g. a decompression ratio no capture has (a gzip bomb)

    @property
    def rereadable(self) -> bool:
        """Can a frame be read again later from its offset (a plain file, not gzip, not a pipe)?"""
        return not self.stream and not self.compressed

    @property
    def consumed(self) -> int:
        """Bytes of the on-disk file read so far (for progress)."""
        if self.stream:
            return self._consumed
        try:
            return self._raw.tell() if not self._raw.closed else self.total_bytes
        except (OSError, ValueError):
            return self.total_bytes

    def read(self, n: int = CHUNK) -> bytes:
        """Up to ``n`` bytes; b"" at end of data. A cut-off or corrupt gzip stream ends the data and
        sets ``gzip_truncated`` (the frames before the damage are still delivered)."""
        if self.gzip_truncated is not None:
            return b""
        if not self.compressed:
            data = self._f.read1(n) if self.stream else self._f.read(n)  # type: ignore[attr-defined]
            while not data and self.follow is not None and not self.follow.is_set():
                # tail -f: the writer may still add records (a half-written one is kept by the
                # reader's buffer until the rest arrives).
                self.follow.wait(FOLLOW_POLL)
                data = self._f.read(n)
            self.position += len(data)
            self._consumed += len(data)
            return data
        # read1() in a loop: GzipFile.read(n) drops the bytes it already decompressed when the
        # stream turns out to be cut off, and those are the frames we want to deliver.
        parts = []
        got = 0
        read1 = self._f.read1  # type: ignore[attr-defined]
        while got < n:
            try:
                b = read1(n - got)
            except EOFError:
                self.gzip_truncated = "gzip stream ends early (file cut off while being copied?)"
                break
            except (zlib.error, gzip.BadGzipFile, OSError) as exc:
                self.gzip_truncated = f"gzip data corrupt ({exc})"
                break
            if not b:
                break
            parts.append(b)
            got += len(b)
            if self.stream:  # a pipe: hand over what has arrived rather than wait for a full chunk
                break
        data = b"".join(parts)
        self.position += len(data)
        if self.warning is None:
            self.warning = bomb_warning(self.path, self.position, self.consumed)
        return data

    def close(self) -> None:
        try:
            if self._f is not self._raw:
                self._f.close()
        finally:
            self._raw.close()
