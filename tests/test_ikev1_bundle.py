"""IKEv1 AH+ESP bundles (RFC 2408 §4.2: proposals under one number are one bundle; RFC 2409 §5.5:
Quick Mode negotiates it, each protocol with its own SPI each way; RFC 4301 §4.1: an SA is
identified by SPI, destination and protocol): the bundle is one CHILD SA carrying every
protocol's SPIs, and the AH and the ESP packets on them are both its traffic.

Data: tests/data/ikev1-bundle (make.py: samples/ikev1-dead-peer's Quick Mode made an AH+ESP
bundle, then AH over tunnel-mode ESP on the negotiated SPIs, signed and encrypted by scapy with
the KEYMAT of each protocol and SPI) and the two bundle answers of tests/data/rfc-violations.
Oracles: tshark (its ESP decryption with the derived keys, its AH/ESP SPI fields) and scapy's AH
verification."""

from __future__ import annotations

import json
import re
import subprocess

from conftest import DATA, IPSECSCOPE, ROOT, SAMPLES, needs_tshark
from scapy.layers.inet import IP
from scapy.layers.ipsec import AH, SecurityAssociation
from scapy.utils import rdpcap
from test_tui import SIZE, sync
from test_tui_detail import open_detail

from ipsecscope import Session
from ipsecscope.model.sa import SaState
from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.sa_detail import SaDetail

HERE = DATA / "ikev1-bundle"
CAP = HERE / "ikev1-bundle.pcap"
KEYS = HERE / "ikev1-bundle.keys.json"
PHASE1 = SAMPLES / "ikev1-dead-peer" / "keys" / "ikev1_decryption_table"
# the SPIs Quick Mode negotiated: (protocol, initiator's inbound, responder's inbound)
BUNDLE = [("AH", 0x5B62D3F4, 0xCD82FE92), ("ESP", 0x5B62D3F3, 0xCD82FE91)]
A, B = "198.18.0.1", "198.18.0.2"


def _session(cap=CAP, *keys) -> Session:
    s = Session()
    s.add_key_files([str(k) for k in (keys or (KEYS, PHASE1))])
    s.load(str(cap))
    return s


