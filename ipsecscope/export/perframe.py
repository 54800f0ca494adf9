"""The decrypt engine's general per-frame path and the wire form of what it writes.

:class:`FramePath` (``_frame``, ``_ah``) is a base class of :class:`~ipsecscope.export.hotloop._Worker`:
every frame its fast loops leave out comes here (IPv6, transport mode, ESN inference, failures,
--keep-other, JSON lines, AH), handing what it cannot parse to the general decoder. A base class, not
an object of its own: the loops bind ``self._frame`` once per run as before (no second hop per
call), and these methods use the worker's state (``opts``, ``dec``, ``sas``, ``buf``, the counters,
``_entry``, ``_refresh``).

The packet a decrypted payload carries, as the output file holds it (``wire_packet``,
``ip_header``, ``v6_ext_headers``), and nested ESP (``decrypt_nested``) are used by this path,
``export/general.py`` and ``export/ah.py`` (handed in), ``api.py`` and ``dissect.py``; the fast loops
only write tunnelled packets as they are.
"""

from __future__ import annotations

import _socket as socket  # socket.py's C module, the same inet_* functions: no socket.py enums (~3.7 ms CPU)
import struct

from ..crypto import esp as _esp
from ..crypto.esp import (
    MAX_NESTED,
    EspDecryptor,
    check_payload,
    esp_inside,
    payload_failure,
    trim_tfc,
)
from ..decode.ipcomp import IPCOMP, ipcomp_open
from ..errors import DecryptError
from . import jsonl as _jsonl
from .pcapng import comment_option, epb_header

_U16 = struct.Struct("!H")
_ESPH = struct.Struct("!II")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHH")

_CARRIES_ESP = frozenset((4, 41, 50))  # next headers that can carry ESP: IPv4, IPv6, ESP itself
# Frames the general decoder took without a packet of their own, remembered with their exact
# time for a record decoded later (FramePath._late; a float time has ~0.2 us steps). Bounded: a
# capture of other TCP traffic would fill it; a record whose frame fell out uses its float time.
HELD_MAX = 1 << 16  # (the tables are OrderedDicts: popitem(last=False) drops the oldest in O(1))


def late_comment(frame: int) -> str:
    """The pcapng comment of an RFC 8229 record written after later frames (FramePath._late)."""
    return (f"ipsecscope: frame {frame}: RFC 8229 record decoded late (its TCP segment waited behind a "
            "lost segment); written where the gap was given up")


def one_record(pkts: list, frame: int) -> list:
    """The decoder's packets of ``frame`` as decrypt writes them without Options.late: its marks,
    and its first packet of its own (one record a frame, as before late records were taken)."""
    from ..model.packets import Malformed

    return [p for p in pkts if type(p) is Malformed] + [
        p for p in pkts if p.frame == frame and type(p) is not Malformed][:1]


def _esp_in(inner: bytes, nh: int, src: bytes, dst: bytes) -> tuple:
    """(ESP bytes, src, dst) when a decrypted payload is (or tunnels) ESP, else (None, src, dst)."""
    found = esp_inside(inner, nh)
    if found is None:
        return None, src, dst
    esp, isrc, idst = found
    return (esp, isrc, idst) if isrc else (esp, src, dst)


