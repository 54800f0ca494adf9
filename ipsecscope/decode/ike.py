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
    Flawed,
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
from ipsecscope.model.plural import plural, with_article
from ipsecscope.model.proposals import AEAD

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
        bad = bad or _sa_header_fault(hdr, payloads)
    elif hdr.major == 1:
        payloads, bad = ikev1.parse_body(hdr, body)
    else:
        return _message(dgram, hdr, (), data, f"unsupported IKE major version {hdr.major}")
    # A short datagram (snaplen, lost IP fragment) is the root cause of any payload fault after
    # it, so its reason wins.
    return _message(dgram, hdr, payloads, data[: min(n, hdr.length)] if reason is None else data,
                    reason or bad)


def parse_payload_chain(first_type: int, data: bytes, version: int, base_offset: int = 0,
                        header: IkeHeader | None = None) -> tuple[tuple[AnyPayload, ...], str | None]:
    """Decode a chain of payloads starting with ``first_type``.

    ``version`` 2: IKEv2 generic headers (used on SK plaintext); 1: ISAKMP (used on decrypted
    IKEv1 bodies; trailing zero padding after the last payload is accepted, RFC 2409 §5.3).
    ``base_offset`` is where ``data`` starts inside the whole message, so SK offsets stay absolute.
    ``header`` (IKEv2): the message's, so the SA rules that depend on it (an offer numbers its
    first proposal 1, an answer carries one proposal) hold inside SK as in clear text.
    Returns the payloads decoded and a malformed reason or None. Never raises.
    """
    data = bytes(data)
    try:
        if version == 1:
            return ikev1.parse_chain(first_type, data, base_offset)
        payloads, bad = _chain_v2(first_type, data, base_offset)
        if header is not None:
            bad = bad or _sa_header_fault(header, payloads)
        return payloads, bad
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
                out.append(dec(ptype, critical, body))
            except Flawed as e:
                out.append(e.payload)  # type: ignore[arg-type]
                bad = bad or f"payload {idx} ({payload_name(ptype)}): {e}"
            except BadPayload as e:
                out.append(Payload(ptype, critical, body))
                bad = bad or f"payload {idx} ({payload_name(ptype)}): {e}"
        off += plen
        ptype = nxt
    if off != n:
        bad = bad or f"{n - off} bytes after the last payload"
    return tuple(out), bad


# -- SA (RFC 7296 §3.3)

_P = iana.ProtocolId
# RFC 7296 §3.3.1 SPI Size: "8 for IKE, 4 for ESP and AH"; an IKE proposal has none in IKE_SA_INIT
# (the SPI is the header's). RFC 4595 (Fibre Channel) defines 4 and 5 with SPIs of its own.
_PROPOSAL_SPI = {_P.IKE: (0, 8), _P.AH: (4,), _P.ESP: (4,)}


