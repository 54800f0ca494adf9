"""SA proposals as strongSwan proposal keywords ("aes128-sha256-modp2048", "aes256gcm16-ecp256").

These are the strings users type in swanctl.conf ``proposals =`` / ``esp_proposals =``, so a
finding that says "offered aes128-sha1-modp2048, responder accepts aes256-sha256-ecp256" can be
pasted straight into a config. IKEv1 transforms (attributes, RFC 2409 App. A / RFC 2407 §4.5) map
to the same keywords.
"""

from __future__ import annotations

from . import iana
from .ike import Proposal, Transform

E = iana.EncrTransform
_ENCR = {
    E.ENCR_DES: "des", E.ENCR_3DES: "3des", E.ENCR_NULL: "null", E.ENCR_BLOWFISH: "blowfish",
    E.ENCR_CAST: "cast128", E.ENCR_CHACHA20_POLY1305: "chacha20poly1305", E.ENCR_IDEA: "idea",
}
_ENCR_BITS = {  # keyword prefix and suffix, key length appended to the prefix
    E.ENCR_AES_CBC: ("aes", ""), E.ENCR_AES_CTR: ("aes", "ctr"),
    E.ENCR_AES_GCM_8: ("aes", "gcm8"), E.ENCR_AES_GCM_12: ("aes", "gcm12"), E.ENCR_AES_GCM_16: ("aes", "gcm16"),
    E.ENCR_AES_CCM_8: ("aes", "ccm8"), E.ENCR_AES_CCM_12: ("aes", "ccm12"), E.ENCR_AES_CCM_16: ("aes", "ccm16"),
    E.ENCR_NULL_AUTH_AES_GMAC: ("aes", "gmac"), E.ENCR_CAMELLIA_CBC: ("camellia", ""),
    E.ENCR_CAMELLIA_CTR: ("camellia", "ctr"), E.ENCR_CAMELLIA_CCM_8: ("camellia", "ccm8"),
    E.ENCR_CAMELLIA_CCM_12: ("camellia", "ccm12"), E.ENCR_CAMELLIA_CCM_16: ("camellia", "ccm16"),
}
AEAD = {E.ENCR_AES_GCM_8, E.ENCR_AES_GCM_12, E.ENCR_AES_GCM_16, E.ENCR_AES_CCM_8, E.ENCR_AES_CCM_12,
        E.ENCR_AES_CCM_16, E.ENCR_CHACHA20_POLY1305, E.ENCR_NULL_AUTH_AES_GMAC, E.ENCR_CAMELLIA_CCM_8,
        E.ENCR_CAMELLIA_CCM_12, E.ENCR_CAMELLIA_CCM_16}

IT = iana.IntegTransform
_INTEG = {
    IT.AUTH_HMAC_MD5_96: "md5", IT.AUTH_HMAC_SHA1_96: "sha1", IT.AUTH_AES_XCBC_96: "aesxcbc",
    IT.AUTH_HMAC_MD5_128: "md5_128", IT.AUTH_HMAC_SHA1_160: "sha1_160", IT.AUTH_AES_CMAC_96: "aescmac",
    IT.AUTH_AES_128_GMAC: "aes128gmac", IT.AUTH_AES_192_GMAC: "aes192gmac", IT.AUTH_AES_256_GMAC: "aes256gmac",
    IT.AUTH_HMAC_SHA2_256_128: "sha256", IT.AUTH_HMAC_SHA2_384_192: "sha384", IT.AUTH_HMAC_SHA2_512_256: "sha512",
}
P = iana.PrfTransform
_PRF = {
    P.PRF_HMAC_MD5: "prfmd5", P.PRF_HMAC_SHA1: "prfsha1", P.PRF_AES128_XCBC: "prfaesxcbc",
    P.PRF_HMAC_SHA2_256: "prfsha256", P.PRF_HMAC_SHA2_384: "prfsha384", P.PRF_HMAC_SHA2_512: "prfsha512",
    P.PRF_AES128_CMAC: "prfaescmac",
}
# The PRF strongSwan implies when a proposal names only an integrity algorithm.
_PRF_FOR_INTEG = {"md5": "prfmd5", "sha1": "prfsha1", "sha256": "prfsha256", "sha384": "prfsha384",
                  "sha512": "prfsha512", "aesxcbc": "prfaesxcbc", "aescmac": "prfaescmac"}
