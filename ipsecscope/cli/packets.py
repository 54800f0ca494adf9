"""``ipsecscope packets FILE... [-k KEYS...] [-Y FILTER] [--json] [-c N] [-V]``: the packet list.

The TUI's Packets table as text: one line per frame with its outer addresses, SPI and sequence
number, and an Info column that shows the decrypted inner packet the way Wireshark does
(``ESP seq 5 ▸ ICMP 10.1.0.1 → 10.2.0.1 Echo (ping) request id=0x0001, seq=1/256, ttl=64``).
``-Y`` takes a Wireshark display filter (``ipsecscope packets --fields`` lists the fields).
``-V`` adds, under each frame, tshark's protocol tree of its decrypted inner packet or of the frame:
one tshark run reading every capture's decrypted frames from a pipe (``ipsecscope.dissect.session_trees``),
so cleartext never lands in a file.

JSON lines (``--json``), schema ``"ipsecscope.packets/1"``, one object per frame (fields are only
ever added within /1)::

    {"schema": "ipsecscope.packets/1", "frame": int, "time": float (epoch), "time_relative": float,
     "kind": "IKE"|"ESP"|"AH"|"NAT-KA"|"MALFORMED"|"OTHER", "src": str, "dst": str,
     "sport": int, "dport": int, "length": int,
     "spi": "0x%08x"|null, "seq": int|null,          # ESP/AH; seq with inferred ESN high bits
     "status": ""|"decrypted"|"icv-bad"|"no-key"|"malformed", "child_sa": int|null,
     "ike_sa": str|null, "info": str,
     "fragment": null | {                            # an IKE fragment (IKEv1 Fragment payload 132; IKEv2
        "number": int, "total": int|null,            #   SKF, RFC 7383 §2.5): its number, of how many
                                                     #   (null: IKEv1, the last-flagged piece not seen)
        "last": bool,                                # flagged last (IKEv1 flags bit 0; SKF number = total)
        "fragment_id": int|null,                     # IKEv1's Fragment ID (null for SKF)
        "msg_id": int,                               # the Message ID of the message it is a piece of
        "repeat": bool,                              # this number was seen before (a retransmission)
        "reassembled_from": [int],                   # this frame completed the message (IKEv1; SKF with
                                                     #   keys): its pieces' frames in number order; else []
        "lost": [int], "last_lost": bool,            # never completed: the numbers that never came (and
                                                     #   the last-flagged one), as summary's ike_fragments_lost
        "given_up": str|null},                       # not reassembled: a bound on what is held was reached
                                                     # (the words are in "info" too, state.ike_frag_rows)
     "ip_proto": int|null,                           # MALFORMED: the outer IP header's protocol field
                                                     # (tshark's ip.proto / ipv6.nxt) where readable
     "mac": null | {"src": str, "dst": str},         # a frame that is no IP (ARP, LLDP; inside a
                                                     # bridging/mirror tunnel, the tunnelled frame): the
                                                     # MACs tshark's Source/Destination show ("" if none)
     "ah": null | {                                  # ESP under AH in the same frame (an AH+ESP bundle,
        "spi": "0x%08x", "seq": int,                 # RFC 4301 §4.1/§4.5): the AH header's SPI, sequence
        "status": ""|"verified"|"icv-bad"|"unverified"|...,  # (with ESN high bits), ICV check
        "info": str},                                # the AH row's Info
     "inner": null | {                               # decrypted ESP payload, or a plain IP frame
        "ip_version": 4|6|null (null: transport mode), "src": str|null, "dst": str|null,
        "protocol": str ("ICMP", "TCP", "DNS", ...), "ip_proto": int, "ttl": int|null,
        "sport": int|null, "dport": int|null,        # UDP/TCP
        "icmp_type": int|null, "icmp_code": int|null, "tcp_flags": int|null,
        "dns_query": str|null, "dns_response": bool|null, "fragment": bool, "info": str,
        "nested_esp": [                              # ESP inside the outer ESP, outermost first
           {"ip_version": 4|6|null, "src": str, "dst": str, "spi": "0x%08x", "seq": int,
            "status": "decrypted"|"no-key"|"icv-bad"|..., "next_header": int|null, "child_sa": int|null}],
        "quoted_esp": null | {                       # the ESP packet an ICMP/ICMPv6 error quotes
           "src": str, "dst": str, "spi": "0x%08x", "seq": int, "whole": bool,
           "status": "decrypted"|"not-verified"|"no-key"|"icv-bad"|"malformed"|"unsupported",
           "verified": bool,                         # whole, ICV verified (else display only)
           "next_header": int|null,                  # as tshark's esp.protocol
           "inner": null | {...}},                   # the decrypted packet (decrypted only), as "inner"
        "quoted_ah": null | {                        # the AH packet an ICMP/ICMPv6 error quotes
           "ip": {"version": 4|6, "src": str, "dst": str,   # the quoted IP header (the one AH follows)
                  "ttl": int|null (IPv6: hop limit), "length": int|null,  # as that header gives it
                  "df": bool|null (IPv6: null),
                  "options": [int]},                 # IPv4 option types / IPv6 extension headers before AH
           "quoted": int|null,                       # bytes of it the error holds
           "mtu": int|null,                          # fragmentation needed / Packet Too Big: the next-hop MTU
           "whole": bool, "spi": "0x%08x", "seq": int|null (null: not quoted; with ESN high bits once verified),
           "next_header": int|null, "ah_length": int|null,   # AH header bytes, (Payload Len + 2) * 4
           "status": "verified"|"icv-bad"|"no-key"|"not-verified"|"unsupported"|"unverifiable",
           "verified": bool,                         # whole, ICV verified over the quoted header
           "reason": str,                            # why not verified ("" when verified)
           "inner": null | {...}}}                   # what AH protects (verified only), as "inner"

A quoted ESP or AH packet is a copy of one already sent: it is never counted for its SA.

A frame carrying AH and the ESP it protects (IP | AH | ESP: an AH+ESP bundle, RFC 4301 §4.1) is one
line: protocol ``AH+ESP``, the ESP's SPI and sequence number, Info ``AH 0x… seq N, ESP seq N ▸ …``
(the AH's ICV verdict when not verified); in JSON the ESP's row with ``"ah"`` beside it. Both SAs
count the frame (``sas``), and a filter sees both layers (``ah && esp``, ``ah.spi``, ``esp.spi``).

Exit status: 0; 2 for a bad filter (the message points at the character), an unreadable file
or key file, or a capture damaged part-way (shown up to the damage).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, TextIO

from .. import timefmt
from ..errors import IpsecscopeError
from ..model.idtext import short_addr, spi_text
from ..model.packets import bundle_row
from ..model.plural import plural, verb
from ..model.sa import endpoint_text
from .common import add_filter_argument, add_keys_argument, at_least, error, warn

if TYPE_CHECKING:
    from ..decode.inner import InnerSummary
    from ..decode.quoted import QuotedPacket
    from ..model.filter import Filter
    from ..model.packets import FrameRow
    from ..session import Session

SCHEMA = "ipsecscope.packets/1"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "packets", help="the packet list (decrypted inner packets too), filtered with Wireshark display filters",
        description="List the frames of a capture like the TUI's Packets table: outer addresses, SPI, "
                    "sequence number, and the decrypted inner packet in the Info column. -Y takes a "
                    "Wireshark display filter over outer and inner fields.")
    p.add_argument("files", metavar="FILE", nargs="*", help="pcap / pcapng (optionally gzip'd)")
    add_keys_argument(p)
    add_filter_argument(p)
    p.add_argument("--json", action="store_true", help=f"JSON lines, one object per frame (schema {SCHEMA})")
    p.add_argument("-c", "--count", type=at_least(1), metavar="N", help="stop after N frames")
    p.add_argument("-t", dest="time_format", choices=("r", "a", "ad"), default="r",
                   help="time column as tshark -t: r seconds since the first frame (default), a time of day, "
                        "ad date and time; a/ad in the --tz zone, labelled with it")
    p.add_argument("--fields", action="store_true", help="list the display filter fields and exit")
    p.add_argument("-V", "--verbose", action="store_true",
                   help="under each frame, Wireshark's full protocol tree (as tshark -V prints it) of the decrypted "
                        "inner packet, or of the frame itself; one tshark run over the capture; without tshark, "
                        "scapy's dissection")


def compile_or_exit(text: str, command: str) -> Filter | None:
    """Compile ``text`` or print the error with a caret under the offending character and return
    None (the caller exits 2)."""
    from ..model.filter import FilterError, compile_filter

    try:
        return compile_filter(text)
    except FilterError as exc:
        error(command, f"bad display filter: {exc.reason}\n{exc.caret(text)}")  # caret lines indented
        return None


def filtered_frames(session: Session, flt: Filter) -> list[int]:
    """Frame numbers of ``session`` that ``flt`` selects (findings evidence included)."""
    from ..filtering import matches, source_of
    from ..model.filter import findings_index

    if any(f == "ipsecscope.finding" for f in flt.fields()):
        flt.findings = findings_index(session.findings)
    return matches(flt, source_of(session))


def load_session(files: list[str], keys: list[str], strict_keys: bool = False,
                 who: str = "packets") -> tuple[Session, str | None]:
    """(session, damage) over ``files`` with ``keys``; key-file warnings and the readers' (a gzip
    that decompresses like a bomb) printed once on stderr, as ``ipsecscope WHO: warning: ...``
    (``who``: the command, as :func:`.common.message` names it)."""
    from ..session import Session
    from .common import warn_keys

    session = Session.from_files(files, keys, strict_keys=strict_keys)
    warn_keys(who, session.keys)
    for warning in session.warnings:
        warn(who, warning)
    return session, session.damage


def print_fields(out: TextIO | None = None) -> None:
    from ..model.filter import FIELD_ALIASES, FIELDS

    out = out or sys.stdout
    for f in FIELDS.values():
        print(f"{f.name:24} {f.type:18} {f.doc}", file=out)
    for a, target in FIELD_ALIASES.items():
        print(f"{a:24} {'(alias)':18} same as {target}", file=out)


def inner_json(s: InnerSummary | None) -> dict | None:
    from ..decode.inner import DNS, DNS_RESPONSE, FRAGMENT, L4

    if s is None:
        return None
    l4 = bool(s.flags & L4)
    icmp = l4 and s.proto in (1, 58)
    ports = l4 and s.proto in (6, 17)
    dns = bool(s.flags & DNS)
    return {
        "ip_version": s.ver or None, "src": s.src or None, "dst": s.dst or None, "protocol": s.protocol,
        "ip_proto": s.proto, "ttl": s.ttl if s.ver else None,
        "sport": s.sport if ports else None, "dport": s.dport if ports else None,
        "icmp_type": s.itype if icmp else None, "icmp_code": s.icode if icmp else None,
        "tcp_flags": s.tcpflags if l4 and s.proto == 6 else None,
        "dns_query": s.dns_name if dns else None, "dns_response": bool(s.flags & DNS_RESPONSE) if dns else None,
        "fragment": bool(s.flags & FRAGMENT), "info": s.info(),
        "nested_esp": [{"ip_version": x.ver or None, "src": x.src, "dst": x.dst, "spi": spi_text(x.spi),
                        "seq": x.seq, "status": x.status, "next_header": x.next_header, "child_sa": x.child_sa}
                       for x in s.layers],
    }


def quoted_json(q: QuotedPacket | None) -> dict | None:
    if q is None:
        return None
    return {"src": q.src, "dst": q.dst, "spi": spi_text(q.spi), "seq": q.seq, "whole": q.whole, "status": q.status,
            "verified": q.verified, "next_header": q.next_header,
            "inner": inner_json(q.inner) if q.verified else None}


def quoted_ah_json(session: Session, frame: int) -> dict | None:
    """``quoted_ah`` of an ICMP error's frame: the load's verdict, the quoted IP header read again
    (ICMP errors are rare: one re-read each)."""
    quoted = getattr(session, "quoted", None)
    q = quoted.ah(frame) if quoted is not None else None
    d = session.quoted_ah(frame) if q is not None else None
    if q is None or d is None:
        return None
    return {"ip": {"version": d.ip_version, "src": d.src, "dst": d.dst, "ttl": d.ttl, "length": d.ip_length,
                   "df": d.df, "options": list(d.options)},
            "quoted": d.quoted, "mtu": d.mtu, "whole": d.whole, "spi": spi_text(d.spi), "seq": d.seq if d.seq >= 0 else None,
            "next_header": d.next_header, "ah_length": d.ah_length, "status": d.status, "verified": d.verified,
            "reason": d.reason, "inner": inner_json(q.inner) if d.verified else None}


def ah_json(ah: FrameRow | None) -> dict | None:
    """``ah`` of an ESP row under AH: the bundle's AH header as its own row has it."""
    if ah is None:
        return None
    return {"spi": None if ah.spi is None else spi_text(ah.spi), "seq": ah.seq, "status": ah.status, "info": ah.info}


