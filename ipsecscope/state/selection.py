"""Does an answer's SA fit the offer it answers?

RFC 7296 §3.3: the responder accepts a single proposal, and "the proposal number in the SA
payload MUST match the number on the proposal sent that was accepted"; §2.7 and §3.3.6: it picks
one transform of each type from that proposal, never one the proposal does not carry (a key length
is part of the transform, §3.3.5). §1.2: in IKE_SA_INIT the chosen KE group is the group of the
initiator's KE payload, or the answer is INVALID_KE_PAYLOAD instead. An initiator checks the answer
against what it sent: strongSwan fails the exchange ("peer's proposal selection invalid" for the
IKE SA, "no acceptable proposal found" for a CHILD SA, "peer's DH group selection invalid"), so a
responder that answers outside the offer breaks the negotiation even though the answer parses.

IKEv1 (answer_unfit_v1): the answer holds the one proposal and the one transform taken, with the
offered transform ID and attributes unchanged (RFC 2408 §4.2, RFC 2409 §5); an initiator that
finds them changed rejects the answer (strongSwan: "no proposal found" in Main Mode, "no matching
proposal found" in Quick Mode, then NO-PROPOSAL-CHOSEN). Life type and duration are left out: RFC
2407 §4.5.4 lets a responder answer a shorter lifetime, or keep the offer's and send
RESPONDER-LIFETIME (§4.6.3.1); strongSwan logs the difference and takes it.

Aggressive Mode (aggressive_ke_group, aggressive_ke_unfit) sends the KE payload with the offer, so
"the group in which the Diffie-Hellman exchange is performed cannot be negotiated" (RFC 2409 §5):
the answer's group is the one of the request's KE payload, and the answer's own KE value has that
group's length (§5: "MUST be the length of the negotiated Diffie-Hellman group"). Quick Mode
bundles (answer_unfit_bundle): proposals under one number are one AH+ESP bundle (RFC 2408 §4.2),
accepted whole or not at all, so each protocol of the answer is held against the offered bundle
of its number and none may be dropped or added.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..model import iana
from ..model.ike import Proposal, Transform
from ..model.proposals import dh_keyword, encr_keyword, integ_keyword, prf_keyword
from ..model.sa import AnswerUnfit

_T = iana.TransformType


def transform_text(t: Transform) -> str:
    """One transform as its strongSwan keyword ("aes128gcm16", "sha256", "ecp256", "esn")."""
    if t.type == _T.ENCR:
        return encr_keyword(t.id, t.key_length)
    if t.type == _T.INTEG:
        return integ_keyword(t.id)
    if t.type == _T.PRF:
        return prf_keyword(t.id)
    if t.type == _T.KE:
        return dh_keyword(t.id)
    if t.type == _T.ESN:
        return "esn" if t.id == 1 else "noesn"
    return f"transform {t.type}/{t.id}"


def _key(t: Transform) -> tuple[int, int, int | None]:
    return (t.type, t.id, t.key_length)


def _outside(offered: Proposal, answer: Proposal) -> list[Transform]:
    """The answer's transforms that ``offered`` does not carry (type, ID and key length)."""
    have = {_key(t) for t in offered.transforms}
    return [t for t in answer.transforms if _key(t) not in have]


def answer_unfit(offer: Sequence[Proposal], answer: Proposal, ke_group: int | None = None) -> AnswerUnfit | None:
    """Why ``answer`` (the one proposal of a response) does not fit ``offer`` (the request's
    proposals), or None when it does or the offer was not seen. ``ke_group``: the group of the
    request's KE payload, when the answer must agree with it (IKE_SA_INIT)."""
    if not offer:
        return None
    same = next((p for p in offer if p.num == answer.num), None)
    if same is None or same.protocol != answer.protocol or _outside(same, answer):
        # Renumbered? The transforms fit another proposal of the offer.
        home = next((p for p in offer if p.protocol == answer.protocol and not _outside(p, answer)), None)
        if home is not None and home.num != answer.num:
            return AnswerUnfit("number", f"the answer numbers its proposal #{answer.num}, the offer numbered it "
                               f"#{home.num} (RFC 7296 §3.3: the number must match the proposal accepted)")
        if same is None:
            nums = ", ".join(f"#{p.num}" for p in offer)
            return AnswerUnfit("transform", f"the answer accepts proposal #{answer.num}; the offer holds {nums} only")
        if same.protocol != answer.protocol:
            return AnswerUnfit("transform", f"the answer's proposal #{answer.num} is for protocol "
                               f"{_proto(answer.protocol)}, the offer's #{same.num} for {_proto(same.protocol)}")
        missing = ", ".join(transform_text(t) for t in _outside(same, answer))
        return AnswerUnfit("transform", f"the answer picks {missing}, which proposal #{same.num} of the offer "
                           "does not carry")
    types = [t.type for t in answer.transforms]
    twice = sorted({t for t in types if types.count(t) > 1})
    if twice:  # §3.3.6: one transform of each type
        names = ", ".join(iana.name(_T, t) for t in twice)
        return AnswerUnfit("transform", f"the answer picks more than one transform of type {names}")
    if ke_group is not None:
        groups = [t.id for t in answer.transforms if t.type == _T.KE]
        if groups and groups[0] != ke_group:
            return AnswerUnfit("ke", f"the answer picks KE group {dh_keyword(groups[0])} but the request's KE "
                               f"payload is {dh_keyword(ke_group)} (RFC 7296 §1.2: that answer is INVALID_KE_PAYLOAD)")
    return None


