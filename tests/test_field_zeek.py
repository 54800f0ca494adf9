"""Zeek's IPv6 ESP/AH core traces (tests/data/zeek, BSD-3; provenance there) and the classes they
showed, against tshark frame by frame and against Zeek's own records of each header.

* A packet whose ESP, AH, UDP or IKE header is broken inside a whole IP header keeps that IP
  header's addresses (and the UDP ports it read) on its MALFORMED row, as tshark shows them, so
  address filters find it; a datagram whose fragments never all came keeps its addresses too.
* An ICMP error quoting AH says AH (IP protocol 51), not ESP, in ESP-ICMP-UNREACHABLE and in the
  one-way finding it explains; when the quoted packet is in the capture only as a malformed one,
  the finding says so (and cites it) instead of "the capture does not hold" it, and SPI 0 is
  named for what it is (reserved, RFC 4303 §2.1 / RFC 4302 §2.4).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, needs_tshark, public
from conftest import field_cli as cli
from public_data import data_id

# Zeek core traces (third-party): materialised at test time (tests/public_data.py)
ESP6 = public("zeek/ip6_esp.pcap")
AH0 = public("zeek/ipv6_zero_len_ah.pcap")
ESP6_ZEEK = public("zeek/baseline/core.ipv6_esp/output")
BAD = DATA / "bad" / "malformed.pcap"
TRUNCATED = public("tcpdump/esp_truncated.pcap")
OSPF_AH = public("tcpdump/OSPFv3_with_AH.pcap")


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
                      ESP6_ZEEK.read_text())
    assert [(s, d, int(spi), int(seq)) for s, d, spi, seq in zeek] == theirs
    flows = json.loads(cli("summary", str(ESP6), "--json"))["esp"]
    assert len(flows) == 12
    assert {f["dst"] for f in flows if int(f["spi"], 16) == 0xA} == {"3ffe::2", "3ffe::12"}


@needs_tshark
@pytest.mark.parametrize("cap", [AH0, BAD, TRUNCATED], ids=data_id)
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
    if cap == BAD:  # frames 4-7, 10-13: ESP/UDP/IKE/IPv6 headers broken inside a whole IP header
        # (frame 14's IPv4 total length runs past the frame: packets shows its IKE message, marked)
        assert with_addr == 8
        assert (bad[5]["sport"], bad[13]["dport"]) == (4500, 4500)


@needs_tshark
@pytest.mark.parametrize("filt", ["ip.src == 198.18.0.1", "ip.addr == 198.18.0.2", "ipv6.addr == 2001:db8::1"])
def test_address_filters_find_malformed_frames_as_tshark_does(filt):
    assert sorted(rows(BAD, "-Y", filt)) == sorted(tshark(BAD, filt=filt))


def test_icmp_error_quoting_a_malformed_ah_packet():
    """Zeek's zero-length AH (frame 5, SPI 0) answered by an ICMPv6 Parameter Problem (frame 6)."""
    (f,) = [f for f in findings(AH0) if f["code"] == "ESP-ICMP-UNREACHABLE"]
    assert "1 AH packet" in f["title"] and "ESP" not in f["title"]
    text = f["explanation"]
    assert "quotes the AH packet" in text and "ESP" not in text
    assert "only as a malformed one (frame 5: AH payload length 0" in text
    assert "does not hold" not in text
    assert "SPI 0 is reserved" in text and "RFC 4302 §2.4" in text
    assert f["frames"] == [5, 6]
    assert "with AH from 2000:1300::1" in f["hint"]


def _ah_refused(path: Path) -> Path:
    """Five AH packets (ICMP under transport-mode AH, SPI 0x1234) each answered by the receiver
    with ICMP protocol unreachable quoting it: a host whose kernel takes no AH."""
    scapy = pytest.importorskip("scapy.all")
    pk = []
    for i in range(1, 6):
        ah = (scapy.Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
              / scapy.IP(src="192.0.2.1", dst="192.0.2.2")
              / scapy.AH(spi=0x1234, seq=i, nh=1, payloadlen=4, icv=b"\x00" * 12) / scapy.ICMP() / (b"x" * 32))
        ah.time = 1_700_000_000 + i
        err = (scapy.Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
               / scapy.IP(src="192.0.2.2", dst="192.0.2.1") / scapy.ICMP(type=3, code=2) / bytes(ah[scapy.IP])[:64])
        err.time = ah.time + 0.001
        pk += [ah, err]
    scapy.wrpcap(str(path), pk)
    return path


def test_one_way_ah_refused_with_icmp_says_ah(tmp_path):
    cap = _ah_refused(tmp_path / "ah-refused.pcap")
    (f,) = [f for f in findings(cap) if f["code"] == "ESP-ONE-WAY"]
    assert f["title"].startswith("One-way AH: ")
    assert "carries 5 AH packets" in f["explanation"]
    assert "kernel does not take AH" in f["explanation"] and "ESP" not in f["explanation"]
    assert "AH (IP protocol 51)" in f["hint"] and "ESP" not in f["hint"]


def test_group_sa_is_unpaired_because_it_is_one_way():
    """OSPFv3 under AH to ff02::5 (tcpdump's capture): a flow to a multicast group has no reverse
    by nature; its inferred CHILD SA says so instead of 'no flow in the opposite direction started
    near it' (which sounds like a missing answer); a unicast flow keeps that reason."""
    doc = json.loads(cli("sas", str(OSPF_AH), "--json"))
    reasons = {c["responder"]: c["inferred_reason"] for c in doc["child_sas"]}
    assert "a group SA carries one direction only (RFC 4301 §4.1)" in reasons["ff02::5"]
    assert "no flow in the opposite direction" not in reasons["ff02::5"]
    assert "no flow in the opposite direction started near it" in reasons["fe80::2"]
