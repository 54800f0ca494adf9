"""ipsecscope over every public capture in tests/data (Wireshark, tcpdump, suricata-verify test
suites; provenance in each folder), compared with each suite's expected output and with tshark.

* Every capture loads through the CLI (``summary --json``) without a traceback, and its IKE
  message and ESP packet counts equal tshark's (frames tshark dissects as ISAKMP / ESP).
* tcpdump: the ``-E`` secrets of each crypto test (TESTrun / TESTLIST) decrypt exactly the ESP
  packets whose line in the expected ``*.out`` shows an inner packet, to the same inner
  addresses and protocol; packets tcpdump prints as garbage are not reported decrypted.
* suricata-verify: the EVE records of each ``test.yaml`` that ipsecscope has an equivalent for
  (ESP flows by SPI and addresses, IKE SPIs, exchange type, IKEv1 transform attributes, the
  weak DH group alert).

Cases where ipsecscope is known to disagree and another helper is fixing it are marked
``xfail(strict=True, reason="<helper>: <item>")``: they turn into failures when fixed, so the
mark is removed with the fix. Disagreements that are not ipsecscope's fault are listed in
README.md (Limits) and asserted as such here.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import CORPUS, DATA, IPSECSCOPE, ROOT, needs_tshark, public_dir, public_files
from public_data import data_id

# Third-party captures, none committed: materialised at test time (tests/public_data.py), listed
# whether or not this machine has them (their tests then skip, saying why).
TCPDUMP = public_dir("tcpdump")
SURICATA = public_dir("suricata-verify")
WIRESHARK = CORPUS
# the three suites above, then captures nobody here made, found later (tests/test_field_captures.py
# compares them frame by frame)
SUITES = ("wireshark", "tcpdump", "suricata-verify", "ndpi", "packetgen", "openswan-klips", "zeek-spicy-ipsec",
          "arkime", "openswan-unit", "joy", "libreswan", "scapy", "zeek")


def _captures() -> list[Path]:
    return [p for suite in SUITES for p in public_files(suite)
            if p.name.endswith((".pcap", ".pcapng", ".pcapng.gz", ".cap"))]


CAPTURES = _captures()


def _id(p: Path) -> str:
    return data_id(p)


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*IPSECSCOPE, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=ROOT)


@functools.cache
def summary(cap: Path) -> dict:
    r = cli("summary", cap, "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return json.loads(r.stdout)


@functools.cache
def tshark_counts(cap: Path) -> tuple[int, int]:
    """(IKE/ISAKMP messages, ESP packets) as tshark 4.0 dissects them, no keys."""
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-T", "fields", "-e", "frame.protocols",
                          "-e", "isakmp.ispi", "-e", "esp.spi"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    ike = esp = 0
    for line in out.splitlines():
        protos, ispi, spi = (line.split("\t") + ["", ""])[:3]
        stack = protos.split(":")
        # An ICMP error quoting an IKE or ESP packet is neither (tshark dissects the quote).
        if "icmp" in stack or "icmpv6" in stack:
            continue
        ike += len([s for s in ispi.split(",") if s]) if "isakmp" in stack else 0
        esp += 1 if "esp" in stack and spi else 0
    return ike, esp


def test_public_corpus_is_present():
    """Every suite has its provenance in tests/data; third-party captures not committed are listed
    (tests/public_data.py) whether or not this machine can materialise them."""
    assert len(CAPTURES) >= 39
    for suite in SUITES:
        assert list((DATA / suite).glob("PROVENANCE.md")) or list((DATA / suite).glob("MANIFEST.md")), suite


@pytest.mark.parametrize("cap", CAPTURES, ids=_id)
def test_every_public_capture_loads(cap):
    """summary --json reads every capture; what it could not decode is counted as malformed."""
    s = summary(cap)
    assert s["frames"] >= 1
    assert s["counts"]["ike"] == len(s["ike"]) and s["counts"]["esp"] == sum(f["packets"] for f in s["esp"])


# Captures where tshark and ipsecscope count differently, and why ipsecscope is right (README,
# Limits): what ipsecscope counts instead, as (ike, esp, malformed).
COUNT_DISAGREEMENTS: dict[str, tuple[int, int, int, str]] = {
    "tcpdump/esp_truncated.pcap": (0, 0, 1, "a first IP fragment the snap length cut inside the ESP header "
                                   "(4 of its 8 octets): tshark counts an ESP packet, ipsecscope a malformed "
                                   "one (its SPI kept, as tshark shows it)"),
    "tcpdump/isakmp-delete-segfault.pcap": (0, 0, 1, "the UDP length exceeds the IP payload: "
                                            "ipsecscope counts it malformed at the UDP layer"),
    "tcpdump/isakmp-pointer-loop.pcap": (1, 0, 1, "an ISAKMP header with length 0 on port 500: "
                                         "tshark shows data, tcpdump and ipsecscope an ISAKMP "
                                         "message (ipsecscope marks it malformed)"),
    "zeek-spicy-ipsec/ipsec-ikev1-zero-length.pcap": (1, 0, 1, "an ISAKMP header with length 0 on port "
                                                      "500, as tcpdump/isakmp-pointer-loop.pcap"),
}


@needs_tshark
@pytest.mark.parametrize("cap", CAPTURES, ids=_id)
def test_ike_and_esp_counts_agree_with_tshark(cap):
    s = summary(cap)
    ours = (s["counts"]["ike"], s["counts"]["esp"])
    if _id(cap) in COUNT_DISAGREEMENTS:
        ike, esp, malformed, _why = COUNT_DISAGREEMENTS[_id(cap)]
        assert (*ours, s["counts"]["malformed"]) == (ike, esp, malformed)
        assert ours != tshark_counts(cap), "tshark agrees now: drop the entry (and the README line)"
        return
    assert ours == tshark_counts(cap)


# ---- tcpdump ---------------------------------------------------------------------------------

ESP_LINE = re.compile(r"^\s*(?P<frame>\d+)\s+\S+ \S+ IP (?P<src>[\d.]+?)(?:\.\d+)? > (?P<dst>[\d.]+?)(?:\.\d+)?: "
                      r"(?:UDP-encap: )?ESP\(spi=(?P<spi>0x[0-9a-f]+),seq=(?P<seq>0x[0-9a-f]+)\), length \d+"
                      r"(?P<rest>.*)$")
INNER = re.compile(r"IP (?P<src>[\d.]+) > (?P<dst>[\d.]+): (?P<proto>ICMP|ESP)")


def tcpdump_expected(out: Path) -> dict[int, dict]:
    """Per ESP frame of a tcpdump *.out: SPI, sequence number and what tcpdump decrypted
    (the innermost "IP a > b: proto", or None when it printed nothing or garbage)."""
    frames = {}
    for line in out.read_text().splitlines():
        m = ESP_LINE.match(line)
        if not m:
            continue
        inner = INNER.findall(m["rest"])
        frames[int(m["frame"])] = {"spi": m["spi"], "seq": int(m["seq"], 16),
                                   "inner": inner[-1] if inner else None, "layers": len(inner)}
    return frames


def _secrets(tmp: Path, arg: str) -> Path:
    """A tcpdump -E argument ("spi@dst algo:key,...") as a secrets file, one SA per line."""
    f = tmp / "secrets.txt"
    f.write_text("".join(s.strip() + "\n" for s in arg.split(",")))
    return f


# (test name in TESTrun, capture, expected output, secrets: -E argument or file in tests/data/tcpdump)
TCPDUMP_ESP = [
    pytest.param("esp0", "02-sunrise-sunset-esp.pcap", "esp0.out", None, id="esp0"),
    pytest.param("esp1", "02-sunrise-sunset-esp.pcap", "esp1.out",
                 "0x12345678@192.1.2.45 3des-cbc-hmac96:0x4043434545464649494a4a4c4c4f4f515152525454575758", id="esp1"),
    pytest.param("esp2", "08-sunrise-sunset-esp2.pcap", "esp2.out",
                 "0x12345678@192.1.2.45 3des-cbc-hmac96:0x43434545464649494a4a4c4c4f4f51515252545457575840,"
                 "0xabcdabcd@192.0.1.1 3des-cbc-hmac96:0x434545464649494a4a4c4c4f4f5151525254545757584043",
                 id="esp2"),
    pytest.param("esp3", "02-sunrise-sunset-esp.pcap", "esp1.out",
                 "3des-cbc-hmac96:0x4043434545464649494a4a4c4c4f4f515152525454575758", id="esp3"),
    pytest.param("esp4", "08-sunrise-sunset-esp2.pcap", "esp2.out", "esp-secrets.txt", id="esp4"),
    pytest.param("esp5", "08-sunrise-sunset-aes.pcap", "esp5.out", "esp-secrets.txt", id="esp5"),
    pytest.param("espudp1", "espudp1.pcap", "espudp1.out", "esp-secrets.txt", id="espudp1"),
]


def _decrypt(cap: Path, keys: Path | None) -> dict[int, list[dict]]:
    args = ["decrypt", cap, "--jsonl", "-", "-q"] + (["-k", keys] if keys else [])
    r = cli(*args)
    assert "Traceback" not in r.stderr, r.stderr
    recs: dict[int, list[dict]] = {}
    for line in r.stdout.splitlines():
        rec = json.loads(line)
        recs.setdefault(rec["frame"], []).append(rec)
    # exit status (README "Decrypt and export"): 3 nothing decrypted, 4 some ICV failures, else 0
    statuses = [x["status"] for v in recs.values() for x in v]
    want = 3 if "ok" not in statuses else 4 if "icv_failed" in statuses else 0
    assert r.returncode == want, (r.returncode, r.stderr)
    return recs


def _inners(obj: object) -> list[tuple[str, str, str]]:
    """Every (src, dst, proto) inner packet named anywhere in a decrypt record (nested layers
    may be reported as further records or nested objects)."""
    found = []
    if isinstance(obj, dict):
        if {"src", "dst", "proto"} <= obj.keys():
            found.append((obj["src"], obj["dst"], obj["proto"]))
        for v in obj.values():
            found += _inners(v)
    elif isinstance(obj, list):
        for v in obj:
            found += _inners(v)
    return found


@pytest.mark.parametrize(("name", "capture", "out", "secret"), TCPDUMP_ESP)
def test_tcpdump_esp_decryption_agrees(name, capture, out, secret, tmp_path):
    expected = tcpdump_expected(TCPDUMP / out)
    assert expected, f"{out}: no ESP lines parsed"
    keys = None
    if secret:
        keys = TCPDUMP / secret if (TCPDUMP / secret).is_file() else _secrets(tmp_path, secret)
    got = _decrypt(TCPDUMP / capture, keys)
    assert set(got) == set(expected), "the same ESP frames"
    for frame, exp in expected.items():
        recs = got[frame]
        assert (recs[0]["spi"], recs[0]["seq"]) == (int(exp["spi"], 16) and exp["spi"], exp["seq"]) or (
            int(recs[0]["spi"], 16), recs[0]["seq"]) == (int(exp["spi"], 16), exp["seq"])
        if exp["inner"] is None:
            # tcpdump printed no inner packet (no key) or garbage (wrong key): not decrypted.
            assert all(r["status"] != "ok" for r in recs), (frame, recs)
        else:
            assert recs[0]["status"] == "ok", (frame, recs[0])
            assert exp["inner"] in _inners(recs), (frame, exp["inner"], recs)


def test_tcpdump_espudp1_is_a_wrong_key():
    """espudp1 is decrypted by tcpdump with a key that does not belong to it (its *.out shows
    "[|esp]" and "ip-proto-227"). tcpdump secrets carry no integrity key, so only the RFC 4303
    §2.4 padding, the next header and the inner header can tell: no packet may count as ok."""
    got = _decrypt(TCPDUMP / "espudp1.pcap", TCPDUMP / "esp-secrets.txt")
    statuses = {r["status"] for recs in got.values() for r in recs}
    assert statuses and "ok" not in statuses




@pytest.mark.parametrize("keys", [
    pytest.param("ikev2pI2-secrets.txt", id="tcpdump-secrets"),
    pytest.param("derived/ikev2pI2-wsprofile/ikev2_decryption_table", id="wireshark-table")])
def test_tcpdump_ikev2pI2_keys_are_read_and_match_the_sa(keys):
    """The ikev2pI2 IKE keys load and are bound to the capture's IKE SA. The capture's IKE_AUTH
    integrity checksum is wrong (tshark: "Integrity Checksum Data is incorrect"; tcpdump checks
    none): ipsecscope counts an ICV failure and shows no unauthenticated plaintext (README,
    Limits)."""
    r = cli("sas", TCPDUMP / "ikev2pI2.pcap", "--json", "-k", TCPDUMP / keys)
    assert r.returncode == 0, r.stderr
    (sa,) = json.loads(r.stdout)["ike_sas"]
    assert (sa["spi_i"], sa["spi_r"]) == ("0001020304050607", "c02e7a3031a03188")
    assert sa["icv_failed"] == 1 and not sa["decrypted"]


# tcpdump tests without secrets: the ISAKMP/IKE messages tcpdump printed are the ones we decode.
TCPDUMP_PLAIN = sorted(p for p in public_files("tcpdump") if p.suffix == ".out"
                       and p.stem not in {"esp0", "esp1", "esp2", "esp5", "espudp1", "ikev2pI2"})


def _tcpdump_input(out: Path) -> Path | None:
    """The capture a TESTLIST / TESTrun test reads for its expected output ``out``."""
    for line in (TCPDUMP / "TESTLIST").read_text().splitlines():
        cols = line.split()
        if len(cols) >= 3 and not line.startswith("#") and cols[2] == out.name:
            return TCPDUMP / cols[1]
    runs = (TCPDUMP / "TESTrun").read_text()
    m = re.search(r"input => '([^']+)',\s*output => '" + re.escape(out.name) + "'", runs)
    return TCPDUMP / m[1] if m else None


@pytest.mark.parametrize("out", TCPDUMP_PLAIN, ids=lambda p: p.stem)
def test_tcpdump_isakmp_messages_agree(out):
    """Every frame tcpdump prints as ISAKMP is an IKE message for ipsecscope too, every NAT-T
    keepalive a keepalive, and every frame tcpdump cuts short ("[|isakmp...]") is an IKE
    message or counted malformed."""
    cap = _tcpdump_input(out)
    assert cap is not None and cap.exists(), f"{out.name}: no input in TESTLIST/TESTrun"
    isakmp, keepalive, cut = set(), set(), set()
    # One block per frame: "N  time ..." and, with -v, continuation lines.
    for block in re.split(r"^(?=\s*\d+\s+\d{4}-\d\d-\d\d )", out.read_text(), flags=re.M):
        m = re.match(r"\s*(\d+)\s", block)
        if not m:
            continue
        if "isakmp-nat-keep-alive" in block:
            keepalive.add(int(m[1]))
        elif "[|isakmp" in block:
            cut.add(int(m[1]))
        elif "isakmp" in block:
            isakmp.add(int(m[1]))
    s = summary(cap)
    ours = {m["frame"] for m in s["ike"]}
    # tcpdump's fuzzed captures: frames whose IP/UDP header does not fit are counted malformed
    # (tcpdump prints what it can of them); see COUNT_DISAGREEMENTS.
    broken = {e["frame"] for e in s["malformed"]["examples"]}
    assert isakmp <= ours | broken, sorted(isakmp - ours - broken)
    assert s["counts"]["keepalive"] == len(keepalive)
    assert cut <= ours | broken


# ---- suricata-verify ---------------------------------------------------------------------------

def test_suricata_eve_flow_esp_flows():
    """eve-flow-esp: four ESP flows (SPI 123 to two destinations and over IPv6, SPI 321), two
    packets each, all one way -- as Suricata's flow records say."""
    s = summary(SURICATA / "eve-flow-esp" / "input.pcap")
    flows = {(f["spi"], f["src"], f["dst"]): f["packets"] for f in s["esp"]}
    assert flows == {("0x0000007b", "190.0.0.1", "190.0.0.2"): 2, ("0x00000141", "190.0.0.1", "190.0.0.2"): 2,
                     ("0x0000007b", "190.0.0.1", "190.0.0.3"): 2, ("0x0000007b", "::1", "::2"): 2}


