"""MOBIKE (RFC 4555): an IKEv2 peer moving its IKE SA and CHILD SAs to new addresses.

The initiator that loses its address (a roaming client, a gateway with a second uplink) sends an
INFORMATIONAL request with UPDATE_SA_ADDRESSES *from the new address*, with NAT_DETECTION_* hashes
over it and maybe COOKIE2 (RFC 4555 §3.5); the responder then moves the IKE SA and every CHILD SA
to the new address pair with the same SPIs. ADDITIONAL_IP4/6_ADDRESS and NO_ADDITIONAL_ADDRESSES
announce the other addresses a peer could be reached at (§3.6).

The move itself shows on the wire like a rebinding (the same SPIs from a new endpoint), so
state/nat.py notes it and the book files the SAs under the new address (Book.follow_peer_move);
this module records the update and marks that rebinding as MOBIKE's, not a NAT's.
"""

from __future__ import annotations

import ipaddress

from ..crypto.prf import nat_detection_hash
from ..model import iana
from ..model.iana import NotifyType
from ..model.ike import IkeMessage, NotifyPayload
from ..model.sa import IkeSa, MobikeUpdate
from . import names as N

_ADDITIONAL = {NotifyType.ADDITIONAL_IP4_ADDRESS: 4, NotifyType.ADDITIONAL_IP6_ADDRESS: 16}


def note_supported(sa: IkeSa, msg: IkeMessage, from_initiator: bool) -> None:
    """MOBIKE_SUPPORTED in IKE_AUTH (RFC 4555 §3.3): each peer says it speaks MOBIKE."""
    if any(n.notify_type == NotifyType.MOBIKE_SUPPORTED for n in msg.find(NotifyPayload)):
        i, r = sa.mobike_supported
        sa.mobike_supported = (True, r) if from_initiator else (i, True)


def informational(sa: IkeSa, msg: IkeMessage, is_response: bool) -> list[str]:
    """MOBIKE's notifies of an INFORMATIONAL message, recorded on ``sa``; returns the words for the
    exchange summary (empty when the message has none)."""
    notifies = msg.find(NotifyPayload)
    types = {n.notify_type for n in notifies}
    parts: list[str] = []
    role = "initiator" if msg.header.is_initiator else "responder"
    if NotifyType.UPDATE_SA_ADDRESSES in types and not is_response:
        upd = MobikeUpdate(peer=role, src_addr=msg.src, src_port=msg.sport, dst_addr=msg.dst, dst_port=msg.dport,
                           ts=msg.ts, frame=msg.frame, message_id=msg.header.msg_id,
                           cookie2=NotifyType.COOKIE2 in types)
        upd.nat_src_ok, upd.nat_dst_ok = _hashes_match(msg)
        _link_move(sa, upd)
        sa.mobike_updates.append(upd)
        parts.append(f"MOBIKE UPDATE_SA_ADDRESSES from {msg.src}")
    elif is_response:
        upd = next((u for u in reversed(sa.mobike_updates)
                    if u.message_id == msg.header.msg_id and u.answered_frame is None), None)
        if upd is not None:
            upd.answered_ts, upd.answered_frame = msg.ts, msg.frame
            err = next((n for n in notifies if iana.notify_is_error(n.notify_type)), None)
            if err is not None:
                upd.error = N.notify_name(err.notify_type)
            parts.append("MOBIKE update answered" + (f" with {upd.error}" if upd.error else ""))
    addrs = tuple(a for n in notifies if (a := _address(n)) is not None)
    if addrs:
        sa.mobike_additional.append((role, msg.frame, addrs))
        parts.append("MOBIKE additional addresses " + ", ".join(addrs))
    if NotifyType.NO_ADDITIONAL_ADDRESSES in types and NotifyType.UPDATE_SA_ADDRESSES not in types:
        parts.append("MOBIKE no additional addresses")
    if NotifyType.COOKIE2 in types and NotifyType.UPDATE_SA_ADDRESSES not in types and not is_response:
        parts.append("MOBIKE return routability check (COOKIE2)")  # RFC 4555 §3.7
    return parts


def _address(n: NotifyPayload) -> str | None:
    """The address an ADDITIONAL_IP4/6_ADDRESS notify carries (RFC 4555 §4.2.2); None for other
    notifies and for data of the wrong length (no address to show)."""
    size = _ADDITIONAL.get(n.notify_type)
    if size is None or len(n.data) != size:
        return None
    return str(ipaddress.ip_address(bytes(n.data)))


def nat_hashes(notifies: list[NotifyPayload], nt: int) -> list[bytes]:
    """NAT detection hashes of type ``nt`` (SHA-1, 20 octets, RFC 7296 §2.23); other data is none."""
    return [bytes(n.data) for n in notifies if n.notify_type == nt and len(n.data) == 20]


def _hashes_match(msg: IkeMessage) -> tuple[bool | None, bool | None]:
    """RFC 4555 §3.5: the update carries NAT_DETECTION_* hashes computed as in IKE_SA_INIT (RFC
    7296 §2.23) over the new addresses; whether they match what the capture shows."""
    h, notifies = msg.header, msg.find(NotifyPayload)
    src_h = nat_hashes(notifies, NotifyType.NAT_DETECTION_SOURCE_IP)
    dst_h = nat_hashes(notifies, NotifyType.NAT_DETECTION_DESTINATION_IP)
    src_ok = nat_detection_hash("sha1", h.spi_i, h.spi_r, msg.src, msg.sport) in src_h if src_h else None
    dst_ok = nat_detection_hash("sha1", h.spi_i, h.spi_r, msg.dst, msg.dport) in dst_h if dst_h else None
    return src_ok, dst_ok


def _link_move(sa: IkeSa, upd: MobikeUpdate) -> None:
    """The sender's latest move to the update's source is this update's: the rebinding state/nat.py
    saw (the path check before the update, or the update itself) becomes a MOBIKE move."""
    for rb in reversed(sa.nat_rebindings):
        if rb.peer == upd.peer and (rb.new_addr, rb.new_port) == (upd.src_addr, upd.src_port):
            if rb.mobike_frame is None:
                rb.mobike_frame = upd.frame
                upd.old_addr, upd.old_port = rb.old_addr, rb.old_port
            return
