"""Liveness and path rules: unanswered IKE, dead peers, one-way ESP, stale SPIs."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from ...model.iana import Ikev1Exchange, NotifyType
from ...model.idtext import spi_text
from ...model.keys import PeerLogNote
from ...model.plural import noun, plural, verb, with_article
from ...model.sa import (
    ChildSa,
    EspFlow,
    Finding,
    IkeExchange,
    IkeSa,
    Observation,
    SaState,
    SaTable,
    Severity,
    is_multicast,
)
from . import resent
from .common import (
    child_ike,
    child_label,
    clock,
    dur,
    esp_silence_cause,
    exchange_label,
    flow_ref,
    frames_of,
    icmp_errors,
    icmp_ike_refusal,
    icmp_refusal,
    note_src,
    other_peer,
    quoted_flow,
    refusal_first,
)
from .core import RuleContext, rule
from .nat_mtu import black_hole, black_hole_text
from .one_way import OneWay, group_plain, group_siblings


def _v1_dpd_dead(sa: IkeSa, end: float | None) -> Finding | None:
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


def _initial(sa, x) -> bool:
    """An exchange that sets the SA up (IKEv2 IKE_SA_INIT; IKEv1 phase 1, Main or Aggressive Mode,
    RFC 2409 §5): unanswered, the SA never came up, whatever state was guessed for it (a capture
    that starts mid-exchange sees both cookies set): not a peer that died after it was up."""
    return x.exchange == 34 if sa.version == 2 else x.exchange in (Ikev1Exchange.MAIN_MODE, Ikev1Exchange.AGGRESSIVE)


def _slowest_answer(sa) -> float:
    """The longest any request of ``sa`` waited for its response (RFC 7296 §2.1: the requester
    waits, then retransmits): a request sent less than that before the capture ended may simply not
    have been answered yet. 0 when nothing was answered."""
    return max((x.response_ts - x.request_ts for x in sa.exchanges
                if x.request_ts is not None and x.response_ts is not None), default=0.0)


def _ike_by_pair(table: SaTable) -> dict[frozenset[str], tuple[list[float], list[IkeSa]]]:
    """IKE SAs by peer pair in order of creation (their times beside them, for bisect), built once
    per evaluation: :func:`_sent_once` scanned every IKE SA for each request sent once, quadratic
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


def _sent_once(pairs: dict[frozenset[str], tuple[list[float], list[IkeSa]]], sa: IkeSa, x: IkeExchange, req: str,
               peer: str, exn: str, waited: float) -> Finding:
    """An unanswered request seen once, never retransmitted, although the capture runs on past the
    point where an answer would have come (:func:`_slowest_answer`). A requester retransmits until
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


@rule(6, ("IKE-NO-RESPONSE", "IKE-DEAD-PEER", "IKE-UDP4500-BLOCKED"), (Severity.INFO, Severity.WARNING, Severity.ERROR), ref="RFC 7296 §2.1, §2.4; RFC 3706")
def r_unanswered(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Unanswered IKE requests: peer unreachable, dead peer (IKEv1: DPD R-U-THEREs never acknowledged), or UDP 4500 blocked after NAT-T."""
    end = table.last_ts
    # A peer that answered a fresh IKE_SA_INIT right after is not dead: IKE-PEER-RESTARTED
    # explains those unanswered requests.
    restarted = {r.old.key for r in restarts(table)}
    pairs: dict[frozenset[str], list[IkeSa]] | None = None  # built at the first request sent once
    for sa in table.ike_sas.values():
        if not sa.exchanges or sa.key in restarted:
            continue
        dpd = _v1_dpd_dead(sa, end) if sa.version == 1 else None
        if dpd is not None:
            yield dpd
        for i, x in enumerate(sa.exchanges):
            if x.response_frames or not x.request_frames:
                continue
            if sa.version == 1 and x.exchange in (Ikev1Exchange.INFORMATIONAL, Ikev1Exchange.TRANSACTION) and not x.retransmits:
                continue  # IKEv1 notifications are one-way (RFC 2408 §4.8); DPD is paired above
            last = i == len(sa.exchanges) - 1 or all(not y.response_frames for y in sa.exchanges[i + 1:])
            if not last:
                continue
            req = x.requester
            peer = other_peer(sa, req)
            waited = (end - x.request_ts) if end is not None and x.request_ts is not None else 0.0
            tries = 1 + x.retransmits
            if tries == 1 and waited <= _slowest_answer(sa):
                continue  # the capture ends before this peer answered anything this late: no evidence
            refused, icmp_frames = icmp_ike_refusal(table, sa, req)
            frames = frames_of(x.request_frames[:6], icmp_frames)
            exn = exchange_label(x, sa.version)
            if tries == 1 and not refused:
                if pairs is None:
                    pairs = _ike_by_pair(table)
                yield _sent_once(pairs, sa, x, req, peer, exn, waited)
                continue
            init_answered = any(y.exchange == 34 and y.response_frames for y in sa.exchanges)
            if (x.exchange == 35 and init_answered and x.responder_port == 4500
                    and all(y.responder_port != 4500 for y in sa.exchanges if y.response_frames)):
                if x.ip_fragmented:
                    # Every copy went as IP fragments: dropped fragments explain the silence as well
                    # as a blocked port, and IKE-IP-FRAGMENTED reports this exchange (RFC 7383).
                    continue
                yield Finding(
                    code="IKE-UDP4500-BLOCKED", severity=Severity.ERROR,
                    title=f"UDP 4500 to {peer} looks blocked: IKE_SA_INIT answered on 500, IKE_AUTH on 4500 never",
                    explanation=f"{req} and {peer} completed IKE_SA_INIT on UDP 500 and moved to UDP 4500 (NAT "
                    f"traversal, RFC 7296 §2.23), but {peer} never answered the IKE_AUTH request sent "
                    f"{plural(tries, 'time')} over {dur(waited)}." + (refused or " A firewall or NAT between them drops UDP 4500."),
                    frames=frames, sa=sa.key,
                    hint=(f"On {peer}: check that its IKE daemon listens on UDP 4500 (ss -ulnp) and that no "
                          "firewall rule rejects it (nft list ruleset / iptables -S)." if refused else
                          "Allow UDP 4500 in both directions between the peers (and ESP-in-UDP after it)."),
                    ts=x.request_ts)
            elif sa.state in (SaState.ESTABLISHED, SaState.REKEYED) and not _initial(sa, x):
                yield Finding(
                    code="IKE-DEAD-PEER", severity=Severity.ERROR,
                    title=f"Dead peer: {peer} stopped answering {req} ({exn} sent {tries}×, no reply)",
                    explanation=f"After the IKE SA was up, {req} sent {with_article(exn)} request (message ID {x.msg_id}) "
                    f"{plural(tries, 'time')} over {dur(waited)} and {peer} never answered."
                    + (refused or f" Either {peer} is down/rebooted, or the path between them drops IKE now."),
                    frames=frames, sa=sa.key,
                    hint=f"Check that {peer} is running and reachable (UDP {x.responder_port or 500}); "
                    "dpd_delay/dpd_timeout decide how fast the peer is declared dead.", ts=x.request_ts)
            else:
                sev = Severity.ERROR if tries > 1 or waited > 5 else Severity.WARNING
                yield Finding(
                    code="IKE-NO-RESPONSE", severity=sev,
                    title=f"{peer} never answered {req}'s {exn} request ({tries}×)",
                    explanation=f"{req} sent {exn} (message ID {x.msg_id}) to {peer} {plural(tries, 'time')} over "
                    f"{dur(waited)} and got no response in this capture"
                    + (f".{refused}" if refused else f": {peer} is unreachable, not running IKE, or a firewall "
                       "drops UDP 500/4500."),
                    frames=frames, sa=sa.key,
                    hint=f"Check reachability of {peer} on UDP {x.responder_port or 500} and that its IKE daemon "
                    "listens; if the capture was taken on the responder, check that the request arrives.",
                    ts=x.request_ts)


