"""Issue 11 item 3, NAT rebinding: the NAT in front of a peer drops its mapping mid-SA, so the peer's
packets come from a new public port with the same SPIs (RFC 7296 §2.23; RFC 3948).

samples/nat-rebind is a real run: two strongSwan 5.9.8 peers, the initiator behind an nft NAPT in a
router namespace; mid-tunnel the router's UDP mappings are deleted (conntrack -D) and its port range
moved. Oracles: the router's conntrack view before and after (path.log, in truth.json), the
responder's own log ("remote endpoint changed"), and tshark for the ports on the wire.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import pytest
from conftest import IPSECSCOPE, ROOT, SAMPLES, needs_tshark

from ipsecscope.model.sa import Severity
from ipsecscope.session import Session

D = SAMPLES / "nat-rebind"
TRUTH = json.loads((D / "truth.json").read_text())["expected"]
RB = TRUTH["findings"][0]["rebinding"]


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _session(keys: bool) -> Session:
    s = Session()
    if keys:
        s.add_key_files([D / "keys"])
    s.load(D / "capture.pcapng")
    return s


@pytest.mark.parametrize("keys", [True, False], ids=["keys", "nokeys"])
def test_rebinding_is_found_with_old_and_new_endpoint_and_time(keys):
    s = _session(keys)
    (sa,) = s.table.ike_sas.values()
    (rb,) = sa.nat_rebindings
    assert rb.peer == RB["peer"]
    assert (f"{rb.old_addr}:{rb.old_port}", f"{rb.new_addr}:{rb.new_port}") == (RB["old"], RB["new"])
    # First seen on the initiator's ESP on the SA that was up when the mapping went (same SPI).
    assert rb.seen_in == f"ESP {RB['spi_unchanged']}"
    assert rb.ts > RB["mapping_dropped_at"]
    # The responder followed when its own log says it did (same host clock; the log has ms).
    logged = datetime.fromisoformat(RB["responder_followed_log"]["time"]).replace(tzinfo=UTC).timestamp()
    assert rb.followed_ts is not None and rb.followed_ts > rb.ts and abs(rb.followed_ts - logged) < 0.5
    # In between, its ESP went to the stale mapping.
    assert rb.to_old == len(rb.to_old_frames) >= 1
    assert all(rb.frame < f < rb.followed_frame for f in rb.to_old_frames)
    # The flow that moved keeps its first port and shows the last.
    f = next(f for f in s.table.flows.values() if f.spi == int(RB["spi_unchanged"], 16))
    assert (f.sport, f.sport_last) == (_port(RB["old"]), _port(RB["new"]))


@needs_tshark
def test_rebinding_frames_agree_with_tshark():
    out = subprocess.run(["tshark", "-n", "-r", str(D / "capture.pcapng"), "-Y", "udp && !icmp", "-T", "fields",
                          "-e", "frame.number", "-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst",
                          "-e", "udp.dstport", "-e", "esp.spi"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [ln.split("\t") for ln in out.splitlines()]
    old, new = _port(RB["old"]), _port(RB["new"])
    from_init = [(int(r[0]), int(r[2])) for r in rows if r[1] == "198.18.0.1" and int(r[2]) in (old, new)]
    first_new = next(fr for fr, p in from_init if p == new)
    assert all(p == old for fr, p in from_init if fr < first_new)  # one move, no flapping
    to_old_after = [int(r[0]) for r in rows if r[3] == "198.18.0.1" and int(r[4]) == old and int(r[0]) > first_new]
    first_followed = min(int(r[0]) for r in rows if r[3] == "198.18.0.1" and int(r[4]) == new)
    (rb,) = next(iter(_session(False).table.ike_sas.values())).nat_rebindings
    assert rb.frame == first_new and rb.to_old_frames == to_old_after
    # The first packet to the new port is the responder's own request (a response would only answer
    # the DPD's source, RFC 7296 §2.23 does not count it); tshark lists the DPD response after it.
    assert rb.followed_frame == first_followed


def test_finding_and_json_report_the_rebinding():
    s = _session(True)
    f = next(f for f in s.findings if f.code == "IKE-NAT-DETECTED")
    assert f.severity == Severity.INFO  # followed: the tunnel healed
    assert f"NAT rebinding of the initiator {RB['old']} -> {RB['new']}" in f.title
    assert f"{RB['old']} -> {RB['new']}" in f.explanation and "The other peer followed" in f.explanation
    rb = next(iter(s.table.ike_sas.values())).nat_rebindings[0]
    assert {rb.frame, rb.followed_frame, *rb.to_old_frames[:1]} <= set(f.frames)
    assert max(x.severity for x in s.findings) == Severity[TRUTH["max_severity"].upper()]
    assert not {x.code for x in s.findings} & set(TRUTH["not_reported"])
    r = subprocess.run([*IPSECSCOPE, "sas", str(D / "capture.pcapng"), "--json"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    (got,) = json.loads(r.stdout)["ike_sas"][0]["nat"]["rebindings"]
    assert (got["peer"], got["old"], got["new"], got["frame"]) == (RB["peer"], RB["old"], RB["new"], rb.frame)
    assert got["followed_frame"] == rb.followed_frame and got["to_old"] == rb.to_old


@needs_tshark
def test_unfollowed_rebinding_is_a_warning(tmp_path):
    """Cut the capture (editcap) before the responder follows: the rebinding stands, the responder's
    ESP went to the stale mapping, and nothing says it will ever move: a warning naming both endpoints."""
    rb = next(iter(_session(False).table.ike_sas.values())).nat_rebindings[0]
    cut = tmp_path / "cut.pcapng"
    subprocess.run(["editcap", "-r", str(D / "capture.pcapng"), str(cut), f"1-{rb.followed_frame - 1}"],
                   check=True, capture_output=True, timeout=60)
    s = Session()
    s.load(cut)
    (got,) = next(iter(s.table.ike_sas.values())).nat_rebindings
    assert got.followed_ts is None and got.to_old_frames == rb.to_old_frames
    f = next(x for x in s.findings if x.code == "IKE-NAT-DETECTED")
    assert f.severity == Severity.WARNING and f"{RB['old']} -> {RB['new']}" in f.title
    assert "never sent to" in f.explanation and "keep_alive" in f.hint


def test_sas_text_and_sa_detail_name_the_rebinding():
    """The README promises the rebinding in `sas` (when, and when the other peer followed); only the
    finding and the JSON had it: the SA views' NAT line (nat_phrase) now says it too."""
    from ipsecscope.analysis.rules.nat_mtu import nat_phrase

    s = _session(True)
    sa = next(iter(s.table.ike_sas.values()))
    rb = sa.nat_rebindings[0]
    phrase = f"initiator rebound {RB['old']} → {RB['new']}"
    assert phrase in nat_phrase(s.table, sa)
    assert f"(frame {rb.frame}), followed" in nat_phrase(s.table, sa)
    r = subprocess.run([*IPSECSCOPE, "sas", str(D / "capture.pcapng"), "-k", str(D / "charon-left.log")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert phrase in r.stdout, r.stdout
