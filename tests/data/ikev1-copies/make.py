"""Writes this folder's capture from the project's own strongSwan sample (run from the repository
root: ``.venv/bin/python tests/data/ikev1-copies/make.py``): samples/ikev1-dead-peer (IKEv1 Main
Mode, Quick Mode, DPD; strongSwan 5.9.8 in namespaces) with every frame captured twice, 9 µs apart,
as a capture point that sees each packet twice (a bridge and its port, a mirror of both
directions) holds it. README.md says what it shows; the sample's bytes are unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "samples" / "synthetic"))

from espgen import PcapWriter  # noqa: E402

from ipsecscope.capture import open_capture  # noqa: E402


def main() -> None:
    with open_capture(ROOT / "samples" / "ikev1-dead-peer" / "capture.pcapng") as r:
        frames = [(f.ts_ns, bytes(f.data)) for f in r]
    with PcapWriter(HERE / "captured-twice.pcap") as w:
        for ts, data in frames:
            w.write(ts, data)
            w.write(ts + 9_000, data)


if __name__ == "__main__":
    main()
