"""Fuzzing the capture readers, the demux and the summary fast path: random bytes, real captures cut
at many offsets, bit-flipped frames. Nothing may raise except the typed CaptureError, everything
terminates, and the fast path must agree with the generic decoder on whatever garbage it is fed."""

from __future__ import annotations

import gzip
import random
import struct
from pathlib import Path

import pytest
from conftest import corpus_captures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_capture_builders import epb, idb, shb, write_pcap
from test_summary import _norm, mixed_frames

from ipsecscope.capture import open_capture
from ipsecscope.cli.summary import summarize
from ipsecscope.decode.demux import Decoder
from ipsecscope.errors import CaptureError
from ipsecscope.model.packets import RawFrame

CAPTURES = corpus_captures()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PCAP_HDR = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
PCAPNG_HDR = shb() + idb("<", 1)


def read_all(path: Path) -> tuple[int, str | None]:
    """Frames delivered and the truncation note; CaptureError is allowed (typed, one line)."""
    n = 0
    try:
        with open_capture(path) as r:
            dec = Decoder()
            for raw in r:
                n += 1
                dec._decode(raw)  # the inner function: a bug must surface here, not be caught
            return n, r.truncated
    except CaptureError as exc:
        assert "\n" not in str(exc)
        return n, "error"


@FUZZ
@given(st.binary(max_size=600), st.sampled_from([b"", PCAP_HDR, PCAPNG_HDR, gzip.compress(PCAP_HDR)[:12]]))
def test_random_bytes_never_raise(tmp_path_factory, body: bytes, prefix: bytes) -> None:
    p = tmp_path_factory.mktemp("fz") / "f"
    p.write_bytes(prefix + body)
    read_all(p)
    try:
        summarize(str(p), workers=1)
    except CaptureError:
        pass


def _plain_bytes(cap: Path) -> bytes:
    data = cap.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_truncated_real_captures(tmp_path: Path, cap: Path) -> None:
    data = _plain_bytes(cap)
    with open_capture(cap) as r:
        full = len(list(r))
    rnd = random.Random(cap.name)
    offsets = sorted(set(rnd.sample(range(len(data)), min(60, len(data))) + [0, 1, 23, 24, 25, len(data) - 1]))
    prev = 0
    for off in offsets:
        p = tmp_path / "cut"
        p.write_bytes(data[:off])
        n, note = read_all(p)
        assert n <= full
        assert n >= prev or note == "error" or off < 32  # cutting later never loses sound frames
        if note not in (None, "error"):
            assert "\n" not in note
        prev = n if note != "error" else prev
        if off >= 32 and note != "error":
            try:
                doc = summarize(str(p), workers=1)
            except CaptureError:
                continue
            assert doc["frames"] == n


@FUZZ
@given(st.data())
def test_bit_flipped_frames_fast_path_equals_generic(tmp_path_factory, data) -> None:
    frames = mixed_frames(48)
    rnd = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    flipped = []
    for f in frames:
        b = bytearray(f)
        for _ in range(rnd.randrange(0, 4)):
            i = rnd.randrange(len(b))
            b[i] ^= 1 << rnd.randrange(8)
        if rnd.random() < 0.1:
            b = b[: rnd.randrange(len(b) + 1)]
        flipped.append(bytes(b))
    d = tmp_path_factory.mktemp("bf")
    pcap = write_pcap(d / "f.pcap", flipped)
    ng = d / "f.pcapng"
    ng.write_bytes(shb() + idb("<", 1) + b"".join(
        epb("<", 0, (1_700_000_000 + i) * 1_000_000 + (i * 123_457 % 1_000_000), f) for i, f in enumerate(flipped)))
    dec = Decoder()
    for i, f in enumerate(flipped):
        dec._decode(RawFrame(i + 1, 0.0, 0, 1, f, len(f)))
    generic = _norm(summarize(str(pcap), fast=False))
    assert _norm(summarize(str(pcap), workers=1)) == generic
    assert _norm(summarize(str(ng), workers=1)) == generic


@FUZZ
@given(st.binary(min_size=0, max_size=200), st.sampled_from([0, 1, 101, 108, 113, 228, 229, 276]))
def test_decoder_random_frames_every_linktype(data: bytes, linktype: int) -> None:
    dec = Decoder()
    for i in range(3):  # the same bytes thrice: reassembly / TCP state paths
        dec._decode(RawFrame(i + 1, float(i), i, linktype, data, len(data)))


@FUZZ
@given(st.data())
def test_ethernet_esp_shortcut_equals_full_ip_parse(data) -> None:
    """The Decoder's Ethernet/IPv4/ESP shortcut must agree with the general IPv4 parser, which
    the same bytes reach when presented as raw IPv4 (link type 228)."""
    from scapy.packet import Raw
    from test_capture_builders import esp, eth, v4

    seq = data.draw(st.integers(0, 2**32 - 1))
    base = bytearray(eth(v4(proto=50) / Raw(esp(0xC0DE, seq, data.draw(st.integers(0, 80))))))
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(st.integers(14, len(base) - 1))
        base[i] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(14, len(base)))
    frame = bytes(base[:cut])
    orig = data.draw(st.sampled_from([len(frame), len(base)]))
    a = Decoder()._decode(RawFrame(1, 1.0, 1, 1, frame, orig))
    b = Decoder()._decode(RawFrame(1, 1.0, 1, 228, frame[14:], orig - 14))
    assert a == b
