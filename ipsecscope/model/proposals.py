"""SA proposals as strongSwan-style strings ("aes256gcm16-prfsha256-ecp256", "aes128-sha256-modp2048").

The same keywords users write in swanctl.conf / ipsec.conf, so a finding can say "you proposed
aes128-sha256-modp2048, the peer wanted aes256gcm16-prfsha384-ecp384" in words they can paste.
Unknown algorithm numbers fall back to the registry name in lower case or "encr99"-style text.
"""

from __future__ import annotations

from ipsecscope.model import iana
from ipsecscope.model.ike import Proposal, Transform

__all__ = ["proposal_string", "transform_keyword", "ikev1_transform_string"]

# IKEv2 ENCR IDs (also the IPsec DOI ESP transform IDs, which RFC 4306 kept identical).
# "{k}" is replaced by the key length in bits.
_ENCR = {
    1: "des_iv64", 2: "des", 3: "3des", 4: "rc5", 5: "idea", 6: "cast128", 7: "blowfish{k}",
    8: "3idea", 9: "des_iv32", 11: "null", 12: "aes{k}", 13: "aes{k}ctr", 14: "aes{k}ccm8",
    15: "aes{k}ccm12", 16: "aes{k}ccm16", 18: "aes{k}gcm8", 19: "aes{k}gcm12", 20: "aes{k}gcm16",
    21: "aes{k}gmac", 23: "camellia{k}", 24: "camellia{k}ctr", 25: "camellia{k}ccm8",
    26: "camellia{k}ccm12", 27: "camellia{k}ccm16", 28: "chacha20poly1305",
}
_INTEG = {
    1: "md5", 2: "sha1", 3: "desmac", 5: "aesxcbc", 6: "md5_128", 7: "sha1_160", 8: "aescmac",
    9: "aes128gmac", 10: "aes192gmac", 11: "aes256gmac", 12: "sha256", 13: "sha384", 14: "sha512",
}
_PRF = {1: "prfmd5", 2: "prfsha1", 3: "prftiger", 4: "prfaesxcbc", 5: "prfsha256", 6: "prfsha384",
        7: "prfsha512", 8: "prfaescmac"}
# The PRF strongSwan derives from an integrity keyword when none is given.
_PRF_OF_INTEG = {1: 1, 2: 2, 5: 4, 6: 1, 7: 2, 8: 8, 12: 5, 13: 6, 14: 7}
_KE = {
    1: "modp768", 2: "modp1024", 5: "modp1536", 14: "modp2048", 15: "modp3072", 16: "modp4096",
    17: "modp6144", 18: "modp8192", 19: "ecp256", 20: "ecp384", 21: "ecp521", 22: "modp1024s160",
    23: "modp2048s224", 24: "modp2048s256", 25: "ecp192", 26: "ecp224", 27: "ecp224bp",
    28: "ecp256bp", 29: "ecp384bp", 30: "ecp512bp", 31: "curve25519", 32: "curve448",
    35: "mlkem512", 36: "mlkem768", 37: "mlkem1024",
}
# IKEv1 phase-1 attribute values (RFC 2409 App. A) and IPsec DOI Authentication Algorithm.
_V1_ENCR = {1: "des", 2: "idea", 3: "blowfish{k}", 4: "rc5", 5: "3des", 6: "cast128", 7: "aes{k}", 8: "camellia{k}"}
_V1_HASH = {1: "md5", 2: "sha1", 3: "tiger", 4: "sha256", 5: "sha384", 6: "sha512"}
_V1_AUTH_ALG = {1: "md5", 2: "sha1", 3: "desmac", 5: "sha256", 6: "sha384", 7: "sha512", 9: "aesxcbc",
                11: "aes128gmac", 12: "aes192gmac", 13: "aes256gmac"}
_V1_AH = {2: "md5", 3: "sha1", 4: "desmac", 5: "sha256", 6: "sha384", 7: "sha512", 9: "aesxcbc",
          11: "aes128gmac", 12: "aes192gmac", 13: "aes256gmac"}


def _fill(template: str | None, key_bits: int | None, fallback: str) -> str:
    if template is None:
        return fallback
    if "{k}" in template:
        # AES without a Key Length attribute is invalid in IKEv2 (RFC 7296 §3.3.5); show "aes".
        return template.replace("{k}", str(key_bits) if key_bits else "")
    return template


def transform_keyword(t: Transform) -> str:
    """strongSwan keyword of one IKEv2 transform ("aes256", "sha256", "prfsha256", "ecp256", "esn")."""
    tt = t.type
    if tt == iana.TransformType.ENCR:
        return _fill(_ENCR.get(t.id), t.key_length, f"encr{t.id}")
    if tt == iana.TransformType.INTEG:
        return _INTEG.get(t.id, f"integ{t.id}") if t.id else "noint"
    if tt == iana.TransformType.PRF:
        return _PRF.get(t.id, f"prf{t.id}")
    if tt == iana.TransformType.KE:
        return _KE.get(t.id, f"ke{t.id}") if t.id else "none"
    if tt == iana.TransformType.ESN:
        return "esn" if t.id == 1 else "noesn"
    if iana.TransformType.ADDKE1 <= tt <= iana.TransformType.ADDKE7:  # RFC 9370, strongSwan 6 syntax
        n = tt - iana.TransformType.ADDKE1 + 1
        return f"ke{n}_" + (_KE.get(t.id, f"ke{t.id}") if t.id else "none")
    return f"t{tt}_{t.id}"


