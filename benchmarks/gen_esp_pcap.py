"""Write a large synthetic ESP capture for benchmarks (plain struct; ~1M packets in a few seconds).

Traffic: ``--sas`` ESP SAs (pairs of directions between a few hosts), IMIX frame sizes
(7 x 64-byte-class, 4 x 594, 1 x 1518, per the classic "simple IMIX"), every 5th SA
UDP-encapsulated on port 4500 (RFC 3948), plus one NAT-keepalive per 10 000 packets and an
IKEv2 INFORMATIONAL every 100 000 packets, so the fast path has to fall back now and then.
Sequence numbers count up per SA from 1, as a sender does (RFC 4303 §3.3.3).

Usage: python3 benchmarks/gen_esp_pcap.py [-n 1000000] [-o benchmarks/out/esp-1m.pcap]
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys

from pcapwriter import ETH, PcapWriter, esp_head, ipv4

IMIX = (60, 60, 60, 60, 60, 60, 60, 590, 590, 590, 590, 1514)  # frame sizes without FCS


def build(n: int, path: str, sas: int = 8, seed: int = 1) -> dict:
    """Write ``n`` frames to ``path``; returns the ground truth per (src, dst, spi)."""
    rnd = random.Random(seed)
    flows = []
    for i in range(sas):
        a = bytes((198, 18, 0, 1 + i % 4))
        b = bytes((198, 19, 0, 1 + i // 2))
        src, dst = (a, b) if i % 2 == 0 else (b, a)
        spi = 0xC0000000 | rnd.getrandbits(24) << 4 | i
        flows.append({"src": src, "dst": dst, "spi": spi, "udp": i % 5 == 4, "seq": 0, "packets": 0,
                      "bytes": 0, "first": None, "last": None})
    filler = bytes(rnd.getrandbits(8) for _ in range(2048))
    templates = {}  # (flow, size) -> (prefix up to SPI, tail after seq)
    for fi, f in enumerate(flows):
        for size in set(IMIX):
            prefix, esp_len = esp_head(f["src"], f["dst"], f["spi"], size, f["udp"], fi)
            templates[fi, size] = (prefix, filler[:esp_len - 8], esp_len)
    ike_src, ike_dst = b"\xc6\x12\x00\x01", b"\xc6\x13\x00\x01"
    ike = bytes(range(8)) + bytes(range(8, 16)) + struct.pack("!BBBBII", 46, 0x20, 37, 0x08, 7, 28 + 36)
    ike += struct.pack("!BBH", 0, 0, 36) + filler[:32]
    ike_frame = ETH + ipv4(ike_src, ike_dst, 17, 8 + 4 + len(ike), 9) + struct.pack(
        "!HHHH", 4500, 4500, 8 + 4 + len(ike), 0) + b"\0\0\0\0" + ike
    ka_frame = ETH + ipv4(ike_src, ike_dst, 17, 9, 10) + struct.pack("!HHHH", 4500, 4500, 9, 0) + b"\xff"
    extra = {"ike": 0, "keepalive": 0}
    with PcapWriter(path, 7) as w:
        for i in range(n):
            f = None
            if i % 100_000 == 99_999:
                frame = ike_frame
                extra["ike"] += 1
            elif i % 10_000 == 9_999:
                frame = ka_frame
                extra["keepalive"] += 1
            else:
                fi = rnd.randrange(sas)
                f = flows[fi]
                size = IMIX[rnd.randrange(12)]
                prefix, tail, esp_len = templates[fi, size]
                f["seq"] += 1
                frame = prefix + struct.pack("!I", f["seq"]) + tail
            ts = w.add(frame)
            if f is not None:
                f["packets"] += 1
                f["bytes"] += esp_len
                if f["first"] is None:
                    f["first"] = ts
                f["last"] = ts
    truth = {f"{'.'.join(map(str, f['src']))}>{'.'.join(map(str, f['dst']))}/{f['spi']:#010x}":
             {k: f[k] for k in ("packets", "bytes", "first", "last", "udp")} | {"seq_max": f["seq"]}
             for f in flows}
    return {"frames": n, "flows": truth, **extra}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="frames (default 1M)")
    ap.add_argument("-o", default=os.path.join(os.path.dirname(__file__), "out", "esp-1m.pcap"))
    ap.add_argument("--sas", type=int, default=8)
    args = ap.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.o)), exist_ok=True)
    truth = build(args.n, args.o, args.sas)
    print(f"wrote {args.o}: {truth['frames']} frames, {os.path.getsize(args.o)} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
