"""``ipsecscope decrypt FILE -k KEYS... -o OUT.pcapng [--keep-other] [--dsb] [--jsonl OUT.jsonl|-] [-Y FILTER]``

Writes the decrypted inner packets of every ESP SA we have keys for, with the original
timestamps, and the payloads of AH packets (export/ah.py); prints one summary line per SA
(decrypted / icv_failed / no_key; AH: verified / icv_failed / no_key) on stderr. ``-Y``
writes only the frames a Wireshark display filter selects (over outer and inner fields).
ESP records of an RFC 8229 stream that waited behind a segment never captured are written when the
decoder gives the gap up (at the latest at the end of the capture), after the frames read since,
with their own time and a comment naming their frame (export/engine.py says why); the totals line
counts the decoder's malformed marks as ``sas`` does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..errors import ExportError
from ..outfile import sigterm_unwinds
from .common import (
    add_captures_argument,
    add_filter_argument,
    add_keys_argument,
    at_least,
    error,
    print_key_warnings,
    warn,
    warn_keys,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "decrypt", help="write decrypted ESP inner packets (and AH payloads) to pcapng and/or JSON lines",
        epilog="exit status: 0 every ESP packet with keys decrypted; 1 error, or a damaged/cut-off capture "
               "(everything before the damage is written); 3 nothing decrypted (no keys, keys that match "
               "no SPI, or every packet failed; with AH: no ICV verified either); 4 some ESP or AH packets "
               "failed their ICV check (the others are written)",
        description="Decrypt the ESP packets of a capture (ESN high bits inferred) and write the inner "
                    "packets as pcapng (LINKTYPE_RAW, original timestamps) and/or JSON lines "
                    "(schema ipsecscope.decrypt/1). Output files are created mode 0600 under a temporary "
                    "name and renamed into place only when the run succeeds; an output that is an "
                    "input (the capture or a key file, also through a symlink) is refused. AH payloads "
                    "are written too (tunnel: the inner packet; transport: behind a rebuilt IP header), "
                    "ICVs verified with AH keys; a failed ICV is left out as for ESP, a payload not "
                    "verified is written with a comment saying why.")
    add_captures_argument(p, many=False, follow=False, help="pcap / pcapng (optionally gzip'd)")
    add_keys_argument(p)
    p.add_argument("-o", "--output", metavar="OUT.pcapng", help="pcapng file for the decrypted packets ('-': stdout)")
    p.add_argument("--keep-other", action="store_true",
                   help="also copy non-ESP frames (and ESP we could not decrypt, with a comment) unchanged")
    p.add_argument("--dsb", action="store_true",
                   help="append a pcapng Decryption Secrets Block with the keys of the SAs used")
    p.add_argument("--jsonl", metavar="OUT.jsonl", help="one JSON object per ESP or AH packet; '-' for stdout")
    p.add_argument("--hex", action="store_true", help="with --jsonl: include the inner bytes as hex")
    p.add_argument("-j", "--jobs", type=at_least(0), default=0,
                   help="worker processes for large files (0 = one below 128 MiB, else the idle cores: CPU count "
                        "less the load average, at least 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no per-SA summary")
    add_filter_argument(p)


# The run closes and renames every output before it returns and leaves no thread behind: the
# process ends without the interpreter's teardown (cli._exit_at_once).
EXIT_AT_ONCE = True


def preload(args: argparse.Namespace) -> None:
    """Imported before the run, while start-up is still going on (``cli._started``): numpy and the
    bulk step for a capture big enough to use them (``export.hotloop.BULK_MIN_BYTES``)."""
    try:
        size = os.path.getsize(args.file)
    except (OSError, TypeError, ValueError):  # "-" (standard input), a file that is not there
        return
    from ..export import hotloop

    if size >= hotloop.BULK_MIN_BYTES:
        from ..export import bulk  # noqa: F401

        _keep_heap()


# glibc's mallopt(3) parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _keep_heap() -> None:
    """Asks glibc's malloc to keep freed memory for the next read window instead of handing it back.
    Each window allocates the same few MiB again (the window itself, numpy's arrays, the CBC input
    joined per SA) and frees them. By default glibc maps blocks of 128 KiB+ afresh and trims the
    heap's free top, moving both thresholds as mapped blocks are freed, so whether every window
    page-faulted its memory in again depended on the order of incidental allocations (the output's
    path was enough to flip it): AES-GCM 1M frames took 9k or 205k minor faults, 0.15 or 0.55 s of
    system time; AES-CBC 200k 11k or 64k. With these settings 8-10k every time, peak RSS the same.
    Process-wide, so done here, for the command, not by the library; numpy has imported ctypes
    already. Not glibc: nothing to do."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):  # no mallopt (macOS), no CDLL(None) (Windows)
        return
    mallopt(_M_MMAP_THRESHOLD, 16 << 20)  # (also fixes the trim threshold: no dynamic change)
    mallopt(_M_TRIM_THRESHOLD, 64 << 20)


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
    # The engine and the key loader themselves, not ipsecscope.api's wrappers around them: the API
    # module's DecryptedPacket class and imports are start-up that this command never uses (issue 15)
    from ..export import engine
    from ..keys import load_keys

    if not args.output and not args.jsonl:
        raise ExportError("nothing to write: give -o OUT.pcapng and/or --jsonl OUT.jsonl (or --jsonl -)")
    store = load_keys(args.keys, strict=args.strict_keys)
    warn_keys("decrypt", store)
    warned = len(store.warnings)
    jsonl = sys.stdout if args.jsonl == "-" else args.jsonl
    output = args.output
    if output == "-":  # pcapng on stdout, e.g. `ipsecscope decrypt F -k K -o - | tshark -r -`
        if jsonl is sys.stdout:
            raise ExportError("-o - and --jsonl - would both write to stdout; send one of them to a file")
        output = sys.stdout.buffer
    frames = None
    if args.display_filter and args.file == "-":
        raise ExportError("-Y reads the capture twice (to select frames, then to decrypt them), and standard "
                          "input can be read once: save the capture to a file first")
    if args.display_filter:  # only the frames a display filter selects (read once more, as a session)
        from .packets import compile_or_exit, filtered_frames, load_session

        flt = compile_or_exit(args.display_filter, "decrypt")
        if flt is None:
            return 2
        session, _damage = load_session([args.file], args.keys, who="decrypt")
        frames = filtered_frames(session, flt)
    prog, update = (None, None) if args.quiet else _progress_bar(os.path.basename(os.path.normpath(args.file)))
    t0 = time.perf_counter()
    try:
        if prog is not None:
            prog.start()
        with sigterm_unwinds():  # `kill PID` removes the temporary output, like Ctrl-C
            # (as api.decrypt_capture runs it; engine.run keeps a -Y selection to one process)
            opts = engine.Options(keep_other=args.keep_other, hex=args.hex,
                                  frames=None if frames is None else frozenset(frames))
            stats = engine.run(args.file, store, out=output, jsonl_out=jsonl, opts=opts,
                               jobs=args.jobs, progress=update, dsb=args.dsb,
                               inputs=list(args.keys))
    except BrokenPipeError:  # `-o - | tshark -r - -c 5`: the reader stopped; not an error
        raise
    except OSError as exc:  # disk full (-o /dev/full), an unwritable --jsonl path: one line, not a traceback
        raise ExportError(f"I/O error on {exc.filename or args.output or args.jsonl}: {exc.strerror or exc}") from None
    finally:
        if prog is not None:
            prog.stop()
    dt = time.perf_counter() - t0
    # Keys the capture itself carried (pcapng DSBs) are read as it goes: say what they skipped too.
    print_key_warnings("decrypt", store.warnings[warned:])
    if not args.quiet:
        err = sys.stderr
        for (src, dst, spi), s in stats.per_sa:
            esn = " ESN" + (f" (high bits now {s.seq_hi})" if s.seq_hi else "") if s.esn else ""
            extra = "".join(f", {n} {what}" for n, what in ((s.malformed, "malformed"),
                                                           (s.unsupported, "unsupported")) if n)
            why = f"  [{s.last_reason}]" if (s.icv_failed or s.malformed or s.unsupported) and s.last_reason else ""
            # SPIs as model.idtext.spi_text writes them, by hand: idtext imports model.sa, which
            # decrypt's start-up never loads (tests/test_startup_imports)
            print(f"SPI 0x{spi:08x} {src} -> {dst}: {s.decrypted} decrypted, {s.icv_failed} icv_failed, "
                  f"{s.no_key} no_key{extra}{esn}{why}", file=err)
        for (src, dst, spi), s in stats.ah_per_sa:  # AH (export/ah.py): ICVs, payloads written unless failed
            esn = " ESN" + (f" (high bits now {s.seq_hi})" if s.seq_hi else "") if s.esn else ""
            unv = s.unsupported + s.unverifiable
            why = f"  [{s.last_reason}]" if (s.icv_failed or unv) and s.last_reason else ""
            print(f"AH SPI 0x{spi:08x} {src} -> {dst}: {s.verified} verified, {s.icv_failed} icv_failed, "
                  f"{s.no_key} no_key" + (f", {unv} not checked" if unv else "") + f"{esn}{why}", file=err)
        rate = stats.frames / dt if dt > 0 else 0.0
        # Every ESP packet in exactly one count (the per-SA lines name malformed/unsupported too), and
        # dummy packets (RFC 4303 §2.6: decrypted, nothing to write) said, so decrypted - written adds up.
        bad = "".join(f", {n} {what}" for n, what in ((stats.malformed, "malformed"),
                                                      (stats.unsupported, "unsupported")) if n)
        dummy = f" ({stats.dummy} dummy, next header 59)" if stats.dummy else ""
        print(f"{stats.frames} frames, {stats.esp} ESP: {stats.decrypted} decrypted{dummy}, {stats.icv_failed} "
              f"icv_failed, {stats.no_key} no_key{bad}; {stats.written} inner packets written"
              + (f", {stats.kept} other frames kept unchanged" if args.keep_other else "")
              + (f"; {stats.ah} AH: {stats.ah_verified} verified, {stats.ah_icv_failed} icv_failed, "
                 f"{stats.ah_no_key} no_key" + (f", {stats.ah_unverified} not checked" if stats.ah_unverified else "")
                 + f" ({stats.ah_written} payloads among those written)" if stats.ah else "")
              + (f"; nested ESP: {stats.nested_decrypted} inner layers decrypted, {stats.nested_failed} failed"
                 if stats.nested_decrypted or stats.nested_failed else "")
              # the decoder's marks, as `sas` counts them (an RFC 8229 gap never filled, IP fragments never
              # completed): the ESP behind a gap is decrypted all the same (export.perframe FramePath._late)
              + (f"; malformed: {sum(stats.marks.values())} ("
                 + ", ".join(f"{k} {v}" for k, v in sorted(stats.marks.items())) + ")" if stats.marks else "")
              + f" in {dt:.2f}s ({rate:,.0f} frames/s, {stats.jobs} process{'es' if stats.jobs > 1 else ''})",
              file=err)
    if stats.warning:  # even with -q, as sas/findings/packets/stats warn
        warn("decrypt", stats.warning)
    if stats.unkept:  # even with -q: frames missing from a --keep-other output are never silent
        from ..model.plural import plural  # (imported here, as in _outcome)

        warn("decrypt", f"{plural(stats.unkept, 'frame')} not kept: {'its' if stats.unkept == 1 else 'their'} "
                        "interface has no Interface Description Block in the capture (damaged file)")
    if stats.truncated:  # even with -q: a cut-off or damaged capture is never silent
        # The output holds every sound frame, but the exit status tells a pipeline the input was
        # damaged (like `summary`): 1, the same as for an input that is not a capture at all; so an
        # error, though the output is complete up to the damage.
        error("decrypt", f"{stats.truncated} (everything before it was written)")
        return 1
    return _outcome(stats, store, args.keys, None if frames is None else (args.display_filter, len(frames)))


