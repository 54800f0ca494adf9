"""pcapng Decryption Secrets Blocks (DSB, block type 0x0000000A): the block layer only.

This module walks and writes pcapng blocks; what the secrets *mean* is decided by the
:data:`ipsecscope.keys.formats.FORMATS` table (each format names the DSB secrets type it travels
in), so this module imports no key parser and the keys package has no import cycle.

The pcapng spec and Wireshark (``wiretap/secrets-types.h``) define secrets types for TLS
(0x544c534b), SSH (0x5353484b), WireGuard (0x57474b4c), ZigBee NWK/APS, OPC UA keys and ESP SAs
(0x45535053, "ESPS"); none for IKE. ipsecscope also defines a private
secrets type, ``0x4950534b`` ("IPSK"), whose data is UTF-8 text in any key format ipsecscope
reads (it writes the native JSON there). Wireshark skips DSBs whose type it does not know, so a
capture carrying one still opens everywhere.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..errors import KeyFileError

SECRETS_TYPE_IPSEC = 0x4950534B  # "IPSK": ipsecscope key text (native JSON or any format we read)
SECRETS_TYPE_ESP = 0x45535053  # "ESPS": Wireshark's ESP SA secrets (wiretap/secrets-types.h)
KNOWN_OTHER_TYPES = {
    0x544C534B: "TLS key log",
    0x5353484B: "SSH key log",
    0x57474B4C: "WireGuard key log",
    0x5A4E574B: "ZigBee NWK key",
    0x5A415053: "ZigBee APS key",
    0x55414B4C: "OPC UA key log",
}

BT_SHB = 0x0A0D0D0A
BT_DSB = 0x0000000A
BOM = 0x1A2B3C4D


def looks_like(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"\x0a\x0d\x0d\x0a"


def iter_secrets(data: bytes, path: str) -> Iterator[tuple[int, int, bytes]]:
    """``(offset, secrets_type, secrets)`` for every DSB of a pcapng file, in file order.

    A broken block structure raises KeyFileError naming the offset (never the secrets).
    """
    off, n, endian = 0, len(data), "<"
    while off + 12 <= n:
        if data[off : off + 4] == b"\x0a\x0d\x0d\x0a":
            bom = data[off + 8 : off + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise KeyFileError(f"bad pcapng byte-order magic at offset {off}", path=path)
            # (imported here: `decrypt -k keys.json` of a pcap never loads the pcapng reader)
            from ..capture.pcapng import version_error

            err = version_error(path, data, off, endian, off)  # a version tshark refuses: never misread
            if err is not None:
                raise KeyFileError(str(err).removeprefix(f"{path}: "), path=path)
        btype, blen = struct.unpack_from(endian + "II", data, off)
        if blen < 12 or blen % 4 or off + blen > n:
            raise KeyFileError(f"pcapng block at offset {off} has a bad length {blen} (truncated file?)",
                               path=path)
        if btype == BT_DSB:
            if blen < 20:
                raise KeyFileError(f"Decryption Secrets Block at offset {off} is too short", path=path)
            stype, slen = struct.unpack_from(endian + "II", data, off + 8)
            if 16 + slen > blen - 4:
                raise KeyFileError(f"Decryption Secrets Block at offset {off}: secrets length {slen} "
                                   "overruns the block", path=path)
            yield off, stype, data[off + 16 : off + 16 + slen]
        off += blen


def type_name(secrets_type: int) -> str:
    return KNOWN_OTHER_TYPES.get(secrets_type, f"type 0x{secrets_type:08x}")


def _block(btype: int, body: bytes) -> bytes:
    pad = (-len(body)) % 4
    blen = 12 + len(body) + pad
    return struct.pack("<II", btype, blen) + body + b"\0" * pad + struct.pack("<I", blen)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * ((-len(value)) % 4)


def dsb_block(secrets_type: int, data: bytes) -> bytes:
    """One DSB (for writers that add a block to their own pcapng stream)."""
    return _block(BT_DSB, struct.pack("<II", secrets_type, len(data)) + data)


def pcapng_with_secrets(blocks: list[tuple[int, bytes]]) -> bytes:
    """A pcapng file holding only a Section Header Block and one DSB per ``(type, data)``.

    Merge it into a capture with ``mergecap -w out.pcapng capture.pcapng keys.pcapng``, or pass
    it straight to ipsecscope as a key file.
    """
    shb_opts = _option(4, b"ipsecscope") + _option(0, b"")  # shb_userappl, opt_endofopt
    shb = _block(BT_SHB, struct.pack("<IHHq", BOM, 1, 0, -1) + shb_opts)
    return shb + b"".join(dsb_block(t, d) for t, d in blocks)
