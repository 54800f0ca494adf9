"""Arguments every sub-command spells the same way, and how ``-k`` and the captures share argv.

``-k`` takes several values (``-k left.log right.log``), so in ``findings -k charon.log
capture.pcapng`` argparse hands the capture to ``-k`` too. tshark users type options first, so
both orders must work: after parsing, :func:`settle_captures` gives back to the captures every
value after the first of a ``-k`` group that opens as a capture with no Decryption Secrets Block
before its first packet (a plain pcap is never a key file). When the command then still has no
capture, the last such value (a pcapng carrying secrets) is the capture — its secrets are read
from it as it loads. ``--`` ends ``-k`` explicitly: ``findings -k a.log b.log -- capture.pcapng``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import IpsecscopeError
from ..keys.formats import input_summary

if TYPE_CHECKING:
    import threading

    from ..keys import KeyStore
    from ..session import Session


def at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer of at least ``low`` (a count, a row limit, a number of processes).
    Without it ``--ike-limit -1`` printed 15 of 16 messages and "17 more", ``--workers -3`` ran."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{text!r}: give {low} or more")
        return v
    return parse


def seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds (an interval or a duration)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return v

# The format list comes from the one key-format table (ipsecscope.keys.formats.FORMATS).
KEYS_HELP = ("key files or directories, any mix of formats (detected by content): "
             f"{input_summary()}; repeatable (`-k A B -k C`); before or after the capture, `--` ends the list")


class _KeysAction(argparse.Action):
    """``-k A B``: extend ``keys`` and remember the group, so the first value after each ``-k``
    always stays a key and only the ones after it can be captures swallowed by ``nargs='+'``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        getattr(namespace, self.dest).extend(values)
        groups = getattr(namespace, "_key_groups", None) or []
        groups.append(list(values))
        namespace._key_groups = groups


def add_filter_argument(p: argparse.ArgumentParser) -> None:
    """``-Y``: packets, summary and decrypt (here, not in cli.packets: decrypt and summary would
    import the packet list's modules to build their parsers)."""
    p.add_argument("-Y", "--display-filter", metavar="FILTER", dest="display_filter",
                   help="Wireshark display filter, e.g. 'esp.spi == 0xc254fe64 && icmp.type == 8' "
                        "(`ipsecscope packets --fields` lists the fields)")


def add_keys_argument(p: argparse.ArgumentParser, extra_help: str = "") -> None:
    p.add_argument("-k", "--keys", metavar="KEYS", nargs="+", action=_KeysAction, default=[],
                   help=KEYS_HELP + extra_help)
    # argparse keeps the list given as default and extends it in place: one list per parse.
    p.set_defaults(_key_groups=None)
    add_strict_keys_argument(p)


def add_strict_keys_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict-keys", action="store_true",
                   help="abort on an unusable key row, hex dump or file instead of skipping it with a "
                        "warning (the default uses every other key)")


# --- messages on stderr ------------------------------------------------------------------------
# Every message the CLI prints on stderr has argparse's own form, so one grep and one parser read
# them all: ``ipsecscope CMD: LEVEL: WHAT``, CMD the sub-command as typed (``sas``, ``keys list``;
# none for ``ipsecscope FILE``, the TUI no sub-command was named for), LEVEL
#   error   — the command ends with a non-zero exit status (argparse's usage errors too)
#   warning — something the user must know, the run goes on (and may still exit 0)
#   note    — what was done on the user's behalf (nothing wrong)
# Further lines of one message (a filter's caret, argparse's usage) are indented by two spaces, so
# a line that starts with "ipsecscope" always starts a message. Reports that are a command's
# output (decrypt's per-SA counts, "wrote N entries") are not messages and carry no prefix.
PROG = "ipsecscope"


def message(cmd: str | None, level: str, text: object) -> str:
    """``ipsecscope CMD: LEVEL: TEXT`` with each further line of ``text`` indented (see above)."""
    head = f"{PROG} {cmd}" if cmd else PROG
    body = str(text).strip("\n").replace("\n", "\n  ")
    return f"{head}: {level}: {body}"


def error(cmd: str | None, text: object) -> None:
    """An error on stderr: the caller ends the command with a non-zero exit status."""
    print(message(cmd, "error", text), file=sys.stderr)


def warn(cmd: str | None, text: object) -> None:
    """A warning on stderr: the command goes on."""
    print(message(cmd, "warning", text), file=sys.stderr)


def note(cmd: str | None, text: object) -> None:
    """A note on stderr: what the command did on the user's behalf, nothing wrong."""
    print(message(cmd, "note", text), file=sys.stderr)


def command_of(prog: str) -> str | None:
    """The CMD of a parser's ``prog`` (``"ipsecscope keys list"`` -> ``"keys list"``; None for the
    top-level parser, and for the TUI's when no sub-command was typed)."""
    return prog.removeprefix(PROG).strip() or None


MAX_KEY_WARNINGS = 10  # distinct key-loading warnings printed; the rest counted in one line


def print_key_warnings(cmd: str | None, warnings: list[str]) -> None:
    """Key-loading warnings of command ``cmd`` on stderr, once each: the first MAX_KEY_WARNINGS, then
    how many more (a hostile or mangled log can skip thousands of SAs; stderr stays readable and bounded)."""
    distinct = list(dict.fromkeys(warnings))
    for w in distinct[:MAX_KEY_WARNINGS]:
        warn(cmd, w)
    if len(distinct) > MAX_KEY_WARNINGS:
        warn(cmd, f"{len(distinct) - MAX_KEY_WARNINGS} more warnings about the keys not shown "
                  "(--strict-keys stops at the first unusable row, dump or file)")


