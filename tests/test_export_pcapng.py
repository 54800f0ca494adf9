"""The pcapng writer on its own: blocks read back by the capture stage's reader and by tshark
(interfaces with their link types, nanosecond timestamps, comments, a Decryption Secrets Block)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ipsecscope.capture import open_capture
from ipsecscope.export.pcapng import SECRETS_TYPE_IPSEC, PcapngWriter
from tests.conftest import needs_tshark

ICMP = bytes.fromhex("4500001c0001000040010000c0a80001c0a800020800f7ff00000000")  # IPv4 + ICMP echo
ETH = bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ICMP


def _write(path: Path) -> None:
    with PcapngWriter(str(path), comment="test section") as w:
        raw = w.add_interface(101, name="decrypted")
        eth = w.add_interface(1)
        w.write_packet(raw, 1_700_000_000_123_456_789, ICMP)
        w.write_packet(eth, 1_700_000_001_000_000_001, ETH, comment="kept as is")
        w.write_packet(raw, 1_700_000_002_999_999_999, ICMP[:21], orig_len=len(ICMP))  # odd length: padding
        w.write_secrets(b'{"schema": "ipsecscope.keys/1", "esp": []}', comment="esp_sa rows here")


def test_read_back_with_the_capture_reader(tmp_path: Path) -> None:
    f = tmp_path / "w.pcapng"
    _write(f)
    with open_capture(f) as r:
        frames = list(r)
        secrets = list(r.secrets)
    assert [(x.linktype, x.ts_ns, x.data, x.orig_len) for x in frames] == [
        (101, 1_700_000_000_123_456_789, ICMP, len(ICMP)),
        (1, 1_700_000_001_000_000_001, ETH, len(ETH)),
        (101, 1_700_000_002_999_999_999, ICMP[:21], len(ICMP)),
    ]
    assert secrets == [(SECRETS_TYPE_IPSEC, b'{"schema": "ipsecscope.keys/1", "esp": []}')]


@needs_tshark
def test_tshark_reads_it(tmp_path: Path) -> None:
    f = tmp_path / "w.pcapng"
    _write(f)
    out = subprocess.run(["tshark", "-n", "-r", str(f), "-T", "fields", "-e", "frame.time_epoch",
                          "-e", "frame.protocols", "-e", "frame.comment", "-e", "frame.cap_len", "-e", "frame.len"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [line.split("\t") for line in out]
    assert [r[0] for r in rows] == ["1700000000.123456789", "1700000001.000000001", "1700000002.999999999"]
    assert rows[0][1].startswith("raw:ip:icmp") and rows[1][1].startswith("eth:ethertype:ip:icmp")
    assert rows[1][2] == "kept as is"
    assert rows[2][3:] == ["21", "28"]
