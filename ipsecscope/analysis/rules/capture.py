"""Capture and keys rules: malformed packets, keys that do not fit the capture or are missing, IKE
seen in one direction only."""

from __future__ import annotations

from collections.abc import Iterator

from ...model.idtext import spi_text
from ...model.plural import noun, plural, verb, with_article
from ...model.sa import Finding, FindingMember, Observation, SaState, SaTable, Severity
from .authentication import r_auth_failed
from .common import (
    clock,
    copies_from_capture,
    dur,
    exchange_label,
    flow_ref,
    frames_of,
    ike_key_source,
    other_peer,
    role,
    src_path,
    uniq,
)
from .core import RuleContext, rule


@rule(14, ("IKE-ICV-FAILED", "IKE-KEY-MISMATCH"), (Severity.INFO, Severity.WARNING, Severity.ERROR), ref="RFC 7296 §3.14; RFC 2409 §5")
def r_ike_keys(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """IKE keys were loaded for an IKE SA but do not fit it: ICV failures (IKEv2) or no payload chain."""
    for sa in table.ike_sas.values():
        bad = sa.icv_failed + sa.undecryptable
        if not bad:
            continue
        short = f"{sa.ike_spi_i.hex()[:8]}…"
        source = ike_key_source(ctx, sa)
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
            extra = (f" ({plural(sa.icv_failed, 'ICV failure')}, {sa.undecryptable} not a payload chain)"
                     if sa.icv_failed and sa.undecryptable else "")
            if split:
                sender = failing[0]
                d = "i" if sender == sa.initiator else "r"
                why = (f"Messages from {role(sa, good[0])} decrypt and verify, those from "
                       f"{role(sa, sender)} do not: the SK_e{d}/SK_a{d} columns of the row are wrong "
                       "(a damaged or truncated key), the other direction's keys are right.")
            else:
                why = (f"No encrypted message of this IKE SA {'verifies' if sa.icv_failed else 'decrypts'} with "
                       "them: wrong SK_ei/SK_ai (and "
                       "SK_er/SK_ar), initiator and responder columns mixed up, or a table row for another "
                       "IKE SA with the same SPIs (e.g. from an earlier run).")
            yield Finding(
                code=code, severity=Severity.WARNING,
                title=f"IKE SA {short}: {plural(bad, 'encrypted message')} {what}{extra} — wrong IKE keys",
                explanation=f"The keys from {source} do not match IKE SA {sa.key} between {sa.initiator} and "
                f"{sa.responder}. {why}{note} Until the keys fit, its IDs, CHILD SAs and selectors are "
                "unknown.",
                frames=frames, sa=sa.key,
                hint="Reload the keys from the charon log of this very run (-k charon.log with 'ike 4'), or check "
                "the ikev2_decryption_table column order: SPIi, SPIr, SK_ei, SK_er, encryption, SK_ai, "
                "SK_ar, integrity.", ts=ts)
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
                code="IKE-KEY-MISMATCH", severity=sev,
                title=f"IKE SA {short}: {plural(sa.undecryptable, 'encrypted message')} from {sender} {verb(sa.undecryptable, 'does')} not decrypt with "
                f"the key that decrypts {good[0]}'s — the peers derived different keys (PSK mismatch?)",
                explanation=f"IKEv1 peers encrypt both directions with the same key derived from SKEYID_e (RFC 2409 §5). "
                f"The key from {source} turns {good[0]}'s messages into sound payloads but not those of "
                f"{sender}, so {sender} derived a different key: with pre-shared-key authentication the "
                "two peers hold different PSKs (or a message of the exchange is missing from the capture, "
                f"which breaks the IV chain).{failed}{note}",
                frames=frames, sa=sa.key,
                hint=f"Make the pre-shared keys equal on both peers; add {sender}'s charon log with -k to read "
                "its messages too.", ts=ts)
            continue
        yield Finding(
            code="IKE-KEY-MISMATCH", severity=Severity.WARNING,
            title=f"IKE SA {short}: {plural(sa.undecryptable, 'encrypted message')} could not be decrypted with the loaded "
            "key — wrong IKE key",
            explanation=f"A key from {source} was applied to {plural(sa.undecryptable, 'encrypted message')} of IKE SA {sa.key} "
            f"between {sa.initiator} and {sa.responder}, but none gave a sound payload chain. IKEv1 has no "
            "ICV, so a wrong key shows only this way: the key is not this run's phase-1 encryption key "
            f"(a row for another SA with the same initiator cookie, a damaged key), or a message of the "
            f"exchange is missing from the capture (the IV chain, RFC 2409 Appendix B).{note}",
            frames=frames, sa=sa.key,
            hint="Reload the keys from the charon log of this run (-k charon.log with 'ike 4'), or check the "
            "ikev1_decryption_table row: initiator cookie, then the encryption key.", ts=ts)


