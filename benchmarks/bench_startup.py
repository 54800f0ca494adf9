#!/usr/bin/env python3
"""Start-up cost of the CLI: CPU time (user+sys) of ``python -m ipsecscope COMMAND`` on a tiny
capture, where reading the capture is negligible and what is left is the interpreter plus the
imports that command pulls in (issue 15: start-up was a third of ``sas --json`` on 200k frames).

Each command runs ``--repeat`` times in a fresh interpreter; the best CPU time is kept (on a shared
machine the minimum is the least disturbed run) and the load average is printed with it. Also
prints which heavy third-party packages each command imported (``-X importtime``), so a regression
shows its cause.

Run by hand (not a test):  python3 benchmarks/bench_startup.py [--repeat 7] [--file F [--keys K]]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HEAVY = ("numpy", "cryptography", "rich", "textual", "pyshark", "scapy", "lxml", "email")


def cpu_of(cmd: list[str], env: dict) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def heavy_imports(cmd: list[str], env: dict) -> list[str]:
    err = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env, text=True, check=False).stderr
    tops = set()
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line:
            tops.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return [h for h in HEAVY if h in tops]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--file", help="capture to read (default: a 2000-frame ESP pcap from gen_esp_pcap.py)")
    ap.add_argument("--keys", help="its keys: adds a `sas -k --json` row (the analysis path issue 15 measures)")
    a = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # import from .pyc
    if a.file:
        cap = a.file
    else:
        sys.path.insert(0, str(HERE))
        from gen_esp_pcap import build

        cap = os.path.join(tempfile.mkdtemp(prefix="bench-startup-"), "esp-2k.pcap")
        build(2000, cap)
    py = [sys.executable]
    cases = {
        "python -c pass": [*py, "-c", "pass"],
        "--version": [*py, "-m", "ipsecscope", "--version"],
        "summary": [*py, "-m", "ipsecscope", "summary", cap],
        "summary --json": [*py, "-m", "ipsecscope", "summary", "--json", cap],
        "sas --json": [*py, "-m", "ipsecscope", "sas", "--json", cap],
        "sas": [*py, "-m", "ipsecscope", "sas", cap],
        "findings": [*py, "-m", "ipsecscope", "findings", cap],
        "findings --json": [*py, "-m", "ipsecscope", "findings", "--json", cap],
    }
    if a.keys:
        cases["sas -k --json"] = [*py, "-m", "ipsecscope", "sas", "--json", cap, "-k", a.keys]
    print(f"{'command':<18} {'best CPU s':>10}  heavy imports")
    for name, cmd in cases.items():
        cpu_of(cmd, env)  # warm-up: writes .pyc, fills the page cache
        best = min(cpu_of(cmd, env) for _ in range(a.repeat))
        print(f"{name:<18} {best:>10.3f}  {' '.join(heavy_imports(cmd, env)) or '-'}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
