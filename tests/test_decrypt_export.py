"""``ipsecscope decrypt`` end to end: the pcapng it writes (read back with the capture stage's own
reader and with tshark), --keep-other, --dsb, --jsonl, gzip and pcapng input, the parallel path
(with ESN state reconciled across chunks), and bad input that must be counted, never crash.

Ground truth: the synthetic captures' ``*.truth.json`` (what the generator encrypted).
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from ipsecscope.api import decrypt_capture, load_keystore
from ipsecscope.capture import open_capture
from ipsecscope.cli import main as cli_main
from ipsecscope.export import engine, hotloop
from ipsecscope.export.perframe import ip_header as _ip_header
from tests.conftest import CORPUS, SAMPLES, needs_tshark

SYN = SAMPLES / "synthetic"
NAMES = ["esn-wrap", "aead", "cbc-ctr-hmac", "ipv6-transport-natt"]


def _expected_packets(name: str) -> list[tuple[int, bytes]]:
    """(input frame, inner IP packet) for every frame the generator expects to decrypt."""
    t = json.loads((SYN / f"{name}.truth.json").read_text())
    sas = {int(s["spi"], 16): s for s in t["sas"]}
    out = []
    import socket

    for frame, f in sorted(t["frames"].items(), key=lambda kv: int(kv[0])):
        if f.get("status") != "ok":
            continue
        inner = bytes.fromhex(f["inner"])
        if f["next_header"] not in (4, 41):  # transport: we rebuild the IP header from the outer one
            sa = sas[f["spi"]]
            af = socket.AF_INET6 if ":" in sa["src"] else socket.AF_INET
            inner = _ip_header(socket.inet_pton(af, sa["src"]), socket.inet_pton(af, sa["dst"]),
                               f["next_header"], len(inner)) + inner
        out.append((int(frame), inner))
    return out


def _read(path: Path) -> list:
    with open_capture(path) as r:
        frames = list(r)
        return frames, list(r.secrets)


@pytest.mark.parametrize("name", NAMES)
def test_cli_writes_the_inner_packets(name: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.pcapng"
    rc = cli_main(["decrypt", str(SYN / f"{name}.pcap"), "-k", str(SYN / f"{name}.keys.json"), "-o", str(out)])
    truth = json.loads((SYN / f"{name}.truth.json").read_text())["frames"].values()
    # exit 4 when some ESP packets fail their ICV (the generator corrupted some on purpose), else 0
    assert rc == (4 if any(f.get("status") == "icv_failed" for f in truth) else 0)
    frames, _ = _read(out)
    expected = _expected_packets(name)
    assert [f.data for f in frames] == [inner for _, inner in expected]
    assert all(f.linktype == 101 for f in frames)
    # original timestamps, to the nanosecond
    inputs, _ = _read(SYN / f"{name}.pcap")
    ts = {f.index: f.ts_ns for f in inputs}
    assert [f.ts_ns for f in frames] == [ts[i] for i, _ in expected]
    err = capsys.readouterr().err
    assert "decrypted" in err and "SPI 0x" in err


@needs_tshark
def test_output_opens_in_tshark(tmp_path: Path) -> None:
    out = tmp_path / "out.pcapng"
    decrypt_capture(SYN / "ipv6-transport-natt.pcap", SYN / "ipv6-transport-natt.keys.json", out=out,
                    keep_other=True, dsb=True)
    r = subprocess.run(["tshark", "-n", "-r", str(out), "-T", "fields", "-e", "frame.protocols", "-e", "ip.src",
                        "-e", "ipv6.src"], capture_output=True, text=True, check=True)
    lines = r.stdout.splitlines()
    assert len(lines) == 32 and "Malformed" not in r.stdout + r.stderr.replace("Running as user", "")
    # first decrypted frame: the 6in6 ping; raw IP link type
    assert lines[0].startswith("raw:ipv6:icmpv6") and "fd00:1::1" in lines[0]


def test_keep_other_and_dsb(tmp_path: Path) -> None:
    name = "ipv6-transport-natt"
    out = tmp_path / "out.pcapng"
    stats = decrypt_capture(SYN / f"{name}.pcap", SYN / f"{name}.keys.json", out=out, keep_other=True, dsb=True)
    frames, secrets = _read(out)
    inputs, _ = _read(SYN / f"{name}.pcap")
    truth = json.loads((SYN / f"{name}.truth.json").read_text())["frames"]
    assert len(frames) == len(inputs)  # one out per in: decrypted, or kept unchanged
    for fin, fout in zip(inputs, frames, strict=True):
        t = truth.get(str(fin.index), {})
        if t.get("status") == "ok":
            assert fout.linktype == 101
        else:  # keepalive, plain UDP, no key, corrupted ICV: the original frame, same link type
            assert (fout.data, fout.linktype, fout.ts_ns) == (fin.data, fin.linktype, fin.ts_ns)
    assert (stats.decrypted, stats.icv_failed, stats.no_key, stats.other) == (21, 2, 3, 6)
    # the DSBs: Wireshark's ESP SA secrets type (0x45535053) with the SAs used, plus ipsecscope's
    # own type only for SAs Wireshark has no algorithm name for; loadable as a key file
    assert secrets[0][0] == 0x45535053 and {t for t, _ in secrets} <= {0x45535053, 0x4950534B}
    store = load_keystore(out)
    assert sorted(k.spi for k in store.esp) == sorted(k.spi for k in stats.used_keys)
    assert len(store.esp) == 6  # 7 SAs, one without a key


def test_jsonl(tmp_path: Path) -> None:
    name = "esn-wrap"
    out = tmp_path / "out.jsonl"
    decrypt_capture(SYN / f"{name}.pcap", SYN / f"{name}.keys.json", out=out, fmt="jsonl", with_hex=True)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    truth = json.loads((SYN / f"{name}.truth.json").read_text())["frames"]
    assert len(recs) == len(truth)
    for r in recs:
        t = truth[str(r["frame"])]
        assert r["schema"] == "ipsecscope.decrypt/1"
        assert (r["status"], r["seq"], r["esn_hi"], r["inner_hex"]) == (t["status"], t["seq"], t["esn_hi"], t["inner"])
        assert r["inner"]["proto"] == "ICMP" and r["inner"]["src"].startswith("10.")
    assert max(r["seq"] for r in recs) > 1 << 32  # the 64-bit sequence numbers, high bits inferred


def test_jsonl_to_stdout_and_pcapng_together(tmp_path: Path, capsys) -> None:
    out = tmp_path / "o.pcapng"
    rc = cli_main(["decrypt", str(SYN / "aead.pcap"), "-k", str(SYN / "aead.keys.json"), "-o", str(out),
                   "--jsonl", "-", "-q"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 27 and all(json.loads(x)["status"] == "ok" for x in lines)
    assert len(_read(out)[0]) == 27


def test_gzip_and_pcapng_input_give_the_same_output(tmp_path: Path) -> None:
    """esp-bug-12671.pcapng.gz goes through the general reader; decompressed, the mmap fast path."""
    gz = CORPUS / "esp-bug-12671.pcapng.gz"
    plain = tmp_path / "esp.pcapng"
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    assert engine.scan(gz) is None and engine.scan(plain) is not None
    a, b = tmp_path / "a.pcapng", tmp_path / "b.pcapng"
    sa = decrypt_capture(gz, CORPUS / "esp_sa.tmpl", out=a)
    sb = decrypt_capture(plain, CORPUS / "esp_sa.tmpl", out=b)
    assert a.read_bytes() == b.read_bytes()
    assert sa.decrypted == sb.decrypted == 6
    assert [f.data[:1] for f in _read(a)[0]] == [b"\x45"] * 6


def _esn_capture(path: Path) -> tuple[Path, int]:
    """An ESN AES-GCM SA crossing 2^32, then a run of corrupted packets, then more good ones."""
    import sys

    sys.path.insert(0, str(SYN))
    from espgen import PcapWriter, Sa, esp_encrypt, ether, ipv4

    rng = random.Random(99)
    sa = Sa(0xE5E5E5E5, "198.18.77.1", "198.18.77.2", "aes-gcm16", rng.randbytes(20), esn=True)
    keys = path.with_suffix(".keys.json")
    keys.write_text(json.dumps({"schema": "ipsecscope.keys/1", "esp": [sa.json_entry()]}))
    seq = (1 << 32) - 150
    with PcapWriter(path) as w:
        for i in range(640):
            inner = ipv4("10.7.0.1", "10.7.0.2", 17, bytes(8) + i.to_bytes(4, "big") * 10)
            esp = esp_encrypt(sa, seq, inner, 4, rng.randbytes(8))
            if 300 <= i < 340:
                esp = esp[:-1] + bytes((esp[-1] ^ 1,))
            w.write(10**18 + i * 1000, ether(ipv4(sa.src, sa.dst, 50, esp)))
            seq += 1
    return keys, 600


@pytest.mark.parametrize("with_jsonl", [False, True], ids=["fast-loop", "general-loop+jsonl"])
@pytest.mark.parametrize("mark_every", [1, 512], ids=["walked-bounds", "lazy-bounds"])
def test_parallel_equals_sequential_with_esn_reconcile(tmp_path: Path, mark_every: int, with_jsonl: bool) -> None:
    cap = tmp_path / "esn.pcap"
    keys, good = _esn_capture(cap)
    seq_out, par_out = tmp_path / "seq.pcapng", tmp_path / "par.pcapng"
    store = load_keystore(keys)
    j1, j2 = (str(tmp_path / "seq.jsonl"), str(tmp_path / "par.jsonl")) if with_jsonl else (None, None)
    s1 = engine.run(cap, store, out=str(seq_out), jsonl_out=j1, opts=engine.Options(), jobs=1)
    s2 = engine.run(cap, load_keystore(keys), out=str(par_out), jsonl_out=j2, opts=engine.Options(), jobs=2,
                    parallel_min_bytes=0, mark_every=mark_every)
    if with_jsonl:
        assert Path(j1).read_bytes() == Path(j2).read_bytes()
    assert s2.jobs == 2
    assert (s1.decrypted, s1.icv_failed) == (good, 40)
    assert (s2.decrypted, s2.icv_failed) == (good, 40)
    # chunk 2 starts inside the corrupted run: alone it exhausts its ESN search budget and cannot
    # find high bits 1; the reconcile step re-runs it with chunk 1's state.
    assert s2.reconciled_chunks == 1
    assert par_out.read_bytes() == seq_out.read_bytes()
    (_, sa_stats), = s2.per_sa
    assert sa_stats.esn is True and sa_stats.seq_hi == 1


@pytest.mark.parametrize("mark_every", [1, 512], ids=["walked-bounds", "lazy-bounds"])
def test_parallel_many_chunks_per_process_equals_sequential(tmp_path: Path, monkeypatch, mark_every: int) -> None:
    """More chunks than processes (taken from a shared queue by whichever process is free; lazy
    bounds resolved from the nearest bound another process found): still byte-identical to one
    process, ESN state reconciled wherever a chunk started inside the corrupted run."""
    cap = tmp_path / "esn.pcap"
    keys, good = _esn_capture(cap)
    seq_out, par_out = tmp_path / "seq.pcapng", tmp_path / "par.pcapng"
    j1, j2 = tmp_path / "seq.jsonl", tmp_path / "par.jsonl"
    monkeypatch.setattr(engine, "CHUNK_MIN_BYTES", 1)
    monkeypatch.setattr(engine, "MAX_CHUNKS_PER_JOB", 4)
    monkeypatch.setattr(hotloop, "WINDOW", 333)  # and records straddling read windows in every chunk
    assert engine.chunk_count(cap.stat().st_size, 3) == 12
    s1 = engine.run(cap, load_keystore(keys), out=str(seq_out), jsonl_out=str(j1), opts=engine.Options(), jobs=1)
    s2 = engine.run(cap, load_keystore(keys), out=str(par_out), jsonl_out=str(j2), opts=engine.Options(), jobs=3,
                    parallel_min_bytes=0, mark_every=mark_every)
    assert s2.jobs == 3
    if mark_every == 1:  # equal parts by frame count: chunk 6 starts inside the corrupted run
        assert s2.reconciled_chunks >= 1
    assert (s2.frames, s2.decrypted, s2.icv_failed) == (s1.frames, s1.decrypted, s1.icv_failed) == (640, good, 40)
    assert par_out.read_bytes() == seq_out.read_bytes()
    assert j2.read_bytes() == j1.read_bytes()
    assert [x.seq_hi for _, x in s2.per_sa] == [1]


def test_default_jobs_is_one_process_below_the_auto_size(tmp_path: Path, monkeypatch) -> None:
    """``jobs=0`` (the CLI's default) on a file under AUTO_PARALLEL_MIN_BYTES runs one process
    whatever the idle cores (issue 15: a second process cost ~12 % more CPU at 200k packets for
    ~0.1 s of wall time); from that size on, the idle cores as before; an explicit count still splits."""
    cap = tmp_path / "esn.pcap"
    keys, _good = _esn_capture(cap)
    monkeypatch.setattr(engine.os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # every core idle
    monkeypatch.setattr(engine.os, "cpu_count", lambda: 4)
    size = cap.stat().st_size
    assert engine.default_jobs(engine.AUTO_PARALLEL_MIN_BYTES - 1) == 1
    assert engine.default_jobs(engine.AUTO_PARALLEL_MIN_BYTES) == engine.default_jobs() == 4
    auto = engine.run(cap, load_keystore(keys), out=str(tmp_path / "a.pcapng"), opts=engine.Options(), jobs=0,
                      parallel_min_bytes=0)
    assert auto.jobs == 1
    monkeypatch.setattr(engine, "AUTO_PARALLEL_MIN_BYTES", size)
    auto = engine.run(cap, load_keystore(keys), out=str(tmp_path / "b.pcapng"), opts=engine.Options(), jobs=0,
                      parallel_min_bytes=0)
    assert auto.jobs > 1
    two = engine.run(cap, load_keystore(keys), out=str(tmp_path / "c.pcapng"), opts=engine.Options(), jobs=2,
                     parallel_min_bytes=0)
    assert two.jobs == 2
    assert (tmp_path / "a.pcapng").read_bytes() == (tmp_path / "b.pcapng").read_bytes() \
        == (tmp_path / "c.pcapng").read_bytes()


def test_fast_cbc_hmac_path_equals_general_path_with_damage(tmp_path: Path) -> None:
    """The fast loop's inlined AES-CBC + HMAC-SHA-256 (verify, then decrypt in the SA's one CBC
    context) against the general per-packet path (api.iter_decrypted), on a capture where packets
    of an SA already decrypting arrive with a flipped ICV bit, a flipped ciphertext bit, or a
    ciphertext cut to a length that is no multiple of the block: same packets out, same counts."""
    import sys

    sys.path.insert(0, str(SYN))
    from espgen import PcapWriter, Sa, esp_encrypt, ether, ipv4

    from ipsecscope.api import iter_decrypted

    rng = random.Random(5)
    sas = [Sa(0xCB00AA00 + i, f"198.18.9.{i + 1}", "198.19.9.1", "aes-cbc", rng.randbytes(32), "sha256",
              rng.randbytes(32)) for i in range(2)]
    keys = tmp_path / "k.json"
    keys.write_text(json.dumps({"schema": "ipsecscope.keys/1", "esp": [s.json_entry() for s in sas]}))
    cap = tmp_path / "cbc.pcap"
    with PcapWriter(cap) as w:
        for i in range(200):
            sa = sas[i % 2]
            esp = bytearray(esp_encrypt(sa, i // 2 + 1, ipv4("10.9.0.1", "10.9.0.2", 17, bytes(8 + i)), 4,
                                        rng.randbytes(16)))
            if i in (40, 41, 90):
                esp[-1] ^= 1  # ICV
            elif i in (60, 61):
                esp[30] ^= 1  # ciphertext (the ICV covers it)
            elif i == 120:
                esp = esp[:-3]  # no whole number of blocks
            w.write(10**18 + i * 1000, ether(ipv4(sa.src, sa.dst, 50, bytes(esp))))
    out = tmp_path / "o.pcapng"
    stats = engine.run(cap, load_keystore(keys), out=str(out), opts=engine.Options(), jobs=1)
    general = list(iter_decrypted(cap, [keys]))
    assert [p.inner for p in general if p.status == "ok"] == [f.data for f in _read(out)[0]]
    assert stats.decrypted == sum(p.status == "ok" for p in general) == 194
    assert stats.icv_failed == sum(p.status == "icv_failed" for p in general) == 5
    assert stats.malformed + stats.icv_failed + stats.decrypted == 200


def test_wrong_key_unknown_spi_and_garbage_are_counted(tmp_path: Path) -> None:
    name = "cbc-ctr-hmac"
    doc = json.loads((SYN / f"{name}.keys.json").read_text())
    for e in doc["esp"][:3]:  # wrong keys for three SAs
        e["auth_key"] = "00" * (len(e["auth_key"]) // 2)
    del doc["esp"][3:5]  # and none at all for two
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    # plus a damaged copy of the capture: one ESP cut short, the last record truncated
    data = bytearray((SYN / f"{name}.pcap").read_bytes())
    cap = tmp_path / "cut.pcap"
    cap.write_bytes(bytes(data[:-10]))
    stats = decrypt_capture(cap, bad, out=tmp_path / "o.pcapng", jsonl=tmp_path / "o.jsonl")
    per = {k[2]: s for k, s in stats.per_sa}
    assert [per[0xCB000001 + i].icv_failed for i in range(3)] == [2, 2, 2]
    assert per[0xCB000004].no_key == 2 and per[0xCB000005].no_key == 2
    assert stats.icv_failed == 6 and stats.no_key == 4 and stats.truncated
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert {x["status"] for x in lines} == {"ok", "icv_failed", "no_key"}
    assert all(x["reason"] for x in lines if x["status"] != "ok")


def test_bad_output_path_is_a_clean_error(tmp_path: Path, capsys) -> None:
    rc = cli_main(["decrypt", str(SYN / "aead.pcap"), "-k", str(SYN / "aead.keys.json"),
                   "-o", str(tmp_path / "no" / "such" / "dir" / "x.pcapng")])
    assert rc == 1
    assert "cannot write" in capsys.readouterr().err


def test_not_a_capture_is_a_clean_error(tmp_path: Path, capsys) -> None:
    f = tmp_path / "x.pcap"
    f.write_text("hello, not a capture\n")
    rc = cli_main(["decrypt", str(f), "-k", str(SYN / "aead.keys.json"), "-o", str(tmp_path / "o.pcapng")])
    assert rc == 1
    assert capsys.readouterr().err.startswith(f"ipsecscope decrypt: error: {f} is not a pcap or pcapng file")


def test_samples_regenerate_identically(tmp_path: Path) -> None:
    subprocess.run(["python3", str(SYN / "make_synthetic.py"), str(tmp_path)], check=True, capture_output=True)
    for name in NAMES:
        for suffix in (".pcap", ".esp_sa", ".keys.json", ".truth.json"):
            assert (tmp_path / f"{name}{suffix}").read_bytes() == (SYN / f"{name}{suffix}").read_bytes(), name + suffix
    shutil.rmtree(tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_pcapng_input_with_keys_inside(name: str, tmp_path: Path) -> None:
    """The same capture as pcapng (two interfaces, keys in a Decryption Secrets Block, an odd
    block in between) gives the same output as the pcap with a key file."""
    from ipsecscope.export.pcapng import IDB, PcapngWriter, block

    src = tmp_path / "in.pcapng"
    inputs, _ = _read(SYN / f"{name}.pcap")
    with PcapngWriter(str(src)) as w:
        w.write_secrets((SYN / f"{name}.keys.json").read_bytes())
        a = w.add_interface(1)
        b = w.add_interface(1)
        for i, f in enumerate(inputs):
            if i == 5:
                w.write_raw(block(0x00000005, b"\0" * 12))  # an Interface Statistics Block: skipped
            w.write_packet(a if i % 2 else b, f.ts_ns, f.data, f.orig_len)
    assert IDB == 1
    out_pcap, out_ng = tmp_path / "a.pcapng", tmp_path / "b.pcapng"
    s1 = decrypt_capture(SYN / f"{name}.pcap", SYN / f"{name}.keys.json", out=out_pcap)
    s2 = decrypt_capture(src, None, out=out_ng)
    assert (s1.decrypted, s1.icv_failed, s1.no_key) == (s2.decrypted, s2.icv_failed, s2.no_key)
    assert [f.data for f in _read(out_pcap)[0]] == [f.data for f in _read(out_ng)[0]]
    # keep-other: frames of both interfaces come back on their own IDBs, unchanged
    out_k = tmp_path / "k.pcapng"
    decrypt_capture(src, None, out=out_k, keep_other=True)
    kept = [f for f in _read(out_k)[0] if f.linktype == 1]
    assert len(kept) == s2.frames - s2.decrypted


def test_pcapng_to_stdout(tmp_path: Path) -> None:
    """-o - streams pcapng to stdout (for `| tshark -r -`), same bytes as a file."""
    import sys

    args = ["decrypt", str(SYN / "aead.pcap"), "-k", str(SYN / "aead.keys.json"), "-q"]
    piped = subprocess.run([sys.executable, "-c", "import sys; from ipsecscope.cli import main; sys.exit(main())",
                            *args, "-o", "-"], capture_output=True, check=True).stdout
    f = tmp_path / "f.pcapng"
    assert cli_main([*args, "-o", str(f)]) == 0
    assert piped == f.read_bytes() and len(_read(f)[0]) == 27


def test_big_gzip_is_inflated_for_the_fast_path(tmp_path: Path, monkeypatch) -> None:
    """Above GZIP_FAST_MIN_BYTES a .gz is inflated to a temporary file and takes the fast path;
    the output is the same as the general reader's, and a cut-off gzip keeps what inflated."""
    name = "ipv6-transport-natt"
    gz = tmp_path / "c.pcap.gz"
    gz.write_bytes(gzip.compress((SYN / f"{name}.pcap").read_bytes()))
    general, fast = tmp_path / "g.pcapng", tmp_path / "f.pcapng"
    s1 = decrypt_capture(gz, SYN / f"{name}.keys.json", out=general, keep_other=True)
    monkeypatch.setattr(engine, "GZIP_FAST_MIN_BYTES", 0)
    s2 = decrypt_capture(gz, SYN / f"{name}.keys.json", out=fast, keep_other=True)
    # (the general path declares interfaces as it meets them, the fast path up front: compare frames)
    frames = [[(f.data, f.linktype, f.ts_ns) for f in _read(p)[0]] for p in (general, fast)]
    assert frames[0] == frames[1] and len(frames[0]) == 32 and s1.decrypted == s2.decrypted == 21
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(gz.read_bytes()[: len(gz.read_bytes()) * 2 // 3])
    s3 = decrypt_capture(cut, SYN / f"{name}.keys.json", out=tmp_path / "x.pcapng")
    assert s3.truncated and 0 < s3.decrypted < 21


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("eth", [False, True], ids=["raw-ip", "ethernet"])
def test_big_endian_raw_ip_pcap(name: str, eth: bool, tmp_path: Path) -> None:
    """A big-endian pcap of raw IP frames (the general loop, not the Ethernet fast loop), or of
    Ethernet frames (the general loop's own inlined ESP case), decrypts to the same inner packets
    as the little-endian Ethernet original."""
    import struct

    inputs, _ = _read(SYN / f"{name}.pcap")
    be = tmp_path / "be.pcap"
    with open(be, "wb") as f:
        f.write(struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1 if eth else 101))
        for fr in inputs:
            d = fr.data if eth else fr.data[14:]
            f.write(struct.pack(">IIII", fr.ts_ns // 10**9, fr.ts_ns % 10**9, len(d), len(d)) + d)
    a, b = tmp_path / "a.pcapng", tmp_path / "b.pcapng"
    decrypt_capture(SYN / f"{name}.pcap", SYN / f"{name}.keys.json", out=a)
    decrypt_capture(be, SYN / f"{name}.keys.json", out=b)
    assert [(f.data, f.ts_ns) for f in _read(a)[0]] == [(f.data, f.ts_ns) for f in _read(b)[0]]


def _as_pcapng(src: Path, dst: Path) -> None:
    from ipsecscope.export.pcapng import PcapngWriter

    frames, _ = _read(src)
    with PcapngWriter(str(dst)) as w:
        i = w.add_interface(1)
        for f in frames:
            w.write_packet(i, f.ts_ns, f.data, f.orig_len)


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
@pytest.mark.parametrize("name", NAMES)
def test_read_window_boundaries_change_nothing(name: str, fmt: str, tmp_path: Path, monkeypatch) -> None:
    """The hot loop reads the file in windows; records straddling a window edge (tiny windows make
    almost every record do so), a header cut at the end of the file and a record cut at the end
    must give exactly what one window over the whole file gives: same bytes out, same counts,
    same truncation note."""
    src = SYN / f"{name}.pcap"
    if fmt == "pcapng":
        src = tmp_path / "in.pcapng"
        _as_pcapng(SYN / f"{name}.pcap", src)
    data = src.read_bytes()
    cuts = {"whole": data, "cut-in-record": data[:-7], "cut-in-header": data[:len(data) - 30]}
    keys = SYN / f"{name}.keys.json"
    for label, blob in cuts.items():
        cap = tmp_path / f"{label}.{fmt}"
        cap.write_bytes(blob)
        runs = []
        for window in (1 << 21, 61, 200, 1500):
            monkeypatch.setattr(hotloop, "WINDOW", window)
            out = tmp_path / f"{label}-{window}.pcapng"
            s = engine.run(cap, load_keystore(keys), out=str(out), opts=engine.Options(), jobs=1)
            runs.append((out.read_bytes(), s.frames, s.decrypted, s.icv_failed, s.no_key, s.truncated))
        assert all(r == runs[0] for r in runs[1:]), (label, [r[1:] for r in runs])
        assert runs[0][2] > 0 if label == "whole" else True
        if label != "whole":
            assert runs[0][5], label  # the cut is reported


def test_progress_reports_climb_to_the_file_size(tmp_path: Path, monkeypatch) -> None:
    """The progress bar's feed: (done, total) byte counts that never go back and end at the size,
    sequential and parallel."""
    cap = tmp_path / "esn.pcap"
    keys, _ = _esn_capture(cap)
    size = cap.stat().st_size
    monkeypatch.setattr(hotloop, "WINDOW", 4096)  # several windows: several reports
    for jobs in (1, 2):
        seen: list[tuple[int, int]] = []
        engine.run(cap, load_keystore(keys), out=str(tmp_path / "o.pcapng"), opts=engine.Options(), jobs=jobs,
                   parallel_min_bytes=0, progress=lambda d, t, seen=seen: seen.append((d, t)))
        assert len(seen) >= 5, seen
        assert all(t == size for _, t in seen) and seen[-1][0] == size
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
