"""Arguments every sub-command spells the same way."""

from __future__ import annotations

import argparse

from ..keys.formats import input_summary

# The format list comes from the one key-format table (ipsecscope.keys.formats.FORMATS).
KEYS_HELP = ("key files or directories, any mix of formats (detected by content): "
             f"{input_summary()}; repeatable")


def add_keys_argument(p: argparse.ArgumentParser, extra_help: str = "") -> None:
    # `-k a b -k c` and `-k a -k b` both work; put the capture first (`CMD FILE -k KEYS...`).
    p.add_argument("-k", "--keys", metavar="KEYS", nargs="+", action="extend", default=[],
                   help=KEYS_HELP + extra_help)
