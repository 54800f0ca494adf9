"""Every message the CLI prints on stderr has one form, argparse's: ``ipsecscope CMD: error: WHAT``
(the command ends, non-zero exit status) or ``ipsecscope CMD: warning: WHAT``, CMD the sub-command
as typed (``keys list``), none for ``ipsecscope FILE``; further lines of one message (a display
filter's caret, the usage under a usage error) indented. It was five forms ("ipsecscope: error:",
"ipsecscope sas: FILE: ...", "ipsecscope packets: bad display filter: ...", argparse's usage line
before its error, ...), so no one grep or parser found them all (cli.common.message)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import IPSECSCOPE, SAMPLES

CAP = SAMPLES / "healthy-gcm" / "capture.pcapng"
ESP_SA = SAMPLES / "healthy-gcm" / "keys" / "esp_sa"
MESSAGE = re.compile(r"ipsecscope(?P<cmd>( [a-z]+)*): (?P<level>error|warning): \S")

# The commands as a user types them, with what each needs besides its input; `{in}` is the file.
COMMANDS = {
    "summary": ["summary", "{in}"],
    "decrypt": ["decrypt", "{in}", "-k", ESP_SA, "-o", "{out}"],
    "keys list": ["keys", "list", "{in}"],
    "keys convert": ["keys", "convert", "{in}", "--to", "esp_sa"],
    "sas": ["sas", "{in}"],
    "findings": ["findings", "{in}"],
    "packets": ["packets", "{in}"],
    "stats": ["stats", "{in}"],
    "live": ["live", "-i", "lo", "--no-drop", "-k", "{in}"],  # live reads files only as keys (checked before capturing)
    "tui": ["tui", "{in}"],
    "": ["{in}"],  # `ipsecscope FILE` is the TUI, and names no sub-command
}
# Exit status for an input that cannot be read (README, each command's docstring): sas, findings,
# packets and stats 2, the others 1; argparse's usage errors 2.
INPUT_ERROR = {"sas": 2, "findings": 2, "packets": 2, "stats": 2}


def named_file(cmd: str) -> bool:
    """Does ``cmd`` reach its input file? `live` opens the interface first: without root or
    CAP_NET_RAW its one error is about that (the same form, checked all the same)."""
    return cmd != "live" or os.geteuid() == 0


def run(args: list, tmp_path: Path, infile: Path | str) -> subprocess.CompletedProcess[str]:
    argv = [str(infile) if a == "{in}" else str(tmp_path / "out.pcapng") if a == "{out}" else str(a) for a in args]
    return subprocess.run([*IPSECSCOPE, *argv], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def messages(stderr: str) -> list[tuple[str, str, str]]:
    """(cmd, level, first line) of each message on ``stderr``; fails on a line of any other form."""
    out: list[tuple[str, str, str]] = []
    for line in stderr.splitlines():
        if line.startswith("  ") and out:  # a further line of the message above
            continue
        m = MESSAGE.match(line)
        assert m, f"not `ipsecscope CMD: error|warning: ...` nor an indented continuation: {line!r}\n{stderr}"
        out.append((m["cmd"].strip(), m["level"], line))
    return out


def check_error(r: subprocess.CompletedProcess[str], cmd: str, status: int) -> str:
    """One error of ``cmd`` (as the last message; warnings may come first), exit ``status``."""
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    got = messages(r.stderr)
    assert got and r.returncode == status, (r.returncode, r.stderr)
    assert all(c == cmd for c, _level, _line in got), (cmd, r.stderr)
    assert [level for _c, level, _line in got][-1:] == ["error"], r.stderr
    assert sum(level == "error" for _c, level, _line in got) == 1, r.stderr
    return got[-1][2]


@pytest.mark.parametrize("cmd", list(COMMANDS), ids=lambda c: c or "FILE")
def test_a_missing_file(cmd: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pcapng"
    r = run(COMMANDS[cmd], tmp_path, missing)
    line = check_error(r, cmd, INPUT_ERROR.get(cmd, 1))
    if named_file(cmd):
        assert str(missing) in line and "no such file" in line.lower(), line


@pytest.mark.parametrize("cmd", list(COMMANDS), ids=lambda c: c or "FILE")
def test_a_file_that_is_not_a_capture(cmd: str, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a capture, nor keys\n")
    r = run(COMMANDS[cmd], tmp_path, text)
    line = check_error(r, cmd, INPUT_ERROR.get(cmd, 1))
    if named_file(cmd):
        assert str(text) in line, line


@pytest.mark.parametrize("cmd", list(COMMANDS), ids=lambda c: c or "FILE")
def test_a_bad_option(cmd: str, tmp_path: Path) -> None:
    """argparse's own error, in the same form: the error first (what `head -1` and a grep for the
    form find), then the command's usage indented under it."""
    r = run([*COMMANDS[cmd], "--no-such-option"], tmp_path, ESP_SA if cmd.startswith(("keys", "live")) else CAP)
    line = check_error(r, cmd, 2)
    assert line == f"ipsecscope{' ' + cmd if cmd else ''}: error: unrecognized arguments: --no-such-option", r.stderr
    assert r.stderr.splitlines()[1].startswith(f"  usage: ipsecscope{' ' + cmd if cmd else ''} ["), r.stderr


