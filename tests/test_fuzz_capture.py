"""Fuzzing the capture readers, the demux and the summary fast path: random bytes, real captures cut
at many offsets, bit-flipped frames; and, structure-aware, the link headers (OpenBSD enc, Juniper),
IKEv1 Fragment payloads and IP fragments of ESP, through every command. Nothing may raise except
the typed CaptureError, everything terminates, and the fast path must agree with the generic
decoder on whatever garbage it is fed."""

from __future__ import annotations

import gzip
import random
import shutil
import struct
import subprocess
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
@given(st.binary(min_size=0, max_size=200), st.sampled_from([0, 1, 101, 108, 109, 113, 133, 136, 167, 178, 179, 180, 181, 228, 229, 276]))
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


# ------------------------------------------------------------------ structure-aware, every command

DATA = Path(__file__).parent / "data"
ROOT = DATA.parent.parent
V1FRAG_KEYS = DATA / "ikev1-frag" / "mm-cert-frag.charon-left.log"
FRAG_LOSS_KEYS = DATA / "esp-frag-loss" / "charon-left.log"


def _every_command(cap: Path, keys: Path, out: Path) -> None:
    """Every command of the CLI in-process on ``cap``: a documented exit status, no traceback."""
    import contextlib
    import io

    from ipsecscope.cli import main

    filt = 'isakmp.nextpayload == 132 || esp.spi > 5 || ipsecscope.status == "malformed"'
    for args, ok in ((["summary"], (0, 1)), (["summary", "--json"], (0, 1)), (["sas", "-k", keys, "--"], (0, 2)),
                     (["findings", "-k", keys, "--"], (0, 1, 2)), (["packets", "--json", "-k", keys, "--"], (0, 2)),
                     (["stats", "-k", keys, "--"], (0, 2)), (["decrypt", "-q", "-k", keys, "-o", out, "--"], (0, 1, 3, 4)),
                     (["packets", "-Y", filt, "-k", keys, "--"], (0, 2))):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            rc = main([*map(str, args), str(cap)])
        assert rc in ok, (args, rc, err.getvalue())
        assert len(err.getvalue().strip().splitlines()) <= 2, (args, err.getvalue())  # a warning, an error


def _link_edits(rnd: random.Random, linktype: int, data: bytes) -> bytes:
    """One edit of the link header: the enc header's family and flags (in either byte order, or
    none known), Juniper's flags, extension length and TLV lengths running past the end, a cut."""
    b = bytearray(data)
    op = rnd.randrange(4)
    if op == 0:
        return bytes(b[: rnd.randrange(min(len(b), 48) + 1)])
    if linktype == 109:
        if op == 1:
            b[0:4] = rnd.choice([b"\0\0\0\0", b"\0\0\0\x02", b"\x18\0\0\0", b"\0\0\0\x1c", b"\x1e\0\0\0", b"\xff" * 4])
        else:
            b[8:12] = rnd.choice([b"\0\0\0\0", b"\xff" * 4, b"\0\x04\0\0"])
    elif op == 1:
        b[3] = rnd.choice([0x00, 0x01, 0x02, 0x03, 0x80, 0x81, 0x82, 0x83, 0xFF])
    elif op == 2:
        b[3] |= 0x80
        b[4:6] = struct.pack(">H", rnd.choice([0, 1, 2, 0xFFFF, len(b) - 6, len(b) - 5]))
    elif len(b) > 8:
        b[3] |= 0x80
        b[7] = rnd.choice([0, 1, 0x80, 0xFF])  # the first TLV's length
    return bytes(b)


def _frames(path: Path) -> list[tuple[int, bytes]]:
    with open_capture(path) as r:
        return [(f.linktype, bytes(f.data)) for f in r]


@pytest.mark.parametrize("name", ["enc.pcap", "juniper.pcapng"])
def test_link_header_edits_every_command(tmp_path: Path, name: str) -> None:
    """The enc (DLT 109) and Juniper headers of real frames edited field by field: every frame
    still counted, every command finishes with a documented status."""
    frames = _frames(DATA / "linktypes" / name)
    rnd = random.Random(name)
    for i in range(6):
        edited = [(lt, _link_edits(rnd, lt, d) if rnd.random() < 0.4 else d) for lt, d in frames]
        cap = write_pcap(tmp_path / f"{i}.pcap", [d for _, d in edited], linktype=frames[0][0])
        assert summarize(str(cap), workers=1)["frames"] == len(frames)
        _every_command(cap, FRAG_LOSS_KEYS, tmp_path / "out.pcapng")


