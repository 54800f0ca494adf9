"""IKEv2 SK payload decryption (RFC 7296 §3.14, RFC 5282, RFC 5930, RFC 7634) on the Wireshark corpus.

Every ikev2-decrypt-* capture is decrypted with the keys of test/config/ikev2_decryption_table
(Wireshark's own key table) and compared with what tshark 4.0.17 reports in <capture>.expected.json:
the AUTH data of the upstream test, the encrypted payload types and the ICD verdicts.
"""

from __future__ import annotations

import csv
import json
import os
import struct
from pathlib import Path

import pytest
from conftest import CORPUS, corpus_captures, need
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, ChaCha20Poly1305

from ipsecscope.crypto.ike_sk import decrypt_sk, find_sk, icv_length, integrity_checked
from ipsecscope.crypto.prf import mac
from ipsecscope.errors import DecryptError, IntegrityError, UnknownAlgorithmError
from ipsecscope.model.iana import EncrTransform as E
from ipsecscope.model.iana import IntegTransform as I
from ipsecscope.model.keys import IkeSaKeys

V2_CAPTURES = [p.name for p in corpus_captures() if p.name.startswith("ikev2-decrypt-")]

# Algorithm names of Wireshark's ikev2_decryption_table as they appear in the .tmpl file.
_ENCR = {
    "3DES [RFC2451]": E.ENCR_3DES,
    "AES-CCM-128 with 12 octet ICV [RFC5282]": E.ENCR_AES_CCM_12,
    "AES-CTR-128 [RFC5930]": E.ENCR_AES_CTR,
    "AES-CTR-192 [RFC5930]": E.ENCR_AES_CTR,
    "AES-CBC-256 [RFC3602]": E.ENCR_AES_CBC,
    "AES-CCM-256 with 16 octet ICV [RFC5282]": E.ENCR_AES_CCM_16,
    "AES-GCM-256 with 8 octet ICV [RFC5282]": E.ENCR_AES_GCM_8,
    "AES-GCM-256 with 16 octet ICV [RFC5282]": E.ENCR_AES_GCM_16,
}
_INTEG = {  # name -> (integ, check_integrity, icv_len)
    "HMAC_SHA1_160 [RFC4595]": (I.AUTH_HMAC_SHA1_160, True, None),
    "HMAC_SHA2_512_256 [RFC4868]": (I.AUTH_HMAC_SHA2_512_256, True, None),
    "HMAC_SHA2_256_128 [RFC4868]": (I.AUTH_HMAC_SHA2_256_128, True, None),
    "NONE [RFC4306]": (I.NONE, True, None),
    "ANY 96-bits of Authentication [No Checking]": (I.NONE, False, 12),
}


def table_keys() -> dict[tuple[bytes, bytes], IkeSaKeys]:
    out = {}
    with open(CORPUS / "ikev2_decryption_table.tmpl") as f:
        for row in csv.reader(f):
            if not row or row[0].startswith("#") or row[4].startswith("NULL"):
                continue
            integ, check, icv = _INTEG[row[7]]
            k = IkeSaKeys(bytes.fromhex(row[0]), bytes.fromhex(row[1]), _ENCR[row[4]], bytes.fromhex(row[2]),
                          bytes.fromhex(row[3]), integ, bytes.fromhex(row[5]), bytes.fromhex(row[6]),
                          check_integrity=check, icv_len=icv)
            out[(k.spi_i, k.spi_r)] = k
    return out


def ike_datagrams(path: Path) -> list[tuple[int, bytes]]:
    """(frame number, IKE message bytes) for every IKE datagram; non-ESP marker removed."""
    from scapy.all import UDP, rdpcap

    out = []
    for i, p in enumerate(rdpcap(str(path)), 1):
        if UDP not in p:
            continue
        d = bytes(p[UDP].payload)
        if 4500 in (p[UDP].sport, p[UDP].dport):
            if d[:4] != b"\0\0\0\0":
                continue
            d = d[4:]
        out.append((i, d))
    return out


