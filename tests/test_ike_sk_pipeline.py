"""IkeDecryptor / Ikev1Decryptor over the real pipeline (capture -> demux -> parse_ike -> crypto).

Compared with tshark's view of the same captures (<capture>.expected.json, with keys).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from conftest import ike_messages, needs_tshark
from test_ike_sk import CORPUS, V2_CAPTURES, table_keys
from test_ikev1_crypto import V1_CAPTURES, table

from ipsecscope.crypto.ike_sk import IkeDecryptor
from ipsecscope.decode.ike import parse_ike
from ipsecscope.keys import load_keys
from ipsecscope.model.ike import AuthPayload, CertPayload, HashPayload, IkeMessage, SaPayload
from ipsecscope.model.keys import IkeSaKeys
from ipsecscope.model.packets import IkeDatagram


class Keys:
    """Both tables, looked up the way KeyStore.ike_lookup / ikev1_lookup do."""

    def __init__(self, v2: dict[tuple[bytes, bytes], IkeSaKeys] | None = None) -> None:
        self.v2 = table_keys() if v2 is None else v2
        self.v1 = table()

    def ike_lookup(self, spi_i: bytes, spi_r: bytes) -> IkeSaKeys | None:
        return self.v2.get((spi_i, spi_r))

    def ikev1_lookup(self, cookie_i: bytes):
        return self.v1.ikev1_lookup(cookie_i)


def store():
    """The real KeyStore with Wireshark's two IKE key tables."""
    return load_keys([CORPUS / "ikev2_decryption_table.tmpl", CORPUS / "ikev1_decryption_table.tmpl"])


def messages(capture: str) -> list[IkeMessage]:
    return ike_messages(CORPUS / capture)


def tshark_types(names: list[str]) -> list[int]:
    return [int(n.rsplit("(", 1)[1].rstrip(")")) for n in names if not n.startswith(("Proposal", "Transform"))]


@pytest.mark.parametrize("capture", V2_CAPTURES)
def test_v2_pipeline_matches_tshark(capture: str) -> None:
    exp = json.loads((CORPUS / f"{capture}.expected.json").read_text())
    by_frame = {m["frame"]: m for m in exp["passes"]["with_keys"]["ike"]["message_list"]}
    d = IkeDecryptor(store())
    auth = []
    for msg in messages(capture):
        out = d.decrypt(msg)
        sk = by_frame[msg.frame].get("sk")
        if sk is None:
            assert out is msg
            continue
        assert out.decrypted and out.malformed is None
        assert out.icv_ok is {"correct": True, "not_validated": None}[sk["icd"]]
        assert [p.type for p in out.inner] == tshark_types(sk["inner_payloads"])
        auth += [p.data.hex() for p in out.inner if isinstance(p, AuthPayload)]
        assert msg.inner == () and not msg.decrypted  # the input is left alone (a copy is returned)
    assert exp["upstream_test"]["expect_contains"] in auth
    assert d.stats.decrypted == sum(exp["passes"]["with_keys"]["ike"]["sk_icd_verdicts"].values())


def test_v2_wrong_or_missing_keys_never_raise() -> None:
    good = table_keys()
    wrong = {k: replace(v, sk_ei=bytes(len(v.sk_ei)), sk_er=bytes(len(v.sk_er)), sk_ai=bytes(len(v.sk_ai)),
                     sk_ar=bytes(len(v.sk_ar))) for k, v in good.items()}
    d = IkeDecryptor(Keys(wrong))
    seen = 0
    for capture in V2_CAPTURES:
        for msg in messages(capture):
            if not msg.encrypted:
                continue
            out = d.decrypt(msg)
            assert not out.decrypted and out.inner == ()
            if "ccm12-2" in capture:  # "no checking": garbage padding at best, never an ICV verdict
                assert out.icv_ok is None
            else:
                assert out.icv_ok is False and "mismatch" in (out.crypto_note or "")
            seen += 1
    assert d.stats.icv_failed + d.stats.errors == seen
    d = IkeDecryptor(Keys({}))
    msgs = [m for m in messages("ikev2-decrypt-aes256gcm16.pcap") if m.encrypted]
    outs = [d.decrypt(m) for m in msgs]
    assert all(o.icv_ok is None and not o.decrypted and o.crypto_note for o in outs)
    assert d.stats.no_key == len(msgs)


@pytest.mark.parametrize("capture", V1_CAPTURES)
def test_v1_pipeline_matches_tshark(capture: str) -> None:
    exp = json.loads((CORPUS / f"{capture}.expected.json").read_text())
    by_frame = {m["frame"]: m for m in exp["passes"]["with_keys"]["ike"]["message_list"]}
    d = IkeDecryptor(store())  # hands IKEv1 to its Ikev1Decryptor
    outs = {m.frame: d.decrypt(m) for m in messages(capture)}
    for frame, out in outs.items():
        want = by_frame[frame].get("ikev1_encrypted")
        if want is None:
            assert not out.decrypted
            continue
        assert out.decrypted and out.icv_ok is None
        types = [p.type for p in out.inner]
        if capture == "ikev1-certs.pcap" and frame == 8:
            # tshark garbles the retransmission (only "Hash" survives); we decrypt it like frame 7
            assert types == [p.type for p in outs[7].inner] and "retransmission" in out.crypto_note
            continue
        assert types == tshark_types(want["inner_payloads"])
    hashes = {f: p.data.hex() for f, o in outs.items() for p in o.inner if isinstance(p, HashPayload) and p.type == 8}
    if capture == "ikev1-bug-12610.pcapng.gz":
        assert hashes[9].startswith("b52521f774967402c9f6cee95fd17e5b")
        spis = [pr.spi.hex() for f in (14, 15) for p in outs[f].inner if isinstance(p, SaPayload)
                for pr in p.proposals]
        assert spis == ["070883c2", "c254fe64"]
    elif capture == "ikev1-bug-12620.pcapng.gz":
        assert hashes[4].startswith("40043b640f4373250d5ac3a1fb63153c")
    else:
        certs = [p for p in outs[5].inner if isinstance(p, CertPayload) and p.type == 6]
        assert any(b"OpenSwan" in c.data for c in certs)


