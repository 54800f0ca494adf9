"""Pilot tests of the Textual app on real captures: loading, navigation, filtering, detail, keys."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import CORPUS, SAMPLES, corpus_captures, needs_tshark, public, until_shown, workers_done
from textual.geometry import Size
from textual.widgets import DataTable, Input, TabbedContent, Tree

from ipsecscope.filtering import select
from ipsecscope.tui.app import IpsecscopeApp, create_app
from ipsecscope.tui.screens.modals import HelpScreen, KeyFileScreen
from ipsecscope.tui.widgets.packet_table import PacketTable
from ipsecscope.tui.widgets.sa_detail import SaDetail
from ipsecscope.tui.widgets.sa_tree import SaTree

HEALTHY = SAMPLES / "healthy-gcm"
CAPTURE = HEALTHY / "capture.pcapng"
KEYS = [HEALTHY / "keys" / "esp_sa", HEALTHY / "keys" / "ikev2_decryption_table"]
SIZE = (120, 40)


def tshark_fields(capture: Path, display_filter: str, *fields: str) -> list[list[str]]:
    cmd = ["tshark", "-r", str(capture), "-Y", display_filter, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def sync(fn):
    """Run an async pilot test with asyncio (no pytest-asyncio needed)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


async def loaded(pilot) -> None:
    await workers_done(pilot.app)
    await pilot.pause()


def screen_lines(app) -> list[str]:
    """What the terminal shows, a string per line (the compositor's strips, as a person reads them)."""
    strips = app.screen._compositor.render_strips(Size(*app.size))
    return ["".join(seg.text for seg in strip) for strip in strips]


def live_status_line(cap: Path, keys: Path, frames: int, size: tuple[int, int]) -> str:
    """Follow ``cap`` as a live capture in the TUI until its ``frames`` frames are shown, and return
    the status line (the first screen line)."""
    from ipsecscope.tui.app import create_stream_app
    from ipsecscope.tui.stream import CaptureFollower

    runner = CaptureFollower([cap], [keys], follow=True)
    runner.open()
    runner.start()
    app = create_stream_app(runner, cap.name)

    async def run() -> str:
        async with app.run_test(size=size) as pilot:
            await until_shown(pilot, frames)
            runner.stop()
            await pilot.pause(0.3)
            return screen_lines(app)[0]

    try:
        return asyncio.run(run())
    finally:
        runner.stop()


async def tree_cursor_to(pilot, kind: str) -> SaTree:
    """Focus the SA tree and move its cursor down to the first node of ``kind`` (pair/ike/child/flow)."""
    tree = pilot.app.query_one(SaTree)
    tree.focus()
    while tree.current_ref is None or tree.current_ref.kind != kind:
        await pilot.press("down")
    return tree


def tree_labels(tree: Tree) -> list[str]:
    out = []

    def walk(node) -> None:
        for child in node.children:
            out.append(str(child.label))
            walk(child)

    walk(tree.root)
    return out


def frames_in_view(table: PacketTable) -> list[int]:
    return [table.rows[i].frame for i in table.view]


@needs_tshark
@sync
async def test_tree_lists_every_esp_spi_tshark_sees() -> None:
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        labels = " ".join(tree_labels(app.query_one(SaTree)))
        spis = {row[0].removeprefix("0x") for row in tshark_fields(CAPTURE, "esp", "esp.spi")}
        assert spis, "the sample has ESP traffic"
        for spi in spis:
            assert spi in labels, f"SPI {spi} not in the SA tree: {labels}"
        ispis = {row[0].replace(":", "")[:8] for row in tshark_fields(CAPTURE, "isakmp", "isakmp.ispi")}
        for ispi in ispis:
            assert ispi in labels
        assert "198.18.0.1 ⇄ 198.18.0.2" in labels


@needs_tshark
@sync
async def test_packet_table_has_every_frame_and_filters_like_tshark() -> None:
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.query_one(PacketTable)
        all_frames = [int(r[0]) for r in tshark_fields(CAPTURE, "frame", "frame.number")]
        assert frames_in_view(table) == all_frames
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        spi = tshark_fields(CAPTURE, "esp", "esp.spi")[0][0]
        await pilot.press(*f"esp spi={spi}", "enter")
        await loaded(pilot)
        expected = [int(r[0]) for r in tshark_fields(CAPTURE, f"esp.spi == {spi}", "frame.number")]
        assert frames_in_view(table) == expected
        assert app.focused is table
        count = str(app.query_one("#filter-count").render())
        assert f"filter: {len(expected)}/{len(all_frames)}" in count
        # Escape clears the filter and keeps the cursor on the frame it was on.
        current = table.current_row.frame
        await pilot.press("escape")
        await loaded(pilot)
        assert frames_in_view(table) == all_frames
        assert table.current_row.frame == current


