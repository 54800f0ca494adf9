"""The rekeytiming plugin on a real capture: two strongSwan peers with the same 6 s CHILD SA
rekey timer and no jitter (tests/data/make_capture.py), and on the project's samples (manual
rekeys, where the timing rules must stay quiet)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ipsecscope_rekeytiming import no_jitter, plugin, short_lifetime, timer_collision

from ipsecscope.analysis.rules import RuleContext
from ipsecscope.model.sa import Severity
from ipsecscope.session import Session

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
DATA = HERE / "data" / "rekey-timers"


@pytest.fixture(scope="module")
def rekey_table():
    s = Session()
    s.add_key_files([DATA / "keys" / "ikev2_decryption_table", DATA / "keys" / "esp_sa"])
    s.load(DATA / "capture.pcapng")
    return s.table


def test_capture_really_has_crossing_rekeys(rekey_table):
    # Ground truth from the wire: CREATE_CHILD_SA requests from both peers, in pairs.
    (sa,) = rekey_table.ike_sas.values()
    reqs = [(x.requester, x.request_ts) for x in sa.exchanges if x.exchange == 36]
    assert {r for r, _ in reqs} == {"198.18.0.1", "198.18.0.2"} and len(reqs) == 6


def test_short_lifetime(rekey_table):
    (f,) = short_lifetime(rekey_table, RuleContext())
    assert f.code == "REKEY-SHORT-LIFETIME" and f.severity == Severity.WARNING
    assert "every 6 s" in f.title and f.sa == "child:1"
    assert "198.18.0.1" in f.explanation and "198.18.0.2" in f.explanation


def test_timer_collision(rekey_table):
    (f,) = timer_collision(rekey_table, RuleContext())
    assert f.code == "REKEY-TIMER-COLLISION" and f.severity == Severity.WARNING
    assert "3 of 3" in f.title and len(f.frames) == 6


def test_no_jitter(rekey_table):
    fs = list(no_jitter(rekey_table, RuleContext()))
    assert {f.title.split()[0] for f in fs} == {"198.18.0.1", "198.18.0.2"}
    assert all(f.severity == Severity.INFO for f in fs)


def test_threshold_env(rekey_table, monkeypatch):
    monkeypatch.setenv("IPSECSCOPE_REKEY_MIN_INTERVAL", "5")
    assert list(short_lifetime(rekey_table, RuleContext())) == []


@pytest.mark.parametrize("name", ["healthy-gcm", "cbc-sha2-pfs", "dh-retry"])
def test_quiet_on_single_manual_rekeys(name):
    s = Session()
    s.add_key_files([ROOT / "samples" / name / "keys" / "ikev2_decryption_table"])
    s.load(ROOT / "samples" / name / "capture.pcapng")
    for rule in plugin.rules():
        assert list(rule(s.table, RuleContext())) == []


def test_discovered_through_entry_point_and_runs_in_findings():
    from ipsecscope.plugins import discover

    names = {p.name: p for p in discover(refresh=True)}
    assert "rekeytiming" in names and names["rekeytiming"].value == "ipsecscope_rekeytiming:plugin"
    s = Session()
    s.add_key_files([DATA / "keys" / "ikev2_decryption_table"])
    s.load(DATA / "capture.pcapng")
    codes = {f.code for f in s.findings}
    assert {"REKEY-SHORT-LIFETIME", "REKEY-TIMER-COLLISION", "IKE-REKEY-COLLISION"} <= codes
