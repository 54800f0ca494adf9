"""The decrypt loop's bulk step: the AES-GCM-16 and AES-CBC + HMAC ESP records of one read window,
located, decrypted and written out with numpy around one crypto call per packet (issue 15).

:mod:`ipsecscope.export.hotloop` reads a capture in windows and handles a record per loop
iteration; with a big capture it first hands each window to :func:`plan`, which

1. walks the window's record chain (one ``struct`` read a record: the one sequential step) and
   gathers the records' first bytes as the rows of one matrix;
2. reads every record's header fields at once (numpy over the window, offsets from
   :mod:`ipsecscope.decode.fused`) and picks the records the per-record fast path would take
   (Ethernet, IPv4 without options or fragments, raw ESP or ESP in UDP 4500, a non-ESN SA with an
   integrity check: AES-GCM-16 or CBC + HMAC), in runs of at least ``MIN_RUN`` records;
3. decrypts them:
   - AES-GCM-16: one ``AESGCM.decrypt_into`` per packet (RFC 4106 §4/§5: nonce = salt | IV,
     AAD = SPI | sequence number; nonces and AADs cut from the window as numpy rows), which
     verifies the tag, straight into the window's output buffer where the packet's output block
     puts its data if the block is 28 + plaintext bytes long (the common case); blocks of other
     lengths are moved into place once the checks below know them (``_place``);
   - CBC + HMAC: the packets' ESP header | IV | ciphertext (the HMAC's input) copied by
     plaintext length and SA into one joined buffer, one numpy copy per length, with gaps that
     start every IV on a block; the HMAC per packet (a copy of the SA's keyed HMAC, truncated to
     the ICV, RFC 4868 §2.3) over the pieces cut from it as bytes, compared for all packets at
     once; then ONE ``update_into`` of the SA's CBC context per (length, SA) group, from the
     joined buffer into one scratch buffer: a packet's first block comes out as D(C_1) ^ IV
     (RFC 3602 §2, NIST SP 800-38A §6.2) whatever precedes it, and the blocks of the header, the
     gap and the IV as junk, never copied; the plaintexts of one length then lie a fixed step
     apart there and are copied into the output buffer one numpy call per length
     (``_copy_steps``: each read once, no gathered copy in between);
4. checks every payload at once the way ``hotloop.tunnel_len`` does (RFC 4303 §2.4-2.7: padding
   that fits, next header 4 or 41, the tunnelled packet inside, TFC padding dropped), writes the
   EPB headers and trailers around the plaintexts with two numpy scatters, and hands the loop
   one memoryview per run of output blocks (the loop joins a window's output into one write).
   The output buffer is the O_DIRECT output's staging buffer itself (export/direct.py,
   ``DirectOut.reserve``) when the window's records are one run, which the loop then only
   counts as written (no copy of the output; a run a failure splits moves out first, hotloop's
   ``_plan``); else a buffer of its own, copied out when the loop writes it.

A record that fails (ICV, payload, nested ESP, transport mode, a dummy packet) splits its run and
is left to the per-record loop, which decrypts it again on the general path and counts the
failure: the output and the counters are those of the per-record loop, byte for byte
(``tests/test_decrypt_bulk.py``). numpy is imported only for captures big enough to pay for it
(``hotloop.BULK_MIN_BYTES``).
"""

from __future__ import annotations

import struct
from struct import iter_unpack as _iter_unpack

import numpy as np
from cryptography.exceptions import InvalidTag

from ..decode.fused import ETH_IPV4

MIN_RUN = 8  # shorter runs of fast records stay on the per-record loop (numpy costs per call)
EPB_HEAD = 28  # bytes of an EPB before its packet data

# Frame byte offsets are ETH_IPV4's (decode/fused.py); the walk copies each record's first bytes,
# up to the IV of ESP in UDP, into one row of a matrix: the fields are its columns
_OFF = {name: off for name, _code, off in ETH_IPV4}
_EV, _TL, _FRAG, _PROTO, _K12, _X8 = (_OFF[k] for k in ("ev", "tlh", "fragw", "proto", "k12", "x8"))
ROW = _X8 + 16  # frame bytes per row: raw ESP's header and IV (34..50), ESP in UDP's (42..58)
_KEEP = np.array([0, 0xFF, 0xFFFF, 0xFFFFFF], np.uint32)  # the data's bytes of a block's last word


