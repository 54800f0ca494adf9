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
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag

from .capture._fastnew import fast_constructor
from .capture.pcap import FILE_HEADER_LEN, MAGIC_NS, MAGIC_US, MAX_RECORD, MAX_RECORD_HARD
from .crypto.esp import EspResult, _trailer
from .errors import CaptureError, DecryptError
from .model.packets import EspPacket, RawFrame

if TYPE_CHECKING:
    from .session import Session

_RawFrame = fast_constructor(RawFrame)
_Esp = fast_constructor(EspPacket)
_Result = fast_constructor(EspResult)

WINDOW = 2 << 20
# record header | dst/src MACs | Ethernet type + IPv4 version/IHL | total length | flags+fragment
# | protocol | (checksum) | src, dst, 4 more bytes (SPI, or UDP ports) | 4 bytes (seq, or UDP
# length + checksum) | 4 bytes (UDP: the SPI) | 4 bytes (UDP: the sequence number)
_HDR = struct.Struct("<IIII12x3sxH2xHxB2x4s4s4s4s4s4s").unpack_from
_U32BE = struct.Struct("!I").unpack_from
_U16BE = struct.Struct("!H").unpack_from


def eligible(session: Session, path: str) -> bool:
    """An uncompressed little-endian pcap of Ethernet frames (what the loop reads), loaded into a
    session that keeps its rows in a RowStore (a file's, not a live ring)."""
    from .rowstore import RowStore

    if type(session.rows) is not RowStore:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(FILE_HEADER_LEN)
    except OSError:
        return False
    if len(head) < FILE_HEADER_LEN:
        return False
    magic, _vmaj, _vmin, _zone, _sig, _snap, network = struct.unpack("<IHHiIII", head)
    return magic in (MAGIC_US, MAGIC_NS) and network & 0xFFFF == 1


