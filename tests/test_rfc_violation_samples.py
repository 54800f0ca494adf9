"""The checked-in captures of tests/data/rfc-violations (README.md there): real messages of the
project's samples with one field that contradicts its RFC, encrypted again with the sample's keys.
Every command reads them; the messages are malformed with the rule they break, the rest of their
decode kept, and tshark counts the same frames."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, SAMPLES, needs_tshark, public

HERE = DATA / "rfc-violations"
V2_KEYS = SAMPLES / "healthy-gcm" / "keys"
V1_KEYS = SAMPLES / "ikev1-dead-peer" / "keys"

EXPECTED = {  # file: (keys, {frame: words of its malformed note})
    "ikev2-init-offer.pcap": (V2_KEYS, {
        1: "proposals numbered 1, 3; an offer numbers them 1, 2, … (RFC 7296 §3.3.1)",
        2: "proposal 1 transform 3 Last Substruc 3, 0: it is the last (RFC 7296 §3.3.2)"}),
    "ikev2-init-notify-sizes.pcap": (V2_KEYS, {
        1: "SIGNATURE_HASH_ALGORITHMS data is 3 bytes, not a list of 2-byte hash algorithm numbers (RFC 7427 §4)",
        2: "COOKIE data is 65 bytes, a cookie takes 1 to 64 (RFC 7296 §2.6)"}),
    "ikev2-auth-ts-reversed.pcap": (V2_KEYS, {
        4: "payload 5 (TSr): selector 1 start port 443 is above end port 80; only OPAQUE is written 65535-0"}),
    "ikev2-auth-offer-numbered-2.pcap": (V2_KEYS, {
        3: "encrypted payloads: payload 5 (SA): the first proposal of an offer is numbered 2, not 1 (RFC 7296 §3.3.1)"}),
    "ikev2-notify-data.pcap": (V2_KEYS, {
        1: "IKEV2_FRAGMENTATION_SUPPORTED data is 2 bytes, IKEV2_FRAGMENTATION_SUPPORTED takes 0 (RFC 7383 §2.3)",
        3: "encrypted payloads: payload 2 (N): SET_WINDOW_SIZE data is 2 bytes, a window size takes 4 (RFC 7296 §2.3)"}),
    # RFC 7296 §3.3.3 mandatory transform types, offer and answer (a public capture's initiator sent
    # a proposal 1 with D-H alone: vpandian/sgw capture.pcap frame 1)
    "ikev2-init-proposal-dh-only.pcap": (V2_KEYS, {
        1: "payload 1 (SA): proposal 1 IKE has no ENCR or PRF transform; an IKE proposal carries ENCR, PRF, D-H "
           "and INTEG unless its cipher is AEAD (RFC 7296 §3.3.3, RFC 5282 §8)",
        2: "payload 1 (SA): proposal 2 IKE has no PRF transform; an IKE proposal carries ENCR, PRF, D-H"}),
    "ikev2-auth-esp-no-esn.pcap": (V2_KEYS, {
        3: "encrypted payloads: payload 5 (SA): proposal 1 ESP has no ESN transform; an ESP proposal carries "
           "ENCR, ESN and INTEG unless its cipher is AEAD (RFC 7296 §3.3.3, RFC 5282 §8)",
        4: "encrypted payloads: payload 3 (SA): proposal 1 ESP has no ESN transform"}),
    # RFC 7296 §3.3.3's AH branch: an AH offer's proposal 2 without INTEG (proposal 1 and the answer
    # carry INTEG and ESN, and stay clean)
    "ikev2-auth-ah-no-integ.pcap": (V2_KEYS, {
        3: "encrypted payloads: payload 5 (SA): proposal 2 AH has no INTEG transform; an AH proposal carries "
           "INTEG and ESN (RFC 7296 §3.3.3)"}),
    # RFC 5282 §8, RFC 7296 §3.3: INTEG beside an AEAD cipher alone, offer and answer
    "ikev2-init-aead-with-integ.pcap": (V2_KEYS, {
        1: "payload 1 (SA): proposal 1 IKE has AUTH_HMAC_SHA2_256_128 beside its AEAD cipher ENCR_AES_GCM_16; a "
           "proposal whose ciphers are all AEAD carries no INTEG transform, or INTEG NONE (RFC 5282 §8, RFC 7296 §3.3)",
        2: "payload 1 (SA): proposal 1 IKE has AUTH_HMAC_SHA2_256_128 beside its AEAD cipher ENCR_AES_GCM_16"}),
    "ikev1-quick-mode.pcap": (V1_KEYS, {
        7: "payload 3 (NONCE): nonce of 4 bytes; RFC 2409 §5 takes 8 to 256",
        8: "payload 2 (SA): proposal 1 PROTO_IPSEC_ESP SPI size 0; AH and ESP SPIs are 4 bytes"}),
}


def _cli(*args: str | Path, codes=(0,)) -> str:
    p = subprocess.run([sys.executable, "-m", "ipsecscope", *map(str, args)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode in codes and "Traceback" not in p.stderr, p.stderr
    return p.stdout


@pytest.mark.parametrize("name", EXPECTED)
def test_sample_marks_the_rule_and_keeps_the_rest(name: str, tmp_path: Path) -> None:
    keys, marks = EXPECTED[name]
    cap = HERE / name
    rows = {json.loads(x)["frame"]: json.loads(x) for x in _cli("packets", "--json", cap, "-k", keys).splitlines()}
    assert {f for f, r in rows.items() if r["status"] == "malformed"} == set(marks)
    for f, words in marks.items():
        assert words in rows[f]["info"], rows[f]["info"]
    # the encrypted ones decrypted: the keys and the IV chain still fit every message
    encrypted = [r for n, r in rows.items() if "[ SK" in r["info"] or (" v1 " in r["info"] and n >= 5)]
    assert encrypted if "-init-" not in name else True  # the IKE_SA_INIT-only files hold no SK
    assert all("(decrypted)" in r["info"] for r in encrypted)
    summary = json.loads(_cli("summary", "--json", cap, "-k", keys))
    assert summary
    sas = json.loads(_cli("sas", "--json", cap, "-k", keys))
    codes = [f["code"] for f in json.loads(_cli("findings", "--json", cap, "-k", keys, codes=(0, 1)))["findings"]]
    assert "CAPTURE-MALFORMED" in codes and "IKE-CHILD-REFUSED" not in codes
    if name == "ikev2-auth-ts-reversed.pcap":
        child = sas["child_sas"][0]
        assert child["ts_r"] == child["ts_r_offered"] == ["10.2.0.0-10.2.0.255"]
    if name == "ikev1-quick-mode.pcap":
        assert sas["child_sas"][0]["state"] != "failed"  # the answer's SA is unreadable, not absent
    _cli("decrypt", cap, "-k", keys, "-o", tmp_path / "out.pcapng", codes=(0, 3))  # 3: no ESP in these


@needs_tshark
@pytest.mark.parametrize("name", EXPECTED)
def test_tshark_counts_the_same_frames(name: str) -> None:
    out = subprocess.run(["tshark", "-r", str(HERE / name), "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    rows = _cli("packets", "--json", HERE / name).splitlines()
    assert len(out) == len(rows)


@needs_tshark
@pytest.mark.parametrize("name", ["ikev2-auth-offer-numbered-2.pcap", "ikev2-notify-data.pcap", "ikev2-auth-ts-reversed.pcap",
                                  "ikev2-auth-esp-no-esn.pcap", "ikev2-auth-ah-no-integ.pcap"])
def test_tshark_decrypts_the_resealed_messages(name: str) -> None:
    """The IKE_AUTH messages re-encrypted with healthy-gcm's SK keys: tshark, with the sample's key
    table, verifies both ICVs; inside the offer it reads the one proposal numbered 2 (the answer,
    untouched, names proposal 1), and the notify turned into SET_WINDOW_SIZE (16385)."""
    env = {**os.environ, "WIRESHARK_CONFIG_DIR": str(V2_KEYS)}
    cap = HERE / name
    text = subprocess.run(["tshark", "-n", "-r", str(cap), "-V", "-Y", "frame.number >= 3"], capture_output=True,
                          text=True, timeout=60, check=True, env=env).stdout
    assert text.count("Integrity Checksum Data") == text.count("bytes)[correct]") == 2
    fields = subprocess.run(["tshark", "-n", "-r", str(cap), "-T", "fields", "-e", "frame.number", "-e",
                             "isakmp.prop.number", "-e", "isakmp.notify.msgtype"],
                            capture_output=True, text=True, timeout=60, check=True, env=env).stdout
    rows = {int(c[0]): c[1:] for c in (line.split("\t") for line in fields.splitlines())}
    if name == "ikev2-auth-offer-numbered-2.pcap":
        assert [rows[f][0] for f in (1, 2, 3, 4)] == ["1", "1", "2", "1"]
    if name == "ikev2-notify-data.pcap":
        assert rows[3][1].split(",")[0] == "16385" and "16430" in rows[1][1].split(",")
    if name == "ikev2-auth-esp-no-esn.pcap":  # offer and answer: ESP with its ENCR transform alone
        assert text.count("Proposal transforms: 1") == 2 and "Extended Sequence Numbers (ESN)" not in text
    if name == "ikev2-auth-ah-no-integ.pcap":  # offer: AH 1 INTEG+ESN, AH 2 ESN alone; answer: AH 1
        assert [rows[f][0] for f in (3, 4)] == ["1,2", "1"]
        assert text.count("Protocol ID: AH (2)") == 3 and text.count("Transform ID (INTEG): AUTH_HMAC_SHA2_256_128") == 2


PG_IKEV2 = public("packetgen/ikev2.pcapng")  # third-party: materialised at test time (tests/public_data.py)


def test_public_capture_offering_integ_beside_aead() -> None:
    """packetgen-plugin-ipsec's ikev2.pcapng (tests/data/packetgen): its initiator offers AES-GCM-16
    alone with AUTH_HMAC_SHA2_256_128 beside it, which RFC 5282 §8 forbids; the responder's answer
    selects no INTEG (as §8 asks of a selection) and stays clean."""
    rows = {json.loads(x)["frame"]: json.loads(x)
            for x in _cli("packets", "--json", PG_IKEV2).splitlines()}
    assert rows[1]["status"] == "malformed" and (
        "payload 1 (SA): proposal 1 IKE has AUTH_HMAC_SHA2_256_128 beside its AEAD cipher ENCR_AES_GCM_16"
        in rows[1]["info"])
    assert [f for f, r in rows.items() if r["status"] == "malformed"] == [1]
