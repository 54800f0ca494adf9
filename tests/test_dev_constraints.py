"""constraints.txt fixes what `./dev` installs: every dependency pinned, inside pyproject's ranges.

A dependency added to pyproject.toml without a pin here would float again (CI's outcome could then
change with an upstream release and no commit), and a pin outside pyproject's range would make
pip's install fail on a fresh machine."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for n, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!-]*)", line)
        assert m, f"constraints.txt:{n}: {line!r} is not NAME==VERSION"
        name = canonicalize_name(m[1])
        assert name not in pins, f"constraints.txt:{n}: {m[1]} pinned twice"
        pins[name] = Version(m[2])
    return pins


def _requirements() -> list[tuple[str, Requirement]]:
    out = []
    for path in [ROOT / "pyproject.toml", *sorted(ROOT.glob("plugins/*/pyproject.toml"))]:
        project = tomllib.loads(path.read_text())["project"]
        reqs = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            reqs += extra
        out += [(str(path.relative_to(ROOT)), Requirement(r)) for r in reqs]
    return out


def test_every_dependency_is_pinned_inside_its_range() -> None:
    pins = _pins()
    own = {canonicalize_name("ipsecscope")}
    checked = 0
    for where, req in _requirements():
        name = canonicalize_name(req.name)
        if name in own:
            continue
        assert name in pins, f"{where}: {req.name} has no pin in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{where}: {req} excludes constraints.txt's {req.name}=={pins[name]}")
        checked += 1
    assert checked >= 12  # the runtime and dev dependencies: the walk really read them


def test_dev_installs_with_the_constraints() -> None:
    dev = (ROOT / "dev").read_text()
    installs = [line for line in dev.splitlines() if "-m pip install" in line]
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    # A change to the pins must re-run pip in an existing .venv, as a pyproject change does.
    assert re.search(r"cat pyproject\.toml constraints\.txt", dev)
