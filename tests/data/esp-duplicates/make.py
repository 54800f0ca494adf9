"""Writes this folder's capture from the project's own sample (run from the repository root:
``.venv/bin/python tests/data/esp-duplicates/make.py``): samples/healthy-gcm with every ESP frame
captured twice, 4 µs apart (a capture point that sees each packet twice), one ESP frame replayed
with the same bytes 3 s after the capture's last frame, and one copy 4 µs after its original with
its ICV's last octet changed. The IKE frames are written once. And tests/data/ah/ah-v4.pcap with
every frame twice, 4 µs apart. README.md says what each shows."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "samples" / "synthetic"))

from espgen import PcapWriter  # noqa: E402

from ipsecscope.capture import open_capture  # noqa: E402

S = 1_000_000_000  # ns
ESP = 14 + 20 + 8  # the sample's ESP: behind Ethernet, IPv4 (no options), UDP 4500 (RFC 3948)


def is_esp(frame: bytes) -> bool:
    """UDP 4500 with a non-zero SPI where an IKE message has its non-ESP marker (RFC 3948 §2.2)."""
    return frame[23] == 17 and frame[36:38] == b"\x11\x94" and frame[ESP:ESP + 4] != bytes(4)


def main() -> None:
    with open_capture(ROOT / "samples" / "healthy-gcm" / "capture.pcapng") as r:
        frames = [(f.ts_ns, bytes(f.data)) for f in r]
    esp = [i for i, (_t, d) in enumerate(frames) if is_esp(d)]
    altered = esp[7]  # the 8th ESP frame: its copy's ICV differs (other bytes: a replay, not a copy)
    with PcapWriter(HERE / "captured-twice-replay.pcap") as w:
        for i, (ts, data) in enumerate(frames):
            w.write(ts, data)
            if i in esp:
                copy = data[:-1] + bytes([data[-1] ^ 0x5A]) if i == altered else data
                w.write(ts + 4_000, copy)
        ts, data = frames[esp[0]]
        w.write(frames[-1][0] + 3 * S, data)  # the first ESP packet again, 3 s after the last frame
    with open_capture(ROOT / "tests" / "data" / "ah" / "ah-v4.pcap") as r, \
            PcapWriter(HERE / "ah-captured-twice.pcap") as w:
        for f in r:
            w.write(f.ts_ns, bytes(f.data))
            w.write(f.ts_ns + 4_000, bytes(f.data))


if __name__ == "__main__":
    main()
