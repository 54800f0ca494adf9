"""``decrypt`` on a capture that mixes everything the fast loop must hand on: AES-GCM runs over
several SAs (one in UDP 4500), a CBC SA in between, ICV failures, payloads that hold no packet,
nested ESP, transport mode, TFC padding, IPv6 inside, IKE on 4500, keepalives, unknown SPIs and
fragments; as pcap and as pcapng (ns and µs interfaces), in read windows of any size, sequential
and split over processes: the same bytes out and the same counters every time, and those of the
general per-packet path (api.iter_decrypted) and of the generator.
"""

from __future__ import annotations

import json
import random
import struct
import sys
from pathlib import Path

import pytest

from ipsecscope.api import iter_decrypted, load_keystore
from ipsecscope.capture import open_capture
from ipsecscope.export import engine, hotloop
from tests.conftest import SAMPLES

SYN = SAMPLES / "synthetic"
sys.path.insert(0, str(SYN))
from espgen import PcapWriter, Sa, esp_encrypt, ether, ipv4, ipv6, udp  # noqa: E402


def _capture(path: Path) -> tuple[Path, int, int]:
    """1200 ESP packets over 3 AES-GCM SAs (one UDP-encapsulated) and a CBC one, with damage and
    oddities sprinkled in; returns (key file, packets left intact, packets damaged)."""
    rng = random.Random(15)
    sas = [Sa(0x6C000001, "198.18.1.1", "198.19.1.1", "aes-gcm16", rng.randbytes(36)),
           Sa(0x6C000002, "198.19.1.1", "198.18.1.1", "aes-gcm16", rng.randbytes(20)),
           Sa(0x6C000003, "198.18.2.1", "198.19.2.1", "aes-gcm16", rng.randbytes(36)),
           Sa(0x6C000004, "198.18.3.1", "198.19.3.1", "aes-cbc", rng.randbytes(32), "sha256", rng.randbytes(32))]
    keys = path.with_suffix(".keys.json")
    keys.write_text(json.dumps({"schema": "ipsecscope.keys/1", "esp": [s.json_entry() for s in sas]}))
    seqs = [0] * 4
    good = 0
    with PcapWriter(path) as w:
        for i in range(1200):
            k = 3 if i % 97 == 5 else (i // 3) % 3  # runs of 3 per SA, a CBC packet now and then
            sa = sas[k]
            seqs[k] += 1
            size = (40, 300, 1400)[i % 3]
            inner = ipv4(f"10.{k}.0.1", f"10.{k}.1.1", 17, udp(f"10.{k}.0.1", f"10.{k}.1.1", 5000, 6000, bytes(size)),
                         ident=i)
            nh, tfc = 4, 0
            if i % 211 == 17:  # transport mode: next header 17, the general path rebuilds the IP header
                inner, nh = udp(sa.src, sa.dst, 5000, 6000, bytes(20)), 17
            elif i % 173 == 9:  # TFC padding after the inner packet (RFC 4303 §2.7)
                tfc = 24
            elif i % 199 == 33:  # nested ESP: an IPv4 packet of protocol 50 inside
                inner = ipv4("10.9.0.1", "10.9.0.2", 50, struct.pack("!II", 0x77, 1) + bytes(40))
            elif i % 251 == 41:  # an IPv6 packet tunnelled
                inner, nh = ipv6("fd00::1", "fd00::2", 17, udp("fd00::1", "fd00::2", 1, 2, bytes(30))), 41
            esp = bytearray(esp_encrypt(sa, seqs[k], inner, nh, rng.randbytes(16 if k == 3 else 8), tfc=tfc))
            ok = True
            if i % 89 == 7:
                esp[-1] ^= 1  # ICV
                ok = False
            elif i % 149 == 11:
                esp[12] ^= 1  # IV
                ok = False
            if k == 2:
                frame = ether(ipv4(sa.src, sa.dst, 17, udp(sa.src, sa.dst, 4500, 4500, bytes(esp), checksum=False)))
            else:
                frame = ether(ipv4(sa.src, sa.dst, 50, bytes(esp), ident=i))
            w.write(1_764_000_000 * 10**9 + i * 1_234_567, frame)
            good += ok
            if i % 101 == 50:  # an unknown SPI, IKE on 4500, a NAT keepalive, a fragment
                w.write(1_764_000_000 * 10**9 + i * 1_234_567 + 1, ether(ipv4("198.18.5.1", "198.19.5.1", 50,
                                                                              struct.pack("!II", 0xDEAD, 1) + bytes(60))))
                w.write(1_764_000_000 * 10**9 + i * 1_234_567 + 2, ether(ipv4(sas[2].src, sas[2].dst, 17, udp(
                    sas[2].src, sas[2].dst, 4500, 4500, bytes(4) + bytes(60), checksum=False))))
                w.write(1_764_000_000 * 10**9 + i * 1_234_567 + 3, ether(ipv4(sas[2].src, sas[2].dst, 17, udp(
                    sas[2].src, sas[2].dst, 4500, 4500, b"\xff", checksum=False))))
                frag = bytearray(ether(ipv4(sa.src, sa.dst, 50, bytes(esp))))
                frag[20] |= 0x20  # more fragments
                w.write(1_764_000_000 * 10**9 + i * 1_234_567 + 4, bytes(frag))
    return keys, good, 1200 - good


def as_pcapng(src: Path, dst: Path, tsresol: int | None) -> None:
    """The same frames as pcapng on one Ethernet interface with if_tsresol 10^-tsresol (None:
    no option, the default µs)."""
    div = 10 ** (9 - (tsresol if tsresol is not None else 6))
    opts = b"" if tsresol is None else struct.pack("<HHB3xHH", 9, 1, tsresol, 0, 0)
    with open(dst, "wb") as f:
        f.write(struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28))
        f.write(struct.pack("<IIHHI", 1, 20 + len(opts), 1, 0, 0) + opts + struct.pack("<I", 20 + len(opts)))
        with open_capture(src) as r:
            for fr in r:
                t = fr.ts_ns // div
                data = fr.data
                pad = (-len(data)) & 3
                blen = 32 + len(data) + pad
                f.write(struct.pack("<IIIIIII", 6, blen, 0, t >> 32, t & 0xFFFFFFFF, len(data), fr.orig_len)
                        + data + bytes(pad) + struct.pack("<I", blen))


