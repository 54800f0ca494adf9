"""Damaged key files raise KeyFileError (file, line, reason) or skip the damaged rows with a
``file:line: reason`` warning, never anything else; no message ever holds key bytes; the CLI
exits with its documented codes (0, or 1 for a key file it cannot use), never a traceback."""

from __future__ import annotations

import random
import re
import subprocess

import pytest
from conftest import CORPUS, DATA, IPSECSCOPE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsecscope.errors import KeyFileError
from ipsecscope.keys import load_keys

SOURCES = [DATA / "keys" / n for n in ("ip-xfrm-state.txt", "ip-s-xfrm-state.txt", "tcpdump-secrets.txt",
                                       "keys.json", "charon-ikev1-left.log", "charon-cbc-sha2-pfs-right.log")] + [
    CORPUS / "esp_sa.tmpl", CORPUS / "ikev2_decryption_table.tmpl", CORPUS / "ikev1_decryption_table.tmpl"]


def _keys_of(data: bytes) -> list[str]:
    """The key material in a (source) key file: hex runs long enough to be keys, and hex-dump rows."""
    text = data.decode("latin-1").lower()
    runs = re.findall(r"[0-9a-f]{32,}", text)
    rows = ["".join(r.split()) for r in re.findall(r"\d+: ((?:[0-9a-f]{2} ){8,16})", text)]
    # IKE SPIs (public, printed by `keys list`) also appear in dumps of message headers
    spis = set(re.findall(r"([0-9a-f]{16})_[ir]", text))
    return [k for k in runs + [r for r in rows if len(r) >= 16] if not any(spi in k for spi in spis)]


def _leaked(output: str, keys: list[str]) -> list[str]:
    flat = re.sub(r"[^0-9a-f]", "", output.lower())
    return [k[i : i + 12] for k in keys for i in range(0, len(k) - 12, 4) if k[i : i + 12] in flat]


def _load(tmp_path, data: bytes, keys: list[str] = ()) -> None:
    f = tmp_path / "k"
    f.write_bytes(data)
    try:
        store = load_keys([f])
    except KeyFileError as exc:
        assert str(exc).startswith(str(f)), exc
        assert not _leaked(str(exc), list(keys)), exc
        return
    for w in store.warnings:  # skipped rows: `file:line: reason`, no key bytes
        assert w.startswith(str(f)), w
        assert not _leaked(w, list(keys)), w


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_mutated_key_files(tmp_path, src):
    data = src.read_bytes()
    keys = _keys_of(data)
    rng = random.Random(src.name)
    for _ in range(150):
        _load(tmp_path, _mutate(rng, data), keys)
    for cut in range(0, len(data), max(1, len(data) // 40)):  # truncated anywhere
        _load(tmp_path, data[:cut], keys)


def _mutate(rng: random.Random, data: bytes) -> bytes:
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
    return bytes(b)


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_mutated_key_files_through_the_cli(tmp_path, src):
    """The whole program on a few mutants per format: exit 0 or 1, one-line errors, no traceback,
    no key bytes on stdout or stderr (keys list prints no keys without --show-keys)."""
    data = src.read_bytes()
    keys = _keys_of(data)
    rng = random.Random("cli" + src.name)
    for n in range(6):
        f = tmp_path / f"k{n}"
        f.write_bytes(_mutate(rng, data))
        r = subprocess.run([*IPSECSCOPE, "keys", "list", str(f)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode in (0, 1), r.stderr
        assert "Traceback" not in r.stderr and not _leaked(r.stdout + r.stderr, keys), r.stderr
        if r.returncode == 1:
            assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(f"ipsecscope keys list: error: {f}")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_bytes(tmp_path, data):
    _load(tmp_path, data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet='"IPv4,.0123456789abcdefx*/:-[] \n#', max_size=200))
def test_table_like_text(tmp_path, text):
    _load(tmp_path, text.encode())