def _isakmp(body: bytes, spi_i: bytes = b"\xd9" * 8, np: int = 132, flags: int = 0, length: int | None = None) -> bytes:
    return spi_i + b"\x91" * 8 + bytes([np, 0x10, 2, flags]) + struct.pack(">II", 0, 28 + len(body) if length is None else length) + body


def _piece(fid: int, num: int, last: bool, data: bytes, *, spi_i: bytes = b"\xd9" * 8, plen: int | None = None,
           back: bool = False) -> bytes:
    """An IKEv1 piece (Fragment payload 132: ID, number, last flag; RFC-less, Cisco/strongSwan) on
    UDP 4500 behind the non-ESP marker."""
    from scapy.layers.inet import UDP
    from scapy.packet import Raw
    from test_capture_builders import eth, v4

    pl = bytes([0, 0]) + struct.pack(">HHBB", 8 + len(data) if plen is None else plen, fid, num, last) + data
    src, dst = ("198.18.0.2", "198.18.0.1") if back else ("198.18.0.1", "198.18.0.2")
    return eth(v4(src, dst) / UDP(sport=4500, dport=4500) / Raw(b"\0" * 4 + _isakmp(pl, spi_i)))


def _hostile_v1_pieces(rnd: random.Random) -> tuple[list[bytes], set[int]]:
    """Pieces no sender makes, and the frames (1-based) that must come out marked malformed."""
    enc = _isakmp(rnd.randbytes(96), np=5, flags=1)
    cases: list[tuple[bytes, bool]] = [
        (_piece(1, 0, False, b"a"), True),  # number 0
        (_piece(1, 255, True, b"b"), True),  # past any sender's count
        (_piece(2, 1, True, enc[:10]), True),  # last on 1: completes at once, 10 bytes: no message
        (_piece(2, 2, True, enc[10:]), False),  # a piece of a finished set: a repeat
        (_piece(3, 1, False, b"\x01\x02"), False),
        (_piece(3, 2, True, b"\x03"), True),  # completes 3 bytes: no ISAKMP message
        (_piece(4, 1, False, _isakmp(b"", spi_i=b"\x22" * 8)[:20]), False),
        (_piece(4, 2, True, _isakmp(b"", spi_i=b"\x22" * 8)[20:]), True),  # another SA's message
        (_piece(5, 1, True, _isakmp(bytes([0, 0]) + struct.pack(">HHBB", 8, 5, 1, 1))), True),  # a piece in a piece
        (_piece(6, 1, False, b"x" * 20, plen=0), True),  # payload lengths below the header, past the end
        (_piece(6, 1, False, b"x" * 20, plen=3), True),
        (_piece(6, 1, False, b"x" * 20, plen=0xFFFF), True),
        (_piece(7, 1, False, b""), False),
        (_piece(7, 3, True, b""), False),
        (_piece(7, 2, True, b""), False),  # a second last flag below the first: a repeat, not a shorter set
        (_piece(8, 1, False, enc[:50]), False),  # one Fragment ID, two directions and two SAs
        (_piece(8, 1, False, enc[:50], back=True), False),
        (_piece(8, 1, False, enc[:50], spi_i=b"\x33" * 8), False),
        (_piece(8, 2, True, enc[50:]), False),
    ]
    return [f for f, _ in cases], {i + 1 for i, (_, bad) in enumerate(cases) if bad}


def test_hostile_ikev1_fragments_counted_every_command(tmp_path: Path) -> None:
    """IKEv1 Fragment payloads no sender makes: each counted malformed where the input is at
    fault (summary and the session alike, reassembled bytes that are no ISAKMP message of the SA
    included), the others reassembled or kept as repeats; every command finishes."""
    from ipsecscope.session import Session

    frames, bad = _hostile_v1_pieces(random.Random(5))
    cap = write_pcap(tmp_path / "v1.pcap", frames)
    doc = summarize(str(cap), workers=1)
    marked = {m["frame"] for m in doc["malformed"]["examples"]}
    assert marked == bad, (marked, bad)
    s = Session()
    s.load(cap)
    assert s.stats.malformed_total == len(bad)
    _every_command(cap, V1FRAG_KEYS, tmp_path / "out.pcapng")


