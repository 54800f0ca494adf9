"""IKE-ANSWER-NOT-OFFERED for IKEv1 answers and for the KE group of an IKEv2 IKE SA rekey.

IKEv1 (RFC 2408 §4.2, RFC 2409 §5): a Main Mode or Quick Mode answer carries the one transform the
responder took, with the offered transform ID and attributes; life type and duration may differ
(RFC 2407 §4.5.4: a responder may answer a shorter lifetime). strongSwan's initiator selects the
answer from its configured proposals and fails the exchange with NO-PROPOSAL-CHOSEN ("no proposal
found", main_mode.c; "no matching proposal found", quick_mode.c), libreswan's too ("no acceptable
Oakley Transform", "no acceptable Proposal in IPsec SA"); a changed authentication method strongSwan
logs and ignores ("continue with configured"). A renumbered transform fits: Wireshark's
ikev1-bug-12610 answers the offer's transform #5 as #1, and strongSwan matches by algorithms.

The captures (tests/data/rfc-violations, written by its make.py with the edits below) are
samples/ikev1-dead-peer (Main Mode 2 is clear text; Quick Mode 2 encrypted again on the RFC 2409
IV chain by tests/v1_reseal.py) and samples/healthy-gcm (its CREATE_CHILD_SA IKE rekey, frames
21-22, encrypted again with the sample's SK keys). tshark is the oracle for the changed fields."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CORPUS, DATA, SAMPLES, needs_tshark
from test_answer_not_offered import _add_transform, _transform_id
from test_ike_rfc_fields import Body, _clear, _sealed
from v1_reseal import join, walk, write_mutant

from ipsecscope import Session

HERE = DATA / "rfc-violations"
V1 = SAMPLES / "ikev1-dead-peer"
V2 = SAMPLES / "healthy-gcm"
# Wireshark's ikev1-bug-12620: a real Aggressive Mode (12 transforms, all modp1024; the answer
# takes #1, aes256-sha256) with its key table, XAUTH and Mode Config after it
AM = CORPUS / "ikev1-bug-12620.pcapng.gz"
AM_KEYS = CORPUS / "ikev1_decryption_table.tmpl"
SA_V1, SA_V2, KE_V1 = 1, 33, 4
# RFC 3526 §3: the 2048-bit MODP group's prime; g = 2
MODP2048 = int("FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
               "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
               "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
               "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
               "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
               "15728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)


def _v1_attr(atype: int, value: int):
    """The first transform's basic attribute ``atype`` set to ``value`` in an IKEv1 SA payload body
    (DOI, situation, proposal header and SPI, transform header: RFC 2408 §3.4-§3.6)."""
    def edit(b: Body) -> Body:
        prop = 8
        at = prop + 8 + b[prop + 6] + 8  # the first transform's attributes
        end = prop + 8 + b[prop + 6] + struct.unpack_from("!H", b, prop + 8 + b[prop + 6] + 2)[0]
        while at < end:
            t, v = struct.unpack_from("!HH", b, at)
            if t == 0x8000 | atype:
                struct.pack_into("!H", b, at + 2, value)
                return b
            at += 4 if t & 0x8000 else 4 + v
        raise AssertionError(f"no basic attribute {atype}")
    return edit


def _v1_transform_id(tid: int):
    """The first transform's ID (the byte after its number, RFC 2408 §3.6) set to ``tid``."""
    def edit(b: Body) -> Body:
        b[8 + 8 + b[8 + 6] + 5] = tid
        return b
    return edit


def _ke_modp2048(b: Body) -> Body:
    """A KE payload's body replaced by a 2048-bit MODP public value (2^x mod p, RFC 3526 §3), 256
    octets: what a responder that computed in modp2048 sends (RFC 2409 §5)."""
    return Body(pow(2, 0x1F2E3D4C5B6A7988, MODP2048).to_bytes(256, "big"))


