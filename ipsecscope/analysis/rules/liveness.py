"""Liveness and path rules: unanswered IKE, dead peers, one-way ESP, stale SPIs.

The rules are here (a rule's module names its family, ``core.rule``); the evidence several of them
weigh is in helper modules: :mod:`.unanswered` (requests never answered, IKEv1 DPD), :mod:`.restart`
(peers that lost their state) and :mod:`.one_way` (one-way SAs judged as a group).
"""

from __future__ import annotations

from collections.abc import Iterator

from ...model.iana import Ikev1Exchange
from ...model.idtext import spi_text
from ...model.plural import noun, plural, verb, with_article
from ...model.sa import (
    EspFlow,
    Finding,
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
    other_peer,
    quoted_flow,
    refusal_first,
)
from .core import RuleContext, rule
from .one_way import (
    OneWay,
    flows_by_path,
    group_plain,
    group_siblings,
    one_way_group,
    sibling_return,
    undecided_pairs,
)
from .pmtu import black_hole, black_hole_text
from .restart import restart_log, restarts
from .unanswered import ike_by_pair, initial_exchange, sent_once, slowest_answer, v1_dpd_dead


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
        dpd = v1_dpd_dead(sa, end) if sa.version == 1 else None
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
            if tries == 1 and waited <= slowest_answer(sa):
                continue  # the capture ends before this peer answered anything this late: no evidence
            refused, icmp_frames = icmp_ike_refusal(table, sa, req)
            frames = frames_of(x.request_frames[:6], icmp_frames)
            exn = exchange_label(x, sa.version)
            if tries == 1 and not refused:
                if pairs is None:
                    pairs = ike_by_pair(table)
                yield sent_once(pairs, sa, x, req, peer, exn, waited)
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
            elif sa.state in (SaState.ESTABLISHED, SaState.REKEYED) and not initial_exchange(sa, x):
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
        # retransmissions of a refused exchange say nothing more; an IKEv1 phase 1 failed because a
        # request was never answered (state.ikev1_stall: "no response") is what they explain
        if not xs or (sa.state == SaState.FAILED and sa.failure != "no response"):
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
    for group in undecided_pairs(table):
        found = one_way_group(table, group)
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
            paths = flows_by_path(table)
        sib = sibling_return(table, c, one, paths)
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
        log, notes = restart_log(ctx, r)
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
