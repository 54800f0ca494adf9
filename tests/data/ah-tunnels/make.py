"""Writes the captures of this folder from tests/data/ah (run from the repository root:
``.venv/bin/python tests/data/ah-tunnels/make.py``): every frame of ah-v4, ah-v6 and ah-frag
inside GRE (IP packet, key 7) and VXLAN (whole Ethernet frame, VNI 7) between 198.51.100.1 and
198.51.100.2, wrapped as tests/data/tunnels/make.py wraps healthy-gcm (its helpers are used). The
AH packets are scapy's, unchanged: their ICV covers the tunnelled IP header, never the outer one."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "samples" / "synthetic"))

from espgen import PcapWriter  # noqa: E402

from ipsecscope.capture import open_capture  # noqa: E402

_spec = importlib.util.spec_from_file_location("tunnels_make", HERE.parent / "tunnels" / "make.py")
assert _spec is not None and _spec.loader is not None
tunnels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tunnels)

SOURCES = ("ah-v4", "ah-v6", "ah-frag")


def main() -> None:
    for src in SOURCES:
        with open_capture(HERE.parent / "ah" / f"{src}.pcap") as r:
            frames = [(f.ts_ns, bytes(f.data)) for f in r]
        wraps = {
            f"{src}-gre.pcap": lambda i, eth: tunnels.outer4(
                47, tunnels.gre(struct.unpack_from("!H", eth, 12)[0], eth[14:], key=7), i),
            f"{src}-vxlan.pcap": lambda i, eth: tunnels.udp_tunnel(
                4789, struct.pack("!II", 0x08000000, 7 << 8), eth, i),
        }
        for name, wrap in wraps.items():
            with PcapWriter(HERE / name) as w:
                for i, (ts, eth) in enumerate(frames):
                    w.write(ts, wrap(i, eth))


if __name__ == "__main__":
    main()
