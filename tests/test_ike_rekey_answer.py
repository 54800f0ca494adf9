"""An IKE SA rekey (CREATE_CHILD_SA with an IKE proposal, RFC 7296 §1.3.2) refused, or answered with
what was not offered: what is found about it is said of the IKE SA the rekey was creating, as a
refused CHILD SA rekey's is said of its new CHILD SA.

Refused: no IKE SA stood for the rekey, so IKE-NO-PROPOSAL named the old IKE SA and quoted that SA's
IKE_SA_INIT offer; now the new IKE SA (its SPIi the rekey offer's SPI, no responder SPI) is there,
failed with the refusal, in sas text/JSON and the TUI's SA detail, and the finding names it with
the rekey's own offer. Answered with what was not offered: the initiator's charon log checks the
answer under the old IKE SA (the exchange runs on it; charon's ``<gcm|1>``), so the new SA's
IKE-ANSWER-NOT-OFFERED never quoted it and said nothing showed the initiator refusing.

Real data: samples/healthy-gcm (strongSwan 5.9.8), its IKE SA rekey in frames 21-22: the offer
with ecp384 added (as tests/data/rfc-violations/ikev2-rekey-answer-ke.pcap) and the answer turned
into an encrypted N(NO_PROPOSAL_CHOSEN) with the sample's SK keys (tshark decrypts it); the
rfc-violations capture with its initiator log (make.py there).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, SAMPLES, needs_tshark
from ike_reseal import reseal, sk_key
from test_answer_not_offered import _add_transform
from test_ike_delete_fields import _sk_keys
from test_ike_rfc_fields import _sealed
from test_tui import SIZE, loaded, sync

from ipsecscope.capture import open_capture
from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.sa_detail import SaDetail
from ipsecscope.tui.widgets.sa_tree import SaRef

sys.path.insert(0, str(SAMPLES / "synthetic"))
from espgen import PcapWriter  # noqa: E402

SAMPLE = SAMPLES / "healthy-gcm"
KEYS = SAMPLE / "keys"
OLD = "b1b8da23a004d038_fdaf22f6f7559b04"
NEW = "3264aae345f03644_0000000000000000"  # the rekey offer's SPI; the responder gave none
SA_PAYLOAD, NO_PROPOSAL_CHOSEN = 33, 14


def _refusal(frame: bytes, notify: int = NO_PROPOSAL_CHOSEN) -> bytes:
    """The answer ``frame`` (SK only, UDP 4500) with its payloads replaced by N(``notify``), encrypted
    again with the sample's SK_er (AES-GCM-16-256, RFC 5282)."""
    notify_payload = struct.pack("!BBHBBH", 0, 0, 8, 0, 0, notify)  # Notify, no SPI
    return reseal(frame, sk_key(frame, _sk_keys()), inner=notify_payload, next_payload=41)  # SK's Next: N


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> Path:
    """healthy-gcm up to its IKE SA rekey: the offer with ecp384 added, the answer NO_PROPOSAL_CHOSEN."""
    out = tmp_path_factory.mktemp("rekey") / "ikev2-rekey-refused.pcap"
    edits = {21: lambda f: _sealed(f, SA_PAYLOAD, _add_transform(4, 20)), 22: _refusal}
    with open_capture(SAMPLE / "capture.pcapng") as r, PcapWriter(out) as w:
        for f in r:
            if f.index <= 22:
                w.write(f.ts_ns, edits[f.index](bytes(f.data)) if f.index in edits else bytes(f.data))
    return out


def _cli(*args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "ipsecscope", *args], capture_output=True, text=True, timeout=120)
    assert p.returncode in (0, 1) and "Traceback" not in p.stderr, p.stderr
    return p.stdout


@needs_tshark
def test_tshark_reads_the_refusal(refused: Path) -> None:
    out = subprocess.run(["tshark", "-r", str(refused), "-Y", "frame.number >= 21", "-T", "fields", "-e", "frame.number",
                          "-e", "isakmp.exchangetype", "-e", "isakmp.notify.msgtype", "-e", "isakmp.tf.id.dh"],
                         env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(KEYS)),
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert out == ["21\t36\t\t19,20", "22\t36\t14\t"]


