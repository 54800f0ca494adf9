"""``decrypt`` and AH (RFC 4302; export/ah.py): every AH packet gets a JSON record, its payload
(tunnel mode: the inner IP packet; transport mode: behind an IP header from the outer addresses)
goes to the decrypted pcapng unless its ICV failed, the way tshark dissects the AH payload.

Oracles: scapy's own view of each AH packet as its receiver holds it (tests/test_ah.py:
fragments reassembled, scapy's AH verification), and tshark's dissection of the original
capture against its dissection of the output, frame for frame.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest
from conftest import IPSECSCOPE, ROOT, needs_tshark
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.ipsec import AH, ESP, SecurityAssociation
from scapy.utils import rdpcap
from test_ah import AH_DIR, SCAPY_ALGO, key_entries, receiver_packets, scapy_verdicts

from ipsecscope.api import load_keystore
from ipsecscope.capture import open_capture
from ipsecscope.export import engine, hotloop

CASES = {"ah-v4": "ah-v4", "ah-v6": "ah-v6", "ah-frag": "ah-frag", "ah-frag-options": "ah-frag"}


def decrypt(cap: Path, out: Path, *keys: Path, extra: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, list[dict]]:
    args = [a for k in keys for a in ("-k", str(k))]
    r = subprocess.run([*IPSECSCOPE, "decrypt", str(cap), *args, "-o", str(out), "--jsonl", str(out) + ".jsonl",
                        *extra], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "Traceback" not in r.stderr, r.stderr
    return r, [json.loads(line) for line in Path(str(out) + ".jsonl").read_text().splitlines()]


def written(out: Path) -> list:
    with open_capture(out) as r:
        return [(f.ts_ns, f.data, f.iface) for f in r]


@pytest.mark.parametrize("name", sorted(CASES))
def test_payloads_are_scapys_frame_for_frame(name, tmp_path):
    cap, keys = AH_DIR / f"{name}.pcap", AH_DIR / f"{CASES[name]}.keys.json"
    r, recs = decrypt(cap, tmp_path / "out.pcapng", keys)
    verdicts = scapy_verdicts(cap, key_entries(keys))
    assert r.returncode == (4 if not all(verdicts.values()) else 0), r.stderr
    theirs = receiver_packets(cap)
    frames = rdpcap(str(cap))
    with open_capture(cap) as rd:
        times = {f.index: f.ts_ns for f in rd}
    want = [n for n, ok in verdicts.items() if ok]  # ICV failures are left out, as ESP's are
    got = written(tmp_path / "out.pcapng")
    assert [ts for ts, _d, _i in got] == [times[n] for n in want]
    for n, (_ts, data, iface) in zip(want, got, strict=True):
        # scapy's AH payload: the tunnelled packet itself, or the transport payload, which decrypt
        # puts behind an IP header of the frame's own (outer) addresses
        nh, payload = theirs[n][AH].nh, bytes(theirs[n][AH].payload)
        assert iface == 0
        if nh in (4, 41):
            assert data == payload, n
            continue
        if data[0] >> 4 == 4:
            assert data[20:] == payload, n
            out, wire = IP(data), frames[n - 1][IP]
            assert (out.src, out.dst, out.proto) == (wire.src, wire.dst, nh)
            continue
        # IPv6 transport mode: the extension headers in front of AH stay (RFC 4302 §3.1.1), as
        # scapy's AH receiver leaves the packet: the frame's own headers (a Routing header as
        # captured), a fragmented datagram's reassembled ones; traffic class, flow label and hop
        # limit are decrypt's own (bytes 0-3, 7)
        wire = frames[n - 1][IPv6]
        ref = theirs[n] if IPv6ExtHdrFragment in wire else IPv6(bytes(wire))
        spi = ref[AH].spi
        k = key_entries(keys)[spi]
        mine = SecurityAssociation(AH, spi=spi, auth_algo=SCAPY_ALGO[k["integ"]], auth_key=bytes.fromhex(k["auth_key"]))
        exp = bytes(mine.decrypt(ref, verify=False))
        assert (data[4:7], data[8:]) == (exp[4:7], exp[8:]), n
    # one JSON record per AH packet, in frame order, the ICV verdict as scapy's
    ah = [x for x in recs if x["protocol"] == "AH"]
    assert [x["frame"] for x in ah] == sorted(verdicts)
    assert {x["frame"]: x["status"] for x in ah} == {n: "ok" if ok else "icv_failed" for n, ok in verdicts.items()}
    for x in ah:
        assert ("inner" in x) == (x["status"] == "ok") and x["sa"].startswith(f"{keys}:")


@needs_tshark
@pytest.mark.parametrize("name", sorted(CASES))
def test_tshark_dissects_the_output_as_the_ah_payload(name, tmp_path):
    """tshark on the capture (AH and what follows it) and on decrypt's output (raw IP): the same
    layers behind AH, the same innermost addresses, frame for frame."""
    cap, keys = AH_DIR / f"{name}.pcap", AH_DIR / f"{CASES[name]}.keys.json"
    decrypt(cap, tmp_path / "out.pcapng", keys)
    fields = ("frame.number", "frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst")

    def dissect(path: Path, flt: str) -> list[list[str]]:
        out = subprocess.run(["tshark", "-r", str(path), "-Y", flt, "-T", "fields", "-E", "occurrence=l",
                              *[a for f in fields for a in ("-e", f)]], capture_output=True, text=True, timeout=60)
        return [line.split("\t") for line in out.stdout.splitlines()]

    verdicts = scapy_verdicts(cap, key_entries(keys))
    theirs = [row for row in dissect(cap, "ah") if verdicts[int(row[0])]]
    ours = dissect(tmp_path / "out.pcapng", "frame")
    assert len(ours) == len(theirs) > 0
    for t, o in zip(theirs, ours, strict=True):
        head, tail = t[1].split(":ah:", 1)
        # transport mode: behind an IP header rebuilt from the outer addresses, with the IPv6
        # extension headers in front of AH (RFC 4302 §3.1.1) but a reassembled datagram's
        # Fragment header (RFC 8200 §4.5)
        outer = head.split(":ip", 1)[1]
        outer = "ip" + outer.replace(":ipv6.fraghdr", "") if outer.startswith("v6") else "ip"
        layers = tail if tail.split(":")[0] in ("ip", "ipv6") else f"{outer}:{tail}"
        assert o[1] == f"raw:{layers}", (t, o)
        assert o[2:] == t[2:], (t, o)  # the innermost addresses (transport: the outer ones)


def test_without_keys_payloads_are_written_unverified(tmp_path):
    """AH needs no key to read its payload: written all the same, with an EPB comment and a JSON
    status saying the ICV was not verified; exit 3 (nothing verified) and a line saying why."""
    cap = AH_DIR / "ah-v4.pcap"
    r, recs = decrypt(cap, tmp_path / "out.pcapng")
    assert r.returncode == 3 and "their payloads were written with the ICV not verified" in r.stderr
    assert [x["status"] for x in recs] == ["no_key"] * 14 and all("inner" in x for x in recs)
    assert len(written(tmp_path / "out.pcapng")) == 14
    comments = subprocess.run(["tshark", "-r", str(tmp_path / "out.pcapng"), "-T", "fields", "-e", "frame.comment"],
                              capture_output=True, text=True, timeout=60).stdout.split("\n")[:14]
    assert all(c.startswith("ipsecscope: AH ICV not verified (no_key)") for c in comments), comments


def test_icv_failures_are_kept_with_a_comment_as_esp_failures_are(tmp_path):
    """A wrong key: every ICV of that SA fails; --keep-other copies those frames unchanged with the
    reason (as for ESP), the other SAs' payloads go out unverified; exit 3, nothing verified."""
    cap = AH_DIR / "ah-v4.pcap"
    r, recs = decrypt(cap, tmp_path / "out.pcapng", AH_DIR / "ah-wrong.keys.json", extra=("--keep-other",))
    assert r.returncode == 3 and "no AH ICV verified: 5 of 14 AH packets failed" in r.stderr
    failed = [x["frame"] for x in recs if x["status"] == "icv_failed"]
    assert len(failed) == 5 and not any("inner" in x for x in recs if x["status"] == "icv_failed")
    got = written(tmp_path / "out.pcapng")
    raw = {f.index: f.data for f in open_capture(cap)}
    assert [d for _t, d, i in got if i == 1] == [raw[n] for n in failed]  # kept unchanged, interface 1
    assert sum(i == 0 for _t, _d, i in got) == 9
    assert "AH SPI 0xa4000001 198.18.0.1 -> 198.18.0.2: 0 verified, 5 icv_failed, 0 no_key" in r.stderr


