"""Wireshark key tables (UAT files): ``esp_sa``, ``ikev2_decryption_table``, ``ikev1_decryption_table``.

UAT syntax (Wireshark ``epan/uat_load.l``): one record per line, fields separated by commas,
string fields in double quotes with ``\\xNN`` escapes, byte fields as bare hex, ``#`` comment
lines. strongSwan's save-keys plugin writes the same files.

esp_sa (Wireshark 4.0, 8 fields): Protocol, Src IP, Dest IP, SPI, Encryption, Encryption Key,
Authentication, Authentication Key. Newer Wireshark (4.4+) adds two fields, the sequence
number length ("SN", 32- or 64-bit = ESN) and the ESN high bits; we read both forms.
Keys are ``0x``-hex or else ASCII text, like Wireshark's ``compute_ascii_key()``.

ikev2_decryption_table (8 fields): SPIi, SPIr, SK_ei, SK_er, "Encryption", SK_ai, SK_ar,
"Integrity". ikev1_decryption_table (2 fields): initiator cookie, encryption key.
"""

from __future__ import annotations

import re

from ..errors import KeyFileError
from ..model.iana import EncrTransform, IntegTransform, ProtocolId
from ..model.keys import EspSaKeys, IkeSaKeys, Ikev1Keys, redact
from ..model.plural import with_article
from . import names
from .names import shown
from .store import KeyStore, parse_addr_pattern, parse_spi_pattern

_HEX_RE = re.compile(r"^[0-9A-Fa-f]*$")
_ESCAPE_RE = re.compile(r"\\x([0-9A-Fa-f]{2})|\\(.)")


class UatField(str):
    """A field's text, remembering whether it was quoted."""

    quoted: bool

    def __new__(cls, text: str, quoted: bool) -> UatField:
        obj = super().__new__(cls, text)
        obj.quoted = quoted
        return obj


def split_uat_line(line: str) -> list[UatField]:
    """Split one UAT record into fields. Raises ValueError on an unterminated string."""
    out: list[UatField] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i < n and line[i] == '"':
            j = i + 1
            buf = []
            while j < n and line[j] != '"':
                if line[j] == "\\" and j + 1 < n:
                    buf.append(line[j : j + 2])
                    if line[j + 1] == "x":
                        buf.append(line[j + 2 : j + 4])
                        j += 4
                        continue
                    j += 2
                    continue
                buf.append(line[j])
                j += 1
            if j >= n:
                raise ValueError("unterminated quoted string")
            out.append(UatField(_unescape("".join(buf)), True))
            i = j + 1
            while i < n and line[i] in " \t":
                i += 1
            if i < n and line[i] != ",":
                raise ValueError(f"unexpected {line[i]!r} after a quoted field")
        else:
            j = line.find(",", i)
            if j < 0:
                j = n
            out.append(UatField(line[i:j].strip(), False))
            i = j
        if i >= n:
            return out
        i += 1  # skip the comma
        if i >= n:
            out.append(UatField("", False))
            return out


def _unescape(s: str) -> str:
    def rep(m: re.Match[str]) -> str:
        if m.group(1):
            return chr(int(m.group(1), 16))
        return m.group(2)

    return _ESCAPE_RE.sub(rep, s)


def uat_quote(s: str) -> str:
    """Quote a string field the way Wireshark writes it (``"`` , ``\\`` and non-printables escaped)."""
    out = []
    for ch in s:
        if ch in '"\\' or not (" " <= ch <= "~"):
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def ws_key(text: str) -> bytes:
    """Wireshark's compute_ascii_key(): ``0x``-hex (odd length: leading nibble) or ASCII text."""
    if len(text) > 2 and text[:2].lower() == "0x":
        body = text[2:]
        if not _HEX_RE.match(body):
            pos = next(i for i, c in enumerate(body) if c not in "0123456789abcdefABCDEF")
            raise ValueError(f"{with_article(f'{len(text)}-character')} 0x key has a non-hex character at position {pos + 3}")
        if len(body) % 2:
            body = "0" + body
        return bytes.fromhex(body)
    if text.lower() == "0x":
        return b""
    return text.encode("latin-1", "replace")


