"""The Stats tab on real samples: the numbers it shows are `ipsecscope stats --json`'s, its IO graph
draws the same per-interval counts, "follow" sets the display filter that selects exactly what
`ipsecscope packets -Y` selects, and a live (followed) capture is counted incrementally."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import IPSECSCOPE, ROOT, SAMPLES, needs_tshark
from test_tui import frames_in_view, loaded, screen_lines, sync, tshark_fields
from textual.widgets import DataTable, Input, TabbedContent
from tmux_driver import Tmux, have_tmux

from ipsecscope import timefmt
from ipsecscope.tui.app import create_app, create_stream_app
from ipsecscope.tui.stream import CaptureFollower
from ipsecscope.tui.widgets.packet_table import PacketTable
from ipsecscope.tui.widgets.stats import LABEL_W, PEAK_W, IoGraph, StatsTable, StatsView, bars, rebin

SIZE = (200, 50)  # wide enough for every IO graph bin to get its own column
SAMPLE_NAMES = ["healthy-gcm", "path-impairments", "cbc-sha2-pfs", "nat-napt"]


def stats_json(cap: Path, keys: Path) -> dict:
    return json.loads(_stats_json_text(cap, keys))  # a fresh document each time: tests may change theirs


@functools.cache
def _stats_json_text(cap: Path, keys: Path) -> str:
    """``stats --json``, run once per sample and worker (the file's tests ask it of 6 samples 20 times)."""
    return subprocess.run([*IPSECSCOPE, "stats", str(cap), "-k", str(keys), "--json"], capture_output=True, text=True,
                          check=True).stdout


def packets_frames(cap: Path, keys: Path, flt: str) -> list[int]:
    r = subprocess.run([*IPSECSCOPE, "packets", str(cap), "-k", str(keys), "-Y", flt, "--json"], capture_output=True,
                       text=True, check=True)
    return [json.loads(line)["frame"] for line in r.stdout.splitlines()]


def cells(table: DataTable, key: str) -> list[str]:
    return [str(c) for c in table.get_row(key)]


def rel(t: float | None, t0: float) -> str:
    return "-" if t is None else f"{t - t0:.3f}"


def _ep(addr: str, port: int | None) -> str:
    return addr if port is None else (f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}")


def expected(doc: dict) -> dict[str, dict[str, dict[str, str | float]]]:
    """Every value of a `stats --json` document as the Stats tab writes it: table id -> row key ->
    column key -> text (a float for pkt/s, compared within rounding by :func:`assert_rate`)."""
    t0 = doc["first_time"]
    sas: dict[str, dict[str, str | float]] = {}
    for c in doc["child_sas"]:
        sas[f"child:{c['id']}"] = {"sa": f"#{c['id']} {c['state']}", "packets": str(c["packets"]),
                                   "bytes": str(c["bytes"]), "rate": c["rate_pps"], "first": rel(c["first_time"], t0),
                                   "last": rel(c["last_time"], t0), "lost": str(c["lost"]), "src": "", "dst": ""}
    for f in doc["flows"]:
        sas[f"flow:{f['key']}"] = {"sa": f"↳ {f['spi'][2:]}" + (" AH" if f["protocol"] == "AH" else ""),
                                   "packets": str(f["packets"]), "bytes": str(f["bytes"]), "rate": f["rate_pps"],
                                   "first": rel(f["first_time"], t0), "last": rel(f["last_time"], t0),
                                   "lost": str(f["lost"]), "src": f["src"], "dst": f["dst"]}
    convs: dict[str, dict[str, str | float]] = {}
    for c in doc["conversations"]:
        convs[f"conv:{c['protocol']}:{c['a']}:{c['a_port']}:{c['b']}:{c['b_port']}"] = {
            "conv": f"{c['protocol']} {_ep(c['a'], c['a_port'])} ⇄ {_ep(c['b'], c['b_port'])}",
            "ab": str(c["packets_ab"]), "ba": str(c["packets_ba"]), "bytes": str(c["bytes"]), "rate": c["rate_pps"],
            "first": rel(c["first_time"], t0), "last": rel(c["last_time"], t0),
            "lost": "-" if c["lost"] is None else str(c["lost"]), "sa": ",".join(f"#{i}" for i in c["child_sas"]) or "-"}
    return {"stats-sas": sas, "stats-convs": convs}


def same_row(got: dict[str, str], want: dict[str, str | float], where: str) -> None:
    assert set(got) == set(want), where
    for col, value in want.items():
        if isinstance(value, float):
            assert_rate(got[col], value)
        else:
            assert got[col].strip() == value, f"{where} {col}: {got[col]!r} != {value!r}"


def check_numbers(view: StatsView, doc: dict, *, io: bool = True) -> None:
    """Every row the tab holds against the `stats --json` document (what is on screen: see
    test_every_stats_value_is_on_screen_at_any_size)."""
    for table_id, rows in expected(doc).items():
        table = view.query_one(f"#{table_id}", StatsTable)
        keys = [k for k, _ in table.data]
        assert sorted(keys) == sorted(rows) and len(keys) == len(rows), table_id  # each once, nothing more
        for key, want in rows.items():
            same_row(table.cells(key), want, key)
    if io:
        t0 = doc["first_time"]
        graph = view.query_one(IoGraph)
        assert graph.stats is not None and graph.stats.interval == doc["interval"]
        lines = [str(line) for line in graph.lines(graph.size.width)]
        width = graph.size.width - LABEL_W - 1 - PEAK_W
        assert len(lines) == len(doc["flows"]) + 2  # the legend, a row per SA, the time axis
        assert f"IO graph ({doc['interval']:.3g}s bins) · 0s = {timefmt.at(t0, 3)} · pkt/s per SA" in lines[0]
        for f, line in zip(doc["flows"], lines[1:], strict=False):
            n = len(f["io"])
            assert n <= width, "the test's terminal gives each bin a column"
            cols, _, _ = rebin(f["io"], doc["interval"], width)
            assert line[LABEL_W + 1:LABEL_W + 1 + len(cols)] == bars(cols), f["key"]
            # column x draws bin x*n//width: the first column of each bin gives the JSON's counts back
            assert [round(cols[-(-i * width // n)] * doc["interval"]) for i in range(n)] == f["io"]


def assert_rate(shown: str, pps: float) -> None:
    """pkt/s as shown (1 decimal below 10, 3.1k above 1000) against the JSON's (3 decimals)."""
    value = float(shown.removesuffix("k")) * (1000 if shown.endswith("k") else 1)
    assert abs(value - pps) <= 0.05 * pps + 0.05, (shown, pps)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
@sync
async def test_stats_tab_shows_the_numbers_of_stats_json(name: str) -> None:
    cap, keys = SAMPLES / name / "capture.pcapng", SAMPLES / name / "keys"
    doc = stats_json(cap, keys)
    assert doc["flows"] and doc["conversations"]
    app = create_app(cap, [keys])
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("5")
        await loaded(pilot)
        assert app.query_one(TabbedContent).active == "stats"
        assert app.focused is app.query_one("#stats-convs")
        check_numbers(app.query_one(StatsView), doc)


def on_screen(app, table: StatsTable) -> dict[int, dict[str, str]]:
    """The cells of the table's rows on screen as a person reads them, by row index and column key:
    each column whose whole header is on screen, from its header's first cell to the next header
    (the table's visible width at most: a value cut at the edge reads short)."""
    lines = screen_lines(app)
    box = table.scrollable_content_region
    header = lines[box.y][box.x:box.right]
    starts = []
    for key, label, short in table.spec:
        m = re.search(rf"(?<!\S){re.escape(short if table.compact else label)}(?!\S)", header)
        if m:
            starts.append((m.start(), key))
    starts.sort()
    top = round(table.scroll_y)
    out = {}
    for y in range(box.y + 1, box.bottom):  # the header, then the rows from the scroll position
        row = top + y - box.y - 1
        if row >= table.row_count:
            break
        line = lines[y][box.x:box.right]
        out[row] = {key: line[x:(starts[i + 1][0] if i + 1 < len(starts) else len(line))]
                    for i, (x, key) in enumerate(starts)}
    return out


SIZES = [(80, 24), (120, 40), (200, 50)]
SCREEN_SAMPLES = [("nat-napt", "samples/nat-napt/capture.pcapng", "samples/nat-napt/charon-right.log"),
                  ("multi-child", "tests/data/keys/multi-child/capture.pcapng",
                   "tests/data/keys/multi-child/charon-left.log"),
                  ("ipv6-transport-natt", "samples/synthetic/ipv6-transport-natt.pcap",
                   "samples/synthetic/ipv6-transport-natt.esp_sa")]


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize(("name", "cap", "keys"), SCREEN_SAMPLES, ids=[s[0] for s in SCREEN_SAMPLES])
@sync
async def test_every_stats_value_is_on_screen_at_any_size(name: str, cap: str, keys: str, size) -> None:
    # A person with the SA tree open reaches every number of `stats --json` (each CHILD SA and SA
    # row, each conversation) on screen, whole: the footer's ←→ moves the columns, the first one
    # stays. A column cut at the table's edge, or one the keys cannot reach, fails here.
    doc = stats_json(ROOT / cap, ROOT / keys)
    want = expected(doc)
    app = create_app(ROOT / cap, [ROOT / keys])
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        await pilot.press("5")
        await loaded(pilot)
        assert app.query_one("#sa-tree").display  # the tree stays open
        footer_keys = set()
        for table_id in ("stats-convs", "stats-sas"):
            table = app.query_one(f"#{table_id}", StatsTable)
            if table_id == "stats-sas":
                await pilot.press("shift+tab")  # from the conversations (focused first) to the SA table
                await pilot.pause()
            assert app.focused is table
            got: dict[int, dict[str, str]] = {}
            # Each position of the columns (→ a column at a time from the first), its rows a page
            # at a time: a key press per column, not per column and page.
            for _ in range(len(table.spec)):
                row = 0
                while row < table.row_count:
                    table.scroll_to(y=row, animate=False, immediate=True)
                    await pilot.pause()
                    page = on_screen(app, table)
                    for r, cells in page.items():
                        got.setdefault(r, {}).update(cells)
                    row = max(page) + 1
                footer_keys |= {b.binding.key_display for b in app.screen.active_bindings.values()
                                if b.binding.show}
                if all(len(got.get(r, ())) == len(table.spec) for r in range(table.row_count)):
                    break
                await pilot.press("right")
            keys = [k for k, _ in table.data]
            assert sorted(keys) == sorted(want[table_id])
            for r, key in enumerate(keys):
                same_row(got[r], want[table_id][key], f"{size} {table_id} {key}")
        # the legend's 0s, which every first/last seen above counts from
        assert f"0s = {timefmt.at(doc['first_time'], 3)}" in "\n".join(screen_lines(app))
        if size[0] < 120:
            assert "←→" in footer_keys  # the keys that reach the hidden columns are shown
        if size == (200, 50):
            assert "←→" not in footer_keys  # everything fits: nothing to scroll, nothing said


@pytest.mark.parametrize("name", ["healthy-gcm", "path-impairments"])
@sync
async def test_follow_a_conversation_and_an_sa_from_the_stats_tab(name: str) -> None:
    cap, keys = SAMPLES / name / "capture.pcapng", SAMPLES / name / "keys"
    doc = stats_json(cap, keys)
    app = create_app(cap, [keys])
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("5")
        await loaded(pilot)
        conv = doc["conversations"][0]
        await pilot.press("f")
        await loaded(pilot)
        table = app.query_one(PacketTable)
        assert app.query_one(TabbedContent).active == "packets"
        assert app.query_one("#filter", Input).value == conv["filter"]
        shown = frames_in_view(table)
        assert shown == packets_frames(cap, keys, conv["filter"])
        assert len(shown) == conv["packets"]  # the samples carry no cleartext copy of the tunnel traffic

        # An SA (one direction): Enter on its row in the SA table, from the command palette's tab.
        flow = doc["flows"][-1]
        await pilot.press("5")
        await loaded(pilot)
        sas = app.query_one("#stats-sas", DataTable)
        sas.focus()
        sas.move_cursor(row=sas.get_row_index(f"flow:{flow['key']}"))
        await pilot.press("enter")
        await loaded(pilot)
        assert app.query_one(TabbedContent).active == "packets"
        want = f"esp.spi == {flow['spi']}"
        assert app.query_one("#filter", Input).value == want
        assert frames_in_view(table) == packets_frames(cap, keys, want)
        assert len(frames_in_view(table)) == flow["packets"]

        # A CHILD SA: both its SPIs.
        child = doc["child_sas"][0]
        await pilot.press("5")
        await loaded(pilot)
        sas.focus()
        sas.move_cursor(row=sas.get_row_index(f"child:{child['id']}"))
        await pilot.press("f")
        await loaded(pilot)
        want = f"esp.spi in {{{child['spi_i']}, {child['spi_r']}}}"
        assert app.query_one("#filter", Input).value == want
        assert frames_in_view(table) == packets_frames(cap, keys, want)
        assert len(frames_in_view(table)) == child["packets"]


@needs_tshark
@sync
async def test_follow_a_packet_from_the_packet_list() -> None:
    name = "healthy-gcm"
    cap, keys = SAMPLES / name / "capture.pcapng", SAMPLES / name / "keys"
    doc = stats_json(cap, keys)
    app = create_app(cap, [keys])
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.query_one(PacketTable)
        esp = int(tshark_fields(cap, "esp", "frame.number")[0][0])
        ike = int(tshark_fields(cap, "isakmp", "frame.number")[-1][0])
        ispi = tshark_fields(cap, f"frame.number == {ike}", "isakmp.ispi")[0][0].replace(":", "")
        # a decrypted ESP packet: its inner conversation, written as the Stats tab writes it
        table.go_to_frame(esp)
        await pilot.press("f")
        await loaded(pilot)
        flt = app.query_one("#filter", Input).value
        assert flt == doc["conversations"][0]["filter"]
        assert frames_in_view(table) == packets_frames(cap, keys, flt)
        assert table.current_row.frame == esp  # the cursor stays on the packet followed
        # an IKE packet: its IKE SA, as tshark selects it
        await pilot.press("escape")
        await loaded(pilot)
        table.go_to_frame(ike)
        await pilot.press("f")
        await loaded(pilot)
        flt = app.query_one("#filter", Input).value
        assert flt == f"isakmp.ispi == {ispi}"
        assert frames_in_view(table) == [int(r[0]) for r in tshark_fields(cap, flt, "frame.number")]
        assert frames_in_view(table) == packets_frames(cap, keys, flt)


@sync
async def test_live_stats_count_only_the_new_frames(tmp_path: Path) -> None:
    name = "healthy-gcm"
    cap, keys = SAMPLES / name / "capture.pcapng", SAMPLES / name / "keys"
    doc = stats_json(cap, keys)
    data = cap.read_bytes()
    growing = tmp_path / "growing.pcapng"
    growing.write_bytes(data[: len(data) // 2])
    runner = CaptureFollower([growing], [keys], follow=True)
    runner.open()
    runner.start()
    app = create_stream_app(runner, growing.name)
    try:
        async with app.run_test(size=SIZE) as pilot:
            view = app.query_one(StatsView)

            async def settle() -> int:
                """Wait until the tab has counted every frame the reader has read; returns that count."""
                for _ in range(600):  # up to a minute on a loaded machine
                    await pilot.pause(0.1)
                    with runner.lock:
                        frames = runner.session.stats.frames
                    if frames and view._acc is not None and view._acc.last_frame == frames:
                        return frames
                raise AssertionError(f"live view stuck at {view._acc and view._acc.last_frame}")

            await pilot.press("5")
            half = await settle()
            assert view._acc.counted == half < 34
            with growing.open("ab") as f:
                f.write(data[len(data) // 2:])
            while await settle() < 34:
                pass
            # every frame counted once: the refreshes added the new frames, never a recount
            assert view._acc.counted == 34
            check_numbers(view, doc, io=False)
            assert [sum(f.io) for f in view.stats.flows] == [f["packets"] for f in doc["flows"]]
            runner.stop()
            await pilot.pause(0.5)  # the last refresh's messages, before the screen goes away
    finally:
        runner.stop()
        await asyncio.sleep(0)


@pytest.mark.skipif(not have_tmux(), reason="tmux not installed")
def test_stats_tab_and_follow_in_a_real_80x24_terminal() -> None:
    name = "healthy-gcm"
    cap, keys = SAMPLES / name / "capture.pcapng", SAMPLES / name / "keys"
    doc = stats_json(cap, keys)
    conv = doc["conversations"][0]
    want = len(packets_frames(cap, keys, conv["filter"]))
    with Tmux(f"{sys.executable} -m ipsecscope {cap} -k {keys}", width=80, height=24, cwd=str(ROOT)) as t:
        t.wait_for("decrypted 18/18")
        t.send("5")
        c1 = doc["child_sas"][0]
        sa_row = rf"#{c1['id']} deleted\s+{c1['packets']}\s+{c1['bytes']}\s"
        # Every section laid out: the first screen with the graph and the conversations can still
        # hold the SA table at zero height (seen once in CI under load: two rules, nothing between).
        screen = t.wait_for(lambda s: "IO graph" in s and "icmp 10.1.0.1 ⇄ 10.2.0.1" in s and re.search(sa_row, s))
        lines = screen.splitlines()
        assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
        tab = [line.partition("▕")[2] for line in lines]  # right of the SA tree
        # one graph row per SA (ESP direction), with bars, and the time axis under them
        for f in doc["flows"]:
            row = next(line for line in tab if line.startswith(f" #{f['child_sa']}  {f['spi'][2:]} "))
            assert "█" in row, row
        assert re.search(r"\b0s\b.*\d\.\ds", screen)
        assert re.search(rf"⇄ 10\.2\.0\.1\s+{conv['packets_ab']}\s+{conv['packets_ba']}\s+{conv['bytes']}\s", screen)
        t.send("f")
        screen = t.wait_for(lambda s: f"filter: {want}/34" in s)
        assert "ip.addr == 10.1.0.1 && ip.addr == 10.2." in screen  # the filter bar (cut at 80 columns)
        # the same from the command palette
        t.send("Escape")
        t.wait_for(lambda s: f"filter: {want}/34" not in s)
        t.send("5")
        t.wait_for("IO graph")
        t.send("C-p")
        t.wait_for("Search for commands")
        t.type("follow this conv")
        # the list narrowed to it (before the search runs it lists every command, Help first)
        t.wait_for(lambda s: "Follow this conversation" in s and "Keys and the packet filter language" not in s)
        t.send("Enter")
        t.wait_for(lambda s: f"filter: {want}/34" in s)
        t.send("q")
        t.wait_for("[exited 0]")


BIN = re.compile(r"▲ (?P<t0>[\d.]+)–(?P<t1>[\d.]+)s \((?:bin (?P<a>\d+)|bins (?P<a2>\d+)–(?P<b>\d+)) of ")


@pytest.mark.parametrize("name", ["healthy-gcm", "path-impairments", "nat-napt"])
@sync
async def test_io_graph_cursor_shows_each_bins_exact_counts_at_80x24(name: str) -> None:
    """At 80x24 with the SA tree open the graph is narrower than its bins: adjacent bins share a
    column, and a bar's height cannot be read as a number. A person tabs to the graph and walks
    its columns with ←/→ (Home first): each SA row then ends with the exact packet count of the
    column under the cursor, and the line under the axis says which bins (and seconds) that is.
    Read off the screen, every column's numbers are the sums of `stats --json`'s io bins, and all
    columns together count every packet once."""
    cap, keys = SAMPLES / name / "capture.pcapng", SAMPLES / name / "keys"
    doc = stats_json(cap, keys)
    app = create_app(cap, [keys])
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("5")
        await loaded(pilot)
        graph = app.query_one(IoGraph)
        n = max(len(f["io"]) for f in doc["flows"])
        assert n > graph.size.width - LABEL_W - 1 - PEAK_W, "bins are merged at this width (else nothing to read)"
        while app.focused is not graph:  # the graph is a Tab stop before the tables
            await pilot.press("shift+tab")
        await pilot.press("home")
        await pilot.pause()
        footer = {b.binding.key_display for b in app.screen.active_bindings.values() if b.binding.show}
        assert "←→" in footer
        counted = {f["key"]: 0 for f in doc["flows"]}
        seen_bins: list[tuple[int, int]] = []
        while True:
            lines = [line.partition("▕")[2] for line in screen_lines(app)]
            m = next(BIN.search(line) for line in lines if BIN.search(line))
            a = int(m["a"] if m["a"] is not None else m["a2"])
            b = a + 1 if m["a"] is not None else int(m["b"]) + 1
            if seen_bins and (a, b) == seen_bins[-1]:
                break  # → at the last column changes nothing
            assert not seen_bins or a == seen_bins[-1][1], "the columns cover the bins in order, none skipped"
            seen_bins.append((a, b))
            assert float(m["t0"]) == pytest.approx(a * doc["interval"]) and float(m["t1"]) == pytest.approx(
                b * doc["interval"])
            for f in doc["flows"]:
                label = f"#{f['child_sa']}"
                row = next(line for line in lines if line.startswith(f" {label:<3} {f['spi'][2:]} "))
                shown = int(row.split()[-1])
                assert shown == sum(f["io"][a:b]), (f["key"], a, b, row)
                counted[f["key"]] += shown
            await pilot.press("right")
            await pilot.pause()
        assert seen_bins[0][0] == 0 and seen_bins[-1][1] == n
        assert counted == {f["key"]: sum(f["io"]) for f in doc["flows"]}
        assert all(sum(f["io"]) == f["packets"] for f in doc["flows"])
        # away from the graph, its rows show each SA's peak rate again and the bin line goes
        await pilot.press("tab")
        await pilot.pause()
        assert not any(BIN.search(line) for line in screen_lines(app))


@pytest.mark.parametrize(("cap", "keys", "sas", "convs"), [
    (ROOT / "tests" / "data" / "esp-path-loss" / "capture.pcap", [], None, "none: no ESP decrypted (a adds keys)"),
    (ROOT / "tests" / "data" / "arp" / "arp.pcap", [], "none: no ESP or AH in this capture",
     "none: no ESP or AH in this capture"),
    # AH only, every key loaded and every packet verified: "no ESP decrypted (a adds keys)" was wrong
    (ROOT / "tests" / "data" / "ah" / "ah-v4.pcap", [ROOT / "tests" / "data" / "ah" / "ah-v4.keys.json"], None,
     "none: AH only; conversations need tunnel-mode ESP"),
    # keys that fit no ESP SA here: the note says they were loaded, not only "a adds keys"
    (ROOT / "tests" / "data" / "esp-path-loss" / "capture.pcap", [ROOT / "tests" / "data" / "ah" / "ah-v4.keys.json"],
     None, "none: 4 keys loaded, no ESP decrypted (a adds keys)"),
])
@sync
async def test_an_empty_stats_table_says_why(cap: Path, keys: list, sas: str | None, convs: str) -> None:
    """80x24: a capture without keys (or without IPsec) showed the Conversation table as a header
    over nothing, as if still being counted; the table says why it is empty, and follows nothing."""
    app = create_app(cap, keys)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("5")
        await loaded(pilot)
        view = app.query_one(StatsView)
        for table_id, note in (("stats-sas", sas), ("stats-convs", convs)):
            table = view.query_one(f"#{table_id}", StatsTable)
            if note is None:
                assert "none" not in [k for k, _ in table.data]
                continue
            assert [k for k, _ in table.data] == ["none"]
            assert table.cells("none")[table.spec[0][0]] == note
            assert note in "\n".join(screen_lines(app))
        view.query_one("#stats-convs", StatsTable).focus()
        await pilot.pause()
        assert view.follow_filter() is None
