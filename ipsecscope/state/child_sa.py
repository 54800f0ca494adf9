"""CHILD SA helpers: traffic selectors, inner-packet checks, SPI binding, IKEv1 ID → selector."""

from __future__ import annotations

import ipaddress
import struct

from ..model.ike import IdPayload, TrafficSelector
from ..model.sa import ChildSa

_IP4 = struct.Struct("!BBHHHBBH4s4s")


def ts_contains(ts: TrafficSelector, addr: str, proto: int, port: int | None) -> bool:
    """Does one selector cover (addr, proto, port)? Port None = not known (non-TCP/UDP/SCTP)."""
    try:
        a = ipaddress.ip_address(addr)
        lo = ipaddress.ip_address(ts.start_addr)
        hi = ipaddress.ip_address(ts.end_addr)
    except ValueError:
        return True  # a selector we cannot read never produces a false alarm
    if a.version != lo.version or not (lo <= a <= hi):
        return False
    if ts.ip_proto and proto != ts.ip_proto:
        return False
    if port is not None and not (ts.start_port <= port <= ts.end_port):
        # RFC 4301 §4.4.1.1: OPAQUE (start > end) selectors match packets without ports.
        return ts.start_port > ts.end_port
    return True


def any_contains(sels: tuple[TrafficSelector, ...], addr: str, proto: int, port: int | None) -> bool:
    return any(ts_contains(t, addr, proto, port) for t in sels)


def inner_5tuple(inner: bytes, next_header: int | None) -> tuple[str, str, int, int | None, int | None] | None:
    """(src, dst, proto, sport, dport) of a decrypted tunnel-mode inner packet, or None.

    Transport mode (next header = TCP/UDP/...) has no inner addresses: the outer ones apply.
    """
    if not inner:
        return None
    ver = inner[0] >> 4
    try:
        if ver == 4 and next_header in (None, 4) and len(inner) >= 20:
            ihl = (inner[0] & 0x0F) * 4
            proto = inner[9]
            src = str(ipaddress.IPv4Address(inner[12:16]))
            dst = str(ipaddress.IPv4Address(inner[16:20]))
            frag_off = struct.unpack_from("!H", inner, 6)[0] & 0x1FFF
            sport = dport = None
            if proto in (6, 17, 132) and frag_off == 0 and len(inner) >= ihl + 4:
                sport, dport = struct.unpack_from("!HH", inner, ihl)
            return src, dst, proto, sport, dport
        if ver == 6 and next_header in (None, 41) and len(inner) >= 40:
            proto = inner[6]
            src = str(ipaddress.IPv6Address(inner[8:24]))
            dst = str(ipaddress.IPv6Address(inner[24:40]))
            sport = dport = None
            if proto in (6, 17, 132) and len(inner) >= 44:
                sport, dport = struct.unpack_from("!HH", inner, 40)
            return src, dst, proto, sport, dport
    except (ValueError, struct.error):
        return None
    return None


def v1_id_selector(p: IdPayload) -> TrafficSelector | None:
    """IKEv1 Quick Mode IDci/IDcr (RFC 2407 §4.6.2) as a traffic selector."""
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
    if spi == child.spi_r and spi != child.spi_i:
        return "i2r"
    if spi == child.spi_i and spi != child.spi_r:
        return "r2i"
    if src == child.initiator or dst == child.responder:
        return "i2r"
    return "r2i"
