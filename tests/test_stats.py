"""`ipsecscope stats` against tshark: per-flow packet/byte counts and the IO graph from tshark's
frames and times; every conversation's "follow" filter selects, in tshark, exactly the frames the
conversation counts."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from conftest import IPSECSCOPE, SAMPLES, needs_tshark

CASES = [
    (SAMPLES / "healthy-gcm" / "capture.pcapng", SAMPLES / "healthy-gcm" / "keys", SAMPLES / "healthy-gcm" / "keys"),
    (SAMPLES / "cbc-sha2-pfs" / "capture.pcapng", SAMPLES / "cbc-sha2-pfs" / "keys", SAMPLES / "cbc-sha2-pfs" / "keys"),
    (SAMPLES / "synthetic" / "ipv6-transport-natt.pcap", SAMPLES / "synthetic" / "ipv6-transport-natt.esp_sa", None),
]


def _tshark(cap: Path, prof: Path, flt: str, *fields: str) -> list[list[str]]:
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-o", "esp.enable_encryption_decode:TRUE", "-Y", flt,
                          "-T", "fields", *[x for f in fields for x in ("-e", f)]],
                         env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(prof)), capture_output=True, text=True,
                         check=True).stdout
    return [ln.split("\t") for ln in out.splitlines()]


@needs_tshark
@pytest.mark.parametrize(("cap", "keys", "prof"), CASES, ids=lambda p: getattr(p, "parent", Path("")).name)
def test_stats_agree_with_tshark(cap: Path, keys: Path, prof: Path | None, tmp_path: Path) -> None:
    if prof is None:
        prof = tmp_path
        (prof / "esp_sa").write_bytes(keys.read_bytes())
    r = subprocess.run([*IPSECSCOPE, "stats", str(cap), "-k", str(keys), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "ipsecscope.stats/1"
    assert doc["flows"] and doc["conversations"]
    for f in doc["flows"]:
        frames = _tshark(cap, prof, f"esp.spi == {f['spi']} && ip.dst == {f['dst']}" if ":" not in f["dst"]
                         else f"esp.spi == {f['spi']} && ipv6.dst == {f['dst']}", "frame.time_relative")
        assert f["packets"] == len(frames)
        assert sum(f["io"]) == f["packets"]
        want = [0] * len(f["io"])
        for (t,) in frames:
            want[min(len(want) - 1, math.floor(float(t) / doc["interval"] + 1e-9))] += 1
        assert f["io"] == want, f["key"]
    # tshark dissects the plaintext of ESP whose ICV fails; ipsecscope counts no inner packet there
    bad = subprocess.run([*IPSECSCOPE, "packets", str(cap), "-k", str(keys), "-Y", 'ipsecscope.status == "icv-bad"',
                          "--json"], capture_output=True, text=True, check=True).stdout
    icv_bad = {json.loads(x)["frame"] for x in bad.splitlines()}
    for c in doc["conversations"]:
        # "follow": the conversation's filter (over decrypted ESP) selects exactly its packets
        got = [int(f) for (f,) in _tshark(cap, prof, f"esp && ({c['filter']})", "frame.number")]
        assert len([f for f in got if f not in icv_bad]) == c["packets"], c["filter"]
    for child in doc["child_sas"]:
        mine = [f for f in doc["flows"] if f["child_sa"] == child["id"]]
        assert child["packets"] == sum(f["packets"] for f in mine)
