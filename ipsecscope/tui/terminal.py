"""Keys typed before the app took the terminal.

Between the shell starting ``ipsecscope FILE`` and Textual switching the terminal to raw mode lie
~0.3 s of imports (more over a slow link), and a person who knows the tool types on: `/esp\\r`.
Those bytes wait in the kernel's tty queue, handled by the line discipline as the terminal was
then, cooked: ICRNL turned Enter into a newline (`\\n`, which Textual reads as Ctrl+J: the filter
was typed but never applied), and Textual's first read takes them all at once, so an Esc typed
ahead reached the parser glued to the key after it and read as Alt+that key.

:class:`TypeAheadDriver` reads that queue itself just before Textual's driver starts, in raw mode
already (so nothing typed from then on is cooked), and hands the app those keys as what they were
typed as: a newline is Enter, an Esc not starting a key's escape sequence (arrows: ``ESC [``,
``ESC O``) is Esc.
"""

from __future__ import annotations

import os
import re
import select
from typing import Any

from textual import events
from textual._xterm_parser import XTermParser  # the driver's own parser: the keys it would read
from textual.driver import Driver

# An Esc that does not start a CSI/SS3 sequence (an arrow, Home, F1) was typed as Esc.
_LONE_ESC = re.compile("(\x1b)(?![\\[O])")


def typed_ahead_keys(text: str) -> list[events.Key]:
    """The keys of ``text``, typed before the app started and read in one go from a cooked
    terminal: newlines were Enter (ICRNL), a lone Esc was Esc, not an Alt prefix."""
    keys: list[events.Key] = []
    for part in _LONE_ESC.split(text.replace("\n", "\r")):
        if part == "\x1b":
            keys.append(events.Key("escape", "\x1b"))
        elif part:
            parser = XTermParser()
            keys.extend(k for k in parser.feed(part) if isinstance(k, events.Key))
            try:  # the end of the queue ends a sequence cut short
                keys.extend(k for k in parser.feed("") if isinstance(k, events.Key))
            except Exception:  # noqa: BLE001 - Textual's parser ends with EOFError/ParseError
                pass
    return keys


def read_typed_ahead(fd: int, raw: Any) -> tuple[str, list[Any] | None]:
    """Switch ``fd`` to ``raw`` (a function of the termios attributes, the driver's) and read
    what waits in its queue. Returns that text and the attributes before (None: not a terminal)."""
    try:
        import termios
    except ImportError:  # not POSIX: no line discipline to undo
        return "", None
    if not os.isatty(fd):
        return "", None
    try:
        before = termios.tcgetattr(fd)
        # TCSANOW: the queue is kept (TCSAFLUSH would drop what was typed ahead); a line not yet
        # ended with Enter becomes readable once ICANON is off.
        termios.tcsetattr(fd, termios.TCSANOW, raw(termios.tcgetattr(fd)))
    except termios.error:
        return "", None
    data = b""
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace"), before


def typeahead_driver(base: type[Driver]) -> type[Driver]:
    """``base`` (the driver Textual chose) reading what was typed ahead first, where Textual's
    Linux driver is used; any other driver as it is."""
    try:
        from textual.drivers.linux_driver import LinuxDriver
    except ImportError:
        return base
    if not issubclass(base, LinuxDriver):
        return base

    class TypeAheadDriver(base):  # type: ignore[valid-type,misc]
        def _raw(self, attrs: list[Any]) -> list[Any]:
            import termios
            import tty

            attrs[tty.LFLAG] = self._patch_lflag(attrs[tty.LFLAG])
            attrs[tty.IFLAG] = self._patch_iflag(attrs[tty.IFLAG])
            attrs[tty.CC][termios.VMIN] = 1
            return attrs

        def start_application_mode(self) -> None:
            text, before = read_typed_ahead(self.fileno, self._raw)
            # Posted before Textual's input thread starts, so ahead of anything it reads.
            for key in typed_ahead_keys(text):
                self.process_message(key)
            super().start_application_mode()
            if before is not None:  # Textual saved our raw mode as "before": restore the real one
                self.attrs_before = before

    TypeAheadDriver.__name__ = TypeAheadDriver.__qualname__ = f"TypeAhead{base.__name__}"
    return TypeAheadDriver
