"""RFC 8229 TCP encapsulation of IKE and ESP: TCP streams on port 4500 turned into records.

A stream is an optional "IKETCP" prefix (§3.1) then records of Length(2, counting itself) |
non-ESP marker + IKE, or ESP (§3). The decoder (decode.demux.Decoder) hands every TCP segment of
port 4500 to :func:`segment`; this module keeps one :class:`TcpStream` a direction.

* Segments that arrive early (TCP reorders, RFC 9293 §3.10.7.4) wait, up to MAX_TCP_EARLY
  segments and one maximal record's bytes, for the gap before them. A gap that stays (a lost
  segment, never captured) is given up: once more segments wait than reordering explains, at
  FIN/RST, at the end of the capture (:func:`flush`) or, live, after a timeout (:func:`expire`).
  Giving up counts the lost bytes as one Malformed (layer "tcp") on the first frame after the gap,
  as tshark's "previous segment not captured" sits there, and the stream resumes at the first
  plausible record start in the waiting data (IKE of a consistent length, or ESP of an SPI the
  stream carried). Those records are reported on the frames their last bytes came in.
* Overlapping segments: the bytes a receiver has keep their first copy (RFC 9293 §3.10.7.4:
  "only the new parts are processed"; stacks differ for overlapping out-of-order data: Novak and
  Sturges, "Target-Based TCP Stream Reassembly", 2007, list first/last/BSD/Linux/Windows
  policies). A later copy with other bytes is counted as Malformed ("TCP segment overlaps earlier
  data with different bytes at stream offset N", relative to the first byte after the SYN or the
  first seen) and the record framing across those bytes is checked again: every record start up
  to the first one after them must be plausible, else the stream resyncs at the next one.
* SYN starts a fresh stream (its payload, TCP Fast Open RFC 7413, is stream data); RST ends both
  directions, FIN this one; retransmissions after FIN or RST are dropped, and a later connection on the
  same 4-tuple starts over (prefix expected again). A stream whose SYN was not captured starts at
  the first plausible record start (or the "IKETCP" prefix).
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections import Counter
from typing import Protocol

from ..capture._fastnew import fast_constructor
from ..model.packets import EspPacket, IkeDatagram, Malformed, NatKeepalive, Packet, RawFrame
from .esp import ESP_HDR


class Decoder(Protocol):
    """What of decode.demux.Decoder the streams use (named here: demux imports this module)."""

    tcp: dict[tuple, TcpStream]
    stats: Counter[str]
    tcp_tuples: dict[tuple[str, str, int, int], None]
    tcp_flag_frames: array
    tcp_flags: array

    def _text(self, a: bytes) -> str: ...

NATT_PORT = 4500
IKE_HEADER_LEN = 28
NON_ESP_MARKER = b"\x00\x00\x00\x00"
IKETCP_PREFIX = b"IKETCP"  # RFC 8229 §3.1
TCP_HDR = struct.Struct("!HHIIBB")
U32 = struct.Struct("!I")

MAX_TCP_STREAMS = 1024
MAX_TCP_TUPLES = 4096  # RFC 8229 connections remembered for filters (Decoder.tcp_tuples)
MAX_TCP_FLAGS = 1 << 22  # RFC 8229 segments whose TCP flags are kept for filters (Decoder.tcp_flags)
MAX_TCP_BUFFER = 65535 + 2 + 6  # one maximal RFC 8229 record (+ prefix)
MAX_TCP_SPIS = 64  # ESP SPIs remembered per RFC 8229 stream, to find a record start after a gap
MAX_TCP_EARLY = 16  # segments waiting for a gap before them: past that it is a lost segment, not reordering
HISTORY = MAX_TCP_BUFFER  # delivered bytes kept to compare retransmissions with (one maximal record)
AFTER_FIN = 1 << 20  # a segment ending this close before a closed stream's end is a retransmission

TCP_FIN, TCP_SYN, TCP_RST = 0x01, 0x02, 0x04
M32 = 0xFFFFFFFF
HALF = 0x80000000

_Esp = fast_constructor(EspPacket)
_Ike = fast_constructor(IkeDatagram)


class TcpStream:
    """One direction of an RFC 8229 connection."""

    __slots__ = ("next_seq", "base", "buf", "prefix_checked", "early", "early_bytes", "arrivals", "spis",
                 "resync", "hist", "verify_to", "closed")

    def __init__(self, next_seq: int, *, picked_up: bool = False) -> None:
        self.next_seq = next_seq  # the sequence number after the last byte delivered into buf
        self.base = next_seq  # stream offset 0 (the first byte after the SYN, or the first seen)
        self.buf = bytearray()  # delivered bytes not yet framed into records
        self.prefix_checked = False
        # segments past the delivered end, by sequence number: (payload, frame, ts, arrival number,
        # TCP flags); at most MAX_TCP_EARLY of them and MAX_TCP_BUFFER bytes
        self.early: dict[int, tuple[bytes, int, float, int, int]] = {}
        self.early_bytes = 0
        self.arrivals = 0
        self.spis: set[int] = set()  # ESP SPIs its records carried (at most MAX_TCP_SPIS): resync marks
        # after a gap (or a start without SYN): the bytes may start mid-record, find a record start first
        self.resync = picked_up
        self.hist = bytearray()  # the last delivered bytes (up to 2 * HISTORY), ending at next_seq
        self.verify_to: int | None = None  # after conflicting overlaps: check record starts up to this offset
        self.closed = False  # FIN seen: later segments are retransmissions, or a new connection

    def offset(self, seq: int) -> int:
        return (seq - self.base) & M32


def segment(dec: Decoder, raw: RawFrame, version: int, src: bytes, dst: bytes, seg: bytes) -> list[Packet]:
    """The RFC 8229 records (and marks) a TCP segment to or from port 4500 completes."""
    n = len(seg)
    if n < 20:
        return [Malformed(raw.index, raw.ts, f"TCP header truncated ({n} of 20 bytes)", "tcp",
                          dec._text(src), dec._text(dst))]
    sport, dport, seqno, _ack, doff, flags = TCP_HDR.unpack_from(seg, 0)
    if sport != NATT_PORT and dport != NATT_PORT:
        dec.stats["other_tcp"] += 1
        return []
    hlen = (doff >> 4) * 4
    if hlen < 20 or hlen > n:
        return [Malformed(raw.index, raw.ts, f"TCP header length {hlen} invalid ({n} bytes present)", "tcp",
                          dec._text(src), dec._text(dst), sport, dport)]
    key = (src, sport, dst, dport)
    streams = dec.tcp
    if flags & TCP_RST:
        # RFC 9293 §3.10.7: a reset aborts the connection, both directions; its payload (RFC 5961
        # diagnostic text, if any) is no stream data
        out = []
        for k in (key, (dst, dport, src, sport)):
            if (old := streams.get(k)) is not None and not old.closed:
                out += _close(dec, k, old, version, "connection reset (RST)")
        return out
    st = streams.get(key)
    out: list[Packet] = []
    payload = seg[hlen:]
    if flags & TCP_SYN:
        if st is None or st.closed or st.base != (seqno + 1) & M32:  # not a retransmitted SYN: a new connection
            out = _end(dec, key, version)
            st = _new(dec, key, (seqno + 1) & M32, out, version)
        seqno = (seqno + 1) & M32  # a SYN's data (TCP Fast Open, RFC 7413) follows its sequence number
    elif st is not None and st.closed:
        behind = (st.next_seq - seqno - len(payload)) & M32
        if behind < AFTER_FIN:
            return []  # a retransmission (or the FIN again) of a connection that ended
        st = None  # a later connection on the same 4-tuple whose SYN was not captured
    if payload:
        if st is None:
            # picked up mid-way (capture started late, SYN not captured): find a record start first
            st = _new(dec, key, seqno, out, version, picked_up=True)
        out += _add(dec, st, key, seqno, payload, raw, version, (doff & 1) << 8 | flags)
    if flags & TCP_FIN and st is not None and not st.closed:
        # this direction ends (RFC 9293 §3.10.7.4): a gap left before the FIN is given up now
        out += _close(dec, key, st, version, "connection closed (FIN)")
        st.next_seq = (seqno + len(payload) + 1) & M32
    return out


def _close(dec: Decoder, key: tuple, st: TcpStream, version: int, why: str) -> list[Packet]:
    """End a direction: its gap given up; kept as closed so retransmissions after the end are
    dropped, not read as a new stream (a new SYN, or data far from the end, starts one)."""
    out = _give_up(dec, key, st, version, why)
    st.closed = True
    st.buf.clear()
    st.hist = bytearray()
    return out


def _new(dec: Decoder, key: tuple, seq: int, out: list, version: int, picked_up: bool = False) -> TcpStream:
    """A new stream for ``key``; past MAX_TCP_STREAMS the oldest is ended (its gap given up, the
    records after it decoded, appended to ``out``), not dropped silently."""
    streams = dec.tcp
    streams.pop(key, None)
    if len(streams) >= MAX_TCP_STREAMS:
        old = next(iter(streams))
        out += _end(dec, old, 6 if len(old[0]) == 16 else 4)
    st = streams[key] = TcpStream(seq, picked_up=picked_up)
    return st


def _end(dec: Decoder, key: tuple, version: int) -> list[Packet]:
    """Forget the stream ``key`` (RST, or a new SYN), giving up any gap first."""
    st = dec.tcp.pop(key, None)
    return _give_up(dec, key, st, version, "end of connection") if st is not None and not st.closed else []


def _addrs(dec: Decoder, key: tuple) -> tuple[str, str, int, int]:
    return dec._text(key[0]), dec._text(key[2]), key[1], key[3]


def _conflict(dec: Decoder, st: TcpStream, key: tuple, at: int, old: bytes | bytearray, new: bytes,
              frame: int, ts: float) -> Malformed | None:
    """Compare a later copy ``new`` of the stream bytes from sequence number ``at`` with what the
    stream has there (``old``, the first copy, kept). A difference is a Malformed on ``frame``,
    and the record framing from there on is checked again (``verify_to``)."""
    if old == new:
        return None
    i = next(k for k in range(len(old)) if old[k] != new[k])
    off = st.offset((at + i) & M32)
    end = st.offset((at + len(old)) & M32)
    if st.verify_to is None or end > st.verify_to:
        st.verify_to = end
    s, d, sp, dp = _addrs(dec, key)
    return Malformed(frame, ts, f"TCP segment overlaps earlier data with different bytes at stream offset {off}; "
                     "the first copy is kept", "tcp", s, d, sp, dp)


def _add(dec: Decoder, st: TcpStream, key: tuple, seqno: int, payload: bytes, raw: RawFrame,
         version: int, flags: int) -> list[Packet]:
    out: list[Packet] = []
    exp = st.next_seq
    if seqno == exp and not st.early:  # the bulk: in order, nothing waiting
        _deliver(st, (payload,))
        return _records(dec, st, key, raw.index, raw.ts, version, flags)
    delta = (seqno - exp) & M32
    if delta >= HALF:  # starts before the delivered end: a retransmission; only new bytes are new
        old = (exp - seqno) & M32
        hist = st.hist
        have = min(old, len(hist), len(payload))  # the part of the overlap still in the history
        if have:
            start = len(hist) - old
            if start >= 0:
                m = _conflict(dec, st, key, seqno, hist[start:start + have], payload[:have], raw.index, raw.ts)
            else:
                k = old - len(hist)  # the payload's first k bytes are older than the history
                have = min(len(hist), len(payload) - k) if len(payload) > k else 0
                m = _conflict(dec, st, key, (seqno + k) & M32, hist[:have], payload[k:k + have],
                              raw.index, raw.ts) if have > 0 else None
            if m is not None:
                out.append(m)
        if old >= len(payload):
            return out
        payload = payload[old:]
        seqno = exp
    prev = st.early.get(seqno)
    if prev is not None:  # the same segment again (or another copy from there): compare, keep the first
        n = min(len(prev[0]), len(payload))
        m = _conflict(dec, st, key, seqno, prev[0][:n], payload[:n], raw.index, raw.ts)
        if m is not None:
            out.append(m)
        if len(payload) <= len(prev[0]):
            return out
        payload, seqno = payload[len(prev[0]):], (seqno + len(prev[0])) & M32
    over = seqno != exp and (st.early_bytes + len(payload) > MAX_TCP_BUFFER or len(st.early) >= MAX_TCP_EARLY)
    st.arrivals += 1
    st.early[seqno] = (bytes(payload), raw.index, raw.ts, st.arrivals, flags)
    st.early_bytes += len(payload)
    if over:
        # more waits than reordering explains: the gap is a lost segment. Give it up: the
        # waiting records (this segment's too) go out on the frames they came in.
        return out + _give_up(dec, key, st, version, "stream resumed after it")
    while (piece := _next_piece(dec, st, key, out, raw)) is not None:
        _deliver(st, piece)
    out += _records(dec, st, key, raw.index, raw.ts, version, flags)
    return out


def _next_piece(dec: Decoder, st: TcpStream, key: tuple, out: list, raw: RawFrame | None) -> tuple | None:
    """Take from the waiting segments the bytes that continue the stream at ``next_seq``: those
    of the first-arrived segment covering it, up to where an earlier-arrived one starts (first copy
    wins, RFC 9293 §3.10.7.4). Later copies of bytes the stream has are compared (``_conflict``, the
    marks appended to ``out``) and dropped. Returns (bytes, frame, ts) or None."""
    exp = st.next_seq
    early = st.early
    while True:
        cover = None
        for q, (data, frame, ts, arr, _fl) in list(early.items()):
            old = (exp - q) & M32
            if old >= HALF:
                continue  # still past the end
            if old >= len(data):  # wholly before the end now: compare with the history, drop it
                del early[q]
                st.early_bytes -= len(data)
                _compare_hist(dec, st, key, q, data, out, raw, frame, ts)
                continue
            if cover is None or arr < cover[1][3]:
                cover = (q, early[q])
        if cover is None:
            return None
        q, (data, frame, ts, arr, fl) = cover
        old = (exp - q) & M32
        if old:  # its head the stream has already: compare, keep the rest waiting
            _compare_hist(dec, st, key, q, data[:old], out, raw, frame, ts)
            del early[q]
            st.early_bytes -= old
            data = data[old:]
            early[exp] = (data, frame, ts, arr, fl)
        end = len(data)
        for q2, (_d2, _f2, _t2, arr2, _fl2) in early.items():
            rel = (q2 - exp) & M32
            if arr2 < arr and 0 < rel < end:
                end = rel  # an earlier-arrived segment starts inside: its copy wins from there
        del early[exp]
        st.early_bytes -= len(data)
        if end < len(data):
            st.early_bytes += len(data) - end
            early[(exp + end) & M32] = (data[end:], frame, ts, arr, fl)
        return data[:end], frame, ts, fl


def _compare_hist(dec: Decoder, st: TcpStream, key: tuple, q: int, data: bytes, out: list,
                  raw: RawFrame | None, frame: int, ts: float) -> None:
    """A waiting copy of bytes the stream has delivered since: compare it with them. The mark goes
    on the later of the two copies: ``raw`` when it delivered the first, else this copy's frame."""
    exp, hist = st.next_seq, st.hist
    back = (exp - q) & M32
    start = len(hist) - back
    if start < 0:
        data, q, start = data[-start:], (q - start) & M32, 0
    n = min(len(data), len(hist) - start)
    if n <= 0:
        return
    later = (raw.index, raw.ts) if raw is not None and raw.index > frame else (frame, ts)
    m = _conflict(dec, st, key, q, hist[start:start + n], data[:n], *later)
    if m is not None:
        out.append(m)


