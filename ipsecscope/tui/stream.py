"""Captures that are still arriving — standard input, a pipe, or a file read with ``--follow`` —
fed to a :class:`~ipsecscope.session.Session` from a thread. The app watches it as it watches a
live capture (``.session`` under ``.lock``, ``.error``, ``.start()``/``.stop()``): the rows are a
ring of the last ``max_rows`` and the recent frames' bytes are kept for the detail pane, since a
pipe cannot be read again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from ..capture import CaptureReader, open_capture, renumbered
from ..errors import IpsecscopeError
from ..live_findings import KeptFindings
from ..session import Session

DEFAULT_MAX_ROWS = 200_000


class CaptureFollower:
    def __init__(self, paths: Sequence[str | Path], key_files: Sequence[str | Path] = (), *,
                 follow: bool = False, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        self.paths = [str(p) for p in paths]
        self.session = Session(max_rows=max_rows)
        self.key_errors: list[str] = []
        for key_file in key_files:
            try:  # a bad key file is reported and left out, as when a file is loaded
                self.session.add_key_files([key_file])
            except (IpsecscopeError, OSError) as exc:
                self.key_errors.append(str(exc))
        self.follow = follow
        self.lock = threading.RLock()
        # --follow grows like a live capture: a finding that ended stays listed (live_findings). Not
        # for a file or a pipe read to its end: their findings are the whole capture's, as `findings`.
        self.kept = KeptFindings() if follow else None
        self.error: BaseException | None = None
        self.finished = False  # every input has ended (never, while following, until stop())
        self._stop = threading.Event()
        self._first: CaptureReader | None = None
        self._thread = threading.Thread(target=self._run, name="capture reader", daemon=True)

    def open(self) -> None:
        """Open the first capture here, before any screen is drawn: a file that is not a capture
        (or a pipe whose writer never connected) is one line on stderr, as for a file."""
        self._first = self._open(0)

    def _open(self, i: int) -> CaptureReader:
        last = i == len(self.paths) - 1
        return open_capture(self.paths[i], self._stop if self.follow and last else None)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        session = self.session
        try:
            for i in range(len(self.paths)):
                first, self._first = self._first, None
                with first or self._open(i) as reader:
                    secrets = reader.secrets
                    with self.lock:
                        base = session.begin_file(self.paths[i])  # numbered after the files before
                    for raw in renumbered(reader, base) if base else reader:
                        with self.lock:
                            session.take_secrets(secrets)
                            session.feed(raw)
                        if self._stop.is_set():
                            break
                    with self.lock:  # the files are one capture: only the last ends it (Session.load)
                        session.end_of_input(reader.truncated, more=i < len(self.paths) - 1
                                             and not self._stop.is_set())
                if self._stop.is_set():
                    break
        except (IpsecscopeError, OSError, MemoryError) as exc:
            self.error = exc
        finally:
            with self.lock:
                session.finish()
                self.finished = True
