"""IKE-ANSWER-NOT-OFFERED quotes the initiator's own charon log when it is given (-k): the lines
strongSwan writes when an answer does not fit its offer (ike_init.c, main_mode.c, quick_mode.c;
format strings checked in strongSwan 5.9.8 and 6.0 sources), tied to the IKE SA by its SPIs and to
the exchange by the message ID of the "parsed ... response" line before them.

Real data: tests/data/rfc-violations/*.log, written by its make.py from the samples' charon-left.log
(strongSwan 5.9.8) the captures' messages came from, with the lines charon adds at the refusal;
times, thread numbers, SPIs and message IDs are the capture's, and each log's capture holds what
that initiator sent after the line, no more, no less (test_each_log_sent_and_received_its_capture).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import SAMPLES, workers_done

from ipsecscope.keys import charon
from ipsecscope.session import Session

DATA = Path(__file__).resolve().parent / "data" / "rfc-violations"
CODE = "IKE-ANSWER-NOT-OFFERED"


def _cli(name: str, *logs: Path, json_out: bool = True) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "ipsecscope", "findings", str(DATA / name), *(["-k", *map(str, logs)] if logs else [])]
    r = subprocess.run(args + (["--json"] if json_out else []), capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    return r


def _finding(name: str, *logs: Path) -> dict:
    (f,) = [f for f in json.loads(_cli(name, *logs).stdout)["findings"] if f["code"] == CODE]
    return f


def _log(name: str) -> Path:
    return DATA / name.replace(".pcap", ".log")


def test_ikev2_ike_sa_init_refusal_is_quoted_from_the_initiators_log() -> None:
    name = "ikev2-init-answer-not-offered.pcap"
    f = _finding(name, _log(name))
    assert f["severity"] == "error" and f["sa"] == "b1b8da23a004d038_fdaf22f6f7559b04"
    assert ("198.18.0.1's log says it refused the answer (ikev2-init-answer-not-offered.log:69: "
            "\"peers proposal selection invalid\").") in f["explanation"]
    ev = [(e["kind"], e["source"].rsplit(":", 1)[-1], e["local"], e["text"]) for e in f["evidence_log"]]
    assert ev == [("received_proposals", "67", "198.18.0.1", "received proposals: IKE:AES_GCM_16_128/PRF_HMAC_SHA2_256/ECP_256"),
                  ("configured_proposals", "68", "198.18.0.1",
                   "configured proposals: IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256"),
                  ("answer_check", "69", "198.18.0.1", "peers proposal selection invalid")]
    assert f["evidence_log"][2]["data"] == {"check": "proposal", "about": "ike", "exchange": "IKE_SA_INIT", "msg_id": 0}
    assert f["evidence_log"][2]["ike_sa"].startswith("b1b8da23a004d038_")
    # the text view quotes it too
    assert "ikev2-init-answer-not-offered.log:69: \"peers proposal selection invalid\"" in _cli(
        name, _log(name), json_out=False).stdout.replace("\n         ", " ")
    # without the log: no quote, no evidence
    bare = _finding(name)
    assert bare["evidence_log"] == [] and "log says" not in bare["explanation"]


# each log and the capture it was written for (make.py): the capture ends as that initiator's traffic did
PAIRS = ("ikev2-init-answer-not-offered.pcap", "ikev1-mm-answer-auth-goes-on.pcap", "ikev1-qm-answer-key-length-refused.pcap",
         "ikev2-rekey-answer-ke.pcap")


def _tshark(name: str, *fields: str, keys: Path | None = None) -> list[list[str]]:
    env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(keys)) if keys else None
    out = subprocess.run(["tshark", "-r", str(DATA / name), "-T", "fields", *(a for f in fields for a in ("-e", f))],
                         capture_output=True, text=True, env=env, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def test_each_log_sent_and_received_its_capture() -> None:
    # charon's "sending packet"/"received packet" lines (the ISAKMP message's size, without the
    # RFC 3948 marker) are the capture's IKE frames one for one, in order: nothing the initiator
    # sent after its check is missing from the capture, nothing in it was not sent (tshark as oracle)
    for name in PAIRS:
        logged = [("198.18.0.1" if way == "sending" else "198.18.0.2", size) for way, size in re.findall(
            r"(sending|received) packet: from \S+ to \S+ \((\d+) bytes\)", _log(name).read_text())]
        # (IKE frames: an IKEv2 capture holds ESP too)
        assert logged == [(src, size) for _n, src, size in _tshark(name, "frame.number", "ip.src", "isakmp.length")
                          if size], name


def test_quick_mode_refusal_binds_to_its_exchange_by_message_id(tmp_path: Path) -> None:
    # the initiator refused Quick Mode 2: no QM3 (quick_mode.c send_notify flushes the task) but an
    # INFORMATIONAL with NO-PROPOSAL-CHOSEN for its ESP SPI, as its log says it generated
    name = "ikev1-qm-answer-key-length-refused.pcap"
    last = _tshark(name, "frame.number", "ip.src", "isakmp.exchangetype", "isakmp.messageid", "isakmp.notify.msgtype",
                   "isakmp.spi", keys=SAMPLES / "ikev1-dead-peer" / "keys")
    assert [r[2] for r in last] == ["2"] * 6 + ["32", "32", "5"]  # no QM3
    assert last[-1] == ["9", "198.18.0.1", "5", "0x4e3b2f19", "14", "5b62d3f3"]
    assert "generating INFORMATIONAL_V1 request 1312501529 [ HASH N(NO_PROP) ]" in _log(name).read_text()
    f = _finding(name, _log(name))
    # no ESP on the CHILD SA: nothing shows the initiator using it, so error (the rule's own logic)
    assert f["sa"] == "child:1" and f["severity"] == "error" and "yet" not in f["explanation"]
    assert ("(ikev1-qm-answer-key-length-refused.log:252: \"no matching proposal found\").") in f["explanation"]
    (check,) = [e for e in f["evidence_log"] if e["kind"] == "answer_check"]
    assert check["data"] == {"check": "proposal", "about": "child", "exchange": "QUICK_MODE", "msg_id": 583681893}
    assert check["ike_sa"] == "3fae74a30fefb9b9_e99e61364b0b6013" and check["time"] == "2026-11-25T23:35:50.773"
    assert [e["kind"] for e in f["evidence_log"]] == ["received_proposals", "configured_proposals", "answer_check"]
    # the same lines after another Quick Mode's response (another message ID) are not this answer's
    text = _log(name).read_text()
    other = tmp_path / "other-qm.log"
    other.write_text(text.replace("parsed QUICK_MODE response 583681893", "parsed QUICK_MODE response 583681894"))
    g = _finding(name, other)
    assert g["evidence_log"] == [] and "log says" not in g["explanation"]


def test_main_mode_auth_method_line_is_quoted() -> None:
    # main_mode.c goes on after this line (NEED_MORE): its capture holds the Main Mode 3 it sent
    name = "ikev1-mm-answer-auth-goes-on.pcap"
    assert [r[1:] for r in _tshark(name, "frame.number", "ip.src", "isakmp.exchangetype")][-1] == ["198.18.0.1", "2"]
    f = _finding(name, _log(name))
    # the line says strongSwan went on with its own method, and its MM3 (frame 3) shows it did
    assert f["severity"] == "warning"
    assert "Yet 198.18.0.1 sent its next Main Mode message after the answer (frame 3)" in f["explanation"]
    assert "Nothing in the capture shows" not in f["explanation"]
    assert ("198.18.0.1's log (ikev1-mm-answer-auth-goes-on.log:51): \"received RSA signature authentication, but "
            "configured pre-shared key, continue with configured\".") in f["explanation"]
    (e,) = f["evidence_log"]
    assert e["data"] == {"check": "auth", "about": "ike", "exchange": "ID_PROT", "msg_id": 0,
                         "received": "RSA signature", "configured": "pre-shared key"}


def test_a_log_of_another_capture_is_not_attributed() -> None:
    # healthy-gcm's initiator log (the same two addresses) names other SPIs than this IKE SA's:
    # nothing is quoted (the sample's keys open the Quick Mode)
    f = _finding("ikev1-qm-answer-key-length.pcap", SAMPLES / "ikev1-dead-peer" / "keys",
                 _log("ikev2-init-answer-not-offered.pcap"))
    assert f["evidence_log"] == []


def test_a_responders_refusal_of_an_offer_is_no_answer_check() -> None:
    # charon-right.log:178 "no acceptable proposal found" follows a parsed IKE_AUTH *request*: the
    # responder refusing the offer (IKE-NO-PROPOSAL's evidence), not an initiator checking an answer
    path = SAMPLES / "proposal-mismatch" / "charon-right.log"
    notes = charon.parse(path.read_text(), str(path)).peer_notes
    assert not [n for n in notes if n.kind == "answer_check"]
    assert "no acceptable proposal found" in path.read_text()


def test_strongswan_6_wording_is_recognised(tmp_path: Path) -> None:
    # ike_init.c process_i since 6.0: "peer's proposal selection invalid"
    name = "ikev2-init-answer-not-offered.pcap"
    six = tmp_path / "charon-6.log"
    six.write_text(_log(name).read_text().replace("peers proposal selection invalid", "peer's proposal selection invalid"))
    f = _finding(name, six)
    assert "(charon-6.log:69: \"peer's proposal selection invalid\")" in f["explanation"]


def test_tui_finding_detail_quotes_the_log() -> None:
    from textual.widgets import Static

    from ipsecscope.tui.app import create_app

    name = "ikev2-init-answer-not-offered.pcap"

    async def run() -> str:
        app = create_app(DATA / name, [_log(name)])
        async with app.run_test(size=(120, 40)) as pilot:
            await workers_done(pilot.app)
            await pilot.pause()
            await pilot.press("3")
            await pilot.pause()
            return str(app.query_one("#finding-explain", Static).render())

    note = " ".join(asyncio.run(run()).split())
    assert CODE in note and "ikev2-init-answer-not-offered.log:69: \"peers proposal selection invalid\"" in note


def test_session_api_carries_the_evidence() -> None:
    name = "ikev1-qm-answer-key-length-refused.pcap"
    s = Session()
    s.add_key_files([str(_log(name))])
    s.load(str(DATA / name))
    (f,) = [f for f in s.findings if f.code == CODE]
    assert [n.kind for n in f.evidence] == ["received_proposals", "configured_proposals", "answer_check"]
