"""Policy rules: traffic selectors (RFC 7296 §2.9) and inner packets outside them (RFC 4301 §5.2)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from ...model.idtext import spi_text
from ...model.plural import plural
from ...model.sa import ChildSa, Finding, SaState, SaTable, Severity
from ...state.child_sa import ts_text
from .common import child_ike, child_label, flow_ref, frames_of, note_src, peer_notes_about, uniq
from .core import RuleContext, rule


def _covered(want: list[str], have: list[str]) -> bool:
    """Every selector in ``want`` (CIDR text) lies inside one of ``have``."""
    try:
        nets = [ipaddress.ip_network(h.split("[")[0], strict=False) for h in have]
        return all(any(ipaddress.ip_network(w.split("[")[0], strict=False).subnet_of(n) for n in nets
                       if n.version == ipaddress.ip_network(w.split("[")[0], strict=False).version)
                   for w in want)
    except ValueError:
        return False


def _ts_log(ctx: RuleContext, table: SaTable, c: ChildSa) -> tuple[str, str, tuple]:
    """(explanation suffix, hint, notes) from the responder's log about a refused CHILD SA."""
    sa = child_ike(table, c)
    notes = peer_notes_about(ctx, sa, c.responder, ("ts_config",))
    if not notes:
        return "", "", ()
    # The connection's own definition (vici load-conn dump, CFG 2) in the same log, found by the
    # connection name charon logged for this IKE SA: the configured local_ts/remote_ts.
    files = {n.source.rpartition(":")[0] for n in notes}
    conns = {n.conn for n in notes if n.conn}
    defs = [n for n in ctx.peer_notes if n.kind == "conn_config" and n.conn in conns
            and n.source.rpartition(":")[0] in files]
    parts: list[str] = []
    configured: dict[str, list[str]] = {}
    for n in notes:
        ev = n.data.get("event")
        if ev in ("proposing", "selecting") and n.data.get("ts"):
            # charon's CFG 2 lines list what the child config holds: "us" = local_ts, "other" = remote_ts
            side = "local_ts" if n.data.get("side") == "us" else "remote_ts"
            configured[side] = uniq([*configured.get(side, []), *n.data["ts"]])
        elif ev != "looking":
            parts.append(f"{note_src(n)}: \"{n.text}\"")
    where = ""
    for d in defs:
        for child, cfg in d.data.get("children", {}).items():
            for side in ("local_ts", "remote_ts"):
                if cfg.get(side):
                    configured[side] = uniq([*configured.get(side, []), *cfg[side]])
            where = f" (connection {d.conn}, child {child}; {note_src(d)})"
    text = f" {c.responder}'s log ({'; '.join(parts)})" if parts else f" {c.responder}'s log"
    unacc = next((n for n in notes if n.data.get("event") in ("unacceptable", "looking")), None)
    mine = unacc.data.get("local", []) if unacc else []
    theirs = unacc.data.get("remote", []) if unacc else []
    hint = ""
    if configured:
        cfg = ", ".join(f"{k} {' '.join(v)}" for k, v in sorted(configured.items()))
        text += f": it is configured with {cfg}{where}."
        fixes = []
        if mine and configured.get("local_ts") and not _covered(mine, configured["local_ts"]):
            fixes.append(f"set remote_ts = {', '.join(configured['local_ts'])} on {c.initiator} (it asks for "
                         f"{' '.join(mine)}) or add {' '.join(mine)} to local_ts on {c.responder}")
        if theirs and configured.get("remote_ts") and not _covered(theirs, configured["remote_ts"]):
            fixes.append(f"set local_ts = {', '.join(configured['remote_ts'])} on {c.initiator} (it asks for "
                         f"{' '.join(theirs)}) or add {' '.join(theirs)} to remote_ts on {c.responder}")
        if fixes:
            hint = "; ".join(fixes)
            hint = hint[0].upper() + hint[1:] + "."
        else:
            hint = (f"Make {c.initiator}'s selectors mirror {c.responder}'s ({cfg} there): the initiator's "
                    "local_ts inside the responder's remote_ts and its remote_ts inside the responder's local_ts.")
    elif unacc is not None:
        # "traffic selectors A === B unacceptable": A is the responder's side as the initiator asked for it
        text += (f": it has no child config whose local_ts covers {' '.join(mine)} and whose remote_ts covers "
                 f"{' '.join(theirs)}.")
        hint = (f"Either {c.initiator}'s remote_ts ({' '.join(mine)}) is not the subnet behind {c.responder}, or "
                f"{c.responder} lacks local_ts {' '.join(mine)} / remote_ts {' '.join(theirs)}: make the two "
                "peers' local_ts/remote_ts mirror each other.")
    else:
        text += "."
    return text, hint, tuple(notes) + tuple(defs)


