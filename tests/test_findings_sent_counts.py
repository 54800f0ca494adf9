"""Counts in finding texts are packets sent, not frames: a capture's copy of a packet (state/
esp_flow, CAPTURE-DUPLICATES) is no more traffic and no second ICV check.

tests/data/esp-duplicates/mirror-reordered.pcap (a mirror port: most packets captured twice, the
copies up to 3.5 ms late, behind later packets): the flow 198.18.30.2 -> 198.18.30.1 has 80 frames,
39 of them copies, and one real replay with another ICV. ESP-ICV-FAILED said "1 of 80 ESP
packets": 41 were sent."""

from __future__ import annotations

import json

import pytest
from conftest import DATA
from conftest import field_cli as cli

from ipsecscope import session_esp
from ipsecscope.session import Session

DUP = DATA / "esp-duplicates"
CAP = DUP / "mirror-reordered.pcap"


def test_icv_failed_counts_packets_sent_not_frames() -> None:
    doc = json.loads(cli("sas", "--json", str(CAP), "-k", str(DUP)))
    (flow,) = [f for f in doc["flows"] if f["src"] == "198.18.30.2"]
    sent = flow["packets"] - flow["capture_duplicates"]
    assert (flow["packets"], sent, flow["icv_failed"]) == (80, 41, 1)
    (f,) = [f for f in json.loads(cli("findings", "--json", str(CAP), "-k", str(DUP)))["findings"]
            if f["code"] == "ESP-ICV-FAILED"]
    assert f["title"].startswith(f"1 of {sent} ESP packets 198.18.30.2")


@pytest.mark.parametrize("bulk_min", [4, 1 << 30])
def test_copies_outcomes_are_the_same_packet_by_packet_and_in_bulk(monkeypatch, bulk_min) -> None:
    """state/bulk and traffic.on_sa_fields (one packet at a time) count the copies' outcomes alike."""
    monkeypatch.setattr(session_esp, "BULK_MIN", bulk_min)
    s = Session()
    s.add_key_files([DUP])
    s.load(CAP)
    got = sorted((f.src, f.copies_decrypted, f.copies_icv_failed, f.capture_duplicates) for f in s.table.flows.values())
    assert got == [("198.18.30.1", 39, 0, 39), ("198.18.30.2", 39, 0, 39), ("198.18.30.3", 5, 0, 5)]
    (f,) = [f for f in s.findings if f.code == "ESP-ICV-FAILED"]
    assert f.title.startswith("1 of 41 ESP packets")


def test_sa_detail_shows_replays_and_capture_copies_apart() -> None:
    """The SA detail's traffic table had one "Dup" column showing replays only (EspFlow.duplicates):
    the 39 copies a mirror made of each direction were nowhere, and "Dup 1" read as all there was.
    Now "Replay" (sent again: ESP-REPLAY) and "Copies" (the capture's: CAPTURE-DUPLICATES)."""
    from rich.console import Console

    from ipsecscope.tui.widgets.sa_detail import FlowTable

    s = Session()
    s.add_key_files([DUP])
    s.load(CAP)
    flows = sorted((f for f in s.table.flows.values() if f.src != "198.18.30.3"), key=lambda f: f.src)
    console = Console(width=160, record=True, color_system=None)
    console.print(FlowTable(flows, s.table.first_ts))
    lines = console.export_text().splitlines()
    head = lines[1].replace("From → To", "From→To").split()
    assert "Dup" not in head and {"Replay", "Copies"} <= set(head)
    for line, f in zip(lines[2:4], flows, strict=True):
        cells = dict(zip(head, line.replace(" → ", "→").split(), strict=False))
        assert (cells["SPI"], cells["Pkts"], cells["Replay"], cells["Copies"]) == (f"0x{f.spi:08x}", "80", "1", "39"), line
