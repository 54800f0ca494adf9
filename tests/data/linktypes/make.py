"""Writes this folder: IPsec traffic in link types real routers and firewalls capture it in, each
frame built byte for byte from its format (run from the repository root:
``.venv/bin/python tests/data/linktypes/make.py``). The packets are real: tests/data/esp-frag-loss,
two strongSwan peers (IKEv2, ESP in UDP 4500, AES-GCM; IP fragments); only the link headers are
written here.

* ``enc.pcap`` — LINKTYPE_ENC (109), OpenBSD's enc(4) IPsec pseudo-interface, as ``tcpdump -i
  enc0`` on an amd64 gateway writes it: a 12-octet header (address family AF_INET 2 and flags in
  the host's byte order, little-endian; the SPI in network order: tcpdump print-enc.c, Wireshark
  packet-enc.c), then the packet the IPsec stack hands over: for each ESP packet of the source
  capture decrypted with its keys, OpenBSD's tunnel mode form, IP-in-IP between the gateways
  (IPPROTO_IPIP, RFC 2003) around the inner packet; flags M_AUTH | M_CONF (0x0c00: ESP with
  integrity). Outbound packets get the same header (enc(4) shows both directions).
* ``enc-rekey.pcap`` — the same form from samples/cbc-sha2-pfs (three CHILD SAs, one a rekey:
  six SPIs, both directions), written as a big-endian gateway (sparc64, powerpc64) writes it:
  the family and flags in network order too; M_AUTH | M_CONF (AES-CBC with HMAC-SHA-256).
* ``juniper.pcapng`` — one interface per Juniper link type Wireshark dissects (libpcap
  pcap-linktype(7); Wireshark packet-juniper.c): each frame starts "MGC", a flags octet (0x01:
  inbound; 0x80: extension TLVs follow, their total length in 2 octets; 0x02: no link header, a
  little-endian JUNOS protocol number instead), then JUNIPER_ETHER (178) the Ethernet frame,
  JUNIPER_PPPOE (167) the Ethernet frame, JUNIPER_PPP (179) ff 03 and the PPP protocol 0x0021,
  JUNIPER_FRELAY (180) the Q.922 address of DLCI 100, UI 0x03 and NLPID 0xcc (RFC 2427),
  JUNIPER_CHDLC (181) 0x0f 0x00 and Ethertype 0x0800, JUNIPER_SERVICES (136, the MS/AS-PIC where
  Junos runs IPsec services) a 12-octet cookie outbound / 16 inbound, JUNIPER_GGSN (133) protocol 2
  (IPv4, little-endian) and VLAN 0; the source frames in turn over the interfaces, every third one
  with an extension TLV (interface index), every fifth one in the "no L2" form (protocol 2).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT))

from ipsecscope.api import iter_decrypted  # noqa: E402
from ipsecscope.capture import open_capture  # noqa: E402

SRC = HERE.parent / "esp-frag-loss"
ENC_AUTH_CONF = 0x0800 | 0x0400  # M_AUTH | M_CONF
AF_INET = 2

# (link type, the link header in front of the IP packet; None: the Ethernet frame itself)
JUNIPER = [
    (178, None),
    (167, None),
    (179, b"\xff\x03\x00\x21"),
    (180, b"\x18\x41\x03\xcc"),  # DLCI 100: 0x18 0x41 (EA in the second octet)
    (181, b"\x0f\x00\x08\x00"),
    (136, None),  # cookie, written below
    (133, struct.pack("<HH", 2, 0)),
]


def _pcap(linktype: int, records: list[tuple[float, bytes]]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)]
    for ts, frame in records:
        sec = int(ts)
        out.append(struct.pack("<IIII", sec, round((ts - sec) * 1e6), len(frame), len(frame)) + frame)
    return b"".join(out)


def _block(kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack("<II", kind, n) + body + struct.pack("<I", n)


def _pcapng(linktypes: list[int], records: list[tuple[int, float, bytes]]) -> bytes:
    out = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    out += [_block(1, struct.pack("<HHI", lt, 0, 262144)) for lt in linktypes]
    for iface, ts, frame in records:
        us = round(ts * 1e6)
        out.append(_block(6, struct.pack("<IIIII", iface, us >> 32, us & 0xFFFFFFFF, len(frame), len(frame)) + frame))
    return b"".join(out)


def _ipip(src: str, dst: str, inner: bytes, ident: int) -> bytes:
    """An IPv4 header (IPPROTO_IPIP, RFC 2003) around ``inner``, its checksum computed."""
    import socket

    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(inner), ident, 0, 64, 4, 0,
                                socket.inet_aton(src), socket.inet_aton(dst)))
    total = sum(struct.unpack("!10H", hdr))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", hdr, 10, ~total & 0xFFFF)
    return bytes(hdr) + inner


def _enc(capture: Path, keys: Path, name: str, order: str) -> None:
    records = []
    for i, p in enumerate(iter_decrypted(capture, [keys])):
        if p.status != "ok" or p.next_header != 4 or p.inner is None:
            continue
        head = struct.pack(order + "I", AF_INET) + struct.pack("!I", p.spi) + struct.pack(order + "I", ENC_AUTH_CONF)
        records.append((p.ts, head + _ipip(p.src, p.dst, p.inner, 0x4000 + i)))
    (HERE / name).write_bytes(_pcap(109, records))


def enc() -> None:
    _enc(SRC / "capture.pcap", SRC / "charon-left.log", "enc.pcap", "<")
    rekey = ROOT / "samples" / "cbc-sha2-pfs"
    _enc(rekey / "capture.pcapng", rekey / "keys", "enc-rekey.pcap", ">")


def juniper() -> None:
    with open_capture(SRC / "capture.pcap") as reader:
        frames = [(raw.ts, raw.data) for raw in reader]
    records = []
    for n, (ts, eth) in enumerate(frames):
        iface = n % len(JUNIPER)
        lt, l2 = JUNIPER[iface]
        inbound = eth[6:12] == bytes.fromhex("0200c6120002")  # sent by the right gateway
        flags = 0x01 if inbound else 0x00
        ext = b""
        if n % 3 == 2:  # an extension TLV: type 1 (interface index), 4 octets
            flags |= 0x80
            tlv = bytes([1, 4]) + struct.pack("<I", 7 + iface)
            ext = struct.pack("!H", len(tlv)) + tlv
        ip = eth[14:]
        if n % 5 == 4:
            frame = b"MGC" + bytes([flags | 0x02]) + ext + struct.pack("<I", 2) + ip
        elif l2 is None and lt == 136:
            frame = b"MGC" + bytes([flags]) + ext + bytes(16 if inbound else 12) + ip
        elif l2 is None:
            frame = b"MGC" + bytes([flags]) + ext + eth
        else:
            frame = b"MGC" + bytes([flags]) + ext + l2 + ip
        records.append((iface, ts, frame))
    (HERE / "juniper.pcapng").write_bytes(_pcapng([lt for lt, _ in JUNIPER], records))


if __name__ == "__main__":
    enc()
    juniper()
