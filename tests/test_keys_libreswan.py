"""Libreswan pluto debug logs (plutodebug="base crypt private") as key files.

The data are real: two Libreswan 4.10 plutos in network namespaces
(tests/data/keys/libreswan/make_libreswan_sample.sh, README there). The oracles are tshark
(IKE SK payloads decrypt with ICD correct using keys converted from one log) and the capture
itself (ipsecscope decrypts every SK payload of it).
"""

from __future__ import annotations

import gzip
import os
import random
import subprocess

import pytest
from conftest import DATA, IPSECSCOPE, needs_tshark

from ipsecscope.errors import KeyFileError
from ipsecscope.keys import detect_format, load_keys
from ipsecscope.keys import names as N
from ipsecscope.model.iana import EncrTransform as E
from ipsecscope.model.iana import IntegTransform as I  # noqa: E741
from ipsecscope.model.iana import PrfTransform as P
from ipsecscope.session import Session

LSW = DATA / "keys" / "libreswan"
SCENARIOS = ("ikev2_gcm", "ikev2_cbc", "ikev1_cbc")


def _log(scenario: str, side: str):
    p = LSW / f"{scenario}.{side}.log.gz"
    if not p.exists():
        pytest.skip(f"{p.name} missing (make it with make_libreswan_sample.sh)")
    return p


def _text(scenario: str, side: str) -> str:
    return gzip.decompress(_log(scenario, side).read_bytes()).decode()


# scenario, side -> (IKE SAs, ESP SAs) the log must give. Only the responder gets as far as
# installing a CHILD SA (and fails: no ESP in this kernel), so only it logs ESP keys; IKEv1
# phase-1 keys are never logged by Libreswan 4.10.
COUNTS = {
    ("ikev2_gcm", "initiator"): (1, 0),
    ("ikev2_gcm", "responder"): (1, 1),
    ("ikev2_cbc", "initiator"): (1, 0),
    ("ikev2_cbc", "responder"): (1, 1),
    ("ikev1_cbc", "responder"): (0, 1),
    # IKE SA rekeyed once (CREATE_CHILD_SA): the new IKE SA's keys, salts and SPIs are logged too
    ("ikev2_rekey", "initiator"): (2, 0),
    ("ikev2_rekey", "responder"): (2, 1),
    # pluto initiator <-> charon responder: charon installs the CHILD SA, pluto derives its keys
    # and fails to install; then pluto revives the connection once more (2 IKE SAs, 2 CHILD SAs).
    ("ikev2_charon", "initiator"): (2, 2),
}


@pytest.mark.parametrize(("scenario", "side"), list(COUNTS), ids=lambda v: v)
def test_real_log_parses_into_the_right_sas(scenario, side):
    path = _log(scenario, side)
    assert detect_format(gzip.decompress(path.read_bytes())) == "libreswan"
    store = load_keys([path])
    assert (len(store.ike), len(store.esp)) == COUNTS[(scenario, side)]
    assert not store.warnings
    for k in store.ike:
        assert k.source.startswith(f"{path}:")
        assert k.prf == P.PRF_HMAC_SHA2_256
        if scenario in ("ikev2_gcm", "ikev2_charon", "ikev2_rekey"):
            assert (k.encr, k.integ) == (E.ENCR_AES_GCM_16, I.NONE)
            assert len(k.sk_ei) == len(k.sk_er) == 36 and not k.sk_ai  # 32-byte key + 4-byte salt
        else:
            assert (k.encr, k.integ) == (E.ENCR_AES_CBC, I.AUTH_HMAC_SHA2_256_128)
            assert len(k.sk_ei) == len(k.sk_ai) == len(k.sk_ar) == 32
    for k in store.esp:
        # the outbound SA of the host that logged it (pluto installs outbound first, and fails)
        assert (k.src, k.dst) == (("198.18.1.2", "198.18.1.1") if side == "responder" else ("198.18.1.1", "198.18.1.2"))
        assert k.source.startswith(f"{path}:")
        if scenario == "ikev2_charon":
            assert (k.encr, k.integ, len(k.enc_key), k.auth_key, k.esn) == (E.ENCR_AES_GCM_16, I.NONE, 36, b"", False)
        elif scenario in ("ikev2_gcm", "ikev2_rekey"):
            assert (k.encr, k.integ, len(k.enc_key), k.auth_key, k.esn) == (E.ENCR_AES_GCM_16, I.NONE, 36, b"", True)
        else:
            assert (k.encr, k.integ, len(k.enc_key), len(k.auth_key)) == (
                E.ENCR_AES_CBC, I.AUTH_HMAC_SHA2_256_128, 32, 32)
            assert k.esn is (scenario == "ikev2_cbc")  # IKEv2 offers ESN; IKEv1 QM did not


