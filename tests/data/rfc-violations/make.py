"""Writes the captures of this folder from the project's own samples (run from the repository root:
``.venv/bin/python tests/data/rfc-violations/make.py``). Each message named in README.md is the
sample's message with one field changed; encrypted ones are encrypted again with the sample's keys
(IKEv2: AES-GCM-256 SK; IKEv1: AES-CBC-256 on the RFC 2409 Appendix B IV chain)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/

import test_answer_not_offered as answers  # noqa: E402
import test_answer_not_offered_v1 as answers_v1  # noqa: E402
import test_ike_rfc_fields as v2  # noqa: E402
import test_ikev1_qm_mutants as v1q  # noqa: E402
import v1_reseal  # noqa: E402
from conftest import SAMPLES  # noqa: E402
from espgen import PcapWriter  # noqa: E402

from ipsecscope.capture import open_capture  # noqa: E402


def _v2(name: str, last: int, edits: dict) -> None:
    with open_capture(SAMPLES / "healthy-gcm" / "capture.pcapng") as r, PcapWriter(HERE / name) as w:
        for f in r:
            if f.index <= last:
                w.write(f.ts_ns, edits[f.index](bytes(f.data)) if f.index in edits else bytes(f.data))


def _v1(name: str, last: int, edits: dict) -> None:
    tmp = HERE / f".{name}.tmp"
    v1_reseal.write_mutant(tmp, edits)
    with open_capture(tmp) as r, PcapWriter(HERE / name) as w:
        for f in r:
            if f.index <= last:
                w.write(f.ts_ns, bytes(f.data))
    tmp.unlink()


def _charon_log(name: str, sample: str, keep: tuple[int, int], added: list[str], then: tuple[int, int] = (0, 0)) -> None:
    """``name`` (the capture's name, ``.log`` for ``.pcap``): the initiator's charon log of
    ``sample`` (charon-left.log, strongSwan 5.9.8, the log the capture's messages came from),
    lines ``keep`` (1-based, inclusive), then ``added`` (what charon logs when the answer does
    not fit its offer, the format strings cited in README.md), then the sample's lines ``then``.
    Times, thread numbers, IKE SA names and SPIs stay the sample's, as in the capture."""
    src = (SAMPLES / sample / "charon-left.log").read_text().splitlines()
    out = src[keep[0] - 1:keep[1]] + added + (src[then[0] - 1:then[1]] if then[0] else [])
    (HERE / name.replace(".pcap", ".log")).write_text("\n".join(out) + "\n")


def _logs() -> None:
    # IKE_SA_INIT answer with a 128-bit AES-GCM key (ike_init.c process_i; proposal.c proposal_select
    # logs both lists at level 1 when nothing matched; ike_sa_manager.c checkin_and_destroy)
    t = "2026-11-25T20:09:03.564 13"
    _charon_log("ikev2-init-answer-not-offered.pcap", "healthy-gcm", (1, 66), [
        f"{t}[CFG] <gcm|1> received proposals: IKE:AES_GCM_16_128/PRF_HMAC_SHA2_256/ECP_256",
        f"{t}[CFG] <gcm|1> configured proposals: IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256",
        f"{t}[IKE] <gcm|1> peers proposal selection invalid",
        f"{t}[MGR] <gcm|1> checkin and destroy IKE_SA gcm[1]",
        f"{t}[IKE] <gcm|1> IKE_SA gcm[1] state change: CONNECTING => DESTROYING",
        f"{t}[MGR] checkin and destroy of IKE_SA successful"])
    # Main Mode 2 with RSA signatures for the offered PSK: main_mode.c process_i goes on with its own
    t = "2026-11-25T23:35:50.764 14"
    _charon_log("ikev1-mm-answer-auth.pcap", "ikev1-dead-peer", (1, 50), [
        f"{t}[IKE] <dpd1|1> received RSA signature authentication, but configured pre-shared key, "
        "continue with configured"], (51, 62))
    # Quick Mode 2 with AES-GCM-16 128-bit for the offered 256: quick_mode.c process_i, which then
    # queues an INFORMATIONAL with NO_PROPOSAL_CHOSEN (send_notify; not in the capture)
    t = "2026-11-25T23:35:50.773 14"
    _charon_log("ikev1-qm-answer-key-length.pcap", "ikev1-dead-peer", (1, 249), [
        f"{t}[CFG] <dpd1|1> received proposals: ESP:AES_GCM_16_128/NO_EXT_SEQ",
        f"{t}[CFG] <dpd1|1> configured proposals: ESP:AES_GCM_16_256/NO_EXT_SEQ",
        f"{t}[IKE] <dpd1|1> no matching proposal found"])


def main() -> None:
    m = v2.MUTATIONS
    _v2("ikev2-init-offer.pcap", 2, {1: m["proposals-1-3"][1], 2: m["transform-last-substruc-3"][1]})
    _v2("ikev2-init-notify-sizes.pcap", 2, {1: m["sig-hash-odd"][1], 2: m["cookie-65"][1]})
    _v2("ikev2-auth-ts-reversed.pcap", 4, {4: m["ts-ports-reversed"][1]})
    _v2("ikev2-auth-offer-numbered-2.pcap", 4, {3: m["sk-offer-numbered-2"][1]})
    _v2("ikev2-notify-data.pcap", 4, {1: m["fragmentation-supported-with-data"][1], 3: m["set-window-size-2"][1]})
    for name, (last, edits) in answers.ANSWERS.items():
        _v2(name, last, edits)
    for name in answers_v1.ANSWERS:
        answers_v1.write(name, HERE / name)
    q = v1q.MUTANTS
    _v1("ikev1-quick-mode.pcap", 9, {7: q["nonce-4-bytes"][1], 8: q["esp-spi-absent"][1]})
    _logs()


if __name__ == "__main__":
    main()