@sync
async def test_bad_filter_is_reported() -> None:
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.query_one(PacketTable)
        await pilot.press("slash", *"spi=nothex", "enter")
        await loaded(pilot)
        inp = app.query_one("#filter", Input)
        assert inp.has_class("invalid")
        assert frames_in_view(table) == []  # no rows that the input does not describe
        assert any("is not a number" in n.message for n in app._notifications)
        # shown inline too, with its position, while typing a display filter
        await pilot.press("slash", "ctrl+u", *"esp && ip.src = 1")
        await pilot.pause()
        assert "✗ col 15:" in str(app.query_one("#filter-count").render())


@needs_tshark
@sync
async def test_display_filter_on_inner_fields_selects_what_tshark_selects() -> None:
    app = create_app(CAPTURE, KEYS)
    flt = "ip.src == 10.1.0.0/16 && icmp.type == 8 && esp.sequence > 1"
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("2", "slash", *flt, "enter")
        await loaded(pilot)
        out = subprocess.run(["tshark", "-r", str(CAPTURE), "-o", "esp.enable_encryption_decode:TRUE", "-Y", flt,
                              "-T", "fields", "-e", "frame.number"], capture_output=True, text=True, check=True,
                             env={**os.environ, "WIRESHARK_CONFIG_DIR": str(HEALTHY / "keys")}).stdout
        want = [int(x) for x in out.split()]
        assert want and frames_in_view(app.query_one(PacketTable)) == want


@needs_tshark
@sync
async def test_cursor_moves_and_detail_follows() -> None:
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.query_one(PacketTable)
        first_esp = int(tshark_fields(CAPTURE, "esp", "frame.number")[0][0])
        spi = tshark_fields(CAPTURE, f"frame.number == {first_esp}", "esp.spi")[0][0]
        for _ in range(first_esp - 1):
            await pilot.press("down")
        await pilot.pause()
        assert table.current_row.frame == first_esp
        detail_labels = " ".join(tree_labels(app.query_one("#detail-tree", Tree)))
        assert f"ESP SPI {spi}" in detail_labels
        assert "Decryption: ok" in detail_labels
        assert "Inner packet" in detail_labels
        await pilot.press("end")
        assert table.current_row.frame == table.rows[-1].frame
        await pilot.press("home")
        assert table.cursor == 0
        # Frame 1 is IKE_SA_INIT: the payload tree names its payloads.
        labels = " ".join(tree_labels(app.query_one("#detail-tree", Tree)))
        assert "IKE_SA_INIT request" in labels and "KE ECP_256" in labels
        await pilot.press("enter")
        assert app.focused.id == "detail-tree"


@sync
async def test_mouse_click_selects_a_row() -> None:
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.query_one(PacketTable)
        await pilot.click(PacketTable, offset=(10, 3))
        await pilot.pause()
        assert table.cursor == 3
        assert app._detail_frame == table.rows[3].frame


@sync
async def test_tabs_help_and_tree_navigation() -> None:
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        tabs = app.query_one(TabbedContent)
        for key, tab in (("1", "timeline"), ("3", "findings"), ("4", "sa-detail"), ("2", "packets")):
            await pilot.press(key)
            assert tabs.active == tab
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        # Tree: go to the first CHILD SA and open its detail.
        tree = await tree_cursor_to(pilot, "child")
        ref = tree.current_ref
        await pilot.press("enter")
        assert tabs.active == "sa-detail"
        child = app.session.table.child_sas[ref.key]
        detail = app.query_one(SaDetail).as_text()
        assert f"CHILD SA #{child.id}" in detail
        assert child.proposal in detail
        assert "10.1.0.0/24" in detail  # the sample's traffic selectors, as strongSwan writes them
        assert "hidden" in detail and child.proposal  # keys redacted by default
        # s: the packets of that SA, both directions.
        await pilot.press("s")
        await loaded(pilot)
        table = app.query_one(PacketTable)
        spis = {child.spi_i, child.spi_r}
        got = [table.rows[i] for i in table.view]
        assert got and all(r.spi in spis for r in got)
        assert len(got) == sum(f.packets for f in child.flows(app.session.table))


