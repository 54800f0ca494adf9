"""ipsecscope plugin: rekey timing.

Rules (codes are stable):

- ``REKEY-SHORT-LIFETIME`` — a CHILD SA (or IKE SA) is rekeyed again and again at short intervals:
  lifetimes configured too short (CPU, traffic hiccups, more chances of collisions).
- ``REKEY-TIMER-COLLISION`` — both peers start rekeying the same SA within a couple of seconds,
  repeatedly: their rekey timers are aligned (same rekey_time, no rand_time jitter), so every
  rekey round risks a collision (RFC 7296 §2.8.1) and produces a redundant SA.
- ``REKEY-NO-JITTER`` — successive rekeys are spaced identically (to a fraction of a second):
  no randomisation (strongSwan rand_time = 0), which synchronises many tunnels.

Installed as its own package; ipsecscope finds it through the ``ipsecscope.plugins`` entry point.
Thresholds: environment ``IPSECSCOPE_REKEY_MIN_INTERVAL`` (seconds, default 300).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ipsecscope.analysis.rules import describe
from ipsecscope.model.sa import Finding, IkeExchange, SaTable, Severity

__version__ = "0.1.0"

COLLIDE_WINDOW = 2.0  # s: requests from both peers this close rekey "at the same time"
JITTER_SPREAD = 0.25  # s: intervals this close to each other mean no random jitter


def _min_interval() -> float:
    try:
        return float(os.environ.get("IPSECSCOPE_REKEY_MIN_INTERVAL", "300"))
    except ValueError:
        return 300.0


def _root(table: SaTable, child_id: int) -> int:
    seen = set()
    c = table.child_sas.get(child_id)
    while c is not None and c.rekeyed_from is not None and c.id not in seen:
        seen.add(c.id)
        nxt = table.child_sas.get(c.rekeyed_from)
        if nxt is None:
            break
        c = nxt
    return c.id if c is not None else child_id


def _rekey_rounds(table: SaTable) -> dict[tuple[str, str], list[list[IkeExchange]]]:
    """Rekey requests per SA chain, clustered into rounds (requests closer than COLLIDE_WINDOW).

    Key: ("child", root CHILD SA id) or ("ike", first IKE SA key) -> rounds in time order.
    """
    chains: dict[tuple[str, str], list[IkeExchange]] = {}
    for sa in table.ike_sas.values():
        root_ike = sa
        seen = set()
        while root_ike.rekeyed_from and root_ike.rekeyed_from in table.ike_sas and root_ike.key not in seen:
            seen.add(root_ike.key)
            root_ike = table.ike_sas[root_ike.rekeyed_from]
        for x in sa.exchanges:
            if x.request_ts is None:
                continue
            if x.rekey_child is not None:
                chains.setdefault(("child", str(_root(table, x.rekey_child))), []).append(x)
            elif x.rekey_ike:
                chains.setdefault(("ike", root_ike.key), []).append(x)
    out: dict[tuple[str, str], list[list[IkeExchange]]] = {}
    for key, xs in chains.items():
        xs.sort(key=lambda x: x.request_ts or 0.0)
        rounds: list[list[IkeExchange]] = []
        for x in xs:
            if rounds and (x.request_ts or 0.0) - (rounds[-1][0].request_ts or 0.0) <= COLLIDE_WINDOW:
                rounds[-1].append(x)
            else:
                rounds.append([x])
        out[key] = rounds
    return out


def _label(table: SaTable, key: tuple[str, str]) -> tuple[str, str, str, str]:
    """(what, sa ref, peer a, peer b)."""
    kind, ref = key
    if kind == "child":
        c = table.child_sas[int(ref)]
        return f"CHILD SA #{c.id} (and its successors)", f"child:{c.id}", c.initiator, c.responder
    sa = table.ike_sas[ref]
    return f"IKE SA {sa.key} (and its successors)", sa.key, sa.initiator, sa.responder


def _start_ts(table: SaTable, key: tuple[str, str]) -> float | None:
    kind, ref = key
    if kind == "child":
        return table.child_sas[int(ref)].created_ts
    sa = table.ike_sas[ref]
    return sa.established_ts or sa.created_ts


@describe("REKEY-SHORT-LIFETIME", Severity.WARNING, ref="RFC 7296 §2.8")
def short_lifetime(table: SaTable, ctx: object) -> Iterable[Finding]:
    """CHILD/IKE SAs rekeyed repeatedly at short intervals (lifetimes configured too short)."""
    import statistics  # here: plugins are imported at every command's start-up (on_event)

    limit = _min_interval()
    for key, rounds in _rekey_rounds(table).items():
        times = [r[0].request_ts for r in rounds if r[0].request_ts is not None]
        start = _start_ts(table, key)
        if start is not None and (not times or times[0] > start):
            times = [start, *times]
        intervals = [b - a for a, b in zip(times, times[1:], strict=False)]
        if len(intervals) < 2:
            continue  # one rekey proves nothing about a timer (it may have been manual)
        every = statistics.median(intervals)
        if every >= limit:
            continue
        what, ref, a, b = _label(table, key)
        frames = tuple(r[0].request_frames[0] for r in rounds[:6] if r[0].request_frames)
        yield Finding(
            code="REKEY-SHORT-LIFETIME", severity=Severity.WARNING,
            title=f"{what.split(' (')[0]} rekeyed every {every:.0f} s — lifetimes too short",
            explanation=f"Between {a} and {b}, {what} was rekeyed {len(rounds)} times, about every {every:.1f} s "
            f"(intervals {', '.join(f'{i:.1f}' for i in intervals[:8])} s). Each rekey is a CREATE_CHILD_SA "
            "exchange (with a DH computation when PFS is on) and a moment where both SAs overlap; at this "
            f"rate it costs CPU and invites collisions. Below {limit:.0f} s is unusual outside tests.",
            frames=frames, sa=ref,
            hint="Raise rekey_time (CHILD SA default 1 h, IKE SA 4 h in strongSwan) or the peer's lifetime "
            "(the shorter of the two peers' lifetimes wins).",
            ts=times[1] if len(times) > 1 else None)


@describe("REKEY-TIMER-COLLISION", (Severity.INFO, Severity.WARNING), ref="RFC 7296 §2.8.1")
def timer_collision(table: SaTable, ctx: object) -> Iterable[Finding]:
    """Both peers start rekeying the same SA together, round after round (aligned timers)."""
    for key, rounds in _rekey_rounds(table).items():
        both = [r for r in rounds if len({x.requester for x in r}) >= 2]
        if not both:
            continue
        what, ref, a, b = _label(table, key)
        gaps = [abs((r[1].request_ts or 0.0) - (r[0].request_ts or 0.0)) for r in both]
        frames = tuple(f for r in both[:4] for x in r[:2] for f in x.request_frames[:1])
        sev = Severity.WARNING if len(both) >= 2 else Severity.INFO
        yield Finding(
            code="REKEY-TIMER-COLLISION", severity=sev,
            title=f"Peers' rekey timers collide: {a} and {b} both rekeyed {what.split(' (')[0]} in "
            f"{len(both)} of {len(rounds)} round(s)",
            explanation=f"In {len(both)} rekey round(s) of {what}, both {a} and {b} sent a CREATE_CHILD_SA rekey "
            f"request within {max(gaps):.2f} s of each other. Their rekey timers expire together (same "
            "rekey_time, no random jitter), so each round rekeys twice; one of the new SAs is redundant "
            "and gets deleted (RFC 7296 §2.8.1), and traffic may briefly use an SA about to disappear.",
            frames=frames, sa=ref,
            hint="Give one peer a clearly shorter rekey_time than the other (the responder's timer then never "
            "fires first), and keep rand_time > 0 on both.",
            ts=both[0][0].request_ts)


@describe("REKEY-NO-JITTER", Severity.INFO, ref="RFC 7296 §2.8")
def no_jitter(table: SaTable, ctx: object) -> Iterable[Finding]:
    """Rekeys spaced identically: no random jitter (strongSwan rand_time = 0)."""
    import statistics  # here: plugins are imported at every command's start-up (on_event)

    for key, rounds in _rekey_rounds(table).items():
        per_peer: dict[str, list[float]] = {}
        for r in rounds:
            for x in r:
                per_peer.setdefault(x.requester, []).append(x.request_ts or 0.0)
        for peer, ts in per_peer.items():
            iv = [b - a for a, b in zip(ts, ts[1:], strict=False)]
            if len(iv) < 2 or max(iv) - min(iv) > JITTER_SPREAD:
                continue
            what, ref, a, b = _label(table, key)
            yield Finding(
                code="REKEY-NO-JITTER", severity=Severity.INFO,
                title=f"{peer} rekeys {what.split(' (')[0]} on a fixed {statistics.mean(iv):.1f} s timer (no jitter)",
                explanation=f"{peer}'s rekey requests for {what} (peers {a} and {b}) are spaced "
                f"{', '.join(f'{i:.2f}' for i in iv[:6])} s apart: no random jitter. With many tunnels "
                "configured alike, all rekey in the same instant.",
                frames=(), sa=ref, hint="Set rand_time (strongSwan default: 10% of rekey_time) so rekeys spread out.",
                ts=ts[0])


class RekeyTimingPlugin:
    """The plugin object: plain hooks, no state."""

    name = "rekeytiming"
    description = "rekey timing checks: short lifetimes, colliding rekey timers, missing jitter"

    def rules(self) -> list:
        return [short_lifetime, timer_collision, no_jitter]

    def vendor_ids(self) -> dict[bytes, str]:
        return {}


plugin = RekeyTimingPlugin()
