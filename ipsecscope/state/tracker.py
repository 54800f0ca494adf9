"""The correlation engine: IKE/ESP events in, :class:`~ipsecscope.model.sa.SaTable` out.

No file, socket or UI access here, so the CLI, the TUI and live mode share it. The session calls,
in capture order::

    tracker.on_ike(msg)          # parsed (and, when keys allow, decrypted) IKE message
    tracker.on_esp(pkt, result)  # ESP packet with the decryptor's EspResult (or None)
    tracker.on_ah(pkt) / tracker.on_keepalive(pkt) / tracker.on_malformed(m)
    tracker.on_icmp_error(err)   # ICMP error quoting ESP/AH/IKE: an ``icmp_error`` observation

and reads ``tracker.table``; ``tracker.finish()`` after the last frame of a file draws the
end-of-input conclusions (an IKE SA whose last request was never answered becomes FAILED).

``tracker.events`` collects dicts for live mode (consumers pop them), each with ``event`` and
``ts``: ``ike_sa_created / ike_sa_established / ike_sa_rekeyed / ike_sa_deleted / ike_sa_failed``
(``ike_sa`` key, peers, reason, ``into``; an IKE SA made by an IKE SA rekey has its
``ike_sa_created`` too, with ``rekeyed_from``), ``ike_sa_redirected`` (``ike_sa``, ``to``: the
gateway a REDIRECT notify names, ``exchange``; RFC 5685), ``child_sa_created / child_sa_rekeyed /
child_sa_deleted / child_sa_failed`` (``child_sa`` id, ``ike_sa``, SPIs, ``by``), ``child_sa_moved``
(``child_sa``, ``from_ike_sa``, ``ike_sa``: an IKE SA rekey handed it to the new IKE SA, RFC 7296
§2.18),
``esp_flow_started`` (src, dst, spi, child_sa), ``esp_flow_moved`` (src, dst, spi, protocol,
``from_child_sa``, ``child_sa``, ``first_frame``: a flow bound to another CHILD SA, its frames
with it) and ``finding`` (code, severity, title, sa, frames;
emitted by ``note_findings(findings)`` once per finding). ``tracker.listeners`` are called with
each event as it happens (plugins' ``on_event``).

``pending_keymat()`` lists CHILD SAs whose ESP keys can be derived from their IKE SA's SK_d (see
:class:`~ipsecscope.model.sa.KeymatRequest`); call ``keymat_done(child_id, source)`` once derived.

Partial data is the normal case: captures start mid-tunnel, keys are missing, packets are lost.
Every handler works with what is visible and never raises on odd input.
"""


from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..model.packets import AhPacket, EspPacket, IcmpError, Malformed, NatKeepalive
from ..model.sa import EspFlow, KeymatRequest, Observation, SaState
from .book import MAX_OBSERVATIONS, Book
from .ikev1_stall import conclude as conclude_phase1
from .traffic import on_sa_fields, on_sa_packet

FRAG_LOST_KEPT = 16  # ESP packets lost with their fragments kept per flow as evidence (all are counted)

if TYPE_CHECKING:
    from ..model.ike import IkeMessage
    from ..model.sa import Finding


