"""Keys that are loaded but do not work are findings, not silence (rules R14 and R28).

Real data only: the strongSwan sample ``healthy-gcm`` with its own key tables, one byte of one key
changed in a copy written to tmp_path; Wireshark's IKEv1 capture ``ikev1-bug-12610`` with its key
table, one byte changed; the real IKEv1 PSK-mismatch capture with one peer's charon log; the bad
key files of tests/data/bad (reused from test_bad_input.py). tshark is the oracle for which frames
are encrypted, which fail their ICV and how many ESP packets a flow has.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CORPUS, DATA, ROOT, SAMPLES, needs_tshark

from ipsecscope.analysis.rules import evaluate
from ipsecscope.model.plural import plural
from ipsecscope.model.sa import Severity
from ipsecscope.session import Session

HEALTHY = SAMPLES / "healthy-gcm"
HEALTHY_CAP = HEALTHY / "capture.pcapng"
BAD = DATA / "bad"
V1_CAP = CORPUS / "ikev1-bug-12610.pcapng.gz"
V1_KEYS = CORPUS / "ikev1_decryption_table.tmpl"
PSK = DATA / "findings" / "ikev1-psk-mismatch"
NEW_CODES = {"IKE-ICV-FAILED", "IKE-KEY-MISMATCH", "ESP-UNSUPPORTED-ALGO"}


def ipsecscope(*args: str | Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "ipsecscope", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env)


def tshark(cap: Path, fields: list[str], filt: str, profile: Path | None = None) -> list[list[str]]:
    env = dict(os.environ)
    if profile is not None:
        env["WIRESHARK_CONFIG_DIR"] = str(profile)
    cmd = ["tshark", "-r", str(cap), "-Y", filt, "-T", "fields", "-E", "separator=\t"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=True).stdout
    return [ln.split("\t") for ln in out.splitlines() if ln]


def flip_first_key_byte(src: Path, dst: Path, column: int, sep: str = ",") -> None:
    """Copy a key table, changing the first byte of the key in ``column`` of every data row."""
    out = []
    for line in src.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            out.append(line)
            continue
        cols = line.split(sep)
        raw = cols[column].strip('"')
        pre = "0x" if raw.startswith("0x") else ""
        hexs = raw[len(pre):]
        new = pre + f"{int(hexs[:2], 16) ^ 0x01:02x}" + hexs[2:]
        cols[column] = cols[column].replace(raw, new)
        out.append(sep.join(cols))
    dst.write_text("\n".join(out) + "\n")


def findings_json(cap: Path, *keys: Path) -> tuple[int, list[dict]]:
    args = ["findings", cap, "--json"]
    for k in keys:
        args += ["-k", k]
    r = ipsecscope(*args)
    assert r.returncode in (0, 1, 2), r.stderr
    return r.returncode, json.loads(r.stdout)["findings"]


def sas_json(cap: Path, *keys: Path) -> dict:
    args = ["sas", cap, "--json"]
    for k in keys:
        args += ["-k", k]
    r = ipsecscope(*args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# ------------------------------------------------------------------ 1. IKEv2: one wrong key column


@pytest.fixture
def bad_sk_ei(tmp_path: Path) -> Path:
    """healthy-gcm's ikev2_decryption_table with one byte of every SK_ei changed (column 3)."""
    dst = tmp_path / "ikev2_decryption_table"
    flip_first_key_byte(HEALTHY / "keys" / "ikev2_decryption_table", dst, 2)
    assert dst.read_text() != (HEALTHY / "keys" / "ikev2_decryption_table").read_text()
    return dst


@needs_tshark
def test_corrupt_sk_ei_is_an_ike_icv_failed_finding(bad_sk_ei: Path) -> None:
    # Oracle: tshark with the same damaged table flags exactly the initiator's SK messages.
    wrong = tshark(HEALTHY_CAP, ["frame.number", "isakmp.ispi", "_ws.expert.message"], "isakmp",
                   profile=bad_sk_ei.parent)
    bad_frames: dict[str, list[int]] = {}
    for frame, ispi, expert in wrong:
        if "Integrity Checksum Data is incorrect" in expert:
            bad_frames.setdefault(ispi, []).append(int(frame))
    assert len(bad_frames) == 2 and all(bad_frames.values())

    code, fs = findings_json(HEALTHY_CAP, bad_sk_ei)
    assert code == 1  # warnings
    icv = {f["sa"].split("_")[0]: f for f in fs if f["code"] == "IKE-ICV-FAILED"}
    assert set(icv) == set(bad_frames)
    sas = {sa["spi_i"]: sa for sa in sas_json(HEALTHY_CAP, bad_sk_ei)["ike_sas"]}
    for ispi, frames in bad_frames.items():
        f = icv[ispi]
        assert f["severity"] == "warning"
        assert f["frames"] == frames[:5]
        assert f"{plural(len(frames), 'encrypted message')} failed the integrity check" in f["title"]
        assert f["title"].startswith(f"IKE SA {ispi[:8]}…") and "wrong IKE keys" in f["title"]
        # The diagnosis names the column and the file the keys came from.
        assert "SK_ei/SK_ai" in f["explanation"] and "ikev2_decryption_table:" in f["explanation"]
        assert "initiator 198.18.0.1" in f["explanation"] and "GCM tag mismatch" in f["explanation"]
        assert "column order" in f["hint"]
        # The responder's messages (the column that is right) still decrypt.
        assert sas[ispi]["icv_failed"] == len(frames) and sas[ispi]["decrypted"]
    text = ipsecscope("findings", HEALTHY_CAP, "-k", bad_sk_ei).stdout
    assert "IKE-ICV-FAILED" in text and "wrong IKE keys" in text


