"""``ip xfrm state`` / ``ip -s xfrm state`` output (iproute2 ``ip/ipxfrm.c``).

Each SA starts with an unindented ``src A dst B`` line; the rest is tab-indented::

    src 198.18.0.1 dst 198.18.0.2
            proto esp spi 0xc1234567 reqid 1 mode tunnel
            replay-window 32 flag af-unspec esn
            auth-trunc hmac(sha256) 0x<key> 128
            enc cbc(aes) 0x<key>
            aead rfc4106(gcm(aes)) 0x<key+4-byte salt> 128
            encap type espinudp sport 4500 dport 4500 addr 0.0.0.0
            anti-replay esn context: ...
            lifetime config: / lifetime current: / stats: ...   (ip -s; ignored)

The kernel always reports the truncated form (``auth-trunc NAME KEY BITS``) even for SAs added
with plain ``auth``, whose default truncation is 96 bits (also for hmac(sha256): the pre-RFC
4868 value, a classic interop bug we keep visible as ``icv_len=12``).
"""

from __future__ import annotations

import ipaddress
import re

from ..errors import KeyFileError
from ..model.iana import EncrTransform, IntegTransform, ProtocolId
from ..model.keys import EspSaKeys
from . import names
from .names import shown
from .store import KeyStore

_SA_HEAD = re.compile(r"^src (?P<src>\S+) dst (?P<dst>\S+)\s*$")
_PROTO = re.compile(r"^\s+proto (?P<proto>\S+) spi 0x(?P<spi>[0-9a-fA-F]{1,8})(?: reqid (?P<reqid>\d+))?(?: mode (?P<mode>\S+))?")
_ALG = re.compile(r"^\s+(?P<kind>enc|auth|auth-trunc|aead|comp) (?P<name>\S+)(?: (?P<key>0x[0-9a-fA-F]*|<<Keys hidden>>))?(?: (?P<bits>\d+))?\s*$")
_FLAGS = re.compile(r"^\s+replay-window (?P<win>\d+)(?: seq 0x[0-9a-fA-F]+)?(?: flag (?P<flags>.*))?$")
_ENCAP = re.compile(r"^\s+encap type (?P<type>\S+) sport (?P<sport>\d+) dport (?P<dport>\d+)")


def looks_like(text: str) -> bool:
    lines = text.lstrip("\n").splitlines()[:3]
    return bool(lines and _SA_HEAD.match(lines[0]) and len(lines) > 1 and _PROTO.match(lines[1]))


class _Sa:
    def __init__(self, src: str, dst: str, line: int) -> None:
        self.src, self.dst, self.line = src, dst, line
        self.proto: str | None = None
        self.spi = 0
        self.mode = ""
        self.reqid = ""
        self.enc: tuple[str, bytes, int] | None = None
        self.auth: tuple[str, bytes, int | None, int] | None = None  # name, key, trunc bits, line
        self.aead: tuple[str, bytes, int, int] | None = None
        self.esn = False
        self.encap = ""
        self.error: KeyFileError | None = None  # a line of this SA was unusable: skip the SA


def _key(m: re.Match[str], path: str, line: int) -> bytes:
    key = m.group("key") or ""
    if key == "<<Keys hidden>>":
        raise KeyFileError("keys are hidden (the output came from 'ip xfrm state list nokeys'); "
                           "run 'ip xfrm state' without nokeys", path=path, line=line)
    if not key.startswith("0x"):
        return b""
    try:
        return bytes.fromhex(key[2:])
    except ValueError:
        raise KeyFileError(f"the {m.group('kind')} key ({len(key) - 2} characters after 0x) is not whole bytes "
                           "of hex", path=path, line=line) from None


def _alg_line(sa: _Sa, m: re.Match[str], path: str, lineno: int) -> None:
    kind, name = m.group("kind"), m.group("name")
    bits = int(m.group("bits")) if m.group("bits") else None
    if kind == "enc":
        sa.enc = (name, _key(m, path, lineno), lineno)
    elif kind in ("auth", "auth-trunc"):
        sa.auth = (name, _key(m, path, lineno), bits if kind == "auth-trunc" else None, lineno)
    elif kind == "aead":
        if bits is None:
            raise KeyFileError("aead line without the ICV length in bits", path=path, line=lineno)
        sa.aead = (name, _key(m, path, lineno), bits, lineno)


def _finish(sa: _Sa, path: str, store: KeyStore) -> None:
    """Add one SA's keys, or leave it out with a ``file:line: reason`` warning (it costs only itself)."""
    try:
        _finish_sa(sa, path, store)
    except KeyFileError as exc:
        store.skip(exc)


