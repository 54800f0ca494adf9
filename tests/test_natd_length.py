"""NAT detection data that is no SHA-1 hash (not 20 octets, RFC 7296 §2.23) marks its message
malformed and explains nothing: compared as a hash it "did not match" and IKE-NAT-DETECTED told of
encapsulation forced by both peers. Built from samples/healthy-gcm (no NAT): the IKE_SA_INIT pair
(frames 1-2, clear text) with its NAT_DETECTION_SOURCE_IP notifies cut to 5 or grown to 24 octets."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES

from ipsecscope.capture import open_capture

sys.path.insert(0, str(SAMPLES / "synthetic"))
from espgen import PcapWriter, with_udp_payload  # noqa: E402

SAMPLE = SAMPLES / "healthy-gcm"
NAT_D_SRC = 16388


def _resize_natd(frame: bytes, size: int) -> bytes:
    ihl = (frame[14] & 15) * 4
    at = 14 + ihl + 8  # UDP 500: no non-ESP marker
    ike = frame[at:]
    nxt, off, out = ike[16], 28, bytearray(ike[:28])
    while nxt:
        n2, _c, ln = struct.unpack_from("!BBH", ike, off)
        body = bytearray(ike[off:off + ln])
        if nxt == 41 and struct.unpack_from("!H", body, 6)[0] == NAT_D_SRC:
            body = bytearray((body[:8 + size] + bytes(size))[:8 + size])
            struct.pack_into("!H", body, 2, len(body))
        out += body
        off, nxt = off + ln, n2
    struct.pack_into("!I", out, 24, len(out))
    return with_udp_payload(frame, bytes(out))


@pytest.mark.parametrize("size", [5, 24])
def test_natd_of_another_length_is_malformed_not_a_nat(tmp_path: Path, size: int) -> None:
    cap = tmp_path / "natd.pcap"
    with open_capture(SAMPLE / "capture.pcapng") as r, PcapWriter(cap) as w:
        for f in r:
            w.write(f.ts_ns, _resize_natd(f.data, size) if f.index in (1, 2) else f.data)

    def cli(*args: str) -> str:
        p = subprocess.run([sys.executable, "-m", "ipsecscope", *args, str(cap), "-k", str(SAMPLE / "keys")],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
        return p.stdout

    rows = [json.loads(x) for x in cli("packets", "--json", "-Y", "frame.number <= 2").splitlines()]
    assert [r["status"] for r in rows] == ["malformed", "malformed"]
    assert all(f"NAT_DETECTION_SOURCE_IP data is {size} bytes, a SHA-1 hash takes 20 (RFC 7296 §2.23)" in r["info"]
               for r in rows)
    codes = [f["code"] for f in json.loads(cli("findings", "--json"))["findings"]]
    assert "IKE-NAT-DETECTED" not in codes and "CAPTURE-MALFORMED" in codes
