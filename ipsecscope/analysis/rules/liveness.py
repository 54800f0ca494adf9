"""Liveness and path rules: unanswered IKE, dead peers, one-way ESP, stale SPIs."""

from __future__ import annotations

from ...model.iana import Ikev1Exchange
from ...model.sa import Finding, IkeExchange, IkeSa, SaState, SaTable, Severity
from .common import child_ike, child_label, clock, dur, exchange_label, flow_ref, frames_of, other_peer
from .core import RuleContext, rule


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
        f"{tries} R-U-THERE notification(s) over {dur(waited)} (DPD sequence number{'s' if len(seqs) > 1 else ''} "
        f"{', '.join(seqs) or 'not given'}), and {peer} acknowledged none of them. Either {peer} is down/rebooted, or the path between "
        "them drops IKE now.",
        frames=frames_of([f for y in run for f in y.request_frames][:6]), sa=sa.key,
        hint=f"Check that {peer} is running and reachable (UDP {first.responder_port or 500}); "
        "dpd_delay/dpd_timeout decide how fast the peer is declared dead.", ts=first.request_ts)


@rule(6, ("IKE-NO-RESPONSE", "IKE-DEAD-PEER", "IKE-UDP4500-BLOCKED"), (Severity.WARNING, Severity.ERROR), ref="RFC 7296 §2.1, §2.4; RFC 3706")
def r_unanswered(table: SaTable, ctx: RuleContext):
    """Unanswered IKE requests: peer unreachable, dead peer (IKEv1: DPD R-U-THEREs never acknowledged), or UDP 4500 blocked after NAT-T."""
    end = table.last_ts
    for sa in table.ike_sas.values():
        if not sa.exchanges:
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
            frames = frames_of(x.request_frames[:6])
            exn = exchange_label(x, sa.version)
            init_answered = any(y.exchange == 34 and y.response_frames for y in sa.exchanges)
            if (x.exchange == 35 and init_answered and x.responder_port == 4500
                    and all(y.responder_port != 4500 for y in sa.exchanges if y.response_frames)):
                yield Finding(
                    code="IKE-UDP4500-BLOCKED", severity=Severity.ERROR,
                    title=f"UDP 4500 to {peer} looks blocked: IKE_SA_INIT answered on 500, IKE_AUTH on 4500 never",
                    explanation=f"{req} and {peer} completed IKE_SA_INIT on UDP 500 and moved to UDP 4500 (NAT "
                    f"traversal, RFC 7296 §2.23), but {peer} never answered the IKE_AUTH request sent "
                    f"{tries} time(s) over {dur(waited)}. A firewall or NAT between them drops UDP 4500.",
                    frames=frames, sa=sa.key,
                    hint="Allow UDP 4500 in both directions between the peers (and ESP-in-UDP after it).",
                    ts=x.request_ts)
            elif sa.state in (SaState.ESTABLISHED, SaState.REKEYED) and x.exchange != 34:
                yield Finding(
                    code="IKE-DEAD-PEER", severity=Severity.ERROR,
                    title=f"Dead peer: {peer} stopped answering {req} ({exn} sent {tries}×, no reply)",
                    explanation=f"After the IKE SA was up, {req} sent an {exn} request (message ID {x.msg_id}) "
                    f"{tries} time(s) over {dur(waited)} and {peer} never answered. Either {peer} is "
                    "down/rebooted, or the path between them drops IKE now.",
                    frames=frames, sa=sa.key,
                    hint=f"Check that {peer} is running and reachable (UDP {x.responder_port or 500}); "
                    "dpd_delay/dpd_timeout decide how fast the peer is declared dead.", ts=x.request_ts)
            else:
                sev = Severity.ERROR if tries > 1 or waited > 5 else Severity.WARNING
                yield Finding(
                    code="IKE-NO-RESPONSE", severity=sev,
                    title=f"{peer} never answered {req}'s {exn} request ({tries}×)",
                    explanation=f"{req} sent {exn} (message ID {x.msg_id}) to {peer} {tries} time(s) over "
                    f"{dur(waited)} and got no response in this capture: {peer} is unreachable, not "
                    "running IKE, or a firewall drops UDP 500/4500.",
                    frames=frames, sa=sa.key,
                    hint=f"Check reachability of {peer} on UDP {x.responder_port or 500} and that its IKE daemon "
                    "listens; if the capture was taken on the responder, check that the request arrives.",
                    ts=x.request_ts)


