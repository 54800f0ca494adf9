"""Text output at 80 columns (issue 14 #9): in a terminal, lines wrap at spaces only — an SPI,
address, address:port, IKE SA name, finding code or SA reference is never split across lines —
and a wrapped line continues indented under its text; piped, nothing wraps at all.

Every sample is rendered in-process at 80 columns (the renderers the CLI uses, on a forced
terminal console) and compared with its JSON document; the CLI itself runs under a real pty of
80 columns for the terminal-width path.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
from pathlib import Path

import pytest
from conftest import IPSECSCOPE, SAMPLES
from rich.cells import cell_len
from rich.console import Console

from ipsecscope.cli import findings as findings_cli
from ipsecscope.cli import sas as sas_cli
from ipsecscope.cli.text import line_spans
from ipsecscope.export.documents import capture_info, findings_document, sas_document, severity_counts
from ipsecscope.session import Session


def _cases() -> list[tuple[Path, list[Path]]]:
    out = []
    for cap in sorted(SAMPLES.glob("*/capture.pcapng")):
        keys = [p for p in (cap.parent / "charon-left.log", cap.parent / "charon-right.log") if p.exists()]
        out.append((cap, keys))
    for cap in sorted((SAMPLES / "synthetic").glob("*.pcap")):
        out.append((cap, [cap.with_suffix(".esp_sa")]))
    return out


CASES = _cases()
assert len(CASES) >= 20  # every sample, not a lucky few

SPI = re.compile(r"0x[0-9a-f]{8}\b")
IKE_SA = re.compile(r"\b[0-9a-f]{16}_[0-9a-f]{16}\b")
IPV4_PORT = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?(?![\d.])")
CODE = re.compile(r"\b[A-Z][A-Z0-9]+(?:-[A-Z0-9]+)+\b")
ADDRESS_FIELDS = {"initiator", "responder", "src", "dst", "peer", "address"}


def _tokens(doc: object, into: set[str] | None = None, key: str = "") -> set[str]:
    """SPIs, IKE SA names, addresses (with ports), codes and SA references in a JSON document."""
    into = set() if into is None else into
    if isinstance(doc, dict):
        for k, v in doc.items():
            _tokens(v, into, k)
    elif isinstance(doc, list):
        for v in doc:
            _tokens(v, into, key)
    elif isinstance(doc, str):
        for rx in (SPI, IKE_SA, IPV4_PORT, CODE):
            into.update(rx.findall(doc))
        if key in ADDRESS_FIELDS or key in ("code", "sa") or ":" in doc and key in ("spi",):
            into.add(doc)
    return into


def _render(fn, *args, width: int | None, **kw) -> str:
    buf = io.StringIO()
    if width is None:  # as piped: text_console's settings for a pipe
        console = Console(file=buf, width=1 << 16, soft_wrap=True, color_system=None)
    else:
        console = Console(file=buf, width=width, force_terminal=True, color_system=None, legacy_windows=False)
    fn(*args, console=console, **kw)
    return buf.getvalue()


def _assert_unbroken(tokens: set[str], narrow: str, wide: str, what: str) -> None:
    lines = narrow.splitlines()
    for tok in sorted(tokens):
        n = wide.count(tok)
        if not n:
            continue
        whole = sum(line.count(tok) for line in lines)
        assert whole == n, f"{what}: {tok!r} shown {n}× piped, only {whole}× whole at 80 columns:\n{narrow}"


def _assert_width(text: str, width: int, what: str) -> None:
    for line in text.splitlines():
        assert cell_len(line) <= width, f"{what}: line wider than {width}: {line!r}"


@pytest.mark.parametrize(("cap", "keys"), CASES, ids=[f"{c.parent.name}/{c.name}" for c, _ in CASES])
def test_sas_and_findings_at_80_columns_never_split_a_token(cap: Path, keys: list[Path]) -> None:
    session = Session.from_files([str(cap)], [str(k) for k in keys], keep_rows=False)
    files = [str(cap)]

    sas_doc = sas_document(session.table, files, capture_info(session))
    wide = _render(sas_cli.render, session.table, width=None, keys_given=bool(keys))
    narrow = _render(sas_cli.render, session.table, width=80, keys_given=bool(keys))
    _assert_width(narrow, 80, "sas")
    _assert_unbroken(_tokens(sas_doc), narrow, wide, f"sas {cap}")
    roots = ("IKEv", "CHILD SAs with no IKE SA", "No IKE or ESP")
    for line in narrow.splitlines():
        # a wrapped line continues indented (under a tree guide or 4 spaces), never at column 0
        assert line.startswith(roots) or line[:1] in (" ", "│", "├", "└"), f"sas {cap}: {line!r}\n{narrow}"

    findings = session.findings
    counts = severity_counts(findings)
    f_doc = findings_document(findings, files, findings)
    wide = _render(findings_cli.render, findings, counts, width=None)
    narrow = _render(findings_cli.render, findings, counts, width=80)
    _assert_width(narrow, 80, "findings")
    _assert_unbroken(_tokens(f_doc), narrow, wide, f"findings {cap}")
    heads = ("ERROR ", "WARNING ", "INFO ", "No findings")
    for line in narrow.splitlines():
        if line and not line.startswith(heads) and not re.match(r"\d+ errors?, ", line):
            assert line.startswith(" " * 9), f"findings {cap}: continuation at column 0: {line!r}\n{narrow}"
    # the hint continues under its own text, not under "hint:"
    for i, line in enumerate(narrow.splitlines()[1:], 1):
        if narrow.splitlines()[i - 1].lstrip().startswith("hint:") and line.strip():
            assert line.startswith(" " * 15), line


def test_line_spans_cut_only_a_word_wider_than_the_line() -> None:
    text = "   lead 0x427e7d84 198.18.0.1:4500 " + "k" * 30 + " end"
    spans = line_spans(text, 20, 4)
    lines = [text[a:b] for a, b in spans]
    assert lines[0] == "   lead 0x427e7d84"  # the paragraph's own indent stays
    assert "198.18.0.1:4500" in lines  # moved whole to the next line rather than split
    assert all(cell_len(line.rstrip()) <= 16 for line in lines[1:])
    assert "".join(lines[2:]).replace(" ", "").startswith("k" * 30)  # only the 30-cell word is cut


# ------------------------------------------------------------------------------ the real CLI


def _pty_run(*args: object, cols: int = 80) -> str:
    """Run the CLI on a pseudo-terminal of ``cols`` columns; the screen text without escapes."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([*IPSECSCOPE, *map(str, args)], stdin=slave, stdout=slave, stderr=subprocess.DEVNULL,
                            env=env, close_fds=True)
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            proc.kill()
            raise AssertionError(f"no output for 120 s from {args}")
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait() in (0, 1), args
    text = out.decode().replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", text)


