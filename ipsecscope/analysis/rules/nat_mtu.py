"""NAT and MTU rules: NAT detection and its side (RFC 7296 §2.23), IP fragmentation."""

from __future__ import annotations

from ...model.sa import Finding, SaTable, Severity
from .common import exchange_label, frames_of
from .core import RuleContext, rule


@rule(9, "IKE-NAT-DETECTED", Severity.INFO, ref="RFC 7296 §2.23; RFC 3947")
def r_nat(table: SaTable, ctx: RuleContext):
    """NAT detected from NAT_DETECTION_* hashes (RFC 7296 §2.23, RFC 3947), and on which side."""
    for sa in table.ike_sas.values():
        if not sa.nat_detected or sa.rekeyed_from:
            continue
        init = next((x for x in sa.exchanges if x.exchange in (34, 2, 4)), None)
        frames = frames_of(init.request_frames[:1] + init.response_frames[:1]) if init else ()
        if sa.nat_initiator and sa.nat_responder:
            where = "both peers"
            expl = (f"The NAT detection hashes of {sa.initiator} and {sa.responder} both fail to match the "
                    "addresses in the capture. Either both are behind NAT, or one peer forces UDP "
                    "encapsulation (strongSwan encap=yes sends a deliberately wrong source hash).")
        elif sa.nat_initiator:
            where = f"initiator {sa.initiator}"
            expl = (f"The NAT detection hashes show that {sa.initiator}'s address or port was translated on "
                    f"the way to {sa.responder}: the initiator is behind a NAT.")
        else:
            where = f"responder {sa.responder}"
            expl = (f"The NAT detection hashes show that {sa.responder}'s address or port is translated as "
                    f"seen by {sa.initiator}: the responder is behind a NAT (port forwarding).")
        moved = " IKE moved to UDP 4500 and ESP is UDP-encapsulated (RFC 3948)." if sa.nat_t else ""
        yield Finding(
            code="IKE-NAT-DETECTED", severity=Severity.INFO, title=f"NAT detected: {where}", explanation=expl + moved, frames=frames, sa=sa.key,
            hint="Nothing to fix if the tunnel works; UDP 4500 must stay open and NAT keepalives keep the "
            "mapping alive.", ts=sa.created_ts)


@rule(10, "IKE-IP-FRAGMENTED", (Severity.WARNING, Severity.ERROR), ref="RFC 7383")
def r_ip_fragmented(table: SaTable, ctx: RuleContext):
    """IKE messages fragmented at the IP layer without IKE fragmentation (RFC 7383): MTU trouble."""
    for sa in table.ike_sas.values():
        xs = [x for x in sa.exchanges if x.ip_fragmented]
        if not xs:
            continue
        both = all(sa.ike_fragmentation) if sa.version == 2 else False
        lost = [x for x in xs if not x.response_frames]
        sev = Severity.ERROR if lost else Severity.WARNING
        x = xs[0]
        yield Finding(
            code="IKE-IP-FRAGMENTED", severity=sev,
            title=f"IKE messages between {sa.initiator} and {sa.responder} were IP-fragmented"
            + (" and went unanswered" if lost else ""),
            explanation=f"{len(xs)} exchange(s) ({', '.join(exchange_label(y, sa.version) for y in xs[:3])}) carried IKE messages "
            "larger than the path MTU, split into IP fragments. Firewalls and NATs often drop fragments"
            + (", and these requests were never answered." if lost else ".")
            + ("" if both else " IKE fragmentation (RFC 7383) was not negotiated by both peers."),
            frames=frames_of(*(y.request_frames[:2] for y in xs[:3])), sa=sa.key,
            hint="Enable IKE fragmentation on both peers (strongSwan: fragmentation = yes, the default) or "
            "reduce message size (fewer certificates, smaller CERTREQ lists).", ts=x.request_ts)
