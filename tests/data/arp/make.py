"""Make arp.pcap: one ARP frame of each kind tshark's Info names differently (run from the
repository root: ``python tests/data/arp/make.py``). Scapy builds the frames; tshark is the oracle."""

from __future__ import annotations

from pathlib import Path

from scapy.all import ARP, Dot1Q, Ether, wrpcap

A, B, BCAST, ZERO = "02:00:00:00:0c:05", "02:00:00:00:0c:07", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"

FRAMES = [
    Ether(src=A, dst=BCAST) / ARP(op=1, hwsrc=A, psrc="10.1.0.5", hwdst=ZERO, pdst="10.2.0.7"),  # request
    Ether(src=B, dst=A) / ARP(op=2, hwsrc=B, psrc="10.2.0.7", hwdst=A, pdst="10.1.0.5"),  # reply
    Ether(src=A, dst=BCAST) / ARP(op=1, hwsrc=A, psrc="10.1.0.5", hwdst=BCAST, pdst="10.1.0.5"),  # gratuitous
    Ether(src=A, dst=BCAST) / ARP(op=1, hwsrc=A, psrc="10.1.0.5", hwdst=ZERO, pdst="10.1.0.5"),  # RFC 5227 announcement
    Ether(src=A, dst=BCAST) / ARP(op=1, hwsrc=A, psrc="0.0.0.0", hwdst=ZERO, pdst="10.1.0.9"),  # RFC 5227 probe
    Ether(src=A, dst=BCAST) / ARP(op=2, hwsrc=A, psrc="10.1.0.5", hwdst=BCAST, pdst="10.1.0.5"),  # gratuitous reply
    Ether(src=A, dst=BCAST) / ARP(op=1, hwsrc=A, psrc="0.0.0.0", hwdst=BCAST, pdst="10.1.0.9"),  # no probe: tha set
    Ether(src=A, dst=B) / ARP(op=1, hwsrc=A, psrc="10.1.0.5", hwdst=B, pdst="10.2.0.7"),  # unicast re-check
    Ether(src=A, dst=BCAST) / Dot1Q(vlan=7) / ARP(op=1, hwsrc=A, psrc="10.1.0.5", pdst="10.2.0.7"),  # VLAN-tagged
    Ether(src=A, dst=BCAST) / ARP(op=3, hwsrc=A, psrc="10.1.0.5", pdst="10.2.0.7"),  # RARP request opcode: "ARP"
]

if __name__ == "__main__":
    for i, f in enumerate(FRAMES):
        f.time = 1_700_000_000 + i / 1000
    wrpcap(str(Path(__file__).with_name("arp.pcap")), FRAMES)
