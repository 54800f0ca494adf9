"""Keys act in the order they were typed, each on the widget the keys before it left the focus on.

A terminal hands the app whatever was typed since its last read: over a slow link, or while the
app was busy (a capture loading), that is several keys at once, all queued before the first is
acted on. Textual routes each key by the focus *as it is when the key is taken from the queue*,
and most of what a key does happens later, in messages: a widget's Enter posts a message up to
the app (``SaChosen``, ``FrameSelected``, the filter's ``Input.Submitted``), which moves the
focus; ``Widget.focus()`` and a new dialog's first focus are queued behind the keys too. So the
keys read with an Enter went to the widget that had it: `j` after the filter's Enter was a letter
of the filter, `/esp` after Enter on an SA tree row was typed into the filter and then hidden
behind SA detail.

:class:`KeysInOrder` (mixed into the app) routes one key, then holds the keys after it until what
that key started has settled: its message has gone up the chain of widgets from where the key went
to the app and been handled there, and the focus (or the screen) it moved to has handled its own
focus messages. Then the next key is routed, by the focus as it now is. Holding costs a few
message hops after a key that may move the focus (Enter, Esc, Tab, the app's keys); text typed
into an input and cursor keys are routed at once. Keys typed before the app
took the terminal come first, as they were typed (:mod:`ipsecscope.tui.terminal`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from textual import events
from textual.app import App
from textual.driver import Driver
from textual.message_pump import MessagePump
from textual.widget import Widget

from .tabs import MAIN_SCREEN_ACTIONS
from .terminal import typeahead_driver

SETTLE_PASSES = 6  # passes up the chain at most (a pass in which anything moved asks for one more)
SETTLE_LIMIT = 1.0  # seconds a held key waits at most (a widget busy that long: route it anyway)
# Keys that move a cursor or a caret where the focus is (the packet list's j/k/g/G too): they never
# move the focus or open anything, so the keys after them need not wait for what they started (a
# detail pane following the cursor). Each wait is a dozen message hops, ~10 ms on a busy machine:
# a held-down arrow key must not queue up behind them.
IN_PLACE = frozenset({"up", "down", "left", "right", "pageup", "pagedown", "home", "end", "j", "k", "g", "G"})


@dataclass(slots=True)
class _Settle:
    """One key's settle: passes up the widgets from where it went (and from the focus, once it
    moved) to the app, until a pass in which no pump had anything queued."""

    origin: MessagePump
    generation: int
    passes: int = SETTLE_PASSES
    chain: list[MessagePump] = field(default_factory=list)
    dirty: bool = False
    state: tuple[object, object] = (None, None)


class KeysInOrder(App[Any]):
    """The app's key routing; see the module docstring. Subclass it instead of ``App``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held_keys: deque[events.Key] = deque()
        self._settling = False
        self._settle_generation = 0  # bumped when a settle is given up: its late hops are ignored
        self._settle_failsafe: Any = None

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

    def get_driver_class(self) -> type[Driver]:
        # what was typed before the app took the terminal comes first, as typed (tui.terminal)
        return typeahead_driver(super().get_driver_class())

    async def on_event(self, event: events.Event) -> None:
        if not isinstance(event, events.Key) or event.is_forwarded:
            await super().on_event(event)
            return
        if self._settling or self._held_keys:
            self._held_keys.append(event)
            if self._settle_failsafe is None:
                self._settle_failsafe = self.set_timer(SETTLE_LIMIT, self._settle_give_up)
            return
        await self._route_key(event)

    async def _route_key(self, key: events.Key) -> None:
        """Route ``key`` as Textual does, then follow what it started until it has settled."""
        target = self.focused or self.screen  # where App.on_event forwards it
        settle = self._moves_on(key, target)
        self._settling = settle
        await super().on_event(key)
        if settle:
            self._settle_pass(_Settle(target, self._settle_generation))

    def _moves_on(self, key: events.Key, target: Widget) -> bool:
        """Whether ``key`` may move the focus or open a dialog (then the keys after it wait):
        not text typed into an input, nor a cursor key (IN_PLACE), unless the app binds it."""
        if any(b.priority for b in self._bindings.key_to_bindings.get(key.key, ())):
            return True
        if target.check_consume_key(key.key, key.character):
            return False  # a letter into the filter (Textual gives it the key before any binding)
        return key.key not in IN_PLACE

    def _settle_pass(self, settle: _Settle) -> None:
        """One pass: a hop per pump, each after what it had queued -- and so after what it passed
        up to its parent. A Key the focused widget does not take goes up to the app, whose
        bindings act on that widget (Enter on a tree row posts NodeSelected back down to the
        tree): nothing moved in a whole pass, and the focus where it was, is settled."""
        if not self.screen_stack or not self.is_running:  # quitting: nothing more to route to
            return
        chain = list(getattr(settle.origin, "ancestors_with_self", [settle.origin]))
        focused = self.focused or self.screen
        chain[-1:-1] = [p for p in focused.ancestors_with_self if p not in chain]  # the app stays last
        settle.chain, settle.dirty = chain, False
        settle.state = (self.screen, self.focused)
        self._settle_hop(settle)

    def _settle_hop(self, settle: _Settle) -> None:
        while settle.chain:
            pump = settle.chain.pop(0)
            settle.dirty = settle.dirty or pump.message_queue_size > 0
            if pump.call_later(self._settle_hopped, settle, pump):
                return
            # closed (a dialog gone): nothing more can come from it
        if settle.generation != self._settle_generation or not self.screen_stack or not self.is_running:
            return
        settle.passes -= 1
        if (settle.dirty or (self.screen, self.focused) != settle.state) and settle.passes > 0:
            self._settle_pass(settle)
        else:
            self.call_later(self._settle_done, settle.generation)

    def _settle_hopped(self, settle: _Settle, pump: MessagePump) -> None:
        if settle.generation != self._settle_generation:
            return
        settle.dirty = settle.dirty or pump.message_queue_size > 0
        self._settle_hop(settle)

    async def _settle_done(self, generation: int) -> None:
        if generation != self._settle_generation:
            return
        self._settling = False
        await self._route_next()

    async def _settle_give_up(self) -> None:
        """A key has waited SETTLE_LIMIT: something is slow to settle (a widget busy). Route the
        next key held as Textual would have; the settle it starts is followed as usual."""
        self._settle_failsafe = None
        self._settle_generation += 1
        self._settling = False
        await self._route_next()

    async def _route_next(self) -> None:
        """Route the keys held, up to one that must settle, and time the wait of the next."""
        if self._settle_failsafe is not None:
            self._settle_failsafe.stop()
            self._settle_failsafe = None
        while self._held_keys and not self._settling:
            await self._route_key(self._held_keys.popleft())
        if self._held_keys:
            self._settle_failsafe = self.set_timer(SETTLE_LIMIT, self._settle_give_up)