def test_refused_rekey_fails_the_ike_sa_it_was_creating(refused: Path) -> None:
    doc = json.loads(_cli("sas", "--json", "-k", str(KEYS), str(refused)))
    sas = {s["key"]: s for s in doc["ike_sas"]}
    assert set(sas) == {OLD, NEW}
    new, old = sas[NEW], sas[OLD]
    assert (new["state"], new["failure"], new["rekeyed_from"]) == ("failed", "NO_PROPOSAL_CHOSEN", OLD)
    assert new["offered"] == ["aes256gcm16-prfsha256-ecp256-ecp384"] and new["proposal"] is None
    # the old IKE SA goes on: nothing was rekeyed into anything, its CHILD SA stays with it
    assert (old["state"], old["rekeyed_into"], old["offered"]) == ("established", None, ["aes256gcm16-prfsha256-ecp256"])
    assert any(c["ike_sa"] == OLD and c["state"] == "established" for c in doc["child_sas"])
    assert f"CREATE_CHILD_SA rekey IKE SA refused: NO_PROPOSAL_CHOSEN ({NEW})" in _cli("sas", "-k", str(KEYS), str(refused))


def test_no_proposal_finding_names_the_new_sa_and_the_rekeys_offer(refused: Path) -> None:
    findings = json.loads(_cli("findings", "--json", "-k", str(KEYS), str(refused)))["findings"]
    (f,) = [f for f in findings if f["code"] == "IKE-NO-PROPOSAL"]
    assert f["sa"] == NEW and f["frames"] == [21, 22]
    assert f["title"] == "IKE SA rekey: no proposal chosen — 198.18.0.2 rejected every proposal 198.18.0.1 offered"
    assert ("rejected the IKE SA rekey proposal in CREATE_CHILD_SA (NO_PROPOSAL_CHOSEN): 198.18.0.1 offered "
            "aes256gcm16-prfsha256-ecp256-ecp384;") in f["explanation"]
    assert [g["code"] for g in findings if g["severity"] == "error"] == ["IKE-NO-PROPOSAL"]


@sync
async def test_tui_sa_detail_of_the_new_sa_says_it_failed(refused: Path) -> None:
    app = create_app(refused, [KEYS])
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        detail = app.query_one(SaDetail)
        detail.show(app.session.table, SaRef("ike", NEW))
        text = detail.as_text(100)
        assert "IKEv2 SA 3264aae345f03644_0000000000000000" in text, text
        # the State row says what refused it (IkeSa.state_text), as sas does
        assert re.search(r"State +failed: NO_PROPOSAL_CHOSEN from 198\.18\.0\.2 \(frame.22\)", text), text
        assert "aes256gcm16-prfsha256-ecp256-ecp384" in text
        detail.show(app.session.table, SaRef("ike", OLD))
        assert "Failed" not in detail.as_text(100)


def test_the_rekey_answer_check_in_the_initiators_log_is_on_the_new_sa() -> None:
    """charon checks the rekey's answer under the old IKE SA (<gcm|1>), after the CREATE_CHILD_SA
    response 4 it parsed: that line is the new SA's evidence, not the old SA's IKE_SA_INIT's."""
    cap = DATA / "rfc-violations" / "ikev2-rekey-answer-ke.pcap"
    log = cap.with_suffix(".log")
    findings = json.loads(_cli("findings", "--json", "-k", str(KEYS), "-k", str(log), str(cap)))["findings"]
    (f,) = [f for f in findings if f["code"] == "IKE-ANSWER-NOT-OFFERED"]
    assert f["sa"] == "3264aae345f03644_e03e6cfc0739cb77"
    assert ("198.18.0.1's log says it refused the answer (ikev2-rekey-answer-ke.log:333: "
            "\"peer DH group selection invalid\").") in f["explanation"]
    assert "Nothing in the capture shows" not in f["explanation"]
    (ev,) = f["evidence_log"]
    assert ev["data"] == {"check": "ke", "about": "ike", "exchange": "CREATE_CHILD_SA", "msg_id": 4}
    assert ev["ike_sa"] == OLD
