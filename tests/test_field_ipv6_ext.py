"""IPv6 extension headers in front of IKE and ESP (tests/data/ipv6-ext, made from the healthy-gcm
sample: Hop-by-Hop, Destination Options, Routing and Fragment headers in the RFC 8200 §4.1
chains), display filters against tshark.

The class: ``ipv6.nxt`` gave the upper-layer protocol (17, 50, 51) where tshark gives the fixed
header's Next Header field, the first extension header's number (0, 43, 44, 60), so
``ipv6.nxt == 0`` found nothing and ``ipv6.nxt == 17`` found frames tshark does not; tshark's
per-header fields (``ipv6.hopopts.nxt``, ``ipv6.dstopts``, ...) were unknown fields. The same
for decrypted inner IPv6 packets (``ipv6-ext-inner.pcap``): their ``ipv6.nxt`` was the walked
transport protocol and their extension headers were not there at all; an inner datagram whose
Fragment header sits behind Hop-by-Hop was never reassembled, and transport-mode ESP carrying a
Destination Options header (RFC 4303 §3.1.1) showed no UDP behind it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import DATA, needs_tshark, public

from ipsecscope.decode.ip import v6_header_chain
from ipsecscope.filtering import matches, source_of
from ipsecscope.model.filter import compile_filter
from ipsecscope.session import Session

CAP = DATA / "ipv6-ext" / "ipv6-ext.pcap"
FRAG = DATA / "ipv6-ext" / "ipv6-frag-ike.pcap"  # IKE_AUTH in IPv6 fragments: first fragments are OTHER rows
ZEEK = public("zeek/ip6_esp.pcap")  # 120 ESP, and an MLDv2 report behind Hop-by-Hop (an OTHER row)
# decrypted inner IPv6 behind the same chains (keys: .esp_sa for tshark, .keys.json for ipsecscope)
INNER = DATA / "ipv6-ext" / "ipv6-ext-inner.pcap"
# broken chains (MALFORMED rows): tshark still shows the headers it could start (frames 10-11)
BAD = DATA / "bad" / "malformed.pcap"
TRIED = {CAP: 10, FRAG: 3, ZEEK: 3, INNER: 15, BAD: 2}  # (field, value) pairs below that match frames: not vacuous
FIELDS = ("ipv6.nxt", "ipv6.hopopts.nxt", "ipv6.dstopts.nxt", "ipv6.routing.nxt", "ipv6.fraghdr.nxt")


@functools.cache
def tshark_values(cap: Path = CAP) -> dict[int, tuple[list[int], ...]]:
    """frame -> every value of each of FIELDS (one tshark run)."""
    args = ["tshark", "-n", "-r", str(cap), "-o", "esp.enable_encryption_decode:TRUE", "-T", "fields",
            "-E", "occurrence=a", "-E", "aggregator=,", "-e", "frame.number"]
    for f in (*FIELDS, "udp.dstport"):
        args += ["-e", f]
    with tempfile.TemporaryDirectory() as prof:
        if cap.with_suffix(".esp_sa").exists():
            shutil.copy(cap.with_suffix(".esp_sa"), Path(prof) / "esp_sa")
        out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True,
                             env=dict(os.environ, WIRESHARK_CONFIG_DIR=prof)).stdout
    rows = {}
    for line in out.splitlines():
        n, *cols = line.split("\t")
        rows[int(n)] = tuple([int(x) for x in c.split(",") if x] for c in cols)
    return rows


@functools.cache
def session(live: bool, cap: Path = CAP) -> Session:
    s = Session(max_rows=10**6) if live else Session()
    if cap.with_suffix(".keys.json").exists():
        s.add_key_files([cap.with_suffix(".keys.json")])
    s.load(cap)
    return s


def _theirs(col: int, pred, cap: Path = CAP) -> list[int]:
    return [n for n, v in sorted(tshark_values(cap).items()) if pred(v[col])]


@needs_tshark
@pytest.mark.parametrize(("live", "cap"), [(False, CAP), (True, CAP), (False, FRAG), (False, ZEEK), (False, INNER),
                                          (True, INNER), (False, BAD)],
                         ids=["rowstore", "live", "fragments", "zeek-mld", "inner", "inner-live", "malformed"])
def test_extension_header_fields_find_the_frames_tshark_finds(live: bool, cap: Path) -> None:
    """Also where the IPv6 packet is a fragment held for reassembly (an OTHER row: tshark's
    ipv6.nxt 44 there, not the UDP behind the Fragment header) or not IPsec at all (Zeek's MLDv2
    report: ipv6.nxt 0, ipv6.hopopts.nxt 58)."""
    src = source_of(session(live, cap))
    tried = 0
    for col, field in enumerate(FIELDS):
        for value in (0, 17, 43, 44, 50, 58, 60):
            ours = matches(compile_filter(f"{field} == {value}"), src)
            assert ours == _theirs(col, lambda v, value=value: value in v, cap), (field, value)
            tried += bool(ours)
        assert matches(compile_filter(field), src) == _theirs(col, bool, cap), field
        head = field.rsplit(".", 1)[0]
        if head != "ipv6":
            assert matches(compile_filter(f"!{head}"), src) == _theirs(col, lambda v: not v, cap), head
    if cap in (CAP, INNER):
        assert matches(compile_filter("ipv6.nxt != 17 && udp"), src) == [
            n for n, v in sorted(tshark_values(cap).items()) if v[0] and 17 not in v[0] and v[-1]]
    if cap == INNER:  # UDP behind a reassembled inner fragment and behind transport mode's Destination Options
        assert matches(compile_filter("udp.dstport"), src) == _theirs(len(FIELDS), bool, cap)
    assert tried >= TRIED[cap]


def test_ipv6_nxt_is_the_fixed_headers_field() -> None:
    """Frame 2 (Hop-by-Hop, then UDP): ipv6.nxt 0, ipv6.hopopts.nxt 17; frame 1 (no extension
    header): 17; frame 7 (HbH, Routing, DstOpts): 0, then 43, 60, 17 along the chain."""
    src = source_of(session(False))
    assert 2 in matches(compile_filter("ipv6.nxt == 0 && ipv6.hopopts.nxt == 17"), src)
    assert 2 not in matches(compile_filter("ipv6.nxt == 17"), src)
    assert 1 in matches(compile_filter("ipv6.nxt == 17 && !ipv6.hopopts"), src)
    assert 7 in matches(compile_filter("ipv6.hopopts.nxt == 43 && ipv6.routing.nxt == 60 && ipv6.dstopts.nxt == 17"),
                        src)


def test_header_chain_never_reads_past_the_bytes() -> None:
    """Each cut of frame 7's IPv6 packet inside its chain keeps only the headers wholly there."""
    raw = Path(CAP).read_bytes()
    pos = 24
    for _ in range(6):  # to frame 7
        pos += 16 + int.from_bytes(raw[pos + 8:pos + 12], "little")
    frame = raw[pos + 16:pos + 16 + int.from_bytes(raw[pos + 8:pos + 12], "little")]
    whole = v6_header_chain(frame, 14)
    assert whole == ((0, 43), (43, 60), (60, 17))
    for cut in range(14 + 40, 14 + 40 + 24):
        got = v6_header_chain(frame[:cut], 14)
        assert got == whole[:(cut - 54) // 8], cut
