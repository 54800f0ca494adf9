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
   and accounted per flow (``state.bulk``), rows packed at once (that part: ``session_esp``).

So the answer is the same whichever path a frame took (``tests/test_session_fast.py`` compares
both on every capture).
"""

from __future__ import annotations

import os
import struct

import numpy as np

from .capture._fastnew import fast_constructor
from .capture.layout import pcap_record_limit
from .capture.pcap import FILE_HEADER_LEN, MAGIC_NS, MAGIC_US
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
from .errors import CaptureError
from .keys.formats import add_secrets_block
from .model.packets import RawFrame
from .session_esp import EspRuns, Fields, _rows, _u16, _u32

_BLK = {k: v.unpack_from for k, v in BLK.items()}

_RawFrame = fast_constructor(RawFrame)

WINDOW = 4 << 20
_U32LE = struct.Struct("<I").unpack_from
_BLK_LE = BLK["<"].unpack_from
_BOM_LE = b"\x4d\x3c\x2b\x1a"
# The frame bytes numpy reads of each record (the first _F1): Ethernet type + IPv4 version/IHL
# (12-14), total length (16-17), flags/fragment offset (20-21), protocol (23), addresses (26-33),
# then raw ESP's SPI and sequence number or UDP's ports, length, SPI, sequence number (34-49).
_F1 = 50


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


class _Loop(EspRuns):
    """One file's pass: the windows and the batches of records in them (the runs of ESP in them:
    ``session_esp.EspRuns``)."""

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
        limit = pcap_record_limit(snaplen)
        self.lt = network & 0xFFFF
        base = FILE_HEADER_LEN
        w, wl, o = b"", 0, 0
        u32 = _U32LE
        while True:
            if o + 16 > wl:  # the next window (or the end of the file)
                if base + o >= size:
                    return None
                base += o
                w = b""  # the old window goes first: one window in memory, not two
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
                w = b""
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
                w = b""
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
                    w = b""
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
            lt = iface = None
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
        fld = Fields(tot, sport, dport, _u32(A, F + 26, ">"), _u32(A, F + 30, ">"), _u32(A, F + 34, ">"),
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
            # (VXLAN 4789 / Geneve 6081 / GTP-U 2152 may carry IPsec: decode.tunnel, the general path)
            plain_udp = (udp & ~natt & (sport != 500) & (dport != 500) & (dport != 4789) & (dport != 6081)
                         & (dport != 2152))
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
            if g > start and s._held:
                # frames held behind an RFC 8229 gap (session_packets: the tracker takes frames in
                # capture order): this run waits with them, frame by frame
                for k in range(start, g):
                    self._general(self._raw(k, first, w, base, RO, ts, ts_ns, orig, fend, lt, iface))
            elif g > start:  # the run of frames before general frame g
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
                self._general(self._raw(g, first, w, base, RO, ts, ts_ns, orig, fend, lt, iface))
            start = g + 1

    def _raw(self, g: int, first: int, w: bytes, base: int, RO, ts, ts_ns, orig, fend, lt, iface) -> RawFrame:
        """Record ``g`` of the batch as a frame for the general path."""
        o = int(RO[g])
        if self.pcapng:
            glt, ifc_ix = int(lt[g]), int(iface[g])
        else:
            glt, ifc_ix = self.lt, 0
        return _RawFrame(first + g, float(ts[g]), int(ts_ns[g]), glt, w[o + self.rh:int(fend[g])],
                         int(orig[g]), ifc_ix, base + o)

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

def _window(fd: int, n: int, base: int, size: int, progress) -> tuple[bytes, int, int]:
    """The next window (``n`` bytes from ``base``) as (bytes, length, position 0); reports
    progress, as each window read is one step of the TUI's bar."""
    w = os.pread(fd, n, base)
    if progress is not None:
        progress(base, size)
    return w, len(w), 0


def _damaged(path: str, frames: int, what: str, offset: int) -> CaptureError:
    return CaptureError(f"{path}: {what} at offset {offset}: the file is damaged after frame {frames} "
                        "(frames before it were read)")


__all__ = ["eligible", "load"]
