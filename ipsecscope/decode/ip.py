"""IPv4 / IPv6 headers, IPv6 extension-header chains, and IP fragment reassembly.

:func:`parse_ipv4` / :func:`parse_ipv6` return an :data:`IpResult` tuple
``(version, src, dst, proto, payload, fragmented)`` (addresses as raw bytes), ``None`` when the
frame is a fragment still waiting for the rest of its datagram, or a ``str``: a one-line reason
why the header is unusable.

IKE_AUTH with certificates is routinely bigger than the path MTU, so fragments are common in
the exact traces people bring to this tool; reassembly is bounded (datagram count, size, age)
so a flood of stray fragments cannot grow memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

U16 = struct.Struct("!H")
U32 = struct.Struct("!I")

IpResult = tuple[int, bytes, bytes, int, bytes, bool]

# IPv6 extension headers we walk past (RFC 8200 §4): hop-by-hop, routing, destination options,
# and the fragment header. AH (51) and ESP (50) are what we are looking for, so they end the walk.
V6_HOP_BY_HOP = 0
V6_ROUTING = 43
V6_FRAGMENT = 44
V6_DEST_OPTS = 60
V6_MOBILITY = 135
V6_SKIP = frozenset((V6_HOP_BY_HOP, V6_ROUTING, V6_DEST_OPTS, V6_MOBILITY))

MAX_DATAGRAM = 65535 + 40  # IPv4 total length max; IPv6 payload max plus fixed header
# Datagram keys a reassembler remembers having touched (FragReport.touched); past this many it
# remembers only that there were more (None), and a split decrypt run redoes the chunk instead.
TOUCHED_MAX = 4096


@dataclass(slots=True)
class _Pending:
    first_ts: float
    first_frame: int = 0
    parts: dict[int, bytes] = field(default_factory=dict)
    total: int | None = None  # known once the last fragment (MF=0) is seen
    next_header: int = -1  # IPv6: upper-layer header of the fragmentable part (from offset 0)
    size: int = 0
    header_proto: int = -1  # the first frame's own IP protocol field (IPv6: 44, or 0 behind hop-by-hop)
    head: bytes = b""  # the offset-0 fragment's IP header (see Reassembler.first_header)


# A datagram given up (Reassembler.dropped): first fragment's frame, its ts, reason, key, that
# frame's IP protocol field, the offset-0 fragment (upper-layer protocol, payload, which byte
# ranges of the datagram never came: missing_text) or (-1, b"", that text).
Dropped = tuple[int, float, str, tuple, int, tuple[int, bytes, str]]


class Reassembler:
    """Collects IP fragments per (version, src, dst, id[, proto]) until a datagram is whole.

    Bounded: at most ``max_datagrams`` incomplete datagrams (oldest dropped), fragments older than
    ``timeout`` seconds of capture time dropped (RFC 791 suggests 15 s at least, RFC 8200 §4.5 uses
    60 s), and nothing past 64 KiB.
    """

    def __init__(self, max_datagrams: int = 256, timeout: float = 60.0) -> None:
        self.max_datagrams = max_datagrams
        self.timeout = timeout
        self.pending: dict[tuple, _Pending] = {}
        self.expired = 0  # datagrams given up (timeout or eviction)
        self.completed = 0
        # Given-up datagrams not yet reported: (first fragment's frame, its ts, one-line reason,
        # the datagram's key: version, src, dst, ..., that frame's IP protocol field, the offset-0
        # fragment as (upper-layer protocol, its payload) or (-1, b"") when it never came). The
        # decoder turns them into Malformed so a lost fragment is never silently "other".
        self.dropped: list[Dropped] = []
        self.frame = 0  # frame number of the fragment being added (set by the caller)
        # The IP header of the datagram completed last, as its offset-0 fragment carried it (IPv4
        # with its options; IPv6 with the unfragmentable part and the fragment header): the
        # reassembled datagram's header (RFC 791 §3.2 reassembly, RFC 8200 §4.5). Later fragments
        # differ: IPv4 options whose copy flag is 0 (Record Route, Timestamp) are only in the first
        # (RFC 791 §3.1). AH's ICV covers this header (RFC 4302 §3.4.1: reassembly first).
        self.first_header = b""
        # What a split decrypt run (export/parallel.py) needs to know of a chunk's fragments: see
        # report() and carried_through(). A few operations a fragment; nothing for other frames.
        self.adds = 0
        self.peak = 0  # most datagrams pending at once
        self.last_ts = float("-inf")  # the latest capture time a fragment was added at
        self.touched: set | None = set()  # datagram keys added to (None: more than TOUCHED_MAX)
        self.cut = 0  # fragments the snap length cut, never added (see _cut_fragment)
        self.cut_frame = 0  # the frame of the last of them

    def seed(self, pending: list[tuple[tuple, _Pending]]) -> None:
        """Start with the datagrams an earlier part of the capture left incomplete (a split decrypt
        run: ``report().pending`` of the chunks before), oldest first, as a one-pass reader would
        hold them here. Copied: the caller's records stay as they were."""
        for k, p in pending:
            self.pending[k] = _Pending(p.first_ts, p.first_frame, dict(p.parts), p.total, p.next_header, p.size,
                                       p.header_proto, p.head)

    def report(self) -> FragReport | None:
        """What this reassembler did and holds (None: no fragment added and nothing pending)."""
        if not self.adds and not self.pending:
            return None
        return FragReport(list(self.pending.items()), self.adds, self.touched, self.peak, self.last_ts,
                          self.expired, self.max_datagrams, self.timeout)

    def add(self, key: tuple, ts: float, offset: int, more: bool, payload: bytes,
            next_header: int = -1, header_proto: int = -1, head: bytes = b"") -> tuple[bytes, int] | str | None:
        """Add one fragment. Returns ``(datagram_payload, next_header)`` when complete, None while
        incomplete, or a reason string for an impossible fragment. ``header_proto``: the fragment's
        own IP protocol field, kept for the report of a datagram that never completes; ``head``:
        its IP header, kept from the offset-0 fragment (``first_header``)."""
        self.adds += 1
        if ts > self.last_ts:
            self.last_ts = ts
        touched = self.touched
        if touched is not None:
            touched.add(key)
            if len(touched) > TOUCHED_MAX:
                self.touched = None
        end = offset + len(payload)
        if end > MAX_DATAGRAM:
            return f"IP fragment ends at byte {end}, beyond the 64 KiB maximum datagram"
        pend = self.pending
        # Expire old datagrams first (dict keeps insertion order, so the oldest are at the front).
        if pend:
            limit = ts - self.timeout
            while pend:
                k0 = next(iter(pend))
                old = pend[k0]
                if old.first_ts >= limit and len(pend) < self.max_datagrams:
                    break
                del pend[k0]
                self.expired += 1
                why = (f"no fragment for {self.timeout:g} s" if old.first_ts < limit
                       else f"more than {self.max_datagrams} incomplete datagrams pending")
                self.dropped.append((old.first_frame, old.first_ts, f"IP fragments never completed ({why}); "
                                     f"{_progress(old)}", k0, old.header_proto, _first_part(old)))
        p = pend.get(key)
        if p is None:
            p = pend[key] = _Pending(ts, self.frame, header_proto=header_proto)
            if len(pend) > self.peak:
                self.peak = len(pend)
        if offset not in p.parts:
            p.size += len(payload)
        p.parts[offset] = payload  # a retransmitted/overlapping fragment: the newest copy wins
        if offset == 0:
            if next_header >= 0:
                p.next_header = next_header
            p.head = head
        if not more:
            p.total = end
        if p.total is None or p.size < p.total:
            return None
        covered = 0
        for off in sorted(p.parts):
            if off > covered:
                return None  # a hole
            covered = max(covered, off + len(p.parts[off]))
        if covered < p.total:
            return None
        buf = bytearray(p.total)
        for off in sorted(p.parts):
            part = p.parts[off]
            buf[off:off + len(part)] = part
        del pend[key]
        self.completed += 1
        self.first_header = p.head
        return bytes(buf[:p.total]), p.next_header


