"""Key formats other than the Wireshark tables: ip xfrm state, charon logs (real strongSwan
peers), tcpdump -E, native JSON, pcapng DSB; plus conversions between them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace

import pytest
from conftest import CORPUS, DATA, IPSECSCOPE, SAMPLES, ike_messages, needs_tshark, public_dir

from ipsecscope.errors import KeyFileError
from ipsecscope.keys import add_secrets_block, detect_format, load_keys
from ipsecscope.keys import names as N
from ipsecscope.keys.dsb import SECRETS_TYPE_IPSEC, dsb_block, pcapng_with_secrets
from ipsecscope.keys.formats import dump
from ipsecscope.keys.store import KeyStore
from ipsecscope.model.iana import EncrTransform as E
from ipsecscope.model.iana import IntegTransform as I
from ipsecscope.model.iana import PrfTransform as P

KEYS = DATA / "keys"
K16 = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")


def esp_tuple(k):
    return (k.spi, k.src, k.dst, k.encr, k.enc_key, k.integ, k.auth_key, k.icv_len, k.esn, k.protocol,
            k.check_integrity, k.spi_pattern)


def ike_tuple(k):
    return (k.spi_i, k.spi_r, k.encr, k.sk_ei, k.sk_er, k.integ, k.sk_ai, k.sk_ar, k.check_integrity)


# --- ip xfrm state ------------------------------------------------------------------------------


def test_xfrm_state_every_algorithm():
    store = load_keys([KEYS / "ip-xfrm-state.txt"])
    sa = {k.spi: k for k in store.esp}
    assert len(sa) == 11  # the IPComp SA carries no keys
    assert (sa[0x1001].encr, sa[0x1001].integ, sa[0x1001].icv_len) == (E.ENCR_AES_CBC, I.AUTH_HMAC_SHA2_256_128, None)
    assert sa[0x1001].auth_key == K16 * 2
    gcm = sa[0x1002]
    assert (gcm.encr, gcm.esn, len(gcm.enc_key)) == (E.ENCR_AES_GCM_16, True, 36)  # key + 4-byte salt
    assert gcm.src == "198.18.10.2" and gcm.integ == I.NONE
    assert sa[0x1003].encr == E.ENCR_AES_CCM_12 and len(sa[0x1003].enc_key) == 19
    assert sa[0x1004].encr == E.ENCR_CHACHA20_POLY1305
    assert sa[0x1005].encr == E.ENCR_NULL_AUTH_AES_GMAC
    assert sa[0x1006].encr == E.ENCR_AES_CTR and sa[0x1006].integ == I.AUTH_HMAC_SHA1_96
    assert sa[0x1007].encr == E.ENCR_3DES and sa[0x1007].integ == I.AUTH_HMAC_MD5_96
    assert sa[0x1008].encr == E.ENCR_NULL and sa[0x1008].integ == I.AUTH_HMAC_SHA2_512_256
    assert "espinudp" in sa[0x1008].source
    # hmac(sha256) truncated to 96 bits (the kernel's pre-RFC 4868 default) stays visible
    assert sa[0x1009].integ == I.AUTH_HMAC_SHA2_256_128 and sa[0x1009].icv_len == 12
    assert sa[0x1009].dst == "2001:db8::2" and len(sa[0x1009].enc_key) == 24
    assert sa[0x100A].protocol == 2 and sa[0x100A].encr == E.ENCR_NULL  # AH
    assert sa[0x100B].integ == I.AUTH_AES_XCBC_96
    assert store.esp_lookup("2001:db8::1", "2001:db8::2", 0x1009) is sa[0x1009]
    assert store.esp_lookup("2001:0db8:0::1", "2001:db8::2", 0x1009) is sa[0x1009]  # non-canonical text


def test_ip_s_xfrm_state_with_stats():
    store = load_keys([KEYS / "ip-s-xfrm-state.txt"])
    assert [hex(k.spi) for k in store.esp] == ["0xc8a5b9e1", "0xcf01a7d2"]
    assert all(k.esn and k.encr == E.ENCR_AES_GCM_16 for k in store.esp)
    assert store.esp[1].enc_key[-4:] == bytes.fromhex("d4c3b2a1")


@pytest.mark.parametrize("mutate, line, words", [
    (lambda t: t.replace("enc cbc(aes) 0x0102030405060708090a0b0c0d0e0f10\n", "enc cbc(foo) 0x01\n", 1), 5,
     "unknown enc algorithm 'cbc(foo)'"),
    (lambda t: t.replace("auth-trunc hmac(sha256) 0x0102030405060708090a0b0c0d0e0f100102030405060708090a0b0c0d0e0f10 128",
                         "auth-trunc hmac(sha256) <<Keys hidden>> 128", 1), 4, "nokeys"),
    (lambda t: t.replace("0x0102030405060708090a0b0c0d0e0f10\n", "0x01020304\n", 1), 1, "AES_CBC needs"),
])
def test_xfrm_errors_name_line(tmp_path, mutate, line, words):
    f = tmp_path / "xfrm.txt"
    f.write_text(mutate((KEYS / "ip-xfrm-state.txt").read_text()))
    skipped = load_keys([f])  # by default the bad row is skipped with a warning naming it
    assert any(w.startswith(f"{f}:{line}: ") and words in w for w in skipped.warnings), skipped.warnings
    with pytest.raises(KeyFileError) as ei:
        load_keys([f], strict=True)
    assert (ei.value.path, ei.value.line) == (str(f), line), str(ei.value)
    assert words in str(ei.value)


# --- strongSwan charon logs ----------------------------------------------------------------------


def test_charon_initiator_log_gcm_with_rekeys():
    """healthy-gcm left = initiator of IKE_AUTH and of both rekeys (CHILD and IKE)."""
    store = load_keys([KEYS / "charon-healthy-gcm-left.log"])
    assert len(store.esp) == 4 and len(store.ike) == 2
    ref = load_keys([KEYS / "esp_sa-healthy-gcm"])  # samples/lib/charon_keys.py's extraction
    assert {esp_tuple(k)[:7] for k in store.esp} == {esp_tuple(k)[:7] for k in ref.esp}
    first, rekeyed = store.ike
    assert (first.spi_i.hex(), first.spi_r.hex()) == ("b1b8da23a004d038", "fdaf22f6f7559b04")
    assert (rekeyed.spi_i.hex(), rekeyed.spi_r.hex()) == ("3264aae345f03644", "e03e6cfc0739cb77")
    assert first.encr == E.ENCR_AES_GCM_16 and first.prf == P.PRF_HMAC_SHA2_256 and len(first.sk_d) == 32
    assert first.sk_ei.hex().startswith("7a7a5ee91452ea49") and len(first.sk_ei) == 36
    out = store.esp_lookup("198.18.0.1", "198.18.0.2", 0x15B69DC5)
    assert out.esn is False and out.source.endswith("charon-healthy-gcm-left.log:226")


def test_charon_responder_log_cbc_integrity_and_two_children():
    """cbc-sha2-pfs right = responder: inbound SAs use the *initiator* keys."""
    store = load_keys([KEYS / "charon-cbc-sha2-pfs-right.log"])
    assert len(store.esp) == 6 and len(store.ike) == 1
    for k in store.esp:
        assert (k.encr, k.integ, len(k.enc_key), len(k.auth_key)) == (
            E.ENCR_AES_CBC, I.AUTH_HMAC_SHA2_256_128, 32, 32)
    ike = store.ike[0]
    assert ike.integ == I.AUTH_HMAC_SHA2_256_128 and len(ike.sk_ai) == 32
    # the responder derived the IKE keys on another thread than the one that selected the proposal
    assert ike.encr == E.ENCR_AES_CBC and ike.prf == P.PRF_HMAC_SHA2_256


SAMPLE_DIRS = sorted(p.parent for p in SAMPLES.glob("*/charon-left.log"))
# samples/nat-napt: the initiator's log binds its CHILD SAs to its private 10.0.0.1, the capture
# (public side of the NAPT) shows 198.18.0.1 (truth.json "keys_across_nat"); issue 17.


def _nat_view(sample, log, store):
    """The log's ESP keys with the address NAT translated as the other peer (and the wire) see it."""
    truth = sample / "truth.json"
    nat = json.loads(truth.read_text()).get("expected", {}).get("keys_across_nat") if truth.exists() else None
    if not nat or nat["log"] != log:
        return {esp_tuple(k) for k in store.esp}
    moved = KeyStore()
    for k in store.esp:
        moved.add_esp(replace(k, src=nat["wire"] if k.src == nat["logged"] else k.src,
                              dst=nat["wire"] if k.dst == nat["logged"] else k.dst))
    return {esp_tuple(k) for k in moved.esp}


