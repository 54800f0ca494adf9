"""ICMP and ICMPv6 errors that quote an IPsec packet: the path's own word about an SA.

A router that cannot forward an ESP packet because it is larger than the next link's MTU (and
DF is set) answers "fragmentation needed" with that MTU (RFC 1191 §4; ICMPv6 "packet too big",
RFC 8201); a host or firewall that will not take it answers "port unreachable" or
"administratively prohibited". Every ICMP error quotes the offending datagram: its IP header and
at least 8 more octets (RFC 792), up to 576 octets in all (RFC 1812 §4.3.2.3, Linux does), or as
much as fits in 1280 for ICMPv6 (RFC 4443 §2.4(c)). Those 8 octets are the ESP SPI and sequence
number (RFC 4303 §2.1) — or the UDP header when ESP is UDP-encapsulated (RFC 3948 §2), so the SPI
needs a quote of 16+ octets, which every real stack sends.

:func:`decode_error` is called by the demultiplexer (``Decoder(icmp_errors=True)``) for IP
protocol 1 and 58 and returns an :class:`~ipsecscope.model.packets.IcmpError`, or None when the
message is no error or quotes nothing IPsec. Plain ``struct`` over the bytes; it runs only for
ICMP frames.
"""

from __future__ import annotations

import socket
import struct

from ..model.packets import Icmp6Type, IcmpError, IcmpType, IcmpUnreachable
from .ip import CHAIN_OK, walk_quoted_v6
from .ports import service_not_ike

_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_SPI_SEQ = struct.Struct("!II")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

# Errors that quote the datagram (RFC 792; RFC 4443 §3.1-3.4). Echo and the rest quote nothing.
ICMP_ERRORS = frozenset(int(t) for t in IcmpType)
ICMP6_ERRORS = frozenset(int(t) for t in Icmp6Type)

NATT_PORT = 4500
IKE_PORT = 500


def _text(a: bytes) -> str:
    return socket.inet_ntoa(a) if len(a) == 4 else socket.inet_ntop(socket.AF_INET6, a)


def decode_error(frame: int, ts: float, version: int, src: bytes, dst: bytes, msg: bytes) -> IcmpError | None:
    """``msg`` is the ICMP (``version`` 4) or ICMPv6 (6) message after the IP header; ``src`` and
    ``dst`` its IP addresses (raw). None unless it is an error quoting ESP, AH or IKE."""
    if len(msg) < 8:
        return None
    itype, code = msg[0], msg[1]
    mtu = 0
    if version == 4:
        if itype not in ICMP_ERRORS:
            return None
        if itype == IcmpType.DESTINATION_UNREACHABLE and code == IcmpUnreachable.FRAGMENTATION_NEEDED:
            mtu = _U16.unpack_from(msg, 6)[0]  # RFC 1191 §4: next-hop MTU in the low 16 bits
    else:
        if itype not in ICMP6_ERRORS:
            return None
        if itype == Icmp6Type.PACKET_TOO_BIG:
            mtu = _U32.unpack_from(msg, 4)[0]  # RFC 4443 §3.2
    q = msg[8:]
    quoted = _quoted(q)
    if quoted is None:
        return None
    qsrc, qdst, qlen, proto, off = quoted
    common = (frame, ts, _text(src), _text(dst), version, itype, code, mtu, _text(qsrc), _text(qdst), qlen)
    if proto in (50, 51):
        # ESP: SPI then sequence (RFC 4303 §2.1); AH: next header, length, reserved, SPI, seq (RFC 4302 §2).
        at = off if proto == 50 else off + 4
        if len(q) < at + 4:
            return None  # a quote too short to hold the SPI says nothing about an SA
        spi = _U32.unpack_from(q, at)[0]
        seq = _U32.unpack_from(q, at + 4)[0] if len(q) >= at + 8 else None
        return IcmpError(*common, "ESP" if proto == 50 else "AH", spi=spi, seq=seq)
    if proto != 17 or len(q) < off + 8:
        return None
    sport, dport, _ulen, _ck = _UDP.unpack_from(q, off)
    body = q[off + 8:]
    if NATT_PORT in (sport, dport):
        # RFC 3948 §2: four zero octets start IKE (non-ESP marker); else the SPI starts ESP.
        if body[:4] == b"\0\0\0\0":
            return IcmpError(*common, "IKE", True, sport, dport, ike_spi_i=bytes(body[4:12]))
        if len(body) < 4:
            return None
        spi = _U32.unpack_from(body, 0)[0]
        seq = _U32.unpack_from(body, 4)[0] if len(body) >= 8 else None
        return IcmpError(*common, "ESP", True, sport, dport, spi=spi, seq=seq)
    if IKE_PORT in (sport, dport):
        if service_not_ike(sport, dport, body):
            return None  # a quoted DNS reply 53 -> 500 is DNS, as the datagram itself (tshark too)
        return IcmpError(*common, "IKE", True, sport, dport, ike_spi_i=bytes(body[:8]))
    return None


def _quoted(q: bytes) -> tuple[bytes, bytes, int, int, int] | None:
    """(src, dst, total length, protocol, offset of the transport header) of the quoted IP
    datagram; None when it is not an IP header, or a non-first fragment (no transport header)."""
    n = len(q)
    if n >= 20 and q[0] >> 4 == 4:
        vihl, _tos, tot, _id, frag, _ttl, proto, _ck, s, d = _V4.unpack_from(q)
        if frag & 0x1FFF:
            return None
        return s, d, tot, proto, (vihl & 15) * 4
    if n >= 40 and q[0] >> 4 == 6:
        _vtf, plen, nh, _hl, s, d = _V6.unpack_from(q)
        # extension headers before ESP/AH/UDP (RFC 8200 §4), quoted with the packet (RFC 4443 §2.4(c))
        nh, off, chain = walk_quoted_v6(q, nh, 40, n)
        if chain != CHAIN_OK:
            return None  # cut inside the chain, or a non-first fragment: no transport header
        return s, d, plen + 40, nh, off
    return None
