"""``ipsecscope tui FILE [-k KEYS...]`` (also ``ipsecscope FILE``): the Textual interface."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CaptureError
from .common import add_captures_argument, add_keys_argument


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tui",
        help="open the terminal UI on a capture (the default: `ipsecscope FILE`)",
        description="Browse SAs, packets, findings and the timeline of a capture. Press ? inside for keys.",
    )
    add_captures_argument(p, many=False)
    add_keys_argument(p, ', more from inside the app with `a`')
    p.set_defaults(command="tui")


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():  # a directory or an unreadable file: open_capture below says which
        raise CaptureError(f"{path}: no such file; give the path of a pcap or pcapng capture")
    from ..capture import open_capture

    # Not a capture at all (a text file, a PNG, gzip of garbage): one line on stderr, like every
    # other sub-command, rather than a full-screen UI that only shows "Could not load".
    with open_capture(path):
        pass
    if args.keys:  # same for a key file that cannot be read (parsed again in the app: they are small)
        from ..keys import load_keys
        from .common import warn_keys

        warn_keys(load_keys(args.keys, strict=args.strict_keys))
    from ..tui.app import create_app  # Textual is imported only when the UI is really opened

    return create_app(path, args.keys).run() or 0

