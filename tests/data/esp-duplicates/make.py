"""Writes this folder's capture from the project's own sample (run from the repository root:
``.venv/bin/python tests/data/esp-duplicates/make.py``): samples/healthy-gcm with every ESP frame
captured twice, 4 µs apart (a capture point that sees each packet twice), one ESP frame replayed
with the same bytes 3 s after the capture's last frame, and one copy 4 µs after its original with
its ICV's last octet changed. The IKE frames are written once. And tests/data/ah/ah-v4.pcap with
every frame twice, 4 µs apart. And mirror-reordered.pcap (keys mirror.keys.json, mirror.esp_sa for
tshark): ESP made here with samples/synthetic/espgen (fixed seed), every packet twice with the copy
queued behind up to three later packets of its flow, as a mirror (SPAN) port does. README.md says
what each shows."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "samples" / "synthetic"))

from espgen import PcapWriter, Sa, esp_encrypt, esp_frame, icmp_echo, ipv4  # noqa: E402

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

    mirror()
    flood(frames[0])


MS = 1_000_000  # ns


def mirror() -> None:
    """A tunnel (SPIs 0x5a000001 out, 0x5a000002 back, AES-GCM-16, raw ESP) carrying 40 pings, one
    every 1 ms, each answered 0.3 ms later; and a one-way SA (0x5a000003, 198.18.30.3 -> .4, 5
    packets, nothing back). A SPAN session mirroring both the ingress and the egress port of the
    router queues each packet's second copy 0.05-3.5 ms behind the first: behind up to three later
    packets of the same flow. Two copies are not the capture's: request 10's copy comes 30 ms late
    (later than any capture copy: a replay), and reply 20's copy has its ICV's last octet changed
    (other bytes: a replay; its ICV fails)."""
    rng = random.Random(4303)
    t0 = 1_765_000_000 * S

    def sa(spi: int, src: str, dst: str) -> Sa:
        return Sa(spi, src, dst, "aes-gcm16", rng.randbytes(36))

    out, back = sa(0x5A000001, "198.18.30.1", "198.18.30.2"), sa(0x5A000002, "198.18.30.2", "198.18.30.1")
    oneway = sa(0x5A000003, "198.18.30.3", "198.18.30.4")

    def packet(s: Sa, seq: int, reply: bool) -> bytes:
        data = bytes((i + seq) & 0xFF for i in range(32))
        inner = ipv4("10.30.1.1" if not reply else "10.30.2.1", "10.30.2.1" if not reply else "10.30.1.1", 1,
                     icmp_echo(7, seq, data, reply), ident=seq)
        return esp_frame(s, esp_encrypt(s, seq, inner, 4, rng.randbytes(16)), ident=seq)

    frames: list[tuple[int, bytes]] = []
    for k in range(1, 41):
        for s, at in ((out, 0), (back, 300_000)):
            ts = t0 + k * MS + at
            f = packet(s, k, s is back)
            frames.append((ts, f))
            if s is out and k == 10:
                frames.append((ts + 30 * MS, f))
            elif s is back and k == 20:
                frames.append((ts + 2_500_000, f[:-1] + bytes([f[-1] ^ 0x5A])))
            else:
                frames.append((ts + rng.randrange(50_000, 3_500_000), f))
    for k in range(1, 6):
        ts = t0 + 100 * MS + k * 200 * MS
        f = packet(oneway, k, False)
        frames += [(ts, f), (ts + 4_000, f)]
    frames.sort(key=lambda x: x[0])
    with PcapWriter(HERE / "mirror-reordered.pcap") as w:
        for ts, f in frames:
            w.write(ts, f)
    keys = {"schema": "ipsecscope.keys/1", "generator": "tests/data/esp-duplicates/make.py",
            "esp": [x.json_entry() for x in (out, back, oneway)]}
    (HERE / "mirror.keys.json").write_text(json.dumps(keys, indent=1) + "\n")
    (HERE / "mirror.esp_sa").write_text("".join(x.esp_sa_line() + "\n" for x in (out, back, oneway)))


def flood(ike_init: tuple[int, bytes]) -> None:
    """flood.pcap: one ESP packet (SPI 0x5a000010, 198.18.31.1 -> .2, seq 1) sent 50 times 100 µs
    apart, as a flood or replay tool re-sends the same bytes; a flow (0x5a000011, .3 -> .4) whose 10
    packets the capture sees 4 times each, 5 µs apart (-i any on a VLAN of a bond in a bridge: 3
    copies, the most a capture point makes, state/copies.MAX_CAPTURE_COPIES); and the sample's
    IKE_SA_INIT request (frame 1) sent 12 times 100 µs apart."""
    rng = random.Random(4303 + 1)
    t0 = 1_765_000_100 * S
    flooded = Sa(0x5A000010, "198.18.31.1", "198.18.31.2", "aes-gcm16", rng.randbytes(36))
    seen4 = Sa(0x5A000011, "198.18.31.3", "198.18.31.4", "aes-gcm16", rng.randbytes(36))

    def packet(s: Sa, seq: int) -> bytes:
        inner = ipv4("10.31.1.1", "10.31.2.1", 1, icmp_echo(9, seq, bytes(range(32))), ident=seq)
        return esp_frame(s, esp_encrypt(s, seq, inner, 4, rng.randbytes(16)), ident=seq)

    frames: list[tuple[int, bytes]] = []
    one = packet(flooded, 1)
    frames += [(t0 + k * 100_000, one) for k in range(50)]
    for k in range(1, 11):
        f = packet(seen4, k)
        frames += [(t0 + 10 * MS + k * MS + c * 5_000, f) for c in range(4)]
    frames += [(t0 + 30 * MS + k * 100_000, ike_init[1]) for k in range(12)]
    with PcapWriter(HERE / "flood.pcap") as w:
        for ts, f in frames:
            w.write(ts, f)


if __name__ == "__main__":
    main()
