"""IKE-ANSWER-NOT-OFFERED for IKEv1 Aggressive Mode answers and Quick Mode AH+ESP bundles.

Aggressive Mode (RFC 2409 §5) carries the offer and the initiator's KE payload in its first
message, so "the group in which the Diffie-Hellman exchange is performed cannot be negotiated": the
answer takes the group of that KE payload, and its own KE value has that group's length ("MUST be
the length of the negotiated Diffie-Hellman group"). What a peer logs on such an answer, read in
strongSwan's aggressive_mode.c / phase1.c and libreswan's ikev1_aggr.c / unpack.c: strongSwan
selects the answer from its configured proposals ("no proposal found", NO-PROPOSAL-CHOSEN), then
applies the answer's KE value to the group it made its own in ("unable to apply received KE
value", INVALID-PAYLOAD-TYPE); libreswan parses the answer as a selection ("no acceptable Oakley
Transform") and checks its KE against the answered group ("responder AGGR KE payload is %zu bytes;
%u required", INVALID-KEY-INFORMATION).

Quick Mode bundles (RFC 2408 §4.2): proposals under one number are one bundle, AH and ESP applied
together; the answer takes a bundle whole. strongSwan does not negotiate bundles (sa_payload.c
skips proposals with several protocols); libreswan does (parse_ipsec_sa_body).

Captures: tests/data/rfc-violations, written by its make.py with the edits of
test_answer_not_offered_v1.ANSWERS on Wireshark's ikev1-bug-12620 (Aggressive Mode, clear text)
and on samples/ikev1-dead-peer (Quick Mode, encrypted again on the IV chain)."""

from __future__ import annotations

from pathlib import Path

from conftest import CORPUS, DATA, need, public
from test_answer_not_offered_v1 import AM_KEYS, V1, _ah_bundle, _finding, _qm_sa, _session
from v1_reseal import write_mutant

from ipsecscope import Session

HERE = DATA / "rfc-violations"
CODE = "IKE-ANSWER-NOT-OFFERED"
AM_TITLE = "IKE SA (Aggressive Mode): 192.168.0.1 answered with a proposal 192.168.0.100 did not offer"


def test_aggressive_mode_answer_not_offered_names_aggressive_mode() -> None:
    s = _session("ikev1-am-answer-not-offered.pcap")
    f = _finding(s)
    assert f.severity.name == "ERROR" and f.frames == (1, 2) and f.title == AM_TITLE
    assert "des-md5-modp1024 in Aggressive Mode's first message; 192.168.0.1 answered aes256-sha512-modp1024 in the " \
        "second: the answer's transform #1 has hash 6 (offered 4)" in f.explanation
    assert ("(strongSwan logs \"no proposal found\" and sends NO-PROPOSAL-CHOSEN; libreswan logs "
            "\"no acceptable Oakley Transform\")") in f.explanation
    assert "Main Mode" not in f.explanation + f.title
    assert not s.stats.malformed


def test_aggressive_mode_answer_in_a_group_other_than_the_request_ke_payload() -> None:
    """The offer names modp2048 in transform #1 and modp1024 in the 11 others; its KE payload is
    128 octets, modp1024's. The answer takes #1, an offered transform, with a 256-octet KE value:
    the responder computed in modp2048, the initiator's Diffie-Hellman value is modp1024."""
    s = _session("ikev1-am-answer-ke.pcap")
    f = _finding(s)
    ike = next(iter(s.table.ike_sas.values()))
    assert ike.mode == "Aggressive" and ike.proposal == "aes256-sha256-modp2048" and ike.answer_unfit.kind == "ke"
    assert f.severity.name == "ERROR" and f.frames == (1, 2) and f.title == AM_TITLE
    assert ("the answer takes group modp2048, but the request's KE payload is modp1024 (128 octets): Aggressive "
            "Mode sends the KE payload with the offer, so the group cannot be negotiated (RFC 2409 §5)") in f.explanation
    assert "\"unable to apply received KE value\", then INVALID-PAYLOAD-TYPE" in f.explanation
    assert "KE payload (Aggressive Mode cannot negotiate it" in f.hint
    assert not s.stats.malformed


def test_aggressive_mode_answer_whose_ke_value_does_not_fit_its_group() -> None:
    """The same offer; the answer names modp2048 with a 128-octet KE value and the initiator goes
    on (XAUTH, Mode Config): a lenient initiator, which libreswan is not."""
    s = _session("ikev1-am-answer-ke-value.pcap")
    f = _finding(s)
    ike = next(iter(s.table.ike_sas.values()))
    assert ike.answer_unfit.kind == "ke-value" and ike.answer_unfit.ke_octets == (128, 256)
    assert f.severity.name == "WARNING" and f.title == AM_TITLE
    assert "its own KE payload has 128 octets, modp1024's, the request's group, where modp2048 has 256" in f.explanation
    assert "(\"responder AGGR KE payload is 128 bytes; 256 required\", then INVALID-KEY-INFORMATION)" in f.explanation
    assert "Yet 192.168.0.100 went on to " in f.explanation


