from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
# Wireshark's own IPsec test captures and key tables (GPL-2.0+), copied unchanged from
# ../shared/corpus/wireshark with their MANIFEST.md (provenance, sha256, what each exercises).
CORPUS = DATA / "wireshark"
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    return CORPUS


def corpus_captures() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.name.endswith((".pcap", ".pcapng", ".pcapng.gz")))


def have_tshark() -> bool:
    return shutil.which("tshark") is not None


needs_tshark = pytest.mark.skipif(not have_tshark(), reason="tshark not installed (./dev test installs it)")