@sync
async def test_keys_are_redacted_until_toggled() -> None:
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        tree = await tree_cursor_to(pilot, "child")
        await pilot.press("enter")
        child = app.session.table.child_sas[tree.current_ref.key]
        flow = child.flows(app.session.table)[0]
        key = app.session.keys.esp_lookup(flow.src, flow.dst, flow.spi)
        assert key is not None
        assert key.enc_key.hex() not in app.query_one(SaDetail).as_text()
        await pilot.press("K")
        assert key.enc_key.hex() in app.query_one(SaDetail).as_text()
        await pilot.press("K")
        assert key.enc_key.hex() not in app.query_one(SaDetail).as_text()


@sync
async def test_adding_keys_in_the_app_decrypts_again() -> None:
    app = create_app(CAPTURE)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        rows = app.session.rows
        assert all(r.status != "decrypted" for r in rows if r.kind == "ESP")
        await pilot.press("a")
        assert isinstance(app.screen, KeyFileScreen)
        await pilot.press(*" ".join(str(k) for k in KEYS), "enter")
        await pilot.pause()
        await loaded(pilot)
        esp = [r for r in app.session.rows if r.kind == "ESP"]
        assert esp and all(r.status == "decrypted" for r in esp)
        assert f"decrypted {len(esp)}/{len(esp)}" in str(app.query_one("#status").render())


@sync
async def test_adding_keys_redraws_the_packet_detail_of_the_selected_frame() -> None:
    """ah-v4.pcap, frame 1 selected, keys added with `a`: the list's row turned ✓ but the detail
    pane under it still read "ICV not verified: no AH keys loaded" until the cursor moved (the
    frame was the one already shown, so it was not drawn again). A load that replaces the session
    draws the selected frame's detail again."""
    from ipsecscope.tui.widgets.packet_detail import PacketDetail

    ah = Path(__file__).parent / "data" / "ah"
    app = create_app(ah / "ah-v4.pcap")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("2")
        await loaded(pilot)
        detail = app.query_one(PacketDetail)
        assert app.query_one(PacketTable).current_row.frame == 1
        assert "no AH keys loaded" in "\n".join(tree_labels(detail.query_one("#detail-tree", Tree)))
        await pilot.press("a")
        await pilot.press(*str(ah / "ah-v4.keys.json"), "enter")
        await pilot.pause()
        await loaded(pilot)
        assert app.query_one(PacketTable).current_row.frame == 1
        labels = "\n".join(tree_labels(detail.query_one("#detail-tree", Tree)))
        assert "ICV verified (AUTH_HMAC_SHA1_96" in labels and "no AH keys" not in labels, labels


@sync
async def test_bad_key_file_is_reported_not_raised(tmp_path: Path) -> None:
    bad = tmp_path / "keys.txt"
    bad.write_text("this is not a key file\n")
    app = create_app(CAPTURE)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("a", *str(bad), "enter")
        await pilot.pause()
        assert any(n.severity == "error" for n in app._notifications)
        assert app.key_files == []


@sync
async def test_not_a_capture_is_reported(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"definitely not a capture file" * 10)
    app = create_app(junk)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.session is None
        assert "Could not load" in str(app.query_one("#status").render())


@pytest.mark.parametrize("capture", [p.name for p in corpus_captures()])
@sync
async def test_every_corpus_capture_opens(capture: str) -> None:
    """No traceback on any Wireshark corpus capture; every frame has a row; each row shows detail."""
    app = create_app(CORPUS / capture)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        assert app.session is not None, str(app.query_one("#status").render())
        await pilot.press("2")  # it may have opened on Findings
        table = app.query_one(PacketTable)
        assert len(table.view) == app.session.stats.frames > 0
        for _ in range(len(table.view)):
            await pilot.press("down")
        await pilot.pause()
        assert table.current_row.frame == table.rows[-1].frame
        assert len(tree_labels(app.query_one("#detail-tree", Tree))) > 1
        await pilot.press("1", "3", "4")


@sync
async def test_findings_table_lists_session_findings() -> None:
    pytest.importorskip("ipsecscope.analysis.rules", reason="the findings engine is not in this checkout yet")
    app = create_app(SAMPLES / "proposal-mismatch" / "capture.pcapng")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        findings = app.session.findings
        assert findings, "a proposal mismatch must produce a finding"
        await pilot.press("3")
        table = app.query_one("#findings-table", DataTable)
        assert table.row_count == len(findings)
        shown = app.query_one("FindingsView").findings
        codes = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        assert codes == [f.code for f in shown]
        severities = [int(f.severity) for f in shown]
        assert severities == sorted(severities, reverse=True)
        f0 = shown[0]
        await pilot.press("enter")
        await loaded(pilot)
        assert app.query_one(TabbedContent).active == "packets"
        assert app.query_one("#filter", Input).value == f"finding={f0.code}"
        evidence = {fr for f in findings if f.code == f0.code for fr in f.frames}
        assert frames_in_view(app.query_one(PacketTable)) == sorted(evidence)