def _ah_bundle(tid: int = 5, auth: int = 5):
    """The SA's ESP proposal made an AH+ESP bundle (RFC 2408 §4.2): an AH proposal under the
    same number before it (Next Payload 2, RFC 2408 §3.5), with AH transform ``tid`` (RFC 2407
    §4.4.3: 5 AH_SHA2-256), the ESP transform's attributes less the key length, and the
    authentication algorithm ``auth`` (§4.5: 5 HMAC-SHA2-256); its SPI the ESP SPI + 1."""
    def edit(b: Body) -> Body:
        prop = 8
        spisize = b[prop + 6]
        spi = bytes(b[prop + 8:prop + 8 + spisize])
        tr = prop + 8 + spisize
        attrs, at, end = b"", tr + 8, tr + struct.unpack_from("!H", b, tr + 2)[0]
        while at < end:
            t, v = struct.unpack_from("!HH", b, at)
            size = 4 if t & 0x8000 else 4 + v
            if t & 0x7FFF != 6:  # key length: an AH transform has none
                attrs += bytes(b[at:at + size])
            at += size
        attrs += struct.pack("!HH", 0x8005, auth)
        transform = struct.pack("!BBHBBH", 0, 0, 8 + len(attrs), 1, tid, 0) + attrs
        ah_spi = ((int.from_bytes(spi, "big") + 1) & 0xFFFFFFFF).to_bytes(4, "big")
        ah = struct.pack("!BBHBBBB", 2, 0, 12 + len(transform), b[prop + 4], 2, 4, 1) + ah_spi + transform
        return Body(b[:prop] + ah + b[prop:])
    return edit


def _then(*edits):
    def edit(b: Body) -> Body:
        for e in edits:
            b = e(b)
        return b
    return edit


def _qm_sa(change):
    """A Quick Mode plaintext edit: its SA payload's body through ``change``."""
    def edit(first: int, plain: bytes) -> tuple[int, bytes]:
        pl, tail = walk(first, plain)
        i = next(k for k, p in enumerate(pl) if p[0] == SA_V1)
        t, n, b = pl[i]
        pl[i] = (t, n, bytes(change(Body(b))))
        return first, join(pl, tail)
    return edit


# file: (source sample, frames kept, {frame: edit}); "clear" edits whole frames, "qm" plaintexts
ANSWERS = {
    # Main Mode 2 takes MODP-3072 (group 15); the one transform offered is MODP-2048 (14)
    "ikev1-mm-answer-group.pcap": ("clear", 2, {2: lambda f: _clear(f, SA_V1, _v1_attr(4, 15))}),
    # Main Mode 2 answers RSA signatures (3) for the offered pre-shared key (1)
    "ikev1-mm-answer-auth.pcap": ("clear", 2, {2: lambda f: _clear(f, SA_V1, _v1_attr(3, 3))}),
    # Quick Mode 2 takes AES-GCM-8 (ESP transform ID 18) for the offered AES-GCM-16 (20)
    "ikev1-qm-answer-transform-id.pcap": ("qm", 9, {8: _qm_sa(_v1_transform_id(18))}),
    # Quick Mode 2 takes AES-GCM-16 with a 128-bit key; the offer's is 256-bit
    "ikev1-qm-answer-key-length.pcap": ("qm", 9, {8: _qm_sa(_v1_attr(6, 128))}),
    # the IKE SA rekey offers ecp384 beside ecp256, its KE payload stays ecp256; the answer picks
    # ecp384 (RFC 7296 §1.3.2: the KE payload's group, as in IKE_SA_INIT)
    "ikev2-rekey-answer-ke.pcap": ("v2", 22, {21: lambda f: _sealed(f, SA_V2, _add_transform(4, 20)),
                                              22: lambda f: _sealed(f, SA_V2, _transform_id(4, 20))}),
    # Aggressive Mode 2 takes SHA2-512 (hash 6) for transform #1; the offer has none
    "ikev1-am-answer-not-offered.pcap": ("am", 2, {2: lambda f: _clear(f, SA_V1, _v1_attr(2, 6))}),
    # the offer's transform #1 names modp2048, the 11 others and the KE payload (128 octets)
    # modp1024; the answer takes #1 and sends a modp2048 KE value (256 octets)
    "ikev1-am-answer-ke.pcap": ("am", 2, {1: lambda f: _clear(f, SA_V1, _v1_attr(4, 14)),
                                          2: lambda f: _clear(_clear(f, SA_V1, _v1_attr(4, 14)), KE_V1, _ke_modp2048)}),
    # the same offer; the answer takes #1 (modp2048) with its KE payload left at 128 octets, and the
    # initiator goes on (XAUTH, Mode Config): the whole capture
    "ikev1-am-answer-ke-value.pcap": ("am", 10, {1: lambda f: _clear(f, SA_V1, _v1_attr(4, 14)),
                                                 2: lambda f: _clear(f, SA_V1, _v1_attr(4, 14))}),
    # Quick Mode 1 offers the bundle AH (HMAC-SHA2-256) + ESP under #1; Quick Mode 2 answers ESP alone
    "ikev1-qm-bundle-answer-drops-ah.pcap": ("qm", 9, {7: _qm_sa(_ah_bundle())}),
    # the same bundle; the answer's AH as offered, its ESP with a 128-bit key (the offer's is 256)
    "ikev1-qm-bundle-answer-esp.pcap": ("qm", 9, {7: _qm_sa(_ah_bundle()),
                                                  8: _qm_sa(_then(_v1_attr(6, 128), _ah_bundle()))}),
}


