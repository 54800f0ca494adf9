"""pcapng Decryption Secrets Blocks (DSB, block type 0x0000000A) carrying IPsec keys.

The pcapng spec and Wireshark (``wsutil/secrets-types.h``) define secrets types for TLS
(0x544c534b), SSH (0x5353484b), WireGuard (0x57474b4c), ZigBee NWK/APS and OPC UA keys, but
**none for IPsec or IKE**: Wireshark keeps ESP/IKE keys only in its UAT preference files.
So ipsecscope defines a private secrets type, ``0x4950534b`` ("IPSK"), whose data is UTF-8 text
in any key format :func:`ipsecscope.keys.load_keys` reads; we write the native JSON
(``ipsecscope.keys/1``). Wireshark skips DSBs whose type it does not know, so a capture
carrying one still opens everywhere, and ``mergecap`` keeps the block.

DSBs of other types are ignored (counted in ``KeyStore.ignored_secrets``).
"""

from __future__ import annotations

import struct

from ..errors import KeyFileError
from .store import KeyStore

SECRETS_TYPE_IPSEC = 0x4950534B  # "IPSK": ipsecscope key text (native JSON or any format we read)
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


def keys_from_secrets(secrets_type: int, data: bytes, source: str) -> KeyStore | None:
    """Parse one DSB's data; None if the type is not one we read."""
    if secrets_type != SECRETS_TYPE_IPSEC:
        return None
    # imported here, not at the top: the package __init__ imports this module
    from . import charon, detect_format, jsonkeys, libreswan, tcpdump, wireshark, xfrm

    text = data.decode("utf-8-sig", "replace")
    fmt = detect_format(data)
    parsers = {"json": jsonkeys.parse, "wireshark": wireshark.parse, "xfrm": xfrm.parse,
               "charon": charon.parse, "libreswan": libreswan.parse, "tcpdump": tcpdump.parse}
    if fmt not in parsers:
        raise KeyFileError("Decryption Secrets Block of type IPSK holds no key format ipsecscope reads",
                           path=source)
    return parsers[fmt](text, source, KeyStore())


def parse_pcapng(data: bytes, path: str, store: KeyStore) -> KeyStore:
    """Walk a pcapng file's blocks and add the keys of every IPsec DSB to ``store``."""
    off, n, endian, found = 0, len(data), "<", 0
    while off + 12 <= n:
        if data[off : off + 4] == b"\x0a\x0d\x0d\x0a":
            bom = data[off + 8 : off + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise KeyFileError(f"bad pcapng byte-order magic at offset {off}", path=path)
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
            secret = data[off + 16 : off + 16 + slen]
            found += 1
            store.add_secrets_block(stype, secret, source=f"{path}@DSB+{off}")
        off += blen
    if not found:
        raise KeyFileError("pcapng file has no Decryption Secrets Block", path=path)
    if len(store) == 0 and store.ignored_secrets:
        kinds = sorted({KNOWN_OTHER_TYPES.get(t, f"type 0x{t:08x}") for t, _ in store.ignored_secrets})
        raise KeyFileError("its Decryption Secrets Blocks hold no IPsec keys (only " + ", ".join(kinds) + ")",
                           path=path)
    return store


def _block(btype: int, body: bytes) -> bytes:
    pad = (-len(body)) % 4
    blen = 12 + len(body) + pad
    return struct.pack("<II", btype, blen) + body + b"\0" * pad + struct.pack("<I", blen)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * ((-len(value)) % 4)


def dsb_block(secrets_type: int, data: bytes) -> bytes:
    """One DSB (for writers that add a block to their own pcapng stream)."""
    return _block(BT_DSB, struct.pack("<II", secrets_type, len(data)) + data)


def pcapng_with_secrets(text: str) -> bytes:
    """A pcapng file holding only a Section Header Block and one IPsec DSB with ``text``.

    Merge it into a capture with ``mergecap -w out.pcapng capture.pcapng keys.pcapng``, or pass
    it straight to ipsecscope as a key file.
    """
    shb_opts = _option(4, b"ipsecscope") + _option(0, b"")  # shb_userappl, opt_endofopt
    shb = _block(BT_SHB, struct.pack("<IHHq", BOM, 1, 0, -1) + shb_opts)
    return shb + dsb_block(SECRETS_TYPE_IPSEC, text.encode())
