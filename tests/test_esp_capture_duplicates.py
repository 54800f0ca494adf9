"""ESP packets a capture holds twice are no replays (tests/data/esp-duplicates, made from
samples/healthy-gcm by make.py there).

A capture point that sees each packet twice (a Linux bridge and its port, ``-i any`` with a VLAN
device, a mirror of both directions) repeats every ESP sequence number a few microseconds apart.
ipsecscope counted each copy as a replay: ESP-REPLAY, a WARNING saying the receiver's anti-replay
check drops them "or a replay attack", on every flow. A copy of the flow's previous packet (same
number, length and ICV) within 20 ms is the capture's own (state/esp_flow.CAPTURE_DUP_GAP, as
IKE's); the same packet seconds later, or the same number with other bytes, stays a replay.
Decryption is unaffected: tshark decrypts every frame, copies too, and so do we.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import DATA, SAMPLES, needs_tshark
from conftest import field_cli as cli
from public_data import public

from ipsecscope.api import iter_decrypted
from tests.test_decrypt_tshark import tshark_decrypted

CAP = DATA / "esp-duplicates" / "captured-twice-replay.pcap"
KEYS = SAMPLES / "healthy-gcm" / "keys"


def findings(*args: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in json.loads(cli("findings", *args, "--json"))["findings"]:
        out.setdefault(f["code"], []).append(f)
    return out


def _tshark_esp(cap) -> list[tuple[int, str, int, int]]:
    """(frame, SPI, sequence number, frame length) of every ESP frame, as tshark reads them."""
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", "esp", "-T", "fields", "-e", "frame.number",
                          "-e", "esp.spi", "-e", "esp.sequence", "-e", "frame.len"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [(int(a), b, int(c), int(d)) for a, b, c, d in (ln.split("\t") for ln in out.splitlines())]


@needs_tshark
def test_copies_are_capture_duplicates_and_replays_stay_replays() -> None:
    esp = _tshark_esp(CAP)
    # tshark: 18 ESP frames each followed by its copy (same SPI and number), one of those copies
    # with another ICV, and the first frame again at the end
    assert len(esp) == 37 and all(esp[i][1:] == esp[i + 1][1:] for i in range(0, 36, 2))
    assert esp[-1][1:] == esp[0][1:] and esp[-1][0] == 53
    for args in ((str(CAP),), (str(CAP), "-k", str(KEYS))):
        f = findings(*args)
        (d,) = f["CAPTURE-DUPLICATES"]
        assert d["severity"] == "info" and d["title"] == "17 ESP packets captured twice (the same bytes within 20 ms)"
        assert "SPI 0x8c46d2ff (6)" in d["explanation"] and "2 other ESP/AH packets" in d["explanation"]
        replays = {r["sa"]: r["frames"] for r in f["ESP-REPLAY"]}
        # the packet 3 s later (same bytes) and the copy whose ICV differs (4 µs later)
        assert replays == {"esp:198.18.0.1>198.18.0.2:0x15b69dc5": [53], "esp:198.18.0.2>198.18.0.1:0x4c38ff56": [24]}
        assert all(r["title"].endswith(": 1 duplicate sequence number") for r in f["ESP-REPLAY"])
    flows = {x["spi"]: x for x in json.loads(cli("sas", str(CAP), "-k", str(KEYS), "--json"))["flows"]}
    assert {s: (x["packets"], x["duplicates"], x["capture_duplicates"], x["lost"]) for s, x in flows.items()} == {
        "0x15b69dc5": (7, 1, 3, 0), "0x427e7d84": (6, 0, 3, 0), "0x8c46d2ff": (12, 0, 6, 0), "0x4c38ff56": (12, 1, 5, 0)}


@needs_tshark
def test_every_copy_is_decrypted_as_tshark_decrypts_it(tmp_path) -> None:
    """Decryption is per packet, as tshark's: both copies are decrypted and written (the one whose
    ICV was changed fails its check; tshark decrypts without checking)."""
    theirs = tshark_decrypted(CAP, KEYS / "esp_sa", tmp_path)
    ours = {p.frame: p for p in iter_decrypted(CAP, [KEYS])}
    assert sorted(theirs) == sorted(ours) and len(ours) == 37
    assert [fr for fr, p in ours.items() if p.status != "ok"] == [24]
    for fr, p in ours.items():
        if fr != 24:
            assert theirs[fr][:len(p.inner)] == p.inner
    out = tmp_path / "out.pcapng"
    r = subprocess.run(["tshark", "-r", str(CAP), "-Y", "esp"], capture_output=True, text=True, check=True)
    assert len(r.stdout.splitlines()) == 37
    d = subprocess.run([sys.executable, "-m", "ipsecscope", "decrypt", str(CAP), "-k", str(KEYS), "-o", str(out), "-q"],
                       capture_output=True, text=True, timeout=120)
    assert d.returncode == 4 and "1 ESP packet failed its ICV check" in d.stderr  # the altered copy
    written = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.number"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(written) == 36  # every decrypted copy


def test_the_sample_without_copies_has_neither() -> None:
    f = findings(str(SAMPLES / "healthy-gcm" / "capture.pcapng"), "-k", str(KEYS))
    assert "CAPTURE-DUPLICATES" not in f and "ESP-REPLAY" not in f


def test_ah_copies_are_capture_duplicates() -> None:
    """AH (RFC 4302 §3.4.3: the same anti-replay check) through the general path: tests/data/ah's
    ah-v4.pcap with every frame twice has its own findings plus CAPTURE-DUPLICATES (was: 4
    ESP-REPLAY "AH replay" warnings); the corrupted frame's copy is a copy too (same bytes)."""
    ah = DATA / "ah"
    keys = str(ah / "ah-v4.keys.json")
    f = findings(str(DATA / "esp-duplicates" / "ah-captured-twice.pcap"), "-k", keys)
    (d,) = f.pop("CAPTURE-DUPLICATES")
    assert d["title"] == "14 AH packets captured twice (the same bytes within 20 ms)"
    assert set(f) == set(findings(str(ah / "ah-v4.pcap"), "-k", keys)) and "ESP-REPLAY" not in f