def _piped(*args: object, columns: str = "80") -> str:
    env = dict(os.environ, COLUMNS=columns)
    return subprocess.run([*IPSECSCOPE, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300).stdout


NAT = SAMPLES / "nat-napt"
LOGS = [SAMPLES / s / "charon-left.log" for s in ("nat-napt", "dead-peer", "cbc-sha2-pfs")]


def test_terminal_of_80_columns_keeps_tokens_whole_and_indents_continuations() -> None:
    args = (NAT / "capture.pcapng", "-k", NAT / "charon-left.log")
    for cmd in ("sas", "findings"):
        tokens = _tokens(json.loads(_piped(cmd, "--json", *args)))
        narrow, wide = _pty_run(cmd, *args), _piped(cmd, *args)
        _assert_width(narrow, 80, cmd)
        _assert_unbroken(tokens, narrow, wide, cmd)
        assert len(narrow.splitlines()) > len(wide.splitlines())  # it did wrap, at the terminal's width
    listed = _pty_run("keys", "list", *LOGS)
    _assert_width(listed, 80, "keys list")
    doc = json.loads(_piped("keys", "list", "--json", *LOGS))
    tokens = _tokens(doc) | {f"{e['source']}" for e in doc["esp"]}
    _assert_unbroken(tokens, listed, _piped("keys", "list", *LOGS), "keys list")
    for line in listed.splitlines():  # a record's continuation is indented
        assert line.startswith(("ESP/AH SAs", "IKEv2 SAs", "IKEv1 SAs", "0x", "SPIi ", "keys hidden", " ")), line


def test_keys_list_in_a_wide_terminal_is_a_table() -> None:
    listed = _pty_run("keys", "list", *LOGS, cols=200)
    assert "┃ SPI " in listed and "│ 0x" in listed


@pytest.mark.parametrize("cmd", [("keys", "list", *LOGS), ("summary", NAT / "capture.pcapng"),
                                 ("stats", NAT / "capture.pcapng"), ("packets", NAT / "capture.pcapng"),
                                 ("sas", NAT / "capture.pcapng", "-k", NAT / "charon-left.log"),
                                 ("findings", NAT / "capture.pcapng", "-k", NAT / "charon-left.log")],
                         ids=lambda c: c[0] if isinstance(c, tuple) else str(c))
def test_piped_output_does_not_depend_on_columns(cmd: tuple) -> None:
    # Piped, $COLUMNS=80 (set by many shells and CI runners) must not make anything wrap.
    narrow = _piped(*cmd, columns="80")
    assert narrow and narrow == _piped(*cmd, columns="250")
    assert max(map(cell_len, narrow.splitlines())) > 80


def test_keys_list_piped_is_one_line_per_sa() -> None:
    out = _piped("keys", "list", *LOGS).splitlines()
    doc = json.loads(_piped("keys", "list", "--json", *LOGS))
    for e in doc["esp"]:
        assert any(e["spi"] in line and e["source"] in line and e["src"] in line for line in out), e


def test_list_rules_columns_align_and_plugin_rules_show_their_severity() -> None:
    out = _piped("findings", "--list-rules").split("\n\n")[0].splitlines()
    header = out[0]
    starts = [header.index(h) for h in ("FAMILY", "SEVERITY", "CODES", "REFERENCE", "DESCRIPTION")]
    for line in out[1:]:
        for col in starts:  # every cell starts under its header, after a gap of two spaces
            assert line[col - 2:col] == "  " and line[col] != " ", (col, line)
    plugins = [line for line in out[1:] if line.split()[1] == "plugin"]
    assert plugins, "the rekeytiming example plugin is installed in the dev venv"
    for line in plugins:
        severity = line[starts[1]:starts[2]].strip()
        assert severity and set(severity.split("/")) <= {"info", "warning", "error"}, line


def test_stats_in_a_terminal_of_80_columns_keeps_tokens_whole() -> None:
    """stats printed 100-column records that the terminal cut anywhere ('fd00:db8::1' / '00:2',
    '120' / 'B'); in a terminal it now wraps them at spaces like sas and findings. Piped, unchanged."""
    syn = SAMPLES / "synthetic"
    args = (syn / "hostile-text.pcap", "-k", syn / "hostile-text.esp_sa")
    doc = json.loads(_piped("stats", "--json", *args))
    tokens = _tokens(doc) | {f["src"] for f in doc["flows"]} | {f["dst"] for f in doc["flows"]}
    narrow, wide = _pty_run("stats", *args), _piped("stats", *args)
    _assert_width(narrow, 80, "stats")
    _assert_unbroken(tokens, narrow, wide, "stats")
    assert re.search(r"\d+ B\b", narrow) and not re.search(r"\d+\s*\n\s*B\b", narrow)  # a size and its unit
    assert "\u00a0" not in narrow + wide
    for line in narrow.splitlines():
        assert not line or line.startswith(("  ", "times:", "CHILD SAs", "ESP/AH flows", "Conversations")), line
