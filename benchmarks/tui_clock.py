"""A Textual driver that times the real ``ipsecscope FILE`` start-up (used by bench_tui.py --cli).

Textual loads the driver named by ``TEXTUAL_DRIVER``; this one renders exactly as a terminal
driver does (``is_headless`` is False, so the app turns every screen update into terminal bytes)
but keeps the bytes, and notes the process CPU time (user+sys of every thread since the process
started: interpreter, imports, argument checks, key files, the app, the loader) when:

  first screen   the screen drawn with the progress bar, the status line's "Loading …" and the footer
  key answered   the help screen drawn after a "?" sent right after that first screen
  first tree     the first look at the session drawn: the status line counts frames ("loading N%"
                 beside it while loading; a capture read in one window is loaded by then)

then writes one JSON line to the file named by ``IPSECSCOPE_CLOCK_OUT`` and ends the process.
"""

from __future__ import annotations

import json
import os
import re
import time

from textual import events
from textual.drivers.headless_driver import HeadlessDriver

FRAMES = re.compile(r"\d frames")  # the status line's count, once the app has a look at the session


class ClockDriver(HeadlessDriver):
    @property
    def is_headless(self) -> bool:
        return False  # render to bytes as for a terminal: the paint is part of the cost

    def start_application_mode(self) -> None:
        self._marks: dict[str, tuple[float, float]] = {}
        self._seen: set[str] = set()  # the progress bar, the footer, the status line's "Loading …"
        self._t0 = float(os.environ.get("IPSECSCOPE_CLOCK_T0", "0")) or time.time()
        self._waits = os.environ.get("IPSECSCOPE_CLOCK_UNTIL", "first_tree")
        super().start_application_mode()

    def _mark(self, what: str) -> None:
        if what not in self._marks:
            self._marks[what] = (time.time() - self._t0, time.process_time())

    def _key(self, key: str, char: str | None) -> None:
        event = events.Key(key, char)
        event.set_sender(self._app)  # as Textual's own Pilot sends keys
        self.send_message(event)

    def write(self, data: str) -> None:
        self._seen |= {m for m in ("━", "Help", "Loading ") if m in data}
        if "first_screen" not in self._marks and len(self._seen) == 3:
            self._mark("first_screen")
            self._key("question_mark", "?")
        elif "first_screen" in self._marks and "ipsecscope — help" in data:
            self._mark("key_answered")
            self._key("escape", None)
        elif "key_answered" in self._marks and FRAMES.search(data):
            self._mark("first_tree")
        if self._waits in self._marks:
            with open(os.environ["IPSECSCOPE_CLOCK_OUT"], "w") as out:
                out.write(json.dumps({k: {"wall": w, "cpu": c} for k, (w, c) in self._marks.items()}) + "\n")
            os._exit(0)
