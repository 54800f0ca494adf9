"""An IKEv1 phase 1 that never completed says where it stopped, in every view alike.

Main Mode's six messages share one Message ID (RFC 2409 §5): one exchange, "answered" once MM2
came, so an SA whose MM3 or MM5 went unanswered stayed INITIATING in sas, sas --json and the TUI
however long the peer was silent. Each phase-1 message is now followed on its own
(state/ikev1_stall.py, IkeSa.stall) and IkeSa.state_word / state_text say it, with IKEv2's words:
"failed" (a refusal, or "no response" by IKEv2's rule: 3 retransmissions or 10 s), "incomplete"
(the next message was due and never came), "initiating" (the capture ended too soon to know).

Real strongSwan captures (tests/data/findings/make_captures.py, tests/data/ikev1-frag/make.py),
checked against the charon logs beside them; public captures through tests/public_data.py.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from conftest import DATA, SAMPLES
from conftest import field_cli as cli
from public_data import need, public
from test_tui import SIZE, sync
from test_tui_detail import open_detail

from ipsecscope.model.idtext import NBSP
from ipsecscope.model.sa import IkeSa, SaState
from ipsecscope.session import Session

FINDINGS = DATA / "findings"
MM3_LOST = FINDINGS / "ikev1-mm3-unanswered"  # MM3 dropped at the responder, sent 4 times, given up
MM3_STOPPED = FINDINGS / "ikev1-mm3-incomplete"  # the same, 1 retransmission, then 4 s of cleartext pings
FRAG_NEVER = DATA / "ikev1-frag" / "mm-frag-never.pcap"  # MM5's fragment 1 dropped every time
NO_PROPOSAL = FINDINGS / "ikev1-proposal-mismatch" / "capture.pcapng"
PSK = FINDINGS / "ikev1-psk-mismatch" / "capture.pcapng"


def _sa(cap: Path) -> IkeSa:
    (sa,) = [s for s in Session.from_files([cap]).table.ike_sas.values() if s.version == 1]
    return sa


def _log(path: Path, pattern: str) -> int:
    return len(re.findall(pattern, path.read_text()))


def _plain(s: str) -> str:
    return s.replace(NBSP, " ")


def test_mm3_never_answered_fails_with_no_response_as_ikev2_would() -> None:
    sa = _sa(MM3_LOST / "capture.pcapng")
    retransmits = _log(MM3_LOST / "charon-left.log", r"sending retransmit \d+ of request message ID 0")
    assert retransmits == 3 and "giving up after 3 retransmits" in (MM3_LOST / "charon-left.log").read_text()
    # the responder's charon received MM1 only: MM3 never reached it
    assert _log(MM3_LOST / "charon-right.log", r"received packet: from 198\.18\.0\.1") == 1
    st = sa.stall
    assert sa.state == SaState.FAILED and sa.failure == "no response" and st is not None
    assert (st.message, st.sender, st.waiting_for, st.next_message) == ("MM3", "198.18.0.1", "198.18.0.2", None)
    assert st.sent == 1 + retransmits and st.frames == (3, 4, 5, 6) and st.verdict == "no response"
    assert sa.state_word == "failed" and sa.failure_frame == 6
    assert _plain(sa.state_text()).startswith("failed: no answer to MM3 (frames 3, 4, 5, 6: sent 4 times); "
                                              "198.18.0.2 silent for ")


def test_mm3_unanswered_then_silence_is_incomplete() -> None:
    """One retransmission, then the initiator gave up (retransmit_tries 1) while the capture went on
    with cleartext pings: past a retransmit interval, short of IKEv2's "no response" rule."""
    sa = _sa(MM3_STOPPED / "capture.pcapng")
    assert "giving up after 1 retransmits" in (MM3_STOPPED / "charon-left.log").read_text()
    assert _log(MM3_STOPPED / "charon-right.log", r"received packet: from 198\.18\.0\.1") == 1
    st = sa.stall
    assert sa.state == SaState.INITIATING and st is not None and st.verdict == "incomplete"
    assert (st.message, st.sent, st.frames) == ("MM3", 2, (3, 4)) and 4 < st.silent_for < 10
    assert sa.state_word == "incomplete"
    assert _plain(sa.state_text()).startswith("incomplete: no answer to MM3 (frames 3, 4: sent 2 times); "
                                              "198.18.0.2 silent for 5.")


