"""Findings from real strongSwan captures of network faults (tests/data/findings/make_captures.py):
IKE_SA_INIT in IP fragments over a 576-byte MTU, and IKE_AUTH to UDP 4500 never answered."""

from __future__ import annotations

import dataclasses
import subprocess

from conftest import DATA, needs_tshark

from ipsecscope.capture import open_capture
from ipsecscope.model.sa import SaState, Severity
from ipsecscope.session import Session

FAULTS = DATA / "findings"


def session(name: str, keys: bool = True) -> Session:
    s = Session()
    if keys:
        s.add_key_files([p for p in sorted((FAULTS / name / "keys").iterdir())
                         if any(ln.strip() and not ln.startswith("#") for ln in p.read_text().splitlines())])
    s.load(FAULTS / name / "capture.pcapng")
    return s


@needs_tshark
def test_ip_fragmented_ike_sa_init():
    cap = FAULTS / "ip-fragmented" / "capture.pcapng"
    out = subprocess.run(["tshark", "-r", str(cap), "-Y", "ip.flags.mf == 1", "-T", "fields", "-e",
                          "frame.number"], capture_output=True, text=True, check=True).stdout.split()
    assert out  # tshark sees IP fragments with More Fragments set
    s = session("ip-fragmented")
    (sa,) = s.table.ike_sas.values()
    init = sa.exchanges[0]
    assert init.exchange == 34 and init.ip_fragmented and sa.state == SaState.DELETED
    assert sa.ike_fragmentation == (False, False)  # fragmentation = no on both peers
    (f,) = [f for f in s.findings if f.code == "IKE-IP-FRAGMENTED"]
    assert f.severity == Severity.WARNING and "RFC 7383" in f.explanation
    assert "modp8192" in sa.proposal


def test_ip_fragmented_response_lost():
    """Same capture, the responder's fragments dropped on the way (first fragment only arrives),
    the initiator retransmits: the fragmented exchange goes unanswered."""
    with open_capture(FAULTS / "ip-fragmented" / "capture.pcapng") as r:
        fr = {raw.index: raw for raw in r}
    s = Session()
    for n in (1, 2, 3, 4):
        s.feed(fr[n])
    for i, delay in enumerate((1.0, 2.4)):
        for n in (1, 2, 3):
            ts = fr[n].ts + delay
            s.feed(dataclasses.replace(fr[n], index=10 + 3 * i + n, ts=ts, ts_ns=int(ts * 1e9)))
    codes = {f.code: f for f in s.findings}
    assert codes["IKE-IP-FRAGMENTED"].severity == Severity.ERROR
    assert "unanswered" in codes["IKE-IP-FRAGMENTED"].title
    assert codes["IKE-NO-RESPONSE"].severity == Severity.ERROR


def test_udp_4500_unanswered_real():
    for keys in (True, False):
        s = session("udp4500-unanswered", keys)
        (sa,) = s.table.ike_sas.values()
        auth = next(x for x in sa.exchanges if x.exchange == 35)
        assert auth.responder_port == 4500 and auth.retransmits == 3 and not auth.response_frames
        (f,) = [f for f in s.findings if f.code == "IKE-UDP4500-BLOCKED"]
        # The requests (3, 5, 7, 9) and, in frame order among them, the ICMP port unreachable the
        # responder's host answered them with, quoting each (the IKE header's initiator SPI says
        # which IKE SA): the refusal is named, with its frames.
        assert f.severity == Severity.ERROR and f.frames == (3, 4, 5, 6, 7, 9)
        assert "198.18.0.2 itself answered 4 of them with ICMP port unreachable (frame 4)" in f.explanation
        assert "drops UDP 4500" not in f.explanation and "listens on UDP 4500" in f.hint
        assert not [f for f in s.findings if f.code in ("IKE-DEAD-PEER", "IKE-NO-RESPONSE")]


def test_finish_marks_unanswered_ike_sa_failed():
    s = session("udp4500-unanswered", keys=False)  # Session.load ends with finish()
    (sa,) = s.table.ike_sas.values()
    assert sa.state == SaState.FAILED and sa.failure == "no response" and sa.failure_frame == 9
    assert any(e["event"] == "ike_sa_failed" and e["reason"] == "no response" for e in s.tracker.events)
    s.tracker.finish()  # idempotent
    assert [e["event"] for e in s.tracker.events].count("ike_sa_failed") == 1