def _sample_keys(sample, log):
    """Keys from one sample log, or None for a scenario that never derived keys (then the error
    must say so rather than blame the log levels)."""
    try:
        store = load_keys([sample / log])
    except KeyFileError as exc:
        assert "no IKE SA got as far as deriving keys" in str(exc)
        return None
    if len(store) == 0:
        # No keys, but the log still loads for what it says about the peer's configuration
        # (e.g. "configured proposals:"), and says why it holds no keys.
        assert store.peer_notes and any("no keys in this log" in w for w in store.warnings)
        return None
    return store


@pytest.mark.parametrize("sample", SAMPLE_DIRS, ids=lambda d: d.name)
def test_charon_either_peer_gives_the_same_keys(sample):
    left = _sample_keys(sample, "charon-left.log")
    right = _sample_keys(sample, "charon-right.log")
    if left is None or right is None:
        assert left is right, "one peer derived keys, the other did not"
        return
    # the same SAs and keys; a peer behind NAT logs its own private address (truth.json)
    assert _nat_view(sample, "charon-left.log", left) == _nat_view(sample, "charon-right.log", right)
    assert {ike_tuple(k) for k in left.ike} == {ike_tuple(k) for k in right.ike}
    assert {(k.cookie_i, k.enc_key) for k in left.ikev1} == {(k.cookie_i, k.enc_key) for k in right.ikev1}
    assert left.ike or left.ikev1, "every sample reaches IKE_AUTH (IKEv2) or Main Mode's keys (IKEv1)"
    both = load_keys([sample / "charon-left.log", sample / "charon-right.log"])
    # the same SA from two files is one entry (a peer behind NAT names its own address: two)
    natted = _nat_view(sample, "charon-left.log", left) != {esp_tuple(k) for k in left.esp}
    assert len(both) == len(left) + (len(left.esp) if natted else 0)


