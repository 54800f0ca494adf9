"""The ESP runs of the analysis path's hot loop (``session_fast``): decrypt, check, account, keep rows.

``session_fast._Loop`` reads a capture's records a window at a time and sorts them; the ESP frames
between two frames for the general path are one *run*, handed to :meth:`EspRuns._esp` with the
batch's header fields (:class:`Fields`). Here the run is grouped by SA (source, destination, SPI),
decrypted (AES-GCM-16 inline, one call a packet, RFC 4106; other algorithms, ESN inference and
failures through the session's ``EspDecryptor``), its payloads checked in bulk, accounted per flow
(``state.bulk``, or ``Tracker.on_esp_fields`` packet by packet when the tracker must see each
packet), its rows packed and its inner packets summarised (``decode.inner_bulk``) at once.

``EspRuns`` is a base class of ``session_fast._Loop`` (not a helper object) so the loop's calls stay
what they were: a split here must add no call per packet (a shared function per frame once cost 18 %
of ``summary``'s CPU, decode/fastpath_loop.py). It uses the loop's ``s`` (the Session), ``rh`` (where
a frame starts in its record), ``keep`` (rows kept), ``sas`` and ``text`` (set by ``_Loop``).
This module does not import ``session_fast`` (that imports it).
"""

from __future__ import annotations

import socket
import struct
from typing import Any, NamedTuple

import numpy as np
from cryptography.exceptions import InvalidTag

from .capture._fastnew import fast_constructor
from .crypto.esp import MIN_INNER, STATUS, EspResult, check_payload, payload_failure, trim_tfc
from .decode.inner_bulk import add_run
from .model.sa import SaState
from .rowstore import KIND_ESP, STATUS_CODES, row_dtype
from .state.bulk import ICV_FAILED, NO_KEY, OK, EspRun, on_esp_run

_Result = fast_constructor(EspResult)

_U32LE = struct.Struct("<I").unpack_from
_U32BE = struct.Struct("!I").unpack_from
_KEY = struct.Struct("!III").pack
_CODE = {name: i for i, name in enumerate(STATUS)}
_NO_KEY_RESULT = EspResult("no_key", reason="no key for this SA (add its keys with -k)")
ROW_DTYPE = row_dtype()  # RowStore's record, to pack a run's rows at once
# next header -> the shortest header the payload must hold (crypto.esp.MIN_INNER), -1: anything
_NEED = np.full(256, -1, np.int64)
for _nh, _need in MIN_INNER.items():
    _NEED[_nh] = _need
# A run is accounted per flow in bulk when its flows have this many packets each on average;
# below that (many SAs with a packet or two each) packet by packet, as the general path does.
BULK_MIN = 4


