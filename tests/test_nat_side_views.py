"""Every view names the NAT side the way IKE-NAT-DETECTED does (issue 11 #3, RFC 7296 §2.23).

The raw NAT_DETECTION_* verdicts say "both peers" on the real NAT samples: the responder's
NAT_DETECTION_SOURCE_IP is deliberately wrong (strongSwan with kernel-libipsec forces UDP
encapsulation that way). `sas`, `sas --json` and the TUI's SA detail must say what the samples'
truth says: the initiator is behind the NAPT, the responder only forces encapsulation.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import IPSECSCOPE, SAMPLES
from test_tui import loaded, sync, tree_cursor_to

from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.sa_detail import SaDetail

NATTED = ["nat-napt", "nat-rebind"]


def _truth(sample: str) -> dict:
    truth = json.loads((SAMPLES / sample / "truth.json").read_text())
    nat = next(f for f in truth["expected"]["findings"] if f.get("code") == "IKE-NAT-DETECTED")
    assert nat["side"] == "initiator" and nat.get("responder_behind_nat", False) is False
    return nat


@pytest.mark.parametrize("sample", NATTED)
def test_sas_json_names_the_translated_side(sample: str) -> None:
    nat = _truth(sample)
    out = subprocess.run([*IPSECSCOPE, "sas", "--json", str(SAMPLES / sample / "capture.pcapng")],
                         capture_output=True, text=True, check=True).stdout
    ike = json.loads(out)["ike_sas"][0]
    assert ike["initiator"] == nat["behind_nat"]
    # the raw hash verdicts stay as they are (both fail); the side is the analysis' answer
    assert ike["nat"]["initiator"] is True and ike["nat"]["responder"] is True
    assert ike["nat"]["behind_nat"] == ["initiator"]
    assert ike["nat"]["encapsulation_forced"] == ["responder"]


@pytest.mark.parametrize("sample", NATTED)
def test_sas_text_names_the_translated_side(sample: str) -> None:
    nat = _truth(sample)
    out = subprocess.run([*IPSECSCOPE, "sas", str(SAMPLES / sample / "capture.pcapng")],
                         capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if "NAT:" in ln)
    # nat-napt's truth has the translated port of IKE_SA_INIT (the router's view); nat-rebind's has the rebinding
    seen = nat["translated"] if "translated" in nat else f"{nat['behind_nat']}:"
    assert f"initiator behind a NAT (seen as {seen}" in line
    assert "responder behind" not in line and "responder forces UDP encapsulation" in line


def test_healthy_sample_has_nobody_behind_a_nat() -> None:
    out = subprocess.run([*IPSECSCOPE, "sas", "--json", str(SAMPLES / "healthy-gcm" / "capture.pcapng")],
                         capture_output=True, text=True, check=True).stdout
    for ike in json.loads(out)["ike_sas"]:
        assert ike["nat"]["behind_nat"] == []


@sync
async def test_tui_sa_detail_names_the_translated_side() -> None:
    nat = _truth("nat-napt")
    app = create_app(SAMPLES / "nat-napt" / "capture.pcapng")
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot)
        await tree_cursor_to(pilot, "ike")
        await pilot.press("enter")
        await pilot.pause()
        text = app.query_one(SaDetail).as_text()
        assert f"initiator behind a NAT (seen as {nat['translated']})" in text
        assert "responder behind" not in text
