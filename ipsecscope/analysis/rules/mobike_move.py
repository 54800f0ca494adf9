"""MOBIKE address updates in words (RFC 4555), for IKE-MOBIKE-MOVE (rule 83, in :mod:`.nat_mtu`) and
the SA views: who moved from where to where, whether a NAT sits on the new path, whether the new
path was verified with COOKIE2 (§3.7), and whether the new address was one the mover had announced
(ADDITIONAL_IP4/6_ADDRESS, NO_ADDITIONAL_ADDRESSES, §3.6)."""

from __future__ import annotations

from ...model.plural import plural
from ...model.sa import Finding, IkeSa, MobikeUpdate, SaTable, Severity, endpoint_text
from .common import clock, frames_of


def mobike_behind_nat(u: MobikeUpdate) -> bool:
    """The update came from a UDP port other than 4500, which a MOBIKE peer sends from itself after
    IKE_SA_INIT (RFC 4555 §3.3, RFC 7296 §2.23): a NAPT rewrote it, the new address is behind a NAT."""
    return u.src_port not in (4500, 0)


def _other(peer: str) -> str:
    return "responder" if peer == "initiator" else "initiator"


# the update's COOKIE2 as its answer echoed it (MobikeUpdate.cookie2_echo), for the SA views
_ECHO_PHRASE = {"same": "COOKIE2 echoed: new path verified",
                "different": "COOKIE2 echoed differently (RFC 4555 §3.7: the IKE SA must close)",
                "missing": "COOKIE2 not echoed (RFC 4555 §3.7)"}


def mobike_phrase(sa: IkeSa) -> str:
    """MOBIKE address updates in a few words for the SA views: who moved from where to where, when,
    and whether the new path was verified (RFC 4555 §3.7)."""
    out = []
    for u in sa.mobike_updates:
        new = endpoint_text(u.src_addr, u.src_port)
        text = (f"{u.peer} moved {endpoint_text(u.old_addr, u.old_port)} → {new}" if u.old_addr
                else f"{u.peer} updated addresses from {new}")
        text += f" by UPDATE_SA_ADDRESSES at {clock(u.ts)} (frame {u.frame})"
        text += ", now behind a NAT" if mobike_behind_nat(u) else ""
        text += (f", refused: {u.error} (frame {u.answered_frame})" if u.error else
                 f", answered (frame {u.answered_frame})" if u.answered_frame is not None else ", never answered")
        if u.cookie2_echo:
            text += ", " + _ECHO_PHRASE[u.cookie2_echo]
        if u.check_frame is not None:
            text += (f", the {_other(u.peer)} checked {u.src_addr} with COOKIE2 (frame {u.check_frame}): "
                     + ({"same": "echoed", "different": "echoed differently", "missing": "not echoed"}
                        .get(u.check_echo, "never answered")))
        text += ", not an announced address" if unannounced(sa, u) is not None else ""
        out.append(text)
    return "; ".join(out)


def unannounced(sa: IkeSa, u: MobikeUpdate) -> tuple[int, tuple[str, ...]] | None:
    """The mover's last address list before the update (RFC 4555 §3.6: ADDITIONAL_IP4/6_ADDRESS,
    or NO_ADDITIONAL_ADDRESSES, an empty list), as (frame, addresses), when the update's source is
    not in it and is not the address the mover had; None when it was announced or no list was seen."""
    lists = [(f, a) for role, f, a in sa.mobike_additional if role == u.peer and f < u.frame]
    if not lists or not u.old_addr:
        return None
    frame, addrs = lists[-1]
    return None if u.src_addr in addrs or u.src_addr == u.old_addr else (frame, addrs)


