"""SAs seen on an OpenBSD enc(4) capture (LINKTYPE_ENC): counted per enc header SPI.

An enc frame is the cleartext side of one SA (decode.link: a 12-octet header, af/SPI/flags, then
the packet as the IPsec stack hands it over). Its SPI, the protection flags and the outermost IP
header's addresses make :class:`~ipsecscope.model.sa.EncSa` (why that is the SA's identity: its
docstring, RFC 4301 §4.1). Rare input: the session calls :func:`note_enc` from its general
per-frame path only, never from the ESP fast path.
"""

from __future__ import annotations

import socket

from ..decode.link import AF_INET, AF_INET6, ENC_HDRLEN, ENC_M_AUTH_AH, enc_header
from ..model.sa import EncSa, SaTable

# tunnelled IP inside the outermost header (tunnel mode: IP in IP, RFC 2003 / RFC 2473)
_IPIP, _IPV6 = 4, 41


def _ip(data: bytes, off: int) -> tuple[str, str, int, int, int] | None:
    """(src, dst, protocol, total length, header length) of the IP header at ``off``, or None
    when it is cut off or not IP."""
    if len(data) < off + 20:
        return None
    v = data[off] >> 4
    if v == 4:
        hl = (data[off] & 0x0F) * 4
        return (socket.inet_ntop(socket.AF_INET, data[off + 12:off + 16]),
                socket.inet_ntop(socket.AF_INET, data[off + 16:off + 20]), data[off + 9],
                int.from_bytes(data[off + 2:off + 4], "big"), hl)
    if v == 6 and len(data) >= off + 40:
        return (socket.inet_ntop(socket.AF_INET6, data[off + 8:off + 24]),
                socket.inet_ntop(socket.AF_INET6, data[off + 24:off + 40]), data[off + 6],
                40 + int.from_bytes(data[off + 4:off + 6], "big"), 40)
    return None


def enc_protocol(flags: int) -> str:
    """The IPsec protocol an enc header's flags name: M_AUTH_AH is set for AH only (OpenBSD
    ipsec_input.c), every other protected packet came over ESP."""
    return "AH" if flags & ENC_M_AUTH_AH else "ESP"


def note_enc(table: SaTable, frame: int, ts: float, data: bytes) -> EncSa | None:
    """Count one enc(4) frame on its SA; None when its header or IP header is cut off (the
    decoder marks those malformed) or its family is not IP."""
    hdr = enc_header(data)
    if hdr is None:
        return None
    fam = int.from_bytes(data[0:4], "little")
    fam = fam if fam <= 0xFFFF else int.from_bytes(data[0:4], "big")  # the writer's byte order
    if fam != AF_INET and fam not in AF_INET6:
        return None
    outer = _ip(data, ENC_HDRLEN)
    if outer is None:
        return None
    spi, flags = hdr
    src, dst, proto, length, hl = outer
    key = (spi, enc_protocol(flags), dst)
    sa = table.enc_sas.get(key)
    if sa is None:
        sa = table.enc_sas[key] = EncSa(spi, dst, key[1], src, flags, first_ts=ts, first_frame=frame)
    sa.packets += 1
    sa.bytes += length
    sa.last_ts, sa.last_frame = ts, frame
    # the traffic the SA carries: the packet inside the gateways' IP-in-IP header (tunnel mode),
    # or the packet itself (transport mode)
    inner = _ip(data, ENC_HDRLEN + hl) if proto in (_IPIP, _IPV6) else None
    conv = (inner[0], inner[1], inner[2]) if inner is not None else (src, dst, proto)
    if conv in sa.inner or len(sa.inner) < 256:  # bounded: a scan must not grow it without end
        sa.inner[conv] = sa.inner.get(conv, 0) + 1
    return sa
