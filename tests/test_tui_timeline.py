"""The timeline's lanes, read off the rendered screen: every marker sits at the column of its event's
time, on one scale for the axis, the IKE lanes and the CHILD lanes (issue 14 item 5).

The expected columns are computed here from the model's times and the screen geometry, not through
the widget's own TimeScale: a lane on another scale, a bar wider than its strip, or a marker cut off
at the right edge all move a glyph away from where this test looks for it.
"""

from __future__ import annotations

import asyncio
import io
import re

import pytest
from conftest import SAMPLES, frames_in_prefix, growing_capture_app, need, public, until_shown
from rich.console import Console
from textual.containers import VerticalScroll

from ipsecscope.model import iana
from ipsecscope.model.sa import IkeSa, SaTable
from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.sa_tree import spi_digits
from ipsecscope.tui.widgets.timeline import LABEL_W

SIZES = [(80, 24), (120, 40), (200, 50)]
# (sample, key files): dead peer (failed exchange ✗), rekeys + deletes (↻, ✕ on IKE and CHILD lanes),
# a restarted peer (several IKE SAs, the last one deleted near the end of the capture).
CASES = {
    "dead-peer": [],
    "cbc-sha2-pfs": ["esp_sa", "ikev2_decryption_table"],
    "healthy-gcm": ["esp_sa", "ikev2_decryption_table"],
    "peer-restart": [],
}
# When two markers share a column, the later one in this list is drawn (timeline.LifeBar.glyphs).
PRIORITY = ["◆", "▶", "↻", "✕", "✗"]
MARKERS = set(PRIORITY)


def screen_lines(app) -> list[str]:
    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(), record=True,
                      force_terminal=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text().splitlines()


def timeline_lines(app) -> list[str]:
    """The screen's text inside the timeline's event list, one string per row."""
    from textual.widgets import OptionList

    ol = app.query_one("#timeline-events", OptionList)
    x0, y0, w, h = ol.region.x, ol.region.y, ol.region.width, ol.region.height
    return [ln[x0:x0 + w] for ln in screen_lines(app)[y0:y0 + h]]


def col(ts: float, t0: float, t1: float, width: int) -> int:
    """Nearest column of ``ts`` on a strip ``width`` wide spanning t0..t1."""
    return min(width - 1, max(0, round((ts - t0) / (t1 - t0) * (width - 1))))


def failed(sa: IkeSa, ex) -> bool:
    return not ex.response_frames or (sa.version == 2 and any(iana.notify_is_error(n) for n in ex.notifies))


def expected_lanes(table: SaTable) -> dict[str, list[tuple[float, str]]]:
    """Lane label -> [(time, glyph)] for every marker the lane must show."""
    lanes: dict[str, list[tuple[float, str]]] = {}
    for sa in table.ike_sas.values():
        marks = [(ex.request_ts, "✗" if failed(sa, ex) else "◆") for ex in sa.exchanges if ex.request_ts is not None]
        if sa.created_ts is not None:
            marks.append((sa.created_ts, "▶"))
        if sa.deleted_ts is not None:
            marks.append((sa.deleted_ts, "✕"))
        lanes[f"IKE {sa.ike_spi_i.hex()[:8]}"] = marks
    for c in table.child_sas.values():
        marks = []
        if c.created_ts is not None:
            marks.append((c.created_ts, "▶"))
        if c.rekeyed_ts is not None:
            marks.append((c.rekeyed_ts, "↻"))
        if c.deleted_ts is not None:
            marks.append((c.deleted_ts, "✕"))
        lanes[f"#{c.id} {spi_digits(c.spi_i)[:8]}"] = marks
    return lanes


