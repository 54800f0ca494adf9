"""`ipsecscope keys list|convert`: keys hidden unless --show-keys, errors are one line."""

from __future__ import annotations

import json
import subprocess

from conftest import CORPUS, DATA, IPSECSCOPE, ROOT

KEYS = DATA / "keys"
ESP_KEY = "88e1dad7140af03b8d4f3d734d21be4b"  # in esp_sa.tmpl
IKE_KEY = "647075bf167447a1c8683e8dbe4794b4"  # SK_ei prefix in ikev2_decryption_table.tmpl


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*IPSECSCOPE, "keys", *args], capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "250", "PATH": "/usr/local/bin:/usr/bin:/bin"})


def test_list_hides_keys_unless_asked():
    files = [str(CORPUS / "esp_sa.tmpl"), str(CORPUS / "ikev2_decryption_table.tmpl"), str(KEYS / "keys.json")]
    r = run("list", *files)
    assert r.returncode == 0, r.stderr
    assert "0xc254fe64" in r.stdout and "AES_CBC-128" in r.stdout and "HMAC_SHA1_96" in r.stdout
    assert "esp_sa.tmpl:2" in r.stdout and "0158b8fb90b7623d" in r.stdout
    assert ESP_KEY not in r.stdout and IKE_KEY not in r.stdout and "--show-keys" in r.stdout
    r = run("list", "--show-keys", *files)
    assert ESP_KEY in r.stdout and IKE_KEY in r.stdout
    j = json.loads(run("list", "--json", *files).stdout)
    assert j["schema"] == "ipsecscope.keys/1" and j["esp"][1]["enc_key"] is None
    assert json.loads(run("list", "--json", "--show-keys", *files).stdout)["esp"][1]["enc_key"] == ESP_KEY


def test_convert_to_terminal_redacts_to_file_writes(tmp_path):
    src = str(CORPUS / "esp_sa.tmpl")
    r = run("convert", src, "--to", "esp_sa")
    assert r.returncode == 0 and ESP_KEY not in r.stdout and "key hidden" in r.stdout
    assert ESP_KEY in run("convert", src, "--to", "esp_sa", "--show-keys").stdout
    out = tmp_path / "esp_sa"
    r = run("convert", src, "--to", "esp_sa", "-o", str(out))
    assert r.returncode == 0 and ESP_KEY in out.read_text() and (out.stat().st_mode & 0o777) == 0o600
    r = run("convert", src, "--to", "dsb")
    assert r.returncode == 1 and "give -o FILE" in r.stderr


def test_bad_key_file_is_one_line_error(tmp_path):
    bad = tmp_path / "esp_sa"
    bad.write_text('"IPv4","198.18.0.1","198.18.0.2","0x00000001","AES-CBC [RFC3602]","0x0011","NULL",""\n')
    r = run("list", str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"ipsecscope keys list: error: {bad}:1: Encryption Key: ENCR_AES_CBC needs a "
                                             "16 or 24 or 32-byte key, got 2 bytes"]
    r = run("list", str(tmp_path / "missing"))
    assert r.returncode == 1 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_keys_from_decrypt_dsb_output(tmp_path):
    """`ipsecscope decrypt --dsb` embeds the used SAs' keys; `keys list` reads them back."""
    out = tmp_path / "dec.pcapng"
    r = subprocess.run([*IPSECSCOPE, "decrypt", str(KEYS / "healthy-gcm-capture.pcapng"), "-k",
                        str(KEYS / "charon-healthy-gcm-left.log"), "-o", str(out), "--dsb", "-q"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    from ipsecscope.keys import load_keys

    got = load_keys([out])
    ref = load_keys([KEYS / "charon-healthy-gcm-left.log"])
    assert {(k.spi, k.enc_key) for k in got.esp} == {(k.spi, k.enc_key) for k in ref.esp}


def test_variable_length_cipher_keys_are_checked_against_their_range(tmp_path):
    """CAST5 takes 40 to 128-bit keys (RFC 2144 §2.2): a 288-bit one is a typo'd key file, said as such."""
    ok = tmp_path / "ok_sa"
    ok.write_text('"IPv4","198.18.0.1","198.18.0.2","0x00000001","CAST5-CBC [RFC2144]","0x' + "11" * 16
                  + '","NULL",""\n')
    assert run("list", str(ok)).returncode == 0
    bad = tmp_path / "esp_sa"
    bad.write_text('"IPv4","198.18.0.1","198.18.0.2","0x00000001","CAST5-CBC [RFC2144]","0x' + "11" * 36
                   + '","NULL",""\n')
    r = run("list", str(bad))
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"ipsecscope keys list: error: {bad}:1: Encryption Key: ENCR_CAST needs a 5 to 16-byte key, got 36 bytes"]


def test_plain_pcap_shortcut_judges_as_the_reader_does(tmp_path) -> None:
    # `decrypt -k KEYS FILE...` asks whether each operand is a capture without secrets; for a plain
    # pcap that is answered from its first 40 bytes (cli.common._plain_pcap) rather than by the
    # reader, which imports the per-frame model. Both must agree, on real files and damaged heads.
    import struct

    from ipsecscope.cli.common import _plain_by_reader, _plain_pcap

    real = sorted((ROOT / "samples").rglob("*.pcap")) + sorted(DATA.rglob("*.pcap"))
    assert len(real) > 20
    whole = real[0].read_bytes()
    damaged = {"cut-10": whole[:10], "cut-24": whole[:24], "cut-30": whole[:30],
               "huge-record": whole[:32] + struct.pack("<I", 1 << 25) + whole[36:],
               "big-endian": struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
               + struct.pack(">IIII", 0, 0, 4, 4) + b"\0" * 4,
               "text": b"not a capture at all, just words" * 2}
    paths = list(real)
    for name, data in damaged.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    judged = 0
    for p in paths:
        fast = _plain_pcap(str(p))
        if fast is not None:
            judged += 1
            assert fast == _plain_by_reader(str(p)), p
    assert judged >= len(real)  # every real pcap is judged from its head
