"""IKEv1 fragmentation (payload 132): put the pieces of a big ISAKMP message back together.

Cisco, Microsoft and strongSwan (``fragmentation = yes|force``, announced by the FRAGMENTATION
vendor ID) send a message too big for one datagram (Main Mode MM5/MM6 or Aggressive Mode with
certificates) as several ISAKMP messages, each holding one Fragment payload: Fragment ID, number
1..last, a last flag, and a slice of the original message's bytes, *header included* (the
message is encrypted first and then cut, strongSwan message.c ``fragment``). Joined in number
order, the slices are the original ISAKMP message, which then takes the normal IKEv1 path
(phase-1 decryption, correlation) as if it had arrived whole on the frame completing it, as
the receiving peer does and as tshark shows it ("Reassembled ISAKMP").

The peer keeps the pieces of one Fragment ID until it has 1..last (strongSwan message.c
``add_fragment``): a retransmission's pieces (same Fragment ID, same bytes) fill the gaps a
lost one left, so a piece arriving after the last-flagged one came from the sender's second
try. Unlike IKEv2's RFC 7383 SKF pieces (crypto/ike_sk.py, each encrypted and verified on its
own) these are cleartext slices: reassembly comes before decryption.

Memory is bounded (a capture or live stream of bogus pieces must not grow it): at most ``MAX_PENDING`` incomplete messages and
``MAX_TOTAL_BYTES`` of pieces held in all (the oldest given up first, decode.fragsets), at most
``MAX_BYTES`` for one message, numbers 1..``MAX_FRAGMENTS``. Nothing here raises on odd input: a
piece that cannot join its set, or whose arrival gave up another set, comes back with a
one-line ``malformed`` reason, which the session and ``summary`` count and show.
"""

from __future__ import annotations

from dataclasses import replace

from ipsecscope.decode.fragsets import PendingSets
from ipsecscope.model.ike import FragmentPayload, IkeMessage, Ikev1FragmentSet
from ipsecscope.model.plural import plural

__all__ = ["MAX_BYTES", "MAX_FRAGMENTS", "MAX_PENDING", "MAX_SETS_PER_SA", "MAX_TOTAL_BYTES", "Ikev1Reassembler",
           "fragment_of", "note_repeat"]

MAX_PENDING = 256  # incomplete fragmented messages held at once
MAX_BYTES = 256 * 1024  # bytes held for one message (an ISAKMP message with many certificates)
MAX_TOTAL_BYTES = 4 << 20  # bytes held for all incomplete messages together
# Fragment numbers accepted: libreswan refuses IKEv1 pieces numbered above 16 (ikev1.c) and
# allows 32 IKEv2 fragments ("Windows has been observed to send 29", pluto_constants.h).
MAX_FRAGMENTS = 32
MAX_DONE = 256  # completed sets remembered, to tell a retransmitted piece from a new message
MAX_SETS_PER_SA = 64  # sets an IKE SA lists (state/ikev1); a real one has a handful
MAX_KEPT_FRAMES = 16  # repeat frames a set lists (all are counted)


def fragment_of(msg: IkeMessage) -> FragmentPayload | None:
    """The Fragment payload of an IKEv1 piece (its first and only cleartext payload), else None."""
    if msg.header.major != 1 or msg.header.encrypted_v1 or not msg.payloads:
        return None
    p = msg.payloads[0]
    return p if isinstance(p, FragmentPayload) else None


def note_repeat(fs: Ikev1FragmentSet, frame: int) -> None:
    """A piece repeating one ``fs`` holds: counted, its frame listed among the first few."""
    fs.duplicate_count += 1
    if len(fs.duplicates) < MAX_KEPT_FRAMES:
        fs.duplicates.append(frame)


def _with_mark(msg: IkeMessage, fs: Ikev1FragmentSet | None, marks: list[str]) -> IkeMessage:
    if not marks:
        return replace(msg, v1_fragments=fs)
    why = "; ".join(marks)
    return replace(msg, v1_fragments=fs, malformed=f"{msg.malformed}; {why}" if msg.malformed else why)


class _Pending:
    __slots__ = ("set", "parts")

    def __init__(self, fs: Ikev1FragmentSet) -> None:
        self.set = fs
        self.parts: dict[int, bytes] = {}