def _cli(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([*IPSECSCOPE, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_bundle_is_one_child_sa_with_each_protocols_spis() -> None:
    s = _session()
    assert len(s.table.child_sas) == 1  # no INFERRED CHILD SA for the second protocol's traffic
    c = next(iter(s.table.child_sas.values()))
    assert c.state == SaState.ESTABLISHED and c.created_by == "Quick Mode"
    assert [(b.protocol, b.spi_i, b.spi_r) for b in c.bundle] == BUNDLE
    assert (c.protocol, c.spi_i, c.spi_r) == BUNDLE[0]
    assert c.proposal == "AH sha256 + ESP aes256gcm16"


def test_ah_and_esp_packets_link_to_the_bundle_with_their_counts() -> None:
    s = _session()
    c = next(iter(s.table.child_sas.values()))
    flows = {(f.protocol, f.src, f.spi): f for f in s.table.flows.values()}
    assert set(flows) == {("AH", A, 0xCD82FE92), ("ESP", A, 0xCD82FE91),
                          ("AH", B, 0x5B62D3F4), ("ESP", B, 0x5B62D3F3)}
    for f in flows.values():
        assert f.child_sa == c.id
        assert f.packets == 6 and (f.seq_min, f.seq_max, f.lost, f.duplicates) == (1, 6, 0, 0)
        assert f.icv_failed == 0 and f.no_key == 0
    assert all(f.decrypted == 6 for (p, _s, _spi), f in flows.items())  # AH: verified; ESP: decrypted
    assert {f.key for f in c.flows(s.table)} == {f.key for f in flows.values()}


def test_no_finding_about_unknown_spis_or_one_way_traffic() -> None:
    s = _session()
    codes = {f.code for f in s.findings}
    assert not {c for c in codes if "UNKNOWN" in c or "ONE-WAY" in c or "ICV" in c}, codes
    assert codes <= {"IKE-NAT-DETECTED"}, codes  # the sample's peers force UDP encapsulation (info)


def test_sas_json_and_text_show_both_protocols() -> None:
    r = _cli("sas", str(CAP), "-k", str(KEYS), str(PHASE1), "--json")
    doc = json.loads(r.stdout)
    assert doc["schema"] == "ipsecscope.sas/1"
    (c,) = doc["child_sas"]
    assert c["protocol"] == "AH" and c["spi_i"] == "0x5b62d3f4" and c["spi_r"] == "0xcd82fe92"  # as before
    assert c["bundle"] == [
        {"protocol": "AH", "spi_i": "0x5b62d3f4", "spi_r": "0xcd82fe92", "packets": 12, "bytes": 1728},
        {"protocol": "ESP", "spi_i": "0x5b62d3f3", "spi_r": "0xcd82fe91", "packets": 12, "bytes": 1392}]
    assert len(c["flows"]) == 4 and all(f["child_sa"] == 1 for f in doc["flows"])
    text = _cli("sas", str(CAP), "-k", str(KEYS), str(PHASE1)).stdout
    assert ("CHILD_SA #1 ESTABLISHED AH+ESP tunnel  SPIs AH 0x5b62d3f4 (i) / 0xcd82fe92 (r), "
            "ESP 0x5b62d3f3 (i) / 0xcd82fe91 (r)") in text
    assert "INFERRED" not in text
    assert "198.18.0.1 → 198.18.0.2 AH 0xcd82fe92: 6 pkts, 864 B, 6 verified" in text
    assert "198.18.0.2 → 198.18.0.1 ESP 0x5b62d3f3: 6 pkts, 696 B, 6 decrypted" in text


def test_one_protocol_sa_json_has_an_empty_bundle() -> None:
    r = _cli("sas", str(SAMPLES / "ikev1-dead-peer" / "capture.pcapng"), "-k", str(SAMPLES / "ikev1-dead-peer" / "keys"),
             "--json")
    (c,) = json.loads(r.stdout)["child_sas"]
    assert c["bundle"] == [] and c["protocol"] == "ESP" and c["spi_r"] == "0xcd82fe91"


def test_bundle_answers_of_the_rfc_violation_captures() -> None:
    """The answer that keeps the bundle (its ESP with another key length) carries both protocols'
    SPIs; the answer that drops AH is an ESP CHILD SA on the ESP SPIs, not the AH SPI offered
    beside the ESP SPI answered."""
    v = DATA / "rfc-violations"
    c = next(iter(_session(v / "ikev1-qm-bundle-answer-esp.pcap", PHASE1).table.child_sas.values()))
    assert [(b.protocol, b.spi_i, b.spi_r) for b in c.bundle] == BUNDLE
    c = next(iter(_session(v / "ikev1-qm-bundle-answer-drops-ah.pcap", PHASE1).table.child_sas.values()))
    assert c.bundle == [] and (c.protocol, c.spi_i, c.spi_r) == BUNDLE[1]


def test_keys_verify_ah_as_scapy_does() -> None:
    """The key file's AH keys (KEYMAT of protocol 2 and each AH SPI) verify every AH packet in
    scapy, and ipsecscope counts each verified on its AH flow of the bundle."""
    keys = {int(e["spi"], 16): e for e in json.loads(KEYS.read_text())["esp"]}
    verified: dict[int, int] = {}
    for p in rdpcap(str(CAP)):
        if AH not in p:
            continue
        spi = p[AH].spi
        sa = SecurityAssociation(AH, spi=spi, auth_algo="SHA2-256-128", auth_key=bytes.fromhex(keys[spi]["auth_key"]))
        sa.decrypt(IP(bytes(p[IP])))  # raises on a bad ICV
        verified[spi] = verified.get(spi, 0) + 1
    s = _session()
    got = {f.spi: f.decrypted for f in s.table.flows.values() if f.protocol == "AH" and not f.icv_failed}
    assert got == verified == {0xCD82FE92: 6, 0x5B62D3F4: 6}


@needs_tshark
def test_tshark_decrypts_the_bundles_esp_with_the_derived_keys() -> None:
    """tshark (esp_sa from the key file's ESP entries) opens every ESP packet behind AH, and its
    AH/ESP SPIs per frame are the ones the bundle's CHILD SA carries."""
    uat = []
    for e in json.loads(KEYS.read_text())["esp"]:
        if e.get("protocol") != "ah":
            uat += ["-o", f'uat:esp_sa:"IPv4","{e["src"]}","{e["dst"]}","{e["spi"]}",'
                          f'"AES-GCM with 16 octet ICV [RFC4106]","0x{e["enc_key"]}","NULL",""']
    out = subprocess.run(["tshark", "-r", str(CAP), "-o", "esp.enable_encryption_decode:TRUE", *uat, "-Y", "ah",
                          "-T", "fields", "-e", "frame.number", "-e", "ah.spi", "-e", "esp.spi", "-e", "icmp.seq"],
                         capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    assert len(out) == 12
    pairs = {(int(ah, 16), int(esp, 16)) for _n, ah, esp, _seq in (line.split("\t") for line in out)}
    assert pairs == {(BUNDLE[0][2], BUNDLE[1][2]), (BUNDLE[0][1], BUNDLE[1][1])}
    assert all(line.split("\t")[3] for line in out)  # an ICMP sequence number: decrypted
    s = _session()
    c = next(iter(s.table.child_sas.values()))
    assert {(b.spi_r) for b in c.bundle} | {b.spi_i for b in c.bundle} == {x for p in pairs for x in p}


@sync
async def test_tui_sa_detail_shows_each_protocols_spis() -> None:
    app = create_app(CAP, [KEYS, PHASE1])
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, "child")
        text = app.query_one(SaDetail).as_text(width=100)
        assert "CHILD SA #1 (AH+ESP tunnel)" in text
        assert re.search(r"SPIs\s+AH initiator 5b62d3f4\s+responder cd82fe92", text), text
        assert re.search(r"ESP initiator 5b62d3f3\s+responder cd82fe91", text), text


def test_decrypt_verifies_the_ah_and_decrypts_the_esp_of_every_packet(tmp_path) -> None:
    out = tmp_path / "bundle.jsonl"
    r = _cli("decrypt", str(CAP), "-k", str(KEYS), "--jsonl", str(out), "-q")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    got = sorted((x["protocol"], x["status"], x["spi"]) for x in recs)
    want = sorted((p, "ok", f"0x{spi:08x}") for p, i, r_ in BUNDLE for spi in (i, r_) for _ in range(6))
    assert got == want
