"""Issue 15: the TUI's first screen comes before any of the capture is read, and costs only what
it shows. The app runs under Textual's pilot in a fresh interpreter (``sys.modules`` then says what
the first screen imported, whatever earlier tests loaded); the loader stops before it reads
anything through the app's test hook (tui.loading.Hold(before=True): events, no timing):

* by then the first screen is drawn: the status line says "Loading FILE …", the progress bar and
  the footer's keys are on screen, and the loader got past its wait because it was drawn;
* nothing heavy is imported for it: not the session (numpy, decoders, crypto, state), not the
  rules, the filter or Stats engines, the exporters, nor the dissector (pyshark, scapy);
* once released, the capture loads as before, and the Stats engine is still not imported until
  the Stats tab is opened (it counts the capture then).
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import SAMPLES

CAPTURE = SAMPLES / "healthy-gcm" / "capture.pcapng"
KEYS = SAMPLES / "healthy-gcm" / "keys"

PROBE = r'''
import asyncio, json, sys
from textual.geometry import Size
from textual.widgets import ProgressBar
from ipsecscope.tui.app import create_app
from ipsecscope.tui.loading import Hold


def lines(app):
    strips = app.screen._compositor.render_strips(Size(*app.size))
    return ["".join(seg.text for seg in strip) for strip in strips]


def ours():
    return sorted(m for m in sys.modules if m.startswith("ipsecscope") or m.split(".")[0] in
                  ("numpy", "cryptography", "pyshark", "scapy"))


async def main(capture, keys):
    app = create_app([capture], [keys])
    app.animation_level = "none"

    class Probe(Hold):
        painted = []

        def stop(self, cancelled):  # the loader thread, at each stop
            self.painted.append(app._painted.is_set())
            super().stop(cancelled)

    app.load_hold = hold = Probe(windows=0, before=True)
    out = {}
    async with app.run_test(size=(80, 24)) as pilot:
        await asyncio.to_thread(hold.wait_stopped, 1)
        out["painted_when_loader_stopped"] = hold.painted[0]
        await pilot.pause()
        out["first"] = {"lines": lines(app), "modules": ours(), "session": app.session is not None,
                        "bar": app.query_one("#progress", ProgressBar).display}
        hold.release()
        while app.loading is not None or app.session is None:
            await asyncio.sleep(0.02)
        await app.workers.wait_for_complete()
        await pilot.pause()
        out["loaded"] = {"lines": lines(app), "modules": ours(), "frames": app.session.stats.frames}
        await pilot.press("5")
        while app.query_one("#stats-view").stats is None:
            await asyncio.sleep(0.02)
        await pilot.pause()
        out["stats"] = {"lines": lines(app), "modules": ours()}
    print("PROBE " + json.dumps(out))


asyncio.run(main(sys.argv[1], sys.argv[2]))
'''

NOT_ON_FIRST_SCREEN = {
    "numpy", "cryptography", "pyshark", "scapy",
    "ipsecscope.session", "ipsecscope.session_fast", "ipsecscope.state.tracker", "ipsecscope.crypto.esp",
    "ipsecscope.analysis.rules", "ipsecscope.filtering", "ipsecscope.conversations",
    "ipsecscope.export.documents", "ipsecscope.dissect",
}


def probe() -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, str(CAPTURE), str(KEYS)], capture_output=True, text=True,
                       timeout=600)
    assert "PROBE " in r.stdout, (r.stdout[-2000:], r.stderr[-3000:])
    return json.loads(r.stdout.rsplit("PROBE ", 1)[1])


def test_first_screen_is_drawn_before_the_capture_is_read_and_imports_no_engine() -> None:
    out = probe()
    first = out["first"]
    # the loader waited for the first screen (not for its fallback timeout), then stopped unread
    assert out["painted_when_loader_stopped"] is True
    assert not first["session"]
    screen = "\n".join(first["lines"])
    assert f"Loading {CAPTURE.name} …" in first["lines"][0], first["lines"][:3]
    assert first["bar"] and "━" in first["lines"][1], first["lines"][:3]
    assert "? Help" in first["lines"][-1] and "/ Filter" in first["lines"][-1], screen
    assert not NOT_ON_FIRST_SCREEN & set(first["modules"]), sorted(NOT_ON_FIRST_SCREEN & set(first["modules"]))

    # Released, the capture loads (the session and numpy come in then), and what it shows is there.
    loaded = out["loaded"]
    assert loaded["frames"] > 0 and "ipsecscope.session" in loaded["modules"] and "numpy" in loaded["modules"]
    assert f"{loaded['frames']:,} frames" in loaded["lines"][0] and "Loading" not in loaded["lines"][0]
    # Stats is counted when its tab is first opened, not by every run that never looks at it.
    assert "ipsecscope.conversations" not in loaded["modules"]
    stats = out["stats"]
    assert "ipsecscope.conversations" in stats["modules"]
    shown = "\n".join(stats["lines"])
    assert "#1 deleted" in shown and "icmp 10.1.0.1 ⇄ 10.2.0.1" in shown, shown
