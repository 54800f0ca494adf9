"""IKEv1 decryption (RFC 2409 Appendix B IV chains) on Wireshark's IKEv1 captures.

Keys: test/config/ikev1_decryption_table (initiator cookie -> phase-1 encryption key). Expected
values are those of Wireshark's upstream tests (suite_decryption.py) and of tshark 4.0.17 itself.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import needs_tshark
from test_ike_sk import CORPUS, ike_datagrams

from ipsecscope.crypto.ikev1 import (
    Ikev1Decryptor,
    V1Result,
    _sa_attributes,
    cbc_decrypt,
    phase1_iv,
    phase2_iv,
)
from ipsecscope.errors import DecryptError
from ipsecscope.model.keys import Ikev1Keys

V1_CAPTURES = ["ikev1-bug-12610.pcapng.gz", "ikev1-bug-12620.pcapng.gz", "ikev1-certs.pcap"]


class TableKeys:
    """The ikev1_decryption_table rows, looked up by initiator cookie (what KeyStore.ikev1_lookup does)."""

    def __init__(self, rows: dict[bytes, bytes]) -> None:
        self.rows = rows

    def ikev1_lookup(self, cookie_i: bytes) -> Ikev1Keys | None:
        k = self.rows.get(cookie_i)
        return Ikev1Keys(cookie_i, k) if k is not None else None


def table() -> TableKeys:
    rows = {}
    for line in (CORPUS / "ikev1_decryption_table.tmpl").read_text().splitlines():
        if line and not line.startswith("#"):
            c, k = line.split(",")
            rows[bytes.fromhex(c)] = bytes.fromhex(k)
    return TableKeys(rows)


def chain(first: int, data: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of an IKEv1 payload chain; trailing bytes are CBC padding."""
    out, nxt, off = [], first, 0
    while nxt:
        n, _r, ln = struct.unpack_from("!BBH", data, off)
        assert ln >= 4 and off + ln <= len(data)
        out.append((nxt, data[off + 4:off + ln]))
        nxt, off = n, off + ln
    assert len(data) - off <= 32  # padding (some peers add up to two extra AES blocks)
    return out


def decrypt_all(capture: str) -> dict[int, tuple[V1Result, list[tuple[int, bytes]]]]:
    d = Ikev1Decryptor(table())
    out = {}
    for frame, msg in ike_datagrams(CORPUS / capture):
        r = d.feed(msg, frame)
        if r is not None:
            out[frame] = (r, chain(msg[16], r.plaintext))
    return out


def hashes(res) -> dict[int, str]:
    return {f: b.hex() for f, (_r, ch) in res.items() for t, b in ch if t == 8}


def test_simultaneous_exchanges_bug_12610() -> None:
    # Main Mode, then Config Mode / Informational / Quick Mode interleaved: one IV per Message ID.
    res = decrypt_all("ikev1-bug-12610.pcapng.gz")
    assert sorted(res) == list(range(5, 17))
    assert hashes(res)[9].startswith("b52521f774967402c9f6cee95fd17e5b")
    assert [t for t, _ in res[5][1]] == [5, 8]  # ID, HASH
    assert [t for t, _ in res[14][1]] == [8, 1, 10, 5, 5]  # HASH, SA, NONCE, ID, ID


def _esp_spis(sa_body: bytes) -> list[str]:
    off, spis = 8, []  # DOI, Situation
    while True:
        nxt, _r, ln = struct.unpack_from("!BBH", sa_body, off)
        spi_size = sa_body[off + 6]
        spis.append(sa_body[off + 8:off + 8 + spi_size].hex())
        if not nxt:
            return spis
        off += ln


def test_quick_mode_spis_bug_12610() -> None:
    # The Quick Mode (frames 14-15) negotiates the ESP SAs seen in esp-bug-12671.
    res = decrypt_all("ikev1-bug-12610.pcapng.gz")
    spis = [s for f in (14, 15) for t, b in res[f][1] if t == 1 for s in _esp_spis(b)]
    assert spis == ["070883c2", "c254fe64"]


def test_unencrypted_aggressive_mode_bug_12620() -> None:
    res = decrypt_all("ikev1-bug-12620.pcapng.gz")
    assert sorted(res) == list(range(4, 11))
    assert hashes(res)[4].startswith("40043b640f4373250d5ac3a1fb63153c")


def test_certs_and_retransmission() -> None:
    res = decrypt_all("ikev1-certs.pcap")
    certs = [b for t, b in res[5][1] if t == 6]
    assert certs and any(b"OpenSwan" in c for c in certs)
    # Frame 8 is a byte-identical retransmission of frame 7: same plaintext, chain not moved,
    # so the responder's frame 9 still decrypts (Wireshark 4.0 garbles frame 8).
    assert res[8][0].plaintext == res[7][0].plaintext
    assert "retransmission of frame 7" in (res[8][0].note or "")
    assert [t for t, _ in res[8][1]] == [8, 1, 10, 4, 5, 5]
    assert [t for t, _ in res[9][1]] == [8, 1, 10, 4, 5, 5]
    assert hashes(res)[10] == "0b4f60a7a6e2878b515d1e30554be720"