@dataclass(slots=True)
class FragReport:
    """A reassembler's account of one stretch of a capture (a decrypt chunk), for the next one:
    the datagrams still incomplete at its end (oldest first) and enough about the fragments it saw
    to tell whether those datagrams could have changed anything in it (:func:`carried_through`)."""

    pending: list[tuple[tuple, _Pending]]
    adds: int  # fragments added
    touched: set | None  # datagram keys added to; None: too many to list
    peak: int  # most datagrams pending at once
    last_ts: float  # the latest capture time a fragment was added at
    expired: int  # datagrams given up (timeout, eviction)
    max_datagrams: int  # the reassembler's bounds (Reassembler.__init__)
    timeout: float


def carried_through(carry: list[tuple[tuple, _Pending]], rep: FragReport | None) -> list[tuple[tuple, _Pending]] | None:
    """A split run: ``carry`` is what a one-pass reassembler holds where a chunk starts (the
    chunks before it left incomplete), ``rep`` that chunk's report when it ran from an empty
    reassembler. Returns what the one-pass reassembler holds at the chunk's end when the chunk's
    own result is already what one pass gives, else None (the chunk must be run again seeded with
    ``carry``).

    The carried datagrams change nothing in the chunk when none of its fragments joins one of them
    (keys disjoint; a fragment may complete a datagram, or, with a duplicate, complete it earlier
    than the chunk alone did: Reassembler.add's "newest copy wins"), none of them is given up while
    the chunk runs (Reassembler.add expires from the oldest: by age, whichever fragment's time is
    latest, or by count, the chunk's own most pending plus the carried ones), and the chunk gave
    up nothing itself (its own oldest datagram might be shielded by an older carried one in one
    pass). Then one pass holds the carried datagrams, oldest first, followed by the chunk's own."""
    if not carry:
        return rep.pending if rep is not None else []
    if rep is None or not rep.adds:  # no fragment in the chunk: nothing added, nothing given up
        return carry + (rep.pending if rep is not None else [])
    if rep.touched is None or rep.expired or rep.peak + len(carry) >= rep.max_datagrams:
        return None
    if min(p.first_ts for _, p in carry) < rep.last_ts - rep.timeout:
        return None
    if any(k in rep.touched for k, _ in carry):
        return None
    return carry + rep.pending


