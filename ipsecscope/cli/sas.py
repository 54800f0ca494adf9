"""``ipsecscope sas FILE... [-k KEYS...] [--json]``: the security associations in a capture.

Every IKE SA with its CHILD SAs (like ``swanctl --list-sas``, but from the wire): SPIs, peers and
ports, chosen and offered proposals, identities, selectors (offered vs accepted), states, the
rekey chain, who deleted what, and per-direction ESP counters (packets, bytes, loss, replays,
reordering, ICV failures, traffic after delete / after rekey). Several FILEs are read into one
session in the order given (e.g. an IKE capture and a later ESP capture of the same hosts).

JSON schema ``"ipsecscope.sas/1"`` (``--json``; fields are only ever added within /1)::

    {
      "schema": "ipsecscope.sas/1",
      "files": [str], "first_time": float|null, "last_time": float|null,
      "ike_sas": [{
        "key": "spii_spir" (16+16 hex), "version": 1|2, "spi_i": hex, "spi_r": hex,
        "initiator": str, "responder": str, "initiator_port": int, "responder_port": int,
        "state": "initiating"|"established"|"rekeyed"|"deleted"|"failed"|"inferred",
        "state_inferred": bool,            # guessed from encrypted traffic we could not read
        "failure": str|null, "proposal": str|null, "offered": [str], "dh_group": str|null,
        "ke_groups": [str], "invalid_ke_requested": [str], "id_i": str|null, "id_r": str|null,
        "auth_method": str|null, "mode": str|null (IKEv1 Main/Aggressive),
        "nat": {"initiator": bool|null, "responder": bool|null, "nat_t": bool},
        "ike_fragmentation": [bool, bool], "vendor_ids": [str], "decrypted": bool,
        "icv_failed": int,                 # encrypted messages the given IKE keys failed to authenticate
        "undecryptable": int,              # encrypted messages a loaded key gave no payload chain for (IKEv1: wrong key)
        "created": float|null, "established": float|null, "deleted": float|null, "deleted_by": str|null,
        "rekeyed_from": key|null, "rekeyed_into": key|null, "retry_of": key|null, "retried_by": key|null,
        "children": [int],
        "exchanges": [{"exchange": str, "msg_id": int, "requester": str, "request_frames": [int],
                       "response_frames": [int], "request_time": float|null, "response_time": float|null,
                       "retransmits": int, "fragments": int, "ip_fragmented": bool, "encrypted": bool,
                       "decrypted": bool, "error": str|null, "notifies": [str], "summary": str}]
      }],
      "child_sas": [{
        "id": int, "ike_sa": key|null, "state": str, "protocol": "ESP"|"AH", "mode": str,
        "spi_i": "0x%08x"|null, "spi_r": "0x%08x"|null,   # inbound SPI of the initiator / responder
        "initiator": str, "responder": str, "created_by": str, "created": float|null,
        "proposal": str|null, "offered": [str], "pfs_group": str|null, "esn": bool|null,
        "ts_i": [str], "ts_r": [str], "ts_i_offered": [str], "ts_r_offered": [str],
        "rekeyed_from": int|null, "rekeyed_into": int|null, "rekeyed": float|null,
        "rekey_collision": bool, "deleted": float|null, "deleted_by": str|null, "failure": str|null,
        "lifetime": float|null, "keys_source": str|null, "inferred_reason": str,
        "flows": [flow keys "src>dst:0xspi"]
      }],
      "flows": [{
        "key": "src>dst:0xspi", "src": str, "dst": str, "spi": "0x%08x", "protocol": str,
        "child_sa": int|null, "packets": int, "bytes": int, "first_time": float|null,
        "last_time": float|null, "first_frame": int, "last_frame": int, "seq_min": int|null,
        "seq_max": int|null, "lost": int, "duplicates": int, "reordered": int, "icv_failed": int,
        "no_key": int, "decrypted": int, "malformed": int, "unsupported": int, "after_delete": int, "after_rekey": int,
        "after_rekey_last_time": float|null, "outside_ts": int, "udp_encap": bool, "sport": int, "dport": int
      }],
      "capture": {"frames": int, "malformed": {layer: int}, "truncated": str|null}   # what could not be read
    }

Exit status: 0; 2 when a file or key file cannot be read (one line on stderr says why) — a
capture damaged part-way is still shown up to the damage, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from ..errors import IpsecscopeError
from ..model.iana import Ikev1Exchange
from ..model.sa import ChildSa, EspFlow, IkeSa, SaState, SaTable
from ..state import names as N
from .common import add_keys_argument

SCHEMA = "ipsecscope.sas/1"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sas", help="IKE and CHILD SAs with SPIs, algorithms, selectors, states, rekeys, counters",
        description="Correlate a capture into security associations: IKE SAs with their CHILD SAs, "
                    "ESP flows bound to them, rekey chains and per-direction counters.")
    p.add_argument("files", nargs="+", metavar="FILE", help="capture file(s), read into one session in order")
    add_keys_argument(p)
    p.add_argument("--json", action="store_true", help=f"machine-readable output (schema {SCHEMA})")


def load_session(files: list[str], keys: list[str]):
    """Build a session over the files with the keys. Shared by ``sas`` and ``findings``.

    Returns ``(session, damage)``: a capture damaged part-way (CaptureError after sound frames)
    is analysed up to the damage and ``damage`` says what was wrong; a file that is not a capture
    at all, or an unreadable key file, raises.
    """
    from ..errors import CaptureError, CaptureFormatError
    from ..session import Session

    s = Session()
    if keys:
        s.add_key_files(keys)
    damage = None
    for f in files:
        before = s.stats.frames
        try:
            s.load(f)
        except CaptureFormatError:
            raise
        except CaptureError as exc:
            if s.stats.frames == before:
                raise
            damage = f"{exc} (analysed the {s.stats.frames - before} frame(s) before the damage)"
        if s.stats.truncated and damage is None:
            # A capture cut off in its last record (tcpdump killed, disk full) is still input
            # damage: the answer is about less than the file claims, so the exit status says so.
            damage = f"{f}: {s.stats.truncated} (analysed the {s.stats.frames - before} frame(s) before it)"
    return s, damage


def run(args: argparse.Namespace) -> int:
    try:
        session, damage = load_session(args.files, args.keys)
    except (IpsecscopeError, OSError) as exc:
        print(f"ipsecscope sas: {exc}", file=sys.stderr)
        return 2
    if damage:
        print(f"ipsecscope sas: {damage}", file=sys.stderr)
    st = session.stats
    if args.json:
        doc = table_to_dict(session.table)
        doc = {"schema": SCHEMA, "files": [str(f) for f in args.files], **doc,
               "capture": {"frames": st.frames, "malformed": dict(st.malformed), "truncated": st.truncated}}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(session.table)
        # Bad input is never silent: say what could not be read (details: `ipsecscope summary`).
        if st.malformed:
            by = ", ".join(f"{k} {v}" for k, v in sorted(st.malformed.items()))
            print(f"malformed: {st.malformed_total} ({by}) of {st.frames} frames")
        if st.truncated:
            print(f"capture cut off: {st.truncated}")
    return 2 if damage else 0


# ---------------------------------------------------------------------------------- JSON


def _spi(v: int | None) -> str | None:
    return None if v is None else f"0x{v:08x}"


def flow_key(f: EspFlow) -> str:
    return f"{f.src}>{f.dst}:0x{f.spi:08x}"


def ike_to_dict(sa: IkeSa) -> dict:
    return {
        "key": sa.key, "version": sa.version, "spi_i": sa.ike_spi_i.hex(), "spi_r": sa.ike_spi_r.hex(),
        "initiator": sa.initiator, "responder": sa.responder, "initiator_port": sa.initiator_port,
        "responder_port": sa.responder_port, "state": sa.state.value, "state_inferred": sa.state_inferred,
        "failure": sa.failure, "proposal": sa.proposal, "offered": list(sa.offered),
        "dh_group": N.dh_name(sa.dh_group) if sa.dh_group is not None else None,
        "ke_groups": [N.dh_name(g) for g in sa.ke_groups],
        "invalid_ke_requested": [N.dh_name(g) for g in sa.invalid_ke_requested],
        "id_i": sa.id_i, "id_r": sa.id_r, "auth_method": sa.auth_method, "mode": sa.mode,
        "nat": {"initiator": sa.nat_initiator, "responder": sa.nat_responder, "nat_t": sa.nat_t},
        "ike_fragmentation": list(sa.ike_fragmentation), "vendor_ids": list(sa.vendor_ids),
        "decrypted": sa.decrypted, "icv_failed": sa.icv_failed,
        "undecryptable": sa.undecryptable, "created": sa.created_ts, "established": sa.established_ts,
        "deleted": sa.deleted_ts, "deleted_by": sa.deleted_by, "rekeyed_from": sa.rekeyed_from,
        "rekeyed_into": sa.rekeyed_into, "retry_of": sa.retry_of, "retried_by": sa.retried_by,
        "children": list(sa.children),
        "exchanges": [{
            "exchange": N.exchange_name(x.exchange, sa.version), "msg_id": x.msg_id, "requester": x.requester,
            "request_frames": list(x.request_frames), "response_frames": list(x.response_frames),
            "request_time": x.request_ts, "response_time": x.response_ts, "retransmits": x.retransmits,
            "fragments": x.fragments, "ip_fragmented": x.ip_fragmented, "encrypted": x.encrypted,
            "decrypted": x.decrypted, "error": x.error_name,
            "notifies": [N.notify_name(n, sa.version) for n in x.notifies], "summary": x.summary,
        } for x in sa.exchanges],
    }


def child_to_dict(c: ChildSa, table: SaTable) -> dict:
    return {
        "id": c.id, "ike_sa": c.ike_sa, "state": c.state.value, "protocol": c.protocol, "mode": c.mode,
        "spi_i": _spi(c.spi_i), "spi_r": _spi(c.spi_r), "initiator": c.initiator, "responder": c.responder,
        "created_by": c.created_by, "created": c.created_ts, "proposal": c.proposal, "offered": list(c.offered),
        "pfs_group": N.dh_name(c.pfs_group) if c.pfs_group else None, "esn": c.esn,
        "ts_i": [str(t) for t in c.ts_i], "ts_r": [str(t) for t in c.ts_r],
        "ts_i_offered": [str(t) for t in c.ts_i_offered], "ts_r_offered": [str(t) for t in c.ts_r_offered],
        "rekeyed_from": c.rekeyed_from, "rekeyed_into": c.rekeyed_into, "rekeyed": c.rekeyed_ts,
        "rekey_collision": c.rekey_collision, "deleted": c.deleted_ts, "deleted_by": c.deleted_by,
        "failure": c.failure, "lifetime": c.lifetime_s, "keys_source": c.keys_source,
        "inferred_reason": c.inferred_reason, "flows": [flow_key(f) for f in c.flows(table)],
    }


def flow_to_dict(f: EspFlow) -> dict:
    return {
        "key": flow_key(f), "src": f.src, "dst": f.dst, "spi": _spi(f.spi), "protocol": f.protocol,
        "child_sa": f.child_sa, "packets": f.packets, "bytes": f.bytes, "first_time": f.first_ts,
        "last_time": f.last_ts, "first_frame": f.first_frame, "last_frame": f.last_frame,
        "seq_min": f.seq_min, "seq_max": f.seq_max, "lost": f.lost, "duplicates": f.duplicates,
        "reordered": f.reordered, "icv_failed": f.icv_failed, "no_key": f.no_key, "decrypted": f.decrypted,
        "malformed": f.malformed, "unsupported": f.unsupported, "after_delete": f.after_delete, "after_rekey": f.after_rekey,
        "after_rekey_last_time": f.after_rekey_last_ts, "outside_ts": f.outside_ts,
        "udp_encap": f.udp_encap, "sport": f.sport, "dport": f.dport,
    }


def table_to_dict(table: SaTable) -> dict:
    return {
        "first_time": table.first_ts, "last_time": table.last_ts,
        "ike_sas": [ike_to_dict(sa) for sa in table.ike_sas.values()],
        "child_sas": [child_to_dict(c, table) for c in table.child_sas.values()],
        "flows": [flow_to_dict(f) for f in table.flows.values()],
    }


# ---------------------------------------------------------------------------------- text

_STATE_STYLE = {
    SaState.ESTABLISHED: "bold green", SaState.REKEYED: "cyan", SaState.DELETED: "dim",
    SaState.FAILED: "bold red", SaState.INITIATING: "yellow", SaState.INFERRED: "magenta",
}


def _clock(ts: float | None) -> str:
    if ts is None:
        return "?"
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]
    except (ValueError, OverflowError, OSError):  # a corrupted frame timestamp (year > 9999)
        return f"{ts:.3f}"


def _state(state: SaState, inferred: bool = False) -> str:
    style = _STATE_STYLE.get(state, "")
    return f"[{style}]{state.value.upper()}{'?' if inferred else ''}[/]"


def _flow_line(f: EspFlow) -> str:
    parts = [f"{f.src} → {f.dst} 0x{f.spi:08x}: {f.packets} pkts, {f.bytes} B"]
    if f.decrypted:
        parts.append(f"{f.decrypted} decrypted")
    if f.no_key:
        parts.append(f"{f.no_key} no key")
    for label, n, style in (("lost", f.lost, "yellow"), ("replayed", f.duplicates, "red"),
                            ("reordered", f.reordered, "yellow"), ("ICV failed", f.icv_failed, "red"),
                            ("after delete", f.after_delete, "red"), ("after rekey", f.after_rekey, "cyan"),
                            ("outside TS", f.outside_ts, "red"), ("malformed", f.malformed, "red"),
                            ("unsupported algorithm", f.unsupported, "red")):
        if n:
            parts.append(f"[{style}]{n} {label}[/]")
    if f.udp_encap:
        parts.append(f"UDP {f.sport}→{f.dport}")
    return ", ".join(parts)


def _child_node(parent, c: ChildSa, table: SaTable) -> None:
    head = (f"CHILD_SA #{c.id} {_state(c.state)} {c.protocol} {c.mode}  "
            f"SPIs {_spi(c.spi_i) or '?'} (i) / {_spi(c.spi_r) or '?'} (r)")
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
        ts = f"TS {', '.join(map(str, c.ts_i)) or '?'} === {', '.join(map(str, c.ts_r)) or '?'}"
        if c.ts_i_offered and (tuple(c.ts_i) != tuple(c.ts_i_offered) or tuple(c.ts_r) != tuple(c.ts_r_offered)):
            ts += (f"  (offered {', '.join(map(str, c.ts_i_offered))} === "
                   f"{', '.join(map(str, c.ts_r_offered))})")
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
        node.add(f"[magenta]inferred:[/] {c.inferred_reason}")
    if c.keys_source:
        node.add(f"keys: {c.keys_source}")
    for f in c.flows(table):
        node.add(_flow_line(f))


def render(table: SaTable, console=None) -> None:
    from rich.console import Console
    from rich.tree import Tree

    console = console or Console()
    if not table.ike_sas and not table.child_sas:
        console.print("No IKE or ESP security associations in this capture.")
        return
    shown: set[int] = set()
    for sa in table.ike_sas.values():
        head = (f"IKEv{sa.version} SA [bold]{sa.key}[/] {_state(sa.state, sa.state_inferred)}  "
                f"{sa.initiator}:{sa.initiator_port} → {sa.responder}:{sa.responder_port}")
        tree = Tree(head)
        if sa.id_i or sa.id_r:
            tree.add(f"IDs {sa.id_i or '?'} → {sa.id_r or '?'}" + (f" ({sa.auth_method})" if sa.auth_method else ""))
        line = f"proposal [bold]{sa.proposal or '—'}[/]"
        if sa.offered and sa.offered != [sa.proposal]:
            line += f"  (offered: {', '.join(sa.offered)})"
        tree.add(line)
        if sa.invalid_ke_requested:
            tree.add(f"INVALID_KE_PAYLOAD: responder asked for {', '.join(N.dh_name(g) for g in sa.invalid_ke_requested)}")
        if sa.nat_detected is not None:
            who = [w for w, v in (("initiator", sa.nat_initiator), ("responder", sa.nat_responder)) if v]
            tree.add(f"NAT: {', '.join(who) or 'none'}" + ("; NAT-T on UDP 4500" if sa.nat_t else ""))
        times = f"created {_clock(sa.created_ts)}"
        if sa.established_ts:
            times += f", established {_clock(sa.established_ts)}"
        if sa.deleted_ts:
            times += f", deleted {_clock(sa.deleted_ts)} by {sa.deleted_by}"
        tree.add(times)
        if sa.failure:
            tree.add(f"[bold red]failed: {sa.failure}[/]")
        for label, ref in (("rekey of", sa.rekeyed_from), ("rekeyed into", sa.rekeyed_into),
                           ("retry of", sa.retry_of), ("retried as", sa.retried_by)):
            if ref:
                tree.add(f"{label} {ref}")
        if sa.icv_failed:
            tree.add(f"[bold red]{sa.icv_failed} encrypted message(s) failed the ICV check with the IKE keys given: "
                     "wrong SK_e/SK_a, or the wrong algorithm for this SA[/]")
        if sa.undecryptable:
            good = [a for a in sa.decrypted_from if a not in sa.key_failed_from]
            split = f" — all sent by {', '.join(sa.key_failed_from)}, while {', '.join(good)}'s decrypt" if good else ""
            tree.add(f"[bold red]{sa.undecryptable} encrypted message(s) could not be decrypted with the loaded key "
                     f"(wrong key?){split}[/]")
        elif not sa.decrypted and not sa.icv_failed and any(x.encrypted for x in sa.exchanges):
            tree.add("[dim]encrypted payloads not readable (no IKE keys): give -k to see IDs, CHILD SAs, selectors[/]")
        xs = tree.add(f"{len(sa.exchanges)} exchange(s)")
        for x in sa.exchanges:
            fr = ",".join(map(str, x.request_frames[:4])) + ("…" if len(x.request_frames) > 4 else "")
            one_way = sa.version == 1 and x.exchange in (Ikev1Exchange.INFORMATIONAL, Ikev1Exchange.TRANSACTION)
            rf = ",".join(map(str, x.response_frames[:4])) or ("—" if one_way else "[red]no response[/]")
            extra = f" [yellow]{x.retransmits} retransmit(s)[/]" if x.retransmits else ""
            err = f" [red]{x.error_name}[/]" if x.error_name else ""
            xs.add(f"#{x.msg_id} {N.exchange_name(x.exchange, sa.version)} from {x.requester} "
                   f"(frames {fr} → {rf}){extra}{err}  {x.summary}")
        for cid in sa.children:
            c = table.child_sas.get(cid)
            if c is not None and c.ike_sa not in (None, sa.key) and c.ike_sa in table.ike_sas:
                # RFC 7296 §2.18: an IKE rekey moves the CHILD SAs; show each under its current SA.
                tree.add(f"CHILD_SA #{cid} moved to IKE SA {c.ike_sa} (IKE rekey)")
            elif c is not None and cid not in shown:
                shown.add(cid)
                _child_node(tree, c, table)
        console.print(tree)
    orphans = [c for c in table.child_sas.values() if c.id not in shown]
    if orphans:
        tree = Tree("CHILD SAs with no IKE SA in the capture")
        for c in orphans:
            _child_node(tree, c, table)
        console.print(tree)
