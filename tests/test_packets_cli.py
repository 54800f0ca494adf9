"""`-Y` on decrypt and summary, and the packets table as text, against tshark on real captures."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import IPSECSCOPE, SAMPLES, needs_tshark

HEALTHY = SAMPLES / "healthy-gcm"
CAP = HEALTHY / "capture.pcapng"
KEYS = HEALTHY / "keys"


def tshark(cap: Path, flt: str, *fields: str, keys: Path | None = KEYS) -> list[list[str]]:
    env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(keys)) if keys else dict(os.environ)
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-o", "esp.enable_encryption_decode:TRUE", "-Y", flt,
                          "-T", "fields", *[x for f in fields for x in ("-e", f)]],
                         env=env, capture_output=True, text=True, check=True).stdout
    return [ln.split("\t") for ln in out.splitlines()]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*IPSECSCOPE, *args], capture_output=True, text=True)


@needs_tshark
def test_decrypt_writes_only_what_the_filter_selects(tmp_path: Path) -> None:
    flt = "icmp.type == 8 && esp.sequence > 2"
    out = tmp_path / "clear.pcapng"
    r = run("decrypt", str(CAP), "-k", str(KEYS), "-o", str(out), "-Y", flt, "-q")
    assert r.returncode == 0, r.stderr
    want = tshark(CAP, flt, "icmp.ident", "icmp.seq")
    assert len(want) >= 3
    # the output holds those inner packets, in order, and nothing else
    assert tshark(out, "", "icmp.ident", "icmp.seq", keys=None) == want
    assert tshark(out, "icmp.type != 8", "frame.number", keys=None) == []


@needs_tshark
def test_summary_restricted_to_a_filter() -> None:
    flt = "isakmp.exchtype == 36 || esp.spi == 0x15b69dc5"
    r = run("summary", str(CAP), "-Y", flt, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["filter"] == flt
    ike = [m["frame"] for m in doc["ike"]]
    assert ike == [int(x[0]) for x in tshark(CAP, "isakmp.exchangetype == 36", "frame.number")]
    assert [f["spi"] for f in doc["esp"]] == ["0x15b69dc5"]
    assert doc["esp"][0]["packets"] == len(tshark(CAP, "esp.spi == 0x15b69dc5", "frame.number"))
    bad = run("summary", str(CAP), "-Y", "esp.spi = 1")
    assert bad.returncode == 2 and "bad display filter" in bad.stderr


def test_packets_text_shows_inner_packets_and_outer_spi() -> None:
    r = run("packets", str(CAP), "-k", str(KEYS), "-Y", "icmp.type == 0", "-c", "2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    assert "ESP" in lines[0] and "ESP seq 1 ▸ ICMP 10.2.0.1 → 10.1.0.1 Echo (ping) reply" in lines[0]
    assert "198.18.0.2:4500" in lines[0]  # outer addresses and SPI stay visible
    fields = run("packets", "--fields")
    assert "isakmp.exchangetype" in fields.stdout and "ipsecscope.finding" in fields.stdout
