"""The TUI at 80×24 (an SSH session) and wider (issue 14 #10): the SA tree shows whole peers and
SPIs, the Packets Info column takes the width the other columns leave, the SA detail's traffic
table is one line per direction, and a finding's title wraps under itself with nothing cut.

Pilot tests read what is on screen (the compositor's lines), as a person would.
"""

from __future__ import annotations

import re

import pytest
from conftest import SAMPLES, needs_tshark
from test_tui import loaded, screen_lines, sync, tree_cursor_to, tshark_fields
from textual.widgets import DataTable, TabbedContent

from ipsecscope.model.idtext import arrow_text
from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.info_fit import fit_info
from ipsecscope.tui.widgets.packet_table import PacketTable
from ipsecscope.tui.widgets.sa_detail import SaDetail
from ipsecscope.tui.widgets.sa_tree import SaTree, short_pair

SMALL, MEDIUM, LARGE = (80, 24), (120, 40), (200, 50)


def app_for(sample: str):
    d = SAMPLES / sample
    return create_app(d / "capture.pcapng", [d / "charon-left.log"])


def test_short_pair_keeps_whole_groups() -> None:
    assert short_pair("198.18.0.1", "198.18.0.2") == "198.18.0.1 ⇄ .2"
    # An IPv6 tail keeps its '…': '::2' alone is another address (::2), ':2' none at all; the
    # first side is cut in its middle (model.idtext.short_addr), its network and host ends kept.
    assert short_pair("2001:db8:1::1", "2001:db8:1::2") == "2001…1::1 ⇄ …::2"
    assert short_pair("fd00:db8::100:1", "fd00:db8::100:2") == "fd00…::100:1 ⇄ …:2"
    assert short_pair("2003:51:6012::2", "2003:51:6012::4") == "2003…6012::2 ⇄ …::4"  # was '…51:6012::2'
    assert short_pair("2001:db8:40::1", "fd00:1::5") == "2001…::1 ⇄ fd00…::5"
    assert short_pair("10.0.0.1", "10.0.0.2", 40) == "10.0.0.1 ⇄ 10.0.0.2"  # room: both whole
    for a, b in (("192.168.100.200", "192.168.101.201"), ("a" * 40, "b" * 40), ("10.0.0.1", "198.18.0.2")):
        assert len(short_pair(a, b)) <= 19


@pytest.mark.parametrize("sample", ["nat-napt", "dead-peer", "cbc-sha2-pfs"])
@sync
async def test_tree_at_80_columns_shows_whole_peers_and_spis(sample: str) -> None:
    app = app_for(sample)
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        tree = app.query_one(SaTree)
        width = tree.region.width
        assert width <= 24  # the panes get the rest
        left = [line[:width] for line in screen_lines(app)]
        table = app.session.table
        shown = "\n".join(left)
        pairs = {tuple(sorted((sa.initiator, sa.responder))) for sa in table.ike_sas.values()}
        for a, b in pairs:
            assert short_pair(a, b) in shown, shown
        for c in table.child_sas.values():
            assert f"{c.spi_i:08x}" in shown, shown
        for sa in table.ike_sas.values():
            assert sa.ike_spi_i.hex()[:8] in shown, shown
        assert "…" not in shown.replace("⇄ …", "")  # nothing cut at the pane's edge
        await pilot.press("t")  # hidden: the packet list takes the whole width
        await pilot.pause()
        assert not tree.display and app.query_one("#tabs").region.width == SMALL[0]
    app = app_for(sample)
    async with app.run_test(size=MEDIUM) as pilot:
        await loaded(pilot)
        shown = "\n".join(screen_lines(app))
        for a, b in pairs:  # wide enough: the full pair
            assert f"{a} ⇄ {b}" in shown


# At 120 columns the tree takes what its CHILD SAs' SPIs and state words need (up to 40%, not 30%):
# Info keeps INFO_MIN cells, one of them the "…" of a longer text.
@pytest.mark.parametrize(("size", "with_tree", "at_least"), [(SMALL, True, 28), (SMALL, False, 36),
                                                             (MEDIUM, True, 35), (LARGE, True, 36)])
