"""IPsec captured on OpenBSD's enc(4) interface (LINKTYPE_ENC, 109) and on Juniper routers
(DLT_JUNIPER_ETHER/PPPOE/PPP/FRELAY/CHDLC/SERVICES/GGSN): tests/data/linktypes (make.py writes
the link headers byte for byte from their formats around the real packets of
tests/data/esp-frag-loss). ipsecscope read none of these link types: every frame was an empty
OTHER row. Each frame must read as tshark dissects it, and the Juniper capture must analyse as
the Ethernet capture its packets came from."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import DATA, needs_tshark, workers_done
from conftest import field_cli as cli

from ipsecscope.decode import link

HERE = DATA / "linktypes"
SRC = DATA / "esp-frag-loss"
KEYS = str(SRC / "charon-left.log")
JUNIPER = str(HERE / "juniper.pcapng")
ENC = str(HERE / "enc.pcap")


def _rows(cap: str, *keys: str) -> list[dict]:
    return [json.loads(x) for x in cli("packets", "--json", cap, *keys).splitlines()]


def _tshark(cap: str, *fields: str) -> list[list[str]]:
    args = [a for f in fields for a in ("-e", f)]
    out = subprocess.run(["tshark", "-n", "-r", cap, "-T", "fields", *args], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


@needs_tshark
def test_juniper_frames_read_as_tshark_reads_them() -> None:
    rows = _rows(JUNIPER, "-k", KEYS)
    ts = _tshark(JUNIPER, "frame.number", "frame.protocols", "ip.src", "ip.dst", "esp.spi", "esp.sequence",
                 "isakmp.ispi")
    assert len(rows) == len(ts) == 51
    linktypes = set()
    for r, (num, protos, src, dst, spi, seq, ispi) in zip(rows, ts, strict=True):
        assert r["frame"] == int(num) and protos.startswith("juniper:")
        linktypes.add(protos.split(":")[1])
        if spi:
            assert (r["kind"], r["spi"], r["seq"]) == ("ESP", spi, int(seq)), num
        elif ispi:
            assert r["kind"] == "IKE", num
        else:  # a first fragment, complete later or never
            assert r["kind"] in ("OTHER", "MALFORMED"), num
        assert (r["src"].split(":")[0], r["dst"].split(":")[0]) == (src.split(",")[0], dst.split(",")[0]), num
    # every link header kind, and the "no L2" form (ip right behind Juniper's header)
    assert linktypes == {"eth", "ppp", "fr", "chdlc", "ip"}


def test_juniper_capture_analyses_as_its_source() -> None:
    """The same packets behind seven Juniper link headers: the same rows, SAs and findings as the
    Ethernet capture they came from."""
    keep = ("kind", "src", "dst", "spi", "seq", "status", "info")
    assert [{k: r[k] for k in keep} for r in _rows(JUNIPER, "-k", KEYS)] == [
        {k: r[k] for k in keep} for r in _rows(str(SRC / "capture.pcap"), "-k", KEYS)]
    a = json.loads(cli("sas", "--json", JUNIPER, "-k", KEYS))
    b = json.loads(cli("sas", "--json", str(SRC / "capture.pcap"), "-k", KEYS))
    assert a["flows"] == b["flows"] and a["child_sas"] == b["child_sas"]
    codes = lambda cap: sorted(f["code"] for f in json.loads(cli("findings", "--json", cap, "-k", KEYS))["findings"])  # noqa: E731
    assert codes(JUNIPER) == codes(str(SRC / "capture.pcap"))


@needs_tshark
def test_enc_frames_name_their_sa_and_inner_packet_as_tshark() -> None:
    rows = _rows(ENC)
    ts = _tshark(ENC, "frame.number", "frame.protocols", "enc.spi", "enc.flags", "ip.src", "ip.dst")
    assert len(rows) == len(ts) == 33
    for r, (num, protos, spi, flags, src, dst) in zip(rows, ts, strict=True):
        assert protos.startswith("enc:ip:ip:") and flags == "0x00000c00"
        # the SA by its SPI, as tshark's enc.spi; the packet inside the gateways' IP-in-IP header
        if r["kind"] == "MALFORMED":  # an inner fragment whose first one was in the ESP packet lost
            assert f"ENC SPI {spi} (authentic, confidential): IP fragments never completed" in r["info"], num
            assert protos.endswith(":data"), num  # tshark: no ICMP without its first fragment
        else:
            assert r["info"].startswith(f"ENC SPI {spi} (authentic, confidential) ▸ "), num
        assert (r["src"], r["dst"]) == (src.split(",")[-1], dst.split(",")[-1]), num
    # the SPIs are the source capture's SAs, each direction's own
    sas = {(f["src"], f["spi"]) for f in json.loads(cli("sas", "--json", str(SRC / "capture.pcap"), "-k", KEYS))["flows"]}
    seen = {(t[4].split(",")[0], t[2]) for t in ts}
    assert seen == sas


@pytest.mark.parametrize("linktype, frame, expect", [
    (109, bytes.fromhex("02000000"), (link.TRUNCATED, 12)),
    (109, bytes.fromhex("00000002 12345678 00000c00 45"), (4, 12)),  # the family written big-endian
    (109, bytes.fromhex("18000000 12345678 000c0000 60"), (6, 12)),  # AF_INET6 on OpenBSD: 24
    (109, bytes.fromhex("07000000 12345678 000c0000 45"), (link.NOT_IP, 12)),
    (178, b"MGX\x00" + bytes(20), (link.NOT_IP, 0)),  # no magic: tshark dissects nothing
    (178, b"MGC\x80\x00", (link.TRUNCATED, 6)),
    (178, b"MGC\x82\x00\x02\x01\x00\x06\x00\x00\x00\x60", (6, 12)),  # extension, then no L2: IPv6
    (179, b"MGC\x02" + bytes.fromhex("48a20000 01020304 45"), (4, 12)),  # 0xa248: 4 octets, then IPv4
    (179, b"MGC\x00\xff\x03\x00", (link.TRUNCATED, 8)),
    (136, b"MGC\x01" + bytes(16) + b"\x45", (4, 20)),
    (133, b"MGC\x00" + bytes.fromhex("0600 0000") + b"\x60", (6, 8)),
])
def test_header_bounds(linktype: int, frame: bytes, expect: tuple[int, int]) -> None:
    assert link.ip_offset(linktype, frame) == expect


@needs_tshark
def test_enc_sas_are_counted_per_spi_as_tshark_sees_them() -> None:
    """Each enc header SPI is an SA (model.sa.EncSa): its packets and bytes as tshark's enc.spi
    and first ip.len add them up, its addresses the gateways' IP-in-IP header (the SA's ends), the
    traffic it carried the innermost header's, and no sequence analysis (enc frames carry none)."""
    doc = json.loads(cli("sas", "--json", ENC))
    want: dict[str, dict] = {}
    for spi, flags, src, dst, length in _tshark(ENC, "enc.spi", "enc.flags", "ip.src", "ip.dst", "ip.len"):
        w = want.setdefault(spi, {"packets": 0, "bytes": 0, "flags": flags, "ends": set(), "inner": {}})
        w["packets"] += 1
        w["bytes"] += int(length.split(",")[0])
        w["ends"].add((src.split(",")[0], dst.split(",")[0]))
        conv = (src.split(",")[-1], dst.split(",")[-1])
        w["inner"][conv] = w["inner"].get(conv, 0) + 1
    assert len(want) == 2  # one SA each way
    got = {e["spi"]: e for e in doc["enc_sas"]}
    assert set(got) == set(want)
    for spi, w in want.items():
        e = got[spi]
        assert (e["packets"], e["bytes"], e["flags"]) == (w["packets"], w["bytes"], w["flags"]), spi
        assert w["ends"] == {(e["src"], e["dst"])} and e["protocol"] == "ESP", spi
        assert {(i["src"], i["dst"]): i["packets"] for i in e["inner"]} == w["inner"], spi
        assert e["sequence"] == "not available"
    # nothing made up: no IKE, no CHILD SA, no ESP flow whose sequence numbers would be "lost"
    assert doc["flows"] == [] and doc["child_sas"] == [] and doc["ike_sas"] == []
    text = cli("sas", ENC)
    for spi, w in want.items():
        assert f"enc(4) SA ESP SPI {spi} " in text and f": {w['packets']} packets, " in text
    assert text.count("sequence numbers not available") == 2
    assert "No IKE or ESP security associations" not in text


