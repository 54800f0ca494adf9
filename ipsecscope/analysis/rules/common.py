"""Text and lookup helpers the rule families share (times, frames, peers, peer-log notes)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ... import timefmt
from ...model.keys import PeerLogNote
from ...model.plural import plural, verb
from ...model.sa import ChildSa, EspFlow, IkeExchange, IkeSa, Observation, SaTable, other_end
from ...state import names as N
from .core import RuleContext


def clock(ts: float | None) -> str:
    """A time in a finding's text, with its zone (``20:09:22 UTC``; ``--tz`` sets the zone)."""
    return timefmt.at(ts)


def dur(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def exchange_label(x: IkeExchange, version: int) -> str:
    return N.exchange_name(x.exchange, version)


def other_peer(sa: IkeSa, addr: str) -> str:
    """The peer at the other end of ``sa`` from ``addr``, following moves (model.sa.other_end)."""
    return other_end(sa, addr)


def child_ike(table: SaTable, c: ChildSa) -> IkeSa | None:
    return table.ike_sas.get(c.ike_sa) if c.ike_sa else None


def frames_of(*lists: Iterable[int]) -> tuple[int, ...]:
    out: list[int] = []
    for lst in lists:
        for f in lst:
            if f not in out:
                out.append(f)
    return tuple(out)


def flow_ref(f: EspFlow) -> str:
    return f"{f.protocol.lower()}:{f.src}>{f.dst}:0x{f.spi:08x}"  # "ah:..." for AH: another SA


def addr_eq(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return ipaddress.ip_address(a.strip("[]")) == ipaddress.ip_address(b.strip("[]"))
    except ValueError:
        return a == b


def peer_notes_about(ctx: RuleContext, sa: IkeSa | None, by: str, kinds: Iterable[str]) -> list[PeerLogNote]:
    """Notes from the log of the peer at address ``by`` about IKE SA ``sa``.

    A note counts only when its log says which host wrote it (``local``) and that host is ``by``:
    we never attribute a line to a peer on a guess. When the log named the IKE SA's SPIs, the
    initiator SPI must match (the responder SPI may still be zero in its log, e.g. for an
    IKE_SA_INIT it refused); otherwise the other address must be this SA's other peer.
    """
    if sa is None or not ctx.peer_notes:
        return []
    kinds = set(kinds)
    other = other_peer(sa, by)
    out = []
    for n in ctx.peer_notes:
        if n.kind not in kinds or not addr_eq(n.local, by):
            continue
        if n.ike_sa and "_" in n.ike_sa:
            if n.ike_sa.split("_", 1)[0] != sa.ike_spi_i.hex():
                continue
        elif not addr_eq(n.remote, other):
            continue
        out.append(n)
    return out


def note_src(n: PeerLogNote) -> str:
    """``charon-right.log:177`` (the file name without its directories) for explanations."""
    path, _, line = n.source.rpartition(":")
    return f"{path.replace(chr(92), '/').rsplit('/', 1)[-1]}:{line}" if path else n.source


def uniq(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def child_label(c: ChildSa | None) -> str:
    return f"CHILD SA #{c.id}" if c else "an unknown SA"


def src_path(source: str) -> str:
    """``tests/x/charon-left.log:177`` -> ``charon-left.log:177`` (keys' "file:line" sources)."""
    return source.replace(chr(92), "/").rsplit("/", 1)[-1]


def role(sa: IkeSa, addr: str) -> str:
    return f"initiator {addr}" if addr == sa.initiator else f"responder {addr}"


def ike_key_source(ctx: RuleContext, sa: IkeSa) -> str:
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
    srcs = uniq(src_path(x) for x in srcs)
    return " and ".join(srcs) if srcs else "the loaded keys"


def ike_family(table: SaTable, sa: IkeSa | None) -> list[IkeSa]:
    """``sa`` and the IKE SAs it was rekeyed from or into: one peer relationship (RFC 7296 §2.8:
    CHILD SAs move to the new IKE SA, and DPD then runs there)."""
    if sa is None:
        return []
    out, seen = [], set()
    todo = [sa.key]
    while todo:
        k = todo.pop()
        s = table.ike_sas.get(k) if k else None
        if s is None or k in seen:
            continue
        seen.add(k)
        out.append(s)
        todo += [s.rekeyed_from, s.rekeyed_into]
    return out


def ike_answers_from(table: SaTable, c: ChildSa, peer: str, since: float | None) -> list[IkeExchange]:
    """Exchanges of ``c``'s IKE SA (and its rekeyed successors) after ``since`` in which ``peer``
    took part and that completed: ``peer`` answered a request, or sent one that was answered.

    Each needs ``peer``'s keys for that IKE SA (RFC 7296 §2.4: an INFORMATIONAL is SK-protected,
    a peer that forgot the SA cannot answer it), so they prove ``peer`` is up and still holds
    the IKE SA at that time.
    """
    out = []
    for sa in ike_family(table, child_ike(table, c)):
        for x in sa.exchanges:
            if not x.request_frames or not x.response_frames or x.response_ts is None:
                continue
            if since is not None and x.response_ts < since:
                continue
            if peer in (x.requester, other_peer(sa, x.requester)):
                out.append(x)
    out.sort(key=lambda x: x.response_ts or 0.0)
    return out


def _not_intact(sender: str, receiver: str) -> str:
    """The cause a capture at (or near) the sender cannot rule out: its own ESP lost or damaged
    after the capture point."""
    return f"{sender}'s ESP does not reach {receiver} intact (lost or altered on the way)"


def _unseen(sender: str, receiver: str) -> str:
    return (f" This capture cannot show what reached {receiver}: a packet altered on the way fails {receiver}'s "
            "ICV check and is dropped without a word (RFC 4303 §3.4.4), exactly as if it were lost.")


def _check_arrival(sender: str, receiver: str) -> str:
    return (f"see whether {sender}'s ESP arrives at {receiver} and passes its ICV check (capture there; ip -s xfrm "
            "state, or XfrmInStateProtoError in /proc/net/xfrm_stat, counts the failures)")


def esp_silence_cause(table: SaTable, c: ChildSa, sender: EspFlow, silent: str, since: float | None,
                      ) -> tuple[str, str, tuple[int, ...]]:
    """(explanation, hint, evidence frames) for ESP from ``silent`` that is missing (never came,
    or stopped at ``since``) while ``sender`` kept sending: what the IKE traffic in the same
    capture says about ``silent``.

    IKE exchanges ``silent`` completed in the same IKE SA after ESP stopped show it is up and
    holds the IKE SA (not a dead peer, not a restart). What is left is the path dropping its ESP,
    or its own outbound SA/policy. Which one the capture tells apart: raw ESP (IP protocol 50)
    while IKE on UDP passes is what a firewall passing UDP 500/4500 but not ESP does; ESP in UDP
    on the very ports IKE uses would pass a port filter, so then the peer's outbound side (or a
    filter looking into the payload) is the cause.
    """
    xs = ike_answers_from(table, c, silent, since)
    if not xs:
        return "", "", ()
    sa = child_ike(table, c)
    answered = [x for x in xs if x.requester != silent]
    asked = [x for x in xs if x.requester == silent]
    parts = []
    if answered:
        parts.append(f"answered {plural(len(answered), 'IKE request')} from {sender.src}")
    if asked:
        parts.append(f"sent {len(asked)} of its own that {verb(len(asked), 'was')} answered")
    last = xs[-1]
    alive = (f"Yet {silent} is up and still holds the IKE SA: after its ESP "
             f"{'stopped' if since is not None else 'failed to appear'} it {' and '.join(parts)} in the same IKE SA "
             f"({', '.join(sorted({exchange_label(x, sa.version if sa else 2) for x in xs}))}, the last at "
             f"{clock(last.response_ts)}, frame {last.response_frames[0]}), which needs its keys for that SA "
             "(RFC 7296 §2.4). So it neither went away nor lost its state.")
    ports = "/".join(str(p) for p in sorted({x.responder_port for x in xs} | {x.requester_port for x in xs}) if p)
    if not sender.udp_encap and (sender.sport or sender.dport):
        # ESP with ports but not in UDP: RFC 8229 records in a TCP connection, the one IKE uses
        why = (f" Its ESP travels in the same TCP connection as the IKE messages that do get through (RFC 8229), "
               f"so no port or protocol filter drops it alone, and TCP resends what is lost: {sender.src}'s ESP "
               f"reaches {silent} altered (a middlebox rewriting the stream), {silent}'s "
               "outbound SA or policy for this CHILD SA is broken (it does not send, or sends on another SA), "
               f"or nothing behind {silent} answers.{_unseen(sender.src, silent)}")
        hint = (f"On {silent}: {_check_arrival(sender.src, silent)}; check the outbound SA and policy for this "
                "CHILD SA (swanctl --list-sas: bytes out should grow) and that the inner hosts answer.")
    elif not sender.udp_encap:
        why = (f" Its ESP is IP protocol 50 while its IKE ({f'UDP {ports}' if ports else 'UDP'}) "
               f"gets through: a firewall or NAT on the path that passes IKE but drops ESP from {silent} is the "
               f"usual cause; or {_not_intact(sender.src, silent)}, the same filter the other way or damage; "
               f"otherwise {silent}'s outbound SA or policy for this CHILD SA is missing.{_unseen(sender.src, silent)}")
        hint = (f"Allow ESP (IP protocol 50) between {sender.src} and {silent} on every firewall between them, or "
                f"force UDP encapsulation (encap = yes); {_check_arrival(sender.src, silent)}; if the path is clean, "
                f"check {silent}'s outbound SA and policy (ip xfrm state/policy, swanctl --list-sas).")
    else:
        why = (f" Its ESP travels in UDP on the same ports as the IKE messages that do get through (RFC 3948), "
               f"so a port filter is not it: {_not_intact(sender.src, silent)}, {silent}'s outbound SA or policy "
               f"for this CHILD SA is broken (it does not send, or sends on another SA), nothing behind {silent} "
               "answers, or a middlebox that looks into UDP 4500 payloads (non-zero first 4 bytes = ESP) drops "
               f"ESP.{_unseen(sender.src, silent)}")
        hint = (f"On {silent}: {_check_arrival(sender.src, silent)}; check the outbound SA and policy for this "
                "CHILD SA (ip xfrm state/policy, swanctl --list-sas: bytes out should grow) and that the inner "
                "hosts answer; then look for a device filtering ESP-in-UDP on the path.")
    frames = tuple(x.response_frames[0] for x in xs[:3])
    return " " + alive + why, hint, frames


def icmp_errors(table: SaTable, *, too_big: bool | None = None) -> list[Observation]:
    """The tracker's ``icmp_error`` observations (one per SA, reporter and kind of error);
    ``too_big``: only fragmentation-needed / packet-too-big (True) or only the others (False)."""
    return [o for o in table.observations if o.kind == "icmp_error"
            and (too_big is None or bool(o.detail.get("too_big")) == too_big)]


def quoted_flow(table: SaTable, ob: Observation) -> EspFlow | None:
    """The flow of the packet an ICMP error quotes (its src, dst, SPI and protocol), if the
    capture has it."""
    key = ob.detail.get("flow")
    if not isinstance(key, tuple):
        return None
    flows: dict = table.flows
    # Flows are keyed (src, dst, spi) or, with the protocol as RFC 4301 §4.1 says, (src, dst, spi, protocol).
    f = flows.get((*key, ob.detail.get("protocol"))) or flows.get(key)
    return f if f is not None and f.protocol == ob.detail.get("protocol") else None


def icmp_refusal(table: SaTable, f: EspFlow) -> tuple[str, str, tuple[int, ...]]:
    """(explanation, hint, evidence frames) from ICMP errors other than for size that quote
    ``f``'s packets: the peer (or a router) saying it will not take them (RFC 792, RFC 4443 §3.1).

    The receiving host itself answering port unreachable (ESP in UDP 4500) or protocol
    unreachable (ESP, IP protocol 50) means nothing there takes ESP: no IKE daemon socket on
    the port, no ESP in its kernel, or a firewall reject rule; administratively prohibited is a
    filter's reject. A router answering means the path does not deliver them.
    """
    obs = [o for o in icmp_errors(table, too_big=False)
           if o.detail.get("flow") == (f.src, f.dst, f.spi) and o.detail.get("protocol") == f.protocol]
    if not obs:
        return "", "", ()
    parts = []
    hint = ""
    for o in obs:
        n = int(o.detail.get("count") or 0)  # type: ignore[call-overload]
        what = str(o.detail.get("what"))
        port = o.detail.get("dport") if o.detail.get("udp_encap") else None
        # An AH flow's packets are IP protocol 51 (RFC 4302 §2), never UDP-encapsulated.
        proto = "AH" if f.protocol == "AH" else "ESP"
        if o.src == f.dst:
            kind = f"ESP in UDP {port}" if port else f"{proto} (IP protocol {51 if proto == 'AH' else 50})"
            if "port unreachable" in what or "protocol unreachable" in what:
                cause = (f"nothing on {f.dst} takes {kind}: no socket on UDP {port} (its IKE daemon is down or "
                         "listens elsewhere) or a firewall rule rejecting it" if port else
                         f"{f.dst}'s kernel does not take {proto} (no {proto} support, or a firewall rule rejecting it)")
            else:
                cause = f"{f.dst} refuses them (a firewall reject rule)"
            parts.append(f"{f.dst} itself answered {n} of them with ICMP {what} (frame {o.frames[0]}): {cause}.")
            hint = hint or (f"On {f.dst}: check that charon listens on UDP {port} (ss -ulnp) and that no firewall "
                            f"rule rejects {kind} from {f.src} (nft list ruleset / iptables -S)." if port else
                            f"On {f.dst}: allow {kind} from {f.src} in its firewall and check that "
                            "its kernel has the SA (ip xfrm state).")
        else:
            parts.append(f"The router {o.src} answered {n} of them with ICMP {what} (frame {o.frames[0]}): the path "
                         f"does not deliver them to {f.dst}.")
            hint = hint or f"Check routing and filtering at {o.src} for traffic from {f.src} to {f.dst}."
    return " " + " ".join(parts), hint, frames_of(*(o.frames[:2] for o in obs))


def refusal_first(why: str, why_hint: str, ike_frames: tuple[int, ...], refused: str, icmp_hint: str,
                  silent: str, udp: bool) -> tuple[str, str]:
    """Explanation and hint for missing ESP from ``silent`` when ICMP errors (:func:`icmp_refusal`)
    say why: they replace the guesses of :func:`esp_silence_cause`; what IKE shows stays as a
    short fact (``silent`` is up, so only ESP is refused)."""
    if not refused:
        return why, why_hint
    alive = ""
    if why and ike_frames:
        alive = (f" {silent} itself is up: it still completes IKE exchanges in the same IKE SA (frame "
                 f"{ike_frames[-1]}), so only ESP is refused")
        # ESP in UDP shares IKE's port (RFC 3948 §2): IKE answered there means a socket listens,
        # so what refuses ESP looks past the port, at the first payload word.
        alive += (": a firewall rule that tells ESP from IKE on the port (a non-zero first payload word is "
                  "ESP) rejects it." if udp else ".")
    return refused + alive, icmp_hint


def icmp_ike_refusal(table: SaTable, sa: IkeSa, requester: str) -> tuple[str, tuple[int, ...]]:
    """(explanation, evidence frames) from ICMP errors quoting ``requester``'s IKE messages of
    ``sa`` (matched by the initiator SPI in the quoted IKE header): who refused them and how."""
    spi = sa.ike_spi_i.hex()
    obs = [o for o in icmp_errors(table) if o.detail.get("protocol") == "IKE"
           and o.detail.get("ike_spi_i") == spi and o.detail.get("quoted_src") == requester]
    if not obs:
        return "", ()
    parts = []
    for o in obs:
        n = int(o.detail.get("count") or 0)  # type: ignore[call-overload]
        port = o.detail.get("dport")
        who = (f"{o.src} itself" if o.src == o.detail.get("quoted_dst") else f"The router {o.src}")
        parts.append(f"{who} answered {n} of them with ICMP {o.detail.get('what')} (frame {o.frames[0]})"
                     + (f": nothing takes UDP {port} there (no IKE daemon socket on that port) or a firewall "
                        "rule rejects it." if o.src == o.detail.get("quoted_dst") and "unreachable" in str(
                            o.detail.get("what")) else "."))
    return " " + " ".join(parts), frames_of(*(o.frames[:2] for o in obs))


def copies_from_capture(flow: EspFlow) -> bool:
    """Whether ``flow``'s capture duplicates (state/esp_flow: copies of a recent packet within CAPTURE_DUP_GAP)
    are the capture point's own: a bridge and its port, ``-i any`` with a VLAN device or a mirror of
    both directions copies most packets of a flow, a device on the path that duplicates (the
    path-impairments sample's bridge) copies a few. The bytes alone cannot tell the two apart: the
    share can (at least 2 copies and a quarter of the flow's packets)."""
    n = flow.capture_duplicates
    return n >= 2 and 4 * n >= flow.packets
