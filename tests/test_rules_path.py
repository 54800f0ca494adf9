"""Path findings from real captures: ESP larger than the path MTU (issue 11 #2), ICMP errors quoting
ESP as evidence (issue 11 #13), and key files that match nothing in the capture (issue 14 #2).

The evidence is samples/mtu-small-link (two strongSwan peers with a 1280-byte link on the routed
path; truth.json from their logs) and tshark reading the same frames.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import IPSECSCOPE, ROOT, SAMPLES

from ipsecscope.capture import open_capture
from ipsecscope.decode.demux import Decoder
from ipsecscope.model.packets import IcmpError

MTU = SAMPLES / "mtu-small-link"


def findings_json(capture, *keys) -> tuple[int, dict]:
    args = [*IPSECSCOPE, "findings", str(capture), "--json"]
    for k in keys:
        args += ["-k", str(k)]
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=120)
    return r.returncode, json.loads(r.stdout)


@pytest.mark.parametrize("keys", [True, False], ids=["keys", "nokeys"])
def test_mtu_small_link_finding_names_the_sa_sizes_and_counts(keys):
    """The finding carries exactly what the peers' logs and the router's ICMP say (truth.json):
    the SA, the 1460-byte packet, the 1280-byte path MTU, who said so, one packet dropped, and
    the fragmented packets per direction — with or without keys (all of it is outer headers)."""
    truth = json.loads((MTU / "truth.json").read_text())["expected"]
    want = truth["findings"][0]
    rc, doc = findings_json(MTU / "capture.pcapng", *([MTU / "keys"] if keys else []))
    mtu = [f for f in doc["findings"] if f["code"] == "ESP-PATH-MTU"]
    assert len(mtu) == 1, doc["findings"]
    f = mtu[0]
    facts = f["facts"]
    for name in ("spi", "sa_direction", "outer_size", "path_mtu", "icmp_from", "icmp_frames", "dropped",
                 "fragmented", "fix"):
        assert facts[name] == want[name], name
    assert f["severity"] == want["severity"] == truth["max_severity"]
    assert rc == 1  # a warning
    # The text a user reads says the same, and the hint gives the fix with numbers.
    for text in (want["spi"], "1460", "1280", want["icmp_from"]):
        assert text in f["title"] + f["explanation"]
    assert "MTU" in f["hint"] and "MSS" in f["hint"]
    # Nothing else above info: the tunnel itself is healthy.
    assert [x["code"] for x in doc["findings"] if x["severity"] != "info"] == ["ESP-PATH-MTU"]


def _tshark_icmp_fields(capture) -> list[list[str]]:
    out = subprocess.run(
        ["tshark", "-r", str(capture), "-Y", "icmp.type == 3 || icmpv6.type == 2", "-T", "fields",
         "-E", "separator=|", "-e", "frame.number", "-e", "ip.src", "-e", "icmp.mtu", "-e", "esp.spi",
         "-e", "esp.sequence", "-e", "ip.len", "-e", "udp.dstport"],
        capture_output=True, text=True, check=True).stdout
    return [ln.split("|") for ln in out.splitlines() if ln]


def test_icmp_error_decode_agrees_with_tshark():
    """decode/icmp reads the router's fragmentation-needed the way tshark does: reporter, next-hop
    MTU, the quoted packet's size, and the SPI/sequence after the quoted UDP header (RFC 3948)."""
    rows = _tshark_icmp_fields(MTU / "capture.pcapng")
    assert len(rows) == 1
    frame, ip_src, mtu, spi, seq, ip_len, dport = rows[0]
    dec = Decoder(icmp_errors=True)
    errs = []
    with open_capture(MTU / "capture.pcapng") as reader:
        for raw in reader:
            errs += [p for p in dec.decode_all(raw) if isinstance(p, IcmpError)]
    assert len(errs) == 1
    e = errs[0]
    assert e.frame == int(frame) and e.src == ip_src.split(",")[0]
    assert e.mtu == int(mtu) and e.too_big and not e.unreachable and e.what == f"fragmentation needed (MTU {mtu})"
    assert f"0x{e.spi:08x}" == spi and e.seq == int(seq)
    assert e.quoted_length == int(ip_len.split(",")[1]) and e.dport == int(dport) and e.udp_encap
    assert e.protocol == "ESP" and (e.quoted_src, e.quoted_dst) == ("198.18.0.1", "198.18.0.2")


