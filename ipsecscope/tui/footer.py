"""The footer: the app's commands always, a focused pane's own keys only where they fit.

Textual's footer lists the focused widget's bindings ahead of the app's, and a footer wider than
the screen loses its end. At 80 columns the app's commands (``? Help  q Quit … e Export``) take
nearly all of it, so a Stats table's own ``←→ Columns`` pushed Export (and on the IO graph part of
Follow) off the screen. Here the app's commands come first, in :func:`~ipsecscope.tui.tabs.bindings`
order, and a pane's keys after them, shown only whole: one that would be cut is hidden (the pane
says the same on screen: a Stats table's header arrows ◂ ▸; the help screen lists ←→).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey  # (not re-exported by textual.widgets)

from .tabs import COMMANDS

_APP_ACTIONS = frozenset(c.action for c in COMMANDS)
_OWN = "-pane-key"  # a key of the focused pane, not an app command


class AppFooter(Footer):
    def compose(self) -> ComposeResult:
        items: list[Widget] = list(super().compose())
        palette = [w for w in items if w.has_class("-command-palette")]
        own = [w for w in items if w not in palette and not (isinstance(w, FooterKey) and w.action in _APP_ACTIONS)]
        for w in own:
            w.add_class(_OWN)
        yield from [w for w in items if w not in palette and w not in own] + own + palette
        if own:
            self.call_after_refresh(self._hide_cut_keys)

    def _hide_cut_keys(self) -> None:
        """Hide the pane keys that do not end before the palette key (or the footer's edge)."""
        palette = [k for k in self.query(FooterKey) if k.has_class("-command-palette")]
        right = palette[0].region.x if palette else self.region.right
        for w in self.query(f".{_OWN}"):
            if w.display and w.region.right > right:
                w.display = False

    def on_resize(self) -> None:
        if self.query(f".{_OWN}"):  # wider again: the hidden keys may fit now
            self.refresh(recompose=True)
