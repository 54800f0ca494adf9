"""KeyStore: every key we know, with the lookups the decryptors call per packet.

ESP lookup follows Wireshark's esp_sa semantics (address wildcards ``*``, ``a.b.*.*``, prefixes
``a.b.0.0/16``; SPI patterns ``0x000040**``) but picks the *most specific* matching entry rather
than the first one, so a key derived later for an exact SA beats a catch-all row. Among equally
specific entries the first added wins (Wireshark's order).

The hot path is ``esp_lookup``: exact (src, dst, spi) entries sit in a dict; wildcard entries are
scored once per distinct (src, dst, spi) and the answer cached until ``version`` changes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, NamedTuple

from ..errors import KeyFileError
from ..model.iana import IntegTransform
from ..model.keys import EspSaKeys
from .names import is_aead, shown

if TYPE_CHECKING:  # (IKE keys and log notes: their classes load with the first one, model.keys)
    from ..model.keys import IkeSaKeys, Ikev1Keys, PeerLogNote

_CACHE_MAX = 1 << 16


def _norm_addr(addr: str) -> str:
    """Canonical text of an address (``::1``, ``198.18.0.1``), or the input if not an address."""
    try:
        return ipaddress.ip_address(addr.strip("[]")).compressed
    except ValueError:
        return addr


# The patterns (and _Wild) are NamedTuples, not frozen dataclasses: as immutable, and 70 us to create
# instead of 400 (every command that reads keys imports this module; issue 15).
class AddrPattern(NamedTuple):
    """An address matcher: value & mask == net. ``bits`` = number of fixed bits (specificity)."""

    version: int  # 4, 6, or 0 = any family
    net: int
    mask: int
    bits: int

    def match(self, version: int, value: int) -> bool:
        if self.version == 0:
            return True
        return version == self.version and (value & self.mask) == self.net


ANY_ADDR = AddrPattern(0, 0, 0, 0)


def parse_addr_pattern(text: str) -> AddrPattern:
    """``*`` | address | ``a.b.*.*`` | ``2001:db8:*::1``-style groups | ``net/len``. Raises ValueError
    (whose text never echoes a value that could be a key: see ``names.shown``)."""
    try:
        return _parse_addr_pattern(text)
    except ValueError:  # ipaddress's own messages quote the text whatever it is
        raise ValueError(f"{shown(text.strip())} is not an IP address, prefix or wildcard "
                         "(e.g. 198.18.0.1, 198.18.0.0/15, 198.18.*.*)") from None


def _parse_addr_pattern(text: str) -> AddrPattern:
    text = text.strip().strip("[]")
    if text in ("*", "", "any", "0.0.0.0/0", "::/0"):
        return ANY_ADDR
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        mask = int(net.netmask)
        return AddrPattern(net.version, int(net.network_address), mask, net.prefixlen)
    if "*" not in text:
        a = ipaddress.ip_address(text)
        width = a.max_prefixlen
        return AddrPattern(a.version, int(a), (1 << width) - 1, width)
    if ":" not in text:  # IPv4 with * octets
        parts = text.split(".")
        if len(parts) != 4:
            raise ValueError(f"{shown(text)}: an IPv4 pattern needs 4 octets, e.g. 198.18.*.*")
        net = mask = bits = 0
        for p in parts:
            net <<= 8
            mask <<= 8
            if p == "*":
                continue
            v = int(p)
            if not 0 <= v <= 255:
                raise ValueError(f"{shown(text)}: octet {p} out of range")
            net |= v
            mask |= 0xFF
            bits += 8
        return AddrPattern(4, net, mask, bits)
    # IPv6 with * groups; expand "::" first.
    if "::" in text:
        head, tail = text.split("::", 1)
        h = [g for g in head.split(":") if g]
        t = [g for g in tail.split(":") if g]
        groups = h + ["0"] * (8 - len(h) - len(t)) + t
    else:
        groups = text.split(":")
    if len(groups) != 8:
        raise ValueError(f"{shown(text)}: an IPv6 pattern needs 8 groups")
    net = mask = bits = 0
    for g in groups:
        net <<= 16
        mask <<= 16
        if g == "*":
            continue
        net |= int(g, 16)
        mask |= 0xFFFF
        bits += 16
    return AddrPattern(6, net, mask, bits)


class SpiPattern(NamedTuple):
    """An SPI matcher: spi & mask == value. ``bits`` = number of fixed bits (specificity)."""

    value: int
    mask: int
    bits: int

    def match(self, spi: int) -> bool:
        return (spi & self.mask) == self.value


def parse_spi_pattern(text: str) -> SpiPattern:
    """``*`` | ``0x000040**`` (each ``*`` = one hex digit; must keep 8 digits) | a number."""
    text = text.strip()
    if text == "*":
        return SpiPattern(0, 0, 0)
    body = text[2:] if text[:2].lower() == "0x" else None
    if body is not None and "*" in body:
        if len(body) != 8:
            raise ValueError(
                f"SPI pattern {shown(text)} must keep the 10-character 0x%08x form, e.g. 0x000040** "
                "(Wireshark silently matches nothing otherwise)"
            )
        value = mask = bits = 0
        for ch in body:
            value <<= 4
            mask <<= 4
            if ch == "*":
                continue
            value |= int(ch, 16)
            mask |= 0xF
            bits += 4
        return SpiPattern(value, mask, bits)
    v = int(text, 16) if body is not None else int(text, 0)
    if not 0 <= v <= 0xFFFFFFFF:
        raise ValueError(f"SPI {shown(text)} does not fit in 32 bits")
    return SpiPattern(v, 0xFFFFFFFF, 32)


def _addr_value(addr: str) -> tuple[int, int]:
    try:
        a = ipaddress.ip_address(addr.strip("[]"))
    except ValueError:
        return 0, 0
    return a.version, int(a)


class _Wild(NamedTuple):
    """ESP keys with a wildcard, their parsed patterns and rank."""

    keys: EspSaKeys
    src: AddrPattern
    dst: AddrPattern
    spi: SpiPattern
    score: int
    order: int


def esp_is_exact(k: EspSaKeys) -> bool:
    return k.spi_pattern is None and "*" not in k.src and "*" not in k.dst and "/" not in k.src \
        and "/" not in k.dst


class KeyStore:
    """All key material known to a session. Grows while a capture is read (keys derived from IKE)."""

    def __init__(self) -> None:
        self.esp: list[EspSaKeys] = []
        self.ike: list[IkeSaKeys] = []
        self.ikev1: list[Ikev1Keys] = []
        self.version = 0
        self._exact: dict[tuple[str, str, int], EspSaKeys] = {}
        # exact entries by SPI, for matching across NAT (see esp_lookup)
        self._by_spi: dict[int, list[tuple[str, str, EspSaKeys]]] = {}
        self._wild: list[_Wild] = []
        self._cache: dict[tuple[str, str, int], EspSaKeys | None] = {}
        self._ike: dict[tuple[bytes, bytes], IkeSaKeys] = {}
        self._ike_by_i: dict[bytes, IkeSaKeys] = {}
        # Every distinct key per initiator cookie, in the order added: with a pre-shared-key
        # mismatch the two peers derive different SKEYID_e, so each peer's log gives its own key
        # and each peer's messages decrypt only under that key.
        self._ikev1: dict[bytes, list[Ikev1Keys]] = {}
        # pcapng DSBs whose secrets type we do not read: (type, length), for explanations.
        self.ignored_secrets: list[tuple[int, int]] = []
        # Things a parser skipped but the user should hear about ("file:line: why"). Every front
        # end shows them (CLI: stderr; TUI: a notice), so nothing is dropped silently.
        self.warnings: list[str] = []
        # Rows, dumps or files that were unusable and left out (each also in ``warnings``): one bad
        # row costs only itself; ``load_keys(strict=True)`` (--strict-keys) raises the first instead.
        self.skipped: list[KeyFileError] = []
        # What the peers' own logs say about their configuration (charon "configured proposals:",
        # selectors, auth failures, DH groups): evidence for the findings, not key material, so it
        # counts neither in len() nor in ``version``.
        self.peer_notes: list[PeerLogNote] = []
        self._note_keys: set[tuple[str, str]] = set()

    # -- adding -------------------------------------------------------------------------------

    def _bump(self) -> None:
        self.version += 1
        if self._cache:
            self._cache = {}

    def add_esp(self, k: EspSaKeys) -> bool:
        """Add one ESP/AH SA's keys. Returns False (and changes nothing) for an exact duplicate.

        Cheap: a dict insert for exact SAs (the common case, including derived keys).
        """
        if esp_is_exact(k):
            key = (_norm_addr(k.src), _norm_addr(k.dst), k.spi)
            old = self._exact.get(key)
            if old is not None:
                if _same_esp(old, k):
                    return False
                # First added wins among equals (Wireshark order); keep the new one listed so
                # `keys list` shows the conflict, but do not replace the lookup answer. Other keys
                # or algorithms for the same SA are said once (never the key bytes): a stale row
                # that wins explains every ICV failure of its SA.
                if (old.encr, old.enc_key, old.integ, old.auth_key) != (k.encr, k.enc_key, k.integ, k.auth_key):
                    self.warnings.append(  # 0x%08x by hand: decrypt loads no model.idtext (cli/decrypt.py)
                        f"{k.source or 'a key'}: SPI 0x{k.spi:08x} {k.src} -> {k.dst} has different keys in "
                        f"{old.source or 'an earlier key'}; those are used (the first given wins, as in Wireshark)")
                self.esp.append(k)
                self._bump()
                return True
            self._exact[key] = k
            self._by_spi.setdefault(k.spi, []).append((key[0], key[1], k))
        else:
            src = parse_addr_pattern(k.src)
            dst = parse_addr_pattern(k.dst)
            spi = parse_spi_pattern(k.spi_pattern) if k.spi_pattern else SpiPattern(k.spi, 0xFFFFFFFF, 32)
            for w in self._wild:
                if w.src == src and w.dst == dst and w.spi == spi and _same_esp(w.keys, k):
                    return False
            self._wild.append(_Wild(k, src, dst, spi, src.bits + dst.bits + spi.bits, len(self._wild)))
        self.esp.append(k)
        self._bump()
        return True

    def add_ike(self, k: IkeSaKeys) -> bool:
        key = (bytes(k.spi_i), bytes(k.spi_r))
        old = self._ike.get(key)
        if old is not None and replace(old, source="") == replace(k, source=""):
            return False
        self.ike.append(k)
        if old is None:
            self._ike[key] = k
            self._ike_by_i.setdefault(key[0], k)
        self._bump()
        return True

    def add_ikev1(self, k: Ikev1Keys) -> bool:
        """Add one IKEv1 phase-1 key. Returns False for a key already known for that cookie.

        A *different* key for a cookie already known is kept too (see ``ikev1_candidates``).
        """
        cands = self._ikev1.setdefault(bytes(k.cookie_i), [])
        bare = replace(k, source="")
        if any(replace(old, source="") == bare for old in cands):
            return False
        cands.append(k)
        self.ikev1.append(k)
        self._bump()
        return True

    def add_peer_note(self, note: PeerLogNote) -> bool:
        """Add one note from a peer's log. Returns False for a note already known (same line)."""
        key = (note.source, note.text)
        if key in self._note_keys:
            return False
        self._note_keys.add(key)
        self.peer_notes.append(note)
        return True

    def skip(self, exc: KeyFileError, what: str = "skipped") -> None:
        """Leave out one unusable row / dump / file, and say so (``file:line: reason; skipped``)."""
        self.skipped.append(exc)
        self.warnings.append(f"{exc}; {what}")

    def merge(self, other: KeyStore) -> int:
        n = 0
        for k in other.esp:
            n += self.add_esp(k)
        for k in other.ike:
            n += self.add_ike(k)
        for k in other.ikev1:
            n += self.add_ikev1(k)
        for note in other.peer_notes:
            self.add_peer_note(note)
        self.ignored_secrets.extend(other.ignored_secrets)
        self.warnings.extend(other.warnings)
        self.skipped.extend(other.skipped)
        return n

    # -- lookups ------------------------------------------------------------------------------

    def esp_lookup(self, src: str, dst: str, spi: int) -> EspSaKeys | None:
        """Keys for an ESP/AH packet, the most specific matching entry, or None.

        When no entry matches, keys logged on a peer behind NAT are matched across it: an exact
        entry with this SPI whose one address equals the packet's and whose other differs (NAT
        rewrote it: the log names 10.0.0.1, the wire 198.18.0.1). Only if that SPI names exactly
        one such key, and only for SAs whose ICV can say whether the key belongs (AEAD or
        checked integrity): the answer carries ``nat`` and crypto.esp drops it on an ICV failure.
        """
        key = (src, dst, spi)
        hit = self._exact.get(key)
        if hit is not None:
            return hit
        try:
            return self._cache[key]
        except KeyError:
            pass
        res = self._lookup_slow(src, dst, spi)
        if len(self._cache) >= _CACHE_MAX:  # random SPIs (scans, garbage) must not grow memory
            self._cache = {}
        self._cache[key] = res
        return res

    def _lookup_slow(self, src: str, dst: str, spi: int) -> EspSaKeys | None:
        nsrc, ndst = _norm_addr(src), _norm_addr(dst)
        hit = self._exact.get((nsrc, ndst, spi))
        if hit is not None:
            return hit
        if self._wild:
            sv, si = _addr_value(nsrc)
            dv, di = _addr_value(ndst)
            best: _Wild | None = None
            for w in self._wild:
                if w.spi.match(spi) and w.src.match(sv, si) and w.dst.match(dv, di):
                    if best is None or w.score > best.score:
                        best = w
            if best is not None:
                return best.keys
        return self._across_nat(nsrc, ndst, spi)

    def _across_nat(self, src: str, dst: str, spi: int) -> EspSaKeys | None:
        cands = {}
        for s, d, k in self._by_spi.get(spi, ()):
            if (s == src) != (d == dst) and _verifiable(k):  # exactly one address rewritten
                cands[(k.encr, k.enc_key, k.integ, k.auth_key)] = (s, d, k)
        if len(cands) != 1:
            return None  # none, or the SPI is ambiguous: never guess
        s, d, k = next(iter(cands.values()))
        moved = f"{s} -> {src}" if s != src else f"{d} -> {dst}"
        return replace(k, src=src, dst=dst, nat=moved)

    def ike_lookup(self, spi_i: bytes, spi_r: bytes) -> IkeSaKeys | None:
        k = self._ike.get((bytes(spi_i), bytes(spi_r)))
        if k is None and not any(spi_r):
            # IKE_SA_INIT request (SPIr still zero) is never encrypted, but a caller holding only
            # SPIi (e.g. to label a flow) still gets the SA.
            k = self._ike_by_i.get(bytes(spi_i))
        return k

    def ikev1_lookup(self, cookie_i: bytes) -> Ikev1Keys | None:
        """The first key added for an initiator cookie (see ``ikev1_candidates`` for all of them)."""
        cands = self._ikev1.get(bytes(cookie_i))
        return cands[0] if cands else None

    def ikev1_candidates(self, cookie_i: bytes) -> list[Ikev1Keys]:
        """Every distinct key known for an initiator cookie, in the order added (maybe empty).

        More than one means the peers derived different phase-1 keys (typically a pre-shared-key
        mismatch) or a key file holds a stale row; ``Ikev1Decryptor`` tries each.
        """
        return list(self._ikev1.get(bytes(cookie_i), ()))

    # -- misc ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.esp) + len(self.ike) + len(self.ikev1)

    def __bool__(self) -> bool:  # an empty store is still a store (not None)
        return True

    def __iter__(self) -> Iterator[EspSaKeys | IkeSaKeys | Ikev1Keys]:
        yield from self.esp
        yield from self.ike
        yield from self.ikev1

    def __repr__(self) -> str:
        return f"<KeyStore esp={len(self.esp)} ike={len(self.ike)} ikev1={len(self.ikev1)} v{self.version}>"


def _verifiable(k: EspSaKeys) -> bool:
    """Whether a wrong key would show as an ICV failure (AEAD tag, or integrity checked)."""
    return is_aead(k.encr) or (k.integ != IntegTransform.NONE and k.check_integrity)


def _same_esp(a: EspSaKeys, b: EspSaKeys) -> bool:
    """Same SA and same keys; the ``source`` note does not count."""
    return (a.spi, a.encr, a.enc_key, a.integ, a.auth_key, a.src, a.dst, a.spi_pattern, a.icv_len, a.esn,
            a.protocol, a.check_integrity) == (b.spi, b.encr, b.enc_key, b.integ, b.auth_key, b.src, b.dst,
                                               b.spi_pattern, b.icv_len, b.esn, b.protocol, b.check_integrity)
