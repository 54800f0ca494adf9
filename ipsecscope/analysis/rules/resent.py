"""What a capture says of an IKE request sent again (IKE-RETRANSMIT, analysis.rules.liveness):
answered before the copy (the answer did not reach the requester), after it, or never.

RFC 7296 §2.1: the requester sends a request again only while it has no answer it can use. An
IKEv2 exchange has one request, and its first copy's frame and time are kept; an IKEv1 exchange
holds several requests (Main Mode's MM1, MM3, MM5 share Message ID 0) and a copy may repeat any
of them, so its answer is looked for between the request the copy repeats and the copy
(``IkeExchange.copy_frames``).
"""

from __future__ import annotations

from ...model.iana import Ikev1Exchange
from ...model.sa import IkeExchange

__all__ = ["early", "original", "unanswered", "unanswered_frames"]


def early(x: IkeExchange) -> tuple[int, int, int, float | None] | None:
    """(request, answer, copy, seconds from answer to copy) when the capture holds an answer to a
    request before the request's copy, else None. IKEv2 has one request per exchange and keeps
    its first copy's time; an IKEv1 exchange's copy may repeat any of its requests (MM1, MM3,
    MM5): the answer is one between the request the copy repeats and the copy (no time kept)."""
    if x.first_copy_frame is not None:
        if x.response_frames[0] < x.first_copy_frame:
            gap = (x.first_copy_ts or 0.0) - (x.response_ts or 0.0)
            return x.request_frames[0], x.response_frames[0], x.first_copy_frame, gap
        return None
    for copy in x.copy_frames:
        orig = original(x, copy)
        answers = [f for f in x.response_frames if orig is not None and orig < f < copy]
        if answers:
            return orig or 0, answers[0], copy, None
    return None


def unanswered(x: IkeExchange) -> list[int]:
    """The copies of a request that was never answered: those after the exchange's last response,
    when no response came after the request they repeat either (an answer between the request
    and its copy answered it; the requester just did not get it). [] when none."""
    last = max(x.response_frames, default=0)
    copies = [f for f in x.copy_frames if f > last]
    if not copies:
        return []
    orig = original(x, copies[0])
    if orig is not None and last >= orig:
        return []
    # An IKEv1 exchange's request after the first answer is its final message when the exchange is
    # not Main Mode (AM3, QM3: RFC 2409 §5, §5.5): it gets no answer by design.
    if orig is not None and x.exchange != Ikev1Exchange.MAIN_MODE and orig > x.response_frames[0]:
        return []
    return copies


def original(x: IkeExchange, copy: int) -> int | None:
    """The request frame a copy repeats: the last one before it that is no copy itself (the
    request's last SKF fragment; IKEv1: the message the exchange sent last)."""
    return max((f for f in x.request_frames if f < copy and f not in x.copy_frames), default=None)


def unanswered_frames(x: IkeExchange) -> list[int]:
    """The request resent unanswered and its first copies (the finding's frames)."""
    copies = unanswered(x)
    orig = original(x, copies[0])
    return ([orig] if orig is not None else []) + copies[:3]