def test_mm5_lost_in_pieces_names_the_missing_fragment() -> None:
    sa = _sa(FRAG_NEVER)
    log = FRAG_NEVER.with_name("mm-frag-never.charon-left.log")
    retransmits = _log(log, r"sending retransmit \d+ of request message ID 0")
    st = sa.stall
    assert st is not None and sa.state == SaState.FAILED and sa.failure == "no response"
    assert st.message == "MM5" and st.unreassembled and st.lost_fragments == (1,) and st.fragments == 2
    assert st.sent == 1 + retransmits == 4 and st.frames == (5, 6, 7, 8)
    assert _plain(sa.state_text()).startswith(
        "failed: MM5 never completed: fragment 1 of 2 never arrived (frames 5, 6, 7, 8: sent 4 times), "
        "so 198.18.0.2 could not answer; 198.18.0.2 silent for 4.4 s")


def test_a_refusal_says_who_refused_and_where() -> None:
    sa = _sa(NO_PROPOSAL)
    assert "NO_PROPOSAL_CHOSEN" in (NO_PROPOSAL.parent / "charon-left.log").read_text()
    assert sa.stall is None and sa.failure_from == "198.18.0.2"
    assert sa.state_text() == f"failed: NO_PROPOSAL_CHOSEN from 198.18.0.2 (frame{NBSP}2)"
    psk = _sa(PSK)  # the responder's encrypted Informational instead of MM6: a refusal, not silence
    assert psk.stall is None and _plain(psk.state_text()).endswith("probably a PSK mismatch) from 198.18.0.2 (frame 6)")


@pytest.mark.parametrize(("cap", "message", "nxt"), [
    (DATA / "rfc-violations" / "ikev1-mm-answer-auth-goes-on.pcap", "MM3", None),
    (SAMPLES / "synthetic" / "hostile-text.pcap", "AM2", "AM3"),
])
def test_a_capture_ending_right_after_a_message_is_still_initiating(cap: Path, message: str, nxt: str | None) -> None:
    sa = _sa(cap)
    st = sa.stall
    assert sa.state == SaState.INITIATING and st is not None and st.verdict == "waiting"
    assert (st.message, st.next_message) == (message, nxt) and sa.state_word == "initiating"
    assert "yet; the capture ended" in sa.state_text()


def test_arkime_mm1_never_answered() -> None:
    cap = public("arkime/IKEv1.pcap")
    need(cap)
    sas = [s for s in Session.from_files([cap]).table.ike_sas.values() if s.state == SaState.FAILED]
    (sa,) = sas
    assert sa.failure == "no response" and sa.stall is not None and sa.stall.message == "MM1"
    assert sa.stall.silent_for > 60 and sa.failure_frame == 1


def test_responder_left_without_the_initiators_next_message_is_incomplete_not_failed() -> None:
    """ike-cert_synthetic (Arkime): an MM2 (both cookies, the responder's SA payload) and nothing of
    its IKE SA for 4000 s. The responder's message is no request: no "no response" (IKEv2's rule is
    for requests), the SA stays initiating as recorded, and says it is incomplete."""
    cap = public("arkime/ike-cert_synthetic.pcap")
    need(cap)
    sas = {s.ike_spi_i.hex(): s for s in Session.from_files([cap]).table.ike_sas.values() if s.version == 1}
    sa = sas["1122334455667788"]
    st = sa.stall
    assert sa.state == SaState.INITIATING and st is not None and st.verdict == "incomplete"
    assert (st.message, st.next_message, st.frames, st.sent) == ("MM2", "MM3", (1,), 1)
    assert sa.state_word == "incomplete" and _plain(sa.state_text()).startswith("incomplete: no MM3 after MM2 (frame 1)")


def test_established_sas_carry_no_stall() -> None:
    for cap in ("mm-cert-frag.pcap", "mm-frag-lost.pcap", "am-cert-frag.pcap"):
        sa = _sa(DATA / "ikev1-frag" / cap)
        assert sa.state == SaState.ESTABLISHED and sa.stall is None and sa.state_text() == "established"


def _split_pcap(src: Path, first: int, a: Path, b: Path) -> None:
    """``src`` (classic pcap) as two files: its first ``first`` records, and the rest."""
    data = src.read_bytes()
    head, off, recs = data[:24], 24, []
    order = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" or data[:4] == b"\x4d\x3c\xb2\xa1" else ">"
    while off < len(data):
        (incl,) = struct.unpack_from(order + "I", data, off + 8)
        recs.append(data[off:off + 16 + incl])
        off += 16 + incl
    a.write_bytes(head + b"".join(recs[:first]))
    b.write_bytes(head + b"".join(recs[first:]))