def test_create_app_is_the_cli_entry(tmp_path: Path) -> None:
    app = create_app(CAPTURE, KEYS)
    assert isinstance(app, IpsecscopeApp)
    assert app.path == CAPTURE and app.key_files == KEYS


async def _export(pilot, app, kind_index: int, path: Path) -> None:
    await pilot.press("e")
    from ipsecscope.tui.screens.export import ExportScreen

    assert isinstance(app.screen, ExportScreen)
    from textual.widgets import RadioButton

    app.screen.query(RadioButton)[kind_index].value = True
    await pilot.pause()
    app.screen.query_one("#export-path", Input).value = str(path)
    await pilot.click("#export-go")
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


@needs_tshark
@sync
async def test_export_decrypted_pcapng_from_the_app(tmp_path: Path) -> None:
    out = tmp_path / "inner.pcapng"
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await _export(pilot, app, 0, out)
        assert any("decrypted" in n.message and n.title == "Exported" for n in app._notifications)
    esp = tshark_fields(CAPTURE, "esp", "frame.number")
    # Every ESP packet of the healthy sample carries an ICMP echo; the export holds them as plain IP.
    assert len(tshark_fields(out, "icmp", "frame.number")) == len(esp)
    assert tshark_fields(out, "esp", "frame.number") == []


@pytest.mark.parametrize(("keys", "why"), [([], "no keys loaded"),
                                           ([SAMPLES / "cbc-sha2-pfs" / "charon-left.log"], "no key loaded fits")])
@sync
async def test_export_says_why_nothing_decrypted_can_be_written(tmp_path: Path, keys: list[Path], why: str) -> None:
    """With nothing decrypted the dialog offered 'Decrypted packets' and wrote an empty pcapng:
    those choices are now disabled with the reason under them, and the writer refuses them too."""
    from textual.widgets import RadioButton, Static

    from ipsecscope.errors import ExportError
    from ipsecscope.tui.app import export
    from ipsecscope.tui.screens.export import ExportRequest, ExportScreen

    app = create_app(CAPTURE, keys)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        assert app.session.stats.esp and not app.session.stats.decrypted
        await pilot.press("e")
        assert isinstance(app.screen, ExportScreen)
        buttons = {b.name: b for b in app.screen.query(RadioButton)}
        assert buttons["pcapng"].disabled and buttons["jsonl"].disabled
        assert not buttons["pcapng"].value and buttons["sas"].value  # the first that can be written
        assert app.screen.query_one("#export-path", Input).value.endswith(".sas.json")
        note = str(app.screen.query_one("#export-why", Static).render())
        assert "decrypted pcapng" in note and why in note, note
        assert (not keys) == buttons["esp_sa"].disabled  # a key table of loaded keys is something
        assert "Cancel" in "\n".join(screen_lines(app))  # the dialog fits 80x24 with its reasons
        await pilot.press("escape")
        for kind in ("pcapng", "jsonl"):
            with pytest.raises(ExportError, match=why):
                export(ExportRequest(kind, tmp_path / f"out.{kind}"), [CAPTURE], app.session)
    assert not list(tmp_path.iterdir())


@sync
async def test_every_export_choice_is_read_whole_at_80_columns() -> None:
    """80x24: the dialog cut "(pcapng, inner packets, original timestam…" and "ikev2_decryption_table
    (keys are writt…": the warning that the file holds keys was the part lost. Every choice's whole
    title is on the screen."""
    from ipsecscope.tui.screens.export import KINDS, ExportScreen

    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, ExportScreen)
        shown = "\n".join(screen_lines(app))
        missing = [k.title for k in KINDS if k.title not in shown]
        assert not missing, (missing, shown)
        assert sum("holds keys" in k.title for k in KINDS) == 3  # each key table says so


@sync
async def test_export_key_table_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "keys.esp_sa"
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await _export(pilot, app, 4, out)
    from ipsecscope.session import Session

    s = Session()
    s.add_key_files([out])  # only the exported ESP table
    s.load(CAPTURE)
    esp = [r for r in s.rows if r.kind == "ESP"]
    assert esp and all(r.status == "decrypted" for r in esp)


