"""Plugin mechanism: entry-point discovery without import, lazy loading, hooks, isolation of
broken plugins. The real plugin under test is plugins/ipsecscope-rekeytiming (installed editable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLES

from ipsecscope import plugins
from ipsecscope.analysis.rules import evaluate
from ipsecscope.model.sa import Finding, Severity
from ipsecscope.session import Session


def _installed() -> bool:
    return any(p.name == "rekeytiming" for p in plugins.discover(refresh=True))


needs_plugin = pytest.mark.skipif(not _installed(), reason="pip install -e plugins/ipsecscope-rekeytiming")


@needs_plugin
def test_discovery_reads_metadata_only():
    code = ("import sys; from ipsecscope import plugins; ps = plugins.discover(); "
            "print([p.name for p in ps], 'ipsecscope_rekeytiming' in sys.modules); "
            "plugins.plugin_rules(); print('ipsecscope_rekeytiming' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.splitlines()
    assert "'rekeytiming'" in out[0] and out[0].endswith("False")  # listed, not imported
    assert out[1] == "True"  # imported when its rules were needed


@needs_plugin
def test_cli_lists_plugin_rules_and_env_disables_them():
    env = {**os.environ}
    cmd = [sys.executable, "-c", "import sys; from ipsecscope.cli import main; sys.exit(main())",
           "findings", "--list-rules", "--json"]
    names = [r["name"] for r in json.loads(subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                                           env=env, check=True).stdout)["rules"]]
    assert "rekeytiming:short_lifetime" in names and "R01" in names
    env["IPSECSCOPE_NO_PLUGINS"] = "1"
    names = [r["name"] for r in json.loads(subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                                           env=env, check=True).stdout)["rules"]]
    assert not any(n.startswith("rekeytiming:") for n in names)


class _Counter:
    """A plugin object as a script would write one."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def rules(self):
        def one_finding_per_ike_sa(table, ctx):
            for sa in table.ike_sas.values():
                yield Finding(code="TEST-PLUGIN", severity=Severity.INFO, title=f"saw {sa.key}", explanation="from a plugin", sa=sa.key)

        def broken(table, ctx):
            raise RuntimeError("plugin bug")

        return [one_finding_per_ike_sa, broken]

    def on_event(self, ev: dict) -> None:
        self.events.append(ev)


def test_registered_object_rules_and_events_and_isolation():
    obj = _Counter()
    info = plugins.register(obj, "counter")
    try:
        s = Session()
        s.tracker.listeners.extend(plugins.event_listeners())
        s.load(SAMPLES / "dh-retry" / "capture.pcapng")
        fs = evaluate(s.table, s)
        assert [f.code for f in fs if f.code == "TEST-PLUGIN"] == ["TEST-PLUGIN"]
        err = [f for f in fs if f.code == "ENGINE-RULE-ERROR"]
        assert len(err) == 1 and "counter:broken" in err[0].title
        assert "IKE-INVALID-KE" in {f.code for f in fs}  # built-ins unaffected
        assert {"ike_sa_created", "ike_sa_established", "child_sa_created"} <= {e["event"] for e in obj.events}
    finally:
        plugins.unregister(info)
    assert "TEST-PLUGIN" not in {f.code for f in evaluate(s.table, s)}


def test_broken_plugin_import_is_reported_not_raised():
    info = plugins.register("ipsecscope_no_such_plugin_module:plugin", "ghost")
    try:
        plugins.plugin_rules()
        assert ("ghost", info.error) in plugins.plugin_errors()
        assert info.error.startswith("ModuleNotFoundError")
    finally:
        plugins.unregister(info)


@pytest.mark.parametrize("group", [plugins.GROUP, "console_scripts", "pytest11"])
def test_scan_finds_what_importlib_metadata_finds(group):
    # discovery reads the dist-info directories itself (no importlib.metadata import at start-up):
    # the same entry points, names, values and distributions, for our group and busier ones
    from importlib.metadata import entry_points

    want = sorted((ep.name, ep.value, ep.dist.name) for ep in entry_points(group=group))
    got = plugins._scan(group)
    assert got is not None and sorted(got) == want
    assert want or group != plugins.GROUP or not _installed()


def test_entry_point_references_resolve_like_importlib_metadata():
    from importlib.metadata import EntryPoint

    for value in ("os.path:join", "os.path", "ipsecscope.plugins:discover", "json:JSONDecoder.decode [extra]"):
        assert plugins._resolve(value) is EntryPoint(name="x", value=value, group="g").load()
    with pytest.raises(ValueError):
        plugins._resolve("not a reference")
