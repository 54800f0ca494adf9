"""The analysis path's hot loop: ``Session.load`` for the bulk of a big capture.

A capture of a busy tunnel is almost all ESP over Ethernet/IPv4. For those frames this loop does
what ``Session.load`` does frame by frame — read the record, demultiplex, decrypt, correlate, keep
a row — a window at a time and without per-frame objects, the way ``export``'s decrypt loop does:

1. the file is read in 4 MiB windows; a tight loop finds each record's offset (one ``struct``
   call a record);
2. numpy reads every record's header fields at once (timestamps, lengths, Ethernet type, IPv4
   header, UDP ports, SPI, sequence number) and sorts the records into ESP (raw, RFC 4303, or
   UDP-encapsulated, RFC 3948), plain non-IPsec IP (counted only, when no rows are kept), and
   everything else;
3. everything else (IKE, fragments, VLANs, IPv6, AH, ICMP, anything odd) goes to the session's
   general path, ``Session._general_frame``, in frame order; the ESP frames between two such
   frames are one *run*: grouped by SA (source, destination, SPI), decrypted (AES-GCM-16 inline,
   one call a packet; other algorithms through the decryptor), their payloads checked in bulk,
   and accounted per flow (``state.bulk``), rows packed at once.

So the answer is the same whichever path a frame took (``tests/test_session_fast.py`` compares
both on every capture).
"""

from __future__ import annotations

import os
import socket
import struct
from typing import NamedTuple

import numpy as np
from cryptography.exceptions import InvalidTag

from .capture._fastnew import fast_constructor
from .capture.pcap import FILE_HEADER_LEN, MAGIC_NS, MAGIC_US, MAX_RECORD, MAX_RECORD_HARD
from .capture.pcapng import (
    BLK,
    DSB,
    EPB,
    IDB,
    MAX_BLOCK,
    PB,
    SHB,
    SPB,
    Interface,
    Section,
    _parse_idb,
    frame_from_block,
    open_section,
)
from .crypto.esp import MIN_INNER, STATUS, EspResult, check_payload, payload_failure, trim_tfc
from .decode.inner_bulk import add_run
from .errors import CaptureError
from .keys.formats import add_secrets_block
from .model.packets import RawFrame
from .model.sa import SaState
from .rowstore import KIND_ESP, REC_SIZE, STATUS_CODES
from .state.bulk import ICV_FAILED, NO_KEY, OK, EspRun, on_esp_run

_BLK = {k: v.unpack_from for k, v in BLK.items()}

_RawFrame = fast_constructor(RawFrame)
_Result = fast_constructor(EspResult)

WINDOW = 4 << 20
_U32LE = struct.Struct("<I").unpack_from
_BLK_LE = BLK["<"].unpack_from
_KEY = struct.Struct("!III").pack
_BOM_LE = b"\x4d\x3c\x2b\x1a"
_CODE = {name: i for i, name in enumerate(STATUS)}
_NO_KEY_RESULT = EspResult("no_key", reason="no key for this SA (add its keys with -k)")
# The frame bytes numpy reads of each record (the first _F1): Ethernet type + IPv4 version/IHL
# (12-14), total length (16-17), flags/fragment offset (20-21), protocol (23), addresses (26-33),
# then raw ESP's SPI and sequence number or UDP's ports, length, SPI, sequence number (34-49).
_F1 = 50
# RowStore's record ("<qdBIIHHIqQBqh"), to pack a run's rows at once.
ROW_DTYPE = np.dtype([("frame", "<i8"), ("ts", "<f8"), ("kind", "u1"), ("src", "<u4"), ("dst", "<u4"),
                      ("sport", "<u2"), ("dport", "<u2"), ("length", "<u4"), ("spi", "<i8"), ("seq", "<u8"),
                      ("status", "u1"), ("child", "<i8"), ("nh", "<i2")])
assert ROW_DTYPE.itemsize == REC_SIZE
# next header -> the shortest header the payload must hold (crypto.esp.MIN_INNER), -1: anything
_NEED = np.full(256, -1, np.int64)
for _nh, _need in MIN_INNER.items():
    _NEED[_nh] = _need
# A run is accounted per flow in bulk when its flows have this many packets each on average;
# below that (many SAs with a packet or two each) packet by packet, as the general path does.
BULK_MIN = 4