@rule(4, ("IKE-TS-UNACCEPTABLE", "IKE-TS-NARROWED"), (Severity.INFO, Severity.ERROR), ref="RFC 7296 §2.9")
def r_ts(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Traffic selector mismatch (TS_UNACCEPTABLE) and narrowing, with both selector sets."""
    for c in table.child_sas.values():
        if c.failure in ("TS_UNACCEPTABLE", "INVALID_SELECTORS"):
            log, log_hint, notes = _ts_log(ctx, table, c)
            yield Finding(
                code="IKE-TS-UNACCEPTABLE", severity=Severity.ERROR,
                title=f"CHILD SA #{c.id}: {c.responder} refused the traffic selectors (TS_UNACCEPTABLE)",
                explanation=f"{c.initiator} proposed TSi {ts_text(c.ts_i_offered)} (its side) and TSr "
                f"{ts_text(c.ts_r_offered)} (the responder's side); {c.responder} has no policy that "
                "overlaps them and answered TS_UNACCEPTABLE, so no CHILD SA was created." + log,
                frames=frames_of([c.created_frame] if c.created_frame else (), [c.failure_frame] if c.failure_frame else ()),
                sa=f"child:{c.id}",
                hint=log_hint or "Make local_ts/remote_ts mirror each other: the initiator's local_ts must fall inside "
                "the responder's remote_ts and vice versa.", ts=c.created_ts, evidence=notes)
        elif c.state in (SaState.ESTABLISHED, SaState.REKEYED, SaState.DELETED) and c.ts_i_offered and (
                tuple(c.ts_i) != tuple(c.ts_i_offered) or tuple(c.ts_r) != tuple(c.ts_r_offered)) and c.ts_i:
            yield Finding(
                code="IKE-TS-NARROWED", severity=Severity.INFO,
                title=f"CHILD SA #{c.id}: traffic selectors narrowed by {c.responder}",
                explanation=f"{c.initiator} proposed TSi {ts_text(c.ts_i_offered)} / TSr {ts_text(c.ts_r_offered)}; "
                f"{c.responder} accepted only TSi {ts_text(c.ts_i)} / TSr {ts_text(c.ts_r)} (RFC 7296 §2.9). "
                "Traffic outside the narrowed selectors is not carried by this SA.",
                frames=frames_of(c.frames[:2]), sa=f"child:{c.id}",
                hint="If the narrowing is not intended, align local_ts/remote_ts on both peers.", ts=c.created_ts)


@rule(25, "ESP-OUTSIDE-TS", Severity.WARNING, ref="RFC 4301 §5.2")
def r_outside_ts(table: SaTable, ctx: RuleContext) -> Iterator[Finding]:
    """Decrypted inner packets outside the CHILD SA's negotiated selectors (policy mismatch)."""
    # One finding per flow: its count and example packet are that SA's policy mismatch.
    for f in table.flows.values():
        if not f.outside_ts:
            continue
        c = table.child_sas.get(f.child_sa) if f.child_sa is not None else None
        sels = f"TSi {ts_text(c.ts_i)} / TSr {ts_text(c.ts_r)}" if c else "?"
        yield Finding(
            code="ESP-OUTSIDE-TS", severity=Severity.WARNING,
            title=f"{plural(f.outside_ts, 'inner packet')} {f.src} -> {f.dst} outside the negotiated selectors",
            explanation=f"Decrypted packets on SPI {spi_text(f.spi)} (e.g. {f.outside_ts_example}) are not covered by "
            f"{child_label(c)}'s selectors {sels}. The receiver's inbound policy check drops them "
            "(RFC 4301 §5.2).",
            frames=tuple(f.outside_ts_frames), sa=flow_ref(f),
            hint=f"{f.src}'s policy sends more than was negotiated: align its local_ts/remote_ts with the peer's.",
            ts=f.first_ts)
