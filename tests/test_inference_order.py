"""Which ESP flows make one CHILD SA, read without the IKE exchange that made them, must not depend
on the order the flows start in (RFC 4301 §4.1: nothing on the wire links the two SPIs of a CHILD
SA, so a pairing is a claim that exactly one opposite flow fits).

Data: Arkime's IKEv1.pcap (tests/data/arkime, Apache-2.0; Johannes Weber's FortiGate capture):
two Quick Modes at once (frames 8 and 9, encrypted), then 2003:51:6012::4 sends 74 packets on
each of two SAs and 2003:51:6012::2 sends 148 on one, 0x3d71315a, numbered 1..148 by one counter
(tshark's count and sequence numbers). Each of ::4's flows fits ::2's as its reverse. The same
capture without frames 14 and 16 (::2's first two packets) starts ::4's two flows first: there
all three stayed unpaired with three ESP-ONE-WAY warnings, while in the original order the first
two started were paired ("no other flow fits") and the third was one-way with "no flow in the
opposite direction started near it".
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import IPSECSCOPE, ROOT, need, needs_tshark, public

from ipsecscope.model.sa import SaState
from ipsecscope.session import Session

ARKIME_V1 = public("arkime/IKEv1.pcap")  # third-party: materialised at test time
SPIS = {0x3D71315A, 0xE8F1F49C, 0x8905E940}


def _without(src: Path, dst: Path, frames: set[int]) -> Path:
    """A copy of the classic pcap ``src`` without ``frames`` (1-based), records byte for byte."""
    data = src.read_bytes()
    order = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    out, off, n = bytearray(data[:24]), 24, 0
    while off + 16 <= len(data):
        incl = struct.unpack_from(order + "I", data, off + 8)[0]
        n += 1
        if n not in frames:
            out += data[off:off + 16 + incl]
        off += 16 + incl
    dst.write_bytes(bytes(out))
    return dst


@pytest.fixture(scope="module")
def reordered(tmp_path_factory) -> Path:
    need(ARKIME_V1)
    return _without(ARKIME_V1, tmp_path_factory.mktemp("arkime") / "IKEv1-no14-16.pcap", {14, 16})


def _shape(cap: Path) -> tuple[set[frozenset[int]], Session]:
    s = Session()
    s.load(cap)
    t = s.table
    groups = {frozenset(f.spi for f in c.flows(t)) for c in t.child_sas.values() if c.state == SaState.INFERRED}
    return groups, s


def _one_way(cap: Path) -> list[dict]:
    r = subprocess.run([*IPSECSCOPE, "findings", str(cap), "--json"], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert "Traceback" not in r.stderr, r.stderr
    return [f for f in json.loads(r.stdout)["findings"] if f["code"] == "ESP-ONE-WAY"]


@needs_tshark
def test_arkime_counts_are_tsharks():
    """148 against 74 is true: ::2 sends every packet on 0x3d71315a, one counter 1..148."""
    out = subprocess.run(["tshark", "-n", "-r", str(ARKIME_V1), "-Y", "esp", "-T", "fields", "-e", "esp.spi",
                          "-e", "esp.sequence"], capture_output=True, text=True, timeout=60, check=True).stdout
    seqs: dict[int, list[int]] = {}
    for line in out.split("\n"):
        if line:
            spi, seq = line.split("\t")
            seqs.setdefault(int(spi, 16), []).append(int(seq))
    assert sorted(seqs[0x3D71315A]) == list(range(1, 149))
    _, s = _shape(ARKIME_V1)
    assert {f.spi: f.packets for f in s.table.flows.values()} == {k: len(v) for k, v in seqs.items()}


def test_pairing_does_not_depend_on_which_flow_starts_first(reordered):
    """Both orders: three unpaired INFERRED CHILD SAs, 0x3d71315a's naming both of ::4's SPIs as
    fitting, and each of ::4's naming 0x3d71315a (the old code paired 0x3d71315a with 0xe8f1f49c
    in the original order only)."""
    for cap in (ARKIME_V1, reordered):
        groups, s = _shape(cap)
        assert groups == {frozenset({spi}) for spi in SPIS}, cap.name
        by_spi = {c.spi_r: c for c in s.table.child_sas.values()}
        two = by_spi[0x3D71315A]
        assert "more than one flow in the opposite direction fits it" in two.inferred_reason
        assert sorted(two.pair_candidates) == sorted([0xE8F1F49C, 0x8905E940])
        for spi in (0xE8F1F49C, 0x8905E940):
            assert by_spi[spi].pair_candidates == [0x3D71315A]
            assert "no flow in the opposite direction started near it" not in by_spi[spi].inferred_reason
        # The Quick Modes that made these SAs were seen, encrypted: not "no IKE exchange seen".
        assert all("the 2 Quick Mode exchanges between these peers, frames 8, 9, are encrypted" in c.inferred_reason
                   for c in by_spi.values())


def test_one_finding_for_the_sa_whose_reverse_is_unused(reordered):
    """::4 sends on two SAs and ::2 on one: one of ::4's SAs has no return SA in use, which one is
    not known without the Quick Modes' contents. One ESP-ONE-WAY in both orders (it was one in the
    original order, naming 0x8905e940 alone, and three in the other, one of them for 0x3d71315a,
    which is answered whichever SA its pair is)."""
    for cap in (ARKIME_V1, reordered):
        (f,) = _one_way(cap)
        assert f["title"].startswith("One-way ESP: 1 of 2003:51:6012::4's 2 SAs to 2003:51:6012::2 has nothing back")
        assert all(f"0x{spi:08x}" in f["explanation"] for spi in SPIS)
        assert "which one is not known" in f["explanation"]


def test_a_frames_child_sa_is_its_flows(tmp_path):
    """The pairing of 0x3d71315a with 0xe8f1f49c is undone at frame 17; frame 15 (0xe8f1f49c's
    first) was read while they were paired, and names the CHILD SA its flow is on now, as every
    ESP row does (`packets --json` and the ipsecscope.child filter read the rows)."""
    s = Session()
    s.load(ARKIME_V1)
    flows = s.table.flows
    rows = [r for r in s.rows if r.kind == "ESP"]
    assert len(rows) == 296
    assert all(r.child_sa == flows[(r.src, r.dst, r.spi, "ESP")].child_sa for r in rows)
    r = subprocess.run([*IPSECSCOPE, "packets", str(ARKIME_V1), "--json", "-Y", "esp.spi == 0xe8f1f49c"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT, check=True)
    child = {json.loads(ln)["child_sa"] for ln in r.stdout.splitlines()}
    assert child == {flows[("2003:51:6012::4", "2003:51:6012::2", 0xE8F1F49C, "ESP")].child_sa}
