"""What the README says about Wireshark and the ESP SA Decryption Secrets Block (type 0x45535053):
Wireshark 4.0 ignores it, so the esp_sa file stays the way to give it keys. Checked with the
tshark installed here: the block alone decrypts nothing, the same key as an esp_sa row does."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import IPSECSCOPE, SAMPLES, needs_tshark

HEALTHY = SAMPLES / "healthy-gcm"


def _icmp(capture: Path, *prefs: str) -> int:
    out = subprocess.run(["tshark", "-r", str(capture), "-o", "esp.enable_encryption_decode:TRUE", *prefs,
                          "-Y", "icmp"], capture_output=True, text=True, timeout=120)
    return len(out.stdout.splitlines())


@needs_tshark
def test_wireshark_4_0_ignores_the_esp_sa_secrets_block(tmp_path: Path) -> None:
    version = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout
    if not re.search(r"TShark \(Wireshark\) 4\.0\.", version):
        pytest.skip(f"the README's claim is about Wireshark 4.0; this is {version.splitlines()[0]}")
    keys = tmp_path / "keys.pcapng"
    subprocess.run([*IPSECSCOPE, "keys", "convert", str(HEALTHY / "keys" / "esp_sa"), "--to", "dsb", "-o", str(keys)],
                   check=True, capture_output=True)
    both = tmp_path / "both.pcapng"  # the keys' section first, so the block comes before the packets
    both.write_bytes(keys.read_bytes() + (HEALTHY / "capture.pcapng").read_bytes())
    assert _icmp(both) == 0
    row = next(line for line in (HEALTHY / "keys" / "esp_sa").read_text().splitlines() if line.startswith('"IPv4"'))
    assert _icmp(HEALTHY / "capture.pcapng", "-o", f"uat:esp_sa:{row}") > 0