def test_ah_protecting_esp_decrypts_the_esp(tmp_path):
    """AH over ESP (an SA bundle): the AH record, then the ESP packet it protects decrypted as a
    frame of the ESP SA, its inner packet written; a packet whose AH ICV fails is dropped before ESP
    (RFC 4302 §3.4.4), as the receiver drops it."""
    cap, keys = AH_DIR / "ah-esp.pcap", AH_DIR / "ah-esp.keys.json"
    assert scapy_verdicts(cap, key_entries(keys)) == {1: True, 2: True, 3: False}  # the sample, by scapy's AH check
    r, recs = decrypt(cap, tmp_path / "out.pcapng", keys)
    assert r.returncode == 4, r.stderr
    assert [(x["frame"], x["protocol"], x["status"]) for x in recs] == [
        (1, "AH", "ok"), (1, "ESP", "ok"), (2, "AH", "ok"), (2, "ESP", "ok"), (3, "AH", "icv_failed")]
    k = {e["spi"]: e for e in json.loads(keys.read_text())["esp"]}["0xe4000005"]
    sa = SecurityAssociation(ESP, spi=0xE4000005, crypt_algo="AES-CBC", crypt_key=bytes.fromhex(k["enc_key"]),
                             auth_algo="HMAC-SHA1-96", auth_key=bytes.fromhex(k["auth_key"]),
                             tunnel_header=IP(src=k["src"], dst=k["dst"]))
    want = [bytes(sa.decrypt(_esp_of(p))) for p in rdpcap(str(cap))[:2]]
    assert [d for _t, d, _i in written(tmp_path / "out.pcapng")] == want
    # without keys: both records per frame, nothing written
    r, recs = decrypt(cap, tmp_path / "nokey.pcapng")
    assert r.returncode == 3
    assert [(x["protocol"], x["status"]) for x in recs] == [("AH", "no_key"), ("ESP", "no_key")] * 3


