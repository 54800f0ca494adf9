"""One finding per condition, and IKE responses whose requests the capture never holds.

Found on a real ISAKMP reflection capture (StopDDoS amp.UDP.isakmp.pcap: 3,984 Main Mode answers
from 2,767 responders to one spoofed address; its licence keeps it out of this repository):
findings printed 3,982 identical IKE-WEAK-ALGO warnings, one per IKE SA, and nothing said that
every one of them answered a request the capture does not hold.

Data: nDPI's ipsec_isakmp_esp.pcap frames 1-160 (LGPL-3.0, real IKEv2 NAT-T sessions of one client
to several gateways, 11 IKE SAs on aes256-sha1-modp1024, 8 established; tests/data/ndpi/PROVENANCE.md), Cisco
joy's ikev2.pcap (BSD-3) with the initiator's frames cut, tcpdump's ISAKMP_sa_setup.pcap cut
after MM1, and Openswan pluto's MM2 sent alone (GPL-2.0) copied to many responders' addresses as
a reflection shows it: each responder answering the victim with a cookie of its own.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import IPSECSCOPE, ROOT, needs_tshark, public
from test_inference_order import _without

from ipsecscope.analysis.rules import RuleContext, evaluate
from ipsecscope.session import Session

SESSIONS = public("ndpi/derived/ipsec_isakmp_esp-1-160.pcap")  # third-party: cut at test time
TWO = public("ndpi/derived/ipsec_isakmp_esp-287-324.pcap")  # 2 IKE SAs on the same weak proposal
JOY_V2 = public("joy/ikev2.pcap")  # third-party: materialised at test time (tests/public_data.py)
MM_SETUP = public("tcpdump/ISAKMP_sa_setup.pcap")
MM2 = public("openswan-unit/lp104-v1rwnatN1.pcap")  # sun's MM2 to 93.184.216.34, alone
CODE = "IKE-RESPONSE-NO-REQUEST"


def run(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([*IPSECSCOPE, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "Traceback" not in r.stderr and r.returncode in (0, 1), r.stderr
    return r


def findings(cap: Path) -> list[dict]:
    return json.loads(run("findings", str(cap), "--json").stdout)["findings"]


def test_one_weak_proposal_on_eight_established_ike_sas_is_one_finding_that_names_them():
    """11 IKE SAs chose it; 8 came up (one finding, aggregated), 3 stopped after IKE_SA_INIT: those
    say the responder accepted it, not that the peers agreed on it (each its own finding, < 5)."""
    doc = findings(SESSIONS)
    weak = [f for f in doc if f["code"] == "IKE-WEAK-ALGO"]
    agreed = [f for f in weak if "agreed on" in f["explanation"]]
    assert len(weak) == 4 and len(agreed) == 1
    f = agreed[0]
    # Which IKE SAs chose it, from sas (the SA table, not the rules)
    sas = json.loads(run("sas", str(SESSIONS), "--json").stdout)["ike_sas"]
    chose = {sa["key"] for sa in sas if sa["proposal"] == "aes256-sha1-modp1024" and sa["state"] == "established"}
    begun = {sa["key"] for sa in sas if sa["proposal"] == "aes256-sha1-modp1024" and sa["state"] == "initiating"}
    assert len(chose) == 8 and f["count"] == 8 and len(begun) == 3
    assert {m["sa"] for m in f["members"]} == chose and f["sa"] == f["members"][0]["sa"]
    assert all(m["peers"][0] == "192.168.2.100" and m["frames"] for m in f["members"])
    assert f["time"] == min(m["time"] for m in f["members"])
    assert {g["sa"] for g in weak if g is not f} == begun
    assert all("accepted it in its IKE_SA_INIT response" in g["explanation"] and "did not complete" in g["explanation"]
               and "agreed" not in g["explanation"] for g in weak if g is not f)
    # the text counts and names them: the client with its gateways, the first five, "and N more"
    gateways = list(dict.fromkeys(m["peers"][1] for m in f["members"]))
    assert f"The same holds for 8 IKE SAs in all, between 192.168.2.100 and {len(gateways)} peers: " \
        f"{', '.join(gateways[:5])}" in f["explanation"]
    text = run("findings", str(SESSIONS)).stdout
    assert text.count("IKE-WEAK-ALGO") == 4 and "×8 SAs" in text and "and 7 more" in text


def test_aggregation_loses_no_finding_and_keeps_small_groups():
    """Without aggregation (aggregate_min=0) each SA has its finding: the members are exactly them."""
    s = Session()
    s.load(SESSIONS)
    one = [f for f in evaluate(s.table, RuleContext(session=s, aggregate_min=0)) if f.code == "IKE-WEAK-ALGO"]
    merged = [f for f in evaluate(s.table, RuleContext(session=s)) if f.code == "IKE-WEAK-ALGO"]
    assert len(one) == 11 and len(merged) == 4
    agreed = [f for f in one if "agreed on" in f.explanation]
    group = next(f for f in merged if f.members)
    assert [m.sa for m in group.members] == [f.sa for f in sorted(agreed, key=lambda f: f.ts or 0.0)]
    assert sorted(fr for m in group.members for fr in m.frames) == sorted(fr for f in agreed for fr in f.frames)
    # two SAs with the same weak proposal: below the threshold, one finding each
    two = [f for f in findings(TWO) if f["code"] == "IKE-WEAK-ALGO"]
    assert len(two) == 2 and all(f["count"] == 1 and f["members"] == [] for f in two)


def test_findings_that_differ_beyond_their_own_sa_stay_apart():
    """The NAT findings of these sessions name the client's translated port when they know it: those
    say something else than the rest and are not merged into them. Every IKE SA behind a NAT is in
    exactly one NAT finding, merged or not."""
    nat = [f for f in findings(SESSIONS) if f["code"] == "IKE-NAT-DETECTED"]
    assert any(f["count"] > 1 for f in nat) and any(f["count"] == 1 for f in nat)
    keys = [m["sa"] for f in nat for m in f["members"]] + [f["sa"] for f in nat if f["count"] == 1]
    sas = json.loads(run("sas", str(SESSIONS), "--json").stdout)["ike_sas"]
    assert sorted(keys) == sorted(sa["key"] for sa in sas if sa["nat"]["behind_nat"])
    for f in nat:
        if f["count"] > 1:
            for g in nat:  # what keeps them apart is text beyond the SA's addresses and frames
                if g is not f and (g["title"], g["hint"]) == (f["title"], f["hint"]):
                    assert g["explanation"].split(" The same holds")[0] != f["explanation"].split(" The same")[0]


def _cut_sender(src: Path, dst: Path, sender: str) -> Path:
    out = subprocess.run(["tshark", "-r", str(src), "-T", "fields", "-e", "frame.number", "-e", "ip.src"],
                         capture_output=True, text=True, check=True).stdout
    drop = {int(n) for n, ip in (line.split("\t") for line in out.splitlines()) if ip == sender}
    return _without(src, dst, drop)


@needs_tshark
def test_responses_from_one_peer_with_every_request_cut_say_one_direction(tmp_path):
    assert not [f for f in findings(JOY_V2) if f["code"] == CODE]  # both directions: nothing to say
    cut = _cut_sender(JOY_V2, tmp_path / "ikev2-responder-only.pcap", "192.168.1.14")
    out = subprocess.run(["tshark", "-r", str(cut), "-Y", "isakmp.flag_r == 1", "-T", "fields", "-e", "frame.number",
                          "-e", "ip.src", "-e", "ip.dst"], capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == 3 and {(r[1], r[2]) for r in rows} == {("192.168.1.2", "192.168.1.14")}
    (f,) = [f for f in findings(cut) if f["code"] == CODE]
    assert f["severity"] == "info" and f["frames"] == [int(r[0]) for r in rows]
    assert f["facts"] == {"target": "192.168.1.14", "responses": 3, "responders": 1, "ike_sas": 1}
    assert "3 IKE responses" in f["title"] and "one direction only" in f["title"]
    assert "from 192.168.1.2 to 192.168.1.14" in f["explanation"]


def test_a_capture_that_starts_after_the_request_is_not_one_direction(tmp_path):
    """tcpdump's Main Mode without MM1: MM2 has no request, but 10.0.0.1 sends MM3 after it."""
    cap = _without(MM_SETUP, tmp_path / "no-mm1.pcap", {1})
    assert not [f for f in findings(cap) if f["code"] == CODE]