def write(name: str, out: Path) -> None:
    """The capture ``name`` of ANSWERS, written to ``out`` (make.py and the test below)."""
    from espgen import PcapWriter

    from ipsecscope.capture import open_capture

    kind, last, edits = ANSWERS[name]
    src = out.with_name(f".{out.name}.tmp")
    if kind == "qm":
        write_mutant(src, edits)
    source = {"qm": src, "am": AM, "clear": V1 / "capture.pcapng", "v2": V2 / "capture.pcapng"}[kind]
    with open_capture(source) as r, PcapWriter(out) as w:
        for f in r:
            if f.index <= last:
                data = bytes(f.data)
                w.write(f.ts_ns, edits[f.index](data) if kind != "qm" and f.index in edits else data)
    src.unlink(missing_ok=True)


def _keys(name: str) -> Path:
    return AM_KEYS if name.startswith("ikev1-am") else (V2 if name.startswith("ikev2") else V1) / "keys"


def _session(name: str) -> Session:
    s = Session()
    s.add_key_files([str(_keys(name))])
    s.load(str(HERE / name))
    return s


def _finding(s: Session):
    found = [f for f in s.findings if f.code == "IKE-ANSWER-NOT-OFFERED"]
    assert len(found) == 1, [f.code for f in s.findings]
    return found[0]


def test_main_mode_answer_with_a_group_not_offered() -> None:
    s = _session("ikev1-mm-answer-group.pcap")
    f = _finding(s)
    assert f.severity.name == "ERROR" and f.frames == (1, 2)
    assert f.title == "IKE SA: 198.18.0.2 answered with a proposal 198.18.0.1 did not offer"
    assert ("198.18.0.1 offered aes256-sha256-modp2048; 198.18.0.2 answered aes256-sha256-modp3072: the answer's "
            "transform #1 has group modp3072 (offered modp2048)") in f.explanation
    assert ("(strongSwan logs \"no proposal found\" and sends NO-PROPOSAL-CHOSEN; libreswan logs "
            "\"no acceptable Oakley Transform\")") in f.explanation
    assert not s.stats.malformed


def test_main_mode_answer_with_another_auth_method() -> None:
    f = _finding(_session("ikev1-mm-answer-auth.pcap"))
    assert f.severity.name == "ERROR"
    assert "has authentication method 3 (offered 1)" in f.explanation
    assert "continue with configured" in f.explanation


def test_quick_mode_answer_with_a_key_length_not_offered() -> None:
    s = _session("ikev1-qm-answer-key-length.pcap")
    f = _finding(s)
    child = s.table.child_sas[1]
    assert f.sa == "child:1" and f.severity.name == "ERROR" and f.frames == (7, 8)
    assert child.proposal == "aes128gcm16" and child.offered == ["aes256gcm16"]
    assert "has key length 128 (offered 256)" in f.explanation
    assert ("(strongSwan logs \"no matching proposal found\" and sends NO-PROPOSAL-CHOSEN; libreswan logs "
            "\"no acceptable Proposal in IPsec SA\")") in f.explanation
    assert not s.stats.malformed


def test_quick_mode_answer_with_a_transform_id_not_offered() -> None:
    s = _session("ikev1-qm-answer-transform-id.pcap")
    f = _finding(s)
    assert f.sa == "child:1" and f.severity.name == "ERROR"
    assert s.table.child_sas[1].proposal == "aes256gcm8"
    assert "the answer's transform #1 has transform ID 18 (offered 20)" in f.explanation


