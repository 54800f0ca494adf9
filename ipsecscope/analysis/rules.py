"""Diagnosis rules: each one reads the SA table and returns findings with a stable code.

Rules are small numbered functions registered with :func:`rule`; :func:`evaluate` runs them all
(plus any rules plugins contribute, see :mod:`ipsecscope.plugins`). A rule never raises on odd
data: if it does, :func:`evaluate` reports that as an ``ENGINE-RULE-ERROR`` finding and goes on.

Severity: ERROR = the tunnel (or part of it) is broken; WARNING = degraded or risky; INFO =
noteworthy. Codes are part of the public interface (JSON ``ipsecscope.findings/1``, exit codes):
never rename one; add new ones.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..model.iana import Ikev1Exchange, NotifyType
from ..model.keys import PeerLogNote
from ..model.sa import ChildSa, EspFlow, Finding, IkeExchange, IkeSa, SaState, SaTable, Severity
from ..state import names as N
from ..state.child_sa import ts_text

RuleFn = Callable[["SaTable", "RuleContext"], Iterable[Finding]]


@dataclass(slots=True)
class RuleContext:
    """What rules may know beyond the table: whether keys were supplied, thresholds."""

    keys_given: bool = False
    session: object | None = None
    loss_warn_ratio: float = 0.01  # lost/expected above this: WARNING, else INFO
    rekey_overlap_warn_s: float = 10.0
    after_delete_grace_s: float = 1.0  # in-flight packets right after a Delete are normal
    extra: dict = field(default_factory=dict)
    # What the peers' own logs say (KeyStore.peer_notes from charon logs given with -k).
    peer_notes: list[PeerLogNote] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Rule:
    number: int
    codes: tuple[str, ...]
    fn: RuleFn
    doc: str


REGISTRY: list[Rule] = []


def rule(number: int, *codes: str) -> Callable[[RuleFn], RuleFn]:
    """Register a rule. ``number`` orders the output of ``--list-rules`` and never changes."""

    def deco(fn: RuleFn) -> RuleFn:
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else fn.__name__
        REGISTRY.append(Rule(number, codes, fn, doc))
        REGISTRY.sort(key=lambda r: r.number)
        return fn

    return deco


def make_context(ctx: object | None) -> RuleContext:
    if isinstance(ctx, RuleContext):
        return ctx
    keys = getattr(ctx, "keys", None)
    try:
        given = keys is not None and len(keys) > 0
    except TypeError:
        given = bool(keys)
    return RuleContext(keys_given=given, session=ctx, peer_notes=list(getattr(keys, "peer_notes", None) or ()))


def all_rules() -> list[tuple[str, RuleFn]]:
    """(name, function) of built-in and plugin rules, built-ins first."""
    out = [(f"R{r.number:02d}", r.fn) for r in REGISTRY]
    from ..plugins import plugin_rules

    out.extend(plugin_rules())
    return out


def evaluate(table: SaTable, ctx: object | None = None) -> list[Finding]:
    """Run every rule over ``table``. ``ctx`` is a :class:`RuleContext` or the Session."""
    rc = make_context(ctx)
    out: list[Finding] = []
    for name, fn in all_rules():
        try:
            out.extend(fn(table, rc) or ())
        except Exception as exc:  # noqa: BLE001 - one broken rule must not hide the others
            out.append(Finding("ENGINE-RULE-ERROR", Severity.INFO, f"rule {name} failed: {type(exc).__name__}",
                               f"The diagnosis rule {name} raised {type(exc).__name__}: {exc}. The other "
                               "findings are unaffected.", hint="Please report this with the capture."))
    seen: set[tuple] = set()
    uniq = []
    for f in out:
        k = (f.code, f.sa, f.frames, f.title)
        if k not in seen:
            seen.add(k)
            uniq.append(f)
    uniq.sort(key=lambda f: (-int(f.severity), f.ts if f.ts is not None else 0.0, f.code))
    return uniq


# ---------------------------------------------------------------------------------- helpers


def _t(ts: float | None) -> str:
    if ts is None:
        return "?"
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")
    except (ValueError, OverflowError, OSError):  # a corrupted frame timestamp (year > 9999)
        return f"{ts:.0f}"


def _dur(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _ex(x: IkeExchange, version: int) -> str:
    return N.exchange_name(x.exchange, version)


def _other(sa: IkeSa, addr: str) -> str:
    return sa.responder if addr == sa.initiator else sa.initiator


def _child_ike(table: SaTable, c: ChildSa) -> IkeSa | None:
    return table.ike_sas.get(c.ike_sa) if c.ike_sa else None


def _frames(*lists: Iterable[int]) -> tuple[int, ...]:
    out: list[int] = []
    for lst in lists:
        for f in lst:
            if f not in out:
                out.append(f)
    return tuple(out)


def _flow_ref(f: EspFlow) -> str:
    return f"esp:{f.src}>{f.dst}:0x{f.spi:08x}"


def _addr_eq(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return ipaddress.ip_address(a.strip("[]")) == ipaddress.ip_address(b.strip("[]"))
    except ValueError:
        return a == b


def _notes(ctx: RuleContext, sa: IkeSa | None, by: str, kinds: Iterable[str]) -> list[PeerLogNote]:
    """Notes from the log of the peer at address ``by`` about IKE SA ``sa``.

    A note counts only when its log says which host wrote it (``local``) and that host is ``by``:
    we never attribute a line to a peer on a guess. When the log named the IKE SA's SPIs, the
    initiator SPI must match (the responder SPI may still be zero in its log, e.g. for an
    IKE_SA_INIT it refused); otherwise the other address must be this SA's other peer.
    """
    if sa is None or not ctx.peer_notes:
        return []
    kinds = set(kinds)
    other = _other(sa, by)
    out = []
    for n in ctx.peer_notes:
        if n.kind not in kinds or not _addr_eq(n.local, by):
            continue
        if n.ike_sa and "_" in n.ike_sa:
            if n.ike_sa.split("_", 1)[0] != sa.ike_spi_i.hex():
                continue
        elif not _addr_eq(n.remote, other):
            continue
        out.append(n)
    return out


def _src(n: PeerLogNote) -> str:
    """``charon-right.log:177`` (the file name without its directories) for explanations."""
    path, _, line = n.source.rpartition(":")
    return f"{path.replace(chr(92), '/').rsplit('/', 1)[-1]}:{line}" if path else n.source


def _uniq(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _exchange_of_child(sa: IkeSa | None, c: ChildSa) -> IkeExchange | None:
    if sa is None:
        return None
    return next((x for x in sa.exchanges if x.new_child == c.id), None)


# ---------------------------------------------------------------------------------- IKE negotiation


@rule(1, "IKE-NO-PROPOSAL")
def r_no_proposal(table: SaTable, ctx: RuleContext):
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
            resp = _other(sa, req)
            child = table.child_sas.get(x.new_child) if x.new_child else None
            if child is not None or x.exchange in (35, 36) and not x.rekey_ike:
                what = f"CHILD SA #{child.id}" if child else "CHILD SA"
                wire = list(child.offered) if child and child.offered else []
                ref = f"child:{child.id}" if child else sa.key
                knob = "esp_proposals (swanctl.conf children section)"
                short_knob, protos, where = "esp_proposals", ("ESP", "AH"), "swanctl.conf children section"
            else:
                what = "IKE SA"
                wire = list(sa.offered)
                ref = sa.key
                knob = "proposals (swanctl.conf connection)"
                short_knob, protos, where = "proposals", ("IKE",), "swanctl.conf connection"
            offered = ", ".join(wire) or "(not visible)"
            other = sorted(accepted_by.get(resp, set()) - set(sa.offered))
            accepts = (f"; in this capture {resp} accepted {', '.join(other)} for other IKE SAs" if other
                       else "; the responder does not say which proposals it would accept")
            frames = _frames(x.request_frames[:1], x.response_frames[:1])
            title = f"{what}: no proposal chosen — {resp} rejected every proposal {req} offered"
            # The responder's own log ("configured proposals: ESP:AES_GCM_16_256/NO_EXT_SEQ") says
            # what it wanted; the wire never does (RFC 7296 §3.10.1: the notify carries no data).
            notes = [n for n in _notes(ctx, sa, resp, ("configured_proposals", "received_proposals"))
                     if n.data.get("proto") in protos]
            conf = [n for n in notes if n.kind == "configured_proposals"]
            if conf:
                configured = _uniq(k for n in conf for k in n.data.get("swan", ()))
                if not wire:
                    wire = _uniq(k for n in notes if n.kind == "received_proposals" for k in n.data.get("swan", ()))
                    offered = f"{', '.join(wire)} (per {resp}'s log)" if wire else offered
                yield Finding(
                    "IKE-NO-PROPOSAL", Severity.ERROR, title,
                    f"Responder {resp} rejected the {what} proposal in {_ex(x, sa.version)} (NO_PROPOSAL_CHOSEN). "
                    f"{req} offered {offered}; {resp} is configured with {', '.join(configured)} "
                    f"(its log, {_src(conf[0])}: \"{conf[0].text}\"). No proposal is configured on both peers.",
                    frames, ref,
                    f"Add {configured[0]} to {short_knob} on {req}"
                    + (f", or {wire[0]} to {resp}'s" if wire else f", or {req}'s proposal to {resp}'s")
                    + f" ({where}).", x.response_ts, tuple(notes))
                continue
            yield Finding(
                "IKE-NO-PROPOSAL", Severity.ERROR, title,
                f"Responder {resp} rejected the {what} proposal in {_ex(x, sa.version)} (NO_PROPOSAL_CHOSEN): "
                f"{req} offered {offered}{accepts}. No algorithm set is configured on both peers.",
                frames, ref,
                f"Make {knob} on {req} and {resp} share at least one proposal, e.g. add the responder's "
                "proposal to the initiator's list (check the responder's log for what it has configured).",
                x.response_ts)


@rule(2, "IKE-INVALID-KE")
def r_invalid_ke(table: SaTable, ctx: RuleContext):
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
            resp = _other(sa, req)
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
            notes = [n for n in _notes(ctx, sa, resp, ("dh",)) if n.data.get("configured")]
            log = ""
            if notes and x.exchange != 36:
                n = notes[0]
                log = (f" {resp}'s log ({_src(n)}: \"{n.text}\") confirms it: the proposal {resp} selected "
                       f"from its configuration uses {n.data['configured']}, not {n.data['received']}.")
            if ok:
                yield Finding(
                    "IKE-INVALID-KE", Severity.WARNING,
                    f"{label}: {resp} asked for {wanted[0]}, the retry succeeded",
                    f"{req} sent its {what} as {sent}; {resp} answered INVALID_KE_PAYLOAD asking for "
                    f"{', '.join(wanted)}. {req} retried with that group and the negotiation went on. "
                    "Every new SA costs one extra round trip." + log,
                    _frames(x.request_frames[:1], x.response_frames[:1]), sa.key,
                    f"Put {wanted[0]} first in {req}'s proposal (swanctl.conf proposals/esp_proposals) so the "
                    "first KE payload already uses it.", x.response_ts, tuple(notes) if log else ())
            else:
                yield Finding(
                    "IKE-INVALID-KE", Severity.ERROR,
                    f"{label}: {resp} asked for {wanted[0]}, no successful retry",
                    f"{req} sent its {what} as {sent}; {resp} answered INVALID_KE_PAYLOAD asking for "
                    f"{', '.join(wanted)}, and no retry with that group succeeded in this capture." + log,
                    _frames(x.request_frames[:1], x.response_frames[:1]), sa.key,
                    f"Configure a common DH group on both peers (add {wanted[0]} to {req}'s proposals).",
                    x.response_ts, tuple(notes) if log else ())


def _auth_log(ctx: RuleContext, sa: IkeSa, rejecter: str, rejected: str) -> tuple[str, str, tuple]:
    """(explanation suffix, hint, notes) from the rejecting peer's log, or ("", "", ())."""
    notes = _notes(ctx, sa, rejecter, ("auth",))
    if not notes:
        return "", "", ()
    n = notes[0]
    d = n.data
    quote = f" {rejecter}'s log ({_src(n)}): \"{n.text}\""
    reason = d.get("reason")
    ids = f"'{d.get('local_id', '?')}' - '{d.get('remote_id', '?')}'"
    if reason == "psk_mismatch":
        # charon found a PSK for the identity pair but the AUTH MAC (RFC 7296 §2.15) computed with
        # it differs from the one received: the peers hold different secrets.
        return (quote + f": it has a pre-shared key for {ids}, but the AUTH payload {rejected} sent was "
                "computed with a different one, so the two peers' PSKs differ.",
                f"Set the same pre-shared key for {ids} on {rejected} and {rejecter} (swanctl.conf secrets, "
                "ike-... with both ids).", (n,))
    if reason == "no_psk":
        return (quote + f": it has no pre-shared key at all for {ids}.",
                f"Add a shared key for {ids} to {rejecter}'s secrets, or fix the identities (local.id on "
                f"{rejected}, remote.id on {rejecter}).", (n,))
    if reason == "untrusted_key":
        return (quote + f": it does not trust the {d.get('key_type', '')} key of '{d.get('remote_id', '?')}'.",
                f"Install the CA (or the peer certificate) of '{d.get('remote_id', '?')}' on {rejecter}.", (n,))
    if reason == "no_peer_config":
        return (quote + f": no connection on {rejecter} matches {rejected}'s identities and addresses.",
                f"Check local.id/remote.id and local_addrs/remote_addrs of {rejecter}'s connection.", (n,))
    return quote + ".", "", (n,)


