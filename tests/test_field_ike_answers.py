"""IKE requests sent again although the capture holds an answer before the copy
(tests/data/ike-answers, made from samples/healthy-gcm by make.py there).

The class came from a public capture, vpandian/sgw ``capture.pcap`` (commit ebdcb88, no licence:
not committed): strongSwan sends IKE_SA_INIT to a home-made ePDG, which answers at once with a
message whose Notify payload claims 656 octets in a 60-octet message; strongSwan drops it and
sends the request again after 4 s, gets the same broken answer. tshark marks both answers
malformed. ipsecscope said "1 exchange was answered only after the request was sent again:
packets were lost or the peer was slow to answer", hint "look for loss or MTU problems", and its
CAPTURE-MALFORMED hint blamed the snap length of frames captured whole.

RFC 7296 §2.1: a requester sends a request again only while it has no answer it can use. An
answer captured before the copy was dropped by the requester (malformed: the responder's fault,
not the path's) or did not get back past the capture point (the path between here and the
requester). Only an answer after the copy is the "lost or slow" case (Arkime's IKEv2.pcap).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import DATA, SAMPLES, needs_tshark
from conftest import field_cli as cli

HERE = DATA / "ike-answers"


def findings(cap: Path) -> dict[str, dict]:
    return {f["code"]: f for f in json.loads(cli("findings", str(cap), "--json"))["findings"]}


@needs_tshark
def test_malformed_answers_are_tsharks_and_the_finding_blames_the_responder() -> None:
    cap = HERE / "malformed-answer.pcap"
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-T", "fields", "-e", "frame.number", "-e", "_ws.malformed"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    theirs = [int(c[0]) for c in (line.split("\t") for line in out.splitlines()) if c[1]]
    rows = [json.loads(line) for line in cli("packets", str(cap), "--json").splitlines()]
    assert [r["frame"] for r in rows if r["status"] == "malformed"] == theirs == [2, 4, 6]
    f = findings(cap)
    r = f["IKE-RETRANSMIT"]
    assert r["severity"] == "warning" and "198.18.0.2's answers are malformed" in r["title"]
    assert "(frame 2) before 198.18.0.1 sent it again (frame 3)" in r["explanation"]
    assert "length 656 exceeds message" in r["explanation"] and "every time" in r["explanation"]
    assert "loss" not in r["hint"] and r["frames"] == [1, 2, 3]
    assert "captured whole" in f["CAPTURE-MALFORMED"]["hint"]
    assert not {"IKE-NO-RESPONSE", "IKE-DEAD-PEER"} & set(f)


def test_an_answer_lost_after_the_capture_point_is_not_a_slow_peer() -> None:
    assert "IKE-RETRANSMIT" not in findings(SAMPLES / "healthy-gcm" / "capture.pcapng")
    r = findings(HERE / "answer-lost.pcap")["IKE-RETRANSMIT"]
    assert r["severity"] == "info" and "198.18.0.2's answers do not reach 198.18.0.1" in r["title"]
    assert "(frame 2) before 198.18.0.1 sent it again (frame 3, 4.0 s later)" in r["explanation"]
    assert "timer" not in r["explanation"] and r["frames"] == [1, 2, 3]


def test_an_answer_after_the_copy_is_still_loss_or_a_slow_peer() -> None:
    """Arkime's IKEv2.pcap: an IKE_SA_INIT sent again 32 s later, answered after the copy."""
    r = findings(DATA / "arkime" / "IKEv2.pcap")["IKE-RETRANSMIT"]
    assert "answered only after the request was sent again" in r["explanation"] and "answers" not in r["title"]


def test_a_snap_length_cut_keeps_the_snaplen_hint() -> None:
    """tcpdump's esp_truncated.pcap: ESP cut by the capture's snap length."""
    assert "snaplen" in findings(DATA / "tcpdump" / "esp_truncated.pcap")["CAPTURE-MALFORMED"]["hint"]
