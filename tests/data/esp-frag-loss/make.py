"""Writes this folder from two real strongSwan peers (run as root from the repository root:
``.venv/bin/python tests/data/esp-frag-loss/make.py``): ESP carried in IP fragments on a path
that loses later fragments, seen at the receiver's side.

tests/netns_peers.RoutedPair in "bridge" mode: the left gateway 198.18.0.1 (inner 10.1.0.1), the
right 198.18.0.2 (inner 10.2.0.1), between them samples/lib/bridge.py with a --control policy
file; kernel-libipsec (ESP in UDP 4500), AES-GCM. Every link's MTU is 1000, so an ESP packet
carrying a 1400-byte ping (about 1490 bytes of IP) leaves its sender as two IPv4 fragments (RFC
4459 §2: fragmentation after encapsulation). tcpdump runs on the bridge's wan side: what the
right gateway receives, and what it sends before the bridge. In order:

1. tunnel up, 3 small pings answered;
2. the bridge drops the non-first fragments of every 2nd fragmented datagram going lan -> wan
   (``drop_frag``): 6 pings of 1400 bytes, 3 answered (their replies fragmented too, whole), 3
   lost: the right gateway holds only the first fragment of those ESP packets, which it can
   neither reassemble nor decrypt (RFC 4459 §2: the loss of one fragment loses the packet);
3. healed: 2 pings of 1400 bytes and 2 small ones answered.

Written: capture.pcap, charon-left.log (the left gateway's log: its keys), bridge.log (the
bridge's policy changes and every fragment it dropped, with the SPI and sequence number the first
fragment of its datagram carried: the ground truth).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from netns_peers import RoutedPair, psk_confs  # noqa: E402

MTU = "1000"


def main() -> None:
    left, right = psk_confs("gw", "aes256gcm16-prfsha256-ecp256", "aes256gcm16-ecp256",
                            "field12-frag-loss-psk", conn_opts={"mobike": "no"},
                            child_opts={"rekey_time": "0", "start_action": "none"})
    work = Path(tempfile.mkdtemp(prefix="esp-frag-loss-"))
    try:
        with RoutedPair(work, left, right, mode="bridge", capture_at="wan", tag="f12") as pair:
            for ifc in ("lan", "wan"):
                pair.exec_router("ip", "link", "set", ifc, "mtu", MTU)
            for side in ("left", "right"):
                pair.exec(side, "ip", "link", "set", "veth0", "mtu", MTU)
            policy = pair.start_controlled_bridge()
            pair.initiate("net")
            pair.ping(3, interval=0.5)
            policy(drop_frag=["lan>wan"], drop_frag_every=2)
            got = pair.ping(6, size=1400, interval=0.5, check=False)
            print(f"lossy: {got}/6 answered")
            policy()
            pair.ping(2, size=1400, interval=0.5)
            pair.ping(2, interval=0.5)
        shutil.copyfile(pair.capture_path, HERE / "capture.pcap")
        shutil.copyfile(pair.left.log, HERE / "charon-left.log")
        shutil.copyfile(pair.bridge_log, HERE / "bridge.log")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