def _sa(ptype: int, critical: bool, body: bytes) -> SaPayload:
    proposals: list[Proposal] = []
    faults: list[str] = []
    off, n = 0, len(body)
    while off < n:
        pnum = len(proposals) + 1
        if n - off < 8:
            raise BadPayload(f"proposal {pnum} header truncated ({n - off} bytes left)")
        more, _r, plen, num, proto, spisize, ntrans = _PROP_HDR.unpack_from(body, off)
        if plen < 8 + spisize or plen > n - off:
            raise BadPayload(f"proposal {pnum} length {plen} invalid ({n - off} bytes left, SPI size {spisize})")
        # Which SA a proposal is for, and its SPI, are what the SA model is built from: a protocol
        # outside the registry (IKEv2 Security Protocol Identifiers: 1-5, 201-255 private use) or
        # an SPI of another size than the protocol's would name no SA: kept undecoded.
        if not (1 <= proto <= 5 or proto >= 201):
            raise BadPayload(f"proposal {pnum} protocol ID {proto} is unassigned; 1 (IKE), 2 (AH) or 3 (ESP) "
                             "(RFC 7296 §3.3.1)")
        if spisize not in _PROPOSAL_SPI.get(proto, (spisize,)):  # type: ignore[call-overload]
            raise BadPayload(f"proposal {pnum} {_P(proto).name} SPI size {spisize}; "
                             f"{'0 or 8' if proto == _P.IKE else '4'} (RFC 7296 §3.3.1)")
        spi = body[off + 8: off + 8 + spisize]
        transforms = parse_transforms(body, off + 8 + spisize, off + plen, pnum,
                                      iana.TransformAttribute.KEY_LENGTH, faults=faults)
        if len(transforms) != ntrans:
            raise BadPayload(f"proposal {pnum} declares {ntrans} transforms, has {len(transforms)}")
        proposals.append(Proposal(num, proto, spi, transforms))
        off += plen
        if more == 0 and off < n:
            raise BadPayload(f"{n - off} bytes after the last proposal")
        if more != (2 if off < n else 0):
            # RFC 7296 §3.3.1: Last Substruc is 0 for the last proposal, 2 when more follow
            faults.append(f"proposal {pnum} Last Substruc {more}, "
                          f"{'2: more proposals follow' if off < n else '0: it is the last'} (RFC 7296 §3.3.1)")
    # RFC 7296 §3.3.1 Proposal Num: "the first proposal in an SA payload MUST be 1, and subsequent
    # proposals MUST be one more than the previous proposal". An answer carries one proposal with
    # the number of the one it accepted: any number but 0 (no offer has it).
    nums = [p.num for p in proposals]
    if (len(nums) > 1 and nums != list(range(1, len(nums) + 1))) or 0 in nums:
        faults.insert(0, f"proposals numbered {', '.join(map(str, nums))}; an offer numbers them 1, 2, … "
                         "(RFC 7296 §3.3.1)")
    faults.extend(f for f in map(_missing_transforms, proposals) if f)
    faults.extend(f for f in map(_aead_with_integ, proposals) if f)
    sa = SaPayload(ptype, critical, tuple(proposals))
    if faults:
        raise Flawed(sa, faults[0])
    return sa


_T = iana.TransformType
_E = iana.EncrTransform
# RFC 7296 §3.3.3: the transform types each protocol's proposal carries (offer and answer alike:
# the accepted proposal holds one of each type offered). INTEG is left out with a combined-mode
# (AEAD) cipher (RFC 5282 §8, RFC 7296 §3.3), so it is checked apart; D-H is optional for AH/ESP.
_MANDATORY = {_P.IKE: (_T.ENCR, _T.PRF, _T.KE), _P.ESP: (_T.ENCR, _T.ESN), _P.AH: (_T.INTEG, _T.ESN)}
_MANDATORY_TEXT = {_P.IKE: "ENCR, PRF, D-H and INTEG unless its cipher is AEAD (RFC 7296 §3.3.3, RFC 5282 §8)",
                   _P.ESP: "ENCR, ESN and INTEG unless its cipher is AEAD (RFC 7296 §3.3.3, RFC 5282 §8)",
                   _P.AH: "INTEG and ESN (RFC 7296 §3.3.3)"}
# ENCR IDs known to be plain ciphers (need INTEG beside them); any other ID (AEAD, private use,
# unassigned) might be combined mode, so a proposal with one is not told it lacks INTEG.
_PLAIN_ENCR = frozenset((1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 23, 24))


def _missing_transforms(p: Proposal) -> str | None:
    """What RFC 7296 §3.3.3 requires of a proposal of ``p.protocol`` that it lacks, as a fault."""
    need = _MANDATORY.get(p.protocol)  # type: ignore[call-overload]
    if need is None:  # Fibre Channel (RFC 4595), private use: their own rules
        return None
    types = {t.type for t in p.transforms}
    missing = [t for t in need if t not in types]
    encr = [t.id for t in p.transforms if t.type == _T.ENCR]
    if p.protocol != _P.AH and encr and _T.INTEG not in types and all(i in _PLAIN_ENCR for i in encr):
        missing.insert(1, _T.INTEG)
    if not missing:
        return None
    names = ["D-H" if t == _T.KE else _T(t).name for t in missing]
    text = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
    return (f"proposal {p.num} {_P(p.protocol).name} has no {text} transform; "
            f"{with_article(_P(p.protocol).name)} proposal carries {_MANDATORY_TEXT[p.protocol]}")


