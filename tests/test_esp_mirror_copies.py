"""ESP copies a mirror (SPAN) port queues behind later packets are the capture's, and they are not
packets sent (tests/data/esp-duplicates/mirror-reordered.pcap, made by make.py there with
samples/synthetic/espgen; keys mirror.keys.json, mirror.esp_sa for tshark).

A SPAN session of a router's ingress and egress ports hands the capture each packet twice, the
second copy up to a few milliseconds later: behind later packets of the same flow. esp_flow kept
only the flow's previous packet, so every copy that did not follow its original at once was a
replay (ESP-REPLAY, 34 and 27 'duplicate sequence numbers' on the tunnel's two flows). It keeps the
flow's last 16 numbers now (a fixed ring per flow). And a flow's ``packets`` counts frames, as
tshark does (every copy is a frame, tshark's ESP sequence analysis flags it "repeated"); what the
sender sent is ``packets - capture_duplicates`` (EspFlow.sent): ESP-ONE-WAY, ESP-RETURN-STOPPED
and the stats rates count that (RFC 4303 §3.3.3: a sender never sends a sequence number twice).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import DATA, SAMPLES, needs_tshark
from conftest import field_cli as cli

from ipsecscope.capture import open_capture
from ipsecscope.decode.demux import Decoder
from ipsecscope.model.packets import EspPacket
from ipsecscope.model.sa import EspFlow
from ipsecscope.state.esp_flow import RING, SeqTracker, account
from ipsecscope.state.tracker import Tracker
from tests.test_decrypt_tshark import tshark_decrypted

HERE = DATA / "esp-duplicates"
CAP = HERE / "mirror-reordered.pcap"
KEYS = HERE / "mirror.keys.json"
LATE, ALTERED = 153, 84  # request 10's copy 30 ms late; reply 20's copy with another ICV
FLOWS = {"0x5a000001": (80, 1, 39), "0x5a000002": (80, 1, 39), "0x5a000003": (10, 0, 5)}


def _tshark_esp() -> list[tuple[int, float, str, int]]:
    out = subprocess.run(["tshark", "-n", "-r", str(CAP), "-Y", "esp", "-T", "fields", "-e", "frame.number",
                          "-e", "frame.time_relative", "-e", "esp.spi", "-e", "esp.sequence"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [(int(a), float(b), c, int(d)) for a, b, c, d in (ln.split("\t") for ln in out.splitlines())]


def _findings(*args: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in json.loads(cli("findings", *args, "--json"))["findings"]:
        out.setdefault(f["code"], []).append(f)
    return out


@needs_tshark
def test_tshark_sees_copies_behind_later_packets() -> None:
    esp = _tshark_esp()
    assert len(esp) == 170
    seen: dict[tuple[str, int], int] = {}
    behind = 0  # copies with a later packet of their flow between them and their original
    for fr, _t, spi, seq in esp:
        if (spi, seq) in seen:
            behind += any(s == spi and q > seq and seen[(s, q)] < fr for (s, q) in seen)
        else:
            seen[(spi, seq)] = fr
    assert len(seen) == 85 and behind >= 40
    assert esp[LATE - 1][2:] == ("0x5a000001", 10) and esp[ALTERED - 1][2:] == ("0x5a000002", 20)


@pytest.mark.parametrize("keys", [False, True])
def test_delayed_copies_are_capture_duplicates(keys: bool) -> None:
    extra = ("-k", str(KEYS)) if keys else ()
    f = _findings(str(CAP), *extra)
    (d,) = f["CAPTURE-DUPLICATES"]
    assert d["title"] == "83 ESP packets captured twice (the same bytes within 20 ms)"
    assert "queue a copy behind later ones" in d["explanation"]
    # the copy 30 ms late and the copy with other bytes: replays, one per flow
    assert sorted((r["sa"], tuple(r["frames"])) for r in f["ESP-REPLAY"]) == [
        ("esp:198.18.30.1>198.18.30.2:0x5a000001", (LATE,)), ("esp:198.18.30.2>198.18.30.1:0x5a000002", (ALTERED,))]
    flows = {x["spi"]: x for x in json.loads(cli("sas", str(CAP), *extra, "--json"))["flows"]}
    assert {s: (x["packets"], x["duplicates"], x["capture_duplicates"]) for s, x in flows.items()} == FLOWS


def test_one_way_and_rates_count_packets_sent() -> None:
    """The one-way SA sent 5 packets (10 frames): ESP-ONE-WAY says 5, stats' rate counts 5, its
    "packets" 10 as tshark's frame count."""
    (o,) = _findings(str(CAP))["ESP-ONE-WAY"]
    assert o["title"] == "One-way ESP: 198.18.30.3 -> 198.18.30.4 (5 packets), nothing back"
    assert "carries 5 ESP packets" in o["explanation"]
    st = {x["spi"]: x for x in json.loads(cli("stats", str(CAP), "--json"))["flows"]}
    one = st["0x5a000003"]
    assert one["packets"] == 10 and sum(one["io"]) == 10
    assert one["rate_pps"] == pytest.approx(5 / (one["last_time"] - one["first_time"]), abs=1e-3)


