"""NAT and MTU rules: NAT detection and its side (RFC 7296 §2.23), IP fragmentation of IKE and ESP (ESP
packets lost with their later fragments),
ICMP path-MTU errors quoting ESP (RFC 1191, RFC 8201)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ...model.idtext import spi_text
from ...model.plural import noun, plural, verb
from ...model.sa import (
    ChildSa,
    EspFlow,
    Finding,
    IkeExchange,
    IkeSa,
    NatRebinding,
    Observation,
    SaState,
    SaTable,
    Severity,
    endpoint_text,
)
from .common import (
    child_label,
    clock,
    exchange_label,
    flow_ref,
    frames_of,
    icmp_errors,
    other_peer,
    quoted_flow,
)
from .core import RuleContext, rule
from .mobike_move import mobike_finding, mobike_phrase
from .pmtu import BlackHole, black_hole


def _port_of(x: IkeExchange, addr: str) -> int:
    """The UDP port ``addr`` used in exchange ``x`` as the capture shows it."""
    return x.requester_port if x.requester == addr else x.responder_port


@dataclass(slots=True)
class NatSide:
    """What the capture says about one peer and NAT (RFC 7296 §2.23, RFC 3947, RFC 3948)."""

    addr: str
    role: str  # "initiator" | "responder"
    own_source_fails: bool = False  # its NAT_DETECTION_SOURCE_IP does not match what the capture shows
    other_destination_fails: bool = False  # the other peer's DESTINATION hash for it does not match
    other_destination_seen: bool = False  # ... the capture holds that hash at all
    first_port: int = 0  # its UDP port in the first exchange, as seen here
    natt_port: int = 0  # its port once IKE floated to 4500 (0: no float)
    keepalives: int = 0
    ports: list[tuple[int, int]] = field(default_factory=list)  # (port, frame) after the float, in order
    evidence: list[str] = field(default_factory=list)

    @property
    def confirmed(self) -> bool:
        return bool(self.evidence)

    @property
    def seen_translated(self) -> bool:
        """The capture shows this peer as the other peer sees it: on the NAT's public side. Its own
        source hash fails and the other peer's destination hash (over what it sees, RFC 7296 §2.23)
        matches the capture. When that one fails too, the other peer sees another address."""
        return self.own_source_fails and not self.other_destination_fails


def hashes_unheeded(sa: IkeSa) -> IkeExchange | None:
    """The exchange that shows an IKEv2 SA's peers did not act on its failing NAT_DETECTION hashes
    (None: they did, or the capture cannot tell). RFC 7296 §2.23: an initiator whose hashes do not
    match MUST move all later IKE and ESP of the SA to UDP 4500. An exchange after IKE_SA_INIT still
    on UDP 500 at both ends and answered there means the initiator found its hashes matching and
    the responder took it: both compute them otherwise than we do (not SHA-1(SPIi | SPIr | IP |
    port)) or ignore them, and the hashes say nothing of a NAT between them (tcpdump's
    ikev2four.pcap: two hosts of 192.168.1.0/24, every hash failing, IKE_AUTH and eight
    CREATE_CHILD_SAs answered on 500)."""
    if sa.version != 2 or not sa.nat_mismatch:
        return None
    xs = [x for x in sa.exchanges if x.request_frames]
    if any(4500 in (x.requester_port, x.responder_port) for x in xs):
        return None
    return next((x for x in xs if x.exchange != 34 and x.response_frames
                 and x.requester_port == 500 and x.responder_port == 500), None)


def nat_sides(table: SaTable, sa: IkeSa) -> list[NatSide]:
    """Both peers of ``sa``: which hash failed for each, and what corroborates a NAT.

    A failed NAT_DETECTION_SOURCE_IP alone does not prove a NAT: strongSwan sends a deliberately
    wrong one to force UDP encapsulation (encap = yes, kernel-libipsec). A NAT shows more: a
    NAPT rewrites the source port away from 500/4500, the peer behind it sends NAT keepalives
    (RFC 3948 §4), and a capture taken behind the NAT sees the other peer's DESTINATION hash fail
    (nobody fakes that one).
    """
    mism = set() if hashes_unheeded(sa) is not None else set(sa.nat_mismatch)
    out = []
    xs = [x for x in sa.exchanges if x.request_frames]
    # IKEv1 NAT-D payloads (RFC 3947 §3.2) say the same as IKEv2's NAT_DETECTION_* notifies
    src_hash, dst_hash = (("NAT_DETECTION_SOURCE_IP", "NAT_DETECTION_DESTINATION_IP") if sa.version == 2
                          else ("NAT-D hash of its own address", "NAT-D hash"))
    first_msg = "IKE_SA_INIT" if sa.version == 2 else f"first {sa.mode or 'phase 1'} Mode message"
    for addr, role in ((sa.initiator, "initiator"), (sa.responder, "responder")):
        other = other_peer(sa, addr)
        s = NatSide(addr, role, ("source", addr) in mism, ("destination", other) in mism, other in sa.nat_dst_seen)
        if xs:
            s.first_port = _port_of(xs[0], addr)
        floated = [x for x in xs if 4500 in (x.requester_port, x.responder_port)]
        if floated:
            s.natt_port = _port_of(floated[0], addr)
            for x in floated:
                p = _port_of(x, addr)
                if not s.ports or s.ports[-1][0] != p:
                    s.ports.append((p, x.request_frames[0]))
        s.keepalives = table.keepalives.get((addr, other), 0)  # counted by the tracker (state/)
        if s.other_destination_fails:
            # where the capture was taken is said once, by r_nat (behind the NAT: the other peer's
            # view of the address is not in it)
            s.evidence.append(f"{other}'s {dst_hash} does not match {addr} as captured")
        if s.seen_translated:  # behind the NAT, the port captured is the peer's own
            if s.first_port not in (500, 4500, 0):
                s.evidence.append(f"its {first_msg} arrives from port {s.first_port}, not 500: a NAPT rewrote it")
            elif s.natt_port not in (4500, 0):
                s.evidence.append(f"after the float its port is {s.natt_port}, not 4500: a NAPT rewrote it")
            if s.keepalives:
                s.evidence.append(f"it sends NAT keepalives ({s.keepalives}), as the peer behind a NAT does "
                                  "(RFC 3948 §4)")
        out.append(s)
    return out


def nat_verdict(table: SaTable, sa: IkeSa) -> tuple[list[NatSide], list[NatSide]]:
    """(peers behind a NAT, peers whose source hash fails with nothing else showing a NAT).

    The raw hash verdicts (``IkeSa.nat_initiator`` / ``nat_responder``) cannot tell the two apart:
    a peer that forces UDP encapsulation sends a wrong NAT_DETECTION_SOURCE_IP on purpose, so every
    view that names a side asks this instead (RFC 7296 §2.23)."""
    sides = nat_sides(table, sa)
    return [s for s in sides if s.confirmed], [s for s in sides if s.own_source_fails and not s.confirmed]


def nat_phrase(table: SaTable, sa: IkeSa, mobike: bool = True) -> str:
    """One line for the SA views: who is behind a NAT, who only forces encapsulation ('none' if
    nobody), and each NAT rebinding (the README promises them in `sas`; only the finding said so).
    ``mobike``: the MOBIKE moves too, for a view without a line of their own (`sas` has one)."""
    natted, forced = nat_verdict(table, sa) if sa.nat_detected is not None else ([], [])
    parts = [f"{s.role} behind a NAT" + (f" (seen as {endpoint_text(s.addr, s.first_port)})" if s.seen_translated else "")
             for s in natted]
    parts += [f"{s.role} forces UDP encapsulation (no NAT seen)" for s in forced]
    parts += [rebinding_phrase(rb) for rb in nat_rebindings(sa)]
    if mobike and sa.mobike_updates:
        parts.append("MOBIKE: " + mobike_phrase(sa))
    return "; ".join(parts) or "none"


def nat_rebindings(sa: IkeSa | ChildSa) -> list[NatRebinding]:
    """The rebindings a NAT made: a move the peer announced with MOBIKE UPDATE_SA_ADDRESSES is its
    own (RFC 4555 §3.5; IKE-MOBIKE-MOVE tells it), not a NAT dropping a mapping."""
    return [rb for rb in sa.nat_rebindings if rb.mobike_frame is None]


def rebinding_phrase(rb: NatRebinding) -> str:
    """A NAT rebinding in a few words for the SA views (the finding has the whole story)."""
    old, new = endpoint_text(rb.old_addr, rb.old_port), endpoint_text(rb.new_addr, rb.new_port)
    text = f"{rb.peer} rebound {old} → {new} at {clock(rb.ts)} (frame {rb.frame})"
    if rb.followed_ts is not None:
        text += f", followed {rb.followed_ts - rb.ts:.1f} s later (frame {rb.followed_frame})"
    else:
        text += ", never followed in the capture"
    return text + (f", {plural(rb.to_old, 'packet')} to the old mapping" if rb.to_old else "")


def _rebinding_text(rb: NatRebinding, ctx: RuleContext, version: int = 2, decrypted: bool = False) -> str:
    """One NAT rebinding (state/nat.py) in words: who moved where, when, and whether the other peer
    followed. IKEv2 peers follow the latest authenticated source (RFC 7296 §2.23); IKEv1 NAT-T
    peers the port the other's latest IKE/ESP comes from (RFC 3947 §4, RFC 3948)."""
    ref = "RFC 7296 §2.23" if version == 2 else "IKEv1 NAT-T, RFC 3947 §4"
    old, new = endpoint_text(rb.old_addr, rb.old_port), endpoint_text(rb.new_addr, rb.new_port)
    what = "address and port" if rb.old_addr != rb.new_addr else "port"
    text = (f"NAT rebinding: the {rb.peer}'s {what} changed in the middle of the SA, {old} -> {new}, first seen at "
            f"{clock(rb.ts)} (frame {rb.frame}, {rb.seen_in}) with the same SPIs: its NAT dropped the "
            "mapping and made a new one" + (
                " — or the peer itself moved with MOBIKE (RFC 4555 §3.5), whose UPDATE_SA_ADDRESSES is "
                "encrypted: keys would tell." if rb.old_addr != rb.new_addr and version == 2 and not decrypted
                else "."))
    stale = (f" {plural(rb.to_old, 'packet')} still went to the old {old} meanwhile (frames "
             f"{', '.join(map(str, rb.to_old_frames))}), lost in the NAT." if rb.to_old else "")
    if rb.followed_ts is not None:
        return (text + f" The other peer followed ({ref}) {rb.followed_ts - rb.ts:.1f} s later: its first "
                f"packet to {new} was frame {rb.followed_frame} ({rb.followed_in})." + stale)
    return (text + f" The other peer never sent to {new} in the capture: it must move there on the next "
            f"authenticated message from it ({ref}), or its traffic keeps going to the stale mapping." + stale)