# Combined-mode (AEAD) ciphers, encryption and integrity in one ENCR transform: RFC 7296 §3.3 says
# they "MUST either offer no integrity algorithm or a single integrity algorithm of NONE", and RFC 5282
# §8 that a proposal whose ciphers are all "authenticated encryption algorithms" (IKE or ESP SAs)
# "MUST NOT propose any integrity transforms". Each ID with the text that makes it one, and the SAs it
# is defined for:
# - AES-CCM 14-16, AES-GCM 18-20 (RFC 5282 §8 names them), ChaCha20-Poly1305 28 (RFC 7634 §4: an
#   AEAD for IKE and ESP);
# - Camellia-CCM 25-27: RFC 5529 §3.2, "Camellia in CTR and CCM modes is used in IPsec as AES in"
#   RFC 4309, CCM giving confidentiality, data origin authentication and integrity (its abstract)
#   for IKEv2 and ESP: an authenticated encryption algorithm of RFC 5282 §8;
# - ENCR_NULL_AUTH_AES_GMAC 21, ESP only: RFC 4543 §3 defines it as an ESP "combined mode"
#   algorithm, "rather than an ESP integrity algorithm", registered as a Type 1 transform; it
#   encrypts nothing, so RFC 5282 §8's authenticated encryption does not name it, RFC 7296 §3.3's
#   combined mode does. RFC 4543 §5.1 defines no use for an IKE SA: an IKE proposal with it is not
#   held to this rule.
_AEAD_REFS = {i: ("RFC 5282 §8", (_P.IKE, _P.ESP)) for i in (_E.ENCR_AES_CCM_8, _E.ENCR_AES_CCM_12, _E.ENCR_AES_CCM_16,
                                                             _E.ENCR_AES_GCM_8, _E.ENCR_AES_GCM_12, _E.ENCR_AES_GCM_16,
                                                             _E.ENCR_CHACHA20_POLY1305)}
_AEAD_REFS.update({i: ("RFC 5529 §3.2, RFC 5282 §8", (_P.IKE, _P.ESP))
                   for i in (_E.ENCR_CAMELLIA_CCM_8, _E.ENCR_CAMELLIA_CCM_12, _E.ENCR_CAMELLIA_CCM_16)})
_AEAD_REFS[_E.ENCR_NULL_AUTH_AES_GMAC] = ("RFC 4543 §3", (_P.ESP,))
assert set(_AEAD_REFS) == AEAD  # model.proposals.AEAD: every combined-mode ID the renderer knows is checked


def _aead_refs(ids: list[int]) -> str:
    """The RFC sections that make ``ids`` combined mode, each once, in order."""
    refs: list[str] = []
    for i in ids:
        for r in _AEAD_REFS[i][0].split(", "):
            if r not in refs:
                refs.append(r)
    return ", ".join(refs)


def _integ_name(tid: int) -> str:
    try:
        return iana.IntegTransform(tid).name
    except ValueError:
        return f"INTEG {tid}"


def _aead_integ(p: Proposal) -> tuple[list[int], list[int]]:
    """``p``'s AEAD cipher IDs (``_AEAD_REFS``, for the protocols each is defined for) and INTEG IDs
    other than NONE; none for a protocol other than IKE and ESP, the SAs RFC 5282 §8 speaks of (AH
    has no cipher, private use its own rules)."""
    if p.protocol not in (_P.IKE, _P.ESP):
        return [], []
    return ([t.id for t in p.transforms if t.type == _T.ENCR and t.id in _AEAD_REFS
             and p.protocol in _AEAD_REFS[t.id][1]],
            [t.id for t in p.transforms if t.type == _T.INTEG and t.id != 0])


