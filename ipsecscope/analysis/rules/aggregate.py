"""One finding per condition, not per SA: findings of one rule that say the same thing about many
SAs become one finding that counts and names them.

A reflection capture (thousands of responders answering one spoofed address) or a gateway with
hundreds of tunnels on the same weak proposal makes every per-SA rule repeat itself once per SA:
3,982 identical IKE-WEAK-ALGO warnings hide the one other finding that matters. Two findings are
"the same condition" when code, severity, title and hint are equal and the explanations are equal
once each finding's own SA (its two addresses, its SA key, SPI or CHILD SA number) and its own
evidence frames ("frame 291") are blanked out;
anything else the explanation says (a third address, a time, a count) keeps them apart. Findings
without an SA are never merged. At :data:`AGGREGATE_MIN` or more such findings the group becomes
one finding: the first finding's text plus a sentence naming the first few SAs ("and N more"),
the first few SAs' frames as evidence, and every SA in :attr:`Finding.members` (JSON ``members``).
Codes in :data:`PAIR_REPEATS` merge from 2 findings on when all of them are between the same two
addresses (the same JSON shape: ``count``, ``members``; findings/1 unchanged): a NAT, and a
refusal repeated with every retry. A title's own "CHILD SA #N" is the SA, not the condition: it
is blanked for the comparison, and the merged title names the members ("CHILD SAs #2 and #3").

Titles must be equal, so a rule whose title names the SA's own addresses never merges here:
ESP-ONE-WAY groups its SAs itself by the end they share (:mod:`.one_way`). Other per-SA and
per-flow rules stay one finding per SA on purpose: their titles carry that SA's own numbers
(ESP-SEQ-GAP's lost/ratio and severity, ESP-REPLAY's duplicates, ESP-REORDER's late packets,
ESP-ICV-FAILED's failing share, ESP-OUTSIDE-TS's count, IKE-RETRANSMIT's retries) or times
(ESP-RETURN-STOPPED, ESP-AFTER-DELETE, ESP-REKEY-OVERLAP), which are the finding: several SAs of
one tunnel losing packets at different rates are several facts. ESP-ICV-FAILED on every packet
("wrong key") points at one key row per SA, the fix for each.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ...model.idtext import sa_ref_text, spi_text
from ...model.plural import plural
from ...model.sa import Finding, FindingMember, SaTable

AGGREGATE_MIN = 5  # below this, one finding per SA reads better than a summary
NAMED = 5  # SAs an aggregated finding names in its text; the rest are "and N more"

# Codes whose condition belongs to the two peers (their NAT, their configuration), not to one SA:
# every reconnect between the same two peers says it again. Same-condition findings of these
# between the same two addresses become one from 2 on, naming the SAs it covers (live3: 3
# reconnects, 3 copies of a 6-line IKE-NAT-DETECTED). Different peer pairs still need
# AGGREGATE_MIN to be summed up as one.
# A refusal repeats with every retry (each retry a new IKE SA or CHILD SA number): the same
# configuration mismatch between the same two peers, said again per attempt.
PAIR_REPEATS = frozenset({"IKE-NAT-DETECTED", "IKE-NO-PROPOSAL", "IKE-CHILD-REFUSED", "IKE-TS-UNACCEPTABLE"})

# A title may name the finding's own CHILD SA ("CHILD SA #3: ..."): that number is the SA, not the
# condition, so it is blanked for the comparison and the merged title names the members' numbers.
_CHILD_IN_TITLE = "CHILD SA #"


def sa_peers(table: SaTable, ref: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the SA's two addresses, other strings that name it) for a finding's ``sa`` reference."""
    kind, sep, rest = ref.partition(":")
    if not sep:
        sa = table.ike_sas.get(ref)
        return ((sa.initiator, sa.responder) if sa else ()), (ref,)
    if kind == "child" and rest.isdigit():
        c = table.child_sas.get(int(rest))
        if c is None:
            return (), (f"#{rest}",)
        names = [f"#{rest}"] + [spi_text(s) for _p, i, r in c.spi_pairs() for s in (i, r) if s is not None]
        return (c.initiator, c.responder), tuple(names)
    if kind in ("esp", "ah"):
        pair, _, spi = rest.rpartition(":")
        src, _, dst = pair.partition(">")
        return (src, dst), (spi, rest)
    return (), (ref,)


# "frame 291", "frames 3, 4 and 7" (NBSP after the word: model.idtext.frames_ref)
_FRAMES = re.compile(r"(\bframes?[\s\u00a0]+)(\d+(?:(?:, | and )\d+)*)")


def _blank(text: str, words: Sequence[str], frames: Sequence[int]) -> str:
    """``text`` with the finding's own SA (``words``) and evidence frames blanked out."""
    for w in sorted((w for w in words if w), key=len, reverse=True):  # longest first: "[::1]" before "::1"
        text = text.replace(w, "\x00")
    own = set(frames)

    def frame_ref(m: re.Match) -> str:
        nums = {int(x) for x in re.findall(r"\d+", m.group(2))}
        return m.group(1) + "\x01" if nums <= own else m.group(0)

    return _FRAMES.sub(frame_ref, text) if own else text


def _kind(ref: str) -> str:
    kind, sep, _ = ref.partition(":")
    return "IKE SAs" if not sep else {"child": "CHILD SAs", "esp": "ESP SAs", "ah": "AH SAs"}.get(kind, "SAs")


