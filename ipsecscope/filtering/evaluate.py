"""A filter's tree over a window's columns: ``and``/``or``/``not`` as mask operations, each test
as the comparison of every occurrence of its field (vectorised over columns, a predicate per
distinct table entry or sparse value)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import numpy as np

from ..model.filter import BOOL, BYTES, FIELDS, IPV4, IPV6, STRING, TIME, And, Node, Not, Or, Test
from .fields import _FieldCols
from .window import _Occ, _Sparse


class _Cols(_FieldCols):
    """A window's columns, its fields' occurrences and the filter evaluated over them."""

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