def _aead_with_integ(p: Proposal) -> str | None:
    """A proposal (offer or answer) whose ciphers are all AEAD and that carries an INTEG transform
    other than NONE, as a fault. RFC 5282 §8: "if all of the encryption algorithms in any proposal
    are authenticated encryption algorithms, then the proposal MUST NOT propose any integrity
    transforms"; RFC 7296 §3.3 (later) allows a single NONE. An offer that mixes AEAD and plain
    ciphers with INTEG beside them is not flagged: RFC 7296 §3.3 asks for two proposals there only
    in prose (lowercase "must", not RFC 2119), RFC 5282 §8 forbids INTEG only when every cipher is
    AEAD, and a responder that picks the AEAD one selects no INTEG; its answer is checked apart
    (``_sa_header_fault``)."""
    encr = [t.id for t in p.transforms if t.type == _T.ENCR]
    aead, integ = _aead_integ(p)
    if not encr or len(aead) != len(encr) or not integ:
        return None
    return (f"proposal {p.num} {_P(p.protocol).name} has {', '.join(map(_integ_name, integ))} beside its AEAD "
            f"{'cipher' if len(aead) == 1 else 'ciphers'} {', '.join(iana.EncrTransform(i).name for i in aead)}; "
            "a proposal whose ciphers are all AEAD carries no INTEG transform, or INTEG NONE "
            f"({_aead_refs(aead)}, RFC 7296 §3.3)")


def _sa_header_fault(hdr: IkeHeader, payloads: tuple[AnyPayload, ...]) -> str | None:
    """SA rules that need the header's Response flag or exchange, for the payloads of a message
    (clear text, or SK's once decrypted: ``parse_payload_chain(header=)``): an offer (a request)
    numbers its first proposal 1, even when it makes only one (RFC 7296 §3.3.1); an answer
    carries the single proposal it accepted (§2.7: "The responder MUST accept a single proposal
    or reject them all"); an IKE proposal's SPI Size "MUST be zero" in IKE_SA_INIT (§3.3.1)."""
    for i, p in enumerate(payloads, 1):
        if not isinstance(p, SaPayload) or not p.proposals:
            continue
        if not hdr.is_response and p.proposals[0].num != 1:  # a request: an offer
            return (f"payload {i} (SA): the first proposal of an offer is numbered {p.proposals[0].num}, "
                    "not 1 (RFC 7296 §3.3.1)")
        if hdr.is_response and len(p.proposals) > 1:
            return (f"payload {i} (SA): an answer carries {len(p.proposals)} proposals; the responder accepts a "
                    "single one (RFC 7296 §2.7)")
        if hdr.is_response:
            # RFC 5282 §8: "when an authenticated encryption algorithm is selected as the encryption
            # algorithm for any SA (IKE or ESP), an integrity algorithm MUST NOT be selected for that SA";
            # an answer whose ciphers are all AEAD is told so by _sa already, this is the answer that
            # also (wrongly) holds a second, plain cipher. AES-GMAC, which RFC 5282 §8 does not name:
            # RFC 4543 §3 makes it a combined mode, "rather than an ESP integrity algorithm"
            pr = p.proposals[0]
            aead, integ = _aead_integ(pr)
            if aead and integ:
                refs = _aead_refs(aead[:1])
                return (f"payload {i} (SA): proposal {pr.num} {_P(pr.protocol).name}: the answer selects "
                        f"{', '.join(map(_integ_name, integ))} with AEAD cipher "
                        f"{iana.EncrTransform(aead[0]).name}; an SA with an AEAD cipher has no integrity "
                        f"algorithm selected ({refs if '5282' in refs else refs + ', RFC 7296 §3.3'})")
        if hdr.exchange == iana.ExchangeType.IKE_SA_INIT:
            for pr in p.proposals:
                if pr.protocol == _P.IKE and pr.spi:
                    return (f"payload {i} (SA): proposal {pr.num} has an IKE SPI of "
                            f"{plural(len(pr.spi), 'byte')} in IKE_SA_INIT, where the SPI size is 0 "
                            "(RFC 7296 §3.3.1)")
    return None


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


