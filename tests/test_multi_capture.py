"""Several captures read into one session are numbered as one, as ``mergecap -a`` joins them: a
later file's frames continue after the earlier ones'. Before, each file restarted at frame 1, so
two frames shared a number: ``packets a b -Y 'frame.number == 5'`` listed both, a filter matched
a frame of one file by the fields of the other's, and the packet detail showed the last file's
frame whichever row was selected. The oracle is tshark over ``mergecap -a`` of the same files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import CORPUS, IPSECSCOPE, SAMPLES, needs_tshark

from ipsecscope.capture import open_capture
from ipsecscope.session import Session
from ipsecscope.tui.stream import CaptureFollower

GCM = SAMPLES / "healthy-gcm"
CBC = SAMPLES / "cbc-sha2-pfs"

FILTERS = [
    "frame.number == 5",
    "frame.number > 20 && esp",
    "icmp.type == 8",
    "isakmp.exchtype == 34",
    "esp.sequence == 1 && ip.dst == 198.18.0.2",
    "esp && !icmp",
]


def _frames(path: Path) -> int:
    with open_capture(path) as r:
        return sum(1 for _ in r)


def _packets(files: list[Path], keys: list[Path], flt: str | None = None) -> list[dict]:
    cmd = [*IPSECSCOPE, "packets", *(["-Y", flt] if flt else []), *map(str, files), "-k", *map(str, keys), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [json.loads(x) for x in r.stdout.splitlines()]


@needs_tshark
def test_packets_over_two_captures_select_what_tshark_selects_on_mergecap_a(tmp_path: Path) -> None:
    merged = tmp_path / "merged.pcapng"
    subprocess.run(["mergecap", "-a", "-w", str(merged), str(GCM / "capture.pcapng"), str(CBC / "capture.pcapng")],
                   check=True)
    prof = tmp_path / "profile"
    prof.mkdir()
    for table in ("esp_sa", "ikev2_decryption_table"):
        (prof / table).write_text("".join((d / "keys" / table).read_text() for d in (GCM, CBC)))
    n1, n2 = _frames(GCM / "capture.pcapng"), _frames(CBC / "capture.pcapng")
    keys = [GCM / "keys", CBC / "keys"]
    rows = _packets([GCM / "capture.pcapng", CBC / "capture.pcapng"], keys)
    assert [d["frame"] for d in rows] == list(range(1, n1 + n2 + 1))  # one row a frame, each number once
    selected = 0
    for flt in FILTERS:
        out = subprocess.run(
            ["tshark", "-n", "-r", str(merged), "-o", "esp.enable_encryption_decode:TRUE",
             "-Y", flt.replace("isakmp.exchtype", "isakmp.exchangetype"), "-T", "fields", "-e", "frame.number"],
            env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(prof)), capture_output=True, text=True, check=True).stdout
        expected = [int(x) for x in out.split()]
        got = [d["frame"] for d in _packets([GCM / "capture.pcapng", CBC / "capture.pcapng"], keys, flt)]
        assert got == expected, flt
        selected += any(f > n1 for f in expected) and any(f <= n1 for f in expected)
    assert selected >= 2  # filters that pick frames from both files, or the test proves little


def test_session_maps_each_frame_back_to_its_file_and_rereads_it_there() -> None:
    """The second capture is gzip'd (the general path, not the fast loop) and the first is not:
    both paths number after the frames before them."""
    first, second = GCM / "capture.pcapng", CORPUS / "esp-bug-12671.pcapng.gz"
    both = Session()
    both.load(first)
    both.load(second)
    n1 = _frames(first)
    alone = Session()
    alone.load(second)
    assert len(both.rows) == n1 + len(alone.rows)
    assert both.frame_origin(1) == (first, 1)
    assert both.frame_origin(n1) == (first, n1)
    assert both.frame_origin(n1 + 1) == (second, 1)
    assert both.frame_origin(n1 + len(alone.rows) + 1) is None and both.frame_origin(0) is None
    for k in (1, len(alone.rows)):
        assert both.row(n1 + k).frame == n1 + k
        assert both.row(n1 + k).info == alone.row(k).info
        assert both.detail(n1 + k).raw == alone.detail(k).raw != b""
    assert both.detail(1).raw != alone.detail(1).raw
    # what the analysis says about the second file's traffic names that file's frames
    flows = [f for f in both.table.flows.values() if f.spi in {0x70883C2, 0xC254FE64} or f.first_frame > n1]
    assert flows and all(f.first_frame > n1 for f in flows)


@pytest.mark.parametrize("order", ["gcm-first", "cbc-first"])
def test_streamed_captures_continue_the_numbering(order: str) -> None:
    """Standard input / --follow read several captures through the TUI's follower: same numbering."""
    files = [GCM / "capture.pcapng", CBC / "capture.pcapng"]
    if order == "cbc-first":
        files.reverse()
    f = CaptureFollower(files)
    f.open()
    f.start()
    f._thread.join(60)
    assert f.finished and f.error is None
    frames = [r.frame for r in f.session.rows]
    assert frames == list(range(1, _frames(files[0]) + _frames(files[1]) + 1))
    assert f.session.frame_origin(_frames(files[0]) + 1) == (files[1], 1)


def _split(src: Path, at: int, tmp_path: Path) -> list[Path]:
    """``src`` cut in two after frame ``at``, as a ring buffer (`tcpdump -C`, `dumpcap -b`) writes it."""
    a, b = tmp_path / "part1.pcapng", tmp_path / "part2.pcapng"
    subprocess.run(["editcap", "-r", str(src), str(a), f"1-{at}"], check=True, capture_output=True)
    subprocess.run(["editcap", "-r", str(src), str(b), f"{at + 1}-{10**9}"], check=True, capture_output=True)
    return [a, b]


@needs_tshark
@pytest.mark.parametrize("sample, at", [
    ("ike-frag-cert", 3),   # IKE_AUTH request in two SKF fragments (RFC 7383): frame 3 | frame 4
    ("mtu-small-link", 12),  # an ESP packet in two IP fragments: first fragment frame 12 | the rest
])
def test_pieces_straddling_two_files_of_one_capture_are_joined(tmp_path: Path, sample: str, at: int) -> None:
    """Files given together are one capture: a message whose pieces straddle the boundary between
    a ring buffer's files was given up at the end of the first file, so `packets` said "fragment
    2/2 lost" beside the reassembled message and `findings` reported ESP-FRAGMENT-LOST and
    malformed IP for an ESP packet that arrived whole. Split or not, the answers are the same."""
    whole, keys = SAMPLES / sample / "capture.pcapng", SAMPLES / sample / "keys"
    parts = _split(whole, at, tmp_path)
    assert [r["info"] for r in _packets(parts, [keys])] == [r["info"] for r in _packets([whole], [keys])]

    def findings(files: list[Path]) -> list[tuple]:
        r = subprocess.run([*IPSECSCOPE, "findings", *map(str, files), "-k", str(keys), "--json"],
                           capture_output=True, text=True)
        assert r.returncode in (0, 1), r.stderr  # 1: a warning or error was found
        out = r.stdout
        return [(f["code"], f["title"], f["frames"]) for f in json.loads(out)["findings"]]

    assert findings(parts) == findings([whole])
    streamed = CaptureFollower(parts, [keys])  # the TUI's reader of several files
    streamed.open()
    streamed.start()
    streamed._thread.join(60)
    assert streamed.finished and streamed.error is None
    assert [r.info for r in streamed.session.rows] == [r.info for r in Session.from_files([whole], [keys]).rows]