def test_wrong_ike_key_table_every_message_fails() -> None:
    """tests/data/bad/wrong-ike-key.ikev2_decryption_table (test_bad_input's input): every SK
    message of both IKE SAs fails, so the finding says no message verifies."""
    key = BAD / "wrong-ike-key.ikev2_decryption_table"
    _code, fs = findings_json(HEALTHY_CAP, key)
    icv = [f for f in fs if f["code"] == "IKE-ICV-FAILED"]
    sas = {sa["key"]: sa for sa in sas_json(HEALTHY_CAP, key)["ike_sas"]}
    assert {f["sa"] for f in icv} == set(sas)
    for f in icv:
        n = sas[f["sa"]]["icv_failed"]
        assert n > 0 and f"{plural(n, 'encrypted message')} failed the integrity check" in f["title"]
        assert "No encrypted message of this IKE SA verifies" in f["explanation"]
        assert "wrong-ike-key.ikev2_decryption_table:" in f["explanation"]


# ------------------------------------------------------------------ 2. IKEv1: wrong key, no ICV


@pytest.fixture
def bad_v1_key(tmp_path: Path) -> Path:
    dst = tmp_path / "ikev1_decryption_table"
    flip_first_key_byte(V1_KEYS, dst, 1)
    return dst


@needs_tshark
def test_ikev1_wrong_key_is_visible_in_sas_and_findings(bad_v1_key: Path) -> None:
    encrypted = [int(r[0]) for r in tshark(V1_CAP, ["frame.number"], "isakmp.flag_e == 1")]
    assert len(encrypted) == 12

    doc = sas_json(V1_CAP, bad_v1_key)
    (sa,) = doc["ike_sas"]
    assert sa["undecryptable"] == len(encrypted) and not sa["decrypted"] and sa["icv_failed"] == 0
    text = ipsecscope("sas", V1_CAP, "-k", bad_v1_key).stdout
    assert f"{plural(len(encrypted), 'encrypted message')} could not be decrypted with the loaded key (wrong key?)" in text
    assert "no IKE keys" not in text

    code, fs = findings_json(V1_CAP, bad_v1_key)
    (f,) = [f for f in fs if f["code"] == "IKE-KEY-MISMATCH"]
    assert code == 1 and f["severity"] == "warning" and f["sa"] == sa["key"]
    assert f["frames"] == encrypted[:5]
    assert "could not be decrypted with the loaded key" in f["title"]
    # The decryptor's own note is the evidence; the key's file and line are named.
    assert "not a payload chain" in f["explanation"] and "ikev1_decryption_table:" in f["explanation"]


def test_ikev1_right_key_has_no_key_finding() -> None:
    doc = sas_json(V1_CAP, V1_KEYS)
    (sa,) = doc["ike_sas"]
    assert sa["decrypted"] and sa["undecryptable"] == 0
    _code, fs = findings_json(V1_CAP, V1_KEYS)
    assert not NEW_CODES & {f["code"] for f in fs}
    assert "could not be decrypted" not in ipsecscope("sas", V1_CAP, "-k", V1_KEYS).stdout


def test_no_keys_is_still_no_keys() -> None:
    text = ipsecscope("sas", V1_CAP).stdout
    assert "no IKE keys" in text and "could not be decrypted" not in text
    _code, fs = findings_json(V1_CAP)
    assert not NEW_CODES & {f["code"] for f in fs}


@pytest.mark.parametrize(("peer", "sender", "other"), [("left", "198.18.0.1", "198.18.0.2"),
                                                       ("right", "198.18.0.2", "198.18.0.1")])
