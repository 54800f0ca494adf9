"""Diagnosis findings on real captures, the CLI contracts (exit codes, JSON schemas) and golden
outputs of ``sas --json`` / ``findings --json`` for every strongSwan sample.

Regenerate the stored outputs after an intended change with::

    IPSECSCOPE_REGEN_GOLDEN=1 python3 -m pytest tests/test_findings.py -k golden

and review the diff before committing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CORPUS, ROOT, SAMPLES

from ipsecscope.analysis.rules import REGISTRY, evaluate
from ipsecscope.model.sa import Severity
from ipsecscope.session import Session

GOLDEN = ROOT / "tests" / "golden"
SAMPLE_NAMES = ["healthy-gcm", "cbc-sha2-pfs", "proposal-mismatch", "ike-proposal-mismatch", "ts-mismatch",
                "psk-mismatch", "dh-retry", "dead-peer"]


def sample_keys(name: str) -> list[Path]:
    keys = SAMPLES / name / "keys"
    return [p for p in sorted(keys.iterdir())
            if any(ln.strip() and not ln.startswith("#") for ln in p.read_text().splitlines())]


def findings(name: str, keys: bool) -> list:
    s = Session()
    if keys:
        s.add_key_files(sample_keys(name))
    s.load(SAMPLES / name / "capture.pcapng")
    return s.findings


def codes(fs, floor=Severity.INFO) -> set[str]:
    return {f.code for f in fs if f.severity >= floor}


# What each scenario must produce (warnings/errors), with and without the IKE keys.
EXPECTED = {
    ("healthy-gcm", True): set(), ("healthy-gcm", False): set(),
    ("cbc-sha2-pfs", True): set(), ("cbc-sha2-pfs", False): set(),
    ("proposal-mismatch", True): {"IKE-NO-PROPOSAL"},
    ("proposal-mismatch", False): {"IKE-CHILD-LIKELY-REFUSED"},
    ("ts-mismatch", True): {"IKE-TS-UNACCEPTABLE"},
    ("ts-mismatch", False): {"IKE-CHILD-LIKELY-REFUSED"},
    ("psk-mismatch", True): {"IKE-AUTH-FAILED"}, ("psk-mismatch", False): {"IKE-AUTH-FAILED"},
    ("dh-retry", True): {"IKE-INVALID-KE"}, ("dh-retry", False): {"IKE-INVALID-KE"},
    ("dead-peer", True): {"IKE-DEAD-PEER", "ESP-RETURN-STOPPED"},
    ("dead-peer", False): {"IKE-DEAD-PEER", "ESP-RETURN-STOPPED"},
    ("ike-proposal-mismatch", True): {"IKE-NO-PROPOSAL"}, ("ike-proposal-mismatch", False): {"IKE-NO-PROPOSAL"},
    # IKEv1 DPD is inside encrypted Informationals: without the phase-1 key only the ESP side shows
    ("ikev1-dead-peer", True): {"IKE-DEAD-PEER", "ESP-RETURN-STOPPED"},
    ("ikev1-dead-peer", False): {"ESP-RETURN-STOPPED"},
}


@pytest.mark.parametrize("name,keys", sorted(EXPECTED), ids=lambda v: str(v))
def test_scenario_codes(name, keys):
    fs = findings(name, keys)
    assert codes(fs, Severity.WARNING) == EXPECTED[(name, keys)]
    for f in fs:  # every finding names both peers (when it is about a peer pair) and has evidence
        assert f.title and f.explanation and f.hint
        if f.code.startswith("IKE-"):
            assert "198.18.0.1" in f.explanation + f.title and "198.18.0.2" in f.explanation + f.title
            assert f.frames


def test_proposal_mismatch_side_by_side():
    (f,) = [f for f in findings("proposal-mismatch", True) if f.code == "IKE-NO-PROPOSAL"]
    assert f.severity == Severity.ERROR and f.sa == "child:1" and f.frames == (3, 4)
    assert "198.18.0.1 offered aes128-sha1" in f.explanation and "198.18.0.2" in f.title


def test_ike_proposal_mismatch_in_clear():
    (f,) = [f for f in findings("ike-proposal-mismatch", False) if f.code == "IKE-NO-PROPOSAL"]
    assert f.title.startswith("IKE SA:") and "aes128-sha1-modp2048" in f.explanation
    assert "proposals (swanctl.conf connection)" in f.hint


def test_dead_peer_return_traffic_stopped_after_frame_10():
    (f,) = [f for f in findings("dead-peer", False) if f.code == "ESP-RETURN-STOPPED"]
    assert f.frames[0] == 10 and f.sa == "esp:198.18.0.1>198.18.0.2:0x9b458aa1"


def test_dh_retry_names_group_and_success():
    (f,) = [f for f in findings("dh-retry", False) if f.code == "IKE-INVALID-KE"]
    assert f.severity == Severity.WARNING and "MODP_2048" in f.title and "retry succeeded" in f.title


def test_ts_unacceptable_shows_both_selector_sets():
    (f,) = [f for f in findings("ts-mismatch", True) if f.code == "IKE-TS-UNACCEPTABLE"]
    assert "10.1.0.0-10.1.0.255" in f.explanation and "10.9.0.0-10.9.0.255" in f.explanation


def test_dead_peer_evidence_is_the_retransmissions():
    (f,) = [f for f in findings("dead-peer", True) if f.code == "IKE-DEAD-PEER"]
    assert f.frames == (12, 14, 16, 17) and "4×" in f.title


def test_ikev1_dead_peer_is_the_unacknowledged_r_u_theres():
    """IKEv1 DPD (RFC 3706): every R-U-THERE is its own Informational, answered (or not) by a
    separate R-U-THERE-ACK. Oracles: tshark decrypting with the sample's ikev1_decryption_table
    (which notifies are in which frame) and the initiator's charon log (how many it sent after the
    peer's last ACK before "DPD check timed out")."""
    import re

    d = SAMPLES / "ikev1-dead-peer"
    env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(d / "keys"))
    out = subprocess.run(["tshark", "-r", str(d / "capture.pcapng"), "-Y", "isakmp.notify.msgtype == 36136 || isakmp.notify.msgtype == 36137",
                          "-T", "fields", "-e", "frame.number", "-e", "ip.src", "-e", "isakmp.notify.msgtype"],
                         capture_output=True, text=True, env=env, check=True).stdout
    dpd = [(int(f), src, int(t)) for f, src, t in (ln.split("\t") for ln in out.splitlines())]
    last_ack = max(f for f, src, t in dpd if t == 36137 and src == "198.18.0.2")
    unanswered = tuple(f for f, src, t in dpd if t == 36136 and src == "198.18.0.1" and f > last_ack)
    log = (d / "charon-left.log").read_text().splitlines()
    after = log[max(i for i, ln in enumerate(log) if "parsed INFORMATIONAL_V1 request" in ln and "N(DPD_ACK)" in ln):]
    sent = [ln for ln in after if re.search(r"generating INFORMATIONAL_V1 request \d+ \[ HASH N\(DPD\) \]", ln)]
    assert any("DPD check timed out" in ln for ln in after) and len(sent) == len(unanswered) >= 2

    fs = findings("ikev1-dead-peer", True)
    (f,) = [f for f in fs if f.code == "IKE-DEAD-PEER"]
    assert f.frames == unanswered and f"R-U-THERE sent {len(unanswered)}×" in f.title
    assert f.title.startswith("Dead peer: 198.18.0.2 stopped answering 198.18.0.1's DPD")
    # the DPDs both peers answered while the tunnel was up are paired with their ACKs, not findings
    s = Session()
    s.add_key_files(sample_keys("ikev1-dead-peer"))
    s.load(d / "capture.pcapng")
    (sa,) = s.table.ike_sas.values()
    paired = {x.request_frames[0]: x.response_frames for x in sa.exchanges if x.dpd_seq is not None}
    acks = [f for f, _, t in dpd if t == 36137]
    answered = [f for f, _, t in dpd if t == 36136 and f < last_ack]
    assert sorted(r for f in answered for r in paired[f]) == acks
    assert all(not paired[f] for f in unanswered)


