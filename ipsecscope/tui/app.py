"""The Textual front end. :func:`create_app` is the one way in, for the CLI and the tests alike.

Data flows down as attributes (the app hands the session's table/rows/findings to each widget);
widgets talk up with messages (``FrameHighlighted``, ``SaChosen``, ``JumpToEvidence`` …) that
the app turns into navigation. Loading and filtering run in worker threads so the UI never waits
on a million-frame capture.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from array import array
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import events, on, work
from textual.actions import SkipAction
from textual.app import ComposeResult, SystemCommand
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input, ProgressBar, Static, TabbedContent
from textual.worker import get_current_worker

from ..errors import CaptureError, CaptureFormatError, ExportError, IpsecscopeError
from ..model.filter import Filter, FilterError, compile_filter, findings_index
from ..model.plural import noun, plural
from ..model.sa import Finding, SaState, Severity
from . import panes
from .footer import AppFooter
from .loading import Hold, LoadCancelled, Loading
from .panes import SessionPane, SessionView
from .routing import KeysInOrder
from .screens.export import ExportRequest, ExportScreen, unavailable
from .screens.modals import HelpScreen, KeyFileScreen
from .tabs import COMMANDS, MAIN_SCREEN_ACTIONS, TABS, Pane, bindings, help_rows
from .widgets.findings import FindingsView
from .widgets.packet_detail import PacketDetail
from .widgets.packet_table import PacketHeader, PacketTable, view_from_indices
from .widgets.sa_detail import SaDetail
from .widgets.sa_tree import SaRef, SaTree
from .widgets.stats import StatsView
from .widgets.status import StatusLine
from .widgets.timeline import Timeline

if TYPE_CHECKING:
    from ..session import Session

# The first screen imports Textual, the widgets and the model's dataclasses only: the session
# (numpy, decoders, crypto, state), the rules, the filter and Stats engines and the dissector are
# imported where they are first used -- the loader thread, once that screen is drawn; a filter;
# the Stats tab; a packet's detail (tests/test_tui_first_screen.py holds this).

NARROW = 100  # columns
WIDE = 140  # columns: from here the SA tree may take 40% of the screen for whole labels
LIVE_REFRESH = 1.0  # seconds between looks at a live session
FIRST_PAINT_WAIT = 2.0  # seconds the loader waits at most for the first screen to be drawn
LOAD_POLL = 0.2  # seconds between two moves of the progress bar (and asking for a look when due)


def findings_of(session: Session) -> list[Finding]:
    """The session's findings, most severe first (evaluated once and cached by the session)."""
    return session.findings


