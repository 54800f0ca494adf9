"""Findings say what the capture shows: whose address a NAT finding names, and who agreed on weak
algorithms.

1. NAT (RFC 3947 §3.2, RFC 7296 §2.23): a peer's source hash is over its own view of its address
   and port; when it fails while the other peer's hash over what it received matches, the address
   on the wire is the NAT's public one. IKE-NAT-DETECTED called that address the peer's own
   ("initiator 192.1.2.254 is behind a NAT (seen as 192.1.2.254:500)"). tshark's NAT-D hashes of
   tcpdump's isakmp4500.pcap (BSD, libreswan's road behind a NAT) are the oracle: MD5 of the
   cookies with 192.1.2.254:500 is the responder's hash, not the initiator's own.
2. IKE-WEAK-ALGO said "X and Y agreed on ..." for an SA whose request the capture never holds
   (Openswan pluto's MM2 sent alone, GPL-2.0; nDPI's IKE_SA_INIT response alone, LGPL-3.0) and for
   an SA that stopped after IKE_SA_INIT (nDPI frames 456-466).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, IPSECSCOPE, ROOT, needs_tshark
from test_inference_order import _without

ISAKMP4500 = DATA / "tcpdump" / "isakmp4500.pcap"
MM2 = DATA / "openswan-unit" / "lp104-v1rwnatN1.pcap"
NDPI = DATA / "ndpi" / "derived"


def findings(cap: Path, code: str) -> list[dict]:
    r = subprocess.run([*IPSECSCOPE, "findings", str(cap), "--json"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert "Traceback" not in r.stderr, r.stderr
    return [f for f in json.loads(r.stdout)["findings"] if f["code"] == code]


def _natd(ispi: str, rspi: str, addr: str, port: int) -> str:
    """RFC 3947 §3.2: HASH(CKY-I | CKY-R | IP | Port), MD5 here (the phase-1 hash)."""
    data = bytes.fromhex(ispi) + bytes.fromhex(rspi) + ipaddress.ip_address(addr).packed + port.to_bytes(2, "big")
    return hashlib.md5(data).hexdigest()  # noqa: S324 - the protocol's hash, not a security use


@needs_tshark
def test_nat_finding_names_the_nat_address_not_the_initiators_own():
    out = subprocess.run(["tshark", "-r", str(ISAKMP4500), "-Y", "isakmp.ike.nat_hash", "-T", "fields",
                          "-e", "ip.src", "-e", "udp.srcport", "-e", "isakmp.ispi", "-e", "isakmp.rspi",
                          "-e", "isakmp.ike.nat_hash"], capture_output=True, text=True, check=True).stdout
    (i_src, i_port, ispi, rspi, i_hashes), (_, _, _, _, r_hashes) = (ln.split("\t") for ln in out.splitlines())
    wire = _natd(ispi, rspi, i_src, int(i_port))
    i_dst, i_own = i_hashes.split(",")  # RFC 3947 §3.2: the peer's address first, then its own
    r_for_initiator, _ = r_hashes.split(",")
    # the oracle: the responder hashed what it received, the initiator hashed something else
    assert r_for_initiator == wire and i_own != wire
    (f,) = findings(ISAKMP4500, "IKE-NAT-DETECTED")
    seen = f"{i_src}:{i_port}"
    assert f["title"] == f"NAT detected: initiator is behind a NAT (seen as {seen}, the NAT's address)"
    assert f"initiator {i_src} is behind" not in f["title"] + f["explanation"]
    assert f"sees it as {seen}, then {i_src}:4500 on UDP 4500: the NAT's public side" in f["explanation"]
    assert f"NAT-D hash (RFC 3947 §3.2) for it matches {seen}" in f["explanation"]


def test_nat_finding_captured_behind_the_nat_still_names_the_peer():
    """nDPI's client capture (behind its NAT): the address captured is the client's own, and said so."""
    for f in findings(NDPI / "ipsec_isakmp_esp-1-19.pcap", "IKE-NAT-DETECTED"):
        assert "192.168.2.100 is behind a NAT" in f["title"] and "the NAT's address" not in f["title"]


def _only(src: Path, dst: Path, keep: set[int]) -> Path:
    return _without(src, dst, set(range(1, 10_000)) - keep)


@pytest.mark.parametrize(("cap", "keep", "msg", "resp", "init"), [
    (MM2, None, "Main Mode answer (MM2) (frame 1)", "192.168.0.2", "93.184.216.34"),
    (NDPI / "ipsec_isakmp_esp-207-225.pcap", {4}, "IKE_SA_INIT response (frame 1)", "109.237.187.131",
     "192.168.2.100"),
], ids=["ikev1-mm2-alone", "ikev2-init-response-alone"])
def test_weak_algo_answer_without_its_request_does_not_say_agreed(tmp_path, cap, keep, msg, resp, init):
    if keep is not None:
        cap = _only(cap, tmp_path / cap.name, keep)
    (f,) = findings(cap, "IKE-WEAK-ALGO")
    assert "agreed on" not in f["explanation"] and "uses weak" not in f["title"]
    assert f["title"].startswith("IKE SA algorithms accepted by a responder, request not captured: ")
    assert f"{resp} chose " in f["explanation"] and f"in its {msg} to {init}, whose request is not in the capture" \
        in f["explanation"]
    assert findings(cap, "IKE-RESPONSE-NO-REQUEST")


def test_weak_algo_sa_that_never_completed_says_accepted():
    fs = findings(NDPI / "ipsec_isakmp_esp-456-466.pcap", "IKE-WEAK-ALGO")
    assert len(fs) == 2
    for f in fs:
        assert f["title"].startswith("IKE SA algorithms accepted, SA not completed: ")
        assert "192.168.2.100 offered aes256-sha1-modp1024 and 109.237.187.227 accepted it in its IKE_SA_INIT " \
            "response" in f["explanation"] and "did not complete" in f["explanation"] and "agreed on" not in f["explanation"]


def test_weak_algo_completed_sa_still_says_agreed():
    (f,) = findings(DATA / "joy" / "ikev1.pcap", "IKE-WEAK-ALGO")
    assert f["title"].startswith("IKE SA uses weak algorithms: ")
    assert "192.168.140.205 and 192.168.140.200 agreed on 3des-sha1-modp1024" in f["explanation"]


def test_nat_finding_without_the_other_peers_hash_claims_no_match():
    """nDPI frames 260-263: the gateway answered with a COOKIE and INVALID_KE_PAYLOAD, no NAT hash of
    its own: nothing confirms what it sees, so no "matches" and no "the NAT's address"."""
    (f,) = findings(NDPI / "ipsec_isakmp_esp-260-263.pcap", "IKE-NAT-DETECTED")
    assert f["title"] == "NAT detected: initiator is behind a NAT (seen as 192.168.2.100:43811)"
    assert "matches" not in f["explanation"] and "sent no NAT_DETECTION_DESTINATION_IP here" in f["explanation"]
