"""Diagnosis rules: each one reads the SA table and returns findings with a stable code.

Rules are small numbered functions registered with :func:`rule` (``@rule(number, code, severity,
ref="RFC …")``, metadata ``findings --list-rules`` prints); :func:`evaluate` runs them all (plus
any rules plugins contribute, see :mod:`ipsecscope.plugins`; :func:`describe` gives a plugin rule
its codes and severity). A rule never raises on odd data: if it does, :func:`evaluate` reports
that as an ``ENGINE-RULE-ERROR`` finding and goes on, and makes the same finding on many SAs one
finding that counts and names them (:mod:`.aggregate`). Findings are built with keywords
(``Finding(code=..., severity=..., title=..., explanation=..., frames=..., sa=..., hint=..., ts=...)``).

One module per family. A new rule goes into its family's module and takes the next free number
of the family's range (``core.FAMILIES`` is the one place the ranges are written down; ``@rule``
refuses a number outside them or one already taken):

========================  ==================================================================  ============
module                    family                                                              numbers
========================  ==================================================================  ============
:mod:`.negotiation`       IKE negotiation: proposals, DH groups, CHILD SA creation, rekeying  40-49
:mod:`.authentication`    IKE authentication: PSK, certificates, identities                   50-59
:mod:`.policy`            traffic selectors, inner packets outside them                       60-69
:mod:`.liveness`          liveness and path: unanswered IKE, dead/restarted peers, one-way    70-79
:mod:`.nat_mtu`           NAT and MTU: NAT side, IP fragmentation, path MTU                   80-89
:mod:`.esp`               ESP integrity and sequence: loss, replay, reordering, ICV           90-99
:mod:`.capture`           capture and keys: malformed packets, bad keys, one direction only   100-109
========================  ==================================================================  ============

Rules 1-30 predate the ranges and keep their numbers (see ``core.FAMILIES``: ``legacy``).

Severity: ERROR = the tunnel (or part of it) is broken; WARNING = degraded or risky; INFO =
noteworthy. Codes are part of the public interface (JSON ``ipsecscope.findings/1``, exit codes):
never rename one; add new ones.
"""

from __future__ import annotations

# The family modules register their rules on import, which core.load_families() does the first
# time the registry is read (evaluate, all_rules, REGISTRY here): importing this package for
# describe() (plugins) or one family's helpers (export.documents: nat_verdict) costs no other family.
from .core import (
    FAMILIES,
    Family,
    Rule,
    RuleContext,
    RuleFn,
    all_rules,
    describe,
    evaluate,
    load_families,
    make_context,
    plugin_rule_meta,
    rule,
)

__all__ = ["FAMILIES", "REGISTRY", "Family", "Rule", "RuleContext", "RuleFn", "all_rules", "describe", "evaluate",
           "load_families", "make_context", "plugin_rule_meta", "rule", "weak_parts"]


def __getattr__(name: str) -> object:
    if name == "REGISTRY":  # complete: every family registered
        from . import core

        load_families()
        return core.REGISTRY
    if name == "weak_parts":
        from .negotiation import weak_parts

        return weak_parts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
