"""What the app offers, declared once: the tabs (:data:`TABS`) and the other commands
(:data:`COMMANDS`). The key bindings, the help screen, ``compose`` and the command palette are all
generated from these two tables, so a new tab or command is one row here (and its widget or
``action_*`` method), nothing else.

A tab's content is a list of widgets; each widget that shows the session implements
:class:`~ipsecscope.tui.panes.SessionPane` and is handed every new look at it, loading or live.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual import on
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import Input, Static, TabPane

from .widgets.findings import FindingsView
from .widgets.packet_detail import PacketDetail
from .widgets.packet_table import PacketHeader, PacketTable
from .widgets.sa_detail import SaDetail
from .widgets.stats import StatsView
from .widgets.timeline import Timeline


@dataclass(frozen=True, slots=True)
class Tab:
    id: str  # the TabPane id and the argument of the ``tab('…')`` action
    title: str  # tab label, command palette entry
    key: str  # the key that switches to it
    palette_help: str  # what the command palette says about it
    focus: str  # selector focused when the tab is chosen
    content: Callable[[], list[Widget]]  # the tab's widgets (built fresh for each app)


class Pane(TabPane):
    """A tab's pane. Textual makes a pane the active tab when a widget in it gets the focus, a
    message after the focus moved: with two tab keys read at once (5 then 2) the first tab's
    message came last and showed that tab again, its widget without the focus (none had it)."""

    @on(TabPane.Focused)
    def _focus_moved_on(self, event: TabPane.Focused) -> None:
        focused = self.screen.focused
        if focused is None or self not in focused.ancestors:
            event.stop()  # stale: nothing in this pane has the focus any more


def _packets() -> list[Widget]:
    return [
        Horizontal(
            Input(placeholder="display filter: esp.spi == 0x… && icmp.type == 8   ip.addr == 10.2.0.0/24   (? help)",
              id="filter"),
            Static("", id="filter-count"),
            id="filter-bar",
        ),
        PacketHeader(id="packet-header"),
        PacketTable(id="packet-table"),
        PacketDetail(id="packet-detail"),
    ]


TABS: tuple[Tab, ...] = (
    Tab("timeline", "Timeline", "1", "IKE exchanges, rekeys, deletes, ESP activity", "#timeline-events",
        lambda: [Timeline(id="timeline-view")]),
    Tab("packets", "Packets", "2", "The packet list", "#packet-table", _packets),
    Tab("findings", "Findings", "3", "What looks wrong, most severe first", "#findings-table",
        lambda: [FindingsView(id="findings-view")]),
    Tab("sa-detail", "SA detail", "4", "Proposal, selectors, keys, counters of the chosen SA", "#sa-detail-scroll",
        lambda: [VerticalScroll(SaDetail(id="sa-detail-view"), id="sa-detail-scroll")]),
    Tab("stats", "Stats", "5", "IO graph per SA; packets, bytes, rate, loss per CHILD SA and conversation",
        "#stats-convs", lambda: [StatsView(id="stats-view")]),
)


@dataclass(frozen=True, slots=True)
class Command:
    key: str  # Textual key name(s) for the binding
    action: str  # the app's action_* (without the prefix)
    label: str  # footer label
    help: str  # the help screen's line
    palette: str  # command palette title ("" = not in the palette)
    palette_help: str = ""
    show: bool = True  # in the footer
    key_display: str | None = None
    first: bool = False  # listed first in the footer (see bindings)
    priority: bool = True  # run as the key is read, before the keys after it go anywhere (see bindings)


COMMANDS: tuple[Command, ...] = (
    Command("question_mark", "help", "Help", "this help", "Help", "Keys and the packet filter language",
            key_display="?", first=True),
    Command("slash", "focus_filter", "Filter", "filter the packet list (Enter applies, Esc clears)",
            "Filter packets", "Focus the packet filter bar", key_display="/"),
    Command("a", "add_keys", "Add keys", "add key files, then decrypt and correlate again",
            "Add key files", "Load keys and decrypt/correlate again"),
    Command("s", "sa_packets", "SA packets", "show the packets of the SA under the tree cursor",
            "Packets of this SA", "Filter packets to the SA under the tree cursor"),
    Command("f", "follow", "Follow", "follow the selected conversation or SA", "Follow this conversation",
            "Filter packets to the selected packet's or Stats row's conversation"),
    Command("e", "export", "Export", "export: decrypted pcapng / JSON lines, SAs, findings, key tables",
            "Export", "Decrypted pcapng or JSON lines, SAs/findings JSON, key tables"),
    Command("K", "toggle_keys", "Show keys", "show / hide key material in SA detail",
            "Show/hide keys", "Toggle key redaction in SA detail", show=False),
    Command("t", "toggle_tree", "Tree", "hide / show the SA tree (more room on 80 columns)",
            "Toggle SA tree", "Hide or show the left pane", show=False),
    Command("d", "toggle_detail", "Detail", "hide / show the packet detail pane",
            "Toggle packet detail", "Hide or show the packet detail pane", show=False),
    Command("h", "toggle_hex_pane", "Hex", "narrow screens: detail pane shows hex / decoded tree",
            "Hex view / decoded tree", "Narrow screens: switch the packet detail pane", show=False),
    Command("x", "toggle_hex", "Hex wire/inner", "hex view: frame as captured / decrypted inner packet",
            "Hex: wire / decrypted", "Switch the hex view between the frame and the inner packet", show=False),
    Command("escape", "clear_filter", "Clear filter", "", "Clear filter", "Show every frame again", show=False),
    # q alone is a plain binding: on a dialog it is the dialog's (the help closes on q), and its
    # action is Ctrl+C's, which quits from a dialog too (check_action sees only the action).
    Command("q", "quit", "Quit", "quit (Ctrl+C too)", "Quit", "Quit the application", first=True, priority=False),
)

# The actions of the priority keys: the app runs them only while its own screen is on top
# (IpsecscopeApp.check_action); on a dialog the key is the dialog's (Esc, ? and / there are its own).
MAIN_SCREEN_ACTIONS = frozenset({c.action for c in COMMANDS if c.priority} | {"tab"})


def bindings() -> list[Binding]:
    """Every key binding of the app: the commands, and one (hidden) key per tab. The footer lists
    them in this order: the commands marked ``first`` (Help, Quit), then the others as the table
    has them; a focused pane's own keys (a Stats table's ←→) come after all of them, and only
    whole (:class:`~ipsecscope.tui.footer.AppFooter`). A footer wider than the screen loses its
    end, and Quit must never be what goes.

    The keys are priority bindings: the app reads them in the order they were typed, as the
    terminal delivers them. A plain binding runs only once the focused widget has looked at the
    key and passed it up, and by then the keys typed after it (one read from the terminal when
    the app was busy, e.g. loading) had already gone to that same widget: `/esp src=10.0.0.1`
    opened the Export dialog (e) and switched tabs (1, 2) instead of filling the filter. A widget
    that takes text (the filter input) still gets its printable keys: Textual drops a binding
    for a key such a widget consumes."""
    ordered = sorted(COMMANDS, key=lambda c: not c.first)  # stable: the table's order otherwise
    return ([Binding(c.key, c.action, c.label, show=c.show, key_display=c.key_display, priority=c.priority)
             for c in ordered]
            + [Binding(t.key, f"tab('{t.id}')", t.title, show=False, priority=True) for t in TABS]
            # Ctrl-C ends a capture tool (tcpdump, tshark): Textual's own Ctrl-C only tells how to quit
            # (in a toast our literal-text notify showed as "Press [b]ctrl+q[/b]"), so live over SSH
            # it looked stuck. Priority: it quits from the filter input too (Esc leaves that).
            + [Binding("ctrl+c", "quit", "Quit", show=False, priority=True)])


def help_rows() -> list[tuple[str, str]]:
    """The help screen's key table: filter first, then the tabs, the commands, quit last."""
    rows = [(c.key_display or c.key, c.help) for c in COMMANDS if c.help]
    rows.insert(2, (" ".join(t.key for t in TABS), "tabs: " + ", ".join(t.title for t in TABS)))
    rows.insert(len(rows) - 1, ("Tab", "move focus between panes"))
    rows.insert(len(rows) - 1, ("← →", "Stats tables: scroll their columns sideways (the first one stays)"))
    return rows