def test_weak_algorithms_in_ikev1_corpus():
    s = Session()
    s.add_key_files([CORPUS / "ikev1_decryption_table.tmpl"])
    s.load(CORPUS / "ikev1-certs.pcap")
    weak = [f for f in s.findings if f.code == "IKE-WEAK-ALGO"]
    assert any("3DES" in f.title and "MD5" in f.title and "MODP ≤ 1024" in f.title for f in weak)


def test_icv_failures_corruption_vs_wrong_key(tmp_path):
    syn = SAMPLES / "synthetic"
    s = Session()
    s.add_key_files([syn / "ipv6-transport-natt.esp_sa"])
    s.load(syn / "ipv6-transport-natt.pcap")
    icv = [f for f in s.findings if f.code == "ESP-ICV-FAILED"]
    assert icv and all(f.severity == Severity.WARNING and "corruption" in f.title for f in icv)
    # Wrong key: the real esp_sa of healthy-gcm with one key digit changed per row.
    rows = (SAMPLES / "healthy-gcm" / "keys" / "esp_sa").read_text().splitlines()
    bad = []
    for ln in rows:
        i = ln.find('"0x', ln.find('"0x') + 1)  # the key follows the SPI: flip its first digit
        bad.append(ln if i < 0 else ln[:i + 3] + ("0" if ln[i + 3] != "0" else "1") + ln[i + 4:])
    (tmp_path / "esp_sa").write_text("\n".join(bad) + "\n")
    wrong = Session()
    wrong.add_key_files([tmp_path / "esp_sa"])
    wrong.load(SAMPLES / "healthy-gcm" / "capture.pcapng")
    icv = [f for f in wrong.findings if f.code == "ESP-ICV-FAILED"]
    assert len(icv) == 4 and all(f.severity == Severity.ERROR and "wrong key" in f.title for f in icv)