def _tshark(capture, profile):
    fields = ["esp.spi", "esp.icv_good", "isakmp.enc.decrypted", "isakmp.ikev2.integrity_checksum", "icmp.type",
              "isakmp.flag_e", "isakmp.hash", "icmp.mtu", "esp.protocol", "esp.sequence"]
    cmd = ["tshark", "-n", "-r", str(capture), "-o", "esp.enable_encryption_decode:TRUE",
           "-o", "esp.enable_authentication_check:TRUE", "-T", "fields", "-E", "occurrence=f"]
    for f in fields:
        cmd += ["-e", f]
    env = {**os.environ, "WIRESHARK_CONFIG_DIR": str(profile)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=True).stdout
    return [dict(zip(fields, line.split("\t"), strict=True)) for line in out.splitlines()]


@needs_tshark
@pytest.mark.parametrize(("sample", "log"), [
    pytest.param(d, log, id=f"{d.name}-{log}") for d in SAMPLE_DIRS for log in ("charon-left.log", "charon-right.log")])
def test_tshark_decrypts_samples_with_keys_converted_from_one_charon_log(tmp_path, sample, log):
    """The real oracle: `ipsecscope keys convert` on one peer's log -> a Wireshark profile that
    decrypts every ESP packet (ICV good), every IKEv2 SK payload (ICD correct) and every
    encrypted IKEv1 message (its HASH payload readable). ``--capture`` writes keys logged behind
    NAT for the address on the wire (nat-napt's left log), since Wireshark matches rows by address."""
    store = _sample_keys(sample, log)
    if store is None:
        pytest.skip(f"{sample.name}: no keys were ever derived in this scenario")
    prof = tmp_path / "profile"
    prof.mkdir()
    # (a format with nothing to carry is refused, not written as "0 entries": issue 14)
    for fmt in (*(("esp_sa",) if store.esp else ()), *(("ikev2_table",) if store.ike else ()),
                *(("ikev1_table",) if store.ikev1 else ())):
        r = subprocess.run([*IPSECSCOPE, "keys", "convert", str(sample / log), "--to", fmt, "-o", str(prof),
                            "--capture", str(sample / "capture.pcapng")], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    for f in prof.iterdir():
        assert f.stat().st_mode & 0o077 == 0  # secrets written private
    rows = _tshark(sample / "capture.pcapng", prof)
    # (an ICMP error quoting the start of an ESP packet is not one: samples/mtu-small-link)
    # (neither is the packet samples/path-impairments' bridge corrupted on purpose: bridge.log)
    bridge = sample / "bridge.log"
    corrupted = {(e["spi"], str(e["seq"])) for e in map(json.loads, bridge.read_text().splitlines()[1:])
                 if e["action"] == "corrupt"} if bridge.exists() else set()
    esp_rows = [r for r in rows if r["esp.spi"] and not r["icmp.mtu"]
                and (r["esp.spi"], r["esp.sequence"]) not in corrupted]
    sk_rows = [r for r in rows if r["isakmp.enc.decrypted"]]
    for r in esp_rows:  # an inner IPv4 fragment (next header 4) holds no whole ICMP message
        assert r["esp.icv_good"] == "1" and (r["icmp.type"] or r["esp.protocol"] == "0x04"), r
    if store.ike:
        assert sk_rows and not any(r["isakmp.ikev2.integrity_checksum"] for r in sk_rows)
    if store.ikev1:
        v1 = [r for r in rows if r["isakmp.flag_e"] == "1"]
        assert v1 and all(r["isakmp.hash"] for r in v1), v1


def test_charon_log_without_key_levels(tmp_path):
    f = tmp_path / "charon.log"
    lines = [line for line in (KEYS / "charon-healthy-gcm-left.log").read_text().splitlines()
             if " => " not in line and not line.split("> ", 1)[-1].lstrip()[:3].rstrip(":").isdigit()]
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(KeyFileError, match="ike = 4, chd = 4"):
        load_keys([f])


def test_charon_log_with_a_broken_hexdump(tmp_path):
    text = (KEYS / "charon-healthy-gcm-left.log").read_text().splitlines()
    i = next(n for n, line in enumerate(text) if "Sk_ei secret =>" in line)
    del text[i + 2]  # drop the second row of the Sk_ei dump
    f = tmp_path / "charon.log"
    f.write_text("\n".join(text) + "\n")
    skipped = load_keys([f])  # by default the bad row is skipped with a warning naming it
    assert any(w.startswith(f"{f}:{i + 1}: ") and "Sk_ei" in w for w in skipped.warnings), skipped.warnings
    assert len(skipped.ike) == 1  # the other IKE SA of the log is kept
    with pytest.raises(KeyFileError) as ei:
        load_keys([f], strict=True)
    assert ei.value.line == i + 1 and "Sk_ei" in str(ei.value)


# --- tcpdump -E ----------------------------------------------------------------------------------


def test_tcpdump_secrets():
    store = load_keys([KEYS / "tcpdump-secrets.txt"])
    assert detect_format((KEYS / "tcpdump-secrets.txt").read_bytes()) == "tcpdump"
    k = store.esp_lookup("192.168.0.100", "192.168.0.1", 0xC254FE64)
    assert k.encr == E.ENCR_AES_CBC and k.icv_len == 12 and not k.check_integrity
    assert k.enc_key.hex() == "88e1dad7140af03b8d4f3d734d21be4b"
    assert store.esp_lookup("198.18.10.1", "198.18.10.2", 0x1007).encr == E.ENCR_3DES
    # the line without spi@dst applies to everything else
    assert store.esp_lookup("203.0.113.1", "203.0.113.2", 0x99).encr == E.ENCR_BLOWFISH


@pytest.mark.parametrize("line, words", [
    ("0x1@198.18.0.1 rc3-cbc:0x0102", "rc3-cbc"),
    ("0x1@198.18.0.1 aes128-cbc:0x0102", "16-byte secret"),
    ("0x1@198.18.0.1 aes128-cbc:0xzz", "not hex"),
])
def test_tcpdump_errors(tmp_path, line, words):
    f = tmp_path / "esp-secrets"
    f.write_text("0x2@198.18.0.1 des-cbc:0x0102030405060708\n" + line + "\n")
    skipped = load_keys([f])  # by default the bad row is skipped with a warning naming it
    assert any(w.startswith(f"{f}:{2}: ") and words in w for w in skipped.warnings), skipped.warnings
    with pytest.raises(KeyFileError) as ei:
        load_keys([f], strict=True)
    assert ei.value.line == 2 and words in str(ei.value)


# --- native JSON, DSB ----------------------------------------------------------------------------


def test_json_file():
    store = load_keys([KEYS / "keys.json"])
    wire = load_keys([CORPUS / "esp_sa.tmpl"])
    assert [esp_tuple(k)[:7] for k in store.esp[:2]] == [esp_tuple(k)[:7] for k in wire.esp]
    wild = store.esp_lookup("198.19.7.7", "10.0.0.1", 0x4042)
    assert wild.encr == E.ENCR_NULL and wild.icv_len == 12 and not wild.check_integrity
    assert store.esp_lookup("198.20.0.1", "10.0.0.1", 0x4042) is None  # outside 198.18.0.0/15
    assert store.ike[0].prf == P.PRF_HMAC_SHA2_256
    assert store.ikev1_lookup(bytes.fromhex("fafaeb49382a763c")) is not None


def test_json_errors_point_at_the_entry(tmp_path):
    doc = json.loads((KEYS / "keys.json").read_text())
    doc["esp"][1]["encr"] = "ENCR_AES_FOO"
    f = tmp_path / "k.json"
    f.write_text(json.dumps(doc, indent=2))
    assert len(load_keys([f]).esp) == len(doc["esp"]) - 1  # the other entries are used
    with pytest.raises(KeyFileError) as ei:
        load_keys([f], strict=True)
    text = f.read_text().splitlines()
    assert text[ei.value.line - 1].strip() == "{" and "esp[1]" in str(ei.value)
    assert '"spi": "0xc254fe64"' in text[ei.value.line]
    f.write_text('{"schema": "ipsecscope.keys/1",\n "esp": [,]}')
    with pytest.raises(KeyFileError, match="invalid JSON") as ei:
        load_keys([f])
    assert ei.value.line == 2


ALL_SOURCES = [KEYS / "ip-xfrm-state.txt", KEYS / "charon-healthy-gcm-left.log", KEYS / "tcpdump-secrets.txt",
               KEYS / "keys.json", CORPUS / "esp_sa.tmpl", CORPUS / "ikev2_decryption_table.tmpl",
               CORPUS / "ikev1_decryption_table.tmpl", KEYS / "charon-cbc-sha2-pfs-right.log"]


def test_json_and_dsb_round_trip_everything(tmp_path):
    store = load_keys(ALL_SOURCES)
    j = tmp_path / "all.json"
    j.write_text(dump(store, "json", True))
    p = tmp_path / "all.pcapng"
    p.write_bytes(dump(store, "dsb", True))
    for again in (load_keys([j]), load_keys([p])):
        if again is not None and str(again.esp[0].source).startswith(str(p)):
            # Wireshark's ESP SA block (most SAs) has no "infer ESN": its SN column says 32-bit,
            # so SAs that differed only in that collapse into one
            def norm(k):
                return replace(k, esn=bool(k.esn), source="")
            assert {esp_tuple(norm(k)) for k in again.esp} == {esp_tuple(norm(k)) for k in store.esp}
            continue
        assert [esp_tuple(k) for k in again.esp] == [esp_tuple(k) for k in store.esp]
        assert [ike_tuple(k) + (k.prf, k.sk_d) for k in again.ike] == [
            ike_tuple(k) + (k.prf, k.sk_d) for k in store.ike]
        assert [(k.cookie_i, k.enc_key) for k in again.ikev1] == [(k.cookie_i, k.enc_key) for k in store.ikev1]
        # lookups agree too (wildcards and SPI patterns survive)
        for src, dst, spi in [("198.19.7.7", "10.0.0.1", 0x4042), ("203.0.113.1", "203.0.113.2", 0x99),
                              ("192.168.0.1", "192.168.0.100", 0x070883C2)]:
            assert esp_tuple(again.esp_lookup(src, dst, spi)) == esp_tuple(store.esp_lookup(src, dst, spi))


def test_ikev2_table_round_trip(tmp_path):
    store = load_keys([CORPUS / "ikev2_decryption_table.tmpl", KEYS / "charon-cbc-sha2-pfs-right.log"])
    f = tmp_path / "ikev2_decryption_table"
    f.write_text(dump(store, "ikev2_table", True))
    again = load_keys([f])
    assert [ike_tuple(k) for k in again.ike] == [ike_tuple(k) for k in store.ike]


def test_redacted_json_holds_no_key(tmp_path):
    store = load_keys(ALL_SOURCES)
    text = dump(store, "json", False) + dump(store, "esp_sa", False) + dump(store, "ikev2_table", False)
    for k in store.esp:
        if len(k.enc_key) >= 8:
            assert k.enc_key.hex() not in text
    for k in store.ike:
        assert k.sk_ei.hex() not in text or not k.sk_ei


def test_dsb_of_other_types_and_multi_section(tmp_path):
    shb = pcapng_with_secrets([(SECRETS_TYPE_IPSEC, b"")])  # SHB + an empty IPSK DSB; keep the SHB, add a TLS DSB
    shb = shb[: len(shb) - len(dsb_block(SECRETS_TYPE_IPSEC, b""))]
    tls_only = shb + dsb_block(0x544C534B, b"CLIENT_RANDOM 00 11\n")
    f = tmp_path / "tls.pcapng"
    f.write_bytes(tls_only)
    with pytest.raises(KeyFileError, match="TLS key log"):
        load_keys([f])
    s = KeyStore()
    assert add_secrets_block(s, 0x544C534B, b"CLIENT_RANDOM 00 11\n") == 0 and s.ignored_secrets
    # keys shipped with a capture: a second pcapng section appended with `cat`
    cap = tmp_path / "cap.pcapng"
    cap.write_bytes(tls_only + pcapng_with_secrets([(SECRETS_TYPE_IPSEC, (CORPUS / "esp_sa.tmpl").read_bytes())]))
    store = load_keys([cap])
    assert len(store.esp) == 2 and store.ignored_secrets == [(0x544C534B, 20)]
    truncated = tmp_path / "trunc.pcapng"
    truncated.write_bytes(cap.read_bytes()[:-10])
    with pytest.raises(KeyFileError, match="bad length"):
        load_keys([truncated])


@needs_tshark
def test_tshark_reads_capture_with_appended_key_section(tmp_path):
    if not shutil.which("editcap"):
        pytest.skip("editcap not installed")
    real = tmp_path / "real.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(CORPUS / "esp-bug-12671.pcapng.gz"), str(real)], check=True,
                   capture_output=True)
    both = tmp_path / "both.pcapng"
    both.write_bytes(real.read_bytes() + dump(load_keys([CORPUS / "esp_sa.tmpl"]), "dsb", True))
    out = subprocess.run(["tshark", "-r", str(both), "-T", "fields", "-e", "esp.spi"], capture_output=True,
                         text=True, check=True, timeout=60)
    assert len(out.stdout.split()) == 6
    assert len(load_keys([both]).esp) == 2