@rule(7, "IKE-RETRANSMIT", (Severity.INFO, Severity.WARNING), ref="RFC 7296 §2.1")
def r_retransmits(table: SaTable, ctx: RuleContext):
    """Requests that needed retransmission before being answered (loss or a slow peer)."""
    for sa in table.ike_sas.values():
        xs = [x for x in sa.exchanges if x.retransmits and x.response_frames]
        if not xs or sa.state == SaState.FAILED:  # retransmissions of a refused exchange say nothing more
            continue
        total = sum(x.retransmits for x in xs)
        x = xs[0]
        yield Finding(
            code="IKE-RETRANSMIT", severity=Severity.INFO if total < 3 else Severity.WARNING,
            title=f"{total} IKE retransmission(s) between {sa.initiator} and {sa.responder}",
            explanation=f"{len(xs)} exchange(s) were answered only after the request was sent again "
            f"({', '.join(exchange_label(y, sa.version) + ' #' + str(y.msg_id) for y in xs[:4])}): packets were lost or "
            "the peer was slow to answer.",
            frames=frames_of(*(y.request_frames[:3] for y in xs[:3])), sa=sa.key,
            hint="Look for loss or MTU problems on the path (large IKE_AUTH messages with certificates are "
            "the usual victims).", ts=x.request_ts)


@rule(12, "IKE-INVALID-SPI", Severity.WARNING, ref="RFC 7296 §1.5")
def r_invalid_spi(table: SaTable, ctx: RuleContext):
    """INVALID_SPI notifications: a peer received ESP for an SA it does not know."""
    for ob in table.observations:
        if ob.kind != "invalid_spi_notify":
            continue
        spi = ob.detail.get("spi")
        spi_s = f"0x{spi:08x}" if isinstance(spi, int) else "?"
        yield Finding(
            code="IKE-INVALID-SPI", severity=Severity.WARNING,
            title=f"{ob.src} reports INVALID_SPI {spi_s} to {ob.dst}",
            explanation=f"{ob.src} received ESP with SPI {spi_s} from {ob.dst} and has no such SA (RFC 7296 §1.5): the "
            "peers disagree about which SAs exist (one side deleted or never installed it).",
            frames=ob.frames, sa=str(ob.detail.get("ike_sa")) if ob.detail.get("ike_sa") else None,
            hint=f"Check {ob.dst}'s SA list (swanctl --list-sas) for a stale SA; restarting the tunnel resyncs both.",
            ts=ob.ts)


@rule(20, ("ESP-UNKNOWN-SPI", "ESP-AFTER-DELETE"), Severity.WARNING, ref="RFC 4301 §4.1; RFC 7296 §1.4.1")
def r_esp_spi(table: SaTable, ctx: RuleContext):
    """ESP on an SPI no visible negotiation created, or on an SA already deleted."""
    for f in table.flows.values():
        c = table.child_sas.get(f.child_sa) if f.child_sa is not None else None
        if c is not None and c.state == SaState.INFERRED:
            ike = child_ike(table, c)
            if ike is not None and ike.decrypted and ike.created_ts is not None and f.first_ts is not None \
                    and f.first_ts > ike.created_ts and not ike.state_inferred:
                yield Finding(
                    code="ESP-UNKNOWN-SPI", severity=Severity.WARNING,
                    title=f"ESP {f.src} -> {f.dst} on SPI 0x{f.spi:08x} that no IKE exchange created",
                    explanation=f"The IKE SA between {ike.initiator} and {ike.responder} was readable, yet none of its "
                    f"exchanges negotiated SPI 0x{f.spi:08x}; {f.packets} packet(s) used it. The receiver will "
                    "drop them (and may answer INVALID_SPI).",
                    frames=(f.first_frame, f.last_frame) if f.first_frame != f.last_frame else (f.first_frame,),
                    sa=flow_ref(f),
                    hint=f"A stale SA on {f.src} (e.g. after {f.dst} restarted): reset the tunnel on {f.src}.",
                    ts=f.first_ts)
        if f.after_delete and c is not None and c.deleted_ts is not None:
            late = (f.last_ts or 0) - c.deleted_ts
            if f.after_delete <= 2 and late <= ctx.after_delete_grace_s:
                continue  # in-flight packets
            yield Finding(
                code="ESP-AFTER-DELETE", severity=Severity.WARNING,
                title=f"{f.after_delete} ESP packet(s) {f.src} -> {f.dst} on SPI 0x{f.spi:08x} after it was deleted",
                explanation=f"CHILD SA #{c.id} was deleted by {c.deleted_by} at {clock(c.deleted_ts)}, but {f.src} kept sending "
                f"on SPI 0x{f.spi:08x} for {dur(max(late, 0.0))}. The receiver drops these packets.",
                frames=tuple(f.after_delete_frames), sa=flow_ref(f),
                hint=f"{f.src} did not remove the outbound SA: check its kernel SAs (ip xfrm state) and its log "
                "for the Delete.", ts=c.deleted_ts)


