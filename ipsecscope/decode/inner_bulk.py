"""A run of decrypted ESP payloads summarised at once: the inner IPv4/IPv6 header and the
UDP/TCP/ICMP/ICMPv6 header behind it read with numpy over the run, into an
:class:`~.inner.InnerStore`'s columns, with the same record :func:`~.inner.parse` gives packet by
packet (``tests/test_inner_bulk.py`` compares both on every capture and on odd payloads).

What the common case does not cover goes through the store's one-packet path
(:meth:`~.inner.InnerStore.summarise`), in frame order: IP fragments (they may complete a
datagram), IPv6 extension headers, ICMP errors (they quote a datagram), DNS (port 53), and
anything shorter than its headers say (marked truncated there). The analysis path's hot loop
(``session_fast``) calls :func:`add_run` once per run of ESP frames it decrypted; the Info text is
formatted from a record only when a row is shown.
"""

from __future__ import annotations

import numpy as np

from .inner import CORE, ICMP_ERRORS, ICMPV6_ERRORS, L4, RARE, InnerStore

_V6_EXT_OR_FRAG = np.zeros(256, bool)  # RFC 8200 §4: extension headers, fragment header (44)
_V6_EXT_OR_FRAG[[0, 43, 44, 60]] = True
_ICMP_ERR = np.zeros(256, bool)
_ICMP_ERR[sorted(ICMP_ERRORS)] = True
_ICMPV6_ERR = np.zeros(256, bool)
_ICMPV6_ERR[sorted(ICMPV6_ERRORS)] = True
_NP = {"q": np.int64, "B": np.uint8, "H": np.uint16, "I": np.uint32}
_AR16 = np.arange(16)