# Notify data sizes an RFC fixes: (smallest, largest, what it holds, where). A notify that breaks
# one is kept (its type is the refusal or status a peer reads, tshark shows it too) and its message
# is marked malformed, as tshark does for a short INVALID_KE_PAYLOAD ("Notification DATA:
# <MISSING>", Openswan's lp08 parentR1notify frame 2).
# NAT detection data is a SHA-1 hash, exactly 20 octets: any other length is no hash to compare,
# and compared anyway it "does not match" and explains a NAT or forced encapsulation that is not.
_NOTIFY_DATA = {
    N.INVALID_KE_PAYLOAD: (2, 2, "the accepted D-H group takes", "RFC 7296 §3.10.1"),
    N.NAT_DETECTION_SOURCE_IP: (20, 20, "a SHA-1 hash takes", "RFC 7296 §2.23"),
    N.NAT_DETECTION_DESTINATION_IP: (20, 20, "a SHA-1 hash takes", "RFC 7296 §2.23"),
    N.COOKIE: (1, 64, "a cookie takes", "RFC 7296 §2.6"),
    # RFC 7296 §1.3.3: "There is no data associated with this Notify message type."
    N.REKEY_SA: (0, 0, "REKEY_SA takes", "RFC 7296 §1.3.3"),
    # RFC 7296 §2.3: "The data associated with a SET_WINDOW_SIZE notification MUST be 4 octets long"
    N.SET_WINDOW_SIZE: (4, 4, "a window size takes", "RFC 7296 §2.3"),
    # RFC 4555 §4.2.5: COOKIE2 data "MUST be between 8 and 64 octets in length (inclusive)"
    N.COOKIE2: (8, 64, "a COOKIE2 takes", "RFC 4555 §4.2.5"),
    # RFC 7383 §2.3: the notification is its header alone (Protocol ID 0, SPI Size 0, type 16430),
    # with no Notification Data.
    N.IKEV2_FRAGMENTATION_SUPPORTED: (0, 0, "IKEV2_FRAGMENTATION_SUPPORTED takes", "RFC 7383 §2.3"),
    # Not here, for want of a rule: MOBIKE_SUPPORTED's data "MUST be ignored" when received (RFC 4555
    # §4.2.1: it is left for future versions); USE_TRANSPORT_MODE, ESP_TFC_PADDING_NOT_SUPPORTED,
    # NON_FIRST_FRAGMENTS_ALSO (§1.3.1) and INITIAL_CONTACT (§2.4) are described by what they mean,
    # with no sentence on their data.
}


def _notify_fault(p: NotifyPayload) -> str | None:
    nt, ln = p.notify_type, len(p.data)
    size = _NOTIFY_DATA.get(nt)  # type: ignore[call-overload]
    if size is not None and not size[0] <= ln <= size[1]:
        want = str(size[0]) if size[0] == size[1] else f"{size[0]} to {size[1]}"
        return f"{N(nt).name} data is {plural(ln, 'byte')}, {size[2]} {want} ({size[3]})"
    if nt == N.SIGNATURE_HASH_ALGORITHMS and ln % 2:
        return (f"SIGNATURE_HASH_ALGORITHMS data is {plural(ln, 'byte')}, not a list of 2-byte hash "
                "algorithm numbers (RFC 7427 §4)")
    if nt == N.REKEY_SA and (p.protocol not in (iana.ProtocolId.AH, iana.ProtocolId.ESP) or len(p.spi) != 4):
        # RFC 7296 §1.3.3: the SA being rekeyed is named by the SPI field, Protocol ID "3 for ESP
        # and 2 for AH"; their SPIs are 4 octets (§3.3.1)
        return (f"REKEY_SA names protocol {p.protocol} with an SPI of {plural(len(p.spi), 'byte')}; "
                "it rekeys an ESP (3) or AH (2) SA by its 4-byte SPI (RFC 7296 §1.3.3)")
    return None