D = iana.DhGroup
_DH = {
    D.MODP_768: "modp768", D.MODP_1024: "modp1024", D.MODP_1536: "modp1536", D.MODP_2048: "modp2048",
    D.MODP_3072: "modp3072", D.MODP_4096: "modp4096", D.MODP_6144: "modp6144", D.MODP_8192: "modp8192",
    D.ECP_256: "ecp256", D.ECP_384: "ecp384", D.ECP_521: "ecp521", D.MODP_1024_160_POS: "modp1024s160",
    D.MODP_2048_224_POS: "modp2048s224", D.MODP_2048_256_POS: "modp2048s256", D.ECP_192: "ecp192",
    D.ECP_224: "ecp224", D.BRAINPOOLP224R1: "ecp224bp", D.BRAINPOOLP256R1: "ecp256bp",
    D.BRAINPOOLP384R1: "ecp384bp", D.BRAINPOOLP512R1: "ecp512bp", D.CURVE25519: "curve25519",
    D.CURVE448: "curve448", D.ML_KEM_512: "mlkem512", D.ML_KEM_768: "mlkem768", D.ML_KEM_1024: "mlkem1024",
}


def encr_keyword(encr: int, bits: int | None) -> str:
    if encr in _ENCR:
        return _ENCR[encr]
    if encr in _ENCR_BITS:
        prefix, suffix = _ENCR_BITS[encr]
        return f"{prefix}{bits or 128}{suffix}"
    return f"encr{encr}"


def integ_keyword(integ: int) -> str:
    return _INTEG.get(integ, f"integ{integ}")


def prf_keyword(prf: int) -> str:
    return _PRF.get(prf, f"prf{prf}")


def dh_keyword(group: int) -> str:
    return _DH.get(group, f"ke{group}")


def _v2_string(prop: Proposal) -> str:
    encr: list[str] = []
    integ: list[str] = []
    prf: list[str] = []
    dh: list[str] = []
    esn: list[str] = []
    aead = False
    for t in prop.transforms:
        tt = t.type
        if tt == iana.TransformType.ENCR:
            encr.append(encr_keyword(t.id, t.key_length))
            aead = aead or t.id in AEAD
        elif tt == iana.TransformType.INTEG:
            if t.id != 0:
                integ.append(integ_keyword(t.id))
        elif tt == iana.TransformType.PRF:
            prf.append(prf_keyword(t.id))
        elif tt == iana.TransformType.KE:
            if t.id != 0:
                dh.append(dh_keyword(t.id))
        elif tt == iana.TransformType.ESN:
            esn.append("esn" if t.id == 1 else "noesn")
        elif iana.TransformType.ADDKE1 <= tt <= iana.TransformType.ADDKE7 and t.id != 0:
            dh.append(f"ke{tt - 5}_{dh_keyword(t.id)}")  # RFC 9370 additional key exchanges
    parts = encr + integ
    # strongSwan omits the PRF when it is the one implied by the integrity algorithm.
    implied = {_PRF_FOR_INTEG.get(i) for i in integ}
    if aead or not integ or any(p not in implied for p in prf):
        parts += prf
    parts += dh
    # "noesn" is strongSwan's default for ESP; only show ESN when it is (also) offered.
    if "esn" in esn:
        parts += esn
    return "-".join(parts) or "none"


# IKEv1 phase-1 attributes (RFC 2409 Appendix A)
_V1_ENCR = {1: ("des", None), 2: ("idea", None), 3: ("blowfish", None), 4: ("rc5", None),
            5: ("3des", None), 6: ("cast128", None), 7: ("aes", 128), 8: ("camellia", 128)}
