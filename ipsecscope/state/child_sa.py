"""CHILD SA helpers: traffic selectors, inner-packet checks, SPI binding, IKEv1 ID → selector."""

from __future__ import annotations

import ipaddress
import struct
from typing import TYPE_CHECKING

from ..model.sa import ChildSa

if TYPE_CHECKING:  # (the IKE model loads with the first IKE message: state.tracker.on_ike)
    from ..model.ike import IdPayload, IkeMessage, TrafficSelector

_PORTS = struct.Struct("!HH")


# A selector as integers (RFC 7296 §3.13.1: an address range, an IP protocol where 0 = any, a
# port range where start > end = OPAQUE): (IP version, first, last address, protocol, first, last
# port). The per-packet check compares ints; ``ipaddress`` parses each selector once per CHILD SA.
Range = tuple[int, int, int, int, int, int]


def compile_selectors(sels: tuple[TrafficSelector, ...]) -> tuple[Range, ...] | None:
    """``sels`` as integer ranges; None = covers every packet (one selector we cannot read
    never produces a false alarm, so the list it is in covers everything)."""
    out = []
    for ts in sels:
        try:
            lo = ipaddress.ip_address(ts.start_addr)
            hi = ipaddress.ip_address(ts.end_addr)
        except ValueError:
            return None
        if lo.version != hi.version:
            return None
        out.append((lo.version, int(lo), int(hi), ts.ip_proto, ts.start_port, ts.end_port))
    return tuple(out)


def selector_ranges(child: ChildSa) -> tuple[tuple[Range, ...] | None, tuple[Range, ...] | None]:
    """(ts_i, ts_r) of ``child`` as integer ranges, compiled once per selector tuple."""
    c = child.ts_ranges
    if c is None or c[0] is not child.ts_i or c[1] is not child.ts_r:
        c = child.ts_ranges = (child.ts_i, child.ts_r, compile_selectors(child.ts_i), compile_selectors(child.ts_r))
    return c[2], c[3]


def ranges_cover(ranges: tuple[Range, ...] | None, ver: int, addr: int, proto: int, port: int | None) -> bool:
    """Does one of ``ranges`` cover (addr, proto, port)? Port None = not known (no TCP/UDP/SCTP
    header: another protocol, or a non-first fragment)."""
    if ranges is None:
        return True
    for v, lo, hi, p, sp, ep in ranges:
        if v != ver or not lo <= addr <= hi or (p and proto != p):
            continue
        if port is not None and not sp <= port <= ep:
            if sp > ep:  # RFC 4301 §4.4.1.1: OPAQUE selectors match packets without ports
                return True
            continue
        return True
    return False


def inner_fields(inner: bytes, next_header: int | None) -> tuple[int, int, int, int, int | None, int | None] | None:
    """(IP version, src, dst as ints, proto, sport, dport) of a decrypted tunnel-mode inner
    packet, or None. Transport mode (next header = TCP/UDP/...) has no inner addresses."""
    if not inner:
        return None
    ver = inner[0] >> 4
    if ver == 4 and next_header in (None, 4) and len(inner) >= 20:
        ihl = (inner[0] & 0x0F) * 4
        proto = inner[9]
        sport = dport = None
        # ports only in a first fragment (fragment offset 0, RFC 791)
        if proto in (6, 17, 132) and not (inner[6] & 0x1F or inner[7]) and len(inner) >= ihl + 4:
            sport, dport = _PORTS.unpack_from(inner, ihl)
        return 4, int.from_bytes(inner[12:16], "big"), int.from_bytes(inner[16:20], "big"), proto, sport, dport
    if ver == 6 and next_header in (None, 41) and len(inner) >= 40:
        proto = inner[6]
        sport = dport = None
        if proto in (6, 17, 132) and len(inner) >= 44:
            sport, dport = _PORTS.unpack_from(inner, 40)
        return 6, int.from_bytes(inner[8:24], "big"), int.from_bytes(inner[24:40], "big"), proto, sport, dport
    return None


def address_text(ver: int, addr: int) -> str:
    return str(ipaddress.IPv4Address(addr) if ver == 4 else ipaddress.IPv6Address(addr))


def sa_unreadable(msg: IkeMessage) -> bool:
    """``msg`` carries an SA payload the decoder kept undecoded (its fields contradict the RFC:
    an SPI of the wrong size, an unassigned protocol; the message is marked malformed). The answer's
    choice is then unknown: not a refusal ("no SA in response") and not an agreement."""
    from ..model.ike import Payload  # loaded by now: msg is an IkeMessage

    sa_type = 33 if msg.header.major == 2 else 1  # IKEv2 SA (RFC 7296 §3.2), ISAKMP SA (RFC 2408 §3.1)
    return msg.malformed is not None and any(type(p) is Payload and p.type == sa_type for p in msg.all_payloads())


def v1_id_selector(p: IdPayload) -> TrafficSelector | None:
    """IKEv1 Quick Mode IDci/IDcr (RFC 2407 §4.6.2) as a traffic selector."""
    from ..model.ike import TrafficSelector

    d = p.data
    proto = p.protocol or 0
    port = p.port or 0
    sp, ep = (port, port) if port else (0, 65535)
    try:
        if p.id_type == 1 and len(d) >= 4:  # ID_IPV4_ADDR
            a = str(ipaddress.IPv4Address(d[:4]))
            return TrafficSelector(7, proto, sp, ep, a, a)
        if p.id_type == 4 and len(d) >= 8:  # ID_IPV4_ADDR_SUBNET
            net = ipaddress.IPv4Network((d[:4], str(ipaddress.IPv4Address(d[4:8]))), strict=False)
            return TrafficSelector(7, proto, sp, ep, str(net.network_address), str(net.broadcast_address))
        if p.id_type == 7 and len(d) >= 8:  # ID_IPV4_ADDR_RANGE
            return TrafficSelector(7, proto, sp, ep, str(ipaddress.IPv4Address(d[:4])),
                                   str(ipaddress.IPv4Address(d[4:8])))
        if p.id_type == 5 and len(d) >= 16:
            a = str(ipaddress.IPv6Address(d[:16]))
            return TrafficSelector(8, proto, sp, ep, a, a)
        if p.id_type == 6 and len(d) >= 32:
            mask = int.from_bytes(d[16:32], "big")
            plen = bin(mask).count("1")
            net = ipaddress.IPv6Network((d[:16], plen), strict=False)
            return TrafficSelector(8, proto, sp, ep, str(net.network_address), str(net.broadcast_address))
        if p.id_type == 8 and len(d) >= 32:
            return TrafficSelector(8, proto, sp, ep, str(ipaddress.IPv6Address(d[:16])),
                                   str(ipaddress.IPv6Address(d[16:32])))
    except ValueError:
        return None
    return None


def ts_text(sels: tuple[TrafficSelector, ...] | list[TrafficSelector]) -> str:
    return ", ".join(str(s) for s in sels) or "(none)"


def flow_direction(child: ChildSa, src: str, dst: str, spi: int) -> str | None:
    """"i2r" / "r2i" for a flow on this CHILD SA: packets initiator→responder carry spi_r
    (the responder's inbound SPI), responder→initiator carry spi_i (RFC 7296 §2.17 naming)."""
    for _proto, spi_i, spi_r in child.spi_pairs():  # each protocol of an AH+ESP bundle
        if spi == spi_r and spi != spi_i:
            return "i2r"
        if spi == spi_i and spi != spi_r:
            return "r2i"
    if src == child.initiator or dst == child.responder:
        return "i2r"
    return "r2i"