def _reflection(path: Path, responders: int) -> Path:
    """pluto's MM2 (DLT_NULL, IPv4, UDP 500 -> 55044, both cookies, the 3des-md5-modp2048 choice) as
    ``responders`` different responders send it to the one spoofed initiator 93.184.216.34: each its
    own source address and responder cookie, the initiator cookie the attacker's, as in StopDDoS's
    reflection capture. IP and UDP checksums stay zero as in the original."""
    data = MM2.read_bytes()
    head, rec = data[:24], data[24:]
    sec, usec, incl, orig = struct.unpack_from("<IIII", rec)
    pkt = bytearray(rec[16:16 + incl])
    assert pkt[4 + 12:4 + 16] == bytes([192, 168, 0, 2]) and pkt[4 + 16:4 + 20] == bytes([93, 184, 216, 34])
    out = bytearray(head)
    for i in range(responders):
        p = bytearray(pkt)
        p[4 + 12:4 + 16] = bytes([198, 51, 100, 1 + i])
        p[4 + 28 + 8:4 + 28 + 16] = struct.pack(">Q", 0x640A06435C7C4B31 + i)  # responder cookie
        out += struct.pack("<IIII", sec, usec + 1000 * i, incl, orig) + p
    path.write_bytes(bytes(out))
    return path