def _ike_edit(rnd: random.Random, d: bytes) -> bytes:
    """An ISAKMP/Fragment-payload field of an IKE frame (UDP 500/4500, Ethernet/IPv4) set to an
    edge value: the message length, a payload length, a fragment number, ID or last flag."""
    b = bytearray(d)
    u = 14 + (b[14] & 15) * 4
    p = u + 8 + (4 if b[u + 2:u + 4] == b"\x11\x94" else 0)
    if len(b) < p + 28 or b[u + 8:u + 12] != b"\0" * 4 and p != u + 8:
        return d
    q = p + 28
    op = rnd.randrange(4)
    if op == 0:
        b[p + 24:p + 28] = struct.pack(">I", rnd.choice([0, 1, 28, 0xFFFFFFFF, len(b) - p + 1]))
    elif op == 1 and len(b) >= q + 4:
        b[q + 2:q + 4] = struct.pack(">H", rnd.choice([0, 1, 4, 8, 0xFFFF]))
    elif b[p + 16] == 132 and len(b) >= q + 8:
        k = rnd.choice([q + 4, q + 6, q + 7])
        b[k] = rnd.choice([0, 1, 2, 33, 255])
    else:
        b[rnd.randrange(p, len(b))] ^= 1 << rnd.randrange(8)
    return bytes(b)


@pytest.mark.parametrize("name", ["mm-cert-frag.pcap", "am-cert-frag.pcap", "mm-frag-lost.pcap"])
def test_ikev1_fragment_field_edits_every_command(tmp_path: Path, name: str) -> None:
    """Real IKEv1 fragmented exchanges (strongSwan) with their ISAKMP and Fragment payload fields
    set to edge values, pieces repeated and reordered: every frame counted, every command ends."""
    frames = [d for _, d in _frames(DATA / "ikev1-frag" / name)]
    rnd = random.Random(name)
    for i in range(4):
        edited = [_ike_edit(rnd, d) if rnd.random() < 0.3 else d for d in frames]
        j = rnd.randrange(len(edited))
        edited.insert(rnd.randrange(len(edited)), edited[j])
        cap = write_pcap(tmp_path / f"{i}.pcap", edited)
        assert summarize(str(cap), workers=1)["frames"] == len(edited)
        _every_command(cap, DATA / "ikev1-frag" / name.replace(".pcap", ".charon-left.log"), tmp_path / "o.pcapng")


def test_hostile_ip_fragments_of_esp_every_command(tmp_path: Path) -> None:
    """IP fragments of ESP no stack sends (overlaps with other bytes, offsets past 64 KiB, empty
    and 8-byte pieces, a first piece shorter than the ESP header, IPv6 alike): every frame
    counted, every command ends."""
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6ExtHdrFragment
    from scapy.packet import Raw
    from test_capture_builders import esp as esp_bytes
    from test_capture_builders import eth, v4, v6

    p = esp_bytes(0xC0DE, 1, 3000)

    def f4(id_: int, off8: int, mf: bool, data: bytes, proto: int = 50) -> bytes:
        return eth(v4(id=id_, frag=off8, flags="MF" if mf else 0, proto=proto) / Raw(data))

    def f6(id_: int, off8: int, mf: bool, data: bytes) -> bytes:
        return eth(v6() / IPv6ExtHdrFragment(nh=50, id=id_, offset=off8, m=mf) / Raw(data))

    u = bytes(UDP(sport=4500, dport=4500, len=8 + len(p))) + p
    frames = [f4(7, 0, True, p[:1480]), f4(7, 100, True, p[800:2280]), f4(7, 0, True, bytes(1480)),
              f4(7, 185, False, p[1480:]), f4(8, 0, True, p[:1480]), f4(8, 8191, False, p[:1480]),
              f4(9, 0, True, b""), f4(9, 1, True, bytes(7)), f4(9, 2, False, b""), f4(10, 5, True, p[:40]),
              f4(11, 0, True, p[:4]), f4(11, 1, False, p[8:100]), f4(12, 0, True, u[:1480], 17),
              f4(12, 185, False, p[1480:2000]), f6(5, 0, True, p[:1440]), f6(5, 8191, False, p[:8]),
              f6(6, 0, False, p[:3]), f6(7, 0, True, b"")]
    cap = write_pcap(tmp_path / "ipf.pcap", frames)
    assert summarize(str(cap), workers=1)["frames"] == len(frames)
    _every_command(cap, FRAG_LOSS_KEYS, tmp_path / "out.pcapng")


