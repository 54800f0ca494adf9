"""Packet detail pane: decoded IKE payload tree / ESP fields, decrypted inner summary, hex view.

Only reads :class:`~ipsecscope.session.FrameDetail` and model objects; nothing is parsed here.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import TabbedContent, TabPane, Tree
from textual.widgets.tree import TreeNode

from ...model import iana
from ...model import ike as m
from ...model.idtext import msg_id_text, spi_text
from ...model.sa import endpoint_text
from ...state.names import exchange_name
from ..plain import PlainTree
from .sa_detail import integ_name, short_source

if TYPE_CHECKING:
    from ...dissect import Node

# Which enum names an int field, per payload class (v2 / v1).
_FIELD_ENUMS_V2: dict[str, type[IntEnum]] = {
    "exchange": iana.ExchangeType,
    "next_payload": iana.PayloadType,
    "first_payload": iana.PayloadType,
    "group": iana.DhGroup,
    "id_type": iana.IdType,
    "method": iana.AuthMethod,
    "notify_type": iana.NotifyType,
    "protocol": iana.ProtocolId,
    "encoding": iana.CertEncoding,
    "cfg_type": iana.CfgType,
    "ts_type": iana.TsType,
    "code": iana.EapCode,
    "eap_type": iana.EapType,
}
_FIELD_ENUMS_V1: dict[str, type[IntEnum]] = {
    "exchange": iana.Ikev1Exchange,
    "next_payload": iana.Ikev1Payload,
    "id_type": iana.Ikev1IdType,
    "notify_type": iana.Ikev1NotifyType,
    "protocol": iana.Ikev1ProtocolId,
    "encoding": iana.Ikev1CertEncoding,
    "cfg_type": iana.Ikev1CfgType,
    "doi": iana.Ikev1Doi,
}
_TRANSFORM_ID_ENUM: dict[int, type[IntEnum]] = {
    iana.TransformType.ENCR: iana.EncrTransform,
    iana.TransformType.PRF: iana.PrfTransform,
    iana.TransformType.INTEG: iana.IntegTransform,
    iana.TransformType.KE: iana.DhGroup,
    iana.TransformType.ESN: iana.EsnTransform,
}
_SKIP = {"type", "critical", "raw"}
# IKEv1 transform attributes: (attribute enum, value enums by attribute) for phase 1 and the IPsec DOI.
_V1_ATTRS = (iana.Ikev1Attribute, {
    1: iana.Ikev1EncrAlgorithm, 2: iana.Ikev1HashAlgorithm, 3: iana.Ikev1AuthMethod, 4: iana.DhGroup,
    5: iana.Ikev1GroupType, 11: iana.Ikev1LifeType,
})
_V1_IPSEC_ATTRS = (iana.Ikev1IpsecAttribute, {
    1: iana.Ikev1LifeType, 3: iana.DhGroup, 4: iana.Ikev1EncapsulationMode, 5: iana.Ikev1AuthAlgorithm,
})
_V1_TRANSFORM_IDS = {1: iana.Ikev1IsakmpTransformId, 2: iana.Ikev1AhTransformId, 3: iana.Ikev1IpsecTransformId,
                     4: iana.Ikev1IpcompTransformId}


_IKE_HEADER_LEN = 28  # RFC 7296 §3.1 / RFC 2408 §3.1: the same 28 bytes in IKEv1 and IKEv2


def payload_spans(raw: bytes, types: list[int]) -> list[tuple[int, int] | None]:
    """Where each cleartext payload lies in an IKE message: ``(start, end)`` offsets into ``raw``.

    Walks the generic payload headers (RFC 7296 §3.2: next payload, flags, 2-byte length) from the
    first-payload field of the IKE header. ``types`` are the decoded payloads' types in wire order;
    a payload whose walked type or length does not agree gets None, and so does everything after it
    (a malformed chain highlights nothing rather than the wrong bytes).
    """
    spans: list[tuple[int, int] | None] = [None] * len(types)
    if len(raw) < _IKE_HEADER_LEN:
        return spans
    nxt, pos = raw[16], _IKE_HEADER_LEN
    for i, want in enumerate(types):
        if nxt != want or pos + 4 > len(raw):
            break
        length = int.from_bytes(raw[pos + 2:pos + 4], "big")
        if length < 4 or pos + length > len(raw):
            break
        spans[i] = (pos, pos + length)
        nxt, pos = raw[pos], pos + length
    return spans


def frame_spans(frame: bytes, msg: m.IkeMessage) -> list[tuple[int, int] | None]:
    """:func:`payload_spans` moved to offsets in the captured frame (None where unknown)."""
    spans = payload_spans(msg.raw, [p.type for p in msg.payloads])
    start = frame.find(msg.raw) if msg.raw else -1  # after any UDP 4500 non-ESP marker (RFC 3948 §2.2)
    if start < 0:
        return [None] * len(spans)
    return [None if sp is None else (start + sp[0], start + sp[1]) for sp in spans]


def _bytes(b: bytes, limit: int = 24) -> str:
    if not b:
        return "(empty)"
    h = b[:limit].hex()
    return f"{h}… ({len(b)} bytes)" if len(b) > limit else f"{h} ({len(b)} bytes)"


def _value(name: str, value: Any, version: int) -> str:
    enums = _FIELD_ENUMS_V2 if version == 2 else _FIELD_ENUMS_V1
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and name in enums:
        return f"{iana.name(enums[name], value)} ({value})"
    if isinstance(value, bytes):
        return _bytes(value)
    return str(value)


def payload_name(p: Any, version: int) -> str:
    enum = iana.PayloadType if version == 2 else iana.Ikev1Payload
    # (IKEv1 phase 1's 15/16 are NAT-T drafts' NAT-D/NAT-OA, not GDOI's SAK/SAT: model.ike)
    n = (version == 1 and m.phase1_payload_label(p)) or iana.name(enum, p.type)
    if isinstance(p, m.NotifyPayload):
        nenum = iana.NotifyType if version == 2 else iana.Ikev1NotifyType
        n += f" {iana.name(nenum, p.notify_type)}"
    elif isinstance(p, m.DeletePayload):
        n += f" {iana.name(iana.ProtocolId, p.protocol)} ×{len(p.spis)}"
    elif isinstance(p, m.IdPayload):
        n += f" {p.value}"
    elif isinstance(p, m.VendorPayload) and p.name:
        n += f" {p.name}"
    elif isinstance(p, m.KePayload) and version == 2:
        n += f" {iana.name(iana.DhGroup, p.group)}"
    return n + (" (critical)" if p.critical else "")


def _add_payload(node: TreeNode, p: Any, version: int, span: tuple[int, int] | None = None) -> None:
    pn = node.add(Text(payload_name(p, version), "bold"), expand=False, data=span)
    if isinstance(p, m.SaPayload):
        for prop in p.proposals:
            pname = iana.name(iana.ProtocolId if version == 2 else iana.Ikev1ProtocolId, prop.protocol)
            prn = pn.add(f"Proposal #{prop.num} {pname}" + (f" SPI {prop.spi.hex()}" if prop.spi else ""),
                         expand=True)
            attr_enum, value_enums = _V1_ATTRS if prop.protocol == iana.Ikev1ProtocolId.PROTO_ISAKMP else _V1_IPSEC_ATTRS
            for t in prop.transforms:
                if version == 2:
                    enum = _TRANSFORM_ID_ENUM.get(t.type)
                    label = f"{iana.name(iana.TransformType, t.type)}: " + (
                        iana.name(enum, t.id) if enum else str(t.id))
                else:
                    id_enum = _V1_TRANSFORM_IDS.get(prop.protocol)
                    label = f"Transform {iana.name(id_enum, t.id) if id_enum else t.id}"
                if t.key_length:
                    label += f" {t.key_length}-bit"
                tn = prn.add_leaf(label) if version == 2 or not t.attrs else prn.add(label)
                if version == 1:
                    for a_type, a_val in t.attrs:
                        if isinstance(a_val, bytes):
                            val = a_val.hex()
                        elif a_type in value_enums:
                            val = f"{iana.name(value_enums[a_type], a_val)} ({a_val})"
                        else:
                            val = str(a_val)
                        tn.add_leaf(f"{iana.name(attr_enum, a_type)} = {val}")
        return
    if isinstance(p, m.TsPayload):
        for ts in p.selectors:
            pn.add_leaf(str(ts))
        return
    if isinstance(p, m.DeletePayload):
        for spi in p.spis:
            pn.add_leaf(f"SPI {spi.hex()}")
        return
    for f in dataclasses.fields(p):
        if f.name in _SKIP or (version == 1 and f.name == "group"):  # v1: the group is in the SA
            continue
        value = getattr(p, f.name)
        if f.name == "decoded" and isinstance(value, dict):
            for k, v in value.items():
                pn.add_leaf(f"{k}: {v:#x}" if isinstance(v, int) and k == "spi" else f"{k}: {v}")
            continue
        if f.name == "attributes" and isinstance(value, tuple):
            for a_type, a_val in value:
                cenum = iana.ConfigAttribute if version == 2 else iana.Ikev1ConfigAttribute
                pn.add_leaf(f"{iana.name(cenum, a_type)} = {_value('', a_val, version)}")
            continue
        pn.add_leaf(f"{f.name}: {_value(f.name, value, version)}")


def fill_ike(root: TreeNode, msg: m.IkeMessage, frame: bytes = b"") -> None:
    h = msg.header
    v = h.major
    title = f"IKEv{v} {exchange_name(h.exchange, v)}"
    if v == 2:
        title += " response" if h.is_response else " request"
    top = root.add(Text(title, "bold cyan"), expand=True)
    hn = top.add("Header", expand=False)
    hn.add_leaf(f"SPIi {h.spi_i.hex()}")
    hn.add_leaf(f"SPIr {h.spi_r.hex()}")
    hn.add_leaf(f"version {h.major}.{h.minor}")
    hn.add_leaf(f"message ID {msg_id_text(h.msg_id)}")
    flags = []
    if v == 2:
        flags = [n for bit, n in ((0x08, "Initiator"), (0x10, "Version"), (0x20, "Response")) if h.flags & bit]
    elif h.flags & 0x01:
        flags = ["Encryption"]
    hn.add_leaf(f"flags 0x{h.flags:02x} {' '.join(flags)}")
    hn.add_leaf(f"length {h.length}")
    hn.add_leaf(f"{endpoint_text(msg.src, msg.sport)} → {endpoint_text(msg.dst, msg.dport)} ({msg.transport}"
                + (", non-ESP marker" if msg.non_esp_marker else "")
                + (", IP fragmented" if msg.ip_fragmented else "") + ")")
    if msg.reassembled_from:
        # IKEv1 Fragment payloads (132): this frame held the last piece; below is the whole message
        top.add_leaf(Text(f"reassembled from IKEv1 fragments in frames {', '.join(map(str, msg.reassembled_from))}",
                          "cyan"))
    spans = frame_spans(frame, msg) if frame else [None] * len(msg.payloads)
    for p, span in zip(msg.payloads, spans, strict=True):
        _add_payload(top, p, v, span)
    if msg.encrypted:
        if msg.decrypted:
            label = Text("Decrypted payloads", "bold green")
            if msg.icv_ok is False:
                label = Text("Decrypted payloads (ICV check FAILED)", "bold red")
            elif msg.icv_ok is None:
                label.append(" (integrity not checked)", "yellow")
            dn = top.add(label, expand=True)
            for p in msg.inner:
                _add_payload(dn, p, v)
        else:
            note = getattr(msg, "crypto_note", None)
            top.add_leaf(Text("Encrypted: " + (note or "no IKE keys for this SA (add a key file: a)"), "yellow"))
    if msg.malformed:
        top.add_leaf(Text(f"Malformed: {msg.malformed}", "bold magenta"))


def fill_ah(root: TreeNode, ah: Any) -> None:
    """An AH packet's fields and its ICV check (``session_detail.AhDetail``)."""
    top = root.add(Text(f"AH SPI {spi_text(ah.spi)} seq {ah.seq}", "bold green"), expand=True)
    top.add_leaf(f"{ah.src} → {ah.dst}")
    if ah.next_header is not None:
        top.add_leaf(f"next header {ah.next_header} ({ah.next_name}); AH and what it protects: {ah.length} bytes")
    else:
        top.add_leaf("reassembled from IP fragments: this frame holds the last of them")
    top.add_leaf(Text(ah.icv, {"verified": "bold green", "icv-bad": "bold red"}.get(ah.status, "yellow")))


