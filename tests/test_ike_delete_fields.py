"""A Delete payload whose fields contradict RFC 7296 §3.11 (the IKE SA deleted with SPIs, ESP SPIs
that are not 4 bytes, an undefined protocol, bytes past the counted SPIs) marks its message
malformed and deletes nothing; it used to delete the IKE SA for a CHILD SA's SPI.

Built from samples/healthy-gcm: frame 13 (the INFORMATIONAL deleting one ESP SA) and frame 23
(deleting the IKE SA) are decrypted with the sample's keys, one Delete field is changed, and the
message is encrypted again (AES-GCM-256, RFC 5282) so it passes its ICV."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES
from ike_reseal import reseal, sk_key

from ipsecscope.capture import open_capture

sys.path.insert(0, str(SAMPLES / "synthetic"))
from espgen import PcapWriter  # noqa: E402

SAMPLE = SAMPLES / "healthy-gcm"
KEYS = SAMPLE / "keys"


def _sk_keys() -> dict[bytes, tuple[bytes, bytes]]:
    out = {}
    for line in (KEYS / "ikev2_decryption_table").read_text().splitlines():
        if not line.startswith("#"):
            f = line.split(",")
            out[bytes.fromhex(f[0])] = (bytes.fromhex(f[2]), bytes.fromhex(f[3]))
    return out


def _reseal(frame: bytes, edit) -> bytes:
    """``frame`` with its SK payload's inner payloads passed through ``edit`` (ike_reseal.reseal),
    under the key the sample's table gives its sender."""
    return reseal(frame, sk_key(frame, _sk_keys()), edit)


def _set(offset: int, value: int, fmt: str = "!B"):
    def edit(inner: bytes) -> bytes:
        assert inner[:1] == b"\x00"  # the Delete is the only payload: header, then proto, size, count
        b = bytearray(inner)
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)
    return edit


MUTATIONS = {  # name: (frame, edit, reason in the malformed note)
    "child-delete-as-ike": (13, _set(4, 1), "deletes the IKE SA (protocol 1) yet has 1 SPI of 4 bytes"),
    "esp-spi-size-3": (13, _set(5, 3), "ESP SPI size 3; ESP and AH SPIs are 4 bytes"),
    "protocol-9": (13, _set(4, 9), "protocol ID 9"),
    "ike-delete-1000-spis": (23, _set(6, 1000, "!H"), "deletes the IKE SA (protocol 1) yet has 1000 SPIs of 0"),
    "esp-0-spis-4-bytes": (13, _set(6, 0, "!H"), "4 bytes after its 0 SPIs"),
}


def _capture(path: Path, frame_no: int, edit) -> None:
    with open_capture(SAMPLE / "capture.pcapng") as r, PcapWriter(path) as w:
        for f in r:
            w.write(f.ts_ns, _reseal(f.data, edit) if f.index == frame_no else f.data)


def _cli(*args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "ipsecscope", *args, "-k", str(KEYS)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    return p.stdout


@pytest.mark.parametrize("name", MUTATIONS)
def test_contradicting_delete_is_malformed_and_deletes_nothing(tmp_path: Path, name: str) -> None:
    frame_no, edit, why = MUTATIONS[name]
    cap = tmp_path / "mut.pcap"
    _capture(cap, frame_no, edit)
    rows = {json.loads(x)["frame"]: json.loads(x) for x in _cli("packets", "--json", str(cap)).splitlines()}
    assert rows[frame_no]["status"] == "malformed"
    assert why in rows[frame_no]["info"] and "(decrypted)" in rows[frame_no]["info"]
    assert sum(r["status"] == "malformed" for r in rows.values()) == 1
    sas = json.loads(_cli("sas", "--json", str(cap)))
    ike = next(s for s in sas["ike_sas"] if s["spi_i"] == "b1b8da23a004d038")
    # the IKE SA ends at frame 23's Delete, never at frame 13's (a CHILD SA's, however damaged)
    if frame_no == 13:
        assert ike["state"] == "deleted" and ike["deleted"] == pytest.approx(rows[23]["time"])