def _deliver(st: TcpStream, piece: tuple) -> None:
    data = piece[0]
    st.buf += data
    st.hist += data
    if len(st.hist) > 2 * HISTORY:  # trimmed now and then: amortised O(1) a byte
        del st.hist[:len(st.hist) - HISTORY]
    st.next_seq = (st.next_seq + len(data)) & M32


def _give_up(dec: Decoder, key: tuple, st: TcpStream, version: int, why: str) -> list[Packet]:
    """Give up the gap before ``st``'s waiting segments (a segment never captured): one Malformed
    on the first frame after the gap counting the bytes lost (and those of the record cut by it),
    then the waiting data decoded from the first plausible record start, each record on the frame
    its last byte came in. Repeats while gaps are left between the waiting segments."""
    out: list[Packet] = []
    while st.early:
        exp = st.next_seq
        first = min(st.early, key=lambda q: (q - exp) & M32)
        gap = (first - exp) & M32
        frame, ts = st.early[first][1:3]
        cut = len(st.buf)
        st.buf.clear()
        st.hist.clear()
        st.resync = True
        st.next_seq = first
        s, d, sp, dp = _addrs(dec, key)
        held = f"; the {cut} bytes of the record it cut dropped" if cut else ""
        out.append(Malformed(frame, ts, f"RFC 8229 TCP stream gap of {gap} bytes at stream offset {st.offset(exp)} "
                             f"(lost segment, never captured{held}); {why}", "tcp", s, d, sp, dp))
        while (piece := _next_piece(dec, st, key, out, None)) is not None:
            _deliver(st, piece)
            out += _records(dec, st, key, piece[1], piece[2], version, piece[3])
    return out


