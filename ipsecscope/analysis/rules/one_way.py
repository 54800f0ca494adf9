"""One-way ESP on several SAs that share one end: one finding for the shared condition.

A host that sends ESP to twelve peers and hears from none of them (Zeek's ip6_esp trace: 3ffe::1,
12 peers, 120 packets) is one condition, not twelve: what the silent SAs have in common is the
sender, so the likely cause is on its side or in the capture (only its outbound direction seen, its
inbound ESP filtered, SAs the peers no longer hold). Likewise a gateway that answers none of many
peers' ESP. :func:`group_plain` takes the per-SA ESP-ONE-WAY findings that carry no evidence of
their own (no ICMP refusal, no IKE answer from the silent peer, no sibling SA carrying the
return traffic) and makes every group of two or more with the same sender (else the same
receiver) one finding. Its JSON shape is the aggregated findings' (analysis.rules.aggregate):
``count`` and ``members``, one member per SA with its frames; the finding's own frames are the
first few SAs'. Several SAs of one pair whose silent peer sends on the same other SA meanwhile
(duplicate CHILD SAs, crossing Quick Modes) are one finding too (:func:`group_siblings`). Per-SA
findings with evidence of their own stay separate: the ICMP error a router sent about this SA,
the silent peer's IKE answers after this SA's traffic began, belong to the one SA and its peer.

What ESP-ONE-WAY (``liveness.r_one_way``) asks before any grouping is here too: which INFERRED SAs
cannot be paired for certain and are judged as one group (:func:`undecided_pairs`,
:func:`one_way_group`), and whether the silent peer sends on another SA meanwhile
(:func:`sibling_return`, over the flows by path :func:`flows_by_path` indexes once).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ...model.idtext import spi_text
from ...model.plural import noun, plural, verb
from ...model.sa import ChildSa, EspFlow, Finding, FindingMember, SaState, SaTable, Severity, is_multicast
from .common import child_label, clock, flow_ref, icmp_refusal

NAMED = 5  # SAs (or peers) a group finding names in its text; the rest are "and N more"
GROUP_MIN = 2  # two SAs silent towards one host already point at that host


@dataclass(slots=True)
class OneWay:
    """A one-way SA with nothing but its silence as evidence, and the finding it has on its own."""

    finding: Finding
    flow: EspFlow  # the first flow of the direction that carries traffic
    child: ChildSa
    packets: int  # sent (EspFlow.sent: copies the capture made are not)


def group_plain(table: SaTable, plain: list[OneWay]) -> Iterator[Finding]:
    """One finding per sender with :data:`GROUP_MIN` or more one-way SAs, then one per receiver
    of those left; the rest keep their own finding. Members in the order their traffic began
    (live mode knows a finding by its SA and first frame: a group keeps its first SA's)."""
    if len(plain) < GROUP_MIN:
        yield from (o.finding for o in plain)
        return
    ends = _Ends.of(table)
    plain = sorted(plain, key=lambda o: (o.flow.first_ts or 0.0, o.flow.first_frame or 0))
    left: list[OneWay] = []
    for group in _by(plain, lambda o: o.flow.src):
        if len(group) >= GROUP_MIN:
            yield _sender_finding(ends, group)
        else:
            left.extend(group)
    left.sort(key=lambda o: (o.flow.first_ts or 0.0, o.flow.first_frame or 0))
    for group in _by(left, lambda o: o.flow.dst):
        if len(group) >= GROUP_MIN:
            yield _receiver_finding(ends, group)
        else:
            yield from (o.finding for o in group)


def group_siblings(items: list[tuple[OneWay, tuple[EspFlow, str]]]) -> Iterator[Finding]:
    """One finding per peer pair for one-way SAs whose silent peer sends on the same other SA
    meanwhile (:func:`sibling_return`: that flow and its SA's name): one condition, several SAs
    from one side answered (or not) on one SA from the other. Fewer than :data:`GROUP_MIN` keep
    their own finding."""
    groups: dict[tuple[str, str, str, int], list[tuple[OneWay, tuple[EspFlow, str]]]] = {}
    for o, sib in sorted(items, key=lambda x: (x[0].flow.first_ts or 0.0, x[0].flow.first_frame or 0)):
        groups.setdefault((o.flow.src, o.flow.dst, o.flow.protocol, id(sib[0])), []).append((o, sib))
    for group in groups.values():
        if len(group) < GROUP_MIN:
            yield from (o.finding for o, _ in group)
            continue
        ones = [o for o, _ in group]
        r, name = group[0][1]
        f = ones[0].flow
        src, dst, proto = f.src, f.dst, f.protocol
        pk = sum(o.packets for o in ones)
        title = (f"One-way {proto}: {src} -> {dst} on {len(ones)} SAs ({plural(pk, 'packet')}), nothing back on "
                 f"them; {dst} sends on another")
        text = (f"{src} sends {proto} to {dst} on {len(ones)} SAs: {_listing(ones, lambda o: None)}; {dst} sends "
                f"nothing back on any of them. Yet {dst} sends {proto} to {src} meanwhile, on SPI {spi_text(r.spi)} "
                f"({name}, {plural(r.sent, 'packet')}): it is up and receives, and the path carries its {proto}. "
                f"If these CHILD SAs carry the same traffic as that one (negotiated at once by both peers: crossing "
                f"Quick Modes, or collisions, RFC 7296 §2.8), {dst} answers all of it there and nothing is lost; if "
                "they carry different traffic selectors, their return traffic is missing.")
        hint = ("Compare the CHILD SAs' traffic selectors (swanctl --list-sas, or give -k): the same selectors mean "
                f"duplicate SAs (harmless; both sides usually delete all but one); different ones mean {dst} has no "
                "outbound SA or policy for their traffic.")
        yield _finding(ones, title, text, hint, {"sender": src, "peers": 1, "sas": len(ones), "packets": pk,
                                                  "answered_on": spi_text(r.spi)})


def _by(items: list[OneWay], end) -> list[list[OneWay]]:
    groups: dict[tuple[str, str], list[OneWay]] = {}
    for o in items:
        groups.setdefault((end(o), o.flow.protocol), []).append(o)
    return list(groups.values())


def _members(group: list[OneWay]) -> tuple[FindingMember, ...]:
    return tuple(FindingMember(sa=o.finding.sa or flow_ref(o.flow), peers=(o.flow.src, o.flow.dst),
                               frames=o.finding.frames, ts=o.finding.ts) for o in group)


def _sa_text(o: OneWay, peer: str | None) -> str:
    """``3ffe::2 (CHILD SA #1, SPI 0x0000000a, 10 packets)``; for a pair (no ``peer``)
    ``SPI 0x0000000a (CHILD SA #1, 10 packets)``."""
    if peer is None:
        return f"SPI {spi_text(o.flow.spi)} ({child_label(o.child)}, {plural(o.packets, 'packet')})"
    return f"{peer} ({child_label(o.child)}, SPI {spi_text(o.flow.spi)}, {plural(o.packets, 'packet')})"


def _listing(group: list[OneWay], peer) -> str:
    named = ", ".join(_sa_text(o, peer(o)) for o in group[:NAMED])
    return named + (f" and {len(group) - NAMED:,} more" if len(group) > NAMED else "")


def _each(group: list[OneWay], peers: list[str]) -> str:
    return "one SA each" if len(group) == len(peers) else f"on {len(group)} SAs"


@dataclass(slots=True)
class _Ends:
    """Flows by destination and by source, built once per evaluation: a scan of every flow for each
    group would be quadratic in SAs when they form many small groups."""

    to: dict[str, list[EspFlow]]
    out: dict[str, list[EspFlow]]

    @classmethod
    def of(cls, table: SaTable) -> _Ends:
        ends = cls({}, {})
        for f in table.flows.values():
            if f.packets:
                ends.to.setdefault(f.dst, []).append(f)
                ends.out.setdefault(f.src, []).append(f)
        return ends

    def other(self, group: list[OneWay], host: str, towards: bool) -> list[EspFlow]:
        """Flows to ``host`` (``towards``) or from it, other than the group's own."""
        mine = {id(o.flow) for o in group}
        return [f for f in (self.to if towards else self.out).get(host, ()) if id(f) not in mine]


def _finding(group: list[OneWay], title: str, text: str, hint: str, facts: dict) -> Finding:
    first = group[0]
    members = _members(group)
    times = [m.ts for m in members if m.ts is not None]
    return Finding(code="ESP-ONE-WAY", severity=Severity.WARNING, title=title, explanation=text,
                   frames=tuple(fr for m in members[:NAMED] for fr in m.frames), sa=first.finding.sa,
                   hint=hint, ts=min(times) if times else None, facts=facts, members=members)


def _sender_finding(ends: _Ends, group: list[OneWay]) -> Finding:
    f = group[0].flow
    src, proto = f.src, f.protocol
    peers = list(dict.fromkeys(o.flow.dst for o in group))
    pk = sum(o.packets for o in group)
    facts = {"sender": src, "peers": len(peers), "sas": len(group), "packets": pk}
    back = ends.other(group, src, towards=True)
    seen = (f" The capture does hold {proto} to {src} on other SAs ({plural(sum(r.sent for r in back), 'packet')} "
            f"from {', '.join(dict.fromkeys(r.src for r in back[:NAMED]))}), so it sees that direction: these "
            "peers' packets do not reach it or are never sent." if back else
            f" The capture holds no {proto} to {src} at all.")
    udp = " (or UDP 4500)" if f.udp_encap else ""
    if len(peers) == 1:
        dst = peers[0]
        title = f"One-way {proto}: {src} -> {dst} on {len(group)} SAs ({plural(pk, 'packet')}), nothing back"
        text = (f"{src} sends {proto} to {dst} on {len(group)} SAs: {_listing(group, lambda o: None)}; {dst} "
                f"sends nothing back on any of them.{seen} {dst} either does not receive them intact (filtered, lost or "
                "altered on the way), cannot "
                f"{'authenticate' if proto == 'AH' else 'decrypt'} them (keys or SAs missing), has no route or policy "
                "for the replies, or the capture sees only one direction.")
        hint = (f"Check on {dst}: SAs and policies installed (ip xfrm state/policy), {proto}{udp} allowed in, and a "
                "route back to the sender's subnet.")
        return _finding(group, title, text, hint, facts)
    sas = f"{len(group)} SAs, " if len(group) != len(peers) else ""
    title = f"One-way {proto}: {src} sends to {len(peers)} peers ({sas}{plural(pk, 'packet')}), none answer"
    text = (f"{src} sends {proto} to {len(peers)} peers, {_each(group, peers)}: "
            f"{_listing(group, lambda o: o.flow.dst)}; none of them sends anything back.{seen} When every peer of "
            f"one host is silent, the cause is more likely what they share, {src}'s side or the capture, than each "
            f"peer: the capture may see only {src}'s outbound traffic (a one-way mirror port, a capture filter, "
            f"asymmetric routing), a filter in front of {src} may drop inbound {proto}{udp}, or the peers do not hold "
            f"these SAs ({src} sends on SAs they deleted or never installed; they drop the packets and may answer "
            "INVALID_SPI).")
    hint = (f"First make sure the capture sees traffic to {src} (capture on {src} itself, or mirror both "
            f"directions); then check {src}'s inbound filtering of {proto}{udp}, and on one peer ({peers[0]}) "
            "whether it has these SAs (ip xfrm state, swanctl --list-sas).")
    return _finding(group, title, text, hint, facts)


def _receiver_finding(ends: _Ends, group: list[OneWay]) -> Finding:
    f = group[0].flow
    dst, proto = f.dst, f.protocol
    peers = list(dict.fromkeys(o.flow.src for o in group))
    pk = sum(o.packets for o in group)
    facts = {"receiver": dst, "peers": len(peers), "sas": len(group), "packets": pk}
    out = ends.other(group, dst, towards=False)
    seen = (f" {dst} does send {proto} on other SAs in this capture ({plural(sum(r.sent for r in out), 'packet')} "
            f"to {', '.join(dict.fromkeys(r.dst for r in out[:NAMED]))}), so the capture sees its outbound "
            "direction." if out else f" The capture holds no {proto} from {dst} at all.")
    udp = " (or UDP 4500)" if f.udp_encap else ""
    sas = f"{len(group)} SAs, " if len(group) != len(peers) else ""
    title = f"One-way {proto}: {plural(len(peers), 'peer')} {verb(len(peers), 'sends')} to {dst} ({sas}{plural(pk, 'packet')}), it answers none"
    text = (f"{plural(len(peers), 'peer')} {verb(len(peers), 'sends')} {proto} to {dst}, {_each(group, peers)}: "
            f"{_listing(group, lambda o: o.flow.src)}; {dst} answers none of them.{seen} What the silent SAs share "
            f"is {dst}: it does not receive the packets intact (filtered in front of it, lost or altered), cannot "
            f"{'authenticate' if proto == 'AH' else 'decrypt'} them (keys or SAs missing), has no route or policy for "
            f"the replies, or the capture sees only traffic towards {dst}.")
    hint = (f"Check on {dst}: SAs and policies installed for these {noun(len(peers), 'peer')} (ip xfrm state/policy), "
            f"{proto}{udp} allowed in, and routes back; or whether the capture sees {dst}'s outbound traffic.")
    return _finding(group, title, text, hint, facts)


# ------------------------------------------- before grouping: what ESP-ONE-WAY (liveness.r_one_way) asks


def undecided_pairs(table: SaTable) -> list[list[ChildSa]]:
    """INFERRED CHILD SAs left unpaired because more than one opposite flow fit (their
    ``pair_candidates``, state/traffic.infer), grouped with the SAs those flows are on: within a
    group which flow is whose pair is not known, so no one of them is one-way by itself."""
    spis = {(f.src, f.dst, f.spi, f.protocol): f.child_sa for f in table.flows.values()
            if f.child_sa is not None} if any(c.pair_candidates for c in table.child_sas.values()) else {}
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.setdefault(i, i) != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for c in table.child_sas.values():
        if not c.pair_candidates or c.state != SaState.INFERRED or c.spi_i is not None:
            continue
        root(c.id)
        for spi in c.pair_candidates:
            other = spis.get((c.responder, c.initiator, spi, c.protocol))
            if other is not None:
                parent[root(other)] = root(c.id)
    groups: dict[int, list[ChildSa]] = {}
    for i in parent:
        c = table.child_sas.get(i)
        if c is not None:
            groups.setdefault(root(i), []).append(c)
    return [g for g in groups.values() if len(g) > 1]


def one_way_group(table: SaTable, group: list[ChildSa]) -> Finding | None | bool:
    """One finding for a group of :func:`undecided_pairs`: when one peer sends on more of them
    than the other, that many of its SAs have nothing back, but which ones is not known (nothing
    on the wire links two SPIs without the IKE exchange, RFC 4301 §4.1). None when both sides send
    on as many SAs (each may have its pair), False when ICMP errors refuse some of their packets
    (then each SA is judged by itself, refusal first)."""
    by_src: dict[str, list[EspFlow]] = {}
    for c in group:
        for f in c.flows(table):
            by_src.setdefault(f.src, []).append(f)
    if len(by_src) != 2 or any(icmp_refusal(table, f)[0] for fs in by_src.values() for f in fs):
        return False
    (a, fa), (b, fb) = sorted(by_src.items(), key=lambda kv: -len(kv[1]))
    if len(fa) == len(fb) or sum(f.sent for f in fa) < 3 or is_multicast(b):
        return None
    fa.sort(key=lambda f: f.first_frame)
    fb.sort(key=lambda f: f.first_frame)
    n = len(fa) - len(fb)

    def listing(fs: list[EspFlow]) -> str:
        return ", ".join(f"{spi_text(f.spi)} ({plural(f.sent, 'packet')})" for f in fs)

    f = fa[0]
    return Finding(
        code="ESP-ONE-WAY", severity=Severity.WARNING,
        title=f"One-way {f.protocol}: {n} of {a}'s {len(fa)} SAs to {b} {verb(n, 'has')} nothing back; "
        f"{b} sends on {len(fb)}",
        explanation=f"{a} sends {f.protocol} to {b} on {len(fa)} SAs, {listing(fa)}, and {b} to {a} on {len(fb)}, "
        f"{listing(fb)}, all started together and active at once. Without the IKE exchanges that made them "
        "nothing links the two SPIs of a CHILD SA (RFC 4301 §4.1), and here more than one pairing fits: "
        f"{n} of {a}'s SAs {verb(n, 'has')} no return SA in use, which {noun(n, 'one')} "
        f"is not known. {b} is up and receives, and the path carries its {f.protocol}. If the CHILD SAs carry "
        f"the same traffic (negotiated at once: crossing Quick Modes, or a collision, RFC 7296 §2.8), {b} "
        "answers all of it on its SAs and nothing is lost; if they carry different traffic selectors, the "
        "return traffic of one is missing.",
        frames=tuple(x.first_frame for x in fa + fb), sa=flow_ref(f),
        hint="Give -k (IKE keys) to see which SPIs each exchange negotiated and their traffic selectors: the "
        f"same selectors mean duplicate SAs (harmless; both sides usually delete one); different ones mean {b} "
        "has no outbound SA or policy for one's traffic.", ts=f.first_ts)


def flows_by_path(table: SaTable) -> dict[tuple[str, str, str], list[EspFlow]]:
    """Flows by (source, destination, protocol), built once per evaluation: a scan of every flow
    for each one-way SA made the rule quadratic in SAs (10,000 one-way SAs: 440 us a packet)."""
    paths: dict[tuple[str, str, str], list[EspFlow]] = {}
    for r in table.flows.values():
        paths.setdefault((r.src, r.dst, r.protocol), []).append(r)
    return paths


def sibling_return(table: SaTable, c: ChildSa, one: list[EspFlow],
                    paths: dict[tuple[str, str, str], list[EspFlow]]) -> tuple | None:
    """(explanation, hint, frames, (its flow, its SA's name)) when the silent peer does send ESP to
    the sender while this one-way SA is in use, on another CHILD SA's SPI: it is up, receives, and
    its path carries ESP.
    Two CHILD SAs for the same traffic (both peers negotiating at once: IKEv1 Quick Modes crossing,
    RFC 7296 §2.8 for IKEv2) leave each peer free to send on either, and the answers to this SA's
    traffic may be those packets (Arkime's Fortinet IKEv1 capture: two Quick Modes at once, one peer
    sends on both SAs, the other on one, with exactly as many packets as both). Only selectors
    (keys) could tell that from one CHILD SA of several whose return traffic alone is lost. ``()``
    when the reverse uses the very same SPI."""
    f = one[0]
    first = min((x.first_ts for x in one if x.first_ts is not None), default=None)
    last = max((x.last_ts for x in one if x.last_ts is not None), default=None)
    if first is None or last is None:
        return None
    mine = {id(x) for x in one}
    back = [r for r in paths.get((f.dst, f.src, f.protocol), ())
            if id(r) not in mine and r.packets and r.first_ts is not None and r.last_ts is not None
            and r.first_ts <= last and r.last_ts >= first and r.child_sa != c.id]
    if not back:
        return None
    if any(r.spi == f.spi for r in back):
        # Each receiver picks its own SPI for an IKE-made SA; the same SPI both ways between two
        # peers is a manually keyed pair (RFC 4552 §7 keys a whole link with one): not one-way.
        return ()
    r = max(back, key=lambda x: x.sent)
    other = table.child_sas.get(r.child_sa) if r.child_sa is not None else None
    name = child_label(other) if other is not None else "another SA"
    return (f" Yet {f.dst} sends ESP to {f.src} meanwhile, on SPI {spi_text(r.spi)} ({name}, {plural(r.sent, 'packet')}, "
            f"{clock(r.first_ts)} to {clock(r.last_ts)}): it is up and receives, and the path carries its ESP. "
            "If both CHILD SAs carry the same traffic (negotiated at once by both peers: crossing Quick Modes, "
            f"or a collision, RFC 7296 §2.8), {f.dst} answers on that one and nothing is lost; if they carry "
            "different traffic selectors, this SA's return traffic alone is missing.",
            f"Compare the two CHILD SAs' traffic selectors (swanctl --list-sas, or give -k): the same selectors "
            f"mean duplicate SAs (harmless; both sides usually delete one); different ones mean {f.dst} has no "
            "outbound SA or policy for this one's traffic.",
            (r.first_frame,) if r.first_frame is not None else (), (r, name))
