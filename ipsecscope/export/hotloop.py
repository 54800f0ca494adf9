"""The decrypt hot loop: one worker over one byte range of a capture (see
:mod:`ipsecscope.export.engine` for the whole design).

``_Worker.run`` walks the records; ``_loop_pcap_eth`` is the fast loop for little-endian pcap
and pcapng of Ethernet (one fused struct read per record, formats from
:mod:`ipsecscope.decode.fused`); ``_frame`` (:mod:`ipsecscope.export.perframe`, a base class of
the worker) handles every other case (IPv6, transport mode, ESN inference, failures, --keep-other,
JSON lines), handing what it cannot parse to the general decoder. The per-SA state the loops
consult is a slotted :class:`SaSlot`.
"""

from __future__ import annotations

import _socket as socket  # socket.py's C module, the same inet_* functions: no socket.py enums (~3.7 ms CPU)
import gc
import mmap
import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

from cryptography.exceptions import InvalidTag

from ..capture.layout import Layout, guess, records, resolve
from ..crypto.esp import EspDecryptor, SaStats
from ..decode.fused import EPB_ETH_IPV4, EPB_OUT, ETH_IPV4_END, ETH_IPV4_NET, PCAP_ETH_IPV4
from ..errors import DecryptError
from . import direct as _direct
from .perframe import FramePath

# Bytes the hot loop reads at a time (_Worker._loop_pcap_eth). 1 MiB: the window, the bulk step's
# output written and read back (export.bulk) and its scratch stay in a core's L2 cache: 3-10 % less
# CPU than 2 MiB at 200k-1M packets at load 5-6 (other processes on the caches), 1-3 % at load 2.5
# (issue 15)
WINDOW = 1 << 20
# Captures at least this big take export.bulk's numpy step per window (AES-GCM-16 and CBC + HMAC
# runs). Importing numpy costs ~0.09 s of CPU, what the step saves on ~80k packets (~1 us each);
# tests set 0 to run it on small captures.
BULK_MIN_BYTES = 32 << 20


@dataclass
class Options:
    """What a decrypt run writes (outputs, other frames, hex, a frame selection)."""

    keep_other: bool = False
    jsonl: bool = False
    pcapng: bool = True
    hex: bool = False
    # Only these frame numbers (a display filter's selection, `decrypt -Y`): every frame then takes
    # the general path, where _frame skips the others (the hot loops know nothing of filters).
    frames: frozenset[int] | None = None
    # AH packets' payloads and records (export/ah.py); False: AH frames are other frames, kept as
    # captured (dissect's decrypted copy, where tshark dissects AH and its payload itself)
    ah: bool = True
    # Every packet the decoder gives: several RFC 8229 records of one segment, records given up
    # late (written after later frames: engine.py). False: one record a frame, each in its frame's
    # place (dissect's decrypted copy, whose record n must be frame n): a frame's first packet only,
    # and a record that waited behind a TCP gap stays in its segment's frame, kept as captured.
    late: bool = True


@dataclass
class ChunkResult:
    """What a worker did with one chunk: counts, per-SA stats and ESN state, its part files."""

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
    guessed: int = -1  # the chunk started at layout.guess()'s offset, numbered from 1: for the engine to check
    end_off: int = -1  # where the fast loop stopped: the next chunk's first record (-1: another loop ran)
    nested_sas: set = field(default_factory=set)  # inner SAs of ESP-in-ESP (decrypt_nested)
    ah: object = None  # export.ah.AhTotals: the chunk's AH packets (None: it had none)
    # AH's ESN state per SA as crypto.ah.AhVerifier.states() gives it, and the SAs whose ICV
    # failed before one verified in the chunk: the engine's reconcile step treats them as ESP's
    ah_states: dict = field(default_factory=dict)
    ah_early_fail: set = field(default_factory=set)
    # decode.ip.FragReport: the IP datagrams still incomplete at the chunk's end and what its
    # fragments touched (None: the chunk had no fragment), for the engine's reconcile step
    frag: object = None
    # the general decoder's malformed marks by layer (RFC 8229 gaps, IP datagrams never completed, ...)
    marks: dict = field(default_factory=dict)
    general: int = 0  # frames handed to the general decoder (0: its state cannot have changed)
    # the decoder's RFC 8229 streams at the chunk's end (decode.tcpencap.TcpStream by 4-tuple) and
    # the exact times of the frames their waiting segments came in: what one pass holds there
    tcp: dict | None = None
    tcp_held: dict = field(default_factory=dict)