def test_icmp_errors_stay_other_for_the_counters():
    """Only the analysis path asks for ICMP errors: a default Decoder (summary, decrypt) still
    counts the frame as not IPsec, and the session's row for it stays an OTHER row."""
    from ipsecscope.session import Session

    dec = Decoder()
    with open_capture(MTU / "capture.pcapng") as reader:
        assert not any(isinstance(p, IcmpError) for raw in reader for p in dec.decode_all(raw))
    s = Session.from_files([MTU / "capture.pcapng"])
    assert s.row(10).kind == "OTHER" and "Fragmentation needed" in s.row(10).info
    ob = [o for o in s.table.observations if o.kind == "icmp_error"]
    assert len(ob) == 1 and ob[0].detail["sa"] == ("198.18.0.2", "ESP", 0x92649C9B)
    assert ob[0].detail["child_sa"] == s.table.flows[("198.18.0.1", "198.18.0.2", 0x92649C9B, "ESP")].child_sa


def test_fragmented_esp_counted_per_flow_as_tshark_sees_it():
    """sas --json counts the ESP packets that came as outer IP fragments per flow: the first
    fragments tshark shows (MF set, offset 0), by direction."""
    out = subprocess.run(
        ["tshark", "-r", str(MTU / "capture.pcapng"), "-Y", "ip.flags.mf == 1 && ip.frag_offset == 0", "-T",
         "fields", "-e", "ip.src", "-e", "ip.dst"], capture_output=True, text=True, check=True).stdout
    want: dict[str, int] = {}
    for ln in out.splitlines():
        s, d = ln.split("\t")
        want[f"{s}>{d}"] = want.get(f"{s}>{d}", 0) + 1
    r = subprocess.run([*IPSECSCOPE, "sas", str(MTU / "capture.pcapng"), "--json"], capture_output=True,
                       text=True, cwd=ROOT, check=True)
    got = {f"{f['src']}>{f['dst']}": f["ip_fragmented"] for f in json.loads(r.stdout)["flows"]}
    assert got == want and sum(got.values()) == 4


