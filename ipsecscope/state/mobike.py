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
    notifies = msg.find(NotifyPayload)
    if any(n.notify_type == NotifyType.MOBIKE_SUPPORTED for n in notifies):
        i, r = sa.mobike_supported
        sa.mobike_supported = (True, r) if from_initiator else (i, True)
    # the first address list rides in IKE_AUTH beside MOBIKE_SUPPORTED (RFC 4555 §3.4, §3.6)
    _note_addresses(sa, notifies, "initiator" if from_initiator else "responder", msg.frame)


def _note_addresses(sa: IkeSa, notifies: list[NotifyPayload], role: str, frame: int) -> tuple[str, ...]:
    """Record a peer's list of additional addresses (RFC 4555 §3.6): its ADDITIONAL_IP4/6_ADDRESS
    notifies, or an empty list for NO_ADDITIONAL_ADDRESSES (it has no other address); nothing if
    the message carries neither. Returns the addresses."""
    addrs = tuple(a for n in notifies if (a := _address(n)) is not None)
    if addrs or any(n.notify_type == NotifyType.NO_ADDITIONAL_ADDRESSES for n in notifies):
        sa.mobike_additional.append((role, frame, addrs))
    return addrs


def informational(sa: IkeSa, msg: IkeMessage, is_response: bool) -> list[str]:
    """MOBIKE's notifies of an INFORMATIONAL message, recorded on ``sa``; returns the words for the
    exchange summary (empty when the message has none)."""
    notifies = msg.find(NotifyPayload)
    types = {n.notify_type for n in notifies}
    parts: list[str] = []
    role = "initiator" if msg.header.is_initiator else "responder"
    cookie = _cookie2(notifies)
    if NotifyType.UPDATE_SA_ADDRESSES in types and not is_response:
        upd = MobikeUpdate(peer=role, src_addr=msg.src, src_port=msg.sport, dst_addr=msg.dst, dst_port=msg.dport,
                           ts=msg.ts, frame=msg.frame, message_id=msg.header.msg_id,
                           cookie2=cookie is not None, cookie2_sent=cookie or b"")
        upd.nat_src_ok, upd.nat_dst_ok = _hashes_match(msg)
        _link_move(sa, upd)
        sa.mobike_updates.append(upd)
        parts.append(f"MOBIKE UPDATE_SA_ADDRESSES from {msg.src}")
    elif is_response:
        upd = next((u for u in reversed(sa.mobike_updates)
                    if u.message_id == msg.header.msg_id and u.peer != role and u.answered_frame is None), None)
        if upd is not None:
            upd.answered_ts, upd.answered_frame = msg.ts, msg.frame
            err = next((n for n in notifies if iana.notify_is_error(n.notify_type)), None)
            if err is not None:
                upd.error = N.notify_name(err.notify_type)
            if upd.cookie2:
                upd.cookie2_echo = _echo(upd.cookie2_sent, cookie)
            parts.append("MOBIKE update answered" + (f" with {upd.error}" if upd.error else "")
                         + (f", COOKIE2 {_ECHO_WORDS[upd.cookie2_echo]}" if upd.cookie2_echo else ""))
        chk = next((u for u in reversed(sa.mobike_updates)
                    if u.check_message_id == msg.header.msg_id and u.peer == role and u.check_frame is not None
                    and not u.check_echo), None)
        if chk is not None:
            chk.check_echo = _echo(chk.check_sent, cookie)
            parts.append(f"MOBIKE return routability check answered, COOKIE2 {_ECHO_WORDS[chk.check_echo]}")
    if cookie is not None and NotifyType.UPDATE_SA_ADDRESSES not in types and not is_response:
        # The other peer checks the mover's new address before it trusts it (RFC 4555 §3.5, §3.7):
        # a COOKIE2 request sent to where the latest update came from.
        upd = next((u for u in reversed(sa.mobike_updates) if u.peer != role and u.src_addr == msg.dst), None)
        if upd is not None and upd.check_frame is None:
            upd.check_frame, upd.check_message_id, upd.check_sent = msg.frame, msg.header.msg_id, cookie
    addrs = _note_addresses(sa, notifies, role, msg.frame)
    if addrs:
        parts.append("MOBIKE additional addresses " + ", ".join(addrs))
    if NotifyType.NO_ADDITIONAL_ADDRESSES in types and NotifyType.UPDATE_SA_ADDRESSES not in types:
        parts.append("MOBIKE no additional addresses")
    if cookie is not None and NotifyType.UPDATE_SA_ADDRESSES not in types and not is_response:
        parts.append("MOBIKE return routability check (COOKIE2)")  # RFC 4555 §3.7
    return parts


# How the answer's COOKIE2 compares with the request's (RFC 4555 §3.7), for the exchange summary
_ECHO_WORDS = {"same": "echoed", "different": "echoed differently", "missing": "not echoed"}


def _cookie2(notifies: list[NotifyPayload]) -> bytes | None:
    """The COOKIE2 data of a message (RFC 4555 §4.2.5), None without one."""
    return next((bytes(n.data) for n in notifies if n.notify_type == NotifyType.COOKIE2), None)


def _echo(sent: bytes, got: bytes | None) -> str:
    """RFC 4555 §3.7: the responder MUST copy COOKIE2 into its answer and the sender MUST check it
    is the one it sent (and close the IKE SA if not): "same", "different" or "missing"."""
    return "missing" if got is None else "same" if got == sent else "different"


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
