"""How the session reaches the panes: a capture file loaded in a worker thread (progress bar,
partial looks while it reads, tui.loading), a live or followed session looked at every second,
and the status line that sums up what is on screen. Every look goes to the panes through one
path, :meth:`SessionFeed._show_session`.

The first screen imports Textual, the widgets and the model's dataclasses only: the session
(numpy, decoders, crypto, state), the rules, the filter and Stats engines and the dissector are
imported where they are first used -- the loader thread, once that screen is drawn; a filter;
the Stats tab; a packet's detail (tests/test_tui_first_screen.py holds this).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import App
from textual.widgets import Input, ProgressBar, Static, TabbedContent
from textual.worker import get_current_worker

from ..errors import CaptureError, CaptureFormatError, IpsecscopeError
from ..model.plural import noun, plural
from ..model.sa import Finding, Severity
from . import panes
from .loading import LoadCancelled, Loading
from .panes import SessionPane, SessionView
from .widgets.packet_detail import PacketDetail
from .widgets.packet_table import PacketHeader, PacketTable
from .widgets.status import StatusLine

if TYPE_CHECKING:
    from ..session import Session


FIRST_PAINT_WAIT = 2.0  # seconds the loader waits at most for the first screen to be drawn
LOAD_POLL = 0.2  # seconds between two moves of the progress bar (and asking for a look when due)


def findings_of(session: Session) -> list[Finding]:
    """The session's findings, most severe first (evaluated once and cached by the session)."""
    return session.findings


class SessionFeed(App[int]):
    """The app's loading, live refresh and status line (a part of IpsecscopeApp)."""

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
            for i, (path, size) in enumerate(zip(self.paths, sizes, strict=True)):
                # files given together are one capture (Session.load: more)
                session.load(path, progress=lambda done, _total: loading.progress(session, done),
                             more=i < len(self.paths) - 1)
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
        if not first:
            # a reload (keys added): the selected frame is the one the detail shows, so its
            # highlight draws nothing new, and the pane kept "ICV not verified: no AH keys loaded"
            # under a row now marked ✓. Draw it again from the new session.
            row = self.query_one(PacketTable).current_row
            self._show_detail(row.frame if row is not None else None, force=True)
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
        header.max_frame, header.addr_w, header.addrs = ptable.max_frame, ptable.addr_w, ptable.addrs
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
            # A followed capture's end (finished) can change the findings without a new frame, and
            # so can the live runner's clock (revision: a dead peer, a datagram given up).
            marker = (session.stats.frames, getattr(runner, "finished", False), getattr(runner, "revision", 0))
            if marker == self._live_frames:
                return
            self._live_frames = marker
            # rows: a snapshot, the deque keeps moving
            findings = findings_of(session)
            kept = getattr(runner, "kept", None)
            if kept is not None:  # a finding that ended stays listed, marked so (live_findings)
                findings = kept.view(findings, session.table.last_ts)
            self._show_session(SessionView(session, list(session.rows), findings, live=True,
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
        elif not (st.ike or st.esp or st.ah or s.table.enc_sas) and self.partial is None:
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
        enc = sum(e.packets for e in s.table.enc_sas.values())  # OpenBSD enc(4) frames (state/enc_sa)
        seg.append(Text(f"frames: IKE {st.ike:,} ESP {st.esp:,}" + (f" AH {st.ah:,}" if st.ah else "")
                        + (f" enc {enc:,}" if enc else "")
                        + (f" malformed {st.malformed_total:,}" if st.malformed_total else ""), "dim"))
        self._set_status(seg)
        ptable = self.query_one(PacketTable)
        count = self.query_one("#filter-count", Static)
        if self.filter_error:
            count.update(Text("invalid filter (Esc clears)", "bold red"))
        else:
            # frames, not rows: an AH+ESP frame is one line (and one line of `packets -Y`)
            count.update(Text(f"filter: {ptable.frame_count(ptable.view):,}/{ptable.frame_count():,}",
                              "bold magenta")
                         if self.filter.text else "")

    def _sa_counts(self, s: Session) -> Text:
        """``2 IKE/2 CHILD SA`` for a file. Live, every SA ever seen stays in the table, deleted and
        failed ones too, so the count alone read as "4 CHILD SAs up" after a terminate: say how
        many are open (established, or inferred from traffic; not deleted, failed or replaced by a
        rekey) beside how many were seen; an IKE SA a dead-peer or peer-restarted finding says is
        gone (with its CHILD SAs) is not open either (analysis.open_sas)."""
        from ..analysis.open_sas import open_counts

        ike, child = s.table.ike_sas.values(), s.table.child_sas.values()
        if self.runner is None:
            enc = len(s.table.enc_sas)  # SAs seen only through OpenBSD's enc(4) (no IKE, no ESP here)
            return Text(f"{len(ike)} IKE/{len(child)} CHILD SA" + (f"/{enc} enc SA" if enc else ""))
        n_ike, n_child = open_counts(s.table, self.findings)
        return Text.assemble((f"{n_ike} IKE/{n_child} CHILD SA open", "" if n_ike or n_child else "yellow"),
                             (f" ({len(ike)}/{len(child)} seen)", "dim"))