class EspRuns:
    """The runs of ESP frames of one file's pass (a base of ``session_fast._Loop``)."""

    s: Any  # the Session being loaded
    rh: int
    keep: bool
    sas: dict[bytes, list]
    text: dict[int, str]

    def _esp(self, w: bytes, base: int, e: np.ndarray, RO, frames, ts, orig, cls, fld: Fields) -> None:  # noqa: C901
        """The ESP frames at batch positions ``e`` (no other frame of interest between them):
        decrypt, check, account, keep rows."""
        s = self.s
        st = s.stats
        keys = s.keys
        rh = self.rh
        n = len(e)
        # the usual run is every frame between two others: a slice (views) instead of fancy indexing
        x = slice(int(e[0]), int(e[-1]) + 1) if n and int(e[-1]) - int(e[0]) + 1 == n else e
        udp = cls[x] == 2
        src = fld.src[x]
        dst = fld.dst[x]
        spi = np.where(udp, fld.uspi[x], fld.rspi[x])
        seq = np.where(udp, fld.useq[x], fld.rseq[x]).astype(np.int64)
        q = RO[x] + rh + 34 + 8 * udp
        end = RO[x] + rh + 14 + fld.tot[x]
        sp = np.where(udp, fld.sport[x], 0)
        dp = np.where(udp, fld.dport[x], 0)
        order, bounds, gid = _group(src, dst, spi)
        n_groups = len(bounds) - 1
        ufirst = order[bounds[:-1]]
        if n > 1 and n >= BULK_MIN * n_groups:
            cuts = self._new_flows(src, dst, spi, ufirst)
            if cuts:
                # A new flow's first packet alone goes packet by packet (_packetwise), the runs
                # between stay bulk: a capture's first window is not all packet by packet.
                start = 0
                for c in cuts:
                    for a, b in ((start, c), (c, c + 1)):
                        if b > a:
                            self._esp(w, base, e[a:b], RO, frames, ts, orig, cls, fld)
                    start = c + 1
                if start < n:
                    self._esp(w, base, e[start:], RO, frames, ts, orig, cls, fld)
                return
        status = np.full(n, NO_KEY, np.int8)
        hi = np.full(n, -1, np.int64)
        rowhi = np.zeros(n, np.int64)
        nh = np.full(n, -1, np.int16)
        nested = np.zeros(n, bool)  # decrypted, with ESP inside (Session._nested takes it)
        results: dict[int, EspResult] = {}
        plains: list[tuple] = []
        version = getattr(keys, "version", 0)
        groups = []
        entries = []
        poss: list[np.ndarray] = []
        for g in range(n_groups):
            i0 = int(ufirst[g])
            kb = _KEY(int(src[i0]), int(dst[i0]), int(spi[i0]))
            ent = self.sas.get(kb)
            if ent is None or ent[3] != version:
                ent = self.sas[kb] = self._entry(kb, version)
            entries.append(ent)
            sa = ent[0]
            groups.append((ent[4], ent[5], int(spi[i0]), bool(udp[i0]), int(sp[i0]), int(dp[i0]), sa.keys))
            pos = order[bounds[g]:bounds[g + 1]]
            poss.append(pos)
            if ent[1] is not None:
                self._gcm(w, ent, sa, pos, q, end, seq, status, hi, rowhi, nh, nested, results, plains)
            elif sa.opener is None and sa.keys is None:
                sa.stats.no_key += len(pos)
            else:
                pl = pos.tolist()
                k = 0
                while k < len(pl):  # until the decryptor knows the SA uses no ESN, then inline
                    self._slow(w, sa, pl[k:k + 1], q, end, seq, status, hi, rowhi, nh, results, nested)
                    k += 1
                    if sa.mode is False and sa.opener is not None and not sa.keys.nat:
                        gcm = getattr(sa.opener.open, "gcm16", None)
                        if gcm is not None:
                            ent[1], ent[2] = gcm
                            if k < len(pl):
                                self._gcm(w, ent, sa, pos[k:], q, end, seq, status, hi, rowhi, nh, nested, results, plains)
                            break
        counts = np.bincount(status, minlength=5)
        st.esp += n
        st.decrypted += int(counts[OK])
        st.no_key += int(counts[NO_KEY])
        st.icv_failed += int(counts[ICV_FAILED])
        frame_e = frames[x]
        ts_e = ts[x]

        where: dict[int, tuple] = {}

        def inner(i: int) -> bytes | None:
            res = results.get(i)
            if res is not None:
                return res.inner
            if not where:  # built on first use: only rows and traffic selector checks need it
                for lp, out, ilen, _j, _s in plains:
                    for k, j in enumerate(lp.tolist()):
                        where[j] = (out, ilen, k)
            w_ = where.get(i)
            if w_ is None:
                return None
            out, ilen, k = w_
            return trim_tfc(out[k][:int(ilen[k])], int(nh[i]))

        tracker = s.tracker
        inner_done = False
        if n >= BULK_MIN * n_groups and not self._packetwise(groups, poss, sp, dp, nested, status):
            # a packet's last four octets (the ICV's end: a capture's copy repeats them, state.esp_flow),
            # read for the few packets the sequence window asks about, not gathered for the run
            def tail(i: int) -> int:
                return _U32BE(w, int(end[i]) - 4)[0]

            run = EspRun(frame_e, ts_e, gid, seq, hi, status, end - q, nh, groups, results, inner, poss, tail)
            try:
                flows = on_esp_run(tracker, run)
            except Exception as exc:  # noqa: BLE001 - as Tracker.on_esp_fields: report, go on
                tracker.observe("tracker_error", float(ts_e[0]), (int(frame_e[0]),), reason=f"{type(exc).__name__}: {exc}")
                flows = [tracker.table.flows.get((gr[0], gr[1], gr[2], "ESP")) for gr in groups]
            child = [-1 if f is None or f.child_sa is None else f.child_sa for f in flows]
            child_g = np.array(child, np.int64)[gid]
        else:
            tails = _u32(_rows(np.frombuffer(w, np.uint8), end - 4, 4, len(w)), 0, ">")  # as tail() above
            child_g = self._per_packet(e, gid, groups, entries, frame_e, ts_e, seq.tolist(), status, results, inner,
                                       nh, end - q, sp, dp, nested, tails)
            inner_done = True
        if not self.keep:
            return
        rows = s.rows
        status_code = np.array([STATUS_CODES["decrypted"], STATUS_CODES["icv-bad"], STATUS_CODES["no-key"],
                                STATUS_CODES["malformed"], rows.status_code("unsupported")], np.uint8)
        rec = np.empty(n, ROW_DTYPE)
        rec["frame"] = frame_e
        rec["ts"] = ts_e
        rec["kind"] = KIND_ESP
        rec["src"] = np.array([ent[6] for ent in entries], np.uint32)[gid]
        rec["dst"] = np.array([ent[7] for ent in entries], np.uint32)[gid]
        rec["sport"] = sp
        rec["dport"] = dp
        rec["length"] = orig[x]
        rec["spi"] = spi
        rec["seq"] = (rowhi.astype(np.uint64) << np.uint64(32)) | seq.astype(np.uint64)
        rec["status"] = status_code[status]
        rec["child"] = child_g
        rec["nh"] = nh
        if not inner_done:
            _inner_run(s.inner, frame_e, status, nh, plains, results)
        rows.add_packed(rec.tobytes(), n)

    def _gcm(self, w: bytes, ent: list, sa, pos: np.ndarray, q: np.ndarray, end: np.ndarray, seq: np.ndarray,
             status, hi, rowhi, nh, nested, results, plains: list) -> None:
        """AES-GCM-16 without ESN, inline (RFC 4106: nonce = salt | IV, AAD = SPI | sequence
        number); payloads checked in bulk; anything that fails goes through the decryptor."""
        aead, salt = ent[1], ent[2]
        qa, ea = q[pos], end[pos]
        longm = (ea - qa) >= 36
        lp = pos[longm]
        Q, E = qa[longm], ea[longm]
        # nonces (salt | IV) and AADs (SPI | sequence number) of the whole group at once
        hdr = _rows(np.frombuffer(w, np.uint8), Q, 16, len(w))  # (whole: the payload is >= 36 bytes)
        nonce = np.empty((len(Q), 12), np.uint8)
        nonce[:, :4] = np.frombuffer(salt, np.uint8)
        nonce[:, 4:] = hdr[:, 8:]
        N = nonce.view("V12").ravel().tolist()
        D = np.ascontiguousarray(hdr[:, :8]).view("V8").ravel().tolist()
        try:
            out = [aead(nn, w[a:b], ad) for nn, a, b, ad in zip(N, (Q + 16).tolist(), E.tolist(), D, strict=True)]
            failed = None
        except InvalidTag:
            out = [_open_or_none(aead, salt, w, a, b) for a, b in zip(Q.tolist(), E.tolist(), strict=True)]
            failed = np.array([p is None for p in out], bool)
        slow = pos[~longm].tolist()
        if failed is not None:
            slow += lp[failed].tolist()
            lp, Q, E = lp[~failed], Q[~failed], E[~failed]
            out = [p for p in out if p is not None]
        if len(lp):
            stats = sa.stats
            stats.decrypted += len(lp)
            top = int(seq[lp].max())
            if top > sa.top:
                sa.top = stats.top = top
                stats.seq_hi = 0
            lens = E - Q - 32  # plaintext = ciphertext less the 16-byte tag
            J = np.frombuffer(b"".join(out), np.uint8)
            ends = np.cumsum(lens)
            starts = ends - lens
            pad = J[ends - 2].astype(np.int64)
            last = J[ends - 1]
            ilen = lens - 2 - pad
            need = _NEED[last]
            ok = (pad + 2 <= lens) & ((need < 0) | (ilen >= need))
            top_ix = len(J) - 1
            v4 = last == 4
            if v4.any():
                b0 = J[np.minimum(starts, top_ix)]
                tl = (J[np.minimum(starts + 2, top_ix)].astype(np.int64) << 8) | J[np.minimum(starts + 3, top_ix)]
                ok &= ~v4 | (((b0 >> 4) == 4) & ((b0 & 15) >= 5) & (tl >= 20) & (tl <= ilen))
            v6 = last == 41
            if v6.any():
                b0 = J[np.minimum(starts, top_ix)]
                plen = (J[np.minimum(starts + 4, top_ix)].astype(np.int64) << 8) | J[np.minimum(starts + 5, top_ix)]
                ok &= ~v6 | (((b0 >> 4) == 6) & (plen + 40 <= ilen))
            gok = lp[ok]
            status[gok] = OK
            hi[gok] = 0
            nh[gok] = last[ok]
            # ESP inside: next header 50, or an IPv4/IPv6 packet of protocol 50 (Session._nested's test)
            b9 = J[np.minimum(starts + 9, top_ix)]
            b6 = J[np.minimum(starts + 6, top_ix)]
            nested[gok] = ((last == 50) | ((last == 4) & (ilen > 9) & (b9 == 50)) | ((last == 41) & (ilen > 6) & (b6 == 50)))[ok]
            plains.append((lp, out, ilen, J, starts))
            if not ok.all():  # decrypted, but no valid payload: in frame order with the rest below
                slow += [(int(lp[k]), out[k]) for k in np.flatnonzero(~ok).tolist()]
        for i in sorted(slow, key=lambda x: x if type(x) is int else x[0]):
            if type(i) is int:
                self._slow(w, sa, [i], q, end, seq, status, hi, rowhi, nh, results, nested)
                continue
            i, plain = i
            try:
                check_payload(plain)
                reason = "ESP payload check failed"  # pragma: no cover - the bulk check agrees
            except Exception as exc:  # noqa: BLE001 - DecryptError: its one line is the reason
                reason = str(exc)
            res = EspResult(payload_failure(sa, reason), seq_hi=0, keys=sa.keys, reason=reason, esn=sa.mode)
            status[i] = _CODE[res.status]
            results[i] = res

    def _slow(self, w: bytes, sa, pl: list[int], q, end, seq, status, hi, rowhi, nh, results, nested=None) -> None:
        """Packets through the decryptor one by one (EspDecryptor.open_raw: ESN inference, other
        algorithms, failures), in frame order."""
        dec = self.s.esp_decryptor
        for i in pl:
            code, val, h = dec.open_raw(sa, int(seq[i]), w[int(q[i]):int(end[i])])
            res = dec._result(sa, code, val, h)
            c = _CODE[res.status]
            status[i] = c
            if rowhi is not None:
                rowhi[i] = res.seq_hi
            if c == OK:
                hi[i] = res.seq_hi
                if res.next_header is not None:
                    nh[i] = res.next_header
            results[i] = res
            if nested is not None and c == OK and res.inner is not None and _esp_inside(res.inner, res.next_header):
                nested[i] = True

    def _new_flows(self, src: np.ndarray, dst: np.ndarray, spi: np.ndarray, ufirst: np.ndarray) -> list[int]:
        """Run positions of the first packet of each SA (group) that has no flow yet, in order."""
        flows = self.s.tracker.table.flows
        sas = self.sas
        cuts = []
        for i0 in ufirst.tolist():
            kb = _KEY(int(src[i0]), int(dst[i0]), int(spi[i0]))
            ent = sas.get(kb)
            if ent is None:
                ent = sas[kb] = self._entry(kb, getattr(self.s.keys, "version", 0))
            if (ent[4], ent[5], int(spi[i0]), "ESP") not in flows:
                cuts.append(i0)
        cuts.sort()
        return cuts

    def _packetwise(self, groups: list[tuple], poss: list[np.ndarray], sp: np.ndarray, dp: np.ndarray,
                    nested: np.ndarray, status: np.ndarray) -> bool:
        """Whether a run needs the tracker packet by packet: ESP inside ESP (Session._nested
        interleaves the inner SAs' packets), a new flow (inference pairing, traffic.pair_misfit, reads
        the other flows' counters as they were at its first packet), a UDP-encapsulated flow whose ports
        change (its NAT-T endpoint is noted, a change may be a NAT rebinding), or a rebinding
        being watched (every packet's destination is checked), or a flow of an INFERRED CHILD SA
        decrypting for the first time (traffic._check_suite may split an inference pair there)."""
        tracker = self.s.tracker
        if nested.any() or tracker.nat.watching:
            return True
        flows = tracker.table.flows
        children = tracker.table.child_sas
        for gr, pos in zip(groups, poss, strict=True):
            flow = flows.get((gr[0], gr[1], gr[2], "ESP"))
            if flow is None:  # a new flow: its inference pairing reads the counters of the others so far
                return True
            if gr[3] and ((sp[pos] != flow.sport_last).any() or (dp[pos] != flow.dport_last).any()):
                return True
            if flow.decrypted == 0 and (status[pos] == OK).any():
                child = children.get(flow.child_sa) if flow.child_sa is not None else None
                if child is None or child.state == SaState.INFERRED:
                    return True
        return False

    def _per_packet(self, e, gid, groups, entries, frame_e, ts_e, seql, status, results, inner, nh, lengths,
                    sp, dp, nested, tail) -> np.ndarray:
        """Many SAs with few packets each: the tracker packet by packet (Tracker.on_esp_fields),
        as the general path does; returns each packet's CHILD SA id (-1: none)."""
        s = self.s
        tracker = s.tracker
        on_esp = tracker.on_esp_fields
        flows = tracker.table.flows
        inner_add = s.inner.add if self.keep else None
        nested_l = nested.tolist()
        child = np.full(len(e), -1, np.int64)
        for i, g, f, t, sq, c, ln, a, b, tl in zip(range(len(e)), gid.tolist(), frame_e.tolist(), ts_e.tolist(), seql,
                                                 status.tolist(), lengths.tolist(), sp.tolist(), dp.tolist(),
                                                 tail.tolist(), strict=True):
            gr = groups[g]
            if c == OK:
                res = results.get(i)
                if res is None:
                    res = _Result("ok", inner(i), int(nh[i]), 0, 0, gr[6], "", entries[g][0].mode)
            elif c == NO_KEY:
                res = results.get(i) or _NO_KEY_RESULT
            else:
                res = results[i]
            flow = on_esp(f, t, gr[0], gr[1], gr[2], sq, res, ln, gr[3], a, b, tl)
            if flow is None:
                flow = flows.get((gr[0], gr[1], gr[2], "ESP"))
            if flow is not None and flow.child_sa is not None:
                child[i] = flow.child_sa
            if c == OK and res.inner is not None:  # as Session._esp: nested ESP, else the inner summary
                if nested_l[i]:
                    s._nested(f, t, res.inner, res.next_header, gr[0], gr[1])
                elif inner_add is not None:
                    inner_add(f, res.inner, res.next_header)
        return child

    def _entry(self, key: bytes, version: int) -> list:
        s = self.s
        text = self.text
        a, b = _U32LE(key, 0)[0], _U32LE(key, 4)[0]
        src = text.get(a) or text.setdefault(a, socket.inet_ntop(socket.AF_INET, key[:4]))
        dst = text.get(b) or text.setdefault(b, socket.inet_ntop(socket.AF_INET, key[4:8]))
        spi = int.from_bytes(key[8:12], "big")
        sa = s.esp_decryptor.state(src, dst, spi)
        aead = salt = None
        # (keys matched across NAT are dropped by their first ICV failure: packet by packet)
        if sa.opener is not None and sa.mode is False and not getattr(sa.keys, "nat", ""):
            g = getattr(sa.opener.open, "gcm16", None)
            if g is not None:
                aead, salt = g
        rows = s.rows
        srcix = rows._addr_ix.get(src)
        if srcix is None:
            srcix = rows.addr(src)
        dstix = rows._addr_ix.get(dst)
        if dstix is None:
            dstix = rows.addr(dst)
        return [sa, aead, salt or b"", version, src, dst, srcix, dstix]


