"""Memory of the analysis path (issue 15): ``sas --json`` (Session(keep_rows=False)) keeps
nothing per non-IPsec frame and at most a few bytes per ESP frame, so its peak RSS does not grow
with the capture. Two captures of minimum-size frames (mostly TCP, 5% ESP on 8 SAs; generated
here with benchmarks/bench_memory.py's generator, never committed), 10x apart in frames; the
assertion is a ratio of peak RSS between the two runs, each in a fresh interpreter. No timing."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_memory import build_mix, measure  # noqa: E402


def test_sas_peak_rss_does_not_grow_with_a_mostly_tcp_capture(tmp_path: Path) -> None:
    # 60-byte frames: the most records per byte, so anything kept per frame shows most. Both
    # sizes span several 4 MiB read windows (~55k records each), so the per-window buffers are
    # the same in both runs and only what is kept per frame can differ.
    small, big = tmp_path / "small.pcap", tmp_path / "big.pcap"
    build_mix(150_000, small, sizes=(60,))
    info = build_mix(1_500_000, big, sizes=(60,))
    assert info["esp"] > 60_000 and info["other"] > 1_300_000
    rss_small, _ = measure(small)
    rss_big, _ = measure(big)
    # 1.35M more frames: the ~76 B a row used to cost would be +98 MiB (ratio ~2.5), 32 B per
    # ESP frame +2 MiB; the bound leaves room for allocator noise only. (While the loop kept the old
    # 4 MiB window alive as it read the next, glibc's sliding mmap threshold put windows on the heap
    # and the peak varied by up to two windows between runs: 61.1 vs 68.6 MiB in one CI run.)
    assert rss_big / rss_small < 1.10, (
        f"peak RSS {rss_small:.1f} MiB at 150k frames, {rss_big:.1f} MiB at 1.5M: "
        f"{(rss_big - rss_small) * (1 << 20) / 1_350_000:.1f} B per extra frame")
