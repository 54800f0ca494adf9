"""An IKE SA whose peer is gone is shown as the evidence says, not only as its last recorded state.

A peer that dies or restarts sends no Delete, so the SA's recorded state stays ESTABLISHED; the
SA tree and `sas` said "established" beside an IKE-DEAD-PEER finding that says it is gone (RFC
7296 §2.4: the requester deletes the SA after its retransmissions). The analysis now records it on
the model (IkeSa.peer_gone, from the findings), and the views show "established, peer X dead
since ...". Real data: tests/data/esp-path-loss (the right peer's charon SIGKILLed, the left's
CREATE_CHILD_SA rekey retransmitted into silence), samples/peer-restart (IKE-PEER-RESTARTED)."""

from __future__ import annotations

import asyncio
import json

from conftest import DATA, SAMPLES, workers_done
from conftest import field_cli as cli

from ipsecscope import timefmt

LOSS = DATA / "esp-path-loss"
CAP, KEYS = str(LOSS / "capture.pcap"), str(LOSS / "charon-left.log")


def _finding(cap: str, keys: str, code: str) -> dict:
    (f,) = [f for f in json.loads(cli("findings", "--json", cap, "-k", keys))["findings"] if f["code"] == code]
    return f


def test_sas_json_keeps_the_recorded_state_and_says_the_peer_is_dead() -> None:
    dead = _finding(CAP, KEYS, "IKE-DEAD-PEER")
    (sa,) = json.loads(cli("sas", "--json", CAP, "-k", KEYS))["ike_sas"]
    assert sa["key"] == dead["sa"] and sa["state"] == "established"
    assert sa["peer_gone"] == {"peer": "198.18.0.2", "how": "dead", "since": dead["time"], "finding": "IKE-DEAD-PEER"}


def test_sas_text_says_dead_since_the_first_unanswered_request() -> None:
    dead = _finding(CAP, KEYS, "IKE-DEAD-PEER")
    head = cli("sas", CAP, "-k", KEYS).splitlines()[0]
    assert f"ESTABLISHED, peer 198.18.0.2 dead since {timefmt.at(dead['time'], 3)}" in head


def test_a_restarted_peer() -> None:
    cap, keys = str(SAMPLES / "peer-restart" / "capture.pcapng"), str(SAMPLES / "peer-restart" / "keys")
    restart = _finding(cap, keys, "IKE-PEER-RESTARTED")
    sas = {s["key"]: s for s in json.loads(cli("sas", "--json", cap, "-k", keys))["ike_sas"]}
    old = sas.pop(restart["sa"])
    assert old["state"] == "established"
    assert old["peer_gone"] == {"peer": "198.18.0.2", "how": "restarted", "since": restart["time"],
                                "finding": "IKE-PEER-RESTARTED"}
    assert all(s["peer_gone"] is None for s in sas.values())  # the new IKE SA is not gone


def test_the_mark_follows_the_findings() -> None:
    """Evaluated again (live mode) without the finding, the mark goes: it is the findings', not the view's."""
    from ipsecscope.analysis.peer_gone import mark_peers_gone
    from ipsecscope.session import Session

    s = Session.from_files([CAP], [KEYS])
    (sa,) = s.table.ike_sas.values()
    assert sa.peer_gone is None  # nothing evaluated yet
    assert any(f.code == "IKE-DEAD-PEER" for f in s.findings)
    assert sa.peer_gone is not None and sa.state_text() == "established, peer 198.18.0.2 dead" and sa.state_word == "dead"
    mark_peers_gone(s.table, [f for f in s.findings if f.code != "IKE-DEAD-PEER"])
    assert sa.peer_gone is None and sa.state_text() == "established"


def _tree_labels(size: tuple[int, int]) -> list:
    from textual.widgets import Tree

    from ipsecscope.tui.app import create_app
    from ipsecscope.tui.widgets.sa_tree import SaTree

    async def run() -> list:
        app = create_app(LOSS / "capture.pcap", [LOSS / "charon-left.log"])
        async with app.run_test(size=size) as pilot:
            await workers_done(pilot.app)
            await pilot.pause()
            tree: Tree = app.query_one(SaTree)
            out: list[str] = []

            def walk(node) -> None:
                for child in node.children:
                    out.append(child.label)
                    walk(child)

            walk(tree.root)
            return out

    return asyncio.run(run())


def test_sa_tree_shows_it() -> None:
    labels = [str(x) for x in _tree_labels((200, 40))]
    (ike,) = [x for x in labels if "IKEv2" in x]
    assert " dead " in f"{ike} " and "established" not in ike  # the tree's one word (IkeSa.state_word)


def test_narrow_sa_tree_shows_it_too() -> None:
    """At 80x24 (an SSH session: live5's walk) the tree has no room for the state word and showed
    the dead peer's SA with the green dot of "established"; its dot is a red ✗ instead."""
    (ike,) = [x for x in _tree_labels((80, 24)) if " v2 " in str(x)]
    assert str(ike).startswith("✗ v2 ") and "red" in str(ike.spans[0].style)
