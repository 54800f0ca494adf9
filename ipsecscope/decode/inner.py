"""The packet inside the tunnel (and any plain IP frame), summarised the way Wireshark's packet
list shows it: protocol, inner source → destination, ports, ICMP type, TCP flags, DNS query name.

A decrypted ESP payload (RFC 4303 §2.6: the inner IP datagram in tunnel mode, the transport
header in transport mode, told apart by the Next Header field) is parsed once, when it is
decrypted, into one record of an :class:`InnerStore`, kept as columns (32 bytes a frame): the
display filter and the statistics read them as numpy columns and the packet list formats an Info
line from one record when the row is on screen. :func:`parse` (plain Python over ``struct``) is
the one-packet path; the analysis path's hot loop summarises a run of payloads at once with
``decode.inner_bulk``, which gives the same records and leaves the odd packets to :func:`parse`.

Layers are the ones tshark shows for the same bytes, so a display filter sees the same fields:
the inner IPv4/IPv6 header, then UDP, TCP, ICMP or ICMPv6, DNS on UDP port 53, and for ICMP error
messages (RFC 792, RFC 4443 §2.4) the quoted IP header and the first 8 octets of what it carried.
An IP fragment's transport header is dissected from the reassembled datagram (as tshark does with
its default ip.defragment): a fragment alone records only its IP layer, and the frame whose
fragment completes the datagram records the whole datagram's (inner fragments carried by separate
ESP packets included; bounded like the decoder's outer reassembly).

IPComp inside ESP (RFC 3173, next header 108) is opened first (``decode.ipcomp``): the record is
the decompressed datagram's, as tshark dissects it.

ESP inside ESP (decrypted by the session, up to ``crypto.esp.MAX_NESTED`` layers) records the
innermost packet, and one :class:`EspLayer` per inner ESP layer above it (its IP header and ESP
header), so the Info column shows every layer and a filter matches fields of each, as tshark does.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from ..model.idtext import spi_text
from .ip import CHAIN_CUT, CHAIN_LATER_FRAGMENT, Reassembler, v6_ext_chain, walk_quoted_v6
from .ipcomp import IPCOMP, ipcomp_open
from .ports import service_not_ike

if TYPE_CHECKING:
    import numpy as np

# frame, ver, proto, ttl, flags, src, dst, iplen, sport, dport, itype, icode, tcpflags, l4len,
# dns_id, dns_qtype, qver, qproto, qflags, qsrc, qdst, qsport, qdport, qitype, qicode
REC = struct.Struct("<qBBBBIIHHHBBHHHHBBBIIHHBB")
REC_SIZE = REC.size
FIELDS = ("frame", "ver", "proto", "ttl", "flags", "src", "dst", "iplen", "sport", "dport", "itype",
          "icode", "tcpflags", "l4len", "dns_id", "dns_qtype", "qver", "qproto", "qflags", "qsrc", "qdst",
          "qsport", "qdport", "qitype", "qicode")

# flags / qflags bits
L4 = 1  # the transport header (UDP/TCP/ICMP/ICMPv6) was there and is in the record
FRAGMENT = 2  # an IP fragment: its transport header is read from the reassembled datagram only
DNS = 4  # UDP port 53 carrying a DNS header
DNS_RESPONSE = 8  # DNS QR bit (RFC 1035 §4.1.1)
TRUNCATED = 16  # shorter than its headers say

_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")
_PORTS = struct.Struct("!HH")
_UDP = struct.Struct("!HHH")
_TCP = struct.Struct("!HHIIBB")
_ICMP = struct.Struct("!BBHHH")

# RFC 8200 §4: extension headers a transport header can follow (hop-by-hop, routing, destination
# options; fragment handled on its own).
_V6_EXT = frozenset((0, 43, 60))
_V6_EXT_OR_FRAG = frozenset((0, 43, 44, 60))
MAX_PENDING = 64  # inner IP datagrams waiting for fragments at once (the oldest is given up)
MAX_V6_EXT = 1 << 16  # inner packets whose extension-header chain is kept for filters (InnerStore.v6_ext)

PROTO_NAMES = {1: "ICMP", 2: "IGMP", 4: "IPv4", 6: "TCP", 17: "UDP", 41: "IPv6", 47: "GRE", 50: "ESP",
               51: "AH", 58: "ICMPv6", 59: "none", 89: "OSPF", 132: "SCTP"}

ICMP_TYPES = {0: "Echo (ping) reply", 3: "Destination unreachable", 4: "Source quench", 5: "Redirect",
              8: "Echo (ping) request", 11: "Time-to-live exceeded", 12: "Parameter problem",
              13: "Timestamp request", 14: "Timestamp reply"}
ICMP_UNREACH = {0: "Network unreachable", 1: "Host unreachable", 2: "Protocol unreachable",
                3: "Port unreachable", 4: "Fragmentation needed", 13: "Communication administratively filtered"}
ICMPV6_TYPES = {1: "Destination Unreachable", 2: "Packet Too Big", 3: "Time Exceeded", 4: "Parameter Problem",
                128: "Echo (ping) request", 129: "Echo (ping) reply", 133: "Router Solicitation",
                134: "Router Advertisement", 135: "Neighbor Solicitation", 136: "Neighbor Advertisement"}
# ICMP messages that quote the offending datagram (RFC 792; RFC 4443 §3.1-3.4).
ICMP_ERRORS = frozenset((3, 4, 5, 11, 12))
ICMPV6_ERRORS = frozenset((1, 2, 3, 4))
DNS_TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
             65: "HTTPS", 255: "ANY"}
TCP_FLAG_NAMES = ((0x100, "NS"), (0x80, "CWR"), (0x40, "ECE"), (0x20, "URG"), (0x10, "ACK"), (0x08, "PSH"),
                  (0x04, "RST"), (0x02, "SYN"), (0x01, "FIN"))


def _addr4(b: bytes) -> str:
    return f"{b[0]}.{b[1]}.{b[2]}.{b[3]}"


def _addr6(b: bytes) -> str:
    import ipaddress

    return str(ipaddress.IPv6Address(b))


def _raw(vals) -> memoryview:
    """A contiguous buffer (a numpy array) as bytes, for ``array.frombytes``, without a copy."""
    return memoryview(vals).cast("B")


def _dns_name(data: bytes, off: int, end: int) -> str | None:
    """The first question's QNAME (RFC 1035 §4.1.2), uncompressed as questions are."""
    labels: list[str] = []
    for _ in range(128):
        if off >= end:
            return None
        n = data[off]
        if n == 0:
            return ".".join(labels) if labels else "<Root>"
        if n & 0xC0:  # a pointer in a question: not something a resolver sends; stop here
            return None
        labels.append(data[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    return None


# The store keeps a record as columns (``array.array``, ``numpy`` appends a run at once): the
# fields every record has (CORE: 32 bytes a record), and the rare ones (RARE: DNS header fields,
# what an ICMP error quotes) only for the records that have them, beside their frame numbers.
CORE = (("frame", "q"), ("ver", "B"), ("proto", "B"), ("ttl", "B"), ("flags", "B"), ("src", "I"), ("dst", "I"),
        ("iplen", "H"), ("sport", "H"), ("dport", "H"), ("itype", "B"), ("icode", "B"), ("tcpflags", "H"),
        ("l4len", "H"))
RARE = (("dns_id", "H"), ("dns_qtype", "H"), ("qver", "B"), ("qproto", "B"), ("qflags", "B"), ("qsrc", "I"),
        ("qdst", "I"), ("qsport", "H"), ("qdport", "H"), ("qitype", "B"), ("qicode", "B"))
assert tuple(f for f, _c in CORE + RARE) == FIELDS and "".join(c for _f, c in CORE + RARE) == REC.format[1:]
_N_CORE = len(CORE)
assert _N_CORE == 14  # InnerStore.add appends the 13 columns after the frame one by one
_NO_RARE = (0,) * len(RARE)
_NP_CODES = {"q": "<i8", "B": "u1", "H": "<u2", "I": "<u4"}


@cache
def record_dtype() -> np.dtype:
    """The numpy dtype of a packed ``REC`` record (numpy is imported when a reader asks)."""
    import numpy as np

    return np.dtype([(f, _NP_CODES[c]) for f, c in CORE + RARE])


class InnerStore:
    """One record per frame that has an IP layer ipsecscope did not otherwise decode: the
    decrypted inner packet of an ESP frame, or a plain (non-IPsec) IP frame. Frames are added in
    increasing order; a frame added twice keeps its first record (one TCP segment carrying several
    RFC 8229 records is one frame).

    Records are kept as columns (see ``CORE``/``RARE``): :meth:`add` appends one packet's,
    :meth:`extend` a run's (``decode.inner_bulk`` parses a run of decrypted payloads with numpy).
    :meth:`window` gives them back as packed ``REC`` records, the layout the display filter reads."""

    def __init__(self, enc: dict[int, tuple[int, int]] | None = None) -> None:
        # frame -> (SPI, flags) of the OpenBSD enc(4) frames (the decoder's Decoder.enc, shared):
        # the SA a frame is the cleartext side of, named before its packet in the Info column
        self.enc: dict[int, tuple[int, int]] = {} if enc is None else enc
        self._core = [array(code) for _f, code in CORE[1:]]  # every field of CORE but the frame
        self._core_append = [col.append for col in self._core]
        self.frames = array("q")  # CORE's frame column: extended last, so a record is whole when seen
        self._rare = [array(code) for _f, code in RARE]
        self._rare_frames = array("q")
        self._addrs: list[str] = [""]
        self._addr_ix: dict[str, int] = {"": 0}
        self._v4_ix: dict[int, int] = {}  # IPv4 address as an integer -> its index (the bulk path)
        self._v6_ix: dict[bytes, int] = {}
        self.dns_names: dict[int, str] = {}  # frame -> first question's QNAME
        # frame -> what an ICMP error quotes beyond ports: ("isakmp", the IKE message from its header) or
        # ("esp", spi, seq or None, offset) -- tshark dissects the quoted datagram that far, so
        # filters see it.
        self.quoted: dict[int, tuple] = {}
        # frame -> the ESP layers inside the outer one (nested ESP), outermost first
        self.nested: dict[int, tuple[EspLayer, ...]] = {}
        # frame -> the recorded packet's IPv6 extension headers, (number, Next Header) each, as
        # tshark shows them (ipv6.nxt is the fixed header's field, ipv6.hopopts.nxt...): the
        # packet's own chain, a fragment's before reassembly; transport mode's after ESP
        self.v6_ext: dict[int, tuple[tuple[int, int], ...]] = {}
        self.qv6_ext: dict[int, tuple[tuple[int, int], ...]] = {}  # the same of the IPv6 packet an ICMPv6 error quotes
        self._chains: dict[tuple, tuple] = {}
        self._qchain: list = []
        # IP fragments of inner packets (and plain frames) until their datagram is whole; capture
        # time plays no part (a record has none), the count bound does
        self._reasm = Reassembler(max_datagrams=MAX_PENDING, timeout=float("inf"))

    def __len__(self) -> int:
        return len(self.frames)

    def _addr(self, s: str) -> int:
        i = self._addr_ix.get(s)
        if i is None:
            i = self._addr_ix[s] = len(self._addrs)
            self._addrs.append(s)
        return i

    def addr4(self, a: int) -> int:
        """Table index of the IPv4 address ``a`` (an integer, network order)."""
        i = self._v4_ix.get(a)
        if i is None:
            i = self._v4_ix[a] = self._addr(_addr4(a.to_bytes(4, "big")))
        return i

    def addr6(self, a: bytes) -> int:
        """Table index of the IPv6 address ``a`` (16 bytes)."""
        i = self._v6_ix.get(a)
        if i is None:
            i = self._v6_ix[a] = self._addr(_addr6(a))
        return i

    @property
    def addrs(self) -> list[str]:
        """Address table: records hold indexes into it (0 = no address)."""
        return self._addrs

    def add(self, frame: int, data: bytes | memoryview, next_header: int | None,
            layers: tuple[EspLayer, ...] = ()) -> None:
        """Record the inner packet ``data``; ``next_header`` as ESP's trailer says (4 IPv4, 41 IPv6,
        else a transport header in transport mode; None: look at the version nibble). ``layers``:
        the ESP layers between the outer ESP and ``data`` (nested ESP), outermost first."""
        frames = self.frames
        if frames and frames[-1] >= frame:
            return
        if layers:
            self.nested[frame] = layers
        rec = self.summarise(frame, bytes(data), next_header)
        # one append per CORE column, written out: this runs per packet on the general path (live
        # mode), where a loop over the columns costs twice as much
        a = self._core_append
        a[0](rec[0]); a[1](rec[1]); a[2](rec[2]); a[3](rec[3]); a[4](rec[4]); a[5](rec[5])  # noqa: E702
        a[6](rec[6]); a[7](rec[7]); a[8](rec[8]); a[9](rec[9]); a[10](rec[10]); a[11](rec[11])  # noqa: E702
        a[12](rec[12])
        rare = rec[_N_CORE - 1:]
        if rare != _NO_RARE:
            for col, v in zip(self._rare, rare, strict=True):
                col.append(v)
            self._rare_frames.append(frame)
        frames.append(frame)

    def summarise(self, frame: int, data: bytes, next_header: int | None) -> tuple:
        """The record fields (after ``frame``) of ``data``: an IP fragment that completes a
        datagram gives the whole datagram's; a DNS name or what an ICMP error quotes goes to the
        side tables under ``frame``. (The one packet path: :meth:`add`, and the bulk parser for
        what it leaves to it.)"""
        if next_header == IPCOMP:  # compressed before ESP encrypted it (RFC 3173): what tshark shows
            opened = ipcomp_open(data)
            if opened is not None:
                data, next_header = opened
        qchain = self._qchain  # (one list for every packet: parse appends to it only for a quote's chain)
        rec, extra = parse(data, next_header, self._addr, qchain)
        if rec[0] == 6 and data[6] != rec[1] or rec[0] == 0 and next_header in _V6_EXT_OR_FRAG:
            self._note_v6_ext(frame, data, next_header)
        if rec[3] & FRAGMENT:  # parse saw an IP fragment: it may complete a datagram
            whole = self._defragment(data, next_header)
            if whole is not None:
                qchain.clear()
                rec, extra = parse(whole, next_header, self._addr, qchain)
        if qchain:
            if len(self.qv6_ext) < MAX_V6_EXT:
                self.qv6_ext[frame] = self._chains.setdefault(qchain[0], qchain[0])
            qchain.clear()
        if isinstance(extra, str):
            self.dns_names[frame] = extra
        elif extra is not None:
            self.quoted[frame] = extra
        return rec

    def _note_v6_ext(self, frame: int, data: bytes, nh: int | None) -> None:
        """Keep the extension-header chain of an inner IPv6 packet (or of transport mode's
        payload): few packets have one, so a bounded dict, one tuple per distinct chain."""
        chain = v6_ext_chain(data, nh, 0) if nh in _V6_EXT_OR_FRAG else v6_ext_chain(data, data[6], 40)
        if chain and len(self.v6_ext) < MAX_V6_EXT:
            self.v6_ext[frame] = self._chains.setdefault(chain, chain)

    def extend(self, frames: Sequence[int], core: list, rare_frames: Sequence[int] = (),
               rare: list | None = None) -> None:
        """Append a run's records: ``frames`` increasing and after every frame already here,
        ``core`` the columns of CORE after the frame (buffers of its item types: numpy arrays),
        ``rare_frames``/``rare`` the RARE columns of the records that have any."""
        for col, vals in zip(self._core, core, strict=True):
            col.frombytes(_raw(vals))
        if len(rare_frames):
            for col, vals in zip(self._rare, rare, strict=True):
                col.frombytes(_raw(vals))
            self._rare_frames.frombytes(_raw(rare_frames))
        self.frames.frombytes(_raw(frames))

    def _defragment(self, data: bytes, nh: int | None) -> bytes | None:
        """The whole datagram when ``data`` is the IP fragment that completes one (RFC 791 §3.2,
        RFC 8200 §4.5), with its fragmentation fields cleared; None otherwise (a fragment still
        waiting is recorded as the fragment it is)."""
        n = len(data)
        if (nh == 4 or (nh is None and n and data[0] >> 4 == 4)) and n >= 20 and data[0] >> 4 == 4:
            frag = (data[6] << 8) | data[7]
            if not frag & 0x3FFF:
                return None
            hl = (data[0] & 15) * 4
            tl = (data[2] << 8) | data[3]
            if not 20 <= hl <= tl <= n:
                return None
            got = self._reasm.add((4, data[12:20], data[4:6], data[9]), 0.0, (frag & 0x1FFF) * 8,
                                  bool(frag & 0x2000), data[hl:tl])
            self._reasm.dropped.clear()  # an abandoned inner datagram is no frame's damage here
            if type(got) is not tuple:
                return None
            body = got[0]
            head = bytearray(data[:hl])
            head[2:4] = (hl + len(body)).to_bytes(2, "big")
            head[6:8] = b"\0\0"
            return bytes(head) + body
        if (nh == 41 or (nh is None and n and data[0] >> 4 == 6)) and n >= 48 and data[0] >> 4 == 6:
            # the fragment header, after the unfragmentable part (RFC 8200 §4.5: Hop-by-Hop,
            # Routing, Destination Options in front of it travel with every fragment)
            prev, p = 6, 40  # where the Next Header field naming the current header is
            nxt = data[6]
            for _ in range(8):
                if nxt not in _V6_EXT or p + 2 > n:
                    break
                prev, p, nxt = p, p + (data[p + 1] + 1) * 8, data[p]
            if nxt != 44 or p + 8 > n:
                return None
            off = (data[p + 2] << 8 | data[p + 3])
            end = min(n, 40 + ((data[4] << 8) | data[5]))
            got = self._reasm.add((6, data[8:40], data[p + 4:p + 8]), 0.0, off & 0xFFF8, bool(off & 1),
                                  data[p + 8:end], data[p])
            self._reasm.dropped.clear()
            if type(got) is not tuple:
                return None
            body, inner_nh = got
            head = bytearray(data[:p])
            head[4:6] = (p - 40 + len(body)).to_bytes(2, "big")
            head[prev] = inner_nh
            return bytes(head) + body
        return None

    def add_ip_frame(self, frame: int, data: bytes, linktype: int) -> str:
        """A frame that is not IPsec: record its IP layer (if it has one) like an inner packet.
        A frame with none says what it is instead, its Info: ``ARP``, ``ethertype 0x88b5`` (the
        row store keeps the EtherType, not the text), or "" for a link type without one."""
        from ..model.packets import link_text
        from .link import ip_offset, link_ethertype

        ver, off = ip_offset(linktype, data)
        if ver == 4:
            self.add(frame, memoryview(data)[off:], 4)
        elif ver == 6:
            self.add(frame, memoryview(data)[off:], 41)
        else:
            et = link_ethertype(linktype, data)
            return link_text(et) if et is not None else ""
        return ""

    def prune(self, first_frame: int) -> None:
        """Forget records of frames before ``first_frame`` (live mode's ring of rows moved on)."""
        i = bisect.bisect_left(self.frames, first_frame)
        if i:
            del self.frames[:i]
            for col in self._core:
                del col[:i]
            for side in (self.dns_names, self.quoted, self.nested, self.v6_ext, self.qv6_ext, self.enc):
                for f in [f for f in side if f < first_frame]:
                    del side[f]
        k = bisect.bisect_left(self._rare_frames, first_frame)
        if k:
            del self._rare_frames[:k]
            for col in self._rare:
                del col[:k]

    def window(self, first: int, last: int) -> bytes:
        """The records of frames ``first``..``last`` packed as ``REC`` records, a copy (a reader
        in another thread never holds the growing columns, nor sees half a record: :meth:`add` and
        :meth:`extend` extend ``frames`` last)."""
        import numpy as np

        cols = self.columns(first, last)
        if cols is None:
            return b""
        out = np.zeros(len(cols["frame"]), record_dtype())
        for name in FIELDS:
            out[name] = cols[name]
        return out.tobytes()

    def columns(self, first: int, last: int) -> Columns | None:
        """The records of frames ``first``..``last`` as numpy columns by ``FIELDS`` name (copies,
        as :meth:`window`; the RARE ones built when first asked for), or None when there are none:
        what the display filter and the statistics read."""
        import numpy as np

        frames = self.frames
        i = bisect.bisect_left(frames, first)
        j = bisect.bisect_right(frames, last, i, len(frames))
        if j == i:
            return None
        dt = record_dtype()
        cols = Columns({"frame": np.frombuffer(frames[i:j], np.int64)})
        for (name, _c), col in zip(CORE[1:], self._core, strict=True):
            cols[name] = np.frombuffer(col[i:j], dt[name])
        rf = self._rare_frames
        a = bisect.bisect_left(rf, first)
        b = bisect.bisect_right(rf, frames[j - 1], a, len(rf))
        cols.rare = (np.frombuffer(rf[a:b], np.int64), [col[a:b] for col in self._rare]) if b > a else None
        return cols

    def record(self, frame: int) -> tuple | None:
        """The record of ``frame`` as a ``REC`` tuple (``FIELDS``), or None."""
        frames = self.frames
        i = bisect.bisect_left(frames, frame)
        if i < len(frames) and frames[i] == frame:
            rf = self._rare_frames
            k = bisect.bisect_left(rf, frame)
            rare = tuple(col[k] for col in self._rare) if k < len(rf) and rf[k] == frame else _NO_RARE
            return (frame, *(col[i] for col in self._core), *rare)
        return None

    def get(self, frame: int) -> InnerSummary | None:
        rec = self.record(frame)
        if rec is None:
            return None
        a = self._addrs
        r = list(rec)
        for k in (5, 6, 19, 20):  # src, dst, qsrc, qdst (frame is 0)
            r[k] = a[r[k]]
        return InnerSummary(*r, dns_name=self.dns_names.get(frame), layers=self.nested.get(frame, ()))

    def addresses(self, frame: int) -> tuple[str, str]:
        """(source, destination) of the frame's IP header as the packet list shows a plain IP
        frame (an OTHER row keeps none of its own: nothing per non-IPsec frame but this store);
        ("", "") when it holds none (a non-IP frame)."""
        s = self.get(frame)
        return (s.src, s.dst) if s is not None else ("", "")

    def info(self, frame: int) -> str | None:
        """The Info text after the outer ESP's: every nested ESP layer, then the inner packet."""
        s = self.get(frame)
        if s is None:
            return None
        text = s.info()
        enc = self.enc.get(frame) if self.enc else None
        if enc is not None:  # an enc(4) frame: the SA by SPI, as tcpdump prints it, then its packet
            from .link import enc_flags_text

            text = f"ENC SPI {spi_text(enc[0])} ({enc_flags_text(enc[1])}) ▸ {text}"
        if not s.layers:
            return text
        last = s.layers[-1]
        if last.status != "decrypted":
            # the record is the packet carrying that layer: say which SA did not open, and why
            text = f"{text} {spi_text(last.spi)} seq {last.seq} ({last.status})"
        return "".join(f"{x.info()} ▸ " for x in s.layers if x.status == "decrypted") + text


class Columns(dict):
    """``FIELDS`` name -> numpy column of some records (:meth:`InnerStore.columns`); a RARE column
    is built when first asked for: zeros but where a record has it."""

    rare: tuple | None = None  # (frames, RARE columns as arrays) of the records that have them

    def __missing__(self, name: str):
        import numpy as np

        names = [f for f, _c in RARE]
        if name not in names:
            raise KeyError(name)
        dt = record_dtype()
        col = np.zeros(len(self["frame"]), dt[name])
        if self.rare is not None:
            at = np.searchsorted(self["frame"], self.rare[0])
            col[at] = np.frombuffer(self.rare[1][names.index(name)], dt[name])
        self[name] = col
        return col


def parse(data: bytes, nh: int | None, addr: Callable[[str], int],
          qchain: list | None = None) -> tuple[tuple, str | None]:
    """The record fields (after ``frame``) for ``data`` and the DNS query name, if any.

    ``addr`` maps an address string to its table index. Never raises on short or odd input: what
    is missing is left out and TRUNCATED is set. ``qchain`` gets the extension-header chain of
    the IPv6 packet an ICMPv6 error quotes, when it has one (:func:`~.ip.v6_ext_chain`)."""
    n = len(data)
    if nh is None:
        nh = 4 if n and data[0] >> 4 == 4 else 41 if n and data[0] >> 4 == 6 else 0
    ver = proto = ttl = flags = src = dst = iplen = 0
    off, end = 0, n
    if nh == 4:
        if n < 20 or data[0] >> 4 != 4:
            return (0, 4, 0, TRUNCATED, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), None
        vihl, _tos, iplen, _id, frag, ttl, proto, _ck, s, d = _V4.unpack_from(data)
        ver = 4
        src, dst = addr(_addr4(s)), addr(_addr4(d))
        off = (vihl & 15) * 4
        end = min(n, iplen) if iplen >= off else n
        if iplen > n:
            flags |= TRUNCATED
        if frag & 0x3FFF:  # MF or an offset: tshark reassembles, and dissects UDP/TCP only then
            flags |= FRAGMENT
    elif nh == 41:
        if n < 40:
            return (0, 41, 0, TRUNCATED, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), None
        _vtf, iplen, proto, ttl, s, d = _V6.unpack_from(data)
        ver = 6
        src, dst = addr(_addr6(s)), addr(_addr6(d))
        off = 40
        end = min(n, 40 + iplen) if iplen else n
        if 40 + iplen > n:
            flags |= TRUNCATED
        for _ in range(8):  # RFC 8200 §4.1: a handful of extension headers at most
            if proto in _V6_EXT and off + 2 <= end:
                proto, off = data[off], off + (data[off + 1] + 1) * 8
            elif proto == 44 and off + 8 <= end:  # fragment header (RFC 8200 §4.5)
                if (data[off + 2] << 8 | data[off + 3]) & 0xFFF9:  # offset or M flag
                    flags |= FRAGMENT
                proto, off = data[off], off + 8
            else:
                break
    else:
        proto = nh  # transport mode: the payload starts with the transport header
        # or with a Destination Options header (RFC 4303 §3.1.1), which tshark walks as after IPv6
        for _ in range(8):
            if proto in _V6_EXT and off + 2 <= end:
                proto, off = data[off], off + (data[off + 1] + 1) * 8
            else:
                break
    l4 = _l4(data, off, end, proto, flags, addr, qchain)
    return (ver, proto, ttl, flags | l4[0], src, dst, iplen) + l4[1:-1], l4[-1]


_NO_L4 = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, None)


def _l4(data: bytes, off: int, end: int, proto: int, flags: int, addr, qchain: list | None = None) -> tuple:
    """(flags, sport, dport, itype, icode, tcpflags, l4len, dns_id, dns_qtype, qver, qproto, qflags,
    qsrc, qdst, qsport, qdport, qitype, qicode, dns_name)."""
    if flags & FRAGMENT:
        return _NO_L4
    if proto == 17 and off + 8 <= end:
        sport, dport, ulen = _UDP.unpack_from(data, off)
        if (sport == 53 or dport == 53) and off + 8 < end:
            # tshark calls anything on port 53 DNS, even a header cut short (then marked malformed)
            p = off + 8
            dns_id = data[p] << 8 | data[p + 1] if p + 2 <= end else 0
            dflags = data[p + 2] << 8 | data[p + 3] if p + 4 <= end else 0
            qd = data[p + 4] << 8 | data[p + 5] if p + 6 <= end else 0
            fl = L4 | DNS | (DNS_RESPONSE if dflags & 0x8000 else 0)
            name = None
            qtype = 0
            if qd and p + 12 < end:
                name = _dns_name(data, p + 12, end)
                if name is not None:
                    q = p + 12 + (len(name.encode()) + 2 if name != "<Root>" else 1)
                    if q + 2 <= end:
                        qtype = data[q] << 8 | data[q + 1]
            return (fl, sport, dport, 0, 0, 0, ulen, dns_id, qtype, 0, 0, 0, 0, 0, 0, 0, 0, 0, name)
        return (L4, sport, dport, 0, 0, 0, ulen, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, None)
    if proto == 6 and off + 14 <= end:
        sport, dport, _seq, _ack, hl, tfl = _TCP.unpack_from(data, off)
        tcpflags = (hl & 1) << 8 | tfl
        return (L4, sport, dport, 0, 0, tcpflags, max(0, end - off - (hl >> 4) * 4),
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, None)
    if (proto == 1 or proto == 58) and off + 4 <= end:
        itype, icode = data[off], data[off + 1]
        ident = seq = 0
        if off + 8 <= end:
            _t, _c, _ck, ident, seq = _ICMP.unpack_from(data, off)
        q: tuple = (0, 0, 0, 0, 0, 0, 0, 0, 0)
        extra = None
        if itype in (ICMP_ERRORS if proto == 1 else ICMPV6_ERRORS) and off + 8 < end:
            q, extra = _quoted(data[off + 8:end], 4 if proto == 1 else 41, addr, qchain)
            if extra is not None and extra[0] == "esp":
                extra = extra[:3] + (extra[3] + off + 8,)  # where the quoted ESP starts in ``data``
        return (L4, ident, seq, itype, icode, 0, end - off, 0, 0) + q + (extra,)
    return _NO_L4


def _quoted(data: bytes, nh: int, addr, qchain: list | None = None) -> tuple[tuple, tuple | None]:
    """The datagram an ICMP error quotes (RFC 792: its IP header and at least 8 octets; Linux
    quotes up to 576 octets in all): ((qver, qproto, qflags, qsrc, qdst, qsport, qdport, qitype,
    qicode), the quoted IKE header, or ("esp", SPI, sequence number, offset of the ESP in
    ``data``) for ESP over IP or in UDP 4500)."""
    n = len(data)
    if nh == 4 and n >= 20 and data[0] >> 4 == 4:
        vihl, _tos, _len, _id, frag, _ttl, proto, _ck, s, d = _V4.unpack_from(data)
        off, ver = (vihl & 15) * 4, 4
        fl = FRAGMENT if frag & 0x1FFF else 0
        src, dst = addr(_addr4(s)), addr(_addr4(d))
    elif nh == 41 and n >= 40 and data[0] >> 4 == 6:
        _vtf, _plen, proto, _hl, s, d = _V6.unpack_from(data)
        if qchain is not None and proto in _V6_EXT_OR_FRAG and (qc := v6_ext_chain(data, proto, 40, partial=True)):
            qchain.append(qc)
        # the quote's extension headers (RFC 4443 §2.4(c) quotes them too) before its ESP/UDP/...
        proto, off, chain = walk_quoted_v6(data, proto, 40, n)
        ver, fl = 6, FRAGMENT if chain == CHAIN_LATER_FRAGMENT else 0
        src, dst = addr(_addr6(s)), addr(_addr6(d))
        if chain == CHAIN_CUT:
            return (ver, proto, fl, src, dst, 0, 0, 0, 0), None
    else:
        return (0, 0, 0, 0, 0, 0, 0, 0, 0), None
    sport = dport = itype = icode = 0
    extra = None
    if not fl and off + 4 <= n:
        if proto == 50:  # ESP straight over IP (RFC 4303 §2.1: SPI, sequence)
            extra = _quoted_esp(data, off)
        elif proto in (6, 17):
            sport, dport = _PORTS.unpack_from(data, off)
            fl |= L4
            if proto == 17:
                extra = _quoted_ipsec(data[off + 8:], sport, dport)
                if extra is not None and extra[0] == "esp":
                    extra = extra[:3] + (off + 8,)
        elif proto in (1, 58):
            itype, icode = data[off], data[off + 1]
            fl |= L4
    return (ver, proto, fl, src, dst, sport, dport, itype, icode), extra


def _quoted_ipsec(p: bytes, sport: int, dport: int) -> tuple | None:
    """IKE on UDP 500; on 4500 IKE after the four-zero non-ESP marker, else ESP (RFC 3948 §2).
    IKE: ("isakmp", the quoted message from its header to the end of the quote) -- a whole
    message when the error quotes it all, else its start (tshark then shows the header only)."""
    if 500 in (sport, dport) and 4500 not in (sport, dport):
        # a quoted DNS reply 53 -> 500 is DNS, as the datagram itself (ports.service_not_ike)
        return ("isakmp", bytes(p)) if len(p) >= 28 and not service_not_ike(sport, dport, p) else None
    if 4500 in (sport, dport):
        if len(p) >= 32 and p[:4] == b"\0\0\0\0":
            return ("isakmp", bytes(p[4:]))
        if len(p) >= 4 and p[:4] != b"\0\0\0\0":
            return _quoted_esp(p, 0)
    return None


def _quoted_esp(p: bytes, off: int) -> tuple:
    """("esp", SPI, sequence number or None when the quote ends before it, ``off``): as tshark,
    a quote cut inside the ESP header still shows the SPI."""
    spi = int.from_bytes(p[off:off + 4], "big")
    return ("esp", spi, int.from_bytes(p[off + 4:off + 8], "big") if len(p) >= off + 8 else None, off)


@dataclass(slots=True, frozen=True)
class EspLayer:
    """One ESP layer inside the outer ESP (RFC 4303 in a tunnel through a tunnel, or transport-mode
    ESP of ESP), its own SA (SPI + destination + protocol, RFC 4301 §4.1)."""

    ver: int  # 4/6: the IP header in front of it (tunnel mode); 0: none of its own (transport mode)
    src: str
    dst: str
    spi: int
    seq: int  # with the inferred ESN high bits
    status: str  # as a row's: decrypted, no-key, icv-bad, malformed, unsupported
    next_header: int | None  # from its trailer, once decrypted
    child_sa: int | None = None

    def info(self) -> str:
        where = f" {self.src} → {self.dst}" if self.ver else ""
        return f"ESP{where} {spi_text(self.spi)} seq {self.seq}"


@dataclass(slots=True, frozen=True)
class InnerSummary:
    """One inner packet's record with its addresses as text; ``info()`` is the Info column."""

    frame: int
    ver: int  # 4, 6, or 0 (transport mode: the outer header is the IP layer)
    proto: int  # IANA protocol number of the transport header
    ttl: int
    flags: int
    src: str
    dst: str
    iplen: int
    sport: int  # UDP/TCP source port; ICMP identifier
    dport: int  # UDP/TCP destination port; ICMP sequence number
    itype: int
    icode: int
    tcpflags: int
    l4len: int
    dns_id: int
    dns_qtype: int
    qver: int
    qproto: int
    qflags: int
    qsrc: str
    qdst: str
    qsport: int
    qdport: int
    qitype: int
    qicode: int
    dns_name: str | None = None
    layers: tuple[EspLayer, ...] = ()  # nested ESP layers above this packet, outermost first

    @property
    def protocol(self) -> str:
        """The Protocol column: the highest layer recorded."""
        if self.flags & DNS:
            return "DNS"
        if self.flags & FRAGMENT:
            return "IPv6" if self.ver == 6 else "IPv4"
        return PROTO_NAMES.get(self.proto, str(self.proto))

    def info(self) -> str:
        """Like Wireshark's Info column, led by protocol and inner addresses (the outer ones are
        the row's Source and Destination)."""
        proto = self.protocol
        head = f"{proto} {self.src} → {self.dst}" if self.ver else proto
        fl = self.flags
        if fl & FRAGMENT:
            return f"{head} Fragmented IP protocol (proto={PROTO_NAMES.get(self.proto, self.proto)})"
        if not fl & L4:
            tail = " [truncated]" if fl & TRUNCATED else ""
            return f"{head}{tail}"
        if fl & DNS:
            kind = "Standard query response" if fl & DNS_RESPONSE else "Standard query"
            qtype = DNS_TYPES.get(self.dns_qtype, str(self.dns_qtype)) if self.dns_qtype else ""
            return f"{head} {kind} 0x{self.dns_id:04x} {qtype} {self.dns_name or ''}".rstrip()
        if self.proto == 17:
            return f"{head} {self.sport} → {self.dport} Len={max(0, self.l4len - 8)}"
        if self.proto == 6:
            names = [n for bit, n in TCP_FLAG_NAMES if self.tcpflags & bit]
            return f"{head} {self.sport} → {self.dport} [{', '.join(reversed(names))}] Len={self.l4len}"
        if self.proto == 1:
            name = ICMP_TYPES.get(self.itype, f"type {self.itype}")
            if self.itype in (0, 8):
                ttl = f", ttl={self.ttl}" if self.ver else ""
                return f"{head} {name} id=0x{self.sport:04x}, seq={self.dport}/{_swap16(self.dport)}{ttl}"
            if self.itype == 3:
                name += f" ({ICMP_UNREACH.get(self.icode, f'code {self.icode}')})"
            return f"{head} {name}{self._quoted()}"
        if self.proto == 58:
            name = ICMPV6_TYPES.get(self.itype, f"type {self.itype}")
            if self.itype in (128, 129):
                hlim = f", hlim={self.ttl}" if self.ver else ""
                return f"{head} {name} id=0x{self.sport:04x}, seq={self.dport}{hlim}"
            return f"{head} {name}{self._quoted()}"
        return head

    def _quoted(self) -> str:
        if not self.qver:
            return ""
        q = PROTO_NAMES.get(self.qproto, str(self.qproto))
        ports = f" {self.qsport} → {self.qdport}" if self.qflags & L4 and self.qproto in (6, 17) else ""
        return f" [{q} {self.qsrc} → {self.qdst}{ports}]"


def _swap16(v: int) -> int:
    return ((v & 0xFF) << 8) | (v >> 8)
