"""The detail view of one frame (``Session.detail``): the frame re-read from its file (or the live
ring) and decoded again in full — nested ESP layers, an ICMP error's quoted ESP, an IKEv2 SK body —
on demand, never on the analysis path, touching no counter or SA state. Kept apart from
``session.py``, which loads and correlates; :class:`FrameViews` is a base of ``Session`` and names
the session state it reads (this module never imports ``session``: no cycle).
"""

from __future__ import annotations

import bisect
import socket
import struct
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .crypto.esp import MAX_NESTED, EspDecryptor, EspResult, esp_inside
from .decode.demux import Decoder
from .decode.inner import InnerStore
from .keys import KeyStore
from .model.idtext import short_source, spi_text
from .model.packets import AhPacket, EspPacket, FrameRow, RawFrame
from .rowstore import FrameOffsets, NoRows, RowStore

if TYPE_CHECKING:
    from .crypto.ah import AhVerifier
    from .decode.quoted import QuotedPacket, QuotedStore
    from .model.ike import IkeMessage

_ESP_HDR = struct.Struct("!II")


@dataclass(slots=True, frozen=True)
class QuotedEsp:
    """The ESP packet an ICMP error quotes (path MTU, unreachable), for the packet detail. A whole
    packet is decrypted with its ICV verified; a quote cut off before the ICV and the trailer is
    decrypted as far as it goes, its next header unknown: shown marked "not verified". Either way
    a copy of a packet already sent, counted for no SA (``decode.quoted``)."""

    src: str  # the quoted packet's addresses (its SA: SPI + destination, RFC 4301 §4.1)
    dst: str
    spi: int
    seq: int
    quoted: int  # bytes of the ESP packet the quote holds (from the SPI on)
    plain: bytes | None  # the decrypted prefix; None: no key, or nothing whole to decrypt
    note: str  # one line: "not verified: ..." or why it was not decrypted
    summary: str | None = None  # what the prefix shows (tunnel mode: the inner IP header)
    verified: bool = False  # the whole packet was quoted and its ICV verified (decode.quoted)
    mtu: int | None = None  # the error's next-hop MTU (fragmentation needed, RFC 1191 §4; Packet Too Big)
    ip_length: int | None = None  # the quoted packet's size as its IP header gives it

    def lines(self) -> list[tuple[str, str]]:
        """(text, tone) lines, the first the heading, for both detail views (TUI pane, ``packets
        -V``), in :meth:`QuotedAh.lines`' order: the verdict, the size against a path MTU error's
        MTU, what the packet carried, where it went. Tones as there, and "dim"."""
        tone = "ok" if self.verified else "warn" if self.plain is not None else "dim"
        icmp = "ICMPv6" if ":" in self.src else "ICMP"  # (the quoted packet's version is the error's)
        out = [(f"Quoted ESP SPI {spi_text(self.spi)} seq {self.seq} (in the {icmp} error)", "head"), (self.note, tone)]
        if self.mtu is not None:
            big = self.ip_length is not None and self.ip_length > self.mtu
            out.append((f"too big: {self.ip_length} bytes > next-hop MTU {self.mtu}" if big
                        else f"next-hop MTU {self.mtu}", "warn"))
        if self.summary:
            out.append((self.summary, tone))
        size = f" {self.ip_length}-byte packet," if self.ip_length is not None else ""
        out.append((f"{self.src} → {self.dst}:{size} {self.quoted} bytes of its ESP quoted", ""))
        return out


@dataclass(slots=True, frozen=True)
class AhDetail:
    """An AH packet for the packet detail, and its ICV as the load checked it (the row's status:
    RFC 4302 §3.3.3 is not run again, it would move the SA's ESN state and counters)."""

    spi: int
    seq: int  # with the ESN high bits the load inferred
    src: str
    dst: str
    next_header: int | None  # None: this frame alone does not hold AH (a reassembled datagram's last fragment)
    length: int | None  # bytes of AH and what it protects, in this frame
    status: str  # the row's: verified, icv-bad, unverified, no-key, "" (no AH keys at all)
    icv: str  # one line saying what the ICV check gave and why
    next_name: str = ""  # the next header's protocol name (ICMP, IPv4, ESP, ...)