@sync
async def test_packets_info_takes_the_remaining_width(size, with_tree: bool, at_least: int) -> None:
    app = app_for("nat-napt")
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        if not with_tree:
            await pilot.press("t")
            await pilot.pause()
        lines = screen_lines(app)
        table = app.query_one(PacketTable)
        rows = [table.rows[i] for i in table.view][:5]
        info_w = table.columns(table.scrollable_content_region.width)[-1].width
        assert info_w >= at_least
        for row in rows:
            # shown as fit_info makes them (a longer text: the least useful part left out first)
            want = fit_info(row.info, info_w, row.status == "decrypted")
            assert any(want in line for line in lines), f"frame {row.frame}: {want!r} not on screen\n" + "\n".join(lines)


@pytest.mark.parametrize("size", [SMALL, MEDIUM, LARGE])
@sync
async def test_sa_detail_traffic_is_one_line_per_direction(size) -> None:
    app = app_for("nat-napt")
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        tree = await tree_cursor_to(pilot, "child")
        await pilot.press("enter")
        await pilot.pause()
        detail = app.query_one(SaDetail)
        text = detail.as_text(width=detail.size.width).splitlines()
        child = app.session.table.child_sas[tree.current_ref.key]
        start = next(i for i, line in enumerate(text) if line.startswith("Traffic (per direction)"))
        flows = child.flows(app.session.table)
        block = text[start + 2:start + 2 + len(flows)]  # title, header, one line per flow
        for f, line in zip(flows, block, strict=True):
            assert f"0x{f.spi:08x}" in line and f.src in line, "\n".join(text[start:start + 6])
            assert line.split()[-1] != "→" and f" {f.packets} " in f"{line} "


@pytest.mark.parametrize("size", [SMALL, MEDIUM, LARGE])
@sync
async def test_findings_titles_wrap_under_themselves_and_nothing_is_cut(size) -> None:
    app = app_for("dead-peer")
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        assert app.query_one(TabbedContent).active == "findings"
        table = app.query_one("#findings-table", DataTable)
        assert table.virtual_size.width <= table.size.width  # no column off to the right
        view = app.query_one("#findings-view")
        cols = [c.label.plain for c in table.columns.values()]
        title_w = table.columns["title"].width
        # at 80 columns the code heads its title in one column (findings._fill: stacked)
        stacked = cols[1] == "Code / Title"
        for i, f in enumerate(view.findings):
            cell = str(table.get_row(str(i))[cols.index("Code / Title" if stacked else "Title")])
            if stacked:
                code, _, cell = cell.partition("\n")
                assert code == f.code
            assert " ".join(cell.split("\n")) == arrow_text(f.title)  # whole, only wrapped at spaces
            assert all(len(line) <= title_w for line in cell.split("\n"))
            if "Frames" in cols:
                assert str(table.get_row(str(i))[cols.index("Frames")]).startswith(str(f.frames[0]))
        lines = "\n".join(screen_lines(app))
        for f in view.findings:
            assert f.code in lines
        if size != SMALL:
            assert "Frames" in cols and not stacked  # there is room for them beside the title
        else:
            assert stacked and title_w >= 40, (cols, title_w)


@sync
async def test_findings_titles_at_80_columns_get_the_code_column_width() -> None:
    """80x24 beside the SA tree, a long code (IKE-CHILD-LIKELY-REFUSED) left the title 20 cells:
    "CHILD SA between / 198.18.0.1 and / 198.18.0.2 probably / refused (encrypted / IKE_AUTH, no
    keys)", five lines for one sentence. The code heads its title on a line of its own, and the
    title takes the width the code column had."""
    d = SAMPLES / "ts-mismatch"
    app = create_app(d / "capture.pcapng", [])
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        await pilot.press("3")
        await pilot.pause()
        view = app.query_one("#findings-view")
        table = app.query_one("#findings-table", DataTable)
        screen = screen_lines(app)
        title_w = table.columns["title"].width
        for i, f in enumerate(view.findings):
            y = next(n for n, line in enumerate(screen) if f.code in line)
            cx = screen[y].index(f.code)
            height = table.rows[str(i)].height
            body = [screen[k][cx:cx + title_w] for k in range(y + 1, y + height)]
            assert " ".join(" ".join(body).split()) == arrow_text(f.title), (f.code, body)
        first = view.findings[0]
        assert first.code == "IKE-CHILD-LIKELY-REFUSED" and table.rows["0"].height <= 3


