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

from conftest import DATA, SAMPLES, needs_tshark, public
from conftest import field_cli as cli

HERE = DATA / "ike-answers"

ARKIME_V2 = public("arkime/IKEv2.pcap")  # third-party: materialised at test time (tests/public_data.py)


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
    r = findings(ARKIME_V2)["IKE-RETRANSMIT"]
    assert "answered only after the request was sent again" in r["explanation"] and "answers" not in r["title"]


TRUNCATED = public("tcpdump/esp_truncated.pcap")  # third-party: materialised at test time (tests/public_data.py)


def test_a_snap_length_cut_keeps_the_snaplen_hint() -> None:
    """tcpdump's esp_truncated.pcap: ESP cut by the capture's snap length."""
    assert "snaplen" in findings(TRUNCATED)["CAPTURE-MALFORMED"]["hint"]


SV_BYPASS = public("suricata-verify/detect-bypass-udp/input.pcap")


@needs_tshark
def test_ike_messages_captured_twice_are_no_retransmissions() -> None:
    """suricata-verify's detect-bypass-udp capture (MIT; a user's capture): IKEv2 from message ID 1
    on UDP 4500, three IKE_INTERMEDIATE exchanges (RFC 9242) and IKE_AUTH in IKE fragments (RFC
    7383), every frame twice 2-30 µs apart with the same IP ID and checksum. ipsecscope reported
    "15 IKE retransmissions ... packets were lost" (WARNING). No implementation retransmits within
    microseconds (RFC 7296 §2.1): the capture saw each packet twice. tshark dissects every frame as
    ISAKMP; ipsecscope has the same 66 IKE rows, 33 of them copies counted apart."""
    out = subprocess.run(["tshark", "-n", "-r", str(SV_BYPASS), "-T", "fields", "-e", "frame.number", "-e",
                          "isakmp.messageid", "-e", "isakmp.exchangetype", "-e", "ip.id"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    ts = [line.split("\t") for line in out.splitlines()]
    assert len(ts) == 66 and all(ts[i][1:] == ts[i + 1][1:] for i in range(0, 66, 2))  # pairs, same IP ID
    rows = [json.loads(line) for line in cli("packets", str(SV_BYPASS), "--json").splitlines()]
    assert [(r["kind"], r["seq"]) for r in rows] == [("IKE", int(t[1], 16)) for t in ts]
    f = findings(SV_BYPASS)
    assert "IKE-RETRANSMIT" not in f
    d = f["CAPTURE-DUPLICATES"]
    assert d["severity"] == "info" and d["title"].startswith("33 IKE messages captured twice")
    (sa,) = json.loads(cli("sas", str(SV_BYPASS), "--json"))["ike_sas"]
    assert [(x["exchange"], x["retransmits"]) for x in sa["exchanges"]] == [
        ("IKE_INTERMEDIATE", 0), ("IKE_INTERMEDIATE", 0), ("IKE_INTERMEDIATE", 0), ("IKE_AUTH", 0)]


def test_a_sample_captured_twice_is_its_findings_plus_the_duplicates() -> None:
    """healthy-gcm with every frame twice (9 µs apart): no IKE retransmission and no ESP replay
    (each ESP copy repeats its flow's previous packet at once: state/esp_flow); CAPTURE-DUPLICATES
    counts both (ESP-REPLAY, 6 findings, until the ESP copies were told apart)."""
    f = findings(HERE / "captured-twice.pcap")
    assert "IKE-RETRANSMIT" not in f and "ESP-REPLAY" not in f
    d = f["CAPTURE-DUPLICATES"]
    assert d["title"] == "16 IKE messages and 18 ESP packets captured twice (the same bytes within 20 ms)"
    assert set(f) - {"CAPTURE-DUPLICATES"} == set(findings(SAMPLES / "healthy-gcm" / "capture.pcapng"))
