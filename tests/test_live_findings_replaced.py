"""live_findings.KeptFindings: which disappearing finding was replaced (goes) and which ended
(stays, marked). Replaced = a current finding carries the frame that named it (its first).

samples/peer-restart: IKE-DEAD-PEER becomes IKE-PEER-RESTARTED (which cites the dead peer's first
unanswered request): replaced, no "ended" entry. esp-path-loss: ESP-PATH-MTU's black hole cites
the big packets an ESP-RETURN-STOPPED spell also lists; the spell still ends when a small packet
is answered (any shared frame counted as a take-over before, and the spells vanished)."""

from __future__ import annotations

from conftest import DATA, SAMPLES

from ipsecscope.capture import open_capture
from ipsecscope.live_findings import KeptFindings
from ipsecscope.session import Session


def watch(cap, keys) -> list[list[tuple[str, str]]]:
    s = Session()
    s.add_key_files([keys])
    kept, views = KeptFindings(), []
    with open_capture(cap) as r:
        for raw in r:
            s.feed(raw)
            views.append([(f.code, f.title) for f in kept.view(s.findings, s.table.last_ts)])
    return views


def test_a_dead_peer_that_turns_out_restarted_is_replaced_not_ended() -> None:
    views = watch(SAMPLES / "peer-restart" / "capture.pcapng", SAMPLES / "peer-restart" / "keys")
    assert any(c == "IKE-DEAD-PEER" for v in views for c, _t in v)
    assert any(c == "IKE-PEER-RESTARTED" for c, _t in views[-1])
    assert not any(c == "IKE-DEAD-PEER" for c, _t in views[-1])


def test_return_stopped_spells_end_beside_the_black_hole() -> None:
    views = watch(DATA / "esp-path-loss" / "capture.pcap", DATA / "esp-path-loss" / "charon-left.log")
    last = dict(views[-1])
    assert "ESP-PATH-MTU" in last
    # the corrupt phase's spell and the black hole's ones: each end counted
    assert last["ESP-RETURN-STOPPED"].startswith("ended ") and ", 4 times: " in last["ESP-RETURN-STOPPED"], last
