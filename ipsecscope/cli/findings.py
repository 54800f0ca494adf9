"""``ipsecscope findings FILE... [-k KEYS...] [--json] [--min-severity LEVEL]``: what is wrong.

Runs the diagnosis rules (:mod:`ipsecscope.analysis.rules`, plus installed plugins) over the
correlated SAs and prints each finding: severity, stable code, one-line title, a plain-language
explanation naming both peers, the evidence frames (Wireshark numbering) and a hint.

Exit status (for scripts and CI):

- 0 — no finding is a warning or an error (info findings may be present)
- 1 — at least one warning or error
- 2 — usage or input error (unreadable capture or key file; one line on stderr). A capture
  damaged part-way is analysed up to the damage (findings printed) and also exits 2.

JSON (``--json``): the ``ipsecscope.findings/1`` document of :mod:`ipsecscope.export.documents`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from .. import timefmt
from ..errors import IpsecscopeError
from ..export.documents import FINDINGS_SCHEMA as SCHEMA
from ..export.documents import SEVERITIES as _LEVELS
from ..export.documents import findings_document, severity_counts
from ..model.idtext import arrow_text, frames_ref, sa_ref_text
from ..model.plural import plural
from ..model.sa import Finding, Severity
from .common import add_captures_argument, add_keys_argument, error, stop_event, warn, warn_keys

if TYPE_CHECKING:
    from rich.console import Console


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "findings", help="diagnose: proposal/auth/selector mismatches, dead peers, NAT, ESP loss/replay ...",
        description="Explain what is wrong with the IPsec tunnels in a capture. Exit status: 0 when no "
                    "finding is a warning or an error, 1 otherwise, 2 on unreadable input.")
    add_captures_argument(p, required=False)  # not with --list-rules
    add_keys_argument(p)
    p.add_argument("--json", action="store_true", help=f"machine-readable output (schema {SCHEMA})")
    p.add_argument("--min-severity", choices=["info", "warning", "error"], default="info",
                   help="hide findings below this level (the exit status still counts all)")
    p.add_argument("--list-rules", action="store_true", help="list the diagnosis rules and their codes")


def exit_status(findings: list[Finding]) -> int:
    return 1 if any(f.severity >= Severity.WARNING for f in findings) else 0


def _list_rules(as_json: bool) -> int:
    from ..analysis.rules import FAMILIES, REGISTRY, plugin_rule_meta

    rules = [*REGISTRY, *plugin_rule_meta()]
    rows = [{"name": r.name if r.number is not None else r.family, "codes": list(r.codes),
             "severity": [s.name.lower() for s in sorted(set(r.severities))], "ref": r.ref,
             "family": r.family if r.number is not None else "plugin", "doc": r.doc} for r in rules]
    if as_json:
        # one write: json.dump writes token by token (a write(2) each under PYTHONUNBUFFERED)
        sys.stdout.write(json.dumps({"schema": SCHEMA, "rules": rows, "families": [
            {"family": f.module, "title": f.title, "numbers": f.span()} for f in FAMILIES]}, indent=2))
        sys.stdout.write("\n")
        return 0
    # Columns sized to their widest cell (a plugin rule's name is "plugin:function"); the
    # description is last so that a long one never shifts the columns.
    table = [("RULE", "FAMILY", "SEVERITY", "CODES", "REFERENCE", "DESCRIPTION")]
    table += [(r["name"], r["family"], "/".join(r["severity"]) or "-", ", ".join(r["codes"]) or "-",
               r["ref"] or "-", r["doc"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5])
    print()
    print("Rule numbers by family (a new rule takes the next free number of its family):")
    fw = max(len(f.module) for f in FAMILIES)
    sw = max(len(f.span()) for f in FAMILIES)
    for f in FAMILIES:
        print(f"  {f.module.ljust(fw)}  {f.span().ljust(sw)}  {f.title}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list_rules:
        return _list_rules(args.json)
    if not args.files:
        error("findings", "give a capture FILE (or --list-rules)")
        return 2
    from ..session import Session

    try:
        session = Session.from_files(args.files, args.keys, strict_keys=args.strict_keys, keep_rows=False,
                                     follow=stop_event(args))
        findings = session.findings
    except (IpsecscopeError, OSError) as exc:
        error("findings", exc)
        return 2
    warn_keys("findings", session.keys, session)
    damage = session.damage
    if damage:  # analysed up to the damage, and exit status 2
        error("findings", damage)
    for warning in session.warnings:
        warn("findings", warning)
    from ..plugins import plugin_errors

    for name, err in plugin_errors():  # a broken plugin is skipped, but the user should know
        warn("findings", f"plugin {name!r} skipped: {err}")
    floor = _LEVELS[args.min_severity]
    shown = [f for f in findings if f.severity >= floor]
    counts = severity_counts(findings)
    if args.json:
        sys.stdout.write(json.dumps(findings_document(findings, args.files, shown), indent=2))
        sys.stdout.write("\n")
    else:
        render(shown, counts)
    return 2 if damage else exit_status(findings)


_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def render(findings: list[Finding], counts: dict[str, int], console: Console | None = None) -> None:
    from rich.markup import escape

    from .text import Hanging, text_console  # rich: only for text output (`--json` never loads it)

    console = console or text_console()
    if not findings:
        console.print("[green]No findings.[/]" if not any(counts.values()) else "No findings at this level.")
        return
    for f in findings:
        when = timefmt.at(f.ts) + " " if f.ts is not None else ""  # 20:09:15 UTC, or --tz with its offset
        style = _STYLE[f.severity]
        # Wrapped lines continue under their text (a hanging indent), split at spaces only.
        times = f"  [bold]×{f.count:,}\u00a0SAs[/]" if f.count > 1 else ""  # one finding for many SAs (aggregate)
        console.print(Hanging(f"[{style}]{f.severity.name:<7}[/] [bold]{f.code}[/]  {when}{escape(arrow_text(f.title))}"
                              f"{times}", 9))
        console.print(Hanging(f"         {escape(arrow_text(f.explanation))}", 9))
        if f.frames:
            of = f" (of {len(f.all_frames):,})" if len(f.all_frames) > len(f.frames) else ""  # aggregated
            console.print(Hanging(f"         [dim]{frames_ref(f.frames)}{of}"
                                  + (f"  {escape(sa_ref_text(f.sa))}" if f.sa else "")
                                  + (f" and {f.count - 1:,} more" if f.count > 1 and f.sa else "") + "[/]", 16))
        if f.hint:
            console.print(Hanging(f"         [green]hint:[/] {escape(arrow_text(f.hint))}", 15))
        console.print()
    console.print(f"{plural(counts['error'], 'error')}, {plural(counts['warning'], 'warning')}, {counts['info']} info")
