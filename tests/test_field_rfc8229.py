"""IKEv2 and ESP over TCP (RFC 8229; tests/data/rfc8229, the healthy-gcm sample moved onto one TCP
connection), against tshark: the TCP/IP headers against tshark on the capture itself, the
records against tshark on the sample's UDP frames they came from.

The class: rows of an RFC 8229 connection carry ports, as UDP-encapsulated rows do, and display
filters took every row with ports for UDP: ``udp.port == 4500`` and ``udpencap`` found the TCP
frames, ``ip.proto == 17`` too, ``tcp`` / ``tcp.port`` / ``ip.proto == 6`` missed them; then
``tcp.flags`` and its bits were not read on those rows at all (tshark shows the carrying segment's).
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, SAMPLES, needs_tshark
from conftest import field_cli as cli

from ipsecscope.filtering import matches, source_of
from ipsecscope.model.filter import compile_filter
from ipsecscope.session import Session

CAP = DATA / "rfc8229" / "ikev2-tcp.pcap"
SAMPLE = SAMPLES / "healthy-gcm"
SHIFT = 3  # frame n >= 6 of CAP is the sample's frame n - 3 (make.py)


def _fields(cap: Path, *fields: str) -> dict[int, tuple[str, ...]]:
    args = ["tshark", "-n", "-r", str(cap), "-T", "fields", "-E", "occurrence=f", "-e", "frame.number"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    return {int(c[0]): tuple(c[1:]) for c in (line.split("\t") for line in out.splitlines())}


@functools.cache
def tshark_l4() -> dict[int, tuple[str, ...]]:
    return _fields(CAP, "ip.proto", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport", "tcp.flags")


@functools.cache
def session(live: bool) -> Session:
    s = Session(max_rows=10**6) if live else Session()
    s.load(CAP)
    return s


FILTERS = {  # filter -> which frames tshark's fields say it holds for
    "tcp": lambda p, ts, td, us, ud, tf: bool(ts),
    "udp": lambda p, ts, td, us, ud, tf: bool(us),
    "ip.proto == 6": lambda p, ts, td, us, ud, tf: p == "6",
    "ip.proto == 17": lambda p, ts, td, us, ud, tf: p == "17",
    "tcp.port == 4500": lambda p, ts, td, us, ud, tf: "4500" in (ts, td),
    "tcp.srcport == 40000": lambda p, ts, td, us, ud, tf: ts == "40000",
    "udp.port == 4500": lambda p, ts, td, us, ud, tf: "4500" in (us, ud),
    "udpencap": lambda p, ts, td, us, ud, tf: "4500" in (us, ud),
    "udp.port == 500": lambda p, ts, td, us, ud, tf: "500" in (us, ud),
    "tcp.flags": lambda p, ts, td, us, ud, tf: bool(tf),
    "tcp.flags == 0x018": lambda p, ts, td, us, ud, tf: tf == "0x0018",
    "tcp.flags != 0x018": lambda p, ts, td, us, ud, tf: tf not in ("", "0x0018"),
    "tcp.flags.push == 1": lambda p, ts, td, us, ud, tf: bool(tf) and int(tf, 16) & 0x08 != 0,
    "tcp.flags.syn == 0 && tcp.flags.ack": lambda p, ts, td, us, ud, tf: bool(tf) and int(tf, 16) & 0x02 == 0,
    "tcp.flags.fin || tcp.flags.reset == 1": lambda p, ts, td, us, ud, tf: bool(tf),
}


@needs_tshark
@pytest.mark.parametrize("live", [False, True], ids=["rowstore", "live"])
def test_transport_filters_find_the_frames_tshark_finds(live: bool) -> None:
    src = source_of(session(live))
    ts = tshark_l4()
    for flt, pred in FILTERS.items():
        assert matches(compile_filter(flt), src) == [n for n, v in sorted(ts.items()) if pred(*v)], flt
    assert len(matches(compile_filter("tcp && (esp || isakmp)"), src)) == 32


@needs_tshark
def test_records_are_the_samples_datagrams() -> None:
    """Each record is the IKE message or ESP packet of the sample frame it came from: SPIs,
    exchange type and message ID, or SPI and sequence number, as tshark reads that frame."""
    theirs = _fields(SAMPLE / "capture.pcapng", "isakmp.ispi", "isakmp.rspi", "isakmp.exchangetype",
                     "isakmp.messageid", "esp.spi", "esp.sequence")
    rows = {d["frame"]: d for d in map(json.loads, cli("packets", str(CAP), "--json").splitlines())}
    ike = {m["frame"]: m for m in json.loads(cli("summary", str(CAP), "--json"))["ike"]}
    checked = 0
    for n, (ispi, rspi, xchg, mid, spi, seq) in theirs.items():
        ours = n if n <= 2 else n + SHIFT
        if ispi:
            m = ike[ours]
            assert (m["spi_i"], m["spi_r"], m["exchange_type"], m["msg_id"]) == (ispi, rspi, int(xchg), int(mid, 16)), n
        else:
            r = rows[ours]
            assert (r["kind"], int(r["spi"], 16), r["seq"]) == ("ESP", int(spi, 16), int(seq)), n
        checked += 1
    assert checked == 34 and sorted(set(rows) - {n + SHIFT for n in theirs if n > 2} - {1, 2}) == [3, 4, 5]


def test_tcp_records_decrypt_with_the_samples_keys() -> None:
    flows = json.loads(cli("sas", str(CAP), "-k", str(SAMPLE / "keys"), "--json"))["flows"]
    assert sorted((f["packets"], f["decrypted"]) for f in flows) == [(3, 3), (3, 3), (6, 6), (6, 6)]


LOST = DATA / "rfc8229" / "ikev2-tcp-lost.pcap"
OVERLAP = DATA / "rfc8229" / "ikev2-tcp-overlap.pcap"


def _sample_records() -> dict[int, tuple[str, ...]]:
    return _fields(SAMPLE / "capture.pcapng", "isakmp.ispi", "isakmp.exchangetype", "isakmp.messageid",
                   "esp.spi", "esp.sequence")


def _ours(cap: Path, live: bool) -> dict[int, list[tuple]]:
    s = Session(max_rows=10**6) if live else Session()
    s.load(cap)
    rows: dict[int, list[tuple]] = {}
    for r in s.rows:
        rows.setdefault(r.frame, []).append((r.kind, r.spi, r.seq, r.info))
    return rows


@needs_tshark
@pytest.mark.parametrize("live", [False, True], ids=["rowstore", "live"])
def test_lost_segment_records_after_it_on_their_frames(live: bool) -> None:
    """tests/data/rfc8229/ikev2-tcp-lost.pcap: the second half of the IKE_AUTH request's segment
    was never captured, and fewer segments follow it than make a gap a loss before the capture
    ends. The gap is given up at the end: the bytes lost are one malformed mark on the first
    frame after the gap (where tshark says "previous segment not captured"), and every record
    after it is the sample's datagram on the frame it came in (before: 16 of them were lost)."""
    rows = _ours(LOST, live)
    theirs = _sample_records()
    ts_lost = _fields(LOST, "tcp.analysis.lost_segment")
    assert [n for n, (v,) in ts_lost.items() if v] == [8]
    marks = [(n, r[3]) for n, rs in rows.items() for r in rs if r[0] == "MALFORMED"]
    assert marks == [(8, "tcp: RFC 8229 TCP stream gap of 141 bytes at stream offset 141 (lost segment, never "
                         "captured; the 135 bytes of the record it cut dropped); capture ended")]
    for n, (ispi, _xchg, mid, spi, seq) in theirs.items():
        if n <= 2:
            continue
        kinds = [r[0] for r in rows[n + SHIFT]]
        if n == 3:  # the IKE_AUTH request: its record never completed, its first segment is TCP
            assert kinds == ["OTHER"]
        elif ispi:
            assert kinds[0] == "IKE" and rows[n + SHIFT][0][2] == int(mid, 16), n
        else:
            assert (kinds[0], rows[n + SHIFT][0][1], rows[n + SHIFT][0][2]) == ("ESP", int(spi, 16), int(seq)), n
    doc = json.loads(cli("summary", str(LOST), "--json"))
    assert (doc["counts"]["ike"], doc["counts"]["esp"], doc["counts"]["malformed"]) == (15, 18, 1)
    flows = json.loads(cli("sas", str(LOST), "-k", str(SAMPLE / "keys"), "--json"))["flows"]
    assert sorted((f["packets"], f["decrypted"]) for f in flows) == [(3, 3), (3, 3), (6, 6), (6, 6)]