def fill_esp(root: TreeNode, detail: Any) -> TreeNode | None:
    """The ESP fields and decryption result; returns the "Inner packet" node (None: nothing decrypted)."""
    esp = detail.esp
    res = detail.esp_result
    row = detail.row
    seq = row.seq if row.seq is not None and row.kind == "ESP" else esp.seq  # (an AH row: ESP under AH)
    top = root.add(Text(f"ESP SPI {spi_text(esp.spi)} seq {seq}", "bold green"), expand=True)
    top.add_leaf(f"{endpoint_text(esp.src, esp.sport)} → {endpoint_text(esp.dst, esp.dport)}")
    top.add_leaf(f"transport: {esp.transport}" + (" (UDP-encapsulated, RFC 3948)" if esp.udp_encap else ""))
    top.add_leaf(f"sequence (wire, low 32 bits): {esp.seq}")
    top.add_leaf(f"ESP length: {esp.length} bytes")
    if res is not None:
        status = res.status
        style = {"ok": "bold green", "icv_failed": "bold red", "no_key": "yellow"}.get(status, "magenta")
        # Closed when it worked: on a 24-line terminal the inner packet's tree is what comes next.
        sn = top.add(Text(f"Decryption: {status}" + (f" — {res.reason}" if res.reason else ""), style),
                     expand=status != "ok")
        if res.keys is not None:
            sn.add_leaf(f"cipher {iana.name(iana.EncrTransform, res.keys.encr)}, "
                        f"integrity {integ_name(res.keys.integ, res.keys.encr)}")
            sn.add_leaf(f"keys from {short_source(res.keys.source)}")
        if res.seq_hi:
            sn.add_leaf(f"ESN high bits {res.seq_hi} (RFC 4303 §3.3.3)")
        if res.next_header is not None:
            sn.add_leaf(f"next header {res.next_header}, pad length {res.pad_len}")
    for pkt, lres in getattr(detail, "esp_layers", ()):
        # ESP inside the outer ESP (nested): each layer is its own SA with its own keys
        style = {"ok": "bold green", "icv_failed": "bold red", "no_key": "yellow"}.get(lres.status, "magenta")
        ln = top.add(Text(f"Nested ESP SPI {spi_text(pkt.spi)} seq {pkt.seq}", "bold green"), expand=True)
        ln.add_leaf(f"{pkt.src} → {pkt.dst}, {pkt.length} bytes")
        ln.add_leaf(Text(f"Decryption: {lres.status}" + (f" — {lres.reason}" if lres.reason else ""), style))
        if lres.keys is not None:
            ln.add_leaf(f"keys from {short_source(lres.keys.source)}")
    if detail.inner_summary:
        label = Text("Inner packet ", "bold")
        label.append(" / ".join(detail.inner_summary.splitlines()), "not bold")
        return top.add(label, expand=True)
    return None