class Fields(NamedTuple):
    """A batch's header fields, one array each (from the gathered bytes)."""

    tot: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    rspi: np.ndarray  # raw ESP: SPI, sequence number
    rseq: np.ndarray
    uspi: np.ndarray  # ESP in UDP
    useq: np.ndarray


def _group(src: np.ndarray, dst: np.ndarray, spi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Packets grouped by SA (source, destination, SPI) with one stable sort: (positions in group
    order, group bounds in it, each packet's group). Groups are numbered in key order; within a
    group, positions stay in frame order."""
    n = len(spi)
    k = spi.astype(np.int64)
    order = np.argsort(k, kind="stable")
    ks = k[order]
    new = np.empty(n, bool)
    new[0] = True
    np.not_equal(ks[1:], ks[:-1], out=new[1:])
    a = (src.astype(np.uint64) << np.uint64(32)) | dst
    sa_ = a[order]
    if ((sa_[1:] != sa_[:-1]) & ~new[1:]).any():  # one SPI from several address pairs: the full key
        _u, ai = np.unique(a, return_inverse=True)
        k = (ai.reshape(-1).astype(np.int64) << 32) | k
        order = np.argsort(k, kind="stable")
        ks = k[order]
        np.not_equal(ks[1:], ks[:-1], out=new[1:])
    bounds = np.append(np.flatnonzero(new), n)
    gid = np.empty(n, np.int64)
    gid[order] = np.cumsum(new) - 1
    return order, bounds, gid


def _inner_run(store, frame_e: np.ndarray, status: np.ndarray, nh: np.ndarray, plains: list, results: dict) -> None:
    """The run's decrypted inner packets into the inner store at once (decode.inner_bulk): the
    AES-GCM groups' payloads where they were decrypted, the others' from their results."""
    bufs, pos, starts, lens = [], [], [], []
    base = 0
    for lp, _out, ilen, J, st in plains:
        m = status[lp] == OK
        if m.any():
            bufs.append(J)
            pos.append(lp[m])
            starts.append(st[m] + base)
            lens.append(ilen[m])
        base += len(J)
    extra = [(i, r.inner) for i, r in results.items() if status[i] == OK and r.inner is not None]
    if extra:
        ln = np.array([len(x) for _i, x in extra], np.int64)
        bufs.append(np.frombuffer(b"".join(x for _i, x in extra), np.uint8))
        pos.append(np.array([i for i, _x in extra], np.int64))
        starts.append(np.cumsum(ln) - ln + base)
        lens.append(ln)
    if not pos:
        return
    P = np.concatenate(pos)
    order = np.argsort(P, kind="stable")
    P = P[order]
    add_run(store, frame_e[P], np.concatenate(bufs) if len(bufs) > 1 else bufs[0], np.concatenate(starts)[order],
            np.concatenate(lens)[order], nh[P])


def _esp_inside(inner: bytes, nh: int | None) -> bool:
    """Session._esp's test for ESP inside a decrypted payload (nested ESP)."""
    return nh == 50 or (nh == 4 and len(inner) > 9 and inner[9] == 50) or (
        nh == 41 and len(inner) > 6 and inner[6] == 50)


def _open_or_none(aead, salt: bytes, w: bytes, a: int, b: int) -> bytes | None:
    try:
        return aead(salt + w[a + 8:a + 16], w[a + 16:b], w[a:a + 8])
    except InvalidTag:  # the decryptor counts it
        return None


def _rows(W: np.ndarray, RO: np.ndarray, width: int, wl: int) -> np.ndarray:
    """The ``width`` bytes at each offset ``RO`` of the window ``W`` (``wl`` bytes), a row each
    (C order), picked as whole rows of a sliding-window view of ``W`` (a byte at a time, this was
    the loop's largest cost after AES). A row past the window's end repeats its last byte."""
    last = wl - width  # the last offset with a whole row in the window
    rows = np.lib.stride_tricks.as_strided(W, shape=(max(last + 1, 0), width), strides=(1, 1))
    if len(RO) == 0 or int(RO.max()) <= last:
        return rows[RO]
    out = np.empty((len(RO), width), np.uint8)
    whole = RO <= last
    out[whole] = rows[RO[whole]]
    out[~whole] = W[np.minimum(RO[~whole, None] + np.arange(width), wl - 1)]
    return out


def _u32(A: np.ndarray, j: int, order: str) -> np.ndarray:
    """Column j..j+3 of a byte matrix (C order) as 32-bit integers (``order`` "<" or ">"): a
    strided view, no copy."""
    return np.ndarray((A.shape[0],), order + "u4", A, j, (A.strides[0],))


def _u16(A: np.ndarray, j: int) -> np.ndarray:
    return (A[:, j].astype(np.int64) << 8) | A[:, j + 1]


def count_outcome(st, status: str) -> str:
    """Count one ESP packet's decryption outcome in the session's stats; its row status name
    (the general path, ``Session._esp``, and this loop share it)."""
    if status == "ok":
        st.decrypted += 1
        return "decrypted"
    if status == "no_key":
        st.no_key += 1
        return "no-key"
    if status == "icv_failed":
        st.icv_failed += 1
        return "icv-bad"
    return status.replace("_", "-")