@rule(21, "ESP-ONE-WAY", Severity.WARNING, ref="RFC 4303 §3.4")
def r_one_way(table: SaTable, ctx: RuleContext):
    """One-way ESP: traffic in one direction of a CHILD SA, nothing back."""
    for c in table.child_sas.values():
        flows = c.flows(table)
        if not flows:
            continue
        fwd = [f for f in flows if f.spi == c.spi_r]
        rev = [f for f in flows if c.spi_i is not None and f.spi == c.spi_i]
        if fwd and rev:
            continue
        one = fwd or rev
        pk = sum(f.packets for f in one)
        if pk < 3:
            continue
        f = one[0]
        # A rekeyed SA's return traffic may already be on the new SPIs: not one-way.
        if c.rekeyed_into is not None or c.rekeyed_from is not None:
            continue
        yield Finding(
            code="ESP-ONE-WAY", severity=Severity.WARNING,
            title=f"One-way ESP: {f.src} -> {f.dst} ({pk} packets), nothing back",
            explanation=f"{child_label(c)} carries {pk} ESP packet(s) from {f.src} to {f.dst} on SPI 0x{f.spi:08x} but "
            f"none in the other direction. {f.dst} either does not receive them (filtered), cannot decrypt "
            "them (key or SA missing), has no route/policy for the replies, or the capture sees only one "
            "direction.",
            frames=(f.first_frame, f.last_frame), sa=flow_ref(f),
            hint=f"Check on {f.dst}: SA and policy installed (ip xfrm state/policy), ESP (or UDP 4500) allowed in, "
            "and a route back to the sender's subnet.", ts=f.first_ts)


@rule(27, "ESP-RETURN-STOPPED", Severity.WARNING, ref="RFC 4303 §3.4")
def r_return_stopped(table: SaTable, ctx: RuleContext):
    """Two-way ESP whose return direction went silent while the other side kept sending."""
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
            yield Finding(
                code="ESP-RETURN-STOPPED", severity=Severity.WARNING,
                title=f"ESP from {f.dst} stopped: {f.src} sent {f.unanswered_tail} more packet(s) with no reply",
                explanation=f"{child_label(c)} carried traffic both ways until frame {back.last_frame} ({clock(back.last_ts)}); "
                f"after that {f.src} sent {f.unanswered_tail} ESP packet(s) to {f.dst} on SPI 0x{f.spi:08x} over "
                f"{dur((f.last_ts or 0.0) - (f.unanswered_since_ts or 0.0))} and nothing came back: {f.dst} went "
                "away, lost its SA, or the return path broke.",
                frames=(back.last_frame, f.unanswered_since_frame, f.last_frame), sa=flow_ref(f),
                hint=f"Check whether {f.dst} still has the SA (swanctl --list-sas) and is reachable; DPD will "
                "tear the tunnel down if the peer is gone.", ts=back.last_ts)
