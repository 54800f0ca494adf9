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


if __name__ == "__main__":
    main()
