"""Arguments every sub-command spells the same way."""

from __future__ import annotations

import argparse

KEYS_HELP = (
    "key files or directories, any mix of formats (detected by content): Wireshark esp_sa / "
    "ikev2_decryption_table / ikev1_decryption_table, strongSwan charon log (ike 4, chd 4), "
    "`ip xfrm state` output, tcpdump -E secrets, ipsecscope JSON, pcapng with secrets; repeatable"
)


def add_keys_argument(p: argparse.ArgumentParser, extra_help: str = "") -> None:
    # `-k a b -k c` and `-k a -k b` both work; put the capture first (`CMD FILE -k KEYS...`).
    p.add_argument("-k", "--keys", metavar="KEYS", nargs="+", action="extend", default=[],
                   help=KEYS_HELP + extra_help)
