"""ESP decryption (RFC 4303) with ICV verification and ESN high-bit inference.

Two layers, like `cryptography`'s recipes over hazmat:

* :func:`decrypt` — pure: one SA's keys, one ESP packet (SPI to ICV), known high bits → inner
  bytes, or :class:`~ipsecscope.errors.IntegrityError` / :class:`~ipsecscope.errors.DecryptError`.
* :class:`EspDecryptor` — stateful over a :class:`~ipsecscope.keys.KeyStore`: finds the SA's keys,
  infers whether the SA uses ESN and its high bits (``crypto.esn``), counts per SA, never raises.

Both open a packet through its SA's :class:`~ipsecscope.crypto.esp_open.Opener` (the ciphers and
ICV checks, built once per SA: ``crypto/esp_open.py``) and check the plaintext here
(:func:`check_payload`: RFC 4303 §2.4-2.6, strict without an ICV).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ipsecscope.errors import DecryptError, IntegrityError, UnknownAlgorithmError
from ipsecscope.model.keys import EspSaKeys

from . import esn as _esn
from .esp_open import Opener, OpenFn, opener

if TYPE_CHECKING:
    from ..model.packets import EspPacket


def _trailer(plain: bytes, strict: bool = False, holds: bool = True) -> tuple[bytes, int, int]:
    """(inner, next header, pad length) from a decrypted payload (RFC 4303 §2.4-2.6), checked by
    :func:`check_payload` (DecryptError when it is not a valid ESP payload)."""
    ilen, nh, pad = check_payload(plain, strict, holds)
    return trim_tfc(plain[:ilen], nh), nh, pad


# The RFC 4303 §2.4 default padding: bytes 1, 2, 3, ... (sliced to the pad length)
_PAD_SEQ = bytes(range(1, 256))
# Next headers an ESP payload carries in practice, with the shortest header each needs: a
# payload with one of these that cannot hold that header is malformed (issue: tshark calls an
# all-padding "IPv4" payload Malformed). 59 = no next header (RFC 4303 §2.6 dummy packet).
MIN_INNER = {4: 20, 41: 40, 6: 20, 17: 8, 1: 8, 58: 4, 50: 8, 51: 12, 47: 4, 132: 12, 2: 8, 59: 0,
             97: 2, 115: 4, 137: 4, 0: 8, 43: 8, 44: 8, 60: 8, 103: 4, 112: 8}
_PROTO_NAMES = {4: "IPv4", 41: "IPv6", 6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6", 50: "ESP", 51: "AH",
                47: "GRE", 132: "SCTP"}


def check_payload(plain: bytes, strict: bool = False, holds: bool = True) -> tuple[int, int, int]:
    """Validate a decrypted ESP payload; (inner length before padding, next header, pad length).

    Always (RFC 4303 §2.4-2.6): the pad length fits, and the payload can hold the packet its next
    header names (an IPv4/IPv6 header with that version and a length within the payload; a TCP,
    UDP, ICMP... header). ``strict`` — for SAs with no integrity check (NULL auth, tcpdump ``-E``
    secrets), where a wrong key yields garbage instead of an ICV failure — also: the padding is the
    default 1, 2, 3, ... (§2.4), and the next header is one an ESP payload carries in practice.
    ``holds`` False checks the trailer only (the pure :func:`decrypt`, whose caller judges the
    inner packet: published test vectors carry empty payloads). Raises DecryptError with one line
    saying what does not fit."""
    n = len(plain)
    if n < 2:
        raise DecryptError("ESP payload shorter than its 2-byte trailer")
    pad = plain[-2]
    if pad + 2 > n:
        raise DecryptError(f"pad length {pad} exceeds the {n - 2}-byte payload (wrong key or algorithm?)")
    nh = plain[-1]
    ilen = n - 2 - pad
    if strict and plain[ilen:n - 2] != _PAD_SEQ[:pad]:
        raise DecryptError("padding is not 1, 2, 3, ... (RFC 4303 §2.4): wrong key or algorithm (this SA has no "
                           "integrity check to tell)")
    if not holds:
        return ilen, nh, pad
    need = MIN_INNER.get(nh)
    if need is None:
        if strict:
            raise DecryptError(f"next header {nh} is no protocol an ESP payload carries: wrong key or algorithm "
                               "(this SA has no integrity check to tell)")
        return ilen, nh, pad
    name = _PROTO_NAMES.get(nh, f"protocol {nh}")
    if ilen < need:
        raise DecryptError(f"next header {nh} ({name}) but the {ilen}-byte payload cannot hold its "
                           f"{need}-byte header")
    if nh == 4:
        tl = (plain[2] << 8) | plain[3]
        if plain[0] >> 4 != 4 or (plain[0] & 15) < 5 or tl < 20 or tl > ilen:
            raise DecryptError(f"next header 4 (IPv4) but the payload is no IPv4 packet (version {plain[0] >> 4}, "
                               f"total length {tl} of {ilen} bytes)")
    elif nh == 41:
        plen = (plain[4] << 8) | plain[5]
        if plain[0] >> 4 != 6 or plen + 40 > ilen:
            raise DecryptError(f"next header 41 (IPv6) but the payload is no IPv6 packet (version {plain[0] >> 4}, "
                               f"payload length {plen} of {ilen - 40} bytes)")
    elif strict and nh == 17 and ((plain[4] << 8) | plain[5]) != ilen:
        raise DecryptError(f"next header 17 (UDP) but the UDP length {(plain[4] << 8) | plain[5]} is not the "
                           f"{ilen}-byte payload: wrong key or algorithm (this SA has no integrity check to tell)")
    elif strict and nh == 6 and not 20 <= (plain[12] >> 4) * 4 <= ilen:
        raise DecryptError("next header 6 (TCP) but the TCP data offset does not fit: wrong key or algorithm "
                           "(this SA has no integrity check to tell)")
    return ilen, nh, pad


def trim_tfc(inner: bytes, nh: int) -> bytes:
    """Drop TFC padding after a tunnelled IP packet (RFC 4303 §2.7): the IP length says where the
    packet ends."""
    if nh == 4 and len(inner) >= 20:
        tl = (inner[2] << 8) | inner[3]
        if 20 <= tl < len(inner):
            return inner[:tl]
    elif nh == 41 and len(inner) >= 40:
        plen = (inner[4] << 8) | inner[5]
        if plen and plen + 40 < len(inner):  # payload length 0: a jumbogram (RFC 2675), leave it
            return inner[:plen + 40]
    return inner


# ESP carried in ESP (a tunnel through a tunnel, or transport-mode ESP of ESP) is decrypted at
# most this deep; a packet nested deeper is malformed (a loop guard: 2 layers is what one meets).
MAX_NESTED = 4


def esp_inside(inner: bytes, nh: int) -> tuple[bytes, bytes, bytes] | None:
    """(ESP bytes, src, dst) when a decrypted payload is ESP or tunnels ESP, else None.

    Tunnel mode: an IPv4 packet that is not a fragment, or an IPv6 packet, whose (next) header is
    50, between that packet's addresses (raw bytes). Transport mode: next header 50 itself, between
    the addresses of the packet that carried it (``b""`` for both: the caller's)."""
    if nh == 50:
        return inner, b"", b""
    if nh == 4 and len(inner) >= 20 and inner[9] == 50 and not ((inner[6] << 8) | inner[7]) & 0x3FFF:
        hl = (inner[0] & 15) * 4
        tl = (inner[2] << 8) | inner[3]
        return inner[hl:tl], inner[12:16], inner[16:20]
    if nh == 41 and len(inner) >= 40 and inner[6] == 50:
        return inner[40:], inner[8:24], inner[24:40]
    return None


def decrypt(keys: EspSaKeys, data: bytes, seq_hi: int = 0, esn: bool | None = None) -> tuple[bytes, int, int]:
    """Decrypt one ESP packet (``data`` from the SPI to the end of the ICV).

    ESN: with ``esn`` True (or ``keys.esn`` True, or ``seq_hi`` non-zero when both are None) the
    high 32 bits ``seq_hi`` are authenticated as RFC 4303 §3.3.3 / RFC 4106 §5 say.
    Returns ``(inner, next_header, pad_len)``. Raises IntegrityError on an ICV/tag mismatch,
    DecryptError on a bad length or padding, UnknownAlgorithmError for an unsupported suite.
    """
    if esn is None:
        esn = keys.esn if keys.esn is not None else bool(seq_hi)
    o = opener(keys)
    return _trailer(o.open(bytes(data), seq_hi if esn else None), not o.verifies, holds=False)


def payload_failure(st: SaState, reason: str) -> str:
    """Re-count a packet ``open_raw`` counted as decrypted whose payload :func:`check_payload`
    rejected; its status. With an integrity check the packet is authentic but malformed; without
    one (NULL auth, tcpdump -E), invalid plaintext is how a wrong key shows: a decryption failure,
    counted with the ICV failures so findings name the key."""
    stats = st.stats
    stats.decrypted -= 1
    stats.last_reason = reason
    if st.opener is not None and not st.opener.verifies:
        stats.icv_failed += 1
        return "icv_failed"
    stats.malformed += 1
    return "malformed"


# --- the stateful decryptor ------------------------------------------------------------------

@dataclass(slots=True, frozen=True)
class EspResult:
    """Outcome of decrypting one ESP packet.

    status: "ok" | "icv_failed" | "no_key" | "malformed" | "unsupported". ``seq_hi`` is the
    inferred (or configured) ESN high bits, 0 for a non-ESN SA; ``esn`` whether the SA uses ESN
    (None: not known yet). ``reason`` is one line for anything but "ok".
    """

    status: str
    inner: bytes | None = None
    next_header: int | None = None
    pad_len: int = 0
    seq_hi: int = 0
    keys: EspSaKeys | None = field(default=None, repr=False)  # never in a repr: it holds secrets
    reason: str = ""
    esn: bool | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(slots=True)
class SaStats:
    """Per-SA (src, dst, spi) counters kept by :class:`EspDecryptor`."""

    decrypted: int = 0
    icv_failed: int = 0
    no_key: int = 0
    malformed: int = 0
    unsupported: int = 0
    esn: bool | None = None  # None: not inferred (yet)
    seq_hi: int = 0  # high bits of the highest sequence number seen
    top: int | None = None  # highest full sequence number that verified
    keys_source: str = ""
    last_reason: str = ""

    @property
    def total(self) -> int:
        return self.decrypted + self.icv_failed + self.no_key + self.malformed + self.unsupported


class SaState:
    """ESN inference state of one SA direction plus its opener."""

    __slots__ = ("keys", "opener", "mode", "top", "searches", "version", "error", "stats")

    def __init__(self, keys: EspSaKeys | None, version: int, stats: SaStats) -> None:
        self.keys = keys
        self.version = version
        self.stats = stats
        self.opener: Opener | None = None
        self.error = ""
        self.mode: bool | None = None  # ESN? None = not known yet
        self.top = -1  # highest full sequence number verified, -1 = none
        self.searches = 0
        if keys is not None:
            try:
                self.opener = opener(keys)
            except UnknownAlgorithmError as exc:
                self.error = str(exc)
                return
            self.mode = keys.esn
            if not self.opener.verifies and self.mode is None:
                self.mode = False  # nothing to verify a guess with: assume no ESN
        stats.keys_source = keys.source if keys is not None else ""


# Outcome codes of EspDecryptor.open_raw (ints: cheap in the hot loop).
OK, ICV_FAILED, NO_KEY, MALFORMED, UNSUPPORTED = range(5)
STATUS = ("ok", "icv_failed", "no_key", "malformed", "unsupported")


class EspDecryptor:
    """Decrypts ESP packets of a capture in order, per SA, with ESN inference.

    ``stats`` maps (src, dst, spi) to :class:`SaStats`. Never raises for packet content.
    """

    def __init__(self, keys, max_keyless: int | None = None) -> None:
        """``keys``: an ipsecscope.keys.KeyStore (any .esp_lookup/.version). ``max_keyless``: live
        mode's bound on SAs with no key (random-SPI garbage makes one per packet): past it the
        oldest keyless SA's state and per-SA counters are forgotten. None keeps all (files)."""
        self.keys = keys
        self.stats: dict[tuple[str, str, int], SaStats] = {}
        self._sas: dict[tuple[str, str, int], SaState] = {}
        self.max_keyless = max_keyless
        self._keyless: deque[tuple[str, str, int]] = deque()

    # -- SA lookup ------------------------------------------------------------------------------

    def state(self, src: str, dst: str, spi: int) -> SaState:
        k = (src, dst, spi)
        st = self._sas.get(k)
        version = getattr(self.keys, "version", 0)
        if st is None or st.version != version:
            keys = self.keys.esp_lookup(src, dst, spi) if self.keys is not None else None
            if st is not None and st.keys == keys:
                st.version = version
                return st
            stats = self.stats.get(k)
            if stats is None:
                stats = self.stats[k] = SaStats()
            st = self._sas[k] = SaState(keys, version, stats)
            if keys is None and self.max_keyless is not None:
                self._forget_keyless(k)
        return st

    def _forget_keyless(self, new: tuple[str, str, int]) -> None:
        q = self._keyless
        q.append(new)
        while len(q) > self.max_keyless:  # type: ignore[operator]
            old = q.popleft()
            st = self._sas.get(old)
            if st is not None and st.keys is None:  # a key that arrived since keeps it
                del self._sas[old]
                self.stats.pop(old, None)

    # -- the hot path ---------------------------------------------------------------------------

    def open_raw(self, st: SaState, seq_lo: int, data: bytes) -> tuple[int, object, int]:
        """(code, plaintext-or-reason, seq_hi). Updates ESN state and counters of ``st``."""
        o = st.opener
        stats = st.stats
        if o is None:
            if st.keys is None:
                stats.no_key += 1
                return NO_KEY, "no key for this SA (add its keys with -k)", 0
            stats.unsupported += 1
            stats.last_reason = st.error  # the per-SA line says why (a key of the wrong size, ...)
            return UNSUPPORTED, st.error, 0
        mode = st.mode
        fn = o.open
        try:
            if mode is False:
                plain = fn(data, None)
                hi = 0
            elif mode is True and st.top >= 0:
                plain, hi = self._try(fn, data, _esn.candidates(st.top, seq_lo), st)
            else:
                plain, hi = self._search(fn, data, st, seq_lo)
        except IntegrityError as exc:
            if st.keys.nat and not stats.decrypted:  # type: ignore[union-attr]
                # keys matched across NAT by SPI alone: the ICV says they are not this SA's
                # (issue 17), so they are not applied at all — this SA has no key
                st.keys, st.opener = None, None
                stats.keys_source = ""
                stats.no_key += 1
                return NO_KEY, "no key for this SA (a key with this SPI logged behind NAT failed its ICV)", 0
            stats.icv_failed += 1
            stats.last_reason = str(exc)
            return ICV_FAILED, stats.last_reason, 0
        except DecryptError as exc:
            stats.malformed += 1
            stats.last_reason = str(exc)
            return MALFORMED, stats.last_reason, 0
        full = (hi << 32) | seq_lo
        if full > st.top:
            st.top = full
            stats.top = full
            stats.seq_hi = hi
        stats.decrypted += 1
        return OK, plain, hi

    @staticmethod
    def _try(fn: OpenFn, data: bytes, his: tuple[int, ...], st: SaState) -> tuple[bytes, int]:
        if not st.opener.verifies:  # type: ignore[union-attr]
            return fn(data, his[0]), his[0]
        for hi in his:
            try:
                return fn(data, hi), hi
            except IntegrityError:
                continue
        raise IntegrityError(f"ICV check failed with ESN high bits {', '.join(map(str, his))}")

    def _search(self, fn: OpenFn, data: bytes, st: SaState, seq_lo: int) -> tuple[bytes, int]:
        """No history: without ESN first (unless the keys say ESN), then ESN high bits 0…N."""
        if st.mode is None:
            try:
                plain = fn(data, None)
                st.mode = False
                st.stats.esn = False
                return plain, 0
            except IntegrityError:
                pass
        if not st.opener.verifies:  # type: ignore[union-attr]
            return fn(data, 0), 0
        his = _esn.search_order() if st.searches < _esn.SEARCH_PACKETS else (0,)
        st.searches += 1
        for hi in his:
            try:
                plain = fn(data, hi)
            except IntegrityError:
                continue
            st.mode = True
            st.stats.esn = True
            return plain, hi
        if st.mode is None:
            raise IntegrityError(
                f"ICV check failed without ESN and with ESN high bits 0..{his[-1]} (wrong key or algorithm?)")
        raise IntegrityError(f"ICV check failed with ESN high bits 0..{his[-1]}")

    # -- the contract API -----------------------------------------------------------------------

    def decrypt(self, pkt: EspPacket) -> EspResult:
        """Decrypt one :class:`~ipsecscope.model.packets.EspPacket`; updates per-SA state."""
        st = self.state(pkt.src, pkt.dst, pkt.spi)
        code, val, hi = self.open_raw(st, pkt.seq, pkt.data)
        return self._result(st, code, val, hi)

    def peek(self, pkt: EspPacket, seq_hi: int = 0) -> EspResult:
        """Decrypt one packet again with known high bits, without touching state or counters."""
        st = self.state(pkt.src, pkt.dst, pkt.spi)
        if st.opener is None:
            return self._result(st, NO_KEY if st.keys is None else UNSUPPORTED,
                                "no key for this SA" if st.keys is None else st.error, 0)
        his: list[int | None] = [seq_hi] if st.mode else [None] if st.mode is False else [None, seq_hi]
        for hi in his:
            try:
                plain = st.opener.open(pkt.data, hi)
            except IntegrityError as exc:
                reason = str(exc)
                continue
            except DecryptError as exc:
                return self._result(st, MALFORMED, str(exc), 0)
            return self._result(st, OK, plain, hi or 0, count=False)
        return self._result(st, ICV_FAILED, reason, 0)

    def copy_keys(self, src: str, dst: str, spi: int) -> EspSaKeys | None:
        """The keys of an SA, without creating its state (a quoted copy of a packet asks)."""
        st = self._sas.get((src, dst, spi))
        if st is not None:
            return st.keys
        return self.keys.esp_lookup(src, dst, spi) if self.keys is not None else None

    def open_copy(self, src: str, dst: str, spi: int, seq: int, data: bytes) -> EspResult:
        """Decrypt a *copy* of an ESP packet — the whole packet an ICMP error quotes — with its ICV
        verified, touching no SA state and no counter (it was counted, if captured, when it was
        sent). The ESN high bits are the SA's as far as they are known, else searched."""
        st = self._sas.get((src, dst, spi))
        keys = self.copy_keys(src, dst, spi)
        if keys is None:
            return EspResult("no_key", reason="no key for this SA (add its keys with -k)")
        try:
            o = opener(keys)
        except UnknownAlgorithmError as exc:
            return EspResult("unsupported", keys=keys, reason=str(exc))
        mode = st.mode if st is not None else keys.esn
        his: tuple[int | None, ...]
        if mode is False or not o.verifies:
            his = (None,) if not mode else (st.stats.seq_hi if st is not None else 0,)
        elif mode and st is not None and st.top >= 0:
            his = _esn.candidates(st.top, seq)
        else:
            his = ((None,) if mode is None else ()) + _esn.search_order()
        reason = "ICV check failed"
        for hi in his:
            try:
                plain = o.open(bytes(data), hi)
            except IntegrityError as exc:
                reason = str(exc)
                continue
            except DecryptError as exc:
                return EspResult("malformed", keys=keys, reason=str(exc))
            try:
                inner, nh, pad = _trailer(plain, not o.verifies)
            except DecryptError as exc:
                return EspResult("malformed", seq_hi=hi or 0, keys=keys, reason=str(exc))
            return EspResult("ok", inner, nh, pad, hi or 0, keys, "", mode)
        return EspResult("icv_failed", keys=keys, reason=reason)

    @staticmethod
    def _result(st: SaState, code: int, val, hi: int, count: bool = True) -> EspResult:
        """The EspResult of ``open_raw``'s outcome; ``count`` False (``peek``): a payload that
        fails its checks changes no counter (a detail view looking again must not recount)."""
        if code != OK:
            return EspResult(STATUS[code], seq_hi=hi, keys=st.keys, reason=val, esn=st.mode)
        strict = not st.opener.verifies  # type: ignore[union-attr]
        try:
            inner, nh, pad = _trailer(val, strict)
        except DecryptError as exc:
            if count:
                status = payload_failure(st, str(exc))
            else:
                status = "malformed" if st.opener.verifies else "icv_failed"  # type: ignore[union-attr]
            return EspResult(status, seq_hi=hi, keys=st.keys, reason=str(exc), esn=st.mode)
        return EspResult("ok", inner, nh, pad, hi, st.keys, "", st.mode)

    def summary(self) -> list[tuple[tuple[str, str, int], SaStats]]:
        return sorted(self.stats.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1]))


__all__ = [
    "EspDecryptor", "EspResult", "SaStats", "check_payload", "decrypt", "payload_failure",
    "trim_tfc", "STATUS",
]