def test_keys_for_another_tunnel_are_a_warning():
    """Issue 14 #2: a charon log of another tunnel gives keys that match no SPI: findings says so
    (CAPTURE-KEYS-UNMATCHED, warning) and exits 1 instead of 0."""
    other = SAMPLES / "cbc-sha2-pfs" / "charon-left.log"
    rc, doc = findings_json(SAMPLES / "healthy-gcm" / "capture.pcapng", other)
    hit = [f for f in doc["findings"] if f["code"] == "CAPTURE-KEYS-UNMATCHED"]
    assert rc == 1 and len(hit) == 1 and hit[0]["severity"] == "warning"
    assert hit[0]["title"] == (f"Keys from {other} (1 IKE SA, 6 ESP SAs) match no SPI in this capture: "
                               "another tunnel, host or rotated log?")
    assert hit[0]["facts"] == {"file": str(other), "ike_sas": 1, "esp_sas": 6}
    # Text output and the order of -k and the capture do not matter.
    r = subprocess.run([*IPSECSCOPE, "findings", "-k", str(other), "--", str(SAMPLES / "healthy-gcm" / "capture.pcapng")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and "CAPTURE-KEYS-UNMATCHED" in r.stdout


def test_matching_keys_raise_no_unmatched_warning():
    """The same capture with its own log (and with the other log added): only the unrelated file is named."""
    own = SAMPLES / "healthy-gcm" / "charon-left.log"
    rc, doc = findings_json(SAMPLES / "healthy-gcm" / "capture.pcapng", own)
    assert rc == 0 and not any(f["code"] == "CAPTURE-KEYS-UNMATCHED" for f in doc["findings"])
    other = SAMPLES / "cbc-sha2-pfs" / "charon-left.log"
    rc, doc = findings_json(SAMPLES / "healthy-gcm" / "capture.pcapng", own, other)
    hit = [f for f in doc["findings"] if f["code"] == "CAPTURE-KEYS-UNMATCHED"]
    assert rc == 1 and [f["facts"]["file"] for f in hit] == [str(other)]


def test_a_second_file_with_the_same_sas_keys_is_not_for_another_tunnel():
    """The exported esp_sa/ikev2_decryption_table rows and the charon log they came from, given
    together: the lookup answers with the first file's key for each SA, and the second file (the
    log, or the rows when given after it) was told its keys "match no SPI in this capture" though
    every one of its SAs is in it. Each file naming an SA of the capture counts as matching."""
    d = SAMPLES / "path-impairments"
    for order in ((d / "keys", d / "charon-left.log"), (d / "charon-left.log", d / "keys")):
        rc, doc = findings_json(d / "capture.pcapng", *order)
        assert not [f["facts"]["file"] for f in doc["findings"] if f["code"] == "CAPTURE-KEYS-UNMATCHED"], order
    # ... and a file of another tunnel beside them still is
    other = SAMPLES / "cbc-sha2-pfs" / "charon-left.log"
    rc, doc = findings_json(d / "capture.pcapng", d / "keys", d / "charon-left.log", other)
    assert [f["facts"]["file"] for f in doc["findings"] if f["code"] == "CAPTURE-KEYS-UNMATCHED"] == [str(other)]


def test_keys_are_not_blamed_when_no_sa_in_the_capture_could_have_keys():
    """An IKE_SA_INIT refused with NO_PROPOSAL_CHOSEN leaves no SA any peer derives keys for: a
    charon log of earlier SAs (live, the gateway's own log) matching nothing is no 'another tunnel,
    host or rotated log?' warning beside the real error, in findings or on stderr."""
    log = SAMPLES / "healthy-gcm" / "charon-left.log"
    cap = SAMPLES / "ike-proposal-mismatch" / "capture.pcapng"
    rc, doc = findings_json(cap, log)
    assert [f["code"] for f in doc["findings"] if f["severity"] != "info"] == ["IKE-NO-PROPOSAL"]
    r = subprocess.run([*IPSECSCOPE, "findings", str(cap), "-k", str(log)], capture_output=True, text=True, cwd=ROOT)
    assert "match no SPI" not in r.stderr + r.stdout


def test_no_keys_no_unmatched_warning():
    rc, doc = findings_json(SAMPLES / "healthy-gcm" / "capture.pcapng")
    assert rc == 0 and not any(f["code"] == "CAPTURE-KEYS-UNMATCHED" for f in doc["findings"])


def test_healthy_samples_have_no_path_mtu_finding():
    """Fragmentation is not everywhere: the samples without an MTU problem get no ESP-PATH-MTU."""
    for d in sorted(p for p in SAMPLES.iterdir() if (p / "capture.pcapng").is_file() and p != MTU):
        _rc, doc = findings_json(d / "capture.pcapng")
        assert not any(f["code"] == "ESP-PATH-MTU" for f in doc["findings"]), d.name


REJECTED = SAMPLES / "esp-rejected"


def test_icmp_port_unreachable_is_evidence_in_return_stopped():
    """Issue 11 #13 (samples/esp-rejected: the responder's nft rule rejects ESP-in-UDP with ICMP
    port unreachable, IKE on the same port passes): ESP-RETURN-STOPPED says the receiver itself
    refuses the packets, cites the ICMP frames, and since IKE on that port still gets answers,
    points at a firewall rule that tells ESP from IKE — not at a dead peer or a missing socket."""
    want = json.loads((REJECTED / "truth.json").read_text())["expected"]
    rc, doc = findings_json(REJECTED / "capture.pcapng", REJECTED / "keys")
    bad = [f for f in doc["findings"] if f["severity"] != "info"]
    assert [f["code"] for f in bad] == want["findings"][0]["codes"] == ["ESP-RETURN-STOPPED"]
    f = bad[0]
    assert f["severity"] == want["max_severity"] and rc == 1
    assert f"ESP on SPI {want['findings'][0]['refused_spi']}" not in f["title"]  # the title is about the silent side
    assert f["sa"] == f"esp:198.18.0.1>198.18.0.2:{want['findings'][0]['refused_spi']}"
    assert "refused with ICMP" in f["title"]
    assert "198.18.0.2 itself answered 4 of them with ICMP port unreachable (frame 12)" in f["explanation"]
    assert "a firewall rule that tells ESP from IKE" in f["explanation"]
    assert "no socket" in f["explanation"]  # the general cause is named, then narrowed by IKE
    assert {12, 14} <= set(f["frames"])
    assert "charon listens on UDP 4500" in f["hint"] and "198.18.0.1" in f["hint"]
    assert not any(x["code"] in want["not_reported"] for x in doc["findings"])


@pytest.mark.parametrize("sample", ["esp-rejected", "esp-oneway-drop"])
def test_evidence_frames_are_in_frame_order(sample):
    """live3: ESP-RETURN-STOPPED listed "148, 149, 154, 152, 156, 158" (the unanswered run's first and
    last, then the ICMP and IKE frames behind it). Every finding's frames, and every aggregated
    member's, read in frame order, in JSON as in the Finding; the first frame (live mode's key)
    is still the last ESP that came back."""
    d = SAMPLES / sample
    _rc, doc = findings_json(d / "capture.pcapng", d / "keys")
    stopped = [f for f in doc["findings"] if f["code"] == "ESP-RETURN-STOPPED"]
    assert stopped and stopped[0]["frames"][0] == 10
    want = {"esp-rejected": [10, 11, 12, 14, 17, 20], "esp-oneway-drop": [10, 11, 13, 16, 19, 30]}[sample]
    assert stopped[0]["frames"] == want
    for f in doc["findings"]:
        assert f["frames"] == sorted(set(f["frames"])), f["code"]


def test_icmp_unreachable_alone_is_its_own_finding(tmp_path):
    """The same capture cut after the first refused packet: too little for ESP-RETURN-STOPPED (one
    unanswered packet), yet the ICMP error is evidence on its own: ESP-ICMP-UNREACHABLE names the
    SA, the reporter and the error."""
    cut = tmp_path / "first-refusal.pcapng"
    subprocess.run(["editcap", "-r", str(REJECTED / "capture.pcapng"), str(cut), "1-12"], check=True)
    rc, doc = findings_json(cut, REJECTED / "keys")
    want = json.loads((REJECTED / "truth.json").read_text())["expected"]["findings"][0]
    hit = [f for f in doc["findings"] if f["code"] == "ESP-ICMP-UNREACHABLE"]
    assert rc == 1 and len(hit) == 1 and not any(f["code"] == "ESP-RETURN-STOPPED" for f in doc["findings"])
    assert hit[0]["facts"] == {"spi": want["refused_spi"], "sa_direction": want["refused_direction"],
                               "icmp_from": want["icmp_from"], "icmp": want["icmp"], "icmp_frames": 1}
    assert hit[0]["frames"] == [12]


def _write_icmp_variants(path) -> None:
    """ICMP errors the samples do not hold, built with scapy: an ICMPv6 Packet Too Big quoting an
    IPv6 ESP-in-UDP packet, an ICMPv4 fragmentation-needed quoting raw ESP (IP protocol 50), an
    ICMPv6 port unreachable quoting raw ESP behind a destination-options header, an ICMP error
    quoting only 4 octets past UDP (no SPI: not an SA), and an echo reply (no error)."""
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, IPv6, IPv6ExtHdrDestOpt
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    esp = bytes.fromhex("c0ffee01") + (7).to_bytes(4, "big") + bytes(64)
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    pkts = [
        e / IPv6(src="2001:db8:1::1", dst="2001:db8::a") / ICMPv6PacketTooBig(mtu=1280)
        / IPv6(src="2001:db8::a", dst="2001:db8::b", plen=1452) / UDP(sport=4500, dport=4500, len=1452) / Raw(esp),
        e / IP(src="198.18.1.1", dst="198.18.0.1") / ICMP(type=3, code=4, nexthopmtu=1400)
        / IP(src="198.18.0.1", dst="198.18.0.2", proto=50, len=1480, flags="DF") / Raw(esp[:8]),
        e / IPv6(src="2001:db8::b", dst="2001:db8::a") / ICMPv6DestUnreach(code=4)
        / IPv6(src="2001:db8::a", dst="2001:db8::b", plen=80) / IPv6ExtHdrDestOpt(nh=50) / Raw(esp),
        e / IP(src="198.18.0.2", dst="198.18.0.1") / ICMP(type=3, code=3)
        / IP(src="198.18.0.1", dst="198.18.0.2", proto=17, len=200) / UDP(sport=4500, dport=4500) / Raw(esp[:2]),
        e / IP(src="198.18.0.2", dst="198.18.0.1") / ICMP(type=0) / Raw(esp),
    ]
    wrpcap(str(path), pkts)


def test_icmp_variants_agree_with_tshark(tmp_path):
    """decode/icmp on IPv6, raw ESP, extension headers and short quotes, against tshark's reading."""
    pytest.importorskip("scapy")
    cap = tmp_path / "icmp-variants.pcap"
    _write_icmp_variants(cap)
    out = subprocess.run(
        ["tshark", "-r", str(cap), "-T", "fields", "-E", "separator=|", "-E", "occurrence=f", "-e", "frame.number",
         "-e", "icmp.mtu", "-e", "icmpv6.mtu", "-e", "esp.spi", "-e", "esp.sequence"],
        capture_output=True, text=True, check=True).stdout
    oracle = {int(r[0]): r[1:] for r in (ln.split("|") for ln in out.splitlines())}
    dec = Decoder(icmp_errors=True)
    with open_capture(cap) as reader:
        got = {raw.index: [p for p in dec.decode_all(raw) if isinstance(p, IcmpError)] for raw in reader}
    (v6,), (v4,), (unreach,) = got[1], got[2], got[3]
    assert not got[4] and not got[5]  # no SPI in the quote; not an error
    for frame, e in ((1, v6), (2, v4), (3, unreach)):
        mtu4, mtu6, spi, seq = oracle[frame]
        assert f"0x{e.spi:08x}" == spi and e.seq == int(seq) and e.protocol == "ESP"
        assert e.mtu == int(mtu4 or mtu6 or 0)
    assert v6.too_big and v6.ip_version == 6 and v6.udp_encap and v6.quoted_length == 1492
    assert (v6.src, v6.quoted_src, v6.quoted_dst) == ("2001:db8:1::1", "2001:db8::a", "2001:db8::b")
    assert v4.too_big and not v4.udp_encap and v4.quoted_length == 1480 and v4.what == "fragmentation needed (MTU 1400)"
    assert unreach.unreachable and unreach.what == "port unreachable" and not unreach.udp_encap
