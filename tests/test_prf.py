"""PRFs and prf+ against published vectors (RFC 3566/4434 XCBC, RFC 4493/4615 CMAC, RFC 4868 HMAC-SHA2).

The vectors are the RFC ones as strongSwan's test_vectors plugin carries them
(src/libstrongswan/plugins/test_vectors/test_vectors/{aes_xcbc,aes_cmac,sha2_hmac}.c).
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from ipsecscope.crypto.prf import mac, prf, prf_plus
from ipsecscope.errors import UnknownAlgorithmError
from ipsecscope.model.iana import IntegTransform as I
from ipsecscope.model.iana import PrfTransform as P

K16 = bytes(range(16))
S20 = bytes(range(20))


@pytest.mark.parametrize(("key", "seed", "out"), [
    # RFC 3566 test cases 1-5 (full 128-bit output = PRF-128)
    (K16, b"", "75f0251d528ac01c4573dfd584d79f29"),
    (K16, bytes(range(3)), "5b376580ae2f19afe7219ceef172756f"),
    (K16, bytes(range(16)), "d2a246fa349b68a79998a4394ff7a263"),
    (K16, S20, "47f51b4564966215b8985c63055ed308"),
    (K16, bytes(range(32)), "f54f0ec8d2b9f3d36807734bd5283fd4"),
    # RFC 4434 §4: 10-byte key (zero-padded) and 18-byte key (reduced by XCBC(0^128, key))
    (bytes(range(10)), S20, "0fa087af7d866e7653434e602fdde835"),
    (K16 + b"\xed\xcb", S20, "8cd3c93ae598a9803006ffb67c40e9e4"),
])
def test_aes_xcbc_prf(key: bytes, seed: bytes, out: str) -> None:
    assert prf(P.PRF_AES128_XCBC, key, seed).hex() == out


@pytest.mark.parametrize(("key", "seed", "out"), [
    # RFC 4493 examples 1-2
    (bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"), b"", "bb1d6929e95937287fa37d129b756746"),
    (bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"), bytes.fromhex("6bc1bee22e409f96e93d7e117393172a"),
     "070a16b46b4d4144f79bdd9dd04a287c"),
    # RFC 4615 §4: 18-, 16- and 10-byte keys
    (K16 + b"\xed\xcb", S20, "84a348a4a45d235babfffc0d2b4da09a"),
    (K16, S20, "980ae87b5f4c9c5214f5b6a8455e4c2d"),
    (bytes(range(10)), S20, "290d9e112edb09ee141fcf64c0b72f3d"),
])
def test_aes_cmac_prf(key: bytes, seed: bytes, out: str) -> None:
    assert prf(P.PRF_AES128_CMAC, key, seed).hex() == out


@pytest.mark.parametrize(("prf_id", "key", "seed", "out"), [
    # RFC 4868 §2.7.1 PRF test cases
    (P.PRF_HMAC_SHA2_256, b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (P.PRF_HMAC_SHA2_384, b"\x0b" * 20, b"Hi There",
     "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6"),
    (P.PRF_HMAC_SHA2_512, b"\x0b" * 20, b"Hi There",
     "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
     "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"),
    (P.PRF_HMAC_SHA2_256, b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (P.PRF_HMAC_SHA2_256, b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
])
def test_hmac_sha2_prf(prf_id: int, key: bytes, seed: bytes, out: str) -> None:
    assert prf(prf_id, key, seed).hex() == out


@pytest.mark.parametrize(("integ", "key", "data", "icv"), [
    # RFC 4868 §2.7.2 authenticator test cases (truncated ICVs)
    (I.AUTH_HMAC_SHA2_256_128, b"\x0b" * 32, b"Hi There", "198a607eb44bfbc69903a0f1cf2bbdc5"),
    (I.AUTH_HMAC_SHA2_384_192, b"\x0b" * 48, b"Hi There", "b6a8d5636f5c6a7224f9977dcf7ee6c7fb6d0c48cbdee973"),
    (I.AUTH_HMAC_SHA2_512_256, b"Jefe" * 16, b"what do ya want for nothing?",
     "cb370917ae8a7ce28cfd1d8f4705d6141c173b2a9362c15df235dfb251b15454"),
    # RFC 3566 test case 4 (96-bit truncation), RFC 4494 test case 2
    (I.AUTH_AES_XCBC_96, K16, S20, "47f51b4564966215b8985c63"),
    (I.AUTH_AES_CMAC_96, bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"),
     bytes.fromhex("6bc1bee22e409f96e93d7e117393172a"), "070a16b46b4d4144f79bdd9d"),
])
def test_integrity_macs(integ: int, key: bytes, data: bytes, icv: str) -> None:
    assert mac(integ, key, data).hex() == icv


def test_prf_plus_definition() -> None:
    # RFC 7296 §2.13 spelled out: T1 = prf(K, S|0x01), T2 = prf(K, T1|S|0x02), ...
    key, seed = b"k" * 20, b"seed material"
    t1 = hmac.new(key, seed + b"\x01", hashlib.sha1).digest()
    t2 = hmac.new(key, t1 + seed + b"\x02", hashlib.sha1).digest()
    t3 = hmac.new(key, t2 + seed + b"\x03", hashlib.sha1).digest()
    assert prf_plus(P.PRF_HMAC_SHA1, key, seed, 50) == (t1 + t2 + t3)[:50]
    # prefix property: asking for less returns the head of the same stream
    assert prf_plus(P.PRF_HMAC_SHA1, key, seed, 7) == t1[:7]


def test_prf_plus_xcbc_and_limit() -> None:
    out = prf_plus(P.PRF_AES128_XCBC, K16, S20, 48)
    t1 = prf(P.PRF_AES128_XCBC, K16, S20 + b"\x01")
    assert out[:16] == t1
    assert out[16:32] == prf(P.PRF_AES128_XCBC, K16, t1 + S20 + b"\x02")
    with pytest.raises(ValueError, match="counter"):
        prf_plus(P.PRF_AES128_XCBC, K16, S20, 16 * 255 + 1)


def test_unknown_prf_is_typed() -> None:
    with pytest.raises(UnknownAlgorithmError, match="PRF_HMAC_TIGER"):
        prf(P.PRF_HMAC_TIGER, b"k", b"d")
    with pytest.raises(UnknownAlgorithmError):
        mac(I.AUTH_DES_MAC, b"k", b"d")