def test_rule_codes_are_unique_and_numbered():
    numbers = [r.number for r in REGISTRY]
    assert len(numbers) == len(set(numbers))
    all_codes = [c for r in REGISTRY for c in r.codes]
    assert len(all_codes) == len(set(all_codes))
    for c in all_codes:
        assert c == c.upper() and " " not in c


def test_evaluate_accepts_a_bare_table():
    s = Session()
    s.load(SAMPLES / "dead-peer" / "capture.pcapng")
    assert codes(evaluate(s.table), Severity.ERROR) == {"IKE-DEAD-PEER"}


# ---------------------------------------------------------------------------------- CLI


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from ipsecscope.cli import main; sys.exit(main())",
                           *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={**os.environ, "IPSECSCOPE_NO_PLUGINS": "1",
                                                       "COLUMNS": "200"})


def test_findings_exit_codes():
    assert cli("findings", "samples/healthy-gcm/capture.pcapng").returncode == 0
    r = cli("findings", "samples/dead-peer/capture.pcapng")
    assert r.returncode == 1 and "IKE-DEAD-PEER" in r.stdout
    bad = cli("findings", "tests/conftest.py")
    assert bad.returncode == 2 and "not a pcap" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli("findings", "samples/healthy-gcm/capture.pcapng", "-k", "/nonexistent/keys")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_damaged_capture_is_analysed_up_to_the_damage():
    bad = ROOT / "tests" / "data" / "bad" / "pcapng-bad-block-length.pcapng"
    if not bad.exists():
        pytest.skip("tests/data/bad not generated")
    r = cli("findings", str(bad), "--json")
    assert r.returncode == 2 and "damaged" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(r.stdout)["schema"] == "ipsecscope.findings/1"
    r = cli("sas", str(bad))
    assert r.returncode == 2 and "IKEv2 SA" in r.stdout


