"""Issue 11 item 7: REDIRECT (RFC 5685). samples/redirect is two real strongSwan 5.9.8 gateways and
a client: the gateway redirects the established IKE SA (INFORMATIONAL, §6), the client sets up a
new IKE SA with the other gateway (its IKE_SA_INIT carries REDIRECTED_FROM) and deletes the old one.
Oracles: the sample's truth.json (from the charon logs) and tshark for the REDIRECTED_FROM frame."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import SAMPLES, needs_tshark
from test_tracker import load

from ipsecscope.model.sa import SaState, Severity

TRUTH = json.loads((SAMPLES / "redirect" / "truth.json").read_text())["expected"]["findings"][0]


@pytest.mark.parametrize("keys", [True, False], ids=["keys", "nokeys"])
def test_redirected_ike_sa_has_its_own_state_and_finding(keys):
    s = load("redirect", keys=keys)
    t = s.table
    old, new = t.ike_sas[TRUTH["ike_sa"]], t.ike_sas[TRUTH["new_ike_sa"]]
    assert old.state == SaState.REDIRECTED  # never INITIATING / FAILED
    assert (old.redirect_to, old.redirected_into, new.redirected_from) == (TRUTH["to"], new.key, old.key)
    assert old.responder == TRUTH["from"] and new.responder == TRUTH["to"]
    assert old.redirect_exchange == ("INFORMATIONAL" if keys else "encrypted")
    assert (old.deleted_ts is not None) is keys  # the Delete that ends it is encrypted
    ev = [e for e in s.tracker.events if e["event"] == "ike_sa_redirected"]
    assert [(e["ike_sa"], e["to"]) for e in ev] == [(old.key, TRUTH["to"])]
    found = [f for f in s.findings if f.code == "IKE-REDIRECTED"]
    assert len(found) == 1
    f = found[0]
    assert f.severity == Severity[TRUTH["severity"].upper()] and f.sa == old.key
    assert TRUTH["to"] in f.title and TRUTH["from"] in f.title and new.key in f.explanation
    assert max(x.severity for x in s.findings) == Severity[TRUTH["severity"].upper()]
    assert "IKE-NO-RESPONSE" not in {x.code for x in s.findings}


@needs_tshark
def test_redirect_evidence_frames_agree_with_tshark():
    out = subprocess.run(["tshark", "-n", "-r", str(SAMPLES / "redirect" / "capture.pcapng"), "-Y",
                          "isakmp.notify.msgtype == 16408", "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert len(out) == 1  # the client's IKE_SA_INIT to the new gateway, with REDIRECTED_FROM
    f = next(x for x in load("redirect").findings if x.code == "IKE-REDIRECTED")
    assert int(out[0]) in f.frames
    # The REDIRECT itself (encrypted INFORMATIONAL) is the first evidence frame, before it.
    assert f.frames[0] < int(out[0])


def test_redirect_not_followed_is_a_warning():
    """Cut the capture before the client reaches the new gateway: the same REDIRECT, nobody
    followed it in what the capture shows."""
    from conftest import ike_messages

    from ipsecscope.analysis.rules import evaluate
    from ipsecscope.state.tracker import Tracker

    msgs = ike_messages(SAMPLES / "redirect" / "capture.pcapng")
    s = load("redirect")  # its decrypted messages, fed again up to the client's move
    tr = Tracker()
    for m in msgs:
        if m.dst == TRUTH["to"] or m.src == TRUTH["to"]:
            break
        dec = s.ike_messages.get(m.frame, m)
        tr.on_ike(dec)
    tr.finish()
    sa = tr.table.ike_sas[TRUTH["ike_sa"]]
    assert sa.state == SaState.REDIRECTED and sa.redirected_into is None
    f = next(x for x in evaluate(tr.table) if x.code == "IKE-REDIRECTED")
    assert f.severity == Severity.WARNING and TRUTH["to"] in f.title


@pytest.mark.parametrize("keys", [True, False], ids=["keys", "nokeys"])
def test_sas_json_carries_the_redirect(keys):
    """`sas --json` (schema ipsecscope.sas/1) names where each IKE SA was redirected, and links the
    old SA and the new one both ways, as the model does."""
    from conftest import IPSECSCOPE

    d = SAMPLES / "redirect"
    args = [str(d / "capture.pcapng")] + (["-k", str(d / "keys")] if keys else [])
    r = subprocess.run([*IPSECSCOPE, "sas", *args, "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    sas = {sa["key"]: sa for sa in json.loads(r.stdout)["ike_sas"]}
    old, new = sas[TRUTH["ike_sa"]], sas[TRUTH["new_ike_sa"]]
    assert old["state"] == "redirected" and old["redirect_to"] == TRUTH["to"]
    assert old["redirect_exchange"] == ("INFORMATIONAL" if keys else "encrypted")
    assert isinstance(old["redirect_frame"], int) and isinstance(old["redirect_time"], float)
    assert (old["redirected_into"], new["redirected_from"]) == (new["key"], old["key"])
    assert new["redirect_to"] is None and new["redirected_into"] is None and old["redirected_from"] is None