def test_suricata_eve_flow_esp_one_sa_per_flow():
    """Each of those flows is its own SA (RFC 4301 §4.1): one inferred CHILD SA per flow."""
    r = cli("sas", SURICATA / "eve-flow-esp" / "input.pcap", "--json")
    children = json.loads(r.stdout)["child_sas"]
    assert sorted(len(c["flows"]) for c in children) == [1, 1, 1, 1]


def test_suricata_ikev1_main_mode():
    """ikev1 (on ikev1-rules' capture): the Main Mode SA's SPIs, exchange type 2 and the chosen
    transform (AES-CBC, SHA-1, MODP-1024 "alternate 1024-bit", pre-shared key), as Suricata's
    ike record says."""
    r = cli("sas", SURICATA / "ikev1-rules" / "ikev1-isakmp-main-mode.pcap", "--json")
    (sa,) = json.loads(r.stdout)["ike_sas"]
    assert (sa["spi_i"], sa["spi_r"], sa["version"]) == ("e47a591fd057587f", "a00b8ef0902bb8ec", 1)
    assert sa["mode"] == "Main" and sa["auth_method"] == "PSK"
    assert sa["proposal"] == "aes128-sha1-modp1024" and sa["dh_group"] == "MODP_1024"
    s = summary(SURICATA / "ikev1-rules" / "ikev1-isakmp-main-mode.pcap")
    assert {m["exchange_type"] for m in s["ike"][:6]} == {2}


