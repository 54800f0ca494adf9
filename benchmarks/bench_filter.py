"""Display filter speed over a million rows: `python3 benchmarks/bench_filter.py [N]`.

Builds a RowStore of N decrypted ESP rows (8 SAs, sequence numbers counting up) and an InnerStore
with each row's inner ICMP/UDP/TCP packet, checks the counts each filter must select (ground
truth from the generator), and prints the CPU time of `filtering.select` per filter.
"""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipsecscope.decode.inner import InnerStore  # noqa: E402
from ipsecscope.filtering import Source, select  # noqa: E402
from ipsecscope.model.filter import compile_filter  # noqa: E402
from ipsecscope.rowstore import RowStore  # noqa: E402


def icmp(src: bytes, dst: bytes, typ: int, seq: int) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 1, 0, src, dst) + struct.pack("!BBHHH", typ, 0, 0, 1, seq)


def udp(src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, src, dst) + struct.pack("!HHHH", sport, dport, 8, 0)


def build(n: int) -> Source:
    rows, inner = RowStore(), InnerStore()
    rows.inner = inner
    a, b = rows.addr("198.18.0.1"), rows.addr("198.18.0.2")
    pkts = [icmp(bytes([10, 1, 0, 1]), bytes([10, 2, 0, 1]), 8, 1), icmp(bytes([10, 2, 0, 1]), bytes([10, 1, 0, 1]), 0, 1),
            udp(bytes([10, 1, 0, 7]), bytes([10, 2, 1, 9]), 5000, 53), udp(bytes([10, 1, 0, 7]), bytes([10, 2, 1, 9]), 4000, 443)]
    for i in range(n):
        sa = i % 8
        rows.add_esp(i + 1, 1e9 + i * 1e-4, a if sa < 4 else b, b if sa < 4 else a, 4500, 4500, 120,
                     0xC0000000 + sa, i // 8 + 1, 1, sa + 1, 4)
        inner.add(i + 1, pkts[i % 4], 4)
    return Source(rows, inner, {}, 1e9)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    t = time.process_time()
    src = build(n)
    print(f"built {n:,} rows in {time.process_time() - t:.1f} s CPU")
    cases = {
        "esp": n,
        "icmp.type == 8": n // 4,
        "ip.dst == 10.2.1.0/24": n // 2,
        "esp.spi == 0xc0000003 && icmp": n // 8,  # SA 3 carries rows 3, 11, ...: i % 4 == 3 (UDP) -> none
        "not ip.src == 10.1.0.0/16 and icmp": n // 4,
        "udp.dstport in {53, 443} && esp.sequence > 10": n // 2 - 40,
        "frame.number >= 5 && frame.number <= 15 && esp": 11,
    }
    cases["esp.spi == 0xc0000003 && icmp"] = 0
    for text, want in cases.items():
        flt = compile_filter(text)
        t = time.process_time()
        got = select(flt, src)
        dt = time.process_time() - t
        assert len(got) == want, (text, len(got), want)
        print(f"{dt * 1000:8.1f} ms CPU  {len(got):>9,} rows  {text}")


if __name__ == "__main__":
    main()