def test_names_tables_are_consistent():
    for name, spec in N.WS_ESP_ENCR.items():
        if not spec.gcm_icv_from_auth:
            assert N.ws_esp_encr_name(spec.encr) == name
    for name, (encr, klen) in N.WS_IKEV2_ENCR.items():
        assert N.ws_ikev2_encr_name(encr, klen) == name


# --- strongSwan save-keys plugin output -------------------------------------------------------------


def test_save_keys_plugin_tables_load_and_match_the_log():
    d = KEYS / "save-keys-healthy-gcm"
    saved = load_keys([d / "esp_sa", d / "ikev2_decryption_table"])
    log = load_keys([KEYS / "charon-healthy-gcm-left.log"])
    assert {esp_tuple(k) for k in saved.esp} == {esp_tuple(k)[:8] + (None,) + esp_tuple(k)[9:] for k in log.esp}
    assert {ike_tuple(k) for k in saved.ike} == {ike_tuple(k) for k in log.ike}


def test_save_keys_spelling_of_3des(tmp_path):
    # save_keys_listener.c writes "TripleDes-CBC", Wireshark's table says "TripleDES-CBC"
    f = tmp_path / "esp_sa"
    f.write_text('"IPv4","198.18.0.1","198.18.0.2","0x00000001","TripleDes-CBC [RFC2451]",'
                 '"0x0102030405060708090a0b0c0d0e0f101112131415161718","HMAC-SHA-1-96 [RFC2404]",'
                 '"0x0102030405060708090a0b0c0d0e0f1011121314"\n')
    k = load_keys([f]).esp[0]
    assert k.encr == E.ENCR_3DES
    assert "TripleDES-CBC [RFC2451]" in dump(load_keys([f]), "esp_sa", True)


