"""A frame carrying AH and the ESP it protects (IP | AH | ESP: an SA bundle, RFC 4301 §4.1 transport
adjacency and §4.5) as the packet list, the display filters and the views show it.

tshark 4.0 dissects such a frame as ip:ah:esp: its Protocol column says ESP, and a filter sees
both layers in the one frame (``ah && esp``, ``ah.spi``, ``esp.spi``). ipsecscope records an AH
row and an ESP row for it; each must answer for the frame's other layer, and the packet list shows
one ``AH+ESP`` line with the AH's SPI, sequence number and ICV verdict beside the ESP's decryption.

Data: tests/data/ikev1-bundle (samples/ikev1-dead-peer's Quick Mode made an AH+ESP bundle: AH over
tunnel-mode ESP on the negotiated SPIs) and tests/data/ah/ah-esp.pcap (transport-mode AH over
tunnel-mode ESP; frame 3 has an ESP byte flipped after signing: the AH ICV and the ESP ICV fail).
Oracle: tshark with the ESP keys (esp_sa) from the same key files. Real kernels' bundle: packetlife's
AH+ESP tunnel capture (tests/data/zeek-spicy-ipsec/IPsec_ESP-AH_tunnel_mode.cap, no keys).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, IPSECSCOPE, ROOT, SAMPLES, needs_tshark, public
from test_tui import SIZE, sync
from test_tui_detail import _ah_detail_labels

from ipsecscope import Session
from ipsecscope.tui.app import create_app

BUNDLE = DATA / "ikev1-bundle" / "ikev1-bundle.pcap"
BUNDLE_KEYS = DATA / "ikev1-bundle" / "ikev1-bundle.keys.json"
PHASE1 = SAMPLES / "ikev1-dead-peer" / "keys" / "ikev1_decryption_table"
AH_ESP = DATA / "ah" / "ah-esp.pcap"
AH_ESP_KEYS = DATA / "ah" / "ah-esp.keys.json"

# tshark's esp_sa names for the key files' ciphers
_TSHARK_ENCR = {"ENCR_AES_GCM_16": "AES-GCM with 16 octet ICV [RFC4106]", "ENCR_AES_CBC": "AES-CBC [RFC3602]"}
_TSHARK_INTEG = {"AUTH_HMAC_SHA1_96": "HMAC-SHA-1-96 [RFC2404]"}

FILTERS = [
    "ah && esp",
    "ah && !esp",
    "esp && !ah",
    "!ah",
    "ah.spi == {ah_spi} && esp.spi == {esp_spi}",
    "ah.spi == {esp_spi}",
    "esp.spi == {ah_spi}",
    "ah.sequence == 2 && esp.sequence == 2",
    "ah.sequence == 2 && esp.sequence == 3",
    "ip.proto == 51 && esp",
    "ip.proto == 50",
    "icmp.type == 8 && ah.spi == {ah_spi}",
    "(esp.protocol == 4 || esp.protocol == 1) && ah",
]


def _esp_sa(keys: Path | None) -> list[str]:
    """tshark -o options giving it the key file's ESP SAs (AH needs no key: tshark never checks it)."""
    uat: list[str] = []
    for e in json.loads(keys.read_text())["esp"] if keys is not None else ():
        if e.get("protocol") == "ah":
            continue
        integ = _TSHARK_INTEG.get(e.get("integ", ""), "NULL")
        auth = f'0x{e["auth_key"]}' if integ != "NULL" else ""
        uat += ["-o", f'uat:esp_sa:"IPv4","{e["src"]}","{e["dst"]}","{e["spi"]}",'
                      f'"{_TSHARK_ENCR[e["encr"]]}","0x{e["enc_key"]}","{integ}","{auth}"']
    return uat


def _tshark_frames(cap: Path, keys: Path | None, flt: str) -> list[int]:
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-o", "esp.enable_encryption_decode:TRUE", *_esp_sa(keys),
                          "-Y", flt, "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [int(x) for x in out.split()]


