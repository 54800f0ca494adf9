"""`ipsecscope summary`: JSON against the tshark oracles of the corpus, fast path == generic path,
the 2-process split == 1 process, error handling at the command line."""

from __future__ import annotations

import copy
import functools
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import CORPUS, ROOT, corpus_captures, needs_tshark
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw
from test_capture_builders import (
    epb,
    esp,
    eth,
    gz,
    idb,
    ike_v2,
    pb,
    shb,
    spb,
    tshark_fields,
    v4,
    v6,
    write_pcap,
)

from ipsecscope.cli import main
from ipsecscope.cli.summary import SCHEMA, summarize
from ipsecscope.decode import fastpath, fastpath_base, fastpath_ng

sys.path.insert(0, str(ROOT / "benchmarks"))
import gen_esp_pcap  # noqa: E402

CAPTURES = corpus_captures()


def run_json(capsys, path: Path, *extra: str) -> tuple[int, dict]:
    rc = main(["summary", str(path), "--json", *extra])
    return rc, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_corpus_summary_matches_oracle(capsys, cap: Path) -> None:
    exp = json.loads((CORPUS / (cap.name + ".expected.json")).read_text())["passes"]["no_keys"]
    rc, doc = run_json(capsys, cap)
    assert rc == 0 and doc["schema"] == SCHEMA and doc["frames"] == exp["frames"]
    assert doc["truncated"] is None and doc["counts"]["malformed"] == 0
    assert len(doc["ike"]) == exp["ike"]["messages"]
    assert Counter(f"{m['version']}.0" for m in doc["ike"]) == Counter(exp["ike"]["by_version"])
    for m, e in zip(doc["ike"], exp["ike"]["message_list"], strict=True):
        assert (m["frame"], m["spi_i"], m["spi_r"]) == (e["frame"], e["ispi"], e["rspi"])
        assert f"0x{m['msg_id']:08x}" == e["message_id"] and m["exchange_type"] == e["exchange_type"]
        assert (m["src"], m["dst"]) == (e["src"], e["dst"])
        if m["version"] == 2:
            assert (m["is_initiator"], m["is_response"]) == (e["initiator"], e["response"])
            assert m["exchange"] == e["exchange"]
        cleartext_notifies = [n["name"] for n in e["notify"] if not n["encrypted_part"]]
        assert m["notifies"] == cleartext_notifies
    spis = {f["spi"]: f for f in doc["esp"]}
    assert set(spis) == set(exp["esp"]["spis"])
    for spi, e in exp["esp"]["spis"].items():
        f = spis[spi]
        assert (f["packets"], f["src"], f["dst"]) == (e["packets"], e["src"], e["dst"])
        assert (f["seq_min"], f["seq_max"]) == (e["first_seq"], e["last_seq"])
    assert doc["counts"]["esp"] == exp["esp"]["packets"]


def test_text_output_lists_messages_and_flows(capsys) -> None:
    assert main(["summary", str(CORPUS / "ikev2-decrypt-aes256gcm16.pcap")]) == 0
    out = capsys.readouterr().out
    assert "IKE_SA_INIT" in out and "INFORMATIONAL" in out and "NAT_DETECTION_SOURCE_IP" in out
    assert "0158b8fb90b7623d" in out
    assert main(["summary", str(CORPUS / "esp-bug-12671.pcapng.gz")]) == 0
    out = capsys.readouterr().out
    assert "0xc254fe64" in out and "0x070883c2" in out and "ESP flows (2)" in out


def test_notify_payloads_named_once_in_wire_order(capsys) -> None:
    """samples/dead-peer frame 1 (strongSwan IKE_SA_INIT: SA KE Ni and five Notify payloads, tshark's
    order): each notify is named once, where it sits, not as "N N N N N" and then the names again."""
    assert main(["summary", str(ROOT / "samples/dead-peer/capture.pcapng")]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "0000000000000000" in line)
    assert ("SA KE NONCE N(NAT_DETECTION_SOURCE_IP, NAT_DETECTION_DESTINATION_IP, IKEV2_FRAGMENTATION_SUPPORTED, "
            "SIGNATURE_HASH_ALGORITHMS, REDIRECT_SUPPORTED)") in row
    assert " N N" not in row