@rule(3, "IKE-AUTH-FAILED")
def r_auth_failed(table: SaTable, ctx: RuleContext):
    """Authentication failure (AUTHENTICATION_FAILED), also guessed from encrypted IKE_AUTH sizes."""
    for sa in table.ike_sas.values():
        if sa.failure is None or "AUTHENTICATION" not in sa.failure and "AUTH refused" not in sa.failure:
            continue
        x = next((x for x in sa.exchanges if sa.failure_frame in x.response_frames + x.request_frames), None)
        frames = _frames(x.request_frames[:1] if x else (), [sa.failure_frame] if sa.failure_frame else ())
        sender = None
        if x is not None and sa.failure_frame in x.response_frames:
            sender = _other(sa, x.requester)
        elif x is not None:
            sender = x.requester
        rejecter = sender or sa.responder
        rejected = _other(sa, rejecter)
        ids = f" (IDs: {sa.id_i or '?'} -> {sa.id_r or '?'})" if sa.id_i or sa.id_r else ""
        log, log_hint, notes = _auth_log(ctx, sa, rejecter, rejected)
        if sa.state_inferred and sa.version == 1:
            p1 = sa.exchanges[0].request_frames if sa.exchanges else []
            frames = _frames(p1[2:3], [sa.failure_frame] if sa.failure_frame else ())
            yield Finding(
                "IKE-AUTH-FAILED", Severity.ERROR,
                f"Main Mode refused by {rejecter} after {rejected}'s MM5 (most likely a PSK mismatch)",
                f"{rejected} sent its encrypted identity and HASH (MM5) and {rejecter} answered with an "
                "encrypted Informational instead of MM6, every time it was retransmitted: it could not "
                "verify MM5. In IKEv1 the phase-1 keys derive from the pre-shared key (RFC 2409 §5.4), "
                "so different PSKs make MM5 unreadable to the responder and its error notify unreadable "
                "to anyone without its keys." + log,
                frames, sa.key,
                log_hint or f"Check that {sa.initiator} and {sa.responder} use the same pre-shared key for "
                "these identities (or that certificates are trusted); the responder's log says 'invalid HASH' "
                "or similar.", sa.failed_ts, notes)
        elif sa.state_inferred:
            yield Finding(
                "IKE-AUTH-FAILED", Severity.ERROR,
                f"IKE_AUTH refused by {rejecter} (encrypted; most likely authentication failed)",
                f"{rejecter} answered {rejected}'s IKE_AUTH with a message too small to carry an AUTH "
                "payload, and the IKE SA was not used afterwards: an error notify, almost always "
                "AUTHENTICATION_FAILED (wrong PSK, certificate or identity). Without the IKE keys the "
                "notify itself cannot be read." + log,
                frames, sa.key,
                log_hint or "Give the IKE SA keys (-k charon log / ikev2_decryption_table) to confirm; check "
                "that both peers use the same PSK for these identities, or that the certificate chain is trusted.",
                sa.failed_ts, notes)
        else:
            yield Finding(
                "IKE-AUTH-FAILED", Severity.ERROR,
                f"Authentication failed: {rejecter} rejected {rejected}'s AUTH",
                f"{rejecter} sent AUTHENTICATION_FAILED: it could not verify the AUTH payload of {rejected}"
                f"{ids} ({sa.auth_method or 'method not visible'}). The IKE SA and its CHILD SAs are not set up."
                + log, frames, sa.key,
                log_hint or "Check the pre-shared key / certificates and the identities (local.id, remote.id) on "
                "both peers; the rejecting peer's log names the reason.", sa.failed_ts, notes)


