"""Key-source detection goes by a log's line format, never by the words in a file.

A markdown file that mentions pluto (and has a table: its rows start with "| ", as a pluto debug
line with --log-no-time does) was read as a Libreswan log, and a note quoting one charon line as a
charon log; either then failed with a hint about debug flags that has nothing to do with the file.
Every document of this repository is no key file, and gets the one-line "not a key file format"
error; every real log of tests/data and samples/ is still detected, in each line style it comes in.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES
from test_bad_input import ipsecscope, one_line_error

from ipsecscope.keys.formats import detect_format

KEYS = ROOT / "tests" / "data" / "keys"
DOCS = sorted(p for p in [*ROOT.glob("*.md"), *(ROOT / "docs").rglob("*.md"), *(ROOT / "tests" / "data").rglob("*.md"),
                          *SAMPLES.rglob("*.md")] if p.is_file())
LIBRESWAN = sorted((KEYS / "libreswan").glob("*.initiator.log.gz")) + sorted((KEYS / "libreswan").glob("*.responder.log.gz"))
CHARON = sorted(KEYS.glob("charon-*.log")) + sorted(SAMPLES.glob("*/charon-left.log"))


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_the_documents_include_ones_that_mention_pluto() -> None:
    texts = {_rel(p): p.read_text() for p in DOCS}
    assert "README.md" in texts and "tests/data/keys/libreswan/README.md" in texts
    assert sum("pluto" in t and re.search(r"(?m)^\| ", t) is not None for t in texts.values()) >= 2


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_no_document_is_a_key_file(doc: Path) -> None:
    assert detect_format(doc.read_bytes()) is None


@pytest.mark.parametrize("doc", ["README.md", "tests/data/keys/libreswan/README.md"])
def test_a_document_as_key_source_gets_the_one_line_error(doc: str) -> None:
    line = one_line_error(ipsecscope("sas", SAMPLES / "healthy-gcm" / "capture.pcapng", "-k", doc))
    assert f"{doc}: not a key file format ipsecscope knows" in line, line


def test_a_note_quoting_one_charon_line_is_no_charon_log(tmp_path: Path) -> None:
    quoted = next(line for line in (KEYS / "charon-healthy-gcm-left.log").read_text().splitlines()
                  if "[IKE]" in line and "Sk_ei secret =>" in line)
    note = tmp_path / "notes.md"
    note.write_text(f"# What charon logs at ike 4\n\nThe key dump starts with\n\n    {quoted}\n\nand goes on.\n")
    assert detect_format(note.read_bytes()) is None
    assert "not a key file format" in one_line_error(ipsecscope("sas", SAMPLES / "healthy-gcm" / "capture.pcapng",
                                                                "-k", note))


@pytest.mark.parametrize("log", LIBRESWAN, ids=lambda p: p.name)
def test_every_pluto_log_is_detected_in_each_line_style(log: Path) -> None:
    text = gzip.decompress(log.read_bytes()).decode()
    syslog = re.sub(r"(?m)^(\w{3} +\d+ [\d:]+)\.\d+: ", r"\1 left pluto[512]: ", text)
    no_time = re.sub(r"(?m)^\w{3} +\d+ [\d:.]+: ", "", text)
    # plutodebug=base: no key dumps, and the parser's hint says which flags to set
    base = "\n".join(ln for ln in no_time.splitlines() if not any(s in ln for s in ("| ikev2 I", "| ikev2 R", "enckey", "authkey")))
    for variant in (text, syslog, no_time, base):
        assert detect_format(variant.encode()) == "libreswan"


@pytest.mark.parametrize("log", CHARON, ids=_rel)
def test_every_charon_log_is_detected_in_each_line_style(log: Path) -> None:
    text = log.read_text()
    syslog = re.sub(r"(?m)^\S+ (\d{2}\[)", r"Nov 25 20:09:03 left charon: \1", text)
    no_thread = re.sub(r"(?m)^\S+ \d{2}\[", "[", text)
    for variant in (text, syslog, no_thread):
        assert detect_format(variant.encode()) == "charon"
