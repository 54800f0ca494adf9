"""INFERRED CHILD SAs: ESP/AH traffic whose negotiation the capture does not hold, grouped into
CHILD SAs by inference. The :class:`~ipsecscope.state.book.Book`'s part that keeps them: the list
of those with one flow waiting for the opposite one and the list of pairs made (both bounded, so a
flood of random SPIs costs each new flow a constant), undoing a pairing (``split_inferred``), and
live mode's cap on how many there are (``max_inferred``; ``Book.expire`` forgets idle ones too).
``state/traffic.py`` decides what pairs with what; this only files and finds.

A base class of ``Book``, not an object of its own: ``traffic`` calls these methods on the book as
before (no second hop per call), and they use the book's table, indexes and methods (``new_child``,
``index_spi``, ``unindex_spi``, ``attach_flow``, ``ike_sa_of``, ``emit``, ``_count``).
"""

from __future__ import annotations

from collections import deque

from ..model.sa import ChildSa, EspFlow, FlowKey, SaState, SaTable
from .esp_flow import SeqTracker
from .nat import Rebinds


class InferredChildSas:
    """The INFERRED CHILD SAs' lists and cap (see the module docstring); mixed into ``Book``."""

    # the Book's own, which these methods read and write too (set by Book.__init__)
    table: SaTable
    nat: Rebinds
    seq_trackers: dict[FlowKey, SeqTracker]
    _sa_children: dict[tuple[str, str, int], list[int]]  # SA identity (book.SaId) -> CHILD SA ids
    _sa_flows: dict[tuple[str, str, int], list[EspFlow]]  # SA identity -> flows carrying it

    def __init__(self) -> None:
        # INFERRED CHILD SAs with one flow, waiting for the opposite one: (initiator, responder,
        # protocol) -> oldest first
        self._half_inferred: dict[tuple[str, str, str], deque[ChildSa]] = {}
        # INFERRED CHILD SAs paired by inference, filed under their first flow's (source,
        # destination, protocol) in pairing order: a flow starting later within the pairing window
        # may fit a pair's first flow as well, and then that pairing was one of several
        self._paired_inferred: dict[tuple[str, str, str], deque[ChildSa]] = {}
        # Live mode's bound on INFERRED CHILD SAs (a flood of random SPIs must not grow the table
        # without limit): at most ``max_inferred`` of them; past that the oldest idle one (no
        # packet for ``inferred_idle`` s) is forgotten, else the oldest. None = no bound (files).
        self.max_inferred: int | None = None
        self.inferred_idle = 60.0
        self.inferred_forgotten = 0
        self._inferred_ids: set[int] = set()
        self._inferred_fifo: deque[ChildSa] = deque()
        self.inferred_suites: dict[int, dict[int, tuple]] = {}  # paired INFERRED CHILD SA -> SPI -> (encr, integ)

    def half_inferred(self, initiator: str, responder: str, protocol: str, ts: float,
                      window: float, limit: int = 32) -> tuple[list[ChildSa], bool]:
        """INFERRED CHILD SAs from ``initiator`` to ``responder`` with only one flow so far, created
        within ``window`` s of ``ts``, newest first: the candidates to pair a reverse flow with. At
        most ``limit`` (a flood of random SPIs both ways must not make each new flow cost the whole
        list); the flag says more were left out."""
        dq = self._half_inferred.get((initiator, responder, protocol))
        if not dq:
            return [], False
        sas = self.table.child_sas

        def waiting(c: ChildSa) -> bool:
            return c.state == SaState.INFERRED and c.spi_i is None and sas.get(c.id) is c

        # Flows arrive in capture order, so the head holds the oldest: drop what can no longer pair.
        while dq and (not waiting(dq[0]) or (dq[0].created_ts or 0.0) < ts - window):
            dq.popleft()
        out: list[ChildSa] = []
        for c in reversed(dq):
            if c.created_ts is None or not waiting(c):
                continue
            if c.created_ts < ts - window:
                break
            if len(out) == limit:
                return out, True
            if abs(ts - c.created_ts) <= window:
                out.append(c)
        return out, False

    def take_half_inferred(self, child: ChildSa) -> None:
        """``child`` got its reverse flow: it leaves the waiting list for the paired one."""
        key = (child.initiator, child.responder, child.protocol)
        dq = self._half_inferred.get(key)
        if dq is not None and child in dq:
            dq.remove(child)
        self._paired_inferred.setdefault(key, deque()).append(child)

    def paired_inferred(self, initiator: str, responder: str, protocol: str, ts: float,
                        window: float, limit: int = 32) -> list[ChildSa]:
        """INFERRED CHILD SAs paired by inference whose first flow went from ``initiator`` to
        ``responder`` and started within ``window`` s of ``ts``, last paired first, at most
        ``limit`` (the same bound as :meth:`half_inferred`)."""
        dq = self._paired_inferred.get((initiator, responder, protocol))
        if not dq:
            return []
        sas = self.table.child_sas

        def paired(c: ChildSa) -> bool:
            return (c.state == SaState.INFERRED and c.spi_i is not None and sas.get(c.id) is c
                    and c.initiator == initiator)

        # Pairing order is nearly creation order: trim the head, and check each entry anyway.
        while dq and (not paired(dq[0]) or (dq[0].created_ts or 0.0) < ts - window):
            dq.popleft()
        out: list[ChildSa] = []
        for c in reversed(dq):
            if len(out) == limit:
                break
            if paired(c) and c.created_ts is not None and abs(ts - c.created_ts) <= window:
                out.append(c)
        return out

    def wait_again(self, child: ChildSa) -> None:
        """An INFERRED CHILD SA left with one flow (a pairing undone) waits for its opposite flow
        again, filed by creation time: :meth:`half_inferred` reads its list oldest first."""
        dq = self._half_inferred.setdefault((child.initiator, child.responder, child.protocol), deque())
        if child in dq:
            return
        t = child.created_ts or 0.0
        i = len(dq)
        while i and (dq[i - 1].created_ts or 0.0) > t:
            i -= 1
        dq.insert(i, child)

    def split_inferred(self, child: ChildSa, flow: EspFlow, reason: str) -> ChildSa:
        """Undo an inference pairing: ``flow`` leaves the paired INFERRED ``child`` for an INFERRED
        CHILD SA of its own (both "unpaired" with ``reason``). Returns the new CHILD SA."""
        spi = flow.spi
        if spi == child.spi_i:  # the pair's second flow leaves; its SPI comes off the child's index
            if child.spi_r != spi:
                self.unindex_spi(child, spi)
            else:  # one SPI both ways: only the SA towards the initiator leaves
                lst = self._sa_children.get((child.initiator, child.protocol, spi))
                if lst and child.id in lst:
                    lst.remove(child.id)
            child.spi_i = None
        else:  # the first one leaves: the other flow's SPI becomes the child's spi_r, roles turn
            stay = next(f for f in self.table.child_flows.get(child.id, ()) if f is not flow)
            self.drop_inferred(child)
            self.table.child_sas[child.id] = child
            self._inferred_ids.add(child.id)
            child.spi_i, child.spi_r = None, stay.spi
            child.initiator, child.responder = stay.src, stay.dst
            child.created_ts, child.created_frame = stay.first_ts, stay.first_frame
            self.index_spi(child, stay.spi)
            ike = self.ike_sa_of(child)
            if ike is not None and child.id not in ike.children:
                ike.children.append(child.id)
        child.inferred_reason = reason
        self.inferred_suites.pop(child.id, None)
        new = self.new_child(self.ike_sa_of(child), protocol=flow.protocol, spi_r=spi, initiator=flow.src,
                             responder=flow.dst, state=SaState.INFERRED, created_ts=flow.first_ts,
                             created_frame=flow.first_frame, created_by=f"{flow.protocol} traffic")
        new.mode, new.inferred_reason = "unknown", reason
        self.index_spi(new, spi)
        self.attach_flow(flow, new)
        self._inferred_ids.add(new.id)
        self._inferred_fifo.append(new)
        self.emit("child_sa_created", flow.first_ts, child_sa=new.id, ike_sa=new.ike_sa, spi_r=spi, inferred=True)
        return new

    def add_inferred(self, child: ChildSa, ts: float, window: float) -> None:
        """File a new INFERRED CHILD SA (one flow so far) as waiting ``window`` s for its opposite
        flow, then apply the cap on inferred SAs."""
        dq = self._half_inferred.setdefault((child.initiator, child.responder, child.protocol), deque())
        # A one-way stream never asks for its reverse: trim here too, or the list only grows.
        while dq and (dq[0].spi_i is not None or (dq[0].created_ts or 0.0) < ts - window
                      or self.table.child_sas.get(dq[0].id) is not dq[0]):
            dq.popleft()
        dq.append(child)
        self._inferred_ids.add(child.id)
        self._inferred_fifo.append(child)
        if self.max_inferred is not None:
            while len(self._inferred_ids) > self.max_inferred and self._forget_one_inferred(ts, child):
                pass

    def _forget_one_inferred(self, ts: float, keep: ChildSa) -> bool:
        """Forget the oldest idle INFERRED CHILD SA (or, when the few oldest are all busy, the oldest
        of them). Looks at no more than 8 entries, so the cost per new SA stays constant."""
        fifo, ids = self._inferred_fifo, self._inferred_ids
        busy: list[ChildSa] = []
        victim = None
        while fifo and len(busy) < 8:
            c = fifo.popleft()
            if c.id not in ids or self.table.child_sas.get(c.id) is not c:
                continue  # no longer inferred (negotiated, deleted) or already dropped
            if c is keep:
                busy.append(c)
                continue
            last = max((f.last_ts or f.first_ts or 0.0 for f in self.table.child_flows.get(c.id, ())), default=0.0)
            if last < ts - self.inferred_idle:
                victim = c
                break
            busy.append(c)
        if victim is None:
            victim = next((c for c in busy if c is not keep), None)
            if victim is not None:
                busy.remove(victim)
        fifo.extend(busy)  # spared ones go to the back (second chance)
        if victim is None:
            return False
        self._forget_inferred_counted(victim, ts)
        return True

    def _forget_inferred_counted(self, c: ChildSa, now: float) -> None:
        self._inferred_ids.discard(c.id)
        self.forget_inferred(c)
        self.inferred_forgotten += 1
        self._count("inferred_forgotten", self.inferred_forgotten, now, total=True)

    def drop_inferred(self, child: ChildSa) -> None:
        self.table.child_sas.pop(child.id, None)
        self._inferred_ids.discard(child.id)
        ike = self.ike_sa_of(child)
        if ike is not None and child.id in ike.children:
            ike.children.remove(child.id)
        for spi in (child.spi_i, child.spi_r):
            if spi is not None:
                self.unindex_spi(child, spi)

    def forget_inferred(self, child: ChildSa) -> None:
        """Drop an INFERRED CHILD SA and its flows entirely (live mode's cap on inferred SAs)."""
        self.nat.forget(f"child:{child.id}")
        hkey = (child.initiator, child.responder, child.protocol)
        dq = self._half_inferred.get(hkey)
        if dq is not None:
            if child in dq:
                dq.remove(child)
            if not dq:
                del self._half_inferred[hkey]
        for flow in self.table.child_flows.pop(child.id, []):
            self.table.flows.pop(flow.key, None)
            self.seq_trackers.pop(flow.key, None)
            sid = (flow.dst, flow.protocol, flow.spi)
            lst = self._sa_flows.get(sid)
            if lst is not None and flow in lst:
                lst.remove(flow)
                if not lst:
                    del self._sa_flows[sid]
        self.drop_inferred(child)

