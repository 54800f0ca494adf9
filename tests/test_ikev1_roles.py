"""Who initiated an IKEv1 phase 1 when the capture starts after its first message.

IKEv1 headers carry no role (RFC 2408 §3.1); ipsecscope took the sender of the first message seen
as the initiator and, with the responder cookie already set, called the IKE SA established. But
phase 1's messages say who sent them (RFC 2409 §5): the initiator sends its SA payload only in the
first message, whose responder cookie is zero, so an SA payload beside both cookies is the
responder's choice (MM2, AM2), and phase 1 is under way, not done. Without an SA payload, a sender
on UDP 500/4500 writing to another port answers an initiator a NAT moved (RFC 3947 §3).

Data: complete phase-1 exchanges cut after their first message (tcpdump's ISAKMP_sa_setup.pcap,
BSD; Zeek spicy-ipsec's aggressive-mode capture, BSD-3; Arkime's IKEv1.pcap, Apache-2.0), whose
roles the whole capture shows; Openswan pluto unit-test messages (GPL-2.0) the responder sent to
an initiator behind a NAT, one alone in each file. Found on an ISAKMP reflection capture
(thousands of MM2 from UDP 4500 to one spoofed address): every reflector was called the
initiator of an established IKE SA whose request went unanswered.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import public
from test_inference_order import _without

from ipsecscope.model.sa import SaState
from ipsecscope.session import Session

# capture, the frame of the first phase-1 message (MM1 / AM1), initiator, responder
PHASE1 = [
    (public("tcpdump/ISAKMP_sa_setup.pcap"), 1, "10.0.0.1", "10.0.0.2"),
    (public("zeek-spicy-ipsec/ipsec-ikev1-isakmp-aggressive-mode.pcap"), 1, "192.168.12.1", "192.168.12.2"),
    (public("arkime/IKEv1.pcap"), 2, "2003:51:6012::4", "2003:51:6012::2"),
]
# third-party (Openswan pluto unit tests, Cisco joy): materialised at test time (tests/public_data.py)
PLUTO_N1 = public("openswan-unit/lp104-v1rwnatN1.pcap")
PLUTO_N3 = public("openswan-unit/lp108-v1rwnatN3.pcap")
JOY_V1 = public("joy/ikev1.pcap")


def _ike(cap: Path, first_frame: int):
    s = Session()
    s.load(cap)
    return next(sa for sa in s.table.ike_sas.values() if sa.frames and sa.frames[0] >= first_frame - 1
                and sa.ike_spi_r != bytes(8))


@pytest.mark.parametrize(("cap", "first", "init", "resp"), PHASE1, ids=lambda v: getattr(v, "name", None))
def test_a_capture_that_starts_after_the_first_message_keeps_the_roles(tmp_path, cap, first, init, resp):
    whole = _ike(cap, first)
    assert (whole.initiator, whole.responder) == (init, resp)
    assert whole.state == SaState.ESTABLISHED
    cut = _ike(_without(cap, tmp_path / cap.name, {first}), first)
    assert (cut.initiator, cut.responder) == (init, resp)
    assert (cut.state, cut.proposal, cut.mode) == (whole.state, whole.proposal, whole.mode)
    p1 = cut.exchanges[0]
    # MM1/AM1 is gone: the initiator's requests of phase 1 start after the responder's first answer.
    assert p1.requester == init and p1.response_frames[0] < min(p1.request_frames, default=10**9)


@pytest.mark.parametrize(("cap", "port"), [(PLUTO_N1, 55044), (PLUTO_N3, 55045)], ids=["N1", "N3"])
def test_a_responders_message_alone_names_the_responder(cap, port):
    """N1 (MM2: the chosen 3des-md5-modp2048) and N3 (MM6, encrypted, from UDP 4500) from sun
    (192.168.0.2) to alice behind a NAT (93.184.216.34): sun is the responder and phase 1 is not
    established by a message in its middle (it was 'ESTABLISHED?' with alice as the responder,
    and N1's chosen transform was read as an offer)."""
    s = Session()
    s.load(cap)
    (sa,) = s.table.ike_sas.values()
    assert (sa.initiator, sa.initiator_port, sa.responder) == ("93.184.216.34", port, "192.168.0.2")
    assert sa.state == SaState.INITIATING and not sa.state_inferred
    if cap == PLUTO_N1:
        assert sa.proposal == "3des-md5-modp2048" and not sa.offered


def test_a_notify_without_the_responder_cookie_is_the_same_negotiation():
    """Cisco joy's ikev1.pcap (tests/data/joy, BSD-3): the initiator answers MM2 (frame 2) with a
    cleartext Informational NO-PROPOSAL-CHOSEN under its cookie and a zero responder cookie
    (frame 3), then goes on when the responder sends MM2 again (frame 4) through MM6 and a Quick
    Mode. The cookies name one ISAKMP SA (RFC 2408 §3.1): one IKE SA, established, the notify a
    one-way Informational of its own (it was a second IKE SA, FAILED with NO_PROPOSAL_CHOSEN, and
    the notify would have been a request of Main Mode's exchange)."""
    s = Session()
    s.load(JOY_V1)
    (sa,) = s.table.ike_sas.values()
    assert (sa.initiator, sa.responder, sa.state, sa.failure) == ("192.168.140.205", "192.168.140.200",
                                                                 SaState.ESTABLISHED, None)
    mm, info, qm = sa.exchanges
    assert (mm.exchange, mm.request_frames, mm.response_frames, mm.error) == (2, [1, 5, 7], [2, 4, 6, 8], None)
    assert (info.exchange, info.request_frames, info.error_name) == (5, [3], "NO_PROPOSAL_CHOSEN")
    assert qm.exchange == 32 and qm.request_frames == [9, 11]