@needs_tshark
def test_many_responders_answering_one_address_is_reflection(tmp_path):
    cap = _reflection(tmp_path / "reflection.pcap", 12)
    out = subprocess.run(["tshark", "-r", str(cap), "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "isakmp.rspi",
                          "-e", "_ws.malformed"], capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) == 12 and {r[1] for r in rows} == {"93.184.216.34"} and len({r[2] for r in rows}) == 12
    assert not any(r[3] for r in rows)
    doc = findings(cap)
    (f,) = [f for f in doc if f["code"] == CODE]
    assert f["severity"] == "warning" and "likely the victim of IKE reflection" in f["title"]
    assert f["facts"] == {"target": "93.184.216.34", "responses": 12, "responders": 12, "ike_sas": 12}
    assert "12 IKE responses (IKEv1 Main Mode) from 12 peers (198.51.100.1, " in f["explanation"]
    assert "and 7 more) to 93.184.216.34" in f["explanation"]
    # every responder's IKE SA and response is listed (the finding's frames are the first 20)
    assert f["count"] == 12 and sorted(fr for m in f["members"] for fr in m["frames"]) == list(range(1, 13))
    assert {m["peers"][1] for m in f["members"]} == {r[0] for r in rows}
    # the 12 weak choices are one finding
    (weak,) = [f for f in doc if f["code"] == "IKE-WEAK-ALGO"]
    assert weak["count"] == 12 and len({m["sa"] for m in weak["members"]}) == 12


@pytest.mark.parametrize("n", [1, 3])
def test_few_responders_read_as_one_direction(tmp_path, n):
    doc = findings(_reflection(tmp_path / f"r{n}.pcap", n))
    (f,) = [f for f in doc if f["code"] == CODE]
    assert f["severity"] == "info" and f["facts"]["responders"] == n
    assert f["count"] == n and len(f["members"]) == (n if n > 1 else 0)
    weak = [f for f in doc if f["code"] == "IKE-WEAK-ALGO"]
    assert len(weak) == n and all(f["count"] == 1 for f in weak)  # below the threshold: one each


def test_tui_findings_pane_counts_the_sas_and_jumps_to_all_their_frames():
    from test_tui import frames_in_view, loaded, screen_lines, sync
    from textual.widgets import DataTable, Input, Static, TabbedContent

    from ipsecscope.tui.app import create_app
    from ipsecscope.tui.widgets.packet_table import PacketTable

    @sync
    async def run_app() -> None:
        app = create_app(SESSIONS)
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await pilot.press("3")
            await pilot.pause()
            view = app.query_one("FindingsView")
            at = next(i for i, f in enumerate(view.findings) if f.code == "IKE-WEAK-ALGO" and f.members)
            weak = view.findings[at]
            table = app.query_one("#findings-table", DataTable)
            assert "×8\u00a0SAs" in str(table.get_row_at(at)[2]).replace("\n", " ")
            table.focus()
            table.move_cursor(row=at)
            await pilot.pause()
            explain = str(app.query_one("#finding-explain", Static).render())
            assert "The same holds for 8 IKE SAs in all" in explain and "and 7 more" in explain
            assert any("×8\u00a0SAs" in line for line in screen_lines(app))
            await pilot.press("enter")
            await loaded(pilot)
            assert app.query_one(TabbedContent).active == "packets"
            assert app.query_one("#filter", Input).value == "finding=IKE-WEAK-ALGO"
            # every SA's evidence, not only the five named ones'
            # (finding=CODE is every IKE-WEAK-ALGO finding: the 3 not-completed SAs' too)
            every = sorted({fr for f in view.findings if f.code == "IKE-WEAK-ALGO" for fr in f.all_frames})
            assert set(weak.all_frames) < set(every) and frames_in_view(app.query_one(PacketTable)) == every
            assert len(weak.all_frames) > len(weak.frames)

    run_app()