@needs_tshark
def test_tshark_decrypts_with_converted_save_keys_tables(tmp_path):
    d = KEYS / "save-keys-healthy-gcm"
    store = load_keys([d / "esp_sa", d / "ikev2_decryption_table"])
    prof = tmp_path / "p"
    prof.mkdir()
    (prof / "esp_sa").write_text(dump(store, "esp_sa", True))
    (prof / "ikev2_decryption_table").write_text(dump(store, "ikev2_table", True))
    rows = _tshark(KEYS / "healthy-gcm-capture.pcapng", prof)
    esp_rows = [r for r in rows if r["esp.spi"]]
    assert len(esp_rows) == 18 and all(r["esp.icv_good"] == "1" for r in esp_rows)


# --- IKEv1 from charon logs (real peers, tests/data/keys/make_ikev1_sample.py) ---------------------


def test_charon_ikev1_logs():
    left = load_keys([KEYS / "charon-ikev1-left.log"])
    right = load_keys([KEYS / "charon-ikev1-right.log"])
    assert [(k.cookie_i.hex(), k.enc_key.hex()) for k in left.ikev1] == [
        ("a664cdbac71b9b00", "ef54f1114ca22c24c5fac7d64929d53f")]
    assert {esp_tuple(k) for k in left.esp} == {esp_tuple(k) for k in right.esp}
    assert [(k.cookie_i, k.enc_key) for k in right.ikev1] == [(k.cookie_i, k.enc_key) for k in left.ikev1]
    out = left.esp_lookup("198.18.0.1", "198.18.0.2", 0xEDA04943)
    assert (out.encr, out.integ, len(out.auth_key)) == (E.ENCR_AES_CBC, I.AUTH_HMAC_SHA1_96, 20)