class IpsecscopeApp(KeysInOrder):
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
        self._live_frames: tuple[int, bool] | None = None
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

    # ---- loading (worker thread) ------------------------------------------------------------
    @work(thread=True, exclusive=True, group="load", name="load capture")
    def load_capture(self) -> None:
        """Read the capture(s) into a new session. The panes fill in while it reads: at each
        consistent point between windows the loader can hand the app a look (tui.loading), which
        the timer asks for; the session is the loader's meanwhile, shared under ``data_lock``."""
        assert self.path is not None
        # The first screen before the first frame: the loader would take the interpreter from the
        # UI thread for most of the time it needs to draw it (the fallback: never wait long).
        self._painted.wait(FIRST_PAINT_WAIT)
        worker = get_current_worker()
        hold, self.load_hold = self.load_hold, None  # one load only (adding keys reloads without it)
        if hold is not None and hold.before:
            try:
                hold.stop(lambda: worker.is_cancelled)
            except LoadCancelled:
                return
        loading = Loading(partial(self._from_loader, self._show_partial),
                          cancelled=lambda: worker.is_cancelled, hold=hold, incremental=self.incremental)
        self.call_from_thread(self._start_loading, loading)
        notes: list[tuple[str, str, str]] = []  # (message, title, severity), never sent holding the lock
        from ..session import Session  # here, in this thread, after the first screen

        session = Session(row_limit=self.row_limit)
        for key_file in list(self.key_files):
            # A bad key file is reported and left out; the capture is still worth seeing.
            try:
                session.add_key_files([key_file])
            except (IpsecscopeError, OSError) as exc:
                self.key_files.remove(key_file)
                notes.append((f"{exc}; continuing without it", "Key file not loaded", "error"))
        self._notes(notes)
        notes.clear()
        try:
            sizes = [p.stat().st_size if p.is_file() else 0 for p in self.paths]
        except OSError:
            sizes = [0] * len(self.paths)
        loading.total = sum(sizes)
        try:
            loading.lock.acquire()
            try:
                self._read(session, loading, sizes, notes)
                findings_of(session)  # evaluate the rules here, off the UI thread
                table = session.table
                t0 = table.first_ts or 0.0
                act = panes.activity(session.rows, t0, table.last_ts or t0)  # over 1M rows: not on the UI
            finally:
                loading.lock.release()
        except LoadCancelled:
            return  # a newer load took over (keys added), or the app is quitting
        except IpsecscopeError as exc:
            self._notes(notes)
            self.call_from_thread(self._load_failed, str(exc))
            return
        except OSError as exc:
            self._notes(notes)
            self.call_from_thread(self._load_failed, f"cannot read {self.path}: {exc.strerror or exc}")
            return
        if worker.is_cancelled:
            return
        self._notes(notes)
        self.call_from_thread(self._loaded, session, act, loading)

    def _read(self, session: Session, loading: Loading, sizes: list[int],
              notes: list[tuple[str, str, str]]) -> None:
        """Every capture into ``session`` (the loader thread, holding ``loading.lock``)."""
        try:
            for path, size in zip(self.paths, sizes, strict=True):
                session.load(path, progress=lambda done, _total: loading.progress(session, done))
                loading.base += size
        except CaptureError as exc:
            # Damaged part-way (a bogus record length, a broken block): show what came before,
            # as `sas`/`findings` do, and say where it stopped. Nothing read: a plain failure.
            if not session.stats.frames or isinstance(exc, CaptureFormatError):
                raise
            session.stats.truncated = session.stats.truncated or str(exc)
            session.stats.malformed["capture"] = session.stats.malformed.get("capture", 0) + 1
            session.tracker.finish()
            notes.append((f"{exc}; showing the {session.stats.frames:,} frames before it", "Capture damaged",
                          "warning"))

    def _from_loader(self, fn: Any, *args: Any) -> Any:
        """call_from_thread for the loader: the app quitting meanwhile ends the load quietly."""
        try:
            return self.call_from_thread(fn, *args)
        except (RuntimeError, asyncio.CancelledError):
            if self.is_running:
                raise
            raise LoadCancelled from None

    def _notes(self, notes: list[tuple[str, str, str]]) -> None:
        for message, title, severity in notes:
            self.call_from_thread(self.notify, message, title=title, severity=severity, timeout=15)

    def _start_loading(self, loading: Loading) -> None:
        self.loading = loading
        # The session is the loader's until it is done: every look at it from the UI takes this lock.
        self.data_lock = loading.lock
        self._loading(True)
        self._loading_tab = self.query_one(TabbedContent).active
        self.query_one(PacketDetail).hold = True  # no tshark tree while the loader needs the CPU
        if self._load_timer is None:
            self._load_timer = self.set_interval(LOAD_POLL, self._poll_loading)

    def _poll_loading(self) -> None:
        """The timer while a file loads: move the progress bar, ask the loader for a look when due."""
        loading = self.loading
        if loading is None or not self.is_running:
            return
        self._progress(loading.done, loading.total)
        if loading.due(time.monotonic()):
            loading.want.set()

    def _show_partial(self, view: SessionView) -> None:
        """A look at the session while it loads (UI thread; the loader waits at a consistent point)."""
        if not self.is_running or self.loading is None or view.lock is not self.loading.lock:
            return  # quitting, or the look of a load that was superseded
        self._progress(self.loading.done, self.loading.total)
        self._show_session(view)

    def _loading(self, on: bool) -> None:
        bar = self.query_one("#progress", ProgressBar)
        bar.display = on
        if on:
            bar.update(total=None, progress=0)
            self._set_status(Text(f"Loading {self._input_name()} …", "bold yellow"))

    def _progress(self, done: int, total: int) -> None:
        self.query_one("#progress", ProgressBar).update(total=max(total, 1), progress=done)

    def _stop_load_timer(self) -> None:
        if self._load_timer is not None:
            self._load_timer.stop()
            self._load_timer = None

    def _load_failed(self, message: str) -> None:
        self.loading = None
        self.partial = None
        self._stop_load_timer()
        self._loading(False)
        self.query_one(PacketDetail).release()
        self._set_status(Text(f"Could not load: {message}", "bold red"))
        self.notify(message, title="Could not load the capture", severity="error", timeout=10)

    def _loaded(self, session: Session, act: dict[object, list[float]], loading: Loading) -> None:
        if loading is not self.loading:
            return  # superseded while its last message was on its way
        first = not self._shown_loaded
        self._shown_loaded = True
        self.loading = None
        self.last_load = loading  # its looks and their cost, for benchmarks
        self._stop_load_timer()
        self._loading(False)
        findings = findings_of(session)
        inp = self.query_one("#filter", Input)
        if (first and any(f.severity >= Severity.WARNING for f in findings)
                and self.query_one(TabbedContent).active == self._loading_tab
                and not (inp.has_focus or inp.value or self.filter.text)):
            # Something is wrong: that is what the user came for (the status line alone is easy to
            # miss) -- unless they went to another tab or to the filter while it loaded (the rest
            # of a filter being typed went to the Findings table). Before the panes get the
            # session, so the hidden packet detail defers its tshark run.
            self.action_tab("findings")
        self._show_session(SessionView(session, session.rows, findings, _activity=act, lock=loading.lock))
        self.query_one(PacketDetail).release()
        warnings = session.key_warnings
        if first and warnings:  # rows of key files that were skipped: the rest is in use
            more = f"\n… and {len(warnings) - 5} more" if len(warnings) > 5 else ""
            self.notify("\n".join(warnings[:5]) + more, title="Key rows skipped", severity="warning",
                        timeout=20)

    def _show_session(self, view: SessionView) -> None:
        """Hand one look at the session to every pane (the one path for loading and live)."""
        self.session = view.session
        self.findings = view.findings
        self.partial = view.partial
        if self._panes is None:  # the panes are composed once (isinstance on a Protocol is slow)
            self._panes = [w for w in self.query("*") if isinstance(w, SessionPane)]
        with view.lock:
            for pane in self._panes:
                pane.show_session(view)
        ptable = self.query_one(PacketTable)
        header = self.query_one(PacketHeader)
        header.max_frame, header.addr_w = ptable.max_frame, ptable.addr_w
        self._label_findings(view.findings, view.partial is not None)
        if self.filter.text and view.partial is not None:
            self._extend_filter(view.count)  # only the rows that came since the last look
        elif self.filter.text:  # the same filter over new rows: the input may hold a new one being typed
            self.apply_filter(self.filter.text, rerun=True)
        self._update_status()

    # ---- live mode -----------------------------------------------------------------------------
    def _poll_live(self) -> None:
        """Take what the capture thread added since the last look (under its lock)."""
        if not self.is_running:  # quitting: the timer can still fire after the screen went away
            return
        runner = self.runner
        if runner.error is not None and not getattr(self, "_live_error_shown", False):
            self._live_error_shown = True
            self.notify(str(runner.error), title="Live capture stopped", severity="error", timeout=30)
        with runner.lock:
            session = runner.session
            # A followed capture's end (finished) can change the findings without a new frame.
            marker = (session.stats.frames, getattr(runner, "finished", False))
            if marker == self._live_frames:
                return
            self._live_frames = marker
            # rows: a snapshot, the deque keeps moving
            self._show_session(SessionView(session, list(session.rows), findings_of(session), live=True,
                                           ended=marker[1], lock=runner.lock))

    def _label_findings(self, findings: Sequence[Finding], partial: bool = False) -> None:
        tabs = self.query_one(TabbedContent)
        tab = tabs.get_tab("findings")
        more = "…" if partial else ""  # still loading: the count may grow
        tab.label = f"Findings ({len(findings)}{more})" if findings else f"Findings{more}"
        tab.set_class(any(f.severity is Severity.ERROR for f in findings), "has-errors")

    # ---- status ------------------------------------------------------------------------------
    def _set_status(self, text: Text | list[Text]) -> None:
        self.query_one(StatusLine).update(text)

    def _input_name(self) -> str:
        """What the status line calls the input."""
        if not self.paths:
            return self.live_name if hasattr(self.runner, "follow") else f"live {self.live_name}"
        return self.paths[0].name + (f" +{len(self.paths) - 1}" if len(self.paths) > 1 else "")

    def _update_status(self) -> None:
        s = self.session
        if s is None:
            return
        st = s.stats
        findings = self.findings
        n_err = sum(1 for f in findings if f.severity is Severity.ERROR)
        n_warn = sum(1 for f in findings if f.severity is Severity.WARNING)
        # Most telling first: at 80 columns the StatusLine leaves out the segments that do not fit.
        seg: list[Text] = [Text(self._input_name(), "bold")]
        if self.partial is not None:  # still loading: the counts below are the frames read so far
            seg.append(Text(f"loading {self.partial:.0%}", "bold yellow"))
        frames = Text(f"{st.frames:,} frames")
        dropped = getattr(s.rows, "dropped", 0)
        if dropped:  # past --max-rows: counted and analysed, not listed
            frames.append(f" (list: first {len(s.rows):,})", "yellow")
        seg.append(frames)
        if n_err:
            seg.append(Text(f"✗{n_err} {noun(n_err, 'error')}", "bold red"))
        if n_warn:
            seg.append(Text(f"⚠{n_warn} {noun(n_warn, 'warning')}", "yellow"))
        if not st.frames and self.partial is None:
            seg.append(Text("no frames", "yellow"))  # not "✓ no problems": there was nothing to check
        elif not (st.ike or st.esp or st.ah) and self.partial is None:
            seg.append(Text("no IPsec", "yellow"))
        elif not n_err and not n_warn:
            seg.append(Text("✓ no problems", "green"))
        if st.esp:
            dec = Text(f"decrypted {st.decrypted:,}/{st.esp:,}", "green" if st.decrypted else "dim")
            if st.icv_failed:
                dec.append(f" ICV✗ {st.icv_failed:,}", "bold red")
            seg.append(dec)
        seg.append(self._sa_counts(s))
        seg.append(Text(plural(len(s.keys), 'key'), "cyan" if len(s.keys) else "dim"))
        seg.append(Text(f"frames: IKE {st.ike:,} ESP {st.esp:,}" + (f" AH {st.ah:,}" if st.ah else "")
                        + (f" malformed {st.malformed_total:,}" if st.malformed_total else ""), "dim"))
        self._set_status(seg)
        ptable = self.query_one(PacketTable)
        count = self.query_one("#filter-count", Static)
        if self.filter_error:
            count.update(Text("invalid filter (Esc clears)", "bold red"))
        else:
            count.update(Text(f"filter: {len(ptable.view):,}/{ptable.count:,}", "bold magenta")
                         if self.filter.text else "")

    def _sa_counts(self, s: Session) -> Text:
        """``2 IKE/2 CHILD SA`` for a file. Live, every SA ever seen stays in the table, deleted and
        failed ones too, so the count alone read as "4 CHILD SAs up" after a terminate: say how
        many are open (established, or inferred from traffic; not deleted, failed or replaced by a
        rekey) beside how many were seen. "Open", not "up": a dead peer's SA stays open."""
        ike, child = s.table.ike_sas.values(), s.table.child_sas.values()
        if self.runner is None:
            return Text(f"{len(ike)} IKE/{len(child)} CHILD SA")
        up = (SaState.ESTABLISHED, SaState.INFERRED)
        n_ike, n_child = sum(sa.state in up for sa in ike), sum(c.state in up for c in child)
        return Text.assemble((f"{n_ike} IKE/{n_child} CHILD SA open", "" if n_ike or n_child else "yellow"),
                             (f" ({len(ike)}/{len(child)} seen)", "dim"))

    # ---- filtering (worker thread) -----------------------------------------------------------
    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.apply_filter(event.value):
            self._focus(self.query_one(PacketTable))

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        try:
            compile_filter(event.value)
        except FilterError as exc:
            self._show_filter_error(event.input, event.value, exc)
            return
        event.input.remove_class("invalid")
        event.input.tooltip = None
        self._update_status()

    def _show_filter_error(self, inp: Input, text: str, exc: FilterError) -> None:
        """Inline, beside the filter bar: where the filter goes wrong and why (also as a tooltip
        with a caret under the character)."""
        inp.add_class("invalid")
        inp.tooltip = exc.caret(text) + "\n" + exc.reason
        where = f"col {exc.pos + 1}: " if exc.pos is not None else ""
        self.query_one("#filter-count", Static).update(Text(f"✗ {where}{exc.reason} (invalid filter)", "bold red"))

    def apply_filter(self, text: str, focus_frame: int | None = None, *, rerun: bool = False) -> bool:
        """Compile ``text`` and start the filter worker; False (and a notification) when invalid.
        ``rerun``: the filter in force, over rows that changed; the input is left as it is."""
        try:
            compiled = compile_filter(text, findings_index(self.findings))
        except FilterError as exc:
            # The table must not keep the previous filter's rows under an input that says otherwise:
            # show nothing, and say why beside the filter bar (with the column).
            self.notify(str(exc), title="Filter", severity="error")
            self.filter = compile_filter("")
            self.filter_error = str(exc)
            self.query_one(PacketTable).invalid = True
            if self.session is not None:
                self.query_one(PacketTable).set_view(range(0), filtered=True)
            self._update_status()
            self._show_filter_error(self.query_one("#filter", Input), text, exc)
            return False
        self.filter_error = None
        self.filter = compiled
        self.query_one(PacketTable).invalid = False
        inp = self.query_one("#filter", Input)
        if inp.value != text and not rerun:
            with inp.prevent(Input.Changed):
                inp.value = text
        if not rerun:
            inp.remove_class("invalid")
        if self.session is None:
            return True
        ptable = self.query_one(PacketTable)
        current = ptable.current_row
        keep = focus_frame if focus_frame is not None else (current.frame if current else None)
        if compiled.empty:
            ptable.set_view(range(ptable.count), keep_frame=keep, filtered=False)
            self._update_status()
        else:
            self._filter_upto = 0  # until the worker is done, the view is an older filter's
            self._run_filter(compiled, keep, 0, ptable.count)
        return True

    def _extend_filter(self, upto: int) -> None:
        """A loading look brought rows up to ``upto``: filter just the new ones onto the view (or
        all of them, when the filter's first run had not finished)."""
        if self.filter.empty or self.filter_error is not None or self._filter_upto >= upto:
            return
        start = self._filter_upto
        self._run_filter(self.filter, self._current_frame(), start, upto,
                         self.query_one(PacketTable).view if start else ())

    def _current_frame(self) -> int | None:
        row = self.query_one(PacketTable).current_row
        return row.frame if row is not None else None

    @work(thread=True, exclusive=True, group="filter", name="filter packets")
    def _run_filter(self, compiled: Filter, keep: int | None, start: int, stop: int,
                    base: Sequence[int] = ()) -> None:
        """Rows ``start``..``stop`` through ``compiled``; the view is ``base`` and those that match."""
        from ..filtering import select, source_of

        worker = get_current_worker()
        rows = self.query_one(PacketTable).rows
        src = source_of(self.session)
        src.rows = rows  # the table's rows (live: the snapshot it shows)
        out = select(compiled, src, start, stop, cancelled=lambda: worker.is_cancelled)
        if worker.is_cancelled:
            return
        view = view_from_indices(out)
        if start:  # more rows of a loading capture: after the ones already filtered
            view[:0] = base if isinstance(base, array) else view_from_indices(list(base))
        self.call_from_thread(self._filtered, compiled, view, keep, stop, bool(start))

    def _filtered(self, compiled: Filter, view: Sequence[int], keep: int | None, upto: int,
                  extended: bool = False) -> None:
        if compiled is not self.filter:
            return  # a newer filter was typed meanwhile
        self._filter_upto = upto
        if extended:  # new rows while loading: the cursor stays where the user has it now
            keep = self._current_frame()
        self.query_one(PacketTable).set_view(view, keep_frame=keep, filtered=True)
        self._update_status()
        if not view:
            self.notify(f"No frame matches '{compiled.text}'.", title="Filter", severity="warning")

    # ---- messages from widgets ---------------------------------------------------------------
    @on(PacketTable.FrameHighlighted)
    def _frame_highlighted(self, event: PacketTable.FrameHighlighted) -> None:
        self._show_detail(event.frame)

    @on(PacketTable.FrameSelected)
    def _frame_selected(self, event: PacketTable.FrameSelected) -> None:
        detail = self.query_one(PacketDetail)
        if not detail.display:
            detail.display = True
        self._show_detail(event.frame, force=True)
        self._focus(self.query_one("#detail-tree"))

    def _show_detail(self, frame: int | None, force: bool = False) -> None:
        if not self.is_running:  # a live refresh's highlight, handled while quitting
            return
        panel = self.query_one(PacketDetail)
        if self.session is None or not panel.display:
            return
        if frame == self._detail_frame and not force:
            return
        self._detail_frame = frame
        try:
            with self.data_lock:
                detail = self.session.detail(frame) if frame is not None else None
        except IpsecscopeError as exc:
            self.notify(str(exc), title=f"Frame {frame}", severity="error")
            detail = None
        panel.show_detail(detail)

    @on(SaTree.SaHighlighted)
    def _sa_highlighted(self, event: SaTree.SaHighlighted) -> None:
        self.current_ref = event.ref
        if self.session is not None:
            with self.data_lock:
                self.query_one(SaDetail).show(self.session.table, event.ref, self.session.keys)

    @on(SaTree.SaChosen)
    def _sa_chosen(self, event: SaTree.SaChosen) -> None:
        self.current_ref = event.ref
        if self.session is not None:
            with self.data_lock:
                self.query_one(SaDetail).show(self.session.table, event.ref, self.session.keys)
        self.query_one(TabbedContent).active = "sa-detail"

    @on(FindingsView.JumpToEvidence)
    def _jump_to_evidence(self, event: FindingsView.JumpToEvidence) -> None:
        f = event.finding
        if not f.frames:
            self.notify(f"{f.code} has no evidence frames.", severity="warning")
            return
        self._show_packets(f"finding={f.code}", min(f.frames))

    @on(Timeline.JumpToFrame)
    def _jump_to_frame(self, event: Timeline.JumpToFrame) -> None:
        ptable = self.query_one(PacketTable)
        self.query_one(TabbedContent).active = "packets"
        pos = ptable.position_of(event.frame)
        if pos is not None and ptable.rows[ptable.view[pos]].frame == event.frame:
            ptable.cursor = pos
        else:  # hidden by the filter: show everything, cursor on that frame
            self.apply_filter("", focus_frame=event.frame)
        self._focus(ptable)

    @on(StatsView.Follow)
    def _follow(self, event: StatsView.Follow) -> None:
        self._show_packets(event.filter_text, None)

    def _show_packets(self, filter_text: str, frame: int | None) -> None:
        self.query_one(TabbedContent).active = "packets"
        self.apply_filter(filter_text, focus_frame=frame)
        self._focus(self.query_one(PacketTable))

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

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The app's keys are priority bindings (tabs.bindings), offered before a dialog's own: on a
        # dialog they are the dialog's (Esc closes it, / is typed into a path), and the footer
        # behind it shows them disabled (None), as what they are there: they never worked on one.
        return True if action not in MAIN_SCREEN_ACTIONS or len(self.screen_stack) == 1 else None

    def _focus(self, widget: Widget) -> None:
        """Focus ``widget`` before the next key is read. Widget.focus() only queues the change,
        behind the keys already read (the app was busy: loading), and those went to the widget
        that had the focus: the filter typed after `/` ran the packet list's bindings."""
        widget.screen.set_focus(widget)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.HELP))

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self._focus(self.query_one(next(t.focus for t in TABS if t.id == tab)))

    def action_focus_filter(self) -> None:
        if isinstance(self.focused, Input):
            # a / typed into the filter (10.0.0.0/24): the input's. Textual lets an input keep the
            # printable keys it consumes from priority bindings, but does not count "slash" as one.
            raise SkipAction
        self.query_one(TabbedContent).active = "packets"
        self._focus(self.query_one("#filter", Input))

    def action_clear_filter(self) -> None:
        """Esc: clear the filter and always leave the filter input (so `q` quits again)."""
        inp = self.query_one("#filter", Input)
        if self.filter.text or inp.value or inp.has_class("invalid"):
            self.apply_filter("")
        if inp.has_focus or self.query_one(TabbedContent).active == "packets":
            self._focus(self.query_one(PacketTable))

    def action_toggle_tree(self) -> None:
        tree = self.query_one(SaTree)
        tree.display = not tree.display

    def action_toggle_detail(self) -> None:
        panel = self.query_one(PacketDetail)
        panel.display = not panel.display
        if panel.display:
            row = self.query_one(PacketTable).current_row
            self._show_detail(row.frame if row else None, force=True)

    def action_toggle_hex_pane(self) -> None:
        """Narrow terminals: switch the detail pane between the decoded tree and the hex view."""
        self.query_one(PacketDetail).toggle_class("hex-mode")

    def action_toggle_hex(self) -> None:
        panel = self.query_one(PacketDetail)
        panel.show_inner = not panel.show_inner
        self.notify("Hex view: " + ("decrypted inner packet" if panel.show_inner else "frame as captured"))
        self._show_detail(self._detail_frame, force=True)

    def action_toggle_keys(self) -> None:
        self.show_keys = not self.show_keys
        if self.session is not None:
            with self.data_lock:
                self.query_one(SaDetail).show(self.session.table, self.current_ref, self.session.keys,
                                              self.show_keys)
        self.notify("Keys are " + ("SHOWN in SA detail" if self.show_keys else "hidden"),
                    severity="warning" if self.show_keys else "information")

    def action_sa_packets(self) -> None:
        """Filter the packet list to the SA under the tree cursor."""
        ref = self.query_one(SaTree).current_ref or self.current_ref
        if ref is None or self.session is None:
            self.notify("Choose an SA in the tree first.", severity="warning")
            return
        table = self.session.table
        text = ""
        if ref.kind == "child" and ref.key in table.child_sas:
            c = table.child_sas[ref.key]  # type: ignore[index]
            spis = [f"0x{s:08x}" for s in (c.spi_i, c.spi_r) if s is not None]
            text = f"spi={','.join(spis)}" if spis else f"child={c.id}"
        elif ref.kind == "ike" and ref.key in table.ike_sas:
            text = f"spi={table.ike_sas[ref.key].ike_spi_i.hex()}"  # type: ignore[index]
        elif ref.kind == "flow":
            text = f"spi=0x{ref.key[2]:08x}"  # type: ignore[index]
        elif ref.kind == "pair":
            a, b = ref.key  # type: ignore[misc]
            text = f"host={a} host={b}"
        if text:
            self._show_packets(text, None)

    def action_follow(self) -> None:
        """Follow this conversation: the Stats row's, else the selected packet's (its inner 5-tuple,
        or its SA), as a display filter, and the Packets tab showing just those frames."""
        if self.session is None:
            return
        frame = None
        if self.query_one(TabbedContent).active == "stats":
            text = self.query_one(StatsView).follow_filter()
        else:
            row = self.query_one(PacketTable).current_row
            frame = row.frame if row is not None else None
            from ..conversations import follow_filter

            with self.data_lock:
                text = follow_filter(self.session, row) if row is not None else None
        if not text:
            self.notify("Choose a packet or a Stats row to follow first.", severity="warning")
            return
        self._show_packets(text, frame)

    def action_add_keys(self) -> None:
        start = self.path.parent if self.path is not None else Path.cwd()
        self.push_screen(KeyFileScreen(start), self._keys_chosen)

    def _keys_chosen(self, paths: list[str] | None) -> None:
        if not paths:
            return
        try:
            # Parse now, on the UI thread, so a bad file is reported before anything reloads.
            from ..session import Session

            probe = Session()
            added = probe.add_key_files(paths)
        except IpsecscopeError as exc:
            self.notify(str(exc), title="Key file not loaded", severity="error", timeout=10)
            return
        self.key_files.extend(Path(p) for p in paths)
        if self.runner is not None:
            # Live traffic cannot be read again: the keys apply to the packets still to come.
            with self.data_lock:
                self.runner.session.add_key_files(paths)
            self.notify(f"{plural(added, 'key')} added; packets from now on are decrypted")
            return
        self.notify(f"{plural(added, 'key')} added; decrypting and correlating again …")
        if self.path is not None:
            self.load_capture()

    def action_export(self) -> None:
        if self.loading is not None:
            self.notify("Still loading: export when the capture is read (the progress bar at the top).",
                        severity="warning")
            return
        if self.runner is not None:
            self.notify("Export works on a complete capture file: save live traffic with `ipsecscope live -w "
                        "FILE` (or the pipe with tcpdump -w FILE), then open that file.", severity="warning", timeout=8)
            return
        if self.session is None or self.path is None:
            self.notify("Nothing loaded to export yet.", severity="warning")
            return
        with self.data_lock:
            why = unavailable(self.session, self.paths)
        self.push_screen(ExportScreen(self.path, why), self._export_chosen)

    def _export_chosen(self, req: ExportRequest | None) -> None:
        if req is not None:
            self.notify(f"Writing {req.path.name} …")
            self.export_worker(req)

    @work(thread=True, exclusive=True, group="export", name="export")
    def export_worker(self, req: ExportRequest) -> None:
        """Calls the same functions as `ipsecscope decrypt / sas --json / findings --json / keys convert`."""
        session = self.session
        assert session is not None and self.path is not None
        try:
            message = export(req, self.paths, session)
        except IpsecscopeError as exc:
            self.call_from_thread(self.notify, str(exc), title="Export failed", severity="error", timeout=10)
            return
        except OSError as exc:
            self.call_from_thread(self.notify, f"cannot write {req.path}: {exc.strerror or exc}",
                                  title="Export failed", severity="error", timeout=10)
            return
        self.call_from_thread(self.notify, message, title="Exported", timeout=8)

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

