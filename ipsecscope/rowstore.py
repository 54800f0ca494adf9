"""A compact, append-only store of :class:`~ipsecscope.model.packets.FrameRow` for big captures.

A million ``FrameRow`` objects cost ~380 bytes each (the object, its boxed ints and float, an
``info`` string per row). Here each row is one fixed-size record in a ``bytearray`` (61 bytes):
addresses are indexes into a table of distinct strings, kind and status are small codes, and the
``info`` line of ESP/AH/NAT-keepalive rows — almost all rows of a big capture — is not stored at
all: it is rebuilt from the sequence number and next header when a row is read. Other rows (IKE,
malformed) keep their ``info`` and ``ike_sa`` in small side dicts.

Reading gives ordinary ``FrameRow`` objects (equal to the ones that were stored), so consumers
index, slice, iterate and bisect it like the list it replaces. Rows are only appended (or one
replaced in place, see ``__setitem__``); a row becomes visible with one ``bytearray`` extend, so a
reader in another thread never sees half a row.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable, Iterator, MutableSequence, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, overload

from .capture._fastnew import fast_constructor
from .model.packets import FrameRow, link_ethertype, link_text

if TYPE_CHECKING:
    import numpy as np

# The record, declared once: (field, struct code), little-endian, packed. The struct packs and
# reads one row; row_dtype() is the same layout for numpy (filters, the TUI's activity, the ESP
# runs that pack a run's rows at once). child: CHILD SA id, nh: next header (ESP/AH), EtherType (a
# non-IP OTHER row), the outer IP protocol field read (MALFORMED).
ROW_LAYOUT = (("frame", "q"), ("ts", "d"), ("kind", "B"), ("src", "I"), ("dst", "I"), ("sport", "H"),
              ("dport", "H"), ("length", "I"), ("spi", "q"), ("seq", "Q"), ("status", "B"), ("child", "q"),
              ("nh", "h"))
_REC = struct.Struct("<" + "".join(code for _, code in ROW_LAYOUT))
_FIELDS = tuple(name for name, _ in ROW_LAYOUT)
REC_SIZE = _REC.size
_NUMPY_CODES = {"q": "<i8", "Q": "<u8", "d": "<f8", "B": "u1", "I": "<u4", "H": "<u2", "h": "<i2"}
_NONE64 = (1 << 64) - 1  # "no sequence number" (seq is unsigned: 64-bit ESN values fit)

KIND_IKE, KIND_ESP, KIND_AH, KIND_NATKA, KIND_MALFORMED, KIND_OTHER = range(6)
_KINDS = ["IKE", "ESP", "AH", "NAT-KA", "MALFORMED", "OTHER"]
STATUS_CODES = {"": 0, "decrypted": 1, "icv-bad": 2, "no-key": 3, "malformed": 4}
_KA_INFO = "NAT-keepalive (RFC 3948 §2.3)"
_CHUNK = 4096  # rows decoded per slice while iterating (no buffer export outlives a step)

_make_row = fast_constructor(FrameRow)

_PROTO_NAMES = {1: "ICMP", 4: "IPv4", 6: "TCP", 17: "UDP", 41: "IPv6", 47: "GRE", 50: "ESP", 58: "ICMPv6",
                59: "none"}


def row_dtype() -> np.dtype:
    """The records as a numpy structured dtype, field for field ``ROW_LAYOUT`` (numpy is imported
    here, where rows are read in bulk, not with this module)."""
    import numpy as np

    return np.dtype([(name, _NUMPY_CODES[code]) for name, code in ROW_LAYOUT])


def proto_name(n: int) -> str:
    return _PROTO_NAMES.get(n, str(n))


def esp_info(seq: int, next_header: int | None) -> str:
    """The Info column of an ESP row."""
    return f"ESP seq {seq}" if next_header is None else f"ESP seq {seq} next {proto_name(next_header)}"


def ah_info(seq: int, next_header: int) -> str:
    return f"AH seq {seq} next {proto_name(next_header)}"


class RowStore(Sequence[FrameRow]):
    """``Sequence[FrameRow]`` kept as packed records; see the module docstring."""

    def __init__(self, limit: int | None = None) -> None:
        self._buf = bytearray()
        self._n = 0
        self.link_rows = False  # holds a non-IP row (ARP, LLDP): set by _encode
        # Rows past ``limit`` are only counted (``dropped``): memory stays bounded on any input, and
        # a front end that shows no packet list (``sas``, ``findings``) keeps none (limit 0).
        self.limit = sys.maxsize if limit is None else limit
        self.dropped = 0
        self._addrs: list[str] = [""]
        self._addr_ix: dict[str, int] = {"": 0}
        self._kinds = list(_KINDS)
        self._kind_ix = {k: i for i, k in enumerate(_KINDS)}
        self._statuses = list(STATUS_CODES)
        self._status_ix = dict(STATUS_CODES)
        self._info: dict[int, str] = {}  # row position -> info, where it is not derived
        self._ike_sa: dict[int, str] = {}  # row position -> IkeSa.key
        # frame -> Info of its decrypted inner packet (a decode.inner.InnerStore): a decrypted ESP
        # row's Info is "ESP seq N ▸ <inner packet>", formatted only when the row is read.
        self.inner = None

    # -- writing --------------------------------------------------------------------------------

    def addr(self, s: str) -> int:
        """Index of address ``s`` in the address table (added when new)."""
        i = self._addr_ix.get(s)
        if i is None:
            i = self._addr_ix[s] = len(self._addrs)
            self._addrs.append(s)
        return i

    def status_code(self, status: str) -> int:
        i = self._status_ix.get(status)
        if i is None:
            i = self._status_ix[status] = len(self._statuses)
            self._statuses.append(status)
        return i

    def add_esp(self, frame: int, ts: float, src: int, dst: int, sport: int, dport: int, length: int,
                spi: int, seq: int, status: int, child_sa: int | None, next_header: int | None) -> None:
        """The hot path: one ESP row (``src``/``dst`` from :meth:`addr`, ``status`` from
        :meth:`status_code`); its info line is derived, not stored."""
        if self._n >= self.limit:
            self.dropped += 1
            return
        self._buf += _REC.pack(frame, ts, KIND_ESP, src, dst, sport, dport, length, spi, seq, status,
                               -1 if child_sa is None else child_sa, -1 if next_header is None else next_header)
        self._n += 1

    def add_packed(self, records: bytes | memoryview, n: int) -> None:
        """``n`` rows already packed as this store's records (``session_fast`` packs a run of ESP
        rows at once); past ``limit`` they are only counted, as :meth:`add_esp` does."""
        room = max(self.limit - self._n, 0)
        if n > room:
            self.dropped += n - room
            n = room
            records = records[:n * REC_SIZE]
        self._buf += records
        self._n += n

    def _encode(self, row: FrameRow, pos: int) -> bytes:
        kind = self._kind_ix.get(row.kind)
        if kind is None:
            kind = self._kind_ix[row.kind] = len(self._kinds)
            self._kinds.append(row.kind)
        nh = -1
        if row.kind in ("ESP", "AH") and row.seq is not None:
            info = row.info
            if info.startswith(_KINDS[kind] + f" seq {row.seq}"):
                tail = info[len(f"{row.kind} seq {row.seq}"):]
                if tail.startswith(" next "):
                    name = tail[6:]
                    nh = next((n for n, v in _PROTO_NAMES.items() if v == name), -1)
                    if nh < 0 and name.isdigit() and int(name) < 256:
                        nh = int(name)
        elif kind == KIND_MALFORMED and row.ip_proto is not None:
            nh = row.ip_proto  # the outer IP protocol field it could read (unused slot otherwise)
        elif kind == KIND_OTHER and row.info and not row.src and (et := link_ethertype(row.info)) is not None \
                and et != 0xFFFF:
            # A frame that is not IP: its EtherType in the next-header slot (unused for OTHER
            # rows), as a signed 16-bit value; the text is derived from it when read.
            nh = et - 0x10000 if et & 0x8000 else et
            self.link_rows = True  # the packet list shows MACs (17 columns) for such rows
        self._info.pop(pos, None)
        self._ike_sa.pop(pos, None)
        enc = _REC.pack(
            row.frame, row.ts, kind, self.addr(row.src), self.addr(row.dst), row.sport, row.dport, row.length,
            -1 if row.spi is None else row.spi, _NONE64 if row.seq is None else row.seq,
            self.status_code(row.status), -1 if row.child_sa is None else row.child_sa, nh)
        if self._derived_info(kind, row.seq, nh) != row.info:
            self._info[pos] = row.info
        if row.ike_sa is not None:
            self._ike_sa[pos] = row.ike_sa
        return enc

    def append(self, row: FrameRow) -> None:
        if self._n >= self.limit:
            self.dropped += 1
            return
        enc = self._encode(row, self._n)  # side dicts first: a reader sees the row complete
        self._buf += enc
        self._n += 1

    def insert(self, i: int, row: FrameRow) -> None:
        """A row at position ``i`` (a record decoded late, for an earlier frame: rare, O(rows))."""
        if i >= self._n:
            self.append(row)
            return
        if self._n >= self.limit:
            self.dropped += 1
            return
        self._info = {(k + 1 if k >= i else k): v for k, v in self._info.items()}
        self._ike_sa = {(k + 1 if k >= i else k): v for k, v in self._ike_sa.items()}
        self._buf[i * REC_SIZE:i * REC_SIZE] = self._encode(row, i)
        self._n += 1

    def __setitem__(self, i: int, row: FrameRow) -> None:
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("row index out of range")
        self._buf[i * REC_SIZE:(i + 1) * REC_SIZE] = self._encode(row, i)

    def on_event(self, ev: dict) -> None:
        """A tracker listener: a flow that moves to another CHILD SA (an inference pairing undone,
        an inferred SA's flow bound to the exchange that negotiated it: state.book.attach_flow)
        takes its rows along, so a frame's CHILD SA is the one its flow is on (`packets`,
        ``ipsecscope.child`` filters), not the one it was on when the frame was read."""
        if ev.get("event") == "esp_flow_moved":
            self.rebind(ev["src"], ev["dst"], ev["spi"], ev["protocol"], ev["from_child_sa"], ev["child_sa"],
                        ev["first_frame"])

    def rebind(self, src: str, dst: str, spi: int, protocol: str, old: int, new: int, first_frame: int) -> None:
        """Rows of the flow (``src``, ``dst``, ``spi``, ``protocol``) from ``first_frame`` on that
        name CHILD SA ``old`` name ``new``. Rows are in frame order: a binary search finds the
        first, numpy rewrites the rest (a move is rare; imported here only)."""
        s, d, kind = self._addr_ix.get(src), self._addr_ix.get(dst), self._kind_ix.get(protocol)
        if s is None or d is None or kind is None or not self._n:
            return
        lo, hi = 0, self._n
        while lo < hi:
            mid = (lo + hi) // 2
            if self.frame_at(mid) < first_frame:
                lo = mid + 1
            else:
                hi = mid
        import numpy as np

        dt = row_dtype()
        view = memoryview(self._buf)[lo * REC_SIZE:self._n * REC_SIZE]
        try:
            a = np.frombuffer(view, dtype=dt)
            a["child"][(a["kind"] == kind) & (a["src"] == s) & (a["dst"] == d) & (a["spi"] == spi)
                       & (a["child"] == old)] = new
            del a
        finally:
            view.release()  # the buffer grows again at the next row

    # -- reading --------------------------------------------------------------------------------

    def _derived_info(self, kind: int, seq: int | None, nh: int) -> str:
        if kind == KIND_ESP and seq is not None:
            return esp_info(seq, None if nh < 0 else nh)
        if kind == KIND_AH and seq is not None and nh >= 0:
            return ah_info(seq, nh)
        if kind == KIND_NATKA:
            return _KA_INFO
        if kind == KIND_OTHER and nh != -1:
            return link_text(nh & 0xFFFF)
        return ""

    def _row(self, i: int, rec: tuple) -> FrameRow:
        frame, ts, kind, src, dst, sport, dport, length, spi, seq, status, child, nh = rec
        if seq == _NONE64:
            seq = None
        info = self._info.get(i)
        if info is None:
            inner = self.inner.info(frame) if kind == KIND_ESP and status == 1 and self.inner is not None else None
            if inner:
                info = f"ESP seq {seq} ▸ {inner}"
            elif kind == KIND_ESP:
                info = f"ESP seq {seq}" if nh < 0 else f"ESP seq {seq} next {_PROTO_NAMES.get(nh) or nh}"
            elif kind == KIND_OTHER and nh == -1 and self.inner is not None:
                info = self.inner.info(frame) or ""
            else:
                info = self._derived_info(kind, seq, nh)
        addrs = self._addrs
        return _make_row(frame, ts, self._kinds[kind], addrs[src], addrs[dst], sport, dport, length,
                         None if spi < 0 else spi, seq, info, self._statuses[status], self._ike_sa.get(i),
                         None if child < 0 else child, nh if kind == KIND_MALFORMED and nh >= 0 else None)

    def __len__(self) -> int:
        return self._n

    def bundle_ah_rows(self, lo: int, hi: int) -> np.ndarray:
        """:func:`model.packets.bundle_ah_rows` over the records, as an array (no row is built)."""
        import numpy as np

        a = np.frombuffer(bytes(self._buf[lo * REC_SIZE:hi * REC_SIZE]), dtype=row_dtype())
        k, f = a["kind"], a["frame"]
        return np.flatnonzero((k[:-1] == KIND_AH) & (k[1:] == KIND_ESP) & (f[:-1] == f[1:])) + lo

    @overload
    def __getitem__(self, i: int) -> FrameRow: ...

    @overload
    def __getitem__(self, i: slice) -> list[FrameRow]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            if step == 1:
                return list(self._range(start, max(start, stop)))
            return [self[k] for k in range(start, stop, step)]
        n = self._n
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("row index out of range")
        return self._row(i, _REC.unpack_from(self._buf, i * REC_SIZE))

    def frame_at(self, i: int) -> int:
        """Frame number of row ``i`` without building the row."""
        return struct.unpack_from("<q", self._buf, i * REC_SIZE)[0]

    def __iter__(self) -> Iterator[FrameRow]:
        return self._range(0, None)

    def _range(self, i: int, stop: int | None) -> Iterator[FrameRow]:
        """Rows ``i`` up to ``stop`` (None: to the end, including rows appended meanwhile)."""
        # _row() inlined with everything bound locally: consumers (timeline, filters) walk all rows.
        make, addrs, kinds, statuses = _make_row, self._addrs, self._kinds, self._statuses
        info_get, ike_get = self._info.get, self._ike_sa.get
        derived = self._derived_info
        esp_tail = [f" next {_PROTO_NAMES.get(nh) or nh}" for nh in range(256)]
        inner_info = self.inner.info if self.inner is not None else None
        while i < (self._n if stop is None else stop):
            end = min(self._n if stop is None else stop, i + _CHUNK)
            # A copy of the slice: no export of the growing buffer outlives this step.
            for frame, ts, kind, src, dst, sport, dport, length, spi, seq, status, child, nh in _REC.iter_unpack(
                    bytes(self._buf[i * REC_SIZE:end * REC_SIZE])):
                info = info_get(i)
                if info is None:
                    if kind == KIND_ESP and status == 1 and inner_info is not None and (ii := inner_info(frame)):
                        info = f"ESP seq {seq} ▸ {ii}"
                    elif kind == KIND_ESP:
                        info = f"ESP seq {seq}{esp_tail[nh]}" if nh >= 0 else f"ESP seq {seq}"
                    elif kind == KIND_OTHER and nh == -1 and inner_info is not None:
                        info = inner_info(frame) or ""
                    else:
                        info = derived(kind, None if seq == _NONE64 else seq, nh)
                yield make(frame, ts, kinds[kind], addrs[src], addrs[dst], sport, dport, length,
                           None if spi < 0 else spi, None if seq == _NONE64 else seq, info, statuses[status],
                           ike_get(i), None if child < 0 else child,
                           nh if kind == KIND_MALFORMED and nh >= 0 else None)
                i += 1

    def __bool__(self) -> bool:
        return self._n > 0

    def nbytes(self) -> int:
        """Approximate memory held (records + side tables), for benchmarks."""
        return len(self._buf) + 100 * (len(self._info) + len(self._ike_sa)) + 60 * len(self._addrs)


def follow_moves(rows: object) -> Callable[[dict], None]:
    """A tracker listener that moves a session's rows with a flow moved to another CHILD SA:
    :meth:`RowStore.on_event` for the store, the same over live mode's bounded ring of FrameRow
    objects (a MutableSequence), nothing for a session that keeps no rows."""
    if isinstance(rows, RowStore):
        return rows.on_event
    if not isinstance(rows, MutableSequence):
        return _ignore

    def on_event(ev: dict) -> None:
        if ev.get("event") != "esp_flow_moved":
            return
        key = (ev["src"], ev["dst"], ev["spi"], ev["protocol"], ev["from_child_sa"])
        for i, r in enumerate(rows):
            if (r.src, r.dst, r.spi, r.kind, r.child_sa) == key and r.frame >= ev["first_frame"]:
                rows[i] = replace(r, child_sa=ev["child_sa"])

    return on_event


def _ignore(ev: dict) -> None:
    pass


class NoRows:
    """The rows of a session that keeps none (``keep_rows=False``): adding is a no-op."""

    __slots__ = ()
    _addr_ix: dict[str, int] = {}

    def __len__(self) -> int:
        return 0

    def __getitem__(self, i: int) -> FrameRow:
        raise IndexError("this session keeps no packet rows (keep_rows=False)")

    def __iter__(self):
        return iter(())

    def append(self, row: FrameRow) -> None:
        pass

    def add_esp(self, *fields: object) -> None:
        pass

    def addr(self, a: str) -> int:
        return 0

    def status_code(self, name: str) -> int:
        return 0


class FrameOffsets:
    """frame number -> (path index, byte offset, link type), packed in two arrays (a dict of
    tuples costs ~200 bytes a frame). Frame numbers come in order (a second file's continue
    after the first's: Session.load)."""

    __slots__ = ("offset", "loc")

    def __init__(self) -> None:
        self.offset = array("q")  # index 0 unused: frames are 1-based
        self.loc = array("q")  # path index << 32 | link type (as 32 bits: a reader marks an undeclared
        # pcapng interface with a negative one)

    def set(self, frame: int, path_index: int, offset: int, linktype: int) -> None:
        while len(self.offset) <= frame:
            self.offset.append(-1)
            self.loc.append(0)
        self.offset[frame] = offset
        self.loc[frame] = path_index << 32 | (linktype & 0xFFFFFFFF)

    def get(self, frame: int) -> tuple[int, int, int] | None:
        if 0 <= frame < len(self.offset) and self.offset[frame] >= 0:
            loc = self.loc[frame]
            lt = loc & 0xFFFFFFFF
            return loc >> 32, self.offset[frame], lt - (1 << 32) if lt >> 31 else lt
        return None
