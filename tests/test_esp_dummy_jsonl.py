"""Dummy ESP packets (next header 59, RFC 4303 §2.6) and malformed ones are counted where a person
reads the totals: the JSONL holds one record per ESP packet (a dummy too, with no inner packet), and
decrypt's last stderr line adds up (decrypted + icv_failed + no_key + malformed = ESP).

Built from samples/healthy-gcm: its frames, then packets of its SA 0x15b69dc5 encrypted again with
the real key around odd plaintexts (dummy packets, a pad length its payload cannot hold)."""

from __future__ import annotations

import gzip
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ipsecscope.capture import open_capture

sys.path.insert(0, str(SAMPLES / "synthetic"))
from espgen import PcapWriter, Sa, esp_encrypt, esp_frame, ipv4, udp  # noqa: E402

SAMPLE = SAMPLES / "healthy-gcm"
KEYS = SAMPLE / "keys"


def _sa() -> Sa:
    for line in (KEYS / "esp_sa").read_text().splitlines():
        f = line.replace('"', "").split(",")
        if len(f) > 5 and f[3] == "0x15b69dc5":
            return Sa(int(f[3], 16), f[1], f[2], "aes-gcm16", bytes.fromhex(f[5][2:]))
    raise AssertionError("SA 0x15b69dc5 not in the sample's esp_sa")


def _capture(path: Path) -> int:
    """The sample's frames, then 3 dummy packets, 1 with a bad pad length, 1 ordinary; the ESP count."""
    sa = _sa()
    inner = ipv4("10.1.0.1", "10.2.0.1", 17, udp("10.1.0.1", "10.2.0.1", 1234, 53, b"hello"))
    with open_capture(SAMPLE / "capture.pcapng") as r, PcapWriter(path) as w:
        frames = list(r)
        for f in frames:
            w.write(f.ts_ns, f.data)
        ts = frames[-1].ts_ns + 1_000_000
        esps = [esp_encrypt(sa, 100, b"", 59, bytes(8)),  # all padding: a dummy packet may be
                esp_encrypt(sa, 101, bytes(30), 59, bytes(8)),
                esp_encrypt(sa, 102, inner, 59, bytes(8))]
        # pad length 200, more than the payload holds (RFC 4303 §2.4): malformed
        hdr, iv = struct.pack("!II", sa.spi, 103), bytes(8)
        plain = inner + bytes((-(len(inner) + 2)) % 4) + bytes((200, 4))
        esps.append(hdr + iv + AESGCM(sa.enc_key[:32]).encrypt(sa.enc_key[32:] + iv, plain, hdr))
        esps.append(esp_encrypt(sa, 104, inner, 4, bytes(8)))
        for i, esp in enumerate(esps):
            w.write(ts + i, esp_frame(sa, esp, udp_encap=True))
    return 18 + len(esps)


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("gz", [False, True], ids=["pcap", "gzip"])
def test_every_esp_packet_has_a_record_and_a_count(tmp_path: Path, jobs: str, gz: bool) -> None:
    cap = tmp_path / "mut.pcap"
    n_esp = _capture(cap)
    if gz:  # a small gzip'd capture takes the general reader, not the mmap fast path
        cap = tmp_path / "mut.pcap.gz"
        cap.write_bytes(gzip.compress((tmp_path / "mut.pcap").read_bytes()))
    out, jl = tmp_path / "o.pcapng", tmp_path / "o.jsonl"
    p = subprocess.run([sys.executable, "-m", "ipsecscope", "decrypt", str(cap), "-k", str(KEYS), "-o", str(out),
                        "--jsonl", str(jl), "-j", jobs], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    recs = [json.loads(x) for x in jl.read_text().splitlines()]
    assert len(recs) == n_esp  # one record per ESP packet: the dummies were missing
    dummies = [r for r in recs if r["status"] == "ok" and r["next_header"] == 59]
    assert [r["inner_len"] for r in dummies] == [0, 30, 33] and not any("inner" in r for r in dummies)
    assert sum(r["status"] == "malformed" for r in recs) == 1
    last = p.stderr.strip().splitlines()[-1]
    m = re.match(r"(\d+) frames, (\d+) ESP: (\d+) decrypted \((\d+) dummy, next header 59\), (\d+) icv_failed, "
                 r"(\d+) no_key, (\d+) malformed; (\d+) inner packets written", last)
    assert m, last
    frames, esp, dec, dummy, icv, nokey, malformed, written = map(int, m.groups())
    assert (esp, dummy, malformed) == (n_esp, 3, 1)
    assert dec + icv + nokey + malformed == esp and written == dec - dummy
