"""Make the small bad inputs in this directory (see README.md). Deterministic: run it again and
git shows no change. Run from the repository root: ``python3 tests/data/bad/make_bad.py``."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
HEALTHY = ROOT / "samples" / "healthy-gcm"
PCAP_GLOBAL = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # Ethernet, µs


def rec(ts: int, data: bytes, caplen: int | None = None, origlen: int | None = None) -> bytes:
    n = len(data)
    return struct.pack("<IIII", ts, 0, n if caplen is None else caplen, n if origlen is None else origlen) + data


def w(name: str, data: bytes) -> None:
    (HERE / name).write_bytes(data)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def capture_files() -> None:
    healthy = (HEALTHY / "capture.pcapng").read_bytes()
    w("empty.pcap", b"")
    w("three-bytes.pcap", b"\xd4\xc3\xb2")
    w("text.pcap", b"this is not a capture, it is a note someone saved with the wrong name\n")
    # A real PNG header + IHDR chunk (1x1 pixel), as an engineer dragging the wrong file would give.
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    w("picture.png", png)
    w("header-only.pcap", PCAP_GLOBAL)
    # The healthy sample's first frame (IKE_SA_INIT request), as a classic pcap record.
    shb_len = struct.unpack_from("<I", healthy, 4)[0]
    idb_len = struct.unpack_from("<I", healthy, shb_len + 4)[0]
    epb0 = shb_len + idb_len
    frame = healthy[epb0 + 28: epb0 + 28 + struct.unpack_from("<I", healthy, epb0 + 20)[0]]
    # One sound record, then a record header cut after 7 of its 16 bytes / a body cut after 10 bytes.
    w("cut-in-record-header.pcap", PCAP_GLOBAL + rec(1, frame) + rec(2, frame)[:7])
    w("cut-in-record-body.pcap", PCAP_GLOBAL + rec(1, frame) + rec(2, frame)[:16 + 10])
    # caplen claims 2 GB: a reader that trusts it would allocate or seek forever.
    w("huge-caplen.pcap", PCAP_GLOBAL + rec(1, frame) + struct.pack("<IIII", 2, 0, 0x7FFFFFF0, 0x7FFFFFF0) + frame)
    # pcapng: the healthy sample's SHB, IDB, then damage.
    head = healthy[: shb_len + idb_len]
    first_epb_len = struct.unpack_from("<I", healthy, len(head) + 4)[0]
    epb = healthy[len(head): len(head) + first_epb_len]
    bad_len = bytearray(epb)
    struct.pack_into("<I", bad_len, 4, 13)  # not a multiple of 4, smaller than a block header
    w("pcapng-bad-block-length.pcapng", head + epb + bytes(bad_len) + epb)
    past = bytearray(epb)
    struct.pack_into("<I", past, 4, 0x00100000)  # 1 MiB: past the end of the file
    w("pcapng-block-past-eof.pcapng", head + epb + bytes(past))
    # Frame 5's timestamp (high 32 bits of the µs count) overwritten: year ~290000 — a bit flip or
    # a writer bug; every front end must still print times (or '?') rather than crash.
    epbs = []
    off = len(head)
    while off < len(healthy):
        btype, blen = struct.unpack_from("<II", healthy, off)
        if btype == 6:
            epbs.append(off)
        off += blen
    bad_ts = bytearray(healthy)
    struct.pack_into("<I", bad_ts, epbs[4] + 12, 0x7FFFFFFF)
    w("bad-timestamp.pcapng", bytes(bad_ts))
    # An IDB cut to its 12-byte block frame (no link type): the file is damaged from there.
    w("pcapng-short-idb.pcapng", healthy[:shb_len] + struct.pack("<III", 1, 12, 12) + healthy[shb_len + idb_len:])
    # Frame 2 names interface 7, which no IDB declared: that frame is malformed, the rest are fine.
    undeclared = bytearray(healthy)
    struct.pack_into("<I", undeclared, epbs[1] + 8, 7)
    w("pcapng-undeclared-interface.pcapng", bytes(undeclared))
    unknown = struct.pack("<II", 0x0BADB10C, 16) + b"abcd" + struct.pack("<I", 16)
    w("pcapng-unknown-block.pcapng", head + epb + unknown + epb)
    w("truncated.pcapng.gz", gz(healthy)[: len(gz(healthy)) // 2])
    w("garbage.pcap.gz", gz(b"\x13\x37 not a capture inside the gzip " * 20))
    w("gzip-header-only.pcap.gz", gz(healthy)[:12])


def key_files() -> None:
    esp_sa = (HEALTHY / "keys" / "esp_sa").read_text()
    lines = esp_sa.splitlines(keepends=True)
    wrong = []
    for line in lines:
        if line.startswith('"IPv4"'):
            cols = line.split(",")
            key = cols[5].strip('"')
            # Flip every bit of the first 4 key bytes: the salt (last 4 bytes) stays, the AES key is wrong.
            flipped = "0x" + "%08x" % (int(key[2:10], 16) ^ 0xFFFFFFFF) + key[10:]
            cols[5] = f'"{flipped}"'
            line = ",".join(cols)
        wrong.append(line)
    w("wrong-key.esp_sa", "".join(wrong).encode())
    row = lines[1].split(",")
    row[4] = '"ROT13-CBC [RFC0000]"'
    w("unknown-alg.esp_sa", (lines[0] + ",".join(row)).encode())
    row[4] = '"CAST5-CBC [RFC2144]"'
    row2 = lines[2].split(",")
    row2[4] = '"BLOWFISH-CBC [RFC2451]"'
    w("unimplemented-alg.esp_sa", (lines[0] + ",".join(row) + ",".join(row2)).encode())
    # The healthy ikev2_decryption_table with the first 4 bytes of SK_ei and SK_er inverted.
    ike = []
    for line in (HEALTHY / "keys" / "ikev2_decryption_table").read_text().splitlines(keepends=True):
        if not line.startswith("#"):
            cols = line.split(",")
            for i in (2, 3):
                cols[i] = "%08x" % (int(cols[i][:8], 16) ^ 0xFFFFFFFF) + cols[i][8:]
            line = ",".join(cols)
        ike.append(line)
    w("wrong-ike-key.ikev2_decryption_table", "".join(ike).encode())
    w("garbage.keys", bytes(range(256)) * 4)
    w("empty.keys", b"")
    w("comment-only.esp_sa", b"# This file is automatically generated, DO NOT MODIFY.\n")


def main() -> None:
    capture_files()
    key_files()
    from make_malformed import main as malformed  # scapy-built captures with bad IKE/ESP/IP

    malformed(HERE)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()
