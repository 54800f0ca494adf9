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