def test_ikev1_psk_mismatch_one_log_says_different_keys(peer: str, sender: str, other: str) -> None:
    """Real strongSwan peers with different PSKs, only one peer's log: the key reads that peer's
    messages and not the other's -> the peers derived different keys."""
    s = Session()
    s.add_key_files([PSK / f"charon-{peer}.log"])
    s.load(PSK / "capture.pcapng")
    (sa,) = s.table.ike_sas.values()
    assert sa.decrypted_from == [sender] and sa.key_failed_from == [other] and sa.undecryptable > 0
    (f,) = [f for f in s.findings if f.code == "IKE-KEY-MISMATCH"]
    assert "the peers derived different keys (PSK mismatch?)" in f.title and f"from {other}" in f.title
    assert f"charon-{peer}.log:" in f.explanation and "not a payload chain" in f.explanation
    assert f"add {other}'s charon log" in f.hint
    codes = {x.code for x in s.findings}
    if peer == "left":
        # IKE-AUTH-FAILED (an ERROR) reports the refused MM5; this is its key-side evidence.
        assert f.severity == Severity.INFO and "IKE-AUTH-FAILED" in codes
    else:
        # With the responder's key the answer reads N(PAYLOAD_MALFORMED): no other rule explains
        # it, so this finding is the error.
        assert f.severity == Severity.ERROR and "IKE-AUTH-FAILED" not in codes
        assert "negotiation failed (PAYLOAD_MALFORMED)" in f.explanation
    msgs = {m.frame: m for m in _messages(s)}
    assert all(msgs[fr].src == other and not msgs[fr].decrypted for fr in f.frames)


def _messages(s: Session) -> list:
    from conftest import ike_messages

    from ipsecscope.crypto.ike_sk import IkeDecryptor

    dec = IkeDecryptor(s.keys)
    return [dec.decrypt(m) for m in ike_messages(PSK / "capture.pcapng")]


def test_ikev1_psk_mismatch_both_logs_no_key_finding() -> None:
    s = Session()
    s.add_key_files([PSK / "charon-left.log", PSK / "charon-right.log"])
    s.load(PSK / "capture.pcapng")
    (sa,) = s.table.ike_sas.values()
    assert sa.undecryptable == 0 and sorted(sa.decrypted_from) == ["198.18.0.1", "198.18.0.2"]
    assert not NEW_CODES & {f.code for f in s.findings}


def test_key_tried_flag_from_both_decryptors(bad_v1_key: Path, bad_sk_ei: Path) -> None:
    """IkeMessage.key_tried: set when a key was applied (right or wrong), never without a key."""
    from conftest import ike_messages

    from ipsecscope.crypto.ike_sk import IkeDecryptor
    from ipsecscope.keys import load_keys

    for cap, keys in ((V1_CAP, bad_v1_key), (HEALTHY_CAP, bad_sk_ei), (V1_CAP, V1_KEYS)):
        dec = IkeDecryptor(load_keys([keys]))
        nokey = IkeDecryptor(load_keys([BAD / "unimplemented-alg.esp_sa"]))  # ESP keys only
        for m in ike_messages(cap):
            out = dec.decrypt(m)
            assert out.key_tried == out.encrypted, (cap.name, m.frame, out.crypto_note)
            assert not nokey.decrypt(m).key_tried


# ------------------------------------------------------------------ 3. ESP: algorithm not implemented


@needs_tshark
def test_cast5_row_is_an_esp_unsupported_finding(tmp_path: Path) -> None:
    src = HEALTHY / "keys" / "esp_sa"
    lines = src.read_text().splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith('"IPv4"'))
    assert "0x15b69dc5" in lines[i]
    lines[i] = lines[i].replace("AES-GCM with 16 octet ICV [RFC4106]", "CAST5-CBC [RFC2144]")
    # a CAST5 key is at most 128 bits (RFC 2144 §2.2): keep the key column's first 16 bytes
    lines[i] = re.sub(r'"0x([0-9a-fA-F]{32})[0-9a-fA-F]*"', r'"0x\1"', lines[i], count=1)
    key = tmp_path / "esp_sa"
    key.write_text("\n".join(lines) + "\n")
    packets = [int(r[0]) for r in tshark(HEALTHY_CAP, ["frame.number"], "esp.spi == 0x15b69dc5")]
    assert packets

    code, fs = findings_json(HEALTHY_CAP, key)
    (f,) = [f for f in fs if f["code"] == "ESP-UNSUPPORTED-ALGO"]
    assert code == 1 and f["severity"] == "warning"
    assert f["sa"] == "esp:198.18.0.1>198.18.0.2:0x15b69dc5" and f["frames"] == packets[:5]
    assert f["title"].startswith(f"{plural(len(packets), 'ESP packet')} 198.18.0.1 -> 198.18.0.2 on SPI 0x15b69dc5")
    assert "ENCR_CAST is not implemented" in f["title"]
    assert f"esp_sa:{i + 1}" in f["explanation"] and "ENCR_AES_GCM_16" in f["explanation"]
    assert "Wireshark" in f["hint"]
    # The other three rows are right: their flows decrypt, nothing else is flagged.
    flows = {x["spi"]: x for x in sas_json(HEALTHY_CAP, key)["flows"]}
    assert flows["0x15b69dc5"]["unsupported"] == len(packets)
    assert all(x["decrypted"] == x["packets"] for s, x in flows.items() if s != "0x15b69dc5")
    assert not {"ESP-ICV-FAILED", "ESP-NO-KEY"} & {x["code"] for x in fs}


