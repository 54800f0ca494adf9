"""Byte sources under the capture readers: a plain file or a gzip stream, read in large chunks.

Readers pull chunks with :meth:`ByteSource.read` and keep their own buffer, so per-record cost is
one ``struct.unpack_from`` plus a slice. ``consumed`` is the number of bytes read from the file on
disk (compressed bytes for gzip), which is what a progress bar wants.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import BinaryIO

from ..errors import CaptureError

CHUNK = 1 << 20  # 1 MiB: large enough to amortise read() calls, small enough to keep memory flat

GZIP_MAGIC = b"\x1f\x8b"


class ByteSource:
    """A file opened for capture reading; transparently gunzips (detected by content, not name)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        if os.path.exists(self.path) and not os.path.isfile(self.path) and not os.path.isdir(self.path):
            # A FIFO, /dev/stdin on a pipe, <(zcat ...): the readers seek and re-open the file, so a
            # pipe would fail half-way or block forever. Say so before open() blocks on a FIFO.
            raise CaptureError(f"{self.path} is not a regular file (a pipe or device): save the capture to a "
                               "file first (tcpdump -w FILE), or capture live with `ipsecscope live -i IFACE`")
        try:
            self._raw: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except IsADirectoryError:
            raise CaptureError(f"{self.path} is a directory, not a capture file") from None
        except FileNotFoundError:
            raise CaptureError(f"{self.path}: no such file") from None
        except PermissionError:
            raise CaptureError(f"{self.path}: permission denied (try sudo or fix the file mode)") from None
        self.total_bytes = os.fstat(self._raw.fileno()).st_size
        head = self._raw.read(2)
        self._raw.seek(0)
        self.compressed = head == GZIP_MAGIC
        self._f: BinaryIO = gzip.GzipFile(fileobj=self._raw, mode="rb") if self.compressed else self._raw
        # Bytes of the decompressed stream handed out so far (= file offset when not compressed).
        self.position = 0
        self.gzip_truncated: str | None = None

    @property
    def consumed(self) -> int:
        """Bytes of the on-disk file read so far (for progress)."""
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
            data = self._f.read(n)
            self.position += len(data)
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
        data = b"".join(parts)
        self.position += len(data)
        return data

    def close(self) -> None:
        try:
            if self._f is not self._raw:
                self._f.close()
        finally:
            self._raw.close()
