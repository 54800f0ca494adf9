"""ESP and AH packets into the SA table: per-flow counters, binding flows to CHILD SAs, and
CHILD SAs inferred from traffic when no IKE exchange for an SPI was seen.

A flow is one direction of one SA as it appears on the wire, (src, dst, SPI). It is bound to
the CHILD SA an IKE exchange negotiated for that SPI, else grouped with the opposite flow between
the same peers into an INFERRED CHILD SA.
"""

from __future__ import annotations

from ..model.sa import ChildSa, EspFlow, SaState
from .book import Book
from .child_sa import any_contains, flow_direction, inner_5tuple
from .esp_flow import _MASK as _SEQ_MASK
from .esp_flow import EVIDENCE, account
from .esp_flow import TRACK as _SEQ_TRACK

INFER_PAIR_WINDOW = 10.0  # s: two opposite ESP flows starting this close belong to one CHILD SA


def on_sa_packet(book: Book, pkt, res, proto: str, length: int, encap: bool, sport: int,
                 dport: int) -> EspFlow:
    """Account one ESP or AH packet on its flow (creating and binding the flow if new)."""
    return on_sa_fields(book, pkt.frame, pkt.ts, pkt.src, pkt.dst, pkt.spi, pkt.seq, res, proto, length,
                        encap, sport, dport)


def on_sa_fields(book: Book, frame: int, ts: float, src: str, dst: str, spi: int, seq: int, res,
                 proto: str, length: int, encap: bool, sport: int, dport: int) -> EspFlow:
    """:func:`on_sa_packet` from the packet's fields: the analysis path's hot loop
    (``session_fast``) has them at hand and builds no packet object."""
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
            book.nat.destination(dst, dport, ts, frame, f"{proto} 0x{spi:08x}")
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
    else:
        account(flow, sq, seq, seq_hi, frame)
    child = t.child_sas.get(flow.child_sa) if flow.child_sa is not None else None
    if child is None:
        return flow
    if status == "ok" and child.state == SaState.INFERRED and (child.mode == "unknown" or not child.keys_source):
        _learn_from_keys(child, res)
    # Return-traffic bookkeeping: a run of packets one way with nothing coming back.
    if flow.unanswered_tail == 0:
        flow.unanswered_since_frame = frame
        flow.unanswered_since_ts = ts
    flow.unanswered_tail += 1
    flows = book.table.flows
    for other_spi in (child.spi_i, child.spi_r):
        if other_spi is not None and other_spi != spi:
            rev = flows.get((dst, src, other_spi, proto))
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
    (RFC 4301 §5.2: a receiver drops what its SA's selectors do not cover)."""
    t = inner_5tuple(inner or b"", nh)
    if t is None:
        return
    isrc, idst, ip_proto, sp, dp = t
    i2r = flow_direction(child, flow.src, flow.dst, flow.spi) == "i2r"
    src_ts, dst_ts = (child.ts_i, child.ts_r) if i2r else (child.ts_r, child.ts_i)
    ok = (not src_ts or any_contains(src_ts, isrc, ip_proto, sp)) and (
        not dst_ts or any_contains(dst_ts, idst, ip_proto, dp))
    if not ok:
        flow.outside_ts += 1
        if len(flow.outside_ts_frames) < EVIDENCE:
            flow.outside_ts_frames.append(frame)
        if flow.outside_ts_example is None:
            ports = f" ports {sp}->{dp}" if sp is not None else ""
            flow.outside_ts_example = f"{isrc} -> {idst} proto {ip_proto}{ports}"


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
        book.nat.source(ike, ike.key, role, flow.src, sport, ts, frame, f"{flow.protocol} 0x{flow.spi:08x}")
    else:
        book.nat.source(child, f"child:{child.id}", "initiator" if i2r else "responder", flow.src, sport, ts,
                        frame, f"{flow.protocol} 0x{flow.spi:08x}")


def bind_flow(book: Book, flow: EspFlow) -> None:
    """Bind a new flow to the CHILD SA that negotiated its SA, identified as RFC 4301 §4.1 says by
    SPI, destination and protocol: one SPI to two destinations (or over IPv4 and IPv6) is two SAs."""
    best = None
    for cid in reversed(book.children_of_sa(flow.dst, flow.protocol, flow.spi)):
        c = book.table.child_sas.get(cid)
        if c is None:
            continue
        # Initiator→responder packets carry spi_r, the other direction spi_i.
        if (flow.spi == c.spi_r and flow.src == c.initiator) or (flow.spi == c.spi_i and flow.src == c.responder):
            best = c
            break
        if best is None:
            best = c
    if best is not None:
        book.attach_flow(flow, best)
        return
    infer(book, flow)


def infer(book: Book, flow: EspFlow) -> None:
    """No IKE told us about this SA: group it with the opposite flow between the same peers
    that started at about the same time (the two halves of one CHILD SA), else start an
    INFERRED CHILD SA of its own."""
    ts = flow.first_ts or 0.0
    c = book.take_half_inferred(flow.dst, flow.src, flow.protocol, ts, INFER_PAIR_WINDOW)
    if c is not None:
        c.spi_i = flow.spi
        c.inferred_reason = (f"two ESP flows in opposite directions between {c.initiator} and "
                             f"{c.responder} started {abs(ts - (c.created_ts or 0.0)):.1f} s apart")
        book.attach_flow(flow, c)
        book.register_spi(c, flow.spi)
        return
    ike = book.latest_ike_between(flow.src, flow.dst)
    child = book.new_child(ike, protocol=flow.protocol, spi_r=flow.spi, initiator=flow.src,
                           responder=flow.dst, state=SaState.INFERRED, created_ts=ts,
                           created_frame=flow.first_frame, created_by="ESP traffic")
    child.mode = "unknown"
    child.inferred_reason = f"ESP flow {flow.src} -> {flow.dst} SPI 0x{flow.spi:08x} with no IKE exchange seen for it"
    book.index_spi(child, flow.spi)
    book.attach_flow(flow, child)
    book.emit("child_sa_created", ts, child_sa=child.id, ike_sa=child.ike_sa, spi_r=flow.spi,
              inferred=True)
    book.add_inferred(child, ts, INFER_PAIR_WINDOW)


def _learn_from_keys(child: ChildSa, res) -> None:
    """A packet of an INFERRED CHILD SA decrypted: the keys name their source, and the inner
    packet tells the mode. RFC 4303 §2.6: Next Header 4 (IPv4) or 41 (IPv6) is a whole IP packet,
    tunnel mode; a transport protocol (TCP, UDP, ICMP...) is transport mode. 59 (no next header)
    is a dummy packet (§2.6, TFC) and says nothing."""
    keys = getattr(res, "keys", None)
    if not child.keys_source and keys is not None and getattr(keys, "source", ""):
        child.keys_source = keys.source
    nh = getattr(res, "next_header", None)
    if child.mode == "unknown" and nh is not None and nh != 59:
        child.mode = "tunnel" if nh in (4, 41) else "transport"