@needs_tshark
def test_nat_detected_once_per_peer_pair_naming_its_ike_sas():
    """live3: 3 reconnects between the same two gateways gave 3 copies of a 6-line IKE-NAT-DETECTED
    (below the 5 that merge findings of different peers). The NAT (or forced encapsulation)
    belongs to the two peers, not to one IKE SA: the peer restart's two IKE SAs are one finding
    that names both, with both SAs' evidence. The IKE SAs are the ones tshark sees start."""
    cap = ROOT / "samples" / "peer-restart" / "capture.pcapng"
    (nat,) = [f for f in findings(cap) if f["code"] == "IKE-NAT-DETECTED"]
    out = subprocess.run(["tshark", "-r", str(cap), "-Y", "isakmp.exchangetype == 34 && isakmp.rspi == 00:00:00:00:00:00:00:00",
                          "-T", "fields", "-e", "isakmp.ispi"], capture_output=True, text=True, check=True).stdout
    started = {line.replace(":", "") for line in out.split()}
    assert nat["count"] == 2 and len(started) == 2
    assert {m["sa"].partition("_")[0] for m in nat["members"]} == started
    assert all(m["peers"] == ["198.18.0.1", "198.18.0.2"] for m in nat["members"])
    assert "between 198.18.0.1 and 198.18.0.2 (" in nat["explanation"]
    assert all(s[:8] + "…" in nat["explanation"] for s in started)
    assert set(nat["frames"]) == {fr for m in nat["members"] for fr in m["frames"]}
    # the redirect sample's two IKE SAs are with two gateways (198.18.0.2 sent it to .3): two findings
    two = [f for f in findings(ROOT / "samples" / "redirect" / "capture.pcapng") if f["code"] == "IKE-NAT-DETECTED"]
    assert len(two) == 2 and all(f["count"] == 1 for f in two)
    assert sorted(f["title"].split("responder ")[1].split()[0] for f in two) == ["198.18.0.2", "198.18.0.3"]


# ------------------------------------------------------------------------- one-way ESP, one end silent

ESP6 = public("zeek/ip6_esp.pcap")  # Zeek's core trace (BSD-3): 3ffe::1 sends ESP to 12 peers, 10 packets each


def _tshark_esp_sas(cap: Path) -> dict[str, list[int]]:
    """Every ESP SA tshark sees, as findings name it (``esp:src>dst:0xspi``), with its frames."""
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", "esp", "-T", "fields", "-e", "frame.number",
                          "-e", "ipv6.src", "-e", "ipv6.dst", "-e", "ip.src", "-e", "ip.dst", "-e", "esp.spi"],
                         capture_output=True, text=True, check=True).stdout
    sas: dict[str, list[int]] = {}
    for line in out.splitlines():
        n, s6, d6, s4, d4, spi = line.split("\t")
        sas.setdefault(f"esp:{s6 or s4}>{d6 or d4}:0x{int(spi, 16):08x}", []).append(int(n))
    return sas


