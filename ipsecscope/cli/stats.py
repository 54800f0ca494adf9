"""``ipsecscope stats FILE... [-k KEYS...] [--interval S] [--json]``: conversations and
statistics — per CHILD SA, per ESP/AH flow (with an IO graph of packets per interval), and per
inner conversation of the decrypted traffic (5-tuple, both directions).

JSON schema ``"ipsecscope.stats/1"`` (``--json``; fields are only ever added within /1)::

    {
      "schema": "ipsecscope.stats/1", "files": [str], "first_time": float|null, "last_time": float|null,
      "interval": float,                      # seconds per IO graph bin, from first_time
      "child_sas": [{"id": int, "ike_sa": str|null, "state": str, "spi_i": "0x%08x"|null,
                     "spi_r": "0x%08x"|null, "packets": int, "bytes": int, "first_time": float|null,
                     "last_time": float|null, "rate_pps": float, "lost": int, "flows": [flow key]}],
      "flows": [{"key": "src>dst:0xspi", "src": str, "dst": str, "spi": "0x%08x", "protocol": "ESP"|"AH",
                 "child_sa": int|null, "packets": int, "bytes": int, "first_time": float|null,
                 "last_time": float|null, "rate_pps": float, "lost": int,
                 "io": [int]}],                  # packets per interval (the IO graph)
                 # SAs' and flows' "packets" and "io" count frames as tshark does (a capture's
                 # copies of a packet included); "rate_pps" counts packets sent (copies not:
                 # sas JSON's capture_duplicates)
      "enc_sas": [{"key": str, "src": str, "dst": str, "spi": "0x%08x", "protocol": "ESP"|"AH",
                   "packets": int, "bytes": int, "first_time": float|null, "last_time": float|null,
                   "rate_pps": float, "io": [int]}],  # SAs seen through OpenBSD's enc(4) (LINKTYPE_ENC):
                   # cleartext frames with the SA's SPI, no sequence number, so no loss count
      "conversations": [{"protocol": str, "a": str, "a_port": int|null, "b": str, "b_port": int|null,
                         "child_sas": [int], "packets": int, "packets_ab": int, "packets_ba": int,
                         "bytes": int, "first_time": float, "last_time": float, "rate_pps": float,
                         "lost": int|null,        # ICMP echo requests never answered
                         "filter": str,           # display filter selecting it ("follow")
                         "enc_spis": ["0x%08x"]}] # the enc(4) SAs it came over (OpenBSD enc captures)
    }

Exit status: 0; 2 for an unreadable file or key file or a capture damaged part-way.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, TextIO

from .. import timefmt
from ..errors import IpsecscopeError
from ..model.idtext import NBSP, flow_text, spi_text
from ..model.sa import endpoint_text
from .common import add_keys_argument, error, seconds

if TYPE_CHECKING:
    from ..conversations import Stats

SCHEMA = "ipsecscope.stats/1"
SPARK = " ▁▂▃▄▅▆▇█"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stats", help="per CHILD SA, per flow (IO graph) and per inner conversation statistics",
        description="Packets, bytes, rate, first/last seen and loss per CHILD SA and ESP/AH flow, an IO graph "
                    "of packets per interval per flow, and the decrypted traffic's conversations.")
    p.add_argument("files", metavar="FILE", nargs="+", help="pcap / pcapng (optionally gzip'd)")
    add_keys_argument(p)
    p.add_argument("--interval", type=seconds, metavar="S", help="IO graph interval in seconds (default: ~60 bins)")
    p.add_argument("--json", action="store_true", help=f"machine-readable output (schema {SCHEMA})")


# Bins of the IO graph (every flow has one list of them): ~0.1 s over a day. Finer asked for a
# few GB of lists and ended as "out of memory while reading" (--interval 1e-9).
MAX_BINS = 1_000_000


def _spi(v: int | None) -> str | None:
    return None if v is None else spi_text(v)


def to_dict(st: Stats, files: list[str]) -> dict:
    return {
        "schema": SCHEMA, "files": files, "first_time": st.first_ts, "last_time": st.last_ts,
        "interval": st.interval,
        "child_sas": [{"id": c.id, "ike_sa": c.ike_sa, "state": c.state, "spi_i": _spi(c.spi_i),
                       "spi_r": _spi(c.spi_r), "packets": c.packets, "bytes": c.bytes, "first_time": c.first_ts,
                       "last_time": c.last_ts, "rate_pps": round(c.rate, 3), "lost": c.lost, "flows": c.flows}
                      for c in st.child_sas],
        "flows": [{"key": f.key, "src": f.src, "dst": f.dst, "spi": _spi(f.spi), "protocol": f.protocol,
                   "child_sa": f.child_sa, "packets": f.packets, "bytes": f.bytes, "first_time": f.first_ts,
                   "last_time": f.last_ts, "rate_pps": round(f.rate, 3), "lost": f.lost, "io": f.io}
                  for f in st.flows if not f.enc],
        "enc_sas": [{"key": f.key, "src": f.src, "dst": f.dst, "spi": _spi(f.spi), "protocol": f.protocol,
                     "packets": f.packets, "bytes": f.bytes, "first_time": f.first_ts, "last_time": f.last_ts,
                     "rate_pps": round(f.rate, 3), "io": f.io} for f in st.flows if f.enc],
        "conversations": [{"protocol": c.protocol, "a": c.a, "a_port": c.a_port, "b": c.b, "b_port": c.b_port,
                           "child_sas": c.child_sas, "packets": c.packets, "packets_ab": c.packets_ab,
                           "packets_ba": c.packets_ba, "bytes": c.bytes, "first_time": c.first_ts,
                           "last_time": c.last_ts, "rate_pps": round(c.rate, 3), "lost": c.lost,
                           "filter": c.filter, "enc_spis": [spi_text(x) for x in c.enc_spis]}
                          for c in st.conversations],
    }


def sparkline(counts: list[int]) -> str:
    top = max(counts, default=0)
    if not top:
        return SPARK[0] * len(counts)
    return "".join(SPARK[min(8, -(-c * 8 // top))] for c in counts)


def render(st: Stats, out: TextIO | None = None) -> None:
    """The text form. Piped, one record per line, as ever; in a terminal narrower than a record,
    it wraps at spaces under its own text (cli.text), as sas and findings do, and an IO graph that
    does not fit beside its flow's columns starts under the record instead."""
    from rich.text import Text

    from .text import Hanging, text_console

    con = text_console(out or sys.stdout)
    width = con.width
    t0 = st.first_ts or 0.0

    _ = NBSP  # a number and its unit, or the two ends of a span, never apart

    def line(text: str, indent: int = 6) -> None:
        con.print(Hanging(Text(text), indent))  # Text: an address in brackets is not markup

    def rel(t: float | None) -> str:
        return "-" if t is None else f"{t - t0:.3f}s"

    if st.first_ts is not None:  # the times below are relative: say to what, in which zone (--tz)
        line(f"times: seconds after the first frame, {timefmt.stamp(st.first_ts, 3)}")
        con.print()
    line(f"CHILD SAs ({len(st.child_sas)})")
    for c in st.child_sas:
        line(f"  #{c.id:<3} {c.state:<11} {_spi(c.spi_i) or '-'}/{_spi(c.spi_r) or '-'}  {c.packets}{_}pkts "
             f"{c.bytes}{_}B  {c.rate:.1f}{_}pkt/s  {rel(c.first_ts)}{_}→{_}{rel(c.last_ts)}  lost{_}{c.lost}")
    con.print()
    flows = [f for f in st.flows if not f.enc]
    enc = [f for f in st.flows if f.enc]
    groups = [(f"ESP/AH flows ({len(flows)})", flows)]
    if enc:  # only an OpenBSD enc(4) capture has them
        groups.append((f"enc(4) SAs ({len(enc)})", enc))
    for title, group in groups:
        line(f"{title}, IO graph: packets per {st.interval:g}s")
        for f in group:
            child = f"#{f.child_sa}" if f.child_sa is not None else "-"
            # Not the JSON key ('src>dst:0xspi'): after an IPv6 address ':0x3d71315a' reads as more address.
            flow = flow_text(f.src, f.dst, f.spi, f.protocol)
            # an enc(4) frame has no ESP/AH header, so no sequence number to count loss by
            lost = f"lost{_}-" if f.enc else f"lost{_}{f.lost}"
            line(f"  {flow:<44} {child:>4} {f.packets:>7}{_}pkts {f.bytes:>9}{_}B {f.rate:8.1f}{_}pkt/s  {lost}")
            graph = f"{sparkline(f.io)}  max {max(f.io, default=0)}"
            con.print(Text(f"  {'':44} {graph}" if 47 + len(graph) <= width else f"      {graph}", no_wrap=True))
        con.print()
    line(f"Conversations ({len(st.conversations)})")
    for c in st.conversations:
        a, b = endpoint_text(c.a, c.a_port), endpoint_text(c.b, c.b_port)
        lost = "" if c.lost is None else f"  unanswered {c.lost}"
        sas = ",".join([f"#{i}" for i in c.child_sas] + [f"enc{_}{spi_text(x)}" for x in c.enc_spis]) or "-"
        line(f"  {c.protocol:<6} {a:>22}{_}⇄{_}{b:<22} {c.packets_ab:>5}→ {c.packets_ba:>5}← {c.bytes:>8}{_}B "
             f"{c.rate:7.1f}{_}pkt/s  {rel(c.first_ts)}{_}→{_}{rel(c.last_ts)}  SA{_}{sas}{lost}")
        line(f"         follow: {c.filter}", 17)


def run(args: argparse.Namespace) -> int:
    from ..conversations import compute
    from .packets import load_session

    try:
        session, damage = load_session(args.files, args.keys, args.strict_keys, "stats")
    except (IpsecscopeError, OSError) as exc:
        error("stats", exc)
        return 2
    t0, t1 = session.table.first_ts, session.table.last_ts
    if args.interval and t0 is not None and t1 is not None and (t1 - t0) / args.interval > MAX_BINS:
        error("stats", f"--interval {args.interval:g} makes {(t1 - t0) / args.interval:,.0f} IO graph bins "
                       f"over this capture's {t1 - t0:g} s; give at least {(t1 - t0) / MAX_BINS:.2g} s "
                       f"(at most {MAX_BINS:,} bins)")
        return 2
    st = compute(session, interval=args.interval)
    if args.json:
        # one write: json.dump writes token by token (a write(2) each under PYTHONUNBUFFERED)
        sys.stdout.write(json.dumps(to_dict(st, [str(f) for f in args.files]), indent=1))
        sys.stdout.write("\n")
    else:
        render(st)
    if damage:
        error("stats", damage)
        return 2
    return 0
