"""Real strongSwan captures whose logs carry more configuration evidence than the samples' (root).

    python3 tests/data/peerlog/make_peerlog.py

- ``ts-mismatch-cfg2``: the samples' ts-mismatch scenario (samples/conf/ts-mismatch: the initiator
  asks for 10.1.0.0/24 <-> 10.9.0.0/24, the responder has 10.2.0.0/24 <-> 10.1.0.0/24) with both
  charons logging ``cfg = 2``, which adds the responder's configured selectors ("looking for a
  child config for ...", "proposing traffic selectors for us:/other:" and their rows).

Uses the project's netns harness (tests/netns_peers.py, addresses in 198.18.0.0/15, namespaces
removed afterwards) and the samples' scenario driver. Writes <scenario>/{capture.pcapng,
charon-left.log, charon-right.log} next to this file.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "samples" / "lib"))

import netns_peers  # noqa: E402
from make_samples import CONF, ts_mismatch  # noqa: E402


def main() -> int:
    netns_peers.STRONGSWAN_CONF = netns_peers.STRONGSWAN_CONF.replace("cfg = 1", "cfg = 2")
    assert "cfg = 2" in netns_peers.STRONGSWAN_CONF
    name = "ts-mismatch-cfg2"
    with tempfile.TemporaryDirectory(prefix="ipss-peerlog-") as tmp:
        work = Path(tmp)
        conf = CONF / "ts-mismatch"
        with netns_peers.StrongswanPair(work, (conf / "left.conf").read_text(),
                                        (conf / "right.conf").read_text()) as pair:
            ts_mismatch(pair)
        dest = HERE / name
        dest.mkdir(exist_ok=True)
        netns_peers.to_pcapng(work / "capture.pcap", dest / "capture.pcapng")
        shutil.copyfile(work / "left" / "charon.log", dest / "charon-left.log")
        shutil.copyfile(work / "right" / "charon.log", dest / "charon-right.log")
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
