"""The one key-format table (ipsecscope.keys.formats.FORMATS) drives detection, reading, DSB
reading, `keys convert`, the help and the README: these tests hold every consumer to it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import CORPUS, DATA, IPSECSCOPE, ROOT

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
    for name, path in SAMPLE_FILES.items():
        data = path.read_bytes()
        if path.suffix == ".gz":
            import gzip

            data = gzip.decompress(data)
        assert detect_format(data) == name, path


@pytest.mark.parametrize("name", sorted(SAMPLE_FILES))
def test_every_format_detected_is_read_inside_an_ipsk_dsb(tmp_path, name):
    """Whatever detection recognises, the DSB path reads too (never "recognised, then rejected")."""
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
