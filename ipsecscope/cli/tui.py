"""``ipsecscope tui FILE [-k KEYS...]`` (also ``ipsecscope FILE``): the Textual interface."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

from ..errors import CaptureError
from .common import add_captures_argument, add_keys_argument, at_least

FILE_ROWS = 5_000_000  # ~300 MB of packed rows: a gzip bomb of empty records cannot take the machine
STREAM_ROWS = 200_000  # a ring of FrameRow objects, as live mode keeps


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tui",
        help="open the terminal UI on captures (the default: `ipsecscope FILE...`)",
        description="Browse SAs, packets, findings and the timeline of one or more captures (read in "
                    "order into one session). `-` reads a capture from standard input "
                    "(`ssh gw tcpdump -U -w - ... | ipsecscope -`), shown as it arrives. Press ? inside for keys.",
    )
    add_captures_argument(p)
    add_keys_argument(p, ', more from inside the app with `a`')
    p.add_argument("--max-rows", type=at_least(1), default=None, metavar="N",
                   help="frames kept for the packet list; the rest are analysed and counted, not listed "
                        f"(default {FILE_ROWS:,} for a file: the first ones; {STREAM_ROWS:,} for - or --follow: "
                        "the latest ones)")
    p.set_defaults(command="tui")


def run(args: argparse.Namespace) -> int:
    files: list[str] = args.files
    if args.follow or any(_is_stream(f) for f in files):
        return _run_stream(args)
    from ..capture import open_capture

    for name in files:
        path = Path(name)
        if not path.exists():  # a directory or an unreadable file: open_capture below says which
            raise CaptureError(f"{path}: no such file; give the path of a pcap or pcapng capture")
        # Not a capture at all (a text file, a PNG, gzip of garbage): one line on stderr, like every
        # other sub-command, rather than a full-screen UI that only shows "Could not load".
        with open_capture(path):
            pass
    if args.keys:  # same for a key file that cannot be read (parsed again in the app: they are small)
        from ..keys import load_keys
        from .common import warn_keys

        # (`ipsecscope FILE` names no sub-command, and its messages none: cli.main sets _who)
        warn_keys(getattr(args, "_who", "tui"), load_keys(args.keys, strict=args.strict_keys))
    from ..tui.app import create_app  # Textual is imported only when the UI is really opened

    return create_app([Path(f) for f in files], args.keys, row_limit=args.max_rows or FILE_ROWS).run() or 0


def _is_stream(name: str) -> bool:
    if name == "-":
        return True
    try:
        return stat.S_ISFIFO(os.stat(name).st_mode) or stat.S_ISCHR(os.stat(name).st_mode)
    except OSError:
        return False


def _run_stream(args: argparse.Namespace) -> int:
    """Standard input, a pipe or ``--follow``: a thread reads while the UI shows what has arrived."""
    files = list(args.files)
    if "-" in files:
        if files.count("-") > 1:
            raise CaptureError("standard input (-) can be read only once")
        # The capture arrives on fd 0, and Textual reads the keyboard from fd 0: keep the pipe on
        # another descriptor and give fd 0 the terminal.
        try:
            tty = os.open("/dev/tty", os.O_RDWR)
        except OSError:
            raise CaptureError("the TUI reads keys from a terminal and there is none; for text output "
                               "use `ipsecscope sas -` or `ipsecscope findings -`") from None
        pipe = os.dup(0)
        os.dup2(tty, 0)
        os.close(tty)
        files[files.index("-")] = f"/dev/fd/{pipe}"
        name = "stdin"
    else:
        name = Path(files[-1]).name + (" (following)" if args.follow else "")
    from ..tui.app import create_stream_app
    from ..tui.stream import CaptureFollower

    runner = CaptureFollower(files, args.keys, follow=args.follow, max_rows=args.max_rows or STREAM_ROWS)
    runner.open()  # not a capture at all: one line on stderr, no screen
    app = create_stream_app(runner, name)
    runner.start()
    try:
        app.run()
    finally:
        runner.stop()
    return 0

