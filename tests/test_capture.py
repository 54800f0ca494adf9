"""capture stage: every Wireshark corpus file and hand-built pcap/pcapng variants, against tshark."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest
from conftest import CORPUS, corpus_captures, needs_tshark
from scapy.layers.inet import UDP
from scapy.packet import Raw
from test_capture_builders import (
    dsb,
    epb,
    eth,
    gz,
    idb,
    ike_v2,
    pb,
    shb,
    spb,
    tshark_fields,
    v4,
    v6,
    write_pcap,
)

from ipsecscope.capture import open_capture, read_frame_at
from ipsecscope.errors import CaptureError, CaptureFormatError

CAPTURES = corpus_captures()


def frames_of(path: Path):
    with open_capture(path) as r:
        return list(r), r


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_corpus_frame_counts(cap: Path) -> None:
    expected = json.loads((CORPUS / (cap.name + ".expected.json")).read_text())
    frames, r = frames_of(cap)
    assert len(frames) == expected["frames"]
    assert [f.index for f in frames] == list(range(1, len(frames) + 1))
    assert r.truncated is None
    assert r.bytes_read == r.total_bytes == cap.stat().st_size
    assert r.format == ("pcapng" if ".pcapng" in cap.name else "pcap")
    assert r.compressed == cap.name.endswith(".gz")


@needs_tshark
@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_corpus_timestamps_and_lengths_match_tshark(cap: Path) -> None:
    frames, _ = frames_of(cap)
    rows = tshark_fields(cap, "frame.time_epoch", "frame.cap_len", "frame.len")
    assert len(rows) == len(frames)
    for f, (ts, caplen, origlen) in zip(frames, rows, strict=True):
        sec, frac = ts.split(".")
        assert f.ts_ns == int(sec) * 10**9 + int(frac.ljust(9, "0")[:9])
        assert (len(f.data), f.orig_len) == (int(caplen), int(origlen))


@pytest.mark.parametrize("cap", [c for c in CAPTURES if not c.name.endswith(".gz")], ids=lambda p: p.name)
def test_read_frame_at_rereads_every_frame(cap: Path) -> None:
    frames, _ = frames_of(cap)
    with open_capture(cap) as r:
        for f in r:
            assert r.read_frame_at(f.offset, f.index) == f
    for f in reversed(frames):  # module-level form, out of order
        assert read_frame_at(cap, f.offset, f.index, f.linktype) == f


def _ike_frames(n: int = 5) -> list[bytes]:
    return [eth(v4() / UDP(sport=500, dport=500) / Raw(ike_v2(msg_id=i))) for i in range(n)]


@needs_tshark
@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("ns", [False, True], ids=["usec", "nsec"])
def test_pcap_variants_match_tshark(tmp_path: Path, order: str, ns: bool) -> None:
    p = write_pcap(tmp_path / "x.pcap", _ike_frames(), order=order, ns=ns)
    frames, r = frames_of(p)
    rows = tshark_fields(p, "frame.time_epoch", "frame.len")
    assert len(frames) == len(rows) == 5
    for f, (ts, ln) in zip(frames, rows, strict=True):
        sec, frac = ts.split(".")
        assert f.ts_ns == int(sec) * 10**9 + int(frac.ljust(9, "0")[:9])
        assert f.orig_len == int(ln)
        assert f.linktype == 1
    assert (r.impl.byte_order, r.impl.nanosecond) == (order, ns)


@needs_tshark
@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
def test_pcapng_multi_interface_mixed_linktypes_and_resolutions(tmp_path: Path, order: str) -> None:
    f_eth = eth(v4() / UDP(sport=500, dport=500) / Raw(ike_v2()))
    f_raw6 = bytes(v6() / UDP(sport=500, dport=500) / Raw(ike_v2()))
    f_raw4 = bytes(v4() / UDP(sport=500, dport=500) / Raw(ike_v2()))
    data = (
        shb(order)
        + idb(order, 1)  # Ethernet, default microseconds
        + idb(order, 229, tsresol=9)  # raw IPv6, nanoseconds
        + idb(order, 101, tsresol=0x80 | 20, tsoffset=100)  # raw IP, 2^-20 s units, +100 s offset
        + dsb(order, 0x5353484B, b"secret-1")  # SSH key log type, any payload
        + epb(order, 0, 1_700_000_000_000_001, f_eth)
        + epb(order, 1, 1_700_000_000_123_456_789, f_raw6)
        + epb(order, 2, 1_700_000_000 << 20 | 1 << 19, f_raw4)
        + pb(order, 0, 1_700_000_001_000_000, f_eth)  # obsolete Packet Block
        + spb(order, f_eth)  # Simple Packet Block: no timestamp
        + dsb(order, 0x544C534B, b"CLIENT_RANDOM x y")
    )
    p = tmp_path / "multi.pcapng"
    p.write_bytes(data)
    frames, r = frames_of(p)
    assert [f.linktype for f in frames] == [1, 229, 101, 1, 1]
    assert [f.iface for f in frames] == [0, 1, 2, 0, 0]
    assert r.secrets == [(0x5353484B, b"secret-1"), (0x544C534B, b"CLIENT_RANDOM x y")]
    assert r.linktypes == {0: 1, 1: 229, 2: 101}
    rows = tshark_fields(p, "frame.time_epoch", "frame.len")
    assert len(rows) == len(frames)
    for f, (ts, ln) in zip(frames[:4], rows[:4], strict=True):
        sec, frac = ts.split(".")
        assert f.ts_ns == int(sec) * 10**9 + int(frac.ljust(9, "0")[:9]), ts
        assert f.orig_len == int(ln)
    assert frames[2].ts_ns == (1_700_000_100 * 10**9 + 500_000_000)
    for f in frames:  # lazy re-read by offset works for every block type
        assert r.read_frame_at(f.offset, f.index) == f
        assert read_frame_at(p, f.offset, f.index) == f


def test_pcapng_two_sections_different_byte_order(tmp_path: Path) -> None:
    f = eth(v4() / UDP(sport=500, dport=500) / Raw(ike_v2()))
    data = shb("<") + idb("<", 1) + epb("<", 0, 1, f) + shb(">") + idb(">", 101) + epb(">", 0, 2, f[14:])
    p = tmp_path / "two.pcapng"
    p.write_bytes(data)
    frames, r = frames_of(p)
    assert [(x.linktype, x.ts_ns) for x in frames] == [(1, 1000), (101, 2000)]
    assert frames[1].data == f[14:]
    assert r.read_frame_at(frames[1].offset, 2) == frames[1]


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_gzip_detected_by_content_not_name(tmp_path: Path, kind: str) -> None:
    f = _ike_frames(3)
    if kind == "pcap":
        raw = write_pcap(tmp_path / "a.pcap", f).read_bytes()
    else:
        raw = shb() + idb("<", 1) + b"".join(epb("<", 0, i, x) for i, x in enumerate(f))
    odd = tmp_path / "capture.bin"  # no .gz in the name
    odd.write_bytes(gzip.compress(raw))
    frames, r = frames_of(odd)
    assert len(frames) == 3 and r.compressed and r.format == kind
    assert all(x.offset == -1 for x in frames)
    assert r.bytes_read == r.total_bytes == odd.stat().st_size
    with pytest.raises(CaptureError, match="compressed"):
        r.read_frame_at(0)


@pytest.mark.parametrize("kind", ["pcap", "pcapng", "pcap.gz"])
def test_truncated_last_record_is_reported_not_raised(tmp_path: Path, kind: str) -> None:
    f = _ike_frames(4)
    if kind.startswith("pcap") and kind != "pcapng":
        raw = write_pcap(tmp_path / "a.pcap", f).read_bytes()
    else:
        raw = shb() + idb("<", 1) + b"".join(epb("<", 0, i, x) for i, x in enumerate(f))
    cut = raw[:-10]
    p = tmp_path / "cut"
    p.write_bytes(gzip.compress(cut) if kind.endswith(".gz") else cut)
    frames, r = frames_of(p)
    assert len(frames) == 3
    assert r.truncated and "\n" not in r.truncated
    assert "frame 4" in r.truncated or "after frame 3" in r.truncated


def test_cut_gzip_stream_is_truncation(tmp_path: Path) -> None:
    raw = write_pcap(tmp_path / "a.pcap", _ike_frames(50)).read_bytes()
    z = gzip.compress(raw)
    p = tmp_path / "cut.pcap.gz"
    p.write_bytes(z[: len(z) // 2])
    frames, r = frames_of(p)
    assert 0 < len(frames) < 50
    assert r.truncated and "gzip" in r.truncated


@pytest.mark.parametrize("content,expect", [
    (b"", "empty"),
    (b"hello world, this is text\n" * 4, "text"),
    (b"PK\x03\x04rest-of-zip", "zip"),
    (b"\x00\x01\x02\x03\x04\x05\x06\x07\x08", "00 01 02 03"),
])
def test_not_a_capture_gives_helpful_error(tmp_path: Path, content: bytes, expect: str) -> None:
    p = tmp_path / "f.pcap"
    p.write_bytes(content)
    with pytest.raises(CaptureFormatError) as ei:
        open_capture(p)
    msg = str(ei.value)
    assert "is not a pcap or pcapng file" in msg and expect in msg and "\n" not in msg


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="no such file"):
        open_capture(tmp_path / "nope.pcap")
    with pytest.raises(CaptureError, match="directory"):
        open_capture(tmp_path)


def test_garbage_record_length_raises_after_sound_frames(tmp_path: Path) -> None:
    raw = bytearray(write_pcap(tmp_path / "a.pcap", _ike_frames(3)).read_bytes())
    second = 24 + 16 + len(_ike_frames(1)[0])
    struct.pack_into("<I", raw, second + 8, 0x7FFFFFFF)  # caplen of record 2
    p = tmp_path / "bad.pcap"
    p.write_bytes(bytes(raw))
    got = []
    with pytest.raises(CaptureError, match="damaged after frame 1"), open_capture(p) as r:
        for fr in r:
            got.append(fr)
    assert len(got) == 1


def test_pcapng_packet_on_undeclared_interface_is_still_delivered(tmp_path: Path) -> None:
    f = _ike_frames(1)[0]
    p = tmp_path / "u.pcapng"
    p.write_bytes(shb() + idb("<", 1) + epb("<", 7, 1, f))
    frames, _ = frames_of(p)
    assert len(frames) == 1 and frames[0].linktype == -1 and frames[0].iface == 7


def test_memory_is_flat_and_progress_advances(tmp_path: Path) -> None:
    # 20 000 frames, ~1.3 MB; the reader's buffer never holds more than ~2 chunks.
    frames = _ike_frames(1) * 20000
    p = write_pcap(tmp_path / "big.pcap", frames)
    seen = []
    with open_capture(p) as r:
        for i, _f in enumerate(r):
            if i % 5000 == 0:
                seen.append(r.bytes_read)
        assert r.frames == 20000
    assert seen == sorted(seen) and seen[-1] <= p.stat().st_size


def test_gz_helper_roundtrip(tmp_path: Path) -> None:
    p = write_pcap(tmp_path / "a.pcap", _ike_frames(2))
    frames, r = frames_of(gz(p))
    assert len(frames) == 2 and r.compressed


def test_fast_constructor_builds_the_same_frozen_objects() -> None:
    from dataclasses import FrozenInstanceError

    from ipsecscope.capture._fastnew import fast_constructor
    from ipsecscope.model.packets import EspPacket, RawFrame

    mk, mke = fast_constructor(RawFrame), fast_constructor(EspPacket)
    a, b = mk(3, 1.5, 1_500_000_000, 1, b"x", 9), RawFrame(3, 1.5, 1_500_000_000, 1, b"x", 9)
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b) and (a.iface, a.offset) == (0, -1)
    e = mke(1, 2.0, "198.18.0.1", "198.18.0.2", 5, 6, b"d", ip_version=6)
    assert e == EspPacket(1, 2.0, "198.18.0.1", "198.18.0.2", 5, 6, b"d", ip_version=6)
    with pytest.raises(FrozenInstanceError):
        a.index = 4  # type: ignore[misc]


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_offsets_stay_right_across_read_chunks(tmp_path: Path, kind: str) -> None:
    import random

    distinct = [eth(v4() / UDP(sport=500, dport=500) / Raw(ike_v2(msg_id=i, body_len=i * 11))) for i in range(61)]
    frames_in = [distinct[i % 61] for i in range(6000)]
    if kind == "pcap":
        p = write_pcap(tmp_path / "big.pcap", frames_in)
    else:
        p = tmp_path / "big.pcapng"
        p.write_bytes(shb() + idb("<", 1) + b"".join(epb("<", 0, i, f) for i, f in enumerate(frames_in)))
    assert p.stat().st_size > 2 << 20  # several 1 MiB read chunks
    frames, r = frames_of(p)
    assert [f.data for f in frames] == frames_in
    for f in random.Random(1).sample(frames, 200):
        assert read_frame_at(p, f.offset, f.index, f.linktype) == f
