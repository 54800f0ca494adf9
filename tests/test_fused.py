"""The fused header formats (decode/fused.py): every named field sits at its declared offset.

Oracle: real records of a real capture (samples/synthetic/aead.pcap, raw ESP and ESP in UDP 4500)
read field by field at the declared offsets with plain slicing, and the same frames dissected by
scapy; the fused struct must return the same values.
"""

from __future__ import annotations

import struct

import pytest

from ipsecscope.decode import fused
from ipsecscope.decode.fused import EPB_ETH_IPV4, ETH_IPV4_NET, PCAP_ETH_IPV4, Fused, at
from tests.conftest import SAMPLES

SYN = SAMPLES / "synthetic"


def _pcap_records(path):
    data = path.read_bytes()
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        yield data, off, data[off + 16:off + 16 + incl]
        off += 16 + incl


def test_offsets_are_the_declared_ones() -> None:
    # the documented layout of the decrypt fast loop's pcap read (was "<III4x12x3sxBB2xHxB2x12s4x8s")
    assert PCAP_ETH_IPV4.offsets == {"sec": 0, "frac": 4, "incl": 8, "ev": 28, "tlh": 32, "tll": 33,
                                     "fragw": 36, "proto": 39, "k12": 42, "x8": 58}
    assert PCAP_ETH_IPV4.size == 16 + fused.ETH_IPV4_END
    assert struct.calcsize(PCAP_ETH_IPV4.format) == struct.calcsize("<III4x12x3sxBB2xHxB2x12s4x8s")
    assert EPB_ETH_IPV4.offsets["ev"] == 28 + 12 and EPB_ETH_IPV4.offsets["x8"] == 28 + 42
    assert EPB_ETH_IPV4.size == 28 + fused.ETH_IPV4_END
    assert ETH_IPV4_NET.offsets == {"etype": 12, "vihl": 14, "tot_len": 16, "fragw": 20, "proto": 23}


def test_overlapping_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        Fused("<", (("a", "I", 0), ("b", "H", 2)))


@pytest.mark.parametrize("name", ["aead", "ipv6-transport-natt", "cbc-ctr-hmac"])
def test_fields_match_real_frames(name: str) -> None:
    scapy = pytest.importorskip("scapy.all")
    seen = 0
    for data, off, frame in _pcap_records(SYN / f"{name}.pcap"):
        if len(frame) < fused.ETH_IPV4_END:
            continue
        got = dict(zip(PCAP_ETH_IPV4.names, PCAP_ETH_IPV4.unpack_from(data, off), strict=True))
        for fname, code, o in PCAP_ETH_IPV4.rows:  # each field is the bytes at its declared offset
            assert got[fname] == struct.unpack_from("<" + code, data, off + o)[0], fname
        be = dict(zip(ETH_IPV4_NET.names, ETH_IPV4_NET.unpack_from(frame, 0), strict=True))
        pkt = scapy.Ether(frame)
        assert be["etype"] == pkt.type
        if pkt.type != 0x0800:
            continue
        ip = pkt[scapy.IP]
        seen += 1
        assert got["ev"] == b"\x08\x00" + bytes([(ip.version << 4) | ip.ihl])
        assert (got["tlh"] << 8) | got["tll"] == ip.len == be["tot_len"]
        assert got["proto"] == ip.proto == be["proto"]
        # the little-endian read of the network-order flags/fragment field, as the loop masks it
        assert bool(got["fragw"] & 0xFF3F) == bool(ip.frag or ip.flags.MF)
        assert got["k12"][:8] == bytes(map(int, ip.src.split("."))) + bytes(map(int, ip.dst.split(".")))
        if ip.proto == 50:
            assert got["k12"][8:] == bytes(ip.payload)[:4]  # the SPI
            assert got["x8"] == bytes(ip.payload)[8:16]  # the IV
        elif ip.proto == 17 and ip.ihl == 5:
            udp = ip[scapy.UDP]
            assert got["k12"][8:] == struct.pack("!HH", udp.sport, udp.dport)
            assert got["x8"] == bytes(udp.payload)[:8]  # SPI | sequence number
    assert seen or name == "ipv6-transport-natt"


def test_at_shifts_rows() -> None:
    assert at((("a", "B", 1),), 16) == (("a", "B", 17),)