def _progress(p: _Pending) -> str:
    # imported here: only a datagram that never completes is described, and decode.ip is on decrypt's start-up
    from ..model.plural import plural

    if p.total is None:
        return f"had {plural(p.size, 'byte')} in {plural(len(p.parts), 'fragment')}, the last fragment never came"
    return f"had {p.size} of {plural(p.total, 'byte')} in {plural(len(p.parts), 'fragment')}"


def missing_text(parts: dict[int, bytes], total: int | None) -> str:
    """Which bytes of a datagram's payload no fragment brought, by byte offset (what tshark's
    ip.frag_offset / ipv6.fragment.offset times 8 reads): "offset 976 to the end" when the last
    fragment (MF = 0) never came, so the length is unknown; "offsets 0-975" for a hole."""
    holes: list[str] = []
    covered = 0
    for off in sorted(parts):
        if off > covered:
            holes.append(f"offsets {covered}-{off - 1}")
        covered = max(covered, off + len(parts[off]))
    if total is None:
        holes.append(f"offset {covered} to the end")
    elif covered < total:
        holes.append(f"offsets {covered}-{total - 1}")
    return ", ".join(holes)


def _first_part(p: _Pending) -> tuple[int, bytes, str]:
    """The offset-0 fragment of a datagram given up: (upper-layer protocol, its payload, the byte
    ranges that never came), or (-1, b"", those ranges) when it never came. It alone carries the
    transport header (RFC 791 §2.3; RFC 8200 §4.5: the first fragment holds the upper-layer
    header), so it still says what was lost."""
    gone = missing_text(p.parts, p.total)
    first = p.parts.get(0)
    if first is None:
        return -1, b"", gone
    return (p.next_header if p.next_header >= 0 else p.header_proto), first, gone


