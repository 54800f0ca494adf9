"""Issue 11 item 6: an initiator that sends its first IKE message again (responder SPI still zero)
after the answer is already on the wire is retransmitting (RFC 7296 §2.1; RFC 2408 §3.1 for IKEv1
cookies); that request was answered, so there is no IKE-NO-RESPONSE.

Built from real frames: the strongSwan samples' own first request and its answer, each sent a
second time (same bytes, later frame) right after the answer, as a peer that lost the answer would.
"""

from __future__ import annotations

import dataclasses

import pytest
from conftest import SAMPLES, ike_messages

from ipsecscope.analysis.rules import evaluate
from ipsecscope.state.tracker import Tracker

ZERO = b"\x00" * 8


def _run(msgs) -> Tracker:
    tr = Tracker()
    for m in msgs:
        tr.on_ike(m)
    tr.finish()
    return tr


def _codes(tr: Tracker) -> list[str]:
    return [f.code for f in evaluate(tr.table)]


@pytest.mark.parametrize("sample", ["healthy-gcm", "ikev1-dead-peer"])
def test_first_request_sent_again_after_its_answer_is_a_retransmission(sample):
    msgs = ike_messages(SAMPLES / sample / "capture.pcapng")
    req = msgs[0]
    assert req.header.spi_r == ZERO
    answer = next(m for m in msgs[1:] if m.header.spi_i == req.header.spi_i and m.src == req.dst)
    assert answer.header.spi_r != ZERO
    i = msgs.index(answer)
    # The copies carry the originals' bytes; only frame number and time differ.
    again = dataclasses.replace(req, frame=10**6, ts=answer.ts + 0.5)
    answer_again = dataclasses.replace(answer, frame=10**6 + 1, ts=answer.ts + 0.51)
    base, tr = _run(msgs), _run([*msgs[:i + 1], again, answer_again, *msgs[i + 1:]])
    assert len(tr.table.ike_sas) == len(base.table.ike_sas)  # no second, unanswered IKE SA
    sa = tr.table.ike_sas[f"{req.header.spi_i.hex()}_{answer.header.spi_r.hex()}"]
    x = sa.exchanges[0]
    assert x.retransmits == 1 and 10**6 in x.request_frames
    assert x.response_retransmits == 1 and 10**6 + 1 in x.response_frames
    assert sa.state == base.table.ike_sas[sa.key].state
    assert "IKE-NO-RESPONSE" not in _codes(tr)
    # What it is, a retransmission (answered), is reported as such; nothing else changes.
    assert sorted(c for c in _codes(tr) if c != "IKE-RETRANSMIT") == sorted(_codes(base))


def test_a_changed_first_request_with_the_same_spi_is_still_a_new_attempt():
    """Only a byte-identical copy is a retransmission: another IKE_SA_INIT that reuses the SPIi
    after the first one was answered is not folded into it."""
    msgs = ike_messages(SAMPLES / "healthy-gcm" / "capture.pcapng")
    req = msgs[0]
    answer = next(m for m in msgs[1:] if m.header.spi_i == req.header.spi_i and m.src == req.dst)
    i = msgs.index(answer)
    raw = bytearray(req.raw)
    raw[-1] ^= 0xFF  # the last byte of the last payload: another message
    other = dataclasses.replace(req, frame=10**6, ts=answer.ts + 0.5, raw=bytes(raw))
    tr = _run([*msgs[:i + 1], other])
    assert len(tr.table.ike_sas) == 2
