"""Bad input never escapes as anything but a typed error (decrypt_sk) or a note (the decryptors).

Mutations of the real corpus messages: truncations, bit flips anywhere (header, lengths, IV,
ciphertext, ICV), and random lengths in the SK header, with the right keys so the code paths past
the integrity check are reached too (AES-CTR "no checking" decrypts whatever it is given).
"""

from __future__ import annotations

import struct

import pytest
from conftest import missing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ike_sk import CORPUS, V2_CAPTURES, ike_datagrams, table_keys
from test_ike_sk_pipeline import store
from test_ikev1_crypto import V1_CAPTURES

from ipsecscope.crypto.ike_sk import IkeDecryptor, decrypt_sk, find_sk
from ipsecscope.crypto.ikev1 import Ikev1Decryptor
from ipsecscope.decode.ike import parse_ike
from ipsecscope.errors import DecryptError, UnknownAlgorithmError
from ipsecscope.model.packets import IkeDatagram

if why := missing(CORPUS):  # the Wireshark corpus is read below, at import (tests/public_data.py)
    pytest.skip(why, allow_module_level=True)
V2 = [m for c in V2_CAPTURES for _f, m in ike_datagrams(CORPUS / c) if find_sk(m)]
V1 = {c: [m for _f, m in ike_datagrams(CORPUS / c)] for c in V1_CAPTURES}
KEYS = table_keys()


def _mutate(msg: bytes, data) -> bytes:
    b = bytearray(msg)
    kind = data.draw(st.sampled_from(["truncate", "flip", "sklen", "extend"]))
    if kind == "truncate":
        return bytes(b[:data.draw(st.integers(0, len(b)))])
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        return bytes(b)
    if kind == "sklen":
        sk = find_sk(msg)
        assert sk
        struct.pack_into("!H", b, sk[0] + 2, data.draw(st.integers(0, 0xFFFF)))
        return bytes(b)
    return bytes(b) + data.draw(st.binary(max_size=64))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_decrypt_sk_raises_only_typed_errors(data) -> None:
    msg = data.draw(st.sampled_from(V2))
    keys = KEYS[(msg[:8], msg[8:16])]
    off = find_sk(msg)[0]
    bad = _mutate(msg, data)
    try:
        first, plain = decrypt_sk(bad, off, keys, data.draw(st.booleans()))
    except (DecryptError, UnknownAlgorithmError):
        return
    assert isinstance(first, int) and isinstance(plain, bytes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_ike_decryptor_never_raises(data) -> None:
    d = IkeDecryptor(store())
    msg = data.draw(st.sampled_from(V2))
    bad = _mutate(msg, data)
    out = d.decrypt(parse_ike(IkeDatagram(1, 0.0, "198.18.0.1", "198.18.0.2", 500, 500, bad)))
    if out.decrypted and out.icv_ok is None:
        # unverified bytes that do not parse are never shown as decrypted
        assert not (out.malformed or "").startswith("encrypted payloads")
    if out.icv_ok is True:
        # every byte of the message is covered by the ICV/tag: only bytes past its end may differ
        assert bad[:len(msg)] == msg


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_ikev1_decryptor_never_raises(data) -> None:
    cap = data.draw(st.sampled_from(V1_CAPTURES))
    msgs = list(V1[cap])
    i = data.draw(st.integers(0, len(msgs) - 1))
    msgs[i] = _mutate_v1(msgs[i], data)
    d = Ikev1Decryptor(store())
    for n, m in enumerate(msgs, 1):
        out = d.decrypt(parse_ike(IkeDatagram(n, 0.0, "198.18.0.1", "198.18.0.2", 500, 500, m)))
        assert out.icv_ok is None


def _mutate_v1(msg: bytes, data) -> bytes:
    b = bytearray(msg)
    if data.draw(st.booleans()):
        return bytes(b[:data.draw(st.integers(0, len(b)))])
    i = data.draw(st.integers(0, len(b) - 1))
    b[i] ^= 1 << data.draw(st.integers(0, 7))
    return bytes(b)
