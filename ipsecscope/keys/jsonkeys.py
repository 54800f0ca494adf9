"""Native JSON key file, schema ``ipsecscope.keys/1`` (documented in docs/keys-json.md).

Algorithms are IANA names (``"ENCR_AES_GCM_16"``, ``"AUTH_HMAC_SHA2_256_128"``,
``"PRF_HMAC_SHA2_256"``) or their numbers; keys and SPIs of IKE are hex strings; ESP SPIs are
``"0x..."`` strings, numbers, or Wireshark patterns (``"0x000040**"``, ``"*"``).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from ..errors import KeyFileError
from ..model.iana import EncrTransform, IntegTransform, PrfTransform, ProtocolId
from ..model.keys import EspSaKeys
from . import names
from .names import shown
from .store import KeyStore, parse_addr_pattern, parse_spi_pattern

if TYPE_CHECKING:
    from ..model.keys import IkeSaKeys, Ikev1Keys

SCHEMA = "ipsecscope.keys/1"


def looks_like(text: str) -> bool:
    s = text.lstrip()
    return s.startswith("{") and '"schema"' in s[:4096] and "ipsecscope.keys/" in s[:4096]


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _array_offsets(text: str, key: str) -> list[int]:
    """Offsets of the elements of the top-level array ``key`` (for error line numbers)."""
    m = re.search('"' + re.escape(key) + r'"\s*:\s*\[', text)
    if not m:
        return []
    dec = json.JSONDecoder()
    out: list[int] = []
    i = m.end()
    ws = re.compile(r"[\s,]*")
    while True:
        i = ws.match(text, i).end()  # type: ignore[union-attr]
        if i >= len(text) or text[i] == "]":
            return out
        out.append(i)
        try:
            _, i = dec.raw_decode(text, i)
        except ValueError:
            return out


def _enum(value: Any, enum: type, private: dict[int, str], what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an IANA name or number, not {shown(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        v = value.strip()
        if v.isdigit():
            return int(v)
        try:
            return int(enum[v])
        except KeyError:
            pass
        for num, n in private.items():
            if n == v:
                return num
    known = ", ".join(e.name for e in enum)
    raise ValueError(f"{what} {shown(value)} is not a known name or number (known: {known})")


def _hex(d: dict[str, Any], key: str, required: bool = True) -> bytes:
    v = d.get(key)
    if v is None or v == "":
        if required and v is None:
            raise ValueError(f'"{key}" is missing')
        return b""
    if not isinstance(v, str):
        raise ValueError(f'"{key}" must be a hex string')
    t = v.strip().replace(":", "").replace(" ", "")
    if t[:2].lower() == "0x":
        t = t[2:]
    try:
        return bytes.fromhex(t)
    except ValueError:
        raise ValueError(f'"{key}" is not valid hex') from None


def _esp(d: dict[str, Any], source: str) -> EspSaKeys:
    if not isinstance(d, dict):
        raise ValueError("each esp entry must be an object")
    spi_v = d.get("spi")
    if spi_v is None:
        raise ValueError('"spi" is missing')
    spi_text = f"0x{spi_v:08x}" if isinstance(spi_v, int) and not isinstance(spi_v, bool) else str(spi_v)
    pat = parse_spi_pattern(spi_text)
    src, dst = str(d.get("src", "*")), str(d.get("dst", "*"))
    parse_addr_pattern(src)
    parse_addr_pattern(dst)
    encr = _enum(d.get("encr"), EncrTransform, names.PRIVATE_ENCR_NAMES, '"encr"')
    integ = _enum(d.get("integ", "NONE"), IntegTransform, names.PRIVATE_INTEG_NAMES, '"integ"')
    enc_key = _hex(d, "enc_key", required=encr != EncrTransform.ENCR_NULL)
    problem = names.check_key_length(encr, enc_key)
    if problem:
        raise ValueError(f'"enc_key": {problem}')
    proto = d.get("protocol", "esp")
    E, A = ProtocolId.ESP, ProtocolId.AH
    protocol = {"esp": E, "ah": A, 3: E, 2: A}.get(proto.lower() if isinstance(proto, str) else proto)
    if protocol is None:
        raise ValueError('"protocol" must be "esp" or "ah"')
    icv = d.get("icv_len")
    if icv is not None and (not isinstance(icv, int) or icv < 0 or icv > 64):
        raise ValueError('"icv_len" must be a byte count (0-64) or null')
    esn = d.get("esn")
    if esn is not None and not isinstance(esn, bool):
        raise ValueError('"esn" must be true, false or null (infer)')
    return EspSaKeys(
        spi=pat.value if pat.bits == 32 else 0,
        encr=encr,
        enc_key=enc_key,
        integ=integ,
        auth_key=_hex(d, "auth_key", required=False),
        src=src,
        dst=dst,
        spi_pattern=None if pat.bits == 32 else spi_text,
        icv_len=icv,
        esn=esn,
        protocol=protocol,
        source=str(d.get("source") or source),
        check_integrity=bool(d.get("check_integrity", True)),
    )


def _ike(d: dict[str, Any], source: str) -> IkeSaKeys:
    if not isinstance(d, dict):
        raise ValueError("each ike entry must be an object")
    spi_i, spi_r = _hex(d, "spi_i"), _hex(d, "spi_r")
    if len(spi_i) != 8 or len(spi_r) != 8:
        raise ValueError('"spi_i" and "spi_r" must be 8 bytes (16 hex digits)')
    encr = _enum(d.get("encr"), EncrTransform, names.PRIVATE_ENCR_NAMES, '"encr"')
    integ = _enum(d.get("integ", "NONE"), IntegTransform, names.PRIVATE_INTEG_NAMES, '"integ"')
    prf = d.get("prf")
    sk_ei, sk_er = _hex(d, "sk_ei"), _hex(d, "sk_er")
    for what, k in (("sk_ei", sk_ei), ("sk_er", sk_er)):
        problem = names.check_key_length(encr, k)
        if problem:
            raise ValueError(f'"{what}": {problem}')
    sk_d = _hex(d, "sk_d", required=False)
    from ..model.keys import IkeSaKeys  # (loaded with the first IKE SA: decrypt's files have none)

    return IkeSaKeys(
        spi_i=spi_i,
        spi_r=spi_r,
        encr=encr,
        sk_ei=sk_ei,
        sk_er=sk_er,
        integ=integ,
        sk_ai=_hex(d, "sk_ai", required=False),
        sk_ar=_hex(d, "sk_ar", required=False),
        prf=None if prf is None else _enum(prf, PrfTransform, {}, '"prf"'),
        sk_d=sk_d or None,
        check_integrity=bool(d.get("check_integrity", True)),
        icv_len=d.get("icv_len"),
        source=str(d.get("source") or source),
    )


def _ikev1(d: dict[str, Any], source: str) -> Ikev1Keys:
    if not isinstance(d, dict):
        raise ValueError("each ikev1 entry must be an object")
    cookie = _hex(d, "cookie_i")
    if len(cookie) != 8:
        raise ValueError('"cookie_i" must be 8 bytes (16 hex digits)')
    key = _hex(d, "enc_key")
    from ..model.keys import Ikev1Keys

    return Ikev1Keys(cookie_i=cookie, enc_key=key, source=str(d.get("source") or source))


def parse(text: str, path: str, store: KeyStore | None = None) -> KeyStore:
    store = store if store is not None else KeyStore()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=path, line=exc.lineno) from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else None
        raise KeyFileError(f'expected "schema": "{SCHEMA}", got {shown(got)}', path=path, line=1)
    unknown = set(doc) - {"schema", "esp", "ike", "ikev1", "comment", "generator"}
    if unknown:
        raise KeyFileError(f"unknown top-level keys {sorted(unknown)}; expected esp, ike, ikev1", path=path, line=1)
    for key, build, add in (("esp", _esp, store.add_esp), ("ike", _ike, store.add_ike),
                            ("ikev1", _ikev1, store.add_ikev1)):
        entries = doc.get(key, [])
        if not isinstance(entries, list):
            raise KeyFileError(f'"{key}" must be a list', path=path, line=1)
        offsets = _array_offsets(text, key) if entries else []
        for i, entry in enumerate(entries):
            line = _line_of(text, offsets[i]) if i < len(offsets) else None
            try:
                add(build(entry, f"{path}:{line or 1}"))  # type: ignore[operator]
            except ValueError as exc:  # one bad entry costs only itself
                store.skip(KeyFileError(f"{key}[{i}]: {exc}", path=path, line=line))
    return store


def _name(enum: type, value: int, private: dict[int, str]) -> str | int:
    try:
        return enum(value).name
    except ValueError:
        return private.get(value, value)


def to_doc(store: KeyStore, show_keys: bool) -> dict[str, Any]:
    """The store as a JSON-able dict (keys redacted to ``null`` unless ``show_keys``)."""

    def h(b: bytes | None) -> str | None:
        if not b:
            return "" if b is not None else None
        return b.hex() if show_keys else None

    doc: dict[str, Any] = {"schema": SCHEMA}
    if not show_keys:
        doc["comment"] = "keys redacted (null); run with --show-keys or -o FILE to write them"
    doc["esp"] = [
        {
            "spi": k.spi_pattern or f"0x{k.spi:08x}",
            "src": k.src,
            "dst": k.dst,
            "protocol": "ah" if k.protocol == ProtocolId.AH else "esp",
            "encr": _name(EncrTransform, k.encr, names.PRIVATE_ENCR_NAMES),
            "enc_key": h(k.enc_key),
            "integ": _name(IntegTransform, k.integ, names.PRIVATE_INTEG_NAMES),
            "auth_key": h(k.auth_key),
            "icv_len": k.icv_len,
            "esn": k.esn,
            "check_integrity": k.check_integrity,
            "source": k.source,
        }
        for k in store.esp
    ]
    doc["ike"] = [
        {
            "spi_i": k.spi_i.hex(),
            "spi_r": k.spi_r.hex(),
            "encr": _name(EncrTransform, k.encr, names.PRIVATE_ENCR_NAMES),
            "sk_ei": h(k.sk_ei),
            "sk_er": h(k.sk_er),
            "integ": _name(IntegTransform, k.integ, names.PRIVATE_INTEG_NAMES),
            "sk_ai": h(k.sk_ai),
            "sk_ar": h(k.sk_ar),
            "prf": None if k.prf is None else _name(PrfTransform, k.prf, {}),
            "sk_d": h(k.sk_d),
            "check_integrity": k.check_integrity,
            "icv_len": k.icv_len,
            "source": k.source,
        }
        for k in store.ike
    ]
    doc["ikev1"] = [{"cookie_i": k.cookie_i.hex(), "enc_key": h(k.enc_key), "source": k.source}
                    for k in store.ikev1]
    return doc


def dumps(store: KeyStore, show_keys: bool) -> str:
    return json.dumps(to_doc(store, show_keys), indent=2) + "\n"
