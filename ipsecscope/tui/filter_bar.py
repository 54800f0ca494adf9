"""The packet filter bar: the display filter typed, checked as it is typed (the error beside the
bar, with the column), and run in a worker thread over the rows; while a file loads, only the rows
that came since the last look are filtered onto the view."""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from rich.text import Text
from textual import on, work
from textual.app import App
from textual.widgets import Input, Static
from textual.worker import get_current_worker

from ..model.filter import Filter, FilterError, compile_filter, findings_index
from .widgets.packet_table import PacketTable, view_from_indices


class FilterBar(App[int]):
    """The app's packet filter (a part of IpsecscopeApp)."""

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

