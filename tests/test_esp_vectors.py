"""ESP crypto against published known-answer vectors, including vectors that must FAIL.

Sources (values transcribed from the documents):
* draft-mcgrew-gcm-test-01 §3-4 "Packet Vectors": whole ESP packets with AES-GCM-16, some with
  64-bit extended sequence numbers (12-byte AAD, RFC 4106 §5).
* RFC 7634 Appendix A: an ESP packet with ChaCha20-Poly1305.
* RFC 3566 §4.6: AES-XCBC-MAC test cases (full 128-bit output; the ESP ICV is the first 96 bits).
"""

from __future__ import annotations

import pytest

from ipsecscope.crypto.esp import decrypt
from ipsecscope.crypto.esp_open import _XcbcMac
from ipsecscope.errors import DecryptError, IntegrityError
from ipsecscope.model.iana import EncrTransform as E
from ipsecscope.model.iana import IntegTransform as I
from ipsecscope.model.keys import EspSaKeys


def h(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


# (key without salt, salt, seq as in the vector (4 or 8 bytes: hi|lo), ESP packet, plaintext incl. trailer)
GCM_VECTORS = [
    ("4c80cdefbb5d10da906ac73c3613a634", "2e443b68", "8765432100000000",
     """00004321000000004956ed7e3b244cfe fecf537e729d5b07dc30df528dd22b76 8d1b98736696a6fd348509fa13ceac34
     cfa2436f14a3f3cf65925bf1f4a13c5d 15b21e1884f5ff6247aeabb786b93bce 61bc17d768fd9732459018148f6cbe72
     2fd04796562dfdb4""",
     """45000048699a000080114db7c0a80102 c0a801010a9bf15638d3010000010000 00000000045f736970045f7564700373
     69700963796265726369747902646b00 0021000101020201"""),
    ("feffe9928665731c6d6a8f9467308308", "cafebabe", "0000000a",
     """0000a5f80000000afacedbaddecaf888 deb22cd9b07c72c16e3a65beeb8df304 a5a5897d33ae530f1ba76d5d114d2a5c
     3de81827c10e9a4f51330d0eec416642 cfbb85a5b47e48a4ec3b9ba95d918bd1 83b70d3aa8bc6ee4c309e9d85a41ad4a""",
     """4500003e698f000080114dccc0a80102 c0a801010a980035002a2343b2d00100 00010000000000000373697009637962
     65726369747902646b00000100010001"""),
    ("abbccddef00112233445566778899aababbccddef00112233445566778899aab", "11223344", "00000002",
     """4a2cbfe3000000020102030405060708 ff425c9b724599df7a3bcd510194e00d 6a78107f1b0b1cbf06efae9d65a5d763
     748a637985771d347f0545659f14e99d ef842d8eb335f4eecfdbf831824b4c49 15956c96""",
     """4500003069a6400080062690c0a80102 9389155e0a9e008b2dc57ee000000000 7002400020bf0000020405b401010402
     01020201"""),
    ("3de09874b388e6491988d0c3607eae1f", "57690e43", "1010101010101010",
     """42f67e3f101010104e280000a2fca1a3 fba2caa4853cf9f0f22cb10d86dd83b0 fec75691cf1a04b00d1138ec9c357917
     65acbd8701ad79845bf9fe3fba487bc9 1755e6662b4c8d0d1f5e22739530320a e0d731cc978ecafaeae88f00e80d6e48""",
     """4500003c99c300008001cb7c40679318 010101010800085c0200430061626364 65666768696a6b6c6d6e6f7071727374
     75767761626364656667686901020201"""),
    ("abbccddef00112233445566778899aababbccddef00112233445566778899aab", "73616c74", "156f3126dd0db99b",
     """17405e67dd0db99b616e640169766563 f2d69ecdbd5a0d5b8d5ef38bad4da58d 1f278fde98ef67549d524a3018d9a57f
     f4d3a31ce673119e451626c2415771e3 b7eebca614c89b35""",
     """45080028732c00004006e9f90a010612 0a01038f06b88023dd6bafbecb712602 50101f646d540001"""),
    ("7d773d00c144c525ac619d18c84a3f47", "d9664267", "ffffffff",
     "335467aeffffffff43457e9182443bc6 437f866bcb3f699fe9b0822bac961c45 04bef270",
     "01020201"),
    ("6c6567616c697a656d6172696a75616e61616e64646f69746265666f72656961", "7475726e", "ffffffffffffffff",
     """796b6963ffffffff333021696765746d f97ab2aa356d8edce17644ac8c78e25d d24dedbb29ebf1b64a274b39b49c3a86
     4cd3d78ca4ae68a32b42458fb57dbe82 1dcc63b9d0937ba2945f669368661a32 9fb4c053""",
     """45000030da3a00008001df3bc0a80005 c0a800010800c6cd0200070061626364 65666768696a6b6c6d6e6f7071727374
     01020201"""),
]


def _gcm_case(key: str, salt: str, seq: str, packet: str, plain: str):
    data = h(packet)
    esn = len(h(seq)) == 8
    hi = int.from_bytes(h(seq)[:4], "big") if esn else 0
    keys = EspSaKeys(spi=int.from_bytes(data[:4], "big"), encr=E.ENCR_AES_GCM_16, enc_key=h(key) + h(salt),
                     integ=I.NONE, auth_key=b"", esn=esn)
    return keys, data, hi, h(plain)


@pytest.mark.parametrize("vec", GCM_VECTORS, ids=lambda v: v[2])
def test_gcm_packet_vectors(vec) -> None:
    keys, data, hi, plain = _gcm_case(*vec)
    inner, nh, pad = decrypt(keys, data, seq_hi=hi)
    assert inner + bytes(range(1, pad + 1)) + bytes((pad, nh)) == plain
    assert nh == plain[-1] and pad == plain[-2]


@pytest.mark.parametrize("vec", GCM_VECTORS, ids=lambda v: v[2])
def test_gcm_packet_vectors_must_fail(vec) -> None:
    keys, data, hi, _ = _gcm_case(*vec)
    flipped = data[:-1] + bytes((data[-1] ^ 0x01,))
    with pytest.raises(IntegrityError):
        decrypt(keys, flipped, seq_hi=hi)
    # the wrong ESN choice is an integrity failure too: the high bits are in the AAD
    with pytest.raises(IntegrityError):
        decrypt(keys, data, seq_hi=hi, esn=not keys.esn)
    if keys.esn:
        with pytest.raises(IntegrityError):
            decrypt(keys, data, seq_hi=hi ^ 1)


RFC7634_PACKET = h("""01020304 00000005 1011121314151617
    24 03 94 28 b9 7f 41 7e 3c 13 75 3a 4f 05 08 7b 67 c3 52 e6 a7 fa b1 b9 82 d4 66 ef 40 7a e5 c6
    14 ee 80 99 d5 28 44 eb 61 aa 95 df ab 4c 02 f7 2a a7 1e 7c 4c 4f 64 c9 be fe 2f ac c6 38 e8 f3
    cb ec 16 3f ac 46 9b 50 27 73 f6 fb 94 e6 64 da 91 65 b8 28 29 f6 41 e0
    76 aa a8 26 6b 7f b0 f7 b1 1b 36 99 07 e1 ad 43""")
RFC7634_PLAIN = h("""45 00 00 54 a6 f2 00 00 40 01 e7 78 c6 33 64 05 c0 00 02 05 08 00 5b 7a 3a 08 00 00 55 3b ec 10
    00 07 36 27 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 20 21 22 23
    24 25 26 27 28 29 2a 2b 2c 2d 2e 2f 30 31 32 33 34 35 36 37""")
RFC7634_KEYS = EspSaKeys(spi=0x01020304, encr=E.ENCR_CHACHA20_POLY1305,
                         enc_key=bytes(range(0x80, 0xA0)) + h("a0a1a2a3"), integ=I.NONE, auth_key=b"")


def test_rfc7634_appendix_a() -> None:
    inner, nh, pad = decrypt(RFC7634_KEYS, RFC7634_PACKET)
    assert (inner, nh, pad) == (RFC7634_PLAIN, 4, 2)


def test_rfc7634_must_fail() -> None:
    bad = bytearray(RFC7634_PACKET)
    bad[-16] ^= 0x80
    with pytest.raises(IntegrityError):
        decrypt(RFC7634_KEYS, bytes(bad))
    bad = bytearray(RFC7634_PACKET)
    bad[20] ^= 0x01  # ciphertext bit flip
    with pytest.raises(IntegrityError):
        decrypt(RFC7634_KEYS, bytes(bad))
    with pytest.raises(DecryptError):
        decrypt(RFC7634_KEYS, RFC7634_PACKET[:30])  # shorter than IV + tag


K16 = bytes(range(16))


@pytest.mark.parametrize(("msg", "mac"), [
    (b"", "75f0251d528ac01c4573dfd584d79f29"),
    (bytes(range(3)), "5b376580ae2f19afe7219ceef172756f"),
    (bytes(range(16)), "d2a246fa349b68a79998a4394ff7a263"),
    (bytes(range(20)), "47f51b4564966215b8985c63055ed308"),
    (bytes(range(32)), "f54f0ec8d2b9f3d36807734bd5283fd4"),
    (bytes(range(34)), "becbb3bccdb518a30677d5481fb6b4d8"),
    (bytes(1000), "f0dafee895db30253761103b5d84528f"),
])
def test_rfc3566_xcbc(msg: bytes, mac: str) -> None:
    assert _XcbcMac(K16).mac(msg).hex() == mac
    assert _XcbcMac(K16).mac(msg + b"\x00").hex() != mac