def _peers_text(members: Sequence[FindingMember]) -> str:
    """``between 10.10.10.10 and 2,767 peers: 202.129.206.200, 20.194.16.108, … and 2,762 more``
    when one address is in every SA, else ``A and B (IKE SA …), C and D (…), … and N more``."""
    n = len(members)
    common = set(members[0].peers)
    for m in members[1:]:
        common &= set(m.peers)
    if len(common) == 2 and all(set(m.peers) == common for m in members):  # one peer pair (PAIR_REPEATS)
        a, b = members[0].peers
        named = ", ".join(_short_ref(m.sa) for m in members[:NAMED]) + (f" and {n - NAMED:,} more" if n > NAMED else "")
        return f"between {a} and {b} ({named})"
    if len(common) == 1:
        hub = next(iter(common))
        others = list(dict.fromkeys(p for m in members for p in m.peers if p != hub))
        more = len(others) - NAMED
        named = ", ".join(others[:NAMED]) + (f" and {more:,} more" if more > 0 else "")
        return f"between {hub} and {plural(len(others), 'peer', sep=True)}: {named}"
    named = ", ".join(f"{' and '.join(m.peers)} ({sa_ref_text(m.sa)})" if m.peers else sa_ref_text(m.sa)
                      for m in members[:NAMED])
    return named + (f" and {n - NAMED:,} more" if n > NAMED else "")


def _short_ref(ref: str) -> str:
    """An SA in a list that already says which kind: ``b1b8da23…`` for an IKE SA, ``#3`` for a CHILD SA."""
    kind, sep, rest = ref.partition(":")
    if not sep:
        return ref.partition("_")[0][:8] + "…" if "_" in ref else ref
    return f"#{rest}" if kind == "child" else sa_ref_text(ref)


def _child_token(ref: str | None) -> str:
    kind, _, rest = (ref or "").partition(":")
    return f"{_CHILD_IN_TITLE}{rest}" if kind == "child" and rest.isdigit() else ""


def _blank_child(text: str, ref: str | None) -> str:
    """``text`` with the finding's own "CHILD SA #N" blanked (not "#12" for #1: a whole number)."""
    token = _child_token(ref)
    return re.sub(re.escape(token) + r"(?!\d)", _CHILD_IN_TITLE + "\x00", text) if token else text


def _children_title(first: Finding, members: Sequence[FindingMember]) -> str:
    """The first finding's title, its "CHILD SA #N" naming the members' CHILD SAs instead."""
    token = _child_token(first.sa)
    if not token or not re.search(re.escape(token) + r"(?!\d)", first.title):
        return first.title
    ids = [_short_ref(m.sa) for m in members]
    named = (", ".join(ids[:NAMED]) + f" and {len(ids) - NAMED:,} more" if len(ids) > NAMED
             else ", ".join(ids[:-1]) + f" and {ids[-1]}")
    return re.sub(re.escape(token) + r"(?!\d)", lambda _: f"CHILD SAs {named}", first.title, count=1)


def aggregate(findings: list[Finding], table: SaTable, minimum: int = AGGREGATE_MIN) -> list[Finding]:
    """``findings`` with every group of ``minimum`` or more same-condition findings (see the
    module docstring) replaced by one, at the place of the group's first; the order is kept.
    Codes in :data:`PAIR_REPEATS` are grouped per peer pair first, from 2 findings on."""
    if minimum < 2:
        return findings
    findings = _merge(findings, table, 2, per_pair=True)
    return _merge(findings, table, minimum)


def _merge(findings: list[Finding], table: SaTable, minimum: int, per_pair: bool = False) -> list[Finding]:
    if len(findings) < minimum:
        return findings
    groups: dict[tuple, list[int]] = {}
    peers: dict[int, tuple[str, ...]] = {}
    for i, f in enumerate(findings):
        if not f.sa or f.members or (per_pair and f.code not in PAIR_REPEATS):
            continue
        addrs, names = sa_peers(table, f.sa)
        if per_pair and len(addrs) != 2:
            continue
        peers[i] = addrs
        bracketed = [f"[{a}]" for a in addrs if ":" in a]
        key = (f.code, f.severity, _blank_child(f.title, f.sa), _blank_child(f.hint, f.sa),
               _blank(f.explanation, [*bracketed, *addrs, *names], f.frames), frozenset(addrs) if per_pair else None)
        groups.setdefault(key, []).append(i)
    merged: dict[int, Finding] = {}
    dropped: set[int] = set()
    for idx in groups.values():
        if len(idx) < minimum:
            continue
        group = [findings[i] for i in idx]
        members = tuple(FindingMember(sa=f.sa or "", peers=peers[i], frames=f.frames, ts=f.ts)
                        for i, f in zip(idx, group, strict=True))
        first = group[0]
        times = [m.ts for m in members if m.ts is not None]
        text = (f"{first.explanation} The same holds for {len(members):,} {_kind(first.sa or '')} in all, "
                f"{_peers_text(members)}.")
        merged[idx[0]] = Finding(code=first.code, severity=first.severity, title=_children_title(first, members),
                                 explanation=text,
                                 frames=tuple(fr for m in members[:NAMED] for fr in m.frames), sa=first.sa, hint=first.hint,
                                 ts=min(times) if times else None, evidence=first.evidence,
                                 facts=dict(first.facts), members=members)
        dropped.update(idx[1:])
    if not merged:
        return findings
    return [merged.get(i, f) for i, f in enumerate(findings) if i not in dropped]
