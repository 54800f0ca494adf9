"""Left pane: peer pairs → IKE SAs → CHILD SAs, coloured by state."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.geometry import Size
from textual.message import Message
from textual.widgets import Tree

from ...model.idtext import short_addr
from ...model.sa import ChildSa, EncSa, EspFlow, IkeSa, NatRebinding, SaState, SaTable
from ..panes import SessionView

STATE_STYLE = {
    SaState.INITIATING: "yellow",
    SaState.ESTABLISHED: "bold green",
    SaState.REKEYED: "blue",
    SaState.DELETED: "dim",
    SaState.FAILED: "bold red",
    SaState.INFERRED: "magenta",
}


@dataclass(frozen=True, slots=True)
class SaRef:
    """What a tree node stands for: ("pair", "a⇄b"), ("ike", IkeSa.key), ("child", id), ("flow", key)."""

    kind: str
    key: object


def pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def orphan_pair(child: ChildSa, table: SaTable) -> tuple[str, str] | None:
    """The peer pair a CHILD SA with no IKE SA in the table is listed under (an inferred one:
    its peers, else its first flow's ends), as :func:`pair_key`; None when it has its IKE SA."""
    if child.ike_sa is not None and child.ike_sa in table.ike_sas:
        return None
    a, b = child.initiator, child.responder
    if not (a and b):
        fl = child.flows(table)
        a, b = (fl[0].src, fl[0].dst) if fl else ("?", "?")
    return pair_key(a, b)


def pair_sas(table: SaTable, a: str, b: str) -> list[IkeSa]:
    """The IKE SAs the tree lists under the peer pair ``a ⇄ b`` (its addresses at IKE_SA_INIT)."""
    return [s for s in table.ike_sas.values() if pair_key(s.initiator, s.responder) == pair_key(a, b)]


def pair_moves(table: SaTable, a: str, b: str) -> list[NatRebinding]:
    """The address changes of the pair's IKE SAs, in order: a MOBIKE UPDATE_SA_ADDRESSES (RFC 4555
    §3.5) or a NAT giving a peer a new address (RFC 7296 §2.23). The SAs keep their SPIs, so the
    pair is the same tunnel at its new addresses (a port change alone moves no address)."""
    moves = [rb for s in pair_sas(table, a, b) for rb in s.nat_rebindings if rb.old_addr != rb.new_addr]
    return sorted(moves, key=lambda rb: rb.ts)


def pair_history(table: SaTable, a: str, b: str) -> list[tuple[str, str]]:
    """The address pairs the pair's SAs used, in order: ``(a, b)``, then each after a move
    (RFC 4555 §3.5 / RFC 7296 §2.23) of the mover's end; one pair when nothing moved."""
    out = [(a, b)]
    for s in pair_sas(table, a, b):
        cur = {"initiator": s.initiator, "responder": s.responder}
        for rb in sorted((rb for rb in s.nat_rebindings if rb.old_addr != rb.new_addr), key=lambda rb: rb.ts):
            cur[rb.peer] = rb.new_addr
            step = (cur["initiator"], cur["responder"])
            if step not in out and step[::-1] not in out:
                out.append(step)
    return out


def pair_flows(table: SaTable, a: str, b: str) -> list[EspFlow]:
    """The ESP/AH flows of the peer pair ``a ⇄ b``: every flow of its IKE SAs' CHILD SAs (after a
    move those run between the new addresses: CHILD_SA #2 of tests/data/mobike, 198.18.0.3 ⇄ .2,
    is the same tunnel), its inferred CHILD SAs', and flows with no SA between an address each
    end has had (RFC 4555 §3.5: the SAs follow the IKE SA's addresses)."""
    sas = pair_sas(table, a, b)
    children = {cid for s in sas for cid in s.children}
    children |= {c.id for c in table.child_sas.values() if orphan_pair(c, table) == pair_key(a, b)}
    ends = [({s.initiator} | {rb.new_addr for rb in s.nat_rebindings if rb.peer == "initiator"},
             {s.responder} | {rb.new_addr for rb in s.nat_rebindings if rb.peer == "responder"}) for s in sas]
    ends.append(({a}, {b}))

    def between(f: EspFlow) -> bool:
        return any((f.src in i and f.dst in r) or (f.src in r and f.dst in i) for i, r in ends)

    return [f for f in table.flows.values()
            if f.child_sa in children or ((f.child_sa is None or f.child_sa not in table.child_sas) and between(f))]


def child_rate(child: ChildSa, table: SaTable) -> float | None:
    """ESP packets per second over the SA's active time (all its flows together)."""
    flows = child.flows(table)
    return flows_rate(flows)


def flows_rate(flows: list[EspFlow]) -> float | None:
    pkts = sum(f.packets for f in flows)
    firsts = [f.first_ts for f in flows if f.first_ts is not None]
    lasts = [f.last_ts for f in flows if f.last_ts is not None]
    if not pkts or not firsts:
        return None
    span = max(lasts) - min(firsts)
    return pkts / span if span > 0 else float(pkts)


def fmt_rate(rate: float | None) -> str:
    if rate is None:
        return "idle"
    if rate >= 1000:
        return f"{rate / 1000:.1f}k pkt/s"
    return f"{rate:.1f} pkt/s" if rate < 10 else f"{rate:.0f} pkt/s"


def spi_digits(spi: int | None) -> str:
    """An SPI as its 8 hex digits alone, "?" when not known: the tree and the timeline's lanes are
    narrow and say "ESP" beside it (every other view writes model.idtext.spi_text, 0x…)."""
    return f"{spi:08x}" if spi is not None else "?"


# Cells before a label in the tree: "▼ " for a pair, "├ ▼ " for an IKE SA, "│ └ " for its CHILD SAs,
# "├ " for a CHILD SA or flow under the pair itself (no IKE SA seen).
IKE_INDENT, CHILD_INDENT, ORPHAN_INDENT = 4, 4, 2
MAX_SHARE = 0.4  # of the screen the tree may take for whole SPIs and state words (SaTree._room)
PROPOSAL_MIN = 8  # cells of a proposal worth showing cut ("aes256g…"); fewer: left out, SA detail has it


def fit(text: Text, room: int | None) -> Text:
    """``text`` in ``room`` cells: whole, or cut with "…" as its last cell (the tree's pane clips
    at its edge without one, and 'aes25' read as a proposal of its own)."""
    if room is None or text.cell_len <= room:
        return text
    cut = text.copy()
    cut.truncate(max(room, 1), overflow="ellipsis")
    return cut


def _best(variants: list[Text], room: int | None, optional: Text | None = None) -> Text:
    """The first of ``variants`` (fullest first; the last is the label's essential part) that fits
    ``room``; ``optional`` (the same label with a trailing part that may be cut, e.g. a proposal)
    comes next, cut with "…" if at least :data:`PROPOSAL_MIN` cells of that part are left; else the
    essential part, cut with "…" if even that is too long."""
    for v in variants[:-1]:
        if room is None or v.cell_len <= room:
            return v
    essential = variants[-1]
    if optional is not None and room is not None and room - essential.cell_len - 1 >= PROPOSAL_MIN:
        return fit(optional, room)
    return fit(essential, room)


def ike_essential(sa: IkeSa) -> Text:
    """What an IKE SA's tree label never leaves out: state colour, version, SPIi and state word."""
    text = Text()
    text.append("●", STATE_STYLE.get(sa.state, ""))
    text.append(f" IKEv{sa.version} ")
    text.append(f"{sa.ike_spi_i.hex()[:8]}…", "cyan")
    # the state as the evidence says it: "dead" when a finding says its peer is gone (IkeSa.peer_gone),
    # "incomplete" when an IKEv1 phase 1 stopped though its next message was due (IkeSa.stall)
    word = sa.state_word
    text.append(f" {word}", "bold red" if word in ("dead", "incomplete") else STATE_STYLE.get(sa.state, ""))
    return text


def ike_label(sa: IkeSa, room: int | None = None) -> Text:
    """The IKE SA in a wide tree, in at most ``room`` cells: the state before the proposal, so a
    narrow pane cuts the proposal (with "…"); an unknown proposal's "(no proposal)" goes rather than
    be cut ('deleted (no p' at 120 columns)."""
    essential = ike_essential(sa)
    full = essential.copy()
    full.append(f" {sa.proposal}" if sa.proposal else " (no proposal)", "" if sa.proposal else "dim")
    return _best([full, essential], room, full if sa.proposal else None)


def child_essential(child: ChildSa) -> Text:
    """What a CHILD SA's tree label never leaves out: number, protocol, both SPIs (what a reader
    matches with tshark and ``ip xfrm state``) and the state word ("inferred": no IKE seen)."""
    text = Text()
    text.append("●", STATE_STYLE.get(child.state, ""))
    text.append(f" #{child.id} {child.protocols_text()} ")
    text.append(f"{spi_digits(child.spi_i)}/{spi_digits(child.spi_r)}", "cyan")
    text.append(f" {child.state.value}", STATE_STYLE.get(child.state, ""))
    return text


def child_label(child: ChildSa, table: SaTable, room: int | None = None) -> Text:
    """The CHILD SA in a wide tree, in at most ``room`` cells: its rate goes first, then its
    proposal (cut with "…" while enough of it is left; the SA detail has both)."""
    essential = child_essential(child)
    with_proposal = essential.copy()
    if child.proposal:
        with_proposal.append(f" {child.proposal}")
    full = essential.copy()
    full.append(f" {fmt_rate(child_rate(child, table))}", "dim")
    if child.proposal:
        full.append(f" {child.proposal}")
    return _best([full, with_proposal, essential], room, with_proposal if child.proposal else None)


def short_pair(a: str, b: str, width: int = 19, arrow: str = "⇄") -> str:
    """``a ⇄ b`` in at most ``width`` cells for a narrow tree: ``b`` loses the groups it shares
    with ``a`` ("198.18.0.1 ⇄ .2", "2001:db8::1 ⇄ …::2"); if that is still too long, an address is
    cut in its middle (model.idtext.short_addr: "2003…6012::2 ⇄ …::4"), keeping its first group
    and its end, the part that tells hosts of one network apart."""
    full = f"{a} {arrow} {b}"
    if len(full) <= width:
        return full
    sep = ":" if ":" in a else "."
    ga, gb = a.split(sep), b.split(sep)
    same = 0
    while same < min(len(ga), len(gb)) - 1 and ga[same] == gb[same]:
        same += 1
    tail = b
    if same:
        tail = sep + sep.join(gb[same:])
        if sep == ":":
            # '::2' alone is an address of its own (and ':2' no address): '…::2' says 'ends in'.
            tail = "…" + (":" if ga[same - 1] == "" else "") + tail
    room = width - 3  # " ⇄ " between them
    if len(a) + len(tail) > room and len(tail) > room // 2:
        # both long: the second side gets half the room (its end, the host's part, stays)
        tail = _drop_group(tail, sep) if tail.startswith("…") else short_addr(tail, room // 2)
        while len(tail) > room // 2 and tail.startswith("…") and len(tail) > 4:
            tail = _drop_group(tail, sep)
    if len(a) + len(tail) > room:
        # cut in the middle as every view cuts an address: its first group and its end stay
        a = short_addr(a, max(room - len(tail), 4))
    return f"{a} {arrow} {tail}"


def _drop_group(text: str, sep: str) -> str:
    """``text`` without its first group (or, with none left to drop, its first character), as "…rest"."""
    body = text.removeprefix("…")
    cut = body.find(sep, 1)
    return "…" + (body[cut + 1:] if 0 < cut < len(body) - 1 else body[1:])


def compact_ike_label(sa: IkeSa) -> Text:
    """The IKE SA in a narrow tree: its state colour, version and SPIi (SA detail has the rest).
    No room for the state word here (80 columns): a dead peer's SA (IkeSa.peer_gone) gets a red ✗
    for its dot, since its recorded state ("established", a green dot) is what the evidence denies."""
    text = Text()
    if sa.peer_gone is not None:
        text.append("✗", "bold red")
    else:
        text.append("●", STATE_STYLE.get(sa.state, ""))
    text.append(f" v{sa.version} ")
    text.append(sa.ike_spi_i.hex()[:8], "cyan")
    return text


def compact_child_label(child: ChildSa) -> Text:
    text = Text()
    text.append("●", STATE_STYLE.get(child.state, ""))
    text.append(f" #{child.id} ")
    # an inferred CHILD SA seen one way only knows just one SPI: show that one, not "?"
    text.append(spi_digits(child.spi_i if child.spi_i is not None else child.spi_r), "cyan")
    return text


def _one_way_label(mark: str, mark_style: str, kind: str, sa: EspFlow | EncSa) -> Text:
    """A one-direction SA's leaf: its mark, kind, SPI, ends and packets."""
    text = Text()
    text.append(mark, mark_style)
    text.append(f" {kind} ")
    text.append(spi_digits(sa.spi), "cyan")
    text.append(f" {sa.src}→{sa.dst} {sa.packets} pkts", "dim")
    return text


def flow_label(flow: EspFlow) -> Text:
    return _one_way_label("○", "magenta", flow.protocol, flow)


def enc_label(sa: EncSa) -> Text:
    """An SA seen on an OpenBSD enc(4) capture (model.sa.EncSa): the enc header's SPI and the
    packets counted; no sequence numbers, so no loss to show."""
    return _one_way_label("◇", "blue", f"enc {sa.protocol}", sa)


class SaTree(Tree[SaRef]):
    """Shows a :class:`SaTable`; posts :class:`SaHighlighted` / :class:`SaChosen` for the app to act on."""

    class SaHighlighted(Message):
        def __init__(self, ref: SaRef | None) -> None:
            super().__init__()
            self.ref = ref

    class SaChosen(Message):
        def __init__(self, ref: SaRef) -> None:
            super().__init__()
            self.ref = ref

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("Security associations", id=id)
        self.show_root = False
        self.guide_depth = 2
        # Enter opens an SA's detail; it must not also collapse the node (space still toggles).
        self.auto_expand = False
        # Narrow screens (80 columns): short labels so a 22-column tree shows whole peers and SPIs.
        self.compact = False
        self.share = 0.3
        self._table: SaTable | None = None
        self._widest = 0  # the widest this tree's content has been (get_content_width)
        self._waiting = False  # live with more to come: an empty tree is "not yet", not "none"
        self._announced: SaRef | None = None  # the SA the last SaHighlighted named
        self._built_width = 0  # the screen width the labels were last fitted to (_room)
        self._screen_width = 0  # the screen's width as the app last said (set_compact)

    def get_content_width(self, container: Size, viewport: Size) -> int:
        """The tree is as wide as its labels (CSS width: auto), and never narrower than it has been:
        live, a rate in a label changes every second ('9.5 pkt/s', '10 pkt/s'), and the panes
        beside the tree would shift a column back and forth with it."""
        self._widest = max(self._widest, super().get_content_width(container, viewport))
        return self._widest

    def set_compact(self, compact: bool, share: float = 0.3, width: int | None = None) -> None:
        """``compact``: short labels (below 100 columns); ``share``: the part of the screen the
        tree may take at most (its CSS max-width: 30%, 40% on a wide screen)."""
        # a wide tree's room is a share of the screen's width (_room): any new width builds it again
        # (``width``: the screen's new width; app.size may still be the old one during a resize)
        if width is not None:
            self._screen_width = width
        resized = not compact and self.is_attached and self._width() != self._built_width
        if (compact, share) != (self.compact, self.share) or resized:
            self.compact, self.share = compact, share
            if self._table is not None:
                self._rebuild(self._table)

    def show_session(self, view: SessionView) -> None:
        """Rebuild from the session's table, the cursor staying on the SA it was on."""
        self._waiting = view.live and not view.ended
        self._rebuild(view.table)

    def _rebuild(self, table: SaTable) -> None:
        """Show ``table`` again with the cursor on the SA it was on (the first node if none), and
        say so if that is not the SA the app last heard of. Textual's Tree posts no highlight for
        a cursor that stays on line 0 of a rebuilt tree (its old line 0 is looked up in the new
        lines), so the SA detail said "Choose an SA (Enter)" beside a tree whose cursor was on
        the first SA all along."""
        ref = self.current_ref
        self.show_table(table)
        if ref is not None:
            self.select_ref(ref)
        node = self.get_node_at_line(self.cursor_line)
        now = node.data if node is not None else None
        if now != self._announced:
            self._announced = now
            self.post_message(self.SaHighlighted(now))

    def show_table(self, table: SaTable) -> None:
        self._table = table
        self.clear()
        compact = self.compact
        pairs: dict[tuple[str, str], list[object]] = {}
        for sa in sorted(table.ike_sas.values(), key=lambda s: (s.created_ts or 0.0)):
            pairs.setdefault(pair_key(sa.initiator, sa.responder), []).append(sa)
        orphans: dict[tuple[str, str], list[ChildSa]] = {}
        for child in table.child_sas.values():
            pair = orphan_pair(child, table)
            if pair is not None:
                orphans.setdefault(pair, []).append(child)
                pairs.setdefault(pair, [])
        loose: dict[tuple[str, str], list[EspFlow]] = {}
        for flow in table.flows.values():
            if flow.child_sa is None or flow.child_sa not in table.child_sas:
                loose.setdefault(pair_key(flow.src, flow.dst), []).append(flow)
                pairs.setdefault(pair_key(flow.src, flow.dst), [])
        encs: dict[tuple[str, str], list[EncSa]] = {}
        for e in table.enc_sas.values():  # an enc(4) capture's SAs, under the gateways they join
            encs.setdefault(pair_key(e.src, e.dst), []).append(e)
            pairs.setdefault(pair_key(e.src, e.dst), [])
        room = self._room(table, pairs, orphans)
        for (a, b), sas in pairs.items():
            whole = f"{a} ⇄ {b}"
            label = (Text(short_pair(a, b), "bold") if compact else
                     Text.assemble((a, "bold"), " ⇄ ", (b, "bold")) if room is None or len(whole) <= room - 2 else
                     Text(short_pair(a, b, room - 2), "bold"))  # "▼ "
            if not compact and any(rb.old_addr != rb.new_addr for sa in sas if isinstance(sa, IkeSa)
                                   for rb in sa.nat_rebindings):
                # its SAs went to other addresses (MOBIKE, RFC 4555 §3.5; a NAT, RFC 7296 §2.23):
                # the pair's detail says where; a narrow tree has no room, so only when it fits
                moved = label.copy()
                moved.append(" moved", "dim")
                label = moved if room is None or moved.cell_len <= room - 2 else label
            pnode = self.root.add(label, data=SaRef("pair", (a, b)), expand=True)
            for sa in sas:
                assert isinstance(sa, IkeSa)
                inode = pnode.add(compact_ike_label(sa) if compact else ike_label(sa, room and room - IKE_INDENT),
                                  data=SaRef("ike", sa.key),
                                  expand=True)
                for cid in sa.children:
                    child = table.child_sas.get(cid)
                    # After an IKE rekey its CHILD SAs move to the new IKE SA (RFC 7296 §2.18):
                    # list each under its current owner only.
                    if child is not None and (child.ike_sa == sa.key or child.ike_sa not in table.ike_sas):
                        inode.add_leaf(compact_child_label(child) if compact else
                                       child_label(child, table, room and room - CHILD_INDENT),
                                       data=SaRef("child", child.id))
            for child in orphans.get((a, b), []):
                pnode.add_leaf(compact_child_label(child) if compact else
                               child_label(child, table, room and room - ORPHAN_INDENT),
                               data=SaRef("child", child.id))
            for flow in loose.get((a, b), []):
                pnode.add_leaf(fit(flow_label(flow), room and room - ORPHAN_INDENT), data=SaRef("flow", flow.key))
            for e in encs.get((a, b), []):
                pnode.add_leaf(fit(enc_label(e), room and room - ORPHAN_INDENT),
                               data=SaRef("enc", (e.spi, e.protocol, e.dst)))
        if not pairs:
            # the narrow tree (80 columns) cut the long form to 'no IPsec SA in this c'
            text = "no IPsec SA yet" if self._waiting else "no IPsec SA" if compact else "no IPsec SA in this capture"
            self.root.add_leaf(Text(text, "dim"))
        self.cursor_line = 0

    def _width(self) -> int:
        return self._screen_width or self.app.size.width

    def _room(self, table: SaTable, pairs: dict[tuple[str, str], list[object]],
              orphans: dict[tuple[str, str], list[ChildSa]]) -> int | None:
        """The cells a wide tree's labels get (None: not on screen yet, or the compact tree).

        The tree is as wide as its longest label (CSS width: auto) up to its share of the screen
        (``share``: 30%, 40% from 140 columns); a rate or proposal that does not fit there is left
        out or cut with "…". A label's essential part (SPIs and state word) may widen the tree
        beyond that share, up to :data:`MAX_SHARE`: at 120 columns 30% cut 'ESP 427e7d84/15b69dc5
        inferred' to '… infe' and an established one to '… este'. Its border and scrollbar take
        2 cells."""
        if compact := self.compact:
            self.styles.max_width = None  # the stylesheet's 30%
        if compact or not self.is_attached:
            return None
        width = self._built_width = self._width()
        room = int(width * self.share) - 2
        need = 0
        for sas in pairs.values():
            for sa in sas:
                assert isinstance(sa, IkeSa)
                need = max(need, IKE_INDENT + ike_essential(sa).cell_len)
                need = max([need, *(CHILD_INDENT + child_essential(table.child_sas[c]).cell_len
                                    for c in sa.children if c in table.child_sas)])
        for children in orphans.values():
            need = max([need, *(ORPHAN_INDENT + child_essential(c).cell_len for c in children)])
        room = max(room, min(need, int(width * MAX_SHARE) - 2))
        self.styles.max_width = room + 2
        return room

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[SaRef]) -> None:
        event.stop()
        self._announced = event.node.data
        self.post_message(self.SaHighlighted(event.node.data))

    def on_tree_node_selected(self, event: Tree.NodeSelected[SaRef]) -> None:
        event.stop()
        if event.node.data is not None:
            self.post_message(self.SaChosen(event.node.data))

    def select_ref(self, ref: SaRef) -> bool:
        """Put the cursor back on ``ref`` after a rebuild (live mode refreshes the tree)."""
        for line in range(self.last_line + 1):
            node = self.get_node_at_line(line)
            if node is not None and node.data == ref:
                self.cursor_line = line
                return True
        return False

    @property
    def current_ref(self) -> SaRef | None:
        node = self.cursor_node
        return node.data if node is not None else None