def fill_layers(anchor: TreeNode, layers: list[Node], note: str | None, spans: bool) -> None:
    """Put a protocol tree (tshark's, or scapy's with ``note`` saying why) under ``anchor``.

    ``spans``: the hex view shows the dissected bytes, so a node marks its bytes there when chosen.
    The innermost protocol (the one the packet is about: ICMP, DNS...) opens; the others stay closed.
    """
    anchor.remove_children()
    if note:
        anchor.add_leaf(Text(note, "yellow"))
    shown = [n for n in layers if n.name != "frame"]  # the record we wrote for tshark, not the capture's
    opened = next((n for n in reversed(shown) if n.name not in ("data", "raw", "") and n.children), None)

    def add(parent: TreeNode, n: Node) -> None:
        data = n.span if spans else None
        if not n.children:
            parent.add_leaf(Text(n.label), data=data)
            return
        child = parent.add(Text(n.label, "bold" if parent is anchor else ""), expand=n is opened, data=data)
        for c in n.children:
            add(child, c)

    for n in shown:
        add(anchor, n)


def fill_quoted_esp(root: TreeNode, q: Any) -> None:
    """The ESP packet an ICMP error quotes (``session_detail.QuotedEsp``): whole and ICV-verified,
    or decrypted as far as a cut-off quote goes (not verified); the same lines, in the same order,
    as ``packets -V`` prints under the frame."""
    lines = q.lines()
    top = root.add(Text(lines[0][0], _TONES[lines[0][1]]), expand=True)
    for text, tone in lines[1:]:
        top.add_leaf(Text(text, _TONES.get(tone, "")))