def _footer_fits(app) -> dict[str, bool]:
    """Each shown footer key's action -> whether it ends before the palette key (what is cut is gone)."""
    from textual.widgets import Footer
    from textual.widgets._footer import FooterKey

    footer = app.query_one(Footer)
    palette = next(k for k in footer.query(FooterKey) if k.has_class("-command-palette"))
    return {k.action: k.region.right <= palette.region.x
            for k in footer.query(FooterKey) if k.display and not k.has_class("-command-palette")}


@pytest.mark.parametrize("key", ["1", "2", "3", "4", "5", "5 tab"])
@sync
async def test_footer_keeps_every_command_at_80_columns(key: str) -> None:
    """The footer at 80 columns shows every command whole on every tab, as the tab's key leaves
    the focus: 'q Quit' was cut to 'q Q' behind the palette key, and on Stats the focused table's
    own '←→ Columns' (the IO graph's '←→ Bin') went first and pushed Export off. A pane's own key
    comes after the commands, shown only where it fits whole (tui.footer)."""
    app = create_app(SAMPLES / "healthy-gcm" / "capture.pcapng", [SAMPLES / "healthy-gcm" / "charon-left.log"])
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        await pilot.press(*key.split())
        if key == "5 tab":  # Tab until the IO graph has the focus
            for _ in range(4):
                if type(app.focused).__name__ == "IoGraph":
                    break
                await pilot.press("tab")
            assert type(app.focused).__name__ == "IoGraph"
        await pilot.pause()
        await pilot.pause()
        fits = _footer_fits(app)
        last = screen_lines(app)[-1]
        for action in ("help", "quit", "export", "follow", "focus_filter", "add_keys", "sa_packets"):
            assert fits.get(action), f"{key}: {action} not whole in {last!r}"
        assert "e Export" in last and "q Quit" in last and "? Help" in last
        assert all(fits.values()), last  # nothing shown cut, a pane's ←→ included


@sync
async def test_footer_shows_the_panes_own_key_where_it_fits() -> None:
    """At 100 columns the Stats table's '←→ Columns' has room after the commands: it is shown."""
    app = create_app(SAMPLES / "healthy-gcm" / "capture.pcapng", [SAMPLES / "healthy-gcm" / "charon-left.log"])
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("5")
        await pilot.pause()
        await pilot.pause()
        assert type(app.focused).__name__ == "StatsTable"
        fits = _footer_fits(app)
        assert all(fits.values()) and "columns(1)" in fits, screen_lines(app)[-1]
        assert "e Export  ←→ Columns" in screen_lines(app)[-1]


@pytest.mark.parametrize("size", [SMALL, MEDIUM], ids=["80x24", "120x40"])
@pytest.mark.parametrize(("sample", "keys"), [("ike-proposal-mismatch", True), ("healthy-gcm", False)])
@sync
async def test_tree_never_cuts_an_sas_state(sample: str, keys: bool, size: tuple[int, int]) -> None:
    """live3: at 120 columns the tree cut a refused IKE SA to 'IKEv2 f63e1ff0… failed (no pr'. Each
    IKE SA's state word is on screen whole, before the tree's border, with no placeholder cut
    after it; the SA detail has what had to go."""
    d = SAMPLES / sample
    app = create_app(d / "capture.pcapng", [d / "charon-left.log"] if keys else [])
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        tree = app.query_one(SaTree)
        left = [line[:tree.region.width - 1] for line in screen_lines(app)]  # without its border
        table = app.session.table
        wanted = [(sa.ike_spi_i.hex()[:8], sa.state.value) for sa in table.ike_sas.values()]
        for mark, state in wanted:
            (line,) = [ln for ln in left if mark in ln]
            if size == MEDIUM:
                assert re.search(rf" {state}( |$)", line), (line, state)
            assert not re.search(r"\(\w*\s*$|\(no p", line.rstrip()), line  # no '(no pr' at the edge