async def check(sample: str, size: tuple[int, int]) -> int:
    """Returns how many markers were checked (the caller asserts some were)."""
    base = SAMPLES / sample
    app = create_app(base / "capture.pcapng", [base / "keys" / k for k in CASES[sample]])
    checked = 0
    async with app.run_test(size=size) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("1")
        await pilot.pause()
        table = app.session.table
        t0, t1 = table.first_ts, table.last_ts
        lanes_box = app.query_one("#timeline-lanes", VerticalScroll)
        region = lanes_box.region
        x0 = region.x + LABEL_W  # strips start after the label column ...
        width = region.width - LABEL_W - 1  # ... and end before the lanes' scrollbar column
        assert width > 20, region

        # The axis: "0s" starts at the strips' first column, the span's label ends at their last.
        lines = screen_lines(app)
        axis_y = app.query_one("#timeline-axis").region.y
        axis = lines[axis_y]
        assert axis[x0:x0 + 2] == "0s", axis
        last = re.search(r"(\S+)s\s*$", axis[:x0 + width])
        assert last and last.end(1) + 1 == x0 + width, (axis, x0 + width)
        assert axis[x0 + width:].strip() == "", axis  # nothing in the scrollbar column or beyond

        expected = expected_lanes(table)
        labels = {c.id: f"#{c.id} {spi_digits(c.spi_i)[:8]}" for c in table.child_sas.values()}
        packets: dict[str, list[float]] = {}
        for r in app.session.rows:
            if r.spi is not None and r.child_sa in labels:
                packets.setdefault(labels[r.child_sa], []).append(r.ts)
        seen: set[str] = set()
        # The lanes box scrolls (at most half the screen): look at every lane, page by page.
        for _ in range(40):
            lines = screen_lines(app)
            for y in range(region.y, region.y + region.height):
                line = lines[y].ljust(x0 + width + 1)
                label = line[region.x:x0].strip()
                if label not in expected or label in seen:
                    continue
                seen.add(label)
                strip = line[x0:x0 + width]
                want: dict[int, set[str]] = {}
                for ts, glyph in expected[label]:
                    want.setdefault(col(ts, t0, t1, width), set()).add(glyph)
                for c, glyphs in want.items():
                    top = max(glyphs, key=PRIORITY.index)
                    assert strip[c] == top, (sample, size, label, c, top, strip)
                    checked += len(glyphs)
                for c, ch in enumerate(strip):
                    if ch in MARKERS:
                        assert c in want, (sample, size, label, f"unexpected {ch} at {c}", strip)
                assert line[x0 + width] not in "━╌" + "".join(MARKERS), line  # the bar stays in its strip
                if label in packets:  # a CHILD lane: the ESP activity row under it, on the same scale
                    spark = lines[y + 1][x0:x0 + width]
                    busy = {c for c, ch in enumerate(spark) if ch in "▂▃▄▅▆▇█"}
                    sent = {col(ts, t0, t1, width) for ts in packets[label]}
                    # the activity is bucketed (panes.BUCKETS over the span): within one column
                    assert all(any(abs(b - s) <= 1 for s in sent) for b in busy), (label, busy, sent, spark)
                    assert all(any(abs(b - s) <= 1 for b in busy) for s in sent), (label, busy, sent, spark)
                    checked += len(sent)
            if lanes_box.scroll_y >= lanes_box.max_scroll_y:
                break
            lanes_box.scroll_to(y=lanes_box.scroll_y + region.height, animate=False)
            await pilot.pause()
        assert seen == set(expected), (sample, size, set(expected) - seen)
    return checked


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("sample", list(CASES))
def test_timeline_markers_sit_at_their_event_times(sample: str, size: tuple[int, int]) -> None:
    assert asyncio.run(check(sample, size)) >= 2


@pytest.mark.parametrize("capture, keys", [("healthy-gcm", ["keys"]), ("dead-peer", []), ("peer-restart", []),
                                           ("esp-oneway-drop", []), ("nat-rebind", []),
                                           pytest.param(str(public("tcpdump/OSPFv3_with_AH.pcap")), [],
                                                        id="tcpdump/OSPFv3_with_AH")])
def test_activity_from_records_equals_rows(capture, keys):
    """The sparklines' counts from the RowStore's records (numpy, no row built) are the ones the
    rows themselves give, keys (CHILD SA ids, ("spi", SPI) for ESP/AH no SA claims) in the same order."""
    from ipsecscope.rowstore import RowStore
    from ipsecscope.session import Session
    from ipsecscope.tui.panes import activity

    need(SAMPLES / capture)  # third-party ones are materialised at test time (tests/public_data.py)
    s = Session()
    s.add_key_files([SAMPLES / capture / k for k in keys])
    s.load(SAMPLES / capture if capture.endswith(".pcap") else SAMPLES / capture / "capture.pcapng")
    assert isinstance(s.rows, RowStore)
    t0, t1 = s.table.first_ts, s.table.last_ts
    for span in ((t0, t1), (t0 + (t1 - t0) / 3, t1 - (t1 - t0) / 3)):  # rows before and after the span too
        fast = activity(s.rows, *span)
        assert fast and list(fast.items()) == list(activity(list(s.rows), *span).items())


