"""An IKEv2 answer whose SA does not fit the offer it answers (RFC 7296 §3.3, §2.7, §1.2) is
IKE-ANSWER-NOT-OFFERED: an error when nothing shows the initiator taking it, a warning when the
capture shows it went on regardless (lenient initiator, interop hazard).

The captures (tests/data/rfc-violations, written by its make.py with the edits below) are
samples/healthy-gcm with one field of a message changed; IKE_AUTH answers are encrypted again with
the sample's keys. Each message alone is valid, so none is malformed: only the pair breaks the rule.
tshark is the oracle for the fields changed."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES, needs_tshark
from test_ike_rfc_fields import SA, Body, _clear, _sealed, _set

from ipsecscope import Session

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "rfc-violations"
KEYS = SAMPLES / "healthy-gcm" / "keys"


def _transforms(b: Body):
    """Offsets of the first proposal's transforms in an SA payload body."""
    off, end = 8 + b[6], struct.unpack_from("!H", b, 2)[0]
    while off < end:
        yield off
        off += struct.unpack_from("!H", b, off + 2)[0]


def _key_length(bits: int):
    """The ENCR transform's Key Length attribute (RFC 7296 §3.3.5) set to ``bits``."""
    def edit(b: Body) -> Body:
        at = next(o for o in _transforms(b) if b[o + 4] == 1)
        assert struct.unpack_from("!H", b, at + 8)[0] == 0x800E
        struct.pack_into("!H", b, at + 10, bits)
        return b
    return edit


def _transform_id(ttype: int, tid: int):
    def edit(b: Body) -> Body:
        struct.pack_into("!H", b, next(o for o in _transforms(b) if b[o + 4] == ttype) + 6, tid)
        return b
    return edit


def _add_transform(ttype: int, tid: int):
    """The first proposal with one more transform at its end (Last Substruc and lengths follow)."""
    def edit(b: Body) -> Body:
        *_, last = _transforms(b)
        b[last] = 3  # more transforms follow (§3.3.2)
        b += struct.pack("!BBHBBH", 0, 0, 8, ttype, 0, tid)
        b[7] += 1
        struct.pack_into("!H", b, 2, struct.unpack_from("!H", b, 2)[0] + 8)
        return b
    return edit


# file: (frames of healthy-gcm kept, {frame: edit})
ANSWERS = {
    # the IKE_SA_INIT answer takes AES-GCM with a 128-bit key; the offer's one proposal is 256-bit
    "ikev2-init-answer-not-offered.pcap": (2, {2: lambda f: _clear(f, SA, _key_length(128))}),
    # the offer adds ecp384 beside ecp256, the request's KE payload stays ecp256; the answer picks
    # ecp384 (§1.2: that answer is INVALID_KE_PAYLOAD, not an SA)
    "ikev2-init-answer-ke.pcap": (2, {1: lambda f: _clear(f, SA, _add_transform(4, 20)),
                                      2: lambda f: _clear(f, SA, _transform_id(4, 20))}),
    # the IKE_AUTH answer numbers the offer's proposal #1 as #2; ESP follows on the CHILD SA
    "ikev2-auth-answer-renumbered.pcap": (10, {4: lambda f: _sealed(f, SA, _set(4, 2))}),
}


def _session(name: str) -> Session:
    s = Session()
    s.add_key_files([str(KEYS)])
    s.load(str(DATA / name))
    return s


def _finding(s: Session):
    found = [f for f in s.findings if f.code == "IKE-ANSWER-NOT-OFFERED"]
    assert len(found) == 1, [f.code for f in s.findings]
    return found[0]


