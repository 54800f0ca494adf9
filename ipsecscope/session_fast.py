"""The analysis path's hot loop: ``Session.load`` for the bulk of a big capture.

A capture of a busy tunnel is almost all ESP over Ethernet/IPv4. For those frames this loop does
what ``Session.load`` does frame by frame — read the record, demultiplex, decrypt, correlate, keep
a row — without the per-frame objects of the general path (``RawFrame``, ``EspPacket``,
``EspResult``), the way ``export``'s decrypt loop does: the file is read in windows, one ``struct``
call takes the record header, the Ethernet type, the IPv4 header fields and the SA key, and the
ESP bytes are sliced straight from the window. Every other frame (IKE, fragments, VLANs, IPv6,
AH, anything odd) is handed to the session's general path, in order, so the result is the same
whichever path a frame took (``tests/test_session_fast.py`` compares both on every sample).
"""

from __future__ import annotations

import os
import socket
import struct

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
)
from .crypto.esp import NO_KEY, EspResult, _trailer
from .errors import CaptureError, DecryptError
from .model.packets import RawFrame
from .rowstore import STATUS_CODES

_BLK = {k: v.unpack_from for k, v in BLK.items()}

_RawFrame = fast_constructor(RawFrame)
_Result = fast_constructor(EspResult)

WINDOW = 2 << 20
# After the record header: dst/src MACs | Ethernet type + IPv4 version/IHL | total length |
# flags+fragment | protocol | (checksum) | src | dst | 4 bytes (raw ESP: SPI; UDP: ports) | 4 bytes
# (ESP: sequence number; UDP: length + checksum) | 4 bytes (UDP: SPI) | 4 bytes (UDP: sequence number)
_FRAME = "12x3sxH2xHxB2x4s4s4s4s4s4s"
_PCAP_REC = struct.Struct("<IIII" + _FRAME).unpack_from  # ts sec, ts frac, caplen, origlen
_EPB = struct.Struct("<IIIIIII" + _FRAME).unpack_from  # type, length, iface, ts hi, ts lo, caplen, origlen
_FRAME_LEN = 58  # bytes of the frame the one struct call reads
_U16BE = struct.Struct("!H").unpack_from
_U32BE = struct.Struct("!I").unpack_from
_BOM_LE = b"\x4d\x3c\x2b\x1a"


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