@needs_tshark
def test_one_host_sending_esp_to_twelve_silent_peers_is_one_finding():
    """Zeek's ip6_esp: 12 one-way SAs from 3ffe::1 were 12 ESP-ONE-WAY warnings, each naming its own
    addresses in title and hint, so the aggregation never merged them. The condition is one: the
    host hears from none of its peers. One finding, its 12 SAs as members with their first and
    last frames (tshark's), severity kept."""
    sas = _tshark_esp_sas(ESP6)
    assert len(sas) == 12 and {k.split(">")[0] for k in sas} == {"esp:3ffe::1"}
    doc = findings(ESP6)
    (f,) = [f for f in doc if f["code"] == "ESP-ONE-WAY"]
    assert f["severity"] == "warning" and f["count"] == 12
    assert f["title"] == "One-way ESP: 3ffe::1 sends to 12 peers (120 packets), none answer"
    assert {m["sa"]: m["frames"] for m in f["members"]} == {k: [fr[0], fr[-1]] for k, fr in sas.items()}
    assert all(m["peers"][0] == "3ffe::1" for m in f["members"]) and f["sa"] == f["members"][0]["sa"]
    assert f["facts"] == {"sender": "3ffe::1", "peers": 12, "sas": 12, "packets": 120}
    assert f["time"] == min(m["time"] for m in f["members"])
    assert "one SA each: 3ffe::2 (CHILD SA #1, SPI 0x0000000a, 10 packets)" in f["explanation"]
    assert "and 7 more" in f["explanation"] and "holds no ESP to 3ffe::1 at all" in f["explanation"]
    text = run("findings", str(ESP6)).stdout
    assert text.count("ESP-ONE-WAY") == 1 and "×12 SAs" in text and "(of 24)" in text


def test_one_way_group_loses_no_sa():
    """Without aggregation each SA keeps its own finding: the group's members are exactly them."""
    s = Session()
    s.load(ESP6)
    one = [f for f in evaluate(s.table, RuleContext(session=s, aggregate_min=0)) if f.code == "ESP-ONE-WAY"]
    (group,) = [f for f in evaluate(s.table, RuleContext(session=s)) if f.code == "ESP-ONE-WAY"]
    assert len(one) == 12 and not any(f.members for f in one)
    assert sorted((m.sa, m.frames, m.ts) for m in group.members) == sorted((f.sa, f.frames, f.ts) for f in one)
    assert sorted(group.all_frames) == sorted(fr for f in one for fr in f.frames)


MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"


def _one_way_mesh(path: Path) -> Path:
    """ESP with nothing back (5 packets per SA): 192.0.2.1 to 192.0.2.2 on three SPIs (one pair,
    three SAs); 198.51.100.1 and .2 to 203.0.113.9 (one receiver); 192.0.2.7 to 192.0.2.8 alone;
    and 192.0.2.1 to 192.0.2.3, refused each time with ICMP port unreachable from 192.0.2.3."""
    scapy = pytest.importorskip("scapy.all")
    from scapy.layers.ipsec import ESP

    sas = [("192.0.2.1", "192.0.2.2", 0x100), ("192.0.2.1", "192.0.2.2", 0x101), ("192.0.2.1", "192.0.2.2", 0x102),
           ("198.51.100.1", "203.0.113.9", 0x200), ("198.51.100.2", "203.0.113.9", 0x201),
           ("192.0.2.7", "192.0.2.8", 0x300), ("192.0.2.1", "192.0.2.3", 0x400)]
    pk, t = [], 1_700_000_000.0
    for seq in range(1, 6):
        for src, dst, spi in sas:
            esp = scapy.Ether(src=MAC_A, dst=MAC_B) / scapy.IP(src=src, dst=dst) / ESP(spi=spi, seq=seq) / (b"\x5a" * 48)
            t += 0.01
            esp.time = t
            pk.append(esp)
            if spi == 0x400:
                err = scapy.Ether(src=MAC_B, dst=MAC_A) / scapy.IP(src=dst, dst=src) / scapy.ICMP(type=3, code=3) / bytes(esp[scapy.IP])[:64]
                t += 0.001
                err.time = t
                pk.append(err)
    scapy.wrpcap(str(path), pk)
    return path