def row_json(row: FrameRow, session: Session, t0: float, ah: FrameRow | None = None) -> dict:
    inner = session.inner.get(row.frame) if row.kind in ("ESP", "OTHER") else None
    doc = inner_json(inner)
    if doc is not None:
        quoted = getattr(session, "quoted", None)
        doc["quoted_esp"] = quoted_json(quoted.get(row.frame) if quoted is not None and row.kind == "OTHER" else None)
        doc["quoted_ah"] = quoted_ah_json(session, row.frame) if row.kind == "OTHER" else None
    return {
        "schema": SCHEMA, "frame": row.frame, "time": row.ts, "time_relative": round(row.ts - t0, 9),
        "kind": row.kind, "src": row.src or (inner.src if inner else ""), "dst": row.dst or (inner.dst if inner else ""),
        "sport": row.sport, "dport": row.dport, "length": row.length,
        "spi": None if row.spi is None else spi_text(row.spi), "seq": row.seq, "status": row.status,
        "child_sa": row.child_sa, "ike_sa": row.ike_sa, "info": row.info, "ip_proto": row.ip_proto,
        "mac": _macs(session, row) if row.kind == "OTHER" and inner is None and not row.src else None, "inner": doc,
        "ah": ah_json(ah), "fragment": fragment_json(session, row),
    }