@needs_tshark
@pytest.mark.parametrize("log", ["charon-ikev1-left.log", "charon-ikev1-right.log"])
def test_tshark_decrypts_ikev1_with_converted_keys(tmp_path, log):
    store = load_keys([KEYS / log])
    prof = tmp_path / "p"
    prof.mkdir()
    (prof / "esp_sa").write_text(dump(store, "esp_sa", True))
    (prof / "ikev1_decryption_table").write_text(dump(store, "ikev1_table", True))
    fields = ["isakmp.hash", "esp.icv_good", "icmp.type"]
    cmd = ["tshark", "-n", "-r", str(KEYS / "ikev1-capture.pcapng"), "-o", "esp.enable_encryption_decode:TRUE",
           "-o", "esp.enable_authentication_check:TRUE", "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    env = {**os.environ, "WIRESHARK_CONFIG_DIR": str(prof)}
    rows = [line.split("\t") for line in
            subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, timeout=60).stdout.splitlines()]
    # Main Mode 5-6, Quick Mode 7-9, Informational 16-17 are encrypted: their HASH payloads
    # are only visible when the phase-1 key is right.
    assert [i + 1 for i, r in enumerate(rows) if r[0]] == [5, 6, 7, 8, 9, 16, 17]
    assert [r[1] for r in rows[9:15]] == ["1"] * 6 and all(r[2] for r in rows[9:15])


