"""IP, ESP and AH headers broken the ways tshark still dissects (tests/data/malformed-ip/make.py):
every such frame is counted malformed and visible in every command, and what tshark reads of it
ipsecscope reads too (the fields themselves: tests/test_display_filter_fields.py).

* an IPv4 total length / IPv6 payload length past the frame's end (RFC 791 §3.1, RFC 8200 §3):
  the IKE or ESP packet the frame holds is read (tshark dissects what is there), with the mark;
* an ESP header cut short (RFC 4303 §2): the SPI when its 4 octets are there;
* AH with Payload Len 0 (RFC 4302 §2.2): its SPI;
* an IPv4 header length under 20 (RFC 791 §3.1): the ip layer and its version, no address.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import DATA, ROOT

from ipsecscope.filtering import matches, source_of
from ipsecscope.model.filter import compile_filter
from ipsecscope.session import Session

CAP = DATA / "malformed-ip" / "malformed-ip.pcap"
# frame -> layer of its malformed mark (frame 9 is sound)
MARKS = {1: "ip", 2: "ip", 3: "ip", 4: "esp", 5: "esp", 6: "esp", 7: "ah", 8: "ip"}


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ipsecscope", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_rows_and_counters() -> None:
    s = Session.from_files([CAP])
    bad = {r.frame: r for r in s.rows if r.kind == "MALFORMED"}
    assert {f: r.info.partition(":")[0] for f, r in bad.items()} == MARKS
    assert s.stats.malformed == {"ip": 4, "esp": 3, "ah": 1}
    read = {(r.frame, r.kind) for r in s.rows if r.kind != "MALFORMED"}
    # frames 1-3: the packet read from what is there, beside the mark
    assert read == {(1, "IKE"), (2, "ESP"), (3, "ESP"), (9, "IKE")}
    esp = {r.frame: (r.spi, r.seq) for r in s.rows if r.kind == "ESP"}
    assert esp == {2: (0x0A0B0C0D, 7), 3: (0x0A0B0C0D, 7)}
    assert {f: r.spi for f, r in bad.items()} == {1: None, 2: None, 3: None, 4: 0x1001, 5: None, 6: 0x2002,
                                                  7: 0xAAA, 8: None}
    # frame 1's IKE_SA_INIT request is answered by frame 9: one IKE SA, not a lost request
    assert len(s.table.ike_sas) == 1


def test_filters_find_what_tshark_finds() -> None:
    src = source_of(Session.from_files([CAP]))

    def m(f: str) -> list[int]:
        return matches(compile_filter(f), src)

    assert m("isakmp") == [1, 9] and m("udp.port == 500") == [1, 9]
    assert m("esp") == [2, 3, 4, 5, 6] and m("esp.spi") == [2, 3, 4, 6]
    assert m("esp.spi == 0x1001") == [4] and m("esp.sequence") == [2, 3]
    assert m("ah") == [7] and m("ah.spi == 0xaaa") == [7] and not m("ah.sequence")
    assert m("ipsecscope.kind == \"MALFORMED\"") == list(MARKS)
    # frame 8's IPv4 header (IHL 3) gives no address, but tshark shows the layer and its version
    assert 8 in m("ip") and 8 in m("ip.version == 4") and 8 not in m("ip.src") and m("ipv6") == [3]


def test_every_command_counts_them(tmp_path: Path) -> None:
    doc = json.loads(run("summary", CAP, "--json").stdout)
    assert doc["counts"]["malformed"] == len(MARKS) and doc["malformed"]["by_layer"] == {"ip": 4, "esp": 3, "ah": 1}
    assert doc["counts"]["ike"] == 2 and doc["counts"]["esp"] == 2
    r = run("sas", CAP)
    assert r.returncode == 0 and "malformed: 8 (ah 1, esp 3, ip 4) of 9 frames" in r.stdout, r.stdout + r.stderr
    doc = json.loads(run("findings", CAP, "--json").stdout)
    mal = [f for f in doc["findings"] if f["code"] == "CAPTURE-MALFORMED"]
    assert mal and mal[0]["title"].startswith("8 malformed"), doc["findings"]
    assert not [f for f in doc["findings"] if f["code"] == "IKE-NO-RESPONSE"]
    lines = {d["frame"]: d for d in map(json.loads, run("packets", CAP, "--json").stdout.splitlines())}
    assert lines[1]["kind"] == "IKE" and "[malformed ip: IPv4 total length 2000" in lines[1]["info"]
    assert lines[3]["kind"] == "ESP" and "[malformed ip: IPv6 payload length 1500" in lines[3]["info"]
    r = run("decrypt", CAP, "-o", tmp_path / "o.pcapng")
    # no keys: the two ESP packets read past their IP length are ESP to decrypt too, no traceback
    assert r.returncode == 3 and "2 ESP" in r.stderr and "Traceback" not in r.stderr, r.stderr
