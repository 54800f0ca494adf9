"""IKE-RETRANSMIT says what the capture shows: a request sent again and answered after, or sent
again and never answered (RFC 7296 §2.1: the requester resends while it has no usable answer).

On mm-frag-never (tests/data/ikev1-frag, strongSwan 5.9.8: MM5's fragment 1 lost on every try)
the finding said "1 exchange was answered only after the request was sent again": Main Mode's
one exchange holds MM1/MM3/MM5, and the answers to MM1 and MM3 were taken for answers to the
resent MM5, which nothing ever answered.
"""

from __future__ import annotations

from conftest import DATA

from ipsecscope.model.sa import Severity
from ipsecscope.session import Session

HERE = DATA / "ikev1-frag"


def _retransmit(name: str):
    s = Session()
    s.load(HERE / f"{name}.pcap")
    (f,) = [f for f in s.findings if f.code == "IKE-RETRANSMIT"]
    return f


def test_never_answered_is_said_so() -> None:
    f = _retransmit("mm-frag-never")
    assert f.severity == Severity.WARNING
    assert f.title == "3 IKE retransmissions between 198.18.0.1 and 198.18.0.2: 198.18.0.2 never answered"
    assert "answered only after" not in f.explanation
    assert f.explanation.startswith("198.18.0.1 sent frame 5 (Main Mode #0) again 3 times (frames 6, 7, 8) and "
                                    "198.18.0.2 never answered it in this capture (198.18.0.2 had answered the "
                                    "exchange's earlier messages: frames 2, 4)")
    assert f.frames == (5, 6, 7, 8)


def test_answered_after_retransmission_says_how_many() -> None:
    """mm-frag-lost: MM5's fragment 2 was resent once (frame 7) and MM6 answered it (frames 8, 9)."""
    f = _retransmit("mm-frag-lost")
    assert f.severity == Severity.INFO and "never" not in f.title + f.explanation
    assert "answered only after the request was sent again (Main Mode #0; 1 retransmission)" in f.explanation


# The same classes on a clean strongSwan IKEv1 run (tests/data/samples ikev1-dead-peer: MM1-MM6
# frames 1-6, QM1-QM3 frames 7-9), with a retransmission added where the requester's timer
# would send it.
def _v1_findings(change) -> dict:
    import dataclasses

    from conftest import SAMPLES, ike_messages

    from ipsecscope.analysis.rules import evaluate
    from ipsecscope.state.tracker import Tracker

    msgs = ike_messages(SAMPLES / "ikev1-dead-peer" / "capture.pcapng")
    by = {m.frame: m for m in msgs}

    def again(frame: int, dt: float, new: int):
        return dataclasses.replace(by[frame], frame=new, ts=by[frame].ts + dt)

    tr = Tracker()
    for m in change(msgs, again):
        tr.on_ike(m)
    tr.finish()
    return {f.code: f for f in evaluate(tr.table)}


def test_v1_answer_before_the_copy_is_not_answered_after() -> None:
    """MM5 resent 1.5 s after MM6 was captured: the answer did not reach the initiator (before,
    'answered only after the request was sent again')."""
    f = _v1_findings(lambda msgs, again: [*msgs[:9], again(5, 1.5, 1000), *msgs[9:]])["IKE-RETRANSMIT"]
    assert f.title.endswith("198.18.0.2's answers do not reach 198.18.0.1")
    assert f.explanation.startswith("198.18.0.2 answered Main Mode #0 (frame 6) before 198.18.0.1 sent it again "
                                    "(frame 1000): the answer did not reach 198.18.0.1")
    assert f.frames == (5, 6, 1000)


def test_v1_request_resent_never_answered() -> None:
    """MM6 never came: MM5 resent 3 times, unanswered (MM2 and MM4 answered MM1 and MM3)."""
    f = _v1_findings(lambda msgs, again: [*msgs[:5], again(5, 1, 1001), again(5, 2.4, 1002), again(5, 4.4, 1003)])[
        "IKE-RETRANSMIT"]
    assert f.severity == Severity.WARNING and f.title.endswith(": 198.18.0.2 never answered")
    assert "sent frame 5 (Main Mode #0) again 3 times (frames 1001, 1002, 1003)" in f.explanation
    assert "had answered the exchange's earlier messages: frames 2, 4" in f.explanation


def test_v1_final_quick_mode_message_resent_is_not_unanswered() -> None:
    """QM3 gets no answer by design (RFC 2409 §5.5): sent again, it is not 'never answered'."""
    f = _v1_findings(lambda msgs, again: [*msgs[:9], again(9, 2.0, 1000), *msgs[9:]])["IKE-RETRANSMIT"]
    assert "never" not in f.title + f.explanation
