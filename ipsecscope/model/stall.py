"""Where an IKEv1 phase 1 that never completed stopped, as the capture shows it (``IkeSa.stall``).

Main Mode is six messages and Aggressive Mode three under one Message ID (RFC 2409 §5), so "the
exchange was answered" says nothing about the last message: MM1 and MM3 may have been answered
and MM5 never. state/ikev1_stall.py fills this in at the end of the input from the last phase-1
message each side sent; ``IkeSa.state_word`` / ``IkeSa.state_text`` (model.sa) read it, so every
view (sas, sas --json, the TUI's SA tree and detail) says the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from .plural import noun

NBSP = "\u00a0"  # as model.idtext.NBSP (idtext imports model.sa, which names this module: no cycle)

# The verdicts: the next message may still come (the capture ended within a retransmit interval
# of the last one); it did not come though it was due (the capture went on for longer than a
# retransmit interval after it); a request (MM1/MM3/MM5, AM1) whose sender gave up or would have (3
# retransmissions or 10 s unanswered: state.tracker.finish's rule for IKEv2's "no response").
WAITING = "waiting"
INCOMPLETE = "incomplete"
NO_RESPONSE = "no response"


@dataclass(slots=True, frozen=True)
class Phase1Stall:
    """The last phase-1 message of an IKE SA that never came up, and what did not follow it."""

    message: str  # "MM5", "AM2"; "Main Mode message" when the capture missed phase 1's start
    sender: str  # the address that sent it
    waiting_for: str  # the address whose message did not follow
    next_message: str | None  # what should have followed from ``waiting_for`` ("MM3"); None: an answer
    frames: tuple[int, ...]  # its copies (or pieces), first few
    sent: int  # times the sender sent it (1 + its retransmissions)
    first_ts: float  # its first copy
    ts: float  # its last copy
    end: float  # the end of the capture (or, live, the time it was concluded)
    verdict: str  # WAITING | INCOMPLETE | NO_RESPONSE
    # Sent as IKEv1 fragments (payload 132) never reassembled: the numbers never captured, of how many
    # (an empty ``lost_fragments`` with ``unreassembled``: the last piece, which says how many, never came)
    lost_fragments: tuple[int, ...] = ()
    fragments: int = 0
    unreassembled: bool = False

    def text(self) -> str:
        """What stopped, e.g. "MM5 never completed: fragment 1 of 2 never arrived (frames 5, 6, 7,
        8: sent 4 times), so 198.18.0.2 could not answer; 198.18.0.1 silent…"."""
        sent = f": sent {self.sent} times" if self.sent > 1 else ""
        # "frames 5, 6", the word kept with the first number, as model.idtext.frames_ref writes it
        where = f"{noun(len(self.frames), 'frame')}{NBSP}{', '.join(map(str, self.frames))}{sent}"
        if self.unreassembled:
            # the peer has nothing to answer until the message is whole; strongSwan keeps the pieces
            # and waits (message.c add_fragment)
            lost = ", ".join(map(str, self.lost_fragments))
            pieces = (f"{noun(len(self.lost_fragments), 'fragment')} {lost} of {self.fragments}"
                      if self.lost_fragments else "its last fragment")
            what = (f"{self.message} never completed: {pieces} never arrived ({where}), "
                    f"so {self.waiting_for} could not answer")
        elif self.next_message is None:
            what = f"no answer to {self.message} ({where})"
        else:
            what = f"no {self.next_message} after {self.message} ({where})"
        if self.verdict == WAITING:
            return f"{what} yet; the capture ended {_secs(self.end - self.ts)} after it"
        return f"{what}; {self.waiting_for} silent for {_secs(self.silent_for)} until the capture ended"

    @property
    def silent_for(self) -> float:
        """Seconds from its first copy to the end: how long ``waiting_for`` said nothing after it."""
        return max(0.0, self.end - self.first_ts)

    def to_dict(self) -> dict:
        """The ``stall`` object of ``sas --json`` (export.documents)."""
        return {"message": self.message, "sender": self.sender, "waiting_for": self.waiting_for,
                "next_message": self.next_message, "frames": list(self.frames), "sent": self.sent,
                "first_time": self.first_ts, "time": self.ts, "silent_for": round(self.silent_for, 6),
                "verdict": self.verdict,
                "unreassembled": self.unreassembled, "lost_fragments": list(self.lost_fragments),
                "fragments": self.fragments}


def _secs(d: float) -> str:
    """A duration as a person reads it: "12 ms" under a second, else "4.4 s"."""
    return f"{d * 1000:.0f} ms" if d < 1 else f"{d:.1f} s"