@pytest.mark.parametrize("variant", ["syslog", "no-thread"])
def test_charon_log_line_formats(tmp_path, variant):
    """charon.syslog lines ("Nov 25 20:09:03 host charon: 13[IKE] ...") and swanctl --log /
    --initiate output without thread numbers ("[IKE] ...") carry the same keys."""
    import re

    src = (KEYS / "charon-healthy-gcm-left.log").read_text()
    if variant == "syslog":
        text = re.sub(r"(?m)^\S+ (\d{2}\[)", r"Nov 25 20:09:03 left charon: \1", src)
    else:
        text = re.sub(r"(?m)^\S+ \d{2}\[", "[", src)
    f = tmp_path / "log"
    f.write_text(text)
    got, ref = load_keys([f]), load_keys([KEYS / "charon-healthy-gcm-left.log"])
    assert [esp_tuple(k) for k in got.esp] == [esp_tuple(k) for k in ref.esp]
    assert [ike_tuple(k) for k in got.ike] == [ike_tuple(k) for k in ref.ike]


def test_charon_log_without_mgr_lines(tmp_path):
    """Without 'mgr 2' the SPIs of the first IKE SA still come from the NAT-D dump (SPIi|SPIr|IP|port);
    a rekeyed IKE SA's new SPIs appear nowhere, so its keys are skipped with a warning -- never bound
    to the old SA's SPIs."""
    f = tmp_path / "log"
    f.write_text("".join(line for line in (KEYS / "charon-healthy-gcm-left.log").read_text().splitlines(True)
                         if "[MGR]" not in line))
    store = load_keys([f])
    ref = load_keys([KEYS / "charon-healthy-gcm-left.log"])
    assert [ike_tuple(k) for k in store.ike] == [ike_tuple(ref.ike[0])]
    assert len(store.esp) == 4
    assert len(store.warnings) == 1 and "rekeyed IKE SA" in store.warnings[0]


# --- tcpdump `ikev2 I|R` lines (issue 11 item 10) -------------------------------------------------

