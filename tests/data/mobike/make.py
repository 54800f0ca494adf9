"""Writes this folder from two real strongSwan peers (run as root from the repository root:
``.venv/bin/python tests/data/mobike/make.py``): a roaming client moves its IKE SA and CHILD SA
to a new address with MOBIKE (RFC 4555), seen from the gateway.

tests/netns_peers.StrongswanPair (namespaces ``mob-l`` / ``mob-r``, one veth): the client (left)
198.18.0.1 (inner 10.1.0.1), the gateway (right) 198.18.0.2 (inner 10.2.0.1); kernel-libipsec
(ESP in UDP 4500), AES-GCM, ``mobike = yes``; tcpdump runs in the gateway's namespace. In order:

1. tunnel up from 198.18.0.1, 3 pings answered;
2. the client gets a second address 198.18.0.3 on the same link: charon announces it
   (INFORMATIONAL with ADDITIONAL_IP4_ADDRESS, RFC 4555 §3.6);
3. 198.18.0.1 is removed (the secondary 198.18.0.3 is promoted): charon roams and sends
   UPDATE_SA_ADDRESSES with NAT_DETECTION_* (and COOKIE2) from 198.18.0.3 (RFC 4555 §3.5); the
   gateway answers and moves the IKE SA and the CHILD SA (same SPIs) to 198.18.0.3;
   pings every 20 ms run across the move (150 sent; ping-across-move.txt: how many were answered);
4. 3 pings answered through the moved SAs, then the client closes the IKE SA.

Written: capture.pcap, charon-left.log and charon-right.log (both logs: their keys, and what each
charon said about the address update), ping-across-move.txt. ``make.py nat`` writes the second case
(:func:`behind_nat`, the client comes back behind a NAPT): nat-capture.pcap, nat-charon-*.log;
``make.py unanswered`` the third (:func:`answer_lost`, the update's answer is lost): unanswered-*;
``make.py unannounced`` the fourth (:func:`unannounced`, a move to an address never announced): unannounced-*.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from netns_peers import (  # noqa: E402
    IFACE,
    LEFT_MAC,
    ROUTER_LAN_MAC,
    PeerError,
    RoutedPair,
    StrongswanPair,
    psk_confs,
)

NEW_ADDR = "198.18.0.3"


class GatewayView(StrongswanPair):
    """tcpdump on the gateway's (right's) veth, where a roaming client's move is seen."""

    def _capture_point(self) -> list[str]:
        return [self.right.netns, "tcpdump", "-i", IFACE]


def save(pair, prefix: str) -> None:
    """The run's capture and both charon logs into this folder, their names after ``prefix``."""
    shutil.copyfile(pair.capture_path, HERE / f"{prefix}capture.pcap")
    shutil.copyfile(pair.left.log, HERE / f"{prefix}charon-left.log")
    shutil.copyfile(pair.right.log, HERE / f"{prefix}charon-right.log")


def roaming_confs() -> tuple[str, str]:
    """The two peers' swanctl.conf for every run: MOBIKE on, no CHILD SA rekey of its own (the
    move's rekey is the one seen). The client may use any of its addresses; the gateway accepts
    the client from anywhere."""
    left, right = psk_confs("roam", "aes256gcm16-prfsha256-ecp256", "aes256gcm16-ecp256",
                            "mobike-roaming-psk", conn_opts={"mobike": "yes", "dpd_delay": "30s"},
                            child_opts={"rekey_time": "0", "start_action": "none"})
    return (left.replace("local_addrs = 198.18.0.1", "local_addrs = %any"),
            right.replace("remote_addrs = 198.18.0.1", "remote_addrs = %any"))


