"""NAT_DETECTION hashes that fail while the peers stay on UDP 500 (tests/data/tcpdump: tcpdump's
ikev2four.pcap, BSD). Both hosts sit in 192.168.1.0/24 and every NAT_DETECTION_SOURCE_IP /
NAT_DETECTION_DESTINATION_IP fails when recomputed as RFC 7296 §2.23 says (SHA-1 of SPIi, SPIr,
address, port; tshark gives the payloads). ipsecscope said "NAT detected: initiator 192.168.1.2 is
behind a NAT and responder 192.168.1.1 is behind a NAT", and the sas view the same. But an
initiator whose hashes fail MUST move all later IKE and ESP to UDP 4500 (§2.23), and here IKE_AUTH
and eight CREATE_CHILD_SAs are sent and answered on 500: the peers found their hashes matching, so
the payloads are no evidence of a NAT."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess

from conftest import field_cli as cli
from conftest import needs_tshark, public

CAP = public("tcpdump/ikev2four.pcap")  # third-party: materialised at test time (tests/public_data.py)
SRC_IP, DST_IP = "16388", "16389"  # NAT_DETECTION_SOURCE_IP, NAT_DETECTION_DESTINATION_IP


def _frames() -> list[list[str]]:
    out = subprocess.run(["tshark", "-n", "-r", str(CAP), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
                          "-e", "ip.src", "-e", "ip.dst", "-e", "udp.srcport", "-e", "udp.dstport", "-e", "isakmp.ispi",
                          "-e", "isakmp.rspi", "-e", "isakmp.exchangetype", "-e", "isakmp.notify.msgtype",
                          "-e", "isakmp.notify.data"], capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def _hash(spi_i: str, spi_r: str, addr: str, port: int) -> str:
    return hashlib.sha1(bytes.fromhex(spi_i) + bytes.fromhex(spi_r) + ipaddress.ip_address(addr).packed
                        + port.to_bytes(2, "big")).hexdigest()


@needs_tshark
def test_every_nat_detection_hash_fails_and_ike_stays_on_500() -> None:
    rows = _frames()
    checked = 0
    for src, dst, sport, dport, spi_i, spi_r, _x, types, data in rows:
        for t, d in zip(types.split(","), data.split(","), strict=False):
            if t in (SRC_IP, DST_IP):
                addr, port = (src, sport) if t == SRC_IP else (dst, dport)
                assert d != _hash(spi_i, spi_r, addr, int(port))
                checked += 1
    assert checked >= 4
    later = [r for r in rows if r[6] != "34"]  # IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL
    assert later and all(r[2] == r[3] == "500" for r in later)
    assert {r[0] for r in later} == {"192.168.1.1", "192.168.1.2"}  # asked and answered there


def test_no_peer_is_called_behind_a_nat() -> None:
    (nat,) = [f for f in json.loads(cli("findings", "--json", str(CAP)))["findings"] if f["code"] == "IKE-NAT-DETECTED"]
    assert nat["severity"] == "info"
    assert "is behind a NAT" not in nat["title"] and "stayed on UDP 500" in nat["title"]
    assert "RFC 7296 §2.23" in nat["explanation"] and 5 in nat["frames"] and 6 in nat["frames"]
    sa = json.loads(cli("sas", "--json", str(CAP)))["ike_sas"][0]
    assert sa["nat"]["behind_nat"] == [] and sa["nat"]["encapsulation_forced"] == []
    assert "NAT: none" in cli("sas", str(CAP))
