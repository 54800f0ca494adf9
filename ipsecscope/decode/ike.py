"""IKE message decoding: header, dispatch on the major version, and the IKEv2 payload chain.

``parse_ike`` turns one :class:`~ipsecscope.model.packets.IkeDatagram` into a
:class:`~ipsecscope.model.ike.IkeMessage`; IKEv1 bodies are handed to :mod:`.ikev1`. What both
versions share (header, generic payload header, attributes, transforms, identities) lives in
:mod:`.isakmp`, so neither version module imports the other's internals.
``parse_payload_chain`` is also what the crypto stage calls on decrypted SK / IKEv1 bodies.

Rules kept throughout (RFC 7296 §3.2 generic payload header: next, C-flag, length):
- every length is checked against what is left *before* it is used;
- nothing here raises on wire input: a fault stops the walk at that payload, ``malformed`` gets a
  one-line reason naming the payload and the numbers, and the payloads decoded before it stay;
- a payload whose outer length is sound but whose body does not parse is kept as a plain
  :class:`Payload` (raw body) and the walk goes on, because the next payload is still framed
  correctly; the first such reason is reported;
- unknown payload types are kept as :class:`Payload`; the critical bit is recorded, judging it is
  the analysis stage's job (RFC 7296 §2.5: an unknown critical payload must be rejected).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable

from ipsecscope.decode import ikev1
from ipsecscope.decode.isakmp import (
    HEADER_LEN,
    BadPayload,
    chain_fault,
    cp_attribute_text,
    dn_to_text,
    need,
    parse_header,
    parse_transforms,
    payload_name,
    render_id,
    utf8_text,
)
from ipsecscope.decode.vendor_ids import vendor_name
from ipsecscope.model import iana
from ipsecscope.model.ike import (
    AnyPayload,
    AuthPayload,
    CertPayload,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    IkeHeader,
    IkeMessage,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    SkPayload,
    TrafficSelector,
    TsPayload,
    VendorPayload,
)
from ipsecscope.model.packets import IkeDatagram
from ipsecscope.model.plural import plural

# parse_header, payload_name, render_id, dn_to_text, cp_attribute_text and HEADER_LEN live in
# .isakmp; they stay importable from here, the decode stage's entry module.
__all__ = ["parse_ike", "parse_payload_chain", "parse_header", "payload_name", "render_id", "dn_to_text",
           "cp_attribute_text", "HEADER_LEN"]

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_PROP_HDR = struct.Struct("!BBHBBBB")  # last/more, reserved, length, num, protocol, spi size, #transforms
_ATTR_HDR = struct.Struct("!HH")  # AF|type, value or length
_TS_HDR = struct.Struct("!BBHHH")  # ts type, ip proto, selector length, start port, end port

_V2_TYPES = frozenset(int(t) for t in iana.PayloadType)


# ---- header -------------------------------------------------------------------------------------


def parse_ike(dgram: IkeDatagram) -> IkeMessage:
    """Decode one IKE message (v1 or v2 by the header's major version). Never raises."""
    data = bytes(dgram.data)
    try:
        return _parse_ike(dgram, data)
    except Exception as exc:  # pragma: no cover - a bug, not bad input; fuzz tests guard this
        hdr = parse_header(data.ljust(HEADER_LEN, b"\0"))
        assert hdr is not None
        return _message(dgram, hdr, (), data, f"internal decoder error: {type(exc).__name__}: {exc}")


def _message(dgram: IkeDatagram, hdr: IkeHeader, payloads: tuple[AnyPayload, ...], raw: bytes,
             malformed: str | None) -> IkeMessage:
    return IkeMessage(
        frame=dgram.frame, ts=dgram.ts, src=dgram.src, dst=dgram.dst, sport=dgram.sport,
        dport=dgram.dport, header=hdr, payloads=payloads, raw=raw, malformed=malformed,
        transport=dgram.transport, non_esp_marker=dgram.non_esp_marker, ip_fragmented=dgram.ip_fragmented,
    )


def _parse_ike(dgram: IkeDatagram, data: bytes) -> IkeMessage:
    n = len(data)
    if n < HEADER_LEN:
        hdr = parse_header(data.ljust(HEADER_LEN, b"\0"))
        assert hdr is not None
        return _message(dgram, hdr, (), data, f"IKE header truncated ({n} of {HEADER_LEN} bytes)")
    hdr = parse_header(data)
    assert hdr is not None
    reason: str | None = None
    if hdr.length < HEADER_LEN:
        return _message(dgram, hdr, (), data, f"IKE header length {hdr.length} is below the {HEADER_LEN}-byte header")
    if hdr.length > n:
        # Walk what we have: the payloads before the cut are still useful (e.g. snaplen-truncated).
        reason = f"IKE header length {hdr.length} exceeds datagram ({n} bytes)"
        body = data[HEADER_LEN:]
    else:
        # Bytes after the declared length are not part of the message (RFC 7296 §3.1: Length is
        # the whole message); they are ignored like every other implementation does.
        body = data[HEADER_LEN:hdr.length]
    if hdr.major == 2:
        payloads, bad = _chain_v2(hdr.next_payload, body, HEADER_LEN)
    elif hdr.major == 1:
        payloads, bad = ikev1.parse_body(hdr, body)
    else:
        return _message(dgram, hdr, (), data, f"unsupported IKE major version {hdr.major}")
    # A short datagram (snaplen, lost IP fragment) is the root cause of any payload fault after
    # it, so its reason wins.
    return _message(dgram, hdr, payloads, data[: min(n, hdr.length)] if reason is None else data,
                    reason or bad)


def parse_payload_chain(first_type: int, data: bytes, version: int, base_offset: int = 0,
                        ) -> tuple[tuple[AnyPayload, ...], str | None]:
    """Decode a chain of payloads starting with ``first_type``.

    ``version`` 2: IKEv2 generic headers (used on SK plaintext); 1: ISAKMP (used on decrypted
    IKEv1 bodies; trailing zero padding after the last payload is accepted, RFC 2409 §5.3).
    ``base_offset`` is where ``data`` starts inside the whole message, so SK offsets stay absolute.
    Returns the payloads decoded and a malformed reason or None. Never raises.
    """
    data = bytes(data)
    try:
        if version == 1:
            return ikev1.parse_chain(first_type, data, base_offset)
        return _chain_v2(first_type, data, base_offset)
    except Exception as exc:  # pragma: no cover - a bug; fuzz tests guard this
        return (), f"internal decoder error: {type(exc).__name__}: {exc}"


# ---- IKEv2 payload chain -----------------------------------------------------------------------


def _chain_v2(first: int, data: bytes, base: int) -> tuple[tuple[AnyPayload, ...], str | None]:
    out: list[AnyPayload] = []
    bad: str | None = None
    ptype = first
    off = 0
    n = len(data)
    idx = 0
    while ptype != 0:
        idx += 1
        left = n - off
        if left < 4 or not 4 <= (plen := _U16.unpack_from(data, off + 2)[0]) <= left:
            return tuple(out), bad or chain_fault(data, off, idx, ptype)
        nxt = data[off]
        critical = bool(data[off + 1] & 0x80)
        body = data[off + 4: off + plen]
        if ptype in (iana.PayloadType.SK, iana.PayloadType.SKF):
            # SK must be the last payload; its next-payload field names the first inner payload
            # (RFC 7296 §3.14, RFC 7383 §2.5). Nothing after it is framed in clear.
            p, why = _sk(ptype, critical, nxt, body, base + off)
            out.append(p)
            if why:
                bad = bad or f"payload {idx} ({payload_name(ptype)}): {why}"
            elif off + plen != n:
                bad = bad or f"{n - off - plen} bytes after the {payload_name(ptype)} payload"
            return tuple(out), bad
        dec = _DECODERS_V2.get(ptype)
        if dec is None:
            out.append(Payload(ptype, critical, body))
        else:
            try:
                p = dec(ptype, critical, body)
                out.append(p)
                if ptype == iana.PayloadType.N and (why := _notify_fault(p)):  # type: ignore[arg-type]
                    bad = bad or f"payload {idx} ({payload_name(ptype)}): {why}"
                elif ptype == iana.PayloadType.D and (extra := len(body) - 4 - 4 * len(p.spis)) > 0:  # type: ignore[union-attr]
                    # SPIs are counted (RFC 7296 §3.11): bytes past them are no SPI we can name
                    bad = bad or (f"payload {idx} ({payload_name(ptype)}): {plural(extra, 'byte')} after its "
                                  f"{plural(len(p.spis), 'SPI')}")  # type: ignore[union-attr]
            except BadPayload as e:
                out.append(Payload(ptype, critical, body))
                bad = bad or f"payload {idx} ({payload_name(ptype)}): {e}"
        off += plen
        ptype = nxt
    if off != n:
        bad = bad or f"{n - off} bytes after the last payload"
    return tuple(out), bad


# -- SA (RFC 7296 §3.3)


def _sa(ptype: int, critical: bool, body: bytes) -> SaPayload:
    proposals: list[Proposal] = []
    off, n = 0, len(body)
    while off < n:
        pnum = len(proposals) + 1
        if n - off < 8:
            raise BadPayload(f"proposal {pnum} header truncated ({n - off} bytes left)")
        more, _r, plen, num, proto, spisize, ntrans = _PROP_HDR.unpack_from(body, off)
        if plen < 8 + spisize or plen > n - off:
            raise BadPayload(f"proposal {pnum} length {plen} invalid ({n - off} bytes left, SPI size {spisize})")
        spi = body[off + 8: off + 8 + spisize]
        transforms = parse_transforms(body, off + 8 + spisize, off + plen, pnum,
                                      iana.TransformAttribute.KEY_LENGTH)
        if len(transforms) != ntrans:
            raise BadPayload(f"proposal {pnum} declares {ntrans} transforms, has {len(transforms)}")
        proposals.append(Proposal(num, proto, spi, transforms))
        off += plen
        if more == 0 and off < n:
            raise BadPayload(f"{n - off} bytes after the last proposal")
    return SaPayload(ptype, critical, tuple(proposals))


def _ke(ptype: int, critical: bool, body: bytes) -> KePayload:
    need(body, 4, "KE header")
    return KePayload(ptype, critical, _U16.unpack_from(body, 0)[0], body[4:])


def _nonce(ptype: int, critical: bool, body: bytes) -> NoncePayload:
    return NoncePayload(ptype, critical, body)


# -- ID (RFC 7296 §3.5)

def _id(ptype: int, critical: bool, body: bytes) -> IdPayload:
    need(body, 4, "ID header")
    data = body[4:]
    return IdPayload(ptype, critical, body[0], data, render_id(body[0], data, 2))


def _cert(ptype: int, critical: bool, body: bytes) -> CertPayload:
    need(body, 1, "certificate encoding")
    return CertPayload(ptype, critical, body[0], body[1:])


def _auth(ptype: int, critical: bool, body: bytes) -> AuthPayload:
    need(body, 4, "AUTH header")
    return AuthPayload(ptype, critical, body[0], body[4:])


# -- Notify (RFC 7296 §3.10)

N = iana.NotifyType


def _notify_decoded(nt: int, spi: bytes, data: bytes) -> dict[str, object]:
    """Notification data where an RFC defines its format. Unknown/short data: {}."""
    d: dict[str, object] = {}
    ln = len(data)
    if nt == N.INVALID_KE_PAYLOAD and ln >= 2:  # RFC 7296 §3.10.1: accepted D-H group
        g = _U16.unpack_from(data)[0]
        d["group"] = g
        d["group_name"] = iana.name(iana.DhGroup, g)
    elif nt in (N.NAT_DETECTION_SOURCE_IP, N.NAT_DETECTION_DESTINATION_IP):
        d["hash"] = data.hex()  # SHA-1(SPIi | SPIr | IP | port), RFC 7296 §2.23
    elif nt in (N.REKEY_SA, N.CHILD_SA_NOT_FOUND, N.INVALID_SPI) and spi:
        d["spi"] = int.from_bytes(spi, "big")  # the SA concerned is named in the SPI field
    elif nt in (N.COOKIE, N.COOKIE2):
        d["cookie"] = data.hex()
    elif nt == N.SIGNATURE_HASH_ALGORITHMS:  # RFC 7427 §4: list of 2-byte hash identifiers
        algs = [_U16.unpack_from(data, i)[0] for i in range(0, ln - ln % 2, 2)]
        d["hash_algorithms"] = [iana.name(iana.HashAlgorithm, a) for a in algs]
    elif nt == N.SECURE_PASSWORD_METHODS:
        d["methods"] = [_U16.unpack_from(data, i)[0] for i in range(0, ln - ln % 2, 2)]
    elif nt == N.IKEV2_FRAGMENTATION_SUPPORTED:  # RFC 7383 §2.3: no data
        d["supported"] = True
    elif nt == N.USE_TRANSPORT_MODE:
        d["mode"] = "transport"
    elif nt == N.USE_AGGFRAG:
        d["mode"] = "aggfrag"  # RFC 9347 IP-TFS
    elif nt in (N.SET_WINDOW_SIZE, N.AUTH_LIFETIME, N.INVALID_MESSAGE_ID) and ln >= 4:
        key = {N.SET_WINDOW_SIZE: "window_size", N.AUTH_LIFETIME: "lifetime", N.INVALID_MESSAGE_ID: "message_id"}
        d[key[N(nt)]] = _U32.unpack_from(data)[0]
    elif nt in (N.ADDITIONAL_IP4_ADDRESS, N.ADDITIONAL_IP6_ADDRESS) and ln in (4, 16):
        d["address"] = str(ipaddress.ip_address(data))
    elif nt == N.IPCOMP_SUPPORTED and ln >= 3:  # RFC 7296 §3.10.1: CPI(2) | transform ID(1)
        d["cpi"] = _U16.unpack_from(data)[0]
        d["transform"] = iana.name(iana.IpcompTransform, data[2])
    elif nt in (N.REDIRECT, N.REDIRECTED_FROM) and ln >= 2:  # RFC 5685 §8
        gtype, glen = data[0], data[1]
        gw = data[2: 2 + glen]
        if gtype in (1, 2) and glen in (4, 16) and len(gw) == glen:
            d["gateway"] = str(ipaddress.ip_address(gw))
        else:
            d["gateway"] = utf8_text(gw)
        if ln > 2 + glen:
            d["nonce"] = data[2 + glen:].hex()
    elif nt == N.UNSUPPORTED_CRITICAL_PAYLOAD and ln >= 1:
        d["payload"] = payload_name(data[0])
    elif nt == N.ADDITIONAL_KEY_EXCHANGE:
        d["link"] = data.hex()
    elif nt == N.SUPPORTED_AUTH_METHODS:
        d["announcement"] = data.hex()
    return d


# Notify types whose data has a fixed size: (octets, what they hold, where). A notify whose data is
# shorter is kept (its type is the refusal a peer reads) and its message is marked malformed, as
# tshark does ("Notification DATA: <MISSING>", Openswan's lp08 parentR1notify frame 2).
# NAT detection data is a SHA-1 hash, exactly 20 octets: any other length is no hash to compare,
# and compared anyway it "does not match" and explains a NAT or forced encapsulation that is not.
_NOTIFY_DATA = {N.INVALID_KE_PAYLOAD: (2, "the accepted D-H group", "RFC 7296 §3.10.1"),
                N.NAT_DETECTION_SOURCE_IP: (20, "a SHA-1 hash", "RFC 7296 §2.23"),
                N.NAT_DETECTION_DESTINATION_IP: (20, "a SHA-1 hash", "RFC 7296 §2.23")}
_NOTIFY_EXACT = {N.NAT_DETECTION_SOURCE_IP, N.NAT_DETECTION_DESTINATION_IP}


def _notify_fault(p: NotifyPayload) -> str | None:
    need = _NOTIFY_DATA.get(p.notify_type)  # type: ignore[call-overload]
    if need is None or len(p.data) == need[0] or (len(p.data) > need[0] and p.notify_type not in _NOTIFY_EXACT):
        return None
    return (f"{N(p.notify_type).name} data is {plural(len(p.data), 'byte')}, {need[1]} takes {need[0]} "
            f"({need[2]})")


def _notify(ptype: int, critical: bool, body: bytes) -> NotifyPayload:
    need(body, 4, "Notify header")
    proto, spisize, nt = body[0], body[1], _U16.unpack_from(body, 2)[0]
    if spisize > len(body) - 4:
        raise BadPayload(f"SPI size {spisize} exceeds payload ({len(body) - 4} bytes left)")
    spi = body[4: 4 + spisize]
    data = body[4 + spisize:]
    return NotifyPayload(ptype, critical, proto, spi, nt, data, _notify_decoded(nt, spi, data))


def _delete(ptype: int, critical: bool, body: bytes) -> DeletePayload:
    need(body, 4, "Delete header")
    proto, spisize, count = body[0], body[1], _U16.unpack_from(body, 2)[0]
    if spisize * count > len(body) - 4:
        raise BadPayload(f"{count} SPIs of {spisize} bytes exceed payload ({len(body) - 4} bytes left)")
    # RFC 7296 §3.11: the IKE SA is deleted with SPI size 0 and no SPIs, ESP/AH SAs by 4-byte SPIs,
    # and no other protocol is defined. Read otherwise, such a payload would delete the IKE SA
    # for CHILD SPIs, or name CHILD SAs by 3-byte or absent SPIs: kept undecoded, message malformed.
    if proto == iana.ProtocolId.IKE and (spisize or count):
        raise BadPayload(f"deletes the IKE SA (protocol 1) yet has {plural(count, 'SPI')} of {spisize} bytes; "
                         "it takes none (RFC 7296 §3.11)")
    if proto in (iana.ProtocolId.AH, iana.ProtocolId.ESP) and spisize != 4:
        raise BadPayload(f"{iana.ProtocolId(proto).name} SPI size {spisize}; ESP and AH SPIs are 4 bytes "
                         "(RFC 7296 §3.11)")
    if proto not in (iana.ProtocolId.IKE, iana.ProtocolId.AH, iana.ProtocolId.ESP):
        raise BadPayload(f"protocol ID {proto}; a Delete names 1 (IKE), 2 (AH) or 3 (ESP) (RFC 7296 §3.11)")
    spis = tuple(body[4 + i * spisize: 4 + (i + 1) * spisize] for i in range(count)) if spisize else ()
    return DeletePayload(ptype, critical, proto, spis)


def _vendor(ptype: int, critical: bool, body: bytes) -> VendorPayload:
    return VendorPayload(ptype, critical, body, vendor_name(body))


# -- Traffic selectors (RFC 7296 §3.13)


def _ts(ptype: int, critical: bool, body: bytes) -> TsPayload:
    need(body, 4, "TS header")
    count = body[0]
    off, n = 4, len(body)
    sels: list[TrafficSelector] = []
    for i in range(count):
        if n - off < 4:
            raise BadPayload(f"selector {i + 1} of {count} truncated ({n - off} bytes left)")
        tstype, proto, slen = body[off], body[off + 1], _U16.unpack_from(body, off + 2)[0]
        if slen < 4 or slen > n - off:
            raise BadPayload(f"selector {i + 1} length {slen} invalid ({n - off} bytes left)")
        if tstype in (iana.TsType.TS_IPV4_ADDR_RANGE, iana.TsType.TS_IPV6_ADDR_RANGE):
            alen = 4 if tstype == iana.TsType.TS_IPV4_ADDR_RANGE else 16
            if slen != 8 + 2 * alen:
                raise BadPayload(f"selector {i + 1} ({iana.TsType(tstype).name}) length {slen}, expected {8 + 2 * alen}")
            _t, _p, _l, sport, eport = _TS_HDR.unpack_from(body, off)
            a = body[off + 8: off + 8 + alen]
            b = body[off + 8 + alen: off + 8 + 2 * alen]
            sels.append(TrafficSelector(tstype, proto, sport, eport, str(ipaddress.ip_address(a)),
                                        str(ipaddress.ip_address(b))))
        else:
            # TS_SECLABEL / FC / private: no address range; keep the body as hex so it is visible.
            sels.append(TrafficSelector(tstype, proto, 0, 0, body[off + 4: off + slen].hex(), ""))
        off += slen
    if off != n:
        raise BadPayload(f"{n - off} bytes after {count} selectors")
    return TsPayload(ptype, critical, tuple(sels))


def _sk(ptype: int, critical: bool, nxt: int, body: bytes, offset: int) -> tuple[SkPayload, str | None]:
    if ptype == iana.PayloadType.SKF:
        # RFC 7383 §2.5: Fragment Number | Total Fragments, then IV | ciphertext | ICV. ``body``
        # keeps only the encrypted part (same meaning as for SK); the integrity check covers
        # the message from its start up to the ICV, which crypto takes from ``raw``.
        if len(body) < 4:
            return SkPayload(ptype, critical, nxt, b"", offset), f"SKF header needs 4 bytes, has {len(body)}"
        num, total = _U16.unpack_from(body, 0)[0], _U16.unpack_from(body, 2)[0]
        why = None
        if num == 0 or total == 0 or num > total:
            why = f"fragment number {num} of {total} invalid"
        return SkPayload(ptype, critical, nxt, body[4:], offset, num, total), why
    return SkPayload(ptype, critical, nxt, body, offset), None


def _cp(ptype: int, critical: bool, body: bytes) -> CpPayload:
    need(body, 4, "CP header")
    off, n = 4, len(body)
    attrs: list[tuple[int, bytes]] = []
    while off < n:
        if n - off < 4:
            raise BadPayload(f"attribute header truncated ({n - off} bytes left)")
        atype, alen = _ATTR_HDR.unpack_from(body, off)
        if alen > n - off - 4:
            raise BadPayload(f"attribute {atype & 0x7FFF} length {alen} exceeds payload ({n - off - 4} bytes left)")
        attrs.append((atype & 0x7FFF, body[off + 4: off + 4 + alen]))
        off += 4 + alen
    return CpPayload(ptype, critical, body[0], tuple(attrs))


def _eap(ptype: int, critical: bool, body: bytes) -> EapPayload:
    # RFC 3748 §4: Code | Identifier | Length | [Type | Type-Data]. ``data`` is the Type-Data.
    need(body, 4, "EAP header")
    code, ident, elen = body[0], body[1], _U16.unpack_from(body, 2)[0]
    if elen > len(body) or elen < 4:
        raise BadPayload(f"EAP length {elen} does not fit payload ({len(body)} bytes)")
    if code in (1, 2) and elen >= 5:
        return EapPayload(ptype, critical, code, ident, body[4], body[5:elen])
    return EapPayload(ptype, critical, code, ident, None, body[4:elen])


_DECODERS_V2: dict[int, Callable[[int, bool, bytes], AnyPayload]] = {
    iana.PayloadType.SA: _sa,
    iana.PayloadType.KE: _ke,
    iana.PayloadType.IDi: _id,
    iana.PayloadType.IDr: _id,
    iana.PayloadType.CERT: _cert,
    iana.PayloadType.CERTREQ: _cert,
    iana.PayloadType.AUTH: _auth,
    iana.PayloadType.NONCE: _nonce,
    iana.PayloadType.N: _notify,
    iana.PayloadType.D: _delete,
    iana.PayloadType.V: _vendor,
    iana.PayloadType.TSi: _ts,
    iana.PayloadType.TSr: _ts,
    iana.PayloadType.CP: _cp,
    iana.PayloadType.EAP: _eap,
}
