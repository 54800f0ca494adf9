"""What one decoded packet does to a :class:`~ipsecscope.session.Session`: decrypted (ESP with
its nested layers, IKE, AH), given to the tracker, counted, and made the frame's row.

``Session`` (session.py) reads the input and feeds frames (``load``, ``feed``); each decoded
frame comes here through :meth:`PacketHandling._dispatch` (ESP alone: ``_esp``, the bulk of a big
capture). The fused loop (``session_fast``/``session_esp``) calls ``_general_frame`` and
``_nested`` of the same object.
"""

from __future__ import annotations

import bisect
import socket
import struct
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING

from .crypto.esp import MAX_NESTED, EspDecryptor, EspResult, esp_inside
from .decode.demux import Decoder
from .decode.inner import EspLayer, InnerStore
from .decode.link import link_ethertype
from .decode.quoted import QuotedStore
from .keys import KeyStore
from .model import iana
from .model.idtext import msg_id_text
from .model.packets import (
    AhPacket,
    EspPacket,
    FrameRow,
    IcmpError,
    IkeDatagram,
    Malformed,
    NatKeepalive,
    Packet,
    RawFrame,
    link_text,
)
from .model.sa import Finding
from .rowstore import STATUS_CODES, NoRows, RowStore
from .session_detail import iana_proto
from .session_esp import count_outcome
from .state.enc_sa import note_enc
from .state.names import exchange_name
from .state.tracker import Tracker

if TYPE_CHECKING:
    # The IKE stack (decoder, decryptors, the IKE model, session_quoted) is imported at the first
    # IKE message or ICMP quote: a capture of ESP alone never needs it (start-up, issue 15).
    from .crypto.ah import AhResult, AhVerifier
    from .crypto.ike_sk import IkeDecryptor
    from .crypto.ikev1 import Ikev1Decryptor
    from .model.ike import IkeMessage
    from .state.ike_frag_rows import FragmentRows
    from .state.ikev1_frag import Ikev1Reassembler

_ESP_HDR = struct.Struct("!II")
# EspResult.status -> the row status a Packets table shows
_ROW_STATUS = {"ok": "decrypted", "no_key": "no-key", "icv_failed": "icv-bad"}
# AhResult.status -> the row status (AH authenticates, it does not encrypt: "verified")
_AH_ROW_STATUS = {"ok": "verified", "no_key": "no-key", "icv_failed": "icv-bad", "unverifiable": "unverified"}


class _AhCheck:
    """An AH packet's frame to :meth:`AhVerifier.verify`: where its IP header starts."""

    __slots__ = ("verify", "ip_offset")

    def __init__(self, verifier: AhVerifier) -> None:
        from .decode.link import ip_offset

        self.verify, self.ip_offset = verifier.verify, ip_offset

    def check(self, pkt: AhPacket, raw: RawFrame) -> AhResult:
        _ver, off = self.ip_offset(raw.linktype, raw.data)
        try:
            return self.verify(pkt, raw.data, off)
        except Exception as exc:  # noqa: BLE001 - odd input must never stop a capture being read
            from .crypto.ah import AhResult

            return AhResult("unverifiable", reason=f"internal error ({type(exc).__name__}); ICV not checked")


def _intern(cache: dict[str, str], s: str) -> str:
    # Millions of rows share a handful of addresses; one str object each keeps memory flat.
    return cache.setdefault(s, s)


def _payload_label(enum: type, value: int) -> str:
    """One token per payload in the row's list: the registry name, else PRIVATE(n) for the
    private-use range (RFC 2408 §3.1, RFC 7296 §3.2: 128-255; Microsoft's AuthIP sends 133, 135)
    or UNASSIGNED(n): the registry's "<ENUMNAME> <value>" would read as two payloads."""
    try:
        return enum(value).name
    except ValueError:
        return f"PRIVATE({value})" if value >= 128 else f"UNASSIGNED({value})"