def test_a_few_copies_are_the_paths_not_the_captures() -> None:
    # samples/path-impairments: a user-space bridge on the path sent the 3rd left->right ESP packet
    # twice (bridge.log "dup": [3]). The copy has the same bytes a few µs later, as a capture's own
    # copy would, but it is one of the flow's packets, not most of them: a capture point that
    # duplicates copies every packet it sees twice. So it stays a replay, the receiver drops it.
    cap = SAMPLES / "path-impairments" / "capture.pcapng"
    flows = [x for x in json.loads(cli("sas", str(cap), "--json"))["flows"] if x["capture_duplicates"]]
    assert [x["capture_duplicates"] for x in flows] == [1]
    f = findings(str(cap))
    assert "CAPTURE-DUPLICATES" not in f
    (r,) = f["ESP-REPLAY"]
    assert r["title"].endswith(": 1 duplicate sequence number")
    assert "a device on the path sent them twice" in r["explanation"]


FLOOD = DATA / "esp-duplicates" / "flood.pcap"
DENIAL6 = public("suricata-verify/ipv6-dos-with-ext-headers-5/denial6-5.pcap")


@needs_tshark
def test_a_flood_of_one_packet_is_no_capture_copies() -> None:
    """A capture point makes a few copies of a packet, one per extra path it captures it on, each
    within 20 ms of the original (state/copies). One ESP packet sent 50 times 100 µs apart was
    "1 packet sent, 49 captured twice": every sighting within 20 ms of the one before it was taken
    as a copy, so the flood vanished (no replay, a rate of one packet). Now copies are timed from
    the original, at most 3 per original; a flow seen 4 times over (3 copies each) keeps its
    copies, and so does IKE (12 identical IKE_SA_INIT requests 100 µs apart: 3 copies, the rest
    the sender's retransmissions)."""
    esp = _tshark_esp(FLOOD)
    assert len(esp) == 90 and {(s, n) for _f, s, n, _l in esp[:50]} == {("0x5a000010", 1)}
    sas = json.loads(cli("sas", str(FLOOD), "--json"))
    flows = {x["spi"]: (x["packets"], x["duplicates"], x["capture_duplicates"]) for x in sas["flows"]}
    assert flows == {"0x5a000010": (50, 46, 3), "0x5a000011": (40, 0, 30)}
    (x,) = sas["ike_sas"][0]["exchanges"]
    assert x["request_frames"] == [91, *range(95, 103)] and x["retransmits"] == 8
    f = findings(str(FLOOD))
    (d,) = f["CAPTURE-DUPLICATES"]
    assert d["title"] == "3 IKE messages and 30 ESP packets captured twice (the same bytes within 20 ms)"
    (r,) = f["ESP-REPLAY"]
    assert r["sa"] == "esp:198.18.31.1>198.18.31.2:0x5a000010"


@needs_tshark
def test_a_public_ah_flood_is_sent_not_captured_35690_times() -> None:
    """suricata-verify's THC-IPv6 denial6 capture: 35690 byte-identical AH packets (SPI 0,
    sequence number 0, an echo request inside) in 2.26 s. tshark reads each as its own AH packet; we said "35690 pkts,
    35689 captured twice" and a rate of 0.4 packets a second."""
    rows = subprocess.run(["tshark", "-n", "-r", str(DENIAL6), "-Y", "ah && !icmpv6.type == 4", "-T", "fields",
                           "-e", "ah.spi", "-e", "ah.sequence"], capture_output=True, text=True, timeout=120,
                          check=True).stdout.splitlines()
    assert len(rows) == 35690 and set(rows) == {"0x00000000\t0"}
    (flow,) = json.loads(cli("sas", str(DENIAL6), "--json"))["flows"]
    assert (flow["protocol"], flow["spi"], flow["packets"]) == ("AH", "0x00000000", 35690)
    assert flow["capture_duplicates"] <= 3 and flow["duplicates"] + flow["capture_duplicates"] == 35689
    (r,) = findings(str(DENIAL6))["ESP-RESERVED-SPI"]
    assert r["title"] == "35690 AH packets 2001:db8:1::2 -> 2001:db8:1::1 with the reserved SPI 0"