def _covered(want: list[str], have: list[str]) -> bool:
    """Every selector in ``want`` (CIDR text) lies inside one of ``have``."""
    try:
        nets = [ipaddress.ip_network(h.split("[")[0], strict=False) for h in have]
        return all(any(ipaddress.ip_network(w.split("[")[0], strict=False).subnet_of(n) for n in nets
                       if n.version == ipaddress.ip_network(w.split("[")[0], strict=False).version)
                   for w in want)
    except ValueError:
        return False


def _ts_log(ctx: RuleContext, table: SaTable, c: ChildSa) -> tuple[str, str, tuple]:
    """(explanation suffix, hint, notes) from the responder's log about a refused CHILD SA."""
    sa = _child_ike(table, c)
    notes = _notes(ctx, sa, c.responder, ("ts_config",))
    if not notes:
        return "", "", ()
    # The connection's own definition (vici load-conn dump, CFG 2) in the same log, found by the
    # connection name charon logged for this IKE SA: the configured local_ts/remote_ts.
    files = {n.source.rpartition(":")[0] for n in notes}
    conns = {n.conn for n in notes if n.conn}
    defs = [n for n in ctx.peer_notes if n.kind == "conn_config" and n.conn in conns
            and n.source.rpartition(":")[0] in files]
    parts: list[str] = []
    configured: dict[str, list[str]] = {}
    for n in notes:
        ev = n.data.get("event")
        if ev in ("proposing", "selecting") and n.data.get("ts"):
            # charon's CFG 2 lines list what the child config holds: "us" = local_ts, "other" = remote_ts
            side = "local_ts" if n.data.get("side") == "us" else "remote_ts"
            configured[side] = _uniq([*configured.get(side, []), *n.data["ts"]])
        elif ev != "looking":
            parts.append(f"{_src(n)}: \"{n.text}\"")
    where = ""
    for d in defs:
        for child, cfg in d.data.get("children", {}).items():
            for side in ("local_ts", "remote_ts"):
                if cfg.get(side):
                    configured[side] = _uniq([*configured.get(side, []), *cfg[side]])
            where = f" (connection {d.conn}, child {child}; {_src(d)})"
    text = f" {c.responder}'s log ({'; '.join(parts)})" if parts else f" {c.responder}'s log"
    unacc = next((n for n in notes if n.data.get("event") in ("unacceptable", "looking")), None)
    mine = unacc.data.get("local", []) if unacc else []
    theirs = unacc.data.get("remote", []) if unacc else []
    hint = ""
    if configured:
        cfg = ", ".join(f"{k} {' '.join(v)}" for k, v in sorted(configured.items()))
        text += f": it is configured with {cfg}{where}."
        fixes = []
        if mine and configured.get("local_ts") and not _covered(mine, configured["local_ts"]):
            fixes.append(f"set remote_ts = {', '.join(configured['local_ts'])} on {c.initiator} (it asks for "
                         f"{' '.join(mine)}) or add {' '.join(mine)} to local_ts on {c.responder}")
        if theirs and configured.get("remote_ts") and not _covered(theirs, configured["remote_ts"]):
            fixes.append(f"set local_ts = {', '.join(configured['remote_ts'])} on {c.initiator} (it asks for "
                         f"{' '.join(theirs)}) or add {' '.join(theirs)} to remote_ts on {c.responder}")
        if fixes:
            hint = "; ".join(fixes)
            hint = hint[0].upper() + hint[1:] + "."
        else:
            hint = (f"Make {c.initiator}'s selectors mirror {c.responder}'s ({cfg} there): the initiator's "
                    "local_ts inside the responder's remote_ts and its remote_ts inside the responder's local_ts.")
    elif unacc is not None:
        # "traffic selectors A === B unacceptable": A is the responder's side as the initiator asked for it
        text += (f": it has no child config whose local_ts covers {' '.join(mine)} and whose remote_ts covers "
                 f"{' '.join(theirs)}.")
        hint = (f"Either {c.initiator}'s remote_ts ({' '.join(mine)}) is not the subnet behind {c.responder}, or "
                f"{c.responder} lacks local_ts {' '.join(mine)} / remote_ts {' '.join(theirs)}: make the two "
                "peers' local_ts/remote_ts mirror each other.")
    else:
        text += "."
    return text, hint, tuple(notes) + tuple(defs)


@rule(4, "IKE-TS-UNACCEPTABLE", "IKE-TS-NARROWED")
def r_ts(table: SaTable, ctx: RuleContext):
    """Traffic selector mismatch (TS_UNACCEPTABLE) and narrowing, with both selector sets."""
    for c in table.child_sas.values():
        if c.failure in ("TS_UNACCEPTABLE", "INVALID_SELECTORS"):
            log, log_hint, notes = _ts_log(ctx, table, c)
            yield Finding(
                "IKE-TS-UNACCEPTABLE", Severity.ERROR,
                f"CHILD SA #{c.id}: {c.responder} refused the traffic selectors (TS_UNACCEPTABLE)",
                f"{c.initiator} proposed TSi {ts_text(c.ts_i_offered)} (its side) and TSr "
                f"{ts_text(c.ts_r_offered)} (the responder's side); {c.responder} has no policy that "
                "overlaps them and answered TS_UNACCEPTABLE, so no CHILD SA was created." + log,
                _frames([c.created_frame] if c.created_frame else (), [c.failure_frame] if c.failure_frame else ()),
                f"child:{c.id}",
                log_hint or "Make local_ts/remote_ts mirror each other: the initiator's local_ts must fall inside "
                "the responder's remote_ts and vice versa.", c.created_ts, notes)
        elif c.state in (SaState.ESTABLISHED, SaState.REKEYED, SaState.DELETED) and c.ts_i_offered and (
                tuple(c.ts_i) != tuple(c.ts_i_offered) or tuple(c.ts_r) != tuple(c.ts_r_offered)) and c.ts_i:
            yield Finding(
                "IKE-TS-NARROWED", Severity.INFO,
                f"CHILD SA #{c.id}: traffic selectors narrowed by {c.responder}",
                f"{c.initiator} proposed TSi {ts_text(c.ts_i_offered)} / TSr {ts_text(c.ts_r_offered)}; "
                f"{c.responder} accepted only TSi {ts_text(c.ts_i)} / TSr {ts_text(c.ts_r)} (RFC 7296 §2.9). "
                "Traffic outside the narrowed selectors is not carried by this SA.",
                _frames(c.frames[:2]), f"child:{c.id}",
                "If the narrowing is not intended, align local_ts/remote_ts on both peers.", c.created_ts)


