"""keys stage: read key material from any format engineers have, into one :class:`KeyStore`.

``load_keys(paths)`` detects each file's format by content (never by name):

=====================  ==========================================================  ============
format                 what it looks like                                          module
=====================  ==========================================================  ============
Wireshark UATs         ``"IPv4","198.18.0.1",...`` / ``<spi_i>,<spi_r>,...``        wireshark
ip xfrm state          ``src A dst B`` / ``proto esp spi 0x... reqid N mode ...``   xfrm
strongSwan charon log  ``[IKE] ... Sk_ei secret => 32 bytes @ 0x...``               charon
Libreswan pluto debug  ``| ikev2 I 0x.. 0x.. sha256:0x.. aes256:0x..``, ``| ESP        libreswan
                       enckey:`` dumps + ``add_sa()`` (``plutodebug="base crypt
                       private"``)
tcpdump -E secrets     ``0x12345678@198.18.0.2 aes128-cbc:0x...``                  tcpdump
native JSON            ``{"schema": "ipsecscope.keys/1", ...}``                    jsonkeys
pcapng with DSBs       pcapng magic; Decryption Secrets Blocks                      dsb
=====================  ==========================================================  ============

Bad input raises :class:`~ipsecscope.errors.KeyFileError` naming the file and line.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import KeyFileError
from .store import KeyStore

__all__ = ["KeyStore", "load_keys", "load_key_file", "detect_format", "FORMATS"]

# Formats in detection order (first that claims the file wins).
FORMATS = ("json", "dsb", "wireshark", "xfrm", "charon", "libreswan", "tcpdump")

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


def detect_format(data: bytes) -> str | None:
    """Name of the key format of ``data`` (one of FORMATS), or None."""
    import importlib

    from . import dsb

    if dsb.looks_like(data):
        return "dsb"
    text = data.decode("utf-8-sig", "replace")
    # each parser module is imported only when its turn comes: the charon one alone costs ~20 ms
    # of start-up, which `ipsecscope decrypt -k keys.json` never needs
    for name, module in (("json", "jsonkeys"), ("wireshark", "wireshark"), ("xfrm", "xfrm"),
                         ("charon", "charon"), ("libreswan", "libreswan"), ("tcpdump", "tcpdump")):
        check: Callable[[str], bool] = importlib.import_module(f".{module}", __name__).looks_like
        if check(text):
            return name
    return None


def load_key_file(path: str | Path, store: KeyStore | None = None, fmt: str | None = None) -> KeyStore:
    """Parse one key file into ``store`` (a new one if None) and return the store."""
    import importlib

    from . import dsb

    p = Path(path)
    data = _read(p)
    store = store if store is not None else KeyStore()
    fmt = fmt or detect_format(data)
    name = str(path)
    if fmt is None:
        if not data.strip():
            raise KeyFileError("the file is empty", path=name)
        if _only_comments(data):
            # Wireshark writes a header comment even for an empty table and loads it as empty
            # (strongSwan's save-keys does the same when no SA was negotiated).
            store.warnings.append(f"{name}: only comments, no keys (an empty key table)")
            return store
        raise KeyFileError(
            "not a key file format ipsecscope knows (Wireshark esp_sa / ikev2_decryption_table / "
            "ikev1_decryption_table, `ip xfrm state` output, strongSwan charon log with ike/chd 4, "
            "Libreswan plutodebug log, tcpdump -E secrets, ipsecscope JSON, pcapng with DSBs)",
            path=name,
        )
    if fmt == "dsb":
        store.merge(dsb.parse_pcapng(data, name, KeyStore()))
        return store
    text = data.decode("utf-8-sig", "replace")
    module = {"json": "jsonkeys", "wireshark": "wireshark", "xfrm": "xfrm", "charon": "charon",
              "libreswan": "libreswan", "tcpdump": "tcpdump"}[fmt]
    parser = importlib.import_module(f".{module}", __name__).parse
    try:
        mine = parser(text, name, KeyStore())
    except (ValueError, IndexError, KeyError, UnicodeError) as exc:
        # A parser bug or an input we did not foresee: still one line, never a traceback.
        raise KeyFileError(f"cannot read this {fmt} key file: {exc}", path=name) from None
    if len(mine) == 0 and not mine.peer_notes and fmt != "json":
        raise KeyFileError(f"looks like a {fmt} key file but holds no usable keys", path=name)
    store.merge(mine)
    return store


def _only_comments(data: bytes) -> bool:
    lines = [ln.strip() for ln in data.decode("utf-8-sig", "replace").splitlines()]
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
