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
from .model.packets import AhPacket, EspPacket, FrameRow, IcmpError, RawFrame
from .rowstore import FrameOffsets, NoRows, RowStore

if TYPE_CHECKING:
    from .crypto.ah import AhVerifier
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
        return FrameDetail(
            row=row, raw=raw.data if raw is not None else b"", ike=ike, esp=esp, esp_result=res,
            malformed=malformed, inner=inner, inner_summary=inner_summary, esp_layers=layers,
            linktype=raw.linktype if raw is not None else -1, quoted_esp=quoted, ah=ah,
        )

    def _ah_detail(self, row: FrameRow, raw: RawFrame | None) -> AhDetail:
        pkt = next((p for p in Decoder().decode_all(raw) if type(p) is AhPacket), None) if raw is not None else None
        return AhDetail(row.spi or 0, row.seq or 0, row.src, row.dst, pkt.next_header if pkt is not None else None,
                        len(pkt.data) if pkt is not None else None, row.status,
                        ah_icv_text(row, self.keys, getattr(self, "ah_verifier", None)),
                        iana_proto(pkt.next_header) if pkt is not None else "")

    def _quoted_esp(self, frame: int, raw: RawFrame) -> QuotedEsp | None:
        """The ESP packet the ICMP error in ``raw`` quotes, opened again (see :class:`QuotedEsp`)."""
        from . import session_quoted

        err = next((p for p in Decoder(icmp_errors=True).decode_all(raw) if type(p) is IcmpError), None)
        got = session_quoted.open_quote(self.esp_decryptor, raw, err) if err is not None and err.protocol == "ESP" else None
        if got is None:
            return None
        q, plain, n = got
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
        return QuotedEsp(q.src, q.dst, q.spi, q.seq, n, plain, note, summary, q.verified)

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

    def link_addresses(self, frame: int) -> tuple[str, str]:
        """A non-IP frame's (source, destination) MACs for the packet list and ``packets`` text,
        read from the capture again (the row store keeps none); ("", "") when not available."""
        from .decode.link import link_addresses

        raw = self._reread(frame)
        return link_addresses(raw.linktype, bytes(raw.data[:20])) if raw is not None else ("", "")

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