@sync
async def test_export_sas_and_findings_json(tmp_path: Path) -> None:
    import json

    app = create_app(SAMPLES / "dead-peer" / "capture.pcapng")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await _export(pilot, app, 2, tmp_path / "sas.json")
        await _export(pilot, app, 3, tmp_path / "findings.json")
        session = app.session
    sas = json.loads((tmp_path / "sas.json").read_text())
    assert sas["schema"] == "ipsecscope.sas/1"
    assert len(sas["ike_sas"]) == len(session.table.ike_sas)
    findings = json.loads((tmp_path / "findings.json").read_text())
    assert [f["code"] for f in findings["findings"]] == [f.code for f in session.findings]
    assert findings["counts"]["error"] >= 1  # the peer stopped answering


@sync
async def test_exports_are_private_and_never_overwrite_an_input(tmp_path: Path) -> None:
    """Key tables and JSON documents from the TUI are created 0600 (a pre-existing 0666 file
    included), and a path that is the capture itself is refused with the capture intact."""
    import os

    from ipsecscope.errors import ExportError
    from ipsecscope.tui.app import export
    from ipsecscope.tui.screens.export import ExportRequest

    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        session = app.session
    old = tmp_path / "old.json"
    old.write_text("{}")
    os.chmod(old, 0o666)
    for kind, path in (("esp_sa", tmp_path / "esp_sa"), ("keys_json", tmp_path / "k.json"), ("sas", old),
                       ("findings", tmp_path / "f.json")):
        export(ExportRequest(kind, path), [CAPTURE], session)
        assert path.stat().st_mode & 0o777 == 0o600, kind
    capture = tmp_path / "copy.pcapng"
    capture.write_bytes(CAPTURE.read_bytes())
    with pytest.raises(ExportError):
        export(ExportRequest("esp_sa", capture), [capture], session)
    assert capture.read_bytes() == CAPTURE.read_bytes()


@sync
async def test_timeline_event_jumps_to_its_frame() -> None:
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("slash", *"esp", "enter")  # the IKE frames are filtered out
        await loaded(pilot)
        await pilot.press("1")
        timeline = app.query_one("Timeline")
        rekey = next(i for i, e in enumerate(timeline.events) if "rekey CHILD_SA" in e.text)
        for _ in range(rekey):
            await pilot.press("down")
        await pilot.press("enter")
        await loaded(pilot)
        table = app.query_one(PacketTable)
        assert app.query_one(TabbedContent).active == "packets"
        assert table.current_row.frame == timeline.events[rekey].frame
        assert table.current_row.kind == "IKE" and "CREATE_CHILD_SA" in table.current_row.info


@sync
async def test_packet_table_renders_only_visible_rows_of_a_million() -> None:
    """1M rows (the sample's real rows, renumbered): moving anywhere formats only what is on screen."""
    import dataclasses

    from textual.app import App

    from ipsecscope.model.filter import compile_filter
    from ipsecscope.session import Session
    from ipsecscope.tui.widgets import packet_table as pt

    s = Session()
    s.add_key_files(KEYS)
    s.load(CAPTURE)
    base = s.rows
    n = 1_000_000
    rows = [dataclasses.replace(base[i % len(base)], frame=i + 1) for i in range(n)]

    class One(App):
        def compose(self):
            yield pt.PacketTable(id="t")

    calls = 0
    original = pt.PacketTable._render_row

    def counting(self, row, width, selected):
        nonlocal calls
        calls += 1
        return original(self, row, width, selected)

    pt.PacketTable._render_row = counting
    try:
        app = One()
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.query_one(pt.PacketTable)
            table.set_rows(rows, rows[0].ts)
            table.focus()
            await pilot.pause()
            for keys in (["end"], ["pageup"] * 3, ["home"], ["pagedown"] * 2, ["down"] * 5):
                await pilot.press(*keys)
            await pilot.pause()
            assert table.current_row.frame == 2 * (30 - 1) + 5 + 1
            assert calls < 30 * 20, f"{calls} rows formatted for ~13 screens of 30 lines"
            # A filter over the million rows gives a compact view, and the cursor lands in it.
            flt = compile_filter("esp spi=0x15b69dc5")
            view = pt.view_from_indices(select(flt, rows))
            table.set_view(view)
            await pilot.press("end")
            assert table.current_row.spi == 0x15B69DC5
            assert view.itemsize == 4 and len(view) == sum(1 for r in base if r.spi == 0x15B69DC5) * (n // len(base)) + sum(
                1 for r in base[: n % len(base)] if r.spi == 0x15B69DC5)
    finally:
        pt.PacketTable._render_row = original


