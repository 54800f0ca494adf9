"""An IPv6 address beside a port is bracketed in every text view (RFC 3986 §3.2.2), or
``2003:51:6012::2:500`` reads as one address.

Data: Arkime's IKEv1 capture (two firewalls over IPv6, tests/data/arkime), and the synthetic
icmp-quoted capture (samples/synthetic), which holds ESP in UDP 4500 over IPv6.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import SAMPLES, public
from textual.widgets import Tree

from ipsecscope.session import Session
from ipsecscope.tui.widgets.packet_detail import fill_esp, fill_ike

ARKIME_V1 = public("arkime/IKEv1.pcap")  # third-party: materialised at test time
V6_UDP_ESP = SAMPLES / "synthetic" / "icmp-quoted.pcap"
V6_UDP_ESP_KEYS = SAMPLES / "synthetic" / "icmp-quoted.keys.json"
# An IPv6 address (two colons somewhere) running straight into ':port' with no bracket before it.
UNBRACKETED = re.compile(r"(?<![\[\w:])[0-9a-f]*:[0-9a-f:]*::?[0-9a-f]+:(500|4500)\b")


def cli(*args: object) -> str:
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "ipsecscope", *map(str, args)], check=True,
                          capture_output=True, text=True, env=env).stdout


def test_the_pattern_tells_bracketed_from_bare() -> None:
    assert UNBRACKETED.search("2003:51:6012::2:500 → x")
    assert not UNBRACKETED.search("[2003:51:6012::2]:500 → 198.18.0.1:500")


def test_packets_and_stats_text_bracket_ipv6_endpoints() -> None:
    packets = cli("packets", ARKIME_V1)
    assert "[2003:51:6012::2]:500 → [2003:51:6012::4]:500" in packets
    assert not UNBRACKETED.search(packets), packets[:400]
    stats = cli("stats", ARKIME_V1)
    # An ESP flow is 'src → dst ESP 0xSPI': ':0x3d71315a' after an IPv6 address read as more address.
    assert "2003:51:6012::2 → 2003:51:6012::4 ESP 0x3d71315a" in stats
    assert "2003:51:6012::4:0x" not in stats


def tree_text(node) -> list[str]:
    out = [str(node.label)]
    for child in node.children:
        out += tree_text(child)
    return out


def test_packet_detail_brackets_ipv6_endpoints_of_ike_and_esp() -> None:
    tree: Tree[None] = Tree("frame")
    d = Session.from_files([str(ARKIME_V1)], []).detail(1)
    fill_ike(tree.root, d.ike, d.raw)
    session = Session.from_files([str(V6_UDP_ESP)], [str(V6_UDP_ESP_KEYS)])
    d = session.detail(next(r.frame for r in session.rows if r.kind == "ESP" and ":" in r.src and r.sport))
    fill_esp(tree.root, d)
    text = "\n".join(tree_text(tree.root))
    assert "[2003:51:6012::2]:500 → [2003:51:6012::4]:500" in text
    assert f"[{d.esp.src}]:{d.esp.sport} → [{d.esp.dst}]:{d.esp.dport}" in text
    assert not UNBRACKETED.search(text), text