class SaSlot:
    """What the loops know about one SA, looked up by its wire key (addresses + SPI bytes).

    A slotted object rather than a list: the same speed per access in CPython 3.11 (both are
    specialised loads) and named fields (benchmarks/bench_decrypt.py measured no difference)."""

    __slots__ = ("st", "open_at", "n", "gcm", "salt", "esn_open", "cbc")

    def __init__(self, st) -> None:
        self.st = st  # crypto.esp SaState: keys, ESN mode, highest sequence number, statistics
        self.open_at = None  # fast opener (non-ESN SA with keys), or None: the general path
        self.n = 0  # packets the fast loops decrypted, folded into st.stats at the end
        self.gcm = None  # AES-GCM-16 inlined: the AESGCM decrypt call (set only with open_at)
        self.salt = b""  # ... and its 4-byte salt (RFC 4106 nonce = salt | IV)
        self.esn_open = None  # an ESN SA with history and an ICV: open_at guessing the high bits
        self.cbc = None  # CBC + HMAC inlined: (CBC update, block size, HMAC copy, ICV length, compare)


def tunnel_len(plain: bytes, ilen: int, nh: int) -> int:
    """The length of the tunnelled IP packet (next header 4 or 41) at the start of a decrypted
    payload whose padding ends at ``ilen``, without TFC padding (RFC 4303 §2.7); -1 when the fast
    loops must leave it to the general path: the payload cannot hold the packet
    (crypto.esp.check_payload then says why) or the packet is ESP again (nested ESP)."""
    if nh == 4:
        if ilen < 20 or not 0x45 <= plain[0] <= 0x4F or plain[9] == 50:
            return -1
        tl = (plain[2] << 8) | plain[3]
        return tl if 20 <= tl <= ilen else -1
    if ilen < 40 or plain[0] >> 4 != 6 or plain[6] == 50:
        return -1
    tl = ((plain[4] << 8) | plain[5]) + 40
    if tl > ilen:
        return -1
    return tl if tl > 40 else ilen


# --- the hot loop -------------------------------------------------------------------------------

