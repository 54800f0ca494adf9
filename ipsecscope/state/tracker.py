"""The correlation engine: IKE/ESP events in, :class:`~ipsecscope.model.sa.SaTable` out.

No file, socket or UI access here, so the CLI, the TUI and live mode share it. The session calls,
in capture order::

    tracker.on_ike(msg)          # parsed (and, when keys allow, decrypted) IKE message
    tracker.on_esp(pkt, result)  # ESP packet with the decryptor's EspResult (or None)
    tracker.on_ah(pkt) / tracker.on_keepalive(pkt) / tracker.on_malformed(m)

and reads ``tracker.table``; ``tracker.finish()`` after the last frame of a file draws the
end-of-input conclusions (an IKE SA whose last request was never answered becomes FAILED).

``tracker.events`` collects dicts for live mode (consumers pop them), each with ``event`` and
``ts``: ``ike_sa_created / ike_sa_established / ike_sa_rekeyed / ike_sa_deleted / ike_sa_failed``
(``ike_sa`` key, peers, reason, ``into``), ``child_sa_created / child_sa_rekeyed /
child_sa_deleted / child_sa_failed`` (``child_sa`` id, ``ike_sa``, SPIs, ``by``),
``esp_flow_started`` (src, dst, spi, child_sa) and ``finding`` (code, severity, title, sa, frames;
emitted by ``note_findings(findings)`` once per finding). ``tracker.listeners`` are called with
each event as it happens (plugins' ``on_event``).

``pending_keymat()`` lists CHILD SAs whose ESP keys can be derived from their IKE SA's SK_d (see
:class:`~ipsecscope.model.sa.KeymatRequest`); call ``keymat_done(child_id, source)`` once derived.

Partial data is the normal case: captures start mid-tunnel, keys are missing, packets are lost.
Every handler works with what is visible and never raises on odd input.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from ..crypto.prf import nat_detection_hash
from ..model import iana
from ..model.iana import NotifyType
from ..model.ike import (
    AuthPayload,
    DeletePayload,
    IdPayload,
    IkeMessage,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    SkPayload,
    TsPayload,
    VendorPayload,
)
from ..model.packets import AhPacket, EspPacket, Malformed, NatKeepalive
from ..model.sa import (
    ChildSa,
    EspFlow,
    IkeExchange,
    IkeSa,
    KeymatRequest,
    Observation,
    SaState,
    SaTable,
)
from . import names as N
from .child_sa import any_contains, flow_direction, inner_5tuple
from .esp_flow import _MASK as _SEQ_MASK
from .esp_flow import EVIDENCE, SeqTracker, account
from .esp_flow import TRACK as _SEQ_TRACK
from .proposals import proposal_algorithms, proposal_string

ZERO_SPI = b"\x00" * 8
INFER_PAIR_WINDOW = 10.0  # s: two opposite ESP flows starting this close belong to one CHILD SA
RETRY_WINDOW = 30.0  # s: a new IKE_SA_INIT this soon after INVALID_KE/COOKIE is the retry
MAX_OBSERVATIONS = 200

Listener = Callable[[dict], None]


@dataclass(slots=True)
class _IkePriv:
    """Engine state per IKE SA that views do not need."""

    ni: bytes | None = None
    nr: bytes | None = None
    nat_src: list[bytes] = field(default_factory=list)  # NAT_DETECTION_SOURCE_IP hashes (request)
    nat_dst: list[bytes] = field(default_factory=list)
    nat_checked: bool = False
    rekey_new_spi_i: dict[int, bytes] = field(default_factory=dict)  # msg key -> new IKE SPIi proposed
    last_raw: dict[tuple[int, bool, bool, int], bytes] = field(default_factory=dict)
    responder_msgs: int = 0  # IKEv1 phase 1: distinct messages per side
    initiator_msgs: int = 0


@dataclass(slots=True)
class _ChildPriv:
    ike_spi_i: bytes
    ike_spi_r: bytes
    ni: bytes | None = None
    nr: bytes | None = None
    algs: dict = field(default_factory=dict)
    protocol: int = 3
    keymat_done: bool = False


class Tracker:
    """Builds the SA table from IKE, ESP and AH events. See the module docstring for the API."""

    def __init__(self) -> None:
        self.table = SaTable()
        self.events: list[dict] = []
        self.listeners: list[Listener] = []  # called with every event dict (plugins' on_event)
        self._half_open: dict[tuple[int, bytes], IkeSa] = {}  # (version, spi_i) while spi_r unknown
        self._by_spi_i: dict[tuple[int, bytes], list[IkeSa]] = {}
        self._xchg: dict[tuple[int, int, bool], IkeExchange] = {}  # (id(sa), msg_id, from initiator)
        self._ipriv: dict[int, _IkePriv] = {}
        self._cpriv: dict[int, _ChildPriv] = {}
        self._spi_children: dict[int, list[int]] = {}
        self._seq: dict[tuple[str, str, int], SeqTracker] = {}
        self._next_child = 1
        self._keepalives: dict[tuple[str, str], Observation] = {}
        self._malformed_seen = 0
        self._announced: set[tuple] = set()

    # ------------------------------------------------------------------ small helpers

    def _emit(self, event: str, ts: float | None, **kw: object) -> None:
        ev = {"event": event, "ts": ts, **kw}
        self.events.append(ev)
        for fn in self.listeners:
            try:
                fn(ev)
            except Exception:  # a plugin's bug must not stop the engine
                pass

    def _observe(self, kind: str, ts: float | None, frames: tuple[int, ...], src: str = "", dst: str = "",
                 **detail: object) -> None:
        if len(self.table.observations) < MAX_OBSERVATIONS:
            self.table.observations.append(Observation(kind, ts, frames, src, dst, dict(detail)))

    def _touch(self, ts: float) -> None:
        t = self.table
        if t.first_ts is None or ts < t.first_ts:
            t.first_ts = ts
        if t.last_ts is None or ts > t.last_ts:
            t.last_ts = ts

    def _priv(self, sa: IkeSa) -> _IkePriv:
        p = self._ipriv.get(id(sa))
        if p is None:
            p = self._ipriv[id(sa)] = _IkePriv()
        return p

    def _new_child(self, ike: IkeSa | None, **kw) -> ChildSa:
        cid = self._next_child
        self._next_child += 1
        child = ChildSa(id=cid, ike_sa=ike.key if ike else None, **kw)
        self.table.child_sas[cid] = child
        if ike is not None:
            ike.children.append(cid)
        return child

    def ike_sa_of(self, child: ChildSa) -> IkeSa | None:
        return self.table.ike_sas.get(child.ike_sa) if child.ike_sa else None

    # ------------------------------------------------------------------ IKE

    def on_ike(self, msg: IkeMessage) -> None:
        self._touch(msg.ts)
        try:
            if msg.header.major == 1:
                from .ikev1 import on_ikev1

                on_ikev1(self, msg)
            elif msg.header.major == 2:
                self._on_ikev2(msg)
            else:
                self._observe("ike_unknown_version", msg.ts, (msg.frame,), msg.src, msg.dst,
                              version=msg.header.major)
        except Exception as exc:  # noqa: BLE001 - odd input must never stop a capture being read
            self._observe("tracker_error", msg.ts, (msg.frame,), msg.src, msg.dst,
                          reason=f"{type(exc).__name__}: {exc}")

    def lookup_ike(self, version: int, spi_i: bytes, spi_r: bytes) -> IkeSa | None:
        sa = self.table.ike_sas.get(f"{spi_i.hex()}_{spi_r.hex()}")
        if sa is not None:
            return sa
        return self._half_open.get((version, spi_i))

    def _rekey_ike_key(self, sa: IkeSa, spi_r: bytes) -> None:
        """The responder's SPI is now known: re-file the SA under (spi_i, spi_r)."""
        self.table.ike_sas.pop(sa.key, None)
        old = sa.key
        sa.ike_spi_r = spi_r
        self.table.ike_sas[sa.key] = sa
        self._half_open.pop((sa.version, sa.ike_spi_i), None)
        for cid in sa.children:
            c = self.table.child_sas.get(cid)
            if c is not None and c.ike_sa == old:
                c.ike_sa = sa.key
        for ev in self.events:  # keep live-mode references consistent
            if ev.get("ike_sa") == old:
                ev["ike_sa"] = sa.key

    def create_ike_sa(self, version: int, spi_i: bytes, spi_r: bytes, initiator: str, responder: str,
                      iport: int, rport: int, ts: float) -> IkeSa:
        sa = IkeSa(ike_spi_i=spi_i, ike_spi_r=spi_r, version=version, initiator=initiator,
                   responder=responder, initiator_port=iport, responder_port=rport, created_ts=ts)
        # Same SPIs twice (a capture with two runs): keep the older one reachable under a suffix-free
        # key by letting the newer one win; the older stays in _by_spi_i for retry linking.
        self.table.ike_sas[sa.key] = sa
        if spi_r == ZERO_SPI:
            self._half_open[(version, spi_i)] = sa
        self._by_spi_i.setdefault((version, spi_i), []).append(sa)
        return sa

    def _ike_sa_for_v2(self, msg: IkeMessage) -> IkeSa:
        h = msg.header
        sa = self.table.ike_sas.get(f"{h.spi_i.hex()}_{h.spi_r.hex()}")
        is_init_req = h.exchange == iana.ExchangeType.IKE_SA_INIT and not h.is_response
        if sa is not None:
            return sa
        half = self._half_open.get((2, h.spi_i))
        if half is not None:
            if h.spi_r != ZERO_SPI:  # the IKE_SA_INIT response binds SPIr
                self._rekey_ike_key(half, h.spi_r)
            return half
        # New: the original initiator sets the I flag (RFC 7296 §3.1).
        from_init = h.is_initiator
        initiator, responder = (msg.src, msg.dst) if from_init else (msg.dst, msg.src)
        iport, rport = (msg.sport, msg.dport) if from_init else (msg.dport, msg.sport)
        sa = self.create_ike_sa(2, h.spi_i, h.spi_r, initiator, responder, iport, rport, msg.ts)
        if not is_init_req:
            # Capture started after IKE_SA_INIT: the SA exists, we just did not see it begin.
            sa.state = SaState.ESTABLISHED
            sa.state_inferred = True
            self._infer_ike_rekey(sa, msg.ts)
        else:
            self._link_retry(sa, msg.ts)
        self._emit("ike_sa_created", msg.ts, ike_sa=sa.key, initiator=initiator, responder=responder,
                   version=2)
        return sa

    def _infer_ike_rekey(self, sa: IkeSa, ts: float) -> None:
        """Without keys an IKE SA rekey (RFC 7296 §1.3.2) is an encrypted CREATE_CHILD_SA on the
        old SA followed by traffic under new SPIs between the same peers: link the two."""
        for old in reversed(list(self.table.ike_sas.values())):
            if old is sa or old.rekeyed_into or old.decrypted or {old.initiator, old.responder} != {
                    sa.initiator, sa.responder}:
                continue
            last = next((x for x in reversed(old.exchanges) if x.exchange == iana.ExchangeType.CREATE_CHILD_SA
                         and x.response_ts is not None), None)
            if last is None or not 0 <= ts - last.response_ts <= 10.0:
                continue
            sa.rekeyed_from = old.key
            old.rekeyed_into = sa.key
            if old.state == SaState.ESTABLISHED:
                old.state = SaState.REKEYED
            last.rekey_ike = True
            last.summary = f"CREATE_CHILD_SA (encrypted; IKE SA rekey inferred -> {sa.key})"
            self._emit("ike_sa_rekeyed", ts, ike_sa=old.key, into=sa.key, inferred=True)
            return

    def _link_retry(self, sa: IkeSa, ts: float) -> None:
        """An IKE_SA_INIT with fresh SPIs right after one refused with INVALID_KE/COOKIE is its retry."""
        for other in reversed(list(self.table.ike_sas.values())):
            if other is sa or other.retried_by or other.version != sa.version:
                continue
            if (other.initiator, other.responder) != (sa.initiator, sa.responder):
                continue
            if other.failure not in ("INVALID_KE_PAYLOAD", "COOKIE") and not other.cookie_requested:
                continue
            if other.failed_ts is not None and 0 <= ts - other.failed_ts <= RETRY_WINDOW:
                sa.retry_of = other.key
                other.retried_by = sa.key
                return

    def _exchange(self, sa: IkeSa, msg: IkeMessage, from_init: bool, is_response: bool) -> tuple[IkeExchange, bool]:
        """Find or create the exchange a message belongs to. Returns (exchange, is_retransmission).

        RFC 7296 §2.2: each side numbers its own requests, so (message ID, which side asked) pairs a
        request with its response. A byte-identical copy in the same direction is a retransmission
        (§2.1); SKF fragments (RFC 7383) of one message share the ID but differ in fragment number.
        """
        h = msg.header
        xkey = (id(sa), h.msg_id, from_init)
        x = self._xchg.get(xkey)
        frag = 0
        for p in msg.payloads:
            if isinstance(p, SkPayload) and p.type == iana.PayloadType.SKF:
                frag = p.fragment_number or 1
        priv = self._priv(sa)
        rkey = (h.msg_id, from_init, is_response, frag)
        prev_raw = priv.last_raw.get(rkey)
        if x is not None and prev_raw is not None:
            if prev_raw == msg.raw:
                if is_response:
                    x.response_retransmits += 1
                    x.response_frames.append(msg.frame)
                else:
                    x.retransmits += 1
                    x.request_frames.append(msg.frame)
                return x, True
            if not is_response and x.response_frames and frag <= 1:
                x = None  # same message ID, new content after an answer: a new attempt (INVALID_KE, COOKIE)
        if x is None:
            requester = msg.src if not is_response else msg.dst
            x = IkeExchange(exchange=h.exchange, msg_id=h.msg_id, requester=requester)
            x.encrypted = msg.encrypted
            self._xchg[xkey] = x
            sa.exchanges.append(x)
            if not is_response:
                x.requester_port = msg.sport
                x.responder_port = msg.dport
        priv.last_raw[rkey] = msg.raw
        # Sizes add up over SKF fragments: the message is what the peer sent, not one datagram.
        if is_response:
            if x.response_ts is None:
                x.response_ts = msg.ts
            if frag or len(x.response_frames) == 0:
                x.response_size += len(msg.raw)
            x.response_frames.append(msg.frame)
        else:
            if x.request_ts is None:
                x.request_ts = msg.ts
            if frag or len(x.request_frames) == 0:
                x.request_size += len(msg.raw)
            x.request_frames.append(msg.frame)
            if frag:
                x.fragments = max(x.fragments, frag)
        if msg.ip_fragmented:
            x.ip_fragmented = True
        if msg.decrypted and msg.icv_ok is not False:
            x.decrypted = True
        for n in msg.find(NotifyPayload):
            if n.notify_type not in x.notifies:
                x.notifies.append(n.notify_type)
        return x, False

    def _on_ikev2(self, msg: IkeMessage) -> None:
        h = msg.header
        sa = self._ike_sa_for_v2(msg)
        sa.frames.append(msg.frame)
        is_response = h.is_response
        if sa.failure == "no response" and is_response:  # finish() gave up too early (live mode)
            sa.state, sa.failure, sa.failed_ts = SaState.INITIATING, None, None
        # Which side asked: a request's I flag says whether it came from the original initiator;
        # a response carries the responder's I flag, so the requester is the other side.
        from_init = h.is_initiator if not is_response else not h.is_initiator
        if 4500 in (msg.sport, msg.dport) and h.exchange != iana.ExchangeType.IKE_SA_INIT:
            sa.nat_t = True
        if msg.src == sa.initiator and not is_response and msg.sport:
            sa.initiator_port = msg.sport
            sa.responder_port = msg.dport
        x, retrans = self._exchange(sa, msg, from_init, is_response)
        if retrans:
            return
        if msg.icv_ok is False:  # keys were found for this SA, but they do not authenticate it
            sa.icv_failed += 1
        self._note_key(sa, msg)
        skf = next((p for p in msg.payloads if isinstance(p, SkPayload) and p.type == iana.PayloadType.SKF), None)
        if skf is not None and skf.total_fragments > 1:
            # RFC 7383: act on the message once, when it is complete. With keys the decryptor
            # fills `inner` on the frame that completes it; without, take the last fragment.
            complete = bool(msg.inner) if msg.decrypted else skf.fragment_number == skf.total_fragments
            if not complete:
                return
        if msg.decrypted and msg.icv_ok is not False:
            sa.decrypted = True
        visible = not msg.encrypted or (msg.decrypted and msg.icv_ok is not False)
        if msg.malformed and not msg.payloads:
            return
        for v in msg.find(VendorPayload):
            label = v.name or v.data[:8].hex()
            if label not in sa.vendor_ids:
                sa.vendor_ids.append(label)
        ex = h.exchange
        if ex == iana.ExchangeType.IKE_SA_INIT:
            self._ike_sa_init(sa, msg, x, is_response)
        elif ex == iana.ExchangeType.IKE_AUTH:
            self._ike_auth(sa, msg, x, is_response, visible)
        elif ex == iana.ExchangeType.CREATE_CHILD_SA:
            self._create_child_sa(sa, msg, x, is_response, visible)
        elif ex == iana.ExchangeType.INFORMATIONAL:
            self._informational(sa, msg, x, is_response, visible)
        if is_response and visible:
            self._note_error(x, msg)

    @staticmethod
    def _note_key(sa: IkeSa, msg: IkeMessage) -> None:
        """Record what the loaded key did to an encrypted message (IKEv1 and IKEv2, once per
        distinct message): decrypted, failed its ICV (counted by the caller in ``icv_failed``), or
        applied without yielding a payload chain (``undecryptable``: IKEv1 has no ICV, RFC 2409
        §5, so a wrong key shows only as garbage). A message no key was found for is neither."""
        if not msg.encrypted:
            return
        if msg.decrypted and msg.icv_ok is not False:
            if msg.src not in sa.decrypted_from:
                sa.decrypted_from.append(msg.src)
            return
        if msg.icv_ok is not False:
            if not msg.key_tried:
                return
            sa.undecryptable += 1
        if len(sa.key_failed_frames) < EVIDENCE:
            sa.key_failed_frames.append(msg.frame)
        if sa.key_failed_note is None:
            sa.key_failed_note = msg.crypto_note
        if msg.src not in sa.key_failed_from:
            sa.key_failed_from.append(msg.src)

    @staticmethod
    def _note_error(x: IkeExchange, msg: IkeMessage) -> NotifyPayload | None:
        for n in msg.find(NotifyPayload):
            if iana.notify_is_error(n.notify_type):
                if x.error is None:
                    x.error = n.notify_type
                    x.error_name = N.notify_name(n.notify_type, msg.version)
                if n.notify_type == NotifyType.INVALID_KE_PAYLOAD:
                    # RFC 7296 §3.10.1: the notification data is the accepted group (2 octets).
                    group = n.decoded.get("group") if n.decoded else None
                    if group is None and len(n.data) >= 2:
                        group = struct.unpack_from("!H", n.data)[0]
                    if isinstance(group, int):
                        x.ke_requested = group
                return n
        return None

    def _fail_ike(self, sa: IkeSa, reason: str, ts: float, frame: int | None) -> None:
        if sa.state == SaState.FAILED and sa.failure == reason:
            return
        sa.state = SaState.FAILED
        sa.failure = reason
        sa.failure_frame = frame
        sa.failed_ts = ts
        self._emit("ike_sa_failed", ts, ike_sa=sa.key, reason=reason, frame=frame)

    def _establish_ike(self, sa: IkeSa, ts: float, inferred: bool) -> None:
        if sa.state in (SaState.ESTABLISHED, SaState.REKEYED, SaState.DELETED):
            return
        sa.state = SaState.ESTABLISHED
        sa.state_inferred = inferred
        sa.established_ts = ts
        sa.failure = None
        self._emit("ike_sa_established", ts, ike_sa=sa.key, initiator=sa.initiator, responder=sa.responder,
                   proposal=sa.proposal, inferred=inferred)

    # -- IKE_SA_INIT (RFC 7296 §1.2)

    def _ike_sa_init(self, sa: IkeSa, msg: IkeMessage, x: IkeExchange, is_response: bool) -> None:
        priv = self._priv(sa)
        sas = msg.find(SaPayload)
        kes = msg.find(KePayload)
        nonces = msg.find(NoncePayload)
        notifies = msg.find(NotifyPayload)
        if not is_response:
            if sa.state == SaState.FAILED:  # the retry after INVALID_KE / COOKIE on the same SPIi
                sa.state = SaState.INITIATING
            if sas:
                for p in sas[0].proposals:
                    s = proposal_string(p, 2)
                    if s not in sa.offered:
                        sa.offered.append(s)
            if kes:
                sa.ke_groups.append(kes[0].group)
            if nonces:
                priv.ni = nonces[0].data
            priv.nat_src = [n.data for n in notifies if n.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP]
            priv.nat_dst = [n.data for n in notifies if n.notify_type == NotifyType.NAT_DETECTION_DESTINATION_IP]
            priv.nat_checked = False
            if any(n.notify_type == NotifyType.IKEV2_FRAGMENTATION_SUPPORTED for n in notifies):
                sa.ike_fragmentation = (True, sa.ike_fragmentation[1])
            self._nat_check(sa, msg, request=True)
            x.summary = "IKE_SA_INIT" + (f" KE {N.dh_name(kes[0].group)}" if kes else "")
            return
        err = self._note_error(x, msg)
        if err is not None:
            name = N.notify_name(err.notify_type)
            if err.notify_type == NotifyType.INVALID_KE_PAYLOAD:
                group = err.decoded.get("group") if err.decoded else None
                if group is None and len(err.data) >= 2:
                    group = struct.unpack_from("!H", err.data)[0]
                if isinstance(group, int):
                    sa.invalid_ke_requested.append(group)
                x.summary = f"IKE_SA_INIT refused: INVALID_KE_PAYLOAD, responder wants {N.dh_name(group)}"
            else:
                x.summary = f"IKE_SA_INIT refused: {name}"
            self._fail_ike(sa, name, msg.ts, msg.frame)
            return
        if any(n.notify_type == NotifyType.COOKIE for n in notifies) and not sas:
            sa.cookie_requested = True  # RFC 7296 §2.6: retry with the cookie, not a failure
            sa.failed_ts = msg.ts
            x.summary = "IKE_SA_INIT: responder asks for a COOKIE (DoS protection)"
            return
        if sas and sas[0].proposals:
            prop = sas[0].proposals[0]
            sa.proposal = proposal_string(prop, 2)
            dh = proposal_algorithms(prop)["dh"]
            if dh is not None:
                sa.dh_group = dh
        if kes and sa.dh_group is None:
            sa.dh_group = kes[0].group
        if nonces:
            priv.nr = nonces[0].data
        if any(n.notify_type == NotifyType.IKEV2_FRAGMENTATION_SUPPORTED for n in notifies):
            sa.ike_fragmentation = (sa.ike_fragmentation[0], True)
        self._nat_check(sa, msg, request=False)
        x.summary = f"IKE_SA_INIT {sa.proposal or ''}".rstrip()

    def _nat_check(self, sa: IkeSa, msg: IkeMessage, request: bool) -> None:
        """RFC 7296 §2.23: NAT_DETECTION_SOURCE_IP = SHA1(SPIi | SPIr | IP | port) of the sender as
        it sent the packet; the DESTINATION one covers where it sent it. A hash that does not match
        the addresses in the capture means a NAT changed them between sender and receiver.

        Wherever the capture was taken, one of the two sides sees translated addresses: at the
        responder, the request's source hash fails; at the initiator, the response's destination
        hash fails. Either way it is the initiator that is behind the NAT.
        """
        h = msg.header
        src_h = [n.data for n in msg.find(NotifyPayload) if n.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP]
        dst_h = [n.data for n in msg.find(NotifyPayload) if n.notify_type == NotifyType.NAT_DETECTION_DESTINATION_IP]
        if not src_h and not dst_h:
            return
        src_ok = nat_detection_hash("sha1", h.spi_i, h.spi_r, msg.src, msg.sport) in src_h if src_h else True
        dst_ok = nat_detection_hash("sha1", h.spi_i, h.spi_r, msg.dst, msg.dport) in dst_h if dst_h else True
        sender_is_init = request
        if sa.nat_initiator is None:
            sa.nat_initiator = False
        if sa.nat_responder is None:
            sa.nat_responder = False
        if not src_ok:
            if sender_is_init:
                sa.nat_initiator = True
            else:
                sa.nat_responder = True
        if not dst_ok:
            if sender_is_init:
                sa.nat_responder = True
            else:
                sa.nat_initiator = True
        sa.nat_detected = bool(sa.nat_initiator or sa.nat_responder)

    # -- IKE_AUTH (RFC 7296 §1.2, §2.15)

    def _ike_auth(self, sa: IkeSa, msg: IkeMessage, x: IkeExchange, is_response: bool, visible: bool) -> None:
        if not visible:
            if is_response and not x.summary:
                x.summary = "IKE_AUTH (encrypted)"
            if is_response and sa.state == SaState.INITIATING:
                # Without keys we cannot read the outcome. An error-only response (N(AUTHENTICATION_
                # FAILED) in an SK payload) is far smaller than a real IKE_AUTH answer (IDr, AUTH, SA,
                # TSi, TSr): under ~100 bytes of IKE it carries no AUTH payload.
                if len(msg.raw) <= 96:
                    self._fail_ike(sa, "IKE_AUTH refused (encrypted; probably AUTHENTICATION_FAILED)",
                                   msg.ts, msg.frame)
                    sa.state_inferred = True
                else:
                    self._establish_ike(sa, msg.ts, inferred=True)
            return
        ids = msg.find(IdPayload)
        auths = msg.find(AuthPayload)
        if not is_response:
            for i in ids:
                if i.type == iana.PayloadType.IDi:
                    sa.id_i = i.value
                elif i.type == iana.PayloadType.IDr and sa.id_r is None:
                    sa.id_r = i.value
            if auths:
                sa.auth_method = _auth_name(auths[0].method)
            child = self._child_request(sa, msg, x, "IKE_AUTH", priv_nonces=True)
            x.summary = "IKE_AUTH" + (f" CHILD_SA #{child.id}" if child else "")
            return
        err = self._note_error(x, msg)
        for i in ids:
            if i.type == iana.PayloadType.IDr:
                sa.id_r = i.value
        if err is not None and err.notify_type == NotifyType.AUTHENTICATION_FAILED:
            self._fail_ike(sa, "AUTHENTICATION_FAILED", msg.ts, msg.frame)
            x.summary = "IKE_AUTH refused: AUTHENTICATION_FAILED"
            self._child_response(sa, msg, x, err)
            return
        if err is not None and not auths and err.notify_type not in _CHILD_ERRORS:
            name = N.notify_name(err.notify_type)
            self._fail_ike(sa, name, msg.ts, msg.frame)
            x.summary = f"IKE_AUTH refused: {name}"
            return
        if auths:
            self._establish_ike(sa, msg.ts, inferred=False)
        child = self._child_response(sa, msg, x, err)
        x.summary = "IKE_AUTH" + (f" CHILD_SA #{child.id} {child.state.value}" if child else "")
        if err is not None:
            x.summary += f" ({N.notify_name(err.notify_type)})"

    # -- CHILD SAs (IKE_AUTH and CREATE_CHILD_SA)

    def _child_request(self, sa: IkeSa, msg: IkeMessage, x: IkeExchange, created_by: str,
                       priv_nonces: bool = False, rekey_of: ChildSa | None = None) -> ChildSa | None:
        sas = msg.find(SaPayload)
        props = [p for p in sas[0].proposals if p.protocol in (2, 3)] if sas else []
        if not props:
            return None
        tsi = msg.find(TsPayload)
        ts_i = next((t.selectors for t in tsi if t.type == iana.PayloadType.TSi), ())
        ts_r = next((t.selectors for t in tsi if t.type == iana.PayloadType.TSr), ())
        transport = any(n.notify_type == NotifyType.USE_TRANSPORT_MODE for n in msg.find(NotifyPayload))
        kes = msg.find(KePayload)
        requester, responder = msg.src, msg.dst
        child = self._new_child(
            sa, protocol="AH" if props[0].protocol == 2 else "ESP", mode="transport" if transport else "tunnel",
            spi_i=_spi_int(props[0].spi), initiator=requester, responder=responder,
            offered=list(dict.fromkeys(proposal_string(p, 2) for p in props)),
            ts_i_offered=tuple(ts_i), ts_r_offered=tuple(ts_r), created_ts=msg.ts, created_frame=msg.frame,
            created_by=created_by,
        )
        child.frames.append(msg.frame)
        if kes:
            child.pfs_group = kes[0].group
        for p in props:
            g = proposal_algorithms(p)["dh"]
            if g and g not in child.offered_pfs_groups:
                child.offered_pfs_groups.append(g)
        priv = self._priv(sa)
        nonces = msg.find(NoncePayload)
        cp = _ChildPriv(sa.ike_spi_i, sa.ike_spi_r, protocol=props[0].protocol)
        cp.ni = priv.ni if priv_nonces else (nonces[0].data if nonces else None)
        self._cpriv[child.id] = cp
        if rekey_of is not None:
            child.rekeyed_from = rekey_of.id
            x.rekey_child = rekey_of.id
        x.new_child = child.id
        self._register_spi(child, child.spi_i)
        return child

    def _child_response(self, sa: IkeSa, msg: IkeMessage, x: IkeExchange,
                        err: NotifyPayload | None) -> ChildSa | None:
        child = self.table.child_sas.get(x.new_child) if x.new_child else None
        if child is None:
            return None
        child.frames.append(msg.frame)
        sas = msg.find(SaPayload)
        props = [p for p in sas[0].proposals if p.protocol in (2, 3)] if sas else []
        if err is not None or not props:
            child.state = SaState.FAILED
            child.failure = N.notify_name(err.notify_type) if err is not None else "no SA in response"
            child.failure_frame = msg.frame
            self._emit("child_sa_failed", msg.ts, child_sa=child.id, ike_sa=sa.key, reason=child.failure)
            return child
        prop = props[0]
        child.spi_r = _spi_int(prop.spi)
        child.proposal = proposal_string(prop, 2)
        algs = proposal_algorithms(prop)
        child.esn = algs["esn"] == 1 if algs["esn"] is not None else None
        if algs["dh"]:
            child.pfs_group = algs["dh"]
        tsi = msg.find(TsPayload)
        child.ts_i = next((t.selectors for t in tsi if t.type == iana.PayloadType.TSi), child.ts_i_offered)
        child.ts_r = next((t.selectors for t in tsi if t.type == iana.PayloadType.TSr), child.ts_r_offered)
        if any(n.notify_type == NotifyType.USE_TRANSPORT_MODE for n in msg.find(NotifyPayload)):
            child.mode = "transport"
        elif child.mode == "transport":
            child.mode = "tunnel"  # the responder did not agree to transport mode (RFC 7296 §1.3.1)
        child.state = SaState.ESTABLISHED
        cp = self._cpriv.get(child.id)
        if cp is not None:
            cp.algs = algs
            if cp.nr is None:
                nonces = msg.find(NoncePayload)
                if child.created_by == "IKE_AUTH":
                    cp.nr = self._priv(sa).nr
                elif nonces:
                    cp.nr = nonces[0].data
        self._register_spi(child, child.spi_r)
        self._emit("child_sa_created", msg.ts, child_sa=child.id, ike_sa=sa.key, spi_i=child.spi_i,
                   spi_r=child.spi_r, proposal=child.proposal, created_by=child.created_by)
        old = self.table.child_sas.get(child.rekeyed_from) if child.rekeyed_from else None
        if old is not None:
            old.rekeyed_into = child.id
            old.rekeyed_ts = msg.ts
            if old.state == SaState.ESTABLISHED or old.state == SaState.INFERRED:
                old.state = SaState.REKEYED
            if old.created_ts is not None:
                old.lifetime_s = msg.ts - old.created_ts
            self._emit("child_sa_rekeyed", msg.ts, child_sa=old.id, into=child.id, ike_sa=sa.key)
        return child

    # -- CREATE_CHILD_SA (RFC 7296 §1.3)

    def _create_child_sa(self, sa: IkeSa, msg: IkeMessage, x: IkeExchange, is_response: bool,
                         visible: bool) -> None:
        if not visible:
            x.summary = x.summary or "CREATE_CHILD_SA (encrypted)"
            return
        priv = self._priv(sa)
        sas = msg.find(SaPayload)
        ike_props = [p for p in sas[0].proposals if p.protocol == 1] if sas else []
        xkey = id(x)
        if not is_response:
            if ike_props:  # rekey of the IKE SA itself (RFC 7296 §1.3.2)
                x.rekey_ike = True
                priv.rekey_new_spi_i[xkey] = ike_props[0].spi
                x.summary = "CREATE_CHILD_SA rekey IKE SA"
                for other in sa.exchanges:  # crossing IKE rekeys (RFC 7296 §2.8.2)
                    if other is not x and other.rekey_ike and other.requester != x.requester and (
                            other.response_ts is None or other.response_ts >= msg.ts):
                        self._observe("ike_rekey_collision", msg.ts,
                                      tuple(other.request_frames[:1] + x.request_frames[:1]),
                                      sa.initiator, sa.responder, ike_sa=sa.key)
                return
            rekey = next((n for n in msg.find(NotifyPayload) if n.notify_type == NotifyType.REKEY_SA), None)
            old = None
            if rekey is not None:
                old = self._child_by_spi(_spi_int(rekey.spi), sender=msg.src, inbound_of_sender=True)
            child = self._child_request(sa, msg, x, "CREATE_CHILD_SA", rekey_of=old)
            if child is None:
                return
            if old is not None:
                x.summary = f"CREATE_CHILD_SA rekey CHILD_SA #{old.id} -> #{child.id}"
                # RFC 7296 §2.8.1: both peers may start rekeying the same CHILD SA at once.
                for other in sa.exchanges:
                    if other is x or other.rekey_child != old.id or other.requester == x.requester:
                        continue
                    if other.response_ts is None or other.response_ts >= msg.ts:
                        old.rekey_collision = True
            else:
                x.summary = f"CREATE_CHILD_SA new CHILD_SA #{child.id}"
            return
        err = self._note_error(x, msg)
        if x.rekey_ike:
            if err is not None or not ike_props:
                x.summary += f" refused: {N.notify_name(err.notify_type) if err else 'no SA'}"
                return
            new_spi_i = priv.rekey_new_spi_i.get(xkey)
            if new_spi_i is None:
                return
            requester = x.requester
            responder = sa.responder if requester == sa.initiator else sa.initiator
            if msg.src != responder:
                responder = msg.src
            new = self.create_ike_sa(2, new_spi_i, ike_props[0].spi, requester, responder,
                                     x.requester_port, x.responder_port, msg.ts)
            new.proposal = proposal_string(ike_props[0], 2)
            new.dh_group = proposal_algorithms(ike_props[0])["dh"]
            new.rekeyed_from = sa.key
            new.decrypted = sa.decrypted
            new.nat_t = sa.nat_t
            new.nat_initiator, new.nat_responder, new.nat_detected = (
                sa.nat_initiator, sa.nat_responder, sa.nat_detected)
            new.id_i, new.id_r, new.auth_method = sa.id_i, sa.id_r, sa.auth_method
            new.state = SaState.ESTABLISHED
            new.established_ts = msg.ts
            sa.rekeyed_into = new.key
            if sa.state == SaState.ESTABLISHED:
                sa.state = SaState.REKEYED
            # RFC 7296 §2.18: the CHILD SAs move to the new IKE SA.
            for cid in sa.children:
                c = self.table.child_sas.get(cid)
                if c is not None and c.state not in (SaState.DELETED, SaState.FAILED):
                    c.ike_sa = new.key
                    new.children.append(cid)
            x.summary = f"CREATE_CHILD_SA rekey IKE SA -> {new.key}"
            self._emit("ike_sa_rekeyed", msg.ts, ike_sa=sa.key, into=new.key)
            self._emit("ike_sa_established", msg.ts, ike_sa=new.key, initiator=new.initiator,
                       responder=new.responder, proposal=new.proposal, inferred=False)
            return
        child = self._child_response(sa, msg, x, err)
        if child is not None and err is not None:
            x.summary += f" refused: {N.notify_name(err.notify_type)}"

    # -- INFORMATIONAL (RFC 7296 §1.4)

    def _informational(self, sa: IkeSa, msg: IkeMessage, x: IkeExchange, is_response: bool,
                       visible: bool) -> None:
        if not visible:
            x.summary = x.summary or "INFORMATIONAL (encrypted)"
            return
        parts = []
        for d in msg.find(DeletePayload):
            if d.protocol == iana.ProtocolId.IKE:
                x.deletes.append("IKE")
                parts.append("delete IKE SA")
                self._delete_ike(sa, msg.src, msg.ts, msg.frame)
            else:
                for spi_b in d.spis:
                    spi = _spi_int(spi_b)
                    proto = "AH" if d.protocol == 2 else "ESP"
                    x.deletes.append(f"{proto} 0x{spi:08x}")
                    parts.append(f"delete {proto} 0x{spi:08x}")
                    child = self._child_by_spi(spi, sender=msg.src, inbound_of_sender=True, ike=sa)
                    if child is not None:
                        self._delete_child(child, msg.src, msg.ts, msg.frame)
                    else:
                        self._observe("delete_unknown_spi", msg.ts, (msg.frame,), msg.src, msg.dst,
                                      spi=spi, ike_sa=sa.key)
        for n in msg.find(NotifyPayload):
            t = n.notify_type
            if t == NotifyType.INVALID_SPI:
                spi = _spi_int(n.data[:4]) if len(n.data) >= 4 else _spi_int(n.spi)
                self._observe("invalid_spi_notify", msg.ts, (msg.frame,), msg.src, msg.dst, spi=spi,
                              ike_sa=sa.key)
                parts.append(f"INVALID_SPI 0x{spi:08x}")
            elif t == NotifyType.AUTHENTICATION_FAILED:
                # The initiator rejects the responder's AUTH (RFC 7296 §2.21.2) in an INFORMATIONAL.
                self._fail_ike(sa, "AUTHENTICATION_FAILED", msg.ts, msg.frame)
                parts.append("AUTHENTICATION_FAILED")
            elif iana.notify_is_error(t):
                parts.append(N.notify_name(t))
            elif t == NotifyType.UPDATE_SA_ADDRESSES:
                parts.append("MOBIKE address update")
        if not parts and not is_response and not msg.inner:
            parts.append("liveness check (empty)")  # RFC 7296 §2.4 dead peer detection
        if parts and not x.summary:
            x.summary = "INFORMATIONAL " + ", ".join(parts)

    def _delete_ike(self, sa: IkeSa, by: str, ts: float, frame: int) -> None:
        if sa.state == SaState.DELETED:
            return
        sa.state = SaState.DELETED
        sa.deleted_ts = ts
        sa.deleted_by = by
        self._emit("ike_sa_deleted", ts, ike_sa=sa.key, by=by, frame=frame)
        # RFC 7296 §1.4.1: deleting an IKE SA closes every CHILD SA it manages.
        for cid in sa.children:
            c = self.table.child_sas.get(cid)
            if c is not None and c.ike_sa == sa.key and c.state not in (SaState.DELETED, SaState.FAILED):
                self._delete_child(c, by, ts, frame)

    def _delete_child(self, child: ChildSa, by: str, ts: float, frame: int) -> None:
        if child.state == SaState.DELETED:
            return
        child.state = SaState.DELETED
        child.deleted_ts = ts
        child.deleted_frame = frame
        child.deleted_by = by
        child.frames.append(frame)
        if child.lifetime_s is None and child.created_ts is not None:
            child.lifetime_s = ts - child.created_ts
        # Rekey collision (RFC 7296 §2.8.1): of two successors, the redundant one is deleted;
        # the rekey chain continues through the survivor.
        prev = self.table.child_sas.get(child.rekeyed_from) if child.rekeyed_from else None
        if prev is not None and prev.rekeyed_into == child.id:
            for other in self.table.child_sas.values():
                if other.rekeyed_from == prev.id and other.id != child.id and other.state == SaState.ESTABLISHED:
                    prev.rekeyed_into = other.id
                    break
        self._emit("child_sa_deleted", ts, child_sa=child.id, ike_sa=child.ike_sa, by=by, frame=frame)

    # ------------------------------------------------------------------ SPI index

    def _register_spi(self, child: ChildSa, spi: int | None) -> None:
        if spi is None:
            return
        lst = self._spi_children.setdefault(spi, [])
        if child.id not in lst:
            lst.append(child.id)
        # Flows seen before the IKE exchange (or grouped by inference) move to the negotiated SA.
        for flow in self.table.flows.values():
            if flow.spi != spi or flow.child_sa == child.id:
                continue
            cur = self.table.child_sas.get(flow.child_sa) if flow.child_sa else None
            if cur is None or cur.state == SaState.INFERRED:
                flow.child_sa = child.id
                if cur is not None and not cur.flows(self.table):
                    self._drop_inferred(cur)

    def _drop_inferred(self, child: ChildSa) -> None:
        self.table.child_sas.pop(child.id, None)
        ike = self.ike_sa_of(child)
        if ike is not None and child.id in ike.children:
            ike.children.remove(child.id)
        for spi in (child.spi_i, child.spi_r):
            if spi is not None and child.id in self._spi_children.get(spi, []):
                self._spi_children[spi].remove(child.id)

    def _child_by_spi(self, spi: int, sender: str | None = None, inbound_of_sender: bool = True,
                      ike: IkeSa | None = None) -> ChildSa | None:
        """The CHILD SA an SPI belongs to. Delete and REKEY_SA name the SPI the *sender* receives on
        (RFC 7296 §3.11, §1.3.3): spi_i when the sender is the CHILD SA's initiator, else spi_r."""
        best = None
        for cid in reversed(self._spi_children.get(spi, [])):
            c = self.table.child_sas.get(cid)
            if c is None:
                continue
            if ike is not None and c.ike_sa not in (ike.key, ike.rekeyed_into, ike.rekeyed_from) and best:
                continue
            if sender is not None:
                own = c.spi_i if sender == c.initiator else c.spi_r if sender == c.responder else None
                if own == spi:
                    return c
            if best is None:
                best = c
        return best

    # ------------------------------------------------------------------ ESP / AH

    def on_esp(self, pkt: EspPacket, res: object | None = None) -> EspFlow | None:
        """Account one ESP packet (``res``: its EspResult, or None). Returns its flow (None only
        when the tracker hit an internal error, reported as a ``tracker_error`` observation)."""
        try:
            return self._on_sa_packet(pkt, res, "ESP", len(pkt.data), pkt.udp_encap, pkt.sport, pkt.dport)
        except Exception as exc:  # noqa: BLE001
            self._observe("tracker_error", pkt.ts, (pkt.frame,), pkt.src, pkt.dst,
                          reason=f"{type(exc).__name__}: {exc}")
            return None

    def on_ah(self, pkt: AhPacket) -> None:
        try:
            self._on_sa_packet(pkt, None, "AH", len(pkt.data), False, 0, 0)
        except Exception as exc:  # noqa: BLE001
            self._observe("tracker_error", pkt.ts, (pkt.frame,), pkt.src, pkt.dst,
                          reason=f"{type(exc).__name__}: {exc}")

    def on_keepalive(self, pkt: NatKeepalive) -> None:
        self._touch(pkt.ts)
        key = (pkt.src, pkt.dst)
        ob = self._keepalives.get(key)
        if ob is None:
            if len(self.table.observations) >= MAX_OBSERVATIONS:
                return
            ob = self._keepalives[key] = Observation("nat_keepalive", pkt.ts, (pkt.frame,), pkt.src, pkt.dst,
                                                     {"count": 0, "sport": pkt.sport, "dport": pkt.dport})
            self.table.observations.append(ob)
        ob.detail["count"] = int(ob.detail["count"]) + 1  # type: ignore[call-overload]
        ob.detail["last_ts"] = pkt.ts

    def on_malformed(self, m: Malformed) -> None:
        self._touch(m.ts)
        self._malformed_seen += 1
        if self._malformed_seen <= 20:
            self._observe("malformed", m.ts, (m.frame,), layer=m.layer, reason=m.reason)

    def _on_sa_packet(self, pkt, res, proto: str, length: int, encap: bool, sport: int,
                      dport: int) -> EspFlow:
        ts = pkt.ts
        t = self.table
        if t.last_ts is None or ts > t.last_ts or t.first_ts is None or ts < t.first_ts:
            self._touch(ts)
        key = (pkt.src, pkt.dst, pkt.spi)
        flow = t.flows.get(key)
        if flow is None:
            flow = EspFlow(src=pkt.src, dst=pkt.dst, spi=pkt.spi, protocol=proto, first_ts=ts,
                           first_frame=pkt.frame, udp_encap=encap, sport=sport, dport=dport)
            self.table.flows[key] = flow
            self._seq[key] = SeqTracker()
            self._bind_flow(flow)
            self._emit("esp_flow_started", ts, src=pkt.src, dst=pkt.dst, spi=pkt.spi, protocol=proto,
                       child_sa=flow.child_sa, frame=pkt.frame)
        flow.packets += 1
        flow.bytes += length
        flow.last_ts = ts
        frame = flow.last_frame = pkt.frame
        status = getattr(res, "status", None) if res is not None else None
        seq_hi = res.seq_hi if status == "ok" else None  # type: ignore[union-attr]
        if status == "no_key":  # the bulk of a capture without keys
            flow.no_key += 1
        elif status == "ok":
            flow.decrypted += 1
        elif status == "icv_failed":
            flow.icv_failed += 1
            if len(flow.icv_failed_frames) < EVIDENCE:
                flow.icv_failed_frames.append(pkt.frame)
        elif status == "malformed":
            flow.malformed += 1
        elif status == "unsupported":
            flow.unsupported += 1
            if len(flow.unsupported_frames) < EVIDENCE:
                flow.unsupported_frames.append(pkt.frame)
            if not flow.unsupported_reason:
                flow.unsupported_reason = getattr(res, "reason", "") or ""
                keys = getattr(res, "keys", None)
                flow.unsupported_keys_source = getattr(keys, "source", "") or ""
        sq = self._seq[key]
        top = sq.top
        full = -1
        if top is not None and flow.seq_max == top:
            # The common case, inlined from esp_flow.account: the next number in order. Without
            # ESN high bits from a decryption no wrap is possible then; with them, the full number
            # must be top + 1. account() would find verdict "new", add one bit to the window and
            # change nothing else.
            if seq_hi is None:
                if (top & 0xFFFFFFFF) + 1 == pkt.seq:
                    full = top + 1
            elif (seq_hi << 32 | pkt.seq) == top + 1:
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
            account(flow, sq, pkt.seq, seq_hi, frame)
        child = t.child_sas.get(flow.child_sa) if flow.child_sa is not None else None
        if child is None:
            return flow
        # Return-traffic bookkeeping: a run of packets one way with nothing coming back.
        if flow.unanswered_tail == 0:
            flow.unanswered_since_frame = pkt.frame
            flow.unanswered_since_ts = ts
        flow.unanswered_tail += 1
        flows = self.table.flows
        for other_spi in (child.spi_i, child.spi_r):
            if other_spi is not None and other_spi != pkt.spi:
                rev = flows.get((pkt.dst, pkt.src, other_spi))
                if rev is not None:
                    rev.unanswered_tail = 0
        if child.deleted_ts is not None and ts > child.deleted_ts:
            flow.after_delete += 1
            if len(flow.after_delete_frames) < EVIDENCE:
                flow.after_delete_frames.append(pkt.frame)
        elif child.rekeyed_ts is not None and ts > child.rekeyed_ts:
            flow.after_rekey += 1
            flow.after_rekey_last_ts = ts
        if status == "ok" and (child.ts_i or child.ts_r):
            inner = getattr(res, "inner", None)
            t = inner_5tuple(inner or b"", getattr(res, "next_header", None))
            if t is not None:
                src, dst, ip_proto, sp, dp = t
                i2r = flow_direction(child, pkt.src, pkt.dst, pkt.spi) == "i2r"
                src_ts, dst_ts = (child.ts_i, child.ts_r) if i2r else (child.ts_r, child.ts_i)
                ok = (not src_ts or any_contains(src_ts, src, ip_proto, sp)) and (
                    not dst_ts or any_contains(dst_ts, dst, ip_proto, dp))
                if not ok:
                    flow.outside_ts += 1
                    if len(flow.outside_ts_frames) < EVIDENCE:
                        flow.outside_ts_frames.append(pkt.frame)
                    if flow.outside_ts_example is None:
                        ports = f" ports {sp}->{dp}" if sp is not None else ""
                        flow.outside_ts_example = f"{src} -> {dst} proto {ip_proto}{ports}"
        return flow

    def _bind_flow(self, flow: EspFlow) -> None:
        cands = self._spi_children.get(flow.spi, [])
        best = None
        for cid in reversed(cands):
            c = self.table.child_sas.get(cid)
            if c is None:
                continue
            # Initiator→responder packets carry spi_r, the other direction spi_i.
            if (flow.spi == c.spi_r and flow.src == c.initiator) or (flow.spi == c.spi_i and flow.src == c.responder):
                best = c
                break
            if best is None:
                best = c
        if best is not None:
            flow.child_sa = best.id
            return
        self._infer(flow)

    def _infer(self, flow: EspFlow) -> None:
        """No IKE told us about this SPI: group it with the opposite flow between the same peers
        that started at about the same time (the two halves of one CHILD SA), else start an
        INFERRED CHILD SA of its own."""
        ts = flow.first_ts or 0.0
        for c in reversed(list(self.table.child_sas.values())):
            if c.state != SaState.INFERRED or c.spi_i is not None:
                continue
            if (c.initiator, c.responder) != (flow.dst, flow.src) or c.protocol != flow.protocol:
                continue
            if c.created_ts is not None and abs(ts - c.created_ts) <= INFER_PAIR_WINDOW:
                c.spi_i = flow.spi
                c.inferred_reason = (f"two ESP flows in opposite directions between {c.initiator} and "
                                     f"{c.responder} started {abs(ts - c.created_ts):.1f} s apart")
                flow.child_sa = c.id
                self._register_spi(c, flow.spi)
                return
        ike = None
        for sa in reversed(list(self.table.ike_sas.values())):
            if {sa.initiator, sa.responder} == {flow.src, flow.dst} and sa.state != SaState.FAILED:
                ike = sa
                break
        child = self._new_child(ike, protocol=flow.protocol, spi_r=flow.spi, initiator=flow.src,
                                responder=flow.dst, state=SaState.INFERRED, created_ts=ts,
                                created_frame=flow.first_frame, created_by="ESP traffic")
        child.mode = "unknown"
        child.inferred_reason = f"ESP flow {flow.src} -> {flow.dst} SPI 0x{flow.spi:08x} with no IKE exchange seen for it"
        self._spi_children.setdefault(flow.spi, []).append(child.id)
        flow.child_sa = child.id
        self._emit("child_sa_created", ts, child_sa=child.id, ike_sa=child.ike_sa, spi_r=flow.spi,
                   inferred=True)

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
            if sa.state != SaState.INITIATING or not sa.exchanges:
                continue
            x = sa.exchanges[-1]
            if x.response_frames or x.request_ts is None:
                continue
            if end - x.request_ts >= timeout or x.retransmits >= 3:
                self._fail_ike(sa, "no response", x.request_ts, x.request_frames[-1])

    # ------------------------------------------------------------------ findings as events

    def note_findings(self, findings) -> int:
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
            self._emit("finding", f.ts, code=f.code, severity=f.severity.name.lower(), title=f.title,
                       sa=f.sa, frames=list(f.frames))
        return new

    # ------------------------------------------------------------------ KEYMAT hand-off

    def pending_keymat(self) -> list[KeymatRequest]:
        """CHILD SAs (IKEv2) whose SPIs, nonces and chosen proposal are known and whose keys have
        not been derived yet. The caller looks up SK_d for (ike_spi_i, ike_spi_r) and calls
        :meth:`keymat_done` when it derived (or gave up on) the keys."""
        out = []
        for cid, cp in self._cpriv.items():
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
        cp = self._cpriv.get(child_id)
        if cp is not None:
            cp.keymat_done = True
        c = self.table.child_sas.get(child_id)
        if c is not None and source:
            c.keys_source = source


_NT = NotifyType
_CHILD_ERRORS = {_NT.NO_PROPOSAL_CHOSEN, _NT.TS_UNACCEPTABLE, _NT.SINGLE_PAIR_REQUIRED, _NT.INTERNAL_ADDRESS_FAILURE,
                 _NT.FAILED_CP_REQUIRED, _NT.INVALID_SELECTORS, _NT.NO_ADDITIONAL_SAS, _NT.INVALID_KE_PAYLOAD,
                 _NT.TEMPORARY_FAILURE, _NT.CHILD_SA_NOT_FOUND}

_AUTH = {1: "RSA signature", 2: "PSK", 3: "DSS signature", 9: "ECDSA-256", 10: "ECDSA-384", 11: "ECDSA-521",
         12: "generic secure password", 13: "NULL", 14: "digital signature"}


def _auth_name(method: int) -> str:
    return _AUTH.get(method, f"auth method {method}")


def _spi_int(b: bytes | int | None) -> int:
    if b is None:
        return 0
    if isinstance(b, int):
        return b
    return int.from_bytes(b[-4:], "big") if b else 0


__all__ = ["Tracker", "Proposal"]