_V1_HASH = {1: "md5", 2: "sha1", 3: "tiger", 4: "sha256", 5: "sha384", 6: "sha512"}
# IKEv1 ESP transform IDs (RFC 2407 §4.4.4) and auth algorithms (§4.5)
_V1_ESP = {2: "des", 3: "3des", 11: "null", 12: "aes", 13: "aesctr", 14: "aesccm8", 15: "aesccm12",
           16: "aesccm16", 18: "aesgcm8", 19: "aesgcm12", 20: "aesgcm16", 22: "camellia",
           23: "aesgmac"}
_V1_AUTH = {1: "md5", 2: "sha1", 5: "sha256", 6: "sha384", 7: "sha512", 9: "aesxcbc"}
_V1_AH = {2: "md5", 3: "sha1", 5: "sha256", 6: "sha384", 7: "sha512"}  # AH transform IDs (§4.4.3, RFC 4868)


def _attrs(t: Transform) -> dict[int, int]:
    out: dict[int, int] = {}
    for k, v in t.attrs:
        if isinstance(v, int):
            out[k & 0x7FFF] = v
        elif isinstance(v, bytes | bytearray) and 0 < len(v) <= 8:
            out[k & 0x7FFF] = int.from_bytes(v, "big")
    return out


def _v1_string(prop: Proposal) -> str:
    if not prop.transforms:
        return "none"
    alts = []
    for t in prop.transforms:
        a = _attrs(t)
        parts: list[str] = []
        if prop.protocol == iana.ProtocolId.IKE:
            name, default_bits = _V1_ENCR.get(a.get(1, 0), (f"encr{a.get(1)}", None))
            bits = a.get(14) or t.key_length or default_bits
            parts.append(f"{name}{bits}" if name in ("aes", "camellia") else name)
            if 2 in a:
                parts.append(_V1_HASH.get(a[2], f"hash{a[2]}"))
            if 4 in a:
                parts.append(dh_keyword(a[4]))
        elif prop.protocol == iana.ProtocolId.AH:
            # an AH transform ID names the algorithm the authentication attribute names (RFC 2407 §4.4.3)
            a5 = a.get(5)
            parts.append(_V1_AUTH.get(a5, f"auth{a5}") if a5 is not None else _V1_AH.get(t.id, f"ah{t.id}"))
            if 3 in a:
                parts.append(dh_keyword(a[3]))
        else:
            name = _V1_ESP.get(t.id, f"esp{t.id}")
            bits = a.get(6) or t.key_length
            if name.startswith("aes") or name == "camellia":
                rest = name[3:] if name.startswith("aes") else ""
                base = "aes" if name.startswith("aes") else "camellia"
                name = f"{base}{bits or 128}{rest}"
            parts.append(name)
            if 5 in a:
                parts.append(_V1_AUTH.get(a[5], f"auth{a[5]}"))
            if 3 in a:  # group description: PFS
                parts.append(dh_keyword(a[3]))
        alts.append("-".join(parts))
    return ", ".join(dict.fromkeys(alts))


def proposal_string(prop: Proposal, version: int = 2) -> str:
    """One proposal as strongSwan keywords. IKEv1 proposals with several transforms give their
    alternatives separated by ", "."""
    try:
        return _v2_string(prop) if version == 2 else _v1_string(prop)
    except Exception:  # a proposal from a malformed message: never let a label kill the tracker
        return "unparsed"


def proposal_algorithms(prop: Proposal) -> dict[str, int | None]:
    """The first transform of each type (IKEv2): what KEYMAT derivation and weak-algorithm checks use."""
    out: dict[str, int | None] = {"encr": None, "encr_bits": None, "integ": None, "prf": None, "dh": None,
                                  "esn": None}
    for t in prop.transforms:
        if t.type == iana.TransformType.ENCR and out["encr"] is None:
            out["encr"], out["encr_bits"] = t.id, t.key_length
        elif t.type == iana.TransformType.INTEG and out["integ"] is None:
            out["integ"] = t.id
        elif t.type == iana.TransformType.PRF and out["prf"] is None:
            out["prf"] = t.id
        elif t.type == iana.TransformType.KE and out["dh"] is None:
            out["dh"] = t.id
        elif t.type == iana.TransformType.ESN and out["esn"] is None:
            out["esn"] = t.id
    return out