def _run(cap: Path, keys: Path, out: Path, *, jobs: int = 1) -> tuple:
    s = engine.run(cap, load_keystore(keys), out=str(out), opts=engine.Options(), jobs=jobs, parallel_min_bytes=0)
    return (out.read_bytes(), s.frames, s.esp, s.decrypted, s.icv_failed, s.malformed, s.no_key, s.other,
            s.nested_decrypted, [(k, st.decrypted, st.icv_failed) for k, st in s.per_sa])


@pytest.mark.parametrize("fmt", ["pcap", "pcapng-us", "pcapng-ns"])
def test_mixed_capture_any_window(fmt: str, tmp_path: Path, monkeypatch) -> None:
    cap = tmp_path / "in.pcap"
    keys, good, damaged = _capture(cap)
    if fmt != "pcap":
        src, cap = cap, tmp_path / "in.pcapng"
        as_pcapng(src, cap, 9 if fmt == "pcapng-ns" else None)
    ref = _run(cap, keys, tmp_path / "ref.pcapng")
    for window in (5000, 700):
        monkeypatch.setattr(hotloop, "WINDOW", window)
        got = _run(cap, keys, tmp_path / f"w{window}.pcapng")
        assert got[1:] == ref[1:], window
        assert got[0] == ref[0], window
    # the answer is the general path's and the generator's: every intact packet decrypted, every
    # damaged one an ICV failure, the tunnelled packets written as they were encrypted
    general = list(iter_decrypted(tmp_path / "in.pcap", [keys]))
    assert (ref[3], ref[4]) == (sum(p.status == "ok" for p in general), sum(p.status == "icv_failed" for p in general))
    assert (ref[3], ref[4]) == (good, damaged)
    # every ESP frame counted once: decrypted, failed, malformed or without a key (the summary
    # line's "N ESP" once left out fast-loop packets the general path had folded in)
    assert ref[2] == ref[3] + ref[4] + ref[5] + ref[6] == 1200 + 12
    with open_capture(tmp_path / "ref.pcapng") as r:
        written = [f.data for f in r]
    tunnelled = [p.inner for p in general if p.status == "ok" and p.next_header in (4, 41)]
    assert [d for d in written if d in set(tunnelled)] == tunnelled


def test_mixed_capture_split_over_processes(tmp_path: Path, monkeypatch) -> None:
    """-j 3 over the mixed capture: the bytes and counters of one process."""
    cap = tmp_path / "in.pcap"
    keys, _, _ = _capture(cap)
    monkeypatch.setattr(engine, "CHUNK_MIN_BYTES", 1)
    ref = _run(cap, keys, tmp_path / "ref.pcapng")
    par = _run(cap, keys, tmp_path / "par.pcapng", jobs=3)
    assert par == ref
