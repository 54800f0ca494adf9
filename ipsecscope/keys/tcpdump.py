"""tcpdump ``-E`` ESP secrets (``tcpdump -E file:NAME`` reads one per line).

Line syntax (tcpdump(1), print-esp.c ``esp_print_decode_onesecret``)::

    [spi@ipdst ]algo:secret          # e.g. 0x12345678@198.18.0.2 aes128-cbc-hmac96:0x0123...
    # comment

``algo`` is an OpenSSL CBC cipher name with ``-cbc`` and an optional ``-hmac96`` suffix (12
bytes of ICV are then stripped, never verified); ``secret`` is ``0x``-hex or ASCII text.
Without ``spi@ipdst`` the secret applies to every SA.

IKEv2 SA keys (``esp_print_decode_ikeline``), one line per direction of one IKE SA::

    ikev2 I 0x<SPIi> 0x<SPIr> sha1:0x<SK_ai> aes128:0x<SK_ei>
    ikev2 R 0x<SPIi> 0x<SPIr> sha1:0x<SK_ar> aes128:0x<SK_er>

The two lines make one IKE SA (:class:`IkeSaKeys`, no SK_d: tcpdump does not need it). tcpdump's
``ikev1`` lines carry IKEv1 phase-1 secrets in a form it never uses for decryption, and are
skipped with a warning.
"""

from __future__ import annotations

import re

from ..errors import KeyFileError
from ..model.iana import IntegTransform
from ..model.keys import EspSaKeys, IkeSaKeys
from ..model.plural import with_article
from . import names
from .names import shown
from .store import KeyStore, parse_addr_pattern

_IKE_LINE = re.compile(names.IKE_LINE_PATTERN)

_LINE = re.compile(
    r"^(?:(?P<spi>0[xX][0-9a-fA-F]{1,8}|\d+)@(?P<dst>\S+)\s+)?(?P<algo>[A-Za-z0-9][\w.-]*):(?P<secret>\S+)\s*$"
)


def looks_like(text: str) -> bool:
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if _IKE_LINE.match(s):
            return True
        m = _LINE.match(s)
        return bool(m and (m.group("spi") or m.group("algo").lower().removesuffix("-hmac96").endswith("-cbc")
                           or m.group("algo").lower() == "none"))
    return False


def _secret(text: str) -> bytes:
    if text[:2].lower() == "0x":
        body = text[2:]
        if len(body) % 2:
            raise ValueError("hex secret has an odd number of digits")
        try:
            return bytes.fromhex(body)
        except ValueError:
            raise ValueError("secret starts with 0x but is not hex") from None
    return text.encode()