class Ikev1Reassembler:
    """Feed every IKEv1 message in capture order; pieces come back annotated, and the piece that
    completes a message comes back as that reassembled message (``reassembled_from`` set)."""

    def __init__(self) -> None:
        self._pending: PendingSets[_Pending] = PendingSets(MAX_PENDING, MAX_TOTAL_BYTES)
        self._done: dict[tuple, Ikev1FragmentSet] = {}
        self.fragments = 0  # pieces seen
        self.reassembled = 0
        self.duplicates = 0  # pieces repeating a number already held or already reassembled
        self.given_up = 0  # incomplete sets dropped for the bounds
        self.refused = 0  # pieces numbered outside 1..MAX_FRAGMENTS, never held

    def _give_up(self, fs: Ikev1FragmentSet, why: str) -> str:
        """Drop ``fs`` for a bound; the mark the piece whose arrival did it carries."""
        fs.dropped = why
        self.given_up += 1
        held = ", ".join(str(f) for _, f in sorted(fs.frames.items())) or "none"
        return (f"IKEv1 fragment limit: {why}; gave up Fragment ID {fs.frag_id} from {fs.src} "
                f"(pieces in frames {held})")

    def add(self, msg: IkeMessage) -> IkeMessage:
        frag = fragment_of(msg)
        if frag is None:
            return msg
        self.fragments += 1
        h = msg.header
        # Direction matters: both peers may number their pieces from the same Fragment ID.
        key = (h.spi_i, h.spi_r, msg.src, msg.dst, frag.frag_id)
        done = self._done.get(key)
        if done is not None and key not in self._pending:
            # A piece of a message already put together: the sender's retransmission (its
            # peer missed the answer, or the capture saw the pieces the first try lost).
            self.duplicates += 1
            note_repeat(done, msg.frame)
            return replace(msg, v1_fragments=done)
        n = frag.number
        if not 1 <= n <= MAX_FRAGMENTS:
            # Number 0 does not exist (numbers start at 1); past MAX_FRAGMENTS no sender goes.
            # (The decoder marks number 0 malformed already: one mark is enough.)
            self.refused += 1
            return _with_mark(msg, None, [] if msg.malformed else [
                f"IKEv1 fragment number {n} outside 1..{MAX_FRAGMENTS}: not reassembled"])
        marks: list[str] = []
        pend = self._pending.get(key)
        if pend is None:
            fs = Ikev1FragmentSet(frag.frag_id, msg.src, msg.dst, h.exchange, h.msg_id, msg.frame, msg.ts)
            pend = _Pending(fs)
            for _, old in self._pending.open(key, pend):
                marks.append(self._give_up(old.set, f"more than {MAX_PENDING} incomplete messages at once"))
        fs = pend.set
        if n in pend.parts or (fs.last and n > fs.last) or (frag.last and n < max(pend.parts, default=0)):
            # A number held already, or one past the last: nothing to add.
            self.duplicates += 1
            note_repeat(fs, msg.frame)
            return _with_mark(msg, fs, marks)
        if self._pending.size(key) + len(frag.data) > MAX_BYTES:
            self._pending.pop(key)
            marks.append(self._give_up(fs, f"more than {MAX_BYTES} bytes in pieces of one message"))
            return _with_mark(msg, fs, marks)
        for _, old in self._pending.grow(key, len(frag.data)):
            marks.append(self._give_up(old.set, f"more than {MAX_TOTAL_BYTES} bytes held in incomplete messages"))
        if fs.last and n < fs.last:
            fs.late.append(msg.frame)
        pend.parts[n] = frag.data
        fs.frames[n] = msg.frame
        if frag.last:
            fs.last = n
        if not fs.last or len(pend.parts) < fs.last:
            return _with_mark(msg, fs, marks)
        # Complete: the original message, decoded afresh and handed on as this frame's message.
        self._pending.pop(key)
        self._done[key] = fs
        if len(self._done) > MAX_DONE:
            del self._done[next(iter(self._done))]
        fs.completed_frame, fs.completed_ts = msg.frame, msg.ts
        self.reassembled += 1
        whole = b"".join(pend.parts[i] for i in range(1, fs.last + 1))
        from ipsecscope.decode.ike import parse_ike
        from ipsecscope.model.packets import IkeDatagram

        inner = parse_ike(IkeDatagram(msg.frame, msg.ts, msg.src, msg.dst, msg.sport, msg.dport, whole,
                                      msg.transport, msg.non_esp_marker, msg.ip_fragmented))
        if inner.header.major != 1 or inner.header.spi_i != h.spi_i or fragment_of(inner) is not None:
            # Not an ISAKMP message of this SA (or one more piece, which no sender nests): keep
            # the piece as it is; the set says why, and the piece is counted malformed, since
            # the sender's bytes, not the capture, are at fault.
            fs.dropped = ("the reassembled message is itself a fragment" if inner.header.major == 1
                          and inner.header.spi_i == h.spi_i else
                          "the reassembled bytes are not an ISAKMP message of this SA")
            marks.append(f"IKEv1 Fragment ID {fs.frag_id}, {plural(fs.last, 'piece')} joined "
                         f"({plural(len(whole), 'byte')}): {fs.dropped}")
            return _with_mark(msg, fs, marks)
        if marks:
            inner = replace(inner, malformed="; ".join(([inner.malformed] if inner.malformed else []) + marks))
        return replace(inner, v1_fragments=fs, reassembled_from=tuple(fs.frames[i] for i in range(1, fs.last + 1)),
                       piece_header=h)

    def pending(self) -> list[Ikev1FragmentSet]:
        """Messages whose pieces never all arrived (so far)."""
        return [p.set for p in self._pending.values()]
