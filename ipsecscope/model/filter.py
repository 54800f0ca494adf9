"""A small filter language over :class:`~ipsecscope.model.packets.FrameRow`.

Used by the TUI's Packets filter bar and reusable by the CLI. Pure: stdlib only, no I/O.

Grammar (terms separated by spaces are ANDed; ``!term`` negates one term; ``key=a,b`` matches
either value)::

    ike | esp | ah | nat-ka | malformed | other      frame kind
    spi=0x1234abcd | spi=305441741                   ESP/AH SPI (hex with 0x, else decimal);
                                                     16 hex digits match an IKE SPI (either side)
    src=ADDR  dst=ADDR  host=ADDR                    address or CIDR (host = src or dst)
    port=N  sport=N  dport=N                         UDP/TCP port
    frame=N | frame=N-M                              frame number or inclusive range
    seq=N                                            ESP/AH sequence number
    child=N                                          CHILD SA id
    finding=CODE                                     evidence frames of findings with that code
                                                     (case-insensitive, trailing * = prefix)
    icv=bad | icv=ok                                 integrity failed / decrypted
    status=no-key|decrypted|icv-bad|malformed|replay|gap
    info=TEXT                                        substring of the info column (case-insensitive)

Example: ``esp spi=0xc254fe64 !icv=ok``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .packets import FrameRow

Predicate = Callable[[FrameRow], bool]

KINDS = {
    "ike": "IKE",
    "esp": "ESP",
    "ah": "AH",
    "nat-ka": "NAT-KA",
    "keepalive": "NAT-KA",
    "malformed": "MALFORMED",
    "other": "OTHER",
}
STATUSES = ("decrypted", "icv-bad", "no-key", "malformed", "replay", "gap")
KEYWORDS = (
    "spi", "src", "dst", "host", "port", "sport", "dport", "frame", "seq", "child", "finding", "icv",
    "status", "info",
)


class FilterError(ValueError):
    """The filter text could not be understood; the message names the term and what would work."""


@dataclass(slots=True)
class Filter:
    """A compiled filter: ``text`` as typed, ``terms`` one predicate per term (all must hold)."""

    text: str
    terms: list[Predicate] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.terms

    def __call__(self, row: FrameRow) -> bool:
        for term in self.terms:
            if not term(row):
                return False
        return True

    def indices(self, rows: Sequence[FrameRow], start: int = 0, stop: int | None = None) -> list[int]:
        """Positions in ``rows`` (not frame numbers) that match, in order."""
        stop = len(rows) if stop is None else stop
        if not self.terms:
            return list(range(start, stop))
        terms = self.terms
        out: list[int] = []
        append = out.append
        try:
            chunk = rows[start:stop]  # one bulk read: a session's RowStore decodes a slice at once
        except TypeError:  # a deque (live mode) has no slices
            chunk = [rows[i] for i in range(start, stop)]
        for i, row in enumerate(chunk, start):
            for term in terms:
                if not term(row):
                    break
            else:
                append(i)
        return out


def _int(value: str, what: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise FilterError(f"{what}={value!r} is not a number (use decimal or 0x-hex)") from None


def _addr(value: str, what: str) -> Callable[[str], bool]:
    try:
        if "/" in value:
            net = ipaddress.ip_network(value, strict=False)
            # A capture has few distinct addresses and millions of rows: decide once per address.
            memo: dict[str, bool] = {}

            def in_net(a: str) -> bool:
                hit = memo.get(a)
                if hit is None:
                    try:
                        hit = ipaddress.ip_address(a) in net
                    except ValueError:
                        hit = False
                    memo[a] = hit
                return hit

            return in_net
        want = str(ipaddress.ip_address(value))
    except ValueError:
        raise FilterError(f"{what}={value!r} is not an IP address or CIDR prefix") from None
    return lambda a: a == want


def _term(word: str, findings: Mapping[str, Iterable[int]]) -> Predicate:
    low = word.lower()
    if low in KINDS:
        kind = KINDS[low]
        return lambda r: r.kind == kind
    if "=" not in word:
        raise FilterError(
            f"unknown filter term {word!r}; use ike, esp, ah, nat-ka, malformed or key=value with "
            f"key one of {', '.join(KEYWORDS)}"
        )
    key, _, value = word.partition("=")
    key = key.lower()
    if not value:
        raise FilterError(f"{key}= needs a value")
    if key == "spi":
        digits = value[2:] if value.lower().startswith("0x") else value
        if len(digits) == 16:
            # An 8-octet IKE SPI: FrameRow.ike_sa is "<spi_i hex>_<spi_r hex>" (IkeSa.key).
            spi_hex = digits.lower()
            _int("0x" + spi_hex, key)
            return lambda r: r.ike_sa is not None and spi_hex in r.ike_sa.split("_")
        if not value.isdigit() and not value.lower().startswith("0x"):
            value = "0x" + value  # SPIs are usually written in hex: accept "c254fe64"
        spi = _int(value, key)
        return lambda r: r.spi == spi
    if key in ("src", "dst", "host"):
        match = _addr(value, key)
        if key == "src":
            return lambda r: match(r.src)
        if key == "dst":
            return lambda r: match(r.dst)
        return lambda r: match(r.src) or match(r.dst)
    if key in ("port", "sport", "dport"):
        port = _int(value, key)
        if key == "sport":
            return lambda r: r.sport == port
        if key == "dport":
            return lambda r: r.dport == port
        return lambda r: r.sport == port or r.dport == port
    if key == "frame":
        if "-" in value:
            lo_s, _, hi_s = value.partition("-")
            lo, hi = _int(lo_s, key), _int(hi_s, key)
            return lambda r: lo <= r.frame <= hi
        n = _int(value, key)
        return lambda r: r.frame == n
    if key == "seq":
        n = _int(value, key)
        return lambda r: r.seq == n
    if key == "child":
        n = _int(value, key)
        return lambda r: r.child_sa == n
    if key == "finding":
        want = value.upper()
        if want.endswith("*"):
            codes = [c for c in findings if c.upper().startswith(want[:-1])]
        else:
            codes = [c for c in findings if c.upper() == want]
        frames: set[int] = set()
        for c in codes:
            frames.update(findings[c])
        return lambda r: r.frame in frames
    if key == "icv":
        v = value.lower()
        if v in ("bad", "fail", "failed"):
            return lambda r: r.status == "icv-bad"
        if v in ("ok", "good"):
            return lambda r: r.status == "decrypted"
        raise FilterError(f"icv={value!r}: use icv=bad or icv=ok")
    if key == "status":
        v = value.lower()
        if v not in STATUSES:
            raise FilterError(f"status={value!r}: use one of {', '.join(STATUSES)}")
        return lambda r: r.status == v
    if key == "info":
        needle = value.lower()
        return lambda r: needle in r.info.lower()
    raise FilterError(f"unknown filter key {key!r}; use one of {', '.join(KEYWORDS)}")


def _any(preds: list[Predicate]) -> Predicate:
    return lambda r: any(p(r) for p in preds)


def _negate(p: Predicate) -> Predicate:
    return lambda r: not p(r)


def compile_filter(text: str, findings: Mapping[str, Iterable[int]] | None = None) -> Filter:
    """Compile ``text``; ``findings`` maps a finding code to its evidence frames (for ``finding=``).

    Raises :class:`FilterError` with a message that names the bad term.
    """
    findings = findings or {}
    flt = Filter(text=text)
    for word in text.split():
        neg = word.startswith("!")
        if neg:
            word = word[1:]
            if not word:
                raise FilterError("'!' must be followed by a term, e.g. !esp")
        if "=" in word and "," in word:
            # key=a,b,c: any of the values (OR inside a term, AND between terms)
            key, _, values = word.partition("=")
            alts = [_term(f"{key}={v}", findings) for v in values.split(",") if v]
            if not alts:
                raise FilterError(f"{key}= needs a value")
            pred = _any(alts)
        else:
            pred = _term(word, findings)
        flt.terms.append(_negate(pred) if neg else pred)
    return flt


def findings_index(findings: Iterable[object]) -> dict[str, set[int]]:
    """Build the ``finding=`` map from :class:`~ipsecscope.model.sa.Finding` objects."""
    out: dict[str, set[int]] = {}
    for f in findings:
        out.setdefault(f.code, set()).update(f.frames)  # type: ignore[attr-defined]
    return out
