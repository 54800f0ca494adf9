"""Run the sample scenarios with two real strongSwan peers and store the results.

Called by samples/make_samples.sh (as root). For each scenario it brings up the two charons
(tests/netns_peers.py: namespaces, veth, tcpdump on the veth), drives the exchange with
swanctl, then copies into samples/<scenario>/:

    capture.pcapng          what tcpdump saw on the veth (left side), converted to pcapng
                            with editcap (tcpdump writes pcap)
    charon-left.log         left (initiator) charon log, ike 4 / chd 4: the keys are in here
    charon-right.log        right (responder) charon log
    keys/esp_sa             ESP keys as a Wireshark UAT table  } extracted from both logs by
    keys/ikev2_decryption_table   IKEv2 SK_* keys, same         } samples/lib/charon_keys.py
    truth.json              strongSwan's own account (SAs, SPIs, timeline) + expected findings

``keys/`` works as a Wireshark profile directory: WIRESHARK_CONFIG_DIR=samples/x/keys tshark ...

Usage: make_samples.py [--out DIR] [--pids FILE] [SCENARIO...]   (default: all scenarios)
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import charon_keys  # noqa: E402
import truth  # noqa: E402
from netns_peers import PeerError, RoutedPair, StrongswanPair, to_pcapng  # noqa: E402

CONF = ROOT / "samples" / "conf"


def settle(pair: StrongswanPair, seconds: float = 0.3) -> None:
    """Let both charons finish the exchange they are in (the swanctl call returns on the
    initiator's completion, the responder may still be logging)."""
    time.sleep(seconds)


def healthy_gcm(pair: StrongswanPair) -> None:
    pair.initiate("net", ike="gcm")
    pair.ping(3)
    pair.rekey_child("net")          # CREATE_CHILD_SA with N(REKEY_SA), KE (PFS), then Delete old
    settle(pair)
    pair.ping(3)
    pair.rekey_ike("gcm")            # CREATE_CHILD_SA SA/No/KE for a new IKE SA, Delete old IKE SA
    settle(pair)
    pair.ping(3)
    pair.swanctl("left", "--terminate", "--child", "net")   # INFORMATIONAL Delete(ESP SPI)
    settle(pair)
    pair.terminate_ike("gcm")                                # INFORMATIONAL Delete(IKE)


def cbc_sha2_pfs(pair: StrongswanPair) -> None:
    pair.add_inner("left", "10.1.1.1/24")
    pair.add_inner("right", "10.2.1.1/24")
    pair.initiate("net", ike="cbc")          # first CHILD_SA in IKE_AUTH (no KE there)
    pair.initiate("net2", ike="cbc")         # second CHILD_SA: CREATE_CHILD_SA with KE (PFS)
    pair.ping(3)
    pair.ping(3, src="10.1.1.1", dst="10.2.1.1")
    pair.rekey_child("net")                  # rekey with a fresh MODP-2048 exchange
    settle(pair)
    pair.ping(2)
    pair.ping(2, src="10.1.1.1", dst="10.2.1.1")
    pair.terminate_ike("cbc")


def proposal_mismatch(pair: StrongswanPair) -> None:
    r = pair.initiate("net", ike="mismatch", check=False)
    if r.returncode == 0:
        raise PeerError("proposal-mismatch: the CHILD_SA was established, expected a failure")
    settle(pair)
    # strongSwan keeps the IKE SA when only the CHILD_SA in IKE_AUTH failed; close it cleanly.
    pair.terminate_ike("mismatch")


def ike_proposal_mismatch(pair: StrongswanPair) -> None:
    r = pair.initiate("net", ike="ikemismatch", check=False, timeout=5)
    if r.returncode == 0:
        raise PeerError("ike-proposal-mismatch: the IKE SA was established, expected a failure")
    settle(pair)


def ts_mismatch(pair: StrongswanPair) -> None:
    r = pair.initiate("net", ike="ts", check=False)
    if r.returncode == 0:
        raise PeerError("ts-mismatch: the CHILD_SA was established, expected TS_UNACCEPTABLE")
    settle(pair)
    pair.terminate_ike("ts")


def psk_mismatch(pair: StrongswanPair) -> None:
    r = pair.initiate("net", ike="psk", check=False)
    if r.returncode == 0:
        raise PeerError("psk-mismatch: authentication succeeded, expected AUTHENTICATION_FAILED")
    settle(pair)


def dh_retry(pair: StrongswanPair) -> None:
    pair.initiate("net", ike="dh")
    pair.ping(3)
    pair.terminate_ike("dh")


def _responder_dies(pair: StrongswanPair, scenario: str, gave_up: str, timeout: float) -> None:
    """Kill the responder (SIGKILL, outer address gone: it sends nothing, not even ICMP), keep
    pinging into the dead tunnel, and wait for the initiator's log line saying it gave up."""
    time.sleep(1.0)
    pair.crash("right")
    # Traffic keeps going out into the dead tunnel; nothing comes back.
    pair.ping(3, check=False)
    if not pair.wait_log("left", gave_up, timeout=timeout):
        raise PeerError(f"{scenario}: the initiator did not log {gave_up!r} within {timeout:.0f} s")
    settle(pair, 0.5)


def dead_peer(pair: StrongswanPair) -> None:
    pair.initiate("net", ike="dpd")
    pair.ping(3)
    # DPD after 2 s without inbound traffic, retransmits at +1.0, +1.4, +2.0, +2.7 s, give up.
    _responder_dies(pair, "dead-peer", "giving up after", 30)


def ikev1_dead_peer(pair: StrongswanPair) -> None:
    pair.initiate("net", ike="dpd1")
    pair.ping(3)
    # idle: after 2 s a DPD R-U-THERE that the live peer acknowledges (RFC 3706)
    if not pair.wait_log("left", "sending DPD request", timeout=10):
        raise PeerError("ikev1-dead-peer: no DPD exchange while both peers were up")
    time.sleep(0.5)
    pair.ping(3)
    # Then the R-U-THEREs go unanswered (strongSwan sends one every dpd_delay, same sequence
    # number) until the DPD timeout, when the initiator enforces dpd_action and drops the SAs.
    _responder_dies(pair, "ikev1-dead-peer", "DPD check timed out", 40)


def nat_napt(pair: StrongswanPair) -> None:
    pair.initiate("net", ike="nat")       # IKE_SA_INIT on 500 (NAT-D), IKE_AUTH floats to 4500
    pair.ping(3)
    # Idle longer than keep_alive (1 s): the peer behind the NAT sends NAT-T keepalives
    # (RFC 3948 §2.3, one 0xff byte on UDP 4500) to hold its mapping open.
    time.sleep(2.5)
    pair.ping(3)
    pair.rekey_child("net")
    settle(pair)
    pair.ping(2)
    pair.terminate_ike("nat")


# The NAPT's UDP rule after the rebinding: another port range, so the new mapping cannot reuse the
# old port (nf_nat would pick a random port in the range anyway; this makes the change certain).
REBIND_NAT = ("flush chain ip nat postrouting",
              "add rule ip nat postrouting oifname \"wan\" ip saddr 10.0.0.0/24 meta l4proto udp "
              "masquerade to :41000-41999",
              "add rule ip nat postrouting oifname \"wan\" ip saddr 10.0.0.0/24 masquerade")


def _nat_drops_mappings(pair: RoutedPair, conn: str, scenario: str) -> None:
    """Tunnel up, pings, then the NAT forgets its mappings (a reboot, a timeout, a CGN
    re-balancing): new port range, UDP conntrack entries deleted. The initiator's next packet gets
    a new public port; the responder keeps sending to the old one until an authenticated IKE
    message from the new one tells it: here the initiator's DPD, sent because nothing comes back.
    path.log keeps the router's conntrack view before and after."""
    pair.initiate("net", ike=conn)
    pair.ping(3)
    log = ["# conntrack -L -p udp before the rebinding (router namespace)",
           pair.exec_router("conntrack", "-L", "-p", "udp").stdout.strip()]
    pair.nft(*REBIND_NAT)
    flushed = pair.exec_router("conntrack", "-D", "-p", "udp", check=False)
    log += [f"# {time.time():.6f} nft: masquerade UDP to :41000-41999; conntrack -D -p udp",
            (flushed.stdout + flushed.stderr).strip()]
    pair.ping(3, check=False)             # out via the new port; replies go to the stale mapping
    if not pair.wait_log("left", "sending DPD request", timeout=15):
        raise PeerError(f"{scenario}: no DPD after the NAT mapping changed")
    settle(pair, 1.0)
    pair.ping(3)                          # the responder follows the new port: answered again
    log += ["# conntrack -L -p udp after the rebinding",
            pair.exec_router("conntrack", "-L", "-p", "udp").stdout.strip()]
    (pair.workdir / "path.log").write_text("\n".join(log) + "\n")
    pair.terminate_ike(conn)


def nat_rebind(pair: StrongswanPair) -> None:
    """IKE_SA_INIT on 500, IKE_AUTH and ESP on 4500 via the NAPT; the responder follows the new
    port on the DPD (RFC 7296 §2.23)."""
    assert isinstance(pair, RoutedPair)
    _nat_drops_mappings(pair, "rebind", "nat-rebind")


def ikev1_nat_rebind(pair: StrongswanPair) -> None:
    """nat_rebind for IKEv1: Main Mode on 500 finds the NAPT (NAT-D, RFC 3947 §3.2) and floats to
    4500; Quick Mode and ESP in UDP 4500 (RFC 3948) follow. Then the NAPT drops its mappings."""
    assert isinstance(pair, RoutedPair)
    _nat_drops_mappings(pair, "rebind1", "ikev1-nat-rebind")


def mtu_small_link(pair: StrongswanPair) -> None:
    pair.initiate("net", ike="mtu")
    pair.ping(2)
    # 1400-byte echoes: ~1460-byte ESP-in-UDP packets for a 1280-byte wan link. The router
    # answers the first with ICMP fragmentation needed (it quotes the ESP header and SPI);
    # after that the sender fragments the outer packets itself.
    pair.ping(3, size=1400, check=False)
    settle(pair)
    pair.ping(2)
    pair.terminate_ike("mtu")


ONEWAY_DROP = ("table ip path {",
               " chain forward {",
               "  type filter hook forward priority filter; policy accept;",
               # UDP 4500 with a non-zero first payload word: ESP (a zero word is the non-ESP
               # marker of IKE, RFC 3948 §2.2); a keepalive (one 0xff byte) is too short.
               "  ip saddr 198.18.0.2 udp sport 4500 @th,64,32 != 0 counter drop",
               " }",
               "}")


def esp_oneway_drop(pair: StrongswanPair) -> None:
    assert isinstance(pair, RoutedPair)
    pair.initiate("net", ike="oneway")
    pair.ping(3)
    pair.nft(*ONEWAY_DROP)
    pair.ping(4, check=False)          # left's ESP arrives, right's answers are dropped
    # No inbound ESP for 2 s: left sends DPD (empty INFORMATIONAL), which right answers.
    if not pair.wait_log("left", "sending DPD request", timeout=10):
        raise PeerError("esp-oneway-drop: no DPD while ESP was dropped")
    time.sleep(2.5)
    pair.ping(2, check=False)
    settle(pair)
    counters = pair.exec_router("nft", "list", "chain", "ip", "path", "forward").stdout
    (pair.workdir / "path.log").write_text(counters)
    pair.terminate_ike("oneway")


HOST_REJECT = ("table ip host {",
               " chain input {",
               "  type filter hook input priority filter; policy accept;",
               # ESP in UDP 4500 (non-zero first payload word, RFC 3948 §2) is refused the way a
               # host without a listener would: ICMP port unreachable quoting the packet.
               "  udp dport 4500 @th,64,32 != 0 counter reject with icmp type port-unreachable",
               " }",
               "}")


def esp_rejected(pair: StrongswanPair) -> None:
    pair.initiate("net", ike="reject")
    pair.ping(3)
    rules = pair.workdir / "host-reject.nft"
    rules.write_text("\n".join(HOST_REJECT) + "\n")
    pair.exec("right", "nft", "-f", str(rules))
    pair.ping(4, check=False, interval=1.2)  # > 1 s apart: Linux rate-limits ICMP errors per peer
    settle(pair)
    counters = pair.exec("right", "nft", "list", "chain", "ip", "host", "input").stdout
    (pair.workdir / "path.log").write_text(counters)
    pair.terminate_ike("reject")


def peer_restart(pair: StrongswanPair) -> None:
    pair.initiate("net", ike="restart")
    pair.ping(3)
    pair.restart("right")             # SIGKILL + a fresh charon: every SA forgotten
    pair.ping(3, check=False)         # ESP to the stale SPIs
    # DPD to an IKE SA the new charon does not know, retransmitted until left gives up, then
    # dpd_action = restart: a fresh IKE_SA_INIT, answered at once.
    if not pair.wait_log("left", "restarting CHILD_SA", timeout=30):
        raise PeerError("peer-restart: the initiator never restarted the CHILD_SA")
    deadline = time.monotonic() + 15
    while "INSTALLED" not in pair.list_sas("left") and time.monotonic() < deadline:
        time.sleep(0.2)
    pair.ping(3)
    pair.terminate_ike("restart")


def redirect(pair: StrongswanPair) -> None:
    pair.add_outer("right", "198.18.0.3")
    pair.initiate("net", ike="redir")
    pair.ping(2)
    pair.swanctl("right", "--redirect", "--ike", "redir", "--gateway", "198.18.0.3")
    if not pair.wait_log("left", "...198.18.0.3[right.ipsecscope.test]", timeout=15):
        raise PeerError("redirect: the initiator did not connect to 198.18.0.3")
    deadline = time.monotonic() + 15
    while "INSTALLED" not in pair.list_sas("left") and time.monotonic() < deadline:
        time.sleep(0.2)
    pair.ping(2)
    pair.terminate_ike("redir")


def ike_frag_cert(pair: StrongswanPair) -> None:
    pair.initiate("net", ike="frag")      # IKE_AUTH both ways in SKF fragments (RFC 7383)
    pair.ping(3)
    pair.terminate_ike("frag")


def ike_frag_untrusted(pair: StrongswanPair) -> None:
    r = pair.initiate("net", ike="untrusted", check=False)
    if r.returncode == 0:
        raise PeerError("ike-frag-untrusted: authentication succeeded, expected AUTHENTICATION_FAILED")
    settle(pair)


# The ESP packets (left -> right, counted from 1) the bridge impairs in path-impairments.
IMPAIR = {"dup": 3, "corrupt": 5, "reorder": 7}


def path_impairments(pair: StrongswanPair) -> None:
    assert isinstance(pair, RoutedPair)
    pair.start_bridge(*(a for k, v in IMPAIR.items() for a in (f"--{k}", str(v))))
    pair.initiate("net", ike="impair")
    # 10 echoes: the 3rd ESP packet arrives twice (the receiver's replay window drops the copy),
    # the 5th corrupted (ICV failure: that echo is lost), the 7th after the 8th (inside the window).
    pair.ping(10, check=False)
    settle(pair)
    pair.terminate_ike("impair")


PKI = CONF / "pki"
# Certificate scenarios: what each peer's swanctl directory holds (samples/conf/pki).
CREDS: dict[str, dict[str, dict[str, Path]]] = {
    "ike-frag-cert": {side: {f"x509/{side}.pem": PKI / f"{side}.pem", "x509ca/ca.pem": PKI / "ca.pem",
                             f"private/{side}.key": PKI / f"{side}.key"} for side in ("left", "right")},
    "ike-frag-untrusted": {
        "left": {"x509/left-rogue.pem": PKI / "left-rogue.pem", "x509ca/ca.pem": PKI / "ca.pem",
                 "private/left.key": PKI / "left.key"},
        "right": {"x509/right.pem": PKI / "right.pem", "x509ca/ca.pem": PKI / "ca.pem",
                  "private/right.key": PKI / "right.key"}},
}


# Scenarios with a middle namespace (router, NAT or bridge): RoutedPair keyword arguments.
PATHS: dict[str, dict[str, object]] = {
    "nat-napt": {"mode": "nat", "capture_at": "wan", "charon_extra": "keep_alive = 1s"},
    "nat-rebind": {"mode": "nat", "capture_at": "wan"},
    "ikev1-nat-rebind": {"mode": "nat", "capture_at": "wan"},
    "mtu-small-link": {"mode": "route", "capture_at": "lan", "mtu_wan": 1280},
    "esp-oneway-drop": {"mode": "route", "capture_at": "lan"},
    "path-impairments": {"mode": "bridge", "capture_at": "wan"},
}

SCENARIOS: dict[str, Callable[[StrongswanPair], None]] = {
    "healthy-gcm": healthy_gcm,
    "cbc-sha2-pfs": cbc_sha2_pfs,
    "proposal-mismatch": proposal_mismatch,
    "ike-proposal-mismatch": ike_proposal_mismatch,
    "ts-mismatch": ts_mismatch,
    "psk-mismatch": psk_mismatch,
    "dh-retry": dh_retry,
    "dead-peer": dead_peer,
    "ikev1-dead-peer": ikev1_dead_peer,
    "nat-napt": nat_napt,
    "nat-rebind": nat_rebind,
    "ikev1-nat-rebind": ikev1_nat_rebind,
    "mtu-small-link": mtu_small_link,
    "esp-oneway-drop": esp_oneway_drop,
    "esp-rejected": esp_rejected,
    "peer-restart": peer_restart,
    "redirect": redirect,
    "path-impairments": path_impairments,
    "ike-frag-cert": ike_frag_cert,
    "ike-frag-untrusted": ike_frag_untrusted,
}


def run_scenario(name: str, work: Path, *, pids: Path | None = None,
                 tag: str | None = None) -> Path:
    """Run one scenario in ``work``; return the work dir holding capture.pcap and logs."""
    conf = CONF / name
    texts = ((conf / "left.conf").read_text(), (conf / "right.conf").read_text())
    pair = (RoutedPair(work, *texts, tag=tag, **PATHS[name]) if name in PATHS  # type: ignore[arg-type]
            else StrongswanPair(work, *texts, tag=tag, creds=CREDS.get(name)))
    try:
        with pair:
            if pids is not None:
                pids.write_text(" ".join(map(str, pair.pids())) + "\n")
            SCENARIOS[name](pair)
    finally:
        if pids is not None:
            pids.write_text("")  # all stopped: nothing for the shell trap to kill
    return work


def store(name: str, work: Path, out: Path) -> list[Path]:
    dest = out / name
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "keys").mkdir(parents=True)
    to_pcapng(work / "capture.pcap", dest / "capture.pcapng")
    shutil.copyfile(work / "left" / "charon.log", dest / "charon-left.log")
    shutil.copyfile(work / "right" / "charon.log", dest / "charon-right.log")
    for extra in ("path.log", "bridge.log"):   # what the middle namespace did (ground truth)
        if (work / extra).exists():
            shutil.copyfile(work / extra, dest / extra)
    charon_keys.write_tables(dest / "keys", [dest / "charon-left.log", dest / "charon-right.log"])
    if "version = 1" in (CONF / name / "left.conf").read_text():
        # IKEv1 phase-1 keys: samples/lib/charon_keys.py extracts IKEv2 and ESP keys only, so the
        # Wireshark ikev1_decryption_table comes from ipsecscope's own reader (tests check that
        # tshark decrypts every encrypted IKEv1 message with it).
        subprocess.run([sys.executable, "-m", "ipsecscope", "keys", "convert", str(dest / "charon-left.log"),
                        "--to", "ikev1_table", "-o", str(dest / "keys" / "ikev1_decryption_table")],
                       check=True, capture_output=True, cwd=ROOT)
    truth.write(dest)
    return sorted(p for p in dest.rglob("*") if p.is_file())


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    ap.add_argument("--out", type=Path, default=ROOT / "samples")
    ap.add_argument("--pids", type=Path, help="write pids of started processes here")
    ap.add_argument("--tag", default=None, help="namespace name prefix (default: random)")
    ap.add_argument("--work-root", type=Path, default=None,
                    help="make the per-scenario work directories under this one")
    args = ap.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}",
              file=sys.stderr)
        return 2
    # SIGTERM/SIGHUP become an exception so StrongswanPair.__exit__ still stops the charons and
    # tcpdump and deletes the namespaces (the default action would kill us on the spot).
    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    failed = []
    try:
        return _run_all(args, failed)
    except KeyboardInterrupt as e:
        print(f"interrupted ({e or 'Ctrl-C'}); peers stopped, namespaces removed", file=sys.stderr)
        return 130


def _run_all(args: argparse.Namespace, failed: list[str]) -> int:
    for name in args.scenarios:
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"ipss-{name}-", dir=args.work_root) as tmp:
            try:
                run_scenario(name, Path(tmp), pids=args.pids, tag=args.tag)
                files = store(name, Path(tmp), args.out)
            except (PeerError, charon_keys.KeyLogError, OSError) as e:
                print(f"{name}: FAILED: {e}", file=sys.stderr)
                failed.append(name)
                continue
        took = time.monotonic() - t0
        print(f"{name}: ok in {took:.1f} s")
        for f in files:
            print(f"  {f.relative_to(args.out)}  {f.stat().st_size} bytes")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
