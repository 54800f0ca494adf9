from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from public_data import is_public, missing, need, public, public_dir, public_files  # noqa: F401 (re-exported)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
# Wireshark's own IPsec test captures and key tables (GPL-2.0+), materialised at test time from
# ../shared/corpus/wireshark (tests/public_data.py); tests/data/wireshark/MANIFEST.md says where
# they come from and what each exercises. Missing on a machine without the shared corpus: the
# tests using CORPUS skip, saying so.
CORPUS = public_dir("wireshark")
SAMPLES = ROOT / "samples"
# How tests run the CLI: the interpreter running the suite, never a bare `ipsecscope` from PATH
# (a global install would hide a missing install step; tests/test_lint.py enforces this).
IPSECSCOPE = (sys.executable, "-m", "ipsecscope")


@functools.cache
def field_cli(*args: str) -> str:
    """``ipsecscope ARGS`` on a field capture, once per session: its output (status 0 or 1, and
    never a traceback). The field tests ask several questions of one command's output. A
    third-party capture not on this machine skips the test: the command would only say "no such
    file" (status 1) and the test would read its empty output."""
    need(*(Path(a) for a in args))
    r = subprocess.run([*IPSECSCOPE, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "Traceback" not in r.stderr and r.returncode in (0, 1), r.stderr
    return r.stdout


def pytest_configure(config: pytest.Config) -> None:
    # The fuzz tests (hypothesis) draw the same examples on every run and keep no example
    # database: with a random seed a run could fail on an example the previous run of the same
    # code never drew (CI is a fresh clone), and a checkout's .hypothesis/ database replays its
    # own past failures, which a fresh clone has not got. too_slow times data generation against
    # the wall clock, so it only says how loaded the machine is. (A hook, not module code: some
    # tests import this file again as tests.conftest.) To fuzz with new examples by hand:
    # HYPOTHESIS_PROFILE=explore .venv/bin/python -m pytest tests/test_fuzz_capture.py
    settings.register_profile("suite", derandomize=True, database=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("explore", database=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


def _paths_in(v: object) -> list[Path]:
    if isinstance(v, Path):
        return [v]
    if isinstance(v, (tuple, list)):
        return [p for p in v if isinstance(p, Path)]
    return []


def _ours(v: object) -> bool:
    m = getattr(v, "__module__", None)
    return isinstance(m, str) and (m.startswith("test_") or m in ("conftest", "tests.conftest"))


def _unwrapped(fn: object) -> object:
    """The test body under a decorator (functools.wraps: test_tui's @sync; hypothesis's @given)."""
    inner = getattr(getattr(fn, "hypothesis", None), "inner_test", None)
    return _unwrapped(inner) if inner is not None else (
        _unwrapped(fn.__wrapped__) if hasattr(fn, "__wrapped__") else fn)


def _globals_used(code: types.CodeType, names: dict, seen: set) -> list[object]:
    """The module-level values a test reads: by name in its code, in functions nested in it (an
    async body run by the test), and in the test modules' own helpers and classes it calls,
    followed down."""
    out: list[object] = []
    for name in code.co_names:
        v = names.get(name)
        out.append(v)
        fns = [v] if isinstance(v, types.FunctionType) and _ours(v) else (
            [f for f in vars(v).values() if isinstance(f, types.FunctionType)] if isinstance(v, type) and _ours(v)
            else [])
        for f in fns:
            f = _unwrapped(f)
            if isinstance(f, types.FunctionType) and f.__code__ not in seen:
                seen.add(f.__code__)
                out += _globals_used(f.__code__, f.__globals__, seen)
    for c in code.co_consts:
        if isinstance(c, types.CodeType) and c not in seen:
            seen.add(c)
            out += _globals_used(c, names, seen)
    return out


@pytest.fixture(autouse=True)
def _third_party_present(request: pytest.FixtureRequest) -> None:
    """Skip a test whose third-party capture (tests/public_data.py) is not on this machine: one
    it gets as a parameter, or one a module-level name the test function (or a helper of its
    module it calls) uses holds."""
    used: list[Path] = []
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None:
        for v in callspec.params.values():
            used += _paths_in(v)
    fn = _unwrapped(getattr(request.node, "function", None))
    if isinstance(fn, types.FunctionType):
        for v in _globals_used(fn.__code__, fn.__globals__, set()):
            used += _paths_in(v)
    for p in used:
        if is_public(p) and (why := missing(p)):
            pytest.skip(why)


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    return CORPUS


def corpus_captures() -> list[Path]:
    """The Wireshark corpus's captures, listed whether or not this machine has them."""
    return [p for p in public_files("wireshark") if p.name.endswith((".pcap", ".pcapng", ".pcapng.gz"))]


def have_tshark() -> bool:
    return shutil.which("tshark") is not None


def ike_messages(path: Path) -> list:
    """Every IKE message of a capture, through our own capture reader, demux and IKE decoder."""
    from ipsecscope.capture import open_capture
    from ipsecscope.decode.demux import Decoder
    from ipsecscope.decode.ike import parse_ike
    from ipsecscope.model.packets import IkeDatagram

    dec = Decoder()
    out = []
    with open_capture(path) as reader:
        for raw in reader:
            pkt = dec.decode(raw)
            if isinstance(pkt, IkeDatagram):
                out.append(parse_ike(pkt))
    return out


needs_tshark = pytest.mark.skipif(not have_tshark(), reason="tshark not installed (./dev test installs it)")


def growing_capture_app(tmp_path: Path, sample: str, part: int):  # -> (app, runner, path, data)
    """A TUI watching a capture that grows, as `--follow` and `live -i` are shown: the first
    1/``part`` of ``samples/SAMPLE/capture.pcapng`` written to a file the test appends the rest
    to. The caller runs the app and stops ``runner`` in a finally."""
    from ipsecscope.tui.app import create_stream_app
    from ipsecscope.tui.stream import CaptureFollower

    data = (SAMPLES / sample / "capture.pcapng").read_bytes()
    growing = tmp_path / "growing.pcapng"
    growing.write_bytes(data[: len(data) // part])
    runner = CaptureFollower([growing], follow=True)
    runner.open()
    runner.start()
    return create_stream_app(runner, growing.name), runner, growing, data


def shown_frames(app) -> int | None:
    """How many frames the live/followed app's last look showed: its status line's ``N frames``
    (None before the first look). Not ``app.session.stats.frames``: that is the reader's own
    session, which counts on before the app takes its next look (once a second), so a test waiting
    on it read a screen one refresh old whenever the machine was slow to fire the refresh."""
    import re

    from ipsecscope.tui.widgets.status import StatusLine

    for seg in app.query_one(StatusLine).segments:
        m = re.match(r"([\d,]+) frames\b", seg.plain)
        if m:
            return int(m[1].replace(",", ""))
    return None


async def until_shown(pilot, frames: int, limit: float = 60.0) -> None:
    """Until the app has shown exactly ``frames`` frames (every pane gets one look together,
    tui.session_feed._show_session), then until it is idle; fails after ``limit`` seconds."""
    import time

    deadline = time.monotonic() + limit
    while shown_frames(pilot.app) != frames:
        assert time.monotonic() < deadline, f"the app never showed {frames} frames: {shown_frames(pilot.app)}"
        await pilot.pause(0.05)
    await pilot.pause()


def frames_in_prefix(data: bytes, tmp_path: Path) -> int:
    """How many whole frames the first ``len(data)`` bytes of a capture hold (what a follower has
    read once they are written), counted by our reader from a copy."""
    from ipsecscope.capture import open_capture

    part = tmp_path / f"prefix-{len(data)}.cap"
    part.write_bytes(data)
    with open_capture(part) as reader:
        return sum(1 for _ in reader)


async def workers_done(app, group: str | None = None) -> None:
    """Until every worker of ``app`` (of ``group``) has ended, those started meanwhile too. One
    cancelled because a newer worker of its exclusive group replaced it (a filter applied again,
    the packet detail's run for a frame the cursor has left) is superseded, not failed: Textual's
    wait_for_complete() raised WorkerCancelled for it, which only a loaded machine met (the older
    run still going when the newer one started). A worker that failed still raises."""
    import asyncio

    from textual.worker import WorkerCancelled, WorkerState

    while True:
        left = [w for w in app.workers if w.state in (WorkerState.PENDING, WorkerState.RUNNING)
                and (group is None or w.group == group)]
        if not left:
            return
        for w in left:
            if w.state is WorkerState.PENDING:  # created, not started yet: wait() would refuse it
                await asyncio.sleep(0.01)
                break
            try:
                await w.wait()
            except WorkerCancelled:
                pass
