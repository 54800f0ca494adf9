"""``ipsecscope summary FILE [--json]``: what IPsec is in a capture, without keys.

Lists every IKE message and aggregates ESP/AH per flow. pcap and pcapng files take the fast path
in :mod:`ipsecscope.decode.fastpath` (offset-based ESP accounting, two processes for big plain
files, everything unusual handed to the generic decoder in order); ``--generic`` decodes every
frame with the generic decoder instead. Both give the same numbers (the tests check it).

JSON schema ``"ipsecscope.summary/1"`` (``--json``; fields are only ever added within /1)::

    {
      "schema": "ipsecscope.summary/1",
      "file": str, "format": "pcap" | "pcapng", "compressed": bool,
      "frames": int,                       # frames in the file (Wireshark numbering is 1..frames)
      "first_time": float | null,          # epoch seconds of the first / last frame
      "last_time": float | null,
      "truncated": str | null,             # why reading stopped early (cut-off / damaged file)
      "filter": str | null,                # the -Y display filter the document is restricted to
      "counts": {"ike": int, "esp": int, "ah": int, "keepalive": int, "malformed": int, "other": int},
                                           # an IKE message whose payloads do not parse counts in ike
                                           # and in malformed (layer "ike"); every other frame in one
      "ike": [{
        "frame": int, "time": float, "src": str, "dst": str, "sport": int, "dport": int,
        "transport": "udp" | "tcp", "non_esp_marker": bool, "ip_fragmented": bool,
        "version": 1 | 2, "exchange": str, "exchange_type": int,
        "msg_id": int, "is_response": bool, "is_initiator": bool,   # v2 header flags; false for v1
        "spi_i": "16 hex digits", "spi_r": "16 hex digits",
        "payloads": [str, ...],            # cleartext payload names in wire order ("SK" when encrypted)
        "notifies": [str, ...],            # notify type names in the cleartext part
        "encrypted": bool,                 # v2 SK/SKF present, or v1 encryption flag
        "length": int, "malformed": str | null,
        "fragment": null | {               # an IKE fragment: IKEv1 Fragment payload (132) or IKEv2 SKF
          "number": int, "total": int | null,   # null: IKEv1, the last-flagged piece not seen (yet)
          "last": bool,                    # this piece is flagged last (IKEv1 flags bit 0; SKF number = total)
          "fragment_id": int | null,       # IKEv1's Fragment ID (null for SKF)
          "msg_id": int,                   # the Message ID of the message the piece belongs to
          "repeat": bool,                  # this number was seen before (a retransmission)
          "lost": [int, ...],              # the message never completed: numbers that never came
          "last_lost": bool,               # ... nor the last-flagged piece (IKEv1; absent: false)
          "given_up": str | null},         # not reassembled: a bound on what is held was reached
        "reassembled_from": [int, ...]     # IKEv1: this frame completes a fragmented message; the
                                           # row is that message (exchange, Message ID, payloads,
                                           # length), its pieces' frames in number order; else []
      }, ...],
      "ike_fragments_lost": [{             # fragmented messages that never got all their pieces
                                           # (with -Y: none; frames the filter left out are not lost)
        "version": 1 | 2, "src": str, "dst": str, "exchange": str, "exchange_type": int,
        "is_response": bool,               # v2 header flag; false for v1
        "msg_id": int, "fragment_id": int | null, "total": int | null, "lost": [int, ...],
        "last_lost": bool, "have": [int, ...], "frames": [int, ...]
      }, ...],
      "esp": [{                            # one per (src, dst, SPI[, UDP/TCP ports])
        "src": str, "dst": str, "spi": "0x%08x", "packets": int, "bytes": int,   # bytes: SPI..ICV
        "first_time": float, "last_time": float, "first_frame": int, "last_frame": int,
        "seq_min": int, "seq_max": int,
        "udp_encap": bool, "transport": "ip" | "udp" | "tcp", "sport": int, "dport": int
      }, ...],
      "ah": [ same fields as "esp"; transport always "ip"; bytes from the AH header to the end ],
      "flows_limit": null | {"max_flows": int, "packets": int},   # per-flow state is bounded: past
                                           # max_flows flows, further flows' packets are only in counts
      "keepalives": [{"src", "dst", "sport", "dport", "count", "first_time", "last_time"}],
      "malformed": {"by_layer": {layer: int},
                    "examples": [{"frame", "layer", "reason"}]},  # first 50 reported, by frame
      "enc": [{"spi": "0x%08x", "flags": "0x%08x", "protection": str, "frames": int, "first_frame": int}]
                                           # OpenBSD enc(4) frames per enc header (SPI, flags); [] elsewhere
    }

Exit status: 0, or 1 with one line on stderr when the file is not a capture or is cut off /
damaged (the summary of what could be read is still printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections import Counter
from typing import TYPE_CHECKING, TextIO

from .. import timefmt
from ..capture import _source, sniff_format
from ..decode.demux import Decoder
from ..decode.fastpath import FlowStat, FlowTable, scan_capture
from ..errors import CaptureError
from ..model import iana
from ..model.idtext import NBSP, ike_sa_text, msg_id_text, spi_text
from ..model.ike import IkeMessage, NotifyPayload, SkPayload
from ..model.packets import AhPacket, EspPacket, IkeDatagram, Malformed, NatKeepalive, Packet
from ..model.plural import plural
from ..model.sa import endpoint_text
from ..state.names import exchange_name

if TYPE_CHECKING:
    from ..state.ike_frag_rows import FragmentRows

SCHEMA = "ipsecscope.summary/1"
MAX_MALFORMED_EXAMPLES = 50


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from .common import add_filter_argument, add_keys_argument, at_least

    p = subparsers.add_parser(
        "summary", help="list IKE messages and ESP/AH flows in a capture (no keys needed)",
        description="Summarise the IPsec traffic in a pcap/pcapng file (optionally gzipped): every IKE "
                    "message, and ESP/AH flows per (src, dst, SPI) with counts, times and sequence ranges.")
    p.add_argument("file", help="capture file (pcap, pcapng, or either gzipped); '-' reads standard input")
    p.set_defaults(_parser=p)  # for common.too_many_captures
    p.add_argument("--follow", action="store_true",
                   help="keep reading a capture file that is still being written, as `tail -f` does; "
                        "Ctrl-C ends it and prints the summary")
    p.add_argument("--json", action="store_true", help=f"machine-readable output (schema {SCHEMA})")
    p.add_argument("--ike-limit", type=at_least(0), default=500, metavar="N",
                   help="show at most N IKE messages in the text table (default 500; --json lists all)")
    p.add_argument("--generic", action="store_true",
                   help="decode every frame with the generic decoder instead of the ESP fast path "
                        "(slower; same result — for cross-checking)")
    p.add_argument("--workers", type=at_least(1), default=2, metavar="N",
                   help="processes for large uncompressed pcap/pcapng files (default 2; 1 disables splitting)")
    add_filter_argument(p)
    add_keys_argument(p, " (with -Y: to filter on decrypted inner fields)")


# ---- collection ---------------------------------------------------------------------------------


def _ike_row(msg: IkeMessage) -> dict:
    h = msg.header
    v2 = h.major == 2
    exch = iana.name(iana.ExchangeType if v2 else iana.Ikev1Exchange, h.exchange)
    if v2:
        from ..decode.ike import payload_name

        names = [payload_name(p.type, 2) for p in msg.payloads]
    else:
        from ..decode.ike import payload_name
        from ..model.ike import phase1_payload_label

        names = [phase1_payload_label(p) or payload_name(p.type, 1) for p in msg.payloads]
        if h.encrypted_v1:
            names.append("<encrypted>")
    notifies = []
    for p in msg.payloads:
        if isinstance(p, NotifyPayload):
            notifies.append(iana.name(iana.NotifyType if v2 else iana.Ikev1NotifyType, p.notify_type))
    encrypted = h.encrypted_v1 or any(isinstance(p, SkPayload) for p in msg.payloads)
    return {
        "frame": msg.frame, "time": msg.ts, "src": msg.src, "dst": msg.dst, "sport": msg.sport,
        "dport": msg.dport, "transport": msg.transport, "non_esp_marker": msg.non_esp_marker,
        "ip_fragmented": msg.ip_fragmented, "version": h.major, "exchange": exch, "exchange_type": h.exchange,
        "msg_id": h.msg_id, "is_response": h.is_response, "is_initiator": h.is_initiator,
        "spi_i": h.spi_i.hex(), "spi_r": h.spi_r.hex(), "payloads": names, "notifies": notifies,
        "encrypted": encrypted, "length": h.length, "malformed": msg.malformed,
        "fragment": None, "reassembled_from": [],
    }


def payloads_text(payloads: list[str], notifies: list[str]) -> str:
    """The payload column: wire order, each run of Notify payloads named once as N(A, B).

    Listing "N N N" and then the names again said every notify twice; one group per run keeps the
    order tshark shows (RFC 7296 §3.10: a message may carry several Notify payloads in a row).
    """
    if payloads.count("N") != len(notifies):
        # names and payloads disagree (a malformed message): show both, as decoded
        return " ".join(payloads) + ("  N(" + ", ".join(notifies) + ")" if notifies else "")
    out: list[str] = []
    names = iter(notifies)
    run: list[str] = []
    for name in payloads:
        if name == "N":
            run.append(next(names))
            continue
        if run:
            out.append("N(" + ", ".join(run) + ")")
            run = []
        out.append(name)
    if run:
        out.append("N(" + ", ".join(run) + ")")
    return " ".join(out)


class Collector:
    """Receives decoded packets (from the generic decoder) and keeps what the summary shows."""

    def __init__(self) -> None:
        from ..decode.ike import parse_ike

        self._parse_ike = parse_ike
        self.ike: list[dict] = []
        self.flows = FlowTable()
        self.keepalives: dict[tuple, list] = {}
        self.malformed: Counter[str] = Counter()
        self.malformed_examples: list[dict] = []
        self.counts: Counter[str] = Counter()
        self.frames_with_packets = 0
        self._last_frame = 0
        self.fragments: FragmentRows | None = None  # at the first IKE message

    def __call__(self, pkt: Packet) -> None:
        if pkt.frame != self._last_frame:
            self._last_frame = pkt.frame
            self.frames_with_packets += 1
        t = type(pkt)
        if t is EspPacket or t is AhPacket:
            self.flows.add_packet(pkt)  # type: ignore[arg-type]
        elif t is IkeDatagram:
            self.counts["ike"] += 1
            msg = self._parse_ike(pkt)  # type: ignore[arg-type]
            frags = self.fragments
            if frags is None:
                from ..state.ike_frag_rows import FragmentRows

                frags = self.fragments = FragmentRows()
            # IKEv1 pieces are joined as the receiving peer joins them: the frame completing a
            # message is listed as that message (state.ike_frag_rows)
            msg = frags.reassemble(msg)
            row = _ike_row(msg)
            frags.note(row, msg)
            self.ike.append(row)
            if msg.malformed:
                # An IKE message whose payloads do not add up (RFC 7296 §3.2) is an IKE message
                # (tshark counts it as ISAKMP too) and malformed: counted in both (layer "ike"),
                # listed under "ike" with its reason.
                self.add_malformed(msg.frame, "ike", msg.malformed)
        elif t is NatKeepalive:
            self.counts["keepalive"] += 1
            key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)  # type: ignore[union-attr]
            rec = self.keepalives.get(key)
            if rec is None:
                self.keepalives[key] = [1, pkt.ts, pkt.ts]
            else:
                rec[0] += 1
                rec[2] = pkt.ts
        elif t is Malformed:
            self.add_malformed(pkt.frame, pkt.layer, pkt.reason)  # type: ignore[union-attr]

    def add_malformed(self, frame: int, layer: str, reason: str) -> None:
        self.counts["malformed"] += 1
        self.malformed[layer] += 1
        if len(self.malformed_examples) < MAX_MALFORMED_EXAMPLES:
            self.malformed_examples.append({"frame": frame, "layer": layer, "reason": reason})


def summarize(path: str, *, workers: int = 2, fast: bool = True, follow: threading.Event | None = None,
              only: set[int] | None = None, warnings: list[str] | None = None) -> dict:
    """Build the ``ipsecscope.summary/1`` document for ``path`` (see module docstring).

    ``fast=False`` decodes every frame with the generic decoder (same result, slower): the
    cross-check for the fast path. ``only``: summarise just these frame numbers (``-Y``; the
    generic decoder then reads the file).

    ``path`` ``"-"`` (standard input) or a pipe is read once, front to back; with ``follow``, the end
    of the file waits for more until the event is set.

    ``warnings``: gets the reader's one-line warnings about the input (a gzip bomb's ratio).

    Raises :class:`~ipsecscope.errors.CaptureFormatError` when the file is not a capture.
    """
    fmt, head = None, b""
    if path != "-" and follow is None and os.path.isfile(path):  # a pipe has no second reading
        src = _source.ByteSource(path)
        try:
            head = src.read(64)
        finally:
            src.close()
        fmt = sniff_format(head)
    col = Collector()
    decoder = Decoder()
    truncated = None
    damaged = None
    if fast and only is None and fmt in ("pcap", "pcapng") and len(head) >= 12:
        res = scan_capture(path, col, decoder, workers=workers, flows=col.flows)
        for pkt in decoder.flush():  # IP datagrams whose fragments never all arrived
            col(pkt)
        frames, fast, first_ts, last_ts = res.frames, res.fast, res.first_ts, res.last_ts
        truncated, damaged = res.truncated, res.error
        compressed = src.compressed
        warning = res.warning
    else:
        from ..capture import open_capture

        frames = fast = 0
        first_ts = last_ts = None
        with open_capture(path, follow) as reader:  # raises CaptureFormatError with a helpful message
            fmt = reader.format
            compressed = reader.compressed
            try:
                for raw in reader:
                    if only is not None and raw.index not in only:
                        continue
                    frames += 1
                    if first_ts is None:
                        first_ts = raw.ts
                    last_ts = raw.ts
                    for pkt in decoder.decode_all(raw):
                        col(pkt)
            except CaptureError as exc:
                damaged = str(exc).removeprefix(f"{os.fspath(path)}: ")
            truncated = reader.truncated
            warning = reader.warning
            for pkt in decoder.flush():
                col(pkt)
    if warning and warnings is not None:
        warnings.append(warning)
    if truncated:
        col.add_malformed(frames + 1, "capture", truncated)
    flows = sorted(col.flows.flows.values(), key=lambda f: (f.first_frame, f.proto))
    esp = [_flow_json(f) for f in flows if f.proto == "ESP"]
    ah = [_flow_json(f) for f in flows if f.proto == "AH"]
    counts = {
        "ike": col.counts["ike"],
        "esp": sum(f.packets for f in flows if f.proto == "ESP") + col.flows.overflow.get("ESP", [0])[0],
        "ah": sum(f.packets for f in flows if f.proto == "AH") + col.flows.overflow.get("AH", [0])[0],
        "keepalive": col.counts["keepalive"],
        "malformed": col.counts["malformed"],
        "other": max(frames - fast - col.frames_with_packets, 0),
    }
    return {
        "schema": SCHEMA,
        "file": os.fspath(path),
        "format": fmt,
        "compressed": bool(compressed),
        "frames": frames,
        "first_time": first_ts,
        "last_time": last_ts,
        "truncated": damaged or truncated,
        "counts": counts,
        "ike": col.ike,
        # with -Y the frames left out are not lost (state.ike_frag_rows)
        "ike_fragments_lost": col.fragments.finish(report_lost=only is None) if col.fragments is not None else [],
        "esp": esp,
        "ah": ah,
        "flows_limit": ({"max_flows": col.flows.max_flows, "packets": col.flows.overflow_packets}
                        if col.flows.overflow else None),
        "keepalives": [
            {"src": k[0], "sport": k[1], "dst": k[2], "dport": k[3], "count": v[0], "first_time": v[1],
             "last_time": v[2]} for k, v in col.keepalives.items()
        ],
        "malformed": {"by_layer": dict(col.malformed),
                      "examples": sorted(col.malformed_examples, key=lambda m: m["frame"])},
        "enc": _enc_json(decoder.enc),
    }


def _enc_json(enc: dict[int, tuple[int, int]]) -> list[dict]:
    """Frames per SPI of an OpenBSD enc(4) capture (decode.demux.Decoder.enc: each frame's enc
    header): the SAs whose cleartext side it holds (``sas`` tells each SA's ends and traffic)."""
    from ..decode.link import enc_flags_text

    by: dict[tuple[int, int], list] = {}
    for frame, hdr in enc.items():
        e = by.setdefault(hdr, [0, frame])
        e[0] += 1
    return [{"spi": spi_text(spi), "flags": f"0x{flags:08x}", "protection": enc_flags_text(flags), "frames": n,
             "first_frame": first} for (spi, flags), (n, first) in sorted(by.items(), key=lambda kv: kv[1][1])]


def _flow_json(f: FlowStat) -> dict:
    return {
        "src": f.src, "dst": f.dst, "spi": spi_text(f.spi), "packets": f.packets, "bytes": f.bytes,
        "first_time": f.first_ts, "last_time": f.last_ts, "first_frame": f.first_frame,
        "last_frame": f.last_frame, "seq_min": f.seq_min, "seq_max": f.seq_max,
        "udp_encap": f.udp_encap, "transport": f.transport, "sport": f.sport, "dport": f.dport,
    }


# ---- text output --------------------------------------------------------------------------------


def _clock(ts: float | None, zone: str) -> str:
    """A table cell: the time of day under a header naming ``zone``; with no zone (a DST change
    inside the capture: no one offset for the column) each time carries its own."""
    if ts is None:
        return "-"
    return timefmt.clock(ts, 6) if zone else timefmt.at(ts, 6)


def _header(name: str, zone: str) -> str:
    return f"{name} ({zone})" if zone else name


def render_text(doc: dict, ike_limit: int = 500, file: TextIO | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from ..state.ike_frag_rows import fragment_text, lost_text
    from .text import Hanging, table_or_records, text_console

    # Piped/redirected output is for grep and files: never wrapped. In a terminal, a table wider
    # than it becomes one record per row, wrapped at spaces (ipsecscope.cli.text).
    con = text_console(file)
    con.highlight = False
    c = doc["counts"]
    span = ""
    zone = timefmt.label(doc["first_time"])  # the tables' times are in this zone (--tz)
    if doc["last_time"] is not None and timefmt.label(doc["last_time"]) != zone:
        zone = ""  # the offset changes inside the capture (DST): every time is labelled instead
    if doc["first_time"] is not None:
        span = f", {timefmt.stamp(doc['first_time'])} + {doc['last_time'] - doc['first_time']:.3f} s"
    con.print(Hanging(f"[bold]{doc['file']}[/]: {doc['format']}{' (gzip)' if doc['compressed'] else ''}, "
                      f"{doc['frames']} frames{span}"))
    con.print(f"IKE {c['ike']}  ESP {c['esp']}  AH {c['ah']}  NAT-keepalive {c['keepalive']}  "
              f"malformed {c['malformed']}  other {c['other']}")

    if doc["ike"]:
        t = Table(title=f"IKE messages ({len(doc['ike'])})", title_justify="left", show_lines=False)
        for col in ("frame", _header("time", zone), "src", "dst", "v", "exchange", "role", "msg ID", "SPIi", "SPIr",
                    "payloads"):
            t.add_column(col, justify="right" if col in ("frame", "msg ID") else "left",
                         no_wrap=True)
        records: list[str] = []
        for r in doc["ike"][:ike_limit]:
            # the Message ID in decimal for both versions, as charon logs it (model.idtext)
            mid = msg_id_text(r["msg_id"])
            if r["version"] == 2:
                role = ("I" if r["is_initiator"] else "R") + (" resp" if r["is_response"] else " req")
            else:
                role = "-"
            pl = payloads_text(r["payloads"], r["notifies"])
            flags = []
            if r["non_esp_marker"]:
                flags.append("NAT-T")
            if r["transport"] == "tcp":
                flags.append("TCP")
            if r["ip_fragmented"]:
                flags.append("IP-fragmented")
            if flags:
                pl += "  {" + ", ".join(flags) + "}"
            frag = fragment_text(r)
            if frag:
                pl += f"  {escape(frag)}"
            if r["malformed"]:
                pl += f"  [red]malformed: {escape(r['malformed'])}[/]"
            cells = (str(r["frame"]), _clock(r["time"], zone), endpoint_text(r["src"], r["sport"]),
                     endpoint_text(r["dst"], r["dport"]), str(r["version"]), exchange_name(r["exchange_type"], r["version"]), role, mid, r["spi_i"],
                     r["spi_r"], pl)
            t.add_row(*cells)
            # the IKE SA as every text view names it (model.idtext), the ID kept with its label
            sa_name = ike_sa_text(bytes.fromhex(r["spi_i"]), bytes.fromhex(r["spi_r"]))
            records.append(f"{cells[0]} {cells[1]} {escape(cells[2])} → {escape(cells[3])} v{cells[4]} {cells[5]} "
                           f"{role} msgid{NBSP}{mid}  IKE{NBSP}SA{NBSP}{sa_name}  {pl}")
        table_or_records(con, t, records)
        if len(doc["ike"]) > ike_limit:
            con.print(f"... {len(doc['ike']) - ike_limit} more IKE messages (raise --ike-limit or use --json)")
        lost = doc.get("ike_fragments_lost") or []
        if lost:
            con.print(f"Fragmented IKE messages never completed ({len(lost)}):")
            for d in lost[:ike_limit]:
                con.print(Hanging(Text("  " + lost_text(d))))  # wire text: never read as markup
            if len(lost) > ike_limit:
                con.print(f"  ... {len(lost) - ike_limit} more (--json lists all)")

    for proto in ("esp", "ah"):
        rows = doc[proto]
        if not rows:
            continue
        t = Table(title=f"{proto.upper()} flows ({len(rows)})", title_justify="left")
        for col in ("src", "dst", "SPI", "packets", "bytes", _header("first", zone), _header("last", zone), "seq min", "seq max",
                    "encap"):
            t.add_column(col, justify="right" if col in ("packets", "bytes", "seq min", "seq max") else "left",
                         no_wrap=True)
        records = []
        for f in rows:
            encap = {"udp": "UDP (NAT-T)", "tcp": "TCP (RFC 8229)"}.get(f["transport"], "-")
            cells = (endpoint_text(f["src"], f["sport"]), endpoint_text(f["dst"], f["dport"]), f["spi"], str(f["packets"]),
                     str(f["bytes"]), _clock(f["first_time"], zone), _clock(f["last_time"], zone), str(f["seq_min"]),
                     str(f["seq_max"]), encap)
            t.add_row(*cells)
            records.append(f"{escape(cells[0])} → {escape(cells[1])} {cells[2]}  {cells[3]} packets, {cells[4]} bytes  "
                           f"{cells[5]} – {cells[6]}{' ' + zone if zone else ''}  seq {cells[7]}–{cells[8]}  encap {encap}")
        table_or_records(con, t, records)

    if doc["keepalives"]:
        t = Table(title="NAT-keepalives (RFC 3948 §2.3)", title_justify="left")
        for col in ("src", "dst", "count", _header("first", zone), _header("last", zone)):
            t.add_column(col, no_wrap=True)
        records = []
        for k in doc["keepalives"]:
            cells = (endpoint_text(k["src"], k["sport"]), endpoint_text(k["dst"], k["dport"]), str(k["count"]),
                     _clock(k["first_time"], zone), _clock(k["last_time"], zone))
            t.add_row(*cells)
            records.append(f"{escape(cells[0])} → {escape(cells[1])}  {plural(k['count'], 'keepalive')}  {cells[3]} – {cells[4]}{' ' + zone if zone else ''}")
        table_or_records(con, t, records)

    m = doc["malformed"]
    if m["by_layer"]:
        con.print("Malformed: " + ", ".join(f"{layer} {n}" for layer, n in sorted(m["by_layer"].items())))
        for ex in m["examples"][:10]:
            con.print(f"  frame {ex['frame']} ({ex['layer']}): {ex['reason']}", markup=False)
        if len(m["examples"]) > 10:
            con.print(f"  ... (first {len(m['examples'])} in --json)")
    for e in doc["enc"]:  # the cleartext side of SAs (OpenBSD enc(4)), no ESP/AH on the wire here
        con.print(f"OpenBSD enc(4): SPI {e['spi']} ({e['protection']}): {e['frames']} frames")
    if not (doc["ike"] or doc["esp"] or doc["ah"] or doc["keepalives"] or doc["enc"]):
        con.print("No IPsec traffic found (IKE on UDP 500/4500 or TCP 4500, ESP, AH).")


def run(args: argparse.Namespace) -> int:
    from .common import error, stop_event, warn

    only = None
    if args.keys and not args.display_filter:  # -k alone was read by nobody, not even checked to exist
        warn("summary", "-k ignored: summary lists what is on the wire and reads keys only for -Y "
                        "(sas, findings, packets and decrypt use them)")
    if args.display_filter:  # the frames a display filter selects (the file is read as a session first)
        from .packets import compile_or_exit, filtered_frames, load_session

        flt = compile_or_exit(args.display_filter, "summary")
        if flt is None:
            return 2
        only = set(filtered_frames(load_session([args.file], args.keys, args.strict_keys, "summary")[0], flt))
    warnings: list[str] = []
    doc = summarize(args.file, workers=max(1, args.workers), fast=not args.generic, follow=stop_event(args),
                    only=only, warnings=warnings if only is None else None)  # (-Y: load_session warned)
    doc["filter"] = args.display_filter or None
    if args.json:
        # one write: json.dump writes token by token (a write(2) each under PYTHONUNBUFFERED)
        sys.stdout.write(json.dumps(doc, indent=1))
        sys.stdout.write("\n")
    else:
        render_text(doc, args.ike_limit)
    for warning in warnings:  # even with --json, as sas/findings/packets/stats warn
        sys.stdout.flush()
        warn("summary", warning)
    lim = doc["flows_limit"]
    if lim:  # even with --json: the flow lists are incomplete, and that is never silent
        sys.stdout.flush()
        warn("summary", f"{args.file}: more than {lim['max_flows']} ESP/AH flows; the {lim['packets']} packets "
                        "of the further ones are in the counts but not listed per flow")
    if doc["truncated"]:
        sys.stdout.flush()
        error("summary", f"{args.file}: {doc['truncated']}")
        return 1
    return 0
