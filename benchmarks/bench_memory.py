#!/usr/bin/env python3
"""Peak RSS of ``ipsecscope sas --json`` on a mostly-TCP capture with some ESP, at several sizes
(issue 15: "a 2 GB capture of mostly TCP needs 183 MB for sas"; the analysis path may keep
nothing per non-IPsec frame and at most 32 B per ESP frame).

The capture (generated here, cached in --workdir) is what a capture on a gateway's outside link
with other traffic looks like: ``--tcp-share`` of the frames are TCP segments of many
connections (IMIX sizes, both directions), the rest ESP on 8 SAs (every 5th UDP-encapsulated,
sequence numbers counting up), plus a few UDP datagrams and ICMP echoes. Each size runs once
per repeat in a fresh interpreter; peak RSS is the child's VmHWM. The slope (MiB per million
frames, per million ESP frames) is what grows with the capture; the intercept is the
interpreter and its imports.

Run by hand (not a test):  python3 benchmarks/bench_memory.py [--sizes 250000 1000000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen_esp_pcap import IMIX  # noqa: E402
from pcapwriter import ETH, PcapWriter, esp_head, ipv4  # noqa: E402

# Runs the CLI in-process and prints its own peak RSS (VmHWM: ru_maxrss survives execve, so a
# child of a big parent would report the parent's) and CPU time on the last stderr line.
PROBE = (
    "import resource, sys\n"
    "from ipsecscope.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
    "ru = resource.getrusage(resource.RUSAGE_SELF)\n"
    "print('probe', hwm, ru.ru_utime + ru.ru_stime, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def build_mix(n: int, path: str | os.PathLike, tcp_share: float = 0.95, seed: int = 1,
              sizes: tuple[int, ...] = IMIX) -> dict:
    """Write ``n`` frames, ``tcp_share`` of them TCP (2% UDP/ICMP among those), the rest ESP,
    frame sizes drawn from ``sizes`` (each >= 60). Returns {"frames", "esp", "other"}."""
    rnd = random.Random(seed)
    filler = bytes(rnd.getrandbits(8) for _ in range(2048))
    esp_t = []
    for i in range(8):
        a, b = bytes((198, 18, 0, 1 + i % 4)), bytes((198, 19, 0, 1 + i // 2))
        src, dst = (a, b) if i % 2 == 0 else (b, a)
        t = {}
        for size in set(sizes):
            pre, el = esp_head(src, dst, 0xC0000000 | i, size, i % 5 == 4, i)
            t[size] = (pre, filler[:el - 8])
        esp_t.append([t, 0])
    hosts = [bytes((10, 9, h >> 8, h & 0xFF)) for h in range(1, 400)]
    servers = [bytes((192, 0, 2, s)) for s in range(1, 50)]
    tcp_t = {}
    for size in set(sizes):
        tcp_t[size] = filler[:size - 14 - 20 - 20]
    esp = other = 0
    with PcapWriter(path, 11) as w:
        for i in range(n):
            size = sizes[rnd.randrange(len(sizes))]
            if rnd.random() >= tcp_share:
                e = esp_t[rnd.randrange(8)]
                e[1] += 1
                pre, tail = e[0][size]
                frame = pre + struct.pack("!I", e[1]) + tail
                esp += 1
            else:
                h, s = rnd.choice(hosts), rnd.choice(servers)
                sport = 1024 + rnd.randrange(60000)
                src, dst, sp, dp = (h, s, sport, 443) if rnd.random() < 0.5 else (s, h, 443, sport)
                kind = rnd.random()
                if kind < 0.01:  # an ICMP echo
                    body = struct.pack("!BBHHH", 8, 0, 0, i & 0xFFFF, 1) + filler[:56]
                    frame = ETH + ipv4(src, dst, 1, len(body), i) + body
                elif kind < 0.02:  # DNS-like UDP
                    body = struct.pack("!HHHH", sp, 53, 8 + 40, 0) + filler[:40]
                    frame = ETH + ipv4(src, dst, 17, len(body), i) + body
                else:
                    pl = tcp_t[size]
                    tcp = struct.pack("!HHIIBBHHH", sp, dp, i, 0, 0x50, 0x18, 65535, 0, 0) + pl
                    frame = ETH + ipv4(src, dst, 6, len(tcp), i) + tcp
                other += 1
            w.add(frame)
    return {"frames": n, "esp": esp, "other": other}


def measure(cap: Path, *args: str) -> tuple[float, float]:
    """(peak RSS MiB, CPU s) of ``ipsecscope sas --json CAP`` run in a fresh interpreter."""
    r = subprocess.run([sys.executable, "-c", PROBE, "sas", "--json", str(cap), *args], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, check=False)
    last = r.stderr.strip().splitlines()[-1].split()
    assert last[0] == "probe", r.stderr[-2000:]
    return int(last[1]) / 1024, float(last[2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[250_000, 1_000_000])
    ap.add_argument("--tcp-share", type=float, default=0.95)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workdir", default=str(HERE / "out"))
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    rows = []
    for n in a.sizes:
        cap = Path(a.workdir) / f"tcpmix-{n}-{a.tcp_share}.pcap"
        if not cap.exists():
            t = time.perf_counter()
            info = build_mix(n, cap, a.tcp_share)
            print(f"generated {cap} ({cap.stat().st_size >> 20} MiB, {info['esp']} ESP) in "
                  f"{time.perf_counter() - t:.0f} s", file=sys.stderr)
        rss, cpu = min(measure(cap) for _ in range(a.repeat))
        esp = round(n * (1 - a.tcp_share))
        rows.append((n, esp, cap.stat().st_size >> 20, rss, cpu))
        print(f"{n:>9} frames ({esp:>7} ESP, {cap.stat().st_size >> 20:>5} MiB): peak RSS {rss:6.1f} MiB, "
              f"CPU {cpu:.2f} s", flush=True)
    if len(rows) >= 2:
        (n0, e0, _, r0, _), (n1, e1, _, r1, _) = rows[0], rows[-1]
        per_frame = (r1 - r0) * (1 << 20) / (n1 - n0)
        print(f"slope: {per_frame:.1f} B per frame = {per_frame * (n1 - n0) / max(e1 - e0, 1):.1f} B per ESP "
              f"frame if all of it were ESP's (target: 0 per non-IPsec frame, <= 32 per ESP frame)")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
