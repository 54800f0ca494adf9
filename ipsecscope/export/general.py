"""The decrypt engine's general path: a gzip'd capture too small to inflate first, standard input,
or a file the layout scan does not take, read by the general capture reader and
:class:`~ipsecscope.decode.demux.Decoder` frame by frame in one process (AH through export/ah.py)."""

from __future__ import annotations

import _socket as socket  # socket.py's C module, the same inet_* functions: no socket.py enums (~3.7 ms CPU)
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, TextIO

from ..crypto.esp import EspDecryptor
from ..keys.formats import add_secrets_block
from . import jsonl as _jsonl
from .hotloop import Options
from .pcapng import LINKTYPE_RAW, PcapngWriter
from .perframe import (
    _CARRIES_ESP,
    HELD_MAX,
    decrypt_nested,
    late_comment,
    one_record,
    v6_ext_headers,
    wire_packet,
)
from .totals import RunStats, collect, open_jsonl, write_dsb

if TYPE_CHECKING:
    from ..keys.store import KeyStore
    from ..model.packets import RawFrame


def run_general(path: str, keys: KeyStore, out: BinaryIO | None, jsonl_out: str | TextIO | None, opts: Options,
                progress: Callable[[int, int], None] | None, dsb: bool, stats: RunStats) -> RunStats:
    """gzip'd or unusual files: the general capture reader and decoder, one process."""
    from ..capture import open_capture
    from ..decode.demux import Decoder
    from ..decode.link import ip_offset
    from ..model.packets import AhPacket, EspPacket, Malformed, Packet

    dec = EspDecryptor(keys)
    decoder = Decoder()
    nested: set = set()
    ah = None  # export.ah.AhOut, made at the first AH packet
    marks: dict[str, int] = {}  # the decoder's malformed marks by layer (RunStats.marks)
    held: OrderedDict[int, int] = OrderedDict()  # frame -> exact time, of frames decoded to nothing (perframe)
    late_frames: set[int] = set()
    # Not a capture: fail before creating (and truncating) the output files. Opened once, as
    # standard input can be read only once.
    opened = open_capture(path)
    try:
        writer = PcapngWriter(out) if out is not None else None
        jf, own_jf = open_jsonl(jsonl_out)
    except BaseException:
        opened.close()
        raise
    iface_map: dict[int, int] = {}
    if writer is not None:
        writer.add_interface(LINKTYPE_RAW, name="ipsecscope decrypted ESP inner packets")

    def esp_one(pkt: EspPacket, raw: RawFrame, keep: bool, ts_ns: int, late: str = "") -> None:
        """One ESP packet: decrypted, written, counted (``late``: a record of an earlier frame,
        written now with this comment; its frame was kept as it came under --keep-other)."""
        stats.esp += 1
        st = dec.state(pkt.src, pkt.dst, pkt.spi)
        r = dec.decrypt(pkt)
        src = socket.inet_pton(socket.AF_INET6 if ":" in pkt.src else socket.AF_INET, pkt.src)
        dst = socket.inet_pton(socket.AF_INET6 if ":" in pkt.dst else socket.AF_INET, pkt.dst)
        if r.status != "ok":
            if keep:
                _keep_raw(writer, iface_map, stats, raw, f"ipsecscope: {r.status}: {r.reason}")
            if jf is not None:
                jf.write(_jsonl.record(pkt.frame, ts_ns, st, src, dst, pkt.spi, pkt.seq, r.seq_hi,
                                       r.status, None, None, len(pkt.data), opts.hex, reason=r.reason,
                                       udp_encap=pkt.udp_encap))
            return
        inner, nh, isrc, idst, layers = r.inner, r.next_header, src, dst, None
        if nh in _CARRIES_ESP:  # ESP in ESP: the layers there are keys for (as _Worker._frame)
            inner, nh, isrc, idst, layers = decrypt_nested(dec, nested, inner, nh, src, dst)
        # A dummy packet (RFC 4303 §2.6) has no inner packet to write, but the JSONL holds one
        # record per ESP packet.
        dummy = nh == 59
        stats.dummy += dummy
        if writer is not None and not dummy:
            ext = ()  # IPv6 extension headers before ESP, kept in a transport-mode packet
            if len(src) == 16 and not pkt.udp_encap and (isrc, idst) == (src, dst) and not late:
                ver, l3 = ip_offset(raw.linktype, raw.data)
                if ver == 6 and raw.data[l3 + 8:l3 + 40] == src + dst:
                    ext = v6_ext_headers(raw.data, l3)
            data = wire_packet(isrc, idst, nh, inner, ext)
            writer.write_packet(0, ts_ns, data, comment=late or None)
        if jf is not None:
            jf.write(_jsonl.record(pkt.frame, ts_ns, st, src, dst, pkt.spi, pkt.seq, r.seq_hi, "ok",
                                   nh, inner, len(pkt.data), opts.hex, udp_encap=pkt.udp_encap,
                                   nested=layers, inner_src=isrc, inner_dst=idst))

    def late(pkt: Packet, raw: RawFrame) -> None:
        """An RFC 8229 record of an earlier frame, decoded now (perframe.FramePath._late says why
        it is written here): counted as its frame's ESP, that frame no longer "other"."""
        if type(pkt) is not EspPacket or (opts.frames is not None and pkt.frame not in opts.frames):
            return
        if pkt.frame not in late_frames:
            late_frames.add(pkt.frame)
            stats.other -= 1
        ts_ns = held.get(pkt.frame)
        esp_one(pkt, raw, False, round(pkt.ts * 1e9) if ts_ns is None else ts_ns, late_comment(pkt.frame))

    try:
        with opened as reader:
            seen = 0
            raw = None
            for n, raw in enumerate(reader, 1):
                if len(reader.secrets) != seen:  # keys shipped inside the capture (pcapng DSB)
                    for stype, sdata in reader.secrets[seen:]:
                        add_secrets_block(keys, stype, sdata)
                    seen = len(reader.secrets)
                stats.frames += 1
                # linktype < 0: an interface no IDB declared (damaged file) cannot be written out
                keep = opts.keep_other and writer is not None
                if keep and raw.linktype < 0:
                    keep = False
                    stats.unkept += 1
                own = behind_ah = False
                pkts = decoder.decode_all(raw)
                if not opts.late:  # one record a frame (Options.late): its first packet, as before
                    pkts = one_record(pkts, raw.index)
                for pkt in pkts:
                    t = type(pkt)
                    if t is Malformed:
                        marks[pkt.layer] = marks.get(pkt.layer, 0) + 1
                    elif pkt.frame != raw.index:  # an RFC 8229 record given up now (FIN, RST, overflow)
                        late(pkt, raw)
                    elif t is EspPacket and behind_ah:  # the ESP AH protects: _general_ah gave it (unless AH failed)
                        behind_ah = False
                    elif t is AhPacket:
                        behind_ah = True
                        if not opts.ah:  # AH frames are other frames, as captured
                            continue
                        # export/ah.py: its record and payload; ESP it protects goes on
                        own = True
                        ah, esp = _general_ah(ah, pkt, raw, keys, dec, nested, writer, jf, opts, keep, iface_map,
                                              stats)
                        if esp is not None:
                            esp_one(esp, raw, keep, raw.ts_ns)
                    elif t is EspPacket:
                        own = True
                        esp_one(pkt, raw, keep, raw.ts_ns)
                if not own:
                    stats.other += 1
                    held[raw.index] = raw.ts_ns
                    if len(held) > HELD_MAX:
                        held.popitem(last=False)
                    if keep:
                        _keep_raw(writer, iface_map, stats, raw)
                if progress is not None and n % 4096 == 0:
                    progress(reader.bytes_read, reader.total_bytes)
            for pkt in decoder.flush() if opts.late else ():  # the end of the capture: what still waits
                if type(pkt) is Malformed:
                    marks[pkt.layer] = marks.get(pkt.layer, 0) + 1
                elif raw is not None:
                    late(pkt, raw)
            stats.truncated = reader.truncated
            stats.warning = reader.warning
        collect([], dec, stats, nested, ah.totals if ah is not None else None, marks)
        if writer is not None and dsb:
            write_dsb(writer, stats.used_keys)
    finally:
        if writer is not None:
            writer.close()
        if own_jf:
            jf.close()
    return stats


