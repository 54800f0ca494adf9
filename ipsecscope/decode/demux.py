"""Frame demultiplexer: RawFrame -> IkeDatagram | EspPacket | AhPacket | NatKeepalive | IcmpError | Malformed | None.

Rules (see docs/ARCHITECTURE.md):

* IP protocol 50 is ESP (RFC 4303), 51 is AH (RFC 4302), in IPv4 or after IPv6 extension headers.
* UDP port 500 is IKE, unless the other port is another well-known service's and the payload is
  no IKE header (``service_not_ike``: a DNS reply from port 53 to 500 is DNS).
* UDP port 4500 (RFC 3948 §2): a payload starting with the 4-byte zero non-ESP marker is IKE; a
  single 0xFF octet is a NAT-keepalive (§2.3); anything else is UDP-encapsulated ESP (§2.1).
* TCP (RFC 8229) on port 4500: decode/tcpencap.py (stream reassembly, gaps, overlaps, records).
* IKE on other ports is out of scope (None).
* ICMP / ICMPv6 errors quoting ESP, AH or IKE become :class:`IcmpError` (decode/icmp.py), when
  the decoder is made with ``icmp_errors=True`` (the analysis path); other consumers see "other".

The decoder is stateful (IP reassembly, TCP streams) and never raises: anything unusable comes
back as :class:`Malformed` with a one-line reason and the layer where decoding stopped.
"""

from __future__ import annotations

import socket
import struct
from array import array
from collections import Counter
from dataclasses import replace

from ..capture._fastnew import fast_constructor
from ..model.packets import (
    AhPacket,
    EspPacket,
    FragmentedEsp,
    IkeDatagram,
    Malformed,
    NatKeepalive,
    Packet,
    RawFrame,
)
from . import link, tcpencap, tunnel
from .esp import AH_HDR, ESP_HDR
from .icmp import decode_error as decode_icmp_error
from .ip import Reassembler, parse_ipv4, parse_ipv6, runs_past_frame, v6_ext_chain, v6_header_chain
from .ports import IKE_HEADER_LEN, IKE_PORT, NATT_PORT, service_not_ike

NON_ESP_MARKER = b"\x00\x00\x00\x00"

UDP_HDR = struct.Struct("!HHHH")
# Ethernet | IPv4 fields at fixed offsets: ethertype, ver/ihl, total length, flags+offset, protocol
_ETH_IP4 = struct.Struct("!12xHBxH2xHxB2x12sI")
U16 = struct.Struct("!H")

V6_EXT_NUMBERS = frozenset((0, 43, 44, 60))  # RFC 8200 §4: Hop-by-Hop, Routing, Fragment, Destination Options

_ADDR_CACHE_MAX = 1 << 16
V6_EXT_MAX = 1 << 16  # frames whose IPv6 extension headers are kept for filters (Decoder.v6_ext)

# Per-packet constructors without the frozen-dataclass __init__ cost (same objects).
_Esp = fast_constructor(EspPacket)
_Ike = fast_constructor(IkeDatagram)


def _lost_esp(upper: int, seg: bytes, missing: str) -> FragmentedEsp | None:
    """The ESP packet a datagram that never completed started, read from its first fragment (RFC
    791 §2.3, RFC 8200 §4.5: it holds the headers): ESP (IP protocol 50), or ESP in UDP on port 4500
    behind a non-zero SPI (RFC 3948 §2.2: zero is the non-ESP marker of IKE, one 0xFF octet a
    keepalive). ESP is verified after reassembly only (RFC 4303 §3.4.1), so the packet is lost to
    its receiver as it is to us (RFC 4459 §2). None for anything else."""
    off, sport, dport = 0, 0, 0
    if upper == 17:
        if len(seg) < 16:
            return None
        sport, dport, _ulen, _ck = UDP_HDR.unpack_from(seg, 0)
        if NATT_PORT not in (sport, dport) or seg[8:12] == NON_ESP_MARKER:
            return None
        off = 8
    elif upper != 50 or len(seg) < 8:
        return None
    spi, seq = ESP_HDR.unpack_from(seg, off)
    return FragmentedEsp(spi, seq, sport, dport, missing, len(seg))