@needs_tshark
def test_overlap_with_other_bytes_is_counted_and_the_first_copy_kept() -> None:
    """tests/data/rfc8229/ikev2-tcp-overlap.pcap: a copy of the IKE_AUTH response's second half
    with 16 other bytes follows it (frame 8, which tshark calls a retransmission). The receiver
    keeps the first copy (RFC 9293 §3.10.7.4): every record is the sample's, and the copy is
    one malformed mark naming where its bytes differ (before: nothing said)."""
    rows = _ours(OVERLAP, False)
    retrans = _fields(OVERLAP, "tcp.analysis.retransmission")
    assert [n for n, (v,) in retrans.items() if v] == [8]
    assert rows[8] == [("MALFORMED", None, None, "tcp: TCP segment overlaps earlier data with different bytes at "
                                                 "stream offset 116; the first copy is kept")]
    records = [r for n, rs in sorted(rows.items()) if n > 5 for r in rs if r[0] in ("IKE", "ESP")]
    assert len(records) == 32
    flows = json.loads(cli("sas", str(OVERLAP), "-k", str(SAMPLE / "keys"), "--json"))["flows"]
    assert sorted((f["packets"], f["decrypted"]) for f in flows) == [(3, 3), (3, 3), (6, 6), (6, 6)]


def test_live_gap_given_up_after_the_timeout() -> None:
    """Live (a growing capture), the lost sample's gap is given up by Session.finish(now) once its
    first waiting segment is LIVE_FRAGMENT_WAIT seconds old, as IP fragments are: the records
    after it become rows of their frames, not at the end of the capture only."""
    from ipsecscope.capture import open_capture
    from ipsecscope.session import LIVE_FRAGMENT_WAIT

    s = Session(max_rows=10**6)
    with open_capture(LOST) as r:
        frames = list(r)
    for raw in frames:
        s.feed(raw)
    # waiting for the gap: the frames from its first waiting segment on are held, so the tracker
    # (and the rows) take nothing after the gap before what the gap holds back
    assert max(r.frame for r in s.rows) == 7
    s.finish(now=frames[7].ts + LIVE_FRAGMENT_WAIT / 2)
    assert max(r.frame for r in s.rows) == 7
    s.finish(now=frames[7].ts + LIVE_FRAGMENT_WAIT + 1)
    rows = [(r.frame, r.kind) for r in s.rows]
    assert (8, "ESP") in rows and (8, "MALFORMED") in rows and (10, "ESP") in rows and (14, "IKE") in rows
    assert s.stats.malformed == {"tcp": 1} and (s.stats.ike, s.stats.esp) == (15, 18)
