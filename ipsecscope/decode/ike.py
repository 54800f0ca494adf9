"""IKE message decoding: header, dispatch on the major version, and the IKEv2 payload chain.

``parse_ike`` turns one :class:`~ipsecscope.model.packets.IkeDatagram` into a
:class:`~ipsecscope.model.ike.IkeMessage`; IKEv1 bodies are handed to :mod:`.ikev1`.
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
    Transform,
    TsPayload,
    VendorPayload,
)
from ipsecscope.model.packets import IkeDatagram

__all__ = ["parse_ike", "parse_payload_chain", "parse_header", "payload_name", "render_id", "dn_to_text",
           "cp_attribute_text", "HEADER_LEN"]

HEADER_LEN = 28
IKE_HDR = struct.Struct("!8s8sBBBBII")  # SPIi, SPIr, next payload, version, exchange, flags, msg id, length
GEN_HDR = struct.Struct("!BBH")  # next payload, flags (C bit 0x80), payload length
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_PROP_HDR = struct.Struct("!BBHBBBB")  # last/more, reserved, length, num, protocol, spi size, #transforms
_XFORM_HDR = struct.Struct("!BBHBBH")  # last/more, reserved, length, type, reserved, id
_ATTR_HDR = struct.Struct("!HH")  # AF|type, value or length
_TS_HDR = struct.Struct("!BBHHH")  # ts type, ip proto, selector length, start port, end port

_V2_TYPES = frozenset(int(t) for t in iana.PayloadType)


class _Bad(Exception):
    """Body of one payload did not parse; message is the reason (internal, never escapes)."""


def payload_name(ptype: int, version: int = 2) -> str:
    """Short registry name of a payload type ("TSi", "NAT_D"), or "type N" when unknown."""
    enum = iana.PayloadType if version == 2 else iana.Ikev1Payload
    try:
        return enum(ptype).name
    except ValueError:
        if version == 2:
            try:  # an IKEv1 number inside a v2 chain (or the reverse) is still worth naming
                return iana.Ikev1Payload(ptype).name if ptype < 33 else f"type {ptype}"
            except ValueError:
                pass
        return f"type {ptype}"


# ---- header -------------------------------------------------------------------------------------


def parse_header(data: bytes) -> IkeHeader | None:
    """The 28-byte IKE header (same layout for v1 and v2, RFC 7296 §3.1 / RFC 2408 §3.1)."""
    if len(data) < HEADER_LEN:
        return None
    spi_i, spi_r, np, ver, exch, flags, msg_id, length = IKE_HDR.unpack_from(data, 0)
    return IkeHeader(spi_i, spi_r, np, ver >> 4, ver & 0x0F, exch, flags, msg_id, length)


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
        from ipsecscope.decode import ikev1

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
            from ipsecscope.decode import ikev1

            return ikev1.parse_chain(first_type, data, base_offset)
        return _chain_v2(first_type, data, base_offset)
    except Exception as exc:  # pragma: no cover - a bug; fuzz tests guard this
        return (), f"internal decoder error: {type(exc).__name__}: {exc}"


# ---- IKEv2 payload chain -----------------------------------------------------------------------


def chain_fault(data: bytes, off: int, idx: int, ptype: int, version: int = 2) -> str:
    """Reason why the generic payload header of payload ``idx`` at ``off`` does not frame it.

    Shared by the IKEv2 and ISAKMP chain walks (RFC 7296 §3.2 / RFC 2408 §3.2: next, flags,
    length). Only called once a walk has seen that the header is short, or its length is below
    the 4-byte header or past the end of ``data``; the walks keep those checks inline because they
    run for every payload and this (naming the payload, formatting) only on a fault.
    """
    left = len(data) - off
    name = payload_name(ptype, version)
    if left <= 0:
        return f"payload {idx} ({name}) missing: message ends after payload {idx - 1}"
    if left < 4:
        return f"payload {idx} ({name}) header truncated ({left} bytes left)"
    plen = _U16.unpack_from(data, off + 2)[0]
    if plen < 4:
        return f"payload {idx} ({name}) length {plen} is below the 4-byte header"
    return f"payload {idx} ({name}) length {plen} exceeds message ({left} bytes left)"


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
                out.append(dec(ptype, critical, body))
            except _Bad as e:
                out.append(Payload(ptype, critical, body))
                bad = bad or f"payload {idx} ({payload_name(ptype)}): {e}"
        off += plen
        ptype = nxt
    if off != n:
        bad = bad or f"{n - off} bytes after the last payload"
    return tuple(out), bad


def _need(body: bytes, n: int, what: str) -> None:
    if len(body) < n:
        raise _Bad(f"{what} needs {n} bytes, payload has {len(body)}")


# -- SA (RFC 7296 §3.3)


def parse_attributes(data: bytes, off: int, end: int) -> tuple[tuple[int, int | bytes], ...]:
    """Data attributes (RFC 7296 §3.3.5 / RFC 2408 §3.3): AF=1 → 2-byte value, AF=0 → TLV.

    Shared with IKEv1. Raises _Bad on a length that runs past ``end``.
    """
    attrs: list[tuple[int, int | bytes]] = []
    while off < end:
        if end - off < 4:
            raise _Bad(f"attribute header truncated ({end - off} bytes left)")
        atype, val = _ATTR_HDR.unpack_from(data, off)
        off += 4
        if atype & 0x8000:
            attrs.append((atype & 0x7FFF, val))
        else:
            if val > end - off:
                raise _Bad(f"attribute {atype} length {val} exceeds transform ({end - off} bytes left)")
            attrs.append((atype, data[off: off + val]))
            off += val
    return tuple(attrs)


def parse_transforms(body: bytes, toff: int, tend: int, pnum: int, klen_attr: int,
                     v1: bool = False) -> tuple[Transform, ...]:
    """The transforms of proposal ``pnum``, in ``body[toff:tend]``. Shared with IKEv1.

    Both versions frame a transform alike (RFC 7296 §3.3.2 / RFC 2408 §3.6: 8-byte header with
    its length, then attributes); the header's last four bytes differ: IKEv2 has type, reserved,
    16-bit ID; IKEv1 (``v1``) has transform number, 8-bit ID, reserved, and the number is kept in
    ``Transform.type``. ``klen_attr`` is the attribute type that carries the key length.
    Raises _Bad naming the proposal and transform.
    """
    transforms: list[Transform] = []
    while toff < tend:
        tn = len(transforms) + 1
        if tend - toff < 8:
            raise _Bad(f"proposal {pnum} transform {tn} header truncated ({tend - toff} bytes left)")
        _m, _r2, tlen, ttype, b6, tid = _XFORM_HDR.unpack_from(body, toff)
        if v1:
            tid = b6
        if tlen < 8 or tlen > tend - toff:
            raise _Bad(f"proposal {pnum} transform {tn} length {tlen} invalid ({tend - toff} bytes left)")
        try:
            attrs = parse_attributes(body, toff + 8, toff + tlen)
        except _Bad as e:
            raise _Bad(f"proposal {pnum} transform {tn}: {e}") from None
        klen = next((v for t, v in attrs if t == klen_attr and isinstance(v, int)), None)
        transforms.append(Transform(ttype, tid, klen, attrs))
        toff += tlen
    return tuple(transforms)


def _sa(ptype: int, critical: bool, body: bytes) -> SaPayload:
    proposals: list[Proposal] = []
    off, n = 0, len(body)
    while off < n:
        pnum = len(proposals) + 1
        if n - off < 8:
            raise _Bad(f"proposal {pnum} header truncated ({n - off} bytes left)")
        more, _r, plen, num, proto, spisize, ntrans = _PROP_HDR.unpack_from(body, off)
        if plen < 8 + spisize or plen > n - off:
            raise _Bad(f"proposal {pnum} length {plen} invalid ({n - off} bytes left, SPI size {spisize})")
        spi = body[off + 8: off + 8 + spisize]
        transforms = parse_transforms(body, off + 8 + spisize, off + plen, pnum,
                                      iana.TransformAttribute.KEY_LENGTH)
        if len(transforms) != ntrans:
            raise _Bad(f"proposal {pnum} declares {ntrans} transforms, has {len(transforms)}")
        proposals.append(Proposal(num, proto, spi, transforms))
        off += plen
        if more == 0 and off < n:
            raise _Bad(f"{n - off} bytes after the last proposal")
    return SaPayload(ptype, critical, tuple(proposals))


def _ke(ptype: int, critical: bool, body: bytes) -> KePayload:
    _need(body, 4, "KE header")
    return KePayload(ptype, critical, _U16.unpack_from(body, 0)[0], body[4:])


def _nonce(ptype: int, critical: bool, body: bytes) -> NoncePayload:
    return NoncePayload(ptype, critical, body)


# -- ID (RFC 7296 §3.5)

_DN_ATTRS = {
    "2.5.4.3": "CN", "2.5.4.4": "SN", "2.5.4.5": "serialNumber", "2.5.4.6": "C", "2.5.4.7": "L",
    "2.5.4.8": "ST", "2.5.4.9": "street", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.12": "title",
    "2.5.4.42": "GN", "2.5.4.43": "initials", "2.5.4.46": "dnQualifier", "2.5.4.65": "pseudonym",
    "1.2.840.113549.1.9.1": "E", "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID",
}


def _der(data: bytes, off: int, end: int) -> tuple[int, int, int]:
    """One DER TLV header at ``off``: (tag, value start, value end). Raises ValueError."""
    if end - off < 2:
        raise ValueError("short")
    tag, ln = data[off], data[off + 1]
    off += 2
    if ln & 0x80:
        k = ln & 0x7F
        if k == 0 or k > 4 or end - off < k:
            raise ValueError("bad length")
        ln = int.from_bytes(data[off: off + k], "big")
        off += k
    if ln > end - off:
        raise ValueError("overrun")
    return tag, off, off + ln


def _oid(b: bytes) -> str:
    if not b:
        return ""
    parts = [str(b[0] // 40), str(b[0] % 40)] if b[0] < 80 else ["2", str(b[0] - 80)]
    v = 0
    for c in b[1:]:
        v = (v << 7) | (c & 0x7F)
        if not c & 0x80:
            parts.append(str(v))
            v = 0
    return ".".join(parts)


def dn_to_text(der: bytes) -> str | None:
    """Best-effort RFC 4514-like text ("C=CH, O=strongSwan, CN=moon") of a DER Name, else None."""
    try:
        tag, s, e = _der(der, 0, len(der))
        if tag != 0x30 or e != len(der):
            return None
        rdns: list[str] = []
        while s < e:
            tag, ss, se = _der(der, s, e)  # SET OF AttributeTypeAndValue
            if tag != 0x31:
                return None
            while ss < se:
                tag, as_, ae = _der(der, ss, se)
                if tag != 0x30:
                    return None
                otag, os_, oe = _der(der, as_, ae)
                vtag, vs, ve = _der(der, oe, ae)
                if otag != 0x06:
                    return None
                oid = _oid(der[os_:oe])
                raw = der[vs:ve]
                val = raw.decode("utf-16-be", "replace") if vtag == 0x1E else raw.decode("utf-8", "replace")
                rdns.append(f"{_DN_ATTRS.get(oid, oid)}={val}")
                ss = ae
            s = se
        return ", ".join(rdns)
    except (ValueError, IndexError):
        return None


def _text(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def render_id(id_type: int, data: bytes, version: int = 2) -> str:
    """Human form of an identity: address, FQDN, user@FQDN, DN text, else hex.

    IKEv1 (RFC 2407 §4.6.2.1) adds subnet and range types: shown as "10.0.0.0/24" / "a-b".
    """
    try:
        if id_type == 1 and len(data) == 4:
            return str(ipaddress.IPv4Address(data))
        if id_type == 5 and len(data) == 16:
            return str(ipaddress.IPv6Address(data))
        if id_type in (2, 3):
            return _text(data)
        if id_type == 9:
            return dn_to_text(data) or data.hex()
        if id_type == 13 and version == 2:
            return ""
        if version == 1:
            if id_type in (4, 7) and len(data) == 8:
                a, b = ipaddress.IPv4Address(data[:4]), ipaddress.IPv4Address(data[4:])
                if id_type == 7:
                    return f"{a}-{b}"
                try:
                    return str(ipaddress.IPv4Network(f"{a}/{b}", strict=False))
                except ValueError:
                    return f"{a}/{b}"
            if id_type in (6, 8) and len(data) == 32:
                a6, b6 = ipaddress.IPv6Address(data[:16]), ipaddress.IPv6Address(data[16:])
                if id_type == 8:
                    return f"{a6}-{b6}"
                plen = bin(int(b6)).count("1")
                return f"{a6}/{plen}"
    except ValueError:
        pass
    return data.hex()


def _id(ptype: int, critical: bool, body: bytes) -> IdPayload:
    _need(body, 4, "ID header")
    data = body[4:]
    return IdPayload(ptype, critical, body[0], data, render_id(body[0], data, 2))


def _cert(ptype: int, critical: bool, body: bytes) -> CertPayload:
    _need(body, 1, "certificate encoding")
    return CertPayload(ptype, critical, body[0], body[1:])


def _auth(ptype: int, critical: bool, body: bytes) -> AuthPayload:
    _need(body, 4, "AUTH header")
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
            d["gateway"] = _text(gw)
        if ln > 2 + glen:
            d["nonce"] = data[2 + glen:].hex()
    elif nt == N.UNSUPPORTED_CRITICAL_PAYLOAD and ln >= 1:
        d["payload"] = payload_name(data[0])
    elif nt == N.ADDITIONAL_KEY_EXCHANGE:
        d["link"] = data.hex()
    elif nt == N.SUPPORTED_AUTH_METHODS:
        d["announcement"] = data.hex()
    return d


def _notify(ptype: int, critical: bool, body: bytes) -> NotifyPayload:
    _need(body, 4, "Notify header")
    proto, spisize, nt = body[0], body[1], _U16.unpack_from(body, 2)[0]
    if spisize > len(body) - 4:
        raise _Bad(f"SPI size {spisize} exceeds payload ({len(body) - 4} bytes left)")
    spi = body[4: 4 + spisize]
    data = body[4 + spisize:]
    return NotifyPayload(ptype, critical, proto, spi, nt, data, _notify_decoded(nt, spi, data))


def _delete(ptype: int, critical: bool, body: bytes) -> DeletePayload:
    _need(body, 4, "Delete header")
    proto, spisize, count = body[0], body[1], _U16.unpack_from(body, 2)[0]
    if spisize * count > len(body) - 4:
        raise _Bad(f"{count} SPIs of {spisize} bytes exceed payload ({len(body) - 4} bytes left)")
    spis = tuple(body[4 + i * spisize: 4 + (i + 1) * spisize] for i in range(count)) if spisize else ()
    return DeletePayload(ptype, critical, proto, spis)


def _vendor(ptype: int, critical: bool, body: bytes) -> VendorPayload:
    return VendorPayload(ptype, critical, body, vendor_name(body))


# -- Traffic selectors (RFC 7296 §3.13)


def _ts(ptype: int, critical: bool, body: bytes) -> TsPayload:
    _need(body, 4, "TS header")
    count = body[0]
    off, n = 4, len(body)
    sels: list[TrafficSelector] = []
    for i in range(count):
        if n - off < 4:
            raise _Bad(f"selector {i + 1} of {count} truncated ({n - off} bytes left)")
        tstype, proto, slen = body[off], body[off + 1], _U16.unpack_from(body, off + 2)[0]
        if slen < 4 or slen > n - off:
            raise _Bad(f"selector {i + 1} length {slen} invalid ({n - off} bytes left)")
        if tstype in (iana.TsType.TS_IPV4_ADDR_RANGE, iana.TsType.TS_IPV6_ADDR_RANGE):
            alen = 4 if tstype == iana.TsType.TS_IPV4_ADDR_RANGE else 16
            if slen != 8 + 2 * alen:
                raise _Bad(f"selector {i + 1} ({iana.TsType(tstype).name}) length {slen}, expected {8 + 2 * alen}")
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
        raise _Bad(f"{n - off} bytes after {count} selectors")
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
    _need(body, 4, "CP header")
    off, n = 4, len(body)
    attrs: list[tuple[int, bytes]] = []
    while off < n:
        if n - off < 4:
            raise _Bad(f"attribute header truncated ({n - off} bytes left)")
        atype, alen = _ATTR_HDR.unpack_from(body, off)
        if alen > n - off - 4:
            raise _Bad(f"attribute {atype & 0x7FFF} length {alen} exceeds payload ({n - off - 4} bytes left)")
        attrs.append((atype & 0x7FFF, body[off + 4: off + 4 + alen]))
        off += 4 + alen
    return CpPayload(ptype, critical, body[0], tuple(attrs))


def _eap(ptype: int, critical: bool, body: bytes) -> EapPayload:
    # RFC 3748 §4: Code | Identifier | Length | [Type | Type-Data]. ``data`` is the Type-Data.
    _need(body, 4, "EAP header")
    code, ident, elen = body[0], body[1], _U16.unpack_from(body, 2)[0]
    if elen > len(body) or elen < 4:
        raise _Bad(f"EAP length {elen} does not fit payload ({len(body)} bytes)")
    if code in (1, 2) and elen >= 5:
        return EapPayload(ptype, critical, code, ident, body[4], body[5:elen])
    return EapPayload(ptype, critical, code, ident, None, body[4:elen])


def _v4(b: bytes) -> str:
    return str(ipaddress.IPv4Address(b))


def _v6(b: bytes) -> str:
    return str(ipaddress.IPv6Address(b))


def cp_attribute_text(atype: int, value: bytes, version: int = 2) -> str:
    """A CP (IKEv2, RFC 7296 §3.15.1) or Config Mode (IKEv1) attribute value in words.

    Addresses as text, "addr/prefix" for IPv6 address+prefix, subnets as "addr/mask", strings
    as text. An empty value (a request) is "". XAUTH passwords are never shown.
    """
    n = len(value)
    if n == 0:
        return ""
    if atype in (1, 2, 3, 4, 6, 20) and n == 4:
        return _v4(value)
    if atype == 13 and n == 8:
        return f"{_v4(value[:4])}/{_v4(value[4:])}"
    if atype in (8, 15, 18, 21) and n == 17:
        return f"{_v6(value[:16])}/{value[16]}"
    if atype in (10, 12, 21) and n == 16:
        return _v6(value)
    if atype == 14 and n % 2 == 0:
        enum = iana.ConfigAttribute if version == 2 else iana.Ikev1ConfigAttribute
        return " ".join(iana.name(enum, _U16.unpack_from(value, i)[0]) for i in range(0, n, 2))
    if version == 1 and atype == 16522:  # XAUTH_USER_PASSWORD: a secret
        return f"<{n} bytes hidden>"
    texts = (7, 25) if version == 2 else (7, 16521, 16524, 16526, 28672, 28674, 28675)
    if atype in texts and all(32 <= c < 127 or c in (9, 10, 13) for c in value):
        return value.decode("ascii")
    if n <= 4:
        return str(int.from_bytes(value, "big"))
    return value.hex()


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
