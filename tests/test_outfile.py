"""Output files (issue 12 items 1 and 2): never the input, 0600 from the first byte, all or nothing.

Through the real CLI in a subprocess (``python -m ipsecscope decrypt``) on a real synthetic
capture, and through :mod:`ipsecscope.outfile` directly.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ipsecscope.errors import ExportError
from ipsecscope.outfile import atomic_output, write_private
from tests.conftest import IPSECSCOPE, SAMPLES

SYN = SAMPLES / "synthetic"
CAP = SYN / "aead.pcap"
KEYS = SYN / "aead.keys.json"


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*IPSECSCOPE, *args], capture_output=True, text=True,
                          timeout=120, **kw)


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _copy_input(tmp_path: Path) -> tuple[Path, Path, str]:
    cap, keys = tmp_path / "in.pcap", tmp_path / "in.keys.json"
    cap.write_bytes(CAP.read_bytes())
    keys.write_bytes(KEYS.read_bytes())
    return cap, keys, _digest(cap)


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


@pytest.mark.parametrize("how", ["-o IN", "-o link-to-IN", "--jsonl IN", "-o KEYS", "--jsonl link-to-KEYS"])
def test_an_output_that_is_an_input_is_refused(tmp_path: Path, how: str) -> None:
    cap, keys, before = _copy_input(tmp_path)
    keys_before = _digest(keys)
    opt, what = how.split()
    target = {"IN": cap, "KEYS": keys}[what.replace("link-to-", "")]
    if what.startswith("link-to-"):
        link = tmp_path / "link"
        link.symlink_to(target)
        target = link
    r = _cli("decrypt", str(cap), "-k", str(keys), opt, str(target))
    assert r.returncode == 1
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "is the input" in err and "Traceback" not in r.stderr, err
    assert _digest(cap) == before and _digest(keys) == keys_before
    assert _leftovers(tmp_path) == []


def test_outputs_are_0600_even_over_a_0666_file(tmp_path: Path) -> None:
    out, jl = tmp_path / "out.pcapng", tmp_path / "out.jsonl"
    for p in (out, jl):
        p.write_bytes(b"old")
        os.chmod(p, 0o666)
    r = _cli("decrypt", str(CAP), "-k", str(KEYS), "-o", str(out), "--dsb", "--jsonl", str(jl), "-q")
    assert r.returncode == 0, r.stderr
    for p in (out, jl):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        assert p.read_bytes() != b"old"
    assert _leftovers(tmp_path) == []


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    link = tmp_path / "out.pcapng"
    link.symlink_to(victim)
    r = _cli("decrypt", str(CAP), "-k", str(KEYS), "-o", str(link), "-q")
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "not yours"
    assert not link.is_symlink() and stat.S_IMODE(link.stat().st_mode) == 0o600


def test_a_failed_run_leaves_the_old_file(tmp_path: Path) -> None:
    """--jsonl /dev/full fails (no space) after the pcapng was written in full: the run failed,
    so the old -o file stays as it was and no temporary file is left behind."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    out = tmp_path / "out.pcapng"
    out.write_bytes(b"previous result")
    r = _cli("decrypt", str(CAP), "-k", str(KEYS), "-o", str(out), "--jsonl", "/dev/full", "-q")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert out.read_bytes() == b"previous result"
    assert _leftovers(tmp_path) == []


