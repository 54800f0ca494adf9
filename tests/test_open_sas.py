"""The live status line's "N IKE/M CHILD SA open" counts what a reader takes for a tunnel up.

The SA states stay what the capture shows (an IKE SA is ESTABLISHED until a Delete is seen; sas
JSON goldens), but an IKE SA that IKE-DEAD-PEER or IKE-PEER-RESTARTED says is gone is not open,
nor are its CHILD SAs (RFC 7296 §2.4: the requester gives up and deletes them; a restarted peer no
longer has them). live4's walkthrough read "2 IKE/1 CHILD SA open" with no tunnel up."""

from __future__ import annotations

import pytest
from conftest import DATA, SAMPLES

from ipsecscope.analysis.open_sas import open_counts
from ipsecscope.session import Session

CASES = [
    (DATA / "esp-path-loss" / "capture.pcap", DATA / "esp-path-loss" / "charon-left.log", "IKE-DEAD-PEER"),
    (SAMPLES / "dead-peer" / "capture.pcapng", SAMPLES / "dead-peer" / "keys", "IKE-DEAD-PEER"),
    (SAMPLES / "ikev1-dead-peer" / "capture.pcapng", SAMPLES / "ikev1-dead-peer" / "keys", "IKE-DEAD-PEER"),
    (SAMPLES / "peer-restart" / "capture.pcapng", SAMPLES / "peer-restart" / "keys", "IKE-PEER-RESTARTED"),
]


@pytest.mark.parametrize(("cap", "keys", "code"), CASES,
                         ids=["esp-path-loss", "dead-peer", "ikev1-dead-peer", "peer-restart"])
def test_an_ike_sa_gone_with_its_peer_is_not_open(cap, keys, code) -> None:
    s = Session.from_files([cap], [keys])
    (f,) = [f for f in s.findings if f.code == code]
    gone = s.table.ike_sas[f.sa]
    assert gone.state.value == "established"  # the recorded state is what the capture shows
    assert [c.state.value for c in s.table.child_sas.values() if c.ike_sa == f.sa][0] == "established"
    assert open_counts(s.table, []) == (1, 1)  # what "open" counted
    assert open_counts(s.table, s.findings) == (0, 0)


def test_live_status_does_not_count_a_dead_peers_sas_as_open() -> None:
    from test_tui import live_status_line

    cap, keys, _code = CASES[0]
    frames = Session.from_files([cap], [keys]).stats.frames
    status = live_status_line(cap, keys, frames, (200, 30))
    assert "0 IKE/0 CHILD SA open (1/2 seen)" in status, status
