"""NAT rebinding: a peer's public address:port changing in the middle of an SA.

A NAT that drops a mapping (timeout, reboot, a carrier-grade NAT rebalancing) gives the peer behind
it a new public port, sometimes a new address, on its next packet. The SPIs do not change, so the
capture shows the same IKE SA and the same ESP flows coming from a new endpoint. RFC 7296 §2.23:
the other peer must then send to the endpoint the latest *authenticated* packet came from; until
it does, its packets go to the old mapping and are lost (the NAT answers with ICMP port
unreachable, or drops them).

Only NAT-T traffic is tracked (IKE on UDP 4500 after the float, ESP in UDP, RFC 3948): the move
from IKE_SA_INIT's port to the 4500 one is the float, not a rebinding. An endpoint is what a peer
*sends from*; what the other peer sends *to* says whether it followed.
"""

from __future__ import annotations

from ..model.sa import ChildSa, IkeSa, NatRebinding

EVIDENCE = 5  # frames kept per record as evidence

Endpoint = tuple[str, int]


class Rebinds:
    """The NAT-T endpoint each peer of each SA sends from, and the rebindings waiting for the other
    peer to follow. Packets reach it only when their ports differ from their flow's last ones or a
    rebinding is waiting (:attr:`watching`), so a capture without rebinding costs one test a packet."""

    __slots__ = ("current", "to_old", "to_new")

    def __init__(self) -> None:
        self.current: dict[tuple[str, str], Endpoint] = {}  # (owner key, role) -> endpoint sent from
        self.to_old: dict[Endpoint, NatRebinding] = {}  # old endpoint -> rebinding not yet followed
        self.to_new: dict[Endpoint, NatRebinding] = {}  # new endpoint -> the same

    @property
    def watching(self) -> bool:
        return bool(self.to_new)

    def source(self, owner: IkeSa | ChildSa, owner_key: str, role: str, addr: str, port: int, ts: float,
               frame: int, seen_in: str) -> NatRebinding | None:
        """``role``'s packet of ``owner`` came from ``addr:port``; a change from the last one is a rebinding."""
        key = (owner_key, role)
        new = (addr, port)
        cur = self.current.get(key)
        if cur == new:
            return None
        self.current[key] = new
        if cur is None:
            return None
        rb = NatRebinding(peer=role, old_addr=cur[0], old_port=cur[1], new_addr=addr, new_port=port, ts=ts,
                          frame=frame, seen_in=seen_in)
        owner.nat_rebindings.append(rb)
        # An earlier rebinding of this peer that was never followed: the other peer now has a newer
        # endpoint to follow (and one more stale one to send to).
        prev = self.to_new.pop(cur, None)
        if prev is not None and prev.followed_ts is None:
            self.to_old.pop((prev.old_addr, prev.old_port), None)
        self.to_new.pop(new, None)
        self.to_old.pop(new, None)  # moved back to a former endpoint: packets to it are not stale
        self.to_old[cur] = rb
        self.to_new[new] = rb
        return rb

    def destination(self, addr: str, port: int, ts: float, frame: int, via: str) -> None:
        """A packet (ESP, or an IKE request: a response goes wherever its request came from) was
        sent to ``addr:port``: to a stale endpoint, or the other peer's first to the new one."""
        ep = (addr, port)
        rb = self.to_old.get(ep)
        if rb is not None:
            rb.to_old += 1
            if len(rb.to_old_frames) < EVIDENCE:
                rb.to_old_frames.append(frame)
            return
        rb = self.to_new.pop(ep, None)
        if rb is not None:
            rb.followed_ts, rb.followed_frame, rb.followed_in = ts, frame, via
            self.to_old.pop((rb.old_addr, rb.old_port), None)

    def forget(self, owner_key: str) -> None:
        """An SA left the table (live mode's bound on inferred SAs)."""
        for role in ("initiator", "responder"):
            self.current.pop((owner_key, role), None)
