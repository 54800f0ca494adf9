"""Extended Sequence Number inference for a passive observer (RFC 4303 §2.2.1, §3.3.3, App. A).

Only the low 32 bits of an ESN travel on the wire; the high 32 bits enter the ICV (non-AEAD:
appended after the payload, §3.3.3) or the AAD (AEAD: SPI | seq_hi | seq_lo, RFC 4106 §5). A
receiver reconstructs them from its window (Appendix A2.2). We are not the receiver: we do not know
the window size and may miss packets, so we use the Appendix A rule with the widest window that
stays unambiguous (2^31, "the candidate closest to the highest sequence number seen") to *order*
candidates, and let the ICV decide. A wrong guess costs one extra ICV check, never a wrong result.

Without any history we also have to decide whether the SA uses ESN at all (IKEv2 negotiates it
with transform type 5, which is encrypted in IKE_AUTH and may not be in the capture): first
without ESN, then ESN with high bits 0, 1, … ``SEARCH_HI`` (a capture may start long after the
first wrap). Once one packet verifies, the SA's mode is known and kept.
"""

from __future__ import annotations

_HALF = 1 << 31
_MASK32 = 0xFFFFFFFF

# How far to search the high bits of an SA with no history, and for how many packets of an SA
# before giving up (a wrong key would otherwise cost SEARCH_HI + 2 checks on every packet).
SEARCH_HI = 16
SEARCH_PACKETS = 8


def candidates(top: int, seq_lo: int) -> tuple[int, ...]:
    """High-bit candidates for ``seq_lo`` given the highest full sequence number ``top`` seen on
    the SA, most likely first.

    RFC 4303 Appendix A2.2 with W = 2^31: if ``seq_lo`` is far *below* the low bits of ``top``,
    the counter wrapped (Th + 1); if far *above*, it is a late packet from before the wrap
    (Th - 1); otherwise the same high bits. The other neighbours follow, for the ICV to decide.
    """
    th = top >> 32
    tl = top & _MASK32
    if tl >= seq_lo:
        primary = th + 1 if tl - seq_lo > _HALF else th
    else:
        primary = th - 1 if seq_lo - tl > _HALF else th
    out = [primary]
    for h in (th, th + 1, th - 1):
        if h != primary and 0 <= h <= _MASK32:
            out.append(h)
    if primary < 0 or primary > _MASK32:
        out.pop(0)
    return tuple(out)


def search_order() -> tuple[int, ...]:
    """High bits to try for an ESN SA with no history."""
    return tuple(range(SEARCH_HI + 1))
