"""Tunnels that carry IPsec as their payload: where the IP header inside starts.

A VPN's IKE and ESP often cross a GRE or IP-in-IP tunnel before they reach the capture point,
and traffic mirrored to an analyser arrives in ERSPAN (GRE), transparent Ethernet bridging over
GRE, VXLAN (cloud traffic mirroring) or Geneve (cloud gateway load balancers). In a mobile core
every subscriber's packet crosses the backhaul in GTP-U (S1-U, N3): a phone's IMS signalling
under ESP (3GPP TS 33.203) or its own VPN is IPsec inside GTP-U. tshark dissects the IPsec inside
each; so does the decoder (``demux``), with this module telling where the inner IP header is (pure offsets over bytes; the depth is bounded
by the caller) and keeping the tunnels' headers of each frame for filters (``TunnelHops``).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator, Mapping

from . import link

IPPROTO_IPIP = 4  # IPv4 in IP (RFC 2003)
IPPROTO_IPV6 = 41  # IPv6 in IP (RFC 4213 §3.5; also 6in6, RFC 2473)
IPPROTO_GRE = 47
TUNNEL_PROTOS = frozenset((IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_GRE))
MAX_DEPTH = 4  # tunnels peeled at most per frame (a loop of nested tunnels is garbage)

GRE_TEB = 0x6558  # transparent Ethernet bridging (RFC 1701)
GRE_ERSPAN2 = 0x88BE  # ERSPAN type II: an 8-octet header, then the mirrored Ethernet frame
GRE_ERSPAN3 = 0x22EB  # ERSPAN type III: 12 octets, +8 with the platform sub-header (O bit)
VXLAN_PORT = 4789  # RFC 7348 §5 (tshark dissects this port as VXLAN)
GENEVE_PORT = 6081  # RFC 8926 §3.3
GTPU_PORT = 2152  # 3GPP TS 29.281 §4.4.2.3: a G-PDU's destination port
UDP_TUNNEL_PORTS = frozenset((VXLAN_PORT, GENEVE_PORT, GTPU_PORT))
GTP_GPDU = 0xFF  # TS 29.281 §6.1: the message type that carries a user packet (T-PDU)
# inner_ip / udp_inner's "version" of an Ethernet frame inside the tunnel that carries no IP (ARP,
# LLDP...): the offset is then the inner Ethernet header's, whose MACs tshark's columns show
ETHERNET = -2
# tunnelled frames whose tunnel headers are kept for filters (TunnelHops): 12 bytes each, so a
# capture taken entirely through a mirror session (ERSPAN, VXLAN) keeps them for 4M frames
MAX_HOP_FRAMES = 1 << 22

Hop = tuple[int, str, str, int, int, int]  # (IP version, src, dst, protocol, UDP sport, dport or 0, 0)


class TunnelHops(Mapping[int, tuple[Hop, ...]]):
    """frame -> the IP headers of the tunnels around the packet inside it, outermost first (the
    decoder's ``tunnels``): a packet inside a tunnel, IPsec or not, is found by filters on these
    headers too, as tshark's repeated ip.src / ip.proto / udp.port occurrences are. Frames come in
    increasing order (the last one may be set again: a tunnel inside a tunnel adds its outer
    header after the inner one's); kept as two flat arrays, the few distinct header tuples once
    (a tunnel's endpoints repeat on every frame it carries)."""

    def __init__(self) -> None:
        self.frames = array("q")
        self._ix = array("I")
        self._hops: list[tuple[Hop, ...]] = []
        self._hop_ix: dict[tuple[Hop, ...], int] = {}

    def __setitem__(self, frame: int, hops: tuple[Hop, ...]) -> None:
        i = self._hop_ix.get(hops)
        if i is None:
            i = self._hop_ix[hops] = len(self._hops)
            self._hops.append(hops)
        frames = self.frames
        if frames and frames[-1] == frame:
            self._ix[-1] = i
        elif not frames or frames[-1] < frame:
            self._ix.append(i)
            frames.append(frame)  # last: a reader in another thread sees whole entries only

    def __getitem__(self, frame: int) -> tuple[Hop, ...]:
        frames = self.frames
        k = len(frames) - 1 if frames and frames[-1] == frame else bisect.bisect_left(frames, frame)
        if k >= len(frames) or frames[k] != frame:
            raise KeyError(frame)
        return self._hops[self._ix[k]]

    def __iter__(self) -> Iterator[int]:
        return iter(self.frames[:len(self.frames)])

    def __len__(self) -> int:
        return len(self.frames)

    def between(self, first: int, last: int) -> dict[int, tuple[Hop, ...]]:
        """The entries of frames ``first``..``last``."""
        frames = self.frames
        i = bisect.bisect_left(frames, first)
        j = bisect.bisect_right(frames, last, i, len(frames))
        hops, ix = self._hops, self._ix
        return {frames[k]: hops[ix[k]] for k in range(i, j)}


def inner_ip(proto: int, payload: bytes) -> tuple[int, int]:
    """(IP version, offset of the inner IP header in ``payload``) for a tunnel ``proto``; the
    version is link.NOT_IP for a GRE payload that carries no IP (PPTP's PPP, keepalives, ...),
    ``ETHERNET`` for a bridged or mirrored Ethernet frame that is not IP (offset: its Ethernet
    header) and link.TRUNCATED where the tunnel header itself is cut."""
    if proto == IPPROTO_IPIP:
        return 4, 0
    if proto == IPPROTO_IPV6:
        return 6, 0
    n = len(payload)
    if n < 4:
        return link.TRUNCATED, 4
    flags = (payload[0] << 8) | payload[1]
    if flags & 7:  # version 1 is PPTP's enhanced GRE (RFC 2637): PPP inside, not ours
        return link.NOT_IP, 0
    # RFC 2784 §2.1 / RFC 2890 §2: checksum (C), key (K), sequence number (S), 4 octets each
    off = 4 + 4 * (bool(flags & 0x8000) + bool(flags & 0x2000) + bool(flags & 0x1000))
    if n < off:
        return link.TRUNCATED, off
    ptype = (payload[2] << 8) | payload[3]
    if ptype == link.ETH_IPV4:
        return 4, off
    if ptype == link.ETH_IPV6:
        return 6, off
    if ptype == GRE_ERSPAN2:
        off += 8
    elif ptype == GRE_ERSPAN3:
        if n < off + 12:
            return link.TRUNCATED, off + 12
        off += 20 if payload[off + 11] & 1 else 12
    elif ptype != GRE_TEB:
        return link.NOT_IP, off
    if n < off:
        return link.TRUNCATED, off
    return _ethernet(payload, off)


def _ethernet(data: bytes, off: int) -> tuple[int, int]:
    """(IP version, offset) of the IP packet in the Ethernet frame at ``data[off:]``, or
    (``ETHERNET``, ``off``) when that frame carries none (ARP, LLDP...)."""
    ver, at = link.ip_offset(1, data[off:])
    return (ETHERNET, off) if ver == link.NOT_IP else (ver, off + at)


def udp_inner(dport: int, udp: bytes) -> tuple[int, int]:
    """(IP version, offset of the inner IP header in ``udp``, the UDP header included) for a
    VXLAN (RFC 7348 §5: 8 octets, then an Ethernet frame), Geneve (RFC 8926 §3.4: 8 octets and
    options, then the protocol its type names) or GTP-U (``gtpu_inner``) datagram to ``dport``;
    versions other than 4 and 6 as :func:`inner_ip`'s."""
    n = len(udp)
    if n < 16:
        return link.TRUNCATED, 16
    if dport == GTPU_PORT:
        return gtpu_inner(udp)
    if dport == VXLAN_PORT:
        if not udp[8] & 0x08:  # the I flag: a VNI follows (RFC 7348 §5); without it, not VXLAN
            return link.NOT_IP, 8
        off = 16
        ptype = GRE_TEB
    else:
        if udp[8] >> 6:  # version 0 only
            return link.NOT_IP, 8
        off = 16 + (udp[8] & 0x3F) * 4
        ptype = (udp[10] << 8) | udp[11]
    if n < off:
        return link.TRUNCATED, off
    if ptype == link.ETH_IPV4:
        return 4, off
    if ptype == link.ETH_IPV6:
        return 6, off
    if ptype != GRE_TEB:
        return link.NOT_IP, off
    return _ethernet(udp, off)


def gtpu_inner(udp: bytes) -> tuple[int, int]:
    """GTP-U (3GPP TS 29.281 §5): (IP version, offset) of the user packet a G-PDU carries. The
    header is 8 octets; any of the E, S or PN flags adds 4 (sequence number, N-PDU number, next
    extension header type, §5.1), and with E a chain of extension headers follows (§5.2.1: a
    length octet in 4-octet units, the next type in each one's last octet; 5G's N3 always sends
    a PDU Session Container, TS 38.415). The T-PDU is IPv4 or IPv6 by its first nibble (a PDU
    session of type Ethernet or unstructured carries none: not IP). Echo and error messages
    (other message types) carry no user packet."""
    n = len(udp)
    flags = udp[8]
    # version 1, protocol type 1 (GTP, not GTP' charging), a G-PDU
    if flags >> 5 != 1 or not flags & 0x10 or udp[9] != GTP_GPDU:
        return link.NOT_IP, 8
    off = 16
    if flags & 0x07:
        off = 20
        if n < off:
            return link.TRUNCATED, off
        nxt = udp[19] if flags & 0x04 else 0
        while nxt:  # each header is at least 4 octets: the chain ends within the datagram
            if n <= off:
                return link.TRUNCATED, off + 1
            size = udp[off] * 4
            if not size:  # length 0 (§5.2.1 forbids it): no way to the next one
                return link.NOT_IP, off
            if n < off + size:
                return link.TRUNCATED, off + size
            nxt = udp[off + size - 1]
            off += size
    if n <= off:
        return link.TRUNCATED, off + 1
    ver = udp[off] >> 4
    return (ver, off) if ver in (4, 6) else (link.NOT_IP, off)
