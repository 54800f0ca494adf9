"""Arguments every sub-command spells the same way."""

from __future__ import annotations

import argparse
import sys

from ..keys.formats import input_summary

# The format list comes from the one key-format table (ipsecscope.keys.formats.FORMATS).
KEYS_HELP = ("key files or directories, any mix of formats (detected by content): "
             f"{input_summary()}; repeatable")


def add_keys_argument(p: argparse.ArgumentParser, extra_help: str = "") -> None:
    # `-k a b -k c` and `-k a -k b` both work; put the capture first (`CMD FILE -k KEYS...`).
    p.add_argument("-k", "--keys", metavar="KEYS", nargs="+", action="extend", default=[],
                   help=KEYS_HELP + extra_help)
    add_strict_keys_argument(p)


def add_strict_keys_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict-keys", action="store_true",
                   help="abort on an unusable key row, hex dump or file instead of skipping it with a "
                        "warning (the default uses every other key)")


def warn_keys(store) -> None:  # store: ipsecscope.keys.KeyStore
    """Print what key loading skipped or noticed (``file:line: reason``), once each, on stderr."""
    for w in dict.fromkeys(store.warnings):
        print(f"ipsecscope: warning: {w}", file=sys.stderr)
