"""More public captures nobody here made (tests/data/ndpi/derived: more of nDPI's real NAT-T
client capture; provenance in each folder), and the classes of disagreement they showed:

* A request seen once and never retransmitted, unanswered, is no dead or unreachable peer: a
  requester retransmits until answered or it gives up, and declares its peer dead only after
  repeated attempts (RFC 7296 §2.1, §2.4).
* A peer whose own NAT_DETECTION_SOURCE_IP and the other peer's NAT_DETECTION_DESTINATION_IP both
  fail to match the capture is not shown "as the other peer sees it": the destination hash says
  the other peer sees another address (RFC 7296 §2.23).
* Two AH flows paired without keys are an AH CHILD SA made of AH traffic, not "ESP flows"
  (nDPI's ah.pcapng; ndpiReader's expected flows as the oracle).
* A CHILD SA whose traffic goes one way while the other peer sends ESP back on another CHILD SA
  of the same pair is not "nothing back, filtered or not received": Arkime's Fortinet IKEv1 capture
  negotiates two CHILD SAs at once and one peer answers on one of them only.
* One manually keyed SA used by a sender toward several destinations has one sequence counter
  (tcpdump's OSPFv3_with_AH, RFC 4552 §7): the numbers one destination misses are the other's, not
  loss; a multicast destination answers nobody; the same SPI both ways is one SA used both ways.
* Openswan's KLIPS test inputs (tests/data/openswan-klips) decrypt, with the keys their scripts gave
  KLIPS, to the packets KLIPS's own cleartext-side tcpdump printed, and to what tshark shows: ESP
  in IP fragments, ESP in UDP, 3DES/AES-128 with HMAC-MD5/SHA1-96, 3DES with no integrity, and ESP
  carrying IPComp (RFC 3173), opened before the inner packet is read, as tshark and KLIPS do.
* An INVALID_KE_PAYLOAD notify whose data cannot hold the 2-octet accepted group (RFC 7296
  §3.10.1) makes its message malformed, as tshark says, and is still read as the refusal it is
  (Openswan's pluto unit test lp08: its responder sent one with no data).
* An INVALID_KE_PAYLOAD whose retry the capture cannot show (it ends right after the answer, or it
  holds nothing the initiator sent) is no failed negotiation: an initiator retries at once or
  gives up (RFC 7296 §1.2), and only a capture that runs on can tell which.

tests/test_field_captures.py compares every capture of these folders with tshark frame by frame,
and tests/test_public_corpus.py loads each; this file holds what a capture taught beyond that.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest
from conftest import DATA, ROOT, needs_tshark, public, public_dir
from conftest import field_cli as cli

NDPI = public_dir("ndpi")  # third-party: materialised at test time (tests/public_data.py)
# two whole sessions to two gateways; the first ends with the gateway's INFORMATIONAL, seen once
SESSIONS = NDPI / "derived" / "ipsec_isakmp_esp-287-324.pcap"
# three IKE SAs to one gateway; the second's IKE_SA_INIT retry (with the COOKIE) is seen once
RETRY_ONCE = NDPI / "derived" / "ipsec_isakmp_esp-456-466.pcap"


def findings(cap: Path) -> list[dict]:
    return json.loads(cli("findings", str(cap), "--json"))["findings"]


@functools.cache
def tshark_ike(cap: Path) -> list[tuple[int, float, str, str, str, str]]:
    """(frame, time, src, SPIi, exchange type, message ID) of every IKE message, as tshark reads it."""
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", "isakmp", "-T", "fields", "-e", "frame.number",
                          "-e", "frame.time_epoch", "-e", "ip.src", "-e", "isakmp.ispi", "-e", "isakmp.exchangetype",
                          "-e", "isakmp.messageid"], capture_output=True, text=True, timeout=60, check=True).stdout
    return [(int(n), float(t), s, i, x, m) for n, t, s, i, x, m in (line.split("\t") for line in out.splitlines())]


@needs_tshark
def test_an_informational_seen_once_is_no_dead_peer():
    """Frame 19 (the capture's 305th): the gateway 109.237.187.225 sends an INFORMATIONAL request
    13 s after the session's last ESP, once; tshark shows no copy of it and no answer, then the next
    session (to another gateway) 1477 s later. A gateway whose peer does not answer retransmits
    (strongSwan five times over minutes): one copy, never repeated, means it let the exchange go or
    the capture missed the rest. It was 'IKE-DEAD-PEER: 192.168.2.100 stopped answering' (an
    error); it is information that says so."""
    ike = tshark_ike(SESSIONS)
    (info,) = [m for m in ike if m[0] == 19]
    assert (info[2], info[4], info[5]) == ("109.237.187.225", "37", "0x00000000")
    assert [m for m in ike if m[3] == info[3] and m[4] == "37"] == [info]  # one copy, no answer
    assert ike[-1][1] - info[1] > 1000  # the capture runs on
    fs = findings(SESSIONS)
    assert not [f for f in fs if f["code"] == "IKE-DEAD-PEER" or f["severity"] == "error"]
    (f,) = [f for f in fs if f["code"] == "IKE-NO-RESPONSE"]
    assert f["severity"] == "info" and f["frames"] == [19]
    assert "sent once and never retransmitted" in f["title"] and "RFC 7296 §2.1, §2.4" in f["explanation"]
    assert "does not show 192.168.2.100 down" in f["explanation"]


@needs_tshark
def test_an_ike_sa_init_retry_seen_once_is_no_unreachable_peer():
    """Frames 5-7 (460-462): 192.168.2.100's IKE_SA_INIT, the gateway's COOKIE 22 ms later, the
    retry with the cookie, then nothing for that SPI; 6 min later the client starts over (frame 8)
    and the same gateway answers. The gateway was reachable and running IKE 6 ms before the retry:
    'IKE-NO-RESPONSE ... unreachable, not running IKE' as an error was false."""
    ike = tshark_ike(RETRY_ONCE)
    spi = ike[4][3]
    assert [(m[0], m[2]) for m in ike if m[3] == spi] == [(5, "192.168.2.100"), (6, "109.237.187.227"),
                                                          (7, "192.168.2.100")]
    assert any(m[2] == "109.237.187.227" and m[0] > 7 for m in ike)
    fs = findings(RETRY_ONCE)
    (f,) = [f for f in fs if f["code"] == "IKE-NO-RESPONSE"]
    assert f["severity"] == "info" and f["frames"] == [7] and "IKE_SA_INIT" in f["title"]
    assert "started a new IKE SA with 109.237.187.227" in f["explanation"] and "(frame 8)" in f["explanation"]
    assert "unreachable" not in f["explanation"]


def nat_hashes(cap: Path, frame: int) -> tuple[bool, bool]:
    """Whether the NAT_DETECTION_SOURCE_IP / _DESTINATION_IP of an IKE_SA_INIT request match its
    source / destination as captured: SHA-1(SPIi | SPIr | IP | port), RFC 7296 §2.23."""
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", f"frame.number == {frame}", "-T", "fields",
                          "-E", "aggregator=;", "-e", "isakmp.ispi", "-e", "isakmp.rspi", "-e", "isakmp.notify.msgtype",
                          "-e", "isakmp.notify.data", "-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst",
                          "-e", "udp.dstport"], capture_output=True, text=True, timeout=60, check=True).stdout
    spi_i, spi_r, types, data, src, sport, dst, dport = out.strip("\n").split("\t")
    notes = dict(zip(types.split(";"), data.split(";"), strict=True))

    def h(ip: str, port: str) -> str:
        return hashlib.sha1(bytes.fromhex(spi_i + spi_r) + ipaddress.ip_address(ip).packed
                            + int(port).to_bytes(2, "big")).hexdigest()

    return notes["16388"] == h(src, sport), notes["16389"] == h(dst, dport)


@needs_tshark
def test_both_nat_hashes_failing_is_not_the_other_peers_view():
    """The client's IKE_SA_INIT (frame 3, with the cookie) carries a source hash that does not match
    192.168.2.100:10500, and the gateway's answer a destination hash that does not match it either:
    the gateway sees the client elsewhere. 'the gateway sees it as 192.168.2.100:10500' and 'a NAPT
    rewrote [the port]' (said when the capture is on the NAT's public side) were false; the client is
    behind a NAT and the capture does not show the address the gateway sees."""
    assert nat_hashes(SESSIONS, 3) == (False, True)  # the client's own source hash fails
    assert nat_hashes(SESSIONS, 4) == (True, False)  # the gateway's destination hash for it fails too
    for f in findings(SESSIONS):
        if f["code"] == "IKE-NAT-DETECTED":
            assert f["title"].endswith("initiator 192.168.2.100 is behind a NAT")
            assert "sees it as" not in f["explanation"] and "a NAPT rewrote it" not in f["explanation"]
            assert "the address the other peer sees is not visible here" in f["explanation"]
    assert "seen as" not in cli("sas", str(SESSIONS))


AH = NDPI / "ah.pcapng"


@needs_tshark
def test_ah_flows_paired_without_keys_are_an_ah_child_sa():
    """nDPI's expected output: one IKE flow (2 + 2 packets on UDP 500) and one AH flow (1 + 1
    packets) between 10.2.3.2 and 10.3.4.4; tshark dissects ip:ah:icmp with two SPIs. The inferred
    CHILD SA pairing them is AH, created by AH traffic, and its reason names AH flows (it said
    'ESP flows' and 'by ESP traffic': no ESP is in the capture)."""
    out = (NDPI / "ah.pcapng.out").read_text()
    assert re.search(r"UDP 10\.2\.3\.2:500 <-> 10\.3\.4\.4:500 .*\[2 pkts/770 bytes <-> 2 pkts/722 bytes\]", out)
    assert re.search(r"AH 10\.2\.3\.2:0 <-> 10\.3\.4\.4:0 .*\[1 pkts/138 bytes <-> 1 pkts/138 bytes\]", out)
    ts = subprocess.run(["tshark", "-n", "-r", str(AH), "-Y", "ah", "-T", "fields", "-e", "frame.protocols",
                         "-e", "ah.spi"], capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert ts == ["eth:ethertype:ip:ah:icmp:data", "0x604816f6", "eth:ethertype:ip:ah:icmp:data", "0xaf8683ef"]
    doc = json.loads(cli("sas", str(AH), "--json"))
    (child,) = doc["child_sas"]
    assert (child["protocol"], child["spi_i"], child["spi_r"]) == ("AH", "0xaf8683ef", "0x604816f6")
    assert child["created_by"] == "AH traffic"
    assert child["inferred_reason"].startswith("paired: AH flows in opposite directions")
    assert "ESP" not in cli("sas", str(AH))


KLIPS = public_dir("openswan-klips")  # third-party: materialised at test time (tests/public_data.py)
KLIPS_KEYS = DATA / "openswan-klips" / "derived"  # ours: each test's `ipsec spi` keys as esp_sa tables
# capture -> the KLIPS test whose cleartext-side tcpdump output is the expected result
KLIPS_TESTS = {"espfrags1": "west-bigicmp-01.spi1-cleartext.txt",
               "08-sunrise-sunset-esp-sha1": "west-icmp-04.spi1-cleartext.txt",
               "08-sunrise-sunset-aes128": "west-icmp-06.spi1-cleartext.txt",
               "08-sunrise-sunset-udpesp-ping": "west-natt-01.spi1-cleartext.txt",
               "08-sunrise-sunset-esp-noauth": "west-spi-01.spi1-output.txt"}
ECHO = re.compile(r"192\.0\.2\.1 > 192\.0\.1\.1: (ICMP echo request|icmp \d+: echo request)")


def tshark_inner(cap: Path, keys: Path, tmp_path: Path) -> dict[int, tuple[str, str, str]]:
    """frame -> (inner source, inner destination, ICMP type) as tshark decrypts it with ``keys``."""
    shutil.copy(keys, tmp_path / "esp_sa")
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-o", "esp.enable_encryption_decode:TRUE", "-Y", "esp",
                          "-T", "fields", "-e", "frame.number", "-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type"],
                         env={**os.environ, "WIRESHARK_CONFIG_DIR": str(tmp_path)}, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    rows = {}
    for line in out.splitlines():
        n, src, dst, icmp = line.split("\t")
        rows[int(n)] = (src.split(",")[-1], dst.split(",")[-1], icmp)
    return rows


@needs_tshark
@pytest.mark.parametrize("name", sorted(KLIPS_TESTS))
def test_klips_esp_decrypts_to_what_klips_and_tshark_show(name, tmp_path):
    """Each ESP packet decrypts (ICV verified where the SA has one) to an IPv4 ICMP echo request
    192.0.2.1 -> 192.0.1.1, as many as KLIPS's cleartext-side tcpdump printed, and the same frames
    and inner packets tshark shows with the same keys (espfrags1: reassembled from IP fragments)."""
    from ipsecscope import api

    cap = KLIPS / f"{name}.pcap"
    keys = KLIPS_KEYS / f"{name}.esp_sa"
    want = len(ECHO.findall((KLIPS / KLIPS_TESTS[name]).read_text()))
    dec = list(api.iter_decrypted(cap, [keys]))
    assert [d.status for d in dec] == ["ok"] * want
    ours = {}
    for d in dec:
        ip = d.ip_packet()
        assert d.next_header == 4 and ip[9] == 1
        ours[d.frame] = (".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20])), str(ip[(ip[0] & 15) * 4]))
    assert ours == tshark_inner(cap, keys, tmp_path)
    assert set(ours.values()) == {("192.0.2.1", "192.0.1.1", "8")}


IPCOMP = KLIPS / "08-east-west-esp-ipcomp.pcap"


def test_klips_esp_with_ipcomp_decrypts_to_a_deflated_ip_packet():
    """ESP carrying IPComp (next header 108, RFC 3173 §2.1: next header, flags, CPI, then the
    DEFLATE-compressed datagram, RFC 2394): each of the 8 packets decrypts, its IPComp header says
    IPv4 inside, and the payload inflates to the echo request KLIPS printed."""
    from ipsecscope import api

    want = len(ECHO.findall((KLIPS / "west-icmp-03.spi1-cleartext.txt").read_text()))
    dec = list(api.iter_decrypted(IPCOMP, [KLIPS_KEYS / "08-east-west-esp-ipcomp.esp_sa"]))
    assert [d.status for d in dec] == ["ok"] * want == ["ok"] * 8
    for d in dec:
        assert d.next_header == 108 and d.inner is not None
        nh, cpi = d.inner[0], int.from_bytes(d.inner[2:4], "big")
        ip = zlib.decompress(d.inner[4:], -15)
        assert (nh, cpi, ip[9], ip[12:16], ip[16:20]) == (4, 0x5678, 1, bytes([192, 0, 2, 1]), bytes([192, 0, 1, 1]))


@needs_tshark
def test_klips_esp_with_ipcomp_shows_the_inner_packet_as_tshark(tmp_path):
    """The packet list, its display filter and the CHILD SA's mode look through IPComp, as tshark
    and KLIPS do: each row is the ICMP echo request inside (it was 'ESP seq 1 ▸ 108' and no inner
    field matched), and the SA is tunnel mode (the IPComp header's next header is 4; it was
    'transport', from ESP's next header 108)."""
    keys = KLIPS_KEYS / "08-east-west-esp-ipcomp.esp_sa"
    theirs = tshark_inner(IPCOMP, keys, tmp_path)
    assert set(theirs.values()) == {("192.0.2.1", "192.0.1.1", "8")}
    rows = [json.loads(line) for line in cli("packets", str(IPCOMP), "-k", str(keys), "--json").splitlines()]
    ours = {r["frame"]: (r["inner"]["src"], r["inner"]["dst"], str(r["inner"]["icmp_type"])) for r in rows}
    assert ours == theirs
    assert len(cli("packets", str(IPCOMP), "-k", str(keys), "-Y", "icmp.type == 8 && ip.src == 192.0.2.1",
                   "--json").splitlines()) == 8
    (child,) = json.loads(cli("sas", str(IPCOMP), "-k", str(keys), "--json"))["child_sas"]
    assert child["mode"] == "tunnel"


@needs_tshark
@pytest.mark.parametrize("gz", [False, True], ids=["fast", "general"])
def test_klips_esp_with_ipcomp_decrypts_to_the_inner_packet_in_the_output(tmp_path, gz):
    """decrypt -o writes the datagram IPComp compressed (RFC 3173 §2), not its DEFLATE stream
    behind a made-up IP header with protocol 108: tshark reads each output packet as the ICMP echo
    request it shows inside the ESP, on both of decrypt's paths (a gzipped capture takes the
    general one, which reads records in order instead of by layout)."""
    import gzip

    keys = KLIPS_KEYS / "08-east-west-esp-ipcomp.esp_sa"
    cap = IPCOMP
    if gz:
        cap = tmp_path / "ipcomp.pcap.gz"
        cap.write_bytes(gzip.compress(IPCOMP.read_bytes()))
    out = tmp_path / "clear.pcapng"
    cli("decrypt", str(cap), "-k", str(keys), "-o", str(out))
    rows = subprocess.run(["tshark", "-n", "-r", str(out), "-T", "fields", "-e", "ip.proto", "-e", "ip.src",
                           "-e", "ip.dst", "-e", "icmp.type"], capture_output=True, text=True, timeout=60,
                          check=True).stdout.splitlines()
    assert rows == ["1\t192.0.2.1\t192.0.1.1\t8"] * 8


def test_ipcomp_that_is_not_deflate_or_does_not_inflate_is_left_as_it_is():
    """LZS (CPI 3) is not opened, nor a payload that is no DEFLATE stream, nor one inflating past
    the largest IP datagram: the record stays the IPComp payload's."""
    from ipsecscope.decode.ipcomp import ipcomp_open

    ip = bytes.fromhex("4500001c0000400040010000c0000201c0000101") + bytes(8)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = comp.compress(ip) + comp.flush()
    assert ipcomp_open(bytes([4, 0, 0, 2]) + body) == (ip, 4)
    assert ipcomp_open(bytes([4, 0, 0, 3]) + body) is None  # LZS
    assert ipcomp_open(bytes([4, 0, 0x56, 0x78]) + b"\xff" * 40) is None
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    assert ipcomp_open(bytes([4, 0, 0, 2]) + bomb.compress(bytes(70000)) + bomb.flush()) is None


@needs_tshark
def test_one_way_sa_whose_peer_answers_on_a_sibling_sa():
    """Arkime's IKEv1.pcap: two Quick Modes at once (frames 8 and 9), then 2003:51:6012::4 sends 74
    packets on each of its two outbound SAs and 2003:51:6012::2 sends 148 on one (tshark's count).
    One of ::4's SAs has its reverse unused, but ::2 is up and answering: the finding says so and
    names that SPI, and no longer offers 'does not receive them (filtered)' or 'the capture sees
    only one direction'. Which of ::4's SAs it is is not known without keys (tests/test_inference_order.py)."""
    cap = ARKIME_V1
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", "esp", "-T", "fields", "-e", "ipv6.src", "-e", "esp.spi"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    counts = {(a, b): out[1::2].count(b) for a, b in zip(out[0::2], out[1::2], strict=True)}
    assert counts == {("2003:51:6012::2", "0x3d71315a"): 148, ("2003:51:6012::4", "0x8905e940"): 74,
                      ("2003:51:6012::4", "0xe8f1f49c"): 74}
    (f,) = [f for f in findings(cap) if f["code"] == "ESP-ONE-WAY"]
    assert "0x8905e940 (74 packets)" in f["explanation"] and "0x3d71315a (148 packets)" in f["explanation"]
    assert f["title"].endswith("has nothing back; 2003:51:6012::2 sends on 1")
    assert "filtered" not in f["explanation"] and "sees only one direction" not in f["explanation"]


OSPF = public("tcpdump/OSPFv3_with_AH.pcap")  # third-party: materialised at test time (tests/public_data.py)


@needs_tshark
def test_one_sa_toward_several_destinations_has_one_counter():
    """OSPFv3 with AH (RFC 4552: one manually keyed SA, SPI 0x100, for the link): each router sends
    hellos to ff02::5 and updates to its neighbour from one counter, so per sender tshark's AH
    sequence numbers run 19..50 and 13..41 once each across both destinations: nothing is lost.
    It was 4 ESP-SEQ-GAP warnings (28 'lost'), 'One-way ESP' to the multicast group and one-way
    warnings for the two routers, which send to each other on that same SPI."""
    out = subprocess.run(["tshark", "-n", "-r", str(OSPF), "-T", "fields", "-e", "ipv6.src", "-e", "ipv6.dst",
                          "-e", "ah.spi", "-e", "ah.sequence"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    seqs: dict[str, list[int]] = {}
    dsts: dict[str, set[str]] = {}
    for line in out.splitlines():
        src, dst, spi, seq = line.split("\t")
        assert spi == "0x00000100"
        seqs.setdefault(src, []).append(int(seq))
        dsts.setdefault(src, set()).add(dst)
    for src, ns in seqs.items():
        assert sorted(ns) == list(range(min(ns), max(ns) + 1)) and len(dsts[src]) == 2
    assert json.loads(cli("findings", str(OSPF), "--json"))["findings"] == []


def test_sas_count_loss_per_counter_as_findings_do():
    """`sas` (text, JSON), `stats` and the TUI's traffic table agree with findings on OSPFv3_with_AH: each
    router numbers its AH packets to ff02::5 and to its neighbour from one counter (RFC 4302
    §3.3.3: one counter per SA at the sender), so no flow lost anything (they said 9, 7, 5 and 7
    lost), and each flow names the ones it shares its counter with. Flows of one sender on two SPIs
    keep their own counters and their own loss (icmp-quoted: one gap on each of two SAs)."""
    from ipsecscope.capture import open_capture
    from ipsecscope.session import Session
    from ipsecscope.tui.widgets.sa_detail import flow_table

    doc = json.loads(cli("sas", str(OSPF), "--json"))
    by = {f["key"]: f for f in doc["flows"]}
    assert [f["lost"] for f in by.values()] == [0, 0, 0, 0]
    ends = {k.split(":0x")[0] for k in by}
    assert ends == {"fe80::1>ff02::5", "fe80::2>ff02::5", "fe80::1>fe80::2", "fe80::2>fe80::1"}
    for k, f in by.items():
        (other,) = f["counter_shared_with"]
        assert other.split(">")[0] == f["src"] and other != k and by[other]["counter_shared_with"] == [k]
    text = cli("sas", str(OSPF))
    assert " lost" not in text and text.count("one sequence counter with its packets to") == 4
    s = Session()
    with open_capture(OSPF) as r:
        for raw in r:
            s.feed(raw)
    s.finish()
    t = flow_table(list(s.table.flows.values()), s.table.first_ts, s.table)
    assert [t._cells(f, False)["Lost"] for f in t.flows] == ["0"] * 4

    st = json.loads(cli("stats", str(OSPF), "--json"))  # and the statistics (CLI, TUI Stats tab)
    assert [f["lost"] for f in st["flows"]] == [0] * 4 and [c["lost"] for c in st["child_sas"]] == [0] * 3

    quoted = ROOT / "samples" / "synthetic" / "icmp-quoted.pcap"
    lost = {f["spi"]: (f["lost"], f["counter_shared_with"]) for f in json.loads(cli("sas", str(quoted), "--json"))["flows"]
            if f["lost"]}
    assert lost == {"0x70000001": (1, []), "0x70000005": (1, [])}
    st = json.loads(cli("stats", str(quoted), "--json"))
    assert sorted(f["lost"] for f in st["flows"] if f["lost"]) == [1, 1]


def test_one_way_ah_says_ah():
    """The frames fe80::1 -> fe80::2 alone (9 AH packets, nothing back): a one-way AH SA is 'One-way
    AH' (it said ESP)."""
    from ipsecscope.capture import open_capture
    from ipsecscope.session import Session

    one, two = bytes.fromhex("fe80" + "0" * 27 + "1"), bytes.fromhex("fe80" + "0" * 27 + "2")
    s = Session()
    with open_capture(OSPF) as r:  # Ethernet: the IPv6 source at 22, the destination at 38
        for raw in r:
            if bytes(raw.data[22:38]) == one and bytes(raw.data[38:54]) == two:
                s.feed(raw)
    s.finish()
    (f,) = [f for f in s.findings if f.code == "ESP-ONE-WAY"]
    assert f.title.startswith("One-way AH: fe80::1 -> fe80::2 (9 packets)")


ARKIME_V1 = public("arkime/IKEv1.pcap")  # third-party: materialised at test time
PLUTO_KE = public("openswan-unit/lp08-parentR1notify.pcap")  # third-party: materialised at test time


@needs_tshark
def test_invalid_ke_without_its_group_is_malformed():
    """RFC 7296 §3.10.1: INVALID_KE_PAYLOAD's notification data is the accepted D-H group, 2 octets.
    pluto's unit test sent one with none (frame 2): tshark marks it malformed, ipsecscope did not.
    The notify is still the refusal (the SA failed with INVALID_KE_PAYLOAD), and the message is
    counted and shown malformed with the reason, not dropped or a traceback."""
    out = subprocess.run(["tshark", "-n", "-r", str(PLUTO_KE), "-T", "fields", "-e", "frame.number",
                          "-e", "isakmp.notify.msgtype", "-e", "_ws.malformed"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert [(n, t) for n, t, _ in rows] == [("1", "17"), ("2", "17")]
    assert [n for n, _, m in rows if m] == ["2"]  # frame 1 carries its group (and 2 bytes past its length)
    pk = {d["frame"]: d for d in map(json.loads, cli("packets", str(PLUTO_KE), "--json").splitlines())}
    assert pk[2]["status"] == "malformed" and "N(INVALID_KE_PAYLOAD)" in pk[2]["info"]
    assert "INVALID_KE_PAYLOAD data is 0 bytes, the accepted D-H group takes 2" in pk[2]["info"]
    summ = json.loads(cli("summary", str(PLUTO_KE), "--json"))["malformed"]
    assert summ["by_layer"] == {"ike": 2} and [e["frame"] for e in summ["examples"]] == [1, 2]
    (sa,) = json.loads(cli("sas", str(PLUTO_KE), "--json"))["ike_sas"]
    assert sa["failure"] == "INVALID_KE_PAYLOAD" and sa["invalid_ke_requested"] == ["MODP_2048"]

    # one octet of group (frame 2 with a byte added, lengths grown to match): short, malformed too
    from ipsecscope.decode.ike import parse_payload_chain

    body = bytes.fromhex("00000009010000110e")  # Notify: no next, length 9, IKE, no SPI, type 17, 1 octet
    (n,), why = parse_payload_chain(41, body, 2)
    assert n.notify_type == 17 and "1 byte, the accepted D-H group takes 2" in why
    assert parse_payload_chain(41, bytes.fromhex("0000000a010000110e00"), 2)[1] is None


REFUSED_LAST = NDPI / "derived" / "ipsec_isakmp_esp-260-263.pcap"


@needs_tshark
@pytest.mark.parametrize(("cap", "severity", "why"), [
    (REFUSED_LAST, "warning", "the capture ends 0 s after the answer"),
    (PLUTO_KE, "warning", "the capture holds none of what 192.168.1.1 sent (not even the refused request)"),
    (NDPI / "derived" / "ipsec_isakmp_esp-260-263+268.pcap", "error", None),
], ids=["ends-at-answer", "no-initiator-side", "runs-on-2h"])
def test_invalid_ke_at_the_capture_end_is_no_failed_retry(cap, severity, why):
    """RFC 7296 §1.2: an initiator refused with INVALID_KE_PAYLOAD retries at once with the group
    asked for (the whole nDPI capture: new SPIs 150 ms later, accepted), or gives up. A capture
    that ends at the answer, or holds nothing the initiator sent, cannot tell which: that was an
    error 'no successful retry'. It stays one where the capture runs on (2 h) and no retry comes."""
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-T", "fields", "-e", "isakmp.notify.msgtype"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    if cap != PLUTO_KE:
        assert out[3] == "17" and out[2] == "16390,16388,16389"  # the retry with the COOKIE, refused
    (f,) = [f for f in findings(cap) if f["code"] == "IKE-INVALID-KE"]
    assert f["severity"] == severity and "MODP_2048" in f["title"]
    if why:
        assert f["title"].endswith("whether {} retried is not in the capture".format(
            "192.168.1.1" if cap == PLUTO_KE else "192.168.2.100")) and why in f["explanation"]
    else:
        assert f["title"].endswith("no successful retry")
