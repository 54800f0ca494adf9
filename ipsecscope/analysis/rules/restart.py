"""Restarted peers, from the capture alone: what IKE-PEER-RESTARTED reports, and what IKE-NO-RESPONSE,
IKE-DEAD-PEER and ESP-RETURN-STOPPED (:mod:`.liveness`) leave to it or cite.

A peer that lost its state (restart, reboot, HA failover) looks like a dead one until it answers a
fresh IKE_SA_INIT at once from the same addresses (RFC 7296 §2.4): :func:`restarts` finds that
pattern, :func:`restart_log` the restarted peer's own log lines that confirm it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...model.iana import NotifyType
from ...model.keys import PeerLogNote
from ...model.plural import plural
from ...model.sa import EspFlow, IkeExchange, IkeSa, SaTable
from .common import note_src, other_peer
from .core import RuleContext


@dataclass(slots=True)
class Restart:
    """A peer that lost its state: ``other`` kept using the old IKE SA and its CHILD SAs, ``peer``
    answered none of it, then answered a fresh IKE_SA_INIT from the same addresses at once."""

    peer: str
    other: str
    old: IkeSa
    new: IkeSa
    last_alive_ts: float | None  # the last thing ``peer`` sent in the old SA (IKE or ESP)
    last_alive_frame: int | None
    unanswered: list[IkeExchange]  # old-SA requests from ``other`` left unanswered (or refused)
    refused: list[IkeExchange]  # ... answered with INVALID_IKE_SPI (RFC 7296 §2.21.4)
    stale: list[EspFlow]  # ESP from ``other`` to ``peer`` on the old CHILD SAs after that
    recovered: IkeExchange  # the new IKE SA's IKE_SA_INIT


_INIT_EXCHANGES = (34, 2, 4)  # IKE_SA_INIT; IKEv1 Main / Aggressive Mode


_AT_ONCE_S = 2.0  # an IKE_SA_INIT answered within this is "at once": the peer is up and reachable


def restarts(table: SaTable) -> list[Restart]:
    """Restarted peers, from the capture alone (see :class:`Restart`).

    Why this is a restart and not a dead peer or a broken path: the same peer, on the same
    addresses, answers a new IKE_SA_INIT at once right after ignoring every request of the old
    IKE SA. A live peer that still held the old SA would have answered those (RFC 7296 §2.4).
    """
    out = []
    sas = sorted(table.ike_sas.values(), key=lambda s: s.created_ts or 0.0)
    for old in sas:
        if old.established_ts is None:
            continue
        for peer in (old.initiator, old.responder):
            other = other_peer(old, peer)
            alive: list[tuple[float, int]] = []
            for x in old.exchanges:
                if x.requester == peer and x.request_ts is not None and x.request_frames:
                    alive.append((x.request_ts, x.request_frames[0]))
                if x.requester == other and x.response_ts is not None and x.response_frames and \
                        x.error != NotifyType.INVALID_IKE_SPI:
                    alive.append((x.response_ts, x.response_frames[0]))
            children = [table.child_sas[i] for i in old.children if i in table.child_sas]
            flows = [f for c in children for f in c.flows(table)]
            alive += [(f.last_ts, f.last_frame) for f in flows if f.src == peer and f.last_ts is not None]
            last_ts, last_frame = max(alive) if alive else (None, None)
            unanswered = [x for x in old.exchanges if x.requester == other and x.request_ts is not None
                          and (last_ts is None or x.request_ts > last_ts)
                          and (not x.response_frames or x.error == NotifyType.INVALID_IKE_SPI)]
            if not unanswered:
                continue
            since = unanswered[0].request_ts or 0.0
            new = next((s for s in sas if s is not old and s.rekeyed_from != old.key
                        and {s.initiator, s.responder} == {peer, other} and (s.created_ts or 0.0) > since), None)
            init = next((x for x in new.exchanges if x.exchange in _INIT_EXCHANGES), None) if new else None
            if new is None or init is None or init.requester != other or not init.response_frames:
                continue
            if init.response_ts is None or init.request_ts is None or init.response_ts - init.request_ts > _AT_ONCE_S:
                continue
            stale = [f for f in flows if f.src == other and f.last_ts is not None
                     and (last_ts is None or f.last_ts > last_ts)]
            refused = [x for x in unanswered if x.error == NotifyType.INVALID_IKE_SPI]
            out.append(Restart(peer, other, old, new, last_ts, last_frame, unanswered, refused, stale, init))
            break
    return out


def restart_log(ctx: RuleContext, r: Restart) -> tuple[str, tuple[PeerLogNote, ...]]:
    """The restarted peer's own log: its "IKE_SA checkout not successful" (or libipsec's
    "does not belong to an installed SA") for the old SA, and the daemon start before them.

    Those lines carry no address; a log that cannot find the old IKE SA by its SPIs while the
    other peer is sending on it is the log of the peer that lost it."""
    unknown = [n for n in ctx.peer_notes if n.kind == "unknown_sa" and n.ike_sa == r.old.key]
    if not unknown:
        return "", ()
    path = unknown[0].source.rpartition(":")[0]
    first_line = min(int(n.source.rpartition(":")[2] or 0) for n in unknown if n.source.startswith(path))
    starts = [n for n in ctx.peer_notes if n.kind == "daemon_start" and n.source.rpartition(":")[0] == path
              and int(n.source.rpartition(":")[2] or 0) < first_line]
    start = starts[-1] if starts else None  # keys.charon records only restarts (a log's 2nd+ start)
    text = f" {r.peer}'s log confirms it:"
    if start is not None:
        text += f" its daemon started again at {start.ts} ({note_src(start)}: \"{start.text}\"), and"
    text += (f" it could not find the old IKE SA {r.old.key} for {plural(len(unknown), 'incoming message')} "
             f"({note_src(unknown[0])}: \"{unknown[0].text}\").")
    return text, ((start,) if start else ()) + tuple(unknown[:4])