def mobike_finding(table: SaTable, sa: IkeSa, u: MobikeUpdate, forced: set[str]) -> Finding:
    """IKE-MOBIKE-MOVE for one update; ``forced``: the roles that force UDP encapsulation (a wrong
    NAT_DETECTION_SOURCE_IP on purpose, so their hash tells nothing of a NAT)."""
    new, dst = endpoint_text(u.src_addr, u.src_port), endpoint_text(u.dst_addr, u.dst_port)
    old = endpoint_text(u.old_addr, u.old_port) if u.old_addr else ""
    rb = next((r for r in sa.nat_rebindings if r.mobike_frame == u.frame), None)
    moved = f"moved from {old} to {new}" if old else f"asked to use {new}"
    parts = [f"The {u.peer} {moved} with MOBIKE UPDATE_SA_ADDRESSES at {clock(u.ts)} (frame {u.frame}, "
             f"RFC 4555 §3.5), sent from the new address to {dst}"
             + (" with COOKIE2 (a return routability check, §3.7)." if u.cookie2 else ".")]
    parts.append("The IKE SA and all its CHILD SAs keep their SPIs: ESP with those SPIs to or from the new address "
                 "is the same SAs (an SA is its SPI, destination and protocol, RFC 4301 §4.1; the update changes "
                 "its addresses, RFC 4555 §3.5).")
    natted = mobike_behind_nat(u)
    if natted:
        # A NAT-T peer sends IKE from port 4500 itself (RFC 7296 §2.23, RFC 4555 §3.3 for MOBIKE);
        # another source port with the same SPIs is a NAPT's translation, whatever the hashes say.
        parts.append(f"It now arrives from port {u.src_port}, not the 4500 it sends from itself: a NAT (NAPT) "
                     f"translates its new address, so the {u.peer} is behind a NAT now"
                     + (f" (its packets from {old} kept port 4500)." if u.old_port == 4500 else "."))
    if u.nat_src_ok is None and u.nat_dst_ok is None:
        parts.append("The update carries no NAT_DETECTION_* hashes, so it says nothing about a NAT on the new path.")
    elif u.nat_src_ok is not False and u.nat_dst_ok is not False:
        parts.append("Its NAT_DETECTION_* hashes match the new addresses as captured: no NAT on the new path.")
    else:
        if u.nat_src_ok is False:
            parts.append(f"Its NAT_DETECTION_SOURCE_IP does not match {new} as captured: "
                         + ("it forced UDP encapsulation in IKE_SA_INIT already (a deliberately wrong source "
                            "hash), so the hash by itself says nothing of a NAT" if u.peer in forced else
                            "a NAT sits in front of its new address (or it forces UDP encapsulation)") + ".")
        if u.nat_dst_ok is False:
            parts.append(f"Its NAT_DETECTION_DESTINATION_IP does not match {dst}: a NAT sits in front of the other peer.")
    gone = unannounced(sa, u)
    told = next((f for role, f, a in reversed(sa.mobike_additional) if role == u.peer and f < u.frame
                 and u.src_addr in a), None)
    if told is not None and gone is None:
        parts.append(f"It had announced {u.src_addr} as an additional address (frame {told}, RFC 4555 §3.6).")
    if gone is not None:
        # INFO only: a NAT in front of the mover shows it at an address it cannot know (RFC 4555 §3.6
        # lists the peer's own addresses), and a peer may move to an address it got after its last list.
        frame, addrs = gone
        listed = (f"it announced only {', '.join(addrs)} (ADDITIONAL_IP*_ADDRESS in frame {frame}, RFC 4555 §3.6)"
                  if addrs else
                  f"it said it had no other address (NO_ADDITIONAL_ADDRESSES in frame {frame}, RFC 4555 §3.6)")
        parts.append(f"{u.src_addr} is not an address the {u.peer} announced: {listed}"
                     + ("; the NAT in front of it gives it an address of the NAT's." if natted else
                        "; a NAT or an address it got after that list explains it."))
    bad = ""
    if u.answered_frame is None:
        bad = "never answered"
        parts.append("The update was never answered in the capture: the other peer may still send to the old "
                     "address, and the mover retransmits, then gives up (RFC 7296 §2.1).")
    elif u.error:
        bad = f"refused with {u.error}"
        parts.append(f"The answer (frame {u.answered_frame}) refused it with {u.error} (RFC 4555 §4.2.4): "
                     "the SAs did not move.")
    else:
        parts.append(f"The other peer answered at {clock(u.answered_ts)} (frame {u.answered_frame}).")
    bad = _cookie_words(u, parts) or bad
    if rb is not None and rb.followed_frame is not None:
        parts.append(f"The other peer's first packet to {new} was frame {rb.followed_frame} ({rb.followed_in}).")
    if rb is not None and rb.to_old:
        bad = bad or "packets still sent to the old address"
        parts.append(f"{plural(rb.to_old, 'packet')} still went to the old {old} after the move (frames "
                     f"{', '.join(map(str, rb.to_old_frames))}): the other peer did not update its SAs at once.")
    rekeyed = [c for cid in sa.children if (c := table.child_sas.get(cid)) is not None and c.rekeyed_ts is not None
               and 0 <= c.rekeyed_ts - u.ts < 5 and c.rekeyed_into is not None]
    if rekeyed:
        parts.append("Right after the update " + ", ".join(f"CHILD_SA #{c.id} was rekeyed into #{c.rekeyed_into}"
                                                           for c in rekeyed)
                     + ": a peer whose IPsec stack cannot change an installed SA's addresses rekeys it instead "
                     "(strongSwan does so with kernel-libipsec); the new SPIs are a new CHILD SA, not a new tunnel.")
    moved_or_asked = "asked to move by MOBIKE" if u.answered_frame is None or u.error else "moved by MOBIKE"
    title = ((f"IKE SA {moved_or_asked}: {u.peer} {old} -> {new}" if old else
              f"MOBIKE address update from the {u.peer} {new}") + ("; now behind a NAT" if natted else "")
             + (f" ({bad})" if bad else ""))
    frames = [u.frame] + ([u.answered_frame] if u.answered_frame is not None else [])
    frames += [u.check_frame] if u.check_frame is not None else []
    if rb is not None:
        frames += [rb.frame, *rb.to_old_frames[:1]] + ([rb.followed_frame] if rb.followed_frame is not None else [])
    cookie_bad = bad.startswith("COOKIE2")
    return Finding(code="IKE-MOBIKE-MOVE", severity=Severity.WARNING if bad else Severity.INFO, title=title,
                   explanation=" ".join(parts), frames=frames_of(frames), sa=sa.key, ts=u.ts,
                   hint=("An answer whose COOKIE2 is not its request's is no answer to it: look for a second "
                         "responder or a forged answer on the path; the peer that sent the cookie closes the IKE SA "
                         "(RFC 4555 §3.7)."
                         if cookie_bad else
                         "Check that the other peer supports MOBIKE and reaches the new address; a mover that "
                         "gets no answer falls back to a new IKE SA." if bad else
                         "Nothing to fix: the client changed networks and the tunnel followed."))