def _v2_string(p: Proposal) -> str:
    by: dict[int, list[Transform]] = {}
    for t in p.transforms:
        by.setdefault(t.type, []).append(t)
    parts: list[str] = [transform_keyword(t) for t in by.get(iana.TransformType.ENCR, [])]
    integs = [t for t in by.get(iana.TransformType.INTEG, []) if t.id != 0]
    parts += [transform_keyword(t) for t in integs]
    prfs = by.get(iana.TransformType.PRF, [])
    # strongSwan derives the PRF from the integrity algorithm: only spell it out when it differs
    # (always for AEAD, where there is no integrity algorithm).
    implied = {_PRF_OF_INTEG.get(t.id) for t in integs}
    if prfs and not (integs and {t.id for t in prfs} <= implied):
        parts += [transform_keyword(t) for t in prfs]
    parts += [transform_keyword(t) for t in by.get(iana.TransformType.KE, []) if t.id != 0]
    for tt in range(iana.TransformType.ADDKE1, iana.TransformType.ADDKE7 + 1):
        parts += [transform_keyword(t) for t in by.get(tt, [])]
    esns = by.get(iana.TransformType.ESN, [])
    if any(t.id == 1 for t in esns):  # "noesn" alone is the default and not written
        parts += [transform_keyword(t) for t in esns]
    known = {iana.TransformType.ENCR, iana.TransformType.INTEG, iana.TransformType.PRF,
             iana.TransformType.KE, iana.TransformType.ESN, *range(6, 13)}
    parts += [transform_keyword(t) for tt, ts in by.items() if tt not in known for t in ts]
    return "-".join(parts)


def ikev1_transform_string(protocol: int, t: Transform) -> str:
    """One IKEv1 transform (a complete suite in v1) as "aes256-sha256-modp2048"."""
    attrs: dict[int, int] = {}
    for at, v in t.attrs:
        if isinstance(v, bytes):
            v = int.from_bytes(v[:8], "big") if v else 0
        attrs.setdefault(at, v)
    parts: list[str] = []
    if protocol == iana.Ikev1ProtocolId.PROTO_ISAKMP:
        e = attrs.get(iana.Ikev1Attribute.ENCRYPTION_ALGORITHM)
        if e is not None:
            parts.append(_fill(_V1_ENCR.get(e), attrs.get(iana.Ikev1Attribute.KEY_LENGTH), f"encr{e}"))
        h = attrs.get(iana.Ikev1Attribute.HASH_ALGORITHM)
        if h is not None:
            parts.append(_V1_HASH.get(h, f"hash{h}"))
        g = attrs.get(iana.Ikev1Attribute.GROUP_DESCRIPTION)
        if g is not None:
            parts.append(_KE.get(g, f"group{g}"))
        return "-".join(parts)
    kl = attrs.get(iana.Ikev1IpsecAttribute.KEY_LENGTH)
    if protocol == iana.Ikev1ProtocolId.PROTO_IPSEC_ESP:
        parts.append(_fill(_ENCR.get(t.id), kl, f"encr{t.id}"))
    elif protocol == iana.Ikev1ProtocolId.PROTO_IPSEC_AH:
        parts.append(_V1_AH.get(t.id, f"ah{t.id}"))
    else:
        parts.append(iana.name(iana.Ikev1IpcompTransformId, t.id).lower())
    a = attrs.get(iana.Ikev1IpsecAttribute.AUTHENTICATION_ALGORITHM)
    if a is not None and protocol != iana.Ikev1ProtocolId.PROTO_IPSEC_AH:
        parts.append(_V1_AUTH_ALG.get(a, f"integ{a}"))
    g = attrs.get(iana.Ikev1IpsecAttribute.GROUP_DESCRIPTION)
    if g is not None:
        parts.append(_KE.get(g, f"group{g}"))
    if attrs.get(iana.Ikev1IpsecAttribute.EXTENDED_SEQUENCE_NUMBER) == 1:
        parts.append("esn")
    return "-".join(parts)


def proposal_string(proposal: Proposal, version: int = 2) -> str:
    """strongSwan-style text of a proposal.

    IKEv2: one string for the proposal ("aes256gcm16-prfsha256-ecp256", "aes256gcm16-esn").
    IKEv1: every transform is an alternative suite, so they are joined with ", ".
    """
    if version == 1:
        return ", ".join(ikev1_transform_string(proposal.protocol, t) for t in proposal.transforms)
    return _v2_string(proposal)
