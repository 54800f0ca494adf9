"""keys stage: read key material from any format engineers have, into one :class:`KeyStore`.

``load_keys(paths)`` detects each file's format by content (never by name). The formats, how
each is detected, read, written and carried in a pcapng Decryption Secrets Block are ONE table:
:data:`ipsecscope.keys.formats.FORMATS` (the README's key-format table is generated from it).

Bad input raises :class:`~ipsecscope.errors.KeyFileError` naming the file and line.
"""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Iterable

from ..errors import KeyFileError
from ..model.plural import with_article
from .formats import FORMATS, add_secrets_block, detect_format, input_summary
from .formats import parse as parse_format
from .store import KeyStore

__all__ = ["KeyStore", "load_keys", "load_key_file", "detect_format", "add_secrets_block", "FORMATS"]

MAX_KEY_FILE = 512 * 1024 * 1024  # a charon log can be big; a key file larger than this is a mistake


def _path_text(path: str | os.PathLike[str]) -> str:
    """``str(pathlib.Path(path))``, without importing pathlib (with urllib.parse, ~1.5 ms of
    `decrypt`'s start-up, issue 15): empty and ``.`` parts dropped, a trailing slash too, two leading
    slashes kept (POSIX leaves them to the system). Key files' names reach the keys' ``source``
    ("file:line") and error messages in this form."""
    text = os.fspath(path)
    if os.sep != "/" or not text:  # (Windows paths: pathlib's own rules)
        from pathlib import Path

        return str(Path(text))
    root = "//" if text.startswith("//") and not text.startswith("///") else "/" if text.startswith("/") else ""
    return root + "/".join(p for p in text.split("/") if p and p != ".") or "."


def _read(path: str) -> bytes:
    """The file's bytes (gunzipped), at most MAX_KEY_FILE of them, or a one-line KeyFileError.

    A device (``/dev/zero``, ``/dev/urandom``) is refused: its size says nothing (``st_size`` is 0)
    and it never ends. A pipe (``-k <(ssh gw ip xfrm state)``) is read up to the limit.
    """
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyFileError("no such file", path=name) from None
    except IsADirectoryError:
        raise KeyFileError("is a directory, not a key file", path=name) from None
    except PermissionError:
        raise KeyFileError("permission denied (key files are often root-only: try sudo)", path=name) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read: {exc.strerror or exc}", path=name) from None
    with os.fdopen(fd, "rb") as fh:
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise KeyFileError("is a directory, not a key file", path=name)
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                raise KeyFileError("is a device, not a key file (give a file with keys)", path=name)
            if st.st_size > MAX_KEY_FILE:
                raise KeyFileError(f"{st.st_size} bytes is too large for a key file "
                                   f"(the limit is {MAX_KEY_FILE >> 20} MiB)", path=name)
            data = fh.read(MAX_KEY_FILE + 1)
        except OSError as exc:
            raise KeyFileError(f"cannot read: {exc.strerror or exc}", path=name) from None
    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(f"more than {MAX_KEY_FILE >> 20} MiB: too large for a key file", path=name)
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, name)
    return data


def _gunzip(data: bytes, name: str) -> bytes:
    """Decompress at most MAX_KEY_FILE bytes (a small gzip bomb must not exhaust memory)."""
    out = bytearray()
    try:
        while data:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # one gzip member
            out += d.decompress(data, MAX_KEY_FILE + 1 - len(out))
            if len(out) > MAX_KEY_FILE or d.unconsumed_tail:
                raise KeyFileError(f"decompresses to more than {MAX_KEY_FILE >> 20} MiB: too large for a "
                                   "key file", path=name)
            if not d.eof:
                raise KeyFileError("gzip data is truncated", path=name)
            data = d.unused_data  # concatenated members (``cat a.gz b.gz``), as gzip(1) reads them
    except zlib.error as exc:
        raise KeyFileError(f"gzip data is corrupt: {exc}", path=name) from None
    return bytes(out)


def load_key_file(path: str | os.PathLike[str], store: KeyStore | None = None, fmt: str | None = None, *,
                  strict: bool = False) -> KeyStore:
    """Parse one key file into ``store`` (a new one if None) and return the store.

    An unusable row, dump or SA is left out with a ``file:line: reason`` warning (in
    ``store.warnings`` / ``store.skipped``) and the rest is used; ``strict`` raises it instead.
    """
    data = _read(_path_text(path))
    store = store if store is not None else KeyStore()
    name = str(path)
    text = data.decode("utf-8-sig", "replace")
    fmt = fmt or detect_format(data, text)
    if fmt is None:
        if not data.strip():
            raise KeyFileError("the file is empty", path=name)
        if _only_comments(text):
            # Wireshark writes a header comment even for an empty table and loads it as empty
            # (strongSwan's save-keys does the same when no SA was negotiated).
            store.warnings.append(f"{name}: only comments, no keys (an empty key table)")
            return store
        raise KeyFileError(f"not a key file format ipsecscope knows ({input_summary()})", path=name)
    mine = parse_format(fmt, data, name, KeyStore(), text)
    if mine.skipped and (strict or len(mine) == 0):
        raise mine.skipped[0]  # --strict-keys, or nothing in the file was usable
    if len(mine) == 0 and not mine.peer_notes and fmt != "json":
        raise KeyFileError(f"looks like {with_article(fmt)} key file but holds no usable keys", path=name)
    store.merge(mine)
    return store


def _only_comments(text: str) -> bool:
    lines = [ln.strip() for ln in text.splitlines()]
    return all(not ln or ln.startswith("#") for ln in lines)


def load_keys(paths: Iterable[str | os.PathLike[str]], store: KeyStore | None = None, *,
              strict: bool = False) -> KeyStore:
    """Load several key files (any mix of formats) into one :class:`KeyStore`.

    A directory stands for the key files in it (e.g. a Wireshark profile holding ``esp_sa`` and
    ``ikev2_decryption_table``); files in it that hold no keys are skipped with a warning, and
    it is an error only when none of them is a key file (empty tables count as key files).
    Unusable rows are skipped with a warning (``store.warnings``); ``strict`` (--strict-keys)
    raises the first instead, for a file or a directory alike.
    """
    store = store if store is not None else KeyStore()
    for p in map(_path_text, paths):
        if not os.path.isdir(p):
            load_key_file(p, store, strict=strict)
            continue
        read = 0
        skipped: list[KeyFileError] = []
        for f in sorted(_path_text(os.path.join(p, x)) for x in os.listdir(p)
                        if not x.startswith(".") and os.path.isfile(os.path.join(p, x))):
            try:
                load_key_file(f, store, strict=strict)
                read += 1
            except KeyFileError as exc:
                if strict:
                    raise
                skipped.append(exc)
        if not read:
            why = f" ({skipped[0]})" if skipped else ""
            raise KeyFileError(f"no key file in this directory holds keys{why}", path=p)
        for exc in skipped:  # nothing inside a directory is dropped silently
            store.skip(exc, "file skipped")
    return store