def _hex_bytes(text: str, what: str) -> bytes:
    t = text.strip()
    if t[:2].lower() == "0x":
        t = t[2:]
    if not _HEX_RE.match(t):
        pos = next(i for i, c in enumerate(t) if c not in "0123456789abcdefABCDEF")
        raise ValueError(f"{what} must be hex digits: character {pos + 1 + len(text) - len(t)} of "
                         f"{len(text)} is not")
    if len(t) % 2:
        raise ValueError(f"{what} must be whole bytes of hex: {len(t)} digits is an odd count")
    return bytes.fromhex(t)


# --- classification ---------------------------------------------------------------------------

_IKEV2_RE = re.compile(r"^\s*[0-9A-Fa-f]{16}\s*,\s*[0-9A-Fa-f]{16}\s*,")
_IKEV1_RE = re.compile(r"^\s*[0-9A-Fa-f]{16}\s*,\s*[0-9A-Fa-f]*\s*$")
_ESP_RE = re.compile(r'^\s*"(IPv4|IPv6)"\s*,', re.IGNORECASE)


def table_of(text: str) -> str | None:
    """Which Wireshark table the first record line of ``text`` belongs to: ``esp_sa``,
    ``ikev2_table``, ``ikev1_table``, or None. (:func:`parse` reads any mix of them.)"""
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if _ESP_RE.match(s):
            return "esp_sa"
        if _IKEV2_RE.match(s):
            return "ikev2_table"
        return "ikev1_table" if _IKEV1_RE.match(s) else None
    return None


def looks_like(text: str) -> bool:
    """True if the first record line of ``text`` is one of the three Wireshark tables."""
    return table_of(text) is not None


def parse(text: str, path: str, store: KeyStore | None = None) -> KeyStore:
    """Parse any mix of esp_sa / ikev2 / ikev1 table records into ``store``."""
    store = store if store is not None else KeyStore()
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith('"Protocol",'):
            continue  # (the CSV header line a pcapng ESP SA secrets block may start with)
        src = f"{path}:{lineno}"
        try:
            fields = split_uat_line(s)
            if _ESP_RE.match(s):
                store.add_esp(esp_sa_record(fields, src))
            elif _IKEV2_RE.match(s):
                store.add_ike(ikev2_record(fields, src))
            elif _IKEV1_RE.match(s):
                store.add_ikev1(ikev1_record(fields, src))
            else:
                raise ValueError(
                    "not an esp_sa, ikev2_decryption_table or ikev1_decryption_table record "
                    '(esp_sa lines start with "IPv4" or "IPv6", IKE table lines with a 16-hex-digit SPI/cookie)'
                )
        except ValueError as exc:
            store.skip(KeyFileError(str(exc), path=path, line=lineno))
    return store


