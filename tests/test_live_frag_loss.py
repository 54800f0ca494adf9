"""Live mode over ESP whose later IP fragments are lost (ESP-FRAGMENT-LOST, RFC 4459 §2).

live5's walk (two strongSwan peers, the impairing bridge's ``drop_frag``, ``ipsecscope live`` on
the bridge's wan side) showed the live screen never saying it: an incomplete datagram was given up
only when a later fragment came 60 s on (decode.ip.Reassembler), so the loss read as a plain
sequence gap (ESP-SEQ-GAP, "packets lost before the capture point"); and once the tunnel went
quiet nothing was evaluated at all (the runner looked only when frames came). Here the frames of
tests/data/esp-frag-loss (made that way, see its make.py) are sent into a veth in a namespace of
our own, with the gateway's charon log for keys: the finding must come by the clock alone, after
the last frame, and the gap must never be announced.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from netns_peers import readable_python  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "esp-frag-loss"

# Sends a classic pcap's frames (Ethernet) out of an interface, in order, 2 ms apart.
SEND = """
import socket, struct, sys, time
data = open(sys.argv[2], "rb").read()
off, s = 24, socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
while off + 16 <= len(data):
    _, _, incl, _ = struct.unpack_from("<IIII", data, off)
    s.send(data[off + 16:off + 16 + incl])
    off += 16 + incl
    time.sleep(0.002)