def add_run(store: InnerStore, frames: np.ndarray, buf: np.ndarray, starts: np.ndarray, ilen: np.ndarray,
            nh: np.ndarray) -> None:
    """Record the inner packets of a run: packet k is ``buf[starts[k]:starts[k] + ilen[k]]`` (the
    decrypted payload without padding and trailer, TFC padding not yet cut), next header ``nh[k]``,
    of frame ``frames[k]``; frames increasing. Frames the store already has are left out (as
    :meth:`InnerStore.add` does)."""
    if store.frames:
        keep = frames > store.frames[-1]
        if not keep.all():
            frames, starts, ilen, nh = frames[keep], starts[keep], ilen[keep], nh[keep]
    n = len(frames)
    if not n:
        return
    frames = frames.astype(np.int64)
    starts = starts.astype(np.int64)
    ilen = ilen.astype(np.int64)
    nh = nh.astype(np.int64)
    top = len(buf) - 1
    if top < 0:
        buf, top = np.zeros(1, np.uint8), 0

    def at(pos: np.ndarray) -> np.ndarray:  # bytes at ``pos`` (clamped: masks decide what counts)
        return buf[np.minimum(pos, top)].astype(np.int64)

    b0, b2, b3 = at(starts), at(starts + 2), at(starts + 3)
    v4 = nh == 4
    v6 = nh == 41
    # the inner IP packet's own length (RFC 4303 §2.7: TFC padding may follow it), as trim_tfc
    tl4 = (b2 << 8) | b3
    plen6 = (at(starts + 4) << 8) | at(starts + 5)
    n_ = ilen.copy()
    cut4 = v4 & (ilen >= 20) & (tl4 >= 20) & (tl4 < ilen)
    n_[cut4] = tl4[cut4]
    cut6 = v6 & (ilen >= 40) & (plen6 > 0) & (plen6 + 40 < ilen)
    n_[cut6] = plen6[cut6] + 40
    ihl = (b0 & 15) * 4
    frag = ((at(starts + 6) << 8) | at(starts + 7)) & 0x3FFF
    p9 = at(starts + 9)
    nxt6 = at(starts + 6)
    # IPv4: whole, not cut short, no fragment (inner.parse: off = IHL, end = total length)
    ok4 = v4 & (n_ >= 20) & ((b0 >> 4) == 4) & (ihl >= 20) & (tl4 >= ihl) & (tl4 <= n_) & (frag == 0)
    # IPv6: a payload length that fits, a transport header right after the fixed header
    ok6 = v6 & (n_ >= 40) & ((b0 >> 4) == 6) & (plen6 > 0) & (plen6 + 40 <= n_) & ~_V6_EXT_OR_FRAG[nxt6]
    # transport mode: the payload is the transport header
    # (IPComp, 108, is opened one packet at a time; extension headers after ESP are walked there too)
    trans = ~v4 & ~v6 & (nh >= 0) & (nh != 50) & (nh != 108) & ~_V6_EXT_OR_FRAG[np.clip(nh, 0, 255)]
    off = np.where(v4, ihl, np.where(v6, 40, 0))
    end = np.where(v4, tl4, np.where(v6, plen6 + 40, n_))
    proto = np.where(v4, p9, np.where(v6, nxt6, nh))
    room = end - off
    p = starts + off
    udp = (proto == 17) & (room >= 8)
    tcp = (proto == 6) & (room >= 14)
    icmp = ((proto == 1) | (proto == 58)) & (room >= 4)
    s0, s1, s2, s3 = at(p), at(p + 1), at(p + 2), at(p + 3)
    w01 = (s0 << 8) | s1
    w23 = (s2 << 8) | s3
    w45 = (at(p + 4) << 8) | at(p + 5)
    w67 = (at(p + 6) << 8) | at(p + 7)
    hl, tfl = at(p + 12), at(p + 13)
    has8 = room >= 8
    err = icmp & (room > 8) & np.where(proto == 1, _ICMP_ERR[s0], _ICMPV6_ERR[s0])
    dns = udp & ((w01 == 53) | (w23 == 53))
    l4len = np.where(udp, w45, np.where(tcp, np.maximum(0, room - (hl >> 4) * 4), np.where(icmp, room, 0)))
    bulk = (ok4 | ok6 | trans) & ~err & ~dns & (l4len <= 0xFFFF)
    l4 = udp | tcp | icmp
    cols = {
        "ver": np.where(v4, 4, np.where(v6, 6, 0)),
        "proto": proto,
        "ttl": np.where(v4, at(starts + 8), np.where(v6, at(starts + 7), 0)),
        "flags": np.where(l4, L4, 0),
        "iplen": np.where(v4, tl4, np.where(v6, plen6, 0)),
        "sport": np.where(udp | tcp, w01, np.where(icmp & has8, w45, 0)),
        "dport": np.where(udp | tcp, w23, np.where(icmp & has8, w67, 0)),
        "itype": np.where(icmp, s0, 0),
        "icode": np.where(icmp, s1, 0),
        "tcpflags": np.where(tcp, ((hl & 1) << 8) | tfl, 0),
        "l4len": l4len,
    }
    cols = {k: cols[k].astype(_NP[c]) for k, c in CORE[1:] if k in cols}
    # Addresses get their table indexes in the order the packets name them (source, then
    # destination, frame by frame, the one-packet path's too), as packet by packet: the table's
    # order is what the conversation statistics order a pair by.
    m4 = ok4 & bulk
    m6 = ok6 & bulk
    new: list[tuple[int, object]] = []  # (2 * position + 0/1, address) of addresses the store lacks
    src = np.zeros(n, np.uint32)
    dst = np.zeros(n, np.uint32)
    fill = []
    if m4.any():
        k4 = np.flatnonzero(m4)
        a = buf[np.minimum(starts[k4][:, None] + np.arange(12, 20), top)]
        vals = np.concatenate([np.ascontiguousarray(a[:, :4]).view(">u4")[:, 0],
                               np.ascontiguousarray(a[:, 4:]).view(">u4")[:, 0]]).astype(np.int64)
        u, first, inv = np.unique(vals, return_index=True, return_inverse=True)
        key = np.concatenate([2 * k4, 2 * k4 + 1])[first]
        known = store._v4_ix
        new += [(kk, x) for kk, x in zip(key.tolist(), u.tolist(), strict=True) if x not in known]
        fill.append((k4, u.tolist(), inv.reshape(-1), store.addr4))
    if m6.any():
        k6 = np.flatnonzero(m6)
        q = starts[k6][:, None]
        vals = np.concatenate([buf[np.minimum(q + 8 + _AR16, top)], buf[np.minimum(q + 24 + _AR16, top)]])
        u, first, inv = np.unique(np.ascontiguousarray(vals).view("V16")[:, 0], return_index=True,
                                  return_inverse=True)
        key = np.concatenate([2 * k6, 2 * k6 + 1])[first]
        ub = [x.tobytes() for x in u]
        known6 = store._v6_ix
        new += [(kk, x) for kk, x in zip(key.tolist(), ub, strict=True) if x not in known6]
        fill.append((k6, ub, inv.reshape(-1), store.addr6))
    new.sort(key=lambda e: e[0])
    ev = 0

    def name_until(limit: int) -> None:  # the bulk packets' new addresses named before ``limit``
        nonlocal ev
        while ev < len(new) and new[ev][0] < limit:
            x = new[ev][1]
            (store.addr4 if type(x) is int else store.addr6)(x)
            ev += 1

    rare_at: list[int] = []
    rare_recs: list[tuple] = []
    slow = np.flatnonzero(~bulk)
    if len(slow):  # the one-packet path, in frame order (fragments may complete a datagram)
        recs = []
        nr = len(CORE) - 1
        for k in slow.tolist():
            name_until(2 * k)
            s = int(starts[k])
            rec = store.summarise(int(frames[k]), buf[s:s + int(n_[k])].tobytes(), int(nh[k]))
            recs.append(rec[:nr])
            if any(rec[nr:]):
                rare_at.append(k)
                rare_recs.append(rec[nr:])
        R = np.array(recs, np.int64)
        for j, (name, code) in enumerate(CORE[1:]):
            if name not in ("src", "dst"):
                cols[name][slow] = R[:, j].astype(_NP[code])
        src[slow] = R[:, 4]
        dst[slow] = R[:, 5]
    name_until(2 * n)
    for k, u, inv, ix in fill:
        lut = np.array([ix(x) for x in u], np.uint32)[inv]
        src[k] = lut[:len(k)]
        dst[k] = lut[len(k):]
    cols["src"], cols["dst"] = src, dst
    core = [np.ascontiguousarray(cols[name]) for name, _c in CORE[1:]]
    if rare_at:
        R = np.array(rare_recs, np.int64)
        rare = [R[:, j].astype(_NP[code]) for j, (_n, code) in enumerate(RARE)]
        store.extend(frames, core, frames[rare_at], rare)
    else:
        store.extend(frames, core)