class Decoder:
    """Stateful decoder; one per capture (fragment reassembly and TCP streams span frames).

    ``decode(raw)`` returns one packet; a TCP segment may complete several RFC 8229 records, and
    a fragment may make the reassembler give up an older datagram (reported as :class:`Malformed`
    on that datagram's first frame), so use ``decode_all(raw)`` to get every one of them, and
    ``flush()`` after the last frame for datagrams still incomplete. ``stats`` counts what was not IPsec
    ("not_ip", "other_ip", "ip_fragment_pending", "unsupported_linktype:<n>", ...).
    """

    def __init__(self, *, max_fragments: int = 256, fragment_timeout: float = 60.0,
                 icmp_errors: bool = False, tunnel_hops: bool = False, lost_ike: bool = False) -> None:
        """``icmp_errors``: return an :class:`IcmpError` for ICMP/ICMPv6 errors quoting IPsec
        (the analysis path wants them as evidence; counters and exports leave them "other").
        ``lost_ike``: with the Malformed of an IP datagram that never completed, also return the
        IKE message its first fragment starts (``_lost_ike``; for the analysis: counters and
        packet lists count the frame as tshark does, an unreassembled fragment).
        ``tunnel_hops``: keep every tunnelled frame's tunnel headers in ``tunnels`` (the session's
        rows and filters read them; up to 12 B a frame, so decrypt and summary, which never
        read them, keep nothing and stay flat in memory on a mirror capture)."""
        self.keep_tunnel_hops = tunnel_hops
        self.lost_ike = lost_ike
        self.reassembler = Reassembler(max_fragments, fragment_timeout)
        self.icmp_errors = icmp_errors
        self.tcp: dict[tuple, tcpencap.TcpStream] = {}  # RFC 8229 streams (decode.tcpencap)
        self.stats: Counter[str] = Counter()
        self._addr: dict[bytes, str] = {}
        # frame -> its IPv6 extension headers (ip.v6_header_chain) where IPsec sat behind some:
        # the fixed header's Next Header is then not the IPsec/UDP/TCP protocol the packet
        # says, and display filters ask for both (tshark's ipv6.nxt, ipv6.hopopts.nxt, ...).
        # Rare frames, so a dict; bounded (V6_EXT_MAX frames, counted past it).
        self.v6_ext: dict[int, tuple[tuple[int, int], ...]] = {}
        self._chains: dict[tuple, tuple] = {}
        # (src, dst, sport, dport) of the TCP connections that carried RFC 8229 records: their
        # IKE/ESP rows hold ports like UDP-encapsulated ones, and filters tell the two apart
        # (tcp.port / udp.port, ip.proto 6 / 17) by these. Few (one a connection), bounded.
        self.tcp_tuples: dict[tuple[str, str, int, int], None] = {}
        # the TCP flags (tshark's tcp.flags: NS and the 8 flag bits) of each segment that gave
        # RFC 8229 rows, by frame (increasing): two flat arrays, 10 bytes a segment, bounded
        self.tcp_flag_frames = array("q")
        self.tcp_flags = array("H")
        # frame -> the IP headers of the tunnels (GRE, IP in IP, VXLAN/Geneve, GTP-U) around the
        # IP packet inside (IPsec or not), outermost first, (version, src, dst, protocol, UDP
        # sport, dport or 0, 0) each: rows name the hosts inside, filters find the frame by the
        # tunnel's addresses too (tshark's first ip.src is the outer one). Bounded (tunnel.py).
        self.tunnels = tunnel.TunnelHops()
        # frame -> (SPI, flags) of an OpenBSD enc(4) frame (LINKTYPE_ENC): the SA whose cleartext
        # side the frame is, which its row names (decode.inner.InnerStore.info); bounded as tunnels
        self.enc: dict[int, tuple[int, int]] = {}
        # frame -> the extension headers of the tunnelled IPv6 header in front of its IPsec (the
        # row's own; v6_ext then holds the tunnel's outer header's), as v6_ext: few, bounded
        self.tunnel_v6_ext: dict[int, tuple[tuple[int, int], ...]] = {}
        # the innermost IP packet the last tunnelled frame carried, as (frame, depth, version,
        # bytes, offset of its IP header): where that packet is no IPsec the frame is an OTHER
        # row, and the session records this packet for it (the hosts talking inside the tunnel,
        # as tshark's columns and innermost fields show them; the tunnels' headers are .tunnels).
        # Version 0: an Ethernet frame that is no IP (ARP...), the offset its Ethernet header's.
        self.tunnel_inner: tuple[int, int, int, bytes, int] | None = None

    # -- helpers --------------------------------------------------------------------------------

    def _text(self, a: bytes) -> str:
        s = self._addr.get(a)
        if s is None:
            if len(self._addr) >= _ADDR_CACHE_MAX:
                self._addr.clear()
            s = socket.inet_ntoa(a) if len(a) == 4 else socket.inet_ntop(socket.AF_INET6, a)
            self._addr[a] = s
        return s

    # -- entry points -----------------------------------------------------------------------------

    def decode(self, raw: RawFrame) -> Packet | None:
        """At most one packet for ``raw``: the first one of this frame when a TCP segment completes
        several, else a report about an earlier frame (an abandoned IP datagram), else None."""
        out = self.decode_all(raw)
        if not out:
            return None
        for pkt in out:
            if pkt.frame == raw.index:
                return pkt
        return out[0]

    def decode_all(self, raw: RawFrame) -> list[Packet]:
        """Every packet ``raw`` yields: usually 0 or 1; several for a TCP segment holding many records."""
        try:
            return self._decode(raw)
        except Exception as exc:  # a decoder bug must not kill a 10 GB run; report it on the frame
            return [Malformed(raw.index, raw.ts, f"decoder error: {type(exc).__name__}: {exc}", "capture")]

    def _decode(self, raw: RawFrame) -> list[Packet]:
        data = raw.data
        lt = raw.linktype
        if lt == 1 and len(data) >= 42:
            # Shortcut for the bulk of a big capture: Ethernet / IPv4 without options or
            # fragmentation / ESP, read with one struct call (same checks as parse_ipv4).
            et, vihl, tot, ff, proto, _key, _seq = _ETH_IP4.unpack_from(data, 0)
            if et == 0x0800 and vihl == 0x45 and proto == 50 and not ff & 0x3FFF and 28 <= tot <= len(data) - 14:
                payload = data[34:14 + tot]
                spi, seq = ESP_HDR.unpack_from(payload, 0)
                return [_Esp(raw.index, raw.ts, self._text(data[26:30]), self._text(data[30:34]), spi, seq, payload,
                             0, 0, False, 4, "ip")]
        if lt < 0:
            return [Malformed(raw.index, raw.ts, f"packet refers to undeclared interface {raw.iface}", "capture")]
        ver, off = link.ip_offset(lt, data)
        if lt == 109 and len(self.enc) < tunnel.MAX_HOP_FRAMES and (hdr := link.enc_header(data)) is not None:
            self.enc[raw.index] = hdr
        self.reassembler.frame = raw.index
        if ver == 4:
            ip = parse_ipv4(data, off, self.reassembler, raw.ts, raw.orig_len > len(data))
        elif ver == 6:
            ip = parse_ipv6(data, off, self.reassembler, raw.ts, raw.orig_len > len(data))
        elif ver == link.TRUNCATED:
            name = link.LINK_NAMES.get(lt, f"link type {lt}")
            return [Malformed(raw.index, raw.ts, f"{name} header truncated ({len(data)} of {off} bytes)", "link")]
        elif ver == link.UNSUPPORTED:
            self.stats[f"unsupported_linktype:{lt}"] += 1
            return []
        else:
            self.stats["not_ip"] += 1
            return []
        past = ""
        if type(ip) is str and " exceeds the " in ip and raw.orig_len <= len(data) and runs_past_frame(data, off, ver):
            # the length field runs past the frame (not a snap-length cut): what is there is read,
            # as tshark does, and the frame is marked too (see ip.runs_past_frame)
            past = ip
            parse = parse_ipv4 if ver == 4 else parse_ipv6
            ip = parse(data, off, self.reassembler, raw.ts, True)
        if type(ip) is str:
            ip = self._ip_malformed(raw, ip, ver, off)
        out = self._after_ip(raw, ip)
        if past:
            out = self._past_frame(raw, out, past, ver, off)
        if ver == 6 and type(ip) is Malformed and ip.src and data[off + 6] in V6_EXT_NUMBERS:
            # a broken extension-header chain: tshark still shows the headers it could start,
            # each with its Next Header (the row keeps the fixed header's, Malformed.ip_proto)
            self._note_v6_ext(raw.index, data, off, partial=True)
        elif ver == 6 and (ip is None or (type(ip) is tuple and data[off + 6] != ip[3])):
            # (also for OTHER rows: a fragment held for reassembly (ip None), an MLD report behind
            # its Hop-by-Hop Router Alert)
            self._note_v6_ext(raw.index, data, off)
        if out and type(out[-1]) is Malformed and out[-1].src and out[-1].ip_proto is None:
            # An ESP/AH/UDP/TCP/IKE header broken behind a whole IP header (the last packet of a
            # segment is the only one that can be): the IP header's protocol field is readable, as
            # tshark's ip.proto / ipv6.nxt (the fixed header's, before any extension header).
            out[-1] = replace(out[-1], ip_proto=data[off + 9] if ver == 4 else data[off + 6])
        if self.reassembler.dropped:
            return self._with_dropped(out)
        return out

    def _past_frame(self, raw: RawFrame, out: list[Packet], reason: str, ver: int, off: int) -> list[Packet]:
        """The packets of a frame whose IP length runs past its end, with the IP header's malformed
        mark after them (``decode()`` returns the first: decrypt opens the ESP as tshark does). A
        broken header inside it already marks the frame: one mark, both reasons."""
        if out and type(out[-1]) is Malformed and out[-1].frame == raw.index:
            out[-1] = replace(out[-1], reason=f"{out[-1].reason}; {reason}")
            return out
        mark = self._ip_malformed(raw, reason, ver, off)
        return [*out, mark]

    def _note_v6_ext(self, frame: int, data: bytes, off: int, partial: bool = False) -> None:
        if len(self.v6_ext) >= V6_EXT_MAX:
            self.stats["v6_ext_unrecorded"] += 1
            return
        chain = v6_ext_chain(data, data[off + 6], off + 40, partial) if partial else v6_header_chain(data, off)
        if chain:
            self.v6_ext[frame] = self._chains.setdefault(chain, chain)  # one tuple per distinct chain

    def _ip_malformed(self, raw: RawFrame, reason: str, ver: int, off: int) -> Malformed:
        """A broken IP packet whose fixed header is whole (an extension header or the total
        length is what is wrong) still names its two addresses and its protocol field, as tshark
        shows them; an IPv4 total length below the header length is a header tshark reads no
        further ("Bogus IP length"), so neither does this."""
        data = raw.data
        if ver == 4 and len(data) >= off + 20 and data[off] >> 4 == 4 and data[off] & 15 >= 5:
            tot = (data[off + 2] << 8) | data[off + 3]
            if 0 < tot < (data[off] & 15) * 4:
                return Malformed(raw.index, raw.ts, reason, "ip")
            return Malformed(raw.index, raw.ts, reason, "ip", self._text(data[off + 12:off + 16]),
                             self._text(data[off + 16:off + 20]), ip_proto=data[off + 9])
        if ver == 6 and len(data) >= off + 40 and data[off] >> 4 == 6:
            return Malformed(raw.index, raw.ts, reason, "ip", self._text(data[off + 8:off + 24]),
                             self._text(data[off + 24:off + 40]), ip_proto=data[off + 6])
        return Malformed(raw.index, raw.ts, reason, "ip")

    def _with_dropped(self, out: list[Packet]) -> list[Packet]:
        dropped = [p for d in self.reassembler.dropped for p in self._lost_datagram(*d)]
        self.reassembler.dropped.clear()
        return dropped + out

    def flush(self) -> list[Packet]:
        """End of capture: a Malformed (layer "ip", on the first fragment's frame) for every
        datagram whose fragments never all arrived, after the IKE message its first fragment
        starts, if any. Call once after the last frame."""
        from .ip import flush_pending

        gaps = tcpencap.flush(self)  # RFC 8229 streams' gaps never filled, and the records after them
        return gaps + self._with_dropped([]) + [p for d in flush_pending(self.reassembler) for p in self._lost_datagram(*d)]

    def expire(self, now: float, timeout: float) -> list[Packet]:
        """While a capture is still growing: a Malformed (and the IKE message it started, as
        :meth:`flush`) for every datagram whose first fragment is older than ``timeout`` seconds
        at ``now`` with the rest still missing. Without it a live capture never gives up on them:
        the reassembler expires a datagram only when a later fragment arrives."""
        from .ip import expire_pending

        gaps = tcpencap.expire(self, now, timeout) if self.tcp else []  # RFC 8229 gaps waited on too long
        if not self.reassembler.pending:
            return gaps + self._with_dropped([]) if self.reassembler.dropped else gaps
        return gaps + self._with_dropped([]) + [p for d in expire_pending(self.reassembler, now, timeout)
                                                for p in self._lost_datagram(*d)]

    def waiting_from(self) -> int | None:
        """The earliest frame a later report may still be about: the first frame of a segment
        waiting behind an RFC 8229 stream gap (its records, and the gap's mark, are reported on
        the waiting frames when the gap fills or is given up); None when nothing waits. The
        session holds the frames from there on, so the tracker still sees them in capture order.
        (An IP datagram given up reports on its first frame too, but may wait 60 s of capture for
        its fragments, and a live view would lag as long: the tracker files that IKE message by its
        frame, state.ikev2.exchange.)"""
        first = None
        for st in self.tcp.values():
            if st.early:
                f = min(v[1] for v in st.early.values())
                if first is None or f < first:
                    first = f
        return first

    def pending_esp(self) -> list[tuple[str, str, int, int]]:
        """(src, dst, SPI, sequence number) of each ESP packet whose datagram is still being
        reassembled, read from its first fragment: a growing capture's packets in flight."""
        from .ip import _first_part

        out = []
        for key, p in self.reassembler.pending.items():
            if 0 in p.parts:
                esp = _lost_esp(*_first_part(p))
                if esp is not None:
                    out.append((self._text(key[1]), self._text(key[2]), esp.spi, esp.seq))
        return out

    def _lost_datagram(self, frame: int, ts: float, why: str, key: tuple, proto: int,
                       first: tuple[int, bytes, str] = (-1, b"", "")) -> list[Packet]:
        # key = (version, src, dst, id[, proto]): the first fragment's addresses and its own IP
        # protocol field stay on its row.
        esp = _lost_esp(*first)
        if esp is not None:  # the mark names the ESP packet lost with it (the tracker counts it per SA)
            why = f"{esp.text()} ({why})"
        enc = self.enc.get(frame) if self.enc else None
        if enc is not None:  # an enc(4) frame: the SA it is the cleartext side of, as its Info names it
            why = f"ENC SPI 0x{enc[0]:08x} ({link.enc_flags_text(enc[1])}): {why}"
        mark = Malformed(frame, ts, why, "ip", self._text(key[1]), self._text(key[2]),
                         ip_proto=None if proto < 0 else proto, esp=esp)
        ike = self._lost_ike(frame, ts, key, first[0], first[1]) if self.lost_ike and esp is None else None
        return [mark] if ike is None else [mark, ike]

    def _lost_ike(self, frame: int, ts: float, key: tuple, upper: int, seg: bytes) -> Packet | None:
        """The IKE message whose later IP fragments never came, read from the first one: it holds
        the UDP header and the IKE header (RFC 791 §2.3, RFC 8200 §4.5), so the message is known by
        its SPIs, exchange and message ID although its body is cut (the IKE decoder marks it: its
        Length says more than arrived). An IKE_AUTH whose non-first fragments a firewall drops is
        seen this way at its receiver (RFC 7383 §1): without it that exchange vanished from the
        capture's story. UDP 500, or 4500 with the non-ESP marker (RFC 3948 §2.2); else None."""
        if upper != 17 or len(seg) < 8:
            return None
        sport, dport, _ulen, _ck = UDP_HDR.unpack_from(seg, 0)
        body = seg[8:]
        if NATT_PORT in (sport, dport):
            if body[:4] != NON_ESP_MARKER or len(body) < 4 + IKE_HEADER_LEN:
                return None
            body, marker = body[4:], True
        elif IKE_PORT in (sport, dport):
            if len(body) < IKE_HEADER_LEN or service_not_ike(sport, dport, body):
                return None
            marker = False
        else:
            return None
        return _Ike(frame, ts, self._text(key[1]), self._text(key[2]), sport, dport, body, "udp", marker, True,
                    key[0])

    def _after_ip(self, raw: RawFrame, ip, depth: int = 0, head: bytes = b"") -> list[Packet]:
        """``head``: inside a tunnel, the tunnelled packet's own IP header (see ``_tunnel``)."""
        if ip is None:  # held for reassembly, or a later fragment the snap length cut (ip._cut_fragment)
            self.stats["ip_fragment_cut" if self.reassembler.cut_frame == raw.index else "ip_fragment_pending"] += 1
            return []
        if type(ip) is Malformed:
            return [ip]
        version, src, dst, proto, payload, frag = ip
        if depth < tunnel.MAX_DEPTH and (proto in tunnel.TUNNEL_PROTOS or (
                proto == 17 and len(payload) >= 4 and (payload[2] << 8 | payload[3]) in tunnel.UDP_TUNNEL_PORTS)):
            out = self._tunnel(raw, proto, payload, depth)
            ti = self.tunnel_inner
            # (an IP packet inside, IPsec or not: tshark's ip.src of the frame is this header's too)
            if self.keep_tunnel_hops and (out or (ti is not None and ti[0] == raw.index and ti[1] > depth)):
                if len(self.tunnels) < tunnel.MAX_HOP_FRAMES:
                    ports = (payload[0] << 8 | payload[1], payload[2] << 8 | payload[3]) if proto == 17 else (0, 0)
                    hop = ((version, self._text(src), self._text(dst), proto, *ports),)
                    self.tunnels[raw.index] = hop + self.tunnels.get(raw.index, ())
                else:
                    self.stats["tunnel_unrecorded"] += 1
            return out
        if proto == 50:
            if len(payload) < 8:
                return [Malformed(raw.index, raw.ts, f"ESP header truncated ({len(payload)} of 8 bytes)", "esp",
                                  self._text(src), self._text(dst), spi=_spi(payload))]
            spi, seq = ESP_HDR.unpack_from(payload, 0)
            return [_Esp(raw.index, raw.ts, self._text(src), self._text(dst), spi, seq, payload,
                         ip_version=version, ip_fragmented=frag)]
        if proto == 17:
            return self._udp(raw, version, src, dst, payload, frag)
        if proto == 51:
            return self._ah(raw, version, src, dst, payload, frag, head)
        if proto == 6:
            return self._tcp(raw, version, src, dst, payload)
        if (proto == 1 or proto == 58) and self.icmp_errors:
            err = decode_icmp_error(raw.index, raw.ts, version, src, dst, payload)
            if err is not None:
                return [err]
        self.stats["other_ip"] += 1
        return []

    def _tunnel(self, raw: RawFrame, proto: int, payload: bytes, depth: int) -> list[Packet]:
        """GRE, IP-in-IP, VXLAN or Geneve (decode.tunnel): the IPsec inside is the frame's, as
        tshark dissects it."""
        if proto == 17:
            ver, off = tunnel.udp_inner((payload[2] << 8) | payload[3], payload)
        else:
            ver, off = tunnel.inner_ip(proto, payload)
        if ver not in (4, 6):
            self.stats["other_udp" if proto == 17 else "other_ip"] += 1
            if ver == tunnel.ETHERNET:  # ARP, LLDP... bridged or mirrored: the frame tshark's columns show
                self.tunnel_inner = (raw.index, depth + 1, 0, payload, off)
            return []
        snap_cut = raw.orig_len > len(raw.data)
        parse = parse_ipv4 if ver == 4 else parse_ipv6
        ip = parse(payload, off, self.reassembler, raw.ts, snap_cut)
        if type(ip) is str:
            return [Malformed(raw.index, raw.ts, f"{ip} (inside a tunnel, IP protocol {proto})", "ip")]
        self.tunnel_inner = (raw.index, depth + 1, ver, payload, off)
        if ver == 6 and type(ip) is tuple and payload[off + 6] != ip[3] and len(self.tunnel_v6_ext) < V6_EXT_MAX:
            chain = v6_header_chain(payload, off)
            if chain:
                self.tunnel_v6_ext[raw.index] = self._chains.setdefault(chain, chain)
        head = b""
        if type(ip) is tuple and ip[3] == 51 and not ip[5]:
            # AH's ICV covers the IP header right in front of it (RFC 4302 §3.3.3): the tunnelled
            # packet's, not the frame's outer one that link.ip_offset finds (a reassembled
            # datagram's is the reassembler's first_header, the tunnelled fragment's already)
            n = len(payload) - off
            said = (payload[off + 2] << 8 | payload[off + 3]) if ver == 4 else 40 + (payload[off + 4] << 8 | payload[off + 5])
            if said <= (0 if ver == 4 else 40) or said > n:  # 0 (TSO, jumbogram) or cut by the snap length
                said = n
            head = payload[off:off + said - len(ip[4])]
        return self._after_ip(raw, ip, depth + 1, head)

    # -- transports -------------------------------------------------------------------------------

    def _udp(self, raw: RawFrame, version: int, src: bytes, dst: bytes, seg: bytes, frag: bool) -> list[Packet]:
        n = len(seg)
        if n < 8:
            return [Malformed(raw.index, raw.ts, f"UDP header truncated ({n} of 8 bytes)", "udp",
                              self._text(src), self._text(dst))]
        sport, dport, ulen, _ck = UDP_HDR.unpack_from(seg, 0)
        if sport == NATT_PORT or dport == NATT_PORT:
            port = NATT_PORT
        elif sport == IKE_PORT or dport == IKE_PORT:
            port = IKE_PORT
        else:
            self.stats["other_udp"] += 1
            return []
        s, d = self._text(src), self._text(dst)
        if ulen < 8:
            return [Malformed(raw.index, raw.ts, f"UDP length {ulen} is less than the 8-byte header", "udp",
                              s, d, sport, dport)]
        if ulen > n and raw.orig_len <= len(raw.data):
            return [Malformed(raw.index, raw.ts, f"UDP length {ulen} exceeds the {n} bytes of the datagram", "udp",
                              s, d, sport, dport)]
        body = seg[8:ulen]
        if port == IKE_PORT:
            if service_not_ike(sport, dport, body):
                self.stats["other_udp"] += 1
                return []
            if len(body) < IKE_HEADER_LEN:
                return [Malformed(raw.index, raw.ts, f"IKE header truncated ({len(body)} of 28 bytes)", "ike",
                                  s, d, sport, dport)]
            return [_Ike(raw.index, raw.ts, s, d, sport, dport, body, "udp", False, frag, version)]
        # RFC 3948 §2: tell the three kinds of UDP-4500 payload apart.
        if len(body) == 1 and body[0] == 0xFF:
            return [NatKeepalive(raw.index, raw.ts, s, d, sport, dport)]
        if body[:4] == NON_ESP_MARKER:
            if len(body) < 4 + IKE_HEADER_LEN:
                return [Malformed(raw.index, raw.ts,
                                  f"IKE header after non-ESP marker truncated ({len(body) - 4} of 28 bytes)", "ike",
                                  s, d, sport, dport)]
            return [_Ike(raw.index, raw.ts, s, d, sport, dport, body[4:], "udp", True, frag, version)]
        if len(body) < 8:
            return [Malformed(raw.index, raw.ts,
                              f"UDP-encapsulated ESP header truncated ({len(body)} of 8 bytes)", "esp",
                              s, d, sport, dport, spi=_spi(body))]
        spi, seq = ESP_HDR.unpack_from(body, 0)
        return [_Esp(raw.index, raw.ts, s, d, spi, seq, body, sport, dport, True, version, "udp", frag)]

    def _ah(self, raw: RawFrame, version: int, src: bytes, dst: bytes, seg: bytes,
            frag: bool = False, head: bytes = b"") -> list[Packet]:
        n = len(seg)
        s, d = self._text(src), self._text(dst)
        if n < 12:
            return [Malformed(raw.index, raw.ts, f"AH header truncated ({n} of 12 bytes)", "ah", s, d,
                              spi=_spi(seg[4:]))]
        nh, plen, _r, spi, seq = AH_HDR.unpack_from(seg, 0)
        total = (plen + 2) * 4  # RFC 4302 §2.2: length in 32-bit words, minus 2
        if total < 12:
            # RFC 4302 §2.2: AH is (Payload Len + 2) 32-bit words and holds at least the 12 octets
            # from Next Header to the Sequence Number (§2.1-2.5): Payload Len 0 says 8, the payload
            # then overlaps the sequence number. The SPI is read, as tshark does; the sequence
            # number is not (tshark's is the payload's first octets).
            return [Malformed(raw.index, raw.ts, f"AH payload length {plen} is shorter than the fixed header", "ah",
                              s, d, spi=spi)]
        if total > n:
            if frag or raw.orig_len <= len(raw.data):
                return [Malformed(raw.index, raw.ts, f"AH header says {total} bytes, only {n} present", "ah", s, d,
                                  spi=spi)]
            # Cut by the snap length (tcpdump -s 64 on IPv6 AH with a 16-byte ICV): the fixed part
            # (RFC 4302 §2: next header, SPI, sequence number) is whole, so the packet is its SA's,
            # as tshark reads it; its ICV is not all there, so crypto.ah finds it unverifiable (the
            # IP length says more than the frame holds), never failed.
            return [AhPacket(raw.index, raw.ts, s, d, spi, seq, nh, seg[12:n], seg, version, frag, head)]
        ah = AhPacket(raw.index, raw.ts, s, d, spi, seq, nh, seg[12:total], seg, version, frag,
                      self.reassembler.first_header if frag else head)
        if nh != 50:
            return [ah]
        # AH protecting ESP (RFC 4302 §3.1, an SA bundle of RFC 4301 §4.5: transport adjacency, or
        # ESP in tunnel mode under transport-mode AH): the ESP SA is an SA of its own, keyed by its
        # SPI and the same destination, and its packets count and decrypt like any other ESP.
        esp = seg[total:]
        if len(esp) < 8:
            return [ah, Malformed(raw.index, raw.ts, f"ESP header after AH truncated ({len(esp)} of 8 bytes)", "esp",
                                  s, d, spi=_spi(esp))]
        espi, eseq = ESP_HDR.unpack_from(esp, 0)
        return [ah, _Esp(raw.index, raw.ts, s, d, espi, eseq, esp, ip_version=version, ip_fragmented=frag)]

    def _tcp(self, raw: RawFrame, version: int, src: bytes, dst: bytes, seg: bytes) -> list[Packet]:
        return tcpencap.segment(self, raw, version, src, dst, seg)


def _spi(header: bytes) -> int | None:
    """The SPI of an ESP header cut short (RFC 4303 §2.1: its first 4 octets), when they are there:
    tshark reads it before the sequence number runs out."""
    return (header[0] << 24 | header[1] << 16 | header[2] << 8 | header[3]) if len(header) >= 4 else None


def decode_frame(raw: RawFrame, decoder: Decoder | None = None) -> Packet | None:
    """One-shot convenience (no reassembly across calls unless a ``decoder`` is passed)."""
    return (decoder or Decoder()).decode(raw)
