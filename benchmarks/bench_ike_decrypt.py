#!/usr/bin/env python3
"""IKE decryption cost: decrypt_sk per IKEv2 message (every suite of the Wireshark corpus) and
Ikev1Decryptor per IKEv1 message, measured on the corpus messages decrypted many times over.

IKE is control traffic (a handful of messages per SA), so this only guards against a per-message
cost that would matter for captures with thousands of SAs.

    python3 benchmarks/bench_ike_decrypt.py [--rounds N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from public_data import missing  # noqa: E402
from test_ike_sk import CORPUS, V2_CAPTURES, ike_datagrams, table_keys  # noqa: E402
from test_ikev1_crypto import V1_CAPTURES, table  # noqa: E402

from ipsecscope.crypto.ike_sk import decrypt_sk, find_sk  # noqa: E402
from ipsecscope.crypto.ikev1 import Ikev1Decryptor  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    if why := missing(CORPUS):  # third-party: materialised from the shared corpus (tests/public_data.py)
        sys.exit(f"bench_ike_decrypt: {why}")
    keys = table_keys()
    for cap in V2_CAPTURES:
        work = []
        for _f, m in ike_datagrams(CORPUS / cap):
            sk = find_sk(m)
            if sk:
                work.append((m, sk[0], keys[(m[:8], m[8:16])], bool(m[19] & 8)))
        t = time.perf_counter()
        for _ in range(args.rounds):
            for m, off, k, init in work:
                decrypt_sk(m, off, k, init)
        dt = time.perf_counter() - t
        n = args.rounds * len(work)
        print(f"{cap:40s} {n / dt:9.0f} msg/s  {dt / n * 1e6:6.1f} µs/msg")
    for cap in V1_CAPTURES:
        msgs = [m for _f, m in ike_datagrams(CORPUS / cap)]
        rounds = max(1, args.rounds // 10)
        t = time.perf_counter()
        n = 0
        for _ in range(rounds):
            d = Ikev1Decryptor(table())
            for m in msgs:
                d.feed(m)
                n += 1
        dt = time.perf_counter() - t
        print(f"{cap:40s} {n / dt:9.0f} msg/s  {dt / n * 1e6:6.1f} µs/msg (IKEv1, fresh state each round)")


if __name__ == "__main__":
    main()
