"""One window of rows as numpy columns: the row records, the outer layers' presence masks, and
each row's inner record (joined by frame number when a filter first asks for an inner field).

``rowstore.RowStore`` records are viewed as they are packed (one copy of the window's bytes);
``FrameRow`` objects (live mode's ring, plain lists in tests) are packed the same way first.
``conversations`` counts over these columns too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..decode import inner as inner_mod
from ..decode.inner import InnerStore
from ..model.filter import Filter
from ..model.packets import FrameRow
from ..rowstore import RowStore, row_dtype
from . import side
from .source import Source

ROW_DTYPE = row_dtype()
_INNER_CODES = {"q": "<i8", "B": "u1", "H": "<u2", "I": "<u4"}
INNER_DTYPE = np.dtype([(name, _INNER_CODES[code]) for name, code in
                        zip(inner_mod.FIELDS, inner_mod.REC.format.lstrip("<"), strict=True)])
assert INNER_DTYPE.itemsize == inner_mod.REC_SIZE
NONE64 = (1 << 64) - 1


class _InnerCols:
    def __init__(self, store: InnerStore) -> None:
        self.store = store
        self.addrs = list(store.addrs)
        self.dns_names = dict(store.dns_names)
        self.quoted = dict(store.quoted)
        self.nested = dict(store.nested)
        self.v6_ext = dict(store.v6_ext)
        self.qv6_ext = dict(store.qv6_ext)


# An occurrence of a field: values (or table indexes) and where they are present.
@dataclass(slots=True)
class _Occ:
    values: np.ndarray
    present: np.ndarray
    table: list | None = None  # values index this table (addresses, strings)


class _Window:
    """The columns of rows [lo, hi): the records, the outer layers, the inner records joined."""

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
        self.bad_esp, self.bad_ah, self.bad_ip, self.bad_ipver = self._bad_rows(rows, lo)
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
        # An AH+ESP bundle (RFC 4301 §4.1 transport adjacency, §4.5) is an AH row then an ESP row
        # of the same frame: the IP header in front of both says AH, and the frame carries both
        # layers, so each row answers for the other's fields too (tshark: ``ah && esp``).
        self.bundle_ah, self.bundle_esp = none, none
        if self.is_ah.any():
            fr = self.arr["frame"]
            pair = self.is_esp[1:] & self.is_ah[:-1] & (fr[1:] == fr[:-1])
            if pair.any():
                self.bundle_ah = np.concatenate((pair, [False]))
                self.bundle_esp = np.concatenate(([False], pair))
                self.out_proto[self.bundle_esp] = 51
        self.frames = self.arr["frame"]
        self.inner = inner
        self._joined = False
        self.has_inner = none
        self.iarr: Mapping[str, np.ndarray] | None = None  # inner columns by name (InnerStore.columns)
        self._cache: dict[str, list[_Occ]] = {}
        self._layer_masks: dict[str, np.ndarray] | None = None

    def bundle_partner(self, col: np.ndarray) -> np.ndarray:
        """``col`` with each bundled row's value replaced by its frame's other row's (the AH row
        gets its ESP row's, the ESP row its AH row's); other rows keep theirs."""
        out = col.copy()
        if self.bundle_ah is not self.none:
            out[:-1][self.bundle_ah[:-1]] = col[1:][self.bundle_ah[:-1]]
            out[1:][self.bundle_esp[1:]] = col[:-1][self.bundle_esp[1:]]
        return out

    def _bad_rows(self, rows, lo: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """MALFORMED rows whose ESP / AH header was the broken one (the row's layer, its Info's first
        word: few rows): tshark still shows that layer, and its SPI when the row kept one. ESP in UDP
        shows only with its SPI (tshark's UDP encapsulation reads 4 octets to tell ESP from IKE).
        And those whose IP header was too broken to give addresses: the IP layer the link said (4,
        6: tshark's ip / ipv6) and the version it holds (ip.version), decode.ip.broken_header."""
        from ..decode.ip import broken_header

        esp, ah = np.zeros(self.n, dtype=bool), np.zeros(self.n, dtype=bool)
        fam, ver = np.zeros(self.n, dtype=np.int64), np.zeros(self.n, dtype=np.int64)
        nh, spi, src = self.arr["nh"], self.arr["spi"], self.arr["src"]
        for i in np.flatnonzero(self.is_bad).tolist():
            layer, _, reason = rows[lo + i].info.partition(": ")
            if layer == "esp":
                esp[i] = nh[i] in (50, 51) or spi[i] >= 0
            elif layer == "ah":
                ah[i] = True
            elif layer == "ip" and not src[i]:
                fam[i], ver[i] = broken_header(reason)
        return esp, ah, fam, ver

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

    # -- side tables (few frames: dicts cut to this window, side.py) --------------------------------

    def _tunnel_hops(self) -> dict[int, tuple[side.TunnelHop, ...]]:
        return side.tunnel_hops(self.src.tunnels, self.frames)

    def _rfc8229_rows(self, cand: np.ndarray) -> np.ndarray:
        return side.rfc8229_rows(self.src.tcp_tuples, self.addrs, self.arr, cand)

    def _tcp_flags(self) -> tuple[np.ndarray, np.ndarray]:
        return side.tcp_flags(self.src.tcp_flags, self.frames)

    def _v6_chains(self, tunnelled: bool = False) -> dict[int, side.V6Chain]:
        """The outer IPv6 header's extension headers per frame, or (``tunnelled``) those of the
        IPv6 header a tunnel carries in front of the IPsec."""
        return side.v6_chains(self.src.tunnel_v6_ext if tunnelled else self.src.v6_ext, self.frames)

    def _row_v6_chains(self) -> dict[int, side.V6Chain]:
        """The chains of the rows' own IPv6 headers: the tunnelled one where the frame came
        through a tunnel (the outer header is then the tunnel's), else the outer one."""
        outer, tunnelled = self._v6_chains(), self._v6_chains(tunnelled=True)
        if not self.src.tunnels:
            return outer
        hops = self._tunnel_hops()
        return {**{f: c for f, c in outer.items() if f not in hops}, **tunnelled}

    def _v6_fixed_nxt(self, out_proto: np.ndarray, where: np.ndarray, chains: dict | None = None) -> np.ndarray:
        return side.v6_fixed_nxt(self._v6_chains() if chains is None else chains, self.frames, out_proto, where)

    def _inner_v6_chains(self, quoted: bool = False) -> dict[int, side.V6Chain]:
        """The extension-header chains of the recorded (decrypted or plain) packets of the window,
        or (``quoted``) of the IPv6 packets their ICMPv6 errors quote."""
        if self.inner is None:
            return {}
        return side.v6_chains(self.inner.qv6_ext if quoted else self.inner.v6_ext, self.frames)

    def _nested(self, pick: Callable) -> dict[int, list]:
        return side.nested_layers(self.inner.nested if self.inner is not None else None, self.frames, pick)

    def _ike_values(self, sub: str) -> dict[int, list]:
        return side.ike_values(self.src.ike, self.inner.quoted if self.inner is not None else None,
                               self.src.quoted, self.frames, sub)

    def _ike_sa_map(self) -> dict[int, str]:
        if type(self.src.rows) is RowStore:
            return self.ike_sa
        rows = self.src.rows
        return {i - self.lo: rows[i].ike_sa for i in range(self.lo, self.hi) if rows[i].ike_sa is not None}

    # Sparse fields: a dict of values per frame (or per row offset) becomes an occurrence list
    # evaluated in Python (few frames have them).
    def _enc_headers(self) -> dict[int, tuple[int, int]]:
        """frame -> (SPI, flags) of the window's OpenBSD enc(4) frames (decode.demux.Decoder.enc)."""
        store = self.src.inner
        enc = store.enc if store is not None else None
        if not enc or not self.n:
            return {}
        lo, hi = int(self.frames[0]), int(self.frames[-1])
        if len(enc) < hi - lo:
            return {f: h for f, h in enc.items() if lo <= f <= hi}
        return {f: h for f in range(lo, hi + 1) if (h := enc.get(f)) is not None}

    def _sparse_frames(self, by_frame: dict[int, list]) -> list[_Occ]:
        return [_Sparse(by_frame, None, self)]  # type: ignore[list-item]

    def _sparse_rows(self, by_row: dict[int, list]) -> list[_Occ]:
        return [_Sparse(None, by_row, self)]  # type: ignore[list-item]


class _Sparse:
    """Values per frame (or per row offset) for fields few frames have."""

    def __init__(self, by_frame: dict[int, list] | None, by_row: dict[int, list] | None, cols: _Window) -> None:
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
