"""``ipsecscope findings FILE... [-k KEYS...] [--json] [--min-severity LEVEL]``: what is wrong.

Runs the diagnosis rules (:mod:`ipsecscope.analysis.rules`, plus installed plugins) over the
correlated SAs and prints each finding: severity, stable code, one-line title, a plain-language
explanation naming both peers, the evidence frames (Wireshark numbering) and a hint.

Exit status (for scripts and CI):

- 0 — no finding is a warning or an error (info findings may be present)
- 1 — at least one warning or error
- 2 — usage or input error (unreadable capture or key file; one line on stderr). A capture
  damaged part-way is analysed up to the damage (findings printed) and also exits 2.

JSON schema ``"ipsecscope.findings/1"`` (``--json``; fields are only ever added within /1)::

    {
      "schema": "ipsecscope.findings/1",
      "files": [str],
      "counts": {"error": int, "warning": int, "info": int},
      "findings": [{
        "code": str,                 # stable, e.g. "IKE-NO-PROPOSAL", "ESP-SEQ-GAP"
        "severity": "error" | "warning" | "info",
        "title": str, "explanation": str, "hint": str,
        "frames": [int],             # evidence, Wireshark frame numbers
        "sa": str | null,            # IKE SA key "spii_spir", "child:<id>" or "esp:<src>><dst>:0x<spi>"
        "time": float | null,
        "evidence_log": [{           # lines of the peers' own logs (-k charon.log) the finding uses;
          "kind": str,               #   "configured_proposals" | "received_proposals" | "ts_config" |
                                     #   "auth" | "dh" | "peer_notify" | "conn_config"
          "text": str,               #   the log message, e.g. "configured proposals: ESP:AES_GCM_16_256/NO_EXT_SEQ"
          "source": str,             #   "file:line"
          "time": str,               #   the log line's timestamp as written ("" if none)
          "ike_sa": str | null,      #   "spii_spir" when the log names the SPIs, else charon's IKE_SA unique id
          "conn": str | null,        #   the connection name charon logged ("<conn|uid>")
          "local": str | null,       #   address of the peer that wrote the log
          "remote": str | null,      #   the other peer
          "data": {}                 #   parsed values, e.g. {"proto": "ESP", "swan": ["aes256gcm16"], ...}
        }]                           #   (empty without such logs)
      }],
      "rules": [{"name": str, "codes": [str], "severity": [str], "ref": str,   # with --list-rules only:
                 "family": str, "doc": str}],  # severity: the levels the rule may give; family "plugin"
      "families": [{"family": str, "title": str, "numbers": str}]             # for plugin rules
    }
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from ..errors import IpsecscopeError
from ..model.sa import Finding, Severity
from .common import add_keys_argument

SCHEMA = "ipsecscope.findings/1"
_LEVELS = {"info": Severity.INFO, "warning": Severity.WARNING, "error": Severity.ERROR}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "findings", help="diagnose: proposal/auth/selector mismatches, dead peers, NAT, ESP loss/replay ...",
        description="Explain what is wrong with the IPsec tunnels in a capture. Exit status: 0 when no "
                    "finding is a warning or an error, 1 otherwise, 2 on unreadable input.")
    p.add_argument("files", nargs="*", metavar="FILE", help="capture file(s), read into one session in order")
    add_keys_argument(p)
    p.add_argument("--json", action="store_true", help=f"machine-readable output (schema {SCHEMA})")
    p.add_argument("--min-severity", choices=list(_LEVELS), default="info",
                   help="hide findings below this level (the exit status still counts all)")
    p.add_argument("--list-rules", action="store_true", help="list the diagnosis rules and their codes")


def finding_to_dict(f: Finding) -> dict:
    return {
        "code": f.code, "severity": f.severity.name.lower(), "title": f.title, "explanation": f.explanation,
        "hint": f.hint, "frames": list(f.frames), "sa": f.sa, "time": f.ts,
        "evidence_log": [{"kind": n.kind, "text": n.text, "source": n.source, "time": n.ts, "ike_sa": n.ike_sa,
                          "conn": n.conn, "local": n.local, "remote": n.remote, "data": n.data}
                         for n in getattr(f, "evidence", ())],
    }


def exit_status(findings: list[Finding]) -> int:
    return 1 if any(f.severity >= Severity.WARNING for f in findings) else 0


def _list_rules(as_json: bool) -> int:
    from ..analysis.rules import FAMILIES, REGISTRY, plugin_rule_meta

    rules = [*REGISTRY, *plugin_rule_meta()]
    rows = [{"name": r.name if r.number is not None else r.family, "codes": list(r.codes),
             "severity": [s.name.lower() for s in sorted(set(r.severities))], "ref": r.ref,
             "family": r.family if r.number is not None else "plugin", "doc": r.doc} for r in rules]
    if as_json:
        json.dump({"schema": SCHEMA, "rules": rows,
                   "families": [{"family": f.module, "title": f.title, "numbers": f.span()} for f in FAMILIES]},
                  sys.stdout, indent=2)
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
        print("ipsecscope findings: give a capture FILE (or --list-rules)", file=sys.stderr)
        return 2
    from .sas import load_session

    try:
        session, damage = load_session(args.files, args.keys)
        findings = session.findings
    except (IpsecscopeError, OSError) as exc:
        print(f"ipsecscope findings: {exc}", file=sys.stderr)
        return 2
    if damage:
        print(f"ipsecscope findings: {damage}", file=sys.stderr)
    from ..plugins import plugin_errors

    for name, err in plugin_errors():  # a broken plugin is skipped, but the user should know
        print(f"ipsecscope findings: plugin {name!r} skipped: {err}", file=sys.stderr)
    floor = _LEVELS[args.min_severity]
    shown = [f for f in findings if f.severity >= floor]
    counts = {k: sum(1 for f in findings if f.severity == v) for k, v in _LEVELS.items()}
    if args.json:
        json.dump({"schema": SCHEMA, "files": [str(f) for f in args.files],
                   "counts": {k: counts[k] for k in ("error", "warning", "info")},
                   "findings": [finding_to_dict(f) for f in shown]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(shown, counts)
    return 2 if damage else exit_status(findings)


_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def render(findings: list[Finding], counts: dict[str, int], console=None) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    if not findings:
        console.print("[green]No findings.[/]" if not any(counts.values()) else "No findings at this level.")
        return
    for f in findings:
        try:
            when = datetime.fromtimestamp(f.ts, UTC).strftime("%H:%M:%S") + " " if f.ts is not None else ""
        except (ValueError, OverflowError, OSError):  # a corrupted frame timestamp (year > 9999)
            when = f"{f.ts:.0f} "
        style = _STYLE[f.severity]
        console.print(f"[{style}]{f.severity.name:<7}[/] [bold]{f.code}[/]  {when}{escape(f.title)}")
        console.print(f"         {escape(f.explanation)}", soft_wrap=False)
        if f.frames:
            console.print(f"         [dim]frames {', '.join(map(str, f.frames))}"
                          + (f"  SA {escape(f.sa)}" if f.sa else "") + "[/]")
        if f.hint:
            console.print(f"         [green]hint:[/] {escape(f.hint)}")
        console.print()
    console.print(f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info")
