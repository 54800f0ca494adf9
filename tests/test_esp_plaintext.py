"""What a decrypted ESP payload must be before it counts as decrypted (RFC 4303 §2.4-2.6), and
ESP inside ESP.

- issue 16 #2: a payload that cannot hold the packet its next header names (all padding with next
  header 4, an IPv6 header cut short, an IPv4 total length past the payload) is *malformed* even
  with a valid ICV: counted, explained, nothing (and nothing empty) written. Crafted packets with
  valid ICVs (AES-GCM through the inlined GCM loop, AES-CBC + HMAC through the inlined CBC loop).
- issue 11 #8: with no integrity check (tcpdump ``-E`` secrets, NULL auth) a wrong key gives
  garbage, so the padding (1, 2, 3, ...), next header and inner IP are checked: tcpdump's
  espudp1 (wrong key: tcpdump prints ``[|esp]``/``ip-proto-227``) fails every packet and findings
  names the key; esp1/esp5 (right keys) still decrypt every packet to what tcpdump prints.
- issue 11 #9: tcpdump's esp2 (ESP in ESP, keys for both layers) decrypts to the inner ICMP
  echo requests tcpdump prints, on the fast loop, the general loop and the gzip reader alike.

tcpdump captures and expected outputs: tests/data/tcpdump (see its PROVENANCE.md).
"""

from __future__ import annotations

import gzip
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ipsecscope.api import decrypt_capture, iter_decrypted, load_keystore
from ipsecscope.capture import open_capture
from ipsecscope.crypto.esp import check_payload
from ipsecscope.errors import DecryptError
from ipsecscope.export import engine
from tests.conftest import IPSECSCOPE, SAMPLES, needs_tshark, public_dir

TCPD = public_dir("tcpdump")  # third-party: materialised at test time (tests/public_data.py)
SECRETS = TCPD / "esp-secrets.txt"
sys.path.insert(0, str(SAMPLES / "synthetic"))


def _frames(path: Path) -> list:
    with open_capture(path) as r:
        return list(r)


def _crafted(tmp_path: Path, encr: str, integ: str = "none") -> tuple[Path, Path, list[bytes]]:
    """Good packets with three bad payloads between them, every ICV valid."""
    from espgen import PcapWriter, Sa, esp_encrypt, ether, integ_key_len, ipv4, key_sizes

    rng = random.Random(f"plain-{encr}")
    sa = Sa(0xC0FFEE01, "198.18.5.1", "198.18.5.2", encr, rng.randbytes(key_sizes(encr, 256)), integ,
            rng.randbytes(integ_key_len(integ)))
    keys = tmp_path / f"{encr}.keys.json"
    keys.write_text(json.dumps({"schema": "ipsecscope.keys/1", "esp": [sa.json_entry()]}))
    good = [ipv4("10.5.0.1", "10.5.0.2", 17, bytes(8) + bytes([i]) * 30) for i in range(6)]
    short_v4 = bytearray(good[0])
    short_v4[2:4] = (len(short_v4) + 40).to_bytes(2, "big")  # total length past the payload
    payloads = [(good[0], 4), (b"", 4), (good[1], 4), (b"\x60" + bytes(20), 41), (good[2], 4),
                (bytes(short_v4), 4), (good[3], 4), (good[4], 4), (good[5], 4)]
    cap = tmp_path / f"{encr}.pcap"
    with PcapWriter(cap) as w:
        for i, (inner, nh) in enumerate(payloads):
            w.write(10**18 + i * 1000, ether(ipv4(sa.src, sa.dst, 50, esp_encrypt(sa, i + 1, inner, nh, rng.randbytes(16)))))
    return cap, keys, good


