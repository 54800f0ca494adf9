"""Captures from a pipe (`-`) and from a file still being written (`--follow`), CLI and TUI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import IPSECSCOPE, SAMPLES
from tmux_driver import Tmux, have_tmux

HEALTHY = SAMPLES / "healthy-gcm"
CAP = HEALTHY / "capture.pcapng"
ESP_SA = HEALTHY / "keys" / "esp_sa"
IKE_TABLE = HEALTHY / "keys" / "ikev2_decryption_table"


def sas_doc(stdout: str) -> dict:
    doc = json.loads(stdout)
    doc.pop("files")
    return doc


def file_result() -> dict:
    r = subprocess.run([*IPSECSCOPE, "sas", "--json", CAP, "-k", ESP_SA], capture_output=True, text=True, check=True)
    return sas_doc(r.stdout)


def test_sas_reads_a_capture_from_a_real_pipe() -> None:
    data = CAP.read_bytes()
    p = subprocess.Popen([*IPSECSCOPE, "sas", "--json", "-", "-k", ESP_SA], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdin is not None
    # In small pieces, cut inside blocks: a pipe hands over whatever has arrived.
    for i in range(0, len(data), 333):
        p.stdin.write(data[i:i + 333])
        p.stdin.flush()
    p.stdin.close()
    assert p.stdout is not None and p.stderr is not None
    out, err = p.stdout.read(), p.stderr.read()
    assert p.wait(timeout=120) == 0, err
    assert sas_doc(out) == file_result()


def test_summary_and_findings_read_gzip_from_stdin() -> None:
    import gzip

    gz = gzip.compress(CAP.read_bytes())
    r = subprocess.run([*IPSECSCOPE, "summary", "--json", "-"], input=gz, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["frames"] == 34
    r = subprocess.run([*IPSECSCOPE, "findings", "--json", "-"], input=gz, capture_output=True, timeout=120)
    assert r.returncode in (0, 1) and json.loads(r.stdout)["counts"], r.stderr


def _read_position(pid: int, path: Path) -> int | None:
    """How far process ``pid`` has read ``path`` (its fd's file position), None if not open."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        for fd in fds.iterdir():
            try:
                if os.readlink(fd) == str(path):
                    for line in (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text().splitlines():
                        if line.startswith("pos:"):
                            return int(line.split()[1])
            except OSError:
                continue
    except OSError:
        return None
    return None


def _wait_read(p: subprocess.Popen, path: Path, size: int) -> None:
    while (_read_position(p.pid, path) or 0) < size:
        assert p.poll() is None, p.communicate()
        time.sleep(0.05)


@pytest.mark.parametrize("cmd", ["sas", "summary"])
def test_follow_reads_a_file_while_it_grows(tmp_path: Path, cmd: str) -> None:
    data = CAP.read_bytes()
    cut = len(data) // 2 + 7  # inside a block: the reader must wait for the rest of it
    growing = tmp_path / "growing.pcapng"
    growing.write_bytes(data[:cut])
    args = [*IPSECSCOPE, cmd, "--json", "--follow", growing] + (["-k", ESP_SA] if cmd == "sas" else [])
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_read(p, growing, cut)
    with growing.open("ab") as f:  # tcpdump -U appends the rest
        f.write(data[cut:])
    _wait_read(p, growing, len(data))
    assert p.poll() is None  # still following: the end of the file is not the end of the capture
    p.send_signal(signal.SIGINT)  # Ctrl-C ends following and reports
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    if cmd == "sas":
        assert sas_doc(out) == file_result()
    else:
        doc = json.loads(out)
        assert doc["frames"] == 34 and doc["counts"]["esp"] == 18 and not doc["truncated"]


needs_tmux = pytest.mark.skipif(not have_tmux(), reason="tmux not installed")


@needs_tmux
def test_tui_reads_stdin_and_keys_still_work() -> None:
    cmd = f"cat {CAP} | {sys.executable} -m ipsecscope - -k {ESP_SA} {IKE_TABLE}"
    with Tmux(f"sh -c '{cmd}'", width=120, height=40) as t:
        t.wait_for(lambda s: "decrypted 18/18" in s and "stdin" in s and "198.18.0.1 ⇄ 198.18.0.2" in s)
        t.send("3")  # the keyboard comes from the terminal, not from the pipe
        t.wait_for("IKE-NAT-DETECTED")
        t.send("q")
        t.wait_for("[exited 0]")


@needs_tmux
def test_tui_follows_a_growing_file(tmp_path: Path) -> None:
    data = CAP.read_bytes()
    growing = tmp_path / "growing.pcapng"
    cut = len(data) // 3
    growing.write_bytes(data[:cut])
    with Tmux(f"{sys.executable} -m ipsecscope --follow {growing} -k {ESP_SA}", width=120, height=40) as t:
        first = t.wait_for(lambda s: "(following)" in s and " frames" in s)
        assert "34 frames" not in first
        with growing.open("ab") as f:
            f.write(data[cut:])
        t.wait_for(lambda s: "34 frames" in s and "decrypted 18/18" in s)