def test_wireshark_would_garble_frame_8() -> None:
    # What a naive chain does (IV = last block of frame 7) yields no payload chain: the reason we
    # dedupe retransmissions.
    msgs = dict(ike_datagrams(CORPUS / "ikev1-certs.pcap"))
    key = table().rows[bytes.fromhex("fafaeb49382a763c")]
    body7, body8 = msgs[7][28:], msgs[8][28:]
    garbled = cbc_decrypt(5, key, body7[-8:], body8)
    n, _r, ln = struct.unpack_from("!BBH", garbled, 0)
    good = decrypt_all("ikev1-certs.pcap")[8][0].plaintext
    assert garbled[8:] == good[8:] and garbled[:8] != good[:8]  # CBC: only the first block differs
    assert ln != struct.unpack_from("!BBH", good, 0)[2]


def test_phase1_sa_attributes() -> None:
    msgs = dict(ike_datagrams(CORPUS / "ikev1-bug-12610.pcapng.gz"))
    sa_body = msgs[2][28 + 4:28 + 56]
    attrs = _sa_attributes(sa_body)
    assert attrs[1] == 7 and attrs[14] == 256 and attrs[2] == 4  # AES-256, SHA2-256


def test_iv_formulas() -> None:
    import hashlib

    assert phase1_iv("sha1", b"a", b"b", 8) == hashlib.sha1(b"ab").digest()[:8]
    assert phase2_iv("md5", b"x" * 16, 0x01020304, 16) == hashlib.md5(b"x" * 16 + b"\1\2\3\4").digest()


def test_wrong_key_does_not_parse() -> None:
    rows = table().rows
    bad = TableKeys({c: bytes(len(k)) for c, k in rows.items()})
    d = Ikev1Decryptor(bad)
    for frame, msg in ike_datagrams(CORPUS / "ikev1-bug-12610.pcapng.gz"):
        r = d.feed(msg, frame)
        if r is not None:
            with pytest.raises(AssertionError):
                chain(msg[16], r.plaintext)


def test_no_key_and_missing_phase1_are_decrypt_errors() -> None:
    msgs = ike_datagrams(CORPUS / "ikev1-bug-12610.pcapng.gz")
    d = Ikev1Decryptor(TableKeys({}))
    for _f, m in msgs[:4]:
        assert d.feed(m) is None
    with pytest.raises(DecryptError, match="no IKEv1 key"):
        d.feed(msgs[4][1])
    # Capture started after phase 1: nothing to derive the IV from.
    d = Ikev1Decryptor(table())
    with pytest.raises(DecryptError, match="were not seen"):
        d.feed(msgs[8][1])


@needs_tshark
@pytest.mark.parametrize("capture", V1_CAPTURES)
def test_hashes_match_tshark(capture: str, tmp_path: Path) -> None:
    for name in ("esp_sa", "ikev1_decryption_table", "ikev2_decryption_table"):
        shutil.copy(CORPUS / f"{name}.tmpl", tmp_path / name)
    out = subprocess.run(["tshark", "-r", str(CORPUS / capture), "-T", "fields", "-e", "frame.number",
                          "-e", "isakmp.hash"], capture_output=True, text=True, check=True,
                         env={**os.environ, "WIRESHARK_CONFIG_DIR": str(tmp_path)}).stdout
    theirs = {int(f): h for f, h in (line.split("\t") for line in out.splitlines()) if h}
    ours = hashes(decrypt_all(capture))
    if capture == "ikev1-certs.pcap":
        assert 8 not in theirs and 8 in ours  # tshark garbles the retransmission; we do not
        del ours[8]
    # tshark also shows the cleartext HASH payloads of Aggressive Mode (frames 2-3 of 12620)
    assert {f: h for f, h in theirs.items() if f in ours} == ours
    assert set(theirs) - set(ours) <= {2, 3}


def test_single_des_known_answer() -> None:
    # FIPS 81 / classic DES vector: key 0123456789abcdef, "Now is t" -> 3fa40e8a984d4815 (one block,
    # zero IV, so CBC = ECB). IKEv1 DES-CBC (attribute value 1) still shows up in old captures.
    assert cbc_decrypt(1, bytes.fromhex("0123456789abcdef"), bytes(8), bytes.fromhex("3fa40e8a984d4815")) \
        == b"Now is t"


# ---- several keys per cookie: a pre-shared-key mismatch between two real strongSwan peers ------
#
# tests/data/findings/ikev1-psk-mismatch (made by tests/data/findings/make_captures.py): the peers
# hold different PSKs, so each derives its own SKEYID_e. The initiator (198.18.0.1) sends Main Mode
# message 5 (frames 5, 7, 9, 11: retransmissions) under its key; the responder (198.18.0.2) cannot
# read it and answers each with an Informational N(PAYLOAD_MALFORMED) (frames 6, 8, 10, 12) under
# *its* key, with the phase-2 IV derived from the initial phase-1 IV (it never accepted message 5).