def decrypt_nested(dec: EspDecryptor, seen: set, inner: bytes, nh: int, src: bytes, dst: bytes) -> tuple:
    """ESP inside ESP (a tunnel through a tunnel, or transport-mode ESP of ESP): decrypt the
    inner layers there are keys for, as tcpdump and tshark do. Returns the innermost packet
    that decrypted, its next header, the addresses around it, and one dict per inner layer
    tried (for JSON lines); a layer without keys, or one that fails, ends the descent with
    the packet that carries it (its failure counted on the inner SA). ``seen`` collects the
    inner SAs (their packets are no frames of the capture: the totals leave them out)."""
    layers: list[dict] = []
    for _depth in range(MAX_NESTED):
        esp, isrc, idst = _esp_in(inner, nh, src, dst)
        if esp is None or len(esp) < 8:
            break
        spi, seq = _ESPH.unpack_from(esp, 0)
        af = socket.AF_INET if len(isrc) == 4 else socket.AF_INET6
        s_txt, d_txt = socket.inet_ntop(af, isrc), socket.inet_ntop(af, idst)
        if dec.keys.esp_lookup(s_txt, d_txt, spi) is None:
            break  # no keys for the inner SA: the once-decrypted packet is the answer
        st = dec.state(s_txt, d_txt, spi)
        seen.add((s_txt, d_txt, spi))
        code, plain, hi = dec.open_raw(st, seq, bytes(esp))
        layer = {"spi": f"0x{spi:08x}", "src": s_txt, "dst": d_txt, "seq": (hi << 32) | seq}
        layers.append(layer)
        if code == 0:
            try:
                ilen, nh2, _pad = check_payload(plain, not st.opener.verifies)
            except DecryptError as exc:
                code, plain = _esp.STATUS.index(payload_failure(st, str(exc))), str(exc)
        layer["status"] = _esp.STATUS[code]
        if code != 0:
            layer["reason"] = plain
            break
        nh = nh2
        inner = trim_tfc(plain[:ilen], nh) if nh == 4 or nh == 41 else plain[:ilen]
        src, dst = isrc, idst
        if nh not in _CARRIES_ESP:
            break
    return inner, nh, src, dst, layers


def wire_packet(src: bytes, dst: bytes, nh: int, inner: bytes, ext: tuple = ()) -> bytes:
    """The packet a decrypted payload carries, as the output file holds it: a tunnel's inner IP
    packet as it is, a transport payload behind an IP header from the outer addresses (and, IPv6,
    the extension headers that came before ESP/AH: ``ext``, from :func:`v6_ext_headers`). An
    IPComp payload (next header 108, RFC 3173 §2) is opened first, as tshark and the views show
    it: the decrypted file holds the datagram that was compressed, not its DEFLATE stream."""
    if nh == IPCOMP:
        opened = ipcomp_open(inner)
        if opened is not None:
            inner, nh = opened
    if nh == 4 or nh == 41:
        return inner
    return ip_header(src, dst, nh, len(inner), ext) + inner


# IPv6 extension headers that may come before ESP or AH and stay in a transport-mode packet once
# ESP/AH is taken out (RFC 4303 §3.1.1, RFC 4302 §3.1.1): Hop-by-Hop, Routing, Destination Options
# (and the Fragment header, v6_ext_headers says when)
_V6_BEFORE_IPSEC = frozenset((0, 43, 60))


def v6_ext_headers(ip: bytes, off: int = 0) -> tuple:
    """The IPv6 extension headers between the fixed header at ``ip[off]`` and the ESP or AH header
    their chain leads to, as ((type, bytes), ...) for :func:`ip_header`; () when there are none,
    the chain is cut off, or it leads elsewhere (a tunnel the decoder peeled, UDP-encapsulated
    ESP). A Fragment header stays only when atomic (offset 0, M 0, RFC 6946): a datagram
    reassembled from real fragments is written whole, without one (RFC 8200 §4.5)."""
    n = len(ip)
    if n < off + 40 or ip[off] >> 4 != 6:
        return ()
    nh, p = ip[off + 6], off + 40
    out = []
    for _ in range(16):  # RFC 8200 §4.1: a handful of headers, each at most once or twice
        if nh == 50 or nh == 51:
            return tuple(out)
        if nh == 44:
            if n < p + 8:
                return ()
            if not ((ip[p + 2] << 8 | ip[p + 3]) & 0xFFF9):  # offset 0 and M 0: atomic, kept
                out.append((44, bytes(ip[p:p + 8])))
            nh, p = ip[p], p + 8
            continue
        if nh not in _V6_BEFORE_IPSEC or n < p + 2:
            return ()
        ln = (ip[p + 1] + 1) * 8
        if n < p + ln:
            return ()
        out.append((nh, bytes(ip[p:p + ln])))
        nh, p = ip[p], p + ln
    return ()