"""


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")
def test_live_says_esp_fragment_lost_by_the_clock_and_never_a_gap(tmp_path):
    pcap = (DATA / "capture.pcap").read_bytes()
    assert struct.unpack_from("<IHHiIII", pcap)[6] == 1  # Ethernet, as SEND assumes
    ns = f"live-frag-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "fga", "type", "veth", "peer", "name", "fgb"],
                       check=True, capture_output=True)
        for dev in ("lo", "fga", "fgb"):
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True, capture_output=True)
        log = tmp_path / "charon.log"  # pytest's tmp dirs are root-only: the capture helper reads it
        log.write_bytes((DATA / "charon-left.log").read_bytes())
        prefix = readable_python()
        argv = " ".join([sys.executable, "-m", "ipsecscope", "live", "-i", "fga", "--headless",
                         "--duration", "25", "--keys-from-log", str(log)])
        out = tmp_path / "events.jsonl"
        with open(out, "w") as fh:
            live = subprocess.Popen(["ip", "netns", "exec", ns, "sh", "-c",
                                     f"{prefix} && exec {argv}" if prefix else f"exec {argv}"],
                                    stdout=fh, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while '"keys"' not in out.read_text() and time.monotonic() < deadline:
                assert live.poll() is None, live.stderr.read()
                time.sleep(0.1)
            subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SEND, "fgb", str(DATA / "capture.pcap")],
                           check=True, capture_output=True, timeout=30)
            sent = time.monotonic()
            lost: list[dict] = []
            while not (lost and lost[-1]["title"].startswith("3 ")) and time.monotonic() < sent + 15:
                assert live.poll() is None, live.stderr.read()
                time.sleep(0.2)
                events = [json.loads(line) for line in out.read_text().splitlines()]
                lost = [e for e in events if e["event"].startswith("finding") and e["code"] == "ESP-FRAGMENT-LOST"]
        finally:
            live.send_signal(signal.SIGTERM)
            _, err = live.communicate(timeout=30)
        events = [json.loads(line) for line in out.read_text().splitlines()]
        assert lost, (err, events)
        # The three first fragments alone (sequence numbers 6, 10, 14: bridge.log), all found lost.
        # lost on the path, not "the capture ended before the rest": the capture went on 5 s past them
        assert lost[-1]["title"].startswith("3 ESP packets 198.18.0.1 -> 198.18.0.2 on SPI"), lost
        assert lost[-1]["title"].endswith(": lost on the path") and lost[-1]["severity"] == "warning", lost
        assert len(lost[-1]["frames"]) == 3, lost
        # Their numbers were in flight, then lost in fragments: never a mysterious gap.
        codes = {e["code"] for e in events if e["event"].startswith("finding")}
        assert "ESP-SEQ-GAP" not in codes, events
        stats = [e for e in events if e["event"] == "stats"][-1]
        assert stats["decrypted"] == stats["esp"] > 0, stats
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _status(app) -> str:
    from ipsecscope.tui.widgets.status import StatusLine

    return app.query_one(StatusLine).render().plain


def _shown(app) -> tuple[str, str, list[str]]:
    """What the screen says: the status line, the Findings tab's label, the listed findings' codes
    (each a snapshot taken when the app last redrew, not the runner's live session)."""
    from textual.widgets import TabbedContent

    from ipsecscope.tui.widgets.findings import FindingsView

    label = str(app.query_one(TabbedContent).get_tab("findings").label)
    return _status(app), label, [f.code for f in app.query_one(FindingsView).findings]


async def _until(pilot, cond, what: str, limit: float = 60.0) -> None:
    """Until ``cond()`` holds (the app keeps running meanwhile); fails after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, f"not within {limit:.0f} s: {what}\n{_shown(pilot.app)}"
        await pilot.pause(0.1)


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")
def test_live_tui_shows_the_loss_when_only_the_clock_moved(tmp_path, monkeypatch):
    """The live TUI redrew only when frames came, so a conclusion the clock alone brings (live
    evaluates once a second: here the datagrams whose last fragments never came, given up after
    LIVE_FRAGMENT_WAIT) stayed off the screen until some unrelated frame arrived -- on a tunnel
    gone quiet, never. The runner's revision is the redraw marker (tui/session_feed._poll_live).

    The frames of tests/data/esp-frag-loss are sent to a veth the runner captures on. The wait is
    held off (LIVE_FRAGMENT_WAIT huge) until the screen shows every frame, so the screen before
    the loss is seen whatever the machine's load; then the wait is the product's again and the loss
    must come on screen with no frame added."""
    import asyncio

    from ipsecscope import session as session_mod
    from ipsecscope.live import LiveRunner
    from ipsecscope.tui.app import create_live_app

    wait = session_mod.LIVE_FRAGMENT_WAIT
    monkeypatch.setattr(session_mod, "LIVE_FRAGMENT_WAIT", 1e9)
    ns, cap_if, send_if = f"live-tui-{os.getpid()}", f"ltui{os.getpid() % 100000}", "ltuib"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    try:
        # The capturing end stays in this (the test's) namespace: the runner runs in-process, and
        # an interface's /sys entry is the mount's namespace's. No address, no IPv6 link-local:
        # nothing but the frames sent comes on it.
        subprocess.run(["ip", "link", "add", cap_if, "type", "veth", "peer", "name", send_if, "netns", ns],
                       check=True, capture_output=True)
        subprocess.run(["ip", "link", "set", cap_if, "addrgenmode", "none", "up"], check=True, capture_output=True)
        for dev in ("lo", send_if):
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True, capture_output=True)
        log = tmp_path / "charon.log"
        log.write_bytes((DATA / "charon-left.log").read_bytes())
        runner = LiveRunner(cap_if, key_logs=[log])
        app = create_live_app(runner, cap_if)

        async def run() -> None:
            async with app.run_test(size=(160, 40)) as pilot:
                await _until(pilot, lambda: len(runner.session.keys) > 0, "the charon log's keys read")
                await asyncio.to_thread(
                    subprocess.run, ["ip", "netns", "exec", ns, sys.executable, "-c", SEND, send_if,
                                     str(DATA / "capture.pcap")], check=True, capture_output=True, timeout=60)
                # Frame 51, the last, is the fifth IKE message: on screen, every frame is.
                await _until(pilot, lambda: "frames: IKE 5 " in _status(app), "all frames shown")
                before = _shown(app)
                with runner.lock:
                    frames = runner.session.stats.frames
                assert f"{frames} frames" in before[0], before
                assert "ESP-FRAGMENT-LOST" not in before[2] and "ESP-SEQ-GAP" not in before[2], before

                monkeypatch.setattr(session_mod, "LIVE_FRAGMENT_WAIT", wait)
                await _until(pilot, lambda: "ESP-FRAGMENT-LOST" in _shown(app)[2], "the loss on screen")
                after = _shown(app)
                with runner.lock:
                    assert runner.session.stats.frames == frames, "a frame came: the test proves nothing"
                assert f"{frames} frames" in after[0], after
                assert after[1] != before[1], (before, after)  # the Findings tab counts it
                assert after[0] != before[0], (before, after)  # and the status line's warnings
                assert "ESP-SEQ-GAP" not in after[2], after

        runner.start()
        try:
            asyncio.run(run())
        finally:
            runner.stop()
        assert runner.error is None, runner.error
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", cap_if], capture_output=True)