def eligible(session, path: str) -> str | None:
    """"pcap" or "pcapng" for an uncompressed capture the loop reads (a little-endian pcap of
    Ethernet frames, or any pcapng), when ``session`` keeps a file's rows (a RowStore, not a live
    ring); None otherwise."""
    if session.max_rows:  # live mode's ring of rows: frames come from a socket, not a file
        return None
    try:
        if not os.path.isfile(path):  # a FIFO would block open(): the general reader explains it
            return None
        with open(path, "rb") as f:
            head = f.read(FILE_HEADER_LEN)
    except OSError:
        return None
    if len(head) >= 12 and head[:4] == b"\x0a\x0d\x0d\x0a":
        return "pcapng"
    if len(head) < FILE_HEADER_LEN:
        return None
    magic, _vmaj, _vmin, _zone, _sig, _snap, network = struct.unpack("<IHHiIII", head)
    return "pcap" if magic in (MAGIC_US, MAGIC_NS) and network & 0xFFFF == 1 else None


def load(session, path: str, path_index: int, fmt: str, progress=None) -> str | None:
    """Feed every frame of ``path`` (``fmt`` from :func:`eligible`) to ``session``; returns what
    was cut off at the end of the file (None when it ended cleanly).

    ``session`` is the :class:`~ipsecscope.session.Session` being loaded (not imported here: it
    imports this module); the loop calls its general path, ``_general_frame``, for every frame
    it does not take itself.
    """
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        lp = _Loop(session, path, path_index, fmt == "pcapng")
        truncated = lp.run_pcapng(fd, size, progress) if lp.pcapng else lp.run_pcap(fd, size, progress)
        if progress is not None:
            progress(size, size)
        return truncated
    finally:
        os.close(fd)