def tree_left(app) -> list[str]:
    """The SA tree's part of each screen line, without its border."""
    tree = app.query_one(SaTree)
    return [line[:tree.region.width - 1] for line in screen_lines(app)]


@needs_tshark
@pytest.mark.parametrize("size", [(120, 40), (160, 50)], ids=["120x40", "160x50"])
@pytest.mark.parametrize(("sample", "keys"), [("healthy-gcm", False), ("peer-restart", True), ("cbc-sha2-pfs", True)])
@sync
async def test_tree_shows_both_spis_and_the_whole_state_of_each_child_sa(sample: str, keys: bool,
                                                                          size: tuple[int, int]) -> None:
    """live3: at 120 columns the tree's 30% cut '#1 ESP 427e7d84/15b69dc5 inferred' to '… infe' (and
    'established' to 'este'). A CHILD SA's SPIs and state word are what its label never loses:
    the tree widens for them (up to 40%), its rate and proposal make room first. The SPIs are
    the ones tshark reads from the ESP headers."""
    d = SAMPLES / sample
    capture = d / "capture.pcapng"
    app = create_app(capture, [d / "charon-left.log"] if keys else [])
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        left = tree_left(app)
        table = app.session.table
        assert table.child_sas
        for c in table.child_sas.values():
            spis = f"{c.spi_i:08x}/{c.spi_r:08x}"
            (line,) = [ln for ln in left if spis in ln]
            assert re.search(rf"#{c.id} ESP {spis} {c.state.value}( |$)", line.rstrip()), (line, c.state.value)
        shown = "\n".join(left)
        wire = {row[0].removeprefix("0x") for row in tshark_fields(capture, "esp", "esp.spi")}
        assert wire and all(spi in shown for spi in wire), (wire, shown)
        assert app.query_one(SaTree).region.width <= size[0] * 0.4  # the packet list keeps 60%


@pytest.mark.parametrize("size", [(100, 30), (120, 40), (160, 50)], ids=["100x30", "120x40", "160x50"])
@pytest.mark.parametrize(("sample", "keys"), [("healthy-gcm", False), ("healthy-gcm", True), ("cbc-sha2-pfs", True),
                                              ("nat-napt", True)])
@sync
async def test_tree_cuts_nothing_without_an_ellipsis(sample: str, keys: bool, size: tuple[int, int]) -> None:
    """A known IKE proposal was cut at the tree's edge with nothing to say so ('rekeyed aes25' read
    as a proposal called 'aes25'). Every label is whole on screen, or ends in '…' before the
    border with a prefix of what it stands for."""
    d = SAMPLES / sample
    app = create_app(d / "capture.pcapng", [d / "charon-left.log"] if keys else [])
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        left = tree_left(app)
        table = app.session.table
        labels = [ln.rstrip() for ln in left if "●" in ln]
        assert labels
        for sa in table.ike_sas.values():
            (line,) = [ln for ln in labels if f"{sa.ike_spi_i.hex()[:8]}…" in ln]
            whole = rf"… {sa.state.value}( {re.escape(sa.proposal or '')}| \(no proposal\))?$"
            if not re.search(whole, line):  # cut: an ellipsis after a prefix of the proposal
                assert line.endswith("…") and sa.proposal, line
                tail = line.split(f"… {sa.state.value} ", 1)[1]
                assert sa.proposal.startswith(tail[:-1]), (line, sa.proposal)
        for c in table.child_sas.values():
            (line,) = [ln for ln in labels if f"#{c.id} " in ln]
            spis = f"{c.spi_i:08x}/{c.spi_r:08x}"
            proposal = rf"( {re.escape(c.proposal)}| {re.escape(c.proposal[:1])}.*…)?" if c.proposal else ""
            assert re.search(rf"#{c.id} ESP {spis} {c.state.value}( [\d.k]+ pkt/s| idle)?{proposal}$", line) or (
                line.endswith("…") and spis in line), line


