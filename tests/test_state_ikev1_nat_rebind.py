"""IKEv1 NAT rebinding: as tests/test_state_nat_rebind.py for IKEv2, with IKEv1 and NAT-T (RFC 3947).

samples/ikev1-nat-rebind is a real run: two strongSwan peers (IKEv1 Main Mode + Quick Mode,
kernel-libipsec, ESP in UDP 4500), the initiator behind an nft NAPT in a router namespace. Main
Mode's NAT-D payloads find the NAPT and the peers float to 4500 at its 5th message; mid-tunnel the
router's UDP mappings are deleted (conntrack -D) and its port range moved, so the initiator's ESP
and its DPD (RFC 3706) leave from a new public port with the same SPIs and cookies. IKEv1 headers
have no I flag: who sent an IKE message is told by address, or by the peer it went to. Oracles:
the router's conntrack view (path.log, in truth.json), the responder's own log ("remote endpoint
changed"), and tshark for the ports on the wire.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import pytest
from conftest import IPSECSCOPE, ROOT, SAMPLES, needs_tshark

from ipsecscope.model.sa import Severity
from ipsecscope.session import Session

D = SAMPLES / "ikev1-nat-rebind"
TRUTH = json.loads((D / "truth.json").read_text())["expected"]
RB = TRUTH["findings"][0]["rebinding"]


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _session(keys: bool, capture=D / "capture.pcapng") -> Session:
    s = Session()
    if keys:
        s.add_key_files([D / "keys" / "esp_sa", D / "keys" / "ikev1_decryption_table"])
    s.load(capture)
    return s


def _wire() -> list[list[str]]:
    out = subprocess.run(["tshark", "-n", "-r", str(D / "capture.pcapng"), "-Y", "udp && !icmp", "-T", "fields",
                          "-e", "frame.number", "-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst",
                          "-e", "udp.dstport", "-e", "esp.spi", "-e", "isakmp.exchangetype"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [ln.split("\t") for ln in out.splitlines()]


@pytest.mark.parametrize("keys", [True, False], ids=["keys", "nokeys"])
def test_ikev1_rebinding_is_found_with_old_and_new_endpoint_and_time(keys):
    s = _session(keys)
    (sa,) = s.table.ike_sas.values()
    assert sa.version == 1 and sa.nat_t
    (rb,) = sa.nat_rebindings
    assert rb.peer == RB["peer"]
    assert (f"{rb.old_addr}:{rb.old_port}", f"{rb.new_addr}:{rb.new_port}") == (RB["old"], RB["new"])
    assert rb.seen_in == f"ESP {RB['spi_unchanged']}" and rb.ts > RB["mapping_dropped_at"]
    # The responder followed when its own log says it did: its Quick Mode to the new port.
    logged = datetime.fromisoformat(RB["responder_followed_log"]["time"]).replace(tzinfo=UTC).timestamp()
    assert rb.followed_ts is not None and abs(rb.followed_ts - logged) < 0.5
    assert rb.followed_in == "IKE Quick Mode"
    assert rb.to_old == len(rb.to_old_frames) >= 1 and all(rb.frame < f < rb.followed_frame for f in rb.to_old_frames)


@needs_tshark
def test_ikev1_rebinding_frames_agree_with_tshark():
    rows = _wire()
    old, new = _port(RB["old"]), _port(RB["new"])
    from_init = [(int(r[0]), int(r[2])) for r in rows if r[1] == "198.18.0.1" and int(r[2]) in (old, new)]
    first_new = next(fr for fr, p in from_init if p == new)
    assert all(p == old for fr, p in from_init if fr < first_new)  # one move, no flapping
    to_old_after = [int(r[0]) for r in rows if r[3] == "198.18.0.1" and int(r[4]) == old and int(r[0]) > first_new]
    first_followed = min(int(r[0]) for r in rows if r[3] == "198.18.0.1" and int(r[4]) == new)
    (sa,) = _session(False).table.ike_sas.values()
    (rb,) = sa.nat_rebindings
    assert (rb.frame, rb.to_old_frames, rb.followed_frame) == (first_new, to_old_after, first_followed)
    # Main Mode floats to 4500 at its 5th message (RFC 3947 §4), not at a later exchange
    assert sa.natt_frame == min(int(r[0]) for r in rows if "4500" in (r[2], r[4]))


@needs_tshark
def test_ikev1_rebinding_seen_in_ike_alone(tmp_path):
    """Without the ESP frames (editcap), the initiator's IKE from the new port (its DPD R-U-THERE,
    an Informational) is the rebinding, and the responder's Quick Mode request to it the follow:
    IKEv1 messages, with no I flag, are told apart by address and by whom they went to."""
    esp = [r[0] for r in _wire() if r[5]]
    cut = tmp_path / "ike-only.pcapng"
    subprocess.run(["editcap", str(D / "capture.pcapng"), str(cut), *esp], check=True, capture_output=True,
                   timeout=60)
    (sa,) = _session(True, cut).table.ike_sas.values()
    (rb,) = sa.nat_rebindings
    assert (f"{rb.old_addr}:{rb.old_port}", f"{rb.new_addr}:{rb.new_port}") == (RB["old"], RB["new"])
    assert rb.peer == "initiator" and rb.seen_in == "IKE Informational" and rb.followed_in == "IKE Quick Mode"


def test_ikev1_finding_speaks_ikev1():
    s = _session(True)
    f = next(f for f in s.findings if f.code == "IKE-NAT-DETECTED")
    assert f.severity == Severity.INFO  # followed: the tunnel healed
    assert f"NAT rebinding of the initiator {RB['old']} -> {RB['new']}" in f.title
    (sa,) = s.table.ike_sas.values()
    rb = sa.nat_rebindings[0]
    assert {rb.frame, rb.followed_frame, *rb.to_old_frames[:1], sa.natt_frame} <= set(f.frames)
    text = f.explanation
    assert "The other peer followed (IKEv1 NAT-T, RFC 3947 §4)" in text
    assert f"floated from UDP 500 to 4500 in Main Mode (frame {sa.natt_frame})" in text
    assert "IKE_SA_INIT" not in text and "NAT_DETECTION" not in text and "first Main Mode message" in text
    assert max(x.severity for x in s.findings) == Severity[TRUTH["max_severity"].upper()]
    assert not {x.code for x in s.findings} & set(TRUTH["not_reported"])
    r = subprocess.run([*IPSECSCOPE, "sas", str(D / "capture.pcapng"), "-k", str(D / "keys" / "esp_sa"), "--json"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    (got,) = json.loads(r.stdout)["ike_sas"][0]["nat"]["rebindings"]
    assert (got["peer"], got["old"], got["new"], got["frame"]) == (RB["peer"], RB["old"], RB["new"], rb.frame)
    assert got["followed_frame"] == rb.followed_frame and got["to_old"] == rb.to_old


@needs_tshark
def test_ikev1_unfollowed_rebinding_is_a_warning(tmp_path):
    rb = next(iter(_session(False).table.ike_sas.values())).nat_rebindings[0]
    cut = tmp_path / "cut.pcapng"
    subprocess.run(["editcap", "-r", str(D / "capture.pcapng"), str(cut), f"1-{rb.followed_frame - 1}"],
                   check=True, capture_output=True, timeout=60)
    s = _session(False, cut)
    (got,) = next(iter(s.table.ike_sas.values())).nat_rebindings
    assert got.followed_ts is None and got.to_old_frames == rb.to_old_frames
    f = next(x for x in s.findings if x.code == "IKE-NAT-DETECTED")
    assert f.severity == Severity.WARNING and f"{RB['old']} -> {RB['new']}" in f.title
    assert "never sent to" in f.explanation and "RFC 3947" in f.explanation