def parse(text: str, path: str, store: KeyStore | None = None) -> KeyStore:
    store = store if store is not None else KeyStore()
    halves: dict[tuple[bytes, bytes], dict[str, tuple[int, int, bytes, bytes, int]]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            first = s.split()[0]
            if first == "ikev2":
                _ike_line(s, path, lineno, halves, store)
            elif first == "ikev1":
                store.warnings.append(f"{path}:{lineno}: tcpdump 'ikev1' line: IKEv1 keys are read from "
                                      "charon logs or ikev1_decryption_table; skipped")
            else:
                store.add_esp(_esp_line(s, path, lineno))
        except KeyFileError as exc:  # one bad line costs only itself
            store.skip(exc)
    for spis, pair in halves.items():
        for d, half in pair.items():
            other = "R" if d == "I" else "I"
            store.skip(KeyFileError(f"IKE SA {spis[0].hex()}_{spis[1].hex()} has an 'ikev2 {d}' line but no "
                                    f"'ikev2 {other}' line: both directions' keys are needed", path=path,
                                    line=half[4]))
    return store


def _ike_line(s: str, path: str, lineno: int, halves: dict, store: KeyStore) -> None:
    """One ``ikev2 I|R`` line; the second of a pair adds the IKE SA to ``store``."""
    m = _IKE_LINE.match(s)
    if not m:
        raise KeyFileError("expected 'ikev2 I|R 0xSPIi 0xSPIr integ:0xKEY encr:0xKEY', e.g. "
                           "'ikev2 I 0x0001020304050607 0xc02e7a3031a03188 sha1:0x… aes128:0x…'",
                           path=path, line=lineno)
    integ = names.IKE_LINE_INTEG.get(m.group("integ").lower())
    enc = names.ike_line_encr(m.group("encr").lower())
    if integ is None or enc is None:
        bad = m.group("integ") if integ is None else m.group("encr")
        raise KeyFileError(f"unknown algorithm {shown(bad)} in an 'ikev2' line; known: "
                           + ", ".join(names.IKE_LINE_INTEG) + " / " + ", ".join(names.IKE_LINE_ENCR)
                           + " (+ key bits, e.g. aes128)", path=path, line=lineno)
    encr, key_len = enc
    ek = bytes.fromhex(m.group("ek")) if len(m.group("ek")) % 2 == 0 else None
    ak = bytes.fromhex(m.group("ak") or "") if len(m.group("ak") or "") % 2 == 0 else None
    if ek is None or ak is None:
        raise KeyFileError("a key in this 'ikev2' line has an odd number of hex digits", path=path, line=lineno)
    if key_len is not None and len(ek) != key_len:
        raise KeyFileError(f"{shown(m.group('encr'))} needs {with_article(f'{key_len}-byte')} key, got {len(ek)} bytes",
                           path=path, line=lineno)
    problem = names.check_key_length(encr, ek)
    if problem:
        raise KeyFileError(problem, path=path, line=lineno)
    spis = (bytes.fromhex(m.group("spi_i")), bytes.fromhex(m.group("spi_r")))
    pair = halves.setdefault(spis, {})
    pair[m.group("dir")] = (encr, integ, ek, ak, lineno)
    if "I" in pair and "R" in pair:
        i, r = pair.pop("I"), pair.pop("R")
        del halves[spis]
        if i[:2] != r[:2]:
            raise KeyFileError("the 'ikev2 I' and 'ikev2 R' lines of this IKE SA name different algorithms",
                               path=path, line=lineno)
        store.add_ike(IkeSaKeys(spi_i=spis[0], spi_r=spis[1], encr=i[0], sk_ei=i[2], sk_er=r[2], integ=i[1],
                                sk_ai=i[3], sk_ar=r[3], prf=None, source=f"{path}:{min(i[4], r[4])}"))


def _esp_line(s: str, path: str, lineno: int) -> EspSaKeys:
    m = _LINE.match(s)
    if not m:
        raise KeyFileError("expected '[spi@ipdst] algo:secret', e.g. "
                           "'0x12345678@198.18.0.2 aes128-cbc-hmac96:0x0011...'", path=path, line=lineno)
    algo = m.group("algo").lower()
    icv = 0
    if algo.endswith("-hmac96"):
        algo, icv = algo.removesuffix("-hmac96"), 12
    algo = algo.removesuffix("-cbc")
    if algo == "rc3":
        raise KeyFileError("rc3-cbc (listed in tcpdump's manual) is not a cipher OpenSSL or ipsecscope "
                           "knows", path=path, line=lineno)
    spec = names.TCPDUMP_ENC.get(algo)
    if spec is None:
        raise KeyFileError(f"unknown tcpdump algorithm {shown(m.group('algo'))}; known: "
                           + ", ".join(f"{a}-cbc" for a in names.TCPDUMP_ENC if a != "none") + ", none "
                           "(optionally with -hmac96)", path=path, line=lineno)
    encr, klen = spec
    try:
        key = _secret(m.group("secret"))
    except ValueError as exc:
        raise KeyFileError(str(exc), path=path, line=lineno) from None
    if klen is not None and len(key) != klen:
        raise KeyFileError(f"{shown(m.group('algo'))} needs {with_article(f'{klen}-byte')} secret, got {len(key)} bytes",
                           path=path, line=lineno)
    dst = m.group("dst") or "*"
    try:
        parse_addr_pattern(dst)
    except ValueError:
        raise KeyFileError(f"{shown(dst)} is not an IP address", path=path, line=lineno) from None
    spi_t = m.group("spi")
    spi = (int(spi_t, 16) if spi_t[:2].lower() == "0x" else int(spi_t, 10)) if spi_t else 0
    if spi > 0xFFFFFFFF:
        raise KeyFileError(f"SPI {spi_t} does not fit in 32 bits", path=path, line=lineno)
    return EspSaKeys(
        spi=spi, encr=encr, enc_key=key, integ=IntegTransform.NONE, auth_key=b"", src="*", dst=dst,
        spi_pattern=None if spi_t else "*", icv_len=icv, check_integrity=False,
        source=f"{path}:{lineno}",
    )