_CHILD_FAIL_HINT = {
    "SINGLE_PAIR_REQUIRED": "the responder accepts only one address pair: narrow the initiator's selectors",
    "INTERNAL_ADDRESS_FAILURE": "the responder could not assign a virtual IP: check its address pool",
    "FAILED_CP_REQUIRED": "the responder requires a configuration payload: set vips on the initiator",
    "NO_ADDITIONAL_SAS": "the responder accepts no more CHILD SAs on this IKE SA",
    "TEMPORARY_FAILURE": "the responder is busy (often a rekey collision); the initiator should retry",
    "CHILD_SA_NOT_FOUND": "the CHILD SA to rekey no longer exists on the responder",
}


@rule(5, "IKE-CHILD-REFUSED")
def r_child_refused(table: SaTable, ctx: RuleContext):
    """A CHILD SA refused for a reason other than proposals or selectors."""
    for c in table.child_sas.values():
        if c.state != SaState.FAILED or c.failure in (None, "NO_PROPOSAL_CHOSEN", "TS_UNACCEPTABLE",
                                                      "INVALID_SELECTORS", "AUTHENTICATION_FAILED",
                                                      "INVALID_KE_PAYLOAD"):
            continue
        sev = Severity.WARNING if c.failure in ("TEMPORARY_FAILURE", "CHILD_SA_NOT_FOUND") else Severity.ERROR
        yield Finding(
            "IKE-CHILD-REFUSED", sev, f"CHILD SA #{c.id} refused by {c.responder}: {c.failure}",
            f"{c.initiator} asked {c.responder} for a CHILD SA ({c.created_by}); {c.responder} refused "
            f"with {c.failure}.", _frames([c.created_frame] if c.created_frame else (),
                                          [c.failure_frame] if c.failure_frame else ()),
            f"child:{c.id}", _CHILD_FAIL_HINT.get(c.failure, "See the responder's log for the reason."),
            c.created_ts)


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
    peer = _other(sa, req)
    later = any(y.requester == peer and (y.request_ts or 0) > (first.request_ts or 0) for y in sa.exchanges)
    waited = (end - first.request_ts) if end is not None and first.request_ts is not None else 0.0
    if later or (len(run) < 2 and waited < 5):
        return None
    tries = sum(1 + y.retransmits for y in run)
    seqs = list(dict.fromkeys(str(y.dpd_seq) for y in run if y.dpd_seq is not None and y.dpd_seq >= 0))
    return Finding(
        "IKE-DEAD-PEER", Severity.ERROR,
        f"Dead peer: {peer} stopped answering {req}'s DPD (R-U-THERE sent {tries}×, no R-U-THERE-ACK)",
        f"After the ISAKMP SA was up, {req} probed {peer} with IKEv1 dead peer detection (RFC 3706): "
        f"{tries} R-U-THERE notification(s) over {_dur(waited)} (DPD sequence number{'s' if len(seqs) > 1 else ''} "
        f"{', '.join(seqs) or 'not given'}), and {peer} acknowledged none of them. Either {peer} is down/rebooted, or the path between "
        "them drops IKE now.",
        _frames([f for y in run for f in y.request_frames][:6]), sa.key,
        f"Check that {peer} is running and reachable (UDP {first.responder_port or 500}); "
        "dpd_delay/dpd_timeout decide how fast the peer is declared dead.", first.request_ts)


@rule(6, "IKE-NO-RESPONSE", "IKE-DEAD-PEER", "IKE-UDP4500-BLOCKED")
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
            peer = _other(sa, req)
            waited = (end - x.request_ts) if end is not None and x.request_ts is not None else 0.0
            tries = 1 + x.retransmits
            frames = _frames(x.request_frames[:6])
            exn = _ex(x, sa.version)
            init_answered = any(y.exchange == 34 and y.response_frames for y in sa.exchanges)
            if (x.exchange == 35 and init_answered and x.responder_port == 4500
                    and all(y.responder_port != 4500 for y in sa.exchanges if y.response_frames)):
                yield Finding(
                    "IKE-UDP4500-BLOCKED", Severity.ERROR,
                    f"UDP 4500 to {peer} looks blocked: IKE_SA_INIT answered on 500, IKE_AUTH on 4500 never",
                    f"{req} and {peer} completed IKE_SA_INIT on UDP 500 and moved to UDP 4500 (NAT "
                    f"traversal, RFC 7296 §2.23), but {peer} never answered the IKE_AUTH request sent "
                    f"{tries} time(s) over {_dur(waited)}. A firewall or NAT between them drops UDP 4500.",
                    frames, sa.key,
                    "Allow UDP 4500 in both directions between the peers (and ESP-in-UDP after it).",
                    x.request_ts)
            elif sa.state in (SaState.ESTABLISHED, SaState.REKEYED) and x.exchange != 34:
                yield Finding(
                    "IKE-DEAD-PEER", Severity.ERROR,
                    f"Dead peer: {peer} stopped answering {req} ({exn} sent {tries}×, no reply)",
                    f"After the IKE SA was up, {req} sent an {exn} request (message ID {x.msg_id}) "
                    f"{tries} time(s) over {_dur(waited)} and {peer} never answered. Either {peer} is "
                    "down/rebooted, or the path between them drops IKE now.",
                    frames, sa.key,
                    f"Check that {peer} is running and reachable (UDP {x.responder_port or 500}); "
                    "dpd_delay/dpd_timeout decide how fast the peer is declared dead.", x.request_ts)
            else:
                sev = Severity.ERROR if tries > 1 or waited > 5 else Severity.WARNING
                yield Finding(
                    "IKE-NO-RESPONSE", sev,
                    f"{peer} never answered {req}'s {exn} request ({tries}×)",
                    f"{req} sent {exn} (message ID {x.msg_id}) to {peer} {tries} time(s) over "
                    f"{_dur(waited)} and got no response in this capture: {peer} is unreachable, not "
                    "running IKE, or a firewall drops UDP 500/4500.",
                    frames, sa.key,
                    f"Check reachability of {peer} on UDP {x.responder_port or 500} and that its IKE daemon "
                    "listens; if the capture was taken on the responder, check that the request arrives.",
                    x.request_ts)


