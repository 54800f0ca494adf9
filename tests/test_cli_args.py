"""Argument order: options first (as tshark users type) or last, on every command; `-k` never
swallows the capture, and `--` ends the key list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import IPSECSCOPE, SAMPLES
from tmux_driver import Tmux, have_tmux

HEALTHY = SAMPLES / "healthy-gcm"
CAP = HEALTHY / "capture.pcapng"
ESP_SA = HEALTHY / "keys" / "esp_sa"
IKE_TABLE = HEALTHY / "keys" / "ikev2_decryption_table"
LOG = HEALTHY / "charon-left.log"


def run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*IPSECSCOPE, *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def sas_json(*args: object) -> dict:
    r = run("sas", "--json", *args)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    doc.pop("files")
    return doc


def test_sas_options_first_and_last_agree_and_decrypt() -> None:
    last = sas_json(CAP, "-k", ESP_SA, IKE_TABLE)
    assert all(f["decrypted"] == f["packets"] for f in last["flows"])  # the keys were really used
    assert sas_json("-k", ESP_SA, IKE_TABLE, CAP) == last
    assert sas_json("-k", ESP_SA, "-k", IKE_TABLE, CAP) == last
    assert sas_json("-k", ESP_SA, IKE_TABLE, "--", CAP) == last


@pytest.mark.parametrize("order", ["first", "last"])
def test_findings_with_a_charon_log_either_order(order: str) -> None:
    # The report's case: `findings -k charon-left.log capture.pcapng` said "give a capture FILE".
    args = ("-k", LOG, CAP) if order == "first" else (CAP, "-k", LOG)
    r = run("findings", *args, "--json")
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    assert doc["files"] == [str(CAP)]
    assert not any(f["code"].startswith("ESP-NO-KEY") for f in doc["findings"])


def test_two_captures_after_keys_are_both_read(tmp_path: Path) -> None:
    one = run("sas", CAP, CAP, "-k", ESP_SA, "--json")
    two = run("sas", "-k", ESP_SA, CAP, CAP, "--json")
    assert one.returncode == two.returncode == 0
    assert json.loads(one.stdout)["files"] == json.loads(two.stdout)["files"] == [str(CAP)] * 2


def test_decrypt_options_first(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pcapng", tmp_path / "b.pcapng"
    r1 = run("decrypt", CAP, "-k", ESP_SA, "-q", "-o", a)
    r2 = run("decrypt", "-k", ESP_SA, CAP, "-q", "-o", b)
    assert r1.returncode == r2.returncode == 0, r2.stderr
    assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 1000


def test_no_capture_left_is_a_usage_error_naming_the_fix() -> None:
    r = run("sas", "-k", ESP_SA, IKE_TABLE)  # two key files and no capture
    assert r.returncode == 2
    assert "give a capture FILE" in r.stderr and "--" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("cmd", [["summary"], ["summary", "--json"], ["decrypt", "-k", ESP_SA, "-q"]])
def test_a_second_capture_to_a_one_capture_command_says_so(cmd: list) -> None:
    """`summary a b` said only "unrecognized arguments: b" under the top-level usage; it names the
    command, that it reads one capture, and which commands read several."""
    other = SAMPLES / "dead-peer" / "capture.pcapng"
    r = run(*cmd, CAP, other)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    first = r.stderr.splitlines()[0]  # the error, then argparse's usage indented under it
    assert first.startswith(f"ipsecscope {cmd[0]}: error: one capture FILE, got 2: {CAP} {other}"), r.stderr
    assert "sas, findings, packets, stats and the TUI read several" in first
    assert r.stderr.splitlines()[1].startswith(f"  usage: ipsecscope {cmd[0]} "), r.stderr
    r = run(*cmd, CAP, "--no-such-option")  # anything else stays argparse's own message
    assert r.returncode == 2 and r.stderr.startswith(f"ipsecscope {cmd[0]}: error: unrecognized arguments: "
                                                      "--no-such-option\n  usage: "), r.stderr


def test_tui_takes_options_first(tmp_path: Path) -> None:
    # `ipsecscope -k KEYS FILE` was "invalid choice": the TUI is the command when none is named.
    text = tmp_path / "notes.txt"
    text.write_text("not a capture\n")
    r = run("-k", ESP_SA, "--", text)  # reaches the TUI command, which checks the file before drawing
    assert r.returncode == 1 and "notes.txt is not a pcap or pcapng file" in r.stderr, r.stderr
    if not have_tmux():
        pytest.skip("tmux not installed")
    with Tmux(f"{sys.executable} -m ipsecscope -k {ESP_SA} {IKE_TABLE} {CAP}", width=120, height=40) as t:
        t.wait_for(lambda s: "decrypted" in s and "198.18.0.1 ⇄ 198.18.0.2" in s)


def test_piped_text_never_wraps() -> None:
    # `findings`/`sas` wrapped at 80 columns when piped and split SPIs and addresses across lines.
    mismatch = SAMPLES / "proposal-mismatch"
    args = (mismatch / "capture.pcapng", "-k", mismatch / "charon-left.log", mismatch / "charon-right.log")
    doc = json.loads(run("findings", "--json", *args).stdout)
    lines = run("findings", *args).stdout.splitlines()
    for f in doc["findings"]:
        assert any(f["explanation"] in line for line in lines), f["code"]  # whole, on one line
    sas = json.loads(run("sas", "--json", CAP).stdout)
    text = run("sas", CAP).stdout
    for c in sas["child_sas"]:
        assert f"SPIs {c['spi_i']} (i) / {c['spi_r']} (r)" in text
    assert max(map(len, lines)) > 100  # not cut at 80 either


@pytest.mark.parametrize("args,option", [
    (["summary", CAP, "--ike-limit", "-1"], "--ike-limit"),  # printed 15 of 16 messages and "17 more"
    (["summary", CAP, "--workers", "-3"], "--workers"),
    (["packets", CAP, "-c", "0"], "-c/--count"),
    (["decrypt", CAP, "-j", "-1", "-o", "/nonexistent/x"], "-j/--jobs"),
    (["stats", CAP, "--interval", "0"], "--interval"),
    (["stats", CAP, "--interval", "nan"], "--interval"),
    (["tui", CAP, "--max-rows", "0"], "--max-rows"),
    (["live", "-i", "lo", "--stats-interval", "0"], "--stats-interval"),  # a stats event every tick
    (["live", "-i", "lo", "--count", "-2"], "--count"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_numbers_out_of_range_are_refused(args, option):
    """Counts, limits, process numbers and seconds are checked where they are parsed: one argparse
    error naming the option, exit 2, before any file is read."""
    r = run(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[0].startswith(f"ipsecscope {args[0]}: error: argument {option}: ")


def test_stats_interval_finer_than_a_million_bins_is_refused():
    """--interval 1e-9 over 2.4 s asked for 2.4e9 IO graph bins per flow and ended as "out of memory
    while reading; the input is larger than this machine can hold"."""
    r = run("stats", CAP, "--interval", "1e-9")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == ("ipsecscope stats: error: --interval 1e-09 makes 2,437,296,867 IO graph bins over this capture's "
                        "2.4373 s; give at least 2.4e-06 s (at most 1,000,000 bins)\n")
    assert run("stats", CAP, "--interval", "1e-5", "--json").returncode == 0
