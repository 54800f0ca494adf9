"""Writes ikev2-tcp.pcap from the project's own sample (run from the repository root:
``.venv/bin/python tests/data/rfc8229/make.py``): samples/healthy-gcm with everything it sent on
UDP 4500 (IKE after NAT-T's float, ESP) moved onto one TCP connection as RFC 8229 (§3: the
"IKETCP" stream prefix, then records of a 2-octet length; IKE behind the 4-octet non-ESP
marker, ESP as is), the initiator's port 40000 to the responder's 4500. IKE_SA_INIT stays on
UDP 500. Each record is one TCP segment in the frame the datagram was."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "samples" / "synthetic"))

from espgen import PcapWriter  # noqa: E402

from ipsecscope.capture import open_capture  # noqa: E402

INITIATOR_PORT = 40000


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int) -> bytes:
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0, src, dst))
    h[10:12] = struct.pack("!H", csum(bytes(h)))
    return bytes(h) + payload


def tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes) -> bytes:
    h = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0))
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(h) + len(data))
    h[16:18] = struct.pack("!H", csum(pseudo + bytes(h) + data))
    return bytes(h) + data


def main() -> None:
    with open_capture(ROOT / "samples" / "healthy-gcm" / "capture.pcapng") as r:
        frames = [(f.ts_ns, bytes(f.data)) for f in r]
    init = frames[0][1][26:30]
    seq: dict[bytes, int] = {}
    out = []
    recs = []  # (frame position, ts, MACs, src, dst, sport, dport, seq, ack, record, IP id) of each record
    for i, (ts, eth) in enumerate(frames):
        ip = eth[14:]
        src, dst = ip[12:16], ip[16:20]
        udp = ip[20:]
        if (udp[0] << 8 | udp[1]) != 4500:
            out.append((ts, eth))
            continue
        if not seq:  # the connection opens just before the first record (RFC 8229 §3: initiator connects)
            resp = dst if src == init else src
            seq = {init: 1000, resp: 5000}
            for k, (a, b, fl) in enumerate(((init, resp, 0x02), (resp, init, 0x12), (init, resp, 0x10))):
                sp, dp = (INITIATOR_PORT, 4500) if a == init else (4500, INITIATOR_PORT)
                seg = tcp(a, b, sp, dp, seq[a], seq[b] if fl != 0x02 else 0, fl, b"")
                out.append((ts - 3000 + k * 1000, eth[:12] + b"\x08\x00" + ipv4(a, b, 6, seg, 100 + k)))
                if fl & 0x02:
                    seq[a] += 1
        body = udp[8:]
        rec = struct.pack("!H", len(body) + 2) + body
        if src == init and seq[init] == 1001:
            rec = b"IKETCP" + rec
        sp, dp = (INITIATOR_PORT, 4500) if src == init else (4500, INITIATOR_PORT)
        seg = tcp(src, dst, sp, dp, seq[src], seq[dst], 0x18, rec)
        out.append((ts, eth[:12] + b"\x08\x00" + ipv4(src, dst, 6, seg, 200 + i)))
        recs.append((len(out) - 1, ts, eth[:12], src, dst, sp, dp, seq[src], seq[dst], rec, 200 + i))
        seq[src] += len(rec)
    write(HERE / "ikev2-tcp.pcap", out)
    # Impaired copies (decode/tcpencap.py's two classes), frame for frame the same but:
    # -lost: the IKE_AUTH request's record (the first after the prefix) sent as two segments,
    # the second never captured (the capture point lost it; the peers' TCP retransmitted it,
    # which is not in the file either). The records after it wait for the gap; it is given up.
    k, ts, mac, src, dst, sp, dp, q, a, rec, ident = recs[0]
    half = len(rec) // 2
    lost = list(out)
    lost[k] = (ts, mac + b"\x08\x00" + ipv4(src, dst, 6, tcp(src, dst, sp, dp, q, a, 0x10, rec[:half]), ident))
    write(HERE / "ikev2-tcp-lost.pcap", lost)
    # -overlap: after the IKE_AUTH response's segment, a copy of its second half with 16 other
    # bytes in it (a middlebox rewriting a retransmission): the receiver keeps the first copy.
    k, ts, mac, src, dst, sp, dp, q, a, rec, ident = recs[1]
    half = len(rec) // 2
    bad = bytearray(rec[half:])
    bad[8:24] = bytes(x ^ 0xA5 for x in bad[8:24])
    over = list(out)
    over.insert(k + 1, (ts + 1000, mac + b"\x08\x00" + ipv4(src, dst, 6, tcp(src, dst, sp, dp, q + half, a, 0x18,
                                                                               bytes(bad)), ident + 1000)))
    write(HERE / "ikev2-tcp-overlap.pcap", over)


def write(path: Path, frames: list) -> None:
    with PcapWriter(path) as w:
        for ts, f in frames:
            w.write(ts, f)


if __name__ == "__main__":
    main()
