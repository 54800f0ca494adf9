"""AH inside a tunnel the decoder peels (GRE, VXLAN: tests/data/ah-tunnels): the ICV covers the
tunnelled packet's IP header, the one right in front of AH (RFC 4302 §3.3.3), not the capture's
outer header. Before this was fixed every such packet was 'unverified' ("the IPv4 header in front
of AH could not be read again": the outer header's protocol is GRE or UDP), and `decrypt` wrote
them as unverifiable.

Oracle: scapy's own AH verification of the inner packets, taken out of the tunnel by scapy's GRE
and VXLAN layers (not by ipsecscope's decoder); and the untunnelled capture's own answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DATA
from scapy.layers.l2 import GRE, Ether
from scapy.layers.vxlan import VXLAN
from scapy.utils import PcapWriter, rdpcap
from test_ah import AH_DIR, key_entries, rows, run, scapy_verdicts
from test_decrypt_ah import decrypt, written

TUN_DIR = DATA / "ah-tunnels"
CASES = [(name, tun) for name in ("ah-v4", "ah-v6", "ah-frag") for tun in ("gre", "vxlan")]
IDS = [f"{n}-{t}" for n, t in CASES]


def inner_capture(cap: Path, out: Path) -> Path:
    """The tunnelled frames as scapy takes them out of GRE / VXLAN, as Ethernet frames."""
    with PcapWriter(str(out), linktype=1) as w:
        for fr in rdpcap(str(cap)):
            inner = fr[VXLAN].payload if VXLAN in fr else Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / fr[GRE].payload
            w.write(Ether(bytes(inner)))
    return out


@pytest.mark.parametrize(("name", "tun"), CASES, ids=IDS)
def test_icv_verdicts_match_scapy_on_the_inner_packet(name, tun, tmp_path):
    cap, keys = TUN_DIR / f"{name}-{tun}.pcap", AH_DIR / f"{name}.keys.json"
    want = scapy_verdicts(inner_capture(cap, tmp_path / "inner.pcap"), key_entries(keys))
    got = rows(cap, keys)
    assert want and {n: got[n]["status"] for n in want} == {n: "verified" if ok else "icv-bad" for n, ok in want.items()}
    assert all(got[n]["kind"] != "AH" for n in got if n not in want)
    if name == "ah-v4":
        assert sorted(want.values()).count(False) == 1  # frame 6's flipped byte: a check that can fail


@pytest.mark.parametrize("tun", ["gre", "vxlan"])
def test_sas_counts_as_without_the_tunnel(tun):
    keys = AH_DIR / "ah-v4.keys.json"

    def counts(cap: Path) -> dict:
        doc = json.loads(run("sas", str(cap), "-k", str(keys), "--json").stdout)
        return {f["spi"]: (f["protocol"], f["packets"], f["decrypted"], f["icv_failed"], f["no_key"])
                for f in doc["flows"] if f["protocol"] == "AH"}

    assert counts(TUN_DIR / f"ah-v4-{tun}.pcap") == counts(AH_DIR / "ah-v4.pcap") == {
        "0xa4000001": ("AH", 5, 5, 0, 0), "0xa4000002": ("AH", 4, 3, 1, 0),
        "0xa4000003": ("AH", 2, 2, 0, 0), "0xa4000004": ("AH", 3, 3, 0, 0)}


@pytest.mark.parametrize(("name", "tun"), CASES, ids=IDS)
def test_decrypt_writes_what_it_writes_without_the_tunnel(name, tun, tmp_path):
    keys = AH_DIR / f"{name}.keys.json"
    r0, recs0 = decrypt(AH_DIR / f"{name}.pcap", tmp_path / "plain.pcapng", keys)
    r1, recs1 = decrypt(TUN_DIR / f"{name}-{tun}.pcap", tmp_path / "tun.pcapng", keys)
    assert r1.returncode == r0.returncode
    assert recs1 == recs0 and {r["status"] for r in recs1} <= {"ok", "icv_failed"}
    assert any(r["status"] == "ok" for r in recs1)
    assert written(tmp_path / "tun.pcapng") == written(tmp_path / "plain.pcapng")