def _session(sample: str, keys: list[str]):
    from ipsecscope.session import Session

    d = SAMPLES / sample
    return Session.from_files([str(d / "capture.pcapng")], [str(d / "keys" / k) for k in keys])


def test_ikev1_events_name_the_modes_and_count_only_true_retransmissions() -> None:
    from ipsecscope.tui.widgets.timeline import exchange_marks, ike_events

    session = _session("ikev1-nat-rebind", ["ikev1_decryption_table", "esp_sa"])
    (sa,) = session.table.ike_sas.values()
    # The packet list names the modes as the SA views do (it said IDENTITY_PROTECTION, QUICK_MODE).
    infos = [r.info for r in session.rows if r.kind == "IKE"]
    assert infos[0].startswith("Main Mode v1 #0 [") and any(i.startswith("Quick Mode v1 #") for i in infos), infos
    texts = [e.text for e in ike_events(sa)]
    # Main Mode's MM3/MM5 and Quick Mode's third message are further messages, not copies: the
    # tracker counts no retransmission, and the timeline said '(2 retransmits)', '(1 retransmits)'.
    assert all(x.retransmits == 0 for x in sa.exchanges)
    assert not any("retransmit" in t for t in texts), texts
    assert any(t.startswith("Main Mode #0 from ") for t in texts), texts
    assert any(t.startswith("Quick Mode #") for t in texts), texts
    assert not any("IDENTITY_PROTECTION" in t or "QUICK_MODE" in t for t in texts), texts
    # A DPD R-U-THERE (an Informational) is one-way in IKEv1: answered under another Message ID.
    dpd = [t for t in texts if "R-U-THERE" in t]
    assert dpd and not any("no response" in t for t in dpd), dpd
    assert {glyph for _, glyph, _ in exchange_marks(sa)} == {"◆"}
    # Real copies are still counted, with the tracker's number.
    table = _session("dead-peer", []).table
    counted = [(x, e) for sa in table.ike_sas.values() for x, e in zip(
        [x for x in sa.exchanges if x.request_ts is not None], [e for e in ike_events(sa) if e.kind in ("ike", "fail")],
        strict=True) if x.retransmits]
    assert counted
    for x, e in counted:
        assert f"({x.retransmits} retransmit" in e.text, e.text


