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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ...model.idtext import spi_text
from ...model.plural import noun, plural, verb
from ...model.sa import ChildSa, EspFlow, Finding, FindingMember, SaTable, Severity
from .common import child_label, flow_ref

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
    meanwhile (liveness._sibling_return: that flow and its SA's name): one condition, several SAs
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
