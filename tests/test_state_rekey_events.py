"""Issue 14 item 6, state side: an IKE SA rekey hands its CHILD SAs over (counted once, with
events), and INFERRED CHILD SAs that decrypt learn their mode and key source."""

from __future__ import annotations

import json
from collections import Counter

from conftest import SAMPLES
from test_tracker import load
from test_tui import CAPTURE, KEYS, SIZE, loaded, sync

from ipsecscope.model.sa import SaState
from ipsecscope.session import Session


def test_ike_rekey_moves_child_sas_once_with_events():
    s = load("healthy-gcm")
    t = s.table
    first, second = t.ike_sas.values()
    assert first.rekeyed_into == second.key
    # Each CHILD SA is managed by one IKE SA; the rekeyed one still lists what it handed on.
    managed = Counter(c.ike_sa for c in t.child_sas.values())
    assert managed == {first.key: 1, second.key: 1}
    assert set(second.children) == {c.id for c in t.child_sas.values() if c.ike_sa == second.key}
    assert set(first.children) == set(t.child_sas)
    evs = s.tracker.events
    created = [e for e in evs if e["event"] == "ike_sa_created"]
    assert [e["ike_sa"] for e in created] == [first.key, second.key]
    assert created[1]["rekeyed_from"] == first.key
    moved = [e for e in evs if e["event"] == "child_sa_moved"]
    assert moved and all(e["from_ike_sa"] == first.key and e["ike_sa"] == second.key for e in moved)
    assert {e["child_sa"] for e in moved} <= set(second.children)
    order = [e["event"] for e in evs]
    assert order.index("child_sa_moved") > order.index("ike_sa_created", 1)


def test_inferred_child_sas_learn_mode_and_keys_source_from_decryption():
    name = "ipv6-transport-natt"
    truth = json.loads((SAMPLES / "synthetic" / f"{name}.truth.json").read_text())
    nh = {}
    for fr in truth["frames"].values():
        if fr.get("spi") is not None and fr.get("status") == "ok":
            nh.setdefault(int(fr["spi"]), fr["next_header"])
    want_mode = {spi: "tunnel" if v in (4, 41) else "transport" for spi, v in nh.items()}
    s = Session()
    s.add_key_files([SAMPLES / "synthetic" / f"{name}.esp_sa"])
    s.load(SAMPLES / "synthetic" / f"{name}.pcap")
    checked = set()
    for c in s.table.child_sas.values():
        assert c.state == SaState.INFERRED
        flows = c.flows(s.table)
        modes = {want_mode.get(f.spi) for f in flows if f.decrypted}
        if not modes:  # nothing decrypted (the SPI without a key): nothing learnt
            assert c.mode == "unknown" and c.keys_source is None
            continue
        assert c.keys_source and f"{name}.esp_sa:" in c.keys_source
        if len(modes) == 1:  # inference may pair two unrelated one-way SAs; check the clear ones
            mode = modes.pop()
            assert c.mode == mode, c.id
            checked.add(mode)
    assert checked == {"tunnel", "transport"}


@sync
async def test_peer_pair_detail_counts_a_moved_child_sa_once() -> None:
    from ipsecscope.tui.app import create_app
    from ipsecscope.tui.widgets.sa_detail import SaDetail
    from ipsecscope.tui.widgets.sa_tree import SaTree

    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        tree = app.query_one(SaTree)
        tree.focus()
        for _ in range(40):
            if tree.current_ref is not None and tree.current_ref.kind == "pair":
                break
            await pilot.press("down")
        assert tree.current_ref is not None and tree.current_ref.kind == "pair"
        await pilot.press("enter")
        await pilot.pause()
        table = app.session.table
        assert len(table.child_sas) == 2  # CHILD SA #2 moved from the first IKE SA to the second
        lines = [ln for ln in app.query_one(SaDetail).as_text().splitlines() if "CHILD SAs" in ln]
        assert lines and lines[0].split()[-1] == "2", lines