def test_a_long_event_wraps_under_its_own_text() -> None:
    # At 80 columns an event's second line started in the time column ('[frame 3]' under
    # '0.003s'); now it hangs under the event text, and the times stand alone in their column.

    d = SAMPLES / "esp-oneway-drop"

    async def run() -> None:
        app = create_app(d / "capture.pcapng", sorted((d / "keys").iterdir()))
        async with app.run_test(size=(80, 30)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            await pilot.press("1")
            await pilot.pause()
            lines = timeline_lines(app)
            starts = [ln for ln in lines if re.match(r"^\s*\d+\.\d{3}s ", ln)]
            rest = [ln for ln in lines if ln.strip() and ln not in starts and not set(ln.strip()) <= {"▔", "▁"}]
            assert starts and rest, lines  # some events do wrap at this width
            assert all(ln.startswith(" " * 11) for ln in rest), lines

    asyncio.run(run())


def test_an_unacknowledged_ikev1_dpd_is_marked_failed_and_an_acknowledged_one_is_not() -> None:
    # IKEv1 DPD is one-way per Message ID: the R-U-THERE frames IKE-DEAD-PEER names (no ACK) are ✗,
    # the ones acknowledged before the peer died are ◆ (before, every v1 Informational was ✗).
    from ipsecscope.tui.widgets.timeline import exchange_marks, ike_events, unanswered_frames

    session = _session("ikev1-dead-peer", ["ikev1_decryption_table", "esp_sa"])
    (dead,) = [f for f in session.findings if f.code == "IKE-DEAD-PEER"]
    (sa,) = session.table.ike_sas.values()
    unanswered = unanswered_frames(session.findings)
    marks = dict((ts, glyph) for ts, glyph, _ in exchange_marks(sa, unanswered))
    for x in sa.exchanges:
        if "R-U-THERE" in x.summary and "ACK" not in x.summary:
            expect = "✗" if x.request_frames[0] in dead.frames else "◆"
            assert marks[x.request_ts] == expect, (x.request_frames, x.summary)
    assert sorted(marks.values()).count("✗") == len(dead.frames)
    failed_events = [e for e in ike_events(sa, unanswered) if e.kind == "fail"]
    assert sorted(e.frame for e in failed_events) == sorted(dead.frames)


def test_a_frame_reference_is_never_split_across_event_lines() -> None:
    # At 80 columns 'CHILD #1 427e7d84/15b69dc5 IKE_AUTH  [frame' ended a line and '3]' began the
    # next: the reference is one unbreakable unit (model.idtext.frame_ref, ipsecscope.wrap).

    d = SAMPLES / "healthy-gcm"

    async def run() -> None:
        app = create_app(d / "capture.pcapng", [d / "charon-left.log"])
        async with app.run_test(size=(80, 24)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.pause()
            await pilot.press("1")
            await pilot.pause()
            lines = timeline_lines(app)
            shown = "\n".join(lines)
            assert shown.count("[frame ") >= 4, shown
            assert shown.count("[frame ") == len(re.findall(r"\[frame \d+\]", shown)), shown
            assert "\u00a0" not in shown

    asyncio.run(run())


def test_live_the_events_follow_the_newest_until_the_highlight_moves(tmp_path) -> None:
    """Live (here a capture read while it grows, as `--follow` and `live -i` are shown), the newest
    event is what the engineer waits for: the list keeps it in view at 80x24 while the highlight is
    on the last event, as the packet list does; moved up, the highlight stays where it was put."""
    from textual.widgets import OptionList

    app, runner, growing, data = growing_capture_app(tmp_path, "peer-restart", 3)

    async def run() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("1")
            ol = app.query_one("#timeline-events", OptionList)

            async def settle(upto: int) -> int:
                """Until the app has shown every frame of ``data[:upto]`` (the file as written so
                far); the events listed then. It waited for the list to stop growing over 0.2 s,
                which a machine too loaded to fire the once-a-second refresh also satisfied."""
                await until_shown(pilot, frames_in_prefix(data[:upto], tmp_path))
                return ol.option_count

            def newest_shown() -> bool:
                last = app.query_one("Timeline").events[-1]
                stamp = f"{last.ts - app.session.table.first_ts:.3f}s"
                return any(stamp in line for line in timeline_lines(app))

            first = await settle(len(data) // 3)
            assert first > 1 and ol.highlighted == first - 1 and newest_shown()
            with growing.open("ab") as f:
                f.write(data[len(data) // 3: 2 * len(data) // 3])
            n = await settle(2 * len(data) // 3)
            assert n > first and n > 5 and ol.highlighted == n - 1 and newest_shown()  # more lines than the list shows
            await pilot.press("up", "up")
            kept = app.query_one("Timeline").events[n - 3]
            with growing.open("ab") as f:
                f.write(data[2 * len(data) // 3:])
            assert await settle(len(data)) > n
            assert app.query_one("Timeline").events[ol.highlighted] == kept
            runner.stop()
            await pilot.pause(0.5)

    try:
        asyncio.run(run())
    finally:
        runner.stop()


LEGEND_KEYS = ["▶ created", "◆ exchange", "✗ failed", "↻ rekeyed", "✕ deleted", "▁▃▅ ESP"]


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_the_legend_explains_every_glyph_at_any_width(size: tuple[int, int]) -> None:
    """At 80 columns the one-line legend was cut after "0s = … span 2.437s  ▶ created": the lanes'
    ◆ ✗ ↻ ✕ had no key. It wraps in whole pieces, and each piece is on the screen once."""
    base = SAMPLES / "healthy-gcm"

    async def go() -> list[str]:
        app = create_app(base / "capture.pcapng", [base / "keys"])
        async with app.run_test(size=size) as pilot:
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
            await pilot.press("1")
            await pilot.pause()
            box = app.query_one("#timeline-legend").region
            return [ln[box.x:box.right] for ln in screen_lines(app)[box.y:box.bottom]]

    legend = asyncio.run(go())
    text = "\n".join(legend)
    assert "0s = 2026-11-25 20:09:03.561 UTC, span 2.437s" in text, legend
    for key in LEGEND_KEYS:
        assert text.count(key) == 1, (key, legend)
    assert "enc(4)" not in text  # only said when the capture has enc(4) SAs


def test_enc_sas_have_lanes_and_no_pane_says_no_ipsec() -> None:
    """An OpenBSD enc(4) capture (six SAs, no IKE, no ESP header) opened with "No IPsec in this
    capture" on the timeline and the findings pane beside a tree of six enc SAs. Each enc SA is a
    lane from its first packet to its last (no ▶/✕: nothing says when it was made or deleted)."""
    from conftest import DATA
    from textual.geometry import Region

    async def go() -> tuple[dict[str, str], list[tuple[str, float, float]], str, tuple[float, float], Region]:
        app = create_app(DATA / "linktypes" / "enc-rekey.pcap", [])
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
            panes = {}
            for key in "123":
                await pilot.press(key)
                await pilot.pause()
                panes[key] = "\n".join(screen_lines(app))
            table = app.session.table
            sas = [(f"enc {e.spi:08x}", e.first_ts, e.last_ts) for e in table.enc_sas.values()]
            await pilot.press("1")
            await pilot.pause()
            region = app.query_one("#timeline-lanes").region
            return panes, sas, "\n".join(screen_lines(app)), (table.first_ts, table.last_ts), region

    panes, sas, timeline, (t0, t1), region = asyncio.run(go())
    for key, text in panes.items():
        assert "No IPsec" not in text and "No SA in this capture" not in text, (key, text)
    assert len(sas) == 6
    lines = timeline.splitlines()
    x0 = region.x + LABEL_W
    width = region.width - LABEL_W - 1
    for label, first, last in sas:
        line = next(ln for ln in lines if ln[region.x:x0].strip() == label)
        strip = line[x0:x0 + width]
        drawn = [c for c, ch in enumerate(strip) if ch == "─"]
        assert drawn == list(range(col(first, t0, t1, width), col(last, t0, t1, width) + 1)), (label, strip)
        assert not MARKERS & set(strip), strip
    assert "─ enc(4) SA seen" in timeline


def test_stats_io_graph_names_enc_sas() -> None:
    """enc-rekey.pcap's Stats tab: the IO graph's rows read "-   d9843074" (no CHILD SA), as if
    nobody knew the SA; they say "enc", as the table under the graph does."""
    from conftest import DATA

    async def go() -> list[str]:
        app = create_app(DATA / "linktypes" / "enc-rekey.pcap", [])
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
            await pilot.press("5")
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
            return screen_lines(app)

    lines = asyncio.run(go())
    spis = ["d9843074", "c09ad0a9", "7ab62908", "4f4f29f0", "42954069", "b80c382c"]
    graph = [ln for ln in lines if any(f"enc {s} " in ln for s in spis)]
    assert len(graph) == 6, lines
    assert not any(re.search(r"▕ -\s+[0-9a-f]{8} ", ln) for ln in lines), lines


def test_axis_ticks_read_in_one_unit_that_fits_the_span() -> None:
    """psk-mismatch spans 4 ms: the axis read "0s  0.000964s  0.00193s  0.00289s" and the last
    tick (the span) had no room. In ms every tick is written, the last one ending at the strip's end;
    an hour is minutes, not "1.8e+03s"."""
    from ipsecscope import timefmt

    base = SAMPLES / "psk-mismatch"

    async def go() -> tuple[str, int, float]:
        app = create_app(base / "capture.pcapng", [])
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
            await pilot.press("1")
            await pilot.pause()
            region = app.query_one("#timeline-lanes").region
            axis = screen_lines(app)[app.query_one("#timeline-axis").region.y]
            t = app.session.table
            return axis[region.x + LABEL_W:region.right - 1], region.width - LABEL_W - 1, t.last_ts - t.first_ts

    axis, width, span = asyncio.run(go())
    assert span < 0.01
    labels = axis.split()
    assert labels[0] == "0s" and all(x.endswith("ms") for x in labels[1:]), axis
    assert len(labels) == 5, axis  # 4 ticks at this width (Axis.render), the span's included
    assert labels[-1] == timefmt.offset(span, span) and axis.rstrip().endswith(labels[-1]), axis
    assert [timefmt.offset(x, 3600) for x in (0, 900, 1800, 3600)] == ["0s", "15min", "30min", "60min"]
    assert timefmt.offset(1.5, 2.4) == "1.5s" and timefmt.offset(36 * 3600, 72 * 3600) == "36h"
