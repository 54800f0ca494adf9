"""Make the plugin's test capture with two real strongSwan peers (root, strongSwan, tcpdump).

Both peers run the same short CHILD SA rekey timer (rekey_time = 6 s, rand_time = 0), so their
timers fire together: real CREATE_CHILD_SA rekeys from both sides, some crossing (RFC 7296
§2.8.1). Uses the project's netns harness (tests/netns_peers.py) and key extractor
(samples/lib/charon_keys.py). Writes rekey-timers/{capture.pcapng, keys/, charon-*.log} here.

    python3 plugins/ipsecscope-rekeytiming/tests/data/make_capture.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "samples" / "lib"))

import charon_keys  # noqa: E402
from netns_peers import StrongswanPair, psk_confs, to_pcapng  # noqa: E402


def main() -> int:
    left, right = psk_confs(
        "rk", "aes128gcm16-prfsha256-ecp256", "aes128gcm16", "ipsecscope-rekeytiming-psk",
        conn_opts={"mobike": "no"},
        child_opts={"rekey_time": "6s", "life_time": "30s", "rand_time": "0", "start_action": "none"})
    out = HERE / "rekey-timers"
    with tempfile.TemporaryDirectory(prefix="ipss-rekeytiming-") as tmp:
        work = Path(tmp)
        with StrongswanPair(work, left, right) as pair:
            pair.initiate("net", ike="rk")
            for _ in range(10):  # ~20 s: three rekey rounds of both timers
                pair.ping(2, check=False)
                time.sleep(1.5)
            pair.terminate_ike("rk")
        if out.exists():
            shutil.rmtree(out)
        (out / "keys").mkdir(parents=True)
        to_pcapng(work / "capture.pcap", out / "capture.pcapng")
        shutil.copyfile(work / "left" / "charon.log", out / "charon-left.log")
        shutil.copyfile(work / "right" / "charon.log", out / "charon-right.log")
        charon_keys.write_tables(out / "keys", [out / "charon-left.log", out / "charon-right.log"])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
