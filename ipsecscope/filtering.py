"""Evaluate a display filter (:mod:`ipsecscope.model.filter`) over a session's frames.

The rows (``rowstore.RowStore`` records, or ``FrameRow`` objects in live mode) and the inner
packets (``decode.inner.InnerStore`` records) are read as numpy columns, a window of rows at a
time, and the filter's tree becomes whole-column operations: a million rows take tens of
milliseconds, not a Python call per row. Fields that only a few frames have (IKE header fields,
DNS names, finding codes) are kept per frame and tested in Python, then joined by frame number.

tshark semantics: a field has one *occurrence* per layer that carries it (``ip.src``: the outer
header, the decrypted inner one, the header quoted in an ICMP error); ``==``, ``<``, ``in``... hold
when any occurrence matches; ``!=`` when the field is present and no occurrence equals; a bare
field when any occurrence is present.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .decode import inner as inner_mod
from .decode.inner import InnerStore
from .decode.quoted import QuotedPacket, QuotedStore, quoted_ike_dissected
from .model.filter import (
    BOOL,
    BYTES,
    FIELDS,
    IPV4,
    IPV6,
    STRING,
    TIME,
    And,
    Filter,
    Node,
    Not,
    Or,
    Test,
)
from .model.ike import IkeMessage, NotifyPayload, SaPayload, SkPayload
from .model.packets import FrameRow
from .rowstore import RowStore, row_dtype

if TYPE_CHECKING:
    from .session import Session

ROW_DTYPE = row_dtype()
_INNER_CODES = {"q": "<i8", "B": "u1", "H": "<u2", "I": "<u4"}
INNER_DTYPE = np.dtype([(name, _INNER_CODES[code]) for name, code in
                        zip(inner_mod.FIELDS, inner_mod.REC.format.lstrip("<"), strict=True)])
assert INNER_DTYPE.itemsize == inner_mod.REC_SIZE
NONE64 = (1 << 64) - 1
WINDOW = 1 << 18  # rows per numpy pass (bounds the memory a filter takes on a huge capture)
# tshark's IPv6 extension-header protocols -> header number (RFC 8200 §4)
V6_EXT_FIELDS = {"hopopts": 0, "routing": 43, "fraghdr": 44, "dstopts": 60}
ECHO_TYPES = frozenset((0, 8, 13, 14, 15, 16, 17, 18))  # ICMP messages with identifier/sequence


@dataclass(slots=True)
class Source:
    """What a filter reads: the rows, and what the session knows beyond them."""

    rows: Sequence[FrameRow]
    inner: InnerStore | None = None
    ike: Mapping[int, IkeMessage] | None = None  # frame -> decoded (and decrypted) IKE message
    first_ts: float | None = None
    quoted: QuotedStore | None = None  # ICMP error frame -> the ESP packet it quotes (decode.quoted)
    # frame -> the outer IPv6 header's extension headers, (number, Next Header) each, where
    # IPsec sat behind some (decode.demux.Decoder.v6_ext)
    v6_ext: Mapping[int, tuple[tuple[int, int], ...]] | None = None
    # (src, dst, sport, dport) of the RFC 8229 TCP connections (decode.demux.Decoder.tcp_tuples)
    tcp_tuples: Mapping[tuple[str, str, int, int], None] | None = None
    # frame -> the IP headers of the tunnels around its IPsec (decode.demux.Decoder.tunnels)
    tunnels: Mapping[int, tuple[tuple[int, str, str, int, int, int], ...]] | None = None


def source_of(session: Session) -> Source:
    """The :class:`Source` of a :class:`~ipsecscope.session.Session`."""
    return Source(session.rows, getattr(session, "inner", None), session.ike_messages,
                  session.table.first_ts, getattr(session, "quoted", None),
                  getattr(getattr(session, "decoder", None), "v6_ext", None),
                  getattr(getattr(session, "decoder", None), "tcp_tuples", None),
                  getattr(getattr(session, "decoder", None), "tunnels", None))


def select(flt: Filter, src: Source | Sequence[FrameRow], start: int = 0, stop: int | None = None, *,
           cancelled: Callable[[], bool] | None = None) -> list[int]:
    """Positions in ``src.rows`` (not frame numbers), from ``start`` to ``stop``, that match.
    ``cancelled`` is asked between windows (a TUI worker stops early when a newer filter came)."""
    if not isinstance(src, Source):
        src = Source(src)
    stop = len(src.rows) if stop is None else min(stop, len(src.rows))
    if flt.tree is None:
        return list(range(start, stop))
    out: list[int] = []
    inner = _InnerCols(src.inner) if src.inner is not None and len(src.inner) else None
    for lo in range(start, stop, WINDOW):
        if cancelled is not None and cancelled():
            break
        hi = min(stop, lo + WINDOW)
        cols = _Cols(src, lo, hi, inner, flt)
        mask = cols.eval(flt.tree)
        out.extend((np.flatnonzero(mask) + lo).tolist())
    return out


def matches(flt: Filter, src: Source | Sequence[FrameRow]) -> list[int]:
    """Frame numbers (not positions) that match, each once, in order."""
    if not isinstance(src, Source):
        src = Source(src)
    rows = src.rows
    seen: list[int] = []
    for i in select(flt, src):
        f = rows[i].frame
        if not seen or seen[-1] != f:
            seen.append(f)
    return seen


class _InnerCols:
    def __init__(self, store: InnerStore) -> None:
        self.store = store
        self.addrs = list(store.addrs)
        self.dns_names = dict(store.dns_names)
        self.quoted = dict(store.quoted)
        self.nested = dict(store.nested)


# An occurrence of a field: values (or table indexes) and where they are present.
@dataclass(slots=True)
class _Occ:
    values: np.ndarray
    present: np.ndarray
    table: list | None = None  # values index this table (addresses, strings)


class _Cols:
    """The columns of rows [lo, hi) and the fields over them (computed when first asked for)."""

    def __init__(self, src: Source, lo: int, hi: int, inner: _InnerCols | None, flt: Filter) -> None:
        self.src, self.lo, self.hi, self.flt = src, lo, hi, flt
        rows = src.rows
        self.n = hi - lo
        self.ike_sa: dict[int, str] = {}  # row offset -> IkeSa.key
        if type(rows) is RowStore:
            size = ROW_DTYPE.itemsize
            # A bytearray slice is a copy: numpy views the copy, never the store's growing buffer.
            self.arr = np.frombuffer(rows._buf[lo * size:hi * size], dtype=ROW_DTYPE)
            self.addrs = list(rows._addrs)
            kinds, statuses = list(rows._kinds), list(rows._statuses)
            self.ike_sa = {i - lo: k for i, k in list(rows._ike_sa.items()) if lo <= i < hi}
        else:
            self.arr, self.addrs, kinds, statuses = self._from_rows(rows, lo, hi)
        self.kinds, self.statuses = kinds, statuses
        k = self.arr["kind"]
        code = {name: i for i, name in enumerate(kinds)}
        none = np.zeros(self.n, dtype=bool)
        self.is_esp = k == code["ESP"] if "ESP" in code else none
        self.is_ah = k == code["AH"] if "AH" in code else none
        self.is_ike = k == code["IKE"] if "IKE" in code else none
        self.is_ka = k == code["NAT-KA"] if "NAT-KA" in code else none
        self.is_other = k == code["OTHER"] if "OTHER" in code else none
        self.true = np.ones(self.n, dtype=bool)
        self.none = none
        # Outer IP: IPsec rows carry their addresses; which family, from the address table. A
        # MALFORMED row carries them when its IP header was whole (tshark shows them there too),
        # and the IP header's protocol field in the next-header slot (-1: not read, e.g. the
        # header that says was the broken one); its UDP ports when the UDP header was read.
        fam = np.array([0] + [6 if ":" in a else 4 for a in self.addrs[1:]], dtype=np.uint8)
        self.is_bad = k == code["MALFORMED"] if "MALFORMED" in code else none
        has_ip = (self.is_esp | self.is_ah | self.is_ike | self.is_ka | self.is_bad) & (self.arr["src"] != 0)
        f = fam[self.arr["src"]]
        self.out_v4 = has_ip & (f == 4)
        self.out_v6 = has_ip & (f == 6)
        ports = (self.arr["sport"] != 0) | (self.arr["dport"] != 0)
        bad_proto = self.arr["nh"].astype(np.int64)
        self.out_udp = self.is_ike | self.is_ka | (self.is_esp & ports) | (self.is_bad & ports & (bad_proto == 17))
        # IKE/ESP/keepalive rows of an RFC 8229 connection came over TCP, not UDP
        self.out_tcp = self._rfc8229_rows(ports & ~self.is_bad)
        self.out_udp &= ~self.out_tcp
        self.out_proto = np.where(self.is_bad, bad_proto, np.where(
            self.is_ah, 51, np.where(self.out_tcp, 6, np.where(self.is_esp & ~self.out_udp, 50, 17)))).astype(np.int64)
        self.frames = self.arr["frame"]
        self.inner = inner
        self._joined = False
        self.has_inner = none
        self.iarr: Mapping[str, np.ndarray] | None = None  # inner columns by name (InnerStore.columns)
        self._cache: dict[str, list[_Occ]] = {}
        self._layer_masks: dict[str, np.ndarray] | None = None

    @staticmethod
    def _from_rows(rows: Sequence[FrameRow], lo: int, hi: int):
        """Columns from FrameRow objects (live mode's ring; plain lists in tests)."""
        addrs, addr_ix = [""], {"": 0}
        kinds, kind_ix = ["IKE", "ESP", "AH", "NAT-KA", "MALFORMED", "OTHER"], {}
        statuses, status_ix = [""], {"": 0}
        kind_ix = {k: i for i, k in enumerate(kinds)}
        n = hi - lo
        arr = np.zeros(n, dtype=ROW_DTYPE)
        recs = []
        for i in range(lo, hi):
            r = rows[i]
            s = addr_ix.get(r.src)
            if s is None:
                s = addr_ix[r.src] = len(addrs)
                addrs.append(r.src)
            d = addr_ix.get(r.dst)
            if d is None:
                d = addr_ix[r.dst] = len(addrs)
                addrs.append(r.dst)
            k = kind_ix.get(r.kind)
            if k is None:
                k = kind_ix[r.kind] = len(kinds)
                kinds.append(r.kind)
            st = status_ix.get(r.status)
            if st is None:
                st = status_ix[r.status] = len(statuses)
                statuses.append(r.status)
            recs.append((r.frame, r.ts, k, s, d, r.sport, r.dport, r.length, -1 if r.spi is None else r.spi,
                         NONE64 if r.seq is None else r.seq, st, -1 if r.child_sa is None else r.child_sa,
                         _nh_of(r)))
        if recs:
            arr[:] = np.array(recs, dtype=ROW_DTYPE)
        return arr, addrs, kinds, statuses

    def _join(self) -> None:
        """For each row, its inner record (by frame number), if any: done once a filter asks for
        an inner field, over the records of this window's frames only."""
        if self._joined:
            return
        self._joined = True
        inner = self.inner
        if inner is None or not self.n:
            return
        arr = inner.store.columns(int(self.frames[0]), int(self.frames[-1]))
        if arr is None:
            return
        ifr = arr["frame"]
        pos = np.searchsorted(ifr, self.frames)
        pos_c = np.minimum(pos, len(ifr) - 1)
        self.has_inner = (pos < len(ifr)) & (ifr[pos_c] == self.frames)
        self.ipos = pos_c
        self.iarr = arr

    def icol(self, name: str) -> np.ndarray:
        return self.iarr[name][self.ipos]

    # -- fields -----------------------------------------------------------------------------------

    def occ(self, name: str) -> list[_Occ]:
        hit = self._cache.get(name)
        if hit is None:
            hit = self._cache[name] = self._occ(name) + self._quoted(name)
        return hit

    def _quoted(self, name: str) -> list[_Occ]:
        """The field's occurrences in the ESP packets ICMP errors of this window quote (rare
        frames: per frame in Python, :func:`quoted_values`)."""
        store = self.src.quoted
        if store is None or not len(store) or not self.n:
            return []
        by_frame = {}
        for f, q in store.between(int(self.frames[0]), int(self.frames[-1])).items():
            vals = quoted_values(q, name)
            if vals:
                by_frame[f] = vals
        return self._sparse_frames(by_frame) if by_frame else []

    def _layers(self):
        """Presence masks of the inner layers: (v4, v6, l4, udp, tcp, icmp, icmpv6, q_v4, q_v6, q_l4)."""
        self._join()
        if self.iarr is None:
            z = self.none
            return dict(v4=z, v6=z, udp=z, tcp=z, icmp=z, icmpv6=z, q_v4=z, q_v6=z, q_udp=z, q_tcp=z, q_icmp=z,
                        q_icmpv6=z, dns=z)
        hi = self.has_inner
        ver, proto, fl = self.icol("ver"), self.icol("proto"), self.icol("flags")
        qver, qproto, qfl = self.icol("qver"), self.icol("qproto"), self.icol("qflags")
        l4 = hi & ((fl & inner_mod.L4) != 0)
        ql4 = hi & (qver != 0) & ((qfl & inner_mod.L4) != 0)
        return dict(v4=hi & (ver == 4), v6=hi & (ver == 6), udp=l4 & (proto == 17), tcp=l4 & (proto == 6),
                    icmp=l4 & (proto == 1), icmpv6=l4 & (proto == 58),
                    q_v4=hi & (qver == 4), q_v6=hi & (qver == 6), q_udp=ql4 & (qproto == 17),
                    q_tcp=ql4 & (qproto == 6), q_icmp=ql4 & (qproto == 1), q_icmpv6=ql4 & (qproto == 58),
                    dns=hi & ((fl & inner_mod.DNS) != 0))

    def _occ(self, name: str) -> list[_Occ]:  # noqa: C901 - one branch per field family
        a = self.arr
        fam, _, sub = name.partition(".")
        if fam in ("ip", "ipv6", "udp", "tcp", "icmp", "icmpv6", "dns", "udpencap") or name == "ipsecscope.decrypted":
            if self._layer_masks is None:
                self._layer_masks = self._layers()
        L = self._layer_masks or {}
        ia = self.icol if self.iarr is not None else (lambda _n: np.zeros(self.n, dtype=np.int64))
        iaddrs = self.inner.addrs if self.inner is not None else [""]
        Oc = _Occ
        if name == "frame":
            return [Oc(self.true, self.true)]
        if name == "frame.number":
            return [Oc(a["frame"], self.true)]
        if name == "frame.len":
            return [Oc(a["length"], self.true)]
        if name == "frame.time_epoch":
            return [Oc(a["ts"], self.true)]
        if name == "frame.time_relative":
            t0 = self.src.first_ts
            if t0 is None:
                t0 = float(a["ts"][0]) if self.n else 0.0
            return [Oc(a["ts"] - t0, self.true)]
        if fam in ("ip", "ipv6"):
            v = "v4" if fam == "ip" else "v6"
            out_p = self.out_v4 if fam == "ip" else self.out_v6
            in_p, q_p = L[v], L["q_" + v]
            # the IP headers of nested ESP layers (tunnel mode), between the outer and the innermost
            ver = 4 if fam == "ip" else 6
            nested = self._nested(lambda x: x if x.ver == ver else None)
            # the tunnels' IP headers around a frame's IPsec (GRE, IP in IP: decode.tunnel)
            tun = {f: [h for h in hops if h[0] == ver] for f, hops in self._tunnel_hops().items()}
            tun = {f: hs for f, hs in tun.items() if hs}
            if not sub:
                return [Oc(self.true, out_p | in_p | q_p), *self._sparse_frames(_values(nested, lambda x: True)),
                        *self._sparse_frames({f: [True] for f in tun})]
            if sub in ("src", "dst", "addr"):
                occ = []
                for s in (("src", "dst") if sub == "addr" else (sub,)):
                    col = 1 if s == "src" else 2
                    occ += [Oc(a[s], out_p, self.addrs), Oc(ia(s), in_p, iaddrs), Oc(ia("q" + s), q_p, iaddrs),
                            *self._sparse_frames(_values(nested, lambda x, s=s: ipaddress.ip_address(getattr(x, s)))),
                            *self._sparse_frames({f: [ipaddress.ip_address(h[col]) for h in hs]
                                                  for f, hs in tun.items()})]
                return occ
            if sub in ("proto", "nxt") and tun:
                return [*self._occ_proto(fam, out_p, in_p, q_p, nested, ia),
                        *self._sparse_frames({f: [h[3] for h in hs] for f, hs in tun.items()})]
            if sub in ("proto", "nxt"):
                return self._occ_proto(fam, out_p, in_p, q_p, nested, ia)
            if fam == "ipv6" and sub.partition(".")[0] in V6_EXT_FIELDS:
                # tshark's ipv6.hopopts / .dstopts / .routing / .fraghdr [.nxt]: the outer header's
                # extension headers (decrypted inner packets' are not kept: those fields miss there)
                num = V6_EXT_FIELDS[sub.partition(".")[0]]
                nxt = sub.endswith(".nxt")
                return self._sparse_frames({f: [h[1] if nxt else True for h in chain if h[0] == num]
                                            for f, chain in self._v6_chains().items()
                                            if any(h[0] == num for h in chain)})
            if sub == "version":
                return [Oc(np.full(self.n, ver), out_p | in_p | q_p),
                        *self._sparse_frames(_values(nested, lambda x: ver))]
        if fam in ("udp", "tcp"):
            in_p, q_p = L[fam], L["q_" + fam]
            out_p = self.out_udp if fam == "udp" else self.out_tcp
            # a VXLAN/Geneve tunnel's own UDP header around the frame's IPsec
            tun = {f: [h for h in hops if h[3] == 17] for f, hops in self._tunnel_hops().items()} if fam == "udp" else {}
            tun = {f: hs for f, hs in tun.items() if hs}
            if not sub:
                return [Oc(self.true, out_p | in_p | q_p), *self._sparse_frames({f: [True] for f in tun})]
            if sub in ("srcport", "dstport", "port"):
                occ = []
                for s in (("sport", "dport") if sub == "port" else ("sport" if sub == "srcport" else "dport",)):
                    col = 4 if s == "sport" else 5
                    occ += [Oc(a[s], out_p), Oc(ia(s), in_p), Oc(ia("q" + s), q_p),
                            *self._sparse_frames({f: [h[col] for h in hs] for f, hs in tun.items()})]
                return occ
            if fam == "tcp":
                flags = ia("tcpflags")
                if sub == "flags":
                    return [Oc(flags, in_p)]
                bit = {"flags.syn": 0x02, "flags.ack": 0x10, "flags.fin": 0x01, "flags.reset": 0x04,
                       "flags.push": 0x08}.get(sub)
                if bit is not None:
                    return [Oc((flags & bit) != 0, in_p)]
        if fam in ("icmp", "icmpv6"):
            in_p, q_p = L[fam], L["q_" + fam]
            if not sub:
                return [Oc(self.true, in_p | q_p)]
            if sub == "type":
                return [Oc(ia("itype"), in_p), Oc(ia("qitype"), q_p)]
            if sub == "code":
                return [Oc(ia("icode"), in_p), Oc(ia("qicode"), q_p)]
            if sub in ("ident", "seq"):
                echo = in_p & np.isin(ia("itype"), list(ECHO_TYPES))
                return [Oc(ia("sport" if sub == "ident" else "dport"), echo)]
        if fam == "dns":
            p = L["dns"]
            if not sub:
                return [Oc(self.true, p)]
            if sub == "id":
                return [Oc(ia("dns_id"), p)]
            if sub == "flags.response":
                return [Oc((ia("flags") & inner_mod.DNS_RESPONSE) != 0, p)]
            if sub == "qry.type":
                return [Oc(ia("dns_qtype"), p & (ia("dns_qtype") != 0))]
            if sub == "qry.name":
                names = self.inner.dns_names if self.inner is not None else {}
                return self._sparse_frames({f: [n] for f, n in names.items()})
        if fam == "esp":
            p = self.is_esp
            q = {f: v for f, v in (self.inner.quoted.items() if self.inner is not None else ()) if v[0] == "esp"}
            nested = self._nested(lambda x: x)  # ESP layers inside the outer one
            if not sub:
                return [Oc(self.true, p), *self._sparse_frames({f: [True] for f in q})]
            if sub == "spi":
                return [Oc(a["spi"], p), *self._sparse_frames({f: [v[1]] for f, v in q.items()}),
                        *self._sparse_frames(_values(nested, lambda x: x.spi))]
            if sub == "sequence":
                return [Oc(a["seq"] & 0xFFFFFFFF, p),
                        *self._sparse_frames({f: [v[2]] for f, v in q.items() if v[2] is not None}),
                        *self._sparse_frames(_values(nested, lambda x: x.seq & 0xFFFFFFFF))]
            if sub == "protocol":
                # live rows keep no next header once Info shows the inner packet: read it from there
                self._join()
                nh = a["nh"].astype(np.int64)
                if self.iarr is not None:
                    ver, proto = self.icol("ver"), self.icol("proto").astype(np.int64)
                    derived = np.where(ver == 4, 4, np.where(ver == 6, 41, proto))
                    nh = np.where((nh < 0) & self.has_inner & p, derived, nh)
                return [Oc(nh, p & (nh >= 0)), *self._sparse_frames(_values(nested, lambda x: x.next_header))]
        if fam == "ah":
            p = self.is_ah
            if not sub:
                return [Oc(self.true, p)]
            if sub == "spi":
                return [Oc(a["spi"], p)]
            if sub == "sequence":
                return [Oc(a["seq"] & 0xFFFFFFFF, p)]
        if fam == "udpencap":
            if sub == "nat_keepalive":
                return [Oc(self.true, self.is_ka)]
            out = self.out_udp & ((a["sport"] == 4500) | (a["dport"] == 4500))
            inn = L["udp"] & ((ia("sport") == 4500) | (ia("dport") == 4500))
            quoted = L["q_udp"] & ((ia("qsport") == 4500) | (ia("qdport") == 4500))
            return [Oc(self.true, out | inn | quoted)]
        if fam == "isakmp":
            if not sub:
                return [Oc(self.true, self.is_ike), *self._sparse_frames({f: [True] for f in self._ike_values("ispi")})]
            return self._sparse_frames(self._ike_values(sub))
        if fam == "ipsecscope":
            if sub == "kind":
                return [Oc(a["kind"], self.true, self.kinds)]
            if sub == "status":
                return [Oc(a["status"], a["status"] != 0, self.statuses)]
            if sub == "decrypted":
                return [Oc(self.true, self.is_esp & self.has_inner)]
            if sub == "child":
                return [Oc(a["child"], a["child"] >= 0),
                        *self._sparse_frames(_values(self._nested(lambda x: x), lambda x: x.child_sa))]
            if sub == "seq":
                return [Oc(a["seq"], a["seq"] != NONE64)]
            if sub == "ike_sa":
                return self._sparse_rows({i: [k] for i, k in self._ike_sa_map().items()})
            if sub == "finding":
                by_frame: dict[int, list[str]] = {}
                for code, frames in self.flt.findings.items():
                    for f in frames:
                        by_frame.setdefault(f, []).append(code)
                return self._sparse_frames(by_frame)
            if sub == "info":
                rows = self.src.rows
                return self._sparse_rows({i: [r.info] for i, r in enumerate(rows[self.lo:self.hi])})
        raise AssertionError(f"field {name} has no columns")  # model.filter.FIELDS and this must agree

    def _occ_proto(self, fam: str, out_p, in_p, q_p, nested, ia) -> list[_Occ]:
        """ip.proto / ipv6.nxt of the row's own IP header, the decrypted and quoted ones, and the
        nested ESP layers' (the tunnels' are added by the caller)."""
        out_proto, own = self.out_proto, ia("proto")
        if fam == "ipv6":
            out_proto = self._v6_fixed_nxt(out_proto, self.out_v6)
            # an OTHER row's record is the frame's own IP header (a fragment held for reassembly)
            own = self._v6_fixed_nxt(own.astype(np.int64), in_p & self.is_other)
        return [_Occ(out_proto, out_p & (out_proto >= 0)), _Occ(own, in_p), _Occ(ia("qproto"), q_p),
                *self._sparse_frames(_values(nested, lambda x: 50))]

    def _tunnel_hops(self) -> dict[int, tuple[tuple[int, str, str, int, int, int], ...]]:
        tun = self.src.tunnels
        if not tun or not self.n:
            return {}
        lo, hi = int(self.frames[0]), int(self.frames[-1])
        return {f: h for f, h in tun.items() if lo <= f <= hi}

    def _rfc8229_rows(self, cand: np.ndarray) -> np.ndarray:
        """Rows (among ``cand``: rows with ports) of the RFC 8229 TCP connections the decoder saw."""
        tuples = self.src.tcp_tuples
        out = np.zeros(self.n, dtype=bool)
        if not tuples or not cand.any():
            return out
        ix = {a: i for i, a in enumerate(self.addrs)}
        a = self.arr
        for s, d, sp, dp in tuples:
            si, di = ix.get(s), ix.get(d)
            if si is not None and di is not None:
                out |= cand & (a["src"] == si) & (a["dst"] == di) & (a["sport"] == sp) & (a["dport"] == dp)
        return out

    def _v6_chains(self) -> dict[int, tuple[tuple[int, int], ...]]:
        """The extension-header chains of this window's frames (few: a dict look-up each)."""
        ext = self.src.v6_ext
        if not ext or not self.n:
            return {}
        lo, hi = int(self.frames[0]), int(self.frames[-1])
        if len(ext) < hi - lo:
            return {f: c for f, c in ext.items() if lo <= f <= hi}
        return {f: c for f in range(lo, hi + 1) if (c := ext.get(f)) is not None}

    def _v6_fixed_nxt(self, out_proto: np.ndarray, where: np.ndarray) -> np.ndarray:
        """ipv6.nxt of the outer header is the fixed header's Next Header, as tshark reads it:
        behind extension headers (RFC 8200 §4) that is the first one's number, not the
        ESP/AH/UDP/TCP protocol the row's kind implies."""
        chains = self._v6_chains()
        if not chains:
            return out_proto
        out = out_proto.copy()
        frames = np.fromiter(chains, dtype=np.int64, count=len(chains))
        first = np.fromiter((c[0][0] for c in chains.values()), dtype=np.int64, count=len(chains))
        order = np.argsort(frames)
        frames, first = frames[order], first[order]
        pos = np.minimum(np.searchsorted(frames, self.frames), len(frames) - 1)
        hit = (frames[pos] == self.frames) & where
        out[hit] = first[pos[hit]]
        return out

    def _nested(self, pick: Callable) -> dict[int, list]:
        """Per frame of this window, the nested ESP layers ``pick`` keeps (it returns None to skip)."""
        if self.inner is None or not self.inner.nested or not self.n:
            return {}
        lo_f, hi_f = int(self.frames[0]), int(self.frames[-1])
        out: dict[int, list] = {}
        for frame, layers in self.inner.nested.items():
            if lo_f <= frame <= hi_f:
                kept = [y for y in map(pick, layers) if y is not None]
                if kept:
                    out[frame] = kept
        return out

    def _ike_sa_map(self) -> dict[int, str]:
        if type(self.src.rows) is RowStore:
            return self.ike_sa
        rows = self.src.rows
        return {i - self.lo: rows[i].ike_sa for i in range(self.lo, self.hi) if rows[i].ike_sa is not None}

    def _ike_values(self, sub: str) -> dict[int, list]:
        ike = self.src.ike or {}
        lo_f = int(self.frames[0]) if self.n else 0
        hi_f = int(self.frames[-1]) if self.n else -1
        out: dict[int, list] = {}
        for frame, msg in ike.items():
            if lo_f <= frame <= hi_f:
                vals = ike_field(msg, sub)
                if vals:
                    out[frame] = vals
        # IKE quoted in ICMP errors (tshark dissects it as isakmp too): a whole message as any
        # other (the session decoded and decrypted it), a cut-off one's header
        store = self.src.quoted
        for frame, q in (self.inner.quoted.items() if self.inner is not None else ()):
            if q[0] == "isakmp" and lo_f <= frame <= hi_f:
                vals = quoted_ike_field(q[1], sub, store.ike(frame) if store is not None else None)
                if vals:
                    out.setdefault(frame, []).extend(vals)
        return out

    # Sparse fields: a dict of values per frame (or per row offset) becomes an occurrence list
    # evaluated in Python (few frames have them).
    def _sparse_frames(self, by_frame: dict[int, list]) -> list[_Occ]:
        return [_Sparse(by_frame, None, self)]  # type: ignore[list-item]

    def _sparse_rows(self, by_row: dict[int, list]) -> list[_Occ]:
        return [_Sparse(None, by_row, self)]  # type: ignore[list-item]

    # -- evaluation -------------------------------------------------------------------------------

    def eval(self, node: Node) -> np.ndarray:
        if isinstance(node, And):
            return self.eval(node.left) & self.eval(node.right)
        if isinstance(node, Or):
            return self.eval(node.left) | self.eval(node.right)
        if isinstance(node, Not):
            return ~self.eval(node.expr)
        return self.test(node)

    def test(self, t: Test) -> np.ndarray:
        occs = self.occ(t.field)
        present = self.none.copy()
        for o in occs:
            present |= o.present if not isinstance(o, _Sparse) else o.mask(lambda _v: True)
        if t.op is None:
            return present
        ftype = FIELDS[t.field].type
        op = t.op
        if op == "!=":
            return present & ~self._any(occs, ftype, "==", t.value)
        if op == "===":
            return present & ~self._any(occs, ftype, "!=", t.value)
        if op == "~=":
            return self._any(occs, ftype, "!=", t.value)
        return self._any(occs, ftype, op, t.value)

    def _any(self, occs: list[_Occ], ftype: str, op: str, value) -> np.ndarray:
        out = self.none.copy()
        pred = _scalar_pred(ftype, op, value)
        for o in occs:
            if isinstance(o, _Sparse):
                out |= o.mask(pred)
            elif o.table is not None:
                lut = np.fromiter((x is not None and x != "" and pred(x) for x in _typed(o.table, ftype)), dtype=bool,
                                  count=len(o.table))
                out |= o.present & lut[o.values]
            else:
                out |= o.present & _vector(o.values, ftype, op, value)
        return out


class _Sparse:
    """Values per frame (or per row offset) for fields few frames have."""

    def __init__(self, by_frame: dict[int, list] | None, by_row: dict[int, list] | None, cols: _Cols) -> None:
        self.by_frame, self.by_row, self.cols = by_frame, by_row, cols

    def mask(self, pred: Callable[[object], bool]) -> np.ndarray:
        m = np.zeros(self.cols.n, dtype=bool)
        if self.by_row is not None:
            hits = [i for i, vals in self.by_row.items() if any(pred(v) for v in vals)]
            if hits:
                m[np.array(hits, dtype=np.int64)] = True
            return m
        hits = [f for f, vals in self.by_frame.items() if any(pred(v) for v in vals)]
        if hits:
            m |= np.isin(self.cols.frames, np.array(hits, dtype=np.int64))
        return m


def _values(by_frame: dict[int, list], get: Callable) -> dict[int, list]:
    """``get`` of each item per frame, items for which it is None left out (a field a layer lacks)."""
    out: dict[int, list] = {}
    for f, items in by_frame.items():
        vals = [v for v in map(get, items) if v is not None]
        if vals:
            out[f] = vals
    return out


def _typed(table: list, ftype: str) -> list:
    """Table entries as values of the field's type (addresses parsed once per distinct address)."""
    if ftype in (IPV4, IPV6):
        out = []
        for s in table:
            try:
                out.append(ipaddress.ip_address(s) if s else None)
            except ValueError:
                out.append(None)
        return out
    return table


def _vector(values: np.ndarray, ftype: str, op: str, v) -> np.ndarray:
    if op == "in":
        m = np.zeros(len(values), dtype=bool)
        for lo, hi in v:
            m |= (values >= lo) & (values <= hi)
        return m
    if ftype == BOOL:
        values = values.astype(np.int64)
    if op == "==":
        return values == v
    if op == "!=":
        return values != v
    if op == "<":
        return values < v
    if op == ">":
        return values > v
    if op == "<=":
        return values <= v
    if op == ">=":
        return values >= v
    raise AssertionError(op)


def _scalar_pred(ftype: str, op: str, v) -> Callable[[object], bool]:
    """A predicate over one Python value of the field's type (table entries, sparse values)."""
    if ftype in (IPV4, IPV6):
        def addr_pred(a: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
            if a is None or a.version != (4 if ftype == IPV4 else 6):
                return False
            if op == "in":
                return any(_addr_cmp(a, lo, ">=") and _addr_cmp(a, hi, "<=") for lo, hi in v)
            return _addr_cmp(a, v, op)
        return addr_pred
    if op == "contains":
        if ftype == BYTES:
            return lambda x: isinstance(x, bytes) and v in x
        return lambda x: isinstance(x, str) and v in x
    if op == "matches":
        return lambda x: isinstance(x, str) and v.search(x) is not None
    if op == "in":
        return lambda x: any(lo <= x <= hi for lo, hi in v)
    if ftype == STRING or ftype == BYTES:
        return {"==": lambda x: x == v, "!=": lambda x: x != v}[op]
    if ftype == TIME:
        v = float(v)
    return {"==": lambda x: x == v, "!=": lambda x: x != v, "<": lambda x: x < v, ">": lambda x: x > v,
            "<=": lambda x: x <= v, ">=": lambda x: x >= v}[op]


def _addr_cmp(a, net, op: str) -> bool:
    """Wireshark compares an address with a prefix by membership for ==/!= and by value
    (network address; broadcast address for the upper bound of a range) otherwise."""
    if op == "==":
        return a in net
    if op == "!=":
        return a not in net
    lo, hi = int(net.network_address), int(net.broadcast_address)
    x = int(a)
    return {"<": x < lo, ">": x > hi, "<=": x <= hi, ">=": x >= lo}[op]


def _nh_of(r: FrameRow) -> int:
    """ESP next header from a FrameRow's Info ("ESP seq 5 next IPv4"): live rows are objects; a
    MALFORMED row's IP protocol field (the row store keeps it in the same slot)."""
    if r.kind == "MALFORMED":
        return -1 if r.ip_proto is None else r.ip_proto
    if r.kind != "ESP" or " next " not in r.info:
        return -1
    name = r.info.split(" next ", 1)[1].split()[0]
    for n, v in inner_mod.PROTO_NAMES.items():
        if v == name:
            return n
    return int(name) if name.isdigit() else -1


def quoted_values(q: QuotedPacket, name: str) -> list:
    """Values of field ``name`` in the ESP packet an ICMP error quotes, as tshark dissects it: the
    ESP header, its next header once decrypted, and every layer of the decrypted packet (its
    IP header, transport header, DNS, and what it quotes in turn if it is an ICMP error)."""
    fam, _, sub = name.partition(".")
    if fam == "esp":
        if not sub:
            return [True]
        if sub == "spi":
            return [q.spi]
        if sub == "sequence":
            return [q.seq]
        if sub == "protocol":
            return [q.next_header] if q.next_header is not None else []
        return []
    s = q.inner
    if s is None:
        return []
    out: list = []
    l4 = bool(s.flags & inner_mod.L4)
    ql4 = bool(s.qver and s.qflags & inner_mod.L4)
    if fam in ("ip", "ipv6"):
        want = 4 if fam == "ip" else 6
        for ver, src, dst, proto in ((s.ver, s.src, s.dst, s.proto), (s.qver, s.qsrc, s.qdst, s.qproto)):
            if ver != want:
                continue
            if not sub:
                out.append(True)
            elif sub in ("src", "dst", "addr"):
                out += [ipaddress.ip_address(a) for a in ((src, dst) if sub == "addr" else (src if sub == "src" else dst,))]
            elif sub in ("proto", "nxt"):
                out.append(proto)
            elif sub == "version":
                out.append(ver)
        return out
    if fam in ("udp", "tcp"):
        pn = 17 if fam == "udp" else 6
        for has, proto, sp, dp in ((l4, s.proto, s.sport, s.dport), (ql4, s.qproto, s.qsport, s.qdport)):
            if has and proto == pn:
                out += {"": [True], "srcport": [sp], "dstport": [dp], "port": [sp, dp]}.get(sub, [])
        if fam == "tcp" and l4 and s.proto == 6 and sub.startswith("flags"):
            bit = {"flags": None, "flags.syn": 0x02, "flags.ack": 0x10, "flags.fin": 0x01, "flags.reset": 0x04,
                   "flags.push": 0x08}.get(sub, 0)
            if bit is None:
                out.append(s.tcpflags)
            elif bit:
                out.append(bool(s.tcpflags & bit))
        return out
    if fam in ("icmp", "icmpv6"):
        pn = 1 if fam == "icmp" else 58
        for has, proto, t, c in ((l4, s.proto, s.itype, s.icode), (ql4, s.qproto, s.qitype, s.qicode)):
            if has and proto == pn:
                out += {"": [True], "type": [t], "code": [c]}.get(sub, [])
        if sub in ("ident", "seq") and l4 and s.proto == pn == 1 and s.itype in ECHO_TYPES:
            out.append(s.sport if sub == "ident" else s.dport)
        return out
    if fam == "dns" and s.flags & inner_mod.DNS:
        return {"": [True], "id": [s.dns_id], "flags.response": [bool(s.flags & inner_mod.DNS_RESPONSE)],
                "qry.type": [s.dns_qtype] if s.dns_qtype else [],
                "qry.name": [s.dns_name] if s.dns_name else []}.get(sub, [])
    if fam == "udpencap" and not sub:
        if (l4 and s.proto == 17 and 4500 in (s.sport, s.dport)) or (
                ql4 and s.qproto == 17 and 4500 in (s.qsport, s.qdport)):
            return [True]
    return []


_IKE_HDR = struct.Struct("!8s8sBBBBII")


def quoted_ike_field(data: bytes, sub: str, msg: IkeMessage | None = None) -> list:
    """Values of ``isakmp.<sub>`` in the IKE message an ICMP error quotes (``data`` from its
    28-octet header, RFC 7296 §3.1, to the end of the quote; ``msg`` the session's decoding of it
    when tshark dissects its payloads, :func:`~ipsecscope.decode.quoted.quoted_ike_dissected`).
    tshark (4.0) shows a message cut off earlier by its header alone, without the Length field;
    otherwise every payload header the quote holds and the payloads it holds whole."""
    spi_i, spi_r, np_, ver, exch, flags, msg_id, length = _IKE_HDR.unpack_from(data)
    full = quoted_ike_dissected(data)
    if sub == "nextpayload":
        if not full or msg is None:
            return [np_]
        # the next-payload field of every payload header the quote holds (a payload cut short
        # shows its generic header only), then what the decoded payloads hold
        vals = [np_]
        ptype, off, n = np_, 28, min(len(data), length)
        while ptype and off + 4 <= n:
            vals.append(data[off])
            plen = data[off + 2] << 8 | data[off + 3]
            if plen < 4:
                break
            ptype, off = data[off], off + plen
        for p in msg.payloads:
            _sa_substructures(p, vals)
        _inner_chain(msg, vals)
        return vals
    if sub == "notify.msgtype":
        return ike_field(msg, sub) if full and msg is not None else []
    return {"ispi": [spi_i], "rspi": [spi_r], "exchangetype": [exch], "messageid": [msg_id], "version": [ver],
            "flags": [flags], "length": [length] if full else []}.get(sub, [])


def _inner_chain(msg: IkeMessage, vals: list) -> None:
    """The next-payload fields of a decrypted SK payload's chain (0 ending it), SA substructures too."""
    inner = list(msg.inner)
    for i, p in enumerate(inner):
        vals.append(inner[i + 1].type if i + 1 < len(inner) else 0)
        _sa_substructures(p, vals)


def _sa_substructures(p, vals: list) -> None:
    if isinstance(p, SaPayload):
        props = p.proposals
        for j, prop in enumerate(props):
            vals.append(2 if j + 1 < len(props) else 0)
            n = len(prop.transforms)
            vals.extend([3] * (n - 1) + [0] if n else [])


def ike_field(msg: IkeMessage, sub: str) -> list:
    """Values of ``isakmp.<sub>`` in one message, as tshark shows them (decrypted payloads too)."""
    h = msg.header
    if sub == "ispi":
        return [h.spi_i]
    if sub == "rspi":
        return [h.spi_r]
    if sub == "exchangetype":
        return [h.exchange]
    if sub == "messageid":
        return [h.msg_id]
    if sub == "version":
        return [h.major << 4 | h.minor]
    if sub == "flags":
        return [h.flags]
    if sub == "length":
        return [h.length]
    if sub == "nextpayload":
        # The header's and every payload's Next Payload field: the types of all payloads that
        # follow (RFC 7296 §3.2), inside a decrypted SK payload too, and 0 ending each chain.
        # An SA payload's proposal and transform substructures carry the field too (RFC 7296
        # §3.3.1/§3.3.2, RFC 2408 §3.5/§3.6: 2 "more proposals" / 3 "more transforms", 0 last).
        vals = [h.next_payload]
        chain = list(msg.payloads)
        for i, p in enumerate(chain):
            if isinstance(p, SkPayload):
                vals.append(p.first_payload)
            else:
                vals.append(chain[i + 1].type if i + 1 < len(chain) else 0)
                _sa_substructures(p, vals)
        _inner_chain(msg, vals)
        return vals
    if sub == "notify.msgtype":
        return [p.notify_type for p in (*msg.payloads, *msg.inner) if isinstance(p, NotifyPayload)]
    return []