def fragment_json(session: Session, row: FrameRow) -> dict | None:
    """``fragment`` of an IKE row that is a piece of a fragmented message (state.ike_frag_rows'
    note of it, the same the Info's words are made from)."""
    d = session.ike_fragments.get(row.frame) if row.kind == "IKE" else None
    if d is None:
        return None
    f = d["fragment"]
    return {"number": f["number"], "total": f["total"], "last": f["last"], "fragment_id": f["fragment_id"],
            "msg_id": f["msg_id"], "repeat": f["repeat"], "reassembled_from": list(d["reassembled_from"]),
            "lost": list(f["lost"]), "last_lost": f.get("last_lost", False), "given_up": f["given_up"]}


def _macs(session: Session, row: FrameRow) -> dict | None:
    """A non-IP frame's MAC addresses, read from the capture again (as the text's columns)."""
    src, dst = session.link_addresses(row.frame)
    return {"src": src, "dst": dst} if src or dst else None


def text_cells(session: Session, row: FrameRow) -> tuple[str, str, str]:
    """(Source, Destination, Info) of ``row`` in the text list: ``address:port`` where a port is
    carried, a plain IP frame's addresses or a non-IP frame's MACs, an ARP frame's tshark Info."""
    if row.kind == "OTHER" and not row.src:
        return session.other_columns(row.frame, row.info)
    return endpoint_text(row.src, row.sport), endpoint_text(row.dst, row.dport), row.info