def _give_up(reasm: Reassembler, keys: list, why: str) -> list[Dropped]:
    """Give up the datagrams ``keys`` names: (first frame, ts, reason, key, that frame's IP
    protocol field, the offset-0 fragment) each, in ``keys``' order."""
    out = []
    for k in keys:
        p = reasm.pending.pop(k)
        out.append((p.first_frame, p.first_ts, f"IP fragments never completed ({why}); {_progress(p)}", k,
                    p.header_proto, _first_part(p)))
    reasm.expired += len(out)
    return out


def expire_pending(reasm: Reassembler, now: float, timeout: float) -> list[Dropped]:
    """Give up the incomplete datagrams whose first fragment came more than ``timeout`` seconds
    before ``now`` (a live capture's clock: no later fragment need arrive to notice, as
    Reassembler.add needs one), oldest first, as :func:`flush_pending` reports them."""
    limit = now - timeout
    return _give_up(reasm, [k for k, p in reasm.pending.items() if p.first_ts < limit],
                    f"no fragment for {timeout:g} s")


def flush_pending(reasm: Reassembler) -> list[Dropped]:
    """Give up every incomplete datagram (end of capture): (first frame, ts, reason, key, that
    frame's IP protocol field, the offset-0 fragment) each."""
    return _give_up(reasm, list(reasm.pending), "capture ended")


def parse_ipv4(data: bytes, off: int, reasm: Reassembler, ts: float, snap_cut: bool) -> IpResult | str | None:
    n = len(data) - off
    if n < 20:
        return f"IPv4 header truncated ({n} of 20 bytes)"
    b0 = data[off]
    if b0 >> 4 != 4:
        return f"IP version {b0 >> 4} where IPv4 was expected"
    ihl = (b0 & 15) * 4
    if ihl < 20:
        return f"IPv4 header length {ihl} is less than 20"
    if n < ihl:
        return f"IPv4 header with options truncated ({n} of {ihl} bytes)"
    tot = (data[off + 2] << 8) | data[off + 3]
    cut = False
    if tot == 0:  # TSO/GSO on the capturing host leaves 0 here; use what was captured
        tot = n
    elif tot < ihl:
        return f"IPv4 total length {tot} is less than its header length {ihl}"
    elif tot > n:
        if not snap_cut:
            return f"IPv4 total length {tot} exceeds the {n} bytes in the frame"
        tot = n
        cut = True
    proto = data[off + 9]
    src = data[off + 12:off + 16]
    dst = data[off + 16:off + 20]
    flags = (data[off + 6] << 8) | data[off + 7]
    payload = data[off + ihl:off + tot]
    if flags & 0x3FFF and cut:
        return _cut_fragment(reasm, 4, src, dst, proto, payload, flags & 0x1FFF)
    if flags & 0x3FFF:  # MF set or a non-zero fragment offset
        got = reasm.add((4, src, dst, (data[off + 4] << 8) | data[off + 5], proto), ts,
                        (flags & 0x1FFF) * 8, bool(flags & 0x2000), payload, header_proto=proto,
                        head=data[off:off + ihl])
        if got is None or type(got) is str:
            return got
        return 4, src, dst, proto, got[0], True
    return 4, src, dst, proto, payload, False


def broken_header(reason: str) -> tuple[int, int]:
    """For a reason :func:`parse_ipv4` / :func:`parse_ipv6` gave (a MALFORMED row's, "ip" layer,
    no addresses read): (the IP layer the link said, 4 or 6; the version its first nibble holds),
    or (0, 0) for another reason. tshark shows that layer with its version however broken the
    header (RFC 791 §3.1's IHL under 5, a total length under the header's, a header cut short);
    the display filters show it too (filtering.window). Tied to the reasons' wording above."""
    if reason.startswith(("IPv4 ", "IPv6 ")):
        v = 4 if reason[3] == "4" else 6
        return v, v
    if reason.startswith("IP version ") and reason.endswith(" was expected"):
        parts = reason.split()
        if parts[2].isdigit() and parts[4] in ("IPv4", "IPv6"):
            return (4 if parts[4] == "IPv4" else 6), int(parts[2])
    return 0, 0


