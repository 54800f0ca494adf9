"""The analysis path's hot loop (ipsecscope/session_fast.py) answers exactly as the general path.

``Session.load`` reads pcap and pcapng files with a fused loop and hands every frame it does not
take itself to the general path. Whatever path a frame took, the SA table, the findings, every
packet row, the counters and any error must be the same: checked on every capture the suite has
(real strongSwan samples, Wireshark's corpus, damaged files) and on truncations of them.
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import DATA, ROOT, SAMPLES

from ipsecscope import session_fast
from ipsecscope.export.documents import table_to_dict
from ipsecscope.session import Session

ROW_FIELDS = ("frame", "ts", "kind", "src", "dst", "sport", "dport", "length", "spi", "seq", "info", "status",
              "ike_sa", "child_sa")


def _captures() -> list[str]:
    found = []
    for top in (DATA, SAMPLES, ROOT.parent / "shared" / "corpus"):
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                p = os.path.join(dirpath, name)
                if session_fast.eligible(Session(), p) is not None:
                    found.append(p)
    return sorted(found)


def _load(path: str, keys: list[str], fast: bool, monkeypatch, keep_rows: bool = True) -> tuple:
    if not fast:
        monkeypatch.setattr(session_fast, "eligible", lambda *a: None)
    s = Session(keep_rows=keep_rows)
    if keys:
        s.add_key_files(keys)
    try:
        s.load(path)
    except Exception as exc:  # noqa: BLE001 - the error itself is part of the answer
        out: tuple = ("error", type(exc).__name__, str(exc))
    else:
        out = (json.dumps(table_to_dict(s.table), sort_keys=True, default=str),
               [repr(f) for f in s.findings],
               [tuple(getattr(s.rows[i], f) for f in ROW_FIELDS) for i in range(len(s.rows))] if keep_rows else [],
               repr(s.stats), repr(s.esp_decryptor.summary()))
    monkeypatch.undo()
    return out


def _keys_for(path: str) -> list[str]:
    keys = os.path.join(os.path.dirname(path), "keys")
    return [keys] if path.startswith(str(SAMPLES)) and os.path.isdir(keys) else []


CAPTURES = _captures()


def test_there_is_something_to_compare():
    assert len(CAPTURES) >= 40
    assert {session_fast.eligible(Session(), p) for p in CAPTURES} == {"pcap", "pcapng"}


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: os.path.relpath(p, ROOT))
def test_fast_equals_general(path, monkeypatch):
    keys = _keys_for(path)
    assert _load(path, keys, True, monkeypatch) == _load(path, keys, False, monkeypatch)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: os.path.relpath(p, ROOT))
def test_no_rows_changes_no_answer(path, monkeypatch):
    """`sas` and `findings` keep no packet rows (keep_rows=False): same SAs, findings, counters."""
    keys = _keys_for(path)
    with_rows = _load(path, keys, True, monkeypatch)
    without = _load(path, keys, True, monkeypatch, keep_rows=False)
    if with_rows[0] == "error":
        assert without == with_rows
    else:
        assert without == (*with_rows[:2], [], *with_rows[3:])


def _pcap(path, n: int) -> None:
    """n ESP frames on one SA (no keys) interleaved with n TCP frames: a big tunnel's shape."""
    import struct

    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    for i in range(n):
        for proto, body in ((50, struct.pack("!II", 0x1234, i + 1) + bytes(64)), (6, bytes(84))):
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, proto, 0,
                             bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]))
            frame = eth + ip + body
            out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def test_memory_without_rows_does_not_grow_with_frames(tmp_path, monkeypatch):
    """What `sas` and `findings` hold grows with SAs and flows, not with frames: the peak of a load
    of 4x the frames (same SA) is about the same. (A ratio between two sizes, not a bound in bytes;
    read windows made smaller than both files, since a window is the one big buffer.)"""
    import tracemalloc

    monkeypatch.setattr(session_fast, "WINDOW", 1 << 14)
    peaks = []
    for n in (2_000, 8_000):
        cap = tmp_path / f"{n}.pcap"
        _pcap(cap, n)
        s = Session(keep_rows=False)
        tracemalloc.start()
        s.load(cap)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert s.stats.esp == n and s.stats.other == n and len(s.rows) == 0
    with_rows = Session()
    tracemalloc.start()
    with_rows.load(tmp_path / "8000.pcap")
    rows_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peaks[1] < 1.3 * peaks[0], peaks
    assert rows_peak > peaks[1] + 40 * 8_000 * 2  # the rows themselves take ~60 B a frame


@pytest.mark.parametrize("sample", ["healthy-gcm", "cbc-sha2-pfs", "dead-peer"])
def test_fast_equals_general_when_cut_anywhere(sample, tmp_path, monkeypatch):
    """A capture cut off at any byte (a copy still being written, a broken transfer): the same
    frames, the same "cut off" count and message from both paths."""
    data = (SAMPLES / sample / "capture.pcapng").read_bytes()
    keys = [str(SAMPLES / sample / "keys")]
    cut = tmp_path / "cut.pcapng"
    for n in sorted({*range(0, len(data), max(1, len(data) // 40)), 11, 12, 13, len(data) - 1, len(data) - 3}):
        cut.write_bytes(data[:n])
        assert _load(str(cut), keys, True, monkeypatch) == _load(str(cut), keys, False, monkeypatch), n


def test_the_loop_takes_the_esp_frames_itself(monkeypatch):
    """ESP over Ethernet/IPv4 (raw and UDP 4500) never reaches the general path: otherwise the
    equality above would hold trivially."""
    handed: list[int] = []
    orig = Session._general_frame

    def spy(self, raw):
        handed.append(raw.index)
        orig(self, raw)

    monkeypatch.setattr(Session, "_general_frame", spy)
    s = Session()
    s.add_key_files([SAMPLES / "healthy-gcm" / "keys"])
    s.load(SAMPLES / "healthy-gcm" / "capture.pcapng")
    esp_frames = {s.rows[i].frame for i in range(len(s.rows)) if s.rows[i].kind == "ESP"}
    assert esp_frames and s.stats.decrypted == len(esp_frames)
    assert not esp_frames & set(handed)
    assert set(handed) == {s.rows[i].frame for i in range(len(s.rows))} - esp_frames