@sync
async def test_key_directory_picked_in_the_file_picker() -> None:
    from textual.widgets import DirectoryTree

    app = create_app(CAPTURE)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("a")
        screen = app.screen
        assert isinstance(screen, KeyFileScreen)
        screen.post_message(DirectoryTree.DirectorySelected(screen.query_one(DirectoryTree).root,
                                                            HEALTHY / "keys"))
        await pilot.pause()
        assert screen.query_one("#keys-path", Input).value == str(HEALTHY / "keys")
        await pilot.click("#keys-load")
        await pilot.pause()
        await loaded(pilot)
        esp = [r for r in app.session.rows if r.kind == "ESP"]
        assert esp and all(r.status == "decrypted" for r in esp)


@sync
async def test_missing_key_file_is_reported_and_the_capture_still_opens(tmp_path: Path) -> None:
    app = create_app(CAPTURE, [tmp_path / "no-such-keys", *KEYS])
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.session is not None
        assert any(n.severity == "error" and "no-such-keys" in n.message for n in app._notifications)
        esp = [r for r in app.session.rows if r.kind == "ESP"]
        assert esp and all(r.status == "decrypted" for r in esp)  # the good key files still count
        assert app.key_files == KEYS


@sync
async def test_every_key_binding_has_a_command_palette_entry() -> None:
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        by_action = {
            "help": "Help", "focus_filter": "Filter packets", "tab('timeline')": "Timeline",
            "tab('packets')": "Packets", "tab('findings')": "Findings", "tab('sa-detail')": "SA detail",
            "tab('stats')": "Stats", "follow": "Follow this conversation",
            "add_keys": "Add key files", "sa_packets": "Packets of this SA", "export": "Export",
            "toggle_keys": "Show/hide keys", "toggle_tree": "Toggle SA tree",
            "toggle_detail": "Toggle packet detail", "toggle_hex_pane": "Hex view / decoded tree",
            "toggle_hex": "Hex: wire / decrypted", "clear_filter": "Clear filter", "quit": "Quit",
        }
        for binding in app.BINDINGS:
            assert by_action[binding.action] in titles, binding.action
        # And the palette runs them: "Findings" switches the tab.
        await pilot.press("ctrl+p")
        await pilot.press(*"Findings")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "findings"


@needs_tshark
@sync
async def test_ikev1_proposal_attributes_in_the_detail_tree_match_tshark() -> None:
    capture = CORPUS / "ikev1-certs.pcap"
    fields = ["isakmp.ike.attr.encryption_algorithm", "isakmp.ike.attr.hash_algorithm",
              "isakmp.ike.attr.authentication_method", "isakmp.ike.attr.group_description"]
    expected = tshark_fields(capture, "frame.number == 1", *fields)[0]
    app = create_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        labels = tree_labels(app.query_one("#detail-tree", Tree))
        for attr, value in zip(("ENCRYPTION_ALGORITHM", "HASH_ALGORITHM", "AUTHENTICATION_METHOD",
                                "GROUP_DESCRIPTION"), expected, strict=True):
            line = next(x for x in labels if x.startswith(attr + " = "))
            assert line.endswith(f"({value})"), line
            assert re.match(rf"{attr} = [A-Z][A-Z0-9_]+ \(", line), f"value not named: {line}"


@sync
async def test_escape_always_leaves_the_filter_input() -> None:
    # With no filter applied, Esc used to do nothing: focus stayed in the input and `q` was typed in.
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        inp = app.query_one("#filter", Input)
        await pilot.press("slash")
        assert inp.has_focus
        await pilot.press("escape")
        await pilot.pause()
        assert not inp.has_focus and app.query_one(PacketTable).has_focus
        await pilot.press("slash", *"esp src=1")  # typed, not applied
        await pilot.press("escape")
        await pilot.pause()
        assert not inp.has_focus and inp.value == ""
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code is not None or not app.is_running  # q quit the app, it was not typed


@sync
async def test_an_invalid_filter_leaves_no_stale_rows_or_count() -> None:
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.query_one(PacketTable)
        await pilot.press("slash", *"esp", "enter")
        await loaded(pilot)
        assert 0 < len(table.view) < len(table.rows)
        await pilot.press("slash", "ctrl+a", *"spi=zz", "enter")  # not a hex SPI
        await loaded(pilot)
        count = str(app.query_one("#filter-count").render())
        assert "invalid" in count and "filter:" not in count
        assert len(table.view) == 0  # not the previous filter's rows
        await pilot.press("escape")
        await loaded(pilot)
        assert len(table.view) == len(table.rows) and "invalid" not in str(app.query_one("#filter-count").render())