@pytest.mark.parametrize("scenario", ["ikev2_gcm", "ikev2_cbc", "ikev2_rekey"])
def test_both_peers_log_the_same_ike_keys_and_spis_from_the_capture(scenario):
    """The two logs are independent (two plutos): their IKE SA keys must agree, and the SPIs
    must be the ones on the wire."""
    a, b = (load_keys([_log(scenario, s)]) for s in ("initiator", "responder"))

    def keyset(store):
        return {(k.spi_i, k.spi_r, k.sk_ei, k.sk_er, k.sk_ai, k.sk_ar) for k in store.ike}

    assert keyset(a) == keyset(b) and len(keyset(a)) == len(a.ike)
    raw = (LSW / f"{scenario}.pcap").read_bytes()
    for k in a.ike:
        assert k.spi_i + k.spi_r in raw


def test_pluto_and_charon_logs_agree_on_every_key():
    """An independent implementation's record of the same SAs: strongSwan charon (ike 4, chd 4)
    as the responder. Every IKE SA and CHILD SA pluto logged must be in charon's log with the
    same SPIs, addresses, algorithms and keys (GCM salts included)."""
    lsw_keys = load_keys([_log("ikev2_charon", "initiator")])
    charon = load_keys([_log("ikev2_charon", "charon")])
    by_spis = {(k.spi_i, k.spi_r): k for k in charon.ike}
    for k in lsw_keys.ike:
        o = by_spis[(k.spi_i, k.spi_r)]
        assert (k.encr, k.integ, k.prf, k.sk_ei, k.sk_er, k.sk_ai, k.sk_ar) == (
            o.encr, o.integ, o.prf, o.sk_ei, o.sk_er, o.sk_ai, o.sk_ar)
    by_spi = {k.spi: k for k in charon.esp}
    for k in lsw_keys.esp:
        o = by_spi[k.spi]
        assert (k.src, k.dst, k.encr, k.integ, k.enc_key, k.auth_key) == (
            o.src, o.dst, o.encr, o.integ, o.enc_key, o.auth_key)
    assert len(lsw_keys.ike) == 2 and len(lsw_keys.esp) == 2


# scenario -> (IKE messages in the capture, of them with an SK payload)
CAPTURED = {"ikev2_gcm": (6, 4), "ikev2_cbc": (6, 4), "ikev2_charon": (8, 4), "ikev2_rekey": (10, 8)}
DECRYPT_CASES = [("ikev2_gcm", "initiator"), ("ikev2_gcm", "responder"), ("ikev2_cbc", "initiator"),
                 ("ikev2_cbc", "responder"), ("ikev2_charon", "initiator"), ("ikev2_rekey", "initiator"),
                 ("ikev2_rekey", "responder")]


@pytest.mark.parametrize(("scenario", "side"), DECRYPT_CASES)
def test_ipsecscope_decrypts_the_capture_with_one_log(scenario, side):
    s = Session()
    s.add_key_files([_log(scenario, side)])
    s.load(LSW / f"{scenario}.pcap")
    # IKE_SA_INIT in clear; IKE_AUTH (+ INFORMATIONAL) encrypted
    assert (s.stats.ike, s.stats.ike_decrypted, s.stats.ike_icv_failed) == (*CAPTURED[scenario], 0)