def test_real_aggressive_mode_answers_fit() -> None:
    """Wireshark's ikev1-bug-12620 (12 transforms, one group) and Zeek's Aggressive Mode capture:
    the answer's group and KE value are the request's; no finding."""
    for cap, keys in [(CORPUS / "ikev1-bug-12620.pcapng.gz", AM_KEYS),
                      (public("zeek-spicy-ipsec/ipsec-ikev1-isakmp-aggressive-mode.pcap"), None)]:
        need(cap)  # third-party: materialised at test time (tests/public_data.py)
        s = Session()
        if keys:
            s.add_key_files([str(keys)])
        s.load(str(cap))
        ike = next(sa for sa in s.table.ike_sas.values() if sa.mode == "Aggressive")
        assert ike.offered and ike.proposal.endswith("modp1024") and ike.answer_unfit is None, cap
        assert CODE not in {f.code for f in s.findings}, cap


def test_bundle_answer_that_drops_ah() -> None:
    s = _session("ikev1-qm-bundle-answer-drops-ah.pcap")
    f = _finding(s)
    child = s.table.child_sas[1]
    assert child.offered == ["AH sha256 + ESP aes256gcm16"] and child.proposal == "aes256gcm16"
    assert f.sa == "child:1" and f.severity.name == "ERROR" and f.frames == (7, 8)
    assert ("the answer's proposal #1 is ESP, the offer's #1 AH+ESP: it drops AH (RFC 2408 §4.2: the proposals "
            "under one number are one bundle, accepted whole)") in f.explanation
    assert "strongSwan does not negotiate AH+ESP bundles" in f.explanation
    assert "an offered bundle whole" in f.hint
    assert not s.stats.malformed


def test_bundle_answer_checked_on_each_protocol() -> None:
    """The answer's AH is as offered, its ESP, the bundle's second proposal, is not."""
    s = _session("ikev1-qm-bundle-answer-esp.pcap")
    f = _finding(s)
    assert s.table.child_sas[1].proposal == "AH sha256 + ESP aes128gcm16"
    assert ("the ESP proposal of bundle #1 (AH+ESP): the answer's transform #1 has key length 128 "
            "(offered 256)") in f.explanation
    assert "\"no acceptable Proposal in IPsec SA\"" in f.explanation
    assert not s.stats.malformed


def _qm(tmp_path: Path, name: str, edits: dict) -> Session:
    out = tmp_path / name
    write_mutant(out, edits)
    s = Session()
    s.add_key_files([str(V1 / "keys")])
    s.load(str(out))
    return s


def test_bundle_answered_as_offered_fits(tmp_path: Path) -> None:
    s = _qm(tmp_path, "bundle.pcap", {7: _qm_sa(_ah_bundle()), 8: _qm_sa(_ah_bundle())})
    assert s.table.child_sas[1].proposal == "AH sha256 + ESP aes256gcm16"
    assert CODE not in {f.code for f in s.findings}


def test_bundle_answer_to_an_esp_offer_adds_ah(tmp_path: Path) -> None:
    f = _finding(_qm(tmp_path, "adds-ah.pcap", {8: _qm_sa(_ah_bundle())}))
    assert "the answer's proposal #1 is AH+ESP, the offer's #1 ESP: adds AH" in f.explanation


def test_bundle_answer_with_another_ah_algorithm(tmp_path: Path) -> None:
    """AH_SHA2-512 with HMAC-SHA2-512 (RFC 4868) answered for the offered SHA2-256."""
    f = _finding(_qm(tmp_path, "ah-sha512.pcap", {7: _qm_sa(_ah_bundle()), 8: _qm_sa(_ah_bundle(7, 7))}))
    assert ("the AH proposal of bundle #1 (AH+ESP): the answer's transform #1 has transform ID 7 (offered 5), "
            "authentication algorithm 7 (offered 5)") in f.explanation


def _numbered(num: int):
    """The SA's first proposal numbered ``num`` (RFC 2408 §3.5: the octet after its length)."""
    def edit(b):
        b[8 + 4] = num
        return b
    return edit


def test_bundle_answer_renumbered_without_its_ah(tmp_path: Path) -> None:
    """The offer's only bundle is #1 AH+ESP; the answer's ESP alone, numbered #2: the transform
    is the bundle's ESP, but AH is dropped all the same."""
    f = _finding(_qm(tmp_path, "renumbered.pcap", {7: _qm_sa(_ah_bundle()), 8: _qm_sa(_numbered(2))}))
    assert "the answer's proposal #2 is ESP; the offer holds #1 AH+ESP" in f.explanation


def test_a_weak_algorithm_inside_a_bundle_is_seen(tmp_path: Path) -> None:
    """AH_MD5 with HMAC-MD5 (RFC 2407 §4.4.3, §4.5) in the bundle, answered as offered: the bundle's
    label keeps each protocol's keywords where IKE-WEAK-ALGO finds them."""
    s = _qm(tmp_path, "ah-md5.pcap", {7: _qm_sa(_ah_bundle(2, 1)), 8: _qm_sa(_ah_bundle(2, 1))})
    assert s.table.child_sas[1].proposal == "AH md5 + ESP aes256gcm16"
    weak = [f for f in s.findings if f.code == "IKE-WEAK-ALGO" and f.sa == "child:1"]
    assert len(weak) == 1 and "MD5" in weak[0].title, [f.title for f in s.findings]
    assert CODE not in {f.code for f in s.findings}