def main() -> None:
    left, right = roaming_confs()
    work = Path(tempfile.mkdtemp(prefix="mobike-"))
    try:
        with GatewayView(work, left, right, tag="mob") as pair:
            # Deleting the primary address keeps (promotes) the secondary instead of deleting it.
            pair.exec("left", "sysctl", "-qw", f"net.ipv4.conf.{IFACE}.promote_secondaries=1")
            pair.initiate("net")
            pair.ping(3, interval=0.3)
            pair.add_outer("left", NEW_ADDR)
            time.sleep(3)
            # Pings every 20 ms across the move, so ESP is on the wire while the SAs move.
            pinger = pair.popen("left", sys.executable, str(ROOT / "tests" / "netns_peers.py"), "ping",
                                pair.left.inner, pair.right.inner, "150", "0.02",
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            time.sleep(1)
            pair.exec("left", "ip", "addr", "del", "198.18.0.1/24", "dev", IFACE)
            if not pair.wait_log("right", "remote endpoint changed", timeout=20):
                raise PeerError("mobike: the gateway never moved the SA")
            out, _ = pinger.communicate(timeout=60)
            (work / "ping-across-move.txt").write_text(out.decode())
            time.sleep(1)
            pair.ping(3, interval=0.3)
            pair.terminate_ike("roam")
            time.sleep(0.5)
        save(pair, "")
        shutil.copyfile(work / "ping-across-move.txt", HERE / "ping-across-move.txt")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def behind_nat() -> None:
    """The client roams from its public address to a private one behind a NAPT (nat-capture.pcap).

    RoutedPair in "route" mode (``mob-l``, router ``mob-m``, ``mob-r``; tcpdump on the router's wan
    side, what the gateway sees): the client 198.18.0.1/32 routed by 198.18.1.1. Once the tunnel is
    up the client gets 10.0.0.1/24 behind the router's 10.0.0.254, which masquerades it to its wan
    address 198.18.2.1 with UDP ports 40000-40999 (a home router's NAPT); then 198.18.0.1 goes.
    """
    left, right = roaming_confs()
    work = Path(tempfile.mkdtemp(prefix="mobike-nat-"))
    try:
        with RoutedPair(work, left, right, mode="route", capture_at="wan", tag="mob") as pair:
            pair.initiate("net")
            pair.ping(3, interval=0.3)
            pair.exec_router("ip", "addr", "add", "10.0.0.254/24", "dev", "lan")
            pair.exec_router("ip", "neigh", "replace", "10.0.0.1", "lladdr", LEFT_MAC, "dev", "lan",
                             "nud", "permanent")
            pair.nft("table ip nat {",
                     " chain postrouting {",
                     "  type nat hook postrouting priority srcnat; policy accept;",
                     "  oifname \"wan\" ip saddr 10.0.0.0/24 meta l4proto udp masquerade to :40000-40999",
                     "  oifname \"wan\" ip saddr 10.0.0.0/24 masquerade",
                     " }",
                     "}")
            pair.exec("left", "ip", "addr", "add", "10.0.0.1/24", "dev", IFACE)
            pair.exec("left", "ip", "neigh", "replace", "10.0.0.254", "lladdr", ROUTER_LAN_MAC, "dev", IFACE,
                      "nud", "permanent")
            time.sleep(3)
            pair.exec("left", "ip", "addr", "del", "198.18.0.1/32", "dev", IFACE)
            if not pair.wait_log("right", "remote endpoint changed from 198.18.0.1[4500] to 198.18.2.1",
                                 timeout=20):
                raise PeerError("mobike behind NAT: the gateway never moved the SA")
            time.sleep(2)
            pair.ping(3, interval=0.3)
            pair.terminate_ike("roam")
            time.sleep(0.5)
        save(pair, "nat-")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def answer_lost() -> None:
    """The gateway's answers to the roamed client are lost (unanswered-capture.pcap).

    As :func:`main`, but before the move the gateway's own nft output chain drops every packet to
    198.18.0.3 longer than 120 bytes: the 89-byte answer to the path check passes, the answer to
    UPDATE_SA_ADDRESSES (169 bytes) and everything after it do not (tcpdump on the gateway's veth does
    not see what its output chain dropped). The client retransmits the update and gives up.
    """
    left, right = roaming_confs()
    work = Path(tempfile.mkdtemp(prefix="mobike-lost-"))
    try:
        with GatewayView(work, left, right, tag="mob") as pair:
            pair.exec("left", "sysctl", "-qw", f"net.ipv4.conf.{IFACE}.promote_secondaries=1")
            pair.initiate("net")
            pair.ping(3, interval=0.3)
            pair.add_outer("left", NEW_ADDR)
            rules = work / "drop.nft"
            rules.write_text("table ip lossy {\n chain output {\n  type filter hook output priority 0; policy accept;\n"
                             f"  ip daddr {NEW_ADDR} ip length > 120 drop\n }}\n}}\n")
            pair.exec("right", "nft", "-f", str(rules))
            time.sleep(3)
            pair.exec("left", "ip", "addr", "del", "198.18.0.1/24", "dev", IFACE)
            # retransmit_timeout 1 s, base 1.4, 3 tries: the last copy ~4.1 s in, given up at ~7 s
            if not pair.wait_log("left", "giving up after 3 retransmits", timeout=30):
                raise PeerError("mobike answer lost: the client never gave up on the update")
            time.sleep(1)
        save(pair, "unanswered-")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def unannounced() -> None:
    """The client moves to an address it never announced (unannounced-capture.pcap).

    As :func:`main` (capture on the gateway's veth, namespaces ``mb2-l`` / ``mb2-r``), but the new
    address 198.18.0.3 comes and 198.18.0.1 goes in one ``ip -batch`` run: charon sees both events
    in one roam, checks the path from 198.18.0.3 and sends UPDATE_SA_ADDRESSES with the new list
    (RFC 4555 §3.6), so the last list before the move is IKE_AUTH's NO_ADDITIONAL_ADDRESSES.
    """
    left, right = roaming_confs()
    work = Path(tempfile.mkdtemp(prefix="mobike-unannounced-"))
    try:
        with GatewayView(work, left, right, tag="mb2") as pair:
            pair.exec("left", "sysctl", "-qw", f"net.ipv4.conf.{IFACE}.promote_secondaries=1")
            pair.initiate("net")
            pair.ping(3, interval=0.3)
            batch = work / "move.ip"
            batch.write_text(f"addr add {NEW_ADDR}/24 dev {IFACE}\naddr del 198.18.0.1/24 dev {IFACE}\n")
            pair.exec("left", "ip", "-batch", str(batch))
            if not pair.wait_log("right", "remote endpoint changed", timeout=20):
                raise PeerError("mobike unannounced: the gateway never moved the SA")
            time.sleep(2)
            pair.ping(3, interval=0.3)
            pair.terminate_ike("roam")
            time.sleep(0.5)
        save(pair, "unannounced-")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["nat"]:
        behind_nat()
    elif sys.argv[1:] == ["unanswered"]:
        answer_lost()
    elif sys.argv[1:] == ["unannounced"]:
        unannounced()
    else:
        main()