def flush(dec: Decoder) -> list[Packet]:
    """End of capture: every gap still waiting is given up and the records after it decoded."""
    out: list[Packet] = []
    for key, st in list(dec.tcp.items()):
        if st.early and not st.closed:
            out += _give_up(dec, key, st, 6 if len(key[0]) == 16 else 4, "capture ended")
    dec.tcp.clear()
    return out


def expire(dec: Decoder, now: float, timeout: float) -> list[Packet]:
    """Live: give up the gaps whose first waiting segment is older than ``timeout`` seconds at
    ``now`` (the retransmission that fills a gap comes within an RTO, RFC 6298 §2: seconds)."""
    out: list[Packet] = []
    limit = now - timeout
    for key, st in list(dec.tcp.items()):
        if st.early and not st.closed and min(v[2] for v in st.early.values()) < limit:
            out += _give_up(dec, key, st, 6 if len(key[0]) == 16 else 4, f"no segment for {timeout:g} s")
    return out


def _plausible(buf: bytearray, p: int, spis: set[int], chain: bool = False) -> bool | None:
    """Whether an RFC 8229 record (§3) plausibly starts at ``buf[p]``: IKE whose header Length
    (RFC 7296 §3.1) is the record's less its 6 framing bytes, or ESP whose SPI the stream carried
    before. ``chain`` (where the data starts a segment): also ESP of a new SPI (not 0-255, RFC
    4303 §2.1) whose record ends where the data does or where the next record of the same SPI,
    or a plausible IKE one, starts (a sender writes whole records: a stream whose SPIs are not
    known yet, its SYN not captured). None: not enough bytes yet to tell."""
    n = len(buf) - p
    if n < 6:
        return None
    rlen = buf[p] << 8 | buf[p + 1]
    if buf[p + 2:p + 6] == NON_ESP_MARKER:
        if n < 34:
            return None
        return rlen >= 34 and U32.unpack_from(buf, p + 30)[0] == rlen - 6
    spi = U32.unpack_from(buf, p + 2)[0]
    if rlen < 10:
        return False
    if spi in spis:
        return True
    if not chain or spi < 256:
        return False
    if n == rlen:
        return True
    if n < rlen + 6:
        return None
    if U32.unpack_from(buf, p + rlen + 2)[0] == spi:
        return True
    return bool(_plausible(buf, p + rlen, spis))


