"""Transport-mode output keeps the IPv6 extension headers in front of ESP (RFC 4303 §3.1.1):
Hop-by-Hop, Routing, Destination Options and an atomic Fragment header (RFC 6946) stay in the
decrypted packet, the last one's Next Header set to what the ESP trailer named, Payload Length
counting them; a datagram reassembled from real fragments is written whole, without its Fragment
header (RFC 8200 §4.5). (AH: tests/test_decrypt_ah.py, ah-v6.pcap.)

Oracles: scapy's ESP receiver (``SecurityAssociation.decrypt``, which leaves the headers before
ESP in place) on each packet, fragments reassembled by scapy's ``defragment6``; tshark's dissection
of the capture, ESP decrypted with the same keys, against its dissection of decrypt's output.
"""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

from conftest import DATA, needs_tshark
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, defragment6
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.utils import rdpcap

from ipsecscope.api import load_keystore
from ipsecscope.capture import open_capture
from ipsecscope.export import engine

HERE = DATA / "ipv6-ext"
CAP, KEYS, ESP_SA = HERE / "ipv6-ext-esp.pcap", HERE / "ipv6-ext-esp.keys.json", HERE / "ipv6-ext-esp.esp_sa"


def _decrypt(cap: Path, out: Path) -> list[bytes]:
    s = engine.run(cap, load_keystore(KEYS), out=str(out), jsonl_out=None, opts=engine.Options(), jobs=1)
    assert (s.decrypted, s.icv_failed) == (6, 0)
    with open_capture(out) as r:
        return [bytes(f.data) for f in r]


def _scapy_receiver() -> list[bytes]:
    """Each ESP packet as scapy's receiver leaves it once ESP is taken out (transport mode)."""
    import json

    k = json.loads(KEYS.read_text())["esp"][0]
    sa = SecurityAssociation(ESP, spi=int(k["spi"], 16), crypt_algo="AES-CBC", crypt_key=bytes.fromhex(k["enc_key"]),
                             auth_algo="HMAC-SHA1-96", auth_key=bytes.fromhex(k["auth_key"]))
    frames = [f[IPv6] for f in rdpcap(str(CAP))]
    out, frags = [], []
    for ip in frames:
        if IPv6ExtHdrFragment in ip and (ip[IPv6ExtHdrFragment].m or ip[IPv6ExtHdrFragment].offset):
            frags.append(ip)
            if ip[IPv6ExtHdrFragment].m:
                continue
            ip = defragment6(frags)
        out.append(bytes(sa.decrypt(IPv6(bytes(ip)))))
    return out


def test_headers_before_esp_are_kept_as_scapys_receiver_keeps_them(tmp_path):
    ours = _decrypt(CAP, tmp_path / "out.pcapng")
    theirs = _scapy_receiver()
    assert len(ours) == len(theirs) == 6
    for n, (o, t) in enumerate(zip(ours, theirs, strict=True), 1):
        # bytes 0-3 (traffic class, flow label) and 7 (hop limit) are decrypt's own
        assert (o[4:7], o[8:]) == (t[4:7], t[8:]), n
    # frame 1: Hop-by-Hop whose Next Header is now UDP; frame 4: the atomic Fragment header kept
    assert ours[0][6] == 0 and ours[0][40] == 17 and IPv6(ours[0]).plen == len(ours[0]) - 40
    assert IPv6ExtHdrFragment in IPv6(ours[3]) and IPv6ExtHdrFragment not in IPv6(ours[4])


def test_both_paths_write_the_same_packets(tmp_path):
    """The per-record path (an uncompressed pcap) and the general reader (gzip'd) write the same
    bytes. (Not split over processes: this capture is so small that a chunk bound falls between
    the fragments of frame 5, which no chunk then reassembles.)"""
    ref = _decrypt(CAP, tmp_path / "a.pcapng")
    gz = tmp_path / "in.pcap.gz"
    gz.write_bytes(gzip.compress(CAP.read_bytes()))
    assert _decrypt(gz, tmp_path / "b.pcapng") == ref


@needs_tshark
def test_tshark_dissects_the_output_as_the_decrypted_capture(tmp_path):
    """tshark on the capture (ESP decrypted with the same keys) and on decrypt's output: the same
    layers but ESP (and a reassembled datagram's Fragment header), the same ports and lengths."""
    _decrypt(CAP, tmp_path / "out.pcapng")
    prof = tmp_path / "wsprofile"
    prof.mkdir()
    (prof / "esp_sa").write_text(ESP_SA.read_text())
    fields = ("frame.protocols", "ipv6.hopopts.nxt", "ipv6.dstopts.nxt", "ipv6.fraghdr.nxt", "udp.srcport",
              "udp.length", "icmpv6.echo.sequence_number", "_ws.malformed")

    def dissect(path: Path, *opts: str) -> list[list[str]]:
        out = subprocess.run(["tshark", "-n", "-r", str(path), *opts, "-T", "fields", "-E", "occurrence=l",
                              *[a for f in fields for a in ("-e", f)]], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(prof)), check=True)
        return [line.split("\t") for line in out.stdout.splitlines()]

    theirs = [r for r in dissect(CAP, "-o", "esp.enable_encryption_decode:TRUE") if ":esp:" in r[0]]
    ours = dissect(tmp_path / "out.pcapng")
    assert len(ours) == len(theirs) == 6
    for t, o in zip(theirs, ours, strict=True):
        layers = t[0].replace("eth:ethertype:", "raw:").replace(":esp", "")
        if t[3] == "50" and int(t[5] or 0) > 1200:  # the reassembled datagram
            layers = layers.replace(":ipv6.fraghdr", "")
        assert o[0] == layers, (t, o)
        assert o[4:] == t[4:], (t, o)
    # the last header before the payload names it (not ESP): 17 UDP, 60 the Destination Options
    # header that was encrypted behind ESP (frame 2)
    assert [o[1] for o in ours] == ["17", "43", "", "44", "17", ""]
    assert [o[2] for o in ours] == ["", "58", "17", "", "", ""]
