"""ESP inside ESP on the analysis path (`sas`, `findings`, `packets`, the TUI's Session).

tcpdump's 08-sunrise-sunset-esp2.pcap carries ESP (SPI 0xabcdabcd, 192.1.2.23 → 192.0.1.1) in ESP
(SPI 0x12345678 to 192.1.2.45); its esp2 / esp4 tests decrypt both layers with the keys of both
SAs. Each inner layer is an SA of its own (RFC 4301 §4.1: SPI + destination + protocol): its own
CHILD SA, counts and sequence analysis; the packet list shows every layer, and the display filter
matches the fields of each layer as tshark does (checked against tshark itself).

A capture nested deeper than MAX_NESTED is built here (AES-GCM layers in tunnel mode, keys in a
Wireshark esp_sa table tshark reads too): the layers past the bound are one counted malformed
mark, never a traceback or a silent stop.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, IPSECSCOPE, needs_tshark, public_dir
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from test_display_filter_oracle import FILTERS, _tshark_each
from test_session_fast import _load

from ipsecscope.crypto.esp import MAX_NESTED
from ipsecscope.session import Session

TCPDUMP = public_dir("tcpdump")  # third-party: materialised at test time (tests/public_data.py)
ESP2 = TCPDUMP / "08-sunrise-sunset-esp2.pcap"
# tshark profiles with the esp_sa table of both SAs, and of the outer SA only
BOTH = DATA / "tcpdump" / "derived" / "esp2-wsprofile"  # ours: esp-secrets.txt's SAs as esp_sa tables
OUTER = DATA / "tcpdump" / "derived" / "esp2-outer-wsprofile"

NESTED_FILTERS = [
    "esp.spi == 0xabcdabcd", "esp.spi != 0x12345678", "esp.spi != 0xabcdabcd", "esp.sequence == 3",
    "ip.dst == 192.0.1.1 && ip.proto == 50", "ip.src == 192.0.2.1", "ip.addr == 192.0.1.1", "ip.dst != 192.0.1.1",
    "ip.proto == 50 && icmp", "ip.proto != 1", "!(ip.proto == 50)", "ip.version == 4", "esp.protocol == 4",
    "esp.protocol != 4", "esp.spi == 0xabcdabcd && icmp.type == 8",
]


def _run(*args) -> subprocess.CompletedProcess:
    r = subprocess.run([*IPSECSCOPE, *map(str, args)], capture_output=True, text=True)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def _flows(cap: Path, keys: Path) -> dict[str, dict]:
    r = _run("sas", cap, "-k", keys, "--json")
    assert r.returncode == 0, r.stderr
    return {f["spi"]: f for f in json.loads(r.stdout)["flows"]}


def test_sas_tracks_the_inner_sa_as_its_own_child_sa():
    flows = _flows(ESP2, BOTH / "esp_sa")
    outer, inner = flows["0x12345678"], flows["0xabcdabcd"]
    assert (outer["src"], outer["dst"], outer["packets"], outer["decrypted"]) == ("192.1.2.23", "192.1.2.45", 8, 8)
    assert (inner["src"], inner["dst"], inner["packets"], inner["decrypted"]) == ("192.1.2.23", "192.0.1.1", 8, 8)
    assert inner["child_sa"] != outer["child_sa"]
    # the outer key alone: the inner SA is still seen (RFC 4301 §4.1), its packets have no key
    flows = _flows(ESP2, OUTER / "esp_sa")
    assert flows["0xabcdabcd"]["packets"] == 8 and flows["0xabcdabcd"]["no_key"] == 8
    assert flows["0xabcdabcd"]["decrypted"] == 0


def test_packets_info_shows_both_layers_as_tcpdump_prints_them():
    r = _run("packets", ESP2, "-k", TCPDUMP / "esp-secrets.txt", "--json")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 8
    # tcpdump esp2.out: "ESP(spi=0x12345678,seq=0x1) ... IP 192.1.2.23 > 192.0.1.1: ESP(spi=0xabcdabcd,seq=0x1)
    # ... IP 192.0.2.1 > 192.0.1.1: ICMP echo request"
    for n, row in enumerate(rows, 1):
        assert row["info"].startswith(f"ESP seq {n} ▸ ESP 192.1.2.23 → 192.0.1.1 0xabcdabcd seq {n} ▸ ICMP "
                                      "192.0.2.1 → 192.0.1.1 Echo (ping) request"), row["info"]
        (layer,) = row["inner"]["nested_esp"]
        assert (layer["spi"], layer["seq"], layer["status"], layer["next_header"]) == ("0xabcdabcd", n, "decrypted", 4)
        assert (row["inner"]["src"], row["inner"]["icmp_type"]) == ("192.0.2.1", 8)
    r = _run("packets", ESP2, "-k", OUTER / "esp_sa", "-c", "1")
    assert "ESP seq 1 ▸ ESP 192.1.2.23 → 192.0.1.1 0xabcdabcd seq 1 (no-key)" in r.stdout


def test_detail_decrypts_every_layer_again():
    s = Session.from_files([ESP2], [TCPDUMP / "esp-secrets.txt"])
    d = s.detail(3)
    ((pkt, res),) = d.esp_layers
    assert (pkt.spi, pkt.seq, pkt.dst, res.status) == (0xABCDABCD, 3, "192.0.1.1", "ok")
    assert d.inner[12:20] == bytes([192, 0, 2, 1, 192, 0, 1, 1])  # the innermost packet (ICMP)
    assert "0xabcdabcd" in d.inner_summary and "ICMP" in d.inner_summary
    assert s.stats.nested_esp == 8 and s.stats.decrypted == 8 and s.stats.esp == 8  # frames, not layers


@pytest.mark.parametrize("keys", [[TCPDUMP / "esp-secrets.txt"], [OUTER / "esp_sa"]], ids=["both", "outer"])
def test_fast_loop_equals_general_path(keys, monkeypatch):
    assert _load(str(ESP2), keys, True, monkeypatch) == _load(str(ESP2), keys, False, monkeypatch)


def _tshark(cap: Path, prof: Path, flt: str) -> list[int]:
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-o", "esp.enable_encryption_decode:TRUE", "-Y", flt,
                          "-T", "fields", "-e", "frame.number"],
                         env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(prof)), capture_output=True, text=True,
                         check=True).stdout
    return [int(x) for x in out.split()]


def _ours(session: Session, flt: str) -> list[int]:
    """What `packets -Y` selects (the same call, in-process: one load for many filters)."""
    from ipsecscope.cli.packets import filtered_frames
    from ipsecscope.model.filter import compile_filter

    return filtered_frames(session, compile_filter(flt))


@needs_tshark
@pytest.mark.parametrize("prof", [BOTH, OUTER], ids=["both-keys", "outer-key"])
def test_display_filter_matches_every_layer_as_tshark(prof, tmp_path):
    selected = 0
    session = Session.from_files([ESP2], [prof / "esp_sa"])
    filters = NESTED_FILTERS + [f.format(spi="0xabcdabcd") for f in FILTERS]
    # tshark's selections in one pass (see test_display_filter_oracle), its "esp" tied to -Y's
    *theirs, esp = _tshark_each(ESP2, prof, [f.replace("isakmp.exchtype", "isakmp.exchangetype") for f in filters]
                                + ["esp"], tmp_path)
    assert esp == _tshark(ESP2, prof, "esp")
    for flt, want in zip(filters, theirs, strict=True):
        assert _ours(session, flt) == want, flt
        selected += bool(want)
    assert selected >= 10


# --- deeper than the bound --------------------------------------------------------------------

def _ip(src: int, dst: int, proto: int, payload: bytes) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                      bytes([198, 18, src, 1]), bytes([198, 18, dst, 2]))
    return hdr + payload


def _esp(spi: int, seq: int, key: bytes, salt: bytes, inner: bytes, nh: int) -> bytes:
    """RFC 4303 §2 with AES-GCM-16 (RFC 4106: nonce = salt | IV, AAD = SPI | sequence number)."""
    pad = (-(len(inner) + 2)) % 4
    plain = inner + bytes(range(1, pad + 1)) + bytes([pad, nh])
    iv = struct.pack("!Q", seq)
    head = struct.pack("!II", spi, seq)
    return head + iv + AESGCM(key).encrypt(salt + iv, plain, head)


def _nested_capture(tmp: Path, layers: int) -> tuple[Path, Path]:
    """``layers`` ESP layers in tunnel mode around an ICMP echo request; (capture, esp_sa)."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"nested" * 4
    rows = []
    frames = []
    for seq in (1, 2, 3):
        pkt = _ip(0, 0, 1, icmp)  # 198.18.0.1 → 198.18.0.2
        for n in range(layers, 0, -1):  # innermost first
            key, salt = bytes([n]) * 16, bytes([n]) * 4
            spi = 0x1000 + n
            pkt = _ip(n, n, 50, _esp(spi, seq, key, salt, pkt, 4))
            if seq == 1:
                rows.append(f'"IPv4","*","198.18.{n}.2","0x{spi:08x}","AES-GCM with 16 octet ICV [RFC4106]",'
                            f'"0x{(key + salt).hex()}","NULL",""')
        frames.append(b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + pkt)
    cap = tmp / f"nested{layers}.pcap"
    with open(cap, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 1000 + i, 0, len(fr), len(fr)) + fr)
    prof = tmp / f"profile{layers}"
    prof.mkdir()
    (prof / "esp_sa").write_text("\n".join(rows) + "\n")
    return cap, prof / "esp_sa"