def runs_past_frame(data: bytes, off: int, ver: int) -> bool:
    """The IP header at ``off`` (parsed already: its length fields were read) says more bytes than
    the frame holds, and the packet is not a fragment. Called only after :func:`parse_ipv4` /
    :func:`parse_ipv6` refused it without a snap-length cut.

    RFC 791 §3.1 (Total Length) and RFC 8200 §3 (Payload Length) count the whole datagram, so the
    frame lost its tail somewhere (a capture tool's own truncation, a lying length). tshark notes it
    and dissects what is there; the decoder does the same, with a malformed mark beside the
    packet. A fragment stays refused: a cut piece would be reassembled into a wrong datagram."""
    if ver == 4:
        return not ((data[off + 6] << 8) | data[off + 7]) & 0x3FFF
    walked = _walk_v6(data[off + 6], data, off + 40, len(data))
    return type(walked) is tuple and walked[0] != V6_FRAGMENT


def _cut_fragment(reasm: Reassembler, ver: int, src: bytes, dst: bytes, proto: int, payload: bytes,
                  offset: int) -> IpResult | None:
    """A fragment the capture's snap length cut: never reassembled (its datagram would have a hole,
    or worse, a piece of the wrong length), as tshark does not (it reassembles only fragments
    captured whole). The first one (offset 0) is read for the headers it holds, as tshark
    dissects it: the UDP and IKE/ESP headers of a big IKE_AUTH in a capture made with a small
    snap length; a later one is nothing to read (counted, Reassembler.cut)."""
    reasm.cut += 1
    reasm.cut_frame = reasm.frame
    if offset:
        return None
    return ver, src, dst, proto, payload, True


def _walk_v6(nh: int, buf: bytes, p: int, end: int) -> tuple[int, int] | str:
    """Skip extension headers; (upper-layer protocol, offset) or a reason."""
    while nh in V6_SKIP:
        if end - p < 8:
            return f"IPv6 extension header {nh} truncated ({end - p} of at least 8 bytes)"
        hlen = (buf[p + 1] + 1) * 8
        if end - p < hlen:
            return f"IPv6 extension header {nh} truncated ({end - p} of {hlen} bytes)"
        nh = buf[p]
        p += hlen
    return nh, p


# What :func:`walk_quoted_v6` says besides the protocol and its offset.
CHAIN_OK = 0
CHAIN_CUT = 1  # the quote ends inside the chain: the returned protocol is the header it could not read
CHAIN_LATER_FRAGMENT = 2  # a non-first fragment: no upper-layer header in it (RFC 8200 §4.5)
MAX_QUOTED_EXT = 8  # headers walked at most: RFC 8200 §4.1 orders a handful, each at most once


def walk_quoted_v6(data: bytes, nh: int, off: int, end: int) -> tuple[int, int, int]:
    """The extension-header chain of a quoted (or any possibly cut-off) IPv6 packet: ``nh`` the
    IPv6 header's next header, ``off`` where the chain starts, ``end`` where the bytes end.
    Returns (upper-layer protocol, its offset, CHAIN_OK / CHAIN_CUT / CHAIN_LATER_FRAGMENT).

    An ICMPv6 error quotes as much of the packet as fits (RFC 4443 §2.4(c)), extension headers
    and all, so the ESP/AH/UDP header of the quote sits behind them. Bounded (MAX_QUOTED_EXT
    headers; a longer chain stops at the header reached) and never reads past ``end``."""
    for _ in range(MAX_QUOTED_EXT):
        if nh == V6_FRAGMENT:
            if end - off < 8:
                return nh, off, CHAIN_CUT
            if (data[off + 2] << 8 | data[off + 3]) & 0xFFF8:  # offset != 0 (RFC 8200 §4.5)
                return data[off], off + 8, CHAIN_LATER_FRAGMENT
            nh, off = data[off], off + 8
        elif nh in V6_SKIP:
            if end - off < 2:
                return nh, off, CHAIN_CUT
            hlen = (data[off + 1] + 1) * 8
            if end - off < hlen:
                return nh, off, CHAIN_CUT
            nh, off = data[off], off + hlen
        else:
            break
    return nh, off, CHAIN_OK