def test_return_stopped_counts_packets_sent() -> None:
    """samples/ikev1-dead-peer captured twice: 198.18.0.1 sent 3 ESP packets with no reply (as in
    the sample), not 6."""
    sample = _findings(str(SAMPLES / "ikev1-dead-peer" / "capture.pcapng"))["ESP-RETURN-STOPPED"]
    twice = _findings(str(DATA / "ikev1-copies" / "captured-twice.pcap"))["ESP-RETURN-STOPPED"]
    assert [x["title"] for x in twice] == [x["title"] for x in sample]
    assert "sent 3 more packets" in twice[0]["title"]


def test_general_path_counts_as_the_analysis_path() -> None:
    """The tracker packet by packet (live, the TUI) gives the counts the fast loop's bulk runs give."""
    tr = Tracker()
    dec = Decoder()
    with open_capture(CAP) as r:
        for raw in r:
            p = dec.decode(raw)
            if isinstance(p, EspPacket):
                tr.on_esp(p)
    got = {f"0x{f.spi:08x}": (f.packets, f.duplicates, f.capture_duplicates) for f in tr.table.flows.values()}
    assert got == FLOWS
    assert {f.spi: (f.sent, f.unanswered_tail) for f in tr.table.flows.values()} == {
        0x5A000001: (41, 0), 0x5A000002: (41, 1), 0x5A000003: (5, 5)}


def test_the_ring_remembers_the_last_16_numbers() -> None:
    """A copy of one of the flow's last RING numbers is the capture's; an older one (its slot holds
    a later number now) is a replay: the bound that keeps the memory per flow fixed."""
    flow, st = EspFlow("198.18.30.1", "198.18.30.2", 1), SeqTracker()
    for n in range(1, 41):
        account(flow, st, n, None, n, n * 1e-4, 100, n)
    assert account(flow, st, 40 - RING + 1, None, 41, 0.0041, 100, 40 - RING + 1) == "copy"
    assert account(flow, st, 40 - RING, None, 42, 0.0042, 100, 40 - RING) == "dup"
    assert (flow.capture_duplicates, flow.duplicates) == (1, 1)


@needs_tshark
def test_every_frame_is_decrypted_as_tshark_decrypts_it(tmp_path) -> None:
    from ipsecscope.api import iter_decrypted

    theirs = tshark_decrypted(CAP, HERE / "mirror.esp_sa", tmp_path)
    ours = {p.frame: p for p in iter_decrypted(CAP, [KEYS])}
    assert sorted(theirs) == sorted(ours) and len(ours) == 170
    assert [fr for fr, p in ours.items() if p.status != "ok"] == [ALTERED]
    assert all(theirs[fr][:len(p.inner)] == p.inner for fr, p in ours.items() if fr != ALTERED)