PSK = Path(__file__).resolve().parent / "data" / "findings" / "ikev1-psk-mismatch"
LEFT, RIGHT = "198.18.0.1", "198.18.0.2"


def _psk_store(*peers: str):
    from ipsecscope.keys import load_keys
    from ipsecscope.keys.store import KeyStore

    store = KeyStore()
    for peer in peers:
        store.merge(load_keys([PSK / f"charon-{peer}.log"]))
    return store


def _psk_decrypted(*peers: str):
    from conftest import ike_messages

    from ipsecscope.crypto.ike_sk import IkeDecryptor

    dec = IkeDecryptor(_psk_store(*peers))
    return [dec.decrypt(m) for m in ike_messages(PSK / "capture.pcapng")]


def test_keystore_keeps_every_distinct_ikev1_key() -> None:
    store = _psk_store("left", "right", "left", "right")  # each log twice: duplicates dropped
    cookie = bytes.fromhex("c0b3991d048da969")
    cands = store.ikev1_candidates(cookie)
    assert len(cands) == 2 and len(store.ikev1) == 2
    assert cands[0].enc_key != cands[1].enc_key
    assert "charon-left.log" in cands[0].source and "charon-right.log" in cands[1].source
    assert store.ikev1_lookup(cookie) == cands[0]  # the first one, as before
    assert store.ikev1_candidates(bytes(8)) == [] and store.ikev1_lookup(bytes(8)) is None


def _types(m) -> list[int]:
    return [int(p.type) for p in m.inner]


def test_psk_mismatch_both_keys_decrypt_every_message() -> None:
    out = _psk_decrypted("left", "right")
    enc = [m for m in out if m.header.encrypted_v1]
    assert [m.frame for m in enc] == list(range(5, 13))
    for m in enc:
        assert m.decrypted and m.malformed is None and m.icv_ok is None, (m.frame, m.crypto_note)
        assert _types(m) == ([5, 8, 11] if m.src == LEFT else [8, 11]), m.frame
    informational = [m for m in enc if m.src == RIGHT]
    assert all(p.notify_type == 16 for m in informational for p in m.inner if p.type == 11)  # PAYLOAD_MALFORMED
    assert "pre-shared-key mismatch" in (informational[0].crypto_note or "")
    assert "initial phase-1" in (informational[0].crypto_note or "")
    # Loading order does not matter: the key is chosen per message, not by table position.
    again = _psk_decrypted("right", "left")
    assert [m.inner for m in again] == [m.inner for m in out]


@pytest.mark.parametrize(("peer", "sender"), [("left", LEFT), ("right", RIGHT)])
def test_psk_mismatch_one_key_decrypts_only_its_peer(peer: str, sender: str) -> None:
    both = {m.frame: m for m in _psk_decrypted("left", "right")}
    for m in _psk_decrypted(peer):
        if not m.header.encrypted_v1:
            continue
        if m.src == sender:
            assert m.decrypted and m.inner == both[m.frame].inner, m.frame
        else:  # reported as not decrypted, not shown as garbage payloads
            assert not m.decrypted and m.inner == () and m.icv_ok is None, m.frame
            assert m.malformed is None
            assert "not a payload chain" in (m.crypto_note or ""), m.frame


@needs_tshark
def test_psk_mismatch_each_message_matches_tshark(tmp_path: Path) -> None:
    """Each encrypted message against tshark, one at a time.

    tshark keeps one key per cookie and one IV chain, so on the whole capture it garbles every
    message but frame 5. Given the sender's key only and the phase-1 messages that sender had
    processed (cleartext frames 1-4 plus the message itself: the responder never accepted frame
    5, and retransmissions do not move the initiator's chain), it decrypts each one.
    """
    from test_ike_decode import FIELDS, _hexnorm, tshark_fields

    from ipsecscope.keys import wireshark

    if shutil.which("editcap") is None:
        pytest.skip("editcap (comes with tshark) not installed")
    ours = {m.frame: m for m in _psk_decrypted("left", "right")}
    key = {LEFT: _psk_store("left").ikev1[0], RIGHT: _psk_store("right").ikev1[0]}
    for who, k in key.items():
        (tmp_path / who).mkdir()
        (tmp_path / who / "ikev1_decryption_table").write_text(wireshark.ikev1_line(k, True) + "\n")
    checked = 0
    for frame, m in ours.items():
        if not m.header.encrypted_v1:
            continue
        one = tmp_path / f"frame{frame}.pcapng"
        subprocess.run(["editcap", "-r", str(PSK / "capture.pcapng"), str(one), "1-4", str(frame)],
                       check=True, capture_output=True)
        row = tshark_fields(one, tmp_path / m.src)[5]
        assert row["isakmp.typepayload"], frame
        for field, fn in FIELDS.items():
            assert fn(list(m.inner)) == _hexnorm(field, row[field]), (frame, field)
        checked += 1
    assert checked == 8