class OutBuf:
    """The window's output buffer, kept from one window to the next (the loop writes a window's
    blocks before it plans the next one) and grown when a window needs more; or, for a window
    that is one run (the common case), the output's own staging buffer (``direct``)."""

    __slots__ = ("buf", "own", "mv", "arr", "a32", "scr", "xin", "sa_keys", "direct", "staged")

    def __init__(self, direct=None) -> None:
        self.own = None
        self.direct = direct  # export.direct.DirectOut: the output's staging buffer, or None
        self.staged = False  # the last plan's blocks lie in direct's staging buffer, at its end
        self.need(1 << 16)
        self.scr = bytearray()  # the CBC scratch buffer, kept too
        self.xin = bytearray()  # the CBC calls' joined input, kept too
        self.sa_keys = None  # the last window's SAs: (sorted key mixes, addresses, SPIs, wire keys)

    def scratch(self, n: int) -> bytearray:
        """The CBC scratch buffer of this window, at least ``n`` bytes (a fresh 1 MiB bytearray a
        window costs its zeroing and page faults; its old content is never read)."""
        if len(self.scr) < n:
            self.scr = bytearray(n + (n >> 2))  # a new object: memoryviews of the old may be alive
        return self.scr

    def joined(self, n: int) -> bytearray:
        """The CBC calls' joined input of this window, at least ``n`` bytes (kept as the scratch
        buffer is; its old content is never read: every piece is copied in before it is read,
        and the gaps' bytes decrypt to junk that is never copied out)."""
        if len(self.xin) < n:
            self.xin = bytearray(n + (n >> 2))  # a new object: memoryviews of the old may be alive
        return self.xin

    def need(self, n: int, stage: bool = False) -> None:
        """``mv``/``arr``/``a32``: at least ``n`` bytes to plan a window's output into. With
        ``stage`` (the window is one run that the loop writes before anything else), the next
        ``n`` bytes of the direct output's staging buffer when it has them: the blocks are then
        planned where they are written from (one memmove of the output fewer)."""
        if stage and self.direct is not None:
            v = self.direct.reserve(n)
            if v is not None:
                self.staged = True
                self.mv, self.arr, self.a32 = v, np.frombuffer(v, np.uint8), np.frombuffer(v, "<u4", len(v) >> 2)
                return
        self.staged = False
        if self.own is None or len(self.buf) < n:
            # a new object: blocks of the last window may still point at the old one
            self.buf = bytearray((n + (n >> 2) + 7) & ~7)
            mv = memoryview(self.buf)
            self.own = (mv, np.frombuffer(self.buf, np.uint8), np.frombuffer(self.buf, "<u4"))
        self.mv, self.arr, self.a32 = self.own


def walk(w: bytes, o: int, wl: int, lim: int, stop: int, pcapng: bool) -> tuple[list[int], int]:
    """The offsets in ``w`` of the consecutive records from ``o`` that lie whole in the window
    (record header and at least ``ROW`` frame bytes) and that the per-record loop would read as
    plain records: pcap records, or pcapng Enhanced Packet Blocks (the first other block, damaged
    block or record past the window ends the walk); and the offset after the last. Offsets only:
    :func:`plan` gathers the records' first bytes with numpy (a bytes slice a record cost more)."""
    offs: list[int] = []
    ap = offs.append
    if pcapng:
        last = min(stop - 1, lim, wl - 28 - ROW)
        blk = _BLK
        while o <= last:
            btype, blen, _iface, _hi, _lo, incl = blk(w, o)
            nxt = o + blen
            if btype != 6 or blen < 32 or nxt > wl or 28 + incl > blen - 4:
                break
            ap(o)
            o = nxt
    else:
        last = min(stop - 1, lim, wl - 16 - ROW)
        incl = _INCL
        while o <= last:  # (only the last record taken can run past the window: checked below)
            ap(o)
            o += incl(w, o)[0] + 16
        if o > wl:
            o = offs.pop()
    return offs, o


_INCL = struct.Struct("<8xI").unpack_from  # a pcap record's captured length (the pad: no o + 8 a record)
_BLK = struct.Struct("<IIIIII").unpack_from


def _col(m: np.ndarray, c: int, dt: str) -> np.ndarray:
    """Bytes ``c ..`` of every row of the C-contiguous byte matrix ``m`` as one number of type
    ``dt`` (a strided view: the conversion that follows reads it in one pass, no copy first)."""
    return np.ndarray((len(m),), dt, m, c, (m.strides[0],))


def _le32(m: np.ndarray, c: int) -> np.ndarray:
    """Column ``c .. c+3`` of a C-contiguous byte matrix as little-endian 32-bit numbers (int64)."""
    return _col(m, c, "<u4").astype(np.int64)


def _present(a: np.ndarray) -> list[int]:
    """The distinct values of ``a`` (small non-negative integers: interface or SA ids), ascending.
    A count, not ``np.unique``: besides its sort, numpy 2's plain ``unique`` asks
    ``np.ma.is_masked`` and so imports ``numpy.ma`` (7-11 ms of CPU, ~0.04 us a packet at 200k).
    A pcapng interface id is the capture's to choose: a large one is sorted, not counted."""
    if len(a) and int(a.max()) >= 1 << 16:
        return np.unique(a, return_index=True)[0].tolist()  # (return_index: no numpy.ma either)
    return np.flatnonzero(np.bincount(a)).tolist()


def _spans(buf, k: int) -> np.ndarray:
    """``buf`` (bytes, bytearray or a 1-D uint8 array) as one ``k``-byte item at every byte
    offset: ``_spans(b, k)[ix]`` gathers ``k`` bytes from each offset in ``ix`` as ONE item
    (numpy copies a whole item at a time, where a strided (rows, k) view of bytes copies ``k``
    items of one byte: 1.4x faster for 10-byte rows, 2.9x for the 66-byte record heads, 4800 rows measured);
    ``_spans(b, k)[ix] = items`` scatters."""
    n = len(buf) - k + 1
    return np.ndarray((max(n, 0),), f"V{k}", buf, 0, (1,))


