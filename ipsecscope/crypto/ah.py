"""AH integrity verification (RFC 4302): the ICV of each AH packet checked with the SA's key.

AH authenticates the IP header too, so the MAC input is rebuilt from the frame as the receiver
would see it (RFC 4302 §3.3.3.1): the IP header with its mutable fields zeroed, the AH header with
its ICV field zeroed (padding included, §2.6), then everything after AH; with ESN the high 32 bits
of the sequence number follow, implicitly (§3.3.3.2.1, as for ESP: RFC 4303 §3.3.3).

* IPv4 (§3.3.3.1.1.1): TOS (DSCP + ECN), flags, fragment offset, TTL and header checksum are
  zeroed; options other than EOL, NOP, Security, Extended Security, Commercial Security, Router
  Alert and SDMDD are zeroed as a whole (Appendix A.1). Total Length is the reassembled datagram's.
  A reassembled datagram's header is its first fragment's (``AhPacket.ip_header``), never the
  frame's that completed it: options whose copy flag is 0 (Record Route, Timestamp) are only in
  the first fragment (RFC 791 §3.1), and AH zeroes their bytes but not their length. Inside a
  tunnel (GRE, IP-in-IP, VXLAN, ...) it is the tunnelled packet's header, in front of AH, never
  the capture's outer one (``AhPacket.ip_header`` again).
* IPv6 (§3.3.3.1.2): traffic class, flow label and hop limit zeroed; a Hop-by-Hop or Destination
  option with the "may change en route" bit (0x20 of its type, RFC 8200 §4.2) has its data zeroed;
  a Routing header still on its way (Segments Left > 0) is put in the order the final destination
  will see (§3.3.3.1.2.2: destination = the last address, Segments Left 0); the Fragment header is
  not there when the receiver verifies (reassembly comes first, RFC 4302 §3.4.1), so it is left
  out and Payload Length is the reassembled datagram's.

Why one frame is enough: the capture holds the packet as sent, or NAT-rewritten. A NAT changes the
addresses AH covers, so every packet through one fails (§3.3.3; RFC 3715 §2.1: "AH is incompatible
with NAT"). When the key file names the peer's private address and the wire its translated one
(``EspSaKeys.nat``, matched by SPI across NAT by the key store), the ICV is computed again with the
logged address put back: when that verifies, the NAT is proven (``AhResult.nat``).

Algorithms: HMAC-MD5-96, HMAC-SHA1-96, HMAC-SHA-256-128, -384-192, -512-256 (RFC 2403, 2404, 4868),
AES-XCBC-MAC-96 (RFC 3566) and AES-CMAC-96 (RFC 4494), all through `cryptography`. Keys never
appear in a result's repr or reason.
"""

from __future__ import annotations

import struct

# constant-time compare, the C function hmac.compare_digest wraps (crypto.esp_open does the same: the
# hmac module's import pulls in hashlib and the system's OpenSSL)
from _operator import _compare_digest as _compare
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ipsecscope.errors import UnknownAlgorithmError
from ipsecscope.model import iana
from ipsecscope.model.iana import ProtocolId
from ipsecscope.model.keys import EspSaKeys

from . import esn as _esn
from .suites import integ_suite

if TYPE_CHECKING:
    from ..model.packets import AhPacket

_pack32 = struct.Struct("!I").pack

# RFC 4302 Appendix A.1: IPv4 options by number (the low five bits of the type) that are
# immutable and so covered; every other option is zeroed as a whole (§3.3.3.1.1.1).
IMMUTABLE_V4_OPTIONS = frozenset((0, 1, 2, 5, 6, 20, 21))

OK, ICV_FAILED, NO_KEY, UNSUPPORTED, UNVERIFIABLE = "ok", "icv_failed", "no_key", "unsupported", "unverifiable"