def _proto(p: int) -> str:
    return iana.name(iana.ProtocolId, p)


# IKEv1 attribute names: phase 1 (RFC 2409 Appendix A), phase 2 (RFC 2407 §4.5)
_V1_P1_ATTR = {1: "encryption", 2: "hash", 3: "authentication method", 4: "group", 5: "group type",
               13: "PRF", 14: "key length", 15: "field size", 16: "group order"}
_V1_P2_ATTR = {3: "group (PFS)", 4: "encapsulation mode", 5: "authentication algorithm", 6: "key length",
               7: "key rounds", 8: "compression dictionary size", 9: "compression algorithm"}
_V1_LIFE = {iana.ProtocolId.IKE: (11, 12)}  # phase 2: SA life type/duration are 1 and 2
_V1_LIFE_P2 = (1, 2)


# UDP-Encapsulated-Tunnel/-Transport as the NAT-T drafts numbered them (61443, 61444) before RFC
# 3947 §5.1 assigned 3 and 4: one mode in two encodings, which a responder may answer in the
# encoding of the NAT-T version it negotiated (the vendor IDs), not a change of what it accepts.
_V1_ENCAP_DRAFT = {61443: 3, 61444: 4}


def _v1_attrs(protocol: int, t: Transform) -> dict[int, int | bytes]:
    """A v1 transform's attributes less the lifetimes, which a responder may answer shorter."""
    life = _V1_LIFE.get(protocol, _V1_LIFE_P2)
    # a value may come basic or variable-length encoded (RFC 2408 §3.3): compare numbers
    out = {k & 0x7FFF: int.from_bytes(v, "big") if isinstance(v, bytes | bytearray) and len(v) <= 8 else v
           for k, v in t.attrs if (k & 0x7FFF) not in life}
    if protocol != iana.ProtocolId.IKE and out.get(4) in _V1_ENCAP_DRAFT:
        out[4] = _V1_ENCAP_DRAFT[out[4]]
    return out


def _v1_same(protocol: int, a: Transform, b: Transform) -> bool:
    return a.id == b.id and _v1_attrs(protocol, a) == _v1_attrs(protocol, b)


def _v1_diff(protocol: int, offered: Transform, answer: Transform) -> str:
    names = _V1_P1_ATTR if protocol == iana.ProtocolId.IKE else _V1_P2_ATTR
    out = []
    if offered.id != answer.id:
        out.append(f"transform ID {answer.id} (offered {offered.id})")
    a, o = _v1_attrs(protocol, answer), _v1_attrs(protocol, offered)
    for k in sorted(a.keys() | o.keys()):
        if a.get(k) != o.get(k):
            name = names.get(k, f"attribute {k}")
            group = k == (4 if protocol == iana.ProtocolId.IKE else 3)
            if protocol != iana.ProtocolId.IKE and k == 4:
                out.append(f"{name} {_encap(a.get(k))} (offered {_encap(o.get(k))})")
                continue
            out.append(f"{name} {_v1_value(a.get(k), group)} (offered {_v1_value(o.get(k), group)})")
    return ", ".join(out)


_ENCAP_NAMES = {1: "Tunnel", 2: "Transport", 3: "UDP-Encapsulated-Tunnel", 4: "UDP-Encapsulated-Transport"}


def _encap(v: int | bytes | None) -> str:
    """RFC 2407 §4.5 / RFC 3947 §5.1 encapsulation mode names (draft values already mapped)."""
    return _ENCAP_NAMES.get(v, _v1_value(v)) if isinstance(v, int) else _v1_value(v)