@rule(26, "ESP-NO-KEY", Severity.INFO)
def r_no_key(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Keys were given, but some ESP flows have none (their CHILD SA's keys are missing)."""
    if not ctx.keys_given:
        return
    flows = [f for f in table.flows.values() if f.no_key and not f.decrypted and f.protocol == "ESP"]
    if not flows:
        return
    listed = ", ".join(spi_text(f.spi) for f in flows[:6])
    yield Finding(
        code="ESP-NO-KEY", severity=Severity.INFO,
        title=f"No key for {plural(len(flows), 'ESP flow')} ({listed}{'…' if len(flows) > 6 else ''})",
        explanation=f"Keys were loaded, but none matches {plural(len(flows), 'ESP flow')} (src, dst, SPI), so their contents and "
        "ICVs could not be checked.",
        frames=tuple(f.first_frame for f in flows[:6]), sa=flow_ref(flows[0]),
        hint="Add the ESP keys (esp_sa table, ip xfrm state output, charon log with chd 4) or the IKE SA's SK_d "
        "so CHILD keys can be derived.", ts=flows[0].first_ts)


@rule(28, "ESP-UNSUPPORTED-ALGO", Severity.WARNING, ref="RFC 8221")
def r_unsupported(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """ESP keys that name an algorithm (or key size) ipsecscope does not implement."""
    # One finding per flow: its packet count and key source are its own; a keys file naming one
    # unsupported algorithm for many SAs gives one per SA (each a row to fix).
    for f in table.flows.values():
        if not f.unsupported:
            continue
        reason, _, supported = f.unsupported_reason.partition("; supported:")
        reason = reason.strip().rstrip(".") or "the algorithm of its keys is not implemented"
        source = src_path(f.unsupported_keys_source) if f.unsupported_keys_source else "the loaded keys"
        can = f" ipsecscope implements:{supported.rstrip('.')}." if supported else ""
        yield Finding(
            code="ESP-UNSUPPORTED-ALGO", severity=Severity.WARNING,
            title=f"{plural(f.unsupported, 'ESP packet')} {f.src} -> {f.dst} on SPI {spi_text(f.spi)} not decrypted: {reason}",
            explanation=f"The key for SPI {spi_text(f.spi)} from {source} was found, but ipsecscope cannot use it: "
            f"{reason}.{can} Its packets are counted, not decrypted, and their ICVs are not checked.",
            frames=tuple(f.unsupported_frames), sa=flow_ref(f),
            hint="If the key file names the wrong algorithm, fix that row; otherwise open the capture in a tool "
            "that implements it (Wireshark decrypts CAST5-CBC, Blowfish-CBC and Twofish-CBC: `ipsecscope keys "
            "convert KEYS --to esp_sa -o ~/.config/wireshark/esp_sa`).", ts=f.first_ts)


@rule(30, "CAPTURE-MALFORMED", Severity.INFO)
def r_malformed(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Malformed packets in the capture (decoders marked them and went on)."""
    obs = [o for o in table.observations if o.kind in ("malformed", "tracker_error")]
    if not obs:
        return
    first = obs[0]
    layers = sorted({str(o.detail.get("layer", "ike")) for o in obs})
    yield Finding(
        code="CAPTURE-MALFORMED", severity=Severity.INFO,
        title=f"{len(obs)}{'+' if len(obs) >= 20 else ''} malformed {noun(len(obs), 'packet')} ({', '.join(layers)})",
        explanation=f"Some packets could not be fully decoded, e.g. frame {first.frames[0] if first.frames else '?'}: "
        f"{first.detail.get('reason', '')}. The rest of the analysis uses what was readable.",
        frames=frames_of(*(o.frames for o in obs[:6])), sa=None,
        hint=_malformed_hint(obs), ts=first.ts)


def _malformed_hint(obs: list[Observation]) -> str:
    """What to do about the malformed packets: an IP datagram whose other fragments never came is
    no snap-length fault (each fragment was captured whole): they were lost on the path (firewalls
    and NATs often drop fragments, RFC 4459 §2; RFC 7383 for IKE) or by the capture (it started or
    ended mid-datagram, or dropped packets)."""
    frags = [o for o in obs if "IP fragments never completed" in str(o.detail.get("reason", ""))]
    # An RFC 8229 stream's sequence numbers jumping: a segment sent but not captured (decode.tcpencap)
    gaps = [o for o in obs if "RFC 8229 TCP stream gap" in str(o.detail.get("reason", ""))]
    if gaps:
        text = (f"{plural(len(gaps), 'TCP segment')} of an RFC 8229 stream {verb(len(gaps), 'is', 'are')} not in the "
                "capture (its sequence numbers jump; TCP resends what the path loses, so the capture missed it: "
                "dropped packets, or a capture point the retransmission did not pass); the records in it are "
                "missing, the rest of the stream was read from the next record. Capture with a bigger buffer "
                "(tcpdump -B) or nearer a peer.")
        rest_obs = [o for o in obs if o not in gaps]
        if not rest_obs:
            return text
        r = _malformed_hint(rest_obs)
        return f"{text} Other frames: {r[0].lower()}{r[1:]}"
    # A frame captured whole carries the fault in its sender's bytes: no snap length to blame.
    if all(o.detail.get("whole") is True for o in obs if o not in frags):
        rest = ("These frames were captured whole: their senders built them wrong (an implementation bug) or "
                "they were damaged on the way; compare with `tshark -V` on them.")
    else:
        rest = "A truncated capture (snaplen) or a damaged file; re-capture with -s 0 if details matter."
    if not frags:
        return rest
    ended = all("(capture ended)" in str(o.detail.get("reason", "")) for o in frags)
    text = (f"{plural(len(frags), 'IP datagram')} never completed: {verb(len(frags), 'its', 'their')} other fragments "
            + ("were not in the capture before it ended (it stopped mid-datagram, or they were lost on the way)"
               if ended else "never arrived: lost on the path (firewalls and NATs often drop fragments, RFC 4459 "
               "§2) or by the capture (dropped packets)")
            + ", not cut by a snap length; a capture nearer the sender tells which.")
    return text if len(frags) == len(obs) else f"{text} Other frames: {rest[0].lower()}{rest[1:]}"


@rule(100, "CAPTURE-KEYS-UNMATCHED", Severity.WARNING)
def r_keys_unmatched(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """A key file none of whose IKE or ESP SAs appears in the capture: keys for another tunnel or host, or an old log."""
    matches = getattr(ctx.session, "key_matches", None)
    if matches is None:
        return
    for m in matches():
        if not m.matches_nothing:
            continue
        sentence = m.sentence()
        yield Finding(
            code="CAPTURE-KEYS-UNMATCHED", severity=Severity.WARNING, title=sentence[0].upper() + sentence[1:],
            explanation=f"{m.path} holds keys for {plural(m.ike, 'IKE SA')} and {plural(m.esp, 'ESP SA')}, and none of their SPIs "
            f"is in this capture ({plural(len(table.ike_sas), 'IKE SA')}, {plural(len(table.flows), 'ESP flow')}): nothing here "
            "could be decrypted with them. They belong to another tunnel or host, or to an earlier run "
            "(a rotated charon log, SAs rekeyed since).",
            frames=(), sa=None,
            hint="Give the keys of this very run: the charon log (with 'ike 4'/'chd 4' logging) or 'ip xfrm "
            "state' output taken while this capture ran, on one of these peers.", ts=table.first_ts,
            facts={"file": m.path, "ike_sas": m.ike, "esp_sas": m.esp})


def ike_capture_duplicates(table: SaTable) -> tuple[int, list[int]]:
    """IKE messages the capture holds twice (state/copies: the same bytes within CAPTURE_DUP_GAP):
    how many, and the frames of the first copies (up to 6)."""
    n, frames = 0, []
    for sa in table.ike_sas.values():
        for x in sa.exchanges:
            if x.capture_duplicates:
                n += x.capture_duplicates
                frames += x.duplicate_frames[:6 - len(frames)]
    return n, frames


@rule(102, "CAPTURE-DUPLICATES", Severity.INFO, ref="RFC 7296 §2.1; RFC 4303 §3.4.3")
def r_capture_duplicates(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """IKE messages or ESP/AH packets captured twice within milliseconds: the capture point duplicates packets."""
    n, frames = ike_capture_duplicates(table)
    # SPI 0 is no SA's (ESP-RESERVED-SPI): a flood of one crafted packet is not the capture's copy
    flows = [f for f in table.flows.values() if f.capture_duplicates and f.spi != 0 and copies_from_capture(f)]
    if not n and not flows:
        return
    per: dict[str, int] = {}  # protocol -> copies
    for f in flows:
        per[f.protocol] = per.get(f.protocol, 0) + f.capture_duplicates
    parts = ([plural(n, "IKE message")] if n else []) + [plural(k, f"{p} packet") for p, k in sorted(per.items())]
    what = " and ".join(parts)
    copies = n + sum(per.values())
    why = []
    if n:
        why.append("No IKE implementation retransmits that fast (RFC 7296 §2.1: its timers run in seconds; "
                   "libreswan first waits 0.5 s, strongSwan 4 s, for IKEv1 as for IKEv2).")
    if flows:
        named = ", ".join(f"{f.protocol} {f.src} → {f.dst} SPI {spi_text(f.spi)} ({f.capture_duplicates:,})"
                          for f in flows[:4]) + (f" and {len(flows) - 4} more" if len(flows) > 4 else "")
        why.append(f"ESP and AH are never sent twice, and each copy repeats one of the last packets on its flow "
                   f"(a mirror port may queue a copy behind later ones) with the same sequence number, length and "
                   f"ICV: {named}.")
    replays = sum(f.duplicates for f in table.flows.values() if f.spi != 0)
    yield Finding(
        code="CAPTURE-DUPLICATES", severity=Severity.INFO,
        title=f"{what} captured twice (the same bytes within 20 ms)",
        explanation=f"{what} {verb(copies, 'appears')} a second time with the same bytes a few milliseconds or less "
        "after the first. " + " ".join(why) + " The capture saw these packets twice (a bridge and its port, 'any' "
        "with a VLAN device, a mirror of both directions). They are not counted as retransmissions, replays or "
        "packets sent." + (f" {plural(replays, 'other ESP/AH packet')} repeating a sequence number later or with "
                           "other bytes stay replays (ESP-REPLAY)." if replays else ""),
        frames=frames_of(frames, *(f.capture_duplicate_frames for f in flows))[:10],
        sa=flow_ref(flows[0]) if not n and len(flows) == 1 else None,
        hint="Capture on one interface (not 'any'), or drop the copies with `editcap -d IN OUT`.", ts=table.first_ts)


# Distinct responders answering one address, none of its requests captured, from which the
# likelier reading is a reflection attack rather than a capture of one direction: a host that
# really initiates to this many peers at once is a hub, and a hub's captures see both directions.
REFLECTION_PEERS = 10


@rule(101, "IKE-RESPONSE-NO-REQUEST", (Severity.INFO, Severity.WARNING), ref="RFC 7296 §2.1, §2.2; RFC 2408 §3.1")
def r_responses_without_request(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """IKE responses to an address that the capture never shows sending anything to their senders: a capture of one direction, or IKE reflection toward that address."""
    answered: dict[str, list[tuple]] = {}  # the address answered -> (IKE SA, exchange, responder)
    sent: set[tuple[str, str]] = set()  # (from, to) of every IKE message and ESP/AH flow captured
    # (IKE SA, exchange, responder, the earlier request of the same requester) of requests the
    # capture missed while it ran and saw that direction
    missed: list[tuple] = []
    for sa in table.ike_sas.values():
        for i, x in enumerate(sa.exchanges):
            peer = other_peer(sa, x.requester)
            if x.request_frames:
                sent.add((x.requester, peer))
            if x.response_frames:
                sent.add((peer, x.requester))
                if not x.request_frames:
                    before = next((y for y in reversed(sa.exchanges[:i])
                                   if y.requester == x.requester and y.request_frames), None)
                    if before is not None:
                        missed.append((sa, x, peer, before))
                    else:
                        answered.setdefault(x.requester, []).append((sa, x, peer))
    yield from _requests_missed(table, missed)
    sent.update((f.src, f.dst) for f in table.flows.values())
    for target, hits in answered.items():
        # A request of the same pair elsewhere (phase 1's MM3 after a capture began at MM2, a later
        # exchange) or its ESP: both directions are captured, the missing request only predates it.
        hits = [h for h in hits if (target, h[2]) not in sent]
        if not hits:
            continue
        peers = uniq(h[2] for h in hits)
        frames = sorted(fr for _, x, _ in hits for fr in x.response_frames)
        n, m = len(frames), len(peers)
        times = sorted(x.response_ts for _, x, _ in hits if x.response_ts is not None)
        kinds = uniq(f"IKEv{sa.version} {exchange_label(x, sa.version)}" for sa, x, _ in hits)
        what = (f"{plural(n, 'IKE response', sep=True)} ({', '.join(kinds[:3])}{', …' if len(kinds) > 3 else ''}) "
                + (f"from {peers[0]}" if m == 1 else f"from {m:,} peers"))
        named = "" if m == 1 else " (" + ", ".join(peers[:5]) + (f" and {m - 5:,} more" if m > 5 else "") + ")"
        when = (f" in {dur(times[-1] - times[0])} from {clock(times[0])}" if len(times) > 1
                else f" at {clock(times[0])}" if times else "")
        seen = (f"The capture holds {what}{named} to {target}{when}, and nothing {target} sent to "
                f"{'it' if m == 1 else 'any of them'}: no request these answer (an IKE response answers a request from the address it goes to, "
                "RFC 7296 §2.1, §2.2; RFC 2408 §3.1), no other IKE message, no ESP.")
        facts = {"target": target, "responses": n, "responders": m, "ike_sas": len({id(sa) for sa, _, _ in hits})}
        # Every IKE SA and its responses (findings --json "members", finding=CODE in Packets); the
        # finding's own frames are the first 20.
        per_sa: dict[str, FindingMember] = {}
        for sa, x, peer in hits:
            old = per_sa.get(sa.key)
            per_sa[sa.key] = FindingMember(
                sa=sa.key, peers=(target, peer), frames=(*(old.frames if old else ()), *x.response_frames),
                ts=old.ts if old else x.response_ts)
        members = tuple(per_sa.values()) if len(per_sa) > 1 else ()
        if m >= REFLECTION_PEERS:
            yield Finding(
                code="IKE-RESPONSE-NO-REQUEST", severity=Severity.WARNING,
                title=f"{plural(n, 'IKE response', sep=True)} from {m:,} peers to {target} with no request captured — "
                f"{target} is likely the victim of IKE reflection",
                explanation=f"{seen} Many responders answering one address that never asks is the mark of a "
                f"reflection (amplification) attack: someone sends IKE requests with {target} as their spoofed "
                "source, and every IKE endpoint that receives one answers the victim with a larger response. "
                f"A capture that sees one direction only at a host that really initiated to {m:,} peers "
                f"would look the same; that is unlikely at this number of peers.",
                frames=tuple(frames[:20]), sa=None,
                hint=f"If {target} did not start these exchanges, it is being flooded: drop UDP 500/4500 to it from "
                "peers it has no tunnel with (upstream, if the link fills) and report the sources' spoofing "
                "(BCP 38); the responders are open IKE endpoints. If it did, capture both directions.",
                ts=times[0] if times else None, facts=facts, members=members)
            continue
        yield Finding(
            code="IKE-RESPONSE-NO-REQUEST", severity=Severity.INFO,
            title=f"{what} to {target} with no request captured — the capture sees one direction only?",
            explanation=f"{seen} With {'one responder' if m == 1 else f'{m} responders'} this most likely means "
            f"the capture sees only the traffic toward {target}: a mirror port or tap of one direction, a "
            f"capture filter on one source, or an asymmetric route that takes {target}'s packets past the "
            "capture point. (A reflection attack, IKE requests sent with a spoofed source, shows many "
            "responders answering one address.) Findings about unanswered or one-way traffic cannot be "
            "trusted for these peers.",
            frames=tuple(frames[:20]), sa=None,
            hint=f"Capture where both directions pass (on {target} itself, or mirror both directions), or check "
            "the capture filter.", ts=times[0] if times else None, facts=facts, members=members)


def _requests_missed(table: SaTable, missed: list[tuple]) -> Iterator[Finding]:
    """IKE responses whose requests the capture lacks though it ran then and saw that direction
    (the same requester's earlier request of the IKE SA is in it): the capture dropped the request
    (the responder answered it, so the path delivered it), in an RFC 8229 stream a segment the
    capture missed (its gap, CAPTURE-MALFORMED). What the request alone carried is unknown: an
    IKE_AUTH request's IDi, AUTH, SA offer and the initiator's CHILD SA SPI (RFC 7296 §1.2)."""
    if not missed:
        return
    sa, x, peer, before = missed[0]
    label = exchange_label(x, sa.version)
    gaps = [o for o in table.observations if o.kind == "malformed"
            and "RFC 8229 TCP stream gap" in str(o.detail.get("reason", ""))
            and o.src == x.requester and o.dst == peer]
    more = f" ({plural(len(missed) - 1, 'other response')} like it)" if len(missed) > 1 else ""
    gap = (f" Frame {gaps[0].frames[0]} marks a gap in the RFC 8229 TCP stream from {x.requester} to {peer} "
           f"(a segment not captured): the request, whole or in part, was in it." if gaps and gaps[0].frames else "")
    carried = (" So the initiator's ID, AUTH and SA offer, and its CHILD SA SPI, are not in the capture (RFC 7296 "
               "§1.2); the SPI is read from its ESP where that is unambiguous." if label == "IKE_AUTH" else "")
    yield Finding(
        code="IKE-RESPONSE-NO-REQUEST", severity=Severity.INFO,
        title=f"{with_article(label).capitalize()[0]}{with_article(label)[1:]} request from {x.requester} not "
              f"captured, its response from {peer} was"
              + more,
        explanation=f"The capture holds {peer}'s {label} response (frame {x.response_frames[0]}) to {x.requester} "
        f"but not the request it answers, though it holds {x.requester}'s earlier request to {peer} in this IKE SA "
        f"({exchange_label(before, sa.version)}, frame {before.request_frames[0]}): the capture ran and sees "
        f"that direction, and {peer} answered, so the request crossed the path and the capture missed it "
        f"(dropped packets).{gap}{carried}",
        frames=frames_of(*([m[1].response_frames[:1] for m in missed[:6]] + [g.frames[:1] for g in gaps[:1]])),
        sa=sa.key,
        hint="Nothing to fix in the tunnel. For a complete record, check the capture's drop count (tcpdump's "
        "'dropped by kernel', pcapng interface statistics) and capture with a bigger buffer (tcpdump -B).",
        ts=x.response_ts)
