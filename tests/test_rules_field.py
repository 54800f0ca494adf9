"""Finding classes from issue 11 (field diagnosis) and issue 14 (wording, counts), on real captures.

Each test names the class it proves; the evidence is a real capture (samples/, or strongSwan
peers in namespaces) and the assertions check what a user reads: side, SPI, counts, frames.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, SAMPLES, public

from ipsecscope.model.plural import plural
from ipsecscope.model.sa import Severity
from ipsecscope.session import Session

FINDINGS = ROOT / "tests" / "data" / "findings"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ipsecscope", *args], capture_output=True, text=True, cwd=ROOT)


def session(name: str, keys: bool = True) -> Session:
    s = Session()
    kdir = SAMPLES / name / "keys"
    if keys and kdir.is_dir():
        s.add_key_files(sorted(p for p in kdir.iterdir() if p.is_file() and p.stat().st_size))
    s.load(SAMPLES / name / "capture.pcapng")
    return s


def test_no_proposal_wording_says_common_to_both_peers():
    """Issue 14 #14: "No proposal is common to both peers", with and without the peers' logs."""
    d = SAMPLES / "proposal-mismatch"
    with_logs = cli("findings", str(d / "capture.pcapng"), "-k", str(d / "charon-left.log"),
                    str(d / "charon-right.log"))
    assert "No proposal is common to both peers." in with_logs.stdout.replace("\n", " ")
    fs = [f for f in session("ike-proposal-mismatch", keys=False).findings if f.code == "IKE-NO-PROPOSAL"]
    assert fs and all("No proposal is common to both peers." in f.explanation for f in fs)
    assert not any("configured on both" in f.explanation for f in fs)
    assert fs[0].severity == Severity.ERROR


def test_return_stopped_count_grows_in_live_events():
    """Issue 14 #6: while packets keep going unanswered, ESP-RETURN-STOPPED's count grows, and a
    live reader gets a finding_updated event with the new count (not only the first one)."""
    from ipsecscope.capture import open_capture
    from ipsecscope.live import finding_events

    s = Session()
    seen: dict = {}
    events: list[dict] = []
    with open_capture(FINDINGS / "esp-one-way-ike-alive" / "capture.pcapng") as reader:
        for raw in reader:
            s.feed(raw)
            events += finding_events(seen, s.findings)
    stopped = [e for e in events if e["code"] == "ESP-RETURN-STOPPED"]
    assert stopped[0]["event"] == "finding" and all(e["event"] == "finding_updated" for e in stopped[1:])
    counts = [int(e["title"].split(" sent ")[1].split()[0]) for e in stopped]
    assert counts == sorted(counts) and counts[0] == 3 and counts[-1] == 12 and len(set(counts)) == 10
    final = next(f for f in s.findings if f.code == "ESP-RETURN-STOPPED")
    assert final.title == stopped[-1]["title"]
    assert finding_events(seen, s.findings) == []  # nothing new: nothing announced twice


def load(path, *keys) -> Session:
    s = Session()
    if keys:
        s.add_key_files(list(keys))
    s.load(path)
    return s


def test_one_way_esp_while_ike_is_alive_says_the_peer_is_up():
    """Issue 11 #4 (tests/data/findings/esp-one-way-ike-alive: nftables on the responder drops its
    outgoing ESP-in-UDP, IKE passes): the finding uses the DPD exchanges the silent peer keeps
    answering in the same IKE SA to rule out a dead peer or lost state, and since its ESP rides
    the same UDP ports as the IKE that passes, points at its outbound SA/policy or a payload filter."""
    d = FINDINGS / "esp-one-way-ike-alive"
    for s in (load(d / "capture.pcapng"), load(d / "capture.pcapng", d / "charon-left.log")):
        f = next(f for f in s.findings if f.code == "ESP-RETURN-STOPPED")
        assert f.title.endswith("sent 12 more packets with no reply, while 198.18.0.2 still answers IKE")
        assert "0x1d35fa27" in f.explanation and "neither went away nor lost its state" in f.explanation
        assert "answered 11 IKE requests from 198.18.0.1" in f.explanation
        assert "a port filter is not it" in f.explanation and "outbound SA or policy" in f.explanation
        assert "went away, lost its SA" not in f.explanation
        # evidence, in frame order: last ESP back (10), first unanswered (11), the answered DPDs (13 ...),
        # last unanswered (56)
        assert f.frames[:3] == (10, 11, 13) and 56 in f.frames and list(f.frames) == sorted(f.frames)
        assert not any(x.code in ("IKE-DEAD-PEER", "IKE-PEER-RESTARTED", "IKE-NO-RESPONSE") for x in s.findings)


