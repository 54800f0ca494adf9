"""Damaged key files raise KeyFileError (file, line, reason), never anything else."""

from __future__ import annotations

import random

import pytest
from conftest import CORPUS, DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsecscope.errors import KeyFileError
from ipsecscope.keys import load_keys

SOURCES = [DATA / "keys" / n for n in ("ip-xfrm-state.txt", "ip-s-xfrm-state.txt", "tcpdump-secrets.txt",
                                       "keys.json", "charon-ikev1-left.log", "charon-cbc-sha2-pfs-right.log")] + [
    CORPUS / "esp_sa.tmpl", CORPUS / "ikev2_decryption_table.tmpl", CORPUS / "ikev1_decryption_table.tmpl"]


def _load(tmp_path, data: bytes) -> None:
    f = tmp_path / "k"
    f.write_bytes(data)
    try:
        load_keys([f])
    except KeyFileError as exc:
        assert str(exc).startswith(str(f)), exc


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_mutated_key_files(tmp_path, src):
    data = src.read_bytes()
    rng = random.Random(src.name)
    for _ in range(150):
        b = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            i = rng.randrange(len(b))
            if op < 0.4:
                b[i] = rng.choice(b'0123456789abcdefxX*,"\\: \n\t\x00\xff{}[]')
            elif op < 0.7:
                del b[i : i + rng.randint(1, 40)]
            else:
                b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        _load(tmp_path, bytes(b))
    for cut in range(0, len(data), max(1, len(data) // 40)):  # truncated anywhere
        _load(tmp_path, data[:cut])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_bytes(tmp_path, data):
    _load(tmp_path, data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet='"IPv4,.0123456789abcdefx*/:-[] \n#', max_size=200))
def test_table_like_text(tmp_path, text):
    _load(tmp_path, text.encode())