def test_suricata_ikev1_rules_roles():
    """ikev1-rules: 5 messages from the initiator, 4 from the responder (its "ike initiator" /
    "ike responder" alerts), 2 with a nonce payload."""
    s = summary(SURICATA / "ikev1-rules" / "ikev1-isakmp-main-mode.pcap")
    by_src: dict[str, int] = {}
    for m in s["ike"]:
        by_src[m["src"]] = by_src.get(m["src"], 0) + 1
    assert by_src == {"192.168.12.1": 5, "192.168.12.2": 4}
    assert sum("NONCE" in m["payloads"] for m in s["ike"]) == 2


def test_suricata_ikev2_weak_dh():
    """ikev2-weak-dh: an IKE_SA_INIT request (message 0, SPIs 61d3693ce12af528 / 0) offering a
    weak Diffie-Hellman group; Suricata alerts (ikev2.weak_crypto_dh), ipsecscope reports it."""
    cap = SURICATA / "ikev2-weak-dh" / "IKEv2_SA_INIT_2-8-weak.pcap"
    s = summary(cap)
    (m,) = s["ike"]
    assert (m["version"], m["exchange_type"], m["msg_id"], m["spi_i"], m["spi_r"]) == (
        2, 34, 0, "61d3693ce12af528", "0000000000000000")
    assert not m["is_response"]
    r = cli("findings", cap, "--json")
    # offered, never negotiated (no answer): info, naming the group (IKE-WEAK-ALGO is for negotiated ones)
    assert any(f["code"] == "IKE-WEAK-OFFERED" and "MODP ≤ 1024" in f["title"]
               for f in json.loads(r.stdout)["findings"]), r.stdout


def test_suricata_ikev1_duplicate_proposals():
    """ikev1-duplicate-proposals: one transform carrying the Life-Duration attribute twice
    (86400 and 65535 s, both in Suricata's record). It is still one offer, AES-CBC-128 / SHA-1 /
    MODP-1024, and not malformed (ipsecscope does not report IKE SA lifetimes: README, Limits)."""
    cap = SURICATA / "ikev1-duplicate-proposals" / "generated.pcap"
    r = cli("sas", cap, "--json")
    assert r.returncode == 0, r.stderr
    (sa,) = json.loads(r.stdout)["ike_sas"]
    assert sa["offered"] == ["aes128-sha1-modp1024"] and sa["state"] == "initiating"
    assert summary(cap)["counts"]["malformed"] == 0
