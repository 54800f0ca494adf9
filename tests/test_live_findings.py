"""A growing capture's findings (live, --follow): a problem that came and went stays listed.

tests/data/live-walk (make.py there: two real strongSwan peers, a user-space bridge between them)
is the gateway's view of a path that first drops the peer's ESP for 15 s, then loses every
packet too big for a 1280-byte link while small ones pass (a PMTU black hole, no ICMP). The
rules describe the capture as it stands, so ESP-RETURN-STOPPED holds while the peer's ESP stays
away and is gone at the next reply: watched live, the warning blinked on and off every few
seconds and the Findings count went 2, 3, 2, 3 (field walkthrough live4); the one-way outage left
no trace once it healed."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from conftest import ROOT, until_shown

from ipsecscope.capture import open_capture
from ipsecscope.live_findings import KeptFindings
from ipsecscope.session import Session

DATA = ROOT / "tests" / "data" / "live-walk"
CAP, LOG = DATA / "capture.pcap", DATA / "charon-left.log"
CODE = "ESP-RETURN-STOPPED"


def record_ends() -> list[int]:
    """Byte offset of the end of each record of the (pcap) capture."""
    data = CAP.read_bytes()
    o, ends = 24, []
    while o + 16 <= len(data):
        o += 16 + struct.unpack_from("<I", data, o + 8)[0]
        ends.append(o)
    return ends


def spells() -> list[tuple[int, bool]]:
    """(frames read, whether the rules find CODE then) at every frame where that changes."""
    s = Session()
    s.add_key_files([LOG])
    out: list[tuple[int, bool]] = []
    with open_capture(CAP) as r:
        for raw in r:
            s.feed(raw)
            on = any(f.code == CODE for f in s.findings)
            if on != (out[-1][1] if out else False):
                out.append((raw.index, on))
    return out


def test_the_data_shows_a_warning_that_comes_and_goes() -> None:
    """What the fix is for, on the committed data: the rules' own answer blinks (without this the
    tests below would pass on anything); and what the bridge did is what the capture shows."""
    changes = spells()
    assert [on for _n, on in changes] == [True, False] * 4, changes
    log = DATA / "bridge.log"
    assert log.read_text().count('"action": "drop"') == 6
    assert log.read_text().count('"action": "too_big"') == 6


def test_kept_findings_keep_an_ended_one_once_and_count_its_spells() -> None:
    s = Session()
    s.add_key_files([LOG])
    kept = KeptFindings()
    changes = dict(spells())
    ended = 0
    sizes = []
    with open_capture(CAP) as r:
        for raw in r:
            s.feed(raw)
            if raw.index not in changes:
                continue
            shown = kept.view(s.findings, s.table.last_ts)
            ours = [f for f in shown if f.code == CODE]
            assert len(ours) == 1, [f.title for f in ours]  # one entry, held or ended
            if changes[raw.index]:
                assert not ours[0].title.startswith("ended ")
            else:
                ended += 1
                times = f", {ended} times" if ended > 1 else ""
                assert ours[0].title.startswith("ended ") and f" UTC{times}: ESP from " in ours[0].title, ours[0].title
                assert ours[0].explanation.startswith("Ended: ")
            sizes.append(len(shown))
    assert sizes == sorted(sizes), sizes  # the list never shrinks
    assert kept.view(s.findings, s.table.last_ts) == kept.view(s.findings, s.table.last_ts)


def test_a_followed_capture_keeps_the_warning_that_ended(tmp_path: Path) -> None:
    """The TUI over a growing capture: written up to each frame where the rules' answer changes,
    the Findings tab must keep ESP-RETURN-STOPPED (marked ended while it does not hold) and its
    count must never go down. Fails on a TUI that shows the rules' answer as it stands."""
    from ipsecscope.tui.app import create_stream_app
    from ipsecscope.tui.stream import CaptureFollower

    data, ends = CAP.read_bytes(), record_ends()
    changes = spells()
    growing = tmp_path / "growing.pcap"
    growing.write_bytes(data[:24])
    runner = CaptureFollower([growing], [LOG], follow=True)
    runner.open()
    runner.start()
    app = create_stream_app(runner, growing.name)
    seen: list[tuple[bool, str, list[str]]] = []

    async def run() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            with growing.open("ab") as f:
                at = 24
                for n, on in changes:
                    f.write(data[at:ends[n - 1]])
                    f.flush()
                    at = ends[n - 1]
                    await until_shown(pilot, n)  # the look at exactly these n frames
                    label = str(app.query_one("#tabs").get_tab("findings").label)
                    seen.append((on, label, [f.title for f in app.findings if f.code == CODE]))
            runner.stop()
            await pilot.pause(0.3)

    try:
        asyncio.run(run())
    finally:
        runner.stop()
    counts = [int(label.split("(")[1].rstrip(")")) for _on, label, _t in seen]
    assert counts == sorted(counts), seen
    for on, _label, titles in seen:
        assert len(titles) == 1, seen
        assert titles[0].startswith("ended ") is not on, seen
    assert " UTC, 4 times: " in seen[-1][2][0], seen


def test_headless_says_finding_ended_once_per_end() -> None:
    """--headless: each time ESP-RETURN-STOPPED stops holding, one ``finding_ended`` event with the
    capture time it was first seen gone and how many spells it has held; nothing again at the
    evaluations after it (whoever evaluated: the TUI's refresh calls kept.view() too)."""
    from ipsecscope.live import finding_ended_events

    s = Session()
    s.add_key_files([LOG])
    kept, told = KeptFindings(), {}
    events, gone_at = [], []
    changes = dict(spells())
    with open_capture(CAP) as r:
        for raw in r:
            s.feed(raw)
            kept.view(s.findings, s.table.last_ts)
            if raw.index in changes and not changes[raw.index]:
                gone_at.append(raw.ts)
                kept.view(s.findings, s.table.last_ts)  # a second look (the TUI) before the runner's
            events += finding_ended_events(kept, told)
    ours = [e for e in events if e["code"] == CODE]
    assert [e["times"] for e in ours] == [1, 2, 3, 4] and len(events) == len(ours), events
    assert [e["ts"] for e in ours] == gone_at
    assert all(e["severity"] == "warning" and e["sa"].startswith("esp:198.18.0.1>198.18.0.2:") for e in ours)
