"""Real strongSwan captures for findings the main samples do not show (root, strongSwan, tcpdump).

    python3 tests/data/findings/make_captures.py [ip-fragmented] [udp4500-unanswered] [pfs-retry]

- ``ip-fragmented``: IKE_SA_INIT with a MODP-8192 KE (about 1.3 kB) over a 576-byte MTU link and
  ``fragmentation = no``: the IKE_SA_INIT messages travel as IP fragments (RFC 7383 cannot help
  IKE_SA_INIT), the tunnel still comes up.
- ``udp4500-unanswered``: the responder's charon listens for NAT-T on 4501 instead of 4500, so
  after IKE_SA_INIT (answered on 500) the initiator's IKE_AUTH to UDP 4500 is never answered —
  on the wire exactly what a firewall dropping UDP 4500 produces (plus ICMP port unreachable).
- ``pfs-retry``: a CHILD SA rekey whose PFS group the responder refuses with INVALID_KE_PAYLOAD,
  retried with the group it asks for.
- ``ikev1-rekey``: IKEv1 Main Mode and Quick Mode, ESP, a Quick Mode rekey, Delete payloads.
- ``ikev1-psk-mismatch``: IKEv1 Main Mode with different pre-shared keys.
- ``ikev1-proposal-mismatch``: IKEv1 Main Mode refused with an unencrypted NO-PROPOSAL-CHOSEN.
- ``ikev1-mm3-unanswered``: IKEv1 Main Mode whose third message (KE, nonce) the responder's
  nftables input drops: MM1 answered, MM3 sent 4 times, never answered; the initiator gives up.
- ``ikev1-mm3-incomplete``: the same with one retransmission (``retransmit_tries = 1``), the
  capture going on 4 s after with cleartext pings: Main Mode stopped though the path worked.
- ``ikev1-am-psk-mismatch``: IKEv1 Aggressive Mode with different pre-shared keys: the initiator
  cannot verify AM2's hash and sends no AM3.
- ``cert-auth-idle``: certificate authentication (a CA from strongswan-pki; the initiator has an
  RSA-3072 certificate, the responder an ECDSA-256 one), the tunnel comes up and stays idle (no
  ESP) for 6 s: the IKE_AUTH response is much smaller than the request although nothing was
  refused — what made IKE-CHILD-LIKELY-REFUSED cry wolf on public captures.
- ``esp-one-way-ike-alive``: the responder's outgoing ESP-in-UDP is dropped by nftables (UDP
  source port 4500, non-zero first 4 payload bytes = not IKE, RFC 3948 §2.2) while IKE goes
  through: the initiator's pings get no ESP back, its DPD INFORMATIONALs are answered.
- ``peer-restarted``: the responder's charon is killed and started again with no state (ESP is
  processed by charon's libipsec here, so its SAs are gone with it); the initiator keeps sending
  ESP to the stale SPIs and DPD to the forgotten IKE SA, gives up, and re-establishes
  (dpd_action = restart) with a fresh IKE_SA_INIT. charon-right.log holds both runs.

Uses the project's netns harness (tests/netns_peers.py) and key extractor
(samples/lib/charon_keys.py). Writes <scenario>/{capture.pcapng, keys/, charon-*.log} here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "samples" / "lib"))

import charon_keys  # noqa: E402
from netns_peers import IFACE, StrongswanPair, psk_confs, to_pcapng  # noqa: E402


def confs(ike: str, esp_left: str = "aes256gcm16", esp_right: str = "aes256gcm16") -> tuple[str, str]:
    return psk_confs("t", ike, (esp_left, esp_right), "ipsecscope-findings-psk",
                     conn_opts={"fragmentation": "no", "mobike": "no"},
                     child_opts={"rekey_time": "0", "start_action": "none"})


class _Pair(StrongswanPair):
    """StrongswanPair with extra strongswan.conf lines for one side (before charon starts)."""

    extra: dict[str, str] = {}

    def _setup_net(self) -> None:
        super()._setup_net()
        for side, text in self.extra.items():
            conf = self.side(side).dir / "strongswan.conf"
            conf.write_text(conf.read_text().replace("charon {\n", "charon {\n" + text, 1))


def ip_fragmented(work: Path) -> None:
    left, right = confs("aes256-sha256-modp8192")
    with StrongswanPair(work, left, right) as pair:
        for side in ("left", "right"):
            pair.exec(side, "ip", "link", "set", IFACE, "mtu", "576")
        pair.initiate("net", ike="t", timeout=30)
        pair.ping(3)
        pair.terminate_ike("t")


def udp4500_unanswered(work: Path) -> None:
    left, right = confs("aes256gcm16-prfsha256-ecp256")
    pair = _Pair(work, left, right)
    pair.extra = {"right": "    port_nat_t = 4501\n"}
    with pair:
        r = pair.initiate("net", ike="t", check=False, timeout=15)
        if r.returncode == 0:
            raise RuntimeError("udp4500-unanswered: IKE_AUTH was answered")
        pair.wait_log("left", "giving up after", timeout=20)


def pfs_retry(work: Path) -> None:
    # The initiator offers PFS ECP-256 or MODP-2048 and sends its KE for ECP-256; the responder
    # takes only MODP-2048: the CHILD SA rekey gets INVALID_KE_PAYLOAD(14), then succeeds.
    left, right = confs("aes256gcm16-prfsha256-ecp256", "aes256gcm16-ecp256-modp2048", "aes256gcm16-modp2048")
    with StrongswanPair(work, left, right) as pair:
        pair.initiate("net", ike="t")
        pair.ping(2)
        pair.rekey_child("net")
        pair.wait_log("left", "CHILD_SA net{2} established", timeout=10)
        pair.ping(2)
        pair.terminate_ike("t")


def ikev1_proposal_mismatch(work: Path) -> None:
    # IKEv1 Main Mode: the initiator offers only AES-128/SHA-1/MODP-2048, the responder takes
    # only AES-256/SHA-256/MODP-2048 and answers MM1 with an (unencrypted) NO-PROPOSAL-CHOSEN.
    left, right = confs("aes128-sha1-modp2048")
    right = right.replace("aes128-sha1-modp2048", "aes256-sha256-modp2048")
    left, right = (c.replace("version = 2", "version = 1") for c in (left, right))
    with StrongswanPair(work, left, right) as pair:
        r = pair.initiate("net", ike="t", check=False, timeout=8)
        if r.returncode == 0:
            raise RuntimeError("ikev1-proposal-mismatch: Main Mode succeeded")


def ikev1_rekey(work: Path) -> None:
    # IKEv1 Main Mode + Quick Mode, pings, a Quick Mode rekey of the CHILD SA, pings, deletes.
    left, right = (c.replace("version = 2", "version = 1") for c in confs("aes256-sha256-modp2048"))
    with StrongswanPair(work, left, right) as pair:
        pair.initiate("net", ike="t")
        pair.ping(2)
        pair.rekey_child("net")
        pair.wait_log("left", "CHILD_SA net{2} established", timeout=10)
        pair.ping(2)
        pair.terminate_ike("t")


def ikev1_psk_mismatch(work: Path) -> None:
    # IKEv1 Main Mode with different pre-shared keys: MM5 cannot be verified by the responder.
    left, right = (c.replace("version = 2", "version = 1") for c in confs("aes256-sha256-modp2048"))
    right = right.replace("ipsecscope-findings-psk", "another-psk-entirely")
    with StrongswanPair(work, left, right) as pair:
        r = pair.initiate("net", ike="t", check=False, timeout=10)
        if r.returncode == 0:
            raise RuntimeError("ikev1-psk-mismatch: Main Mode succeeded")
        pair.wait_log("left", "giving up after", timeout=15)


def _drop_mm3(pair: StrongswanPair) -> None:
    """The responder's input drops Main Mode's third message: the only message to UDP 500 bigger
    than 300 bytes (MM1 is ~180: SA and vendor IDs; MM3 ~400: KE, nonce, NAT-D; MM5 goes to 4500)."""
    for cmd in (("add", "table", "inet", "ipss"),
                ("add", "chain", "inet", "ipss", "in", "{ type filter hook input priority 0 ; }"),
                ("add", "rule", "inet", "ipss", "in", "udp", "dport", "500", "udp", "length", ">", "300", "drop")):
        pair.exec("right", "nft", *cmd)


def ikev1_mm3_unanswered(work: Path) -> None:
    # IKEv1 Main Mode whose MM3 never reaches the responder: MM1 is answered, MM3 is sent 4 times
    # (retransmit_tries 3) and never answered; the initiator gives up.
    left, right = (c.replace("version = 2", "version = 1") for c in confs("aes256-sha256-modp2048"))
    with StrongswanPair(work, left, right, tag="v1s-mm3") as pair:
        _drop_mm3(pair)
        r = pair.initiate("net", ike="t", check=False, timeout=12)
        if r.returncode == 0:
            raise RuntimeError("ikev1-mm3-unanswered: Main Mode succeeded")
        pair.wait_log("left", "giving up after", timeout=15)


class _OneRetransmit(StrongswanPair):
    """The initiator (left) gives up after one retransmission (netns_peers sets 3)."""

    def _setup_net(self) -> None:
        super()._setup_net()
        conf = self.side("left").dir / "strongswan.conf"
        conf.write_text(conf.read_text().replace("retransmit_tries = 3", "retransmit_tries = 1", 1))


def ikev1_mm3_incomplete(work: Path) -> None:
    # As ikev1-mm3-unanswered, but the initiator retransmits once (retransmit_tries 1) and gives
    # up; the capture goes on 4 s more with cleartext pings between the peers' outer addresses: the
    # Main Mode stopped with an unanswered MM3 though the capture saw the link working.
    left, right = (c.replace("version = 2", "version = 1") for c in confs("aes256-sha256-modp2048"))
    with _OneRetransmit(work, left, right, tag="v1s-inc") as pair:
        _drop_mm3(pair)
        r = pair.initiate("net", ike="t", check=False, timeout=10)
        if r.returncode == 0:
            raise RuntimeError("ikev1-mm3-incomplete: Main Mode succeeded")
        pair.wait_log("left", "giving up after", timeout=10)
        pair.ping(4, src="198.18.0.1", dst="198.18.0.2", interval=1.0)  # in the clear: the path works


def ikev1_am_psk_mismatch(work: Path) -> None:
    # IKEv1 Aggressive Mode with different pre-shared keys: the initiator cannot verify AM2's
    # HASH_R (RFC 2409 §5.4) and never sends AM3. Aggressive Mode with a PSK needs the
    # responder's charon.i_dont_care_about_security_and_use_aggressive_mode_psk.
    left, right = psk_confs("t", "aes256-sha256-modp2048", "aes256gcm16", "ipsecscope-findings-psk", version=1,
                            conn_opts={"fragmentation": "no", "mobike": "no", "aggressive": "yes"},
                            child_opts={"rekey_time": "0", "start_action": "none"})
    right = right.replace("ipsecscope-findings-psk", "another-psk-entirely")
    with StrongswanPair(work, left, right, tag="v1s-am",
                        charon_extra="    i_dont_care_about_security_and_use_aggressive_mode_psk = yes\n") as pair:
        r = pair.initiate("net", ike="t", check=False, timeout=10)
        if r.returncode == 0:
            raise RuntimeError("ikev1-am-psk-mismatch: Aggressive Mode succeeded")
        time.sleep(6)  # the responder's retransmissions of AM2, and its giving up


def _pki(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["pki", *args], input=stdin, capture_output=True, check=True).stdout


def cert_auth_idle(work: Path) -> None:
    pkidir = work / "pki"
    pkidir.mkdir(parents=True)
    ca_key = _pki("--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem")
    (pkidir / "ca.key").write_bytes(ca_key)
    (pkidir / "ca.pem").write_bytes(_pki("--self", "--ca", "--lifetime", "3650", "--in", str(pkidir / "ca.key"),
                                         "--type", "ecdsa", "--dn", "CN=ipsecscope test CA", "--outform", "pem"))
    for side, ktype, size in (("left", "rsa", "3072"), ("right", "ecdsa", "256")):
        key = _pki("--gen", "--type", ktype, "--size", size, "--outform", "pem")
        (pkidir / f"{side}.key").write_bytes(key)
        pub = _pki("--pub", "--in", str(pkidir / f"{side}.key"), "--type", ktype)
        (pkidir / f"{side}.pem").write_bytes(_pki(
            "--issue", "--cacert", str(pkidir / "ca.pem"), "--cakey", str(pkidir / "ca.key"), "--type", "pub",
            "--dn", f"CN={side}.ipsecscope.test", "--san", f"{side}.ipsecscope.test", "--outform", "pem", stdin=pub))
    # swanctl --load-all --file DIR/swanctl.conf loads credentials from DIR's x509/, x509ca/, private/.
    confs_ = []
    for me, peer, conf in zip(("left", "right"), ("right", "left"), confs("aes256gcm16-prfsha256-ecp256"), strict=True):
        for sub, name in (("x509", f"{me}.pem"), ("x509ca", "ca.pem"), ("private", f"{me}.key")):
            (work / me / sub).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pkidir / name, work / me / sub / name)
        for who in (me, peer):
            conf = conf.replace(f"""            auth = psk
            id = {who}.ipsecscope.test""", f"""            auth = pubkey
            id = {who}.ipsecscope.test""")
        confs_.append(conf[:conf.index("secrets {")])
    with StrongswanPair(work, *confs_) as pair:
        r = pair.initiate("net", ike="t", check=False)
        if r.returncode:
            raise RuntimeError("cert-auth-idle: " + pair.left.log.read_text()[-3000:] + pair.right.log.read_text()[-3000:])
        time.sleep(6)  # up and idle: no ESP, and no teardown right after IKE_AUTH
        pair.terminate_ike("t")


def esp_one_way_ike_alive(work: Path) -> None:
    left, right = psk_confs("t", "aes256gcm16-prfsha256-ecp256", "aes256gcm16", "ipsecscope-findings-psk",
                            conn_opts={"fragmentation": "no", "mobike": "no", "dpd_delay": "2s"},
                            child_opts={"rekey_time": "0", "start_action": "none"})
    with StrongswanPair(work, left, right) as pair:
        pair.initiate("net", ike="t")
        pair.ping(3)
        for cmd in (("add", "table", "inet", "ipss"),
                    ("add", "chain", "inet", "ipss", "out", "{ type filter hook output priority 0 ; }"),
                    ("add", "rule", "inet", "ipss", "out", "udp", "sport", "4500", "@th,64,32", "!=", "0", "drop")):
            pair.exec("right", "nft", *cmd)
        pair.ping(8, check=False, interval=0.5)
        time.sleep(5)  # DPD (dpd_delay 2 s, nothing inbound) runs and is answered
        pair.ping(4, check=False, interval=0.5)
        pair.terminate_ike("t")


def peer_restarted(work: Path) -> None:
    left, right = psk_confs("t", "aes256gcm16-prfsha256-ecp256", "aes256gcm16", "ipsecscope-findings-psk",
                            conn_opts={"fragmentation": "no", "mobike": "no", "dpd_delay": "2s"},
                            child_opts={"rekey_time": "0", "start_action": "none", "dpd_action": "restart"})
    with StrongswanPair(work, left, right) as pair:
        pair.initiate("net", ike="t")
        pair.ping(3)
        pair.restart("right")  # its log goes on in the same file
        pair.ping(4, check=False, interval=0.5)
        pair.wait_log("left", "CHILD_SA net{2} established", timeout=30)
        pair.ping(3)
        pair.terminate_ike("t")


SCENARIOS = {"cert-auth-idle": cert_auth_idle, "esp-one-way-ike-alive": esp_one_way_ike_alive, "peer-restarted": peer_restarted, "ikev1-rekey": ikev1_rekey, "ikev1-psk-mismatch": ikev1_psk_mismatch, "ip-fragmented": ip_fragmented, "udp4500-unanswered": udp4500_unanswered, "pfs-retry": pfs_retry,
             "ikev1-proposal-mismatch": ikev1_proposal_mismatch, "ikev1-mm3-unanswered": ikev1_mm3_unanswered,
             "ikev1-mm3-incomplete": ikev1_mm3_incomplete, "ikev1-am-psk-mismatch": ikev1_am_psk_mismatch}


def main(argv: list[str]) -> int:
    for name in argv or list(SCENARIOS):
        out = HERE / name
        with tempfile.TemporaryDirectory(prefix=f"ipss-{name}-") as tmp:
            work = Path(tmp)
            SCENARIOS[name](work)
            if out.exists():
                shutil.rmtree(out)
            (out / "keys").mkdir(parents=True)
            to_pcapng(work / "capture.pcap", out / "capture.pcapng")
            shutil.copyfile(work / "left" / "charon.log", out / "charon-left.log")
            shutil.copyfile(work / "right" / "charon.log", out / "charon-right.log")
            try:
                charon_keys.write_tables(out / "keys", [out / "charon-left.log", out / "charon-right.log"])
            except charon_keys.KeyLogError as exc:  # IKEv1, or no IKE SA keys: use -k charon-left.log
                print(f"{name}: keys: {exc}")
                shutil.rmtree(out / "keys")
        print(f"{name}: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
