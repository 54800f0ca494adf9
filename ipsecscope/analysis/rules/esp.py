"""ESP integrity and sequence rules: loss, replay, reordering (RFC 4303 §3.4.3), ICV, rekey overlap; AH ICVs."""

from __future__ import annotations

from collections.abc import Iterator

from ...model.idtext import spi_text
from ...model.plural import noun, plural, verb
from ...model.sa import EspFlow, Finding, SaTable, Severity, one_counter
from .common import clock, copies_from_capture, dur, flow_ref, frames_of, icmp_errors, quoted_flow
from .core import RuleContext, rule


def _lost_in_fragments(f: EspFlow) -> int:
    """Of ``f``'s sequence-number gaps, how many are packets whose first IP fragment the capture
    holds (EspFlow.frag_lost_packets, with the numbers as on the wire; an ESN flow compares the low
    32 bits). Beyond the kept few, the count itself: none of them is a whole packet either.
    A live capture's packets still in reassembly (EspFlow.frag_awaited) are no gap either: in flight."""
    if f.seq_min is None or f.seq_max is None or not (f.frag_lost or f.frag_awaited):
        return 0
    lo, hi = f.seq_min & 0xFFFFFFFF, f.seq_max & 0xFFFFFFFF
    seqs = [s for s, *_ in f.frag_lost_packets] + f.frag_awaited
    kept = sum(1 for s in seqs if lo < s < hi or (hi < lo and (s > lo or s < hi)))
    return min(f.lost, kept + f.frag_lost - len(f.frag_lost_packets))


