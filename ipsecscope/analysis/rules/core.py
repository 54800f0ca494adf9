"""The rule registry: ``@rule``, the families and their number ranges, and :func:`evaluate`.

Family modules (:mod:`.negotiation`, :mod:`.nat_mtu`, ...) register their rules here when they
are imported, which :func:`load_families` does the first time the whole registry is needed;
nothing in this module knows a rule by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ...model.keys import PeerLogNote
from ...model.sa import Finding, SaTable, Severity
from ...plugins import plugin_rules

RuleFn = Callable[["SaTable", "RuleContext"], Iterable[Finding]]


@dataclass(slots=True)
class RuleContext:
    """What rules may know beyond the table: whether keys were supplied, thresholds."""

    keys_given: bool = False
    session: object | None = None
    loss_warn_ratio: float = 0.01  # lost/expected above this: WARNING, else INFO
    rekey_overlap_warn_s: float = 10.0
    after_delete_grace_s: float = 1.0  # in-flight packets right after a Delete are normal
    # Same-condition findings on this many SAs or more become one finding (analysis.rules.aggregate;
    # ESP-ONE-WAY groups SAs sharing a silent end itself, analysis.rules.one_way); 0 keeps one
    # finding per SA.
    aggregate_min: int = 5
    extra: dict = field(default_factory=dict)
    # What the peers' own logs say (KeyStore.peer_notes from charon logs given with -k).
    peer_notes: list[PeerLogNote] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Family:
    """One family of rules: its module and the numbers its rules take.

    ``numbers`` is where a new rule of the family takes the next free number. ``legacy`` are the
    rules numbered before the ranges were written down; a rule number never changes (it is in
    ``--list-rules`` output and users' notes), so they keep theirs.
    """

    module: str
    title: str
    numbers: range
    legacy: tuple[int, ...] = ()

    def owns(self, number: int) -> bool:
        return number in self.numbers or number in self.legacy

    def span(self) -> str:
        """"40-49 (and 1, 2, 5)" for the docs and ``--list-rules``."""
        text = f"{self.numbers.start}-{self.numbers.stop - 1}"
        return f"{text} (and {', '.join(map(str, self.legacy))})" if self.legacy else text


# The one place the number ranges are written down; README's rules table and the package
# docstring are checked against it (tests/test_findings.py).
FAMILIES: tuple[Family, ...] = (
    Family("negotiation", "IKE negotiation: proposals, DH groups, CHILD SA creation, rekeying, algorithms",
           range(40, 50), (1, 2, 5, 8, 11, 13)),
    Family("authentication", "IKE authentication: PSK, certificates, identities", range(50, 60), (3,)),
    Family("policy", "Policy: traffic selectors, inner packets outside them", range(60, 70), (4, 25)),
    Family("liveness", "Liveness and path: unanswered IKE, dead or restarted peers, one-way ESP, stale SPIs",
           range(70, 80), (6, 7, 12, 20, 21, 27)),
    Family("nat_mtu", "NAT and MTU: NAT detection and its side, IP fragmentation, path MTU", range(80, 90),
           (9, 10)),
    Family("esp", "ESP integrity and sequence: loss, replay, reordering, ICV, rekey overlap", range(90, 100),
           (22, 23, 24)),
    Family("capture", "Capture and keys: malformed packets, keys that do not fit or are missing, one direction only",
           range(100, 110),
           (14, 26, 28, 30)),
)


@dataclass(slots=True, frozen=True)
class Rule:
    """A rule's metadata, as ``findings --list-rules`` prints it.

    ``codes`` are the finding codes it may emit and ``severities`` the levels it may give them
    (a loss rule gives INFO for a little loss, WARNING for more). ``ref`` names the RFC section
    the rule checks. Built-in rules have a ``number`` and a ``family``; plugin rules have neither.
    """

    number: int | None
    codes: tuple[str, ...]
    severities: tuple[Severity, ...]
    ref: str
    fn: RuleFn
    doc: str
    family: str = ""

    @property
    def name(self) -> str:
        return f"R{self.number:02d}" if self.number is not None else getattr(self.fn, "__name__", "?")

    @property
    def severity_text(self) -> str:
        return "/".join(s.name.lower() for s in sorted(set(self.severities)))


REGISTRY: list[Rule] = []  # complete once load_families() ran
_loaded = False


def load_families() -> None:
    """Import every family module (each registers its rules with :func:`rule`), once."""
    global _loaded
    if not _loaded:
        import importlib

        for f in FAMILIES:
            importlib.import_module(f"{__package__}.{f.module}")
        _loaded = True


def _doc(fn: RuleFn) -> str:
    return (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else getattr(fn, "__name__", "")


def _tuple(x: object) -> tuple:
    return tuple(x) if isinstance(x, tuple | list) else (x,)


def describe(code: str | tuple[str, ...], severity: Severity | tuple[Severity, ...], ref: str = "",
             ) -> Callable[[RuleFn], RuleFn]:
    """Attach ``--list-rules`` metadata to a rule without registering it: for plugin rules,
    which ipsecscope collects through the plugin's ``rules()`` hook."""

    def deco(fn: RuleFn) -> RuleFn:
        fn.rule_meta = Rule(None, _tuple(code), _tuple(severity), ref, fn, _doc(fn))  # type: ignore[attr-defined]
        return fn

    return deco


def rule(number: int, code: str | tuple[str, ...], severity: Severity | tuple[Severity, ...],
         ref: str = "") -> Callable[[RuleFn], RuleFn]:
    """Register a built-in rule.

    ``number`` orders ``--list-rules`` and never changes; it must lie in its module's family
    (:data:`FAMILIES`). ``code`` is the finding code (or codes) the rule emits, ``severity`` the
    level (or levels) it gives them, ``ref`` the RFC section it checks ("RFC 7296 §2.23").
    """

    def deco(fn: RuleFn) -> RuleFn:
        module = fn.__module__.rpartition(".")[2]
        fam = next((f for f in FAMILIES if f.module == module), None)
        if fam is None or not fam.owns(number):
            where = f"family {module!r} takes {fam.span()}" if fam else f"{module!r} is no rule family"
            raise ValueError(f"rule R{number:02d} ({fn.__name__}): {where}; see analysis.rules.core.FAMILIES")
        if any(r.number == number for r in REGISTRY):
            raise ValueError(f"rule R{number:02d} ({fn.__name__}) is already taken; use the next free number")
        r = Rule(number, _tuple(code), _tuple(severity), ref, fn, _doc(fn), fam.module)
        fn.rule_meta = r  # type: ignore[attr-defined]
        REGISTRY.append(r)
        REGISTRY.sort(key=lambda x: x.number or 0)
        return fn

    return deco


def make_context(ctx: object | None) -> RuleContext:
    if isinstance(ctx, RuleContext):
        return ctx
    keys = getattr(ctx, "keys", None)
    try:
        given = keys is not None and len(keys) > 0
    except TypeError:
        given = bool(keys)
    return RuleContext(keys_given=given, session=ctx, peer_notes=list(getattr(keys, "peer_notes", None) or ()))


def plugin_rule_meta() -> list[Rule]:
    """Metadata of every plugin rule: what :func:`describe` attached, else what the function says
    about itself (no codes or severity known)."""
    out = []
    for name, fn in plugin_rules():
        meta = getattr(fn, "rule_meta", None)
        if isinstance(meta, Rule):
            out.append(Rule(None, meta.codes, meta.severities, meta.ref, fn, meta.doc, name))
        else:
            out.append(Rule(None, (), (), "", fn, _doc(fn), name))
    return out


def all_rules() -> list[tuple[str, RuleFn]]:
    """(name, function) of built-in and plugin rules, built-ins first."""
    load_families()
    out = [(r.name, r.fn) for r in REGISTRY]
    out.extend(plugin_rules())
    return out


def evaluate(table: SaTable, ctx: object | None = None) -> list[Finding]:
    """Run every rule over ``table``. ``ctx`` is a :class:`RuleContext` or the Session."""
    rc = make_context(ctx)
    out: list[Finding] = []
    for name, fn in all_rules():
        try:
            out.extend(fn(table, rc) or ())
        except Exception as exc:  # noqa: BLE001 - one broken rule must not hide the others
            out.append(Finding(
                code="ENGINE-RULE-ERROR", severity=Severity.INFO, title=f"rule {name} failed: {type(exc).__name__}",
                explanation=f"The diagnosis rule {name} raised {type(exc).__name__}: {exc}. The other "
                "findings are unaffected.", hint="Please report this with the capture."))
    seen: set[tuple] = set()
    uniq = []
    for f in out:
        k = (f.code, f.sa, f.frames, f.title)
        if k not in seen:
            seen.add(k)
            uniq.append(f)
    from .aggregate import aggregate

    uniq = aggregate(uniq, table, rc.aggregate_min)
    uniq.sort(key=lambda f: (-int(f.severity), f.ts if f.ts is not None else 0.0, f.code))
    from ..peer_gone import mark_peers_gone

    mark_peers_gone(table, uniq)  # the IKE SAs whose peer the findings say is gone (IkeSa.peer_gone)
    return uniq


def evaluate_some(table: SaTable, ctx: object | None, numbers: tuple[int, ...]) -> list[Finding]:
    """Run only the built-in rules ``numbers`` (their families alone loaded, found by number in
    :data:`FAMILIES`), unaggregated: for a view that needs what a few rules say without every
    finding (``sas``: which IKE SAs' peers are gone). Marks the table as :func:`evaluate` does."""
    import importlib

    for fam in FAMILIES:
        if any(fam.owns(n) for n in numbers):
            importlib.import_module(f"{__package__}.{fam.module}")
    rc = make_context(ctx)
    out: list[Finding] = []
    for r in REGISTRY:
        if r.number in numbers:
            out.extend(r.fn(table, rc) or ())
    from ..peer_gone import mark_peers_gone

    mark_peers_gone(table, out)
    return out
