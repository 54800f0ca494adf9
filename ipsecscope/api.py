"""Python API for scripts: decrypt ESP (and check AH) in a capture with whatever keys you have.

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
    """One ESP or AH packet of a capture and what decrypting (ESP) or checking (AH) it gave.

    ``seq`` is the full sequence number (64-bit when the SA uses ESN, high bits inferred);
    ``status`` is "ok", "icv_failed", "no_key", "malformed" or "unsupported" (AH: "ok",
    "icv_failed", "no_key", "unsupported" or "unverifiable", the ICV check's result);
    ``verified`` is True when the ICV was checked and verified ("ok"). ``inner`` is the inner IP
    packet (tunnel mode, next_header 4/41) or the transport payload (TCP/UDP/... header onwards):
    for ESP None unless status is "ok"; AH encrypts nothing, so its payload is there whenever its
    ICV did not fail (as ``decrypt`` writes it), ``status`` saying whether it was verified.
    ``protocol`` is "ESP" or "AH". ``keys`` identifies the SA's key material (``keys.source``
    says which file and line).
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
    protocol: str = "ESP"
    # IPv6: the extension headers in front of ESP/AH, kept by ip_packet() in transport mode
    # (export.perframe.v6_ext_headers)
    ext_headers: tuple = field(default=(), repr=False)

    @property
    def esn_hi(self) -> int:
        return self.seq >> 32

    @property
    def verified(self) -> bool:
        """The ICV verified (ESP: decrypted and authenticated; AH: its ICV checked with a key)."""
        return self.status == "ok"

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
        from .export.perframe import ip_header as _ip_header

        af = socket.AF_INET6 if ":" in self.src else socket.AF_INET
        return _ip_header(socket.inet_pton(af, self.src), socket.inet_pton(af, self.dst), self.next_header,
                          len(self.inner), self.ext_headers) + self.inner


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
    """Every ESP and AH packet of ``capture`` in order: ESP decrypted where keys allow, AH's ICV
    checked with AH keys (RFC 4302 §3.3.3; both with ESN inferred), as :func:`decrypt_capture`
    does. AH protecting ESP (an SA bundle) gives the AH packet, then the ESP packet it protects
    unless the AH ICV failed (a receiver drops the packet first, RFC 4302 §3.4.4).

    "In order" is the order the decoder completes packets, as ``decrypt`` writes them: an ESP record
    of an RFC 8229 TCP stream whose segment waited behind a lost segment (never captured) comes
    when the decoder gives that gap up (too many segments waiting, FIN/RST, or the end of the
    capture), after the packets of later frames, with its own ``frame``, ``ts`` and ``ts_ns``;
    sort by ``frame`` for capture order. The same records ``sas`` and ``findings`` count."""
    from .capture import open_capture
    from .crypto.ah import ICV_FAILED, AhResult, AhVerifier
    from .decode.demux import Decoder
    from .decode.link import ip_offset
    from .export.perframe import v6_ext_headers
    from .keys import add_secrets_block
    from .model.packets import AhPacket, EspPacket, RawFrame

    store = load_keystore(keys)
    dec = EspDecryptor(store)
    ah = AhVerifier(store)
    decoder = Decoder()
    seen = 0
    # frame -> exact time of the frames decoded to nothing, for a record that completes later
    # (a float time has ~0.2 us steps); bounded as export.perframe's
    from collections import OrderedDict

    from .export.perframe import HELD_MAX

    held: OrderedDict[int, int] = OrderedDict()

    def late(pkt: EspPacket) -> DecryptedPacket:
        r = dec.decrypt(pkt)
        ts_ns = held.get(pkt.frame)
        return DecryptedPacket(
            pkt.frame, pkt.ts, pkt.src, pkt.dst, pkt.spi, (r.seq_hi << 32) | pkt.seq, r.status, r.inner,
            r.next_header, r.keys, r.reason, pkt.udp_encap, r.esn, round(pkt.ts * 1e9) if ts_ns is None else ts_ns,
            "ESP", ())

    def ext_of(raw: RawFrame, pkt: AhPacket | EspPacket, header: bytes = b"") -> tuple:
        """IPv6: the extension headers in front of ESP/AH (for ip_packet), else ()."""
        if ":" not in pkt.src:
            return ()
        ip, off = (header, 0) if header else (raw.data, ip_offset(raw.linktype, raw.data)[1])
        if ip[off + 8:off + 40] != socket.inet_pton(socket.AF_INET6, pkt.src) + socket.inet_pton(
                socket.AF_INET6, pkt.dst):
            return ()  # not the header ESP/AH follows (a tunnel the decoder peeled)
        return v6_ext_headers(ip, off)

    with open_capture(capture) as reader:
        for raw in reader:
            if len(reader.secrets) != seen:  # keys carried in the capture (pcapng DSB)
                for stype, data in reader.secrets[seen:]:
                    add_secrets_block(store, stype, data)
                seen = len(reader.secrets)
            dropped = False  # an AH ICV failed: the ESP packet it protects is not processed
            pkts = decoder.decode_all(raw)
            if not any(p.frame == raw.index for p in pkts):
                held[raw.index] = raw.ts_ns
                if len(held) > HELD_MAX:
                    held.popitem(last=False)
            for pkt in pkts:
                if pkt.frame != raw.index:  # an RFC 8229 record given up now (FIN, RST, overflow)
                    if type(pkt) is EspPacket:
                        yield late(pkt)
                    continue
                if type(pkt) is AhPacket:
                    try:
                        a = ah.verify(pkt, raw.data, ip_offset(raw.linktype, raw.data)[1])
                    except Exception as exc:  # noqa: BLE001 - odd input never stops the iteration
                        a = AhResult("unverifiable", reason=f"internal error ({type(exc).__name__}); ICV not checked")
                    dropped = a.status == ICV_FAILED
                    payload = pkt.data[(pkt.data[1] + 2) * 4:]
                    ext = ext_of(raw, pkt, pkt.ip_header)
                    yield DecryptedPacket(
                        pkt.frame, pkt.ts, pkt.src, pkt.dst, pkt.spi, (a.seq_hi << 32) | pkt.seq, a.status,
                        None if dropped else payload, pkt.next_header, a.keys, a.reason, False, a.esn, raw.ts_ns,
                        "AH", ext)
                    continue
                if type(pkt) is not EspPacket or dropped:
                    continue
                r = dec.decrypt(pkt)
                ext = () if pkt.udp_encap or r.inner is None else ext_of(raw, pkt)
                yield DecryptedPacket(
                    pkt.frame, pkt.ts, pkt.src, pkt.dst, pkt.spi, (r.seq_hi << 32) | pkt.seq, r.status,
                    r.inner, r.next_header, r.keys, r.reason, pkt.udp_encap, r.esn, raw.ts_ns, "ESP", ext)
        for pkt in decoder.flush():  # the end of the capture: records behind a TCP gap never filled
            if type(pkt) is EspPacket:
                yield late(pkt)


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
    Returns :class:`ipsecscope.export.engine.RunStats` (totals, ``per_sa``, and ``marks``: the
    decoder's malformed marks by layer, as ``sas`` counts them). An RFC 8229 record that waited
    behind a TCP segment never captured is written when that gap is given up, after the frames
    read since, with its own frame's time (:mod:`ipsecscope.export.engine` says why).

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
                      jobs=jobs, progress=progress, dsb=dsb,
                      inputs=[*_key_paths(keys), *inputs])


def _key_paths(keys) -> list:
    """The key files behind ``keys`` (outputs must never overwrite them)."""
    if isinstance(keys, (str, os.PathLike)):
        return [keys]
    if isinstance(keys, (list, tuple)):
        return [k for k in keys if isinstance(k, (str, os.PathLike))]
    return []
