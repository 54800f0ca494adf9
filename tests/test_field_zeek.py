"""Zeek's IPv6 ESP/AH core traces (tests/data/zeek, BSD-3; provenance there) and the classes they
showed, against tshark frame by frame and against Zeek's own records of each header.

* A packet whose ESP, AH, UDP or IKE header is broken inside a whole IP header keeps that IP
  header's addresses (and the UDP ports it read) on its MALFORMED row, as tshark shows them, so
  address filters find it; a datagram whose fragments never all came keeps its addresses too.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, IPSECSCOPE, ROOT, needs_tshark

ZEEK = DATA / "zeek"
ESP6 = ZEEK / "ip6_esp.pcap"
AH0 = ZEEK / "ipv6_zero_len_ah.pcap"
BAD = DATA / "bad" / "malformed.pcap"
TRUNCATED = DATA / "tcpdump" / "esp_truncated.pcap"


@functools.cache
def cli(*args: str) -> str:
    r = subprocess.run([*IPSECSCOPE, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "Traceback" not in r.stderr and r.returncode in (0, 1), r.stderr
    return r.stdout


def rows(cap: Path, *extra: str) -> dict[int, dict]:
    return {d["frame"]: d for d in map(json.loads, cli("packets", str(cap), "--json", *extra).splitlines())}


def findings(cap: Path) -> list[dict]:
    return json.loads(cli("findings", str(cap), "--json"))["findings"]


@functools.cache
def tshark(cap: Path, *fields: str, filt: str = "") -> dict[int, tuple[str, ...]]:
    args = ["tshark", "-n", "-r", str(cap), "-T", "fields", "-E", "occurrence=f", "-e", "frame.number"]
    for f in fields:
        args += ["-e", f]
    if filt:
        args += ["-Y", filt]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    return {int(c[0]): tuple(c[1:]) for c in (line.split("\t") for line in out.splitlines())}


@needs_tshark
def test_ipv6_esp_frames_equal_tshark_and_zeek():
    """Every ESP frame: tshark's addresses, SPI and sequence number, in Zeek's order; one flow
    per (destination, SPI): SPI 0xa towards 3ffe::2 and towards 3ffe::12 are two SAs."""
    ts = tshark(ESP6, "ipv6.src", "ipv6.dst", "esp.spi", "esp.sequence")
    ours = rows(ESP6)
    esp = [(r["src"], r["dst"], int(r["spi"], 16), r["seq"]) for n, r in sorted(ours.items()) if r["kind"] == "ESP"]
    theirs = [(s, d, int(spi, 16), int(seq)) for n, (s, d, spi, seq) in sorted(ts.items()) if spi]
    assert esp == theirs and len(esp) == 120
    zeek = re.findall(r"src=([0-9a-f:]+), dst=([0-9a-f:]+), .*esp=\[spi=(\d+), seq=(\d+)\]",
                      (ZEEK / "baseline" / "core.ipv6_esp" / "output").read_text())
    assert [(s, d, int(spi), int(seq)) for s, d, spi, seq in zeek] == theirs
    flows = json.loads(cli("summary", str(ESP6), "--json"))["esp"]
    assert len(flows) == 12
    assert {f["dst"] for f in flows if int(f["spi"], 16) == 0xA} == {"3ffe::2", "3ffe::12"}


@needs_tshark
@pytest.mark.parametrize("cap", [AH0, BAD, TRUNCATED], ids=lambda p: str(p.relative_to(DATA)))
def test_malformed_rows_keep_the_addresses_tshark_shows(cap):
    """A MALFORMED row names the outer IP addresses tshark reads from the same frame (none where
    the IP header itself is broken), and the UDP ports where its broken header sat behind UDP."""
    ts = tshark(cap, "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "udp.srcport", "udp.dstport")
    bad = {n: r for n, r in rows(cap).items() if r["kind"] == "MALFORMED"}
    assert bad
    with_addr = 0
    for n, r in bad.items():
        s4, d4, s6, d6, sp, dp = ts[n]
        assert (r["src"], r["dst"]) == (s4 or s6, d4 or d6), n
        with_addr += bool(r["src"])
        if r["sport"]:
            assert (r["sport"], r["dport"]) == (int(sp), int(dp)), n
    assert with_addr >= 1
    if cap == BAD:  # frames 4-7, 10-14: ESP/UDP/IKE/IPv6 headers broken inside a whole IP header
        assert with_addr == 9
        assert (bad[5]["sport"], bad[13]["dport"]) == (4500, 4500)


@needs_tshark
@pytest.mark.parametrize("filt", ["ip.src == 198.18.0.1", "ip.addr == 198.18.0.2", "ipv6.addr == 2001:db8::1"])
def test_address_filters_find_malformed_frames_as_tshark_does(filt):
    assert sorted(rows(BAD, "-Y", filt)) == sorted(tshark(BAD, filt=filt))
