"""Path MTU evidence without ICMP: a flow whose big packets go unanswered while its small ones
are answered (a PMTU black hole, RFC 4459 §2), for ESP-PATH-MTU (``nat_mtu``) and ESP-RETURN-STOPPED
(``liveness``). The rules stay in their families' modules (``core.rule`` reads the family from it);
this is the evidence they share."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from ...model.plural import plural
from ...model.sa import EspFlow, SaTable


@dataclass(slots=True)
class BlackHole:
    """Big packets of a flow unanswered while small ones are answered, among its last packets
    (EspFlow.recent): what a path MTU black hole looks like from a capture with no ICMP error."""

    flow: EspFlow
    big: list[tuple[int, int, float]]  # (frame, outer IP size, time) of the unanswered packets bigger than any answered one
    answered: int  # packets followed by an answer before the sender's next one
    answered_max: int  # the biggest of those (outer IP size)
    looked_at: int  # how many of the flow's last packets could be judged

    def sizes(self) -> str:
        lo, hi = min(x[1] for x in self.big), max(x[1] for x in self.big)
        return f"{lo}" if lo == hi else f"{lo} to {hi}"


def _outer(f: EspFlow, length: int) -> int:
    """The outer IP packet's size for an ESP/AH length (what an MTU limits, tshark's ip.len for IPv4)."""
    return length + (40 if ":" in f.dst else 20) + (8 if f.udp_encap else 0)


def black_hole(table: SaTable, f: EspFlow) -> BlackHole | None:
    """``f``'s big packets go unanswered while its small ones are answered (its CHILD SA's other
    direction), judged on the last packets of both (state/esp_flow's ring, 16 each).

    A packet is answered when the other direction sends before ``f``'s next packet (a ping and
    its reply; a TCP segment and its ACK). A link smaller than a packet drops it; with DF set its
    router should say so in ICMP "fragmentation needed"/"packet too big" (RFC 1191 §4, RFC 8201),
    and the gateway learns the path MTU from that (RFC 4301 §8). When that ICMP is not sent or is
    filtered, every big packet is lost and every small one passes: a black hole (RFC 4459 §2).
    Bulk traffic gets answers after big packets too (ACKs), so it is not taken for one."""
    if not f.recent or f.sent < 4:
        return None
    if f.ip_fragmented and ":" not in f.dst:
        # Its sender splits big packets into IPv4 fragments, so it sends them without DF (RFC 791
        # §2.3): a smaller link on the way fragments them again rather than dropping them, and
        # nothing can be a black hole (RFC 1191 §4 concerns DF packets). Such a packet is followed
        # at once by the sender's next one (the tunnel's inner fragments: both halves of a ping),
        # not by an answer; its fragments lost are ESP-FRAGMENT-LOST's.
        return None
    kept = [x for x in f.recent if x is not None]
    if len({x[2] for x in kept}) < 2:  # one size only (most flows): nothing can set big apart from small
        return None
    c = table.child_sas.get(f.child_sa) if f.child_sa is not None else None
    if c is None:
        return None
    mine = sorted(kept, key=lambda x: x[1])
    rev = [r for r in c.flows(table) if (r.src, r.dst) == (f.dst, f.src)]
    back = sorted(x[1] for r in rev for x in (r.recent or ()) if x is not None)
    if len(mine) < 4 or not back:
        return None
    if sum(r.sent for r in rev) > len(back):  # older answers are no longer known: judge from the first kept
        mine = [x for x in mine if x[1] >= back[0]]
    end = table.last_ts or 0.0
    answered: list[int] = []
    big: list[tuple[int, int, float]] = []  # (outer size, frame, time)
    for i, x in enumerate(mine):
        t = x[1]
        nxt = mine[i + 1][1] if i + 1 < len(mine) else None
        k = bisect.bisect_right(back, t)
        got = k < len(back) and (nxt is None or back[k] <= nxt)
        if got:
            answered.append(_outer(f, x[2]))
        elif nxt is not None or end - t >= 1.0:  # the last one: unanswered only if the capture went on
            big.append((_outer(f, x[2]), x[4], t))
    if len(answered) < 2:
        return None
    top = max(answered)
    lost = [(fr, n, t) for n, fr, t in big if n > top]
    if len(lost) < 2:
        return None
    return BlackHole(f, lost, len(answered), top, len(mine))


def black_hole_text(bh: BlackHole) -> str:
    """One sentence naming the sizes: ESP-RETURN-STOPPED says it when its run is the big packets."""
    f = bh.flow
    return (f"The unanswered packets are the big ones: of {f.src}'s last {bh.looked_at} {f.protocol} packets to "
            f"{f.dst}, none of the {plural(len(bh.big), 'packet')} of {bh.sizes()} bytes got an answer, while "
            f"{plural(bh.answered, 'packet')} of up to {bh.answered_max} bytes did, and no ICMP \"fragmentation "
            "needed\"/\"packet too big\" came back: a path MTU black hole (ESP-PATH-MTU).")
