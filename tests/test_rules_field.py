"""Finding classes from issue 11 (field diagnosis) and issue 14 (wording, counts), on real captures.

Each test names the class it proves; the evidence is a real capture (samples/, or strongSwan
peers in namespaces) and the assertions check what a user reads: side, SPI, counts, frames.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, SAMPLES

from ipsecscope.model.sa import Severity
from ipsecscope.session import Session


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ipsecscope", *args], capture_output=True, text=True, cwd=ROOT)


def session(name: str, keys: bool = True) -> Session:
    s = Session()
    kdir = SAMPLES / name / "keys"
    if keys and kdir.is_dir():
        s.add_key_files(sorted(p for p in kdir.iterdir() if p.is_file() and p.stat().st_size))
    s.load(SAMPLES / name / "capture.pcapng")
    return s


def test_no_proposal_wording_says_common_to_both_peers():
    """Issue 14 #14: "No proposal is common to both peers", with and without the peers' logs."""
    d = SAMPLES / "proposal-mismatch"
    with_logs = cli("findings", str(d / "capture.pcapng"), "-k", str(d / "charon-left.log"),
                    str(d / "charon-right.log"))
    assert "No proposal is common to both peers." in with_logs.stdout.replace("\n", " ")
    fs = [f for f in session("ike-proposal-mismatch", keys=False).findings if f.code == "IKE-NO-PROPOSAL"]
    assert fs and all("No proposal is common to both peers." in f.explanation for f in fs)
    assert not any("configured on both" in f.explanation for f in fs)
    assert fs[0].severity == Severity.ERROR
