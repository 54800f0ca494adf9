"""Findings that use the peers' own charon logs (-k charon-*.log) as evidence: what the responder is
configured with, side by side with what the capture shows was offered.

Real data: the strongSwan samples, each with both peers' logs. With only the initiator's log the
findings must stay exactly as without logs (no claim about the responder is invented).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import SAMPLES

from ipsecscope.session import Session


def cli_findings(sample: str, *logs: str) -> list[dict]:
    keys = [str(SAMPLES / sample / log) for log in logs]
    r = subprocess.run([sys.executable, "-m", "ipsecscope", "findings", str(SAMPLES / sample / "capture.pcapng"),
                        *(["-k", *keys] if keys else []), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)["findings"]


def one(findings: list[dict], code: str) -> dict:
    (f,) = [f for f in findings if f["code"] == code]
    return f


BOTH = ("charon-left.log", "charon-right.log")


def test_esp_proposal_mismatch_says_what_the_responder_wants():
    f = one(cli_findings("proposal-mismatch", *BOTH), "IKE-NO-PROPOSAL")
    assert "198.18.0.1 offered aes128-sha1" in f["explanation"]
    assert "198.18.0.2 is configured with aes256gcm16" in f["explanation"]
    assert "charon-right.log:177" in f["explanation"]
    assert f["hint"].startswith("Add aes256gcm16 to esp_proposals on 198.18.0.1, or aes128-sha1 to 198.18.0.2's")
    assert f["sa"] == "child:1" and f["frames"] == [3, 4]
    kinds = [(e["kind"], e["local"], e["source"].rsplit("/", 1)[-1]) for e in f["evidence_log"]]
    assert kinds == [("received_proposals", "198.18.0.2", "charon-right.log:176"),
                     ("configured_proposals", "198.18.0.2", "charon-right.log:177")]
    assert f["evidence_log"][1]["data"]["swan"] == ["aes256gcm16"]


def test_ike_proposal_mismatch_says_what_the_responder_wants():
    # neither log holds keys (no IKE SA got that far): both load for their evidence alone
    f = one(cli_findings("ike-proposal-mismatch", *BOTH), "IKE-NO-PROPOSAL")
    assert f["title"].startswith("IKE SA: no proposal chosen")
    assert "198.18.0.1 offered aes128-sha1-modp2048" in f["explanation"]
    assert "198.18.0.2 is configured with aes256gcm16-prfsha256-ecp256" in f["explanation"]
    assert "add aes256gcm16-prfsha256-ecp256 to proposals on 198.18.0.1".lower() in f["hint"].lower()
    assert {e["kind"] for e in f["evidence_log"]} == {"received_proposals", "configured_proposals"}


@pytest.mark.parametrize("sample,key_log", [("proposal-mismatch", "charon-left.log"),
                                            ("ike-proposal-mismatch", None)])
def test_initiator_log_alone_changes_nothing(sample, key_log):
    """The initiator's log says nothing about the responder's configuration: the finding is the
    one we get from the capture (and the keys) alone."""
    with_left = one(cli_findings(sample, "charon-left.log"), "IKE-NO-PROPOSAL")
    without = one(cli_findings(sample, *([key_log] if key_log else [])), "IKE-NO-PROPOSAL")
    assert with_left == without
    assert with_left["evidence_log"] == [] and "configured with" not in with_left["explanation"]
    assert "aes256gcm16" not in with_left["explanation"] + with_left["hint"]


def test_ts_mismatch_quotes_the_responder():
    f = one(cli_findings("ts-mismatch", *BOTH), "IKE-TS-UNACCEPTABLE")
    assert '198.18.0.2\'s log (charon-right.log:176: "traffic selectors 10.9.0.0/24 === 10.1.0.0/24 unacceptable")' \
        in f["explanation"]
    assert "local_ts covers 10.9.0.0/24" in f["explanation"] and "remote_ts (10.9.0.0/24)" in f["hint"]
    assert [e["kind"] for e in f["evidence_log"]] == ["ts_config"]


def test_psk_mismatch_says_the_psks_differ():
    f = one(cli_findings("psk-mismatch", *BOTH), "IKE-AUTH-FAILED")
    assert "but MAC mismatched" in f["explanation"] and "PSKs differ" in f["explanation"]
    assert "Set the same pre-shared key for 'right.ipsecscope.test' - 'left.ipsecscope.test'" in f["hint"]
    assert f["evidence_log"][0]["data"]["reason"] == "psk_mismatch"
    # without the responder's log the hint stays generic
    f = one(cli_findings("psk-mismatch", "charon-left.log"), "IKE-AUTH-FAILED")
    assert f["evidence_log"] == [] and "MAC mismatched" not in f["explanation"]


def test_dh_retry_quotes_the_configured_group():
    f = one(cli_findings("dh-retry", *BOTH), "IKE-INVALID-KE")
    assert "DH group ECP_256 unacceptable, requesting MODP_2048" in f["explanation"]
    assert f["evidence_log"][0]["data"]["configured"] == "MODP_2048"


def test_a_log_of_another_capture_is_not_attributed():
    """Same addresses, other IKE SA (other SPIs): the responder log of one scenario must not
    explain the failure in another."""
    s = Session()
    s.add_key_files([SAMPLES / "proposal-mismatch" / "charon-left.log",
                     SAMPLES / "ike-proposal-mismatch" / "charon-right.log"])
    s.load(SAMPLES / "proposal-mismatch" / "capture.pcapng")
    (f,) = [f for f in s.findings if f.code == "IKE-NO-PROPOSAL"]
    assert f.evidence == () and "configured with" not in f.explanation


def test_ts_mismatch_with_the_responders_configured_selectors():
    """cfg 2 logs (tests/data/peerlog/ts-mismatch-cfg2): the finding names the responder's
    configured local_ts/remote_ts and the one setting that differs."""
    d = SAMPLES.parent / "tests" / "data" / "peerlog" / "ts-mismatch-cfg2"
    r = subprocess.run([sys.executable, "-m", "ipsecscope", "findings", str(d / "capture.pcapng"), "-k",
                        str(d / "charon-left.log"), str(d / "charon-right.log"), "--json"],
                       capture_output=True, text=True, timeout=120)
    f = one(json.loads(r.stdout)["findings"], "IKE-TS-UNACCEPTABLE")
    assert "it is configured with local_ts 10.2.0.0/24, remote_ts 10.1.0.0/24 (connection ts, child net" \
        in f["explanation"]
    assert f["hint"] == ("Set remote_ts = 10.2.0.0/24 on 198.18.0.1 (it asks for 10.9.0.0/24) or add 10.9.0.0/24 "
                         "to local_ts on 198.18.0.2.")
    assert "conn_config" in [e["kind"] for e in f["evidence_log"]]


def test_ikev1_main_mode_proposal_mismatch_uses_the_responders_log():
    d = SAMPLES.parent / "tests" / "data" / "findings" / "ikev1-proposal-mismatch"
    s = Session()
    s.add_key_files([d / "charon-left.log", d / "charon-right.log"])
    s.load(d / "capture.pcapng")
    (f,) = [f for f in s.findings if f.code == "IKE-NO-PROPOSAL"]
    assert "198.18.0.1 offered aes128-sha1-modp2048; 198.18.0.2 is configured with aes256-sha256-modp2048" \
        in f.explanation
    assert [n.kind for n in f.evidence] == ["received_proposals", "configured_proposals"]