@sync
async def test_opens_on_findings_when_something_is_wrong() -> None:
    app = create_app(SAMPLES / "dead-peer" / "capture.pcapng")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert any(f.severity.name in ("ERROR", "WARNING") for f in app.session.findings)
        assert app.query_one(TabbedContent).active == "findings"
    app = create_app(CAPTURE, KEYS)  # info only: the packets, as before
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.query_one(TabbedContent).active == "packets"
        status = str(app.query_one("#status").render())
        # The counts are frames, and the status line says so (it read as a breakdown of the keys).
        assert re.search(r"\b6 keys\b.*frames: IKE 16 ESP 18", status), status


@sync
async def test_several_captures_and_enter_keeps_the_ike_sa_open() -> None:
    app = create_app([CAPTURE, CAPTURE], KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.session.stats.frames == 68 and "+1" in str(app.query_one("#status").render())
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        tree = await tree_cursor_to(pilot, "ike")
        node = tree.cursor_node
        assert node.is_expanded
        await pilot.press("enter")
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "sa-detail"
        assert node.is_expanded  # opened, not collapsed


@sync
async def test_whole_keys_with_the_tree_hidden() -> None:
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        tree = await tree_cursor_to(pilot, "child")
        child = app.session.table.child_sas[tree.current_ref.key]
        await pilot.press("enter", "t", "K")
        await pilot.pause()
        detail = app.query_one(SaDetail)
        shown = "".join(detail.as_text(width=detail.size.width).split())  # folded lines joined
        for flow in child.flows(app.session.table):
            k = app.session.keys.esp_lookup(flow.src, flow.dst, flow.spi)
            assert k.enc_key.hex() in shown, "a key was cut"
        assert len(list(app._notifications)) <= 2  # toasts replace each other


@sync
async def test_x_on_an_ike_frame_shows_the_decrypted_sk_payload() -> None:
    from ipsecscope.decode.ike import parse_payload_chain
    from ipsecscope.tui.widgets.packet_detail import HexView

    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        table = app.query_one(PacketTable)
        table.focus()
        msg = next(m for m in app.session.ike_messages.values() if m.decrypted and m.inner)
        table.cursor = table.position_of(msg.frame)
        await pilot.pause()
        await pilot.press("x")
        await pilot.pause()
        data = app.query_one(HexView).data
        detail = app.session.detail(msg.frame)
        assert data and data not in detail.raw  # not the wire bytes
        sk = next(p for p in msg.payloads if p.type in (46, 53))
        inner, err = parse_payload_chain(sk.first_payload, data, 2, 0)
        assert err is None and [p.type for p in inner] == [p.type for p in msg.inner]


@sync
async def test_skipped_key_rows_are_a_notice(tmp_path: Path) -> None:
    good = (HEALTHY / "keys" / "esp_sa").read_text()
    bad_row = '"IPv4","198.18.9.9","198.18.9.8","0x0badbad0","AES-CBC [RFC3602]","0x0102","NULL",""\n'
    keys = tmp_path / "esp_sa"
    keys.write_text(good + bad_row)
    app = create_app(CAPTURE, [keys])
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        notes = [n for n in app._notifications if n.title == "Key rows skipped"]
        assert notes and "esp_sa:" in notes[0].message and "0102" not in notes[0].message
        esp = [r for r in app.session.rows if r.kind == "ESP"]
        assert esp and all(r.status == "decrypted" for r in esp)  # the good rows are used


@sync
async def test_an_empty_packet_list_says_why() -> None:
    # A filter that matches nothing left a blank pane under the header, as did an invalid one.
    from ipsecscope.tui.widgets.packet_table import EMPTY_FILTERED, INVALID

    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("2", "slash", *"esp.spi == 1", "enter")
        await loaded(pilot)
        assert not app.query_one(PacketTable).view
        assert any(EMPTY_FILTERED in ln for ln in screen_lines(app)), screen_lines(app)
        await pilot.press("slash", "ctrl+u", *"spi=nothex", "enter")
        await loaded(pilot)
        assert any(INVALID in ln for ln in screen_lines(app)), screen_lines(app)
        await pilot.press("slash", "escape")
        await loaded(pilot)
        assert not any(INVALID in ln or EMPTY_FILTERED in ln for ln in screen_lines(app))


@sync
async def test_add_keys_dialog_title_is_whole_at_80_columns() -> None:
    # The list of key formats was one line, cut at 'swanctl/charon log, i' on 80 columns.
    app = create_app(CAPTURE, [])
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, KeyFileScreen)
        text = " ".join(ln.strip(" │") for ln in screen_lines(app))
        assert "ip xfrm, JSON)" in " ".join(text.split()), text


