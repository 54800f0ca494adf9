#!/usr/bin/env python3
"""The TUI on a big capture: how soon is the first screen interactive, how soon does the SA tree
show something, how long until the capture is loaded, and how long does a filter take?

First, as a user starts it: ``python -m ipsecscope FILE -k KEYS`` in a fresh process, rendering
to terminal bytes at 120x40 through benchmarks/tui_clock.py (a Textual driver that keeps the bytes
and reads the clock), CPU time (user+sys, every thread) since the process started:
  first screen   the screen drawn: status line "Loading FILE …", progress bar, footer keys
  key answered   the help screen drawn after a "?" sent at once (the loader runs meanwhile)
  first tree     the first look at the loading session drawn (the status line counts frames)
These lines come first: benchmarks/run_table.py takes the first "first screen"/"first tree".

Then the real app headless (Textual's ``run_test``, 120x40) on FILE with KEYS, in this process,
times from App start (the imports done):
  first screen   wall time until the first screen is drawn (tui.app's ``_painted``: the loader
                 starts reading after it)
  first tree     wall time until the SA tree shows the first SAs (the first look at the loading
                 session, after its first window: tui/loading.py)
  progress       how many progress-bar updates the UI got while loading
  loaded         wall time until the whole session is on screen (packet list, SA tree, findings),
                 with the number of looks taken meanwhile and what they cost the loader
  filter         wall time of a display filter over all rows (``esp.sequence > 10``)
CPU time (user+sys) of the whole process is printed beside each, with the load average: wall
time on a shared machine says little without it. ``--static`` loads without looks (nothing
shown before the end), to measure what the looks cost.

Run by hand (not a test):  python3 benchmarks/bench_tui.py [--static] FILE [KEYS...]
(Its first screen once waited with Textual's pilot.pause()/press(), which wait up to 1 s each for
an idle CPU that a loading app never has: it counted up to 4 s of the loader's CPU.)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cli_clock(path: str, keys: list[str]) -> dict[str, dict[str, float]]:
    """``python -m ipsecscope FILE -k KEYS`` through the clock driver: {mark: {wall, cpu}}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clock.json"
        env = dict(os.environ, TEXTUAL_DRIVER="tui_clock:ClockDriver", COLUMNS="120", LINES="40",
                   PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
                   IPSECSCOPE_CLOCK_OUT=str(out), IPSECSCOPE_CLOCK_T0=repr(time.time()))
        subprocess.run([sys.executable, "-m", "ipsecscope", path, *(["-k", *keys] if keys else [])], env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=600, check=False)
        if not out.exists():
            raise SystemExit("the app ended before its first look at the capture")
        return json.loads(out.read_text())


async def main(path: str, keys: list[str], static: bool = False) -> None:
    from ipsecscope.tui.app import IpsecscopeApp
    from ipsecscope.tui.widgets.sa_tree import SaTree

    app = IpsecscopeApp(path, keys)
    app.incremental = not static
    updates = 0
    orig = app._progress

    def counting(done: int, total: int) -> None:
        nonlocal updates
        updates += 1
        orig(done, total)

    app._progress = counting  # type: ignore[method-assign]
    t0 = time.perf_counter()
    c0 = time.process_time()
    async with app.run_test(size=(120, 40)) as pilot:
        # no pilot.pause() here: it waits for an idle CPU, up to 1 s each, which a loading app never is
        while not app._painted.is_set():
            await asyncio.sleep(0.005)
        t_first, c_first = time.perf_counter() - t0, time.process_time() - c0
        tree = app.query_one(SaTree)
        while not any(n.data is not None for n in tree.root.children):
            await asyncio.sleep(0.02)
        t_tree, c_tree = time.perf_counter() - t0, time.process_time() - c0
        partial = app.partial
        while app.loading is not None or app.session is None:
            await asyncio.sleep(0.05)
        await pilot.pause()
        t_loaded, c_loaded = time.perf_counter() - t0, time.process_time() - c0
        n = len(app.session.rows)
        load = app.last_load
        print(f"first screen {t_first:6.2f} s wall ({c_first:.2f} s CPU)")
        print(f"first tree   {t_tree:6.2f} s wall ({c_tree:.2f} s CPU)"
              + (f" at {partial:.0%} read" if partial is not None else " (when loaded)"))
        print(f"loaded {n:,} rows in {t_loaded:6.2f} s wall ({c_loaded:.2f} s CPU, {updates} progress updates, "
              f"{load.looks} looks costing the loader {load.look_cost:.2f} s wall)")
        from ipsecscope.filtering import select, source_of
        from ipsecscope.model.filter import compile_filter

        flt = compile_filter("esp.sequence > 10")
        c = time.process_time()
        t = time.perf_counter()
        got = select(flt, source_of(app.session))
        print(f"filter 'esp.sequence > 10' over {n:,} rows: {len(got):,} rows in {time.perf_counter() - t:.2f} s wall "
              f"({time.process_time() - c:.2f} s CPU)")
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    args = sys.argv[1:]
    static = "--static" in args
    args = [a for a in args if a != "--static"]
    if not args:
        raise SystemExit(__doc__)
    # The command's lines come first: run_table.py reads the first "first screen"/"first tree" line.
    marks = cli_clock(args[0], args[1:])
    print("as a user starts it (python -m ipsecscope FILE -k KEYS; CPU user+sys since the process started):")
    for mark in ("first_screen", "key_answered", "first_tree"):
        if mark in marks:
            print(f"{mark.replace('_', ' '):13s}{marks[mark]['wall']:6.2f} s wall ({marks[mark]['cpu']:.2f} s CPU)")
    print("in this process, from App start (imports done):")
    asyncio.run(main(args[0], args[1:], static))