# ---- SKF (RFC 7383) -------------------------------------------------------------------------
# No corpus capture is fragmented, so build one: an IKE_AUTH request whose inner payloads (IDi,
# Notify, Delete) are split over three AES-GCM-16 encrypted fragments, each sealed on its own with
# its own IKE header + SKF header (+ fragment fields) as AAD (RFC 7383 §2.5).


def _skf_fragments(key: bytes, inner_first: int, plain: bytes, n: int, msg_id: int = 1) -> list[bytes]:
    import os
    import struct

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    spi_i, spi_r = bytes.fromhex("a1a2a3a4a5a6a7a8"), bytes.fromhex("b1b2b3b4b5b6b7b8")
    size = -(-len(plain) // n)
    out = []
    for i in range(n):
        chunk = plain[i * size:(i + 1) * size] + b"\x00"  # Pad Length 0
        iv = os.urandom(8)
        sk_len = 8 + 8 + len(chunk) + 16
        hdr = spi_i + spi_r + struct.pack("!BBBBII", 53, 0x20, 35, 0x08, msg_id, 28 + sk_len)
        skf = struct.pack("!BBHHH", inner_first if i == 0 else 0, 0, sk_len, i + 1, n)
        ct = AESGCM(key[:-4]).encrypt(key[-4:] + iv, chunk, hdr + skf)
        out.append(hdr + skf + iv + ct)
    return out


def test_skf_reassembly() -> None:
    import os
    import struct

    idi = struct.pack("!BBHB3x", 41, 0, 12, 2) + b"test"  # IDi FQDN "test", next = Notify
    notify = struct.pack("!BBHBBH", 42, 0, 8, 0, 0, 16430)  # N(IKEV2_FRAGMENTATION_SUPPORTED...)
    delete = struct.pack("!BBHBBH", 0, 0, 8, 1, 0, 0)  # Delete IKE
    plain = idi + notify + delete
    key = os.urandom(36)
    v2 = {(bytes.fromhex("a1a2a3a4a5a6a7a8"), bytes.fromhex("b1b2b3b4b5b6b7b8")):
          IkeSaKeys(bytes.fromhex("a1a2a3a4a5a6a7a8"), bytes.fromhex("b1b2b3b4b5b6b7b8"), 20, key, os.urandom(36), 0)}
    frags = _skf_fragments(key, 35, plain, 3)
    d = IkeDecryptor(Keys(v2))
    # fragments arrive out of order: 2, 3, 1; the one completing the set carries the payloads
    outs = []
    for frame, i in zip((10, 11, 12), (1, 2, 0), strict=True):
        msg = parse_ike(IkeDatagram(frame, 0.0, "198.18.0.1", "198.18.0.2", 4500, 4500, frags[i]))
        assert msg.malformed is None and msg.payloads[0].type == 53
        outs.append(d.decrypt(msg))
    assert [o.decrypted for o in outs] == [True, True, True]
    assert outs[0].inner == () and "fragment 2 of 3" in outs[0].crypto_note
    assert [p.type for p in outs[2].inner] == [35, 41, 42]
    assert outs[2].icv_ok is True and "frames 10, 11, 12" in outs[2].crypto_note
    assert d.stats.reassembled == 1 and d.stats.fragments == 3
    # a tampered fragment fails on its own and the set never completes
    d = IkeDecryptor(Keys(v2))
    bad = bytearray(frags[1])
    bad[-1] ^= 1
    res = [d.decrypt(parse_ike(IkeDatagram(f, 0.0, "a", "b", 4500, 4500, bytes(b))))
           for f, b in ((1, frags[0]), (2, bytes(bad)), (3, frags[2]))]
    assert [r.icv_ok for r in res] == [True, False, True] and all(r.inner == () for r in res)


@needs_tshark
@pytest.mark.parametrize("capture", V2_CAPTURES)
def test_v2_auth_and_ts_match_live_tshark(capture: str, tmp_path) -> None:
    import os
    import shutil
    import subprocess

    from ipsecscope.model.ike import TsPayload

    for name in ("esp_sa", "ikev1_decryption_table", "ikev2_decryption_table"):
        shutil.copy(CORPUS / f"{name}.tmpl", tmp_path / name)
    out = subprocess.run(
        ["tshark", "-r", str(CORPUS / capture), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
         "-e", "frame.number", "-e", "isakmp.auth.data", "-e", "isakmp.ts.start_ipv4"],
        capture_output=True, text=True, check=True, env={**os.environ, "WIRESHARK_CONFIG_DIR": str(tmp_path)},
    ).stdout
    theirs = {int(f): (a, t) for f, a, t in (line.split("\t") for line in out.splitlines())}
    d = IkeDecryptor(store())
    for msg in messages(capture):
        o = d.decrypt(msg)
        auth = ",".join(p.data.hex() for p in o.inner if isinstance(p, AuthPayload))
        ts = ",".join(s.start_addr for p in o.inner if isinstance(p, TsPayload) for s in p.selectors)
        assert (auth, ts) == theirs[msg.frame], f"frame {msg.frame}"
