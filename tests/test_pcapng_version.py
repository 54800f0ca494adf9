"""A pcapng Section Header Block of a version tshark cannot read is refused, in every reader path.

The pcapng draft (§4.1) says a reader must not read a major version it does not know, and a minor
version above its own may hold what it cannot read; wiretap reads 1.0 and 1.2 (old writers' mark
for the same format) and refuses the rest ("unknown SHB version"). Read as 1.0 such a file would be
misparsed without a word, so ipsecscope refuses it with one line naming the file and the version:
the first section and a later one, plain and gzip, through every front end and reader (the general
reader, the session's fast loop, summary's scanner, decrypt's layout scan, a pcapng key file).

Inputs: the strongSwan sample ``healthy-gcm`` with its SHB version field changed, and that
capture followed by such a copy as a second section. tshark is the oracle where it is installed.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import SAMPLES, needs_tshark
from test_bad_input import ipsecscope, one_line_error

from ipsecscope.errors import CaptureFormatError, IpsecscopeError, KeyFileError

HEALTHY = SAMPLES / "healthy-gcm"
CAP = HEALTHY / "capture.pcapng"
KEYS = HEALTHY / "keys"


def with_version(data: bytes, major: int, minor: int) -> bytes:
    out = bytearray(data)
    assert out[8:12] == b"\x4d\x3c\x2b\x1a"  # little-endian SHB at offset 0
    struct.pack_into("<HH", out, 12, major, minor)
    return bytes(out)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int, str]]:
    """name -> (file, offset of the refused SHB, version text)."""
    d = tmp_path_factory.mktemp("shb")
    good = CAP.read_bytes()
    out = {}
    for name, data, off, ver in [
        ("first-2.0", with_version(good, 2, 0), 0, "2.0"),
        ("first-1.1", with_version(good, 1, 1), 0, "1.1"),
        ("second-2.0", good + with_version(good, 2, 0), len(good), "2.0"),
    ]:
        p = d / f"{name}.pcapng"
        p.write_bytes(data)
        out[name] = (p, off, ver)
    gz = d / "second-2.0.pcapng.gz"
    gz.write_bytes(gzip.compress(good + with_version(good, 2, 0)))
    out["second-2.0-gz"] = (gz, len(good), "2.0")
    return out


COMMANDS = {
    "summary": ("summary",),
    "summary-json": ("summary", "--json"),
    "packets": ("packets", "-k", KEYS),
    "sas": ("sas", "-k", KEYS),
    "stats": ("stats",),
    "findings": ("findings", "-k", KEYS),
    "decrypt": ("decrypt", "-k", KEYS, "-j", "1"),
    "decrypt-j2": ("decrypt", "-k", KEYS, "-j", "2"),
}


@pytest.mark.parametrize("name", ["first-2.0", "first-1.1", "second-2.0", "second-2.0-gz"])
@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_every_command_refuses_an_unknown_shb_version(cmd: str, name: str, files, tmp_path: Path) -> None:
    path, off, ver = files[name]
    args = [COMMANDS[cmd][0], path, *COMMANDS[cmd][1:]]
    if cmd.startswith("decrypt"):
        args += ["-o", tmp_path / "out.pcap"]
    line = one_line_error(ipsecscope(*args))
    assert str(path) in line and f"version {ver}" in line and f"offset {off}" in line, line
    assert not (tmp_path / "out.pcap").exists()  # nothing half-written


def test_a_key_file_with_an_unknown_shb_version_is_refused(files) -> None:
    path, _off, _ver = files["first-2.0"]
    line = one_line_error(ipsecscope("sas", CAP, "-k", path))
    assert str(path) in line and "version 2.0" in line, line
    from ipsecscope.keys.dsb import iter_secrets

    with pytest.raises(KeyFileError, match=r"version 2\.0"):
        list(iter_secrets(path.read_bytes(), str(path)))


def test_the_api_and_each_reader_raise_the_typed_error(files) -> None:
    from ipsecscope import Session
    from ipsecscope.capture import layout, open_capture
    from ipsecscope.decode.fastpath import scan_capture

    for name in ("first-2.0", "second-2.0", "second-2.0-gz"):
        path, off, _ver = files[name]
        with pytest.raises(CaptureFormatError, match=f"offset {off} has version 2.0"):
            Session.from_files([path], [KEYS])
        with pytest.raises(CaptureFormatError, match=f"offset {off} has version 2.0"):
            scan_capture(path, lambda p: None)
        with pytest.raises(CaptureFormatError, match=f"offset {off} has version 2.0"):
            with open_capture(path) as rdr:
                for _ in rdr:
                    pass
    path, _off, _ver = files["first-2.0"]
    with pytest.raises(CaptureFormatError, match="version 2.0"):
        layout.scan(path)
    assert issubclass(CaptureFormatError, IpsecscopeError)


def test_version_1_2_reads_as_1_0(tmp_path: Path) -> None:
    """Old writers marked the same format 1.2; tshark reads it, and so do we, with the same answer."""
    p = tmp_path / "v12.pcapng"
    p.write_bytes(with_version(CAP.read_bytes(), 1, 2))
    for cmd in (["summary", "--json"], ["sas", "--json", "-k", KEYS]):
        a = json.loads(ipsecscope(cmd[0], CAP, *cmd[1:]).stdout)
        b = json.loads(ipsecscope(cmd[0], p, *cmd[1:]).stdout)
        a.pop("file", None), b.pop("file", None)
        assert json.dumps(a, sort_keys=True).replace(str(CAP), "") == json.dumps(b, sort_keys=True).replace(str(p), "")


@needs_tshark
@pytest.mark.parametrize("major,minor,readable", [(2, 0, False), (1, 1, False), (1, 2, True), (0, 0, False)])
def test_tshark_agrees_on_which_versions_are_readable(major: int, minor: int, readable: bool, tmp_path: Path) -> None:
    p = tmp_path / "v.pcapng"
    p.write_bytes(with_version(CAP.read_bytes(), major, minor))
    t = subprocess.run([shutil.which("tshark") or "tshark", "-r", p, "-c", "1"], capture_output=True, text=True)
    assert (t.returncode == 0) == readable, t.stderr
    r = ipsecscope("summary", p)
    assert (r.returncode == 0) == readable, r.stderr
