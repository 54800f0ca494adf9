"""ESP carried in IP fragments on a path that loses the later fragments (tests/data/esp-frag-loss:
make.py, two strongSwan peers, every link's MTU 1000, samples/lib/bridge.py dropping the
non-first fragments of every 2nd fragmented datagram left -> right; bridge.log is the ground
truth; the capture is the receiver's side).

The first fragment holds the UDP and ESP headers (RFC 791 §2.3), so each lost packet is known by
SPI and sequence number, but ESP is verified only after reassembly (RFC 4303 §3.4.1): one lost
fragment loses the packet (RFC 4459 §2). ipsecscope showed three MALFORMED "IP fragments never
completed" rows that named no ESP packet, an ESP-SEQ-GAP blaming loss before the capture point
without a word of fragments, and a PMTU black hole (ESP-PATH-MTU WARNING) in both directions,
the one that lost nothing included."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import DATA, needs_tshark
from conftest import field_cli as cli

HERE = DATA / "esp-frag-loss"
CAP = str(HERE / "capture.pcap")
KEYS = str(HERE / "charon-left.log")


def _dropped() -> set[tuple[str, int]]:
    """(SPI, sequence number) of every ESP packet the bridge dropped later fragments of."""
    out = set()
    for line in (HERE / "bridge.log").read_text().splitlines():
        if line.startswith("{") and '"drop_fragment"' in line:
            e = json.loads(line)
            out.add((e["spi"], e["seq"]))
    return out


def _rows() -> list[dict]:
    return [json.loads(x) for x in cli("packets", "--json", CAP, "-k", KEYS).splitlines()]


def _findings() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in json.loads(cli("findings", "--json", CAP, "-k", KEYS))["findings"]:
        out.setdefault(f["code"], []).append(f)
    return out


def test_the_bridge_dropped_later_fragments_of_three_esp_packets() -> None:
    assert len(_dropped()) == 3


def test_each_first_fragment_names_its_esp_packet() -> None:
    marks = [r for r in _rows() if r["kind"] == "MALFORMED"]
    named = set()
    for r in marks:
        info = r["info"]
        assert "arrived as IP fragments, the part at offset 976 to the end never captured" in info
        assert "cannot decrypt/verify" in info
        words = info.split()
        named.add((words[words.index("SPI") + 1], int(words[words.index("seq") + 1])))
    assert named == _dropped()


def test_esp_fragment_lost_counts_them_on_their_sa() -> None:
    fs = _findings()
    (f,) = fs["ESP-FRAGMENT-LOST"]
    dropped = _dropped()
    assert sorted(f["facts"]["seqs"]) == sorted(s for _spi, s in dropped)
    assert f["facts"]["spi"] == next(iter(dropped))[0] and f["facts"]["lost"] == 3
    assert "RFC 4459 §2" in f["explanation"] and "RFC 4303 §3.4.1" in f["explanation"]
    marks = [r["frame"] for r in _rows() if r["kind"] == "MALFORMED"]
    assert f["frames"] == marks
    # the gaps are those packets: no unexplained loss, no black hole (both directions fragment)
    assert "ESP-SEQ-GAP" not in fs
    assert all(x["severity"] == "info" for x in fs.get("ESP-PATH-MTU", []))
    flows = {(x["src"], x["spi"]): x for x in json.loads(cli("sas", "--json", CAP, "-k", KEYS))["flows"]}
    lossy = flows[("198.18.0.1", f["facts"]["spi"])]
    assert lossy["fragments_lost"] == 3 and lossy["lost"] == 3
    assert [p["seq"] for p in lossy["fragments_lost_packets"]] == sorted(s for _spi, s in dropped)
    assert flows[("198.18.0.2", next(x["spi"] for x in flows.values() if x["src"] == "198.18.0.2"))]["fragments_lost"] == 0


@needs_tshark
def test_as_tshark_sees_the_frames() -> None:
    """tshark (reassembling, its default) shows the first fragments as "Fragmented IP protocol",
    no ESP; with reassembly off it dissects their UDP and ESP headers: the SPI and sequence number
    the rows name. Every other ESP frame is ESP to both."""
    def fields(*opts: str) -> list[list[str]]:
        out = subprocess.run(["tshark", "-n", "-r", CAP, *opts, "-T", "fields", "-e", "frame.number",
                              "-e", "esp.spi", "-e", "esp.sequence", "-e", "ip.flags.mf", "-e", "ip.frag_offset"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return [line.split("\t") for line in out.splitlines()]

    rows = {r["frame"]: r for r in _rows()}
    marks = [n for n, r in rows.items() if r["kind"] == "MALFORMED"]
    whole = {int(x[0]): x for x in fields()}
    raw = {int(x[0]): x for x in fields("-o", "ip.defragment:FALSE")}
    for n in marks:
        assert whole[n][1] == "" and whole[n][3:] == ["1", "0"]
        spi, seq = raw[n][1], int(raw[n][2])
        assert f"SPI {spi} seq {seq} " in rows[n]["info"]
    esp = sorted(n for n, x in whole.items() if x[1])
    assert esp == sorted(n for n, r in rows.items() if r["kind"] == "ESP")


@pytest.mark.parametrize("missing, parts, total", [
    ("offset 976 to the end", {0: b"x" * 976}, None),
    ("offsets 0-975", {976: b"x" * 24}, 1000),
    ("offsets 8-15, offset 24 to the end", {0: b"x" * 8, 16: b"x" * 8}, None),
])
def test_missing_text(missing: str, parts: dict[int, bytes], total: int | None) -> None:
    from ipsecscope.decode.ip import missing_text

    assert missing_text(parts, total) == missing


SPLIT = DATA / "frag-split"


def test_frag_split_holes_ipv6_and_the_capture_end() -> None:
    """tests/data/frag-split (scapy-made fragments, its README): datagram 8, an IPv4 ESP packet's
    lone first fragment given up after 60 s; at the end an IPv4 one lacking a middle fragment (a
    hole: lost, whatever the capture did) and an IPv6 one lacking its last, in the capture's last
    second (it may have ended before it: INFO, not blamed on the path)."""
    cap, keys = str(SPLIT / "frag-split.pcap"), str(SPLIT / "frag-split.keys.json")
    marks = {r["frame"]: r["info"] for r in map(json.loads, cli("packets", "--json", cap, "-k", keys).splitlines())
             if r["kind"] == "MALFORMED"}
    assert [(n, "SPI " + i.split("SPI ")[1].split(" arrived")[0]) for n, i in marks.items()] == [
        (105, "SPI 0xf4000001 seq 15"), (115, "SPI 0xf4000001 seq 19"), (123, "SPI 0xf6000001 seq 5")]
    assert "at offsets 496-743 never captured" in marks[115] and "at offset 1736 to the end" in marks[123]
    found = {f["facts"]["spi"]: f for f in json.loads(cli("findings", "--json", cap, "-k", keys))["findings"]
             if f["code"] == "ESP-FRAGMENT-LOST"}
    v4, v6 = found["0xf4000001"], found["0xf6000001"]
    assert (v4["severity"], v4["facts"]["seqs"], v4["facts"]["on_path"]) == ("warning", [15, 19], 2)
    assert (v6["severity"], v6["facts"]["seqs"], v6["facts"]["on_path"]) == ("info", [5], 0)
    assert "the capture ended before the rest" in v6["title"]
