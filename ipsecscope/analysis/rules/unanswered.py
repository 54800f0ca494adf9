"""Unanswered IKE requests, the evidence behind IKE-NO-RESPONSE and IKE-DEAD-PEER (rule
``r_unanswered`` in :mod:`.liveness`): IKEv1 dead peer detection left unacknowledged (RFC 3706),
which exchanges set an SA up, how long a peer took to answer, and a request sent once and never
retransmitted (RFC 7296 §2.1, §2.4).
"""

from __future__ import annotations

import bisect

from ...model.iana import Ikev1Exchange
from ...model.plural import plural
from ...model.sa import Finding, IkeExchange, IkeSa, SaState, SaTable, Severity
from .common import dur, frames_of, other_peer


def v1_dpd_dead(sa: IkeSa, end: float | None) -> Finding | None:
    """IKEv1 dead peer detection (RFC 3706): each R-U-THERE is a one-way Informational with a new
    message ID, answered by a separate R-U-THERE-ACK (the tracker files it as the response). The
    trailing run of one side's unanswered R-U-THEREs, with nothing from the peer since, is a dead
    peer once it is more than one try or has waited 5 s (one unanswered probe at the very end of
    a capture is not evidence)."""
    if sa.state not in (SaState.ESTABLISHED, SaState.REKEYED):
        return None
    asks = [y for y in sa.exchanges if y.dpd_seq is not None and y.request_frames]
    if not asks:
        return None
    req = asks[-1].requester
    run: list[IkeExchange] = []
    for y in reversed(asks):
        if y.requester != req:
            continue
        if y.response_frames:
            break
        run.append(y)
    run.reverse()
    if not run:
        return None
    first = run[0]
    peer = other_peer(sa, req)
    later = any(y.requester == peer and (y.request_ts or 0) > (first.request_ts or 0) for y in sa.exchanges)
    waited = (end - first.request_ts) if end is not None and first.request_ts is not None else 0.0
    if later or (len(run) < 2 and waited < 5):
        return None
    tries = sum(1 + y.retransmits for y in run)
    seqs = list(dict.fromkeys(str(y.dpd_seq) for y in run if y.dpd_seq is not None and y.dpd_seq >= 0))
    return Finding(
        code="IKE-DEAD-PEER", severity=Severity.ERROR,
        title=f"Dead peer: {peer} stopped answering {req}'s DPD (R-U-THERE sent {tries}×, no R-U-THERE-ACK)",
        explanation=f"After the ISAKMP SA was up, {req} probed {peer} with IKEv1 dead peer detection (RFC 3706): "
        f"{plural(tries, 'R-U-THERE notification')} over {dur(waited)} (DPD sequence number{'s' if len(seqs) > 1 else ''} "
        f"{', '.join(seqs) or 'not given'}), and {peer} acknowledged none of them. Either {peer} is down/rebooted, or the path between "
        "them drops IKE now.",
        frames=frames_of([f for y in run for f in y.request_frames][:6]), sa=sa.key,
        hint=f"Check that {peer} is running and reachable (UDP {first.responder_port or 500}); "
        "dpd_delay/dpd_timeout decide how fast the peer is declared dead.", ts=first.request_ts)


def initial_exchange(sa: IkeSa, x: IkeExchange) -> bool:
    """An exchange that sets the SA up (IKEv2 IKE_SA_INIT; IKEv1 phase 1, Main or Aggressive Mode,
    RFC 2409 §5): unanswered, the SA never came up, whatever state was guessed for it (a capture
    that starts mid-exchange sees both cookies set): not a peer that died after it was up."""
    return x.exchange == 34 if sa.version == 2 else x.exchange in (Ikev1Exchange.MAIN_MODE, Ikev1Exchange.AGGRESSIVE)


def slowest_answer(sa: IkeSa) -> float:
    """The longest any request of ``sa`` waited for its response (RFC 7296 §2.1: the requester
    waits, then retransmits): a request sent less than that before the capture ended may simply not
    have been answered yet. 0 when nothing was answered."""
    return max((x.response_ts - x.request_ts for x in sa.exchanges
                if x.request_ts is not None and x.response_ts is not None), default=0.0)


def ike_by_pair(table: SaTable) -> dict[frozenset[str], tuple[list[float], list[IkeSa]]]:
    """IKE SAs by peer pair in order of creation (their times beside them, for bisect), built once
    per evaluation: :func:`sent_once` scanned every IKE SA for each request sent once, quadratic
    in IKE SAs (an ISAKMP reflection capture, 3,979 such requests: 5.8 s)."""
    pairs: dict[frozenset[str], list[IkeSa]] = {}
    for o in table.ike_sas.values():
        if o.created_ts is not None:
            pairs.setdefault(frozenset((o.initiator, o.responder)), []).append(o)
    out: dict[frozenset[str], tuple[list[float], list[IkeSa]]] = {}
    for k, sas in pairs.items():
        sas.sort(key=lambda o: o.created_ts or 0.0)
        out[k] = ([o.created_ts or 0.0 for o in sas], sas)
    return out


def sent_once(pairs: dict[frozenset[str], tuple[list[float], list[IkeSa]]], sa: IkeSa, x: IkeExchange, req: str,
               peer: str, exn: str, waited: float) -> Finding:
    """An unanswered request seen once, never retransmitted, although the capture runs on past the
    point where an answer would have come (:func:`slowest_answer`). A requester retransmits until
    answered or it gives up (RFC 7296 §2.1) and concludes that the peer is dead only after repeated
    attempts (§2.4): one copy and silence after it means the requester let the exchange go (it
    deleted the SA, or started over) or the capture lost its later packets and the answer. Neither
    shows the peer down or the path blocked, so this is information, not a dead peer (nDPI's
    stitched NAT-T capture: each session ends with the gateway's INFORMATIONAL, seen once)."""
    times, sas = pairs.get(frozenset((req, peer)), ((), ()))
    nxt = None
    if x.request_ts is not None:  # the first IKE SA between the two created after the request
        i = bisect.bisect_right(times, x.request_ts)
        while i < len(sas) and sas[i] is sa:
            i += 1
        nxt = sas[i] if i < len(sas) else None
    moved = (f" {nxt.initiator} started a new IKE SA with {other_peer(nxt, nxt.initiator)} "
             f"{dur((nxt.created_ts or 0.0) - (x.request_ts or 0.0))} later (frame {nxt.frames[0]})."
             if nxt is not None and nxt.frames else "")
    return Finding(
        code="IKE-NO-RESPONSE", severity=Severity.INFO,
        title=f"{peer} did not answer {req}'s {exn} request, sent once and never retransmitted",
        explanation=f"{req} sent {exn} (message ID {x.msg_id}) to {peer} once; the capture runs {dur(waited)} past it "
        f"with no response and no retransmission.{moved} A requester retransmits until it is answered or gives "
        "up, and declares its peer dead only after repeated attempts (RFC 7296 §2.1, §2.4): so "
        f"{req} let this exchange go (it deleted the SA or started over), or the capture missed its later packets "
        f"and the answer. This does not show {peer} down or the path blocked.",
        frames=frames_of(x.request_frames[:1]), sa=sa.key,
        hint="If the capture was cut or stitched from several, look at the original around this time; a "
        f"request that really goes unanswered is retransmitted (several copies from {req}).",
        ts=x.request_ts)