@rule(7, "IKE-RETRANSMIT")
def r_retransmits(table: SaTable, ctx: RuleContext):
    """Requests that needed retransmission before being answered (loss or a slow peer)."""
    for sa in table.ike_sas.values():
        xs = [x for x in sa.exchanges if x.retransmits and x.response_frames]
        if not xs or sa.state == SaState.FAILED:  # retransmissions of a refused exchange say nothing more
            continue
        total = sum(x.retransmits for x in xs)
        x = xs[0]
        yield Finding(
            "IKE-RETRANSMIT", Severity.INFO if total < 3 else Severity.WARNING,
            f"{total} IKE retransmission(s) between {sa.initiator} and {sa.responder}",
            f"{len(xs)} exchange(s) were answered only after the request was sent again "
            f"({', '.join(_ex(y, sa.version) + ' #' + str(y.msg_id) for y in xs[:4])}): packets were lost or "
            "the peer was slow to answer.",
            _frames(*(y.request_frames[:3] for y in xs[:3])), sa.key,
            "Look for loss or MTU problems on the path (large IKE_AUTH messages with certificates are "
            "the usual victims).", x.request_ts)


@rule(8, "IKE-REKEY-COLLISION")
def r_rekey_collision(table: SaTable, ctx: RuleContext):
    """Rekey collisions: both peers started rekeying the same SA at once (crossing CREATE_CHILD_SA)."""
    for c in table.child_sas.values():
        if not c.rekey_collision:
            continue
        sa = _child_ike(table, c)
        xs = [x for x in (sa.exchanges if sa else []) if x.rekey_child == c.id]
        yield Finding(
            "IKE-REKEY-COLLISION", Severity.WARNING,
            f"Rekey collision on CHILD SA #{c.id}: both {c.initiator} and {c.responder} rekeyed it at once",
            f"{c.initiator} and {c.responder} each sent a CREATE_CHILD_SA request rekeying CHILD SA #{c.id} "
            "before the other's finished (RFC 7296 §2.8.1). One of the new SAs is redundant and is "
            "deleted; traffic may briefly use an SA that is about to go.",
            _frames(*(x.request_frames[:1] for x in xs)), f"child:{c.id}",
            "Rekey timers that expire together: give the peers different rekey_time, or keep the default "
            "rand_time jitter.", c.rekeyed_ts)
    for ob in table.observations:
        if ob.kind == "ike_rekey_collision":
            yield Finding(
                "IKE-REKEY-COLLISION", Severity.WARNING,
                f"IKE SA rekey collision between {ob.src} and {ob.dst}",
                f"{ob.src} and {ob.dst} both started rekeying the IKE SA at the same time (RFC 7296 §2.8.2); "
                "the one with the lower nonce is deleted.", ob.frames, str(ob.detail.get("ike_sa")),
                "Stagger rekey_time / keep rand_time on the peers.", ob.ts)


@rule(9, "IKE-NAT-DETECTED")
def r_nat(table: SaTable, ctx: RuleContext):
    """NAT detected from NAT_DETECTION_* hashes (RFC 7296 §2.23, RFC 3947), and on which side."""
    for sa in table.ike_sas.values():
        if not sa.nat_detected or sa.rekeyed_from:
            continue
        init = next((x for x in sa.exchanges if x.exchange in (34, 2, 4)), None)
        frames = _frames(init.request_frames[:1] + init.response_frames[:1]) if init else ()
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
            "IKE-NAT-DETECTED", Severity.INFO, f"NAT detected: {where}", expl + moved, frames, sa.key,
            "Nothing to fix if the tunnel works; UDP 4500 must stay open and NAT keepalives keep the "
            "mapping alive.", sa.created_ts)


@rule(10, "IKE-IP-FRAGMENTED")
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
            "IKE-IP-FRAGMENTED", sev,
            f"IKE messages between {sa.initiator} and {sa.responder} were IP-fragmented"
            + (" and went unanswered" if lost else ""),
            f"{len(xs)} exchange(s) ({', '.join(_ex(y, sa.version) for y in xs[:3])}) carried IKE messages "
            "larger than the path MTU, split into IP fragments. Firewalls and NATs often drop fragments"
            + (", and these requests were never answered." if lost else ".")
            + ("" if both else " IKE fragmentation (RFC 7383) was not negotiated by both peers."),
            _frames(*(y.request_frames[:2] for y in xs[:3])), sa.key,
            "Enable IKE fragmentation on both peers (strongSwan: fragmentation = yes, the default) or "
            "reduce message size (fewer certificates, smaller CERTREQ lists).", x.request_ts)


_WEAK = [
    (re.compile(r"(^|-)des(-|$)"), "DES"), (re.compile(r"(^|-)3des(-|$)"), "3DES"),
    (re.compile(r"(^|-)(prf)?md5(_128)?(-|$)"), "MD5"), (re.compile(r"(^|-)(prf)?sha1(_160)?(-|$)"), "SHA-1"),
    (re.compile(r"(^|-)modp(768|1024)(s160)?(-|$)"), "MODP ≤ 1024"), (re.compile(r"(^|-)null(-|$)"), "NULL encryption"),
    (re.compile(r"(^|-)blowfish"), "Blowfish"),
]


def weak_parts(proposal: str) -> list[str]:
    return [label for rx, label in _WEAK if rx.search(proposal)]


@rule(11, "IKE-WEAK-ALGO")
def r_weak(table: SaTable, ctx: RuleContext):
    """Weak algorithms negotiated (DES, 3DES, MD5, SHA-1, MODP ≤ 1024, NULL)."""
    for sa in table.ike_sas.values():
        if sa.proposal and (weak := weak_parts(sa.proposal)):
            yield Finding(
                "IKE-WEAK-ALGO", Severity.WARNING,
                f"IKE SA uses weak algorithms: {', '.join(weak)} ({sa.proposal})",
                f"{sa.initiator} and {sa.responder} agreed on {sa.proposal} for the IKE SA; {', '.join(weak)} "
                "no longer gives adequate security (RFC 8247).",
                tuple(sa.frames[:2]), sa.key,
                "Prefer aes256gcm16-prfsha256-ecp256 or aes256-sha256-modp3072 (or stronger) on both peers.",
                sa.created_ts)
    for c in table.child_sas.values():
        if c.proposal and (weak := weak_parts(c.proposal)):
            yield Finding(
                "IKE-WEAK-ALGO", Severity.WARNING,
                f"CHILD SA #{c.id} uses weak algorithms: {', '.join(weak)} ({c.proposal})",
                f"{c.initiator} and {c.responder} protect traffic with {c.proposal}; {', '.join(weak)} "
                "no longer gives adequate security (RFC 8221).",
                tuple(c.frames[:2]), f"child:{c.id}",
                "Use aes256gcm16 or aes256-sha256 in esp_proposals on both peers.", c.created_ts)


@rule(12, "IKE-INVALID-SPI")
def r_invalid_spi(table: SaTable, ctx: RuleContext):
    """INVALID_SPI notifications: a peer received ESP for an SA it does not know."""
    for ob in table.observations:
        if ob.kind != "invalid_spi_notify":
            continue
        spi = ob.detail.get("spi")
        spi_s = f"0x{spi:08x}" if isinstance(spi, int) else "?"
        yield Finding(
            "IKE-INVALID-SPI", Severity.WARNING,
            f"{ob.src} reports INVALID_SPI {spi_s} to {ob.dst}",
            f"{ob.src} received ESP with SPI {spi_s} from {ob.dst} and has no such SA (RFC 7296 §1.5): the "
            "peers disagree about which SAs exist (one side deleted or never installed it).",
            ob.frames, str(ob.detail.get("ike_sa")) if ob.detail.get("ike_sa") else None,
            f"Check {ob.dst}'s SA list (swanctl --list-sas) for a stale SA; restarting the tunnel resyncs both.",
            ob.ts)


