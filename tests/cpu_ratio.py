"""The CPU-time ratio of one piece of work at two sizes, for the scaling tests (linear vs quadratic).

CPU time is not a fixed price on this kind of machine: on a shared host (a KVM guest, other
helpers' test runs, CI's two xdist workers beside busy processes) the same work costs up to ~2x
more while a neighbour thrashes the caches or the host's sibling thread is busy, and that lasts
seconds, not microseconds. Measured as "all small runs, then all big runs", a load change between
the two halves lands in one size only and moves the ratio by as much (the suite's scaling tests
saw 4.7x for linear code at load 6, with bounds of 6-8x). So the sizes are measured in turns
(small, big, small, big, ...) and each keeps its least time: a noisy stretch costs both sizes
alike, and the least of several runs is the one a neighbour disturbed least. Garbage collection
is off while a run is timed (collected before), so a run does not pay to walk what earlier
tests left on the heap.

Used in-process (``from cpu_ratio import least_cpu_ratio``) and from the fresh interpreters some
tests start (``sys.path`` gets this directory).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


def least_cpu_ratio(small: Callable[[], object], big: Callable[[], object], rounds: int = 3) -> tuple[float, float, float]:
    """(big / small, least CPU s of ``small``, least CPU s of ``big``) over ``rounds`` turns."""
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, fn in enumerate((small, big)):
            gc.collect()
            gc.disable()
            try:
                t0 = time.process_time()
                fn()
                dt = time.process_time() - t0
            finally:
                gc.enable()
            best[i] = min(best[i], dt)
    return best[1] / max(best[0], 1e-4), best[0], best[1]