def test_one_way_sas_group_by_their_shared_end_and_own_evidence_stays_apart(tmp_path):
    doc = [f for f in findings(_one_way_mesh(tmp_path / "mesh.pcap")) if f["code"] == "ESP-ONE-WAY"]
    by_title = {f["title"]: f for f in doc}
    # the same pair on three SAs: one finding, its SPIs listed
    pair = by_title["One-way ESP: 192.0.2.1 -> 192.0.2.2 on 3 SAs (15 packets), nothing back"]
    assert pair["count"] == 3 and [m["sa"] for m in pair["members"]] == [
        f"esp:192.0.2.1>192.0.2.2:0x{s:08x}" for s in (0x100, 0x101, 0x102)]
    assert "SPI 0x00000101 (CHILD SA #2, 5 packets)" in pair["explanation"] and "Check on 192.0.2.2" in pair["hint"]
    # two senders to one receiver that answers neither
    hub = by_title["One-way ESP: 2 peers send to 203.0.113.9 (10 packets), it answers none"]
    assert hub["count"] == 2 and {m["peers"][0] for m in hub["members"]} == {"198.51.100.1", "198.51.100.2"}
    assert hub["facts"] == {"receiver": "203.0.113.9", "peers": 2, "sas": 2, "packets": 10}
    # alone: the per-SA finding as before
    assert by_title["One-way ESP: 192.0.2.7 -> 192.0.2.8 (5 packets), nothing back"]["count"] == 1
    # refused with ICMP: evidence about that SA and peer, not merged into 192.0.2.1's silent pair
    (refused,) = [f for f in doc if "192.0.2.3" in f["title"]]
    assert refused["count"] == 1 and "refused with ICMP" in refused["title"]
    assert len(doc) == 4 and all(f["severity"] == "warning" for f in doc)


def test_tui_one_way_group_jumps_to_every_sas_frames():
    from test_tui import frames_in_view, loaded, sync
    from textual.widgets import DataTable, TabbedContent

    from ipsecscope.tui.app import create_app
    from ipsecscope.tui.widgets.packet_table import PacketTable

    @sync
    async def run_app() -> None:
        app = create_app(ESP6)
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            await pilot.press("3")
            await pilot.pause()
            view = app.query_one("FindingsView")
            (at,) = [i for i, f in enumerate(view.findings) if f.code == "ESP-ONE-WAY"]
            table = app.query_one("#findings-table", DataTable)
            assert "×12\u00a0SAs" in str(table.get_row_at(at)[2]).replace("\n", " ")
            table.focus()
            table.move_cursor(row=at)
            await pilot.press("enter")
            await loaded(pilot)
            assert app.query_one(TabbedContent).active == "packets"
            f = view.findings[at]
            assert len(f.all_frames) == 24 and frames_in_view(app.query_one(PacketTable)) == list(f.all_frames)

    run_app()


# ------------------------------------------------------------------------- refusals repeated per retry

def _retries(path: Path, n: int) -> Path:
    """The ike-proposal-mismatch sample's IKE_SA_INIT and its NO_PROPOSAL_CHOSEN answer sent ``n``
    times 30 s apart, each a new IKE SA (initiator SPI changed in its first byte, the request's
    NAT_DETECTION_DESTINATION_IP recomputed over it, RFC 7296 §2.23), as an initiator retrying
    its connection shows it."""
    scapy = pytest.importorskip("scapy.all")
    import hashlib
    import ipaddress

    pk = scapy.rdpcap(str(ROOT / "samples" / "ike-proposal-mismatch" / "capture.pcapng"))
    out = []
    for k in range(n):
        for p in pk[:2]:
            q = p.copy()
            raw = bytearray(bytes(q[scapy.UDP].payload))
            raw[0] ^= k << 4
            nxt, off = raw[16], 28
            while nxt and off + 4 <= len(raw):
                if nxt == 41 and struct.unpack_from("!H", raw, off + 6)[0] == 16389:
                    data = off + 8 + raw[off + 5]
                    raw[data:data + 20] = hashlib.sha1(bytes(raw[:16]) + ipaddress.ip_address(q[scapy.IP].dst).packed
                                                       + struct.pack("!H", q[scapy.UDP].dport)).digest()
                nxt, off = raw[off], off + struct.unpack_from("!H", raw, off + 2)[0]
            q[scapy.UDP].remove_payload()
            q[scapy.UDP].add_payload(scapy.Raw(bytes(raw)))
            del q[scapy.UDP].chksum
            q.time = p.time + 30 * k
            out.append(q)
    scapy.wrpcap(str(path), out)
    return path


