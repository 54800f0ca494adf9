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