def _cookie_words(u: MobikeUpdate, parts: list[str]) -> str:
    """What the return routability checks of the new path said (RFC 4555 §3.7: the responder MUST
    copy COOKIE2 into its answer, the sender MUST compare it and close the IKE SA if it differs),
    appended to ``parts``; returns the trouble for the title ("" if none)."""
    bad = ""
    other = _other(u.peer)
    if u.cookie2_echo == "same":
        parts.append("The answer echoed the update's COOKIE2 unchanged: the return routability check of the new "
                     f"path passed, the {u.peer} is reachable at {u.src_addr} (RFC 4555 §3.7).")
    elif u.cookie2_echo == "different":
        bad = "COOKIE2 echoed differently"
        parts.append("The answer's COOKIE2 is not the one the update carried: the responder must copy it unchanged "
                     f"and the {u.peer} must then close the IKE SA (RFC 4555 §3.7); an answer that does not echo "
                     "the request's cookie is not an answer to it (a stale copy or a forged one).")
    elif u.cookie2_echo == "missing":
        bad = "COOKIE2 not echoed"
        parts.append(f"The update carried COOKIE2 but the answer has none: the {other} must copy it (RFC 4555 §3.7), "
                     f"so the {u.peer} cannot tell the new path works.")
    if u.check_frame is not None:
        text = f"The {other} checked {u.src_addr} itself with COOKIE2 (frame {u.check_frame}, RFC 4555 §3.5, §3.7): "
        if u.check_echo == "same":
            parts.append(text + "echoed unchanged, the new address is verified.")
        elif u.check_echo:
            bad = bad or f"COOKIE2 of the {other}'s check {'not echoed' if u.check_echo == 'missing' else 'echoed differently'}"
            parts.append(text + ("the answer has no COOKIE2" if u.check_echo == "missing" else
                                 "the answer echoed a different COOKIE2") + f": the {other} must close the IKE SA.")
        else:
            parts.append(text + "never answered in the capture.")
    elif u.answered_frame is not None and not u.error:
        parts.append(f"The {other} sent no return routability check of its own (an INFORMATIONAL with COOKIE2) to "
                     f"{u.src_addr}: it took the authenticated update as it was (RFC 4555 §3.5 lets it check).")
    return bad