def test_ike_rekey_answer_with_a_ke_group_other_than_the_request_ke_payload() -> None:
    s = _session("ikev2-rekey-answer-ke.pcap")
    f = _finding(s)
    new = next(sa for sa in s.table.ike_sas.values() if sa.rekeyed_from)
    assert f.sa == new.key and f.severity.name == "ERROR" and f.frames == (21, 22)
    assert ("the answer picks KE group ecp384 but the request's KE payload is ecp256 "
            "(RFC 7296 §1.2: that answer is INVALID_KE_PAYLOAD)") in f.explanation
    assert not s.stats.malformed


def test_lifetimes_and_renumbered_transforms_fit() -> None:
    """What real IKEv1 stacks answer and the RFCs allow gives no finding: strongSwan's Quick Mode 2
    adds SA life type/duration the offer left out (the sample itself); Wireshark's ikev1-bug-12610
    (Quick Mode answered as transform #1, offered as #5); the phase-1 answers of 12610/12620 list
    their attributes in another order."""
    for cap, keys in [(V1 / "capture.pcapng", V1 / "keys"),
                      (CORPUS / "ikev1-bug-12610.pcapng.gz", CORPUS / "ikev1_decryption_table.tmpl"),
                      (CORPUS / "ikev1-bug-12620.pcapng.gz", CORPUS / "ikev1_decryption_table.tmpl")]:
        s = Session()
        s.add_key_files([str(keys)])
        s.load(str(cap))
        answered = [sa for sa in [*s.table.ike_sas.values(), *s.table.child_sas.values()] if sa.offered and sa.proposal]
        assert answered, cap
        assert "IKE-ANSWER-NOT-OFFERED" not in {f.code for f in s.findings}, cap
        if "12610" in cap.name:  # the renumbered one was seen and fits
            assert any(c.proposal == "aes128-sha1" and "aes256-sha256" in c.offered for c in s.table.child_sas.values())


def test_a_shorter_lifetime_answer_fits(tmp_path: Path) -> None:
    """RFC 2407 §4.5.4: the responder may answer a shorter lifetime (strongSwan logs "received
    %us lifetime, configured %us" and takes it)."""
    out = tmp_path / "qm-lifetime.pcap"
    write_mutant(out, {8: _qm_sa(_life(3600))})
    s = Session()
    s.add_key_files([str(V1 / "keys")])
    s.load(str(out))
    assert s.table.child_sas[1].proposal == "aes256gcm16"
    assert "IKE-ANSWER-NOT-OFFERED" not in {f.code for f in s.findings}


def test_an_encapsulation_mode_answered_in_the_nat_t_draft_encoding_fits(tmp_path: Path) -> None:
    """UDP-Encapsulated-Tunnel offered as RFC 3947's 3 and answered as the NAT-T drafts' 61443 is
    one mode in two encodings (the responder answers in its negotiated NAT-T version's); a tunnel
    answered for a transport offer is a change."""
    def qm(offer: int, answer: int) -> Session:
        out = tmp_path / f"qm-encap-{offer}-{answer}.pcap"
        write_mutant(out, {7: _qm_sa(_v1_attr(4, offer)), 8: _qm_sa(_v1_attr(4, answer))})
        s = Session()
        s.add_key_files([str(V1 / "keys")])
        s.load(str(out))
        return s
    assert "IKE-ANSWER-NOT-OFFERED" not in {f.code for f in qm(3, 61443).findings}
    assert "IKE-ANSWER-NOT-OFFERED" not in {f.code for f in qm(61444, 4).findings}
    f = _finding(qm(4, 61443))
    assert "encapsulation mode UDP-Encapsulated-Tunnel (offered UDP-Encapsulated-Transport)" in f.explanation


def _life(seconds: int):
    """Quick Mode 2's SA life duration (RFC 2407 §4.5 attribute 2) set to ``seconds``."""
    def change(b: Body) -> Body:
        before = bytes(b)
        b = _v1_attr(2, seconds)(b)
        assert bytes(b) != before
        return b
    return change


