"""Decrypt-and-export engine: the fast path behind ``ipsecscope decrypt`` and
:func:`ipsecscope.api.decrypt_capture`.

Why not ``open_capture`` + ``Decoder`` + ``EspDecryptor.decrypt`` per frame? Those build three
objects per frame (RawFrame, EspPacket, EspResult), which costs more than the AES-GCM call
itself. Here an uncompressed pcap/pcapng file is read in 2 MiB windows and, for the common case
(little-endian pcap or pcapng, Ethernet, IPv4 without options or fragments, raw ESP or ESP in UDP
4500, an SA already known not to use ESN, tunnel mode), one ``struct.unpack_from`` reads the
record header, Ethernet type, IPv4 fields, SA key and IV (or AAD) at once; the ESP bytes go from
the window to the per-SA opener and the inner packet straight into the buffered output
(``_loop_pcap_eth``). The rarer block types and the chunk-bound walk still use a memory map.
Everything else goes through ``_Worker._frame``, which handles every case (IPv6, transport mode,
ESN inference, failures, --keep-other, JSON lines) and hands frames it cannot parse itself (IP
fragments, IPv6 extension headers, RFC 8229 TCP, other link types) to the general
:class:`~ipsecscope.decode.demux.Decoder`. Same result, only slower for those frames. gzip'd
captures are inflated to a temporary file first when big, else read by the general reader.

Large files are split over processes (fork): worker *i* starts at the first record at or after
byte ``i * size / jobs`` (it walks the record headers to find it while the others already work;
pcapng block boundaries come from a scan that also collects IDBs and DSBs). This process does
chunk 0 straight into the output; the others write part files appended in order (sendfile).
ESN state per SA: every chunk infers high bits on its own (``crypto.esn`` searches 0..16 when an
SA has no history, which covers a chunk that starts after a wrap); if a chunk still had ICV
failures on an SA *before* its first success there while an earlier chunk had verified packets
of that SA, the chunk is processed again with the state the earlier chunks ended with (reconcile
step), so the output equals a sequential run (tests/test_decrypt_export.py checks both).
"""

from __future__ import annotations

import itertools
import mmap
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag

from ..crypto import esp as _esp
from ..crypto.esp import EspDecryptor, SaStats, trim_tfc
from ..errors import CaptureError, DecryptError, ExportError
from ..keys.formats import add_secrets_block
from ..keys.formats import dump as dump_keys
from ..outfile import atomic_output, create_private, refuse_inputs, same_file
from . import jsonl as _jsonl
from .pcapng import LINKTYPE_RAW, PcapngWriter, epb_header

_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000), b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1), b"\xa1\xb2\x3c\x4d": (">", 1),
}
_SHB = b"\x0a\x0d\x0d\x0a"
_U16 = struct.Struct("!H")
_ESPH = struct.Struct("!II")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6_NH = struct.Struct("!H B B 16s 16s")  # payload len, next header, hop limit, src, dst (from byte 4)
_UDP = struct.Struct("!HHH")
# Ethernet type, IPv4 version/IHL, total length, flags/fragment offset, protocol
_ETH_IP4 = struct.Struct("!12xHBxH2xHxB")

PARALLEL_MIN_BYTES = 24 << 20  # below this, forking costs more than it saves
CHUNK_MIN_BYTES = 8 << 20  # a chunk costs a fork-free but not free set-up (new worker, part file)
# Chunks per process. More than one lets a process that gets less CPU (a shared machine) do fewer
# chunks, but every chunk taken while its neighbour is still in progress walks the record
# headers from the nearest known bound: with 4 per process the walks add up to the whole file
# (~0.28 us per record, +5 % CPU on the 200k-packet benchmark) instead of half of it.
MAX_CHUNKS_PER_JOB = 1
WINDOW = 1 << 21  # bytes the hot loop reads at a time (_Worker._loop_pcap_eth)


@dataclass(slots=True)
class Iface:
    linktype: int
    mul: int = 1000  # ts units -> ns: units * mul // div
    div: int = 1
    offset_s: int = 0


@dataclass
class Layout:
    """Where the records of a capture are; built by :func:`scan`."""

    path: str
    fmt: str  # "pcap" | "pcapng"
    order: str
    start: int  # offset of the first record/block after the file header / SHB
    size: int
    ifaces: list[Iface]
    secrets: list[tuple[int, bytes]] = field(default_factory=list)
    bounds: list[tuple[int, int]] = field(default_factory=list)  # (offset, frame index) chunk starts
    frames: int = 0
    truncated: str | None = None


@dataclass
class Options:
    keep_other: bool = False
    jsonl: bool = False
    pcapng: bool = True
    hex: bool = False


@dataclass
class ChunkResult:
    part: str | None
    stats: dict[tuple[str, str, int], SaStats]
    states: dict[tuple[str, str, int], tuple[bool | None, int, int]]  # mode, top, searches
    early_fail: set[tuple[str, str, int]]
    frames: int = 0
    esp: int = 0
    other: int = 0
    dummy: int = 0
    kept: int = 0
    unkept: int = 0
    jsonl_part: str | None = None
    first_frame: int = 0
    truncated: str | None = None


@dataclass
class RunStats:
    frames: int = 0
    esp: int = 0
    decrypted: int = 0
    icv_failed: int = 0
    no_key: int = 0
    malformed: int = 0
    unsupported: int = 0
    other: int = 0
    dummy: int = 0  # next header 59 (RFC 4303 §2.6 dummy packets), not written
    written: int = 0
    kept: int = 0  # --keep-other: frames written unchanged (not ESP, or ESP that did not decrypt)
    unkept: int = 0  # --keep-other: frames that could not be written, on an interface no IDB declares
    jobs: int = 1
    reconciled_chunks: int = 0
    truncated: str | None = None
    per_sa: list[tuple[tuple[str, str, int], SaStats]] = field(default_factory=list)
    used_keys: list = field(default_factory=list)


# --- layout -----------------------------------------------------------------------------------

def scan(path: str | os.PathLike[str], chunks: int = 1, mark_every: int = 512) -> Layout | None:
    """Record layout of an uncompressed pcap/pcapng file, or None when the fast path cannot read
    it (gzip, several pcapng sections, damage): the caller then uses the general reader."""
    path = str(path)
    with open(path, "rb") as f:
        head = f.read(28)
        if head[:2] == b"\x1f\x8b" or len(head) < 24:
            return None
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return None
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        if head[:4] in _PCAP_MAGIC:
            return _scan_pcap(path, mm, size, chunks, mark_every)
        if head[:4] == _SHB:
            return _scan_pcapng(path, mm, size, chunks, mark_every)
        return None
    finally:
        mm.close()


def _bounds(offsets_every: list[tuple[int, int]], size: int, chunks: int) -> list[tuple[int, int]]:
    if chunks <= 1 or not offsets_every:
        return offsets_every[:1]
    out = [offsets_every[0]]
    step = size / chunks
    want = step
    for off, idx in offsets_every[1:]:
        if off >= want:
            out.append((off, idx))
            want = off + step
    return out


def _scan_pcap(path: str, mm: mmap.mmap, size: int, chunks: int, every: int) -> Layout:
    order, mul = _PCAP_MAGIC[mm[:4]]
    linktype = struct.unpack_from(order + "I", mm, 20)[0] & 0xFFFF
    lay = Layout(path, "pcap", order, 24, size, [Iface(linktype, mul)])
    # No walk over the records here: a worker finds its first record itself (_resolve), in
    # parallel with the others, as the first record starting at or after its byte target. The
    # loops note a truncated last record.
    lay.bounds = [(24, 1)] + [(24 + t, 0) for t in _lazy_targets(size - 24, max(chunks, 1))]
    if every == 1 or os.environ.get("IPSECSCOPE_EXACT_BOUNDS"):
        return _walk_pcap(lay, mm, size, chunks, every)
    return lay


WALK_COST = 0.06  # walking a record header vs decrypting the record, per byte (measured, GCM 0.065, CBC 0.045)


