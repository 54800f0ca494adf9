#!/usr/bin/env python3
"""The TUI on a big capture: how soon is the first screen interactive, how long until the
capture is loaded (tree, findings, timeline filled in), and how long does a filter take?

Runs the real app headless (Textual's ``run_test``, 120x40) on FILE with KEYS, in this process:
  first screen   wall time from App start until the first screen is mounted and answers a key
                 (status line "Loading …", progress bar moving; the loading runs in a worker thread)
  progress       how many progress-bar updates the UI got while loading
  loaded         wall time until the session is on screen (packet list, SA tree, findings)
  filter         wall time of a display filter over all rows (``esp.sequence > 10``)
CPU time (user+sys) of the whole process is printed beside each, with the load average: wall
time on a shared machine says little without it.

Run by hand (not a test):  python3 benchmarks/bench_tui.py FILE [KEYS...]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time


async def main(path: str, keys: list[str]) -> None:
    from ipsecscope.tui.app import IpsecscopeApp

    app = IpsecscopeApp(path, keys)
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
        await pilot.pause()
        await pilot.press("question_mark")  # the help screen: the UI answers while loading
        await pilot.pause()
        t_first, c_first = time.perf_counter() - t0, time.process_time() - c0
        await pilot.press("escape")
        while app.session is None:
            await asyncio.sleep(0.05)
        await pilot.pause()
        t_loaded, c_loaded = time.perf_counter() - t0, time.process_time() - c0
        n = len(app.session.rows)
        print(f"first screen {t_first:6.2f} s wall ({c_first:.2f} s CPU); loaded {n:,} rows in {t_loaded:6.2f} s wall "
              f"({c_loaded:.2f} s CPU, {updates} progress updates)")
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
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