def payload_chain(first: int, data: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of each payload of a generic-header chain (test-side walker)."""
    out, nxt, off = [], first, 0
    while nxt:
        n, _c, ln = struct.unpack_from("!BBH", data, off)
        out.append((nxt, data[off + 4:off + ln]))
        nxt, off = n, off + ln
    assert off == len(data)
    return out


def expected(capture: str) -> dict:
    return json.loads((CORPUS / f"{capture}.expected.json").read_text())


@pytest.fixture(scope="module")
def keys() -> dict[tuple[bytes, bytes], IkeSaKeys]:
    need(CORPUS)  # module-scoped: set up before the autouse fixture could skip
    return table_keys()


@pytest.mark.parametrize("capture", V2_CAPTURES)
def test_corpus_decrypts_like_tshark(capture: str, keys) -> None:
    exp = expected(capture)
    by_frame = {m["frame"]: m for m in exp["passes"]["with_keys"]["ike"]["message_list"]}
    auth_seen = []
    decrypted = 0
    for frame, msg in ike_datagrams(CORPUS / capture):
        sk = find_sk(msg)
        want = by_frame[frame].get("sk")
        if sk is None:
            assert want is None
            continue
        k = keys[(msg[:8], msg[8:16])]
        first, plain = decrypt_sk(msg, sk[0], k, bool(msg[19] & 0x08))
        decrypted += 1
        chain = payload_chain(first, plain)
        # tshark lists proposal/transform substructures (2, 3) among the payloads; we keep them in the SA.
        types = [int(t.rsplit("(", 1)[1].rstrip(")")) for t in want["inner_payloads"]]
        assert [t for t, _ in chain] == [t for t in types if t not in (2, 3)], f"frame {frame}"
        verdict = "correct" if integrity_checked(k) else "not_validated"
        assert want["icd"] == verdict
        auth_seen += [body[4:].hex() for t, body in chain if t == 39]
    assert decrypted == sum(exp["passes"]["with_keys"]["ike"]["sk_icd_verdicts"].values())
    assert exp["upstream_test"]["expect_contains"] in auth_seen


def test_ccm12_2_is_ctr_without_checking(keys) -> None:
    # Wireshark's row decrypts the CCM capture as AES-CTR with "ANY 96-bits [No Checking]".
    k = keys[(bytes.fromhex("a2926ae833c6f138"), bytes.fromhex("5464c57d0dc5e272"))]
    assert not integrity_checked(k) and icv_length(k) == 12


def _first_sk(capture: str, keys) -> tuple[bytes, int, IkeSaKeys]:
    for _frame, msg in ike_datagrams(CORPUS / capture):
        sk = find_sk(msg)
        if sk:
            return msg, sk[0], keys[(msg[:8], msg[8:16])]
    raise AssertionError("no SK payload")


def _flip(b: bytes, i: int) -> bytes:
    return b[:i] + bytes((b[i] ^ 0x01,)) + b[i + 1:]


@pytest.mark.parametrize("capture", [c for c in V2_CAPTURES if "ccm12-2" not in c])
def test_wrong_key_or_corruption_is_integrity_error(capture: str, keys) -> None:
    msg, off, k = _first_sk(capture, keys)
    decrypt_sk(msg, off, k, True)  # sanity: the right key works
    if k.integ == I.NONE:  # AEAD: a wrong SK_ei fails the tag
        bad = IkeSaKeys(k.spi_i, k.spi_r, k.encr, _flip(k.sk_ei, 0), k.sk_er, k.integ)
    else:
        bad = IkeSaKeys(k.spi_i, k.spi_r, k.encr, k.sk_ei, k.sk_er, k.integ, _flip(k.sk_ai, 3), k.sk_ar)
    with pytest.raises(IntegrityError):
        decrypt_sk(msg, off, bad, True)
    # the responder's keys on the initiator's message
    with pytest.raises(IntegrityError):
        decrypt_sk(msg, off, k, False)
    # one flipped bit in the IKE header (covered by ICV / AAD), and one in the ciphertext
    with pytest.raises(IntegrityError):
        decrypt_sk(_flip(msg, 20), off, k, True)
    with pytest.raises(IntegrityError):
        decrypt_sk(_flip(msg, len(msg) - 20), off, k, True)


def test_truncated_message_is_decrypt_error(keys) -> None:
    msg, off, k = _first_sk("ikev2-decrypt-aes256cbc.pcapng", keys)
    with pytest.raises(DecryptError) as e:
        decrypt_sk(msg[:-40], off, k, True)
    assert not isinstance(e.value, IntegrityError) and "truncated" in str(e.value)


def test_bad_key_length_is_decrypt_error(keys) -> None:
    msg, off, k = _first_sk("ikev2-decrypt-aes256gcm16.pcap", keys)
    bad = IkeSaKeys(k.spi_i, k.spi_r, k.encr, k.sk_ei[:-1], k.sk_er, k.integ)
    with pytest.raises(DecryptError, match="check the key table"):
        decrypt_sk(msg, off, bad, True)


def test_unknown_cipher_is_typed(keys) -> None:
    msg, off, k = _first_sk("ikev2-decrypt-aes256gcm16.pcap", keys)
    bad = IkeSaKeys(k.spi_i, k.spi_r, E.ENCR_CAMELLIA_CBC, k.sk_ei, k.sk_er, I.AUTH_HMAC_SHA1_96)
    with pytest.raises(UnknownAlgorithmError, match="ENCR_CAMELLIA_CBC"):
        decrypt_sk(msg, off, bad, True)


# ---- algorithms the corpus does not cover: an independent test-side encoder ------------------
# Builds an INFORMATIONAL request with one Delete(IKE) payload exactly as RFC 7296 §3.14 /
# RFC 5282 §5 describe, with the cryptography library directly, then decrypts it.

INNER = bytes.fromhex("0000000801000000")  # Delete payload, protocol IKE, no SPIs
SPI_I, SPI_R = bytes.fromhex("0102030405060708"), bytes.fromhex("1112131415161718")


def _encode(encr: int, sk_e: bytes, integ: int, sk_a: bytes, iv_len: int, block: int, icv_len: int,
            salt_len: int, skf: tuple[int, int] | None = None) -> tuple[bytes, int]:
    iv = os.urandom(iv_len)
    pad = (-(len(INNER) + 1)) % block
    plain = INNER + bytes(range(1, pad + 1)) + bytes((pad,))
    sk_type = 53 if skf else 46
    frag = struct.pack("!HH", *skf) if skf else b""
    sk_len = 4 + len(frag) + iv_len + len(plain) + icv_len
    total = 28 + sk_len
    hdr = SPI_I + SPI_R + struct.pack("!BBBBII", sk_type, 0x20, 37, 0x08, 7, total)
    sk_hdr = struct.pack("!BBH", 42, 0, sk_len) + frag
    aad = hdr + sk_hdr
    key, salt = (sk_e[:-salt_len], sk_e[-salt_len:]) if salt_len else (sk_e, b"")
    if encr in (E.ENCR_AES_GCM_8, E.ENCR_AES_GCM_12, E.ENCR_AES_GCM_16):
        e = Cipher(algorithms.AES(key), modes.GCM(salt + iv)).encryptor()
        e.authenticate_additional_data(aad)
        ct = e.update(plain) + e.finalize() + e.tag[:icv_len]
    elif encr in (E.ENCR_AES_CCM_8, E.ENCR_AES_CCM_12, E.ENCR_AES_CCM_16):
        ct = AESCCM(key, tag_length=icv_len).encrypt(salt + iv, plain, aad)
    elif encr == E.ENCR_CHACHA20_POLY1305:
        ct = ChaCha20Poly1305(key).encrypt(salt + iv, plain, aad)
    elif encr == E.ENCR_AES_CTR:
        e = Cipher(algorithms.AES(key), modes.CTR(salt + iv + b"\0\0\0\1")).encryptor()
        ct = e.update(plain)
    else:
        e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        ct = e.update(plain)
    msg = aad + iv + ct
    if icv_len and encr not in (E.ENCR_AES_GCM_8, E.ENCR_AES_GCM_12, E.ENCR_AES_GCM_16, E.ENCR_AES_CCM_8,
                                E.ENCR_AES_CCM_12, E.ENCR_AES_CCM_16, E.ENCR_CHACHA20_POLY1305):
        msg += mac(integ, sk_a, msg)
    assert len(msg) == total
    return msg, 28


@pytest.mark.parametrize(("encr", "klen", "integ", "alen", "iv", "block", "icv", "salt"), [
    (E.ENCR_CHACHA20_POLY1305, 32, I.NONE, 0, 8, 1, 16, 4),
    (E.ENCR_AES_GCM_12, 16, I.NONE, 0, 8, 1, 12, 4),
    (E.ENCR_AES_GCM_16, 24, I.NONE, 0, 8, 1, 16, 4),
    (E.ENCR_AES_CCM_8, 16, I.NONE, 0, 8, 1, 8, 3),
    (E.ENCR_AES_CCM_12, 24, I.NONE, 0, 8, 1, 12, 3),
    (E.ENCR_AES_CBC, 16, I.AUTH_AES_XCBC_96, 16, 16, 16, 12, 0),
    (E.ENCR_AES_CBC, 16, I.AUTH_AES_CMAC_96, 16, 16, 16, 12, 0),
    (E.ENCR_AES_CBC, 24, I.AUTH_HMAC_MD5_96, 16, 16, 16, 12, 0),
    (E.ENCR_AES_CBC, 32, I.AUTH_HMAC_MD5_128, 16, 16, 16, 16, 0),
    (E.ENCR_AES_CBC, 16, I.AUTH_HMAC_SHA1_96, 20, 16, 16, 12, 0),
    (E.ENCR_AES_CBC, 16, I.AUTH_HMAC_SHA2_384_192, 48, 16, 16, 24, 0),
    (E.ENCR_AES_CTR, 32, I.AUTH_HMAC_SHA2_256_128, 32, 8, 1, 16, 4),
])
def test_other_algorithms_roundtrip(encr, klen, integ, alen, iv, block, icv, salt) -> None:
    sk_e, sk_a = os.urandom(klen + salt), os.urandom(alen)
    msg, off = _encode(encr, sk_e, integ, sk_a, iv, block, icv, salt)
    k = IkeSaKeys(SPI_I, SPI_R, encr, sk_e, os.urandom(klen + salt), integ, sk_a, os.urandom(alen))
    assert find_sk(msg) == (28, 46, 42)
    assert decrypt_sk(msg, off, k, True) == (42, INNER)
    with pytest.raises(IntegrityError):
        decrypt_sk(_flip(msg, 22), off, k, True)


def test_skf_fragment_fields_are_in_the_aad() -> None:
    # RFC 7383 §2.5: for AEAD the Fragment Number and Total Fragments are part of the AAD.
    sk_e = os.urandom(36)
    msg, off = _encode(E.ENCR_AES_GCM_16, sk_e, I.NONE, b"", 8, 1, 16, 4, skf=(1, 1))
    k = IkeSaKeys(SPI_I, SPI_R, E.ENCR_AES_GCM_16, sk_e, b"", I.NONE)
    assert find_sk(msg) == (28, 53, 42)
    assert decrypt_sk(msg, off, k, True) == (42, INNER)
    assert decrypt_sk(msg, off, k, True, skf=True) == (42, INNER)
    with pytest.raises(IntegrityError):
        decrypt_sk(_flip(msg, 33), off, k, True)  # total fragments field


def test_decrypt_message_finds_sk_and_direction(keys) -> None:
    from ipsecscope.crypto.ike_sk import decrypt_message

    n = 0
    for capture in V2_CAPTURES:
        for _frame, msg in ike_datagrams(CORPUS / capture):
            k = keys.get((msg[:8], msg[8:16]))
            if find_sk(msg) is None:
                if k is not None:
                    with pytest.raises(DecryptError, match="no SK"):
                        decrypt_message(msg, k)
                continue
            off = find_sk(msg)[0]
            assert decrypt_message(msg, k) == decrypt_sk(msg, off, k, bool(msg[19] & 0x08))
            n += 1
    assert n == 28
