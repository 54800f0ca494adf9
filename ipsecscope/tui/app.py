"""The Textual front end. :func:`create_app` is the one way in, for the CLI and the tests alike.

Data flows down as attributes (the app hands the session's table/rows/findings to each widget);
widgets talk up with messages (``FrameHighlighted``, ``SaChosen``, ``JumpToEvidence`` …) that
the app turns into navigation. Loading and filtering run in worker threads so the UI never waits
on a million-frame capture.

The app is put together from one part per responsibility, each a module of its own:
:mod:`~ipsecscope.tui.session_feed` (loading a file, live refresh, the status line),
:mod:`~ipsecscope.tui.filter_bar` (the packet filter), :mod:`~ipsecscope.tui.navigation` (what the
widgets' messages and the app's keys do), :mod:`~ipsecscope.tui.dialogs` (add keys, export) and
:mod:`~ipsecscope.tui.routing` (which widget a key reaches, in the order typed). This module
holds the layout, the first screen and the ways in.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult, SystemCommand
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, ProgressBar, TabbedContent

from ..model.filter import Filter, compile_filter
from ..model.sa import Finding
from .dialogs import Dialogs, export
from .filter_bar import FilterBar
from .footer import AppFooter
from .loading import Hold, Loading
from .navigation import Navigation
from .panes import SessionPane
from .routing import KeysInOrder
from .session_feed import SessionFeed, findings_of
from .tabs import COMMANDS, TABS, Pane, bindings, help_rows
from .widgets.packet_table import PacketTable
from .widgets.sa_tree import SaRef, SaTree
from .widgets.status import StatusLine

if TYPE_CHECKING:
    from ..session import Session

NARROW = 100  # columns
WIDE = 140  # columns: from here the SA tree may take 40% of the screen for whole labels
LIVE_REFRESH = 1.0  # seconds between looks at a live session

__all__ = ["IpsecscopeApp", "create_app", "create_live_app", "create_stream_app", "export", "findings_of"]

class IpsecscopeApp(SessionFeed, FilterBar, Navigation, Dialogs, KeysInOrder):
    CSS_PATH = Path(__file__).with_name("ipsecscope.tcss")  # absolute: subclasses live elsewhere
    TITLE = "ipsecscope"

    BINDINGS = bindings()
    HELP = help_rows()  # what the help screen says about each key (the footer keeps the short names)

    def __init__(self, path: str | Path | Sequence[str | Path] | None, key_files: Sequence[str | Path] = (), *,
                 runner: Any = None, live_name: str = "live", row_limit: int | None = None) -> None:
        super().__init__()
        self.row_limit = row_limit  # packet-list rows kept for a file (the rest only counted)
        # Several captures are read into one session in order, as `sas` and `findings` do.
        self.paths: list[Path] = ([Path(path)] if isinstance(path, (str, Path)) else
                                  [Path(p) for p in path] if path is not None else [])
        self.path = self.paths[0] if self.paths else None
        # Live mode: a live.LiveRunner feeds runner.session from its own thread; we poll it under
        # runner.lock. File mode: the session is ours alone once loaded, so the lock is a no-op.
        self.runner = runner
        self.live_name = live_name
        self.data_lock: Any = runner.lock if runner is not None else contextlib.nullcontext()
        self._live_frames: tuple[int, bool, int] | None = None
        self.key_files: list[Path] = [Path(p) for p in key_files]
        self.session: Session | None = None
        self.filter: Filter = compile_filter("")
        self.show_keys = False
        self.filter_error: str | None = None  # the last filter typed did not compile
        self.current_ref: SaRef | None = None
        self._pending_frame: int | None = None
        self._detail_frame: int | None = None
        self.findings: list[Finding] = []  # the ones on screen (loading: so far)
        # Loading a file: the panes fill in as it reads (tui.loading); incremental=False shows
        # nothing before the end (benchmarks compare both). load_hold: the tests' hook.
        self.incremental = True
        self.load_hold: Hold | None = None
        self.loading: Loading | None = None
        self.last_load: Loading | None = None
        self._panes: list[SessionPane] | None = None
        self._painted = threading.Event()  # the first screen is drawn
        self.partial: float | None = None  # the fraction read, while the screen shows a partial look
        self._shown_loaded = False
        self._load_timer: Any = None
        self._loading_tab = "packets"
        self._filter_upto = 0  # rows the current filter's view covers

    # ---- layout ----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Vertical(id="top"):
            yield StatusLine(Text("ipsecscope", "bold"), id="status")
            yield ProgressBar(id="progress", show_eta=False)
        with Horizontal(id="body"):
            yield SaTree(id="sa-tree")
            # Live (and a followed capture) is watched for its tunnels: the SA tree has the focus and
            # SA detail shows the SA under its cursor, following it. A file opens on its packet list
            # (on Findings when something is wrong, _loaded): all it holds is there to read.
            with TabbedContent(initial="sa-detail" if self.runner is not None else "packets", id="tabs"):
                for tab in TABS:
                    yield Pane(tab.title, *tab.content(), id=tab.id)
        yield AppFooter()

    def on_mount(self) -> None:
        self._set_narrow(self.size.width)
        # live opens on the tunnels (compose); focusing the packet list would switch to its tab.
        # Now, not queued behind keys read meanwhile (a `/` typed as the app starts).
        self._focus(self.query_one(SaTree) if self.runner is not None else self.query_one(PacketTable))
        if self.path is not None:
            self._loading(True)  # the first screen says what it is doing, before the loader starts
            # The footer fills in its keys a refresh after the first one (when the screen's bindings
            # are known): the first screen is drawn once that refresh is done.
            self.screen.bindings_updated_signal.subscribe(self, self._footer_ready)
            self.load_capture()
        elif self.runner is not None:
            self._loading(False)
            self._set_status(Text(f"{self._input_name()}: waiting for IKE/ESP traffic …", "bold yellow"))
            for message in getattr(self.runner, "key_errors", ()):
                self.notify(f"{message}; continuing without it", title="Key file not loaded", severity="error",
                            timeout=15)
            self.set_interval(LIVE_REFRESH, self._poll_live)

    def _footer_ready(self, _screen: Screen, tries: int = 10) -> None:
        """The screen's bindings are known: once the footer shows them and the screen is drawn
        again, the first screen is complete and the loader may take the CPU."""
        if self._painted.is_set():
            return
        if self.query_one(Footer).children or not tries:  # its keys mounted: laid out, then drawn
            self.call_after_refresh(self.call_after_refresh, self._painted.set)
        else:  # the footer recomposes after a refresh of its own
            self.call_after_refresh(self._footer_ready, _screen, tries - 1)

    def on_resize(self, event: events.Resize) -> None:
        self._set_narrow(event.size.width)

    def _set_narrow(self, width: int) -> None:
        # Below 100 columns the packet detail shows the tree or the hex view, not both side by side,
        # and the SA tree is narrower with short labels (whole peers and SPIs, not cut ones).
        self.screen.set_class(width < NARROW, "narrow")
        self.screen.set_class(width >= WIDE, "wide")
        self.query_one(SaTree).set_compact(width < NARROW, 0.4 if width >= WIDE else 0.3, width)
        # and the footer keeps one space between its keys, not three, so all of them fit in 80
        self.query_one(Footer).compact = width < NARROW

    # ---- actions -----------------------------------------------------------------------------
    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        # A new toast replaces the older ones (an error stays until the next error): a pile of
        # them covers the rows they are about.
        for old in list(self._notifications):
            if old.severity != "error" or severity == "error":
                self._unnotify(old, refresh=False)
        # Toasts carry file names, filter text and error messages: literal, never markup, whatever
        # a widget's notify() passes (Widget.notify sends markup=True); see tui/plain.py.
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)


    # ---- command palette ---------------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        # run as their keys are (run_action: an action may decline, SkipAction)
        for c in COMMANDS[:2]:  # help and filter first, then the tabs, as in the help screen
            yield SystemCommand(c.palette, c.palette_help, partial(self.run_action, c.action))
        for tab in TABS:
            yield SystemCommand(tab.title, tab.palette_help, partial(self.action_tab, tab.id))
        for c in COMMANDS[2:]:
            if c.palette and c.action != "quit":  # Textual's own commands include Quit
                yield SystemCommand(c.palette, c.palette_help, partial(self.run_action, c.action))


def create_live_app(runner: Any, name: str = "live") -> IpsecscopeApp:
    """The app over a running :class:`ipsecscope.live.LiveRunner` (``ipsecscope live -i IFACE``)."""
    return IpsecscopeApp(None, runner=runner, live_name=name)


def create_app(path: str | Path | Sequence[str | Path] | None, key_files: Sequence[str | Path] = (), *,
               row_limit: int | None = None) -> IpsecscopeApp:
    """The app for ``path`` (or several captures, read in order into one session) with ``key_files``
    loaded first. Used by ``ipsecscope FILE...`` and the tests."""
    return IpsecscopeApp(path, key_files, row_limit=row_limit)


def create_stream_app(runner: Any, name: str) -> IpsecscopeApp:
    """The app over a :class:`~ipsecscope.tui.stream.CaptureFollower` (standard input, a pipe,
    ``--follow``): shown as it arrives, like a live capture."""
    return IpsecscopeApp(None, runner=runner, live_name=name)
