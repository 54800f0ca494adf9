"""A capture that starts in the middle of IKE_SA_INIT: the IKEv2 header's flags give the roles
(RFC 7296 §3.1: I = sent by the original initiator, R = a response), and an IKE SA whose
IKE_SA_INIT never completed in the capture is not "established".

Data: nDPI's ipsec_isakmp_esp.pcap frames 456-466 (LGPL-3.0; tests/data/ndpi/derived) with the
first IKE_SA_INIT request cut, so the capture opens with the responder's COOKIE answer (RFC 7296
§2.6), then the initiator's retry with the cookie and the answer that picks a proposal. The old
code filed an SA first seen in a response as "capture started after IKE_SA_INIT" and called it
ESTABLISHED (inferred), paired the retry with the COOKIE answer sent before it (frames 2 -> 1,3)
and cited the COOKIE answer as the one that accepted the weak proposal. tshark reads the flags.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import IPSECSCOPE, ROOT, need, needs_tshark, public
from test_inference_order import _without

CUT = public("ndpi/derived/ipsec_isakmp_esp-456-466.pcap")  # third-party: cut at test time (tests/public_data.py)
SA_PAYLOAD = "33"  # IKEv2 payload type SA (RFC 7296 §3.2)


@pytest.fixture(scope="module")
def no_first_request(tmp_path_factory) -> Path:
    need(CUT)  # module-scoped: runs before the autouse fixture could skip
    return _without(CUT, tmp_path_factory.mktemp("ndpi") / "456-466-no1.pcap", {1})


def _cli(*args: str) -> dict:
    r = subprocess.run([*IPSECSCOPE, *args, "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "Traceback" not in r.stderr, r.stderr
    return json.loads(r.stdout)


def _tshark(cap: Path) -> list[list[str]]:
    out = subprocess.run(["tshark", "-r", str(cap), "-T", "fields", "-e", "frame.number", "-e", "ip.src",
                          "-e", "isakmp.flags", "-e", "isakmp.exchangetype", "-e", "isakmp.ispi",
                          "-e", "isakmp.typepayload"], capture_output=True, text=True, check=True).stdout
    return [ln.split("\t") for ln in out.splitlines()]


@needs_tshark
def test_sa_first_seen_in_its_cookie_answer_is_not_established(no_first_request):
    rows = _tshark(no_first_request)
    first, spi = rows[0], rows[0][4]
    flags = int(first[2], 16)
    # the oracle: frame 1 is an IKE_SA_INIT response (R) from the responder (no I flag)
    assert first[3] == "34" and flags & 0x20 and not flags & 0x08
    responder = first[1]
    mine = [r for r in rows if r[4] == spi]
    initiator = next(r[1] for r in mine if int(r[2], 16) & 0x08)
    requests = [int(r[0]) for r in mine if not int(r[2], 16) & 0x20]
    answers = [int(r[0]) for r in mine if int(r[2], 16) & 0x20]
    chose = [int(r[0]) for r in mine if int(r[2], 16) & 0x20 and SA_PAYLOAD in r[5].split(",")]
    assert requests == [2] and answers == [1, 3] and chose == [3]

    (sa,) = [s for s in _cli("sas", str(no_first_request))["ike_sas"] if s["spi_i"] == spi]
    assert (sa["initiator"], sa["responder"]) == (initiator, responder)
    assert sa["state"] == "initiating" and sa["established"] is None and not sa["state_inferred"]
    # the COOKIE answer alone, then the retry and its answer (RFC 7296 §2.6), as on the full capture
    assert [(x["request_frames"], x["response_frames"]) for x in sa["exchanges"]] == [([], [1]), (requests, [3])]
    assert all(x["requester"] == initiator for x in sa["exchanges"])

    (weak,) = [f for f in _cli("findings", str(no_first_request))["findings"]
               if f["code"] == "IKE-WEAK-ALGO" and f["sa"] == sa["key"]]
    assert weak["title"].startswith("IKE SA algorithms accepted, SA not completed: ")
    assert f"accepted it in its IKE_SA_INIT response (frame {chose[0]})" in weak["explanation"]


@needs_tshark
def test_uncut_capture_cites_the_answer_that_chose_not_the_cookie_one():
    """The whole 456-466: each SA's COOKIE answer comes first; the weak proposal is in a later one."""
    rows = _tshark(CUT)
    chose = {r[4]: int(r[0]) for r in rows if int(r[2], 16) & 0x20 and SA_PAYLOAD in r[5].split(",")}
    sas = {s["key"]: s for s in _cli("sas", str(CUT))["ike_sas"]}
    weak = [f for f in _cli("findings", str(CUT))["findings"] if f["code"] == "IKE-WEAK-ALGO"]
    assert len(weak) == len(chose) == 2
    for f in weak:
        sa = sas[f["sa"]]
        assert sa["state"] == "initiating"
        assert f"in its IKE_SA_INIT response (frame {chose[sa['spi_i']]})" in f["explanation"]


def test_flags_0xff_init_is_still_the_initiators_request():
    """IKE_SA_INIT with I and R (and reserved bits) set is the initiator's request (model.ike)."""
    from ipsecscope.model.ike import IkeHeader

    h = IkeHeader(b"\x01" * 8, bytes(8), 33, 2, 0, 34, 0xFF, 0, 28)
    assert not h.is_response and h.is_initiator
    answer = IkeHeader(b"\x01" * 8, bytes(8), 41, 2, 0, 34, 0x20, 0, 28)
    assert answer.is_response and not answer.is_initiator
