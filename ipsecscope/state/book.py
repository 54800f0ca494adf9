"""The book both IKE versions and the ESP accounting write into: lookups, creation, state changes.

:class:`Book` owns the :class:`~ipsecscope.model.sa.SaTable` and the engine's private indexes.
``ikev1``, ``ikev2`` and ``traffic`` call only its public methods; ``tracker.Tracker`` is a Book
that dispatches events to them. :meth:`Book.transition` is the one place that sets an SA's
``.state``, so a new state (or a check on which changes are allowed) is added in one spot. The
INFERRED CHILD SAs' pairing lists and cap are its base class, ``state/inferred.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..model.iana import ProtocolId
from ..model.sa import (
    ChildSa,
    EspFlow,
    FlowKey,
    IkeExchange,
    IkeSa,
    NatRebinding,
    Observation,
    SaState,
    SaTable,
)
from .esp_flow import EVIDENCE, SeqTracker
from .inferred import InferredChildSas
from .nat import Rebinds

if TYPE_CHECKING:  # (the IKE model loads with the first IKE message: state.tracker.on_ike)
    from ..model.ike import IkeMessage, Proposal

ZERO_SPI = b"\x00" * 8
MAX_OBSERVATIONS = 200

Listener = Callable[[dict], None]
SaId = tuple[str, str, int]  # (destination, "ESP" | "AH", SPI): an SA's identity, RFC 4301 §4.1


@dataclass(slots=True)
class IkeScratch:
    """Engine state per IKE SA that views do not need."""

    ni: bytes | None = None
    nr: bytes | None = None
    nat_src: list[bytes] = field(default_factory=list)  # NAT_DETECTION_SOURCE_IP hashes (request)
    nat_dst: list[bytes] = field(default_factory=list)
    nat_checked: bool = False
    # IKE SA rekey requests: msg key -> (their IKE proposals, whose SPI is the new SPIi; the group of
    # their KE payload, or None), what the answer makes the new IKE SA from and must fit
    rekey_offer: dict[int, tuple[tuple[Proposal, ...], int | None]] = field(default_factory=dict)
    offer: tuple[Proposal, ...] = ()  # the latest IKE_SA_INIT (IKEv1: phase-1) request's proposals
    ke_group: int | None = None  # ... and the group of its KE payload (IKEv1: Aggressive Mode's, inferred)
    last_raw: dict[tuple[int, bool, bool, int], bytes] = field(default_factory=dict)
    # ... its original's time, or (that time, capture copies taken): state/copies.ike_capture_copy
    last_seen: dict[tuple[int, bool, bool, int], float | tuple[float, int]] = field(default_factory=dict)
    init_raw: bytes | None = None  # the initiator's latest first message (zero responder SPI)
    responder_msgs: int = 0  # IKEv1 phase 1: distinct messages per side
    initiator_msgs: int = 0
    v1_tail: Any = None  # IKEv1 phase 1: the last message either side sent (state.ikev1_stall.Tail)


@dataclass(slots=True)
class ChildScratch:
    """Engine state per CHILD SA that views do not need (what KEYMAT derivation asks for; the
    offer its answer must fit, IKEv2 and IKEv1 Quick Mode alike; an IKEv1 one never gets ``algs``,
    so KEYMAT derivation, IKEv2's alone, passes it by)."""

    ike_spi_i: bytes
    ike_spi_r: bytes
    ni: bytes | None = None
    nr: bytes | None = None
    algs: dict = field(default_factory=dict)
    protocol: int = ProtocolId.ESP
    keymat_done: bool = False
    offer: tuple[Proposal, ...] = ()  # the request's ESP/AH proposals
    ke_group: int | None = None  # the group of its KE payload (PFS)


class Book(InferredChildSas):
    """The SA table plus the indexes that find things in it. See the module docstring."""

    def __init__(self) -> None:
        super().__init__()  # (InferredChildSas: its waiting and paired lists, the live-mode cap)
        self.table = SaTable()
        self.events: list[dict] = []
        self.listeners: list[Listener] = []  # called with every event dict (plugins' on_event)
        # (id(IkeSa), message ID, from the original initiator) -> exchange (RFC 7296 §2.2)
        self.exchanges: dict[tuple[int, int, bool], IkeExchange] = {}
        self.child_scratch: dict[int, ChildScratch] = {}
        self._half_open: dict[tuple[int, bytes], IkeSa] = {}  # (version, spi_i) while spi_r unknown
        self._by_spi_i: dict[tuple[int, bytes], list[IkeSa]] = {}
        self._ike_scratch: dict[int, IkeScratch] = {}
        self._spi_children: dict[int, list[int]] = {}  # SPI -> CHILD SA ids (Delete / REKEY_SA look-ups)
        self._next_child = 1
        # Indexes that keep correlation linear in the number of SAs and flows (no walk over the
        # whole table per new flow or per new IKE SA):
        self._sa_children: dict[SaId, list[int]] = {}  # SA identity -> CHILD SA ids using it
        self._sa_flows: dict[SaId, list[EspFlow]] = {}  # SA identity -> flows carrying it
        self._pair_ike: dict[frozenset[str], dict[int, IkeSa]] = {}  # peer pair -> IKE SAs, filing order
        self.seq_trackers: dict[FlowKey, SeqTracker] = {}  # per flow key
        # IKE SAs refused with INVALID_KE / COOKIE, (version, initiator, responder) -> oldest first
        self._refused: dict[tuple[int, str, str], deque[IkeSa]] = {}
        # IKE SAs whose CREATE_CHILD_SA got an answer: peer pair -> (answer time, SA), oldest first
        self._ccsa_answered: dict[frozenset[str], deque[tuple[float, IkeSa]]] = {}
        self._successors: dict[int, list[int]] = {}  # CHILD SA id -> ids that rekey it
        self._redirects: dict[tuple[str, str], IkeSa] = {}  # (initiator, new gateway) -> redirected SA
        self._counters: dict[str, Observation] = {}  # "inferred_forgotten" / "half_open_forgotten"
        self.nat = Rebinds()  # NAT-T endpoints per SA and peer: NAT rebinding (state/nat.py)
        # CHILD SA id -> SA identities it gained when its IKE SA's peer moved (follow_peer_move)
        self._moved_sids: dict[int, set[SaId]] = {}
        # CHILD SAs an answer established whose request the capture lacks (ikev2.child_from_answer):
        # the initiator's SPI unknown until its traffic names it (traffic.fill_half), at most a few
        self.half_negotiated: deque[ChildSa] = deque(maxlen=64)

    # ------------------------------------------------------------------ events and facts

    def emit(self, event: str, ts: float | None, **kw: object) -> None:
        ev = {"event": event, "ts": ts, **kw}
        self.events.append(ev)
        for fn in self.listeners:
            try:
                fn(ev)
            except Exception:  # a plugin's bug must not stop the engine
                pass

    def observe(self, kind: str, ts: float | None, frames: tuple[int, ...], src: str = "", dst: str = "",
                **detail: object) -> None:
        if len(self.table.observations) < MAX_OBSERVATIONS:
            self.table.observations.append(Observation(kind, ts, frames, src, dst, dict(detail)))

    def touch(self, ts: float) -> None:
        t = self.table
        if t.first_ts is None or ts < t.first_ts:
            t.first_ts = ts
        if t.last_ts is None or ts > t.last_ts:
            t.last_ts = ts

    # ------------------------------------------------------------------ state

    def transition(self, sa: IkeSa | ChildSa, state: SaState) -> None:
        """Move an IKE or CHILD SA to ``state``. The only code that assigns ``.state``."""
        if sa.state == SaState.INFERRED and state != SaState.INFERRED and isinstance(sa, ChildSa):
            self._inferred_ids.discard(sa.id)  # negotiated or closed now: outside the inferred cap
        sa.state = state

    def fail_ike(self, sa: IkeSa, reason: str, ts: float, frame: int | None, by: str | None = None) -> None:
        """``by``: the address that sent the refusal (None for "no response")."""
        if sa.state == SaState.FAILED and sa.failure == reason:
            return
        self.transition(sa, SaState.FAILED)
        sa.failure = reason
        sa.failure_frame = frame
        sa.failed_ts = ts
        sa.failure_from = by
        if reason in ("INVALID_KE_PAYLOAD", "COOKIE"):
            self.note_refused(sa)
        self.emit("ike_sa_failed", ts, ike_sa=sa.key, reason=reason, frame=frame)

    def establish_ike(self, sa: IkeSa, ts: float, inferred: bool) -> None:
        if sa.state in (SaState.ESTABLISHED, SaState.REKEYED, SaState.DELETED, SaState.REDIRECTED):
            return
        self.transition(sa, SaState.ESTABLISHED)
        sa.state_inferred = inferred
        sa.established_ts = ts
        sa.failure = sa.failure_from = sa.stall = None
        self.emit("ike_sa_established", ts, ike_sa=sa.key, initiator=sa.initiator, responder=sa.responder,
                  proposal=sa.proposal, inferred=inferred)

    def delete_ike(self, sa: IkeSa, by: str, ts: float, frame: int) -> None:
        if sa.state == SaState.DELETED or sa.deleted_ts is not None:
            return
        if sa.state != SaState.REDIRECTED:  # a redirected SA's Delete only ends it: keep why it ended
            self.transition(sa, SaState.DELETED)
        sa.deleted_ts = ts
        sa.deleted_by = by
        self.emit("ike_sa_deleted", ts, ike_sa=sa.key, by=by, frame=frame)
        # RFC 7296 §1.4.1: deleting an IKE SA closes every CHILD SA it manages.
        for cid in sa.children:
            c = self.table.child_sas.get(cid)
            if c is not None and c.ike_sa == sa.key and c.state not in (SaState.DELETED, SaState.FAILED):
                self.delete_child(c, by, ts, frame)

    def delete_child(self, child: ChildSa, by: str, ts: float, frame: int) -> None:
        if child.state == SaState.DELETED:
            return
        self.transition(child, SaState.DELETED)
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
            for oid in self._successors.get(prev.id, ()):
                other = self.table.child_sas.get(oid)
                if other is not None and other.id != child.id and other.state == SaState.ESTABLISHED:
                    prev.rekeyed_into = other.id
                    break
        self.emit("child_sa_deleted", ts, child_sa=child.id, ike_sa=child.ike_sa, by=by, frame=frame)

    def rekey_child_done(self, old: ChildSa, new: ChildSa, ts: float, ike_key: str | None) -> None:
        """``new`` replaced ``old`` (REKEY_SA, RFC 7296 §1.3.3; or an IKEv1 Quick Mode for the
        same selectors)."""
        old.rekeyed_into = new.id
        old.rekeyed_ts = ts
        if old.state in (SaState.ESTABLISHED, SaState.INFERRED):
            self.transition(old, SaState.REKEYED)
        if old.created_ts is not None:
            old.lifetime_s = ts - old.created_ts
        self.mark_rekey_of(new, old)
        self.emit("child_sa_rekeyed", ts, child_sa=old.id, into=new.id, ike_sa=ike_key)

    def mark_rekey_of(self, new: ChildSa, old: ChildSa) -> None:
        """``new`` is (being) negotiated to replace ``old``."""
        new.rekeyed_from = old.id
        lst = self._successors.setdefault(old.id, [])
        if new.id not in lst:
            lst.append(new.id)
            lst.sort()

    # ------------------------------------------------------------------ IKE SAs

    def note_refused(self, sa: IkeSa) -> None:
        """``sa``'s IKE_SA_INIT was refused with INVALID_KE_PAYLOAD or a COOKIE request: the next
        IKE_SA_INIT between the same peers may be its retry (RFC 7296 §1.3, §2.6)."""
        dq = self._refused.setdefault((sa.version, sa.initiator, sa.responder), deque())
        if not dq or dq[-1] is not sa:
            dq.append(sa)

    def refused_between(self, version: int, initiator: str, responder: str, since: float) -> list[IkeSa]:
        """Refused IKE SAs (see :meth:`note_refused`) from ``initiator`` to ``responder`` that failed
        at or after ``since``, oldest first. Older ones are dropped from the index."""
        dq = self._refused.get((version, initiator, responder))
        if not dq:
            return []
        while dq and (dq[0].failed_ts is None or dq[0].failed_ts < since):
            dq.popleft()
        return list(dq)

    def note_child_exchange_answered(self, sa: IkeSa, ts: float) -> None:
        """A CREATE_CHILD_SA on ``sa`` was answered at ``ts``: a new IKE SA between the same peers
        soon after may be its (encrypted) IKE SA rekey."""
        self._ccsa_answered.setdefault(frozenset((sa.initiator, sa.responder)), deque()).append((ts, sa))

    def child_exchanges_answered_between(self, a: str, b: str, since: float) -> list[IkeSa]:
        """IKE SAs between ``a`` and ``b`` with a CREATE_CHILD_SA answered at or after ``since``,
        oldest answer first (an SA may appear more than once). Older ones leave the index."""
        dq = self._ccsa_answered.get(frozenset((a, b)))
        if not dq:
            return []
        while dq and dq[0][0] < since:
            dq.popleft()
        return [sa for _, sa in dq]

    def redirect_ike(self, sa: IkeSa, gateway: str, exchange: str, ts: float, frame: int) -> None:
        """The responder sent the initiator to ``gateway`` (RFC 5685 §4 in IKE_SA_INIT, §5 in
        IKE_AUTH, §6 in an INFORMATIONAL of an established SA): the SA gets its own state instead of
        waiting (INITIATING) or failing."""
        if sa.state == SaState.REDIRECTED:
            return
        self.transition(sa, SaState.REDIRECTED)
        sa.redirect_to, sa.redirect_exchange, sa.redirect_ts, sa.redirect_frame = gateway, exchange, ts, frame
        sa.failure, sa.failed_ts = None, None
        self._redirects[(sa.initiator, gateway)] = sa
        self.emit("ike_sa_redirected", ts, ike_sa=sa.key, to=gateway, exchange=exchange, frame=frame)

    def redirected_here(self, sa: IkeSa, from_gateway: str, ts: float, frame: int) -> None:
        """``sa`` is a new IKE SA whose IKE_SA_INIT names the gateway that redirected its initiator
        here (REDIRECTED_FROM, RFC 5685 §4, §6): link the two. When the REDIRECT itself was
        encrypted (IKE_AUTH or INFORMATIONAL without keys), this notify is how we learn of it."""
        old = self._redirects.pop((sa.initiator, sa.responder), None)
        if old is None:
            # The REDIRECT named the new gateway by FQDN (or by an address other than the one the
            # initiator then reached): no address matches it. REDIRECTED_FROM holds the address of
            # the gateway that redirected (RFC 5685 §6), so the pending redirect of this initiator
            # away from that gateway is the one it followed.
            key = next((k for k, o in self._redirects.items()
                        if k[0] == sa.initiator and o is not sa and o.responder == from_gateway), None)
            old = self._redirects.pop(key) if key is not None else None
        if old is None or old is sa or old.responder != from_gateway:
            old = next((o for o in reversed(self.ike_sas_between(sa.initiator, from_gateway))
                        if o is not sa and o.initiator == sa.initiator and o.redirect_to is None
                        and o.state != SaState.FAILED), None)
            if old is None:
                return
            self.redirect_ike(old, sa.responder, "encrypted", ts, frame)
            self._redirects.pop((sa.initiator, sa.responder), None)
        old.redirected_into = sa.key
        sa.redirected_from = old.key

    def ike_scratch(self, sa: IkeSa) -> IkeScratch:
        p = self._ike_scratch.get(id(sa))
        if p is None:
            p = self._ike_scratch[id(sa)] = IkeScratch()
        return p

    def lookup_ike(self, version: int, spi_i: bytes, spi_r: bytes) -> IkeSa | None:
        sa = self.table.ike_sas.get(f"{spi_i.hex()}_{spi_r.hex()}")
        if sa is not None:
            return sa
        return self._half_open.get((version, spi_i))

    def half_open(self, version: int, spi_i: bytes) -> IkeSa | None:
        """The IKE SA with this SPIi whose responder SPI is not known yet."""
        return self._half_open.get((version, spi_i))

    def bind_responder_spi(self, sa: IkeSa, spi_r: bytes) -> None:
        """The responder's SPI is now known: re-file the SA under (spi_i, spi_r)."""
        self.table.ike_sas.pop(sa.key, None)
        old = sa.key
        sa.ike_spi_r = spi_r
        self.table.ike_sas[sa.key] = sa
        src = self.table.ike_sas.get(sa.redirected_from) if sa.redirected_from else None
        if src is not None and src.redirected_into == old:
            src.redirected_into = sa.key
        pair = self._pair_ike.get(frozenset((sa.initiator, sa.responder)))
        if pair is not None:  # keep the peer-pair index in the table's (re-)filing order
            pair.pop(id(sa), None)
            pair[id(sa)] = sa
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
        self._pair_ike.setdefault(frozenset((initiator, responder)), {})[id(sa)] = sa
        return sa

    def answered_init_copy(self, version: int, spi_i: bytes, src: str, raw: bytes) -> IkeSa | None:
        """The IKE SA a byte-identical copy of its first request belongs to, sent again (zero
        responder SPI) after the responder's answer had already bound SPIr: a retransmission
        (RFC 7296 §2.1, RFC 2408 §3.1 for IKEv1), not a new IKE SA that nobody answers."""
        for sa in reversed(self._by_spi_i.get((version, spi_i), ())):
            if sa.ike_spi_r != ZERO_SPI and sa.initiator == src and self.ike_scratch(sa).init_raw == raw:
                return sa
        return None

    def bound_by_spi_i(self, version: int, spi_i: bytes, a: str, b: str) -> IkeSa | None:
        """The latest IKE SA between ``a`` and ``b`` with this SPIi whose responder SPI is known: a
        message with a zero responder SPI that is not an initial request belongs to it."""
        for sa in reversed(self._by_spi_i.get((version, spi_i), ())):
            if sa.ike_spi_r != ZERO_SPI and {sa.initiator, sa.responder} == {a, b}:
                return sa
        return None

    def started_before(self, version: int, spi_i: bytes, a: str, b: str, ts: float) -> IkeSa | None:
        """The IKE SA between ``a`` and ``b`` with this SPIi that a message of its initial exchange
        (zero SPIr) timed ``ts`` belongs to though it comes later in the file: the SA was filed from
        a later exchange (its start unseen, ``state_inferred``) sent after ``ts``. Capture
        records need not be in time order (merged or concatenated captures); an SPIi is the
        initiator's random choice for one IKE SA (RFC 7296 §2.6)."""
        for sa in reversed(self._by_spi_i.get((version, spi_i), ())):
            if not sa.state_inferred or sa.ike_spi_r == ZERO_SPI or {sa.initiator, sa.responder} != {a, b}:
                continue
            later = [x.request_ts for x in sa.exchanges if x.exchange != 34 and x.request_ts is not None]
            if later and ts < min(later):
                return sa
        return None

    def ike_sas_between(self, a: str, b: str) -> list[IkeSa]:
        """IKE SAs between two peers (either role), newest filed last."""
        pair = self._pair_ike.get(frozenset((a, b)))
        return list(pair.values()) if pair else []

    def latest_ike_between(self, a: str, b: str) -> IkeSa | None:
        """The most recently filed IKE SA between two peers that did not fail."""
        pair = self._pair_ike.get(frozenset((a, b)))
        if pair:
            for sa in reversed(pair.values()):
                if sa.state != SaState.FAILED:
                    return sa
        return None

    def ike_sa_of(self, child: ChildSa) -> IkeSa | None:
        return self.table.ike_sas.get(child.ike_sa) if child.ike_sa else None

    @staticmethod
    def note_key(sa: IkeSa, msg: IkeMessage) -> None:
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
    def note_vendor_ids(sa: IkeSa, msg: IkeMessage) -> None:
        from ..model.ike import VendorPayload

        for v in msg.find(VendorPayload):
            label = v.name or v.data[:8].hex()
            if label not in sa.vendor_ids:
                sa.vendor_ids.append(label)

    @staticmethod
    def note_notifies(x: IkeExchange, msg: IkeMessage) -> None:
        from ..model.ike import NotifyPayload

        for n in msg.find(NotifyPayload):
            if n.notify_type not in x.notifies:
                x.notifies.append(n.notify_type)

    # ------------------------------------------------------------------ CHILD SAs

    def new_child(self, ike: IkeSa | None, state: SaState = SaState.INITIATING, **kw) -> ChildSa:
        cid = self._next_child
        self._next_child += 1
        child = ChildSa(id=cid, ike_sa=ike.key if ike else None, **kw)
        self.transition(child, state)
        self.table.child_sas[cid] = child
        if ike is not None:
            ike.children.append(cid)
        return child

    @staticmethod
    def sa_ids(child: ChildSa, spi: int) -> list[SaId]:
        """The SA identities ``spi`` names on ``child``: spi_i is the initiator's inbound SPI (its
        SA's destination is the initiator), spi_r the responder's (RFC 7296 §2.17 naming)."""
        out = []
        for proto, spi_i, spi_r in child.spi_pairs():  # an AH+ESP bundle: one SA per protocol each way
            if spi == spi_i:
                out.append((child.initiator, proto, spi))
            if spi == spi_r:
                out.append((child.responder, proto, spi))
        return out

    def index_spi(self, child: ChildSa, spi: int) -> None:
        """File ``child`` under ``spi`` without re-binding any flow."""
        lst = self._spi_children.setdefault(spi, [])
        if child.id not in lst:
            lst.append(child.id)
        for sid in self.sa_ids(child, spi):
            lst = self._sa_children.setdefault(sid, [])
            if child.id not in lst:
                lst.append(child.id)

    def move_child(self, child: ChildSa, old: IkeSa, new: IkeSa, ts: float) -> None:
        """An IKE SA rekey hands its CHILD SAs to the new IKE SA (RFC 7296 §2.18). The old one keeps
        it in ``children`` (its history: `sas` shows "moved to"); ``child.ike_sa`` names the one
        that manages it now, so a count over IKE SAs counts distinct ids."""
        if child.id not in new.children:
            new.children.append(child.id)
        child.ike_sa = new.key
        self.emit("child_sa_moved", ts, child_sa=child.id, from_ike_sa=old.key, ike_sa=new.key)

    def register_spi(self, child: ChildSa, spi: int | None) -> None:
        """File ``child`` under ``spi`` and move the flows of that SA (same SPI, destination and
        protocol) that no negotiated CHILD SA owns yet onto it."""
        if spi is None:
            return
        self.index_spi(child, spi)
        # Flows seen before the IKE exchange (or grouped by inference) move to the negotiated SA.
        for sid in self.sa_ids(child, spi):
            for flow in list(self._sa_flows.get(sid, ())):
                if flow.child_sa == child.id:
                    continue
                cur = self.table.child_sas.get(flow.child_sa) if flow.child_sa else None
                if cur is None or cur.state == SaState.INFERRED:
                    self.attach_flow(flow, child)
                    if cur is not None and not self.table.child_flows.get(cur.id):
                        self.drop_inferred(cur)

    def peer_source(self, owner: IkeSa | ChildSa, owner_key: str, role: str, addr: str, port: int, ts: float,
                    frame: int, seen_in: str) -> NatRebinding | None:
        """A NAT-T packet of ``owner`` came from ``addr:port`` (state/nat.py). When the sender's
        *address* changed on an IKE SA, the SAs move with it: RFC 7296 §2.23 (the latest
        authenticated source) and RFC 4555 §3.5 (MOBIKE) keep the SPIs and change only the
        addresses, so the SA a packet to the new address belongs to is still found."""
        rb = self.nat.source(owner, owner_key, role, addr, port, ts, frame, seen_in)
        if rb is not None and rb.old_addr != rb.new_addr and isinstance(owner, IkeSa):
            self.follow_peer_move(owner, rb.old_addr, rb.new_addr)
        return rb

    def follow_peer_move(self, ike: IkeSa, old: str, new: str) -> None:
        """File every CHILD SA of ``ike`` whose SA had destination ``old`` under ``new`` too: RFC
        4301 §4.1 names an SA by SPI, destination and protocol, and after a move (MOBIKE
        UPDATE_SA_ADDRESSES, RFC 4555 §3.5, or a NAT giving a new address, RFC 7296 §2.23) the SA
        with the same SPI sent to the new address is the same SA, not a new inferred one. Flows
        already seen to ``new`` on an inferred CHILD SA move onto it (as :meth:`register_spi`)."""
        for cid in ike.children:
            c = self.table.child_sas.get(cid)
            if c is None:
                continue
            for proto, spi_i, spi_r in c.spi_pairs():
                for addr, spi in ((c.initiator, spi_i), (c.responder, spi_r)):
                    if addr != old or spi is None:
                        continue
                    sid = (new, proto, spi)
                    self._moved_sids.setdefault(cid, set()).add(sid)
                    lst = self._sa_children.setdefault(sid, [])
                    if cid not in lst:
                        lst.append(cid)
                    for flow in list(self._sa_flows.get(sid, ())):
                        cur = self.table.child_sas.get(flow.child_sa) if flow.child_sa else None
                        if flow.child_sa != cid and (cur is None or cur.state == SaState.INFERRED):
                            self.attach_flow(flow, c)
                            if cur is not None and not self.table.child_flows.get(cur.id):
                                self.drop_inferred(cur)

    def add_flow(self, flow: EspFlow) -> None:
        """File a new flow under its SA identity (destination, protocol, SPI)."""
        self.table.flows[flow.key] = flow
        sq = self.seq_trackers[flow.key] = SeqTracker()
        flow.recent = sq.ring  # the same list: the rules see the flow's last packets
        self._sa_flows.setdefault((flow.dst, flow.protocol, flow.spi), []).append(flow)

    def attach_flow(self, flow: EspFlow, child: ChildSa) -> None:
        """Bind ``flow`` to ``child`` (and off the CHILD SA it was on)."""
        cf = self.table.child_flows
        if flow.child_sa is not None and flow.child_sa != child.id:
            # Its frames so far were filed under the old CHILD SA: the session's rows follow.
            self.emit("esp_flow_moved", flow.last_ts, src=flow.src, dst=flow.dst, spi=flow.spi,
                      protocol=flow.protocol, from_child_sa=flow.child_sa, child_sa=child.id,
                      first_frame=flow.first_frame)
        if flow.child_sa is not None:
            old = cf.get(flow.child_sa)
            if old is not None and flow in old:
                old.remove(flow)
                if not old:
                    del cf[flow.child_sa]
        flow.child_sa = child.id
        cf.setdefault(child.id, []).append(flow)

    def children_of_sa(self, dst: str, protocol: str, spi: int) -> list[int]:
        """CHILD SA ids that negotiated (or were inferred for) this SA, oldest first."""
        return self._sa_children.get((dst, protocol, spi), [])

    def unindex_spi(self, child: ChildSa, spi: int | None) -> None:
        """Take ``child`` off the indexes of ``spi`` (the reverse of :meth:`index_spi`)."""
        if spi is None:
            return
        if child.id in self._spi_children.get(spi, []):
            self._spi_children[spi].remove(child.id)
        moved = self._moved_sids.get(child.id, set())
        for sid in [*self.sa_ids(child, spi), *(m for m in moved if m[2] == spi)]:
            moved.discard(sid)
            lst = self._sa_children.get(sid)
            if lst and child.id in lst:
                lst.remove(child.id)
                if not lst:
                    del self._sa_children[sid]

    def child_by_spi(self, spi: int, sender: str | None = None, ike: IkeSa | None = None) -> ChildSa | None:
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
                for _proto, spi_i, spi_r in c.spi_pairs():
                    own = spi_i if sender == c.initiator else spi_r if sender == c.responder else None
                    if own == spi:
                        return c
            if best is None:
                best = c
        return best

    # ------------------------------------------------------------------ live mode's bounds

    def expire(self, now: float, *, max_age: float = 60.0, max_inferred: int | None = 2000) -> int:
        """Live mode's housekeeping (call it now and then, e.g. once a second): forget INFERRED
        CHILD SAs (with their flows) that carried nothing for ``max_age`` s and, past
        ``max_inferred``, the oldest ones; forget half-open IKE SAs (an IKE_SA_INIT never answered)
        idle for ``max_age`` s and, past ``max_inferred``, the oldest. Returns how many SAs were
        forgotten; they are counted in the ``inferred_forgotten`` / ``half_open_forgotten``
        observations. Costs one pass over those SAs, never over the whole table."""
        gone = 0
        keep: deque[ChildSa] = deque()
        for c in self._inferred_fifo:
            if c.id not in self._inferred_ids or self.table.child_sas.get(c.id) is not c:
                continue
            flows = self.table.child_flows.get(c.id, ())
            last = max((f.last_ts or f.first_ts or 0.0 for f in flows), default=c.created_ts or 0.0)
            if now - last > max_age:
                self._forget_inferred_counted(c, now)
                gone += 1
            else:
                keep.append(c)
        self._inferred_fifo = keep
        while max_inferred is not None and len(self._inferred_ids) > max_inferred and keep:
            self._forget_inferred_counted(keep.popleft(), now)
            gone += 1
        half = [sa for sa in self._half_open.values() if not sa.children and sa.ike_spi_r == ZERO_SPI]
        old = [sa for sa in half if now - _last_activity(sa) > max_age]
        if max_inferred is not None and len(half) - len(old) > max_inferred:
            fresh = [sa for sa in half if now - _last_activity(sa) <= max_age]
            old += fresh[:len(fresh) - max_inferred]
        for sa in old:
            self._forget_ike(sa)
        if old:
            self._count("half_open_forgotten", len(old), now)
        return gone + len(old)

    def _forget_ike(self, sa: IkeSa) -> None:
        if self.table.ike_sas.get(sa.key) is sa:
            del self.table.ike_sas[sa.key]
        if self._half_open.get((sa.version, sa.ike_spi_i)) is sa:
            del self._half_open[(sa.version, sa.ike_spi_i)]
        lst = self._by_spi_i.get((sa.version, sa.ike_spi_i))
        if lst is not None and sa in lst:
            lst.remove(sa)
            if not lst:
                del self._by_spi_i[(sa.version, sa.ike_spi_i)]
        pair = self._pair_ike.get(frozenset((sa.initiator, sa.responder)))
        if pair is not None:
            pair.pop(id(sa), None)
            if not pair:
                del self._pair_ike[frozenset((sa.initiator, sa.responder))]
        for x in sa.exchanges:  # keyed by id(sa): a later object may reuse the id
            self.exchanges.pop((id(sa), x.msg_id, True), None)
            self.exchanges.pop((id(sa), x.msg_id, False), None)
        self._ike_scratch.pop(id(sa), None)

    def _count(self, kind: str, n: int, ts: float, total: bool = False) -> None:
        """One observation per kind of forgetting, its ``count`` kept current."""
        ob = self._counters.get(kind)
        if ob is None:
            if len(self.table.observations) >= MAX_OBSERVATIONS:
                return
            ob = self._counters[kind] = Observation(kind, ts, (), detail={"count": 0})
            self.table.observations.append(ob)
        ob.detail["count"] = n if total else int(ob.detail["count"]) + n  # type: ignore[call-overload]
        ob.detail["last_ts"] = ts


def chosen_in(x: IkeExchange, answer: int) -> tuple[int, ...]:
    """``proposal_frames`` of an SA whose proposal the answer in frame ``answer`` chose: the
    request's first copy, when the capture holds it, and that answer (RFC 7296 §1.2, §1.3;
    RFC 2409 §5, §5.5): the exchange a finding about the chosen algorithms cites."""
    return (*x.request_frames[:1], answer)


def note_nat_detection(sa: IkeSa, sender: str, sender_is_initiator: bool, src_ok: bool, dst_ok: bool,
                       dst_seen: bool = True) -> None:
    """Record one message's NAT detection verdict (both IKE versions). RFC 7296 §2.23 / RFC 3947
    §3.2: a NAT_DETECTION_SOURCE_IP hash that does not match means the sender is behind a NAT; a
    DESTINATION hash that does not match means the receiver is."""
    sa.nat_initiator = bool(sa.nat_initiator)
    sa.nat_responder = bool(sa.nat_responder)
    if dst_seen and sender not in sa.nat_dst_seen:
        sa.nat_dst_seen.append(sender)
    if not src_ok and ("source", sender) not in sa.nat_mismatch:
        sa.nat_mismatch.append(("source", sender))
    if not dst_ok and ("destination", sender) not in sa.nat_mismatch:
        sa.nat_mismatch.append(("destination", sender))
    if not src_ok:
        if sender_is_initiator:
            sa.nat_initiator = True
        else:
            sa.nat_responder = True
    if not dst_ok:
        if sender_is_initiator:
            sa.nat_responder = True
        else:
            sa.nat_initiator = True
    sa.nat_detected = sa.nat_initiator or sa.nat_responder


def _last_activity(sa: IkeSa) -> float:
    x = sa.exchanges[-1] if sa.exchanges else None
    ts = [t for t in (sa.created_ts, x.request_ts if x else None, x.response_ts if x else None) if t is not None]
    return max(ts, default=0.0)
