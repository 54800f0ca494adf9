"""MOBIKE (RFC 4555): a roaming client moves its IKE SA and CHILD SA to a new address.

tests/data/mobike (make.py: two strongSwan peers, ``mobike = yes``, capture at the gateway): the
client 198.18.0.1 announces a second address 198.18.0.3 (ADDITIONAL_IP4_ADDRESS, §3.6), loses the
first, checks the path with an empty INFORMATIONAL from 198.18.0.3 and sends UPDATE_SA_ADDRESSES
with NAT_DETECTION_* and COOKIE2 from there (§3.5); the gateway answers and moves the SAs
(charon-right.log: "remote endpoint changed from 198.18.0.1[4500] to 198.18.0.3[4500]").
kernel-libipsec cannot change an installed SA's addresses, so charon then rekeys the CHILD SA.

Before: the move was called a NAT rebinding ("its NAT dropped the mapping") although the update
said otherwise, the SA views did not show it, the update's exchange had an empty summary, and the
SA index (SPI + destination + protocol, RFC 4301 §4.1) still knew the client only at 198.18.0.1.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime

import pytest
from conftest import DATA, IPSECSCOPE, ROOT, needs_tshark
from test_tui import loaded, sync, tree_cursor_to

from ipsecscope.model.sa import Severity
from ipsecscope.session import Session
from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.sa_detail import SaDetail

HERE = DATA / "mobike"
CAP = HERE / "capture.pcap"
KEYS = HERE / "charon-right.log"
OLD, NEW, GW = "198.18.0.1", "198.18.0.3", "198.18.0.2"


@pytest.fixture(scope="module")
def session() -> Session:
    s = Session()
    s.add_key_files([KEYS])
    s.load(CAP)
    return s


def _tshark(*fields: str, filt: str) -> list[list[str]]:
    out = subprocess.run(["tshark", "-n", "-r", str(CAP), "-Y", filt, "-T", "fields", *(a for f in fields for a in ("-e", f))],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [ln.split("\t") for ln in out.splitlines()]


def _logged(pattern: str) -> float:
    """Time of the gateway's first log line matching ``pattern`` (same host clock, ms)."""
    for ln in KEYS.read_text().splitlines():
        if re.search(pattern, ln):
            return datetime.fromisoformat(ln.split()[0]).replace(tzinfo=UTC).timestamp()
    raise AssertionError(pattern)


def test_one_ike_sa_records_the_update_and_the_move(session) -> None:
    (sa,) = session.table.ike_sas.values()
    assert sa.mobike_supported == (True, True)
    (u,) = sa.mobike_updates
    assert (u.peer, u.src_addr, u.dst_addr, u.old_addr) == ("initiator", NEW, GW, OLD)
    assert u.cookie2 and u.answered_frame is not None and not u.error
    # The gateway moved when its log says, on this update (ms log against µs capture).
    assert abs(u.ts - _logged(r"remote endpoint changed from 198\.18\.0\.1\[4500\] to 198\.18\.0\.3")) < 0.01
    (rb,) = sa.nat_rebindings
    assert rb.mobike_frame == u.frame and rb.frame < u.frame  # the path check came first
    # NO_ADDITIONAL_ADDRESSES in IKE_AUTH (frames 3, 4) and with the update (103), NEW announced in 11
    assert [a for _role, _f, a in sa.mobike_additional] == [(), (), (NEW,), ()]


@needs_tshark
def test_update_frames_are_the_ones_tshark_sees_from_the_new_address(session) -> None:
    (sa,) = session.table.ike_sas.values()
    (u,) = sa.mobike_updates
    rows = _tshark("frame.number", "isakmp.exchangetype", "isakmp.messageid", filt=f"isakmp && ip.src == {NEW}")
    # INFORMATIONAL (37) requests from the new address: the empty path check, the update, the delete.
    info = [int(f) for f, x, _m in rows if x == "37"]
    assert u.frame in info and sa.nat_rebindings[0].frame == info[0]
    assert [int(m, 16) for f, _x, m in rows if int(f) == u.frame] == [u.message_id]


def test_no_esp_trouble_and_no_inferred_sa_across_the_move(session) -> None:
    children = list(session.table.child_sas.values())
    assert len(children) == 2 and all(c.ike_sa for c in children)  # the original and its rekey
    codes = {f.code for f in session.findings}
    assert not codes & {"ESP-UNKNOWN-SPI", "ESP-ONE-WAY", "ESP-RETURN-STOPPED", "IKE-DEAD-PEER"}


def test_sa_index_follows_the_moved_peer(session) -> None:
    """RFC 4301 §4.1 + RFC 4555 §3.5: the client's inbound SA (the CHILD SA's spi_i) is the same SA
    when its destination becomes 198.18.0.3: a packet with that SPI to the new address binds to it."""
    book = session.tracker
    first = min(session.table.child_sas.values(), key=lambda c: c.id)
    assert first.initiator == OLD
    assert first.id in book.children_of_sa(OLD, "ESP", first.spi_i)
    assert first.id in book.children_of_sa(NEW, "ESP", first.spi_i)
    assert book.children_of_sa(NEW, "ESP", first.spi_r) == []  # the gateway did not move


