"""The decrypt loop's output written around the page cache (``O_DIRECT``), in aligned 4 MiB
pieces from one staging buffer (issue 15).

Why: ``decrypt -o`` writes about as many bytes as it reads. Through the page cache every output
byte is copied by the kernel into a page-cache page the file has never had; on the project's
virtual machines a fresh page costs the guest kernel ~2 ns a byte (the host backs it on first
touch), 0.3-0.8 s of system CPU for the 360 MB a 1M-packet capture decrypts to, as much as the
whole user-space loop. With ``O_DIRECT`` the device reads the bytes straight from this process's
staging buffer, whose pages stay mapped from one piece to the next: measured here, 377 MB in
0.015 s of CPU instead of 0.3-0.8 s, and less wall time too. The file's bytes are the same; only
the page cache does not keep a copy of them.

``O_DIRECT`` wants the buffer, the length and the file offset aligned (4096 covers every logical
block size Linux uses). The stream's first bytes (the section and interface blocks the writer
wrote through the buffered file object) are read back and written again with the first piece, so
every direct write starts at an aligned offset; the last piece (< 4 MiB, any length) goes through
the page cache, and the file object carries on after it (``finish``). A file system that refuses
``O_DIRECT`` (tmpfs before Linux 6.6, some FUSE file systems), a file opened for appending, a
pipe or ``/dev/null``: :func:`open_direct` returns None and the loop writes as before.

The bulk step (export/bulk.py) plans a window's output straight into the staging buffer
(:meth:`DirectOut.reserve`, then :meth:`DirectOut.commit`) instead of handing it to ``write`` to
be copied there: -9 ms (2.4 %) of CPU at 200k AES-GCM packets (perfio notes).
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from collections.abc import Iterable
from typing import BinaryIO

ALIGN = 4096  # O_DIRECT alignment of buffer, length and offset (the largest logical block size)
STAGE = 4 << 20  # bytes per direct write (and the staging buffer's size)
MIN_BYTES = 16 << 20  # smaller captures: the set-up (two opens, a read back, a 4 MiB map) is not worth it


class DirectOut:
    """``write``/``writelines`` like the buffered file it continues, then ``finish()`` (or
    ``close()`` after an error, which writes nothing more)."""

    __slots__ = ("f", "fd", "dfd", "mm", "mv", "fill", "pos")

    def __init__(self, f, dfd: int, head: bytes, pos: int) -> None:
        self.f = f
        self.fd = f.fileno()
        self.dfd = dfd  # the O_DIRECT descriptor, or -1 once the file system refused a write
        self.mm = stage_map(STAGE)  # page-aligned, and its pages stay ours from piece to piece
        self.mv = memoryview(self.mm)
        self.mv[:len(head)] = head
        self.fill = len(head)
        self.pos = pos  # the file offset of the staging buffer's first byte (aligned)

    def write(self, b: bytes | bytearray | memoryview) -> None:
        fill = self.fill
        n = len(b) if type(b) is bytes else memoryview(b).nbytes
        if fill + n < STAGE:
            self.mv[fill:fill + n] = b
            self.fill = fill + n
            return
        b = memoryview(b).cast("B")
        o = 0
        while o < n:
            k = min(n - o, STAGE - self.fill)
            self.mv[self.fill:self.fill + k] = b[o:o + k]
            self.fill += k
            o += k
            if self.fill == STAGE:
                self._put(STAGE, self.dfd)
                self.fill = 0

    def reserve(self, n: int) -> memoryview | None:
        """The next ``n`` bytes of the stream as a view of the staging buffer, for the caller to
        fill in and then :meth:`commit` (nothing may be written in between), or None when the
        buffer cannot hold them. What is staged is written first as far as it is aligned, and the
        rest (< 4 KiB) moved to the buffer's start: the bulk step plans every window's output into
        the same first megabyte, which the last window left in the cache (planned into the next
        megabyte of the 4 MiB buffer instead, its writes miss the cache and cost what the copy
        saved; 80 direct writes of 1 MiB instead of 20 of 4 MiB cost ~3 ms more of system CPU at
        200k packets, planning in place saves ~9 ms in all, export/bulk.py)."""
        fill = self.fill
        if fill >= ALIGN or fill + n > STAGE:
            cut = fill & ~(ALIGN - 1)
            if cut:
                self._put(cut, self.dfd)
                self.mv[:fill - cut] = self.mv[cut:fill]
                self.fill = fill = fill - cut
            if fill + n > STAGE:
                return None
        return self.mv[fill:fill + n]

    def commit(self, n: int) -> None:
        """The first ``n`` bytes of :meth:`reserve`'s view are filled in: the stream goes on after them."""
        self.fill += n

    def writelines(self, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        for p in pieces:
            self.write(p)

    def append_file(self, path: str) -> None:
        """Append the file ``path`` (a worker's part), read around the page cache too when its
        file system allows: the part was written that way, so the page cache has none of it."""
        flag = getattr(os, "O_DIRECT", 0)
        try:
            rfd = os.open(path, os.O_RDONLY | flag | os.O_CLOEXEC)
        except OSError:
            rfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        rm = stage_map(STAGE)  # O_DIRECT reads want an aligned buffer too
        rv = memoryview(rm)
        try:
            while True:
                try:
                    k = os.readv(rfd, [rm])
                except OSError as exc:
                    if exc.errno != errno.EINVAL or not flag:
                        raise
                    import fcntl

                    fl = fcntl.fcntl(rfd, fcntl.F_GETFL)  # refused after all: read through the page cache
                    fcntl.fcntl(rfd, fcntl.F_SETFL, fl & ~flag)
                    flag = 0
                    continue
                if not k:
                    break
                self.write(rv[:k])
        finally:
            rv.release()
            rm.close()
            os.close(rfd)

    def _put(self, n: int, fd: int) -> None:
        """The first ``n`` bytes of the staging buffer to the file at ``self.pos``."""
        done = 0
        while done < n:
            try:
                k = os.pwrite(fd if fd >= 0 else self.fd, self.mv[done:n], self.pos + done)
            except OSError as exc:
                if fd >= 0 and exc.errno == errno.EINVAL:  # refused after all: the page cache from now on
                    self._drop()
                    fd = -1
                    continue
                raise
            if k <= 0:
                raise OSError(errno.EIO, "write made no progress")
            done += k
            if fd >= 0 and done % ALIGN:  # (a short direct write: the rest through the page cache)
                fd = -1
        self.pos += n

    def finish(self) -> None:
        """Write what is staged (through the page cache: any length) and leave the file object
        positioned after it."""
        if self.fill:
            self._put(self.fill, -1)
            self.fill = 0
        self.f.seek(self.pos)
        self.close()

    def close(self) -> None:
        self._drop()
        if self.mv is not None:
            self.mv.release()
            try:
                self.mm.close()
            except BufferError:  # a reserved view held by an exception's traceback: unmapped when it goes
                pass
            self.mv = None

    def _drop(self) -> None:
        if self.dfd >= 0:
            os.close(self.dfd)
            self.dfd = -1


def stage_map(size: int) -> mmap.mmap:
    """A private anonymous map of ``size`` bytes (page-aligned, as O_DIRECT wants) in transparent
    huge pages where the kernel gives them on request (Linux's default THP mode, ``madvise``; a
    shared map, mmap's default, is shmem, which gets none): 2 page faults instead of 1024 for the
    4 MiB, and each direct write pins a huge page or two instead of 256 pages. 84 writes of 1 MiB
    from the buffer's first megabyte, each after a 1 MiB copy into it: 10.3-11.3 ms of CPU
    instead of 13.7-18.0 (min-median of 8, issue 15)."""
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    mm = mmap.mmap(-1, size, flags=flags) if flags else mmap.mmap(-1, size)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            mm.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # (a kernel without THP: ordinary pages)
            pass
    return mm


def open_direct(f: BinaryIO) -> DirectOut | None:
    """A :class:`DirectOut` that continues the buffered binary file ``f`` (flushed first), or None
    when ``f`` is not a regular file this process can reopen with ``O_DIRECT``."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        fd = f.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        import fcntl  # (POSIX only, as O_DIRECT is)

        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:  # pwrite would append
            return None
        f.flush()
        pos = f.tell()
    except (AttributeError, OSError, ValueError):
        return None
    head_at = pos & ~(ALIGN - 1)
    try:
        # a second open file description of the same file (not dup: O_DIRECT is per description)
        dfd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | flag | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        head = b""
        if pos > head_at:  # the stream's unaligned beginning, rewritten with the first piece
            rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                head = os.pread(rfd, pos - head_at, head_at)
            finally:
                os.close(rfd)
            if len(head) != pos - head_at:
                raise OSError(errno.EIO, "short read")
        return DirectOut(f, dfd, head, head_at)
    except OSError:
        os.close(dfd)
        return None