class _Loop:
    """One file's pass: the windows, the batches of records in them, the runs of ESP."""

    def __init__(self, session, path: str, path_index: int, pcapng: bool) -> None:
        self.s = session
        self.path = path
        self.path_index = path_index
        self.pcapng = pcapng
        self.rh = 28 if pcapng else 16  # where the frame starts in its record
        # Frame numbers continue the session's (a second file's after the first's: Session.load);
        # messages about the file count its own records (infile).
        self.base = session._frame_bases[path_index]  # Session.load registered the file first
        self.index = self.base  # the session's frame number of the last frame read
        self.mult = 1000
        self.lt = 1
        self.ifaces: list[Interface] = []
        self.section: Section | None = None
        self.keep = session.keep_rows  # False: no rows, and no offsets to re-read frames from
        self.text: dict[int, str] = {}
        # SA key (src | dst | SPI bytes) -> [decryptor state, AES-GCM-16 decrypt, salt, key-store
        # version, src, dst, src row index, dst row index]
        self.sas: dict[bytes, list] = {}

    # -- pcap -----------------------------------------------------------------------------------

    def run_pcap(self, fd: int, size: int, progress) -> str | None:
        path = self.path
        head = os.pread(fd, FILE_HEADER_LEN, 0)
        magic, _vmaj, _vmin, _zone, _sig, snaplen, network = struct.unpack("<IHHiIII", head)
        self.mult = 1 if magic == MAGIC_NS else 1000
        limit = min(max(MAX_RECORD, snaplen), MAX_RECORD_HARD)
        self.lt = network & 0xFFFF
        base = FILE_HEADER_LEN
        w, wl, o = b"", 0, 0
        u32 = _U32LE
        while True:
            if o + 16 > wl:  # the next window (or the end of the file)
                if base + o >= size:
                    return None
                base += o
                w, wl, o = _window(fd, WINDOW, base, size, progress)
                if wl < 16:
                    return f"frame {self.infile + 1}: record header cut off at end of file"
            offs: list[int] = []
            ap = offs.append
            incl = 0
            while o + 16 <= wl:
                incl = u32(w, o + 8)[0]
                nxt = o + 16 + incl
                if nxt > wl or incl > limit:
                    break
                ap(o)
                o = nxt
            if offs:
                self.batch(w, wl, base, offs)
            if o + 16 > wl:
                continue
            if incl > limit:
                raise CaptureError(
                    f"{path}: record {self.infile + 1} at offset {base + o} claims {incl} bytes "
                    f"(more than the {limit}-byte maximum): the file is damaged after frame {self.infile}")
            # the record runs past the window: read from its start, or it is cut off
            if base + wl < size:
                base += o
                w, wl, o = _window(fd, max(WINDOW, 16 + incl), base, size, progress)
                continue
            return (f"frame {self.infile + 1}: record data ({wl - o - 16} of {incl} bytes) "
                    "cut off at end of file")

    # -- pcapng ---------------------------------------------------------------------------------

    def run_pcapng(self, fd: int, size: int, progress) -> str | None:  # noqa: C901
        path = self.path
        s = self.s
        section: Section | None = None
        order, base = "<", 0
        w, wl, o = b"", 0, 0
        blk_le = _BLK_LE
        while True:
            if o + 12 > wl:  # the next window (or the end of the file)
                if base + o >= size:
                    return None
                base += o
                w, wl, o = _window(fd, WINDOW, base, size, progress)
            if order == "<" and section is not None:
                offs: list[int] = []
                ap = offs.append
                while o + 12 <= wl:
                    bt, bl = blk_le(w, o)
                    if bt != EPB or bl < 32 or bl & 3 or bl > MAX_BLOCK or o + bl > wl:
                        break
                    ap(o)
                    o += bl
                if offs:
                    self.batch(w, wl, base, offs)
            if o + 12 > wl:
                if base + wl >= size and o < wl:
                    return (f"after frame {self.infile}: last block cut off at end of file "
                            f"({wl - o} of at least 12 bytes)")
                continue
            btype, blen = _BLK[order](w, o)
            if btype == SHB:
                bom = w[o + 8:o + 12]
                if bom == _BOM_LE:
                    order = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    order = ">"
                else:
                    raise _damaged(path, self.infile, "section header with a bad byte-order magic", base + o)
                btype, blen = _BLK[order](w, o)
            if blen < 12 or blen & 3 or blen > MAX_BLOCK:
                raise _damaged(path, self.infile, f"block of type 0x{btype:08x} with impossible length {blen}",
                               base + o)
            nxt = o + blen
            if nxt > wl:
                if base + wl < size:  # runs past the window: the next one starts with it
                    base += o
                    w, wl, o = _window(fd, max(WINDOW, blen), base, size, progress)
                    continue
                return (f"after frame {self.infile}: last block cut off at end of file "
                        f"({wl - o} of {blen} bytes)")
            if section is None and btype != SHB:
                raise _damaged(path, self.infile, "block before the first section header", base + o)
            if btype == EPB or btype == PB or btype == SPB:
                if btype != SPB and blen < 32:
                    what = "enhanced packet block" if btype == EPB else "packet block"
                    raise _damaged(path, self.infile, f"{what} too short ({blen} bytes)", base + o)
                self.index += 1
                raw = frame_from_block(w[o:nxt], section, base + o, self.index)
                self._general(raw)
            elif btype == IDB:
                if blen < 20:
                    raise _damaged(path, self.infile, f"interface description block too short ({blen} bytes)",
                                   base + o)
                self.ifaces.append(_parse_idb(w[o + 8:nxt - 4], order))
            elif btype == SHB:
                section = self.section = open_section(path, w, o, order, base + o)
                self.ifaces = section.interfaces
            elif btype == DSB and blen >= 20:
                stype, slen = _BLK[order](w, o + 8)
                add_secrets_block(s.keys, stype, bytes(w[o + 16:min(o + 16 + slen, nxt - 4)]))
            o = nxt

    @property
    def infile(self) -> int:
        """Frames read from this file so far (what its damage messages count)."""
        return self.index - self.base

    # -- a batch of records in one window ---------------------------------------------------------

    def _general(self, raw: RawFrame) -> None:
        """A frame for the general path: counted, time-stamped and located first, as the loop
        does for its own."""
        s = self.s
        tbl = s.tracker.table
        if self.keep:
            offsets = s._frame_offsets
            if raw.index == len(offsets.offset):
                offsets.offset.append(raw.offset)
                offsets.loc.append(self.path_index << 32 | (raw.linktype & 0xFFFFFFFF))
            else:
                offsets.set(raw.index, self.path_index, raw.offset, raw.linktype)
        s.stats.frames += 1
        if tbl.first_ts is None:
            tbl.first_ts = raw.ts
        tbl.last_ts = raw.ts if tbl.last_ts is None else max(tbl.last_ts, raw.ts)  # latest time (Session.load)
        s._general_frame(raw)

    def batch(self, w: bytes, wl: int, base: int, offs: list[int]) -> None:  # noqa: C901
        """The records at ``offs`` (each whole in ``w``): sorted into ESP, plain IP and the rest,
        then fed in frame order."""
        s = self.s
        n = len(offs)
        rh = self.rh
        RO = np.array(offs, np.int64)
        W = np.frombuffer(w, np.uint8)
        A = _rows(W, RO, rh + _F1, wl)  # record header + the frame's first _F1 bytes, a row each
        frames = np.arange(self.index + 1, self.index + n + 1, dtype=np.int64)
        first = self.index + 1
        self.index += n
        if self.pcapng:
            blen = _u32(A, 4, "<")
            iface = _u32(A, 8, "<").astype(np.int64)
            incl = _u32(A, 20, "<").astype(np.int64)
            orig = _u32(A, 24, "<")
            tsraw = (_u32(A, 12, "<").astype(np.uint64) << np.uint64(32)) | _u32(A, 16, "<").astype(np.uint64)
            ts_ns, lt = self._pcapng_times(iface, tsraw)
            if ts_ns is None:
                for k, o in enumerate(offs):
                    bl = _U32LE(w, o + 4)[0]
                    self._general(frame_from_block(w[o:o + bl], self.section, base + o, first + k))
                return
            cap_in = incl <= blen.astype(np.int64) - 32
            fend = RO + np.where(cap_in, rh + incl, blen.astype(np.int64) - 4)
            eth = cap_in & (lt == 1)
        else:
            incl = _u32(A, 8, "<").astype(np.int64)
            orig = _u32(A, 12, "<")
            ts_ns = _u32(A, 0, "<").astype(np.int64) * 1_000_000_000 + _u32(A, 4, "<").astype(np.int64) * self.mult
            fend = RO + rh + incl
            lt = None
            eth = None
        ts = ts_ns / 1e9
        F = rh  # column of frame byte k is F + k
        ip4 = (A[:, F + 12] == 8) & (A[:, F + 13] == 0) & (A[:, F + 14] == 0x45)
        ip4 &= ((A[:, F + 20] & 0x3F) == 0) & (A[:, F + 21] == 0)
        if eth is not None:
            ip4 &= eth
        tot = (A[:, F + 16].astype(np.int64) << 8) | A[:, F + 17]
        ip4 &= (tot >= 28) & (tot <= fend - RO - rh - 14)
        proto = A[:, F + 23]
        sport = _u16(A, F + 34)
        dport = _u16(A, F + 36)
        ulen = _u16(A, F + 38)
        uspi = _u32(A, F + 42, ">")
        fld = _Fields(tot, sport, dport, _u32(A, F + 26, ">"), _u32(A, F + 30, ">"), _u32(A, F + 34, ">"),
                      _u32(A, F + 38, ">"), uspi, _u32(A, F + 46, ">"))
        raw_esp = ip4 & (proto == 50)
        udp = ip4 & (proto == 17)
        natt = (sport == 4500) | (dport == 4500)
        udp_esp = udp & natt & (uspi != 0) & (ulen == tot - 20) & (tot - 20 >= 16)
        cls = np.where(raw_esp, 1, np.where(udp_esp, 2, 0)).astype(np.int8)
        if not self.keep:
            # Plain IP that is no IPsec (RFC 3948 / 7296 ports aside): the general path would
            # count it "other" and keep nothing. (ICMP stays general: it may quote IPsec.)
            tcp = ip4 & (proto == 6) & (tot >= 40) & ~natt
            plain_udp = udp & ~natt & (sport != 500) & (dport != 500)
            cls[tcp] = 3
            cls[plain_udp] = 4
        tbl = s.tracker.table
        if tbl.first_ts is None:
            tbl.first_ts = float(ts[0])
        st = s.stats
        path_index = self.path_index
        keep = self.keep
        if keep:
            offsets = s._frame_offsets
            loc = (path_index << 32) | ((lt if lt is not None else self.lt) & 0xFFFFFFFF)
            locs = np.broadcast_to(np.asarray(loc, np.int64), (n,))
        general = np.flatnonzero(cls == 0).tolist()
        start = 0
        for g in [*general, n]:
            if g > start:  # the run of frames before general frame g
                sl = slice(start, g)
                if keep:
                    fi = first + start
                    if fi == len(offsets.offset):
                        offsets.offset.frombytes((RO[sl] + base).astype("<i8").tobytes())
                        offsets.loc.frombytes(np.ascontiguousarray(locs[sl]).astype("<i8").tobytes())
                    else:
                        for k in range(start, g):
                            lk = int(locs[k]) & 0xFFFFFFFF
                            offsets.set(first + k, path_index, base + int(RO[k]), lk - (1 << 32) if lk >> 31 else lk)
                st.frames += g - start
                tbl.last_ts = max(float(ts[sl].max()), tbl.last_ts or 0.0)  # latest time, not last record's
                c = cls[sl]
                e = np.flatnonzero(c <= 2) + start
                if len(e):
                    self._esp(w, base, e, RO, frames, ts, orig, cls, fld)
                if not keep:
                    k3 = int(np.count_nonzero(c == 3))
                    k4 = g - start - len(e) - k3
                    if k3 or k4:
                        st.other += k3 + k4
                        ds = s.decoder.stats
                        ds["other_tcp"] += k3
                        ds["other_udp"] += k4
            if g < n:
                o = int(RO[g])
                if self.pcapng:
                    ifc = int(iface[g])
                    glt = int(lt[g])
                    ifc_ix = ifc
                else:
                    glt, ifc_ix = self.lt, 0
                self._general(_RawFrame(first + g, float(ts[g]), int(ts_ns[g]), glt, w[o + rh:int(fend[g])],
                                        int(orig[g]), ifc_ix, base + o))
            start = g + 1

    def _pcapng_times(self, iface: np.ndarray, tsraw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each block's time in ns and link type from its interface (pcapng.Interface.ts_ns);
        link type -1 for an undeclared interface (the general path reports it)."""
        n = len(iface)
        ts_ns = np.zeros(n, np.int64)
        lt = np.full(n, -1, np.int64)
        # (with return_index: np.unique of a bare array imports numpy.ma, ~10 ms of start-up, to
        # ask whether it is masked)
        for k in np.unique(iface, return_index=True)[0].tolist():
            if k >= len(self.ifaces):
                continue
            ifc = self.ifaces[k]
            m = iface == k
            raw = tsraw[m]
            lt[m] = ifc.linktype
            if ifc.fits_int64(int(raw.max())):
                ts_ns[m] = (raw.astype(np.int64) * ifc.mul) // ifc.div + ifc.offset_s * 1_000_000_000
            else:  # beyond int64 (a damaged or odd clock): the caller reads these blocks one by one
                return None, None
        return ts_ns, lt

    # -- a run of ESP frames --------------------------------------------------------------------------

    def _esp(self, w: bytes, base: int, e: np.ndarray, RO, frames, ts, orig, cls, fld) -> None:  # noqa: C901
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
            run = EspRun(frame_e, ts_e, gid, seq, hi, status, end - q, nh, groups, results, inner, poss)
            try:
                flows = on_esp_run(tracker, run)
            except Exception as exc:  # noqa: BLE001 - as Tracker.on_esp_fields: report, go on
                tracker.observe("tracker_error", float(ts_e[0]), (int(frame_e[0]),), reason=f"{type(exc).__name__}: {exc}")
                flows = [tracker.table.flows.get((gr[0], gr[1], gr[2], "ESP")) for gr in groups]
            child = [-1 if f is None or f.child_sa is None else f.child_sa for f in flows]
            child_g = np.array(child, np.int64)[gid]
        else:
            child_g = self._per_packet(e, gid, groups, entries, frame_e, ts_e, seq.tolist(), status, results, inner,
                                       nh, end - q, sp, dp, nested)
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
                    sp, dp, nested) -> np.ndarray:
        """Many SAs with few packets each: the tracker packet by packet (Tracker.on_esp_fields),
        as the general path does; returns each packet's CHILD SA id (-1: none)."""
        s = self.s
        tracker = s.tracker
        on_esp = tracker.on_esp_fields
        flows = tracker.table.flows
        inner_add = s.inner.add if self.keep else None
        nested_l = nested.tolist()
        child = np.full(len(e), -1, np.int64)
        for i, g, f, t, sq, c, ln, a, b in zip(range(len(e)), gid.tolist(), frame_e.tolist(), ts_e.tolist(), seql,
                                             status.tolist(), lengths.tolist(), sp.tolist(), dp.tolist(), strict=True):
            gr = groups[g]
            if c == OK:
                res = results.get(i)
                if res is None:
                    res = _Result("ok", inner(i), int(nh[i]), 0, 0, gr[6], "", entries[g][0].mode)
            elif c == NO_KEY:
                res = results.get(i) or _NO_KEY_RESULT
            else:
                res = results[i]
            flow = on_esp(f, t, gr[0], gr[1], gr[2], sq, res, ln, gr[3], a, b)
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


class _Fields(NamedTuple):
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


def _window(fd: int, n: int, base: int, size: int, progress) -> tuple[bytes, int, int]:
    """The next window (``n`` bytes from ``base``) as (bytes, length, position 0); reports
    progress, as each window read is one step of the TUI's bar."""
    w = os.pread(fd, n, base)
    if progress is not None:
        progress(base, size)
    return w, len(w), 0


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


def _damaged(path: str, frames: int, what: str, offset: int) -> CaptureError:
    return CaptureError(f"{path}: {what} at offset {offset}: the file is damaged after frame {frames} "
                        "(frames before it were read)")


__all__ = ["eligible", "load"]
