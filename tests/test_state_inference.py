"""CHILD SAs inferred from ESP alone (no IKE exchange for their SPIs): when two one-way flows are
the two SAs of one CHILD SA (RFC 4301 §4.1, RFC 7296 §2.17), and when they are not.

Nothing on the wire links the two SPIs of a CHILD SA, so a pairing is a claim; it is made only when
the evidence holds (same encapsulation and mirrored ports, the reverse starting while the first is
active, exactly one candidate, the same algorithms once keys are known), else both are "unpaired".
Oracles: the peers' own account of their CHILD SAs (samples/*/truth.json, from the charon logs) for
pairs that must be found, tshark for the flows and their encapsulation and times, the key files for
the algorithms.
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import SAMPLES, needs_tshark

from ipsecscope.model.sa import SaState
from ipsecscope.session import Session

SYN = SAMPLES / "synthetic"
REAL = sorted(p.parent.name for p in SAMPLES.glob("*/truth.json")
              if json.loads(p.read_text()).get("child_sas"))


def _load(cap: Path, *keys: Path) -> Session:
    s = Session()
    if keys:
        s.add_key_files(list(keys))
    s.load(cap)
    return s


def _groups(s: Session) -> dict[int, set[int]]:
    """INFERRED CHILD SA id -> the SPIs of its flows."""
    t = s.table
    return {c.id: {f.spi for f in c.flows(t)} for c in t.child_sas.values() if c.state == SaState.INFERRED}


def _tshark_flows(cap: Path) -> dict[tuple[str, str, int], dict]:
    """(src, dst, spi) -> packets, first/last time, UDP ports (None: plain ESP), from tshark."""
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", "esp && !icmp && !icmpv6", "-T", "fields",
                          "-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst", "-e", "esp.spi",
                          "-e", "frame.time_epoch", "-e", "udp.srcport", "-e", "udp.dstport"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    flows: dict[tuple[str, str, int], dict] = {}
    for ln in out.splitlines():
        s4, s6, d4, d6, spi, t, sp, dp = ln.split("\t")
        f = flows.setdefault(((s4 or s6).split(",")[0], (d4 or d6).split(",")[0], int(spi, 16)),
                             {"packets": 0, "first": float(t), "ports": (int(sp), int(dp)) if sp else None})
        f["packets"] += 1
        f["last"] = float(t)
    return flows


@pytest.mark.parametrize("name", REAL)
def test_inferred_pairs_are_the_peers_child_sas(name):
    """Real strongSwan runs read without keys: every CHILD SA is inferred from ESP, and the pairs
    are exactly the CHILD SAs both charons logged (spi_in/spi_out), no more, no fewer."""
    s = _load(SAMPLES / name / "capture.pcapng")
    seen = {f.spi for f in s.table.flows.values()}
    truth = json.loads((SAMPLES / name / "truth.json").read_text())["child_sas"]
    want = {frozenset(int(c[k], 16) for k in ("spi_in", "spi_out")) & seen for c in truth} - {frozenset()}
    assert {frozenset(g) for g in _groups(s).values()} == want
    for c in s.table.child_sas.values():
        if c.state == SaState.INFERRED:
            assert c.inferred_reason.startswith("paired: " if c.spi_i is not None else "unpaired: ")


@needs_tshark
def test_flows_of_different_encapsulation_stay_unpaired():
    """ipv6-transport-natt holds seven independent one-way SAs. 0x60000004 (plain ESP) and
    0x60000006 (ESP in UDP 4500) go opposite ways between the same hosts at the same time, and
    were paired into one CHILD SA; one SA pair shares one encapsulation (RFC 3948)."""
    cap = SYN / "ipv6-transport-natt.pcap"
    want = _tshark_flows(cap)
    s = _load(cap)
    assert {f.key[:3]: f.packets for f in s.table.flows.values()} == {k: v["packets"] for k, v in want.items()}
    by_spi = {k[2]: v for k, v in want.items()}
    assert by_spi[0x60000004]["ports"] is None and by_spi[0x60000006]["ports"] == (4500, 4500)
    groups = _groups(s)
    assert {0x60000004} in groups.values() and {0x60000006} in groups.values()
    c6 = next(c for c in s.table.child_sas.values() if c.spi_r == 0x60000006)
    assert "unpaired" in c6.inferred_reason and "0x60000004 in the opposite direction is plain ESP" in c6.inferred_reason
    # Without keys nothing speaks against the IPv6 pair: same encapsulation, both active together.
    assert {0x60000001, 0x60000002} in groups.values()


@needs_tshark
def test_a_reverse_flow_after_the_first_went_quiet_is_not_its_pair():
    """esn-wrap: 0xe5000004 starts after 0xe5000003 has stopped (tshark's times: the gap is more
    than twice 0xe5000003's own packet interval); they are independent SAs."""
    cap = SYN / "esn-wrap.pcap"
    fl = {k[2]: v for k, v in _tshark_flows(cap).items()}
    a, b = fl[0xE5000003], fl[0xE5000004]
    interval = (a["last"] - a["first"]) / (a["packets"] - 1)
    assert b["first"] - a["last"] > 2 * interval
    s = _load(cap)
    groups = _groups(s)
    assert {0xE5000003} in groups.values() and {0xE5000004} in groups.values()
    c = next(c for c in s.table.child_sas.values() if c.spi_r == 0xE5000004)
    assert "had gone quiet" in c.inferred_reason and "0xe5000003" in c.inferred_reason


@pytest.mark.parametrize("name", ["ipv6-transport-natt", "esn-wrap"])
def test_keys_with_different_algorithms_split_a_pair(name):
    """The first two SAs of these captures start together in opposite directions: the timing pairs
    them in ipv6-transport-natt (in esn-wrap 0xe5000004 fits 0xe5000001 as well, so no pair is
    made without keys); their keys (the key file names the algorithm per SPI) differ, and one
    CHILD SA has one proposal for both directions: unpaired."""
    cap, keys = SYN / f"{name}.pcap", SYN / f"{name}.keys.json"
    algs = {int(e["spi"], 16): (e["encr"], e["integ"]) for e in json.loads(keys.read_text())["esp"]}
    first = set(sorted(algs)[:2])
    assert len({algs[spi] for spi in first}) == 2
    assert (first in _groups(_load(cap)).values()) == (name == "ipv6-transport-natt")
    s = _load(cap, keys)
    groups = _groups(s)
    for spi in first:
        assert {spi} in groups.values()
        c = next(c for c in s.table.child_sas.values() if c.spi_r == spi)
        assert c.state == SaState.INFERRED and "different algorithms" in c.inferred_reason
    # The split SAs are whole: every packet on its own SA, counters intact.
    assert sum(f.packets for f in s.table.flows.values()) == sum(f.packets for f in _load(cap).table.flows.values())
    ids = defaultdict(list)
    for f in s.table.flows.values():
        ids[f.child_sa].append(f.spi)
    assert all(len(v) == 1 for k, v in ids.items() if k in {c.id for c in s.table.child_sas.values()
                                                             if c.spi_r in first})


def test_two_candidates_for_one_reverse_flow_pair_neither(tmp_path):
    """Two flows A -> B start together, one flow B -> A answers: it fits either, so which one is its
    pair is not known; all three stay unpaired instead of a guess (scapy builds the traffic)."""
    from scapy.layers.inet import IP
    from scapy.layers.ipsec import ESP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    a, b = "198.18.6.1", "198.18.6.2"
    pkts, t = [], 1_700_000_000.0
    for i in range(1, 4):
        for src, dst, spi in ((a, b, 0x100), (a, b, 0x200), (b, a, 0x300)):
            p = Ether() / IP(src=src, dst=dst) / ESP(spi=spi, seq=i, data=bytes(48))
            p.time = t
            pkts.append(p)
            t += 0.01
    cap = tmp_path / "ambiguous.pcap"
    wrpcap(str(cap), pkts)
    s = _load(cap)
    assert sorted(map(sorted, _groups(s).values())) == [[0x100], [0x200], [0x300]]
    c = next(c for c in s.table.child_sas.values() if c.spi_r == 0x300)
    assert "more than one flow in the opposite direction fits it (0x00000200, 0x00000100)" in c.inferred_reason


@pytest.mark.parametrize("name", ["ipv6-transport-natt", "esn-wrap"])
def test_split_pairs_are_the_same_on_the_fast_loop(name, monkeypatch):
    """The split happens in state, under both analysis paths (session_fast and the general one)."""
    from ipsecscope import session_fast
    from ipsecscope.export.documents import table_to_dict

    cap, keys = SYN / f"{name}.pcap", SYN / f"{name}.keys.json"
    assert session_fast.eligible(Session(), cap) is not None
    fast = table_to_dict(_load(cap, keys).table)
    monkeypatch.setattr(session_fast, "eligible", lambda *a: None)
    assert table_to_dict(_load(cap, keys).table) == fast