def test_keys_without_an_action_is_a_usage_error(tmp_path: Path) -> None:
    """`ipsecscope keys` alone printed its whole help to stdout and exited 2 with nothing on
    stderr: a script saw help text where it expected an error line. Now it is a usage error like
    any other: the message, the usage under it, stdout empty."""
    r = run(["keys"], tmp_path, ESP_SA)
    line = check_error(r, "keys", 2)
    assert line == "ipsecscope keys: error: no ACTION given: list or convert (ipsecscope keys -h)", r.stderr
    assert r.stderr.splitlines()[1].startswith("  usage: ipsecscope keys ["), r.stderr
    assert len(r.stderr.splitlines()) == 2 and r.stdout == "", (r.stdout, r.stderr)


@pytest.mark.parametrize("cmd", ["packets", "summary", "decrypt"])
def test_a_bad_display_filter_keeps_its_caret_under_the_message(cmd: str, tmp_path: Path) -> None:
    r = run([*COMMANDS[cmd], "-Y", "esp.spi =="], tmp_path, CAP)
    check_error(r, cmd, 2)
    assert r.stderr == (f"ipsecscope {cmd}: error: bad display filter: a value was expected here\n"
                        "  esp.spi ==\n"
                        "            ^\n")


def test_a_damaged_capture_is_an_error_and_a_warning_is_a_warning(tmp_path: Path) -> None:
    """Cut off part-way: read up to the damage and a non-zero exit status, so an error (decrypt said
    "warning" and exited 1); a key row that cannot be used: skipped, the run goes on, a warning."""
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(CAP.read_bytes()[:-100])
    stale = tmp_path / "esp_sa"
    stale.write_text(ESP_SA.read_text() + '"IPv4","198.18.0.1","198.18.0.2","0x00000001","AES-CBC [RFC3602]",'
                                           '"0x0011","NULL",""\n')
    for cmd, args, status in (("decrypt", ["decrypt", cut, "-k", stale, "-q", "-o", tmp_path / "o.pcapng"], 1),
                              ("sas", ["sas", cut, "-k", stale], 2), ("summary", ["summary", cut], 1)):
        r = run(args, tmp_path, cut)
        line = check_error(r, cmd, status)
        assert str(cut) in line or "truncated" in line or "cut" in line, line
        levels = [level for _c, level, _line in messages(r.stderr)]
        assert levels == (["warning", "error"] if cmd != "summary" else ["error"]), r.stderr


def test_message_form() -> None:
    from ipsecscope.cli.common import command_of, message

    assert message("sas", "error", "a: b") == "ipsecscope sas: error: a: b"
    assert message(None, "warning", "x\ny\n") == "ipsecscope: warning: x\n  y"  # one message, continuation indented
    assert command_of("ipsecscope keys list") == "keys list" and command_of("ipsecscope") is None