def _keep_raw(writer: PcapngWriter, iface_map: dict[int, int], stats: RunStats, raw: RawFrame,
              comment: str | None = None) -> None:
    """A frame written as captured (--keep-other), on an output interface of its own link type
    (``iface_map``: capture interface -> output interface, made at its first frame)."""
    stats.kept += 1
    i = iface_map.get(raw.iface)
    if i is None:
        i = iface_map[raw.iface] = writer.add_interface(raw.linktype)
    writer.write_packet(i, raw.ts_ns, raw.data, raw.orig_len, comment=comment)


def _general_ah(ah, pkt, raw, keys, dec, nested, writer, jf, opts: Options, keep: bool, iface_map: dict,
                stats: RunStats):
    """An AH packet on the general path, as ``_Worker._ah`` on the fast one: (the AhOut, the ESP
    packet AH protects for the ESP path, or None when the frame is done)."""
    from ..model.packets import EspPacket
    from .ah import AhOut

    if ah is None:
        ah = AhOut(keys, wire_packet, decrypt_nested, v6_ext_headers)
    got = ah.handle(pkt, raw.data, raw.linktype, raw.ts_ns, dec, nested, jf is not None, opts.hex)
    if got.record is not None:
        jf.write(got.record)
    if writer is not None and got.packet is not None:
        writer.write_packet(0, raw.ts_ns, got.packet, comment=got.comment or None)
    elif keep and got.status == "icv_failed":
        _keep_raw(writer, iface_map, stats, raw, got.comment)
    if got.esp is None or len(got.esp) < 8:
        return ah, None
    spi, seq = int.from_bytes(got.esp[:4], "big"), int.from_bytes(got.esp[4:8], "big")
    return ah, EspPacket(pkt.frame, pkt.ts, pkt.src, pkt.dst, spi, seq, got.esp, ip_version=pkt.ip_version,
                         ip_fragmented=pkt.ip_fragmented)
