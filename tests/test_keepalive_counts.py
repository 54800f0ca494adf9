"""NAT keepalives (RFC 3948 §2.3) are counted per address pair once, by the tracker, as they
arrive (``SaTable.keepalives``); the NAT verdict of every view (sas, sas --json, the TUI's SA
detail, IKE-NAT-DETECTED) reads that count instead of walking the observations each time."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import SAMPLES

from ipsecscope.analysis.rules.nat_mtu import nat_sides
from ipsecscope.session import Session


def test_nat_napt_keepalives_counted_per_pair_as_tshark_counts_them() -> None:
    cap = SAMPLES / "nat-napt" / "capture.pcapng"
    truth = json.loads((SAMPLES / "nat-napt" / "truth.json").read_text())["expected"]["findings"][0]
    s = Session(keep_rows=False)
    s.load(cap)
    assert s.table.keepalives == {("198.18.0.1", "198.18.0.2"): truth["keepalives"]}
    obs = [o for o in s.table.observations if o.kind == "nat_keepalive"]
    assert {(o.src, o.dst): o.detail["count"] for o in obs} == s.table.keepalives
    (sa,) = [sa for sa in s.table.ike_sas.values() if sa.nat_detected][:1]
    sides = {x.addr: x.keepalives for x in nat_sides(s.table, sa)}
    assert sides == {"198.18.0.1": truth["keepalives"], "198.18.0.2": 0}
    if shutil.which("tshark"):
        out = subprocess.run(["tshark", "-r", str(cap), "-Y", "udpencap.nat_keepalive", "-T", "fields",
                              "-e", "ip.src", "-e", "ip.dst"], capture_output=True, text=True, check=True).stdout
        pairs = [tuple(line.split("\t")) for line in out.splitlines() if line]
        assert len(pairs) == truth["keepalives"] and set(pairs) == set(s.table.keepalives)


def test_nat_sides_reads_the_state_count_not_the_observations() -> None:
    s = Session(keep_rows=False)
    s.load(SAMPLES / "nat-napt" / "capture.pcapng")
    (sa,) = [sa for sa in s.table.ike_sas.values() if sa.nat_detected][:1]
    s.table.observations.clear()  # a view must not need them for the count
    assert {x.addr: x.keepalives for x in nat_sides(s.table, sa)}["198.18.0.1"] >= 1


@pytest.mark.parametrize("name", ["healthy-gcm", "nat-rebind"])
def test_pairs_without_keepalives_count_nothing(name: str) -> None:
    s = Session(keep_rows=False)
    s.load(SAMPLES / name / "capture.pcapng")
    assert all(v > 0 for v in s.table.keepalives.values())
    assert sum(s.table.keepalives.values()) == sum(
        int(o.detail["count"]) for o in s.table.observations if o.kind == "nat_keepalive")