def _cli(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([*IPSECSCOPE, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stderr
    return r


@needs_tshark
@pytest.mark.parametrize(("cap", "keys", "ah_spi", "esp_spi"), [
    pytest.param(BUNDLE, BUNDLE_KEYS, "0xcd82fe92", "0xcd82fe91", id="ikev1-bundle"),
    pytest.param(AH_ESP, AH_ESP_KEYS, "0xa4000005", "0xe4000005", id="ah-esp"),
    pytest.param(public("zeek-spicy-ipsec/IPsec_ESP-AH_tunnel_mode.cap"), None, "0x8179b705", "0x48dac2e4",
                 id="packetlife"),
])
def test_filters_see_both_layers_of_the_frame_as_tshark_does(cap: Path, keys: Path | None, ah_spi: str,
                                                             esp_spi: str) -> None:
    """Each filter selects tshark's frames; ``ah && esp`` selected none (the AH and the ESP were
    two rows, each with one layer)."""
    from ipsecscope.cli.packets import filtered_frames
    from ipsecscope.model.filter import compile_filter

    s = Session()
    s.add_key_files([str(keys)] if keys is not None else [])
    s.load(str(cap))
    ah_frames = _tshark_frames(cap, keys, "ah")
    assert ah_frames and ah_frames == _tshark_frames(cap, keys, "ah && esp")  # every AH frame holds ESP
    selected = 0
    for t in FILTERS:
        flt = t.format(ah_spi=ah_spi, esp_spi=esp_spi)
        theirs = _tshark_frames(cap, keys, flt)
        ours = filtered_frames(s, compile_filter(flt))
        if cap == AH_ESP:  # frame 3's ESP fails its ICV: tshark (no check by default) dissects the plaintext
            theirs, ours = [f for f in theirs if f != 3], [f for f in ours if f != 3]
        assert ours == theirs, f"{flt!r}: only tshark {sorted(set(theirs) - set(ours))}, " \
                               f"only ipsecscope {sorted(set(ours) - set(theirs))}"
        selected += bool(theirs)
    assert selected >= (6 if keys is not None else 4)


def test_filter_windows_never_split_a_frames_rows() -> None:
    """A window boundary between a frame's AH row and its ESP row would evaluate each alone: the
    windows end after a frame's last row (WINDOW made small to put bounds everywhere)."""
    import ipsecscope.filtering as filtering
    from ipsecscope.model.filter import compile_filter

    s = Session()
    s.add_key_files([str(BUNDLE_KEYS)])
    s.load(str(BUNDLE))
    whole = filtering.matches(compile_filter("ah && esp"), filtering.source_of(s))
    assert len(whole) == 12
    saved = filtering.WINDOW
    try:
        for w in (1, 2, 3, 7):
            filtering.WINDOW = w
            assert filtering.matches(compile_filter("ah && esp"), filtering.source_of(s)) == whole, w
    finally:
        filtering.WINDOW = saved


def test_packets_lists_the_frame_as_ah_and_esp() -> None:
    """One line per frame: protocol AH+ESP, the ESP's SPI, Info with the AH's SPI and sequence number
    then the ESP's decrypted packet; an AH ICV that fails says so (it said 'ESP' and nothing of the AH)."""
    out = _cli("packets", str(BUNDLE), "-k", str(BUNDLE_KEYS), "-Y", "frame.number in {10 11}").stdout.splitlines()
    assert len(out) == 2
    assert re.search(r"^\s+10 .* AH\+ESP cd82fe91 AH 0xcd82fe92 seq 1, ESP seq 1 ▸ ICMP 10\.1\.0\.1 → 10\.2\.0\.1 "
                     r"Echo \(ping\) request", out[0]), out[0]
    assert re.search(r"^\s+11 .* AH\+ESP 5b62d3f3 AH 0x5b62d3f4 seq 1, ESP seq 1 ▸ ICMP 10\.2\.0\.1", out[1]), out[1]
    out = _cli("packets", str(AH_ESP), "-k", str(AH_ESP_KEYS)).stdout.splitlines()
    assert [ln.split()[5] for ln in out] == ["AH+ESP"] * 3
    assert "AH 0xa4000005 seq 3 (icv-bad), ESP seq 3" in out[2] and "(icv-bad)" not in out[0] + out[1]


def test_packets_json_gives_the_esp_row_its_ah() -> None:
    rows = [json.loads(x) for x in _cli("packets", str(AH_ESP), "-k", str(AH_ESP_KEYS), "--json").stdout.splitlines()]
    assert [(r["kind"], r["spi"], r["status"]) for r in rows] == [
        ("ESP", "0xe4000005", "decrypted"), ("ESP", "0xe4000005", "decrypted"), ("ESP", "0xe4000005", "icv-bad")]
    assert [(r["ah"]["spi"], r["ah"]["seq"], r["ah"]["status"]) for r in rows] == [
        ("0xa4000005", 1, "verified"), ("0xa4000005", 2, "verified"), ("0xa4000005", 3, "icv-bad")]
    plain = json.loads(_cli("packets", str(DATA / "ah" / "ah-v4.pcap"), "-c", "1", "--json").stdout)
    assert plain["kind"] == "AH" and plain["ah"] is None  # an AH row is its own; "ah" is the ESP row's AH


def test_the_ah_row_names_the_bundles_child_sa_as_its_esp_row_does() -> None:
    """Both SAs of the bundle count the frame, and both rows of the frame name the CHILD SA (the
    AH row named none)."""
    s = Session()
    s.add_key_files([str(BUNDLE_KEYS), str(PHASE1)])
    s.load(str(BUNDLE))
    (cid, child), = s.table.child_sas.items()
    rows = [r for r in s.rows if r.frame == 10]
    assert [(r.kind, r.spi, r.child_sa) for r in rows] == [("AH", 0xCD82FE92, cid), ("ESP", 0xCD82FE91, cid)]
    counts = {(f.protocol, f.spi): f.packets for f in child.flows(s.table)}
    assert counts == {("AH", 0xCD82FE92): 6, ("ESP", 0xCD82FE91): 6, ("AH", 0x5B62D3F4): 6, ("ESP", 0x5B62D3F3): 6}


@sync
async def test_tui_detail_names_the_frame_ah_and_esp() -> None:
    app = create_app(AH_ESP, [AH_ESP_KEYS])
    async with app.run_test(size=SIZE) as pilot:
        text = await _ah_detail_labels(app, pilot, 1)
        assert text.startswith("Frame 1: 142 bytes, AH+ESP"), text
    app = create_app(DATA / "ah" / "ah-v4.pcap", [])
    async with app.run_test(size=SIZE) as pilot:
        text = await _ah_detail_labels(app, pilot, 1)
        assert re.match(r"Frame 1: \d+ bytes, AH \|", text), text


@sync
async def test_tui_packet_list_shows_the_frame_as_one_ah_esp_line() -> None:
    """The Packets table lists such a frame once, as `packets` does: protocol AH+ESP, the ESP's SPI,
    the AH's SPI and verdict in Info (it listed an AH row and an ESP row for the one frame)."""
    from test_tui import loaded

    from ipsecscope.tui.widgets.packet_table import PacketTable

    app = create_app(AH_ESP, [AH_ESP_KEYS])
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("2")
        await pilot.pause()
        table = app.query_one(PacketTable)
        assert [table.rows[i].frame for i in table.view] == [1, 2, 3]
        lines = ["".join(seg.text for seg in table.render_line(y)) for y in range(3)]
        assert all(" AH+ESP " in ln for ln in lines), lines
        assert "AH 0xa4000005 seq 3 (icv-bad), ESP seq 3" in lines[2]
        # a filter's view too: both rows match, the frame is one line
        await pilot.press("slash")
        for ch in "ah.spi == 0xa4000005":
            await pilot.press(ch if ch != " " else "space")
        await pilot.press("enter")
        await pilot.pause(0.5)
        assert table.filtered and [table.rows[i].kind for i in table.view] == ["ESP", "ESP", "ESP"]