TCPDUMP_IKE = public_dir("tcpdump")  # third-party: materialised at test time (tests/public_data.py)


def test_tcpdump_ikev2_lines_are_ike_sa_keys():
    """tcpdump's own ikev2pI2 secrets: the I and R lines make one IKE SA (I = what the initiator sends)."""
    f = TCPDUMP_IKE / "ikev2pI2-secrets.txt"
    assert detect_format(f.read_bytes()) == "tcpdump"
    store = load_keys([f])
    assert len(store) == len(store.ike) == 1 and not store.warnings
    k = store.ike[0]
    assert (k.spi_i.hex(), k.spi_r.hex()) == ("0001020304050607", "c02e7a3031a03188")
    assert (k.encr, k.integ) == (E.ENCR_AES_CBC, I.AUTH_HMAC_SHA1_96)
    assert k.sk_ei.hex() == "3f44bf47cafd8150591deb088199fcbf" and k.sk_er.hex() == "bedb67ec7dc3d00cccac42e70cd63bde"
    assert k.sk_ai.hex().startswith("4ea8e662") and k.sk_ar.hex().startswith("515b0bd2")
    # the same keys as the Wireshark table written by hand from them
    table = load_keys([TCPDUMP_IKE / "derived" / "ikev2pI2-wsprofile" / "ikev2_decryption_table"]).ike[0]
    assert (table.sk_ei, table.sk_er, table.sk_ai, table.sk_ar) == (k.sk_ei, k.sk_er, k.sk_ai, k.sk_ar)


@needs_tshark
def test_tcpdump_ikev2_secrets_decrypt_what_tshark_decrypts():
    """ikev2pI2.pcap with only tcpdump's secrets file. The test capture's IKE_AUTH carries a wrong
    ICV (tshark: "incorrect, should be 579ae74a…"; tcpdump never checks it), so with integrity
    checked we refuse it exactly as tshark flags it; without the check (tshark decrypts anyway)
    the inner payloads are the ones tshark shows with the same keys and tcpdump prints
    (IDi fqdn:west, AUTH rsasig)."""
    from dataclasses import replace

    from test_ike_decode import FIELDS, _hexnorm, tshark_fields

    from ipsecscope.crypto.ike_sk import IkeDecryptor
    from ipsecscope.keys.store import KeyStore

    cap = TCPDUMP_IKE / "ikev2pI2.pcap"
    store = load_keys([TCPDUMP_IKE / "ikev2pI2-secrets.txt"])
    unchecked = KeyStore()
    unchecked.add_ike(replace(store.ike[0], check_integrity=False, icv_len=12))
    rows = tshark_fields(cap, TCPDUMP_IKE / "derived" / "ikev2pI2-wsprofile")
    verdict = subprocess.run(["tshark", "-r", str(cap), "-V"], capture_output=True, text=True, check=True,
                             env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(TCPDUMP_IKE / "derived" / "ikev2pI2-wsprofile"))).stdout
    encrypted = [m for m in ike_messages(cap) if any(p.type == 46 for p in m.payloads)]
    assert [m.frame for m in encrypted] == [2]
    for m in encrypted:
        checked = IkeDecryptor(store).decrypt(m)
        assert checked.key_tried and checked.icv_ok is not True and not checked.inner
        assert "IKEv2 Integrity Checksum Data is incorrect" in verdict
        x = IkeDecryptor(unchecked).decrypt(m)
        assert x.decrypted and x.malformed is None, x.crypto_note
        full = list(x.payloads) + list(x.inner)
        for field, fn in FIELDS.items():
            assert fn(full) == _hexnorm(field, rows[m.frame][field]), (m.frame, field)
        assert [p.type for p in x.inner] == [35, 39]  # IDi, AUTH as tcpdump prints them
    assert "(v2IDi: len=8 0200000077657374 fqdn:west)" in (TCPDUMP_IKE / "ikev2pI2.out").read_text()


def test_tcpdump_ikev2_half_pair_is_skipped_with_a_warning(tmp_path):
    f = tmp_path / "secrets"
    f.write_text((TCPDUMP_IKE / "ikev2pI2-secrets.txt").read_text().splitlines()[0] + "\n"
                 "0x12345678@198.18.0.2 aes128-cbc:0x0102030405060708090a0b0c0d0e0f10\n")
    store = load_keys([f])
    assert len(store.esp) == 1 and not store.ike
    assert any(w.startswith(f"{f}:1: ") and "no 'ikev2 R' line" in w for w in store.warnings)