def _ike_info(msg: IkeMessage, frag: str = "") -> str:
    """The IKE row's Info: exchange, role, Message ID, payloads; ``frag`` what IKE fragment the
    frame is (state.ike_frag_rows.fragment_text, the words ``summary`` uses too)."""
    h = msg.header
    exch = exchange_name(h.exchange, h.major)  # IKE_SA_INIT; 'Main Mode', as the SA views say it
    role = ("response" if h.is_response else "request") if h.major == 2 else "v1"
    names = []
    # A decrypted IKEv1 message keeps its encrypted body as one opaque payload: show the inside.
    shown = msg.inner if (h.encrypted_v1 and msg.decrypted) else msg.payloads + msg.inner
    from .model.ike import NotifyPayload, phase1_payload_label

    for p in shown:
        if isinstance(p, NotifyPayload):
            enum = iana.NotifyType if h.major == 2 else getattr(iana, "Ikev1NotifyType", iana.NotifyType)
            names.append(f"N({iana.name(enum, p.notify_type)})")
        elif h.major == 1 and (draft := phase1_payload_label(p)) is not None:
            names.append(draft)
        else:
            enum = iana.PayloadType if h.major == 2 else getattr(iana, "Ikev1Payload", iana.PayloadType)
            names.append(_payload_label(enum, p.type))
    flag = ""
    if msg.decrypted or msg.icv_ok is False:
        flag = " (decrypted)" if msg.icv_ok is not False else " (ICV BAD)"
    head = f"{exch} {role} #{msg_id_text(h.msg_id)} [ {' '.join(names)} ]{flag}"
    return f"{head} {frag}" if frag else head


def _is_fragment(msg: IkeMessage) -> bool:
    """An IKEv1 Fragment payload's piece (or the message it completed), or an IKEv2 SKF one."""
    if msg.v1_fragments is not None:
        return True
    from .model.ike import SkPayload

    return any(isinstance(p, SkPayload) and p.total_fragments for p in msg.payloads)


