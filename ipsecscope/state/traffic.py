"""ESP and AH packets into the SA table: per-flow counters, binding flows to CHILD SAs, and
CHILD SAs inferred from traffic when no IKE exchange for an SPI was seen.

A flow is one direction of one SA as it appears on the wire, (src, dst, SPI). It is bound to
the CHILD SA an IKE exchange negotiated for that SPI, else grouped with the opposite flow between
the same peers into an INFERRED CHILD SA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..decode.ipcomp import IPCOMP
from ..model.idtext import spi_text
from ..model.plural import noun, plural, verb
from ..model.sa import ChildSa, EspFlow, SaState, is_multicast
from .book import Book
from .child_sa import address_text, flow_direction, inner_fields, ranges_cover, selector_ranges
from .esp_flow import _MASK as _SEQ_MASK
from .esp_flow import _RING_MASK as _SEQ_RING_MASK
from .esp_flow import EVIDENCE, account
from .esp_flow import TRACK as _SEQ_TRACK

if TYPE_CHECKING:
    from ..crypto.esp import EspResult
    from ..model.packets import AhPacket, EspPacket

INFER_PAIR_WINDOW = 10.0  # s: two opposite ESP flows starting this close belong to one CHILD SA
_CANDIDATES = 4  # reverse flows an unpaired INFERRED CHILD SA names as fitting (pair_candidates)


def on_sa_packet(book: Book, pkt: EspPacket | AhPacket, res: EspResult | None, proto: str, length: int, encap: bool, sport: int,
                 dport: int) -> EspFlow:
    """Account one ESP or AH packet on its flow (creating and binding the flow if new)."""
    data = pkt.data
    flow = on_sa_fields(book, pkt.frame, pkt.ts, pkt.src, pkt.dst, pkt.spi, pkt.seq, res, proto, length,
                        encap, sport, dport, int.from_bytes(data[-4:], "big") if len(data) >= 4 else -1)
    # Fragments never take the fast loop (session_fast hands them to the general path), so the
    # count lives here only.
    if pkt.ip_fragmented:
        flow.ip_fragmented += 1
        if len(flow.ip_fragmented_frames) < EVIDENCE:
            flow.ip_fragmented_frames.append(pkt.frame)
    return flow


def on_sa_fields(book: Book, frame: int, ts: float, src: str, dst: str, spi: int, seq: int, res: EspResult | None,
                 proto: str, length: int, encap: bool, sport: int, dport: int, tail: int = -1) -> EspFlow:
    """:func:`on_sa_packet` from the packet's fields: the analysis path's hot loop
    (``session_fast``) has them at hand and builds no packet object. ``tail``: the packet's last
    four octets as an int (esp_flow: a capture duplicate repeats them; -1 unknown)."""
    t = book.table
    if t.last_ts is None or ts > t.last_ts or t.first_ts is None or ts < t.first_ts:
        book.touch(ts)
    key = (src, dst, spi, proto)  # EspFlow.key: RFC 4301 §4.1, the protocol is part of the SA's name
    flow = t.flows.get(key)
    if flow is None:
        flow = new_flow(book, frame, ts, src, dst, spi, proto, encap, sport, dport)
    flow.packets += 1
    flow.bytes += length
    flow.last_ts = ts
    flow.last_frame = frame
    status = getattr(res, "status", None) if res is not None else None
    seq_hi = res.seq_hi if status == "ok" else None  # type: ignore[union-attr]
    if status == "no_key":  # the bulk of a capture without keys
        flow.no_key += 1
    elif status == "ok":
        flow.decrypted += 1
        if not flow.keys_nat:
            flow.keys_nat = getattr(getattr(res, "keys", None), "nat", "") or ""
    elif status == "icv_failed":
        flow.icv_failed += 1
        if len(flow.icv_failed_frames) < EVIDENCE:
            flow.icv_failed_frames.append(frame)
    elif status == "malformed":
        flow.malformed += 1
    elif status == "unsupported":
        flow.unsupported += 1
        if len(flow.unsupported_frames) < EVIDENCE:
            flow.unsupported_frames.append(frame)
        if not flow.unsupported_reason:
            flow.unsupported_reason = getattr(res, "reason", "") or ""
            keys = getattr(res, "keys", None)
            flow.unsupported_keys_source = getattr(keys, "source", "") or ""
    if encap:
        if sport != flow.sport_last or dport != flow.dport_last:  # a new flow, or a NAT moved a port
            _ports_changed(book, flow, sport, dport, ts, frame)
        if book.nat.watching:  # a rebinding waits for the other peer: is this packet to the old port?
            book.nat.destination(dst, dport, ts, frame, f"{proto} {spi_text(spi)}")
    sq = book.seq_trackers[key]
    top = sq.top
    full = -1
    if top is not None and flow.seq_max == top:
        # The common case, inlined from esp_flow.account: the next number in order. Without
        # ESN high bits from a decryption no wrap is possible then; with them, the full number
        # must be top + 1. account() would find verdict "new", add one bit to the window and
        # change nothing else.
        if seq_hi is None:
            if (top & 0xFFFFFFFF) + 1 == seq:
                full = top + 1
        elif (seq_hi << 32 | seq) == top + 1:
            full = top + 1
            if seq_hi > sq.hi:
                sq.hi = seq_hi
    if full >= 0:
        sq.top = full
        bits = (sq.bits << 1) | 1
        sq.bits = bits & _SEQ_MASK if bits >> (_SEQ_TRACK + 256) else bits
        flow.seq_max = full
        flow.esn_hi = full >> 32
        flow.lost = sq.missing
        sq.ring[full & _SEQ_RING_MASK] = (full, ts, length, tail, frame)  # what account() keeps of every packet
    elif account(flow, sq, seq, seq_hi, frame, ts, length, tail) == "copy":
        # a copy of a packet already counted (esp_flow): a frame of the capture, not a packet sent,
        # so it neither lengthens the run without an answer nor counts again after a delete/rekey
        if status == "ok":
            flow.copies_decrypted += 1
        elif status == "icv_failed":
            flow.copies_icv_failed += 1
        return flow
    child = t.child_sas.get(flow.child_sa) if flow.child_sa is not None else None
    if child is None:
        return flow
    if status == "ok" and child.state == SaState.INFERRED:
        if flow.decrypted == 1:  # a flow's first decryption: the suite must match its pair's
            child = _check_suite(book, child, flow, res)
        if child.mode == "unknown" or not child.keys_source:
            _learn_from_keys(child, res)
    # Return-traffic bookkeeping: a run of packets one way with nothing coming back.
    if flow.unanswered_tail == 0:
        flow.unanswered_since_frame = frame
        flow.unanswered_since_ts = ts
    flow.unanswered_tail += 1
    flows = book.table.flows
    # Any packet back on the CHILD SA answers (an AH+ESP bundle's AH answers its ESP too).
    for other_proto, spi_i, spi_r in child.spi_pairs():
        for other_spi in (spi_i, spi_r):
            if other_spi is not None and (other_spi != spi or other_proto != proto):
                rev = flows.get((dst, src, other_spi, other_proto))
                if rev is not None:
                    rev.unanswered_tail = 0
    if child.deleted_ts is not None and ts > child.deleted_ts:
        flow.after_delete += 1
        if len(flow.after_delete_frames) < EVIDENCE:
            flow.after_delete_frames.append(frame)
    elif child.rekeyed_ts is not None and ts > child.rekeyed_ts:
        flow.after_rekey += 1
        flow.after_rekey_last_ts = ts
    if status == "ok" and (child.ts_i or child.ts_r):
        check_selectors(flow, child, frame, getattr(res, "inner", None), getattr(res, "next_header", None))
    return flow


def check_selectors(flow: EspFlow, child: ChildSa, frame: int, inner: bytes | None, nh: int | None) -> None:
    """Count a decrypted inner packet outside ``child``'s traffic selectors on ``flow``
    (RFC 4301 §5.2: a receiver drops what its SA's selectors do not cover). Integers only: the
    selectors are compiled once per CHILD SA (child_sa.selector_ranges)."""
    t = inner_fields(inner or b"", nh)
    if t is None:
        return
    ver, isrc, idst, ip_proto, sp, dp = t
    ts_i, ts_r = selector_ranges(child)
    if flow_direction(child, flow.src, flow.dst, flow.spi) == "i2r":
        src_ts, dst_ts, src_sel, dst_sel = ts_i, ts_r, child.ts_i, child.ts_r
    else:
        src_ts, dst_ts, src_sel, dst_sel = ts_r, ts_i, child.ts_r, child.ts_i
    if (not src_sel or ranges_cover(src_ts, ver, isrc, ip_proto, sp)) and (
            not dst_sel or ranges_cover(dst_ts, ver, idst, ip_proto, dp)):
        return
    flow.outside_ts += 1
    if len(flow.outside_ts_frames) < EVIDENCE:
        flow.outside_ts_frames.append(frame)
    if flow.outside_ts_example is None:
        ports = f" ports {sp}->{dp}" if sp is not None else ""
        flow.outside_ts_example = f"{address_text(ver, isrc)} -> {address_text(ver, idst)} proto {ip_proto}{ports}"


def new_flow(book: Book, frame: int, ts: float, src: str, dst: str, spi: int, proto: str, encap: bool,
             sport: int, dport: int) -> EspFlow:
    """File the flow a first packet (``frame``) opens, bound to its CHILD SA (negotiated or
    inferred); counts nothing yet (``on_sa_fields`` and ``state.bulk`` count its packets)."""
    flow = EspFlow(src=src, dst=dst, spi=spi, protocol=proto, first_ts=ts,
                   first_frame=frame, udp_encap=encap, sport=sport, dport=dport)
    book.add_flow(flow)
    bind_flow(book, flow)
    book.emit("esp_flow_started", ts, src=src, dst=dst, spi=spi, protocol=proto,
              child_sa=flow.child_sa, frame=frame)
    return flow


def _ports_changed(book: Book, flow: EspFlow, sport: int, dport: int, ts: float, frame: int) -> None:
    """The first packet of an ESP-in-UDP flow, or one whose ports differ from the flow's last:
    note its sender's NAT-T endpoint on the IKE SA (else the CHILD SA), where a change of it is a
    NAT rebinding (state/nat.py). Same SPI and destination from a new address is a new flow of the
    same SA (RFC 4301 §4.1), so an address change arrives here too, as that flow's first packet."""
    flow.sport_last, flow.dport_last = sport, dport
    child = book.table.child_sas.get(flow.child_sa) if flow.child_sa is not None else None
    if child is None:
        return
    i2r = flow_direction(child, flow.src, flow.dst, flow.spi) == "i2r"
    ike = book.ike_sa_of(child)
    if ike is not None:
        # The CHILD SA's roles are its creating exchange's; CREATE_CHILD_SA from the IKE responder swaps them.
        role = "initiator" if i2r == (child.initiator == ike.initiator) else "responder"
        book.peer_source(ike, ike.key, role, flow.src, sport, ts, frame, f"{flow.protocol} {spi_text(flow.spi)}")
    else:
        book.peer_source(child, f"child:{child.id}", "initiator" if i2r else "responder", flow.src, sport, ts,
                        frame, f"{flow.protocol} {spi_text(flow.spi)}")


def bind_flow(book: Book, flow: EspFlow) -> None:
    """Bind a new flow to the CHILD SA that negotiated its SA, identified as RFC 4301 §4.1 says by
    SPI, destination and protocol: one SPI to two destinations (or over IPv4 and IPv6) is two SAs."""
    best = None
    for cid in reversed(book.children_of_sa(flow.dst, flow.protocol, flow.spi)):
        c = book.table.child_sas.get(cid)
        if c is None:
            continue
        # Initiator→responder packets carry spi_r, the other direction spi_i (of each protocol of a bundle).
        if any(proto == flow.protocol and ((flow.spi == spi_r and flow.src == c.initiator)
                                           or (flow.spi == spi_i and flow.src == c.responder))
               for proto, spi_i, spi_r in c.spi_pairs()):
            best = c
            break
        if best is None:
            best = c
    if best is not None:
        book.attach_flow(flow, best)
        return
    infer(book, flow)


def infer(book: Book, flow: EspFlow) -> None:
    """No IKE told us about this SA. A CHILD SA is a pair of SAs, one each way (RFC 4301 §4.1,
    RFC 7296 §2.17), but nothing on the wire links the two SPIs: pair this flow with a waiting
    flow in the opposite direction only when the evidence holds (:func:`pair_misfit`) and exactly
    one such flow fits; otherwise it is an INFERRED CHILD SA of its own, "unpaired", saying why.
    "Exactly one" holds both ways and whatever the order the flows start in: a flow that fits
    only a flow already paired within the window makes that pairing one of two, so it is undone
    (Arkime's Fortinet IKEv1 capture: one peer answers two CHILD SAs' traffic on one SA)."""
    if book.half_negotiated and fill_half(book, flow):
        return
    ts = flow.first_ts or 0.0
    fits: list[tuple[ChildSa, EspFlow]] = []
    misfits: list[str] = []
    cands, more = book.half_inferred(flow.dst, flow.src, flow.protocol, ts, INFER_PAIR_WINDOW)
    rtt = ike_round_trip(book, flow.src, flow.dst) if cands else 0.0
    for c in cands:
        other = book.table.child_flows.get(c.id, [None])[0]
        if other is None:
            continue
        why = pair_misfit(other, flow, ts, rtt)
        if why:
            misfits.append(why)
        else:
            fits.append((c, other))
            if len(fits) == 2:  # not unique: which one is its pair is not known
                break
    if len(fits) == 1 and not more:
        c, other = fits[0]
        book.take_half_inferred(c)
        c.spi_i = flow.spi
        c.pair_candidates = []  # a flow that fit others earlier has its one pair now
        c.inferred_reason = (f"paired: {flow.protocol} flows in opposite directions between {c.initiator} and {c.responder}, "
                             f"{spi_text(other.spi)} and {spi_text(flow.spi)}, started {abs(ts - (c.created_ts or 0.0)):.1f} s "
                             "apart, both active, same encapsulation" + (
                                 f" (UDP {other.sport} <-> {other.dport})" if flow.udp_encap else "")
                             + "; no other flow fits")
        book.attach_flow(flow, c)
        book.register_spi(c, flow.spi)
        return
    contested = [] if fits or more else _contested(book, flow, ts)
    ike = book.latest_ike_between(flow.src, flow.dst)
    child = book.new_child(ike, protocol=flow.protocol, spi_r=flow.spi, initiator=flow.src,
                           responder=flow.dst, state=SaState.INFERRED, created_ts=ts,
                           created_frame=flow.first_frame, created_by=f"{flow.protocol} traffic")
    child.mode = "unknown"
    if contested:
        child.inferred_reason = _unpaired(book, flow, "; " + "; ".join(
            f"{spi_text(first.spi)} in the opposite direction fits it, and fits {spi_text(second.spi)} as well (which "
            "started first): which one is its pair is not known" for _, first, second in contested)
            + "".join(f"; {m}" for m in misfits[:3]))
        child.pair_candidates = [first.spi for _, first, _ in contested]
    else:
        child.inferred_reason = _unpaired(book, flow, _unpaired_why(fits, misfits, more))
        if len(fits) > 1 or (fits and more):
            child.pair_candidates = [o.spi for _, o in fits]
    if len(fits) > 1 or (fits and more):  # the waiting ones stay unpaired as well: tell them why
        for c, _ in fits:
            if len(c.pair_candidates) >= _CANDIDATES:
                continue  # a flood of reverse flows: the first few say it (the text stays bounded)
            if not c.pair_candidates:
                c.inferred_reason = c.inferred_reason.replace(_NONE_NEAR, "")
            c.inferred_reason += f"; {spi_text(flow.spi)} in the opposite direction fits it and other flows do too"
            c.pair_candidates.append(flow.spi)
    book.index_spi(child, flow.spi)
    book.attach_flow(flow, child)
    book.emit("child_sa_created", ts, child_sa=child.id, ike_sa=child.ike_sa, spi_r=flow.spi,
              inferred=True)
    book.add_inferred(child, ts, INFER_PAIR_WINDOW)


def fill_half(book: Book, flow: EspFlow) -> bool:
    """A flow from a CHILD SA's responder to its initiator on an SPI no SA claims, where the
    capture holds that CHILD SA's answer but not its request (ikev2.child_from_answer): the
    initiator's SPI, which only the request carried, is this flow's when exactly one such CHILD SA
    between them is alive at the flow's start and its own flow (if any) came the same way (the same
    encapsulation, the ports mirrored). Returns whether the flow was bound."""
    ts = flow.first_ts or 0.0
    fits = []
    for c in book.half_negotiated:
        if (c.spi_i is not None or c.protocol != flow.protocol or c.initiator != flow.dst or c.responder != flow.src
                or book.table.child_sas.get(c.id) is not c or (c.created_ts or 0.0) > ts
                or (c.deleted_ts is not None and c.deleted_ts < ts)):
            continue
        other = next(iter(book.table.child_flows.get(c.id, ())), None)
        if other is not None and (other.udp_encap != flow.udp_encap
                                  or (other.sport, other.dport) != (flow.dport, flow.sport)):
            continue
        fits.append(c)
    if len(fits) != 1:
        return False
    c = fits[0]
    c.spi_i = flow.spi
    book.half_negotiated.remove(c)
    c.inferred_reason = (f"paired: the initiator's SPI {spi_text(flow.spi)} read from its traffic ({c.created_by} "
                         "request, which carried it, not captured): the one flow from the responder to the "
                         "initiator on an SPI no SA claims while this CHILD SA was up, the same way as its own")
    book.attach_flow(flow, c)
    book.register_spi(c, flow.spi)
    return True


def _contested(book: Book, flow: EspFlow, ts: float) -> list[tuple[ChildSa, EspFlow, EspFlow]]:
    """No waiting flow fits ``flow``: the pairs made by inference within the window whose first
    flow (opposite to ``flow``) fits it too, undone. Such a first flow fits two flows in
    ``flow``'s direction, so which one is its pair is not known, as when both had been waiting
    (:func:`infer`'s "more than one flow ... fits it"). Returns (CHILD SA of the first flow,
    first flow, the flow it had been paired with)."""
    paired = book.paired_inferred(flow.dst, flow.src, flow.protocol, ts, INFER_PAIR_WINDOW)
    if not paired:
        return []
    rtt = ike_round_trip(book, flow.src, flow.dst)
    out: list[tuple[ChildSa, EspFlow, EspFlow]] = []
    for c in paired:
        cf = book.table.child_flows.get(c.id, ())
        first = next((f for f in cf if f.spi == c.spi_r and f.src == c.initiator), None)
        second = next((f for f in cf if f.spi == c.spi_i and f.src == c.responder), None)
        if first is None or second is None or len(cf) != 2 or pair_misfit(first, flow, ts, rtt):
            continue
        alone = book.split_inferred(c, second, "")
        c.inferred_reason = _unpaired(book, first, f"; more than one flow in the opposite direction fits it ({spi_text(second.spi)}, "
                                      f"{spi_text(flow.spi)}): which one is its pair is not known")
        c.pair_candidates = [second.spi, flow.spi]
        alone.inferred_reason = _unpaired(book, second, f"; {spi_text(first.spi)} in the opposite direction fits it and other "
                                          "flows do too")
        alone.pair_candidates = [first.spi]
        book.wait_again(c)
        book.wait_again(alone)
        out.append((c, first, second))
    return out


def _unpaired(book: Book, flow: EspFlow, why: str) -> str:
    if why == _NONE_NEAR and is_multicast(flow.dst):
        why = _GROUP
    return (f"unpaired: {flow.protocol} flow {flow.src} -> {flow.dst} SPI {spi_text(flow.spi)} with no IKE exchange "
            + _unread_exchanges(book, flow) + why)


# A group address answers nobody: an SA to a multicast destination carries one direction only and
# has no reverse to pair with (RFC 4301 §4.1; OSPFv3 under AH to ff02::5, VRRP under AH).
_GROUP = "; its destination is a multicast group: a group SA carries one direction only (RFC 4301 §4.1)"


# Exchanges that create CHILD SAs, by IKE version: their SA payloads carry the SPIs (RFC 2409
# §5.5, RFC 7296 §1.2, §1.3).
_CHILD_EXCHANGES = {1: {32: "Quick Mode"}, 2: {35: "IKE_AUTH", 36: "CREATE_CHILD_SA"}}


def _unread_exchanges(book: Book, flow: EspFlow) -> str:
    """How much of the IKE SA between the flow's peers could not be read: an encrypted exchange
    that creates CHILD SAs may well have negotiated this SPI ("no IKE exchange seen" was said
    beside two encrypted Quick Modes)."""
    ike = book.latest_ike_between(flow.src, flow.dst)
    names = _CHILD_EXCHANGES.get(ike.version, {}) if ike is not None else {}
    hidden = [x for x in ike.exchanges if x.exchange in names and x.encrypted and not x.decrypted] if ike else []
    if not hidden:
        return "seen for it"
    kinds = sorted({names[x.exchange] for x in hidden})
    frames = sorted(x.request_frames[0] for x in hidden if x.request_frames)
    n = len(hidden)
    return (f"readable for it (the {plural(n, ' and '.join(kinds) + ' exchange')} between these peers"
            + (f", {noun(len(frames), 'frame')} {', '.join(map(str, frames[:4]))}{', ...' if len(frames) > 4 else ''}"
               if frames else "")
            + f", {verb(n, 'is')} encrypted and no IKE key opened {'it' if n == 1 else 'them'})")


def ike_round_trip(book: Book, a: str, b: str) -> float:
    """How long ``b`` or ``a`` took to answer the other across the path, as their IKE SA shows it:
    the slowest request -> response of its exchanges (RFC 7296 §2.1: one request, one response;
    an IKE responder computes DH and signatures, so this bounds a path round trip plus a host's
    processing), leaving out retransmitted ones (which copy a response answers is not known).
    0 without such an exchange."""
    ike = book.latest_ike_between(a, b)
    worst = 0.0
    if ike is None:
        return worst
    for x in ike.exchanges:
        if x.request_ts is None or x.response_ts is None or x.retransmits or x.response_retransmits:
            continue
        worst = max(worst, x.response_ts - x.request_ts)
    return min(worst, INFER_PAIR_WINDOW)


def pair_misfit(w: EspFlow, r: EspFlow, ts: float, rtt: float = 0.0) -> str:
    """Why ``r`` (starting at ``ts``) cannot be the reverse half of the CHILD SA whose other half is
    ``w``, or "" when it can. The two SAs of one CHILD SA share the path and the encapsulation (RFC
    3948: both directions of a UDP-encapsulated SA use one port pair, mirrored), and both directions
    are in use at once: the reverse starts while ``w`` is still active, within twice ``w``'s own
    packet interval of its last packet (a reply to its traffic), or within the pairing window when
    ``w`` has sent one packet so far and has no rhythm yet. A reply comes a round trip after what it
    answers, whatever the sender's rhythm: a burst of packets a few ms apart is answered one path
    round trip (and the peer's processing) later, so a reverse starting within ``rtt`` of ``w``'s
    last packet fits too (the peers' IKE exchanges measured it: :func:`ike_round_trip`)."""
    if w.udp_encap != r.udp_encap:
        enc = "UDP-encapsulated" if w.udp_encap else "plain ESP"
        return f"{spi_text(w.spi)} in the opposite direction is {enc}, this one is not"
    if r.udp_encap and (r.sport, r.dport) != (w.dport, w.sport):
        return (f"{spi_text(w.spi)} in the opposite direction uses UDP {w.sport} -> {w.dport}, this one "
                f"{r.sport} -> {r.dport} (not the mirrored port pair)")
    last = w.last_ts if w.last_ts is not None else (w.first_ts or 0.0)
    if w.packets >= 2 and w.first_ts is not None:
        rhythm = (last - w.first_ts) / (w.packets - 1)
        allow = max(2 * rhythm, rtt, 1e-3)
    else:
        rhythm, allow = 0.0, INFER_PAIR_WINDOW
    if ts - last > allow:
        return (f"{spi_text(w.spi)} in the opposite direction had gone quiet: this one starts {ts - last:.3f} s after its "
                f"last packet" + (f" (it sent one every {rhythm:.3f} s)" if rhythm else ""))
    return ""


def _unpaired_why(fits: list, misfits: list[str], more: bool) -> str:
    if len(fits) > 1 or (fits and more):
        return (f"; more than one flow in the opposite direction fits it "
                f"({', '.join(spi_text(o.spi) for _, o in fits)}{', ...' if more else ''}): which one is its pair "
                "is not known")
    if misfits:
        return "; " + "; ".join(misfits[:3])
    return _NONE_NEAR


_NONE_NEAR = "; no flow in the opposite direction started near it"


def _check_suite(book: Book, child: ChildSa, flow: EspFlow, res) -> ChildSa:
    """Both SAs of a CHILD SA use the one proposal IKE chose (RFC 7296 §2.7, §3.3): two flows paired
    by inference whose keys name different algorithms are two unrelated SAs. Split them; returns
    the CHILD SA ``flow`` is on afterwards."""
    keys = getattr(res, "keys", None)
    if keys is None:
        return child
    suite = (getattr(keys, "encr", None), getattr(keys, "integ", None))
    seen = book.inferred_suites.setdefault(child.id, {})
    seen[flow.spi] = suite
    other = next((s for spi, s in seen.items() if spi != flow.spi), None)
    if other is None or other == suite:
        return child
    spi = next(s for s in seen if s != flow.spi)
    return book.split_inferred(child, flow, f"unpaired: the keys of {spi_text(spi)} ({_suite_text(other)}) and of "
                               f"{spi_text(flow.spi)} ({_suite_text(suite)}), in opposite directions, name different "
                               "algorithms; one CHILD SA has one proposal for both (RFC 7296 §3.3)")


def _suite_text(suite: tuple) -> str:
    from ..model import iana

    encr, integ = suite
    e = iana.name(iana.EncrTransform, encr) if isinstance(encr, int) else str(encr)
    i = iana.name(iana.IntegTransform, integ) if isinstance(integ, int) else str(integ)
    return e if i in ("NONE", "0", "None") else f"{e}/{i}"


def _learn_from_keys(child: ChildSa, res) -> None:
    """A packet of an INFERRED CHILD SA decrypted: the keys name their source, and the inner
    packet tells the mode. RFC 4303 §2.6: Next Header 4 (IPv4) or 41 (IPv6) is a whole IP packet,
    tunnel mode; a transport protocol (TCP, UDP, ICMP...) is transport mode. 59 (no next header)
    is a dummy packet (§2.6, TFC) and says nothing. IPComp (108, RFC 3173) says what it carries in
    its own next header: 4 or 41 is tunnel mode under it too."""
    keys = getattr(res, "keys", None)
    if not child.keys_source and keys is not None and getattr(keys, "source", ""):
        child.keys_source = keys.source
    nh = getattr(res, "next_header", None)
    if child.mode == "unknown" and nh is not None and nh != 59:
        inner = getattr(res, "inner", None)
        if nh == IPCOMP and inner:
            nh = inner[0]  # the IPComp header's next header
        child.mode = "tunnel" if nh in (4, 41) else "transport"