def esp_sa_record(f: list[UatField], source: str) -> EspSaKeys:
    if len(f) not in (8, 10):
        raise ValueError(
            f"esp_sa record has {len(f)} fields; expected 8 (Protocol, Src IP, Dest IP, SPI, Encryption, "
            "Encryption Key, Authentication, Authentication Key) or 10 (newer Wireshark: + SN, ESN high bits)"
        )
    proto, src, dst, spi_text, enc_name, enc_key_t, auth_name, auth_key_t = f[:8]
    if proto.lower() not in ("ipv4", "ipv6", "any"):  # "Any": the pcapng ESP SA DSB's records
        raise ValueError(f'Protocol must be "IPv4", "IPv6" or "Any", got {shown(proto)}')
    for what, a in (("Src IP", src), ("Dest IP", dst)):
        try:
            parse_addr_pattern(a)
        except ValueError:
            raise ValueError(f"{what} {shown(a)} is not an address, wildcard or prefix") from None
    try:
        spi_pat = parse_spi_pattern(spi_text)
    except ValueError as exc:
        raise ValueError(f"SPI: {exc}") from None
    enc = names.lookup_name(names.WS_ESP_ENCR, enc_name)
    if enc is None:
        raise ValueError(f"unknown esp_sa encryption algorithm {shown(enc_name)}; known: " + ", ".join(
            repr(n) for n in names.WS_ESP_ENCR))
    auth = names.lookup_name(names.WS_ESP_AUTH, auth_name)
    if auth is None:
        raise ValueError(f"unknown esp_sa authentication algorithm {shown(auth_name)}; known: " + ", ".join(
            repr(n) for n in names.WS_ESP_AUTH))
    enc_key = ws_key(enc_key_t)
    auth_key = ws_key(auth_key_t)
    encr = enc.encr
    integ, icv_len, check = auth.integ, auth.icv_len, auth.check
    if enc.gcm_icv_from_auth:
        # "AES-GCM [RFC4106]": the ICV length is the paired "ANY n bit" one (NULL -> 16).
        icv = icv_len or 16
        gcm = {8: EncrTransform.ENCR_AES_GCM_8, 12: EncrTransform.ENCR_AES_GCM_12,
               16: EncrTransform.ENCR_AES_GCM_16}.get(icv)
        if gcm is None:
            raise ValueError(f"AES-GCM [RFC4106] needs an 8, 12 or 16 byte ICV; {shown(auth_name)} gives {icv}")
        encr, integ, icv_len, check, auth_key = gcm, IntegTransform.NONE, None, True, b""
    elif names.is_aead(encr):
        if integ != IntegTransform.NONE or not check:
            # Wireshark only accepts NULL authentication with the AEAD ciphers.
            raise ValueError(f"{shown(enc_name)} is an AEAD cipher; its Authentication must be \"NULL\", not {shown(auth_name)}")
    problem = names.check_key_length(encr, enc_key)
    if problem:
        raise ValueError(f"Encryption Key: {problem}")
    esn: bool | None = None
    if len(f) == 10:
        esn = _parse_sn_field(f[8])
    exact_spi = spi_pat.bits == 32
    return EspSaKeys(
        spi=spi_pat.value if exact_spi else 0,
        encr=encr,
        enc_key=enc_key,
        integ=integ,
        auth_key=auth_key,
        src=src.strip() or "*",
        dst=dst.strip() or "*",
        spi_pattern=None if exact_spi else spi_text.strip(),
        icv_len=icv_len,
        esn=esn,
        source=source,
        check_integrity=check,
    )


def _parse_sn_field(text: str) -> bool | None:
    t = text.strip().lower()
    if not t:
        return None
    if "64" in t or "esn" in t or "extended" in t:
        return True
    if "32" in t:
        return False
    raise ValueError(f"SN field {shown(text)}: expected a 32-bit or 64-bit (ESN) sequence number length")


def ikev2_record(f: list[UatField], source: str) -> IkeSaKeys:
    if len(f) != 8:
        raise ValueError(
            f"ikev2_decryption_table record has {len(f)} fields; expected 8 "
            '(SPIi, SPIr, SK_ei, SK_er, "Encryption", SK_ai, SK_ar, "Integrity")'
        )
    spi_i = _hex_bytes(f[0], "SPIi")
    spi_r = _hex_bytes(f[1], "SPIr")
    if len(spi_i) != 8 or len(spi_r) != 8:
        raise ValueError("SPIi and SPIr must be 8 bytes (16 hex digits) each")
    sk_ei, sk_er = _hex_bytes(f[2], "SK_ei"), _hex_bytes(f[3], "SK_er")
    sk_ai, sk_ar = _hex_bytes(f[5], "SK_ai"), _hex_bytes(f[6], "SK_ar")
    enc = names.lookup_name(names.WS_IKEV2_ENCR, f[4])
    if enc is None:
        raise ValueError(f"unknown IKEv2 encryption algorithm {shown(str(f[4]))}; known: " + ", ".join(
            repr(n) for n in names.WS_IKEV2_ENCR))
    integ = names.lookup_name(names.WS_IKEV2_INTEG, f[7])
    if integ is None:
        raise ValueError(f"unknown IKEv2 integrity algorithm {shown(str(f[7]))}; known: " + ", ".join(
            repr(n) for n in names.WS_IKEV2_INTEG))
    encr, klen = enc
    salt = names.SALT_LEN.get(encr, 0)
    for what, k in (("SK_ei", sk_ei), ("SK_er", sk_er)):
        if len(k) != klen + salt:
            raise ValueError(f"{what} is {len(k)} bytes; {f[4]} needs {klen + salt}"
                             + (f" ({klen}-byte key + {salt}-byte salt)" if salt else ""))
    integ_id, icv_len, check = integ
    return IkeSaKeys(
        spi_i=spi_i, spi_r=spi_r, encr=encr, sk_ei=sk_ei, sk_er=sk_er, integ=integ_id,
        sk_ai=sk_ai, sk_ar=sk_ar, check_integrity=check, icv_len=icv_len, source=source,
    )


