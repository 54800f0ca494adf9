"""Does an IKEv2 answer's SA fit the offer it answers?

RFC 7296 §3.3: the responder accepts a single proposal, and "the proposal number in the SA
payload MUST match the number on the proposal sent that was accepted"; §2.7 and §3.3.6: it picks
one transform of each type from that proposal, never one the proposal does not carry (a key length
is part of the transform, §3.3.5). §1.2: in IKE_SA_INIT the chosen KE group is the group of the
initiator's KE payload, or the answer is INVALID_KE_PAYLOAD instead. An initiator checks the answer
against what it sent: strongSwan fails the exchange ("peer's proposal selection invalid" for the
IKE SA, "no acceptable proposal found" for a CHILD SA, "peer's DH group selection invalid"), so a
responder that answers outside the offer breaks the negotiation even though the answer parses.

Only IKEv2. An IKEv1 answer carries the transform it took with its attributes, and stacks differ
in what they echo (lifetimes shortened in the answer, or told by RESPONDER-LIFETIME, RFC 2407
§4.6.3.1): checking it needs field captures of each stack first.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..model import iana
from ..model.ike import Proposal, Transform
from ..model.proposals import dh_keyword, encr_keyword, integ_keyword, prf_keyword
from ..model.sa import AnswerUnfit

_T = iana.TransformType


def transform_text(t: Transform) -> str:
    """One transform as its strongSwan keyword ("aes128gcm16", "sha256", "ecp256", "esn")."""
    if t.type == _T.ENCR:
        return encr_keyword(t.id, t.key_length)
    if t.type == _T.INTEG:
        return integ_keyword(t.id)
    if t.type == _T.PRF:
        return prf_keyword(t.id)
    if t.type == _T.KE:
        return dh_keyword(t.id)
    if t.type == _T.ESN:
        return "esn" if t.id == 1 else "noesn"
    return f"transform {t.type}/{t.id}"


def _key(t: Transform) -> tuple[int, int, int | None]:
    return (t.type, t.id, t.key_length)


def _outside(offered: Proposal, answer: Proposal) -> list[Transform]:
    """The answer's transforms that ``offered`` does not carry (type, ID and key length)."""
    have = {_key(t) for t in offered.transforms}
    return [t for t in answer.transforms if _key(t) not in have]


def answer_unfit(offer: Sequence[Proposal], answer: Proposal, ke_group: int | None = None) -> AnswerUnfit | None:
    """Why ``answer`` (the one proposal of a response) does not fit ``offer`` (the request's
    proposals), or None when it does or the offer was not seen. ``ke_group``: the group of the
    request's KE payload, when the answer must agree with it (IKE_SA_INIT)."""
    if not offer:
        return None
    same = next((p for p in offer if p.num == answer.num), None)
    if same is None or same.protocol != answer.protocol or _outside(same, answer):
        # Renumbered? The transforms fit another proposal of the offer.
        home = next((p for p in offer if p.protocol == answer.protocol and not _outside(p, answer)), None)
        if home is not None and home.num != answer.num:
            return AnswerUnfit("number", f"the answer numbers its proposal #{answer.num}, the offer numbered it "
                               f"#{home.num} (RFC 7296 §3.3: the number must match the proposal accepted)")
        if same is None:
            nums = ", ".join(f"#{p.num}" for p in offer)
            return AnswerUnfit("transform", f"the answer accepts proposal #{answer.num}; the offer holds {nums} only")
        if same.protocol != answer.protocol:
            return AnswerUnfit("transform", f"the answer's proposal #{answer.num} is for protocol "
                               f"{_proto(answer.protocol)}, the offer's #{same.num} for {_proto(same.protocol)}")
        missing = ", ".join(transform_text(t) for t in _outside(same, answer))
        return AnswerUnfit("transform", f"the answer picks {missing}, which proposal #{same.num} of the offer "
                           "does not carry")
    types = [t.type for t in answer.transforms]
    twice = sorted({t for t in types if types.count(t) > 1})
    if twice:  # §3.3.6: one transform of each type
        names = ", ".join(iana.name(_T, t) for t in twice)
        return AnswerUnfit("transform", f"the answer picks more than one transform of type {names}")
    if ke_group is not None:
        groups = [t.id for t in answer.transforms if t.type == _T.KE]
        if groups and groups[0] != ke_group:
            return AnswerUnfit("ke", f"the answer picks KE group {dh_keyword(groups[0])} but the request's KE "
                               f"payload is {dh_keyword(ke_group)} (RFC 7296 §1.2: that answer is INVALID_KE_PAYLOAD)")
    return None


def _proto(p: int) -> str:
    return iana.name(iana.ProtocolId, p)