def test_restarted_peer_is_not_a_dead_peer():
    """Issue 11 #5 (tests/data/findings/peer-restarted: the responder's charon killed and started
    again): stale SPIs, the window and the recovery; with its log, the daemon start and the
    "IKE_SA checkout not successful" lines for the old SA."""
    d = FINDINGS / "peer-restarted"
    bare = load(d / "capture.pcapng")
    assert "IKE-DEAD-PEER" not in {f.code for f in bare.findings}
    f = next(f for f in bare.findings if f.code == "IKE-PEER-RESTARTED")
    assert f.title.startswith("198.18.0.2 lost its state (most likely restarted): old SAs unanswered from")
    assert f.severity == Severity.ERROR
    assert f.sa == "6088c78b1a14ec01_cb6ae482ea36479a"
    assert "4 ESP packets to the stale SPI 0x5f1e3124" in f.explanation
    assert "4 transmissions" in f.explanation and "IKE_SA_INIT (frame 19)" in f.explanation
    assert "ESP resumed both ways on new SPIs (0xa9d1f0ea, 0x24ac025a, 6 packets)" in f.explanation
    assert f.frames[0] == 10 and 19 in f.frames and 20 in f.frames and 18 in f.frames
    stopped = next(x for x in bare.findings if x.code == "ESP-RETURN-STOPPED")
    assert "had lost its state" in stopped.explanation
    logged = load(d / "capture.pcapng", d / "charon-right.log")
    f = next(f for f in logged.findings if f.code == "IKE-PEER-RESTARTED")
    assert "(restarted)" in f.title and "charon-right.log:205" in f.explanation
    assert "charon-right.log:224" in f.explanation and "for 4 incoming messages" in f.explanation
    assert [n.kind for n in f.evidence][:2] == ["daemon_start", "unknown_sa"]


def test_dead_peer_stays_a_dead_peer():
    """The dead-peer sample (the responder vanishes for good) is not a restart."""
    fs = session("dead-peer", keys=False).findings
    assert "IKE-DEAD-PEER" in {f.code for f in fs} and "IKE-PEER-RESTARTED" not in {f.code for f in fs}


def test_child_likely_refused_needs_evidence_that_holds():
    """Issue 11 #12: with certificate authentication the IKE_AUTH response is often much smaller
    than the request although the CHILD SA was accepted (tests/data/findings/cert-auth-idle: RSA-3072
    initiator certificate, ECDSA responder one, tunnel up and idle, no ESP). Size says nothing
    there; a teardown right after IKE_AUTH, or the size without certificates, does."""
    s = load(FINDINGS / "cert-auth-idle" / "capture.pcapng")
    sa = next(iter(s.table.ike_sas.values()))
    auth = next(x for x in sa.exchanges if x.exchange == 35)
    assert sa.cert_requested and auth.request_size - auth.response_size >= 600  # what fooled the old rule
    assert "IKE-CHILD-LIKELY-REFUSED" not in {f.code for f in s.findings}
    assert not [f for f in s.findings if f.severity >= Severity.WARNING]
    for name in ("proposal-mismatch", "ts-mismatch"):  # PSK, refused, torn down at once: still found
        f = next(f for f in session(name, keys=False).findings if f.code == "IKE-CHILD-LIKELY-REFUSED")
        assert "deleted the IKE SA 0.3 s after IKE_AUTH (INFORMATIONAL, frame 5)" in f.explanation
        assert "with no certificates requested" in f.explanation and f.frames == (3, 4, 5)


DATA = ROOT / "tests" / "data"


WEAK_DH = public("suricata-verify/ikev2-weak-dh/IKEv2_SA_INIT_2-8-weak.pcap")  # third-party: materialised at test time (tests/public_data.py)


def test_weak_dh_group_offered_is_info():
    """Issue 11 #13: a weak group offered but never negotiated (suricata-verify ikev2-weak-dh: an
    IKE_SA_INIT offering MODP-1024, unanswered) is reported as info, naming the offer."""
    fs = load(WEAK_DH).findings
    f = next(f for f in fs if f.code == "IKE-WEAK-OFFERED")
    assert f.severity == Severity.INFO and "MODP ≤ 1024" in f.title and f.frames == (1,)
    assert "offered aes256-sha256-modp1024 to 212.158.157.8" in f.explanation
    assert "IKE-WEAK-ALGO" not in {x.code for x in fs}  # nothing was negotiated
    for name in ("healthy-gcm", "cbc-sha2-pfs"):
        assert "IKE-WEAK-OFFERED" not in {x.code for x in session(name).findings}


def test_summary_counts_malformed_ike_messages():
    """Issue 11 #13: summary --json counts.malformed includes IKE messages whose payloads do
    not parse (tests/data/bad/malformed.pcap frames 1-3: payload past the end, header length lies)."""
    import json

    doc = json.loads(cli("summary", "--json", str(DATA / "bad" / "malformed.pcap")).stdout)
    bad_ike = [r["frame"] for r in doc["ike"] if r["malformed"]]
    assert bad_ike == [1, 2, 3]
    assert {e["frame"] for e in doc["malformed"]["examples"] if e["layer"] == "ike"} >= set(bad_ike)
    # frame 14's IPv4 total length runs past the frame: its IKE message is read from the bytes
    # there, as tshark reads it ("IPv4 total length exceeds packet length"), beside a malformed ip row
    assert doc["counts"]["malformed"] == 13 and doc["counts"]["ike"] == 4


