"""IKE-ANSWER-NOT-OFFERED for IKEv1 Aggressive Mode answers.

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

Captures: tests/data/rfc-violations, written by its make.py with the edits of
test_answer_not_offered_v1.ANSWERS on Wireshark's ikev1-bug-12620 (Aggressive Mode, clear text)."""

from __future__ import annotations

from conftest import DATA
from test_answer_not_offered_v1 import AM_KEYS, _finding, _session

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
    for cap, keys in [(DATA / "wireshark" / "ikev1-bug-12620.pcapng.gz", AM_KEYS),
                      (DATA / "zeek-spicy-ipsec" / "ipsec-ikev1-isakmp-aggressive-mode.pcap", None)]:
        s = Session()
        if keys:
            s.add_key_files([str(keys)])
        s.load(str(cap))
        ike = next(sa for sa in s.table.ike_sas.values() if sa.mode == "Aggressive")
        assert ike.offered and ike.proposal.endswith("modp1024") and ike.answer_unfit is None, cap
        assert CODE not in {f.code for f in s.findings}, cap