def _lazy_targets(size: int, chunks: int) -> list[int]:
    """Byte targets of chunks 1.. of a pcap: all chunks start together and chunk k first walks
    the record headers before its target, so chunk k + 1 starts where the k processes before it
    are equally busy: t_1 = c, t_(k+1) = t_k (1 - r) + c with r = WALK_COST, c chosen so that
    t_chunks = size (plain equal parts when r = 0; chunk 0 gets 52 % of 2)."""
    if chunks <= 1:
        return []
    q = 1 - WALK_COST
    c = size * WALK_COST / (1 - q ** chunks)
    return [int(c * (1 - q ** k) / WALK_COST) for k in range(1, chunks)]


def _walk_pcap(lay: Layout, mm: mmap.mmap, size: int, chunks: int, every: int) -> Layout:
    """Exact chunk bounds by walking every record header (tests use it to place bounds finely)."""
    order = lay.order
    rec = struct.Struct(order + "I")
    off, idx = 24, 1
    marks = []
    released = 0
    while off + 16 <= size:
        if idx % every == 1 or every == 1:
            marks.append((off, idx))
        if not idx & 0xFFF:  # touching every record header would make the whole file resident
            page = off & ~(mmap.PAGESIZE - 1)
            mm.madvise(mmap.MADV_DONTNEED, released, page - released)
            released = page
        incl = rec.unpack_from(mm, off + 8)[0]
        if off + 16 + incl > size:
            lay.truncated = f"last record (frame {idx}) truncated: {size - off - 16} of {incl} bytes"
            break
        off += 16 + incl
        idx += 1
    lay.frames = idx - 1
    lay.size = off if lay.truncated is None else off
    lay.bounds = _bounds(marks, off, chunks)
    return lay


def _scan_pcapng(path: str, mm: mmap.mmap, size: int, chunks: int, every: int) -> Layout | None:
    from ..capture.pcapng import _parse_idb  # the capture stage's IDB option parser

    bom = mm[8:12]
    order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else None
    if order is None:
        return None
    blk = struct.Struct(order + "II")
    shb_len = blk.unpack_from(mm, 0)[1]
    lay = Layout(path, "pcapng", order, shb_len, size, [])
    off, idx = shb_len, 1
    released = 0
    marks = []
    while off + 12 <= size:
        btype, blen = blk.unpack_from(mm, off)
        if blen < 12 or blen % 4 or off + blen > size:
            lay.truncated = f"block at offset {off} truncated or damaged"
            break
        if btype in (6, 3, 2):
            if idx % every == 1 or every == 1:
                marks.append((off, idx))
            if not idx & 0xFFF:
                page = off & ~(mmap.PAGESIZE - 1)
                mm.madvise(mmap.MADV_DONTNEED, released, page - released)
                released = page
            idx += 1
        elif btype == 1:
            if blen < 20:  # no room for link type and snaplen: the general reader reports the damage
                return None
            i = _parse_idb(mm[off + 8:off + blen - 4], order)
            lay.ifaces.append(Iface(i.linktype, i.mul, i.div, i.offset_s))
        elif btype == 0x0A:
            stype, slen = blk.unpack_from(mm, off + 8)
            lay.secrets.append((stype, bytes(mm[off + 16:off + 16 + slen])))
        elif btype == 0x0A0D0D0A:
            return None  # a second section: leave it to the general reader
        off += blen
    if not lay.ifaces:  # no usable IDB (damaged?): the general reader marks each packet's interface
        return None
    if off < size and lay.truncated is None:  # 1..11 bytes left: a block header cut off
        lay.truncated = f"block at offset {off} truncated: {size - off} of at least 12 header bytes"
    lay.frames = idx - 1
    lay.size = off
    lay.bounds = _bounds(marks, off, chunks)
    return lay


def _resolve(lay: Layout, target: int, hint: tuple[int, int] | None = None) -> tuple[int, int]:
    """(offset, frame index) of the first pcap record that starts at or after ``target``,
    walking from ``hint`` (a known record start at or before ``target``) or the first record.

    The walk reads 1 MiB windows into bytes and counts records with the for loop's own counter:
    half the time of unpacking from the map with a Python counter (it is the head start every
    later chunk pays, see WALK_COST)."""
    rec = struct.Struct(lay.order + "I").unpack_from
    off, idx = hint if hint is not None else (lay.start, 1)
    size = lay.size
    with open(lay.path, "rb", buffering=0) as f:
        fd = f.fileno()
        while off < target and off + 16 <= size:
            w = os.pread(fd, 1 << 20, off)
            t = min(target - off, len(w) - 15)  # walk records starting before t (whole length field in w)
            if t <= 0:
                break
            o = n = 0
            for n in itertools.count(idx):  # noqa: B007 - the loop always ends in the break: n is the count
                if o >= t:
                    break
                o += 16 + rec(w, o + 8)[0]
            off, idx = off + o, n
    return min(off, size), idx


# --- the hot loop -------------------------------------------------------------------------------

def _records(mm, lay: Layout, start: int, end: int):
    """(iface, ts_ns, frame bytes, orig_len, offset) for records in [start, end)."""
    if lay.fmt == "pcap":
        rec = struct.Struct(lay.order + "IIII")
        unpack = rec.unpack_from
        mul = lay.ifaces[0].mul
        off = start
        while off + 16 <= end:
            sec, frac, incl, orig = unpack(mm, off)
            o2 = off + 16 + incl
            if o2 > end:
                return
            yield 0, sec * 1_000_000_000 + frac * mul, mm[off + 16:o2], orig, off
            off = o2
        return
    blk = struct.Struct(lay.order + "II")
    epb = struct.Struct(lay.order + "IIIII")
    u32 = struct.Struct(lay.order + "I")
    ifaces = lay.ifaces
    off = start
    while off + 12 <= end:
        btype, blen = blk.unpack_from(mm, off)
        if blen < 12:
            return
        if btype == 6:
            iface, hi, lo, incl, orig = epb.unpack_from(mm, off + 8)
            i = ifaces[iface] if iface < len(ifaces) else None
            ts = ((hi << 32) | lo) * i.mul // i.div + i.offset_s * 1_000_000_000 if i else 0
            yield iface, ts, mm[off + 28:off + 28 + incl], orig, off
        elif btype == 3:
            orig = u32.unpack_from(mm, off + 8)[0]
            n = min(orig, blen - 16)
            yield 0, 0, mm[off + 12:off + 12 + n], orig, off
        elif btype == 2:
            iface = struct.unpack_from(lay.order + "H", mm, off + 8)[0]
            hi, lo, incl, orig = struct.unpack_from(lay.order + "IIII", mm, off + 12)
            i = ifaces[iface] if iface < len(ifaces) else None
            ts = ((hi << 32) | lo) * i.mul // i.div if i else 0
            yield iface, ts, mm[off + 28:off + 28 + incl], orig, off
        off += blen


def _ip_header(src: bytes, dst: bytes, nh: int, payload_len: int) -> bytes:
    """An IP header for a transport-mode inner payload, from the outer addresses."""
    if len(src) == 16:
        return struct.pack("!IHBB16s16s", 0x60000000, payload_len, nh, 64, src, dst)
    h = _IPV4.pack(0x45, 0, 20 + payload_len, 0, 0x4000, 64, nh, 0, src, dst)
    s = sum(struct.unpack("!10H", h))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return h[:10] + _U16.pack(~s & 0xFFFF) + h[12:]


