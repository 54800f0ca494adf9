"""Traffic selectors as integer ranges (issue 15): the per-packet check compares ints compiled
once per CHILD SA, and must answer exactly what the reading of RFC 7296 §3.13.1 with
``ipaddress`` answered (the reference below is the check as it was, per packet)."""

from __future__ import annotations

import ipaddress
import itertools
import struct

from ipsecscope.model.ike import TrafficSelector
from ipsecscope.model.sa import ChildSa, EspFlow
from ipsecscope.state.child_sa import compile_selectors, inner_fields, ranges_cover, selector_ranges
from ipsecscope.state.traffic import check_selectors


def reference(ts: TrafficSelector, addr: str, proto: int, port: int | None) -> bool:
    try:
        a = ipaddress.ip_address(addr)
        lo = ipaddress.ip_address(ts.start_addr)
        hi = ipaddress.ip_address(ts.end_addr)
    except ValueError:
        return True
    if a.version != lo.version or not (lo <= a <= hi):
        return False
    if ts.ip_proto and proto != ts.ip_proto:
        return False
    if port is not None and not (ts.start_port <= port <= ts.end_port):
        return ts.start_port > ts.end_port
    return True


SELECTORS = [
    TrafficSelector(7, 0, 0, 65535, "10.1.0.0", "10.1.0.255"),
    TrafficSelector(7, 0, 0, 65535, "0.0.0.0", "255.255.255.255"),
    TrafficSelector(7, 6, 443, 443, "192.0.2.10", "192.0.2.10"),
    TrafficSelector(7, 17, 500, 4500, "192.0.2.0", "192.0.2.127"),
    TrafficSelector(7, 1, 65535, 0, "10.1.0.1", "10.1.0.1"),  # OPAQUE ports (start > end)
    TrafficSelector(8, 0, 0, 65535, "2001:db8::", "2001:db8::ffff:ffff"),
    TrafficSelector(8, 58, 0, 65535, "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    TrafficSelector(8, 6, 22, 22, "2001:db8:1::1", "2001:db8:1::1"),
    TrafficSelector(7, 0, 0, 65535, "not-an-address", "10.0.0.1"),  # unreadable: never an alarm
]
ADDRS = ["10.1.0.1", "10.1.0.255", "10.1.1.0", "192.0.2.10", "192.0.2.128", "0.0.0.0", "255.255.255.255",
         "2001:db8::1", "2001:db8::1:0:0", "2001:db8:1::1", "::1", "::ffff:10.1.0.1"]
PROTOS = [(1, None), (6, 22), (6, 443), (6, 444), (17, 500), (17, 4500), (17, 4501), (58, None), (132, 0)]


def test_ranges_answer_what_ipaddress_answered() -> None:
    for ts, addr, (proto, port) in itertools.product(SELECTORS, ADDRS, PROTOS):
        a = ipaddress.ip_address(addr)
        got = ranges_cover(compile_selectors((ts,)), a.version, int(a), proto, port)
        assert got == reference(ts, addr, proto, port), (ts, addr, proto, port)
    for pair in itertools.combinations(SELECTORS, 2):
        for addr, (proto, port) in itertools.product(ADDRS, PROTOS):
            a = ipaddress.ip_address(addr)
            want = any(reference(t, addr, proto, port) for t in pair)
            assert ranges_cover(compile_selectors(pair), a.version, int(a), proto, port) == want


def _ip4(src: str, dst: str, proto: int, payload: bytes, frag: int = 0) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, frag, 64, proto, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + payload


def _ip6(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    return (struct.pack("!IHBB", 6 << 28, len(payload), proto, 64) + ipaddress.IPv6Address(src).packed
            + ipaddress.IPv6Address(dst).packed + payload)


def test_inner_fields_reads_addresses_ports_and_fragments() -> None:
    tcp = struct.pack("!HH", 40000, 443) + bytes(16)
    assert inner_fields(_ip4("10.1.0.1", "192.0.2.10", 6, tcp), 4) == (
        4, int(ipaddress.IPv4Address("10.1.0.1")), int(ipaddress.IPv4Address("192.0.2.10")), 6, 40000, 443)
    # a non-first fragment carries no ports (RFC 791 fragment offset)
    assert inner_fields(_ip4("10.1.0.1", "192.0.2.10", 6, tcp, frag=0x0001), 4)[4:] == (None, None)
    assert inner_fields(_ip6("2001:db8::1", "2001:db8:1::1", 6, tcp), 41)[::3] == (6, 6)
    assert inner_fields(_ip4("10.1.0.1", "192.0.2.10", 6, tcp), 6) is None  # transport mode
    assert inner_fields(b"", None) is None


def test_packets_outside_the_selectors_are_counted_once_compiled() -> None:
    child = ChildSa(id=1, ike_sa="x", spi_i=0x1, spi_r=0x2, initiator="198.18.0.1", responder="198.18.0.2",
                    ts_i=(TrafficSelector(7, 0, 0, 65535, "10.1.0.0", "10.1.0.255"),),
                    ts_r=(TrafficSelector(7, 6, 443, 443, "192.0.2.10", "192.0.2.10"),))
    flow = EspFlow(src="198.18.0.1", dst="198.18.0.2", spi=0x2)  # initiator -> responder
    tcp = struct.pack("!HH", 40000, 443) + bytes(16)
    check_selectors(flow, child, 1, _ip4("10.1.0.9", "192.0.2.10", 6, tcp), 4)
    ranges = child.ts_ranges
    assert flow.outside_ts == 0 and ranges is not None
    check_selectors(flow, child, 2, _ip4("10.1.0.9", "192.0.2.10", 17, tcp), 4)  # wrong protocol
    check_selectors(flow, child, 3, _ip4("10.2.0.9", "192.0.2.10", 6, tcp), 4)  # source outside TSi
    assert child.ts_ranges is ranges  # compiled once
    assert (flow.outside_ts, flow.outside_ts_frames) == (2, [2, 3])
    assert flow.outside_ts_example == "10.1.0.9 -> 192.0.2.10 proto 17 ports 40000->443"
    # a rekey/narrowing replaces the selector tuple: the ranges follow it
    child.ts_i = (TrafficSelector(7, 0, 0, 65535, "10.2.0.0", "10.2.0.255"),)
    assert selector_ranges(child)[0] == ((4, int(ipaddress.IPv4Address("10.2.0.0")),
                                         int(ipaddress.IPv4Address("10.2.0.255")), 0, 0, 65535),)
    check_selectors(flow, child, 4, _ip4("10.2.0.9", "192.0.2.10", 6, tcp), 4)
    assert flow.outside_ts == 2


def test_selectors_read_as_charon_writes_them() -> None:
    # Oracle: the responder's charon log of the ts-mismatch sample names the selectors it refused
    # as 'traffic selectors 10.9.0.0/24 === 10.1.0.0/24' (its own side first); `sas` said
    # '10.1.0.0-10.1.0.255 === 10.9.0.0-10.9.0.255'. JSON (str()) keeps the range form.
    import os
    import re
    import subprocess
    import sys

    from conftest import SAMPLES

    d = SAMPLES / "ts-mismatch"
    log = (d / "charon-right.log").read_text()
    mine, theirs = re.search(r"traffic selectors (\S+) === (\S+) unacceptable", log).groups()
    out = subprocess.run([sys.executable, "-m", "ipsecscope", "sas", str(d / "capture.pcapng"), "-k", str(d / "keys")], check=True,
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}).stdout
    assert f"(offered {theirs} === {mine})" in out, out
    v4 = TrafficSelector(7, 0, 0, 65535, "10.1.0.0", "10.1.0.255")
    assert (v4.text(), str(v4)) == ("10.1.0.0/24", "10.1.0.0-10.1.0.255")
    assert TrafficSelector(7, 0, 0, 65535, "0.0.0.0", "255.255.255.255").text() == "0.0.0.0/0"
    assert TrafficSelector(7, 6, 443, 443, "10.1.0.5", "10.1.0.5").text() == "10.1.0.5/32[6:443]"  # one host: /32, as charon writes it
    assert TrafficSelector(7, 0, 0, 65535, "10.1.0.1", "10.1.0.9").text() == "10.1.0.1-10.1.0.9"  # no one prefix
    assert TrafficSelector(8, 0, 0, 65535, "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff").text() == "2001:db8::/64"