def _truth(name: str) -> dict:
    import json

    return json.loads((SAMPLES / name / "truth.json").read_text())["expected"]


def _codes_ok(fs, t: dict) -> None:
    codes = {f.code for f in fs}
    assert not codes & set(t.get("not_reported") or ()), codes
    worst = max((f.severity for f in fs), default=Severity.INFO)
    assert worst.name.lower() == t["max_severity"], [(f.code, f.severity) for f in fs]


def test_sample_esp_oneway_drop():
    """samples/esp-oneway-drop (field): ESP from the responder dropped on the path, DPD answered."""
    t = _truth("esp-oneway-drop")
    exp = t["findings"][0]
    for keys in (False, True):
        fs = session("esp-oneway-drop", keys=keys).findings
        _codes_ok(fs, t)
        f = next(f for f in fs if f.code in exp["codes"])
        assert f.severity.name.lower() == exp["severity"]
        assert f"sent {plural(exp['esp_after_stop'], 'more packet')} with no reply, while 198.18.0.2 still answers IKE" in f.title
        assert f"on SPI {exp['still_sending_spi']}" in f.explanation and f"SPI {exp['silent_spi']} stopped" in f.explanation
        answered = int(f.explanation.split(" it answered ")[1].split()[0])
        assert answered >= exp["dpd_requests_answered"]
        assert "outbound SA or policy" in f.explanation and "neither went away nor lost its state" in f.explanation


def test_sample_peer_restart():
    """samples/peer-restart (field): the responder's charon restarted; with its log, the daemon start."""
    t = _truth("peer-restart")
    exp = t["findings"][0]
    d = SAMPLES / "peer-restart"
    for keys in ((), (d / "charon-right.log",)):
        fs = load(d / "capture.pcapng", *keys).findings
        _codes_ok(fs, t)
        f = next(f for f in fs if f.code == "IKE-PEER-RESTARTED")
        assert f.severity.name.lower() == exp["severity"] and f.sa == exp["stale_ike_sa"]
        assert f.title.startswith(f"{exp['peer']} lost its state")
        assert f"{plural(exp['stale_esp_packets'], 'ESP packet')} to the stale SPI{'s' * (len(exp['stale_spis']) > 1)} {', '.join(exp['stale_spis'])}" in f.explanation
        assert plural(exp['unanswered_dpd_transmissions'], 'transmission') in f.explanation
        assert f"IKE SA {exp['recovered_ike_sa']} came up" in f.explanation
    assert f"for {plural(exp['peer_log']['stale_ike_sa_checkouts_failed'], 'incoming message')}" in f.explanation
    assert "its daemon started again" in f.explanation and "(restarted)" in f.title


def test_sample_nat_napt_names_the_side_translation_float_and_keepalives():
    """Issue 11 #3 on samples/nat-napt (field: a real NAPT in a router namespace, the initiator
    10.0.0.1 behind it, the capture on the public side): only the initiator is behind the NAT —
    the responder's failing source hash is strongSwan forcing encapsulation, not a NAT."""
    exp = _truth("nat-napt")["findings"][0]
    for keys in (False, True):
        fs = session("nat-napt", keys=keys).findings
        assert not [f for f in fs if f.severity >= Severity.WARNING]
        f = next(f for f in fs if f.code == exp["code"])
        # the captured address is the NAT's, not the initiator's own (that one is only hashed, RFC 7296 §2.23)
        assert f.title == f"NAT detected: {exp['side']} is behind a NAT (seen as {exp['translated']}, the NAT's address)"
        assert f"sees it as {exp['translated']}, then {exp['translated_natt']} on UDP 4500: the NAT's public side" in f.explanation
        assert f"{exp['side']} {exp['behind_nat']} is behind" not in f.explanation
        assert f"NAT keepalives ({exp['keepalives']})" in f.explanation
        assert "floated from UDP 500 to 4500 in IKE_AUTH" in f.explanation
        assert "responder 198.18.0.2's NAT_DETECTION_SOURCE_IP does not match the capture" in f.explanation
        assert "responder 198.18.0.2 is behind" not in f.explanation and "both peers" not in f.title


def test_forced_encapsulation_without_nat_is_not_called_a_nat():
    """Both peers with encap = yes and no NAT (the healthy samples): the failing source hashes are
    strongSwan's fake ones; nothing corroborates a NAT, and the finding says so."""
    f = next(f for f in session("healthy-gcm").findings if f.code == "IKE-NAT-DETECTED")
    assert f.title == "UDP encapsulation forced by initiator 198.18.0.1 and responder 198.18.0.2 (no NAT seen)"
