"""``ipsecscope live -i IFACE``: watch IPsec on an interface, in the TUI or as JSON lines."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from ..errors import IpsecscopeError
from ..model.idtext import spi_text
from .common import add_keys_argument, at_least, seconds

if TYPE_CHECKING:
    from ..live import Emit, LiveRunner


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "live",
        help="capture IKE/ESP/AH live from an interface (TUI, or --headless JSON lines)",
        description="Capture IKE (UDP 500/4500, TCP 4500), ESP and AH live and correlate as it "
        "arrives. Needs root or CAP_NET_RAW, which only a small capture helper keeps: everything "
        "that parses runs as --user. Keys may be given up front (-k) or picked up while it runs "
        "from a charon log being written (--keys-from-log) or from `ip xfrm state`.",
    )
    p.add_argument("-i", "--interface", required=True, metavar="IFACE",
                   help="interface to capture on, e.g. eth0 (required; no default)")
    add_keys_argument(p)
    p.add_argument("--keys-from-log", action="append", default=[], metavar="PATH",
                   help="strongSwan charon log at ike 4/chd 4, re-read whenever it grows (follows logrotate)")
    p.add_argument("--keys-from-xfrm", action="store_true",
                   help="poll `ip xfrm state` of this network namespace for SA keys")
    p.add_argument("-w", "--write", metavar="FILE",
                   help="also save what is captured to a pcapng file (mode 600, owned by --user, "
                   "readable by Wireshark while the capture runs)")
    p.add_argument("-f", "--filter", metavar="BPF", default=None,
                   help="BPF capture filter (default: IKE, ESP, AH and IP fragments)")
    p.add_argument("--headless", action="store_true",
                   help="no UI: print SA, key, finding and stats events as JSON lines on stdout")
    p.add_argument("--duration", type=seconds, metavar="SECONDS", help="stop after this many seconds")
    p.add_argument("--count", type=at_least(1), metavar="N", help="stop after N captured frames")
    p.add_argument("--stats-interval", type=seconds, default=5.0, metavar="SECONDS",
                   help="seconds between --headless stats events (default: %(default)s)")
    p.add_argument("--max-rows", type=at_least(1), default=200_000,
                   help="frames kept for the packet list (older ones are only counted; default: %(default)s)")
    p.add_argument("--user", metavar="NAME",
                   help="user that decodes, decrypts, shows and writes -w once the capture is open "
                   "(default: SUDO_USER under sudo, else nobody); only the capture helper keeps root")
    p.add_argument("--no-drop", action="store_true",
                   help="keep root in the analyser too (not recommended: it parses untrusted traffic)")


def analyser_user(args: argparse.Namespace) -> str | None:
    """Who parses: --user, else the sudo caller, else nobody; None with --no-drop."""
    if args.no_drop:
        return None
    if args.user:
        if args.user == "root":
            raise IpsecscopeError("--user root keeps root in the analyser: say --no-drop if that is meant")
        return args.user
    sudo_user = os.environ.get("SUDO_USER")
    return sudo_user if os.geteuid() == 0 and sudo_user and sudo_user != "root" else "nobody"


def build_runner(args: argparse.Namespace, emit: Emit | None = None) -> LiveRunner:
    from ..capture.live import DEFAULT_BPF
    from ..live import LiveRunner

    return LiveRunner(
        args.interface, key_files=args.keys, key_logs=args.keys_from_log,
        keys_from_xfrm=args.keys_from_xfrm, bpf=args.filter or DEFAULT_BPF, write=args.write,
        emit=emit, stats_interval=args.stats_interval, max_rows=args.max_rows, user=analyser_user(args),
    )


# Every other output writes SPIs as "0x…" strings (sas, findings, summary, decrypt --jsonl).
_SPI_FIELDS = frozenset({"spi", "spi_i", "spi_r"})


def event_json(ev: dict) -> str:
    """One event as a JSON line, SPIs as ``"0x%08x"`` strings like every other output."""
    ev = {k: spi_text(v) if k in _SPI_FIELDS and isinstance(v, int) else v for k, v in ev.items()}
    return json.dumps(ev, default=_json_default, separators=(",", ":"))


def _json_default(o: object) -> object:
    if isinstance(o, bytes):
        return o.hex()
    return str(o)


def run(args: argparse.Namespace) -> int:
    if not args.headless:
        return _run_tui(args)

    def emit(ev: dict) -> None:
        sys.stdout.write(event_json(ev) + "\n")
        sys.stdout.flush()

    runner = build_runner(args, emit)
    # SIGTERM (systemd, timeout, a test harness) ends the run like Ctrl-C: final stats, clean file,
    # and the capture helper told to stop.
    signal.signal(signal.SIGTERM, lambda *_: runner.stop(timeout=0))
    emit({"event": "started", "ts": time.time(), "interface": args.interface, "linktype": runner.linktype,
          "keys": len(runner.session.keys)})
    try:
        runner.run_for(args.duration, args.count)
    except KeyboardInterrupt:
        pass
    _raise_runner_error(runner)
    return 0


def _run_tui(args: argparse.Namespace) -> int:
    """Without ``--headless``: the capture TUI over the live session (``cli/tui.py`` opens files;
    the live command owns its own front-end wiring, so neither CLI module imports the other)."""
    runner = build_runner(args)  # raises LiveCaptureError (no permission, no such interface) up front
    from ..tui.app import create_live_app  # Textual is imported only when the UI is really opened

    app = create_live_app(runner, args.interface)
    runner.start()
    try:
        app.run()
    finally:
        runner.stop()
    _raise_runner_error(runner)
    return 0


def _raise_runner_error(runner) -> None:
    if runner.error is not None:
        if isinstance(runner.error, IpsecscopeError):
            raise runner.error
        raise IpsecscopeError(f"live capture stopped: {runner.error}") from runner.error