@pytest.mark.parametrize("encr,integ", [("aes-gcm16", "none"), ("aes-cbc", "sha256")], ids=["gcm", "cbc-hmac"])
@pytest.mark.parametrize("path", ["fast-loop", "general-loop", "gzip-reader", "two-processes"])
def test_a_payload_that_cannot_hold_its_packet_is_malformed(tmp_path: Path, encr: str, integ: str, path: str) -> None:
    cap, keys, good = _crafted(tmp_path, encr, integ)
    out, jl = tmp_path / "out.pcapng", tmp_path / "out.jsonl"
    kw: dict = {}
    if path == "general-loop":
        kw["jsonl_out"] = str(jl)
    elif path == "gzip-reader":
        gz = cap.with_suffix(".pcap.gz")
        gz.write_bytes(gzip.compress(cap.read_bytes()))
        cap = gz
    elif path == "two-processes":
        kw.update(jobs=2, parallel_min_bytes=0, mark_every=1)
    s = engine.run(cap, load_keystore(keys), out=str(out), opts=engine.Options(), **kw)
    assert (s.decrypted, s.malformed, s.icv_failed, s.written) == (6, 3, 0, 6)
    assert [f.data for f in _frames(out)] == good  # nothing empty, nothing short
    (_, st), = s.per_sa
    assert st.malformed == 3 and "no IPv4 packet" in st.last_reason  # the last of the three
    if path == "general-loop":
        recs = [json.loads(x) for x in jl.read_text().splitlines()]
        bad = [r for r in recs if r["status"] != "ok"]
        assert [r["status"] for r in bad] == ["malformed"] * 3
        assert "next header 4 (IPv4) but the 0-byte payload cannot hold its 20-byte header" in bad[0]["reason"]
        assert "IPv6" in bad[1]["reason"] and "total length" in bad[2]["reason"]
    # the Python API and the pure function say the same
    assert [p.status for p in iter_decrypted(tmp_path / f"{encr}.pcap", keys)].count("malformed") == 3


def test_check_payload_rules() -> None:
    with pytest.raises(DecryptError, match="cannot hold"):
        check_payload(b"\x01\x02\x02\x04")  # all padding, next header 4
    assert check_payload(b"\x01\x02\x02\x3b") == (0, 59, 2)  # a dummy packet may be all padding
    assert check_payload(b"\x01\x02\x02\x3b", strict=True) == (0, 59, 2)
    with pytest.raises(DecryptError, match="1, 2, 3"):
        check_payload(b"\x01\x03\x02\x3b", strict=True)  # only without an ICV is the padding checked
    assert check_payload(b"\x01\x03\x02\x3b") == (0, 59, 2)
    with pytest.raises(DecryptError, match="next header 200"):
        check_payload(bytes(8) + b"\x00\xc8", strict=True)
    assert check_payload(bytes(8) + b"\x00\xc8") == (8, 200, 0)


def _tcpdump_lines(name: str) -> list[str]:
    return (TCPD / name).read_text().splitlines()


def test_wrong_key_without_integrity_check_fails_every_packet(tmp_path: Path) -> None:
    """espudp1 with esp-secrets.txt: tcpdump finds no inner packet in any of them."""
    lines = _tcpdump_lines("espudp1.out")
    assert all("[|esp]" in x or "ip-proto-" in x for x in lines)  # tcpdump: garbage, every packet
    out = tmp_path / "o.pcapng"
    s = decrypt_capture(TCPD / "espudp1.pcap", SECRETS, out=out)
    assert (s.decrypted, s.icv_failed, s.written) == (0, len(lines), 0)
    assert _frames(out) == []
    (_, st), = s.per_sa
    assert "wrong key" in st.last_reason
    # findings name the wrong key
    r = subprocess.run([*IPSECSCOPE, "findings", str(TCPD / "espudp1.pcap"), "-k", str(SECRETS), "--json"],
                       capture_output=True, text=True, timeout=120)
    doc = json.loads(r.stdout)
    found = [f for f in doc["findings"] if f["code"] == "ESP-ICV-FAILED"]
    assert found and "0x12345678" in found[0]["title"] and "wrong key" in found[0]["title"], doc["findings"]


ICMP_RE = re.compile(r"ICMP echo request, id (\d+), seq (\d+), length (\d+)$")


