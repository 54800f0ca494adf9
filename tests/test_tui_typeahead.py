"""Keys typed ahead: what a person types reaches the widget it was meant for, in the order typed,
whatever the app was doing when the terminal delivered it.

A terminal hands the app whatever was typed since its last read. While the app is busy (a capture
loading, a slow machine) that is several keys at once, and Textual queues them all before it acts
on the first: a key that moves the focus (`/` to the filter) must have moved it before the next
key is routed. Pilot's ``press`` waits for the app to be idle after every key and never sees this;
:func:`typed_at_once` hands the app one read's keys the way the terminal driver does (the same
parser, then every event queued before any is handled). The loader is stopped through the app's
test hook (tui.loading.Hold): events, no timing.
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import termios
import time
import tty

import pytest
from conftest import SAMPLES, needs_tshark
from test_tui import CAPTURE, KEYS, frames_in_view, loaded, sync, tshark_fields
from test_tui_stats import stats_json
from textual import events
from textual._xterm_parser import XTermParser  # the terminal driver's own parser
from textual.drivers.linux_driver import LinuxDriver
from textual.widgets import Input, TabbedContent

from ipsecscope.tui.app import create_app
from ipsecscope.tui.loading import Hold
from ipsecscope.tui.screens.export import ExportScreen
from ipsecscope.tui.screens.modals import HelpScreen
from ipsecscope.tui.terminal import read_typed_ahead, typed_ahead_keys
from ipsecscope.tui.widgets.findings import FindingsView
from ipsecscope.tui.widgets.packet_table import PacketTable

DEAD_PEER = SAMPLES / "dead-peer" / "capture.pcapng"  # a warning: a load that ends opens on Findings
ESCAPE = events.Key("escape", "\x1b")  # a lone ESC is told from a sequence by a pause: build it


async def typed_at_once(pilot, *reads: str | events.Key) -> None:
    """Queue every key of ``reads`` before the app handles any (as one read from the terminal
    delivers them), then wait until the app has handled them all."""
    app = pilot.app
    for read in reads:
        for key in [read] if isinstance(read, events.Key) else XTermParser().feed(read):
            key.set_sender(app)
            app.post_message(key)
    await pilot.pause()
    await pilot.pause()


def filter_input(app) -> Input:
    return app.query_one("#filter", Input)


async def settled(pilot) -> None:
    """Until no worker runs (a filter run a newer one replaced ends cancelled: not a failure)."""
    while any(w.is_running for w in pilot.app.workers):
        await asyncio.sleep(0.02)
    await pilot.pause()


async def until_loaded(pilot, hold: Hold) -> None:
    hold.release()
    while pilot.app.loading is not None or pilot.app.session is None:
        await asyncio.sleep(0.02)
    await settled(pilot)


@needs_tshark
@pytest.mark.parametrize("when", ["loaded", "loading"])
@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
@sync
async def test_a_filter_typed_right_after_slash_is_the_filter(when: str, size: tuple[int, int]) -> None:
    # Before: every key after `/` went to the packet list and ran the app's keys there: e opened
    # the Export dialog, 1 and 2 switched tabs, and the filter input stayed empty.
    expected = [int(r[0]) for r in tshark_fields(CAPTURE, "esp && ip.src == 198.18.0.2", "frame.number")]
    app = create_app(CAPTURE, KEYS)
    app.load_hold = hold = Hold(windows=0, before=True)  # stopped before it reads a frame
    async with app.run_test(size=size) as pilot:
        await asyncio.to_thread(hold.wait_stopped, 1)
        if when == "loaded":
            await until_loaded(pilot, hold)
        await typed_at_once(pilot, "/esp src=198.18.0.2\r")
        if when == "loading":
            await until_loaded(pilot, hold)
        await settled(pilot)
        assert not isinstance(app.screen, ExportScreen)
        assert app.query_one(TabbedContent).active == "packets"
        assert filter_input(app).value == "esp src=198.18.0.2" and app.filter.text == "esp src=198.18.0.2"
        assert frames_in_view(app.query_one(PacketTable)) == expected
        assert app.query_one(PacketTable).has_focus  # Enter applied it and left the input


@sync
async def test_the_end_of_a_load_leaves_a_filter_being_typed_alone() -> None:
    # A capture with a warning opens on Findings when it is read; but not once the user went to the
    # filter meanwhile: the rest of what they typed went to the Findings table.
    app = create_app(DEAD_PEER)
    app.load_hold = hold = Hold(windows=0, before=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await asyncio.to_thread(hold.wait_stopped, 1)
        await pilot.press("slash", *"ike")
        await until_loaded(pilot, hold)
        await pilot.press(*" info")
        await pilot.pause()
        inp = filter_input(app)
        assert app.query_one(TabbedContent).active == "packets" and inp.has_focus
        assert inp.value == "ike info"
        assert str(app.query_one(TabbedContent).get_tab("findings").label).startswith("Findings (")
    app = create_app(DEAD_PEER)  # nothing typed: it still opens on what is wrong
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        assert app.query_one(TabbedContent).active == "findings"


@needs_tshark
@sync
async def test_a_new_look_at_the_session_keeps_the_filter_being_typed() -> None:
    # The filter in force is run again over the rows of each new look (the end of a load, a live
    # refresh every second): it used to write its own text back into the input, over what the
    # user was typing there.
    app = create_app(CAPTURE, KEYS)
    app.load_hold = hold = Hold(windows=0, before=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await asyncio.to_thread(hold.wait_stopped, 1)
        # (the input selects its text when focused: End, then type on after it)
        await pilot.press("slash", *"esp", "enter", "slash", "end", *" src=198.18.0.2")
        await until_loaded(pilot, hold)
        inp = filter_input(app)
        assert inp.has_focus and inp.value == "esp src=198.18.0.2"
        table = app.query_one(PacketTable)
        assert app.filter.text == "esp" and {table.rows[i].kind for i in table.view} == {"ESP"}
        await pilot.press("enter")
        await settled(pilot)
        expected = tshark_fields(CAPTURE, "esp && ip.src == 198.18.0.2", "frame.number")
        assert app.filter.text == "esp src=198.18.0.2" and frames_in_view(table) == [int(r[0]) for r in expected]


@sync
async def test_keys_after_escape_a_tab_key_or_a_dialog_go_where_they_were_meant() -> None:
    app = create_app(DEAD_PEER)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        # On the packet list, 3 and Enter in one read: Findings' Enter (the evidence), not the packet
        # list's (the frame's detail).
        await pilot.press("2")
        await typed_at_once(pilot, "3\r")
        assert app.query_one(TabbedContent).active == "packets"
        assert app.filter.text.startswith("finding=") and app.query_one(PacketTable).has_focus
        # Two tab keys at once: the second tab, its widget focused (the first tab came back with
        # nothing focused: Textual's "a widget in this pane got the focus" message arrived late).
        for keys, tab, widget in (("52", "packets", "packet-table"), ("14", "sa-detail", "sa-detail-scroll")):
            await typed_at_once(pilot, keys)
            assert (app.query_one(TabbedContent).active, getattr(app.focused, "id", None)) == (tab, widget)
        await pilot.press("2")
        # A / in the filter is the filter's (an address prefix), not the key that focuses it.
        await pilot.press("slash")
        await typed_at_once(pilot, "dst=198.18.0.0/31")
        assert filter_input(app).value == "dst=198.18.0.0/31"
        # Esc leaves the filter input before the next key is read: j moves down the packet list,
        # it is not a letter of the filter.
        table = app.query_one(PacketTable)
        await pilot.press("escape", "home")
        await pilot.press("slash", *"esp")
        await typed_at_once(pilot, ESCAPE, "j")
        assert filter_input(app).value == "" and table.has_focus and table.cursor == 1
        # A dialog's keys are its own: / ? Esc q on the help screen do not reach the app behind it.
        await pilot.press("question_mark")
        await pilot.pause()
        await typed_at_once(pilot, "/1")
        assert isinstance(app.screen, HelpScreen) and filter_input(app).value == ""
        assert app.query_one(TabbedContent).active == "packets"
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen) and app.is_running
        assert app.query_one(PacketTable).has_focus
        await typed_at_once(pilot, "3")
        assert app.query_one(FindingsView).query_one("#findings-table").has_focus
        # The command palette's "Filter packets" still focuses the filter.
        await pilot.press("ctrl+p", *"Filter packets")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert filter_input(app).has_focus and app.query_one(TabbedContent).active == "packets"
        await typed_at_once(pilot, ESCAPE, "q")
    assert app.return_code == 0


@sync
async def test_f_typed_with_the_stats_key_follows_the_table_it_focused() -> None:
    # 5 focuses the conversations; the Stats tab learnt which of its tables was used last from the
    # focus message, a message later than an `f` typed with the 5: it followed the SA table's row.
    cap, keys = SAMPLES / "healthy-gcm" / "capture.pcapng", SAMPLES / "healthy-gcm" / "keys"
    doc = stats_json(cap, keys)
    app = create_app(cap, [keys])
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("5")
        await loaded(pilot)
        await pilot.press("shift+tab")  # the SA table: used last
        assert app.focused.id == "stats-sas"
        await pilot.press("2")
        await typed_at_once(pilot, "5f")
        await settled(pilot)
        assert app.query_one(TabbedContent).active == "packets"
        assert filter_input(app).value == doc["conversations"][0]["filter"]


@needs_tshark
@sync
async def test_keys_typed_after_a_widgets_own_enter_go_where_that_enter_sent_the_focus() -> None:
    # A widget's Enter acts through a message to the app (SaChosen, FrameSelected, Input.Submitted):
    # the keys read with it were routed first, by the focus before that message: `/esp` after
    # Enter on a tree row ended on SA detail (the tab the message showed after the filter had
    # taken the keys), `j` after the filter's Enter was a letter of the filter.
    app = create_app(CAPTURE, KEYS)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        tabs, table, inp = app.query_one(TabbedContent), app.query_one(PacketTable), filter_input(app)
        app.query_one("#sa-tree").focus()
        await pilot.pause()
        await typed_at_once(pilot, "\r/esp")
        assert (tabs.active, inp.has_focus, inp.value) == ("packets", True, "esp")
        await typed_at_once(pilot, "\rj")
        await settled(pilot)
        assert (app.filter.text, inp.value) == ("esp", "esp")
        assert table.has_focus and table.cursor == 1
        # the packet list's Enter focuses the detail tree; a / typed with it is still the filter's
        await typed_at_once(pilot, "\r/udp")
        assert inp.has_focus and inp.value == "udp"
        await typed_at_once(pilot, ESCAPE, "\r")
        assert app.focused.id == "detail-tree"


@sync
async def test_a_dialog_opened_by_a_key_takes_the_keys_typed_with_it() -> None:
    # The keys read with the one that opens a dialog are the dialog's, its first widget's once it
    # is mounted. (Textual 8 already did this before keys were held until each one settled: it
    # is kept as what holding them must not break -- a dialog mounts in its own task, and the
    # keys wait for its focus.)
    keys = SAMPLES / "healthy-gcm" / "keys" / "esp_sa"
    app = create_app(CAPTURE)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await typed_at_once(pilot, "e\x1b[B ")  # Export (no keys: SAs first): the next kind, findings
        assert isinstance(app.screen, ExportScreen)
        assert app.screen.query_one("#export-path", Input).value.endswith(".findings.json")
        await typed_at_once(pilot, ESCAPE)
        await typed_at_once(pilot, f"a{keys}\r")  # Add keys: the path and Enter
        await settled(pilot)
        await loaded(pilot)
        assert [str(p) for p in app.key_files] == [str(keys)]
        assert app.session is not None and len(app.session.keys) > 0


def raw(attrs: list) -> list:
    """Textual's raw mode (its Linux driver's)."""
    attrs[tty.IFLAG] = LinuxDriver._patch_iflag(attrs[tty.IFLAG])
    attrs[tty.LFLAG] = LinuxDriver._patch_lflag(attrs[tty.LFLAG])
    return attrs


def _line_discipline_took(master: int, last: bytes) -> None:
    """Wait until the pty's line discipline has processed what was written (its echo of the
    last byte is back on the master side). The kernel does that asynchronously: switched to raw
    mode first, the Enter would reach the app as it was typed, a CR (CI under load saw it once),
    which says nothing about the cooked queue this test is about."""
    seen, deadline = b"", time.monotonic() + 10
    while last not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            seen += os.read(master, 1024)
    assert last in seen, seen


def test_keys_typed_before_the_app_started_are_read_as_typed() -> None:
    # A fresh pty is cooked, as a terminal is while the shell starts the app: ICRNL makes Enter a
    # newline, ICANON keeps an unfinished line from being read, and one read returns it all.
    master, slave = pty.openpty()
    try:
        os.write(master, b"/esp\r\x1bj\x1b[Bq")
        _line_discipline_took(master, b"q")
        text, before = read_typed_ahead(slave, raw)
        assert text == "/esp\n\x1bj\x1b[Bq" and before is not None
        assert before[3] & termios.ICANON and not termios.tcgetattr(slave)[3] & termios.ICANON
        keys = [k.key for k in typed_ahead_keys(text)]
        assert keys == ["slash", "e", "s", "p", "enter", "escape", "j", "down", "q"]
    finally:
        os.close(master)
        os.close(slave)
