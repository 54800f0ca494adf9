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

import re


class IpsecscopeError(Exception):
    """Base of every error ipsecscope raises on purpose."""


class CaptureError(IpsecscopeError):
    pass


class CaptureFormatError(CaptureError):
    pass


class LiveCaptureError(IpsecscopeError):
    pass


# Longer than any SPI (an IKE SPI is 16 hex digits): in a key-file error message such a run can
# only be key material that slipped into a message, so it is replaced by its length.
_HEX_RUN = re.compile(r"(?:0[xX])?[0-9A-Fa-f]{17,}")


class KeyFileError(IpsecscopeError):
    """A key file (or one row of it) could not be used. The message names the file, the line and
    what is wrong, never key bytes: parsers describe values by length and position, and any long
    hex run left in the text is replaced by its length as a last line of defence."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        message = _HEX_RUN.sub(lambda m: f"<{len(m.group())} hex digits>", message)
        super().__init__(where + message)
        self.path = path
        self.line = line
        self.reason = message


class UnknownAlgorithmError(IpsecscopeError):
    pass


class DecryptError(IpsecscopeError):
    pass


class IntegrityError(DecryptError):
    """The one authentication failure: ICV/tag mismatch, whatever the algorithm."""


class ExportError(IpsecscopeError):
    pass