def warn_keys(cmd: str | None, store: KeyStore, session: Session | None = None) -> None:
    """Print what key loading skipped or noticed (``file:line: reason``), once each, on stderr;
    with a loaded ``session`` also each key file that matches nothing in its capture (issue 14:
    keys for another tunnel must not look like success)."""
    print_key_warnings(cmd, store.warnings)
    for m in session.key_matches() if session is not None else ():
        if m.matches_nothing:
            warn(cmd, m.sentence())




def add_captures_argument(p: argparse.ArgumentParser, *, many: bool = True, required: bool = True,
                          help: str = "", follow: bool = True) -> None:
    """The capture positional(s) of a command that also takes ``-k``. Declared optional to
    argparse (``-k`` may have swallowed them); :func:`settle_captures` checks it after parsing."""
    if follow:
        p.add_argument("--follow", action="store_true",
                       help="keep reading a capture file that is still being written, as `tail -f` does "
                            "(tcpdump -U -w FILE); Ctrl-C ends it and reports what was read")
    if many:
        p.add_argument("files", nargs="*", metavar="FILE",
                       help=help or "capture file(s) (pcap / pcapng, gzip accepted; '-' reads standard input), "
                                    "read into one session in order")
    else:
        p.add_argument("file", nargs="?", metavar="FILE",
                       help=help or "capture file (pcap / pcapng, gzip accepted)")
    p.set_defaults(_captures=("files" if many else "file", required), _parser=p)


def stop_event(args: argparse.Namespace) -> threading.Event | None:
    """For ``--follow``: an event that Ctrl-C (or SIGTERM) sets, so following ends there and the
    command still reports what it read. None otherwise."""
    if not getattr(args, "follow", False):
        return None
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def is_plain_capture(path: str) -> bool:
    """Does ``path`` open as a capture with no Decryption Secrets Block before its first packet?
    (Reads the header and at most one packet: cheap even for a 10 GB file.)"""
    if path == "-":
        return True
    plain = _plain_pcap(path)
    return _plain_by_reader(path) if plain is None else plain


def _plain_by_reader(path: str) -> bool:
    """:func:`is_plain_capture` as the capture reader judges it (any format)."""
    from ..capture import open_capture

    try:
        with open_capture(path) as reader:
            next(iter(reader), None)
            return not reader.secrets
    except (IpsecscopeError, OSError):  # not a capture, a directory: the key loader will say what it is
        return False


def _plain_pcap(path: str) -> bool | None:
    """:func:`is_plain_capture` for an uncompressed pcap (which has no place for a Decryption Secrets
    Block) from its first 40 bytes, as the pcap reader would judge them: a whole file header, and a
    first record no longer than the reader's limit. None for anything else (pcapng, gzip, not a
    capture): the reader decides. The reader's first packet would import the per-frame model
    (model.packets, ~6 ms) just to say yes for `decrypt -k KEYS FILE` (issue 15)."""
    try:
        with open(path, "rb") as f:
            head = f.read(40)
    except OSError:
        return None
    from ..capture.layout import PCAP_MAGIC, pcap_record_limit  # (decrypt's own capture module)

    magic = PCAP_MAGIC.get(head[:4])
    if magic is None or len(head) < 24:
        return None
    if len(head) < 40:  # no whole record header yet: the reader reads no packet either
        return True
    order = "little" if magic[0] == "<" else "big"
    return int.from_bytes(head[32:36], order) <= pcap_record_limit(int.from_bytes(head[16:20], order))


def settle_captures(args: argparse.Namespace) -> None:
    """Give the captures ``-k`` swallowed back to the command; a usage error when none is left."""
    spec = getattr(args, "_captures", None)
    if spec is None:
        return
    dest, required = spec
    many = dest == "files"
    current = getattr(args, dest)
    files: list[str] = list(current or []) if many else ([current] if current else [])
    groups: list[list[str]] = getattr(args, "_key_groups", None) or []
    moved: list[str] = []
    for group in groups:
        for value in group[1:]:
            if is_plain_capture(value):
                moved.append(value)
    if not files and not moved:
        # `-k keys.log capture-with-secrets.pcapng`: the capture is the last value of the last group.
        last = next((g for g in reversed(groups) if len(g) > 1), None)
        if last is not None and _opens_as_capture(last[-1]):
            moved.append(last[-1])
    if moved:
        keys = list(args.keys)
        for value in moved:
            keys.remove(value)
        args.keys = keys
        files += moved
    if not many and len(files) > 1:
        args._parser.error(f"one capture FILE, got {len(files)}: {' '.join(files)} ({SEVERAL_CAPTURES})")
    if required and not files:
        args._parser.error("give a capture FILE (after the options, or before them; "
                           "`-k KEYS... -- FILE` ends the key list)")
    setattr(args, dest, files if many else (files[0] if files else None))


SEVERAL_CAPTURES = "sas, findings, packets, stats and the TUI read several captures as one"


def too_many_captures(args: argparse.Namespace, extra: list[str]) -> None:
    """A usage error naming the captures when a one-capture command (``summary``, ``decrypt``) was
    given more than one; returns when ``extra`` is something else (an unknown option)."""
    spec = getattr(args, "_captures", None)
    single = spec[0] == "file" if spec is not None else hasattr(args, "file")
    if not single or getattr(args, "_parser", None) is None or any(e.startswith("-") for e in extra):
        return
    files = [f for f in [getattr(args, "file", None)] if f] + list(extra)
    args._parser.error(f"one capture FILE, got {len(files)}: {' '.join(files)} ({SEVERAL_CAPTURES})")


def _opens_as_capture(path: str) -> bool:
    from ..capture import open_capture

    try:
        with open_capture(path):
            return True
    except (IpsecscopeError, OSError):
        return False