# IPv4 options (RFC 791 §3.1, IANA "ip-parameters") and IPv6 extension headers (RFC 8200 §4) a
# quoted AH packet may carry before its AH header, named as tshark names them
_V4_OPTIONS = {7: "Record Route", 68: "Timestamp", 130: "Security", 131: "Loose Source Route",
               137: "Strict Source Route", 148: "Router Alert"}
_V6_EXT = {0: "Hop-by-Hop", 43: "Routing", 44: "Fragment", 60: "Destination Options"}


@dataclass(slots=True, frozen=True)
class QuotedAh:
    """The AH packet an ICMP/ICMPv6 error quotes, for both detail views (TUI pane, ``packets -V``)
    and ``packets --json``'s ``quoted_ah``: the quoted IP header (the one AH follows: RFC 792,
    RFC 4443 §2.4(c)), the AH fields, and the ICV as the load checked it over that header
    (``Session.quoted.ah``; not run again). A copy of a packet already sent, counted for no SA."""

    src: str
    dst: str
    ip_version: int
    ttl: int | None  # IPv4 TTL / IPv6 hop limit; None: the frame could not be re-read
    ip_length: int | None  # the quoted packet's size as its IP header gives it
    df: bool | None  # IPv4 Don't Fragment (None for IPv6: routers never fragment it, RFC 8200 §5)
    options: tuple[int, ...]  # IPv4 option types / IPv6 extension header numbers before AH
    quoted: int | None  # bytes of the datagram the error holds, from the quoted IP header on
    whole: bool
    spi: int
    seq: int  # -1: the quote ends before the sequence number
    next_header: int | None
    ah_length: int | None  # bytes of the AH header ((Payload Len + 2) * 4, RFC 4302 §2.2)
    status: str  # decode.quoted: verified, icv-bad, no-key, not-verified (cut off), unsupported, unverifiable
    reason: str
    icv: str  # one line: what the ICV check gave
    payload: str | None  # what AH protects, as the Info column says it (None: nothing to show)
    mtu: int | None = None  # the error's next-hop MTU (fragmentation needed, RFC 1191 §4; Packet Too Big)

    @property
    def verified(self) -> bool:
        return self.status == "verified"

    def lines(self) -> list[tuple[str, str]]:
        """(text, tone) lines, the first the heading: what both detail views print, in this order
        (the ICV verdict, the size against a path MTU error's MTU, the payload: what an engineer
        reading an MTU error looks for first).
        Tones: "head", "ok", "bad", "warn", "" (plain)."""
        tone = "ok" if self.verified else "bad" if self.status == "icv-bad" else "warn"
        seq = self.seq if self.seq >= 0 else "?"  # (the ICV line says how much was quoted)
        icmp = "ICMP" if self.ip_version == 4 else "ICMPv6"  # (the quoted packet's version is the error's)
        out = [(f"Quoted AH SPI {spi_text(self.spi)} seq {seq} (in the {icmp} error)", "head"), (self.icv, tone)]
        if self.mtu is not None:  # what a path MTU error is about: this packet against that MTU
            big = self.ip_length is not None and self.ip_length > self.mtu
            out.append((f"too big: {self.ip_length} bytes > next-hop MTU {self.mtu}" if big
                        else f"next-hop MTU {self.mtu}", "warn"))
        if self.payload is not None:
            out.append((f"payload: {self.payload}" if self.verified else
                        f"payload (not verified): {self.payload}", tone))
        if self.next_header is not None:
            out.append((f"next header {self.next_header} ({iana_proto(self.next_header)})"
                        + (f", AH header {self.ah_length} bytes" if self.ah_length is not None else ""), ""))
        ip = f"IPv{self.ip_version} {self.src} → {self.dst}"
        if self.ttl is not None:
            ip += f", {'TTL' if self.ip_version == 4 else 'hop limit'} {self.ttl}"
        if self.df:
            ip += ", DF"
        if self.ip_length is not None:
            ip += f", {self.ip_length} bytes"
        if self.options:
            names = _V4_OPTIONS if self.ip_version == 4 else _V6_EXT
            ip += (", options " if self.ip_version == 4 else ", ") + " + ".join(
                names.get(o, str(o)) for o in self.options)
        out.append((ip, ""))
        if self.whole:
            out.append(("quoted whole: a copy of a packet already sent, counted for no SA", ""))
        else:
            out.append(("a copy of a packet already sent, unauthenticated: anyone on the path can forge "
                        "an ICMP error", ""))
        return out


