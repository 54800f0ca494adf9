"""Builders for the captures the Wireshark corpus lacks (imported by the capture/demux/summary tests).

pcap and pcapng are written by hand here (both byte orders, every block type we read), and the
packets inside are built with scapy; tshark then reads the same files as the oracle. The tests at
the bottom check that tshark agrees these files are well formed, so a builder bug cannot make
our reader look right.
"""

from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import needs_tshark
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

# --------------------------------------------------------------------------------------------
# packets


def ike_v2(spi_i: bytes = b"\x11" * 8, spi_r: bytes = b"\x00" * 8, exch: int = 34, flags: int = 0x08,
           msg_id: int = 0, body_len: int = 0) -> bytes:
    """A syntactically valid IKEv2 message: header + one Nonce payload of ``body_len`` bytes."""
    nonce = b"\x5a" * max(body_len, 16)
    payload = struct.pack("!BBH", 0, 0, 4 + len(nonce)) + nonce
    hdr = spi_i + spi_r + struct.pack("!BBBBII", 40, 0x20, exch, flags, msg_id, 28 + len(payload))
    return hdr + payload


def esp(spi: int, seq: int, n: int = 48) -> bytes:
    return struct.pack("!II", spi, seq) + bytes((i * 7 + seq) & 0xFF for i in range(n))


def v4(src: str = "198.18.0.1", dst: str = "198.18.0.2", **kw):
    return IP(src=src, dst=dst, **kw)


def v6(src: str = "2001:db8::1", dst: str = "2001:db8::2", **kw):
    return IPv6(src=src, dst=dst, **kw)


def eth(pkt) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt)


# --------------------------------------------------------------------------------------------
# files


def write_pcap(path: Path, frames: list[bytes], *, linktype: int = 1, order: str = "<", ns: bool = False,
               ts0: int = 1_700_000_000, snaplen: int = 262144, orig_extra: int = 0) -> Path:
    magic = 0xA1B23C4D if ns else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for i, f in enumerate(frames):
        frac = (i * 123_456_789 % 1_000_000_000) if ns else (i * 123_457 % 1_000_000)
        out.append(struct.pack(order + "IIII", ts0 + i, frac, len(f), len(f) + orig_extra) + f)
    path.write_bytes(b"".join(out))
    return path


def _opt(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def shb(order: str = "<") -> bytes:
    return _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
                  + _opt(order, 4, b"ipsecscope tests") + _opt(order, 0, b""))


def idb(order: str, linktype: int, tsresol: int | None = None, snaplen: int = 0, tsoffset: int | None = None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += _opt(order, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += _opt(order, 14, struct.pack(order + "q", tsoffset))
    if opts:
        opts += _opt(order, 0, b"")
    return _block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts)


def epb(order: str, iface: int, units: int, data: bytes, orig: int | None = None) -> bytes:
    return _block(order, 6, struct.pack(order + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(data),
                                        len(data) if orig is None else orig) + data)


def pb(order: str, iface: int, units: int, data: bytes) -> bytes:
    return _block(order, 2, struct.pack(order + "HHIIII", iface, 0, units >> 32, units & 0xFFFFFFFF, len(data),
                                        len(data)) + data)


def spb(order: str, data: bytes) -> bytes:
    return _block(order, 3, struct.pack(order + "I", len(data)) + data)


def dsb(order: str, stype: int, data: bytes) -> bytes:
    return _block(order, 0x0A, struct.pack(order + "II", stype, len(data)) + data)


def gz(path: Path, data: bytes | None = None) -> Path:
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(data if data is not None else path.read_bytes()))
    return out


def tshark_fields(path: Path, *fields: str, extra: tuple[str, ...] = ()) -> list[list[str]]:
    cmd = ["tshark", "-r", str(path), "-T", "fields", *extra]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


# --------------------------------------------------------------------------------------------
# the builders agree with tshark


@needs_tshark
@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_builder_is_valid_for_tshark(tmp_path: Path, order: str) -> None:
    f1 = eth(v4() / UDP(sport=500, dport=500) / Raw(ike_v2()))
    f2 = bytes(v6() / UDP(sport=4500, dport=4500) / Raw(b"\0\0\0\0" + ike_v2()))
    data = (shb(order) + idb(order, 1) + idb(order, 229, tsresol=9) + epb(order, 0, 1_700_000_000_000_001, f1)
            + epb(order, 1, 1_700_000_000_123_456_789, f2) + spb(order, f1))
    p = tmp_path / "b.pcapng"
    p.write_bytes(data)
    rows = tshark_fields(p, "frame.number", "frame.time_epoch", "isakmp.ispi")
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert rows[1][1] == "1700000000.123456789"
    assert rows[0][2] == rows[1][2] == "1111111111111111"


@needs_tshark
def test_tcp_stream_builder_is_valid(tmp_path: Path) -> None:
    p = write_pcap(tmp_path / "t.pcap", [eth(v4() / TCP(sport=40000, dport=4500, flags="S", seq=99))])
    assert tshark_fields(p, "tcp.dstport") == [["4500"]]


def v6_ext_chain() -> object:
    return v6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=[]) / IPv6ExtHdrDestOpt()


__all__ = [
    "IPv6ExtHdrFragment", "Dot1AD", "Dot1Q", "dsb", "epb", "esp", "eth", "gz", "idb", "ike_v2", "pb", "shb",
    "spb", "tshark_fields", "v4", "v6", "v6_ext_chain", "write_pcap",
]
