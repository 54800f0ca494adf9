"""The one key-format table (ipsecscope.keys.formats.FORMATS) drives detection, reading, DSB
reading, `keys convert`, the help and the README: these tests hold every consumer to it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import CORPUS, DATA, IPSECSCOPE, ROOT, need

from ipsecscope.keys import add_secrets_block, detect_format, formats, load_keys
from ipsecscope.keys.dsb import SECRETS_TYPE_IPSEC, pcapng_with_secrets
from ipsecscope.keys.store import KeyStore

# one real file per readable format (the DSB one is built from the JSON below)
SAMPLE_FILES = {
    "json": DATA / "keys" / "keys.json",
    "esp_sa": CORPUS / "esp_sa.tmpl",
    "ikev2_table": CORPUS / "ikev2_decryption_table.tmpl",
    "ikev1_table": CORPUS / "ikev1_decryption_table.tmpl",
    "xfrm": DATA / "keys" / "ip-xfrm-state.txt",
    "charon": DATA / "keys" / "charon-healthy-gcm-left.log",
    "libreswan": DATA / "keys" / "libreswan" / "ikev2_gcm.initiator.log.gz",
    "tcpdump": DATA / "keys" / "tcpdump-secrets.txt",
}


def test_readme_table_is_the_format_table():
    """The README's key-format table is generated from FORMATS (python -m ipsecscope.keys.formats)."""
    readme = (ROOT / "README.md").read_text()
    assert formats.readme_table() in readme, "README key table is stale: paste `python -m ipsecscope.keys.formats`"
    printed = subprocess.run([sys.executable, "-m", "ipsecscope.keys.formats"], capture_output=True, text=True,
                             check=True).stdout
    assert printed.strip() == formats.readme_table()


def test_every_readable_format_has_a_sample_and_is_detected():
    readable = {f.name for f in formats.input_formats()} - {"dsb"}
    assert readable == set(SAMPLE_FILES)
    need(*SAMPLE_FILES.values())  # the Wireshark tables are third-party (tests/public_data.py)
    for name, path in SAMPLE_FILES.items():
        data = path.read_bytes()
        if path.suffix == ".gz":
            import gzip

            data = gzip.decompress(data)
        assert detect_format(data) == name, path


@pytest.mark.parametrize("name", sorted(SAMPLE_FILES))
def test_every_format_detected_is_read_inside_an_ipsk_dsb(tmp_path, name):
    """Whatever detection recognises, the DSB path reads too (never "recognised, then rejected")."""
    need(SAMPLE_FILES[name])  # the Wireshark tables are third-party (tests/public_data.py)
    plain = load_keys([SAMPLE_FILES[name]])
    data = SAMPLE_FILES[name].read_bytes()
    if SAMPLE_FILES[name].suffix == ".gz":
        import gzip

        data = gzip.decompress(data)
    f = tmp_path / "k.pcapng"
    f.write_bytes(pcapng_with_secrets([(SECRETS_TYPE_IPSEC, data)]))
    assert detect_format(f.read_bytes()) == "dsb"
    via_dsb = load_keys([f])
    assert (len(via_dsb.esp), len(via_dsb.ike), len(via_dsb.ikev1)) == (
        len(plain.esp), len(plain.ike), len(plain.ikev1))
    s = KeyStore()
    assert add_secrets_block(s, SECRETS_TYPE_IPSEC, data, "x") == len(plain)