@rule(22, ("ESP-SEQ-GAP", "ESP-REPLAY", "ESP-REORDER"), (Severity.INFO, Severity.WARNING), ref="RFC 4303 §3.3.3, §3.4.3")
def r_seq(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Sequence-number analysis per flow: loss (gaps), replays (duplicates), reordering beyond 64."""
    shared = one_counter(table)  # one counter toward several destinations: not loss
    # One finding per flow, never merged (analysis.rules.aggregate): each title carries that SA's
    # own numbers (lost of span and its ratio, which also sets the severity; duplicates; late
    # packets). Several SAs of one tunnel losing at different rates are several facts.
    for f in table.flows.values():
        if f.spi == 0:
            continue  # no SA's counter (ESP-RESERVED-SPI)
        ref = flow_ref(f)
        span = (f.seq_max - f.seq_min + 1) if f.seq_max is not None and f.seq_min is not None else f.packets
        # gaps whose packets arrived as a first IP fragment only are no mystery: ESP-FRAGMENT-LOST
        # names each of them (all when the flow kept every one; the first few keep their numbers)
        in_frags = _lost_in_fragments(f)
        lost = f.lost - in_frags
        if lost > 0 and id(f) not in shared:
            ratio = lost / max(span, 1)
            also = (f" ({plural(in_frags, 'more sequence number')} arrived as a first IP fragment only: "
                    "ESP-FRAGMENT-LOST)" if in_frags else "")
            yield Finding(
                code="ESP-SEQ-GAP", severity=Severity.WARNING if ratio >= ctx.loss_warn_ratio else Severity.INFO,
                title=f"{f.protocol} loss {f.src} -> {f.dst}: {lost} of {span} sequence numbers missing ({ratio:.1%})",
                explanation=f"On SPI {spi_text(f.spi)} from {f.src} to {f.dst}, {plural(lost, 'sequence number')} between "
                f"{f.seq_min} and {f.seq_max} never appeared in the capture: packets lost before the capture "
                f"point (or the capture dropped them){also}.",
                frames=tuple(f.gap_frames), sa=ref,
                hint="Compare with a capture on the other side to locate the loss; check interface drops and MTU.",
                ts=f.first_ts)
        # sporadic same-bytes copies are the path's (a capture point copies most packets: CAPTURE-DUPLICATES)
        path_copies = 0 if copies_from_capture(f) else f.capture_duplicates
        reps = f.duplicates + path_copies
        if reps:
            seen = (f" ({path_copies:,} of them a recent packet's bytes again within 20 ms: too few "
                    "for a capture point that duplicates, which copies most packets, so a device on the path "
                    "sent them twice)" if path_copies else ", later than a capture's own copy (20 ms) or with other bytes")
            yield Finding(
                code="ESP-REPLAY", severity=Severity.WARNING,
                title=f"{f.protocol} replay {f.src} -> {f.dst}: {plural(reps, 'duplicate sequence number')}",
                explanation=f"{plural(reps, 'packet')} on SPI {spi_text(f.spi)} from {f.src} to {f.dst} repeated a sequence "
                f"number already seen{seen}. The receiver's "
                f"anti-replay check ({'RFC 4302' if f.protocol == 'AH' else 'RFC 4303'} §3.4.3) drops them; "
                "duplication on the path, a sender reusing its counter, or a replay attack.",
                frames=tuple(sorted({*f.duplicate_frames, *(f.capture_duplicate_frames if path_copies else ())})), sa=ref,
                hint="If the capture was taken on one interface, look for a device duplicating packets.",
                ts=f.first_ts)
        if f.reordered:
            yield Finding(
                code="ESP-REORDER", severity=Severity.WARNING if f.reordered > 10 else Severity.INFO,
                title=f"ESP reordering {f.src} -> {f.dst}: {plural(f.reordered, 'packet')} later than the 64-packet window",
                explanation=f"{plural(f.reordered, 'packet')} on SPI {spi_text(f.spi)} arrived more than 64 sequence numbers after "
                "newer ones; a receiver with the default replay window drops them as too old.",
                frames=tuple(f.reordered_frames), sa=ref,
                hint="Increase replay_window on the receiver, or find the path that reorders (load balancing "
                "over links).", ts=f.first_ts)


@rule(23, "ESP-ICV-FAILED", (Severity.WARNING, Severity.ERROR), ref="RFC 4303 §3.4.4")
def r_icv(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """ICV failures: every packet (wrong key / algorithm) or a few (corruption on the path)."""
    # One finding per flow: "every packet fails" points at that SPI's key row (the fix is per row),
    # "some fail" carries that flow's share.
    for f in table.flows.values():
        if not f.icv_failed or f.protocol != "ESP":  # AH's own rule says what AH failures mean (r_ah_icv)
            continue
        # packets sent, not frames: a capture's copy of a packet has its original's outcome
        failed = f.icv_failed - f.copies_icv_failed
        checked = failed + f.decrypted - f.copies_decrypted
        if f.decrypted == 0:
            yield Finding(
                code="ESP-ICV-FAILED", severity=Severity.ERROR,
                title=f"Every ESP packet {f.src} -> {f.dst} on SPI {spi_text(f.spi)} fails its ICV check: wrong key",
                explanation=(f"All {failed} packets" if failed != 1 else "The one packet")
                + " failed integrity verification. With every packet failing, the key (or algorithm, or ICV length) used for SPI "
                f"{spi_text(f.spi)} does not match what {f.src} uses, not a transmission problem.",
                frames=tuple(f.icv_failed_frames), sa=flow_ref(f),
                hint="Check the key file entry for this SPI (algorithm, key, salt for GCM) — or, if the keys came "
                "from the peer, the peers disagree on the keys.", ts=f.first_ts)
        else:
            yield Finding(
                code="ESP-ICV-FAILED", severity=Severity.WARNING,
                title=f"{failed} of {plural(checked, 'ESP packet')} {f.src} -> {f.dst} "
                f"{verb(failed, 'fails')} {'its' if failed == 1 else 'their'} ICV: corruption",
                explanation=f"Most packets on SPI {spi_text(f.spi)} verify, {failed} {verb(failed, 'does')} "
                f"not: the key is right, {'that packet was' if failed == 1 else 'those packets were'} altered "
                "on the path (bad link, middlebox) or truncated in the capture.",
                frames=tuple(f.icv_failed_frames), sa=flow_ref(f),
                hint="Check for errors on the links between the peers; a capture with a snap length shorter than "
                "the packets also causes this.", ts=f.first_ts)


@rule(24, "ESP-REKEY-OVERLAP", (Severity.INFO, Severity.WARNING), ref="RFC 7296 §2.8")
def r_rekey_overlap(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Traffic that stayed on the old SA after a CHILD SA rekey, and for how long."""
    # Per CHILD SA and flow: the rekey time and how long the sender stayed are the finding.
    for c in table.child_sas.values():
        if c.rekeyed_ts is None:
            continue
        for f in c.flows(table):
            if not f.after_rekey or f.after_rekey_last_ts is None:
                continue
            span = f.after_rekey_last_ts - c.rekeyed_ts
            sev = Severity.WARNING if span > ctx.rekey_overlap_warn_s else Severity.INFO
            yield Finding(
                code="ESP-REKEY-OVERLAP", severity=sev,
                title=f"CHILD SA #{c.id} rekeyed at {clock(c.rekeyed_ts)}, {f.src} kept sending on the old SPI "
                f"{spi_text(f.spi)} for {dur(span)}",
                explanation=f"After the rekey of CHILD SA #{c.id} into #{c.rekeyed_into}, {f.src} sent {f.after_rekey} "
                f"more {noun(f.after_rekey, 'packet')} to {f.dst} on the old SPI {spi_text(f.spi)}, the last {dur(span)} later. A short "
                "overlap is normal (RFC 7296 §2.8); a long one means the outbound SA was switched late.",
                frames=(f.last_frame,), sa=flow_ref(f),
                hint="If the old SA is deleted before the sender switches, those packets are lost; check the "
                "sender's kernel/IPsec stack for late outbound SA updates.", ts=c.rekeyed_ts)


@rule(91, "ESP-RESERVED-SPI", Severity.WARNING, ref="RFC 4303 §2.1; RFC 4302 §2.4")
def r_reserved_spi(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """ESP or AH packets with SPI 0: reserved, never sent by an SA, so no receiver takes them."""
    for f in table.flows.values():
        if f.spi != 0:
            continue
        # RFC 4303 §2.1 / RFC 4302 §2.4: SPI 0 is reserved for local use and MUST NOT be sent on
        # the wire; an SA's counter starts at 0 and its first packet carries 1 (§2.2 / §2.5).
        zero_seq = f.seq_max == 0
        obs = [o for o in icmp_errors(table) if o.frames and quoted_flow(table, o) is f]
        icmp = [o.frames[0] for o in obs]
        answered = "".join(f" {o.src} answered {o.detail.get('count') or 'some'} of them with ICMP {o.detail.get('what')} "
                           f"(frame {o.frames[0]})." for o in obs[:2])
        yield Finding(
            code="ESP-RESERVED-SPI", severity=Severity.WARNING,
            title=f"{plural(f.packets, f'{f.protocol} packet')} {f.src} -> {f.dst} with the reserved SPI 0",
            explanation=f"{f.src} sent {plural(f.packets, f'{f.protocol} packet')} to {f.dst} on SPI 0, which is reserved "
            f"and never sent by an SA ({'RFC 4302 §2.4' if f.protocol == 'AH' else 'RFC 4303 §2.1'}): no receiver has an "
            "SA to take them, so they are not tunnel traffic (no one-way SA, no replay)"
            + (", and all carry sequence number 0, which no SA sends (its first packet is 1)" if zero_seq else "")
            + f". A scanner or flood tool, a fuzzer, or a broken IPsec stack sent them.{answered}",
            frames=frames_of((f.first_frame, f.last_frame), icmp[:2]), sa=flow_ref(f),
            hint=f"Find what on {f.src} builds these packets; if they are unwanted, filter IP protocol "
            f"{51 if f.protocol == 'AH' else 50} with SPI 0 at the edge.", ts=f.first_ts)


@rule(90, "AH-ICV-FAILED", (Severity.WARNING, Severity.ERROR), ref="RFC 4302 §3.3.3, §3.4.4")
def r_ah_icv(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """AH ICV failures (with AH keys): every packet (wrong key or algorithm, or a NAT: AH covers the
    IP addresses) or a few (corruption); a NAT proven when the key file's address verifies; a wrong
    integrity algorithm proven when the ICV field's length does not fit it (RFC 4302 §2.6)."""
    for f in table.flows.values():
        if f.protocol != "AH" or not f.icv_failed:
            continue
        checked = f.icv_failed + f.decrypted  # an AH flow's "decrypted" counts ICVs verified
        count = f"{f.icv_failed} of {plural(checked, 'AH packet')}"
        common = dict(code="AH-ICV-FAILED", frames=tuple(f.icv_failed_frames), sa=flow_ref(f), ts=f.first_ts)
        if f.ah_nat:
            logged, wire = f.ah_nat.split(" -> ", 1)
            yield Finding(
                severity=Severity.ERROR,
                title=f"{count} {f.src} -> {f.dst} on SPI {spi_text(f.spi)} {verb(f.icv_failed, 'fails')} "
                f"integrity: a NAT rewrote {logged} to {wire}",
                explanation=f"The key file names {logged} for this SA, the wire shows {wire}; with {logged} put back "
                "the ICV verifies, so the key is right and the address was translated on the path. AH covers the "
                "outer IP addresses (RFC 4302 §3.3.3), so every packet through a NAT fails its check at the "
                "receiver (RFC 3715 §2.1: AH is incompatible with NAT).",
                hint="AH cannot cross a NAT: remove the NAT from the path, or use ESP with UDP encapsulation "
                "(RFC 3948), which NAT traversal was made for.", **common)
        elif f.decrypted == 0 and f.ah_icv_len:
            yield Finding(
                severity=Severity.ERROR,
                title=f"{count} {f.src} -> {f.dst} on SPI {spi_text(f.spi)} {verb(f.icv_failed, 'fails')} "
                "integrity: the key file names another integrity algorithm",
                explanation=f"{f.ah_icv_len[0].upper()}{f.ah_icv_len[1:]}. The ICV field holds the ICV and only "
                "the padding that aligns it to 32 bits (IPv4) or 64 bits (IPv6) (RFC 4302 §2.6), so its length "
                "names the algorithm's ICV length: no key can make these packets verify with the algorithm given.",
                hint=f"Correct the integrity algorithm of SPI {spi_text(f.spi)} in the key file (the IKE "
                "proposal the peers agreed, or `ip xfrm state` on a peer, names it).", **common)
        elif f.decrypted == 0:
            nat = _nat_seen(table, f)
            yield Finding(
                severity=Severity.ERROR,
                title=f"{count} {f.src} -> {f.dst} on SPI {spi_text(f.spi)} {verb(f.icv_failed, 'fails')} "
                "integrity: wrong key or algorithm, or a NAT",
                explanation=(f"All {f.icv_failed} packets" if f.icv_failed != 1 else "The one packet")
                + " failed AH integrity verification. When every packet fails, the key, algorithm or ICV length "
                f"for SPI {spi_text(f.spi)} differs from what {f.src} uses — or a NAT or another middlebox "
                "rewrites a field AH covers: AH authenticates the outer IP addresses too (RFC 4302 §3.3.3), so "
                "a NAT breaks every packet. " + (nat or "Nothing in the capture shows a NAT between these peers "
                "(no IKE NAT detection for them), so check the key first."),
                hint="Check the key file entry for this SPI (integrity algorithm, key, ICV length); if a NAT is on "
                "the path, AH cannot work through it: use ESP with UDP encapsulation (RFC 3948).", **common)
        else:
            yield Finding(
                severity=Severity.WARNING,
                title=f"{count} {f.src} -> {f.dst} on SPI {spi_text(f.spi)} {verb(f.icv_failed, 'fails')} "
                "integrity: corruption",
                explanation=f"{plural(f.decrypted, 'packet')} on SPI {spi_text(f.spi)} {verb(f.decrypted, 'verifies', 'verify')}, "
                f"{f.icv_failed} {verb(f.icv_failed, 'does')} not: the key is right, "
                f"{'that packet was' if f.icv_failed == 1 else 'those packets were'} altered on the path in a "
                "field AH covers (payload, addresses, immutable options) or cut short in the capture.",
                hint="Check for errors on the links between the peers, and for a middlebox that rewrites some "
                "packets (an ALG, a TCP MSS clamp; a DSCP rewrite is harmless: AH leaves DSCP out).", **common)


def _nat_seen(table: SaTable, f) -> str:
    """What IKE's NAT detection says about the peers of an AH flow's CHILD SA, as a sentence ('' if
    nothing: no IKE SA, or no NAT seen)."""
    child = table.child_sas.get(f.child_sa) if f.child_sa is not None else None
    ike = table.ike_sas.get(child.ike_sa) if child is not None and child.ike_sa else None
    if ike is None or ike.nat_detected is None:
        return ""
    from .nat_mtu import nat_verdict

    natted, _forced = nat_verdict(table, ike)
    if not natted:
        return ""
    who = " and ".join(f"the {s.role} ({s.addr})" for s in natted)
    return f"IKE's NAT detection (RFC 7296 §2.23) says {who} {verb(len(natted), 'is', 'are')} behind a NAT: that alone breaks AH."
