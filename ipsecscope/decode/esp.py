"""ESP and AH header helpers for the hot path (precompiled structs, no objects).

ESP (RFC 4303 §2): SPI(4) | Sequence Number(4) | payload... ; the rest is opaque without keys.
AH (RFC 4302 §2): Next Header(1) | Payload Len(1) | Reserved(2) | SPI(4) | Seq(4) | ICV...
where Payload Len is the AH length in 32-bit words minus 2.
"""

from __future__ import annotations

import struct

ESP_HDR = struct.Struct("!II")  # spi, seq
AH_HDR = struct.Struct("!BBHII")  # next header, payload len, reserved, spi, seq
ESP_HDR_LEN = 8
AH_FIXED_LEN = 12


def esp_header(data: bytes | memoryview, off: int = 0) -> tuple[int, int] | None:
    """(spi, seq) or None when fewer than 8 bytes remain."""
    if len(data) - off < ESP_HDR_LEN:
        return None
    return ESP_HDR.unpack_from(data, off)


def ah_header(data: bytes | memoryview, off: int = 0) -> tuple[int, int, int, int] | str:
    """(next_header, total_len, spi, seq) or a one-line reason why the AH header is unusable."""
    avail = len(data) - off
    if avail < AH_FIXED_LEN:
        return f"AH header truncated ({avail} of {AH_FIXED_LEN} bytes)"
    nh, plen, _res, spi, seq = AH_HDR.unpack_from(data, off)
    total = (plen + 2) * 4
    if total < AH_FIXED_LEN:
        return f"AH payload length {plen} gives {total} bytes, less than the 12-byte fixed header"
    if total > avail:
        return f"AH header says {total} bytes, only {avail} captured"
    return nh, total, spi, seq