def quoted_ip_header(q: bytes) -> tuple[int, int, bool | None, tuple[int, ...], int, int | None] | None:
    """(TTL/hop limit, total length, DF, IPv4 option types / IPv6 extension headers before AH,
    where AH starts, AH header bytes or None) of the quoted datagram ``q``; None when it does not
    start with an IP header that AH follows. Bounded: ``q`` is what a stranger sent."""
    if len(q) >= 20 and q[0] >> 4 == 4:
        at = (q[0] & 15) * 4
        if at < 20 or q[9] != 51:
            return None
        opts, i = [], 20
        while i < min(at, len(q)) and q[i] != 0:  # RFC 791: type, length, data; 0 ends, 1 (NOP) is one octet
            if q[i] == 1:
                i += 1
                continue
            opts.append(q[i])
            i += max(q[i + 1] if i + 1 < len(q) else 0, 2)
        ttl, total, df = q[8], (q[2] << 8) | q[3], bool(q[6] & 0x40)
    elif len(q) >= 40 and q[0] >> 4 == 6:
        nh, at, exts = q[6], 40, []
        while nh in _V6_EXT and at + 8 <= len(q) and len(exts) < 16:
            exts.append(nh)
            nh, at = q[at], at + (8 if nh == 44 else (q[at + 1] + 1) * 8)
        if nh != 51:
            return None
        opts, ttl, total, df = exts, q[7], 40 + ((q[4] << 8) | q[5]), None
    else:
        return None
    return ttl, total, df, tuple(opts), at, (q[at + 1] + 2) * 4 if at + 2 <= len(q) else None


def quoted_ah_icv(q: QuotedPacket, keys: KeyStore, total: int | None, quoted: int | None) -> str:
    """The ICV line of a quoted AH packet (``decode.quoted.QuotedPacket``, as the load checked it)."""
    from .model import iana

    k = keys.esp_lookup(q.src, q.dst, q.spi)
    k = k if k is not None and k.protocol == iana.ProtocolId.AH else None
    how = f" ({iana.name(iana.IntegTransform, k.integ)}, keys from {short_source(k.source)})" if k is not None else ""
    if q.status == "verified":
        hi = q.seq >> 32
        return f"ICV verified{how}" + (f", ESN high bits {hi} (RFC 4302 §2.5.1)" if hi else "")
    if q.status == "icv-bad":
        why = q.reason.removeprefix("ICV check failed").strip()
        return "ICV failed" + (f": {why}" if why else "") + how
    if q.status == "not-verified":
        part = f"{quoted} of {total} bytes quoted" if quoted is not None and total is not None else "part quoted"
        return f"ICV not verified: cut off, {part}"
    return f"ICV not verified: {q.reason}" + (how if q.status != "no-key" else "")


