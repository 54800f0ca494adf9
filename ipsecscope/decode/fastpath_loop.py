"""The one record loop of the fast ESP scanners (:mod:`~ipsecscope.decode.fastpath` for classic
pcap, :mod:`~ipsecscope.decode.fastpath_ng` for pcapng).

Both formats walk their records and then classify the frame in each the same way: Ethernet
(maybe one 802.1Q tag) or Linux cooked / IPv4 (no options, not fragmented) / ESP or UDP-4500
ESP read at fixed offsets with one precompiled struct call and aggregated per flow; plainly
non-IPsec traffic counted as other; everything else handed to the generic decoder in capture
order. The walking differs (a 16-byte record header, or pcapng blocks of several types), the
classifying does not, so one loop does both: the format is chosen by one test per record, and
the classification is written once. (A function call per frame to share it cost a fifth of the
loop: the scanners must not call anything per fast-path frame.)
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from ..capture import pcapng
from . import fastpath_base as _fp  # tunables read at call time (tests patch them there)
from .fastpath_base import _FRAME, _IP_OR_TAG, _PORTS, _UDP_ESP, _V6_MAYBE_IPSEC, _Part


class PcapHead(NamedTuple):
    """What the loop needs of a classic pcap file's header."""

    order: str  # "<" or ">"
    linktype: int
    limit: int  # the largest record length accepted (capture.pcap's rule)


@dataclass
class NgState:
    """What the scanner knows about the current pcapng section: byte order and interfaces."""

    order: str
    ifaces: list[pcapng.Interface] = field(default_factory=list)
    fast: list[bool] = field(default_factory=list)  # per interface: Ethernet with the reference clock
    ref: tuple[int, int, int] | None = None  # (mul, div, offset_s) shared by all fast interfaces
    ref_lt: int = -1  # the one link type the fast loop reads (first interface with a fast layout)

    def add_iface(self, ifc: pcapng.Interface) -> None:
        self.ifaces.append(ifc)
        clock = (ifc.mul, ifc.div, ifc.offset_s)
        if ifc.linktype in _fp.LAYOUTS and self.ref is None:
            self.ref, self.ref_lt = clock, ifc.linktype
        self.fast.append(ifc.linktype == self.ref_lt and clock == self.ref)

    def ts_ns(self, hi: int, lo: int) -> int:
        mul, div, off = self.ref or (1000, 1, 0)
        return ((hi << 32) | lo) * mul // div + off * 1_000_000_000