@dataclass(slots=True, frozen=True)
class AhResult:
    """Outcome of checking one AH packet's ICV.

    ``status``: "ok" | "icv_failed" | "no_key" | "unsupported" (the keys name an algorithm or key
    size AH cannot use) | "unverifiable" (the frame does not hold what the ICV covers: cut by the
    snap length, a fragment chain it cannot rebuild). ``seq_hi``: the ESN high bits that verified.
    ``nat``: "logged -> wire" when the ICV verifies with the key file's address in place of the
    wire's, the proof that a NAT rewrote it. ``next_header``/``inner``: what AH protects (cleartext)
    for a verified packet, as an ESP result carries its plaintext (mode, traffic selectors).
    """

    status: str
    seq_hi: int = 0
    keys: EspSaKeys | None = field(default=None, repr=False)  # never in a repr: it holds secrets
    reason: str = ""
    esn: bool | None = None
    nat: str = ""
    next_header: int | None = None
    inner: bytes | None = field(default=None, repr=False)
    # the ICV field's length does not fit the key's algorithm (RFC 4302 §2.6): says which, so a
    # wrong integrity algorithm in the key file is named as such, not as a wrong key
    icv_len: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(slots=True)
class AhStats:
    """Per-SA (src, dst, spi) counters of :class:`AhVerifier`."""

    verified: int = 0
    icv_failed: int = 0
    no_key: int = 0
    unsupported: int = 0
    unverifiable: int = 0
    nat_proven: int = 0  # failures that verify with the key file's pre-NAT address
    esn: bool | None = None
    seq_hi: int = 0
    keys_source: str = ""
    last_reason: str = ""


# -- what the ICV covers ----------------------------------------------------------------------------

def covered(frame: bytes, off: int, version: int, ah: bytes, fragmented: bool) -> tuple[bytearray, int] | str:
    """The IP header (and IPv6 extension headers) of the AH packet whose IP header starts at
    ``frame[off]``, as the receiver sees them with the mutable fields zeroed, and where in it the
    source address starts (for the NAT check); or a one-line reason why it cannot be rebuilt.

    ``ah``: the AH header and everything after it (the reassembled datagram's, when ``fragmented``)."""
    if version == 4:
        return _v4(frame, off, ah, fragmented)
    return _v6(frame, off, ah, fragmented)


def _v4(frame: bytes, off: int, ah: bytes, fragmented: bool) -> tuple[bytearray, int] | str:
    ihl = (frame[off] & 15) * 4
    h = bytearray(frame[off:off + ihl])
    if len(h) < ihl or ihl < 20 or h[9] != 51:
        return "the IPv4 header in front of AH could not be read again"
    total = ihl + len(ah)
    said = h[2] << 8 | h[3]
    if not fragmented and said and said != total:
        return f"the capture holds {total} of the {said} bytes the ICV covers (snap length)"
    h[2], h[3] = total >> 8, total & 0xFF  # the reassembled datagram's length (§3.4.1)
    h[1] = 0  # DSCP + ECN
    h[6] = h[7] = 0  # flags, fragment offset
    h[8] = 0  # TTL
    h[10] = h[11] = 0  # header checksum
    i = 20
    while i < ihl:
        t = h[i]
        if t == 0:  # End of Option List: the rest is padding, immutable
            break
        if t == 1:  # NOP
            i += 1
            continue
        if i + 1 >= ihl or h[i + 1] < 2 or i + h[i + 1] > ihl:
            return f"IPv4 option {t} at byte {i} has a length that runs past the header"
        n = h[i + 1]
        if t & 0x1F not in IMMUTABLE_V4_OPTIONS:
            h[i:i + n] = bytes(n)  # the whole option, type and length included (§3.3.3.1.1.1)
        i += n
    return h, 12


