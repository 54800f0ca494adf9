"""The book both IKE versions and the ESP accounting write into: lookups, creation, state changes.

:class:`Book` owns the :class:`~ipsecscope.model.sa.SaTable` and the engine's private indexes.
``ikev1``, ``ikev2`` and ``traffic`` call only its public methods; ``tracker.Tracker`` is a Book
that dispatches events to them. :meth:`Book.transition` is the one place that sets an SA's
``.state``, so a new state (or a check on which changes are allowed) is added in one spot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..model.ike import IkeMessage, NotifyPayload, VendorPayload
from ..model.sa import ChildSa, IkeExchange, IkeSa, Observation, SaState, SaTable
from .esp_flow import EVIDENCE

ZERO_SPI = b"\x00" * 8
MAX_OBSERVATIONS = 200

Listener = Callable[[dict], None]


@dataclass(slots=True)
class IkeScratch:
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
class ChildScratch:
    """Engine state per CHILD SA that views do not need (what KEYMAT derivation asks for)."""

    ike_spi_i: bytes
    ike_spi_r: bytes
    ni: bytes | None = None
    nr: bytes | None = None
    algs: dict = field(default_factory=dict)
    protocol: int = 3
    keymat_done: bool = False


class Book:
    """The SA table plus the indexes that find things in it. See the module docstring."""

    def __init__(self) -> None:
        self.table = SaTable()
        self.events: list[dict] = []
        self.listeners: list[Listener] = []  # called with every event dict (plugins' on_event)
        # (id(IkeSa), message ID, from the original initiator) -> exchange (RFC 7296 §2.2)
        self.exchanges: dict[tuple[int, int, bool], IkeExchange] = {}
        self.child_scratch: dict[int, ChildScratch] = {}
        self._half_open: dict[tuple[int, bytes], IkeSa] = {}  # (version, spi_i) while spi_r unknown
        self._by_spi_i: dict[tuple[int, bytes], list[IkeSa]] = {}
        self._ike_scratch: dict[int, IkeScratch] = {}
        self._spi_children: dict[int, list[int]] = {}
        self._next_child = 1

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

    @staticmethod
    def transition(sa: IkeSa | ChildSa, state: SaState) -> None:
        """Move an IKE or CHILD SA to ``state``. The only code that assigns ``.state``."""
        sa.state = state

    def fail_ike(self, sa: IkeSa, reason: str, ts: float, frame: int | None) -> None:
        if sa.state == SaState.FAILED and sa.failure == reason:
            return
        self.transition(sa, SaState.FAILED)
        sa.failure = reason
        sa.failure_frame = frame
        sa.failed_ts = ts
        self.emit("ike_sa_failed", ts, ike_sa=sa.key, reason=reason, frame=frame)

    def establish_ike(self, sa: IkeSa, ts: float, inferred: bool) -> None:
        if sa.state in (SaState.ESTABLISHED, SaState.REKEYED, SaState.DELETED):
            return
        self.transition(sa, SaState.ESTABLISHED)
        sa.state_inferred = inferred
        sa.established_ts = ts
        sa.failure = None
        self.emit("ike_sa_established", ts, ike_sa=sa.key, initiator=sa.initiator, responder=sa.responder,
                  proposal=sa.proposal, inferred=inferred)

    def delete_ike(self, sa: IkeSa, by: str, ts: float, frame: int) -> None:
        if sa.state == SaState.DELETED:
            return
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
            for other in self.table.child_sas.values():
                if other.rekeyed_from == prev.id and other.id != child.id and other.state == SaState.ESTABLISHED:
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
        new.rekeyed_from = old.id
        self.emit("child_sa_rekeyed", ts, child_sa=old.id, into=new.id, ike_sa=ike_key)

    # ------------------------------------------------------------------ IKE SAs

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
        for v in msg.find(VendorPayload):
            label = v.name or v.data[:8].hex()
            if label not in sa.vendor_ids:
                sa.vendor_ids.append(label)

    @staticmethod
    def note_notifies(x: IkeExchange, msg: IkeMessage) -> None:
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

    def index_spi(self, child: ChildSa, spi: int) -> None:
        """File ``child`` under ``spi`` without re-binding any flow."""
        lst = self._spi_children.setdefault(spi, [])
        if child.id not in lst:
            lst.append(child.id)

    def register_spi(self, child: ChildSa, spi: int | None) -> None:
        """File ``child`` under ``spi`` and move the flows with that SPI that no negotiated CHILD
        SA owns yet onto it."""
        if spi is None:
            return
        self.index_spi(child, spi)
        # Flows seen before the IKE exchange (or grouped by inference) move to the negotiated SA.
        for flow in self.table.flows.values():
            if flow.spi != spi or flow.child_sa == child.id:
                continue
            cur = self.table.child_sas.get(flow.child_sa) if flow.child_sa else None
            if cur is None or cur.state == SaState.INFERRED:
                flow.child_sa = child.id
                if cur is not None and not cur.flows(self.table):
                    self.drop_inferred(cur)

    def drop_inferred(self, child: ChildSa) -> None:
        self.table.child_sas.pop(child.id, None)
        ike = self.ike_sa_of(child)
        if ike is not None and child.id in ike.children:
            ike.children.remove(child.id)
        for spi in (child.spi_i, child.spi_r):
            if spi is not None and child.id in self._spi_children.get(spi, []):
                self._spi_children[spi].remove(child.id)

    def children_with_spi(self, spi: int) -> list[int]:
        """CHILD SA ids that use ``spi`` in either direction, oldest first."""
        return self._spi_children.get(spi, [])

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
                own = c.spi_i if sender == c.initiator else c.spi_r if sender == c.responder else None
                if own == spi:
                    return c
            if best is None:
                best = c
        return best
