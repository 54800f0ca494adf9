"""Writes this folder's captures with two real strongSwan peers in network namespaces (run as root
from the repository root: ``.venv/bin/python tests/data/ikev1-frag/make.py``).

IKEv1 Main Mode with RSA certificates (samples/conf/pki) and ``fragmentation = force``: MM5 and
MM6 (ID, CERT, SIG: about 1.9 KB) go as ISAKMP messages carrying one Fragment payload each
(type 132, strongSwan's src/libcharon/encoding/payloads/fragment_payload.c), kernel-libipsec ESP
over UDP 4500. A user-space bridge (samples/lib/bridge.py) sits between the peers; the capture is
on its right-hand (wan) side:

    mm-cert-frag.pcap       every fragment passes; then 3 pings and the IKE SA deleted
    mm-frag-lost.pcap       the bridge drops the initiator's first Fragment message once (MM5
                            fragment 1): the responder never completes MM5, the initiator
                            retransmits all fragments after 1 s (tests/netns_peers.py's
                            retransmit_timeout) and the second try goes through
    am-cert-frag.pcap       Aggressive Mode instead: AM2 (SA, KE, nonce, ID, CERT, SIG in the
                            clear) and AM3 go in pieces
    mm-frag-never.pcap      the bridge drops MM5's fragment 1 every time (all 4 tries): the
                            responder never completes MM5, the initiator gives up after 3
                            retransmissions

Beside each: the charon logs (``ike 4``: the phase-1 keys) and the bridge's log.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from netns_peers import RoutedPair  # noqa: E402

PKI = ROOT / "samples" / "conf" / "pki"
CREDS = {side: {f"x509/{side}.pem": PKI / f"{side}.pem", "x509ca/ca.pem": PKI / "ca.pem",
                f"private/{side}.key": PKI / f"{side}.key"} for side in ("left", "right")}


def conf(side: str, aggressive: bool = False) -> str:
    me, peer = ("left", "right") if side == "left" else ("right", "left")
    addrs = ("198.18.0.1", "198.18.0.2") if side == "left" else ("198.18.0.2", "198.18.0.1")
    nets = ("10.1.0.0/24", "10.2.0.0/24") if side == "left" else ("10.2.0.0/24", "10.1.0.0/24")
    return f"""# ikev1-frag: IKEv1 Main Mode, RSA certificates, fragmentation = force -- {side} peer.
connections {{
    v1frag {{
        version = 1
        aggressive = {"yes" if aggressive else "no"}
        local_addrs = {addrs[0]}
        remote_addrs = {addrs[1]}
        # ESP in UDP 4500 even without NAT: kernel-libipsec does ESP in user space over UDP.
        encap = yes
        proposals = aes256-sha256-modp2048
        rekey_time = 0
        mobike = no
        # Always split big IKEv1 messages (the Fragment payload, vendor ID FRAGMENTATION).
        fragmentation = force
        local {{
            auth = pubkey
            certs = {me}.pem
            id = {me}.ipsecscope.test
        }}
        remote {{
            auth = pubkey
            id = {peer}.ipsecscope.test
            cacerts = ca.pem
        }}
        children {{
            net {{
                local_ts = {nets[0]}
                remote_ts = {nets[1]}
                esp_proposals = aes256gcm16
                rekey_time = 0
                life_time = 0
                start_action = none
            }}
        }}
    }}
}}
"""


def run(name: str, bridge_args: list[str], *, fails: bool = False, aggressive: bool = False) -> None:
    work = Path(f"/tmp/ikev1-frag-{name}")
    shutil.rmtree(work, ignore_errors=True)
    pair = RoutedPair(work, conf("left", aggressive), conf("right", aggressive), mode="bridge", capture_at="wan",
                      creds=CREDS)
    with pair:
        pair.start_bridge(*bridge_args)
        if fails:
            r = pair.initiate("net", ike="v1frag", check=False)
            if r.returncode == 0:
                raise SystemExit(f"{name}: Main Mode completed although every MM5 fragment 1 was dropped")
        else:
            pair.initiate("net", ike="v1frag")
            pair.ping(3)
            time.sleep(0.3)
            pair.terminate_ike("v1frag")
        time.sleep(0.3)
    shutil.copyfile(work / "capture.pcap", HERE / f"{name}.pcap")
    shutil.copyfile(work / "left" / "charon.log", HERE / f"{name}.charon-left.log")
    shutil.copyfile(work / "right" / "charon.log", HERE / f"{name}.charon-right.log")
    shutil.copyfile(work / "bridge.log", HERE / f"{name}.bridge.log")


# MM5 goes as 2 pieces per try: the 1st, 3rd, 5th, 7th Fragment messages are its fragment 1.
RUNS = {
    "mm-cert-frag": lambda: run("mm-cert-frag", []),
    "mm-frag-lost": lambda: run("mm-frag-lost", ["--drop-ike-frag", "1"]),
    "mm-frag-never": lambda: run("mm-frag-never", [a for n in (1, 3, 5, 7) for a in ("--drop-ike-frag", str(n))],
                                 fails=True),
    "am-cert-frag": lambda: run("am-cert-frag", [], aggressive=True),
}


def main() -> None:
    """Every run, or those named on the command line."""
    for name in sys.argv[1:] or list(RUNS):
        RUNS[name]()


if __name__ == "__main__":
    main()