@rule(13, "IKE-CHILD-LIKELY-REFUSED")
def r_unknown_without_keys(table: SaTable, ctx: RuleContext):
    """Without keys: an IKE_AUTH response too small to hold a CHILD SA, and no ESP: CHILD SA refused."""
    for sa in table.ike_sas.values():
        if sa.decrypted or sa.state == SaState.FAILED or sa.version != 2:
            continue
        if not any(x.exchange == 35 and x.response_frames for x in sa.exchanges):
            continue
        has_traffic = any(table.flows.get(k) for k in table.flows
                          if {k[0], k[1]} == {sa.initiator, sa.responder})
        if has_traffic:
            continue
        auth = next(x for x in sa.exchanges if x.exchange == 35 and x.response_frames)
        # A CHILD SA refused in IKE_AUTH leaves out SA, TSi and TSr (about 90-140 bytes) from the
        # response; an accepted one makes the response about as large as the request.
        if not (auth.request_size - auth.response_size >= 100 or auth.response_size < 0.55 * auth.request_size):
            continue
        yield Finding(
            "IKE-CHILD-LIKELY-REFUSED", Severity.WARNING,
            f"CHILD SA between {sa.initiator} and {sa.responder} probably refused (encrypted IKE_AUTH, no keys)",
            f"IKE_AUTH between {sa.initiator} and {sa.responder} was answered, but the response "
            f"({auth.response_size} bytes) is much smaller than the request ({auth.request_size} bytes) and no "
            "ESP followed: the response most likely lacks the SA and traffic selector payloads, i.e. the CHILD "
            "SA was refused (NO_PROPOSAL_CHOSEN or TS_UNACCEPTABLE). The payloads are encrypted.",
            _frames(auth.request_frames[:1], auth.response_frames[:1]), sa.key,
            "Load the IKE keys (-k charon log with 'ike 4'/'chd 4' loglevel, or an ikev2_decryption_table) "
            "to see the exact notify.", auth.request_ts)


def _ike_key_source(ctx: RuleContext, sa: IkeSa) -> str:
    """Where the IKE keys tried on ``sa`` came from ("charon-left.log:12"), from the session's
    key store; "the loaded keys" when the rules run without a session."""
    keys = getattr(ctx.session, "keys", None)
    srcs: list[str] = []
    try:
        if sa.version == 1:
            srcs = [k.source for k in keys.ikev1_candidates(sa.ike_spi_i) if k.source]
        else:
            k = keys.ike_lookup(sa.ike_spi_i, sa.ike_spi_r)
            srcs = [k.source] if k is not None and k.source else []
    except (AttributeError, TypeError):  # no session, or a key store without these lookups
        pass
    srcs = _uniq(_src_path(x) for x in srcs)
    return " and ".join(srcs) if srcs else "the loaded keys"


def _src_path(source: str) -> str:
    """``tests/x/charon-left.log:177`` -> ``charon-left.log:177`` (keys' "file:line" sources)."""
    return source.replace(chr(92), "/").rsplit("/", 1)[-1]


def _role(sa: IkeSa, addr: str) -> str:
    return f"initiator {addr}" if addr == sa.initiator else f"responder {addr}"


@rule(14, "IKE-ICV-FAILED", "IKE-KEY-MISMATCH")
def r_ike_keys(table: SaTable, ctx: RuleContext):
    """IKE keys were loaded for an IKE SA but do not fit it: ICV failures (IKEv2) or no payload chain."""
    for sa in table.ike_sas.values():
        bad = sa.icv_failed + sa.undecryptable
        if not bad:
            continue
        short = f"{sa.ike_spi_i.hex()[:8]}…"
        source = _ike_key_source(ctx, sa)
        said = (sa.key_failed_note or "").strip()
        note = f" The decryptor said: {said}{'' if said.endswith(('.', '?', '!')) else '.'}" if said else ""
        # Which peers' messages the key reads: a key that reads one peer and not the other points
        # at one direction's key (IKEv2: one column of the row; IKEv1: one shared SKEYID_e, so the
        # peers derived different keys).
        good = [a for a in sa.decrypted_from if a not in sa.key_failed_from]
        failing = [a for a in sa.key_failed_from if a not in sa.decrypted_from]
        split = bool(good) and bool(failing) and len(sa.key_failed_from) == len(failing)
        frames = tuple(sa.key_failed_frames)
        ts = sa.created_ts
        if sa.version == 2:
            code = "IKE-ICV-FAILED" if sa.icv_failed else "IKE-KEY-MISMATCH"
            what = ("failed the integrity check" if sa.icv_failed else "could not be decrypted")
            extra = (f" ({sa.icv_failed} ICV failure(s), {sa.undecryptable} not a payload chain)"
                     if sa.icv_failed and sa.undecryptable else "")
            if split:
                sender = failing[0]
                d = "i" if sender == sa.initiator else "r"
                why = (f"Messages from {_role(sa, good[0])} decrypt and verify, those from "
                       f"{_role(sa, sender)} do not: the SK_e{d}/SK_a{d} columns of the row are wrong "
                       "(a damaged or truncated key), the other direction's keys are right.")
            else:
                why = (f"No encrypted message of this IKE SA {'verifies' if sa.icv_failed else 'decrypts'} with "
                       "them: wrong SK_ei/SK_ai (and "
                       "SK_er/SK_ar), initiator and responder columns mixed up, or a table row for another "
                       "IKE SA with the same SPIs (e.g. from an earlier run).")
            yield Finding(
                code, Severity.WARNING,
                f"IKE SA {short}: {bad} encrypted message(s) {what}{extra} — wrong IKE keys",
                f"The keys from {source} do not match IKE SA {sa.key} between {sa.initiator} and "
                f"{sa.responder}. {why}{note} Until the keys fit, its IDs, CHILD SAs and selectors are "
                "unknown.",
                frames, sa.key,
                "Reload the keys from the charon log of this very run (-k charon.log with 'ike 4'), or check "
                "the ikev2_decryption_table column order: SPIi, SPIr, SK_ei, SK_er, encryption, SK_ai, "
                "SK_ar, integrity.", ts)
            continue
        # IKEv1: no ICV (RFC 2409 §5); a wrong key only shows as plaintext that is no payload chain.
        if split:
            sender = failing[0]
            # When IKE-AUTH-FAILED already reports the failed negotiation this is its key-side
            # evidence (INFO); otherwise (e.g. the only readable answer is a PAYLOAD_MALFORMED
            # notify) it is the explanation of the failure.
            if any(f.sa == sa.key for f in r_auth_failed(table, ctx)):
                sev = Severity.INFO
            else:
                sev = Severity.ERROR if sa.state == SaState.FAILED else Severity.WARNING
            failed = (f" That is why the negotiation failed ({sa.failure})."
                      if sa.failure and sev == Severity.ERROR else "")
            yield Finding(
                "IKE-KEY-MISMATCH", sev,
                f"IKE SA {short}: {sa.undecryptable} encrypted message(s) from {sender} do not decrypt with "
                f"the key that decrypts {good[0]}'s — the peers derived different keys (PSK mismatch?)",
                f"IKEv1 peers encrypt both directions with the same key derived from SKEYID_e (RFC 2409 §5). "
                f"The key from {source} turns {good[0]}'s messages into sound payloads but not those of "
                f"{sender}, so {sender} derived a different key: with pre-shared-key authentication the "
                "two peers hold different PSKs (or a message of the exchange is missing from the capture, "
                f"which breaks the IV chain).{failed}{note}",
                frames, sa.key,
                f"Make the pre-shared keys equal on both peers; add {sender}'s charon log with -k to read "
                "its messages too.", ts)
            continue
        yield Finding(
            "IKE-KEY-MISMATCH", Severity.WARNING,
            f"IKE SA {short}: {sa.undecryptable} encrypted message(s) could not be decrypted with the loaded "
            "key — wrong IKE key",
            f"A key from {source} was applied to {sa.undecryptable} encrypted message(s) of IKE SA {sa.key} "
            f"between {sa.initiator} and {sa.responder}, but none gave a sound payload chain. IKEv1 has no "
            "ICV, so a wrong key shows only this way: the key is not this run's phase-1 encryption key "
            f"(a row for another SA with the same initiator cookie, a damaged key), or a message of the "
            f"exchange is missing from the capture (the IV chain, RFC 2409 Appendix B).{note}",
            frames, sa.key,
            "Reload the keys from the charon log of this run (-k charon.log with 'ike 4'), or check the "
            "ikev1_decryption_table row: initiator cookie, then the encryption key.", ts)


