"""One convention per identifier in every text view (model.idtext): IKE Message IDs in decimal as
charon logs them, an IKE SA as ``SPIi_SPIr`` (16 hex digits each), a finding's SA reference as
``src → dst ESP 0xSPI`` / ``CHILD SA #n`` / ``IKE SA …``, and a frame reference never broken
across lines. The JSON documents keep their versioned forms."""

from __future__ import annotations

import io
import json
import re
import subprocess

import pytest
from conftest import IPSECSCOPE, SAMPLES
from rich.console import Console
from rich.text import Text
from test_tui import loaded, sync

from ipsecscope.model.idtext import (
    NBSP,
    arrow_text,
    frame_ref,
    frames_ref,
    ike_sa_text,
    msg_id_text,
    sa_ref_text,
    short_addr,
)
from ipsecscope.wrap import Hanging

SYN = SAMPLES / "synthetic"


def _run(*args: object) -> str:
    return subprocess.run([*IPSECSCOPE, *map(str, args)], capture_output=True, text=True, timeout=300).stdout


def test_sa_references_read_without_colons_running_into_each_other() -> None:
    assert sa_ref_text("esp:2001:db8:40::1>2001:db8:40::2:0x60000001") == \
        "2001:db8:40::1 → 2001:db8:40::2 ESP 0x60000001"
    assert sa_ref_text("ah:198.18.0.1>198.18.0.2:0x0000abcd") == "198.18.0.1 → 198.18.0.2 AH 0x0000abcd"
    assert sa_ref_text("child:12") == "CHILD SA #12"
    key = "b1b8da23a004d038_fdaf22f6f7559b04"
    assert sa_ref_text(key) == f"IKE SA {key}"
    assert ike_sa_text(bytes.fromhex("b1b8da23a004d038"), bytes.fromhex("fdaf22f6f7559b04")) == key
    assert sa_ref_text("something:else") == "something:else"  # unknown forms shown as they are
    assert msg_id_text(3516539726) == "3516539726"


def test_findings_text_names_the_sa_readably_and_json_keeps_its_form() -> None:
    cap, keys = SYN / "ipv6-transport-natt.pcap", SYN / "ipv6-transport-natt.esp_sa"
    text = _run("findings", cap, "-k", keys)
    doc = json.loads(_run("findings", "--json", cap, "-k", keys))
    refs = [f["sa"] for f in doc["findings"] if f["sa"]]
    assert any(r.startswith("esp:2001:") for r in refs)  # the JSON form is unchanged
    for ref in refs:
        assert sa_ref_text(ref) in text
    assert "esp:" not in text and "SA child:" not in text
    assert NBSP not in text  # piped: plain spaces, grep 'frame 3' finds them


def test_ikev1_message_ids_are_decimal_in_summary_as_in_every_other_view() -> None:
    cap = SAMPLES / "ikev1-dead-peer" / "capture.pcapng"
    doc = json.loads(_run("summary", "--json", cap))
    ids = {m["msg_id"] for m in doc["ike"] if m["version"] == 1 and m["msg_id"]}
    assert ids  # Quick Mode / Informational carry random 32-bit IDs
    text = _run("summary", cap)
    assert not re.search(r"\b0x[0-9a-f]{8}\b", text.split("ESP flows")[0])  # no hex in the IKE table
    for mid in ids:
        assert re.search(rf"\b{mid}\b", text), mid
    sas = _run("sas", cap, "-k", SAMPLES / "ikev1-dead-peer" / "charon-left.log")
    assert any(f"#{mid} " in sas for mid in ids)  # the same number as 'sas' writes


@pytest.mark.parametrize("width", [20, 24, 31, 40])
def test_a_frame_reference_is_never_split(width: int) -> None:
    text = Text(f"0.005s CHILD #1 427e7d84/15b69dc5 IKE_AUTH created  [{frame_ref(3)}] and {frames_ref([11, 12])}")
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(Hanging(text, 4))
    out = buf.getvalue()
    assert NBSP not in out
    assert "[frame 3]" in out and "frames 11," in out, out