@pytest.mark.parametrize("layers", [MAX_NESTED + 1, MAX_NESTED + 2])
def test_nesting_beyond_the_bound_is_one_malformed_mark(tmp_path, layers):
    cap, keys = _nested_capture(tmp_path, layers)
    s = Session.from_files([cap], [keys])
    assert s.stats.esp == 3 and s.stats.decrypted == 3
    assert s.stats.nested_esp == 3 * MAX_NESTED  # the outer layer and MAX_NESTED inside it
    deep = layers - 1 > MAX_NESTED
    assert s.stats.malformed.get("esp", 0) == (3 if deep else 0)
    spis = {f.spi for f in s.table.flows.values()}
    assert spis == {0x1000 + n for n in range(1, MAX_NESTED + 2)}
    info = s.rows[0].info
    assert info.count(" ▸ ") == MAX_NESTED + 1
    assert ("ICMP 198.18.0.1 → 198.18.0.2 Echo" in info) is not deep
    r = _run("findings", cap, "-k", keys, "--json")
    codes = {f["code"] for f in json.loads(r.stdout)["findings"]}
    assert ("CAPTURE-MALFORMED" in codes) is deep


@needs_tshark
def test_four_nested_layers_agree_with_tshark(tmp_path):
    cap, keys = _nested_capture(tmp_path, MAX_NESTED + 1)
    session = Session.from_files([cap], [keys])
    for flt in ["icmp.type == 8", "esp.spi == 0x00001005", "ip.src == 198.18.3.1", "ip.dst == 198.18.0.2",
                "esp.sequence == 2 && icmp", "ip.proto == 50 && ip.proto == 1", "esp.protocol == 4"]:
        assert _ours(session, flt) == _tshark(cap, keys.parent, flt), flt


def test_looking_at_a_frame_again_counts_nothing():
    """detail() decrypts again with peek(): a payload that fails its checks (espudp1 with a key
    that is not its own, no ICV to tell) must not be counted a second time."""
    s = Session.from_files([TCPDUMP / "espudp1.pcap"], [TCPDUMP / "esp-secrets.txt"])
    before = repr(s.esp_decryptor.summary())
    frames = [r.frame for r in s.rows if r.kind == "ESP"]
    assert frames
    for f in frames * 2:
        s.detail(f)
    assert repr(s.esp_decryptor.summary()) == before
