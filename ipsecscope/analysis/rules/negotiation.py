"""IKE negotiation rules: proposals, DH groups, CHILD SA creation, rekeying, algorithms."""

from __future__ import annotations

import re
from collections.abc import Iterator

from ...model.iana import NotifyType
from ...model.plural import plural
from ...model.sa import ChildSa, Finding, IkeExchange, IkeSa, SaState, SaTable, Severity
from ...state import names as N
from .common import child_ike, exchange_label, frames_of, note_src, other_peer, peer_notes_about, uniq
from .core import RuleContext, rule


@rule(1, "IKE-NO-PROPOSAL", Severity.ERROR, ref="RFC 7296 §2.7, §3.10.1")
def r_no_proposal(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Proposal mismatch: the responder answered NO_PROPOSAL_CHOSEN (IKE or CHILD SA)."""
    accepted_by: dict[str, set[str]] = {}
    for sa in table.ike_sas.values():
        if sa.proposal:
            accepted_by.setdefault(sa.responder, set()).add(sa.proposal)
    for sa in table.ike_sas.values():
        for x in sa.exchanges:
            if x.error not in (NotifyType.NO_PROPOSAL_CHOSEN,) or not x.response_frames:
                continue
            req = x.requester
            resp = other_peer(sa, req)
            child = table.child_sas.get(x.new_child) if x.new_child else None
            own = set(sa.offered)  # what the responder had accepted before is not this offer
            if child is not None or x.exchange in (35, 36) and not x.rekey_ike:
                what = f"CHILD SA #{child.id}" if child else "CHILD SA"
                wire = list(child.offered) if child and child.offered else []
                ref = f"child:{child.id}" if child else sa.key
                knob = "esp_proposals (swanctl.conf children section)"
                short_knob, protos, where = "esp_proposals", ("ESP", "AH"), "swanctl.conf children section"
            else:
                # an IKE SA rekey (RFC 7296 §1.3.2): the IKE SA it was creating, with its own offer
                new = table.ike_sas.get(x.new_ike) if x.rekey_ike and x.new_ike else None
                what = "IKE SA rekey" if new is not None else "IKE SA"
                wire = list(new.offered if new is not None else sa.offered)
                ref = new.key if new is not None else sa.key
                own = set(wire)
                knob = "proposals (swanctl.conf connection)"
                short_knob, protos, where = "proposals", ("IKE",), "swanctl.conf connection"
            offered = ", ".join(wire) or "(not visible)"
            other = sorted(accepted_by.get(resp, set()) - own)
            accepts = (f"; in this capture {resp} accepted {', '.join(other)} for other IKE SAs" if other
                       else "; the responder does not say which proposals it would accept")
            frames = frames_of(x.request_frames[:1], x.response_frames[:1])
            title = f"{what}: no proposal chosen — {resp} rejected every proposal {req} offered"
            # The responder's own log ("configured proposals: ESP:AES_GCM_16_256/NO_EXT_SEQ") says
            # what it wanted; the wire never does (RFC 7296 §3.10.1: the notify carries no data).
            notes = [n for n in peer_notes_about(ctx, sa, resp, ("configured_proposals", "received_proposals"))
                     if n.data.get("proto") in protos]
            conf = [n for n in notes if n.kind == "configured_proposals"]
            if conf:
                configured = uniq(k for n in conf for k in n.data.get("swan", ()))
                if not wire:
                    wire = uniq(k for n in notes if n.kind == "received_proposals" for k in n.data.get("swan", ()))
                    offered = f"{', '.join(wire)} (per {resp}'s log)" if wire else offered
                yield Finding(
                    code="IKE-NO-PROPOSAL", severity=Severity.ERROR, title=title,
                    explanation=f"Responder {resp} rejected the {what} proposal in {exchange_label(x, sa.version)} (NO_PROPOSAL_CHOSEN). "
                    f"{req} offered {offered}; {resp} is configured with {', '.join(configured)} "
                    f"(its log, {note_src(conf[0])}: \"{conf[0].text}\"). No proposal is common to both peers.",
                    frames=frames, sa=ref,
                    hint=f"Add {configured[0]} to {short_knob} on {req}"
                    + (f", or {wire[0]} to {resp}'s" if wire else f", or {req}'s proposal to {resp}'s")
                    + f" ({where}).", ts=x.response_ts, evidence=tuple(notes))
                continue
            yield Finding(
                code="IKE-NO-PROPOSAL", severity=Severity.ERROR, title=title,
                explanation=f"Responder {resp} rejected the {what} proposal in {exchange_label(x, sa.version)} (NO_PROPOSAL_CHOSEN): "
                f"{req} offered {offered}{accepts}. No proposal is common to both peers.",
                frames=frames, sa=ref,
                hint=f"Make {knob} on {req} and {resp} share at least one proposal, e.g. add the responder's "
                "proposal to the initiator's list (check the responder's log for what it has configured).",
                ts=x.response_ts)


@rule(2, "IKE-INVALID-KE", (Severity.WARNING, Severity.ERROR), ref="RFC 7296 §1.2, §1.3")
def r_invalid_ke(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """DH group mismatch: INVALID_KE_PAYLOAD, and whether the retry with the requested group worked."""
    for sa in table.ike_sas.values():
        for x in sa.exchanges:
            if x.error != NotifyType.INVALID_KE_PAYLOAD:
                continue
            # The retry is either a later IKE_SA_INIT on this SA or a linked SA (new SPIs).
            later = [y for y in sa.exchanges if y.exchange == x.exchange and y.request_ts is not None
                     and x.request_ts is not None and y.request_ts > x.request_ts]
            retry_sa = table.ike_sas.get(sa.retried_by) if sa.retried_by else None
            ok = any(y.response_frames and y.error is None for y in later) or (
                retry_sa is not None and retry_sa.state not in (SaState.FAILED, SaState.INITIATING))
            if x.exchange == 36:  # CREATE_CHILD_SA: PFS group mismatch
                ok = ok or any(y.response_frames and y.error is None for y in sa.exchanges
                               if y.exchange == 36 and (y.request_ts or 0) > (x.request_ts or 0))
            req = x.requester
            resp = other_peer(sa, req)
            if x.exchange == 36:  # CREATE_CHILD_SA with KE: PFS group mismatch
                child = table.child_sas.get(x.new_child) if x.new_child else None
                wanted = [N.dh_name(x.ke_requested)] if x.ke_requested is not None else ["(not visible)"]
                sent = N.dh_name(child.pfs_group) if child and child.pfs_group else "?"
                what = "PFS group of a CHILD SA"
                label = "PFS group mismatch"
            else:
                wanted = [N.dh_name(g) for g in sa.invalid_ke_requested] or ["(not visible)"]
                sent = N.dh_name(sa.ke_groups[0]) if sa.ke_groups else "?"
                what = "key exchange (DH) group"
                label = "DH group mismatch"
            # The responder's log: "DH group ECP_256 unacceptable, requesting MODP_2048".
            notes = [n for n in peer_notes_about(ctx, sa, resp, ("dh",)) if n.data.get("configured")]
            log = ""
            if notes and x.exchange != 36:
                n = notes[0]
                log = (f" {resp}'s log ({note_src(n)}: \"{n.text}\") confirms it: the proposal {resp} selected "
                       f"from its configuration uses {n.data['configured']}, not {n.data['received']}.")
            if not ok and retry_sa is None and not later and x.exchange != 36:
                # A refused initiator retries at once with the group asked for (RFC 7296 §1.2), or
                # gives up. A capture shows which only if it holds the initiator's side (its
                # request) and runs on after the answer for as long as the tracker waits to link a
                # retry (RETRY_WINDOW). Before that, no retry is no evidence of failure, as an
                # unanswered request at the capture's end is no dead peer.
                from ...state.ikev2 import RETRY_WINDOW  # loaded with the IKEv2 tracker, not before

                after = (table.last_ts - x.response_ts) if table.last_ts is not None and x.response_ts is not None else 0.0
                why = ("the capture holds none of what " + req + " sent (not even the refused request)"
                       if not x.request_frames else
                       f"the capture ends {after:.3g} s after the answer" if after < RETRY_WINDOW else "")
                if why:
                    yield Finding(
                        code="IKE-INVALID-KE", severity=Severity.WARNING,
                        title=f"{label}: {resp} asked for {wanted[0]}; whether {req} retried is not in the capture",
                        explanation=(f"{req} sent its {what} as {sent}; " if sent != "?" else "")
                        + f"{resp} answered INVALID_KE_PAYLOAD asking for {', '.join(wanted)}. An initiator retries at once with that group or gives up, but {why}: "
                        "no retry in it is no sign that none was sent." + log,
                        frames=frames_of(x.request_frames[:1], x.response_frames[:1]), sa=sa.key,
                        hint=f"Capture longer (both directions) to see the retry, or put {wanted[0]} in {req}'s "
                        "proposals so that the first KE payload already uses it.", ts=x.response_ts,
                        evidence=tuple(notes) if log else ())
                    continue
            if ok:
                yield Finding(
                    code="IKE-INVALID-KE", severity=Severity.WARNING,
                    title=f"{label}: {resp} asked for {wanted[0]}, the retry succeeded",
                    explanation=f"{req} sent its {what} as {sent}; {resp} answered INVALID_KE_PAYLOAD asking for "
                    f"{', '.join(wanted)}. {req} retried with that group and the negotiation went on. "
                    "Every new SA costs one extra round trip." + log,
                    frames=frames_of(x.request_frames[:1], x.response_frames[:1]), sa=sa.key,
                    hint=f"Put {wanted[0]} first in {req}'s proposal (swanctl.conf proposals/esp_proposals) so the "
                    "first KE payload already uses it.", ts=x.response_ts, evidence=tuple(notes) if log else ())
            else:
                yield Finding(
                    code="IKE-INVALID-KE", severity=Severity.ERROR,
                    title=f"{label}: {resp} asked for {wanted[0]}, no successful retry",
                    explanation=f"{req} sent its {what} as {sent}; {resp} answered INVALID_KE_PAYLOAD asking for "
                    f"{', '.join(wanted)}, and no retry with that group succeeded in this capture." + log,
                    frames=frames_of(x.request_frames[:1], x.response_frames[:1]), sa=sa.key,
                    hint=f"Configure a common DH group on both peers (add {wanted[0]} to {req}'s proposals).",
                    ts=x.response_ts, evidence=tuple(notes) if log else ())


_CHILD_FAIL_HINT = {
    "SINGLE_PAIR_REQUIRED": "the responder accepts only one address pair: narrow the initiator's selectors",
    "INTERNAL_ADDRESS_FAILURE": "the responder could not assign a virtual IP: check its address pool",
    "FAILED_CP_REQUIRED": "the responder requires a configuration payload: set vips on the initiator",
    "NO_ADDITIONAL_SAS": "the responder accepts no more CHILD SAs on this IKE SA",
    "TEMPORARY_FAILURE": "the responder is busy (often a rekey collision); the initiator should retry",
    "CHILD_SA_NOT_FOUND": "the CHILD SA to rekey no longer exists on the responder",
}


@rule(5, "IKE-CHILD-REFUSED", (Severity.WARNING, Severity.ERROR), ref="RFC 7296 §1.3, §3.10.1")
def r_child_refused(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """A CHILD SA refused for a reason other than proposals or selectors."""
    for c in table.child_sas.values():
        if c.state != SaState.FAILED or c.failure in (None, "NO_PROPOSAL_CHOSEN", "TS_UNACCEPTABLE",
                                                      "INVALID_SELECTORS", "AUTHENTICATION_FAILED",
                                                      "INVALID_KE_PAYLOAD"):
            continue
        sev = Severity.WARNING if c.failure in ("TEMPORARY_FAILURE", "CHILD_SA_NOT_FOUND") else Severity.ERROR
        yield Finding(
            code="IKE-CHILD-REFUSED", severity=sev, title=f"CHILD SA #{c.id} refused by {c.responder}: {c.failure}",
            explanation=f"{c.initiator} asked {c.responder} for a CHILD SA ({c.created_by}); {c.responder} refused "
            f"with {c.failure}.", frames=frames_of([c.created_frame] if c.created_frame else (),
                                          [c.failure_frame] if c.failure_frame else ()),
            sa=f"child:{c.id}", hint=_CHILD_FAIL_HINT.get(c.failure, "See the responder's log for the reason."),
            ts=c.created_ts)


@rule(8, "IKE-REKEY-COLLISION", Severity.WARNING, ref="RFC 7296 §2.8.1, §2.8.2")
def r_rekey_collision(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Rekey collisions: both peers started rekeying the same SA at once (crossing CREATE_CHILD_SA)."""
    for c in table.child_sas.values():
        if not c.rekey_collision:
            continue
        sa = child_ike(table, c)
        xs = [x for x in (sa.exchanges if sa else []) if x.rekey_child == c.id]
        yield Finding(
            code="IKE-REKEY-COLLISION", severity=Severity.WARNING,
            title=f"Rekey collision on CHILD SA #{c.id}: both {c.initiator} and {c.responder} rekeyed at once",
            explanation=f"{c.initiator} and {c.responder} each sent a CREATE_CHILD_SA request rekeying CHILD SA #{c.id} "
            "before the other's finished (RFC 7296 §2.8.1). One of the new SAs is redundant and is "
            "deleted; traffic may briefly use an SA that is about to go.",
            frames=frames_of(*(x.request_frames[:1] for x in xs)), sa=f"child:{c.id}",
            hint="Rekey timers that expire together: give the peers different rekey_time, or keep the default "
            "rand_time jitter.", ts=c.rekeyed_ts)
    for ob in table.observations:
        if ob.kind == "ike_rekey_collision":
            yield Finding(
                code="IKE-REKEY-COLLISION", severity=Severity.WARNING,
                title=f"IKE SA rekey collision between {ob.src} and {ob.dst}",
                explanation=f"{ob.src} and {ob.dst} both started rekeying the IKE SA at the same time (RFC 7296 §2.8.2); "
                "the one with the lower nonce is deleted.", frames=ob.frames, sa=str(ob.detail.get("ike_sa")),
                hint="Stagger rekey_time / keep rand_time on the peers.", ts=ob.ts)


_WEAK = [
    (re.compile(r"(^|-)des(-|$)"), "DES"), (re.compile(r"(^|-)3des(-|$)"), "3DES"),
    (re.compile(r"(^|-)(prf)?md5(_128)?(-|$)"), "MD5"), (re.compile(r"(^|-)(prf)?sha1(_160)?(-|$)"), "SHA-1"),
    (re.compile(r"(^|-)modp(768|1024)(s160)?(-|$)"), "MODP ≤ 1024"), (re.compile(r"(^|-)null(-|$)"), "NULL encryption"),
    (re.compile(r"(^|-)blowfish"), "Blowfish"),
]


# What the algorithm-requirement RFCs say of each weak label: RFC 8247 §2.1-§2.4 (IKEv2's
# encryption, PRF, integrity and DH transforms) and RFC 8221 §5-§6 (ESP/AH). "MUST NOT": never to
# be used; "SHOULD NOT": on its way out; "MUST-": still required for interoperability and
# expected to be demoted (RFC 8247 §1.2). Only "MUST-" alone is not a warning: HMAC-SHA1 is not
# broken as a MAC or PRF, both RFCs keep it, and saying it "no longer gives adequate security"
# overstated it (an engineer reading the RFC would dispute the finding).
_STATUS = {
    "DES": "MUST NOT (RFC 8247 §2.1, RFC 8221 §5): a 56-bit key, found by exhaustive search",
    "3DES": "MAY for IKE (RFC 8247 §2.1), SHOULD NOT for ESP (RFC 8221 §5): its 64-bit block lets "
            "ciphertext blocks collide after some tens of gigabytes under one key (Sweet32)",
    "MD5": "MUST NOT (RFC 8247 §2.2, §2.3; RFC 8221 §6)",
    "SHA-1": "MUST- (RFC 8247 §2.2, §2.3; RFC 8221 §6): still required for interoperability and expected to "
             "be demoted; HMAC-SHA1 is not broken, SHA-2 is what both RFCs recommend",
    "MODP ≤ 1024": "SHOULD NOT for the 1024-bit group 2, MUST NOT for the 768-bit group 1 (RFC 8247 §2.4): "
                   "within reach of a well-resourced attacker's precomputation (Logjam)",
    "NULL encryption": "ESP with ENCR_NULL authenticates but does not encrypt (RFC 4303 §3.2.1; RFC 8221 §5 keeps "
                       "it for that use): the traffic is readable on the path",
    "Blowfish": "MUST NOT (RFC 8221 §5): a 64-bit block",
}


def weak_words(labels: list[str]) -> str:
    """What the RFCs say of each weak label, one clause each ("SHA-1: MUST- (...)")."""
    return "; ".join(f"{label}: {_STATUS[label]}" for label in labels)


def phasing_out_only(labels: list[str]) -> bool:
    """Only algorithms the RFCs still require ("MUST-"): worth knowing, not a warning."""
    return set(labels) <= {"SHA-1"}


def weak_parts(proposal: str) -> list[str]:
    # an IKEv1 AH+ESP bundle reads "AH md5 + ESP 3des" (state/ikev1.py): each protocol's keywords
    parts = [p.removeprefix("AH ").removeprefix("ESP ") for p in proposal.split(" + ")]
    return [label for rx, label in _WEAK if any(rx.search(p) for p in parts)]


_WEAK_HINT = "Prefer aes256gcm16-prfsha256-ecp256 or aes256-sha256-modp3072 (or stronger) on both peers."


def _weak_ike_words(sa) -> tuple[str, str, str]:
    """(title, what happened, hint) for a weak IKE SA proposal, saying only what the capture shows.

    The chosen proposal is the responder's SA payload in its answer (IKE_SA_INIT response,
    RFC 7296 §1.2, the last one after any COOKIE or INVALID_KE_PAYLOAD refusal, §2.6; MM2/AM2,
    RFC 2409 §5; a rekey's CREATE_CHILD_SA response, §1.3.2): ``IkeSa.proposal_frames``. Without
    the request in the capture (a reflection victim, a one-direction capture) nothing shows the
    initiator offered it; without the rest of the exchange nothing shows the SA came up: only
    that the responder accepts it."""
    chose = sa.proposal_frames
    msg = ("CREATE_CHILD_SA response" if sa.rekeyed_from else "IKE_SA_INIT response" if sa.version == 2 else
           f"{sa.mode or 'phase 1'} Mode answer ({'AM2' if sa.mode == 'Aggressive' else 'MM2'})")
    at = f" (frame {chose[-1]})" if chose else ""
    if len(chose) == 1:
        return ("IKE SA algorithms accepted by a responder, request not captured",
                f"{sa.responder} chose {sa.proposal} in its {msg}{at} to {sa.initiator}, whose request is not in "
                f"the capture: nothing here shows {sa.initiator} offered or agreed to it (see "
                "IKE-RESPONSE-NO-REQUEST), only that the responder accepts it",
                "Prefer aes256gcm16-prfsha256-ecp256 or aes256-sha256-modp3072 (or stronger) on the responder.")
    if sa.state in (SaState.INITIATING, SaState.FAILED):
        return ("IKE SA algorithms accepted, SA not completed",
                f"{sa.initiator} offered {sa.proposal} and {sa.responder} accepted it in its {msg}{at}, but the "
                "IKE SA did not complete in the capture", _WEAK_HINT)
    return ("IKE SA uses weak algorithms",
            f"{sa.initiator} and {sa.responder} agreed on {sa.proposal} for the IKE SA", _WEAK_HINT)


_CHILD_ANSWER = {"IKE_AUTH": "IKE_AUTH response", "CREATE_CHILD_SA": "CREATE_CHILD_SA response",
                 "Quick Mode": "Quick Mode answer (QM2)"}


def _weak_child_words(table: SaTable, c) -> str:
    """What happened to a CHILD SA with a weak proposal, saying only what the capture shows: the
    responder chose it in its answer (RFC 7296 §1.3, RFC 2409 §5.5; ``ChildSa.proposal_frames``),
    and which peers then sent ESP (or AH) on it. A peer sends on the SPI the other chose (RFC 4301
    §4.1): the initiator on ``spi_r``, the responder on ``spi_i``. Without that traffic nothing
    here shows the SA protected anything."""
    chose = c.proposal_frames
    at = f" (frame {chose[-1]})" if chose else ""
    said = (f"{c.initiator} offered {c.proposal} and {c.responder} accepted it in its "
            f"{_CHILD_ANSWER.get(c.created_by, 'answer')}{at}")
    sent = {(f.protocol, f.spi) for f in table.child_flows.get(c.id, ()) if f.packets}
    pairs = c.spi_pairs()  # each protocol of an AH+ESP bundle
    senders = [peer for peer, side in ((c.initiator, 2), (c.responder, 1))
               if any((pair[0], pair[side]) in sent for pair in pairs)]
    proto = c.protocols_text()
    if len(senders) == 2:
        return f"{said}; both send {proto} on it"
    if senders:
        return f"{said}; {senders[0]} sends {proto} on it, the capture holds none the other way"
    return f"{said}; no {proto} of this CHILD SA is in the capture"


@rule(11, "IKE-WEAK-ALGO", (Severity.INFO, Severity.WARNING), ref="RFC 8247 §2; RFC 8221 §5, §6")
def r_weak(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Weak algorithms negotiated (DES, 3DES, MD5, MODP ≤ 1024, NULL, Blowfish: WARNING; SHA-1,
    which RFC 8247/8221 still require as MUST-, alone: INFO), each with what the RFCs say of it."""
    for sa in table.ike_sas.values():
        if sa.proposal and (weak := weak_parts(sa.proposal)):
            title, said, hint = _weak_ike_words(sa)
            mild = phasing_out_only(weak)
            yield Finding(
                code="IKE-WEAK-ALGO", severity=Severity.INFO if mild else Severity.WARNING,
                title=f"{title.replace('weak', 'phased-out') if mild else title}: {', '.join(weak)} ({sa.proposal})",
                explanation=f"{said}. {weak_words(weak)}.",
                frames=sa.proposal_frames, sa=sa.key, hint=hint, ts=sa.created_ts)
    for c in table.child_sas.values():
        if c.proposal and (weak := weak_parts(c.proposal)):
            mild = phasing_out_only(weak)
            yield Finding(
                code="IKE-WEAK-ALGO", severity=Severity.INFO if mild else Severity.WARNING,
                title=f"CHILD SA #{c.id}: {'phased-out' if mild else 'weak'} algorithms {', '.join(weak)} ({c.proposal})",
                explanation=f"{_weak_child_words(table, c)}. {weak_words(weak)}.", frames=c.proposal_frames,
                sa=f"child:{c.id}", hint="Use aes256gcm16 or aes256-sha256 in esp_proposals on both peers.",
                ts=c.created_ts)


def _version(table: SaTable, sa) -> int:
    if isinstance(sa, IkeSa):
        return sa.version
    ike = child_ike(table, sa)
    return ike.version if ike is not None else 2


def _unfit_check(sa, version: int) -> str:
    """How initiators check such an answer; strongSwan's own log line for it (IKEv2: ike_init.c,
    child_create.c; IKEv1: main_mode.c, aggressive_mode.c, quick_mode.c, whose initiator selects
    the answer's proposal from its configured ones, then answers NO-PROPOSAL-CHOSEN; libreswan's
    parse_isakmp_sa_body/parse_ipsec_sa_body, called by main_inR1_outI2 and aggr_inR1_outI2).
    strongSwan matches an answer by its algorithms, not its number."""
    kind = sa.answer_unfit.kind
    if kind == "number":
        return ("an initiator that checks the number fails the exchange; strongSwan matches answers by their "
                "algorithms and takes it")
    if version == 1:
        aggressive = isinstance(sa, IkeSa) and sa.mode == "Aggressive"
        src = "aggressive_mode.c" if aggressive else "main_mode.c"
        if kind == "auth":  # the method is not part of the proposal strongSwan selects
            return (f"strongSwan logs \"received ... authentication, but configured ..., continue with configured\" "
                    f"({src}) and " + ("checks the responder's authentication in this answer by the method it "
                                       "offered" if aggressive else "authenticates as it offered")
                    + ", so the peers disagree on the method")
        if kind == "ke":  # strongSwan made its KE value in its first group (phase1.c get_nonce_ke)
            return ("an initiator computes the Diffie-Hellman secret in the group of the KE payload it sent: strongSwan "
                    "cannot apply the answer's value to it (aggressive_mode.c: \"unable to apply received KE value\", "
                    "then INVALID-PAYLOAD-TYPE)")
        if kind == "ke-value":  # libreswan's extract_KE, with the answer's group (unpack.c)
            got, need = sa.answer_unfit.ke_octets or (0, 0)
            return (f"libreswan checks the answer's KE payload against the group the answer names and fails the "
                    f"exchange (\"responder AGGR KE payload is {got} bytes; {need} required\", then "
                    "INVALID-KEY-INFORMATION); strongSwan applies the value to the group of its own KE payload and "
                    "logs \"unable to apply received KE value\" when the length does not fit that one")
        if kind == "bundle":  # strongSwan's sa_payload.c get_proposals skips multi-protocol proposals
            return ("an initiator that offered the bundle takes it whole or fails the exchange; strongSwan does not "
                    "negotiate AH+ESP bundles at all (it skips a proposal with several protocols, then logs \"no "
                    "matching proposal found\"), libreswan fails on an answer without the protocol its policy "
                    "requires (\"no acceptable Proposal in IPsec SA\")")
        # the same lines in Main and Aggressive Mode (main_mode.c / aggressive_mode.c process_i)
        log, lib = (("no proposal found", "no acceptable Oakley Transform") if isinstance(sa, IkeSa) else
                    ("no matching proposal found", "no acceptable Proposal in IPsec SA"))
        return (f"an initiator checks the answer against its offer and fails the exchange (strongSwan logs "
                f"\"{log}\" and sends NO-PROPOSAL-CHOSEN; libreswan logs \"{lib}\")")
    # ike_init.c process_i's words changed in 6.0 ("peers proposal selection invalid" / "peer DH group
    # selection invalid" up to 5.9; "peer's proposal ..." / "peer's key exchange method ..." since)
    log = ("peer DH group selection invalid\" (6.0: \"peer's key exchange method selection invalid" if kind == "ke" else
           "peers proposal selection invalid\" (6.0: \"peer's proposal selection invalid" if isinstance(sa, IkeSa)
           else "no acceptable proposal found")
    close = ")" if "(6.0:" in log else ""
    return f"an initiator checks the answer against its offer and fails the exchange (strongSwan logs \"{log}\"{close})"


def _went_on(table: SaTable, sa, version: int) -> str | None:
    """What shows the initiator took an answer that does not fit its offer, or None."""
    if isinstance(sa, IkeSa):
        if version == 1:  # phase 1 is one exchange: going on is finishing it, or a Quick Mode after
            later = [x for x in sa.exchanges if x.exchange not in (2, 4)]
            if later:
                return f"{sa.initiator} went on to {exchange_label(later[0], 1)} on it"
            if sa.state == SaState.ESTABLISHED:
                return f"{sa.initiator} finished {sa.mode} Mode with it"
            # Phase 1 is one exchange of 4-6 messages: an initiator that sends its next message
            # (MM3 or AM3, not a copy of MM1) after the answer took it (RFC 2409 §5; strongSwan's
            # main_mode.c goes on with NEED_MORE, one that refuses sends nothing further).
            p1 = next((x for x in sa.exchanges if x.exchange in (2, 4)), None)
            if p1 is not None and p1.response_frames and len(p1.request_frames) - p1.retransmits >= 2:
                nxt = [f for f in p1.request_frames if f > p1.response_frames[0]]
                if nxt:
                    return f"{sa.initiator} sent its next {sa.mode} Mode message after the answer (frame {nxt[0]})"
            return None
        later = [x for x in sa.exchanges if x.exchange != 34]  # beyond IKE_SA_INIT
        return f"{sa.initiator} went on to {exchange_label(later[0], 2)} on it" if later else None
    sent = {f.spi for f in table.child_flows.get(sa.id, ()) if f.packets}
    return f"{sa.initiator} sends {sa.protocol} on it (SPI 0x{sa.spi_r:08x})" if sa.spi_r in sent else None


def _rekey_exchange(table: SaTable, sa) -> tuple[IkeSa, IkeExchange] | None:
    """(old IKE SA, its CREATE_CHILD_SA) of an IKE SA an IKEv2 rekey made, else None."""
    old = table.ike_sas.get(sa.rekeyed_from) if isinstance(sa, IkeSa) and sa.rekeyed_from else None
    x = next((x for x in old.exchanges if x.new_ike == sa.key), None) if old is not None else None
    return (old, x) if old is not None and x is not None else None


def _answer_notes(table: SaTable, ctx: RuleContext, sa) -> list:
    """The initiator's own log lines refusing (or, for the IKEv1 authentication method, overriding)
    this answer (charon's "answer_check" notes, see keys.charon): bound to the IKE SA by its SPIs
    (or the peers' addresses) and to the exchange that carried the answer by its message ID."""
    rekey = _rekey_exchange(table, sa)
    if rekey is not None:
        # an IKE SA rekey's answer is checked, and logged, under the old IKE SA whose CREATE_CHILD_SA
        # carried it (RFC 7296 §1.3.2; charon's <conn|uid> is the old SA's): by its message ID
        old, x = rekey
        return [n for n in peer_notes_about(ctx, old, sa.initiator, ("answer_check",))
                if n.data.get("about") == "ike" and n.data.get("exchange") == "CREATE_CHILD_SA"
                and n.data.get("msg_id") in (None, x.msg_id)]
    ike = sa if isinstance(sa, IkeSa) else child_ike(table, sa)
    about = "ike" if isinstance(sa, IkeSa) else "child"
    notes = [n for n in peer_notes_about(ctx, ike, sa.initiator, ("answer_check",)) if n.data.get("about") == about]
    if not notes or ike is None:
        return notes
    if isinstance(sa, IkeSa):  # the exchange that made it (an IKE SA rekey's check is logged under the old SA)
        return [n for n in notes if n.data.get("exchange") in (None, "IKE_SA_INIT", "ID_PROT", "AGGRESSIVE")]
    # a CHILD SA: the exchange that created it, by message ID (charon logs it in decimal for both versions)
    ids = {x.msg_id for x in ike.exchanges if x.new_child == sa.id}
    return [n for n in notes if n.data.get("msg_id") is None or n.data.get("msg_id") in ids]


def _selection_notes(table: SaTable, ctx: RuleContext, sa, checks: list) -> list:
    """The "received proposals:" / "configured proposals:" lines charon logs just before refusing
    an answer (proposal.c proposal_select, at level 1 when nothing matched): the answer as the
    initiator read it and what it is configured with, from the same log."""
    rekey = _rekey_exchange(table, sa)
    ike = rekey[0] if rekey is not None else sa if isinstance(sa, IkeSa) else child_ike(table, sa)
    near = set()
    for n in checks:
        path, _, line = n.source.rpartition(":")
        if line.isdigit() and n.data.get("check") == "proposal":
            near.update((path, int(line) - d) for d in (1, 2))
    if not near:
        return []
    out = []
    for n in peer_notes_about(ctx, ike, sa.initiator, ("received_proposals", "configured_proposals")):
        path, _, line = n.source.rpartition(":")
        if line.isdigit() and (path, int(line)) in near:
            out.append(n)
    return out


@rule(41, "IKE-ANSWER-NOT-OFFERED", (Severity.WARNING, Severity.ERROR),
      ref="RFC 7296 §3.3, §2.7, §1.2; RFC 2408 §4.2; RFC 2409 §5")
def r_answer_not_offered(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """A responder's accepted proposal that is not one the initiator offered (another number, a
    transform or key length it did not offer, a KE group other than the request's KE payload). An
    initiator checks the answer and fails the exchange; one that goes on anyway is lenient, and a
    stricter peer (or the next software update) fails there. Which: whether the capture shows the
    initiator using the SA afterwards. IKEv1: the answer's transform must be an offered one, ID
    and attributes alike but for the lifetimes (RFC 2407 §4.5.4 lets the responder shorten them);
    Aggressive Mode's answer takes the group of the request's KE payload (RFC 2409 §5); a Quick
    Mode bundle (AH+ESP under one number) is answered whole (RFC 2408 §4.2)."""
    sas: list[IkeSa | ChildSa] = [*table.ike_sas.values(), *table.child_sas.values()]
    for sa in sas:
        if not sa.answer_unfit:
            continue
        what, ref = ("IKE SA", sa.key) if isinstance(sa, IkeSa) else (f"CHILD SA #{sa.id}", f"child:{sa.id}")
        offered = ", ".join(sa.offered) or "(not visible)"
        version = _version(table, sa)
        # Aggressive Mode: offer, KE payloads and answer in its first two messages (RFC 2409 §5)
        aggressive = isinstance(sa, IkeSa) and version == 1 and sa.mode == "Aggressive"
        if aggressive:
            what, offered = "IKE SA (Aggressive Mode)", f"{offered} in Aggressive Mode's first message"
        went_on = _went_on(table, sa, version)
        notes = _answer_notes(table, ctx, sa)
        refused = [n for n in notes if n.data.get("check") != "auth"]
        if refused:  # the initiator's own log says it failed the exchange on this answer
            then = (f" {sa.initiator}'s log says it refused the answer ({note_src(refused[0])}: "
                    f"\"{refused[0].text}\")" + (f", yet {went_on}." if went_on else "."))
        elif went_on:
            then = f" Yet {went_on}: it took the answer, which a stricter initiator refuses."
        else:
            then = f" Nothing in the capture shows {sa.initiator} using it: the likely reason the SA did not come up."
        if notes and not refused:  # strongSwan's auth-method line: it went on with its own method
            then += f" {sa.initiator}'s log ({note_src(notes[0])}): \"{notes[0].text}\"."
        check = _unfit_check(sa, version)
        yield Finding(
            code="IKE-ANSWER-NOT-OFFERED", severity=Severity.WARNING if went_on else Severity.ERROR,
            title=f"{what}: {sa.responder} " + ("renumbered the proposal it accepted" if sa.answer_unfit.kind == "number"
                                                else f"answered with a proposal {sa.initiator} did not offer"),
            explanation=f"{sa.initiator} offered {offered}; {sa.responder} answered {sa.proposal}"
            + (" in the second" if aggressive else "") + f": {sa.answer_unfit.reason}. {check[0].upper()}{check[1:]}.{then}",
            frames=sa.proposal_frames, sa=ref,
            hint=f"The fault is {sa.responder}'s proposal selection: it must answer with "
            + (f"the group of {sa.initiator}'s KE payload (Aggressive Mode cannot negotiate it; use Main Mode to "
               "offer several groups)" if sa.answer_unfit.kind in ("ke", "ke-value") and version == 1 else
               "an offered bundle whole (every protocol under its number)" if sa.answer_unfit.kind == "bundle" else
               "one of the offered proposals, numbered as offered")
            + ". Check its software version and proposal configuration.",
            ts=sa.created_ts, evidence=(*_selection_notes(table, ctx, sa, notes), *notes))


@rule(40, "IKE-WEAK-OFFERED", Severity.INFO, ref="RFC 8247 §2.1, §2.4; RFC 8221 §5")
def r_weak_offered(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Weak algorithms or DH groups offered (not negotiated): a downgrade an attacker or a misconfigured peer can pick."""
    # One finding per offering peer, peer pair and SA kind: rekeys repeat the same offer.
    groups: dict[tuple[str, str, str], dict] = {}
    for sa in table.ike_sas.values():
        chosen = set(weak_parts(sa.proposal)) if sa.proposal else set()
        for prop in sa.offered:
            extra = [w for w in weak_parts(prop) if w not in chosen]
            if extra:
                g = groups.setdefault(("IKE", sa.initiator, sa.responder), {"weak": {}, "sas": [], "frames": [],
                                                                             "ts": sa.created_ts, "ref": sa.key})
                g["weak"].setdefault(prop, extra)
                if sa.key not in g["sas"]:
                    g["sas"].append(sa.key)
                    g["frames"].extend(sa.frames[:1])
    for c in table.child_sas.values():
        chosen = set(weak_parts(c.proposal)) if c.proposal else set()
        for prop in c.offered:
            extra = [w for w in weak_parts(prop) if w not in chosen]
            if extra:
                g = groups.setdefault(("CHILD", c.initiator, c.responder), {"weak": {}, "sas": [], "frames": [],
                                                                              "ts": c.created_ts, "ref": f"child:{c.id}"})
                g["weak"].setdefault(prop, extra)
                if c.id not in g["sas"]:
                    g["sas"].append(c.id)
                    g["frames"].extend(c.frames[:1])
    for (kind, init, resp), g in groups.items():
        labels = list(dict.fromkeys(w for ws in g["weak"].values() for w in ws))
        props = ", ".join(g["weak"])
        n = len(g["sas"])
        what = "IKE SA" if kind == "IKE" else "CHILD SA"
        yield Finding(
            code="IKE-WEAK-OFFERED", severity=Severity.INFO,
            title=f"{init} offers {'phased-out' if phasing_out_only(labels) else 'weak'} {what} algorithms: "
            f"{', '.join(labels)}",
            explanation=f"{init} offered {props} to {resp} in {plural(n, what + ' negotiation')}. "
            f"{weak_words(labels)}. While {'it is' if len(labels) == 1 else 'they are'} offered, a responder "
            f"configured (or tricked) to prefer {'it' if len(labels) == 1 else 'them'} can pick {'it' if len(labels) == 1 else 'them'}.",
            frames=tuple(g["frames"][:4]), sa=g["ref"],
            hint=f"Remove {', '.join(labels)} from {init}'s "
            + ("proposals (swanctl.conf connection)" if kind == "IKE" else "esp_proposals (children section)")
            + ", e.g. aes256gcm16-prfsha256-ecp256.", ts=g["ts"])


@rule(13, "IKE-CHILD-LIKELY-REFUSED", Severity.WARNING, ref="RFC 7296 §1.2, §2.21.3")
def r_unknown_without_keys(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Without keys: IKE_AUTH answered, no ESP, and the IKE SA deleted at once (or, without certificates, a response too small for SA and TS payloads): CHILD SA refused."""
    for sa in table.ike_sas.values():
        if sa.decrypted or sa.state == SaState.FAILED or sa.version != 2:
            continue
        auth = next((x for x in sa.exchanges if x.exchange == 35 and x.response_frames), None)
        if auth is None or auth.response_ts is None:
            continue
        if any({k[0], k[1]} == {sa.initiator, sa.responder} for k in table.flows):
            continue  # ESP between the peers: some CHILD SA exists
        later = [x for x in sa.exchanges if (x.request_ts or 0.0) > auth.response_ts]
        if any(x.exchange == 36 for x in later):
            continue  # a CREATE_CHILD_SA followed: the IKE SA is in use
        # Evidence 1: the initiator's next step is an INFORMATIONAL within seconds and nothing
        # follows it. Implementations tear the IKE SA down when the CHILD SA it was created for
        # is refused in IKE_AUTH (RFC 7296 §2.21.3 lets the IKE SA stay, but strongSwan and
        # libreswan delete it when it has no CHILD SA); a working tunnel is not deleted at once.
        nxt = later[0] if later else None
        torn_down = (nxt is not None and nxt.exchange == 37 and nxt.requester == auth.requester
                     and (nxt.request_ts or 0.0) - auth.response_ts <= 3.0 and len(later) == 1)
        # Evidence 2: the response lacks SA, TSi and TSr (about 90-140 bytes) that an accepted
        # CHILD SA adds. That holds only when neither message carries certificates: with
        # CERT/CERTREQ the two sides' sizes differ by whatever the certificates weigh (public
        # captures with certificate auth showed 10 % smaller responses for working tunnels).
        smaller = (not sa.cert_requested and auth.request_size - auth.response_size >= 100
                   and auth.response_size < 0.75 * auth.request_size)
        if not torn_down and not smaller:
            continue
        because = []
        if torn_down:
            because.append(f"{auth.requester} deleted the IKE SA {(nxt.request_ts or 0.0) - auth.response_ts:.1f} s "
                           f"after IKE_AUTH (INFORMATIONAL, frame {nxt.request_frames[0]}) without any ESP, what "
                           "an initiator does when the CHILD SA it asked for was refused")
        if smaller:
            because.append(f"the IKE_AUTH response ({auth.response_size} bytes) is {auth.request_size - auth.response_size} "
                           f"bytes smaller than the request ({auth.request_size} bytes) with no certificates "
                           "requested: it most likely lacks the SA and traffic selector payloads")
        yield Finding(
            code="IKE-CHILD-LIKELY-REFUSED", severity=Severity.WARNING,
            title=f"CHILD SA between {sa.initiator} and {sa.responder} probably refused (encrypted IKE_AUTH, no keys)",
            explanation=f"IKE_AUTH between {sa.initiator} and {sa.responder} was answered, but no CHILD SA "
            f"seems to have been created: {'; and '.join(because)}. The refusal (NO_PROPOSAL_CHOSEN, "
            "TS_UNACCEPTABLE, ...) is in the encrypted payloads.",
            frames=frames_of(auth.request_frames[:1], auth.response_frames[:1],
                             nxt.request_frames[:1] if torn_down and nxt else ()), sa=sa.key,
            hint="Load the IKE keys (-k charon log with 'ike 4'/'chd 4' loglevel, or an ikev2_decryption_table) "
            "to see the exact notify.", ts=auth.request_ts)
