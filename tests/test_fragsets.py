"""decode.fragsets.PendingSets bounds IKEv2's SKF reassembly (crypto/ike_sk) as it bounds IKEv1's
pieces (state/ikev1_frag, test_ike_frag_v1_flood): the oldest incomplete message is given up first.

Real data: tests/data/ikev2-skf/gcm (two strongSwan charons, IKE_AUTH request in 3 SKF fragments,
response in 2), decrypted with the initiator's charon log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "ikev2-skf" / "gcm"


def _decrypt(order: list[int], max_sets: int | None):
    from conftest import ike_messages

    from ipsecscope.crypto.ike_sk import IkeDecryptor
    from ipsecscope.keys import load_keys

    if not (DATA / "capture.pcapng").exists():
        pytest.skip(f"{DATA} not generated (python3 tests/test_ike_sk_skf.py)")
    msgs = {m.frame: m for m in ike_messages(DATA / "capture.pcapng")}
    d = IkeDecryptor(load_keys([DATA / "charon-left.log"]))
    if max_sets is not None:
        d._frags.max_sets = max_sets  # noqa: SLF001 - the bound under test
    out = [d.decrypt(msgs[f]) for f in order]
    return d, out


def test_skf_sets_interleaved_complete_within_the_bound() -> None:
    # request 1/3, response 1/2, request 2/3 and 3/3, response 2/2: two sets pending at once
    d, out = _decrypt([3, 6, 4, 5, 7], None)
    assert d.stats.reassembled == 2 and d._frags.given_up == 0  # noqa: SLF001
    assert [bool(m.inner) for m in out] == [False, False, False, True, True]


def test_skf_oldest_set_given_up_past_the_bound() -> None:
    """One set at most: the response's first fragment gives up the request's set (its fragment 1
    with it), and so on: nothing completes, and every drop is counted."""
    d, out = _decrypt([3, 6, 4, 5, 7], 1)
    assert d.stats.reassembled == 0 and not any(m.inner for m in out)
    assert d._frags.given_up == 3 and len(d._frags) == 1  # noqa: SLF001
