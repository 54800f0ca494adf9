"""Writes this folder from two real strongSwan peers (run as root from the repository root:
``.venv/bin/python tests/data/live-walk/make.py``): a part of the live4 field walkthrough, the
gateway's view of a tunnel whose path misbehaves, as ``ipsecscope live -i veth0`` saw it.

tests/netns_peers.RoutedPair in "bridge" mode: the left gateway 198.18.0.1 (inner 10.1.0.1), the
right 198.18.0.2 (inner 10.2.0.1), between them samples/lib/bridge.py with a --control policy
file; kernel-libipsec (ESP in UDP 4500), AES-GCM, DPD every 5 s. tcpdump runs on the bridge's
lan side, which sees what the left gateway's veth sees. In order:

1. tunnel up, 3 pings answered;
2. the bridge drops ESP right -> left ("drop": ["wan>lan"]): 6 pings unanswered, while the IKE
   liveness checks of both sides still pass; then healed, 3 pings answered;
3. the wan link's MTU lowered to 1280 (a PMTU black hole: the bridge cannot pass the 1460-byte
   ESP packets and nobody sends ICMP), then 3 rounds of 2 pings of 1400 bytes (lost) and 2 of
   56 bytes (answered);
4. IKE SA terminated.

Written: capture.pcap, charon-left.log (the gateway's log: its keys, what it did),
bridge.log (the bridge's policy changes and every frame it dropped: the ground truth).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from netns_peers import RoutedPair, psk_confs  # noqa: E402


def main() -> None:
    left, right = psk_confs("gw", "aes256gcm16-prfsha256-ecp256", "aes256gcm16-ecp256",
                            "live4-walkthrough-psk", conn_opts={"mobike": "no", "dpd_delay": "5s"},
                            child_opts={"rekey_time": "0", "start_action": "none"})
    work = Path(tempfile.mkdtemp(prefix="live-walk-"))
    try:
        with RoutedPair(work, left, right, mode="bridge", capture_at="lan") as pair:
            policy = pair.start_controlled_bridge()
            pair.initiate("net")
            pair.ping(3, interval=0.5)
            policy(drop=["wan>lan"])
            pair.ping(6, interval=0.5, check=False)
            policy()
            pair.ping(3, interval=0.5)
            pair.exec_router("ip", "link", "set", "wan", "mtu", "1280")
            for _ in range(3):
                pair.ping(2, size=1400, interval=0.5, check=False)
                pair.ping(2, interval=0.5)
            pair.terminate_ike("gw")
            time.sleep(0.5)
        shutil.copyfile(pair.capture_path, HERE / "capture.pcap")
        shutil.copyfile(pair.left.log, HERE / "charon-left.log")
        shutil.copyfile(pair.bridge_log, HERE / "bridge.log")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
