"""IP Payload Compression (IPComp, RFC 3173) inside a decrypted ESP payload.

An SA bundle may compress before it encrypts (RFC 3173 §2, §4.3; IKEv2 IPCOMP_SUPPORTED, RFC 7296
§2.22): ESP's Next Header is then 108 and its payload an IPComp header (next header, flags, CPI:
4 octets) followed by the compressed datagram, in tunnel mode an IPv4/IPv6 packet. Each datagram is
compressed on its own (§2.2: no history across packets), so one payload opens by itself. DEFLATE
(RFC 2394, raw RFC 1951 blocks) is what implementations use; LZS (RFC 2395) and LZJH (RFC 3051)
are not opened. A datagram that compression would not have shrunk is sent without the header
(§2.2), so a header means compressed data.
"""

from __future__ import annotations

import zlib

IPCOMP = 108  # IANA protocol number
# RFC 3173 §3.3: the well-known CPIs are the transform IDs; negotiated CPIs (>= 256) name the SA,
# not the algorithm, so they are tried as DEFLATE (and left alone when that fails)
_NOT_DEFLATE = frozenset((1, 3, 4))  # OUI, LZS, LZJH
_MAX = 65535  # the largest IP datagram: a payload inflating beyond it is no IPComp datagram


def ipcomp_open(data: bytes) -> tuple[bytes, int] | None:
    """(the decompressed datagram, its next header) of an IPComp payload, or None when ``data``
    is too short, uses another algorithm than DEFLATE, or does not inflate to a whole datagram."""
    if len(data) < 5:
        return None
    nh, cpi = data[0], (data[2] << 8) | data[3]
    if cpi in _NOT_DEFLATE:
        return None
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(data[4:], _MAX)
    except zlib.error:
        return None
    if d.unconsumed_tail or not out:
        return None
    return out, nh
