"""tcpdump ``-E`` ESP secrets (``tcpdump -E file:NAME`` reads one per line).

Line syntax (tcpdump(1), print-esp.c ``esp_print_decode_onesecret``)::

    [spi@ipdst ]algo:secret          # e.g. 0x12345678@198.18.0.2 aes128-cbc-hmac96:0x0123...
    # comment

``algo`` is an OpenSSL CBC cipher name with ``-cbc`` and an optional ``-hmac96`` suffix (12
bytes of ICV are then stripped, never verified); ``secret`` is ``0x``-hex or ASCII text.
Without ``spi@ipdst`` the secret applies to every SA. tcpdump's ``ikev1``/``ikev2`` lines
(IKE SA secrets) carry no ESP keys and are skipped.
"""

from __future__ import annotations

import re

from ..errors import KeyFileError
from ..model.iana import IntegTransform
from ..model.keys import EspSaKeys
from . import names
from .names import shown
from .store import KeyStore, parse_addr_pattern

_LINE = re.compile(
    r"^(?:(?P<spi>0[xX][0-9a-fA-F]{1,8}|\d+)@(?P<dst>\S+)\s+)?(?P<algo>[A-Za-z0-9][\w.-]*):(?P<secret>\S+)\s*$"
)


def looks_like(text: str) -> bool:
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
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
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#") or s.split()[0] in ("ikev1", "ikev2"):
            continue
        try:
            store.add_esp(_esp_line(s, path, lineno))
        except KeyFileError as exc:  # one bad line costs only itself
            store.skip(exc)
    return store


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
        raise KeyFileError(f"{shown(m.group('algo'))} needs a {klen}-byte secret, got {len(key)} bytes",
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