@needs_tshark
@pytest.mark.parametrize(("scenario", "side"), DECRYPT_CASES)
def test_tshark_decrypts_with_keys_converted_from_one_log(tmp_path, scenario, side):
    log = _log(scenario, side)
    prof = tmp_path / "profile"
    prof.mkdir()
    for fmt in ("esp_sa", "ikev2_table"):
        r = subprocess.run([*IPSECSCOPE, "keys", "convert", str(log), "--to", fmt, "-o", str(prof)],
                           capture_output=True, text=True, timeout=60)
        # a log without ESP keys (initiator: pluto dumps them only where it installs the SA) has
        # nothing for esp_sa: an error, not an empty table (issue 14)
        assert r.returncode == 0 or (fmt == "esp_sa" and "hold nothing esp_sa can carry" in r.stderr), r.stderr
    esp_sa = prof / "esp_sa"
    n_esp = sum(1 for line in esp_sa.read_text().splitlines() if line and not line.startswith("#")) \
        if esp_sa.exists() else 0
    assert n_esp == COUNTS[(scenario, side)][1]
    fields = ["isakmp.enc.decrypted", "isakmp.ikev2.integrity_checksum", "esp.spi"]
    cmd = ["tshark", "-n", "-r", str(LSW / f"{scenario}.pcap"), "-T", "fields", "-E", "occurrence=f"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True,
                         env={**os.environ, "WIRESHARK_CONFIG_DIR": str(prof)}).stdout
    rows = [dict(zip(fields, line.split("\t"), strict=True)) for line in out.splitlines()]
    n, n_sk = CAPTURED[scenario]
    assert len(rows) == n
    # every SK payload (IKE_AUTH, INFORMATIONAL) decrypted, ICD correct
    assert sum(bool(r["isakmp.enc.decrypted"]) for r in rows) == n_sk
    assert not any(r["isakmp.ikev2.integrity_checksum"] for r in rows)
    assert not any(r["esp.spi"] for r in rows)  # no ESP was ever sent (no ESP in this kernel)


def test_ikev1_only_log_says_why_it_has_no_keys():
    with pytest.raises(KeyFileError, match="never logs IKEv1 phase-1 keys"):
        load_keys([_log("ikev1_cbc", "initiator")])


def test_log_without_crypt_private_debugging(tmp_path):
    """What plutodebug=base gives: debug lines, no key dumps -> say which flags to set."""
    keep = [line for line in _text("ikev2_cbc", "responder").splitlines()
            if not any(s in line for s in ("| ikev2 I", "| ikev2 R", "ESP enckey", "ESP authkey"))]
    f = tmp_path / "pluto.log"
    f.write_text("\n".join(keep) + "\n")
    with pytest.raises(KeyFileError, match='plutodebug="base crypt private"'):
        load_keys([f])


@pytest.mark.parametrize("prefix", ["syslog", "none"])
def test_line_prefixes(tmp_path, prefix):
    """The same log as syslog/journal writes it ("Nov 25 21:20:39 host pluto[512]: | ...") and
    with --log-no-time ("| ...") carries the same keys."""
    import re

    text = _text("ikev2_gcm", "responder")
    if prefix == "syslog":
        text = re.sub(r"(?m)^(\w{3} +\d+ [\d:]+)\.\d+: ", r"\1 left pluto[512]: ", text)
    else:
        text = re.sub(r"(?m)^\w{3} +\d+ [\d:.]+: ", "", text)
    f = tmp_path / "pluto.log"
    f.write_text(text)
    want = load_keys([_log("ikev2_gcm", "responder")])
    got = load_keys([f])
    assert [(k.spi_i, k.sk_ei, k.sk_er) for k in got.ike] == [(k.spi_i, k.sk_ei, k.sk_er) for k in want.ike]
    assert [(k.spi, k.enc_key) for k in got.esp] == [(k.spi, k.enc_key) for k in want.esp]


def test_gcm_ike_line_without_its_salt_is_an_error_naming_the_line(tmp_path):
    lines = _text("ikev2_gcm", "initiator").splitlines()
    keep = [line for line in lines if "salt extracting all" not in line]
    f = tmp_path / "pluto.log"
    f.write_text("\n".join(keep) + "\n")
    with pytest.raises(KeyFileError, match=r"pluto\.log:\d+: .*salt") as exc:
        load_keys([f])
    line = exc.value.line
    assert line is not None and "| ikev2 I" in keep[line - 1]


def test_esp_dump_cut_short_is_an_error(tmp_path):
    lines = _text("ikev2_cbc", "responder").splitlines()
    i = next(n for n, line in enumerate(lines) if line.endswith("| ESP enckey:"))
    del lines[i + 1]  # first row of the 32-byte key
    f = tmp_path / "pluto.log"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(KeyFileError, match=r"add_sa\(\) says 32\+32"):
        load_keys([f], strict=True)
    store = load_keys([f])  # by default only that CHILD SA is left out
    assert len(store.esp) == len(load_keys([_log("ikev2_cbc", "responder")]).esp) - 1
    assert any("add_sa() says 32+32" in w for w in store.warnings)


