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

A copy follows its *original* within the gap, and a capture point makes only a few: one per extra
path the packet is captured on (a mirror of both directions: 1; ``-i any`` on a VLAN of a bond in a
bridge: 3). Copies are timed from the original, never from the copy before them, and at most
``MAX_CAPTURE_COPIES`` are taken per original: otherwise a flood of one identical packet (a DoS or
replay tool re-sending the same bytes every few microseconds, e.g. THC denial6's AH flood) chains
into "one packet, sent once, captured 35000 times", which hides the replay and makes the flow's rate
that of a single packet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..model.ike import IkeMessage
    from ..model.sa import IkeExchange

# s: a copy this soon after the first is the capture's own (IKE and ESP/AH share it)
CAPTURE_DUP_GAP = 0.02
MAX_CAPTURE_COPIES = 3  # copies of one original the capture can make (sightings - 1)
_EVIDENCE = 6  # first copies' frames kept per exchange


def ike_capture_copy(seen: dict, key: object, x: IkeExchange, msg: IkeMessage) -> bool:
    """Whether ``msg``, byte-identical to the message last filed under ``key`` (the caller compares
    the bytes: IKEv2 keeps them, IKEv1 keys by their hash), is the capture's copy of it, counted on
    ``x`` as such; else it is the sender's retransmission, the caller's to count. ``seen`` maps
    ``key`` to its original's time (state/ikev1 and state/ikev2 file a new message's as a float)
    or to (that time, copies taken so far), updated here: a retransmission is a new original, so a
    retransmission captured twice has its own copy."""
    prev = seen.get(key)
    t0, n = prev if isinstance(prev, tuple) else (prev, 0)
    if t0 is None or abs(msg.ts - t0) >= CAPTURE_DUP_GAP:
        seen[key] = msg.ts  # the sender's own: the original later copies are timed from
        return False
    if n >= MAX_CAPTURE_COPIES:
        return False  # more sightings than capture paths: the sender repeats itself (a flood)
    seen[key] = (t0, n + 1)
    x.capture_duplicates += 1
    if len(x.duplicate_frames) < _EVIDENCE:
        x.duplicate_frames.append(msg.frame)
    return True