def export(req: ExportRequest, captures: Sequence[Path], session: Session) -> str:
    """Write one export; returns the line to show the user. Runs in a worker thread."""
    import json

    from ..export.documents import findings_document, sas_document
    from ..outfile import write_private

    capture = captures[0]
    # Every file goes through write_private: 0600 from its creation, written to a temporary file
    # and renamed into place, never over a capture or key file this session read.
    inputs = [*captures, *session.key_files]
    why = unavailable(session, captures).get(req.kind)
    if why is not None:  # it would write nothing (an empty pcapng, a bare key table header)
        raise ExportError(f"nothing to export: {why}")
    if req.kind in ("pcapng", "jsonl"):
        from ..api import decrypt_capture

        # jobs=1: no worker processes forked from inside a UI thread.
        stats = decrypt_capture(capture, session.keys, out=req.path, fmt=req.kind, jobs=1)
        return (f"{req.path}: {stats.decrypted:,} of {stats.esp:,} ESP packets decrypted"
                + (f", {stats.icv_failed:,} ICV failures" if stats.icv_failed else "")
                + (f", {stats.no_key:,} without keys" if stats.no_key else ""))
    if req.kind == "sas":
        doc = sas_document(session.table, captures)
        write_private(req.path, json.dumps(doc, indent=2) + "\n", inputs=inputs)
        return f"{req.path}: {len(session.table.ike_sas)} IKE SAs, {len(session.table.child_sas)} CHILD SAs"
    if req.kind == "findings":
        findings = findings_of(session)
        write_private(req.path, json.dumps(findings_document(findings, captures), indent=2) + "\n", inputs=inputs)
        return f"{req.path}: {len(findings)} findings"
    from ..keys.formats import dump

    fmt = "json" if req.kind == "keys_json" else req.kind
    # A file the user asked for gets the keys (as `keys convert -o FILE` does); the screen never shows them.
    write_private(req.path, dump(session.keys, fmt, True), inputs=inputs)
    return f"{req.path}: {len(session.keys)} keys written"


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
