"""``ipsecscope sas FILE... [-k KEYS...] [--json]``: the security associations in a capture.

Every IKE SA with its CHILD SAs (like ``swanctl --list-sas``, but from the wire): SPIs, peers and
ports, chosen and offered proposals, identities, selectors (offered vs accepted), states, the
rekey chain, who deleted what, and per-direction ESP counters (packets, bytes, loss, replays,
reordering, ICV failures, traffic after delete / after rekey). Several FILEs are read into one
session in the order given (e.g. an IKE capture and a later ESP capture of the same hosts).

JSON (``--json``): the ``ipsecscope.sas/1`` document of :mod:`ipsecscope.export.documents`.

Exit status: 0; 2 when a file or key file cannot be read (one line on stderr says why) — a
capture damaged part-way is still shown up to the damage, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .. import timefmt
from ..analysis.rules.nat_mtu import mobike_phrase, nat_phrase
from ..errors import IpsecscopeError
from ..export.documents import SAS_SCHEMA as SCHEMA
from ..export.documents import capture_info, sas_document
from ..model.idtext import arrow_text, flow_text, ike_sa_text, msg_id_text
from ..model.plural import plural
from ..model.sa import (
    ChildSa,
    EncSa,
    EspFlow,
    SaState,
    SaTable,
    bundle_spis_text,
    counter_lost,
    endpoint_text,
    one_counter,
)
from ..state import names as N
from .common import add_captures_argument, add_keys_argument, error, stop_event, warn, warn_keys

if TYPE_CHECKING:
    from rich.console import Console

    from ..model.ike import TrafficSelector


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sas", help="IKE and CHILD SAs with SPIs, algorithms, selectors, states, rekeys, counters",
        description="Correlate a capture into security associations: IKE SAs with their CHILD SAs, "
                    "ESP flows bound to them, rekey chains and per-direction counters.")
    add_captures_argument(p)
    add_keys_argument(p)
    p.add_argument("--json", action="store_true", help=f"machine-readable output (schema {SCHEMA})")


def run(args: argparse.Namespace) -> int:
    from ..session import Session

    try:
        session = Session.from_files(args.files, args.keys, strict_keys=args.strict_keys, keep_rows=False,
                                     follow=stop_event(args))
    except (IpsecscopeError, OSError) as exc:
        error("sas", exc)
        return 2
    warn_keys("sas", session.keys, session)
    damage = session.damage
    if damage:  # shown up to the damage, and exit status 2
        error("sas", damage)
    for warning in session.warnings:
        warn("sas", warning)
    st = session.stats
    from ..analysis.peer_gone import GONE_RULES
    from ..analysis.rules.core import evaluate_some

    evaluate_some(session.table, session, GONE_RULES)  # marks the IKE SAs whose peer is gone (IkeSa.peer_gone)
    if args.json:
        doc = sas_document(session.table, args.files, capture_info(session))
        # one write: json.dump writes token by token (a write(2) each under PYTHONUNBUFFERED)
        sys.stdout.write(json.dumps(doc, indent=2))
        sys.stdout.write("\n")
    else:
        render(session.table, keys_given=bool(args.keys))
        # Bad input is never silent: say what could not be read (details: `ipsecscope summary`).
        if st.malformed:
            by = ", ".join(f"{k} {v}" for k, v in sorted(st.malformed.items()))
            print(f"malformed: {st.malformed_total} ({by}) of {st.frames} frames")
        if st.truncated:
            print(f"capture cut off: {st.truncated}")
    return 2 if damage else 0


# ---------------------------------------------------------------------------------- text

_STATE_STYLE = {
    SaState.ESTABLISHED: "bold green", SaState.REKEYED: "cyan", SaState.DELETED: "dim",
    SaState.FAILED: "bold red", SaState.INITIATING: "yellow", SaState.INFERRED: "magenta",
    SaState.REDIRECTED: "yellow",
}


def _clock(ts: float | None) -> str:
    return timefmt.at(ts, 3)  # 20:09:15.691 UTC, or in the --tz zone with its offset


def _state(state: SaState, inferred: bool = False, word: str | None = None) -> str:
    # every state has a style: an empty "[]" tag would leave "[/]" closing nothing (a MarkupError);
    # ``word``: the state as the evidence says it (IkeSa.state_word: "incomplete"), styled as recorded
    return f"[{_STATE_STYLE.get(state, 'bold')}]{(word or state.value).upper()}{'?' if inferred else ''}[/]"


def _flow_line(f: EspFlow, shared: dict[int, list[EspFlow]] | None = None) -> str:
    parts = [f"{flow_text(f.src, f.dst, f.spi, f.protocol)}: {f.packets} pkts, {f.bytes} B"]
    group = shared.get(id(f), ()) if shared else ()
    if group:
        # One SA toward several destinations: one sender counter numbers them all (RFC 4303
        # §3.3.3), so a gap toward one destination is a packet to another, not loss: the loss is
        # the counter's, as findings count it.
        others = ", ".join(g.dst for g in group if g is not f)
        parts.append(f"one sequence counter with its packets to {others}")
    if f.decrypted:  # AH encrypts nothing: its count is of ICVs verified (crypto.ah)
        parts.append(f"{f.decrypted} {'verified' if f.protocol == 'AH' else 'decrypted'}")
    if f.no_key:
        parts.append(f"{f.no_key} no key")
    for label, n, style in (("lost", counter_lost(group) if group else f.lost, "yellow"),
                            # lost whole, their later IP fragments never came (ESP-FRAGMENT-LOST)
                            ("arrived as a first IP fragment only", f.frag_lost, "red"), ("replayed", f.duplicates, "red"),
                            ("captured twice", f.capture_duplicates, "dim"),
                            ("reordered", f.reordered, "yellow"), ("ICV failed", f.icv_failed, "red"),
                            ("after delete", f.after_delete, "red"), ("after rekey", f.after_rekey, "cyan"),
                            ("outside TS", f.outside_ts, "red"), ("malformed", f.malformed, "red"),
                            ("unsupported algorithm", f.unsupported, "red")):
        if n:
            parts.append(f"[{style}]{n} {label}[/]")
    if f.ah_nat:
        parts.append(f"[red]ICV verifies with {f.ah_nat.split(' -> ')[0]}: NAT[/]")
    if f.ah_icv_len:
        from rich.markup import escape

        parts.append(f"[red]{escape(f.ah_icv_len)}[/]")
    if f.udp_encap:
        parts.append(f"UDP {f.sport}→{f.dport}")
    if f.keys_nat:
        parts.append(f"keys matched across NAT ({arrow_text(f.keys_nat)})")
    return ", ".join(parts)


def _child_node(parent, c: ChildSa, table: SaTable, shared: dict[int, list[EspFlow]] | None = None) -> None:
    from rich.markup import escape  # text read off the wire or from files is not markup

    head = (f"CHILD_SA #{c.id} {_state(c.state)} {c.protocols_text()} {c.mode}  "
            f"SPIs {bundle_spis_text(c)}")
    node = parent.add(head)
    node.add(f"{c.initiator} ⇄ {c.responder}, created {_clock(c.created_ts)} by {c.created_by}")
    if c.proposal or c.offered:
        line = f"proposal [bold]{c.proposal or '—'}[/]"
        if c.offered and c.offered != [c.proposal]:
            line += f"  (offered: {', '.join(c.offered)})"
        if c.pfs_group:
            line += f"  PFS {N.dh_name(c.pfs_group)}"
        node.add(line)
    if c.ts_i or c.ts_r or c.ts_i_offered:
        def tss(lst: Iterable[TrafficSelector]) -> str:  # '10.1.0.0/24', as charon logs it
            return ", ".join(t.text() for t in lst)

        ts = f"TS {tss(c.ts_i) or '?'} === {tss(c.ts_r) or '?'}"
        if c.ts_i_offered and (tuple(c.ts_i) != tuple(c.ts_i_offered) or tuple(c.ts_r) != tuple(c.ts_r_offered)):
            ts += f"  (offered {tss(c.ts_i_offered)} === {tss(c.ts_r_offered)})"
        node.add(ts)
    if c.failure:
        node.add(f"[bold red]failed: {c.failure}[/]")
    if c.rekeyed_from:
        node.add(f"rekey of CHILD_SA #{c.rekeyed_from}")
    if c.rekeyed_into:
        node.add(f"rekeyed into CHILD_SA #{c.rekeyed_into} at {_clock(c.rekeyed_ts)}"
                 + (" [yellow](collision)[/]" if c.rekey_collision else ""))
    if c.deleted_ts is not None:
        node.add(f"deleted at {_clock(c.deleted_ts)} by {c.deleted_by}")
    if c.inferred_reason:
        node.add(f"[magenta]inferred:[/] {escape(c.inferred_reason)}")
    if c.keys_source:
        node.add(f"keys: {escape(c.keys_source)}")
    for f in c.flows(table):
        node.add(_flow_line(f, shared))


def _render_enc(sas: Iterable[EncSa], console: Console) -> None:
    """The SAs an OpenBSD enc(4) capture names (model.sa.EncSa): one line each, its inner traffic
    below. Sequence numbers are not in enc frames, so loss is not counted but said unknown."""
    from rich.markup import escape

    from ..decode.link import enc_flags_text
    from ..session_detail import iana_proto  # the session module is loaded already (it made the table)

    for e in sas:
        span = (f", {_clock(e.first_ts)}–{_clock(e.last_ts)}" if e.first_ts is not None else "")
        console.print(f"enc(4) SA [bold]{e.protocol} SPI 0x{e.spi:08x}[/] {escape(e.src)} → {escape(e.dst)} "
                      f"({enc_flags_text(e.flags)}): {plural(e.packets, 'packet')}, {plural(e.bytes, 'byte')}"
                      f"{span}; sequence numbers not available (the enc header carries none)")
        for (s, d, p), n in e.inner.items():
            console.print(f"    inner {escape(s)} → {escape(d)} {escape(iana_proto(p))}: {plural(n, 'packet')}")


def render(table: SaTable, console: Console | None = None, keys_given: bool = False) -> None:
    from rich.markup import escape  # IDs, gateway names, file names: text, never markup
    from rich.tree import Tree

    from .text import Hanging, text_console  # rich: only for text output (`--json` never loads it)

    console = console or text_console()
    if table.enc_sas:
        _render_enc(table.enc_sas.values(), console)
    if not table.ike_sas and not table.child_sas:
        if not table.enc_sas:
            console.print("No IKE or ESP security associations in this capture.")
        return
    shown: set[int] = set()
    shared = one_counter(table)
    for sa in table.ike_sas.values():
        # a peer the findings say is gone: the state as the evidence says it, not only as recorded
        gone = f"[bold red], {escape(sa.peer_gone.text(_clock))}[/]" if sa.peer_gone is not None else ""
        head = (f"IKEv{sa.version} SA [bold]{sa.key}[/] {_state(sa.state, sa.state_inferred, None if gone else sa.state_word)}{gone}  "
                f"{escape(endpoint_text(sa.initiator, sa.initiator_port))} → "
                f"{escape(endpoint_text(sa.responder, sa.responder_port))}")
        tree = Tree(Hanging(head, 4))  # a wrapped head line continues indented, split at spaces only
        if sa.id_i or sa.id_r:
            tree.add(f"IDs {escape(sa.id_i or '?')} → {escape(sa.id_r or '?')}"
                     + (f" ({sa.auth_method})" if sa.auth_method else ""))
        line = f"proposal [bold]{sa.proposal or '—'}[/]"
        if sa.offered and sa.offered != [sa.proposal]:
            line += f"  (offered: {', '.join(sa.offered)})"
        tree.add(line)
        if sa.invalid_ke_requested:
            tree.add(f"INVALID_KE_PAYLOAD: responder asked for {', '.join(N.dh_name(g) for g in sa.invalid_ke_requested)}")
        if sa.nat_detected is not None or sa.nat_rebindings:
            tree.add(f"NAT: {nat_phrase(table, sa, mobike=False)}" + (
                ("; IKE and ESP in TCP 4500 (RFC 8229)" if sa.tcp_frame is not None else "; NAT-T on UDP 4500")
                if sa.nat_t else ""))
        if sa.mobike_updates:  # RFC 4555 §3.5: the SA's addresses changed, its SPIs did not
            tree.add(f"MOBIKE: {escape(mobike_phrase(sa))}")
        times = f"created {_clock(sa.created_ts)}"
        if sa.established_ts:
            times += f", established {_clock(sa.established_ts)}"
        if sa.deleted_ts:
            times += f", deleted {_clock(sa.deleted_ts)} by {sa.deleted_by}"
        tree.add(times)
        why = sa.state_text(_clock) if sa.peer_gone is None else ""
        if why != sa.state_word:  # why it failed or stopped, as every view says it (IkeSa.state_text)
            bad = sa.state == SaState.FAILED or sa.state_word == "incomplete"
            tree.add(f"[bold red]{escape(why)}[/]" if bad else escape(why))
        for label, ref in (("rekey of", sa.rekeyed_from), ("rekeyed into", sa.rekeyed_into),
                           ("retry of", sa.retry_of), ("retried as", sa.retried_by)):
            if ref:
                tree.add(f"{label} {ref}")
        if sa.icv_failed:
            tree.add(f"[bold red]{plural(sa.icv_failed, 'encrypted message')} failed the ICV check with the IKE keys given: "
                     "wrong SK_e/SK_a, or the wrong algorithm for this SA[/]")
        if sa.undecryptable:
            good = [a for a in sa.decrypted_from if a not in sa.key_failed_from]
            split = f" — all sent by {', '.join(sa.key_failed_from)}, while {', '.join(good)}'s decrypt" if good else ""
            tree.add(f"[bold red]{plural(sa.undecryptable, 'encrypted message')} could not be decrypted with the loaded key "
                     f"(wrong key?){split}[/]")
        elif not sa.decrypted and not sa.icv_failed and any(x.encrypted for x in sa.exchanges):
            tree.add("[dim]encrypted payloads not readable: the keys given hold none for this IKE SA "
                     f"(SPIs {ike_sa_text(sa.ike_spi_i, sa.ike_spi_r)})[/]" if keys_given else
                     "[dim]encrypted payloads not readable (no IKE keys): give -k to see IDs, CHILD SAs, selectors[/]")
        xs = tree.add(plural(len(sa.exchanges), "exchange"))
        for x in sa.exchanges:
            fr = (",".join(map(str, x.request_frames[:4])) + ("…" if len(x.request_frames) > 4 else "")
                  or "not captured")  # an answer whose request the capture missed
            rf = ",".join(map(str, x.response_frames[:4])) or (
                "—" if N.one_way(x.exchange, sa.version) else "[red]no response[/]")
            extra = f" [yellow]{plural(x.retransmits, 'retransmit')}[/]" if x.retransmits else ""
            err = f" [red]{x.error_name}[/]" if x.error_name else ""
            xs.add(f"#{msg_id_text(x.msg_id)} {N.exchange_name(x.exchange, sa.version)} from {x.requester} "
                   f"(frames {fr} → {rf}){extra}{err}  {escape(arrow_text(x.summary))}")
        for cid in sa.children:
            c = table.child_sas.get(cid)
            if c is not None and c.ike_sa not in (None, sa.key) and c.ike_sa in table.ike_sas:
                # RFC 7296 §2.18: an IKE rekey moves the CHILD SAs; show each under its current SA.
                tree.add(f"CHILD_SA #{cid} moved to IKE SA {c.ike_sa} (IKE rekey)")
            elif c is not None and cid not in shown:
                shown.add(cid)
                _child_node(tree, c, table, shared)
        console.print(tree)
    orphans = [c for c in table.child_sas.values() if c.id not in shown]
    if orphans:
        tree = Tree("CHILD SAs with no IKE SA in the capture")
        for c in orphans:
            _child_node(tree, c, table, shared)
        console.print(tree)