def test_unimplemented_alg_file_names_each_algorithm() -> None:
    """tests/data/bad/unimplemented-alg.esp_sa (test_bad_input's input): CAST5 and Blowfish rows."""
    _code, fs = findings_json(HEALTHY_CAP, BAD / "unimplemented-alg.esp_sa")
    got = {f["sa"]: f for f in fs if f["code"] == "ESP-UNSUPPORTED-ALGO"}
    assert "ENCR_CAST" in got["esp:198.18.0.1>198.18.0.2:0x15b69dc5"]["title"]
    assert "ENCR_BLOWFISH" in got["esp:198.18.0.2>198.18.0.1:0x427e7d84"]["title"]
    assert "unimplemented-alg.esp_sa:3" in got["esp:198.18.0.2>198.18.0.1:0x427e7d84"]["explanation"]


# ------------------------------------------------------------------ healthy data: nothing new


@pytest.mark.parametrize("name", ["healthy-gcm", "dead-peer", "cbc-sha2-pfs", "psk-mismatch"])
def test_right_keys_give_no_key_findings(name: str) -> None:
    from test_findings import sample_keys

    s = Session()
    s.add_key_files(sample_keys(name))
    s.load(SAMPLES / name / "capture.pcapng")
    assert not NEW_CODES & {f.code for f in s.findings}
    assert all(sa.undecryptable == 0 and sa.icv_failed == 0 for sa in s.table.ike_sas.values())


def test_rules_run_without_a_session(bad_sk_ei: Path) -> None:
    """evaluate(table) with no session: the key source falls back to a generic phrase."""
    s = Session()
    s.add_key_files([bad_sk_ei])
    s.load(HEALTHY_CAP)
    fs = [f for f in evaluate(s.table) if f.code == "IKE-ICV-FAILED"]
    assert len(fs) == 2 and all("the loaded keys" in f.explanation for f in fs)


def test_list_rules_names_the_new_codes() -> None:
    out = ipsecscope("findings", "--list-rules").stdout
    for code in NEW_CODES:
        assert code in out


def test_ikev2_no_checking_keys_wrong_is_key_mismatch(tmp_path: Path) -> None:
    """Wireshark's ikev2-decrypt-aes128ccm12-2 row is AES-CTR with "[No Checking]" integrity: no
    ICV is verified, so wrong SK_ei/SK_er show only as plaintext that is no payload chain."""
    cap = CORPUS / "ikev2-decrypt-aes128ccm12-2.pcap"
    rows = V1_KEYS.with_name("ikev2_decryption_table.tmpl").read_text().splitlines()
    i = next(n for n, ln in enumerate(rows) if ln.startswith("a2926ae833c6f138,"))
    assert "No Checking" in rows[i]
    cols = rows[i].split(",")
    for c in (2, 3):  # SK_ei, SK_er
        cols[c] = f"{int(cols[c][:2], 16) ^ 1:02x}" + cols[c][2:]
    rows[i] = ",".join(cols)
    key = tmp_path / "ikev2_decryption_table"
    key.write_text("\n".join(rows) + "\n")
    (sa,) = [x for x in sas_json(cap, key)["ike_sas"] if x["spi_i"] == "a2926ae833c6f138"]
    (good,) = [x for x in sas_json(cap, V1_KEYS.with_name("ikev2_decryption_table.tmpl"))["ike_sas"]
               if x["spi_i"] == "a2926ae833c6f138"]
    assert good["decrypted"] and good["undecryptable"] == 0
    assert sa["undecryptable"] > 0 and sa["icv_failed"] == 0 and not sa["decrypted"]
    _code, fs = findings_json(cap, key)
    (f,) = [f for f in fs if f["code"] == "IKE-KEY-MISMATCH"]
    assert f"{plural(sa['undecryptable'], 'encrypted message')} could not be decrypted" in f["title"]
    assert "No encrypted message of this IKE SA decrypts" in f["explanation"]
    assert "integrity was not checked" in f["explanation"]
