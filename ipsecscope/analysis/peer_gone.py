"""Which IKE SAs' peers are gone, as the findings establish it, recorded on the model.

The SA state machine records what the capture shows (state/): an IKE SA stays ESTABLISHED until a
Delete or a failure is seen, and a peer that died or restarted sends no Delete. IKE-DEAD-PEER
(its peer stopped answering requests on the SA; the requester deletes it after its
retransmissions, RFC 7296 §2.4) and IKE-PEER-RESTARTED (the peer answered a fresh IKE_SA_INIT but
not the old SA: it lost its state) say the SA is gone. :func:`mark_peers_gone` writes that on
each such SA (``IkeSa.peer_gone``) when the rules are evaluated (analysis.rules.core.evaluate), so
every view shows the state as the evidence says it (``IkeSa.state_text``: "established, peer
198.18.0.2 dead since 11:56:50 UTC"), none works it out for itself; the recorded ``state`` stays
what the capture shows (sas JSON keeps it, beside ``peer_gone``).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model.sa import Finding, IkeSa, PeerGone, SaState, SaTable, other_end
from .open_sas import GONE_CODES

# The rules that give GONE_CODES: R06 (IKE-DEAD-PEER among unanswered requests), R70
# (IKE-PEER-RESTARTED); a view without the findings runs these alone (rules.core.evaluate_some)
GONE_RULES = (6, 70)

_HOW = {"IKE-DEAD-PEER": "dead", "IKE-PEER-RESTARTED": "restarted"}
assert set(_HOW) == set(GONE_CODES)
_UP = (SaState.ESTABLISHED, SaState.REKEYED)


def _silent_peer(sa: IkeSa, frames: Iterable[int]) -> str | None:
    """The peer the finding's evidence shows silent: the other end of the requester of an
    unanswered request among ``frames`` (a request answered only with INVALID_IKE_SPI is
    unanswered too: the peer no longer knows the SA, RFC 7296 §2.21.4)."""
    wanted = set(frames)
    for x in sa.exchanges:
        if x.response_frames and x.error_name != "INVALID_IKE_SPI":
            continue
        if wanted.intersection(x.request_frames):
            return other_end(sa, x.requester)  # a requester that moved (MOBIKE, RFC 4555 §3.5) keeps its role
    return None


def mark_peers_gone(table: SaTable, findings: Iterable[Finding]) -> None:
    """Set ``IkeSa.peer_gone`` on every IKE SA still up by its recorded state whose peer a finding
    says is gone (an aggregated finding's members each), and clear it on the others (live mode
    evaluates again as the capture grows: a finding may go)."""
    gone: dict[str, PeerGone] = {}
    for f in findings:
        how = _HOW.get(f.code)
        if how is None:
            continue
        for key, frames, ts in ([(m.sa, m.frames, m.ts) for m in f.members] or [(f.sa, f.frames, f.ts)]):
            sa = table.ike_sas.get(key) if key else None
            if sa is None or sa.state not in _UP or key in gone:
                continue
            peer = _silent_peer(sa, frames)
            if peer is not None:
                gone[key] = PeerGone(peer, how, ts, f.code)
    for key, sa in table.ike_sas.items():
        g = gone.get(key)
        if sa.peer_gone != g:
            sa.peer_gone = g