def _sigint_default() -> None:
    # A suite started in the background (`.ci/run &`, nohup) inherits SIGINT ignored, and so would
    # the command: Python then keeps it ignored (as a program run with `&` should), Ctrl-C never
    # arrives and the run stays blocked on the FIFO. The test is about a user's Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_the_old_file(tmp_path: Path, sig: int) -> None:
    """The run is held mid-way on purpose: its --jsonl is a FIFO nobody reads yet, so it blocks
    opening it after the pcapng's temporary file exists. Interrupted there, it must remove that
    file and leave the old output alone."""
    out, fifo = tmp_path / "out.pcapng", tmp_path / "fifo"
    out.write_bytes(b"previous result")
    os.mkfifo(fifo)
    p = subprocess.Popen([*IPSECSCOPE, "decrypt", str(CAP), "-k", str(KEYS), "-o", str(out),
                          "--jsonl", str(fifo), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=_sigint_default)
    try:
        while not [n for n in _leftovers(tmp_path) if n.startswith(".out.pcapng.")]:
            assert p.poll() is None, p.communicate()
            time.sleep(0.05)
        # the temporary file is private already
        tmp = next(tmp_path.glob(".out.pcapng.*"))
        assert stat.S_IMODE(tmp.stat().st_mode) == 0o600
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0 and "Traceback" not in err, err
    assert out.read_bytes() == b"previous result"
    assert _leftovers(tmp_path) == []


def test_atomic_output_api(tmp_path: Path) -> None:
    target = tmp_path / "k.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    with pytest.raises(RuntimeError), atomic_output(target, "w") as f:
        f.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old" and _leftovers(tmp_path) == []
    write_private(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(ExportError, match="is the input"):
        write_private(target, "x", inputs=[tmp_path / "k.json"])
    with pytest.raises(ExportError, match="is the input"):  # a directory input stands for its files (-k DIR)
        write_private(target, "x", inputs=[tmp_path])
    with pytest.raises(ExportError, match="directory"):
        write_private(tmp_path, "x")
    write_private("/dev/null", b"discarded")  # a device is written in place, never replaced
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_failed_write_names_the_output(tmp_path: Path) -> None:
    """`keys convert -o /dev/full` said "ipsecscope: error: output: No space left on device" (no
    file named); decrypt already named it. Every write_private output (keys convert, TUI exports)."""
    r = _cli("keys", "convert", str(KEYS), "--to", "json", "-o", "/dev/full")
    assert r.returncode == 1 and r.stderr == ("ipsecscope keys convert: error: cannot write /dev/full: No space "
                                              "left on device\n")
    with pytest.raises(ExportError, match="^cannot write /dev/full: No space left on device$"):
        write_private("/dev/full", b"x" * (1 << 21))


def test_live_write_to_dash_is_refused(tmp_path: Path, monkeypatch) -> None:
    """`live -w -` created a capture file named '-' (where '-' is standard output for decrypt
    and keys convert): one line instead, and no file."""
    from ipsecscope.live import LiveFile

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExportError, match="not standard output"):
        LiveFile("-")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["wb", "w"])
def test_ctrl_c_anywhere_in_create_private_leaves_no_file_and_stays_ctrl_c(tmp_path: Path, mode: str) -> None:
    """A Ctrl-C is handled between two Python steps: here it is raised (once) at each step of
    create_private and the Python code it runs, in turn. Whatever the step, what comes out is the
    KeyboardInterrupt (or the file, when the step was the last), never an OSError, and no file is
    left behind. With os.open + os.fdopen, one just after io.open returned inside os.fdopen closed
    the descriptor twice: EBADF ("cannot write ...: Bad file descriptor", exit 1, seen under load
    in test_an_interrupted_run_leaves_the_old_file) and the temporary file stayed."""
    import sys

    from ipsecscope.outfile import create_private

    outcomes = set()
    for step in range(1000):
        path = tmp_path / f"f{step}"
        seen = 0

        def tracer(frame, event, arg, step=step):
            nonlocal seen
            # A signal is handled when a function starts, on a call or a backward jump, never as
            # create_private's own frame returns (nothing of its cleanup could run there).
            if event == "return" and frame.f_code is create_private.__code__:
                return tracer
            seen += 1
            if seen == step:
                sys.settrace(None)
                raise KeyboardInterrupt
            return tracer

        sys.settrace(tracer)
        try:
            f = create_private(path, mode, encoding="utf-8" if mode == "w" else None)
        except KeyboardInterrupt:
            outcomes.add("interrupted")
            assert not path.exists(), step
            continue
        finally:
            sys.settrace(None)
        f.close()
        outcomes.add("created")
        if seen < step:  # every step has been interrupted once
            break
    assert outcomes == {"interrupted", "created"}