def ip_header(src: bytes, dst: bytes, nh: int, payload_len: int, ext: tuple = ()) -> bytes:
    """An IP header for a transport-mode inner payload, from the outer addresses. IPv6: with the
    extension headers ``ext`` ((type, bytes), ... from :func:`v6_ext_headers`) behind it, each
    header's Next Header naming the one after it, the last one's ``nh`` (what the ESP trailer or
    AH header named), Payload Length counting them (RFC 8200 §3-4)."""
    if len(src) == 16:
        if ext:
            chain = b"".join(bytes((ext[i + 1][0] if i + 1 < len(ext) else nh,)) + h[1:]
                             for i, (_t, h) in enumerate(ext))
            return struct.pack("!IHBB16s16s", 0x60000000, payload_len + len(chain), ext[0][0], 64, src, dst) + chain
        return struct.pack("!IHBB16s16s", 0x60000000, payload_len, nh, 64, src, dst)
    h = _IPV4.pack(0x45, 0, 20 + payload_len, 0, 0x4000, 64, nh, 0, src, dst)
    s = sum(struct.unpack("!10H", h))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return h[:10] + _U16.pack(~s & 0xFFFF) + h[12:]


class FramePath:
    """The worker's general per-frame path (see the module docstring); mixed into ``_Worker``."""

    def _frame(self, idx: int, iface: int, ts: int, frame: bytes, orig: int, off: int) -> None:  # noqa: C901
        """Everything about one frame, for every case the fast path leaves out."""
        opts = self.opts
        if opts.frames is not None and idx not in opts.frames:
            self._unselected(idx, iface, ts, frame, orig, off)
            return
        out_f = self.out_f
        keep_other = opts.keep_other and out_f is not None
        lt = self.linktypes[iface] if iface < len(self.linktypes) else -1
        if keep_other and lt < 0:  # an interface no IDB declares (damaged file): nothing to write it on
            keep_other = False
            self.n_unkept += 1
        n = len(frame)
        esp = None
        src = dst = b""
        ext: tuple = ()  # IPv6 extension headers before ESP (general path only: the fast one has none)
        from ..decode.link import ip_offset

        ver, l3 = ip_offset(lt, frame) if lt >= 0 else (0, 0)
        proto = 0
        if ver == 4 and n >= l3 + 20:
            vihl = frame[l3]
            hl = (vihl & 15) * 4
            fl = (frame[l3 + 6] << 8) | frame[l3 + 7]
            proto = frame[l3 + 9]
            if (fl & 0x3FFF) or hl < 20 or vihl >> 4 != 4:
                ver = -1  # fragment or odd header: general decoder
            else:
                tl = (frame[l3 + 2] << 8) | frame[l3 + 3]
                end_ip = min(l3 + tl, n)
                p = l3 + hl
                src, dst = frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20]
        elif ver == 6 and n >= l3 + 40:
            proto = frame[l3 + 6]
            end_ip = min(l3 + 40 + ((frame[l3 + 4] << 8) | frame[l3 + 5]), n)
            p = l3 + 40
            src, dst = frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40]
            if proto not in (50, 17, 6, 1, 58):
                ver = -1  # extension headers: general decoder
        elif ver in (4, 6):
            ver = -1
        udp_encap = False
        if ver > 0:
            from ..decode.tunnel import TUNNEL_PROTOS, UDP_TUNNEL_PORTS

            if proto == 50:
                esp = frame[p:end_ip]
            elif proto in TUNNEL_PROTOS:
                ver = -1  # GRE, IP-in-IP: the general decoder peels the tunnel (decode/tunnel.py)
            elif proto == 17 and end_ip - p >= 8:
                sport, dport, _ulen = _UDP.unpack_from(frame, p)
                if sport in UDP_TUNNEL_PORTS or dport in UDP_TUNNEL_PORTS:
                    ver = -1  # VXLAN, Geneve: as GRE
                elif sport == 4500 or dport == 4500:
                    pay = frame[p + 8:end_ip]
                    # RFC 3948 §2.2-2.3: 0xFF = keepalive, 4 zero bytes = IKE, else ESP
                    if len(pay) >= 8 and pay[:4] != b"\0\0\0\0":
                        esp = pay
                        udp_encap = True
            elif proto == 6:
                ver = -1  # RFC 8229 TCP encapsulation needs stream reassembly
            elif proto == 51:
                ver = -1  # AH: decoded in full (fragments too), then export/ah.py
        if ver == -1:
            self.general += 1
            self._decoded(idx, iface, ts, frame, orig, lt, l3, keep_other,
                          self._decode_all(idx, iface, ts, frame, orig, lt, off))
            return
        if esp is None or len(esp) < 8:
            self._other(iface, ts, frame, orig, keep_other)
            return
        self._esp(idx, iface, ts, frame, orig, esp, src, dst, udp_encap, ext, keep_other)

    def _unselected(self, idx: int, iface: int, ts: int, frame: bytes, orig: int, off: int) -> None:
        """A frame a display filter did not select (decrypt -Y): nothing of its own is written, but
        the decoder reads it all the same, as the session that selected the frames did: an RFC 8229
        record or an IP datagram a selected frame completes began in earlier frames (without them
        the stream has gaps that are not in the capture). Records of selected frames it gives up
        late are written (:meth:`_late`), marks on selected frames counted."""
        from ..decode.link import ip_offset
        from ..model.packets import Malformed

        lt = self.linktypes[iface] if iface < len(self.linktypes) else -1
        if lt < 0 or ip_offset(lt, frame)[0] not in (4, 6):
            return
        for pkt in self._decode_all(idx, iface, ts, frame, orig, lt, off):
            if pkt.frame != idx:
                if type(pkt) is Malformed:
                    self._mark(pkt)
                else:
                    self._late(pkt)

    def _decode_all(self, idx: int, iface: int, ts: int, frame: bytes, orig: int, lt: int, off: int) -> list:
        """The general decoder's packets of frame ``idx`` (the decoder made at the first such frame)."""
        from ..model.packets import RawFrame

        if self.decoder is None:
            from ..decode.demux import Decoder

            self.decoder = Decoder()
        return self.decoder.decode_all(RawFrame(idx, ts / 1e9, ts, lt, bytes(frame), orig, iface, off))

    def _mark(self, pkt) -> None:
        """A decoder's malformed mark counted by layer, if its frame is one decrypt -Y selected."""
        sel = self.opts.frames
        if sel is None or pkt.frame in sel:
            self.marks[pkt.layer] = self.marks.get(pkt.layer, 0) + 1

    def _epb(self, iface: int, ts: int, data: bytes, orig: int, comment: str = "") -> None:
        """One Enhanced Packet Block into the output buffer (``comment``: its opt_comment)."""
        app = self.buf.append
        optb = comment_option(comment) if comment else b""
        h, t = epb_header(iface, ts, len(data), orig, len(optb))
        app(h)
        app(data)
        if optb:
            app(t[:-4])
            app(optb)
            app(t[-4:])
        else:
            app(t)

    def _other(self, iface: int, ts: int, frame: bytes, orig: int, keep_other: bool) -> None:
        """A frame with no ESP of its own: counted, and written as captured under --keep-other."""
        self.n_other += 1
        if keep_other:
            self.n_kept += 1
            self._epb(1 + iface, ts, frame, orig)

    def _decoded(self, idx: int, iface: int, ts: int, frame: bytes, orig: int, lt: int, l3: int, keep_other: bool,
                 pkts: list) -> None:
        """What the general decoder made of frame ``idx``: usually one packet or none; several for
        a TCP segment completing several RFC 8229 records; marks (Malformed) counted by layer; and
        records of earlier frames whose segments waited behind a TCP gap given up now (overflow,
        FIN/RST: :meth:`_late`)."""
        from ..model.packets import AhPacket, EspPacket, Malformed

        own = behind_ah = False
        if not self.opts.late:  # one record a frame (Options.late): its first packet, as before
            pkts = one_record(pkts, idx)
        for pkt in pkts:
            t = type(pkt)
            if t is Malformed:
                self._mark(pkt)
                continue
            if t is not EspPacket and t is not AhPacket:
                continue
            if pkt.frame != idx:
                self._late(pkt)
                continue
            if t is EspPacket and behind_ah:  # the ESP an AH packet protects: _ah gave it (unless AH failed)
                behind_ah = False
                continue
            esp = None
            if t is AhPacket:
                behind_ah = True
                if not self.opts.ah:  # AH frames are other frames, as captured
                    continue
                own = True
                # its record and payload; an ESP packet it protects goes on below
                esp = self._ah(idx, iface, ts, frame, orig, lt, pkt)
                if esp is None:
                    continue
            esp = pkt.data if esp is None else esp
            af = socket.AF_INET6 if ":" in pkt.src else socket.AF_INET
            src, dst = socket.inet_pton(af, pkt.src), socket.inet_pton(af, pkt.dst)
            udp_encap = t is EspPacket and pkt.udp_encap
            ext: tuple = ()
            if af == socket.AF_INET6 and not udp_encap and frame[l3 + 8:l3 + 40] == src + dst:
                ext = v6_ext_headers(frame, l3)  # kept in a transport-mode output packet
            if len(esp) < 8:  # (an ESP packet the AH one protects, cut short: its frame is other)
                continue
            own = True
            self._esp(idx, iface, ts, frame, orig, esp, src, dst, udp_encap, ext, keep_other)
        if own:
            return
        held = self.held  # its records may come later (decode.tcpencap): their time, exactly
        if len(held) >= HELD_MAX:
            held.popitem(last=False)  # (an OrderedDict: a dict's oldest key is O(n) to find after deletions)
        held[idx] = ts
        self._other(iface, ts, frame, orig, keep_other)

    def _late(self, pkt) -> None:
        """An ESP record of an earlier frame, decoded only now: its RFC 8229 segment waited behind
        a TCP gap that the decoder gave up (a lost segment: too many segments waiting, FIN/RST, or
        the end of the capture, :meth:`end_of_input`). Decrypted and written *now*, after the
        frames read since (the output is written as the capture is read; holding everything
        behind a gap back could mean holding the rest of the capture), with its own frame's
        timestamp, and a pcapng comment naming that frame (the JSON line's ``frame`` is it). Its
        frame counted as "other" when it came counts as an ESP frame instead, once."""
        from ..model.packets import EspPacket

        f = pkt.frame
        if type(pkt) is not EspPacket or len(pkt.data) < 8 or (self.opts.frames is not None and f not in self.opts.frames):
            return
        if f not in self.late_frames:
            self.late_frames.add(f)
            self.n_other -= 1
        ts = self.held.get(f)
        if ts is None:  # (fell out of the bounded table: the record's own float time)
            ts = round(pkt.ts * 1e9)
        af = socket.AF_INET6 if ":" in pkt.src else socket.AF_INET
        self._esp(f, 0, ts, b"", 0, pkt.data, socket.inet_pton(af, pkt.src), socket.inet_pton(af, pkt.dst),
                  pkt.udp_encap, (), False,
                  late=late_comment(f))

    def end_of_input(self) -> None:
        """The capture has ended: what the decoder still waits for is given up
        (decode.demux.Decoder.flush), as the analysis does at the end of input: the records
        behind an RFC 8229 TCP gap never filled are decrypted and written (:meth:`_late`), the gap
        and every IP datagram whose fragments never all arrived counted as marks (``marks``: the
        frames were "other" when they came, and stay so)."""
        if self.decoder is None or not self.opts.late:
            return
        from ..model.packets import Malformed

        for pkt in self.decoder.flush():
            if type(pkt) is not Malformed:
                self._late(pkt)
            else:
                self._mark(pkt)

    def _esp(self, idx: int, iface: int, ts: int, frame: bytes, orig: int, esp: bytes, src: bytes, dst: bytes,
             udp_encap: bool, ext: tuple, keep_other: bool, late: str = "") -> None:  # noqa: C901
        """One ESP packet (frame ``idx``): decrypted, written, counted. ``late``: the comment of a
        record written after later frames (:meth:`_late`)."""
        opts = self.opts
        out_f, jsonl_f = self.out_f, self.jsonl_f
        # -- ESP ---------------------------------------------------------------------------------
        self.n_esp += 1
        spi, seq = _ESPH.unpack_from(esp, 0)
        key = src + dst + esp[:4]
        e = self.sas.get(key)
        if e is None:
            e = self._entry(key, src, dst, spi)
        st = e.st
        if e.n:
            st.stats.decrypted += e.n  # fold fast-path counts before open_raw touches them
            self.n_esp += e.n  # (ESP frames too: the summary line's "N ESP")
            e.n = 0
        code, plain, hi = self.dec.open_raw(st, seq, bytes(esp))
        if e.open_at is None:
            self._refresh(e)
        nh = None
        if code == 0:
            try:
                ilen, nh, _pad = check_payload(plain, not st.opener.verifies)
            except DecryptError as exc:  # RFC 4303 §2.4-2.6: not a payload that holds its packet
                code = _esp.STATUS.index(payload_failure(st, str(exc)))
                plain = str(exc)
        elif code == 1 and st.stats.decrypted == 0:
            af = socket.AF_INET if len(src) == 4 else socket.AF_INET6
            self.early_fail.add((socket.inet_ntop(af, src), socket.inet_ntop(af, dst), spi))
        if code != 0:
            if keep_other:
                self.n_kept += 1
                self._epb(1 + iface, ts, frame, orig, f"ipsecscope: {_esp.STATUS[code]}: {plain}")
            if jsonl_f is not None:
                self.jbuf.append(_jsonl.record(idx, ts, st, src, dst, spi, seq, hi, _esp.STATUS[code], None, None,
                                               len(esp), opts.hex, reason=plain, udp_encap=udp_encap))
            return
        if nh == 59:  # dummy packet (RFC 4303 §2.6): no inner packet, but still its JSONL record
            self.n_dummy += 1
            if jsonl_f is not None:
                self.jbuf.append(_jsonl.record(idx, ts, st, src, dst, spi, seq, hi, "ok", 59, plain[:ilen],
                                               len(esp), opts.hex, udp_encap=udp_encap))
            return
        inner = trim_tfc(plain[:ilen], nh) if nh == 4 or nh == 41 else plain[:ilen]
        layers = None
        if nh in _CARRIES_ESP and self.dec.keys is not None:
            inner, nh, isrc, idst, layers = decrypt_nested(self.dec, self.nested_sas, inner, nh, src, dst)
        else:
            isrc, idst = src, dst
        dummy = nh == 59  # an inner dummy packet: nothing for the pcapng, a record for the JSONL
        self.n_dummy += dummy
        if isrc != src or idst != dst:
            ext = ()  # an inner layer's packet: the outer header's extension headers are not its own
        pkt_bytes = wire_packet(isrc, idst, nh, inner, ext) if out_f is not None and not dummy else b""
        if opts.pcapng and out_f is not None and not dummy:
            self._epb(0, ts, pkt_bytes, len(pkt_bytes), late)
        if jsonl_f is not None:
            self.jbuf.append(_jsonl.record(idx, ts, st, src, dst, spi, seq, hi, "ok", nh, inner, len(esp),
                                           opts.hex, udp_encap=udp_encap, nested=layers, inner_src=isrc,
                                           inner_dst=idst))
            if len(self.jbuf) >= 4096:
                jsonl_f.write("".join(self.jbuf))
                self.jbuf.clear()

    def _ah(self, idx: int, iface: int, ts: int, frame: bytes, orig: int, lt: int, pkt) -> bytes | None:
        """An AH packet (export/ah.py says what is written when): its payload to the output, its
        JSON line, an ICV failure kept under --keep-other; the ESP packet it protects, if any, for
        the ESP path (else None: the frame is done)."""
        if self.ah is None:
            from .ah import AhOut

            self.ah = AhOut(self.dec.keys, wire_packet, decrypt_nested, v6_ext_headers)
            if self.ah_seeds:
                self.ah.verifier.seed(self.ah_seeds)
        opts = self.opts
        got = self.ah.handle(pkt, bytes(frame), lt, ts, self.dec, self.nested_sas, self.jsonl_f is not None,
                             opts.hex)
        if got.record is not None:
            self.jbuf.append(got.record)
            if len(self.jbuf) >= 4096:
                self.jsonl_f.write("".join(self.jbuf))
                self.jbuf.clear()
        if self.out_f is None or not opts.pcapng:
            return got.esp
        if got.packet is not None or (got.status == "icv_failed" and opts.keep_other and lt >= 0):
            data, i, o = (got.packet, 0, len(got.packet)) if got.packet is not None else (frame, 1 + iface, orig)
            if got.packet is None:
                self.n_kept += 1
            self._epb(i, ts, data, o, got.comment)
        return got.esp
