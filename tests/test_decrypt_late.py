"""``decrypt`` and ``api.iter_decrypted`` get what the decoder gives up at the end of input, as
the analysis does: the ESP records of an RFC 8229 TCP stream that waited behind a segment never
captured (decode.tcpencap: given up on overflow, FIN/RST, or at the end of the capture), and the
malformed marks of the gap and of IP datagrams whose fragments never all arrived.

Such a record is written when it is decoded, after the frames read since (an output written as the
capture is read cannot put it back), with its own frame's time, and a pcapng comment / the JSON
line's ``frame`` naming its frame. `decrypt` and `sas -k` count the same (per SA, and the marks),
in one process and split over processes (a stream across a chunk bound is carried, as IP
fragments are). The records' oracle is tshark on the sample the TCP captures were made from (it
does not dissect RFC 8229 records itself: tests/data/rfc8229/README.md)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest

from ipsecscope.api import iter_decrypted, load_keystore
from ipsecscope.capture import open_capture
from ipsecscope.export import engine
from tests.conftest import CORPUS, DATA, IPSECSCOPE, SAMPLES, needs_tshark
from tests.test_decrypt_tshark import tshark_decrypted

SAMPLE = SAMPLES / "healthy-gcm"
KEYS = SAMPLE / "keys"
LOST = DATA / "rfc8229" / "ikev2-tcp-lost.pcap"
SHIFT = 3  # frame n >= 6 of the rfc8229 captures holds the sample's frame n - 3 (make.py)
LATE = "RFC 8229 record decoded late"

CASES = [  # (capture, keys, malformed marks `sas` counts)
    (LOST, KEYS, {"tcp": 1}),
    (DATA / "rfc8229" / "ikev2-tcp.pcap", KEYS, {}),
    (DATA / "rfc8229" / "ikev2-tcp-overlap.pcap", KEYS, {"tcp": 1}),
    (DATA / "esp-frag-loss" / "capture.pcap", DATA / "esp-frag-loss" / "charon-left.log", {"ip": 3}),
    (SAMPLE / "capture.pcapng", KEYS, {}),
]
_SA = re.compile(r"^SPI 0x([0-9a-f]{8}) (\S+) -> (\S+): (\d+) decrypted, (\d+) icv_failed, (\d+) no_key", re.M)


def _decrypt(cap: Path, keys: Path, tmp: Path, *more: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    out, jl = tmp / "out.pcapng", tmp / "out.jsonl"
    p = subprocess.run([*IPSECSCOPE, "decrypt", str(cap), "-k", str(keys), "-o", str(out), "--jsonl", str(jl), *more],
                       capture_output=True, text=True, timeout=120)
    assert "Traceback" not in p.stderr
    return p, out, jl


@pytest.mark.parametrize(("cap", "keys", "marks"), CASES + [
    pytest.param(CORPUS / "esp-bug-12671.pcapng.gz", CORPUS / "esp_sa.tmpl", {}, id="wireshark-esp-bug-12671"),
], ids=lambda v: v.parent.name + "/" + v.name if isinstance(v, Path) else None)
def test_decrypt_counts_what_sas_counts(tmp_path: Path, cap: Path, keys: Path, marks: dict) -> None:
    if not cap.exists():
        pytest.skip(f"{cap} not on this machine (tests/public_data.py)")
    p, _out, jl = _decrypt(cap, keys, tmp_path)
    assert p.returncode == 0, p.stderr
    ours = {(int(spi, 16), s, d): tuple(map(int, n)) for spi, s, d, *n in _SA.findall(p.stderr)}
    sas = json.loads(subprocess.run([*IPSECSCOPE, "sas", str(cap), "-k", str(keys), "--json"], capture_output=True,
                                    text=True, timeout=120, check=True).stdout)
    theirs = {(f["spi"] if isinstance(f["spi"], int) else int(f["spi"], 16), f["src"], f["dst"]):
              (f["decrypted"], f["icv_failed"], f["no_key"]) for f in sas["flows"] if f["protocol"] == "ESP"}
    assert ours == theirs and sum(v[0] for v in ours.values()) > 0
    assert sas["capture"]["malformed"] == marks
    said = re.search(r"; malformed: (\d+) \(([^)]*)\)", p.stderr)
    assert ({k: int(v) for k, v in (x.split() for x in said[2].split(", "))} if said else {}) == marks
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    assert sum(r["status"] == "ok" for r in lines) == sum(v[0] for v in ours.values())


def _times(cap: Path) -> dict[int, int]:
    with open_capture(cap) as r:
        return {f.index: f.ts_ns for f in r}


def test_late_records_written_after_the_frames_read_since(tmp_path: Path) -> None:
    """The lost capture: the IKE_AUTH request's segment lost its second half; the initiator's 16
    later segments wait behind the gap until the capture ends (one short of the reordering limit).
    Its 9 ESP records are decrypted then: written after the responder's 9, each with its frame
    number and that frame's exact time; before, `decrypt` wrote the responder's 9 only."""
    p, out, jl = _decrypt(LOST, KEYS, tmp_path)
    assert p.returncode == 0, p.stderr
    assert "18 ESP: 18 decrypted" in p.stderr and "; malformed: 1 (tcp 1)" in p.stderr
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    frames = [r["frame"] for r in lines]
    # the responder's records on time (frames in order), then the initiator's, decoded at the end
    assert frames == [9, 11, 13, 19, 21, 23, 29, 31, 33, 8, 10, 12, 18, 20, 22, 28, 30, 32]
    times = _times(LOST)
    assert all(r["time_ns"] == times[r["frame"]] and r["status"] == "ok" for r in lines)
    with open_capture(out) as r:
        written = [(f.ts_ns, bytes(f.data)) for f in r]
    assert [t for t, _ in written] == [times[f] for f in frames]
    raw = out.read_bytes()
    for f in frames[9:]:
        assert f"ipsecscope: frame {f}: {LATE}".encode() in raw
    assert raw.count(LATE.encode()) == 9
    # the same as the API gives, in the same order
    api = [(d.frame, d.ts_ns, d.status, d.ip_packet()) for d in iter_decrypted(LOST, KEYS)]
    assert [(f, times[f], "ok") for f in frames] == [a[:3] for a in api]
    assert [a[3] for a in api] == [d for _, d in written]


@needs_tshark
def test_late_records_are_what_tshark_decrypts_from_the_sample(tmp_path: Path) -> None:
    """Each record's inner packet is what tshark decrypts from the sample's UDP frame it came from
    (the capture's frame n + 3)."""
    theirs = tshark_decrypted(SAMPLE / "capture.pcapng", KEYS / "esp_sa", tmp_path)
    got = [d for d in iter_decrypted(LOST, KEYS)]
    assert len(got) == 18
    for d in got:
        plain = theirs[d.frame - SHIFT]
        assert d.status == "ok" and plain[:len(d.inner)] == d.inner, d.frame


@pytest.mark.parametrize(("cap", "keys", "marks"), CASES[:4])
@pytest.mark.parametrize(("jobs", "per_job"), [(2, 1), (2, 8), (3, 40)])
def test_split_run_equals_one_process(tmp_path: Path, monkeypatch, cap: Path, keys: Path, marks: dict,
                                      jobs: int, per_job: int) -> None:
    """A split run carries the RFC 8229 streams open at a chunk's end into the next chunk (run
    again with them when it hands frames to the general decoder), and gives up what still waits
    once, after the last chunk: the same bytes and counts as one process (before, a chunk started
    in mid-stream and resynced: 14 of 18 at two chunks)."""
    monkeypatch.setattr(engine, "CHUNK_MIN_BYTES", 1)
    monkeypatch.setattr(engine, "MAX_CHUNKS_PER_JOB", per_job)
    got = []
    for j in (1, jobs):
        out, jl = tmp_path / f"{j}.pcapng", tmp_path / f"{j}.jsonl"
        s = engine.run(cap, load_keystore(keys), out=str(out), jsonl_out=str(jl),
                       opts=engine.Options(keep_other=per_job == 8), jobs=j, parallel_min_bytes=0, mark_every=1)
        d = dataclasses.asdict(s)
        for k in ("jobs", "reconciled_chunks", "guesses_redone"):
            d.pop(k)
        for _, sa in d["per_sa"]:  # (top: what the general path saw; esn: None in one process
            sa.pop("top"), sa.pop("esn")  # when the fast path took every packet, pre-existing)
        got.append((out.read_bytes(), jl.read_bytes(), d))
        assert s.marks == marks and s.jobs == j
    assert got[1] == got[0]


def test_general_path_writes_late_records_the_same(tmp_path: Path) -> None:
    """A gzip'd capture too small to inflate first takes the general reader (export/general.py):
    the same records, in the same order, with the same times and comments."""
    import gzip

    gz = tmp_path / "lost.pcap.gz"
    gz.write_bytes(gzip.compress(LOST.read_bytes()))
    got = []
    for cap in (LOST, gz):
        out, jl = tmp_path / f"{cap.name}.pcapng", tmp_path / f"{cap.name}.jsonl"
        s = engine.run(cap, load_keystore(KEYS), out=str(out), jsonl_out=str(jl), opts=engine.Options())
        with open_capture(out) as r:
            pkts = [(f.ts_ns, bytes(f.data)) for f in r]
        got.append((jl.read_text(), pkts, out.read_bytes().count(LATE.encode()), s.decrypted, s.esp, s.other, s.marks))
    assert got[1] == got[0]
    assert got[0][2:] == (9, 18, 18, 19, {"tcp": 1})


@pytest.mark.parametrize(("flt", "frames", "marks"), [
    ("esp", [9, 11, 13, 19, 21, 23, 29, 31, 33, 8, 10, 12, 18, 20, 22, 28, 30, 32], "; malformed: 1 (tcp 1)"),
    ("esp.spi == 0x15b69dc5", [8, 10, 12], "; malformed: 1 (tcp 1)"),  # the gap's mark is on frame 8
    ("esp.spi == 0x427e7d84", [9, 11, 13], None),
])
def test_display_filter_keeps_the_streams_whole(tmp_path: Path, flt: str, frames: list, marks: str | None) -> None:
    """decrypt -Y: the decoder still reads the frames the filter leaves out (the IKE records' and
    the bare ACKs' segments): a selected frame's record began in them. Before, the streams had a
    gap at every frame left out (`-Y esp` decrypted 6 of the 18 records)."""
    p, _out, jl = _decrypt(LOST, KEYS, tmp_path, "-Y", flt)
    assert p.returncode == 0, p.stderr
    assert [json.loads(x)["frame"] for x in jl.read_text().splitlines()] == frames
    assert (marks in p.stderr) if marks else ("malformed" not in p.stderr)


def _with_fin(tmp: Path) -> Path:
    """The lost capture with the initiator's FIN after its last segment (frame 38): the gap is
    given up there, while the capture is read (decode.tcpencap: "connection closed (FIN)"), not at
    its end. Built from frame 36's headers (Ethernet, IPv4, TCP without options)."""
    import struct

    data = LOST.read_bytes()
    off, frames = 24, []
    while off < len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        frames.append((data[off:off + 16], data[off + 16:off + 16 + incl]))
        off += 16 + incl
    hdr, f36 = frames[35]
    ihl = (f36[14] & 15) * 4
    tcp = bytearray(f36[14 + ihl:14 + ihl + 20])
    assert tcp[12] >> 4 == 5  # no options
    seq = struct.unpack_from("!I", tcp, 4)[0] + len(f36) - 14 - ihl - 20
    struct.pack_into("!I", tcp, 4, seq)
    tcp[13] = 0x11  # FIN, ACK
    ip = bytearray(f36[14:14 + ihl])
    struct.pack_into("!H", ip, 2, ihl + 20)
    frame = f36[:14] + bytes(ip) + bytes(tcp)
    sec, usec = struct.unpack_from("<II", frames[-1][0], 0)
    rec = struct.pack("<IIII", sec, usec + 1000, len(frame), len(frame)) + frame
    out = tmp / "lost-fin.pcap"
    out.write_bytes(data + rec)
    return out


def test_gap_given_up_at_fin_while_reading(tmp_path: Path, monkeypatch) -> None:
    """A FIN gives the gap up mid-capture: the records behind it are written at the FIN's frame
    (after frame 37), counted as `sas` counts them, and a split run writes the same."""
    cap = _with_fin(tmp_path)
    p, _out, jl = _decrypt(cap, KEYS, tmp_path)
    assert p.returncode == 0, p.stderr
    assert "38 frames, 18 ESP: 18 decrypted" in p.stderr and "; malformed: 1 (tcp 1)" in p.stderr
    assert [json.loads(x)["frame"] for x in jl.read_text().splitlines()] == \
        [9, 11, 13, 19, 21, 23, 29, 31, 33, 8, 10, 12, 18, 20, 22, 28, 30, 32]
    sas = json.loads(subprocess.run([*IPSECSCOPE, "sas", str(cap), "-k", str(KEYS), "--json"], capture_output=True,
                                    text=True, timeout=120, check=True).stdout)
    assert sorted(f["decrypted"] for f in sas["flows"]) == [3, 3, 6, 6] and sas["capture"]["malformed"] == {"tcp": 1}
    monkeypatch.setattr(engine, "CHUNK_MIN_BYTES", 1)
    monkeypatch.setattr(engine, "MAX_CHUNKS_PER_JOB", 8)
    got = []
    for j in (1, 2):
        out, jl2 = tmp_path / f"{j}.pcapng", tmp_path / f"{j}.jsonl"
        s = engine.run(cap, load_keystore(KEYS), out=str(out), jsonl_out=str(jl2), opts=engine.Options(), jobs=j,
                       parallel_min_bytes=0, mark_every=1)
        got.append((out.read_bytes(), jl2.read_bytes(), s.decrypted, s.marks))
    assert got[1] == got[0] and got[0][1] == jl.read_bytes()


@needs_tshark
def test_fragments_never_completed_as_tshark(tmp_path: Path) -> None:
    """tests/data/esp-frag-loss: 3 ESP datagrams lost their later fragments. tshark decrypts the
    other 33 on the frames that complete them, as `decrypt` does (the same bytes); the 3 are the
    marks (ip 3) `decrypt` and `sas` count, given up at the end of the capture."""
    cap, keys = DATA / "esp-frag-loss" / "capture.pcap", DATA / "esp-frag-loss" / "charon-left.log"
    esp_sa = tmp_path / "esp_sa"
    subprocess.run([*IPSECSCOPE, "keys", "convert", str(keys), "--to", "esp_sa", "-o", str(esp_sa)], check=True,
                   capture_output=True, timeout=60)
    theirs = tshark_decrypted(cap, esp_sa, tmp_path)
    p, _out, jl = _decrypt(cap, keys, tmp_path)
    assert "; malformed: 3 (ip 3)" in p.stderr
    ours = {d.frame: d for d in iter_decrypted(cap, keys)}
    assert sorted(ours) == sorted(theirs) == sorted(json.loads(x)["frame"] for x in jl.read_text().splitlines())
    assert len(ours) == 33 and all(theirs[f][:len(d.inner)] == d.inner for f, d in ours.items())


def test_dissect_copy_keeps_one_record_a_frame(tmp_path: Path) -> None:
    """dissect's decrypted copy (tshark's frame n must be the capture's frame n) takes one record
    a frame (Options.late off): the segments whose records waited stay as captured, nothing is
    written after them. With late records it would hold 46 records for 37 frames."""
    from ipsecscope.dissect import _decrypted_section

    out = tmp_path / "copy.pcapng"
    with open(out, "wb") as f:
        assert _decrypted_section(f, LOST, KEYS) == 37
    times = _times(LOST)
    with open_capture(out) as r:
        got = [(f.ts_ns, f.linktype) for f in r]
    assert [t for t, _ in got] == [times[n] for n in range(1, 38)]
    assert sum(lt == 101 for _, lt in got) == 9  # the responder's records, decrypted in place
