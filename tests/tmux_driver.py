"""Drive a real terminal program in tmux: start it, type, and read the screen as a person sees it.

Used by tests/test_tui_tmux.py; also handy by hand::

    python3 tests/tmux_driver.py 'ipsecscope samples/healthy-gcm/capture.pcapng'
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable


def have_tmux() -> bool:
    return shutil.which("tmux") is not None


class Tmux:
    """One detached tmux session running ``command`` in a ``width``×``height`` terminal."""

    def __init__(self, command: str, width: int = 120, height: int = 40, cwd: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = f"ipsecscope-test-{uuid.uuid4().hex[:8]}"
        # A tmux server of its own, on a socket in a directory of its own, without ~/.tmux.conf.
        # On the shared default server every session started after the server inherits the
        # environment of whichever process started it (the other xdist worker, another
        # checkout's suite, a person's tmux), a session left by a killed run stays, and one
        # test's kill-session of the server's last session makes the server exit while another
        # test may be starting its session on it. (tmux leaves a socket file behind even after
        # kill-server: the directory is removed.)
        self.dir = tempfile.mkdtemp(prefix="ipss-tmux-")
        self.tmux = ("tmux", "-S", os.path.join(self.dir, "s"), "-f", "/dev/null")
        self.command = command
        self.width, self.height = width, height
        self.cwd = cwd
        self.env = env or {}

    def __enter__(self) -> Tmux:
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        # Keep the pane open after the program exits so a crash stays readable.
        # COLUMNS/LINES leak in from the test process (pytest plugins set them to 80×24) and
        # would override the pane's real size for Textual and rich.
        cmd = (f"env -u COLUMNS -u LINES TERM=xterm-256color {exports} {self.command}; "
               "echo '[exited '$?']'; sleep 600")
        subprocess.run(
            [*self.tmux, "new-session", "-d", "-s", self.name, "-x", str(self.width), "-y", str(self.height),
             *(["-c", self.cwd] if self.cwd else []), cmd],
            check=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def send(self, *keys: str, literal: bool = False) -> None:
        """tmux key names ("Down", "Enter", "Escape", "C-p") or, with ``literal``, text to type."""
        args = [*self.tmux, "send-keys", "-t", self.name]
        if literal:
            args.append("-l")
        subprocess.run([*args, *keys], check=True)
        if not literal and keys and keys[-1] == "Escape":
            # A bare ESC is told apart from the start of an escape sequence (Alt+key) only by
            # the pause after it; without one, the next key would arrive as Alt+key.
            time.sleep(0.3)

    def type(self, text: str) -> None:
        self.send(text, literal=True)

    def screen(self) -> str:
        return subprocess.run([*self.tmux, "capture-pane", "-p", "-t", self.name], check=True,
                              capture_output=True, text=True).stdout

    def cursor(self) -> tuple[int, int]:
        """The terminal's cursor (column, line). Textual puts it where a focused input takes text
        (hidden: the input draws its own): the line it is on is the input that has the focus."""
        out = subprocess.run([*self.tmux, "display-message", "-p", "-t", self.name, "#{cursor_x} #{cursor_y}"],
                             check=True, capture_output=True, text=True).stdout.split()
        return int(out[0]), int(out[1])

    def wait_for_input(self, text: str, timeout: float = 20.0) -> str:
        """Poll until the input on the line showing ``text`` (its placeholder, say) has the focus:
        keys typed before that go to whatever had it. Returns that screen."""
        def focused(screen: str) -> bool:
            lines = screen.splitlines()
            y = self.cursor()[1]
            return y < len(lines) and text in lines[y]

        return self.wait_for(focused, timeout)

    def wait_for(self, predicate: Callable[[str], bool] | str, timeout: float = 20.0) -> str:
        """Poll the screen until ``predicate`` (or the text) holds; returns that screen."""
        check = (lambda s: predicate in s) if isinstance(predicate, str) else predicate
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if check(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {predicate!r}; the screen was:\n{screen}")


if __name__ == "__main__":  # pragma: no cover - manual use
    with Tmux(" ".join(sys.argv[1:]) or "ipsecscope --help", cwd=os.getcwd()) as t:
        time.sleep(3)
        print(t.screen())