def test_summary_records_at_80_columns_keep_msgid_and_ike_sa_whole() -> None:
    """summary's records (a terminal too narrow for its table) broke 'msgid' / '583681893' apart
    and named the IKE SA 'SPIs x y' where every other view writes x_y."""
    from test_text_layout import _pty_run

    cap = SAMPLES / "ikev1-dead-peer" / "capture.pcapng"
    doc = json.loads(_run("summary", "--json", cap))
    narrow = _pty_run("summary", cap)
    for m in doc["ike"]:
        assert f"msgid {m['msg_id']}" in narrow, narrow
        assert f"IKE SA {m['spi_i']}_{m['spi_r']}" in narrow.replace("\n    ", " "), narrow
    assert NBSP not in narrow


def test_a_direction_reads_with_the_same_arrow_in_finding_texts_as_in_the_sa_line() -> None:
    """A finding's title wrote ``198.18.0.1 -> 198.18.0.2`` one line above its SA line's
    ``198.18.0.1 → 198.18.0.2 ESP 0x…``. Text views write ``→`` (model.idtext.arrow_text); the
    ``ipsecscope.findings/1`` JSON keeps the values it always had."""
    cap = SAMPLES / "path-impairments" / "capture.pcapng"
    text = _run("findings", cap)
    assert "ESP replay 198.18.0.1 → 198.18.0.2:" in text
    assert " -> " not in text
    doc = json.loads(_run("findings", "--json", cap))
    assert doc["schema"] == "ipsecscope.findings/1"
    assert any(f["title"].startswith("ESP replay 198.18.0.1 -> 198.18.0.2:") for f in doc["findings"])
    assert arrow_text("a -> b <-> c x->y") == "a → b <-> c x->y"


@sync
async def test_tui_findings_and_timeline_write_the_arrow_as_the_sa_line_does() -> None:
    from textual.widgets import DataTable, Static

    from ipsecscope.tui.app import create_app
    from ipsecscope.tui.widgets.timeline import finding_events

    d = SAMPLES / "path-impairments"
    app = create_app(d / "capture.pcapng", [d / "charon-left.log"])
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        view = app.query_one("#findings-view")
        table = app.query_one("#findings-table", DataTable)
        titles = [str(table.get_row_at(i)[2]).replace("\n", " ") for i in range(len(view.findings))]
        assert any("198.18.0.1 → 198.18.0.2" in t for t in titles), titles
        assert not any(" -> " in t for t in titles), titles
        for i in range(len(view.findings)):
            table.move_cursor(row=i)
            await pilot.pause()
            assert " -> " not in str(app.query_one("#finding-explain", Static).render())
        assert not any(" -> " in e.text for e in finding_events(view.findings))


def test_short_addr_cuts_in_the_middle_keeping_the_host_end() -> None:
    """An address too long for its cell keeps its first group and its end at group boundaries
    (the packet list cut '02:00:00:00:0c:05' to '02:00:00:00:0c…' and '2001:db8:0:1::a:1' to
    '2001:db8:0:1:…': two hosts of one network read the same)."""
    assert short_addr("2001:db8:0:1::a:1", 40) == "2001:db8:0:1::a:1"  # fits: whole
    assert short_addr("2001:db8:0:1::a:1", 13) == "2001…0:1::a:1"
    assert short_addr("2003:51:6012::2", 11) == "2003:51…::2"  # '::' stays with its end
    assert short_addr("02:00:00:00:0c:05", 15) == "02…00:00:0c:05"
    assert short_addr("02:00:00:00:0c:07", 15) == "02…00:00:0c:07"
    assert short_addr("198.18.40.10", 9) == "198…40.10"
    assert short_addr("[2001:db8:40::2]:4500", 15) == "[2001…::2]:4500"
    assert short_addr("moneybin.duckburg.disney.com", 20) == "moneybin…disney.com"
    assert short_addr("abcdefghijklmnopqrstuvwxyz", 10) == "abcde…wxyz"
    hosts = [f"2001:db8:0:1::{i:x}:1" for i in range(1, 40)] + [f"02:00:00:00:0c:{i:02x}" for i in range(40)]
    for w in (11, 13, 15):
        cut = [short_addr(h, w) for h in hosts]
        assert all(len(c) <= w for c in cut)
        assert len(set(cut)) == len(hosts), w  # hosts differing in their last groups stay apart
