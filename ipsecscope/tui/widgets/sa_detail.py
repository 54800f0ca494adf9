"""SA detail tab: proposal, selectors, keys (redacted unless toggled), counters, rekey chain."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from ... import timefmt
from ...model import iana
from ...model.idtext import arrow_text, frame_ref, ike_sa_text, msg_id_text, short_source, spi_text
from ...model.keys import redact
from ...model.sa import (
    ChildSa,
    EncSa,
    EspFlow,
    IkeSa,
    NatRebinding,
    SaState,
    SaTable,
    counter_lost,
    endpoint_text,
    one_counter,
)
from ...state.names import exchange_name, one_way
from ..plain import PlainTable
from .sa_tree import (
    STATE_STYLE,
    SaRef,
    flows_rate,
    fmt_rate,
    orphan_pair,
    pair_flows,
    pair_key,
    pair_moves,
    pair_sas,
    short_pair,
    spi_digits,
)

if TYPE_CHECKING:
    from ..panes import SessionView

def integ_name(integ: int, encr: int) -> str:
    if integ == 0 and iana.name(iana.EncrTransform, encr).startswith(("ENCR_AES_GCM", "ENCR_AES_CCM", "ENCR_CHACHA")):
        return "AEAD (integrity in the cipher)"
    return _enum_name(iana.IntegTransform, integ)


def fmt_ts(ts: float | None, first: float | None) -> str:
    if ts is None:
        return "—"
    wall = timefmt.at(ts, 3)  # 20:09:15.691 UTC, or in the --tz zone with its offset
    return f"{wall} (+{ts - first:.3f}s)" if first is not None else wall


def _kv(title: str) -> Table:
    # The grid takes the pane's width: rich wraps a title to its table's width, and a grid as wide
    # as "CHILD SAs 2" broke "Peers 2001:db8::100:1 ⇄ 2001:db8::100:2" in the middle of an address.
    grid = PlainTable.grid(padding=(0, 1), expand=True)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold", ratio=1)  # a key shown with K must be whole (copyable), never cut with …
    grid.title = Text(title, "bold underline")  # a Text title does not take title_style
    grid.title_justify = "left"
    return grid


def enc_sa_table(e: EncSa, first: float | None) -> Table:
    """An SA seen on an OpenBSD enc(4) capture (model.sa.EncSa): what its enc header and the
    outermost IP header say, its counts and inner traffic; sequence numbers are not there."""
    from ...decode.link import enc_flags_text
    from ...session_detail import iana_proto

    g = _kv(f"enc(4) SA {e.protocol} SPI {spi_text(e.spi)}")
    g.add_row("Ends", f"{e.src} → {e.dst} (outermost IP header: the SA's source and destination)")
    g.add_row("Protection", f"{enc_flags_text(e.flags)} (enc flags 0x{e.flags:04x})")
    g.add_row("Packets", f"{e.packets} ({e.bytes} bytes)")
    g.add_row("First", fmt_ts(e.first_ts, first) + f" frame {e.first_frame}")
    g.add_row("Last", fmt_ts(e.last_ts, first) + f" frame {e.last_frame}")
    g.add_row("Sequence", "not available: enc frames carry no ESP/AH header, so loss and replay cannot be told")
    for (s, d, p), n in e.inner.items():
        g.add_row("Inner", f"{s} → {d} {iana_proto(p)}: {n} packets")
    return g


def _enum_name(enum: Any, value: int | None) -> str:
    if value is None:
        return "—"
    try:
        return enum(value).name
    except ValueError:
        return str(value)


def rekey_chain_child(table: SaTable, child: ChildSa) -> list[ChildSa]:
    first = child
    seen = {child.id}
    while first.rekeyed_from is not None and first.rekeyed_from in table.child_sas and first.rekeyed_from not in seen:
        first = table.child_sas[first.rekeyed_from]
        seen.add(first.id)
    chain = [first]
    while chain[-1].rekeyed_into is not None and chain[-1].rekeyed_into in table.child_sas:
        nxt = table.child_sas[chain[-1].rekeyed_into]
        if nxt in chain:
            break
        chain.append(nxt)
    return chain


def rekey_chain_ike(table: SaTable, sa: IkeSa) -> list[IkeSa]:
    first = sa
    while first.rekeyed_from and first.rekeyed_from in table.ike_sas and table.ike_sas[first.rekeyed_from] is not sa:
        prev = table.ike_sas[first.rekeyed_from]
        if prev is first:
            break
        first = prev
    chain = [first]
    while chain[-1].rekeyed_into and chain[-1].rekeyed_into in table.ike_sas:
        nxt = table.ike_sas[chain[-1].rekeyed_into]
        if nxt in chain:
            break
        chain.append(nxt)
    return chain


FLOW_COLUMNS = (("SPI", "left"), ("From → To", "left"), ("Pkts", "right"), ("Bytes", "right"),
                ("Decr", "right"), ("ICV✗", "right"), ("NoKey", "right"), ("Lost", "right"),
                ("FragLost", "right"), ("Replay", "right"), ("Copies", "right"), ("Seq", "left"),
                ("Active", "left"))
# "Replay": a sequence number sent again (ESP-REPLAY); "Copies": packets the capture holds twice
# (CAPTURE-DUPLICATES: counted in Pkts, not sent twice). One "Dup" column showed replays only.
PROBLEM_COLUMNS = ("ICV✗", "NoKey", "Lost", "Replay")
# shown only when not zero: "FragLost", packets that arrived as a first IP fragment only
# (ESP-FRAGMENT-LOST: the rest never came; `sas` says "arrived as a first IP fragment only")
RARE_PROBLEMS = ("FragLost",)


class FlowTable:
    """Per-direction counters, one line per flow at any width: columns are added in order of
    use while they fit (a counter that is not zero before one that is), and when the full
    addresses do not fit the pair is shortened ("198.18.0.1 → .2"), never wrapped or cut."""

    def __init__(self, flows: list[EspFlow], first: float | None,
                 shared: dict[int, list[EspFlow]] | None = None) -> None:
        self.flows, self.first, self.shared = flows, first, shared or {}

    def _cells(self, f: EspFlow, compact: bool) -> dict[str, Any]:
        seq = f"{f.seq_min}–{f.seq_max}" if f.seq_min is not None else "—"
        active = ""
        if f.first_ts is not None and f.last_ts is not None and self.first is not None:
            active = f"+{f.first_ts - self.first:.1f}s…+{f.last_ts - self.first:.1f}s"
        return {
            "SPI": spi_text(f.spi),
            "From → To": short_pair(f.src, f.dst, 19, "→") if compact else f"{f.src} → {f.dst}",
            "Pkts": str(f.packets), "Bytes": str(f.bytes), "Decr": str(f.decrypted),
            "ICV✗": Text(str(f.icv_failed), "bold red" if f.icv_failed else ""),
            "NoKey": Text(str(f.no_key), "yellow" if f.no_key else ""), "Lost": str(self._lost(f)),
            "FragLost": Text(str(f.frag_lost), "bold red" if f.frag_lost else ""),
            "Replay": str(f.duplicates), "Copies": Text(str(f.capture_duplicates), "dim"), "Seq": seq,
            "Active": active,
        }

    def _lost(self, f: EspFlow) -> int:
        # One SA toward several destinations numbers them from one counter (RFC 4303 §3.3.3): its
        # loss is the counter's, as in findings and `sas`, not each destination's gaps.
        group = self.shared.get(id(f))
        return counter_lost(group) if group else f.lost

    def _columns(self, rows: list[dict[str, Any]], width: int) -> list[str] | None:
        """The columns that fit in ``width`` (None when not even SPI, addresses and packets do)."""
        cw = {c: max([len(c), *(len(str(r[c])) for r in rows)]) + 2 for c, _ in FLOW_COLUMNS}
        busy = [c for c, _ in FLOW_COLUMNS
                if c in (*PROBLEM_COLUMNS, *RARE_PROBLEMS) and any(str(r[c]) != "0" for r in rows)]
        # capture copies are no problem of the tunnel: shown after the counters, only when there are some
        copies = ["Copies"] if any(str(r["Copies"]) != "0" for r in rows) else []
        order = ["SPI", "From → To", "Pkts", *busy, "Decr", *(c for c in PROBLEM_COLUMNS if c not in busy),
                 *copies, "Bytes", "Seq", "Active"]
        keep, used = [], 0
        for c in order:
            if used + cw[c] > width:
                if len(keep) < 3:
                    return None
                break
            keep.append(c)
            used += cw[c]
        return keep

    def __rich_console__(self, console: Any, options: Any) -> Any:
        if not self.flows:  # (a header row over nothing read as a table still loading)
            yield Text("Traffic (per direction)", "bold underline")
            yield Text("no ESP or AH packets", "dim")
            return
        width = options.max_width
        rows = [self._cells(f, False) for f in self.flows]
        keep = self._columns(rows, width)
        wanted = (len(FLOW_COLUMNS) - (0 if any(f.capture_duplicates for f in self.flows) else 1)
                  - (0 if any(f.frag_lost for f in self.flows) else 1))
        if keep is None or len(keep) < wanted:
            short = [self._cells(f, True) for f in self.flows]
            keep_short = self._columns(short, width)
            # The short pair for more columns when it only says shared groups once ('198.18.0.1
            # → .2'); one cut in its middle ('2001…a::1 → …:b::2') only for a counter that says
            # something is wrong (or what decrypted): at 120 columns IPv6 peers were cut for
            # Bytes beside four columns of zeros.
            lossless = all("…" not in r["From → To"] for r in short)
            if keep_short is not None and (keep is None or (
                    len(keep_short) > len(keep) if lossless
                    else len(_saying(short, keep_short)) > len(_saying(rows, keep)))):
                rows, keep = short, keep_short
        keep = keep or ["SPI", "From → To", "Pkts"]
        t = PlainTable(title="Traffic (per direction)", title_justify="left", title_style="bold underline",
                  box=None, padding=(0, 1), show_edge=False)
        # AH is verified, not decrypted (RFC 4302): its SAs' column says so
        verified = all(f.protocol == "AH" for f in self.flows)
        for col, just in FLOW_COLUMNS:
            if col in keep:
                label = "Verif" if col == "Decr" and verified else col
                t.add_column(label, justify=just, no_wrap=True)  # type: ignore[arg-type]
        for r in rows:
            t.add_row(*(r[c] for c, _ in FLOW_COLUMNS if c in keep))
        yield t


def _saying(rows: list[dict[str, Any]], keep: list[str]) -> list[str]:
    """The problem counters and Decr among ``keep`` that are not zero in some row."""
    return [c for c in keep if c in (*PROBLEM_COLUMNS, *RARE_PROBLEMS, "Decr")
            and any(str(r[c]) != "0" for r in rows)]


EXCHANGE_COLUMNS = ("Time", "Exchange", "MID", "From", "Req", "Resp", "Summary")


class ExchangeTable:
    """An IKE SA's exchanges: a table when its columns fit beside a summary column of some width,
    else one record per exchange, wrapped at spaces. (A table squeezed by rich cut its no-wrap
    columns with …: 'fd00:db8::100…', 'Aggressive Mo…', '+0.0…' at 80 columns.)"""

    def __init__(self, sa: IkeSa, first: float | None) -> None:
        self.rows: list[tuple[Any, ...]] = []
        for e in sa.exchanges:
            t = f"+{e.request_ts - first:.3f}" if e.request_ts is not None and first is not None else "—"
            # an IKEv1 Informational expects no answer under its Message ID: '—' as in `sas`, not a red 'none'
            resp = ",".join(map(str, e.response_frames)) or ("—" if one_way(e.exchange, sa.version) else Text("none", "red"))
            self.rows.append((t, exchange_name(e.exchange, sa.version), msg_id_text(e.msg_id), e.requester,
                              ",".join(map(str, e.request_frames)), resp, arrow_text(e.summary)))

    def __rich_console__(self, console: Any, options: Any) -> Any:
        width = options.max_width
        fixed = sum(max(len(c), *(len(str(r[i])) for r in self.rows)) + 2
                    for i, c in enumerate(EXCHANGE_COLUMNS[:-1]))
        if fixed + 24 <= width:
            t = PlainTable(title="Exchanges", title_justify="left", title_style="bold underline", box=None,
                           padding=(0, 1), show_edge=False)
            for col in EXCHANGE_COLUMNS:
                t.add_column(col, no_wrap=col != "Summary")
            for r in self.rows:
                t.add_row(*r)
            yield t
            return
        g = _kv("Exchanges")
        for when, name, mid, frm, req, resp, summary in self.rows:
            line = Text(f"{name} #{mid} from {frm}\nframes {req} → ")
            line.append(resp if isinstance(resp, Text) else Text(resp))
            rest = summary.removeprefix(name).strip()
            if rest:
                line.append("  " + rest)
            g.add_row(when, line)
        yield g


def flow_table(flows: list[EspFlow], first: float | None, table: SaTable | None = None) -> FlowTable:
    return FlowTable(flows, first, one_counter(table) if table is not None else None)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def ike_key_problems(sa: IkeSa) -> Text:
    """Loaded IKE keys that did not work (icv_failed / undecryptable), told apart from missing keys."""
    out = Text()
    if sa.icv_failed:
        out.append(_count(sa.icv_failed, "encrypted message", "encrypted messages")
                   + " failed the integrity check (wrong keys?)", "bold red")
    if sa.undecryptable:
        if out:
            out.append("\n")
        out.append(_count(sa.undecryptable, "encrypted message", "encrypted messages")
                   + " did not decrypt with the loaded keys (wrong keys?)", "bold red")
    if sa.key_failed_from:
        out.append(f"\nsent by {', '.join(sa.key_failed_from)}")
    if sa.key_failed_frames:
        out.append(f"\nframes {', '.join(map(str, sa.key_failed_frames))}"
                   + (" …" if len(sa.key_failed_frames) < sa.icv_failed + sa.undecryptable else ""))
    if sa.decrypted_from:
        # One direction decrypting and the other not points at one wrong key column (SK_ei vs SK_er).
        out.append(f"\nmessages from {', '.join(sa.decrypted_from)} decrypted", "green")
    if sa.key_failed_note:
        out.append(f"\n{sa.key_failed_note}", "dim")
    return out


def _move_text(rb: NatRebinding, first: float | None) -> str:
    """One address change of a pair's IKE SA for the pair's detail: who, from where to where, when,
    and whether MOBIKE announced it (RFC 4555 §3.5) or a NAT made it (RFC 7296 §2.23)."""
    how = (f"MOBIKE UPDATE_SA_ADDRESSES ({frame_ref(rb.mobike_frame)})" if rb.mobike_frame is not None
           else f"NAT rebinding ({frame_ref(rb.frame)})")
    return f"{rb.peer} {rb.old_addr} → {rb.new_addr} at {fmt_ts(rb.ts, first)} by {how}"


def flow_notes(flows: list[EspFlow]) -> list[Any]:
    """Per-direction notes the counters alone do not explain (unsupported algorithms, NAT-matched keys)."""
    lines = [Text(f"{spi_text(f.spi)}: {_count(f.unsupported, 'packet', 'packets')} not decrypted: "
                  + (f.unsupported_reason or "algorithm not supported"), "yellow")
             for f in flows if f.unsupported]
    # keys logged on a peer behind NAT, matched by SPI and the address NAT left alone (issue 17)
    lines += [Text(f"{spi_text(f.spi)}: keys matched across NAT ({arrow_text(f.keys_nat)})", "cyan")
              for f in flows if f.keys_nat]
    # AH (crypto.ah): "Decr" counts ICVs verified; an ICV that verifies with the key file's address
    # in place of the wire's proves a NAT, which AH cannot cross (RFC 4302 §3.3.3)
    lines += [Text(f"{spi_text(f.spi)}: AH, {_count(f.decrypted, 'ICV', 'ICVs')} verified, "
                   f"{f.icv_failed} failed", "red" if f.icv_failed else "green")
              for f in flows if f.protocol == "AH" and (f.decrypted or f.icv_failed)]
    lines += [Text(f"{spi_text(f.spi)}: ICVs verify with {f.ah_nat.split(' -> ')[0]} in place of "
                   f"{f.ah_nat.split(' -> ')[-1]}: a NAT rewrote it, AH cannot cross a NAT", "bold red")
              for f in flows if f.ah_nat]
    lines += [Text(f"{spi_text(f.spi)}: {f.ah_icv_len}", "bold red") for f in flows if f.ah_icv_len]
    return [Text(""), *lines] if lines else []


class SaDetail(Static):
    """Renders the SA named by :attr:`ref` from :attr:`table` (attributes down)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.table: SaTable | None = None
        self.keys: Any = None  # keys.KeyStore (read-only lookups) or None
        self.ref: SaRef | None = None
        self.show_keys = False
        self.content: Any = Text("")
        self.empty: str | None = None  # why the session holds no IPsec (panes.empty_text)
        self.waiting = False  # live, or a followed file: SAs may still come

    def show_session(self, view: SessionView) -> None:
        self.empty, self.waiting = view.empty, view.live and not view.ended
        self.show(view.table, self.ref, view.session.keys)

    def show(self, table: SaTable | None, ref: SaRef | None, keys: Any = None, show_keys: bool | None = None) -> None:
        self.table, self.ref, self.keys = table, ref, keys
        if show_keys is not None:
            self.show_keys = show_keys
        self.content = self._render_ref()
        self.update(self.content)

    def as_text(self, width: int = 160) -> str:
        """What the pane shows, as plain text (for tests and copy/paste)."""
        from rich.console import Console

        console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
        console.print(self.content)
        return console.export_text()

    def _render_ref(self) -> Any:
        from rich.console import Group

        table, ref = self.table, self.ref
        if table is None:
            return Text("Loading…", "dim")
        if ref is None:
            if not (table.ike_sas or table.child_sas or table.flows or table.enc_sas):  # no tree to choose from
                # the words every pane uses (panes.empty_text): live, "Nothing captured yet", not a verdict
                if self.empty:
                    return Text(self.empty, "dim")
                return Text("No IPsec SA yet: waiting for IKE, ESP or AH packets." if self.waiting else
                            "No IPsec SA in this capture: no IKE, ESP or AH seen.", "dim")
            # the tree names the SA under its cursor (SaTree._rebuild): this is only ever brief
            return Text("Move the cursor in the SA tree on the left to see an SA's details.", "dim")
        first = table.first_ts
        if ref.kind == "ike" and ref.key in table.ike_sas:
            return Group(*self._ike(table, table.ike_sas[ref.key], first))  # type: ignore[index]
        if ref.kind == "child" and ref.key in table.child_sas:
            return Group(*self._child(table, table.child_sas[ref.key], first))  # type: ignore[index]
        if ref.kind == "flow" and ref.key in table.flows:
            flow = table.flows[ref.key]  # type: ignore[index]
            return Group(Text("ESP flow without a known SA (no IKE seen for it)", "bold magenta"),
                         flow_table([flow], first, table), *flow_notes([flow]), *self._esp_keys([flow]))
        if ref.kind == "enc" and ref.key in table.enc_sas:
            return self._enc(table.enc_sas[ref.key], first)  # type: ignore[index]
        if ref.kind == "pair":
            a, b = ref.key  # type: ignore[misc]
            sas = pair_sas(table, a, b)
            moves = pair_moves(table, a, b)
            g = _kv(f"Peers {a} ⇄ {b}")
            if moves:
                # the pair as the tree names it (IKE_SA_INIT's addresses), and where it went (RFC 4555 §3.5)
                g.add_row("Moved", "\n".join(_move_text(rb, first) for rb in moves))
            g.add_row("IKE SAs", str(len(sas)))
            # An IKE rekey hands CHILD SAs on and both IKE SAs list them: count each once. The
            # tree lists CHILD SAs with no IKE SA (inferred from ESP) under the pair too: count them.
            children = {cid for s in sas for cid in s.children}
            children |= {c.id for c in table.child_sas.values() if orphan_pair(c, table) == pair_key(a, b)}
            g.add_row("CHILD SAs", str(len(children)))
            encs = sum(1 for e in table.enc_sas.values() if {e.src, e.dst} == {a, b})
            if encs:  # an OpenBSD enc(4) capture: its SAs have no ESP/AH packets to list below
                g.add_row("enc(4) SAs", f"{encs} (cleartext side, no ESP/AH header; each is a node in the tree)")
            # the flows of the pair's SAs at every address they had, not only IKE_SA_INIT's pair
            return Group(g, Text(""), flow_table(pair_flows(table, a, b), first, table))
        return Text("That SA is no longer in the table.", "dim")

    def _ike(self, table: SaTable, sa: IkeSa, first: float | None) -> list[Any]:
        g = _kv(f"IKEv{sa.version} SA {ike_sa_text(sa.ike_spi_i, sa.ike_spi_r)}")
        # as the evidence says it (IkeSa.state_text): "established" alone read as a live SA whose
        # peer a finding says is dead or restarted (analysis.peer_gone), as the tree says "dead"
        # and why it failed or stopped ("failed: NO_PROPOSAL_CHOSEN from 198.18.0.2 (frame 2)", an IKEv1
        # phase 1's "incomplete: no answer to MM5 …", IkeSa.stall), as sas says it
        bad = sa.peer_gone is not None or sa.state_word == "incomplete"
        g.add_row("State", Text(sa.state_text(timefmt.at), "bold red" if bad else STATE_STYLE.get(sa.state, "")))
        g.add_row("Initiator", endpoint_text(sa.initiator, sa.initiator_port) + (f"  id {sa.id_i}" if sa.id_i else ""))
        g.add_row("Responder", endpoint_text(sa.responder, sa.responder_port) + (f"  id {sa.id_r}" if sa.id_r else ""))
        g.add_row("Proposal", sa.proposal or "—")
        if sa.offered:
            g.add_row("Offered", "\n".join(sa.offered))
        g.add_row("DH group", _enum_name(iana.DhGroup, sa.dh_group))
        g.add_row("Auth", sa.auth_method or "—")
        # the side as the analysis decides it: a raw hash verdict names a peer that only forces encapsulation
        from ...analysis.rules.nat_mtu import nat_phrase  # the rules: not on the first screen

        g.add_row("NAT", nat_phrase(table, sa) if sa.nat_detected or sa.nat_rebindings else ("none detected" if sa.nat_initiator is not None else "—"))
        g.add_row("Created", fmt_ts(sa.created_ts, first))
        if sa.failure and sa.state != SaState.FAILED:  # (a FAILED one's State row says what refused it)
            g.add_row("Failed", sa.failure + (f" ({frame_ref(sa.failure_frame)})" if sa.failure_frame else ""))
        g.add_row("Established", fmt_ts(sa.established_ts, first))
        if sa.deleted_ts is not None:
            g.add_row("Deleted", f"{fmt_ts(sa.deleted_ts, first)} by {sa.deleted_by or '?'}")
        key_failed = sa.icv_failed + sa.undecryptable
        if sa.decrypted:
            g.add_row("Decrypted", "partly (see Key check)" if key_failed else "yes")
        else:
            g.add_row("Decrypted", "no (the loaded IKE keys did not work)" if key_failed else "no (no IKE keys)")
        if key_failed:
            g.add_row("Key check", ike_key_problems(sa))
        g.add_row("Keys", self._ike_keys(sa))
        g.add_row("Frames", ", ".join(map(str, sa.frames[:20])) + (" …" if len(sa.frames) > 20 else ""))
        chain = rekey_chain_ike(table, sa)
        if len(chain) > 1:
            g.add_row("Rekey chain", " → ".join(
                ("[" + s.ike_spi_i.hex()[:8] + "]") if s is sa else s.ike_spi_i.hex()[:8] for s in chain))
        out: list[Any] = [g, Text("")]
        if sa.exchanges:
            out.append(ExchangeTable(sa, first))
        if sa.children:
            out.append(Text(""))
            out.append(Text("CHILD SAs: " + ", ".join(f"#{c}" for c in sa.children), "bold"))
        return out

    def _enc(self, e: EncSa, first: float | None) -> Any:
        return enc_sa_table(e, first)

    def _child(self, table: SaTable, child: ChildSa, first: float | None) -> list[Any]:
        g = _kv(f"CHILD SA #{child.id} ({child.protocols_text()} {child.mode})")
        g.add_row("State", Text(child.state.value, STATE_STYLE.get(child.state, "")))
        if child.bundle:  # an IKEv1 AH+ESP bundle: each protocol's SA has its own SPIs (RFC 2409 §5.5)
            g.add_row("SPIs", "\n".join(f"{b.protocol} initiator {spi_digits(b.spi_i)}  responder {spi_digits(b.spi_r)}"
                                        for b in child.bundle))
        else:
            g.add_row("SPIs", f"initiator {spi_digits(child.spi_i)}  responder {spi_digits(child.spi_r)}")
        g.add_row("Peers", f"{child.initiator or '?'} (initiator) ⇄ {child.responder or '?'}")
        # AH SAs are inferred from their traffic too: "inferred from ESP" named the wrong protocol
        g.add_row("IKE SA", child.ike_sa or f"— (inferred from {child.protocols_text()} traffic)")
        g.add_row("Proposal", child.proposal or "—")
        if child.offered:
            g.add_row("Offered", "\n".join(child.offered))
        g.add_row("PFS group", _enum_name(iana.DhGroup, child.pfs_group))
        g.add_row("TSi", ", ".join(t.text() for t in child.ts_i) or "—")
        g.add_row("TSr", ", ".join(t.text() for t in child.ts_r) or "—")
        if child.ts_i_offered and tuple(child.ts_i_offered) != tuple(child.ts_i):
            g.add_row("TSi offered", ", ".join(t.text() for t in child.ts_i_offered))
        if child.ts_r_offered and tuple(child.ts_r_offered) != tuple(child.ts_r):
            g.add_row("TSr offered", ", ".join(t.text() for t in child.ts_r_offered))
        g.add_row("Created", f"{fmt_ts(child.created_ts, first)} by {child.created_by or '?'}"
                  + (f" ({frame_ref(child.created_frame)})" if child.created_frame else ""))
        if child.failure:
            g.add_row("Failed", child.failure + (f" ({frame_ref(child.failure_frame)})" if child.failure_frame else ""))
        if child.rekeyed_ts is not None:
            g.add_row("Rekeyed", fmt_ts(child.rekeyed_ts, first))
        if child.deleted_ts is not None:
            g.add_row("Deleted", f"{fmt_ts(child.deleted_ts, first)} by {child.deleted_by or '?'}"
                      + (f" ({frame_ref(child.deleted_frame)})" if child.deleted_frame else ""))
        chain = rekey_chain_child(table, child)
        if len(chain) > 1:
            g.add_row("Rekey chain", Text(" → ").join(
                Text(f"#{c.id}", "bold reverse" if c is child else STATE_STYLE.get(c.state, "")) for c in chain))
        flows = child.flows(table)
        g.add_row("Rate", fmt_rate(flows_rate(flows)))
        if child.keys_source:
            g.add_row("Keys from", short_source(child.keys_source))
        return [g, Text(""), flow_table(flows, first, table), *flow_notes(flows), *self._esp_keys(flows)]

    def _ike_keys(self, sa: IkeSa) -> str:
        if self.keys is None:
            return short_source(sa.keys_source) if sa.keys_source else "none loaded (press a to add a key file)"
        show = self.show_keys
        if sa.version == 1:  # phase-1 keys are found by initiator cookie alone (ikev1_decryption_table)
            cands = self.keys.ikev1_candidates(sa.ike_spi_i)
            if not cands:
                return "no IKE keys for this SA"
            return "\n".join(f"encryption key {redact(k.enc_key, show)}\nfrom {short_source(k.source)}"
                             for k in cands)
        k = self.keys.ike_lookup(sa.ike_spi_i, sa.ike_spi_r)
        if k is None:
            return "no IKE keys for this SA"
        # An AEAD suite (AES-GCM) has no integrity keys: say so rather than leave the row blank.
        lines = [f"{name} {redact(key, show) or 'none (AEAD)'}"
                 for name, key in (("SK_ei", k.sk_ei), ("SK_er", k.sk_er), ("SK_ai", k.sk_ai), ("SK_ar", k.sk_ar))]
        return "\n".join(lines) + f"\nfrom {short_source(k.source)}"

    def _esp_keys(self, flows: list[EspFlow]) -> list[Any]:
        if self.keys is None:
            return []
        found = [(f, self.keys.esp_lookup(f.src, f.dst, f.spi)) for f in flows]
        # The K hint only where there is something to show.
        hint = not self.show_keys and any(k is not None for _, k in found)
        protos = sorted({f.protocol for f in flows}, key=lambda p: (p != "ESP", p)) or ["ESP"]
        g = _kv(f"{'/'.join(protos)} keys" + ("  (hidden; press K to show)" if hint else ""))
        for f, k in found:
            if k is None:
                g.add_row(spi_text(f.spi), Text("no key", "yellow"))
                continue
            # AH has no encryption: its key file rows' ENCR_NULL said nothing (RFC 4302 §2)
            encr = "" if f.protocol == "AH" else f"{_enum_name(iana.EncrTransform, k.encr)} {redact(k.enc_key, self.show_keys)}\n"
            g.add_row(
                spi_text(f.spi),
                encr +
                f"{integ_name(k.integ, k.encr)} {redact(k.auth_key, self.show_keys)}\n"
                f"from {short_source(k.source)}",
            )
        return [Text(""), g]