def ah_icv_text(row: FrameRow, keys: KeyStore, verifier: AhVerifier | None) -> str:
    """The one line both detail views (TUI pane, ``packets -V``) give an AH packet's ICV check."""
    from .model import iana

    k = keys.esp_lookup(row.src, row.dst, row.spi or 0) if row.spi is not None else None
    k = k if k is not None and k.protocol == iana.ProtocolId.AH else None
    how = f" ({iana.name(iana.IntegTransform, k.integ)}, keys from {short_source(k.source)})" if k is not None else ""
    st = verifier.stats.get((row.src, row.dst, row.spi or 0)) if verifier is not None else None
    said = row.info.split(" — ", 1)[1] if " — " in row.info else ""  # the row's own note (NAT, not checked)
    if row.status == "verified":
        hi = (row.seq or 0) >> 32
        return f"ICV verified{how}" + (f", ESN high bits {hi} (RFC 4302 §2.5.1)" if hi else "")
    if row.status == "icv-bad":
        why = (said or (st.last_reason if st is not None else "")).removeprefix("ICV check failed").strip()
        return "ICV failed" + (f" {why}" if why.startswith("with") else f": {why}" if why else "") + how
    if row.status == "unverified":
        return f"ICV not verified: {said.removeprefix('ICV not checked: ') or 'not checked'}{how}"
    if row.status == "no-key":
        return "ICV not verified: no AH key for this SA (add its keys with -k)"
    return "ICV not verified: no AH keys loaded (add them with -k to check it, RFC 4302 §3.3.3)"


@dataclass(slots=True, frozen=True)
class FrameDetail:
    """Everything a view shows about one frame; computed on demand."""

    row: FrameRow
    raw: bytes  # the frame as captured (empty when it could not be re-read)
    ike: IkeMessage | None = None
    esp: EspPacket | None = None
    esp_result: EspResult | None = None
    malformed: str | None = None
    inner_summary: str | None = None  # one line per layer of the decrypted inner packet
    inner: bytes | None = None
    linktype: int = -1  # of ``raw`` (LINKTYPE_*), for a dissector that reads the frame as captured
    # ESP inside the outer ESP (nested), outermost first: each layer's packet and its decryption
    esp_layers: tuple[tuple[EspPacket, EspResult], ...] = ()
    quoted_esp: QuotedEsp | None = None  # an ICMP error's quote of an ESP packet, decrypted for display
    quoted_ah: QuotedAh | None = None  # an ICMP error's quote of an AH packet, as the load checked it
    ah: AhDetail | None = None  # an AH packet (its ESP, if it protects one, is ``esp``)


