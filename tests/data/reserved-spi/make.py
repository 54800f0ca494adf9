"""Writes reserved-spi.pcap (run from the repository root: ``.venv/bin/python
tests/data/reserved-spi/make.py``) with scapy: packets on the reserved SPI 0 (RFC 4302 §2.4, RFC
4303 §2.1), as README.md lists. The class of suricata-verify's ipv6-dos-with-ext-headers-5
capture (THC-IPv6 denial6 test 5: 35,690 AH headers with SPI 0 and sequence number 0)."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import IP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ParamProblem, IPv6
from scapy.layers.ipsec import AH, ESP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

HERE = Path(__file__).resolve().parent
A6, B6 = "2001:db8:1::2", "2001:db8:1::1"
MAC_A, MAC_B = "02:00:00:00:0a:02", "02:00:00:00:0a:01"


def main() -> None:
    pkts = []
    t = 1_700_000_000.0
    # A flood tool: AH (12 octets and a 4-octet ICV: Payload Length 2) with SPI 0 and sequence
    # number 0 around an echo request, 20 times, 100 µs apart
    flood = [Ether(src=MAC_A, dst=MAC_B) / IPv6(src=A6, dst=B6) / AH(nh=58, payloadlen=2, spi=0, seq=0, icv=b"\0" * 4)
             / ICMPv6EchoRequest(id=1, seq=i) for i in range(20)]
    for i, p in enumerate(flood):
        p.time = t + i * 1e-4
        pkts.append(p)
    # The receiver answers one with a Parameter Problem quoting it (RFC 4443 §3.4)
    err = Ether(src=MAC_B, dst=MAC_A) / IPv6(src=B6, dst=A6) / ICMPv6ParamProblem(code=1, ptr=40) / bytes(flood[0][IPv6])
    err.time = t + 0.0021
    pkts.append(err)
    # A broken stack: ESP on SPI 0 with counting sequence numbers (opaque payload)
    for i in range(6):
        p = Ether(src=MAC_A, dst=MAC_B) / IP(src="192.0.2.1", dst="192.0.2.2") / ESP(spi=0, seq=i + 1, data=bytes(range(48)))
        p.time = t + 1 + i * 0.2
        pkts.append(p)
    wrpcap(str(HERE / "reserved-spi.pcap"), pkts)


if __name__ == "__main__":
    main()