def _unfollowed(rbs: list[NatRebinding]) -> bool:
    """A rebinding the other peer never followed while it kept sending to the old endpoint: one-way loss."""
    return any(rb.followed_ts is None and rb.to_old for rb in rbs)


@rule(9, "IKE-NAT-DETECTED", (Severity.INFO, Severity.WARNING), ref="RFC 7296 §2.23; RFC 3947; RFC 3948")
def r_nat(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """NAT from NAT_DETECTION_* hashes (RFC 7296 §2.23, RFC 3947): which side, its translated address, float, keepalives, rebinding."""
    yield from _inferred_rebindings(table, ctx)
    for sa in table.ike_sas.values():
        rebinds = nat_rebindings(sa)
        if not (sa.nat_detected or rebinds) or sa.rekeyed_from:
            continue
        init = next((x for x in sa.exchanges if x.exchange in (34, 2, 4)), None)
        frames = frames_of(init.request_frames[:1] + init.response_frames[:1]) if init else ()
        natted, forced = nat_verdict(table, sa)
        src_hash, dst_hash = (("NAT_DETECTION_SOURCE_IP", "NAT_DETECTION_DESTINATION_IP") if sa.version == 2
                              else ("NAT-D hash of its own address", "NAT-D hash (RFC 3947 §3.2)"))
        parts = []
        for s in natted:
            if s.seen_translated:  # the capture is on the public side: it shows the translation
                seen = f"{endpoint_text(s.addr, s.first_port)}" + (f", then {endpoint_text(s.addr, s.natt_port)} on {'TCP' if sa.tcp_frame is not None else 'UDP'} 4500"
                                                             if s.natt_port else "")
                # RFC 3947 §3.2 / RFC 7296 §2.23: the source hash is over the sender's own view of its
                # address; it failed while the other peer's hash over what it received matched, so the
                # address captured is the NAT's public one, not the peer's own (that is only hashed)
                other = other_peer(sa, s.addr)
                where = (f"{other} sees it as {seen}" + (": the NAT's public side" if s.other_destination_seen else "")
                         + f". Its {src_hash} is over another address or port, its own, which the capture does "
                         "not show, " + (f"while {other}'s {dst_hash} for it matches {endpoint_text(s.addr, s.first_port)}"
                                         if s.other_destination_seen else
                                         f"and {other} sent no {dst_hash} here to confirm what it sees"))
            elif s.own_source_fails:
                # Neither hash matches the capture: it shows neither the peer's own view nor the
                # other's (nDPI's NAT-T client capture: 192.168.2.100:10500 in both failing hashes).
                where = (f"its own source hash does not match {endpoint_text(s.addr, s.first_port)} as captured either: the "
                         "capture was taken between two translations (a NAT on each side of it), or this peer "
                         "sends a deliberately wrong source hash to force UDP encapsulation and the capture is "
                         "behind its NAT; either way the address the other peer sees is not visible here")
            else:
                where = ("the capture was taken behind its NAT, so the address the other peer sees is not "
                         "visible here")
            # seen translated, s.addr is the NAT's address, not the peer's: do not call it the peer's
            who = f"The {s.role}" if s.seen_translated else f"The {s.role} {s.addr}"

            parts.append(f"{who} is behind a NAT: {'; '.join(s.evidence)}. {where[0].upper()}{where[1:]}.")
        own_hash = "NAT_DETECTION_SOURCE_IP" if sa.version == 2 else "NAT-D hash of its own address (RFC 3947 §3.2)"
        for s in forced:
            # The other peer's destination hash is evidence only when the capture holds it (RFC 7296
            # §2.23, RFC 3947 §3.2): a COOKIE, INVALID_KE_PAYLOAD or NO_PROPOSAL_CHOSEN answer, or a
            # phase 1 cut before MM4, carries none (IkeSa.nat_dst_seen)
            other = other_peer(sa, s.addr)
            theirs = (f"{other}'s destination hash for it matches" if s.other_destination_seen else
                      f"{other} sent no {dst_hash} here to compare")
            parts.append(f"The {s.role} {s.addr}'s {own_hash} does not match the capture, but nothing "
                         f"else says it is translated (port {s.first_port}, no keepalives from it, {theirs}): it "
                         "forces UDP encapsulation (strongSwan encap = yes and kernel-libipsec send a deliberately "
                         "wrong source hash) — or sits behind a NAT that keeps its ports.")
        x4500 = next((x for x in sa.exchanges if 4500 in (x.requester_port, x.responder_port) and x.request_frames), None)
        float_frame = x4500.request_frames[0] if x4500 is not None else None
        if sa.version == 1 and sa.natt_frame is not None:
            # IKEv1 floats inside phase 1 (RFC 3947 §4: from Main Mode's 5th message, or Aggressive
            # Mode's 3rd), not at an exchange boundary as IKEv2 does at IKE_AUTH
            x4500 = next((x for x in sa.exchanges if sa.natt_frame in (*x.request_frames, *x.response_frames)), x4500)
            float_frame = sa.natt_frame
        elif sa.natt_frame is not None and (float_frame is None or sa.natt_frame < float_frame):
            # IKEv2 floats at IKE_AUTH (RFC 7296 §2.23): when its request is not captured, its answer shows it
            auth = next((x for x in sa.exchanges if x.exchange == 35 and sa.natt_frame in x.response_frames), None)
            if auth is not None:
                x4500, float_frame = auth, sa.natt_frame
        if x4500 is not None and sa.tcp_frame is not None:
            parts.append(f"IKE moved from UDP 500 to TCP 4500 in {exchange_label(x4500, sa.version)} (frame "
                         f"{float_frame}) and ESP travels in the same TCP connection (RFC 8229).")
        elif x4500 is not None:
            parts.append(f"IKE floated from UDP 500 to 4500 in {exchange_label(x4500, sa.version)} (frame "
                         f"{float_frame}) and ESP is UDP-encapsulated (RFC 3948).")
        parts += [_rebinding_text(rb, ctx, sa.version, sa.decrypted) for rb in rebinds]
        if natted:
            title = "NAT detected: " + " and ".join(
                f"{s.role} is behind a NAT (seen as {endpoint_text(s.addr, s.first_port)}"
                + (", the NAT's address)" if s.other_destination_seen else ")")
                if s.seen_translated else f"{s.role} {s.addr} is behind a NAT" for s in natted)
        elif forced:
            title = ("UDP encapsulation forced by " + " and ".join(f"{s.role} {s.addr}" for s in forced)
                     + " (no NAT seen)")
        elif (kept := hashes_unheeded(sa)) is not None:
            kinds = {addr: sorted(k for k, a in sa.nat_mismatch if a == addr) for _k, addr in sa.nat_mismatch}
            failing = "; ".join(f"{' and '.join(f'NAT_DETECTION_{k.upper()}_IP' for k in ks)} hash over {addr}"
                                for addr, ks in kinds.items())
            title = f"NAT_DETECTION hashes fail, but {sa.initiator} and {sa.responder} stayed on UDP 500 (no NAT shown)"
            frames = frames_of(frames, [kept.request_frames[0], kept.response_frames[0]])
            parts.insert(0, f"These hashes do not match the addresses and ports captured: {failing}. Yet {sa.initiator} sent "
                         f"{exchange_label(kept, sa.version)} on UDP 500 (frame {kept.request_frames[0]}) and "
                         f"{sa.responder} answered it there (frame {kept.response_frames[0]}). An initiator whose hashes do "
                         "not match MUST move all later IKE and ESP to UDP 4500 (RFC 7296 §2.23): these peers found "
                         "their hashes matching, so they compute them otherwise than SHA-1(SPIi | SPIr | IP | port) or "
                         "ignore them, and the hashes are no evidence of a NAT between them.")
        else:
            title = "NAT detected"
        if rebinds:
            rb = rebinds[0]
            title += (f"; NAT rebinding of the {rb.peer} {endpoint_text(rb.old_addr, rb.old_port)} -> "
                      f"{endpoint_text(rb.new_addr, rb.new_port)}"
                      + (f" ({len(rebinds)} in all)" if len(rebinds) > 1 else ""))
        bad = _unfollowed(rebinds)
        yield Finding(
            code="IKE-NAT-DETECTED", severity=Severity.WARNING if bad else Severity.INFO, title=title,
            explanation=" ".join(parts),
            frames=frames_of(frames, [float_frame] if float_frame is not None else (),
                             *_rebinding_frames(rebinds)), sa=sa.key,
            hint=_REBIND_HINT if bad else _UNHEEDED_HINT if not natted and not forced and hashes_unheeded(sa) else
            ("Nothing to fix if the tunnel works; the TCP connection to port 4500 must stay open (RFC 8229 §6: the "
             "initiator opens it again when it breaks)." if sa.tcp_frame is not None else
             "Nothing to fix if the tunnel works; UDP 4500 must stay open and NAT "
             "keepalives keep the mapping alive.") if natted or rebinds else
            "Nothing to fix: UDP encapsulation was asked for, not needed.",
            ts=sa.created_ts)


@rule(83, "IKE-MOBIKE-MOVE", (Severity.INFO, Severity.WARNING), ref="RFC 4555 §3.5; RFC 4555 §3.6; RFC 4301 §4.1")
def r_mobike(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """An IKE SA and its CHILD SAs moved to a new address pair by MOBIKE UPDATE_SA_ADDRESSES (RFC
    4555 §3.5): who moved from where to where and when, NAT on the new path, and what went wrong
    (no answer, an error answer, packets still sent to the old address)."""
    for sa in table.ike_sas.values():
        # a peer that forced UDP encapsulation sent a wrong NAT_D source hash on purpose (RFC 7296 §2.23)
        forced = {s.role for s in nat_verdict(table, sa)[1]} if sa.nat_detected is not None else set()
        for u in sa.mobike_updates:
            yield mobike_finding(table, sa, u, forced)


_UNHEEDED_HINT = ("Nothing to fix while no NAT sits between the peers; behind one they would not move to UDP 4500 and "
                  "their ESP would not pass it: check both peers' NAT-T support (RFC 7296 §2.23, RFC 3948).")
_REBIND_HINT = ("The NAT in front of the peer that moved dropped its mapping: send NAT keepalives more often than the "
                "NAT's UDP timeout (strongSwan keep_alive, default 20 s) and let the other peer follow a new "
                "address (it must, RFC 7296 §2.23; with MOBIKE, RFC 4555, the moving peer announces it).")


def _rebinding_frames(rbs: list[NatRebinding]) -> list[list[int]]:
    return [[rb.frame, *rb.to_old_frames[:1]] + ([rb.followed_frame] if rb.followed_frame is not None else [])
            for rb in rbs[:3]]


def _inferred_rebindings(table: SaTable, ctx: RuleContext):
    """NAT rebinding on CHILD SAs inferred from ESP alone (no IKE SA in the capture)."""
    for c in table.child_sas.values():
        if not c.nat_rebindings or c.ike_sa is not None:
            continue
        rb = c.nat_rebindings[0]
        bad = _unfollowed(c.nat_rebindings)
        yield Finding(
            code="IKE-NAT-DETECTED", severity=Severity.WARNING if bad else Severity.INFO,
            title=f"NAT rebinding of the {rb.peer} {endpoint_text(rb.old_addr, rb.old_port)} -> "
            f"{endpoint_text(rb.new_addr, rb.new_port)} (CHILD SA #{c.id}, no IKE seen)",
            explanation=" ".join(_rebinding_text(r, ctx) for r in c.nat_rebindings),
            frames=frames_of(*_rebinding_frames(c.nat_rebindings)), sa=f"child:{c.id}",
            hint=_REBIND_HINT if bad else "Nothing to fix if the tunnel works; NAT keepalives keep the mapping alive.",
            ts=rb.ts)


def _unfinished(table: SaTable) -> set[int]:
    """First frames of IP datagrams whose other fragments never came (the decoder's "IP fragments
    never completed" marks, as the tracker keeps them)."""
    return {o.frames[0] for o in table.observations if o.kind == "malformed" and o.frames
            and o.detail.get("layer") == "ip" and str(o.detail.get("reason", "")).startswith("IP fragments never completed")}


@rule(10, "IKE-IP-FRAGMENTED", (Severity.WARNING, Severity.ERROR), ref="RFC 7383")
def r_ip_fragmented(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """IKE messages fragmented at the IP layer without IKE fragmentation (RFC 7383): MTU trouble."""
    for sa in table.ike_sas.values():
        xs = [x for x in sa.exchanges if x.ip_fragmented]
        if not xs:
            continue
        both = all(sa.ike_fragmentation) if sa.version == 2 else False
        lost = [x for x in xs if not x.response_frames]
        sev = Severity.ERROR if lost else Severity.WARNING
        x = xs[0]
        # Requests the capture holds only the first IP fragment of (decode.demux reads the IKE header
        # there when the rest never came): the other fragments were lost before the capture point.
        firsts = [f for y in xs for f in y.request_frames if f in cut] if (cut := _unfinished(table)) else []
        yield Finding(
            code="IKE-IP-FRAGMENTED", severity=sev,
            title=f"IKE messages between {sa.initiator} and {sa.responder} were IP-fragmented"
            + (" and went unanswered" if lost else ""),
            explanation=f"{plural(len(xs), 'exchange')} ({', '.join(exchange_label(y, sa.version) for y in xs[:3])}) carried IKE messages "
            "larger than the path MTU, split into IP fragments. Firewalls and NATs often drop fragments"
            + (", and these requests were never answered." if lost else ".")
            + (" Of " + (f"the requests sent (frames {', '.join(map(str, firsts[:5]))})" if len(firsts) > 1 else
                          f"the request sent (frame {firsts[0]})")
               + f" the capture holds only the first IP fragment: the others were lost between {x.requester} and the "
               "capture point, as where a firewall or NAT drops non-first fragments (they carry no UDP ports)."
               if firsts else "")
            + ("" if both else " IKE fragmentation (RFC 7383) was not negotiated by both peers."),
            frames=frames_of(*(y.request_frames[:2] for y in xs[:3])), sa=sa.key,
            hint="Enable IKE fragmentation on both peers (strongSwan: fragmentation = yes, the default) or "
            "reduce message size (fewer certificates, smaller CERTREQ lists).", ts=x.request_ts)


# A piece arriving after the last-flagged one this long after the first piece came from the
# sender's retransmission (strongSwan retransmits after 4 s by default), not from reordering.
_LATE_PIECE = 0.2


@rule(81, "IKE-FRAGMENT-LOST", (Severity.INFO, Severity.WARNING, Severity.ERROR),
      ref="Cisco/strongSwan IKEv1 fragmentation (payload 132); RFC 2408 §3.1")
def r_v1_fragment_lost(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """IKEv1 messages sent in Fragment payloads (132) of which a piece went missing."""
    from ...state.names import exchange_name

    for sa in table.ike_sas.values():
        never = [fs for fs in sa.v1_fragment_sets if fs.completed_frame is None]
        if len(never) > _MANY_SETS or sa.v1_fragment_sets_over:
            # A flood of Fragment IDs (or a peer gone mad): one finding for the SA, not one each.
            yield _many_sets(sa, never)
            never_ids = {id(fs) for fs in never}
            sets = [fs for fs in sa.v1_fragment_sets if id(fs) not in never_ids]
        else:
            sets = sa.v1_fragment_sets
        for fs in sets:
            late = (fs.completed_frame is not None and bool(fs.late)
                    and (fs.completed_ts or fs.first_ts) - fs.first_ts >= _LATE_PIECE)
            if fs.completed_frame is not None and not late:
                continue
            what = (f"{exchange_name(fs.exchange, 1)} message ID {fs.msg_id} from {fs.src} to {fs.dst} "
                    f"(Fragment ID {fs.frag_id})")
            held = sorted(fs.frames)
            if fs.completed_frame is None:
                missing = fs.missing
                gap = (f"fragment{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {fs.last}"
                       if missing else "the last fragment (the one flagged last)")
                why = f" It was given up: {fs.dropped}." if fs.dropped else ""
                copies = f" ({fs.duplicate_count + len(held)} copies in all)" if fs.duplicate_count else ""
                down = sa.state in (SaState.INITIATING, SaState.FAILED)
                yield Finding(
                    code="IKE-FRAGMENT-LOST", severity=Severity.ERROR if down else Severity.WARNING,
                    title=f"IKEv1 fragmented message never completed: {what}"
                    + (" and the IKE SA never came up" if down else ""),
                    explanation=f"{what} was sent as IKEv1 fragments; fragment{'s' if len(held) > 1 else ''} "
                    f"{', '.join(map(str, held))} arrived{copies} but {gap} never did, so it could not be "
                    f"reassembled (nor decrypted here).{why} "
                    f"{fs.dst} cannot reassemble it either: it keeps the pieces it has and waits (strongSwan "
                    f"message.c add_fragment), never answers, and {fs.src} retransmits the whole message "
                    "until it gives up. A path dropping big UDP datagrams or IP fragments is the usual "
                    "cause (or the capture missed the piece).",
                    frames=frames_of(list(fs.frames.values()), fs.duplicates[:4]), sa=sa.key,
                    hint="Capture on both sides to see where the piece is lost; lower the fragment size "
                    "(strongSwan charon.fragment_size, Cisco crypto isakmp fragmentation mtu) below the "
                    "path MTU, or let the path pass UDP 500/4500 fragments.",
                    ts=fs.first_ts)
            else:
                nums = [n for n, f in fs.frames.items() if f in fs.late]
                delay = (fs.completed_ts or fs.first_ts) - fs.first_ts
                yield Finding(
                    code="IKE-FRAGMENT-LOST", severity=Severity.INFO,
                    title=f"IKEv1 fragment lost and sent again: {what}",
                    explanation=f"{what} completed only {delay:.1f} s after its first piece: fragment"
                    f"{'s' if len(nums) > 1 else ''} {', '.join(map(str, nums))} of {fs.last} arrived after the "
                    f"last one, from {fs.src}'s retransmission (frame{'s' if len(fs.late) > 1 else ''} "
                    f"{', '.join(map(str, fs.late))}); the first copy was lost before this capture point. "
                    f"{fs.dst} kept the pieces it had and reassembled the message with the resent one "
                    "(strongSwan message.c add_fragment). A path dropping big UDP datagrams or IP fragments "
                    "is the usual cause.",
                    frames=frames_of(fs.late, list(fs.frames.values()), fs.duplicates[:4]), sa=sa.key,
                    hint="Nothing failed this time; if it recurs, lower the fragment size (strongSwan "
                    "charon.fragment_size) below the path MTU or look for loss on the path.",
                    ts=fs.completed_ts)


_MANY_SETS = 4  # incomplete IKEv1 fragmented messages of one IKE SA reported one by one


def _many_sets(sa: IkeSa, never: list) -> Finding:
    from ...state.ikev1_frag import MAX_SETS_PER_SA

    n = len(never) + sa.v1_fragment_sets_over
    limit = [fs for fs in never if fs.dropped]
    senders = sorted({fs.src for fs in never})
    over = (f" Only the first {MAX_SETS_PER_SA} sets of this IKE SA are kept; {sa.v1_fragment_sets_over} more "
            "were counted." if sa.v1_fragment_sets_over else "")
    given = (f" {len(limit)} of them {verb(len(limit), 'was')} given up at a reassembly limit "
             f"({limit[0].dropped})." if limit else "")
    return Finding(
        code="IKE-FRAGMENT-LOST", severity=Severity.WARNING,
        title=f"{plural(n, 'IKEv1 fragmented message')} from {', '.join(senders)} never completed",
        explanation=f"{plural(n, 'message')} under this IKE SA came as IKEv1 fragments (payload 132) under "
        f"{n} Fragment IDs and never had all their pieces.{given}{over} A peer fragments only the "
        "messages carrying its identity and certificates (MM5/MM6 or Aggressive Mode's, MS-IKEE §3.3.6.1), "
        "each retransmission under the same Fragment ID: this many is a flood of pieces, a broken sender, "
        "or a capture missing most of them. What is held for them stays bounded; the pieces refused or "
        "given up are counted as malformed.",
        frames=frames_of(*(list(fs.frames.values())[:1] for fs in never[:6])), sa=sa.key,
        hint="Find who sends the pieces (the frames' source addresses and ports); if it is not a peer you "
        "know, filter it before the VPN gateway.",
        ts=(never or sa.v1_fragment_sets)[0].first_ts)


# ---------------------------------------------------------------------------------- path MTU


def _direction(src: str, dst: str) -> str:
    return f"{src}>{dst}"


def _overhead(ipv6: bool, udp: bool) -> int:
    """Worst-case bytes ESP tunnel mode adds to an inner packet: outer IP header, UDP (RFC 3948),
    ESP header (8), IV (up to 16, AES-CBC), padding and trailer (up to 15 + 2), ICV (up to 16)
    (RFC 4303 §2)."""
    return (40 if ipv6 else 20) + (8 if udp else 0) + 8 + 16 + 17 + 16


@rule(80, "ESP-PATH-MTU", (Severity.INFO, Severity.WARNING), ref="RFC 1191 §4; RFC 8201; RFC 4459")
def r_path_mtu(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """ESP larger than the path MTU: ICMP fragmentation-needed / packet-too-big quoting its SPI, outer IP fragments."""
    groups: dict[object, dict] = {}  # CHILD SA id (else flow key) -> what we know

    def group(f: EspFlow | None, fallback: object) -> dict:
        k = ("child", f.child_sa) if f is not None and f.child_sa is not None else (
            ("flow", f.key) if f is not None else fallback)
        return groups.setdefault(k, {"flows": [], "icmp": []})

    for f in table.flows.values():
        if f.ip_fragmented:
            group(f, None)["flows"].append(f)
    for ob in icmp_errors(table, too_big=True):
        f = quoted_flow(table, ob)
        group(f, ("sa", ob.detail.get("sa")))["icmp"].append(ob)
    for (kind, ident), g in groups.items():
        c = table.child_sas.get(ident) if kind == "child" else None
        flows = c.flows(table) if c is not None else list(g["flows"])
        icmp: list[Observation] = g["icmp"]
        first = icmp[0] if icmp else None
        quoted = quoted_flow(table, first) if first is not None else None
        main = quoted or max(flows, key=lambda x: x.ip_fragmented, default=None)
        spi = main.spi if main is not None else first.detail.get("spi") if first is not None else None
        src = main.src if main is not None else str(first.detail.get("quoted_src")) if first else "?"
        dst = main.dst if main is not None else str(first.detail.get("quoted_dst")) if first else "?"
        frag = {_direction(x.src, x.dst): x.ip_fragmented for x in flows}
        for x in g["flows"]:
            frag.setdefault(_direction(x.src, x.dst), x.ip_fragmented)
        mtus = [int(o.detail["mtu"]) for o in icmp if o.detail.get("mtu")]  # type: ignore[call-overload]
        mtu = min(mtus) if mtus else None
        size = max((int(o.detail.get("quoted_length") or 0) for o in icmp), default=0) or None  # type: ignore[call-overload]
        reporters = list(dict.fromkeys(o.src for o in icmp))
        n_icmp = sum(int(o.detail.get("count") or 0) for o in icmp)  # type: ignore[call-overload]
        dropped = sum(max(len(o.detail.get("seqs") or ()), 1) for o in icmp)  # type: ignore[arg-type]
        nfrag = sum(frag.values())
        spi_s = spi_text(spi) if isinstance(spi, int) else "?"
        udp = bool(main.udp_encap) if main is not None else bool(first and first.detail.get("udp_encap"))
        # AH (IP protocol 51) fragments and ICMP errors quoting it are the same path trouble: name it.
        proto = "AH" if (main.protocol if main is not None else first and first.detail.get("protocol")) == "AH" \
            else "ESP"
        ipv6 = ":" in dst
        parts = []
        if icmp:
            parts.append(
                f"{', '.join(reporters)} answered {plural(n_icmp, proto + ' packet')} {src} -> {dst} on SPI {spi_s} with ICMP "
                f"{first.detail.get('what')}" if first else "")
            parts[-1] += (f": the packet was {size} bytes, the next link takes {mtu}, and DF was set, so the router "
                          f"dropped it (RFC 1191 §4; ICMPv6 Packet Too Big, RFC 8201). At least {plural(dropped, 'packet')} "
                          f"{verb(dropped, 'was')} lost this way; a sender that never gets or ignores the ICMP keeps losing them "
                          "(a PMTU black hole)." if size and mtu else f" ({plural(dropped, 'packet')} dropped).")
        if nfrag:
            per = ", ".join(f"{d.replace('>', ' -> ')}: {n}" for d, n in frag.items())
            parts.append(f"{plural(nfrag, proto + ' packet')} arrived as outer IP fragments ({per}): larger than the path "
                         f"MTU, split after {'the AH header was added' if proto == 'AH' else 'encryption'}, so the receiver must "
                         f"reassemble them before {proto} can be checked; firewalls and NATs often drop fragments, and one lost fragment loses the "
                         "whole packet (RFC 4459 §2).")
        inner = (mtu - _overhead(ipv6, udp)) // 8 * 8 if mtu else None
        fix = ("lower the tunnel MTU (kernel-libipsec mtu) or clamp the TCP MSS")
        hint = ("Lower the tunnel MTU" + (f" to {inner} or less" if inner else "") + " (strongSwan "
                "kernel-libipsec: charon.plugins.kernel-libipsec.mtu; an XFRM/VTI interface: ip link set DEV mtu N) "
                "or clamp the TCP MSS" + (f" to {inner - 40}" if inner else "") + " (iptables -t mangle -A FORWARD "
                "-p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu); and let ICMP "
                "fragmentation-needed / packet-too-big through to the gateways.")
        yield Finding(
            code="ESP-PATH-MTU", severity=Severity.WARNING if icmp else Severity.INFO,
            title=(f"{proto} {src} -> {dst} on SPI {spi_s}: {size}-byte packets exceed the {mtu}-byte path MTU "
                   f"({', '.join(reporters)} said so)" if size and mtu else
                   f"{proto} {src} -> {dst} on SPI {spi_s} dropped for its size (ICMP from {', '.join(reporters)})"
                   if icmp else f"{plural(nfrag, proto + ' packet')} arrived as outer IP fragments ({child_label(c)})")
            + (f"; {nfrag} more travelled as IP fragments" if icmp and nfrag else ""),
            explanation=" ".join(p for p in parts if p),
            frames=frames_of(*(o.frames for o in icmp), *(x.ip_fragmented_frames[:2] for x in flows)),
            sa=flow_ref(main) if main is not None else None, hint=hint,
            ts=min([o.ts for o in icmp if o.ts is not None] + [x.first_ts for x in flows if x.first_ts is not None],
                   default=None),
            facts={"spi": spi_s, "sa_direction": _direction(src, dst), "child_sa": c.id if c is not None else None,
                   "outer_size": size, "path_mtu": mtu, "icmp_from": reporters[0] if reporters else None,
                   "icmp_frames": n_icmp, "dropped": dropped if icmp else 0, "fragmented": frag,
                   "inner_mtu": inner, "fix": fix})
    # No ICMP error at all, yet the big packets are the ones lost: a black hole.
    told = {k for k, g in groups.items() if g["icmp"]}
    for f in table.flows.values():
        if (("child", f.child_sa) if f.child_sa is not None else ("flow", f.key)) in told:
            continue
        bh = black_hole(table, f)
        if bh is not None:
            yield _black_hole_finding(table, bh)


def _black_hole_finding(table: SaTable, bh: BlackHole) -> Finding:
    f = bh.flow
    c = table.child_sas.get(f.child_sa) if f.child_sa is not None else None
    lo = min(x[1] for x in bh.big)
    over = _overhead(":" in f.dst, f.udp_encap)
    return Finding(
        code="ESP-PATH-MTU", severity=Severity.WARNING,
        title=f"{f.protocol} {f.src} -> {f.dst} on SPI {spi_text(f.spi)}: the unanswered packets are the big ones "
        f"({bh.sizes()} bytes; up to {bh.answered_max} answered), no ICMP: a PMTU black hole",
        explanation=f"{child_label(c) if c is not None else 'The SA'}: of {f.src}'s last {bh.looked_at} "
        f"{f.protocol} packets to {f.dst} on SPI {spi_text(f.spi)}, {plural(bh.answered, 'packet')} of up to "
        f"{bh.answered_max} bytes (outer IP) got an answer from {f.dst} before the next one went out, and none of "
        f"the {plural(len(bh.big), 'packet')} of {bh.sizes()} bytes did. No ICMP \"fragmentation needed\" or "
        "\"packet too big\" quoting them is in the capture (RFC 1191 §4, RFC 8201). Big packets lost while small "
        f"ones pass is a path MTU black hole: a link between {f.src} and {f.dst} takes less than {lo} bytes and its "
        "router drops what does not fit without a word, or its ICMP is filtered on the way back, so the sender "
        "never learns the path MTU (RFC 4301 §8, RFC 4459 §2). The path MTU is somewhere from "
        f"{bh.answered_max} to {lo - 1} bytes.",
        # The flow's first packet leads: live mode tells a finding apart by its first frame, and the
        # big packets roll through the last 16; the unanswered big ones follow.
        frames=(f.first_frame, *(x[0] for x in bh.big[:6])), sa=flow_ref(f),
        hint=f"Find the limit with DF set (from {f.src}: ping -M do -s SIZE {f.dst}, an IPv4 packet of SIZE + 28 "
        f"bytes, between {bh.answered_max} and {lo}), then set the tunnel MTU {over} bytes below it (ESP's worst case; strongSwan "
        "kernel-libipsec: charon.plugins.kernel-libipsec.mtu; an XFRM/VTI interface: ip link set DEV mtu N) or clamp "
        "the TCP MSS (iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu); "
        "and let ICMP fragmentation-needed / packet-too-big through to the gateways.",
        ts=bh.big[0][2],
        facts={"spi": spi_text(f.spi), "sa_direction": _direction(f.src, f.dst),
               "child_sa": c.id if c is not None else None, "outer_size": lo, "path_mtu": None,
               "icmp_from": None, "icmp_frames": 0, "dropped": len(bh.big), "fragmented": {},
               "inner_mtu": None, "fix": "lower the tunnel MTU (kernel-libipsec mtu) or clamp the TCP MSS",
               "answered_max": bh.answered_max})


# A datagram's fragments leave their sender back to back (microseconds apart): one whose first
# fragment came less than this before the capture's last frame may have been cut by the capture's
# end rather than lost on the path.
CAPTURE_TAIL_S = 1.0


@rule(82, "ESP-FRAGMENT-LOST", (Severity.INFO, Severity.WARNING), ref="RFC 4459 §2; RFC 4303 §3.4.1")
def r_esp_fragment_lost(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """ESP packets the capture holds only the first IP fragment of: the rest lost on the path."""
    # One finding per flow (one direction of one SA): its count, its sequence numbers and the
    # fragments missing are that SA's own, as ESP-SEQ-GAP's are.
    # Live, the capture runs on past its last frame (SaTable.watched_until): a datagram the clock
    # gave up (Session.finish) was watched for the rest long enough, so it is no capture's cut.
    end = max(table.last_ts or 0.0, table.watched_until or 0.0)
    for f in table.flows.values():
        if not f.frag_lost:
            continue
        c = table.child_sas.get(f.child_sa) if f.child_sa is not None else None
        kept = f.frag_lost_packets
        # only a packet whose fragments stop (no hole before the last one captured) can be the capture's cut
        tail = [p for p in kept if end - p[3] < CAPTURE_TAIL_S and p[2].startswith("offset ") and "," not in p[2]]
        on_path = f.frag_lost - len(tail)  # beyond the kept few, counted as lost on the path
        seqs = [p[0] for p in kept]
        gone = list(dict.fromkeys(p[2] for p in kept))
        more = f", and {f.frag_lost - len(kept)} more" if f.frag_lost > len(kept) else ""
        n = f.frag_lost
        who = "It" if n == 1 else f"{len(tail)} of them"
        at_end = (f" {who} came in the last {CAPTURE_TAIL_S:g} s of the capture, which may have ended before the "
                  "other fragments." if tail else "")
        yield Finding(
            code="ESP-FRAGMENT-LOST", severity=Severity.WARNING if on_path else Severity.INFO,
            title=f"{plural(n, 'ESP packet')} {f.src} -> {f.dst} on SPI {spi_text(f.spi)} "
            "arrived as IP fragments with later fragments missing"
            + (": lost on the path" if on_path else ": the capture ended before the rest"),
            explanation=f"{child_label(c) if c is not None else 'The SA'}: {plural(n, 'ESP packet')} from "
            f"{f.src} to {f.dst} on SPI {spi_text(f.spi)} (sequence {noun(len(seqs), 'number')} "
            f"{', '.join(map(str, seqs))}{more}) {verb(n, 'was', 'were')} bigger than the path MTU and "
            f"went out as outer IP fragments; the capture holds {'its first fragment' if n == 1 else 'the first fragment of each'}, "
            f"which names the packet, but the rest of the datagram ({' / '.join(gone)}) never came. ESP is checked and decrypted only after "
            "reassembly (RFC 4303 §3.4.1), so the loss of one fragment loses the whole packet (RFC 4459 §2): "
            f"{f.dst} drops {'it' if n == 1 else 'them'} as {'it is' if n == 1 else 'they are'} lost here, and nobody can "
            f"decrypt or verify {'it' if n == 1 else 'them'}. {n} of the {f.sent + n} packets on this SA in the capture "
            f"went this way.{at_end} Later fragments carry no UDP ports, so firewalls, NATs and load balancers that filter "
            "or mis-hash them lose exactly these; a lossy link loses them too.",
            frames=tuple(p[1] for p in kept), sa=flow_ref(f),
            hint=f"Capture nearer {f.src} to see where the fragments are lost; stop the fragmentation: lower the "
            "tunnel MTU (strongSwan kernel-libipsec: charon.plugins.kernel-libipsec.mtu; an XFRM/VTI interface: ip "
            "link set DEV mtu N) or clamp the TCP MSS, or let the path pass IP fragments.",
            ts=f.first_ts,
            facts={"spi": spi_text(f.spi), "sa_direction": _direction(f.src, f.dst),
                   "child_sa": c.id if c is not None else None, "lost": n, "on_path": on_path, "seqs": seqs,
                   "missing": gone})