# ---- a mixed capture: fast path vs generic path ------------------------------------------------


def mixed_frames(n: int = 3000) -> list[bytes]:
    """Everything the fast path must either account exactly or hand to the generic decoder."""
    return list(_mixed_frames(n))


@functools.lru_cache(maxsize=8)
def _mixed_frames(n: int) -> tuple[bytes, ...]:
    big = ike_v2(spi_i=b"\x21" * 8, spi_r=b"\x43" * 8, exch=35, msg_id=1, body_len=2500)
    frags = [eth(f) for f in fragment(IP(src="198.18.0.1", dst="198.18.0.2", id=77) / UDP(sport=4500, dport=4500)
                                       / Raw(b"\0\0\0\0" + big), fragsize=1000)]
    frames = []
    seqs = Counter()
    for i in range(n):
        k = i % 12
        spi = 0xA0000000 + i % 3
        seqs[k, spi] += 1
        s = seqs[k, spi]
        if k in (0, 1, 2, 3):
            frames.append(eth(v4(src=f"198.18.1.{i % 3}", proto=50) / Raw(esp(spi, s, 40 + i % 300))))
        elif k == 4:
            frames.append(eth(v4() / UDP(sport=4500, dport=4500) / Raw(esp(spi, s, 60))))
        elif k == 5:
            frames.append(bytes(Ether() / Dot1Q(vlan=5) / v4(proto=50) / Raw(esp(spi, s, 30))))
        elif k == 6:
            frames.append(eth(v6(nh=50) / Raw(esp(spi, s, 50))))
        elif k == 7:
            frames.append(eth(v4() / UDP(sport=4500, dport=4500) / Raw(b"\xff")))
        elif k == 8:
            frames.append(eth(v4() / UDP(sport=500, dport=500) / Raw(ike_v2(msg_id=i))))
        elif k == 9:
            other = (
                eth(v4() / TCP(sport=443, dport=5555) / Raw(b"x" * 20)),
                bytes(Ether() / ARP()),
                eth(v6() / UDP(sport=53, dport=53) / Raw(b"q" * 12)),
                eth(v6() / TCP(sport=4500, dport=80) / Raw(b"t" * 12)),  # RFC 8229 port: generic path
                eth(v6(nh=58) / Raw(b"\x80\x00" + b"\0" * 10)),  # ICMPv6
                eth(v6() / UDP(sport=500, dport=500) / Raw(ike_v2(msg_id=i))),  # IKE over IPv6
                eth(v6(plen=999) / UDP(sport=53, dport=53) / Raw(b"q" * 12)),  # bad length: malformed
                eth(v4() / TCP(sport=1, dport=2)),  # TCP header only
                bytes(Ether(type=0x0842) / Raw(b"wol" * 20)),
            )
            frames.append(other[(i // 12) % len(other)])
        elif k == 10:
            frames.append(eth(v4() / AH(spi=0x99, seq=s, icv=b"\x01" * 12, nh=4, payloadlen=4)
                              / IP(src="10.0.0.1", dst="10.0.0.2")))
        else:
            frames.append(eth(v4(proto=50) / Raw(b"\x01\x02")))  # malformed ESP
    frames[1000:1000] = frags  # fragmented IKE in the middle
    frames.append(eth(v4(proto=50) / Raw(esp(0xA0000000, 1, 40))))  # seq going back: seq_min stays 1
    return tuple(frames)


def _pcapng_of(frames: list[bytes], path: Path) -> Path:
    path.write_bytes(shb() + idb("<", 1) + b"".join(epb("<", 0, 1_700_000_000_000_000 + i * 1000 + 123, f)
                                                    for i, f in enumerate(frames)))
    return path


def _norm(doc: dict) -> dict:
    """The document without what legitimately differs between files/paths (name, container,
    flow order). Times are compared exactly: both paths compute them from the same integers."""
    doc = copy.deepcopy(doc)  # callers compare the originals afterwards too
    for k in ("file", "format", "compressed"):
        doc.pop(k)
    doc["esp"] = sorted(doc["esp"], key=lambda f: (f["src"], f["dst"], f["spi"], f["transport"]))
    return doc


def test_fast_path_equals_generic_path(tmp_path: Path, monkeypatch) -> None:
    frames = mixed_frames()
    pcap = write_pcap(tmp_path / "m.pcap", frames, ts0=1_700_000_000)
    ng = tmp_path / "m.pcapng"
    ng.write_bytes(shb() + idb("<", 1) + b"".join(
        epb("<", 0, (1_700_000_000 + i) * 1_000_000 + (i * 123_457 % 1_000_000), f) for i, f in enumerate(frames)))
    generic = summarize(str(pcap), fast=False)
    assert generic["counts"]["esp"] > 1000 and generic["counts"]["malformed"] > 100
    assert len(generic["ike"]) > 251 and any(m["ip_fragmented"] for m in generic["ike"])
    assert _norm(summarize(str(ng), fast=False)) == _norm(generic)
    assert _norm(summarize(str(pcap), workers=1)) == _norm(generic)
    assert _norm(summarize(str(ng), workers=1)) == _norm(generic)
    # gzip: fast scanners over a gzip stream, one process
    assert _norm(summarize(str(gz(pcap)), workers=2)) == _norm(generic)
    assert _norm(summarize(str(gz(ng)), workers=2)) == _norm(generic)
    # two processes (force the split on these small files), many chunk boundaries too
    monkeypatch.setattr(fastpath_base, "SPLIT_MIN_BYTES", 0)  # both scanners read them from there
    monkeypatch.setattr(fastpath_base, "READ_CHUNK", 4096)
    for path in (pcap, ng):
        res = fastpath.scan_capture(str(path), lambda p: None, workers=2)
        assert res.workers == 2 and res.fast > 1000, path  # the fast path really ran, in 2 processes
        assert _norm(summarize(str(path), workers=2)) == _norm(generic), path


def _relink(frames: list[bytes], linktype: int) -> list[bytes]:
    """The same packets behind a Linux cooked v1 / v2 header instead of Ethernet."""
    out = []
    for f in frames:
        proto, payload = f[12:14], f[14:]
        if linktype == 113:
            out.append(b"\x00\x00\x00\x01\x00\x06" + b"\x02" * 6 + b"\0\0" + proto + payload)
        else:
            out.append(proto + b"\0\0" + b"\0\0\0\x02" + b"\x00\x01\x00\x06" + b"\x02" * 6 + b"\0\0" + payload)
    return out


@pytest.mark.parametrize("linktype", [113, 276], ids=["sll", "sll2"])
def test_fast_path_linux_cooked(tmp_path: Path, monkeypatch, linktype: int) -> None:
    frames = _relink(mixed_frames(1200), linktype)
    pcap = write_pcap(tmp_path / "c.pcap", frames, linktype=linktype)
    ng = tmp_path / "c.pcapng"
    ng.write_bytes(shb() + idb("<", linktype) + b"".join(epb("<", 0, i * 1000, f) for i, f in enumerate(frames)))
    generic = summarize(str(pcap), fast=False)
    assert generic["counts"]["esp"] > 400
    for path in (pcap, ng):
        res = fastpath.scan_capture(str(path), lambda p: None, workers=1)
        assert res.fast > 400, path
        ref = generic if path == pcap else summarize(str(ng), fast=False)
        assert _norm(summarize(str(path), workers=1)) == _norm(ref)
        monkeypatch.setattr(fastpath_base, "SPLIT_MIN_BYTES", 0)
        assert _norm(summarize(str(path), workers=2)) == _norm(ref)
        monkeypatch.setattr(fastpath_base, "SPLIT_MIN_BYTES", 64 << 20)


def test_pcapng_fast_path_multi_interface_and_sections(tmp_path: Path, monkeypatch) -> None:
    """Interfaces with other link types / clocks, SPB and PB blocks, a second section with the
    other byte order: all must come out exactly as the generic reader sees them."""
    frames = mixed_frames(400)
    raw6 = [bytes(v6(nh=50) / Raw(esp(0xB1, i + 1))) for i in range(30)]
    blocks = [shb("<"), idb("<", 1), idb("<", 229, tsresol=9), idb("<", 1, tsresol=9)]
    for i, f in enumerate(frames):
        if i % 50 == 7:
            blocks.append(spb("<", f))
        elif i % 50 == 9:
            blocks.append(pb("<", 0, 1_700_000_000_000_000 + i, f))
        elif i % 3 == 2:
            blocks.append(epb("<", 2, 1_700_000_000_000_000_000 + i * 1001, f))  # Ethernet, ns clock
        else:
            blocks.append(epb("<", 0, 1_700_000_000_000_000 + i * 1000, f))
        if i % 13 == 0 and raw6:
            blocks.append(epb("<", 1, 1_700_000_000_000_000_000 + i * 999, raw6.pop()))
    blocks += [shb(">"), idb(">", 1)] + [epb(">", 0, 1_700_000_100_000_000 + i, f) for i, f in enumerate(frames[:80])]
    p = tmp_path / "multi.pcapng"
    p.write_bytes(b"".join(blocks))
    generic = summarize(str(p), fast=False)
    assert generic["frames"] == len(frames) + 30 + 80
    assert _norm(summarize(str(p), workers=1)) == _norm(generic)
    monkeypatch.setattr(fastpath_base, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setattr(fastpath_base, "READ_CHUNK", 2048)
    assert _norm(summarize(str(p), workers=2)) == _norm(generic)


def test_split_with_false_boundary_falls_back(tmp_path: Path, monkeypatch) -> None:
    frames = mixed_frames(600)
    pcap = write_pcap(tmp_path / "m.pcap", frames)
    one = summarize(str(pcap), fast=False)
    ng = _pcapng_of(frames, tmp_path / "m.pcapng")
    one_ng = summarize(str(ng), fast=False)
    monkeypatch.setattr(fastpath_base, "SPLIT_MIN_BYTES", 0)
    # boundary finders that lie (an offset inside a record): the first scanner must notice
    monkeypatch.setattr(fastpath, "find_boundary", lambda f, off, *a, **k: off + 3)
    monkeypatch.setattr(fastpath_ng, "find_boundary_ng", lambda f, off, *a, **k: (off & ~3) + 8)
    for path, ref in ((pcap, one), (ng, one_ng)):
        res = fastpath.scan_capture(str(path), lambda p: None, workers=2)
        assert res.workers == 1
        assert _norm(summarize(str(path), workers=2)) == _norm(ref)


def test_generated_benchmark_capture_matches_ground_truth(tmp_path: Path, monkeypatch) -> None:
    p = tmp_path / "g.pcap"
    truth = gen_esp_pcap.build(30_000, str(p), sas=6)
    monkeypatch.setattr(fastpath_base, "SPLIT_MIN_BYTES", 0)
    doc = summarize(str(p), workers=2)
    got = {f"{f['src']}>{f['dst']}/{f['spi']}": f for f in doc["esp"]}
    assert set(got) == set(truth["flows"])
    for key, t in truth["flows"].items():
        g = got[key]
        assert (g["packets"], g["bytes"], g["seq_min"], g["seq_max"], g["udp_encap"]) == (
            t["packets"], t["bytes"], 1, t["seq_max"], t["udp"])
        assert abs(g["first_time"] - t["first"]) < 1e-6 and abs(g["last_time"] - t["last"]) < 1e-6
    assert doc["counts"]["keepalive"] == truth["keepalive"] and doc["counts"]["ike"] == truth["ike"]


@needs_tshark
def test_esp_counts_agree_with_tshark_on_mixed_capture(tmp_path: Path) -> None:
    frames = mixed_frames(1200)
    pcap = write_pcap(tmp_path / "m.pcap", frames)
    doc = summarize(str(pcap), workers=1)
    rows = tshark_fields(pcap, "esp.spi", "esp.sequence", "ip.src", "ipv6.src", "udp.srcport")
    tsh = Counter()
    for spi, _seq, src4, src6, _sp in rows:
        if spi:
            tsh[spi, src4 or src6] += 1
    ours = Counter()
    for f in doc["esp"]:
        ours[f["spi"], f["src"]] += f["packets"]
    assert ours == tsh
    ike_rows = [r for r in tshark_fields(pcap, "isakmp.ispi") if r[0]]
    assert len(ike_rows) == len(doc["ike"])


# ---- command line behaviour ---------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ipsecscope")
    cmd = [exe, *args] if exe else [sys.executable, "-c", "import sys; from ipsecscope.cli import main; "
                                    "sys.exit(main(sys.argv[1:]))", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_not_a_capture_one_line_error(tmp_path: Path) -> None:
    p = tmp_path / "notes.txt"
    p.write_text("these are not packets\n")
    r = _cli("summary", str(p))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a pcap or pcapng file" in lines[0]


def test_missing_file_one_line_error(tmp_path: Path) -> None:
    r = _cli("summary", str(tmp_path / "nope.pcap"))
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_truncated_file_prints_summary_and_fails(tmp_path: Path, kind: str) -> None:
    frames = mixed_frames(120)
    if kind == "pcap":
        raw = write_pcap(tmp_path / "a.pcap", frames).read_bytes()
    else:
        raw = _pcapng_of(frames, tmp_path / "a.pcapng").read_bytes()
    p = tmp_path / f"cut.{kind}"
    p.write_bytes(raw[:-7])
    r = _cli("summary", str(p), "--json")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "cut off" in line
    doc = json.loads(r.stdout)
    assert doc["frames"] == len(frames) - 1 and doc["truncated"]
    assert doc["malformed"]["by_layer"].get("capture") == 1


def test_damaged_record_stops_with_error(tmp_path: Path, capsys) -> None:
    raw = bytearray(write_pcap(tmp_path / "a.pcap", mixed_frames(50)).read_bytes())
    raw[24 + 8:24 + 12] = (10**9).to_bytes(4, "little")  # first record claims 1 GB
    p = tmp_path / "bad.pcap"
    p.write_bytes(bytes(raw))
    rc = main(["summary", str(p), "--json"])
    captured = capsys.readouterr()
    assert rc == 1 and "damaged" in captured.err
    assert json.loads(captured.out)["frames"] == 0


def test_cut_file_header_says_so(tmp_path: Path) -> None:
    p = write_pcap(tmp_path / "a.pcap", [])
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(p.read_bytes()[:20])
    r = _cli("summary", str(cut))
    assert r.returncode == 1 and "file header truncated" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("order,ns", [(">", False), ("<", True), (">", True)], ids=["be-usec", "le-nsec", "be-nsec"])
def test_fast_path_byte_orders_and_resolutions(tmp_path: Path, order: str, ns: bool) -> None:
    frames = mixed_frames(600)
    p = write_pcap(tmp_path / "v.pcap", frames, order=order, ns=ns)
    generic = summarize(str(p), fast=False)
    assert fastpath.scan_capture(str(p), lambda x: None, workers=1).fast > 200
    assert _norm(summarize(str(p), workers=1)) == _norm(generic)
    # nanosecond fractions survive into the flow times exactly as the generic reader computes them
    assert summarize(str(p), workers=1)["esp"] == generic["esp"]


def _esp_frames(n: int, spis: int = 3) -> list[bytes]:
    return [eth(v4(proto=50) / Raw(esp(0x1000 + i % spis, i + 1, 40))) for i in range(n)]


def test_fast_and_generic_paths_agree_on_damaged_files(tmp_path: Path, monkeypatch) -> None:
    """Issue 12 #8: a record cut off at the end is not counted, so its time is not last_time; an
    EPB before its IDB has no clock on both paths (time 0, as the generic reader reads it)."""
    import struct

    frames = _esp_frames(40)
    good = write_pcap(tmp_path / "g.pcap", frames, ts0=1_700_000_000).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(good + struct.pack("<IIII", 1_000, 0, 100, 100) + bytes(10))  # earlier time, cut off
    pre = tmp_path / "pre.pcapng"
    pre.write_bytes(shb() + epb("<", 0, 1_700_000_000 * 1_000_000, frames[0]) + idb("<", 1) + b"".join(
        epb("<", 0, (1_700_000_001 + i) * 1_000_000, f) for i, f in enumerate(frames)))
    cutng = tmp_path / "cut.pcapng"
    cutng.write_bytes(shb() + idb("<", 1) + b"".join(epb("<", 0, (1_700_000_001 + i) * 1_000_000, f)
                                                     for i, f in enumerate(frames)) + epb("<", 0, 10**9, frames[0])[:40])
    monkeypatch.setattr(fastpath_base, "SPLIT_MIN_BYTES", 0)  # and with the split into two processes
    for path in (cut, pre, cutng):
        generic = summarize(str(path), fast=False)
        assert generic["last_time"] >= generic["first_time"], path
        for workers in (1, 2):
            assert _norm(summarize(str(path), workers=workers)) == _norm(generic), (path, workers)


def test_per_flow_state_is_bounded(tmp_path: Path, monkeypatch, capsys) -> None:
    """Issue 12 #7: past MAX_FLOWS flows, further flows' packets are counted but not listed, on
    both paths, and the output says so (a warning line, flows_limit in the JSON)."""
    monkeypatch.setattr(fastpath_base, "MAX_FLOWS", 25)
    frames = _esp_frames(300, spis=100)  # 100 distinct SPIs, 3 packets each
    pcap = write_pcap(tmp_path / "many.pcap", frames, ts0=1_700_000_000)
    ng = _pcapng_of(frames, tmp_path / "many.pcapng")
    for path in (pcap, ng):
        for fast in (True, False):
            doc = summarize(str(path), fast=fast, workers=1)
            assert doc["counts"]["esp"] == 300, (path, fast)
            assert len(doc["esp"]) == 25 and sum(f["packets"] for f in doc["esp"]) == 75
            assert doc["flows_limit"] == {"max_flows": 25, "packets": 225}
    rc = main(["summary", str(pcap), "--json"])
    assert rc == 0 and capsys.readouterr().err == (f"ipsecscope summary: warning: {pcap}: more than 25 ESP/AH flows; "
                                                   "the 225 packets of the further ones are in the counts but not "
                                                   "listed per flow\n")


def test_keys_without_a_filter_are_said_to_be_ignored() -> None:
    # `summary FILE -k KEYS` read no key file (not even a missing one) and said nothing.
    cap = ROOT / "samples" / "healthy-gcm" / "capture.pcapng"
    r = subprocess.run([sys.executable, "-m", "ipsecscope", "summary", str(cap), "-k", "/nonexistent"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "IKE_SA_INIT" in r.stdout
    assert r.stderr.startswith("ipsecscope summary: warning: -k ignored: ") and "Traceback" not in r.stderr, r.stderr