def ikev1_record(f: list[UatField], source: str) -> Ikev1Keys:
    if len(f) != 2:
        raise ValueError(f"ikev1_decryption_table record has {len(f)} fields; expected 2 "
                         "(initiator cookie, encryption key)")
    cookie = _hex_bytes(f[0], "Initiator cookie")
    key = _hex_bytes(f[1], "Encryption key")
    if len(cookie) != 8:
        raise ValueError("the initiator cookie must be 8 bytes (16 hex digits)")
    if not key:
        raise ValueError("the IKEv1 encryption key is empty")
    return Ikev1Keys(cookie_i=cookie, enc_key=key, source=source)


# --- writing ----------------------------------------------------------------------------------


def _ipproto(addr: str) -> str:
    return "IPv6" if ":" in addr else "IPv4"


def esp_sa_line(k: EspSaKeys, show_keys: bool, wireshark_40: bool = True, sn_fields: bool = False) -> str:
    """One esp_sa record, or a ``#`` comment line saying why Wireshark cannot take this SA.

    ``sn_fields`` adds the two columns of Wireshark 4.4+ and of the pcapng ESP SA secrets block
    (draft-ietf-opsawg-pcapng, type 0x45535053): "SN" ("32-bit"/"64-bit" = ESN) and "ESN High
    Bits" (0x00000000: the first packets' high bits; ESN inference finds the rest).
    """
    if k.protocol == ProtocolId.AH:
        return f"# SPI 0x{k.spi:08x} {k.src} -> {k.dst}: AH SA; Wireshark's esp_sa table is for ESP only"
    enc = names.ws_esp_encr_name(k.encr)
    if names.is_aead(k.encr):
        auth = "NULL"
        if not k.check_integrity:
            auth = None
    else:
        auth = names.ws_esp_auth_name(k.integ, k.icv_len, k.check_integrity)
    spi = k.spi_pattern or f"0x{k.spi:08x}"
    proto = _ipproto(k.dst if k.dst != "*" else k.src)
    if enc is None or auth is None or (wireshark_40 and not (names.ws_name_is_40(enc) and names.ws_name_is_40(auth))):
        what = names.encr_label(k.encr, k.enc_key) + "/" + names.integ_label(k.integ, k.icv_len, k.check_integrity)
        return (f"# SPI {spi} {k.src} -> {k.dst}: {what} has no Wireshark{' 4.0' if wireshark_40 else ''} "
                "esp_sa name; not written")
    ek = "0x" + k.enc_key.hex() if k.enc_key else ""
    ak = "0x" + k.auth_key.hex() if k.auth_key else ""
    if not show_keys:
        ek, ak = redact(k.enc_key), redact(k.auth_key)
    cols = [proto, k.src, k.dst, spi, enc, ek, auth, ak]
    if sn_fields:
        cols += ["64-bit" if k.esn else "32-bit", "0x00000000"]
    return ",".join(uat_quote(x) for x in cols)


def ikev2_line(k: IkeSaKeys, show_keys: bool) -> str:
    klen = names.cipher_key_len(k.encr, k.sk_ei)
    enc = names.ws_ikev2_encr_name(k.encr, klen)
    integ = names.ws_ikev2_integ_name(k.integ, k.icv_len, k.check_integrity)
    if names.is_aead(k.encr) and k.check_integrity:
        integ = "NONE [RFC4306]"
    if enc is None or integ is None:
        what = names.encr_label(k.encr, k.sk_ei) + "/" + names.integ_label(k.integ, k.icv_len, k.check_integrity)
        return f"# IKE SA {k.spi_i.hex()}_{k.spi_r.hex()}: {what} has no ikev2_decryption_table name; not written"

    def h(b: bytes) -> str:
        return b.hex() if show_keys else redact(b)

    return ",".join([k.spi_i.hex(), k.spi_r.hex(), h(k.sk_ei), h(k.sk_er), uat_quote(enc), h(k.sk_ai),
                     h(k.sk_ar), uat_quote(integ)])


def ikev1_line(k: Ikev1Keys, show_keys: bool) -> str:
    return f"{k.cookie_i.hex()},{k.enc_key.hex() if show_keys else redact(k.enc_key)}"
