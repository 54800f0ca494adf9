"""Which SAs are open, for a reader: the status line's "N IKE/M CHILD SA open" (live mode).

The SA state machine records what the capture shows (state/): an IKE SA stays ESTABLISHED until a
Delete or a failure is seen. Two findings say an established IKE SA is gone although no Delete
can be in the capture: IKE-DEAD-PEER (the requester retransmitted into silence; it gives up and
deletes the IKE SA and all its CHILD SAs, RFC 7296 §2.4) and IKE-PEER-RESTARTED (the peer lost
its state: it no longer has the old SAs). Counting such an SA as open read "2 IKE/1 CHILD SA open"
with no tunnel up (live4's walkthrough, during the proposal mismatch after a peer restart). The
recorded states stay as they are (sas JSON): only what "open" counts follows the findings.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model.sa import Finding, SaState, SaTable

# Findings whose SA (an IKE SA's key) is gone with its CHILD SAs, though no Delete is captured.
GONE_CODES = ("IKE-DEAD-PEER", "IKE-PEER-RESTARTED")
_OPEN = (SaState.ESTABLISHED, SaState.INFERRED)


def gone_ike_sas(findings: Iterable[Finding]) -> set[str]:
    """Keys of the IKE SAs a dead-peer or peer-restarted finding says are gone (an aggregated
    finding's members too)."""
    out: set[str] = set()
    for f in findings:
        if f.code in GONE_CODES:
            out.update(s for s in (f.sa, *(m.sa for m in f.members)) if s)
    return out


def open_counts(table: SaTable, findings: Iterable[Finding]) -> tuple[int, int]:
    """(IKE SAs, CHILD SAs) open: established (or inferred from traffic), not deleted, failed or
    replaced by a rekey, and not gone with a dead or restarted peer."""
    gone = gone_ike_sas(findings)
    n_ike = sum(sa.state in _OPEN and sa.key not in gone for sa in table.ike_sas.values())
    n_child = sum(c.state in _OPEN and c.ike_sa not in gone for c in table.child_sas.values())
    return n_ike, n_child
