"""Copies the capture point makes: one packet seen twice, a few microseconds apart.

A bridge and its port, ``-i any`` with a VLAN device, or a mirror (SPAN) of both directions hands
the capture each packet twice. Such a copy has the same bytes as its original and follows it within
``CAPTURE_DUP_GAP``. Senders never repeat themselves that fast: IKE re-sends a message after a
timeout of seconds (RFC 7296 §2.1; IKEv1 leaves the timer to the implementation, which uses the
same one for both versions: strongSwan 4 s, libreswan 0.5 s), and ESP/AH are never re-sent at all
(RFC 4303 §3.4.3: a receiver drops a repeated number). So a byte-identical copy
within the gap is the capture's own, counted apart from retransmissions and replays; IKEv1
(state/ikev1) and IKEv2 (state/ikev2) file their copies through :func:`ike_capture_copy`, ESP/AH
flows through state/esp_flow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..model.ike import IkeMessage
    from ..model.sa import IkeExchange

# s: a copy this soon after the first is the capture's own (IKE and ESP/AH share it)
CAPTURE_DUP_GAP = 0.02
_EVIDENCE = 6  # first copies' frames kept per exchange


def ike_capture_copy(seen: dict, key: object, x: IkeExchange, msg: IkeMessage) -> bool:
    """Whether ``msg``, byte-identical to the message last filed under ``key`` (the caller compares
    the bytes: IKEv2 keeps them, IKEv1 keys by their hash), is the capture's copy of it, counted on
    ``x`` as such; else it is the sender's retransmission, the caller's to count. ``seen`` maps
    ``key`` to the latest copy's time and is updated: a retransmission captured twice has its own
    copy."""
    prev = seen.get(key)
    seen[key] = msg.ts
    if prev is None or abs(msg.ts - prev) >= CAPTURE_DUP_GAP:
        return False
    x.capture_duplicates += 1
    if len(x.duplicate_frames) < _EVIDENCE:
        x.duplicate_frames.append(msg.frame)
    return True
