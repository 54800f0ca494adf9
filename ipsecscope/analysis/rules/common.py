"""Text and lookup helpers the rule families share (times, frames, peers, peer-log notes)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime

from ...model.keys import PeerLogNote
from ...model.sa import ChildSa, EspFlow, IkeExchange, IkeSa, SaTable
from ...state import names as N
from .core import RuleContext


def clock(ts: float | None) -> str:
    if ts is None:
        return "?"
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")
    except (ValueError, OverflowError, OSError):  # a corrupted frame timestamp (year > 9999)
        return f"{ts:.0f}"


def dur(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def exchange_label(x: IkeExchange, version: int) -> str:
    return N.exchange_name(x.exchange, version)


def other_peer(sa: IkeSa, addr: str) -> str:
    return sa.responder if addr == sa.initiator else sa.initiator


def child_ike(table: SaTable, c: ChildSa) -> IkeSa | None:
    return table.ike_sas.get(c.ike_sa) if c.ike_sa else None


def frames_of(*lists: Iterable[int]) -> tuple[int, ...]:
    out: list[int] = []
    for lst in lists:
        for f in lst:
            if f not in out:
                out.append(f)
    return tuple(out)


def flow_ref(f: EspFlow) -> str:
    return f"esp:{f.src}>{f.dst}:0x{f.spi:08x}"


def addr_eq(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return ipaddress.ip_address(a.strip("[]")) == ipaddress.ip_address(b.strip("[]"))
    except ValueError:
        return a == b


def peer_notes_about(ctx: RuleContext, sa: IkeSa | None, by: str, kinds: Iterable[str]) -> list[PeerLogNote]:
    """Notes from the log of the peer at address ``by`` about IKE SA ``sa``.

    A note counts only when its log says which host wrote it (``local``) and that host is ``by``:
    we never attribute a line to a peer on a guess. When the log named the IKE SA's SPIs, the
    initiator SPI must match (the responder SPI may still be zero in its log, e.g. for an
    IKE_SA_INIT it refused); otherwise the other address must be this SA's other peer.
    """
    if sa is None or not ctx.peer_notes:
        return []
    kinds = set(kinds)
    other = other_peer(sa, by)
    out = []
    for n in ctx.peer_notes:
        if n.kind not in kinds or not addr_eq(n.local, by):
            continue
        if n.ike_sa and "_" in n.ike_sa:
            if n.ike_sa.split("_", 1)[0] != sa.ike_spi_i.hex():
                continue
        elif not addr_eq(n.remote, other):
            continue
        out.append(n)
    return out


def note_src(n: PeerLogNote) -> str:
    """``charon-right.log:177`` (the file name without its directories) for explanations."""
    path, _, line = n.source.rpartition(":")
    return f"{path.replace(chr(92), '/').rsplit('/', 1)[-1]}:{line}" if path else n.source


def uniq(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def child_label(c: ChildSa | None) -> str:
    return f"CHILD SA #{c.id}" if c else "an unknown SA"


def src_path(source: str) -> str:
    """``tests/x/charon-left.log:177`` -> ``charon-left.log:177`` (keys' "file:line" sources)."""
    return source.replace(chr(92), "/").rsplit("/", 1)[-1]


def role(sa: IkeSa, addr: str) -> str:
    return f"initiator {addr}" if addr == sa.initiator else f"responder {addr}"


def ike_key_source(ctx: RuleContext, sa: IkeSa) -> str:
    """Where the IKE keys tried on ``sa`` came from ("charon-left.log:12"), from the session's
    key store; "the loaded keys" when the rules run without a session."""
    keys = getattr(ctx.session, "keys", None)
    srcs: list[str] = []
    try:
        if sa.version == 1:
            srcs = [k.source for k in keys.ikev1_candidates(sa.ike_spi_i) if k.source]
        else:
            k = keys.ike_lookup(sa.ike_spi_i, sa.ike_spi_r)
            srcs = [k.source] if k is not None and k.source else []
    except (AttributeError, TypeError):  # no session, or a key store without these lookups
        pass
    srcs = uniq(src_path(x) for x in srcs)
    return " and ".join(srcs) if srcs else "the loaded keys"
