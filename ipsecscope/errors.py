"""Typed errors. Every message says what was wrong and what to do about it.

Exception tree::

    IpsecscopeError
    ├── CaptureError            the file is not a capture we can read, or is truncated
    │   └── CaptureFormatError  unknown magic / link type
    ├── LiveCaptureError        no permission, missing interface, sniffing failed
    ├── KeyFileError            a key file could not be parsed (names file and line)
    ├── UnknownAlgorithmError   an algorithm name/ID we do not implement
    ├── DecryptError            decryption failed for a reason other than integrity
    │   └── IntegrityError      ICV / tag check failed (wrong key, wrong algorithm, corruption)
    └── ExportError             an output file could not be written
"""

from __future__ import annotations


class IpsecscopeError(Exception):
    """Base of every error ipsecscope raises on purpose."""


class CaptureError(IpsecscopeError):
    pass


class CaptureFormatError(CaptureError):
    pass


class LiveCaptureError(IpsecscopeError):
    pass


class KeyFileError(IpsecscopeError):
    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class UnknownAlgorithmError(IpsecscopeError):
    pass


class DecryptError(IpsecscopeError):
    pass


class IntegrityError(DecryptError):
    """The one authentication failure: ICV/tag mismatch, whatever the algorithm."""


class ExportError(IpsecscopeError):
    pass