def test_pfs_group_refused_then_retried():
    s = session("pfs-retry")
    t = s.table
    c1, c2, c3 = t.child_sas.values()
    assert c2.state == SaState.FAILED and c2.failure == "INVALID_KE_PAYLOAD" and c2.pfs_group == 19
    assert c3.rekeyed_from == 1 and c1.rekeyed_into == 3 and c3.pfs_group == 14
    (f,) = [f for f in s.findings if f.code == "IKE-INVALID-KE"]
    assert f.severity == Severity.WARNING and f.frames == (9, 10)
    assert f.title == "PFS group mismatch: 198.18.0.2 asked for MODP_2048, the retry succeeded"
    assert "ECP_256" in f.explanation
    assert not [f for f in s.findings if f.code == "IKE-CHILD-REFUSED"]


def test_ikev1_main_mode_refused_in_clear():
    s = session("ikev1-proposal-mismatch", keys=False)
    (sa,) = s.table.ike_sas.values()
    assert sa.version == 1 and sa.state == SaState.FAILED and sa.offered == ["aes128-sha1-modp2048"]
    (x,) = sa.exchanges
    assert x.response_frames == [2] and x.summary == "Main Mode refused: NO_PROPOSAL_CHOSEN"
    (f,) = [f for f in s.findings if f.severity >= Severity.WARNING]
    assert f.code == "IKE-NO-PROPOSAL" and f.frames == (1, 2) and f.title.startswith("IKE SA")


def test_ikev1_quick_mode_rekey_and_deletes():
    """Real IKEv1 strongSwan tunnel: Main Mode, Quick Mode, ESP, a Quick Mode rekey, Deletes.
    Keys straight from the initiator's charon log (phase-1 Ka and the CHILD keys)."""
    d = FAULTS / "ikev1-rekey"
    s = Session()
    s.add_key_files([d / "charon-left.log"])
    s.load(d / "capture.pcapng")
    t = s.table
    (sa,) = t.ike_sas.values()
    assert (sa.version, sa.mode, sa.state, sa.deleted_by) == (1, "Main", SaState.DELETED, "198.18.0.1")
    assert sa.proposal == "aes256-sha256-modp2048" and sa.id_i == "left.ipsecscope.test"
    c1, c2 = t.child_sas.values()
    assert c1.rekeyed_into == 2 and c2.rekeyed_from == 1 and c1.proposal == "aes256gcm16"
    assert c1.state == c2.state == SaState.DELETED
    assert [str(x) for x in c2.ts_i] == ["10.1.0.0-10.1.0.255"]
    assert {(f.src, f.spi) for f in t.flows.values()} == {
        ("198.18.0.1", c1.spi_r), ("198.18.0.2", c1.spi_i), ("198.18.0.1", c2.spi_r), ("198.18.0.2", c2.spi_i)}
    assert all(f.decrypted == f.packets == 2 for f in t.flows.values())
    assert [f for f in s.findings if f.severity >= Severity.WARNING] == []
    # Without keys: phase 1 seen, Quick Mode invisible, CHILD SAs inferred from ESP.
    s = Session()
    s.load(d / "capture.pcapng")
    (sa,) = s.table.ike_sas.values()
    assert sa.state == SaState.ESTABLISHED and sa.state_inferred
    assert [c.state for c in s.table.child_sas.values()] == [SaState.INFERRED, SaState.INFERRED]


def test_ikev1_psk_mismatch_main_mode():
    """Real IKEv1 Main Mode with different PSKs: MM5 answered by encrypted Informationals only."""
    for keys in ([FAULTS / "ikev1-psk-mismatch" / "charon-left.log"], []):
        s = Session()
        s.add_key_files(keys)
        s.load(FAULTS / "ikev1-psk-mismatch" / "capture.pcapng")
        (sa,) = s.table.ike_sas.values()
        assert sa.state == SaState.FAILED and sa.state_inferred and "PSK" in sa.failure
        assert sa.exchanges[0].retransmits == 3
        bad = [f for f in s.findings if f.severity >= Severity.WARNING]
        assert [f.code for f in bad] == ["IKE-AUTH-FAILED"]
        assert bad[0].frames == (5, 6) and "PSK mismatch" in bad[0].title