def scan_records(read: Callable[[int], bytes], start: int, stop: int | None, fmt: PcapHead | NgState,  # noqa: C901
                 slow_cb: Callable[[int, int, int, int, bytes, int], None] | None, max_slow_bytes: int = 0,
                 child: bool = False, pre: bytes = b"") -> _Part:
    """Walk the records from stream offset ``start`` (``pre`` = bytes already read from there) to
    ``stop`` or EOF: classic pcap records for a :class:`PcapHead`, pcapng blocks for an
    :class:`NgState` (which the section's interface blocks update).

    Fast-path ESP frames are aggregated into ``part.esp`` / ``part.udp``; every other frame goes to
    ``slow_cb(index, t1, t2, origlen, data, iface)`` or, without a callback, into ``part.slow``.
    ``(t1, t2)`` is the record's raw time: pcap (seconds, fraction), pcapng (high, low word);
    ``iface``: pcap 0; pcapng the interface, -1 = Simple Packet Block (no timestamp), -2 - n =
    obsolete Packet Block on interface n. Frame indexes are relative to ``start`` (the first
    record there is 1). ``part.first``/``last``: pcap (sec, frac), pcapng (hi, lo, iface). A
    ``child`` (the second process) gives up at a pcapng SHB or IDB (its interface table would
    be stale); otherwise a second SHB stops the scan with ``part.rest`` = the unread bytes.
    """
    part = _Part()
    ng = isinstance(fmt, NgState)
    order = fmt.order
    if ng:
        blk = struct.Struct(order + "II").unpack_from
        epbh = struct.Struct(order + "IIIIIII").unpack_from
        layout = _fp.LAYOUTS.get(fmt.ref_lt)
        fastif = fmt.fast
        hl = 12  # a block's type and length
        lfast = False
        limit = 0
    else:
        hdr = struct.Struct(order + "IIII").unpack_from
        layout = _fp.LAYOUTS.get(fmt.linktype)
        hl = 16  # a record header
        lfast = layout is not None
        limit = fmt.limit
    fast = lfast  # pcap: the same for every record; pcapng: per block, from its interface
    fr_s, ipo, vlan = layout or (_FRAME, 14, -1)
    fr = fr_s.unpack_from
    need = fr_s.size
    uesp = _UDP_ESP.unpack_from
    ports = _PORTS.unpack_from
    esp = part.esp
    udp = part.udp
    over = part.over
    maxf = _fp.MAX_FLOWS
    slow = part.slow
    idx = 0
    nother = 0
    slow_bytes = 0
    pos_base = start
    buf = b""
    p = 0
    remaining = None if stop is None else stop - start - len(pre)
    t1 = t2 = 0
    iface = 0
    first = None
    declared = True  # pcapng: whether the last packet block's interface was declared then
    pending = pre
    seen_shb = start > 0
    while True:
        if pending:
            more, pending = pending, b""
        else:
            want = _fp.READ_CHUNK if remaining is None else min(_fp.READ_CHUNK, remaining)
            more = read(want) if want > 0 else b""
            if not more:
                break
            if remaining is not None:
                remaining -= len(more)
        buf = buf[p:] + more
        pos_base += p
        p = 0
        n = len(buf)
        if first is None and not ng and n >= 16:
            first = hdr(buf, 0)[:2]
        while p + hl <= n:
            if ng:
                btype, blen = blk(buf, p)
                if btype == pcapng.SHB:  # the type reads the same in both byte orders
                    if child:  # a new section: our interface table would be stale
                        part.gave_up = True
                        return part
                    if seen_shb:
                        part.rest = buf[p:]
                        part.section_break = True
                        break
                if blen < 12 or blen & 3 or blen > pcapng.MAX_BLOCK:
                    part.error = f"block of type 0x{btype:08x} with impossible length {blen} at offset {pos_base + p}"
                    break
                e = p + blen
                if e > n:
                    part.cut_need = blen  # (only read when the file ends here: the message names it)
                    break
                if btype == 6 and blen >= 32:
                    _t, _l, iface, t1, t2, caplen, olen = epbh(buf, p)
                    o = p + 28
                    p = e
                    idx += 1
                    if caplen > blen - 32:
                        caplen = blen - 32
                    de = o + caplen
                    # an interface not declared yet has no clock: time 0, as the generic reader says
                    # (not the clock of an IDB that comes later, which the summary would use otherwise)
                    declared = iface < len(fastif)  # (fastif: one flag per declared interface)
                    if first is None:
                        first = (t1, t2, iface) if declared else (0, 0, -1)
                    fast = declared and fastif[iface]
                elif btype == pcapng.SPB and blen >= 16:
                    (olen,) = struct.unpack_from(order + "I", buf, p + 8)
                    caplen = min(olen, blen - 16)
                    if fmt.ifaces and fmt.ifaces[0].snaplen:
                        caplen = min(caplen, fmt.ifaces[0].snaplen)
                    caplen = max(caplen, 0)
                    de = p + 12 + caplen
                    t1 = t2 = 0
                    iface = -1
                    p = e
                    idx += 1
                    declared = True  # (its time: 0, interface -1)
                    if first is None:
                        first = (0, 0, -1)
                    fast = False
                elif btype == pcapng.PB and blen >= 32:
                    iface, _d, t1, t2, caplen, olen = struct.unpack_from(order + "HHIIII", buf, p + 8)
                    de = min(p + 28 + caplen, e - 4)
                    caplen = de - p - 28
                    iface = -2 - iface
                    p = e
                    idx += 1
                    declared = True
                    if first is None:
                        first = (t1, t2, iface)
                    fast = False
                elif btype == pcapng.IDB or btype == pcapng.SHB:
                    if child:
                        part.gave_up = True
                        return part
                    if btype == pcapng.SHB:
                        seen_shb = True
                    elif blen >= 20:
                        fmt.add_iface(pcapng._parse_idb(buf[p + 8:e - 4], order))
                        fr_s, ipo, vlan = _fp.LAYOUTS.get(fmt.ref_lt, (_FRAME, 14, -1))  # the first IDB sets it
                        fr = fr_s.unpack_from
                        need = fr_s.size
                    else:
                        part.error = f"interface description block too short ({blen} bytes) at offset {pos_base + p}"
                        break
                    p = e
                    continue
                elif btype == 6 or btype == pcapng.SPB or btype == pcapng.PB:
                    part.error = f"packet block too short ({blen} bytes) at offset {pos_base + p}"
                    break
                else:  # DSB, NRB, ISB, custom: nothing for the summary
                    p = e
                    continue
            else:
                # (a cut-off record is not counted, so its time must not become the last one: it is
                # read into s2/f2 and taken as t1/t2 only once the whole record is there)
                s2, f2, caplen, olen = hdr(buf, p)
                if caplen > limit:
                    part.error = (f"record {idx + 1} at offset {pos_base + p} claims {caplen} bytes "
                                  f"(more than the {limit}-byte maximum)")
                    break
                o = p + 16
                de = o + caplen
                if de > n:
                    part.cut_need = 16 + caplen  # (only read when the file ends here: the message names it)
                    break
                t1 = s2
                t2 = f2
                idx += 1
                p = de
            if fast and caplen >= need:
                et, vihl, tot, ff, proto, key, seq = fr(buf, o)
                if et == vlan and caplen >= need + 4:  # one 802.1Q tag
                    o += 4
                    et, vihl, tot, ff, proto, key, seq = fr(buf, o)
                if et == 0x0800 and vihl == 0x45 and not ff & 0x3FFF and 28 <= tot <= de - o - ipo:
                    if proto == 50:
                        rec = esp.get(key)
                        if rec is None:
                            if len(esp) + len(udp) < maxf:  # bounded per-flow state (fastpath_base.MAX_FLOWS)
                                esp[key] = [1, tot - 20, t1, t2, t1, t2, seq, seq, idx, idx]
                            else:
                                over[0] += 1
                                over[1] += tot - 20
                        else:
                            rec[0] += 1
                            rec[1] += tot - 20
                            rec[4] = t1
                            rec[5] = t2
                            if seq > rec[7]:
                                rec[7] = seq
                            elif seq < rec[6]:
                                rec[6] = seq
                            rec[9] = idx
                        continue
                    if proto == 17:
                        if tot < 36:
                            pass  # short UDP: let the generic decoder judge it
                        else:
                            sport, dport, ulen, spi, seq = uesp(buf, o + ipo + 20)
                            if sport == 4500 or dport == 4500:
                                # RFC 3948 §2: SPI 0 is the non-ESP marker (IKE) and a 1-byte payload
                                # may be a keepalive; those, and odd lengths, go to the generic decoder.
                                if spi and ulen >= 16 and ulen == tot - 20 and sport != 500 and dport != 500:
                                    k2 = (key, spi)
                                    rec = udp.get(k2)
                                    if rec is None:
                                        if len(esp) + len(udp) < maxf:  # bounded per-flow state (fastpath_base.MAX_FLOWS)
                                            udp[k2] = [1, ulen - 8, t1, t2, t1, t2, seq, seq, idx, idx]
                                        else:
                                            over[0] += 1
                                            over[1] += ulen - 8
                                    else:
                                        rec[0] += 1
                                        rec[1] += ulen - 8
                                        rec[4] = t1
                                        rec[5] = t2
                                        if seq > rec[7]:
                                            rec[7] = seq
                                        elif seq < rec[6]:
                                            rec[6] = seq
                                        rec[9] = idx
                                    continue
                            elif (sport != 500 and dport != 500 and dport != 4789 and dport != 6081
                                  and dport != 2152):
                                nother += 1  # (VXLAN, Geneve, GTP-U: decode.tunnel opens them)
                                continue
                    elif proto == 6:
                        # TCP: only port 4500 can be RFC 8229; the rest is not ours (the generic decoder
                        # checks the same: a 20-byte header, then the ports).
                        if tot >= 40:
                            sport, dport = ports(buf, o + ipo + 20)
                            if sport != 4500 and dport != 4500:
                                nother += 1
                                continue
                    elif proto != 51 and proto != 4 and proto != 41 and proto != 47:
                        nother += 1  # (AH, and tunnels that may carry IPsec: decode.tunnel)
                        continue
                elif et == 0x86DD:
                    # IPv6 that is plainly not IPsec (no extension headers, consistent payload length):
                    # counted as other here, as the generic decoder would; anything else goes there.
                    b = o + ipo
                    if de - b >= 48 and buf[b] >> 4 == 6:
                        plen = (buf[b + 4] << 8) | buf[b + 5]
                        nh = buf[b + 6]
                        if 8 <= plen <= de - b - 40:
                            if nh == 17:
                                sport, dport = ports(buf, b + 40)
                                if (sport != 500 and sport != 4500 and dport != 500 and dport != 4500
                                        and dport != 4789 and dport != 6081 and dport != 2152):
                                    nother += 1
                                    continue
                            elif nh == 6:
                                if plen >= 20:
                                    sport, dport = ports(buf, b + 40)
                                    if sport != 4500 and dport != 4500:
                                        nother += 1
                                        continue
                            elif nh not in _V6_MAYBE_IPSEC:
                                nother += 1
                                continue
                elif et not in _IP_OR_TAG and et != vlan:
                    nother += 1  # ARP, LLDP, ...: not IP at all
                    continue
            # Everything else: the generic decoder.
            data = buf[de - caplen:de]  # (the frame: caplen bytes up to de)
            if slow_cb is not None:
                slow_cb(idx, t1, t2, olen, data, iface)
            else:
                slow.append((idx, t1, t2, olen, data, iface))
                slow_bytes += len(data)
                if max_slow_bytes and slow_bytes > max_slow_bytes:
                    part.gave_up = True
                    return part
        if part.error or part.section_break:
            break
    part.frames = idx
    # every fast-path packet is counted in exactly one flow record: no per-packet counter needed
    part.fast = sum(r[0] for r in esp.values()) + sum(r[0] for r in udp.values()) + over[0]
    part.other = nother
    part.end = pos_base + p
    part.leftover = 0 if part.section_break else len(buf) - p
    part.slow_bytes = slow_bytes
    if ng:
        part.first = first
        part.last = None if not idx else (t1, t2, iface) if declared else (0, 0, -1)
    else:
        part.first = first if idx else None
        part.last = (t1, t2) if idx else None
    return part
