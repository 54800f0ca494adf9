"""Fused header formats: one ``struct`` call reads a capture record header *and* the link, IP and
ESP fields behind it, for the hot loops that cannot afford a call per layer (the decrypt loop in
:mod:`ipsecscope.export.hotloop`).

Each layer is declared once, dpkt-style, as a table of ``(name, struct code, offset)`` rows;
:class:`Fused` lays tables end to end at their offsets, fills the gaps with pad bytes and checks
that nothing overlaps, so the offsets written here are the truth and the format strings are
derived (``tests/test_fused.py`` checks every named field against a real frame).

Byte order: a fused struct has one byte order, that of the capture's record header (pcap and
pcapng are little-endian in the captures the fast loops take). Network-order fields behind it are
therefore read as bytes (``s``, ``B``) or, for a 16-bit field tested against a mask, read in the
record's order with the mask swapped to match (``fragw``: ``0x3FFF`` network order is ``0xFF3F``
little-endian).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

Row = tuple[str | None, str, int]  # (field name or None for ignored, struct code, byte offset)

# --- capture record headers (offset 0 = the start of the record) -------------------------------
PCAP_RECORD: tuple[Row, ...] = (
    ("sec", "I", 0),     # ts seconds
    ("frac", "I", 4),    # ts µs or ns (the file header's magic says which)
    ("incl", "I", 8),    # captured length
    # orig_len at 12 is read only when a frame leaves the fast path
)
PCAP_RECORD_LEN = 16

EPB: tuple[Row, ...] = (  # pcapng Enhanced Packet Block
    ("btype", "I", 0),   # 6
    ("blen", "I", 4),    # total block length
    ("iface", "I", 8),
    ("ts_hi", "I", 12),
    ("ts_lo", "I", 16),
    ("incl", "I", 20),
    ("orig", "I", 24),
)
EPB_HEADER_LEN = 28

# --- Ethernet + IPv4 (20-byte header) + ESP / UDP (offset 0 = the start of the frame) ------------
ETH_IPV4: tuple[Row, ...] = (
    # Ethernet type (12-13) and IPv4 version/IHL (14) as one 3-byte string: one comparison against
    # b"\x08\x00\x45" says "IPv4 without options"
    ("ev", "3s", 12),
    ("tlh", "B", 16),    # IPv4 total length, high byte
    ("tll", "B", 17),    # ... low byte (two bytes: no byte swap under a little-endian struct)
    ("fragw", "H", 20),  # flags + fragment offset, in the record's byte order (see module doc)
    ("proto", "B", 23),
    # src (26), dst (30) and the first 4 bytes after the IPv4 header (34): the SPI of raw ESP,
    # or the UDP ports: the SA key of raw ESP in one slice
    ("k12", "12s", 26),
    # raw ESP: the IV (42..49); ESP in UDP 4500: SPI and sequence number (42..49) = an AEAD's AAD
    ("x8", "8s", 42),
)
ETH_IPV4_END = 50  # bytes of the frame the fused read needs

# The general loop's check on a big-endian capture's frame (network order throughout)
ETH_IPV4_BE: tuple[Row, ...] = (
    ("etype", "H", 12),
    ("vihl", "B", 14),
    ("tot_len", "H", 16),
    ("fragw", "H", 20),
    ("proto", "B", 23),
)


def at(rows: Sequence[Row], base: int) -> tuple[Row, ...]:
    """``rows`` moved ``base`` bytes further (a frame behind a record header)."""
    return tuple((n, c, o + base) for n, c, o in rows)


class Fused:
    """A ``struct.Struct`` built from rows: ``.unpack_from(buf, off)`` returns the named fields
    in row order; ``.offsets`` maps each name to its byte offset, ``.size`` is the bytes read."""

    __slots__ = ("rows", "struct", "unpack_from", "names", "offsets", "size", "format")

    def __init__(self, order: str, *tables: Sequence[Row]) -> None:
        rows = sorted((r for t in tables for r in t), key=lambda r: r[2])
        fmt, pos = [order], 0
        for name, code, off in rows:
            if off < pos:
                raise ValueError(f"field {name!r} at {off} overlaps the previous field (ends at {pos})")
            if off > pos:
                fmt.append(f"{off - pos}x")
            fmt.append(code)
            pos = off + struct.calcsize("<" + code)
        self.rows = tuple(rows)
        self.format = "".join(fmt)
        self.struct = struct.Struct(self.format)
        self.unpack_from = self.struct.unpack_from
        self.names = tuple(n for n, _, _ in rows)
        self.offsets = {n: o for n, _, o in rows}
        self.size = self.struct.size


# The fused reads the decrypt fast loop makes (little-endian records of Ethernet frames)
PCAP_ETH_IPV4 = Fused("<", PCAP_RECORD, at(ETH_IPV4, PCAP_RECORD_LEN))
EPB_ETH_IPV4 = Fused("<", EPB, at(ETH_IPV4, EPB_HEADER_LEN))
ETH_IPV4_NET = Fused("!", ETH_IPV4_BE)

# What the loops write: an EPB header (type, length, interface, ts high, ts low, caplen, origlen)
EPB_OUT = Fused("<", EPB)

__all__ = ["EPB", "EPB_ETH_IPV4", "EPB_OUT", "ETH_IPV4", "ETH_IPV4_NET", "Fused", "PCAP_ETH_IPV4", "PCAP_RECORD", "at"]