@needs_tshark
@pytest.mark.parametrize("name,field,frame,value", [
    ("ikev1-mm-answer-group.pcap", "isakmp.ike.attr.group_description", 2, "15"),
    ("ikev1-mm-answer-auth.pcap", "isakmp.ike.attr.authentication_method", 2, "3"),
    ("ikev1-qm-answer-key-length.pcap", "isakmp.ipsec.attr.key_length", 8, "128"),
    ("ikev1-qm-answer-key-length.pcap", "isakmp.ipsec.attr.key_length", 7, "256"),
    ("ikev1-qm-answer-transform-id.pcap", "isakmp.trans.id", 8, "18"),
    ("ikev1-qm-answer-transform-id.pcap", "isakmp.trans.id", 7, "20"),
    ("ikev2-rekey-answer-ke.pcap", "isakmp.tf.id.dh", 21, "19,20"),
    ("ikev2-rekey-answer-ke.pcap", "isakmp.tf.id.dh", 22, "20"),
    ("ikev2-rekey-answer-ke.pcap", "isakmp.key_exchange.dh_group", 21, "19"),
    ("ikev1-am-answer-not-offered.pcap", "isakmp.ike.attr.hash_algorithm", 2, "6"),
    ("ikev1-am-answer-ke.pcap", "isakmp.ike.attr.group_description", 1, "14" + ",2" * 11),
    ("ikev1-am-answer-ke.pcap", "isakmp.ike.attr.group_description", 2, "14"),
    ("ikev1-am-answer-ke-value.pcap", "isakmp.ike.attr.group_description", 2, "14"),
    ("ikev1-qm-bundle-answer-drops-ah.pcap", "isakmp.prop.protoid", 7, "2,3"),
    ("ikev1-qm-bundle-answer-drops-ah.pcap", "isakmp.prop.number", 7, "1,1"),
    ("ikev1-qm-bundle-answer-drops-ah.pcap", "isakmp.prop.protoid", 8, "3"),
    ("ikev1-qm-bundle-answer-esp.pcap", "isakmp.prop.protoid", 8, "2,3"),
    ("ikev1-qm-bundle-answer-esp.pcap", "isakmp.ipsec.attr.auth_algorithm", 8, "5"),
    ("ikev1-qm-bundle-answer-esp.pcap", "isakmp.ipsec.attr.key_length", 8, "128"),
])
def test_tshark_reads_the_changed_field(name: str, field: str, frame: int, value: str, tmp_path: Path) -> None:
    """tshark decrypts the encrypted ones with the sample's key tables (its config directory)."""
    assert _tshark(name, f"frame.number == {frame}", field, tmp_path) == value


def _tshark(name: str, where: str, field: str, config: Path) -> str:
    keys = _keys(name)
    for table in ("ikev1_decryption_table", "ikev2_decryption_table"):
        if keys.is_file() and keys.name.startswith(table):
            shutil.copy(keys, config / table)
        elif (keys / table).is_file():
            shutil.copy(keys / table, config / table)
    return subprocess.run(["tshark", "-r", str(HERE / name), "-Y", where, "-T", "fields", "-e", field],
                          capture_output=True, text=True, timeout=60, check=True,
                          env={**os.environ, "WIRESHARK_CONFIG_DIR": str(config)}).stdout.strip()


@needs_tshark
def test_tshark_reads_the_aggressive_mode_ke_lengths(tmp_path: Path) -> None:
    """The KE values: the request's 128 octets (modp1024) in each; the answer's 256 (a modp2048
    value) in -ke, 128 in -ke-value."""
    for name, answer in [("ikev1-am-answer-ke.pcap", 256), ("ikev1-am-answer-ke-value.pcap", 128)]:
        assert _tshark(name, "len(isakmp.key_exchange.data) == 128", "frame.number", tmp_path).split() == (
            ["1"] if answer == 256 else ["1", "2"])
        assert _tshark(name, f"frame.number == 2 && len(isakmp.key_exchange.data) == {answer}", "frame.number",
                       tmp_path) == "2"


def test_make_writes_these_captures(tmp_path: Path) -> None:
    """The committed captures are what the edits above give (make.py is not run by the suite)."""
    sys.path.insert(0, str(SAMPLES / "synthetic"))
    for name in ANSWERS:
        write(name, tmp_path / name)
        assert (tmp_path / name).read_bytes() == (HERE / name).read_bytes(), name