def _v6(frame: bytes, off: int, ah: bytes, fragmented: bool) -> tuple[bytearray, int] | str:
    if len(frame) < off + 40:
        return "the IPv6 header in front of AH could not be read again"
    h = bytearray(frame[off:off + 40])
    said = h[4] << 8 | h[5]
    h[0] &= 0xF0  # traffic class (high nibble) ...
    h[1] = h[2] = h[3] = 0  # ... its low nibble and the flow label (§3.3.3.1.2.1)
    h[7] = 0  # hop limit
    nh_at = 6  # where the next-header byte that leads to the current header sits, in h
    nh = h[6]
    p = off + 40
    for _ in range(16):  # RFC 8200 §4.1 orders a handful of headers, each at most once
        if nh == 51:
            break
        if nh == 44:  # Fragment: gone at the receiver once the datagram is whole (§3.4.1)
            if len(frame) < p + 8:
                return "IPv6 fragment header truncated"
            if frame[p] != 51:
                return "IPv6 fragments whose fragmentable part starts with something other than AH: not rebuilt"
            h[nh_at] = nh = 51
            break
        if len(frame) < p + 2:
            return f"IPv6 extension header {nh} truncated"
        n = (frame[p + 1] + 1) * 8
        ext = bytearray(frame[p:p + n])
        if len(ext) < n:
            return f"IPv6 extension header {nh} truncated"
        if nh in (0, 60):  # Hop-by-Hop, Destination Options: TLVs
            why = _zero_mutable_options(ext)
            if why:
                return why
        elif nh == 43:
            why = _routing_at_receiver(ext, h)
            if why:
                return why
        elif nh != 135:
            return f"IPv6 next header {nh} before AH is not an extension header AH can follow"
        nh_at = len(h)
        h += ext
        nh = ext[0]
        p += n
    else:
        return "IPv6 extension header chain too long"
    if nh != 51:
        return "IPv6 chain does not lead to AH"
    total = len(h) - 40 + len(ah)
    if not fragmented and said and said != total:
        return f"the capture holds {total} of the {said} payload bytes the ICV covers (snap length)"
    h[4], h[5] = total >> 8, total & 0xFF
    return h, 8


def _zero_mutable_options(ext: bytearray) -> str:
    i, n = 2, len(ext)
    while i < n:
        t = ext[i]
        if t == 0:  # Pad1
            i += 1
            continue
        if i + 1 >= n or i + 2 + ext[i + 1] > n:
            return f"IPv6 option {t} runs past its extension header"
        ln = ext[i + 1]
        if t & 0x20:  # "option data may change en route" (RFC 8200 §4.2): zeroed (RFC 4302 §3.3.3.1.2.2)
            ext[i + 2:i + 2 + ln] = bytes(ln)
        i += 2 + ln
    return ""