def _record_start(buf: bytearray, spis: set[int]) -> int | None:
    """The first place in ``buf`` where a record plausibly starts (:func:`_plausible`); None when
    there is none (yet)."""
    for p in range(len(buf) - 5):
        if _plausible(buf, p, spis):
            return p
    return None


def _records(dec: Decoder, st: TcpStream, key: tuple, frame: int, ts: float, version: int,
             flags: int) -> list[Packet]:
    """Frame the records ``st.buf`` completes, reported on ``frame`` (whose TCP flags are ``flags``)."""
    buf = st.buf
    out: list[Packet] = []
    src, sport, dst, dport = key
    if not st.prefix_checked:
        if len(buf) < 6 and IKETCP_PREFIX.startswith(bytes(buf)):
            return out
        if buf[:6] == IKETCP_PREFIX:
            del buf[:6]
            st.resync = False  # the stream's very start, its SYN not captured: records follow
        st.prefix_checked = True
    s = d = ""
    while True:
        if st.resync or st.verify_to is not None:
            at_off = st.offset((st.next_seq - len(buf)) & M32)
            ok = _plausible(buf, 0, st.spis, True)
            at = None if ok else _record_start(buf, st.spis)
            if ok is None and at is None:
                break  # not enough bytes to tell yet
            if ok:
                st.resync = False
                if st.verify_to is not None and at_off >= st.verify_to:
                    st.verify_to = None  # the first record start past the disputed bytes: framing held
            else:
                # RFC 8229 records carry no sync mark: skip to the first place where a record of
                # this stream plausibly starts; the bytes before it are a gap's (reported), the
                # start of a stream picked up mid-way, or framing broken by conflicting bytes
                skipped = max(0, len(buf) - 40) if at is None else at  # a start may straddle segments
                if st.verify_to is not None and not st.resync:
                    s_, d_, sp, dp = _addrs(dec, key)
                    out.append(Malformed(frame, ts, f"RFC 8229 record framing lost at stream offset {at_off} "
                                         "after overlapping data; stream resynced at the next record", "tcp",
                                         s_, d_, sp, dp))
                    st.verify_to = None
                st.resync = at is None
                del buf[:skipped]
                if at is None:
                    break
        if len(buf) < 2:
            break
        rlen = (buf[0] << 8) | buf[1]
        if rlen < 3:
            # a length no record has (§3: it counts its own 2 octets): framing is lost; resync
            st.resync = True
            s_, d_, sp, dp = _addrs(dec, key)
            out.append(Malformed(frame, ts, f"RFC 8229 record length {rlen} is too short; stream resynced", "tcp",
                                 s_, d_, sp, dp))
            del buf[:2]
            continue
        if len(buf) < rlen:
            break
        body = bytes(buf[2:rlen])
        del buf[:rlen]
        if not s:
            s, d = dec._text(src), dec._text(dst)
        if body[:4] == NON_ESP_MARKER:
            if len(body) < 4 + IKE_HEADER_LEN:
                out.append(Malformed(frame, ts, f"IKE header in RFC 8229 record truncated "
                                     f"({len(body) - 4} of 28 bytes)", "ike", s, d, sport, dport))
            else:
                out.append(_Ike(frame, ts, s, d, sport, dport, body[4:], "tcp", True, False, version))
        elif len(body) == 1 and body[0] == 0xFF:
            out.append(NatKeepalive(frame, ts, s, d, sport, dport))
        elif len(body) < 8:
            spi = U32.unpack_from(body, 0)[0] if len(body) >= 4 else None
            out.append(Malformed(frame, ts, f"ESP header in RFC 8229 record truncated "
                                 f"({len(body)} of 8 bytes)", "esp", s, d, sport, dport, spi=spi))
        else:
            spi, seq = ESP_HDR.unpack_from(body, 0)
            if len(st.spis) < MAX_TCP_SPIS:
                st.spis.add(spi)
            out.append(_Esp(frame, ts, s, d, spi, seq, body, sport, dport, False, version, "tcp"))
    if s:
        tup = (s, d, sport, dport)
        if tup not in dec.tcp_tuples and len(dec.tcp_tuples) < MAX_TCP_TUPLES:
            dec.tcp_tuples[tup] = None
        _note_flags(dec, frame, flags)
    return out


def _note_flags(dec: Decoder, frame: int, flags: int) -> None:
    """Keep the TCP flags of a segment that gave rows (frames increasing: a record given up late,
    on an earlier frame, goes in its place; few do)."""
    frames = dec.tcp_flag_frames
    if len(dec.tcp_flags) >= MAX_TCP_FLAGS:
        dec.stats["tcp_flags_unrecorded"] += 1
    elif not frames or frames[-1] < frame:
        frames.append(frame)
        dec.tcp_flags.append(flags)
    elif frames[-1] != frame:
        i = bisect.bisect_left(frames, frame)
        if frames[i] != frame:
            frames.insert(i, frame)
            dec.tcp_flags.insert(i, flags)
