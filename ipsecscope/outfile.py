"""Every file ipsecscope writes goes through here: decrypted cleartext, key files, TUI exports,
live captures.

Three promises, whatever the caller writes:

- **Never the input.** An output that is the same file as an input (same ``st_dev``/``st_ino``
  after symlinks, so ``-o link-to-input`` too) is refused before anything is opened.
- **Private from the first byte.** The data goes to a temporary file created in the target's
  directory with ``os.open(O_CREAT | O_EXCL | O_WRONLY, 0o600)``: no moment where another user
  can open it, whatever the umask or the mode of a file it replaces.
- **All or nothing.** Only a run that finishes renames the temporary file into place
  (``os.replace``, atomic on one filesystem). A failed or interrupted run removes it and leaves
  an existing file as it was. The rename replaces a symlink at the target, never the file it
  points to.

Use::

    from ipsecscope.outfile import atomic_output

    with atomic_output("out.pcapng", "wb", inputs=[capture]) as f:   # f: a normal file object
        f.write(...)
    # renamed into place here; on an exception the target is untouched and the exception goes on

    write_private("keys.json", text, inputs=[log])   # small files in one call

A target that already exists and is not a regular file (``/dev/null``, ``/dev/full``, a FIFO, a
terminal) is written in place: there is nothing to replace there, and renaming over a device
would be wrong. ``-`` (stdout) is the caller's business and never reaches this module.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import IO, Any

from .errors import ExportError

__all__ = ["atomic_output", "write_private", "refuse_inputs", "same_file", "create_private", "sigterm_unwinds"]

PathLike = "str | os.PathLike[str]"


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when ``a`` and ``b`` are one file (after symlinks); False if either does not exist."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def refuse_inputs(out: str | os.PathLike[str], inputs: Iterable[Any] = (), *, what: str = "output") -> None:
    """Raise :class:`ExportError` if ``out`` is the same file as one of ``inputs`` (paths; a
    directory stands for the files directly in it, as ``-k DIR`` reads them; other objects such
    as open streams or key stores are skipped)."""
    for src in inputs:
        if not isinstance(src, (str, os.PathLike)) or os.fspath(src) == "-":
            continue
        hits = [src]
        if os.path.isdir(src):
            try:
                hits = [e.path for e in os.scandir(src) if e.is_file()]
            except OSError:
                hits = []
        for h in hits:
            if same_file(out, h):
                raise ExportError(f"{what} {os.fspath(out)} is the input {os.fspath(h)}: "
                                  "writing it would destroy the input; choose another output file")


def _tmp_name(path: str) -> str:
    d, base = os.path.split(path)
    return os.path.join(d, f".{base}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def create_private(path: str | os.PathLike[str], mode: str = "wb", buffering: int = -1,
                   encoding: str | None = None) -> IO[Any]:
    """Open a new file ``path`` with mode 0600 that must not exist yet (O_EXCL: never follows a
    symlink planted there). For scratch files next to an output (worker parts)."""
    def excl(p: str, _flags: int) -> int:
        return os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o600)

    # open() with an opener, not os.open + os.fdopen: the descriptor has one owner, the file
    # object, which closes it once whenever it is dropped. A Ctrl-C handled just after io.open
    # returned inside os.fdopen (Python code) dropped the new file object, which closed the
    # descriptor, and then this function closed it again: EBADF, reported as "cannot write ...:
    # Bad file descriptor" with exit 1 instead of 130, the temporary file left behind, and in a
    # threaded process the second close could hit a descriptor another thread had just opened.
    try:
        return open(path, mode, buffering=buffering, encoding=encoding if "b" not in mode else None, opener=excl)
    except FileExistsError:  # O_EXCL: whatever is there is not ours
        raise
    except BaseException:
        # Created before the failure (an interrupt after open(2)): ours, since O_EXCL refused
        # anything already there. When nothing was created the unlink fails quietly.
        with suppress(OSError):
            os.unlink(path)
        raise


def _special(path: str) -> bool:
    """The target exists and is not a regular file or a symlink (a device, FIFO or socket)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except OSError:
            return False  # a dangling link: replace the link itself
    return not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode)


@contextmanager
def atomic_output(path: str | os.PathLike[str], mode: str = "wb", *, inputs: Iterable[Any] = (),
                  buffering: int = 1 << 20, encoding: str | None = "utf-8",
                  what: str = "output") -> Iterator[IO[Any]]:
    """A file object for ``path``, created 0600 as a temporary file in the same directory and
    renamed onto ``path`` when the block ends without an exception. ``inputs``: files that must
    not be the output (refused with :class:`ExportError`). ``mode`` is "wb" or "w"."""
    if mode not in ("wb", "w"):
        raise ValueError("atomic_output writes a new file: mode 'wb' or 'w'")
    target = os.fspath(path)
    refuse_inputs(target, inputs, what=what)
    if os.path.isdir(target):
        raise ExportError(f"{what} {target} is a directory; give a file name")
    enc = None if "b" in mode else encoding
    if _special(target):  # /dev/null, /dev/full, a FIFO: write in place, nothing to rename
        try:
            f = open(target, mode, buffering=buffering, encoding=enc)  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ExportError(f"cannot write {target}: {exc.strerror}; check the path and permissions") from None
        with f:
            yield f
        return
    tmp = _tmp_name(target)
    try:
        f = create_private(tmp, mode, buffering, enc)
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {exc.strerror}; check the directory and its permissions") from None
    try:
        with f:
            yield f
        os.replace(tmp, target)  # atomic; replaces a symlink at target, never what it points to
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``SystemExit(143)`` instead of killing the process
    outright, so ``atomic_output`` blocks unwind and remove their temporary files (`kill PID`
    must not leave a ``.NAME.*.tmp`` behind). A no-op outside the main thread."""
    import signal

    def _raise(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        old = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread (only it may set handlers): no threading import to ask
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def write_private(path: str | os.PathLike[str], data: str | bytes, *, inputs: Iterable[Any] = (),
                  what: str = "output") -> None:
    """Write ``data`` (text is UTF-8) to ``path`` atomically, mode 0600, never over an input. A
    failed write (a full disk, ``/dev/full``) is an :class:`ExportError` naming ``path``."""
    try:
        with atomic_output(path, "wb", inputs=inputs, what=what) as f:
            f.write(data.encode() if isinstance(data, str) else data)
    except OSError as exc:  # only the output is touched here: the error is about it
        raise ExportError(f"cannot write {os.fspath(path)}: {exc.strerror or exc}") from None