def _routing_at_receiver(ext: bytearray, h: bytearray) -> str:
    """RFC 4302 §3.3.3.1.2.2: the Routing header is mutable but predictable; the ICV is over the
    packet as the final destination receives it. Captured on the way (Segments Left > 0), Types 0
    and 2 are put in that order: visited addresses, then the current destination, the final one in
    the IPv6 header, Segments Left 0 (RFC 2460 §4.4's address swap played to its end)."""
    left = ext[3]
    if not left:
        return ""
    if ext[2] not in (0, 2):
        return f"IPv6 routing header type {ext[2]} with {left} segments left: its final form is not predicted"
    addrs = [bytes(ext[8 + 16 * k:24 + 16 * k]) for k in range((len(ext) - 8) // 16)]
    if left > len(addrs):
        return f"IPv6 routing header says {left} segments left of {len(addrs)} addresses"
    done = len(addrs) - left
    final = addrs[-1]
    addrs = addrs[:done] + [bytes(h[24:40])] + addrs[done:-1]
    ext[8:8 + 16 * len(addrs)] = b"".join(addrs)
    ext[3] = 0
    h[24:40] = final
    return ""


# -- the MAC per SA ---------------------------------------------------------------------------------

Mac = Callable[[tuple[bytes, ...], tuple[int | None, ...]], Iterator[bytes]]


def mac_for(keys: EspSaKeys) -> tuple[Mac, int]:
    """(mac(parts, his) -> the truncated ICV of each high-bits candidate in turn, ICV length) for
    an AH SA's keys. The parts are MACed once; each candidate costs only its 4 ESN bytes and a
    finalize, and only when the one before it did not match (a generator)."""
    suite = integ_suite(keys.integ, ProtocolId.AH)
    icv = keys.icv_len if keys.icv_len is not None else suite.icv_len
    akey = bytes(keys.auth_key)
    if suite.kind == "hmac":
        if not akey:
            raise UnknownAlgorithmError(f"AH {suite.label} without an authentication key")
        from .prf import hmac_keyed

        base = hmac_keyed(suite.hash, akey)  # type: ignore[arg-type]

        def mac_hmac(parts: tuple[bytes, ...], his: tuple[int | None, ...]) -> Iterator[bytes]:
            return _each_high(base.copy(), parts, his, icv)
        return mac_hmac, icv
    if len(akey) != suite.key_len:
        raise UnknownAlgorithmError(f"{suite.label} integrity key is {len(akey) * 8} bits; expected "
                                    f"{suite.key_len * 8}. Check the authentication key in the key file.")
    if suite.kind == "xcbc":
        from .prf import aes_xcbc_mac

        def mac_xcbc(parts: tuple[bytes, ...], his: tuple[int | None, ...]) -> Iterator[bytes]:
            body = b"".join(parts)
            for hi in his:
                yield aes_xcbc_mac(akey, body if hi is None else body + _pack32(hi))[:icv]
        return mac_xcbc, icv
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    def mac_cmac(parts: tuple[bytes, ...], his: tuple[int | None, ...]) -> Iterator[bytes]:
        return _each_high(cmac.CMAC(algorithms.AES(akey)), parts, his, icv)
    return mac_cmac, icv


def _each_high(m, parts: tuple[bytes, ...], his: tuple[int | None, ...], icv: int) -> Iterator[bytes]:
    """One ICV per ESN candidate: the MAC state after the packet, copied for each high half (none
    when ESN is off), so the packet is read once however many candidates are tried (RFC 4302 §3.3.3.2)."""
    m.update(b"".join(parts))
    for hi in his:
        c = m.copy()
        if hi is not None:
            c.update(_pack32(hi))
        yield c.finalize()[:icv]


def icv_parts(head: bytes | bytearray, ah: bytes) -> tuple[tuple[bytes, ...], bytes]:
    """(what the MAC reads, the ICV field as sent) for a rebuilt header and an AH packet: the AH
    header with its whole ICV field (padding included, RFC 4302 §2.6) zeroed, then the payload."""
    total = (ah[1] + 2) * 4
    return (bytes(head), ah[:12], bytes(total - 12), ah[total:]), ah[12:total]


def compute_icv(keys: EspSaKeys, frame: bytes, off: int, version: int, ah: bytes, seq_hi: int | None = None,
                fragmented: bool = False) -> bytes:
    """The ICV an AH packet should carry under ``keys`` (``seq_hi``: ESN high bits, None without
    ESN). Raises UnknownAlgorithmError for keys AH cannot use, ValueError for a frame it cannot rebuild."""
    got = covered(frame, off, version, ah, fragmented)
    if type(got) is str:
        raise ValueError(got)
    mac, _icv = mac_for(keys)
    parts, _field = icv_parts(got[0], ah)  # type: ignore[index]
    return next(mac(parts, (seq_hi,)))


# -- the stateful verifier --------------------------------------------------------------------------

def _icv_misfit(st: _Sa, field_len: int, version: int) -> str:
    """Why an ICV field of ``field_len`` octets cannot hold the key's algorithm's ICV, or "".

    RFC 4302 §2.6: the field holds the ICV and only enough padding to end on a 32-bit (IPv4) or
    64-bit (IPv6) boundary; §3.3.3.2.1. A field shorter than the ICV, or longer than the ICV so
    padded, was made by another algorithm than the key file names (HMAC-SHA1-96's 12 octets
    against HMAC-SHA2-256-128's 16), which no key can fix."""
    align = 4 if version == 4 else 8
    padded = -(-st.icv // align) * align
    if st.icv <= field_len <= padded:
        return ""
    label = iana.name(iana.IntegTransform, st.keys.integ) if st.keys is not None else "the key's algorithm"
    return (f"the ICV field is {field_len} bytes, {label} makes {st.icv}"
            + (f" ({padded} with IPv{version} padding)" if padded != st.icv else "")
            + ": the sender uses another integrity algorithm than the key file")


class _Sa:
    __slots__ = ("keys", "mac", "icv", "mode", "top", "searches", "version", "error", "stats")

    def __init__(self, keys: EspSaKeys | None, version: int, stats: AhStats) -> None:
        self.keys, self.version, self.stats = keys, version, stats
        self.mac: Mac | None = None
        self.icv = 0
        self.error = ""
        self.mode: bool | None = None  # ESN? None = not known yet
        self.top = -1
        self.searches = 0
        if keys is not None:
            try:
                self.mac, self.icv = mac_for(keys)
            except UnknownAlgorithmError as exc:
                self.error = str(exc)
            self.mode = keys.esn
            if keys.esn is not None:  # the key file says (IKEv2 transform type 5): known before any packet
                stats.esn = keys.esn
        stats.keys_source = keys.source if keys is not None else ""


class AhVerifier:
    """Checks AH packets of a capture in order, per SA, with ESN inference (``crypto.esn``), as
    :class:`~ipsecscope.crypto.esp.EspDecryptor` does for ESP. ``stats`` maps (src, dst, spi) to
    :class:`AhStats`. Never raises for packet content. Only AH keys (protocol 2) are used: an ESP
    key with the same SPI names another SA (RFC 4301 §4.1)."""

    def __init__(self, keys) -> None:
        self.keys = keys
        self.stats: dict[tuple[str, str, int], AhStats] = {}
        self._sas: dict[tuple[str, str, int], _Sa] = {}
        # SAs whose ICV failed before any packet of theirs verified here: in a run split over
        # processes, a chunk to check again with the ESN state of the chunks before it
        # (export.engine's reconcile step; EspDecryptor's early failures are the same idea)
        self.early_fail: set[tuple[str, str, int]] = set()

    def states(self) -> dict[tuple[str, str, int], tuple[bool | None, int, int]]:
        """Each SA's ESN inference state: (ESN?, highest full sequence number verified, searches
        made without history), as ``EspDecryptor``'s ``SaState`` (mode, top, searches)."""
        return {k: (s.mode, s.top, s.searches) for k, s in self._sas.items()}

    def seed(self, states: dict[tuple[str, str, int], tuple[bool | None, int, int]]) -> None:
        """Start from the ESN state earlier packets of the capture left (:meth:`states` of the
        verifiers that read them): the high 32 bits of an ESN are inferred from the window, which
        a chunk of a split run does not have on its own (RFC 4302 §2.5.1, Appendix B)."""
        for k, (mode, top, searches) in states.items():
            st = self._state(*k)
            if st.mac is None:
                continue
            if mode is not None:
                st.mode = mode
                st.stats.esn = mode
            if top > st.top:
                st.top = top
                st.stats.seq_hi = max(top, 0) >> 32
            st.searches = max(st.searches, searches)

    def _state(self, src: str, dst: str, spi: int) -> _Sa:
        k = (src, dst, spi)
        st = self._sas.get(k)
        version = getattr(self.keys, "version", 0)
        if st is None or st.version != version:
            keys = self.keys.esp_lookup(src, dst, spi) if self.keys is not None else None
            if keys is not None and keys.protocol != ProtocolId.AH:
                keys = None
            if st is not None and st.keys == keys:
                st.version = version
                return st
            stats = self.stats.get(k)
            if stats is None:
                stats = self.stats[k] = AhStats()
            st = self._sas[k] = _Sa(keys, version, stats)
        return st

    def verify(self, pkt: AhPacket, frame: bytes, off: int) -> AhResult:
        """Check one AH packet whose IP header starts at ``frame[off]``; updates per-SA state."""
        st = self._state(pkt.src, pkt.dst, pkt.spi)
        stats = st.stats
        if st.keys is None:
            stats.no_key += 1
            return AhResult(NO_KEY, reason="no key for this SA (add its keys with -k)")
        if st.mac is None:
            stats.unsupported += 1
            stats.last_reason = st.error
            return AhResult(UNSUPPORTED, keys=st.keys, reason=st.error, esn=st.mode)
        if pkt.ip_header:  # a reassembled datagram's (its first fragment's) or a tunnelled packet's
            frame, off = pkt.ip_header, 0
        got = covered(frame, off, pkt.ip_version, pkt.data, pkt.ip_fragmented)
        if type(got) is str:
            stats.unverifiable += 1
            stats.last_reason = got
            return AhResult(UNVERIFIABLE, keys=st.keys, reason=got, esn=st.mode)
        head, src_at = got  # type: ignore[misc]
        parts, sent = icv_parts(head, pkt.data)
        field_len = len(sent)  # the ICV field with its padding; its length is checked on a failure only
        if field_len < st.icv:
            stats.icv_failed += 1
            stats.last_reason = misfit = _icv_misfit(st, field_len, pkt.ip_version)
            return AhResult(ICV_FAILED, keys=st.keys, reason=misfit, esn=st.mode, icv_len=misfit)
        sent = sent[:st.icv]
        hi = self._match(st, parts, sent, pkt.seq)
        if hi is not False:
            full = ((hi or 0) << 32) | pkt.seq
            if full > st.top:
                st.top = full
                stats.seq_hi = hi or 0
            stats.verified += 1
            total = (pkt.data[1] + 2) * 4
            return AhResult(OK, hi or 0, st.keys, "", st.mode, "", pkt.next_header, pkt.data[total:])
        keys = st.keys
        nat = _nat_proof(st, keys, head, src_at, pkt, parts, sent)
        if nat:
            stats.icv_failed += 1
            stats.nat_proven += 1
            stats.last_reason = (f"the ICV verifies with {nat.replace(' -> ', ' in place of ')}: a NAT rewrote "
                                 "an address AH covers (RFC 4302 §3.3.3)")
            return AhResult(ICV_FAILED, keys=keys, reason=stats.last_reason, esn=st.mode, nat=nat)
        if keys.nat and not stats.verified:
            # keys matched across NAT by SPI alone that verify neither way: not this SA's key (as
            # crypto.esp does, issue 17), so they are not applied at all
            st.keys, st.mac = None, None
            stats.keys_source = ""
            stats.no_key += 1
            return AhResult(NO_KEY, reason="no key for this SA (a key with this SPI logged behind NAT failed its ICV)")
        stats.icv_failed += 1
        if not stats.verified:
            self.early_fail.add((pkt.src, pkt.dst, pkt.spi))
        stats.last_reason = ("ICV check failed" + ("" if st.mode is False else
                             " without ESN and with ESN high bits" if st.mode is None else " with ESN high bits"))
        misfit = _icv_misfit(st, field_len, pkt.ip_version)
        if misfit:
            stats.last_reason += f": {misfit}"
        return AhResult(ICV_FAILED, keys=keys, reason=stats.last_reason, esn=st.mode, icv_len=misfit)

    def check_copy(self, src: str, dst: str, spi: int, seq: int, ip: bytes, version: int, ah: bytes) -> AhResult:
        """The ICV of a *copy* of an AH packet (the whole datagram an ICMP error quotes, RFC 792,
        RFC 4443 §2.4(c)): ``ip`` starts at the quoted IP header, the one AH follows (never the
        error's own), ``ah`` is the AH header and what follows it. ESN high bits are tried from
        what the SA has verified so far; nothing about the SA changes (state, counters): the
        quote is a packet already sent."""
        keys = self.keys.esp_lookup(src, dst, spi) if self.keys is not None else None
        if keys is None or keys.protocol != ProtocolId.AH:
            return AhResult(NO_KEY, reason="no key for this SA (add its keys with -k)")
        try:
            mac, icv = mac_for(keys)
        except UnknownAlgorithmError as exc:
            return AhResult(UNSUPPORTED, keys=keys, reason=str(exc))
        got = covered(ip, 0, version, ah, False)
        if type(got) is str:
            return AhResult(UNVERIFIABLE, keys=keys, reason=got)
        parts, sent = icv_parts(got[0], ah)  # type: ignore[index]
        if len(sent) < icv:
            return AhResult(ICV_FAILED, keys=keys, reason=f"the AH ICV field is {len(sent)} bytes; the key's "
                            f"algorithm needs {icv}")
        st = self._sas.get((src, dst, spi))
        mode = st.mode if st is not None and st.mode is not None else keys.esn
        his: tuple[int | None, ...]
        if mode is False:
            his = (None,)
        elif mode and st is not None and st.top >= 0:
            his = _esn.candidates(st.top, seq)
        else:
            his = ((None,) if mode is None else ()) + _esn.search_order()
        for hi, got_icv in zip(his, mac(parts, his), strict=False):  # type: ignore[misc]
            if _compare(got_icv, sent[:icv]):
                total = (ah[1] + 2) * 4
                return AhResult(OK, hi or 0, keys, "", hi is not None, "", ah[0], ah[total:])
        return AhResult(ICV_FAILED, keys=keys, reason="ICV check failed", esn=mode)

    @staticmethod
    def _match(st: _Sa, parts: tuple[bytes, ...], sent: bytes, seq_lo: int) -> int | None | bool:
        """The ESN high bits the ICV verifies with (None: no ESN), or False. Learns the SA's mode
        from the first packet that verifies, as ESP's decryptor does (crypto.esn)."""
        mode = st.mode
        his: tuple[int | None, ...]
        if mode is False:
            his = (None,)
        elif mode is True and st.top >= 0:
            his = _esn.candidates(st.top, seq_lo)
        else:
            esn = _esn.search_order() if st.searches < _esn.SEARCH_PACKETS else (0,)
            st.searches += 1
            his = ((None,) if mode is None else ()) + esn
        for hi, icv in zip(his, st.mac(parts, his), strict=False):  # type: ignore[misc]  # lazy: stops at a match
            if _compare(icv, sent):
                if st.mode is None:
                    st.mode = hi is not None
                    st.stats.esn = st.mode
                return hi
        return False


def _nat_proof(st: _Sa, keys: EspSaKeys, head: bytearray, src_at: int, pkt: AhPacket,
               parts: tuple[bytes, ...], sent: bytes) -> str:
    """"logged -> wire" when the ICV verifies with the key file's address in place of the one on
    the wire (the key store matched the key across NAT: ``keys.nat``), else ""."""
    if not keys.nat or " -> " not in keys.nat:
        return ""
    import ipaddress

    logged, wire = keys.nat.split(" -> ", 1)
    try:
        raw = ipaddress.ip_address(logged).packed
    except ValueError:
        return ""
    n = len(raw)
    if (n == 4) != (pkt.ip_version == 4):
        return ""
    if wire == pkt.src:
        at = src_at
    elif wire == pkt.dst:
        at = src_at + n
    else:
        return ""
    h = bytearray(head)
    h[at:at + n] = raw
    mode = st.mode
    his: tuple[int | None, ...] = (None,) if mode is False else (
        _esn.candidates(st.top, pkt.seq) if mode and st.top >= 0 else ((None,) if mode is None else ()) + (0,))
    for icv in st.mac((bytes(h), *parts[1:]), his):  # type: ignore[misc]
        if _compare(icv, sent):
            return keys.nat
    return ""


__all__ = ["AhResult", "AhStats", "AhVerifier", "IMMUTABLE_V4_OPTIONS", "compute_icv", "covered", "icv_parts",
           "mac_for"]