@sync
async def test_an_inline_filter_error_leaves_the_typed_filter_visible() -> None:
    # At 80 columns the error beside the bar took all of it: what was typed could not be seen.
    app = create_app(CAPTURE, [])
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("2", "slash", *"qqqzzz")
        await pilot.pause()
        inp = app.query_one("#filter", Input)
        assert inp.has_class("invalid")
        assert inp.region.width >= 20
        bar = next(ln for ln in screen_lines(app) if "✗" in ln)
        assert "qqqzzz" in bar, bar


@sync
async def test_a_capture_without_ipsec_says_so_in_the_tree_and_sa_detail() -> None:
    from conftest import DATA

    app = create_app(DATA / "bad" / "header-only.pcap", [])
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("4")
        await pilot.pause()
        text = "\n".join(screen_lines(app))
        assert "no IPsec SA in this c\u2595" not in text  # the narrow tree cut its note
        assert "no IPsec SA" in text
        # the words every pane uses for it (panes.empty_text)
        assert "No frames: the capture is valid and holds no packets." in app.query_one(SaDetail).as_text()
        assert "Choose an SA" not in app.query_one(SaDetail).as_text()


@sync
async def test_a_capture_with_no_frames_or_no_ipsec_says_why_in_every_pane(tmp_path: Path) -> None:
    """A valid capture with no packets showed a blank packet list, '✓ no problems', a timeline
    from '1970-01-01' and 'nothing looks wrong'; one with no IPsec the same but for the list."""
    from conftest import DATA
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.utils import wrpcap
    from textual.widgets import Static

    plain = tmp_path / "dns.pcap"
    wrpcap(str(plain), [Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5353, dport=53) / Raw(b"x" * 20)] * 3)
    for cap, why, status in ((DATA / "bad" / "header-only.pcap", "No frames: the capture is valid", "no frames"),
                             (plain, "No IPsec in this capture: 3 frames", "no IPsec")):
        app = create_app(cap, [])
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            text = "\n".join(screen_lines(app))
            assert status in text.splitlines()[0] and "no problems" not in text
            if cap.name == "header-only.pcap":  # the list itself says why it is empty
                assert why in text, text
            else:  # a plain IP frame's addresses fill Source and Destination (they were blank)
                assert re.search(r"^\S*\s+1\s+10\.0\.0\.1\s+10\.0\.0\.2\s+DNS", text.splitlines()[5].split("▕")[-1]), text
            await pilot.press("1")
            await pilot.pause()
            lanes = " ".join(str(w.render()) for w in app.query("#timeline-lanes Static"))
            assert why in lanes, lanes
            assert "1970" not in "\n".join(screen_lines(app))
            await pilot.press("3")
            await pilot.pause()
            note = str(app.query_one("#finding-explain", Static).render())
            assert note.startswith("No findings.") and why in note and "nothing looks wrong" not in note



ISAKMP4500 = public("tcpdump/isakmp4500.pcap")  # third-party: materialised at test time (tests/public_data.py)


@sync
async def test_packet_list_names_frames_that_are_not_ip() -> None:
    """ARP frames beside the IKE ones had an empty Info column; they read 'ARP' (as tshark's
    Protocol column), from the row store's EtherType, on screen at 80 columns too."""
    cap = ISAKMP4500
    app = create_app(cap)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("2")  # it may have opened on Findings
        await pilot.pause()
        table = app.query_one(PacketTable)
        assert [r.info for r in table.rows if r.frame in (1, 2, 13)] == ["ARP"] * 3
        lines = screen_lines(app)
        assert any(re.search(r"▕\s+1\s.*\bARP\b", ln) for ln in lines), lines


@sync
async def test_packet_list_shows_a_non_ip_frames_macs_and_ip_filters_skip_it(tmp_path: Path) -> None:
    """ARP/LLDP rows had blank Source/Destination; the packet list shows their MACs (read from the
    capture on display, as tshark's columns), while ip.src never matches them."""
    from test_packets_cli import _link_capture

    cap = _link_capture(tmp_path / "lan.pcap")
    app = create_app(cap)
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot)
        table = app.query_one(PacketTable)
        text = {r.frame: table._render_row(r, 160, False).text for r in table.rows}
        assert "02:00:00:00:00:01" in text[1] and "ff:ff:ff:ff:ff:ff" in text[1] and "ARP" in text[1]
        assert "02:00:00:00:00:01" in text[2] and "01:80:c2:00:00:0e" in text[2] and "LLDP" in text[2]
        assert "198.18.0.1" in text[7]
        assert [r.frame for r in table.rows if not r.src] == [1, 2, 3, 4, 5, 6]  # the rows keep no MAC
        await pilot.press("slash", *"ip.src", "enter")
        await loaded(pilot)
        assert frames_in_view(table) == [7]