def load(session, path: str, path_index: int, fmt: str, progress=None) -> str | None:  # noqa: C901
    """Feed every frame of ``path`` (``fmt`` from :func:`eligible`) to ``session``; returns what
    was cut off at the end of the file (None when it ended cleanly).

    ``session`` is the :class:`~ipsecscope.session.Session` being loaded (not imported here: it
    imports this module); the loop calls its general path, ``_general_frame``, for every frame
    it does not take itself.
    """
    pcapng = fmt == "pcapng"
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        st = session.stats
        tbl = session.tracker.table
        dec = session.esp_decryptor
        keys = session.keys
        on_esp = session.tracker.on_esp_fields
        general = session._general_frame
        offsets = session._frame_offsets
        off_arr = offsets.offset
        off_append, loc_append = off_arr.append, offsets.loc.append
        rows = session.rows
        add_row = rows.add_esp
        keep = session.keep_rows  # False: no rows, and no offsets to re-read frames from
        inner_add = session.inner.add  # the decrypted inner packet's summary (decode.inner)
        nested = session._nested  # ESP inside ESP: Session's general code (rare; not inlined)
        code_ok = STATUS_CODES["decrypted"]
        code_no_key = STATUS_CODES["no-key"]
        no_key = None  # the (immutable) result of every packet of an SA without keys
        text: dict[bytes, str] = {}
        # SA key (src | dst | SPI bytes) -> [decryptor state, AES-GCM-16 decrypt, salt, key-store
        # version, src, dst, src row index, dst row index]
        sas: dict[bytes, list] = {}
        index = 0
        mult = 1000
        limit = MAX_RECORD
        ifaces: list[Interface] = []
        section: Section | None = None
        order = "<"
        lt = 1
        if pcapng:
            base = 0
        else:
            head = os.pread(fd, FILE_HEADER_LEN, 0)
            magic, _vmaj, _vmin, _zone, _sig, snaplen, network = struct.unpack("<IHHiIII", head)
            mult = 1 if magic == MAGIC_NS else 1000
            limit = min(max(MAX_RECORD, snaplen), MAX_RECORD_HARD)
            lt = network & 0xFFFF
            base = FILE_HEADER_LEN
        loc = path_index << 32 | lt
        rh = 28 if pcapng else 16  # where the frame starts in its record
        hs = rh + _FRAME_LEN
        w, wl, o = b"", 0, 0
        first = tbl.first_ts is None
        truncated = None
        while True:
            if o + hs > wl:  # the next window (or the end of the file)
                if base + o >= size:
                    break
                base += o
                w = os.pread(fd, WINDOW, base)
                wl, o = len(w), 0
                if progress is not None:
                    progress(base, size)
            if pcapng:
                if o + 12 > wl:
                    left = wl - o
                    truncated = (f"after frame {index}: last block cut off at end of file "
                                 f"({left} of at least 12 bytes)")
                    break
                btype, blen = _BLK[order](w, o)
                if btype == SHB:
                    bom = w[o + 8:o + 12]
                    if bom == _BOM_LE:
                        order = "<"
                    elif bom == b"\x1a\x2b\x3c\x4d":
                        order = ">"
                    else:
                        raise _damaged(path, index, "section header with a bad byte-order magic", base + o)
                    btype, blen = _BLK[order](w, o)
                if blen < 12 or blen & 3 or blen > MAX_BLOCK:
                    raise _damaged(path, index, f"block of type 0x{btype:08x} with impossible length {blen}",
                                   base + o)
                nxt = o + blen
                if nxt > wl:
                    if base + wl < size:  # runs past the window: the next one starts with it
                        base += o
                        w = os.pread(fd, max(WINDOW, blen), base)
                        wl, o = len(w), 0
                        continue
                    truncated = (f"after frame {index}: last block cut off at end of file "
                                 f"({wl - o} of {blen} bytes)")
                    break
                if section is None and btype != SHB:
                    raise _damaged(path, index, "block before the first section header", base + o)
                if btype != EPB or order != "<" or o + hs > wl:
                    if btype == EPB or btype == PB or btype == SPB:
                        if btype != SPB and blen < 32:
                            what = "enhanced packet block" if btype == EPB else "packet block"
                            raise _damaged(path, index, f"{what} too short ({blen} bytes)", base + o)
                        index += 1
                        raw = frame_from_block(w[o:nxt], section, base + o, index)
                        _count(offsets if keep else None, off_arr, st, tbl, raw, path_index)
                        if first:
                            tbl.first_ts = raw.ts
                            first = False
                        general(raw)
                    elif btype == IDB:
                        if blen < 20:
                            raise _damaged(path, index, f"interface description block too short ({blen} bytes)",
                                           base + o)
                        ifaces.append(_parse_idb(w[o + 8:nxt - 4], order))
                    elif btype == SHB:
                        ifaces = []
                        section = Section(base + o, order, ifaces)
                    elif btype == DSB and blen >= 20:
                        stype, slen = _BLK[order](w, o + 8)
                        keys.add_secrets_block(stype, bytes(w[o + 16:min(o + 16 + slen, nxt - 4)]))
                    o = nxt
                    continue
                (_t, _l, iface, hi, lo, incl, orig, ev, tot, ff, proto, a4, b4, c4, d4, e4, f4) = _EPB(w, o)
                if blen < 32:
                    raise _damaged(path, index, f"enhanced packet block too short ({blen} bytes)", base + o)
                index += 1
                if iface < len(ifaces):
                    ifc = ifaces[iface]
                    ts_ns = ((hi << 32) | lo) * ifc.mul // ifc.div + ifc.offset_s * 1_000_000_000
                    lt = ifc.linktype
                    if lt != 1:
                        ev = b""
                else:
                    ts_ns, lt, ev = 0, -1, b""
                fend = o + 28 + incl
                if fend > nxt - 4:
                    fend = nxt - 4
                    ev = b""  # a caplen beyond the block: the general path's business
                loc = path_index << 32 | (lt & 0xFFFFFFFF)
            else:
                if o + 16 > wl:
                    truncated = f"frame {index + 1}: record header cut off at end of file"
                    break
                if o + hs <= wl:
                    sec, frac, incl, orig, ev, tot, ff, proto, a4, b4, c4, d4, e4, f4 = _PCAP_REC(w, o)
                else:  # a short record at the very end: the general path reads it
                    sec, frac, incl, orig = struct.unpack_from("<IIII", w, o)
                    ev = b""
                if incl > limit:
                    raise CaptureError(
                        f"{path}: record {index + 1} at offset {base + o} claims {incl} bytes "
                        f"(more than the {limit}-byte maximum): the file is damaged after frame {index}")
                nxt = fend = o + 16 + incl
                if nxt > wl:
                    if base + wl < size:  # the record runs past the window: read from its start
                        base += o
                        w = os.pread(fd, max(WINDOW, 16 + incl), base)
                        wl, o = len(w), 0
                        continue
                    truncated = (f"frame {index + 1}: record data ({wl - o - 16} of {incl} bytes) "
                                 "cut off at end of file")
                    break
                index += 1
                ts_ns = sec * 1_000_000_000 + frac * mult
            ts = ts_ns / 1e9
            if not keep:
                pass
            elif index == len(off_arr):
                off_append(base + o)
                loc_append(loc)
            else:
                offsets.set(index, path_index, base + o, lt)
            st.frames += 1
            if first:
                tbl.first_ts = ts
                first = False
            tbl.last_ts = ts
            # Ethernet, IPv4 with a 20-byte header, not a fragment (the flags/offset word read
            # little-endian: 0xFF3F is BE 0x3FFF), the IP length within what was captured
            key = None
            if ev == b"\x08\x00\x45" and not ff & 0xFF3F:
                tot = ((tot & 0xFF) << 8) | (tot >> 8)
                q = o + rh + 34
                if 28 <= tot <= fend - o - rh - 14:
                    if proto == 50:  # RFC 4303 straight over IP
                        key = a4 + b4 + c4
                        spi_b, seq_b = c4, d4
                        sport = dport = 0
                        encap = False
                    # RFC 3948: UDP 4500 whose first 4 bytes are not zero (the non-ESP marker) and
                    # that is longer than a keepalive; the UDP length must be the IP payload's
                    elif proto == 17 and (c4[:2] == b"\x11\x94" or c4[2:] == b"\x11\x94") and e4 != b"\0\0\0\0":
                        if _U16BE(d4)[0] == tot - 20 >= 16:
                            key = a4 + b4 + e4
                            spi_b, seq_b = e4, f4
                            sport, dport = _U16BE(c4)[0], _U16BE(c4, 2)[0]
                            encap = True
                            q += 8
            if key is None:
                general(_RawFrame(index, ts, ts_ns, lt, w[o + rh:fend], orig, iface if pcapng else 0, base + o))
                o = nxt
                continue
            end_ip = o + rh + 14 + tot
            e = sas.get(key)
            if e is None or e[3] != keys.version:
                e = sas[key] = _entry(dec, keys, text, key, rows)
            sa = e[0]
            spi = _U32BE(spi_b)[0]
            seq = _U32BE(seq_b)[0]
            st.esp += 1
            plain = None
            if e[1] is not None and end_ip - q >= 36:
                # AES-GCM-16 inlined (RFC 4106: nonce = salt | IV, AAD = SPI | sequence number)
                try:
                    plain = e[1](e[2] + w[q + 8:q + 16], w[q + 16:end_ip], w[q:q + 8])
                except InvalidTag:  # the general call below counts it
                    plain = None
                if plain is not None:
                    sa.stats.decrypted += 1
                    if seq > sa.top:
                        sa.top = sa.stats.top = seq
                        sa.stats.seq_hi = 0
            if plain is not None:
                try:
                    inner, nh, pad = _trailer(plain)
                    res = _Result("ok", inner, nh, pad, 0, sa.keys, "", sa.mode)
                    st.decrypted += 1
                    rs = code_ok
                except DecryptError as exc:
                    sa.stats.decrypted -= 1
                    sa.stats.malformed += 1
                    res = _Result("malformed", None, None, 0, 0, sa.keys, str(exc), sa.mode)
                    rs = None
            elif sa.keys is None and no_key is not None:
                # No key for this SA: what open_raw would say, without a new result each time.
                sa.stats.no_key += 1
                st.no_key += 1
                res = no_key
                rs = code_no_key
            else:
                code, val, hi = dec.open_raw(sa, seq, w[q:end_ip])
                res = dec._result(sa, code, val, hi)
                rs = None
                if code == NO_KEY:
                    no_key = res
                if e[1] is None and sa.mode is False and sa.opener is not None:
                    g = getattr(sa.opener.open, "gcm16", None)  # now known not to use ESN: inline it
                    if g is not None:
                        e[1], e[2] = g
            if rs is None:
                name = count_outcome(st, res.status)
                rs = STATUS_CODES.get(name) or rows.status_code(name)
            flow = on_esp(index, ts, e[4], e[5], spi, seq, res, end_ip - q, encap, sport, dport)
            if flow is None:  # the tracker reported an internal error instead
                flow = tbl.flows.get((e[4], e[5], spi, "ESP"))
            hi = res.seq_hi
            inner = res.inner
            if inner is not None:
                nh = res.next_header
                # ESP inside (nested ESP): the session decrypts and tracks the inner layers
                if nh == 50 or (nh == 4 and len(inner) > 9 and inner[9] == 50) or (
                        nh == 41 and len(inner) > 6 and inner[6] == 50):
                    nested(index, ts, inner, nh, e[4], e[5])
                elif keep:
                    inner_add(index, inner, nh)
            add_row(index, ts, e[6], e[7], sport, dport, orig, spi, (hi << 32) | seq if hi else seq,
                    rs, flow.child_sa if flow is not None else None, res.next_header)
            o = nxt
        if progress is not None:
            progress(size, size)
        return truncated
    finally:
        os.close(fd)


