"""Where an IKEv1 phase 1 that never completed stopped (``IkeSa.stall``, model/stall.py).

Main Mode's six messages and Aggressive Mode's three share Message ID 0 (RFC 2409 §5): one
exchange, answered as soon as MM2 is, so state.tracker.finish's "last request unanswered" rule sees
only an MM1 nobody answered. Here each phase-1 message is followed on its own: :func:`note`
remembers the last one either side sent (its copies, or its pieces when it went as IKEv1
fragments, payload 132), and :func:`conclude`, at the end of the input, says what did not follow:
an answer to MM1/MM3/MM5 or AM1, the initiator's MM3/MM5 after MM2/MM4, its AM3 after AM2. Message
k of phase 1 is the initiator's (k+1)/2-th when k is odd, the responder's k/2-th when even.

The verdict uses IKEv2's rule (state.tracker.finish) for giving up on a request (the initiator's
MM1/MM3/MM5 or AM1): retransmitted 3 times, or 10 s unanswered, and the SA FAILED with "no
response"; short of that (or for the responder's message), a next message not seen within a
retransmit interval of the last copy (the interval observed between its copies, else strongSwan's
4 s first timeout, charon.retransmit_timeout) makes it "incomplete", and one the capture ended too
soon to see is still "waiting" (INITIATING).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..model.sa import IkeSa, SaState
from ..model.stall import INCOMPLETE, NO_RESPONSE, WAITING, Phase1Stall
from .copies import CAPTURE_DUP_GAP

if TYPE_CHECKING:  # the IKE model loads with the first IKE message (tracker.finish imports this module)
    from ..model.ike import IkeMessage
    from .book import Book

FIRST_RETRANSMIT_S = 4.0  # strongSwan's first retransmit timeout (libreswan's is 0.5 s: seen as a copy)
GIVE_UP_RETRANSMITS = 3  # as state.tracker.finish: the sender's retransmissions it takes to give up
ZERO = b"\x00" * 8
_KEPT_FRAMES = 8  # frames of the last message kept for the text (its copies past these are counted)


@dataclass(slots=True)
class Tail:
    """The last phase-1 message one side sent: its identity (its bytes' hash, or its fragment set),
    its frames, how often it was sent and when."""

    initiator: bool  # sent by the initiator
    ident: object
    frames: list[int] = field(default_factory=list)
    sent: int = 1
    first_ts: float = 0.0
    last_ts: float = 0.0
    fragments: object = None  # the Ikev1FragmentSet of a message sent in pieces
    numbered: bool = True  # the capture holds phase 1 from its first message


def note(book: Book, sa: IkeSa, msg: IkeMessage, is_response: bool) -> None:
    """Record ``msg``, a phase-1 message, retransmission or piece, as the last one of its side."""
    from ..model.ike import SaPayload  # loaded already: an IKE message is being read
    priv = book.ike_scratch(sa)
    fs = msg.v1_fragments
    ident = ("set", id(fs)) if fs is not None else hash(msg.raw)
    t: Tail | None = priv.v1_tail
    if t is not None and t.ident == ident and t.initiator == (not is_response):
        if msg.frame in t.frames:
            return
        if len(t.frames) < _KEPT_FRAMES:
            t.frames.append(msg.frame)
        # a byte-identical copy seconds later is a retransmission; within CAPTURE_DUP_GAP the
        # capture's own copy (state/copies); the pieces of one set count once per round
        if fs is None and msg.ts - t.last_ts >= CAPTURE_DUP_GAP:
            t.sent += 1
        t.last_ts = msg.ts
        return
    # numbered from MM1/AM1 (zero responder cookie) or from the responder's choice (MM2/AM2, its SA
    # payload, RFC 2409 §5); a capture that starts later cannot number the messages
    numbered = t.numbered if t is not None else (msg.header.spi_r == ZERO or (is_response and bool(msg.find(SaPayload))))
    priv.v1_tail = Tail(not is_response, ident, [msg.frame], 1, msg.ts, msg.ts, fs, numbered)


def _sent_in_pieces(t: Tail) -> int:
    """How often a message sent in pieces was sent: each piece repeats once per retransmission."""
    fs = t.fragments
    held = len(getattr(fs, "frames", {})) or 1
    return 1 + getattr(fs, "duplicate_count", 0) // held


def conclude(book: Book, sa: IkeSa, end: float, timeout: float) -> None:
    """Set ``sa.stall`` for an IKEv1 SA whose phase 1 never completed, and fail it ("no
    response") when its sender gave up by IKEv2's rule. Idempotent; called again in live mode
    (a later message clears both, :func:`resume`)."""
    if sa.version != 1 or sa.mode is None:
        return
    if sa.state != SaState.INITIATING and not (sa.state == SaState.FAILED and sa.failure == "no response"):
        return
    priv = book.ike_scratch(sa)
    t: Tail | None = priv.v1_tail
    if t is None:
        return
    fs = t.fragments
    whole = fs is None or getattr(fs, "completed_frame", None) is not None
    mine = priv.initiator_msgs if t.initiator else priv.responder_msgs
    if not whole:
        mine += 1  # never reassembled, so never counted (state.ikev1._phase1)
    number = 2 * mine - 1 if t.initiator else 2 * mine
    prefix = "MM" if sa.mode == "Main" else "AM" if sa.mode == "Aggressive" else None
    if prefix is None or not t.numbered or mine < 1:
        # (unnumbered: the initiator's next message is "an answer" to the responder's last one too)
        label, nxt = f"{sa.mode} Mode message", None
    else:
        label = f"{prefix}{number}"
        # after the responder's message the initiator goes on (MM3, MM5, AM3); after its own, an answer
        nxt = None if t.initiator else f"{prefix}{number + 1}"
    sender, other = (sa.initiator, sa.responder) if t.initiator else (sa.responder, sa.initiator)
    sent = _sent_in_pieces(t) if fs is not None and not whole else t.sent
    silent = max(0.0, end - t.last_ts)
    interval = (t.last_ts - t.first_ts) / (sent - 1) if sent > 1 else FIRST_RETRANSMIT_S
    if t.initiator and (sent - 1 >= GIVE_UP_RETRANSMITS or silent >= timeout):
        # a request (MM1/MM3/MM5, AM1) left unanswered: IKEv2's "no response"; the responder's
        # MM2/MM4/AM2 left without the initiator's next message is at most "incomplete" (its
        # retransmissions say it waited; nothing says why the initiator stopped)
        verdict = NO_RESPONSE
    elif silent >= interval:
        verdict = INCOMPLETE
    else:
        verdict = WAITING
    lost = tuple(fs.missing) if fs is not None and not whole else ()
    pieces = getattr(fs, "last", 0) if lost else 0
    sa.stall = Phase1Stall(label, sender, other, nxt, tuple(t.frames), sent, t.first_ts, t.last_ts, end, verdict,
                           lost, pieces, unreassembled=not whole)
    if verdict == NO_RESPONSE:
        book.fail_ike(sa, "no response", t.last_ts, t.frames[-1])
    elif sa.state == SaState.FAILED:  # live: an earlier conclusion, the capture grew since
        book.transition(sa, SaState.INITIATING)
        sa.failure = sa.failure_frame = sa.failed_ts = None


def resume(book: Book, sa: IkeSa) -> None:
    """A phase-1 message after :func:`conclude` (live mode): the stall is over; a "no response"
    it concluded is taken back, as IKEv2's (state.ikev2)."""
    sa.stall = None
    if sa.state == SaState.FAILED and sa.failure == "no response":
        book.transition(sa, SaState.INITIATING)
        sa.failure = sa.failure_frame = sa.failed_ts = None