class _Worker:
    """Runs the loop over one byte range; writes EPBs (and/or JSON lines) to its own files.

    ``run`` holds the fast path (Ethernet/raw IPv4 → ESP or UDP-4500 ESP of an SA already known
    to be non-ESN, tunnel mode, written straight out); every other frame goes through ``_frame``,
    which handles all cases (IPv6, transport mode, ESN inference, failures, keep-other, JSONL).
    """

    def __init__(self, lay: Layout, keys, opts: Options, progress: Callable[[int], None] | None = None) -> None:
        self.lay = lay
        self.dec = EspDecryptor(keys)
        self.opts = opts
        self.progress = progress
        self.early_fail: set = set()
        # bytes key (addresses + SPI as on the wire) -> [SaState, fast open_at or None, count]
        self.sas: dict[bytes, list] = {}
        self.buf: list = []
        self.jbuf: list = []
        self.n_esp = self.n_other = self.n_dummy = self.n_kept = self.n_unkept = 0
        self.decoder = None
        self.linktypes = [i.linktype for i in lay.ifaces] or [1]
        self.truncated: str | None = None
        # parallel runs: where to start walking to a lazy chunk bound, and whom to tell where it is
        self.resolve_hint: Callable[[], tuple[int, int] | None] | None = None
        self.resolved: Callable[[int, int], None] | None = None

    def seed(self, states: dict[tuple[str, str, int], tuple[bool | None, int, int]]) -> None:
        for k, (mode, top, searches) in states.items():
            st = self.dec.state(*k)
            if st.opener is not None:
                if mode is not None:
                    st.mode = mode
                st.top = max(st.top, top)
                st.searches = searches
            st.stats.__init__(esn=st.mode, keys_source=st.stats.keys_source)  # counters start at 0

    def _entry(self, key: bytes, src: bytes, dst: bytes, spi: int) -> list:
        af = socket.AF_INET if len(src) == 4 else socket.AF_INET6
        st = self.dec.state(socket.inet_ntop(af, src), socket.inet_ntop(af, dst), spi)
        e = self.sas[key] = [st, None, 0, None, b"", None, None]
        self._refresh(e)
        return e

    @staticmethod
    def _refresh(e: list) -> None:
        st = e[0]
        e[1] = st.opener.open_at if st.opener is not None and st.mode is False else None
        g = getattr(st.opener.open, "gcm16", None) if e[1] is not None else None
        e[3], e[4] = g if g is not None else (None, b"")
        # CBC + HMAC inlined the same way: (CBC update, block, HMAC template copy, ICV length, compare)
        e[6] = getattr(st.opener.open, "cbc_hmac", None) if e[1] is not None else None
        # an SA known to use ESN, with history and an ICV to check: the fast loop guesses the high
        # bits (RFC 4303 App. A) and lets the general path sort out anything that fails
        esn_ok = st.opener is not None and st.mode is True and st.opener.verifies and st.top >= 0
        e[5] = st.opener.open_at if esn_ok else None

    def run(self, start: int, end: int, first_index: int, out_f, jsonl_f) -> ChunkResult:  # noqa: C901
        lay = self.lay
        opts = self.opts
        self.out_f, self.jsonl_f = out_f, jsonl_f
        fast_ok = opts.pcapng and out_f is not None and jsonl_f is None
        sas = self.sas
        buf = self.buf
        app = buf.append
        epb = struct.Struct("<IIIIIII").pack
        # EPB trailer: data padding to 4 bytes, then the block length again
        trailers = [struct.Struct(f"<{(-k) & 3}xI").pack for k in range(4)]
        linktypes = self.linktypes
        frame_slow = self._frame
        eth_ip4 = _ETH_IP4.unpack_from
        res = ChunkResult(None, self.dec.stats, {}, self.early_fail, first_frame=first_index)
        idx = first_index - 1
        f = open(lay.path, "rb")  # noqa: SIM115 - closed in the finally below, after the map
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            f.close()
            raise
        self.fd = f.fileno()  # the hot loop reads windows with os.pread
        try:
            if first_index == 0:  # a lazy bound: find the first record of this chunk
                hint = self.resolve_hint() if self.resolve_hint is not None else None
                start, first_index = _resolve(lay, start, hint)
                if self.resolved is not None:
                    self.resolved(start, first_index)
                idx = first_index - 1
                res.first_frame = first_index
            is_pcap = lay.fmt == "pcap"
            hard = lay.size
            if is_pcap and fast_ok and lay.order == "<" and linktypes == [1]:
                # the common big-file case gets its own loop (little-endian pcap of Ethernet)
                idx = self._loop_pcap_eth(mm, start, end, idx)
                start = end  # nothing left for the general loop below
            elif not is_pcap and fast_ok and lay.order == "<":
                idx = self._loop_pcap_eth(mm, start, end, idx, pcapng=True)
                start = end
            gen = None if is_pcap else _records(mm, lay, start, end)
            rec = struct.Struct(lay.order + "IIII").unpack_from
            mul = lay.ifaces[0].mul
            iface = 0
            roff = start
            released = start & ~(mmap.PAGESIZE - 1)
            while True:
                # the pcap record loop is inlined: a generator step costs as much as the parsing
                if is_pcap:
                    # ``end`` bounds where records may *start* (a chunk's last record may run past
                    # it); the file size bounds where they may end
                    if roff >= end or roff + 16 > hard:
                        if roff < end and roff < hard:  # 1..15 bytes left: a record header cut off
                            self.truncated = f"last record (frame {idx + 1}) header truncated: {hard - roff} of 16 bytes"
                        break
                    sec, frac, incl, orig = rec(mm, roff)
                    off = roff
                    roff += 16 + incl
                    if roff > hard:
                        self.truncated = f"last record (frame {idx + 1}) truncated: {end - off - 16} of {incl} bytes"
                        break
                    frame = mm[off + 16:roff]
                    ts = sec * 1_000_000_000 + frac * mul
                else:
                    try:
                        iface, ts, frame, orig, off = next(gen)  # type: ignore[arg-type]
                    except StopIteration:
                        break
                idx += 1
                if not idx & 0x3FFF:
                    if buf and out_f is not None:
                        out_f.writelines(buf)
                        buf.clear()
                    if self.progress is not None:
                        self.progress(off - start)
                    # Keep memory flat on huge files: drop the mapped pages already processed
                    # from our resident set (they stay in the page cache).
                    page_end = off & ~(mmap.PAGESIZE - 1)
                    if page_end > released:
                        mm.madvise(mmap.MADV_DONTNEED, released, page_end - released)
                        released = page_end
                # -- fast path: Ethernet + IPv4 (20-byte header, not a fragment) + ESP -------------
                flen = len(frame)
                if fast_ok and flen >= 46 and linktypes[iface] == 1:
                    etype, vihl, tl, fragw, proto = eth_ip4(frame, 0)
                    end_ip = 14 + tl
                    if etype != 0x0800 or vihl != 0x45 or fragw & 0x3FFF:
                        proto = 0  # not IPv4 with a plain 20-byte header, or a fragment
                    if proto == 50:
                        key = frame[26:38]
                        p = 34
                    elif proto == 17 and (frame[36:38] == b"\x11\x94" or frame[34:36] == b"\x11\x94") \
                            and frame[42:46] != b"\0\0\0\0" and end_ip - 42 >= 8:
                        key = frame[26:34] + frame[42:46]
                        p = 42
                    else:
                        key = None
                    if key is not None:
                        e = sas.get(key)
                        if e is not None and e[1] is not None:
                            g = e[3]
                            try:
                                if g is not None:  # AES-GCM-16 inlined (RFC 4106: nonce salt|IV, AAD SPI|seq)
                                    plain = g(e[4] + frame[p + 8:p + 16], frame[p + 16:end_ip], frame[p:p + 8]) \
                                        if end_ip - p >= 36 and end_ip <= flen else None
                                else:
                                    plain = e[1](frame, p, end_ip, None)
                            except (DecryptError, InvalidTag):  # the slow path counts failures
                                plain = None
                            if plain is not None:
                                pl = len(plain)
                                pad = plain[-2] if pl > 1 else 255
                                nh = plain[-1]
                                if pad + 2 <= pl and (nh == 4 or nh == 41):
                                    # (only big-endian captures of Ethernet come here: the call to
                                    # trim_tfc is affordable, unlike in _loop_pcap_eth)
                                    inner = trim_tfc(plain[:pl - 2 - pad], nh)
                                    ilen = len(inner)
                                    tot = 32 + ilen + ((-ilen) & 3)
                                    app(epb(6, tot, 0, (ts >> 32) & 0xFFFFFFFF, ts & 0xFFFFFFFF, ilen, ilen))
                                    app(inner)
                                    app(trailers[ilen & 3](tot))
                                    e[2] += 1
                                    continue
                frame_slow(idx, iface, ts, frame, orig, off)
            if buf and out_f is not None:
                out_f.writelines(buf)
                buf.clear()
            if self.jbuf:
                jsonl_f.write("".join(self.jbuf))
                self.jbuf.clear()
        finally:
            mm.close()
            f.close()
        n_fast = 0
        for e in sas.values():  # fold the fast path's counts into the per-SA statistics
            e[0].stats.decrypted += e[2]
            n_fast += e[2]
            e[2] = 0
        res.frames = idx - first_index + 1
        res.truncated = self.truncated
        res.esp, res.other, res.dummy = self.n_esp + n_fast, self.n_other, self.n_dummy
        res.kept, res.unkept = self.n_kept, self.n_unkept
        res.states = {k: (s.mode, s.top, s.searches) for k, s in self.dec._sas.items()}
        return res

    def _loop_pcap_eth(self, mm, start: int, end: int, idx: int, pcapng: bool = False) -> int:  # noqa: C901
        """The hot loop for little-endian pcap (or pcapng EPBs) of Ethernet frames: one struct call reads the
        record header, the Ethernet type, the IPv4 header fields and the SA key (addresses + SPI),
        and the ESP bytes are sliced straight from the window (the frame itself is only copied
        when the general path needs it). Returns the last frame index.

        The file is read in windows of ``WINDOW`` bytes (``os.pread`` into a bytes object) rather
        than through the map: unpacking and slicing a bytes object is ~25 ns cheaper per call than
        the same on an mmap (buffer export per call), four calls per packet, and memory stays flat
        without madvise. A record that runs past the window starts the next one."""
        # record header | 12x MACs | ethertype (LE view of BE 0x0800 = 0x0008) | IPv4 header up to
        # the addresses | 12 bytes = src, dst, SPI (raw ESP) or src, dst, ports (UDP) | 4x | 8 bytes
        # = the IV (raw ESP) or SPI and sequence number, the AAD of an AEAD (UDP 4500): one slice
        # fewer per packet either way
        # (the Ethernet type and the IPv4 version/IHL byte come as one 3-byte string: one comparison;
        # the original length is only read again for the general path)
        hdr = struct.Struct("<III4x12x3sxBB2xHxB2x12s4x8s").unpack_from
        u32le = struct.Struct("<I").unpack_from
        u32be = struct.Struct("!I").unpack_from
        # pcapng: EPB = type, length, interface, ts high, ts low, caplen, origlen, then the frame
        ehdr = struct.Struct("<IIIIIII12x3sxBB2xHxB2x12s4x8s").unpack_from
        blk = struct.Struct("<II").unpack_from
        # per interface: (Ethernet?, mul, div, offset ns) for ts = units * mul // div + offset
        ifs = [(i.linktype == 1, i.mul, i.div, i.offset_s * 1_000_000_000) for i in self.lay.ifaces]
        rh = 28 if pcapng else 16  # record header length: where the frame starts
        sas = self.sas
        buf = self.buf
        out_f = self.out_f
        write = out_f.write  # straight into the buffered file (measured: as fast as collecting a
        # list or a bytearray)
        psec, sbase = -1, 0  # pcap: ns of the last record's second (one multiplication per second)
        epb = struct.Struct("<IIIIIII").pack
        trailers = [struct.Struct(f"<{(-k) & 3}xI").pack for k in range(4)]
        # An EPB's trailer (data padding, block length) goes out with the next EPB's header, in one
        # pack and one write: ``ptot`` is the pending block length (0: none), ``pk`` its data length & 3.
        # (Every integer operation here allocates: constants are folded ahead where they can be.)
        blk_len = (32, 35, 34, 33)  # EPB length - data length, by data length & 3 (32 + padding)
        trail_epb = [struct.Struct(f"<{(-k) & 3}xIIIIIIII").pack for k in range(4)]
        ptot = pk = 0
        frame_slow = self._frame
        mul = self.lay.ifaces[0].mul
        hard = self.lay.size  # records end before this; ``end`` only bounds where they start
        hs = 50 + rh  # bytes the one-struct header read takes
        iph = rh + 14  # the IP header's offset in a record
        # the window: w holds the file from byte ``base``; ``o`` is the record's offset in it
        fd = self.fd
        pread = os.pread
        window = max(WINDOW, hs)  # every window holds at least one whole header
        progress = self.progress
        base, w, wl, o = start, b"", 0, 0
        lim = -hs  # the last offset in w where a whole header can be read
        stop = min(end, hard - 11) - base  # records start before this (and have 12 bytes for a block header)
        need = 0  # a record longer than the window: the next window holds at least this much
        iface = 0
        while o < stop:
            # The next window: the first, when fewer than ``hs`` bytes are left, or when a record
            # runs past this one (the branches below set ``need`` and ``lim = -1`` to come here).
            if o > lim and base + wl < hard:
                if progress is not None:  # (per window, not per packet: one test fewer in the loop)
                    progress(base + o - start)
                base += o
                w = pread(fd, max(window, need), base)
                wl, o, need = len(w), 0, 0
                lim, stop = wl - hs, min(end, hard - 11) - base
                continue
            if pcapng:
                btype, blen = blk(w, o)
                if o + blen > wl and base + wl < hard and base + o + blen <= hard:  # runs past the window
                    need, lim = blen, -1
                    continue
                if btype != 6 or o > lim or blen < 32:
                    if blen < 12 or o + blen > wl:
                        break
                    off = base + o
                    if ptot:
                        write(trailers[pk](ptot))
                        ptot = 0
                    if btype in (2, 3):  # obsolete / simple packet blocks: the general reader's way
                        for iface, ts, frame, orig, roff in _records(mm, self.lay, off, off + blen):
                            idx += 1
                            frame_slow(idx, iface, ts, frame, orig, roff)
                        if buf:
                            out_f.writelines(buf)
                            buf.clear()
                    elif btype == 6:
                        idx += 1
                        for iface, ts, frame, orig, roff in _records(mm, self.lay, off, off + blen):
                            frame_slow(idx, iface, ts, frame, orig, roff)
                        if buf:
                            out_f.writelines(buf)
                            buf.clear()
                    o += blen
                    continue
                _t, _l, iface, hi, lo, incl, orig, ev, tlh, tll, fragw, proto, k12, x8 = ehdr(w, o)
                nxt = o + blen
                if 28 + incl > blen - 4:
                    break  # damaged block: stop as the scan did
                eth, imul, idiv, ioff = ifs[iface] if iface < len(ifs) else (False, 1, 1, 0)
                ts = (((hi << 32) | lo) * imul // idiv + ioff) & 0xFFFFFFFFFFFFFFFF  # EPB keeps 64 bits
                if not eth:
                    ev = b""
                fend = o + 28 + incl
            else:
                if o <= lim:
                    sec, frac, incl, ev, tlh, tll, fragw, proto, k12, x8 = hdr(w, o)
                else:  # a short record at the very end of the file: the general path
                    if o + 16 > wl:
                        break
                    sec, frac, incl = struct.unpack_from("<III", w, o)
                    ev = b""
                nxt = fend = o + 16 + incl
                if nxt > wl:
                    if base + wl < hard:  # the record runs past the window: the next one starts with it
                        need, lim = min(16 + incl, hard - base - o), -1
                        continue
                    self.truncated = (f"last record (frame {idx + 1}) truncated: {hard - base - o - 16} of {incl} "
                                      "bytes")
                    break
                if sec != psec:
                    psec, sbase = sec, sec * 1_000_000_000
                ts = sbase + frac * mul
            idx += 1
            # IPv4 with a 20-byte header, not a fragment (BE 0x3FFF seen little-endian: 0xFF3F)
            if ev == b"\x08\x00\x45" and not fragw & 0xFF3F and incl >= 38:
                ip = o + iph
                end_ip = ip + ((tlh << 8) | tll)
                if end_ip > fend:
                    end_ip = 0  # claims more than was captured: general path
                if proto == 50:
                    key = k12
                    q = ip + 20
                elif proto == 17 and (k12[8:10] == b"\x11\x94" or k12[10:12] == b"\x11\x94") and incl >= 54:
                    spi4 = x8[:4]
                    key = k12[:8] + spi4 if spi4 != b"\0\0\0\0" else None  # 4 zero bytes: IKE
                    q = ip + 28
                else:
                    key = None
                if key is not None and (esp_n := end_ip - q) >= 24:
                    try:
                        e = sas[key]  # (a subscript is cheaper than .get; unknown SAs are rare and slow anyway)
                    except KeyError:
                        e = None
                    plain = None
                    if e is None:
                        pass
                    elif e[3] is not None:  # AES-GCM-16 inlined (RFC 4106: nonce salt|IV, AAD SPI|seq); set only with e[1]
                        if esp_n >= 36:
                            try:
                                if proto == 50:  # x8: the IV
                                    plain = e[3](e[4] + x8, w[q + 16:end_ip], w[q:q + 8])
                                else:  # x8: SPI | sequence number
                                    plain = e[3](e[4] + w[q + 8:q + 16], w[q + 16:end_ip], x8)
                            except InvalidTag:  # the general path counts failures
                                pass
                    elif e[1] is not None:
                        try:
                            if e[6] is not None:  # CBC + HMAC inlined (crypto.esp._build_cbc)
                                upd, bs, hcopy, icv, same = e[6]
                                n = esp_n - 8 - bs - icv  # ciphertext after the IV
                                ie = end_ip - icv
                                if n >= bs and not n % bs:
                                    m = hcopy()
                                    m.update(w[q:ie])  # RFC 4303 §3.4.4: verify, then decrypt
                                    if same(m.finalize()[:icv], w[ie:end_ip]):
                                        plain = upd(w[q + 8:ie])[bs:]
                            else:
                                plain = e[1](w, q, end_ip, None)
                        except (DecryptError, InvalidTag):  # the general path counts failures
                            plain = None
                    elif e[5] is not None:
                        st = e[0]
                        top = st.top
                        seq = u32be(w, q + 4)[0]
                        th, tl = top >> 32, top & 0xFFFFFFFF
                        if tl >= seq:  # the closest candidate (crypto.esn.candidates' first)
                            hi = th + 1 if tl - seq > 0x80000000 else th
                        else:
                            hi = th - 1 if seq - tl > 0x80000000 else th
                        if 0 <= hi <= 0xFFFFFFFF:
                            try:
                                plain = e[5](w, q, end_ip, hi)
                            except DecryptError:
                                plain = None
                            if plain is not None:
                                full = (hi << 32) | seq
                                if full > top:
                                    st.top = full
                                    st.stats.top, st.stats.seq_hi = full, hi
                    if plain is not None:
                        pl = len(plain)
                        pad = plain[-2] if pl > 1 else 255
                        nh = plain[-1]
                        if pad + 2 <= pl and (nh == 4 or nh == 41):
                            ilen = pl - 2 - pad
                            if nh == 4 and ilen >= 20:
                                tl = (plain[2] << 8) | plain[3]
                                if 20 <= tl < ilen:  # TFC padding (RFC 4303 §2.7)
                                    ilen = tl
                            elif nh == 41 and ilen >= 40:
                                tl = ((plain[4] << 8) | plain[5]) + 40
                                if 40 < tl < ilen:
                                    ilen = tl
                            k = ilen & 3
                            tot = ilen + blk_len[k]
                            if ptot:
                                write(trail_epb[pk](ptot, 6, tot, 0, ts >> 32, ts & 0xFFFFFFFF, ilen, ilen))
                            else:
                                write(epb(6, tot, 0, ts >> 32, ts & 0xFFFFFFFF, ilen, ilen))
                            write(plain[:ilen])
                            ptot, pk = tot, k
                            e[2] += 1
                            o = nxt
                            continue
            if not pcapng:
                orig = u32le(w, o + 12)[0]
            if ptot:
                write(trailers[pk](ptot))
                ptot = 0
            frame_slow(idx, iface, ts, w[o + rh:fend], orig, base + o)
            if buf:  # what the general path produced, in order
                out_f.writelines(buf)
                buf.clear()
            o = nxt
        if ptot:
            write(trailers[pk](ptot))
        off = base + o
        if not pcapng and off < end and off < hard and self.truncated is None:  # 1..15 bytes left
            self.truncated = f"last record (frame {idx + 1}) header truncated: {hard - off} of 16 bytes"
        return idx

    def _frame(self, idx: int, iface: int, ts: int, frame: bytes, orig: int, off: int) -> None:  # noqa: C901
        """Everything about one frame, for every case the fast path leaves out."""
        opts = self.opts
        out_f, jsonl_f = self.out_f, self.jsonl_f
        keep_other = opts.keep_other and out_f is not None
        app = self.buf.append
        lt = self.linktypes[iface] if iface < len(self.linktypes) else -1
        if keep_other and lt < 0:  # an interface no IDB declares (damaged file): nothing to write it on
            keep_other = False
            self.n_unkept += 1
        n = len(frame)
        esp = None
        src = dst = b""
        from ..decode.link import ip_offset

        ver, l3 = ip_offset(lt, frame) if lt >= 0 else (0, 0)
        proto = 0
        if ver == 4 and n >= l3 + 20:
            vihl = frame[l3]
            hl = (vihl & 15) * 4
            fl = (frame[l3 + 6] << 8) | frame[l3 + 7]
            proto = frame[l3 + 9]
            if (fl & 0x3FFF) or hl < 20 or vihl >> 4 != 4:
                ver = -1  # fragment or odd header: general decoder
            else:
                tl = (frame[l3 + 2] << 8) | frame[l3 + 3]
                end_ip = min(l3 + tl, n)
                p = l3 + hl
                src, dst = frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20]
        elif ver == 6 and n >= l3 + 40:
            proto = frame[l3 + 6]
            end_ip = min(l3 + 40 + ((frame[l3 + 4] << 8) | frame[l3 + 5]), n)
            p = l3 + 40
            src, dst = frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40]
            if proto not in (50, 17, 6, 1, 58):
                ver = -1  # extension headers: general decoder
        elif ver in (4, 6):
            ver = -1
        udp_encap = False
        if ver > 0:
            if proto == 50:
                esp = frame[p:end_ip]
            elif proto == 17 and end_ip - p >= 8:
                sport, dport, _ulen = _UDP.unpack_from(frame, p)
                if sport == 4500 or dport == 4500:
                    pay = frame[p + 8:end_ip]
                    # RFC 3948 §2.2-2.3: 0xFF = keepalive, 4 zero bytes = IKE, else ESP
                    if len(pay) >= 8 and pay[:4] != b"\0\0\0\0":
                        esp = pay
                        udp_encap = True
            elif proto == 6:
                ver = -1  # RFC 8229 TCP encapsulation needs stream reassembly
        if ver == -1:
            if self.decoder is None:
                from ..decode.demux import Decoder

                self.decoder = Decoder()
            from ..model.packets import EspPacket, RawFrame

            pkt = self.decoder.decode(RawFrame(idx, ts / 1e9, ts, lt, bytes(frame), orig, iface, off))
            if type(pkt) is EspPacket:
                esp = pkt.data
                af = socket.AF_INET6 if ":" in pkt.src else socket.AF_INET
                src, dst = socket.inet_pton(af, pkt.src), socket.inet_pton(af, pkt.dst)
                udp_encap = pkt.udp_encap
        if esp is None or len(esp) < 8:
            self.n_other += 1
            if keep_other:
                self.n_kept += 1
                h, t = epb_header(1 + iface, ts, n, orig)
                app(h)
                app(frame)
                app(t)
            return
        # -- ESP ---------------------------------------------------------------------------------
        self.n_esp += 1
        spi, seq = _ESPH.unpack_from(esp, 0)
        key = src + dst + esp[:4]
        e = self.sas.get(key)
        if e is None:
            e = self._entry(key, src, dst, spi)
        st = e[0]
        if e[2]:
            st.stats.decrypted += e[2]  # fold fast-path counts before open_raw touches them
            e[2] = 0
        code, plain, hi = self.dec.open_raw(st, seq, bytes(esp))
        if e[1] is None:
            self._refresh(e)
        nh = None
        if code == 0:
            pl = len(plain)
            pad = plain[-2] if pl >= 2 else 255
            if pad + 2 > pl:
                code, plain = 3, f"pad length {pad} exceeds the {max(pl - 2, 0)}-byte payload"
                st.stats.decrypted -= 1
                st.stats.malformed += 1
            else:
                nh = plain[-1]
                ilen = pl - 2 - pad
        elif code == 1 and st.stats.decrypted == 0:
            af = socket.AF_INET if len(src) == 4 else socket.AF_INET6
            self.early_fail.add((socket.inet_ntop(af, src), socket.inet_ntop(af, dst), spi))
        if code != 0:
            if keep_other:
                self.n_kept += 1
                c = f"ipsecscope: {_esp.STATUS[code]}: {plain}".encode()
                cl = len(c)
                optb = struct.pack("<HH", 1, cl) + c + b"\0" * ((-cl) & 3) + b"\0\0\0\0"
                h, t = epb_header(1 + iface, ts, n, orig, len(optb))
                app(h)
                app(frame)
                app(t[:-4])
                app(optb)
                app(t[-4:])
            if jsonl_f is not None:
                self.jbuf.append(_jsonl.record(idx, ts, st, src, dst, spi, seq, hi, _esp.STATUS[code], None, None,
                                               len(esp), opts.hex, reason=plain, udp_encap=udp_encap))
            return
        if nh == 59:  # dummy packet (RFC 4303 §2.6): nothing to export
            self.n_dummy += 1
            return
        if nh == 4 or nh == 41:
            inner = trim_tfc(plain[:ilen], nh)
            pkt_bytes = inner
        else:
            inner = plain[:ilen]
            pkt_bytes = _ip_header(src, dst, nh, ilen) + inner if out_f is not None else b""
        if opts.pcapng and out_f is not None:
            h, t = epb_header(0, ts, len(pkt_bytes), len(pkt_bytes))
            app(h)
            app(pkt_bytes)
            app(t)
        if jsonl_f is not None:
            self.jbuf.append(_jsonl.record(idx, ts, st, src, dst, spi, seq, hi, "ok", nh, inner, len(esp),
                                           opts.hex, udp_encap=udp_encap))
            if len(self.jbuf) >= 4096:
                jsonl_f.write("".join(self.jbuf))
                self.jbuf.clear()


