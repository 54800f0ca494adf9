"""A streaming pcapng writer (draft-ietf-opsawg-pcapng): one section, interfaces added as needed,
Enhanced Packet Blocks with nanosecond timestamps, optional Decryption Secrets Block.

Memory stays flat: blocks go straight to a buffered file. Interfaces get ``if_tsresol`` = 9 so
original nanosecond timestamps survive.

Decryption Secrets Block: Wireshark defines secrets types for TLS, SSH, WireGuard, ZigBee and OPC
UA, but none for IPsec (its ESP keys live only in the ``esp_sa`` UAT file). We write ipsecscope's
private type ``0x4950534b`` ("IPSK", see :mod:`ipsecscope.keys.dsb`) holding the keys as native
JSON, which ``ipsecscope`` reads back; the block's ``opt_comment`` carries the same SAs as
Wireshark ``esp_sa`` rows, so a human can paste them into Wireshark. Wireshark skips DSBs of
unknown type, so the file opens everywhere.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from ..errors import ExportError

SHB = 0x0A0D0D0A
IDB = 0x00000001
EPB = 0x00000006
DSB = 0x0000000A
SECRETS_TYPE_IPSEC = 0x4950534B  # "IPSK", same value as ipsecscope.keys.dsb

OPT_COMMENT = 1
SHB_USERAPPL = 4
IF_NAME = 2
IF_TSRESOL = 9

LINKTYPE_RAW = 101

_EPB_HDR = struct.Struct("<IIIIIII")  # type, total len, iface, ts hi, ts lo, caplen, origlen
_U32 = struct.Struct("<I")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by len % 4


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + _PAD[len(value) % 4]


def _opts(pairs: list[tuple[int, bytes]]) -> bytes:
    if not pairs:
        return b""
    return b"".join(_opt(c, v) for c, v in pairs) + b"\0\0\0\0"  # opt_endofopt


def comment_option(text: str) -> bytes:
    """A block's options holding one opt_comment (and opt_endofopt); b"" for no text. For the hot
    loops' EPBs, written in pieces around ``epb_header(..., opts_len=len(...))``."""
    return _opts([(OPT_COMMENT, text.encode())]) if text else b""


def block(btype: int, body: bytes) -> bytes:
    body += _PAD[len(body) % 4]
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + _U32.pack(n)


def epb_header(iface: int, ts_ns: int, caplen: int, orig_len: int, opts_len: int = 0) -> tuple[bytes, bytes]:
    """(header, trailer-with-padding) around ``caplen`` bytes of packet data; for hot loops that
    write the data itself from a memoryview."""
    pad = (-caplen) & 3
    total = 32 + caplen + pad + opts_len
    # & 0xFFFFFFFF: a corrupted input timestamp past 2^64 ns (year 2554) wraps instead of raising
    return (_EPB_HDR.pack(EPB, total, iface, (ts_ns >> 32) & 0xFFFFFFFF, ts_ns & 0xFFFFFFFF, caplen, orig_len),
            _PAD[caplen & 3] + _U32.pack(total))


class PcapngWriter:
    """``with PcapngWriter(path) as w: i = w.add_interface(101); w.write_packet(i, ts_ns, data)``."""

    def __init__(self, out: str | BinaryIO, *, appl: str = "ipsecscope", comment: str | None = None) -> None:
        self._own = isinstance(out, str) or hasattr(out, "__fspath__")
        try:
            self.f: BinaryIO = open(out, "wb", buffering=1 << 20) if self._own else out  # type: ignore[arg-type]
        except OSError as exc:
            raise ExportError(f"cannot write {out}: {exc.strerror}; check the directory and permissions") from None
        self.interfaces: list[int] = []
        opts = [(SHB_USERAPPL, appl.encode())]
        if comment:
            opts.insert(0, (OPT_COMMENT, comment.encode()))
        # byte-order magic, version 1.0, section length -1 (unknown: we stream)
        self.f.write(block(SHB, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _opts(opts)))
        self.packets = 0

    def add_interface(self, linktype: int, snaplen: int = 0, name: str | None = None) -> int:
        opts = [(IF_TSRESOL, b"\x09")]
        if name:
            opts.insert(0, (IF_NAME, name.encode()))
        self.f.write(block(IDB, struct.pack("<HHI", linktype, 0, snaplen) + _opts(opts)))
        self.interfaces.append(linktype)
        return len(self.interfaces) - 1

    def write_packet(self, iface: int, ts_ns: int, data: bytes, orig_len: int | None = None,
                     comment: str | None = None) -> None:
        opts = _opts([(OPT_COMMENT, comment.encode())]) if comment else b""
        n = len(data)
        head, tail = epb_header(iface, ts_ns, n, n if orig_len is None else max(orig_len, n), len(opts))
        if opts:
            self.f.write(head + data + tail[:-4] + opts + tail[-4:])
        else:
            self.f.write(head + data + tail)
        self.packets += 1

    def write_raw(self, blob: bytes) -> None:
        """Append already-encoded blocks (e.g. a part written by a worker process)."""
        self.f.write(blob)

    def write_secrets(self, data: bytes, secrets_type: int = SECRETS_TYPE_IPSEC, comment: str | None = None) -> None:
        opts = _opts([(OPT_COMMENT, comment.encode())]) if comment else b""
        body = struct.pack("<II", secrets_type, len(data)) + data + _PAD[len(data) % 4] + opts
        self.f.write(block(DSB, body))

    def close(self) -> None:
        if self._own:
            self.f.close()
        else:
            self.f.flush()

    def __enter__(self) -> PcapngWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
