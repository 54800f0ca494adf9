"""The house's shape, checked: no import cycles, front ends stay apart, modules stay readable.

docs/ARCHITECTURE.md draws data flowing one way. A cycle hidden behind a function-level or
`TYPE_CHECKING` import still ties two modules together (neither can change or be tested alone),
so every import counts here, wherever it stands. The CLI may start the TUI (that is its `tui`
command), but the TUI never imports the CLI, and nothing below the front ends imports either.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PKG = ROOT / "ipsecscope"
FRONT_ENDS = ("ipsecscope.cli", "ipsecscope.tui")
ENTRY_POINTS = {"ipsecscope.__main__"}  # `python -m ipsecscope` is the CLI's door
MAX_LINES = 900
MAX_LINES_EXCEPT: dict[str, int] = {}  # module -> its own limit (none today)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py")) if ".venv" not in p.parts}


def _resolve(importer: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ipsecscope modules it imports (all imports, at any depth of the file)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_pkg, node)
                # `from pkg import mod` imports the submodule; `from mod import name` the module.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:  # `import a.b.c` where c is an attribute
                    t = t.rpartition(".")[0]
                if t.startswith("ipsecscope") and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _in(mod: str, pkg: str) -> bool:
    return mod == pkg or mod.startswith(pkg + ".")


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (break them; see docs/ARCHITECTURE.md): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_front_ends_stay_apart():
    bad = []
    for mod, deps in import_graph().items():
        for dep in deps:
            if _in(mod, "ipsecscope.tui") and _in(dep, "ipsecscope.cli"):
                bad.append(f"{mod} -> {dep} (the TUI reads the model, not the CLI)")
            elif (mod not in ENTRY_POINTS and not any(_in(mod, f) for f in FRONT_ENDS)
                  and any(_in(dep, f) for f in FRONT_ENDS)):
                bad.append(f"{mod} -> {dep} (the core never imports a front end)")
    assert not bad, "\n".join(sorted(bad))


# docs/ARCHITECTURE.md: "One package per stage; a stage imports only `ipsecscope.model`,
# `ipsecscope.errors` and the stages to its left" (capture -> decode -> keys -> crypto -> state ->
# analysis; the views and exports come after all of them). Two leaf helpers every stage may use:
# `timefmt` (how a time is written, stdlib only) and `plugins` (entry points, imported lazily).
STAGES = ("capture", "decode", "keys", "crypto", "state", "analysis")
ANYWHERE = {"ipsecscope", "ipsecscope.model", "ipsecscope.errors", "ipsecscope.timefmt", "ipsecscope.plugins"}


def stage_violations(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for each import from a stage into a later stage or a view/front end."""
    def stage(mod: str) -> str | None:
        parts = mod.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in STAGES else None

    bad = []
    for mod, deps in graph.items():
        here = stage(mod)
        if here is None:
            continue
        for dep in deps:
            if any(_in(dep, ok) for ok in ANYWHERE - {"ipsecscope"}) or dep == "ipsecscope":
                continue
            there = stage(dep)
            if there is None or STAGES.index(there) > STAGES.index(here):
                bad.append(f"{mod} -> {dep}")
    return sorted(bad)


def test_data_flows_one_way():
    bad = stage_violations(import_graph())
    assert not bad, "a stage imports a later stage or a view (docs/ARCHITECTURE.md): " + ", ".join(bad)


def test_model_is_stdlib_only():
    """`model/` is what every stage shares: the standard library and itself only (no numpy, no
    cryptography, no stage), so any stage, plugin or script can import it."""
    import sys

    bad = []
    for mod, path in _modules().items():
        if not _in(mod, "ipsecscope.model"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for n in names:
                top = n.split(".")[0]
                if top not in sys.stdlib_module_names and not (_in(n, "ipsecscope.model") or n == "ipsecscope.errors"):
                    bad.append(f"{mod} -> {n}")
    bad += [f"{m} -> {d}" for m, ds in import_graph().items() if _in(m, "ipsecscope.model")
            for d in ds if not (_in(d, "ipsecscope.model") or d in ("ipsecscope.errors", PKG.name))]
    assert not bad, ", ".join(sorted(bad))


def test_modules_stay_short():
    long = []
    for mod, path in _modules().items():
        n = len(path.read_text().splitlines())
        if n > MAX_LINES_EXCEPT.get(mod, MAX_LINES):
            long.append(f"{mod}: {n} lines")
    assert not long, f"split by responsibility (limit {MAX_LINES}): " + ", ".join(long)


def test_the_checks_can_fail():
    """The cycle finder finds a hidden cycle, and the resolver follows relative imports."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    node = ast.parse("from ..state import tracker").body[0]
    assert _resolve("ipsecscope.cli.sas", False, node) == "ipsecscope.state"
    assert stage_violations({"ipsecscope.state.x": {"ipsecscope.decode.y", "ipsecscope.model.sa"},
                             "ipsecscope.decode.y": {"ipsecscope.state.x", "ipsecscope.export.documents"}}) == [
        "ipsecscope.decode.y -> ipsecscope.export.documents", "ipsecscope.decode.y -> ipsecscope.state.x"]
    node = ast.parse("from . import dsb").body[0]
    assert _resolve("ipsecscope.keys", True, node) == "ipsecscope.keys"


def _named_in(arch: str, rel: Path) -> bool:
    """Is the module at ``rel`` (under ipsecscope/, no suffix) named in the architecture map, as
    ``stem.py``, ``pkg/stem``, ``pkg.stem`` or a backticked ``stem``?"""
    parent = rel.parent.as_posix()
    forms = [f"{rel.name}.py", f"`{rel.name}`"]
    if parent != ".":
        forms += [f"{parent}/{rel.name}", f"{parent.replace('/', '.')}.{rel.name}"]
    return any(f in arch for f in forms)


def test_architecture_names_every_module():
    """docs/ARCHITECTURE.md is the map and has to stay true: a new module (a split, a new stage
    part) is named there with what it does, or the map silently falls behind the code."""
    arch = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                     if ".venv" not in p.parts and p.name not in ("__init__.py", "__main__.py")
                     and not _named_in(arch, p.relative_to(PKG).with_suffix("")))
    assert not missing, "modules docs/ARCHITECTURE.md does not name (add a line saying what each does): " \
        + ", ".join(missing)