def _esp_of(frame):
    """The frame's IP / ESP (AH taken out) as scapy's ESP SA decrypts it."""
    ip = frame[IP]
    return IP(src=ip.src, dst=ip.dst, proto=50) / ESP(bytes(ip[AH].payload))


def _engine(cap: Path, keys: Path, out: Path, jobs: int = 1) -> tuple:
    s = engine.run(cap, load_keystore(keys), out=str(out), jsonl_out=str(out) + ".jsonl", opts=engine.Options(),
                   jobs=jobs, parallel_min_bytes=0)
    return (out.read_bytes(), Path(str(out) + ".jsonl").read_text(), s.ah, s.ah_verified, s.ah_icv_failed,
            s.ah_written, s.written, [(k, v.verified, v.icv_failed) for k, v in s.ah_per_sa])


def test_every_path_gives_the_same_answer(tmp_path, monkeypatch):
    """One process, the bulk step on (AH is left to the per-record loop), split over processes,
    and the general path (gzip'd input): the same bytes, records and counts."""
    cap, keys = AH_DIR / "ah-v4.pcap", AH_DIR / "ah-v4.keys.json"
    ref = _engine(cap, keys, tmp_path / "ref.pcapng")
    assert ref[2:6] == (14, 13, 1, 13)
    monkeypatch.setattr(hotloop, "BULK_MIN_BYTES", 0)
    assert _engine(cap, keys, tmp_path / "bulk.pcapng") == ref
    monkeypatch.setattr(engine, "CHUNK_MIN_BYTES", 1)
    par = _engine(cap, keys, tmp_path / "par.pcapng", jobs=2)
    assert par[2:] == ref[2:] and par[0] == ref[0]
    gz = tmp_path / "in.pcap.gz"
    gz.write_bytes(gzip.compress(cap.read_bytes()))
    assert _engine(gz, keys, tmp_path / "gz.pcapng")[1:] == ref[1:]