# ---------------------------------------------------------------------------------- ESP


def _child_label(c: ChildSa | None) -> str:
    return f"CHILD SA #{c.id}" if c else "an unknown SA"


@rule(20, "ESP-UNKNOWN-SPI", "ESP-AFTER-DELETE")
def r_esp_spi(table: SaTable, ctx: RuleContext):
    """ESP on an SPI no visible negotiation created, or on an SA already deleted."""
    for f in table.flows.values():
        c = table.child_sas.get(f.child_sa) if f.child_sa is not None else None
        if c is not None and c.state == SaState.INFERRED:
            ike = _child_ike(table, c)
            if ike is not None and ike.decrypted and ike.created_ts is not None and f.first_ts is not None \
                    and f.first_ts > ike.created_ts and not ike.state_inferred:
                yield Finding(
                    "ESP-UNKNOWN-SPI", Severity.WARNING,
                    f"ESP {f.src} -> {f.dst} on SPI 0x{f.spi:08x} that no IKE exchange created",
                    f"The IKE SA between {ike.initiator} and {ike.responder} was readable, yet none of its "
                    f"exchanges negotiated SPI 0x{f.spi:08x}; {f.packets} packet(s) used it. The receiver will "
                    "drop them (and may answer INVALID_SPI).",
                    (f.first_frame, f.last_frame) if f.first_frame != f.last_frame else (f.first_frame,),
                    _flow_ref(f),
                    f"A stale SA on {f.src} (e.g. after {f.dst} restarted): reset the tunnel on {f.src}.",
                    f.first_ts)
        if f.after_delete and c is not None and c.deleted_ts is not None:
            late = (f.last_ts or 0) - c.deleted_ts
            if f.after_delete <= 2 and late <= ctx.after_delete_grace_s:
                continue  # in-flight packets
            yield Finding(
                "ESP-AFTER-DELETE", Severity.WARNING,
                f"{f.after_delete} ESP packet(s) {f.src} -> {f.dst} on SPI 0x{f.spi:08x} after it was deleted",
                f"CHILD SA #{c.id} was deleted by {c.deleted_by} at {_t(c.deleted_ts)}, but {f.src} kept sending "
                f"on SPI 0x{f.spi:08x} for {_dur(max(late, 0.0))}. The receiver drops these packets.",
                tuple(f.after_delete_frames), _flow_ref(f),
                f"{f.src} did not remove the outbound SA: check its kernel SAs (ip xfrm state) and its log "
                "for the Delete.", c.deleted_ts)


@rule(21, "ESP-ONE-WAY")
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
            "ESP-ONE-WAY", Severity.WARNING,
            f"One-way ESP: {f.src} -> {f.dst} ({pk} packets), nothing back",
            f"{_child_label(c)} carries {pk} ESP packet(s) from {f.src} to {f.dst} on SPI 0x{f.spi:08x} but "
            f"none in the other direction. {f.dst} either does not receive them (filtered), cannot decrypt "
            "them (key or SA missing), has no route/policy for the replies, or the capture sees only one "
            "direction.",
            (f.first_frame, f.last_frame), _flow_ref(f),
            f"Check on {f.dst}: SA and policy installed (ip xfrm state/policy), ESP (or UDP 4500) allowed in, "
            "and a route back to the sender's subnet.", f.first_ts)


@rule(27, "ESP-RETURN-STOPPED")
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
                "ESP-RETURN-STOPPED", Severity.WARNING,
                f"ESP from {f.dst} stopped: {f.src} sent {f.unanswered_tail} more packet(s) with no reply",
                f"{_child_label(c)} carried traffic both ways until frame {back.last_frame} ({_t(back.last_ts)}); "
                f"after that {f.src} sent {f.unanswered_tail} ESP packet(s) to {f.dst} on SPI 0x{f.spi:08x} over "
                f"{_dur((f.last_ts or 0.0) - (f.unanswered_since_ts or 0.0))} and nothing came back: {f.dst} went "
                "away, lost its SA, or the return path broke.",
                (back.last_frame, f.unanswered_since_frame, f.last_frame), _flow_ref(f),
                f"Check whether {f.dst} still has the SA (swanctl --list-sas) and is reachable; DPD will "
                "tear the tunnel down if the peer is gone.", back.last_ts)


@rule(22, "ESP-SEQ-GAP", "ESP-REPLAY", "ESP-REORDER")
def r_seq(table: SaTable, ctx: RuleContext):
    """Sequence-number analysis per flow: loss (gaps), replays (duplicates), reordering beyond 64."""
    for f in table.flows.values():
        ref = _flow_ref(f)
        span = (f.seq_max - f.seq_min + 1) if f.seq_max is not None and f.seq_min is not None else f.packets
        if f.lost:
            ratio = f.lost / max(span, 1)
            yield Finding(
                "ESP-SEQ-GAP", Severity.WARNING if ratio >= ctx.loss_warn_ratio else Severity.INFO,
                f"ESP loss {f.src} -> {f.dst}: {f.lost} of {span} sequence numbers missing ({ratio:.1%})",
                f"On SPI 0x{f.spi:08x} from {f.src} to {f.dst}, {f.lost} sequence number(s) between "
                f"{f.seq_min} and {f.seq_max} never appeared in the capture: packets lost before the capture "
                "point (or the capture dropped them).",
                tuple(f.gap_frames), ref,
                "Compare with a capture on the other side to locate the loss; check interface drops and MTU.",
                f.first_ts)
        if f.duplicates:
            yield Finding(
                "ESP-REPLAY", Severity.WARNING,
                f"ESP replay {f.src} -> {f.dst}: {f.duplicates} duplicate sequence number(s)",
                f"{f.duplicates} packet(s) on SPI 0x{f.spi:08x} from {f.src} to {f.dst} repeated a sequence "
                "number already seen. The receiver's anti-replay check (RFC 4303 §3.4.3) drops them; "
                "duplication on the path, a capture on several interfaces, or a replay attack.",
                tuple(f.duplicate_frames), ref,
                "If the capture was taken on one interface, look for a device duplicating packets.",
                f.first_ts)
        if f.reordered:
            yield Finding(
                "ESP-REORDER", Severity.WARNING if f.reordered > 10 else Severity.INFO,
                f"ESP reordering {f.src} -> {f.dst}: {f.reordered} packet(s) later than the 64-packet window",
                f"{f.reordered} packet(s) on SPI 0x{f.spi:08x} arrived more than 64 sequence numbers after "
                "newer ones; a receiver with the default replay window drops them as too old.",
                tuple(f.reordered_frames), ref,
                "Increase replay_window on the receiver, or find the path that reorders (load balancing "
                "over links).", f.first_ts)