_TONES = {"head": "bold", "ok": "green", "bad": "bold red", "warn": "yellow", "dim": "dim", "": ""}


def fill_quoted_ah(root: TreeNode, q: Any) -> None:
    """The AH packet an ICMP error quotes (``session_detail.QuotedAh``): the same lines, in the same
    order, as ``packets -V`` prints under the frame; the ICV verdict first."""
    lines = q.lines()
    top = root.add(Text(lines[0][0], _TONES[lines[0][1]]), expand=True)
    for text, tone in lines[1:]:
        top.add_leaf(Text(text, _TONES.get(tone, "")))


class HexView(ScrollView):
    """Offset | hex | ASCII, 16 bytes a line (8 on narrow panes); only visible lines rendered."""

    DEFAULT_CSS = "HexView { scrollbar-size-vertical: 1; overflow-x: hidden; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.data = b""
        self.highlight: tuple[int, int] | None = None  # [start, end) byte range shown in reverse

    def set_highlight(self, span: tuple[int, int] | None) -> None:
        """Mark bytes ``span`` (e.g. the payload chosen in the tree) and scroll them into view."""
        if span is not None and not (0 <= span[0] < span[1] <= len(self.data)):
            span = None
        self.highlight = span
        if span is not None:
            n = self.per_line
            first, last = span[0] // n, (span[1] - 1) // n
            top = round(self.scroll_y)
            height = self.scrollable_content_region.height or self.size.height
            if first < top or last >= top + height:
                self.scroll_to(y=first, animate=False)
        self.refresh()

    @property
    def per_line(self) -> int:
        width = self.scrollable_content_region.width or self.size.width
        return 16 if width >= 70 else (8 if width >= 38 else 4)

    def set_data(self, data: bytes) -> None:
        self.data = data
        self.highlight = None
        self.scroll_to(y=0, animate=False)
        self._resize()

    def _resize(self) -> None:
        n = self.per_line
        self.virtual_size = Size(self.size.width, (len(self.data) + n - 1) // n)
        self.refresh()

    def on_resize(self) -> None:
        self._resize()

    def render_line(self, y: int) -> Strip:
        n = self.per_line
        line = round(self.scroll_y) + y
        width = self.scrollable_content_region.width or self.size.width
        chunk = self.data[line * n:(line + 1) * n]
        if not chunk:
            return Strip.blank(width, self.rich_style)
        base = self.rich_style
        start = line * n
        lo, hi = self.highlight or (0, 0)
        lo, hi = max(lo - start, 0), min(hi - start, len(chunk))
        if lo >= hi:  # nothing marked on this line: one segment per column, as before
            hexes = " ".join(f"{b:02x}" for b in chunk).ljust(n * 3 - 1)
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
            segs = [Segment(f"{start:04x} ", base + Style(dim=True)), Segment(hexes, base),
                    Segment("  " + text, base + Style(color="cyan"))]
            return Strip(segs).crop_extend(0, width, base)
        mark = base + Style(reverse=True, bold=True)
        cyan = base + Style(color="cyan")
        segs = [Segment(f"{start:04x} ", base + Style(dim=True))]
        for i, x in enumerate(chunk):  # byte by byte; the gap between two marked bytes is marked too
            segs.append(Segment(f"{x:02x}", mark if lo <= i < hi else base))
            if i + 1 < len(chunk):
                segs.append(Segment(" ", mark if lo <= i and i + 1 < hi else base))
        segs.append(Segment(" " * (3 * (n - len(chunk))) + "  ", base))
        for i, x in enumerate(chunk):
            segs.append(Segment(chr(x) if 32 <= x < 127 else ".", cyan + Style(reverse=True, bold=True)
                                if lo <= i < hi else cyan))
        return Strip(segs).crop_extend(0, width, base)

    def highlighted_bytes(self) -> bytes:
        """The marked bytes (for tests and copy/paste)."""
        return self.data[self.highlight[0]:self.highlight[1]] if self.highlight else b""


class PacketDetail(Horizontal):
    """Shows one FrameDetail: a tree on the left, the raw bytes on the right.

    Below the fields ipsecscope decodes, the frame gets Wireshark's full protocol tree (tshark through
    pyshark): of the decrypted inner packet for ESP, of the frame itself otherwise. tshark runs in a
    worker, one frame at a time (the worker is cancelled, and tshark killed, when the selection moves
    on), and trees are cached by content. Without tshark, or when it fails, scapy's dissection is
    shown under a one-line note saying why.
    """

    CACHE = 64  # trees kept (by bytes + link type): going back and forth costs no tshark run

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trees: OrderedDict[tuple[int, bytes], tuple[str | None, list[Node]]] = OrderedDict()
        self._pending: tuple[int, bytes] | None = None
        self._deferred: tuple | None = None  # a dissection waiting for the pane to be shown
        # While a capture loads the loader needs the CPU (a tshark tree costs about as much as
        # reading 100k frames): the app holds deep dissection until the load ends (release()).
        self.hold = False

    def compose(self) -> ComposeResult:
        tree: Tree[None] = PlainTree("frame", id="detail-tree")
        tree.show_root = False
        yield tree
        yield HexView(id="hex")

    def _other_info(self, row: Any) -> str:
        """An OTHER frame's Info as the packet list shows it: a non-IP frame's row keeps only
        ``ARP``, and the detail pane read just "ARP" under a list line saying who asks for whom
        (Session.other_columns reads the capture again for it)."""
        session = getattr(self.app, "session", None)
        if row.kind != "OTHER" or row.src or session is None or not hasattr(session, "other_columns"):
            return row.info
        return session.other_columns(row.frame, row.info)[2]

    def show_detail(self, detail: Any) -> None:
        tree = self.query_one("#detail-tree", Tree)
        tree.clear()
        hexv = self.query_one(HexView)
        if detail is None:
            tree.root.add_leaf(Text("No frame selected.", "dim"))
            hexv.set_data(b"")
            return
        row = detail.row
        # AH and the ESP it protects in one frame (an AH+ESP bundle, RFC 4301 §4.1): both layers below
        kind = "AH+ESP" if row.kind == "AH" and detail.esp is not None else row.kind
        tree.root.add_leaf(Text(f"Frame {row.frame}: {row.length} bytes, {kind}", "bold"))
        inner_node = None
        if detail.ike is not None:
            fill_ike(tree.root, detail.ike, b"" if detail.inner and self.show_inner else detail.raw)
        elif detail.esp is not None or getattr(detail, "ah", None) is not None:
            if getattr(detail, "ah", None) is not None:
                fill_ah(tree.root, detail.ah)
            if detail.esp is not None:  # (also ESP under AH)
                inner_node = fill_esp(tree.root, detail)
        elif detail.malformed:
            tree.root.add_leaf(Text(f"Malformed: {detail.malformed}", "bold magenta"))
        else:
            tree.root.add_leaf(self._other_info(row) or f"{row.src} → {row.dst}")
        quoted = getattr(detail, "quoted_esp", None)
        if quoted is not None:
            fill_quoted_esp(tree.root, quoted)
        quoted_ah = getattr(detail, "quoted_ah", None)
        if quoted_ah is not None:
            fill_quoted_ah(tree.root, quoted_ah)
        if not detail.raw:
            tree.root.add_leaf(Text("(raw bytes not available: the file could not be re-read, or a live frame is "
                                    "older than the bytes live mode keeps)", "dim"))
        shown = detail.inner if detail.inner and self.show_inner else detail.raw
        hexv.set_data(shown)
        self._deep(tree, detail, inner_node, shown)

    show_inner = False

    def _deep(self, tree: Tree, detail: Any, inner_node: TreeNode | None, shown: bytes) -> None:
        self.workers.cancel_group(self, "dissect")
        self._pending = self._deferred = None
        from ... import dissect  # the first packet's detail: tshark's tree, not the first screen

        target = dissect.target(detail)
        if target is None:
            return
        data, linktype, what = target
        if what in ("inner", "transport") and inner_node is not None:
            anchor = inner_node
        else:  # the frame itself: closed under an IKE tree (ipsecscope's own decode comes first)
            anchor = tree.root.add(Text("Wireshark dissection", "bold"), expand=detail.ike is None)
        key = (linktype, hashlib.blake2b(data, digest_size=16).digest())
        spans = shown == data
        lead = "transport mode: IP header rebuilt from the outer addresses" if what == "transport" else None
        if key in self._trees:
            self._trees.move_to_end(key)
            fill_layers(anchor, self._trees[key][1], _join(lead, self._trees[key][0]), spans)
            return
        if not dissect.available():  # no worker, no wait: scapy's tree at once
            fill_layers(anchor, dissect.scapy_layers(data, linktype), _join(
                lead, "tshark not found: scapy's dissection (install tshark for Wireshark's full tree)"), spans)
            return
        anchor.add_leaf(Text("dissecting with tshark…", "dim italic"))
        self._pending = key
        job = (key, data, linktype, detail.row.ts, anchor, spans, lead)
        if self._shown() and not self.hold:
            self._dissect(*job)
        else:  # e.g. the app opened on Findings: no tshark until the pane is shown
            self._deferred = job

    def release(self) -> None:
        """The load has ended: run a held dissection if the pane is on screen (else on_show will)."""
        self.hold = False
        if self._shown():
            self.on_show()

    def _shown(self) -> bool:
        """On screen in the active tab. ``is_on_screen`` alone lags a refresh behind a tab switch:
        right after the app moved to Findings (a capture with errors has loaded) it still says yes,
        and tshark would run for a pane nobody sees."""
        pane = next((a for a in self.ancestors if isinstance(a, TabPane)), None)
        tabs = next((a for a in pane.ancestors if isinstance(a, TabbedContent)), None) if pane else None
        return (tabs is None or tabs.active == pane.id) and self.is_on_screen

    def on_show(self) -> None:
        if self.hold:
            return
        job, self._deferred = self._deferred, None
        if job is not None and self._pending == job[0]:
            self._dissect(*job)

    @work(exclusive=True, group="dissect", exit_on_error=False)
    async def _dissect(self, key: tuple[int, bytes], data: bytes, linktype: int, ts: float,
                       anchor: TreeNode, spans: bool, lead: str | None) -> None:
        from ... import dissect

        try:
            result: tuple[str | None, list[Node]] = (None, await dissect.dissect_async(data, linktype, ts=ts))
        except dissect.DissectError as exc:
            result = (f"{exc}; scapy's dissection below", dissect.scapy_layers(data, linktype))
        self._trees[key] = result
        while len(self._trees) > self.CACHE:
            self._trees.popitem(last=False)
        if self._pending == key:  # still the frame on screen
            self._pending = None
            fill_layers(anchor, result[1], _join(lead, result[0]), spans)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        # The payload under the cursor, or the payload a field row belongs to, is marked in hex.
        node: TreeNode | None = event.node
        while node is not None and node.data is None:
            node = node.parent
        self.query_one(HexView).set_highlight(node.data if node is not None else None)


def _join(*notes: str | None) -> str | None:
    return "; ".join(n for n in notes if n) or None
