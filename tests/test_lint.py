"""House rule: ruff clean (config in pyproject.toml). Part of the suite so CI enforces it."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


def test_ruff_clean():
    # The suite's own interpreter first: a ruff elsewhere on PATH may be another version.
    try:
        import ruff as _  # noqa: F401
        cmd = [sys.executable, "-m", "ruff"]
    except ImportError:
        ruff = shutil.which("ruff")
        if ruff is None:
            pytest.skip("ruff not installed (./dev test installs it)")
        cmd = [ruff]
    r = subprocess.run([*cmd, "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# --- tests run the CLI through the suite's own interpreter --------------------------------------
# Calls that start a program from a command string or from varargs.
_STARTERS = {"run", "Popen", "call", "check_call", "check_output", "getoutput", "system", "popen",
             "Tmux", "spawn"}


def _callee(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _bare_cli_calls(tree: ast.AST) -> list[int]:
    """Lines where code runs an executable named `ipsecscope` from PATH.

    Three shapes start a program: an argv list/tuple (`["ipsecscope", ...]`), a varargs helper
    (`pair.popen("left", "ipsecscope", ...)`) and a shell string (`"ipsecscope keys list"` or an
    f-string starting so) handed to a call. A global install on the developer's machine makes
    all three pass there and fail on a fresh one, so none may appear.
    """
    def bare(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value == "ipsecscope"

    def shell(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value.startswith("ipsecscope ")
        if isinstance(node, ast.JoinedStr) and node.values:
            return shell(node.values[0])
        return False

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)) and node.elts and bare(node.elts[0]):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and _callee(node) in _STARTERS:
            args = [*node.args, *(k.value for k in node.keywords)]
            after_m = [i > 0 and isinstance(args[i - 1], ast.Constant) and args[i - 1].value == "-m"
                       for i in range(len(args))]
            if any((bare(a) and not m) or shell(a) for a, m in zip(args, after_m, strict=True)):
                lines.append(node.lineno)
    return sorted(set(lines))


def test_no_test_runs_a_bare_ipsecscope():
    """A test that runs `ipsecscope` from PATH passes only where someone installed it globally.

    Tests use `conftest.IPSECSCOPE` (sys.executable -m ipsecscope) instead; issue: a fresh clone
    failed 28 tests with FileNotFoundError while CI, on a machine with a leftover install, passed.
    """
    offenders = []
    for path in sorted([*ROOT.glob("tests/**/*.py"), *ROOT.glob("plugins/**/*.py"),
                        *ROOT.glob("samples/**/*.py"), *ROOT.glob("benchmarks/*.py")]):
        if ".venv" in path.parts:
            continue
        lines = _bare_cli_calls(ast.parse(path.read_text(), str(path)))
        offenders += [f"{path.relative_to(ROOT)}:{n}" for n in lines]
    assert not offenders, "run the CLI as conftest.IPSECSCOPE, not from PATH: " + ", ".join(offenders)


def test_bare_cli_detector_catches_each_shape():
    src = ('subprocess.run(["ipsecscope", "keys"])\n'
           'pair.popen("left", "ipsecscope", "live")\n'
           'Tmux(f"ipsecscope {args}")\n'
           'subprocess.run([sys.executable, "-m", "ipsecscope"])\n'
           'assert "ipsecscope" in text\n'
           'pytest.fail(f"ipsecscope {args} hung")\n'
           'pair.popen("left", sys.executable, "-m", "ipsecscope", "live")\n')
    assert _bare_cli_calls(ast.parse(src)) == [1, 2, 3]


# --- type hints on public functions --------------------------------------------------------------
# The session's own helpers take the Session itself; naming its class there would be an import
# cycle (tests/test_imports counts TYPE_CHECKING imports too), so their `session` stays bare.
_UNHINTED_OK = {("ipsecscope/session_fast.py", "session"), ("ipsecscope/session_fast.py", "progress"),
                ("ipsecscope/session_esp.py", "st")}


def _unhinted(path: str, tree: ast.AST) -> list[str]:
    """Public functions and methods (no leading underscore) of ``tree`` lacking an argument or
    return annotation, as 'path:line name(arg, ...) -> ?'."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue
        args = [a for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)
                if a.arg not in ("self", "cls") and a.annotation is None and (path, a.arg) not in _UNHINTED_OK]
        no_return = node.returns is None and node.name != "__init__"
        if args or no_return:
            out.append(f"{path}:{node.lineno} {node.name}({', '.join(a.arg for a in args)})"
                       + (" -> ?" if no_return else ""))
    return out


def test_public_functions_have_type_hints():
    """How we write code: type hints on public functions (a rule once checked for the flat API
    only, while ~90 functions elsewhere had none)."""
    missing = []
    for p in sorted((ROOT / "ipsecscope").rglob("*.py")):
        rel = p.relative_to(ROOT).as_posix()
        missing += _unhinted(rel, ast.parse(p.read_text(), rel))
    assert not missing, "add type hints: " + "; ".join(missing)


def test_the_hint_check_can_fail():
    tree = ast.parse("def f(a, b: int): pass\ndef _g(x): pass\nclass C:\n    def m(self, y) -> int: ...\n")
    assert _unhinted("x.py", tree) == ["x.py:1 f(a) -> ?", "x.py:4 m(y)"]
