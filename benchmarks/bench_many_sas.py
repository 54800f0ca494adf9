#!/usr/bin/env python3
"""Many SAs: does loading a capture cost the same per packet with 1 000 or 100 000 SAs?

Issue 15: correlation must grow linearly with packets, SAs and flows (it was quadratic in the
number of distinct SPIs: 5k -> 20k SPIs cost 12x the CPU). Each case is a generated capture
(raw ESP over Ethernet/IPv4, no keys, like a tunnel concentrator's uplink) with ``--per-sa``
packets on each SA, the SAs' packets interleaved round-robin (the worst order for per-flow
batching: every run holds as many SAs as packets), loaded by ``Session(keep_rows=False).load``
(what ``sas`` and ``findings`` do) in a fresh child process. Prints CPU seconds (user+sys),
CPU per packet, peak RSS and memory per SA, and the ratio of CPU per packet between the
largest and the smallest case (1.0 = linear).

Run by hand (not a test):  python3 benchmarks/bench_many_sas.py [--sas 1000 10000 100000] [--per-sa 4]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from pcapwriter import ETH, PcapWriter  # noqa: E402

CHILD = r"""
import json, resource, sys, time
from ipsecscope.session import Session
s = Session(keep_rows=False)
c = time.process_time()
st = s.load(sys.argv[1])
findings = s.findings
cpu = time.process_time() - c
print(json.dumps({"frames": st.frames, "esp": st.esp, "flows": len(s.table.flows), "child_sas": len(s.table.child_sas),
                  "findings": len(findings), "cpu": cpu,
                  "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def build(path: Path, sas: int, per_sa: int) -> int:
    """``sas`` SAs (one direction each, SPI 0x10000000 + i, distinct address pairs), ``per_sa``
    packets each, interleaved round-robin; sequence numbers count up per SA. Returns frames."""
    body = bytes(64)
    heads = []
    for i in range(sas):
        src = bytes((198, 18, (i >> 8) & 0xFF, i & 0xFF))
        dst = bytes((198, 19, (i >> 16) & 0xFF, 1))
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(body), 0, 0, 64, 50, 0, src, dst)
        heads.append(ETH + ip + struct.pack("!I", 0x10000000 + i))
    with PcapWriter(path, 1, snaplen=65535) as w:
        for k in range(per_sa):
            seq = struct.pack("!I", k + 1)
            for h in heads:
                w.add(h + seq + body)
    return sas * per_sa


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sas", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--per-sa", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ipsecscope-bench"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sas:
        cap = args.workdir / f"many-sas-{n}x{args.per_sa}.pcap"
        frames = build(cap, n, args.per_sa) if not cap.exists() else n * args.per_sa
        out = subprocess.run([sys.executable, "-c", CHILD, str(cap)], check=True, capture_output=True,
                             text=True).stdout
        r = json.loads(out.splitlines()[-1])
        assert r["frames"] == frames and r["flows"] == n, r
        rows.append((n, r))
        print(f"{n:>7,} SAs x {args.per_sa} packets = {frames:>9,} frames: CPU {r['cpu']:6.2f} s = "
              f"{r['cpu'] / frames * 1e6:5.2f} us/packet, {r['child_sas']:,} CHILD SAs, {r['findings']} findings, "
              f"peak RSS {r['rss_kib'] / 1024:5.0f} MiB", flush=True)
    (n0, r0), (n1, r1) = rows[0], rows[-1]
    per0 = r0["cpu"] / r0["frames"]
    per1 = r1["cpu"] / r1["frames"]
    print(f"CPU per packet at {n1:,} SAs / at {n0:,} SAs: {per1 / per0:.2f} (1.0 = linear in SAs)")
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
