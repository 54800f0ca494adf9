"""Wireshark key tables: the corpus tables load, lookups match Wireshark semantics, conversion
round-trips, and tshark decrypts with what `keys convert` writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import CORPUS, needs_tshark

from ipsecscope.errors import KeyFileError
from ipsecscope.keys import detect_format, load_keys
from ipsecscope.keys.formats import dump
from ipsecscope.keys.store import KeyStore
from ipsecscope.model.iana import EncrTransform as E
from ipsecscope.model.iana import IntegTransform as I
from ipsecscope.model.keys import EspSaKeys

TABLES = [CORPUS / "esp_sa.tmpl", CORPUS / "ikev2_decryption_table.tmpl", CORPUS / "ikev1_decryption_table.tmpl"]


def test_corpus_tables_load():
    store = load_keys(TABLES)
    assert (len(store.esp), len(store.ike), len(store.ikev1)) == (2, 9, 3)
    k = store.esp_lookup("192.168.0.100", "192.168.0.1", 0xC254FE64)
    assert k is not None and k.encr == E.ENCR_AES_CBC and k.integ == I.AUTH_HMAC_SHA1_96
    assert k.enc_key.hex() == "88e1dad7140af03b8d4f3d734d21be4b"
    assert k.source.endswith("esp_sa.tmpl:2")
    # direction matters
    assert store.esp_lookup("192.168.0.1", "192.168.0.100", 0xC254FE64) is None
    assert store.ikev1_lookup(bytes.fromhex("fafaeb49382a763c")).enc_key.hex().startswith("735be0cb")


def test_ikev2_table_algorithms():
    store = load_keys([CORPUS / "ikev2_decryption_table.tmpl"])
    by_spi = {k.spi_i.hex(): k for k in store.ike}
    ccm = by_spi["ea684d21597afd36"]
    assert ccm.encr == E.ENCR_AES_CCM_12 and ccm.integ == I.NONE and len(ccm.sk_ei) == 19
    ctr_nocheck = by_spi["a2926ae833c6f138"]
    assert ctr_nocheck.encr == E.ENCR_AES_CTR and not ctr_nocheck.check_integrity and ctr_nocheck.icv_len == 12
    tdes = by_spi["19ab98963486359f"]
    assert tdes.encr == E.ENCR_3DES and tdes.integ == I.AUTH_HMAC_SHA1_160
    assert store.ike_lookup(bytes.fromhex("81f24c0acd8fa55c"), bytes.fromhex("192383172724c706")).integ == (
        I.AUTH_HMAC_SHA2_512_256)
    gcm8 = by_spi["5d48bfeeb7d574da"]
    assert gcm8.encr == E.ENCR_AES_GCM_8 and len(gcm8.sk_ei) == 36


def test_detect_formats():
    for p, fmt in zip(TABLES, ["esp_sa", "ikev2_table", "ikev1_table"], strict=True):
        assert detect_format(p.read_bytes()) == fmt


ALL_ESP_ROWS = '''# every esp_sa algorithm string
"IPv4","198.18.0.1","198.18.0.2","0x00000001","NULL","","HMAC-SHA-1-96 [RFC2404]","0x0102030405060708090a0b0c0d0e0f1011121314"
"IPv4","198.18.0.1","198.18.0.2","0x00000002","TripleDES-CBC [RFC2451]","0x0102030405060708090a0b0c0d0e0f101112131415161718","HMAC-MD5-96 [RFC2403]","0x0102030405060708090a0b0c0d0e0f10"
"IPv4","198.18.0.1","198.18.0.2","0x00000003","AES-CBC [RFC3602]","0x0102030405060708090a0b0c0d0e0f10","HMAC-SHA-256-96 [draft-ietf-ipsec-ciph-sha-256-00]","0x0102030405060708090a0b0c0d0e0f100102030405060708090a0b0c0d0e0f10"
"IPv4","198.18.0.1","198.18.0.2","0x00000004","AES-CTR [RFC3686]","0x0102030405060708090a0b0c0d0e0f1011121314","HMAC-SHA-256-128 [RFC4868]","0x0102030405060708090a0b0c0d0e0f100102030405060708090a0b0c0d0e0f10"
"IPv4","198.18.0.1","198.18.0.2","0x00000005","DES-CBC [RFC2405]","0x0102030405060708","HMAC-SHA-384-192 [RFC4868]","0x0102030405060708090a0b0c0d0e0f100102030405060708090a0b0c0d0e0f100102030405060708090a0b0c0d0e0f10"
"IPv4","198.18.0.1","198.18.0.2","0x00000006","CAST5-CBC [RFC2144]","0x0102030405060708090a0b0c0d0e0f10","HMAC-SHA-512-256 [RFC4868]","0x0102030405060708090a0b0c0d0e0f100102030405060708090a0b0c0d0e0f100102030405060708090a0b0c0d0e0f100102030405060708090a0b0c0d0e0f10"
"IPv4","198.18.0.1","198.18.0.2","0x00000007","BLOWFISH-CBC [RFC2451]","0x0102030405060708090a0b0c0d0e0f10","MAC-RIPEMD-160-96 [RFC2857]","0x0102030405060708090a0b0c0d0e0f1011121314"
"IPv4","198.18.0.1","198.18.0.2","0x00000008","TWOFISH-CBC","0x0102030405060708090a0b0c0d0e0f10","ANY 64 bit authentication [no checking]",""
"IPv4","198.18.0.1","198.18.0.2","0x00000009","AES-GCM [RFC4106]","0x0102030405060708090a0b0c0d0e0f1011121314","ANY 96 bit authentication [no checking]",""
"IPv4","198.18.0.1","198.18.0.2","0x0000000a","AES-GCM with 8 octet ICV [RFC4106]","0x0102030405060708090a0b0c0d0e0f1011121314","NULL",""
"IPv4","198.18.0.1","198.18.0.2","0x0000000b","AES-GCM with 12 octet ICV [RFC4106]","0x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c","NULL",""
"IPv4","198.18.0.1","198.18.0.2","0x0000000c","AES-GCM with 16 octet ICV [RFC4106]","0x0102030405060708090a0b0c0d0e0f100102030405060708090a0b0c0d0e0f1011121314","NULL",""
"IPv6","2001:db8::1","2001:db8::2","0x0000000d","ChaCha20 with Poly1305 [RFC7634]","0x0102030405060708090a0b0c0d0e0f100102030405060708090a0b0c0d0e0f1011121314","NULL",""
"IPv4","198.18.0.1","198.18.0.2","0x0000000e","AES-GCM with IIV and 16 octet ICV [RFC4106 & RFC8750]","0x0102030405060708090a0b0c0d0e0f1011121314","NULL",""
"IPv4","198.18.0.1","198.18.0.2","0x0000000f","ChaCha20 with Poly1305 and IIV [RFC7634 & RFC8750]","0x0102030405060708090a0b0c0d0e0f100102030405060708090a0b0c0d0e0f1011121314","NULL",""
"IPv4","198.18.0.1","198.18.0.2","0x00000010","AES-CBC [RFC3602]","0x0102030405060708090a0b0c0d0e0f10","ANY 96 bit authentication [no checking]",""
"IPv4","198.18.0.1","198.18.0.2","0x00000011","AES-CBC [RFC3602]","0x0102030405060708090a0b0c0d0e0f10","ANY 128 bit authentication [no checking]",""
"IPv4","198.18.0.1","198.18.0.2","0x00000012","AES-CBC [RFC3602]","0x0102030405060708090a0b0c0d0e0f10","ANY 192 bit authentication [no checking]",""
"IPv4","198.18.0.1","198.18.0.2","0x00000013","AES-CBC [RFC3602]","0x0102030405060708090a0b0c0d0e0f10","ANY 256 bit authentication [no checking]",""
"IPv4","198.18.0.1","198.18.0.2","0x00000014","AES-GCM [RFC4106]","0x0102030405060708090a0b0c0d0e0f1011121314","ANY 128 bit authentication [no checking]",""
"IPv4","198.18.0.1","198.18.0.2","0x00000015","AES-GCM [RFC4106]","0x0102030405060708090a0b0c0d0e0f1011121314","ANY 64 bit authentication [no checking]",""
'''


def test_every_esp_sa_algorithm_string(tmp_path):
    f = tmp_path / "esp_sa"
    f.write_text(ALL_ESP_ROWS)
    store = load_keys([f])
    got = {k.spi: k for k in store.esp}
    assert len(got) == 21
    assert got[1].encr == E.ENCR_NULL and got[1].enc_key == b""
    assert got[3].integ == I.AUTH_HMAC_SHA2_256_128 and got[3].icv_len == 12
    assert got[8].integ == I.NONE and got[8].icv_len == 8 and not got[8].check_integrity
    # deprecated AES-GCM takes its ICV length from the paired "ANY n bit" string
    assert got[9].encr == E.ENCR_AES_GCM_12 and got[9].check_integrity
    assert got[0x14].encr == E.ENCR_AES_GCM_16 and got[0x15].encr == E.ENCR_AES_GCM_8
    assert got[0xD].encr == E.ENCR_CHACHA20_POLY1305 and got[0xD].dst == "2001:db8::2"
    assert got[0xE].encr == E.ENCR_AES_GCM_16_IIV
    # round trip through every writer that can express them
    again = KeyStore()
    for fmt in ("json",):
        p = tmp_path / f"out.{fmt}"
        p.write_text(dump(store, fmt, True))
        again = load_keys([p])
        assert [_strip(k) for k in again.esp] == [_strip(k) for k in store.esp]


def _strip(k: EspSaKeys) -> tuple:
    return (k.spi, k.encr, k.enc_key, k.integ, k.auth_key, k.src, k.dst, k.spi_pattern, k.icv_len, k.esn,
            k.check_integrity)


def test_esp_sa_round_trip_wireshark_names(tmp_path):
    f = tmp_path / "esp_sa"
    f.write_text(ALL_ESP_ROWS)
    store = load_keys([f])
    out = tmp_path / "esp_sa.out"
    text = dump(store, "esp_sa", True)
    out.write_text(text)
    again = load_keys([out])
    # rows Wireshark 4.0 cannot express are written as comments
    commented = [line for line in text.splitlines() if line.startswith("# SPI")]
    assert len(commented) == 3  # ChaCha20, GCM-IIV, ChaCha20-IIV
    kept = {k.spi for k in again.esp}
    assert {_strip(k) for k in again.esp} == {_strip(k) for k in store.esp if k.spi in kept}


def test_wildcards_most_specific_wins(tmp_path):
    f = tmp_path / "esp_sa"
    f.write_text(
        '"IPv4","*","*","*","NULL","","NULL",""\n'
        '"IPv4","198.18.*.*","*","0x000040**","AES-CBC [RFC3602]","0x00000000000000000000000000000001","NULL",""\n'
        '"IPv4","198.18.0.0/16","198.19.0.9","0x000040**","AES-CBC [RFC3602]","0x00000000000000000000000000000002","NULL",""\n'
        '"IPv4","198.18.0.1","198.19.0.9","0x00004001","AES-CBC [RFC3602]","0x00000000000000000000000000000003","NULL",""\n'
        '"IPv6","2001:db8:*:*:*:*:*:*","*","*","AES-CBC [RFC3602]","0x00000000000000000000000000000004","NULL",""\n'
        "# comment\n"
    )
    s = load_keys([f])
    assert s.esp_lookup("198.18.0.1", "198.19.0.9", 0x4001).enc_key[-1] == 3
    assert s.esp_lookup("198.18.0.2", "198.19.0.9", 0x4001).enc_key[-1] == 2
    assert s.esp_lookup("198.18.0.2", "198.19.0.8", 0x40FF).enc_key[-1] == 1
    assert s.esp_lookup("198.18.0.2", "198.19.0.8", 0x41FF).encr == E.ENCR_NULL
    assert s.esp_lookup("2001:db8::5", "2001:db8::6", 7).enc_key[-1] == 4
    assert s.esp_lookup("2001:db9::5", "2001:db8::6", 7).encr == E.ENCR_NULL
    # a key added later for the exact SA beats every wildcard, and the lookup cache notices
    v = s.version
    s.add_esp(EspSaKeys(spi=0x40FF, encr=E.ENCR_AES_CBC, enc_key=bytes(15) + b"\x05", integ=I.NONE,
                        auth_key=b"", src="198.18.0.2", dst="198.19.0.8"))
    assert s.version > v
    assert s.esp_lookup("198.18.0.2", "198.19.0.8", 0x40FF).enc_key[-1] == 5


def test_escapes_and_ascii_keys(tmp_path):
    f = tmp_path / "esp_sa"
    f.write_text('"IPv4","198.18.0.1","198.18.0.2","0x00000100","AES-CBC [RFC3602]","0123456789\\x41BCDEF","NULL",""\n')
    k = load_keys([f]).esp[0]
    assert k.enc_key == b"0123456789ABCDEF"


@pytest.mark.parametrize(
    "content, line, words",
    [
        ('"IPv4","198.18.0.1","198.18.0.2","0x1","AES-CBC [RFC3602]","0x00","NULL",""\n', 1, "AES_CBC needs"),
        ('# c\n"IPv4","198.18.0.1","198.18.0.2","0x00000001","AES-CBC","0x00","NULL",""\n', 2, "unknown esp_sa encryption"),
        ('"IPv4","198.18.0.1","198.18.0.2","0x0000**","NULL","","NULL",""\n', 1, "10-character"),
        ('"IPv4","198.18.0.300","198.18.0.2","0x00000001","NULL","","NULL",""\n', 1, "Src IP"),
        ('"IPv4","198.18.0.1","198.18.0.2","0x00000001","NULL",""\n', 1, "6 fields"),
        ('"IPv4","198.18.0.1,"198.18.0.2","0x00000001","NULL","","NULL",""\n', 1, ""),
        ('"IPv4","198.18.0.1","198.18.0.2","0x00000001","AES-GCM with 16 octet ICV [RFC4106]",'
         '"0x0102030405060708090a0b0c0d0e0f1011121314","HMAC-SHA-1-96 [RFC2404]",""\n', 1, "AEAD"),
        ("0158b8fb90b7623d,13514610cea16160,00,00,\"AES-CBC-128 [RFC3602]\",,,\"NONE [RFC4306]\"\n", 1, "needs 16"),
        ("0158b8fb90b7623d,13514610cea16160,,,\"NULL [RFC2410]\",,,\"HMAC_SHA9\"\n", 1, "unknown IKEv2 integrity"),
        ("fafaeb49382a763c,00ff\nfafaeb49382a763c,zz\n", 2, "not an esp_sa"),
    ],
)
def test_bad_tables_name_file_and_line(tmp_path, content, line, words):
    f = tmp_path / "bad_table"
    f.write_text(content)
    with pytest.raises(KeyFileError) as ei:
        load_keys([f], strict=True)
    assert ei.value.path == str(f) and ei.value.line == line
    assert str(ei.value).startswith(f"{f}:{line}: ")
    assert words in str(ei.value)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(KeyFileError, match="no such file"):
        load_keys([tmp_path / "nope"])
    junk = tmp_path / "junk.txt"
    junk.write_text("hello world\n")
    with pytest.raises(KeyFileError, match="not a key file format"):
        load_keys([junk])
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(KeyFileError, match="empty"):
        load_keys([empty])


def _tshark_data(capture, profile_dir) -> str:
    env = {"WIRESHARK_CONFIG_DIR": str(profile_dir), "HOME": str(profile_dir), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        ["tshark", "-r", str(capture), "-o", "esp.enable_encryption_decode:TRUE",
         "-o", "esp.enable_authentication_check:TRUE", "-T", "fields", "-e", "data.data", "-e", "esp.icv_good"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )
    return out.stdout


@needs_tshark
def test_tshark_decrypts_with_converted_esp_sa(tmp_path):
    """`keys convert --to esp_sa` output is a working Wireshark profile file."""
    store = load_keys([CORPUS / "esp_sa.tmpl"])
    # go through JSON first so the esp_sa we hand tshark is our own writing, not a copy
    j = tmp_path / "k.json"
    j.write_text(dump(store, "json", True))
    again = load_keys([j])
    prof = tmp_path / "profile"
    prof.mkdir()
    (prof / "esp_sa").write_text(dump(again, "esp_sa", True))
    out = _tshark_data(CORPUS / "esp-bug-12671.pcapng.gz", prof)
    assert "08090a0b0c0d0e0f1011121314151617" in out
    assert [line.split("\t")[1] for line in out.splitlines()] == ["1"] * 6  # every ICV verified
    # and with redacted keys (no --show-keys) it must NOT decrypt: redaction is real
    (prof / "esp_sa").write_text(dump(again, "esp_sa", False))
    out = _tshark_data(CORPUS / "esp-bug-12671.pcapng.gz", prof)
    assert "08090a0b0c0d0e0f1011121314151617" not in out


def test_ten_column_esp_sa_with_sequence_number_length(tmp_path):
    """Newer Wireshark esp_sa rows carry two more fields: SN length (32-bit / 64-bit = ESN) and
    the ESN high bits."""
    f = tmp_path / "esp_sa"
    f.write_text(
        '"IPv4","198.18.0.1","198.18.0.2","0x00000001","AES-CBC [RFC3602]","0x0102030405060708090a0b0c0d0e0f10",'
        '"HMAC-SHA-1-96 [RFC2404]","0x0102030405060708090a0b0c0d0e0f1011121314","64-bit","0x00000001"\n'
        '"IPv4","198.18.0.2","198.18.0.1","0x00000002","AES-CBC [RFC3602]","0x0102030405060708090a0b0c0d0e0f10",'
        '"HMAC-SHA-1-96 [RFC2404]","0x0102030405060708090a0b0c0d0e0f1011121314","32-bit",""\n'
    )
    a, b = load_keys([f]).esp
    assert a.esn is True and b.esn is False


def test_windows_editor_artifacts(tmp_path):
    """A table saved by a Windows editor: UTF-8 BOM and CRLF line ends."""
    f = tmp_path / "esp_sa"
    f.write_bytes(b"\xef\xbb\xbf" + (CORPUS / "esp_sa.tmpl").read_bytes().replace(b"\n", b"\r\n"))
    assert [k.spi for k in load_keys([f]).esp] == [0x070883C2, 0xC254FE64]


def test_directory_of_tables_and_comment_only_tables(tmp_path):
    """A Wireshark profile directory loads as its tables; a table with only its header comment is an
    empty table (Wireshark loads it so), while a directory with no key file at all is an error."""
    samples = Path(__file__).resolve().parents[1] / "samples"
    store = load_keys([samples / "healthy-gcm" / "keys"])
    assert len(store.esp) >= 4 and len(store.ike) >= 2
    empty = load_keys([samples / "ike-proposal-mismatch" / "keys"])
    assert len(empty) == 0 and any("only comments" in w for w in empty.warnings)
    (tmp_path / "notes.txt").write_text("not keys\n")
    with pytest.raises(KeyFileError, match="no key file in this directory"):
        load_keys([tmp_path])
