from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
# Wireshark's own IPsec test captures and key tables (GPL-2.0+), copied unchanged from
# ../shared/corpus/wireshark with their MANIFEST.md (provenance, sha256, what each exercises).
CORPUS = DATA / "wireshark"
SAMPLES = ROOT / "samples"
# How tests run the CLI: the interpreter running the suite, never a bare `ipsecscope` from PATH
# (a global install would hide a missing install step; tests/test_lint.py enforces this).
IPSECSCOPE = (sys.executable, "-m", "ipsecscope")


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    return CORPUS


def corpus_captures() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.name.endswith((".pcap", ".pcapng", ".pcapng.gz")))


def have_tshark() -> bool:
    return shutil.which("tshark") is not None


def ike_messages(path: Path) -> list:
    """Every IKE message of a capture, through our own capture reader, demux and IKE decoder."""
    from ipsecscope.capture import open_capture
    from ipsecscope.decode.demux import Decoder
    from ipsecscope.decode.ike import parse_ike
    from ipsecscope.model.packets import IkeDatagram

    dec = Decoder()
    out = []
    with open_capture(path) as reader:
        for raw in reader:
            pkt = dec.decode(raw)
            if isinstance(pkt, IkeDatagram):
                out.append(parse_ike(pkt))
    return out


needs_tshark = pytest.mark.skipif(not have_tshark(), reason="tshark not installed (./dev test installs it)")
