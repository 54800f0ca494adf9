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

Memory is bounded: at most ``MAX_PENDING`` incomplete messages (the oldest given up first), at
most ``MAX_BYTES`` held per message, and numbers 1..255 (one octet). Nothing here raises on odd
input: a piece that cannot join its set is counted and left as it is.
"""

from __future__ import annotations

from dataclasses import replace

from ipsecscope.model.ike import FragmentPayload, IkeMessage, Ikev1FragmentSet

__all__ = ["MAX_BYTES", "MAX_PENDING", "Ikev1Reassembler", "fragment_of"]

MAX_PENDING = 256  # incomplete fragmented messages held at once
MAX_BYTES = 256 * 1024  # bytes held for one message (an ISAKMP message with many certificates)
MAX_DONE = 256  # completed sets remembered, to tell a retransmitted piece from a new message


def fragment_of(msg: IkeMessage) -> FragmentPayload | None:
    """The Fragment payload of an IKEv1 piece (its first and only cleartext payload), else None."""
    if msg.header.major != 1 or msg.header.encrypted_v1 or not msg.payloads:
        return None
    p = msg.payloads[0]
    return p if isinstance(p, FragmentPayload) else None


class _Pending:
    __slots__ = ("set", "parts", "size")

    def __init__(self, fs: Ikev1FragmentSet) -> None:
        self.set = fs
        self.parts: dict[int, bytes] = {}
        self.size = 0


class Ikev1Reassembler:
    """Feed every IKEv1 message in capture order; pieces come back annotated, and the piece that
    completes a message comes back as that reassembled message (``reassembled_from`` set)."""

    def __init__(self) -> None:
        self._pending: dict[tuple, _Pending] = {}
        self._done: dict[tuple, Ikev1FragmentSet] = {}
        self.fragments = 0  # pieces seen
        self.reassembled = 0
        self.duplicates = 0  # pieces repeating a number already held or already reassembled
        self.given_up = 0  # incomplete sets dropped for the bounds

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
            done.duplicates.append(msg.frame)
            return replace(msg, v1_fragments=done)
        pend = self._pending.get(key)
        if pend is None:
            if len(self._pending) >= MAX_PENDING:
                old_key = next(iter(self._pending))
                self._pending.pop(old_key).set.dropped = f"more than {MAX_PENDING} incomplete messages at once"
                self.given_up += 1
            fs = Ikev1FragmentSet(frag.frag_id, msg.src, msg.dst, h.exchange, h.msg_id, msg.frame, msg.ts)
            pend = self._pending[key] = _Pending(fs)
        fs = pend.set
        n = frag.number
        if n == 0 or n in pend.parts or (fs.last and n > fs.last) or (frag.last and n < max(pend.parts, default=0)):
            # Number 0, a number held already, or one past the last: nothing to add.
            self.duplicates += 1
            fs.duplicates.append(msg.frame)
            return replace(msg, v1_fragments=fs)
        if pend.size + len(frag.data) > MAX_BYTES:
            self._pending.pop(key)
            fs.dropped = f"more than {MAX_BYTES} bytes in pieces"
            self.given_up += 1
            return replace(msg, v1_fragments=fs)
        if fs.last and n < fs.last:
            fs.late.append(msg.frame)
        pend.parts[n] = frag.data
        pend.size += len(frag.data)
        fs.frames[n] = msg.frame
        if frag.last:
            fs.last = n
        if not fs.last or len(pend.parts) < fs.last:
            return replace(msg, v1_fragments=fs)
        # Complete: the original message, decoded afresh and handed on as this frame's message.
        del self._pending[key]
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
        if inner.header.major != 1 or inner.header.spi_i != h.spi_i:
            # Not an ISAKMP message of this SA: keep the piece as it is, the set says why.
            fs.dropped = "the reassembled bytes are not an ISAKMP message of this SA"
            return replace(msg, v1_fragments=fs)
        return replace(inner, v1_fragments=fs, reassembled_from=tuple(fs.frames[i] for i in range(1, fs.last + 1)),
                       piece_header=h)

    def pending(self) -> list[Ikev1FragmentSet]:
        """Messages whose pieces never all arrived (so far)."""
        return [p.set for p in self._pending.values()]
