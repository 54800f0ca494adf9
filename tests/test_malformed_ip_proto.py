"""A malformed packet keeps its IP header's protocol field, as tshark shows it: ``ip.proto`` /
``ipv6.nxt`` display filters find the same malformed frames tshark finds, and the MALFORMED row
(``FrameRow.ip_proto``, ``packets --json`` "ip_proto") names the number.

An ESP, AH, UDP or IKE header broken behind a whole IP header (tests/data/bad/malformed.pcap,
Zeek's zero-length AH, tcpdump's truncated UDP-encapsulated ESP) left its row with addresses but
no protocol, so ``ip.proto == 50`` missed it where tshark matches; an IPv4 total length below its
header length is a header tshark reads no further ("Bogus IP length"), so that row names nothing.

Oracle: one tshark run per capture with every occurrence of ip.proto and ipv6.nxt (a filter
``ip.proto == X`` matches a frame holding X in any occurrence, an ICMP error's quoted header too);
ipsecscope's filters in process, over the packed row store and over live mode's FrameRow ring.
The captures: tests/data/bad, zeek, rfc-violations and the public corpus (tests/data/tcpdump,
wireshark, suricata-verify: the shared corpus's files, byte for byte).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, ROOT, needs_tshark, public, public_files
from public_data import data_id

from ipsecscope.filtering import matches, source_of
from ipsecscope.model.filter import compile_filter
from ipsecscope.session import Session

BAD = DATA / "bad" / "malformed.pcap"
AH0 = public("zeek/ipv6_zero_len_ah.pcap")  # third-party: materialised at test time


def _captures() -> list[Path]:
    out = sorted(p for p in (DATA / "bad").iterdir() if p.name.endswith((".pcap", ".pcapng", ".pcap.gz")))
    out += [p for p in public_files("zeek") if p.suffix == ".pcap"]
    out += sorted(p for p in (DATA / "rfc-violations").rglob("*") if p.name.endswith((".pcap", ".pcapng", ".pcapng.gz", ".cap")))
    for suite in ("tcpdump", "wireshark", "suricata-verify"):  # third-party: materialised at test time
        out += [p for p in public_files(suite) if p.name.endswith((".pcap", ".pcapng", ".pcapng.gz", ".cap"))]
    return out


CAPTURES = _captures()
PROTOS = (50, 51, 17, 6)


@functools.cache
def tshark_protos(cap: Path) -> dict[int, tuple[list[int], list[int]]]:
    """frame -> (every ip.proto value, every ipv6.nxt value), outermost first; only frames tshark
    read (it stops at a damaged block)."""
    r = subprocess.run(["tshark", "-n", "-r", str(cap), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
                        "-e", "frame.number", "-e", "ip.proto", "-e", "ipv6.nxt"],
                       capture_output=True, text=True, timeout=120)
    out = {}
    for line in r.stdout.splitlines():
        n, p4, p6 = line.split("\t")
        out[int(n)] = ([int(x) for x in p4.split(",") if x], [int(x) for x in p6.split(",") if x])
    return out


@functools.cache
def session(cap: Path, live: bool) -> Session:
    s = Session(max_rows=10**6) if live else Session()
    try:
        s.load(cap)
    except Exception:  # a capture damaged part-way: the rows up to the damage, as `packets` shows them
        pass
    return s


def _malformed(s: Session) -> dict[int, object]:
    return {r.frame: r for r in s.rows if r.kind == "MALFORMED"}


@needs_tshark
@pytest.mark.parametrize("live", [False, True], ids=["rowstore", "live"])
@pytest.mark.parametrize("cap", CAPTURES, ids=data_id)
def test_ip_proto_filters_find_the_frames_tshark_finds(cap: Path, live: bool) -> None:
    ts = tshark_protos(cap)
    s = session(cap, live)
    src = source_of(s)
    for fam, col in (("ip.proto", 0), ("ipv6.nxt", 1)):
        for n in PROTOS:
            ours = [f for f in matches(compile_filter(f"{fam} == {n}"), src) if f in ts]
            theirs = [f for f, v in sorted(ts.items()) if n in v[col]]
            assert ours == theirs, (fam, n)


@needs_tshark
@pytest.mark.parametrize("cap", CAPTURES, ids=data_id)
def test_malformed_rows_name_the_outer_ip_protocol(cap: Path) -> None:
    """Each MALFORMED row's ip_proto is the outer IP header's field as tshark reads it (the first
    ip.proto of an IPv4 packet, the first ipv6.nxt of an IPv6 one), None where tshark reads none."""
    ts = tshark_protos(cap)
    for f, row in _malformed(session(cap, False)).items():
        if f not in ts:
            continue
        p4, p6 = ts[f]
        want = None
        if row.src:
            vals = p4 if ipaddress.ip_address(row.src).version == 4 else p6
            want = vals[0] if vals else None
        else:
            assert not p4 and not p6, f  # tshark read an IP header the row has no address of
        assert row.ip_proto == want, f


@needs_tshark
def test_the_corpus_holds_malformed_frames_of_each_protocol() -> None:
    """Not vacuous: malformed frames behind IPv4 protocol 50 and 17 and IPv6 next header 51,
    0 (hop-by-hop) and 60 are among the captures, and those above are found by their filter."""
    seen = {(ipaddress.ip_address(r.src).version, r.ip_proto)
            for cap in CAPTURES for r in _malformed(session(cap, False)).values() if r.ip_proto is not None}
    assert {(4, 50), (4, 17), (6, 51), (6, 0), (6, 60)} <= seen, seen
    src = source_of(session(BAD, False))
    assert matches(compile_filter("ip.proto == 50"), src) == [4]
    # frame 3 (an IKE header whose Length, 10, is below its 28 octets) is no isakmp to tshark
    # either; frame 14 (an IPv4 total length past the frame) both read as isakmp: what is there
    assert matches(compile_filter("ip.proto == 17 && !isakmp && !udpencap.nat_keepalive"), src) == [3, 5, 6, 7, 12,
                                                                                                        13]
    # frame 6: the ICMPv6 Parameter Problem quoting frame 5's header
    assert matches(compile_filter("ipv6.nxt == 51"), source_of(session(AH0, False))) == [5, 6]


def test_packets_json_carries_ip_proto() -> None:
    """`packets --json`: "ip_proto" on MALFORMED rows; frame 9's IPv4 header (length 12) and the
    rows of other kinds carry none."""
    out = subprocess.run([sys.executable, "-m", "ipsecscope", "packets", str(BAD), "--json"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT).stdout
    rows = {d["frame"]: d for d in map(json.loads, out.splitlines())}
    got = {f: d["ip_proto"] for f, d in rows.items() if d["kind"] == "MALFORMED"}
    assert got == {4: 50, 5: 17, 6: 17, 7: 17, 9: None, 10: 0, 11: 60, 12: 17, 13: 17}
    # frame 14: its IKE message (the IPv4 total length runs past the frame), the mark in its Info
    assert rows[14]["kind"] == "IKE" and "malformed ip: IPv4 total length 2000" in rows[14]["info"]
    assert all(d["ip_proto"] is None for d in rows.values() if d["kind"] != "MALFORMED")
