"""ESN high-bit inference (RFC 4303 §2.2.1, Appendix A) on packets encrypted with known keys:
the counter wraps, packets arrive late, a capture starts after many wraps, an SA turns out not to
use ESN, the key is wrong. The ICV is the judge; crypto.esn only orders the candidates."""

from __future__ import annotations

import os
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ipsecscope.crypto import esn
from ipsecscope.crypto.esp import EspDecryptor
from ipsecscope.keys import KeyStore
from ipsecscope.model.iana import EncrTransform as E
from ipsecscope.model.iana import IntegTransform as I
from ipsecscope.model.keys import EspSaKeys
from ipsecscope.model.packets import EspPacket

W = 1 << 32


def test_candidates_follow_appendix_a() -> None:
    assert esn.candidates(5, 6)[0] == 0  # just ahead: same high bits
    assert esn.candidates(W - 3, 2)[0] == 1  # far below the top: the counter wrapped
    assert esn.candidates(W + 2, W - 10 & 0xFFFFFFFF)[0] == 0  # far above: late, from before the wrap
    assert esn.candidates(3 * W + 7, 4)[0] == 3
    assert set(esn.candidates(3 * W + 7, 4)) == {2, 3, 4}
    assert 0 <= min(esn.candidates(5, W - 1)) and esn.candidates(5, W - 1)[0] == 0  # never negative


def _packets(key: bytes, salt: bytes, seqs: list[int], use_esn: bool, spi: int = 0x42):
    g = AESGCM(key)
    out = []
    for i, s in enumerate(seqs):
        iv = struct.pack("!Q", i + 1)
        n = 20 + i % 7  # an IPv4 header (tunnel mode: the payload must hold the packet it names)
        plain = bytes((0x45, 0)) + n.to_bytes(2, "big") + bytes(n - 4) + bytes((0, 4))  # pad 0, next header 4
        aad = struct.pack("!III", spi, s >> 32, s & 0xFFFFFFFF) if use_esn else struct.pack("!II", spi, s)
        data = struct.pack("!II", spi, s & 0xFFFFFFFF) + iv + g.encrypt(salt + iv, plain, aad)
        out.append(EspPacket(i + 1, 0.0, "198.18.0.1", "198.18.0.2", spi, s & 0xFFFFFFFF, data))
    return out


def _run(seqs: list[int], use_esn: bool, keys_esn: bool | None = None, wrong: bool = False):
    key, salt = os.urandom(16), os.urandom(4)
    keys = EspSaKeys(0x42, E.ENCR_AES_GCM_16, (os.urandom(16) if wrong else key) + salt, I.NONE, b"", esn=keys_esn)
    store = KeyStore()
    store.add_esp(keys)
    d = EspDecryptor(store)
    return [d.decrypt(p) for p in _packets(key, salt, seqs, use_esn)], d


def test_wrap_and_late_packets() -> None:
    seqs = [W - 3, W - 2, W - 1, W, W + 1, W - 4, W + 2, 2 * W + 5]
    res, d = _run(seqs[:-1], True)
    assert [r.status for r in res] == ["ok"] * 7
    assert [r.seq_hi for r in res] == [s >> 32 for s in seqs[:-1]]
    (_, st), = d.stats.items()
    assert st.esn is True and st.top == W + 2 and st.seq_hi == 1


def test_capture_starting_after_many_wraps() -> None:
    seqs = [9 * W + 100 + i for i in range(5)]
    res, _ = _run(seqs, True)
    assert [r.seq_hi for r in res] == [9] * 5 and all(r.esn for r in res)


def test_non_esn_sa_is_recognised() -> None:
    res, d = _run([1, 2, 3], False)
    assert [r.status for r in res] == ["ok"] * 3 and res[0].esn is False
    (_, st), = d.stats.items()
    assert st.esn is False


def test_configured_esn_skips_the_no_esn_attempt() -> None:
    res, _ = _run([W + 1, W + 2], True, keys_esn=True)
    assert [r.seq_hi for r in res] == [1, 1]
    res, _ = _run([1, 2], False, keys_esn=True)  # told ESN but it is not: every ICV fails
    assert [r.status for r in res] == ["icv_failed"] * 2


def test_wrong_key_is_counted_and_search_is_bounded() -> None:
    res, d = _run([W + i for i in range(20)], True, wrong=True)
    assert {r.status for r in res} == {"icv_failed"}
    (_, st), = d.stats.items()
    assert st.icv_failed == 20 and st.decrypted == 0 and st.esn is None
    assert "wrong key" in res[0].reason


def test_beyond_search_range_fails_without_history() -> None:
    res, _ = _run([(esn.SEARCH_HI + 1) * W + 1], True)
    assert res[0].status == "icv_failed"
