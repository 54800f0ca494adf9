"""IKEv1 messages the capture holds twice are no retransmissions (tests/data/ikev1-copies, made
from samples/ikev1-dead-peer by make.py there).

A capture point that sees each packet twice repeats every IKEv1 message a few microseconds apart.
IKEv1 counted each copy as a retransmission (IKE-RETRANSMIT "packets were lost or the peer was
slow"), and each DPD R-U-THERE or Informational copy as an unanswered second try (IKE-DEAD-PEER
for every one of them). A retransmission is the sender's: the same message again after its timer
(seconds: strongSwan 4 s, libreswan 0.5 s); a byte-identical copy within 20 ms is the capture's
own, told apart as IKEv2 does (state/copies.ike_capture_copy, shared by both versions).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest
from conftest import DATA, SAMPLES, ike_messages, needs_tshark
from conftest import field_cli as cli

from ipsecscope.analysis.rules import evaluate
from ipsecscope.state.tracker import Tracker

CAP = DATA / "ikev1-copies" / "captured-twice.pcap"
SAMPLE = SAMPLES / "ikev1-dead-peer"
KEYS = SAMPLE / "keys"


def _findings(*args: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in json.loads(cli("findings", *args, "--json"))["findings"]:
        out.setdefault(f["code"], []).append(f)
    return out


@needs_tshark
def test_tshark_sees_every_frame_twice() -> None:
    out = subprocess.run(["tshark", "-n", "-r", str(CAP), "-T", "fields", "-e", "frame.number", "-e", "frame.len",
                          "-e", "isakmp.ispi", "-e", "isakmp.messageid", "-e", "esp.sequence"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [ln.split("\t")[1:] for ln in out.splitlines()]
    assert len(rows) == 62 and all(rows[i] == rows[i + 1] for i in range(0, 62, 2))
    assert sum(1 for r in rows[::2] if r[1]) == 16  # IKEv1 messages, each captured twice


@pytest.mark.parametrize("keys", [False, True])
def test_copies_are_not_retransmissions(keys: bool) -> None:
    extra = ("-k", str(KEYS)) if keys else ()
    mine = _findings(str(CAP), *extra)
    sample = _findings(str(SAMPLE / "capture.pcapng"), *extra)
    # The sample's own findings (no retransmission, the one dead peer of its truth.json), plus the copies
    assert sorted(mine) == sorted([*sample, "CAPTURE-DUPLICATES"])
    assert "IKE-RETRANSMIT" not in mine
    (d,) = mine["CAPTURE-DUPLICATES"]
    assert d["title"] == "16 IKE messages and 15 ESP packets captured twice (the same bytes within 20 ms)"
    assert d["frames"][:6] == [2, 4, 6, 8, 10, 12]
    if keys:  # R-U-THERE sent 3 times (frames 53, 57, 61), not 6
        assert [f["title"] for f in mine["IKE-DEAD-PEER"]] == [f["title"] for f in sample["IKE-DEAD-PEER"]]
        assert "R-U-THERE sent 3×" in mine["IKE-DEAD-PEER"][0]["title"]
    sas = json.loads(cli("sas", str(CAP), *extra, "--json"))
    (sa,) = sas["ike_sas"]
    assert [(x["exchange"], x["request_frames"], x["retransmits"]) for x in sa["exchanges"][:2]] == [
        ("Main Mode", [1, 5, 9], 0), ("Quick Mode", [13, 17], 0)]  # QM1 and QM3, once each


def _run(msgs) -> Tracker:
    tr = Tracker()
    for m in msgs:
        tr.on_ike(m)
    tr.finish()
    return tr


def _quick(tr: Tracker):
    (sa,) = tr.table.ike_sas.values()
    return next(x for x in sa.exchanges if x.exchange == 32)


def test_qm3_twice_within_ms_is_a_copy_seconds_apart_a_retransmission() -> None:
    """The sample's QM3 (HASH(3), the initiator's last Quick Mode message) again: 5 ms later the
    capture's copy, 2 s later the initiator re-sending it (its timer), and that retransmission's
    own copy 5 ms after it."""
    msgs = ike_messages(SAMPLE / "capture.pcapng")
    qm = [m for m in msgs if m.header.exchange == 32]
    qm3 = qm[2]
    i = msgs.index(qm3)

    def again(dt: float, frame: int):
        return dataclasses.replace(qm3, frame=frame, ts=qm3.ts + dt)

    base = _quick(_run(msgs))
    assert (base.retransmits, base.capture_duplicates) == (0, 0)
    copy = _quick(_run([*msgs[:i + 1], again(0.005, 10**6), *msgs[i + 1:]]))
    assert (copy.retransmits, copy.capture_duplicates, copy.duplicate_frames) == (0, 1, [10**6])
    assert copy.request_frames == base.request_frames
    resent = _run([*msgs[:i + 1], again(2.0, 10**6), again(2.005, 10**6 + 1), *msgs[i + 1:]])
    x = _quick(resent)
    assert (x.retransmits, x.capture_duplicates, x.duplicate_frames) == (1, 1, [10**6 + 1])
    assert 10**6 in x.request_frames and 10**6 + 1 not in x.request_frames
    assert "IKE-RETRANSMIT" in [f.code for f in evaluate(resent.table)]


def test_mm1_copy_queued_behind_the_answer_is_a_copy() -> None:
    """A mirror port may queue a copy behind the next message: MM1's copy 3 ms later, after MM2
    (1.1 ms after MM1), is the capture's; the same MM1 0.5 s later is the initiator re-sending it
    (tests/test_state_retransmit.py)."""
    msgs = ike_messages(SAMPLE / "capture.pcapng")
    mm1, mm2 = msgs[0], msgs[1]
    assert mm2.src == mm1.dst and mm2.ts - mm1.ts < 0.002
    copy = dataclasses.replace(mm1, frame=10**6, ts=mm1.ts + 0.003)
    tr = _run([mm1, mm2, copy, *msgs[2:]])
    (sa,) = tr.table.ike_sas.values()
    x = sa.exchanges[0]
    assert (x.retransmits, x.capture_duplicates, x.duplicate_frames) == (0, 1, [10**6])
    assert sorted(f.code for f in evaluate(tr.table)) == sorted(
        [*(f.code for f in evaluate(_run(msgs).table)), "CAPTURE-DUPLICATES"])
