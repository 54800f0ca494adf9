#!/usr/bin/env python3
"""Benchmark ``Session().load`` — the pipeline behind the TUI, ``sas``, ``findings`` and the API
(capture → decode → decrypt → correlate → one FrameRow per frame) — against tshark on the same file.

Each case runs in a fresh child process (so peak RSS is that load's alone, from getrusage in the
child), ``--repeat`` times, best wall time kept; CPU seconds (user+sys) are printed too because
wall time on a shared machine depends on its load (printed at the end). Each capture is loaded
with rows (the TUI), without (``sas``/``findings``: ``Session(keep_rows=False)``), and through
``ipsecscope sas [-k KEYS] --json`` as a user runs it (interpreter start included: the figure
issue 15 compares with tshark's CPU time).

Cases:
  no keys     benchmarks/out/esp-1000000.pcap (1M ESP/IKE/NAT-keepalive frames, 373 MB; generated
              with gen_esp_pcap.py when missing, as bench_summary.py does)
  AES-GCM     a keyed tunnel-mode AES-GCM-256 capture from bench_decrypt.py's generator
              (--gcm-packets, default 200 000, cached in --workdir), loaded with its keys: every
              ESP packet is decrypted, its inner header parsed, its flow correlated
  tshark      ``tshark -r FILE -T fields -e frame.number -e esp.spi -e esp.sequence > /dev/null``
              on the no-key file (and, with -o esp.enable_encryption_decode, on the keyed one)

Run by hand (not a test):  python3 benchmarks/bench_session.py [--repeat 1] [--no-tshark] [--file F]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

CHILD = r"""
import json, resource, sys, time
from ipsecscope.session import Session
path, rows, keys = sys.argv[1], sys.argv[2] == "rows", sys.argv[3:]
s = Session(keep_rows=rows)
if keys:
    s.add_key_files(keys)
