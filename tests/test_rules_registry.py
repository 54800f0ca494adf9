"""The rule registry: families and their number ranges, ``@rule`` metadata, ``--list-rules``.

The ranges are written down once (``analysis.rules.core.FAMILIES``); the README table and the
package docstring must say the same, and every registered rule must sit in its module's family.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import ROOT

import ipsecscope.analysis.rules as rules_pkg
from ipsecscope.analysis.rules import FAMILIES, REGISTRY, describe, rule
from ipsecscope.model.sa import Finding, Severity


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ipsecscope", *args], capture_output=True, text=True, cwd=ROOT)


def test_every_rule_sits_in_its_modules_family():
    for r in REGISTRY:
        fam = next(f for f in FAMILIES if f.module == r.family)
        assert r.fn.__module__ == f"ipsecscope.analysis.rules.{fam.module}", r.name
        assert fam.owns(r.number), r.name
        assert r.codes and r.severities and r.doc, r.name


def test_number_ranges_do_not_overlap():
    owned = [n for f in FAMILIES for n in (*f.numbers, *f.legacy)]
    assert len(owned) == len(set(owned))


def test_readme_and_docstring_state_the_ranges_of_FAMILIES():
    readme = (ROOT / "README.md").read_text()
    doc = rules_pkg.__doc__ or ""
    for f in FAMILIES:
        row = re.search(rf"^\| `{f.module}` \| (.+?) \| (.+?) \|$", readme, re.M)
        assert row and row.group(1) == f.title and row.group(2) == f.span(), f.module
        line = re.search(rf"^:mod:`\.{f.module}`\s.*\s(\d+-\d+)$", doc, re.M)
        assert line and line.group(1) == f"{f.numbers.start}-{f.numbers.stop - 1}", f.module


def test_rule_refuses_a_number_outside_its_family_or_already_taken():
    def fake(table, ctx):
        return ()

    with pytest.raises(ValueError, match="no rule family"):
        rule(41, "X-TEST", Severity.INFO)(fake)
    fake.__module__ = "ipsecscope.analysis.rules.nat_mtu"
    with pytest.raises(ValueError, match="takes 80-89"):
        rule(41, "X-TEST", Severity.INFO)(fake)
    with pytest.raises(ValueError, match="already taken"):
        rule(9, "X-TEST", Severity.INFO)(fake)
    assert all(r.fn is not fake for r in REGISTRY)


def test_describe_gives_a_plugin_rule_its_metadata_without_registering_it():
    @describe("X-PLUGIN", (Severity.WARNING, Severity.INFO), ref="RFC 7296 §2.8")
    def plug(table, ctx):
        """One line."""
        return ()

    meta = plug.rule_meta
    assert meta.codes == ("X-PLUGIN",) and meta.severity_text == "info/warning" and meta.number is None
    assert all(r.fn is not plug for r in REGISTRY)


def test_finding_takes_keywords_only():
    with pytest.raises(TypeError):
        Finding("X", Severity.INFO, "t", "e")  # type: ignore[misc]
    f = Finding(code="X", severity=Severity.INFO, title="t", explanation="e")
    assert f.frames == () and f.sa is None


def test_list_rules_text_columns_are_aligned_and_plugins_show_severity():
    out = cli("findings", "--list-rules").stdout.splitlines()
    table = out[:out.index("")]
    header = table[0]
    starts = [header.index(c) for c in ("FAMILY", "SEVERITY", "CODES", "REFERENCE", "DESCRIPTION")]
    for line in table[1:]:
        for s in starts:  # every column starts at the header's offset, after a blank
            assert line[s - 1] == " " and line[s] != " ", line
    plugin = [ln for ln in table if ln.startswith("rekeytiming:")]
    if plugin:  # the bundled plugin is installed by ./dev; without it there is nothing to show
        sev = starts[1]
        assert all(ln[sev:].split()[0] in ("warning", "info/warning", "info") for ln in plugin)
    # the ranges footer names every family
    assert all(any(ln.split()[:1] == [f.module] for ln in out) for f in FAMILIES)


def test_list_rules_json_carries_severity_ref_and_family():
    doc = json.loads(cli("findings", "--list-rules", "--json").stdout)
    r01 = next(r for r in doc["rules"] if r["name"] == "R01")
    assert r01["severity"] == ["error"] and r01["ref"].startswith("RFC 7296") and r01["family"] == "negotiation"
    assert [f["family"] for f in doc["families"]] == [f.module for f in FAMILIES]


def test_findings_on_the_samples_use_the_codes_and_severities_their_rule_declares():
    """``@rule`` metadata is what --list-rules tells users; a rule emitting a code or a level it
    does not declare would make that list lie."""
    from conftest import SAMPLES

    from ipsecscope.session import Session

    declared = {c: set(r.severities) for r in REGISTRY for c in r.codes}
    seen = 0
    for cap in sorted(SAMPLES.glob("*/capture.pcapng")):
        for keys in (False, True):
            s = Session()
            kdir = cap.parent / "keys"
            if keys and kdir.is_dir():
                s.add_key_files(sorted(p for p in kdir.iterdir() if p.is_file() and p.stat().st_size))
            s.load(cap)
            for f in s.findings:
                if f.code in declared:
                    seen += 1
                    assert f.severity in declared[f.code], (cap.parent.name, f.code, f.severity)
    assert seen > 10
