"""ESP packets into the SA table a run at a time: what :func:`~.traffic.on_sa_fields` does packet
by packet, done per flow over a run of consecutive ESP frames (the analysis path's hot loop,
``session_fast``, hands over each window's ESP frames between two frames of anything else).

The answer is the same as feeding the run's packets one by one, in frame order
(``tests/test_session_fast.py`` checks it on every capture): the counters add up per flow; the
sequence window (``esp_flow``) advances in bulk over runs of consecutive numbers and takes any
other packet (gap, replay, late, ESN wrap) through :func:`~.esp_flow.account`; and what one flow
does to another of its CHILD SA (the reverse direction's "unanswered" run) is worked out from
the packets' positions in the run. New flows are filed first, in the order their first packets
came, as the per-packet path files them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..model.sa import EspFlow, SaState
from .book import Book
from .esp_flow import _MASK as _SEQ_MASK
from .esp_flow import _RING_MASK as _SEQ_RING_MASK
from .esp_flow import EVIDENCE, account
from .esp_flow import RING as _SEQ_RING
from .esp_flow import TRACK as _SEQ_TRACK
from .traffic import _learn_from_keys, check_selectors, new_flow

# Outcome codes, as crypto.esp.open_raw returns them (this stage does not import crypto).
OK, ICV_FAILED, NO_KEY, MALFORMED, UNSUPPORTED = range(5)
_LOW = 0xFFFFFFFF


@dataclass(slots=True)
class EspRun:
    """A run of ESP packets in frame order (numpy arrays, one entry per packet) and its flows.

    ``hi``: the ESN high bits a verified decryption gave (``status == OK``), else -1.
    ``groups``: per flow, (src, dst, spi, udp_encap, sport, dport, keys) of its first packet;
    ``gid[i]`` is packet i's group. ``results``: position -> the decryptor's result object for
    packets that are neither decrypted nor keyless (their reason and keys are evidence).
    ``inner(i)``: the decrypted inner packet of position i (for the traffic selector check)."""

    frame: np.ndarray
    ts: np.ndarray
    gid: np.ndarray
    seq: np.ndarray
    hi: np.ndarray
    status: np.ndarray
    length: np.ndarray
    nh: np.ndarray  # next header of decrypted packets, -1 otherwise
    groups: list[tuple]
    results: dict
    inner: object
    pos: list[np.ndarray] | None = None  # each group's positions in frame order, when known
    tail: Callable[[int], int] | None = None  # position -> its last four octets (esp_flow: capture duplicates)


def on_esp_run(book: Book, run: EspRun, proto: str = "ESP") -> list[EspFlow]:
    """Account every packet of ``run``; returns the flow of each group.

    The caller takes packet by packet (``Tracker.on_esp_fields``) a run this does not model: one
    whose UDP-encapsulated packets open a flow or change its ports (``traffic._ports_changed``:
    NAT-T endpoints, rebinding) or while a NAT rebinding is watched (``book.nat.watching``)."""
    t = book.table
    flows_by_key = t.flows
    gid = run.gid
    n_groups = len(run.groups)
    pos = run.pos
    if pos is None:  # each group's positions, in frame order (a stable sort keeps that order)
        order = np.argsort(gid, kind="stable")
        bounds = np.searchsorted(gid[order], np.arange(n_groups + 1))
        pos = [order[bounds[g]:bounds[g + 1]] for g in range(n_groups)]
    firsts = [int(p[0]) for p in pos]
    frame_l = run.frame
    ts = run.ts
    # New flows first, in the order their first packets came (binding and pairing depend on it).
    flows: list[EspFlow | None] = [flows_by_key.get((g[0], g[1], g[2], proto)) for g in run.groups]
    for g in sorted((g for g in range(n_groups) if flows[g] is None), key=firsts.__getitem__):
        src, dst, spi, encap, sport, dport, _keys = run.groups[g]
        i = firsts[g]
        flows[g] = new_flow(book, int(frame_l[i]), float(ts[i]), src, dst, spi, proto, encap, sport, dport)
    tmin = float(ts.min())
    if t.first_ts is None or tmin < t.first_ts:
        t.first_ts = tmin
    children = []
    sent = pos  # each group's positions less its capture duplicates
    learn: dict[int, tuple] = {}  # id(child) -> (child, decrypted positions of its flows)
    for g in range(n_groups):
        flow = flows[g]
        p = pos[g]
        cps = _counters(book, flow, run, p)
        child = t.child_sas.get(flow.child_sa) if flow.child_sa is not None else None
        children.append(child)
        if cps:
            # copies of packets already counted (esp_flow): frames, not packets sent; what follows
            # counts packets sent, as on_sa_fields does (it stops at a copy)
            cst = run.status[np.asarray(cps)]
            flow.copies_decrypted += int(np.count_nonzero(cst == OK))
            flow.copies_icv_failed += int(np.count_nonzero(cst == ICV_FAILED))
            p = p[~np.isin(p, cps)]
            if sent is pos:
                sent = list(pos)  # the caller's positions stay as they are
            sent[g] = p
        if child is None:
            continue
        st = run.status[p]
        okpos = p[st == OK]
        if len(okpos):
            if child.state == SaState.INFERRED and (child.mode == "unknown" or not child.keys_source):
                learn.setdefault(id(child), (child, []))[1].append(okpos)
            if child.ts_i or child.ts_r:
                nh = run.nh
                for i in okpos.tolist():
                    check_selectors(flow, child, int(frame_l[i]), run.inner(i), int(nh[i]))
        T = ts[p]
        rest = None
        if child.deleted_ts is not None:
            m = T > child.deleted_ts
            k = int(m.sum())
            if k:
                flow.after_delete += k
                room = EVIDENCE - len(flow.after_delete_frames)
                if room > 0:
                    flow.after_delete_frames.extend(frame_l[p[m][:room]].tolist())
                rest = ~m
        if child.rekeyed_ts is not None:
            m = T > child.rekeyed_ts
            if rest is not None:
                m &= rest
            k = int(m.sum())
            if k:
                flow.after_rekey += k
                flow.after_rekey_last_ts = float(T[m][-1])
    for child, oks in learn.values():  # in frame order over the CHILD SA's flows
        _learn(child, run, np.sort(np.concatenate(oks)))
    _unanswered(book, run, flows, children, sent)
    return flows  # type: ignore[return-value]


def _counters(book: Book, flow: EspFlow, run: EspRun, p: np.ndarray) -> list[int]:
    """Packet/byte/outcome counters and the sequence window of one flow's packets ``p``; returns
    the run positions of capture duplicates (esp_flow's "copy")."""
    n = len(p)
    flow.packets += n
    flow.bytes += int(run.length[p].sum())
    last = int(p[-1])
    flow.last_ts = float(run.ts[last])
    flow.last_frame = int(run.frame[last])
    st = run.status[p]
    counts = np.bincount(st, minlength=5)
    flow.no_key += int(counts[NO_KEY])
    if counts[OK]:
        flow.decrypted += int(counts[OK])
        if not flow.keys_nat:
            keys = run.groups[int(run.gid[last])][6]
            flow.keys_nat = getattr(keys, "nat", "") or ""
    odd = counts[ICV_FAILED] + counts[MALFORMED] + counts[UNSUPPORTED]
    if odd:
        frame_l = run.frame
        for i in p[(st != OK) & (st != NO_KEY)].tolist():
            code = int(run.status[i])
            res = run.results.get(i)
            if code == ICV_FAILED:
                flow.icv_failed += 1
                if len(flow.icv_failed_frames) < EVIDENCE:
                    flow.icv_failed_frames.append(int(frame_l[i]))
            elif code == MALFORMED:
                flow.malformed += 1
            else:
                flow.unsupported += 1
                if len(flow.unsupported_frames) < EVIDENCE:
                    flow.unsupported_frames.append(int(frame_l[i]))
                if not flow.unsupported_reason:
                    flow.unsupported_reason = getattr(res, "reason", "") or ""
                    keys = getattr(res, "keys", None)
                    flow.unsupported_keys_source = getattr(keys, "source", "") or ""
    return _sequence(book, flow, run, p, st)


def _sequence(book: Book, flow: EspFlow, run: EspRun, p: np.ndarray, st: np.ndarray) -> list[int]:
    """The sequence window over one flow's packets: runs of consecutive numbers in bulk (what
    on_sa_fields' inlined "next in order" case does for each), every other packet through
    esp_flow.account. Returns the positions account() found to be capture duplicates."""
    copies: list[int] = []
    sq = book.seq_trackers[flow.key]
    seq = run.seq[p]
    hi = run.hi[p]
    frames = run.frame[p]
    # the packet's time, length and last octets by its run position: read only at a segment's end
    # or a packet account() takes, not gathered per flow
    ts, length = run.ts, run.length
    tail = run.tail or _no_tail
    verified = hi >= 0
    if verified.any() and int(hi.max()) >= 1 << 30:  # full numbers beyond int64 arithmetic: one by one
        for i in range(len(p)):
            j = int(p[i])
            if account(flow, sq, int(seq[i]), int(hi[i]) if verified[i] else None, int(frames[i]), float(ts[j]),
                       int(length[j]), tail(j)) == "copy":
                copies.append(j)
        return copies
    key = np.where(verified, (hi << 32) | seq, seq)
    # A run breaks where the number is not the previous one + 1, or verified-ness changes.
    brk = np.flatnonzero((np.diff(key) != 1) | (verified[1:] != verified[:-1])) + 1
    starts = [0, *brk.tolist()]
    ends = [*brk.tolist(), len(p)]
    for a, b in zip(starts, ends, strict=True):
        i = a
        while i < b:
            top = sq.top
            if top is not None and flow.seq_max == top:
                if verified[i]:
                    nxt = int(key[i]) == top + 1
                else:
                    nxt = (top & _LOW) + 1 == int(seq[i])
                if nxt:
                    m = b - i
                    full = top + m
                    sq.top = full
                    bits = sq.bits
                    sq.bits = _SEQ_MASK if m >= _SEQ_TRACK else ((bits << m) | ((1 << m) - 1)) & _SEQ_MASK
                    flow.seq_max = full
                    flow.esn_hi = full >> 32
                    flow.lost = sq.missing
                    if verified[i]:
                        h = int(hi[b - 1])
                        if h > sq.hi:
                            sq.hi = h
                    # the segment's last RING packets, as account() would have kept them (a
                    # capture duplicate of one may follow later packets)
                    ring = sq.ring
                    for k in range(max(i, b - _SEQ_RING), b):
                        j = int(p[k])
                        n = full - (b - 1 - k)
                        ring[n & _SEQ_RING_MASK] = (n, float(ts[j]), int(length[j]), tail(j), int(frames[k]))
                    break
            j = int(p[i])
            if account(flow, sq, int(seq[i]), int(hi[i]) if verified[i] else None, int(frames[i]), float(ts[j]),
                       int(length[j]), tail(j)) == "copy":
                copies.append(j)
            i += 1
    return copies


def _no_tail(_i: int) -> int:
    return -1


def _learn(child, run: EspRun, okpos: np.ndarray) -> None:
    """What the first decrypted packets of an INFERRED CHILD SA tell (traffic._learn_from_keys,
    packet by packet until nothing is left to learn)."""
    groups, gid, nh = run.groups, run.gid, run.nh
    for i in okpos.tolist():
        if not (child.mode == "unknown" or not child.keys_source):
            return
        n = int(nh[i])
        _learn_from_keys(child, _Learned(groups[int(gid[i])][6], None if n < 0 else n))


@dataclass(slots=True)
class _Learned:
    keys: object
    next_header: int | None


def _unanswered(book: Book, run: EspRun, flows: list, children: list, pos: list) -> None:
    """Each flow's run of packets with nothing back on its CHILD SA (``unanswered_tail``), as the
    per-packet path leaves it: a packet of a flow counts on that flow and resets the flows in the
    opposite direction of its CHILD SA. ``pos``: each group's positions less its capture
    duplicates (on_sa_fields stops at those)."""
    flows_by_key = book.table.flows
    resets: dict[int, tuple[EspFlow, list[int]]] = {}  # id(flow) -> (flow, groups whose packets reset it)
    for g, child in enumerate(children):
        if child is None:
            continue
        f = flows[g]
        for proto, spi_i, spi_r in child.spi_pairs():
            for other in (spi_i, spi_r):
                if other is None or (other == f.spi and proto == f.protocol):
                    continue
                rev = flows_by_key.get((f.dst, f.src, other, proto))
                if rev is not None:
                    e = resets.setdefault(id(rev), (rev, []))
                    if g not in e[1]:
                        e[1].append(g)
    own = {id(flows[g]): g for g, c in enumerate(children) if c is not None}
    for fid in own.keys() | resets.keys():
        g = own.get(fid)
        flow = flows[g] if g is not None else resets[fid][0]
        rgroups = resets[fid][1] if fid in resets else []
        last_reset = max((int(pos[r][-1]) for r in rgroups if len(pos[r])), default=-1)
        if g is None or not len(pos[g]):  # (a run of copies only: nothing sent)
            if last_reset >= 0:
                flow.unanswered_tail = 0
            continue
        p = pos[g]
        p_last = int(p[-1])
        # the last reset before this flow's last packet
        before = -1
        for r in rgroups:
            k = int(np.searchsorted(pos[r], p_last)) - 1
            if k >= 0 and pos[r][k] > before:
                before = int(pos[r][k])
        if before >= 0:
            after = p[p > before]
            since = int(after[0])
            tail = len(after)
        else:
            since = int(p[0]) if flow.unanswered_tail == 0 else -1
            tail = flow.unanswered_tail + len(p)
        if since >= 0:
            flow.unanswered_since_frame = int(run.frame[since])
            flow.unanswered_since_ts = float(run.ts[since])
        flow.unanswered_tail = 0 if last_reset > p_last else tail


__all__ = ["EspRun", "on_esp_run", "OK", "ICV_FAILED", "NO_KEY", "MALFORMED", "UNSUPPORTED"]