def v6_header_chain(data: bytes, off: int) -> tuple[tuple[int, int], ...]:
    """The extension headers of the IPv6 packet at ``off`` as tshark dissects them in this frame:
    (header number, its Next Header field) each, in order; the fixed header's own Next Header is
    the first header number. A fragment header with a non-zero offset ends the chain (no header
    follows in the fragment, RFC 8200 §4.5); bounded as :func:`walk_quoted_v6` and never past
    the bytes there (a cut header is left out)."""
    return v6_ext_chain(data, data[off + 6], off + 40)


def v6_ext_chain(data: bytes, nh: int, p: int, partial: bool = False) -> tuple[tuple[int, int], ...]:
    """:func:`v6_header_chain` from header number ``nh`` at ``p``: also the headers that follow
    ESP in transport mode (its Next Header a Destination Options header, RFC 4303 §3.1.1).
    ``partial``: a header cut short still counts when its Next Header octet is there (what tshark
    shows of the packet an ICMP error quotes, cut where the error's size limit fell)."""
    end = len(data)
    out = []
    for _ in range(MAX_QUOTED_EXT):
        if nh != V6_FRAGMENT and nh not in V6_SKIP:
            break
        hlen = 8 if nh == V6_FRAGMENT else (data[p + 1] + 1) * 8 if end - p >= 2 else 8
        if end - p < hlen:
            if partial and end > p and nh != V6_FRAGMENT:  # (tshark reads a Fragment header whole or not at all)
                out.append((nh, data[p]))
            break
        out.append((nh, data[p]))
        if nh == V6_FRAGMENT and (data[p + 2] << 8 | data[p + 3]) & 0xFFF8:
            break
        nh, p = data[p], p + hlen
    return tuple(out)


def parse_ipv6(data: bytes, off: int, reasm: Reassembler, ts: float, snap_cut: bool) -> IpResult | str | None:
    n = len(data) - off
    if n < 40:
        return f"IPv6 header truncated ({n} of 40 bytes)"
    if data[off] >> 4 != 6:
        return f"IP version {data[off] >> 4} where IPv6 was expected"
    plen = (data[off + 4] << 8) | data[off + 5]
    cut = False
    if plen == 0:  # jumbogram or TSO: use what was captured
        plen = n - 40
    elif plen > n - 40:
        if not snap_cut:
            return f"IPv6 payload length {plen} exceeds the {n - 40} bytes in the frame"
        plen = n - 40
        cut = True
    src = data[off + 8:off + 24]
    dst = data[off + 24:off + 40]
    end = off + 40 + plen
    walked = _walk_v6(data[off + 6], data, off + 40, end)
    if type(walked) is str:
        return walked
    nh, p = walked
    if nh != V6_FRAGMENT:
        return 6, src, dst, nh, data[p:end], False
    # RFC 8200 §4.5 fragment header: next header(1) reserved(1) offset|res|M (2) identification(4)
    if end - p < 8:
        return f"IPv6 fragment header truncated ({end - p} of 8 bytes)"
    fnh = data[p]
    fo = (data[p + 2] << 8) | data[p + 3]
    if cut:
        if fo & 0xFFF8:
            return _cut_fragment(reasm, 6, src, dst, fnh, b"", fo >> 3)
        walked = _walk_v6(fnh, data, p + 8, end)
        if type(walked) is str:
            return walked
        return _cut_fragment(reasm, 6, src, dst, walked[0], data[walked[1]:end], 0)
    ident = U32.unpack_from(data, p + 4)[0]
    got = reasm.add((6, src, dst, ident), ts, fo & 0xFFF8, bool(fo & 1), data[p + 8:end], fnh, data[off + 6],
                    data[off:p + 8])
    if got is None or type(got) is str:
        return got
    body, fnh = got
    if fnh < 0:
        return "IPv6 fragments reassembled but the first fragment's next header is unknown"
    walked = _walk_v6(fnh, body, 0, len(body))
    if type(walked) is str:
        return walked
    nh, p = walked
    return 6, src, dst, nh, body[p:], True