# --- orchestration ------------------------------------------------------------------------------

_JOB: dict = {}


class _Shared:
    """Per-chunk counters in anonymous shared memory (MAP_SHARED, so forked children and this
    process see the same pages): progress in bytes, and the resolved (offset, frame index) of
    lazy chunk bounds, so the walk to a chunk's first record starts from the nearest bound
    someone already found instead of from the start of the file (each header is walked about
    once in all). Aligned 8-byte stores; a slot is only trusted when both values are non-zero
    (each is written once, from 0)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._mm = mmap.mmap(-1, 24 * max(n, 1))
        self.q = memoryview(self._mm).cast("q")

    def progress(self, i: int, done: int) -> None:
        self.q[i] = done

    def done(self) -> int:
        return sum(self.q[:self.n])

    def hint(self, i: int) -> tuple[int, int] | None:
        q, n = self.q, self.n
        for j in range(i - 1, 0, -1):
            off, idx = q[n + j], q[2 * n + j]
            if off and idx:
                return off, idx
        return None

    def publish(self, i: int, off: int, idx: int) -> None:
        self.q[self.n + i] = off
        self.q[2 * self.n + i] = idx

    def close(self) -> None:
        self.q.release()
        self._mm.close()


def _chunk_main(i: int) -> ChunkResult:
    """Chunk ``i`` of the job set up in ``_JOB``, into its part file(s) (in a forked child, or in
    this process once it has finished chunk 0)."""
    job = _JOB
    lay: Layout = job["layout"]
    bounds = lay.bounds
    start, first = bounds[i]
    end = bounds[i + 1][0] if i + 1 < len(bounds) else lay.size
    shared: _Shared = job["shared"]

    w = _Worker(lay, job["keys"], job["opts"], lambda done: shared.progress(i, done))
    w.resolve_hint = lambda: shared.hint(i)
    w.resolved = lambda off, idx: shared.publish(i, off, idx)
    part = jpart = None
    out_f = jf = None
    if job["opts"].pcapng:
        part = f"{job['tmp']}/part{i:04d}"
        out_f = create_private(part, "wb", buffering=1 << 20)  # cleartext: 0600 like the output
    if job["opts"].jsonl:
        jpart = f"{job['tmp']}/part{i:04d}.jsonl"
        jf = create_private(jpart, "w", buffering=1 << 20, encoding="utf-8")
    try:
        res = w.run(start, end, first, out_f, jf)
    finally:
        if out_f is not None:
            out_f.close()
        if jf is not None:
            jf.close()
    shared.progress(i, end - start)
    res.part, res.jsonl_part = part, jpart
    return res


def _take(queue_fd: int) -> int | None:
    """The next chunk number from the work queue (a pipe pre-filled with 2-byte numbers; reads
    of at most PIPE_BUF bytes are atomic, so every chunk goes to exactly one process)."""
    b = os.read(queue_fd, 2)
    return int.from_bytes(b, "little") if len(b) == 2 else None


def _child(queue_fd: int, result_fd: int) -> None:
    """Forked worker: take chunks until the queue is empty, send [(chunk, ChunkResult)] (or the
    exception) back pickled, and leave without running the parent's cleanup (os._exit)."""
    import pickle

    code = 1
    try:
        try:
            done = []
            while (i := _take(queue_fd)) is not None:
                done.append((i, _chunk_main(i)))
            payload = pickle.dumps(("ok", done), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
            try:
                payload = pickle.dumps(("error", exc))
            except Exception:  # noqa: BLE001 - an exception that does not pickle
                payload = pickle.dumps(("error", DecryptError(f"worker process failed: {exc!r}")))
        with os.fdopen(result_fd, "wb") as f:
            f.write(payload)
        code = 0
    finally:
        os._exit(code)


def run(path: str | os.PathLike[str], keys, *, out: str | None, jsonl_out=None, opts: Options,
        jobs: int = 0, progress: Callable[[int, int], None] | None = None, dsb: bool = False,
        parallel_min_bytes: int = PARALLEL_MIN_BYTES, mark_every: int = 512, inputs=()) -> RunStats:
    """Decrypt ``path`` into ``out`` (pcapng) and/or ``jsonl_out`` (path, or a text stream).

    Output paths are written through :func:`ipsecscope.outfile.atomic_output` (0600, temporary
    file renamed into place only when the run succeeds); an output that is ``path`` or one of
    ``inputs`` (key files) is refused before anything is read."""
    path = str(path)
    inputs = [path, *inputs]
    paths = [o for o in (out, jsonl_out) if isinstance(o, (str, os.PathLike))]
    for o in paths:
        refuse_inputs(o, inputs)
    if len(paths) == 2 and (os.path.abspath(paths[0]) == os.path.abspath(paths[1])
                            or same_file(paths[0], paths[1])):
        raise ExportError("the pcapng and the JSON lines output name the same file; use two files")
    from contextlib import ExitStack

    with ExitStack() as stack:  # outputs committed (renamed into place) only if the run succeeds
        if isinstance(out, (str, os.PathLike)):
            out = stack.enter_context(atomic_output(out, "wb", inputs=inputs))
        if isinstance(jsonl_out, (str, os.PathLike)):
            jsonl_out = stack.enter_context(atomic_output(jsonl_out, "w", inputs=inputs))
        return _run(path, keys, out, jsonl_out, opts, jobs, progress, dsb, parallel_min_bytes, mark_every)


def _run(path: str, keys, out, jsonl_out, opts: Options, jobs: int, progress, dsb: bool,
         parallel_min_bytes: int, mark_every: int) -> RunStats:
    if jobs <= 0:
        jobs = min(os.cpu_count() or 1, 8)
    try:
        size = os.path.getsize(path)
        if not os.path.isfile(path) and not os.path.isdir(path):  # FIFO, pipe: open() would block
            raise CaptureError(f"{path} is not a regular file (a pipe or device): save the capture to a file first")
        with open(path, "rb"):  # a directory or an unreadable file: one line here, not a traceback in scan()
            pass
    except OSError as exc:
        raise CaptureError(f"cannot read {path}: {exc.strerror}") from None
    chunks = chunk_count(size, jobs) if size >= parallel_min_bytes else 1
    lay = scan(path, chunks, mark_every)
    tmp = gz_note = None
    if lay is None:
        lay, tmp, gz_note = _decompress(path, jobs, mark_every)
    try:
        return _run_layout(path, lay, keys, out, jsonl_out, opts, jobs, progress, dsb, gz_note)
    finally:
        if tmp is not None:
            os.unlink(tmp)


def _run_layout(path: str, lay: Layout | None, keys, out, jsonl_out, opts: Options, jobs: int, progress,
                dsb: bool, gz_note: str | None) -> RunStats:
    if lay is not None and lay.secrets:
        for stype, data in lay.secrets:
            add_secrets_block(keys, stype, data)
    opts.pcapng = out is not None
    opts.jsonl = jsonl_out is not None
    stats = RunStats()
    if lay is None:
        return _run_general(path, keys, out, jsonl_out, opts, progress, dsb, stats)
    stats.truncated = lay.truncated or gz_note
    writer = PcapngWriter(out) if out is not None else None
    if writer is not None:
        writer.add_interface(LINKTYPE_RAW, name="ipsecscope decrypted ESP inner packets")
        if opts.keep_other:
            for i in lay.ifaces:
                writer.add_interface(i.linktype)
        writer.f.flush()
    jf, own_jf = _open_jsonl(jsonl_out)
    nchunks = max(len(lay.bounds), 1)
    stats.jobs = min(jobs, nchunks)
    results: list[ChunkResult] = []
    try:
        if nchunks <= 1 or jobs == 1:
            lay.bounds = lay.bounds[:1] or [(lay.start, 1)]
            w = _Worker(lay, keys, opts, (lambda d: progress(d, lay.size)) if progress else None)
            if writer is not None:
                writer.f.flush()
            results.append(w.run(lay.bounds[0][0], lay.size, lay.bounds[0][1],
                                 writer.f if writer is not None else None, jf))
            results[-1].states = {k: v for k, v in results[-1].states.items()}
            final_dec = w.dec
        else:
            results, final_dec = _run_parallel(lay, keys, opts, jobs, writer, jf, progress, stats)
        if progress:
            progress(lay.size, lay.size)
        _collect(results, final_dec, stats)
        if writer is not None and dsb:
            _write_dsb(writer, stats.used_keys)
    finally:
        if writer is not None:
            writer.close()
        if own_jf:
            jf.close()
        elif jf is not None:
            jf.flush()
    return stats


def _open_jsonl(jsonl_out):
    if jsonl_out is None:
        return None, False
    if hasattr(jsonl_out, "write"):
        return jsonl_out, False
    return open(jsonl_out, "w", buffering=1 << 20), True


def chunk_count(size: int, jobs: int) -> int:
    """How many chunks to split ``size`` bytes into for ``jobs`` processes: up to
    MAX_CHUNKS_PER_JOB per process (each at least CHUNK_MIN_BYTES); whichever process is free
    takes the next one, so a process that got less CPU than the others does fewer."""
    if jobs <= 1:
        return 1
    return jobs * max(1, min(MAX_CHUNKS_PER_JOB, size // (jobs * CHUNK_MIN_BYTES)))


def _run_parallel(lay: Layout, keys, opts: Options, jobs: int, writer, jf, progress, stats: RunStats):
    """Chunk 0 in this process straight into the output; chunks 1.. taken from a shared queue by
    ``jobs - 1`` forked children and by this process once chunk 0 is done, each into part files;
    then the ESN reconcile and the parts appended in order.

    Plain os.fork and pipes rather than multiprocessing: importing and starting a Pool costs more
    than this whole scheme (start-up counts: a 200k-packet capture takes ~0.3 s)."""
    import pickle
    import select
    import shutil

    nchunks = len(lay.bounds)
    nproc = min(jobs, nchunks)
    import tempfile

    tmp = tempfile.mkdtemp(prefix="ipsecscope-decrypt-", dir=_tmp_dir(writer))
    shared = _Shared(nchunks)
    _JOB.clear()
    _JOB.update(layout=lay, keys=keys, opts=opts, tmp=tmp, shared=shared)
    children: dict[int, int] = {}  # pid -> result pipe
    qr = qw = -1
    try:
        qr, qw = os.pipe()
        os.write(qw, b"".join(i.to_bytes(2, "little") for i in range(1, nchunks)))  # < 64 KiB
        os.close(qw)
        qw = -1
        if writer is not None:
            writer.f.flush()  # nothing buffered may be inherited (and written twice)
        if jf is not None:
            jf.flush()
        for _ in range(nproc - 1):
            rr, rw = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child leaves through os._exit
                os.close(rr)
                _child(qr, rw)
            os.close(rw)
            children[pid] = rr

        def progress0(done: int) -> None:
            shared.progress(0, done)
            if progress:
                progress(shared.done(), lay.size)

        w0 = _Worker(lay, keys, opts, progress0)
        start0, first0 = lay.bounds[0]
        r0 = w0.run(start0, lay.bounds[1][0], first0, writer.f if writer is not None else None, jf)
        shared.progress(0, lay.bounds[1][0] - start0)
        results: list[ChunkResult | None] = [r0] + [None] * (nchunks - 1)
        while (i := _take(qr)) is not None:  # then help with the rest
            results[i] = _chunk_main(i)
            if progress:
                progress(shared.done(), lay.size)
        # the children's results (read before waiting for them: a result can exceed the pipe buffer)
        bufs = {fd: bytearray() for fd in children.values()}
        pending = set(bufs)
        while pending:
            ready, _, _ = select.select(list(pending), [], [], 0.1)
            for fd in ready:
                data = os.read(fd, 1 << 20)
                if data:
                    bufs[fd] += data
                else:
                    pending.discard(fd)
            if progress:
                progress(shared.done(), lay.size)
        failure = None
        for pid, fd in list(children.items()):
            _, status = os.waitpid(pid, 0)
            del children[pid]
            os.close(fd)
            if not bufs[fd]:
                failure = failure or DecryptError(f"a worker process died (wait status {status}); try --jobs 1")
                continue
            kind, val = pickle.loads(bufs[fd])
            if kind == "error":
                failure = failure or val
            else:
                for i, r in val:
                    results[i] = r
        if failure is not None:
            raise failure
        if any(r is None for r in results):  # pragma: no cover - every chunk is taken exactly once
            raise DecryptError("a chunk of the capture was not processed; try --jobs 1")
        # Reconcile ESN state across chunks (see module docstring).
        seeds: dict = {}
        final = _Worker(lay, keys, opts)
        for i, r in enumerate(results):
            redo = i > 0 and any(
                k in seeds and seeds[k][1] >= 0 for k in _text_keys(r.early_fail, r.states))
            if redo:
                w = _Worker(lay, keys, opts)
                w.seed(seeds)
                w.resolve_hint = (lambda i=i: shared.hint(i))
                start, first = lay.bounds[i]
                end = lay.bounds[i + 1][0] if i + 1 < nchunks else lay.size
                with open(r.part, "wb") if r.part else _null() as of, \
                        open(r.jsonl_part, "w") if r.jsonl_part else _null() as jof:
                    nr = w.run(start, end, first, of if r.part else None, jof if r.jsonl_part else None)
                nr.part, nr.jsonl_part = r.part, r.jsonl_part
                results[i] = r = nr
                stats.reconciled_chunks += 1
            for k, (mode, top, searches) in r.states.items():
                old = seeds.get(k)
                if old is None:
                    seeds[k] = (mode, top, searches)
                else:
                    seeds[k] = (old[0] if mode is None else mode, max(old[1], top), old[2] + searches)
        final.seed(seeds)
        for r in results:
            if writer is not None and r.part:
                writer.f.flush()
                _append_file(r.part, writer.f)
            if jf is not None and r.jsonl_part:
                with open(r.jsonl_part) as pf:
                    shutil.copyfileobj(pf, jf, 1 << 22)
        # the stats objects came back by pickling: merge them into one decryptor's view
        final.dec.stats.clear()
        for r in results:
            for k, s in r.stats.items():
                t = final.dec.stats.setdefault(k, SaStats(keys_source=s.keys_source))
                t.decrypted += s.decrypted
                t.icv_failed += s.icv_failed
                t.no_key += s.no_key
                t.malformed += s.malformed
                t.unsupported += s.unsupported
                t.esn = s.esn if s.esn is not None else t.esn
                if s.top is not None and (t.top is None or s.top > t.top):
                    t.top, t.seq_hi = s.top, s.seq_hi
                t.last_reason = s.last_reason or t.last_reason
        return results, final.dec
    finally:
        for pid, fd in children.items():  # only after an error (Ctrl-C, a failed chunk here)
            try:
                os.kill(pid, 15)
                os.waitpid(pid, 0)
            except OSError:
                pass
            os.close(fd)
        for fd in (qr, qw):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)
        _JOB.clear()
        shared.close()


def _append_file(part: str, f) -> None:
    """Append a worker's part to the output: in the kernel (sendfile) when the output is a
    regular file, else through Python."""
    import shutil

    f.flush()
    with open(part, "rb") as pf:
        done = 0
        try:
            out_fd = f.fileno()
            size = os.fstat(pf.fileno()).st_size
            while done < size:
                n = os.sendfile(out_fd, pf.fileno(), done, size - done)
                if n <= 0:
                    raise OSError("sendfile made no progress")
                done += n
        except (OSError, AttributeError, ValueError):
            pf.seek(done)
            shutil.copyfileobj(pf, f, 1 << 22)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def _text_keys(keys: set, states: dict) -> list:
    out = []
    for k in keys:
        src, dst, spi = k
        if isinstance(src, bytes):
            af = socket.AF_INET if len(src) == 4 else socket.AF_INET6
            out.append((socket.inet_ntop(af, src), socket.inet_ntop(af, dst), spi))
        else:
            out.append(k)
    return out


def _tmp_dir(writer) -> str | None:
    """Part files go next to the output (same filesystem, no copy across devices), unless the
    output is not a regular file (/dev/null, a pipe)."""
    try:
        name = os.path.abspath(writer.f.name)
        if os.path.isfile(name):
            return os.path.dirname(name)
    except (AttributeError, TypeError, OSError):
        pass
    return None


def _collect(results: list[ChunkResult], dec: EspDecryptor, stats: RunStats) -> None:
    for r in results:
        stats.truncated = stats.truncated or r.truncated
        stats.frames += r.frames
        stats.esp += r.esp
        stats.other += r.other
        stats.dummy += r.dummy
        stats.kept += r.kept
        stats.unkept += r.unkept
    used = []
    for k, s in dec.summary():
        stats.decrypted += s.decrypted
        stats.icv_failed += s.icv_failed
        stats.no_key += s.no_key
        stats.malformed += s.malformed
        stats.unsupported += s.unsupported
        if s.decrypted:
            st = dec.state(*k)
            if st.keys is not None and st.keys not in used:
                used.append(st.keys)
    stats.per_sa = dec.summary()
    stats.used_keys = used
    stats.written = stats.decrypted - stats.dummy


def _write_dsb(writer: PcapngWriter, used) -> None:
    from ..keys import KeyStore, jsonkeys

    store = KeyStore()
    for k in used:
        store.add_esp(k)
    writer.write_secrets(jsonkeys.dumps(store, True).encode(), comment=(
        "ipsecscope: keys of the SAs decrypted into this file (private secrets type 0x4950534b, "
        "native JSON). As Wireshark esp_sa rows:\n" + str(dump_keys(store, "esp_sa", True))))


GZIP_FAST_MIN_BYTES = 4 << 20


def _decompress(path: str, chunks: int, mark_every: int) -> tuple[Layout | None, str | None, str | None]:
    """A big gzip'd capture is inflated to a temporary file so the fast path (and several
    processes) can read it: (layout, temporary path to delete, note about a cut-off gzip)."""
    import gzip
    import shutil
    import zlib

    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b" or os.fstat(f.fileno()).st_size < GZIP_FAST_MIN_BYTES:
            return None, None, None
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix="ipsecscope-", suffix=".cap")
    note = None
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(path, "rb") as gz:
            try:
                shutil.copyfileobj(gz, out, 1 << 22)
            except (EOFError, zlib.error, OSError) as exc:  # cut-off or damaged: keep what inflated
                note = f"{path}: gzip stream ends early ({exc}); frames up to there were read"
        lay = scan(tmp, chunks, mark_every)
    except BaseException:
        os.unlink(tmp)
        raise
    if lay is None:
        os.unlink(tmp)
        return None, None, None
    return lay, tmp, note


def _run_general(path, keys, out, jsonl_out, opts: Options, progress, dsb: bool, stats: RunStats) -> RunStats:
    """gzip'd or unusual files: the general capture reader and decoder, one process."""
    from ..capture import open_capture
    from ..decode.demux import Decoder
    from ..model.packets import EspPacket

    dec = EspDecryptor(keys)
    decoder = Decoder()
    with open_capture(path):  # not a capture: fail before creating (and truncating) the output files
        pass
    writer = PcapngWriter(out) if out is not None else None
    jf, own_jf = _open_jsonl(jsonl_out)
    iface_map: dict[int, int] = {}
    if writer is not None:
        writer.add_interface(LINKTYPE_RAW, name="ipsecscope decrypted ESP inner packets")
    try:
        with open_capture(path) as reader:
            seen = 0
            for n, raw in enumerate(reader, 1):
                if len(reader.secrets) != seen:  # keys shipped inside the capture (pcapng DSB)
                    for stype, sdata in reader.secrets[seen:]:
                        add_secrets_block(keys, stype, sdata)
                    seen = len(reader.secrets)
                stats.frames += 1
                pkt = decoder.decode(raw)
                # linktype < 0: an interface no IDB declared (damaged file) cannot be written out
                keep = opts.keep_other and writer is not None
                if keep and raw.linktype < 0:
                    keep = False
                    stats.unkept += 1
                if type(pkt) is not EspPacket:
                    stats.other += 1
                    if keep:
                        stats.kept += 1
                        i = iface_map.get(raw.iface)
                        if i is None:
                            i = iface_map[raw.iface] = writer.add_interface(raw.linktype)
                        writer.write_packet(i, raw.ts_ns, raw.data, raw.orig_len)
                    continue
                stats.esp += 1
                st = dec.state(pkt.src, pkt.dst, pkt.spi)
                r = dec.decrypt(pkt)
                src = socket.inet_pton(socket.AF_INET6 if ":" in pkt.src else socket.AF_INET, pkt.src)
                dst = socket.inet_pton(socket.AF_INET6 if ":" in pkt.dst else socket.AF_INET, pkt.dst)
                if r.status != "ok":
                    if keep:
                        stats.kept += 1
                        i = iface_map.get(raw.iface)
                        if i is None:
                            i = iface_map[raw.iface] = writer.add_interface(raw.linktype)
                        writer.write_packet(i, raw.ts_ns, raw.data, raw.orig_len,
                                            comment=f"ipsecscope: {r.status}: {r.reason}")
                    if jf is not None:
                        jf.write(_jsonl.record(raw.index, raw.ts_ns, st, src, dst, pkt.spi, pkt.seq, r.seq_hi,
                                               r.status, None, None, len(pkt.data), opts.hex, reason=r.reason,
                                               udp_encap=pkt.udp_encap))
                    continue
                if r.next_header == 59:
                    stats.dummy += 1
                    continue
                if writer is not None:
                    data = r.inner if r.next_header in (4, 41) else _ip_header(src, dst, r.next_header, len(r.inner)) + r.inner
                    writer.write_packet(0, raw.ts_ns, data)
                if jf is not None:
                    jf.write(_jsonl.record(raw.index, raw.ts_ns, st, src, dst, pkt.spi, pkt.seq, r.seq_hi, "ok",
                                           r.next_header, r.inner, len(pkt.data), opts.hex, udp_encap=pkt.udp_encap))
                if progress is not None and n % 4096 == 0:
                    progress(reader.bytes_read, reader.total_bytes)
            stats.truncated = reader.truncated
        _collect([], dec, stats)
        if writer is not None and dsb:
            _write_dsb(writer, stats.used_keys)
    finally:
        if writer is not None:
            writer.close()
        if own_jf:
            jf.close()
    return stats


__all__ = ["Layout", "Options", "RunStats", "run", "scan"]
