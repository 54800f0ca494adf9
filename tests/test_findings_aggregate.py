"""One finding per condition, and IKE responses whose requests the capture never holds.

Found on a real ISAKMP reflection capture (StopDDoS amp.UDP.isakmp.pcap: 3,984 Main Mode answers
from 2,767 responders to one spoofed address; its licence keeps it out of this repository):
findings printed 3,982 identical IKE-WEAK-ALGO warnings, one per IKE SA, and nothing said that
every one of them answered a request the capture does not hold.

Data: nDPI's ipsec_isakmp_esp.pcap frames 1-160 (LGPL-3.0, real IKEv2 NAT-T sessions of one client
to several gateways, 11 IKE SAs on aes256-sha1-modp1024; tests/data/ndpi/PROVENANCE.md), Cisco
joy's ikev2.pcap (BSD-3) with the initiator's frames cut, tcpdump's ISAKMP_sa_setup.pcap cut
after MM1, and Openswan pluto's MM2 sent alone (GPL-2.0) copied to many responders' addresses as
a reflection shows it: each responder answering the victim with a cookie of its own.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import DATA, IPSECSCOPE, ROOT

from ipsecscope.analysis.rules import RuleContext, evaluate
from ipsecscope.session import Session

SESSIONS = DATA / "ndpi" / "derived" / "ipsec_isakmp_esp-1-160.pcap"
TWO = DATA / "ndpi" / "derived" / "ipsec_isakmp_esp-287-324.pcap"  # 2 IKE SAs on the same weak proposal


def run(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([*IPSECSCOPE, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "Traceback" not in r.stderr and r.returncode in (0, 1), r.stderr
    return r


def findings(cap: Path) -> list[dict]:
    return json.loads(run("findings", str(cap), "--json").stdout)["findings"]


def test_one_weak_proposal_on_eleven_ike_sas_is_one_finding_that_names_them():
    doc = findings(SESSIONS)
    weak = [f for f in doc if f["code"] == "IKE-WEAK-ALGO"]
    assert len(weak) == 1
    f = weak[0]
    # Which IKE SAs chose it, from sas (the SA table, not the rules)
    sas = json.loads(run("sas", str(SESSIONS), "--json").stdout)["ike_sas"]
    chose = {sa["key"] for sa in sas if sa["proposal"] == "aes256-sha1-modp1024"}
    assert len(chose) == 11 and f["count"] == 11
    assert {m["sa"] for m in f["members"]} == chose and f["sa"] == f["members"][0]["sa"]
    assert all(m["peers"][0] == "192.168.2.100" and m["frames"] for m in f["members"])
    assert f["time"] == min(m["time"] for m in f["members"])
    # the text counts and names them: the client with its gateways, the first five, "and N more"
    gateways = list(dict.fromkeys(m["peers"][1] for m in f["members"]))
    assert f"The same holds for 11 IKE SAs in all, between 192.168.2.100 and {len(gateways)} peers: " \
        f"{', '.join(gateways[:5])}" in f["explanation"]
    text = run("findings", str(SESSIONS)).stdout
    assert text.count("IKE-WEAK-ALGO") == 1 and "×11 SAs" in text and "and 10 more" in text


def test_aggregation_loses_no_finding_and_keeps_small_groups():
    """Without aggregation (aggregate_min=0) each SA has its finding: the members are exactly them."""
    s = Session()
    s.load(SESSIONS)
    one = [f for f in evaluate(s.table, RuleContext(session=s, aggregate_min=0)) if f.code == "IKE-WEAK-ALGO"]
    merged = [f for f in evaluate(s.table, RuleContext(session=s)) if f.code == "IKE-WEAK-ALGO"]
    assert len(one) == 11 and len(merged) == 1
    assert [m.sa for m in merged[0].members] == [f.sa for f in sorted(one, key=lambda f: f.ts or 0.0)]
    assert sorted(fr for m in merged[0].members for fr in m.frames) == sorted(fr for f in one for fr in f.frames)
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
            at = next(i for i, f in enumerate(view.findings) if f.code == "IKE-WEAK-ALGO")
            weak = view.findings[at]
            table = app.query_one("#findings-table", DataTable)
            assert "×11\u00a0SAs" in str(table.get_row_at(at)[2]).replace("\n", " ")
            table.focus()
            table.move_cursor(row=at)
            await pilot.pause()
            explain = str(app.query_one("#finding-explain", Static).render())
            assert "The same holds for 11 IKE SAs in all" in explain and "and 10 more" in explain
            assert any("×11\u00a0SAs" in line for line in screen_lines(app))
            await pilot.press("enter")
            await loaded(pilot)
            assert app.query_one(TabbedContent).active == "packets"
            assert app.query_one("#filter", Input).value == "finding=IKE-WEAK-ALGO"
            # every SA's evidence, not only the five named ones'
            assert frames_in_view(app.query_one(PacketTable)) == list(weak.all_frames)
            assert len(weak.all_frames) > len(weak.frames)

    run_app()
