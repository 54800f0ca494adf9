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
3. IKE-WEAK-ALGO's frames were the SA's first two frames: a COOKIE exchange (tcpdump's
   ikev2four.pcap, BSD), or IKE_AUTH where nDPI's capture holds its frames out of time order. They
   are the exchange that chose: the answer whose SA payload holds the proposal (tshark reads the
   payload types) and the request it answers when captured. A CHILD SA's finding said "X and Y
   protect traffic with P" with no ESP of it in the capture (Wireshark's ikev1-bug-12610, whose ESP
   is in esp-bug-12671): it says who sends on it, as tshark's ESP SPIs show.
4. "UDP encapsulation forced" said the other peer's destination hash matched also when the capture
   holds none (samples/ike-proposal-mismatch: the answer is NO_PROPOSAL_CHOSEN alone; an IKEv1
   phase 1 cut before MM4). tshark's NAT-D hashes, recomputed, are the oracle.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess
from pathlib import Path

import pytest
from conftest import CORPUS, IPSECSCOPE, ROOT, need, needs_tshark, public, public_dir
from test_inference_order import _without

ISAKMP4500 = public("tcpdump/isakmp4500.pcap")
IKEV2FOUR = public("tcpdump/ikev2four.pcap")
MM2 = public("openswan-unit/lp104-v1rwnatN1.pcap")  # third-party: materialised at test time
JOY_V1 = public("joy/ikev1.pcap")
NDPI = public_dir("ndpi") / "derived"  # third-party: cut at test time (tests/public_data.py)


