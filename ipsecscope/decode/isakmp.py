"""What IKEv1 (ISAKMP, RFC 2408) and IKEv2 (RFC 7296) decoding share.

Both versions use the same 28-byte header, the same generic payload header (next, flags, length),
the same data-attribute and transform framing, and the same identity and configuration-attribute
encodings. :mod:`.ike` (IKEv2 and the version dispatch) and :mod:`.ikev1` both build on this
module, and neither imports the other's internals: ``ike -> ikev1 -> isakmp``, ``ike -> isakmp``.

Nothing here raises on wire input except :class:`BadPayload`, which the chain walks turn into a
malformed mark on the payload.
"""

from __future__ import annotations

import ipaddress
import struct

from ipsecscope.model import iana
from ipsecscope.model.ike import IkeHeader, Transform

__all__ = ["HEADER_LEN", "IKE_HDR", "GEN_HDR", "BadPayload", "Flawed", "payload_name", "parse_header", "chain_fault",
           "need", "parse_attributes", "parse_transforms", "dn_to_text", "utf8_text", "render_id",
           "cp_attribute_text"]

HEADER_LEN = 28
IKE_HDR = struct.Struct("!8s8sBBBBII")  # SPIi, SPIr, next payload, version, exchange, flags, msg id, length
GEN_HDR = struct.Struct("!BBH")  # next payload, flags (C bit 0x80), payload length
_U16 = struct.Struct("!H")
_XFORM_HDR = struct.Struct("!BBHBBH")  # last/more, reserved, length, type, reserved, id
_ATTR_HDR = struct.Struct("!HH")  # AF|type, value or length


class BadPayload(Exception):
    """The body of one payload did not parse; the message is the reason. The chain walks of
    :mod:`.ike` and :mod:`.ikev1` catch it and mark the payload: it never escapes a decoder."""


class Flawed(Exception):
    """The body parsed, and what it says can be used, but a field contradicts its RFC (a proposal
    numbered 3 after 1, a Last Substruc that says more follow when none does). The chain walks keep
    ``payload`` decoded and mark the message malformed with the reason: the fault is visible and
    counted without losing what every dissector still reads (tshark shows such payloads)."""

    def __init__(self, payload: object, reason: str) -> None:
        super().__init__(reason)
        self.payload = payload


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



def parse_header(data: bytes) -> IkeHeader | None:
    """The 28-byte IKE header (same layout for v1 and v2, RFC 7296 §3.1 / RFC 2408 §3.1)."""
    if len(data) < HEADER_LEN:
        return None
    spi_i, spi_r, np, ver, exch, flags, msg_id, length = IKE_HDR.unpack_from(data, 0)
    return IkeHeader(spi_i, spi_r, np, ver >> 4, ver & 0x0F, exch, flags, msg_id, length)



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



def need(body: bytes, n: int, what: str) -> None:
    """Raise BadPayload unless ``body`` has ``n`` bytes for ``what``."""
    if len(body) < n:
        raise BadPayload(f"{what} needs {n} bytes, payload has {len(body)}")



def parse_attributes(data: bytes, off: int, end: int) -> tuple[tuple[int, int | bytes], ...]:
    """Data attributes (RFC 7296 §3.3.5 / RFC 2408 §3.3): AF=1 → 2-byte value, AF=0 → TLV.

    Shared with IKEv1. Raises BadPayload on a length that runs past ``end``.
    """
    attrs: list[tuple[int, int | bytes]] = []
    while off < end:
        if end - off < 4:
            raise BadPayload(f"attribute header truncated ({end - off} bytes left)")
        atype, val = _ATTR_HDR.unpack_from(data, off)
        off += 4
        if atype & 0x8000:
            attrs.append((atype & 0x7FFF, val))
        else:
            if val > end - off:
                raise BadPayload(f"attribute {atype} length {val} exceeds transform ({end - off} bytes left)")
            attrs.append((atype, data[off: off + val]))
            off += val
    return tuple(attrs)


def parse_transforms(body: bytes, toff: int, tend: int, pnum: int, klen_attr: int,
                     v1: bool = False, faults: list[str] | None = None) -> tuple[Transform, ...]:
    """The transforms of proposal ``pnum``, in ``body[toff:tend]``. Shared with IKEv1.

    Both versions frame a transform alike (RFC 7296 §3.3.2 / RFC 2408 §3.6: 8-byte header with
    its length, then attributes); the header's last four bytes differ: IKEv2 has type, reserved,
    16-bit ID; IKEv1 (``v1``) has transform number, 8-bit ID, reserved, and the number is kept in
    ``Transform.type``. ``klen_attr`` is the attribute type that carries the key length.
    Raises BadPayload naming the proposal and transform. A Last Substruc / Next Payload byte
    other than 3 (more transforms follow) or 0 (the last) in its place is appended to ``faults``
    (RFC 7296 §3.3.2, RFC 2408 §3.6): the lengths still frame the transforms.
    """
    transforms: list[Transform] = []
    while toff < tend:
        tn = len(transforms) + 1
        if tend - toff < 8:
            raise BadPayload(f"proposal {pnum} transform {tn} header truncated ({tend - toff} bytes left)")
        more, _r2, tlen, ttype, b6, tid = _XFORM_HDR.unpack_from(body, toff)
        if v1:
            tid = b6
        if tlen < 8 or tlen > tend - toff:
            raise BadPayload(f"proposal {pnum} transform {tn} length {tlen} invalid ({tend - toff} bytes left)")
        if faults is not None and more != (3 if toff + tlen < tend else 0):
            faults.append(f"proposal {pnum} transform {tn} Last Substruc {more}, "
                          f"{'3: more transforms follow' if toff + tlen < tend else '0: it is the last'} "
                          f"({'RFC 2408 §3.6' if v1 else 'RFC 7296 §3.3.2'})")
        try:
            attrs = parse_attributes(body, toff + 8, toff + tlen)
        except BadPayload as e:
            raise BadPayload(f"proposal {pnum} transform {tn}: {e}") from None
        klen = next((v for t, v in attrs if t == klen_attr and isinstance(v, int)), None)
        transforms.append(Transform(ttype, tid, klen, attrs))
        toff += tlen
    return tuple(transforms)



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


def utf8_text(b: bytes) -> str:
    """Identity/gateway text as sent; undecodable bytes stay visible as escapes."""
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
            return utf8_text(data)
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