def test_answer_outside_the_offer_is_why_the_sa_failed() -> None:
    s = _session("ikev2-init-answer-not-offered.pcap")
    f = _finding(s)
    assert f.severity.name == "ERROR" and f.frames == (1, 2)
    assert f.title == "IKE SA: 198.18.0.2 answered with a proposal 198.18.0.1 did not offer"
    assert ("198.18.0.1 offered aes256gcm16-prfsha256-ecp256; 198.18.0.2 answered aes128gcm16-prfsha256-ecp256: "
            "the answer picks aes128gcm16, which proposal #1 of the offer does not carry") in f.explanation
    # ike_init.c process_i's own words: 5.9.x, then 6.0's (both checked in strongSwan's sources)
    assert ("(strongSwan logs \"peers proposal selection invalid\" (6.0: \"peer's proposal selection invalid\"))"
            in f.explanation)
    assert "Nothing in the capture shows 198.18.0.1 using it: the likely reason the SA did not come up" in f.explanation
    # one message alone is valid: nothing is marked malformed
    assert not s.stats.malformed


def test_answer_with_a_ke_group_other_than_the_request_ke_payload() -> None:
    f = _finding(_session("ikev2-init-answer-ke.pcap"))
    assert f.severity.name == "ERROR"
    assert ("the answer picks KE group ecp384 but the request's KE payload is ecp256 "
            "(RFC 7296 §1.2: that answer is INVALID_KE_PAYLOAD)") in f.explanation
    assert ("\"peer DH group selection invalid\" (6.0: \"peer's key exchange method selection invalid\")"
            in f.explanation)


def test_renumbered_answer_the_initiator_went_on_with_is_a_warning() -> None:
    s = _session("ikev2-auth-answer-renumbered.pcap")
    f = _finding(s)
    child = s.table.child_sas[1]
    assert f.severity.name == "WARNING" and f.sa == "child:1" and f.frames == (3, 4)
    assert "the answer numbers its proposal #2, the offer numbered it #1" in f.explanation
    assert f"198.18.0.1 sends ESP on it (SPI 0x{child.spi_r:08x})" in f.explanation
    assert f.title == "CHILD SA #1: 198.18.0.2 renumbered the proposal it accepted"
    assert ("An initiator that checks the number fails the exchange; strongSwan matches answers by their "
            "algorithms and takes it") in f.explanation
    assert "it took the answer, which a stricter initiator refuses" in f.explanation


def test_no_sample_answers_outside_its_offer() -> None:
    """Every bundled sample's answers fit their offers (strongSwan and the other stacks behind
    them check that): the rule names none of them."""
    checked = 0
    for cap in sorted(SAMPLES.glob("*/capture.pcap*")):
        s = Session()
        keys = cap.parent / "keys"
        if keys.is_dir():
            s.add_key_files([str(keys)])
        s.load(str(cap))
        assert "IKE-ANSWER-NOT-OFFERED" not in {f.code for f in s.findings}, cap
        checked += sum(1 for sa in [*s.table.ike_sas.values(), *s.table.child_sas.values()]
                       if sa.offered and sa.proposal)
    assert checked >= 20  # answers with their offer in view, so the check had something to do


@needs_tshark
@pytest.mark.parametrize("name,field,frame,value", [
    ("ikev2-init-answer-not-offered.pcap", "isakmp.ike2.attr.key_length", 2, "128"),
    ("ikev2-init-answer-ke.pcap", "isakmp.tf.id.dh", 1, "19,20"),
    ("ikev2-init-answer-ke.pcap", "isakmp.tf.id.dh", 2, "20"),
])
def test_tshark_reads_the_changed_field(name: str, field: str, frame: int, value: str) -> None:
    out = subprocess.run(["tshark", "-r", str(DATA / name), "-Y", f"frame.number == {frame}", "-T", "fields",
                          "-e", field], capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert out == value


def test_make_writes_these_captures(tmp_path: Path) -> None:
    """The committed captures are what the edits above give (make.py is not run by the suite)."""
    from ipsecscope.capture import open_capture

    sys.path.insert(0, str(SAMPLES / "synthetic"))
    from espgen import PcapWriter
    for name, (last, edits) in ANSWERS.items():
        out = tmp_path / name
        with open_capture(SAMPLES / "healthy-gcm" / "capture.pcapng") as r, PcapWriter(out) as w:
            for f in r:
                if f.index <= last:
                    w.write(f.ts_ns, edits[f.index](bytes(f.data)) if f.index in edits else bytes(f.data))
        assert out.read_bytes() == (DATA / name).read_bytes(), name
