"""Per-flow ESP/AH counters: loss, replay and reordering from sequence numbers.

RFC 4303 §3.4.3: a receiver keeps a sliding anti-replay window (64 packets by default) above the
highest sequence number seen. We keep a wider bitmap (``TRACK``) so that a packet arriving later
than the 64-packet window can still be told apart from a duplicate: it fills a gap (reordered
beyond the window — a real receiver would have dropped it) instead of being a replay.

The high 32 bits of an extended sequence number (RFC 4303 §3.3.3, ESN) come from the decryptor
(``EspResult.seq_hi``) when it verified the ICV; without keys we infer a wrap when the low 32 bits
fall from the top quarter of the space to the bottom quarter.

A repeated number is either a *replay* (the receiver's anti-replay check drops it) or a *capture
duplicate*: the capture point saw the one packet twice (a bridge and its port, ``-i any`` with a VLAN
device, a mirror of both directions). A copy is a capture duplicate when it repeats one of the
flow's last ``RING`` sequence numbers' packets — same full number, same ESP/AH length, same last
four octets (the ICV's end, which covers the whole packet, RFC 4303 §2.8) — within
``CAPTURE_DUP_GAP`` of the original, at most ``MAX_CAPTURE_COPIES`` times (state/copies); later,
more often or with other bytes it is a replay. A mirror (SPAN) port may queue one
copy behind later packets of the flow, so the copy need not follow its original at once: each flow
keeps a small ring of its last packets, slot = full number mod ``RING`` (a fixed list per flow, one
tuple stored per packet, nothing that grows with the capture).
"""

from __future__ import annotations

from ..model.sa import EspFlow
from .copies import CAPTURE_DUP_GAP, MAX_CAPTURE_COPIES

REPLAY_WINDOW = 64  # RFC 4303 §3.4.3 default window, also strongSwan's replay_window default (32 pkts in older)
TRACK = 2048  # how far below the highest number we still remember which ones arrived
_MASK = (1 << TRACK) - 1
EVIDENCE = 5  # frames kept per counter as evidence


_FLOOD = MAX_CAPTURE_COPIES + 1  # a ring slot's copy count once its packet came more often than that
RING = 16  # packets per flow a capture duplicate may lag behind its original (a power of two)
_RING_MASK = RING - 1


class SeqTracker:
    """Sequence-number bookkeeping for one flow (kept outside the model: it is engine state)."""

    __slots__ = ("top", "bits", "missing", "hi", "ring")

    def __init__(self) -> None:
        self.top: int | None = None  # highest full sequence number seen
        self.bits = 0  # bit k set = (top - k) arrived, k < TRACK
        self.missing = 0  # numbers below top never seen (a later arrival takes one back)
        self.hi = 0
        # The latest packet of each of the last RING numbers: ring[full & _RING_MASK] = (full number,
        # time, ESP/AH length, last four octets as an int, -1 unknown, frame[, capture copies taken
        # of it]), for a capture duplicate; the flow's ``recent`` is this list (the rules read the last packets' sizes and
        # times from it: a PMTU black hole, analysis.rules.nat_mtu).
        self.ring: list[tuple | None] = [None] * RING

    def full_seq(self, seq: int, seq_hi: int | None) -> int:
        """The 64-bit sequence number. ``seq_hi`` from a verified decryption is authoritative
        (RFC 4303 §3.3.3: the ICV covers it); otherwise infer it from the highest number seen."""
        if seq_hi is not None:
            self.hi = max(self.hi, seq_hi)
            return (seq_hi << 32) | seq
        if self.top is not None:
            top_lo = self.top & 0xFFFFFFFF
            hi = self.top >> 32
            if top_lo >= 0xC0000000 and seq < 0x40000000:
                return ((hi + 1) << 32) | seq  # wrapped (ESN in use)
            if top_lo < 0x40000000 and seq >= 0xC0000000 and hi > 0:
                return ((hi - 1) << 32) | seq  # a late packet from before the wrap
            return (hi << 32) | seq
        return seq

    def add(self, full: int) -> str:
        """Record one arrival. Returns "new", "gap" (jumped over missing numbers), "dup",
        "late" (fills a gap within the replay window), "reordered" (beyond the window)."""
        top = self.top
        if top is None:
            self.top = full
            self.bits = 1
            return "new"
        if full > top:
            shift = full - top
            self.top = full
            if shift == 1:  # the common case: next in order
                bits = (self.bits << 1) | 1
                # Trim only now and then: one big-int AND per packet costs more than the bits.
                self.bits = bits & _MASK if bits >> (TRACK + 256) else bits
                return "new"
            self.missing += shift - 1
            self.bits = ((self.bits << shift) | 1) & _MASK if shift < TRACK else 1
            return "gap"
        k = top - full
        if k >= TRACK:
            return "reordered"  # too old to know: count it as late, not as loss recovered
        mask = 1 << k
        if self.bits & mask:
            return "dup"
        self.bits |= mask
        if self.missing > 0:
            self.missing -= 1
        return "reordered" if k >= REPLAY_WINDOW else "late"


def account(flow: EspFlow, st: SeqTracker, seq: int, seq_hi: int | None, frame: int, ts: float = 0.0,
            length: int = -1, tail: int = -1) -> str:
    """Update ``flow``'s sequence counters for one packet; returns the verdict of :meth:`SeqTracker.add`,
    "copy" for a capture duplicate of one of the last ``RING`` packets (see the module's docstring).
    ``tail``: the packet's last four octets as an int (-1: unknown, never a copy)."""
    full = st.full_seq(seq, seq_hi)
    verdict = st.add(full)
    ring = st.ring
    slot = full & _RING_MASK
    prev = ring[slot]
    if verdict == "dup" and prev is not None and prev[0] == full and prev[2] == length and prev[3] == tail != -1:
        n = prev[5] if len(prev) > 5 else 0
        if abs(ts - prev[1]) < CAPTURE_DUP_GAP:
            # Timed from the original, which stays in the slot with its copies counted (a 6th
            # element); past MAX_CAPTURE_COPIES the sender repeats itself (state/copies), and
            # _FLOOD marks the packet as re-sent for good.
            if n < MAX_CAPTURE_COPIES:
                verdict = "copy"
                ring[slot] = (*prev[:5], n + 1)
            elif n == MAX_CAPTURE_COPIES:
                ring[slot] = (*prev[:5], _FLOOD)
        else:  # a replay: a new original (a flooded packet's replays stay replays)
            ring[slot] = (full, ts, length, tail, frame) if n != _FLOOD else (full, ts, length, tail, frame, _FLOOD)
    else:
        ring[slot] = (full, ts, length, tail, frame)
    if flow.seq_min is None or full < flow.seq_min:
        flow.seq_min = full
    if flow.seq_max is None or full > flow.seq_max:
        flow.seq_max = full
    flow.esn_hi = full >> 32
    flow.lost = st.missing
    if verdict == "copy":
        flow.capture_duplicates += 1
        if len(flow.capture_duplicate_frames) < EVIDENCE:
            flow.capture_duplicate_frames.append(frame)
    elif verdict == "dup":
        flow.duplicates += 1
        if len(flow.duplicate_frames) < EVIDENCE:
            flow.duplicate_frames.append(frame)
    elif verdict == "reordered":
        flow.reordered += 1
        if len(flow.reordered_frames) < EVIDENCE:
            flow.reordered_frames.append(frame)
    elif verdict == "gap" and len(flow.gap_frames) < EVIDENCE:
        flow.gap_frames.append(frame)
    return verdict