@pytest.mark.parametrize("sample", ["healthy-gcm", "cbc-sha2-pfs", "nat-napt"])
@sync
async def test_tree_at_160_columns_shows_whole_proposals(sample: str) -> None:
    """At 160 columns the tree kept to 30% and cut the IKE SA's proposal ('aes256gcm16-prfsh'):
    it now takes the width its labels need (up to 40%), and a CHILD SA's label that would still
    be cut drops its rate before its proposal."""
    app = app_for(sample)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot)
        tree = app.query_one(SaTree)
        left = "\n".join(line[:tree.region.width - 1].rstrip() for line in screen_lines(app))  # without its border
        table = app.session.table
        for sa in table.ike_sas.values():
            assert f"{sa.ike_spi_i.hex()[:8]}… {sa.state.value} {sa.proposal}\n" in left, left
        for c in table.child_sas.values():
            if c.proposal:  # the label's last part
                assert re.search(rf"#{c.id} .* {re.escape(c.proposal)}$", left, re.M), left


@sync
async def test_tree_width_does_not_shrink_when_its_labels_do() -> None:
    """Live, the tree is rebuilt every second and its labels' rates change length: sized to its
    labels alone it would narrow and widen, shifting every pane beside it."""
    from ipsecscope.model.sa import SaTable

    app = app_for("healthy-gcm")
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot)
        tree = app.query_one(SaTree)
        wide = tree.region.width
        assert wide > 48  # sized to its labels (30% would be 48)
        tree.show_table(SaTable())  # a refresh whose labels are all shorter
        await pilot.pause()
        await pilot.pause()
        assert tree.region.width == wide


@sync
async def test_tree_labels_fit_again_after_a_resize() -> None:
    """The labels are fitted to a share of the screen's width: resized from 160 to 100 columns the
    tree was fitted to the old width (app.size is still the old one when the resize arrives) and
    took more than its 40%; from 100 to 120 (same share) it was not fitted again at all."""
    app = create_app(SAMPLES / "healthy-gcm" / "capture.pcapng", [])
    async with app.run_test(size=(160, 50)) as pilot:
        await loaded(pilot)
        for size in ((100, 30), (120, 40)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            await pilot.pause()
            for c in app.session.table.child_sas.values():
                spis = f"{c.spi_i:08x}/{c.spi_r:08x}"
                (line,) = [ln.rstrip() for ln in tree_left(app) if spis in ln]
                assert line.endswith((" inferred", "…")), (size, line)
                assert size[0] < 120 or line.endswith(" inferred"), (size, line)
            # fitted to the new width, not the old one (the tree kept 160-column labels at 100)
            assert app.query_one(SaTree).region.width <= size[0] * 0.4, size


@sync
async def test_at_80x24_one_long_finding_leaves_room_for_the_others() -> None:
    """live4: at 80x24 the Findings title column is ~24 cells; samples/peer-restart's ERROR title
    wrapped to 10 lines and filled the list, so the warning and info under it (a newer warning,
    live) were out of sight. A row takes at most a third of the list; the whole title heads the
    explanation below, which says which finding the cut one is."""
    from ipsecscope.tui.widgets.findings import FindingsView

    app = app_for("peer-restart")
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("3")
        await pilot.pause(0.3)
        view = app.query_one(FindingsView)
        table = view.query_one("#findings-table", DataTable)
        assert [f.severity.name for f in view.findings] == ["ERROR", "WARNING", "INFO"]
        rows = table.size.height - 1  # the header
        heights = [r.height for r in table.ordered_rows]
        assert max(heights) <= rows // 3 and sum(heights) <= rows, (heights, rows)
        screen = "\n".join(screen_lines(app))
        for f in view.findings:
            assert f.code in screen, f.code  # every finding's row on screen
        error = view.findings[0]
        assert error.title in " ".join(str(view.query_one("#finding-explain").render()).split())
        assert "…" in screen