def _v1_value(v: int | bytes | None, group: bool = False) -> str:
    if v is None:
        return "none"
    if group and isinstance(v, int):
        return dh_keyword(v)
    return str(v) if isinstance(v, int) else v.hex()


def answer_unfit_v1(offer: Sequence[Proposal], answer: Proposal) -> AnswerUnfit | None:
    """IKEv1: why ``answer`` (the proposal of a phase-1 or Quick Mode answer) does not fit
    ``offer``, or None when it does or the offer was not seen. RFC 2408 §4.2: the responder
    answers one proposal (of a bundle, its proposals under one number) and one transform of it,
    as offered; RFC 2409 §5 the same for phase 1."""
    if not offer or not answer.transforms:
        return None
    t = answer.transforms[0]
    if len(answer.transforms) > 1:
        # libreswan: "a single Transform is required in a selecting Oakley Proposal; found %u"
        return AnswerUnfit("transform", f"the answer's proposal #{answer.num} holds {len(answer.transforms)} "
                           "transforms; the responder returns the one it took (RFC 2408 §4.2)")
    same = next((p for p in offer if p.num == answer.num and p.protocol == answer.protocol), None)
    mine = next((o for o in same.transforms if o.type == t.type), None) if same is not None else None
    if mine is not None and _v1_same(answer.protocol, mine, t):
        return None
    # Another transform of the offer, numbered anew (Wireshark's ikev1-bug-12610: the offer's
    # transform #5 answered as #1). RFC 2408 §4.2 asks the responder to keep the numbers (SHOULD)
    # to speed the initiator's check, which compares the answer with its proposals; strongSwan
    # selects by algorithms (main_mode.c, quick_mode.c). So that answer fits.
    if any(_v1_same(answer.protocol, o, t) for p in offer if p.protocol == answer.protocol for o in p.transforms):
        return None
    if same is None:
        nums = ", ".join(dict.fromkeys(f"#{p.num}" for p in offer if p.protocol == answer.protocol)) or "none"
        proto = iana.name(iana.Ikev1ProtocolId, answer.protocol)
        return AnswerUnfit("transform", f"the answer accepts proposal #{answer.num} for {proto}; the offer holds {nums}")
    if mine is None:
        nums = ", ".join(f"#{o.type}" for o in same.transforms)
        return AnswerUnfit("transform", f"the answer takes transform #{t.type} of proposal #{same.num}, "
                           f"which holds {nums} only")
    a, o = _v1_attrs(answer.protocol, t), _v1_attrs(answer.protocol, mine)
    only_auth = answer.protocol == iana.ProtocolId.IKE and mine.id == t.id and {
        k for k in a.keys() | o.keys() if a.get(k) != o.get(k)} == {3}
    return AnswerUnfit("auth" if only_auth else "transform",
                       f"the answer's transform #{t.type} has {_v1_diff(answer.protocol, mine, t)} "
                       "(RFC 2408 §4.2: the responder must not change the attributes it accepts)")


# Octets of a KE payload's public value per IKEv1 group (RFC 2409 §5: the length of the group,
# zero-padded): MODP the prime's size (RFC 2409 §6, RFC 3526, RFC 5114 §2.1-2.3), ECP x | y
# (RFC 5903 §7, RFC 5114 §2.6-2.7, RFC 6954 §4), curve25519/448 (RFC 8031 §2). EC2N (3, 4) left out.
_KE_OCTETS = {1: 96, 2: 128, 5: 192, 14: 256, 15: 384, 16: 512, 17: 768, 18: 1024, 19: 64, 20: 96,
              21: 132, 22: 128, 23: 256, 24: 256, 25: 48, 26: 56, 27: 56, 28: 64, 29: 96, 30: 128,
              31: 32, 32: 56}


def _v1_group(t: Transform) -> int | None:
    g = _v1_attrs(iana.ProtocolId.IKE, t).get(4)  # group description (RFC 2409 Appendix A)
    return g if isinstance(g, int) else None


def aggressive_ke_group(offer: Sequence[Proposal], ke_octets: int) -> int | None:
    """The group of an Aggressive Mode request's KE payload, which does not name it (RFC 2408
    §3.7): the offer's one group, or when the offer names several (libreswan warns "multiple DH
    groups in aggressive mode can cause interop failure"; strongSwan sends its first one) the one
    whose public value has the KE payload's length. None when that does not tell."""
    groups = list(dict.fromkeys(g for p in offer if p.protocol == iana.ProtocolId.IKE
                                for t in p.transforms if (g := _v1_group(t)) is not None))
    if len(groups) == 1:
        return groups[0]
    fit = [g for g in groups if _KE_OCTETS.get(g) == ke_octets]
    return fit[0] if len(fit) == 1 else None