def _finish_sa(sa: _Sa, path: str, store: KeyStore) -> None:
    if sa.proto not in ("esp", "ah"):
        return  # comp (IPComp), route2, hao: no keys for us
    if sa.error is not None:
        raise sa.error
    where = f"{path}:{sa.line}"
    note = f"{where} (reqid {sa.reqid}, {sa.mode or '?'} mode{', ' + sa.encap if sa.encap else ''})"
    encr: int = EncrTransform.ENCR_NULL
    enc_key = b""
    integ: int = IntegTransform.NONE
    auth_key = b""
    icv_len: int | None = None
    if sa.aead is not None:
        name, enc_key, bits, line = sa.aead
        by_icv = names.XFRM_AEAD.get(name)
        if by_icv is None or bits not in by_icv:
            raise KeyFileError(f"unknown aead algorithm {shown(name)} with {bits}-bit ICV; known: "
                               + ", ".join(names.XFRM_AEAD), path=path, line=line)
        encr = by_icv[bits]
    if sa.enc is not None:
        name, enc_key, line = sa.enc
        if name not in names.XFRM_ENC:
            raise KeyFileError(f"unknown enc algorithm {shown(name)}; known: " + ", ".join(names.XFRM_ENC),
                               path=path, line=line)
        encr = names.XFRM_ENC[name]
    if sa.auth is not None:
        name, auth_key, bits, line = sa.auth
        if name not in names.XFRM_AUTH:
            raise KeyFileError(f"unknown auth algorithm {shown(name)}; known: " + ", ".join(names.XFRM_AUTH),
                               path=path, line=line)
        integ, default_bits = names.XFRM_AUTH[name]
        bits = default_bits if bits is None else bits
        exact = names.XFRM_AUTH_EXACT.get((name, bits))
        if exact is not None:
            integ = exact
        elif integ != IntegTransform.NONE and bits // 8 != names.INTEG_ICV.get(integ):
            icv_len = bits // 8
    for what, addr in (("src", sa.src), ("dst", sa.dst)):
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise KeyFileError(f"{what} {shown(addr)} is not an IP address", path=path, line=sa.line) from None
    if sa.proto == "esp" and sa.enc is None and sa.aead is None:
        raise KeyFileError("ESP SA without an enc or aead line", path=path, line=sa.line)
    problem = names.check_key_length(encr, enc_key)
    if problem:
        raise KeyFileError(problem, path=path, line=sa.line)
    store.add_esp(EspSaKeys(
        spi=sa.spi, encr=encr, enc_key=enc_key, integ=integ, auth_key=auth_key, src=sa.src, dst=sa.dst,
        icv_len=icv_len, esn=sa.esn, protocol=ProtocolId.ESP if sa.proto == "esp" else ProtocolId.AH, source=note,
    ))


def parse(text: str, path: str, store: KeyStore | None = None) -> KeyStore:
    store = store if store is not None else KeyStore()
    sa: _Sa | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        h = _SA_HEAD.match(line)
        if h:
            if sa is not None:
                _finish(sa, path, store)
            sa = _Sa(h.group("src"), h.group("dst"), lineno)
            continue
        if sa is None:
            if line.startswith(("Error", "RTNETLINK")):
                raise KeyFileError(f"this is an error message, not xfrm state: {line.strip()}", path=path,
                                   line=lineno)
            raise KeyFileError("expected 'src ADDR dst ADDR' (the first line of each SA in "
                               "'ip xfrm state' output)", path=path, line=lineno)
        m = _PROTO.match(line)
        if m:
            sa.proto = m.group("proto")
            sa.spi = int(m.group("spi"), 16)
            sa.mode = m.group("mode") or ""
            sa.reqid = m.group("reqid") or ""
            continue
        m = _ALG.match(line)
        if m:
            try:
                _alg_line(sa, m, path, lineno)
            except KeyFileError as exc:
                sa.error = sa.error or exc
            continue
        m = _FLAGS.match(line)
        if m:
            sa.esn = "esn" in (m.group("flags") or "").split()
            continue
        m = _ENCAP.match(line)
        if m:
            sa.encap = f"{m.group('type')} {m.group('sport')}->{m.group('dport')}"
            continue
        # sel, lifetime, stats, anti-replay context, bitmap rows, dir, if_id, offload...: not keys
    if sa is not None:
        _finish(sa, path, store)
    return store
