"""Memory stays bounded on any input: a gzip bomb of empty pcap records (generated here, never
committed) through `sas`, `findings` and the TUI."""

from __future__ import annotations

import asyncio
import gzip
import struct
import subprocess
import sys
from pathlib import Path

from conftest import IPSECSCOPE, workers_done

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # Ethernet


def gzip_bomb(path: Path, records: int) -> Path:
    """A pcap header and ``records`` zero-length records (16 zero bytes each), gzip'd: a few
    hundred KB that decompress to ``16 * records`` bytes, every record valid."""
    zeros = bytes(16 * 65536)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(PCAP_HEADER)
        left = records
        while left:
            n = min(left, 65536)
            f.write(zeros[:16 * n])
            left -= n
    return path


# Runs the command in-process and reports its own peak RSS (KiB) on the last stderr line. VmHWM,
# not getrusage's ru_maxrss: Linux keeps ru_maxrss across execve, so a child of a big pytest
# worker would report the worker's size (seen: 491 MiB for a 39 MiB run).
RSS_PROBE = (
    "import sys\n"
    "from ipsecscope.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
    "print('maxrss', hwm, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def peak_rss_mib(*args: object) -> tuple[int, float, str]:
    r = subprocess.run([sys.executable, "-c", RSS_PROBE, *map(str, args)], capture_output=True, text=True,
                       timeout=1200)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("maxrss "), r.stderr[-2000:]
    return r.returncode, int(last.split()[1]) / 1024, r.stderr


def test_sas_and_findings_keep_no_row_per_frame(tmp_path: Path) -> None:
    # Peak RSS at 300k and 700k frames, each in a fresh interpreter: the packed rows and offsets
    # `sas` used to keep (~76 B/frame) would add ~29 MiB to the ~45 MiB the interpreter and its
    # imports take (ratio ~1.6); the bound (anything above ~11 B per extra frame fails) leaves
    # room for allocator noise only. Both sizes span several read windows (4.8 and 11 MB
    # inflated), so the buffers are the same in both runs. (Was one run of 2M frames under an
    # absolute 100 MiB: 11 s per command, and blind below ~28 B/frame.) The gzip ratio warning
    # these commands print once is tests/test_bad_input.py's: these bombs stay under
    # BOMB_MIN_BYTES.
    for cmd in ("sas", "findings"):
        rss = []
        for records in (300_000, 700_000):
            bomb = gzip_bomb(tmp_path / f"bomb{records}.pcap.gz", records)
            assert bomb.stat().st_size < 1 << 20
            rc, peak, err = peak_rss_mib(cmd, bomb, "--json")
            assert rc in (0, 1), err[-2000:]
            assert "Traceback" not in err
            rss.append(peak)
        assert rss[1] / rss[0] < 1.10, f"{cmd}: peak RSS {rss[0]:.1f} MiB at 300k empty frames, {rss[1]:.1f} at 700k"


def test_an_honest_capture_gets_no_ratio_warning() -> None:
    from conftest import SAMPLES

    r = subprocess.run([*IPSECSCOPE, "sas", SAMPLES / "healthy-gcm" / "capture.pcapng"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "decompresses" not in r.stderr


def test_tui_rows_stay_within_max_rows(tmp_path: Path) -> None:
    from ipsecscope.tui.app import create_app

    bomb = gzip_bomb(tmp_path / "bomb.pcap.gz", 50_000)

    async def run() -> None:
        app = create_app(bomb, row_limit=1000)
        async with app.run_test(size=(120, 40)) as pilot:
            await workers_done(pilot.app)
            await pilot.pause()
            s = app.session
            assert s.stats.frames == 50_000  # every frame is still counted and analysed
            assert len(s.rows) == 1000 and s.rows.dropped == 49_000
            assert "list: first 1,000" in str(app.query_one("#status").render())

    asyncio.run(run())
