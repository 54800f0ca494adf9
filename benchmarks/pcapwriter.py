"""The one pcap writer of the benchmark generators (gen_esp_pcap, bench_memory, bench_many_sas).

Classic little-endian pcap with microsecond timestamps over Ethernet (LINKTYPE_ETHERNET 1),
frames a fixed number of microseconds apart from 1 700 000 000 s. The generated captures are
cached under benchmarks/out/ with ground-truth files beside them (timestamps included), so the
bytes this writes for a given sequence of frames must never change: a change here would make
every cached capture and truth file disagree with a fresh run.
"""

from __future__ import annotations

import os
import struct

PCAP_HDR = struct.Struct("<IHHiIII")
REC = struct.Struct("<IIII")
ETH = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"  # Ethernet II to IPv4
START = 1_700_000_000
FLUSH = 1 << 22  # write in ~4 MiB blocks


def _csum(hdr: bytes) -> int:
    s = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: bytes, dst: bytes, proto: int, payload_len: int, ident: int) -> bytes:
    """An IPv4 header (DF set, TTL 64) with its checksum, for ``payload_len`` bytes of ``proto``."""
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident & 0xFFFF, 0x4000, 64, proto, 0, src, dst)
    return h[:10] + struct.pack("!H", _csum(h)) + h[12:]


def esp_head(src: bytes, dst: bytes, spi: int, frame_len: int, udp: bool, ident: int) -> tuple[bytes, int]:
    """Ethernet, IPv4 (and UDP 4500 when ``udp``, RFC 3948) and the SPI of a ``frame_len``-byte
    ESP frame: (those bytes, the ESP length = what follows the IP or UDP header)."""
    if udp:
        esp_len = frame_len - 14 - 20 - 8
        head = ETH + ipv4(src, dst, 17, 8 + esp_len, ident) + struct.pack("!HHHH", 4500, 4500, 8 + esp_len, 0)
    else:
        esp_len = frame_len - 14 - 20
        head = ETH + ipv4(src, dst, 50, esp_len, ident)
    return head + struct.pack("!I", spi), esp_len


class PcapWriter:
    """``with PcapWriter(path, step_us) as w: ts = w.add(frame)``: each frame is stamped
    ``step_us`` microseconds after the previous one (the first one ``step_us`` after START) and
    ``add`` returns that timestamp in seconds (what the generators' ground truth records)."""

    def __init__(self, path: str | os.PathLike, step_us: int, snaplen: int = 262144) -> None:
        self._fh = open(path, "wb")
        self._fh.write(PCAP_HDR.pack(0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1))
        self._out = bytearray()
        self.step = step_us
        self.sec, self.usec = START, 0

    def add(self, frame: bytes) -> float:
        self.usec += self.step
        if self.usec >= 1_000_000:
            self.sec += 1
            self.usec -= 1_000_000
        out = self._out
        out += REC.pack(self.sec, self.usec, len(frame), len(frame))
        out += frame
        if len(out) > FLUSH:
            self._fh.write(out)
            out.clear()
        return self.sec + self.usec / 1e6

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.write(self._out)
            self._out.clear()
            self._fh.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