TEXT_FIXED = 38  # the text line without its two addresses: No. (6), time (10), arrow, kind, SPI, spaces
INFO_FLOOR = 24  # Info cells an address column leaves in a terminal before it is cut
ADDR_CUT_MIN = 15  # never cut an address column below this (an IPv4 address stays whole)


def address_width(cells: list[tuple[str, str, str]], columns: int | None = None) -> int:
    """Width of the Source and Destination columns: the longest address listed (an IPv4 capture's
    lines are 14 cells shorter than with IPv6's fixed 22). In a terminal of ``columns`` that the
    lines would overflow, no wider than leaves Info :data:`INFO_FLOOR` cells (at least 15): a
    longer address is then cut in its middle (``2001:db8…::a:1``, model.idtext.short_addr) and
    the columns stay aligned. Piped or redirected output (``columns`` None) keeps every address
    whole, for grep and for pasting into ``-Y``."""
    aw = max((max(len(s), len(d)) for s, d, _ in cells), default=0)
    if columns:
        aw = min(aw, max(ADDR_CUT_MIN, (columns - TEXT_FIXED - INFO_FLOOR) // 2))
    return aw


def _terminal_columns(out: TextIO) -> int | None:
    """The terminal's width when ``out`` is one (COLUMNS first, as shutil reads it), else None."""
    import os

    try:
        if not out.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    try:
        return int(os.environ.get("COLUMNS", 0)) or os.get_terminal_size(out.fileno()).columns
    except (ValueError, OSError):
        return None


def deep_trees(session: Session, frames: list[int]) -> dict:
    """frame -> protocol tree for ``-V``: tshark's (one run reading every capture's decrypted frames
    from a pipe, never a file), else scapy's for each frame with a one-line note on stderr saying why."""
    from .. import dissect
    from ..outfile import sigterm_unwinds

    if not frames:
        return {}
    try:
        gone: list[int] = []
        with sigterm_unwinds():  # SIGTERM ends tshark and the writer too
            trees = dissect.session_trees(session, frames, gone)
        lost = sorted(set(frames) & set(gone))
        if lost:
            warn("packets", f"-V: {plural(len(lost), 'frame')} from {lost[0]} on {verb(len(lost), 'is')} no longer "
                            "held in memory (a capture read from stdin or a pipe keeps its last 32 MiB): no tree for "
                            "them; save the capture to a file for all")
        return {f: t for f, t in trees.items() if f not in set(lost)}
    except (IpsecscopeError, OSError) as exc:  # tshark, or decrypting the capture it reads
        warn("packets", f"-V: {exc}; scapy's dissection instead")
    trees = {}
    for frame in frames:  # the frames asked for, once each: a view, not the analysis path
        detail = session.detail(frame)
        target = dissect.target(detail) if detail is not None else None
        if target is not None:
            trees[frame] = dissect.scapy_layers(target[0], target[1])
    return trees


def run(args: argparse.Namespace) -> int:
    if args.fields:
        print_fields()
        return 0
    if not args.files:
        error("packets", "give a capture file (or --fields)")
        return 2
    flt = compile_or_exit(args.display_filter or "", "packets")
    if flt is None:
        return 2
    try:
        session, damage = load_session(args.files, args.keys, getattr(args, "strict_keys", False))
    except (IpsecscopeError, OSError) as exc:
        error("packets", exc)
        return 2
    rows = session.rows
    if flt.empty:
        positions = range(len(rows))
    else:
        wanted = set(filtered_frames(session, flt))
        positions = [i for i in range(len(rows)) if rows[i].frame in wanted]  # type: ignore[assignment]
    t0 = session.table.first_ts or 0.0
    out = sys.stdout
    chosen: list = []
    under_ah: dict[int, FrameRow] = {}  # frame -> the AH row of a frame whose ESP it protects
    for i in positions:
        row = rows[i]
        if chosen and row.frame == chosen[-1].frame:  # one line per frame (a TCP segment may carry several
            if chosen[-1].kind == "AH" and row.kind == "ESP":  # IKE/ESP records): ESP under AH (an AH+ESP
                under_ah[row.frame] = chosen[-1]  # bundle) is the ESP's row, what decrypts, with its AH
                chosen[-1] = row  # beside it (tshark's Protocol column says ESP and hides the AH)
            elif row.kind == "MALFORMED" and chosen[-1].kind != "MALFORMED":
                # the frame's mark beside what was read of it (an IP length past the frame's end,
                # decode.ip.runs_past_frame): said on its line
                chosen[-1] = replace(chosen[-1], info=f"{chosen[-1].info} [malformed {row.info}]")
            continue
        if args.count is not None and len(chosen) >= args.count:
            break
        chosen.append(row)
    if args.verbose and args.json:
        error("packets", "-V prints trees as text; leave out --json")
        return 2
    trees = deep_trees(session, [r.frame for r in chosen]) if args.verbose else {}
    cells = [] if args.json else [text_cells(session, row) for row in chosen]
    aw = 0 if args.json else address_width(cells, _terminal_columns(out))
    for i, row in enumerate(chosen):
        ah = under_ah.get(row.frame)
        if args.json:
            out.write(json.dumps(row_json(row, session, t0, ah), ensure_ascii=False) + "\n")
        else:
            spi = f"{row.spi:08x}" if row.spi is not None else ""
            src, dst, info = cells[i]
            when = (f"{row.ts - t0:10.6f}" if args.time_format == "r" else
                    timefmt.at(row.ts, 6) if args.time_format == "a" else timefmt.stamp(row.ts, 6))
            arrow = "→" if src or dst else " "  # (ARP, LLDP: no addresses, and no arrow between none)
            shown = row if ah is None else bundle_row(ah, row)  # the TUI's line for it too
            if shown is not row:
                info = shown.info
            out.write(f"{row.frame:>6} {when} {short_addr(src, aw):>{aw}} {arrow} {short_addr(dst, aw):<{aw}} "
                      f"{shown.kind:<6} {spi:8} {info}\n")
        if args.verbose and (row.kind == "AH" or ah is not None):  # what tshark's tree never says: the ICV check
            detail = session.detail(row.frame)
            if detail is not None and detail.ah is not None:
                out.write(f"    AH {detail.ah.icv}\n")
        if args.verbose and row.kind == "OTHER":  # an ICMP error quoting ESP or AH: tshark's tree has its
            for q in (session.quoted_esp(row.frame), session.quoted_ah(row.frame)):  # fields, not the
                if q is not None:  # plaintext, nor whether its ICV verified (over the quoted header)
                    lines = q.lines()
                    out.write(f"    {lines[0][0]}\n" + "".join(f"      {text}\n" for text, _tone in lines[1:]))
        if args.verbose:
            from ..dissect import format_tree

            layers = [x for x in trees.get(row.frame, []) if x.name != "frame"]
            out.write(format_tree(layers, indent="    ") + "\n\n" if layers else "\n")
    if damage:
        error("packets", damage)
        return 2
    return 0