def aggressive_ke_unfit(answer: Proposal, ke_group: int | None, answer_ke: int | None) -> AnswerUnfit | None:
    """Aggressive Mode: why the answer's group (its transform's) or its KE payload (``answer_ke``
    octets) does not fit the group of the request's KE payload (``ke_group``, aggressive_ke_group)."""
    g = _v1_group(answer.transforms[0]) if answer.transforms else None
    if g is None or ke_group is None:
        return None
    need = _KE_OCTETS.get(g)
    if answer_ke is not None and need is not None and answer_ke != need:
        mine = (f", {dh_keyword(ke_group)}'s, the request's group" if g != ke_group and answer_ke == _KE_OCTETS.get(ke_group)
                else "")
        return AnswerUnfit("ke-value", f"the answer takes group {dh_keyword(g)}"
                           + (f" (the request's KE payload is {dh_keyword(ke_group)})" if g != ke_group else "")
                           + f", but its own KE payload has {answer_ke} octets{mine}, where {dh_keyword(g)} has {need} "
                           "(RFC 2409 §5: the length of the negotiated group)", (answer_ke, need))
    if g != ke_group:
        sent = _KE_OCTETS.get(ke_group)
        return AnswerUnfit("ke", f"the answer takes group {dh_keyword(g)}, but the request's KE payload is "
                           f"{dh_keyword(ke_group)}" + (f" ({sent} octets)" if sent else "")
                           + ": Aggressive Mode sends the KE payload with the offer, so the group cannot be "
                           "negotiated (RFC 2409 §5)")
    return None


def _protocols(props: Sequence[Proposal]) -> str:
    return "+".join(iana.name(iana.Ikev1ProtocolId, p.protocol).removeprefix("PROTO_IPSEC_") for p in props)


def answer_unfit_bundle(offer: Sequence[Proposal], answer: Sequence[Proposal]) -> AnswerUnfit | None:
    """Quick Mode: why the answer's AH/ESP proposals ``answer`` do not fit ``offer``, bundles
    (proposals under one number, RFC 2408 §4.2) included, or None when they do. Without a bundle
    on either side this is answer_unfit_v1 on the answer's proposal."""
    if not offer or not answer:
        return None
    num = answer[0].num
    got = [p for p in answer if p.num == num]
    bundles: dict[int, list[Proposal]] = {}
    for p in offer:
        bundles.setdefault(p.num, []).append(p)
    if len(got) == 1 and all(len(b) == 1 for b in bundles.values()):
        return answer_unfit_v1(offer, got[0])

    def why(b: list[Proposal]) -> AnswerUnfit | None:
        """How the first protocol of ``got`` that does not fit bundle ``b`` (same protocols) differs."""
        for p in got:
            w = answer_unfit_v1([next(q for q in b if q.protocol == p.protocol)], p)
            if w is not None:
                return AnswerUnfit(w.kind, f"the {_protocols([p])} proposal of bundle #{num} "
                                   f"({_protocols(b)}): {w.reason}")
        return None

    protocols = sorted(p.protocol for p in got)
    same = [b for b in bundles.values() if sorted(p.protocol for p in b) == protocols]
    mine = bundles.get(num)
    if (mine in same and why(mine) is None) or any(why(b) is None for b in same if b is not mine):
        return None  # as offered, or another offered bundle renumbered (answer_unfit_v1: that fits)
    if mine is None:  # renumbered: as the bundles of the offer with the answer's protocols
        if not same:
            held = ", ".join(f"#{n} {_protocols(b)}" for n, b in bundles.items())
            return AnswerUnfit("bundle", f"the answer's proposal #{num} is {_protocols(got)}; the offer holds {held} "
                               "(RFC 2408 §4.2: the proposals under one number are one bundle, accepted whole)")
        return answer_unfit_v1([b[0] for b in same], got[0]) if len(got) == 1 else why(same[0])
    if mine not in same:
        have, offered = {p.protocol for p in got}, {p.protocol for p in mine}
        drops = _protocols([p for p in mine if p.protocol not in have])
        adds = _protocols([p for p in got if p.protocol not in offered])
        change = "; ".join(x for x in (drops and f"it drops {drops}", adds and f"adds {adds}") if x)
        return AnswerUnfit("bundle", f"the answer's proposal #{num} is {_protocols(got)}, the offer's #{num} "
                           f"{_protocols(mine)}: {change} (RFC 2408 §4.2: the proposals under one number are "
                           "one bundle, accepted whole)")
    return why(mine)