def load(session: Session, path: str, path_index: int, progress=None) -> None:  # noqa: C901
    """Feed every frame of ``path`` to ``session`` (the caller checked :func:`eligible`)."""
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.pread(fd, FILE_HEADER_LEN, 0)
        magic, _vmaj, _vmin, _zone, _sig, snaplen, network = struct.unpack("<IHHiIII", head)
        mult = 1 if magic == MAGIC_NS else 1000
        limit = min(max(MAX_RECORD, snaplen), MAX_RECORD_HARD)
        linktype = network & 0xFFFF
        st = session.stats
        tbl = session.tracker.table
        dec = session.esp_decryptor
        keys = session.keys
        on_esp = session.tracker.on_esp
        general = session._general_frame
        offsets = session._frame_offsets
        off_arr = offsets.offset
        off_append, loc_append = off_arr.append, offsets.loc.append
        loc = path_index << 32 | linktype
        from .rowstore import STATUS_CODES, RowStore

        rows = session.rows
        add_row = rows.add_esp
        code_ok = STATUS_CODES["decrypted"]
        text: dict[bytes, str] = {}
        sas: dict[bytes, list] = {}  # SA key (src | dst | SPI) -> [state, aead, salt, version, src, dst, srcix, dstix]
        index = 0
        base, w, wl, o = FILE_HEADER_LEN, b"", 0, 0
        hs = 16 + 58  # bytes the one-struct read covers
        first = tbl.first_ts is None
        while True:
            if o + hs > wl:
                if base + o >= size:
                    break
                base += o
                w = os.pread(fd, WINDOW, base)
                wl, o = len(w), 0
                if progress is not None:
                    progress(base, size)
                if wl < 16:
                    break
                if wl < hs:  # the file's last records: the general path reads them
                    pass
            if o + 16 > wl:
                break
            if o + hs <= wl:
                sec, frac, incl, orig, ev, tot, ff, proto, a4, b4, c4, d4, e4, f4 = _HDR(w, o)
            else:
                sec, frac, incl, orig = struct.unpack_from("<IIII", w, o)
                ev = b""
            if incl > limit:
                raise CaptureError(
                    f"{path}: record {index + 1} at offset {base + o} claims {incl} bytes "
                    f"(more than the {limit}-byte maximum): the file is damaged after frame {index}")
            nxt = o + 16 + incl
            if nxt > wl:
                if base + wl < size:  # the record runs past the window: read from its start
                    base += o
                    w = os.pread(fd, max(WINDOW, 16 + incl), base)
                    wl, o = len(w), 0
                    continue
                left = wl - o
                what = "record header" if left < 16 else f"record data ({left - 16} of {incl} bytes)"
                session._truncated = f"frame {index + 1}: {what} cut off at end of file"
                break
            index += 1
            ts_ns = sec * 1_000_000_000 + frac * mult
            ts = ts_ns / 1e9
            if index == len(off_arr):
                off_append(base + o)
                loc_append(loc)
            else:
                offsets.set(index, path_index, base + o, linktype)
            st.frames += 1
            if first:
                tbl.first_ts = ts
                first = False
            tbl.last_ts = ts
            key = None
            if ev == b"\x08\x00\x45" and not ff & 0xFF3F and 28 <= (tot := ((tot & 0xFF) << 8) | (tot >> 8)) <= incl - 14:
                if proto == 50:
                    key = a4 + b4 + c4
                    q = o + 50
                    spi_b = c4
                    seq_b = d4
                    sport = dport = 0
                    encap = False
                elif proto == 17 and tot >= 36 and (c4[:2] == b"\x11\x94" or c4[2:] == b"\x11\x94"):
                    ulen = _U16BE(d4)[0]
                    if ulen == tot - 20 and ulen >= 16 and e4 != b"\0\0\0\0":
                        key = a4 + b4 + e4
                        q = o + 58
                        spi_b = e4
                        seq_b = f4
                        sport, dport = _U16BE(c4)[0], _U16BE(c4, 2)[0]
                        encap = True
            if key is None:
                general(_RawFrame(index, ts, ts_ns, linktype, w[o + 16:nxt], orig, 0, base + o))
                o = nxt
                continue
            end_ip = o + 30 + tot
            e = sas.get(key)
            if e is None or e[3] != keys.version:
                e = sas[key] = _entry(dec, keys, text, key, rows, add_row)
            sa = e[0]
            spi = _U32BE(spi_b)[0]
            seq = _U32BE(seq_b)[0]
            data = w[q:end_ip]
            st.esp += 1
            plain = None
            if e[1] is not None and end_ip - q >= 36:
                try:
                    plain = e[1](e[2] + w[q + 8:q + 16], w[q + 16:end_ip], w[q:q + 8])
                except InvalidTag:
                    plain = None
                if plain is not None:
                    sa.stats.decrypted += 1
                    if seq > sa.top:
                        sa.top = seq
                        sa.stats.top = seq
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
                    res = dec._result(sa, 3, str(exc), 0)  # counted as the general path would
                    rs = None
            else:
                code, val, hi = dec.open_raw(sa, seq, data)
                res = dec._result(sa, code, val, hi)
                rs = None
                if e[1] is None and sa.mode is False and sa.opener is not None:
                    g = getattr(sa.opener.open, "gcm16", None)  # known now: no ESN, inline from here
                    if g is not None:
                        e[1], e[2] = g
            if rs is None:
                status = res.status
                if status == "ok":
                    st.decrypted += 1
                    row_status = "decrypted"
                elif status == "no_key":
                    st.no_key += 1
                    row_status = "no-key"
                elif status == "icv_failed":
                    st.icv_failed += 1
                    row_status = "icv-bad"
                else:
                    row_status = status.replace("_", "-")
                rs = STATUS_CODES.get(row_status) or rows.status_code(row_status)
            pkt = _Esp(index, ts, e[4], e[5], spi, seq, data, sport, dport, encap, 4, "udp" if encap else "ip")
            flow = on_esp(pkt, res)
            if flow is None:
                flow = tbl.flows.get((e[4], e[5], spi))
            hi = res.seq_hi
            add_row(index, ts, e[6], e[7], sport, dport, orig, spi, (hi << 32) | seq if hi else seq,
                    rs, flow.child_sa if flow is not None else None, res.next_header)
            o = nxt
        if progress is not None:
            progress(size, size)
    finally:
        os.close(fd)


def _entry(dec, keys, text: dict[bytes, str], key: bytes, rows, add_row) -> list:
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
