"""Writes the captures of this folder from the project's own sample (run from the repository root:
``.venv/bin/python tests/data/ike-answers/make.py``): samples/healthy-gcm's IKE_SA_INIT, retransmitted
by the initiator on strongSwan's schedule (4 s, then 7.2 s: retransmit_timeout 4, base 1.8) although the
capture holds an answer before each copy, and the whole sample captured twice. README.md says what
each one shows; the sample's bytes are unchanged except where said."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "samples" / "synthetic"))

from espgen import PcapWriter  # noqa: E402

from ipsecscope.capture import open_capture  # noqa: E402

S = 1_000_000_000  # ns
IKE = 14 + 20 + 8  # the sample's IKE header: behind Ethernet, IPv4 (no options), UDP


def broken(frame: bytes, length: int) -> bytes:
    """The frame with its first IKE payload's length set to ``length`` (past the message's end: RFC
    7296 §3.2, a payload must fit in its message) and its UDP checksum 0 (none, RFC 768)."""
    b = bytearray(frame)
    b[IKE + 28 + 2:IKE + 28 + 4] = struct.pack("!H", length)
    b[14 + 20 + 6:14 + 20 + 8] = b"\0\0"
    return bytes(b)


def main() -> None:
    with open_capture(ROOT / "samples" / "healthy-gcm" / "capture.pcapng") as r:
        frames = [(f.ts_ns, bytes(f.data)) for f in r]
    (t0, req), (t1, resp) = frames[0], frames[1]
    # A responder that builds a broken IKE_SA_INIT answer (a home-made ePDG in the public capture
    # this class came from): the initiator drops it and sends the request again, twice, then gives up.
    bad = broken(resp, 656)
    with PcapWriter(HERE / "malformed-answer.pcap") as w:
        for at in (0, 4 * S, 11_200_000_000):
            w.write(t0 + at, req)
            w.write(t1 + at, bad)
    # Captured near the responder: its answer does not get back to the initiator once (a firewall
    # on the initiator's side), the initiator sends the request again after 4 s, the responder
    # sends its answer again (RFC 7296 §2.1), and this time it gets through: the rest of the
    # sample follows, 4 s later.
    with PcapWriter(HERE / "answer-lost.pcap") as w:
        w.write(t0, req)
        w.write(t1, resp)
        for ts, data in frames:
            w.write(ts + 4 * S, data)
    # Every frame twice, 9 µs apart: a capture point that sees each packet twice (a bridge and its
    # port), as suricata-verify's detect-bypass-udp capture does.
    with PcapWriter(HERE / "captured-twice.pcap") as w:
        for ts, data in frames:
            w.write(ts, data)
            w.write(ts + 9_000, data)


if __name__ == "__main__":
    main()