class PacketHandling:
    """The per-packet half of ``Session``; ``Session._reset`` sets these attributes (and ``stats``,
    a ``SessionStats``)."""

    keys: KeyStore
    keep_rows: bool
    max_rows: int | None
    decoder: Decoder
    tracker: Tracker
    esp_decryptor: EspDecryptor
    rows: RowStore | deque[FrameRow] | NoRows
    _late_frames: set[int]
    inner: InnerStore
    quoted: QuotedStore
    ike_messages: dict[int, IkeMessage]
    v1_fragments: Ikev1Reassembler | None
    ike_frag_rows: FragmentRows | None
    ike_fragments: dict[int, dict]
    ah_verifier: AhVerifier | None
    _ike_dec: tuple[IkeDecryptor, Ikev1Decryptor, IkeDecryptor] | None
    _no_key_result: EspResult | None
    _ah_check: _AhCheck | None
    _ah_keys_version: int
    _addr: dict[str, str]
    _findings: list[Finding] | None
    _held: list[_Held]
    _held_bytes: int
    _hold_past: int

    def _ike_decryptors(self) -> tuple[IkeDecryptor, Ikev1Decryptor, IkeDecryptor]:
        """(IKEv2, IKEv1, quoted IKE: its counters are not the capture's) at the first IKE message."""
        if self._ike_dec is None:
            from .crypto.ike_sk import IkeDecryptor
            from .crypto.ikev1 import Ikev1Decryptor

            self._ike_dec = (IkeDecryptor(self.keys), Ikev1Decryptor(self.keys), IkeDecryptor(self.keys))
        return self._ike_dec

    def _dispatch(self, raw: RawFrame, pkts: list[Packet]) -> list[Packet]:
        """The rest of :meth:`feed` once ``raw`` is decoded (counted, time-stamped): processed now,
        or held while an earlier frame may still yield a report.

        The correlation is a state machine fed in capture order: an IKE response is read against
        its request, an ESP packet against the CHILD SAs alive at its time (before a rekey or
        delete that came later), a flow's pair against the flows seen so far. A record behind an
        RFC 8229 gap is decoded only when the gap fills or is given up (decode.tcpencap), frames
        later; handed over then it would be judged after what came after it (a request after its
        response, ESP after its SA's delete: ESP-ONE-WAY on SAs that carried both ways). So from
        the first waiting segment on (``Decoder.waiting_from``) frames wait here, and the reports
        about them join their frames, until nothing before them waits any more: the tracker
        sees every frame in capture order. Bounded (MAX_HELD_FRAMES, MAX_HELD_BYTES): past it the
        held frames go on, and a record given up later is judged late (``_late``), as before."""
        held = self._held
        if pkts and any(p.frame != raw.index for p in pkts):
            for p in pkts:
                if p.frame != raw.index:
                    self._late_report(p)
            pkts = [p for p in pkts if p.frame == raw.index]
        dec = self.decoder
        first = dec.waiting_from() if (held or dec.tcp) else None
        if first is not None and first <= self._hold_past:
            first = None  # held once past the bounds: reported late when it comes (_late)
        if held or (first is not None and first <= raw.index):
            ti = dec.tunnel_inner
            held.append(_Held(raw, pkts, ti if ti is not None and ti[0] == raw.index else None))
            self._held_bytes += len(raw.data)
            self._release(first)
            return pkts
        return self._dispatch_now(raw, pkts)

    def _late_report(self, p: Packet) -> None:
        """A report about an earlier frame: joins that frame when it is held, else is taken late."""
        held = self._held
        if held and p.frame >= held[0].raw.index:
            i = bisect.bisect_left(held, p.frame, key=lambda h: h.raw.index)
            if i < len(held) and held[i].raw.index == p.frame:
                h = held[i]
                if getattr(p, "transport", "") == "tcp" or (type(p) is Malformed and p.layer == "tcp"):
                    # an RFC 8229 record (or its stream's mark): the frame's own, as if on time
                    h.pkts.append(p)
                    h.joined = True
                else:  # an IP datagram given up: its mark (and IKE message) after the frame's row
                    h.late.append(p)
                return
        self._late(p)

    def _release(self, first: int | None) -> None:
        """Process the held frames before ``first`` (all of them for None) in frame order. Past the
        bounds all of them go on, and what waits now is not waited for again (``_hold_past``): a
        gap a quiet stream never fills would else send every later frame of a big capture
        through the general path (the fused loop's runs too)."""
        held = self._held
        if len(held) > MAX_HELD_FRAMES or self._held_bytes > MAX_HELD_BYTES:
            n, size = len(held), 0
            self._hold_past = held[-1].raw.index
        else:
            n = 0
            size = self._held_bytes
            while n < len(held) and (first is None or held[n].raw.index < first):
                size -= len(held[n].raw.data)
                n += 1
        if not n:
            return
        go = held[:n]
        del held[:n]
        self._held_bytes = size
        dec = self.decoder
        keep = dec.tunnel_inner
        try:
            for h in go:
                raw, pkts = h.raw, h.pkts
                if h.joined:  # a frame's own packets first, marks after (`packets` shows the first row)
                    pkts.sort(key=lambda p: type(p) is Malformed)
                dec.tunnel_inner = h.tunnel_inner
                if len(pkts) == 1 and type(pkts[0]) is EspPacket:
                    self._esp(raw, pkts[0])
                else:
                    self._dispatch_now(raw, pkts)
                for p in h.late:
                    self._late(p)
        finally:
            dec.tunnel_inner = keep

    def release_held(self) -> None:
        """The input has ended (or a live look gave up what waited): every held frame goes on."""
        if self._held:
            self._release(self.decoder.waiting_from())

    def _dispatch_now(self, raw: RawFrame, pkts: list[Packet]) -> list[Packet]:
        """A decoded frame processed: given to the tracker, counted, made rows."""
        self._findings = None
        st = self.stats
        err = None
        if raw.linktype == 109:  # OpenBSD enc(4): the frame is the cleartext side of an SA (state/enc_sa)
            note_enc(self.tracker.table, raw.index, raw.ts, raw.data)
        if pkts and type(pkts[-1]) is IcmpError:
            # Evidence for the SA it quotes; the frame itself stays an OTHER row as any plain IP
            # frame (its Info and filter fields come from the inner store).
            err = pkts[-1]
            self.tracker.on_icmp_error(err)
            pkts = pkts[:-1]
        if not pkts:
            st.other += 1
            quoted = None
            link = ""  # a frame that is not IP at all: what it is ("ARP", "ethertype 0x88b5")
            if self.keep_rows:
                qraw = raw  # the frame an ICMP error's quote is read from
                ti = self.decoder.tunnel_inner
                if ti is not None and ti[0] == raw.index and not ti[2]:
                    # an Ethernet frame that is no IP inside a bridging/mirror tunnel (ARP...):
                    # a link row as outside one (its MACs read again on display), the tunnels'
                    # headers are decoder.tunnels (filters: ip.src == <tunnel endpoint>)
                    et = link_ethertype(1, ti[3][ti[4]:])
                    link = link_text(et) if et is not None else ""
                elif ti is not None and ti[0] == raw.index:
                    # inside a tunnel (GRE, IP in IP, VXLAN...): the innermost packet, whose hosts
                    # tshark's Source/Destination show; the tunnels' headers are decoder.tunnels
                    self.inner.add(raw.index, memoryview(ti[3])[ti[4]:], 4 if ti[2] == 4 else 41)
                    if err is not None:  # an ICMP error inside the tunnel: its quote is read from there
                        qraw = RawFrame(raw.index, raw.ts, raw.ts_ns, 101, ti[3][ti[4]:], raw.orig_len, raw.iface,
                                        raw.offset)
                else:
                    link = self.inner.add_ip_frame(raw.index, raw.data, raw.linktype)  # its IP layer, for filters
                if err is not None and err.protocol == "ESP":  # the quoted ESP: a second inner record
                    from . import session_quoted

                    got = session_quoted.open_quote(self.esp_decryptor, qraw, err)
                    if got is not None:
                        quoted = got[0]
                        self.quoted.add(quoted)
                elif err is not None and err.protocol == "AH":  # the quoted AH, its ICV over the quoted header
                    from . import session_quoted

                    quoted = session_quoted.open_quote_ah(self.ah_verifier if self._ah_verifier() else None, qraw, err)
                    if quoted is not None:
                        self.quoted.add_ah(quoted)
                elif err is not None and err.protocol == "IKE":  # a whole quoted IKE message, for filters
                    from . import session_quoted

                    msg = session_quoted.open_quoted_ike(self._ike_decryptors()[2], qraw, err,
                                                         self.inner.quoted.get(raw.index))
                    if msg is not None:
                        self.quoted.add_ike(raw.index, msg)
            # A RowStore formats an OTHER row's Info from the inner store when read; a live ring
            # holds FrameRow objects, so theirs is formatted now (and a quoted packet's, always).
            info = link or ("" if type(self.rows) is RowStore and quoted is None else self.inner.info(raw.index) or "")
            if quoted is not None:
                info = f"{info} ▸ {quoted.info()}" if info else quoted.info()
            self._add_row(FrameRow(raw.index, raw.ts, "OTHER", "", "", 0, 0, raw.orig_len, info=info))
            return pkts
        if pkts[0].frame != raw.index:  # reports about earlier frames (abandoned IP datagrams)
            for m in [p for p in pkts if p.frame != raw.index]:
                self._late(m)
            pkts = [p for p in pkts if p.frame == raw.index]
        if not pkts:
            st.other += 1
            self._add_row(FrameRow(raw.index, raw.ts, "OTHER", "", "", 0, 0, raw.orig_len))
        for pkt in pkts:
            self._process(raw, pkt)
        return pkts

    def _esp(self, raw: RawFrame, pkt: EspPacket) -> None:
        self._findings = None
        st = self.stats
        st.esp += 1
        dec = self.esp_decryptor
        sa = dec.state(pkt.src, pkt.dst, pkt.spi)
        if sa.keys is None and self._no_key_result is not None:
            # No key for this SA: what decrypt() would say, without building a new result each time.
            sa.stats.no_key += 1
            res = self._no_key_result
        else:
            # decrypt(pkt) without its second SA lookup: open_raw is the decryptor's hot path.
            code, val, hi = dec.open_raw(sa, pkt.seq, pkt.data)
            res = dec._result(sa, code, val, hi)
        row_status = count_outcome(st, res.status)
        if row_status == "no-key" and res.keys is None and res.seq_hi == 0 and res.inner is None:
            self._no_key_result = res
        flow = self.tracker.on_esp(pkt, res)
        if flow is None:  # the tracker reported an internal error instead
            flow = self.tracker.table.flows.get((pkt.src, pkt.dst, pkt.spi, "ESP"))
        inner = res.inner
        if inner is not None:
            nh = res.next_header
            # the same test as session_fast's: ESP in it (nested) or not
            if nh == 50 or (nh == 4 and len(inner) > 9 and inner[9] == 50) or (
                    nh == 41 and len(inner) > 6 and inner[6] == 50):
                self._nested(raw.index, raw.ts, inner, nh, pkt.src, pkt.dst)
            elif self.keep_rows:  # rows' inner packets (none without rows)
                self.inner.add(raw.index, inner, nh)
        seq = (res.seq_hi << 32) | pkt.seq if res.seq_hi else pkt.seq
        rows = self.rows
        if type(rows) is RowStore:
            ix = rows._addr_ix
            src = ix.get(pkt.src)
            if src is None:
                src = rows.addr(pkt.src)
            dst = ix.get(pkt.dst)
            if dst is None:
                dst = rows.addr(pkt.dst)
            rows.add_esp(raw.index, raw.ts, src, dst, pkt.sport, pkt.dport, raw.orig_len,
                         pkt.spi, seq, STATUS_CODES.get(row_status) or rows.status_code(row_status),
                         flow.child_sa if flow is not None else None, res.next_header)
        else:
            intern = self._addr
            info = f"ESP seq {seq}"
            inner_info = self.inner.info(raw.index) if res.inner is not None else None
            if inner_info:
                info += f" ▸ {inner_info}"
            elif res.next_header is not None:
                info += f" next {iana_proto(res.next_header)}"
            if self.max_rows and len(self.inner) > 2 * self.max_rows and rows:  # live: forget what left the ring
                self.inner.prune(rows[0].frame)
                self.quoted.prune(rows[0].frame)
            rows.append(FrameRow(
                raw.index, raw.ts, "ESP", _intern(intern, pkt.src), _intern(intern, pkt.dst), pkt.sport,
                pkt.dport, raw.orig_len, pkt.spi, seq, info, row_status,
                None, flow.child_sa if flow is not None else None,
            ))

    def _nested(self, frame: int, ts: float, inner: bytes, nh: int, src: str, dst: str) -> None:
        """ESP inside a decrypted ESP payload (a tunnel through a tunnel, or transport-mode ESP of
        ESP): each inner layer is its own SA (SPI + destination + protocol, RFC 4301 §4.1), so it is
        decrypted with its own keys and given to the tracker like any ESP packet of that SA (its
        CHILD SA, counts and sequence analysis), then the innermost packet and the layers above it
        are recorded for the Info column and the display filter. A layer without keys, or one that
        fails, ends the descent; more than MAX_NESTED layers is malformed. The outer ESP stays the
        frame's packet: the session's per-frame counters do not count inner layers."""
        dec, tracker = self.esp_decryptor, self.tracker
        layers: list[EspLayer] = []
        for _depth in range(MAX_NESTED):
            found = esp_inside(inner, nh)
            if found is None:
                break
            esp, isrc, idst = found
            ver = 0
            if isrc:  # tunnel mode: the inner IP header's addresses; transport: the carrier's
                ver = 4 if len(isrc) == 4 else 6
                af = socket.AF_INET if ver == 4 else socket.AF_INET6
                src, dst = socket.inet_ntop(af, isrc), socket.inet_ntop(af, idst)
            if len(esp) < 8:
                self._nested_malformed(frame, ts, f"ESP inside ESP with a truncated header ({len(esp)} of 8 bytes)")
                break
            spi, seq = _ESP_HDR.unpack_from(esp)
            pkt = EspPacket(frame, ts, src, dst, spi, seq, bytes(esp), ip_version=6 if ":" in src else 4)
            res = dec.decrypt(pkt)
            flow = tracker.on_esp(pkt, res)
            self.stats.nested_esp += 1
            layers.append(EspLayer(ver, src, dst, spi, (res.seq_hi << 32) | seq,
                                   _ROW_STATUS.get(res.status) or res.status.replace("_", "-"),
                                   res.next_header, flow.child_sa if flow is not None else None))
            if res.inner is None:
                break
            inner, nh = res.inner, res.next_header  # type: ignore[assignment]
        else:
            if esp_inside(inner, nh) is not None:
                self._nested_malformed(frame, ts, f"ESP nested more than {MAX_NESTED} layers deep: the "
                                                  "innermost layers were not decrypted")
        if self.keep_rows:
            self.inner.add(frame, inner, nh, tuple(layers))

    def _nested_malformed(self, frame: int, ts: float, reason: str) -> None:
        st = self.stats
        st.malformed["esp"] = st.malformed.get("esp", 0) + 1
        self.tracker.on_malformed(Malformed(frame, ts, reason, "esp"))

    def _process(self, raw: RawFrame, pkt: Packet) -> None:
        st = self.stats
        tbl = self.tracker.table
        intern = self._addr
        if type(pkt) is EspPacket:
            self._esp(raw, pkt)
        elif type(pkt) is IkeDatagram:
            st.ike += 1
            from .decode.ike import parse_ike

            frags = self.v1_fragments
            if frags is None:
                from .state.ikev1_frag import Ikev1Reassembler

                frags = self.v1_fragments = Ikev1Reassembler()
            msg = self._decrypt_ike(frags.add(parse_ike(pkt)))
            self.ike_messages[raw.index] = msg
            if self.max_rows and len(self.ike_messages) > self.max_rows:
                gone = next(iter(self.ike_messages))
                del self.ike_messages[gone]  # live mode: a ring, like rows
                self.ike_fragments.pop(gone, None)
            self.tracker.on_ike(msg)
            self._derive_child_keys()
            status = "malformed" if msg.malformed else ("icv-bad" if msg.icv_ok is False else (
                "decrypted" if msg.decrypted else ""))
            if msg.malformed:
                st.malformed["ike"] = st.malformed.get("ike", 0) + 1
                self.tracker.on_malformed(Malformed(raw.index, raw.ts, f"IKE: {msg.malformed}", "ike"),
                                          whole=raw.orig_len <= len(raw.data))
            key = f"{msg.header.spi_i.hex()}_{msg.header.spi_r.hex()}"
            ike_key = key if key in tbl.ike_sas else self._ike_key_for(msg)
            info = self._ike_row_info(msg, self._note_fragment(msg) if _is_fragment(msg) else None)
            self._add_row(FrameRow(
                raw.index, raw.ts, "IKE", _intern(intern, pkt.src), _intern(intern, pkt.dst), pkt.sport,
                pkt.dport, raw.orig_len, None, msg.header.msg_id, info, status, ike_key, None,
            ))
        elif type(pkt) is AhPacket:
            st.ah += 1
            ver = self._ah_verifier()
            res = ver.check(pkt, raw) if ver is not None else None
            flow = self.tracker.on_ah(pkt, res)
            seq = (res.seq_hi << 32) | pkt.seq if res is not None and res.seq_hi else pkt.seq  # with ESN high bits
            info = f"AH seq {seq} next {iana_proto(pkt.next_header)}"
            if self.keep_rows and pkt.next_header != 50 and len(pkt.data) >= 2:
                # AH does not encrypt: its payload (RFC 4302 §2.2: behind (Payload Len + 2) * 4
                # octets) is what tshark dissects next, so filters see its fields and the row
                # shows it as an ESP row shows its decrypted packet (an IP header in tunnel mode,
                # RFC 4302 §3.1.2; the transport header in transport mode). An ESP of an AH+ESP
                # bundle is its own row, recorded when decrypted.
                self.inner.add(raw.index, pkt.data[(pkt.data[1] + 2) * 4:], pkt.next_header)
                inner_info = self.inner.info(raw.index)
                if inner_info:
                    info += f" ▸ {inner_info}"
            status = ""
            if res is not None:
                status = _AH_ROW_STATUS.get(res.status, res.status)
                if res.status == "ok":
                    st.ah_verified += 1
                elif res.status == "icv_failed":
                    st.ah_icv_failed += 1
                if res.nat:
                    info += f" — ICV verifies with {res.nat.split(' -> ')[0]}: NAT"
                elif res.status == "unverifiable":
                    info += f" — ICV not checked: {res.reason}"
                elif res.icv_len:
                    info += f" — {res.icv_len}"
            self._add_row(FrameRow(
                raw.index, raw.ts, "AH", _intern(intern, pkt.src), _intern(intern, pkt.dst), 0, 0,
                raw.orig_len, pkt.spi, seq, info, status, None, flow.child_sa if flow is not None else None,
            ))
        elif type(pkt) is NatKeepalive:
            st.keepalives += 1
            self.tracker.on_keepalive(pkt)
            self._add_row(FrameRow(
                raw.index, raw.ts, "NAT-KA", _intern(intern, pkt.src), _intern(intern, pkt.dst), pkt.sport,
                pkt.dport, raw.orig_len, info="NAT-keepalive (RFC 3948 §2.3)",
            ))
        elif type(pkt) is Malformed:
            st.malformed[pkt.layer] = st.malformed.get(pkt.layer, 0) + 1
            self.tracker.on_malformed(pkt, whole=raw.orig_len <= len(raw.data))
            self._add_row(FrameRow(
                raw.index, raw.ts, "MALFORMED", _intern(intern, pkt.src), _intern(intern, pkt.dst), pkt.sport,
                pkt.dport, raw.orig_len, pkt.spi, info=f"{pkt.layer}: {pkt.reason}", status="malformed",
                ip_proto=pkt.ip_proto,
            ))

    def _note_fragment(self, msg: IkeMessage) -> dict:
        """The IKE fragment ``msg`` is, noted for its row (state.ike_frag_rows, as ``summary``
        notes it): what is learnt later (the number of pieces, pieces never captured) rewrites
        the row (``_fragment_settled``)."""
        rows = self.ike_frag_rows
        if rows is None:
            from .state.ike_frag_rows import FragmentRows

            rows = self.ike_frag_rows = FragmentRows()
            rows.settled = self._fragment_settled
        h = msg.header
        d = {"frame": msg.frame, "fragment": None, "reassembled_from": [],
             "encrypted": bool(h.encrypted_v1 if h.major == 1 else msg.encrypted) and not msg.decrypted}
        # with keys an SKF message is joined by the decryptor on its last piece (crypto/ike_sk)
        rows.note(d, msg, joined=h.major == 2 and msg.decrypted and bool(msg.inner))
        if d["fragment"] is not None:
            self.ike_fragments[msg.frame] = d  # FragmentRows writes what it learns later into it
        return d

    def _ike_row_info(self, msg: IkeMessage, frag: dict | None) -> str:
        text = ""
        if frag is not None and frag["fragment"] is not None:
            from .state.ike_frag_rows import fragment_text

            text = fragment_text(frag)
        return _ike_info(msg, text) + (f" — malformed: {msg.malformed}" if msg.malformed else "")

    def _fragment_settled(self, notes: list[dict]) -> None:
        """Fragment rows whose set is settled (complete, given up, or lost at the end of the
        input): their Info rewritten with what is known now."""
        rows = self.rows
        for d in notes:
            msg = self.ike_messages.get(d["frame"])
            if msg is None:  # live ring: gone already
                continue
            i = bisect.bisect_left(rows, d["frame"], key=lambda r: r.frame)
            if i < len(rows) and rows[i].frame == d["frame"] and rows[i].kind == "IKE":
                info = self._ike_row_info(msg, d)
                if info != rows[i].info:
                    rows[i] = replace(rows[i], info=info)

    def end_of_fragments(self) -> None:
        """The input has ended: IKE fragment sets still missing pieces are lost, their rows say
        which (as ``summary`` lists them)."""
        if self.ike_frag_rows is not None:
            self.ike_frag_rows.finish()
            self.ike_frag_rows = None

    def _ah_verifier(self) -> _AhCheck | None:
        """The AH ICV checker once the keys hold an AH SA (checked again when the keys change:
        live key files, CHILD SA keys derived from IKE), else None."""
        v = self.keys.version
        if v != self._ah_keys_version:
            self._ah_keys_version = v
            if self.ah_verifier is None and any(k.protocol == iana.ProtocolId.AH for k in self.keys.esp):
                from .crypto.ah import AhVerifier

                self.ah_verifier = AhVerifier(self.keys)
                self._ah_check = _AhCheck(self.ah_verifier)
        return self._ah_check

    def _add_row(self, row: FrameRow) -> None:
        self.rows.append(row)

    def _late(self, p: Packet) -> None:
        """A report about an earlier frame: an abandoned IP datagram's mark, or the IKE message
        its first fragment starts, or a record of an RFC 8229 stream whose gap was given up
        (decode.tcpencap: it waited for a segment never captured, and is reported on its frame)."""
        if type(p) in (IkeDatagram, EspPacket, NatKeepalive) and p.transport == "tcp":  # type: ignore[union-attr]
            self._late_record(p)
        elif type(p) is IkeDatagram:
            self._late_ike(p)
        else:
            self._late_malformed(p)  # type: ignore[arg-type]

    def _frame_rows(self, frame: int) -> tuple[int, int]:
        """The positions [i, j) of ``frame``'s rows (rows are in frame order)."""
        rows = self.rows
        i = j = bisect.bisect_left(rows, frame, key=lambda r: r.frame)
        while j < len(rows) and rows[j].frame == frame:
            j += 1
        return i, j

    def _late_record(self, pkt: Packet) -> None:
        """An RFC 8229 record decoded after its frame was read (its segment waited for a gap that
        was given up): processed as on time, its row replacing the frame's OTHER row (or going
        after the frame's rows: a frame can carry several records, or a mark)."""
        rows = self.rows
        i, j = self._frame_rows(pkt.frame)
        other = i < j and rows[i].kind == "OTHER"
        length = rows[i].length if i < j else 0
        if other or (i == j and pkt.frame not in self._late_frames):
            self.stats.other -= 1  # the frame was counted as OTHER when it came (it decoded to nothing)
        self._late_frames.add(pkt.frame)
        raw = RawFrame(pkt.frame, pkt.ts, int(pkt.ts * 1e9), 1, bytes(length), length)
        temp: list[FrameRow] = []
        self.rows = temp  # type: ignore[assignment]
        try:
            self._process(raw, pkt)
        finally:
            self.rows = rows
        # data rows before marks (a gap's, on the first frame after it): `packets` shows a frame's
        # first row, the mark beside it
        k = next((x for x in range(i, j) if rows[x].kind == "MALFORMED"), j)
        for row in temp:
            if other:
                rows[i] = row
                other = False
            else:
                _insert_row(rows, k, row)
            k += 1

    def _late_ike(self, pkt: IkeDatagram) -> None:
        """The IKE message whose later IP fragments never came, read from its first one
        (decode.demux ``_lost_ike``): the tracker learns that it was sent (its IKE SA's exchange,
        IKE-IP-FRAGMENTED, retransmissions), and the frame's row, the MALFORMED mark of the lost
        datagram (tshark shows an unreassembled fragment, no ISAKMP), names the message."""
        from .decode.ike import parse_ike

        msg = parse_ike(pkt)
        self.tracker.on_ike(msg)
        rows = self.rows
        i = bisect.bisect_left(rows, pkt.frame, key=lambda r: r.frame)
        if i < len(rows) and rows[i].frame == pkt.frame and rows[i].kind == "MALFORMED":
            old = rows[i]
            rows[i] = FrameRow(old.frame, old.ts, old.kind, old.src, old.dst, old.sport, old.dport, old.length,
                               info=f"{old.info}; the first holds the start of {_ike_info(msg).removesuffix(' [  ]')} "
                               f"({len(pkt.data)} of its {msg.header.length} octets)", status=old.status,
                               ip_proto=old.ip_proto)

    def _late_malformed(self, m: Malformed) -> None:
        """A Malformed about an earlier frame (the first fragment of an IP datagram that never
        completed): counted like any other, and that frame's OTHER row becomes a MALFORMED one.

        That frame decoded to nothing when it came (its datagram was pending) and was counted as
        OTHER then, whether or not a row for it is still kept (``keep_rows=False``, a live ring)."""
        st = self.stats
        st.malformed[m.layer] = st.malformed.get(m.layer, 0) + 1
        self.tracker.on_malformed(m)
        rows = self.rows
        i, j = self._frame_rows(m.frame)
        if i < j and rows[i].kind == "OTHER":
            old = rows[i]
            rows[i] = FrameRow(old.frame, old.ts, "MALFORMED", m.src or old.src, m.dst or old.dst, old.sport,
                               old.dport, old.length,
                               info=f"{m.layer}: {m.reason}", status="malformed", ip_proto=m.ip_proto)
        elif i < j:  # the frame's row is a late RFC 8229 record's already: the mark goes after it
            old = rows[i]
            _insert_row(rows, j, FrameRow(old.frame, old.ts, "MALFORMED", m.src or old.src, m.dst or old.dst,
                                          m.sport or old.sport, m.dport or old.dport, old.length,
                                          info=f"{m.layer}: {m.reason}", status="malformed", ip_proto=m.ip_proto))
            return
        if m.frame in self._late_frames:
            return
        self._late_frames.add(m.frame)
        st.other -= 1

    def _ike_key_for(self, msg: IkeMessage) -> str | None:
        # IKE_SA_INIT requests carry SPIr = 0; after the response the SA is keyed by both SPIs.
        spi_i = msg.header.spi_i.hex()
        for key in self.tracker.table.ike_sas:
            if key.startswith(spi_i):
                return key
        return None

    def _decrypt_ike(self, msg: IkeMessage) -> IkeMessage:
        if msg.malformed and not msg.payloads:
            return msg
        if msg.header.major == 2:
            if msg.encrypted:
                msg = self._ike_decryptors()[0].decrypt(msg)
        else:
            msg = self._ike_decryptors()[1].decrypt(msg)
        if msg.icv_ok is False:  # the decryptor reports a failed ICV with decrypted=False
            self.stats.ike_icv_failed += 1
        elif msg.decrypted:
            self.stats.ike_decrypted += 1
        return msg

    def _derive_child_keys(self) -> None:
        """RFC 7296 §2.17: with SK_d known, a non-PFS CHILD SA's ESP keys follow from the nonces."""
        from .crypto.keymat import derive_pending

        for keys in derive_pending(self.tracker, self.keys):
            self.keys.add_esp(keys)
            self.stats.derived_child_keys += 1


