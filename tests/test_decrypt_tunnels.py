"""`decrypt -o` opens the tunnels and carriers the decoder opens (GRE, IP-in-IP, ERSPAN, VXLAN,
Geneve; MPLS, PPPoE, PPP, NFLOG, pflog): tests/data/tunnels and tests/data/carriers hold
samples/healthy-gcm inside each, so each decrypts to the very inner packets healthy-gcm itself
decrypts to. `sas`, `packets` and the TUI read them since field9; decrypt's per-frame path
counted GRE/IP-in-IP/VXLAN/Geneve frames as other traffic ("the capture has no ESP or AH
packets", exit 3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, SAMPLES

from ipsecscope.capture import open_capture

KEYS = SAMPLES / "healthy-gcm" / "keys"
# (the tunnels/*-inside.pcap captures are not the whole sample: test_field_tunnels_plain.py, test_tunnel_views.py)
CAPTURES = sorted(p for p in (DATA / "tunnels").glob("*.pcap") if not p.stem.endswith("-inside")) + sorted(
    (DATA / "carriers").glob("*.pcap"))


def _decrypt(cap: Path, out: Path) -> list[bytes]:
    p = subprocess.run([sys.executable, "-m", "ipsecscope", "decrypt", str(cap), "-k", str(KEYS), "-o", str(out),
                        "-q"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    with open_capture(out) as r:
        return [bytes(f.data) for f in r]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[bytes]:
    inner = _decrypt(SAMPLES / "healthy-gcm" / "capture.pcapng", tmp_path_factory.mktemp("ref") / "o.pcapng")
    assert len(inner) == 18
    return inner


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_decrypt_writes_the_inner_packets_of_tunnelled_esp(cap: Path, reference: list[bytes], tmp_path: Path) -> None:
    assert _decrypt(cap, tmp_path / "o.pcapng") == reference


def test_decrypt_writes_esp_fragmented_inside_and_around_a_tunnel(reference: list[bytes], tmp_path: Path) -> None:
    """tunnels/frag-inside.pcap: the sample's ESP packets 5 and 7 in two IP fragments inside GRE
    and VXLAN, and packet 9 inside a VXLAN packet fragmented outside the tunnel: the inner packets
    of the sample's first, third and fifth ESP packet, in that order."""
    cap = DATA / "tunnels" / "frag-inside.pcap"
    assert _decrypt(cap, tmp_path / "o.pcapng") == [reference[0], reference[2], reference[4]]