@rule(7, "IKE-RETRANSMIT", (Severity.INFO, Severity.WARNING), ref="RFC 7296 §2.1")
def r_retransmits(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Requests that needed retransmission before being answered (loss or a slow peer), or that
    were sent again although the capture holds an answer before the copy: an answer that never
    reached the requester, or one it dropped because it is malformed."""
    # Per IKE SA, like IKE-NO-RESPONSE and IKE-DEAD-PEER: the retries, waits and message IDs in
    # their text are that SA's; equal ones merge from 5 SAs on (analysis.rules.aggregate).
    for sa in table.ike_sas.values():
        xs = [x for x in sa.exchanges if x.retransmits and x.response_frames]
        if not xs or sa.state == SaState.FAILED:  # retransmissions of a refused exchange say nothing more
            continue
        total = sum(x.retransmits for x in xs)
        # RFC 7296 §2.1: the requester sends again only while it has no answer it can use. An
        # answer captured before the copy was therefore not taken: a malformed one is dropped
        # (the responder's fault), any other did not get back past the capture point.
        early = [x for x in xs if resent.early(x) is not None]
        # Copies after the exchange's last response were never answered: an IKEv1 exchange holds
        # several requests (MM1, MM3, MM5), and earlier answers say nothing of the one resent.
        never = [x for x in xs if x not in early and resent.unanswered(x)]
        late = [x for x in xs if x not in early and x not in never]
        bad = [x for x in early if x.malformed_responses]
        first = bad or early or never or late
        x = first[0]
        asker = x.requester
        peer = sa.responder if asker == sa.initiator else sa.initiator
        labels = ", ".join(exchange_label(y, sa.version) + " #" + str(y.msg_id) for y in first[:4])
        if bad:
            why = _malformed_reason(table, x.malformed_responses[0])
            every = all(len(y.malformed_responses) == len(y.response_frames) for y in bad)
            explanation = (
                f"{peer} answered {labels} (frame {x.response_frames[0]}) before {asker} sent it again (frame "
                f"{x.first_copy_frame}), but the answer is malformed{f' ({why})' if why else ''}: a peer drops a "
                "message it cannot parse, and the requester sends the request again until a response it can use "
                f"arrives (RFC 7296 §2.1). Nothing was lost: {peer} builds a broken message"
                + (", every time" if every and len(x.response_frames) > 1 else "") + ".")
            hint = (f"Fix or update the IKE implementation on {peer} (compare the answer with tshark: frame "
                    f"{x.response_frames[0]}); the path is fine.")
        elif early:
            _, answer, copy, gap = resent.early(x) or (0, 0, 0, None)
            explanation = (
                f"{peer} answered {labels} (frame {answer}) before {asker} sent it again (frame {copy}"
                + (f", {dur(gap)} later" if gap is not None else "") + f"): the answer did not reach {asker}, or "
                f"{asker} did not accept it. The capture point sees the answer, so it was lost between here and "
                f"{asker} (the capture is nearer {peer})"
                + (f", or it was still on its way when {asker}'s retransmission timer fired."
                   if gap is not None and gap < 1.0 else "."))
            hint = (f"Follow the answers back towards {asker}: a firewall or NAT on that side dropping UDP "
                    f"{x.responder_port or 500} from {peer}, or IP fragments of a large answer.")
        elif never:
            copies = resent.unanswered(x)
            orig = resent.original(x, copies[0])
            earlier = [f for f in x.response_frames if orig is None or f < orig]
            explanation = (
                f"{asker} sent " + (f"frame {orig} ({labels})" if orig is not None else f"{with_article(labels)} request")
                + f" again {plural(len(copies), 'time')} (frame{'s' if len(copies) > 1 else ''} "
                f"{', '.join(map(str, copies[:6]))}{', …' if len(copies) > 6 else ''}) and {peer} never answered "
                "it in this capture"
                + (f" ({peer} had answered the exchange's earlier message{'s' if len(earlier) > 1 else ''}: frame"
                   f"{'s' if len(earlier) > 1 else ''} {', '.join(map(str, earlier[:4]))})" if earlier else "")
                + f": the request did not reach {peer}, {peer} could not process it, or its answers were lost.")
            if len(never) > 1:
                explanation += (f" {plural(len(never) - 1, 'other exchange')} {verb(len(never) - 1, 'was')} never "
                                "answered after being sent again either.")
            hint = (f"Capture next to {peer} to see whether the request arrives; big messages (certificates) are "
                    "the usual victims of a path dropping IP fragments or large UDP datagrams.")
        else:
            explanation = (
                f"{plural(len(xs), 'exchange')} {verb(len(xs), 'was')} answered only after the request was sent "
                f"again ({labels}; {plural(total, 'retransmission')}): packets were lost or the peer was slow to "
                "answer.")
            hint = ("Look for loss or MTU problems on the path (large IKE_AUTH messages with certificates are "
                    "the usual victims).")
        if (bad or early) and never:
            explanation += (f" {plural(len(never), 'other exchange')} {verb(len(never), 'was')} never answered after "
                            "being sent again.")
        if (bad or early or never) and late:
            explanation += (f" {plural(len(late), 'other exchange')} {verb(len(late), 'was')} answered only after "
                            "the request was sent again.")
        warn = total >= 3 or bool(never) or any(len(y.malformed_responses) == len(y.response_frames) for y in bad)
        yield Finding(
            code="IKE-RETRANSMIT", severity=Severity.WARNING if warn else Severity.INFO,
            title=f"{plural(total, 'IKE retransmission')} between {sa.initiator} and {sa.responder}"
            + (f": {peer}'s answers are malformed" if bad else (f": {peer}'s answers do not reach {asker}"
                                                               if early else (f": {peer} never answered" if never
                                                                              else ""))),
            explanation=explanation,
            frames=frames_of(*((resent.early(y) or ())[:3] if y in early
                               else resent.unanswered_frames(y) if y in never
                               else y.request_frames[:3] for y in first[:3])),
            sa=sa.key, hint=hint, ts=x.request_ts)


def _malformed_reason(table: SaTable, frame: int) -> str:
    """What the decoder found wrong with ``frame`` (its malformed observation; the tracker keeps
    the first 20), "" when not kept."""
    for ob in table.observations:
        if ob.kind == "malformed" and frame in ob.frames:
            return str(ob.detail.get("reason", "")).removeprefix("IKE: ")
    return ""


@rule(12, "IKE-INVALID-SPI", Severity.WARNING, ref="RFC 7296 §1.5")
def r_invalid_spi(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """INVALID_SPI notifications: a peer received ESP for an SA it does not know."""
    for ob in table.observations:
        if ob.kind != "invalid_spi_notify":
            continue
        spi = ob.detail.get("spi")
        spi_s = spi_text(spi) if isinstance(spi, int) else "?"
        yield Finding(
            code="IKE-INVALID-SPI", severity=Severity.WARNING,
            title=f"{ob.src} reports INVALID_SPI {spi_s} to {ob.dst}",
            explanation=f"{ob.src} received ESP with SPI {spi_s} from {ob.dst} and has no such SA (RFC 7296 §1.5): the "
            "peers disagree about which SAs exist (one side deleted or never installed it).",
            frames=ob.frames, sa=str(ob.detail.get("ike_sa")) if ob.detail.get("ike_sa") else None,
            hint=f"Check {ob.dst}'s SA list (swanctl --list-sas) for a stale SA; restarting the tunnel resyncs both.",
            ts=ob.ts)


@rule(20, ("ESP-UNKNOWN-SPI", "ESP-AFTER-DELETE"), Severity.WARNING, ref="RFC 4301 §4.1; RFC 7296 §1.4.1")
def r_esp_spi(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """ESP on an SPI no visible negotiation created, or on an SA already deleted."""
    for f in table.flows.values():
        c = table.child_sas.get(f.child_sa) if f.child_sa is not None else None
        if c is not None and c.state == SaState.INFERRED:
            ike = child_ike(table, c)
            if ike is not None and ike.decrypted and ike.created_ts is not None and f.first_ts is not None \
                    and f.first_ts > ike.created_ts and not ike.state_inferred:
                refused, _hint, icmp_frames = icmp_refusal(table, f)
                yield Finding(
                    code="ESP-UNKNOWN-SPI", severity=Severity.WARNING,
                    title=f"ESP {f.src} -> {f.dst} on SPI {spi_text(f.spi)} that no IKE exchange created",
                    explanation=f"The IKE SA between {ike.initiator} and {ike.responder} was readable, yet none of its "
                    f"exchanges negotiated SPI {spi_text(f.spi)}; {plural(f.sent, 'packet')} used it. The receiver will "
                    "drop them (and may answer INVALID_SPI)." + refused,
                    frames=frames_of((f.first_frame, f.last_frame), icmp_frames),
                    sa=flow_ref(f),
                    hint=f"A stale SA on {f.src} (e.g. after {f.dst} restarted): reset the tunnel on {f.src}.",
                    ts=f.first_ts)
        if f.after_delete and c is not None and c.deleted_ts is not None:
            late = (f.last_ts or 0) - c.deleted_ts
            if f.after_delete <= 2 and late <= ctx.after_delete_grace_s:
                continue  # in-flight packets
            yield Finding(
                code="ESP-AFTER-DELETE", severity=Severity.WARNING,
                title=f"{plural(f.after_delete, 'ESP packet')} {f.src} -> {f.dst} on SPI {spi_text(f.spi)} after it was deleted",
                explanation=f"CHILD SA #{c.id} was deleted by {c.deleted_by} at {clock(c.deleted_ts)}, but {f.src} kept sending "
                f"on SPI {spi_text(f.spi)} for {dur(max(late, 0.0))}. The receiver drops these packets.",
                frames=tuple(f.after_delete_frames), sa=flow_ref(f),
                hint=f"{f.src} did not remove the outbound SA: check its kernel SAs (ip xfrm state) and its log "
                "for the Delete.", ts=c.deleted_ts)


@rule(21, "ESP-ONE-WAY", Severity.WARNING, ref="RFC 4303 §3.4")
def r_one_way(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """One-way ESP: traffic in one direction of a CHILD SA, nothing back."""
    paths: dict[tuple[str, str, str], list[EspFlow]] | None = None  # built at the first one-way SA
    grouped: set[int] = set()
    plain: list[OneWay] = []
    siblings: list[tuple[OneWay, tuple[EspFlow, str]]] = []  # and the SA the silent peer sends on
    for group in _undecided_pairs(table):
        found = _one_way_group(table, group)
        if found is not False:
            grouped.update(c.id for c in group)
            if found is not None:
                yield found
    for c in table.child_sas.values():
        if c.id in grouped:
            continue
        flows = c.flows(table)
        if not flows:
            continue
        # (protocol, SPI) each way: an IKEv1 AH+ESP bundle has one SA per protocol each way
        i2r = {(p, r) for p, _i, r in c.spi_pairs()}
        r2i = {(p, i) for p, i, _r in c.spi_pairs() if i is not None}
        fwd = [f for f in flows if (f.protocol, f.spi) in i2r]
        rev = [f for f in flows if (f.protocol, f.spi) in r2i]
        if fwd and rev:
            continue
        one = [f for f in fwd or rev if f.spi != 0]  # SPI 0 belongs to no SA: ESP-RESERVED-SPI
        pk = sum(f.sent for f in one)  # packets sent: a capture's copies are no more traffic one way
        if pk < 3:
            continue
        f = one[0]
        if is_multicast(f.dst):  # a group address answers nobody: a multicast SA is one-way (RFC 4301 §4.1)
            continue
        # A rekeyed SA's return traffic may already be on the new SPIs: not one-way.
        if c.rekeyed_into is not None or c.rekeyed_from is not None:
            continue
        why, why_hint, ike_frames = esp_silence_cause(table, c, f, f.dst, f.first_ts)
        # ICMP errors quoting these packets: the peer or a router says it cannot deliver them.
        refused, icmp_hint, icmp_frames = icmp_refusal(table, f)
        alive = bool(why)
        why, why_hint = refusal_first(why, why_hint, ike_frames, refused, icmp_hint, f.dst, f.udp_encap)
        if paths is None:
            paths = _flows_by_path(table)
        sib = _sibling_return(table, c, one, paths)
        if sib == ():
            continue  # the reverse runs on the same SPI: one manually keyed SA used both ways
        if sib is not None and not refused:
            why, why_hint, ike_frames = why + sib[0], sib[1], (*ike_frames, *sib[2])
        found = Finding(
            code="ESP-ONE-WAY", severity=Severity.WARNING,
            title=f"One-way {f.protocol}: {f.src} -> {f.dst} ({plural(pk, 'packet')}), nothing back"
            + (f" on this SA; {f.dst} sends on another" if sib is not None and not refused else "")
            + (f" while {f.dst} still answers IKE" if alive else "")
            + (", refused with ICMP" if refused else ""),
            explanation=f"{child_label(c)} carries {plural(pk, f.protocol + ' packet')} from {f.src} to {f.dst} on SPI {spi_text(f.spi)} but "
            + (f"none in the other direction.{why}" if why else
               f"none in the other direction. {f.dst} either does not receive them intact (filtered, lost or altered on "
               "the way: a packet whose ICV fails is dropped without a word, RFC 4303 §3.4.4), cannot "
               f"{'authenticate' if f.protocol == 'AH' else 'decrypt'} them (key or SA missing), has no "
               "route/policy for the replies, or the capture sees only one direction."),
            frames=frames_of((f.first_frame, f.last_frame), icmp_frames, ike_frames), sa=flow_ref(f),
            hint=why_hint or f"Check on {f.dst}: SA and policy installed (ip xfrm state/policy), "
            f"{'AH (IP protocol 51)' if f.protocol == 'AH' else 'ESP (or UDP 4500)'} "
            "allowed in, and a route back to the sender's subnet.", ts=f.first_ts)
        if sib is not None and not refused and not alive:
            siblings.append((OneWay(found, f, c, pk), sib[3]))
        elif why or refused or sib is not None:
            yield found  # evidence of its own (ICMP, the peer's IKE): about this SA and its peer alone
        else:
            plain.append(OneWay(found, f, c, pk))
    # Silence alone, on several SAs from one sender (or to one receiver): one finding for that end;
    # several SAs of one pair answered on the same other SA: one finding for the pair
    # (aggregate_min 0 keeps one finding per SA, as for every other rule).
    if ctx.aggregate_min:
        yield from group_plain(table, plain)
        yield from group_siblings(siblings)
    else:
        yield from (o.finding for o in plain)
        yield from (o.finding for o, _ in siblings)


def _undecided_pairs(table: SaTable) -> list[list[ChildSa]]:
    """INFERRED CHILD SAs left unpaired because more than one opposite flow fit (their
    ``pair_candidates``, state/traffic.infer), grouped with the SAs those flows are on: within a
    group which flow is whose pair is not known, so no one of them is one-way by itself."""
    spis = {(f.src, f.dst, f.spi, f.protocol): f.child_sa for f in table.flows.values()
            if f.child_sa is not None} if any(c.pair_candidates for c in table.child_sas.values()) else {}
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.setdefault(i, i) != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for c in table.child_sas.values():
        if not c.pair_candidates or c.state != SaState.INFERRED or c.spi_i is not None:
            continue
        root(c.id)
        for spi in c.pair_candidates:
            other = spis.get((c.responder, c.initiator, spi, c.protocol))
            if other is not None:
                parent[root(other)] = root(c.id)
    groups: dict[int, list[ChildSa]] = {}
    for i in parent:
        c = table.child_sas.get(i)
        if c is not None:
            groups.setdefault(root(i), []).append(c)
    return [g for g in groups.values() if len(g) > 1]


def _one_way_group(table: SaTable, group: list[ChildSa]) -> Finding | None | bool:
    """One finding for a group of :func:`_undecided_pairs`: when one peer sends on more of them
    than the other, that many of its SAs have nothing back, but which ones is not known (nothing
    on the wire links two SPIs without the IKE exchange, RFC 4301 §4.1). None when both sides send
    on as many SAs (each may have its pair), False when ICMP errors refuse some of their packets
    (then each SA is judged by itself, refusal first)."""
    by_src: dict[str, list[EspFlow]] = {}
    for c in group:
        for f in c.flows(table):
            by_src.setdefault(f.src, []).append(f)
    if len(by_src) != 2 or any(icmp_refusal(table, f)[0] for fs in by_src.values() for f in fs):
        return False
    (a, fa), (b, fb) = sorted(by_src.items(), key=lambda kv: -len(kv[1]))
    if len(fa) == len(fb) or sum(f.sent for f in fa) < 3 or is_multicast(b):
        return None
    fa.sort(key=lambda f: f.first_frame)
    fb.sort(key=lambda f: f.first_frame)
    n = len(fa) - len(fb)

    def listing(fs: list[EspFlow]) -> str:
        return ", ".join(f"{spi_text(f.spi)} ({plural(f.sent, 'packet')})" for f in fs)

    f = fa[0]
    return Finding(
        code="ESP-ONE-WAY", severity=Severity.WARNING,
        title=f"One-way {f.protocol}: {n} of {a}'s {len(fa)} SAs to {b} {verb(n, 'has')} nothing back; "
        f"{b} sends on {len(fb)}",
        explanation=f"{a} sends {f.protocol} to {b} on {len(fa)} SAs, {listing(fa)}, and {b} to {a} on {len(fb)}, "
        f"{listing(fb)}, all started together and active at once. Without the IKE exchanges that made them "
        "nothing links the two SPIs of a CHILD SA (RFC 4301 §4.1), and here more than one pairing fits: "
        f"{n} of {a}'s SAs {verb(n, 'has')} no return SA in use, which {noun(n, 'one')} "
        f"is not known. {b} is up and receives, and the path carries its {f.protocol}. If the CHILD SAs carry "
        f"the same traffic (negotiated at once: crossing Quick Modes, or a collision, RFC 7296 §2.8), {b} "
        "answers all of it on its SAs and nothing is lost; if they carry different traffic selectors, the "
        "return traffic of one is missing.",
        frames=tuple(x.first_frame for x in fa + fb), sa=flow_ref(f),
        hint="Give -k (IKE keys) to see which SPIs each exchange negotiated and their traffic selectors: the "
        f"same selectors mean duplicate SAs (harmless; both sides usually delete one); different ones mean {b} "
        "has no outbound SA or policy for one's traffic.", ts=f.first_ts)


def _flows_by_path(table: SaTable) -> dict[tuple[str, str, str], list[EspFlow]]:
    """Flows by (source, destination, protocol), built once per evaluation: a scan of every flow
    for each one-way SA made the rule quadratic in SAs (10,000 one-way SAs: 440 us a packet)."""
    paths: dict[tuple[str, str, str], list[EspFlow]] = {}
    for r in table.flows.values():
        paths.setdefault((r.src, r.dst, r.protocol), []).append(r)
    return paths


def _sibling_return(table: SaTable, c, one: list[EspFlow],
                    paths: dict[tuple[str, str, str], list[EspFlow]]) -> tuple | None:
    """(explanation, hint, frames, (its flow, its SA's name)) when the silent peer does send ESP to
    the sender while this one-way SA is in use, on another CHILD SA's SPI: it is up, receives, and
    its path carries ESP.
    Two CHILD SAs for the same traffic (both peers negotiating at once: IKEv1 Quick Modes crossing,
    RFC 7296 §2.8 for IKEv2) leave each peer free to send on either, and the answers to this SA's
    traffic may be those packets (Arkime's Fortinet IKEv1 capture: two Quick Modes at once, one peer
    sends on both SAs, the other on one, with exactly as many packets as both). Only selectors
    (keys) could tell that from one CHILD SA of several whose return traffic alone is lost. ``()``
    when the reverse uses the very same SPI."""
    f = one[0]
    first = min((x.first_ts for x in one if x.first_ts is not None), default=None)
    last = max((x.last_ts for x in one if x.last_ts is not None), default=None)
    if first is None or last is None:
        return None
    mine = {id(x) for x in one}
    back = [r for r in paths.get((f.dst, f.src, f.protocol), ())
            if id(r) not in mine and r.packets and r.first_ts is not None and r.last_ts is not None
            and r.first_ts <= last and r.last_ts >= first and r.child_sa != c.id]
    if not back:
        return None
    if any(r.spi == f.spi for r in back):
        # Each receiver picks its own SPI for an IKE-made SA; the same SPI both ways between two
        # peers is a manually keyed pair (RFC 4552 §7 keys a whole link with one): not one-way.
        return ()
    r = max(back, key=lambda x: x.sent)
    other = table.child_sas.get(r.child_sa) if r.child_sa is not None else None
    name = child_label(other) if other is not None else "another SA"
    return (f" Yet {f.dst} sends ESP to {f.src} meanwhile, on SPI {spi_text(r.spi)} ({name}, {plural(r.sent, 'packet')}, "
            f"{clock(r.first_ts)} to {clock(r.last_ts)}): it is up and receives, and the path carries its ESP. "
            "If both CHILD SAs carry the same traffic (negotiated at once by both peers: crossing Quick Modes, "
            f"or a collision, RFC 7296 §2.8), {f.dst} answers on that one and nothing is lost; if they carry "
            "different traffic selectors, this SA's return traffic alone is missing.",
            f"Compare the two CHILD SAs' traffic selectors (swanctl --list-sas, or give -k): the same selectors "
            f"mean duplicate SAs (harmless; both sides usually delete one); different ones mean {f.dst} has no "
            "outbound SA or policy for this one's traffic.",
            (r.first_frame,) if r.first_frame is not None else (), (r, name))


@rule(27, "ESP-RETURN-STOPPED", Severity.WARNING, ref="RFC 4303 §3.4")
def r_return_stopped(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Two-way ESP whose return direction went silent while the other side kept sending."""
    # One finding per flow, unlike ESP-ONE-WAY's groups: when each return stopped (frame, time)
    # and how many packets went unanswered since are this flow's own evidence.
    for c in table.child_sas.values():
        flows = c.flows(table)
        for f in flows:
            rev = [r for r in flows if (r.src, r.dst) == (f.dst, f.src)]
            if not rev or f.unanswered_tail < 3 or f.after_rekey or f.after_delete:
                continue
            last_back = max((r.last_ts or 0.0) for r in rev)
            if (f.last_ts or 0.0) - last_back < 1.0:
                continue
            back = max(rev, key=lambda r: r.last_ts or 0.0)
            why, why_hint, ike_frames = esp_silence_cause(table, c, f, f.dst, back.last_ts)
            alive = bool(why)
            refused, icmp_hint, icmp_frames = icmp_refusal(table, f)
            why, why_hint = refusal_first(why, why_hint, ike_frames, refused, icmp_hint, f.dst, f.udp_encap)
            lost = next((r for r in restarts(table) if r.peer == f.dst and f in r.stale), None)
            if lost is not None and not why:
                why = (f" {f.dst} had lost its state: it answered a fresh IKE_SA_INIT at "
                       f"{clock(lost.recovered.response_ts)} (IKE-PEER-RESTARTED), so these went to SAs it no "
                       "longer had.")
                why_hint = "See IKE-PEER-RESTARTED: the old SAs died with the peer's restart."
            # The run without an answer holds the big packets, and small ones were answered: what a
            # reader of this finding must see first (a PMTU black hole, RFC 4459 §2).
            bh = black_hole(table, f)
            big = bh is not None and any(x[0] >= f.unanswered_since_frame for x in bh.big)
            if bh is not None and big:
                why = " " + black_hole_text(bh) + why
                why_hint = " ".join(("See ESP-PATH-MTU: find the path MTU and lower the tunnel MTU below it.", why_hint)).strip()
            yield Finding(
                code="ESP-RETURN-STOPPED", severity=Severity.WARNING,
                title=f"ESP from {f.dst} stopped: {f.src} sent {plural(f.unanswered_tail, 'more packet')} with no reply"
                + (f", while {f.dst} still answers IKE" if alive else "") + (", refused with ICMP" if refused else ""),
                explanation=f"{child_label(c)} carried traffic both ways until frame {back.last_frame} ({clock(back.last_ts)}); "
                f"after that {f.src} sent {plural(f.unanswered_tail, 'ESP packet')} to {f.dst} on SPI {spi_text(f.spi)} over "
                f"{dur((f.last_ts or 0.0) - (f.unanswered_since_ts or 0.0))} and nothing came back (its ESP on "
                f"SPI {spi_text(back.spi)} stopped)"
                + (f".{why}" if why else f": {f.dst} went away, lost its SA, the return path broke, or {f.src}'s "
                   f"{f.protocol} does not reach {f.dst} intact (lost or altered on the way)."),
                # The first frame stays the same while the run grows (live mode tells a finding
                # apart by it); the IKE evidence follows.
                frames=frames_of((back.last_frame, f.unanswered_since_frame, f.last_frame), icmp_frames, ike_frames),
                sa=flow_ref(f),
                hint=why_hint or f"Check whether {f.dst} still has the SA (swanctl --list-sas) and is reachable; DPD "
                "will tear the tunnel down if the peer is gone.", ts=back.last_ts)


# ---------------------------------------------------------------------------------- restarted peer


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


def _restart_log(ctx: RuleContext, r: Restart) -> tuple[str, tuple[PeerLogNote, ...]]:
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


@rule(70, "IKE-PEER-RESTARTED", Severity.ERROR, ref="RFC 7296 §2.4, §2.21.4")
def r_peer_restarted(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """A peer that restarted and lost its SAs: old SPIs unanswered, then a fresh IKE_SA_INIT answered at once."""
    for r in restarts(table):
        tries = sum(1 + x.retransmits for x in r.unanswered)
        kinds = ", ".join(sorted({exchange_label(x, r.old.version) for x in r.unanswered}))
        stale_pk = sum(f.unanswered_tail for f in r.stale)
        spis = ", ".join(spi_text(f.spi) for f in r.stale)
        refused = (f"; {len(r.refused)} came back with INVALID_IKE_SPI (RFC 7296 §2.21.4): it no longer knows "
                   "that IKE SA" if r.refused else "")
        esp = (f" {r.other} also sent {plural(stale_pk, 'ESP packet')} to the stale {noun(len(r.stale), 'SPI')} {spis} (the old CHILD SAs), "
               "none answered." if r.stale else "")
        window_end = r.recovered.response_ts
        window = (f"from {clock(r.last_alive_ts)} (frame {r.last_alive_frame}, the last message from {r.peer} in "
                  f"the old SAs) to {clock(window_end)}" if r.last_alive_ts is not None else f"until {clock(window_end)}")
        new_children = [table.child_sas[i] for i in r.new.children if i in table.child_sas]
        up = [c for c in new_children if c.state in (SaState.ESTABLISHED, SaState.REKEYED, SaState.DELETED)]
        recovery = (f"IKE SA {r.new.key} came up at {clock(r.new.established_ts or r.new.created_ts)}"
                    + (f" with CHILD SA #{up[0].id} (SPIs {spi_text(up[0].spi_i or 0)}/{spi_text(up[0].spi_r or 0)})"
                       if up else "") if r.new.established_ts is not None
                    else f"IKE SA {r.new.key} was started at {clock(r.new.created_ts)}")
        t0 = r.recovered.response_ts or 0.0
        resumed = [f for f in table.flows.values() if {f.src, f.dst} == {r.peer, r.other}
                   and (f.first_ts or 0.0) >= t0 and f not in r.stale]
        if resumed and len({f.src for f in resumed}) == 2:
            recovery += (f"; ESP resumed both ways on new SPIs ({', '.join(spi_text(f.spi) for f in resumed[:4])}, "
                         f"{plural(sum(f.sent for f in resumed), 'packet')})")
        log, notes = _restart_log(ctx, r)
        certain = bool(r.refused or log)
        lead = f"{r.peer} lost its state" + (" (restarted)" if certain else " (most likely restarted)")
        yield Finding(
            # ERROR like the dead peer it was taken for: traffic into the old SAs was lost for
            # the whole window, even though the tunnel recovered.
            code="IKE-PEER-RESTARTED", severity=Severity.ERROR,
            title=f"{lead}: old SAs unanswered {window}, then a fresh IKE_SA_INIT answered at once",
            explanation=f"{r.other} kept using IKE SA {r.old.key}: it sent {plural(len(r.unanswered), 'request')} ({kinds}, "
            f"{plural(tries, 'transmission')} with retries) to {r.peer}, none answered{refused}.{esp} Then {r.other} started over with IKE_SA_INIT (frame "
            f"{r.recovered.request_frames[0]}) and {r.peer} answered it in "
            f"{((r.recovered.response_ts or 0.0) - (r.recovered.request_ts or 0.0)) * 1000:.0f} ms, from the same "
            f"address: {r.peer} is up and reachable but no longer knows the old SAs, as after a restart or reboot "
            f"— not a dead peer. Recovery: {recovery}."
            + ("" if certain else f" (If the path was down only while {r.other} retried, the same pattern shows; "
               f"{r.peer}'s log tells.)") + log,
            frames=frames_of([r.last_alive_frame] if r.last_alive_frame else (),
                             [f for x in r.unanswered for f in x.request_frames[:2]][:4],
                             [f.last_frame for f in r.stale][:2], r.recovered.request_frames[:1],
                             r.recovered.response_frames[:1]),
            sa=r.old.key,
            hint=f"Nothing to fix if it was a planned restart. Otherwise find why {r.peer}'s IKE daemon restarted "
            "(crash, reboot, HA failover). Shorter dpd_delay on "
            f"{r.other} (with dpd_action = restart) shortens the outage.", ts=r.last_alive_ts, evidence=notes)


_REDIRECT_WHEN = {
    "IKE_SA_INIT": "answered its IKE_SA_INIT with a REDIRECT notify instead of setting up the IKE SA (RFC 5685 §4)",
    "IKE_AUTH": "answered IKE_AUTH with a REDIRECT notify: the IKE SA is not to be used (RFC 5685 §5)",
    "INFORMATIONAL": "sent a REDIRECT notify in an INFORMATIONAL request on the established IKE SA "
                     "(gateway-initiated redirect, RFC 5685 §6)",
    "encrypted": "sent its REDIRECT in an encrypted message (no keys for it); the initiator's next "
                 "IKE_SA_INIT says so in its REDIRECTED_FROM notify (RFC 5685 §6)",
}


@rule(71, "IKE-REDIRECTED", (Severity.INFO, Severity.WARNING), ref="RFC 5685 §4, §5, §6")
def r_redirected(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """A gateway redirected the initiator to another gateway; whether it followed."""
    for sa in table.ike_sas.values():
        gw = sa.redirect_to
        if gw is None:
            continue
        new = table.ike_sas.get(sa.redirected_into) if sa.redirected_into else None
        when = _REDIRECT_WHEN.get(sa.redirect_exchange or "", "sent a REDIRECT notify (RFC 5685)")
        if new is not None:
            # A gateway named by FQDN (RFC 5685 §8.2) was reached at an address the capture shows:
            # name it, it is what the engineer filters on.
            where = gw if new.responder == gw else f"{gw} (reached at {new.responder})"
            up = new.established_ts is not None
            follow = (f"{sa.initiator} followed: it {'set up' if up else 'started'} IKE SA {new.key} with {where} at "
                      f"{clock(new.created_ts)} (now {new.state.value})" + (f", then deleted the old one at {clock(sa.deleted_ts)}"
                                                    if sa.deleted_ts is not None else "") + ".")
            hint = "Nothing to fix if the redirect was intended (load balancing, maintenance of the old gateway)."
        else:
            follow = (f"No IKE SA from {sa.initiator} to {gw} follows in the capture: the new gateway may be "
                      "unreachable, refuse the client, or be outside what this capture sees.")
            hint = (f"Check that {sa.initiator} can reach {gw} on UDP 500/4500 and that {gw} has a connection "
                    "for it (and, for strongSwan, the redirect plugin/config on the old gateway).")
        yield Finding(
            code="IKE-REDIRECTED", severity=Severity.INFO if new is not None else Severity.WARNING,
            title=f"{sa.responder} redirected {sa.initiator} to gateway {gw}",
            explanation=f"{sa.responder} {when}, naming {gw} as the gateway to use. {follow}",
            frames=frames_of([sa.redirect_frame] if sa.redirect_frame is not None else [],
                             new.frames[:1] if new is not None else []),
            sa=sa.key, hint=hint, ts=sa.redirect_ts)


def _malformed_quoted(table: SaTable, proto: str, src: object, dst: object) -> Observation | None:
    """The first packet the decoder marked malformed at the ``proto`` layer (an ESP or AH header
    it could not read) from ``src`` to ``dst``: what an ICMP error quoting such a packet refused."""
    layer = proto.lower()
    return next((o for o in table.observations if o.kind == "malformed" and o.detail.get("layer") == layer
                 and o.src == src and o.dst == dst), None)


@rule(72, "ESP-ICMP-UNREACHABLE", Severity.WARNING, ref="RFC 792; RFC 4443 §3.1; RFC 3948 §2")
def r_icmp_unreachable(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """ICMP errors (unreachable, prohibited) quoting ESP that no one-way or unknown-SPI finding already cites."""
    errors = [ob for ob in icmp_errors(table, too_big=False) if ob.detail.get("protocol") in ("ESP", "AH")]
    if not errors:  # the other rules are run again below only to know what they cite
        return
    # Every SA those findings are about: a grouped ESP-ONE-WAY's members too (analysis.rules.one_way).
    cited = {ref for rule_fn in (r_one_way, r_return_stopped, r_esp_spi) for f in rule_fn(table, ctx)
             if f.code != "ESP-AFTER-DELETE" for ref in (f.sa, *(m.sa for m in f.members))}
    # Endpoints a NAT rebinding left behind (RFC 7296 §2.23): the NAT refusing packets sent there
    # until the other peer follows is what IKE-NAT-DETECTED already tells.
    stale = {(r.old_addr, r.old_port) for sa in table.ike_sas.values() for r in sa.nat_rebindings}
    stale |= {(r.old_addr, r.old_port) for c in table.child_sas.values() for r in getattr(c, "nat_rebindings", ())}
    for ob in errors:
        if ob.detail.get("udp_encap") and (ob.detail.get("quoted_dst"), ob.detail.get("dport")) in stale:
            continue
        f = quoted_flow(table, ob)
        if f is not None and (flow_ref(f) in cited or f.spi == 0):  # SPI 0: ESP-RESERVED-SPI tells it
            continue
        spi = ob.detail.get("spi")
        spi_s = spi_text(spi) if isinstance(spi, int) else "?"
        qsrc, qdst = ob.detail.get("quoted_src"), ob.detail.get("quoted_dst")
        n = int(ob.detail.get("count") or 0)  # type: ignore[call-overload]
        proto = str(ob.detail.get("protocol"))  # the quoted packet's: ESP or AH (RFC 4302)
        if f is not None:
            text, hint, frames = icmp_refusal(table, f)
        else:
            bad = _malformed_quoted(table, proto, qsrc, qdst)
            held = (f"The capture holds the quoted packet only as a malformed one (frame {bad.frames[0]}: "
                    f"{bad.detail.get('reason')})" if bad is not None else
                    f"The capture does not hold the quoted packets themselves ({qsrc} -> {qdst} on SPI {spi_s})")
            # RFC 4303 §2.1, RFC 4302 §2.4: SPI 0 is reserved and MUST NOT be sent: no SA can take it.
            zero = (f" SPI 0 is reserved and never valid on the wire (RFC 4303 §2.1, RFC 4302 §2.4): no SA on "
                    f"{qdst} can take it." if spi == 0 else "")
            text = f" {held}; {ob.src} answered {n} of them with ICMP {ob.detail.get('what')}.{zero}"
            hint = f"Check what {ob.src} does with {proto} from {qsrc} to {qdst}."
            frames = frames_of(bad.frames[:1] if bad is not None else (), ob.frames)
        yield Finding(
            code="ESP-ICMP-UNREACHABLE", severity=Severity.WARNING,
            title=f"{ob.src} answered {plural(n, proto + ' packet')} {qsrc} -> {qdst} on SPI {spi_s} with ICMP {ob.detail.get('what')}",
            explanation=f"An ICMP error quotes the {proto} packet it could not deliver (its SPI says which SA): "
            f"{ob.src} {'is the receiver itself' if ob.src == qdst else 'is on the path'}.{text} "
            "Packets refused this way are lost, whatever the tunnel's state says.",
            frames=tuple(frames), sa=flow_ref(f) if f is not None else None, hint=hint, ts=ob.ts,
            facts={"spi": spi_s, "sa_direction": f"{qsrc}>{qdst}", "icmp_from": ob.src,
                   "icmp": ob.detail.get("what"), "icmp_frames": n})