@needs_tshark
@pytest.mark.parametrize("expr", ["enc", "enc.spi == 0x7f39ad4a", "enc.spi == 0xf0ee1e0e", "enc.spi == 0x12345678",
                                  "enc.flags == 0xc00 && ip.dst == 10.1.0.1", "!enc.spi"])
def test_enc_filter_fields_select_what_tshark_selects(expr: str) -> None:
    ours = [r["frame"] for r in _rows(ENC, "-Y", expr)]
    theirs = [int(t[0]) for t in _tshark_filtered(ENC, expr)]
    assert ours == theirs


def _tshark_filtered(cap: str, expr: str) -> list[list[str]]:
    out = subprocess.run(["tshark", "-n", "-r", cap, "-Y", expr, "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


@pytest.mark.parametrize("frame", [
    bytes.fromhex("02000000 7f39ad4a 000c0000"),  # header only
    bytes.fromhex("02000000 7f39ad4a 000c0000 4500001c"),  # IP header cut off
    bytes.fromhex("07000000 7f39ad4a 000c0000") + bytes(20),  # not IP
    bytes.fromhex("02000000 7f39ad"),  # header cut off
])
def test_enc_frame_too_short_for_an_sa_counts_nothing(frame: bytes) -> None:
    from ipsecscope.model.sa import SaTable
    from ipsecscope.state.enc_sa import note_enc

    table = SaTable()
    assert note_enc(table, 1, 0.0, frame) is None and not table.enc_sas


def test_enc_ah_flag_names_an_ah_sa() -> None:
    from ipsecscope.model.sa import SaTable
    from ipsecscope.state.enc_sa import note_enc

    ip = bytes.fromhex("4500001c 00000000 40010000 c6120001 c6120002") + bytes(8)
    table = SaTable()
    sa = note_enc(table, 1, 0.0, bytes.fromhex("02000000 00001001 00280000") + ip)  # M_AUTH|M_AUTH_AH, little-endian
    assert sa is not None and (sa.protocol, sa.spi, sa.src, sa.dst, sa.bytes) == ("AH", 0x1001, "198.18.0.1",
                                                                                   "198.18.0.2", 28)
    assert table.enc_sas[(0x1001, "AH", "198.18.0.2")].inner == {("198.18.0.1", "198.18.0.2", 1): 1}


def test_enc_sas_in_the_tui_tree_and_detail() -> None:
    """The TUI's SA tree lists each enc(4) SA under the gateways it joins; its detail pane says the
    counts and that sequence numbers are not available."""
    import asyncio

    from test_tui import screen_lines
    from textual.widgets import Tree

    from ipsecscope.tui.app import create_app
    from ipsecscope.tui.widgets.sa_detail import SaDetail
    from ipsecscope.tui.widgets.sa_tree import SaRef, SaTree

    async def run() -> tuple[list[str], str, str, str]:
        app = create_app(HERE / "enc.pcap", [])
        async with app.run_test(size=(200, 40)) as pilot:
            await workers_done(pilot.app)
            await pilot.pause()
            tree: Tree = app.query_one(SaTree)
            labels = [str(c.label) for p in tree.root.children for c in [p, *p.children]]
            detail = app.query_one(SaDetail)
            detail.show(detail.table, SaRef("pair", ("198.18.0.1", "198.18.0.2")))
            pair = detail.as_text()
            detail.show(detail.table, SaRef("enc", (0x7F39AD4A, "ESP", "198.18.0.1")))
            return labels, detail.as_text(), pair, screen_lines(app)[0]

    labels, text, pair, status = asyncio.run(run())
    # the status line said "no IPsec" and the pair "no ESP or AH packets" with nothing else
    assert "no IPsec" not in status and "0 IKE/0 CHILD SA/2 enc SA" in status and "enc 33" in status, status
    assert "enc(4) SAs" in pair and "2 (cleartext side" in pair, pair
    assert "198.18.0.1 ⇄ 198.18.0.2" in labels
    assert any(x.startswith("◇ enc ESP f0ee1e0e") and "18 pkts" in x for x in labels), labels
    assert any(x.startswith("◇ enc ESP 7f39ad4a") and "15 pkts" in x for x in labels), labels
    assert "15 (7960 bytes)" in text and "not available" in text and "10.2.0.1 → 10.1.0.1 ICMP: 15 packets" in text


@needs_tshark
def test_enc_summary_and_conversations() -> None:
    """summary counts each enc header's frames as tshark's enc.spi (and does not call the capture
    free of IPsec); stats lists the inner conversation the SAs carried (whole packets: the three
    datagrams whose first fragment was lost are not counted, as for decrypted ESP)."""
    want: dict[str, int] = {}
    for (spi,) in _tshark(ENC, "enc.spi"):
        want[spi] = want.get(spi, 0) + 1
    doc = json.loads(cli("summary", "--json", ENC))
    assert {e["spi"]: e["frames"] for e in doc["enc"]} == want
    assert "No IPsec traffic found" not in cli("summary", ENC)
    (conv,) = json.loads(cli("stats", "--json", ENC))["conversations"]
    assert (conv["protocol"], conv["a"], conv["b"]) == ("icmp", "10.1.0.1", "10.2.0.1")
    # tshark's echo requests and replies, fragments reassembled (frames with icmp.type)
    types = [t for (t,) in _tshark(ENC, "icmp.type") if t]
    assert (conv["packets_ab"], conv["packets_ba"]) == (types.count("8"), types.count("0"))


def test_enc_sas_of_a_rekeyed_tunnel_are_its_esp_flows() -> None:
    """enc-rekey.pcap: samples/cbc-sha2-pfs's decrypted ESP as a big-endian OpenBSD gateway's
    enc0 shows it (three CHILD SAs, one a rekey): each SA's SPI, ends and packets are the ESP flows
    of the source capture, six SPIs, one per direction of each CHILD SA."""
    from conftest import SAMPLES

    src = SAMPLES / "cbc-sha2-pfs"
    flows = json.loads(cli("sas", "--json", str(src / "capture.pcapng"), "-k", str(src / "keys")))["flows"]
    want = {(f["spi"], f["src"], f["dst"], f["decrypted"]) for f in flows}
    doc = json.loads(cli("sas", "--json", str(HERE / "enc-rekey.pcap")))
    assert {(e["spi"], e["src"], e["dst"], e["packets"]) for e in doc["enc_sas"]} == want
    assert len(want) == 6 and {e["flags"] for e in doc["enc_sas"]} == {"0x00000c00"}  # big-endian flags read


@needs_tshark
def test_stats_graphs_each_enc_sa_and_names_it_on_its_conversations() -> None:
    """`stats` on an enc(4) capture listed no SA at all ("ESP/AH flows (0)", every conversation
    "SA -"): each enc SA now has its row and IO graph, and each inner conversation names the enc
    SAs it came over; both as tshark counts enc.spi per SPI and per inner address pair."""
    cap = str(HERE / "enc-rekey.pcap")
    doc = json.loads(cli("stats", "--json", cap))
    ts = _tshark(cap, "enc.spi", "ip.src", "ip.dst")
    per_spi: dict[str, int] = {}
    per_pair: dict[frozenset, set] = {}
    for spi, srcs, dsts in ts:
        key = f"0x{int(spi, 16):08x}"
        per_spi[key] = per_spi.get(key, 0) + 1
        inner = frozenset((srcs.split(",")[-1], dsts.split(",")[-1]))  # the innermost header's pair
        per_pair.setdefault(inner, set()).add(key)
    assert doc["flows"] == [] and {e["spi"]: e["packets"] for e in doc["enc_sas"]} == per_spi
    assert all(sum(e["io"]) == e["packets"] for e in doc["enc_sas"])
    assert {frozenset((c["a"], c["b"])): set(c["enc_spis"]) for c in doc["conversations"]} == per_pair
    text = cli("stats", cap)
    assert "enc(4) SAs (6)" in text and "lost -" in text and "SA enc" in text