def _skf_set(d: bytes, *, num: int | None = None, total: int | None = None, spi_i: bytes | None = None,
             tail: bytes | None = None) -> bytes:
    """An SKF piece (RFC 7383 §2.5: Fragment Number, Total Fragments after the generic header) of a
    real frame (Ethernet/IPv4/UDP 4500/non-ESP marker) with fields set; both fields are under the
    piece's ICV, so with keys every edited piece fails integrity."""
    b = bytearray(d)
    p = 14 + (b[14] & 15) * 4 + 8 + 4
    if num is not None:
        b[p + 32:p + 34] = struct.pack(">H", num)
    if total is not None:
        b[p + 34:p + 36] = struct.pack(">H", total)
    if spi_i is not None:
        b[p:p + 8] = spi_i
    if tail is not None:
        b[-len(tail):] = tail
    return bytes(b)


def _main_out(args: list) -> str:
    import contextlib
    import io

    from ipsecscope.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        main([*map(str, args)])
    return out.getvalue()


def test_hostile_ikev2_skf_every_command(tmp_path: Path) -> None:
    """IKEv2 SKF pieces no sender makes among a real fragmented IKE_AUTH (strongSwan, AES-GCM):
    numbers 0 and past the total, totals 0 and changing, a repeat with other bytes, pieces of the
    same message ID under another IKE SA. The invalid numbers are counted malformed; a piece whose
    ICV fails does not restart or hold up the real message (RFC 7383 §2.6.2: it is discarded), so
    with keys it is joined from its three verified pieces; without keys, pieces counted towards a
    total a later piece changed say why they were not reassembled. Every command ends."""
    skf = DATA / "ikev2-skf" / "gcm"
    frames = [d for _, d in _frames(skf / "capture.pcapng")]
    a, b = frames[2], frames[3]  # IKE_AUTH request pieces 1/3 and 2/3
    hostile = [_skf_set(a, num=0), _skf_set(a, num=9), _skf_set(a, total=0), _skf_set(a, num=0, total=0),
               _skf_set(b, total=7), _skf_set(b, tail=b"\xee" * 8), _skf_set(a, spi_i=b"\x44" * 8),
               _skf_set(b, spi_i=b"\x44" * 8), _skf_set(a, num=0xFFFF, total=0xFFFF), _skf_set(a, num=2, total=1)]
    edited = frames[:3] + hostile + frames[3:]
    cap = write_pcap(tmp_path / "skf.pcap", edited)
    doc = summarize(str(cap), workers=1)
    assert {m["frame"] for m in doc["malformed"]["examples"]} == {4, 5, 6, 7, 13}
    given_up = {r["frame"]: r["fragment"]["given_up"] for r in doc["ike"] if r.get("fragment")}
    assert given_up[3] == "a later piece of message ID 1 said 7 fragments, not 3"
    rows = {r["frame"]: r for r in map(__import__("json").loads, _main_out(
        ["packets", "--json", "-k", skf / "charon-left.log", "--", cap]).splitlines())}
    assert "reassembled from 3 fragments (frames 3, 14, 15)" in rows[15]["info"]
    assert not any("not reassembled" in r["info"] or "lost" in r["info"] for r in rows.values()
                   if r["status"] == "decrypted")
    _every_command(cap, skf / "charon-left.log", tmp_path / "out.pcapng")


def _rfc8229_streams() -> tuple[list[bytes], dict[tuple, bytes]]:
    """tests/data/rfc8229/ikev2-tcp.pcap as its UDP frames and, per direction, the TCP bytes."""
    pre, streams = [], {}
    for _, e in _frames(DATA / "rfc8229" / "ikev2-tcp.pcap"):
        ip = e[14:]
        if ip[9] != 6:
            pre.append(e)
            continue
        t = ip[20:]
        key = (ip[12:16], ip[16:20], t[0] << 8 | t[1], t[2] << 8 | t[3])
        streams[key] = streams.get(key, b"") + t[(t[12] >> 4) * 4:]
    return pre, streams