def _notify(ptype: int, critical: bool, body: bytes) -> NotifyPayload:
    need(body, 4, "Notify header")
    proto, spisize, nt = body[0], body[1], _U16.unpack_from(body, 2)[0]
    if spisize > len(body) - 4:
        raise BadPayload(f"SPI size {spisize} exceeds payload ({len(body) - 4} bytes left)")
    spi = body[4: 4 + spisize]
    data = body[4 + spisize:]
    p = NotifyPayload(ptype, critical, proto, spi, nt, data, _notify_decoded(nt, spi, data))
    if why := _notify_fault(p):
        raise Flawed(p, why)
    return p


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
    p = DeletePayload(ptype, critical, proto, spis)
    if (extra := len(body) - 4 - spisize * count) > 0:
        # SPIs are counted (RFC 7296 §3.11): bytes past them are no SPI we can name
        raise Flawed(p, f"{plural(extra, 'byte')} after its {plural(count, 'SPI')}")
    return p


def _vendor(ptype: int, critical: bool, body: bytes) -> VendorPayload:
    return VendorPayload(ptype, critical, body, vendor_name(body))


# -- Traffic selectors (RFC 7296 §3.13)


def _ts(ptype: int, critical: bool, body: bytes) -> TsPayload:
    # A TS payload that contradicts RFC 7296 is kept undecoded: its selectors would otherwise
    # become the CHILD SA's and drive ESP-OUTSIDE-SELECTORS / TS findings on what the peer never
    # meant (tshark shows the fields as sent; the malformed mark says why they are not used).
    need(body, 4, "TS header")
    count = body[0]
    if count == 0:
        raise BadPayload("no traffic selectors; a TS payload carries one or more (RFC 7296 §2.9)")
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
            if why := _ts_range_fault(proto, sport, eport, a, b):
                raise BadPayload(f"selector {i + 1} {why}")
            sels.append(TrafficSelector(tstype, proto, sport, eport, str(ipaddress.ip_address(a)),
                                        str(ipaddress.ip_address(b))))
        else:
            if tstype < 241 and tstype not in (iana.TsType.TS_FC_ADDR_RANGE, iana.TsType.TS_SECLABEL):
                # IANA "IKEv2 Traffic Selector Types": 7-10 assigned, 241-255 private use
                raise BadPayload(f"selector {i + 1} TS type {tstype} is unassigned (RFC 7296 §3.13.1)")
            if tstype == iana.TsType.TS_FC_ADDR_RANGE and slen != 16:
                # RFC 4595 §4.2: header, two 24-bit addresses (each after a reserved octet), R_CTL and Type ranges
                raise BadPayload(f"selector {i + 1} (TS_FC_ADDR_RANGE) length {slen}, expected 16 (RFC 4595 §4.2)")
            # TS_SECLABEL / FC / private: no address range; keep the body as hex so it is visible.
            sels.append(TrafficSelector(tstype, proto, 0, 0, body[off + 4: off + slen].hex(), ""))
        off += slen
    if off != n:
        raise BadPayload(f"{n - off} bytes after {count} selectors")
    return TsPayload(ptype, critical, tuple(sels))


def _ts_range_fault(proto: int, sport: int, eport: int, a: bytes, b: bytes) -> str | None:
    """Why an address-range selector contradicts RFC 7296 §3.13.1, else None.

    Start/End are the smallest and largest address and port included; the one exception is
    OPAQUE ports, "start port 65535 and end port 0". For protocol 0 the ports are undefined and
    "MUST be zero" (start) and "MUST be 65535" (end).
    """
    if a > b:  # same length, big-endian: byte order is numeric order
        return (f"start address {ipaddress.ip_address(a)} is above end address {ipaddress.ip_address(b)} "
                "(RFC 7296 §3.13.1)")
    if proto == 0 and (sport, eport) != (0, 65535):
        return f"protocol 0 with ports {sport}-{eport}; any protocol takes ports 0-65535 (RFC 7296 §3.13.1)"
    if sport > eport and (sport, eport) != (65535, 0):
        return (f"start port {sport} is above end port {eport}; only OPAQUE is written 65535-0 "
                "(RFC 7296 §3.13.1)")
    return None


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
