"""IKE authentication rules: PSK, certificates, identities."""

from __future__ import annotations

from collections.abc import Iterator

from ...model.sa import Finding, IkeSa, SaTable, Severity
from .common import frames_of, note_src, other_peer, peer_notes_about
from .core import RuleContext, rule


def _auth_log(ctx: RuleContext, sa: IkeSa, rejecter: str, rejected: str) -> tuple[str, str, tuple]:
    """(explanation suffix, hint, notes) from the rejecting peer's log, or ("", "", ())."""
    notes = peer_notes_about(ctx, sa, rejecter, ("auth",))
    if not notes:
        return "", "", ()
    n = notes[0]
    d = n.data
    quote = f" {rejecter}'s log ({note_src(n)}): \"{n.text}\""
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


@rule(3, "IKE-AUTH-FAILED", Severity.ERROR, ref="RFC 7296 §2.15, §2.21.2")
def r_auth_failed(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Authentication failure (AUTHENTICATION_FAILED), also guessed from encrypted IKE_AUTH sizes."""
    for sa in table.ike_sas.values():
        if sa.failure is None or "AUTHENTICATION" not in sa.failure and "AUTH refused" not in sa.failure:
            continue
        x = next((x for x in sa.exchanges if sa.failure_frame in x.response_frames + x.request_frames), None)
        frames = frames_of(x.request_frames[:1] if x else (), [sa.failure_frame] if sa.failure_frame else ())
        sender = None
        if x is not None and sa.failure_frame in x.response_frames:
            sender = other_peer(sa, x.requester)
        elif x is not None:
            sender = x.requester
        rejecter = sender or sa.responder
        rejected = other_peer(sa, rejecter)
        ids = f" (IDs: {sa.id_i or '?'} -> {sa.id_r or '?'})" if sa.id_i or sa.id_r else ""
        log, log_hint, notes = _auth_log(ctx, sa, rejecter, rejected)
        if sa.state_inferred and sa.version == 1 and sa.mode == "Aggressive":
            p1 = sa.exchanges[0].response_frames if sa.exchanges else []
            psk = sa.auth_method == "PSK"
            yield Finding(
                code="IKE-AUTH-FAILED", severity=Severity.ERROR,
                title=f"Aggressive Mode refused by {rejecter} after {rejected}'s AM2"
                + (" (most likely a PSK mismatch)" if psk else ""),
                explanation=f"{rejected} answered with its identity and HASH_R (AM2) and {rejecter} sent an encrypted "
                "Informational instead of AM3: it could not verify AM2 (RFC 2409 §5.4; an error notify, "
                f"AUTHENTICATION-FAILED as strongSwan sends it), so {rejected} kept retransmitting AM2 in vain."
                + (" With pre-shared keys the hash depends on the key, so different PSKs give this." if psk else "")
                + log, frames=frames_of(p1[:1], [sa.failure_frame] if sa.failure_frame else ()), sa=sa.key,
                hint=log_hint or f"Check that {sa.initiator} and {sa.responder} use the same pre-shared key for these "
                "identities (or that certificates are trusted); the initiator's log says 'calculated HASH does not "
                "match HASH payload' or similar.", ts=sa.failed_ts, evidence=notes)
        elif sa.state_inferred and sa.version == 1:
            p1 = sa.exchanges[0].request_frames if sa.exchanges else []
            frames = frames_of(p1[2:3], [sa.failure_frame] if sa.failure_frame else ())
            yield Finding(
                code="IKE-AUTH-FAILED", severity=Severity.ERROR,
                title=f"Main Mode refused by {rejecter} after {rejected}'s MM5 (most likely a PSK mismatch)",
                explanation=f"{rejected} sent its encrypted identity and HASH (MM5) and {rejecter} answered with an "
                "encrypted Informational instead of MM6, every time it was retransmitted: it could not "
                "verify MM5. In IKEv1 the phase-1 keys derive from the pre-shared key (RFC 2409 §5.4), "
                "so different PSKs make MM5 unreadable to the responder and its error notify unreadable "
                "to anyone without its keys." + log,
                frames=frames, sa=sa.key,
                hint=log_hint or f"Check that {sa.initiator} and {sa.responder} use the same pre-shared key for "
                "these identities (or that certificates are trusted); the responder's log says 'invalid HASH' "
                "or similar.", ts=sa.failed_ts, evidence=notes)
        elif sa.state_inferred:
            yield Finding(
                code="IKE-AUTH-FAILED", severity=Severity.ERROR,
                title=f"IKE_AUTH refused by {rejecter} (encrypted; most likely authentication failed)",
                explanation=f"{rejecter} answered {rejected}'s IKE_AUTH with a message too small to carry an AUTH "
                "payload, and the IKE SA was not used afterwards: an error notify, almost always "
                "AUTHENTICATION_FAILED (wrong PSK, certificate or identity). Without the IKE keys the "
                "notify itself cannot be read." + log,
                frames=frames, sa=sa.key,
                hint=log_hint or "Give the IKE SA keys (-k charon log / ikev2_decryption_table) to confirm; check "
                "that both peers use the same PSK for these identities, or that the certificate chain is trusted.",
                ts=sa.failed_ts, evidence=notes)
        else:
            yield Finding(
                code="IKE-AUTH-FAILED", severity=Severity.ERROR,
                title=f"Authentication failed: {rejecter} rejected {rejected}'s AUTH",
                explanation=f"{rejecter} sent AUTHENTICATION_FAILED: it could not verify the AUTH payload of {rejected}"
                f"{ids} ({sa.auth_method or 'method not visible'}). The IKE SA and its CHILD SAs are not set up."
                + log, frames=frames, sa=sa.key,
                hint=log_hint or "Check the pre-shared key / certificates and the identities (local.id, remote.id) on "
                "both peers; the rejecting peer's log names the reason.", ts=sa.failed_ts, evidence=notes)
