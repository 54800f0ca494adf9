"""Loading a capture file while the app shows it filling in.

The loader (a worker thread) owns the session and holds :class:`LoadLock` while it reads. Between
two windows of the file the session is consistent (``Session.load``'s progress callback is only
called there: stats, tracker and rows agree on every frame so far), and :meth:`Loading.checkpoint`
runs there:

* a UI action waiting for the lock (an SA's detail, a packet's detail) gets it — it waits at most
  one window, never the whole load;
* when the app's timer asked for a look (:attr:`Loading.want`), the loader evaluates the findings
  so far (its own thread: the UI stays free), releases the lock and hands a
  :class:`~ipsecscope.tui.panes.SessionView` marked ``partial`` to the UI thread, waiting while
  the panes draw it — that is the snapshot; then it reads on.

A look costs what the panes take to update and the screen to redraw, plus the rules' evaluation:
the next one is due after :data:`REFRESH_MIN` seconds or :data:`REFRESH_FACTOR` times what the last
one cost, whichever is longer, and only once the loader has spent :data:`REFRESH_CPU` seconds of
CPU reading since (on a busy machine a second of wall time is little work: looks every wall second
would cost a larger share there). The findings, the dearest part on a capture of many SAs, are
evaluated at most every :data:`FINDINGS_MIN` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..model.sa import Finding
from .panes import SessionView

if TYPE_CHECKING:
    from ..session import Session

REFRESH_MIN = 1.0  # seconds between two looks at a loading session (live mode refreshes as often)
REFRESH_FACTOR = 9.0  # the next look waits this many times what the last one cost
REFRESH_CPU = 1.0  # seconds of the loader's CPU time between two looks
FINDINGS_MIN = 2.0  # seconds between two evaluations of the rules while loading


class LoadCancelled(Exception):
    """The load was superseded (keys added: it starts again) or the app is quitting."""


class LoadLock:
    """The session's lock while a file loads: a re-entrant lock the loader holds between
    consistent points and hands over at each one to whoever is waiting (Python's locks are not
    fair: released and taken again at once, a waiting UI thread would starve).

    Readers use it as a context manager (``with app.data_lock:``); the loader uses
    :meth:`acquire`/:meth:`release` and :meth:`hand_over`.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cv = threading.Condition(threading.Lock())
        self._waiting = 0

    def __enter__(self) -> LoadLock:
        with self._cv:
            self._waiting += 1
        self._lock.acquire()
        with self._cv:
            self._waiting -= 1
            self._cv.notify_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def acquire(self) -> None:
        self._lock.acquire()

    def release(self) -> None:
        self._lock.release()

    def hand_over(self) -> None:
        """Loader, holding the lock at a consistent point: let every waiting reader in first."""
        if not self._waiting:  # a reader arriving just now waits one more window
            return
        self._lock.release()
        try:
            with self._cv:
                while self._waiting:
                    self._cv.wait()
        finally:
            self._lock.acquire()  # a reader still inside: wait until it is done


class Hold:
    """Test hook: the loader stops at the end of each of its first ``windows`` windows, once a
    look at the session is on screen, until the test calls :meth:`release`; with ``before``, also
    once before it reads anything (the first screen is drawn by then). No timing involved."""

    def __init__(self, windows: int = 1, *, before: bool = False) -> None:
        self.windows = windows
        self.before = before
        self.stopped = 0  # stops reached so far
        self._released = 0
        self._cv = threading.Condition()

    def stop(self, cancelled: Callable[[], bool]) -> None:
        """The loader (not holding the session's lock): wait here until released (or the app quits:
        a test that fails while the loader waits must not leave its thread waiting forever)."""
        with self._cv:
            self.stopped += 1
            self._cv.notify_all()
            while self._released < self.stopped:
                self._cv.wait(0.5)
                if cancelled():
                    raise LoadCancelled

    def wait_stopped(self, n: int = 1) -> None:
        """The test (in a thread, not the app's): until the loader has reached stop ``n``."""
        with self._cv:
            while self.stopped < n:
                self._cv.wait()

    def release(self) -> None:
        with self._cv:
            self._released += 1
            self._cv.notify_all()


class Loading:
    """One load's shared state: the lock, how far it got, and the app's request for a look."""

    def __init__(self, show: Callable[[SessionView], None], *, cancelled: Callable[[], bool] = lambda: False,
                 hold: Hold | None = None, incremental: bool = True) -> None:
        self.lock = LoadLock()
        self.show = show  # runs a view on the UI thread and returns once it is drawn (call_from_thread)
        self.cancelled = cancelled
        self.hold = hold
        self.incremental = incremental
        self.done = 0  # bytes read of all the files (the timer moves the progress bar from these)
        self.total = 0
        self.base = 0  # bytes of the files before the one being read
        # The app's timer sets it when a look is due; the first window's end gets one at once.
        self.want = threading.Event()
        self.want.set()
        self.next_due = 0.0  # time.monotonic() before which the timer asks for no look
        self.cpu_due = 0.0  # the loader's time.thread_time() before which it takes no look
        self.looks = 0
        self.look_cost = 0.0  # seconds the looks took (loader side: rules + waiting for the draw)
        self._findings: list[Finding] = []
        self._findings_due = 0.0

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 0.0

    def progress(self, session: Session, done: int) -> None:
        """The loader thread at a consistent point (``Session.load``'s progress callback)."""
        self.done = self.base + done
        if self.cancelled():
            raise LoadCancelled
        self.lock.hand_over()
        if not session.stats.frames:
            return
        hold = self.hold
        if hold is not None and hold.stopped >= hold.windows + hold.before:
            hold = None
        if (self.incremental and self.want.is_set() and time.thread_time() >= self.cpu_due) or hold is not None:
            self._look(session)
        if hold is not None:
            self.lock.release()
            try:
                hold.stop(self.cancelled)
            finally:
                self.lock.acquire()

    def _look(self, session: Session) -> None:
        start = time.monotonic()
        self.want.clear()
        if start >= self._findings_due:
            f0 = time.monotonic()
            self._findings = session.findings  # the rules over the frames so far (this thread)
            self._findings_due = time.monotonic() + max(FINDINGS_MIN, REFRESH_FACTOR * (time.monotonic() - f0))
        view = SessionView(session, session.rows, self._findings, lock=self.lock, partial=self.fraction,
                           upto=len(session.rows))
        self.lock.release()
        try:
            self.show(view)
        finally:
            self.lock.acquire()
        cost = time.monotonic() - start
        self.looks += 1
        self.look_cost += cost
        self.next_due = time.monotonic() + max(REFRESH_MIN, REFRESH_FACTOR * cost)
        self.cpu_due = time.thread_time() + REFRESH_CPU

    def due(self, now: float) -> bool:
        """The app's timer: is it time to ask for another look?"""
        return self.incremental and not self.want.is_set() and now >= self.next_due
