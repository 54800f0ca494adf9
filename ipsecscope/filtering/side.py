"""The side tables a filter reads besides the rows, cut to one window's frames.

The decoder and the session keep what few frames have in dicts keyed by frame number: the IPv6
extension-header chains in front of IPsec, the tunnels' IP headers around it, the RFC 8229 TCP
connections, the nested ESP layers of tunnel-mode packets, the decoded IKE messages. A window
(``frames``: its rows' frame numbers, ascending) takes the entries between its first and last
frame; each is a dict look-up or a short loop, never a pass per row in Python.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..decode.quoted import QuotedStore
from ..model.ike import IkeMessage
from .values import ike_field, quoted_ike_field

TunnelHop = tuple[int, str, str, int, int, int]  # decode.demux.Decoder.tunnels: one IP header
V6Chain = tuple[tuple[int, int], ...]  # decode.demux.Decoder.v6_ext: (number, Next Header) each


def tunnel_hops(tunnels: Mapping[int, tuple[TunnelHop, ...]] | None,
                frames: np.ndarray) -> dict[int, tuple[TunnelHop, ...]]:
    """The tunnels' IP headers around each frame's IPsec (GRE, IP in IP, VXLAN...: decode.tunnel)."""
    if not tunnels or not len(frames):
        return {}
    lo, hi = int(frames[0]), int(frames[-1])
    between = getattr(tunnels, "between", None)  # decode.tunnel.TunnelHops: no walk over the rest
    if between is not None:
        return between(lo, hi)
    return {f: h for f, h in tunnels.items() if lo <= f <= hi}


def rfc8229_rows(tuples: Mapping[tuple[str, str, int, int], None] | None, addrs: list[str], arr: np.ndarray,
                 cand: np.ndarray) -> np.ndarray:
    """Rows (among ``cand``: rows with ports) of the RFC 8229 TCP connections the decoder saw;
    ``addrs`` is the address table the rows' ``src``/``dst`` index."""
    out = np.zeros(len(arr), dtype=bool)
    if not tuples or not cand.any():
        return out
    ix = {a: i for i, a in enumerate(addrs)}
    a = arr
    for s, d, sp, dp in tuples:
        si, di = ix.get(s), ix.get(d)
        if si is not None and di is not None:
            out |= cand & (a["src"] == si) & (a["dst"] == di) & (a["sport"] == sp) & (a["dport"] == dp)
    return out


def tcp_flags(flags: tuple[Sequence[int], Sequence[int]] | None, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The TCP flags of each row's segment where an RFC 8229 connection carried it (the
    decoder's (frames, flags) arrays, frames increasing), and where there are any."""
    vals = np.zeros(len(frames), dtype=np.int64)
    if not flags or not len(frames):
        return vals, np.zeros(len(frames), dtype=bool)
    fr, fl = flags
    n = min(len(fr), len(fl))  # live mode: a segment being appended is not there yet
    i = bisect.bisect_left(fr, int(frames[0]), 0, n)
    j = bisect.bisect_right(fr, int(frames[-1]), i, n)
    f = np.array(fr[i:j], dtype=np.int64)
    if not len(f):
        return vals, np.zeros(len(frames), dtype=bool)
    pos = np.minimum(np.searchsorted(f, frames), len(f) - 1)
    hit = f[pos] == frames
    vals[hit] = np.array(fl[i:j], dtype=np.int64)[pos[hit]]
    return vals, hit


def v6_chains(v6_ext: Mapping[int, V6Chain] | None, frames: np.ndarray) -> dict[int, V6Chain]:
    """The extension-header chains of the window's frames (few: a dict look-up each)."""
    ext = v6_ext
    if not ext or not len(frames):
        return {}
    lo, hi = int(frames[0]), int(frames[-1])
    if len(ext) < hi - lo:
        return {f: c for f, c in ext.items() if lo <= f <= hi}
    return {f: c for f in range(lo, hi + 1) if (c := ext.get(f)) is not None}


def v6_fixed_nxt(chains: dict[int, V6Chain], frames: np.ndarray, out_proto: np.ndarray,
                 where: np.ndarray) -> np.ndarray:
    """ipv6.nxt of the outer header is the fixed header's Next Header, as tshark reads it:
    behind extension headers (RFC 8200 §4) that is the first one's number, not the
    ESP/AH/UDP/TCP protocol the row's kind implies. ``chains`` from :func:`v6_chains`."""
    if not chains:
        return out_proto
    out = out_proto.copy()
    cf = np.fromiter(chains, dtype=np.int64, count=len(chains))
    first = np.fromiter((c[0][0] for c in chains.values()), dtype=np.int64, count=len(chains))
    order = np.argsort(cf)
    cf, first = cf[order], first[order]
    pos = np.minimum(np.searchsorted(cf, frames), len(cf) - 1)
    hit = (cf[pos] == frames) & where
    out[hit] = first[pos[hit]]
    return out


def nested_layers(nested: Mapping[int, list] | None, frames: np.ndarray, pick: Callable) -> dict[int, list]:
    """Per frame of the window, the nested ESP layers (``decode.inner.InnerStore.nested``) ``pick``
    keeps (it returns None to skip)."""
    if not nested or not len(frames):
        return {}
    lo_f, hi_f = int(frames[0]), int(frames[-1])
    out: dict[int, list] = {}
    for frame, layers in nested.items():
        if lo_f <= frame <= hi_f:
            kept = [y for y in map(pick, layers) if y is not None]
            if kept:
                out[frame] = kept
    return out


def ike_values(ike: Mapping[int, IkeMessage] | None, inner_quoted: Mapping[int, tuple] | None,
               store: QuotedStore | None, frames: np.ndarray, sub: str) -> dict[int, list]:
    """Values of ``isakmp.<sub>`` per frame of the window: the session's decoded IKE messages, and
    the IKE messages ICMP errors quote (``inner_quoted``: ``InnerStore.quoted``)."""
    ike = ike or {}
    n = len(frames)
    lo_f = int(frames[0]) if n else 0
    hi_f = int(frames[-1]) if n else -1
    out: dict[int, list] = {}
    for frame, msg in ike.items():
        # a header whose Length is below its own 28 octets is not IKE to tshark (it shows data)
        if lo_f <= frame <= hi_f and msg.header.length >= 28:
            vals = ike_field(msg, sub)
            if vals:
                out[frame] = vals
    # IKE quoted in ICMP errors (tshark dissects it as isakmp too): a whole message as any
    # other (the session decoded and decrypted it), a cut-off one's header
    for frame, q in (inner_quoted.items() if inner_quoted is not None else ()):
        if q[0] == "isakmp" and lo_f <= frame <= hi_f:
            vals = quoted_ike_field(q[1], sub, store.ike(frame) if store is not None else None)
            if vals:
                out.setdefault(frame, []).extend(vals)
    return out