def findings(cap: Path, code: str) -> list[dict]:
    r = subprocess.run([*IPSECSCOPE, "findings", str(cap), "--json"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert "Traceback" not in r.stderr, r.stderr
    return [f for f in json.loads(r.stdout)["findings"] if f["code"] == code]


_NAT_HASH = {16: hashlib.md5, 20: hashlib.sha1, 32: hashlib.sha256, 48: hashlib.sha384, 64: hashlib.sha512}  # the protocols' hashes, not a security use


def _natd(ispi: str, rspi: str, addr: str, port: int, size: int = 16) -> str:
    """RFC 3947 §3.2: HASH(CKY-I | CKY-R | IP | Port), the phase-1 hash (its length says which; MD5
    by default); RFC 7296 §2.23: SHA-1 (20 octets) of the same over the SPIs."""
    data = bytes.fromhex(ispi) + bytes.fromhex(rspi) + ipaddress.ip_address(addr).packed + port.to_bytes(2, "big")
    return _NAT_HASH[size](data).hexdigest()


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
    (f,) = findings(JOY_V1, "IKE-WEAK-ALGO")
    assert f["title"].startswith("IKE SA uses weak algorithms: ")
    assert "192.168.140.205 and 192.168.140.200 agreed on 3des-sha1-modp1024" in f["explanation"]


def test_nat_finding_without_the_other_peers_hash_claims_no_match():
    """nDPI frames 260-263: the gateway answered with a COOKIE and INVALID_KE_PAYLOAD, no NAT hash of
    its own: nothing confirms what it sees, so no "matches" and no "the NAT's address"."""
    (f,) = findings(NDPI / "ipsec_isakmp_esp-260-263.pcap", "IKE-NAT-DETECTED")
    assert f["title"] == "NAT detected: initiator is behind a NAT (seen as 192.168.2.100:43811)"
    assert "matches" not in f["explanation"] and "sent no NAT_DETECTION_DESTINATION_IP here" in f["explanation"]


def _tshark(cap: Path, *fields: str, flt: str = "isakmp") -> list[list[str]]:
    out = subprocess.run(["tshark", "-r", str(cap), "-Y", flt, "-T", "fields",
                          *(a for f in ("frame.number", "ip.src", *fields) for a in ("-e", f))],
                         capture_output=True, text=True, check=True).stdout
    return [ln.split("\t") for ln in out.splitlines()]


def _choosing_exchanges(cap: Path) -> dict[str, tuple[int, ...]]:
    """SPIi -> (request, answer) of the exchange whose answer chose the IKE SA's proposal, from
    tshark: IKEv2, the IKE_SA_INIT response (R flag) carrying an SA payload and the last request
    before it (RFC 7296 §1.2, §2.6: a COOKIE answer has none, the retry is answered); IKEv1, the
    first MM2/AM2 carrying one (a non-zero responder cookie) and the first MM1/AM1 (RFC 2409 §5)."""
    rows = _tshark(cap, "isakmp.version", "isakmp.exchangetype", "isakmp.flags", "isakmp.ispi", "isakmp.rspi",
                   "isakmp.typepayload")
    chose: dict[str, tuple[int, ...]] = {}
    for i, (frame, _, version, ex, flags, ispi, rspi, types) in enumerate(rows):
        types = types.split(",")
        if ispi in chose:
            continue
        if version == "0x20" and ex == "34" and int(flags, 16) & 0x20 and "33" in types:
            req = [r[0] for r in rows[:i] if r[5] == ispi and r[3] == "34" and not int(r[4], 16) & 0x20]
            chose[ispi] = (*map(int, req[-1:]), int(frame))
        elif version == "0x10" and ex in ("2", "4") and rspi != "0" * 16 and "1" in types:
            req = [r[0] for r in rows[:i] if r[5] == ispi and r[3] == ex and r[6] == "0" * 16 and "1" in r[7].split(",")]
            chose[ispi] = (*map(int, req[:1]), int(frame))
    return chose


@needs_tshark
@pytest.mark.parametrize("cap", [
    NDPI / "ipsec_isakmp_esp-1-160.pcap", NDPI / "ipsec_isakmp_esp-1-19.pcap", NDPI / "ipsec_isakmp_esp-456-466.pcap",
    IKEV2FOUR, ISAKMP4500, MM2, JOY_V1,
    public("zeek-spicy-ipsec/ipsec-ikev1-isakmp-aggressive-mode.pcap"),
], ids=lambda p: p.stem)
def test_weak_ike_sa_cites_the_exchange_that_chose(cap):
    chose = _choosing_exchanges(cap)
    cited = {}
    for f in findings(cap, "IKE-WEAK-ALGO"):
        for m in f["members"] or [f]:
            cited[m["sa"].split("_")[0]] = tuple(m["frames"])
    assert cited and cited == {spi: chose[spi] for spi in cited}
    # the answer the explanation names is the one cited
    for f in findings(cap, "IKE-WEAK-ALGO"):
        assert f"(frame {f['frames'][-1]})" in f["explanation"] or "agreed on" in f["explanation"]


@pytest.fixture(scope="module")
def ikev1_with_esp(tmp_path_factory) -> tuple[Path, Path]:
    """Wireshark's ikev1-bug-12610 (Main Mode, Quick Mode) joined with esp-bug-12671 (its ESP) as
    the session numbers two files (mergecap -a), and the same without the responder's ESP."""
    need(CORPUS)  # module-scoped: set up before the autouse fixture could skip
    d = tmp_path_factory.mktemp("ikev1")
    both = d / "12610+12671.pcapng"
    subprocess.run(["mergecap", "-a", "-w", str(both), str(CORPUS / "ikev1-bug-12610.pcapng.gz"),
                    str(CORPUS / "esp-bug-12671.pcapng.gz")], check=True)
    one_way = d / "12610+12671-one-way.pcapng"
    subprocess.run(["tshark", "-r", str(both), "-Y", "!(esp && ip.src == 192.168.0.1)", "-w", str(one_way)],
                   check=True, capture_output=True)
    return both, one_way


def _weak_child(cap: Path) -> tuple[dict, dict]:
    r = subprocess.run([*IPSECSCOPE, "findings", str(cap), "-k", str(CORPUS / "ikev1_decryption_table.tmpl"),
                        "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    (f,) = [f for f in json.loads(r.stdout)["findings"] if f["code"] == "IKE-WEAK-ALGO" and f["sa"].startswith("child:")]
    r = subprocess.run([*IPSECSCOPE, "sas", str(cap), "-k", str(CORPUS / "ikev1_decryption_table.tmpl"), "--json"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    (c,) = json.loads(r.stdout)["child_sas"]
    return f, c


@needs_tshark
@pytest.mark.parametrize("which", ["both", "one-way", "no-esp"])
def test_weak_child_sa_says_who_sends_on_it(ikev1_with_esp, which):
    cap = {"both": ikev1_with_esp[0], "one-way": ikev1_with_esp[1], "no-esp": CORPUS / "ikev1-bug-12610.pcapng.gz"}[which]
    f, c = _weak_child(cap)
    # tshark: the Quick Mode's first request and its answer; who sends ESP on which SPI
    qm = _tshark(cap, "isakmp.messageid", flt="isakmp.exchangetype == 32")
    initiator = qm[0][1]
    answer = next(int(r[0]) for r in qm if r[1] != initiator)
    assert f["frames"] == [int(qm[0][0]), answer]
    esp = {(r[1], int(r[2], 16)) for r in _tshark(cap, "esp.spi", flt="esp")}
    responder = next(r[1] for r in qm if r[1] != initiator)
    assert (c["initiator"], c["responder"]) == (initiator, responder)
    sends = [peer for peer, spi in ((initiator, c["spi_r"]), (responder, c["spi_i"])) if (peer, int(spi, 16)) in esp]
    assert sends == {"both": [initiator, responder], "one-way": [initiator], "no-esp": []}[which]
    said = f"{initiator} offered aes128-sha1 and {responder} accepted it in its Quick Mode answer (QM2) (frame {answer})"
    assert said in f["explanation"] and "protect traffic" not in f["explanation"]
    assert {"both": "; both send ESP on it.", "one-way": f"; {initiator} sends ESP on it, the capture holds none the "
            "other way.", "no-esp": "; no ESP of this CHILD SA is in the capture."}[which] in f["explanation"]
    # SHA-1 alone: RFC 8221 §6 keeps HMAC-SHA1-96 as MUST-, so the finding says that, as an INFO
    assert f["severity"] == "info" and "SHA-1: MUST- (RFC 8247 §2.2, §2.3; RFC 8221 §6)" in f["explanation"]
    assert "phased-out algorithms SHA-1" in f["title"]


@needs_tshark
def test_rekeyed_ike_sa_was_chosen_in_its_parents_create_child_sa():
    """An IKE SA made by a rekey has no IKE_SA_INIT: its proposal was chosen in the CREATE_CHILD_SA
    response on the old IKE SA (RFC 7296 §1.3.2). strongSwan's log names that exchange (request
    [ SA No KE ], no TS: the IKE SA rekey, samples/healthy-gcm); tshark numbers its frames."""
    import re

    from ipsecscope.session import Session

    sample = ROOT / "samples" / "healthy-gcm"
    (msg_id,) = {int(m) for m in re.findall(r"generating CREATE_CHILD_SA request (\d+) \[ SA No KE \]",
                                           (sample / "charon-left.log").read_text())}
    rows = _tshark(sample / "capture.pcapng", "isakmp.flags", flt=f"isakmp.exchangetype == 36 && isakmp.messageid == {msg_id}")
    frames = tuple(int(r[0]) for r in rows)
    assert len(frames) == 2 and not int(rows[0][2], 16) & 0x20 and int(rows[1][2], 16) & 0x20
    s = Session()
    s.add_key_files(sorted((sample / "keys").iterdir()))
    s.load(sample / "capture.pcapng")
    (new,) = [sa for sa in s.table.ike_sas.values() if sa.rekeyed_from]
    assert new.proposal_frames == frames


def _nat_hashes(cap: Path) -> tuple[str, str, bool, bool | None]:
    """(initiator, responder, the initiator's source hash fails, the responder's destination hash
    for the initiator matches / None when the capture holds none), from tshark's NAT-D fields:
    RFC 7296 §2.23, SHA-1(SPIi | SPIr | IP | port) as in the message's header; RFC 3947 §3.2, the
    phase-1 hash over the cookies, the peer's hash first, then the sender's own."""
    rows = _tshark(cap, "udp.srcport", "isakmp.version", "isakmp.ispi", "isakmp.rspi", "isakmp.notify.msgtype",
                   "isakmp.notify.data", "isakmp.ike.nat_hash")
    initiator, iport = rows[0][1], int(rows[0][2])  # each capture opens with the initiator's first message
    responder = next((r[1] for r in rows if r[1] != initiator), None)
    src_fails, dst_matches = None, None
    for _, addr, _, version, ispi, rspi, types, data, v1 in rows:
        if version == "0x20":
            notes = dict(zip(types.split(","), data.split(","), strict=True))
            own, peer = [notes[t] for t in ("16388",) if t in notes], [notes[t] for t in ("16389",) if t in notes]
        else:
            hashes = v1.split(",") if v1 else []
            peer, own = hashes[:1], hashes[1:]
        if addr == initiator and own:
            src_fails = all(x != _natd(ispi, rspi, initiator, iport, len(x) // 2) for x in own)
        if addr == responder and peer:
            dst_matches = peer[0] == _natd(ispi, rspi, initiator, iport, len(peer[0]) // 2)
    assert src_fails is not None and responder is not None
    return initiator, responder, src_fails, dst_matches


@needs_tshark
@pytest.mark.parametrize(("cap", "cut"), [
    (ROOT / "samples" / "ike-proposal-mismatch" / "capture.pcapng", None),
    (ROOT / "samples" / "cbc-sha2-pfs" / "capture.pcapng", None),
    (ROOT / "samples" / "ikev1-dead-peer" / "capture.pcapng", None),
    (ROOT / "samples" / "ikev1-dead-peer" / "capture.pcapng", "4"),
], ids=["ikev2-refused", "ikev2-answered", "ikev1", "ikev1-no-mm4"])
def test_forced_encapsulation_claims_only_the_captured_hashes(tmp_path, cap, cut):
    if cut is not None:  # editcap deletes the frames named
        subprocess.run(["editcap", str(cap), str(tmp_path / "cut.pcapng"), cut], check=True)
        cap = tmp_path / "cut.pcapng"
    initiator, responder, src_fails, dst_matches = _nat_hashes(cap)
    assert src_fails  # the oracle: the initiator's own hash is not over the address captured
    (f,) = findings(cap, "IKE-NAT-DETECTED")
    assert f"UDP encapsulation forced by initiator {initiator}" in f["title"]
    said = next(p for p in f["explanation"].split(". The ") if f"initiator {initiator}'s" in p)
    assert "does not match the capture" in said and "it forces UDP encapsulation" in said
    if dst_matches is None:
        assert f"{responder} sent no NAT" in said and "here to compare" in said and "matches" not in said
    else:
        assert dst_matches and f"{responder}'s destination hash for it matches" in said


def test_broken_algorithms_stay_a_warning_with_what_the_rfcs_say():
    """Wireshark's ikev1-certs.pcap: the IKE SA agreed 3des-md5-modp1024. MD5 is MUST NOT and the
    1024-bit group SHOULD NOT (RFC 8247 §2.2-§2.4), 3DES MAY for IKE: a WARNING naming each level,
    where SHA-1 alone (MUST-) is an INFO."""
    need(CORPUS / "ikev1-certs.pcap")
    r = subprocess.run([*IPSECSCOPE, "findings", str(CORPUS / "ikev1-certs.pcap"), "--json"],
                       capture_output=True, text=True, timeout=120)
    (f,) = [f for f in json.loads(r.stdout)["findings"] if f["code"] == "IKE-WEAK-ALGO"]
    assert f["severity"] == "warning" and "weak algorithms: 3DES, MD5, MODP ≤ 1024" in f["title"]
    for said in ("3DES: MAY for IKE (RFC 8247 §2.1)", "MD5: MUST NOT", "MODP ≤ 1024: SHOULD NOT for the 1024-bit group 2"):
        assert said in f["explanation"], f["explanation"]