def _icmp_of(frames) -> list[tuple[int, int, int]]:
    out = []
    for f in frames:
        d = f.data
        assert d[0] == 0x45 and d[9] == 1, d[:20].hex()
        hl = (d[0] & 15) * 4
        out.append((int.from_bytes(d[hl + 4:hl + 6], "big"), int.from_bytes(d[hl + 6:hl + 8], "big"), len(d) - hl))
    return out


def _expected_icmp(name: str) -> list[tuple[int, int, int]]:
    return [tuple(int(g) for g in ICMP_RE.search(x).groups()) for x in _tcpdump_lines(name)]


@pytest.mark.parametrize("cap,expect,secret", [
    ("02-sunrise-sunset-esp.pcap", "esp1.out", "0x12345678@192.1.2.45 3des-cbc-hmac96:0x4043434545464649494a4a4c4c4f4f515152525454575758"),
    ("08-sunrise-sunset-aes.pcap", "esp5.out", None),
])
def test_right_key_without_integrity_check_still_decrypts(tmp_path: Path, cap: str, expect: str, secret) -> None:
    keys = SECRETS
    if secret:  # TESTrun's esp1 passes its secret on the command line
        keys = tmp_path / "esp1-secrets.txt"
        keys.write_text(secret + "\n")
    out = tmp_path / "o.pcapng"
    s = decrypt_capture(TCPD / cap, keys, out=out)
    want = _expected_icmp(expect)
    assert (s.decrypted, s.icv_failed, s.malformed) == (len(want), 0, 0)
    assert _icmp_of(_frames(out)) == want


@pytest.mark.parametrize("how", ["fast-loop", "general-loop", "gzip-reader"])
def test_nested_esp_decrypts_both_layers(tmp_path: Path, how: str) -> None:
    cap = TCPD / "08-sunrise-sunset-esp2.pcap"
    out, jl = tmp_path / "o.pcapng", tmp_path / "o.jsonl"
    if how == "gzip-reader":
        gz = tmp_path / "esp2.pcap.gz"
        gz.write_bytes(gzip.compress(cap.read_bytes()))
        cap = gz
    s = decrypt_capture(cap, SECRETS, out=out, jsonl=jl if how == "general-loop" else None)
    want = _expected_icmp("esp2.out")
    assert (s.decrypted, s.nested_decrypted, s.nested_failed, s.written) == (len(want), len(want), 0, len(want))
    assert _icmp_of(_frames(out)) == want
    assert {k[2] for k, _ in s.per_sa} == {0x12345678, 0xABCDABCD}
    if how == "general-loop":
        rec = json.loads(jl.read_text().splitlines()[0])
        assert rec["spi"] == "0x12345678" and rec["nested"][0]["spi"] == "0xabcdabcd"
        assert rec["nested"][0]["status"] == "ok" and rec["inner"]["proto"] == "ICMP"


def test_nested_esp_without_inner_keys_stops_at_the_outer_layer(tmp_path: Path) -> None:
    keys = tmp_path / "outer-only.txt"
    keys.write_text(SECRETS.read_text().splitlines()[2] + "\n")  # 0x12345678@192.1.2.45 only
    out = tmp_path / "o.pcapng"
    s = decrypt_capture(TCPD / "08-sunrise-sunset-esp2.pcap", keys, out=out)
    assert (s.decrypted, s.nested_decrypted) == (8, 0)
    frames = _frames(out)
    assert len(frames) == 8 and all(f.data[9] == 50 for f in frames)  # the inner ESP packets


@needs_tshark
def test_nested_esp_matches_tshark(tmp_path: Path) -> None:
    """tshark on our output reads the inner ICMP the same way as on tcpdump's answer."""
    out = tmp_path / "o.pcapng"
    decrypt_capture(TCPD / "08-sunrise-sunset-esp2.pcap", SECRETS, out=out)
    r = subprocess.run(["tshark", "-n", "-r", str(out), "-T", "fields", "-e", "icmp.ident", "-e", "icmp.seq"],
                       capture_output=True, text=True, timeout=120)
    got = [tuple(int(x) for x in line.split("\t")) for line in r.stdout.splitlines()]
    assert got == [(i, s) for i, s, _ in _expected_icmp("esp2.out")]