def test_mobike_move_finding_and_no_nat_rebinding_claim() -> None:
    r = subprocess.run([*IPSECSCOPE, "findings", str(CAP), "-k", str(KEYS), "--json"], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    fs = json.loads(r.stdout)["findings"]
    (m,) = [f for f in fs if f["code"] == "IKE-MOBIKE-MOVE"]
    assert m["severity"].lower() == Severity.INFO.name.lower()
    assert f"{OLD}:4500" in m["title"] and f"{NEW}:4500" in m["title"]
    assert "UPDATE_SA_ADDRESSES" in m["explanation"] and "RFC 4555 §3.5" in m["explanation"]
    assert "rekeyed into" in m["explanation"]  # kernel-libipsec rekeys instead of updating in place
    nat = [f for f in fs if f["code"] == "IKE-NAT-DETECTED"]
    assert all("NAT rebinding" not in f["title"] + f["explanation"] for f in nat)


def test_sas_view_shows_both_address_pairs_and_when() -> None:
    out = subprocess.run([*IPSECSCOPE, "sas", str(CAP), "-k", str(KEYS)], capture_output=True, text=True, cwd=ROOT,
                         timeout=120).stdout
    line = next(ln for ln in out.splitlines() if "MOBIKE:" in ln)
    assert f"{OLD}:4500 → {NEW}:4500" in line and "UPDATE_SA_ADDRESSES" in line and "answered" in line
    assert "path check from the new address 198.18.0.3" in out
    assert "MOBIKE additional addresses 198.18.0.3" in out
    assert "rebound" not in out


def test_without_keys_the_move_is_not_asserted_to_be_a_nat() -> None:
    r = subprocess.run([*IPSECSCOPE, "findings", str(CAP), "--json"], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    (nat,) = [f for f in json.loads(r.stdout)["findings"] if f["code"] == "IKE-NAT-DETECTED"]
    assert "or the peer itself moved with MOBIKE" in nat["explanation"]


# nat-capture.pcap (make.py nat): the client roams from 198.18.0.1 to 10.0.0.1 behind a NAPT that
# shows it as 198.18.2.1 with a port of 40000-40999; the capture is on the gateway's side.
NAT_CAP, NAT_KEYS = HERE / "nat-capture.pcap", HERE / "nat-charon-right.log"


def test_move_behind_a_nat_is_told_by_the_translated_port() -> None:
    s = Session()
    s.add_key_files([NAT_KEYS])
    s.load(NAT_CAP)
    (sa,) = s.table.ike_sas.values()
    (u,) = sa.mobike_updates
    # The gateway's own log names the endpoint it moved to (address and translated port).
    logged = re.search(r"remote endpoint changed from 198\.18\.0\.1\[4500\] to (198\.18\.2\.1)\[(\d+)\]",
                       NAT_KEYS.read_text())
    assert logged and (u.src_addr, u.src_port) == (logged[1], int(logged[2])) and 40000 <= u.src_port <= 40999
    # The client itself sent from port 4500 (its log), so the other port is the NAT's.
    assert "checking path 10.0.0.1[4500] - 198.18.0.2[4500]" in (HERE / "nat-charon-left.log").read_text()
    (f,) = [f for f in s.findings if f.code == "IKE-MOBIKE-MOVE"]
    assert "now behind a NAT" in f.title and f"port {u.src_port}, not the 4500" in f.explanation
    assert f.severity == Severity.INFO
    first = min(s.table.child_sas.values(), key=lambda c: c.id)
    assert first.id in s.tracker.children_of_sa(u.src_addr, "ESP", first.spi_i)


# unanswered-capture.pcap (make.py unanswered): the gateway's nft output chain drops what it sends to
# 198.18.0.3 above 120 bytes, so the path check is answered and the update is not; the client gives up.
LOST_CAP, LOST_KEYS = HERE / "unanswered-capture.pcap", HERE / "unanswered-charon-right.log"


@needs_tshark
def test_unanswered_update_is_a_warning_and_the_dead_peer_is_the_gateway() -> None:
    s = Session()
    s.add_key_files([LOST_KEYS])
    s.load(LOST_CAP)
    (sa,) = s.table.ike_sas.values()
    (u,) = sa.mobike_updates
    assert u.answered_frame is None
    copies = [int(f) for f, in _tshark_cap(LOST_CAP, "frame.number", filt=f"isakmp.messageid == {u.message_id} && ip.src == {NEW}")]
    assert copies[0] == u.frame and len(copies) == 4  # the update and 3 retransmissions, none answered
    assert "giving up after 3 retransmits" in (HERE / "unanswered-charon-left.log").read_text()
    fs = {f.code: f for f in s.findings}
    m = fs["IKE-MOBIKE-MOVE"]
    assert m.severity == Severity.WARNING and "never answered" in m.title and "asked to move" in m.title
    # The request came from the initiator's new address: the peer that owes the answer is the
    # gateway, not the initiator's old address (other_peer follows the move).
    d = fs["IKE-DEAD-PEER"]
    assert f"{GW} stopped answering {NEW}" in d.title and OLD not in d.title
    head = subprocess.run([*IPSECSCOPE, "sas", str(LOST_CAP), "-k", str(LOST_KEYS)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120).stdout.splitlines()[0]
    assert f"peer {GW} dead since" in head


def _tshark_cap(cap, *fields: str, filt: str) -> list[list[str]]:
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", filt, "-T", "fields", *(a for f in fields for a in ("-e", f))],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [ln.split("\t") for ln in out.splitlines()]


@sync
async def test_tui_sa_detail_shows_the_move_at_80x24() -> None:
    app = create_app(CAP, [KEYS])
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await tree_cursor_to(pilot, "ike")
        await pilot.press("enter")
        await pilot.pause()
        text = " ".join(app.query_one(SaDetail).as_text().split())
        assert f"MOBIKE: initiator moved {OLD}:4500 → {NEW}:4500 by UPDATE_SA_ADDRESSES" in text
        assert "rebound" not in text