def test_the_readme_example_is_what_the_cli_prints(tmp_path: Path) -> None:
    """README's block under "Every message on stderr has one form": each command's stderr, and the
    exit status `echo $?` shows, as printed."""
    import shlex

    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    block = readme.split("Every message on stderr has one form", 1)[1].split("```\n", 2)[1]
    lines = block.splitlines()
    cwd = ROOT / lines[0].removeprefix("$ cd ")
    r, shown, ran = None, 0, 0
    for i, line in enumerate(lines[1:], 1):
        if not line.startswith("$ "):
            continue
        said = []
        for nxt in lines[i + 1:]:
            if nxt.startswith("$ "):
                break
            said.append(nxt)
        if line == "$ echo $?":
            assert r is not None and said == [str(r.returncode)], (said, r.returncode)
            shown += 1
            continue
        args = [str(tmp_path / a) if a.endswith(".pcapng") and a != "capture.pcapng" else a
                for a in shlex.split(line.removeprefix("$ ipsecscope "))]
        r = subprocess.run([*IPSECSCOPE, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
        assert r.stderr.splitlines() == said, (line, r.stderr)
        ran += 1
    assert ran == 2 and shown == 1


def test_a_note_is_neither_error_nor_warning(tmp_path: Path) -> None:
    """`keys convert --capture` writes a key logged behind NAT for the address on the wire: done for
    the user, nothing wrong, exit 0 — a note, in the same form; "wrote N entries" is the report."""
    nat = SAMPLES / "nat-napt"
    r = subprocess.run([*IPSECSCOPE, "keys", "convert", nat / "charon-left.log", "--to", "esp_sa", "--capture",
                        nat / "capture.pcapng", "-o", tmp_path / "esp_sa"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    *notes, report = r.stderr.splitlines()
    assert report == f"wrote 4 entries to {tmp_path / 'esp_sa'}", r.stderr
    assert len(notes) == 4 and notes == sorted(notes), r.stderr
    assert all(re.fullmatch(rf"ipsecscope keys convert: note: {re.escape(str(nat))}/charon-left\.log:\d+: SPI 0x[0-9a-f]{{8}} "
                            r"written for the address on the wire \(across NAT 10\.0\.0\.1 -> 198\.18\.0\.1\)", n)
               for n in notes), notes


# The commands' reports on stderr (not messages: decrypt's per-SA counts and totals, keys convert's
# count), by the start of their text as written in the source.
REPORTS = {("decrypt.py", "f'SPI 0x"), ("decrypt.py", "f'AH SPI 0x"), ("decrypt.py", "f'{stats.frames} frames"),
           ("keys.py", "f'wrote {n} entries")}  # (as ast.unparse writes them)


def test_every_stderr_print_of_the_cli_goes_through_the_message_helpers() -> None:
    """A print to stderr in ipsecscope/cli/ outside cli/common.py's error/warn/note is a message in
    a form of its own (how the five forms came about), unless it is one of the known reports."""
    import ast

    from conftest import ROOT

    found, stray = set(), []
    for path in sorted((ROOT / "ipsecscope" / "cli").glob("*.py")):
        if path.name == "common.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"):
                continue
            dest = next((ast.unparse(k.value) for k in node.keywords if k.arg == "file"), "")
            if dest not in ("sys.stderr", "err"):
                continue
            head = ast.unparse(node.args[0]) if node.args else ""
            known = next(((f, p) for f, p in REPORTS if f == path.name and head.startswith(p)), None)
            if known:
                found.add(known)
            else:
                stray.append(f"{path.name}:{node.lineno}: {head[:60]}")
    assert not stray, "use cli.common.error/warn/note: " + "; ".join(stray)
    assert found == REPORTS  # the check sees the reports it allows (it can tell a print to stderr)
