"""Python API for scripts: decrypt ESP in a capture with whatever keys you have.

Example (run by tests/test_api.py from the repository root)::

    from ipsecscope.api import decrypt_capture, iter_decrypted

    cap = "samples/synthetic/esn-wrap.pcap"
    for p in iter_decrypted(cap, ["samples/synthetic/esn-wrap.keys.json"]):
        print(p.frame, p.src, "->", p.dst, f"SPI 0x{p.spi:08x}", "seq", p.seq, p.status,
              p.next_header, len(p.inner or b""))

    stats = decrypt_capture(cap, "samples/synthetic/esn-wrap.esp_sa", out="/tmp/esn-plain.pcapng")
    print(stats.decrypted, "decrypted,", stats.icv_failed, "ICV failures")

``keys`` is a :class:`~ipsecscope.keys.KeyStore`, one key file path, or several (any format
``ipsecscope.keys.load_keys`` reads). Errors are typed (:mod:`ipsecscope.errors`); packets that
cannot be decrypted are reported in ``status``, never raised.
"""

from __future__ import annotations

import _socket as socket  # socket.py's C module, the same inet_* functions: no socket.py enums (~3.7 ms CPU)
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeAlias

from .crypto.esp import EspDecryptor
from .errors import ExportError
from .model.keys import EspSaKeys

if TYPE_CHECKING:
    from .export.engine import RunStats
    from .keys import KeyStore

# What every function here takes as keys: a loaded store, one key file (or directory), or several.
Keys: TypeAlias = "KeyStore | str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None"

__all__ = ["DecryptedPacket", "iter_decrypted", "decrypt_capture", "load_keystore"]

KeysArg = "KeyStore | str | os.PathLike[str] | Iterable[str | os.PathLike[str]]"


@dataclass(slots=True, frozen=True)
class DecryptedPacket:
    """One ESP packet of a capture and what decrypting it gave.

    ``seq`` is the full sequence number (64-bit when the SA uses ESN, high bits inferred);
    ``status`` is "ok", "icv_failed", "no_key", "malformed" or "unsupported"; ``inner`` the inner
    IP packet (tunnel mode, next_header 4/41) or the transport payload (TCP/UDP/... header
    onwards), None unless status is "ok". ``keys`` identifies the SA's key material
    (``keys.source`` says which file and line).
    """

    frame: int
    ts: float
    src: str
    dst: str
    spi: int
    seq: int
    status: str
    inner: bytes | None = None
    next_header: int | None = None
    keys: EspSaKeys | None = field(default=None, repr=False)  # never in a repr: it holds secrets
    reason: str = ""
    udp_encap: bool = False
    esn: bool | None = None
    ts_ns: int = 0

    @property
    def esn_hi(self) -> int:
        return self.seq >> 32

    @property
    def tunnel(self) -> bool:
        return self.next_header in (4, 41)

    def ip_packet(self) -> bytes | None:
        """The inner packet as a complete IP packet: itself in tunnel mode; in transport mode the
        payload behind an IP header rebuilt from the outer addresses (what ``decrypt`` writes)."""
        if self.inner is None or self.next_header is None:
            return None
        if self.tunnel:
            return self.inner
        if ":" in self.src:
            return struct.pack("!IHBB16s16s", 0x60000000, len(self.inner), self.next_header, 64,
                               socket.inet_pton(socket.AF_INET6, self.src),
                               socket.inet_pton(socket.AF_INET6, self.dst)) + self.inner
        from .export.hotloop import ip_header as _ip_header

        return _ip_header(socket.inet_aton(self.src), socket.inet_aton(self.dst), self.next_header,
                          len(self.inner)) + self.inner


def load_keystore(keys: Keys, strict: bool = False) -> KeyStore:
    """A KeyStore from a KeyStore, a path, or paths. Unusable key rows are skipped (listed in
    ``.warnings``) unless ``strict``."""
    from .keys import KeyStore, load_keys

    if keys is None:
        return KeyStore()
    if isinstance(keys, KeyStore):
        return keys
    if isinstance(keys, (str, os.PathLike)):
        keys = [keys]
    return load_keys([Path(k) for k in keys], strict=strict)


