"""``ipsecscope decrypt FILE -k KEYS... -o OUT.pcapng [--keep-other] [--dsb] [--jsonl OUT.jsonl|-]``

Writes the decrypted inner packets of every ESP SA we have keys for, with the original
timestamps; prints one summary line per SA (decrypted / icv_failed / no_key) on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import ExportError
from ..outfile import sigterm_unwinds
from .common import add_keys_argument, warn_keys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "decrypt", help="write decrypted ESP inner packets to pcapng and/or JSON lines",
        description="Decrypt the ESP packets of a capture (ESN high bits inferred) and write the inner "
                    "packets as pcapng (LINKTYPE_RAW, original timestamps) and/or JSON lines "
                    "(schema ipsecscope.decrypt/1). Output files are created mode 0600 under a temporary "
                    "name and renamed into place only when the run succeeds; an output that is an "
                    "input (the capture or a key file, also through a symlink) is refused.")
    p.add_argument("file", metavar="FILE", help="pcap / pcapng (optionally gzip'd)")
    add_keys_argument(p)
    p.add_argument("-o", "--output", metavar="OUT.pcapng", help="pcapng file for the decrypted packets ('-': stdout)")
    p.add_argument("--keep-other", action="store_true",
                   help="also copy non-ESP frames (and ESP we could not decrypt, with a comment) unchanged")
    p.add_argument("--dsb", action="store_true",
                   help="append a pcapng Decryption Secrets Block with the keys of the SAs used")
    p.add_argument("--jsonl", metavar="OUT.jsonl", help="one JSON object per ESP packet; '-' for stdout")
    p.add_argument("--hex", action="store_true", help="with --jsonl: include the inner bytes as hex")
    p.add_argument("-j", "--jobs", type=int, default=0, help="worker processes for large files (0 = all cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no per-SA summary")


def _progress_bar(total_hint: str):
    """A rich progress bar on stderr when it is a terminal; else None."""
    if not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    prog = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    task = prog.add_task(f"decrypting {total_hint}", total=None)

    def update(done: int, total: int) -> None:
        prog.update(task, completed=done, total=total)
    return prog, update


def run(args: argparse.Namespace) -> int:
    from ..api import decrypt_capture, load_keystore

    if not args.output and not args.jsonl:
        raise ExportError("nothing to write: give -o OUT.pcapng and/or --jsonl OUT.jsonl (or --jsonl -)")
    store = load_keystore(args.keys, strict=args.strict_keys)
    warn_keys(store)
    jsonl = sys.stdout if args.jsonl == "-" else args.jsonl
    output = args.output
    if output == "-":  # pcapng on stdout, e.g. `ipsecscope decrypt F -k K -o - | tshark -r -`
        if jsonl is sys.stdout:
            raise ExportError("-o - and --jsonl - would both write to stdout; send one of them to a file")
        output = sys.stdout.buffer
    prog, update = (None, None) if args.quiet else _progress_bar(Path(args.file).name)
    t0 = time.perf_counter()
    try:
        if prog is not None:
            prog.start()
        with sigterm_unwinds():  # `kill PID` removes the temporary output, like Ctrl-C
            stats = decrypt_capture(args.file, store, out=output, fmt="pcapng", keep_other=args.keep_other,
                                    dsb=args.dsb, with_hex=args.hex, jsonl=jsonl, jobs=args.jobs,
                                    progress=update, inputs=args.keys)
    except BrokenPipeError:  # `-o - | tshark -r - -c 5`: the reader stopped; not an error
        raise
    except OSError as exc:  # disk full (-o /dev/full), an unwritable --jsonl path: one line, not a traceback
        raise ExportError(f"I/O error on {exc.filename or args.output or args.jsonl}: {exc.strerror or exc}") from None
    finally:
        if prog is not None:
            prog.stop()
    dt = time.perf_counter() - t0
    if not args.quiet:
        err = sys.stderr
        for (src, dst, spi), s in stats.per_sa:
            esn = " ESN" + (f" (high bits now {s.seq_hi})" if s.seq_hi else "") if s.esn else ""
            extra = "".join(f", {n} {what}" for n, what in ((s.malformed, "malformed"),
                                                           (s.unsupported, "unsupported")) if n)
            why = f"  [{s.last_reason}]" if (s.icv_failed or s.malformed or s.unsupported) and s.last_reason else ""
            print(f"SPI 0x{spi:08x} {src} -> {dst}: {s.decrypted} decrypted, {s.icv_failed} icv_failed, "
                  f"{s.no_key} no_key{extra}{esn}{why}", file=err)
        rate = stats.frames / dt if dt > 0 else 0.0
        print(f"{stats.frames} frames, {stats.esp} ESP: {stats.decrypted} decrypted, {stats.icv_failed} icv_failed, "
              f"{stats.no_key} no_key; {stats.written} inner packets written"
              + (f", {stats.kept} other frames kept unchanged" if args.keep_other else "")
              + f" in {dt:.2f}s ({rate:,.0f} frames/s, {stats.jobs} process{'es' if stats.jobs > 1 else ''})",
              file=err)
    if stats.unkept:  # even with -q: frames missing from a --keep-other output are never silent
        print(f"ipsecscope decrypt: warning: {stats.unkept} frame(s) not kept: their interface has no "
              "Interface Description Block in the capture (damaged file)", file=sys.stderr)
    if stats.truncated:  # even with -q: a cut-off or damaged capture is never silent
        # The output holds every sound frame, but the exit status tells a pipeline the input was
        # damaged (like `summary`): 1, the same as for an input that is not a capture at all.
        print(f"ipsecscope decrypt: warning: {stats.truncated} (everything before it was written)",
              file=sys.stderr)
        return 1
    return 0
