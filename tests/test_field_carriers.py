"""IPsec carried by links other than Ethernet/IP (tests/data/carriers: the healthy-gcm sample's IP
packets behind an MPLS label stack, an Ethernet pseudowire, a PPPoE session, PPP, Linux cooked
MPLS, a router's serial link (Cisco HDLC, Frame Relay); make.py there), against tshark frame by frame.

The class: ipsecscope read only Ethernet (VLAN tags), Linux cooked and raw IP/loopback links;
every frame of a VPN captured on a provider's MPLS core or a DSL line's PPPoE side was "other"
(no IKE, no ESP), where tshark dissects each IKE message and ESP packet. The link layer alone
changes: each frame must be the IKE message or ESP packet tshark sees there, and decrypt with
the sample's keys as the Ethernet original does.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, SAMPLES, needs_tshark
from conftest import field_cli as cli

from ipsecscope.decode import link
from ipsecscope.session import Session

CARRIERS = sorted((DATA / "carriers").glob("*.pcap"))
KEYS = SAMPLES / "healthy-gcm" / "keys"


@functools.cache
def tshark(cap: Path) -> dict[int, tuple[str, ...]]:
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-T", "fields", "-E", "occurrence=f", "-e", "frame.number",
                          "-e", "frame.protocols", "-e", "isakmp.ispi", "-e", "isakmp.rspi", "-e", "isakmp.exchangetype",
                          "-e", "isakmp.messageid", "-e", "esp.spi", "-e", "esp.sequence", "-e", "ip.src", "-e", "ip.dst"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return {int(c[0]): tuple(c[1:]) for c in (line.split("\t") for line in out.splitlines())}


@needs_tshark
@pytest.mark.parametrize("cap", CARRIERS, ids=lambda p: p.name)
def test_ike_and_esp_behind_other_links_are_tsharks(cap):
    ts = tshark(cap)
    s = Session()
    s.load(cap)
    rows = {r.frame: r for r in s.rows}
    ike = {m["frame"]: m for m in json.loads(cli("summary", str(cap), "--json"))["ike"]}
    assert len(rows) == len(ts) == 34
    kinds = {"IKE": 0, "ESP": 0}
    for n, (stack, ispi, rspi, xchg, mid, spi, seq, src, dst) in ts.items():
        r = rows[n]
        assert (r.src, r.dst) == (src, dst), n
        if stack.endswith(":isakmp"):
            m = ike[n]
            assert r.kind == "IKE", n
            assert (m["spi_i"], m["spi_r"], m["exchange_type"], m["msg_id"]) == (ispi, rspi, int(xchg), int(mid, 16)), n
            kinds["IKE"] += 1
        else:
            assert stack.endswith(":esp"), (n, stack)
            assert (r.kind, r.spi, r.seq) == ("ESP", int(spi, 16), int(seq)), n
            kinds["ESP"] += 1
    assert kinds == {"IKE": 16, "ESP": 18}


@pytest.mark.parametrize("cap", [DATA / "carriers" / "pppoe.pcap", DATA / "carriers" / "mpls-ethernet-pw.pcap",
                                 DATA / "carriers" / "frame-relay.pcap"], ids=lambda p: p.name)
def test_carried_esp_decrypts_with_the_samples_keys(cap):
    doc = json.loads(cli("sas", str(cap), "-k", str(KEYS), "--json"))
    flows = doc["flows"]
    assert len(flows) == 4 and sum(f["decrypted"] for f in flows) == 18


def test_link_headers_cut_short_are_truncated_not_ip():
    """Every cut inside the MPLS stack, the pseudowire, the PPPoE or PPP header reads as a
    truncated link header or as not IP: never an IP offset past the bytes there."""
    for cap in CARRIERS:
        raw = cap.read_bytes()
        lt = int.from_bytes(raw[20:24], "little")
        first = raw[24 + 16:24 + 16 + int.from_bytes(raw[24 + 8:24 + 12], "little")]
        ver, off = link.ip_offset(lt, first)
        assert ver == 4 and first[off] == 0x45
        for cut in range(off + 1):
            v, o = link.ip_offset(lt, first[:cut])
            assert v in (link.TRUNCATED, link.NOT_IP) or (v == 4 and o == off and cut == off), (cap.name, cut, v, o)
