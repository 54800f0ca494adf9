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