@needs_tshark
def test_a_refusal_repeated_per_retry_is_one_finding(tmp_path):
    """Three IKE_SA_INIT attempts between the same two peers, each refused with NO_PROPOSAL_CHOSEN:
    one configuration mismatch, one finding naming the three IKE SAs (tshark: three initiator
    SPIs, three notify 14 answers); the NAT hashes stay what the sample's were."""
    cap = _retries(tmp_path / "retries.pcap", 3)
    out = subprocess.run(["tshark", "-r", str(cap), "-Y", "isakmp.notify.msgtype == 14", "-T", "fields",
                          "-e", "frame.number", "-e", "isakmp.ispi"], capture_output=True, text=True, check=True).stdout
    refused = [line.split("\t") for line in out.splitlines()]
    assert len(refused) == 3 and len({spi for _, spi in refused}) == 3
    doc = findings(cap)
    (f,) = [f for f in doc if f["code"] == "IKE-NO-PROPOSAL"]
    assert f["severity"] == "error" and f["count"] == 3
    assert {m["sa"].partition("_")[0] for m in f["members"]} == {spi.replace(":", "") for _, spi in refused}
    assert sorted(fr for m in f["members"] for fr in m["frames"]) == list(range(1, 7))
    assert "between 198.18.0.1 and 198.18.0.2 (f63e1ff0…, e63e1ff0…, d63e1ff0…)" in f["explanation"]
    (nat,) = [f for f in doc if f["code"] == "IKE-NAT-DETECTED"]
    assert nat["title"] == "UDP encapsulation forced by initiator 198.18.0.1 (no NAT seen)" and nat["count"] == 3


def test_a_child_sa_number_in_a_title_is_the_sa_not_the_condition():
    """Refusals of CHILD SAs #2 and #3 (one peer pair in this sample) with the same text but for
    their numbers are one finding whose title names both; #23 does not hold #2."""
    from ipsecscope.analysis.rules.aggregate import aggregate
    from ipsecscope.model.sa import Finding, Severity

    s = Session()
    s.load(ROOT / "samples" / "synthetic" / "ipv6-transport-natt.pcap")
    c2, c3 = s.table.child_sas[2], s.table.child_sas[3]
    assert {c2.initiator, c2.responder} == {c3.initiator, c3.responder}

    def refused(c, title_id=None) -> Finding:
        return Finding(code="IKE-CHILD-REFUSED", severity=Severity.ERROR,
                       title=f"CHILD SA #{title_id or c.id} refused by {c.responder}: TEMPORARY_FAILURE",
                       explanation=f"{c.initiator} asked {c.responder} for a CHILD SA; refused.", frames=(c.id,),
                       sa=f"child:{c.id}", hint="", ts=float(c.id))

    (one,) = aggregate([refused(c2), refused(c3)], s.table)
    assert one.count == 2 and one.title == f"CHILD SAs #2 and #3 refused by {c2.responder}: TEMPORARY_FAILURE"
    assert len(aggregate([refused(c2, 23), refused(c3, 33)], s.table)) == 2  # not "CHILD SA #2" + "3"


@needs_tshark
def test_sas_of_one_pair_answered_on_one_other_sa_are_one_finding():
    """The synthetic NAT-T transport sample: 198.18.40.1 sends on three SAs to .2, which sends on
    one other SA meanwhile (tshark: SPIs 0x60000003/4/7 one way, 0x60000006 back). One finding for
    the three, naming the SA .2 answers on; the other pairs' one-way SAs (one each) keep theirs."""
    cap = ROOT / "samples" / "synthetic" / "ipv6-transport-natt.pcap"
    sas = _tshark_esp_sas(cap)
    three = {f"esp:198.18.40.1>198.18.40.2:0x{s:08x}" for s in (0x60000003, 0x60000004, 0x60000007)}
    assert three <= set(sas) and "esp:198.18.40.2>198.18.40.1:0x60000006" in sas
    assert not [k for k in sas if k.startswith("esp:198.18.40.1>") and k not in three]
    doc = [f for f in findings(cap) if f["code"] == "ESP-ONE-WAY"]
    (group,) = [f for f in doc if f["count"] > 1]
    assert {m["sa"] for m in group["members"]} == three and group["facts"]["answered_on"] == "0x60000006"
    assert group["title"] == ("One-way ESP: 198.18.40.1 -> 198.18.40.2 on 3 SAs (12 packets), nothing back on them; "
                              "198.18.40.2 sends on another")
    assert "on SPI 0x60000006 (CHILD SA #5, 4 packets)" in group["explanation"]
    assert all(sas[m["sa"]][0] in m["frames"] for m in group["members"])
    assert len(doc) == 3 and all(f["count"] == 1 for f in doc if f is not group)
