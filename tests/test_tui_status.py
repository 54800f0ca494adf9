"""The TUI status line at 80 columns and in a snapshot image (SVG)."""

from __future__ import annotations

import asyncio
import html
import re

import pytest
from conftest import SAMPLES

from ipsecscope.tui.app import create_app

HEALTHY = SAMPLES / "healthy-gcm"
CASES = {
    "healthy-gcm": [HEALTHY / "keys" / "esp_sa", HEALTHY / "keys" / "ikev2_decryption_table"],
    "dead-peer": [],
}


async def status_of(sample: str, width: int) -> tuple[str, str, list[str]]:
    """(the status line as shown, as it would be with no width limit, its SVG text runs)."""
    app = create_app(SAMPLES / sample / "capture.pcapng", CASES[sample])
    async with app.run_test(size=(width, 24)) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        status = app.query_one("#status")
        shown = str(status.render())
        full = "  ".join(str(s) for s in status.segments)
        svg = app.export_screenshot()
    # Rich's SVG: one <text> per styled run; the status line is the first row (terminal-line-0).
    runs = [html.unescape(m) for m in re.findall(r'<text [^>]*clip-path="url\(#[^)]*line-0\)">([^<]*)</text>', svg)]
    return shown, full, runs


@pytest.mark.parametrize("sample", list(CASES))
def test_status_line_fits_80_columns_in_whole_segments(sample: str) -> None:
    shown, full, _ = asyncio.run(status_of(sample, 80))
    assert len(shown) <= 78  # 80 minus the line's padding
    assert full.startswith(shown.rstrip())
    # cut only between segments: what follows the shown part is a separator, not the rest of a count
    rest = full[len(shown.rstrip()):]
    assert rest == "" or rest.startswith("  "), (shown, full)
    assert re.match(r"capture\.pcapng  \d+ frames  ", shown), shown
    wide, full, _ = asyncio.run(status_of(sample, 200))
    assert wide.rstrip() == full  # with room, every segment


@pytest.mark.parametrize("sample", list(CASES))
def test_status_line_runs_never_start_with_the_separator(sample: str) -> None:
    """SVG renderers (rsvg, image viewers) drop a styled run's leading spaces: "capture.pcapng34 frames"."""
    _, _, runs = asyncio.run(status_of(sample, 120))
    texts = [r for r in runs if r.strip()]
    assert any("frames" in r for r in texts), runs
    for r in texts:
        assert not r[0].isspace(), (r, runs)
