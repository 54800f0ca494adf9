"""keys stage: read key material from any format engineers have, into one :class:`KeyStore`.

``load_keys(paths)`` detects each file's format by content (never by name). The formats, how
each is detected, read, written and carried in a pcapng Decryption Secrets Block are ONE table:
:data:`ipsecscope.keys.formats.FORMATS` (the README's key-format table is generated from it).

Bad input raises :class:`~ipsecscope.errors.KeyFileError` naming the file and line.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

from ..errors import KeyFileError
from .formats import FORMATS, add_secrets_block, detect_format, input_summary
from .formats import parse as parse_format
from .store import KeyStore

__all__ = ["KeyStore", "load_keys", "load_key_file", "detect_format", "add_secrets_block", "FORMATS"]

MAX_KEY_FILE = 512 * 1024 * 1024  # a charon log can be big; a key file larger than this is a mistake


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_KEY_FILE:
            raise KeyFileError(f"{size} bytes is too large for a key file", path=str(path))
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError("no such file", path=str(path)) from None
    except IsADirectoryError:
        raise KeyFileError("is a directory, not a key file", path=str(path)) from None
    except PermissionError:
        raise KeyFileError("permission denied (key files are often root-only: try sudo)", path=str(path)) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise KeyFileError(f"gzip data is corrupt: {exc}", path=str(path)) from None
    return data


def load_key_file(path: str | Path, store: KeyStore | None = None, fmt: str | None = None) -> KeyStore:
    """Parse one key file into ``store`` (a new one if None) and return the store."""
    p = Path(path)
    data = _read(p)
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
    if len(mine) == 0 and not mine.peer_notes and fmt != "json":
        raise KeyFileError(f"looks like a {fmt} key file but holds no usable keys", path=name)
    store.merge(mine)
    return store


def _only_comments(text: str) -> bool:
    lines = [ln.strip() for ln in text.splitlines()]
    return all(not ln or ln.startswith("#") for ln in lines)


def load_keys(paths: Iterable[str | Path], store: KeyStore | None = None) -> KeyStore:
    """Load several key files (any mix of formats) into one :class:`KeyStore`.

    A directory stands for the key files in it (e.g. a Wireshark profile holding ``esp_sa`` and
    ``ikev2_decryption_table``); files in it that hold no keys are skipped with a warning, and
    it is an error only when none of them is a key file (empty tables count as key files).
    """
    store = store if store is not None else KeyStore()
    for p in paths:
        p = Path(p)
        if not p.is_dir():
            load_key_file(p, store)
            continue
        read = 0
        skipped = []
        for f in sorted(x for x in p.iterdir() if x.is_file() and not x.name.startswith(".")):
            try:
                load_key_file(f, store)
                read += 1
            except KeyFileError as exc:
                skipped.append(str(exc))
        store.warnings.extend(f"skipped {msg}" for msg in skipped)
        if not read:
            why = f" ({skipped[0]})" if skipped else ""
            raise KeyFileError(f"no key file in this directory holds keys{why}", path=str(p))
    return store
