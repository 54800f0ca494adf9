"""Findings of a capture that is still growing: a problem that came and went stays listed.

The rules describe the capture as it stands. Some describe a *condition* that holds only while
the traffic shows it: ESP-RETURN-STOPPED is true while a peer's ESP stays away and false again
once one reply arrives. Over a finished file that is right (the file's end is what it shows).
Live it made the finding blink: a path that loses big packets and passes small ones (a PMTU
black hole) showed the warning for two seconds out of every five, the Findings count went
9, 10, 9, 10, and a one-way outage of 30 s left no trace on the screen once it healed (field
walkthrough live4). An engineer glancing back at the screen must find what happened meanwhile.

So a front end that shows a growing capture (``ipsecscope live``, a followed file) passes each
evaluation through :class:`KeptFindings`: a finding that disappears stays in the list, its title
saying when it ended and how often it came back; while it holds again, only the current one is
listed (one entry per code and SA either way, so the list does not jump). A finding whose
first evidence frame lives on in another one (an aggregate that absorbed it, IKE-DEAD-PEER become
IKE-PEER-RESTARTED once the peer answered a fresh IKE_SA_INIT) was replaced, not ended: it goes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .model.sa import Finding
from .timefmt import at

MAX_ENDED = 200  # ended findings kept (random-SPI garbage must not grow the list without bound)


def _key(f: Finding) -> tuple:
    """A finding's identity while it holds: as live.finding_events (its counts may grow)."""
    return f.code, f.sa, f.frames[:1]


@dataclass(slots=True)
class Ended:
    finding: Finding  # its last version before it disappeared
    at: float | None  # the capture's time when it was first seen gone
    times: int  # how many separate spells it held


class KeptFindings:
    """Remembers every finding shown; :meth:`view` adds back the ones that ended."""

    def __init__(self) -> None:
        self._shown: dict[tuple, Finding] = {}
        self._ended: dict[tuple, Ended] = {}  # by (code, sa), oldest first
        self._spells: dict[tuple, int] = {}  # (code, sa) -> spells that ended so far

    def view(self, findings: list[Finding], now: float | None) -> list[Finding]:
        """``findings`` (one evaluation, sorted as Session.findings) with the ended ones added.

        ``now`` is the capture's latest time (what "ended at" means: the traffic from then on no
        longer shows it). Calling it again with the same list changes nothing.
        """
        current = {_key(f): f for f in findings}
        carried = {fr for f in findings for fr in f.all_frames}
        for key, old in self._shown.items():
            if key in current:
                continue
            # Replaced, not ended, when a current finding carries the frame that named it (its first,
            # as _key): IKE-PEER-RESTARTED cites IKE-DEAD-PEER's first unanswered request, an
            # aggregate its members' frames. Sharing other frames is not taking over: ESP-PATH-MTU's
            # black hole cites the big packets an ESP-RETURN-STOPPED spell also lists, and that
            # spell still ends when an answer comes back.
            if carried.intersection(old.frames[:1] or old.all_frames):
                continue
            cs = (old.code, old.sa)
            self._spells[cs] = self._spells.get(cs, 0) + 1
            self._ended.pop(cs, None)
            self._ended[cs] = Ended(old, now, self._spells[cs])
            if len(self._ended) > MAX_ENDED:
                del self._ended[next(iter(self._ended))]
        self._shown = current
        holding = {(f.code, f.sa) for f in findings}
        kept = [_marked(e) for cs, e in self._ended.items() if cs not in holding]
        if not kept:
            return findings
        return sorted([*findings, *kept], key=lambda f: (-int(f.severity), f.ts or 0.0, f.code))

    def ended_since(self, before: dict[tuple, Ended]) -> list[Ended]:
        """The entries that ended after the snapshot ``before`` (see :meth:`snapshot`)."""
        return [e for cs, e in self._ended.items() if before.get(cs) is not e]

    def snapshot(self) -> dict[tuple, Ended]:
        return dict(self._ended)




def _marked(e: Ended) -> Finding:
    f = e.finding
    again = f", {e.times} times" if e.times > 1 else ""
    note = (f"Ended: the traffic since {at(e.at)} no longer shows this{again}; kept so that what "
            "happened while nobody looked stays on the screen.")
    # In front: at 80x24 the list cuts a long title, and "ended" is what changes its meaning.
    return replace(f, title=f"ended {at(e.at)}{again}: {f.title}",
                   explanation=f"{note}\n{f.explanation}")


__all__ = ["Ended", "KeptFindings"]