@rule(23, "ESP-ICV-FAILED")
def r_icv(table: SaTable, ctx: RuleContext):
    """ICV failures: every packet (wrong key / algorithm) or a few (corruption on the path)."""
    for f in table.flows.values():
        if not f.icv_failed:
            continue
        checked = f.icv_failed + f.decrypted
        if f.decrypted == 0:
            yield Finding(
                "ESP-ICV-FAILED", Severity.ERROR,
                f"Every ESP packet {f.src} -> {f.dst} on SPI 0x{f.spi:08x} fails its ICV check: wrong key",
                f"All {f.icv_failed} packet(s) failed integrity verification. With every packet failing, the "
                "key (or algorithm, or ICV length) used for SPI "
                f"0x{f.spi:08x} does not match what {f.src} uses, not a transmission problem.",
                tuple(f.icv_failed_frames), _flow_ref(f),
                "Check the key file entry for this SPI (algorithm, key, salt for GCM) — or, if the keys came "
                "from the peer, the peers disagree on the keys.", f.first_ts)
        else:
            yield Finding(
                "ESP-ICV-FAILED", Severity.WARNING,
                f"{f.icv_failed} of {checked} ESP packets {f.src} -> {f.dst} fail their ICV: corruption",
                f"Most packets on SPI 0x{f.spi:08x} verify, {f.icv_failed} do not: the key is right, those "
                "packets were altered on the path (bad link, middlebox) or truncated in the capture.",
                tuple(f.icv_failed_frames), _flow_ref(f),
                "Check for errors on the links between the peers; a capture with a snap length shorter than "
                "the packets also causes this.", f.first_ts)


@rule(24, "ESP-REKEY-OVERLAP")
def r_rekey_overlap(table: SaTable, ctx: RuleContext):
    """Traffic that stayed on the old SA after a CHILD SA rekey, and for how long."""
    for c in table.child_sas.values():
        if c.rekeyed_ts is None:
            continue
        for f in c.flows(table):
            if not f.after_rekey or f.after_rekey_last_ts is None:
                continue
            span = f.after_rekey_last_ts - c.rekeyed_ts
            sev = Severity.WARNING if span > ctx.rekey_overlap_warn_s else Severity.INFO
            yield Finding(
                "ESP-REKEY-OVERLAP", sev,
                f"CHILD SA #{c.id} rekeyed at {_t(c.rekeyed_ts)}, {f.src} kept sending on the old SPI "
                f"0x{f.spi:08x} for {_dur(span)}",
                f"After the rekey of CHILD SA #{c.id} into #{c.rekeyed_into}, {f.src} sent {f.after_rekey} "
                f"more packet(s) to {f.dst} on the old SPI 0x{f.spi:08x}, the last {_dur(span)} later. A short "
                "overlap is normal (RFC 7296 §2.8); a long one means the outbound SA was switched late.",
                (f.last_frame,), _flow_ref(f),
                "If the old SA is deleted before the sender switches, those packets are lost; check the "
                "sender's kernel/IPsec stack for late outbound SA updates.", c.rekeyed_ts)


@rule(25, "ESP-OUTSIDE-TS")
def r_outside_ts(table: SaTable, ctx: RuleContext):
    """Decrypted inner packets outside the CHILD SA's negotiated selectors (policy mismatch)."""
    for f in table.flows.values():
        if not f.outside_ts:
            continue
        c = table.child_sas.get(f.child_sa) if f.child_sa is not None else None
        sels = f"TSi {ts_text(c.ts_i)} / TSr {ts_text(c.ts_r)}" if c else "?"
        yield Finding(
            "ESP-OUTSIDE-TS", Severity.WARNING,
            f"{f.outside_ts} inner packet(s) {f.src} -> {f.dst} outside the negotiated selectors",
            f"Decrypted packets on SPI 0x{f.spi:08x} (e.g. {f.outside_ts_example}) are not covered by "
            f"{_child_label(c)}'s selectors {sels}. The receiver's inbound policy check drops them "
            "(RFC 4301 §5.2).",
            tuple(f.outside_ts_frames), _flow_ref(f),
            f"{f.src}'s policy sends more than was negotiated: align its local_ts/remote_ts with the peer's.",
            f.first_ts)


@rule(26, "ESP-NO-KEY")
def r_no_key(table: SaTable, ctx: RuleContext):
    """Keys were given, but some ESP flows have none (their CHILD SA's keys are missing)."""
    if not ctx.keys_given:
        return
    flows = [f for f in table.flows.values() if f.no_key and not f.decrypted and f.protocol == "ESP"]
    if not flows:
        return
    listed = ", ".join(f"0x{f.spi:08x}" for f in flows[:6])
    yield Finding(
        "ESP-NO-KEY", Severity.INFO,
        f"No key for {len(flows)} ESP flow(s) ({listed}{'…' if len(flows) > 6 else ''})",
        f"Keys were loaded, but none matches {len(flows)} ESP flow(s) (src, dst, SPI), so their contents and "
        "ICVs could not be checked.",
        tuple(f.first_frame for f in flows[:6]), _flow_ref(flows[0]),
        "Add the ESP keys (esp_sa table, ip xfrm state output, charon log with chd 4) or the IKE SA's SK_d "
        "so CHILD keys can be derived.", flows[0].first_ts)


@rule(28, "ESP-UNSUPPORTED-ALGO")
def r_unsupported(table: SaTable, ctx: RuleContext):
    """ESP keys that name an algorithm (or key size) ipsecscope does not implement."""
    for f in table.flows.values():
        if not f.unsupported:
            continue
        reason, _, supported = f.unsupported_reason.partition("; supported:")
        reason = reason.strip() or "the algorithm of its keys is not implemented"
        source = _src_path(f.unsupported_keys_source) if f.unsupported_keys_source else "the loaded keys"
        can = f" ipsecscope implements:{supported.rstrip('.')}." if supported else ""
        yield Finding(
            "ESP-UNSUPPORTED-ALGO", Severity.WARNING,
            f"{f.unsupported} ESP packet(s) {f.src} -> {f.dst} on SPI 0x{f.spi:08x} not decrypted: {reason}",
            f"The key for SPI 0x{f.spi:08x} from {source} was found, but ipsecscope cannot use it: "
            f"{reason}.{can} Its packets are counted, not decrypted, and their ICVs are not checked.",
            tuple(f.unsupported_frames), _flow_ref(f),
            "If the key file names the wrong algorithm, fix that row; otherwise open the capture in a tool "
            "that implements it (Wireshark decrypts CAST5-CBC, Blowfish-CBC and Twofish-CBC: `ipsecscope keys "
            "convert KEYS --to esp_sa -o ~/.config/wireshark/esp_sa`).", f.first_ts)


@rule(30, "CAPTURE-MALFORMED")
def r_malformed(table: SaTable, ctx: RuleContext):
    """Malformed packets in the capture (decoders marked them and went on)."""
    obs = [o for o in table.observations if o.kind in ("malformed", "tracker_error")]
    if not obs:
        return
    first = obs[0]
    layers = sorted({str(o.detail.get("layer", "ike")) for o in obs})
    yield Finding(
        "CAPTURE-MALFORMED", Severity.INFO,
        f"{len(obs)}{'+' if len(obs) >= 20 else ''} malformed packet(s) ({', '.join(layers)})",
        f"Some packets could not be fully decoded, e.g. frame {first.frames[0] if first.frames else '?'}: "
        f"{first.detail.get('reason', '')}. The rest of the analysis uses what was readable.",
        _frames(*(o.frames for o in obs[:6])), None,
        "A truncated capture (snaplen) or a damaged file; re-capture with -s 0 if details matter.", first.ts)
