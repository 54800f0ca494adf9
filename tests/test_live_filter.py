"""`ipsecscope live`'s default capture filter, run by the same compiler the kernel filter comes
from (libpcap, through tcpdump: scapy's attach_filter asks tcpdump -ddd) over real captures.

A live capture sees only what this filter lets through. The ICMP errors that quote an IPsec packet
(a router's "fragmentation needed" with its MTU, a peer's "port unreachable") are the evidence of
ESP-PATH-MTU and ESP-ICMP-UNREACHABLE; a filter of IKE/ESP/fragments alone made a live MTU problem
look like harmless fragments, with no router, MTU or dropped packet."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import SAMPLES, needs_tshark

from ipsecscope.capture.live import DEFAULT_BPF

needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")


def _passed(cap: Path, tmp_path: Path) -> list[str]:
    """frame.time_epoch of each frame of ``cap`` that DEFAULT_BPF lets through."""
    out = tmp_path / f"{cap.parent.name}-{cap.stem}-passed.pcap"
    subprocess.run(["tcpdump", "-r", str(cap), "-w", str(out), DEFAULT_BPF], check=True,
                   capture_output=True, timeout=60)
    return _times(out)


def _times(cap: Path, flt: str = "") -> list[str]:
    r = subprocess.run(["tshark", "-n", "-r", str(cap), *(["-Y", flt] if flt else []), "-T", "fields",
                        "-e", "frame.time_epoch"], check=True, capture_output=True, text=True, timeout=60)
    return r.stdout.split()


# tshark's word for "an ICMP error quoting IPsec": the quoted packet is dissected inside the error.
QUOTES_IPSEC = ("(icmp.type in {3, 4, 5, 11, 12} || icmpv6.type in {1, 2, 3, 4}) && "
                "(esp || ah || udp.port in {500, 4500} || tcp.port == 4500)")


@needs_tcpdump
@needs_tshark
@pytest.mark.parametrize("sample", ["mtu-small-link", "esp-rejected"])
def test_icmp_errors_quoting_ipsec_pass_the_live_filter(sample: str, tmp_path: Path) -> None:
    """mtu-small-link: the router's 'need to frag (mtu 1280)' for an ESP-in-UDP packet;
    esp-rejected: the peer's 'udp port 4500 unreachable'. Both pass (the old filter dropped
    them), and so does every frame of these all-IPsec captures."""
    cap = SAMPLES / sample / "capture.pcapng"
    quoting = _times(cap, QUOTES_IPSEC)
    assert quoting  # the sample holds such errors (tshark says so)
    passed = _passed(cap, tmp_path)
    assert set(quoting) <= set(passed)
    assert passed == _times(cap)


@needs_tcpdump
@needs_tshark
def test_only_icmp_errors_about_ipsec_pass(tmp_path: Path) -> None:
    """ICMPv6 packet-too-big quoting ESP in UDP 4500 and ICMPv4 'need to frag' quoting raw ESP
    pass; an echo request and a port unreachable quoting DNS do not (the filter stays IPsec's)."""
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6PacketTooBig, IPv6
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    esp = bytes.fromhex("c0ffee0100000007") + bytes(64)
    udp_esp6 = IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=4500, dport=4500) / esp
    frames = [
        IPv6(src="2001:db8:1::1", dst="2001:db8::1") / ICMPv6PacketTooBig(mtu=1280) / bytes(udp_esp6),
        IP(src="198.18.1.1", dst="198.18.0.1") / ICMP(type=3, code=4, nexthopmtu=1280)
        / bytes(IP(src="198.18.0.1", dst="198.18.0.2", proto=50) / esp)[:64],
        IP(src="198.18.0.1", dst="198.18.0.2") / ICMP(type=8) / b"ping",
        IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(),
        IP(src="192.0.2.53", dst="198.18.0.1") / ICMP(type=3, code=3)
        / bytes(IP(src="198.18.0.1", dst="192.0.2.53") / UDP(sport=33000, dport=53) / DNS(qd=DNSQR(qname="a.test"))),
    ]
    cap = tmp_path / "icmp.pcap"
    wrpcap(str(cap), [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / f for f in frames])
    every = _times(cap)
    assert _times(cap, QUOTES_IPSEC) == every[:2]  # the oracle agrees on which two are about IPsec
    assert _passed(cap, tmp_path) == every[:2]