class FrameViews:
    """``Session.row``, ``Session.detail`` and their helpers; ``Session`` sets these attributes while loading."""

    keys: KeyStore
    rows: RowStore | deque[FrameRow] | NoRows
    paths: list[Path]
    esp_decryptor: EspDecryptor
    inner: InnerStore
    ike_messages: dict[int, IkeMessage]
    _frame_offsets: FrameOffsets
    _live_raw: OrderedDict[int, RawFrame]
    ah_verifier: AhVerifier | None
    quoted: QuotedStore

    def row(self, frame: int) -> FrameRow | None:
        rows = self.rows
        if type(rows) is RowStore and 0 < frame <= len(rows) and rows.frame_at(frame - 1) == frame:
            return rows[frame - 1]  # one row per frame: the common case
        # Rows are in frame order (a frame may have several rows, a live ring drops old ones).
        i = bisect.bisect_left(rows, frame, key=lambda r: r.frame)
        return rows[i] if i < len(rows) and rows[i].frame == frame else None

    def detail(self, frame: int) -> FrameDetail | None:
        """Decode one frame again, fully, for a detail view."""
        row = self.row(frame)
        if row is None:
            return None
        raw = self._reread(frame)
        ike = self.ike_messages.get(frame)
        esp = res = None
        malformed = None
        inner = inner_summary = None
        layers: tuple[tuple[EspPacket, EspResult], ...] = ()
        ah = None
        if row.kind == "AH":
            ah = self._ah_detail(row, raw)
        if raw is not None and row.kind in ("ESP", "AH"):  # (AH: the ESP it protects, if any)
            pkt = next((p for p in Decoder().decode_all(raw) if isinstance(p, EspPacket)), None)
            if pkt is not None:
                esp = pkt
                res = self.esp_decryptor.peek(pkt, seq_hi=(row.seq or 0) >> 32 if row.kind == "ESP" else 0)
                inner = res.inner
                if inner and res.next_header is not None:
                    layers = self._peek_nested(frame, pkt, inner, res.next_header)
                    if layers and layers[-1][1].inner is not None:
                        inner = layers[-1][1].inner
                if inner:
                    lines = [describe_inner(res.inner, res.next_header)] if layers else []
                    lines += [f"ESP SPI {spi_text(p.spi)} seq {p.seq} {p.src} → {p.dst}: "
                              + ("decrypted" if r.ok else f"{r.status} — {r.reason}") for p, r in layers]
                    last = layers[-1][1] if layers else res
                    if last.inner is not None:
                        lines.append(describe_inner(last.inner, last.next_header))
                    inner_summary = "\n".join(lines)
        elif ike is not None and ike.decrypted and ike.header.major == 2:
            inner = self._ike_plaintext(ike)
        elif row.kind == "MALFORMED":
            malformed = row.info
        quoted = self._quoted_esp(frame, raw) if raw is not None and row.kind == "OTHER" else None
        quoted_ah = self.quoted_ah(frame, raw) if row.kind == "OTHER" else None
        return FrameDetail(
            row=row, raw=raw.data if raw is not None else b"", ike=ike, esp=esp, esp_result=res,
            malformed=malformed, inner=inner, inner_summary=inner_summary, esp_layers=layers,
            linktype=raw.linktype if raw is not None else -1, quoted_esp=quoted, ah=ah, quoted_ah=quoted_ah,
        )

    def _ah_detail(self, row: FrameRow, raw: RawFrame | None) -> AhDetail:
        pkt = next((p for p in Decoder().decode_all(raw) if type(p) is AhPacket), None) if raw is not None else None
        return AhDetail(row.spi or 0, row.seq or 0, row.src, row.dst, pkt.next_header if pkt is not None else None,
                        len(pkt.data) if pkt is not None else None, row.status,
                        ah_icv_text(row, self.keys, getattr(self, "ah_verifier", None)),
                        iana_proto(pkt.next_header) if pkt is not None else "")

    def quoted_esp(self, frame: int) -> QuotedEsp | None:
        """The ESP packet the ICMP error in ``frame`` quotes, opened again, or None (frames whose
        quote the load opened only: ``self.quoted``)."""
        store = getattr(self, "quoted", None)
        if store is None or store.get(frame) is None:
            return None
        raw = self._reread(frame)
        return self._quoted_esp(frame, raw) if raw is not None else None

    def _quoted_esp(self, frame: int, raw: RawFrame) -> QuotedEsp | None:
        """The ESP packet the ICMP error in ``raw`` quotes, opened again (see :class:`QuotedEsp`)."""
        from . import session_quoted

        err, qraw = session_quoted.error_in(raw)  # (inside a tunnel: the tunnelled packet)
        got = session_quoted.open_quote(self.esp_decryptor, qraw, err) if err is not None and err.protocol == "ESP" else None
        if got is None:
            return None
        q, plain, n = got
        dg = session_quoted.quoted_datagram(qraw)
        total = None
        if dg is not None and len(dg) >= 4 and dg[0] >> 4 == 4:
            total = (dg[2] << 8) | dg[3]
        elif dg is not None and len(dg) >= 6 and dg[0] >> 4 == 6:
            total = 40 + ((dg[4] << 8) | dg[5])
        mtu = err.mtu if err is not None and err.too_big else None
        summary = None
        if q.verified:
            note = (f"decrypted {q.plain_len} bytes, ICV verified: a copy of a packet already sent, "
                    "counted for no SA")
            summary = describe_inner(plain, q.next_header) if plain else None
        elif plain is not None:
            note = f"decrypted {len(plain)} bytes, not verified: {q.reason}"
            summary = describe_inner(plain, None)
        else:
            note = q.reason if q.status == "no-key" else f"{q.status}: {q.reason}"
        return QuotedEsp(q.src, q.dst, q.spi, q.seq, n, plain, note, summary, q.verified, mtu, total)

    def quoted_ah(self, frame: int, raw: RawFrame | None = None) -> QuotedAh | None:
        """The AH packet the ICMP error in ``frame`` quotes (see :class:`QuotedAh`), or None. The
        verdict is the load's (``self.quoted``); the quoted IP header is read from the frame again."""
        store = getattr(self, "quoted", None)
        q = store.ah(frame) if store is not None else None
        if q is None:
            return None
        raw = raw if raw is not None else self._reread(frame)
        from . import session_quoted

        err, qraw = session_quoted.error_in(raw) if raw is not None else (None, None)
        dg = session_quoted.quoted_datagram(qraw) if qraw is not None else None
        hdr = quoted_ip_header(dg) if dg is not None else None
        ttl, total, df, opts, _at, ah_len = hdr if hdr is not None else (None, None, None, (), 0, None)
        n = None if dg is None else min(len(dg), total) if total is not None else len(dg)
        show = q.inner is not None and q.status != "icv-bad"  # a packet changed after signing: not shown
        mtu = err.mtu if err is not None and err.too_big else None
        return QuotedAh(q.src, q.dst, 6 if ":" in q.src else 4, ttl, total, df, opts, n, q.whole, q.spi, q.seq,
                        q.next_header, ah_len, q.status, q.reason, quoted_ah_icv(q, self.keys, total, n),
                        q.inner.info() if show and q.inner is not None else None, mtu)

    def _peek_nested(self, frame: int, outer: EspPacket, inner: bytes, nh: int) -> tuple[tuple[EspPacket, EspResult], ...]:
        """The nested ESP layers of one frame decrypted again (as :meth:`_nested` did while loading,
        with the high sequence bits it inferred then), without touching any counter."""
        known = {(x.spi, x.dst): x.seq >> 32 for x in self.inner.nested.get(frame, ())}
        src, dst = outer.src, outer.dst
        out: list[tuple[EspPacket, EspResult]] = []
        for _depth in range(MAX_NESTED):
            found = esp_inside(inner, nh)
            if found is None or len(found[0]) < 8:
                break
            esp, isrc, idst = found
            if isrc:
                af = socket.AF_INET if len(isrc) == 4 else socket.AF_INET6
                src, dst = socket.inet_ntop(af, isrc), socket.inet_ntop(af, idst)
            spi, seq = _ESP_HDR.unpack_from(esp)
            pkt = EspPacket(frame, outer.ts, src, dst, spi, seq, bytes(esp), ip_version=6 if ":" in src else 4)
            res = self.esp_decryptor.peek(pkt, seq_hi=known.get((spi, dst), 0))
            out.append((pkt, res))
            if res.inner is None or res.next_header is None:
                break
            inner, nh = res.inner, res.next_header
        return tuple(out)

    def _ike_plaintext(self, msg: IkeMessage) -> bytes | None:
        """The decrypted body of an IKEv2 SK payload (RFC 7296 §3.14: payloads, padding removed),
        for the hex view's "decrypted" side; decrypted again on demand rather than kept per message."""
        from .crypto.ike_sk import decrypt_message

        keys = self.keys.ike_lookup(msg.header.spi_i, msg.header.spi_r)
        if keys is None:
            return None
        try:
            return decrypt_message(msg.raw, keys)[1]
        except Exception:  # noqa: BLE001 - a view must not die on a message it decrypted once already
            return None

    def other_addresses(self, frame: int) -> tuple[str, str]:
        """(Source, Destination) of an OTHER row as the packet list shows it: a plain IP frame's IP
        addresses (inner store), else a non-IP frame's MACs (:meth:`link_addresses`)."""
        src, dst = self.inner.addresses(frame)
        return (src, dst) if src or dst else self.link_addresses(frame)

    def other_columns(self, frame: int, info: str) -> tuple[str, str, str]:
        """(Source, Destination, Info) of an OTHER row the row store keeps no addresses for, as the
        packet list shows it: a plain IP frame's addresses; a non-IP frame's MACs, and an ARP
        frame's Info as tshark's (``ARP Who has 10.2.0.7? Tell 10.1.0.5``), read from the capture
        again (inside a bridging tunnel, from the tunnelled frame). The row keeps ``ARP``: the
        text is for display (``ipsecscope.info == "ARP"`` still finds every ARP frame)."""
        src, dst = self.inner.addresses(frame)
        if src or dst:
            return src, dst, info
        from .decode.link import NOT_IP, ip_offset, link_addresses
        from .model.packets import arp_info

        raw = self._reread(frame)
        if raw is None:
            return "", "", info
        inside = self._tunnelled_ethernet(raw)
        linktype, data = (1, inside) if inside is not None else (raw.linktype, bytes(raw.data))
        src, dst = link_addresses(linktype, data[:20])
        if info == "ARP":
            ver, off = ip_offset(linktype, data)
            text = arp_info(data[off:off + 28]) if ver == NOT_IP else None
            if text:
                # the protocol first, as every OTHER row's Info ("DNS ...", "ICMP ..."), said once
                info = text if text.startswith(("ARP ", "Gratuitous ARP")) else f"ARP {text}"
        return src, dst, info

    def link_addresses(self, frame: int) -> tuple[str, str]:
        """A non-IP frame's (source, destination) MACs for the packet list and ``packets`` text,
        read from the capture again (the row store keeps none); ("", "") when not available."""
        from .decode.link import link_addresses

        raw = self._reread(frame)
        if raw is None:
            return "", ""
        inside = self._tunnelled_ethernet(raw)
        return link_addresses(1, inside[:20]) if inside is not None else link_addresses(raw.linktype, bytes(raw.data[:20]))

    def _tunnelled_ethernet(self, raw: RawFrame) -> bytes | None:
        """The Ethernet frame that is no IP (ARP...) a bridging or mirror tunnel (VXLAN, Geneve,
        GRE, ERSPAN) carries in ``raw``, whose MACs tshark's columns show; None for any other frame.
        Only frames the load found inside a tunnel are decoded again."""
        tunnels = getattr(getattr(self, "decoder", None), "tunnels", None)
        if not tunnels or tunnels.get(raw.index) is None:
            return None
        dec = Decoder()
        dec.decode_all(raw)
        ti = dec.tunnel_inner
        return bytes(ti[3][ti[4]:]) if ti is not None and ti[0] == raw.index and not ti[2] else None

    def _reread(self, frame: int) -> RawFrame | None:
        loc = self._frame_offsets.get(frame)
        if loc is None:
            return self._live_raw.get(frame)
        from .capture import read_frame_at

        path_index, offset, linktype = loc
        return read_frame_at(self.paths[path_index], offset, frame, linktype)


_PROTO_NAMES = {1: "ICMP", 4: "IPv4", 6: "TCP", 17: "UDP", 41: "IPv6", 47: "GRE", 50: "ESP", 58: "ICMPv6", 59: "none"}


def iana_proto(n: int) -> str:
    return _PROTO_NAMES.get(n, str(n))


def describe_inner(inner: bytes, next_header: int | None) -> str:
    """A one-screen dissection of a decrypted inner packet. Scapy is fine here: one packet, on demand."""
    try:
        from scapy.layers.inet import IP
        from scapy.layers.inet6 import IPv6

        if next_header == 4 or (next_header is None and inner[:1] and inner[0] >> 4 == 4):
            return IP(inner).summary()
        if next_header == 41:
            return IPv6(inner).summary()
        return f"{iana_proto(next_header or 0)} payload, {len(inner)} bytes (transport mode)"
    except Exception as exc:  # scapy dissectors raise many things on odd bytes; a view must not die
        return f"{len(inner)} bytes (could not dissect: {exc})"