def test_live_a_later_message_takes_the_conclusion_back(tmp_path: Path) -> None:
    """mm-frag-lost: MM5's fragment 1 lost once, the retransmission completes it. Concluded (as
    live mode's finish does, with the clock 20 s on) before the retransmission, the SA fails "no
    response" on an MM5 never reassembled; the rest of the capture brings it up and the stall goes."""
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    _split_pcap(DATA / "ikev1-frag" / "mm-frag-lost.pcap", 5, a, b)  # MM1-MM4 and MM5's fragment 2
    s = Session()
    s.load(a)
    (sa,) = s.table.ike_sas.values()
    assert sa.state == SaState.INITIATING and sa.stall is not None and sa.stall.verdict == "waiting"
    s.tracker.finish(now=s.table.last_ts + 20)
    st = sa.stall
    assert sa.state == SaState.FAILED and st is not None and st.message == "MM5" and st.lost_fragments == (1,)
    s.load(b)
    assert sa.state == SaState.ESTABLISHED and sa.stall is None and sa.failure is None
    assert sa.state_text() == "established"


def test_every_view_says_the_same() -> None:
    cap = str(MM3_STOPPED / "capture.pcapng")
    (j,) = json.loads(cli("sas", "--json", cap))["ike_sas"]
    sa = _sa(MM3_STOPPED / "capture.pcapng")
    assert j["state"] == "initiating" and j["state_word"] == "incomplete"
    assert j["state_text"] == _plain(sa.state_text())
    assert j["stall"]["message"] == "MM3" and j["stall"]["verdict"] == "incomplete" and j["stall"]["frames"] == [3, 4]
    text = cli("sas", cap).splitlines()
    assert " INCOMPLETE " in text[0]
    assert any(_plain(line).endswith(j["state_text"]) for line in text)
    (f,) = json.loads(cli("sas", "--json", str(NO_PROPOSAL)))["ike_sas"]
    assert (f["failure_from"], f["failure_frame"]) == ("198.18.0.2", 2)


@sync
async def test_tui_tree_and_detail() -> None:
    from ipsecscope.tui.app import create_app
    from ipsecscope.tui.widgets.sa_detail import SaDetail
    from ipsecscope.tui.widgets.sa_tree import ike_essential

    app = create_app(MM3_STOPPED / "capture.pcapng", [])
    async with app.run_test(size=SIZE) as pilot:
        tree = await open_detail(pilot, "ike")
        sa = app.session.table.ike_sas[tree.current_ref.key]
        label = ike_essential(sa)  # the tree's label: the one state word
        assert label.plain.endswith(" incomplete") and "red" in str(label.spans[-1].style)
        text = re.sub(r"\s+", " ", _plain(app.query_one(SaDetail).as_text(width=400)))
        assert f"State {_plain(sa.state_text())}" in text


AM_PSK = FINDINGS / "ikev1-am-psk-mismatch"  # Aggressive Mode, different PSKs: AM2 refused by the initiator


@pytest.mark.parametrize("keys", [False, True])
def test_aggressive_mode_refused_by_the_initiator(keys: bool) -> None:
    """The initiator cannot verify AM2's HASH_R and answers with an encrypted Informational
    (charon-left: "calculated HASH does not match HASH payload", N(AUTH_FAILED)) while the responder
    retransmits AM2: a refusal from 198.18.0.1, not silence, and not the responder's "no AM3"."""
    left = (AM_PSK / "charon-left.log").read_text()
    assert "calculated HASH does not match HASH payload" in left and "N(AUTH_FAILED)" in left
    assert _log(AM_PSK / "charon-right.log", r"sending retransmit \d+ of response message ID 0") == 3
    s = Session.from_files([AM_PSK / "capture.pcapng"], [AM_PSK / "charon-left.log"] if keys else [])
    (sa,) = s.table.ike_sas.values()
    assert sa.state == SaState.FAILED and sa.failure_from == "198.18.0.1" and sa.failure_frame == 3
    assert sa.stall is None and sa.mode == "Aggressive"
    want = ("AUTHENTICATION_FAILED" if keys else
            "Aggressive Mode AUTH refused (encrypted Informational after AM2; probably a PSK mismatch)")
    assert sa.state_text() == f"failed: {want} from 198.18.0.1 (frame{NBSP}3)"
    (f,) = [f for f in s.findings if f.code == "IKE-AUTH-FAILED"]
    assert ("198.18.0.1 rejected 198.18.0.2's AUTH" if keys else
            "Aggressive Mode refused by 198.18.0.1 after 198.18.0.2's AM2") in f.title
