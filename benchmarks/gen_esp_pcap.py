"""Write a large synthetic ESP capture for benchmarks (plain struct; ~1M packets in a few seconds).

Traffic: ``--sas`` ESP SAs (pairs of directions between a few hosts), IMIX frame sizes
(7 x 64-byte-class, 4 x 594, 1 x 1518, per the classic "simple IMIX"), every 5th SA
UDP-encapsulated on port 4500 (RFC 3948), plus one NAT-keepalive per 10 000 packets and an
IKEv2 INFORMATIONAL every 100 000 packets, so the fast path has to fall back now and then.
Sequence numbers count up per SA from 1, as a sender does (RFC 4303 §3.3.3).

Usage: python3 benchmarks/gen_esp_pcap.py [-n 1000000] [-o benchmarks/out/esp-1m.pcap]
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys

PCAP_HDR = struct.Struct("<IHHiIII")
REC = struct.Struct("<IIII")
IMIX = (60, 60, 60, 60, 60, 60, 60, 590, 590, 590, 590, 1514)  # frame sizes without FCS


def _csum(hdr: bytes) -> int:
    s = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ipv4(src: bytes, dst: bytes, proto: int, payload_len: int, ident: int) -> bytes:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident & 0xFFFF, 0x4000, 64, proto, 0, src, dst)
    return h[:10] + struct.pack("!H", _csum(h)) + h[12:]


def build(n: int, path: str, sas: int = 8, seed: int = 1) -> dict:
    """Write ``n`` frames to ``path``; returns the ground truth per (src, dst, spi)."""
    rnd = random.Random(seed)
    eth = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
    flows = []
    for i in range(sas):
        a = bytes((198, 18, 0, 1 + i % 4))
        b = bytes((198, 19, 0, 1 + i // 2))
        src, dst = (a, b) if i % 2 == 0 else (b, a)
        spi = 0xC0000000 | rnd.getrandbits(24) << 4 | i
        flows.append({"src": src, "dst": dst, "spi": spi, "udp": i % 5 == 4, "seq": 0, "packets": 0,
                      "bytes": 0, "first": None, "last": None})
    filler = bytes(rnd.getrandbits(8) for _ in range(2048))
    templates = {}  # (flow, size) -> (prefix up to SPI, tail after seq)
    for fi, f in enumerate(flows):
        for size in set(IMIX):
            if f["udp"]:
                esp_len = size - 14 - 20 - 8
                udp = struct.pack("!HHHH", 4500, 4500, 8 + esp_len, 0)
                prefix = eth + _ipv4(f["src"], f["dst"], 17, 8 + esp_len, fi) + udp
            else:
                esp_len = size - 14 - 20
                prefix = eth + _ipv4(f["src"], f["dst"], 50, esp_len, fi)
            templates[fi, size] = (prefix + struct.pack("!I", f["spi"]), filler[:esp_len - 8], esp_len)
    ike_src, ike_dst = b"\xc6\x12\x00\x01", b"\xc6\x13\x00\x01"
    ike = bytes(range(8)) + bytes(range(8, 16)) + struct.pack("!BBBBII", 46, 0x20, 37, 0x08, 7, 28 + 36)
    ike += struct.pack("!BBH", 0, 0, 36) + filler[:32]
    ike_frame = eth + _ipv4(ike_src, ike_dst, 17, 8 + 4 + len(ike), 9) + struct.pack(
        "!HHHH", 4500, 4500, 8 + 4 + len(ike), 0) + b"\0\0\0\0" + ike
    ka_frame = eth + _ipv4(ike_src, ike_dst, 17, 9, 10) + struct.pack("!HHHH", 4500, 4500, 9, 0) + b"\xff"
    sec, usec = 1_700_000_000, 0
    extra = {"ike": 0, "keepalive": 0}
    out = bytearray()
    with open(path, "wb") as fh:
        fh.write(PCAP_HDR.pack(0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for i in range(n):
            usec += 7
            if usec >= 1_000_000:
                sec += 1
                usec -= 1_000_000
            if i % 100_000 == 99_999:
                frame = ike_frame
                extra["ike"] += 1
            elif i % 10_000 == 9_999:
                frame = ka_frame
                extra["keepalive"] += 1
            else:
                fi = rnd.randrange(sas)
                f = flows[fi]
                size = IMIX[rnd.randrange(12)]
                prefix, tail, esp_len = templates[fi, size]
                f["seq"] += 1
                frame = prefix + struct.pack("!I", f["seq"]) + tail
                f["packets"] += 1
                f["bytes"] += esp_len
                ts = sec + usec / 1e6
                if f["first"] is None:
                    f["first"] = ts
                f["last"] = ts
            out += REC.pack(sec, usec, len(frame), len(frame))
            out += frame
            if len(out) > 1 << 22:
                fh.write(out)
                out.clear()
        fh.write(out)
    truth = {f"{'.'.join(map(str, f['src']))}>{'.'.join(map(str, f['dst']))}/{f['spi']:#010x}":
             {k: f[k] for k in ("packets", "bytes", "first", "last", "udp")} | {"seq_max": f["seq"]}
             for f in flows}
    return {"frames": n, "flows": truth, **extra}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="frames (default 1M)")
    ap.add_argument("-o", default=os.path.join(os.path.dirname(__file__), "out", "esp-1m.pcap"))
    ap.add_argument("--sas", type=int, default=8)
    args = ap.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.o)), exist_ok=True)
    truth = build(args.n, args.o, args.sas)
    print(f"wrote {args.o}: {truth['frames']} frames, {os.path.getsize(args.o)} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
