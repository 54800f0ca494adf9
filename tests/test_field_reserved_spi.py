"""Packets on the reserved SPI 0 (tests/data/reserved-spi, made by make.py there with scapy).

The class came from a public capture, suricata-verify's
``tests/ipv6-evasion/ipv6-dos-with-ext-headers-5/denial6-5.pcap`` (MIT; 3 MB, not committed): THC-IPv6's
denial6 sends 35,690 IPv6 AH headers with SPI 0 and sequence number 0 to one host, which answers
some with ICMPv6 Parameter Problem. tshark dissects ``ipv6:ah:icmpv6`` with SPI 0 on every one, as
ipsecscope does; but findings called it "One-way AH ... refused with ICMP" with the hint "allow AH
(IP protocol 51) ... and check that its kernel has the SA", and "ESP replay ... 35689 duplicate
sequence numbers" (ESP, RFC 4303, for AH). SPI 0 is reserved and never sent by an SA (RFC 4302
§2.4, RFC 4303 §2.1): no receiver has an SA for it, there is no tunnel to be one-way and no
counter to replay. One ESP-RESERVED-SPI finding per flow says so.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from conftest import DATA, needs_tshark
from conftest import field_cli as cli

CAP = DATA / "reserved-spi" / "reserved-spi.pcap"


@needs_tshark
def test_spi_zero_rows_are_tsharks() -> None:
    out = subprocess.run(["tshark", "-n", "-r", str(CAP), "-T", "fields", "-e", "frame.number", "-e", "ah.spi",
                          "-e", "esp.spi", "-e", "esp.sequence"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    ts = {int(c[0]): c[1:] for c in (line.split("\t") for line in out.splitlines())}
    rows = {r["frame"]: r for r in map(json.loads, cli("packets", str(CAP), "--json").splitlines())}
    for n in range(1, 21):
        assert ts[n][0] == "0x00000000" and (rows[n]["kind"], int(rows[n]["spi"], 16)) == ("AH", 0), n
    for n in range(22, 28):
        assert (rows[n]["kind"], int(rows[n]["spi"], 16), rows[n]["seq"]) == ("ESP", 0, int(ts[n][2])), n


def test_spi_zero_is_no_tunnel_traffic() -> None:
    fs = json.loads(cli("findings", str(CAP), "--json"))["findings"]
    assert sorted(f["code"] for f in fs) == ["ESP-RESERVED-SPI", "ESP-RESERVED-SPI"]
    ah, esp = sorted(fs, key=lambda f: f["title"])
    assert ah["title"] == "20 AH packets 2001:db8:1::2 -> 2001:db8:1::1 with the reserved SPI 0"
    assert "RFC 4302 §2.4" in ah["explanation"] and "sequence number 0" in ah["explanation"]
    assert "2001:db8:1::1 answered 1 of them with ICMP parameter problem (frame 21)" in ah["explanation"]
    assert 21 in ah["frames"] and "allow AH" not in ah["hint"]
    assert esp["title"] == "6 ESP packets 192.0.2.1 -> 192.0.2.2 with the reserved SPI 0"
    assert "RFC 4303 §2.1" in esp["explanation"] and "sequence number 0" not in esp["explanation"]


def test_ah_replay_says_ah() -> None:
    """The same AH flow with a real SPI: its repeated sequence numbers are an AH replay (RFC 4302
    §3.4.3), not an ESP one."""
    raw = bytearray(CAP.read_bytes())
    spi0 = bytes.fromhex("3a020000" "00000000" "00000000")  # AH: next header 58, length 2, SPI 0, seq 0
    raw = raw.replace(spi0, bytes.fromhex("3a020000" "00001234" "00000000"))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "ah-replay.pcap"
        p.write_bytes(bytes(raw))
        fs = {f["code"]: f for f in json.loads(cli("findings", str(p), "--json"))["findings"]}
    r = fs["ESP-REPLAY"]
    assert r["title"].startswith("AH replay 2001:db8:1::2 -> 2001:db8:1::1: 19 duplicate")
    assert "RFC 4302 §3.4.3" in r["explanation"]
