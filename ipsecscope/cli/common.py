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


def warn_keys(store, session=None) -> None:  # store: KeyStore; session: a loaded Session
    """Print what key loading skipped or noticed (``file:line: reason``), once each, on stderr;
    with a loaded ``session`` also each key file that matches nothing in its capture (issue 14:
    keys for another tunnel must not look like success)."""
    for w in dict.fromkeys(store.warnings):
        print(f"ipsecscope: warning: {w}", file=sys.stderr)
    for m in session.key_matches() if session is not None else ():
        if m.matches_nothing:
            print(f"ipsecscope: warning: {m.sentence()}", file=sys.stderr)