c = time.process_time()
t = time.perf_counter()
st = s.load(path)
dt = time.perf_counter() - t
cpu = time.process_time() - c
n = len(s.rows)
probe = [s.rows[i].info for i in (0, n // 2, n - 1)] if n else []  # rows are readable
print(json.dumps({"frames": st.frames, "esp": st.esp, "decrypted": st.decrypted, "no_key": st.no_key,
                  "rows": n, "wall": dt, "cpu": cpu,
                  "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "probe": probe}))
"""


def load_case(path: Path, keys: list[Path], repeat: int, rows: bool = True) -> dict:
    best = None
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), "rows" if rows else "norows",
                              *map(str, keys)], check=True, capture_output=True, text=True).stdout
        r = json.loads(out.splitlines()[-1])
        if best is None or r["wall"] < best["wall"]:
            best = r
    return best


def cli_case(path: Path, keys: list[Path], repeat: int) -> tuple[float, float, int]:
    """(best wall s, its CPU s, its peak RSS KiB) of ``ipsecscope sas FILE [-k KEYS] --json`` as a
    user runs it (interpreter start included), measured by /usr/bin/time (bench_decrypt._run)."""
    from bench_decrypt import _run

    cmd = [sys.executable, "-m", "ipsecscope", "sas", str(path), *(a for k in keys for a in ("-k", str(k))), "--json"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # import from .pyc
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # warm-up, writes .pyc
    runs = [_run(cmd, env) for _ in range(repeat)]
    dt, rss, cpu = min(runs, key=lambda r: r[2])
    return dt, cpu, rss


def cli_line(name: str, n: int, r: tuple[float, float, int]) -> str:
    return (f"{name:<28} {n:>9,} frames  {r[0]:6.2f} s wall, CPU {r[1]:6.2f} s = {r[1] / n * 1e6:5.2f} µs/frame, "
            f"peak RSS {r[2] / 1024:5.0f} MiB")


def tshark_case(path: Path, repeat: int, env: dict | None = None, extra: tuple[str, ...] = ()) -> tuple[float, float, int]:
    """(best wall s, its CPU s, its peak RSS KiB) of tshark -T fields on ``path``."""
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        p = subprocess.Popen(["tshark", "-n", "-r", str(path), *extra, "-T", "fields", "-e", "frame.number",
                              "-e", "esp.spi", "-e", "esp.sequence"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env)
        _pid, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("tshark failed")
        r = (dt, ru.ru_utime + ru.ru_stime, ru.ru_maxrss)
        if best is None or r[0] < best[0]:
            best = r
    return best


def line(name: str, r: dict) -> str:
    n = r["frames"]
    return (f"{name:<28} {n:>9,} frames  {r['wall']:6.2f} s wall = {n / r['wall']:>9,.0f} frames/s "
            f"({r['wall'] / n * 1e6:5.1f} µs/frame), CPU {r['cpu']:6.2f} s = {n / r['cpu']:>9,.0f} frames/CPU-s, "
            f"peak RSS {r['rss_kib'] / 1024:5.0f} MiB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="frames in the no-key capture")
    ap.add_argument("--file", type=Path, help="load this capture instead of the generated no-key one")
    ap.add_argument("--gcm-packets", type=int, default=200_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ipsecscope-bench"))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--no-keys-case", action="store_true", help="skip the keyed AES-GCM case")
    args = ap.parse_args()

    path = args.file
    if path is None:
        path = HERE / "out" / f"esp-{args.n}.pcap"
        if not path.exists():
            import gen_esp_pcap

            path.parent.mkdir(parents=True, exist_ok=True)
            truth = gen_esp_pcap.build(args.n, str(path))
            Path(str(path) + ".truth.json").write_text(json.dumps(truth))
    tshark = shutil.which("tshark") if not args.no_tshark else None

    r = load_case(path, [], args.repeat)
    print(line("Session.load (no keys)", r))
    rn = load_case(path, [], args.repeat, rows=False)
    print(line("  without rows (sas)", rn))
    cn = cli_case(path, [], args.repeat)
    print(cli_line("ipsecscope sas --json", r["frames"], cn))
    if tshark:
        tw, tc, trss = tshark_case(path, args.repeat)
        n = r["frames"]
        print(f"{'tshark -T fields':<28} {n:>9,} frames  {tw:6.2f} s wall = {n / tw:>9,.0f} frames/s "
              f"({tw / n * 1e6:5.1f} µs/frame), CPU {tc:6.2f} s = {n / tc:>9,.0f} frames/CPU-s, "
              f"peak RSS {trss / 1024:5.0f} MiB")
        print(f"  Session.load vs tshark: {tw / r['wall']:.2f}x wall, {tc / r['cpu']:.2f}x CPU; "
              f"sas --json vs tshark: {tc / cn[1]:.2f}x CPU")

    if not args.no_keys_case:
        sys.path.insert(0, str(HERE))
        import bench_decrypt

        args.workdir.mkdir(parents=True, exist_ok=True)
        suite = "aes-gcm-256"
        cap = args.workdir / f"{suite}-{args.gcm_packets}.pcap"
        scratch = args.workdir / "scratch-session.pcap"
        # The generator is seeded: the 8-packet scratch run yields the same SAs (keys) as the big one.
        sas = bench_decrypt.generate(scratch if cap.exists() else cap, suite, 8 if cap.exists() else args.gcm_packets)
        keys, prof = bench_decrypt.write_keys(sas, args.workdir, suite)
        rk = load_case(cap, [keys], args.repeat)
        print(line("Session.load (AES-GCM, keys)", rk) + f"  [{rk['decrypted']:,} decrypted]")
        if rk["decrypted"] != rk["esp"]:
            print(f"  WARNING: only {rk['decrypted']} of {rk['esp']} ESP packets decrypted")
        rkn = load_case(cap, [keys], args.repeat, rows=False)
        print(line("  without rows (sas)", rkn))
        ck = cli_case(cap, [keys], args.repeat)
        print(cli_line("ipsecscope sas -k --json", rk["frames"], ck))
        if tshark:
            env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(prof))
            tw, tc, trss = tshark_case(cap, args.repeat, env, ("-o", "esp.enable_encryption_decode:TRUE"))
            n = rk["frames"]
            print(f"{'tshark (decrypting)':<28} {n:>9,} frames  {tw:6.2f} s wall = {n / tw:>9,.0f} frames/s "
                  f"({tw / n * 1e6:5.1f} µs/frame), CPU {tc:6.2f} s = {n / tc:>9,.0f} frames/CPU-s, "
                  f"peak RSS {trss / 1024:5.0f} MiB")
            print(f"  Session.load vs tshark: {tw / rk['wall']:.2f}x wall, {tc / rk['cpu']:.2f}x CPU; "
                  f"sas -k --json vs tshark: {tc / ck[1]:.2f}x CPU (the issue-15 figure; target >= 10)")
    load = os.getloadavg()
    print(f"load average: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs "
          f"(driver RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
