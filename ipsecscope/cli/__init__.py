"""Command line front end. Each sub-command lives in its own module exposing
``add_parser(subparsers) -> None`` and ``run(args) -> int``; this module only dispatches.

``ipsecscope FILE [-k KEYS]`` (no sub-command) opens the TUI.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import sys
import typing

from .. import timefmt
from ..errors import IpsecscopeError

# name -> module (relative to ipsecscope.cli). Imported lazily so `summary` never loads Textual.
COMMANDS = {
    "summary": "summary",
    "decrypt": "decrypt",
    "keys": "keys",
    "sas": "sas",
    "findings": "findings",
    "packets": "packets",
    "stats": "stats",
    "live": "live",
    "tui": "tui",
}


def _load(name: str):
    return importlib.import_module(f".{COMMANDS[name]}", __name__)


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, as wide as the terminal as it makes it, but without importing
    shutil for that: argparse makes one for every add_argument, and shutil imports bz2 and lzma
    (~2 ms of a command's start-up, issue 15). The width as shutil.get_terminal_size finds it."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            try:
                width = int(os.environ.get("COLUMNS", 0))
            except ValueError:
                width = 0
            if width <= 0:
                try:
                    width = os.get_terminal_size(sys.__stdout__.fileno()).columns
                except (AttributeError, ValueError, OSError):
                    width = 0
            width = (width or 80) - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help formatter is :class:`_Formatter` unless told otherwise; the
    sub-commands' parsers are of this class too (argparse makes them of the parent's class)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        """argparse's ``PROG: error: MESSAGE``, exit status 2, as every message of the CLI is
        written (cli.common.message): the error on the first line, then the usage indented under
        it (argparse prints the usage first, a line no grep for the error form would find)."""
        from .common import command_of, error

        error(command_of(self.prog), f"{message}\n{self.format_usage().strip()}")
        self.exit(2)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, just that sub-command's (start-up time matters for
    scripts calling `ipsecscope summary` in a loop, and importing every front end costs ~0.2 s)."""
    parser = _Parser(
        prog="ipsecscope",
        description="Explain IPsec tunnels: IKE/ESP decode, decryption, SA correlation and findings.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"ipsecscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # `--version` needs no front end at all (it imported all nine, ~0.13 s CPU, just to print a line).
    for name in [only] if only in COMMANDS else () if only == "--version" else COMMANDS:
        try:
            mod = _load(name)
        except ModuleNotFoundError as exc:  # a front end not built in this checkout
            if exc.name and exc.name.startswith(__name__):
                continue
            raise
        mod.add_parser(sub)
    for command in sub.choices.values():
        _add_tz(command)
    return parser


def _tz(spec: str) -> str:
    if timefmt.is_utc(spec):  # (the default: valid, and nothing to build yet)
        return spec
    try:
        timefmt.parse_zone(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def _add_tz(p: argparse.ArgumentParser) -> None:
    """``--tz`` on every command and sub-command (``keys list --tz local``): one place, one meaning."""
    p.add_argument("--tz", type=_tz, default=timefmt.default_spec(), metavar="ZONE", help=timefmt.HELP)
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_tz(child)


_INTERRUPTED = False  # Ctrl-C has been delivered to this process (on_interrupt)


def on_interrupt(signum: int, frame: object) -> None:
    """Ctrl-C as KeyboardInterrupt, except inside importlib's own code: there it can land in the
    weakref callback that drops a module lock, where an exception is printed as 'Exception ignored
    in ... cb' with a traceback and then dropped, so the interrupt was lost and the run went on.
    It is raised again 1 ms later, outside that bookkeeping.

    The interrupt is also remembered (:data:`_INTERRUPTED`): an extension module being imported
    when it lands (numpy's C part importing ``datetime``) can turn it into an ImportError of its
    own that names no KeyboardInterrupt, and only this flag tells main that Ctrl-C caused it."""
    global _INTERRUPTED
    _INTERRUPTED = True
    code = getattr(frame, "f_code", None)
    if code is not None and code.co_filename.startswith("<frozen importlib"):
        signal.signal(signal.SIGALRM, on_interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.001)
        return
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """The ``ipsecscope`` command. Ctrl-C ends it with 130 and no traceback at any moment,
    also while the sub-command's modules are still being imported (a tenth of a second that a
    user who typed the wrong file is quick to interrupt).

    Without ``argv`` it is the process's own command (the console script, ``python -m
    ipsecscope``): start-up then runs without the cyclic garbage collector and freezes what it
    made (:func:`_started`)."""
    global _INTERRUPTED
    _INTERRUPTED = False
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not a host's own handler
        signal.signal(signal.SIGINT, on_interrupt)
    own = argv is None and gc.isenabled()
    if own:
        gc.disable()
    try:
        return _main(argv, own)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Any error after a Ctrl-C is the Ctrl-C's doing, chained to it or not: quiet 130.
        if _INTERRUPTED or interrupted(exc):
            return 130
        raise
    finally:
        if own:
            gc.enable()


def interrupted(exc: BaseException) -> bool:
    """Is ``exc`` a Ctrl-C that Python wrapped on its way out? Ctrl-C landing in a class's
    ``__set_name__`` while a module defines a dataclass is re-raised as ``RuntimeError('Error
    calling __set_name__ ...')`` from the KeyboardInterrupt (CPython 3.11's type creation), and
    would print a traceback instead of ending quietly with 130. An error raised while handling
    it (``__context__``) counts too."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _started(own: bool) -> None:
    """Start-up is over: the sub-command's modules, classes and functions (tens of thousands of
    objects, none of them garbage) are imported, and what its ``preload(args)`` knows the run will
    import (numpy: ~37M instructions of collections during its import and at exit). Collections while importing them found nothing
    and each walked everything imported so far; frozen, they are left out of every later
    collection, the interpreter's at exit included. ~11 ms of a 6-frame `decrypt`'s ~55 ms beyond
    the interpreter's own start-up (issue 15). Only for the process's own command: a caller's
    ``main(argv)`` keeps its garbage collector as it was."""
    if own:
        gc.freeze()
        gc.enable()


def _main(argv: list[str] | None, own: bool = False) -> int:
    # numpy's OpenBLAS starts a worker thread per extra core as numpy loads, and it busy-waits for
    # work for ~0.1 s: 40-80 ms of CPU per command, a fifth of sas's start-up (issue 15). No command
    # does linear algebra, so one thread is all they need (set before numpy loads; a user's own
    # setting wins; an empty one is no setting: OpenBLAS then starts its workers as if unset).
    if not os.environ.get("OPENBLAS_NUM_THREADS", "").strip():
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    argv = list(sys.argv[1:] if argv is None else argv)
    # `ipsecscope FILE ...` is the TUI: the main job gets the shortest command, options first too
    # (`ipsecscope -k keys.log FILE`).
    implicit = bool(argv) and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")
    if implicit:
        argv.insert(0, "tui")
    parser = build_parser(argv[0] if argv else None)
    tui = _subparser(parser, "tui") if implicit else None
    if tui is not None:  # no sub-command typed: its usage and messages name none (`ipsecscope: error: ...`)
        tui.prog = parser.prog
    args, extra = parser.parse_known_args(argv)
    from .common import command_of, error, settle_captures, too_many_captures

    own_parser = _command_parser(parser, args)
    args._who = command_of(own_parser.prog)  # the CMD of `ipsecscope CMD: error: ...` (cli.common)
    if extra:
        # `summary a.pcap b.pcap`: argparse's own message is the top-level usage and "unrecognized
        # arguments"; say instead that this command reads one capture and which ones read several.
        too_many_captures(args, extra)
        own_parser.error(f"unrecognized arguments: {' '.join(extra)}")  # `sas --bogus`: sas's usage
    settle_captures(args)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    # JSON keeps UTC (epoch numbers, and UTC in the texts it carries): machines get one stable form.
    machine = getattr(args, "json", False) or getattr(args, "headless", False)
    timefmt.set_zone(timefmt.DEFAULT if machine else getattr(args, "tz", timefmt.DEFAULT))  # argparse checked it
    command = _load(args.command)
    if hasattr(command, "preload"):  # what its run will import, imported while start-up is going on
        command.preload(args)
    _started(own)
    try:
        rc = int(command.run(args) or 0)
        # Output smaller than stdout's buffer is written only here or at exit; a reader that left
        # (`| head -1`) must raise EPIPE here, where it is caught, not in the interpreter's exit
        # flush ('Exception ignored ... BrokenPipeError', status 120).
        sys.stdout.flush()
        if own and getattr(command, "EXIT_AT_ONCE", False):
            _exit_at_once(rc)
        return rc
    except IpsecscopeError as exc:
        error(args._who, exc)
        return 1
    except KeyboardInterrupt:
        return 130
    except MemoryError:
        # Never a traceback: say which input, and what to do.
        files = getattr(args, "files", None) or [getattr(args, "file", None) or "the input"]
        error(args._who, f"{', '.join(map(str, files))}: out of memory while reading; the input is larger than "
                         "this machine can hold (try `ipsecscope summary`, which keeps no per-frame state)")
        return 1
    except BrokenPipeError:  # `ipsecscope summary F | head`
        _stdout_to_devnull()
        return 0
    except OSError as exc:  # stdout on a full disk (`> /dev/full`) and the like: one line, not a traceback
        where = f"{exc.filename}: " if exc.filename else "output: "
        error(args._who, f"{where}{exc.strerror or exc}")
        _stdout_to_devnull()
        return 1


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    """The parser of sub-command ``name`` (of ``parser``'s sub-commands); None when this checkout
    has no such front end (build_parser skips it)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    return None


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub-)sub-command ``args`` chose (``keys list``'s), else ``parser``: its
    ``prog`` names the command in messages, and its usage is the one to show."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _command_parser(action.choices[chosen], args)
    return parser


def _exit_at_once(rc: int) -> None:
    """Ends the process now, with status ``rc``, once the command's outputs are complete: the
    atexit handlers run and stdout/stderr are flushed, but the interpreter's teardown (every
    module's objects freed one by one, numpy's and cryptography's included) is skipped. That
    teardown is ~5 ms of CPU after a 200k-frame ``decrypt`` (1 %) and ~2.5 ms of a 6-frame one (4 %
    of its start-up; measured as the CPU between the atexit handlers and the process's end, issue
    15) and does nothing a finished run needs. Only for a command that says so (``EXIT_AT_ONCE``: every file
    it wrote is closed and renamed when ``run`` returns, no thread of its own is left) and only as
    the process's own command; if stderr cannot be flushed, the ordinary exit says why."""
    import atexit
    import os

    atexit._run_exitfuncs()  # (what Python's own exit runs first: e.g. a caller's report)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(rc)


def _stdout_to_devnull() -> None:
    """The interpreter flushes stdout again at exit; after a failed write that would print an
    'Exception ignored' traceback, so what is left goes nowhere."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
