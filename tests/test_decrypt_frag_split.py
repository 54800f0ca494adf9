"""A split ``decrypt`` run (several chunks, several processes) gives what one process gives when
IP-fragmented ESP/AH datagrams straddle chunk bounds: the engine's reconcile step runs a chunk
again with the datagrams the chunks before it left incomplete (decode.ip.carried_through decides
when it must), so each datagram is decrypted where its last fragment is, as in one pass.

Data: tests/data/frag-split (make.py: scapy-encrypted ESP/AH, IPv4 and IPv6 fragments in order,
last first, reversed, shuffled with a duplicate, interleaved, one given up after 61 s, two still
incomplete when the capture ends). The truth is what make.py encrypted."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest

from ipsecscope.api import load_keystore
from ipsecscope.capture import open_capture
from ipsecscope.cli.decrypt import _outcome
from ipsecscope.decode.demux import Decoder
from ipsecscope.decode.ip import FragReport, carried_through
from ipsecscope.export import engine
from tests.conftest import DATA

CAP = DATA / "frag-split" / "frag-split.pcap"
KEYS = DATA / "frag-split" / "frag-split.keys.json"
# the datagrams make.py sent whole as fragments: (payload byte, UDP payload length)
COMPLETE = {(1, 3000), (2, 2600), (3, 2800), (4, 2400), (5, 2000), (6, 2000), (7, 2200), (9, 1500)}
SPLIT_ONLY = ("jobs", "reconciled_chunks", "guesses_redone")  # what only says how the run was split


def _run(tmp_path: Path, tag: str, jobs: int, opts: engine.Options, jsonl: bool, **kw):
    out, jl = tmp_path / f"{tag}.pcapng", tmp_path / f"{tag}.jsonl"
    stats = engine.run(CAP, load_keystore(KEYS), out=str(out), jsonl_out=str(jl) if jsonl else None, opts=opts,
                       jobs=jobs, **kw)
    return stats, out.read_bytes(), jl.read_bytes() if jsonl else b""


def _udp_payloads(pcapng: bytes, tmp_path: Path) -> list[bytes]:
    p = tmp_path / "read.pcapng"
    p.write_bytes(pcapng)
    out = []
    with open_capture(p) as r:
        for f in r:
            d = bytes(f.data)
            if f.linktype != 101:  # --keep-other frames
                continue
            hl = (d[0] & 15) * 4 if d[0] >> 4 == 4 else 40
            nh = d[9] if d[0] >> 4 == 4 else d[6]
            if nh == 4:  # tunnel mode: the inner IPv4 packet
                d = d[hl:]
                hl, nh = (d[0] & 15) * 4, d[9]
            assert nh == 17
            out.append(d[hl + 8:])
    return out


def test_one_process_writes_every_datagram_that_completes(tmp_path: Path) -> None:
    stats, pcapng, _ = _run(tmp_path, "one", 1, engine.Options(), False)
    payloads = _udp_payloads(pcapng, tmp_path)
    big = {(p[0], len(p)) for p in payloads if len(p) > 60}
    assert big == COMPLETE  # 8: given up after 61 s; 10: the capture ended first
    assert sum(len(p) == 60 for p in payloads) == 14  # the whole ESP packets between fragments
    assert (stats.esp, stats.decrypted, stats.ah, stats.ah_verified) == (23, 23, 1, 1)
    assert stats.frames == 129 and stats.other == 129 - 23 - 1


@pytest.mark.parametrize(("jobs", "per_job", "mark_every", "keep_jsonl"), [
    (2, 1, 1, True),  # one bound
    (2, 4, 512, False),  # lazy bounds (pcap records guessed, checked)
    (3, 8, 1, True),  # 24 chunks: datagrams over several bounds
    (2, 40, 1, False),  # ~ a frame a chunk
    (3, 40, 512, True),
])
def test_split_run_equals_one_process(tmp_path: Path, monkeypatch, jobs: int, per_job: int, mark_every: int,
                                      keep_jsonl: bool) -> None:
    monkeypatch.setattr(engine, "CHUNK_MIN_BYTES", 1)
    monkeypatch.setattr(engine, "MAX_CHUNKS_PER_JOB", per_job)
    opts = dict(keep_other=keep_jsonl)
    s1, p1, j1 = _run(tmp_path, "one", 1, engine.Options(**opts), keep_jsonl)
    s2, p2, j2 = _run(tmp_path, "split", jobs, engine.Options(**opts), keep_jsonl, parallel_min_bytes=0,
                      mark_every=mark_every)
    assert s2.jobs == jobs
    assert p2 == p1
    assert j2 == j1
    a, b = dataclasses.asdict(s1), dataclasses.asdict(s2)
    for k in SPLIT_ONLY:
        a.pop(k), b.pop(k)
    for d in (a, b):  # SaStats.top: the highest sequence number the general path saw (not output;
        for _, sa in d["per_sa"]:  # a chunk's first packet of an SA takes that path)
            sa.pop("top")
    assert b == a
    assert s2.reconciled_chunks >= 1  # a chunk ran again with the datagrams in flight at its start
    assert _outcome(s2, load_keystore(KEYS), [str(KEYS)]) == _outcome(s1, load_keystore(KEYS), [str(KEYS)]) == 0


@pytest.mark.parametrize(("cap", "keys"), [
    ("ipv6-ext/ipv6-ext-esp.pcap", "ipv6-ext/ipv6-ext-esp.keys.json"),  # 5 of 6 decrypted at -j 2 before
    ("ah/ah-frag.pcap", "ah/ah-frag.keys.json"),
    ("ah/ah-frag-options.pcap", "ah/ah-v4.keys.json"),  # options in the first fragment only; last first
])
def test_other_fragmented_captures_split_a_frame_a_chunk(tmp_path: Path, monkeypatch, cap: str, keys: str) -> None:
    monkeypatch.setattr(engine, "CHUNK_MIN_BYTES", 1)
    monkeypatch.setattr(engine, "MAX_CHUNKS_PER_JOB", 8)
    got = []
    for jobs in (1, 2):
        out, jl = tmp_path / f"{jobs}.pcapng", tmp_path / f"{jobs}.jsonl"
        s = engine.run(DATA / cap, load_keystore(DATA / keys), out=str(out), jsonl_out=str(jl),
                       opts=engine.Options(keep_other=True), jobs=jobs, parallel_min_bytes=0, mark_every=1)
        got.append((out.read_bytes(), jl.read_bytes(), s.decrypted, s.ah_verified, s.other, s.kept))
    assert got[1] == got[0]
    assert got[0][2] + got[0][3] > 0


def _frames() -> list:
    with open_capture(CAP) as r:
        return list(r)


def _seen(packets: list) -> list:
    return [(type(p).__name__, p.frame, getattr(p, "data", None), getattr(p, "reason", None)) for p in packets]


def _state(items) -> list:
    return [(k, p.first_ts, p.first_frame, dict(p.parts), p.total) for k, p in items]


def _snapshot(rep: FragReport | None) -> FragReport | None:
    return None if rep is None else copy.deepcopy(rep)


def test_carried_through_is_what_one_pass_holds() -> None:
    """For every stretch frames[k:m] (up to 24 frames): a reassembler seeded with what one pass
    holds at k decodes it as one pass does; and where carried_through says a fresh one's result
    stands, its decodes are one pass's and the state it returns is one pass's at m."""
    frames = _frames()
    one = Decoder()
    seq_out, held = [], [[]]
    for raw in frames:
        seq_out.append(_seen(one.decode_all(raw)))
        held.append(_state(one.reassembler.pending.items()))
    carries = []  # the one-pass reassembler's own records at k (for seeding)
    one = Decoder()
    for raw in frames:
        carries.append(copy.deepcopy(list(one.reassembler.pending.items())))
        one.decode_all(raw)
    stood = redone = 0
    for k in range(len(frames)):
        carry = carries[k]
        seeded = Decoder()
        seeded.reassembler.seed(carry)
        fresh = Decoder()
        for m in range(k + 1, min(k + 24, len(frames)) + 1):
            raw = frames[m - 1]
            assert _seen(seeded.decode_all(raw)) == seq_out[m - 1]
            assert _state(seeded.reassembler.pending.items()) == held[m]
            fresh.decode_all(raw)
            rep = _snapshot(fresh.reassembler.report())
            after = carried_through(copy.deepcopy(carry), rep)
            if after is None:
                redone += 1
                continue
            if carry and rep is not None and rep.adds:
                stood += 1
            again = Decoder()
            assert [x for raw2 in frames[k:m] for x in _seen(again.decode_all(raw2))] == \
                [x for i in range(k, m) for x in seq_out[i]]
            assert _state(after) == held[m]
    assert stood and redone  # both ways taken on this capture
