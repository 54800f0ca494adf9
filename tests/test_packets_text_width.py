"""``packets`` text sizes its Source/Destination columns by what they hold (they were 22 cells
fixed: an IPv4 list 14 cells wider than needed, a longer address pushing its line out of line),
and only in a terminal too narrow for the line cuts an address, in its middle
(model.idtext.short_addr: two hosts never read the same); piped output keeps every address whole."""

from __future__ import annotations

import os
import pty
import subprocess

from conftest import DATA, IPSECSCOPE, SAMPLES
from conftest import field_cli as cli

from ipsecscope.cli.packets import address_width

NATT = SAMPLES / "synthetic" / "ipv6-transport-natt.pcap"


def test_address_width_is_the_longest_address_and_cut_only_in_a_narrow_terminal() -> None:
    cells = [("2001:db8:40::1", "fd00:1::5", ""), ("[2001:db8:40::2]:4500", "198.18.40.1", "")]
    assert address_width(cells) == 21  # piped: whole
    assert address_width(cells, 200) == 21  # the terminal has room
    assert address_width(cells, 80) == 15  # 80 columns: Info keeps its cells, never under 15
    assert address_width([("10.0.0.1", "10.0.0.2", "")], 80) == 8


def test_piped_text_columns_follow_the_addresses() -> None:
    lines = cli("packets", str(NATT)).splitlines()
    # the longest address is 198.18.40.2:4500 (16): the arrow of every line in one column
    assert {ln.index("→") for ln in lines if "→" in ln.split("OTHER")[0]} == {35}
    assert any("2001:db8:40::1 → 2001:db8:40::2" in ln for ln in lines)


def test_text_in_an_80_column_terminal_cuts_macs_in_the_middle() -> None:
    main, sub = pty.openpty()
    try:
        proc = subprocess.run([*IPSECSCOPE, "packets", str(DATA / "arp" / "arp.pcap")], stdout=sub,
                              stderr=subprocess.PIPE, env=dict(os.environ, COLUMNS="80"), timeout=120)
        os.close(sub)
        out = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(main)
    assert proc.returncode == 0, proc.stderr
    lines = out.decode().replace("\r", "").splitlines()
    assert "02…00:00:0c:05 → ff…ff:ff:ff:ff" in lines[0], lines[0]
    assert "02…00:00:0c:07 → 02…00:00:0c:05" in lines[1], lines[1]  # the two hosts stay apart