def _count(offsets, off_arr, st, tbl, raw: RawFrame, path_index: int) -> None:
    """A frame handed to the general path whole: its offset, count and time, as the loop does."""
    if offsets is None:
        pass
    elif raw.index == len(off_arr):
        off_arr.append(raw.offset)
        offsets.loc.append(path_index << 32 | (raw.linktype & 0xFFFFFFFF))
    else:
        offsets.set(raw.index, path_index, raw.offset, raw.linktype)
    st.frames += 1
    tbl.last_ts = raw.ts


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


def _entry(dec, keys, text: dict[bytes, str], key: bytes, rows) -> list:
    src = text.get(key[:4]) or text.setdefault(key[:4], socket.inet_ntop(socket.AF_INET, key[:4]))
    dst = text.get(key[4:8]) or text.setdefault(key[4:8], socket.inet_ntop(socket.AF_INET, key[4:8]))
    spi = int.from_bytes(key[8:12], "big")
    sa = dec.state(src, dst, spi)
    aead = salt = None
    if sa.opener is not None and sa.mode is False:
        g = getattr(sa.opener.open, "gcm16", None)
        if g is not None:
            aead, salt = g
    srcix = rows._addr_ix.get(src)
    if srcix is None:
        srcix = rows.addr(src)
    dstix = rows._addr_ix.get(dst)
    if dstix is None:
        dstix = rows.addr(dst)
    return [sa, aead, salt or b"", getattr(keys, "version", 0), src, dst, srcix, dstix]




__all__ = ["eligible", "load"]
