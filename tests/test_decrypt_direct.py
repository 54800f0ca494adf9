"""The decrypt loop's O_DIRECT output (export/direct.py): the same file bytes as the buffered file
object it stands in for, whatever the stream's unaligned beginning and the pieces' sizes, for the
whole decrypt (sequential and split over processes, whose part files are written the same way);
and the files it must leave to the page cache (append mode, pipes, /dev/null)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ipsecscope.api import load_keystore
from ipsecscope.export import direct, engine, hotloop
from tests.conftest import SAMPLES
from tests.test_decrypt_bulk import _capture
from tests.test_decrypt_mixed import as_pcapng


def _direct_or_skip(path: Path):
    f = open(path, "wb")  # noqa: SIM115 - closed by the caller
    d = direct.open_direct(f)
    if d is None:
        f.close()
        pytest.skip(f"the file system of {path.parent} refuses O_DIRECT")
    return f, d


@pytest.mark.parametrize("head", [0, 1, 140, 4095, 4096, 9000])
def test_pieces_land_as_a_buffered_file_writes_them(head: int, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(direct, "STAGE", 3 * direct.ALIGN)  # many direct writes, pieces across them
    rng = random.Random(head)
    first = rng.randbytes(head)
    pieces = []
    for _ in range(300):
        b = rng.randbytes(rng.choice((1, 3, 28, 700, 4096, 5000, 13000)))
        pieces.append(b if rng.random() < 0.5 else memoryview(bytearray(b))[1:])
    f, d = _direct_or_skip(tmp_path / "d")
    with f:
        f.write(first)  # what the pcapng writer writes through the file object before the loop
        d.close()
        d = direct.open_direct(f)
        assert d is not None and d.pos % direct.ALIGN == 0
        for i in range(0, len(pieces), 7):
            d.writelines(pieces[i:i + 7])
        d.finish()
        f.write(b"after")  # the DSB the engine may write once the loop is done
    want = first + b"".join(bytes(p) for p in pieces) + b"after"
    assert (tmp_path / "d").read_bytes() == want


def test_files_left_to_the_page_cache(tmp_path: Path) -> None:
    p = tmp_path / "a"
    p.write_bytes(b"x" * 10)
    with open(p, "ab") as f:
        assert direct.open_direct(f) is None  # pwrite on O_APPEND would append
    with open(os.devnull, "wb") as f:
        assert direct.open_direct(f) is None
    r, w = os.pipe()
    with os.fdopen(w, "wb") as f:
        assert direct.open_direct(f) is None
    os.close(r)


@pytest.mark.parametrize("jobs", [1, 2])
def test_decrypt_output_is_the_same_either_way(jobs: int, tmp_path: Path, monkeypatch) -> None:
    _f, d = _direct_or_skip(tmp_path / "probe")
    d.close()
    _f.close()
    cap = tmp_path / "c.pcap"
    keys, good, _bad = _capture(cap)
    monkeypatch.setattr(hotloop, "BULK_MIN_BYTES", 0)
    monkeypatch.setattr(direct, "STAGE", 2 * direct.ALIGN)
    outs = {}
    for name, min_bytes in (("page-cache", 1 << 62), ("direct", 0)):
        monkeypatch.setattr(direct, "MIN_BYTES", min_bytes)
        out = tmp_path / f"{name}.pcapng"
        s = engine.run(cap, load_keystore(keys), out=str(out), opts=engine.Options(), jobs=jobs,
                       parallel_min_bytes=0, dsb=True)
        assert s.decrypted > good * 9 // 10 and s.jobs == jobs
        outs[name] = out.read_bytes()
        assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert outs["direct"] == outs["page-cache"]
    assert len(outs["direct"]) > 20 * direct.STAGE


@pytest.mark.parametrize(("fmt", "jobs"), [("pcap", 1), ("pcap", 2), ("pcapng", 1)])
def test_windows_planned_in_the_staging_buffer(fmt: str, jobs: int, tmp_path: Path, monkeypatch) -> None:
    """A window the bulk step takes whole is planned straight into the O_DIRECT staging buffer
    (bulk.OutBuf.need(stage=True), DirectOut.reserve/commit); a window a failed record splits
    moves its blocks out of it first. Windows of 8 KiB and a staging buffer of 32 KiB: both cases
    many times, and the staged bytes written and their unaligned tail moved to the buffer's start
    whenever the next window does not fit."""
    _f, d = _direct_or_skip(tmp_path / "probe")
    d.close()
    _f.close()
    cap = tmp_path / "c.pcap"
    keys, good, _bad = _capture(cap)
    if fmt == "pcapng":
        src, cap = cap, tmp_path / "c.pcapng"
        as_pcapng(src, cap, 9)
    monkeypatch.setattr(hotloop, "BULK_MIN_BYTES", 0)
    monkeypatch.setattr(hotloop, "WINDOW", 8192)
    monkeypatch.setattr(direct, "STAGE", 8 * direct.ALIGN)
    committed = []
    commit = direct.DirectOut.commit

    def counted(self, n: int) -> None:  # (the real commit, counted: the staged path must run)
        committed.append(n)
        commit(self, n)

    monkeypatch.setattr(direct.DirectOut, "commit", counted)
    outs = {}
    for name, min_bytes in (("page-cache", 1 << 62), ("direct", 0)):
        monkeypatch.setattr(direct, "MIN_BYTES", min_bytes)
        out = tmp_path / f"{name}.pcapng"
        s = engine.run(cap, load_keystore(keys), out=str(out), opts=engine.Options(), jobs=jobs,
                       parallel_min_bytes=0, dsb=True)
        assert s.decrypted > good * 9 // 10 and s.jobs == jobs
        outs[name] = out.read_bytes()
    assert outs["direct"] == outs["page-cache"]
    assert len(committed) >= 10, committed


REAL = sorted(p.parent.name for p in SAMPLES.glob("*/capture.pcapng") if (p.parent / "keys").exists())
SYNTHETIC = ["esn-wrap", "aead", "cbc-ctr-hmac", "ipv6-transport-natt", "icmp-quoted"]


def _inputs(name: str) -> tuple[Path, Path]:
    if name in SYNTHETIC:
        return SAMPLES / "synthetic" / f"{name}.pcap", SAMPLES / "synthetic" / f"{name}.keys.json"
    return SAMPLES / name / "capture.pcapng", SAMPLES / name / "keys"


@pytest.mark.parametrize("name", REAL + SYNTHETIC)
def test_real_samples_decrypt_to_the_same_bytes_on_every_path(name: str, tmp_path: Path, monkeypatch) -> None:
    """The strongSwan samples and the synthetic ones (ESN wrap, AEADs, CBC/CTR, IPv6 transport in
    UDP, ICMP quotes), with and without --keep-other: the fast paths (bulk step from the first
    window, O_DIRECT output, two processes) write the bytes and counts of the plain per-record
    loop with one buffered output."""
    cap, keys = _inputs(name)
    plain_path = {"BULK_MIN_BYTES": 1 << 62, "MIN_BYTES": 1 << 62}
    for keep in (False, True):
        results = []
        for fast, jobs in ((False, 1), (True, 1), (True, 2)):
            monkeypatch.setattr(hotloop, "BULK_MIN_BYTES", 0 if fast else plain_path["BULK_MIN_BYTES"])
            monkeypatch.setattr(direct, "MIN_BYTES", 0 if fast else plain_path["MIN_BYTES"])
            monkeypatch.setattr(direct, "STAGE", 2 * direct.ALIGN)
            out = tmp_path / f"{keep}-{fast}-{jobs}.pcapng"
            s = engine.run(cap, load_keystore([keys]), out=str(out), opts=engine.Options(keep_other=keep), jobs=jobs,
                           parallel_min_bytes=0, dsb=True)
            results.append((out.read_bytes(), s.frames, s.esp, s.decrypted, s.icv_failed, s.no_key, s.malformed,
                            s.kept, s.written))
        assert results[1] == results[0], f"{name}: bulk + O_DIRECT differ from the per-record loop"
        assert results[2] == results[0], f"{name}: two processes differ from one"
        assert results[0][3] > 0 or results[0][2] == 0, f"{name}: ESP, but nothing decrypted"