class Tracker(Book):
    """Builds the SA table from IKE, ESP and AH events. See the module docstring for the API."""

    def __init__(self, max_inferred: int | None = None, inferred_idle: float = 60.0) -> None:
        """``max_inferred``: live mode's bound on INFERRED CHILD SAs (CHILD SAs known only from ESP
        traffic). Past it the oldest one idle for ``inferred_idle`` s (else the oldest) is forgotten
        with its flows, so a flood of random SPIs cannot grow the table without limit; they are
        counted in an ``inferred_forgotten`` observation. None (the default, for files) keeps all."""
        super().__init__()
        self.max_inferred = max_inferred
        self.inferred_idle = inferred_idle
        self._keepalives: dict[tuple[str, str], Observation] = {}
        self._icmp: dict[tuple, Observation] = {}  # on_icmp_error's observation per SA, reporter, kind
        self._malformed_seen = 0
        self._announced: set[tuple] = set()

    # ------------------------------------------------------------------ IKE

    def on_ike(self, msg: IkeMessage) -> None:
        # (the IKE handlers and model load with the first IKE message: a capture of ESP alone
        # never needs them, start-up, issue 15)
        from .ikev1 import on_ikev1
        from .ikev2 import on_ikev2

        self.touch(msg.ts)
        try:
            if msg.header.major == 1:
                on_ikev1(self, msg)
            elif msg.header.major == 2:
                on_ikev2(self, msg)
            else:
                self.observe("ike_unknown_version", msg.ts, (msg.frame,), msg.src, msg.dst,
                             version=msg.header.major)
        except Exception as exc:  # noqa: BLE001 - odd input must never stop a capture being read
            self.observe("tracker_error", msg.ts, (msg.frame,), msg.src, msg.dst,
                         reason=f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ ESP / AH

    def on_esp(self, pkt: EspPacket, res: object | None = None) -> EspFlow | None:
        """Account one ESP packet (``res``: its EspResult, or None). Returns its flow (None only
        when the tracker hit an internal error, reported as a ``tracker_error`` observation)."""
        try:
            return on_sa_packet(self, pkt, res, "ESP", len(pkt.data), pkt.udp_encap, pkt.sport,
                                pkt.dport)
        except Exception as exc:  # noqa: BLE001
            self.observe("tracker_error", pkt.ts, (pkt.frame,), pkt.src, pkt.dst,
                         reason=f"{type(exc).__name__}: {exc}")
            return None

    def on_esp_fields(self, frame: int, ts: float, src: str, dst: str, spi: int, seq: int, res: object,
                      length: int, encap: bool, sport: int, dport: int, tail: int = -1) -> EspFlow | None:
        """:meth:`on_esp` from the packet's fields (``session_fast`` builds no packet object; ``tail``:
        the packet's last four octets as an int)."""
        try:
            return on_sa_fields(self, frame, ts, src, dst, spi, seq, res, "ESP", length, encap, sport, dport, tail)
        except Exception as exc:  # noqa: BLE001
            self.observe("tracker_error", ts, (frame,), src, dst, reason=f"{type(exc).__name__}: {exc}")
            return None

    def on_ah(self, pkt: AhPacket, res: object | None = None) -> EspFlow | None:
        """Account one AH packet (``res``: its crypto.ah.AhResult when AH keys were given, else
        None): counted on its flow as an ESP result is ("ok" = ICV verified). Returns its flow
        (None only on an internal error, as :meth:`on_esp`)."""
        try:
            flow = on_sa_packet(self, pkt, res, "AH", len(pkt.data), False, 0, 0)
            nat = getattr(res, "nat", "") if res is not None else ""
            if nat and not flow.ah_nat:
                flow.ah_nat = nat
            misfit = getattr(res, "icv_len", "") if res is not None else ""
            if misfit and not flow.ah_icv_len:
                flow.ah_icv_len = misfit
            return flow
        except Exception as exc:  # noqa: BLE001
            self.observe("tracker_error", pkt.ts, (pkt.frame,), pkt.src, pkt.dst,
                         reason=f"{type(exc).__name__}: {exc}")
            return None

    def on_keepalive(self, pkt: NatKeepalive) -> None:
        self.touch(pkt.ts)
        key = (pkt.src, pkt.dst)
        ob = self._keepalives.get(key)
        if ob is None:
            if len(self.table.observations) >= MAX_OBSERVATIONS:
                return
            ob = self._keepalives[key] = Observation("nat_keepalive", pkt.ts, (pkt.frame,), pkt.src, pkt.dst,
                                                     {"count": 0, "sport": pkt.sport, "dport": pkt.dport})
            self.table.observations.append(ob)
        count = ob.detail["count"] = self.table.keepalives.get(key, 0) + 1
        self.table.keepalives[key] = count
        ob.detail["last_ts"] = pkt.ts

    def on_icmp_error(self, err: IcmpError) -> None:
        """An ICMP error quoting an IPsec packet: one ``icmp_error`` observation per SA, reporter
        and kind of error, its ``count`` kept current (a router may answer every packet).

        The SA is the one RFC 4301 §4.1 names: SPI, destination and protocol of the quoted
        packet (``sa``: (quoted_dst, protocol, spi)); ``child_sa`` is the CHILD SA that uses it,
        if one is known yet, ``flow`` the quoted packet's (src, dst, spi) flow key."""
        try:
            self._icmp_error(err)
        except Exception as exc:  # noqa: BLE001 - odd input must never stop a capture being read
            self.observe("tracker_error", err.ts, (err.frame,), err.src, err.dst,
                         reason=f"{type(exc).__name__}: {exc}")

    def _icmp_error(self, err: IcmpError) -> None:
        self.touch(err.ts)
        ident = err.spi if err.spi is not None else err.ike_spi_i
        key = (err.protocol, err.quoted_dst, ident, err.quoted_src, err.src, err.ip_version, err.type, err.code)
        ob = self._icmp.get(key)
        if ob is None:
            if len(self.table.observations) >= MAX_OBSERVATIONS:
                return
            child = None
            if err.spi is not None:
                ids = self.children_of_sa(err.quoted_dst, err.protocol, err.spi)
                child = ids[-1] if ids else None
            ob = self._icmp[key] = Observation("icmp_error", err.ts, (), err.src, err.dst, {
                "count": 0, "protocol": err.protocol, "spi": err.spi, "ike_spi_i": err.ike_spi_i.hex() or None,
                "sa": (err.quoted_dst, err.protocol, err.spi) if err.spi is not None else None,
                "flow": (err.quoted_src, err.quoted_dst, err.spi) if err.spi is not None else None,
                "child_sa": child, "quoted_src": err.quoted_src, "quoted_dst": err.quoted_dst,
                "udp_encap": err.udp_encap, "sport": err.sport, "dport": err.dport,
                "icmp_version": err.ip_version, "type": err.type, "code": err.code, "what": err.what,
                "too_big": err.too_big, "unreachable": err.unreachable,
                "mtu": 0, "quoted_length": 0, "seqs": [], "last_ts": err.ts})
            self.table.observations.append(ob)
        d = ob.detail
        d["count"] = int(d["count"]) + 1  # type: ignore[call-overload]
        d["last_ts"] = err.ts
        if err.mtu and (not d["mtu"] or err.mtu < d["mtu"]):  # type: ignore[operator]
            d["mtu"] = err.mtu
        if err.quoted_length > d["quoted_length"]:  # type: ignore[operator]
            d["quoted_length"] = err.quoted_length
        seqs = d["seqs"]
        if err.seq is not None and err.seq not in seqs and len(seqs) < 64:  # type: ignore[operator, arg-type]
            seqs.append(err.seq)  # type: ignore[union-attr]
        if len(ob.frames) < 6:
            ob.frames = (*ob.frames, err.frame)

    def on_malformed(self, m: Malformed, whole: bool | None = None) -> None:
        """``whole``: the frame was captured in full (not cut by the snap length): what is wrong
        with it is in the bytes its sender sent (None: not known)."""
        self.touch(m.ts)
        self._malformed_seen += 1
        if m.esp is not None:
            self._esp_fragments_lost(m)
        if self._malformed_seen <= 20:
            self.observe("malformed", m.ts, (m.frame,), layer=m.layer, reason=m.reason, src=m.src, dst=m.dst,
                         whole=whole)

    def _esp_fragments_lost(self, m: Malformed) -> None:
        """An ESP packet whose later IP fragments never came, counted on its flow. A flow no whole
        packet made is not created here (it would be an SA inferred from one unreadable fragment):
        that packet is still the frame's MALFORMED mark, named, and CAPTURE-MALFORMED counts it."""
        esp = m.esp
        assert esp is not None
        flow = self.table.flows.get((m.src, m.dst, esp.spi, "ESP"))
        if flow is None:
            return
        flow.frag_lost += 1
        if len(flow.frag_lost_packets) < FRAG_LOST_KEPT:
            flow.frag_lost_packets.append((esp.seq, m.frame, esp.missing, m.ts))

    # ------------------------------------------------------------------ end of input

    def finish(self, now: float | None = None, timeout: float = 10.0) -> None:
        """Conclusions only the end of the input allows. Call after a file is read (the CLI does;
        live mode may call it now and then with the current time). Idempotent; a message that
        arrives later still updates the SAs.

        An IKE SA still INITIATING whose last request went unanswered for ``timeout`` seconds (or
        was retransmitted 3+ times) becomes FAILED with failure "no response".

        (Linking INFERRED CHILD SAs into rekey chains from ESP timing alone was tried and dropped:
        on real captures a second CHILD SA used one after the other looks exactly like a rekey.)
        """
        end = now if now is not None else self.table.last_ts
        if end is None:
            return
        for sa in self.table.ike_sas.values():
            if sa.version == 1 and sa.mode is not None:
                # IKEv1 phase 1: one exchange of 6 (3) messages, followed message by message
                conclude_phase1(self, sa, end, timeout)
                continue
            if sa.state != SaState.INITIATING or not sa.exchanges:
                continue
            x = sa.exchanges[-1]
            if x.response_frames or x.request_ts is None:
                continue
            if end - x.request_ts >= timeout or x.retransmits >= 3:
                self.fail_ike(sa, "no response", x.request_ts, x.request_frames[-1])

    # ------------------------------------------------------------------ findings as events

    def note_findings(self, findings: Iterable[Finding]) -> int:
        """Emit a ``finding`` event for each finding not announced before (live mode evaluates
        the rules now and then and calls this). Returns how many were new."""
        seen = self._announced
        new = 0
        for f in findings:
            key = (f.code, f.sa, f.title)
            if key in seen:
                continue
            seen.add(key)
            new += 1
            self.emit("finding", f.ts, code=f.code, severity=f.severity.name.lower(), title=f.title,
                      sa=f.sa, frames=list(f.frames))
        return new

    # ------------------------------------------------------------------ KEYMAT hand-off

    def pending_keymat(self) -> list[KeymatRequest]:
        """CHILD SAs (IKEv2) whose SPIs, nonces and chosen proposal are known and whose keys have
        not been derived yet. The caller looks up SK_d for (ike_spi_i, ike_spi_r) and calls
        :meth:`keymat_done` when it derived (or gave up on) the keys."""
        out = []
        for cid, cp in self.child_scratch.items():
            if cp.keymat_done or not cp.algs or cp.ni is None or cp.nr is None:
                continue
            c = self.table.child_sas.get(cid)
            if c is None or c.spi_i is None or c.spi_r is None or c.state == SaState.FAILED:
                continue
            out.append(KeymatRequest(
                child_id=cid, ike_spi_i=cp.ike_spi_i, ike_spi_r=cp.ike_spi_r, ni=cp.ni, nr=cp.nr,
                spi_i=c.spi_i, spi_r=c.spi_r, initiator=c.initiator, responder=c.responder,
                protocol=cp.protocol, encr=cp.algs.get("encr"), encr_key_bits=cp.algs.get("encr_bits"),
                integ=cp.algs.get("integ"), esn=cp.algs.get("esn") == 1, pfs_group=c.pfs_group,
            ))
        return out

    def keymat_done(self, child_id: int, source: str | None = None) -> None:
        cp = self.child_scratch.get(child_id)
        if cp is not None:
            cp.keymat_done = True
        c = self.table.child_sas.get(child_id)
        if c is not None and source:
            c.keys_source = source


__all__ = ["Tracker"]