def test_convert_choices_and_help_come_from_the_table():
    out = subprocess.run([*IPSECSCOPE, "keys", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "``" not in out and "* ``" not in out  # plain text, not reStructuredText
    for f in formats.FORMATS:
        assert f.name in out
    conv = subprocess.run([*IPSECSCOPE, "keys", "convert", "--help"], capture_output=True,
                          text=True, check=True).stdout
    assert "{" + ",".join(f.name for f in formats.output_formats()) + "}" in conv.replace("\n", "").replace(" ", "")
    k = subprocess.run([*IPSECSCOPE, "sas", "--help"], capture_output=True, text=True,
                       check=True).stdout
    assert "Libreswan" in k


@pytest.mark.parametrize("fmt", [f.name for f in formats.output_formats()])
def test_every_output_format_reads_back(tmp_path, fmt):
    store = load_keys([SAMPLE_FILES["charon"]])
    out = formats.dump(store, fmt, True)
    f = tmp_path / "out"
    f.write_bytes(out if isinstance(out, bytes) else out.encode())
    want = formats.BY_NAME[fmt].count(store)
    if want == 0:
        return
    back = load_keys([f])
    assert formats.BY_NAME[fmt].count(back) == want


# draft-ietf-opsawg-pcapng §"Decryption Secrets Block", secrets type 0x45535053 (ESP SA keys),
# added with Wireshark merge request 20256: the exact algorithm strings a reader accepts.
DRAFT_ESP_ENCR = {
    "NULL", "TripleDES-CBC [RFC2451]", "AES-CBC [RFC3602]", "AES-CTR [RFC3686]", "DES-CBC [RFC2405]",
    "CAST5-CBC [RFC2144]", "BLOWFISH-CBC [RFC2451]", "TWOFISH-CBC", "AES-GCM [RFC4106]",
    "AES-GCM with 8 octet ICV [RFC4106]", "AES-GCM with 12 octet ICV [RFC4106]",
    "AES-GCM with 16 octet ICV [RFC4106]", "AES-GCM with IIV and 16 octet ICV [RFC4106 & RFC8750]",
    "ChaCha20 with Poly1305 [RFC7634]", "ChaCha20 with Poly1305 and IIV [RFC7634 & RFC8750]"}
DRAFT_ESP_AUTH = {
    "NULL", "HMAC-SHA-1-96 [RFC2404]", "HMAC-SHA-256-96 [draft-ietf-ipsec-ciph-sha-256-00]",
    "HMAC-SHA-256-128 [RFC4868]", "HMAC-SHA-384-192 [RFC4868]", "HMAC-SHA-512-256 [RFC4868]",
    "HMAC-MD5-96 [RFC2403]", "MAC-RIPEMD-160-96 [RFC2857]", *(f"ANY {n} bit authentication [no checking]"
                                                             for n in (64, 96, 128, 192, 256))}


@pytest.mark.parametrize("log", [DATA / "keys" / "multi-child" / "charon-left.log",
                                 DATA / "keys" / "charon-healthy-gcm-left.log"], ids=lambda p: p.parent.name)
def test_dsb_writes_wiresharks_esp_sa_secrets_type(tmp_path, log):
    """`keys convert --to dsb` (and `decrypt --dsb`) put ESP SAs in Wireshark's own type 0x45535053,
    10-column CSV exactly as the pcapng draft specifies (tshark 4.0 here predates the type, so the
    format is checked against the specification); only what no Wireshark type can carry (IKE SA
    keys, AES-CCM / AES-XCBC ESP SAs) goes to ipsecscope's own JSON block. ipsecscope reads both."""
    import csv
    import re

    from ipsecscope.keys import dsb

    store = load_keys([log])
    out = tmp_path / "keys.pcapng"
    out.write_bytes(formats.dump(store, "dsb", True))
    blocks = list(dsb.iter_secrets(out.read_bytes(), str(out)))
    esp = [data for _, t, data in blocks if t == dsb.SECRETS_TYPE_ESP]
    own = [data for _, t, data in blocks if t == dsb.SECRETS_TYPE_IPSEC]
    assert len(esp) == 1 and len(own) == (1 if store.ike or store.ikev1 else 0) + 0
    rows = list(csv.reader(esp[0].decode().splitlines()))
    for r in rows:
        assert len(r) == 10, r
        assert r[0] in ("IPv4", "IPv6", "Any") and re.fullmatch(r"0x[0-9a-f]{8}", r[3])
        assert r[4] in DRAFT_ESP_ENCR and r[6] in DRAFT_ESP_AUTH, r[4:7]
        assert (r[5] == "" and r[4] == "NULL") or re.fullmatch(r"0x[0-9a-f]+", r[5])
        assert r[7] == "" or re.fullmatch(r"0x[0-9a-f]+", r[7])
        assert r[8] in ("32-bit", "64-bit") and re.fullmatch(r"0x[0-9a-f]{8}", r[9])
    back = load_keys([out])
    assert sorted((k.spi, k.encr, k.enc_key, k.auth_key) for k in back.esp) == sorted(
        (k.spi, k.encr, k.enc_key, k.auth_key) for k in store.esp)
    assert len(back.ike) == len(store.ike)
    only_ours = [k for k in store.esp if k.spi not in {int(r[3], 16) for r in rows}]
    from ipsecscope.model.iana import EncrTransform as E
    from ipsecscope.model.iana import IntegTransform as I  # noqa: E741

    ccm = {E.ENCR_AES_CCM_8, E.ENCR_AES_CCM_12, E.ENCR_AES_CCM_16}
    assert all(k.encr in ccm or k.integ == I.AUTH_AES_XCBC_96 for k in only_ours)  # no name in the draft