def test_half_an_ike_sa_is_a_warning_not_a_key(tmp_path):
    lines = [line for line in _text("ikev2_cbc", "responder").splitlines() if "| ikev2 R " not in line]
    f = tmp_path / "pluto.log"
    f.write_text("\n".join(lines) + "\n")
    store = load_keys([f])
    assert not store.ike and len(store.esp) == 1
    assert any("no 'ikev2 R' line" in w for w in store.warnings)


def test_tcpdump_names():
    assert N.ike_line_encr("aes_gcm_16256") == (E.ENCR_AES_GCM_16, 32)
    assert N.ike_line_encr("aes128") == (E.ENCR_AES_CBC, 16)
    assert N.ike_line_encr("aes_ctr192") == (E.ENCR_AES_CTR, 24)
    assert N.ike_line_encr("3des") == (E.ENCR_3DES, None)
    assert N.ike_line_encr("rot13") is None


def _load_mutant(tmp_path, data: bytes) -> None:
    f = tmp_path / "k"
    f.write_bytes(data)
    try:
        load_keys([f])
    except KeyFileError as exc:
        assert str(exc).startswith(str(f)), exc


@pytest.mark.parametrize(("scenario", "side"), [("ikev2_gcm", "initiator"), ("ikev2_cbc", "responder")])
def test_truncated_and_mutated_logs_only_raise_key_file_error(tmp_path, scenario, side):
    text = _text(scenario, side)
    lines = text.splitlines(keepends=True)
    # the interesting part: from the IKE key derivation on
    start = next(n for n, line in enumerate(lines) if "calculating skeyseed" in line)
    rng = random.Random(f"{scenario}-{side}")
    for _ in range(40):  # cut anywhere in the key-bearing part
        cut = rng.randrange(start, len(lines))
        _load_mutant(tmp_path, "".join(lines[:cut]).encode())
        _load_mutant(tmp_path, "".join(lines[:cut]).encode()[:-rng.randrange(1, 40)])
    key_lines = [n for n, line in enumerate(lines) if any(
        s in line for s in ("| ikev2 ", "salt extracting", "add_sa()", "ESP enckey", "ESP authkey", "  unwrapped"))]
    key_lines += [n + d for n in key_lines for d in (1, 2, 3, 5)]
    alphabet = "0123456789abcdefxyz |:[]>-=+.\n"
    for _ in range(150):
        mutant = list(lines)
        for _ in range(rng.randrange(1, 4)):
            n = rng.choice(key_lines)
            if n >= len(mutant):
                continue
            line = mutant[n]
            if not line:
                continue
            pos = rng.randrange(len(line))
            op = rng.randrange(3)
            if op == 0:
                line = line[:pos] + rng.choice(alphabet) + line[pos + 1:]
            elif op == 1:
                line = line[:pos] + line[pos + rng.randrange(1, 8):]
            else:
                mutant.insert(n, line)
            mutant[n] = line
        _load_mutant(tmp_path, "".join(mutant).encode())


def test_salts_follow_the_state_number_when_derivations_interleave(tmp_path):
    """pluto derives an IKE SA's keys a round trip before it logs its 'ikev2 I|R' lines; another
    SA can be keyed in between (many tunnels at once). Simulate that with the real rekey log:
    move the rekeyed SA's derivation (state #3) before the first SA's (#1) 'established' lines.
    Each SA must still get its own salts: every SK payload of the capture still decrypts."""
    lines = _text("ikev2_rekey", "initiator").splitlines()
    start = next(n for n, line in enumerate(lines) if "| completing DH shared secret for #1/#3" in line)
    end = next(n for n in range(start, len(lines)) if "finished computing individual keys" in lines[n]) + 1
    block = lines[start:end]
    del lines[start:end]
    at = next(n for n, line in enumerate(lines) if "| pstats #1 ikev2.ike established" in line)
    lines[at:at] = block
    f = tmp_path / "pluto.log"
    f.write_text("\n".join(lines) + "\n")
    s = Session()
    s.add_key_files([f])
    s.load(LSW / "ikev2_rekey.pcap")
    assert (s.stats.ike_decrypted, s.stats.ike_icv_failed) == (8, 0)