def _gather(buf, k: int, ix: np.ndarray) -> np.ndarray:
    """The ``k`` bytes at each offset in ``ix`` of ``buf`` as the rows of a uint8 matrix."""
    return _spans(buf, k)[ix].view(np.uint8).reshape(len(ix), k)


STEPPED = 16  # a run of CBC plaintexts a step apart this long is copied by numpy (_copy_steps)
COMMON = 32  # plaintexts of one length (in 32-bit words) shared by this many packets of a window


def _copy_common(o8: np.ndarray, s8: np.ndarray, s0: np.ndarray, t0: np.ndarray,
                 il: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copies the CBC plaintexts of ``il`` bytes at byte offsets ``s0`` of the scratch buffer to
    ``t0`` of the output buffer (``s8``/``o8``: both as bytes) when ``COMMON`` or more of them
    have one length in words: numpy, a plaintext an item, one call per length (up to 3 bytes past
    a plaintext land in its block's padding, which is zeroed after).
    Returns (s0, t0, il) of the others, for the loop that copies one at a time. Full-size and
    ACK-size packets make most of a bulk transfer's lengths (and the benchmark's IMIX has 3)."""
    wl = (il + 3) >> 2
    cnt = np.bincount(wl)
    common = cnt >= COMMON
    if not common.any():
        return s0, t0, il
    for k in np.flatnonzero(common).tolist():
        m = wl == k
        _spans(o8, 4 * k)[t0[m]] = _spans(s8, 4 * k)[s0[m]]  # (a whole plaintext an item)
    rest = ~common[wl]
    return s0[rest], t0[rest], il[rest]


def _copy_steps(o8: np.ndarray, s8: np.ndarray, s0: np.ndarray, step: np.ndarray, bs: np.ndarray,
                t0: np.ndarray, il: np.ndarray, tot: np.ndarray,
                keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copies CBC plaintexts from the scratch buffer ``s8`` (byte offsets ``s0``, ascending: the
    next one lies its piece's ``step`` and the blocks' difference ``bs`` further, so a fixed step
    apart where both stay the same) to ``t0`` of the output buffer ``o8``: ``il`` bytes each,
    output blocks ``tot`` long, only where ``keep``. A run of ``STEPPED`` or more packets all
    kept is one numpy call (the scratch side a strided view: each plaintext read once, no
    gathered copy in between), ``L`` bytes each, its longest data rounded up to a word: past a
    shorter packet's data that lands in its block's padding, trailer and the next block's
    header, all written after (so ``L`` may not pass ``tot``: the next block's data). Returns
    (s0, t0, il) of the packets kept but not copied, for the ways that copy one length or one
    packet at a time."""
    n = len(s0)
    cut = np.flatnonzero((step[1:] != step[:-1]) | (bs[1:] != bs[:-1])) + 1
    r0 = np.concatenate(([0], cut))
    r1 = np.concatenate((cut, [n]))
    L = (np.maximum.reduceat(il, r0) + 3) & ~3
    ok = (r1 - r0 >= STEPPED) & (np.add.reduceat(keep, r0) == r1 - r0) & (L <= np.minimum.reduceat(tot, r0))
    if not ok.any():
        return s0[keep], t0[keep], il[keep]
    rest = keep.copy()
    for a, b, k, sa, st in zip(r0[ok].tolist(), r1[ok].tolist(), L[ok].tolist(), s0[r0[ok]].tolist(),
                               step[r0[ok]].tolist(), strict=True):
        _spans(o8, k)[t0[a:b]] = np.ndarray((b - a,), f"V{k}", s8, sa, (st,))
        rest[a:b] = False
    return s0[rest], t0[rest], il[rest]


def _runs(mask: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True in ``mask`` at least ``min_len`` long."""
    d = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
    starts = np.flatnonzero(d == 1)
    stops = np.flatnonzero(d == -1)
    keep = stops - starts >= min_len
    return list(zip(starts[keep].tolist(), stops[keep].tolist(), strict=True))


def _kind(e) -> int:
    """0: the per-record loop; 1: AES-GCM-16 with ``decrypt_into``; 2: CBC + HMAC."""
    if e is None:
        return 0
    if e.gcm is not None:  # (gcm and cbc are set only on non-ESN SAs the fast path may take)
        return 1 if hasattr(getattr(e.gcm, "__self__", None), "decrypt_into") else 0
    if e.cbc is not None:
        return 2 if hasattr(getattr(e.cbc[0], "__self__", None), "update_into") else 0
    return 0


def _gcm_each(fns, nonces, wmv, a, b, aads, omv, c, which) -> np.ndarray:
    """The comprehension's fallback once a tag failed: which of the packets ``which`` fail (each
    decrypted again, the ones before the failure too: the same bytes in the same place)."""
    bad = np.zeros(len(which), bool)
    for j, i in enumerate(which):
        s, e = a[i], b[i]
        try:
            fns[i](nonces[i], wmv[s:e], aads[i], omv[c[i]:c[i] + e - s - 16])
        except InvalidTag:
            bad[j] = True
    return bad


def _place(out: OutBuf, src: np.ndarray, dst: np.ndarray, ln: np.ndarray, ix: np.ndarray) -> None:
    """Moves the AES-GCM data of ``ln`` bytes decrypted at ``src`` of the output buffer to its
    place ``dst`` (``ix``: the packets' places in the window's selection). Nothing to do when every
    block was as long as planned; else one move per run of neighbours moved alike, from the far
    end of the shift (the runs before a run still lie below where it goes: moved after it), or,
    when the runs are many or move both ways, everything copied out first and copied back."""
    sh = dst - src
    if not sh.any():
        return
    cut = np.flatnonzero((sh[1:] != sh[:-1]) | (ix[1:] != ix[:-1] + 1)) + 1  # each run's first packet
    lo, hi = int(sh.min()), int(sh.max())
    first = np.concatenate(([0], cut))
    last = np.concatenate((cut - 1, [len(sh) - 1]))
    if len(first) <= 64 + (len(sh) >> 4) and (lo >= 0 or hi <= 0):
        mv = out.mv
        s0, s1 = src[first], src[last] + ln[last]
        moves = zip(s0.tolist(), s1.tolist(), dst[first].tolist(), (dst[first] + s1 - s0).tolist(), strict=True)
        for a, b, c, e in (reversed(list(moves)) if lo >= 0 else moves):
            mv[c:e] = mv[a:b]  # (memmove: the pieces may overlap)
        return
    base = int(src.min())
    S = out.arr[base:int((src + ln).max()) + 4].copy()  # (+ 4: _copy_common reads whole words)
    s0, t0, il = _copy_common(out.arr, S, src - base, dst, ln)
    mv, smv = out.mv, memoryview(S)
    for a, b, c, e in zip(s0.tolist(), (s0 + il).tolist(), t0.tolist(), (t0 + il).tolist(), strict=True):
        mv[c:e] = smv[a:b]


def _icv_bad(tags: list[bytes], G: np.ndarray) -> np.ndarray:
    """Which packets' HMAC ``tags`` (all of one length) differ, in their first ``icv`` bytes, from
    the ICVs the packets carry (``G``: one a row, ``icv`` bytes)."""
    T = np.frombuffer(b"".join(tags), np.uint8).reshape(len(tags), -1)
    icv = G.shape[1]
    # as 64- or 32-bit words, a column at a time (~3x faster than a byte matrix's any())
    wd = "<u8" if not (icv | T.shape[1]) & 7 else "<u4" if not (icv | T.shape[1]) & 3 else None
    if wd is None:  # pragma: no cover - every HMAC ICV here is 12-32 bytes, 4 a word
        return (T[:, :icv] != G).any(axis=1)
    T = T.view(wd)
    G = G.view(wd)
    diff = T[:, 0] ^ G[:, 0]
    for j in range(1, G.shape[1]):
        diff |= T[:, j] ^ G[:, j]
    return diff != 0


def plan(w: bytes, offs: list[int], pcapng: bool, ifs: list, mul: int, sas: dict,  # noqa: C901
         out: OutBuf, end_off: int) -> list[tuple]:
    """The bulk runs of one window: ``[(offset of the run's first record, offset after its last,
    records, output blocks, [(SaSlot, packets)])]`` in record order. ``offs`` and ``end_off`` come
    from :func:`walk`; ``ifs`` and ``mul`` are the hot loop's per-interface
    timestamp units (pcapng) and pcap fraction unit; the blocks are memoryviews of ``out``, valid
    until the next call."""
    n = len(offs)
    if n < MIN_RUN:
        return []
    rh = 28 if pcapng else 16
    W = np.frombuffer(w, np.uint8)
    RO = np.fromiter(offs, np.int64, n)  # the records' offsets in the window
    M = _gather(W, rh + ROW, RO)  # a record a row: its header and first frame bytes
    F = M[:, rh:]  # the frames' first bytes
    # 1. every record: where it is, Ethernet type + IPv4 version/IHL, total length, fragment
    #    field, protocol
    if pcapng:
        iface = _le32(M, 8)
        incl = _le32(M, 20)
        eth = np.zeros(n, bool)
        for k in _present(iface):
            if k < len(ifs) and ifs[k][0]:
                eth |= iface == k
    else:
        incl = _le32(M, 8)
        eth = True
    fend = RO + rh + incl
    # (multi-byte fields read as numbers, strided views of M: one numpy pass a field)
    ok = (_col(M, rh + _EV, ">u4") >> 8) == 0x080045  # Ethernet type IPv4, version 4, 20-byte header
    ok &= (_col(M, rh + _FRAG, ">u2") & 0x3FFF) == 0  # not a fragment
    ok &= eth & (incl >= 38)
    end_ip = RO + rh + _EV + 2 + _col(M, rh + _TL, ">u2")
    ok &= end_ip <= fend
    proto = F[:, _PROTO]
    raw = proto == 50
    udp = (proto == 17) & (incl >= 54)
    # ESP in UDP 4500 (either port), not IKE (RFC 3948 §2.2: a zero "SPI" is IKE)
    udp &= (_col(M, rh + _K12 + 8, ">u2") == 4500) | (_col(M, rh + _K12 + 10, ">u2") == 4500)
    if udp.any():  # (only when there is UDP 4500 at all)
        udp &= _col(M, rh + _X8, "<u4") != 0
    ok &= raw | udp
    cand = np.flatnonzero(ok)
    if len(cand) < MIN_RUN:
        return []
    allc = len(cand) == n  # (the common case: every record a candidate, no gathers)
    Fc = F if allc else F[cand]
    rawc = raw[cand]
    e0 = np.where(rawc, _K12 + 8, _X8)  # the ESP header in the frame
    q = RO[cand] + rh + e0
    esp_n = end_ip[cand] - q
    # ESP header and the 8 bytes after it (AES-GCM's IV), per candidate
    nraw = int(rawc.sum())
    if nraw == len(cand):  # (one encapsulation throughout, the common case: a view)
        EH = Fc[:, _K12 + 8:_K12 + 24]
    elif not nraw:
        EH = Fc[:, _X8:_X8 + 16]
    else:
        EH = np.where(rawc[:, None], Fc[:, _K12 + 8:_K12 + 24], Fc[:, _X8:_X8 + 16])
    # the SA of each candidate, by its wire key (source, destination, SPI) as hotloop's dict has
    # it: a 64-bit mix of the key looked up among the SAs of the last window (or, when one is
    # new, made unique over this window's), every member checked against its representative
    Mc = M if allc else M[cand]
    sd = _col(Mc, rh + _K12, ">u8").astype(np.uint64)
    if nraw == len(cand) or not nraw:
        spi = _col(Mc, rh + (_K12 + 8 if nraw else _X8), ">u4").astype(np.uint64)
    else:
        spi = np.where(rawc, _col(Mc, rh + _K12 + 8, ">u4"), _col(Mc, rh + _X8, ">u4")).astype(np.uint64)
    mix = (sd * np.uint64(0x9E3779B97F4A7C15)) ^ spi
    inv = None
    if out.sa_keys is not None:  # (the SAs seldom change from one window to the next: no sort)
        ukeys, usd, uspi, kbs = out.sa_keys
        inv = np.searchsorted(ukeys, mix)
        np.minimum(inv, len(ukeys) - 1, out=inv)
        if not (ukeys[inv] == mix).all():
            inv = None
    if inv is None:
        ukeys, first, inv = np.unique(mix, return_index=True, return_inverse=True)
        inv = inv.ravel()
        usd, uspi = sd[first], spi[first]
        kbs = [a.to_bytes(8, "big") + b.to_bytes(4, "big") for a, b in zip(usd.tolist(), uspi.tolist(), strict=True)]
        out.sa_keys = (ukeys, usd, uspi, kbs)
    good = (sd == usd[inv]) & (spi == uspi[inv])
    nsa = len(kbs)
    slots = [sas.get(kb) for kb in kbs]
    # per SA (one column each): kind, ESP header + IV + ICV bytes, the least plaintext, block
    # (CBC), ICV bytes, made in Python at once (a numpy item store costs a call each)
    kinds, over, least, blkl, icvl = np.array(
        [(1, 32, 4, 1, 16) if kd == 1 else (2, 8 + e.cbc[1] + e.cbc[3], e.cbc[1], e.cbc[1], e.cbc[3])
         if kd == 2 else (0, 0, 0, 1, 0) for e, kd in zip(slots, map(_kind, slots), strict=True)], np.int64).T.copy()
    # the plaintext (padding and trailer included): AES-GCM's 4 bytes at least (pad length and
    # next header, aligned to 4: RFC 4303 §2.4), CBC's a whole number of blocks (8 or 16 bytes:
    # a mask, not int64's slow %, unless a block were no power of two)
    pln = esp_n - over[inv]
    good &= (kinds[inv] > 0) & (pln >= least[inv])
    good &= (pln % blkl[inv] == 0) if (blkl & (blkl - 1)).any() else (pln & (blkl - 1)[inv]) == 0
    if allc and good.all():
        runs = [(0, n)]  # (every record a candidate the bulk step takes, the common case)
    else:
        fast = np.zeros(n, bool)
        fast[cand[good]] = True
        runs = _runs(fast, MIN_RUN)
    if not runs:
        return []
    # 2. the records of the runs
    gid_all = np.full(n, -1, np.int64)
    gid_all[cand] = inv
    if allc and runs == [(0, n)]:  # every record in one run: the candidates' columns as they are
        sel, c_sel = np.arange(n), slice(None)
        g, Q, E, pl = inv, q, end_ip, pln
    else:
        ci = np.full(n, -1, np.int64)  # record -> candidate
        ci[cand] = np.arange(len(cand))
        sel = np.concatenate([np.arange(a, b) for a, b in runs])
        c_sel = ci[sel]
        g = inv[c_sel]
        Q = q[c_sel]
        E = end_ip[sel]
        pl = pln[c_sel]
    kd = kinds[g]
    ns = len(sel)
    failed = np.zeros(ns, bool)
    gcm = np.flatnonzero(kd == 1)
    cbc = np.flatnonzero(kd == 2)
    gi = slice(None) if len(gcm) == ns else gcm  # (a slice when they all are: views, not gathers)
    wmv = memoryview(w)
    # 3. the plaintexts, and what the output needs of each: its first 10 bytes, the pad length and
    # the next header (RFC 4303 §2.4-2.6)
    head = np.empty((ns, 10), np.uint8)
    tail = np.empty((ns, 2), np.uint8)
    # Each AES-GCM plaintext is decrypted straight into the output buffer where its block's data
    # goes if the block is 28 + pl bytes long: an inner packet of a length that is a multiple of
    # 4 with the least padding (pad length 2; 3 with one byte over), most of a bulk transfer.
    # The plaintexts then lie back to back, 28 bytes apart (room for the block headers), none
    # overwriting another, and what the checks need is read from them. Blocks of other lengths
    # shift the packets after them, moved after the checks (_place).
    alloc = 28 + pl
    Dp = np.cumsum(alloc) - alloc + EPB_HEAD  # where each plaintext is decrypted
    out.need(int(alloc.sum()) + 8 * ns + int(pl.max()) + 64, isinstance(c_sel, slice))  # (one run: staged)
    omv = out.mv
    if len(gcm):
        cg = gi if isinstance(c_sel, slice) else c_sel[gi]
        m = len(gcm)
        nonce = np.empty((m, 12), np.uint8)  # RFC 4106 §4: salt | IV
        salt_rows = np.zeros((nsa, 4), np.uint8)
        gg = g[gi]
        ug = np.flatnonzero(np.bincount(gg, minlength=nsa)).tolist()  # (a count, not np.unique's sort)
        for u in ug:
            salt_rows[u] = np.frombuffer(slots[u].salt, np.uint8)
        nonce[:, :4] = salt_rows[gg]
        nonce[:, 4:] = EH[cg, 8:16]
        plg = pl[gi]
        N = nonce.view("V12").ravel().tolist()
        AD = np.ascontiguousarray(EH[cg, :8]).view("V8").ravel().tolist()  # RFC 4106 §5: SPI | sequence number
        ct0 = Q[gi] + 16
        a_all = ct0.tolist()
        b_all = E[gi].tolist()
        dg = Dp[gi]
        dl, xl = dg.tolist(), (dg + plg).tolist()
        try:  # (decrypt_into checks the tag)
            if len(ug) == 1:
                one = slots[ug[0]].gcm.__self__.decrypt_into
                [one(nn, wmv[s:e], ad, omv[d:x]) for nn, s, e, ad, d, x in zip(N, a_all, b_all, AD, dl, xl, strict=True)]
            else:  # (each packet's SA's call, picked by numpy from an object array)
                fo = np.empty(nsa, object)
                for u in ug:
                    fo[u] = slots[u].gcm.__self__.decrypt_into
                [f(nn, wmv[s:e], ad, omv[d:x]) for f, nn, s, e, ad, d, x in
                 zip(fo[gg].tolist(), N, a_all, b_all, AD, dl, xl, strict=True)]
        except InvalidTag:  # the per-record loop decrypts it again and counts the failure
            fo = np.empty(nsa, object)
            for u in ug:
                fo[u] = slots[u].gcm.__self__.decrypt_into
            failed[gcm] = _gcm_each(fo[gg].tolist(), N, wmv, a_all, b_all, AD, omv, dl, range(m))
        O8 = out.arr
        head[gi] = _gather(O8, 10, dg)
        tail[gi] = _gather(O8, 2, dg + plg - 2)  # (each plaintext's last 2 bytes)
    cbc_d = None
    if len(cbc):
        # CBC: the packets taken by plaintext length, then SA (a stable sort: each SA's in record
        # order): their HMAC input sliced out in that order, the HMAC per packet (RFC 4303 §3.4.4:
        # checked before the payload is trusted; compared in bulk: an offline capture gives no
        # timing oracle to protect), then the slices joined as they are and each (length, SA)
        # group decrypted in one call of its SA's context, in place in one scratch buffer (see
        # the module docstring); the packets of one length then lie a fixed step apart there,
        # which lets :func:`_copy_steps` copy them out with one numpy call per length.
        ci = slice(None) if len(cbc) == ns else cbc  # (a slice when they all are: views, not gathers)
        gc = g[ci]
        plc = pl[ci]
        key = plc * nsa + gc
        o = np.argsort(key.astype(np.uint16) if int(key.max()) < 1 << 16 else key, kind="stable")
        cbc_m = o if len(cbc) == ns else cbc[o]
        gs = gc[o]
        ks = key[o]
        gcut = np.flatnonzero(ks[1:] != ks[:-1]) + 1  # each (length, SA) group's first packet but the first
        g0 = [0, *gcut.tolist()]
        g_sa = gs[g0].tolist()
        us = np.flatnonzero(np.bincount(gc, minlength=nsa)).tolist()
        ier = E[cbc_m] - icvl[gs]  # each HMAC input's end (the ICV), in that order
        # header | IV | ciphertext of each packet, in that order, copied once into the joined
        # input ``X`` of the CBC calls below, an 8-byte gap before each: gap and ESP header make
        # 16 bytes, two 8-byte blocks or one 16-byte one, so every IV starts a block (and every
        # piece is a whole number of blocks: the context keeps no partial block). The pieces of
        # one length lie a fixed step apart there: one numpy copy per length (a run of at least
        # ``STEPPED``; shorter ones a memoryview copy each), where a bytes slice of the window a
        # packet and a join of them cost ~110 ns a packet (issue 15)
        bsp = blkl[gs]
        step = 16 + bsp + plc[o]  # gap | header | IV | ciphertext
        ps = np.cumsum(step) - step  # where each piece starts in X, and its output in the scratch
        cbc_d = ps + 16 + bsp  # where each plaintext lands
        nx = int(ps[-1] + step[-1])
        bmax = int(bsp.max())
        xb = out.joined(nx)
        xmv = memoryview(xb)[:nx]
        qs = Q[cbc_m]
        scut = np.flatnonzero(step[1:] != step[:-1]) + 1  # each piece length's first packet but the first
        sa0 = [0, *scut.tolist()]  # (a list, not np.r_: its Python-level indexing costs ~5 us a call)
        for a, b, st, pa in zip(sa0, [*sa0[1:], len(qs)], step[sa0].tolist(), ps[sa0].tolist(), strict=True):
            L = st - 8
            if b - a >= STEPPED:
                np.ndarray((b - a,), f"V{L}", xb, pa + 8, (st,))[...] = _spans(W, L)[qs[a:b]]
            else:
                for s0 in qs[a:b].tolist():
                    xmv[pa + 8:pa + st] = wmv[s0:s0 + L]
                    pa += st
        icvs = set(icvl[us].tolist())
        G = _gather(W, icvs.pop(), ier) if len(icvs) == 1 else None
        # the HMAC per packet, one comprehension per (length, SA) group, its SA's keyed HMAC
        # template's copy a local (no per-packet pick of the template: ~10 ns a packet of the
        # ~0.7 us the HMAC costs); its inputs as bytes, which `cryptography` reads ~30 ns faster
        # than a memoryview: cut out of X by one struct.iter_unpack a group (~50 ns a packet
        # where a slice costs ~90)
        tags = []
        ends = [*ps[gcut].tolist(), nx]
        for u, a, e, pa, pe in zip(g_sa, g0, [*g0[1:], len(qs)], [0, *ends[:-1]], ends, strict=True):
            hcopy = slots[u].cbc[2]
            st = (pe - pa) // (e - a)
            if e - a >= 4:
                tags += [(h := hcopy()).update(x) or h.finalize() for (x,) in _iter_unpack(f"8x{st - 8}s", xmv[pa:pe])]
            else:
                tags += [(h := hcopy()).update(xmv[p + 8:p + st].tobytes()) or h.finalize() for p in range(pa, pe, st)]
        same = {(len(tags[i]), slots[u].cbc[3]) for i, u in zip(g0, g_sa, strict=True)}  # (tag, ICV) lengths
        if len(same) == 1 and G is not None:  # (one suite in the window, the common case: one comparison)
            failed[cbc_m] = _icv_bad(tags, G)
        else:
            for u in us:
                om = np.flatnonzero(gs == u)
                failed[cbc_m[om]] = _icv_bad([tags[k] for k in om.tolist()], _gather(W, slots[u].cbc[3], ier[om]))
        smv = memoryview(out.scratch(nx + bmax))
        into = {u: slots[u].cbc[0].__self__.update_into for u in us}
        for u, a, e in zip(g_sa, [0, *ends[:-1]], ends, strict=True):
            into[u](xmv[a:e], smv[a:e + bmax])  # (update_into wants a block's room more)
        S = np.frombuffer(smv, np.uint8)
        # (a plaintext of one 8-byte block: 2 bytes of the next piece in head, unused)
        if len(cbc) == ns:  # (all CBC: gathered in record order, no scatter of rows: ~9 ns a packet less)
            dr = np.empty(ns, np.int64)
            dr[cbc_m] = cbc_d
            head = _gather(S, 10, dr)
            tail = _gather(S, 2, dr + pl - 2)  # (each plaintext's last 2 bytes)
        else:
            head[cbc_m] = _gather(S, 10, cbc_d)
            tail[cbc_m] = _gather(S, 2, cbc_d + plc[o] - 2)
    # 4. RFC 4303 §2.4-2.6 and hotloop.tunnel_len: padding that fits, next header 4 or 41, and the
    # tunnelled IP packet inside the payload (TFC padding after it dropped, RFC 4303 §2.7); ESP
    # inside (nested), transport mode and anything odd take the per-record path
    pad = tail[:, 0].astype(np.int64)
    nh = tail[:, 1]
    avail = pl - 2 - pad
    b0 = head[:, 0]
    tl4 = _col(head, 2, ">u2").astype(np.int64)
    # (20 <= tl4 <= avail: the payload holds at least the IPv4 header, and so the padding fits;
    # b0 - 0x45 wraps below 0x45 as uint8: one test for 0x45 <= b0 <= 0x4F)
    v4 = (nh == 4) & ((b0 - 0x45) <= 10) & (head[:, 9] != 50) & (tl4 >= 20) & (tl4 <= avail)
    if (nh == 41).any():  # (the same for IPv6: 40 <= tl6 <= avail)
        tl6 = _col(head, 4, ">u2").astype(np.int64) + 40
        v6 = (nh == 41) & ((b0 >> 4) == 6) & (head[:, 6] != 50) & (tl6 <= avail)
        ilen = np.where(v4, tl4, np.where(tl6 > 40, tl6, avail))
        okp = v4 | v6
    else:
        ilen, okp = tl4, v4  # (a packet not okp is not kept: its ilen is never read)
    tot = 32 + ilen + ((-ilen) & 3)  # the output block's length
    # 5. the output: the blocks of the packets that passed, back to back in record order; the
    # AES-GCM plaintexts moved where their blocks' data goes, the CBC ones copied there
    keep = okp & ~failed
    tk = np.where(keep, tot, 0)
    P = np.cumsum(tk) - tk  # block starts (multiples of 4)
    total = int(tk.sum())
    if not total:
        return []
    D = P + EPB_HEAD
    if len(gcm):
        kg = gcm[keep[gcm]]
        _place(out, Dp[kg], D[kg], ilen[kg], kg)
    omv, O32 = out.mv, out.a32
    if cbc_d is not None:
        s0, t0, il = _copy_steps(out.arr, S, cbc_d, step, bsp, D[cbc_m], ilen[cbc_m], tot[cbc_m], keep[cbc_m])
        if len(s0) >= COMMON:
            s0, t0, il = _copy_common(out.arr, S, s0, t0, il)
        # (the ends added up by numpy: two additions fewer a packet in the loop)
        for a, b, c, e in zip(s0.tolist(), (s0 + il).tolist(), t0.tolist(), (t0 + il).tolist(), strict=True):
            omv[c:e] = smv[a:b]
    whole = ns == n and bool(keep.all())  # every record in one run, every one kept (the common case)
    if whole:
        rk, ik, tk, Pk = sel, ilen, tot, P
    else:
        kx = np.flatnonzero(keep)
        rk = sel[kx]
        ik = ilen[kx]
        tk = tot[kx]
        Pk = P[kx]
    ts = _timestamps(M if len(rk) == n else M[rk], pcapng, ifs, mul, iface[rk] if pcapng else None)
    hd = np.empty((len(rk), 7), "<u4")  # (a column a call: wider 2-D assignments cost ~60-150 instructions a packet more)
    hd[:, 0] = 6
    hd[:, 1] = tk
    hd[:, 2] = 0
    hd[:, 3] = ts >> np.uint64(32)
    hd[:, 4] = ts & np.uint64(0xFFFFFFFF)
    hd[:, 5] = ik
    hd[:, 6] = ik
    _spans(out.arr, EPB_HEAD)[Pk] = hd.view(f"V{EPB_HEAD}").ravel()  # (a header an item)
    te = (Pk + EPB_HEAD + ik) >> 2  # the data's last word: padded with zeros (plaintext bytes were there)
    O32[te] &= _KEEP[ik & 3]
    O32[(Pk + tk - 4) >> 2] = tk
    # back to runs of records (a failed record splits its run), each run's blocks one slice
    if whole:
        cnt = np.bincount(g, minlength=nsa)
        gids = np.flatnonzero(cnt)
        return [(offs[0], end_off, n, omv[:total], [(slots[u], k) for u, k in zip(gids.tolist(), cnt[gids].tolist(),
                                                                                     strict=True)])]
    res = []
    okrec = np.zeros(n, bool)
    okrec[rk] = True
    bstart = np.zeros(n, np.int64)
    bstart[rk] = Pk
    bend = np.zeros(n, np.int64)
    bend[rk] = Pk + tk
    for r0, r1 in _runs(okrec, 1):
        cnt = np.bincount(gid_all[r0:r1], minlength=nsa)  # (a run's records are all candidates: ids >= 0)
        gids = np.flatnonzero(cnt)
        res.append((offs[r0], offs[r1] if r1 < n else end_off, r1 - r0, omv[int(bstart[r0]):int(bend[r1 - 1])],
                    [(slots[u], k) for u, k in zip(gids.tolist(), cnt[gids].tolist(), strict=True)]))
    return res


def _timestamps(M: np.ndarray, pcapng: bool, ifs: list, mul: int, iface) -> np.ndarray:
    """The time in ns (uint64) of the records whose first bytes are the rows of ``M``, as the
    per-record loop computes it."""
    if not pcapng:
        return (_col(M, 0, "<u4").astype(np.uint64) * np.uint64(1_000_000_000)
                + _col(M, 4, "<u4").astype(np.uint64) * np.uint64(mul))
    raw = (_le32(M, 12).astype(np.uint64) << np.uint64(32)) | _le32(M, 16).astype(np.uint64)
    ts = np.zeros(len(raw), np.uint64)
    for k in _present(iface):
        m = iface == k
        _eth, imul, idiv, ioff = ifs[k]
        r = raw[m]
        if idiv == 1 and 0 <= imul < 1 << 63:  # exact modulo 2**64, as `& 0xFFFF...` is
            ts[m] = r * np.uint64(imul) + np.uint64(ioff & 0xFFFFFFFFFFFFFFFF)
        else:
            ts[m] = np.array([(x * imul // idiv + ioff) & 0xFFFFFFFFFFFFFFFF for x in r.tolist()], np.uint64)
    return ts