# Frames held while an RFC 8229 gap waits (PacketHandling._dispatch): at most this many, or this
# many of their bytes; past that all of them are processed (a gap is given up after MAX_TCP_EARLY of
# its stream's own segments, but the other traffic between them is unbounded).
MAX_HELD_FRAMES = 8192
MAX_HELD_BYTES = 16 << 20


class _Held:
    """A frame held back: its bytes, its packets (and the reports about it that joined them), the
    decoder's innermost tunnelled packet of it (read by ``_dispatch_now`` for an OTHER row)."""

    __slots__ = ("raw", "pkts", "tunnel_inner", "joined", "late")

    def __init__(self, raw: RawFrame, pkts: list[Packet], tunnel_inner: tuple | None) -> None:
        self.raw, self.pkts, self.tunnel_inner, self.joined = raw, pkts, tunnel_inner, False
        self.late: list[Packet] = []  # reports about it taken as before (``_late``) once it is processed


def _insert_row(rows, i: int, row: FrameRow) -> None:
    """Insert ``row`` at position ``i`` of a session's rows (RowStore, a live ring, NoRows)."""
    if isinstance(rows, deque):
        if rows.maxlen is not None and len(rows) >= rows.maxlen:
            return  # a full live ring: the frame's first row stands for it
        rows.insert(i, row)
    elif not isinstance(rows, NoRows):
        rows.insert(i, row)