def _rfc8229_capture(path: Path, rnd: random.Random, mode: str) -> Path:
    """The RFC 8229 connection's bytes cut into segments at random points (and the "IKETCP"
    prefix after 3 bytes), then ``mode``: "swap" adjacent segments, "drop" one, "inject" records
    of length 0/1/2/65535 after the prefix, "overlap" with other bytes."""
    import ipaddress

    from scapy.layers.inet import TCP
    from scapy.packet import Raw
    from test_capture_builders import eth, v4

    pre, streams = _rfc8229_streams()
    out = list(pre)
    per: list[list[tuple]] = []
    for key, data in streams.items():
        src, dst = (str(ipaddress.IPv4Address(a)) for a in key[:2])
        out.append(eth(v4(src, dst, proto=6) / TCP(sport=key[2], dport=key[3], seq=0, flags="S")))
        if mode == "inject":
            data = data[:6] + rnd.choice([b"\0\0", b"\0\1", b"\0\2", b"\xff\xff" + b"z" * 50]) + data[6:]
        cuts = sorted({0, 3, len(data), *rnd.sample(range(1, len(data)), 30)})
        segs = [(src, dst, key, 1 + a, data[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
        if mode == "swap":
            for i in rnd.sample(range(1, len(segs) - 1), 8):
                segs[i], segs[i + 1] = segs[i + 1], segs[i]
        elif mode == "drop":
            del segs[len(segs) // 4]
        elif mode == "overlap":
            for i in rnd.sample(range(len(segs)), 4):
                s, d, k, q, seg = segs[i]
                segs.insert(i + 1, (s, d, k, q + len(seg) // 2, bytes(x ^ 0x5A for x in seg[len(seg) // 2:]) + b"Q" * 9))
        per.append(segs)
    while any(per):
        segs = rnd.choice([s for s in per if s])
        src, dst, key, q, data = segs.pop(0)
        out.append(eth(v4(src, dst, proto=6) / TCP(sport=key[2], dport=key[3], seq=q, flags="PA") / Raw(data)))
    return write_pcap(path, out)


def test_rfc8229_segments_every_command(tmp_path: Path) -> None:
    """RFC 8229 IKE/ESP over TCP cut into segments at random points (records and the "IKETCP"
    prefix split across them): reordered segments lose nothing (TCP delivers in sequence order,
    RFC 9293 §3.10.7.4), a lost segment is one counted malformed gap after which the stream is
    decoded again from the next record, hostile record lengths are malformed; every command ends."""
    rnd = random.Random(8229)
    want = summarize(str(DATA / "rfc8229" / "ikev2-tcp.pcap"), workers=1)["counts"]
    for mode in ("cut", "swap", "drop", "inject", "overlap"):
        cap = _rfc8229_capture(tmp_path / f"{mode}.pcap", rnd, mode)
        doc = summarize(str(cap), workers=1)
        if mode in ("cut", "swap"):
            assert (doc["counts"]["ike"], doc["counts"]["esp"], doc["malformed"]["by_layer"]) == (
                want["ike"], want["esp"], {}), mode
        elif mode == "drop":
            # one lost segment a direction: each a counted gap, told when the segments after it
            # outnumber any reordering (not at the end of the capture)
            assert doc["malformed"]["by_layer"] == {"tcp": 2}
            assert all("(lost segment, never captured" in m["reason"] for m in doc["malformed"]["examples"])
            if shutil.which("tshark"):  # each mark on the frame tshark says "previous segment not captured" of
                out = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", "tcp.analysis.lost_segment", "-T", "fields",
                                      "-e", "frame.number"], capture_output=True, text=True, timeout=120, check=True)
                assert sorted(m["frame"] for m in doc["malformed"]["examples"]) == [
                    int(n) for n in out.stdout.split()]
            # resumed at the next record (found by its IKE length or a known SPI): only the
            # records the lost bytes were in are missing
            assert doc["counts"]["ike"] + doc["counts"]["esp"] >= want["ike"] + want["esp"] - 4
        elif mode == "inject":
            assert doc["malformed"]["by_layer"].get("tcp", 0) >= 1
        elif mode == "overlap":
            # each later copy with other bytes counted where it overlaps (first copy kept, RFC 9293
            # §3.10.7.4), and the framing resynced after it: the records outside the disputed
            # bytes are all there
            marks = [m["reason"] for m in doc["malformed"]["examples"]]
            assert any("overlaps earlier data with different bytes at stream offset" in r for r in marks), marks
            assert doc["counts"]["ike"] + doc["counts"]["esp"] >= want["ike"] + want["esp"] - 8
        _every_command(cap, ROOT / "samples" / "healthy-gcm" / "charon-left.log", tmp_path / "out.pcapng")


def test_hostile_ah_and_esp_in_udp_every_command(tmp_path: Path) -> None:
    """AH (RFC 4302) and UDP 4500 (RFC 3948) frames no stack sends, among real AH traffic: Payload
    Length 0..3 and 255, ICVs shorter and longer than the SA's algorithm makes, AH in AH 2000 deep,
    AH carrying ESP, IPv6 extension headers with lying lengths and a 3000-long chain before AH;
    empty and short non-ESP markers, keepalives with extra bytes, UDP lengths lying both ways.
    Every frame counted, the impossible headers malformed, every command ends."""
    from scapy.layers.inet import UDP
    from scapy.packet import Raw
    from test_capture_builders import eth, v4, v6

    def ah(nh: int, spi: int, seq: int, icv: bytes, plen: int | None = None) -> bytes:
        return bytes([nh, (len(icv) + 12) // 4 - 2 if plen is None else plen, 0, 0]) + struct.pack(">II", spi, seq) + icv

    def ah4(data: bytes) -> bytes:
        return eth(v4(proto=51) / Raw(data))

    def u(pl: bytes, ulen: int | None = None, six: bool = False) -> bytes:
        return eth((v6() if six else v4()) / UDP(sport=4500, dport=4500, len=ulen) / Raw(pl))

    icmp = bytes.fromhex("0800f7ff00000000") + b"x" * 16
    bad = [ah4(ah(1, 0xA4000001, 50, b"\xab" * 12, 0) + icmp)]  # below the fixed header (RFC 4302 §2.2)
    frames = [ah4(ah(1, 0xA4000001, 60, b"\xab" * 12, p) + icmp) for p in (1, 2, 3, 255)]
    frames += [ah4(ah(1, spi, 70 + n, b"\xcd" * n) + icmp) for n in (0, 4, 16, 64) for spi in (0xA4000001, 0xA4000003)]
    frames.append(ah4(ah(50, 0xA4000005, 7, bytes(12)) + struct.pack(">II", 0xE4000005, 9) + b"\1\2" * 20))
    nest = icmp
    for k in range(2000):
        nest = ah(51 if k else 1, 0xA4000001, k, bytes(12)) + nest
    frames.append(ah4(nest))
    ah6 = ah(58, 0xA6000001, 99, bytes(12)) + icmp
    frames += [eth(v6(nh=nh) / Raw(bytes([51, hlen]) + bytes(6) + ah6)) for nh, hlen in ((0, 255), (60, 1), (43, 200))]
    chain = ah6
    for k in range(3000):
        chain = bytes([60 if k else 51, 0]) + b"\1\4\0\0\0\0" + chain
    frames.append(eth(v6(nh=60) / Raw(chain)))
    frames += [u(b""), u(b"\0\0\0"), u(b"\0\0\0\0"), u(b"\0\0\0\0" + b"\1" * 27), u(b"\xff\xff"), u(b"\xff" + bytes(30)),
               u(b"\x124Vx\0\0\0\1" + b"e" * 40, 0), u(b"\x124Vx\0\0\0\1" + b"e" * 40, 9), u(b"\x124Vx\0\0\0\1", 0xFFFF),
               u(b"\xff", 0xFFFF), u(b"\0\0\0\0" + b"\1" * 40, 0, True), u(b"\xff", 3, True)]
    real = [d for _, d in _frames(DATA / "ah" / "ah-v4.pcap")]
    rnd = random.Random(4302)
    mixed = list(real)
    for f in bad + frames:
        mixed.insert(rnd.randrange(len(mixed) + 1), f)
    cap = write_pcap(tmp_path / "ah.pcap", mixed)
    doc = summarize(str(cap), workers=1)
    assert doc["frames"] == len(mixed)
    reasons = [m["reason"] for m in doc["malformed"]["examples"]]
    assert sum("AH payload length 0" in r for r in reasons) == 2  # one built, one in the IPv6 chain
    keys = DATA / "ah" / "ah-v4.keys.json"
    rows = [__import__("json").loads(line) for line in _main_out(["packets", "--json", "-k", keys, "--", cap]).splitlines()]
    # an ICV of another length than the SA's algorithm makes never verifies
    assert {r["status"] for r in rows if r["kind"] == "AH" and 70 <= (r["seq"] or 0) < 140
            and r["spi"] in ("0xa4000001", "0xa4000003")} == {"icv-bad"}
    _every_command(cap, keys, tmp_path / "out.pcapng")


def test_hostile_key_files_never_print_keys(tmp_path: Path) -> None:
    """Key files with a recognisable key in them that is wrong (hex digits odd or not hex, the
    wrong length for the algorithm) in every text format, a 2 MB line, binary: a one-line error
    naming the file (and the line, where there is one), exit 2, and the key bytes in no output."""
    import contextlib
    import io
    import json

    from ipsecscope.cli import main

    pat = "c0ffee5eedc0ffee5eed"
    sa = {"spi": "0xa4000001", "src": "198.18.0.1", "dst": "198.18.0.2", "encr": "ENCR_AES_GCM_16"}
    files = {
        "odd.json": json.dumps({"schema": "ipsecscope.keys/1", "esp": [dict(sa, enc_key=pat + "abc")]}, indent=1),
        "short.json": json.dumps({"schema": "ipsecscope.keys/1", "esp": [dict(sa, enc_key=pat + "ab")]}, indent=1),
        "esp_sa": f'"IPv4","198.18.0.1","198.18.0.2","0xa4000001","AES-GCM with 16 octet ICV [RFC4106]","0x{pat}f","NULL",""\n',
        "ikev2_decryption_table": f'b1b8da23a004d038,fdaf22f6f7559b04,{pat}1,b2530c65,"AES-GCM-256 with 16 octet ICV [RFC5282]",,,"NONE [RFC4306]"\n',
        "xfrm.txt": f"src 198.18.0.1 dst 198.18.0.2\n\tproto esp spi 0xa4000001 reqid 1 mode tunnel\n\taead rfc4106(gcm(aes)) 0x{pat}1 128\n",
        "tcpdump.txt": f"0xa4000001@198.18.0.2 aes128-cbc-hmac96:0x{pat}\n",
        "big.txt": f"0xa4000001@198.18.0.2 aes256-cbc:0x{pat * 100_000}Z\n",
        "binary.bin": bytes(range(256)) * 64 + pat.encode(),
    }
    for name, body in files.items():
        p = tmp_path / name
        p.write_bytes(body if isinstance(body, bytes) else body.encode())
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["sas", "-k", str(p), "--", str(DATA / "ah" / "ah-v4.pcap")])
        lines = err.getvalue().strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"ipsecscope sas: error: {p}"), (name, rc, lines)
        assert name in ("binary.bin",) or lines[0].startswith(f"ipsecscope sas: error: {p}:"), lines
        assert pat[:8] not in out.getvalue() + err.getvalue(), name


def test_mangled_key_log_warnings_bounded(tmp_path: Path) -> None:
    """A charon log whose every SA has a hex dump one byte short (12 SAs): each SA is skipped, but
    stderr says the first MAX_KEY_WARNINGS and counts the rest in one line, in every command that
    loads keys (decrypt included), instead of a line per SA."""
    import contextlib
    import io

    from ipsecscope.cli import main
    from ipsecscope.cli.common import MAX_KEY_WARNINGS

    log = (DATA / "keys" / "charon-healthy-gcm-left.log").read_text()
    p = tmp_path / "charon.log"
    p.write_text(log.replace("Sk_d secret => 32 bytes", "Sk_d secret => 33 bytes") * 6)
    cap = DATA / "ah" / "ah-v4.pcap"
    for args in (["sas", "-k", p, "--", cap], ["decrypt", "-q", "-k", p, "-o", tmp_path / "o.pcapng", "--", cap]):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            main([*map(str, args)])
        lines = err.getvalue().splitlines()
        skipped = [w for w in lines if "has 32 of 33 bytes" in w]
        assert len(skipped) == MAX_KEY_WARNINGS, (args[0], len(skipped))
        assert any(w.startswith(f"ipsecscope {args[0]}: warning: {12 - MAX_KEY_WARNINGS} more warnings about the "
                                "keys") for w in lines), lines
        assert all(w.startswith(f"ipsecscope {args[0]}: warning: ") for w in skipped), skipped