def test_a_display_filter_selects_ah_frames(tmp_path):
    """-Y: only the AH frames the filter selects get a record and their payload (tunnel mode here)."""
    r, recs = decrypt(AH_DIR / "ah-v4.pcap", tmp_path / "out.pcapng", AH_DIR / "ah-v4.keys.json",
                      extra=("-Y", "ah.spi == 0xa4000003"))
    assert r.returncode == 0, r.stderr
    assert [(x["frame"], x["status"], x["inner"]["src"]) for x in recs] == [(10, "ok", "10.1.0.1"), (11, "ok", "10.1.0.1")]
    assert [IP(d).dst for _t, d, _i in written(tmp_path / "out.pcapng")] == ["10.2.0.1", "10.2.0.1"]


def _esn_wrap_truth() -> dict[int, int | None]:
    """Frame -> the full 64-bit sequence number its ICV verifies with, None when it verifies with
    neither high half: an ICV computed here, independently of both ipsecscope and scapy's AH
    verification: HMAC-SHA1-96 over scapy's RFC 4302 §3.3.3.1 zeroed view of the packet, then
    the ESN high 32 bits (§3.3.3.2.1)."""
    import hashlib
    import hmac

    from scapy.layers.ipsec import zero_mutable_fields

    key = bytes.fromhex(json.loads((AH_DIR / "ah-esn-wrap.keys.json").read_text())["esp"][0]["auth_key"])
    out: dict[int, int | None] = {}
    for n, frame in enumerate(rdpcap(str(AH_DIR / "ah-esn-wrap.pcap")), 1):
        ip = frame[IP]
        sent, lo = bytes(ip[AH].icv), ip[AH].seq
        view = bytes(zero_mutable_fields(IP(bytes(ip)), sending=True))
        out[n] = next((hi << 32 | lo for hi in (0, 1)
                       if hmac.new(key, view + hi.to_bytes(4, "big"), hashlib.sha1).digest()[:12] == sent), None)
    return out


@pytest.mark.parametrize("jsonl", [False, True], ids=["pcapng", "pcapng+jsonl"])
def test_esn_crossing_2_32_in_a_later_chunk_is_reconciled(tmp_path, jsonl):
    """RFC 4302 §2.5.1 / Appendix B: the ESN high bits are inferred from what came before. Split in
    two (``-j 2``), the second chunk starts inside a corrupted run after the counter crossed
    2^32: on its own it spends its high-bits search on failing packets and never finds high bits
    1; the reconcile step runs it again from the first chunk's state, as for ESP. Same bytes,
    records and counts as one process, every good packet verified at its own 64-bit number."""
    cap, keys = AH_DIR / "ah-esn-wrap.pcap", AH_DIR / "ah-esn-wrap.keys.json"
    truth = _esn_wrap_truth()
    good = {n: s for n, s in truth.items() if s is not None}
    assert len(good) == 600 and min(good.values()) < 1 << 32 < max(good.values())  # the data crosses 2^32

    def run(jobs: int) -> tuple:
        out = tmp_path / f"j{jobs}.pcapng"
        j = str(out) + ".jsonl" if jsonl else None
        s = engine.run(cap, load_keystore(keys), out=str(out), jsonl_out=j, opts=engine.Options(), jobs=jobs,
                       parallel_min_bytes=0)
        return s, out.read_bytes(), Path(j).read_text() if j else ""

    s1, out1, j1 = run(1)
    s2, out2, j2 = run(2)
    assert s2.jobs == 2 and s2.reconciled_chunks == 1
    for s in (s1, s2):
        assert (s.ah, s.ah_verified, s.ah_icv_failed, s.ah_written) == (640, 600, 40, 600)
        (_k, st), = s.ah_per_sa
        assert (st.esn, st.seq_hi) == (True, 1)
    assert out2 == out1 and j2 == j1
    if jsonl:
        recs = [json.loads(line) for line in j2.splitlines()]
        assert {r["frame"]: r["seq"] for r in recs if r["status"] == "ok"} == good
        assert sorted(r["frame"] for r in recs if r["status"] == "icv_failed") == sorted(set(truth) - set(good))
