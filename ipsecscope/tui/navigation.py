"""Navigation: what the widgets' messages (``FrameSelected``, ``SaChosen``, ``JumpToEvidence``,
``JumpToFrame``, ``Follow``) and the app's keys (tabs, filter, toggles, follow, SA packets) do.
Which keys reach these actions, and in what order, is tui.routing's."""

from __future__ import annotations

from textual import on
from textual.actions import SkipAction
from textual.app import App
from textual.widgets import Input, TabbedContent

from ..errors import IpsecscopeError
from ..model.sa import SaTable
from .screens.modals import HelpScreen
from .tabs import TABS
from .widgets.findings import FindingsView
from .widgets.packet_detail import PacketDetail
from .widgets.packet_table import PacketTable
from .widgets.sa_detail import SaDetail
from .widgets.sa_tree import SaRef, SaTree, pair_history
from .widgets.stats import StatsView
from .widgets.timeline import Timeline


class Navigation(App[int]):
    """The app's navigation (a part of IpsecscopeApp)."""

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
        text = sa_packets_filter(self.session.table, ref)
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


def sa_packets_filter(table: SaTable, ref: SaRef) -> str:
    """The display filter `s` puts in the filter bar for a tree node, in tshark's syntax as `f` and
    the Stats tab write theirs: it wrote the short forms ("spi=0x…", "host=A host=B"), which the bar
    reads but tshark -Y does not, so the filter could not be taken on to Wireshark. "" when the node
    is gone."""
    from ..conversations import sa_filter

    if ref.kind == "child" and ref.key in table.child_sas:
        c = table.child_sas[ref.key]
        by_proto: dict[str, list[int]] = {}
        for proto, i, r in c.spi_pairs():  # every protocol's SPIs (an AH+ESP bundle: both)
            by_proto.setdefault(proto, []).extend(s for s in (i, r) if s is not None)
        parts = [sa_filter(spis, proto) for proto, spis in by_proto.items() if spis]
        return " || ".join(parts) if parts else f"ipsecscope.child == {c.id}"
    if ref.kind == "ike" and ref.key in table.ike_sas:
        # every message of an IKE SA carries its initiator's SPI (RFC 7296 §3.1, RFC 2408 §3.1)
        return f"isakmp.ispi == {table.ike_sas[ref.key].ike_spi_i.hex()}"
    if ref.kind == "flow":
        _src, _dst, spi, proto = ref.key
        return sa_filter([spi], proto)
    if ref.kind == "enc":
        return sa_filter([ref.key[0]], enc=True)
    if ref.kind == "pair":
        a, b = ref.key
        # and the addresses its SAs moved to (MOBIKE, RFC 4555 §3.5): the same tunnel's packets
        pairs = [f"{'ipv6' if ':' in x else 'ip'}.addr == {x} && {'ipv6' if ':' in y else 'ip'}.addr == {y}"
                 for x, y in pair_history(table, a, b)]
        return pairs[0] if len(pairs) == 1 else " || ".join(f"({p})" for p in pairs)
    return ""
