"""IKEv1 / ISAKMP cleartext payloads (RFC 2408 §3, RFC 2407 §4, RFC 2409, RFC 3947).

Called by :func:`ipsecscope.decode.ike.parse_ike` for major version 1, and by
``parse_payload_chain(first, plaintext, 1)`` once the crypto stage has decrypted a body.

Encrypted messages (ISAKMP flags bit 0, RFC 2408 §3.1 "E") are kept as ONE opaque
:class:`Payload` whose ``type`` is the header's next-payload value (the type of the first,
still encrypted, payload) and whose ``body`` is everything after the header. Consumers tell it
apart with ``msg.header.encrypted_v1``.

IKEv1 payloads have no critical bit (the byte is RESERVED), so ``critical`` is always False.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from ipsecscope.decode.isakmp import (
    HEADER_LEN,
    BadPayload,
    Flawed,
    chain_fault,
    cp_attribute_text,
    parse_attributes,
    parse_transforms,
    payload_name,
    render_id,
)
from ipsecscope.decode.vendor_ids import vendor_name
from ipsecscope.model import iana
from ipsecscope.model.ike import (
    NAT_D_DRAFT_04_08,
    NAT_OA_DRAFT_04_08,
    AnyPayload,
    CertPayload,
    CpPayload,
    DeletePayload,
    FragmentPayload,
    HashPayload,
    IdPayload,
    IkeHeader,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    VendorPayload,
)

__all__ = ["parse_body", "parse_chain", "attribute_name", "attribute_value_name", "config_attribute_text"]

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_SA_HDR = struct.Struct("!II")  # DOI, situation
_PROP_HDR = struct.Struct("!BBHBBBB")  # next, reserved, length, number, protocol, SPI size, #transforms
_NOTIFY_HDR = struct.Struct("!IBBH")  # DOI, protocol, SPI size, type
_DELETE_HDR = struct.Struct("!IBBH")  # DOI, protocol, SPI size, #SPIs
P = iana.Ikev1Payload


def parse_body(hdr: IkeHeader, body: bytes) -> tuple[tuple[AnyPayload, ...], str | None]:
    """Payloads of one IKEv1 message body (after the 28-byte header, isakmp.HEADER_LEN)."""
    if hdr.flags & 0x01:
        # Encrypted with the phase-1 key; the crypto stage decrypts from msg.raw.
        return (Payload(hdr.next_payload, False, body),), None
    return parse_chain(hdr.next_payload, body, HEADER_LEN, phase1=hdr.exchange in PHASE1_EXCHANGES)


# Main Mode and Aggressive Mode (RFC 2409 §5): the exchanges that carry NAT-D (RFC 3947 §3.2).
PHASE1_EXCHANGES = frozenset((2, 4))


def parse_chain(first: int, data: bytes, base: int = 0, phase1: bool = False) -> tuple[tuple[AnyPayload, ...], str | None]:
    """Walk an ISAKMP payload chain. Never raises (see decode.ike for the malformed rules).

    Bytes after the last payload are accepted when they can be CBC padding (RFC 2409 §5.3): all
    zero (strongSwan, Openswan) or ending in their own count minus one. Anything else there is
    payloads the chain does not reach (a Next Payload of 0 too early), which is marked: dropped
    unsaid, a Quick Mode's SA and IDs vanished from a message shown as decrypted.
    """
    out: list[AnyPayload] = []
    bad: str | None = None
    ptype, off, n, idx = first, 0, len(data), 0
    while ptype != 0:
        idx += 1
        left = n - off
        if left < 4 or not 4 <= (plen := _U16.unpack_from(data, off + 2)[0]) <= left:
            return tuple(out), bad or chain_fault(data, off, idx, ptype, 1)
        nxt = data[off]
        body = data[off + 4: off + plen]
        dec = _PHASE1_DECODERS.get(ptype) if phase1 and ptype in _PHASE1_DECODERS else _DECODERS.get(ptype)
        if dec is None:
            out.append(Payload(ptype, False, body))
            if ptype < 128 and ptype not in _V1_TYPES:
                # RFC 2408 §3.1 / §5.1: a Next Payload outside the registry is INVALID-PAYLOAD-TYPE
                # (128-255 are private use)
                bad = bad or f"payload {idx} type {ptype} is unassigned (RFC 2408 §3.1)"
        else:
            try:
                out.append(dec(ptype, body))
            except Flawed as e:
                out.append(e.payload)  # type: ignore[arg-type]
                bad = bad or f"payload {idx} ({payload_name(ptype, 1)}): {e}"
            except BadPayload as e:
                out.append(Payload(ptype, False, body))
                bad = bad or f"payload {idx} ({payload_name(ptype, 1)}): {e}"
        off += plen
        ptype = nxt
    tail = data[off:]
    if tail and any(tail) and tail[-1] != len(tail) - 1:
        bad = bad or (f"{len(tail)} bytes after the last payload are no padding (RFC 2409 §5.3): "
                      "its Next Payload ends the chain early")
    return tuple(out), bad


_V1_TYPES = frozenset(int(t) for t in P)


# ---- attribute naming (phase 1 vs IPsec DOI) ---------------------------------------------------


def attribute_name(protocol: int, atype: int) -> str:
    """Name of a transform attribute: phase-1 (ISAKMP proposal) or IPsec DOI (AH/ESP/IPCOMP)."""
    enum = iana.Ikev1Attribute if protocol == iana.Ikev1ProtocolId.PROTO_ISAKMP else iana.Ikev1IpsecAttribute
    return iana.name(enum, atype)


_P1_VALUES: dict[int, type] = {
    iana.Ikev1Attribute.ENCRYPTION_ALGORITHM: iana.Ikev1EncrAlgorithm,
    iana.Ikev1Attribute.HASH_ALGORITHM: iana.Ikev1HashAlgorithm,
    iana.Ikev1Attribute.PRF: iana.Ikev1HashAlgorithm,
    iana.Ikev1Attribute.AUTHENTICATION_METHOD: iana.Ikev1AuthMethod,
    iana.Ikev1Attribute.GROUP_DESCRIPTION: iana.DhGroup,
    iana.Ikev1Attribute.GROUP_TYPE: iana.Ikev1GroupType,
    iana.Ikev1Attribute.LIFE_TYPE: iana.Ikev1LifeType,
}
_P2_VALUES: dict[int, type] = {
    iana.Ikev1IpsecAttribute.SA_LIFE_TYPE: iana.Ikev1LifeType,
    iana.Ikev1IpsecAttribute.GROUP_DESCRIPTION: iana.DhGroup,
    iana.Ikev1IpsecAttribute.ENCAPSULATION_MODE: iana.Ikev1EncapsulationMode,
    iana.Ikev1IpsecAttribute.AUTHENTICATION_ALGORITHM: iana.Ikev1AuthAlgorithm,
}


def attribute_value_name(protocol: int, atype: int, value: int | bytes) -> str:
    """Value of a transform attribute in words ("AES_CBC", "SECONDS", "28800", hex for blobs)."""
    if isinstance(value, bytes):
        if len(value) <= 4:  # e.g. a life duration sent as a 4-byte variable attribute
            value = int.from_bytes(value, "big")
        else:
            return value.hex()
    table = _P1_VALUES if protocol == iana.Ikev1ProtocolId.PROTO_ISAKMP else _P2_VALUES
    enum = table.get(atype)
    return iana.name(enum, value) if enum is not None else str(value)


# ---- payload bodies ---------------------------------------------------------------------------


# IPsec DOI Protocol Identifiers (RFC 2407 §4.4.1; 5 is RFC 4705's), 249-255 private use. AH and
# ESP SPIs are 32 bits (RFC 4302 §2.4, RFC 4303 §2.1): another size names no SA the ESP seen can have.
_V1_PROTOCOLS = frozenset(int(t) for t in iana.Ikev1ProtocolId if t)
_V1_SPI4 = (iana.Ikev1ProtocolId.PROTO_IPSEC_AH, iana.Ikev1ProtocolId.PROTO_IPSEC_ESP)


def _sa(ptype: int, body: bytes) -> SaPayload:
    if len(body) < 8:
        raise BadPayload(f"SA header needs 8 bytes (DOI, situation), payload has {len(body)}")
    doi, situation = _SA_HDR.unpack_from(body, 0)
    # RFC 2407 §4.6.1: SIT_SECRECY / SIT_INTEGRITY add labelled-domain data we do not decode; the
    # proposals then start later. Those situations are unseen outside military networks.
    off, n = 8, len(body)
    proposals: list[Proposal] = []
    faults: list[str] = []
    if doi == iana.Ikev1Doi.IPSEC and situation & 0x06:
        return SaPayload(ptype, False, (), doi, situation)
    # RFC 2408 §3.5: a proposal's Next Payload is 2 when another proposal follows, 0 for the last.
    # The walk stops at the first that is not 2, as tshark's does; bytes left after it are said
    # (they used to be dropped unsaid), and a 2 on the last proposal too.
    pnext = P.P
    while pnext == P.P and off < n:
        pnum = len(proposals) + 1
        if n - off < 8:
            raise BadPayload(f"proposal {pnum} header truncated ({n - off} bytes left)")
        pnext, _r, plen, num, proto, spisize, ntrans = _PROP_HDR.unpack_from(body, off)
        if plen < 8 + spisize or plen > n - off:
            raise BadPayload(f"proposal {pnum} length {plen} invalid ({n - off} bytes left, SPI size {spisize})")
        if doi == iana.Ikev1Doi.IPSEC and proto not in _V1_PROTOCOLS and proto < 249:
            raise BadPayload(f"proposal {pnum} protocol {proto} is unassigned (RFC 2407 §4.4.1)")
        if proto in _V1_SPI4 and spisize != 4:
            raise BadPayload(f"proposal {pnum} {iana.Ikev1ProtocolId(proto).name} SPI size {spisize}; "
                             "AH and ESP SPIs are 4 bytes (RFC 4302 §2.4, RFC 4303 §2.1)")
        spi = body[off + 8: off + 8 + spisize]
        klen_attr = (iana.Ikev1Attribute.KEY_LENGTH if proto == iana.Ikev1ProtocolId.PROTO_ISAKMP
                     else iana.Ikev1IpsecAttribute.KEY_LENGTH)
        # v1 transforms carry a number, not a type: parse_transforms keeps it in Transform.type.
        transforms = parse_transforms(body, off + 8 + spisize, off + plen, pnum, klen_attr, v1=True, faults=faults)
        if len(transforms) != ntrans:
            raise BadPayload(f"proposal {pnum} declares {ntrans} transforms, has {len(transforms)}")
        proposals.append(Proposal(num, proto, spi, transforms))
        off += plen
        if pnext != (P.P if off < n else 0):
            faults.append(f"proposal {pnum} Next Payload {pnext}, "
                          f"{f'yet {n - off} bytes follow it' if off < n else '0: it is the last'} (RFC 2408 §3.5)")
    sa = SaPayload(ptype, False, tuple(proposals), doi, situation)
    if faults:
        raise Flawed(sa, faults[0])
    return sa


def _ke(ptype: int, body: bytes) -> KePayload:
    return KePayload(ptype, False, 0, body)  # the group is negotiated in the SA (RFC 2409 §5)


def _nonce(ptype: int, body: bytes) -> NoncePayload:
    p = NoncePayload(ptype, False, body)
    if not 8 <= len(body) <= 256:
        # RFC 2409 §5: "The length of nonce payload MUST be between 8 and 256 bytes inclusive."
        raise Flawed(p, f"nonce of {len(body)} bytes; RFC 2409 §5 takes 8 to 256")
    return p


_I = iana.Ikev1IdType
# RFC 2407 §4.6.2.2-4.6.2.11: the address types have fixed sizes (an address, address and mask,
# or two addresses). Read at another size they are no address: a Quick Mode ID is the CHILD SA's
# selector, so such an ID is kept undecoded rather than shown as a selector it is not.
_ID_SIZE = {_I.ID_IPV4_ADDR: 4, _I.ID_IPV4_ADDR_SUBNET: 8, _I.ID_IPV4_ADDR_RANGE: 8, _I.ID_IPV6_ADDR: 16,
            _I.ID_IPV6_ADDR_SUBNET: 32, _I.ID_IPV6_ADDR_RANGE: 32}


def _id(ptype: int, body: bytes) -> IdPayload:
    # RFC 2407 §4.6.2: ID type | protocol ID | port | identification data
    if len(body) < 4:
        raise BadPayload(f"ID header needs 4 bytes, payload has {len(body)}")
    data = body[4:]
    itype = body[0]
    if not 1 <= itype <= 12 and itype < 249:  # 249-255 private use
        raise BadPayload(f"ID type {itype} is unassigned (RFC 2407 §4.6.2.1)")
    if (size := _ID_SIZE.get(itype)) is not None and len(data) != size:  # type: ignore[call-overload]
        raise BadPayload(f"{_I(itype).name} data is {len(data)} bytes; it takes {size} (RFC 2407 §4.6.2)")
    return IdPayload(ptype, False, itype, data, render_id(itype, data, 1), body[1], _U16.unpack_from(body, 2)[0])


def _nat_oa(ptype: int, body: bytes) -> IdPayload:
    # RFC 3947 §5.2: ID type | reserved(3) | address
    if len(body) < 4:
        raise BadPayload(f"NAT-OA header needs 4 bytes, payload has {len(body)}")
    data = body[4:]
    return IdPayload(ptype, False, body[0], data, render_id(body[0], data, 1))


def _hash(ptype: int, body: bytes) -> HashPayload:
    return HashPayload(ptype, False, body)


def _cert(ptype: int, body: bytes) -> CertPayload:
    if len(body) < 1:
        raise BadPayload("certificate encoding missing")
    return CertPayload(ptype, False, body[0], body[1:])


def _notify(ptype: int, body: bytes) -> NotifyPayload:
    if len(body) < 8:
        raise BadPayload(f"Notification header needs 8 bytes, payload has {len(body)}")
    _doi, proto, spisize, nt = _NOTIFY_HDR.unpack_from(body, 0)
    if spisize > len(body) - 8:
        raise BadPayload(f"SPI size {spisize} exceeds payload ({len(body) - 8} bytes left)")
    spi = body[8: 8 + spisize]
    data = body[8 + spisize:]
    decoded: dict[str, object] = {}
    if nt in (iana.Ikev1NotifyType.R_U_THERE, iana.Ikev1NotifyType.R_U_THERE_ACK) and len(data) >= 4:
        decoded["seq"] = _U32.unpack_from(data)[0]  # RFC 3706 §5: DPD sequence number
    elif nt == iana.Ikev1NotifyType.RESPONDER_LIFETIME:
        try:  # RFC 2407 §4.6.3.1: SA attributes as in a transform
            decoded["attributes"] = [
                (attribute_name(proto, t), attribute_value_name(proto, t, v))
                for t, v in parse_attributes(data, 0, len(data))]
        except BadPayload:
            pass
    elif nt == iana.Ikev1NotifyType.REPLAY_STATUS and len(data) >= 4:
        decoded["replay_detection"] = bool(_U32.unpack_from(data)[0])
    if spisize and nt != iana.Ikev1NotifyType.INITIAL_CONTACT:
        decoded.setdefault("spi", int.from_bytes(spi, "big"))
    return NotifyPayload(ptype, False, proto, spi, nt, data, decoded)


def _delete(ptype: int, body: bytes) -> DeletePayload:
    if len(body) < 8:
        raise BadPayload(f"Delete header needs 8 bytes, payload has {len(body)}")
    _doi, proto, spisize, count = _DELETE_HDR.unpack_from(body, 0)
    if spisize * count > len(body) - 8:
        raise BadPayload(f"{count} SPIs of {spisize} bytes exceed payload ({len(body) - 8} bytes left)")
    spis = tuple(body[8 + i * spisize: 8 + (i + 1) * spisize] for i in range(count)) if spisize else ()
    return DeletePayload(ptype, False, proto, spis)


def _vendor(ptype: int, body: bytes) -> VendorPayload:
    return VendorPayload(ptype, False, body, vendor_name(body))


def _attr(ptype: int, body: bytes) -> CpPayload:
    # draft-dukes-ike-mode-cfg §3.2: type | reserved | identifier(2) | attributes (basic or TLV).
    # Basic (AF=1) values are returned as their 2 bytes so CpPayload keeps one value type.
    if len(body) < 4:
        raise BadPayload(f"Attributes header needs 4 bytes, payload has {len(body)}")
    attrs = parse_attributes(body, 4, len(body))
    return CpPayload(ptype, False, body[0],
                     tuple((t, v if isinstance(v, bytes) else _U16.pack(v)) for t, v in attrs))


def _fragment(ptype: int, body: bytes) -> FragmentPayload:
    # Fragment ID (2) | Fragment Number (1) | Flags (1, bit 0 = last) | data; as Wireshark's
    # isakmp.frag.packetid / .seq / .last and strongSwan's fragment_payload.c.
    if len(body) < 4:
        raise BadPayload(f"Fragment header needs 4 bytes, payload has {len(body)}")
    frag_id = _U16.unpack_from(body)[0]
    if body[2] == 0:
        raise Flawed(FragmentPayload(ptype, False, frag_id, 0, bool(body[3] & 1), body[4:]),
                     "fragment number 0 (pieces are numbered from 1)")
    return FragmentPayload(ptype, False, frag_id, body[2], bool(body[3] & 1), body[4:])


_DECODERS: dict[int, Callable[[int, bytes], AnyPayload]] = {
    P.SA: _sa,
    P.KE: _ke,
    P.ID: _id,
    P.CERT: _cert,
    P.CR: _cert,
    P.HASH: _hash,
    P.SIG: _hash,
    P.NONCE: _nonce,
    P.N: _notify,
    P.D: _delete,
    P.VID: _vendor,
    P.ATTR: _attr,
    P.NAT_D: _hash,
    P.NAT_D_DRAFT: _hash,
    P.NAT_OA: _nat_oa,
    P.NAT_OA_DRAFT: _nat_oa,
    P.FRAG: _fragment,
}


_PHASE1_DECODERS: dict[int, Callable[[int, bytes], AnyPayload]] = {NAT_D_DRAFT_04_08: _hash, NAT_OA_DRAFT_04_08: _nat_oa}


# Kept here for callers that found it in this module first.
config_attribute_text = cp_attribute_text