def test_sas_text_output():
    r = cli("sas", "samples/healthy-gcm/capture.pcapng", "-k", "samples/healthy-gcm/keys/ikev2_decryption_table",
            "-k", "samples/healthy-gcm/keys/esp_sa")
    assert r.returncode == 0
    out = r.stdout
    for s in ("IKEv2 SA b1b8da23a004d038_fdaf22f6f7559b04", "CHILD_SA #1", "CHILD_SA #2",
              "rekeyed into CHILD_SA #2", "aes256gcm16-ecp256", "TS 10.1.0.0/24 === 10.2.0.0/24", "3 decrypted"):
        assert s in out, s


def test_list_rules():
    r = cli("findings", "--list-rules", "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and any("IKE-NO-PROPOSAL" in x["codes"] for x in doc["rules"])


# ---------------------------------------------------------------------------------- golden outputs


def _golden(name: str, kind: str, doc: dict) -> None:
    path = GOLDEN / f"{name}.{kind}.json"
    text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("IPSECSCOPE_REGEN_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"{path} missing: run with IPSECSCOPE_REGEN_GOLDEN=1"
    assert json.loads(text) == json.loads(path.read_text()), f"{kind} output of {name} changed"


def _args(name: str, keys: bool) -> list[str]:
    args = [f"samples/{name}/capture.pcapng"]
    if keys:
        for k in sample_keys(name):
            args += ["-k", str(k.relative_to(ROOT))]
    return args


@pytest.mark.parametrize("name", SAMPLE_NAMES)
@pytest.mark.parametrize("keys", [True, False], ids=["keys", "nokeys"])
def test_golden_sas_and_findings(name, keys):
    tag = f"{name}{'' if keys else '-nokeys'}"
    r = cli("sas", *_args(name, keys), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "ipsecscope.sas/1"
    _golden(tag, "sas", doc)
    r = cli("findings", *_args(name, keys), "--json")
    doc = json.loads(r.stdout)
    assert doc["schema"] == "ipsecscope.findings/1"
    assert r.returncode == (1 if doc["counts"]["error"] + doc["counts"]["warning"] else 0)
    for f in doc["findings"]:
        assert set(f) >= {"code", "severity", "title", "explanation", "frames", "sa", "hint"}
    _golden(tag, "findings", doc)


def test_golden_ikev1_merge():
    r = cli("sas", str((CORPUS / "ikev1-bug-12610.pcapng.gz").relative_to(ROOT)),
            str((CORPUS / "esp-bug-12671.pcapng.gz").relative_to(ROOT)),
            "-k", str((CORPUS / "ikev1_decryption_table.tmpl").relative_to(ROOT)),
            "-k", str((CORPUS / "esp_sa.tmpl").relative_to(ROOT)), "--json")
    assert r.returncode == 0, r.stderr
    _golden("ikev1-12610+esp-12671", "sas", json.loads(r.stdout))


def test_sas_text_shows_a_child_under_the_ike_sa_it_moved_to(capsys):
    """RFC 7296 §2.18: after an IKE rekey the CHILD SA belongs to the new IKE SA; the text tree
    says so under the old one and shows the CHILD SA in full under the new one."""
    from ipsecscope.cli import main

    main(["sas", str(SAMPLES / "healthy-gcm" / "capture.pcapng"), "-k", str(SAMPLES / "healthy-gcm" / "keys")])
    out = capsys.readouterr().out
    old, new = out.split("IKEv2 SA 3264aae345f03644_e03e6cfc0739cb77")
    assert "CHILD_SA #2 moved to IKE SA 3264aae345f03644_e03e6cfc0739cb77" in old
    assert "CHILD_SA #2 DELETED" in new and "CHILD_SA #2 DELETED" not in old