# Exit statuses (also in --help and the README): 0 all ESP with keys decrypted; 1 error or damaged
# input; 3 nothing decrypted; 4 some ESP packets failed their ICV (or, with no integrity check,
# their plaintext checks).
EXIT_NOTHING_DECRYPTED = 3
EXIT_ICV_FAILED = 4


def _outcome(stats, store, key_args: list[str], selected: tuple[str, int] | None = None) -> int:
    """The exit status for a run that read its input, with one line on stderr saying what did not
    decrypt (even with -q: a script must not take an empty output for success). ``selected``: the
    -Y filter and how many frames it selected (the run saw only those). Both of its lines are
    errors: each comes with a non-zero exit status (3, 4), though what did decrypt was written."""
    if stats.decrypted == 0 and stats.ah_verified == 0:
        # imported here: decrypt's start-up loads only what every run needs (tests/test_startup_imports)
        from ..model.plural import noun, plural

        spis = sorted({spi for (_s, _d, spi), _st in stats.per_sa})
        seen = f"{noun(len(spis), 'SPI')} " + ", ".join(f"0x{x:08x}" for x in spis[:6]) + (", ..." if len(spis) > 6 else "")
        n_keys = len(getattr(store, "esp", ()))
        if stats.esp == 0 and stats.ah == 0 and selected is not None:
            why = (f"the display filter -Y '{selected[0]}' selects no ESP or AH packet "
                   f"({plural(selected[1], 'frame')} selected)")
        elif stats.esp == 0 and stats.ah == 0:
            why = "the capture has no ESP or AH packets"
        elif stats.esp == 0:  # AH only: its payloads are written whatever the ICV says, but none verified
            why = (f"no AH ICV verified: {stats.ah_icv_failed} of {plural(stats.ah, 'AH packet')} failed (wrong key or "
                   "algorithm, or a NAT; see the per-SA lines)" if stats.ah_icv_failed else
                   f"no key for the {plural(stats.ah, 'AH packet')}: their payloads were written with the ICV not "
                   "verified (give the AH keys with -k)")
        elif not key_args and n_keys == 0:
            why = (f"no keys: give the ESP keys with -k (the capture has {plural(stats.esp, 'ESP packet')} on "
                   f"{plural(len(stats.per_sa), 'SA')}, {seen})")
        elif stats.no_key == stats.esp:
            src = ", ".join(key_args) if key_args else "the capture's Decryption Secrets Block"
            why = (f"keys from {src} ({plural(n_keys, 'ESP SA')}) match no SPI in this capture ({seen}): "
                   "another tunnel, host or rotated log?")
        elif stats.unsupported and not stats.icv_failed:
            why = (f"the keys of the SAs seen use algorithms ipsecscope cannot decrypt "
                   f"({plural(stats.unsupported, 'packet')}; see the per-SA lines)")
        elif stats.icv_failed:
            why = (f"every ESP packet with keys failed its ICV check ({stats.icv_failed}): wrong key or algorithm "
                   "for those SPIs (see the per-SA lines)")
        else:
            why = "no ESP packet could be decrypted (see the per-SA lines)"
        error("decrypt", f"nothing decrypted: {why}")
        return EXIT_NOTHING_DECRYPTED
    if stats.icv_failed or stats.ah_icv_failed:
        from ..model.plural import plural

        n = stats.icv_failed + stats.ah_icv_failed
        what = " and ".join(plural(k, w) for k, w in ((stats.icv_failed, "ESP packet"), (stats.ah_icv_failed, "AH packet"))
                            if k)
        error("decrypt", f"{what} failed {'its' if n == 1 else 'their'} ICV check (wrong key, or altered on the "
                         "path); the others were written")
        return EXIT_ICV_FAILED
    return 0