def iter_decrypted(capture: str | os.PathLike[str], keys: Keys = None) -> Iterator[DecryptedPacket]:
    """Every ESP packet of ``capture`` in order, decrypted where keys allow (ESN inferred). ESP
    only: AH packets, whose payloads :func:`decrypt_capture` writes, are not listed (ESP under AH is)."""
    from .capture import open_capture
    from .decode.demux import Decoder
    from .keys import add_secrets_block
    from .model.packets import EspPacket

    store = load_keystore(keys)
    dec = EspDecryptor(store)
    decoder = Decoder()
    seen = 0
    with open_capture(capture) as reader:
        for raw in reader:
            if len(reader.secrets) != seen:  # keys carried in the capture (pcapng DSB)
                for stype, data in reader.secrets[seen:]:
                    add_secrets_block(store, stype, data)
                seen = len(reader.secrets)
            for pkt in decoder.decode_all(raw):
                if type(pkt) is not EspPacket:
                    continue
                r = dec.decrypt(pkt)
                yield DecryptedPacket(
                    pkt.frame, pkt.ts, pkt.src, pkt.dst, pkt.spi, (r.seq_hi << 32) | pkt.seq, r.status,
                    r.inner, r.next_header, r.keys, r.reason, pkt.udp_encap, r.esn, raw.ts_ns)


def decrypt_capture(capture: str | os.PathLike[str], keys: Keys = None,
                    out: str | os.PathLike[str] | IO[Any] | None = None, fmt: str = "pcapng", *,
                    keep_other: bool = False, dsb: bool = False, with_hex: bool = False,
                    jsonl: str | os.PathLike[str] | IO[Any] | None = None, jobs: int = 0,
                    progress: Callable[[int, int], None] | None = None,
                    inputs: Iterable[str | os.PathLike[str]] = (),
                    frames: Iterable[int] | None = None) -> RunStats:
    """Decrypt every ESP packet of ``capture`` into ``out``, and write what AH packets protect
    (``export/ah.py``: ICVs verified with AH keys; a failed one is left out as for ESP).

    ``fmt`` "pcapng": inner packets as LINKTYPE_RAW with the original timestamps (``keep_other``
    also copies every other frame, and undecryptable ESP with a comment saying why; ``dsb`` appends
    a Decryption Secrets Block with the keys of the SAs used). ``fmt`` "jsonl": one JSON object
    per ESP packet (schema ``ipsecscope.decrypt/1``; ``with_hex`` adds the inner bytes). ``jsonl``
    writes JSON lines *as well as* a pcapng ``out``. Large files use ``jobs`` processes (0 = one
    below 128 MiB, else the idle cores: :func:`ipsecscope.export.engine.default_jobs`). ``frames``: write only these frame numbers (e.g. what a display filter selected).
    Returns :class:`ipsecscope.export.engine.RunStats` (totals and ``per_sa``).

    Output paths are created 0600 and renamed into place only when the run succeeds; an output
    that is the capture, a key file given as ``keys`` or one of ``inputs`` is refused
    (:class:`~ipsecscope.errors.ExportError`).
    """
    from .export import engine

    if fmt not in ("pcapng", "jsonl"):
        raise ExportError(f"unknown output format {fmt!r}; use 'pcapng' or 'jsonl'")
    store = load_keystore(keys)
    pcapng_out = (out if hasattr(out, "write") else str(out)) if out is not None and fmt == "pcapng" else None
    jsonl_out = jsonl if jsonl is not None else (out if fmt == "jsonl" else None)
    if isinstance(jsonl_out, os.PathLike):
        jsonl_out = str(jsonl_out)
    if pcapng_out is None and jsonl_out is None:
        raise ExportError("nothing to write: pass out= (and fmt=) or jsonl=")
    opts = engine.Options(keep_other=keep_other, hex=with_hex,
                          frames=None if frames is None else frozenset(frames))
    return engine.run(capture, store, out=pcapng_out, jsonl_out=jsonl_out, opts=opts,
                      jobs=jobs if frames is None else 1, progress=progress, dsb=dsb,
                      inputs=[*_key_paths(keys), *inputs])


def _key_paths(keys) -> list:
    """The key files behind ``keys`` (outputs must never overwrite them)."""
    if isinstance(keys, (str, os.PathLike)):
        return [keys]
    if isinstance(keys, (list, tuple)):
        return [k for k in keys if isinstance(k, (str, os.PathLike))]
    return []
