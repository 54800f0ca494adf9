"""Benchmark ``ipsecscope summary`` against ``tshark -T fields -e esp.spi -e esp.sequence``.

Generates (once) a >= 1M-packet ESP capture with benchmarks/gen_esp_pcap.py, then runs each tool
``--repeat`` times, reporting the best wall time as packets/s, and peak RSS (max over the process
tree, from wait4). It also checks that ipsecscope's per-SPI packet counts and sequence ranges equal
the generator's ground truth, and that its packet count equals tshark's ESP line count, so a
fast-but-wrong run does not count.

Usage: python3 benchmarks/bench_summary.py [-n 1000000] [--repeat 3] [--no-tshark] [--file F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gen_esp_pcap  # noqa: E402


def timed(cmd: list[str], stdout=subprocess.DEVNULL) -> tuple[float, int, bytes, float]:
    """(wall seconds, peak RSS in KiB over the process tree, stdout if captured, CPU seconds
    user+sys of the process tree — less sensitive than wall time to other load on the machine)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if stdout == subprocess.PIPE else b""
    _pid, status, ru = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0,):
        raise SystemExit(f"{cmd[0]} failed with exit status {proc.returncode}")
    return dt, ru.ru_maxrss, out, ru.ru_utime + ru.ru_stime


def check(doc: dict, truth: dict) -> list[str]:
    """What in a ``summary --json`` document disagrees with gen_esp_pcap's ground truth (empty: all
    per-SPI packet counts, bytes, sequence ranges and the IKE and keepalive counts match)."""
    problems = []
    got = {f"{f['src']}>{f['dst']}/{f['spi']}": f for f in doc["esp"]}
    for key, t in truth["flows"].items():
        g = got.get(key)
        if g is None and not t["packets"]:  # a tiny capture (run_table's start-up row) leaves SAs unused
            continue
        if g is None or (g["packets"], g["bytes"], g["seq_min"], g["seq_max"]) != (
                t["packets"], t["bytes"], 1, t["seq_max"]):
            problems.append(f"{key}: expected {t}, got {g}")
    if doc["counts"]["keepalive"] != truth["keepalive"] or doc["counts"]["ike"] != truth["ike"]:
        problems.append(f"keepalive/ike counts: {doc['counts']} vs {truth['keepalive']}/{truth['ike']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--file", help="benchmark this capture instead of the generated one (no truth check)")
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pcapng", action="store_true",
                    help="also time summary on the same packets as pcapng (converted with editcap)")
    args = ap.parse_args(argv)

    truth = None
    if args.file:
        path = args.file
    else:
        path = os.path.join(HERE, "out", f"esp-{args.n}.pcap")
        meta = path + ".truth.json"
        if not (os.path.exists(path) and os.path.exists(meta)):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            t0 = time.perf_counter()
            truth = gen_esp_pcap.build(args.n, path)
            with open(meta, "w") as fh:
                json.dump(truth, fh)
            print(f"generated {path} ({os.path.getsize(path) / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s")
        with open(meta) as fh:
            truth = json.load(fh)

    exe = shutil.which("ipsecscope") or sys.executable
    cmd = [exe] if exe != sys.executable else [sys.executable, "-m", "ipsecscope.cli"]
    cmd += ["summary", path, "--json", "--workers", str(args.workers)]
    best = None
    for _ in range(args.repeat):
        dt, rss, out, cpu = timed(cmd, subprocess.PIPE)
        if best is None or dt < best[0]:
            best = (dt, rss, out, cpu)
    dt, rss, out, cpu = best
    doc = json.loads(out)
    frames = doc["frames"]
    esp_pkts = doc["counts"]["esp"]
    print(f"ipsecscope summary: {frames} frames ({esp_pkts} ESP) in {dt:.3f} s = {frames / dt:,.0f} packets/s, "
          f"peak RSS {rss / 1024:.0f} MiB, CPU {cpu:.2f} s (best of {args.repeat}, workers={args.workers})")
    ok = True
    if truth is not None:
        for problem in check(doc, truth):
            print(f"  MISMATCH {problem}")
            ok = False
        print("  per-SPI counts, bytes, sequence ranges, IKE and keepalive counts match the generator: "
              + ("yes" if ok else "NO"))

    if args.pcapng and shutil.which("editcap"):
        ng = os.path.splitext(path)[0] + ".pcapng"
        if not os.path.exists(ng):
            subprocess.run(["editcap", "-F", "pcapng", path, ng], check=True)
        ncmd = cmd[:]
        ncmd[ncmd.index(path)] = ng
        nbest = min(timed(ncmd)[:2] for _ in range(args.repeat))  # (wall, rss) of the fastest run
        print(f"ipsecscope summary (pcapng): {frames / nbest[0]:,.0f} packets/s ({nbest[0]:.3f} s), "
              f"peak RSS {nbest[1] / 1024:.0f} MiB")

    if not args.no_tshark and shutil.which("tshark"):
        tcmd = ["tshark", "-r", path, "-T", "fields", "-e", "esp.spi", "-e", "esp.sequence"]
        tbest = None
        for _ in range(args.repeat):
            tdt, trss, tout, tcpu = timed(tcmd, subprocess.PIPE)
            if tbest is None or tdt < tbest[0]:
                tbest = (tdt, trss, tout, tcpu)
        tdt, trss, tout, tcpu = tbest
        tesp = sum(1 for line in tout.splitlines() if line.strip())
        print(f"tshark -T fields:   {frames} frames ({tesp} ESP) in {tdt:.3f} s = {frames / tdt:,.0f} packets/s, "
              f"peak RSS {trss / 1024:.0f} MiB, CPU {tcpu:.2f} s")
        if tesp != esp_pkts:
            print(f"  MISMATCH: tshark saw {tesp} ESP packets, ipsecscope {esp_pkts}")
            ok = False
        print(f"speed-up: {tdt / dt:.1f}x wall-clock (target >= 10x); {tcpu / cpu:.1f}x in CPU time")
    load = os.getloadavg()
    print(f"load average during the run: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