class _Worker(FramePath):
    """Runs the loop over one byte range; writes EPBs (and/or JSON lines) to its own files.

    ``run`` holds the fast path (Ethernet/raw IPv4 → ESP or UDP-4500 ESP of an SA already known
    to be non-ESN, tunnel mode, written straight out); every other frame goes through ``_frame``
    (export/perframe.py's :class:`FramePath`, a base class), which handles all cases (IPv6,
    transport mode, ESN inference, failures, keep-other, JSONL).
    """

    def __init__(self, lay: Layout, keys, opts: Options, progress: Callable[[int], None] | None = None) -> None:
        self.lay = lay
        self.dec = EspDecryptor(keys)
        self.opts = opts
        self.progress = progress
        self.early_fail: set = set()
        self.nested_sas: set = set()  # inner SAs of nested ESP (their packets are not frames)
        # bytes key (addresses + SPI as on the wire) -> SaSlot
        self.sas: dict[bytes, SaSlot] = {}
        self.buf: list = []
        self.jbuf: list = []
        self.n_esp = self.n_other = self.n_dummy = self.n_kept = self.n_unkept = 0
        self.decoder = None
        self.general = 0  # frames handed to the general decoder
        self.marks: dict[str, int] = {}  # its malformed marks by layer
        self.held: OrderedDict[int, int] = OrderedDict()  # frame -> exact time, of frames it took without a packet (perframe)
        self.late_frames: set[int] = set()  # frames whose records came late (counted ESP, not other)
        self.bulk_backoff = 0  # windows the bulk step skips after one with little to take
        self.bulkable = 0  # SA slots the bulk step can take (AES-GCM-16 or CBC + HMAC inlined)
        self.linktypes = [i.linktype for i in lay.ifaces] or [1]
        self.truncated: str | None = None
        # parallel runs: where to start walking to a lazy chunk bound, and whom to tell where it is
        self.resolve_hint: Callable[[], tuple[int, int] | None] | None = None
        self.resolved: Callable[[int, int], None] | None = None
        self.speculate = False  # a lazy bound may be guessed (engine checks it; pcap, no JSON lines or filter)
        self.end_off = -1
        self.ah = None  # export.ah.AhOut, made at the first AH packet
        self.ah_seeds: dict = {}  # AH ESN state of the chunks before this one (engine's reconcile)

    def seed(self, states: dict[tuple[str, str, int], tuple[bool | None, int, int]],
             ah_states: dict[tuple[str, str, int], tuple[bool | None, int, int]] | None = None,
             frags: list | None = None, tcp: dict | None = None, tcp_held: dict | None = None) -> None:
        """Start from the state the earlier chunks of a split run ended with: ESP's ESN state
        (``states``), AH's (``ah_states``, applied when the first AH packet makes the verifier),
        the IP datagrams they left incomplete (``frags``, decode.ip.FragReport.pending: the
        fragments of this chunk that complete one are reassembled with them, as in one pass), and
        their RFC 8229 streams (``tcp``, ChunkResult.tcp, copied; ``tcp_held``: the exact times of
        the frames those streams' waiting segments came in)."""
        self.ah_seeds = dict(ah_states or {})
        if frags or tcp:
            from ..decode.demux import Decoder

            self.decoder = Decoder()
            if frags:
                self.decoder.reassembler.seed(frags)
            if tcp:
                import copy

                self.decoder.tcp = copy.deepcopy(tcp)
                self.held.update(tcp_held or {})
        for k, (mode, top, searches) in states.items():
            st = self.dec.state(*k)
            if st.opener is not None:
                if mode is not None:
                    st.mode = mode
                st.top = max(st.top, top)
                st.searches = searches
            st.stats.__init__(esn=st.mode, keys_source=st.stats.keys_source)  # counters start at 0

    def _entry(self, key: bytes, src: bytes, dst: bytes, spi: int) -> SaSlot:
        af = socket.AF_INET if len(src) == 4 else socket.AF_INET6
        st = self.dec.state(socket.inet_ntop(af, src), socket.inet_ntop(af, dst), spi)
        e = self.sas[key] = SaSlot(st)
        self._refresh(e)
        return e

    def _refresh(self, e: SaSlot) -> None:
        was = e.gcm is not None or e.cbc is not None
        self._set_openers(e)
        self.bulkable += (e.gcm is not None or e.cbc is not None) - was

    @staticmethod
    def _set_openers(e: SaSlot) -> None:
        st = e.st
        # only SAs with an integrity check: the plaintext of the others needs crypto.esp's strict
        # checks (RFC 4303 §2.4 padding, next header), which the general path makes
        fast = st.opener is not None and st.mode is False and st.opener.verifies
        e.open_at = st.opener.open_at if fast else None
        g = getattr(st.opener.open, "gcm16", None) if e.open_at is not None else None
        e.gcm, e.salt = g if g is not None else (None, b"")
        # CBC + HMAC inlined the same way: (CBC update, block, HMAC template copy, ICV length, compare)
        e.cbc = getattr(st.opener.open, "cbc_hmac", None) if e.open_at is not None else None
        # an SA known to use ESN, with history and an ICV to check: the fast loop guesses the high
        # bits (RFC 4303 App. A) and lets the general path sort out anything that fails
        esn_ok = st.opener is not None and st.mode is True and st.opener.verifies and st.top >= 0
        e.esn_open = st.opener.open_at if esn_ok else None

    def run(self, start: int, end: int, first_index: int, out_f: BinaryIO | None,  # noqa: C901
            jsonl_f: TextIO | None, last: bool = True) -> ChunkResult:
        """Frames from byte ``start`` (frame ``first_index``; 0: find the first record) to ``end``.
        ``last``: the capture ends there (:meth:`end_of_input`); a split run's chunks say False,
        the engine ends the capture after them (:meth:`tail`)."""
        lay = self.lay
        opts = self.opts
        direct = None
        if out_f is not None and end - start >= _direct.MIN_BYTES:
            # a big output: written around the page cache (export/direct.py says why)
            direct = _direct.open_direct(out_f)
            if direct is not None:
                out_f = direct
        self.out_f, self.jsonl_f = out_f, jsonl_f
        fast_ok = opts.pcapng and out_f is not None and jsonl_f is None and opts.frames is None
        sas = self.sas
        buf = self.buf
        app = buf.append
        epb = EPB_OUT.struct.pack
        # EPB trailer: data padding to 4 bytes, then the block length again
        trailers = [struct.Struct(f"<{(-k) & 3}xI").pack for k in range(4)]
        linktypes = self.linktypes
        frame_slow = self._frame
        eth_ip4 = ETH_IPV4_NET.unpack_from
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
            is_pcap = lay.fmt == "pcap"
            fast_pcap = is_pcap and fast_ok and lay.order == "<" and linktypes == [1]
            if first_index == 0:  # a lazy bound: find the first record of this chunk
                g = guess(lay, start) if self.speculate and fast_pcap else None
                if g is not None:  # (numbered from 1 until the engine has checked the guess)
                    start, first_index = g, 1
                    res.guessed = g
                else:
                    hint = self.resolve_hint() if self.resolve_hint is not None else None
                    start, first_index = resolve(lay, start, hint)
                    if self.resolved is not None:
                        self.resolved(start, first_index)
                idx = first_index - 1
                res.first_frame = first_index
            hard = lay.size
            if fast_pcap:
                # the common big-file case gets its own loop (little-endian pcap of Ethernet)
                idx = self._loop_no_gc(mm, start, end, idx)
                start = end  # nothing left for the general loop below
            elif not is_pcap and fast_ok and lay.order == "<":
                idx = self._loop_no_gc(mm, start, end, idx, pcapng=True)
                start = end
            gen = None if is_pcap else records(mm, lay, start, end)
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
                        if e is not None and e.open_at is not None:
                            g = e.gcm
                            try:
                                if g is not None:  # AES-GCM-16 inlined (RFC 4106: nonce salt|IV, AAD SPI|seq)
                                    plain = g(e.salt + frame[p + 8:p + 16], frame[p + 16:end_ip], frame[p:p + 8]) \
                                        if end_ip - p >= 36 and end_ip <= flen else None
                                else:
                                    plain = e.open_at(frame, p, end_ip, None)
                            except (DecryptError, InvalidTag):  # the slow path counts failures
                                plain = None
                            if plain is not None:
                                pl = len(plain)
                                pad = plain[-2] if pl > 1 else 255
                                nh = plain[-1]
                                if pad + 2 <= pl and (nh == 4 or nh == 41) and \
                                        (ilen := tunnel_len(plain, pl - 2 - pad, nh)) >= 0:
                                    # (only big-endian captures of Ethernet come here: a call is
                                    # affordable, unlike in _loop_pcap_eth)
                                    inner = plain[:ilen]
                                    tot = 32 + ilen + ((-ilen) & 3)
                                    app(epb(6, tot, 0, (ts >> 32) & 0xFFFFFFFF, ts & 0xFFFFFFFF, ilen, ilen))
                                    app(inner)
                                    app(trailers[ilen & 3](tot))
                                    e.n += 1
                                    continue
                frame_slow(idx, iface, ts, frame, orig, off)
            if last:
                self.end_of_input()
            if buf and out_f is not None:
                out_f.write(b"".join(buf))
                buf.clear()
            if self.jbuf:
                jsonl_f.write("".join(self.jbuf))
                self.jbuf.clear()
            if direct is not None:
                direct.finish()
        finally:
            mm.close()
            f.close()
            if direct is not None:
                direct.close()
        res.frames = idx - first_index + 1
        res.truncated = self.truncated
        res.end_off = self.end_off
        return self._result(res)

    def tail(self, out_f: BinaryIO | None, jsonl_f: TextIO | None) -> ChunkResult:
        """A split run's end of capture, after its chunks (seeded with the state they ended with,
        :meth:`seed`): what the decoder still waits for given up, as :meth:`run` does with
        ``last``; its output goes after every chunk's."""
        self.out_f, self.jsonl_f = out_f, jsonl_f
        self.end_of_input()
        if self.buf and out_f is not None:
            out_f.write(b"".join(self.buf))
            self.buf.clear()
        if self.jbuf:
            jsonl_f.write("".join(self.jbuf))
            self.jbuf.clear()
        return self._result(ChunkResult(None, self.dec.stats, {}, self.early_fail))

    def _result(self, res: ChunkResult) -> ChunkResult:
        n_fast = 0
        for e in self.sas.values():  # fold the fast path's counts into the per-SA statistics
            e.st.stats.decrypted += e.n
            n_fast += e.n
            e.n = 0
        res.esp, res.other, res.dummy = self.n_esp + n_fast, self.n_other, self.n_dummy
        res.kept, res.unkept = self.n_kept, self.n_unkept
        res.nested_sas = self.nested_sas
        res.ah = self.ah.totals if self.ah is not None else None
        if self.ah is not None:
            res.ah_states, res.ah_early_fail = self.ah.verifier.states(), set(self.ah.verifier.early_fail)
        res.states = {k: (s.mode, s.top, s.searches) for k, s in self.dec._sas.items()}
        res.frag = self.decoder.reassembler.report() if self.decoder is not None else None
        res.marks, res.general = self.marks, self.general
        if self.decoder is not None and self.decoder.tcp:
            res.tcp = self.decoder.tcp
            held = self.held
            res.tcp_held = {f: held[f] for st in res.tcp.values() for (_d, f, *_r) in st.early.values() if f in held}
        return res

    def _loop_no_gc(self, mm, start: int, end: int, idx: int, pcapng: bool = False) -> int:
        """``_loop_pcap_eth`` with the cyclic garbage collector paused: the loop makes no cycles,
        but its many short-lived tuples and buffers set off collections that walk every object
        the process holds (~2k instructions per packet measured with callgrind)."""
        was = gc.isenabled()
        gc.disable()
        try:
            return self._loop_pcap_eth(mm, start, end, idx, pcapng)
        finally:
            if was:
                gc.enable()

    def _loop_pcap_eth(self, mm, start: int, end: int, idx: int, pcapng: bool = False) -> int:  # noqa: C901
        """The hot loop for little-endian pcap (or pcapng EPBs) of Ethernet frames: one struct call reads the
        record header, the Ethernet type, the IPv4 header fields and the SA key (addresses + SPI),
        and the ESP bytes are sliced straight from the window (the frame itself is only copied
        when the general path needs it). Returns the last frame index.

        The file is read in windows of ``WINDOW`` bytes (``os.pread`` into a bytes object) rather
        than through the map: unpacking and slicing a bytes object is ~25 ns cheaper per call than
        the same on an mmap (buffer export per call), four calls per packet, and memory stays flat
        without madvise. A record that runs past the window starts the next one."""
        # One fused struct call per record (formats declared in decode/fused.py): the record
        # header, the Ethernet type and IPv4 version/IHL as one 3-byte string (one comparison),
        # the IPv4 length, fragment and protocol fields, then 12 bytes = src, dst, SPI (raw ESP)
        # or src, dst, ports (UDP) and 8 bytes = the IV (raw ESP) or SPI and sequence number, the
        # AAD of an AEAD (UDP 4500): one slice fewer per packet either way. The original length
        # is only read again for the general path.
        hdr = PCAP_ETH_IPV4.unpack_from
        u32le = struct.Struct("<I").unpack_from
        u32be = struct.Struct("!I").unpack_from
        ehdr = EPB_ETH_IPV4.unpack_from  # pcapng: the EPB header, then the same frame fields
        blk = struct.Struct("<II").unpack_from
        # per interface: (Ethernet?, mul, div, offset ns) for ts = units * mul // div + offset
        ifs = [(i.linktype == 1, i.mul, i.div, i.offset_s * 1_000_000_000) for i in self.lay.ifaces]
        rh = 28 if pcapng else 16  # record header length: where the frame starts
        sas = self.sas
        buf = self.buf
        out_f = self.out_f
        # Output is collected for a whole read window and written with one call when the next
        # window is read (issue 15: one write per window, not two per packet). The general path
        # (_frame) appends to the same list, so the order stays the capture's.
        write = buf.append
        psec, sbase = -1, 0  # pcap: ns of the last record's second (one multiplication per second)
        epb = EPB_OUT.struct.pack
        trailers = [struct.Struct(f"<{(-k) & 3}xI").pack for k in range(4)]
        # An EPB's trailer (data padding, block length) goes out with the next EPB's header, in one
        # pack and one write: ``ptot`` is the pending block length (0: none), ``pk`` its data length & 3.
        # (Every integer operation here allocates: constants are folded ahead where they can be.)
        blk_len = (32, 35, 34, 33)  # EPB length - data length, by data length & 3 (32 + padding)
        trail_epb = [struct.Struct(f"<{(-k) & 3}xIIIIIIII").pack for k in range(4)]
        ptot = pk = 0
        frame_slow = self._frame
        # The bulk step (export/bulk.py): runs of AES-GCM / CBC + HMAC records decrypted a window
        # at a time; ``run_at`` is the offset of the next run's first record in this window (-1: none).
        bulk = self.lay.size >= BULK_MIN_BYTES
        if bulk:
            from . import bulk as _bulk

            obuf = _bulk.OutBuf(out_f if type(out_f) is _direct.DirectOut else None)
        runs: list = []
        ri, run_at, skip = 0, -1, 0
        planned = seen = self.bulkable  # SAs the bulk step could take when this window was planned
        seen_at = 0  # ... and the frame after which their count last changed
        mul = self.lay.ifaces[0].mul
        hard = self.lay.size  # records end before this; ``end`` only bounds where they start
        hs = ETH_IPV4_END + rh  # bytes the one-struct header read takes
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
                if ptot:  # (nothing pending: the plan below may put its blocks where the stream goes on)
                    write(trailers[pk](ptot))
                    ptot = 0
                if buf:
                    if len(buf) > 8:  # the per-record loop's many small pieces: one copy, one write
                        out_f.write(b"".join(buf))
                    else:  # the bulk step's few big ones: written as they are
                        out_f.writelines(buf)
                    buf.clear()
                base += o
                w = b""  # the old window goes first: one window in memory, not two
                w = pread(fd, max(window, need), base)
                wl, o, need = len(w), 0, 0
                lim, stop = wl - hs, min(end, hard - 11) - base
                if bulk:
                    run_at, skip = self._plan(_bulk, runs, obuf, w, lim, stop, pcapng, ifs, mul, skip)
                    ri = 0
                    planned = self.bulkable
                continue
            if o == run_at:  # a run the bulk step decrypted: its blocks, in order
                if ptot:
                    write(trailers[pk](ptot))
                    ptot = 0
                _o0, o, nrec, blocks, counts = runs[ri]
                if obuf.staged:  # planned in the output's staging buffer, where it goes (see _plan)
                    out_f.commit(len(blocks))
                    obuf.staged = False
                else:
                    write(blocks)
                idx += nrec
                for e, k in counts:
                    e.n += k
                ri += 1
                run_at = runs[ri][0] if ri < len(runs) else -1
                continue
            if run_at < 0 and bulk and planned != self.bulkable and o <= lim:
                # The per-record loop made SAs the bulk step can take (their first packets, e.g. in
                # the first window): once 16 records went by without another, the rest of the
                # window is planned again. What is pending goes out first: the plan reuses the
                # output buffer that earlier runs' blocks are in.
                if seen != self.bulkable:
                    seen, seen_at = self.bulkable, idx
                if idx - seen_at >= 16:
                    planned = self.bulkable
                    if ptot:
                        write(trailers[pk](ptot))
                        ptot = 0
                    if buf:
                        out_f.write(b"".join(buf))
                        buf.clear()
                    run_at, skip = self._plan(_bulk, runs, obuf, w, lim, stop, pcapng, ifs, mul, 0, o)
                    ri = 0
                    if run_at == o:
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
                        for iface, ts, frame, orig, roff in records(mm, self.lay, off, off + blen):
                            idx += 1
                            frame_slow(idx, iface, ts, frame, orig, roff)
                        if buf:
                            out_f.writelines(buf)
                            buf.clear()
                    elif btype == 6:
                        idx += 1
                        for iface, ts, frame, orig, roff in records(mm, self.lay, off, off + blen):
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
                    elif e.gcm is not None:  # AES-GCM-16 inlined (RFC 4106: nonce salt|IV, AAD SPI|seq); set only with e.open_at
                        if esp_n >= 36:
                            try:
                                if proto == 50:  # x8: the IV
                                    plain = e.gcm(e.salt + x8, w[q + 16:end_ip], w[q:q + 8])
                                else:  # x8: SPI | sequence number
                                    plain = e.gcm(e.salt + w[q + 8:q + 16], w[q + 16:end_ip], x8)
                            except InvalidTag:  # the general path counts failures
                                pass
                    elif e.open_at is not None:
                        try:
                            if e.cbc is not None:  # CBC + HMAC inlined (crypto.esp._build_cbc)
                                upd, bs, hcopy, icv, same = e.cbc
                                n = esp_n - 8 - bs - icv  # ciphertext after the IV
                                ie = end_ip - icv
                                if n >= bs and not n % bs:
                                    m = hcopy()
                                    m.update(w[q:ie])  # RFC 4303 §3.4.4: verify, then decrypt
                                    if same(m.finalize()[:icv], w[ie:end_ip]):
                                        plain = upd(w[q + 8:ie])[bs:]
                            else:
                                plain = e.open_at(w, q, end_ip, None)
                        except (DecryptError, InvalidTag):  # the general path counts failures
                            plain = None
                    elif e.esn_open is not None:
                        st = e.st
                        top = st.top
                        seq = u32be(w, q + 4)[0]
                        th, tl = top >> 32, top & 0xFFFFFFFF
                        if tl >= seq:  # the closest candidate (crypto.esn.candidates' first)
                            hi = th + 1 if tl - seq > 0x80000000 else th
                        else:
                            hi = th - 1 if seq - tl > 0x80000000 else th
                        if 0 <= hi <= 0xFFFFFFFF:
                            try:
                                plain = e.esn_open(w, q, end_ip, hi)
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
                        # tunnel_len() inlined: the inner IP packet must fit the payload (else the
                        # general path counts it malformed); TFC padding after it is dropped
                        # (RFC 4303 §2.7); ESP inside (nested) goes to the general path too
                        if pad + 2 <= pl and (nh == 4 or nh == 41):
                            ilen = pl - 2 - pad
                            if nh == 4:
                                if ilen >= 20 and 0x45 <= plain[0] <= 0x4F and plain[9] != 50:
                                    tl = (plain[2] << 8) | plain[3]
                                    ilen = tl if 20 <= tl <= ilen else -1
                                else:
                                    ilen = -1
                            elif ilen >= 40 and plain[0] >> 4 == 6 and plain[6] != 50:
                                tl = ((plain[4] << 8) | plain[5]) + 40
                                if tl > ilen:
                                    ilen = -1
                                elif tl > 40:  # payload length 0: a jumbogram (RFC 2675), keep it all
                                    ilen = tl
                            else:
                                ilen = -1
                        else:
                            ilen = -1
                        if ilen >= 0:
                            k = ilen & 3
                            tot = ilen + blk_len[k]
                            if ptot:
                                write(trail_epb[pk](ptot, 6, tot, 0, ts >> 32, ts & 0xFFFFFFFF, ilen, ilen))
                            else:
                                write(epb(6, tot, 0, ts >> 32, ts & 0xFFFFFFFF, ilen, ilen))
                            write(plain[:ilen])
                            ptot, pk = tot, k
                            e.n += 1
                            o = nxt
                            continue
            if not pcapng:
                orig = u32le(w, o + 12)[0]
            if ptot:
                write(trailers[pk](ptot))
                ptot = 0
            frame_slow(idx, iface, ts, w[o + rh:fend], orig, base + o)  # appends to buf, in order
            o = nxt
        if ptot:
            write(trailers[pk](ptot))
        off = self.end_off = base + o
        if not pcapng and off < end and off < hard and self.truncated is None:  # 1..15 bytes left
            self.truncated = f"last record (frame {idx + 1}) header truncated: {hard - off} of 16 bytes"
        return idx

    def _plan(self, bulk, runs: list, obuf, w: bytes, lim: int, stop: int, pcapng: bool, ifs: list,
              mul: int, skip: int, o0: int = 0) -> tuple[int, int]:
        """Fill ``runs`` with the bulk step's runs of a new window; returns (offset of the first
        run or -1, windows to skip). Windows with little to take in bulk (no SA of a bulk kind
        known yet, other algorithms, short runs) back off: 1, 2, 4 ... 64 windows without the walk."""
        runs.clear()
        if skip > 0:
            return -1, skip - 1
        sas = self.sas
        if len(sas) <= 64 and not any(e.gcm is not None or e.cbc is not None for e in sas.values()):
            return -1, 0  # nothing to take yet (the first packets of an SA make its slot)
        offs, end_off = bulk.walk(w, o0, len(w), lim, stop, pcapng)
        obuf.staged = False
        runs += bulk.plan(w, offs, pcapng, ifs, mul, sas, obuf, end_off)
        if obuf.staged and (len(runs) != 1 or runs[0][0] != o0):
            # Planned in the output's staging buffer, but a record the per-record loop must take
            # split the window: what that loop writes goes to the staging buffer where the runs
            # after it lie, so they are copied out first (the first run stays in place if the
            # loop meets it before anything else)
            first = bool(runs) and runs[0][0] == o0
            runs[first:] = [(a, b, k, bytes(blk), c) for a, b, k, blk, c in runs[first:]]
            obuf.staged = first
        taken = sum(r[2] for r in runs)
        if taken * 4 < len(offs):
            self.bulk_backoff = min(2 * self.bulk_backoff, 64) if self.bulk_backoff else 1
            return (runs[0][0] if runs else -1), self.bulk_backoff
        self.bulk_backoff = 0
        return (runs[0][0] if runs else -1), 0
